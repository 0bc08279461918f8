//! Contract of [`ExecutionStore`]: one record per id, forward-only versioned updates, leases
//! ([`run`]); a tenant's executions page by page and the sweeper's stale view
//! ([`run_listing`]); a listing by status that evaluates at most [`MAX_LIST_EVALUATED`]
//! executions per call and still finds every match by its cursor ([`walk_status`], with
//! [`run_bounded_listing`] and `tests/tests/bounded_list.rs`).

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;

use sluice::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionRecord, ExecutionStatus as S, LeaseOutcome,
    NewExecution, UpdateOutcome,
};
use sluice::domain::ids::{ExecutionId, HolderId, TenantId};
use sluice::domain::time::Timestamp;
use sluice::ports::{ExecutionPage, ExecutionStore, MAX_LIST_EVALUATED, MAX_PAGE};
use sluice::StoreError;

use super::t0;
use crate::id;

/// How long a read of an index may take to show a write (DynamoDB's GSIs are eventually
/// consistent; the local engines are immediate in practice).
const INDEX_SETTLE: Duration = Duration::from_secs(2);

fn new_exec(tenant: &str) -> NewExecution {
    let source = id!(SourceId, "github");
    let run_key = id!(RunKey, "acme/app@abc123");
    NewExecution {
        // Always acme's id: a create by another tenant on this id must find acme's record.
        id: ExecutionId::for_run_key(&id!(TenantId, "acme"), &source, &run_key),
        tenant: id!(TenantId, tenant),
        source,
        pipeline: id!(PipelineName, "review"),
        run_key,
        replay_of: None,
        not_before: None,
    }
}

fn status(to: S) -> ExecutionChange {
    ExecutionChange {
        status: Some(to),
        ..ExecutionChange::default()
    }
}

fn updated(outcome: UpdateOutcome) -> sluice::domain::execution::ExecutionRecord {
    match outcome {
        UpdateOutcome::Updated(r) => r,
        other => panic!("expected Updated, got {other:?}"),
    }
}

/// Runs the whole contract on an empty store.
pub async fn run<St: ExecutionStore>(store: &St) {
    let now = t0();
    let new = new_exec("acme");
    let id = new.id.clone();

    let created = store.create(new.clone(), now).await.expect("create");
    let CreateOutcome::Created(rec) = created else {
        panic!("first create: {created:?}")
    };
    assert_eq!(
        (rec.version, rec.status, rec.stage, rec.attempt_count),
        (1, S::Received, 0, 0)
    );
    assert_eq!(rec.created_at, now);

    // A second create for the same run key returns the stored one, untouched.
    let again = store
        .create(new_exec("intruder"), now.plus_secs(1))
        .await
        .expect("create");
    assert_eq!(again, CreateOutcome::Existing(rec.clone()));
    assert_eq!(store.get(&id).await.expect("get"), Some(rec.clone()));

    // Versioned, forward-only updates.
    let v2 = updated(
        store
            .update(&id, 1, status(S::Queued), now)
            .await
            .expect("update"),
    );
    assert_eq!((v2.version, v2.status), (2, S::Queued));
    let stale = store
        .update(&id, 1, status(S::Running), now)
        .await
        .expect("update");
    assert_eq!(stale, UpdateOutcome::VersionConflict(v2.clone()));
    let back = store
        .update(&id, 2, status(S::Received), now)
        .await
        .expect("update");
    assert_eq!(
        back,
        UpdateOutcome::IllegalTransition {
            from: S::Queued,
            to: S::Received
        }
    );

    // Leases: one owner at a time, renewal by the owner, takeover only after expiry.
    let (a, b) = (HolderId::random(), HolderId::random());
    let got = store.acquire_lease(&id, &a, now, 60).await.expect("lease");
    let LeaseOutcome::Acquired(v3) = got else {
        panic!("lease: {got:?}")
    };
    assert_eq!(v3.version, 3);
    assert_eq!(
        v3.lease.as_ref().map(|l| (&l.owner, l.expires_at)),
        Some((&a, now.plus_secs(60)))
    );
    let held = store
        .acquire_lease(&id, &b, now.plus_secs(59), 60)
        .await
        .expect("lease");
    assert_eq!(
        held,
        LeaseOutcome::Held {
            owner: a.clone(),
            expires_at: now.plus_secs(60)
        }
    );
    let renewed = store
        .acquire_lease(&id, &a, now.plus_secs(30), 60)
        .await
        .expect("lease");
    assert!(matches!(renewed, LeaseOutcome::Acquired(ref r) if r.version == 4));
    let taken = store
        .acquire_lease(&id, &b, now.plus_secs(90), 60)
        .await
        .expect("lease");
    let LeaseOutcome::Acquired(v5) = taken else {
        panic!("takeover after expiry: {taken:?}")
    };
    assert_eq!(v5.lease.map(|l| l.owner), Some(b.clone()));

    // Every field a change may set, and clearing not_before.
    let change = ExecutionChange {
        status: Some(S::Running),
        stage: Some(2),
        attempt_count: Some(1),
        blocked_reason: Some("why".into()),
        not_before: Some(Some(now.plus_secs(30))),
        release_lease: false,
    };
    let v6 = updated(
        store
            .update(&id, 5, change, now.plus_secs(91))
            .await
            .expect("update"),
    );
    assert_eq!((v6.status, v6.stage, v6.attempt_count), (S::Running, 2, 1));
    assert_eq!(v6.blocked_reason.as_deref(), Some("why"));
    assert_eq!(v6.not_before, Some(now.plus_secs(30)));
    assert_eq!(v6.updated_at, now.plus_secs(91));
    let clear = ExecutionChange {
        not_before: Some(None),
        ..ExecutionChange::default()
    };
    let v7 = updated(store.update(&id, 6, clear, now).await.expect("update"));
    assert_eq!(v7.not_before, None);
    assert_eq!(v7.status, S::Running, "a change without a status keeps it");

    // Finishing releases the lease; a finished execution cannot be leased or moved.
    let done = ExecutionChange {
        status: Some(S::Succeeded),
        release_lease: true,
        ..Default::default()
    };
    let v8 = updated(store.update(&id, 7, done, now).await.expect("update"));
    assert_eq!((v8.status, v8.lease.clone()), (S::Succeeded, None));
    let finished = store
        .acquire_lease(&id, &a, now.plus_secs(200), 60)
        .await
        .expect("lease");
    assert_eq!(finished, LeaseOutcome::Finished(v8.clone()));
    let moved = store
        .update(&id, 8, status(S::Running), now)
        .await
        .expect("update");
    assert_eq!(
        moved,
        UpdateOutcome::IllegalTransition {
            from: S::Succeeded,
            to: S::Running
        }
    );
    let same = store
        .update(&id, 8, status(S::Succeeded), now)
        .await
        .expect("update");
    assert!(
        matches!(same, UpdateOutcome::IllegalTransition { .. }),
        "terminal is final: {same:?}"
    );
    assert_eq!(store.get(&id).await.expect("get"), Some(v8));

    // Unknown executions.
    let ghost = ExecutionId::random();
    assert_eq!(store.get(&ghost).await.expect("get"), None);
    assert_eq!(
        store
            .acquire_lease(&ghost, &a, now, 60)
            .await
            .expect("lease"),
        LeaseOutcome::NotFound
    );
    assert_eq!(
        store
            .update(&ghost, 1, status(S::Queued), now)
            .await
            .expect("update"),
        UpdateOutcome::NotFound
    );

    // A replay: a random id linked to its original.
    let mut replay = new_exec("acme");
    replay.id = ExecutionId::random();
    replay.replay_of = Some(id.clone());
    replay.not_before = Some(now.plus_secs(900));
    let r = store.create(replay.clone(), now).await.expect("create");
    let CreateOutcome::Created(r) = r else {
        panic!("replay create: {r:?}")
    };
    assert_eq!(r.replay_of, Some(id));
    assert_eq!(r.not_before, Some(now.plus_secs(900)));
}

/// The sweeper's view is ordered by the sweep position, max(last write, `not_before`): 1,000
/// QUEUED runs delayed an hour, written before one QUEUED run that waits on nothing, never
/// fill `stale`'s places; the lost run is the only one listed past its grace. An update that
/// sets a later `not_before` moves a run out of the view; one that leaves `not_before` alone
/// keeps it at its own time (listed, never missed).
pub async fn run_sweep_position<St: ExecutionStore>(store: &St) {
    let now = t0();
    let queued = |nb: Option<Timestamp>| ExecutionChange {
        status: Some(S::Queued),
        not_before: Some(nb),
        ..ExecutionChange::default()
    };
    let later = now.plus_secs(3_600);
    for n in 0..1_000 {
        let id = create_at(store, new_random("acme", n), now).await;
        change_at(store, &id, queued(Some(later)), now).await;
    }
    let lost = create_at(store, new_random("acme", 5_000), now).await;
    change_at(store, &lost, queued(None), now.plus_secs(1)).await;
    let past_grace = now.plus_secs(400);
    expect_stale(store, S::Queued, past_grace, 100, &[&lost]).await;

    // A later not_before moves the lost run out; a change without one brings it back.
    change_at(
        store,
        &lost,
        queued(Some(later.plus_secs(1))),
        now.plus_secs(2),
    )
    .await;
    expect_stale(store, S::Queued, past_grace, 100, &[]).await;
    let plain = ExecutionChange::default();
    change_at(store, &lost, plain, now.plus_secs(3)).await;
    expect_stale(store, S::Queued, past_grace, 100, &[&lost]).await;

    // Past the delay the delayed runs are listed, oldest position first, 100 at most.
    let found = store
        .stale(S::Queued, later.plus_secs(400), 100)
        .await
        .expect("stale");
    assert_eq!(found.len(), 100);
    assert_eq!(
        found[0].id, lost,
        "its position is its last write, before the delay"
    );
}

/// An execution of `tenant` with a fresh random id (so several share a table).
fn new_random(tenant: &str, n: u32) -> NewExecution {
    let mut new = new_exec(tenant);
    new.id = ExecutionId::random();
    new.run_key = id!(RunKey, &format!("acme/app@{n}"));
    new
}

/// Reads with `read` until `done` holds for the answer or [`INDEX_SETTLE`] has passed;
/// returns the last answer (the caller asserts on it).
pub async fn settled<T, F, Fut>(mut read: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + INDEX_SETTLE;
    loop {
        let got = read().await;
        if done(&got) || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that one page of `tenant`'s executions holds exactly `expected` (ids, in order) and
/// whether a next page is announced; returns its cursor.
async fn expect_page<St: ExecutionStore>(
    store: &St,
    tenant: &TenantId,
    status: Option<S>,
    limit: u32,
    cursor: Option<&str>,
    expected: &[&ExecutionId],
    more: bool,
) -> Option<String> {
    let want: (Vec<ExecutionId>, bool) = (expected.iter().map(|&i| i.clone()).collect(), more);
    let ids_and_more = |page: &ExecutionPage| {
        let ids = page.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        (ids, page.next_cursor.is_some())
    };
    let page = settled(
        || async {
            store
                .list(tenant, status, limit, cursor)
                .await
                .expect("list")
        },
        |page| ids_and_more(page) == want,
    )
    .await;
    assert_eq!(
        ids_and_more(&page),
        want,
        "list({tenant}, {status:?}, {limit}, {cursor:?}): (ids, more)"
    );
    page.next_cursor
}

/// Asserts that `stale(status, before, limit)` is exactly `expected` (ids, in order).
async fn expect_stale<St: ExecutionStore>(
    store: &St,
    status: S,
    before: Timestamp,
    limit: u32,
    expected: &[&ExecutionId],
) {
    let want: Vec<ExecutionId> = expected.iter().map(|&i| i.clone()).collect();
    let got = settled(
        || async {
            let found = store.stale(status, before, limit).await.expect("stale");
            found.into_iter().map(|r| r.id).collect::<Vec<_>>()
        },
        |got| *got == want,
    )
    .await;
    assert_eq!(got, want, "stale({status:?}, {before:?}, {limit})");
}

fn invalid<T: Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::InvalidInput { .. })),
        "{what}: expected InvalidInput, got {result:?}"
    );
}

/// Creates `new` at `at`; it must be new.
async fn create_at<St: ExecutionStore>(
    store: &St,
    new: NewExecution,
    at: Timestamp,
) -> ExecutionId {
    let out = store.create(new, at).await.expect("create");
    let CreateOutcome::Created(rec) = out else {
        panic!("create: {out:?}")
    };
    rec.id
}

/// Applies `change` at `at` on the current version.
async fn change_at<St: ExecutionStore>(
    store: &St,
    id: &ExecutionId,
    change: ExecutionChange,
    at: Timestamp,
) -> ExecutionRecord {
    let current = store.get(id).await.expect("get").expect("exists");
    updated(
        store
            .update(id, current.version, change, at)
            .await
            .expect("update"),
    )
}

/// Runs the listing contract on an empty store: a tenant's executions newest first, by
/// status, page by page; and the sweeper's `stale` view of unfinished executions.
pub async fn run_listing<St: ExecutionStore>(store: &St) {
    let t = t0();
    let (acme, globex) = (id!(TenantId, "acme"), id!(TenantId, "globex"));

    // acme: a[i] created at t+i s; globex interleaved.
    let mut a = Vec::new();
    for i in 0..5 {
        a.push(create_at(store, new_random("acme", i), t.plus_secs(i64::from(i))).await);
    }
    let g0 = create_at(store, new_random("globex", 10), t.plus_millis(1_500)).await;
    let g1 = create_at(store, new_random("globex", 11), t.plus_millis(5_500)).await;

    // Status changes (each write moves updated_at).
    change_at(store, &a[1], status(S::Running), t.plus_secs(20)).await;
    change_at(store, &a[3], status(S::Running), t.plus_secs(21)).await;
    change_at(store, &g0, status(S::Running), t.plus_secs(22)).await;
    change_at(store, &a[2], status(S::Queued), t.plus_secs(23)).await;
    // A lease is a write too: a[3] was last written at t+24.
    let lease = store
        .acquire_lease(&a[3], &HolderId::random(), t.plus_secs(24), 60)
        .await
        .expect("lease");
    assert!(matches!(lease, LeaseOutcome::Acquired(_)), "{lease:?}");
    change_at(store, &a[4], status(S::Running), t.plus_secs(30)).await;

    // Newest first, whole records as `get` reads them.
    let mut expected = Vec::new();
    for id in a.iter().rev() {
        expected.push(store.get(id).await.expect("get").expect("exists"));
    }
    let page = settled(
        || async { store.list(&acme, None, MAX_PAGE, None).await.expect("list") },
        |page| page.items == expected && page.next_cursor.is_none(),
    )
    .await;
    assert_eq!(page.items, expected, "acme's executions, newest first");
    assert_eq!(page.next_cursor, None, "everything fits one page");
    expect_page(store, &globex, None, 10, None, &[&g1, &g0], false).await;
    expect_page(store, &id!(TenantId, "nobody"), None, 10, None, &[], false).await;

    // By status.
    let running = [&a[4], &a[3], &a[1]];
    expect_page(store, &acme, Some(S::Running), 10, None, &running, false).await;
    expect_page(store, &acme, Some(S::Queued), 10, None, &[&a[2]], false).await;
    expect_page(store, &acme, Some(S::Received), 10, None, &[&a[0]], false).await;
    expect_page(store, &acme, Some(S::Succeeded), 10, None, &[], false).await;
    expect_page(store, &globex, Some(S::Running), 10, None, &[&g0], false).await;

    // Paging: 5 executions, 2 per page; the last page announces no next one.
    let c1 = expect_page(store, &acme, None, 2, None, &[&a[4], &a[3]], true).await;
    let c2 = expect_page(store, &acme, None, 2, c1.as_deref(), &[&a[2], &a[1]], true).await;
    expect_page(store, &acme, None, 2, c2.as_deref(), &[&a[0]], false).await;
    // Exactly a page's worth left: no empty extra page.
    let c = expect_page(
        store,
        &acme,
        None,
        4,
        None,
        &[&a[4], &a[3], &a[2], &a[1]],
        true,
    )
    .await;
    expect_page(store, &acme, None, 4, c.as_deref(), &[&a[0]], false).await;
    expect_page(
        store,
        &acme,
        None,
        5,
        None,
        &[&a[4], &a[3], &a[2], &a[1], &a[0]],
        false,
    )
    .await;
    // Paging through one status skips the others.
    let c = expect_page(
        store,
        &acme,
        Some(S::Running),
        2,
        None,
        &[&a[4], &a[3]],
        true,
    )
    .await;
    expect_page(
        store,
        &acme,
        Some(S::Running),
        2,
        c.as_deref(),
        &[&a[1]],
        false,
    )
    .await;
    let c = expect_page(store, &acme, Some(S::Running), 1, None, &[&a[4]], true).await;
    let c = expect_page(
        store,
        &acme,
        Some(S::Running),
        1,
        c.as_deref(),
        &[&a[3]],
        true,
    )
    .await;
    expect_page(
        store,
        &acme,
        Some(S::Running),
        1,
        c.as_deref(),
        &[&a[1]],
        false,
    )
    .await;

    // Cursors the store did not hand out, and limits outside 1..=100.
    for garbage in ["garbage", "", "#", "x#exe_1", "not a cursor at all"] {
        invalid(
            store.list(&acme, None, 2, Some(garbage)).await,
            &format!("cursor {garbage:?}"),
        );
    }
    invalid(store.list(&acme, None, 0, None).await, "limit 0");
    invalid(
        store.list(&acme, None, MAX_PAGE + 1, None).await,
        "limit 101",
    );

    // Stale: unfinished executions of one status last written before a time, oldest first.
    let before = t.plus_secs(25);
    expect_stale(store, S::Running, before, 10, &[&a[1], &g0, &a[3]]).await;
    expect_stale(store, S::Running, before, 2, &[&a[1], &g0]).await;
    expect_stale(store, S::Running, t.plus_secs(24), 10, &[&a[1], &g0]).await;
    expect_stale(store, S::Running, t.plus_secs(20), 10, &[]).await;
    expect_stale(
        store,
        S::Running,
        t.plus_secs(100),
        10,
        &[&a[1], &g0, &a[3], &a[4]],
    )
    .await;
    expect_stale(store, S::Received, before, 10, &[&a[0], &g1]).await;
    expect_stale(store, S::Queued, before, 10, &[&a[2]]).await;
    for terminal in [S::Succeeded, S::Failed, S::Blocked] {
        invalid(
            store.stale(terminal, before, 10).await,
            &format!("stale({terminal:?})"),
        );
    }

    // Finishing leaves the stale view (and moves the execution in the listing by status).
    let done = ExecutionChange {
        status: Some(S::Succeeded),
        release_lease: true,
        ..ExecutionChange::default()
    };
    change_at(store, &a[1], done, t.plus_secs(26)).await;
    change_at(store, &a[0], status(S::Failed), t.plus_secs(27)).await;
    let later = t.plus_secs(100);
    expect_stale(store, S::Running, later, 10, &[&g0, &a[3], &a[4]]).await;
    expect_stale(store, S::Received, later, 10, &[&g1]).await;
    expect_page(
        store,
        &acme,
        Some(S::Running),
        10,
        None,
        &[&a[4], &a[3]],
        false,
    )
    .await;
    expect_page(store, &acme, Some(S::Succeeded), 10, None, &[&a[1]], false).await;
    expect_page(store, &acme, Some(S::Failed), 10, None, &[&a[0]], false).await;

    // A write without a status moves an unfinished execution to its new last-write time, and
    // never brings a finished one back.
    let attempt = ExecutionChange {
        attempt_count: Some(1),
        ..ExecutionChange::default()
    };
    change_at(store, &a[3], attempt.clone(), t.plus_secs(40)).await;
    change_at(store, &a[1], attempt, t.plus_secs(41)).await;
    expect_stale(store, S::Running, later, 10, &[&g0, &a[4], &a[3]]).await;
    expect_stale(store, S::Running, t.plus_secs(35), 10, &[&g0, &a[4]]).await;
    // Listing order is by creation and does not move.
    expect_page(
        store,
        &acme,
        None,
        10,
        None,
        &[&a[4], &a[3], &a[2], &a[1], &a[0]],
        false,
    )
    .await;
}

/// What a cursor walk of one status saw: the ids in the order found, and each call's page.
#[derive(Debug)]
pub struct Walk {
    pub ids: Vec<ExecutionId>,
    /// Items per call, in order.
    pub page_sizes: Vec<usize>,
}

/// Walks `tenant`'s executions of `status` by cursor, `limit` per page, from the newest, until
/// no cursor is handed out; `before_each` runs before every call (a request counter's reset),
/// `after_each` after it (where a caller asserts on what one call cost). Asserts that no page
/// is longer than `limit`, that every item has `status` and `tenant`, and that the walk ends
/// within `max_calls` calls.
pub async fn walk_status<St: ExecutionStore>(
    store: &St,
    tenant: &TenantId,
    status: S,
    limit: u32,
    max_calls: usize,
    mut before_each: impl FnMut(),
    mut after_each: impl FnMut(usize),
) -> Walk {
    let mut walk = Walk {
        ids: Vec::new(),
        page_sizes: Vec::new(),
    };
    let mut cursor: Option<String> = None;
    loop {
        assert!(
            walk.page_sizes.len() < max_calls,
            "the walk of {status:?} did not end within {max_calls} calls: {:?}",
            walk.page_sizes
        );
        before_each();
        let page = store
            .list(tenant, Some(status), limit, cursor.as_deref())
            .await
            .expect("list");
        after_each(walk.page_sizes.len());
        assert!(page.items.len() <= limit as usize, "a page over the limit");
        for r in &page.items {
            assert_eq!((&r.tenant, r.status), (tenant, status), "{r:?}");
        }
        walk.page_sizes.push(page.items.len());
        walk.ids.extend(page.items.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return walk,
        }
    }
}

/// Asserts that `walk` found exactly `expected` (newest first), each once.
pub fn assert_found_exactly(walk: &Walk, expected: &[ExecutionId]) {
    let mut unique = walk.ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), walk.ids.len(), "duplicates in {:?}", walk.ids);
    assert_eq!(walk.ids, expected, "the walk's ids, newest first");
}

/// Runs the bounded listing contract on an empty store: 2,500 executions of one tenant (2.5
/// times [`MAX_LIST_EVALUATED`]), 3 of them BLOCKED (the newest, one in the middle, the
/// oldest), 40 RUNNING among the newest, 1 QUEUED among the oldest. A walk of BLOCKED takes 3
/// calls and finds exactly the 3; pages cut by the bound are short (even empty) and say where
/// to resume; a walk of RUNNING fills its pages while matches last.
pub async fn run_bounded_listing<St: ExecutionStore>(store: &St) {
    const TOTAL: u32 = 2_500;
    let t = t0();
    let tenant = id!(TenantId, "bulk");
    // 16 creates at a time: a real engine takes a while for 2,500.
    let ids: Vec<ExecutionId> = futures::stream::iter(0..TOTAL)
        .map(|i| create_at(store, new_random("bulk", i), t.plus_millis(i64::from(i))))
        .buffered(16)
        .collect()
        .await;
    // Another tenant's blocked execution is never seen.
    let other = create_at(store, new_random("other", 0), t).await;
    change_at(store, &other, status(S::Blocked), t).await;
    // ids[i] was created at t + i ms: newest first is ids reversed.
    let blocked = [TOTAL - 1, TOTAL / 2, 0];
    // The walk crosses the bound twice.
    const { assert!(TOTAL > 2 * MAX_LIST_EVALUATED) };
    for &i in &blocked {
        change_at(store, &ids[i as usize], status(S::Blocked), t).await;
    }
    for i in TOTAL - 45..TOTAL - 5 {
        change_at(store, &ids[i as usize], status(S::Running), t).await;
    }
    let expected: Vec<ExecutionId> = blocked.iter().map(|&i| ids[i as usize].clone()).collect();
    let walk = settled(
        || walk_status(store, &tenant, S::Blocked, 10, 10, || {}, |_| {}),
        |w| w.ids == expected,
    )
    .await;
    assert_found_exactly(&walk, &expected);
    let calls = TOTAL.div_ceil(MAX_LIST_EVALUATED) as usize;
    assert_eq!(walk.page_sizes.len(), calls, "{:?}", walk.page_sizes);
    // The first call sees the newest 1,000 (ids[2499] among them), the second the next 1,000
    // (ids[1250] among them), the third the last 500 (ids[0]).
    assert_eq!(walk.page_sizes, [1, 1, 1]);

    // Within the bound, pages fill as before: 40 RUNNING in pages of 15.
    let running: Vec<ExecutionId> = (TOTAL - 45..TOTAL - 5)
        .rev()
        .map(|i| ids[i as usize].clone())
        .collect();
    let walk = settled(
        || walk_status(store, &tenant, S::Running, 15, 10, || {}, |_| {}),
        |w| w.ids == running,
    )
    .await;
    assert_found_exactly(&walk, &running);
    // The third call finds the last 10, then evaluates up to the bound (past the running ones):
    // the rest of the walk is empty pages until the tenant's oldest.
    assert_eq!(walk.page_sizes, [15, 15, 10, 0, 0]);

    // A status whose one match is among the oldest: two empty pages with a cursor, then it.
    change_at(store, &ids[100], status(S::Queued), t).await;
    let c = expect_page(store, &tenant, Some(S::Queued), 10, None, &[], true).await;
    let c = expect_page(store, &tenant, Some(S::Queued), 10, c.as_deref(), &[], true).await;
    let queued = [&ids[100]];
    expect_page(
        store,
        &tenant,
        Some(S::Queued),
        10,
        c.as_deref(),
        &queued,
        false,
    )
    .await;
}
