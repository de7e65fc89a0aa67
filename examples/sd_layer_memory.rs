//! Peak memory and time of one forward + VJP of a Stable Diffusion layer at full size, with the issue-16 backward
//! pass (`new`) or candle's autograd of the plain formula (`plain`, before):
//!
//! - `attention`: the UNet's self-attention at 512² — 2 rows for CFG × `batch` particles, 8 heads of 40,
//!   `size` = 4096 tokens (1024 at 256²);
//! - `groupnorm`: a VAE-decoder group norm (32 groups of 128 channels) on `batch` images of `size`² pixels;
//! - `conv`: a VAE-decoder 3 × 3 convolution, 128 → 128 channels, on `batch` images of `size`² pixels;
//! - `layernorm`: a layer norm of the UNet's transformer blocks at 512² — 2 × `batch` rows, `size` = 4096 tokens of
//!   320 channels (the reward towers' layer norms take the same path).
//!
//! `cargo run --release --example sd_layer_memory -- [attention|groupnorm|conv|layernorm] [new|plain] [size] [batch]
//! [device]`.
//! Run each mode in its own process: the CPU peak is the process's peak resident set (`VmHWM`).
//! Prints `name: value unit` lines.

use std::collections::HashMap;
use std::time::Instant;

use alignbench::nn::testing::random_tensor;
use alignbench::problems::sd15::attention::{attention, attention_autograd};
use alignbench::problems::sd15::layers::{Conv2d, GroupNorm, LayerNorm};
use alignbench::problems::sd15::{parse_device, peak_memory_bytes};
use candle_core::{DType, Var};
use candle_nn::VarBuilder;

fn run() -> alignbench::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let bad = |what: &str| {
        alignbench::Error::config(format!(
            "{what}: expected [attention|groupnorm|conv|layernorm] [new|plain] [size] [batch] [device]"
        ))
    };
    let (layer, mode) = (arg(0, "attention"), arg(1, "new"));
    let tokens = layer == "attention" || layer == "layernorm";
    let size: usize = arg(2, if tokens { "4096" } else { "512" }).parse().map_err(|_| bad("size"))?;
    let batch: usize = arg(3, "1").parse().map_err(|_| bad("batch"))?;
    let device = parse_device(&arg(4, "cpu"))?;
    let plain = match mode.as_str() {
        "new" => false,
        "plain" => true,
        _ => return Err(bad("mode")),
    };
    let dims: Vec<usize> = match layer.as_str() {
        "attention" | "layernorm" => vec![2 * batch, size, 320],
        "groupnorm" | "conv" => vec![batch, 128, size, size],
        _ => return Err(bad("layer")),
    };
    let x = random_tensor(&dims, 1, DType::F32, &device)?;
    let u = random_tensor(&dims, 2, DType::F32, &device)?;
    let mut w = HashMap::new();
    w.insert("weight".to_string(), (random_tensor(&[128], 3, DType::F32, &device)? + 1.0)?);
    w.insert("bias".to_string(), random_tensor(&[128], 4, DType::F32, &device)?);
    let gn = GroupNorm::load(VarBuilder::from_tensors(w, DType::F32, &device), 32, 128, 1e-6)?;
    let kernel = (random_tensor(&[128, 128, 3, 3], 5, DType::F32, &device)? * 0.03)?;
    let mut c = HashMap::new();
    c.insert("weight".to_string(), kernel.clone());
    c.insert("bias".to_string(), random_tensor(&[128], 6, DType::F32, &device)?);
    let conv = Conv2d::load(VarBuilder::from_tensors(c, DType::F32, &device), 128, 128, 3, 1, 1)?;
    let ln = LayerNorm::new(
        (random_tensor(&[320], 7, DType::F32, &device)? + 1.0)?,
        random_tensor(&[320], 8, DType::F32, &device)?,
        1e-5,
    );
    let t0 = Instant::now();
    let var = Var::from_tensor(&x)?;
    let xv = var.as_tensor();
    let y = match (layer.as_str(), plain) {
        ("attention", false) => attention(xv, xv, xv, 8)?,
        ("attention", true) => attention_autograd(xv, xv, xv, 8)?,
        ("groupnorm", false) => gn.forward(xv)?,
        ("groupnorm", true) => gn.forward_plain(xv)?,
        ("layernorm", false) => ln.forward(xv)?,
        ("layernorm", true) => ln.forward_plain(xv)?,
        (_, false) => conv.forward(xv)?,
        (_, true) => xv.conv2d(&kernel, 1, 1, 1, 1)?,
    };
    let g = (y * &u)?.sum_all()?.backward()?;
    let gx = g.get(xv).ok_or_else(|| alignbench::Error::numeric("sd_layer_memory", "no gradient"))?;
    let norm = gx.sqr()?.sum_all()?.to_scalar::<f32>()?;
    let s = t0.elapsed().as_secs_f64();
    let name = format!("{layer}_{mode}");
    println!("{name}_input: {dims:?} f32");
    println!("{name}_fwd_vjp: {s:.2} s");
    match peak_memory_bytes(&device) {
        Some(b) => println!("{name}_peak_memory: {:.2} GiB", b as f64 / (1u64 << 30) as f64),
        None => println!("{name}_peak_memory: not measurable on this device"),
    }
    println!("{name}_grad_norm2: {norm:.6e}");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
