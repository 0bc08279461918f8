//! Use case: the operator API, behind API Gateway's JWT authorizer. It reads executions and their
//! ledgers, replays an execution as a new one, shows a connector's admission state, sets or
//! clears a connector's concurrency limit override, and sets or clears kill switches.
//!
//! Routes (paths relative to the API root, each segment percent-decoded):
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/health` (no token) | `{"status": "ok" or "degraded"}` only, cached per instance for `HEALTH_CACHE_SECS` (5 s) |
//! | GET | `/v1/health` | `{"status", "time_ms", "checked_at_ms", "version", "sources", "connectors", "pipelines", "breakers", "alarms", "alerts"}` (no tenant data), the same cached check |
//! | GET | `/v1/reliability` | the caller's tenant's [`ReliabilitySummary`](super::reliability::ReliabilitySummary), cached per instance and tenant for `SUMMARY_CACHE_SECS` (30 s) |
//! | GET | `/v1/alerts/dead-letters?limit=` | `{"items": [dead letter]}`, newest first: the caller's tenant's and those of no tenant (breaker alerts); limit 1..=1000, default 100 |
//! | GET | `/v1/executions?status=&limit=&cursor=` | `{"items": [execution], "next_cursor"}`, newest first; limit 1..=100, default 20 (bounded: see below) |
//! | GET | `/v1/executions/{id}?limit=&ledger_cursor=` | `{"execution", "ledger": [event], "next_ledger_cursor"}`: at most `limit` (1..=500, default 100) events, by seq, after the cursor (the last seq of the previous page); `next_ledger_cursor` is `null` on the last page |
//! | POST | `/v1/executions/{id}/replay` | 202 `{"execution_id", "replay_of", "status", "stage", "not_before_ms"?, "delay_seconds"?}` |
//! | GET | `/v1/connectors/{id}` | `{"connector", "breaker", "in_flight", "limit", "limit_override", "switches"}` |
//! | PUT, DELETE | `/v1/connectors/{id}/limit` | `{"connector", "limit", "set_by", "set_at_ms", "reason"}` / `{"cleared": true}` |
//! | GET | `/v1/kill-switches` | `{"items": [switch]}` |
//! | PUT, DELETE | `/v1/kill-switches/connectors/{c}` | `{"switch"}` / `{"cleared": true, "key"}` |
//! | PUT, DELETE | `/v1/kill-switches/connectors/{c}/tools/{t}` | same |
//! | PUT, DELETE | `/v1/kill-switches/tenants/{t}` | same (only the caller's own tenant) |
//!
//! Identity comes only from [`Claims`] (set by the function from the authorizer's context): the
//! tenant from `custom:tenant_id`, the actor from `sub`. A tenant or actor named in the body or
//! the query is ignored. Every `/v1` route without claims answers 401; another tenant's
//! execution answers exactly as a missing one (404), so existence is never revealed.
//!
//! Bounded reads: every request does a bounded amount of store work. `/health` and `/v1/health`
//! read (one `GetItem` per connector, the alert counters, `DescribeAlarms`) at most once per
//! `HEALTH_CACHE_SECS` per instance, whoever calls; `/v1/reliability` reads at most
//! `ceil(window / 100)` pages of records and `MAX_SUMMARY_LEDGER_READS` (50) ledgers per
//! tenant and `SUMMARY_CACHE_SECS` (see [`reliability`]). `GET /v1/executions` evaluates at
//! most [`MAX_LIST_EVALUATED`](crate::ports::MAX_LIST_EVALUATED) (1,000) of the tenant's
//! executions per request, from the cursor on, whether they match `status` or not (DynamoDB:
//! at most 5 `Query` requests). A status few executions have may answer fewer items than
//! `limit`, even none, with a `next_cursor`: walk the cursor until it is `null` to see every
//! match, each once.
//!
//! Every instant in a response is an integer of epoch milliseconds in a field whose name ends in
//! `_ms`.
//!
//! Errors (`{"error": {"code", "message"}}`): 400 `invalid_json`, `missing_field`,
//! `invalid_field`, `invalid_status`, `invalid_limit`, `invalid_cursor`, `invalid_stage`; 401
//! `unauthorized`; 403 `forbidden` (another tenant's tenant switch); 404 `not_found`; 405
//! `method_not_allowed`; 409 `missing_stage_output` (a replay from a later stage needs an
//! earlier stage's output the original never produced), `conflict` (the execution's pipeline is
//! no longer configured); 413 `payload_too_large` (body over 16 KiB, or a replay whose
//! payload and carried outputs exceed the ledger's 64 KiB event cap); 503 `unavailable` (a
//! backend failed; retry).
//!
//! Replays: a replay is a new execution (random id) of the same tenant, source, pipeline and run
//! key, linked by `replay_of`, starting at `from_stage` (default 0). Its RECEIVED event copies
//! the original's payload and, for a later start, the outputs of the stages it skips
//! (`detail.stages`). Replaying an execution that is still queued or running is allowed: the
//! replay is a separate execution. Cooldown (`COOLDOWN_SECONDS`) spaces whole-pipeline
//! attempts: the replay starts no earlier than the cooldown after the latest attempt this API
//! knows of for the original (its own start, and the start of every replay already requested
//! from it); a replay inside that window is accepted and delayed (`"status": "delayed"`), never
//! refused. Concurrent replays of one original cannot both take one slot: the REPLAY_REQUESTED
//! event that records a replay's start is appended to the original's ledger at the sequence
//! number after the events the start was computed from, a conditional write; the loser of a
//! race re-reads the ledger and computes its start after the winner's. So replays of one
//! original start at least `COOLDOWN_SECONDS` apart, however many arrive at once.
//!
//! Replay writes, in order: sizes checked first (the new RECEIVED event, payload and carried
//! outputs, must fit the ledger's cap: else 413 and nothing stored); the slot reserved
//! (REPLAY_REQUESTED on the original); the new ledger's RECEIVED (before the execution exists,
//! so an execution never lacks its payload); the execution; its start stage; REPLAY_CREATED
//! (and DELAYED); the message; QUEUED. A failure after the reservation answers 503 and leaves
//! the REPLAY_REQUESTED audit event (the slot stays taken, a retry is spaced after it) and at
//! most an execution that the sweeper re-queues and that runs with its payload. A replay is not
//! idempotent: a client that retries after a 503 may create two.
//!
//! Limit overrides: `PUT /v1/connectors/{id}/limit` with `{"limit": 1..=10000, "reason"}`
//! replaces the manifest's `concurrency_limit` of the connector for every admission from then
//! on, in every instance (the override lives on the connector's state item, which admission
//! writes anyway); `DELETE` returns to the manifest's limit. `"limit"` in `GET
//! /v1/connectors/{id}` is the limit in force. Lowering the limit below what is in flight
//! cancels nothing: new calls wait until enough settle.

use serde_json::{json, Map, Value};

use super::reliability;
use crate::app::App;
use crate::domain::connector::{ConnectorState, KillSwitch, LimitOverride, SwitchTarget};
use crate::domain::execution::{
    CreateOutcome, ExecutionChange, ExecutionRecord, ExecutionStatus, NewExecution, UpdateOutcome,
};
use crate::domain::ids::{ConnectorId, ExecutionId, TenantId, ToolName};
use crate::domain::ledger::{AppendOutcome, EventKind, LedgerEvent};
use crate::domain::time::Timestamp;
use crate::edge::{Claims, EdgeRequest, EdgeResponse};
use crate::error::StoreError;
use crate::manifest::{Manifest, PipelineSpec};
use crate::ports::{
    stored_detail, Backend, ConnectorStore, ExecutionStore, Ledger, StageMessage, StageQueue,
    ToolClient, MAX_PAGE,
};
use crate::telemetry;

/// Page size of `GET /v1/executions` without `limit`.
pub const DEFAULT_PAGE: u32 = 20;
/// The longest `replay_reason` or kill switch `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The largest concurrency limit override `PUT /v1/connectors/{id}/limit` accepts.
pub const MAX_LIMIT_OVERRIDE: u32 = 10_000;
/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Why a request is refused; each maps to one status and error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No verified token (no claims from the authorizer).
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The caller may not act on this resource.
    #[error("{0}")]
    Forbidden(String),
    /// No such route, or no such resource visible to the caller.
    #[error("{0}")]
    NotFound(String),
    /// The route exists, not with this method.
    #[error("method {method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed { method: String, allowed: String },
    /// The request is malformed: `code` says how.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// What the request would store exceeds a limit of the store (a replay whose carried
    /// payload and outputs do not fit one ledger event).
    #[error("{0}")]
    TooLargeToStore(String),
    /// The configuration no longer has what the request needs (a pipeline removed since the
    /// execution ran).
    #[error("{0}")]
    Conflict(String),
    /// A replay from a later stage needs an earlier stage's output the original never produced.
    #[error("{0}")]
    MissingStageOutput(String),
    /// A backend call failed.
    #[error("store call failed")]
    Store(#[from] StoreError),
    /// A write did not land as it must (an id collision, ledger contention); retry later.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::BadRequest { .. } => 400,
            ApiError::PayloadTooLarge | ApiError::TooLargeToStore(_) => 413,
            ApiError::Conflict(_) | ApiError::MissingStageOutput(_) => 409,
            ApiError::Store(_) | ApiError::Unavailable(_) => 503,
        }
    }

    /// The error code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::BadRequest { code, .. } => code,
            ApiError::PayloadTooLarge | ApiError::TooLargeToStore(_) => "payload_too_large",
            ApiError::Conflict(_) => "conflict",
            ApiError::MissingStageOutput(_) => "missing_stage_output",
            ApiError::Store(_) | ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApiError::Store(_) | ApiError::Unavailable(_))
    }

    /// The answer in the house error shape. Backend details stay in the log.
    pub fn into_response(self) -> EdgeResponse {
        let message = match &self {
            ApiError::Store(_) | ApiError::Unavailable(_) => {
                "the store is unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        };
        EdgeResponse::error(self.status(), self.code(), message)
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }
}

type ApiResult = Result<EdgeResponse, ApiError>;

/// Answers one API request.
#[tracing::instrument(
    skip_all,
    fields(method = %req.method, path = %req.path, tenant = tracing::field::Empty)
)]
pub async fn handle<B: Backend, T: ToolClient>(app: &App<B, T>, req: EdgeRequest) -> EdgeResponse {
    match route(app, &req).await {
        Ok(response) => response,
        Err(err) => {
            match &err {
                ApiError::Store(source) => {
                    tracing::error!(
                        error = source as &dyn std::error::Error,
                        "store call failed"
                    )
                }
                ApiError::Unavailable(why) => tracing::warn!(why = %why, "unavailable"),
                other => tracing::info!(code = other.code(), "refused: {other}"),
            }
            err.into_response()
        }
    }
}

async fn route<B: Backend, T: ToolClient>(app: &App<B, T>, req: &EdgeRequest) -> ApiResult {
    let Some(segments) = path_segments(&req.path) else {
        return Err(ApiError::NotFound("no such route".into()));
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["health"] => {
            allow(req, &["GET"])?;
            Ok(health_status(app).await)
        }
        ["v1", rest @ ..] => {
            // Authentication comes before routing: without a token, no route is revealed.
            let claims = req.claims.as_ref().ok_or(ApiError::Unauthorized)?;
            tracing::Span::current().record("tenant", claims.tenant.as_str());
            route_v1(app, req, claims, rest).await
        }
        _ => Err(ApiError::NotFound("no such route".into())),
    }
}

async fn route_v1<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    req: &EdgeRequest,
    claims: &Claims,
    rest: &[&str],
) -> ApiResult {
    match rest {
        ["executions"] => {
            allow(req, &["GET"])?;
            list_executions(app, req, claims).await
        }
        ["health"] => {
            allow(req, &["GET"])?;
            Ok(health_details(app).await)
        }
        ["reliability"] => {
            allow(req, &["GET"])?;
            let summary = reliability::summary(app, &claims.tenant).await?;
            Ok(EdgeResponse::json(200, json!(summary)))
        }
        ["alerts", "dead-letters"] => {
            allow(req, &["GET"])?;
            dead_letters(app, req, claims).await
        }
        ["executions", id] => {
            allow(req, &["GET"])?;
            get_execution(app, req, claims, id).await
        }
        ["executions", id, "replay"] => {
            allow(req, &["POST"])?;
            replay(app, req, claims, id).await
        }
        ["connectors", id] => {
            allow(req, &["GET"])?;
            connector_view(app, claims, id).await
        }
        ["connectors", id, "limit"] => {
            allow(req, &["PUT", "DELETE"])?;
            let connector = known_connector(&app.manifest, id)?;
            put_or_delete_limit(app, req, claims, connector).await
        }
        ["kill-switches"] => {
            allow(req, &["GET"])?;
            list_switches(app, claims).await
        }
        ["kill-switches", "connectors", connector] => {
            allow(req, &["PUT", "DELETE"])?;
            let target = connector_target(&app.manifest, connector)?;
            put_or_delete_switch(app, req, claims, target).await
        }
        ["kill-switches", "connectors", connector, "tools", tool] => {
            allow(req, &["PUT", "DELETE"])?;
            let target = tool_target(&app.manifest, connector, tool)?;
            put_or_delete_switch(app, req, claims, target).await
        }
        ["kill-switches", "tenants", tenant] => {
            allow(req, &["PUT", "DELETE"])?;
            let target = tenant_target(claims, tenant)?;
            put_or_delete_switch(app, req, claims, target).await
        }
        _ => Err(ApiError::NotFound("no such route".into())),
    }
}

fn allow(req: &EdgeRequest, methods: &[&str]) -> Result<(), ApiError> {
    if methods.iter().any(|m| req.method.eq_ignore_ascii_case(m)) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed {
            method: req.method.clone(),
            allowed: methods.join(", "),
        })
    }
}

// ---- health --------------------------------------------------------------------------------

/// `GET /health`, no token: only `{"status": "ok" | "degraded"}`, from the instance's cached
/// health check ([`reliability::health`]), so that a load balancer's probe (or anyone) learns
/// whether the function runs and its backend answers, and nothing else. 200 either way, so a
/// probe tells a running process from a dead one.
async fn health_status<B: Backend, T: ToolClient>(app: &App<B, T>) -> EdgeResponse {
    let snapshot = reliability::health(app).await;
    EdgeResponse::json(200, json!({ "status": snapshot.status }))
}

/// `GET /v1/health`, with a token: the same cached check with its details (no tenant data):
/// the manifest's size, every connector's breaker (`null` with `error` when the backend cannot
/// be read), the alarms in ALARM and the alert counters; `checked_at_ms` says when they were
/// read (at most `HEALTH_CACHE_SECS` ago).
async fn health_details<B: Backend, T: ToolClient>(app: &App<B, T>) -> EdgeResponse {
    let snapshot = reliability::health(app).await;
    let mut body = json!({
        "status": snapshot.status,
        "time_ms": app.clock.now().as_millis(),
        "checked_at_ms": snapshot.checked_at_ms,
        "version": env!("CARGO_PKG_VERSION"),
        "sources": app.manifest.sources.len(),
        "connectors": app.manifest.connectors.len(),
        "pipelines": app.manifest.pipelines.len(),
        "breakers": snapshot.breakers,
        "alarms": snapshot.alarms,
        "alerts": snapshot.alerts,
    });
    if let Some(error) = snapshot.error {
        body["error"] = json!(error);
    }
    EdgeResponse::json(200, body)
}

// ---- alerts --------------------------------------------------------------------------------

/// Dead letters are few (`ALERT_DEAD_LETTER_MAX`, at most 1000): read them all, keep the
/// caller's tenant's and the tenant-less ones (a breaker alert belongs to no tenant).
async fn dead_letters<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    req: &EdgeRequest,
    claims: &Claims,
) -> ApiResult {
    const MAX: u32 = 1000;
    let limit = match req.query.get("limit") {
        None => 100,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX).contains(n))
            .ok_or_else(|| ApiError::BadRequest {
                code: "invalid_limit",
                message: format!("limit must be a whole number from 1 to {MAX}"),
            })?,
    };
    let items: Vec<Value> = app
        .alerts
        .dead_letters(None, MAX)
        .await?
        .into_iter()
        .filter(|l| l.tenant.as_ref().is_none_or(|t| *t == claims.tenant))
        .take(limit as usize)
        .map(|l| json!(l))
        .collect();
    Ok(EdgeResponse::json(200, json!({ "items": items })))
}

// ---- executions ----------------------------------------------------------------------------

async fn list_executions<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    req: &EdgeRequest,
    claims: &Claims,
) -> ApiResult {
    let query = |name: &str| {
        req.query
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let status = match query("status") {
        None => None,
        Some(raw) => Some(
            ExecutionStatus::parse(&raw.to_ascii_uppercase()).ok_or_else(|| {
                let known: Vec<_> = ExecutionStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::bad(
                    "invalid_status",
                    format!("unknown status {raw:?}; one of {}", known.join(", ")),
                )
            })?,
        ),
    };
    let limit = match query("limit") {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad(
                    "invalid_limit",
                    format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let cursor = query("cursor");
    let page = match app
        .backend
        .executions()
        .list(&claims.tenant, status, limit, cursor)
        .await
    {
        Ok(page) => page,
        // The limit was checked above: the store refuses only the cursor.
        Err(StoreError::InvalidInput { .. }) if cursor.is_some() => {
            return Err(ApiError::bad(
                "invalid_cursor",
                "cursor is not one this API handed out",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|r| execution_json(r, &app.manifest))
        .collect();
    Ok(EdgeResponse::json(
        200,
        json!({ "items": items, "next_cursor": page.next_cursor }),
    ))
}

/// The most ledger events one `GET /v1/executions/{id}` answers (its default: 100), so the
/// answer stays far below Lambda's 6 MB (an event's detail is at most 64 KiB).
pub const MAX_LEDGER_PAGE: u32 = 500;
const DEFAULT_LEDGER_PAGE: u32 = 100;

async fn get_execution<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    req: &EdgeRequest,
    claims: &Claims,
    id: &str,
) -> ApiResult {
    let limit = match req.query.get("limit") {
        None => DEFAULT_LEDGER_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LEDGER_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad(
                    "invalid_limit",
                    format!("limit must be a whole number from 1 to {MAX_LEDGER_PAGE}"),
                )
            })?,
    };
    let after = match req.query.get("ledger_cursor") {
        None => 0,
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            ApiError::bad(
                "invalid_cursor",
                "ledger_cursor is not one this API handed out",
            )
        })?,
    };
    let record = own_execution(app, claims, id).await?;
    let events = app.backend.ledger().events(&record.id).await?;
    let mut page = events.iter().filter(|e| e.seq > after);
    let ledger: Vec<Value> = page.by_ref().take(limit as usize).map(event_json).collect();
    let next = page.next().is_some().then(|| {
        let last = ledger
            .last()
            .and_then(|e| e["seq"].as_u64())
            .unwrap_or(after);
        last.to_string()
    });
    Ok(EdgeResponse::json(
        200,
        json!({
            "execution": execution_json(&record, &app.manifest),
            "ledger": ledger,
            "next_ledger_cursor": next,
        }),
    ))
}

/// The caller's execution `id`; a malformed id, a missing one and another tenant's all answer
/// the same 404.
async fn own_execution<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    claims: &Claims,
    id: &str,
) -> Result<ExecutionRecord, ApiError> {
    let not_found = || ApiError::NotFound(format!("no execution {id:?}"));
    let Ok(id) = ExecutionId::parse(id) else {
        return Err(not_found());
    };
    match app.backend.executions().get(&id).await? {
        Some(record) if record.tenant == claims.tenant => Ok(record),
        _ => Err(not_found()),
    }
}

/// An execution as the API shows it.
pub fn execution_json(r: &ExecutionRecord, manifest: &Manifest) -> Value {
    let stage_name = manifest
        .pipelines
        .get(&r.pipeline)
        .and_then(|p| p.stages.get(r.stage as usize))
        .map(|s| s.name.clone());
    json!({
        "id": r.id,
        "tenant": r.tenant,
        "source": r.source,
        "pipeline": r.pipeline,
        "run_key": r.run_key,
        "stage": r.stage,
        "stage_name": stage_name,
        "status": r.status.as_str(),
        "attempt_count": r.attempt_count,
        "blocked_reason": r.blocked_reason,
        "replay_of": r.replay_of,
        "not_before_ms": r.not_before.map(Timestamp::as_millis),
        "created_at_ms": r.created_at.as_millis(),
        "updated_at_ms": r.updated_at.as_millis(),
    })
}

/// A ledger event as the API shows it.
pub fn event_json(e: &LedgerEvent) -> Value {
    json!({
        "seq": e.seq,
        "at_ms": e.at.as_millis(),
        "kind": e.kind,
        "stage": e.stage,
        "detail": e.detail,
    })
}

// ---- replay --------------------------------------------------------------------------------

async fn replay<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    req: &EdgeRequest,
    claims: &Claims,
    id: &str,
) -> ApiResult {
    let body = json_object(&req.body)?;
    let reason = required_text(&body, "replay_reason")?;
    let original = own_execution(app, claims, id).await?;
    let pipeline = app
        .manifest
        .pipelines
        .get(&original.pipeline)
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "pipeline {} is no longer configured",
                original.pipeline
            ))
        })?;
    let stage = start_stage(pipeline, body.get("from_stage"))?;
    let stage_name = pipeline.stages.get(stage as usize).map(|s| s.name.clone());

    let executions = app.backend.executions();
    let ledger = app.backend.ledger();
    let original_events = ledger.events(&original.id).await?;
    let carried = carried_outputs(&app.manifest, pipeline, stage, &original_events)?;

    // The new execution's RECEIVED event: the payload and the outputs of the stages it skips
    // (the executor renders templates from them). Checked against the ledger's cap before
    // anything is written: too large is 413 with nothing stored, not a 503 and an orphan.
    let payload = original_events
        .iter()
        .find(|e| e.kind == EventKind::Received)
        .and_then(|e| e.detail.get("payload"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut received = json!({ "payload": payload, "replay_of": original.id });
    if !carried.is_empty() {
        received["stages"] = Value::Object(carried);
    }
    if let Err(StoreError::InvalidInput { detail, .. }) = stored_detail("replay", &received) {
        return Err(ApiError::TooLargeToStore(format!(
            "the replay's payload and carried stage outputs do not fit one ledger event \
             ({detail}); replay from an earlier stage"
        )));
    }

    let now = app.clock.now();
    let new_id = ExecutionId::random();
    let not_before = reserve_start(
        app,
        &original,
        original_events,
        claims,
        &reason,
        stage,
        &new_id,
        now,
    )
    .await?;

    append_next(ledger, &new_id, 1, EventKind::Received, None, received, now).await?;
    let new = NewExecution {
        id: new_id.clone(),
        tenant: original.tenant.clone(),
        source: original.source.clone(),
        pipeline: original.pipeline.clone(),
        run_key: original.run_key.clone(),
        replay_of: Some(original.id.clone()),
        not_before,
    };
    let mut record = match executions.create(new, now).await? {
        CreateOutcome::Created(record) => {
            app.metrics.count(
                telemetry::PIPELINE_RUNS,
                &[("Pipeline", record.pipeline.as_str())],
            );
            record
        }
        CreateOutcome::Existing(_) => {
            return Err(ApiError::Unavailable(format!(
                "execution id {new_id} collided"
            )))
        }
    };
    if stage > 0 {
        // Set before anything can run it: the executor acks a message whose stage is not the
        // record's.
        let change = ExecutionChange {
            stage: Some(stage),
            ..ExecutionChange::default()
        };
        match executions
            .update(&new_id, record.version, change, now)
            .await?
        {
            UpdateOutcome::Updated(updated) => record = updated,
            other => {
                return Err(ApiError::Unavailable(format!(
                    "setting the start stage of {new_id}: {other:?}"
                )))
            }
        }
    }

    // Then who asked and why.
    let mut created = json!({
        "requested_by": claims.subject,
        "replay_reason": reason,
        "replay_of": original.id,
        "from_stage": stage,
        "from_stage_name": stage_name,
    });
    if let Some(nb) = not_before {
        created["not_before_ms"] = json!(nb.as_millis());
    }
    let seq = append_next(
        ledger,
        &new_id,
        2,
        EventKind::ReplayCreated,
        Some(stage),
        created,
        now,
    )
    .await?;
    if let Some(nb) = not_before {
        append_next(
            ledger,
            &new_id,
            seq + 1,
            EventKind::Delayed,
            Some(stage),
            json!({
                "reason": "cooldown",
                "not_before_ms": nb.as_millis(),
                "delay_seconds": now.secs_until(nb),
            }),
            now,
        )
        .await?;
    }

    let message = StageMessage {
        execution_id: new_id.clone(),
        stage,
        not_before,
        wait: 0,
    };
    app.backend.queue().send(&message, now).await?;
    let queued = ExecutionChange {
        status: Some(ExecutionStatus::Queued),
        // Restated so the sweeper's index places the run after its cooldown.
        not_before: not_before.map(Some),
        ..ExecutionChange::default()
    };
    // The message is out: from here the replay runs whatever this write does. A conflict means
    // a worker already moved it on; a failure leaves it RECEIVED, which the sweeper re-queues
    // (a duplicate message is harmless). Either way the caller must not retry.
    match executions
        .update(&new_id, record.version, queued, now)
        .await
    {
        Ok(UpdateOutcome::Updated(_)) => {}
        Ok(other) => tracing::info!(outcome = ?other, "replay moved on before QUEUED"),
        Err(e) => tracing::warn!(
            error = &e as &dyn std::error::Error,
            "replay queued but not marked QUEUED"
        ),
    }
    tracing::info!(
        replay_of = %original.id,
        execution_id = %new_id,
        requested_by = %claims.subject,
        stage,
        delayed = not_before.is_some(),
        "replay accepted"
    );

    let mut answer = json!({
        "execution_id": new_id,
        "replay_of": original.id,
        "status": if not_before.is_some() { "delayed" } else { "accepted" },
        "stage": stage,
    });
    if let Some(nb) = not_before {
        answer["not_before_ms"] = json!(nb.as_millis());
        answer["delay_seconds"] = json!(now.secs_until(nb));
    }
    Ok(EdgeResponse::json(202, answer))
}

/// How many times a replay recomputes its start after losing the original's next sequence
/// number to another writer (a concurrent replay, or the original's own worker).
const RESERVE_TRIES: usize = 64;

/// Reserves the replay's start: the cooldown after the latest attempt known from `events`, or
/// now, recorded as REPLAY_REQUESTED at the sequence number after `events` (a conditional
/// write). When another writer took that number, the ledger is read again and the start
/// recomputed from what it wrote. The start, when it is later than `now`.
#[allow(clippy::too_many_arguments)]
async fn reserve_start<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    original: &ExecutionRecord,
    mut events: Vec<LedgerEvent>,
    claims: &Claims,
    reason: &str,
    stage: u32,
    new_id: &ExecutionId,
    now: Timestamp,
) -> Result<Option<Timestamp>, ApiError> {
    let ledger = app.backend.ledger();
    for _ in 0..RESERVE_TRIES {
        let next_start = app
            .config
            .retry
            .next_attempt_at(latest_attempt_start(original, &events));
        let not_before = (now < next_start).then_some(next_start);
        let mut requested = json!({
            "requested_by": claims.subject,
            "replay_reason": reason,
            "replay_execution_id": new_id,
            "from_stage": stage,
        });
        if let Some(nb) = not_before {
            requested["not_before_ms"] = json!(nb.as_millis());
        }
        let event = LedgerEvent {
            execution_id: original.id.clone(),
            seq: events.last().map_or(1, |e| e.seq + 1),
            at: now,
            kind: EventKind::ReplayRequested,
            stage: None,
            detail: requested,
        };
        match ledger.append(event).await? {
            AppendOutcome::Appended => return Ok(not_before),
            AppendOutcome::SeqTaken(_) => events = ledger.events(&original.id).await?,
        }
    }
    Err(ApiError::Unavailable(format!(
        "the ledger of {} kept changing; replay again",
        original.id
    )))
}

/// The start of the latest whole-pipeline attempt known from `original` and its ledger: its
/// own start (creation, or the delayed start recorded when it was itself created by a replay)
/// and the scheduled start of every replay already requested from it.
fn latest_attempt_start(original: &ExecutionRecord, events: &[LedgerEvent]) -> Timestamp {
    let scheduled = |e: &LedgerEvent| {
        e.detail
            .get("not_before_ms")
            .and_then(Value::as_i64)
            .map_or(e.at, |ms| Timestamp::from_millis(ms).max(e.at))
    };
    events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::ReplayRequested | EventKind::ReplayCreated
            )
        })
        .map(scheduled)
        .fold(original.created_at, Timestamp::max)
}

/// The outputs of the stages before `from`, from the original's ledger: what the executor would
/// have had, had it not skipped them. A skipped stage whose output a later stage reads but the
/// original never produced makes the replay impossible from `from`.
fn carried_outputs(
    manifest: &Manifest,
    pipeline: &PipelineSpec,
    from: u32,
    events: &[LedgerEvent],
) -> Result<Map<String, Value>, ApiError> {
    let from = from as usize;
    let mut outputs = Map::new();
    for event in events {
        match event.kind {
            // The original may itself be a replay that carried outputs.
            EventKind::Received => {
                if let Some(Value::Object(stages)) = event.detail.get("stages") {
                    outputs.extend(stages.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            EventKind::ToolSucceeded => {
                let name = event
                    .detail
                    .get("stage_name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        let index = usize::try_from(event.stage?).ok()?;
                        Some(pipeline.stages.get(index)?.name.clone())
                    });
                if let (Some(name), Some(output)) = (name, event.detail.get("output")) {
                    outputs.insert(name, output.clone());
                }
            }
            _ => {}
        }
    }
    let skipped = &pipeline.stages[..from.min(pipeline.stages.len())];
    let carried: Map<String, Value> = outputs
        .into_iter()
        .filter(|(name, _)| skipped.iter().any(|s| s.name == *name))
        .collect();
    for stage in pipeline.stages.iter().skip(from) {
        let Some((_, tool)) = manifest.tool_for(stage) else {
            continue;
        };
        let missing = tool
            .stage_references()
            .into_iter()
            .find(|name| skipped.iter().any(|s| s.name == *name) && !carried.contains_key(*name));
        if let Some(name) = missing {
            return Err(ApiError::MissingStageOutput(format!(
                "stage {} reads the output of stage {name}, which the original never \
                 completed; replay from an earlier stage",
                stage.name
            )));
        }
    }
    Ok(carried)
}

/// The stage a replay starts at: `from_stage` as a stage name or an index, default 0.
fn start_stage(pipeline: &PipelineSpec, from: Option<&Value>) -> Result<u32, ApiError> {
    let count = pipeline.stages.len();
    let invalid = || {
        let names: Vec<_> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
        ApiError::bad(
            "invalid_stage",
            format!(
                "from_stage must name a stage ({}) or be an index below {count}",
                names.join(", ")
            ),
        )
    };
    let index = match from {
        None | Some(Value::Null) => Some(0),
        Some(Value::Number(n)) => n.as_u64().and_then(|i| usize::try_from(i).ok()),
        Some(Value::String(s)) => pipeline
            .position(s)
            .or_else(|| s.trim().parse::<usize>().ok()),
        Some(_) => None,
    };
    match index {
        Some(i) if i < count => u32::try_from(i).map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

/// Appends an event at `seq`; if another writer took that number, re-reads the ledger and
/// tries once more at its end. The sequence number written.
async fn append_next<L: Ledger>(
    ledger: &L,
    id: &ExecutionId,
    seq: u64,
    kind: EventKind,
    stage: Option<u32>,
    detail: Value,
    at: Timestamp,
) -> Result<u64, ApiError> {
    let mut event = LedgerEvent {
        execution_id: id.clone(),
        seq,
        at,
        kind,
        stage,
        detail,
    };
    if let AppendOutcome::Appended = ledger.append(event.clone()).await? {
        return Ok(event.seq);
    }
    event.seq = ledger.events(id).await?.last().map_or(1, |e| e.seq + 1);
    match ledger.append(event.clone()).await? {
        AppendOutcome::Appended => Ok(event.seq),
        AppendOutcome::SeqTaken(_) => Err(ApiError::Unavailable(format!("ledger of {id} is busy"))),
    }
}

// ---- connectors and kill switches ----------------------------------------------------------

async fn connector_view<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    claims: &Claims,
    id: &str,
) -> ApiResult {
    let connector = known_connector(&app.manifest, id)?;
    let limit = app
        .manifest
        .connectors
        .get(&connector)
        .map_or(0, |spec| spec.concurrency_limit);
    let store = app.backend.connectors();
    let state: ConnectorState = store.state(&connector).await?;
    // The state item carries copies of its switches once initialized; before that (first use,
    // or after TTL removed an idle item) the durable records are the truth.
    let switches: Vec<KillSwitch> = if state.initialized {
        state.switches.clone()
    } else {
        store
            .switches()
            .await?
            .into_iter()
            .filter(|s| s.target.applies_to_connector(&connector))
            .collect()
    };
    let switches: Vec<Value> = switches
        .iter()
        .filter(|s| visible_to(s, &claims.tenant))
        .map(switch_json)
        .collect();
    let probe = state
        .probe
        .as_ref()
        .map(|p| json!({ "holder": p.holder, "expires_at_ms": p.expires_at.as_millis() }));
    Ok(EdgeResponse::json(
        200,
        json!({
            "connector": connector,
            "breaker": {
                "state": state.breaker.as_str(),
                "consecutive_failures": state.consecutive_failures,
                "opened_at_ms": state.opened_at.map(Timestamp::as_millis),
                "open_until_ms": state.open_until.map(Timestamp::as_millis),
                "probe": probe,
            },
            "in_flight": state.slots.in_flight,
            "limit": state.effective_limit(limit),
            "limit_override": state.limit_override.as_ref().map(limit_override_json),
            "switches": switches,
        }),
    ))
}

async fn list_switches<B: Backend, T: ToolClient>(app: &App<B, T>, claims: &Claims) -> ApiResult {
    let items: Vec<Value> = app
        .backend
        .connectors()
        .switches()
        .await?
        .iter()
        .filter(|s| visible_to(s, &claims.tenant))
        .map(switch_json)
        .collect();
    Ok(EdgeResponse::json(200, json!({ "items": items })))
}

fn known_connector(manifest: &Manifest, connector: &str) -> Result<ConnectorId, ApiError> {
    ConnectorId::parse(connector)
        .ok()
        .filter(|c| manifest.connectors.contains_key(c))
        .ok_or_else(|| ApiError::NotFound(format!("no connector {connector:?}")))
}

fn connector_target(manifest: &Manifest, connector: &str) -> Result<SwitchTarget, ApiError> {
    let connector = known_connector(manifest, connector)?;
    Ok(SwitchTarget::Connector { connector })
}

fn tool_target(manifest: &Manifest, connector: &str, tool: &str) -> Result<SwitchTarget, ApiError> {
    let connector = known_connector(manifest, connector)?;
    let tool = ToolName::parse(tool)
        .ok()
        .filter(|t| {
            manifest
                .connectors
                .get(&connector)
                .is_some_and(|spec| spec.tools.contains_key(t))
        })
        .ok_or_else(|| ApiError::NotFound(format!("no tool {tool:?} on connector {connector}")))?;
    Ok(SwitchTarget::Tool { connector, tool })
}

fn tenant_target(claims: &Claims, tenant: &str) -> Result<SwitchTarget, ApiError> {
    if tenant != claims.tenant.as_str() {
        return Err(ApiError::Forbidden(
            "a tenant kill switch may only target the caller's own tenant".into(),
        ));
    }
    Ok(SwitchTarget::Tenant {
        tenant: claims.tenant.clone(),
    })
}

async fn put_or_delete_switch<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    req: &EdgeRequest,
    claims: &Claims,
    target: SwitchTarget,
) -> ApiResult {
    let connectors: Vec<ConnectorId> = app.manifest.connectors.keys().cloned().collect();
    let store = app.backend.connectors();
    let key = target.key();
    if req.method.eq_ignore_ascii_case("DELETE") {
        if !store.clear_switch(&target, &connectors).await? {
            return Err(ApiError::NotFound(format!("no kill switch {key}")));
        }
        tracing::info!(switch = %key, cleared_by = %claims.subject, "kill switch cleared");
        return Ok(EdgeResponse::json(
            200,
            json!({ "cleared": true, "key": key }),
        ));
    }
    let body = json_object(&req.body)?;
    let reason = required_text(&body, "reason")?;
    let switch = KillSwitch {
        target,
        set_by: claims.subject.clone(),
        set_at: app.clock.now(),
        reason,
    };
    store.set_switch(switch.clone(), &connectors).await?;
    tracing::info!(
        switch = %key,
        set_by = %switch.set_by,
        reason = %switch.reason,
        "kill switch set"
    );
    Ok(EdgeResponse::json(
        200,
        json!({ "switch": switch_json(&switch) }),
    ))
}

async fn put_or_delete_limit<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    req: &EdgeRequest,
    claims: &Claims,
    connector: ConnectorId,
) -> ApiResult {
    let store = app.backend.connectors();
    if req.method.eq_ignore_ascii_case("DELETE") {
        store.set_limit(&connector, None).await?;
        tracing::info!(
            connector = %connector,
            cleared_by = %claims.subject,
            "connector limit override cleared"
        );
        return Ok(EdgeResponse::json(200, json!({ "cleared": true })));
    }
    let body = json_object(&req.body)?;
    let limit = required_limit(&body)?;
    let reason = required_text(&body, "reason")?;
    let o = LimitOverride {
        limit,
        set_by: claims.subject.clone(),
        set_at: app.clock.now(),
        reason,
    };
    store.set_limit(&connector, Some(o.clone())).await?;
    tracing::info!(
        connector = %connector,
        limit = o.limit,
        set_by = %o.set_by,
        reason = %o.reason,
        "connector limit override set"
    );
    let mut answer = limit_override_json(&o);
    answer["connector"] = json!(connector);
    Ok(EdgeResponse::json(200, answer))
}

/// A limit override as the API shows it.
fn limit_override_json(o: &LimitOverride) -> Value {
    json!({
        "limit": o.limit,
        "set_by": o.set_by,
        "set_at_ms": o.set_at.as_millis(),
        "reason": o.reason,
    })
}

/// Whether `tenant` may see `switch`: every switch except other tenants' tenant switches.
fn visible_to(switch: &KillSwitch, tenant: &TenantId) -> bool {
    !matches!(&switch.target, SwitchTarget::Tenant { tenant: t } if t != tenant)
}

/// A kill switch as the API shows it.
pub fn switch_json(s: &KillSwitch) -> Value {
    let mut v = json!({
        "key": s.target.key(),
        "set_by": s.set_by,
        "set_at_ms": s.set_at.as_millis(),
        "reason": s.reason,
    });
    match &s.target {
        SwitchTarget::Connector { connector } => {
            v["scope"] = json!("connector");
            v["connector"] = json!(connector);
        }
        SwitchTarget::Tool { connector, tool } => {
            v["scope"] = json!("tool");
            v["connector"] = json!(connector);
            v["tool"] = json!(tool);
        }
        SwitchTarget::Tenant { tenant } => {
            v["scope"] = json!("tenant");
            v["tenant"] = json!(tenant);
        }
    }
    v
}

// ---- request parsing -----------------------------------------------------------------------

/// The body as a JSON object; an empty body is an empty object.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad(
            "invalid_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad(
            "invalid_json",
            format!("the body is not JSON: {e}"),
        )),
    }
}

/// A required, non-blank text field of at most [`MAX_REASON_CHARS`] characters, trimmed.
fn required_text(body: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::bad(
            "missing_field",
            format!("{field} is required"),
        )),
        Some(Value::String(s)) if s.trim().is_empty() => Err(ApiError::bad(
            "missing_field",
            format!("{field} must not be empty"),
        )),
        Some(Value::String(s)) if s.trim().chars().count() > MAX_REASON_CHARS => {
            Err(ApiError::bad(
                "invalid_field",
                format!("{field} is longer than {MAX_REASON_CHARS} characters"),
            ))
        }
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(_) => Err(ApiError::bad(
            "invalid_field",
            format!("{field} must be a string"),
        )),
    }
}

/// The required `limit` field: an integer from 1 to [`MAX_LIMIT_OVERRIDE`].
fn required_limit(body: &Map<String, Value>) -> Result<u32, ApiError> {
    match body.get("limit") {
        None | Some(Value::Null) => Err(ApiError::bad("missing_field", "limit is required")),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_LIMIT_OVERRIDE)).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                ApiError::bad(
                    "invalid_field",
                    format!("limit must be an integer from 1 to {MAX_LIMIT_OVERRIDE}"),
                )
            }),
    }
}

/// The path's non-empty segments, percent-decoded; `None` if one does not decode to UTF-8.
fn path_segments(path: &str) -> Option<Vec<String>> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::{json, Value};

    use super::*;
    use crate::adapters::backend::MemoryBackend;
    use crate::config::ReliabilityConfig;
    use crate::domain::connector::{Admission, AdmissionRequest, BreakerSettings, BreakerSignal};
    use crate::domain::ids::{HolderId, PipelineName, RunKey, SourceId};
    use crate::domain::tool::{ToolOutcome, ToolRequest};
    use crate::manifest::Secrets;
    use crate::FakeClock;

    const MANIFEST: &str = r#"
sources:
  gh:
    scheme: github
    secret_env: GH_SECRET
    tenant: { value: acme }
    run_key: [ { pointer: /after } ]
    pipeline: review
connectors:
  crm:
    base_url: http://127.0.0.1:9
    concurrency_limit: 3
    breaker: { failure_threshold: 2, cooldown_seconds: 60 }
    tools:
      create_lead: { method: POST, path: /leads }
      notify: { method: POST, path: /notify, body: { lead: "{{stages.lead/id}}" } }
  mail:
    base_url: http://127.0.0.1:9
    tools:
      send: { method: POST, path: /send }
pipelines:
  review:
    stages:
      - { name: lead, connector: crm, tool: create_lead }
      - { name: ping, connector: crm, tool: notify }
"#;

    const T0: i64 = 1_700_000_000_000;

    /// The API never calls tools.
    struct NoTools;

    impl ToolClient for NoTools {
        async fn call(&self, _request: &ToolRequest) -> ToolOutcome {
            panic!("the API called a tool")
        }
    }

    struct Fixture {
        app: App<MemoryBackend, NoTools>,
        clock: FakeClock,
    }

    fn fixture() -> Fixture {
        let clock = FakeClock::at(Timestamp::from_millis(T0));
        let shared: Arc<dyn crate::Clock> = Arc::new(clock.clone());
        let app = App::new(
            MemoryBackend::new(shared.clone()),
            NoTools,
            shared,
            Manifest::parse(MANIFEST, "test.yaml").expect("manifest"),
            Secrets::default(),
            ReliabilityConfig::from_lookup(|_| None).expect("config"),
        );
        Fixture { app, clock }
    }

    fn claims(tenant: &str) -> Claims {
        Claims {
            tenant: TenantId::parse(tenant).unwrap(),
            subject: format!("user-of-{tenant}"),
        }
    }

    fn request(method: &str, path_and_query: &str, who: Option<&str>, body: &str) -> EdgeRequest {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let query: BTreeMap<String, String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        EdgeRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            headers: BTreeMap::new(),
            body: body.as_bytes().to_vec(),
            claims: who.map(claims),
        }
    }

    impl Fixture {
        async fn call(
            &self,
            method: &str,
            path: &str,
            who: Option<&str>,
            body: Value,
        ) -> EdgeResponse {
            let body = if body.is_null() {
                String::new()
            } else {
                body.to_string()
            };
            handle(&self.app, request(method, path, who, &body)).await
        }

        /// An execution of `tenant` created now, with a RECEIVED event holding its payload,
        /// moved to `status`.
        async fn seed(
            &self,
            tenant: &str,
            run_key: &str,
            status: ExecutionStatus,
        ) -> ExecutionRecord {
            let now = self.app.clock.now();
            let new = NewExecution {
                id: ExecutionId::random(),
                tenant: TenantId::parse(tenant).unwrap(),
                source: SourceId::parse("gh").unwrap(),
                pipeline: PipelineName::parse("review").unwrap(),
                run_key: RunKey::parse(run_key).unwrap(),
                replay_of: None,
                not_before: None,
            };
            let store = self.app.backend.executions();
            let CreateOutcome::Created(mut record) = store.create(new, now).await.unwrap() else {
                panic!("fresh id");
            };
            self.app
                .backend
                .ledger()
                .append(LedgerEvent {
                    execution_id: record.id.clone(),
                    seq: 1,
                    at: now,
                    kind: EventKind::Received,
                    stage: None,
                    detail: json!({ "payload": { "after": run_key, "n": 7 } }),
                })
                .await
                .unwrap();
            if status != ExecutionStatus::Received {
                let change = ExecutionChange {
                    status: Some(status),
                    ..ExecutionChange::default()
                };
                let UpdateOutcome::Updated(r) = store
                    .update(&record.id, record.version, change, now)
                    .await
                    .unwrap()
                else {
                    panic!("seed update");
                };
                record = r;
            }
            record
        }

        async fn events(&self, id: &str) -> Vec<LedgerEvent> {
            let id = ExecutionId::parse(id).unwrap();
            self.app.backend.ledger().events(&id).await.unwrap()
        }

        async fn record(&self, id: &str) -> ExecutionRecord {
            let id = ExecutionId::parse(id).unwrap();
            self.app
                .backend
                .executions()
                .get(&id)
                .await
                .unwrap()
                .unwrap()
        }

        async fn visible_messages(&self) -> Vec<StageMessage> {
            let got = self.app.backend.queue.receive(10, 30, 0).await.unwrap();
            for m in &got {
                self.app.backend.queue.ack(&m.receipt).await.unwrap();
            }
            got.into_iter().map(|m| m.message).collect()
        }
    }

    fn code(r: &EdgeResponse) -> &str {
        r.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    #[tokio::test]
    async fn health_without_a_token_answers_only_the_status() {
        let f = fixture();
        for who in [None, Some("acme")] {
            // A token on /health changes nothing (API Gateway passes none there anyway).
            let r = f.call("GET", "/health", who, Value::Null).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.body, json!({"status": "ok"}));
        }
        assert_eq!(
            f.call("POST", "/health", None, Value::Null).await.status,
            405
        );
        let r = f.call("GET", "/v1/health", None, Value::Null).await;
        assert_eq!((r.status, code(&r)), (401, "unauthorized"));
    }

    #[tokio::test]
    async fn health_details_need_a_token() {
        let f = fixture();
        let r = f.call("GET", "/v1/health", Some("acme"), Value::Null).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["status"], "ok");
        assert_eq!(r.body["time_ms"], T0);
        assert_eq!(r.body["checked_at_ms"], T0);
        assert_eq!(r.body["connectors"], 2);
        assert_eq!(r.body["pipelines"], 1);
        assert_eq!(r.body["breakers"].as_array().map(Vec::len), Some(2));
        assert_eq!(r.body["breakers"][0]["state"], "CLOSED");
        assert_eq!(r.body["alarms"]["source"], "off");
        assert_eq!(r.body["alerts"]["enabled"], false);
        assert!(r.body.get("error").is_none());
        // Inside the window the check is the cached one; the time moves on.
        f.clock.advance_secs(4);
        let r = f.call("GET", "/v1/health", Some("acme"), Value::Null).await;
        assert_eq!(
            (r.body["time_ms"].clone(), r.body["checked_at_ms"].clone()),
            (json!(T0 + 4_000), json!(T0))
        );
        f.clock.advance_secs(1);
        let r = f.call("GET", "/v1/health", Some("acme"), Value::Null).await;
        assert_eq!(r.body["checked_at_ms"], T0 + 5_000);
        let r = f.call("PUT", "/v1/health", Some("acme"), Value::Null).await;
        assert_eq!(r.status, 405);
    }

    #[tokio::test]
    async fn an_open_breaker_degrades_health_once_the_cache_window_ends() {
        let f = fixture();
        let r = f.call("GET", "/health", None, Value::Null).await;
        assert_eq!(r.body, json!({"status": "ok"}));
        let store = f.app.backend.connectors();
        let settings: BreakerSettings = admission_request(&f, "crm").settings;
        for _ in 0..2 {
            let Admission::Admitted(ticket) =
                store.admit(&admission_request(&f, "crm")).await.unwrap()
            else {
                panic!("admitted");
            };
            let unhealthy = BreakerSignal::Unhealthy;
            store
                .settle(&ticket, unhealthy, &settings, f.app.clock.now())
                .await
                .unwrap();
        }
        let r = f.call("GET", "/health", None, Value::Null).await;
        assert_eq!(r.body, json!({"status": "ok"}), "cached");
        f.clock.advance_secs(reliability::HEALTH_CACHE_SECS);
        let r = f.call("GET", "/health", None, Value::Null).await;
        assert_eq!(r.body, json!({"status": "degraded"}));
        let r = f.call("GET", "/v1/health", Some("acme"), Value::Null).await;
        assert_eq!(r.body["status"], "degraded");
        assert_eq!(r.body["breakers"][0]["state"], "OPEN");
    }

    #[tokio::test]
    async fn reliability_reads_only_the_callers_tenant() {
        let f = fixture();
        f.seed("acme", "k1", ExecutionStatus::Succeeded).await;
        f.seed("acme", "k2", ExecutionStatus::Blocked).await;
        f.seed("acme", "k3", ExecutionStatus::Running).await;
        f.seed("globex", "k1", ExecutionStatus::Blocked).await;
        let r = f
            .call("GET", "/v1/reliability", Some("acme"), Value::Null)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["tenant"], "acme");
        assert_eq!(r.body["total_runs"], 3);
        assert_eq!(r.body["blocked_runs"], 1);
        assert_eq!(r.body["in_progress_runs"], 1);
        assert_eq!(r.body["failure_rate"], 0.5);
        assert_eq!(r.body["slo"]["failure_rate"]["met"], false);
        assert_eq!(r.body["slo"]["failure_rate"]["target"], 0.2);
        assert_eq!(r.body["breakers"].as_array().map(Vec::len), Some(2));
        let r = f
            .call("GET", "/v1/reliability", Some("globex"), Value::Null)
            .await;
        assert_eq!(
            (r.body["total_runs"].clone(), r.body["failure_rate"].clone()),
            (json!(1), json!(1.0))
        );
        let r = f
            .call("POST", "/v1/reliability", Some("acme"), Value::Null)
            .await;
        assert_eq!(r.status, 405);
    }

    #[tokio::test]
    async fn reliability_reads_at_most_the_bound_of_ledgers_failed_runs_first() {
        let f = fixture();
        // The 5 oldest runs are blocked and their ledgers say why; 60 newer ones succeeded.
        for i in 0..5 {
            let r = f
                .seed("acme", &format!("b{i}"), ExecutionStatus::Blocked)
                .await;
            let blocked = LedgerEvent {
                execution_id: r.id.clone(),
                seq: 2,
                at: f.app.clock.now(),
                kind: EventKind::Blocked,
                stage: Some(0),
                detail: json!({"reason": "http_404", "attempt_count": 1}),
            };
            f.app.backend.ledger().append(blocked).await.unwrap();
            f.clock.advance_secs(1);
        }
        for i in 0..60 {
            f.seed("acme", &format!("s{i}"), ExecutionStatus::Succeeded)
                .await;
            f.clock.advance_secs(1);
        }
        let r = f
            .call("GET", "/v1/reliability", Some("acme"), Value::Null)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["total_runs"], 65);
        assert_eq!(
            r.body["ledgers_read"],
            reliability::MAX_SUMMARY_LEDGER_READS
        );
        assert_eq!(r.body["blocked_runs"], 5);
        assert_eq!(
            r.body["failed_runs_with_trail"], 5,
            "the blocked ones were read"
        );
        assert_eq!(r.body["recovery_trail_ratio"], 1.0);
        assert_eq!(r.body["as_of_ms"], f.app.clock.now().as_millis());
    }

    #[tokio::test]
    async fn dead_letters_show_the_callers_tenant_and_tenantless_ones() {
        use crate::alerts::{AlertType, DeadLetter};
        use crate::ports::AlertStore;
        let f = fixture();
        for (n, tenant) in [Some("acme"), Some("globex"), None].into_iter().enumerate() {
            let letter = DeadLetter {
                id: format!("dl-{n}"),
                at: Timestamp::from_millis(T0 + n as i64),
                alert_type: AlertType::RunFailed,
                tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
                payload: json!({"n": n}),
                error: "status 500".into(),
                attempts: 3,
            };
            f.app
                .backend
                .alerts()
                .push_dead_letter(letter, 200)
                .await
                .unwrap();
        }
        let r = f
            .call("GET", "/v1/alerts/dead-letters", Some("acme"), Value::Null)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let ids: Vec<&str> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["dl-2", "dl-0"], "newest first, globex's hidden");
        let r = f
            .call(
                "GET",
                "/v1/alerts/dead-letters?limit=1",
                Some("acme"),
                Value::Null,
            )
            .await;
        assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
        let r = f
            .call(
                "GET",
                "/v1/alerts/dead-letters?limit=0",
                Some("acme"),
                Value::Null,
            )
            .await;
        assert_eq!(
            (r.status, &r.body["error"]["code"]),
            (400, &json!("invalid_limit"))
        );
    }

    #[tokio::test]
    async fn every_v1_route_needs_claims() {
        let f = fixture();
        let exec = f.seed("acme", "k1", ExecutionStatus::Queued).await;
        let id = exec.id.as_str();
        let routes = [
            ("GET", "/v1/executions".to_owned()),
            ("GET", "/v1/reliability".to_owned()),
            ("GET", "/v1/alerts/dead-letters".to_owned()),
            ("GET", format!("/v1/executions/{id}")),
            ("POST", format!("/v1/executions/{id}/replay")),
            ("GET", "/v1/connectors/crm".to_owned()),
            ("PUT", "/v1/connectors/crm/limit".to_owned()),
            ("DELETE", "/v1/connectors/crm/limit".to_owned()),
            ("GET", "/v1/kill-switches".to_owned()),
            ("PUT", "/v1/kill-switches/connectors/crm".to_owned()),
            ("DELETE", "/v1/kill-switches/connectors/crm".to_owned()),
            (
                "PUT",
                "/v1/kill-switches/connectors/crm/tools/notify".to_owned(),
            ),
            (
                "DELETE",
                "/v1/kill-switches/connectors/crm/tools/notify".to_owned(),
            ),
            ("PUT", "/v1/kill-switches/tenants/acme".to_owned()),
            ("DELETE", "/v1/kill-switches/tenants/acme".to_owned()),
            ("GET", "/v1/no-such-route".to_owned()),
        ];
        let body = json!({ "reason": "r", "replay_reason": "r", "tenant": "acme", "limit": 5 });
        for (method, path) in routes {
            let r = f.call(method, &path, None, body.clone()).await;
            assert_eq!(
                (r.status, code(&r)),
                (401, "unauthorized"),
                "{method} {path}"
            );
        }
        // Nothing was written.
        assert_eq!(f.events(id).await.len(), 1);
        assert!(f
            .app
            .backend
            .connectors()
            .switches()
            .await
            .unwrap()
            .is_empty());
        let crm = ConnectorId::parse("crm").unwrap();
        let state = f.app.backend.connectors().state(&crm).await.unwrap();
        assert_eq!(state.limit_override, None);
        assert_eq!(f.app.backend.queue.len(), 0);
    }

    #[tokio::test]
    async fn unknown_routes_and_wrong_methods() {
        let f = fixture();
        let who = Some("acme");
        let r = f.call("GET", "/v2/executions", who, Value::Null).await;
        assert_eq!((r.status, code(&r)), (404, "not_found"));
        let r = f
            .call("GET", "/v1/executions/x/y/z", who, Value::Null)
            .await;
        assert_eq!((r.status, code(&r)), (404, "not_found"));
        let r = f.call("DELETE", "/v1/executions", who, Value::Null).await;
        assert_eq!((r.status, code(&r)), (405, "method_not_allowed"));
        let r = f
            .call("GET", "/v1/executions/exe_1/replay", who, Value::Null)
            .await;
        assert_eq!(r.status, 405);
        let r = f
            .call("POST", "/v1/kill-switches/connectors/crm", who, Value::Null)
            .await;
        assert_eq!(r.status, 405);
        let r = f.call("GET", "/v1/connectors/%zz", who, Value::Null).await;
        assert_eq!(r.status, 404);
        // A trailing slash and percent-encoding are tolerated.
        let r = f
            .call("GET", "/v1/connectors/%63rm/", who, Value::Null)
            .await;
        assert_eq!(r.status, 200);
    }

    #[tokio::test]
    async fn list_filters_by_status_and_pages_newest_first() {
        let f = fixture();
        let mut queued = Vec::new();
        for i in 0..5 {
            queued.push(
                f.seed("acme", &format!("q{i}"), ExecutionStatus::Queued)
                    .await,
            );
            f.clock.advance_secs(1);
        }
        f.seed("acme", "r", ExecutionStatus::Running).await;
        f.seed("globex", "g", ExecutionStatus::Queued).await;

        let r = f
            .call("GET", "/v1/executions", Some("acme"), Value::Null)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["items"].as_array().unwrap().len(), 6);
        assert!(r.body["next_cursor"].is_null());
        assert!(r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["tenant"] == "acme"));

        let mut seen = Vec::new();
        let mut path = "/v1/executions?status=queued&limit=2".to_owned();
        loop {
            let r = f.call("GET", &path, Some("acme"), Value::Null).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let items = r.body["items"].as_array().unwrap();
            assert!(items.len() <= 2);
            for item in items {
                assert_eq!(item["status"], "QUEUED");
                seen.push(item["id"].as_str().unwrap().to_owned());
            }
            match r.body["next_cursor"].as_str() {
                Some(cursor) => {
                    path = format!("/v1/executions?status=QUEUED&limit=2&cursor={cursor}")
                }
                None => break,
            }
        }
        let newest_first: Vec<String> = queued.iter().rev().map(|r| r.id.to_string()).collect();
        assert_eq!(seen, newest_first);

        // The execution JSON shape.
        let r = f
            .call("GET", "/v1/executions?limit=1", Some("globex"), Value::Null)
            .await;
        let item = &r.body["items"][0];
        assert_eq!(item["tenant"], "globex");
        assert_eq!(item["source"], "gh");
        assert_eq!(item["pipeline"], "review");
        assert_eq!(item["run_key"], "g");
        assert_eq!(item["stage"], 0);
        assert_eq!(item["stage_name"], "lead");
        assert_eq!(item["attempt_count"], 0);
        assert!(item["blocked_reason"].is_null());
        assert!(item["replay_of"].is_null());
        assert!(item["not_before_ms"].is_null());
        assert_eq!(item["created_at_ms"], T0 + 5_000);
        assert_eq!(item["updated_at_ms"], T0 + 5_000);
    }

    #[tokio::test]
    async fn list_by_a_rare_status_answers_an_empty_page_and_a_cursor_at_the_bound() {
        let f = fixture();
        let blocked = f.seed("acme", "old", ExecutionStatus::Blocked).await;
        f.clock.advance_secs(1);
        for i in 0..crate::ports::MAX_LIST_EVALUATED {
            f.seed("acme", &format!("r{i}"), ExecutionStatus::Running)
                .await;
        }
        let path = "/v1/executions?status=blocked&limit=5";
        let r = f.call("GET", path, Some("acme"), Value::Null).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["items"], json!([]));
        let cursor = r.body["next_cursor"].as_str().expect("a cursor").to_owned();
        let r = f
            .call(
                "GET",
                &format!("{path}&cursor={cursor}"),
                Some("acme"),
                Value::Null,
            )
            .await;
        let ids: Vec<&str> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [blocked.id.as_str()]);
        assert!(r.body["next_cursor"].is_null());
    }

    #[tokio::test]
    async fn list_refuses_bad_parameters() {
        let f = fixture();
        let who = Some("acme");
        for (path, expected) in [
            ("/v1/executions?status=paused", "invalid_status"),
            ("/v1/executions?limit=0", "invalid_limit"),
            ("/v1/executions?limit=101", "invalid_limit"),
            ("/v1/executions?limit=ten", "invalid_limit"),
            ("/v1/executions?cursor=garbage", "invalid_cursor"),
        ] {
            let r = f.call("GET", path, who, Value::Null).await;
            assert_eq!((r.status, code(&r)), (400, expected), "{path}");
        }
        let r = f
            .call("GET", "/v1/executions?limit=100&status=", who, Value::Null)
            .await;
        assert_eq!(r.status, 200);
    }

    #[tokio::test]
    async fn get_shows_own_executions_only() {
        let f = fixture();
        let mine = f.seed("acme", "k1", ExecutionStatus::Queued).await;
        let path = format!("/v1/executions/{}", mine.id);
        let r = f.call("GET", &path, Some("acme"), Value::Null).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["execution"]["id"], mine.id.as_str());
        assert_eq!(r.body["execution"]["status"], "QUEUED");
        let ledger = r.body["ledger"].as_array().unwrap();
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0]["seq"], 1);
        assert_eq!(ledger[0]["kind"], "RECEIVED");
        assert_eq!(ledger[0]["at_ms"], T0);
        assert_eq!(ledger[0]["detail"]["payload"]["n"], 7);
        assert_eq!(r.body["next_ledger_cursor"], Value::Null);

        // The ledger pages: 4 more events, pages of 2.
        for seq in 2..=5 {
            let event = LedgerEvent {
                execution_id: mine.id.clone(),
                seq,
                at: Timestamp::from_millis(T0),
                kind: EventKind::Deferred,
                stage: Some(0),
                detail: json!({}),
            };
            f.app.backend.ledger().append(event).await.unwrap();
        }
        let mut seqs = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..5 {
            let page_path = match &cursor {
                None => format!("{path}?limit=2"),
                Some(c) => format!("{path}?limit=2&ledger_cursor={c}"),
            };
            let r = f.call("GET", &page_path, Some("acme"), Value::Null).await;
            assert_eq!(r.status, 200);
            let ledger = r.body["ledger"].as_array().unwrap();
            assert!(ledger.len() <= 2);
            seqs.extend(ledger.iter().map(|e| e["seq"].as_u64().unwrap()));
            cursor = r.body["next_ledger_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        for bad in ["?limit=0", "?limit=501", "?ledger_cursor=x"] {
            let r = f
                .call("GET", &format!("{path}{bad}"), Some("acme"), Value::Null)
                .await;
            assert_eq!(r.status, 400, "{bad}");
        }

        // Another tenant sees exactly what it would for an id that does not exist.
        let theirs = f.call("GET", &path, Some("globex"), Value::Null).await;
        assert_eq!((theirs.status, code(&theirs)), (404, "not_found"));
        let missing = f
            .call(
                "GET",
                "/v1/executions/exe_nope",
                Some("globex"),
                Value::Null,
            )
            .await;
        assert_eq!(missing.status, 404);
        let strip = |r: &EdgeResponse| {
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .replace(mine.id.as_str(), "X")
                .replace("exe_nope", "X")
        };
        assert_eq!(strip(&theirs), strip(&missing));
        let malformed = f
            .call("GET", "/v1/executions/a%0Ab", Some("acme"), Value::Null)
            .await;
        assert_eq!(malformed.status, 404);
    }

    #[tokio::test]
    async fn replay_creates_a_linked_execution_and_audits_both_ledgers() {
        let f = fixture();
        let original = f.seed("acme", "k1", ExecutionStatus::Blocked).await;
        f.clock.advance_secs(1_000); // past the 900 s cooldown
        let body = json!({
            "replay_reason": "  connector fixed  ",
            "requested_by": "mallory",
            "tenant": "globex",
        });
        let path = format!("/v1/executions/{}/replay?tenant=globex", original.id);
        let r = f.call("POST", &path, Some("acme"), body).await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.body["status"], "accepted");
        assert_eq!(r.body["replay_of"], original.id.as_str());
        assert_eq!(r.body["stage"], 0);
        assert!(r.body.get("not_before_ms").is_none());
        let new_id = r.body["execution_id"].as_str().unwrap().to_owned();
        assert_ne!(new_id, original.id.as_str());
        assert!(new_id.starts_with("exe_"));

        let new = f.record(&new_id).await;
        assert_eq!(new.tenant, original.tenant);
        assert_eq!(new.source, original.source);
        assert_eq!(new.pipeline, original.pipeline);
        assert_eq!(new.run_key, original.run_key);
        assert_eq!(new.replay_of.as_ref(), Some(&original.id));
        assert_eq!(new.status, ExecutionStatus::Queued);
        assert_eq!(new.stage, 0);
        assert_eq!(new.not_before, None);

        let audit = f.events(original.id.as_str()).await;
        assert_eq!(audit.len(), 2);
        let requested = &audit[1];
        assert_eq!(
            (requested.seq, requested.kind),
            (2, EventKind::ReplayRequested)
        );
        assert_eq!(requested.detail["requested_by"], "user-of-acme");
        assert_eq!(requested.detail["replay_reason"], "connector fixed");
        assert_eq!(requested.detail["replay_execution_id"], new_id.as_str());

        let events = f.events(&new_id).await;
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Received, EventKind::ReplayCreated]);
        assert_eq!(events[0].seq, 1);
        assert_eq!(
            events[0].detail["payload"],
            json!({ "after": "k1", "n": 7 })
        );
        assert_eq!(events[1].seq, 2);
        assert_eq!(events[1].detail["requested_by"], "user-of-acme");
        assert_eq!(events[1].detail["replay_reason"], "connector fixed");
        assert_eq!(events[1].detail["replay_of"], original.id.as_str());

        assert_eq!(
            f.visible_messages().await,
            [StageMessage {
                execution_id: ExecutionId::parse(new_id.clone()).unwrap(),
                stage: 0,
                not_before: None,
                wait: 0
            }]
        );
        // The original is untouched apart from its ledger.
        assert_eq!(f.record(original.id.as_str()).await, original);
        // The replay is listed, linked.
        let r = f
            .call(
                "GET",
                &format!("/v1/executions/{new_id}"),
                Some("acme"),
                Value::Null,
            )
            .await;
        assert_eq!(r.body["execution"]["replay_of"], original.id.as_str());
    }

    #[tokio::test]
    async fn replay_inside_the_cooldown_is_delayed_and_successive_replays_are_spaced() {
        let f = fixture();
        let original = f.seed("acme", "k1", ExecutionStatus::Running).await;
        f.clock.advance_secs(100);
        let path = format!("/v1/executions/{}/replay", original.id);
        let r = f
            .call(
                "POST",
                &path,
                Some("acme"),
                json!({"replay_reason": "again"}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.body["status"], "delayed");
        let first_start = T0 + 900_000;
        assert_eq!(r.body["not_before_ms"], first_start);
        assert_eq!(r.body["delay_seconds"], 800);
        let first = r.body["execution_id"].as_str().unwrap().to_owned();
        let record = f.record(&first).await;
        assert_eq!(record.not_before, Some(Timestamp::from_millis(first_start)));
        assert_eq!(record.status, ExecutionStatus::Queued);
        let kinds: Vec<EventKind> = f.events(&first).await.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Received,
                EventKind::ReplayCreated,
                EventKind::Delayed
            ]
        );
        // The message waits for the cooldown.
        assert!(f.visible_messages().await.is_empty());
        assert_eq!(f.app.backend.queue.len(), 1);

        // A second replay of the same original is spaced after the first one.
        let r = f
            .call(
                "POST",
                &path,
                Some("acme"),
                json!({"replay_reason": "and again"}),
            )
            .await;
        assert_eq!(r.body["status"], "delayed");
        assert_eq!(r.body["not_before_ms"], first_start + 900_000);
        // So is a replay of the (delayed) replay.
        let path = format!("/v1/executions/{first}/replay");
        let r = f
            .call(
                "POST",
                &path,
                Some("acme"),
                json!({"replay_reason": "chain"}),
            )
            .await;
        assert_eq!(r.body["not_before_ms"], first_start + 900_000);

        f.clock.advance_secs(800);
        let due = f.visible_messages().await;
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].execution_id.as_str(), first);
    }

    #[tokio::test]
    async fn replay_from_a_later_stage() {
        let f = fixture();
        let original = f.seed("acme", "k1", ExecutionStatus::Failed).await;
        f.clock.advance_secs(10_000);
        let path = format!("/v1/executions/{}/replay", original.id);
        // Stage "ping" reads stage "lead"'s output, which the original never produced.
        let body = json!({"replay_reason": "retry notify", "from_stage": "ping"});
        let r = f.call("POST", &path, Some("acme"), body).await;
        assert_eq!((r.status, code(&r)), (409, "missing_stage_output"));
        assert_eq!(f.app.backend.queue.len(), 0);

        let succeeded = |seq, output: Value| LedgerEvent {
            execution_id: original.id.clone(),
            seq,
            at: f.app.clock.now(),
            kind: EventKind::ToolSucceeded,
            stage: Some(0),
            detail: json!({ "status": 201, "output": output }),
        };
        let ledger = f.app.backend.ledger();
        ledger
            .append(succeeded(2, json!({"id": 41})))
            .await
            .unwrap();
        ledger
            .append(succeeded(3, json!({"id": 42})))
            .await
            .unwrap();
        for from in [json!("ping"), json!(1), json!("1")] {
            let body = json!({"replay_reason": "retry notify", "from_stage": from});
            let r = f.call("POST", &path, Some("acme"), body).await;
            assert_eq!((r.status, &r.body["stage"]), (202, &json!(1)), "{from}");
            let id = r.body["execution_id"].as_str().unwrap().to_owned();
            let new = f.record(&id).await;
            assert_eq!((new.stage, new.status), (1, ExecutionStatus::Queued));
            // The skipped stage's latest output travels with the payload.
            let received = &f.events(&id).await[0];
            assert_eq!(received.detail["stages"], json!({"lead": {"id": 42}}));
            assert_eq!(received.detail["payload"]["after"], "k1");
        }
        // A replay from stage 0 carries no outputs.
        let body = json!({"replay_reason": "from the top"});
        let r = f.call("POST", &path, Some("acme"), body).await;
        let id = r.body["execution_id"].as_str().unwrap().to_owned();
        assert!(f.events(&id).await[0].detail.get("stages").is_none());
        // The later ones are spaced by the cooldown after the first.
        f.clock.advance_secs(3 * 900);
        let stages: Vec<u32> = f.visible_messages().await.iter().map(|m| m.stage).collect();
        assert_eq!(stages, [1, 1, 1, 0]);
        for from in [
            json!("nope"),
            json!(2),
            json!(-1),
            json!(1.5),
            json!(["ping"]),
        ] {
            let body = json!({"replay_reason": "x", "from_stage": from});
            let r = f.call("POST", &path, Some("acme"), body).await;
            assert_eq!((r.status, code(&r)), (400, "invalid_stage"), "{from}");
        }
    }

    #[tokio::test]
    async fn a_replay_too_large_for_the_ledger_is_413_and_stores_nothing() {
        let f = fixture();
        let now = f.app.clock.now();
        let tenant = TenantId::parse("acme").unwrap();
        let new = NewExecution {
            id: ExecutionId::random(),
            tenant: tenant.clone(),
            source: SourceId::parse("gh").unwrap(),
            pipeline: PipelineName::parse("review").unwrap(),
            run_key: RunKey::parse("big").unwrap(),
            replay_of: None,
            not_before: None,
        };
        let executions = f.app.backend.executions();
        let CreateOutcome::Created(original) = executions.create(new, now).await.unwrap() else {
            panic!("fresh id");
        };
        // A 30 KiB payload and a 40 KiB output of the stage a replay from "ping" skips: each
        // fits its own event, together they do not fit one.
        let ledger = f.app.backend.ledger();
        let event = |seq, kind, detail| LedgerEvent {
            execution_id: original.id.clone(),
            seq,
            at: now,
            kind,
            stage: (seq > 1).then_some(0),
            detail,
        };
        let payload = json!({ "after": "big", "blob": "p".repeat(30 * 1024) });
        let output = json!({ "id": 1, "blob": "o".repeat(40 * 1024) });
        let received = event(1, EventKind::Received, json!({ "payload": payload }));
        ledger.append(received).await.unwrap();
        let succeeded = event(2, EventKind::ToolSucceeded, json!({ "output": output }));
        ledger.append(succeeded).await.unwrap();
        f.clock.advance_secs(10_000);

        let path = format!("/v1/executions/{}/replay", original.id);
        let body = json!({"replay_reason": "retry notify", "from_stage": "ping"});
        let r = f.call("POST", &path, Some("acme"), body).await;
        assert_eq!(
            (r.status, code(&r)),
            (413, "payload_too_large"),
            "{}",
            r.body
        );
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("65536-byte limit"), "{message}");
        // Nothing stored: no execution besides the original, its ledger untouched, no message.
        let page = executions.list(&tenant, None, 10, None).await.unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(f.events(original.id.as_str()).await.len(), 2);
        assert_eq!(f.app.backend.queue.len(), 0);
        // From the top nothing is carried: it fits.
        let r = f
            .call("POST", &path, Some("acme"), json!({"replay_reason": "top"}))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }

    #[tokio::test]
    async fn replay_refusals_write_nothing() {
        let f = fixture();
        let original = f.seed("acme", "k1", ExecutionStatus::Blocked).await;
        let path = format!("/v1/executions/{}/replay", original.id);
        let cases = [
            (Some("acme"), "{}".to_owned(), 400, "missing_field"),
            (
                Some("acme"),
                json!({"replay_reason": "   "}).to_string(),
                400,
                "missing_field",
            ),
            (
                Some("acme"),
                json!({"replay_reason": null}).to_string(),
                400,
                "missing_field",
            ),
            (
                Some("acme"),
                json!({"replay_reason": 5}).to_string(),
                400,
                "invalid_field",
            ),
            (
                Some("acme"),
                json!({"replay_reason": "x".repeat(501)}).to_string(),
                400,
                "invalid_field",
            ),
            (Some("acme"), "{not json".to_owned(), 400, "invalid_json"),
            (Some("acme"), "[1]".to_owned(), 400, "invalid_json"),
            (
                Some("acme"),
                format!("{{\"replay_reason\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES)),
                413,
                "payload_too_large",
            ),
            (
                Some("globex"),
                json!({"replay_reason": "mine now"}).to_string(),
                404,
                "not_found",
            ),
            (
                None,
                json!({"replay_reason": "anon"}).to_string(),
                401,
                "unauthorized",
            ),
        ];
        for (who, body, status, expected) in cases {
            let r = handle(&f.app, request("POST", &path, who, &body)).await;
            assert_eq!((r.status, code(&r)), (status, expected), "{body:.40}");
        }
        let r = f
            .call(
                "POST",
                "/v1/executions/exe_unknown/replay",
                Some("acme"),
                json!({"replay_reason": "x"}),
            )
            .await;
        assert_eq!((r.status, code(&r)), (404, "not_found"));
        // A 500-character reason is fine.
        let r = f
            .call(
                "POST",
                &path,
                Some("acme"),
                json!({"replay_reason": "é".repeat(500)}),
            )
            .await;
        assert_eq!(r.status, 202);

        let list = f
            .call("GET", "/v1/executions", Some("acme"), Value::Null)
            .await;
        assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
        assert!(f
            .call("GET", "/v1/executions", Some("globex"), Value::Null)
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .is_empty());
        assert_eq!(f.events(original.id.as_str()).await.len(), 2);
        assert_eq!(f.app.backend.queue.len(), 1);
    }

    #[tokio::test]
    async fn replay_writes_after_a_concurrent_ledger_writer() {
        let f = fixture();
        let original = f.seed("acme", "k1", ExecutionStatus::Running).await;
        // The executor appends between our read and our write: simulated by a ledger event the
        // API has not seen. append_next re-reads and lands after it.
        let ledger = f.app.backend.ledger();
        let id = original.id.clone();
        let at = f.app.clock.now();
        let event = |seq| LedgerEvent {
            execution_id: id.clone(),
            seq,
            at,
            kind: EventKind::StageStarted,
            stage: Some(0),
            detail: json!({}),
        };
        ledger.append(event(2)).await.unwrap();
        let seq = append_next(
            ledger,
            &id,
            2,
            EventKind::ReplayRequested,
            None,
            json!({}),
            at,
        )
        .await
        .unwrap();
        assert_eq!(seq, 3);
        let kinds: Vec<EventKind> = f.events(id.as_str()).await.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Received,
                EventKind::StageStarted,
                EventKind::ReplayRequested
            ]
        );
    }

    #[tokio::test]
    async fn kill_switch_round_trip_with_audit_fields() {
        let f = fixture();
        let who = Some("acme");
        let put = "/v1/kill-switches/connectors/crm";
        let r = f.call("PUT", put, who, json!({})).await;
        assert_eq!((r.status, code(&r)), (400, "missing_field"));
        let r = f.call("PUT", put, who, Value::Null).await;
        assert_eq!((r.status, code(&r)), (400, "missing_field"));
        let r = f.call("PUT", put, who, json!({"reason": ""})).await;
        assert_eq!((r.status, code(&r)), (400, "missing_field"));
        let r = handle(&f.app, request("PUT", put, who, "{\"reason\": ")).await;
        assert_eq!(r.status, 400);

        f.clock.advance_secs(5);
        let body = json!({"reason": "vendor outage", "set_by": "mallory"});
        let r = f.call("PUT", put, who, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let expected = json!({
            "key": "connector#crm",
            "scope": "connector",
            "connector": "crm",
            "set_by": "user-of-acme",
            "set_at_ms": T0 + 5_000,
            "reason": "vendor outage",
        });
        assert_eq!(r.body["switch"], expected);

        let r = f.call("GET", "/v1/kill-switches", who, Value::Null).await;
        assert_eq!(r.body["items"], json!([expected.clone()]));
        let r = f.call("GET", "/v1/connectors/crm", who, Value::Null).await;
        assert_eq!(r.body["switches"], json!([expected]));
        let r = f.call("GET", "/v1/connectors/mail", who, Value::Null).await;
        assert_eq!(r.body["switches"], json!([]));

        // The switch refuses calls.
        let admission = f
            .app
            .backend
            .connectors()
            .admit(&admission_request(&f, "crm"))
            .await
            .unwrap();
        assert!(matches!(admission, Admission::Refused(s) if s.reason == "vendor outage"));

        let r = f.call("DELETE", put, who, Value::Null).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, json!({"cleared": true, "key": "connector#crm"}));
        let r = f.call("DELETE", put, who, Value::Null).await;
        assert_eq!((r.status, code(&r)), (404, "not_found"));
        let r = f.call("GET", "/v1/kill-switches", who, Value::Null).await;
        assert_eq!(r.body["items"], json!([]));

        // Tools.
        let tool = "/v1/kill-switches/connectors/crm/tools/notify";
        let r = f.call("PUT", tool, who, json!({"reason": "spam"})).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["switch"]["key"], "tool#crm#notify");
        assert_eq!(r.body["switch"]["tool"], "notify");
        assert_eq!(f.call("DELETE", tool, who, Value::Null).await.status, 200);

        for unknown in [
            "/v1/kill-switches/connectors/nope",
            "/v1/kill-switches/connectors/nope/tools/notify",
            "/v1/kill-switches/connectors/crm/tools/send",
            "/v1/kill-switches/connectors/a%23b",
        ] {
            let r = f.call("PUT", unknown, who, json!({"reason": "x"})).await;
            assert_eq!((r.status, code(&r)), (404, "not_found"), "{unknown}");
            let r = f.call("DELETE", unknown, who, Value::Null).await;
            assert_eq!(r.status, 404, "{unknown}");
        }
        assert!(f
            .app
            .backend
            .connectors()
            .switches()
            .await
            .unwrap()
            .is_empty());
    }

    fn admission_request(f: &Fixture, connector: &str) -> AdmissionRequest {
        AdmissionRequest {
            connector: ConnectorId::parse(connector).unwrap(),
            tool: ToolName::parse("create_lead").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            holder: HolderId::random(),
            limit: 3,
            slot_ttl_secs: 30,
            settings: f.app.manifest.connectors[&ConnectorId::parse(connector).unwrap()]
                .breaker_settings(&f.app.config.breaker),
            now: f.app.clock.now(),
        }
    }

    #[tokio::test]
    async fn tenant_switches_only_for_the_callers_tenant_and_hidden_from_others() {
        let f = fixture();
        let r = f
            .call(
                "PUT",
                "/v1/kill-switches/tenants/globex",
                Some("acme"),
                json!({"reason": "x"}),
            )
            .await;
        assert_eq!((r.status, code(&r)), (403, "forbidden"));
        let r = f
            .call(
                "DELETE",
                "/v1/kill-switches/tenants/globex",
                Some("acme"),
                Value::Null,
            )
            .await;
        assert_eq!(r.status, 403);

        let r = f
            .call(
                "PUT",
                "/v1/kill-switches/tenants/acme",
                Some("acme"),
                json!({"reason": "pause us"}),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["switch"]["scope"], "tenant");
        assert_eq!(r.body["switch"]["tenant"], "acme");
        let r = f
            .call(
                "PUT",
                "/v1/kill-switches/connectors/mail",
                Some("globex"),
                json!({"reason": "m"}),
            )
            .await;
        assert_eq!(r.status, 200);

        let keys = |r: EdgeResponse| -> Vec<String> {
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["key"].as_str().unwrap().to_owned())
                .collect()
        };
        let mine = keys(
            f.call("GET", "/v1/kill-switches", Some("acme"), Value::Null)
                .await,
        );
        assert_eq!(mine, ["connector#mail", "tenant#acme"]);
        let theirs = keys(
            f.call("GET", "/v1/kill-switches", Some("globex"), Value::Null)
                .await,
        );
        assert_eq!(theirs, ["connector#mail"]);
        let r = f
            .call("GET", "/v1/connectors/crm", Some("globex"), Value::Null)
            .await;
        assert_eq!(r.body["switches"], json!([]));
        let r = f
            .call("GET", "/v1/connectors/crm", Some("acme"), Value::Null)
            .await;
        assert_eq!(r.body["switches"][0]["key"], "tenant#acme");

        // Globex cannot clear acme's switch; acme can.
        let r = f
            .call(
                "DELETE",
                "/v1/kill-switches/tenants/acme",
                Some("globex"),
                Value::Null,
            )
            .await;
        assert_eq!(r.status, 403);
        let r = f
            .call(
                "DELETE",
                "/v1/kill-switches/tenants/acme",
                Some("acme"),
                Value::Null,
            )
            .await;
        assert_eq!(r.status, 200);
    }

    #[tokio::test]
    async fn connector_view_shows_breaker_slots_and_limit() {
        let f = fixture();
        let who = Some("acme");
        let r = f.call("GET", "/v1/connectors/crm", who, Value::Null).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            json!({
                "connector": "crm",
                "breaker": {
                    "state": "CLOSED",
                    "consecutive_failures": 0,
                    "opened_at_ms": null,
                    "open_until_ms": null,
                    "probe": null,
                },
                "in_flight": 0,
                "limit": 3,
                "limit_override": null,
                "switches": [],
            })
        );
        let r = f.call("GET", "/v1/connectors/nope", who, Value::Null).await;
        assert_eq!((r.status, code(&r)), (404, "not_found"));

        // Two failures (the connector's threshold) open the breaker; one call stays in flight.
        let store = f.app.backend.connectors();
        let settings: BreakerSettings = admission_request(&f, "crm").settings;
        for _ in 0..2 {
            let Admission::Admitted(ticket) =
                store.admit(&admission_request(&f, "crm")).await.unwrap()
            else {
                panic!("admitted");
            };
            store
                .settle(
                    &ticket,
                    BreakerSignal::Unhealthy,
                    &settings,
                    f.app.clock.now(),
                )
                .await
                .unwrap();
        }
        let r = f.call("GET", "/v1/connectors/crm", who, Value::Null).await;
        assert_eq!(r.body["breaker"]["state"], "OPEN");
        assert_eq!(r.body["breaker"]["opened_at_ms"], T0);
        assert_eq!(r.body["breaker"]["open_until_ms"], T0 + 60_000);
        assert_eq!(r.body["in_flight"], 0);

        f.clock.advance_secs(60);
        let Admission::Admitted(_probe) = store.admit(&admission_request(&f, "crm")).await.unwrap()
        else {
            panic!("probe admitted");
        };
        let r = f.call("GET", "/v1/connectors/crm", who, Value::Null).await;
        assert_eq!(r.body["breaker"]["state"], "HALF_OPEN");
        assert_eq!(r.body["in_flight"], 1);
        assert_eq!(
            r.body["breaker"]["probe"]["expires_at_ms"],
            T0 + 60_000 + 30_000
        );
    }

    #[tokio::test]
    async fn limit_override_round_trip_with_audit_fields() {
        let f = fixture();
        let who = Some("acme");
        let path = "/v1/connectors/crm/limit";
        for (body, want) in [
            (json!({"reason": "quota"}), "missing_field"),
            (json!({"limit": null, "reason": "quota"}), "missing_field"),
            (json!({"limit": 0, "reason": "quota"}), "invalid_field"),
            (json!({"limit": 10_001, "reason": "quota"}), "invalid_field"),
            (json!({"limit": -1, "reason": "quota"}), "invalid_field"),
            (json!({"limit": 2.5, "reason": "quota"}), "invalid_field"),
            (json!({"limit": "5", "reason": "quota"}), "invalid_field"),
            (json!({"limit": 5}), "missing_field"),
            (json!({"limit": 5, "reason": "  "}), "missing_field"),
        ] {
            let r = f.call("PUT", path, who, body.clone()).await;
            assert_eq!((r.status, code(&r)), (400, want), "{body}");
        }
        let r = f.call("PUT", path, who, Value::Null).await;
        assert_eq!((r.status, code(&r)), (400, "missing_field"));
        let r = f.call("POST", path, who, json!({"limit": 5})).await;
        assert_eq!((r.status, code(&r)), (405, "method_not_allowed"));
        for unknown in ["/v1/connectors/nope/limit", "/v1/connectors/a%23b/limit"] {
            let r = f
                .call("PUT", unknown, who, json!({"limit": 5, "reason": "x"}))
                .await;
            assert_eq!((r.status, code(&r)), (404, "not_found"), "{unknown}");
            let r = f.call("DELETE", unknown, who, Value::Null).await;
            assert_eq!((r.status, code(&r)), (404, "not_found"), "{unknown}");
        }
        let r = f
            .call("PUT", path, None, json!({"limit": 5, "reason": "x"}))
            .await;
        assert_eq!((r.status, code(&r)), (401, "unauthorized"));
        let crm = ConnectorId::parse("crm").unwrap();
        let store = f.app.backend.connectors();
        assert_eq!(store.state(&crm).await.unwrap().limit_override, None);

        // The manifest says 3; the operator raises it to 4.
        f.clock.advance_secs(5);
        let body = json!({"limit": 4, "reason": "vendor raised our quota", "set_by": "mallory"});
        let r = f.call("PUT", path, who, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let shown = json!({
            "limit": 4,
            "set_by": "user-of-acme",
            "set_at_ms": T0 + 5_000,
            "reason": "vendor raised our quota",
        });
        let mut expected = shown.clone();
        expected["connector"] = json!("crm");
        assert_eq!(r.body, expected);
        let r = f.call("GET", "/v1/connectors/crm", who, Value::Null).await;
        assert_eq!(
            (r.body["limit"].clone(), r.body["limit_override"].clone()),
            (json!(4), shown)
        );
        let r = f.call("GET", "/v1/connectors/mail", who, Value::Null).await;
        assert_eq!(r.body["limit_override"], Value::Null);

        // Admission applies it: four calls, each asking with the manifest's 3.
        for _ in 0..4 {
            let admission = store.admit(&admission_request(&f, "crm")).await.unwrap();
            assert!(matches!(admission, Admission::Admitted(_)), "{admission:?}");
        }
        let full = store.admit(&admission_request(&f, "crm")).await.unwrap();
        assert!(matches!(full, Admission::Deferred { .. }), "{full:?}");

        // Cleared: back to the manifest's limit (and idempotent).
        for _ in 0..2 {
            let r = f.call("DELETE", path, who, Value::Null).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.body, json!({"cleared": true}));
        }
        let r = f.call("GET", "/v1/connectors/crm", who, Value::Null).await;
        assert_eq!(r.body["limit"], 3);
        assert_eq!(r.body["limit_override"], Value::Null);
        assert_eq!(r.body["in_flight"], 4);
        assert_eq!(store.state(&crm).await.unwrap().limit_override, None);
    }

    #[test]
    fn path_segments_decode_and_refuse_bad_escapes() {
        assert_eq!(
            path_segments("/v1//kill-switches/tenants/a%20b/"),
            Some(vec![
                "v1".into(),
                "kill-switches".into(),
                "tenants".into(),
                "a b".into()
            ])
        );
        assert_eq!(path_segments("/x/%2"), None);
        assert_eq!(path_segments("/x/%+1"), None);
        assert_eq!(path_segments("/x/%ff"), None);
        assert_eq!(path_segments("/"), Some(vec![]));
    }

    #[test]
    fn errors_say_whether_to_retry() {
        let store = ApiError::Store(StoreError::InvalidInput {
            operation: "x",
            detail: "secret detail".into(),
        });
        assert!(store.is_retryable());
        let r = store.into_response();
        assert_eq!((r.status, code(&r)), (503, "unavailable"));
        assert!(!r.body.to_string().contains("secret detail"));
        assert!(!ApiError::Unauthorized.is_retryable());
    }
}
