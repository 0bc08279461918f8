//! Race suites: many concurrent callers against one store on a real engine, asserting exact
//! counts every round. Each suite is bounded in callers, rounds and time, and stops by itself.
//!
//! Rounds default to 20 (`SLUICE_RACE_ROUNDS` overrides). Every suite prints one summary line,
//! `race <name> rounds=<n> callers=<n> violations=<n>`, and fails if any round broke the rule.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rand::Rng;
use sluice::domain::connector::{
    Admission, AdmissionRequest, BreakerSettings, BreakerSignal, DeferReason,
};
use sluice::domain::delivery::{ClaimOutcome, DeliveryClaim};
use sluice::domain::execution::{LeaseOutcome, NewExecution};
use sluice::domain::ids::{ConnectorId, DeliveryId, ExecutionId, HolderId, SourceId};
use sluice::domain::intake::AcceptOutcome;
use sluice::domain::semaphore::{AcquireOutcome, SemaphoreKey};
use sluice::domain::time::Timestamp;
use sluice::ports::{
    AlertStore, ConnectorStore, DeliveryStore, ExecutionStore, IntakeStore, Ledger, SemaphoreStore,
};
use sluice::{Clock, SystemClock};

use crate::{contract, id};

/// How long one round may take before the suite fails.
const ROUND_LIMIT: Duration = Duration::from_secs(90);

/// Rounds per suite: `SLUICE_RACE_ROUNDS` or 20.
pub fn rounds() -> u32 {
    std::env::var("SLUICE_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// What one suite saw.
#[derive(Debug, Default)]
pub struct RaceReport {
    pub name: &'static str,
    pub rounds: u32,
    pub callers: usize,
    pub violations: Vec<String>,
}

impl RaceReport {
    fn new(name: &'static str, callers: usize) -> Self {
        Self {
            name,
            callers,
            ..Self::default()
        }
    }

    fn check(&mut self, round: u32, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.violations.push(format!("round {round}: {}", what()));
        }
    }

    /// Prints the summary line and fails on any violation.
    pub fn finish(self, engine: &str) {
        println!(
            "race {} engine={engine} rounds={} callers={} violations={}",
            self.name,
            self.rounds,
            self.callers,
            self.violations.len()
        );
        assert!(
            self.violations.is_empty(),
            "{}: {:#?}",
            self.name,
            self.violations
        );
    }
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(ROUND_LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: round did not finish within {ROUND_LIMIT:?}"))
}

async fn spawn_all<T: Send + 'static>(
    tasks: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    join_all(handles)
        .await
        .into_iter()
        .map(|r| r.expect("race task panicked"))
        .collect()
}

/// `callers` concurrent claims of one delivery: exactly one wins, every other learns the
/// winner's execution id.
pub async fn delivery_claims<S>(store: S, callers: usize) -> RaceReport
where
    S: DeliveryStore + Clone + 'static,
{
    let mut report = RaceReport::new("delivery_claims", callers);
    for round in 0..rounds() {
        let delivery = DeliveryId::parse(format!("race-{}", ulid::Ulid::new())).expect("id");
        let now = SystemClock.now();
        let outcomes = bounded(
            "delivery_claims",
            spawn_all((0..callers).map(|_| {
                let (store, delivery) = (store.clone(), delivery.clone());
                async move {
                    let claim = DeliveryClaim {
                        source: id!(SourceId, "github"),
                        delivery_id: delivery,
                        tenant: id!(TenantId, "acme"),
                        execution_id: ExecutionId::random(),
                        payload_hash: "h".into(),
                    };
                    store.claim(claim, now, 3600).await.expect("claim")
                }
            })),
        )
        .await;
        let winners: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o, ClaimOutcome::Claimed(_)))
            .map(|o| o.execution_id().clone())
            .collect();
        report.check(round, winners.len() == 1, || {
            format!("{} winners", winners.len())
        });
        if let Some(winner) = winners.first() {
            let agree = outcomes
                .iter()
                .filter(|o| o.execution_id() == winner)
                .count();
            report.check(round, agree == callers, || {
                format!("{agree} of {callers} agree on the winner")
            });
        }
        report.rounds += 1;
    }
    report
}

/// `workers` concurrent lease requests on one execution: exactly one runs it.
pub async fn execution_leases<S>(store: S, workers: usize) -> RaceReport
where
    S: ExecutionStore + Clone + 'static,
{
    let mut report = RaceReport::new("execution_leases", workers);
    for round in 0..rounds() {
        let source = id!(SourceId, "github");
        let run_key =
            sluice::domain::ids::RunKey::parse(format!("race@{}", ulid::Ulid::new())).expect("id");
        let new = NewExecution {
            id: ExecutionId::for_run_key(&id!(TenantId, "acme"), &source, &run_key),
            tenant: id!(TenantId, "acme"),
            source,
            pipeline: id!(PipelineName, "review"),
            run_key,
            replay_of: None,
            not_before: None,
        };
        let exec = new.id.clone();
        let now = SystemClock.now();
        store.create(new, now).await.expect("create");
        let outcomes = bounded(
            "execution_leases",
            spawn_all((0..workers).map(|_| {
                let (store, exec) = (store.clone(), exec.clone());
                async move {
                    store
                        .acquire_lease(&exec, &HolderId::random(), now, 60)
                        .await
                        .expect("lease")
                }
            })),
        )
        .await;
        let winners: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                LeaseOutcome::Acquired(r) => r.lease.as_ref().map(|l| l.owner.clone()),
                _ => None,
            })
            .collect();
        report.check(round, winners.len() == 1, || {
            format!("{} lease winners", winners.len())
        });
        let held = outcomes
            .iter()
            .filter(
                |o| matches!(o, LeaseOutcome::Held { owner, .. } if Some(owner) == winners.first()),
            )
            .count();
        report.check(round, held == workers - 1, || {
            format!("{held} saw the winner's lease")
        });
        report.rounds += 1;
    }
    report
}

fn probe_request(connector: &ConnectorId, now: Timestamp) -> AdmissionRequest {
    AdmissionRequest {
        connector: connector.clone(),
        tool: id!(ToolName, "call"),
        tenant: id!(TenantId, "acme"),
        holder: HolderId::random(),
        limit: 1000,
        slot_ttl_secs: 120,
        settings: BreakerSettings {
            failure_threshold: 1,
            cooldown_secs: 30,
            probe_timeout_secs: 20,
            ..BreakerSettings::default()
        },
        now,
    }
}

/// A breaker OPEN past its cooldown, `callers` concurrent admissions: exactly one probe, the
/// rest deferred; the probe abandoned, after its timeout exactly one caller takes it over.
pub async fn breaker_probe<C>(store: C, callers: usize) -> RaceReport
where
    C: ConnectorStore + Clone + 'static,
{
    let mut report = RaceReport::new("breaker_probe", callers);
    for round in 0..rounds() {
        let connector = ConnectorId::parse(format!("race-{}", ulid::Ulid::new())).expect("id");
        let t = SystemClock.now();
        let first = probe_request(&connector, t);
        let Admission::Admitted(ticket) = store.admit(&first).await.expect("admit") else {
            panic!("setup admission refused")
        };
        store
            .settle(&ticket, BreakerSignal::Unhealthy, &first.settings, t)
            .await
            .expect("settle");
        // Cooldown elapsed: the probe race; then the probe lease lapses: the takeover race.
        for (phase, at) in [("probe", t.plus_secs(30)), ("takeover", t.plus_secs(50))] {
            let outcomes = bounded(
                "breaker_probe",
                spawn_all((0..callers).map(|_| {
                    let (store, req) = (store.clone(), probe_request(&connector, at));
                    async move { store.admit(&req).await.expect("admit") }
                })),
            )
            .await;
            let probes = outcomes
                .iter()
                .filter(|o| matches!(o, Admission::Admitted(t) if t.probe))
                .count();
            let admitted = outcomes
                .iter()
                .filter(|o| matches!(o, Admission::Admitted(_)))
                .count();
            let deferred = outcomes
                .iter()
                .filter(|o| {
                    matches!(
                        o,
                        Admission::Deferred {
                            reason: DeferReason::ProbeInFlight,
                            ..
                        }
                    )
                })
                .count();
            report.check(round, probes == 1 && admitted == 1, || {
                format!("{phase}: {admitted} admitted, {probes} probes")
            });
            report.check(round, deferred == callers - 1, || {
                format!("{phase}: {deferred} deferred")
            });
        }
        report.rounds += 1;
    }
    report
}

/// Limit `limit`, `callers` concurrent acquirers that each hold a slot for a while: never more
/// than `limit` holders at once, and every caller gets through. Then `limit` holders die
/// without releasing: after their TTL exactly `limit` of `callers` newcomers get a slot.
pub async fn semaphore_holders<S>(store: S, limit: u32, callers: usize) -> RaceReport
where
    S: SemaphoreStore + Clone + 'static,
{
    let mut report = RaceReport::new("semaphore_holders", callers);
    for round in 0..rounds() {
        let key = SemaphoreKey::SourcePipelines(
            SourceId::parse(format!("race-{}", ulid::Ulid::new())).expect("id"),
        );
        let holding = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let done = bounded(
            "semaphore_holders",
            spawn_all((0..callers).map(|_| {
                let (store, key) = (store.clone(), key.clone());
                let (holding, peak) = (holding.clone(), peak.clone());
                async move {
                    let me = HolderId::random();
                    loop {
                        let now = SystemClock.now();
                        match store
                            .acquire(&key, &me, limit, 60, now)
                            .await
                            .expect("acquire")
                        {
                            AcquireOutcome::Acquired { .. } => break,
                            AcquireOutcome::Full { .. } => {
                                let wait = rand::rng().random_range(100..300);
                                tokio::time::sleep(Duration::from_millis(wait)).await;
                            }
                        }
                    }
                    // Counted only while the store says we hold the slot.
                    let now_holding = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now_holding, Ordering::SeqCst);
                    let hold = rand::rng().random_range(5..25);
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    store.release(&key, &me).await.expect("release")
                }
            })),
        )
        .await;
        let peak = peak.load(Ordering::SeqCst);
        report.check(round, peak <= limit, || {
            format!("{peak} holders at once, limit {limit}")
        });
        let released = done.iter().filter(|r| **r).count();
        report.check(round, released == callers, || {
            format!("{released} of {callers} released")
        });
        let left = store.in_flight(&key).await.expect("in_flight");
        report.check(round, left == 0, || {
            format!("{left} slots counted after all released")
        });

        // Dead holders: `limit` take slots with a 10 s lease and vanish.
        let t = SystemClock.now();
        for _ in 0..limit {
            let got = store
                .acquire(&key, &HolderId::random(), limit, 10, t)
                .await
                .expect("acquire");
            report.check(
                round,
                matches!(got, AcquireOutcome::Acquired { .. }),
                || "setup".into(),
            );
        }
        let later = t.plus_secs(11);
        let outcomes = bounded(
            "semaphore_reclaim",
            spawn_all((0..callers).map(|_| {
                let (store, key) = (store.clone(), key.clone());
                async move {
                    store
                        .acquire(&key, &HolderId::random(), limit, 60, later)
                        .await
                        .expect("acquire")
                }
            })),
        )
        .await;
        let won = outcomes
            .iter()
            .filter(|o| matches!(o, AcquireOutcome::Acquired { .. }))
            .count();
        report.check(round, won == limit as usize, || {
            format!("{won} got reclaimed slots, limit {limit}")
        });
        let counted = store.in_flight(&key).await.expect("in_flight");
        report.check(round, counted == limit, || {
            format!("{counted} counted after reclaim")
        });
        report.rounds += 1;
    }
    report
}

/// `callers` concurrent claims of one alert's dedup window (as many Lambda instances raising
/// the same alert): exactly one owns it; once it has ended, exactly one owns the next.
pub async fn alert_dedup<S>(store: S, callers: usize) -> RaceReport
where
    S: AlertStore + Clone,
{
    const WINDOW_SECS: u64 = 90;
    let mut report = RaceReport::new("alert_dedup", callers);
    for round in 0..rounds() {
        let key = format!("run.failed|4:race|-|{}", ulid::Ulid::new());
        let start = SystemClock.now();
        for (window, now) in [(1, start), (2, start.plus_secs(WINDOW_SECS as i64))] {
            let owners = bounded(
                "alert_dedup",
                spawn_all((0..callers).map(|_| {
                    let (store, key) = (store.clone(), key.clone());
                    async move {
                        store
                            .claim_dedup(&key, WINDOW_SECS, now)
                            .await
                            .expect("claim_dedup")
                    }
                })),
            )
            .await
            .into_iter()
            .filter(|owned| *owned)
            .count();
            report.check(round, owners == 1, || {
                format!("window {window}: {owners} owners")
            });
        }
        report.rounds += 1;
    }
    report
}

/// Rounds of the intake races: at most 5 (each sends hundreds of transactions).
fn intake_rounds() -> u32 {
    rounds().min(5)
}

/// `callers` concurrent intake writes of one delivery: exactly one is accepted, every other is
/// a duplicate naming its execution; one execution and one RECEIVED event exist.
pub async fn intake_accepts<I, E, L>(
    intake: I,
    executions: E,
    ledger: L,
    callers: usize,
) -> RaceReport
where
    I: IntakeStore + Clone + 'static,
    E: ExecutionStore,
    L: Ledger,
{
    let mut report = RaceReport::new("intake_accepts", callers);
    for round in 0..intake_rounds() {
        let delivery = format!("race-{}", ulid::Ulid::new());
        let now = SystemClock.now();
        let outcomes = bounded(
            "intake_accepts",
            spawn_all((0..callers).map(|_| {
                let (intake, delivery) = (intake.clone(), delivery.clone());
                async move {
                    let exec = ExecutionId::random();
                    let write = contract::intake::write("github", &delivery, &exec, 1000, now);
                    let outcome = intake.accept(write).await.expect("accept");
                    (exec, outcome)
                }
            })),
        )
        .await;
        let accepted: Vec<_> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, AcceptOutcome::Accepted(_)))
            .map(|(exec, _)| exec.clone())
            .collect();
        report.check(round, accepted.len() == 1, || {
            format!("{} accepted", accepted.len())
        });
        let Some(winner) = accepted.first() else {
            report.rounds += 1;
            continue;
        };
        let duplicates = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, AcceptOutcome::Duplicate(d) if d.execution_id == *winner))
            .count();
        report.check(round, duplicates == callers - 1, || {
            let others: Vec<_> = outcomes
                .iter()
                .filter(|(_, o)| {
                    !matches!(o, AcceptOutcome::Duplicate(_) | AcceptOutcome::Accepted(_))
                })
                .map(|(_, o)| format!("{o:?}"))
                .collect();
            format!("{duplicates} duplicates of the winner; others: {others:?}")
        });
        let mut runs = 0;
        for (exec, _) in &outcomes {
            let stored = executions.get(exec).await.expect("get");
            let events = ledger.events(exec).await.expect("events");
            if stored.is_some() || !events.is_empty() {
                runs += 1;
                report.check(round, events.len() == 1 && stored.is_some(), || {
                    format!(
                        "{exec}: {} events, execution {}",
                        events.len(),
                        stored.is_some()
                    )
                });
            }
        }
        report.check(round, runs == 1, || format!("{runs} runs stored"));
        report.rounds += 1;
    }
    report
}

/// `callers` different deliveries of one source at once, with a rate limit of `limit` a
/// minute: exactly `limit` are accepted, every other is over the rate.
pub async fn intake_rate<I>(intake: I, limit: u32, callers: usize) -> RaceReport
where
    I: IntakeStore + Clone + 'static,
{
    let mut report = RaceReport::new("intake_rate", callers);
    for round in 0..intake_rounds() {
        // A source of its own per round: each starts with an empty window.
        let source = format!("src-{}", ulid::Ulid::new().to_string().to_lowercase());
        let now = SystemClock.now();
        let outcomes = bounded(
            "intake_rate",
            spawn_all((0..callers).map(|n| {
                let (intake, source) = (intake.clone(), source.clone());
                async move {
                    let exec = ExecutionId::random();
                    let write =
                        contract::intake::write(&source, &format!("d-{n}"), &exec, limit, now);
                    intake.accept(write).await.expect("accept")
                }
            })),
        )
        .await;
        let accepted = outcomes
            .iter()
            .filter(|o| matches!(o, AcceptOutcome::Accepted(_)))
            .count();
        let over = outcomes
            .iter()
            .filter(|o| matches!(o, AcceptOutcome::OverRate))
            .count();
        report.check(round, accepted == limit as usize, || {
            format!("{accepted} accepted under a limit of {limit}")
        });
        report.check(round, accepted + over == callers, || {
            format!("{accepted} accepted, {over} over the rate, of {callers}")
        });
        report.rounds += 1;
    }
    report
}
