//! The `sluice-local` binary as a newcomer meets it: started from the repository root with no
//! flags but `--port 0`, it prints a start-up text whose curl example (URL, headers, body file)
//! really is accepted, whose token reads the execution it names until the run succeeded on the
//! demo connector, and it stops cleanly on SIGINT (Ctrl-C). State is in memory: no engine needed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The text after `prefix` on the first line that starts with it (after indentation).
fn after<'a>(banner: &'a str, prefix: &str) -> &'a str {
    banner
        .lines()
        .map(str::trim_start)
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{banner}"))
}

#[tokio::test]
async fn the_printed_example_works_and_ctrl_c_stops() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_sluice-local"))
            .args(["--port", "0"])
            .current_dir(&root)
            .env("DEMO_GITHUB_SECRET", "binary-test-secret")
            .env_remove("SLUICE_DEV_JWT_SECRET")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sluice-local"),
    );

    // Read the start-up text up to its last line.
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = String::new();
    let started = Instant::now();
    while !banner.contains("Ctrl-C stops") {
        let line = rx
            .recv_timeout(Duration::from_secs(30).saturating_sub(started.elapsed()))
            .unwrap_or_else(|_| panic!("no complete start-up text; got:\n{banner}"));
        banner.push_str(&line);
        banner.push('\n');
    }

    let url = after(&banner, "URL:").trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(banner.contains("DEMO_GITHUB_SECRET=binary-test-secret (from the environment)"));
    let delivery = after(&banner, "-H 'X-GitHub-Delivery: ")
        .trim_end_matches(" \\")
        .trim_end_matches('\'');
    let signature = after(&banner, "-H 'X-Hub-Signature-256: ")
        .trim_end_matches(" \\")
        .trim_end_matches('\'');
    let body_file = after(&banner, "--data-binary @'")
        .split('\'')
        .next()
        .unwrap()
        .to_owned();
    let token = after(&banner, "TOKEN=").trim().to_owned();
    let printed_id = after(&banner, "-> 202 {\"execution_id\": \"")
        .split('"')
        .next()
        .unwrap()
        .to_owned();

    // The curl example, as printed.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let body = std::fs::read(&body_file).expect("the example body file");
    let send = || {
        http.post(format!("{url}/webhooks/github-demo"))
            .header("content-type", "application/json")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
    };
    let answer = send().await.expect("intake answers");
    assert_eq!(answer.status().as_u16(), 202);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["execution_id"], printed_id.as_str());
    let again = send().await.expect("intake answers");
    assert_eq!(
        again.status().as_u16(),
        200,
        "the same delivery is a duplicate"
    );

    // The token reads the execution until the demo connector ran both stages.
    let deadline = Instant::now() + Duration::from_secs(15);
    let view = loop {
        let view: serde_json::Value = http
            .get(format!("{url}/v1/executions/{printed_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("the API answers")
            .json()
            .await
            .unwrap();
        if view["execution"]["status"] == "SUCCEEDED" {
            break view;
        }
        assert!(Instant::now() < deadline, "not done: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let outputs: Vec<&serde_json::Value> = view["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "TOOL_SUCCEEDED")
        .map(|e| &e["detail"]["output"])
        .collect();
    assert_eq!(outputs.len(), 2, "{view}");
    assert!(
        outputs[0]["id"].as_str().unwrap().starts_with("T-"),
        "{view}"
    );
    let unauthenticated = http
        .get(format!("{url}/v1/executions"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);

    // Ctrl-C.
    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < stop_deadline, "still running after SIGINT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn help_lists_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-local"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--port", "--manifest", "--aws", "--create"] {
        assert!(text.contains(flag), "{text}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_sluice-local"))
        .arg("--nope")
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
