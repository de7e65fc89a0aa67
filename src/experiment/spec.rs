//! Typed experiment files (YAML). A file is expanded into cells by `plan`; every cell deserialises into
//! [`CellSpec`] — the problem ([`ProblemSpec`], the problem registry) and the rest ([`Setting`]) — and every key the
//! typed structs do not keep is reported with its path (`keys`), so a misspelt key fails with its name.
//!
//! ```yaml
//! version: 1
//! name: toy-gmm1
//! seeds: [0, 1, 2]                         # a list sweeps; `seed: 0` for one
//! problem: { kind: gmm, preset: gmm1 }     # or { kind: gmm, weights: [..], means: [[..]], covs: [[[..]]] },
//!                                          # { kind: mini, .. }, { kind: sd15, path: .., prompts: .. }
//! reward: { kind: quadratic, preset: gmm1 } # or { kind: quadratic, a: [[..]], b: [..], c: .. }; default: the
//!                                          # problem preset's own reward
//! denoiser: [analytic, mlp]                # lists at the top level sweep: alpha, denoiser, steps, eta, groups,
//!                                          # grid, problem, reward
//! alpha: 1.0
//! steps: 100
//! budget: { axis: nfe, value: [400, 1600] } # optional compute matching: the plan sizes every method
//! methods:
//!   - method: das
//!     particles: [10, 100]                 # lists inside a method sweep too
//!   - method: rl
//!     denoiser: mlp                        # a method may override alpha, denoiser, steps, eta, groups, grid
//! ```

use serde::{Deserialize, Serialize};

pub use crate::ledger::BudgetAxis;
pub use crate::methods::{MethodSpec, METHOD_NAMES};
pub use crate::problems::mini::spec::{MiniSpec, MINI_CFG};
pub use crate::problems::sd15::setup::{Sd15Spec, SdDtype};
pub use crate::problems::setting::{Budget, DenoiserKind, MetricsSpec, Setting};
pub use crate::problems::toy::GmmSpec;
pub use crate::problems::ProblemSpec;
pub use crate::rewards::spec::{RewardSpec, WeightedTerm};

/// The file format version this build reads.
pub const VERSION: u32 = 1;

/// Top-level keys whose list values sweep.
pub const SWEEP_KEYS: [&str; 8] = ["alpha", "denoiser", "steps", "eta", "groups", "grid", "problem", "reward"];

/// Every top-level key of an experiment file: the fields of [`CellSpec`] (except `method`, which lives in each
/// `methods:` entry) and the file-level keys `description`, `seeds` and `methods`.
pub const TOP_KEYS: [&str; 17] = [
    "version",
    "name",
    "description",
    "seed",
    "seeds",
    "problem",
    "reward",
    "alpha",
    "denoiser",
    "mlp_weights",
    "steps",
    "eta",
    "grid",
    "groups",
    "metrics",
    "budget",
    "methods",
];

/// Top-level keys a `methods:` entry may set for itself (overriding, or sweeping, the top-level value).
pub const METHOD_OVERRIDES: [&str; 6] = ["alpha", "denoiser", "steps", "eta", "groups", "grid"];

/// One fully resolved cell: the problem and everything else ([`Setting`], which the problem's code reads through
/// `Deref`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    /// The data distribution and its models.
    pub problem: ProblemSpec,
    /// Reward, method, chain, seed, evaluation protocol.
    #[serde(flatten)]
    pub setting: Setting,
}

impl std::ops::Deref for CellSpec {
    type Target = Setting;
    fn deref(&self) -> &Setting {
        &self.setting
    }
}

/// The key a compute budget sizes for a method tag (`None`: the method has no size to match, or no such method).
pub fn size_key(method: &str) -> Option<&'static str> {
    let spec: MethodSpec = serde_json::from_value(serde_json::json!({ "method": method, "particles": 1 })).ok()?;
    spec.method().size_key()
}
