//! The `trellis` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = trellis::cli::Cli::from_env();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", trellis::cli::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
