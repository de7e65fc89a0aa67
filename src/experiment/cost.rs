//! The ledger cost model (methods.md §17): what one prompt group of a cell costs, per method, in the ledger's own
//! units — denoiser forward rows (F), VJPs through the denoiser (V_full), VJPs through reward∘decoder only (V_dec),
//! reward forwards (Rew). The formulas are the samplers' exact counts (a test runs every method and compares with
//! the ledger), so the plan can size methods to a compute budget before anything runs.
//!
//! The `wall_s` axis uses a declared per-row time model ([`row_seconds`], measured once on the project's 2-core
//! machine for the toy denoisers) — an estimate for matching, not a measurement; measured wall time is always
//! reported separately as `wall_s` in `metrics.csv`.

use super::spec::{BudgetAxis, CellSpec, DenoiserKind, MethodSpec, ProblemSpec};
use crate::samplers::svdd::ValueEstimate;

/// Estimated ledger of one prompt group (the runner reports the same counters per group).
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

/// Seconds per row of (denoiser forward, denoiser VJP incl. its forward, reward VJP, reward forward) — the
/// declared single-core time model of the `wall_s` budget axis, measured with `--release --threads 1` on the
/// project's 2-core machine (GMM1, 300 groups × 100 particles × 100 steps: DDIM, TDS and MPGD cells; the analytic
/// 9-component ε and the AVX2 MLP cost the same to within 5 %).
///
/// FMNIST-align (`problem: mini`): measured the same way from the ledger's phase times of T1 cells (160 groups × 4
/// particles × 50 steps, CFG w = 1.5, `--threads 1`: DDIM, SMC, DAS, MPGD); see [`MINI_ROW_SECONDS`].
pub fn row_seconds(c: &CellSpec) -> [f64; 4] {
    match (&c.problem, c.denoiser) {
        (ProblemSpec::Gmm { .. }, DenoiserKind::Analytic | DenoiserKind::Mlp) => [1.7e-7, 3.9e-7, 1.5e-8, 1.2e-8],
        (ProblemSpec::Mini { .. }, _) => MINI_ROW_SECONDS,
        (ProblemSpec::Sd15 { .. }, _) => SD15_ROW_SECONDS,
    }
}

/// Stable Diffusion 1.5 has no measured per-row time model yet (it depends on device, dtype and resolution), so
/// the `wall_s` budget axis is undefined there (NaN) and `sd_cell::validate` refuses it; use `nfe`, `vjp_total`
/// or `reward_calls`.
pub const SD15_ROW_SECONDS: [f64; 4] = [f64::NAN; 4];

/// Seconds per row on FMNIST-align: (ε-MLP forward with CFG, its VJP, reward∘decoder VJP, reward∘decoder forward).
pub const MINI_ROW_SECONDS: [f64; 4] = [6.6e-5, 2.3e-4, 1.4e-4, 3.7e-5];

impl Cost {
    /// The value of this cost on a budget axis.
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

/// Ledger cost of one group of a cell (sampling only; fine-tuning reports its training cost separately).
pub fn per_group(c: &CellSpec) -> Cost {
    let n = c.steps as f64;
    let k = c.method.particles() as f64;
    let plain = Cost { nfe: n * k, vjp_denoiser: 0.0, vjp_reward: 0.0, reward_calls: k };
    match &c.method {
        MethodSpec::Ddim(_)
        | MethodSpec::Oracle(_)
        | MethodSpec::BestOfN(_)
        | MethodSpec::Rl(_)
        | MethodSpec::Backprop(_) => plain,
        MethodSpec::Das(_) | MethodSpec::Tds(_) => Cost { vjp_denoiser: n * k, reward_calls: n * k + k, ..plain },
        MethodSpec::Smc(_) => Cost { reward_calls: n * k + k, ..plain },
        MethodSpec::Fk(f) => Cost { reward_calls: k * (f.resampling_steps(c.steps) as f64 + 1.0), ..plain },
        MethodSpec::Svdd(s) => {
            let (m, r) = (s.children as f64, s.rollouts as f64);
            match s.value_estimate {
                ValueEstimate::PosteriorMean => Cost { nfe: k + k * m * (n - 1.0), reward_calls: k * m * n, ..plain },
                ValueEstimate::MonteCarlo => Cost {
                    nfe: k + k * m * (n - 1.0) + k * m * r * (n - 1.0) * (n - 2.0).max(0.0) / 2.0,
                    reward_calls: k * m * (r * (n - 1.0) + 1.0),
                    ..plain
                },
            }
        }
        MethodSpec::Dps(d) => {
            let w = d.window.count(c.steps) as f64;
            Cost { vjp_denoiser: w * k, reward_calls: w * k + k, ..plain }
        }
        MethodSpec::Freedom(f) => {
            let (mut fwd, mut vjp) = (0.0, 0.0);
            for i in 0..c.steps {
                let r = f.passes(i, c.steps) as f64;
                fwd += r;
                if f.window.contains(i, c.steps) {
                    vjp += r;
                }
            }
            Cost { nfe: fwd * k, vjp_denoiser: vjp * k, reward_calls: vjp * k + k, vjp_reward: 0.0 }
        }
        MethodSpec::Mpgd(f) => {
            let (mut fwd, mut vjp) = (0.0, 0.0);
            for i in 0..c.steps {
                let r = f.passes(i, c.steps) as f64;
                fwd += r;
                if f.window.contains(i, c.steps) {
                    vjp += r;
                }
            }
            Cost { nfe: fwd * k, vjp_denoiser: 0.0, vjp_reward: vjp * k, reward_calls: vjp * k + k }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::plan::plan_str;
    use std::path::Path;

    fn cell(method: &str) -> CellSpec {
        let y = format!(
            "version: 1\nname: t\nproblem: {{ kind: gmm, preset: gmm1 }}\nsteps: 100\ngroups: 1\nmethods: [{method}]\n"
        );
        plan_str(&y, Path::new("<t>")).unwrap().cells[0].spec.clone()
    }

    #[test]
    fn methods_md_table_values() {
        // methods.md §17 with c = 1 (no CFG), N = 100.
        let c = per_group(&cell("{ method: das, particles: 4 }"));
        assert_eq!((c.nfe, c.vjp_denoiser, c.reward_calls), (400.0, 400.0, 404.0));
        let c = per_group(&cell("{ method: smc, particles: 4 }"));
        assert_eq!((c.nfe, c.vjp_denoiser, c.reward_calls), (400.0, 0.0, 404.0));
        let c = per_group(&cell("{ method: fk, particles: 4, interval: 20, start: 0.2, end: 0.8 }"));
        assert_eq!((c.nfe, c.reward_calls), (400.0, 20.0));
        let c = per_group(&cell("{ method: freedom }"));
        assert_eq!((c.nfe, c.vjp_denoiser, c.reward_calls), (160.0, 100.0, 101.0));
        let c = per_group(&cell("{ method: mpgd }"));
        assert_eq!((c.nfe, c.vjp_reward, c.reward_calls), (100.0, 40.0, 41.0));
        let c = per_group(&cell("{ method: dps }"));
        assert_eq!((c.nfe, c.vjp_denoiser, c.reward_calls), (100.0, 100.0, 101.0));
        let c = per_group(&cell("{ method: best_of_n, particles: 4 }"));
        assert_eq!((c.nfe, c.reward_calls), (400.0, 4.0));
    }

    #[test]
    fn svdd_matches_the_table_at_n_50() {
        let y = "version: 1\nname: t\nproblem: { kind: gmm, preset: gmm1 }\nsteps: 50\ngroups: 1\nmethods: [{ method: svdd, children: 20 }]\n";
        let c = per_group(&plan_str(y, Path::new("<t>")).unwrap().cells[0].spec);
        // methods.md §17: K = 1, M = 20, N = 50 ⇒ F = 1 + 20·49 = 981 rows (1962 with CFG), Rew = 1000.
        assert_eq!((c.nfe, c.reward_calls), (981.0, 1000.0));
    }
}
