//! The cross-reward matrix of the image problems (rewards.md §8: guide with one reward, evaluate with all;
//! criterion's model: tables are built from the analysis): per configuration ([`cells`], `cross-<experiment>`, for
//! experiments with `r_<label>` metrics other than FMNIST-align, whose richer table is [`super::mini`]) and per
//! prompt ([`prompts`], `prompts-<experiment>`, from the stored `prompts.parquet`). Rows are configurations
//! (method × strength), columns the evaluation rewards; the guiding reward's entry is marked (bold).
//!
//! Intervals are over outputs: ±1.96·sd/√n with sd the spread of the reward over the outputs and n their number
//! (per prompt: the outputs of every seed pooled, sd by the law of total variance). Common random numbers make
//! methods' cells paired, so these intervals are conservative for differences.

use crate::report::analysis::Exp;
use crate::report::load::PromptEntry;
use crate::report::table::{Cell, Table};

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
pub fn cells(e: &Exp) -> Table {
    let labels = e.eval_labels();
    let cols = columns(&["method", "alpha", "reward"], &labels, &["reward_mean", "nfe", "wall_s"]);
    let mut t = table(
        &format!("cross-{}", e.name),
        &format!("{}: cross-reward matrix", e.name),
        "Every evaluation reward on every configuration's outputs (guide with one, evaluate with all); bold = the \
         guiding reward. Means over seeds of the output-weighted mean; ± = 95% interval over one cell's outputs.",
        &cols,
    );
    for s in e.sorted_configs() {
        let target = e.target_metric(s);
        let mut row = vec![
            Cell::Text(e.label(&s.method, &s.params, &["alpha"])),
            Cell::Text(s.p("alpha").to_string()),
            Cell::Text(e.reward_label(s)),
        ];
        for l in &labels {
            let m = format!("r_{l}");
            let (v, h) = e.with_ci(s, &m);
            row.extend([value(v, target.as_deref() == Some(m.as_str())), Cell::Num(h)]);
        }
        row.extend(["reward_mean", "nfe", "wall_s"].map(|m| Cell::Num(e.mean(s, m))));
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
pub fn prompts(e: &Exp) -> Option<Table> {
    if e.prompts.is_empty() {
        return None;
    }
    let labels = e.eval_labels().into_iter().filter(|l| e.prompts.iter().any(|p| p.reward == *l)).collect::<Vec<_>>();
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
    let cfgs = e.sorted_configs();
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
                Cell::Text(e.reward_label(s)),
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
