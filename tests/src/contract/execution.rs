//! Contract of [`ExecutionStore`]: one record per id, forward-only versioned updates, leases.

use sluice::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionStatus as S, LeaseOutcome, NewExecution, UpdateOutcome,
};
use sluice::domain::ids::{ExecutionId, HolderId};
use sluice::ports::ExecutionStore;

use super::t0;
use crate::id;

fn new_exec(tenant: &str) -> NewExecution {
    let source = id!(SourceId, "github");
    let run_key = id!(RunKey, "acme/app@abc123");
    NewExecution {
        id: ExecutionId::for_run_key(&source, &run_key),
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
