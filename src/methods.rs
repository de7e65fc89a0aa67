//! The method registry: every method of this build, once. Each line names a method's configuration type (its
//! `methods:` entry, which implements [`Method`]) and its YAML tag, which equals the file name. The plan, the
//! runner, the cost model and `alignbench list methods` all read this list; adding a method is one file under
//! `samplers/` (or `finetune/`) plus one line here.

use serde::{Deserialize, Serialize};

use crate::finetune::{backprop::BackpropConfig, rl::RlConfig};
use crate::samplers::beam_search::BeamSearchConfig;
use crate::samplers::best_of_n::BestOfNConfig;
use crate::samplers::das::DasConfig;
use crate::samplers::ddim::DdimConfig;
use crate::samplers::dps::DpsConfig;
use crate::samplers::dts::DtsConfig;
use crate::samplers::fk::FkConfig;
use crate::samplers::freedom::FreedomConfig;
pub use crate::samplers::method::{Chain, Method, MethodInfo, Needs, Provides};
use crate::samplers::mpgd::MpgdConfig;
use crate::samplers::oracle::OracleConfig;
use crate::samplers::path_search::PathSearchConfig;
use crate::samplers::psi::PsiConfig;
use crate::samplers::smc::SmcConfig;
use crate::samplers::svdd::SvddConfig;
use crate::samplers::tds::TdsConfig;
use crate::samplers::zero_order::ZeroOrderConfig;

macro_rules! registry {
    ($($variant:ident($config:ty) = $tag:literal, $info:path;)*) => {
        /// A method with its parameters; the YAML tag `method:` selects the variant.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "method")]
        pub enum MethodSpec {
            $(
                #[doc = concat!("`method: ", $tag, "`")]
                #[serde(rename = $tag)]
                $variant($config),
            )*
        }

        impl MethodSpec {
            /// The method behind the tag.
            pub fn method(&self) -> &dyn Method {
                match self {
                    $(MethodSpec::$variant(c) => c,)*
                }
            }
        }

        /// Every method of this build, in registry order.
        pub fn catalogue() -> Vec<&'static MethodInfo> {
            vec![$(&$info,)*]
        }

        /// Every YAML tag, in registry order.
        pub const METHOD_NAMES: &[&str] = &[$($tag,)*];
    };
}

registry! {
    Ddim(DdimConfig) = "ddim", crate::samplers::ddim::INFO;
    BestOfN(BestOfNConfig) = "best_of_n", crate::samplers::best_of_n::INFO;
    Das(DasConfig) = "das", crate::samplers::das::INFO;
    Tds(TdsConfig) = "tds", crate::samplers::tds::INFO;
    Smc(SmcConfig) = "smc", crate::samplers::smc::INFO;
    Fk(FkConfig) = "fk", crate::samplers::fk::INFO;
    Svdd(SvddConfig) = "svdd", crate::samplers::svdd::INFO;
    Dps(DpsConfig) = "dps", crate::samplers::dps::INFO;
    Freedom(FreedomConfig) = "freedom", crate::samplers::freedom::INFO;
    Mpgd(MpgdConfig) = "mpgd", crate::samplers::mpgd::INFO;
    Rl(RlConfig) = "rl", crate::finetune::rl::INFO;
    Backprop(BackpropConfig) = "backprop", crate::finetune::backprop::INFO;
    Oracle(OracleConfig) = "oracle", crate::samplers::oracle::INFO;
    Dts(DtsConfig) = "dts", crate::samplers::dts::INFO;
    Psi(PsiConfig) = "psi", crate::samplers::psi::INFO;
    ZeroOrder(ZeroOrderConfig) = "zero_order", crate::samplers::zero_order::INFO;
    PathSearch(PathSearchConfig) = "path_search", crate::samplers::path_search::INFO;
    BeamSearch(BeamSearchConfig) = "beam_search", crate::samplers::beam_search::INFO;
}

impl MethodSpec {
    /// YAML tag.
    pub fn name(&self) -> &'static str {
        self.method().info().name
    }
    /// Particles (samples, candidates, chains) per group.
    pub fn particles(&self) -> usize {
        self.method().particles()
    }
    /// Whether the method is a particle system whose weights, ESS and resamplings are reported.
    pub fn is_smc(&self) -> bool {
        self.method().is_smc()
    }
    /// Whether the method fine-tunes the denoiser before sampling.
    pub fn is_fine_tuning(&self) -> bool {
        self.method().info().needs.trainable_denoiser
    }
}

/// A method spec is the method behind its tag.
impl Method for MethodSpec {
    fn info(&self) -> &'static MethodInfo {
        self.method().info()
    }
    fn particles(&self) -> usize {
        self.method().particles()
    }
    fn size_key(&self) -> Option<&'static str> {
        self.method().size_key()
    }
    fn validate(&self, chain: &Chain) -> crate::Result<()> {
        self.method().validate(chain)
    }
    fn cost(&self, steps: usize) -> crate::ledger::Cost {
        self.method().cost(steps)
    }
    fn sampler(&self, alpha: f64) -> crate::Result<Box<dyn crate::samplers::Sampler>> {
        self.method().sampler(alpha)
    }
    fn is_smc(&self) -> bool {
        self.method().is_smc()
    }
}

/// The catalogue entry of a method tag.
pub fn method_info(name: &str) -> Option<&'static MethodInfo> {
    catalogue().into_iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_equal_the_registered_names_and_are_unique() {
        let names: Vec<&str> = catalogue().iter().map(|m| m.name).collect();
        assert_eq!(names, METHOD_NAMES);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for name in METHOD_NAMES {
            let spec: MethodSpec = serde_json::from_value(serde_json::json!({ "method": name, "particles": 2 }))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(spec.name(), *name);
            assert_eq!(spec.particles(), 2);
        }
    }
}
