//! End-to-end: the whole system in-process over HTTP on ministack (DynamoDB + SQS), calling a
//! recording connector server. Each scenario waits for its expected state with a deadline, then
//! asserts exact counts of executions, connector calls and ledger events.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use sluice::clock::{Clock, SystemClock};
use sluice::domain::connector::BreakerState;
use sluice::domain::execution::ExecutionStatus;
use sluice::domain::ids::{ConnectorId, ExecutionId};
use sluice::domain::ledger::EventKind;
use sluice::domain::time::Timestamp;
use sluice::ports::{Backend, ConnectorStore};
use sluice::telemetry;
use sluice_tests::e2e::system::{
    count_kind, execution_id, push, wait_until, CONNECTOR, SOURCE, TENANT, TENANT_SOURCE,
};
use sluice_tests::e2e::{ManifestSpec, RecordingConnector, Reply, Setup, System};

const DEADLINE: Duration = Duration::from_secs(30);

async fn system(connector: &RecordingConnector, spec: ManifestSpec) -> System {
    System::start(Setup::new(spec.yaml(&connector.base_url()))).await
}

fn keys(calls: &[sluice_tests::e2e::Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| c.idempotency_key.clone().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_storm_runs_each_delivery_once() {
    let connector = RecordingConnector::start().await;
    let system = system(&connector, ManifestSpec::default()).await;

    // 20 deliveries, each sent 5 times, all 100 requests at once.
    let sends = (0..5).flat_map(|_| {
        (0..20).map(|i| {
            let system = &system;
            async move {
                let (status, answer) = system
                    .deliver(
                        &format!("storm-{i}"),
                        &push("acme/storm", &format!("sha-{i}")),
                    )
                    .await;
                (i, status, answer)
            }
        })
    });
    let answers = join_all(sends).await;

    // Exactly one answer per delivery accepts it; the four duplicates, even those that arrive
    // while the first request is still at work, answer 200 with the same execution.
    let mut ids = Vec::new();
    for i in 0..20 {
        let mine: Vec<&(usize, u16, Value)> = answers.iter().filter(|(d, ..)| *d == i).collect();
        assert_eq!(mine.len(), 5);
        let accepted = mine
            .iter()
            .filter(|(_, s, a)| *s == 202 && a["status"] == "accepted")
            .count();
        let duplicates = mine
            .iter()
            .filter(|(_, s, a)| *s == 200 && a["status"] == "duplicate")
            .count();
        assert_eq!((accepted, duplicates), (1, 4), "delivery {i}: {mine:?}");
        let distinct: HashSet<ExecutionId> = mine.iter().map(|(_, _, a)| execution_id(a)).collect();
        assert_eq!(
            distinct.len(),
            1,
            "delivery {i} names one execution: {mine:?}"
        );
        ids.extend(distinct);
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 20);

    let records = system.wait_terminal(&ids, DEADLINE).await;
    for record in &records {
        assert_eq!(record.status, ExecutionStatus::Succeeded, "{record:?}");
        let ledger = system.ledger(&record.id).await;
        assert_eq!(count_kind(&ledger, EventKind::Received), 1, "{ledger:?}");
        assert_eq!(
            count_kind(&ledger, EventKind::ToolSucceeded),
            2,
            "{ledger:?}"
        );
    }
    // Exactly one call per stage per execution, each with its own stable key.
    let tickets: BTreeSet<String> = keys(&connector.calls_to("/tickets")).into_iter().collect();
    let notifies: BTreeSet<String> = keys(&connector.calls_to("/notify")).into_iter().collect();
    assert_eq!(connector.count("/tickets"), 20);
    assert_eq!(connector.count("/notify"), 20);
    assert_eq!(
        tickets,
        ids.iter()
            .map(|id| format!("{id}:0"))
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        notifies,
        ids.iter()
            .map(|id| format!("{id}:1"))
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(connector.total(), 40);

    // Once settled, a redelivery is a plain duplicate and runs nothing.
    for i in 0..20 {
        let (status, answer) = system
            .deliver(
                &format!("storm-{i}"),
                &push("acme/storm", &format!("sha-{i}")),
            )
            .await;
        assert_eq!(
            (status, &answer["status"]),
            (200, &json!("duplicate")),
            "{answer}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(connector.total(), 40);

    // The metrics say the same: as EMF lines (what CloudWatch would extract) ...
    let lines: Vec<Value> = system
        .app
        .metrics
        .emf_lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("EMF lines are JSON"))
        .collect();
    let sum = |name: &str, key: &str, value: &str| -> f64 {
        lines
            .iter()
            .filter(|l| l[key] == value)
            .filter_map(|l| l[name].as_f64())
            .sum()
    };
    assert_eq!(
        sum("webhook_deduped_total", "Source", SOURCE),
        100.0,
        "80 in the storm, 20 after"
    );
    assert_eq!(sum("pipeline_runs_total", "Pipeline", "review"), 20.0);
    assert_eq!(
        sum("pipeline_run_outcome_total", "Outcome", "succeeded"),
        20.0
    );
    let calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("tool_latency_ms").is_some())
        .collect();
    assert_eq!(calls.len(), 40);
    assert!(calls
        .iter()
        .all(|l| l["tool_error"] == 0.0 && l["Connector"] == CONNECTOR));
    assert!(lines
        .iter()
        .all(|l| l["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Sluice"));
    // ... and as Prometheus text on the local run's /metrics.
    let text = system
        .http
        .get(format!("{}/metrics", system.base_url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a text body");
    for expected in [
        format!("sluice_webhook_deduped_total{{source=\"{SOURCE}\"}} 100\n"),
        "sluice_pipeline_run_outcome_total{outcome=\"succeeded\"} 20\n".to_owned(),
        "sluice_pipeline_runs_total{pipeline=\"review\"} 20\n".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected} not in:\n{text}");
    }
}

/// The system clock shifted by an adjustable offset, and frozen on demand, so a test can place
/// "now" at a chosen second of the minute (a rate window's edge) without waiting for it.
#[derive(Debug, Default)]
struct ShiftedClock {
    offset_ms: AtomicI64,
    /// While set, `now` answers this.
    frozen: Mutex<Option<Timestamp>>,
}

impl ShiftedClock {
    /// Stops the clock at the next instant `second_ms` into a minute.
    fn freeze_at_second(&self, second_ms: i64) {
        let now = self.now().as_millis();
        let minute = now.div_euclid(60_000) * 60_000;
        let mut target = minute + second_ms;
        if target <= now {
            target += 60_000;
        }
        *self.frozen.lock().unwrap() = Some(Timestamp::from_millis(target));
    }

    /// Lets the clock run on from where it stood.
    fn resume(&self) {
        let mut frozen = self.frozen.lock().unwrap();
        if let Some(at) = frozen.take() {
            let real = SystemClock.now().as_millis();
            self.offset_ms
                .store(at.as_millis() - real, Ordering::SeqCst);
        }
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        if let Some(at) = *self.frozen.lock().unwrap() {
            return at;
        }
        SystemClock
            .now()
            .plus_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_limit_deliveries_are_delayed_recorded_and_all_run() {
    let connector = RecordingConnector::start().await;
    let spec = ManifestSpec {
        rate_limit_per_minute: 5,
        ..ManifestSpec::default()
    };
    let clock = Arc::new(ShiftedClock::default());
    let system = System::start(
        Setup::new(spec.yaml(&connector.base_url())).clock(clock.clone() as Arc<dyn Clock>),
    )
    .await;

    // 1.5 s before a minute ends (held there while the deliveries arrive): the 3 over-limit
    // deliveries go to the next minute's window, spread 12 s apart (60 s / 5), so they run
    // about 2, 14 and 26 s from now.
    clock.freeze_at_second(58_500);
    let sends = (0..8).map(|i| {
        let system = &system;
        async move {
            system
                .deliver(
                    &format!("rate-{i}"),
                    &push("acme/rate", &format!("sha-{i}")),
                )
                .await
        }
    });
    let answers = join_all(sends).await;
    clock.resume();
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, a)| *s == 202 && a["status"] == "accepted")
        .map(|(_, a)| a)
        .collect();
    let delayed: Vec<&Value> = answers
        .iter()
        .filter(|(s, a)| *s == 202 && a["status"] == "delayed")
        .map(|(_, a)| a)
        .collect();
    assert_eq!((accepted.len(), delayed.len()), (5, 3), "{answers:?}");
    let mut delays: Vec<u64> = delayed
        .iter()
        .map(|a| a["delay_seconds"].as_u64().expect("delay_seconds"))
        .collect();
    delays.sort_unstable();
    assert!(delays.iter().all(|d| (1..=60).contains(d)), "{delays:?}");
    assert!(
        delays[0] < delays[1] && delays[1] < delays[2],
        "spread: {delays:?}"
    );

    // Delayed work is recorded and queued with its not-before time, not dropped.
    let delayed_ids: Vec<ExecutionId> = delayed.iter().map(|a| execution_id(a)).collect();
    let mut not_befores = Vec::new();
    for id in &delayed_ids {
        let record = system.execution(id).await;
        assert_eq!(record.status, ExecutionStatus::Queued, "{record:?}");
        let not_before = record
            .not_before
            .expect("a delayed execution has not_before");
        assert!(not_before > record.created_at, "{record:?}");
        not_befores.push(not_before);
        let ledger = system.ledger(id).await;
        assert_eq!(count_kind(&ledger, EventKind::Received), 1, "{ledger:?}");
        assert_eq!(count_kind(&ledger, EventKind::Delayed), 1, "{ledger:?}");
    }

    // Everything runs; no delayed stage starts before its time.
    let all: Vec<ExecutionId> = answers.iter().map(|(_, a)| execution_id(a)).collect();
    let records = system.wait_terminal(&all, DEADLINE).await;
    assert!(
        records
            .iter()
            .all(|r| r.status == ExecutionStatus::Succeeded),
        "{records:?}"
    );
    for (id, not_before) in delayed_ids.iter().zip(not_befores) {
        let ledger = system.ledger(id).await;
        let first_call = ledger
            .iter()
            .find(|e| e.kind == EventKind::ToolCalled)
            .expect("a tool call");
        assert!(
            first_call.at >= not_before,
            "called before its time: {ledger:?}"
        );
    }
    assert_eq!(connector.count("/tickets"), 8);
    assert_eq!(connector.count("/notify"), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_with_one_run_key_make_one_execution() {
    let connector = RecordingConnector::start().await;
    let system = system(&connector, ManifestSpec::default()).await;

    // Two events of one push (same run key, another body: another delivery, as GitHub's
    // delivery id is the digest of the signed body). One after the other...
    let event = |sha: &str, action: &str| {
        let mut payload = push("acme/app", sha);
        payload["action"] = json!(action);
        payload
    };
    let (s1, a1) = system.deliver("first", &event("abc", "opened")).await;
    let (s2, a2) = system.deliver("second", &event("abc", "synced")).await;
    assert_eq!((s1, s2), (202, 202), "{a1} {a2}");
    assert_eq!(execution_id(&a1), execution_id(&a2));
    // ...and at the same time.
    let (opened, synced) = (event("def", "opened"), event("def", "synced"));
    let (r3, r4) = tokio::join!(
        system.deliver("third", &opened),
        system.deliver("fourth", &synced)
    );
    assert_eq!((r3.0, r4.0), (202, 202), "{r3:?} {r4:?}");
    assert_eq!(execution_id(&r3.1), execution_id(&r4.1));

    let ids = [execution_id(&a1), execution_id(&r3.1)];
    let records = system.wait_terminal(&ids, DEADLINE).await;
    assert!(records
        .iter()
        .all(|r| r.status == ExecutionStatus::Succeeded));
    for id in &ids {
        let ledger = system.ledger(id).await;
        assert_eq!(count_kind(&ledger, EventKind::Received), 1, "{ledger:?}");
    }
    assert_eq!(connector.count("/tickets"), 2);
    assert_eq!(connector.count("/notify"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connector_concurrency_limit_is_never_exceeded() {
    let connector = RecordingConnector::start().await;
    connector.set_default("/tickets", Reply::ok().delayed(Duration::from_millis(400)));
    connector.set_default("/notify", Reply::ok().delayed(Duration::from_millis(400)));
    let spec = ManifestSpec {
        concurrency_limit: 2,
        ..ManifestSpec::default()
    };
    let system = System::start(Setup::new(spec.yaml(&connector.base_url())).workers(3)).await;

    let sends = (0..10).map(|i| {
        let system = &system;
        async move {
            system
                .deliver(
                    &format!("slow-{i}"),
                    &push("acme/slow", &format!("sha-{i}")),
                )
                .await
        }
    });
    let ids: Vec<ExecutionId> = join_all(sends)
        .await
        .iter()
        .map(|(_, a)| execution_id(a))
        .collect();
    let records = system.wait_terminal(&ids, DEADLINE).await;
    assert!(
        records
            .iter()
            .all(|r| r.status == ExecutionStatus::Succeeded),
        "{records:?}"
    );
    assert_eq!(connector.count("/tickets"), 10);
    assert_eq!(connector.count("/notify"), 10);
    // The limit held, and was reached (three workers running four messages each tried more).
    assert_eq!(connector.max_in_flight(), 2);
    let mut deferred = 0;
    for id in &ids {
        deferred += count_kind(&system.ledger(id).await, EventKind::Deferred);
    }
    assert!(deferred > 0, "no call waited for a slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_connector_opens_the_breaker_and_one_probe_closes_it() {
    let connector = RecordingConnector::start().await;
    connector.set_default("/tickets", Reply::status(503));
    let spec = ManifestSpec {
        failure_threshold: 3,
        concurrency_limit: 5,
        first_stage_attempts: Some(10),
        single_stage: true,
        ..ManifestSpec::default()
    };
    let system = System::start(
        Setup::new(spec.yaml(&connector.base_url()))
            .setting("MAX_PIPELINE_ATTEMPTS", "10")
            .setting("BREAKER_COOLDOWN_SECONDS", "4")
            .workers(3),
    )
    .await;
    let rec = ConnectorId::parse(CONNECTOR).unwrap();
    let breaker = || async {
        system
            .app
            .backend
            .connectors()
            .state(&rec)
            .await
            .expect("connector state")
    };

    // One run fails three times (with backoff between): the breaker opens.
    let (_, first) = system.deliver("b-0", &push("acme/b", "sha-0")).await;
    wait_until("the breaker to open", DEADLINE, || async {
        let state = breaker().await;
        if state.breaker == BreakerState::Open {
            Ok(())
        } else {
            Err(format!(
                "{:?} after {} calls",
                state.breaker,
                connector.total()
            ))
        }
    })
    .await;
    assert_eq!(connector.count("/tickets"), 3);

    // While it is open, new runs are deferred: no call reaches the connector.
    let sends = (1..5).map(|i| {
        let system = &system;
        async move {
            system
                .deliver(&format!("b-{i}"), &push("acme/b", &format!("sha-{i}")))
                .await
        }
    });
    let mut ids: Vec<ExecutionId> = join_all(sends)
        .await
        .iter()
        .map(|(_, a)| execution_id(a))
        .collect();
    ids.insert(0, execution_id(&first));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, view) = system
        .api(
            "GET",
            &format!("/v1/connectors/{CONNECTOR}"),
            Some(&system.token(TENANT)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["breaker"]["state"], "OPEN", "{view}");
    assert_eq!(
        connector.count("/tickets"),
        3,
        "calls went through an open breaker"
    );

    // The connector recovers; after the cooldown one probe (held 1 s) closes the breaker and
    // the deferred runs go through.
    connector.set_default("/tickets", Reply::ok().delayed(Duration::from_millis(1000)));
    let records = system.wait_terminal(&ids, DEADLINE).await;
    assert!(
        records
            .iter()
            .all(|r| r.status == ExecutionStatus::Succeeded),
        "{records:?}"
    );
    assert_eq!(breaker().await.breaker, BreakerState::Closed);

    let calls = connector.calls_to("/tickets");
    assert_eq!(calls.len(), 3 + 5, "3 failures, then one success per run");
    assert!(calls[..3].iter().all(|c| c.status == 503));
    assert!(calls[3..].iter().all(|c| c.status == 200));
    let probe = &calls[3];
    let probe_end = probe.finished.expect("the probe was answered");
    assert!(
        calls[4..].iter().all(|c| c.arrived >= probe_end),
        "a call went out while the probe was in flight"
    );
    assert!(
        probe.arrived.duration_since(calls[2].arrived) >= Duration::from_millis(3500),
        "the probe came before the cooldown"
    );
    let mut deferred = 0;
    for id in &ids[1..] {
        deferred += count_kind(&system.ledger(id).await, EventKind::Deferred);
    }
    assert!(
        deferred >= 4,
        "each run opened while the breaker was open waited"
    );
    let transitions = |to: &str| {
        let by = [("Connector", CONNECTOR), ("To", to)];
        system
            .app
            .metrics
            .total(telemetry::BREAKER_TRANSITIONS, &by)
    };
    assert_eq!(transitions("open"), 1.0);
    assert_eq!(transitions("closed"), 1.0);
    let by = [("Connector", CONNECTOR), ("Tool", "create_ticket")];
    assert_eq!(system.app.metrics.total(telemetry::TOOL_ERROR, &by), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_back_off_with_one_idempotency_key_then_block() {
    let connector = RecordingConnector::start().await;
    connector.script(
        "/tickets",
        [Reply::status(503), Reply::status(429).retry_after(2)],
    );
    connector.set_default("/tickets", Reply::status(500));
    let system = system(&connector, ManifestSpec::default()).await;

    let (status, answer) = system.deliver("retry-1", &push("acme/retry", "sha")).await;
    assert_eq!(status, 202, "{answer}");
    let id = execution_id(&answer);
    let record = system.wait_one(&id, DEADLINE).await;
    assert_eq!(record.status, ExecutionStatus::Blocked, "{record:?}");
    assert_eq!(record.blocked_reason.as_deref(), Some("retries_exhausted"));
    assert_eq!(record.attempt_count, 3);

    // Nothing more is sent after blocking.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = connector.calls_to("/tickets");
    assert_eq!(calls.len(), 3);
    assert_eq!(connector.count("/notify"), 0);
    let expected_key = format!("{id}:0");
    assert!(
        calls
            .iter()
            .all(|c| c.idempotency_key.as_deref() == Some(expected_key.as_str())),
        "{:?}",
        keys(&calls)
    );
    // Backoff: at least the base (1 s), and the 429's Retry-After (2 s) is honoured.
    assert!(calls[1].arrived.duration_since(calls[0].arrived) >= Duration::from_millis(900));
    assert!(calls[2].arrived.duration_since(calls[1].arrived) >= Duration::from_millis(1900));

    let ledger = system.ledger(&id).await;
    assert_eq!(count_kind(&ledger, EventKind::ToolFailed), 3, "{ledger:?}");
    assert_eq!(
        count_kind(&ledger, EventKind::RetryScheduled),
        2,
        "{ledger:?}"
    );
    assert_eq!(count_kind(&ledger, EventKind::Blocked), 1, "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_retryable_4xx_blocks_at_once() {
    let connector = RecordingConnector::start().await;
    connector.set_default("/tickets", Reply::status(404));
    // The connector's server doubles as the operator's alert webhook.
    let alerts_url = format!("{}/alerts", connector.base_url());
    let system = System::start(
        Setup::new(ManifestSpec::default().yaml(&connector.base_url()))
            .setting("ALERT_WEBHOOK_URL", &alerts_url),
    )
    .await;

    // Three runs fail the same way: three run.failed alerts, one webhook call (dedup), and
    // no tool.step.failed (low, under the default minimum severity).
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, answer) = system
            .deliver(&format!("nf-{i}"), &push("acme/nf", &format!("sha-{i}")))
            .await;
        ids.push(execution_id(&answer));
    }
    let id = ids[0].clone();
    for record in system.wait_terminal(&ids, DEADLINE).await {
        assert_eq!(record.status, ExecutionStatus::Blocked, "{record:?}");
        assert_eq!(record.blocked_reason.as_deref(), Some("non_retryable:404"));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(connector.count("/tickets"), 3);
    let sent = connector.calls_to("/alerts");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let alert = &sent[0].body;
    assert_eq!(alert["alert_type"], "run.failed");
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["error_code"], "non_retryable:404");
    assert_eq!(alert["pipeline"], "review");
    assert_eq!(alert["connector"], CONNECTOR);
    assert!(
        ids.iter().any(|id| alert["run_id"] == id.as_str()),
        "{alert}"
    );

    // The summary shows the runs, the SLO missed and the alert counters.
    let token = system.token(TENANT);
    let (status, summary) = system
        .api("GET", "/v1/reliability", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["blocked_runs"], 3, "{summary}");
    assert_eq!(summary["failure_rate"], 1.0, "{summary}");
    assert_eq!(summary["slo"]["failure_rate"]["met"], false, "{summary}");
    assert_eq!(summary["recovery_trail_ratio"], 1.0, "{summary}");
    assert_eq!(summary["alerts"]["enabled"], true, "{summary}");
    assert_eq!(summary["alerts"]["counts"]["sent"], 1, "{summary}");
    assert_eq!(summary["alerts"]["counts"]["deduplicated"], 2, "{summary}");
    assert_eq!(summary["alarms"]["source"], "off", "{summary}");
    let (status, letters) = system
        .api("GET", "/v1/alerts/dead-letters", Some(&token), None)
        .await;
    assert_eq!((status, &letters["items"]), (200, &json!([])), "{letters}");
    let by = [("AlertType", "run.failed")];
    let metrics = &system.app.metrics;
    assert_eq!(metrics.total(telemetry::ALERTS_SENT, &by), 1.0);
    assert_eq!(metrics.total(telemetry::ALERTS_DEDUPLICATED, &by), 2.0);
    let ledger = system.ledger(&id).await;
    assert_eq!(
        count_kind(&ledger, EventKind::RetryScheduled),
        0,
        "{ledger:?}"
    );
    assert_eq!(count_kind(&ledger, EventKind::ToolFailed), 1, "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_switch_set_through_the_api_stops_a_connectors_calls() {
    let connector = RecordingConnector::start().await;
    let system = system(&connector, ManifestSpec::default()).await;
    let token = system.token(TENANT);
    let path = format!("/v1/kill-switches/connectors/{CONNECTOR}");

    let body = json!({"reason": "vendor outage"});
    let (status, _) = system.api("PUT", &path, None, Some(body.clone())).await;
    assert_eq!(status, 401, "a switch needs a token");
    let (status, answer) = system.api("PUT", &path, Some(&token), Some(body)).await;
    assert!((200..300).contains(&status), "{status} {answer}");

    let (_, answer) = system.deliver("ks-1", &push("acme/ks", "sha-1")).await;
    let id = execution_id(&answer);
    let record = system.wait_one(&id, DEADLINE).await;
    assert_eq!(record.status, ExecutionStatus::Blocked, "{record:?}");
    let reason = record.blocked_reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("kill_switch:") && reason.contains(CONNECTOR),
        "{reason}"
    );
    let ledger = system.ledger(&id).await;
    let blocked = ledger
        .iter()
        .find(|e| e.kind == EventKind::Blocked)
        .expect("a BLOCKED event");
    let detail = blocked.detail.to_string();
    assert!(
        detail.contains("e2e-tester") && detail.contains("vendor outage"),
        "the audit fields are in the ledger: {detail}"
    );
    assert_eq!(connector.total(), 0);

    // Cleared, calls flow again.
    let (status, answer) = system.api("DELETE", &path, Some(&token), None).await;
    assert_eq!(status, 200, "{answer}");
    let (_, answer) = system.deliver("ks-2", &push("acme/ks", "sha-2")).await;
    let id = execution_id(&answer);
    let record = system.wait_one(&id, DEADLINE).await;
    assert_eq!(record.status, ExecutionStatus::Succeeded, "{record:?}");
    assert_eq!(connector.total(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_makes_a_new_linked_execution() {
    let connector = RecordingConnector::start().await;
    let system = system(&connector, ManifestSpec::default()).await;
    let (_, answer) = system.deliver("rp-1", &push("acme/replay", "sha")).await;
    let original = execution_id(&answer);
    system.wait_one(&original, DEADLINE).await;

    let (status, answer) = system
        .api(
            "POST",
            &format!("/v1/executions/{original}/replay"),
            Some(&system.token(TENANT)),
            Some(json!({"replay_reason": "ticket lost downstream"})),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["replay_of"], original.as_str());
    let replay = execution_id(&answer);
    assert_ne!(replay, original);

    let record = system.wait_one(&replay, DEADLINE).await;
    assert_eq!(record.status, ExecutionStatus::Succeeded, "{record:?}");
    assert_eq!(record.replay_of.as_ref(), Some(&original));

    let requested: Vec<_> = system
        .ledger(&original)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::ReplayRequested)
        .collect();
    assert_eq!(requested.len(), 1);
    let detail = requested[0].detail.to_string();
    assert!(detail.contains("e2e-tester") && detail.contains("ticket lost downstream"));
    let ledger = system.ledger(&replay).await;
    assert_eq!(
        count_kind(&ledger, EventKind::ReplayCreated),
        1,
        "{ledger:?}"
    );
    let received = ledger
        .iter()
        .find(|e| e.kind == EventKind::Received)
        .expect("the replay's RECEIVED");
    assert_eq!(received.detail["payload"], push("acme/replay", "sha"));

    // The replay called the connector under its own keys.
    let tickets = keys(&connector.calls_to("/tickets"));
    assert_eq!(tickets, [format!("{original}:0"), format!("{replay}:0")]);
    let (status, view) = system
        .api(
            "GET",
            &format!("/v1/executions/{replay}"),
            Some(&system.token(TENANT)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["execution"]["replay_of"], original.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_refuses_missing_bad_and_foreign_tokens() {
    let connector = RecordingConnector::start().await;
    let system = system(&connector, ManifestSpec::default()).await;
    let (_, answer) = system.deliver("auth-1", &push("acme/auth", "sha")).await;
    let id = execution_id(&answer);
    system.wait_one(&id, DEADLINE).await;
    let replay = format!("/v1/executions/{id}/replay");
    let body = || Some(json!({"replay_reason": "x"}));

    let (status, answer) = system.api("POST", &replay, None, body()).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "unauthorized");

    let forged = sluice_local::DevAuth::generate()
        .mint(TENANT, "mallory", 60)
        .unwrap();
    let (status, _) = system.api("POST", &replay, Some(&forged), body()).await;
    assert_eq!(status, 401, "a token signed with another secret");

    let other = system.token("other-tenant");
    let (status, answer) = system.api("POST", &replay, Some(&other), body()).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "not_found");
    let (status, _) = system
        .api("GET", &format!("/v1/executions/{id}"), Some(&other), None)
        .await;
    assert_eq!(status, 404);

    let mine = system.token(TENANT);
    let (status, answer) = system
        .api("POST", &replay, Some(&mine), Some(json!({})))
        .await;
    assert_eq!(status, 400, "a replay needs a reason: {answer}");

    // None of the refused requests created anything.
    let (status, list) = system.api("GET", "/v1/executions", Some(&mine), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let ledger = system.ledger(&id).await;
    assert_eq!(count_kind(&ledger, EventKind::ReplayRequested), 0);
    assert_eq!(connector.count("/tickets"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_captured_github_request_resent_with_a_new_delivery_header_runs_nothing_more() {
    let connector = RecordingConnector::start().await;
    let system = system(&connector, ManifestSpec::default()).await;
    let payload = push("acme/captured", "sha");
    let (status, first) = system.deliver("cap-1", &payload).await;
    assert_eq!(
        (status, &first["status"]),
        (202, &json!("accepted")),
        "{first}"
    );
    let id = execution_id(&first);
    let record = system.wait_one(&id, DEADLINE).await;
    assert_eq!(record.status, ExecutionStatus::Succeeded, "{record:?}");
    assert_eq!(connector.total(), 2);

    // The same signed body, with fresh X-GitHub-Delivery headers (GitHub does not sign them).
    for n in 2..=4 {
        let (status, again) = system.deliver(&format!("cap-{n}"), &payload).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(
            again,
            json!({"execution_id": id, "status": "duplicate"}),
            "the same delivery, whatever the header says"
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(connector.total(), 2, "no second tool call");
    assert_eq!(connector.count("/tickets"), 1);
    let ledger = system.ledger(&id).await;
    assert_eq!(count_kind(&ledger, EventKind::Received), 1, "{ledger:?}");
    assert_eq!(
        count_kind(&ledger, EventKind::ToolSucceeded),
        2,
        "{ledger:?}"
    );
    let (status, list) = system
        .api("GET", "/v1/executions", Some(&system.token(TENANT)), None)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tenants_with_one_run_key_get_two_executions_and_both_tool_calls() {
    let connector = RecordingConnector::start().await;
    let spec = ManifestSpec {
        tenant_source: true,
        single_stage: true,
        ..ManifestSpec::default()
    };
    let system = system(&connector, spec).await;
    let of = |org: &str| {
        let mut payload = push("shared/app", "sha");
        payload["org"] = json!(org);
        payload
    };
    let (sa, a) = system
        .deliver_to(TENANT_SOURCE, "t-a", &of("tenant-a"))
        .await;
    let (sb, b) = system
        .deliver_to(TENANT_SOURCE, "t-b", &of("tenant-b"))
        .await;
    assert_eq!((sa, sb), (202, 202), "{a} {b}");
    assert_eq!(
        (&a["status"], &b["status"]),
        (&json!("accepted"), &json!("accepted"))
    );
    let (id_a, id_b) = (execution_id(&a), execution_id(&b));
    assert_ne!(id_a, id_b, "tenant b did not join tenant a's run");

    let records = system
        .wait_terminal(&[id_a.clone(), id_b.clone()], DEADLINE)
        .await;
    let tenants: Vec<_> = records
        .iter()
        .map(|r| r.tenant.as_str().to_owned())
        .collect();
    assert_eq!(tenants, ["tenant-a", "tenant-b"]);
    for record in &records {
        assert_eq!(record.status, ExecutionStatus::Succeeded, "{record:?}");
        assert_eq!(record.run_key.as_str(), "shared/app");
    }
    let tickets: BTreeSet<String> = keys(&connector.calls_to("/tickets")).into_iter().collect();
    assert_eq!(
        tickets,
        BTreeSet::from([format!("{id_a}:0"), format!("{id_b}:0")]),
        "each tenant's tool call was made"
    );
    assert_eq!(connector.total(), 2);
}
