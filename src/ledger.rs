//! The compute ledger (methods.md §17): every denoiser forward row, every VJP through the denoiser, every VJP
//! through reward∘decoder only, decoder and reward calls, and wall time per phase. Counters are atomic so that
//! parallel chunks of one cell share one ledger.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Phases whose wall time is recorded.
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    /// Denoiser forwards (and VJPs through it).
    Denoise,
    /// Reward and decoder evaluation outside the denoiser VJP.
    Reward,
    /// Weighting, resampling and proposal bookkeeping.
    Smc,
    /// Metrics after sampling.
    Metrics,
}

/// Shared, thread-safe counters of one cell.
#[derive(Debug, Default)]
pub struct Ledger {
    nfe: AtomicU64,
    vjp_denoiser: AtomicU64,
    vjp_reward: AtomicU64,
    decoder_calls: AtomicU64,
    reward_calls: AtomicU64,
    ns: [AtomicU64; 4],
}

/// A snapshot of a ledger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerSnapshot {
    /// Denoiser forward rows (F; CFG counts 2 per evaluation).
    pub nfe: u64,
    /// VJPs through reward∘decoder∘denoiser (V_full), in rows.
    pub vjp_denoiser: u64,
    /// VJPs through reward∘decoder only (V_dec), in rows.
    pub vjp_reward: u64,
    /// Decoder forwards, in rows (including those inside VJPs).
    pub decoder_calls: u64,
    /// Reward forwards, in rows (including those inside VJPs).
    pub reward_calls: u64,
    /// Seconds in denoiser forwards/VJPs, summed over threads.
    pub denoise_s: f64,
    /// Seconds in reward/decoder work, summed over threads.
    pub reward_s: f64,
    /// Seconds in SMC bookkeeping, summed over threads.
    pub smc_s: f64,
    /// Seconds in metrics.
    pub metrics_s: f64,
}

impl Ledger {
    /// Count denoiser forward rows.
    pub fn add_nfe(&self, rows: u64) {
        self.nfe.fetch_add(rows, Relaxed);
    }
    /// Count VJPs through the denoiser.
    pub fn add_vjp_denoiser(&self, rows: u64) {
        self.vjp_denoiser.fetch_add(rows, Relaxed);
    }
    /// Count VJPs through reward∘decoder only.
    pub fn add_vjp_reward(&self, rows: u64) {
        self.vjp_reward.fetch_add(rows, Relaxed);
    }
    /// Count decoder rows.
    pub fn add_decoder(&self, rows: u64) {
        self.decoder_calls.fetch_add(rows, Relaxed);
    }
    /// Count reward rows.
    pub fn add_reward(&self, rows: u64) {
        self.reward_calls.fetch_add(rows, Relaxed);
    }
    /// Add elapsed time since `start` to a phase.
    pub fn add_time(&self, phase: Phase, start: Instant) {
        self.ns[phase as usize].fetch_add(start.elapsed().as_nanos() as u64, Relaxed);
    }
    /// Current values.
    pub fn snapshot(&self) -> LedgerSnapshot {
        let s = |i: usize| self.ns[i].load(Relaxed) as f64 * 1e-9;
        LedgerSnapshot {
            nfe: self.nfe.load(Relaxed),
            vjp_denoiser: self.vjp_denoiser.load(Relaxed),
            vjp_reward: self.vjp_reward.load(Relaxed),
            decoder_calls: self.decoder_calls.load(Relaxed),
            reward_calls: self.reward_calls.load(Relaxed),
            denoise_s: s(0),
            reward_s: s(1),
            smc_s: s(2),
            metrics_s: s(3),
        }
    }
}

/// What a compute budget counts (per prompt group, as the ledger columns of `metrics.csv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAxis {
    /// Denoiser forward rows (F).
    Nfe,
    /// VJPs through the denoiser plus VJPs through reward∘decoder only.
    VjpTotal,
    /// Reward forwards (including those inside VJPs).
    RewardCalls,
    /// Estimated single-core sampling seconds from a problem's declared per-row cost model.
    WallS,
}

/// Ledger cost of one prompt group in the ledger's own units (methods.md §17): denoiser forward rows (F), VJPs
/// through the denoiser (V_full), VJPs through reward∘decoder only (V_dec), reward forwards (Rew). Every method
/// declares its cost with the formula of its sampler's exact counts; a test runs every method and compares.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Denoiser forward rows.
    pub nfe: f64,
    /// VJPs through the denoiser.
    pub vjp_denoiser: f64,
    /// VJPs through reward∘decoder only.
    pub vjp_reward: f64,
    /// Reward (and decoder) forwards.
    pub reward_calls: f64,
}

impl Cost {
    /// `k` unguided chains of `n` steps and one final reward each (DDIM, best-of-N, sampling after fine-tuning).
    pub fn plain(n: usize, k: usize) -> Self {
        let (n, k) = (n as f64, k as f64);
        Cost { nfe: n * k, vjp_denoiser: 0.0, vjp_reward: 0.0, reward_calls: k }
    }

    /// The value of this cost on a budget axis; `row_seconds` = seconds per row of (denoiser forward, denoiser VJP
    /// including its forward, reward VJP, reward forward), used by the `wall_s` axis only.
    pub fn on(&self, axis: BudgetAxis, row_seconds: [f64; 4]) -> f64 {
        match axis {
            BudgetAxis::Nfe => self.nfe,
            BudgetAxis::VjpTotal => self.vjp_denoiser + self.vjp_reward,
            BudgetAxis::RewardCalls => self.reward_calls,
            BudgetAxis::WallS => {
                let s = row_seconds;
                // A denoiser VJP row includes its forward, which `nfe` also counts.
                (self.nfe - self.vjp_denoiser) * s[0]
                    + self.vjp_denoiser * s[1]
                    + self.vjp_reward * s[2]
                    + self.reward_calls * s[3]
            }
        }
    }
}
