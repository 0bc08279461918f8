//! [`SemaphoreStore`] on DynamoDB: a leased slot table per semaphore (`SOURCE#{source}` /
//! `PIPELINES` for a source's pipeline runs), taken with one conditional `UpdateItem`;
//! expired leases are reclaimed when the table is full.

use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::Client;

use super::errors::{number, store_error, Conditional};
use super::expr::{update_item, Expr};
use super::keys::{self, EXPIRES_AT, IN_FLIGHT, SLOT_TABLE_TTL_MARGIN_SECS};
use super::slots;
use crate::domain::ids::HolderId;
use crate::domain::semaphore::{AcquireOutcome, SemaphoreKey, SlotDecision};
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{SemaphoreStore, StoreResult};

/// Attempts an acquire makes before answering `Full` under heavy contention.
const ROUNDS: usize = 8;

/// Leased semaphores in the Sluice table.
#[derive(Debug, Clone)]
pub struct DynamoSemaphoreStore {
    client: Client,
    table: String,
}

impl DynamoSemaphoreStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl SemaphoreStore for DynamoSemaphoreStore {
    #[tracing::instrument(skip_all, fields(pk, holder = %holder, limit = limit))]
    async fn acquire(
        &self,
        key: &SemaphoreKey,
        holder: &HolderId,
        limit: u32,
        ttl_secs: i64,
        now: Timestamp,
    ) -> StoreResult<AcquireOutcome> {
        const OP: &str = "semaphore.acquire";
        if limit == 0 {
            return Err(StoreError::InvalidInput {
                operation: OP,
                detail: "limit must be at least 1".into(),
            });
        }
        let (pk, sk) = keys::semaphore_key(key);
        tracing::Span::current().record("pk", pk.as_str());
        let describe = keys::describe(&pk, sk);
        let expires_at = now.plus_secs(ttl_secs);
        // TTL must never remove a table whose holders are still counted.
        let item_ttl = expires_at.epoch_secs() + SLOT_TABLE_TTL_MARGIN_SECS;
        let mut renew = false;
        let mut earliest_expiry = None;
        for _ in 0..ROUNDS {
            let mut x = Expr::default();
            slots::take(&mut x, holder, expires_at, limit, renew);
            let ttl = x.num(item_ttl);
            x.set(EXPIRES_AT, ttl);
            let key = keys::key(pk.clone(), sk);
            let old = match update_item(&self.client, &self.table, key, x, ReturnValue::None, OP)
                .await?
            {
                Conditional::Written(_) => return Ok(AcquireOutcome::Acquired { expires_at }),
                Conditional::Failed(old) => old,
            };
            let table = slots::read(&old, OP, &describe)?;
            // A holder acquiring again renews its own slot instead of taking a second one.
            renew = table.holders.contains_key(holder);
            if renew {
                continue;
            }
            match table.decide(limit, now) {
                // A slot was freed since the failed attempt: try again.
                SlotDecision::Take => {}
                SlotDecision::Reclaim(expired) => {
                    slots::reclaim(&self.client, &self.table, (pk.clone(), sk), &expired, OP)
                        .await?;
                }
                SlotDecision::Full { earliest_expiry } => {
                    return Ok(AcquireOutcome::Full { earliest_expiry })
                }
            }
            earliest_expiry = table.holders.values().min().copied();
        }
        tracing::debug!(rounds = ROUNDS, "semaphore contended; answering full");
        Ok(AcquireOutcome::Full { earliest_expiry })
    }

    #[tracing::instrument(skip_all, fields(holder = %holder))]
    async fn release(&self, key: &SemaphoreKey, holder: &HolderId) -> StoreResult<bool> {
        const OP: &str = "semaphore.release";
        let (pk, sk) = keys::semaphore_key(key);
        let mut x = Expr::default();
        slots::release(&mut x, holder, true);
        let key = keys::key(pk, sk);
        let outcome = update_item(&self.client, &self.table, key, x, ReturnValue::None, OP).await?;
        Ok(matches!(outcome, Conditional::Written(_)))
    }

    #[tracing::instrument(skip_all)]
    async fn in_flight(&self, key: &SemaphoreKey) -> StoreResult<u32> {
        const OP: &str = "semaphore.in_flight";
        let (pk, sk) = keys::semaphore_key(key);
        let describe = keys::describe(&pk, sk);
        let mut x = Expr::default();
        let projection = x.name(IN_FLIGHT);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(pk, sk)))
            .projection_expression(projection)
            .set_expression_attribute_names(x.render().names)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        let item = out.item.unwrap_or_default();
        Ok(number(&item, IN_FLIGHT, OP, &describe)?.unwrap_or(0))
    }
}
