//! SVDD — soft value-based decoding (Li et al. 2024; methods.md §11): K independent chains, no weights. At step i
//! every chain draws M children from the pretrained step, x^(m) = μ + σ·z^(m), scores each by a soft value and
//! keeps one: m* = argmax v (the reference, α → 0) or m* ~ softmax(v/α).
//!
//! - `value_estimate: posterior_mean` (SVDD-PM): v_m = r(D(x̂0(x^(m)))), the denoiser evaluated at the child on the next
//!   step's timestep, so the chosen child's ε̂ is reused at step i+1; at the last step v_m = r(D(x^(m))).
//! - `value_estimate: monte_carlo` (SVDD-MC, no learned value network): v_m = α·log mean_r exp(r(D(x_0^(m,r)))/α) over
//!   `rollouts` unguided rollouts of the remaining steps from the child — the soft value of methods.md §1.
//!
//! Child 0 uses the common `step` noise of the chain (so a constant reward, with ties broken towards the lowest
//! index, reproduces unguided sampling exactly); children m ≥ 1 and rollouts draw from the `children` stream.

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, Grad, Look};
use super::logspace::lse;
use super::method::{Chain, Method, MethodInfo, Needs};
use super::selection::{argmax, softmax_draw};
use super::{final_reward, independent_outputs, init_noise, step_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{mean, StepCoef};
use crate::ledger::Cost;
use crate::rng::Purpose;
use crate::{Error, Result};

/// How a child is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildSelection {
    /// argmax of the value (ties → lowest index): the reference.
    #[default]
    Argmax,
    /// A draw from softmax(v/α).
    Softmax,
}

/// How a child's soft value is estimated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueEstimate {
    /// r(D(x̂0(child))) — SVDD-PM.
    #[default]
    PosteriorMean,
    /// α·log mean exp(r/α) over unguided rollouts to x_0 — SVDD-MC.
    MonteCarlo,
}

/// Settings of SVDD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SvddConfig {
    /// Independent chains K per group (each gives one output).
    #[serde(default = "one")]
    pub particles: usize,
    /// Children M per chain and step (reference `--duplicate_size 20`).
    #[serde(default = "twenty")]
    pub children: usize,
    /// `argmax` (reference) or `softmax` (draw from softmax(v/α)).
    #[serde(default)]
    pub selection: ChildSelection,
    /// `posterior_mean` (SVDD-PM) or `monte_carlo` (SVDD-MC).
    #[serde(default)]
    pub value_estimate: ValueEstimate,
    /// Rollouts per child for `monte_carlo`.
    #[serde(default = "four")]
    pub rollouts: usize,
}

fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn twenty() -> usize {
    20
}

impl SvddConfig {
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 {
            return Err(Error::config("particles: must be at least 1 (independent chains per group)"));
        }
        if self.children == 0 {
            return Err(Error::config("children: must be at least 1 (reference 20)"));
        }
        if self.rollouts == 0 {
            return Err(Error::config("rollouts: must be at least 1 (Monte-Carlo rollouts per child)"));
        }
        Ok(())
    }
}

/// SVDD state for a batch of groups: one current state per chain and its ε̂, x̂0 at the current step.
pub struct SvddSampler {
    cfg: SvddConfig,
    alpha: f64,
    x: Vec<f32>,
    eps: Vec<f32>,
    x0: Vec<f32>,
    r: Vec<f64>,
}

impl SvddSampler {
    /// New sampler at KL coefficient α (used by `softmax` selection and `monte_carlo` values).
    pub fn new(cfg: SvddConfig, alpha: f64) -> Self {
        Self { cfg, alpha, x: vec![], eps: vec![], x0: vec![], r: vec![] }
    }

    /// Children of every chain, row-major `[groups, K, M, d]`: child 0 from the common step noise, the others from
    /// the `children` stream (drawn chain-major, so K = 8 contains K = 4).
    fn children(&self, m: &Model, b: &Batch, i: usize, mu: &[f32], sigma: f32) -> Vec<f32> {
        let (k, mm, d) = (self.cfg.particles, self.cfg.children, m.dim());
        let g = b.groups.len();
        let mut z0 = vec![0f32; g * k * d];
        step_noise(m, b, k, i, &mut z0);
        let mut zc = vec![0f32; k * mm.saturating_sub(1) * d];
        let mut out = vec![0f32; g * k * mm * d];
        for (gi, &group) in b.groups.iter().enumerate() {
            m.streams.normals(Purpose::Children, group, i as u64, &mut zc);
            for c in 0..k {
                let row = gi * k + c;
                for child in 0..mm {
                    let z = if child == 0 {
                        &z0[row * d..(row + 1) * d]
                    } else {
                        &zc[(c * (mm - 1) + child - 1) * d..][..d]
                    };
                    let o = &mut out[((row * mm) + child) * d..][..d];
                    for q in 0..d {
                        o[q] = mu[row * d + q] + sigma * z[q];
                    }
                }
            }
        }
        out
    }

    /// SVDD-MC value of every child at loop index i (children at the noise level of step i+1, with their ε̂ `eps`).
    fn rollout_values(&self, m: &Model, b: &Batch, i: usize, xc: &[f32], eps: &[f32], x0: &[f32]) -> Result<Vec<f64>> {
        let (d, n, reps) = (m.dim(), m.grid.len(), self.cfg.rollouts);
        let rows = xc.len() / d;
        let per_group = rows / b.groups.len();
        let rep = |v: &[f32]| -> Vec<f32> {
            v.chunks_exact(d).flat_map(|r| std::iter::repeat_n(r, reps).flatten().copied()).collect()
        };
        let (mut x, mut e, mut x0r) = (rep(xc), rep(eps), rep(x0));
        let mut z = vec![0f32; x.len()];
        for s in i + 1..n {
            if s > i + 1 {
                let cond = b.row_cond(per_group * reps);
                lookahead(
                    m,
                    &x,
                    &cond,
                    s,
                    Grad::None,
                    false,
                    Look { eps: &mut e, x0: &mut x0r, r: &mut [], g: &mut [] },
                )?;
            }
            let c = StepCoef::new(m.grid.a[s], m.grid.a_prev[s], m.eta);
            // Rollout noise: its own `children` stream per (step of the chain, rollout step), chain-major.
            let key = (1u64 << 40) | ((i as u64) << 20) | s as u64;
            let chunk = per_group * reps * d;
            for (gi, &group) in b.groups.iter().enumerate() {
                m.streams.normals(Purpose::Children, group, key, &mut z[gi * chunk..(gi + 1) * chunk]);
            }
            mean(&c, &x0r, &e, &mut x);
            let sg = c.sigma as f32;
            for (xv, zv) in x.iter_mut().zip(&z) {
                *xv += sg * zv;
            }
        }
        let r = final_reward(m, b, &x)?;
        let (a, lr) = (self.alpha, (reps as f64).ln());
        Ok(r.chunks_exact(reps).map(|rc| a * (lse(&rc.iter().map(|v| v / a).collect::<Vec<_>>()) - lr)).collect())
    }
}

impl Sampler for SvddSampler {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        let k = self.cfg.particles;
        self.x = init_noise(m, b, k);
        self.eps = vec![0.0; self.x.len()];
        self.x0 = vec![0.0; self.x.len()];
        self.r = vec![0.0; self.x.len() / m.dim()];
        Ok(())
    }

    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        let (k, mm, d, n) = (self.cfg.particles, self.cfg.children, m.dim(), m.grid.len());
        if i == 0 {
            let cond = b.row_cond(k);
            lookahead(
                m,
                &self.x,
                &cond,
                0,
                Grad::None,
                false,
                Look { eps: &mut self.eps, x0: &mut self.x0, r: &mut [], g: &mut [] },
            )?;
        }
        let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
        let mut mu = vec![0f32; self.x.len()];
        mean(&c, &self.x0, &self.eps, &mut mu);
        let xc = self.children(m, b, i, &mu, c.sigma as f32);
        let rows = xc.len() / d;
        let (mut ec, mut x0c) = (vec![0f32; xc.len()], vec![0f32; xc.len()]);
        let v: Vec<f64> = if i + 1 < n {
            let cond = b.row_cond(k * mm);
            let mut v = vec![0f64; rows];
            let pm = self.cfg.value_estimate == ValueEstimate::PosteriorMean;
            let r: &mut [f64] = if pm { &mut v } else { &mut [] };
            lookahead(m, &xc, &cond, i + 1, Grad::None, pm, Look { eps: &mut ec, x0: &mut x0c, r, g: &mut [] })?;
            if pm {
                v
            } else {
                self.rollout_values(m, b, i, &xc, &ec, &x0c)?
            }
        } else {
            final_reward(m, b, &xc)?
        };
        for (gi, &group) in b.groups.iter().enumerate() {
            let mut rng = m.streams.rng(Purpose::Select, group, i as u64 + 1);
            for c in 0..k {
                let row = gi * k + c;
                let vs = &v[row * mm..(row + 1) * mm];
                if let Some(bad) = vs.iter().find(|x| !x.is_finite()) {
                    return Err(Error::numeric(
                        "svdd",
                        format!("non-finite child value {bad} in group {group} at step {i}"),
                    ));
                }
                let pick = match self.cfg.selection {
                    ChildSelection::Argmax => argmax(vs),
                    ChildSelection::Softmax => softmax_draw(vs, self.alpha, &mut rng),
                };
                let src = (row * mm + pick) * d;
                self.x[row * d..(row + 1) * d].copy_from_slice(&xc[src..src + d]);
                self.eps[row * d..(row + 1) * d].copy_from_slice(&ec[src..src + d]);
                self.x0[row * d..(row + 1) * d].copy_from_slice(&x0c[src..src + d]);
                self.r[row] = vs[pick];
            }
        }
        Ok(StepTrace { groups: b.groups.len() as u64, ..Default::default() })
    }

    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        // The last step scored every child by its true reward r(D(x^(m))): the chosen one's is the output reward.
        Ok(independent_outputs(&self.x, &self.r, b.groups.len(), self.cfg.particles, m.dim()))
    }
}

/// `svdd` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "svdd",
    about: "SVDD: M children per step, keep argmax / softmax(v/α) of the soft value (PM or MC rollouts)",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for SvddConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    /// A compute budget sizes the children per step.
    fn size_key(&self) -> Option<&'static str> {
        Some("children")
    }
    fn validate(&self, _chain: &Chain) -> Result<()> {
        SvddConfig::validate(self)
    }
    /// Each chain's first step evaluates its state; every later step evaluates M children (PM), and with MC each
    /// child's `rollouts` unguided rollouts of the remaining steps (methods.md §17).
    fn cost(&self, steps: usize) -> Cost {
        let (n, k) = (steps as f64, self.particles as f64);
        let (m, r) = (self.children as f64, self.rollouts as f64);
        let plain = Cost::plain(steps, self.particles);
        match self.value_estimate {
            ValueEstimate::PosteriorMean => Cost { nfe: k + k * m * (n - 1.0), reward_calls: k * m * n, ..plain },
            ValueEstimate::MonteCarlo => Cost {
                nfe: k + k * m * (n - 1.0) + k * m * r * (n - 1.0) * (n - 2.0).max(0.0) / 2.0,
                reward_calls: k * m * (r * (n - 1.0) + 1.0),
                ..plain
            },
        }
    }
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(SvddSampler::new(self.clone(), alpha)))
    }
}
