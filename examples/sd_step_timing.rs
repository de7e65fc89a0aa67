//! Time one guided Stable Diffusion 1.5 step (UNet forward + VJP with CFG, VAE decode + VJP) on a full-size
//! random-weight model: `cargo run --release --example sd_step_timing -- [device] [image_size] [batch] [dtype]
//! [reps]`, e.g. `-- cuda:0 512 2 f16 7` (build with `make cuda` for a GPU). Defaults: `cpu 256 1 f32 1`.
//! The first step of the process is reported apart; the step figures are medians of the `reps − 1` warm steps.
//! Prints one `name: value unit` line per figure and the JSON record.

use alignbench::problems::sd15::{parse_device, sd_step_timing};
use candle_core::DType;

fn run() -> alignbench::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let device = parse_device(&arg(0, "cpu"))?;
    let bad = |what: &str| {
        alignbench::Error::config(format!("{what}: expected [device] [image_size] [batch] [dtype] [reps]"))
    };
    let size: usize = arg(1, "256").parse().map_err(|_| bad("image_size"))?;
    let batch: usize = arg(2, "1").parse().map_err(|_| bad("batch"))?;
    let dtype = match arg(3, "f32").as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => return Err(bad("dtype (f32, f16, bf16)")),
    };
    let reps: usize = arg(4, "1").parse().map_err(|_| bad("reps"))?;
    let t = sd_step_timing(&device, dtype, size, batch, 5.0, 1, reps)?;
    println!("sd15_build_random_weights: {:.2} s", t.build_s);
    println!("sd15_first_step: {:.2} s", t.first_step_s);
    println!("sd15_unet_fwd_vjp_cfg: {:.2} s", t.unet_fwd_vjp_s);
    println!("sd15_vae_decode_vjp: {:.2} s", t.vae_decode_vjp_s);
    println!("sd15_guided_step: {:.2} s", t.step_s);
    match t.peak_memory_bytes {
        Some(b) => println!("sd15_peak_memory: {:.2} GiB", b as f64 / (1u64 << 30) as f64),
        None => println!("sd15_peak_memory: not measurable on this device"),
    }
    println!("{}", serde_json::to_string(&t).expect("json"));
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
