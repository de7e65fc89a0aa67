//! The page layer of the report (criterion's model: load → analysis → tables and figures → exporters → page): the
//! self-contained `index.html` — inline CSS, tables embedded through the HTML exporter, images referenced by
//! relative paths, no network assets. A figure that was not drawn shows its reason in place of the image.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::export::html::{escape as html_escape, html as table_html};
use super::figures::{Figure, Outcome};
use super::table::{fmt_num, Table};

/// Provenance shown at the top of the page.
pub struct Meta {
    /// Experiments included.
    pub experiments: Vec<String>,
    /// Cells included.
    pub cells: usize,
    /// Σ of the cells' wall times.
    pub total_wall_s: f64,
    /// Time to build the report.
    pub report_s: f64,
    /// Crate versions that produced the cells.
    pub crate_versions: BTreeSet<String>,
}

/// A block of the page.
pub enum Section {
    /// Tables with an intro sentence.
    Tables { title: String, intro: String, tables: Vec<Table> },
    /// Figures, drawn or with the reason they are not.
    Figures { title: String, figures: Vec<Figure> },
    /// One experiment's detail.
    Experiment { name: String, cells: usize, wall_s: f64, config: String, tables: Vec<Table> },
}

impl Section {
    /// Tables section.
    pub fn tables(title: &str, intro: &str, tables: Vec<Table>) -> Self {
        Section::Tables { title: title.into(), intro: intro.into(), tables }
    }
    /// Figures section.
    pub fn figures(title: &str, figures: Vec<Figure>) -> Self {
        Section::Figures { title: title.into(), figures }
    }
    /// Experiment detail section.
    pub fn experiment(name: &str, cells: usize, wall_s: f64, config: &str, tables: Vec<Table>) -> Self {
        Section::Experiment { name: name.into(), cells, wall_s, config: config.into(), tables }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} cores, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

fn table_block(t: &Table) -> String {
    format!(
        "<h3 id=\"t-{n}\">{title}</h3>\n<p>{cap} <span class=\"files\">[<a href=\"tables/{n}.csv\">csv</a> · <a href=\"tables/{n}.parquet\">parquet</a> · <a href=\"tables/{n}.md\">md</a>]</span></p>\n<div class=\"scroll\">{body}</div>\n",
        n = html_escape(&t.name),
        title = html_escape(&t.title),
        cap = html_escape(&t.caption),
        body = String::from_utf8_lossy(&table_html(t).unwrap_or_default())
    )
}

/// The whole page.
pub fn page(meta: &Meta, sections: &[Section]) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>alignbench report</title>\n<style>\n\
         body{font-family:'DejaVu Sans',sans-serif;max-width:1280px;margin:2em auto;padding:0 1em;color:#222}\n\
         table{border-collapse:collapse;font-size:13px;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 7px}\n\
         th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}td.mark{background:#fff3c4}\n\
         .scroll{overflow-x:auto}figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}\n\
         figcaption{font-size:14px;color:#444}.files{font-size:12px;color:#666}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:12px}\n\
         details{margin:.6em 0}summary{cursor:pointer;font-weight:bold}.why{color:#8a4b00}\n\
         figure.missing{border-left:3px solid #e0b060;padding-left:.6em}\n</style>\n</head>\n<body>\n<h1>alignbench report</h1>\n",
    );
    let versions: Vec<&str> = meta.crate_versions.iter().map(String::as_str).collect();
    let _ = writeln!(
        s,
        "<p>Built from the stored results of {} experiment(s) ({} cells) by alignbench {} (cells produced by version {}). \
         Machine: {}. Total sampling wall time of the cells: {} s; this report took {} s.</p>",
        meta.experiments.len(),
        meta.cells,
        env!("CARGO_PKG_VERSION"),
        html_escape(&versions.join(", ")),
        html_escape(&machine()),
        fmt_num(meta.total_wall_s),
        fmt_num(meta.report_s),
    );
    s += "<ul>\n";
    for sec in sections {
        let (id, title) = match sec {
            Section::Tables { title, .. } | Section::Figures { title, .. } => (title.to_lowercase(), title.clone()),
            Section::Experiment { name, .. } => (format!("exp-{name}"), format!("Experiment {name}")),
        };
        let _ = writeln!(s, "<li><a href=\"#{}\">{}</a></li>", html_escape(&id), html_escape(&title));
    }
    s += "</ul>\n";
    for sec in sections {
        match sec {
            Section::Tables { title, intro, tables } => {
                let _ = writeln!(
                    s,
                    "<h2 id=\"{}\">{}</h2>\n<p>{}</p>",
                    html_escape(&title.to_lowercase()),
                    html_escape(title),
                    html_escape(intro)
                );
                for t in tables {
                    s += &table_block(t);
                }
            }
            Section::Figures { title, figures } => {
                let _ = writeln!(s, "<h2 id=\"{}\">{}</h2>", html_escape(&title.to_lowercase()), html_escape(title));
                if figures.is_empty() {
                    s += "<p>No figure applies to the stored experiments.</p>\n";
                }
                for f in figures {
                    let note =
                        f.note.as_ref().map(|n| format!(" <span class=\"why\">Not shown: {}.</span>", html_escape(n)));
                    match &f.outcome {
                        Outcome::Drawn(_) => {
                            let _ = writeln!(
                                s,
                                "<figure><img src=\"figures/{p}.png\" alt=\"{p}.png\"><figcaption>{c}{n} <span class=\"files\">[<a href=\"figures/{p}.svg\">svg</a>]</span></figcaption></figure>",
                                p = html_escape(&f.stem),
                                c = html_escape(&f.caption),
                                n = note.unwrap_or_default(),
                            );
                        }
                        Outcome::NotDrawn(why) => {
                            let _ = writeln!(
                                s,
                                "<figure class=\"missing\"><p class=\"why\">Figure {p} is not drawn: {w}.</p><figcaption>{c}</figcaption></figure>",
                                p = html_escape(&f.stem),
                                w = html_escape(why),
                                c = html_escape(&f.caption),
                            );
                        }
                    }
                }
            }
            Section::Experiment { name, cells, wall_s, config, tables } => {
                let _ = writeln!(
                    s,
                    "<h2 id=\"exp-{n}\">Experiment {n}</h2>\n<p>{cells} cells, {w} s of sampling.</p>",
                    n = html_escape(name),
                    w = fmt_num(*wall_s)
                );
                for t in tables {
                    let _ = writeln!(
                        s,
                        "<details><summary>{}</summary>\n{}</details>",
                        html_escape(&t.title),
                        table_block(t)
                    );
                }
                let _ = writeln!(
                    s,
                    "<details><summary>configuration (config.yaml)</summary><pre>{}</pre></details>",
                    html_escape(config)
                );
            }
        }
    }
    s += "</body>\n</html>\n";
    s
}
