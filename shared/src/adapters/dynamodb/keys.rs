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
/// The executions-by-tenant-and-status index.
pub const GSI1: &str = "gsi1";
/// Partition key of [`GSI1`].
pub const GSI1PK: &str = "gsi1pk";
/// Sort key of [`GSI1`].
pub const GSI1SK: &str = "gsi1sk";
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
/// Prefix of a kill switch's copy on a connector's state item (`sw#{target key}`).
pub const SWITCH_PREFIX: &str = "sw#";

/// Counter attribute of a rate window.
pub const COUNT: &str = "count";

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

/// `DELIVERY#{source}#{delivery_id}`.
pub fn delivery_pk(source: &SourceId, delivery_id: &DeliveryId) -> String {
    format!("DELIVERY#{source}#{delivery_id}")
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

/// `TENANT#{tenant}#STATUS#{status}`.
pub fn gsi1_pk(tenant: &TenantId, status: ExecutionStatus) -> String {
    format!("TENANT#{tenant}#STATUS#{}", status.as_str())
}

/// `{created_at:013}#{id}`.
pub fn gsi1_sk(created_at: Timestamp, id: &ExecutionId) -> String {
    format!("{:013}#{id}", created_at.as_millis())
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
    fn gsi_sort_key_is_zero_padded() {
        let id = ExecutionId::parse("exe_1").unwrap();
        assert_eq!(
            gsi1_sk(Timestamp::from_millis(42), &id),
            "0000000000042#exe_1"
        );
    }
}
