//! Experiment file → plan: sweep expansion (cartesian over every list-valued sweep key), validation once, cell ids
//! (hash of the resolved cell and the crate version) and a cost estimate from the ledger model (methods.md §17).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::spec::{CellSpec, DenoiserKind, MethodSpec, METHOD_NAMES, SWEEP_KEYS, VERSION};
use crate::experiment::problem::ToyProblem;
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
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read experiment file: {e}")))?;
    plan_str(&text, path).map_err(|e| match e {
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

/// Expand the text of an experiment file (`path` is for messages and provenance).
pub fn plan_str(text: &str, path: &Path) -> Result<Plan> {
    let root: Value = yaml_serde::from_str(text).map_err(|e| Error::config(format!("invalid YAML: {e}")))?;
    let Value::Object(mut top) = root else {
        return Err(Error::config("the experiment file must be a mapping with keys version, name, problem, reward, methods"));
    };
    match top.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION as u64) => {}
        Some(v) => return Err(Error::config(format!("version: this build reads version {VERSION}, found {v}"))),
        None => return Err(Error::config(format!("version: missing; add `version: {VERSION}` at the top"))),
    }
    let name = match top.get("name") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => s.clone(),
        Some(_) => return Err(Error::config("name: must be a non-empty string of letters, digits, '-' or '_' (it names the results folder)")),
        None => return Err(Error::config("name: missing; add e.g. `name: my-experiment`")),
    };
    let description = match top.remove("description") {
        Some(Value::String(s)) => s,
        None => String::new(),
        Some(_) => return Err(Error::config("description: must be a string")),
    };
    let methods = match top.remove("methods") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => return Err(Error::config("methods: missing or empty; add a list such as `methods: [{ method: das, particles: 100 }]`")),
    };
    let seeds: Vec<Value> = match (top.remove("seeds"), top.remove("seed")) {
        (Some(_), Some(_)) => return Err(Error::config("seed/seeds: give one of them, not both")),
        (Some(Value::Array(s)), None) if !s.is_empty() => s,
        (Some(v @ Value::Number(_)), None) | (None, Some(v)) => vec![v],
        (None, None) => vec![Value::from(0u64)],
        _ => return Err(Error::config("seeds: must be a non-empty list of integers, e.g. `seeds: [0, 1, 2]`")),
    };
    for s in &seeds {
        if s.as_u64().is_none() {
            return Err(Error::config(format!("seeds: `{s}` is not a non-negative integer")));
        }
    }
    let mut axes: Vec<(String, Vec<Value>)> = vec![];
    for k in SWEEP_KEYS {
        if let Some(Value::Array(vals)) = top.get(k) {
            if vals.is_empty() {
                return Err(Error::config(format!("{k}: an empty list sweeps over nothing; give at least one value")));
            }
            axes.push((k.to_string(), vals.clone()));
        }
    }
    let mut swept: Vec<String> = axes.iter().map(|(k, _)| k.clone()).collect();
    let mut cells = Vec::new();
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
            None => return Err(Error::config(format!("methods[{mi}]: missing `method:` key (one of {})", METHOD_NAMES.join(", ")))),
        };
        let mut maxes: Vec<(String, Vec<Value>)> = vec![];
        for (k, v) in mobj {
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
        all_axes.extend(axes.iter().cloned());
        let n_top = all_axes.len();
        all_axes.extend(maxes);
        for combo in cartesian(&all_axes) {
            let mut cell: Map<String, Value> = top.clone();
            let mut method = mobj.clone();
            for (j, (k, v)) in combo.into_iter().enumerate() {
                if j < n_top {
                    cell.insert(k, v);
                } else {
                    method.insert(k, v);
                }
            }
            cell.insert("method".into(), Value::Object(method));
            let value = Value::Object(cell);
            let spec: CellSpec = serde_json::from_value(value.clone())
                .map_err(|e| Error::config(format!("methods[{mi}] ({mname}): {e}{}", hint(&e.to_string()))))?;
            validate(&spec).map_err(|e| match e {
                Error::Config(m) => Error::Config(format!("methods[{mi}] ({mname}): {m}")),
                o => o,
            })?;
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(&value).expect("JSON values serialise"));
            h.update(env!("CARGO_PKG_VERSION").as_bytes());
            let id: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
            cells.push(Cell { id, params: BTreeMap::new(), spec, value });
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
                "denoiser" => match c.spec.method {
                    MethodSpec::Oracle(_) => "exact_tilted".into(),
                    _ => format!("{:?}", c.spec.denoiser).to_lowercase(),
                },
                "alpha" => c.spec.alpha.to_string(),
                "particles" => c.spec.method.particles().to_string(),
                "steps" => c.spec.steps.to_string(),
                other => c.value.get(other).or_else(|| c.value["method"].get(other)).map(show).unwrap_or_default(),
            };
            c.params.insert(k.clone(), v);
        }
    }
    Ok(Plan { name, description, file: path.to_path_buf(), source: text.to_string(), cells, param_columns })
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
    match &c.method {
        MethodSpec::Das(d) => {
            d.validate()?;
            if c.eta == 0.0 {
                return Err(Error::config("eta: DAS needs η > 0 (its proposal and weights are undefined at η = 0); use `eta: 1.0`"));
            }
        }
        MethodSpec::BestOfN(b) if b.top_m == 0 => return Err(Error::config("top_m: must be at least 1")),
        _ => {}
    }
    // Builds the mixture, the reward and the exact tilt: shape errors and non-normalisable tilts surface here.
    let p = ToyProblem::build(c)?;
    if c.denoiser == DenoiserKind::Mlp && !matches!(c.method, MethodSpec::Oracle(_)) {
        let path = p.mlp_path(c)?;
        if !path.exists() {
            return Err(Error::config(format!(
                "denoiser: mlp needs weights at {}; train them with `alignbench train toy-mlp --preset {}` or set `mlp_weights:`",
                path.display(),
                c.problem.label()
            )));
        }
    }
    Ok(())
}

/// Ledger-model estimate of denoiser rows, denoiser VJPs and reward calls of a cell.
pub fn estimate(c: &CellSpec) -> (u64, u64, u64) {
    let (n, g, k) = (c.steps as u64, c.groups as u64, c.method.particles() as u64);
    match c.method {
        MethodSpec::Das(_) => (n * k * g, n * k * g, (n + 1) * k * g),
        _ => (n * k * g, 0, k * g),
    }
}
