//! Unknown keys of an experiment file, all at once and at their real paths (`bogus_key` at the top level,
//! `methods[2].partcles`, `problem.presett`), each with the fix: the nearest known key, or the list of known keys.
//!
//! A key is known when the typed configuration keeps it: the given mapping is compared with the serialisation of
//! what it parsed into (every field of the spec types serialises under the name it is read by), recursively
//! through nested mappings and lists.

use serde_json::{Map, Value};

/// One unknown key: its path in the file and the keys that were expected there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    /// Path of the key (`methods[2].partcles`).
    pub path: String,
    /// The key itself.
    pub key: String,
    /// The keys known at that place.
    pub known: Vec<String>,
}

impl Unknown {
    /// One line: the path, the key and the fix.
    pub fn line(&self) -> String {
        let fix = match nearest(&self.key, &self.known) {
            Some(k) => format!("did you mean `{k}`?"),
            None if self.known.is_empty() => "remove it".to_string(),
            None => format!("known keys here: {}", self.known.join(", ")),
        };
        format!("{}: unknown field `{}`; {fix}", self.path, self.key)
    }
}

/// Join a path and a key (`""` + `a` = `a`, `p` + `a` = `p.a`).
pub fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// Keys of `given` missing from `parsed` (its typed round trip), under the path `at`, appended to `out`.
pub fn diff(given: &Value, parsed: &Value, at: &str, out: &mut Vec<Unknown>) {
    match (given, parsed) {
        (Value::Object(g), Value::Object(p)) => {
            for (k, v) in g {
                match p.get(k) {
                    Some(pv) => diff(v, pv, &join(at, k), out),
                    None => out.push(Unknown { path: join(at, k), key: k.clone(), known: keys(p) }),
                }
            }
        }
        (Value::Array(g), Value::Array(p)) if g.len() == p.len() => {
            for (i, (a, b)) in g.iter().zip(p).enumerate() {
                diff(a, b, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Keys of `given` (a mapping) that are not in `known`, under the path `at`.
pub fn against(given: &Map<String, Value>, known: &[&str], at: &str, out: &mut Vec<Unknown>) {
    for k in given.keys() {
        if !known.contains(&k.as_str()) {
            out.push(Unknown {
                path: join(at, k),
                key: k.clone(),
                known: known.iter().map(|s| s.to_string()).collect(),
            });
        }
    }
}

fn keys(m: &Map<String, Value>) -> Vec<String> {
    m.keys().cloned().collect()
}

/// The known key closest to `key` by edit distance, if it is close (at most a third of the key's length, at least
/// one edit).
pub fn nearest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (distance(key, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Edit distance with adjacent transpositions (optimal string alignment): `alpah` is one edit from `alpha`.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for j in 0..=b.len() {
        d[0][j] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The error listing every unknown key, one per line, or `None` when there is none.
pub fn report(mut unknown: Vec<Unknown>) -> Option<String> {
    if unknown.is_empty() {
        return None;
    }
    unknown.dedup_by(|a, b| a.path == b.path);
    let lines: Vec<String> = unknown.iter().map(|u| format!("  {}", u.line())).collect();
    Some(format!(
        "{} unknown key{} — remove or correct {} (see the YAML reference in README.md):\n{}",
        unknown.len(),
        if unknown.len() == 1 { "" } else { "s" },
        if unknown.len() == 1 { "it" } else { "them" },
        lines.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_finds_every_unknown_key_with_its_path() {
        let given = json!({ "a": 1, "bogus": 2, "inner": { "from": 0.1, "too": 0.2 }, "list": [{ "x": 1, "y": 2 }] });
        let parsed = json!({ "a": 1, "b": null, "inner": { "from": 0.1, "to": 1.0 }, "list": [{ "x": 1 }] });
        let mut out = vec![];
        diff(&given, &parsed, "methods[2]", &mut out);
        let paths: Vec<&str> = out.iter().map(|u| u.path.as_str()).collect();
        assert_eq!(paths, ["methods[2].bogus", "methods[2].inner.too", "methods[2].list[0].y"]);
        assert_eq!(out[1].line(), "methods[2].inner.too: unknown field `too`; did you mean `to`?");
        assert!(out[0].line().contains("known keys here: a, b, inner, list"), "{}", out[0].line());
    }

    #[test]
    fn nearest_key_only_when_close() {
        let known: Vec<String> = ["particles", "alpha", "steps"].iter().map(|s| s.to_string()).collect();
        assert_eq!(nearest("partcles", &known), Some("particles"));
        assert_eq!(nearest("alpah", &known), Some("alpha"));
        assert_eq!(nearest("bogus_key", &known), None);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("alpah", "alpha"), 1);
    }

    #[test]
    fn report_counts_and_lists() {
        let u = |p: &str| Unknown { path: p.into(), key: p.rsplit('.').next().unwrap().into(), known: vec![] };
        let r = report(vec![u("bogus_key"), u("methods[0].x")]).unwrap();
        assert!(r.starts_with("2 unknown keys"), "{r}");
        assert!(r.contains("\n  bogus_key: unknown field `bogus_key`; remove it"), "{r}");
        assert!(report(vec![]).is_none());
    }
}
