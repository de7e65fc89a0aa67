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
