//! [`ConnectorStore`] on DynamoDB. A connector's kill-switch copies, breaker and slots live on
//! one item (`CONNECTOR#{connector}` / `STATE`), so one conditional `UpdateItem` admits a call:
//! each decision of [`decide_admission`] becomes a write whose condition re-checks exactly the
//! facts the decision used, and a failed condition re-decides from the `ALL_OLD` item. Durable
//! kill switches live at `SWITCHES` / `{target key}`.

use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::errors::{
    corrupt, parse_item, store_error, to_item, to_value, AdapterError, Conditional, MalformedItem,
};
use super::expr::{query_all, update_item, Expr, QueryOptions};
use super::keys::{
    self, Item, BREAKER_STATE, CONNECTOR_STATE_SK, CONSECUTIVE_FAILURES, EXPIRES_AT,
    INITIALIZED_AT, LIMIT_OVERRIDE, LIMIT_OVERRIDE_AT, LIMIT_OVERRIDE_BY, LIMIT_OVERRIDE_REASON,
    OPENED_AT, OPEN_UNTIL, PK, PROBE_EXPIRES_AT, PROBE_HOLDER, SWITCHES_PK, SWITCH_PREFIX,
};
use super::slots;
use crate::domain::connector::{
    decide_admission, Admission, AdmissionDecision, AdmissionRequest, AdmissionTicket,
    BreakerSettings, BreakerSignal, BreakerState, BreakerTransition, ConnectorState, DeferReason,
    KillSwitch, LimitOverride, ProbeLease, SettleReport, SwitchTarget,
};
use crate::domain::ids::{ConnectorId, HolderId};
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{ConnectorStore, StoreResult};

/// Decisions one admission may act on before it defers (contention never spins forever).
const ADMIT_ROUNDS: usize = 8;
/// Attempts a settle makes while the item keeps changing under it.
const SETTLE_ROUNDS: usize = 4;

/// The fixed-name attributes of a state item (slots and switch copies are read separately).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StateFields {
    initialized_at: Option<Timestamp>,
    breaker_state: Option<BreakerState>,
    consecutive_failures: Option<u32>,
    opened_at: Option<Timestamp>,
    open_until: Option<Timestamp>,
    probe_holder: Option<HolderId>,
    probe_expires_at: Option<Timestamp>,
    limit_override: Option<u32>,
    limit_override_by: Option<String>,
    limit_override_at: Option<Timestamp>,
    limit_override_reason: Option<String>,
    expires_at: Option<i64>,
}

/// A kill switch's copy on a state item, the map value of `sw#{target key}`.
#[derive(Debug, Serialize, Deserialize)]
struct SwitchCopy {
    target_key: String,
    target: SwitchTarget,
    set_by: String,
    set_at: Timestamp,
    reason: String,
}

impl SwitchCopy {
    fn new(switch: &KillSwitch) -> Self {
        Self {
            target_key: switch.target.key(),
            target: switch.target.clone(),
            set_by: switch.set_by.clone(),
            set_at: switch.set_at,
            reason: switch.reason.clone(),
        }
    }

    fn into_switch(self) -> KillSwitch {
        KillSwitch {
            target: self.target,
            set_by: self.set_by,
            set_at: self.set_at,
            reason: self.reason,
        }
    }
}

/// A durable kill switch, `SWITCHES` / `{target key}` (no TTL).
#[derive(Debug, Serialize, Deserialize)]
struct SwitchItem {
    pk: String,
    sk: String,
    target: SwitchTarget,
    set_by: String,
    set_at: Timestamp,
    reason: String,
}

/// Connector admission state and kill switches in the Sluice table.
#[derive(Debug, Clone)]
pub struct DynamoConnectorStore {
    client: Client,
    table: String,
}

fn state_key(connector: &ConnectorId) -> Item {
    keys::key(keys::connector_pk(connector), CONNECTOR_STATE_SK)
}

/// The state held by `item`; [`ConnectorState::fresh`] if the item is empty (there is none).
fn parse_state(
    operation: &'static str,
    connector: &ConnectorId,
    item: Item,
) -> StoreResult<ConnectorState> {
    if item.is_empty() {
        return Ok(ConnectorState::fresh(connector.clone()));
    }
    let key = keys::describe(&keys::connector_pk(connector), CONNECTOR_STATE_SK);
    let slots = slots::read(&item, operation, &key)?;
    let mut switches = Vec::new();
    for (attr, value) in &item {
        if attr.starts_with(SWITCH_PREFIX) {
            let copy: SwitchCopy = serde_dynamo::from_attribute_value(value.clone())
                .map_err(|e| corrupt(operation, &key, e))?;
            switches.push(copy.into_switch());
        }
    }
    switches.sort_by_key(|s| s.target.key());
    let fields: StateFields = parse_item(operation, &key, item)?;
    let probe = match (fields.probe_holder, fields.probe_expires_at) {
        (Some(holder), Some(expires_at)) => Some(ProbeLease { holder, expires_at }),
        (None, None) => None,
        _ => {
            return Err(corrupt(
                operation,
                &key,
                MalformedItem("probe_holder without probe_expires_at or back"),
            ))
        }
    };
    let limit_override = match (
        fields.limit_override,
        fields.limit_override_by,
        fields.limit_override_at,
        fields.limit_override_reason,
    ) {
        (Some(limit), Some(set_by), Some(set_at), Some(reason)) => Some(LimitOverride {
            limit,
            set_by,
            set_at,
            reason,
        }),
        (None, None, None, None) => None,
        _ => {
            return Err(corrupt(
                operation,
                &key,
                MalformedItem("limit_override without all of its audit fields or back"),
            ))
        }
    };
    Ok(ConnectorState {
        connector: connector.clone(),
        initialized: fields.initialized_at.is_some(),
        breaker: fields.breaker_state.unwrap_or(BreakerState::Closed),
        consecutive_failures: fields.consecutive_failures.unwrap_or(0),
        opened_at: fields.opened_at,
        open_until: fields.open_until,
        probe,
        slots,
        switches,
        limit_override,
        expires_at: fields.expires_at,
    })
}

/// `state` with `switches` copied on and marked initialized, as an initialization leaves it.
fn initialized(state: &ConnectorState, switches: &[KillSwitch]) -> ConnectorState {
    let mut after = state.clone();
    after.initialized = true;
    for switch in switches {
        after.switches.retain(|s| s.target != switch.target);
        after.switches.push(switch.clone());
    }
    after.switches.sort_by_key(|s| s.target.key());
    after
}

/// Adds the clauses that mark the item initialized with its copy of `switches`. Each copy is
/// its own attribute, so a switch upserted concurrently by `set_switch` is never lost.
fn copy_switches(
    x: &mut Expr,
    switches: &[KillSwitch],
    now: Timestamp,
    operation: &'static str,
) -> StoreResult<()> {
    let initialized_at = x.name(INITIALIZED_AT);
    // Initialization happens once; a racing initializer may have copied switches we did not
    // see, and we re-decide from its result instead.
    x.require(format!("attribute_not_exists({initialized_at})"));
    let at = x.num(now.as_millis());
    x.set(INITIALIZED_AT, at);
    for switch in switches {
        let copy = x.value(to_value(operation, &SwitchCopy::new(switch))?);
        x.set(&keys::switch_attr(&switch.target), copy);
    }
    Ok(())
}

/// Adds the clauses that open the breaker at `now`.
fn open_breaker(x: &mut Expr, settings: &BreakerSettings, now: Timestamp) {
    let open = x.str(BreakerState::Open.as_str());
    let opened_at = x.num(now.as_millis());
    let until = x.num(now.plus_secs(settings.cooldown_secs).as_millis());
    let zero = x.num(0);
    x.set(BREAKER_STATE, open);
    x.set(OPENED_AT, opened_at);
    x.set(OPEN_UNTIL, until);
    x.set(CONSECUTIVE_FAILURES, zero);
    x.remove(PROBE_HOLDER);
    x.remove(PROBE_EXPIRES_AT);
}

impl DynamoConnectorStore {
    /// A store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn update(
        &self,
        key: Item,
        x: Expr,
        return_values: ReturnValue,
        operation: &'static str,
    ) -> StoreResult<Conditional<Item>> {
        update_item(&self.client, &self.table, key, x, return_values, operation).await
    }

    /// Takes a slot for `req` (and the probe if `probe`), conditioned on every fact an
    /// `AdmitClosed` / `AdmitProbe` decision relies on. With `init`, the same write also
    /// initializes the item with those switches (first use).
    async fn take(
        &self,
        req: &AdmissionRequest,
        probe: bool,
        renew: bool,
        init: Option<&[KillSwitch]>,
    ) -> StoreResult<Conditional<Item>> {
        const OP: &str = "connector.admit";
        let mut x = Expr::default();
        // The operator's override on the item, if any, is the limit at the moment of the write.
        slots::take_under(
            &mut x,
            &req.holder,
            req.now.plus_secs(req.slot_ttl_secs),
            req.limit,
            renew,
            Some(LIMIT_OVERRIDE),
        );
        let ttl = x.num(req.settings.expires_at(req.now));
        x.set(EXPIRES_AT, ttl);
        // No kill switch that refuses this call was set (or copied) since the decision.
        for attr in keys::refusing_switch_attrs(&req.connector, &req.tool, &req.tenant) {
            let sw = x.name(&attr);
            x.require(format!("attribute_not_exists({sw})"));
        }
        match init {
            Some(switches) => copy_switches(&mut x, switches, req.now, OP)?,
            None => {
                // An uninitialized item may lack switch copies that refuse this call.
                let initialized_at = x.name(INITIALIZED_AT);
                x.require(format!("attribute_exists({initialized_at})"));
            }
        }
        let breaker = x.name(BREAKER_STATE);
        if probe {
            let (open, half_open) = (
                x.str(BreakerState::Open.as_str()),
                x.str(BreakerState::HalfOpen.as_str()),
            );
            let now = x.num(req.now.as_millis());
            let (open_until, probe_expires_at) = (x.name(OPEN_UNTIL), x.name(PROBE_EXPIRES_AT));
            // The cooldown is over, or the probe in flight was abandoned: of all callers who
            // saw that, exactly one gets here first and moves the probe lease into the future,
            // which fails everyone else's condition.
            x.require(format!(
                "({breaker} = {open} AND (attribute_not_exists({open_until}) OR {open_until} <= {now})) \
                 OR ({breaker} = {half_open} AND (attribute_not_exists({probe_expires_at}) OR {probe_expires_at} <= {now}))"
            ));
            let me = x.str(req.holder.as_str());
            let probe_until = x.num(
                req.now
                    .plus_secs(req.settings.probe_timeout_secs)
                    .as_millis(),
            );
            x.set(BREAKER_STATE, half_open);
            x.set(PROBE_HOLDER, me);
            x.set(PROBE_EXPIRES_AT, probe_until);
        } else {
            let closed = x.str(BreakerState::Closed.as_str());
            // The breaker did not open since the decision (no breaker_state reads as CLOSED).
            x.require(format!(
                "attribute_not_exists({breaker}) OR {breaker} = {closed}"
            ));
            if init.is_some() {
                x.set(BREAKER_STATE, closed);
            }
        }
        self.update(state_key(&req.connector), x, ReturnValue::None, OP)
            .await
    }

    /// Initializes the item with `switches` without admitting; returns the item afterwards
    /// (`ALL_NEW`), or as a racing initializer left it (`ALL_OLD`).
    async fn initialize(
        &self,
        req: &AdmissionRequest,
        switches: &[KillSwitch],
    ) -> StoreResult<Item> {
        const OP: &str = "connector.admit";
        let mut x = Expr::default();
        copy_switches(&mut x, switches, req.now, OP)?;
        let (breaker, closed) = (x.name(BREAKER_STATE), x.str(BreakerState::Closed.as_str()));
        x.set(BREAKER_STATE, format!("if_not_exists({breaker}, {closed})"));
        let ttl = x.num(req.settings.expires_at(req.now));
        x.set(EXPIRES_AT, ttl);
        match self
            .update(state_key(&req.connector), x, ReturnValue::AllNew, OP)
            .await?
        {
            Conditional::Written(item) | Conditional::Failed(item) => Ok(item),
        }
    }

    /// Every durable switch that applies to `connector`.
    async fn switches_for(&self, connector: &ConnectorId) -> StoreResult<Vec<KillSwitch>> {
        let mut switches = self.switches().await?;
        switches.retain(|s| s.target.applies_to_connector(connector));
        Ok(switches)
    }

    /// Opens the breaker after a settle saw the failure count reach the threshold while
    /// CLOSED; whether this call did it.
    async fn trip(
        &self,
        connector: &ConnectorId,
        settings: &BreakerSettings,
        now: Timestamp,
    ) -> StoreResult<bool> {
        const OP: &str = "connector.settle";
        let mut x = Expr::default();
        let (breaker, failures) = (x.name(BREAKER_STATE), x.name(CONSECUTIVE_FAILURES));
        let closed = x.str(BreakerState::Closed.as_str());
        let threshold = x.num(settings.failure_threshold);
        // Several failing settles may all see the threshold reached: exactly one opens the
        // breaker; and none does if a healthy call reset the count or the breaker moved.
        x.require(format!(
            "attribute_not_exists({breaker}) OR {breaker} = {closed}"
        ));
        x.require(format!("{failures} >= {threshold}"));
        open_breaker(&mut x, settings, now);
        let ttl = x.num(settings.expires_at(now));
        x.set(EXPIRES_AT, ttl);
        Ok(matches!(
            self.update(state_key(connector), x, ReturnValue::None, OP)
                .await?,
            Conditional::Written(_)
        ))
    }
}

/// The ticket of an admission applied to `state` (the domain decides its fields).
fn ticket(state: &ConnectorState, req: &AdmissionRequest, probe: bool) -> AdmissionTicket {
    state.clone().admit(req, probe)
}

impl ConnectorStore for DynamoConnectorStore {
    #[tracing::instrument(skip_all, fields(connector = %req.connector, tool = %req.tool, holder = %req.holder))]
    async fn admit(&self, req: &AdmissionRequest) -> StoreResult<Admission> {
        const OP: &str = "connector.admit";
        // The common case first, without a read: breaker closed, a slot free, no switch.
        let old = match self.take(req, false, false, None).await? {
            Conditional::Written(_) => {
                let fresh = ConnectorState::fresh(req.connector.clone());
                return Ok(Admission::Admitted(ticket(&fresh, req, false)));
            }
            Conditional::Failed(old) => old,
        };
        let mut state = parse_state(OP, &req.connector, old)?;
        let mut durable: Option<Vec<KillSwitch>> = None;
        for _ in 0..ADMIT_ROUNDS {
            let decision = decide_admission(&state, req);
            tracing::debug!(?decision, "admission decision");
            let item = match decision {
                AdmissionDecision::Refuse(switch) => return Ok(Admission::Refused(switch)),
                AdmissionDecision::Defer { until, reason } => {
                    return Ok(Admission::Deferred { until, reason })
                }
                AdmissionDecision::AdmitClosed | AdmissionDecision::AdmitProbe => {
                    let probe = decision == AdmissionDecision::AdmitProbe;
                    let renew = state.slots.holders.contains_key(&req.holder);
                    match self.take(req, probe, renew, None).await? {
                        Conditional::Written(_) => {
                            return Ok(Admission::Admitted(ticket(&state, req, probe)))
                        }
                        Conditional::Failed(old) => old,
                    }
                }
                AdmissionDecision::Reclaim(expired) => {
                    let key = (keys::connector_pk(&req.connector), CONNECTOR_STATE_SK);
                    slots::reclaim(&self.client, &self.table, key, &expired, OP).await?
                }
                AdmissionDecision::Initialize => {
                    let switches = match &durable {
                        Some(switches) => switches,
                        None => durable.insert(self.switches_for(&req.connector).await?),
                    };
                    let after = initialized(&state, switches);
                    // If the initialized state admits the call, one write does both.
                    match decide_admission(&after, req) {
                        d @ (AdmissionDecision::AdmitClosed | AdmissionDecision::AdmitProbe) => {
                            let probe = d == AdmissionDecision::AdmitProbe;
                            let renew = after.slots.holders.contains_key(&req.holder);
                            match self.take(req, probe, renew, Some(switches)).await? {
                                Conditional::Written(_) => {
                                    return Ok(Admission::Admitted(ticket(&after, req, probe)))
                                }
                                Conditional::Failed(old) => old,
                            }
                        }
                        _ => self.initialize(req, switches).await?,
                    }
                }
            };
            state = parse_state(OP, &req.connector, item)?;
        }
        tracing::debug!(rounds = ADMIT_ROUNDS, "admission contended; deferring");
        Ok(Admission::Deferred {
            until: req.now.plus_secs(req.settings.defer_secs),
            reason: DeferReason::SlotsFull,
        })
    }

    #[tracing::instrument(skip_all, fields(connector = %ticket.connector, holder = %ticket.holder, probe = ticket.probe))]
    async fn settle(
        &self,
        ticket: &AdmissionTicket,
        signal: BreakerSignal,
        settings: &BreakerSettings,
        now: Timestamp,
    ) -> StoreResult<SettleReport> {
        const OP: &str = "connector.settle";
        // First as the ticket expects (slot still held, still the probe if it was one); on a
        // failed condition, again with what ALL_OLD says, conditioned on that.
        let mut held = true;
        let mut is_probe = ticket.probe;
        for _ in 0..SETTLE_ROUNDS {
            let mut x = Expr::default();
            slots::release(&mut x, &ticket.holder, held);
            let ttl = x.num(settings.expires_at(now));
            x.set(EXPIRES_AT, ttl);
            if ticket.probe {
                let (breaker, probe_holder) = (x.name(BREAKER_STATE), x.name(PROBE_HOLDER));
                let half_open = x.str(BreakerState::HalfOpen.as_str());
                let me = x.str(ticket.holder.as_str());
                let is_ours = format!("{breaker} = {half_open} AND {probe_holder} = {me}");
                // Only the current probe moves the breaker out of HALF_OPEN; a probe taken
                // over after its lease expired settles as an ordinary call.
                x.require(if is_probe {
                    is_ours
                } else {
                    format!("NOT ({is_ours})")
                });
            }
            if is_probe {
                match signal {
                    BreakerSignal::Healthy => {
                        let (closed, zero) = (x.str(BreakerState::Closed.as_str()), x.num(0));
                        x.set(BREAKER_STATE, closed);
                        x.set(CONSECUTIVE_FAILURES, zero);
                        x.remove(OPENED_AT);
                        x.remove(OPEN_UNTIL);
                        x.remove(PROBE_HOLDER);
                        x.remove(PROBE_EXPIRES_AT);
                    }
                    BreakerSignal::Unhealthy => open_breaker(&mut x, settings, now),
                }
            } else {
                match signal {
                    BreakerSignal::Healthy => {
                        let zero = x.num(0);
                        x.set(CONSECUTIVE_FAILURES, zero);
                    }
                    BreakerSignal::Unhealthy => x.add(CONSECUTIVE_FAILURES, 1),
                }
            }
            let key = state_key(&ticket.connector);
            let new = match self.update(key, x, ReturnValue::AllNew, OP).await? {
                Conditional::Written(new) => new,
                Conditional::Failed(old) => {
                    let state = parse_state(OP, &ticket.connector, old)?;
                    held = state.slots.holders.contains_key(&ticket.holder);
                    is_probe = ticket.probe
                        && state.breaker == BreakerState::HalfOpen
                        && state
                            .probe
                            .as_ref()
                            .is_some_and(|p| p.holder == ticket.holder);
                    continue;
                }
            };
            let transition = if is_probe {
                Some(BreakerTransition {
                    from: BreakerState::HalfOpen,
                    to: match signal {
                        BreakerSignal::Healthy => BreakerState::Closed,
                        BreakerSignal::Unhealthy => BreakerState::Open,
                    },
                })
            } else if signal == BreakerSignal::Unhealthy {
                let state = parse_state(OP, &ticket.connector, new)?;
                let reached = state.breaker == BreakerState::Closed
                    && state.consecutive_failures >= settings.failure_threshold;
                (reached && self.trip(&ticket.connector, settings, now).await?).then_some(
                    BreakerTransition {
                        from: BreakerState::Closed,
                        to: BreakerState::Open,
                    },
                )
            } else {
                None
            };
            return Ok(SettleReport {
                released: held,
                transition,
            });
        }
        Err(AdapterError::Contention {
            rounds: SETTLE_ROUNDS,
        }
        .transient(OP))
    }

    #[tracing::instrument(skip_all, fields(connector = %connector))]
    async fn state(&self, connector: &ConnectorId) -> StoreResult<ConnectorState> {
        const OP: &str = "connector.state";
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(state_key(connector)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        parse_state(OP, connector, out.item.unwrap_or_default())
    }

    #[tracing::instrument(skip_all, fields(target = %switch.target.key()))]
    async fn set_switch(&self, switch: KillSwitch, connectors: &[ConnectorId]) -> StoreResult<()> {
        const OP: &str = "connector.set_switch";
        // The durable record first: an initialization racing the copies below reads it.
        let item = SwitchItem {
            pk: SWITCHES_PK.to_owned(),
            sk: switch.target.key(),
            target: switch.target.clone(),
            set_by: switch.set_by.clone(),
            set_at: switch.set_at,
            reason: switch.reason.clone(),
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(OP, &item)?))
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        let attr = keys::switch_attr(&switch.target);
        let copy = to_value(OP, &SwitchCopy::new(&switch))?;
        for connector in connectors {
            if !switch.target.applies_to_connector(connector) {
                continue;
            }
            let mut x = Expr::default();
            let value = x.value(copy.clone());
            x.set(&attr, value);
            // An upsert: a missing state item is created uninitialized, and its first
            // admission copies the remaining switches.
            self.update(state_key(connector), x, ReturnValue::None, OP)
                .await?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(target = %target.key()))]
    async fn clear_switch(
        &self,
        target: &SwitchTarget,
        connectors: &[ConnectorId],
    ) -> StoreResult<bool> {
        const OP: &str = "connector.clear_switch";
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(SWITCHES_PK.to_owned(), target.key())))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        let existed = out.attributes.is_some_and(|a| !a.is_empty());
        let attr = keys::switch_attr(target);
        for connector in connectors {
            if !target.applies_to_connector(connector) {
                continue;
            }
            let mut x = Expr::default();
            let sw = x.name(&attr);
            x.remove(&attr);
            // Without it, removing from a missing item would create a bare one.
            x.require(format!("attribute_exists({sw})"));
            self.update(state_key(connector), x, ReturnValue::None, OP)
                .await?;
        }
        Ok(existed)
    }

    #[tracing::instrument(skip_all)]
    async fn switches(&self) -> StoreResult<Vec<KillSwitch>> {
        const OP: &str = "connector.switches";
        let mut x = Expr::default();
        let (pk, switches_pk) = (x.name(PK), x.str(SWITCHES_PK));
        x.require(format!("{pk} = {switches_pk}"));
        let items = query_all(&self.client, &self.table, x, QueryOptions::CONSISTENT, OP).await?;
        let mut switches = Vec::with_capacity(items.len());
        for item in items {
            let key = keys::describe(
                SWITCHES_PK,
                item.get(keys::SK)
                    .and_then(|v| v.as_s().ok())
                    .map_or("?", String::as_str),
            );
            let stored: SwitchItem = parse_item(OP, &key, item)?;
            switches.push(KillSwitch {
                target: stored.target,
                set_by: stored.set_by,
                set_at: stored.set_at,
                reason: stored.reason,
            });
        }
        switches.sort_by_key(|s| s.target.key());
        Ok(switches)
    }

    #[tracing::instrument(skip_all, fields(connector = %connector))]
    async fn set_limit(
        &self,
        connector: &ConnectorId,
        limit: Option<LimitOverride>,
    ) -> StoreResult<()> {
        const OP: &str = "connector.set_limit";
        let mut x = Expr::default();
        match limit {
            Some(o) => {
                if o.limit == 0 {
                    return Err(StoreError::InvalidInput {
                        operation: OP,
                        detail: "a limit override must be at least 1".into(),
                    });
                }
                let (n, by, at, reason) = (
                    x.num(o.limit),
                    x.str(o.set_by),
                    x.num(o.set_at.as_millis()),
                    x.str(o.reason),
                );
                x.set(LIMIT_OVERRIDE, n);
                x.set(LIMIT_OVERRIDE_BY, by);
                x.set(LIMIT_OVERRIDE_AT, at);
                x.set(LIMIT_OVERRIDE_REASON, reason);
                // An upsert: a missing state item is created uninitialized and keeps the
                // override through its first admission.
            }
            None => {
                let over = x.name(LIMIT_OVERRIDE);
                for attr in [
                    LIMIT_OVERRIDE,
                    LIMIT_OVERRIDE_BY,
                    LIMIT_OVERRIDE_AT,
                    LIMIT_OVERRIDE_REASON,
                ] {
                    x.remove(attr);
                }
                // Without it, removing from a missing item would create a bare one; a failed
                // condition means there was nothing to clear.
                x.require(format!("attribute_exists({over})"));
            }
        }
        self.update(state_key(connector), x, ReturnValue::None, OP)
            .await?;
        Ok(())
    }
}
