//! `ExecutionStore::list` by status is bounded: over a tenant with 5,000 executions of which 3
//! are BLOCKED, every call makes at most `ceil(MAX_LIST_EVALUATED / 200)` = 5 DynamoDB
//! requests (counted on the wire, `sluice_tests::counting`, on DynamoDB Local), and the
//! cursor walk finds exactly the 3, each once, newest first. The same walk on the memory
//! adapter answers the same pages, and the bounded listing contract
//! (`contract::execution::run_bounded_listing`) runs on DynamoDB Local as on memory.

use futures::{StreamExt, TryStreamExt};
use sluice::adapters::dynamodb::DynamoExecutionStore;
use sluice::adapters::memory::MemoryExecutionStore;
use sluice::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionStatus, NewExecution, UpdateOutcome,
};
use sluice::domain::ids::{ExecutionId, PipelineName, RunKey, SourceId, TenantId};
use sluice::domain::time::Timestamp;
use sluice::ports::{ExecutionStore, MAX_LIST_EVALUATED};
use sluice_tests::contract::execution::{assert_found_exactly, settled, walk_status, Walk};
use sluice_tests::contract::t0;
use sluice_tests::counting::{counted_sdk_config, RequestCounter};
use sluice_tests::engines::{self, Engine};

const TOTAL: u32 = 5_000;
/// The BLOCKED ones: the newest, one in the middle, the oldest.
const BLOCKED: [u32; 3] = [TOTAL - 1, TOTAL / 2, 0];
/// Creates in flight at once while seeding.
const SEED_CONCURRENCY: usize = 16;
/// DynamoDB requests one list call may make: the documented bound (5 with the default batch
/// of 200 items per `Query`).
const MAX_REQUESTS_PER_CALL: u64 = 5;
/// Pages per walk: the tenant in slices of `MAX_LIST_EVALUATED`, plus the final empty page that
/// follows a slice ending exactly at the oldest execution.
const EXPECTED_PAGES: [usize; 6] = [1, 0, 1, 0, 1, 0];

fn tenant() -> TenantId {
    TenantId::parse("bulk").unwrap()
}

fn new_execution(n: u32) -> NewExecution {
    NewExecution {
        id: ExecutionId::random(),
        tenant: tenant(),
        source: SourceId::parse("github").unwrap(),
        pipeline: PipelineName::parse("review").unwrap(),
        run_key: RunKey::parse(format!("bulk/app@{n}")).unwrap(),
        replay_of: None,
        not_before: None,
    }
}

/// Creates `TOTAL` executions of one tenant, the `n`th at `t + n` ms (so newest first is by
/// `n` descending), `SEED_CONCURRENCY` at a time; blocks those of [`BLOCKED`]. Returns their
/// ids, newest first.
async fn seed<St: ExecutionStore>(store: &St, t: Timestamp) -> Vec<ExecutionId> {
    let ids: Vec<ExecutionId> = futures::stream::iter(0..TOTAL)
        .map(|n| async move {
            let at = t.plus_millis(i64::from(n));
            match store.create(new_execution(n), at).await? {
                CreateOutcome::Created(r) => Ok::<_, sluice::StoreError>(r.id),
                other => panic!("a fresh id exists: {other:?}"),
            }
        })
        .buffered(SEED_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("seed");
    let mut blocked = Vec::new();
    for n in BLOCKED {
        let id = &ids[n as usize];
        let change = ExecutionChange {
            status: Some(ExecutionStatus::Blocked),
            ..ExecutionChange::default()
        };
        let updated = store.update(id, 1, change, t).await.expect("update");
        assert!(matches!(updated, UpdateOutcome::Updated(_)), "{updated:?}");
        blocked.push(id.clone());
    }
    blocked
}

/// The walk of BLOCKED in pages of 10, retried while an index is catching up.
async fn walk<St: ExecutionStore>(
    store: &St,
    expected: &[ExecutionId],
    before_each: impl Fn() + Clone,
    after_each: impl Fn(usize) + Clone,
) -> Walk {
    let tenant = tenant();
    settled(
        || {
            walk_status(
                store,
                &tenant,
                ExecutionStatus::Blocked,
                10,
                10,
                before_each.clone(),
                after_each.clone(),
            )
        },
        |w| w.ids == expected,
    )
    .await
}

#[tokio::test]
async fn list_by_status_is_bounded_on_dynamodb_local() {
    // EXPECTED_PAGES assumes it.
    const { assert!(MAX_LIST_EVALUATED == 1_000) };
    let (_, table) = engines::fresh_table(Engine::DynamoDbLocal).await;
    let counter = RequestCounter::default();
    let config = counted_sdk_config(Engine::DynamoDbLocal, &counter).await;
    let store = DynamoExecutionStore::new(aws_sdk_dynamodb::Client::new(&config), &table);
    let expected = seed(&store, t0()).await;

    let per_call = std::sync::Mutex::new(Vec::new());
    let got = walk(
        &store,
        &expected,
        || counter.reset(),
        |_| per_call.lock().unwrap().push(counter.snapshot()),
    )
    .await;
    assert_found_exactly(&got, &expected);
    assert_eq!(got.page_sizes, EXPECTED_PAGES);
    let per_call = per_call.into_inner().unwrap();
    // Only the last walk (the one asserted) is kept in view.
    let last_walk = &per_call[per_call.len() - got.page_sizes.len()..];
    println!("DynamoDB requests per list call: {last_walk:?}");
    for (call, counts) in last_walk.iter().enumerate() {
        let queries = counts.get("dynamodb:Query").copied().unwrap_or(0);
        assert_eq!(counts.len(), 1, "call {call}: only Query: {counts:?}");
        assert!(
            (1..=MAX_REQUESTS_PER_CALL).contains(&queries),
            "call {call}: {queries} requests, over the bound"
        );
    }
    // Every call that stopped at the bound made exactly the 5 requests of 200 items.
    let full: Vec<u64> = last_walk[..5].iter().map(|c| c["dynamodb:Query"]).collect();
    assert_eq!(full, [5, 5, 5, 5, 5]);
    assert_eq!(last_walk[5]["dynamodb:Query"], 1, "the empty last page");
}

#[tokio::test]
async fn list_by_status_is_bounded_on_memory() {
    let store = MemoryExecutionStore::new();
    let expected = seed(&store, t0()).await;
    let got = walk(&store, &expected, || {}, |_| {}).await;
    assert_found_exactly(&got, &expected);
    assert_eq!(got.page_sizes, EXPECTED_PAGES);
}

#[tokio::test]
async fn bounded_listing_contract_on_dynamodb_local() {
    let (client, table) = engines::fresh_table(Engine::DynamoDbLocal).await;
    sluice_tests::contract::execution::run_bounded_listing(&DynamoExecutionStore::new(
        client, table,
    ))
    .await;
}
