//! [`ExecutionStore`] on DynamoDB: one item per execution at `EXEC#{id}` / `META`. Every write
//! is one conditional request; a failed condition is explained from the `ALL_OLD` item (not
//! found, finished, held, conflict, illegal transition).
//!
//! Two global secondary indexes serve the reads that are not by id:
//! - `gsi1` (`TENANT#{tenant}` / `{created_at:013}#{id}`, written once at create): a tenant's
//!   executions, newest first ([`ExecutionStore::list`]; a status is a filter, and one call
//!   evaluates at most [`MAX_LIST_EVALUATED`] items, then answers a cursor).
//! - `gsi2`, sparse (`STATUS#{status}` / `{updated_at:013}#{id}`): unfinished executions by
//!   status and last write ([`ExecutionStore::stale`]). Every write keeps it in step in the
//!   same request: create and lease set the sort key, an update sets both keys, or removes
//!   both when the status becomes terminal, so finished executions leave the index.

use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::errors::{
    conditional, corrupt, parse_item, store_error, to_item, AdapterError, Conditional,
    MalformedItem,
};
use super::expr::{query_all, update_item, Expr, QueryOptions};
use super::keys::{
    self, Item, ATTEMPT_COUNT, BLOCKED_REASON, EXECUTION_SK, GSI1, GSI1PK, GSI1SK, GSI2, GSI2PK,
    GSI2SK, LEASE_EXPIRES_AT, LEASE_OWNER, NOT_BEFORE, PK, STAGE, STATUS, UPDATED_AT, VERSION,
};
use crate::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionLease, ExecutionRecord, ExecutionStatus, LeaseOutcome,
    NewExecution, UpdateOutcome,
};
use crate::domain::ids::{ExecutionId, HolderId, PipelineName, RunKey, SourceId, TenantId};
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{
    check_page_limit, ExecutionPage, ExecutionStore, StoreResult, MAX_LIST_EVALUATED,
};

/// Items a filtered [`ExecutionStore::list`] evaluates per `Query` request by default
/// (DynamoDB's `Limit` counts items before the filter, so a page of one status may take
/// several requests).
const FILTERED_LIST_BATCH: u32 = 200;

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
    /// Present while the status is not terminal (the sparse index `gsi2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2sk: Option<String>,
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
            gsi1pk: keys::gsi1_pk(&record.tenant),
            gsi1sk: keys::gsi1_sk(record.created_at, &record.id),
            gsi2pk: (!record.status.is_terminal()).then(|| keys::gsi2_pk(record.status)),
            gsi2sk: (!record.status.is_terminal())
                .then(|| keys::gsi2_sk(record.sweep_position(), &record.id)),
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
    filtered_batch: u32,
}

impl DynamoExecutionStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            filtered_batch: FILTERED_LIST_BATCH,
        }
    }

    /// Sets how many items a `list` of one status evaluates per `Query` request (default 200).
    /// Small values make tests cross request boundaries with a handful of items.
    pub fn with_filtered_batch(mut self, items: u32) -> Self {
        self.filtered_batch = items.max(1);
        self
    }

    fn key(id: &ExecutionId) -> Item {
        keys::key(keys::execution_pk(id), EXECUTION_SK)
    }

    /// The record in `item`; `None` if the item is empty (there was none).
    pub(super) fn parse(
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

    /// The record in an item read from an index (the id comes from its partition key).
    fn parse_indexed(operation: &'static str, item: Item) -> StoreResult<ExecutionRecord> {
        let pk = item
            .get(PK)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let id = keys::execution_id_of(&pk).ok_or_else(|| {
            corrupt(
                operation,
                &pk,
                MalformedItem("indexed item whose pk is not EXEC#{id}"),
            )
        })?;
        Self::parse(operation, &id, item)?
            .ok_or_else(|| corrupt(operation, &pk, MalformedItem("empty indexed item")))
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

    /// Sends the conditional update `x` on `id`'s item: `Ok(record)` as written (`ALL_NEW`),
    /// or `Err(item)`, the stored item the condition failed on (`ALL_OLD`, empty if none).
    async fn write(
        &self,
        id: &ExecutionId,
        x: Expr,
        operation: &'static str,
    ) -> StoreResult<Result<ExecutionRecord, Item>> {
        let written = update_item(
            &self.client,
            &self.table,
            Self::key(id),
            x,
            ReturnValue::AllNew,
            operation,
        )
        .await?;
        match written {
            Conditional::Written(new) => Ok(Ok(Self::parse_new(operation, id, new)?)),
            Conditional::Failed(old) => Ok(Err(old)),
        }
    }
}

/// The item of a new execution `record` and the condition of its create.
pub(super) fn create_write(
    operation: &'static str,
    record: &ExecutionRecord,
) -> StoreResult<(Item, Expr)> {
    let mut x = Expr::default();
    let pk = x.name(PK);
    // One execution per id (per run key): a second create learns the first from ALL_OLD.
    x.require(format!("attribute_not_exists({pk})"));
    Ok((to_item(operation, &ExecutionItem::new(record))?, x))
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
        let (item, x) = create_write(OP, &record)?;
        let r = x.render();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
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
        // The status is not terminal (see the condition), so the item is in gsi2 under its
        // status; only its last-write position moves.
        let position = x.str(keys::gsi2_sk(now, id));
        x.set(GSI2SK, position);
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
        let old = match self.write(id, x, OP).await? {
            Ok(new) => return Ok(LeaseOutcome::Acquired(new)),
            Err(old) => old,
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
        }
        // The gsi2 position is `idle_since` = max(last write, not_before). The write knows
        // `not_before` only when it sets it; otherwise it assumes none in the future (now), an
        // instant never later than the truth, so the sweeper may see a waiting run early
        // (and skip it) but never misses one.
        let idle_since = change.sweep_position(now);
        // Keeps gsi2 in step in the same write: a terminal status leaves the index; otherwise
        // the item sits under its (new) status at its new last-write position. A change
        // without a status only moves the position: on a finished execution (no gsi2pk) that
        // sort key is inert, the item stays out of the sparse index.
        match change.status {
            Some(to) if to.is_terminal() => {
                x.remove(GSI2PK);
                x.remove(GSI2SK);
            }
            Some(to) => {
                let (by_status, position) = (
                    x.str(keys::gsi2_pk(to)),
                    x.str(keys::gsi2_sk(idle_since, id)),
                );
                x.set(GSI2PK, by_status);
                x.set(GSI2SK, position);
            }
            None => {
                let position = x.str(keys::gsi2_sk(idle_since, id));
                x.set(GSI2SK, position);
            }
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
        let old = match self.write(id, x, OP).await? {
            Ok(new) => return Ok(UpdateOutcome::Updated(new)),
            Err(old) => old,
        };
        // The same decision the memory adapter makes (an illegal transition first, then the
        // version); a stored item that passes it contradicts the failed condition.
        let Some(stored) = Self::parse(OP, id, old)? else {
            return Ok(UpdateOutcome::NotFound);
        };
        stored
            .check_update(expected_version, &change)
            .ok_or_else(|| AdapterError::InconsistentCondition.transient(OP))
    }

    /// `Query` requests of `gsi1` (`gsi1pk = TENANT#{tenant}`, descending, and `gsi1sk <` the
    /// cursor), continued until `limit + 1` matching items are read (the extra one only tells
    /// whether another page exists), the tenant's executions are exhausted, or the bound is
    /// reached: [`MAX_LIST_EVALUATED`] items evaluated, or `ceil(MAX_LIST_EVALUATED / batch)`
    /// requests (5 with the default batch of 200; the second bound holds even when DynamoDB's
    /// 1 MB page cuts a request short). A status is a filter, each request evaluating `batch`
    /// items. The cursor is a `gsi1sk`, `{created_at:013}#{id}`: the last returned item's when
    /// the page is full, else the last evaluated item's (`LastEvaluatedKey`) when the bound
    /// stopped the read.
    ///
    /// `gsi1` is eventually consistent: an execution created or changed a moment ago may be
    /// missing or show its previous status. Read one with [`ExecutionStore::get`] to act on it.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, limit = limit))]
    async fn list(
        &self,
        tenant: &TenantId,
        status: Option<ExecutionStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<ExecutionPage> {
        const OP: &str = "execution.list";
        check_page_limit(OP, limit)?;
        if cursor.is_some_and(|c| keys::parse_time_id(c).is_none()) {
            return Err(StoreError::InvalidInput {
                operation: OP,
                detail: "unknown cursor".into(),
            });
        }
        let want = limit + 1;
        let mut x = Expr::default();
        let (pk, of_tenant) = (x.name(GSI1PK), x.str(keys::gsi1_pk(tenant)));
        let key_condition = match cursor {
            // Sort keys are unique (they end with the id): `<` resumes right after the cursor.
            Some(c) => {
                let (sk, after) = (x.name(GSI1SK), x.str(c));
                format!("{pk} = {of_tenant} AND {sk} < {after}")
            }
            None => format!("{pk} = {of_tenant}"),
        };
        x.require(key_condition);
        if let Some(s) = status {
            let (name, value) = (x.name(STATUS), x.str(s.as_str()));
            x.filter(format!("{name} = {value}"));
        }
        let batch = if status.is_some() {
            self.filtered_batch
        } else {
            want
        };
        let max_requests = MAX_LIST_EVALUATED.div_ceil(batch);
        let r = x.render();
        let mut records = Vec::new();
        let (mut evaluated, mut requests) = (0u32, 0u32);
        let mut start: Option<Item> = None;
        // Where a read stopped by the bound resumes: the last evaluated item's gsi1sk.
        let resume = loop {
            let page_limit = batch.min(MAX_LIST_EVALUATED - evaluated);
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .set_key_condition_expression(r.condition.clone())
                .set_filter_expression(r.filter.clone())
                .set_expression_attribute_names(r.names.clone())
                .set_expression_attribute_values(r.values.clone())
                .scan_index_forward(false)
                .limit(i32::try_from(page_limit).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error(OP, e))?;
            requests += 1;
            evaluated += u32::try_from(page.scanned_count.max(0)).unwrap_or(u32::MAX);
            for item in page.items.unwrap_or_default() {
                records.push(Self::parse_indexed(OP, item)?);
                if records.len() >= want as usize {
                    break;
                }
            }
            if records.len() >= want as usize {
                break None;
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => {
                    if evaluated >= MAX_LIST_EVALUATED || requests >= max_requests {
                        let sk = key
                            .get(GSI1SK)
                            .and_then(|v| v.as_s().ok())
                            .filter(|sk| keys::parse_time_id(sk).is_some())
                            .cloned()
                            .ok_or_else(|| {
                                corrupt(OP, GSI1, MalformedItem("LastEvaluatedKey without gsi1sk"))
                            })?;
                        break Some(sk);
                    }
                    start = Some(key);
                }
                _ => break None,
            }
        };
        let more = records.len() > limit as usize;
        records.truncate(limit as usize);
        let next_cursor = match resume {
            Some(sk) => Some(sk),
            None => records
                .last()
                .filter(|_| more)
                .map(|r| keys::gsi1_sk(r.created_at, &r.id)),
        };
        Ok(ExecutionPage {
            items: records,
            next_cursor,
        })
    }

    /// One `Query` of the sparse `gsi2` (`gsi2pk = STATUS#{status} AND gsi2sk <
    /// {updated_before:013}`, ascending), at most `limit` items: no filter, so no item is read
    /// and dropped.
    ///
    /// `gsi2` is eventually consistent: a record may show a write older than the latest (or
    /// still be listed just after it finished). The sweeper re-reads each one with a consistent
    /// [`ExecutionStore::get`] and acts through versioned writes, so a stale entry costs a read,
    /// never a wrong action.
    #[tracing::instrument(skip_all, fields(status = status.as_str(), limit = limit))]
    async fn stale(
        &self,
        status: ExecutionStatus,
        updated_before: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        const OP: &str = "execution.stale";
        if status.is_terminal() {
            return Err(StoreError::InvalidInput {
                operation: OP,
                detail: format!("{} is terminal: never stale", status.as_str()),
            });
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut x = Expr::default();
        let (pk, sk) = (x.name(GSI2PK), x.name(GSI2SK));
        let (of_status, before) = (
            x.str(keys::gsi2_pk(status)),
            x.str(keys::time_bound(updated_before)),
        );
        x.require(format!("{pk} = {of_status} AND {sk} < {before}"));
        let options = QueryOptions {
            page_size: Some(limit),
            max_items: Some(limit as usize),
            ..QueryOptions::index(GSI2)
        };
        let items = query_all(&self.client, &self.table, x, options, OP).await?;
        items
            .into_iter()
            .map(|item| Self::parse_indexed(OP, item))
            .collect()
    }
}
