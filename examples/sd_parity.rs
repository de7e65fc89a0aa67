//! CPU-vs-GPU parity of one f32 guided Stable Diffusion step on seeded random weights (the same values on both
//! devices): ε̂ with CFG, the VJP through the UNet and the decoded image, on the tiny test model and on the full-size
//! SD 1.5 UNet + VAE (`size`² images; the architecture, not the image size, is what "full" means here).
//! `cargo run --release --features cuda --example sd_parity -- [device] [size] [batch]` (defaults `cuda:0 64 2`).
//! Prints `name: value unit` lines; exits 1 when a relative difference exceeds 1e-4 (f32 with different reduction
//! orders agrees to ≈ 1e-5).

use alignbench::problems::sd15::bench::{sd_parity, SdScale};
use alignbench::problems::sd15::parse_device;

fn run() -> alignbench::Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let bad = |what: &str| alignbench::Error::config(format!("{what}: expected [device] [size] [batch]"));
    let device = parse_device(&arg(0, "cuda:0"))?;
    let size: usize = arg(1, "64").parse().map_err(|_| bad("size"))?;
    let batch: usize = arg(2, "2").parse().map_err(|_| bad("batch"))?;
    let mut ok = true;
    for (name, scale) in [("tiny", SdScale::Tiny), ("full", SdScale::Full)] {
        let [e, v, i] = sd_parity(&device, scale, size, batch)?;
        println!("sd15_parity_{name}_eps_rel: {e:.2e} rel");
        println!("sd15_parity_{name}_unet_vjp_rel: {v:.2e} rel");
        println!("sd15_parity_{name}_decode_rel: {i:.2e} rel");
        ok &= e < 1e-4 && v < 1e-4 && i < 1e-4;
    }
    Ok(ok)
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("parity: a CPU-vs-GPU difference above 1e-4");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::exit(1);
        }
    }
}
