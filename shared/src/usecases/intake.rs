//! Use case: intake. `POST /webhooks/{source}`: verify one webhook delivery, record it once,
//! and put the first stage of its pipeline on the stage queue.
//!
//! # Checks (no I/O: a rejected request stores and queues nothing)
//!
//! 0. The headers total at most `edge::MAX_HEADER_BYTES` (16 KiB), else 431
//!    `headers_too_large`.
//! 1. The source is declared in the manifest, else 404 `unknown_source`.
//! 2. The raw body is at most the source's `max_body_bytes`, else 413 `payload_too_large`
//!    (before the signature, so an oversize body costs no HMAC).
//! 3. The signature verifies with the source's secret (`domain::signature::verify`), else 401
//!    `missing_signature`, `malformed_signature`, `invalid_signature` or `stale_signature`.
//! 4. The content type, when given, is JSON (`application/json` or `application/*+json`), else
//!    415 `unsupported_media_type`; the body parses as JSON, else 400 `invalid_json`.
//! 5. The delivery id, tenant and every run key part resolve (`ValueSource::resolve`; the parts
//!    are joined with `:`), else 400 `missing_field` naming the field and where it was looked
//!    for; a value that is not a valid id (too long, a `#` in a tenant, ...) is 400
//!    `invalid_field`. They come from signed content only (the body, its digest, a fixed
//!    value, a header the scheme signs), unless the manifest opted a field in with
//!    `allow_unsigned_headers` (see `manifest::validate` and docs/architecture.md,
//!    "Identity"). The execution id hashes (tenant, source, run key); the dedupe record is keyed
//!    by (tenant, source, delivery id).
//! 6. The RECEIVED ledger event fits the ledger (see *Payload size*), else 413
//!    `payload_too_large`.
//!
//! # Writes: the fast path
//!
//! A new delivery within the rate costs 2 requests: `intake().accept` writes, in one DynamoDB
//! `TransactWriteItems`, the claim (QUEUED), the RECEIVED event (seq 1), the execution (QUEUED)
//! and its count in the source's current rate window, all or nothing; then `queue().send` sends
//! the stage 0 message (SQS SendMessage). Nothing is written after the send. If intake dies
//! before the send (or the send fails: 503, and the sender's retry is a duplicate), the run is
//! not lost: the sweeper re-sends the message of a QUEUED execution idle for
//! `sweep::QUEUED_GRACE_SECS` (see `usecases::sweep`).
//!
//! A refused transaction wrote nothing and says why: the delivery id is claimed (a duplicate,
//! 1 request; the resume rule below applies to a claim a step-by-step attempt left RECEIVED),
//! the run key's execution exists (joined: intake then writes the claim alone, 2 requests; a
//! joined delivery is not counted in the rate window), or the window is full, seq 1 is taken
//! without an execution, or concurrent transactions kept conflicting: then intake goes step
//! by step, from the claim on.
//!
//! # Writes: step by step (over the rate, or unsettled)
//!
//! | step | port call | AWS request |
//! |---|---|---|
//! | claim the delivery id (TTL `DELIVERY_DEDUPE_TTL_SECONDS`) | `deliveries().claim` | DynamoDB PutItem |
//! | count it in the source's rate window | `rate().register` | DynamoDB UpdateItem; over the rate 3 (the full window, the backlog's next position, its window's count; 4 when the backlog starts again), whatever the backlog's length |
//! | RECEIVED, seq 1, `{"payload", "delivery_id", "source"}` | `ledger().append` | DynamoDB PutItem |
//! | the execution, id from (tenant, source, run key), `not_before` = now + delay | `executions().create` | DynamoDB PutItem |
//! | DELAYED, seq 2 (only when over the rate) | `ledger().append` | DynamoDB PutItem |
//! | stage 0 message, delayed to `not_before` | `queue().send` | SQS SendMessage |
//! | execution RECEIVED -> QUEUED | `executions().update` | DynamoDB UpdateItem |
//! | delivery RECEIVED -> QUEUED | `deliveries().mark_queued` | DynamoDB UpdateItem |
//!
//! A delayed delivery costs the refused transaction and then 9 DynamoDB requests (10 when the
//! source's backlog starts again) and the SQS send, however many deliveries wait; a duplicate
//! of a step-by-step claim still RECEIVED costs 2 (transaction + execution read, see below).
//!
//! The RECEIVED event is written *before* the execution record, so an execution never exists
//! without its payload: if intake dies between the two, what is left is an event no execution
//! points to (harmless), never a run the executor cannot render. A delivery that joins an
//! existing run (same run key) finds seq 1 taken, writes nothing there, and finds the
//! execution existing: it answers 202 `joined` with that execution's id and queues no message. An execution's
//! payload is thus the first payload recorded for its run key.
//!
//! # Payload size
//!
//! The executor renders tool requests from the payload stored in the RECEIVED event, and a
//! ledger event's `detail` is capped at [`MAX_DETAIL_BYTES`] (64 KiB of serialized JSON). A
//! body passes two limits: the source's `max_body_bytes` on the raw bytes (at most 256 KiB by
//! default), and the ledger cap on the compact re-serialization of the whole detail
//! (`{"payload", "delivery_id", "source"}`), computed exactly as the ledger adapters measure it
//! and checked before any write. Over either: 413 `payload_too_large`, and the sender learns at
//! once that the delivery was not taken. So the effective limit is the smaller of the two:
//! pretty-printed bodies shrink when re-serialized, but compact payloads over about 64 KiB are
//! refused whatever `max_body_bytes` says. Truncating (`{"payload_truncated": true}`) would
//! accept work whose templates then fail or render wrong at run time; splitting the payload
//! over several events would make every reader reassemble it. Taking larger payloads needs
//! storage beside the ledger (S3 or chunked items), a change of the ledger port.
//!
//! # Failures and retries (idempotence)
//!
//! A store error answers 503 `unavailable` (retryable): every step is a conditional or
//! idempotent write, so the sender's retry is always safe.
//! - Claim written, a later step failed before the message was sent: the delivery record
//!   stays RECEIVED (never QUEUED), so the retry finds a duplicate that is not done. If the
//!   execution does not exist yet and the claim is at least [`RESUME_AFTER_SECS`] old, the
//!   retry resumes the flow (rate, RECEIVED, create, send) and answers 202 (a younger claim is
//!   most likely still being worked on by the request that made it: the duplicate answers 200
//!   `duplicate` with its execution id, as every duplicate of an in-flight delivery does); if it exists (created, message not sent), the retry answers 200
//!   `duplicate` and the sweeper re-queues the RECEIVED execution after its grace period.
//!   Either way nothing is stranded. (A resumed delivery may count twice in the rate window.)
//! - Once the message is on the queue the request has succeeded: a failure to mark the
//!   execution or the delivery QUEUED is logged, not answered. The sweeper may then re-queue
//!   the execution; the executor drops the extra message (stage check, lease).
//! - A duplicate whose record is QUEUED, or whose body hash or execution differ (a sender
//!   reusing a delivery id), answers 200 `duplicate` with the recorded execution id.
//!
//! # Logging
//!
//! One structured line per request: `source`, `delivery_id`, `execution_id`, `outcome`
//! (`accepted`, `delayed`, `duplicate`, `joined`, or the error code) and `status`. Never the
//! secret, the signature or the payload.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::adapters::dynamodb::MAX_DETAIL_BYTES;
use crate::app::App;
use crate::domain::delivery::{ClaimOutcome, DeliveryClaim, DeliveryRecord, DeliveryStatus};
use crate::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionStatus, NewExecution, UpdateOutcome,
};
use crate::domain::ids::{DeliveryId, ExecutionId, PipelineName, RunKey, SourceId, TenantId};
use crate::domain::intake::{AcceptOutcome, IntakeWrite};
use crate::domain::ledger::{EventKind, LedgerEvent};
use crate::domain::rate::RateDecision;
use crate::domain::signature::{self, SignatureError};
use crate::domain::time::Timestamp;
use crate::edge::{EdgeRequest, EdgeResponse};
use crate::error::StoreError;
use crate::manifest::ValueSource;
use crate::ports::{
    Backend, DeliveryStore, ExecutionStore, IntakeStore, Ledger, RateLimiter, StageMessage,
    StageQueue, ToolClient,
};
use crate::telemetry;

/// The route prefix: `POST /webhooks/{source}`.
pub const WEBHOOK_PATH_PREFIX: &str = "/webhooks/";

/// Sequence number of the RECEIVED event.
pub const RECEIVED_SEQ: u64 = 1;
/// Sequence number of the DELAYED event, when there is one.
pub const DELAYED_SEQ: u64 = 2;

/// The longest content type quoted back in an error message.
const MAX_QUOTED_CONTENT_TYPE: usize = 100;

/// A delivery intake took (or had already taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new execution, queued to run now: 202 `accepted`.
    Queued { execution_id: ExecutionId },
    /// A new execution, queued to run after the rate delay: 202 `delayed`.
    Delayed {
        execution_id: ExecutionId,
        delay_seconds: u64,
    },
    /// This delivery id was taken before: 200 `duplicate`.
    Duplicate { execution_id: ExecutionId },
    /// A new delivery for a run key that already has an execution: 202 `joined` (the existing
    /// execution id), no new message.
    Joined { execution_id: ExecutionId },
}

impl Accepted {
    /// The execution the delivery belongs to.
    pub fn execution_id(&self) -> &ExecutionId {
        match self {
            Accepted::Queued { execution_id }
            | Accepted::Delayed { execution_id, .. }
            | Accepted::Duplicate { execution_id }
            | Accepted::Joined { execution_id } => execution_id,
        }
    }

    /// The outcome as logged: `accepted`, `delayed`, `duplicate` or `joined`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Accepted::Queued { .. } => "accepted",
            Accepted::Delayed { .. } => "delayed",
            Accepted::Duplicate { .. } => "duplicate",
            Accepted::Joined { .. } => "joined",
        }
    }

    /// 200 for a duplicate, else 202.
    pub fn status(&self) -> u16 {
        match self {
            Accepted::Duplicate { .. } => 200,
            _ => 202,
        }
    }

    /// The answer: `{"execution_id", "status", "delay_seconds"?}`.
    pub fn into_response(self) -> EdgeResponse {
        let status = self.status();
        let body = match self {
            Accepted::Queued { execution_id } => {
                json!({ "execution_id": execution_id, "status": "accepted" })
            }
            Accepted::Joined { execution_id } => {
                json!({ "execution_id": execution_id, "status": "joined" })
            }
            Accepted::Delayed {
                execution_id,
                delay_seconds,
            } => json!({
                "execution_id": execution_id,
                "status": "delayed",
                "delay_seconds": delay_seconds,
            }),
            Accepted::Duplicate { execution_id } => {
                json!({ "execution_id": execution_id, "status": "duplicate" })
            }
        };
        EdgeResponse::json(status, body)
    }
}

/// Why a delivery was not taken. Messages never hold secrets, signatures or payloads.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// No source of that name in the manifest.
    #[error("no source named `{0}`")]
    UnknownSource(String),
    /// The raw body is over the source's `max_body_bytes`.
    #[error("body is {size} bytes, over this source's {limit}-byte limit")]
    PayloadTooLarge { size: usize, limit: usize },
    /// The payload, as stored in the ledger, is over the ledger's cap.
    #[error("payload is {size} bytes as stored, over the {limit}-byte limit of the ledger")]
    PayloadTooLargeToStore { size: usize, limit: usize },
    /// The signature is missing, malformed, wrong or stale.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The source has no signing secret loaded (a deployment fault).
    #[error("source `{0}` has no signing secret configured")]
    MissingSecret(SourceId),
    /// A content type other than JSON.
    #[error("content type `{0}` is not supported; send application/json")]
    UnsupportedMediaType(String),
    /// The body is not JSON.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// A value the source's configuration needs is absent (or empty).
    #[error("missing field `{field}` (looked for: {location})")]
    MissingField { field: String, location: String },
    /// A value is present but not usable as an id.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    /// The backend failed; the sender should retry.
    #[error("temporarily unavailable, retry later")]
    Unavailable(#[from] StoreError),
}

impl IntakeError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            IntakeError::UnknownSource(_) => 404,
            IntakeError::PayloadTooLarge { .. } | IntakeError::PayloadTooLargeToStore { .. } => 413,
            IntakeError::Signature(_) => 401,
            IntakeError::MissingSecret(_) => 500,
            IntakeError::UnsupportedMediaType(_) => 415,
            IntakeError::InvalidJson(_)
            | IntakeError::MissingField { .. }
            | IntakeError::InvalidField { .. } => 400,
            IntakeError::Unavailable(_) => 503,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IntakeError::UnknownSource(_) => "unknown_source",
            IntakeError::PayloadTooLarge { .. } | IntakeError::PayloadTooLargeToStore { .. } => {
                "payload_too_large"
            }
            IntakeError::Signature(e) => e.code(),
            IntakeError::MissingSecret(_) => "internal_error",
            IntakeError::UnsupportedMediaType(_) => "unsupported_media_type",
            IntakeError::InvalidJson(_) => "invalid_json",
            IntakeError::MissingField { .. } => "missing_field",
            IntakeError::InvalidField { .. } => "invalid_field",
            IntakeError::Unavailable(_) => "unavailable",
        }
    }

    /// Whether the sender should send the same request again later. Only backend failures:
    /// every write is idempotent, so a retry is always safe.
    pub fn is_retryable(&self) -> bool {
        matches!(self, IntakeError::Unavailable(_))
    }

    /// The error answer, `{"error": {"code", "message"}}`.
    pub fn into_response(self) -> EdgeResponse {
        EdgeResponse::error(self.status(), self.code(), self.to_string())
    }
}

/// Routes `POST /webhooks/{source}`; any other path is 404 `not_found`, another method on the
/// webhook path 405 `method_not_allowed`.
#[tracing::instrument(skip_all, fields(method = %req.method))]
pub async fn handle<B: Backend, T: ToolClient>(app: &App<B, T>, req: EdgeRequest) -> EdgeResponse {
    let header_bytes =
        crate::edge::header_bytes(req.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    if let Some(refused) = crate::edge::refuse_large_headers(header_bytes) {
        tracing::info!(path = %req.path, outcome = "headers_too_large", header_bytes, "webhook refused");
        return refused;
    }
    let source = match route(&req.method, &req.path) {
        Ok(source) => source,
        Err(refused) => {
            let outcome = refused.body["error"]["code"].as_str().unwrap_or("refused");
            tracing::info!(
                path = %req.path,
                outcome,
                status = refused.status,
                "webhook route refused"
            );
            return refused;
        }
    };
    match accept_webhook(app, source, &req.headers, &req.body).await {
        Ok(accepted) => accepted.into_response(),
        Err(error) => error.into_response(),
    }
}

/// The source named by a webhook path, or the routing answer.
fn route<'p>(method: &str, path: &'p str) -> Result<&'p str, EdgeResponse> {
    let source = path
        .strip_prefix(WEBHOOK_PATH_PREFIX)
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .ok_or_else(|| EdgeResponse::error(404, "not_found", "no such route"))?;
    if !method.eq_ignore_ascii_case("POST") {
        return Err(EdgeResponse::error(
            405,
            "method_not_allowed",
            "webhooks are delivered with POST",
        ));
    }
    Ok(source)
}

/// Takes one delivery of `source`: the checks, then the writes (see the module docs). Logs one
/// line with the outcome.
#[tracing::instrument(skip_all, fields(source = %source))]
pub async fn accept_webhook<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    source: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Accepted, IntakeError> {
    let now = app.clock.now();
    let mut known: Option<(DeliveryId, ExecutionId)> = None;
    let result = match inspect(app, source, headers, body, now) {
        Ok(delivery) => {
            known = Some((delivery.delivery_id.clone(), delivery.execution_id.clone()));
            record(app, delivery, now).await
        }
        Err(error) => Err(error),
    };
    log_outcome(source, known.as_ref(), &result);
    if let Ok(accepted) = &result {
        count_outcome(app, source, accepted);
    }
    result
}

/// The metrics of an accepted delivery (docs/architecture.md, "Observability").
fn count_outcome<B: Backend, T: ToolClient>(app: &App<B, T>, source: &str, accepted: &Accepted) {
    let metrics = &app.metrics;
    let pipeline = || {
        SourceId::parse(source)
            .ok()
            .and_then(|id| app.manifest.sources.get(&id))
            .map_or_else(String::new, |spec| spec.pipeline.to_string())
    };
    match accepted {
        Accepted::Queued { .. } => {
            metrics.count(telemetry::PIPELINE_RUNS, &[("Pipeline", &pipeline())]);
        }
        Accepted::Delayed { .. } => {
            metrics.count(telemetry::PIPELINE_RUNS, &[("Pipeline", &pipeline())]);
            metrics.count(telemetry::THROTTLED, &[("Cause", "rate_limit")]);
        }
        Accepted::Duplicate { .. } => {
            metrics.count(telemetry::WEBHOOK_DEDUPED, &[("Source", source)])
        }
        Accepted::Joined { .. } => metrics.count(telemetry::RUNS_SKIPPED, &[("Reason", "joined")]),
    }
}

/// A delivery that passed every check, ready to record.
#[derive(Debug)]
struct Delivery {
    source: SourceId,
    delivery_id: DeliveryId,
    tenant: TenantId,
    run_key: RunKey,
    execution_id: ExecutionId,
    pipeline: PipelineName,
    payload_hash: String,
    rate_limit: u32,
    /// The RECEIVED event's detail, already checked against the ledger cap.
    received_detail: Value,
}

/// Checks 1-6. Reads the manifest and the secrets; calls no port.
fn inspect<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    source: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    now: Timestamp,
) -> Result<Delivery, IntakeError> {
    // 1. A name that is not a valid source id cannot be declared either.
    let (source_id, spec) = SourceId::parse(source)
        .ok()
        .and_then(|id| app.manifest.sources.get_key_value(&id))
        .ok_or_else(|| IntakeError::UnknownSource(source.to_owned()))?;

    // 2.
    if body.len() > spec.max_body_bytes {
        return Err(IntakeError::PayloadTooLarge {
            size: body.len(),
            limit: spec.max_body_bytes,
        });
    }

    // 3.
    let secret = app
        .secrets
        .source_secret(source_id)
        .ok_or_else(|| IntakeError::MissingSecret(source_id.clone()))?;
    signature::verify(&spec.scheme, secret, headers, body, now)?;

    // 4.
    if let Some(content_type) = signature::Headers::header(headers, "content-type") {
        if !is_json_media_type(content_type) {
            let quoted: String = content_type.chars().take(MAX_QUOTED_CONTENT_TYPE).collect();
            return Err(IntakeError::UnsupportedMediaType(quoted));
        }
    }
    let payload: Value =
        serde_json::from_slice(body).map_err(|e| IntakeError::InvalidJson(e.to_string()))?;

    // 5. From signed content only, unless the manifest allowed an unsigned header (warned at
    // load): see manifest::validate, "Identity from signed content".
    let payload_hash = hex::encode(Sha256::digest(body));
    let signed = Signed {
        payload: &payload,
        headers,
        body_sha256: &payload_hash,
    };
    let delivery_id = signed.resolve(&spec.delivery_id, "delivery_id")?;
    let delivery_id = DeliveryId::parse(delivery_id).map_err(|e| invalid("delivery_id", e))?;
    let tenant = signed.resolve(&spec.tenant, "tenant")?;
    let tenant = TenantId::parse(tenant).map_err(|e| invalid("tenant", e))?;
    let parts = spec
        .run_key
        .iter()
        .enumerate()
        .map(|(i, part)| signed.resolve(part, &format!("run_key[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let run_key = RunKey::parse(parts.join(":")).map_err(|e| invalid("run_key", e))?;

    // 6. Measured as the ledger adapters measure it.
    let received_detail = json!({
        "payload": payload,
        "delivery_id": delivery_id,
        "source": source_id,
    });
    let stored = serde_json::to_string(&received_detail).map_or(usize::MAX, |s| s.len());
    if stored > MAX_DETAIL_BYTES {
        return Err(IntakeError::PayloadTooLargeToStore {
            size: stored,
            limit: MAX_DETAIL_BYTES,
        });
    }

    Ok(Delivery {
        execution_id: ExecutionId::for_run_key(&tenant, source_id, &run_key),
        source: source_id.clone(),
        delivery_id,
        tenant,
        run_key,
        pipeline: spec.pipeline.clone(),
        payload_hash,
        rate_limit: spec
            .rate_limit_per_minute
            .unwrap_or(app.config.webhook_rate_limit_per_minute),
        received_detail,
    })
}

/// The writes: the fast path (one composite write, one message), else step by step (see the
/// module docs).
async fn record<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    delivery: Delivery,
    now: Timestamp,
) -> Result<Accepted, IntakeError> {
    let backend = &app.backend;
    let claim = DeliveryClaim {
        source: delivery.source.clone(),
        delivery_id: delivery.delivery_id.clone(),
        tenant: delivery.tenant.clone(),
        execution_id: delivery.execution_id.clone(),
        payload_hash: delivery.payload_hash.clone(),
    };
    let ttl = app.config.delivery_dedupe_ttl_secs;
    let write = IntakeWrite {
        claim: claim.clone(),
        ttl_secs: ttl,
        received: received_event(&delivery, now),
        execution: new_execution(&delivery, None),
        rate_limit_per_minute: delivery.rate_limit,
        now,
    };
    let joined = match backend.intake().accept(write).await? {
        AcceptOutcome::Accepted(execution) => {
            // Recorded QUEUED; a crash before the send is recovered by the sweeper (QUEUED
            // past its grace period).
            let message = StageMessage {
                execution_id: execution.id.clone(),
                stage: 0,
                not_before: None,
                wait: 0,
            };
            backend.queue().send(&message, now).await?;
            return Ok(Accepted::Queued {
                execution_id: execution.id,
            });
        }
        AcceptOutcome::Duplicate(earlier) => {
            return match duplicate_or_resume(app, earlier, &delivery, now).await? {
                Ok(duplicate) => Ok(duplicate),
                Err(()) => step_by_step(app, delivery, now, true).await,
            };
        }
        AcceptOutcome::Joined(existing) => Some(existing.id),
        // The window is full (the rate limiter finds the delay), or an earlier attempt left
        // seq 1 without an execution, or the transaction kept conflicting.
        AcceptOutcome::OverRate | AcceptOutcome::Unsettled => None,
    };

    let resumed = match backend.deliveries().claim(claim, now, ttl).await? {
        ClaimOutcome::Claimed(_) => false,
        ClaimOutcome::Duplicate(earlier) => {
            match duplicate_or_resume(app, earlier, &delivery, now).await? {
                Ok(duplicate) => return Ok(duplicate),
                Err(()) => true,
            }
        }
    };
    // A delivery of a run key whose execution exists records its claim (pointing at that run)
    // and nothing else.
    if let Some(execution_id) = joined {
        return Ok(Accepted::Joined { execution_id });
    }
    step_by_step(app, delivery, now, resumed).await
}

/// A duplicate claim: `Ok` with the answer, or `Err(())` when the delivery's earlier attempt
/// stopped before its execution existed and this one should resume the flow.
async fn duplicate_or_resume<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    earlier: DeliveryRecord,
    delivery: &Delivery,
    now: Timestamp,
) -> Result<Result<Accepted, ()>, IntakeError> {
    if !resumable(&earlier, delivery, now)
        || app
            .backend
            .executions()
            .get(&earlier.execution_id)
            .await?
            .is_some()
    {
        return Ok(Ok(Accepted::Duplicate {
            execution_id: earlier.execution_id,
        }));
    }
    // Claimed before, but the attempt that claimed it stopped before the execution existed
    // (or is still running: the conditional writes of the flow settle the race).
    Ok(Err(()))
}

/// The RECEIVED event of `delivery`.
fn received_event(delivery: &Delivery, now: Timestamp) -> LedgerEvent {
    LedgerEvent {
        execution_id: delivery.execution_id.clone(),
        seq: RECEIVED_SEQ,
        at: now,
        kind: EventKind::Received,
        stage: None,
        detail: delivery.received_detail.clone(),
    }
}

/// The execution of `delivery`.
fn new_execution(delivery: &Delivery, not_before: Option<Timestamp>) -> NewExecution {
    NewExecution {
        id: delivery.execution_id.clone(),
        tenant: delivery.tenant.clone(),
        source: delivery.source.clone(),
        pipeline: delivery.pipeline.clone(),
        run_key: delivery.run_key.clone(),
        replay_of: None,
        not_before,
    }
}

/// The slow path, after the claim: one write per step (rate, RECEIVED, execution, DELAYED),
/// the message, then the QUEUED marks.
async fn step_by_step<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    delivery: Delivery,
    now: Timestamp,
    resumed: bool,
) -> Result<Accepted, IntakeError> {
    let backend = &app.backend;
    let delay_secs = match backend
        .rate()
        .register(&delivery.source, delivery.rate_limit, now)
        .await?
    {
        RateDecision::Within => 0,
        RateDecision::Over { delay_secs } => delay_secs,
    };
    // A delay is as long as the source's backlog (no horizon: each delayed delivery has its own
    // slot); the cap only guards the arithmetic.
    const MAX_DELAY_SECS: u64 = 10 * 365 * 86_400;
    let not_before = (delay_secs > 0).then(|| now.plus_secs(delay_secs.min(MAX_DELAY_SECS) as i64));

    // Seq 1 taken means another delivery of this run key (or an earlier attempt of this one)
    // recorded its payload first; that one stays.
    backend
        .ledger()
        .append(received_event(&delivery, now))
        .await?;

    let created = backend
        .executions()
        .create(new_execution(&delivery, not_before), now)
        .await?;
    let execution = match created {
        CreateOutcome::Created(execution) => execution,
        CreateOutcome::Existing(existing) if resumed => {
            return Ok(Accepted::Duplicate {
                execution_id: existing.id,
            })
        }
        CreateOutcome::Existing(existing) => {
            return Ok(Accepted::Joined {
                execution_id: existing.id,
            })
        }
    };

    if let Some(not_before) = not_before {
        backend
            .ledger()
            .append(LedgerEvent {
                execution_id: execution.id.clone(),
                seq: DELAYED_SEQ,
                at: now,
                kind: EventKind::Delayed,
                stage: Some(0),
                detail: json!({ "delay_seconds": delay_secs, "not_before": not_before }),
            })
            .await?;
    }

    let message = StageMessage {
        execution_id: execution.id.clone(),
        stage: 0,
        not_before,
        wait: 0,
    };
    backend.queue().send(&message, now).await?;

    // The work is on the queue: from here on, failures are logged, not answered.
    let queued = ExecutionChange {
        status: Some(ExecutionStatus::Queued),
        // Restated so the sweeper's index places the run after its delay.
        not_before: not_before.map(Some),
        ..ExecutionChange::default()
    };
    match backend
        .executions()
        .update(&execution.id, execution.version, queued, now)
        .await
    {
        // A conflict means a worker already took the execution: it is past QUEUED.
        Ok(UpdateOutcome::Updated(_) | UpdateOutcome::VersionConflict(_)) => {}
        Ok(other) => tracing::warn!(
            execution_id = %execution.id,
            answer = ?other,
            "execution not marked QUEUED"
        ),
        Err(error) => tracing::warn!(
            execution_id = %execution.id,
            error = %error,
            "execution not marked QUEUED; the sweeper re-queues it"
        ),
    }
    if let Err(error) = backend
        .deliveries()
        .mark_queued(&delivery.tenant, &delivery.source, &delivery.delivery_id)
        .await
    {
        tracing::warn!(
            delivery_id = %delivery.delivery_id,
            error = %error,
            "delivery not marked QUEUED"
        );
    }

    Ok(match not_before {
        Some(_) => Accepted::Delayed {
            execution_id: execution.id,
            delay_seconds: delay_secs,
        },
        None => Accepted::Queued {
            execution_id: execution.id,
        },
    })
}

/// Whether a duplicate claim should pick up where the first attempt stopped: its work was
/// never queued, and it is the same delivery (same body, same execution).
/// How old an unfinished claim must be before a redelivery takes its work over.
pub const RESUME_AFTER_SECS: i64 = 30;

fn resumable(earlier: &DeliveryRecord, delivery: &Delivery, now: Timestamp) -> bool {
    if earlier.payload_hash != delivery.payload_hash {
        tracing::warn!(
            delivery_id = %delivery.delivery_id,
            "delivery id seen before with a different body; answered as a duplicate"
        );
        return false;
    }
    earlier.status == DeliveryStatus::Received
        && earlier.execution_id == delivery.execution_id
        && now >= earlier.received_at.plus_secs(RESUME_AFTER_SECS)
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

/// What a verified delivery's identity fields are read from.
struct Signed<'a> {
    payload: &'a Value,
    headers: &'a BTreeMap<String, String>,
    /// Hex SHA-256 of the raw body.
    body_sha256: &'a str,
}

impl Signed<'_> {
    /// A configured value for one delivery; absent and empty are both missing.
    fn resolve(&self, source: &ValueSource, field: &str) -> Result<String, IntakeError> {
        match source.resolve(self.payload, self.headers, self.body_sha256) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(IntakeError::MissingField {
                field: field.to_owned(),
                location: match source {
                    ValueSource::Value(_) => "a fixed value".to_owned(),
                    ValueSource::Pointer(pointer) => format!("JSON pointer {pointer}"),
                    ValueSource::Header(header) => format!("header {header}"),
                    ValueSource::BodySha256 => "the body's SHA-256".to_owned(),
                },
            }),
        }
    }
}

fn invalid(field: &str, error: crate::domain::ids::InvalidId) -> IntakeError {
    IntakeError::InvalidField {
        field: field.to_owned(),
        reason: error.reason.to_owned(),
    }
}

/// The one line per request.
fn log_outcome(
    source: &str,
    known: Option<&(DeliveryId, ExecutionId)>,
    result: &Result<Accepted, IntakeError>,
) {
    let delivery_id = known.map_or("", |(d, _)| d.as_str());
    let execution_id = match result {
        Ok(accepted) => accepted.execution_id().as_str(),
        Err(_) => known.map_or("", |(_, e)| e.as_str()),
    };
    match result {
        Ok(accepted) => tracing::info!(
            source,
            delivery_id,
            execution_id,
            outcome = accepted.outcome(),
            status = accepted.status(),
            "webhook taken"
        ),
        Err(IntakeError::Unavailable(cause)) => tracing::error!(
            source,
            delivery_id,
            execution_id,
            outcome = "unavailable",
            status = 503,
            error = %cause,
            retryable = cause.is_retryable(),
            "webhook not taken: backend failure"
        ),
        Err(error) if error.status() >= 500 => tracing::error!(
            source,
            delivery_id,
            execution_id,
            outcome = error.code(),
            status = error.status(),
            error = %error,
            "webhook not taken"
        ),
        Err(error) => tracing::warn!(
            source,
            delivery_id,
            execution_id,
            outcome = error.code(),
            status = error.status(),
            error = %error,
            "webhook refused"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::adapters::backend::MemoryBackend;
    use crate::adapters::memory::{
        MemoryConnectorStore, MemoryDeliveryStore, MemoryExecutionStore, MemoryIntakeStore,
        MemoryLedger, MemoryRateLimiter, MemorySemaphoreStore, MemoryStageQueue,
    };
    use crate::clock::{Clock, FakeClock};
    use crate::config::ReliabilityConfig;
    use crate::domain::signature::{sign_github, sign_hmac, sign_stripe};
    use crate::domain::tool::{ToolFailure, ToolOutcome, ToolRequest};
    use crate::manifest::{Manifest, Secrets};
    use crate::ports::ReceivedMessage;
    use crate::telemetry::EmfSink;

    /// The signing secrets of the test sources.
    const GH_SECRET: &[u8] = b"gh-test-secret";
    const STRIPE_SECRET: &[u8] = b"whsec_test";
    const HMAC_SECRET: &[u8] = b"hmac-test-secret";

    /// 20 s into a minute window.
    const START: i64 = 1_700_000_000;

    const MANIFEST: &str = "\
sources:
  gh:
    scheme: github
    secret_env: GH_SECRET
    tenant: acme
    delivery_id: { header: X-GitHub-Delivery }
    allow_unsigned_headers: [delivery_id]
    run_key:
      - pointer: /repository/full_name
      - pointer: /after
    pipeline: p
    rate_limit_per_minute: 2
  small:
    scheme: github
    secret_env: GH_SECRET
    tenant: { pointer: /org }
    pipeline: p
    max_body_bytes: 1024
  big:
    scheme: github
    secret_env: GH_SECRET
    tenant: acme
    pipeline: p
    max_body_bytes: 1000000
  stripe:
    scheme: stripe
    secret_env: STRIPE_SECRET
    tenant: { pointer: /account }
    pipeline: p
  generic:
    scheme: hmac
    secret_env: HMAC_SECRET
    tenant: { pointer: /team }
    pipeline: p
  gh-default:
    scheme: github
    secret_env: GH_SECRET
    tenant: acme
    pipeline: p
  multi:
    scheme: github
    secret_env: GH_SECRET
    tenant: { pointer: /org }
    delivery_id: { pointer: /event_id }
    run_key:
      - pointer: /repository/full_name
    pipeline: p
connectors:
  c:
    base_url: http://127.0.0.1:9
    tools:
      t:
        method: POST
        path: /t
pipelines:
  p:
    stages:
      - connector: c
        tool: t
";

    /// Tools are never called at intake.
    #[derive(Debug, Clone)]
    struct NoTools;

    impl ToolClient for NoTools {
        async fn call(&self, _request: &ToolRequest) -> ToolOutcome {
            ToolOutcome::Failed {
                status: None,
                failure: ToolFailure::Connection,
                retry_after_secs: None,
                latency_ms: 0,
                excerpt: String::new(),
            }
        }
    }

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().expect("valid id")
    }

    fn app_on<B: Backend>(backend: B, clock: &FakeClock) -> App<B, NoTools> {
        let manifest = Manifest::parse(MANIFEST, "test.yaml").expect("manifest");
        let mut secrets = Secrets::default();
        for source in ["gh", "small", "big", "gh-default", "multi"] {
            secrets.insert_source_secret(id(source), GH_SECRET);
        }
        secrets.insert_source_secret(id("stripe"), STRIPE_SECRET);
        secrets.insert_source_secret(id("generic"), HMAC_SECRET);
        App::new(
            backend,
            NoTools,
            Arc::new(clock.clone()),
            manifest,
            secrets,
            ReliabilityConfig::from_lookup(|_| None).expect("defaults"),
        )
        .with_emf(EmfSink::Memory(Default::default()))
    }

    fn setup() -> (App<MemoryBackend, NoTools>, FakeClock) {
        let clock = FakeClock::at(Timestamp::from_secs(START));
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        (app_on(MemoryBackend::new(shared), &clock), clock)
    }

    fn push(repo: &str, sha: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "ref": "refs/heads/main",
            "after": sha,
            "repository": {"full_name": repo},
        }))
        .expect("json")
    }

    fn github(source: &str, delivery: &str, body: Vec<u8>) -> EdgeRequest {
        let signature = sign_github(GH_SECRET, &body);
        EdgeRequest {
            method: "POST".into(),
            path: format!("/webhooks/{source}"),
            headers: BTreeMap::from([
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-github-delivery".to_owned(), delivery.to_owned()),
                ("x-github-event".to_owned(), "push".to_owned()),
                ("x-hub-signature-256".to_owned(), signature),
            ]),
            body,
            ..EdgeRequest::default()
        }
    }

    /// The default GitHub delivery id (and run key) of `body`: `sha256:<hex>`.
    fn body_digest(body: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(body)))
    }

    fn with_header(mut req: EdgeRequest, name: &str, value: Option<&str>) -> EdgeRequest {
        match value {
            Some(value) => req.headers.insert(name.to_owned(), value.to_owned()),
            None => req.headers.remove(name),
        };
        req
    }

    fn exec_id(response: &EdgeResponse) -> ExecutionId {
        id(response.body["execution_id"]
            .as_str()
            .expect("an execution id"))
    }

    fn assert_error(response: &EdgeResponse, status: u16, code: &str) {
        assert_eq!(response.status, status, "{response:?}");
        assert_eq!(response.body["error"]["code"], json!(code), "{response:?}");
        assert!(
            response.body["error"]["message"].is_string(),
            "{response:?}"
        );
    }

    async fn visible(backend: &MemoryBackend) -> Vec<ReceivedMessage> {
        let got = backend.queue.receive(10, 30, 0).await.expect("receive");
        for message in &got {
            backend
                .queue
                .retry_later(&message.receipt, 0)
                .await
                .expect("release");
        }
        got
    }

    /// Nothing at all was written for `delivery` of `source`.
    async fn assert_nothing_stored(
        app: &App<MemoryBackend, NoTools>,
        tenant: &str,
        source: &str,
        delivery: &str,
    ) {
        let backend = &app.backend;
        assert!(backend.queue.is_empty(), "a message was queued");
        let record = backend
            .deliveries
            .get(&id(tenant), &id(source), &id(delivery))
            .await
            .expect("get");
        assert_eq!(record, None, "a delivery was recorded");
        let stale = backend
            .executions
            .stale(
                ExecutionStatus::Received,
                Timestamp::from_secs(START + 86_400),
                10,
            )
            .await
            .expect("stale");
        assert!(stale.is_empty(), "an execution was created: {stale:?}");
    }

    #[tokio::test]
    async fn a_signed_delivery_is_recorded_once_and_queued() {
        let (app, _) = setup();
        let body = push("acme/app", "abc123");
        let response = handle(&app, github("gh", "d-1", body.clone())).await;
        assert_eq!(response.status, 202, "{response:?}");
        assert_eq!(response.body["status"], json!("accepted"));
        assert_eq!(response.body.get("delay_seconds"), None);
        let execution_id = exec_id(&response);
        assert_eq!(
            execution_id,
            ExecutionId::for_run_key(&id("acme"), &id("gh"), &id("acme/app:abc123"))
        );

        let execution = app
            .backend
            .executions
            .get(&execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(execution.status, ExecutionStatus::Queued);
        assert_eq!(execution.tenant, id("acme"));
        assert_eq!(execution.pipeline, id("p"));
        assert_eq!(execution.run_key, id("acme/app:abc123"));
        assert_eq!(execution.stage, 0);
        assert_eq!(execution.not_before, None);

        let messages = visible(&app.backend).await;
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].message,
            StageMessage {
                execution_id: execution_id.clone(),
                stage: 0,
                not_before: None,
                wait: 0
            }
        );

        let events = app.backend.ledger.events(&execution_id).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].seq, RECEIVED_SEQ);
        assert_eq!(events[0].kind, EventKind::Received);
        assert_eq!(events[0].at, Timestamp::from_secs(START));
        let payload: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            events[0].detail,
            json!({"payload": payload, "delivery_id": "d-1", "source": "gh"})
        );

        let delivery = app
            .backend
            .deliveries
            .get(&id("acme"), &id("gh"), &id("d-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Queued);
        assert_eq!(delivery.execution_id, execution_id);
        assert_eq!(delivery.payload_hash, hex::encode(Sha256::digest(&body)));
    }

    #[tokio::test]
    async fn a_redelivery_is_a_duplicate_and_queues_nothing_more() {
        let (app, clock) = setup();
        let first = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        assert_eq!(first.status, 202);
        clock.advance_secs(5);
        let again = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(
            again.body,
            json!({"execution_id": exec_id(&first), "status": "duplicate"})
        );
        assert_eq!(app.backend.queue.len(), 1);
        assert_eq!(
            app.backend
                .ledger
                .events(&exec_id(&first))
                .await
                .unwrap()
                .len(),
            1
        );
        let m = &app.metrics;
        assert_eq!(
            m.total(telemetry::WEBHOOK_DEDUPED, &[("Source", "gh")]),
            1.0
        );
        assert_eq!(m.total(telemetry::PIPELINE_RUNS, &[("Pipeline", "p")]), 1.0);
        let lines = m.emf_lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let deduped: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(deduped["webhook_deduped_total"], json!(1.0));
        assert_eq!(deduped["Source"], json!("gh"));
    }

    #[tokio::test]
    async fn a_200_kb_header_is_refused_with_431_and_stores_nothing() {
        let (app, _) = setup();
        let mut request = github("gh", "d-1", push("acme/app", "abc"));
        request
            .headers
            .insert("x-padding".into(), "a".repeat(200 * 1024));
        let refused = handle(&app, request).await;
        assert_eq!(refused.status, 431, "{refused:?}");
        assert_eq!(refused.body["error"]["code"], json!("headers_too_large"));
        assert!(app.backend.queue.is_empty());
    }

    #[tokio::test]
    async fn a_second_delivery_of_a_run_key_joins_its_execution() {
        let (app, _) = setup();
        let first = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        // Same repository and head commit, another delivery (another event type, say).
        let mut other = serde_json::from_slice::<Value>(&push("acme/app", "abc")).unwrap();
        other["action"] = json!("completed");
        let second = handle(
            &app,
            github("gh", "d-2", serde_json::to_vec(&other).unwrap()),
        )
        .await;
        assert_eq!(second.status, 202, "{second:?}");
        assert_eq!(
            second.body,
            json!({"execution_id": exec_id(&first), "status": "joined"})
        );
        assert_eq!(app.backend.queue.len(), 1, "no second message");
        let events = app.backend.ledger.events(&exec_id(&first)).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].detail["delivery_id"],
            json!("d-1"),
            "the first payload stays"
        );
        let joined = app
            .backend
            .deliveries
            .get(&id("acme"), &id("gh"), &id("d-2"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(joined.execution_id, exec_id(&first));

        let third = handle(&app, github("gh", "d-3", push("acme/app", "def"))).await;
        assert_ne!(
            exec_id(&third),
            exec_id(&first),
            "another commit is another run"
        );
        assert_eq!(app.backend.queue.len(), 2);
    }

    #[tokio::test]
    async fn over_the_rate_limit_work_is_delayed_not_dropped() {
        let (app, clock) = setup();
        for (n, sha) in ["a1", "a2"].iter().enumerate() {
            let r = handle(&app, github("gh", &format!("d-{n}"), push("acme/app", sha))).await;
            assert_eq!(r.body["status"], json!("accepted"), "{r:?}");
        }
        let third = handle(&app, github("gh", "d-3", push("acme/app", "a3"))).await;
        assert_eq!(third.status, 202, "{third:?}");
        assert_eq!(third.body["status"], json!("delayed"));
        let delay = third.body["delay_seconds"].as_u64().expect("delay_seconds");
        let throttled = [("Cause", "rate_limit")];
        assert_eq!(app.metrics.total(telemetry::THROTTLED, &throttled), 1.0);
        assert!(delay > 0);
        // The next minute window starts 40 s after START.
        assert_eq!(delay, 40);

        let execution_id = exec_id(&third);
        let execution = app
            .backend
            .executions
            .get(&execution_id)
            .await
            .unwrap()
            .unwrap();
        let not_before = Timestamp::from_secs(START + 40);
        assert_eq!(execution.not_before, Some(not_before));
        assert_eq!(execution.status, ExecutionStatus::Queued);
        let events = app.backend.ledger.events(&execution_id).await.unwrap();
        let kinds: Vec<_> = events.iter().map(|e| (e.seq, e.kind)).collect();
        assert_eq!(
            kinds,
            [
                (RECEIVED_SEQ, EventKind::Received),
                (DELAYED_SEQ, EventKind::Delayed)
            ]
        );
        assert_eq!(events[1].detail["delay_seconds"], json!(40));

        assert_eq!(app.backend.queue.len(), 3);
        let now_visible = visible(&app.backend).await;
        assert_eq!(
            now_visible.len(),
            2,
            "the delayed message is not visible yet"
        );
        assert!(now_visible
            .iter()
            .all(|m| m.message.execution_id != execution_id));
        clock.advance_secs(40);
        let later = visible(&app.backend).await;
        let delayed = later
            .iter()
            .find(|m| m.message.execution_id == execution_id)
            .expect("visible after the delay");
        assert_eq!(delayed.message.not_before, Some(not_before));
    }

    #[tokio::test]
    async fn unknown_sources_and_routes() {
        let (app, _) = setup();
        for source in ["nope", "a#b"] {
            let r = handle(&app, github(source, "d-1", push("acme/app", "abc"))).await;
            assert_error(&r, 404, "unknown_source");
        }
        let mut req = github("gh", "d-1", push("acme/app", "abc"));
        for path in ["/webhooks/", "/webhooks/gh/extra", "/hooks/gh", "/"] {
            req.path = path.to_owned();
            assert_error(&handle(&app, req.clone()).await, 404, "not_found");
        }
        req.path = "/webhooks/gh".to_owned();
        req.method = "GET".to_owned();
        assert_error(&handle(&app, req.clone()).await, 405, "method_not_allowed");
        req.method = "post".to_owned();
        assert_eq!(
            handle(&app, req).await.status,
            202,
            "methods are case-insensitive"
        );
    }

    #[tokio::test]
    async fn a_bad_signature_is_refused_and_nothing_is_stored() {
        let (app, _) = setup();
        let body = push("acme/app", "abc");
        let forged = sign_github(b"not-the-secret", &body);
        let req = with_header(
            github("gh", "d-1", body),
            "x-hub-signature-256",
            Some(&forged),
        );
        let response = handle(&app, req).await;
        assert_error(&response, 401, "invalid_signature");
        assert_nothing_stored(&app, "acme", "gh", "d-1").await;

        // A signature over another body.
        let req = github("gh", "d-1", push("acme/app", "abc"));
        let tampered = EdgeRequest {
            body: push("acme/app", "abd"),
            ..req
        };
        assert_error(&handle(&app, tampered).await, 401, "invalid_signature");
        assert_nothing_stored(&app, "acme", "gh", "d-1").await;
    }

    #[tokio::test]
    async fn a_missing_or_malformed_signature_is_refused() {
        let (app, _) = setup();
        let unsigned = with_header(
            github("gh", "d-1", push("acme/app", "abc")),
            "x-hub-signature-256",
            None,
        );
        let response = handle(&app, unsigned).await;
        assert_error(&response, 401, "missing_signature");
        assert!(response.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Hub-Signature-256"));
        let malformed = with_header(
            github("gh", "d-1", push("acme/app", "abc")),
            "x-hub-signature-256",
            Some("sha1=0000"),
        );
        assert_error(&handle(&app, malformed).await, 401, "malformed_signature");
        assert_nothing_stored(&app, "acme", "gh", "d-1").await;
    }

    fn stripe(body: &[u8], t: i64) -> EdgeRequest {
        EdgeRequest {
            method: "POST".into(),
            path: "/webhooks/stripe".into(),
            headers: BTreeMap::from([
                (
                    "content-type".to_owned(),
                    "application/json; charset=utf-8".to_owned(),
                ),
                (
                    "stripe-signature".to_owned(),
                    sign_stripe(STRIPE_SECRET, body, t),
                ),
            ]),
            body: body.to_vec(),
            ..EdgeRequest::default()
        }
    }

    #[tokio::test]
    async fn stripe_deliveries_and_stale_timestamps() {
        let (app, _) = setup();
        let body = serde_json::to_vec(&json!({
            "id": "evt_1", "type": "invoice.paid", "account": "acct_9"
        }))
        .unwrap();
        let stale = handle(&app, stripe(&body, START - 301)).await;
        assert_error(&stale, 401, "stale_signature");
        let ahead = handle(&app, stripe(&body, START + 301)).await;
        assert_error(&ahead, 401, "stale_signature");
        assert_nothing_stored(&app, "acct_9", "stripe", "evt_1").await;

        let fresh = handle(&app, stripe(&body, START - 299)).await;
        assert_eq!(fresh.status, 202, "{fresh:?}");
        // Delivery id (and run key) from /id, tenant from /account.
        assert_eq!(
            exec_id(&fresh),
            ExecutionId::for_run_key(&id("acct_9"), &id("stripe"), &id("evt_1"))
        );
        let execution = app
            .backend
            .executions
            .get(&exec_id(&fresh))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(execution.tenant, id("acct_9"));
        // Stripe retries sign again with a new timestamp: still the same delivery.
        let retry = handle(&app, stripe(&body, START)).await;
        assert_eq!(retry.status, 200);
        assert_eq!(retry.body["status"], json!("duplicate"));
    }

    /// A generic-scheme request for delivery `delivery`, signed at `t`.
    fn generic_hmac(body: Vec<u8>, delivery: &str, t: i64) -> EdgeRequest {
        EdgeRequest {
            method: "POST".into(),
            path: "/webhooks/generic".into(),
            headers: BTreeMap::from([
                (
                    "x-sluice-signature".to_owned(),
                    sign_hmac(HMAC_SECRET, &body, t, delivery),
                ),
                ("x-sluice-timestamp".to_owned(), t.to_string()),
                ("x-sluice-delivery".to_owned(), delivery.to_owned()),
            ]),
            body,
            ..EdgeRequest::default()
        }
    }

    #[tokio::test]
    async fn the_generic_hmac_scheme() {
        let (app, _) = setup();
        let body = br#"{"event":"build.finished","team":"team-a"}"#.to_vec();
        let req = generic_hmac(body, "gen-1", START);
        let response = handle(&app, req.clone()).await;
        assert_eq!(
            response.status, 202,
            "{response:?} (no content type is accepted)"
        );
        let execution = app
            .backend
            .executions
            .get(&exec_id(&response))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(execution.tenant, id("team-a"));

        let bad_tenant = br#"{"event":"build.finished","team":"team#a"}"#.to_vec();
        let response = handle(&app, generic_hmac(bad_tenant, "gen-2", START)).await;
        assert_error(&response, 400, "invalid_field");
        let record = app
            .backend
            .deliveries
            .get(&id("team-a"), &id("generic"), &id("gen-2"))
            .await
            .unwrap();
        assert_eq!(record, None);
        assert_eq!(app.backend.queue.len(), 1);
    }

    /// A JSON body of exactly `len` bytes.
    fn body_of(len: usize) -> Vec<u8> {
        let base = serde_json::to_vec(&json!({"org": "acme", "pad": ""})).unwrap();
        let pad = "x".repeat(len - base.len());
        let body = serde_json::to_vec(&json!({"org": "acme", "pad": pad})).unwrap();
        assert_eq!(body.len(), len);
        body
    }

    #[tokio::test]
    async fn a_body_over_the_source_limit_is_413() {
        let (app, _) = setup();
        let at_limit = handle(&app, github("small", "d-1", body_of(1024))).await;
        assert_eq!(at_limit.status, 202, "{at_limit:?}");
        let over = handle(&app, github("small", "d-2", body_of(1025))).await;
        assert_error(&over, 413, "payload_too_large");
        assert!(over.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024"));
        assert!(app
            .backend
            .deliveries
            .get(&id("acme"), &id("small"), &id(&body_digest(&body_of(1025))))
            .await
            .unwrap()
            .is_none());
        // Refused before the signature is even looked at.
        let unsigned = with_header(
            github("small", "d-3", body_of(2000)),
            "x-hub-signature-256",
            None,
        );
        assert_error(&handle(&app, unsigned).await, 413, "payload_too_large");
    }

    #[tokio::test]
    async fn a_payload_the_ledger_cannot_hold_is_413_before_any_write() {
        let (app, _) = setup();
        let text = "y".repeat(MAX_DETAIL_BYTES);
        let body = serde_json::to_vec(&json!({ "text": text })).unwrap();
        let digest = body_digest(&body);
        let response = handle(&app, github("big", "d-1", body)).await;
        assert_error(&response, 413, "payload_too_large");
        assert!(response.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ledger"));
        assert_nothing_stored(&app, "acme", "big", &digest).await;

        // Measured after re-serialization: indentation does not count.
        let spread = json!({ "text": "z".repeat(MAX_DETAIL_BYTES - 1000) });
        let zeros = vec![0; 300];
        let payload = json!({ "a": spread, "b": zeros });
        let pretty = serde_json::to_vec_pretty(&payload).unwrap();
        let compact = serde_json::to_vec(&payload).unwrap();
        assert!(pretty.len() > MAX_DETAIL_BYTES && compact.len() < MAX_DETAIL_BYTES - 200);
        let response = handle(&app, github("big", "d-2", pretty)).await;
        assert_eq!(response.status, 202, "{response:?}");
    }

    #[tokio::test]
    async fn content_type_and_json_checks() {
        let (app, _) = setup();
        let form = with_header(
            github("gh", "d-1", b"payload=%7B%7D".to_vec()),
            "content-type",
            Some("application/x-www-form-urlencoded"),
        );
        let response = handle(&app, form).await;
        assert_error(&response, 415, "unsupported_media_type");

        let not_json = github("gh", "d-1", b"{\"after\": ".to_vec());
        assert_error(&handle(&app, not_json).await, 400, "invalid_json");
        let empty = github("gh", "d-1", Vec::new());
        assert_error(&handle(&app, empty).await, 400, "invalid_json");
        assert_nothing_stored(&app, "acme", "gh", "d-1").await;

        for (n, content_type) in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/vnd.github+json",
        ]
        .iter()
        .enumerate()
        {
            let req = with_header(
                github("gh", &format!("ok-{n}"), push("acme/app", &format!("c{n}"))),
                "content-type",
                Some(content_type),
            );
            assert_eq!(handle(&app, req).await.status, 202, "{content_type}");
        }
        let no_type = with_header(
            github("small", "ok-none", body_of(100)),
            "content-type",
            None,
        );
        assert_eq!(handle(&app, no_type).await.status, 202);
    }

    #[tokio::test]
    async fn missing_fields_are_named() {
        let (app, _) = setup();
        let no_sha = serde_json::to_vec(&json!({"repository": {"full_name": "acme/app"}})).unwrap();
        let response = handle(&app, github("gh", "d-1", no_sha)).await;
        assert_error(&response, 400, "missing_field");
        let message = response.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("run_key[1]") && message.contains("/after"),
            "{message}"
        );
        assert_nothing_stored(&app, "acme", "gh", "d-1").await;

        let no_delivery = with_header(
            github("gh", "d-1", push("acme/app", "abc")),
            "x-github-delivery",
            None,
        );
        let response = handle(&app, no_delivery).await;
        assert_error(&response, 400, "missing_field");
        let message = response.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("delivery_id") && message.contains("X-GitHub-Delivery"));

        let empty_delivery = with_header(
            github("gh", "d-1", push("acme/app", "abc")),
            "x-github-delivery",
            Some(""),
        );
        assert_error(&handle(&app, empty_delivery).await, 400, "missing_field");

        let no_tenant = github("small", "d-1", br#"{"org": null}"#.to_vec());
        let response = handle(&app, no_tenant).await;
        assert_error(&response, 400, "missing_field");
        assert!(response.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant"));
        assert!(app.backend.queue.is_empty());
    }

    #[tokio::test]
    async fn errors_carry_status_code_and_retryability() {
        let cases: Vec<(IntakeError, u16, &str, bool)> = vec![
            (
                IntakeError::UnknownSource("x".into()),
                404,
                "unknown_source",
                false,
            ),
            (
                IntakeError::PayloadTooLarge { size: 2, limit: 1 },
                413,
                "payload_too_large",
                false,
            ),
            (
                IntakeError::Signature(SignatureError::Mismatch),
                401,
                "invalid_signature",
                false,
            ),
            (
                IntakeError::Signature(SignatureError::Stale {
                    age_secs: 400,
                    tolerance_secs: 300,
                }),
                401,
                "stale_signature",
                false,
            ),
            (
                IntakeError::MissingSecret(id("gh")),
                500,
                "internal_error",
                false,
            ),
            (
                IntakeError::UnsupportedMediaType("text/plain".into()),
                415,
                "unsupported_media_type",
                false,
            ),
            (
                IntakeError::InvalidJson("eof".into()),
                400,
                "invalid_json",
                false,
            ),
            (
                IntakeError::Unavailable(StoreError::Transient {
                    operation: "x",
                    source: "boom".into(),
                }),
                503,
                "unavailable",
                true,
            ),
        ];
        for (error, status, code, retryable) in cases {
            assert_eq!(error.status(), status, "{error:?}");
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.is_retryable(), retryable, "{error:?}");
        }
        let answer = IntakeError::Unavailable(StoreError::Transient {
            operation: "queue.send",
            source: "connection reset".into(),
        })
        .into_response();
        assert_eq!(
            answer.body,
            json!({"error": {"code": "unavailable", "message": "temporarily unavailable, retry later"}})
        );
    }

    #[tokio::test]
    async fn a_source_without_a_secret_is_an_internal_error() {
        let (mut app, _) = setup();
        app.secrets = Arc::new(Secrets::default());
        let response = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        assert_error(&response, 500, "internal_error");
        assert_nothing_stored(&app, "acme", "gh", "d-1").await;
    }

    // --- failures mid-way -------------------------------------------------------------------

    fn injected(operation: &'static str) -> StoreError {
        StoreError::Transient {
            operation,
            source: "injected fault".into(),
        }
    }

    #[derive(Debug, Clone)]
    struct FlakyRate {
        inner: MemoryRateLimiter,
        fail: Arc<AtomicBool>,
    }

    impl RateLimiter for FlakyRate {
        async fn register(
            &self,
            source: &SourceId,
            limit_per_minute: u32,
            now: Timestamp,
        ) -> crate::ports::StoreResult<RateDecision> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(injected("rate.register"));
            }
            self.inner.register(source, limit_per_minute, now).await
        }
    }

    #[derive(Debug, Clone)]
    struct FlakyQueue {
        inner: MemoryStageQueue,
        fail_sends: Arc<AtomicBool>,
    }

    impl StageQueue for FlakyQueue {
        async fn send(
            &self,
            message: &StageMessage,
            now: Timestamp,
        ) -> crate::ports::StoreResult<()> {
            if self.fail_sends.load(Ordering::SeqCst) {
                return Err(injected("queue.send"));
            }
            self.inner.send(message, now).await
        }

        async fn receive(
            &self,
            max: u32,
            visibility_secs: u32,
            wait_secs: u32,
        ) -> crate::ports::StoreResult<Vec<ReceivedMessage>> {
            self.inner.receive(max, visibility_secs, wait_secs).await
        }

        async fn ack(&self, receipt: &str) -> crate::ports::StoreResult<()> {
            self.inner.ack(receipt).await
        }

        async fn defer(
            &self,
            received: &ReceivedMessage,
            until: Timestamp,
            now: Timestamp,
        ) -> crate::ports::StoreResult<()> {
            self.inner.defer(received, until, now).await
        }

        async fn retry_later(
            &self,
            receipt: &str,
            delay_secs: u32,
        ) -> crate::ports::StoreResult<()> {
            self.inner.retry_later(receipt, delay_secs).await
        }
    }

    /// The memory intake store, answering `Unsettled` on demand (as the DynamoDB adapter does
    /// when its transaction keeps conflicting), which sends intake step by step.
    #[derive(Debug, Clone)]
    struct FlakyIntake {
        inner: MemoryIntakeStore,
        unsettled: Arc<AtomicBool>,
    }

    impl IntakeStore for FlakyIntake {
        async fn accept(&self, write: IntakeWrite) -> crate::ports::StoreResult<AcceptOutcome> {
            if self.unsettled.load(Ordering::SeqCst) {
                return Ok(AcceptOutcome::Unsettled);
            }
            self.inner.accept(write).await
        }
    }

    /// The memory backend, with a rate limiter and a queue that fail on demand, and an intake
    /// store that refuses its fast path on demand.
    #[derive(Debug, Clone)]
    struct Flaky {
        memory: MemoryBackend,
        rate: FlakyRate,
        queue: FlakyQueue,
        intake: FlakyIntake,
    }

    impl Backend for Flaky {
        type Deliveries = MemoryDeliveryStore;
        type Executions = MemoryExecutionStore;
        type Ledger = MemoryLedger;
        type Semaphores = MemorySemaphoreStore;
        type Connectors = MemoryConnectorStore;
        type Rate = FlakyRate;
        type Queue = FlakyQueue;
        type Alerts = crate::adapters::memory::MemoryAlertStore;
        type Intake = FlakyIntake;

        fn deliveries(&self) -> &Self::Deliveries {
            &self.memory.deliveries
        }
        fn executions(&self) -> &Self::Executions {
            &self.memory.executions
        }
        fn ledger(&self) -> &Self::Ledger {
            &self.memory.ledger
        }
        fn semaphores(&self) -> &Self::Semaphores {
            &self.memory.semaphores
        }
        fn connectors(&self) -> &Self::Connectors {
            &self.memory.connectors
        }
        fn rate(&self) -> &Self::Rate {
            &self.rate
        }
        fn queue(&self) -> &Self::Queue {
            &self.queue
        }
        fn alerts(&self) -> &Self::Alerts {
            &self.memory.alerts
        }
        fn intake(&self) -> &Self::Intake {
            &self.intake
        }
    }

    fn flaky() -> (App<Flaky, NoTools>, FakeClock) {
        let clock = FakeClock::at(Timestamp::from_secs(START));
        let memory = MemoryBackend::new(Arc::new(clock.clone()));
        let backend = Flaky {
            rate: FlakyRate {
                inner: memory.rate.clone(),
                fail: Arc::default(),
            },
            queue: FlakyQueue {
                inner: memory.queue.clone(),
                fail_sends: Arc::default(),
            },
            intake: FlakyIntake {
                inner: memory.intake.clone(),
                unsettled: Arc::default(),
            },
            memory,
        };
        (app_on(backend, &clock), clock)
    }

    #[tokio::test]
    async fn a_failed_send_leaves_the_run_to_the_sweeper_and_the_retry_is_a_duplicate() {
        let (app, clock) = flaky();
        let memory = &app.backend.memory;
        app.backend.queue.fail_sends.store(true, Ordering::SeqCst);
        let response = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        assert_error(&response, 503, "unavailable");

        // The fast path recorded everything QUEUED in one write; only the message is missing.
        let execution_id = ExecutionId::for_run_key(&id("acme"), &id("gh"), &id("acme/app:abc"));
        let delivery = memory
            .deliveries
            .get(&id("acme"), &id("gh"), &id("d-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Queued);
        let execution = memory.executions.get(&execution_id).await.unwrap().unwrap();
        assert_eq!(execution.status, ExecutionStatus::Queued);
        let events = memory.ledger.events(&execution_id).await.unwrap();
        assert_eq!(
            events[0].kind,
            EventKind::Received,
            "the payload is there for the sweeper"
        );
        assert!(memory.queue.is_empty());

        // The sender retries: the run exists, so this is a duplicate; no message yet.
        app.backend.queue.fail_sends.store(false, Ordering::SeqCst);
        clock.advance_secs(10);
        let retry = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        assert_eq!(retry.status, 200, "{retry:?}");
        assert_eq!(exec_id(&retry), execution_id);
        assert!(memory.queue.is_empty());

        // The sweeper re-sends it once its grace period is over, and only then.
        let sweep = crate::usecases::sweep::sweep;
        assert_eq!(sweep(&app).await.unwrap().requeued, 0);
        clock.advance_secs(crate::usecases::sweep::QUEUED_GRACE_SECS);
        let report = sweep(&app).await.unwrap();
        assert_eq!(report.requeued, 1, "{report:?}");
        let messages = visible(memory).await;
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].message.execution_id, execution_id);
        let events = memory.ledger.events(&execution_id).await.unwrap();
        assert_eq!(events.last().unwrap().kind, EventKind::RecoveryRequeued);
    }

    #[tokio::test]
    async fn a_retry_after_a_failure_before_the_execution_resumes_the_flow() {
        let (app, clock) = flaky();
        let memory = &app.backend.memory;
        // Step by step (the composite write kept conflicting), and the rate step fails.
        app.backend.intake.unsettled.store(true, Ordering::SeqCst);
        app.backend.rate.fail.store(true, Ordering::SeqCst);
        let response = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        assert_error(&response, 503, "unavailable");
        let delivery = memory
            .deliveries
            .get(&id("acme"), &id("gh"), &id("d-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Received);
        assert!(memory
            .executions
            .get(&delivery.execution_id)
            .await
            .unwrap()
            .is_none());

        app.backend.rate.fail.store(false, Ordering::SeqCst);
        app.backend.intake.unsettled.store(false, Ordering::SeqCst);
        // While the claim is young its request may still be at work: a plain duplicate.
        let early = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        assert_eq!(early.status, 200, "{early:?}");
        assert_eq!(early.body["status"], json!("duplicate"));
        assert_eq!(memory.queue.len(), 0);
        clock.advance_secs(RESUME_AFTER_SECS);
        let retry = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        assert_eq!(retry.status, 202, "{retry:?}");
        assert_eq!(retry.body["status"], json!("accepted"));
        assert_eq!(memory.queue.len(), 1);
        let delivery = memory
            .deliveries
            .get(&id("acme"), &id("gh"), &id("d-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Queued);

        // Now done: a further redelivery is a plain duplicate.
        let again = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        assert_eq!(again.status, 200);
        assert_eq!(memory.queue.len(), 1);
    }

    /// Records every tool call and answers 200.
    #[derive(Debug, Clone, Default)]
    struct RecordingTools(Arc<std::sync::Mutex<Vec<ToolRequest>>>);

    impl ToolClient for RecordingTools {
        async fn call(&self, request: &ToolRequest) -> ToolOutcome {
            self.0.lock().expect("calls").push(request.clone());
            ToolOutcome::Succeeded {
                status: 200,
                body: json!({ "id": 1 }),
                latency_ms: 1,
            }
        }
    }

    impl RecordingTools {
        fn calls(&self) -> usize {
            self.0.lock().expect("calls").len()
        }
    }

    /// Runs every visible stage message with the executor until the queue is empty.
    async fn drain(app: &App<MemoryBackend, RecordingTools>) {
        let worker = crate::domain::ids::HolderId::random();
        for _ in 0..10 {
            let got = app.backend.queue.receive(10, 30, 0).await.expect("receive");
            if got.is_empty() {
                return;
            }
            for (receipt, result) in crate::usecases::execute::run_batch(app, &worker, got).await {
                result.expect("the stage runs");
                app.backend.queue.ack(&receipt).await.expect("ack");
            }
        }
        panic!("the queue did not drain");
    }

    #[tokio::test]
    async fn a_captured_github_request_resent_with_a_new_delivery_header_30_days_later_starts_nothing(
    ) {
        let clock = FakeClock::at(Timestamp::from_secs(START));
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let tools = RecordingTools::default();
        let app = App::new(
            MemoryBackend::new(shared),
            tools.clone(),
            Arc::new(clock.clone()),
            Manifest::parse(MANIFEST, "test.yaml").expect("manifest"),
            {
                let mut secrets = Secrets::default();
                secrets.insert_source_secret(id("gh-default"), GH_SECRET);
                secrets
            },
            ReliabilityConfig::from_lookup(|_| None).expect("defaults"),
        )
        .with_emf(EmfSink::Memory(Default::default()));
        let request = |delivery: &str| {
            let mut req = github("gh-default", delivery, push("acme/app", "abc"));
            req.headers.remove("content-type");
            req
        };
        let body = push("acme/app", "abc");

        let first = accept_webhook(&app, "gh-default", &request("d-1").headers, &body)
            .await
            .expect("accepted");
        let Accepted::Queued { execution_id } = first else {
            panic!("a new run: {first:?}")
        };
        // The default run key (and delivery id) is the digest of the signed body.
        let digest = body_digest(&body);
        assert_eq!(
            execution_id,
            ExecutionId::for_run_key(&id("acme"), &id("gh-default"), &id(&digest))
        );
        drain(&app).await;
        assert_eq!(tools.calls(), 1);
        let done = app
            .backend
            .executions
            .get(&execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.status, ExecutionStatus::Succeeded);
        assert_eq!(done.run_key, id(&digest));

        // 30 days on the dedupe record has expired; the execution record has no TTL. The same
        // signed body comes back with a fresh X-GitHub-Delivery.
        let ttl = app.config.delivery_dedupe_ttl_secs;
        clock.advance_secs(30 * 86_400);
        assert!(30 * 86_400 > ttl, "the dedupe record has expired");
        let replay = accept_webhook(&app, "gh-default", &request("d-999").headers, &body)
            .await
            .expect("answered");
        assert_eq!(
            replay,
            Accepted::Joined {
                execution_id: execution_id.clone()
            },
            "the execution record holds it: no new run"
        );
        assert!(app.backend.queue.is_empty(), "no second message");
        drain(&app).await;
        assert_eq!(tools.calls(), 1, "no second tool call");
        let events = app.backend.ledger.events(&execution_id).await.unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind == EventKind::Received)
                .count(),
            1
        );
        let page = app
            .backend
            .executions
            .list(&id("acme"), None, 10, None)
            .await
            .unwrap();
        let ids: Vec<_> = page.items.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, [execution_id], "no other execution");
    }

    #[tokio::test]
    async fn two_tenants_with_one_run_key_and_one_delivery_id_get_two_executions() {
        let (app, _) = setup();
        let body = |org: &str| {
            serde_json::to_vec(&json!({
                "event_id": "e-1",
                "org": org,
                "repository": {"full_name": "shared/app"},
            }))
            .unwrap()
        };
        let a = handle(&app, github("multi", "x", body("tenant-a"))).await;
        let b = handle(&app, github("multi", "x", body("tenant-b"))).await;
        assert_eq!((a.status, b.status), (202, 202), "{a:?} {b:?}");
        assert_eq!(b.body["status"], json!("accepted"), "not a duplicate of a");
        assert_ne!(exec_id(&a), exec_id(&b));
        for (response, tenant) in [(&a, "tenant-a"), (&b, "tenant-b")] {
            let execution = app
                .backend
                .executions
                .get(&exec_id(response))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(execution.tenant, id(tenant));
            assert_eq!(execution.run_key, id("shared/app"));
            let record = app
                .backend
                .deliveries
                .get(&id(tenant), &id("multi"), &id("e-1"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(record.execution_id, exec_id(response));
        }
        assert_eq!(app.backend.queue.len(), 2);
    }

    #[tokio::test]
    async fn the_generic_scheme_refuses_a_changed_delivery_header_inside_the_tolerance() {
        let (app, clock) = setup();
        let body = br#"{"event":"build.finished","team":"team-a"}"#.to_vec();
        let req = generic_hmac(body, "gen-1", START);
        assert_eq!(handle(&app, req.clone()).await.status, 202);
        clock.advance_secs(60);
        let resent = with_header(req, "x-sluice-delivery", Some("gen-2"));
        let response = handle(&app, resent).await;
        assert_error(&response, 401, "invalid_signature");
        assert_eq!(app.backend.queue.len(), 1);
        let record = app
            .backend
            .deliveries
            .get(&id("team-a"), &id("generic"), &id("gen-2"))
            .await
            .unwrap();
        assert_eq!(record, None);
    }

    #[tokio::test]
    async fn a_reused_delivery_id_with_another_body_is_a_duplicate_of_the_first() {
        let (app, _) = setup();
        let first = handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await;
        let reused = handle(&app, github("gh", "d-1", push("acme/app", "zzz"))).await;
        assert_eq!(reused.status, 200);
        assert_eq!(exec_id(&reused), exec_id(&first));
        assert_eq!(app.backend.queue.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_redeliveries_make_one_execution_and_one_message() {
        let (app, _) = setup();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move {
                    handle(&app, github("gh", "d-1", push("acme/app", "abc"))).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task"));
        }
        let taken = answers.iter().filter(|r| r.status == 202).count();
        assert!(taken >= 1, "{answers:?}");
        assert!(answers.iter().all(|r| r.status == 202 || r.status == 200));
        assert!(answers.iter().all(|r| exec_id(r) == exec_id(&answers[0])));
        assert_eq!(app.backend.queue.len(), 1);
        let events = app
            .backend
            .ledger
            .events(&exec_id(&answers[0]))
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
    }
}
