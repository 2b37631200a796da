//! The `trellis` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    let cli = trellis::cli::Cli::parse();
    if let Err(e) = cli.run() {
        eprintln!("Error: {}", trellis::cli::error_chain(e.as_ref()));
        std::process::exit(1);
    }
}
