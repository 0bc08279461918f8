//! [`ExecutionStore`] on DynamoDB: one item per execution at `EXEC#{id}` / `META`, indexed by
//! tenant and status on `gsi1`. Every write is one conditional request; a failed condition is
//! explained from the `ALL_OLD` item (not found, finished, held, conflict, illegal transition).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::errors::{
    conditional, corrupt, parse_item, store_error, to_item, AdapterError, Conditional,
    MalformedItem,
};
use super::expr::{update_item, Expr};
use super::keys::{
    self, Item, ATTEMPT_COUNT, BLOCKED_REASON, EXECUTION_SK, GSI1PK, LEASE_EXPIRES_AT, LEASE_OWNER,
    NOT_BEFORE, PK, STAGE, STATUS, UPDATED_AT, VERSION,
};
use crate::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionLease, ExecutionRecord, ExecutionStatus, LeaseOutcome,
    NewExecution, UpdateOutcome,
};
use crate::domain::ids::{ExecutionId, HolderId, PipelineName, RunKey, SourceId, TenantId};
use crate::domain::time::Timestamp;
use crate::ports::{ExecutionStore, StoreResult};

/// The attribute holding the `gsi1pk` of every status, written at create: an update that
/// changes the status copies the new one (`SET gsi1pk = gsi1pk_by_status.RUNNING`), so the
/// index stays in step in the same request without reading the tenant first.
const GSI1PK_BY_STATUS: &str = "gsi1pk_by_status";

/// The stored shape of an execution; the id lives in the key.
#[derive(Debug, Serialize, Deserialize)]
struct ExecutionItem {
    pk: String,
    sk: String,
    tenant: TenantId,
    source: SourceId,
    pipeline: PipelineName,
    run_key: RunKey,
    stage: u32,
    status: ExecutionStatus,
    attempt_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blocked_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_owner: Option<HolderId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replay_of: Option<ExecutionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<Timestamp>,
    version: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
    gsi1pk: String,
    gsi1sk: String,
    #[serde(default, skip_deserializing)]
    gsi1pk_by_status: BTreeMap<String, String>,
}

impl ExecutionItem {
    fn new(record: &ExecutionRecord) -> Self {
        Self {
            pk: keys::execution_pk(&record.id),
            sk: EXECUTION_SK.to_owned(),
            tenant: record.tenant.clone(),
            source: record.source.clone(),
            pipeline: record.pipeline.clone(),
            run_key: record.run_key.clone(),
            stage: record.stage,
            status: record.status,
            attempt_count: record.attempt_count,
            blocked_reason: record.blocked_reason.clone(),
            lease_owner: record.lease.as_ref().map(|l| l.owner.clone()),
            lease_expires_at: record.lease.as_ref().map(|l| l.expires_at),
            replay_of: record.replay_of.clone(),
            not_before: record.not_before,
            version: record.version,
            created_at: record.created_at,
            updated_at: record.updated_at,
            gsi1pk: keys::gsi1_pk(&record.tenant, record.status),
            gsi1sk: keys::gsi1_sk(record.created_at, &record.id),
            gsi1pk_by_status: ExecutionStatus::ALL
                .into_iter()
                .map(|s| (s.as_str().to_owned(), keys::gsi1_pk(&record.tenant, s)))
                .collect(),
        }
    }

    fn into_record(self, id: &ExecutionId) -> Result<ExecutionRecord, MalformedItem> {
        let lease = match (self.lease_owner, self.lease_expires_at) {
            (Some(owner), Some(expires_at)) => Some(ExecutionLease { owner, expires_at }),
            (None, None) => None,
            _ => {
                return Err(MalformedItem(
                    "lease_owner without lease_expires_at or back",
                ))
            }
        };
        Ok(ExecutionRecord {
            id: id.clone(),
            tenant: self.tenant,
            source: self.source,
            pipeline: self.pipeline,
            run_key: self.run_key,
            stage: self.stage,
            status: self.status,
            attempt_count: self.attempt_count,
            blocked_reason: self.blocked_reason,
            lease,
            replay_of: self.replay_of,
            not_before: self.not_before,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Execution records in the Sluice table.
#[derive(Debug, Clone)]
pub struct DynamoExecutionStore {
    client: Client,
    table: String,
}

impl DynamoExecutionStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(id: &ExecutionId) -> Item {
        keys::key(keys::execution_pk(id), EXECUTION_SK)
    }

    /// The record in `item`; `None` if the item is empty (there was none).
    fn parse(
        operation: &'static str,
        id: &ExecutionId,
        item: Item,
    ) -> StoreResult<Option<ExecutionRecord>> {
        if item.is_empty() {
            return Ok(None);
        }
        let key = keys::describe(&keys::execution_pk(id), EXECUTION_SK);
        let stored: ExecutionItem = parse_item(operation, &key, item)?;
        stored
            .into_record(id)
            .map(Some)
            .map_err(|e| corrupt(operation, &key, e))
    }

    /// The record written by a request that asked for `ALL_NEW`.
    fn parse_new(
        operation: &'static str,
        id: &ExecutionId,
        attributes: Item,
    ) -> StoreResult<ExecutionRecord> {
        Self::parse(operation, id, attributes)?
            .ok_or_else(|| AdapterError::MissingReturnValues.transient(operation))
    }
}

/// A list of status placeholders for an `IN (...)` condition.
fn status_list(x: &mut Expr, statuses: &[ExecutionStatus]) -> String {
    statuses
        .iter()
        .map(|s| x.str(s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ExecutionStore for DynamoExecutionStore {
    #[tracing::instrument(skip_all, fields(execution_id = %new.id))]
    async fn create(&self, new: NewExecution, now: Timestamp) -> StoreResult<CreateOutcome> {
        const OP: &str = "execution.create";
        let id = new.id.clone();
        let record = new.into_record(now);
        let mut x = Expr::default();
        let pk = x.name(PK);
        // One execution per id (per run key): a second create learns the first from ALL_OLD.
        x.require(format!("attribute_not_exists({pk})"));
        let r = x.render();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(OP, &ExecutionItem::new(&record))?))
            .set_condition_expression(r.condition)
            .set_expression_attribute_names(r.names)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match conditional(OP, result)? {
            Conditional::Written(_) => Ok(CreateOutcome::Created(record)),
            Conditional::Failed(old) => match Self::parse(OP, &id, old)? {
                Some(existing) => Ok(CreateOutcome::Existing(existing)),
                None => Err(AdapterError::InconsistentCondition.transient(OP)),
            },
        }
    }

    #[tracing::instrument(skip_all, fields(execution_id = %id))]
    async fn get(&self, id: &ExecutionId) -> StoreResult<Option<ExecutionRecord>> {
        const OP: &str = "execution.get";
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        Self::parse(OP, id, out.item.unwrap_or_default())
    }

    #[tracing::instrument(skip_all, fields(execution_id = %id, owner = %owner))]
    async fn acquire_lease(
        &self,
        id: &ExecutionId,
        owner: &HolderId,
        now: Timestamp,
        ttl_secs: i64,
    ) -> StoreResult<LeaseOutcome> {
        const OP: &str = "execution.acquire_lease";
        let mut x = Expr::default();
        let me = x.str(owner.as_str());
        let until = x.num(now.plus_secs(ttl_secs).as_millis());
        let at = x.num(now.as_millis());
        x.set(LEASE_OWNER, me.clone());
        x.set(LEASE_EXPIRES_AT, until);
        x.set(UPDATED_AT, at.clone());
        x.add(VERSION, 1);
        let (pk, status, lease_owner, lease_expires_at) = (
            x.name(PK),
            x.name(STATUS),
            x.name(LEASE_OWNER),
            x.name(LEASE_EXPIRES_AT),
        );
        let terminal: Vec<_> = ExecutionStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        let terminal = status_list(&mut x, &terminal);
        x.require(format!("attribute_exists({pk})"));
        x.require(format!("NOT ({status} IN ({terminal}))"));
        // Exactly one of many concurrent workers wins; another owner takes over only after
        // the lease expired; the owner itself may renew.
        x.require(format!(
            "attribute_not_exists({lease_owner}) OR {lease_expires_at} <= {at} OR {lease_owner} = {me}"
        ));
        let written = update_item(
            &self.client,
            &self.table,
            Self::key(id),
            x,
            ReturnValue::AllNew,
            OP,
        )
        .await?;
        let old = match written {
            Conditional::Written(new) => {
                return Ok(LeaseOutcome::Acquired(Self::parse_new(OP, id, new)?))
            }
            Conditional::Failed(old) => old,
        };
        let Some(stored) = Self::parse(OP, id, old)? else {
            return Ok(LeaseOutcome::NotFound);
        };
        if stored.status.is_terminal() {
            return Ok(LeaseOutcome::Finished(stored));
        }
        match stored.lease {
            Some(lease) if lease.owner != *owner && lease.expires_at > now => {
                Ok(LeaseOutcome::Held {
                    owner: lease.owner,
                    expires_at: lease.expires_at,
                })
            }
            _ => Err(AdapterError::InconsistentCondition.transient(OP)),
        }
    }

    #[tracing::instrument(skip_all, fields(execution_id = %id, expected_version = expected_version))]
    async fn update(
        &self,
        id: &ExecutionId,
        expected_version: u64,
        change: ExecutionChange,
        now: Timestamp,
    ) -> StoreResult<UpdateOutcome> {
        const OP: &str = "execution.update";
        let mut x = Expr::default();
        let version = x.name(VERSION);
        let expected = x.num(expected_version);
        x.require(format!("{version} = {expected}"));
        if let Some(to) = change.status {
            let status = x.name(STATUS);
            let allowed = status_list(&mut x, &ExecutionStatus::predecessors_of(to));
            // Forward-only: the stored status must be one `to` may be reached from.
            x.require(format!("{status} IN ({allowed})"));
            let value = x.str(to.as_str());
            x.set(STATUS, value);
            // Moves the item in gsi1 in the same write (see GSI1PK_BY_STATUS).
            let by_status = x.name(GSI1PK_BY_STATUS);
            let entry = x.name(to.as_str());
            x.set(GSI1PK, format!("{by_status}.{entry}"));
        }
        if let Some(stage) = change.stage {
            let v = x.num(stage);
            x.set(STAGE, v);
        }
        if let Some(attempts) = change.attempt_count {
            let v = x.num(attempts);
            x.set(ATTEMPT_COUNT, v);
        }
        if let Some(reason) = &change.blocked_reason {
            let v = x.str(reason.as_str());
            x.set(BLOCKED_REASON, v);
        }
        match change.not_before {
            Some(Some(at)) => {
                let v = x.num(at.as_millis());
                x.set(NOT_BEFORE, v);
            }
            Some(None) => x.remove(NOT_BEFORE),
            None => {}
        }
        if change.release_lease {
            x.remove(LEASE_OWNER);
            x.remove(LEASE_EXPIRES_AT);
        }
        let at = x.num(now.as_millis());
        x.set(UPDATED_AT, at);
        x.add(VERSION, 1);
        let written = update_item(
            &self.client,
            &self.table,
            Self::key(id),
            x,
            ReturnValue::AllNew,
            OP,
        )
        .await?;
        let old = match written {
            Conditional::Written(new) => {
                return Ok(UpdateOutcome::Updated(Self::parse_new(OP, id, new)?))
            }
            Conditional::Failed(old) => old,
        };
        // Same precedence as the memory adapter: an illegal transition first, then the version.
        let Some(stored) = Self::parse(OP, id, old)? else {
            return Ok(UpdateOutcome::NotFound);
        };
        if let Some(to) = change.status {
            if !stored.status.can_move_to(to) {
                return Ok(UpdateOutcome::IllegalTransition {
                    from: stored.status,
                    to,
                });
            }
        }
        if stored.version != expected_version {
            return Ok(UpdateOutcome::VersionConflict(stored));
        }
        Err(AdapterError::InconsistentCondition.transient(OP))
    }
}
