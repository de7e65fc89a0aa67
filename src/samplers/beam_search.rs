//! Beam search with look-ahead over denoising paths (the DSearch-style search of Ma et al. 2025, "Inference-time
//! scaling for diffusion models beyond scaling denoising steps", §3 search over paths; Li et al. 2025, DSearch).
//!
//! Keep B beams per group. At step i every beam draws M children from the pretrained step (x' = μ + σ·z, noise
//! from the `search` stream); each child is scored by the reward of its x̂0 after `lookahead` further deterministic
//! DDIM (η = 0) steps (0: x̂0 at the child itself, whose ε̂ is then reused at step i+1); at the last step by the
//! reward of the output. The B best of the B·M children (ties → lowest index) are the next beams; the output is the
//! best final beam. A search for high reward, not a sampler of the tilted target: it ignores α.

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, Grad, Look};
use super::method::{check_particles, Chain, Method, MethodInfo, Needs};
use super::{init_noise, reward_rows, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{mean, StepCoef};
use crate::ledger::Cost;
use crate::rng::Purpose;
use crate::{Error, Result};

/// Settings of beam search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BeamSearchConfig {
    /// Beams B per group.
    #[serde(default = "four")]
    pub particles: usize,
    /// Children M per beam and step.
    #[serde(default = "four")]
    pub children: usize,
    /// Deterministic DDIM steps before a child's x̂0 is scored (0 = at the child).
    #[serde(default)]
    pub lookahead: usize,
}

fn four() -> usize {
    4
}

/// `beam_search` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "beam_search",
    about: "beam search: keep the B best of B·M children per step, scored by r(x̂0) after a DDIM look-ahead",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for BeamSearchConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, _chain: &Chain) -> Result<()> {
        check_particles(self.particles)?;
        if self.children == 0 {
            return Err(Error::config("children: must be at least 1 (children per beam and step)"));
        }
        Ok(())
    }
    /// B rows at step 0; at step i < N−1 each of the B·M children costs 1 + min(L, N−2−i) rows and one reward; the
    /// last step's B·M outputs one reward each.
    fn cost(&self, steps: usize) -> Cost {
        let (b, mm, l) = (self.particles as f64, self.children as f64, self.lookahead);
        let rows: f64 = (0..steps.saturating_sub(1)).map(|i| 1.0 + l.min(steps - 2 - i) as f64).sum();
        Cost { nfe: b + b * mm * rows, vjp_denoiser: 0.0, vjp_reward: 0.0, reward_calls: b * mm * steps as f64 }
    }
    fn sampler(&self, _alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(BeamSampler { cfg: self.clone(), x: vec![], eps: vec![], x0: vec![], score: vec![] }))
    }
}

/// Beam state of a batch: per beam its state and ε̂, x̂0 at the current step, and its last score.
pub struct BeamSampler {
    cfg: BeamSearchConfig,
    x: Vec<f32>,
    eps: Vec<f32>,
    x0: Vec<f32>,
    score: Vec<f64>,
}

impl BeamSampler {
    /// Scores of children `xc` at loop index `lvl` (their ε̂, x̂0 written into `ec`, `x0c`): r(x̂0) after
    /// min(L, N−1−lvl) deterministic DDIM steps.
    fn score(&self, m: &Model, b: &Batch, lvl: usize, xc: &[f32], ec: &mut [f32], x0c: &mut [f32]) -> Result<Vec<f64>> {
        let rows = xc.len() / m.dim();
        let cond = b.row_cond(rows / b.groups.len());
        lookahead(m, xc, &cond, lvl, Grad::None, false, Look { eps: ec, x0: x0c, r: &mut [], g: &mut [] })?;
        let n = m.grid.len();
        let extra = self.cfg.lookahead.min(n - 1 - lvl);
        if extra == 0 {
            return reward_rows(m, x0c, &cond);
        }
        let (mut x, mut e, mut x0) = (xc.to_vec(), ec.to_vec(), x0c.to_vec());
        for s in lvl..lvl + extra {
            let c = StepCoef::new(m.grid.a[s], m.grid.a_prev[s], 0.0);
            mean(&c, &x0, &e, &mut x);
            lookahead(
                m,
                &x,
                &cond,
                s + 1,
                Grad::None,
                false,
                Look { eps: &mut e, x0: &mut x0, r: &mut [], g: &mut [] },
            )?;
        }
        reward_rows(m, &x0, &cond)
    }
}

impl Sampler for BeamSampler {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        let k = self.cfg.particles;
        self.x = init_noise(m, b, k);
        self.eps = vec![0.0; self.x.len()];
        self.x0 = vec![0.0; self.x.len()];
        self.score = vec![0.0; self.x.len() / m.dim()];
        let cond = b.row_cond(k);
        lookahead(
            m,
            &self.x,
            &cond,
            0,
            Grad::None,
            false,
            Look { eps: &mut self.eps, x0: &mut self.x0, r: &mut [], g: &mut [] },
        )
    }

    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        let (k, mm, d, n) = (self.cfg.particles, self.cfg.children, m.dim(), m.grid.len());
        let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
        let mut mu = vec![0f32; self.x.len()];
        mean(&c, &self.x0, &self.eps, &mut mu);
        let per = k * mm * d;
        let mut xc = vec![0f32; b.groups.len() * per];
        for (gi, &group) in b.groups.iter().enumerate() {
            m.streams.normals(Purpose::Search, group, i as u64, &mut xc[gi * per..(gi + 1) * per]);
        }
        let s = c.sigma as f32;
        for (row, chunk) in xc.chunks_exact_mut(d).enumerate() {
            let beam = row / mm;
            for (q, v) in chunk.iter_mut().enumerate() {
                *v = mu[beam * d + q] + s * *v;
            }
        }
        let (mut ec, mut x0c) = (vec![0f32; xc.len()], vec![0f32; xc.len()]);
        let v = if i + 1 < n {
            self.score(m, b, i + 1, &xc, &mut ec, &mut x0c)?
        } else {
            let cond = b.row_cond(k * mm);
            reward_rows(m, &xc, &cond)?
        };
        for (gi, &group) in b.groups.iter().enumerate() {
            let vs = &v[gi * k * mm..(gi + 1) * k * mm];
            if let Some(bad) = vs.iter().find(|x| !x.is_finite()) {
                return Err(Error::numeric(
                    "beam_search",
                    format!("non-finite score {bad} in group {group} at step {i}"),
                ));
            }
            let mut order: Vec<usize> = (0..k * mm).collect();
            order.sort_by(|&a, &b| vs[b].total_cmp(&vs[a]).then(a.cmp(&b)));
            for (beam, &pick) in order[..k].iter().enumerate() {
                let (dst, src) = ((gi * k + beam) * d, (gi * k * mm + pick) * d);
                self.x[dst..dst + d].copy_from_slice(&xc[src..src + d]);
                self.eps[dst..dst + d].copy_from_slice(&ec[src..src + d]);
                self.x0[dst..dst + d].copy_from_slice(&x0c[src..src + d]);
                self.score[gi * k + beam] = vs[pick];
            }
        }
        Ok(StepTrace { groups: b.groups.len() as u64, ..Default::default() })
    }

    /// The best final beam of each group (beams are kept sorted by score, so beam 0).
    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        let (k, d) = (self.cfg.particles, m.dim());
        Ok((0..b.groups.len())
            .map(|gi| GroupOutput {
                samples: self.x[gi * k * d..gi * k * d + d].to_vec(),
                weights: vec![1.0],
                rewards: vec![self.score[gi * k]],
                log_z_hat: None,
                stats: vec![],
            })
            .collect())
    }
}
