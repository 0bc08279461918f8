//! `sluice`, the operator's command-line tool. So far one subcommand:
//!
//! `sluice validate <manifest>`: loads and validates a `sluice.yaml` offline, exactly as the
//! functions do at start-up; prints each warning and either `ok` or the error (with the file and
//! line the loader gives). Exit status: 0 valid, 1 invalid, 2 usage error (docs/runbook.md).

use std::path::Path;
use std::process::ExitCode;

use sluice::manifest::Manifest;

const USAGE: &str = "usage: sluice validate <manifest>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, path] if cmd == "validate" => validate(Path::new(path)),
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    match Manifest::load(path) {
        Ok(manifest) => {
            for warning in &manifest.warnings {
                println!("warning: {warning}");
            }
            println!(
                "ok: {} ({} source(s), {} connector(s), {} pipeline(s))",
                path.display(),
                manifest.sources.len(),
                manifest.connectors.len(),
                manifest.pipelines.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
    }
}
