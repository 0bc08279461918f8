//! [`RateLimiter`] on DynamoDB: one counter item per source and minute (`RATE#{source}` /
//! `WINDOW#{minute}`), and one backlog item per source (`RATE#{source}` / `BACKLOG`: `pos`,
//! the next free backlog position, and `lim`, the limit it counts under; see
//! `domain::rate`).
//!
//! A delivery is counted in the current window if it has room (1 conditional `UpdateItem`);
//! else it takes the backlog's next position (1 conditional `UpdateItem` that returns it;
//! +1 when the backlog starts again at the next window, +2 for each race lost to a concurrent
//! restart) and is counted in that position's window (1 `UpdateItem` `ADD`). So a delivery over
//! the limit costs 3 requests (4 on a restart) whatever the backlog's length.

use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::Client;

use super::errors::{number, Conditional};
use super::expr::{update_item, Expr};
use super::keys::{self, Item, COUNT, EXPIRES_AT};
use crate::domain::ids::SourceId;
use crate::domain::rate::{self, RateDecision};
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{check_rate_limit, RateLimiter, StoreResult};

/// Sort key of a source's backlog item.
const BACKLOG_SK: &str = "BACKLOG";
/// The backlog's next free position.
const POS: &str = "pos";
/// The limit the backlog's positions count under.
const LIM: &str = "lim";
/// Rounds of (take, restart) before a backlog kept changing under this caller is an error.
const BACKLOG_ROUNDS: usize = 4;

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

impl DynamoRateLimiter {
    /// Takes the backlog's next position (see `domain::rate`): moves it on by one while it is
    /// ahead of `floor` under `limit`, else starts it again at `floor`. The position taken.
    async fn take_position(&self, source: &SourceId, limit: u32, floor: i64) -> StoreResult<i64> {
        const OP: &str = "rate.register";
        let pk = keys::rate_pk(source);
        let describe = keys::describe(&pk, BACKLOG_SK);
        // Most deliveries of a burst find the backlog ahead: try moving it on first.
        let mut restart = false;
        for _ in 0..BACKLOG_ROUNDS {
            let mut x = Expr::default();
            let (pos, lim) = (x.name(POS), x.name(LIM));
            let (floor_v, limit_v) = (x.num(floor), x.num(limit));
            if restart {
                let next = x.num(floor + 1);
                x.set(POS, next);
                x.set(LIM, limit_v.clone());
                x.require(format!(
                    "(attribute_not_exists({pos}) OR {pos} < {floor_v} OR {lim} <> {limit_v})"
                ));
            } else {
                x.add(POS, 1);
                x.require(format!("{pos} >= {floor_v} AND {lim} = {limit_v}"));
            }
            let key = keys::key(pk.clone(), BACKLOG_SK.to_owned());
            // Kept a day past the latest window it could reach now (refreshed on every write).
            let expiry = x.num(rate::window_expiry(floor / i64::from(limit)) + 86_400);
            x.set(EXPIRES_AT, expiry);
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
                    let next = number::<i64>(&new, POS, OP, &describe)?
                        .ok_or_else(|| StoreError::corrupt(OP, &describe, "no pos"))?;
                    return Ok(next - 1);
                }
                // The other branch's condition holds now (the failed item says which).
                Conditional::Failed(_) => restart = !restart,
            }
        }
        Err(StoreError::Transient {
            operation: OP,
            source: format!("{describe} kept changing under this caller").into(),
        })
    }
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
        if let Some(count) = self
            .count_in(source, current, Some(limit_per_minute))
            .await?
        {
            return Ok(rate::decision_for(current, count, limit_per_minute, now));
        }
        let floor = rate::backlog_floor(now, limit_per_minute);
        let position = self.take_position(source, limit_per_minute, floor).await?;
        let (window, count) = rate::backlog_slot(position, limit_per_minute);
        // Counted in its window, so that the deliveries within the rate then leave it room.
        self.count_in(source, window, None).await?;
        Ok(rate::decision_for(window, count, limit_per_minute, now))
    }
}
