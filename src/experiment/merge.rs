//! `alignbench merge`: the tables of a plan rebuilt from the cell files of any number of shards — in one results
//! folder (shards on a shared file system) or in several folders copied back from nodes. Cells are checked against
//! the plan before anything is written: a cell of another crate version or of another plan is refused with one
//! error naming the cell and both sides, and missing cells are reported (tables of a partial merge only with
//! `--partial`). The tables are the ones an unsharded run writes, byte for byte: rows follow the plan's order and
//! every number comes from the cell files ([`super::store::Store::write_tables`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::store::{plan_id, Store};
use crate::numerics::write_atomic;
use crate::{Error, Result};

/// Options of `alignbench merge`.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// Results folders (holding experiment folders) or experiment folders (holding `plan.json`).
    pub inputs: Vec<PathBuf>,
    /// Results folder written (default: the first input's results folder; its cells are merged too).
    pub out: Option<PathBuf>,
    /// Write the tables of the cells present even when some are missing.
    pub partial: bool,
}

/// What a merge did, per experiment.
#[derive(Clone, Debug)]
pub struct Merged {
    /// Experiment name.
    pub name: String,
    /// Experiment folder written.
    pub dir: PathBuf,
    /// Cells of the plan.
    pub planned: usize,
    /// Cells found.
    pub found: usize,
    /// Cells copied in from other folders.
    pub copied: usize,
    /// Folders the cells came from.
    pub sources: usize,
    /// Missing cells: `id method params`.
    pub missing: Vec<String>,
}

/// An experiment folder's `plan.json`.
struct PlanDoc {
    dir: PathBuf,
    name: String,
    version: String,
    ids: Vec<String>,
    /// `method k=v …` per cell, for messages.
    labels: Vec<String>,
    param_columns: Vec<String>,
    doc: Value,
}

impl PlanDoc {
    fn read(dir: &Path) -> Result<PlanDoc> {
        let p = dir.join("plan.json");
        let text = fs::read_to_string(&p).map_err(|e| Error::file(&p, format!("cannot read: {e}")))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(&p, format!("not a plan file ({e}); was it written by `alignbench run`?")))?;
        let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(name), Some(version), Some(cells), Some(cols)) =
            (s("experiment"), s("crate_version"), doc["cells"].as_array(), doc["param_columns"].as_array())
        else {
            return Err(Error::file(&p, "plan file without experiment, crate_version, cells or param_columns"));
        };
        let mut ids = Vec::with_capacity(cells.len());
        let mut labels = Vec::with_capacity(cells.len());
        for c in cells {
            let id = c["id"].as_str().ok_or_else(|| Error::file(&p, "a cell without an id"))?;
            ids.push(id.to_string());
            let method = c["spec"]["method"]["method"].as_str().unwrap_or("?");
            let params: Vec<String> = c["params"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
                .unwrap_or_default();
            labels.push(format!("{method} {}", params.join(" ")));
        }
        let param_columns = cols.iter().filter_map(|c| c.as_str().map(str::to_string)).collect();
        Ok(PlanDoc { dir: dir.to_path_buf(), name, version, ids, labels, param_columns, doc })
    }

    fn id(&self) -> String {
        plan_id(self.ids.iter().map(String::as_str), &self.version)
    }

    fn describe(&self) -> String {
        format!(
            "plan {} ({} cells, alignbench {}) in {}",
            self.id(),
            self.ids.len(),
            self.version,
            self.dir.join("plan.json").display()
        )
    }
}

/// Experiment folders under an input: the input itself when it holds `plan.json`, else its subfolders that do.
fn experiment_dirs(input: &Path) -> Result<Vec<PathBuf>> {
    if input.join("plan.json").is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let rd = fs::read_dir(input).map_err(|e| Error::file(input, format!("cannot list results folder: {e}")))?;
    let mut out: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.join("plan.json").is_file()).collect();
    out.sort();
    if out.is_empty() {
        return Err(Error::file(
            input,
            "no plan.json here or in a subfolder: give a results folder (`results/`) or an experiment folder \
             (`results/<experiment>/`) written by `alignbench run`",
        ));
    }
    Ok(out)
}

/// The finished cell files of an experiment folder: (id, path), sorted (temporaries of killed writers skipped).
fn cell_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let cells = dir.join("cells");
    if !cells.is_dir() {
        return Ok(Vec::new());
    }
    let rd = fs::read_dir(&cells).map_err(|e| Error::file(&cells, format!("cannot list: {e}")))?;
    let mut out: Vec<(String, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let id = name.strip_suffix(".json").filter(|_| !name.starts_with('.'))?;
            Some((id.to_string(), p.clone()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Merge the inputs' cells per experiment into `out` and rebuild each experiment's tables.
pub fn merge(opts: &MergeOptions) -> Result<Vec<Merged>> {
    let Some(first) = opts.inputs.first() else {
        return Err(Error::config("merge: give at least one results folder"));
    };
    let out = match &opts.out {
        Some(o) => o.clone(),
        None if first.join("plan.json").is_file() => first.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => first.clone(),
    };
    let mut by_name: BTreeMap<String, Vec<PlanDoc>> = BTreeMap::new();
    for input in &opts.inputs {
        for dir in experiment_dirs(input)? {
            let doc = PlanDoc::read(&dir)?;
            by_name.entry(doc.name.clone()).or_default().push(doc);
        }
    }
    // Every experiment is checked before any is written.
    let mut work = Vec::new();
    for (name, mut sources) in by_name {
        let dest = out.join(&name);
        if dest.join("plan.json").is_file() && !sources.iter().any(|s| same_dir(&s.dir, &dest)) {
            sources.insert(0, PlanDoc::read(&dest)?);
        }
        work.push(check(name, dest, sources)?);
    }
    let mut merged = Vec::new();
    for w in &work {
        if !w.missing.is_empty() && !opts.partial {
            let shown: Vec<String> = w.missing.iter().take(5).map(|m| format!("  {m}")).collect();
            return Err(Error::config(format!(
                "merge: {} of {} cells of `{}` are missing (no cell file in {} folder(s)), e.g.\n{}\nrun the shards that \
                 own them again (`alignbench run FILE --shard I/N` resumes: finished cells are skipped), or pass \
                 --partial to tabulate the cells that are there",
                w.missing.len(),
                w.plan.ids.len(),
                w.name,
                w.sources.len(),
                shown.join("\n")
            )));
        }
    }
    for w in work {
        merged.push(write(w)?);
    }
    Ok(merged)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// One experiment's checked merge: the reference plan, where each cell is, what is missing.
struct Work {
    name: String,
    dest: PathBuf,
    plan: PlanDoc,
    sources: Vec<PathBuf>,
    /// id → file holding it (the first folder that has it).
    found: BTreeMap<String, PathBuf>,
    missing: Vec<String>,
}

fn check(name: String, dest: PathBuf, sources: Vec<PlanDoc>) -> Result<Work> {
    let mut it = sources.into_iter();
    let plan = it.next().expect("at least one source");
    let others: Vec<PlanDoc> = it.collect();
    for o in &others {
        if o.version != plan.version || o.ids != plan.ids {
            return Err(Error::config(format!(
                "merge: `{name}` was run from different plans: {} and {}; results of one experiment file and one \
                 alignbench version merge (re-run the odd folder's cells with this plan, or merge it elsewhere)",
                plan.describe(),
                o.describe()
            )));
        }
    }
    let known: BTreeSet<&str> = plan.ids.iter().map(String::as_str).collect();
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let dirs: Vec<PathBuf> = std::iter::once(plan.dir.clone()).chain(others.iter().map(|o| o.dir.clone())).collect();
    for dir in &dirs {
        for (id, path) in cell_files(dir)? {
            if found.contains_key(&id) {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                Error::file(
                    &path,
                    format!("corrupt cell file ({e}); delete it and run its shard again to recompute it"),
                )
            })?;
            let version = v["crate_version"].as_str().unwrap_or("unknown");
            if version != plan.version {
                return Err(Error::config(format!(
                    "merge: cell {id} ({}) was produced by alignbench {version}, but the plan by alignbench {} ({}); \
                     cells of two versions never mix: re-run it with one version",
                    path.display(),
                    plan.version,
                    plan.describe()
                )));
            }
            if !known.contains(id.as_str()) || v["id"].as_str() != Some(id.as_str()) {
                return Err(Error::config(format!(
                    "merge: cell {id} ({}) is not a cell of {}: it was produced by a different plan (another version \
                     of the experiment file?); move it away, or merge it with the results of its own plan",
                    path.display(),
                    plan.describe()
                )));
            }
            found.insert(id, path);
        }
    }
    let missing: Vec<String> = plan
        .ids
        .iter()
        .zip(&plan.labels)
        .filter(|(id, _)| !found.contains_key(*id))
        .map(|(id, l)| format!("{id} {l}"))
        .collect();
    Ok(Work { name, dest, plan, sources: dirs, found, missing })
}

fn write(w: Work) -> Result<Merged> {
    let Work { name, dest, plan, sources, found, missing } = w;
    let mut copied = 0;
    let cells_dir = dest.join("cells");
    for (id, src) in &found {
        let to = cells_dir.join(format!("{id}.json"));
        if !same_dir(src, &to) && !to.exists() {
            let bytes = fs::read(src).map_err(|e| Error::file(src, format!("cannot read: {e}")))?;
            write_atomic(&to, &bytes)?;
            copied += 1;
        }
    }
    // Shared figure data (the toy's exact target densities) and the plan itself travel with the cells.
    for dir in &sources {
        let targets = dir.join("targets");
        if let Ok(rd) = fs::read_dir(&targets) {
            for e in rd.flatten() {
                let p = e.path();
                let Some(file) = p.file_name().and_then(|s| s.to_str()) else { continue };
                let to = dest.join("targets").join(file);
                if !file.starts_with('.') && file.ends_with(".json") && !to.exists() {
                    let bytes = fs::read(&p).map_err(|e| Error::file(&p, format!("cannot read: {e}")))?;
                    write_atomic(&to, &bytes)?;
                }
            }
        }
    }
    if !dest.join("plan.json").exists() {
        write_atomic(&dest.join("plan.json"), serde_json::to_string_pretty(&plan.doc).expect("json").as_bytes())?;
    }
    let config = plan.dir.join("config.yaml");
    if !dest.join("config.yaml").exists() && config.is_file() {
        let bytes = fs::read(&config).map_err(|e| Error::file(&config, format!("cannot read: {e}")))?;
        write_atomic(&dest.join("config.yaml"), &bytes)?;
    }
    let ids: Vec<&str> = plan.ids.iter().map(String::as_str).collect();
    Store::at(&dest).write_tables(&ids, &plan.param_columns)?;
    Ok(Merged { name, dir: dest, planned: ids.len(), found: found.len(), copied, sources: sources.len(), missing })
}
