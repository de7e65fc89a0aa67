//! ONNX black-box rewards (issue #7): a small ONNX scorer written by `scripts/make_onnx_scorer.py` (the `onnx`
//! package in `.venv`) is the gmm1 quadratic reward; best-of-N and FK steering run with it through ONNX Runtime
//! and agree with the native quadratic under common random numbers; a gradient method with it is refused at plan
//! time naming both. Skips with a message when ONNX Runtime or the `onnx` package is absent (`.ci/run` installs both).

use std::path::{Path, PathBuf};
use std::process::Command;

use alignbench::experiment::plan::plan_str;
use alignbench::experiment::runner::run_cell;

fn setup() -> Option<(tempfile::TempDir, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        match alignbench::rewards::onnx::venv_runtime(root) {
            // Single-threaded use of the environment in this test binary's set-up.
            Some(p) => std::env::set_var("ORT_DYLIB_PATH", p),
            None => {
                alignbench::testing::missing(
                    "ONNX Runtime not found (set ORT_DYLIB_PATH, or run .ci/run to create .venv)",
                );
                return None;
            }
        }
    }
    let py = root.join(".venv/bin/python");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("quadratic.onnx");
    let out = Command::new(&py)
        .arg(root.join("scripts/make_onnx_scorer.py"))
        .arg(&model)
        .args(["--a", "0.02", "2.0", "--b", "0", "0", "--c", "0"])
        .output();
    match out {
        Ok(o) if o.status.success() => Some((dir, model)),
        Ok(o) => {
            alignbench::testing::missing(format!(
                "the `onnx` Python package is missing: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
            None
        }
        Err(e) => {
            alignbench::testing::missing(format!("{} not runnable ({e}); run .ci/run to create .venv", py.display()));
            None
        }
    }
}

fn yaml(reward: &str, method: &str) -> String {
    format!(
        "version: 1\nname: onnx-test\nproblem: {{ kind: gmm, preset: gmm1 }}\nreward: {reward}\nsteps: 20\ngroups: 8\n\
         alpha: 1.0\nmethods:\n  - {method}\n"
    )
}

#[test]
fn best_of_n_and_fk_with_an_onnx_reward_match_the_native_quadratic() {
    let Some((_dir, model)) = setup() else { return };
    let onnx = format!("{{ kind: onnx, path: '{}', scale: 'gmm1 quadratic via ONNX' }}", model.display());
    let native = "{ kind: quadratic, preset: gmm1 }";
    for method in ["{ method: best_of_n, particles: 16 }", "{ method: fk, particles: 8, potential: max }"] {
        let run = |reward: &str| {
            let plan = plan_str(&yaml(reward, method), Path::new("<test>")).unwrap();
            assert_eq!(plan.cells.len(), 1);
            run_cell(&plan.cells[0], &|_| {}).unwrap()
        };
        let (a, b) = (run(&onnx), run(native));
        let (ra, rb) = (a.metrics["reward_mean"], b.metrics["reward_mean"]);
        assert!((ra - rb).abs() < 1e-4 * (1.0 + rb.abs()), "{method}: onnx {ra} vs native {rb}");
        assert_eq!(a.ledger.reward_calls, b.ledger.reward_calls, "{method}: same reward calls");
        // Without a closed-form tilt, the ONNX run reports no target metrics; the native one does.
        assert!(!a.metrics.contains_key("emd") && b.metrics.contains_key("emd"));
        let max_diff = a.samples.x.iter().zip(&b.samples.x).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(max_diff < 1e-3, "{method}: samples differ by {max_diff}");
    }
}

#[test]
fn gradient_methods_are_refused_with_an_onnx_reward() {
    let Some((_dir, model)) = setup() else { return };
    let onnx = format!("{{ kind: onnx, path: '{}' }}", model.display());
    for method in ["{ method: dps }", "{ method: das, particles: 4 }"] {
        let e = match plan_str(&yaml(&onnx, method), Path::new("<test>")) {
            Ok(_) => panic!("{method} with an onnx reward must be refused"),
            Err(e) => e.to_string(),
        };
        let name = if method.contains("dps") { "dps" } else { "das" };
        assert!(e.contains(&format!("`{name}`")) && e.contains("`onnx`") && e.contains("black-box"), "{e}");
    }
    // A wrong pinned checksum is refused, naming the file.
    let bad = format!("{{ kind: onnx, path: '{}', sha256: '00' }}", model.display());
    let e =
        plan_str(&yaml(&bad, "{ method: best_of_n, particles: 2 }"), Path::new("<test>")).err().unwrap().to_string();
    assert!(e.contains("quadratic.onnx") && e.contains("expected 00"), "{e}");
}

#[test]
fn missing_model_file_is_one_clear_error() {
    let e = plan_str(
        &yaml("{ kind: onnx, path: /nonexistent/model.onnx }", "{ method: best_of_n, particles: 2 }"),
        Path::new("<t>"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("/nonexistent/model.onnx") && e.contains("not found"), "{e}");
}

#[test]
fn image_rewards_are_refused_on_the_toy() {
    let e = plan_str(&yaml("{ kind: aesthetic }", "{ method: best_of_n, particles: 2 }"), Path::new("<t>"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`aesthetic` scores images") && e.contains("quadratic"), "{e}");
}
