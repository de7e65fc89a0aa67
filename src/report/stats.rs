//! Summaries over seeds with polars (mean, std, n, 95% Student-t interval) and paired differences between methods
//! that share seeds (common random numbers make the paired difference the low-variance comparison).

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::{Error, Result};

/// Columns of a tidy frame that are not parameters.
pub const NON_PARAMS: [&str; 6] = ["experiment", "cell", "method", "seed", "metric", "value"];

/// Two-sided 97.5% quantile of Student's t with `dof` degrees of freedom (NaN for dof = 0).
pub fn t975(dof: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match dof {
        0 => f64::NAN,
        1..=30 => T[dof - 1],
        31..=60 => 2.021 - (dof as f64 - 40.0) * 0.0005,
        _ => 1.96,
    }
}

/// Half-width of the 95% interval of a mean of `n` values with sample std `std`.
pub fn ci_half(std: f64, n: usize) -> f64 {
    if n < 2 {
        return f64::NAN;
    }
    t975(n - 1) * std / (n as f64).sqrt()
}

/// One summarised (method, parameters, metric) over seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct Stat {
    /// Experiment name.
    pub experiment: String,
    /// Method tag.
    pub method: String,
    /// Parameter column → value.
    pub params: BTreeMap<String, String>,
    /// Metric name.
    pub metric: String,
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (NaN for one seed).
    pub std: f64,
    /// Number of seeds.
    pub n: usize,
}

impl Stat {
    /// Half-width of the 95% interval.
    pub fn ci(&self) -> f64 {
        ci_half(self.std, self.n)
    }
    /// A parameter's value ("" when absent).
    pub fn p(&self, k: &str) -> &str {
        self.params.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Parameter columns of a tidy frame (everything between `seed` and `metric`).
pub fn param_columns(df: &DataFrame) -> Vec<String> {
    df.get_column_names().iter().map(|s| s.to_string()).filter(|c| !NON_PARAMS.contains(&c.as_str())).collect()
}

fn perr(e: PolarsError) -> Error {
    Error::report(format!("polars: {e}"))
}

/// A column as strings (nulls as "").
pub fn strings(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name).map_err(perr)?.cast(&DataType::String).map_err(perr)?;
    let ca = c.str().map_err(perr)?;
    Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or("").to_string()).collect())
}

/// A column as numbers (nulls as NaN).
pub fn floats(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = df.column(name).map_err(perr)?.cast(&DataType::Float64).map_err(perr)?;
    let ca = c.f64().map_err(perr)?;
    Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or(f64::NAN)).collect())
}

/// Mean, std and n over seeds per (experiment, method, parameters, metric), in first-appearance order.
pub fn summarise(df: &DataFrame) -> Result<Vec<Stat>> {
    let params = param_columns(df);
    let mut keys = vec![col("experiment"), col("method")];
    keys.extend(params.iter().map(|p| col(p.as_str()).cast(DataType::String)));
    keys.push(col("metric"));
    let out = df
        .clone()
        .lazy()
        .group_by_stable(keys)
        .agg([
            col("value").mean().alias("mean"),
            col("value").std(1).alias("std"),
            col("value").count().cast(DataType::Float64).alias("n"),
        ])
        .collect()
        .map_err(perr)?;
    let exp = strings(&out, "experiment")?;
    let method = strings(&out, "method")?;
    let metric = strings(&out, "metric")?;
    let pv: Vec<Vec<String>> = params.iter().map(|p| strings(&out, p)).collect::<Result<_>>()?;
    let (mean, std, n) = (floats(&out, "mean")?, floats(&out, "std")?, floats(&out, "n")?);
    Ok((0..out.height())
        .map(|i| Stat {
            experiment: exp[i].clone(),
            method: method[i].clone(),
            params: params.iter().zip(&pv).map(|(k, v)| (k.clone(), v[i].clone())).collect(),
            metric: metric[i].clone(),
            mean: mean[i],
            std: if n[i] < 2.0 { f64::NAN } else { std[i] },
            n: n[i] as usize,
        })
        .collect())
}

/// A paired difference `method − baseline` over the seeds both have, at equal other parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Paired {
    /// Experiment.
    pub experiment: String,
    /// Baseline label (method and its distinguishing parameters).
    pub baseline: String,
    /// Compared label.
    pub other: String,
    /// Shared parameters (`k=v`, comma separated).
    pub shared: String,
    /// Metric.
    pub metric: String,
    /// Mean difference.
    pub mean: f64,
    /// Std of the differences.
    pub std: f64,
    /// Shared seeds.
    pub n: usize,
}

/// Raw per-seed values: (method, params) → metric → seed → value.
type Raw = BTreeMap<(String, BTreeMap<String, String>), BTreeMap<String, BTreeMap<u64, f64>>>;

/// Paired differences against `baseline_method` for `metrics`. Parameters in `group_by` must agree between the
/// pair (e.g. problem, denoiser, alpha); the remaining parameters distinguish variants and appear in the labels.
pub fn paired(df: &DataFrame, baseline_method: &str, metrics: &[&str], group_by: &[&str]) -> Result<Vec<Paired>> {
    let params = param_columns(df);
    let method = strings(df, "method")?;
    let metric = strings(df, "metric")?;
    let seed = floats(df, "seed")?;
    let value = floats(df, "value")?;
    let exp = strings(df, "experiment")?;
    let pv: Vec<Vec<String>> = params.iter().map(|p| strings(df, p)).collect::<Result<_>>()?;
    let mut raw: Raw = BTreeMap::new();
    for i in 0..df.height() {
        if !metrics.contains(&metric[i].as_str()) {
            continue;
        }
        let p: BTreeMap<String, String> = params.iter().zip(&pv).map(|(k, v)| (k.clone(), v[i].clone())).collect();
        raw.entry((method[i].clone(), p))
            .or_default()
            .entry(metric[i].clone())
            .or_default()
            .insert(seed[i] as u64, value[i]);
    }
    let label = |m: &str, p: &BTreeMap<String, String>| {
        let extra: Vec<String> = p
            .iter()
            .filter(|(k, v)| !group_by.contains(&k.as_str()) && !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if extra.is_empty() {
            m.to_string()
        } else {
            format!("{m} ({})", extra.join(", "))
        }
    };
    let shared = |p: &BTreeMap<String, String>| {
        p.iter()
            .filter(|(k, _)| group_by.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let experiment = exp.first().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for ((bm, bp), bvals) in raw.iter().filter(|((m, _), _)| m == baseline_method) {
        for ((om, op), ovals) in raw.iter().filter(|((m, p), _)| m != baseline_method || p != bp) {
            if group_by.iter().any(|k| bp.get(*k) != op.get(*k)) {
                continue;
            }
            for mname in metrics {
                let (Some(b), Some(o)) = (bvals.get(*mname), ovals.get(*mname)) else { continue };
                let d: Vec<f64> = b.iter().filter_map(|(s, bv)| o.get(s).map(|ov| ov - bv)).collect();
                if d.is_empty() {
                    continue;
                }
                let n = d.len();
                let mean = d.iter().sum::<f64>() / n as f64;
                let std = if n > 1 {
                    (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
                } else {
                    f64::NAN
                };
                out.push(Paired {
                    experiment: experiment.clone(),
                    baseline: label(bm, bp),
                    other: label(om, op),
                    shared: shared(bp),
                    metric: mname.to_string(),
                    mean,
                    std,
                    n,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> DataFrame {
        // Two methods × 3 seeds, one parameter.
        let rows = [
            ("das", 0u64, "gmm1", 1.0),
            ("das", 1, "gmm1", 2.0),
            ("das", 2, "gmm1", 3.0),
            ("ddim", 0, "gmm1", 2.0),
            ("ddim", 1, "gmm1", 4.0),
            ("ddim", 2, "gmm1", 6.5),
        ];
        df!(
            "experiment" => rows.iter().map(|_| "e").collect::<Vec<_>>(),
            "cell" => rows.iter().map(|r| format!("{}{}", r.0, r.1)).collect::<Vec<_>>(),
            "method" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "seed" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "problem" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            "metric" => rows.iter().map(|_| "emd").collect::<Vec<_>>(),
            "value" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn summary_over_seeds() {
        let s = summarise(&frame()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].method.as_str(), s[0].n), ("das", 3));
        assert!((s[0].mean - 2.0).abs() < 1e-12 && (s[0].std - 1.0).abs() < 1e-12);
        assert!((s[0].ci() - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(s[1].p("problem"), "gmm1");
        assert!((s[1].mean - 12.5 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn paired_differences_use_shared_seeds() {
        let p = paired(&frame(), "das", &["emd"], &["problem"]).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].baseline.as_str(), p[0].other.as_str(), p[0].n), ("das", "ddim", 3));
        // Differences 1, 2, 3.5.
        assert!((p[0].mean - 6.5 / 3.0).abs() < 1e-12);
        assert_eq!(p[0].shared, "problem=gmm1");
    }

    #[test]
    fn t_quantiles() {
        assert!(t975(0).is_nan());
        assert_eq!(t975(2), 4.303);
        assert!((t975(1000) - 1.96).abs() < 1e-12);
        assert!(ci_half(1.0, 1).is_nan());
    }
}
