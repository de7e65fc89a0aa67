//! Search over paths (Ma et al. 2025, "Inference-time scaling for diffusion models beyond scaling denoising steps",
//! §3.2 "search over paths"), on the sampling grid of this crate.
//!
//! N paths run the pretrained sampler. At each checkpoint step s (from ⌈start·N⌉ every `interval` steps, s ≥
//! `back`) every path is copied M times; each copy is re-noised from its level s back to level s − Δ with the
//! forward process, x' = √(ᾱ_{s−Δ}/ᾱ_s)·x + √(1 − ᾱ_{s−Δ}/ᾱ_s)·ξ (Δ = `back`), denoised again over those Δ steps
//! with the pretrained sampler, and scored by r(x̂0) at level s; the N best of the N·M copies (ties → lowest index)
//! continue. The output is the path with the best final reward. Noise of the copies comes from the `search`
//! stream. A search for high reward, not a sampler of the tilted target: it ignores α.

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, renoise, Grad, Look};
use super::method::{check_particles, Chain, Method, MethodInfo, Needs};
use super::{final_reward, init_noise, reward_rows, step_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{mean, StepCoef};
use crate::ledger::Cost;
use crate::rng::Purpose;
use crate::{Error, Result};

/// Settings of path search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathSearchConfig {
    /// Paths N per group.
    #[serde(default = "four")]
    pub particles: usize,
    /// Copies M of each path at a checkpoint.
    #[serde(default = "four")]
    pub children: usize,
    /// Steps Δ a copy is re-noised back (and denoised again).
    #[serde(default = "five")]
    pub back: usize,
    /// First checkpoint, as a fraction of the steps.
    #[serde(default = "start")]
    pub start: f64,
    /// Steps between checkpoints.
    #[serde(default = "ten")]
    pub interval: usize,
}

fn four() -> usize {
    4
}
fn five() -> usize {
    5
}
fn ten() -> usize {
    10
}
fn start() -> f64 {
    0.2
}

impl PathSearchConfig {
    /// Checkpoint steps of an `n`-step grid.
    pub fn checkpoints(&self, n: usize) -> Vec<usize> {
        let first = ((self.start * n as f64).ceil() as usize).max(self.back);
        (first..n).step_by(self.interval.max(1)).collect()
    }
}

/// `path_search` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "path_search",
    about: "search over paths: re-noise the N paths M times at checkpoints, denoise, keep the N best by r(x̂0)",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for PathSearchConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, chain: &Chain) -> Result<()> {
        check_particles(self.particles)?;
        if self.children == 0 || self.back == 0 || self.interval == 0 {
            return Err(Error::config("children, back, interval: must each be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.start) {
            return Err(Error::config("start: must be in [0, 1] (a fraction of the steps)"));
        }
        if self.back >= chain.steps {
            return Err(Error::config(format!("back: must be below steps ({})", chain.steps)));
        }
        Ok(())
    }
    /// N unguided chains and N final rewards, plus N·M·(Δ + 1) rows and N·M rewards per checkpoint.
    fn cost(&self, steps: usize) -> Cost {
        let (k, mm, c) = (self.particles as f64, self.children as f64, self.checkpoints(steps).len() as f64);
        Cost {
            nfe: k * steps as f64 + c * k * mm * (self.back as f64 + 1.0) - c * k,
            vjp_denoiser: 0.0,
            vjp_reward: 0.0,
            reward_calls: k + c * k * mm,
        }
    }
    fn sampler(&self, _alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(PathSampler { cfg: self.clone(), x: vec![], eps: vec![], x0: vec![], fresh: false }))
    }
}

/// Path state of a batch: states and their ε̂, x̂0; `fresh` when ε̂ is already at the current step.
pub struct PathSampler {
    cfg: PathSearchConfig,
    x: Vec<f32>,
    eps: Vec<f32>,
    x0: Vec<f32>,
    fresh: bool,
}

impl PathSampler {
    /// The checkpoint at step s: M re-noised and re-denoised copies per path, keep the N best by r(x̂0).
    fn branch(&mut self, m: &Model, b: &Batch, s: usize) -> Result<()> {
        let (k, mm, d, back) = (self.cfg.particles, self.cfg.children, m.dim(), self.cfg.back);
        let per = k * mm * d;
        let mut xc: Vec<f32> = self.x.chunks_exact(d).flat_map(|r| r.repeat(mm)).collect();
        let mut z = vec![0f32; xc.len()];
        let key = |j: usize| (1u64 << 40) | ((s as u64) << 20) | j as u64;
        let draw = |z: &mut [f32], j: usize| {
            for (gi, &group) in b.groups.iter().enumerate() {
                m.streams.normals(Purpose::Search, group, key(j), &mut z[gi * per..(gi + 1) * per]);
            }
        };
        draw(&mut z, 0);
        let src = xc.clone();
        renoise(m.grid.a[s - back], m.grid.a[s], &src, &z, &mut xc);
        let cond = b.row_cond(k * mm);
        let (mut ec, mut x0c) = (vec![0f32; xc.len()], vec![0f32; xc.len()]);
        for l in s - back..s {
            lookahead(
                m,
                &xc,
                &cond,
                l,
                Grad::None,
                false,
                Look { eps: &mut ec, x0: &mut x0c, r: &mut [], g: &mut [] },
            )?;
            let c = StepCoef::new(m.grid.a[l], m.grid.a_prev[l], m.eta);
            mean(&c, &x0c, &ec, &mut xc);
            draw(&mut z, l + 1);
            let sg = c.sigma as f32;
            xc.iter_mut().zip(&z).for_each(|(v, zv)| *v += sg * zv);
        }
        lookahead(m, &xc, &cond, s, Grad::None, false, Look { eps: &mut ec, x0: &mut x0c, r: &mut [], g: &mut [] })?;
        let v = reward_rows(m, &x0c, &cond)?;
        for (gi, &group) in b.groups.iter().enumerate() {
            let vs = &v[gi * k * mm..(gi + 1) * k * mm];
            if let Some(bad) = vs.iter().find(|x| !x.is_finite()) {
                return Err(Error::numeric("path_search", format!("non-finite score {bad} in group {group} at {s}")));
            }
            let mut order: Vec<usize> = (0..k * mm).collect();
            order.sort_by(|&a, &b| vs[b].total_cmp(&vs[a]).then(a.cmp(&b)));
            for (p, &pick) in order[..k].iter().enumerate() {
                let (dst, src) = ((gi * k + p) * d, (gi * k * mm + pick) * d);
                self.x[dst..dst + d].copy_from_slice(&xc[src..src + d]);
                self.eps[dst..dst + d].copy_from_slice(&ec[src..src + d]);
                self.x0[dst..dst + d].copy_from_slice(&x0c[src..src + d]);
            }
        }
        self.fresh = true;
        Ok(())
    }
}

impl Sampler for PathSampler {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        self.x = init_noise(m, b, self.cfg.particles);
        self.eps = vec![0.0; self.x.len()];
        self.x0 = vec![0.0; self.x.len()];
        self.fresh = false;
        Ok(())
    }

    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        let k = self.cfg.particles;
        if self.cfg.checkpoints(m.grid.len()).contains(&i) {
            self.branch(m, b, i)?;
        }
        if !self.fresh {
            let cond = b.row_cond(k);
            lookahead(
                m,
                &self.x,
                &cond,
                i,
                Grad::None,
                false,
                Look { eps: &mut self.eps, x0: &mut self.x0, r: &mut [], g: &mut [] },
            )?;
        }
        self.fresh = false;
        let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
        mean(&c, &self.x0, &self.eps, &mut self.x);
        let mut z = vec![0f32; self.x.len()];
        step_noise(m, b, k, i, &mut z);
        let s = c.sigma as f32;
        self.x.iter_mut().zip(&z).for_each(|(v, zv)| *v += s * zv);
        Ok(StepTrace { groups: b.groups.len() as u64, ..Default::default() })
    }

    /// The path with the best final reward (ties → lowest index).
    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        let (k, d) = (self.cfg.particles, m.dim());
        let r = final_reward(m, b, &self.x)?;
        Ok((0..b.groups.len())
            .map(|gi| {
                let rs = &r[gi * k..(gi + 1) * k];
                let best = (0..k).fold(0, |bst, j| if rs[j] > rs[bst] { j } else { bst });
                let row = gi * k + best;
                GroupOutput {
                    samples: self.x[row * d..(row + 1) * d].to_vec(),
                    weights: vec![1.0],
                    rewards: vec![rs[best]],
                    log_z_hat: None,
                    stats: vec![],
                }
            })
            .collect())
    }
}
