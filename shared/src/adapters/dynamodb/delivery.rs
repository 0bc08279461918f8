//! [`DeliveryStore`] on DynamoDB: one dedupe item per (tenant, source, delivery id) at
//! `DELIVERY#{tenant}#{source}#{delivery_id}` / `DELIVERY`.

use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::errors::{parse_item, store_error, to_item, to_value, AdapterError, Conditional};
use super::expr::{put_item, update_item, Expr};
use super::keys::{self, Item, DELIVERY_SK, EXPIRES_AT, PK, STATUS};
use crate::domain::delivery::{ClaimOutcome, DeliveryClaim, DeliveryRecord, DeliveryStatus};
use crate::domain::ids::{DeliveryId, ExecutionId, SourceId, TenantId};
use crate::domain::time::Timestamp;
use crate::ports::{DeliveryStore, StoreResult};

/// The stored shape of a dedupe record; source and delivery id live in the key (the tenant
/// too, and in its own attribute).
#[derive(Debug, Serialize, Deserialize)]
struct DeliveryItem {
    pk: String,
    sk: String,
    execution_id: ExecutionId,
    tenant: TenantId,
    payload_hash: String,
    status: DeliveryStatus,
    received_at: Timestamp,
    expires_at: i64,
}

impl DeliveryItem {
    fn new(record: &DeliveryRecord) -> Self {
        Self {
            pk: keys::delivery_pk(&record.tenant, &record.source, &record.delivery_id),
            sk: DELIVERY_SK.to_owned(),
            execution_id: record.execution_id.clone(),
            tenant: record.tenant.clone(),
            payload_hash: record.payload_hash.clone(),
            status: record.status,
            received_at: record.received_at,
            expires_at: record.expires_at,
        }
    }

    fn into_record(self, source: &SourceId, delivery_id: &DeliveryId) -> DeliveryRecord {
        DeliveryRecord {
            source: source.clone(),
            delivery_id: delivery_id.clone(),
            tenant: self.tenant,
            execution_id: self.execution_id,
            payload_hash: self.payload_hash,
            status: self.status,
            received_at: self.received_at,
            expires_at: self.expires_at,
        }
    }
}

/// Delivery dedupe records in the Sluice table.
#[derive(Debug, Clone)]
pub struct DynamoDeliveryStore {
    client: Client,
    table: String,
}

impl DynamoDeliveryStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The record in `item`, the record of (`tenant`, `source`, `delivery_id`).
    pub(super) fn parse(
        operation: &'static str,
        tenant: &TenantId,
        source: &SourceId,
        delivery_id: &DeliveryId,
        item: Item,
    ) -> StoreResult<DeliveryRecord> {
        let key = keys::describe(&keys::delivery_pk(tenant, source, delivery_id), DELIVERY_SK);
        let stored: DeliveryItem = parse_item(operation, &key, item)?;
        Ok(stored.into_record(source, delivery_id))
    }
}

/// The item of `record` and the condition under which a claim at `now` may write it.
pub(super) fn claim_write(
    operation: &'static str,
    record: &DeliveryRecord,
    now: Timestamp,
) -> StoreResult<(Item, Expr)> {
    let mut x = Expr::default();
    let (pk, expires_at, now_secs) = (x.name(PK), x.name(EXPIRES_AT), x.num(now.epoch_secs()));
    // The first claim wins; a record past its TTL that DynamoDB has not reaped yet no longer
    // blocks a new claim. On failure ALL_OLD is the winner's record.
    x.require(format!(
        "attribute_not_exists({pk}) OR {expires_at} < {now_secs}"
    ));
    Ok((to_item(operation, &DeliveryItem::new(record))?, x))
}

impl DeliveryStore for DynamoDeliveryStore {
    #[tracing::instrument(skip_all, fields(source = %claim.source, delivery_id = %claim.delivery_id))]
    async fn claim(
        &self,
        claim: DeliveryClaim,
        now: Timestamp,
        ttl_secs: i64,
    ) -> StoreResult<ClaimOutcome> {
        const OP: &str = "delivery.claim";
        let (tenant, source, delivery_id) = (
            claim.tenant.clone(),
            claim.source.clone(),
            claim.delivery_id.clone(),
        );
        let record = DeliveryRecord::new(claim, now, ttl_secs);
        let (item, x) = claim_write(OP, &record, now)?;
        match put_item(&self.client, &self.table, item, x, OP).await? {
            Conditional::Written(_) => Ok(ClaimOutcome::Claimed(record)),
            Conditional::Failed(old) if old.is_empty() => {
                Err(AdapterError::InconsistentCondition.transient(OP))
            }
            Conditional::Failed(old) => Ok(ClaimOutcome::Duplicate(Self::parse(
                OP,
                &tenant,
                &source,
                &delivery_id,
                old,
            )?)),
        }
    }

    #[tracing::instrument(skip_all, fields(source = %source, delivery_id = %delivery_id))]
    async fn mark_queued(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        delivery_id: &DeliveryId,
    ) -> StoreResult<bool> {
        const OP: &str = "delivery.mark_queued";
        let mut x = Expr::default();
        let queued = x.value(to_value(OP, &DeliveryStatus::Queued)?);
        x.set(STATUS, queued);
        let pk = x.name(PK);
        // Without it an update would create a bare item for an unknown delivery.
        x.require(format!("attribute_exists({pk})"));
        let key = keys::key(keys::delivery_pk(tenant, source, delivery_id), DELIVERY_SK);
        let outcome = update_item(&self.client, &self.table, key, x, ReturnValue::None, OP).await?;
        Ok(matches!(outcome, Conditional::Written(_)))
    }

    #[tracing::instrument(skip_all, fields(source = %source, delivery_id = %delivery_id))]
    async fn get(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        delivery_id: &DeliveryId,
    ) -> StoreResult<Option<DeliveryRecord>> {
        const OP: &str = "delivery.get";
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(
                keys::delivery_pk(tenant, source, delivery_id),
                DELIVERY_SK,
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        out.item
            .map(|item| Self::parse(OP, tenant, source, delivery_id, item))
            .transpose()
    }
}
