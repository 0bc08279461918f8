//! `sluice`, the operator's command-line tool (see the library's docs and docs/runbook.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: could not start: {e}");
            return ExitCode::from(3);
        }
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let exit = runtime.block_on(sluice_cli::run_args(
        std::env::args_os(),
        &mut out,
        &mut err,
    ));
    exit.into()
}
