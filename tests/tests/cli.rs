//! The `sluice` CLI against the whole system on ministack, over HTTP: each subcommand's exit
//! status, its table for people and its `--json` answer for scripts, the API's refusals as exit
//! status 1 with the error code, and an API that cannot be reached as exit status 3.

use std::time::Duration;

use serde_json::Value;
use sluice::domain::execution::ExecutionStatus;
use sluice_cli::Exit;
use sluice_tests::e2e::system::{execution_id, push, CONNECTOR, TENANT};
use sluice_tests::e2e::{ManifestSpec, RecordingConnector, Setup, System};

const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `sluice --api-url <system> [--token <token>] <args>`: exit, stdout, stderr.
async fn sluice(system: &System, token: Option<&str>, args: &[&str]) -> (Exit, String, String) {
    let mut argv = vec!["sluice", "--api-url", system.base_url.as_str()];
    if let Some(token) = token {
        argv.extend(["--token", token]);
    }
    argv.extend_from_slice(args);
    run(&argv).await
}

async fn run(argv: &[&str]) -> (Exit, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = sluice_cli::run_args(argv.iter().copied(), &mut out, &mut err).await;
    (
        exit,
        String::from_utf8(out).expect("utf-8 output"),
        String::from_utf8(err).expect("utf-8 diagnostics"),
    )
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subcommand_answers_people_and_scripts() {
    let connector = RecordingConnector::start().await;
    let spec = ManifestSpec {
        single_stage: true,
        ..ManifestSpec::default()
    };
    let system = System::start(Setup::new(spec.yaml(&connector.base_url()))).await;
    let (status, answer) = system.deliver("cli-1", &push("acme/cli", "sha-1")).await;
    assert_eq!(status, 202, "{answer}");
    let id = execution_id(&answer);
    let record = system.wait_one(&id, DEADLINE).await;
    assert_eq!(record.status, ExecutionStatus::Succeeded);
    let token = system.token(TENANT);
    let token = Some(token.as_str());

    // executions list: a table with the run; --json the API's page.
    let (exit, out, err) = sluice(&system, token, &["executions", "list"]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("ID "), "{out}");
    assert!(lines[1].starts_with(id.as_str()), "{out}");
    assert!(lines[1].contains("SUCCEEDED"), "{out}");
    let (exit, out, _) = sluice(
        &system,
        token,
        &["--json", "executions", "list", "--status", "succeeded"],
    )
    .await;
    assert_eq!(exit, Exit::Ok);
    let page = json(&out);
    assert_eq!(page["items"][0]["id"], id.as_str());
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));

    // executions show: the record's fields, then its ledger.
    let (exit, out, err) = sluice(&system, token, &["executions", "show", id.as_str()]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.contains(&format!("id: {id}\n")), "{out}");
    assert!(out.contains("status: SUCCEEDED\n"), "{out}");
    assert!(out.contains("TOOL_SUCCEEDED"), "{out}");
    let (exit, out, _) = sluice(
        &system,
        token,
        &[
            "--json",
            "executions",
            "show",
            id.as_str(),
            "--ledger-limit",
            "1",
        ],
    )
    .await;
    assert_eq!(exit, Exit::Ok);
    let shown = json(&out);
    assert_eq!(shown["ledger"].as_array().map(Vec::len), Some(1));
    assert!(shown["next_ledger_cursor"].is_string(), "{shown}");

    // A refusal: exit 1, the status and error code on stderr, nothing on stdout.
    let (exit, out, err) = sluice(&system, token, &["executions", "show", "exe_nope"]).await;
    assert_eq!((exit, out.as_str()), (Exit::Refused, ""));
    assert!(err.starts_with("error: 404 not_found"), "{err}");
    let (exit, _, err) = sluice(&system, None, &["executions", "list"]).await;
    assert_eq!(exit, Exit::Refused);
    assert!(err.starts_with("error: 401 unauthorized"), "{err}");

    // reliability and dead letters.
    let (exit, out, err) = sluice(&system, token, &["reliability"]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.contains("total_runs: 1\n"), "{out}");
    assert!(out.contains("succeeded_runs: 1\n"), "{out}");
    let (exit, out, err) = sluice(&system, token, &["dead-letters"]).await;
    assert_eq!((exit, out.as_str()), (Exit::Ok, "(none)\n"), "{err}");

    // replay: a new execution of the same payload.
    let (exit, out, err) = sluice(
        &system,
        token,
        &["replay", id.as_str(), "--reason", "cli test"],
    )
    .await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.contains("status: accepted\n"), "{out}");
    assert!(out.contains(&format!("replay_of: {id}\n")), "{out}");

    // switches: set, list, clear, list.
    let (exit, out, err) = sluice(
        &system,
        token,
        &[
            "switches",
            "set",
            "tenant",
            TENANT,
            "--reason",
            "incident 42",
        ],
    )
    .await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.contains("reason: incident 42\n"), "{out}");
    let (exit, out, _) = sluice(&system, token, &["switches", "list"]).await;
    assert_eq!(exit, Exit::Ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("incident 42"), "{out}");
    let (exit, _, err) = sluice(&system, token, &["switches", "clear", "tenant", TENANT]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    let (_, out, _) = sluice(&system, token, &["switches", "list"]).await;
    assert_eq!(out, "(none)\n");

    // connector show: its breaker and limits.
    let (exit, out, err) = sluice(&system, token, &["connector", "show", CONNECTOR]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.contains(&format!("connector: {CONNECTOR}\n")), "{out}");
    assert!(out.contains("state: CLOSED\n"), "{out}");

    // health: the details behind the token.
    let (exit, out, err) = sluice(&system, token, &["health"]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.starts_with("status: "), "{out}");
}

#[tokio::test]
async fn usage_and_unreachable_apis_have_their_own_exit_statuses() {
    // Nothing listens on port 9 of 127.0.0.1 (discard, never served here).
    let (exit, _, err) = run(&["sluice", "--api-url", "http://127.0.0.1:9", "health"]).await;
    assert_eq!(exit, Exit::Unreachable, "{err}");
    assert!(
        err.starts_with("error: no answer from http://127.0.0.1:9/v1/health"),
        "{err}"
    );

    let (exit, _, err) = run(&["sluice", "--api-url", "127.0.0.1:9", "health"]).await;
    assert_eq!(exit, Exit::Usage, "{err}");
    let (exit, _, err) = run(&[
        "sluice",
        "--api-url",
        "http://127.0.0.1:9",
        "switches",
        "set",
        "tenant",
        "acme",
        "--tool",
        "x",
        "--reason",
        "r",
    ])
    .await;
    assert_eq!(exit, Exit::Usage);
    assert!(
        err.contains("--tool applies to a connector switch"),
        "{err}"
    );
    let (exit, out, _) = run(&["sluice", "--help"]).await;
    assert_eq!(exit, Exit::Ok);
    assert!(out.contains("executions"), "{out}");
}
