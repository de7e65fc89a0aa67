//! The `alignbench` binary: a tiny `main` that prints the error chain and exits 1.

mod bench;
mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
