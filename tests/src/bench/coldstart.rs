//! Cold start: the time from spawning a function's bootstrap to its first
//! `GET /2018-06-01/runtime/invocation/next` on a stub Lambda Runtime API served on 127.0.0.1,
//! with the environment a real Lambda sets (region, function name, memory, credentials as
//! environment variables) plus the function's own (table, queue URL, inline manifest, secrets).
//!
//! The stub never answers `/next`: once it has been asked, the process is killed and the next
//! run spawns a fresh one. Runs alternate between binaries (round robin), so a slow moment of
//! this shared machine lands on every binary alike. Each binary is run once untimed first (page
//! cache). The figure is the ratio of medians against a bare `lambda_runtime` hello world.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::stats::Summary;
use crate::e2e::system::SECRET_ENV;
use crate::e2e::ManifestSpec;

/// How long one run may take before it counts as failed.
const RUN_DEADLINE: Duration = Duration::from_secs(10);

/// One binary to measure.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub path: PathBuf,
}

/// Arrivals of `/next` calls, stamped when the request reached the stub.
type Arrivals = Arc<Mutex<Option<mpsc::UnboundedSender<Instant>>>>;

async fn next(State(arrivals): State<Arrivals>) -> &'static str {
    let now = Instant::now();
    if let Some(tx) = arrivals.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        let _ = tx.send(now);
    }
    // Held until the process is killed: no invocation is ever handed out.
    std::future::pending::<()>().await;
    ""
}

/// The environment of every run: what Lambda sets, and the functions' own variables.
fn environment(port: u16, name: &str) -> Vec<(String, String)> {
    let manifest = ManifestSpec::default().yaml("https://connector.example.com");
    [
        ("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}")),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("sluice-{name}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/sluice-{name}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/22/[$LATEST]bench".into(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_rapid".into()),
        ("AWS_ACCESS_KEY_ID", "AKIABENCHBENCHBENCH0".into()),
        ("AWS_SECRET_ACCESS_KEY", "bench-secret-access-key".into()),
        ("AWS_SESSION_TOKEN", "bench-session-token".into()),
        ("_HANDLER", "bootstrap".into()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("TZ", ":UTC".into()),
        ("SLUICE_TABLE_NAME", "sluice-bench".into()),
        (
            "SLUICE_STAGE_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/sluice-stages".into(),
        ),
        ("SLUICE_MANIFEST_INLINE", manifest),
        (SECRET_ENV, "bench-webhook-secret".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn spawn(target: &Target, env: &[(String, String)]) -> std::io::Result<Child> {
    Command::new(&target.path)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Spawns `target`, waits for its first `/next`; the milliseconds from spawn to that request.
async fn one_run(
    target: &Target,
    env: &[(String, String)],
    rx: &mut mpsc::UnboundedReceiver<Instant>,
) -> Result<f64, String> {
    while rx.try_recv().is_ok() {}
    let start = Instant::now();
    let mut child = spawn(target, env).map_err(|e| format!("spawning {}: {e}", target.name))?;
    let arrived = tokio::time::timeout(RUN_DEADLINE, rx.recv()).await;
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    match arrived {
        Ok(Some(at)) => Ok(at.duration_since(start).as_secs_f64() * 1000.0),
        _ => Err(format!(
            "{} never asked for an invocation within {RUN_DEADLINE:?} (exit: {exited:?})",
            target.name
        )),
    }
}

/// Measures every target `runs` times and writes `coldstart.json` to `out`.
pub async fn run(out: &Path, targets: &[Target], runs: usize) -> Result<Value, String> {
    let arrivals: Arrivals = Arc::new(Mutex::new(None));
    let (tx, mut rx) = mpsc::unbounded_channel();
    *arrivals.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("binding the stub Runtime API: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .with_state(arrivals);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let envs: Vec<Vec<(String, String)>> =
        targets.iter().map(|t| environment(port, &t.name)).collect();
    for (target, env) in targets.iter().zip(&envs) {
        one_run(target, env, &mut rx).await?;
    }
    for _ in 0..runs {
        for (target, env) in targets.iter().zip(&envs) {
            let ms = one_run(target, env, &mut rx).await?;
            samples.entry(target.name.clone()).or_default().push(ms);
        }
    }
    server.abort();

    let mut binaries = serde_json::Map::new();
    for target in targets {
        let summary = Summary::of(&samples[&target.name]).ok_or("no samples")?;
        let size = std::fs::metadata(&target.path)
            .map(|m| m.len())
            .unwrap_or(0);
        binaries.insert(
            target.name.clone(),
            json!({
                "path": target.path.display().to_string(),
                "bytes": size,
                "ms": summary.to_json(),
            }),
        );
    }
    let result = json!({
        "runs": runs,
        "measure": "spawn to the first GET /2018-06-01/runtime/invocation/next on a loopback stub",
        "env": environment(port, "<name>").into_iter()
            .map(|(k, v)| if k == "SLUICE_MANIFEST_INLINE" { (k, format!("<{} bytes of YAML>", v.len())) } else { (k, v) })
            .collect::<BTreeMap<_, _>>(),
        "binaries": binaries,
    });
    super::write_json(out, "coldstart.json", &result)
        .map_err(|e| format!("coldstart.json: {e}"))?;
    Ok(result)
}
