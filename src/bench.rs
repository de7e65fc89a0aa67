//! `alignbench bench toy`: the reference's toy DAS workload — 1000 groups × 100 particles × 100 steps with
//! gradients — timed on one thread and on all threads, with the learned MLP and the analytic denoiser, plus the
//! exact-EMD solver at n = 1000. Prints one `name: value unit` line per figure.

use std::path::Path;
use std::time::Instant;

use alignbench::experiment::plan::plan_str;
use alignbench::experiment::runner::run_cell;
use alignbench::metrics::emd::emd;
use alignbench::rng::{Purpose, Streams};
use alignbench::{Error, Result};

fn workload(denoiser: &str, groups: usize) -> String {
    format!(
        "version: 1\nname: bench-toy\nseed: 42\nproblem: {{ kind: gmm, preset: gmm1 }}\nreward: {{ kind: quadratic, preset: gmm1 }}\n\
         alpha: 1.0\nsteps: 100\neta: 1.0\ngroups: {groups}\ndenoiser: {denoiser}\n\
         methods:\n  - method: das\n    particles: 100\n    n_out: 10\n    gamma: 0.008\n"
    )
}

/// Run the toy benchmark.
pub fn toy(groups: usize) -> Result<()> {
    let all = rayon::current_num_threads();
    for den in ["mlp", "analytic"] {
        let plan = plan_str(&workload(den, groups), Path::new("<bench>"))?;
        let cell = &plan.cells[0];
        let particle_steps = (groups * 100 * 100) as f64;
        for (label, threads) in [("1thread", 1usize), ("allthreads", all)] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| Error::config(e.to_string()))?;
            let t0 = Instant::now();
            let r = pool.install(|| run_cell(cell, &|_| {}))?;
            let total = t0.elapsed().as_secs_f64();
            let sampling = total - r.ledger.metrics_s;
            println!("das_toy_{den}_{label}: {sampling:.2} s");
            println!("das_toy_{den}_{label}_particle_steps: {:.3e} particle-steps/s", particle_steps / sampling);
            if threads == 1 {
                println!("das_toy_{den}_threads_all: {all} threads");
                println!("das_toy_{den}_emd: {:.4} (floor {:.4})", r.metrics["emd"], r.metrics["emd_floor"]);
                println!(
                    "das_toy_{den}_reward_mean: {:.4} (exact E_tar[r] {:.4})",
                    r.metrics["reward_mean"], r.metrics["reward_target"]
                );
            }
        }
    }
    let s = Streams::new(1);
    let mut a = vec![0f32; 2000];
    let mut b = vec![0f32; 2000];
    s.normals(Purpose::Metric, 0, 0, &mut a);
    s.normals(Purpose::Metric, 1, 0, &mut b);
    let mut times = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        std::hint::black_box(emd(&a, &b, 2)?);
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(|x, y| x.total_cmp(y));
    println!("emd_exact_n1000_median: {:.3} s", times[1]);
    Ok(())
}
