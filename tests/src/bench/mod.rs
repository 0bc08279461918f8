//! The benchmark harness behind `sluice-bench` and `infra/bench.sh` (issue 5): each part
//! measures one thing and writes one JSON file to the output directory; [`report`] renders
//! docs/benchmarks.md from all of them.
//!
//! | part | file | what |
//! |---|---|---|
//! | [`requests`] | `requests.json` | AWS requests per unit of work, counted exactly, and the cost |
//! | [`coldstart`] | `coldstart.json` | process spawn to the first Runtime API `/next`, sizes |
//! | [`throughput`] | `throughput.json` | local intake over HTTP against a bare axum server |
//! | [`cpu`] | `cpu.json` | CPU time per webhook and per stage record on ministack |
//! | [`contention`] | `contention.json` | one connector item, one semaphore, on DynamoDB Local |
//!
//! Every part is bounded in count and time; none asserts timings (figures go to the report).

pub mod coldstart;
pub mod contention;
pub mod cpu;
pub mod report;
pub mod requests;
pub mod stats;
pub mod throughput;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use sluice::domain::signature::sign_github;
use sluice::edge::EdgeRequest;

use crate::e2e::system::SOURCE;

/// Writes `value` as pretty JSON to `dir/name`, creating `dir`.
pub fn write_json(dir: &Path, name: &str, value: &Value) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(name), text + "\n")
}

/// Reads `dir/name` as JSON; `None` when it is missing or not JSON.
pub fn read_json(dir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A GitHub push payload with a unique head SHA (so each delivery starts its own run).
pub fn push_payload(n: u64) -> Value {
    crate::e2e::system::push("bench/repo", &format!("{n:040x}"))
}

/// The signed body and headers of one GitHub delivery of `payload` to source `gh`.
pub fn signed_delivery(
    secret: &str,
    delivery_id: &str,
    payload: &Value,
) -> (Vec<u8>, BTreeMap<String, String>) {
    let body = serde_json::to_vec(payload).expect("a payload serializes");
    let headers = BTreeMap::from([
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-github-delivery".to_owned(), delivery_id.to_owned()),
        (
            "x-hub-signature-256".to_owned(),
            sign_github(secret.as_bytes(), &body),
        ),
    ]);
    (body, headers)
}

/// The intake request of one signed delivery, as API Gateway hands it over.
pub fn webhook_request(secret: &str, delivery_id: &str, payload: &Value) -> EdgeRequest {
    let (body, headers) = signed_delivery(secret, delivery_id, payload);
    EdgeRequest {
        method: "POST".into(),
        path: format!("/webhooks/{SOURCE}"),
        headers,
        body,
        ..EdgeRequest::default()
    }
}

/// A child process (a server the benchmark started), killed when dropped: also when a
/// measurement fails or unwinds.
#[derive(Debug)]
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released: a child process binds it next).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Waits until something accepts connections on 127.0.0.1:`port`, up to `deadline`.
pub async fn wait_listening(port: u16, deadline: std::time::Duration) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "nothing listens on 127.0.0.1:{port} after {deadline:?}"
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// CPU time (user + system) this process has used so far, in milliseconds, from
/// `/proc/self/stat` (see [`proc_cpu_ms`]).
pub fn self_cpu_ms() -> f64 {
    proc_cpu_ms("self").unwrap_or(f64::NAN)
}

/// CPU time (utime + stime, all threads) of process `pid` (or `"self"`) in milliseconds, read
/// from `/proc/<pid>/stat` in clock ticks (100 per second on Linux: a 10 ms resolution, so
/// callers measure over many events).
pub fn proc_cpu_ms(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / CLOCK_TICKS_PER_SEC)
}

/// `sysconf(_SC_CLK_TCK)` on every Linux this runs on.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
