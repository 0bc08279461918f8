//! [`Ledger`] on DynamoDB: one item per event at `EXEC#{id}` / `EVENT#{seq:020}` (next to the
//! execution record), written once and never overwritten; `detail` is stored as JSON text.

use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::errors::{
    conditional, corrupt, parse_item, to_item, AdapterError, Conditional, MalformedItem,
};
use super::expr::{query_all, Expr, QueryOptions};
use super::keys::{self, Item, EVENT_PREFIX, PK, SK};
use crate::domain::ids::ExecutionId;
use crate::domain::ledger::{AppendOutcome, EventKind, LedgerEvent};
use crate::domain::time::Timestamp;
use crate::ports::{stored_detail, Ledger, StoreResult};

pub use crate::ports::MAX_DETAIL_BYTES;

/// The stored shape of an event; the execution id and sequence number live in the key.
#[derive(Debug, Serialize, Deserialize)]
struct EventItem {
    pk: String,
    sk: String,
    at: Timestamp,
    kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stage: Option<u32>,
    /// `detail` as JSON text.
    detail: String,
}

/// The ledger in the Sluice table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    /// A ledger on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

/// The event in `item`, an event of execution `id`.
fn parse_event(operation: &'static str, id: &ExecutionId, item: Item) -> StoreResult<LedgerEvent> {
    let pk = keys::execution_pk(id);
    let sk = match item.get(SK).and_then(|v| v.as_s().ok()) {
        Some(sk) => sk.clone(),
        None => {
            return Err(corrupt(
                operation,
                &pk,
                MalformedItem("event without a sort key"),
            ))
        }
    };
    let key = keys::describe(&pk, &sk);
    let stored: EventItem = parse_item(operation, &key, item)?;
    let seq = keys::event_seq(&stored.sk).ok_or_else(|| {
        corrupt(
            operation,
            &key,
            MalformedItem("sort key is not EVENT#{seq}"),
        )
    })?;
    let detail = serde_json::from_str(&stored.detail).map_err(|e| corrupt(operation, &key, e))?;
    Ok(LedgerEvent {
        execution_id: id.clone(),
        seq,
        at: stored.at,
        kind: stored.kind,
        stage: stored.stage,
        detail,
    })
}

/// The item of `event` and the condition of its append; an oversize detail is
/// `StoreError::InvalidInput`.
pub(super) fn append_write(
    operation: &'static str,
    event: &LedgerEvent,
) -> StoreResult<(Item, Expr)> {
    let detail = stored_detail(operation, &event.detail)?;
    let item = EventItem {
        pk: keys::execution_pk(&event.execution_id),
        sk: keys::event_sk(event.seq),
        at: event.at,
        kind: event.kind,
        stage: event.stage,
        detail,
    };
    let mut x = Expr::default();
    let sk = x.name(SK);
    // An event is never overwritten: a taken sequence number returns the event there.
    x.require(format!("attribute_not_exists({sk})"));
    Ok((to_item(operation, &item)?, x))
}

impl Ledger for DynamoLedger {
    #[tracing::instrument(skip_all, fields(execution_id = %event.execution_id, seq = event.seq))]
    async fn append(&self, event: LedgerEvent) -> StoreResult<AppendOutcome> {
        const OP: &str = "ledger.append";
        let (item, x) = append_write(OP, &event)?;
        let r = x.render();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(r.condition)
            .set_expression_attribute_names(r.names)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match conditional(OP, result)? {
            Conditional::Written(_) => Ok(AppendOutcome::Appended),
            Conditional::Failed(old) if old.is_empty() => {
                Err(AdapterError::InconsistentCondition.transient(OP))
            }
            Conditional::Failed(old) => Ok(AppendOutcome::SeqTaken(parse_event(
                OP,
                &event.execution_id,
                old,
            )?)),
        }
    }

    #[tracing::instrument(skip_all, fields(execution_id = %id))]
    async fn events(&self, id: &ExecutionId) -> StoreResult<Vec<LedgerEvent>> {
        const OP: &str = "ledger.events";
        let mut x = Expr::default();
        let (pk, sk) = (x.name(PK), x.name(SK));
        let (exec, prefix) = (x.str(keys::execution_pk(id)), x.str(EVENT_PREFIX));
        x.require(format!("{pk} = {exec} AND begins_with({sk}, {prefix})"));
        let items = query_all(&self.client, &self.table, x, QueryOptions::CONSISTENT, OP).await?;
        let mut events = items
            .into_iter()
            .map(|item| parse_event(OP, id, item))
            .collect::<StoreResult<Vec<_>>>()?;
        // Sort keys are zero-padded sequence numbers, so pages come in order; sorting again
        // costs nothing and does not depend on it.
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }
}
