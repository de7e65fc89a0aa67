//! Problems: a data distribution with its models — the Gaussian-mixture toy with exact tilted targets (`toy`),
//! FMNIST-align (`mini`) and Stable Diffusion 1.5 (`sd15`). Everything a problem needs lives in its folder: its
//! spec (the `problem:` entry), plan-time validation, building its denoiser, decoder, reward and conditioning,
//! evaluating outputs into metrics, its checks and references, and the data of its own report figures. Each
//! implements [`Problem`] (`core`) and is registered once below; adding a problem is one folder plus one line.

pub mod core;
pub mod cross_reward;
pub mod mini;
pub mod sd15;
pub mod setting;
pub mod toy;

use serde::{Deserialize, Serialize};

pub use self::core::{Evaluation, Instance, Problem};
pub use setting::Setting;

macro_rules! registry {
    ($($variant:ident($spec:ty) = $tag:literal;)*) => {
        /// A data distribution with its models; the YAML tag `kind:` selects the problem.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum ProblemSpec {
            $(
                #[doc = concat!("`kind: ", $tag, "`")]
                #[serde(rename = $tag)]
                $variant($spec),
            )*
        }

        impl ProblemSpec {
            /// The problem behind the tag.
            pub fn problem(&self) -> &dyn Problem {
                match self {
                    $(ProblemSpec::$variant(p) => p,)*
                }
            }
        }

        /// Every problem tag, in registry order.
        pub const PROBLEM_KINDS: &[&str] = &[$($tag,)*];
    };
}

registry! {
    Gmm(toy::GmmSpec) = "gmm";
    Mini(mini::spec::MiniSpec) = "mini";
    Sd15(sd15::setup::Sd15Spec) = "sd15";
}

impl ProblemSpec {
    /// Short label for tables (preset name, classes, `sd15`).
    pub fn label(&self) -> String {
        self.problem().label()
    }
}
