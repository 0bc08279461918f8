//! [`MemorySemaphoreStore`]: leased semaphores in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lock;
use crate::domain::ids::HolderId;
use crate::domain::semaphore::{AcquireOutcome, SemaphoreKey, SlotDecision, SlotTable};
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{SemaphoreStore, StoreResult};

/// One [`SlotTable`] per semaphore key.
#[derive(Debug, Clone, Default)]
pub struct MemorySemaphoreStore {
    tables: Arc<Mutex<HashMap<SemaphoreKey, SlotTable>>>,
}

impl MemorySemaphoreStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Takes, renews or refuses a slot on `table`, reclaiming expired leases on the way.
fn acquire_on(
    table: &mut SlotTable,
    holder: &HolderId,
    limit: u32,
    expires_at: Timestamp,
    now: Timestamp,
) -> AcquireOutcome {
    // A holder already counted only renews its lease, whatever the count (the DynamoDB
    // adapter's `attribute_not_exists(#h)` fails and it renews with `SET #h` alone).
    if let Some(expiry) = table.holders.get_mut(holder) {
        *expiry = expires_at;
        return AcquireOutcome::Acquired { expires_at };
    }
    loop {
        match table.decide(limit, now) {
            SlotDecision::Take => {
                table.take(holder.clone(), expires_at);
                return AcquireOutcome::Acquired { expires_at };
            }
            SlotDecision::Reclaim(expired) => {
                // Each round removes at least one holder, so the loop ends.
                for (h, _) in &expired {
                    table.release(h);
                }
            }
            SlotDecision::Full { earliest_expiry } => {
                return AcquireOutcome::Full { earliest_expiry };
            }
        }
    }
}

impl SemaphoreStore for MemorySemaphoreStore {
    async fn acquire(
        &self,
        key: &SemaphoreKey,
        holder: &HolderId,
        limit: u32,
        ttl_secs: i64,
        now: Timestamp,
    ) -> StoreResult<AcquireOutcome> {
        if limit == 0 {
            return Err(StoreError::InvalidInput {
                operation: "semaphore.acquire",
                detail: "limit must be at least 1".into(),
            });
        }
        let mut tables = lock(&self.tables);
        let table = tables.entry(key.clone()).or_default();
        Ok(acquire_on(
            table,
            holder,
            limit,
            now.plus_secs(ttl_secs),
            now,
        ))
    }

    async fn release(&self, key: &SemaphoreKey, holder: &HolderId) -> StoreResult<bool> {
        let mut tables = lock(&self.tables);
        Ok(tables
            .get_mut(key)
            .is_some_and(|table| table.release(holder)))
    }

    async fn in_flight(&self, key: &SemaphoreKey) -> StoreResult<u32> {
        Ok(lock(&self.tables).get(key).map_or(0, |t| t.in_flight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::SourceId;

    fn key() -> SemaphoreKey {
        SemaphoreKey::SourcePipelines(SourceId::parse("github").unwrap())
    }

    #[tokio::test]
    async fn a_holder_renews_even_when_full_and_expired() {
        let store = MemorySemaphoreStore::new();
        let (a, b) = (HolderId::random(), HolderId::random());
        let t = Timestamp::from_secs(100);
        store.acquire(&key(), &a, 1, 10, t).await.unwrap();
        // a's lease has expired; a asks again before anyone reclaimed it.
        let renewed = store
            .acquire(&key(), &a, 1, 10, t.plus_secs(20))
            .await
            .unwrap();
        assert_eq!(
            renewed,
            AcquireOutcome::Acquired {
                expires_at: t.plus_secs(30)
            }
        );
        assert_eq!(store.in_flight(&key()).await.unwrap(), 1);
        assert_eq!(
            store
                .acquire(&key(), &b, 1, 10, t.plus_secs(29))
                .await
                .unwrap(),
            AcquireOutcome::Full {
                earliest_expiry: Some(t.plus_secs(30))
            }
        );
        // At the expiry instant the lease counts as expired and is reclaimed.
        assert!(matches!(
            store
                .acquire(&key(), &b, 1, 10, t.plus_secs(30))
                .await
                .unwrap(),
            AcquireOutcome::Acquired { .. }
        ));
        assert!(!store.release(&key(), &a).await.unwrap());
    }

    #[tokio::test]
    async fn concurrent_acquirers_never_exceed_the_limit() {
        let store = MemorySemaphoreStore::new();
        let t = Timestamp::from_secs(100);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .acquire(&key(), &HolderId::random(), 5, 60, t)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut acquired = 0;
        for task in tasks {
            if matches!(task.await.unwrap(), AcquireOutcome::Acquired { .. }) {
                acquired += 1;
            }
        }
        assert_eq!(acquired, 5);
        assert_eq!(store.in_flight(&key()).await.unwrap(), 5);
    }
}
