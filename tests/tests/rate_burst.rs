//! 500 deliveries of one source over its rate limit, on DynamoDB Local, with every DynamoDB
//! request counted on the wire (`sluice_tests::counting`): each delivery costs a constant
//! number of requests however long the backlog (docs/architecture.md: 1 within the rate, 3
//! over it, 4 when the backlog starts again), and the delayed ones are spread over the later
//! minutes, at most `limit` a minute and at distinct instants within each.

use std::collections::BTreeMap;

use futures::StreamExt;
use sluice::adapters::dynamodb::DynamoRateLimiter;
use sluice::domain::ids::SourceId;
use sluice::domain::rate::{window_of, RateDecision};
use sluice::domain::time::Timestamp;
use sluice::ports::RateLimiter;
use sluice_tests::contract::t0;
use sluice_tests::counting::{counted_sdk_config, RequestCounter};
use sluice_tests::engines::{self, Engine};

const DELIVERIES: usize = 500;
const LIMIT: u32 = 10;
/// The documented most a delivery costs (over the rate, the backlog starting again).
const MAX_REQUESTS: u64 = 4;

async fn counted_limiter(counter: &RequestCounter) -> DynamoRateLimiter {
    let (_, table) = engines::fresh_table(Engine::DynamoDbLocal).await;
    let config = counted_sdk_config(Engine::DynamoDbLocal, counter).await;
    DynamoRateLimiter::new(aws_sdk_dynamodb::Client::new(&config), table)
}

/// The instant each delayed delivery runs at, by minute window.
fn by_window(now: Timestamp, delays: &[u64]) -> BTreeMap<i64, Vec<u64>> {
    let mut windows: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for delay in delays {
        let at = now.plus_secs(*delay as i64);
        windows.entry(window_of(at)).or_default().push(*delay);
    }
    windows
}

/// Each later window gets at most `LIMIT` deliveries, at instants that are not all equal.
fn assert_spread(now: Timestamp, delays: &[u64]) {
    let windows = by_window(now, delays);
    let expected_windows = (DELIVERIES - LIMIT as usize).div_ceil(LIMIT as usize);
    assert_eq!(windows.len(), expected_windows, "{windows:?}");
    for (window, instants) in &windows {
        assert!(*window > window_of(now), "delayed into a later minute");
        assert!(instants.len() <= LIMIT as usize, "{window}: {instants:?}");
        let first = instants[0];
        assert!(
            instants.len() == 1 || instants.iter().any(|i| *i != first),
            "{window}: every delivery at one instant: {instants:?}"
        );
    }
}

#[tokio::test]
async fn a_burst_over_the_limit_costs_constant_requests_per_delivery() {
    let counter = RequestCounter::default();
    let limiter = counted_limiter(&counter).await;
    let source = SourceId::parse("burst").unwrap();
    let now = t0();

    let mut delays = Vec::new();
    let mut costs: BTreeMap<u64, usize> = BTreeMap::new();
    for n in 0..DELIVERIES {
        counter.reset();
        let decision = limiter
            .register(&source, LIMIT, now)
            .await
            .expect("register");
        let counts = counter.snapshot();
        let requests = counter.total("dynamodb");
        assert_eq!(counts.len(), 1, "only UpdateItem: {counts:?}");
        assert!(requests <= MAX_REQUESTS, "delivery {n}: {counts:?}");
        *costs.entry(requests).or_default() += 1;
        match decision {
            RateDecision::Within => assert!(n < LIMIT as usize, "{n} within"),
            RateDecision::Over { delay_secs } => delays.push(delay_secs),
        }
    }
    println!("requests per delivery -> deliveries: {costs:?}");
    // Within: one conditional count. Over: the full count, the backlog's position, its
    // window's count; the first over the limit starts the backlog (one more).
    assert_eq!(
        costs,
        BTreeMap::from([
            (1, LIMIT as usize),
            (3, DELIVERIES - LIMIT as usize - 1),
            (4, 1)
        ])
    );
    assert_eq!(delays.len(), DELIVERIES - LIMIT as usize);
    assert!(delays.windows(2).all(|d| d[0] < d[1]), "in order, distinct");
    assert_spread(now, &delays);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_burst_is_spread_over_the_windows() {
    let counter = RequestCounter::default();
    let limiter = counted_limiter(&counter).await;
    let source = SourceId::parse("storm").unwrap();
    let now = t0();
    counter.reset();

    let decisions: Vec<RateDecision> = futures::stream::iter(0..DELIVERIES)
        .map(|_| limiter.register(&source, LIMIT, now))
        .buffer_unordered(32)
        .map(|r| r.expect("register"))
        .collect()
        .await;
    let requests = counter.total("dynamodb");
    println!(
        "{DELIVERIES} concurrent deliveries: {requests} DynamoDB requests ({:.2} each)",
        requests as f64 / DELIVERIES as f64
    );
    assert!(
        requests <= MAX_REQUESTS * DELIVERIES as u64,
        "{requests} requests"
    );
    let within = decisions
        .iter()
        .filter(|d| **d == RateDecision::Within)
        .count();
    assert_eq!(within, LIMIT as usize);
    let mut delays: Vec<u64> = decisions
        .iter()
        .filter_map(|d| match d {
            RateDecision::Over { delay_secs } => Some(*delay_secs),
            RateDecision::Within => None,
        })
        .collect();
    delays.sort_unstable();
    // Every delayed delivery has its own instant (limit 10: 6 s apart).
    assert!(delays.windows(2).all(|d| d[0] < d[1]), "{delays:?}");
    assert_spread(now, &delays);
}
