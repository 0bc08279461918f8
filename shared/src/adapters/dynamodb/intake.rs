//! [`IntakeStore`] on DynamoDB: one `TransactWriteItems` of four items, each with the condition
//! its own port's single write uses:
//!
//! | # | item | write | condition |
//! |---|---|---|---|
//! | 0 | `DELIVERY#{tenant}#{source}#{delivery_id}` / `DELIVERY` | Put (status QUEUED) | `attribute_not_exists(pk) OR expires_at < :now` |
//! | 1 | `EXEC#{id}` / `META` | Put (status QUEUED) | `attribute_not_exists(pk)` |
//! | 2 | `EXEC#{id}` / `EVENT#{1:020}` | Put (RECEIVED) | `attribute_not_exists(sk)` |
//! | 3 | `RATE#{source}` / `WINDOW#{minute}` | Update `ADD count 1` | `attribute_not_exists(count) OR count < :limit` |
//!
//! Each item asks for `ALL_OLD` on a failed condition. A cancelled transaction wrote nothing;
//! its `CancellationReasons` (one per item, in order) say which conditions failed, read into
//! [`Refusals`]: a claimed delivery id (with the claim), an existing execution (with it), a
//! taken seq 1, a full window. An engine may report only the first failure; the item order
//! puts the most decisive first, so the outcome is the same either way.
//!
//! A transaction that touches an item another transaction is writing is cancelled with
//! `TransactionConflict`; it is tried again after a short random pause, at most
//! [`CONFLICT_ROUNDS`] times in all, then answered [`AcceptOutcome::Unsettled`] (the caller
//! goes step by step, with single-item writes). Every delivery of a source counts in the same
//! window item, so concurrent deliveries of one source do conflict.

use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    CancellationReason, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use rand::Rng;

use super::delivery::{claim_write, DynamoDeliveryStore};
use super::errors::{store_error, AdapterError};
use super::execution::{create_write, DynamoExecutionStore};
use super::expr::Expr;
use super::keys::Item;
use super::ledger::append_write;
use super::rate::count_write;
use crate::domain::intake::{AcceptOutcome, IntakeWrite, Refusals};
use crate::error::StoreError;
use crate::ports::{check_rate_limit, IntakeStore, StoreResult};

/// How many times one accept sends its transaction while other transactions conflict with it.
pub const CONFLICT_ROUNDS: u32 = 6;

/// The longest random pause (milliseconds) before the second attempt; it doubles each round.
const FIRST_PAUSE_MS: u64 = 20;

const OP: &str = "intake.accept";

/// Intake's composite write in the Sluice table.
#[derive(Debug, Clone)]
pub struct DynamoIntakeStore {
    client: Client,
    table: String,
}

impl DynamoIntakeStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn put(&self, (item, x): (Item, Expr)) -> StoreResult<TransactWriteItem> {
        let r = x.render();
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(r.condition)
            .set_expression_attribute_names(r.names)
            .set_expression_attribute_values(r.values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(rejected)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn update(&self, (key, x): (Item, Expr)) -> StoreResult<TransactWriteItem> {
        let r = x.render();
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .set_update_expression(r.update)
            .set_condition_expression(r.condition)
            .set_expression_attribute_names(r.names)
            .set_expression_attribute_values(r.values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(rejected)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

fn rejected(error: aws_smithy_types::error::operation::BuildError) -> StoreError {
    StoreError::Rejected {
        operation: OP,
        source: Box::new(error),
    }
}

impl IntakeStore for DynamoIntakeStore {
    #[tracing::instrument(skip_all, fields(source = %write.claim.source, delivery_id = %write.claim.delivery_id))]
    async fn accept(&self, write: IntakeWrite) -> StoreResult<AcceptOutcome> {
        check_rate_limit(OP, write.rate_limit_per_minute)?;
        let execution = write.execution_record();
        let items = vec![
            self.put(claim_write(OP, &write.delivery_record(), write.now)?)?,
            self.put(create_write(OP, &execution)?)?,
            self.put(append_write(OP, &write.received)?)?,
            self.update(count_write(
                &write.claim.source,
                write.window(),
                Some(write.rate_limit_per_minute),
            ))?,
        ];
        for round in 0..CONFLICT_ROUNDS {
            if round > 0 {
                let most = FIRST_PAUSE_MS << (round - 1);
                let pause = rand::rng().random_range(1..=most);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let refused = match result {
                Ok(_) => return Ok(AcceptOutcome::Accepted(execution)),
                Err(error) => match error.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                        read_reasons(&write, cancelled.cancellation_reasons())?
                    }
                    _ => return Err(store_error(OP, error)),
                },
            };
            match refused {
                Some(refusals) => {
                    return refusals
                        .outcome()
                        .ok_or_else(|| AdapterError::InconsistentCondition.transient(OP))
                }
                None => tracing::debug!(round, "intake transaction conflicted; trying again"),
            }
        }
        tracing::info!(
            rounds = CONFLICT_ROUNDS,
            "intake transaction kept conflicting; going step by step"
        );
        Ok(AcceptOutcome::Unsettled)
    }
}

/// Reads the cancellation reasons of the transaction (items in the order `accept` sends them):
/// the conditions that failed, if any did; `None` for a conflict (to try again); any other
/// reason (throttling, validation) is an error.
fn read_reasons(
    write: &IntakeWrite,
    reasons: &[CancellationReason],
) -> StoreResult<Option<Refusals>> {
    let mut refusals = Refusals::default();
    let mut refused = false;
    let mut conflict = false;
    let mut other = None;
    for (index, reason) in reasons.iter().enumerate() {
        let old = || reason.item().cloned().unwrap_or_default();
        match reason.code().unwrap_or("None") {
            "None" => {}
            "ConditionalCheckFailed" => {
                refused = true;
                match index {
                    0 => {
                        let claim = &write.claim;
                        refusals.claimed = Some(DynamoDeliveryStore::parse(
                            OP,
                            &claim.tenant,
                            &claim.source,
                            &claim.delivery_id,
                            old(),
                        )?);
                    }
                    1 => {
                        refusals.existing =
                            DynamoExecutionStore::parse(OP, &write.execution.id, old())?;
                        if refusals.existing.is_none() {
                            return Err(AdapterError::InconsistentCondition.transient(OP));
                        }
                    }
                    2 => refusals.received_taken = true,
                    _ => refusals.window_full = true,
                }
            }
            "TransactionConflict" => conflict = true,
            code => other = Some(format!("item {index}: {code}")),
        }
    }
    if refused {
        return Ok(Some(refusals));
    }
    if let Some(reason) = other {
        let throttled = reason.contains("Throttl") || reason.contains("ThroughputExceeded");
        let source = format!("transaction cancelled: {reason}").into();
        return Err(if throttled {
            StoreError::Throttled {
                operation: OP,
                source,
            }
        } else {
            StoreError::Transient {
                operation: OP,
                source,
            }
        });
    }
    if conflict {
        return Ok(None);
    }
    Err(StoreError::Transient {
        operation: OP,
        source: "transaction cancelled without a reason".into(),
    })
}
