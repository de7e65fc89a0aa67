//! The reference table (criterion's model: tables are built from the analysis): each value of `baselines/*.yaml`
//! (published and re-run reference numbers, with provenance and trust level) against the matching configuration of
//! the stored toy experiments, the difference and whether it lies within the tolerance.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::report::analysis::Exp;
use crate::report::stats::Stat;
use crate::report::table::Table;
use crate::{Error, Result};

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

/// Our numbers against `baselines/*.yaml` (none when no toy experiment ran — nothing could match — or no
/// reference file is there).
pub fn table(exps: &[Exp], dir: &Path) -> Result<Option<Table>> {
    let toys: Vec<&Exp> = exps.iter().filter(|e| e.name.starts_with("toy-")).collect();
    if toys.is_empty() {
        return Ok(None);
    }
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
            for e in toys.iter().copied() {
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
