//! Intake throughput and latency of the local run (`sluice-local`, memory backend) over HTTP,
//! against a bare axum server (`bench-hello-http`), with the same load generator in the same
//! run: this process, `C` concurrent tokio tasks sharing one keep-alive `reqwest` client
//! (HTTP/1.1), each sending the next pre-signed GitHub delivery (unique delivery id and head
//! SHA, so each starts its own run) until `count` requests were sent or `max_duration` passed.
//! Every request is signed before the clock starts; both servers get the same requests.
//!
//! The local run is the real one: its executor loops run the accepted pipelines against its
//! demo connector in the same process while the intake is measured, as they would for a user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::stats::Summary;
use super::Process;
use crate::e2e::system::SECRET_ENV;
use crate::e2e::ManifestSpec;

/// The load: concurrency, request count, time cap, warm-up requests.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub concurrency: usize,
    pub count: usize,
    pub max_duration: Duration,
    pub warmup: usize,
}

/// The servers: the release `sluice-local` and `bench-hello-http` binaries.
#[derive(Debug, Clone)]
pub struct Servers {
    pub sluice_local: PathBuf,
    pub hello: PathBuf,
}

/// The settings the local run gets (besides its manifest and secret).
const LOCAL_SETTINGS: &[(&str, &str)] = &[
    ("REPO_PIPELINE_CONCURRENCY_LIMIT", "1000"),
    ("RUST_LOG", "info"),
];

struct Request {
    body: Vec<u8>,
    delivery: String,
    signature: String,
}

/// The result of one load run.
struct Outcome {
    sent: usize,
    ok: usize,
    statuses: std::collections::BTreeMap<u16, usize>,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

fn requests(secret: &str, first: u64, n: usize) -> Vec<Request> {
    (0..n as u64)
        .map(|i| {
            let delivery = format!("bench-{}-{}", first + i, ulid::Ulid::new());
            let (body, headers) =
                super::signed_delivery(secret, &delivery, &super::push_payload(first + i));
            Request {
                body,
                delivery,
                signature: headers["x-hub-signature-256"].clone(),
            }
        })
        .collect()
}

async fn load(url: &str, requests: Arc<Vec<Request>>, load: Load, timed: bool) -> Outcome {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(load.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + load.max_duration;
    let mut tasks = Vec::new();
    for _ in 0..load.concurrency {
        let (client, next, requests, url) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&requests),
            url.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut statuses = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests.len() || (timed && Instant::now() >= deadline) {
                    break;
                }
                let r = &requests[i];
                let sent = Instant::now();
                let status = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-github-delivery", &r.delivery)
                    .header("x-hub-signature-256", &r.signature)
                    .body(r.body.clone())
                    .send()
                    .await
                    .map(|resp| resp.status().as_u16());
                // 0: no answer (connection error or timeout).
                let status: u16 = status.unwrap_or_default();
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                statuses.push(status);
            }
            (latencies, statuses)
        }));
    }
    let mut outcome = Outcome {
        sent: 0,
        ok: 0,
        statuses: Default::default(),
        elapsed: Duration::ZERO,
        latencies_ms: Vec::new(),
    };
    for task in tasks {
        let (latencies, statuses) = task.await.unwrap_or_default();
        outcome.latencies_ms.extend(latencies);
        for s in statuses {
            outcome.sent += 1;
            if (200..300).contains(&s) {
                outcome.ok += 1;
            }
            *outcome.statuses.entry(s).or_default() += 1;
        }
    }
    outcome.elapsed = start.elapsed();
    outcome
}

fn start(path: &Path, args: &[String], env: &[(&str, String)]) -> Result<Process, String> {
    let child = Command::new(path)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", path.display()))?;
    Ok(Process(child))
}

/// Warms up, then measures one server; its JSON.
async fn measure(
    name: &str,
    server: &Process,
    port: u16,
    path: &str,
    secret: &str,
    cfg: Load,
    first: u64,
) -> Result<Value, String> {
    super::wait_listening(port, Duration::from_secs(20)).await?;
    let url = format!("http://127.0.0.1:{port}{path}");
    let warm = load(
        &url,
        Arc::new(requests(secret, first, cfg.warmup)),
        cfg,
        false,
    )
    .await;
    if warm.ok != warm.sent {
        return Err(format!("{name}: warm-up answers {:?}", warm.statuses));
    }
    let batch = Arc::new(requests(secret, first + cfg.warmup as u64, cfg.count));
    let pid = server.0.id().to_string();
    let cpu_before = super::proc_cpu_ms(&pid).unwrap_or(f64::NAN);
    let outcome = load(&url, batch, cfg, true).await;
    let cpu_ms = super::proc_cpu_ms(&pid).unwrap_or(f64::NAN) - cpu_before;
    let latency = Summary::of(&outcome.latencies_ms).ok_or("no requests were sent")?;
    let secs = outcome.elapsed.as_secs_f64();
    Ok(json!({
        "requests": outcome.sent,
        "ok": outcome.ok,
        "statuses": outcome.statuses,
        "seconds": super::stats::round3(secs),
        "requests_per_sec": super::stats::round3(outcome.ok as f64 / secs),
        "latency_ms": latency.to_json(),
        "server_cpu_ms_per_request": super::stats::round3(cpu_ms / outcome.sent.max(1) as f64),
    }))
}

/// Runs the hello server, then the local run, under the same load; writes `throughput.json`.
pub async fn run(out: &Path, servers: &Servers, cfg: Load) -> Result<Value, String> {
    let secret = format!("bench-{}", ulid::Ulid::new());

    let port = super::free_port().map_err(|e| e.to_string())?;
    let hello = start(&servers.hello, &[port.to_string()], &[])?;
    let hello_json = measure("hello", &hello, port, "/webhooks/gh", &secret, cfg, 0).await?;
    drop(hello);

    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let manifest = out.join("throughput-manifest.yaml");
    let spec = ManifestSpec {
        rate_limit_per_minute: 1_000_000,
        concurrency_limit: 64,
        ..ManifestSpec::default()
    };
    // The placeholder base URL makes the local run point the connector at its demo connector.
    std::fs::write(&manifest, spec.yaml("http://127.0.0.1:8088"))
        .map_err(|e| format!("writing {}: {e}", manifest.display()))?;
    let port = super::free_port().map_err(|e| e.to_string())?;
    let mut env: Vec<(&str, String)> = LOCAL_SETTINGS
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect();
    env.push((SECRET_ENV, secret.clone()));
    let args = vec![
        "--port".to_owned(),
        port.to_string(),
        "--manifest".to_owned(),
        manifest.display().to_string(),
    ];
    let local = start(&servers.sluice_local, &args, &env)?;
    let local_json = measure(
        "sluice-local",
        &local,
        port,
        "/webhooks/gh",
        &secret,
        cfg,
        10_000_000,
    )
    .await?;
    drop(local);
    if local_json["ok"] != local_json["requests"] {
        return Err(format!(
            "sluice-local refused some requests: {}",
            local_json["statuses"]
        ));
    }

    let ratio = local_json["requests_per_sec"].as_f64().unwrap_or(0.0)
        / hello_json["requests_per_sec"].as_f64().unwrap_or(f64::NAN);
    let result = json!({
        "load_generator": "sluice-bench (tokio + reqwest, HTTP/1.1 keep-alive), in this process",
        "concurrency": cfg.concurrency,
        "count": cfg.count,
        "max_seconds": cfg.max_duration.as_secs(),
        "warmup": cfg.warmup,
        "local_settings": LOCAL_SETTINGS.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "local_args": "--port <free> --manifest <one source, 2-stage pipeline, rate 1,000,000/min> (memory backend, 2 executor loops, demo connector)",
        "hello": hello_json,
        "sluice_local": local_json,
        "ratio_rps": super::stats::round3(ratio),
    });
    super::write_json(out, "throughput.json", &result)
        .map_err(|e| format!("throughput.json: {e}"))?;
    Ok(result)
}
