//! `sluice`, the operator's command-line tool: offline manifest validation, and the operator API
//! (executions, replays, kill switches, connectors, health) the way operators reach for `gh`.
//!
//! The API URL and token come from `--api-url`/`--token` or `SLUICE_API_URL`/`SLUICE_API_TOKEN`.
//! People get tables; `--json` prints the API's answer as one JSON document for scripts.
//!
//! Exit status (docs/runbook.md, "The sluice CLI"):
//! - 0: done (the manifest is valid, the API answered 2xx);
//! - 1: refused (the manifest is invalid, the API answered 4xx or 5xx: the error code and
//!   message are printed);
//! - 2: usage error (unknown command, missing argument or flag);
//! - 3: the API could not be reached or did not answer JSON.

mod client;
mod command;
mod render;

use std::io::Write;
use std::path::Path;

use clap::Parser;
use sluice::manifest::Manifest;

pub use client::{Answer, Api, CallError};
pub use command::{Cli, Command};

/// The exit statuses `sluice` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Refused = 1,
    Usage = 2,
    Unreachable = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Parses `args` (the program name first) and runs the command, writing what a person or a
/// script reads to `out` and diagnostics to `err`.
pub async fn run_args<I, S>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> Exit
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run(cli, out, err).await,
        Err(e) => {
            let is_help = matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            );
            if is_help {
                let _ = write!(out, "{e}");
                Exit::Ok
            } else {
                let _ = write!(err, "{e}");
                Exit::Usage
            }
        }
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    if let Command::Validate { manifest } = &cli.command {
        return validate(manifest, out, err);
    }
    if let Err(why) = command::check(&cli.command) {
        let _ = writeln!(err, "error: {why}");
        return Exit::Usage;
    }
    let Some(url) = cli.api_url.as_deref() else {
        let _ = writeln!(
            err,
            "error: no API URL: pass --api-url or set SLUICE_API_URL (the local run prints it)"
        );
        return Exit::Usage;
    };
    let api = match Api::new(url, cli.token.clone()) {
        Ok(api) => api,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Usage;
        }
    };
    let Some(request) = command::request(&cli.command) else {
        // Only `validate` has no request, and it returned above.
        return Exit::Usage;
    };
    match api
        .call(request.method, &request.path, &request.query, request.body)
        .await
    {
        Ok(answer) => report(&cli, &answer, out, err),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            Exit::Unreachable
        }
    }
}

fn report(cli: &Cli, answer: &Answer, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let ok = (200..300).contains(&answer.status);
    if cli.json {
        let _ = writeln!(out, "{}", answer.body);
    } else if ok {
        let _ = write!(out, "{}", render::render(&cli.command, &answer.body));
    }
    if ok {
        return Exit::Ok;
    }
    let code = answer.body["error"]["code"].as_str().unwrap_or("unknown");
    let message = answer.body["error"]["message"].as_str().unwrap_or("");
    let _ = writeln!(err, "error: {} {code}: {message}", answer.status);
    Exit::Refused
}

fn validate(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    match Manifest::load(path) {
        Ok(manifest) => {
            for warning in &manifest.warnings {
                let _ = writeln!(out, "warning: {warning}");
            }
            let _ = writeln!(
                out,
                "ok: {} ({} source(s), {} connector(s), {} pipeline(s))",
                path.display(),
                manifest.sources.len(),
                manifest.connectors.len(),
                manifest.pipelines.len()
            );
            Exit::Ok
        }
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            Exit::Refused
        }
    }
}
