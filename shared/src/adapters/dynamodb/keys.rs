//! Every key prefix, sort-key constant, attribute name and index name of the Sluice table, and
//! the small functions that build keys from ids. The layout is documented in
//! `docs/architecture.md` ("The table"); nothing else in the adapters spells a key by hand.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::domain::connector::SwitchTarget;
use crate::domain::execution::ExecutionStatus;
use crate::domain::ids::{
    ConnectorId, DeliveryId, ExecutionId, HolderId, SourceId, TenantId, ToolName,
};
use crate::domain::semaphore::SemaphoreKey;
use crate::domain::time::Timestamp;

/// A raw DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// Partition key attribute.
pub const PK: &str = "pk";
/// Sort key attribute.
pub const SK: &str = "sk";
/// The executions-by-tenant index: `gsi1pk` = [`gsi1_pk`], `gsi1sk` = [`gsi1_sk`], both
/// written once at create.
pub const GSI1: &str = "gsi1";
/// Partition key of [`GSI1`].
pub const GSI1PK: &str = "gsi1pk";
/// Sort key of [`GSI1`].
pub const GSI1SK: &str = "gsi1sk";
/// The sparse index of unfinished executions by status and last write: `gsi2pk` =
/// [`gsi2_pk`] while the status is not terminal (removed when it becomes terminal), `gsi2sk` =
/// [`gsi2_sk`], rewritten by every write.
pub const GSI2: &str = "gsi2";
/// Partition key of [`GSI2`].
pub const GSI2PK: &str = "gsi2pk";
/// Sort key of [`GSI2`].
pub const GSI2SK: &str = "gsi2sk";
/// The TTL attribute (epoch seconds).
pub const EXPIRES_AT: &str = "expires_at";

/// Sort key of a delivery dedupe record.
pub const DELIVERY_SK: &str = "DELIVERY";
/// Sort key of an execution record.
pub const EXECUTION_SK: &str = "META";
/// Sort-key prefix of ledger events.
pub const EVENT_PREFIX: &str = "EVENT#";
/// Sort key of a source's pipeline slot table.
pub const PIPELINES_SK: &str = "PIPELINES";
/// Sort key of a connector's admission state.
pub const CONNECTOR_STATE_SK: &str = "STATE";
/// Partition key of the durable kill switches (sort key: the target key).
pub const SWITCHES_PK: &str = "SWITCHES";

/// Attribute names of the delivery, execution and ledger items.
pub const STATUS: &str = "status";
pub const VERSION: &str = "version";
pub const UPDATED_AT: &str = "updated_at";
pub const STAGE: &str = "stage";
pub const ATTEMPT_COUNT: &str = "attempt_count";
pub const BLOCKED_REASON: &str = "blocked_reason";
pub const NOT_BEFORE: &str = "not_before";
pub const LEASE_OWNER: &str = "lease_owner";
pub const LEASE_EXPIRES_AT: &str = "lease_expires_at";

/// Attribute names of the slot tables (semaphores and connector state).
pub const IN_FLIGHT: &str = "in_flight";
/// Prefix of a slot holder's attribute; its value is the lease expiry (epoch ms).
pub const HOLDER_PREFIX: &str = "h#";

/// Attribute names of a connector's state item.
pub const INITIALIZED_AT: &str = "initialized_at";
pub const BREAKER_STATE: &str = "breaker_state";
pub const CONSECUTIVE_FAILURES: &str = "consecutive_failures";
pub const OPENED_AT: &str = "opened_at";
pub const OPEN_UNTIL: &str = "open_until";
pub const PROBE_HOLDER: &str = "probe_holder";
pub const PROBE_EXPIRES_AT: &str = "probe_expires_at";
/// The operator's concurrency limit (a number, compared with `in_flight` by the admission
/// condition) and its audit fields, on a connector's state item; absent while none is set.
pub const LIMIT_OVERRIDE: &str = "limit_override";
pub const LIMIT_OVERRIDE_BY: &str = "limit_override_by";
pub const LIMIT_OVERRIDE_AT: &str = "limit_override_at";
pub const LIMIT_OVERRIDE_REASON: &str = "limit_override_reason";
/// Prefix of a kill switch's copy on a connector's state item (`sw#{target key}`).
pub const SWITCH_PREFIX: &str = "sw#";

/// Counter attribute of a rate window.
pub const COUNT: &str = "count";

/// Sort key of an alert dedup window.
pub const ALERT_WINDOW_SK: &str = "WINDOW";
/// Partition key of the alert counters.
pub const ALERT_COUNTERS_PK: &str = "ALERT#COUNTERS";
/// Sort key of the alert counters.
pub const ALERT_COUNTERS_SK: &str = "TOTAL";
/// Partition key of the alert dead letters (sort key: [`dead_letter_sk`]).
pub const ALERT_DEAD_LETTER_PK: &str = "ALERT#DEADLETTER";

/// The tenant of a dead letter (filtered on by a listing).
pub const TENANT: &str = "tenant";
/// End of an alert dedup window (epoch ms).
pub const WINDOW_UNTIL: &str = "window_until";
/// Attribute names of the alert counters.
pub const ALERTS_SENT: &str = "sent";
pub const ALERTS_DEDUPLICATED: &str = "deduplicated";
pub const ALERTS_RETRIED: &str = "retried";
pub const ALERTS_DEAD_LETTERED: &str = "dead_lettered";

/// How long the TTL keeps an alert dedup window past its end (it no longer blocks anything
/// then; the margin only keeps DynamoDB's reaper, which runs late anyway, out of the picture).
pub const ALERT_WINDOW_TTL_MARGIN_SECS: i64 = 3600;

/// How long past its latest lease a slot table item is kept (TTL), so TTL never removes a
/// table whose holders are still counted.
pub const SLOT_TABLE_TTL_MARGIN_SECS: i64 = 86_400;

/// A primary key.
pub fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk)),
        (SK.to_owned(), AttributeValue::S(sk.into())),
    ])
}

/// `pk / sk`, for logs and corrupt-item errors.
pub fn describe(pk: &str, sk: &str) -> String {
    format!("{pk} / {sk}")
}

/// `DELIVERY#{tenant}#{source}#{delivery_id}`: a delivery id is unique per tenant and
/// source (neither a tenant nor a source holds `#`, so the key reads unambiguously). Before
/// the tenant was part of it the key was `DELIVERY#{source}#{delivery_id}`; those records are
/// no longer looked up and expire by TTL.
pub fn delivery_pk(tenant: &TenantId, source: &SourceId, delivery_id: &DeliveryId) -> String {
    format!("DELIVERY#{tenant}#{source}#{delivery_id}")
}

/// `EXEC#{execution_id}`: the execution record and its ledger events.
pub fn execution_pk(id: &ExecutionId) -> String {
    format!("EXEC#{id}")
}

/// `EVENT#{seq:020}`: zero-padded so that sort-key order is sequence order.
pub fn event_sk(seq: u64) -> String {
    format!("{EVENT_PREFIX}{seq:020}")
}

/// The sequence number of an event sort key.
pub fn event_seq(sk: &str) -> Option<u64> {
    sk.strip_prefix(EVENT_PREFIX)?.parse().ok()
}

/// The id of an execution item's partition key `EXEC#{execution_id}`.
pub fn execution_id_of(pk: &str) -> Option<ExecutionId> {
    ExecutionId::parse(pk.strip_prefix("EXEC#")?).ok()
}

/// `TENANT#{tenant}`: every execution of a tenant.
pub fn gsi1_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}")
}

/// `{created_at:013}#{id}`: creation order, then id (unique, so `<` a key is exact).
pub fn gsi1_sk(created_at: Timestamp, id: &ExecutionId) -> String {
    time_id(created_at, id)
}

/// `STATUS#{status}`, for a status that is not terminal.
pub fn gsi2_pk(status: ExecutionStatus) -> String {
    format!("STATUS#{}", status.as_str())
}

/// `{updated_at:013}#{id}`: last-write order, then id.
pub fn gsi2_sk(updated_at: Timestamp, id: &ExecutionId) -> String {
    time_id(updated_at, id)
}

/// `{at:013}`: sorts after every [`gsi2_sk`] of an earlier instant and before every one of
/// `at` or later, so `gsi2sk < time_bound(at)` means "written before `at`".
pub fn time_bound(at: Timestamp) -> String {
    format!("{:013}", at.as_millis())
}

/// The instant and id of a [`gsi1_sk`] / [`gsi2_sk`]; `None` if `sk` is not one.
pub fn parse_time_id(sk: &str) -> Option<(Timestamp, ExecutionId)> {
    let (millis, id) = sk.split_once('#')?;
    if millis.len() != 13 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        Timestamp::from_millis(millis.parse().ok()?),
        ExecutionId::parse(id).ok()?,
    ))
}

fn time_id(at: Timestamp, id: &ExecutionId) -> String {
    format!("{}#{id}", time_bound(at))
}

/// The (pk, sk) of a semaphore's slot table.
pub fn semaphore_key(key: &SemaphoreKey) -> (String, &'static str) {
    match key {
        SemaphoreKey::SourcePipelines(source) => (format!("SOURCE#{source}"), PIPELINES_SK),
    }
}

/// `CONNECTOR#{connector}`.
pub fn connector_pk(connector: &ConnectorId) -> String {
    format!("CONNECTOR#{connector}")
}

/// `RATE#{source}`.
pub fn rate_pk(source: &SourceId) -> String {
    format!("RATE#{source}")
}

/// `WINDOW#{minute}` (minutes since the epoch).
pub fn window_sk(window: i64) -> String {
    format!("WINDOW#{window}")
}

/// `ALERT#DEDUP#{hash}`: the first 32 hex digits of the SHA-256 of an alert's dedup key
/// (the key holds free text such as pipeline names; the hash is fixed-length and `#`-free).
pub fn alert_dedup_pk(dedup_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(dedup_key.as_bytes()));
    format!("ALERT#DEDUP#{}", &digest[..32])
}

/// `{at:013}#{id}`: a dead letter, in the order it was given up on.
pub fn dead_letter_sk(at: Timestamp, id: &str) -> String {
    format!("{}#{id}", time_bound(at))
}

/// `h#{holder}`.
pub fn holder_attr(holder: &HolderId) -> String {
    format!("{HOLDER_PREFIX}{holder}")
}

/// `sw#{target key}`.
pub fn switch_attr(target: &SwitchTarget) -> String {
    format!("{SWITCH_PREFIX}{}", target.key())
}

/// The switch copies that would refuse a call of `tool` for `tenant` on `connector`: the only
/// ones an admission has to check.
pub fn refusing_switch_attrs(
    connector: &ConnectorId,
    tool: &ToolName,
    tenant: &TenantId,
) -> [String; 3] {
    [
        switch_attr(&SwitchTarget::Connector {
            connector: connector.clone(),
        }),
        switch_attr(&SwitchTarget::Tool {
            connector: connector.clone(),
            tool: tool.clone(),
        }),
        switch_attr(&SwitchTarget::Tenant {
            tenant: tenant.clone(),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_seq_and_parse_back() {
        assert_eq!(event_sk(7), "EVENT#00000000000000000007");
        assert!(event_sk(9) < event_sk(10));
        assert_eq!(event_seq(&event_sk(u64::MAX)), Some(u64::MAX));
        assert_eq!(event_seq("EVENT#x"), None);
        assert_eq!(event_seq("META"), None);
    }

    #[test]
    fn gsi_sort_keys_are_zero_padded_and_parse_back() {
        let id = ExecutionId::parse("exe_1").unwrap();
        let at = Timestamp::from_millis(42);
        assert_eq!(gsi1_sk(at, &id), "0000000000042#exe_1");
        assert_eq!(gsi2_sk(at, &id), "0000000000042#exe_1");
        assert_eq!(parse_time_id(&gsi1_sk(at, &id)), Some((at, id.clone())));
        let now = Timestamp::from_millis(1_767_225_600_000);
        assert_eq!(parse_time_id(&gsi1_sk(now, &id)), Some((now, id.clone())));
        for garbage in [
            "",
            "#",
            "42#exe_1",
            "000000000004x#exe_1",
            "0000000000042#",
            "exe_1",
        ] {
            assert_eq!(parse_time_id(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn time_bound_splits_before_and_at() {
        let id = ExecutionId::parse("exe_zzz").unwrap();
        let at = Timestamp::from_millis(1_000);
        assert!(gsi2_sk(Timestamp::from_millis(999), &id) < time_bound(at));
        assert!(gsi2_sk(at, &ExecutionId::parse("exe_0").unwrap()) > time_bound(at));
    }

    #[test]
    fn alert_keys_are_fixed_length_and_ordered() {
        let pk = alert_dedup_pk("run.failed|1:p|-|2:E1");
        assert_eq!(pk.len(), "ALERT#DEDUP#".len() + 32);
        assert_eq!(pk, alert_dedup_pk("run.failed|1:p|-|2:E1"));
        assert_ne!(pk, alert_dedup_pk("run.failed|1:p|-|2:E2"));
        let early = dead_letter_sk(Timestamp::from_millis(999), "01ZZ");
        let late = dead_letter_sk(Timestamp::from_millis(1_000), "01AA");
        assert_eq!(early, "0000000000999#01ZZ");
        assert!(early < late);
    }

    #[test]
    fn execution_pk_gives_its_id_back() {
        let id = ExecutionId::parse("exe_1").unwrap();
        assert_eq!(execution_id_of(&execution_pk(&id)), Some(id));
        assert_eq!(execution_id_of("DELIVERY#x"), None);
    }
}
