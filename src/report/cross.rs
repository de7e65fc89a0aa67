//! The cross-reward matrix in the report (rewards.md §8: guide with one reward, evaluate with all) for the image
//! problems: per configuration (`cross-<experiment>`, for experiments with `r_<label>` metrics other than
//! FMNIST-align, whose richer table [`super::mini`] builds on the same helpers) and per prompt (`prompts-<experiment>`,
//! from the stored `prompts.parquet`). Rows are configurations (method × strength), columns the evaluation rewards;
//! the guiding reward's entry is marked (bold).
//!
//! Intervals are over outputs: ±1.96·sd/√n with sd the spread of the reward over the outputs and n their number
//! (per prompt: the outputs of every seed pooled, sd by the law of total variance). Common random numbers make
//! methods' cells paired, so these intervals are conservative for differences.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use polars::prelude::*;

use super::build::Exp;
use super::stats::{floats, strings, Stat};
use super::table::{Cell, Table};
use crate::experiment::store::PROMPT_COLUMNS;
use crate::rewards::spec::RewardSpec;
use crate::{Error, Result};

/// One stored per-prompt row (`prompts.parquet`).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PromptEntry {
    method: String,
    params: BTreeMap<String, String>,
    seed: String,
    prompt: String,
    text: String,
    reward: String,
    guide: bool,
    mean: f64,
    sd: f64,
    n: f64,
    weight: f64,
}

/// The per-prompt rows of an experiment folder (none without `prompts.parquet`).
pub(super) fn load_prompts(dir: &Path) -> Result<Vec<PromptEntry>> {
    let pq = dir.join("prompts.parquet");
    if !pq.is_file() {
        return Ok(Vec::new());
    }
    let bad = |e: &dyn std::fmt::Display| {
        Error::file(&pq, format!("not a readable per-prompt table ({e}); re-run the experiment to rewrite it"))
    };
    let f = fs::File::open(&pq).map_err(|e| Error::file(&pq, format!("cannot open: {e}")))?;
    let df = ParquetReader::new(f).finish().map_err(|e| bad(&e))?;
    let identity = ["experiment", "cell", "method", "seed"];
    let params: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .filter(|c| !identity.contains(&c.as_str()) && !PROMPT_COLUMNS.contains(&c.as_str()))
        .collect();
    let pv: Vec<Vec<String>> = params.iter().map(|p| strings(&df, p)).collect::<Result<_>>()?;
    let [method, seed, prompt, text, reward, guide] =
        ["method", "seed", "prompt", "prompt_text", "eval_reward", "guide"].map(|c| strings(&df, c));
    let [mean, sd, n, weight] = ["mean", "sd", "n", "weight"].map(|c| floats(&df, c));
    let (method, seed, prompt, text, reward, guide) = (method?, seed?, prompt?, text?, reward?, guide?);
    let (mean, sd, n, weight) = (mean?, sd?, n?, weight?);
    Ok((0..df.height())
        .map(|i| PromptEntry {
            method: method[i].clone(),
            params: params.iter().zip(&pv).map(|(k, v)| (k.clone(), v[i].clone())).collect(),
            seed: seed[i].clone(),
            prompt: prompt[i].clone(),
            text: text[i].clone(),
            reward: reward[i].clone(),
            guide: guide[i] == "true",
            mean: mean[i],
            sd: sd[i],
            n: n[i],
            weight: weight[i],
        })
        .collect())
}

/// Number of outputs of the configuration of `s` in one cell: the kept outputs of its per-prompt rows, else its
/// prompt groups.
fn outputs(e: &Exp, s: &Stat) -> f64 {
    let Some(c) = e.cell(s) else { return f64::NAN };
    match c.prompts.first() {
        Some(first) => c.prompts.iter().filter(|p| p.reward == first.reward).map(|p| p.n as f64).sum(),
        None => c.spec.get("groups").and_then(|g| g.as_f64()).unwrap_or(1.0),
    }
}

/// Mean and 95% half-width over outputs (from the `_sd` companion) of `metric` for the configuration of `s`.
pub(super) fn with_ci(e: &Exp, s: &Stat, metric: &str) -> (f64, f64) {
    let m = e.get(s, metric).map(|x| x.mean).unwrap_or(f64::NAN);
    let sd = e.get(s, &format!("{metric}_sd")).map(|x| x.mean).unwrap_or(f64::NAN);
    (m, 1.96 * sd / outputs(e, s).sqrt())
}

/// The reward label of a configuration (from its stored cell spec).
pub(super) fn reward_label(e: &Exp, s: &Stat) -> String {
    e.cell(s)
        .and_then(|c| serde_json::from_value::<RewardSpec>(c.spec.get("reward")?.clone()).ok())
        .map(|r| r.label())
        .unwrap_or_default()
}

/// The `r_*` metric of the guiding reward: `r_<label>` when stored (sd15: `r_brightness`, `r_0.5*a+0.5*b`), else
/// `r_<kind>` (FMNIST-align: `cls_a[0]` → `r_cls_a`); none for a target no evaluation reward equals.
pub(super) fn target_metric(e: &Exp, s: &Stat) -> Option<String> {
    let r = reward_label(e, s);
    if r.is_empty() {
        return None;
    }
    [format!("r_{r}"), format!("r_{}", r.split('[').next()?)].into_iter().find(|m| e.get(s, m).is_some())
}

/// Configurations in the catalogue's method order, then by reward and α.
pub(super) fn sorted_configs(e: &Exp) -> Vec<&Stat> {
    let mut cfgs = e.configs();
    let order = |m: &str| crate::methods::catalogue().iter().position(|i| i.name == m).unwrap_or(usize::MAX);
    let key = |s: &Stat| (order(&s.method), reward_label(e, s), s.p("alpha").parse::<f64>().unwrap_or(0.0));
    cfgs.sort_by(|a, b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal));
    cfgs
}

/// Evaluation reward labels: in stored per-prompt order (the target first on sd15), then any other `r_<label>`
/// metric with an `_sd` companion.
fn eval_labels(e: &Exp) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in &e.prompts {
        if !out.contains(&p.reward) {
            out.push(p.reward.clone());
        }
    }
    for s in &e.stats {
        let Some(l) = s.metric.strip_prefix("r_") else { continue };
        let has_sd = !l.ends_with("_sd") && e.stats.iter().any(|o| o.metric == format!("{}_sd", s.metric));
        if has_sd && !out.iter().any(|o| o == l) {
            out.push(l.to_string());
        }
    }
    out
}

/// Whether an experiment has a per-configuration cross-reward row (`r_<label>` metrics).
pub(super) fn has_cross(e: &Exp) -> bool {
    !eval_labels(e).is_empty()
}

/// Columns `<label>`, `<label> ±95%` per evaluation reward after `lead`.
fn columns(lead: &[&str], labels: &[String], tail: &[&str]) -> Vec<String> {
    let mut cols: Vec<String> = lead.iter().map(|s| s.to_string()).collect();
    cols.extend(labels.iter().flat_map(|l| [l.clone(), format!("{l} ±95%")]));
    cols.extend(tail.iter().map(|s| s.to_string()));
    cols
}

fn table(name: &str, title: &str, caption: &str, cols: &[String]) -> Table {
    Table::new(name, title, caption, &cols.iter().map(String::as_str).collect::<Vec<_>>())
}

fn value(v: f64, guide: bool) -> Cell {
    if guide {
        Cell::Mark(v)
    } else {
        Cell::Num(v)
    }
}

/// The cross-reward table of one experiment, one row per configuration.
pub(super) fn cell_table(e: &Exp) -> Table {
    let labels = eval_labels(e);
    let cols = columns(&["method", "alpha", "reward"], &labels, &["reward_mean", "nfe", "wall_s"]);
    let mut t = table(
        &format!("cross-{}", e.name),
        &format!("{}: cross-reward matrix", e.name),
        "Every evaluation reward on every configuration's outputs (guide with one, evaluate with all); bold = the \
         guiding reward. Means over seeds of the output-weighted mean; ± = 95% interval over one cell's outputs.",
        &cols,
    );
    for s in sorted_configs(e) {
        let target = target_metric(e, s);
        let mut row = vec![
            Cell::Text(e.label(&s.method, &s.params, &["alpha"])),
            Cell::Text(s.p("alpha").to_string()),
            Cell::Text(reward_label(e, s)),
        ];
        for l in &labels {
            let m = format!("r_{l}");
            let (v, h) = with_ci(e, s, &m);
            row.extend([value(v, target.as_deref() == Some(m.as_str())), Cell::Num(h)]);
        }
        row.extend(
            ["reward_mean", "nfe", "wall_s"].map(|m| Cell::Num(e.get(s, m).map(|x| x.mean).unwrap_or(f64::NAN))),
        );
        t.push(row);
    }
    t
}

/// Output-weighted pool of one (configuration, prompt, reward) over seeds.
#[derive(Default)]
struct Pool {
    w: f64,
    wm: f64,
    wm2: f64,
    n: f64,
    guide: bool,
}

impl Pool {
    fn add(&mut self, p: &PromptEntry) {
        self.w += p.weight;
        self.wm += p.weight * p.mean;
        self.wm2 += p.weight * (p.sd * p.sd + p.mean * p.mean);
        self.n += p.n;
        self.guide |= p.guide;
    }
    /// Mean and 95% half-width over the pooled outputs.
    fn mean_ci(&self) -> (f64, f64) {
        let m = self.wm / self.w;
        let var = (self.wm2 / self.w - m * m).max(0.0);
        (m, 1.96 * var.sqrt() / self.n.sqrt())
    }
}

/// The cross-reward table per prompt of one experiment (none without per-prompt rows): one row per prompt and
/// configuration.
pub(super) fn prompt_table(e: &Exp) -> Option<Table> {
    if e.prompts.is_empty() {
        return None;
    }
    let labels = eval_labels(e).into_iter().filter(|l| e.prompts.iter().any(|p| p.reward == *l)).collect::<Vec<_>>();
    let cols = columns(&["prompt", "text", "method", "alpha", "reward"], &labels, &["n", "seeds"]);
    let mut t = table(
        &format!("prompts-{}", e.name),
        &format!("{}: cross-reward matrix per prompt", e.name),
        "Every evaluation reward on each prompt's outputs (guide with one, evaluate with all); bold = the guiding \
         reward. Output-weighted mean over the prompt's outputs of every seed; ± = 95% interval over those n outputs.",
        &cols,
    );
    let mut prompts: Vec<(&str, &str)> = Vec::new();
    for p in &e.prompts {
        if !prompts.iter().any(|q| q.0 == p.prompt) {
            prompts.push((&p.prompt, &p.text));
        }
    }
    let cfgs = sorted_configs(e);
    for (id, text) in prompts {
        for s in &cfgs {
            let rows: Vec<&PromptEntry> =
                e.prompts.iter().filter(|p| p.prompt == id && p.method == s.method && p.params == s.params).collect();
            if rows.is_empty() {
                continue;
            }
            let mut row = vec![
                Cell::Text(id.to_string()),
                Cell::Text(text.to_string()),
                Cell::Text(e.label(&s.method, &s.params, &["alpha"])),
                Cell::Text(s.p("alpha").to_string()),
                Cell::Text(reward_label(e, s)),
            ];
            let mut n = 0.0;
            for l in &labels {
                let mut pool = Pool::default();
                rows.iter().filter(|p| p.reward == *l).for_each(|p| pool.add(p));
                let (m, h) = if pool.n > 0.0 { pool.mean_ci() } else { (f64::NAN, f64::NAN) };
                row.extend([value(m, pool.guide), Cell::Num(h)]);
                n = f64::max(n, pool.n);
            }
            let mut seeds: Vec<&str> = rows.iter().map(|p| p.seed.as_str()).collect();
            seeds.sort_unstable();
            seeds.dedup();
            row.extend([Cell::Num(n), Cell::Num(seeds.len() as f64)]);
            t.push(row);
        }
    }
    Some(t)
}
