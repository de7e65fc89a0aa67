//! The SMC kernel shared by DAS, TDS, plain SMC and FK steering (methods.md §7.7, §8–§10): after a method has
//! added its incremental log-weights, a group's weights are guarded (a non-finite weight is a counted zero),
//! normalised (log Ẑ += LSE, the running normaliser of Del Moral's estimator), their ESS is recorded and the group
//! resamples when the rule fires; at the end the final weights give log Ẑ and the outputs are selected. The
//! resampling settings are one block ([`Resampling`]) flattened into each method's configuration, with the
//! method's own defaults ([`ResamplingDefaults`]).

use std::fmt::Debug;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::logspace::lse;
use super::particles::{Particles, StaleFields};
use super::resampling::{ResampleWhen, Resampler};
use super::selection::{select, Selection};
use super::{GroupOutput, Model, StepTrace};
use crate::rng::Purpose;
use crate::{Error, Result};

/// A method's defaults for the shared resampling block (each default stated once, in the method's file).
pub trait ResamplingDefaults: Clone + Debug + PartialEq + Send + Sync + 'static {
    /// When to resample (default: ESS-adaptive).
    fn resample() -> ResampleWhen {
        ResampleWhen::default()
    }
    /// κ of ESS-adaptive resampling (default 0.5).
    fn ess_threshold() -> f64 {
        0.5
    }
    /// Resampling scheme.
    fn resampler() -> Resampler {
        Resampler::default()
    }
}

/// The resampling settings of a particle method (flattened into its `methods:` entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Resampling<D: ResamplingDefaults> {
    /// `ess` (resample when ESS < κK) or `always` (every step).
    #[serde(default = "D::resample")]
    pub resample: ResampleWhen,
    /// κ of ESS-adaptive resampling.
    #[serde(default = "D::ess_threshold")]
    pub ess_threshold: f64,
    /// Resampling scheme.
    #[serde(default = "D::resampler")]
    pub resampler: Resampler,
    /// Output selection.
    #[serde(default)]
    pub selection: Selection,
    /// Outputs per group for `resample` and `toy_compat` selection (default: K).
    #[serde(default)]
    pub n_out: Option<usize>,
    #[serde(skip)]
    defaults: PhantomData<D>,
}

impl<D: ResamplingDefaults> Default for Resampling<D> {
    fn default() -> Self {
        Resampling {
            resample: D::resample(),
            ess_threshold: D::ess_threshold(),
            resampler: D::resampler(),
            selection: Selection::default(),
            n_out: None,
            defaults: PhantomData,
        }
    }
}

impl<D: ResamplingDefaults> Resampling<D> {
    /// The same settings under another method's defaults.
    pub fn cast<E: ResamplingDefaults>(&self) -> Resampling<E> {
        Resampling {
            resample: self.resample,
            ess_threshold: self.ess_threshold,
            resampler: self.resampler,
            selection: self.selection,
            n_out: self.n_out,
            defaults: PhantomData,
        }
    }

    /// Range checks for `k` particles (plan time).
    pub fn validate(&self, k: usize) -> Result<()> {
        if !(0.0..=1.0).contains(&self.ess_threshold) {
            return Err(Error::config(format!("ess_threshold: must be in [0, 1] (default {})", D::ess_threshold())));
        }
        self.selection.validate(k, self.n_out)
    }

    /// Outputs per group for `k` particles.
    pub fn outputs(&self, k: usize) -> usize {
        self.selection.outputs(k, self.n_out)
    }
}

/// Zero weight for a particle whose log-weight is undefined (its state, reward or gradient left the floating-point
/// range: a diverging proposal), counted in `trace`, never hidden.
pub fn guard(log_w: &mut f64, trace: &mut StepTrace) {
    if !log_w.is_finite() {
        *log_w = f64::NEG_INFINITY;
        trace.non_finite += 1;
    }
}

/// How a group's weights stand after [`settle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Normalised; log Ẑ, ESS (and a resampling if the rule fired) recorded.
    Alive,
    /// Every particle diverged: Ẑ = 0, log Ẑ = −∞; the group carries on and reports its outputs.
    Dead,
    /// `reference_bugs`: NaN weights left in place (no normalisation, no resampling), counted.
    Nan,
}

/// One step of the kernel for group `gi` (prompt `group`) at loop index `i`: normalise (log Ẑ += LSE), record the
/// ESS, resample with the method's settings when the rule fires (the `resample` stream of (group, i)).
#[allow(clippy::too_many_arguments)]
pub fn settle<D: ResamplingDefaults>(
    m: &Model,
    p: &mut Particles,
    gi: usize,
    group: u64,
    i: usize,
    rs: &Resampling<D>,
    stale: StaleFields,
    reference_bugs: bool,
    log_z: &mut f64,
    trace: &mut StepTrace,
    name: &'static str,
) -> Result<Settled> {
    let l = p.normalise(gi);
    if !l.is_finite() {
        if reference_bugs {
            // The reference leaves NaN weights in place: no normalisation, no resampling (NaN < κK is false).
            trace.non_finite += 1;
            *log_z = f64::NAN;
            return Ok(Settled::Nan);
        }
        if l == f64::NEG_INFINITY {
            *log_z = f64::NEG_INFINITY;
            return Ok(Settled::Dead);
        }
        return Err(Error::numeric(name, format!("log-weights of group {group} sum to {l} at step {i}")));
    }
    *log_z += l;
    let e = p.ess(gi);
    trace.ess_sum += e;
    if rs.resample.fires(e, p.k, rs.ess_threshold) {
        let mut rng = m.streams.rng(Purpose::Resample, group, i as u64);
        p.resample(gi, rs.resampler, &mut rng, stale);
        trace.resampled += 1;
    }
    Ok(Settled::Alive)
}

/// Close group `gi` (prompt `group`) after the method added its final incremental weights: log Ẑ = the running
/// normaliser + LSE of the final weights, and the outputs chosen by the selection rule (the `select` stream). `r`
/// holds the final reward of every particle of the batch; `log_z` is the group's running normaliser.
#[allow(clippy::too_many_arguments)]
pub fn finish_group<D: ResamplingDefaults>(
    m: &Model,
    p: &Particles,
    gi: usize,
    group: u64,
    r: &[f64],
    log_z: f64,
    rs: &Resampling<D>,
    reference_bugs: bool,
    name: &'static str,
) -> Result<GroupOutput> {
    let (k, d) = (p.k, p.d);
    let rg = gi * k..(gi + 1) * k;
    let lw: Vec<f64> = p.log_w[rg].to_vec();
    let l = lse(&lw);
    let finite = l.is_finite();
    let dead = !reference_bugs && l == f64::NEG_INFINITY;
    if !finite && !reference_bugs && !dead {
        return Err(Error::numeric(name, format!("final log-weights of group {group} sum to {l}")));
    }
    let log_z = if finite {
        log_z + l
    } else if dead {
        f64::NEG_INFINITY
    } else {
        f64::NAN
    };
    let n_out = rs.outputs(k);
    let mut rng = m.streams.rng(Purpose::Select, group, 0);
    let (idx, weights) = if dead {
        // Every particle diverged: return them (the runner reports non-finite outputs) with uniform weights.
        let n = n_out.min(k);
        ((0..n).collect(), vec![1.0 / n as f64; n])
    } else {
        select(rs.selection, rs.resampler, rs.ess_threshold, &lw, n_out, &mut rng, name)?
    };
    let base = gi * k;
    Ok(GroupOutput {
        samples: idx.iter().flat_map(|&j| p.x[(base + j) * d..(base + j + 1) * d].iter().copied()).collect(),
        weights,
        rewards: idx.iter().map(|&j| r[base + j]).collect(),
        log_z_hat: Some(log_z),
        stats: vec![],
    })
}
