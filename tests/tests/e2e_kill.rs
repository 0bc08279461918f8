//! End-to-end: an executor process killed (SIGKILL) in the middle of a stage leaves nothing
//! stuck. The stage runs in a separate process running the local run (`sluice-local --aws`
//! against ministack); the test kills it while the recording connector holds its tool call,
//! lets the execution lease expire, runs the sweeper, and checks that the run completes with
//! exactly one RECOVERY_LEASE_EXPIRED event and the same Idempotency-Key on the repeated call.
//!
//! The child process is this test binary re-executed into [`child_process`], which runs
//! `sluice_local::run` (the whole of `sluice-local`'s `main` but its signal handling) with
//! `--aws`: a binary of another package cannot be located reliably from here (cargo exposes
//! `CARGO_BIN_EXE_*` only to a package's own tests), and this way the child is always built
//! from the same sources as the test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice::domain::execution::ExecutionStatus;
use sluice::domain::ledger::EventKind;
use sluice_tests::e2e::system::{count_kind, execution_id, push, wait_until};
use sluice_tests::e2e::{ManifestSpec, RecordingConnector, Reply, Setup, System};
use sluice_tests::engines::Engine;

/// Set in the child's environment: the `sluice-local` arguments, as a JSON list.
const CHILD_ARGS: &str = "SLUICE_E2E_CHILD_ARGS";
const CHILD_TEST: &str = "child_process";
const DEADLINE: Duration = Duration::from_secs(30);

/// Kills the child if the test fails before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_killed_mid_stage_is_recovered_by_the_sweeper() {
    let connector = RecordingConnector::start().await;
    // The first call is held far longer than the test waits: the executor dies holding it.
    connector.script("/tickets", [Reply::ok().delayed(Duration::from_secs(120))]);
    let spec = ManifestSpec {
        timeout_ms: 20_000,
        ..ManifestSpec::default()
    };
    let yaml = spec.yaml(&connector.base_url());
    // No executor in this process until the child is dead.
    let mut system = System::start(
        Setup::new(yaml.clone())
            .workers(0)
            .setting("EXECUTION_LEASE_SECONDS", "5")
            .setting("BREAKER_PROBE_TIMEOUT_SECONDS", "30"),
    )
    .await;

    let dir = std::env::temp_dir().join(format!("sluice-e2e-kill-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest_path = dir.join("sluice.yaml");
    std::fs::write(&manifest_path, &yaml).unwrap();
    let log_path = dir.join("child.log");
    let args = serde_json::json!([
        "--aws",
        "--port",
        "0",
        "--workers",
        "1",
        "--manifest",
        manifest_path.display().to_string(),
    ]);
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ARGS, args.to_string())
        .env("SLUICE_AWS_ENDPOINT", Engine::Ministack.endpoint())
        .env("SLUICE_STAGE_QUEUE_URL", &system.queue_url)
        .env("RUST_LOG", "info")
        .env_remove("SLUICE_DEV_JWT_SECRET")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (name, value) in &system.settings {
        command.env(name, value);
    }
    let mut child = ChildGuard(command.spawn().expect("spawning the child process"));
    let child_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let (status, answer) = system.deliver("kill-1", &push("acme/kill", "sha")).await;
    assert_eq!(status, 202, "{answer}");
    let id = execution_id(&answer);

    // The child's executor takes the stage and calls the tool; the connector holds the call.
    wait_until("the child's tool call", DEADLINE, || async {
        match connector.in_flight() {
            1 => Ok(()),
            n => Err(format!("{n} calls held; child log:\n{}", child_log())),
        }
    })
    .await;
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaping the child");

    let record = system.execution(&id).await;
    assert_eq!(record.status, ExecutionStatus::Running, "{record:?}");
    let lease = record
        .lease
        .clone()
        .expect("the dead worker's lease is still there");

    // Nothing moves until the lease expires and the sweeper runs.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let wait_ms = (lease.expires_at.as_millis() - now_ms).max(0) as u64 + 200;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    assert_eq!(connector.count("/tickets"), 1);
    let report = system.sweep().await;
    assert_eq!(report.recovered, 1, "{report:?}");

    // A live executor picks the re-queued stage up and the run completes.
    system.start_workers(1);
    let record = system.wait_one(&id, DEADLINE).await;
    assert_eq!(record.status, ExecutionStatus::Succeeded, "{record:?}");

    let ledger = system.ledger(&id).await;
    assert_eq!(
        count_kind(&ledger, EventKind::RecoveryLeaseExpired),
        1,
        "{ledger:?}"
    );
    assert_eq!(count_kind(&ledger, EventKind::Succeeded), 1, "{ledger:?}");
    // The interrupted call was repeated once, under the same key.
    let tickets = connector.calls_to("/tickets");
    assert_eq!(tickets.len(), 2);
    let key = format!("{id}:0");
    assert!(tickets
        .iter()
        .all(|c| c.idempotency_key.as_deref() == Some(key.as_str())));
    assert_eq!(connector.count("/notify"), 1);

    // A second sweep finds nothing to recover.
    let report = system.sweep().await;
    assert_eq!(report.recovered, 0, "{report:?}");
    assert_eq!(
        count_kind(&system.ledger(&id).await, EventKind::RecoveryLeaseExpired),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The child process: runs `sluice-local` with the arguments in `SLUICE_E2E_CHILD_ARGS` until
/// it is killed. Does nothing when run on its own.
#[test]
#[ignore = "the child process of executor_killed_mid_stage_is_recovered_by_the_sweeper"]
fn child_process() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).expect("child arguments");
    let sluice_local::Command::Run(options) =
        sluice_local::Options::parse(args).expect("valid child arguments")
    else {
        panic!("the child needs run options");
    };
    sluice_local::run::init_tracing();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(sluice_local::run(options, std::future::pending()))
        .expect("the local run");
}
