//! Assembling the report, layer by layer (criterion's model): load the store ([`super::load`]) → analyse
//! ([`super::analysis`]) → tables ([`super::tables`]) and figures ([`super::figures`]) → exporters
//! ([`super::export`], hyperfine's model: pure functions to bytes) → the page ([`super::html`]). This is the one
//! place that writes files: everything goes into a temporary folder that replaces the old report at the end, so an
//! interrupted build leaves the previous report intact.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::analysis::Exp;
use super::export;
use super::figures::{self, Figure, Outcome};
use super::html::{self, Section};
use super::load;
use super::table::Table;
use super::tables;
use crate::numerics::write_atomic;
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

/// Write a table in every exported format (`dir/<name>.<ext>`).
fn write_table(dir: &Path, t: &Table) -> Result<()> {
    for (ext, exporter) in export::FILES {
        write_atomic(&dir.join(format!("{}.{ext}", t.name)), &exporter(t)?)?;
    }
    Ok(())
}

/// Write a drawn figure as `dir/<stem>.png` and `.svg` (a figure not drawn has no files).
fn write_figure(dir: &Path, f: &Figure) -> Result<()> {
    if let Outcome::Drawn(r) = &f.outcome {
        write_atomic(&dir.join(format!("{}.png", f.stem)), &r.png)?;
        write_atomic(&dir.join(format!("{}.svg", f.stem)), r.svg.as_bytes())?;
    }
    Ok(())
}

/// Build the report.
pub fn build(opts: &ReportOptions) -> Result<ReportSummary> {
    let t0 = Instant::now();
    // Load and analyse.
    let stored = load::discover(&opts.results, &opts.out)?;
    if stored.is_empty() {
        return Err(Error::file(
            &opts.results,
            "no experiment results found (looked for <experiment>/metrics.parquet); run `alignbench run FILE` or `make reproduce` first",
        ));
    }
    let exps: Vec<Exp> = stored.into_iter().map(Exp::new).collect::<Result<_>>()?;
    // Tables and figures.
    let headline = tables::headline(&exps, &opts.baselines)?;
    let details: Vec<Vec<Table>> = exps.iter().map(tables::detail).collect::<Result<_>>()?;
    let figs = figures::all(&exps);

    // Write.
    let name = opts.out.file_name().and_then(|s| s.to_str()).unwrap_or("report");
    let tmp = opts.out.with_file_name(format!(".{name}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::file(&tmp, format!("cannot clear a stale partial report: {e}")))?;
    }
    let (tdir, fdir) = (tmp.join("tables"), tmp.join("figures"));
    for d in [&tdir, &fdir] {
        fs::create_dir_all(d).map_err(|e| Error::file(d, format!("cannot create: {e}")))?;
    }
    for t in headline.iter().chain(details.iter().flatten()) {
        write_table(&tdir, t)?;
    }
    for f in &figs {
        write_figure(&fdir, f)?;
    }
    let n_tables = headline.len() + details.iter().map(Vec::len).sum::<usize>();
    let n_figs = figs.iter().filter(|f| f.drawn()).count();

    // The page.
    let mut sections = vec![
        Section::tables("Tables", "Means over seeds with 95% Student-t intervals (± columns).", headline),
        Section::figures("Figures", figs),
    ];
    for (e, ts) in exps.iter().zip(details) {
        sections.push(Section::experiment(&e.name, e.cells.len(), e.wall(), &e.config, ts));
    }
    let page = html::page(
        &html::Meta {
            experiments: exps.iter().map(|e| e.name.clone()).collect(),
            cells: exps.iter().map(|e| e.cells.len()).sum(),
            total_wall_s: exps.iter().map(Exp::wall).sum(),
            report_s: t0.elapsed().as_secs_f64(),
            crate_versions: exps.iter().flat_map(|e| e.cells.iter().map(|c| c.crate_version.clone())).collect(),
        },
        &sections,
    );
    write_atomic(&tmp.join("index.html"), page.as_bytes())?;
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
