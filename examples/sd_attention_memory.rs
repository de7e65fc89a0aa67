//! Peak memory and time of one attention forward + VJP at a Stable Diffusion shape (2 rows for CFG × `batch`
//! particles, 8 heads of 40, `tokens` queries and keys: 4096 at 512², 1024 at 256²), memory-linear
//! (`blocked`, the UNet's attention) or candle's autograd of the plain formula (`plain`, before issue 16):
//! `cargo run --release --example sd_attention_memory -- [blocked|plain] [tokens] [batch] [device]`.
//! Run each mode in its own process: the CPU peak is the process's peak resident set (`VmHWM`).
//! Prints `name: value unit` lines.

use std::time::Instant;

use alignbench::nn::testing::random_tensor;
use alignbench::problems::sd15::attention::{attention, attention_autograd};
use alignbench::problems::sd15::device::peak_memory_bytes;
use alignbench::problems::sd15::parse_device;
use candle_core::{DType, Var};

fn run() -> alignbench::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let bad =
        |what: &str| alignbench::Error::config(format!("{what}: expected [blocked|plain] [tokens] [batch] [device]"));
    let mode = arg(0, "blocked");
    let tokens: usize = arg(1, "4096").parse().map_err(|_| bad("tokens"))?;
    let batch: usize = arg(2, "1").parse().map_err(|_| bad("batch"))?;
    let device = parse_device(&arg(3, "cpu"))?;
    let (rows, heads, width) = (2 * batch, 8, 320);
    let x = random_tensor(&[rows, tokens, width], 1, DType::F32, &device)?;
    let u = random_tensor(&[rows, tokens, width], 2, DType::F32, &device)?;
    let t0 = Instant::now();
    let var = Var::from_tensor(&x)?;
    let y = match mode.as_str() {
        "blocked" => attention(var.as_tensor(), var.as_tensor(), var.as_tensor(), heads)?,
        "plain" => attention_autograd(var.as_tensor(), var.as_tensor(), var.as_tensor(), heads)?,
        _ => return Err(bad("mode")),
    };
    let g = (y * &u)?.sum_all()?.backward()?;
    let gx = g.get(var.as_tensor()).ok_or_else(|| alignbench::Error::numeric("attention", "no gradient"))?;
    let norm = gx.sqr()?.sum_all()?.to_scalar::<f32>()?;
    let s = t0.elapsed().as_secs_f64();
    println!("attention_{mode}_tokens: {tokens} tokens");
    println!("attention_{mode}_fwd_vjp: {s:.2} s");
    match peak_memory_bytes(&device) {
        Some(b) => println!("attention_{mode}_peak_memory: {:.2} GiB", b as f64 / (1u64 << 30) as f64),
        None => println!("attention_{mode}_peak_memory: not measurable on this device"),
    }
    println!("attention_{mode}_grad_norm2: {norm:.6e}");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
