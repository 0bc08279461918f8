//! [`RateLimiter`] on DynamoDB: one counter item per source and minute (`RATE#{source}` /
//! `WINDOW#{minute}`). A delivery is counted in the first window from now on that has room,
//! with one conditional `UpdateItem` per window tried.

use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::Client;

use super::errors::{number, Conditional};
use super::expr::{update_item, Expr};
use super::keys::{self, Item, COUNT, EXPIRES_AT};
use crate::domain::ids::SourceId;
use crate::domain::rate::{self, RateDecision, MAX_HORIZON_MINUTES};
use crate::domain::time::Timestamp;
use crate::ports::{check_rate_limit, RateLimiter, StoreResult};

/// Per-source intake windows in the Sluice table.
#[derive(Debug, Clone)]
pub struct DynamoRateLimiter {
    client: Client,
    table: String,
}

impl DynamoRateLimiter {
    /// A limiter on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Counts one delivery in `window`, only while it holds fewer than `limit` if a limit is
    /// given; the new count, or `None` if the window was full.
    async fn count_in(
        &self,
        source: &SourceId,
        window: i64,
        limit: Option<u32>,
    ) -> StoreResult<Option<u32>> {
        const OP: &str = "rate.register";
        let describe = keys::describe(&keys::rate_pk(source), &keys::window_sk(window));
        let (key, x) = count_write(source, window, limit);
        match update_item(
            &self.client,
            &self.table,
            key,
            x,
            ReturnValue::UpdatedNew,
            OP,
        )
        .await?
        {
            Conditional::Written(new) => {
                let count = number::<u32>(&new, COUNT, OP, &describe)?;
                Ok(Some(count.unwrap_or(1)))
            }
            Conditional::Failed(_) => Ok(None),
        }
    }
}

/// The key of `source`'s counter for `window` and the update that counts one delivery in it,
/// only while it holds fewer than `limit` if a limit is given.
pub(super) fn count_write(source: &SourceId, window: i64, limit: Option<u32>) -> (Item, Expr) {
    let mut x = Expr::default();
    x.add(COUNT, 1);
    let expiry = x.num(rate::window_expiry(window));
    x.set(EXPIRES_AT, expiry);
    if let Some(limit) = limit {
        let (count, limit) = (x.name(COUNT), x.num(limit));
        // Every minute schedules at most `limit` deliveries, however many race for it.
        x.require(format!(
            "attribute_not_exists({count}) OR {count} < {limit}"
        ));
    }
    (keys::key(keys::rate_pk(source), keys::window_sk(window)), x)
}

impl RateLimiter for DynamoRateLimiter {
    #[tracing::instrument(skip_all, fields(source = %source, limit = limit_per_minute))]
    async fn register(
        &self,
        source: &SourceId,
        limit_per_minute: u32,
        now: Timestamp,
    ) -> StoreResult<RateDecision> {
        check_rate_limit("rate.register", limit_per_minute)?;
        let current = rate::window_of(now);
        for window in current..=current + MAX_HORIZON_MINUTES {
            if let Some(count) = self
                .count_in(source, window, Some(limit_per_minute))
                .await?
            {
                return Ok(rate::decision_for(window, count, limit_per_minute, now));
            }
        }
        // Every window up to the horizon is full: park the delivery at the horizon, counted
        // past the limit, rather than drop it.
        let horizon = current + MAX_HORIZON_MINUTES;
        tracing::debug!(horizon, "rate horizon reached");
        self.count_in(source, horizon, None).await?;
        Ok(rate::decision_for(
            horizon,
            limit_per_minute,
            limit_per_minute,
            now,
        ))
    }
}
