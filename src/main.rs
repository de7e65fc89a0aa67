//! The `alignbench` binary: a tiny `main` that prints the error chain and exits 1.

mod bench;
mod cli;

use clap::Parser;

fn main() {
    // The runner parallelises over chunks of prompt groups (rayon); candle's own CPU pool would busy-wait on every
    // small op of every chunk (measured: 65 % of a DPS cell's time spinning in candle's barrier). One candle thread
    // per worker unless the user says otherwise. Set before any candle op starts its pool.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
