//! The `alignbench` binary: a tiny `main` that prints the error chain and exits 1.

mod bench;
mod cli;
mod cluster;
mod cost_cmd;

use clap::Parser;

fn main() {
    // The runner parallelises over chunks of prompt groups (rayon); candle's own CPU pool would busy-wait on every
    // small op of every chunk (measured: 65 % of a DPS cell's time spinning in candle's barrier). One candle thread
    // per worker unless the user says otherwise; training (large sequential batches) keeps candle's pool. Set before
    // any candle op starts its pool.
    let args = cli::Cli::parse();
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() && !args.trains() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if let Err(e) = cli::run(args) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
