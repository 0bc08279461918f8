//! `sluice-local`: intake, API, executor and sweeper in one process on 127.0.0.1.

use sluice_local::{Command, Options};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = match Options::parse(std::env::args().skip(1))? {
        Command::Help => {
            print!("{}", sluice_local::run::USAGE);
            return Ok(());
        }
        Command::Run(options) => options,
    };
    sluice_local::run::init_tracing();
    sluice_local::run(options, stop_signal()).await?;
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
