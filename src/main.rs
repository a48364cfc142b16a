//! The `lazarus-pit` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let mut cli = lazarus_pit::cli::Cli::parse();
    cli.apply_env();
    match lazarus_pit::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Messages can quote what an agent wrote (a name, a path).
            eprintln!("lazarus-pit: {}", lazarus_pit::text::escape(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}
