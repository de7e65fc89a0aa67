//! Assembling the report: discovery of stored experiments, every table, every figure, then the HTML page.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use polars::prelude::*;

use super::figures::{self, Density, LinePanel, ParetoPoint, ScatterPanel, Series};
use super::html::{self, Section};
use super::stats::{self, Stat};
use super::table::{Cell, Table};
use crate::experiment::runner::CellResult;
use crate::experiment::spec::CellSpec;
use crate::problems::toy::ToyProblem;
use crate::rng::{Purpose, Streams};
use crate::{Error, Result};

/// Where to read and write.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Results folder holding `<experiment>/metrics.parquet`.
    pub results: PathBuf,
    /// Output folder (replaced as a whole).
    pub out: PathBuf,
    /// Folder of reference numbers (`baselines/*.yaml`); missing is fine.
    pub baselines: PathBuf,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct ReportSummary {
    /// The HTML page.
    pub index: PathBuf,
    /// Experiments included.
    pub experiments: Vec<String>,
    /// Tables written.
    pub tables: usize,
    /// Figures written (each as PNG and SVG).
    pub figures: usize,
}

/// One stored experiment.
pub(super) struct Exp {
    pub(super) name: String,
    df: DataFrame,
    pub(super) cells: Vec<CellResult>,
    config: String,
    pub(super) stats: Vec<Stat>,
    /// Per-prompt cross-reward rows (`prompts.parquet`; none for the toy).
    pub(super) prompts: Vec<super::cross::PromptEntry>,
    /// Parameters with more than one value in this experiment.
    varying: BTreeSet<String>,
}

/// Parameters that place a configuration (never part of a variant label).
const CONTEXT: [&str; 5] = ["problem", "denoiser", "alpha", "steps", "reward"];

impl Exp {
    fn load(dir: &Path) -> Result<Self> {
        let name = dir.file_name().and_then(|s| s.to_str()).unwrap_or("?").to_string();
        let pq = dir.join("metrics.parquet");
        let f = fs::File::open(&pq).map_err(|e| Error::file(&pq, format!("cannot open: {e}")))?;
        let df = ParquetReader::new(f).finish().map_err(|e| {
            Error::file(&pq, format!("not a readable parquet file ({e}); re-run the experiment to rewrite it"))
        })?;
        let ids: BTreeSet<String> = stats::strings(&df, "cell")?.into_iter().collect();
        let mut cells = Vec::new();
        for id in &ids {
            let p = dir.join("cells").join(format!("{id}.json"));
            if let Ok(text) = fs::read_to_string(&p) {
                let c: CellResult = serde_json::from_str(&text).map_err(|e| {
                    Error::file(&p, format!("corrupt cell file ({e}); delete it and re-run to recompute"))
                })?;
                cells.push(c);
            }
        }
        let config = fs::read_to_string(dir.join("config.yaml")).unwrap_or_default();
        let stats = stats::summarise(&df)?;
        let prompts = super::cross::load_prompts(dir)?;
        let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in &stats {
            for (k, v) in &s.params {
                values.entry(k).or_default().insert(v);
            }
        }
        let varying = values.into_iter().filter(|(_, v)| v.len() > 1).map(|(k, _)| k.to_string()).collect();
        Ok(Exp { name, df, cells, config, stats, prompts, varying })
    }

    /// Method plus the varying parameters not in `exclude` (nor the context parameters).
    pub(super) fn label(&self, method: &str, params: &BTreeMap<String, String>, exclude: &[&str]) -> String {
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
    pub(super) fn get(&self, s: &Stat, metric: &str) -> Option<&Stat> {
        self.stats.iter().find(|o| o.metric == metric && o.method == s.method && o.params == s.params)
    }

    /// A stored cell of the configuration of `s` (its parameter columns equal; a cell file may record more, e.g.
    /// an SD cell's prompt draw and model digests).
    pub(super) fn cell(&self, s: &Stat) -> Option<&CellResult> {
        self.cells.iter().find(|c| {
            c.method == s.method && s.params.iter().all(|(k, v)| c.params.get(k).map(String::as_str).unwrap_or("") == v)
        })
    }

    /// One stat per configuration (the first metric seen), in order.
    pub(super) fn configs(&self) -> Vec<&Stat> {
        let mut seen = BTreeSet::new();
        self.stats.iter().filter(|s| seen.insert((s.method.clone(), s.params.clone()))).collect()
    }

    pub(super) fn has(&self, param: &str) -> bool {
        self.varying.contains(param)
    }
}

fn num(s: Option<&Stat>) -> Cell {
    Cell::Num(s.map(|s| s.mean).unwrap_or(f64::NAN))
}

fn ci(s: Option<&Stat>) -> Cell {
    Cell::Num(s.map(|s| s.ci()).unwrap_or(f64::NAN))
}

fn sort_key(p: &str) -> (f64, String) {
    (p.parse::<f64>().unwrap_or(f64::INFINITY), p.to_string())
}

/// Build the report.
pub fn build(opts: &ReportOptions) -> Result<ReportSummary> {
    let t0 = Instant::now();
    let exps = discover(&opts.results, &opts.out)?;
    if exps.is_empty() {
        return Err(Error::file(
            &opts.results,
            "no experiment results found (looked for <experiment>/metrics.parquet); run `alignbench run FILE` or `make reproduce` first",
        ));
    }
    let name = opts.out.file_name().and_then(|s| s.to_str()).unwrap_or("report");
    let tmp = opts.out.with_file_name(format!(".{name}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::file(&tmp, format!("cannot clear a stale partial report: {e}")))?;
    }
    let (tdir, fdir) = (tmp.join("tables"), tmp.join("figures"));
    for d in [&tdir, &fdir] {
        fs::create_dir_all(d).map_err(|e| Error::file(d, format!("cannot create: {e}")))?;
    }
    let mut sections: Vec<Section> = Vec::new();
    let mut n_tables = 0;
    let mut n_figs = 0;

    // Headline tables first.
    let mut headline = Vec::new();
    if let Some(t) = figure1_table(&exps) {
        headline.push(t);
    }
    if let Some(t) = reference_table(&exps, &opts.baselines)? {
        headline.push(t);
    }
    for t in [alpha_table(&exps), particles_table(&exps), budget_table(&exps)].into_iter().flatten() {
        headline.push(t);
    }
    for e in &exps {
        if super::mini::is_mini(e) {
            headline.push(super::mini::table(e));
            headline.extend(super::mini::sir_table(e));
        } else if super::cross::has_cross(e) {
            headline.push(super::cross::cell_table(e));
        }
    }
    headline.push(ledger_table(&exps));
    for t in &headline {
        t.write(&tdir)?;
        n_tables += 1;
    }
    sections.push(Section::tables("Tables", "Means over seeds with 95% Student-t intervals (± columns).", headline));

    // Figures.
    let mut figs: Vec<(String, Vec<String>)> = Vec::new();
    for e in &exps {
        for (caption, files) in scatter_figures(e, &fdir)? {
            figs.push((caption, files));
        }
        for (caption, files) in sweep_figures(e, &fdir)? {
            figs.push((caption, files));
        }
        for (caption, files) in pareto_figures(e, &fdir)? {
            figs.push((caption, files));
        }
        if let Some(f) = trace_figure(e, &fdir)? {
            figs.push(f);
        }
        if super::mini::is_mini(e) {
            figs.extend(super::mini::figures(e, &fdir)?);
        }
    }
    n_figs += figs.len();
    sections.push(Section::figures("Figures", figs));

    // Per-experiment detail: summary and paired tables, config.
    for e in &exps {
        let mut ts = vec![summary_table(e)];
        if let Some(p) = super::cross::prompt_table(e) {
            ts.push(p);
        }
        if let Some(p) = paired_table(e)? {
            ts.push(p);
        }
        for t in &ts {
            t.write(&tdir)?;
            n_tables += 1;
        }
        sections.push(Section::experiment(&e.name, e.cells.len(), wall(e), &e.config, ts));
    }

    let total_wall: f64 = exps.iter().map(wall).sum();
    let page = html::page(
        &html::Meta {
            experiments: exps.iter().map(|e| e.name.clone()).collect(),
            cells: exps.iter().map(|e| e.cells.len()).sum(),
            total_wall_s: total_wall,
            report_s: t0.elapsed().as_secs_f64(),
            crate_versions: exps.iter().flat_map(|e| e.cells.iter().map(|c| c.crate_version.clone())).collect(),
        },
        &sections,
    );
    crate::numerics::write_atomic(&tmp.join("index.html"), page.as_bytes())?;
    if opts.out.exists() {
        fs::remove_dir_all(&opts.out)
            .map_err(|e| Error::file(&opts.out, format!("cannot replace the old report: {e}")))?;
    }
    fs::rename(&tmp, &opts.out)
        .map_err(|e| Error::file(&opts.out, format!("cannot move the report into place: {e}")))?;
    Ok(ReportSummary {
        index: opts.out.join("index.html"),
        experiments: exps.iter().map(|e| e.name.clone()).collect(),
        tables: n_tables,
        figures: n_figs,
    })
}

fn wall(e: &Exp) -> f64 {
    e.cells.iter().filter_map(|c| c.metrics.get("wall_s")).sum()
}

/// Every `<results>/<name>/metrics.parquet`, sorted by name, skipping the report folder itself.
fn discover(results: &Path, out: &Path) -> Result<Vec<Exp>> {
    let rd = fs::read_dir(results)
        .map_err(|e| Error::file(results, format!("cannot list results ({e}); run an experiment first")))?;
    let mut dirs: Vec<PathBuf> =
        rd.flatten().map(|e| e.path()).filter(|p| p.join("metrics.parquet").is_file()).collect();
    dirs.retain(|d| d.canonicalize().ok() != out.canonicalize().ok());
    dirs.sort();
    dirs.iter().map(|d| Exp::load(d)).collect()
}

fn summary_table(e: &Exp) -> Table {
    let params: Vec<String> = stats::param_columns(&e.df);
    let mut cols: Vec<&str> = vec!["method"];
    cols.extend(params.iter().map(String::as_str));
    cols.extend(["metric", "mean", "std", "n", "ci95_lo", "ci95_hi"]);
    let mut t = Table::new(
        &format!("summary-{}", e.name),
        &format!("{}: every metric", e.name),
        "Mean, standard deviation and 95% interval over seeds for every configuration and metric (tidy rows of metrics.parquet).",
        &cols,
    );
    for s in &e.stats {
        let mut row: Vec<Cell> = vec![s.method.clone().into()];
        row.extend(params.iter().map(|p| Cell::Text(s.p(p).to_string())));
        let h = s.ci();
        row.extend([
            s.metric.clone().into(),
            s.mean.into(),
            s.std.into(),
            (s.n as f64).into(),
            (s.mean - h).into(),
            (s.mean + h).into(),
        ]);
        t.push(row);
    }
    t
}

fn paired_table(e: &Exp) -> Result<Option<Table>> {
    if !e.stats.iter().any(|s| s.method == "das") {
        return Ok(None);
    }
    let group = ["problem", "alpha", "steps", "reward", "budget"];
    let pairs = stats::paired(&e.df, "das", &["emd", "reward_mean", "mode_tv"], &group)?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut t = Table::new(
        &format!("paired-{}", e.name),
        &format!("{}: paired differences against DAS", e.name),
        "Other configuration minus DAS, per shared seed (common random numbers), mean and 95% interval; a negative EMD \
         difference means the other configuration is closer to the target.",
        &["context", "das", "other", "metric", "diff_mean", "ci95_lo", "ci95_hi", "seeds"],
    );
    for p in pairs {
        let h = stats::ci_half(p.std, p.n);
        t.push(vec![
            p.shared.into(),
            p.baseline.into(),
            p.other.into(),
            p.metric.into(),
            p.mean.into(),
            (p.mean - h).into(),
            (p.mean + h).into(),
            (p.n as f64).into(),
        ]);
    }
    Ok(Some(t))
}

/// Experiments of the Figure-1 family (both presets, α = 1, every method).
fn figure1_exps(exps: &[Exp]) -> Vec<&Exp> {
    exps.iter().filter(|e| e.name.contains("figure1") || e.name.starts_with("toy-gmm")).collect()
}

fn figure1_table(exps: &[Exp]) -> Option<Table> {
    let fam = figure1_exps(exps);
    if fam.is_empty() {
        return None;
    }
    let mut t = Table::new(
        "figure1",
        "Figure 1: distance to the exact tilted target",
        "Exact EMD to fresh exact target samples (500 vs 500, mean over repeats, then over seeds), mean reward against the \
         exact E_tar[r], and mode-occupancy total variation; the noise-floor row is target against target under the same \
         protocol, the best any sampler can score.",
        &["experiment", "problem", "denoiser", "method", "seeds", "emd", "emd ±95%", "reward_mean", "reward ±95%", "mode_tv"],
    );
    for e in fam {
        let mut problems: Vec<String> = e.stats.iter().map(|s| s.p("problem").to_string()).collect();
        problems.dedup();
        let problems: BTreeSet<String> = problems.into_iter().collect();
        for prob in &problems {
            for s in e.configs().into_iter().filter(|s| s.p("problem") == prob) {
                let emd = e.get(s, "emd");
                t.push(vec![
                    e.name.clone().into(),
                    prob.clone().into(),
                    s.p("denoiser").to_string().into(),
                    e.label(&s.method, &s.params, &[]).into(),
                    (emd.map(|s| s.n).unwrap_or(0) as f64).into(),
                    num(emd),
                    ci(emd),
                    num(e.get(s, "reward_mean")),
                    ci(e.get(s, "reward_mean")),
                    num(e.get(s, "mode_tv")),
                ]);
            }
            let floor: Vec<&Stat> =
                e.stats.iter().filter(|s| s.p("problem") == prob && s.metric == "emd_floor").collect();
            let target = e.stats.iter().find(|s| s.p("problem") == prob && s.metric == "reward_target");
            if let Some(f) = floor.first() {
                t.push(vec![
                    e.name.clone().into(),
                    prob.clone().into(),
                    "".into(),
                    "noise floor (target vs target)".into(),
                    (f.n as f64).into(),
                    f.mean.into(),
                    f.ci().into(),
                    num(target),
                    f64::NAN.into(),
                    0.0.into(),
                ]);
            }
        }
    }
    Some(t)
}

fn sweep_table(exps: &[Exp], axis: &str, name: &str, title: &str, caption: &str, metrics: &[&str]) -> Option<Table> {
    let fam: Vec<&Exp> = exps.iter().filter(|e| e.has(axis) && (axis == "budget" || !e.has("budget"))).collect();
    if fam.is_empty() {
        return None;
    }
    let mut cols = vec!["experiment", "problem", "denoiser", "method", axis];
    let headers: Vec<String> = metrics.iter().flat_map(|m| [m.to_string(), format!("{m} ±95%")]).collect();
    cols.extend(headers.iter().map(String::as_str));
    let mut t = Table::new(name, title, caption, &cols);
    for e in fam {
        let mut cs = e.configs();
        cs.sort_by(|a, b| {
            (a.p("problem"), a.p("denoiser"), e.label(&a.method, &a.params, &[axis]), sort_key(a.p(axis)))
                .partial_cmp(&(
                    b.p("problem"),
                    b.p("denoiser"),
                    e.label(&b.method, &b.params, &[axis]),
                    sort_key(b.p(axis)),
                ))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for s in cs {
            let mut row: Vec<Cell> = vec![
                e.name.clone().into(),
                s.p("problem").to_string().into(),
                s.p("denoiser").to_string().into(),
                e.label(&s.method, &s.params, &[axis, "size"]).into(),
                s.p(axis).to_string().into(),
            ];
            for m in metrics {
                row.push(num(e.get(s, m)));
                row.push(ci(e.get(s, m)));
            }
            t.push(row);
        }
    }
    Some(t)
}

fn alpha_table(exps: &[Exp]) -> Option<Table> {
    sweep_table(
        exps,
        "alpha",
        "alpha",
        "Temperature α",
        "EMD and mean reward against α (smaller α = stronger tilt); reward_target is the exact E_tar[r] at that α.",
        &["emd", "reward_mean", "reward_target"],
    )
}

fn particles_table(exps: &[Exp]) -> Option<Table> {
    sweep_table(
        exps,
        "particles",
        "particles",
        "Particles",
        "EMD against the number of particles (samples, candidates) per prompt, with the noise floor for reference.",
        &["emd", "emd_floor", "reward_mean"],
    )
}

fn budget_table(exps: &[Exp]) -> Option<Table> {
    sweep_table(
        exps,
        "budget",
        "budget",
        "Equal compute",
        "Each method sized to the largest setting within the budget (column size) and its EMD and reward there.",
        &["emd", "reward_mean", "nfe"],
    )
}

fn ledger_table(exps: &[Exp]) -> Table {
    let metrics = ["nfe", "vjp_denoiser", "vjp_reward", "decoder_calls", "reward_calls", "wall_s"];
    let mut cols = vec!["experiment", "configuration"];
    cols.extend(metrics);
    let mut t = Table::new(
        "ledger",
        "Compute ledger",
        "Per prompt group and configuration (mean over seeds): denoiser rows, VJPs through the denoiser, VJPs through \
         reward∘decoder only, decoder and reward calls; wall_s is the cell's wall time in seconds.",
        &cols,
    );
    for e in exps {
        for s in e.configs() {
            let ctx: Vec<String> = CONTEXT
                .iter()
                .filter(|k| e.has(k))
                .map(|k| format!("{k}={}", s.p(k)))
                .filter(|x| !x.ends_with('='))
                .collect();
            let mut label = e.label(&s.method, &s.params, &[]);
            if !ctx.is_empty() {
                label = format!("{label} [{}]", ctx.join(", "));
            }
            let mut row: Vec<Cell> = vec![e.name.clone().into(), label.into()];
            row.extend(metrics.iter().map(|m| num(e.get(s, m))));
            t.push(row);
        }
    }
    t
}

/// One reference value of `baselines/*.yaml`.
#[derive(Debug, serde::Deserialize)]
struct RefValue {
    id: String,
    preset: String,
    metric: String,
    value: f64,
    trust: String,
    #[serde(default)]
    alpha: Option<f64>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    denoiser: Option<String>,
    #[serde(default)]
    std: Option<f64>,
}

#[derive(Debug, serde::Deserialize)]
struct RefFile {
    #[serde(default)]
    source: String,
    values: Vec<RefValue>,
}

/// Does a configuration match the reference's variant name?
fn variant_matches(variant: Option<&str>, params: &BTreeMap<String, String>) -> bool {
    let bugs = params.get("reference_bugs").map(|v| v == "true").unwrap_or(false);
    match variant {
        None => !bugs,
        Some("reference-faithful") => bugs,
        Some("smc-fix") => !bugs,
        Some(v) => {
            let head = v.split('-').next().unwrap_or(v);
            params.values().any(|p| p == v || p.contains(head))
        }
    }
}

fn reference_table(exps: &[Exp], dir: &Path) -> Result<Option<Table>> {
    let Ok(rd) = fs::read_dir(dir) else { return Ok(None) };
    let mut files: Vec<PathBuf> =
        rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect();
    files.sort();
    let mut t = Table::new(
        "reference",
        "Against the published and re-run reference numbers",
        "Each reference value with its provenance and trust level (references.md: T1 derived = exact, T3 re-run = one run \
         of the reference notebooks); ours is the matching configuration's mean over seeds. Within means |diff| ≤ the \
         tolerance: 2·√(ref std² + our per-cell EMD std²) where the reference gives a std, else our 95% interval (at \
         least 1e-6 for exact values).",
        &[
            "id", "preset", "metric", "method", "variant", "denoiser", "trust", "reference", "ref_std", "ours", "ours_from",
            "diff", "tolerance", "within",
        ],
    );
    for f in files {
        let text = fs::read_to_string(&f).map_err(|e| Error::file(&f, format!("cannot read: {e}")))?;
        let rf: RefFile =
            yaml_serde::from_str(&text).map_err(|e| Error::file(&f, format!("not a baselines file: {e}")))?;
        let _ = &rf.source;
        for r in &rf.values {
            let alpha = r.alpha.unwrap_or(1.0);
            let mut found: Option<(&Exp, &Stat)> = None;
            for e in exps.iter().filter(|e| e.name.starts_with("toy-")) {
                for s in e.stats.iter().filter(|s| s.metric == r.metric && s.p("problem") == r.preset) {
                    if s.p("alpha").parse::<f64>().map(|a| (a - alpha).abs() > 1e-12).unwrap_or(false) {
                        continue;
                    }
                    let method_ok = match r.method.as_deref() {
                        None | Some("target") => true,
                        Some(m) => s.method == m,
                    };
                    let den_ok = r.denoiser.as_deref().is_none_or(|d| s.p("denoiser") == d);
                    let var_ok = r.method.is_none()
                        || r.method.as_deref() == Some("target")
                        || variant_matches(r.variant.as_deref(), &s.params);
                    // Prefer the reference's own output selection (a resampled draw) when both are stored.
                    if method_ok && den_ok && var_ok && (found.is_none() || s.p("selection") == "resample") {
                        found = Some((e, s));
                    }
                }
            }
            let (ours, from, diff, tol, within) = match found {
                Some((e, s)) => {
                    let diff = s.mean - r.value;
                    let own_std = e.get(s, "emd_std").filter(|_| r.metric == "emd").map(|x| x.mean).unwrap_or(0.0);
                    let tol = match r.std {
                        Some(rs) => 2.0 * (rs * rs + own_std * own_std).sqrt(),
                        None => {
                            let h = s.ci();
                            if h.is_finite() {
                                h.max(1e-6)
                            } else {
                                1e-6
                            }
                        }
                    };
                    let within = if diff.abs() <= tol { "yes" } else { "no" };
                    (
                        s.mean,
                        format!("{}: {}", e.name, e.label(&s.method, &s.params, &[])),
                        diff,
                        tol,
                        within.to_string(),
                    )
                }
                None => (f64::NAN, "not run".into(), f64::NAN, f64::NAN, "—".into()),
            };
            t.push(vec![
                r.id.clone().into(),
                r.preset.clone().into(),
                r.metric.clone().into(),
                r.method.clone().unwrap_or_default().into(),
                r.variant.clone().unwrap_or_default().into(),
                r.denoiser.clone().unwrap_or_default().into(),
                r.trust.clone().into(),
                r.value.into(),
                r.std.unwrap_or(f64::NAN).into(),
                ours.into(),
                from.into(),
                diff.into(),
                tol.into(),
                within.into(),
            ]);
        }
    }
    Ok((!t.rows.is_empty()).then_some(t))
}

/// Group cells by (problem, denoiser) for one seed (the smallest) and α (1 if present, else the first).
fn panel_groups(e: &Exp) -> BTreeMap<(String, String), Vec<&CellResult>> {
    let seed = e.cells.iter().map(|c| c.seed).min().unwrap_or(0);
    let alphas: BTreeSet<String> = e.cells.iter().filter_map(|c| c.params.get("alpha").cloned()).collect();
    let alpha = if alphas.contains("1") { Some("1".to_string()) } else { alphas.iter().next().cloned() };
    let mut g: BTreeMap<(String, String), Vec<&CellResult>> = BTreeMap::new();
    let dens: BTreeSet<String> =
        e.cells.iter().filter_map(|c| c.params.get("denoiser").cloned()).filter(|d| d != "exact_tilted").collect();
    for c in e.cells.iter().filter(|c| c.seed == seed && c.params.get("alpha") == alpha.as_ref()) {
        let prob = c.params.get("problem").cloned().unwrap_or_default();
        let den = c.params.get("denoiser").cloned().unwrap_or_default();
        if den == "exact_tilted" {
            // The oracle belongs to every denoiser's panel set.
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

fn scatter_figures(e: &Exp, dir: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    for ((prob, den), cells) in panel_groups(e) {
        let Some(first) = cells.iter().find(|c| c.samples.d == 2) else { continue };
        let Ok(spec) = serde_json::from_value::<CellSpec>(first.spec.clone()) else { continue };
        let crate::problems::ProblemSpec::Gmm(gmm) = &spec.problem else { continue };
        let Ok(tp) = ToyProblem::build(gmm, &spec.setting) else { continue };
        let Some(tilted) = &tp.tilted else { continue };
        // Range: the data and the target, padded.
        let mut lo = [f64::INFINITY; 2];
        let mut hi = [f64::NEG_INFINITY; 2];
        for g in [&tp.gmm, &tilted.gmm] {
            for (m, c) in g.means.iter().zip(&g.covs) {
                for k in 0..2 {
                    let sd = c[k * 2 + k].sqrt();
                    lo[k] = lo[k].min(m[k] - 3.0 * sd - 0.5);
                    hi[k] = hi[k].max(m[k] + 3.0 * sd + 0.5);
                }
            }
        }
        let (nx, ny) = (120, 120);
        let mut values = Vec::with_capacity(nx * ny);
        for j in 0..ny {
            for i in 0..nx {
                let x = lo[0] + (i as f64 + 0.5) * (hi[0] - lo[0]) / nx as f64;
                let y = lo[1] + (j as f64 + 0.5) * (hi[1] - lo[1]) / ny as f64;
                values.push(tilted.gmm.log_density(&[x, y]).exp());
            }
        }
        let density = Density { x: (lo[0], hi[0]), y: (lo[1], hi[1]), nx, ny, values };
        let n_pts = first.samples.x.len() / 2;
        let target = tilted.gmm.sample(&mut Streams::new(0).rng(Purpose::Target, 9_999, 0), n_pts.max(200));
        let mut panels = vec![ScatterPanel {
            title: "exact target".into(),
            subtitle: format!("{} samples", n_pts.max(200)),
            method: "target".into(),
            points: target.chunks_exact(2).map(|p| (p[0] as f64, p[1] as f64)).collect(),
        }];
        // Panels in the catalogue's method order (unguided, best-of-N, SMC family, guidance, fine-tuning).
        let order = |m: &str| crate::methods::catalogue().iter().position(|i| i.name == m).unwrap_or(usize::MAX);
        let mut shown: Vec<_> = cells.iter().filter(|c| c.samples.d == 2).collect();
        shown.sort_by_key(|c| order(&c.method));
        for c in shown.into_iter().take(15) {
            let emd = c.metrics.get("emd").copied().unwrap_or(f64::NAN);
            let r = c.metrics.get("reward_mean").copied().unwrap_or(f64::NAN);
            panels.push(ScatterPanel {
                title: e.label(&c.method, &c.params, &[]),
                subtitle: format!("EMD {}, mean reward {}", table::fmt_num(emd), table::fmt_num(r)),
                method: c.method.clone(),
                points: c.samples.x.chunks_exact(2).map(|p| (p[0] as f64, p[1] as f64)).collect(),
            });
        }
        let stem = format!("samples-{}-{}-{}", e.name, prob, den);
        let files = figures::scatter_panels(
            dir,
            &stem,
            &format!("{}: {prob}, {den} denoiser (seed {})", e.name, first.seed),
            &panels,
            &density,
        )?;
        out.push((
            format!(
                "Samples of every method on {prob} ({den} denoiser, one seed) over the exact tilted target's density \
                 (shaded) and contours; the first panel is drawn from the exact target."
            ),
            files,
        ));
    }
    Ok(out)
}

/// Line figures for the swept axes (particles, α, budget).
fn sweep_figures(e: &Exp, dir: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    let axes: Vec<(&str, &[&str], bool, &str)> = vec![
        ("particles", &["emd"], true, "EMD against particles per prompt (log axis), 95% intervals over seeds; the grey band is the target-vs-target noise floor."),
        ("alpha", &["reward_mean", "emd"], true, "Mean reward and EMD against α (log axis); the target line is the exact E_tar[r]."),
        ("budget", &["emd", "reward_mean"], true, "EMD and mean reward against the compute budget per prompt (log axis)."),
    ];
    for (axis, metrics, log, caption) in axes {
        if !e.has(axis) || (axis != "budget" && e.has("budget")) {
            continue;
        }
        let mut groups: BTreeMap<(String, String), Vec<&Stat>> = BTreeMap::new();
        for s in e.configs() {
            groups.entry((s.p("problem").to_string(), s.p("denoiser").to_string())).or_default().push(s);
        }
        // Oracle rows (exact_tilted) join every denoiser group of their problem.
        let problems: BTreeSet<String> = groups.keys().map(|k| k.0.clone()).collect();
        for prob in problems {
            let shared: Vec<&Stat> = groups.get(&(prob.clone(), "exact_tilted".into())).cloned().unwrap_or_default();
            let dens: Vec<String> =
                groups.keys().filter(|k| k.0 == prob && k.1 != "exact_tilted").map(|k| k.1.clone()).collect();
            let dens = if dens.is_empty() { vec!["exact_tilted".to_string()] } else { dens };
            for den in dens {
                let mut cfgs = groups.get(&(prob.clone(), den.clone())).cloned().unwrap_or_default();
                if den != "exact_tilted" {
                    cfgs.extend(shared.iter().copied());
                }
                let mut panels = Vec::new();
                for m in metrics.iter() {
                    let mut series: BTreeMap<String, Series> = BTreeMap::new();
                    let mut variants: BTreeMap<String, usize> = BTreeMap::new();
                    for s in &cfgs {
                        let label = e.label(&s.method, &s.params, &[axis, "size"]);
                        let Some(v) = e.get(s, m) else { continue };
                        let Ok(x) = s.p(axis).parse::<f64>() else { continue };
                        let n_var =
                            variants.iter().filter(|(l, _)| l.split(" (").next() == Some(s.method.as_str())).count();
                        let k = *variants.entry(label.clone()).or_insert(n_var);
                        let ser = series.entry(label.clone()).or_insert_with(|| Series {
                            label: label.clone(),
                            method: s.method.clone(),
                            variant: k,
                            points: vec![],
                        });
                        ser.points.push((x, v.mean, v.ci()));
                    }
                    let mut series: Vec<Series> = series.into_values().collect();
                    for s in &mut series {
                        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    }
                    if *m == "reward_mean" && axis == "alpha" {
                        let mut pts: Vec<(f64, f64, f64)> = e
                            .stats
                            .iter()
                            .filter(|s| s.metric == "reward_target" && s.p("problem") == prob)
                            .filter_map(|s| s.p("alpha").parse::<f64>().ok().map(|a| (a, s.mean, f64::NAN)))
                            .collect();
                        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                        pts.dedup_by(|a, b| a.0 == b.0);
                        series.push(Series {
                            label: "exact E_tar[r]".into(),
                            method: "target".into(),
                            variant: 0,
                            points: pts,
                        });
                    }
                    let band = if *m == "emd" {
                        let f: Vec<&Stat> =
                            e.stats.iter().filter(|s| s.metric == "emd_floor" && s.p("problem") == prob).collect();
                        f.first().map(|s| {
                            let h = if s.ci().is_finite() { s.ci() } else { 0.0 };
                            (s.mean - h, s.mean + h, "noise floor".to_string())
                        })
                    } else {
                        None
                    };
                    if series.iter().any(|s| !s.points.is_empty()) {
                        panels.push(LinePanel {
                            title: format!("{m} vs {axis}"),
                            x_label: axis.into(),
                            y_label: (*m).into(),
                            x_log: log,
                            series,
                            band,
                            legend_lower_right: false,
                        });
                    }
                }
                if panels.is_empty() {
                    continue;
                }
                let stem = format!("{axis}-{}-{prob}-{den}", e.name);
                let files = figures::lines(dir, &stem, &format!("{}: {prob}, {den}", e.name), &panels)?;
                out.push((caption.to_string(), files));
            }
        }
    }
    Ok(out)
}

/// Reward against EMD for every configuration of a (problem, denoiser, α) group with at least three.
fn pareto_figures(e: &Exp, dir: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    if e.has("particles") && !e.name.contains("figure1") && !e.name.starts_with("toy-gmm") {
        return Ok(out);
    }
    let mut groups: BTreeMap<(String, String, String), Vec<&Stat>> = BTreeMap::new();
    for s in e.configs() {
        let den = if s.p("denoiser") == "exact_tilted" { "*".to_string() } else { s.p("denoiser").to_string() };
        groups.entry((s.p("problem").to_string(), den, s.p("alpha").to_string())).or_default().push(s);
    }
    let shared: Vec<((String, String), Vec<&Stat>)> =
        groups.iter().filter(|(k, _)| k.1 == "*").map(|(k, v)| ((k.0.clone(), k.2.clone()), v.clone())).collect();
    for ((prob, den, alpha), mut cfgs) in groups.clone() {
        if den == "*" && groups.keys().any(|k| k.0 == prob && k.2 == alpha && k.1 != "*") {
            continue;
        }
        for ((p, a), v) in &shared {
            if *p == prob && *a == alpha && den != "*" {
                cfgs.extend(v.iter().copied());
            }
        }
        let points: Vec<ParetoPoint> = cfgs
            .iter()
            .filter_map(|s| {
                Some(ParetoPoint {
                    label: e.label(&s.method, &s.params, &[]),
                    method: s.method.clone(),
                    x: e.get(s, "emd")?.mean,
                    y: e.get(s, "reward_mean")?.mean,
                })
            })
            .collect();
        if points.len() < 3 {
            continue;
        }
        let stem = format!("pareto-{}-{prob}-{den}-alpha{alpha}", e.name).replace('*', "all");
        let files = figures::pareto(
            dir,
            &stem,
            &format!("{}: {prob}, {den}, α = {alpha}", e.name),
            ("EMD to the exact target (lower is better)", "mean reward (higher is better)"),
            &points,
            (true, true),
        )?;
        out.push((
            "Pareto front of mean target reward against EMD: configurations not beaten on both by another are joined and \
             outlined. A method that gains reward by leaving the target (over-optimisation) moves right."
                .to_string(),
            files,
        ));
    }
    Ok(out)
}

/// ESS and λ over steps for the SMC-family cells of the first (problem, denoiser) group.
fn trace_figure(e: &Exp, dir: &Path) -> Result<Option<(String, Vec<String>)>> {
    let groups = panel_groups(e);
    let Some(((prob, den), cells)) = groups.into_iter().next() else { return Ok(None) };
    let smc: Vec<&&CellResult> = cells
        .iter()
        .filter(|c| !c.traces.is_empty() && c.traces.iter().any(|t| t.lambda > 0.0 || t.ess_frac < 0.999))
        .take(8)
        .collect();
    if smc.is_empty() {
        return Ok(None);
    }
    let mk = |f: &dyn Fn(&crate::experiment::runner::TraceRow) -> f64| -> Vec<Series> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        smc.iter()
            .map(|c| {
                let k = counts.entry(c.method.clone()).or_insert(0);
                *k += 1;
                Series {
                    label: e.label(&c.method, &c.params, &[]),
                    method: c.method.clone(),
                    variant: *k - 1,
                    points: c.traces.iter().map(|t| (t.step as f64, f(t), f64::NAN)).collect(),
                }
            })
            .collect()
    };
    let panels = vec![
        LinePanel {
            title: "ESS / K before resampling".into(),
            x_label: "step".into(),
            y_label: "ESS / K".into(),
            x_log: false,
            series: mk(&|t| t.ess_frac),
            band: None,
            legend_lower_right: true,
        },
        LinePanel {
            title: "tempering λ".into(),
            x_label: "step".into(),
            y_label: "λ".into(),
            x_log: false,
            series: mk(&|t| t.lambda),
            band: None,
            legend_lower_right: true,
        },
    ];
    let stem = format!("traces-{}-{prob}-{den}", e.name);
    let files = figures::lines(dir, &stem, &format!("{}: {prob}, {den}", e.name), &panels)?;
    Ok(Some((
        "Effective sample size (as a fraction of the particles, averaged over prompts) and the tempering schedule λ over \
         the sampling steps, for the particle methods of one seed."
            .to_string(),
        files,
    )))
}

use super::table;
