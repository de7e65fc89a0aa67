//! Same numbers: the smoke experiments give the recorded tidy tables (tests/golden/same-numbers/smoke/) byte for
//! byte, except the measured times (`wall_s`, `train_s` rows). A refactor must keep them; a deliberate change is
//! re-recorded with `scripts/same-numbers.sh --record` (which also covers `reproduce --quick`: `make same-numbers`).

use std::path::Path;

mod common;
use common::bin;

fn strip_times(text: &str) -> String {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header.split(',').position(|c| c == "metric");
    let mut out = format!("{header}\n");
    for l in lines {
        let metric = col.and_then(|c| l.split(',').nth(c));
        if !matches!(metric, Some("wall_s" | "train_s")) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn smoke_experiments_give_the_recorded_tables() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/same-numbers/smoke");
    // The recorded mini tables include KID, which needs the Fashion-MNIST test images.
    if let Err(e) = alignbench::problems::mini::data::locate(None) {
        alignbench::testing::missing(format!("Fashion-MNIST ({e})"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for name in ["toy", "methods", "mini"] {
        let o = bin()
            .args(["run", &format!("experiments/smoke/{name}.yaml"), "--quiet", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
    }
    for exp in std::fs::read_dir(&golden).unwrap() {
        let exp = exp.unwrap().path();
        let name = exp.file_name().unwrap().to_string_lossy().to_string();
        for table in ["metrics.csv", "prompts.csv"] {
            let reference = exp.join(table);
            if !reference.exists() {
                continue;
            }
            let got = std::fs::read_to_string(dir.path().join(&name).join(table))
                .unwrap_or_else(|e| panic!("{name}/{table} was not written: {e}"));
            let want = std::fs::read_to_string(&reference).unwrap();
            if strip_times(&got) != want {
                let first = strip_times(&got).lines().zip(want.lines()).position(|(a, b)| a != b);
                panic!(
                    "{name}/{table} differs from the recorded copy (first differing line {first:?}); if the change is \
                     deliberate, re-record with `scripts/same-numbers.sh --record` and say why in the commit"
                );
            }
            compared += 1;
        }
    }
    assert!(compared >= 4, "only {compared} tables compared");
}
