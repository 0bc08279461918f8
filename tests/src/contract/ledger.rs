//! Contract of [`Ledger`]: ordered, append-only, never overwritten.

use serde_json::json;
use sluice::domain::ids::ExecutionId;
use sluice::domain::ledger::{AppendOutcome, EventKind, LedgerEvent};
use sluice::ports::Ledger;
use sluice::StoreError;

use super::t0;

fn event(id: &ExecutionId, seq: u64, kind: EventKind, detail: serde_json::Value) -> LedgerEvent {
    LedgerEvent {
        execution_id: id.clone(),
        seq,
        at: t0().plus_secs(seq as i64),
        kind,
        stage: Some(0),
        detail,
    }
}

/// Runs the whole contract on an empty ledger.
pub async fn run<L: Ledger>(ledger: &L) {
    let id = ExecutionId::random();
    let other = ExecutionId::random();

    // Appended out of order, read back in order.
    for seq in [2, 1, 3] {
        let e = event(&id, seq, EventKind::StageStarted, json!({ "n": seq }));
        assert_eq!(
            ledger.append(e).await.expect("append"),
            AppendOutcome::Appended
        );
    }
    let e = event(&other, 1, EventKind::Received, json!({}));
    assert_eq!(
        ledger.append(e).await.expect("append"),
        AppendOutcome::Appended
    );
    let events = ledger.events(&id).await.expect("events");
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        events[1],
        event(&id, 2, EventKind::StageStarted, json!({ "n": 2 }))
    );

    // A taken sequence number is never overwritten.
    let clash = event(&id, 2, EventKind::Blocked, json!({ "evil": true }));
    let outcome = ledger.append(clash).await.expect("append");
    assert_eq!(outcome, AppendOutcome::SeqTaken(events[1].clone()));
    assert_eq!(ledger.events(&id).await.expect("events"), events);

    // Resend after an applied write (the SDK resends when the answer was lost): the same event
    // again finds itself, unchanged, which the executor counts as its own append.
    let resent = events[2].clone();
    let outcome = ledger.append(resent.clone()).await.expect("resend");
    assert_eq!(outcome, AppendOutcome::SeqTaken(resent));
    assert_eq!(ledger.events(&id).await.expect("events"), events);

    // Other executions' events stay out; an unknown execution has none.
    assert_eq!(ledger.events(&other).await.expect("events").len(), 1);
    assert!(ledger
        .events(&ExecutionId::random())
        .await
        .expect("events")
        .is_empty());

    // Detail is bounded.
    let big = event(
        &id,
        9,
        EventKind::ToolFailed,
        json!({ "body": "x".repeat(70 * 1024) }),
    );
    let err = ledger
        .append(big)
        .await
        .expect_err("oversize detail must be refused");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    assert!(!err.is_retryable());

    // Long ledgers span several read pages (DynamoDB pages at 1 MB): 70 x ~20 KB.
    let long = ExecutionId::random();
    let filler = "y".repeat(20 * 1024);
    for seq in 1..=70u64 {
        let e = event(
            &long,
            seq,
            EventKind::ToolCalled,
            json!({ "seq": seq, "pad": filler }),
        );
        assert_eq!(
            ledger.append(e).await.expect("append"),
            AppendOutcome::Appended
        );
    }
    let all = ledger.events(&long).await.expect("events");
    assert_eq!(all.len(), 70);
    assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    assert_eq!(all[69].detail["seq"], json!(70));
}
