//! The `deskboot` command: `serve` runs the server; every other command is a
//! client of its admin API (or, for `identify`, of the built-in catalog).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("deskboot: {e:#}");
            ExitCode::from(2)
        }
    }
}
