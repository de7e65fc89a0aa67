//! `alignbench cost FILE`: what each configuration of a Stable Diffusion experiment costs on this machine, measured
//! on seeded random weights of the real architectures (issue 16, "whole-method figures": the weights' values do not
//! change the cost). The experiment is run as written — methods, steps, CFG, dtype, device, `batch_p` — except:
//!
//! - `problem.random_weights: true` (`tiny` with `--tiny`): no model files are read;
//! - `problem.eval_rewards` is dropped (a cost run reports no reward numbers);
//! - `groups` (top level and per method) is set to `--prompts` (default 2), `problem.n_prompts` to its default,
//!   `seeds` to the first seed;
//! - `methods` is filtered by `--methods` when given.
//!
//! Each configuration gives seconds per image (sampling only, models loaded: [`CostRow::s_per_image`]), the ledger
//! per prompt group, the peak memory, the projected time of the whole experiment as written (seconds per image ×
//! its groups × its seeds) and, with `--row-seconds`, the same ledger priced by a per-row time model
//! ([`row_model_seconds`], e.g. the PyTorch anchor's rows: the "PyTorch-stack estimate").

use std::path::Path;

use serde_json::Value;

use super::plan::{plan_str, Plan};
use super::store::Store;
use crate::ledger::Cost;
use crate::{Error, Result};

/// How to turn an experiment into its cost run.
#[derive(Clone, Debug, PartialEq)]
pub struct CostOptions {
    /// Prompt groups per configuration (images per configuration).
    pub prompts: usize,
    /// Only these methods (all when empty).
    pub methods: Vec<String>,
    /// The tiny test architectures instead of the full-size ones.
    pub tiny: bool,
    /// Seconds of the row time model ([`row_model_seconds`]).
    pub row_seconds: Option<[f64; 4]>,
}

/// The cost run of an experiment and what the experiment as written would run.
#[derive(Clone, Debug)]
pub struct CostPlan {
    /// The plan that is run.
    pub plan: Plan,
    /// Prompt groups per configuration in the file (top-level `groups`, default 1).
    pub groups: usize,
    /// Seeds in the file.
    pub seeds: usize,
}

fn config_error(m: impl Into<String>) -> Error {
    Error::config(format!("alignbench cost: {}", m.into()))
}

/// `groups` of the file as one number (a swept list counts its largest value).
fn file_groups(v: Option<&Value>) -> usize {
    match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(1) as usize,
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).max().unwrap_or(1) as usize,
        _ => 1,
    }
}

/// Rewrite the experiment `text` (YAML) of `path` into its cost run (see the module docs).
pub fn cost_plan(text: &str, path: &Path, opts: &CostOptions) -> Result<CostPlan> {
    if opts.prompts == 0 {
        return Err(config_error("--prompts must be at least 1"));
    }
    let root: Value = yaml_serde::from_str(text).map_err(|e| Error::file(path, format!("invalid YAML: {e}")))?;
    let Value::Object(mut top) = root else {
        return Err(Error::file(path, "the experiment file must be a mapping"));
    };
    let problems: Vec<&mut Value> = match top.get_mut("problem") {
        Some(Value::Array(a)) => a.iter_mut().collect(),
        Some(p) => vec![p],
        None => return Err(config_error(format!("{}: no `problem`", path.display()))),
    };
    let random = if opts.tiny { Value::from("tiny") } else { Value::from(true) };
    for p in problems {
        let kind = p.get("kind").and_then(Value::as_str).unwrap_or("?").to_string();
        let Value::Object(m) = p else { continue };
        if kind != "sd15" {
            return Err(config_error(format!(
                "{}: problem `{kind}`; cost times Stable Diffusion experiments (problem.kind: sd15) on random \
                 weights — toy and FMNIST-align cells run in seconds: `alignbench run` them",
                path.display()
            )));
        }
        m.insert("random_weights".into(), random.clone());
        if opts.tiny {
            // The tiny architectures at 8 × 8 latents (32² images): a check of the command in seconds.
            m.insert("latent_size".into(), Value::from(8));
        }
        m.remove("eval_rewards");
        m.remove("path");
        m.remove("n_prompts");
    }
    let groups = file_groups(top.get("groups"));
    top.insert("groups".into(), Value::from(opts.prompts));
    let seeds = match top.get("seeds") {
        Some(Value::Array(a)) if !a.is_empty() => {
            let n = a.len();
            top.insert("seed".into(), a[0].clone());
            top.remove("seeds");
            n
        }
        _ => 1,
    };
    let Some(Value::Array(methods)) = top.get_mut("methods") else {
        return Err(config_error(format!("{}: no `methods` list", path.display())));
    };
    let names: Vec<String> =
        methods.iter().filter_map(|m| m.get("method").and_then(Value::as_str)).map(str::to_string).collect();
    if let Some(bad) = opts.methods.iter().find(|w| !names.contains(w)) {
        return Err(config_error(format!("--methods: `{bad}` is not among the file's methods ({})", names.join(", "))));
    }
    methods.retain(|m| {
        opts.methods.is_empty()
            || m.get("method").and_then(Value::as_str).is_some_and(|n| opts.methods.iter().any(|w| w == n))
    });
    for m in methods.iter_mut() {
        if let Value::Object(o) = m {
            o.remove("groups");
        }
    }
    // JSON is YAML: the rewritten file goes through the one planner.
    let plan = plan_str(&Value::Object(top).to_string(), path)?;
    Ok(CostPlan { plan, groups, seeds })
}

/// One configuration's cost.
#[derive(Clone, Debug, PartialEq)]
pub struct CostRow {
    /// Method and its parameters (`das particles=4`).
    pub label: String,
    /// Sampling seconds per image (per prompt group).
    pub s_per_image: f64,
    /// Denoiser forward rows per image (CFG counts two).
    pub nfe: f64,
    /// VJPs through the denoiser per image.
    pub vjp_denoiser: f64,
    /// VJPs through reward∘decoder only per image.
    pub vjp_reward: f64,
    /// Reward forwards per image.
    pub reward_calls: f64,
    /// Peak memory in GB where measured.
    pub peak_mem_gb: Option<f64>,
    /// Images of this configuration in the experiment as written (its groups × its seeds).
    pub images: f64,
    /// The ledger per image priced by `--row-seconds`.
    pub model_s: Option<f64>,
}

/// Seconds per image of a ledger `cost` under the per-row time model `s` = (UNet row forward, guided step per
/// latent: UNet forward + VJP with its `rows_per_eval` rows and the decoder + reward VJP, decoder + reward VJP per
/// latent, decoder + reward forward per latent). The ledger counts the forward rows inside VJPs in `nfe` and the
/// reward forwards inside VJPs in `reward_calls`; each is priced once.
pub fn row_model_seconds(cost: &Cost, rows_per_eval: f64, s: [f64; 4]) -> f64 {
    let fwd_rows = (cost.nfe - rows_per_eval * cost.vjp_denoiser).max(0.0);
    let reward_fwd = (cost.reward_calls - cost.vjp_denoiser - cost.vjp_reward).max(0.0);
    fwd_rows * s[0] + cost.vjp_denoiser * s[1] + cost.vjp_reward * s[2] + reward_fwd * s[3]
}

/// Short labels of the cells: the method name, plus the parameters that tell cells of one method apart.
fn labels(plan: &Plan) -> Vec<String> {
    plan.cells
        .iter()
        .map(|cell| {
            let name = cell.spec.method.name();
            let mut label = name.to_string();
            let same: Vec<_> = plan.cells.iter().filter(|c| c.spec.method.name() == name).collect();
            for (k, v) in cell.params.iter().filter(|(k, _)| k.as_str() != "seed") {
                if same.iter().any(|c| c.params.get(k) != Some(v)) {
                    label.push_str(&format!(" {k}={v}"));
                }
            }
            label
        })
        .collect()
}

/// The cost rows of a finished cost run stored under `out`.
pub fn cost_rows(cp: &CostPlan, out: &Path, row_seconds: Option<[f64; 4]>) -> Result<Vec<CostRow>> {
    let store = Store::at(&out.join(&cp.plan.name));
    let mut rows = Vec::new();
    for (cell, label) in cp.plan.cells.iter().zip(labels(&cp.plan)) {
        let r = store.load(&cell.id)?;
        let get = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
        let cost = Cost {
            nfe: get("nfe"),
            vjp_denoiser: get("vjp_denoiser"),
            vjp_reward: get("vjp_reward"),
            reward_calls: get("reward_calls"),
        };
        let rpe = r.metrics.get("rows_per_eval").copied().unwrap_or(1.0);
        let spi = get("s_per_image");
        rows.push(CostRow {
            label,
            s_per_image: spi,
            nfe: cost.nfe,
            vjp_denoiser: cost.vjp_denoiser,
            vjp_reward: cost.vjp_reward,
            reward_calls: cost.reward_calls,
            peak_mem_gb: r.metrics.get("peak_mem_gb").copied(),
            images: (cp.groups * cp.seeds) as f64,
            model_s: row_seconds.map(|rs| row_model_seconds(&cost, rpe, rs)),
        });
    }
    Ok(rows)
}

/// `--row-seconds a,b,c,d`: four non-negative seconds.
pub fn parse_row_seconds(s: &str) -> Result<[f64; 4]> {
    let v: Vec<f64> =
        s.split(',').map(|x| x.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(|_| {
            config_error(format!("--row-seconds `{s}`: expected four numbers a,b,c,d (seconds per row)"))
        })?;
    match v[..] {
        [a, b, c, d] if v.iter().all(|x| x.is_finite() && *x >= 0.0) => Ok([a, b, c, d]),
        _ => Err(config_error(format!(
            "--row-seconds `{s}`: expected four finite seconds ≥ 0: UNet row forward, guided step of one latent \
             (UNet forward + VJP with CFG, decode + reward VJP), decode + reward VJP, decode + reward forward"
        ))),
    }
}

/// `name: value unit` lines of the rows (`cost_<experiment>_<label>_s_per_image: …`) and the experiment total.
pub fn cost_lines(name: &str, rows: &[CostRow]) -> Vec<String> {
    let key = |label: &str| {
        let k: String = label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
        format!("cost_{name}_{k}")
    };
    let mut out = Vec::new();
    for r in rows {
        let k = key(&r.label);
        out.push(format!("{k}_s_per_image: {:.4} s", r.s_per_image));
        out.push(format!("{k}_nfe_per_image: {} rows", r.nfe));
        out.push(format!("{k}_vjp_per_image: {} rows", r.vjp_denoiser + r.vjp_reward));
        if let Some(p) = r.peak_mem_gb {
            out.push(format!("{k}_peak_memory: {p:.2} GB"));
        }
        if let Some(m) = r.model_s {
            out.push(format!("{k}_row_model_s_per_image: {m:.4} s"));
        }
    }
    let total: f64 = rows.iter().map(|r| r.s_per_image * r.images).sum();
    out.push(format!("cost_{name}_whole_experiment: {total:.1} s"));
    out.push(format!("cost_{name}_whole_experiment_hours: {:.2} h", total / 3600.0));
    if rows.iter().all(|r| r.model_s.is_some()) && !rows.is_empty() {
        let m: f64 = rows.iter().map(|r| r.model_s.unwrap_or(0.0) * r.images).sum();
        out.push(format!("cost_{name}_row_model_whole_experiment_hours: {:.2} h", m / 3600.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD: &str = "version: 1
name: c
seeds: [4, 5, 6]
problem: { kind: sd15, path: /nowhere, random_weights: false, latent_size: 8, eval_rewards: [{ kind: pickscore }] }
reward: { kind: brightness }
alpha: 0.1
steps: 2
grid: sd15
groups: 40
methods:
  - { method: das, particles: 2 }
  - { method: dps, groups: 7 }
";

    fn opts(methods: &[&str]) -> CostOptions {
        CostOptions {
            prompts: 2,
            methods: methods.iter().map(|s| s.to_string()).collect(),
            tiny: true,
            row_seconds: None,
        }
    }

    #[test]
    fn rewrites_the_experiment_into_its_cost_run() {
        let cp = cost_plan(SD, Path::new("c.yaml"), &opts(&[])).unwrap();
        assert_eq!((cp.groups, cp.seeds, cp.plan.cells.len()), (40, 3, 2));
        for c in &cp.plan.cells {
            assert_eq!((c.spec.groups, c.spec.seed), (2, 4));
        }
        let v = cp.plan.cells[0].value.to_string();
        assert!(v.contains("\"random_weights\":\"tiny\"") && !v.contains("pickscore") && !v.contains("nowhere"), "{v}");
        assert_eq!(labels(&cp.plan), ["das", "dps"]);
        let two = SD.replace("{ method: dps, groups: 7 }", "{ method: das, particles: 4 }");
        let l = labels(&cost_plan(&two, Path::new("c.yaml"), &opts(&[])).unwrap().plan);
        assert!(l[0] != l[1] && l.iter().all(|x| x.starts_with("das ") && x.contains('2') != x.contains('4')), "{l:?}");
        let only = cost_plan(SD, Path::new("c.yaml"), &opts(&["dps"])).unwrap();
        assert_eq!(only.plan.cells.len(), 1);
        let e = cost_plan(SD, Path::new("c.yaml"), &opts(&["tds"])).unwrap_err().to_string();
        assert!(e.contains("--methods") && e.contains("das, dps"), "{e}");
        let toy =
            "version: 1\nname: t\nproblem: { kind: gmm, preset: gmm1 }\nreward: { kind: quadratic }\nmethods: []\n";
        let e = cost_plan(toy, Path::new("t.yaml"), &opts(&[])).unwrap_err().to_string();
        assert!(e.contains("sd15") && e.contains("gmm"), "{e}");
        let e = cost_plan(SD, Path::new("c.yaml"), &CostOptions { prompts: 0, ..opts(&[]) }).unwrap_err();
        assert!(e.to_string().contains("--prompts"), "{e}");
    }

    #[test]
    fn row_seconds_parse_and_price_the_ledger() {
        assert_eq!(parse_row_seconds("1, 2,3,0.5").unwrap(), [1.0, 2.0, 3.0, 0.5]);
        for bad in ["1,2,3", "a,b,c,d", "1,2,3,-1", "1,2,3,inf"] {
            assert!(parse_row_seconds(bad).unwrap_err().to_string().contains("--row-seconds"), "{bad}");
        }
        let row = CostRow {
            label: "das particles=4".into(),
            s_per_image: 2.0,
            nfe: 8.0,
            vjp_denoiser: 4.0,
            vjp_reward: 0.0,
            reward_calls: 4.0,
            peak_mem_gb: Some(1.5),
            images: 3600.0,
            model_s: Some(1.0),
        };
        let lines = cost_lines("c", &[row]);
        assert!(lines.contains(&"cost_c_das_particles_4_s_per_image: 2.0000 s".to_string()), "{lines:?}");
        assert!(lines.contains(&"cost_c_whole_experiment_hours: 2.00 h".to_string()), "{lines:?}");
        assert!(lines.contains(&"cost_c_row_model_whole_experiment_hours: 1.00 h".to_string()), "{lines:?}");
        // DPS, 100 steps with CFG: 100 guided steps (their 200 forward rows inside) and one final reward.
        let s = [0.01, 0.1, 0.05, 0.02];
        let dps = Cost { nfe: 200.0, vjp_denoiser: 100.0, vjp_reward: 0.0, reward_calls: 101.0 };
        assert!((row_model_seconds(&dps, 2.0, s) - (100.0 * 0.1 + 0.02)).abs() < 1e-12);
        // DDIM: 200 UNet rows and one reward; a reward-only VJP step (MPGD-like) prices its decoder once.
        let ddim = Cost { nfe: 200.0, vjp_denoiser: 0.0, vjp_reward: 0.0, reward_calls: 1.0 };
        assert!((row_model_seconds(&ddim, 2.0, s) - (200.0 * 0.01 + 0.02)).abs() < 1e-12);
        let mpgd = Cost { nfe: 200.0, vjp_denoiser: 0.0, vjp_reward: 40.0, reward_calls: 41.0 };
        assert!((row_model_seconds(&mpgd, 2.0, s) - (2.0 + 40.0 * 0.05 + 0.02)).abs() < 1e-12);
    }
}
