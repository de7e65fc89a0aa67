//! The shape of the house, checked: imports between the crate's top-level modules point only downward
//! (`cli → experiment → problems → methods → finetune → samplers → metrics → rewards → models → nn/diffusion →
//! numerics`; `report` reads only the store), no two source files import each other through any chain (no import
//! circles), and no source file outside tests is over 600 lines.
//!
//! Imports are read from the text: `use` declarations (braces expanded) and inline `crate::`/`super::` paths,
//! outside comments and outside test code (`tests.rs` files and everything after a file's `#[cfg(test)]`). A path
//! resolves to the deepest module file it names (`crate::problems::toy::GmmSpec` → `src/problems/toy/mod.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom layer up; a module may import its own layer and the layers below.
const LAYERS: &[&[&str]] = &[
    &["error", "testing", "rng", "ledger", "numerics"],
    &["diffusion", "nn", "image"],
    &["models"],
    &["rewards"],
    &["metrics"],
    &["samplers"],
    &["finetune"],
    &["methods"],
    &["problems"],
    &["experiment"],
    &["report"],
    &["score", "bench", "cluster", "cost_cmd", "cli", "main", "lib"],
];

fn layer(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module path of a file (`src/problems/toy/mod.rs` → `[problems, toy]`, `src/lib.rs` → `[]`).
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().to_string()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib") {
        parts.push(stem.to_string());
    }
    parts
}

/// The non-test code of a file without comments and string literals.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let b: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '/' && i + 1 < b.len() && b[i + 1] == '/' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if b[i] == '/' && i + 1 < b.len() && b[i + 1] == '*' {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if b[i] == '\'' && i + 2 < b.len() && (b[i + 2] == '\'' || b[i + 1] == '\\') {
            // A char literal (a lifetime has no closing quote).
            i += if b[i + 1] == '\\' { 4 } else { 3 };
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Expand one `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    match tree.find('{') {
        None => vec![tree.split(" as ").next().unwrap().trim().to_string()],
        Some(open) => {
            let prefix = tree[..open].trim_end_matches("::").trim();
            let inner = &tree[open + 1..tree.rfind('}').unwrap()];
            let mut parts = Vec::new();
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        parts.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            parts.push(&inner[start..]);
            parts
                .into_iter()
                .filter(|p| !p.trim().is_empty())
                .flat_map(expand)
                .map(|p| if prefix.is_empty() { p } else { format!("{prefix}::{p}") })
                .collect()
        }
    }
}

/// Every crate-internal path a file's code names.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            rest = after;
            continue;
        }
        let Some(end) = after.find(';') else { break };
        let t = after[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        let t = t.replace(" ::", "::").replace(":: ", "::").replace("{ ", "{").replace(" }", "}").replace(", ", ",");
        out.extend(expand(&t));
        rest = &after[end..];
    }
    let bytes: Vec<char> = code.chars().collect();
    let s: String = bytes.iter().collect();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = s[from..].find(start) {
            let i = from + i;
            let prev = s[..i].chars().last();
            if !prev.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                let p: String = s[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                out.push(p.trim_end_matches(':').to_string());
            }
            from = i + start.len();
        }
    }
    out
}

/// The module file a path names from `module` (the deepest existing module), if it is crate-internal.
fn resolve(module: &[String], path: &str, files: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    let segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = match segs[0] {
        "crate" => vec![],
        "super" | "self" => {
            // `super` is the parent of the module (`foo.rs` and `foo/mod.rs` are both the module `foo`).
            let mut m = module.to_vec();
            let mut k = 0;
            while k < segs.len() && segs[k] == "super" {
                m.pop();
                k += 1;
            }
            let rest: Vec<String> = segs[k..].iter().filter(|s| **s != "self").map(|s| s.to_string()).collect();
            let mut full = m;
            full.extend(rest);
            return deepest(&full, files);
        }
        // A child module named without `self::` (`use config::*` in `train/mod.rs`).
        child if files.contains_key(&[module, &[child.to_string()]].concat()) => {
            let mut full = module.to_vec();
            full.extend(segs.iter().map(|s| s.to_string()));
            return deepest(&full, files);
        }
        _ => return None,
    };
    base.extend(segs[1..].iter().map(|s| s.to_string()));
    deepest(&base, files)
}

fn deepest(full: &[String], files: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (0..=full.len()).rev().map(|n| full[..n].to_vec()).find(|m| files.contains_key(m))
}

struct Graph {
    files: BTreeMap<Vec<String>, PathBuf>,
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn graph() -> Graph {
    let mut list = Vec::new();
    rust_files(&src(), &mut list);
    let files: BTreeMap<Vec<String>, PathBuf> = list
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|p| (module_of(p), p.clone()))
        .collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, f) in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let e = edges.entry(m.clone()).or_default();
        for p in paths(&code(&text)) {
            if let Some(t) = resolve(m, &p, &files) {
                if &t != m && !t.is_empty() {
                    e.insert(t);
                }
            }
        }
    }
    Graph { files, edges }
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[test]
fn imports_point_down_the_layers() {
    let g = graph();
    let mut bad = Vec::new();
    for (from, tos) in &g.edges {
        let Some(lf) = from.first().map(|t| layer(t).unwrap_or_else(|| panic!("{t}: add it to LAYERS"))) else {
            continue;
        };
        for to in tos {
            let lt = layer(&to[0]).unwrap_or_else(|| panic!("{}: add it to LAYERS", to[0]));
            // `report` reads only what runs stored: the store's module is the one thing of `experiment` it names.
            let store_read = from[0] == "report" && to.len() >= 2 && to[..2] == ["experiment", "store"];
            if lt > lf || (from[0] == "report" && to[0] == "experiment" && !store_read) {
                bad.push(format!("{} → {}", name(from), name(to)));
            }
        }
    }
    assert!(bad.is_empty(), "imports pointing up the layers:\n{}", bad.join("\n"));
}

#[derive(Default)]
struct Tarjan {
    index: Vec<usize>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan {
    fn visit(&mut self, v: usize, adj: &[Vec<usize>]) {
        if self.on_stack.len() < adj.len() {
            self.on_stack = vec![false; adj.len()];
        }
        self.index[v] = self.next;
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &adj[v] {
            if self.index[w] == usize::MAX {
                self.visit(w, adj);
                self.low[v] = self.low[v].min(self.low[w]);
            } else if self.on_stack[w] {
                self.low[v] = self.low[v].min(self.index[w]);
            }
        }
        if self.low[v] == self.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                self.components.push(comp);
            }
        }
    }
}

#[test]
fn no_import_circles() {
    let g = graph();
    // Tarjan's strongly connected components over the module files.
    let nodes: Vec<&Vec<String>> = g.files.keys().collect();
    let idx: BTreeMap<&Vec<String>, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let adj: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| g.edges.get(*n).map(|s| s.iter().filter_map(|t| idx.get(t).copied()).collect()).unwrap_or_default())
        .collect();
    let mut t = Tarjan { index: vec![usize::MAX; nodes.len()], low: vec![0; nodes.len()], ..Default::default() };
    for v in 0..nodes.len() {
        if t.index[v] == usize::MAX {
            t.visit(v, &adj);
        }
    }
    let cycles = t.components;
    let text: Vec<String> =
        cycles.iter().map(|c| c.iter().map(|&i| name(nodes[i])).collect::<Vec<_>>().join(" ↔ ")).collect();
    assert!(text.is_empty(), "import circles:\n{}", text.join("\n"));
}

#[test]
fn no_source_file_over_600_lines() {
    let mut list = Vec::new();
    rust_files(&src(), &mut list);
    let long: Vec<String> = list
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > 600).then(|| format!("{} ({n} lines)", p.strip_prefix(src()).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "files over 600 lines (split them): {long:?}");
}

#[test]
fn the_reader_expands_use_trees_and_resolves_paths() {
    assert_eq!(expand("a::{b, c::{d, e}}"), ["a::b", "a::c::d", "a::c::e"]);
    let code = code("use super::{x::Y, z};\n// crate::hidden\nfn f() { crate::a::b(); \"crate::no\"; }\n");
    let p = paths(&code);
    assert!(p.contains(&"super::x::Y".to_string()) && p.contains(&"crate::a::b".to_string()), "{p:?}");
    assert!(!p.iter().any(|x| x.contains("hidden") || x.contains("no")), "{p:?}");
}
