//! The `lazarus-pit` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = lazarus_pit::cli::Cli::parse();
    match lazarus_pit::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lazarus-pit: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
