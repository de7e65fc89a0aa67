//! Analysis layer of the report (criterion's model: load → analysis → tables and figures → exporters → page). An
//! [`Exp`] is one stored experiment with its summaries over seeds ([`super::stats`], polars) and the questions the
//! tables and figures ask of it: which parameters vary, how a configuration is labelled, the summary of a metric
//! for a configuration, the reward that guided it, the order methods are shown in. Nothing here reads files or
//! draws.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::DataFrame;

use super::load::{PromptEntry, StoredCell, StoredExperiment, TargetView};
use super::stats::{self, Stat};
use crate::rewards::spec::RewardSpec;
use crate::Result;

/// Parameters that place a configuration (never part of a variant label).
pub const CONTEXT: [&str; 5] = ["problem", "denoiser", "alpha", "steps", "reward"];

/// The position of a method in the report's order (unguided, best-of-N, SMC family, guidance, fine-tuning: the
/// method catalogue's order); unknown methods last. Every ordering of methods in the report goes through here.
pub fn method_order(name: &str) -> usize {
    crate::methods::catalogue().iter().position(|i| i.name == name).unwrap_or(usize::MAX)
}

/// One stored experiment, analysed.
pub struct Exp {
    /// Experiment name.
    pub name: String,
    /// `metrics.parquet`.
    pub df: DataFrame,
    /// Stored cells.
    pub cells: Vec<StoredCell>,
    /// `config.yaml`.
    pub config: String,
    /// Summaries over seeds, one per (method, parameters, metric).
    pub stats: Vec<Stat>,
    /// Per-prompt cross-reward rows (`prompts.parquet`; none for the toy).
    pub prompts: Vec<PromptEntry>,
    /// Stored exact target views by key (or why one cannot be read).
    pub targets: BTreeMap<String, std::result::Result<TargetView, String>>,
    /// Parameters with more than one value in this experiment.
    varying: BTreeSet<String>,
}

impl Exp {
    /// Summarise a stored experiment.
    pub fn new(s: StoredExperiment) -> Result<Self> {
        let stats = stats::summarise(&s.df)?;
        let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for st in &stats {
            for (k, v) in &st.params {
                values.entry(k).or_default().insert(v);
            }
        }
        let varying = values.into_iter().filter(|(_, v)| v.len() > 1).map(|(k, _)| k.to_string()).collect();
        Ok(Exp {
            name: s.name,
            df: s.df,
            cells: s.cells,
            config: s.config,
            stats,
            prompts: s.prompts,
            targets: s.targets,
            varying,
        })
    }

    /// Method plus the varying parameters not in `exclude` (nor the context parameters).
    pub fn label(&self, method: &str, params: &BTreeMap<String, String>, exclude: &[&str]) -> String {
        let extra: Vec<String> = params
            .iter()
            .filter(|(k, v)| {
                self.varying.contains(*k)
                    && !v.is_empty()
                    && !exclude.contains(&k.as_str())
                    && !CONTEXT.contains(&k.as_str())
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if extra.is_empty() {
            method.to_string()
        } else {
            format!("{method} ({})", extra.join(", "))
        }
    }

    /// The summary of `metric` for the configuration of `s` (same method and parameters).
    pub fn get(&self, s: &Stat, metric: &str) -> Option<&Stat> {
        self.stats.iter().find(|o| o.metric == metric && o.method == s.method && o.params == s.params)
    }

    /// The mean of `metric` for the configuration of `s` (NaN when absent).
    pub fn mean(&self, s: &Stat, metric: &str) -> f64 {
        self.get(s, metric).map_or(f64::NAN, |x| x.mean)
    }

    /// A stored cell of the configuration of `s` (its parameter columns equal; a cell file may record more, e.g.
    /// an SD cell's prompt draw and model digests).
    pub fn cell(&self, s: &Stat) -> Option<&StoredCell> {
        self.cells.iter().find(|c| {
            c.method == s.method && s.params.iter().all(|(k, v)| c.params.get(k).map(String::as_str).unwrap_or("") == v)
        })
    }

    /// One stat per configuration (the first metric seen), in order.
    pub fn configs(&self) -> Vec<&Stat> {
        let mut seen = BTreeSet::new();
        self.stats.iter().filter(|s| seen.insert((s.method.clone(), s.params.clone()))).collect()
    }

    /// Whether `param` takes more than one value.
    pub fn has(&self, param: &str) -> bool {
        self.varying.contains(param)
    }

    /// Σ of the cells' wall times.
    pub fn wall(&self) -> f64 {
        self.cells.iter().filter_map(|c| c.metrics.get("wall_s")).sum()
    }

    /// Whether the experiment ran on the toy (an exact 2-D target: its cells' problem kind is `gmm`).
    pub fn is_toy(&self) -> bool {
        self.cells.iter().any(|c| c.problem_kind() == "gmm")
    }

    /// Whether the experiment ran on the FMNIST-align problem.
    pub fn is_mini(&self) -> bool {
        self.cells.iter().any(|c| c.params.get("problem").is_some_and(|p| p.starts_with("mini")))
    }

    /// Whether the experiment belongs to the Figure-1 family (both presets, α = 1, every method).
    pub fn is_figure1(&self) -> bool {
        self.name.contains("figure1") || self.name.starts_with("toy-gmm")
    }

    /// The guiding reward of a configuration (from its stored cell spec).
    pub fn reward_spec(&self, s: &Stat) -> Option<RewardSpec> {
        self.cell(s).and_then(|c| serde_json::from_value::<RewardSpec>(c.spec.reward.clone()?).ok())
    }

    /// The reward label of a configuration ("" when unknown).
    pub fn reward_label(&self, s: &Stat) -> String {
        self.reward_spec(s).map(|r| r.label()).unwrap_or_default()
    }

    /// The `r_*` metric of the guiding reward: `r_<label>` when stored (sd15: `r_brightness`, `r_0.5*a+0.5*b`),
    /// else `r_<kind>` (FMNIST-align: `cls_a[0]` → `r_cls_a`); none for a target no evaluation reward equals.
    pub fn target_metric(&self, s: &Stat) -> Option<String> {
        let r = self.reward_label(s);
        if r.is_empty() {
            return None;
        }
        [format!("r_{r}"), format!("r_{}", r.split('[').next()?)].into_iter().find(|m| self.get(s, m).is_some())
    }

    /// Number of outputs of the configuration of `s` in one cell: the kept outputs of its per-prompt rows, else its
    /// prompt groups.
    fn outputs(&self, s: &Stat) -> f64 {
        let Some(c) = self.cell(s) else { return f64::NAN };
        match c.prompts.first() {
            Some(first) => c.prompts.iter().filter(|p| p.reward == first.reward).map(|p| p.n as f64).sum(),
            None => c.spec.groups.unwrap_or(1.0),
        }
    }

    /// Mean and 95% half-width over outputs (from the `_sd` companion) of `metric` for the configuration of `s`.
    pub fn with_ci(&self, s: &Stat, metric: &str) -> (f64, f64) {
        let sd = self.mean(s, &format!("{metric}_sd"));
        (self.mean(s, metric), 1.96 * sd / self.outputs(s).sqrt())
    }

    /// Configurations in the report's method order, then by reward and α.
    pub fn sorted_configs(&self) -> Vec<&Stat> {
        let mut cfgs = self.configs();
        let key =
            |s: &Stat| (method_order(&s.method), self.reward_label(s), s.p("alpha").parse::<f64>().unwrap_or(0.0));
        cfgs.sort_by(|a, b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal));
        cfgs
    }

    /// Evaluation reward labels: in stored per-prompt order (the target first on sd15), then any other `r_<label>`
    /// metric with an `_sd` companion.
    pub fn eval_labels(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.prompts {
            if !out.contains(&p.reward) {
                out.push(p.reward.clone());
            }
        }
        for s in &self.stats {
            let Some(l) = s.metric.strip_prefix("r_") else { continue };
            let has_sd = !l.ends_with("_sd") && self.stats.iter().any(|o| o.metric == format!("{}_sd", s.metric));
            if has_sd && !out.iter().any(|o| o == l) {
                out.push(l.to_string());
            }
        }
        out
    }

    /// Cells grouped by (problem, denoiser) for one seed (the smallest) and α (1 if present, else the first); the
    /// oracle (`exact_tilted`) joins every denoiser's group.
    pub fn panel_groups(&self) -> BTreeMap<(String, String), Vec<&StoredCell>> {
        let seed = self.cells.iter().map(|c| c.seed).min().unwrap_or(0);
        let alphas: BTreeSet<String> = self.cells.iter().filter_map(|c| c.params.get("alpha").cloned()).collect();
        let alpha = if alphas.contains("1") { Some("1".to_string()) } else { alphas.iter().next().cloned() };
        let mut g: BTreeMap<(String, String), Vec<&StoredCell>> = BTreeMap::new();
        let dens: BTreeSet<String> = self
            .cells
            .iter()
            .filter_map(|c| c.params.get("denoiser").cloned())
            .filter(|d| d != "exact_tilted")
            .collect();
        for c in self.cells.iter().filter(|c| c.seed == seed && c.params.get("alpha") == alpha.as_ref()) {
            let prob = c.params.get("problem").cloned().unwrap_or_default();
            let den = c.params.get("denoiser").cloned().unwrap_or_default();
            if den == "exact_tilted" {
                for d in &dens {
                    g.entry((prob.clone(), d.clone())).or_default().push(c);
                }
                if dens.is_empty() {
                    g.entry((prob.clone(), den.clone())).or_default().push(c);
                }
            } else {
                g.entry((prob, den)).or_default().push(c);
            }
        }
        g
    }
}

/// Sort key of a parameter value: numbers by value, then text.
pub fn sort_key(p: &str) -> (f64, String) {
    (p.parse::<f64>().unwrap_or(f64::INFINITY), p.to_string())
}
