//! CPU time per event of the intake and the executor on ministack (the engine the Powertools
//! reference uses), in this process: the real use cases on [`AwsBackend`] with the SDK clients
//! a function builds, called one event after another as a warm Lambda instance would be.
//!
//! What is counted: the CPU time (user + system, every thread) of this process, from
//! `/proc/self/stat`, over `events` calls of `intake::handle` (building and signing each
//! request included, as the reference builds its API Gateway events), then over `events` calls
//! of `execute::run_message` on one-stage runs, divided by `events`; the median of
//! `repetitions`. It includes the SDK's request signing, HTTP and JSON work and the tool call's
//! client side, not the engine's (ministack is another process) nor the connector's (a
//! `bench-hello-http` process). Receiving and deleting the stage messages (Lambda's event
//! source mapping's work) happens outside the measured window. Resolution: 10 ms clock ticks,
//! hence hundreds of events per window.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sluice::adapters::backend::AwsBackend;
use sluice::domain::ids::HolderId;
use sluice::ports::{Backend, ReceivedMessage, StageQueue};
use sluice::usecases::{execute, intake};

use super::stats::{round3, Summary};
use super::Process;
use crate::e2e::system::build_app;
use crate::e2e::{ManifestSpec, Setup};
use crate::engines::{self, Engine};

/// Warm-up events before the first window.
const WARMUP: usize = 20;

/// Measures and writes `cpu.json`.
pub async fn run(
    out: &Path,
    hello: &PathBuf,
    events: usize,
    repetitions: usize,
) -> Result<Value, String> {
    let port = super::free_port().map_err(|e| e.to_string())?;
    let _connector = Process(
        Command::new(hello)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", hello.display()))?,
    );
    measure(out, port, events, repetitions).await
}

async fn measure(
    out: &Path,
    port: u16,
    events: usize,
    repetitions: usize,
) -> Result<Value, String> {
    super::wait_listening(port, Duration::from_secs(10)).await?;
    let (dynamodb, table) = engines::fresh_table(Engine::Ministack).await;
    let (sqs, queue_url, _dlq) = engines::fresh_queue().await;
    let spec = ManifestSpec {
        rate_limit_per_minute: 1_000_000,
        concurrency_limit: 64,
        single_stage: true,
        ..ManifestSpec::default()
    };
    let setup = Setup::new(spec.yaml(&format!("http://127.0.0.1:{port}")))
        .setting("REPO_PIPELINE_CONCURRENCY_LIMIT", "10000");
    let secret = format!("bench-{}", ulid::Ulid::new());
    let (app, _) = build_app(
        AwsBackend::new(dynamodb, sqs, &table, &queue_url),
        &setup,
        &table,
        &secret,
    );
    let worker = HolderId::random();

    let mut next = 0u64;
    let mut intake_ms = Vec::new();
    let mut executor_ms = Vec::new();
    for rep in 0..=repetitions {
        let n = if rep == 0 { WARMUP } else { events };
        let before = super::self_cpu_ms();
        for _ in 0..n {
            let delivery = format!("cpu-{next}-{}", ulid::Ulid::new());
            let request = super::webhook_request(&secret, &delivery, &super::push_payload(next));
            next += 1;
            let answer = intake::handle(&app, request).await;
            if answer.status != 202 {
                return Err(format!(
                    "intake answered {}: {}",
                    answer.status, answer.body
                ));
            }
        }
        let intake_cpu = super::self_cpu_ms() - before;

        let messages = receive_all(&app.backend, n).await?;
        let before = super::self_cpu_ms();
        for message in &messages {
            let done = execute::run_message(&app, message, &worker)
                .await
                .map_err(|e| format!("a stage failed: {e}"))?;
            if done.kind() != "completed" {
                return Err(format!("a stage ended {done:?}, not completed"));
            }
        }
        let executor_cpu = super::self_cpu_ms() - before;
        for message in &messages {
            let _ = app.backend.queue().ack(&message.receipt).await;
        }
        if rep > 0 {
            intake_ms.push(intake_cpu / n as f64);
            executor_ms.push(executor_cpu / n as f64);
        }
    }
    let part = |samples: &[f64]| -> Result<Value, String> {
        let s = Summary::of(samples).ok_or("no repetitions")?;
        Ok(json!({
            "cpu_ms_per_event": round3(s.median),
            "repetitions_ms": samples.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
            "events": events,
        }))
    };
    let result = json!({
        "engine": "ministack",
        "what": "CPU time (user + system, all threads, /proc/self/stat) of one process running the real intake (`intake::handle`, request signing included) and executor (`execute::run_message` of one-stage runs, tool call to a separate hello process) on AwsBackend against ministack, one event after another, divided by the events; median of the repetitions. The engine's and the connector's CPU are not counted; receiving and deleting stage messages (Lambda's work) is outside the window.",
        "repetitions": repetitions,
        "intake": part(&intake_ms)?,
        "executor": part(&executor_ms)?,
    });
    super::write_json(out, "cpu.json", &result).map_err(|e| format!("cpu.json: {e}"))?;
    Ok(result)
}

/// Receives `n` stage messages (bounded: at most `n` + 50 receive calls).
async fn receive_all(backend: &AwsBackend, n: usize) -> Result<Vec<ReceivedMessage>, String> {
    let mut messages = Vec::with_capacity(n);
    for _ in 0..n + 50 {
        if messages.len() >= n {
            break;
        }
        let batch = backend
            .queue()
            .receive(10, 300, 1)
            .await
            .map_err(|e| format!("receiving: {e}"))?;
        messages.extend(batch);
    }
    if messages.len() < n {
        return Err(format!(
            "only {} of {n} stage messages arrived",
            messages.len()
        ));
    }
    Ok(messages)
}
