//! Delivery dedupe: the first claim of a (source, delivery id) wins; every later claim learns
//! the winner's execution id and whether its work was queued.

use serde::{Deserialize, Serialize};

use super::ids::{DeliveryId, ExecutionId, SourceId, TenantId};
use super::time::Timestamp;

/// Where an accepted delivery's work stands. The sweeper re-queues `Received` deliveries whose
/// message never reached the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Recorded; its stage message may not be on the queue yet.
    Received,
    /// Its stage message is on the queue.
    Queued,
}

/// What a caller asks to record for a new delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryClaim {
    pub source: SourceId,
    pub delivery_id: DeliveryId,
    pub tenant: TenantId,
    pub execution_id: ExecutionId,
    /// Hex SHA-256 of the raw body, to tell a true redelivery from an id collision.
    pub payload_hash: String,
}

/// The stored dedupe record of one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub source: SourceId,
    pub delivery_id: DeliveryId,
    pub tenant: TenantId,
    pub execution_id: ExecutionId,
    pub payload_hash: String,
    pub status: DeliveryStatus,
    pub received_at: Timestamp,
    /// When DynamoDB's TTL may remove the record (epoch seconds).
    pub expires_at: i64,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This caller recorded the delivery and owns its work.
    Claimed(DeliveryRecord),
    /// Someone recorded it first; here is what they recorded.
    Duplicate(DeliveryRecord),
}

impl ClaimOutcome {
    /// The execution the delivery belongs to, whoever won.
    pub fn execution_id(&self) -> &ExecutionId {
        match self {
            ClaimOutcome::Claimed(r) | ClaimOutcome::Duplicate(r) => &r.execution_id,
        }
    }
}

impl DeliveryRecord {
    /// Whether this record still blocks a new claim at `now`: until its expiry second has
    /// passed (DynamoDB's condition `expires_at < :now` lets a claim replace it after).
    pub fn blocks_claim_at(&self, now: Timestamp) -> bool {
        self.expires_at >= now.epoch_secs()
    }

    /// The record a winning claim writes at `now`, kept for `ttl_secs`.
    pub fn new(claim: DeliveryClaim, now: Timestamp, ttl_secs: i64) -> Self {
        Self {
            source: claim.source,
            delivery_id: claim.delivery_id,
            tenant: claim.tenant,
            execution_id: claim.execution_id,
            payload_hash: claim.payload_hash,
            status: DeliveryStatus::Received,
            received_at: now,
            expires_at: now.plus_secs(ttl_secs).epoch_secs(),
        }
    }
}
