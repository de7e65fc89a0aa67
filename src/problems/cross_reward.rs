//! The cross-reward matrix of an image cell (rewards.md §8: guide with one reward, evaluate with all), shared by the
//! `sd15` and `mini` cells. Every evaluation reward's scores on the cell's kept (finite) outputs become
//!
//! - the per-cell metrics `r_<label>` (output-weighted mean) and `r_<label>_sd` (output-weighted population sd);
//! - one [`PromptRow`] per (prompt, reward): the same weighted mean and sd over that prompt's outputs only, their
//!   number and the prompt's share of the cell's output weight, so Σ_prompts `weight`·`mean` = `r_<label>`. They are
//!   saved in the cell file and tabulated by the store as `prompts.csv` / `prompts.parquet`.
//!
//! A prompt is an id and a text: on `sd15` the prompt's index in the manifest and its text, on `mini` the class
//! number and its Fashion-MNIST name, and an unconditional problem has the one prompt [`UNCONDITIONAL`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::numerics::non_finite;
use crate::numerics::weighted_mean_sd;

/// Id and text of the one prompt of an unconditional problem.
pub const UNCONDITIONAL: &str = "∅";

/// A prompt of a cell.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    /// Stable id (manifest index, class number, or [`UNCONDITIONAL`]).
    pub id: String,
    /// Text (the prompt, the class name).
    pub text: String,
}

impl Prompt {
    /// The one prompt of an unconditional problem.
    pub fn unconditional() -> Self {
        Prompt { id: UNCONDITIONAL.into(), text: UNCONDITIONAL.into() }
    }
}

/// One evaluation reward's scores on the cell's kept outputs.
#[derive(Clone, Debug)]
pub struct Scores {
    /// Table label (`r_<label>` is the cell metric).
    pub label: String,
    /// Whether this is the reward the cell was guided by.
    pub guide: bool,
    /// One score per kept output.
    pub values: Vec<f64>,
}

/// One (prompt, evaluation reward) entry of a cell's cross-reward matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptRow {
    /// Prompt id.
    pub prompt: String,
    /// Prompt text.
    pub text: String,
    /// Evaluation reward label.
    pub reward: String,
    /// Whether `reward` guided the cell.
    pub guide: bool,
    /// Output-weighted mean of the reward over the prompt's outputs.
    #[serde(with = "non_finite::scalar")]
    pub mean: f64,
    /// Output-weighted population standard deviation over the prompt's outputs.
    #[serde(with = "non_finite::scalar")]
    pub sd: f64,
    /// Number of the prompt's kept outputs.
    pub n: usize,
    /// The prompt's share of the cell's kept output weight.
    #[serde(with = "non_finite::scalar")]
    pub weight: f64,
}

/// Insert `r_<label>` / `r_<label>_sd` of every reward into `m` and return the per-prompt rows (prompt-major, in the
/// order of `prompts`; a prompt without kept outputs has none). `w` are the kept outputs' weights and `prompt_of`
/// the index into `prompts` of each kept output.
pub fn cross_reward(
    scores: &[Scores],
    w: &[f64],
    prompt_of: &[usize],
    prompts: &[Prompt],
    m: &mut BTreeMap<String, f64>,
) -> Vec<PromptRow> {
    debug_assert_eq!(w.len(), prompt_of.len());
    for s in scores {
        debug_assert_eq!(s.values.len(), w.len(), "scores of {}", s.label);
        let (mean, sd) = weighted_mean_sd(&s.values, w);
        m.insert(format!("r_{}", s.label), mean);
        m.insert(format!("r_{}_sd", s.label), sd);
    }
    let total: f64 = w.iter().sum();
    let mut rows = Vec::with_capacity(prompts.len() * scores.len());
    for (pi, p) in prompts.iter().enumerate() {
        let idx: Vec<usize> = (0..w.len()).filter(|&i| prompt_of[i] == pi).collect();
        if idx.is_empty() {
            continue;
        }
        let wp: Vec<f64> = idx.iter().map(|&i| w[i]).collect();
        let weight = wp.iter().sum::<f64>() / total;
        for s in scores {
            let v: Vec<f64> = idx.iter().map(|&i| s.values[i]).collect();
            let (mean, sd) = weighted_mean_sd(&v, &wp);
            rows.push(PromptRow {
                prompt: p.id.clone(),
                text: p.text.clone(),
                reward: s.label.clone(),
                guide: s.guide,
                mean,
                sd,
                n: idx.len(),
                weight,
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_prompt_rows_average_to_the_cell_metric() {
        let prompts = vec![Prompt { id: "7".into(), text: "a cat".into() }, Prompt::unconditional()];
        // Prompt 0 has outputs 0, 2 (weights 0.1, 0.3); prompt 1 outputs 1, 3 (0.2, 0.4).
        let w = [0.1, 0.2, 0.3, 0.4];
        let prompt_of = [0, 1, 0, 1];
        let scores = vec![
            Scores { label: "a".into(), guide: true, values: vec![1.0, 2.0, 3.0, 4.0] },
            Scores { label: "0.5*b".into(), guide: false, values: vec![0.0, 1.0, 0.0, -1.0] },
        ];
        let mut m = BTreeMap::new();
        let rows = cross_reward(&scores, &w, &prompt_of, &prompts, &mut m);
        assert_eq!(rows.len(), 4);
        let r = &rows[0];
        assert_eq!((r.prompt.as_str(), r.text.as_str(), r.reward.as_str(), r.guide, r.n), ("7", "a cat", "a", true, 2));
        // Weighted mean (0.1·1 + 0.3·3)/0.4 = 2.5, sd √((0.1·2.25 + 0.3·0.25)/0.4) = √0.75.
        assert!((r.mean - 2.5).abs() < 1e-12 && (r.sd - 0.75f64.sqrt()).abs() < 1e-12, "{r:?}");
        assert!((r.weight - 0.4).abs() < 1e-12);
        assert!(rows[2].prompt == "∅" && (rows[2].weight - 0.6).abs() < 1e-12);
        for s in &scores {
            let avg: f64 = rows.iter().filter(|r| r.reward == s.label).map(|r| r.weight * r.mean).sum();
            assert!((avg - m[&format!("r_{}", s.label)]).abs() < 1e-12);
        }
        assert!((m["r_a"] - 3.0).abs() < 1e-12 && m.contains_key("r_0.5*b_sd"));
    }

    #[test]
    fn rows_survive_json_with_non_finite_values() {
        let r = PromptRow {
            prompt: "0".into(),
            text: "T-shirt/top".into(),
            reward: "style_a".into(),
            guide: false,
            mean: f64::NEG_INFINITY,
            sd: f64::NAN,
            n: 3,
            weight: 1.0,
        };
        let back: PromptRow = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.mean, f64::NEG_INFINITY);
        assert!(back.sd.is_nan() && back.n == 3);
    }
}
