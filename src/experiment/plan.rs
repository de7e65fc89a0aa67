//! Experiment file → plan: sweep expansion (cartesian over every list-valued sweep key), validation once, cell ids
//! (hash of the resolved cell and the crate version), compute matching (`budget:` sizes every method with the
//! ledger cost model of `cost.rs`, methods.md §17) and the plan-time checks that a method's needs (reward gradient,
//! denoiser VJP, trainable MLP) are met.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::cost::{check_memory, per_group, row_seconds};
use super::keys;
use super::spec::{
    size_key, Budget, CellSpec, MethodSpec, METHOD_NAMES, METHOD_OVERRIDES, SWEEP_KEYS, TOP_KEYS, VERSION,
};
use crate::methods::Chain;
use crate::{Error, Result};

/// One cell of a plan.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Stable id: first 16 hex digits of sha256(resolved cell JSON, crate version).
    pub id: String,
    /// The typed cell.
    pub spec: CellSpec,
    /// The resolved cell as JSON (what is hashed and saved).
    pub value: Value,
    /// Values of the parameters that identify the cell in tables (`alpha`, `particles`, … and swept keys).
    pub params: BTreeMap<String, String>,
}

/// An expanded experiment file.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Experiment name.
    pub name: String,
    /// Description from the file.
    pub description: String,
    /// Source file.
    pub file: PathBuf,
    /// Original file text.
    pub source: String,
    /// Cells in file order.
    pub cells: Vec<Cell>,
    /// Names of the parameter columns of the tidy rows.
    pub param_columns: Vec<String>,
}

/// Columns present for every toy experiment.
pub const BASE_PARAMS: [&str; 5] = ["problem", "denoiser", "alpha", "particles", "steps"];

/// Read and expand one experiment file.
pub fn plan_file(path: &Path) -> Result<Plan> {
    plan_file_with(path, &PlanOptions::default())
}

/// [`plan_file`] with options.
pub fn plan_file_with(path: &Path, opts: &PlanOptions) -> Result<Plan> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read experiment file: {e}")))?;
    plan_str_with(&text, path, opts).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
        other => other,
    })
}

fn cartesian(axes: &[(String, Vec<Value>)]) -> Vec<Vec<(String, Value)>> {
    let mut out: Vec<Vec<(String, Value)>> = vec![vec![]];
    for (k, vals) in axes {
        let mut next = Vec::with_capacity(out.len() * vals.len());
        for prefix in &out {
            for v in vals {
                let mut p = prefix.clone();
                p.push((k.clone(), v.clone()));
                next.push(p);
            }
        }
        out = next;
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Expand the text of an experiment file (`path` is for messages and provenance), refusing more than
/// [`MAX_CELLS`] cells.
pub fn plan_str(text: &str, path: &Path) -> Result<Plan> {
    plan_str_with(text, path, &PlanOptions::default())
}

/// Cells a plan may have without `--yes` (one file each; planning takes about a minute per million).
pub const MAX_CELLS: u64 = 100_000;
/// Plans with more cells than this show a progress bar while they expand (when asked).
const PROGRESS_CELLS: u64 = 20_000;

/// How to plan.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Refuse plans of more cells than this (`None`: any size; `--yes`).
    pub max_cells: Option<u64>,
    /// Show a progress bar while a large plan expands.
    pub progress: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { max_cells: Some(MAX_CELLS), progress: false }
    }
}

impl PlanOptions {
    /// A command's options: `--yes` lifts the cell-count guard; large plans show their progress.
    pub fn command(yes: bool) -> Self {
        PlanOptions { max_cells: if yes { None } else { Some(MAX_CELLS) }, progress: true }
    }
}

/// One method entry of the file with its sweep axes (the top-level ones it inherits or overrides, then its own).
struct Entry {
    mi: usize,
    mname: String,
    mobj: Map<String, Value>,
    local_fixed: Vec<(String, Value)>,
    size: Option<&'static str>,
    all_axes: Vec<(String, Vec<Value>)>,
    n_top: usize,
}

/// [`plan_str`] with options.
pub fn plan_str_with(text: &str, path: &Path, opts: &PlanOptions) -> Result<Plan> {
    let root: Value = yaml_serde::from_str(text).map_err(|e| Error::config(format!("invalid YAML: {e}")))?;
    let Value::Object(mut top) = root else {
        return Err(Error::config(
            "the experiment file must be a mapping with keys version, name, problem, reward, methods",
        ));
    };
    match top.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION as u64) => {}
        Some(v) => return Err(Error::config(format!("version: this build reads version {VERSION}, found {v}"))),
        None => return Err(Error::config(format!("version: missing; add `version: {VERSION}` at the top"))),
    }
    // Every unknown key of the file is reported at once, at its real path, before any value is interpreted (a
    // misspelt key would otherwise surface as a missing one).
    let mut unknown = Vec::new();
    keys::against(&top, &TOP_KEYS, "", &mut unknown);
    for (mi, m) in top.get("methods").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if let (Value::Object(mobj), Some(known)) = (m, m.get("method").and_then(Value::as_str).and_then(method_keys)) {
            let known: Vec<&str> = known.iter().map(String::as_str).chain(METHOD_OVERRIDES).collect();
            keys::against(mobj, &known, &format!("methods[{mi}]"), &mut unknown);
        }
    }
    section_keys(&top, &mut unknown);
    if let Some(msg) = keys::report(std::mem::take(&mut unknown)) {
        return Err(Error::config(msg));
    }
    let name = match top.get("name") {
        Some(Value::String(s))
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            s.clone()
        }
        Some(_) => {
            return Err(Error::config(
                "name: must be a non-empty string of letters, digits, '-' or '_' (it names the results folder)",
            ))
        }
        None => return Err(Error::config("name: missing; add e.g. `name: my-experiment`")),
    };
    let description = match top.remove("description") {
        Some(Value::String(s)) => s,
        None => String::new(),
        Some(_) => return Err(Error::config("description: must be a string")),
    };
    let methods = match top.remove("methods") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => {
            return Err(Error::config(
                "methods: missing or empty; add a list such as `methods: [{ method: das, particles: 100 }]`",
            ))
        }
    };
    check_sections(&top)?;
    let seeds: Vec<Value> = match (top.remove("seeds"), top.remove("seed")) {
        (Some(_), Some(_)) => return Err(Error::config("seed/seeds: give one of them, not both")),
        // `seed: [..]` sweeps as well, like every other top-level list.
        (Some(Value::Array(s)), None) | (None, Some(Value::Array(s))) if !s.is_empty() => s,
        (Some(v @ Value::Number(_)), None) | (None, Some(v @ Value::Number(_))) => vec![v],
        (None, None) => vec![Value::from(0u64)],
        _ => return Err(Error::config("seeds: must be a non-empty list of integers, e.g. `seeds: [0, 1, 2]`")),
    };
    for s in &seeds {
        if s.as_u64().is_none() {
            return Err(Error::config(format!("seeds: `{s}` is not a non-negative integer")));
        }
    }
    let budgets = match top.remove("budget") {
        None => None,
        Some(b) => Some(budget_values(b)?),
    };
    let mut axes: Vec<(String, Vec<Value>)> = vec![];
    if let Some(b) = &budgets {
        axes.push(("budget".to_string(), b.clone()));
    }
    for k in SWEEP_KEYS {
        if let Some(Value::Array(vals)) = top.get(k) {
            if vals.is_empty() {
                return Err(Error::config(format!("{k}: an empty list sweeps over nothing; give at least one value")));
            }
            axes.push((k.to_string(), vals.clone()));
        }
    }
    let mut swept: Vec<String> = axes.iter().map(|(k, _)| k.clone()).collect();
    // First every method entry's sweep axes, so the plan's size is known before anything is expanded.
    let mut entries = Vec::with_capacity(methods.len());
    for (mi, m) in methods.iter().enumerate() {
        let Value::Object(mobj) = m else {
            return Err(Error::config(format!("methods[{mi}]: must be a mapping with a `method:` key")));
        };
        let mname = match mobj.get("method") {
            Some(Value::String(s)) if METHOD_NAMES.contains(&s.as_str()) => s.clone(),
            Some(v) => {
                return Err(Error::config(format!(
                    "methods[{mi}].method: unknown method {v}; known methods: {} (see `alignbench list methods`)",
                    METHOD_NAMES.join(", ")
                )))
            }
            None => {
                return Err(Error::config(format!(
                    "methods[{mi}]: missing `method:` key (one of {})",
                    METHOD_NAMES.join(", ")
                )))
            }
        };
        let mut mobj = mobj.clone();
        // Top-level keys set inside a method entry override (or sweep) the top-level value for this method.
        let mut local_axes: Vec<(String, Vec<Value>)> = axes.clone();
        let mut local_fixed: Vec<(String, Value)> = vec![];
        for k in METHOD_OVERRIDES {
            if let Some(v) = mobj.remove(k) {
                local_axes.retain(|(a, _)| a != k);
                match v {
                    Value::Array(vals) if vals.is_empty() => {
                        return Err(Error::config(format!("methods[{mi}].{k}: an empty list sweeps over nothing")))
                    }
                    Value::Array(vals) => {
                        local_axes.push((k.to_string(), vals));
                        if !swept.iter().any(|s| s == k) {
                            swept.push(k.to_string());
                        }
                    }
                    other => local_fixed.push((k.to_string(), other)),
                }
            }
        }
        let size = match (&budgets, size_key(&mname)) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::config(format!(
                    "methods[{mi}] ({mname}): `budget` sizes sampling methods, but {mname} has no size to match (its cost \
                     is training); run it in an experiment without `budget`"
                )))
            }
            (Some(_), Some(key)) if mobj.contains_key(key) => {
                return Err(Error::config(format!(
                    "methods[{mi}].{key}: set by `budget` in this experiment; remove `{key}` from the method (or remove `budget`)"
                )))
            }
            (Some(_), Some(key)) => Some(key),
        };
        let mut maxes: Vec<(String, Vec<Value>)> = vec![];
        for (k, v) in &mobj {
            if let Value::Array(vals) = v {
                if vals.is_empty() {
                    return Err(Error::config(format!("methods[{mi}].{k}: an empty list sweeps over nothing")));
                }
                maxes.push((k.clone(), vals.clone()));
                if !swept.contains(k) {
                    swept.push(k.clone());
                }
            }
        }
        let mut all_axes = vec![("seed".to_string(), seeds.clone())];
        all_axes.extend(local_axes.iter().cloned());
        let n_top = all_axes.len();
        all_axes.extend(maxes);
        entries.push(Entry { mi, mname, mobj, local_fixed, size, all_axes, n_top });
    }
    let total: u128 = entries
        .iter()
        .map(|e| e.all_axes.iter().map(|(_, v)| v.len() as u128).product::<u128>())
        .fold(0u128, u128::saturating_add);
    if let Some(max) = opts.max_cells {
        if total > max as u128 {
            return Err(Error::config(format!(
                "the sweep expands to {total} cells (more than {max}): planning and running that many takes long and \
                 writes one file per cell; narrow the sweep, or pass --yes to go ahead"
            )));
        }
    }
    let bar = if opts.progress && total > PROGRESS_CELLS as u128 {
        indicatif::ProgressBar::new(total.min(u64::MAX as u128) as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("planning [{bar:32}] {pos}/{len} cells ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut cells = Vec::with_capacity(total.min(1 << 20) as usize);
    for Entry { mi, mname, mobj, local_fixed, size, all_axes, n_top } in entries {
        for combo in cartesian(&all_axes) {
            let mut cell: Map<String, Value> = top.clone();
            let mut method = mobj.clone();
            for (k, v) in &local_fixed {
                cell.insert(k.clone(), v.clone());
            }
            for (j, (k, v)) in combo.into_iter().enumerate() {
                if j < n_top {
                    cell.insert(k, v);
                } else {
                    method.insert(k, v);
                }
            }
            if !cell.contains_key("reward") {
                let preset =
                    cell.get("problem").and_then(|p| p.get("preset")).and_then(|p| p.as_str()).map(str::to_string);
                match preset {
                    Some(p) => {
                        cell.insert("reward".into(), serde_json::json!({ "kind": "quadratic", "preset": p }));
                    }
                    None => {
                        return Err(Error::config(
                            "reward: missing; add e.g. `reward: { kind: quadratic, preset: gmm1 }` (only preset problems have a default reward)",
                        ))
                    }
                }
            }
            let err =
                |e: serde_json::Error| Error::config(format!("methods[{mi}] ({mname}): {e}{}", hint(&e.to_string())));
            let spec: CellSpec = match size {
                None => {
                    cell.insert("method".into(), Value::Object(method));
                    serde_json::from_value(Value::Object(cell.clone())).map_err(err)?
                }
                Some(key) => {
                    let budget: Budget = serde_json::from_value(cell["budget"].clone()).map_err(err)?;
                    let sized = size_to_budget(&cell, &method, key, &budget).map_err(|e| match e {
                        Error::Config(m) => Error::Config(format!("methods[{mi}] ({mname}): {m}")),
                        o => o,
                    })?;
                    method.insert(key.into(), Value::from(sized));
                    cell.insert("method".into(), Value::Object(method));
                    serde_json::from_value(Value::Object(cell.clone())).map_err(err)?
                }
            };
            let parsed = serde_json::to_value(&spec.method).expect("JSON values serialise");
            keys::diff(&cell["method"], &parsed, &format!("methods[{mi}]"), &mut unknown);
            let value = Value::Object(cell);
            if !unknown.is_empty() {
                continue;
            }
            validate(&spec).map_err(|e| match e {
                Error::Config(m) => Error::Config(format!("methods[{mi}] ({mname}): {m}")),
                o => o,
            })?;
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(&value).expect("JSON values serialise"));
            h.update(env!("CARGO_PKG_VERSION").as_bytes());
            let id: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
            cells.push(Cell { id, params: BTreeMap::new(), spec, value });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if let Some(msg) = keys::report(unknown) {
        return Err(Error::config(msg));
    }
    if budgets.is_some() {
        for k in ["budget", "size"] {
            if !swept.iter().any(|s| s == k) {
                swept.push(k.to_string());
            }
        }
    }
    // A method key that differs between cells of the same method (e.g. two `das` entries with different
    // `selection`) identifies the cell as much as a swept key does, so it gets a column too.
    let mut seen: BTreeMap<(String, String), std::collections::BTreeSet<String>> = BTreeMap::new();
    for c in &cells {
        if let Some(Value::Object(m)) = c.value.get("method") {
            for (k, v) in m.iter().filter(|(k, _)| k.as_str() != "method") {
                seen.entry((c.spec.method.name().to_string(), k.clone())).or_default().insert(show(v));
            }
        }
    }
    for c in &cells {
        let m = c.value.get("method").and_then(Value::as_object);
        for ((name, k), vals) in seen.iter_mut() {
            if name == c.spec.method.name() && m.is_some_and(|m| !m.contains_key(k)) {
                vals.insert(String::new());
            }
        }
    }
    for ((_, k), vals) in &seen {
        if vals.len() > 1 && !swept.contains(k) {
            swept.push(k.clone());
        }
    }
    let mut param_columns: Vec<String> = BASE_PARAMS.iter().map(|s| s.to_string()).collect();
    for k in swept {
        if !param_columns.contains(&k) && k != "method" {
            param_columns.push(k);
        }
    }
    for c in &mut cells {
        for k in &param_columns {
            let v = match k.as_str() {
                "problem" => c.spec.problem.label(),
                "denoiser" => c.spec.problem.problem().denoiser_label(&c.spec.setting),
                "alpha" => c.spec.alpha.to_string(),
                "particles" => c.spec.method.particles().to_string(),
                "steps" => c.spec.steps.to_string(),
                "budget" => c.spec.budget.map(|b| b.value.to_string()).unwrap_or_default(),
                "size" => {
                    size_key(c.spec.method.name()).and_then(|k| c.value["method"].get(k)).map(show).unwrap_or_default()
                }
                "reward" => c.spec.reward.label(),
                other => c.value.get(other).or_else(|| c.value["method"].get(other)).map(show).unwrap_or_default(),
            };
            c.params.insert(k.clone(), v);
        }
    }
    Ok(Plan { name, description, file: path.to_path_buf(), source: text.to_string(), cells, param_columns })
}

/// Every key of a method's entry (its configuration's fields, with defaults), or `None` for an unknown tag.
fn method_keys(tag: &str) -> Option<Vec<String>> {
    let probe: MethodSpec = serde_json::from_value(serde_json::json!({ "method": tag, "particles": 1 })).ok()?;
    match serde_json::to_value(&probe) {
        Ok(Value::Object(m)) => Some(m.keys().cloned().collect()),
        _ => None,
    }
}

/// Parse a section into its typed struct and serialise it back (its known keys, with defaults).
type RoundTrip = fn(&Value) -> serde_json::Result<Value>;

/// The top-level sections parsed on their own: `problem`, `reward` (each value of a sweep) and `metrics`.
fn sections(top: &Map<String, Value>) -> Vec<(String, &Value, RoundTrip)> {
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> serde_json::Result<Value> {
        serde_json::to_value(serde_json::from_value::<T>(v.clone())?)
    }
    let mut out: Vec<(String, &Value, RoundTrip)> = Vec::new();
    for (key, f) in [
        ("problem", round_trip::<super::spec::ProblemSpec> as RoundTrip),
        ("reward", round_trip::<super::spec::RewardSpec>),
        ("metrics", round_trip::<super::spec::MetricsSpec>),
    ] {
        match top.get(key) {
            Some(Value::Array(vals)) if key != "metrics" => {
                out.extend(vals.iter().enumerate().map(|(i, v)| (format!("{key}[{i}]"), v, f)));
            }
            Some(v) => out.push((key.to_string(), v, f)),
            None => {}
        }
    }
    out
}

/// Unknown nested keys of the sections that parse (`problem.presett`).
fn section_keys(top: &Map<String, Value>, unknown: &mut Vec<keys::Unknown>) {
    for (at, v, round_trip) in sections(top) {
        if let Ok(parsed) = round_trip(v) {
            keys::diff(v, &parsed, &at, unknown);
        }
    }
}

/// Parse errors of the sections, naming the section (`reward: missing field `preset``).
fn check_sections(top: &Map<String, Value>) -> Result<()> {
    for (at, v, round_trip) in sections(top) {
        round_trip(v).map_err(|e| Error::config(format!("{at}: {e}{}", hint(&e.to_string()))))?;
    }
    Ok(())
}

/// The list of resolved budget objects of a `budget:` key (a list of values sweeps).
fn budget_values(b: Value) -> Result<Vec<Value>> {
    let bad = || {
        Error::config("budget: must be `{ axis: nfe | vjp_total | reward_calls | wall_s, value: <number or list> }`")
    };
    let Value::Object(mut o) = b else { return Err(bad()) };
    let value = o.remove("value").ok_or_else(bad)?;
    let axis = o.remove("axis").ok_or_else(bad)?;
    if let Some(k) = o.keys().next() {
        return Err(Error::config(format!("budget: unknown field `{k}`; only `axis` and `value` are allowed")));
    }
    let vals = match value {
        Value::Array(v) if !v.is_empty() => v,
        Value::Array(_) => return Err(Error::config("budget.value: an empty list sweeps over nothing")),
        v => vec![v],
    };
    let mut out = Vec::with_capacity(vals.len());
    for v in vals {
        match v.as_f64() {
            Some(x) if x > 0.0 && x.is_finite() => {}
            _ => return Err(Error::config(format!("budget.value: `{v}` is not a positive number"))),
        }
        let obj = serde_json::json!({ "axis": axis.clone(), "value": v });
        serde_json::from_value::<Budget>(obj.clone())
            .map_err(|e| Error::config(format!("budget: {e}; axis is one of nfe, vjp_total, reward_calls, wall_s")))?;
        out.push(obj);
    }
    Ok(out)
}

/// The largest size (value of `key` in the method) whose per-group cost stays within the budget.
fn size_to_budget(cell: &Map<String, Value>, method: &Map<String, Value>, key: &str, budget: &Budget) -> Result<u64> {
    let cost_at = |n: u64| -> Result<f64> {
        let mut m = method.clone();
        m.insert(key.into(), Value::from(n));
        let mut c = cell.clone();
        c.insert("method".into(), Value::Object(m));
        let spec: CellSpec = serde_json::from_value(Value::Object(c))
            .map_err(|e| Error::config(format!("{e}{}", hint(&e.to_string()))))?;
        Ok(per_group(&spec).on(budget.axis, row_seconds(&spec)))
    };
    let c1 = cost_at(1)?;
    if c1 > budget.value {
        return Err(Error::config(format!(
            "budget: {:?} = {} per group is below this method's cheapest setting ({key}: 1 costs {c1}); raise budget.value",
            budget.axis, budget.value
        )));
    }
    let (mut lo, mut hi) = (1u64, 2u64);
    while hi <= 1 << 24 && cost_at(hi)? <= budget.value {
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if cost_at(mid)? <= budget.value {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

fn hint(msg: &str) -> &'static str {
    if msg.contains("unknown field") {
        " — remove or correct that key (see the YAML reference in README.md)"
    } else if msg.contains("missing field") {
        " — add that key"
    } else {
        ""
    }
}

/// Checks that need values, not just types (α > 0, particles ≥ 1, a normalisable tilt, …).
pub fn validate(c: &CellSpec) -> Result<()> {
    if !(c.alpha > 0.0) || !c.alpha.is_finite() {
        return Err(Error::config(format!("alpha: must be a positive number (got {}); e.g. `alpha: 1.0`", c.alpha)));
    }
    if !(1..=1000).contains(&c.steps) {
        return Err(Error::config(format!("steps: must be in 1..=1000 (got {})", c.steps)));
    }
    if !(c.eta >= 0.0) {
        return Err(Error::config(format!("eta: must be ≥ 0 (got {})", c.eta)));
    }
    if c.groups == 0 {
        return Err(Error::config("groups: must be at least 1"));
    }
    if c.method.particles() == 0 {
        return Err(Error::config("particles: must be at least 1 (e.g. `particles: 100`)"));
    }
    if c.metrics.emd_n == 0 || c.metrics.emd_repeats == 0 || c.metrics.target_pool == 0 {
        return Err(Error::config("metrics: target_pool, emd_n and emd_repeats must be at least 1"));
    }
    let problem = c.problem.problem();
    let dim = problem.state_dim(&c.setting);
    c.method.method().validate(&Chain { steps: c.steps, eta: c.eta, dim })?;
    problem.validate(&c.setting)?;
    check_memory(c)
}

/// Ledger-model estimate of denoiser rows, denoiser VJPs and reward calls of a whole cell (all groups).
pub fn estimate(c: &CellSpec) -> (u64, u64, u64) {
    let p = per_group(c);
    let g = c.groups as f64;
    ((p.nfe * g).round() as u64, (p.vjp_denoiser * g).round() as u64, (p.reward_calls * g).round() as u64)
}
