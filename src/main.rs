//! The `deskboot` command: `serve` runs the server; every other command is a
//! client of its admin API (or, for `identify`, of the built-in catalog).

mod cli;

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: under a boot storm glibc's arenas
/// took 15% of the server's CPU, much of it waiting on each other's locks
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("deskboot: {e:#}");
            ExitCode::from(2)
        }
    }
}
