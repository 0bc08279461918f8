//! [`MemoryDeliveryStore`]: delivery dedupe records in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lock;
use crate::domain::delivery::{ClaimOutcome, DeliveryClaim, DeliveryRecord, DeliveryStatus};
use crate::domain::ids::{DeliveryId, SourceId, TenantId};
use crate::domain::time::Timestamp;
use crate::ports::{DeliveryStore, StoreResult};

pub(super) type Records = HashMap<DeliveryKey, DeliveryRecord>;

/// What a dedupe record is keyed by: (tenant, source, delivery id).
pub(super) type DeliveryKey = (TenantId, SourceId, DeliveryId);

/// The key of `record`.
pub(super) fn key_of(record: &DeliveryRecord) -> DeliveryKey {
    (
        record.tenant.clone(),
        record.source.clone(),
        record.delivery_id.clone(),
    )
}

/// Delivery dedupe records keyed by (tenant, source, delivery id). Like DynamoDB before its TTL reaper
/// runs, an expired record stays readable until a new claim replaces it.
#[derive(Debug, Clone, Default)]
pub struct MemoryDeliveryStore {
    pub(super) records: Arc<Mutex<Records>>,
}

impl MemoryDeliveryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl DeliveryStore for MemoryDeliveryStore {
    async fn claim(
        &self,
        claim: DeliveryClaim,
        now: Timestamp,
        ttl_secs: i64,
    ) -> StoreResult<ClaimOutcome> {
        let mut records = lock(&self.records);
        let key = (
            claim.tenant.clone(),
            claim.source.clone(),
            claim.delivery_id.clone(),
        );
        match records.get(&key) {
            Some(existing) if existing.blocks_claim_at(now) => {
                Ok(ClaimOutcome::Duplicate(existing.clone()))
            }
            _ => {
                let record = DeliveryRecord::new(claim, now, ttl_secs);
                records.insert(key, record.clone());
                Ok(ClaimOutcome::Claimed(record))
            }
        }
    }

    async fn mark_queued(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        delivery_id: &DeliveryId,
    ) -> StoreResult<bool> {
        let mut records = lock(&self.records);
        let key = (tenant.clone(), source.clone(), delivery_id.clone());
        Ok(match records.get_mut(&key) {
            Some(record) => {
                record.status = DeliveryStatus::Queued;
                true
            }
            None => false,
        })
    }

    async fn get(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        delivery_id: &DeliveryId,
    ) -> StoreResult<Option<DeliveryRecord>> {
        let key = (tenant.clone(), source.clone(), delivery_id.clone());
        Ok(lock(&self.records).get(&key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::ExecutionId;

    fn claim(delivery: &str) -> DeliveryClaim {
        DeliveryClaim {
            source: SourceId::parse("github").unwrap(),
            delivery_id: DeliveryId::parse(delivery).unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            execution_id: ExecutionId::random(),
            payload_hash: "h".into(),
        }
    }

    #[tokio::test]
    async fn a_record_blocks_until_its_expiry_second_has_passed() {
        let store = MemoryDeliveryStore::new();
        let now = Timestamp::from_secs(1_000);
        let first = store.claim(claim("d"), now, 10).await.unwrap();
        assert!(matches!(first, ClaimOutcome::Claimed(_)));
        // expires_at = 1010: still blocking at 1010.999 (`expires_at < now` is strict).
        let at_expiry = store
            .claim(claim("d"), Timestamp::from_millis(1_010_999), 10)
            .await
            .unwrap();
        assert_eq!(at_expiry.execution_id(), first.execution_id());
        assert!(matches!(at_expiry, ClaimOutcome::Duplicate(_)));
        let after = store
            .claim(claim("d"), Timestamp::from_secs(1_011), 10)
            .await
            .unwrap();
        assert!(matches!(after, ClaimOutcome::Claimed(_)));
        assert_ne!(after.execution_id(), first.execution_id());
    }

    #[tokio::test]
    async fn clones_share_records() {
        let store = MemoryDeliveryStore::new();
        let clone = store.clone();
        let c = claim("d");
        store
            .claim(c.clone(), Timestamp::from_secs(1), 60)
            .await
            .unwrap();
        assert!(clone
            .mark_queued(&c.tenant, &c.source, &c.delivery_id)
            .await
            .unwrap());
        let got = store
            .get(&c.tenant, &c.source, &c.delivery_id)
            .await
            .unwrap();
        assert_eq!(got.map(|r| r.status), Some(DeliveryStatus::Queued));
    }
}
