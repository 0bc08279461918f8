//! [`MemoryLedger`]: the append-only ledger in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::lock;
use crate::domain::ids::ExecutionId;
use crate::domain::ledger::{AppendOutcome, LedgerEvent};
use crate::error::StoreError;
use crate::ports::{stored_detail, Ledger, StoreResult};

/// An event as stored: its detail kept as JSON text, as the DynamoDB adapter stores it, so a
/// read returns exactly what a round trip through text gives.
#[derive(Debug, Clone)]
pub(super) struct StoredEvent {
    pub(super) event: LedgerEvent,
    detail: String,
}

impl StoredEvent {
    /// `event` as stored, if its detail serializes within [`MAX_DETAIL_BYTES`].
    pub(super) fn new(operation: &'static str, event: LedgerEvent) -> StoreResult<Self> {
        let detail = stored_detail(operation, &event.detail)?;
        let event = LedgerEvent {
            detail: serde_json::Value::Null,
            ..event
        };
        Ok(Self { event, detail })
    }

    fn read(&self) -> StoreResult<LedgerEvent> {
        let detail = serde_json::from_str(&self.detail).map_err(|e| StoreError::Corrupt {
            operation: "ledger.events",
            key: format!("{}/{}", self.event.execution_id, self.event.seq),
            detail: "detail is not JSON".into(),
            source: Some(Box::new(e)),
        })?;
        Ok(LedgerEvent {
            detail,
            ..self.event.clone()
        })
    }
}

pub(super) type Events = HashMap<ExecutionId, BTreeMap<u64, StoredEvent>>;

/// Ledger events per execution, ordered by sequence number.
#[derive(Debug, Clone, Default)]
pub struct MemoryLedger {
    pub(super) events: Arc<Mutex<Events>>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Ledger for MemoryLedger {
    async fn append(&self, event: LedgerEvent) -> StoreResult<AppendOutcome> {
        let stored = StoredEvent::new("ledger.append", event)?;
        let mut events = lock(&self.events);
        let ledger = events.entry(stored.event.execution_id.clone()).or_default();
        if let Some(existing) = ledger.get(&stored.event.seq) {
            return Ok(AppendOutcome::SeqTaken(existing.read()?));
        }
        ledger.insert(stored.event.seq, stored);
        Ok(AppendOutcome::Appended)
    }

    async fn events(&self, id: &ExecutionId) -> StoreResult<Vec<LedgerEvent>> {
        let events = lock(&self.events);
        events.get(id).map_or(Ok(Vec::new()), |ledger| {
            ledger.values().map(StoredEvent::read).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger::EventKind;
    use crate::domain::time::Timestamp;
    use crate::ports::MAX_DETAIL_BYTES;
    use serde_json::json;

    fn event(id: &ExecutionId, seq: u64, detail: serde_json::Value) -> LedgerEvent {
        LedgerEvent {
            execution_id: id.clone(),
            seq,
            at: Timestamp::from_secs(seq as i64),
            kind: EventKind::ToolCalled,
            stage: None,
            detail,
        }
    }

    #[tokio::test]
    async fn detail_limit_is_inclusive_and_checked_before_the_seq() {
        let ledger = MemoryLedger::new();
        let id = ExecutionId::random();
        // `"..."` adds two bytes of quotes to the string.
        let at_limit = json!("x".repeat(MAX_DETAIL_BYTES - 2));
        assert_eq!(
            ledger.append(event(&id, 1, at_limit)).await.unwrap(),
            AppendOutcome::Appended
        );
        let over = json!("x".repeat(MAX_DETAIL_BYTES - 1));
        let err = ledger.append(event(&id, 1, over)).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { .. }));
        let taken = ledger.append(event(&id, 1, json!(null))).await.unwrap();
        assert!(
            matches!(taken, AppendOutcome::SeqTaken(e) if e.detail.as_str().map(str::len) == Some(MAX_DETAIL_BYTES - 2))
        );
    }

    #[tokio::test]
    async fn an_unknown_execution_has_no_events() {
        let ledger = MemoryLedger::new();
        assert!(ledger
            .events(&ExecutionId::random())
            .await
            .unwrap()
            .is_empty());
    }
}
