//! [`MemoryExecutionStore`]: execution records in memory: create-once, leases, versioned
//! forward-only updates, and a listing bounded as the DynamoDB one is (at most
//! [`MAX_LIST_EVALUATED`] executions evaluated per call).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lock;
use crate::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionLease, ExecutionRecord, ExecutionStatus, LeaseOutcome,
    NewExecution, UpdateOutcome,
};
use crate::domain::ids::{ExecutionId, HolderId, TenantId};
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{
    check_page_limit, ExecutionPage, ExecutionStore, StoreResult, MAX_LIST_EVALUATED,
};

/// Execution records keyed by id.
#[derive(Debug, Clone, Default)]
pub struct MemoryExecutionStore {
    pub(super) records: Arc<Mutex<HashMap<ExecutionId, ExecutionRecord>>>,
    /// The sweep position each write set, as the DynamoDB adapter's `gsi2sk` (see
    /// [`ExecutionChange::sweep_position`]); a record written by another memory adapter
    /// (intake) has none here and sorts by its [`ExecutionRecord::sweep_position`].
    positions: Arc<Mutex<HashMap<ExecutionId, Timestamp>>>,
}

impl MemoryExecutionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ExecutionStore for MemoryExecutionStore {
    async fn create(&self, new: NewExecution, now: Timestamp) -> StoreResult<CreateOutcome> {
        let mut records = lock(&self.records);
        if let Some(existing) = records.get(&new.id) {
            return Ok(CreateOutcome::Existing(existing.clone()));
        }
        let record = new.into_record(now);
        records.insert(record.id.clone(), record.clone());
        lock(&self.positions).insert(record.id.clone(), record.sweep_position());
        Ok(CreateOutcome::Created(record))
    }

    async fn get(&self, id: &ExecutionId) -> StoreResult<Option<ExecutionRecord>> {
        Ok(lock(&self.records).get(id).cloned())
    }

    async fn acquire_lease(
        &self,
        id: &ExecutionId,
        owner: &HolderId,
        now: Timestamp,
        ttl_secs: i64,
    ) -> StoreResult<LeaseOutcome> {
        let mut records = lock(&self.records);
        let Some(record) = records.get_mut(id) else {
            return Ok(LeaseOutcome::NotFound);
        };
        if record.status.is_terminal() {
            return Ok(LeaseOutcome::Finished(record.clone()));
        }
        if !record.lease_available_to(owner, now) {
            if let Some(lease) = &record.lease {
                return Ok(LeaseOutcome::Held {
                    owner: lease.owner.clone(),
                    expires_at: lease.expires_at,
                });
            }
        }
        record.lease = Some(ExecutionLease {
            owner: owner.clone(),
            expires_at: now.plus_secs(ttl_secs),
        });
        record.version += 1;
        record.updated_at = now;
        lock(&self.positions).insert(id.clone(), now);
        Ok(LeaseOutcome::Acquired(record.clone()))
    }

    async fn update(
        &self,
        id: &ExecutionId,
        expected_version: u64,
        change: ExecutionChange,
        now: Timestamp,
    ) -> StoreResult<UpdateOutcome> {
        let mut records = lock(&self.records);
        let Some(record) = records.get_mut(id) else {
            return Ok(UpdateOutcome::NotFound);
        };
        // The same decision the DynamoDB adapter makes from its ALL_OLD item.
        if let Some(refused) = record.check_update(expected_version, &change) {
            return Ok(refused);
        }
        record.apply(&change, now);
        lock(&self.positions).insert(id.clone(), change.sweep_position(now));
        Ok(UpdateOutcome::Updated(record.clone()))
    }

    async fn list(
        &self,
        tenant: &TenantId,
        status: Option<ExecutionStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<ExecutionPage> {
        const OP: &str = "execution.list";
        check_page_limit(OP, limit)?;
        // The cursor is the sort key of the last item handed out: `{created_at}#{id}`.
        let after = match cursor {
            None => None,
            Some(c) => Some(parse_cursor(c).ok_or_else(|| StoreError::InvalidInput {
                operation: OP,
                detail: "unknown cursor".into(),
            })?),
        };
        let records = lock(&self.records);
        let mut mine: Vec<&ExecutionRecord> = records
            .values()
            .filter(|r| r.tenant == *tenant)
            .filter(|r| after.as_ref().is_none_or(|a| sort_key(r) < *a))
            .collect();
        mine.sort_by_key(|r| std::cmp::Reverse(sort_key(r)));
        // As the DynamoDB adapter: evaluate at most MAX_LIST_EVALUATED, newest first, and keep
        // up to limit + 1 matches (the extra one only says that another page exists).
        let want = limit as usize + 1;
        let mut found = Vec::new();
        let mut evaluated = 0usize;
        for r in &mine {
            if found.len() >= want || evaluated >= MAX_LIST_EVALUATED as usize {
                break;
            }
            evaluated += 1;
            if status.is_none_or(|s| r.status == s) {
                found.push(*r);
            }
        }
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        let next_cursor = if more {
            found.last().map(|r| cursor_of(r))
        } else if evaluated >= MAX_LIST_EVALUATED as usize {
            // Stopped by the bound: resume after the last execution evaluated. Like DynamoDB's
            // `LastEvaluatedKey`, also when that one was the tenant's oldest (the next call then
            // answers an empty last page).
            Some(cursor_of(mine[evaluated - 1]))
        } else {
            None
        };
        Ok(ExecutionPage {
            items: found.into_iter().cloned().collect(),
            next_cursor,
        })
    }

    async fn stale(
        &self,
        status: ExecutionStatus,
        updated_before: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        if status.is_terminal() {
            let detail = format!("{} is terminal: never stale", status.as_str());
            return Err(StoreError::InvalidInput {
                operation: "execution.stale",
                detail,
            });
        }
        let records = lock(&self.records);
        let positions = lock(&self.positions);
        let position = |r: &ExecutionRecord| {
            positions
                .get(&r.id)
                .copied()
                .unwrap_or_else(|| r.sweep_position())
        };
        let mut found: Vec<ExecutionRecord> = records
            .values()
            .filter(|r| r.status == status && position(r) < updated_before)
            .cloned()
            .collect();
        found.sort_by_key(|r| (position(r), r.id.clone()));
        found.truncate(limit as usize);
        Ok(found)
    }
}

fn sort_key(r: &ExecutionRecord) -> (Timestamp, ExecutionId) {
    (r.created_at, r.id.clone())
}

fn cursor_of(r: &ExecutionRecord) -> String {
    format!("{}#{}", r.created_at.as_millis(), r.id)
}

fn parse_cursor(c: &str) -> Option<(Timestamp, ExecutionId)> {
    let (ms, id) = c.split_once('#')?;
    Some((
        Timestamp::from_millis(ms.parse().ok()?),
        ExecutionId::parse(id).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::execution::ExecutionStatus;
    use crate::domain::ids::{PipelineName, RunKey, SourceId, TenantId};

    fn new_exec() -> NewExecution {
        NewExecution {
            id: ExecutionId::random(),
            tenant: TenantId::parse("acme").unwrap(),
            source: SourceId::parse("github").unwrap(),
            pipeline: PipelineName::parse("review").unwrap(),
            run_key: RunKey::parse("a@1").unwrap(),
            replay_of: None,
            not_before: None,
        }
    }

    #[tokio::test]
    async fn lease_expires_at_its_instant_and_finished_wins_over_held() {
        let store = MemoryExecutionStore::new();
        let new = new_exec();
        let id = new.id.clone();
        let t = Timestamp::from_secs(100);
        store.create(new, t).await.unwrap();
        let (a, b) = (HolderId::random(), HolderId::random());
        assert!(matches!(
            store.acquire_lease(&id, &a, t, 10).await.unwrap(),
            LeaseOutcome::Acquired(_)
        ));
        assert!(matches!(
            store
                .acquire_lease(&id, &b, t.plus_millis(9_999), 10)
                .await
                .unwrap(),
            LeaseOutcome::Held { .. }
        ));
        let LeaseOutcome::Acquired(rec) = store
            .acquire_lease(&id, &b, t.plus_secs(10), 10)
            .await
            .unwrap()
        else {
            panic!("an expired lease is taken over");
        };
        let done = ExecutionChange {
            status: Some(ExecutionStatus::Failed),
            ..ExecutionChange::default()
        };
        store.update(&id, rec.version, done, t).await.unwrap();
        // Lease still held by b, but the execution is finished.
        assert!(matches!(
            store
                .acquire_lease(&id, &a, t.plus_secs(11), 10)
                .await
                .unwrap(),
            LeaseOutcome::Finished(_)
        ));
    }

    #[tokio::test]
    async fn illegal_transition_is_reported_before_a_version_conflict() {
        let store = MemoryExecutionStore::new();
        let new = new_exec();
        let id = new.id.clone();
        let t = Timestamp::from_secs(100);
        store.create(new, t).await.unwrap();
        let to_running = ExecutionChange {
            status: Some(ExecutionStatus::Running),
            ..ExecutionChange::default()
        };
        store.update(&id, 1, to_running, t).await.unwrap();
        let back = ExecutionChange {
            status: Some(ExecutionStatus::Queued),
            ..ExecutionChange::default()
        };
        assert_eq!(
            store.update(&id, 99, back, t).await.unwrap(),
            UpdateOutcome::IllegalTransition {
                from: ExecutionStatus::Running,
                to: ExecutionStatus::Queued
            }
        );
    }
}
