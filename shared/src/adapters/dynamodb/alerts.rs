//! [`AlertStore`] on DynamoDB:
//! - a dedup window per alert key at `ALERT#DEDUP#{hash}` / `WINDOW` (`window_until`, TTL),
//!   claimed with one conditional `PutItem`;
//! - the counters at `ALERT#COUNTERS` / `TOTAL`, one `UpdateItem` `ADD` per delivery;
//! - dead letters at `ALERT#DEADLETTER` / `{at:013}#{ulid}`, trimmed to the newest `max` after
//!   each push by a consistent `Query` and a `DeleteItem` per letter beyond it. Pushes happen
//!   only when a webhook gave up, off every run's path, so the read is cheap where it matters;
//!   a TTL would drop letters by age instead of keeping the newest `max` an operator asked for.

use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::errors::{corrupt, number, parse_item, store_error, to_item, Conditional};
use super::expr::{put_item, query_all, update_item, Expr, QueryOptions};
use super::keys::{
    self, Item, ALERTS_DEAD_LETTERED, ALERTS_DEDUPLICATED, ALERTS_RETRIED, ALERTS_SENT,
    ALERT_COUNTERS_PK, ALERT_COUNTERS_SK, ALERT_DEAD_LETTER_PK, ALERT_WINDOW_SK,
    ALERT_WINDOW_TTL_MARGIN_SECS, PK, SK, TENANT, WINDOW_UNTIL,
};
use crate::alerts::model::{AlertCounts, AlertType, DeadLetter};
use crate::domain::ids::TenantId;
use crate::domain::time::Timestamp;
use crate::ports::{check_dead_letter_bound, AlertStore, StoreResult};

/// The stored shape of a dedup window.
#[derive(Debug, Serialize)]
struct WindowItem {
    pk: String,
    sk: &'static str,
    window_until: i64,
    expires_at: i64,
}

/// The stored shape of a dead letter; the payload is JSON text.
#[derive(Debug, Serialize, Deserialize)]
struct DeadLetterItem {
    pk: String,
    sk: String,
    id: String,
    at: Timestamp,
    alert_type: AlertType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<TenantId>,
    payload: String,
    error: String,
    attempts: u32,
}

/// Alert state in the Sluice table.
#[derive(Debug, Clone)]
pub struct DynamoAlertStore {
    client: Client,
    table: String,
}

impl DynamoAlertStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn parse_letter(operation: &'static str, item: Item) -> StoreResult<DeadLetter> {
        let key = item
            .get(SK)
            .and_then(|v| v.as_s().ok())
            .map(|sk| keys::describe(ALERT_DEAD_LETTER_PK, sk))
            .unwrap_or_else(|| ALERT_DEAD_LETTER_PK.to_owned());
        let stored: DeadLetterItem = parse_item(operation, &key, item)?;
        let payload =
            serde_json::from_str(&stored.payload).map_err(|e| corrupt(operation, &key, e))?;
        Ok(DeadLetter {
            id: stored.id,
            at: stored.at,
            alert_type: stored.alert_type,
            tenant: stored.tenant,
            payload,
            error: stored.error,
            attempts: stored.attempts,
        })
    }
}

/// `n` as an `ADD` operand (DynamoDB numbers are signed here).
fn delta(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl AlertStore for DynamoAlertStore {
    #[tracing::instrument(skip_all, fields(window_secs))]
    async fn claim_dedup(&self, key: &str, window_secs: u64, now: Timestamp) -> StoreResult<bool> {
        const OP: &str = "alerts.claim_dedup";
        let window_secs = i64::try_from(window_secs).unwrap_or(i64::MAX / 1000);
        let until = now.plus_secs(window_secs);
        let item = WindowItem {
            pk: keys::alert_dedup_pk(key),
            sk: ALERT_WINDOW_SK,
            window_until: until.as_millis(),
            expires_at: until.epoch_secs() + ALERT_WINDOW_TTL_MARGIN_SECS,
        };
        let mut x = Expr::default();
        let (pk, window_until, now_ms) = (x.name(PK), x.name(WINDOW_UNTIL), x.num(now.as_millis()));
        // Of every instance raising the same alert, the first one in a window writes its end;
        // the others fail this condition until that end has passed.
        x.require(format!(
            "attribute_not_exists({pk}) OR {window_until} <= {now_ms}"
        ));
        let item = to_item(OP, &item)?;
        let outcome = put_item(&self.client, &self.table, item, x, OP).await?;
        Ok(matches!(outcome, Conditional::Written(())))
    }

    #[tracing::instrument(skip_all)]
    async fn add_counts(&self, counts: AlertCounts) -> StoreResult<()> {
        const OP: &str = "alerts.add_counts";
        if counts.is_zero() {
            return Ok(());
        }
        let mut x = Expr::default();
        for (attr, n) in [
            (ALERTS_SENT, counts.sent),
            (ALERTS_DEDUPLICATED, counts.deduplicated),
            (ALERTS_RETRIED, counts.retried),
            (ALERTS_DEAD_LETTERED, counts.dead_lettered),
        ] {
            if n > 0 {
                x.add(attr, delta(n));
            }
        }
        let key = keys::key(ALERT_COUNTERS_PK.to_owned(), ALERT_COUNTERS_SK);
        update_item(&self.client, &self.table, key, x, ReturnValue::None, OP).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn counts(&self) -> StoreResult<AlertCounts> {
        const OP: &str = "alerts.counts";
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(
                ALERT_COUNTERS_PK.to_owned(),
                ALERT_COUNTERS_SK,
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        let Some(item) = out.item else {
            return Ok(AlertCounts::default());
        };
        let key = keys::describe(ALERT_COUNTERS_PK, ALERT_COUNTERS_SK);
        let read = |attr| number::<u64>(&item, attr, OP, &key).map(Option::unwrap_or_default);
        Ok(AlertCounts {
            sent: read(ALERTS_SENT)?,
            deduplicated: read(ALERTS_DEDUPLICATED)?,
            retried: read(ALERTS_RETRIED)?,
            dead_lettered: read(ALERTS_DEAD_LETTERED)?,
        })
    }

    #[tracing::instrument(skip_all, fields(max))]
    async fn push_dead_letter(&self, letter: DeadLetter, max: u32) -> StoreResult<()> {
        const OP: &str = "alerts.push_dead_letter";
        check_dead_letter_bound(OP, max)?;
        let payload =
            serde_json::to_string(&letter.payload).map_err(|e| crate::StoreError::Rejected {
                operation: OP,
                source: Box::new(e),
            })?;
        let item = DeadLetterItem {
            pk: ALERT_DEAD_LETTER_PK.to_owned(),
            sk: keys::dead_letter_sk(letter.at, &letter.id),
            id: letter.id,
            at: letter.at,
            alert_type: letter.alert_type,
            tenant: letter.tenant,
            payload,
            error: letter.error,
            attempts: letter.attempts,
        };
        let item = to_item(OP, &item)?;
        put_item(&self.client, &self.table, item, Expr::default(), OP).await?;

        // Keep the newest `max`: whatever a consistent read finds beyond them goes. Concurrent
        // pushers may delete the same old letter twice; a DeleteItem of nothing is no error.
        let mut x = Expr::default();
        let (pk, letters) = (x.name(PK), x.str(ALERT_DEAD_LETTER_PK));
        x.require(format!("{pk} = {letters}"));
        let options = QueryOptions {
            descending: true,
            ..QueryOptions::CONSISTENT
        };
        let newest_first = query_all(&self.client, &self.table, x, options, OP).await?;
        for old in newest_first.into_iter().skip(max as usize) {
            let (Some(pk), Some(sk)) = (old.get(PK).cloned(), old.get(SK).cloned()) else {
                continue;
            };
            self.client
                .delete_item()
                .table_name(&self.table)
                .key(PK, pk)
                .key(SK, sk)
                .send()
                .await
                .map_err(|e| store_error(OP, e))?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(limit))]
    async fn dead_letters(
        &self,
        tenant: Option<&TenantId>,
        limit: u32,
    ) -> StoreResult<Vec<DeadLetter>> {
        const OP: &str = "alerts.dead_letters";
        check_dead_letter_bound(OP, limit)?;
        let mut x = Expr::default();
        let (pk, letters) = (x.name(PK), x.str(ALERT_DEAD_LETTER_PK));
        x.require(format!("{pk} = {letters}"));
        if let Some(tenant) = tenant {
            let (attr, value) = (x.name(TENANT), x.str(tenant.as_str()));
            x.filter(format!("{attr} = {value}"));
        }
        let options = QueryOptions {
            descending: true,
            max_items: Some(limit as usize),
            ..QueryOptions::CONSISTENT
        };
        query_all(&self.client, &self.table, x, options, OP)
            .await?
            .into_iter()
            .map(|item| Self::parse_letter(OP, item))
            .collect()
    }
}
