//! One connector's admission state: kill switches, the circuit breaker and the in-flight slots,
//! kept together so that one conditional write can admit a tool call.
//!
//! Breaker: CLOSED -> OPEN after `failure_threshold` consecutive unhealthy calls; OPEN until
//! `open_until`; then exactly one caller takes the probe (OPEN -> HALF_OPEN). The probe is a
//! lease: if its holder never settles, another caller takes it over once it expires. A healthy
//! probe closes the breaker, an unhealthy one re-opens it. Everyone else is deferred, not failed.

use serde::{Deserialize, Serialize};

use super::ids::{ConnectorId, HolderId, TenantId, ToolName};
use super::semaphore::{SlotDecision, SlotTable};
use super::time::Timestamp;

/// Circuit breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "CLOSED",
            BreakerState::Open => "OPEN",
            BreakerState::HalfOpen => "HALF_OPEN",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CLOSED" => Some(BreakerState::Closed),
            "OPEN" => Some(BreakerState::Open),
            "HALF_OPEN" => Some(BreakerState::HalfOpen),
            _ => None,
        }
    }
}

/// Per-connector breaker and slot settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive unhealthy calls that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays OPEN before a probe may run.
    pub cooldown_secs: i64,
    /// How long a probe may run before another caller may take it over.
    pub probe_timeout_secs: i64,
    /// How long a deferred caller waits before asking again while a probe runs or slots are
    /// full.
    pub defer_secs: i64,
    /// `stateTtlDays`: how long an idle connector's state item is kept.
    pub state_ttl_days: i64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown_secs: 30,
            probe_timeout_secs: 30,
            defer_secs: 5,
            state_ttl_days: 14,
        }
    }
}

impl BreakerSettings {
    /// The TTL attribute (epoch seconds) written with every change at `now`. It is always later
    /// than any `open_until` written at `now` (cooldowns are far shorter than days), so TTL
    /// never removes an active OPEN.
    pub fn expires_at(&self, now: Timestamp) -> i64 {
        now.plus_secs(self.state_ttl_days * 86_400 + self.cooldown_secs)
            .epoch_secs()
    }
}

/// What a kill switch stops.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum SwitchTarget {
    /// Every call to a connector.
    Connector { connector: ConnectorId },
    /// Calls of one tool (action type) on a connector.
    Tool {
        connector: ConnectorId,
        tool: ToolName,
    },
    /// Every call made for one tenant, on every connector.
    Tenant { tenant: TenantId },
}

impl SwitchTarget {
    /// A stable text key (`connector#crm`, `tool#crm#create_lead`, `tenant#acme`).
    pub fn key(&self) -> String {
        match self {
            SwitchTarget::Connector { connector } => format!("connector#{connector}"),
            SwitchTarget::Tool { connector, tool } => format!("tool#{connector}#{tool}"),
            SwitchTarget::Tenant { tenant } => format!("tenant#{tenant}"),
        }
    }

    /// Whether this switch governs calls to `connector`.
    pub fn applies_to_connector(&self, connector: &ConnectorId) -> bool {
        match self {
            SwitchTarget::Connector { connector: c } | SwitchTarget::Tool { connector: c, .. } => {
                c == connector
            }
            SwitchTarget::Tenant { .. } => true,
        }
    }

    /// Whether this switch refuses the call `req`.
    pub fn refuses(&self, req: &AdmissionRequest) -> bool {
        match self {
            SwitchTarget::Connector { connector } => *connector == req.connector,
            SwitchTarget::Tool { connector, tool } => {
                *connector == req.connector && *tool == req.tool
            }
            SwitchTarget::Tenant { tenant } => *tenant == req.tenant,
        }
    }
}

/// An active kill switch, with its audit fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub target: SwitchTarget,
    pub set_by: String,
    pub set_at: Timestamp,
    pub reason: String,
}

/// An operator's run-time replacement of a connector's concurrency limit, with its audit fields.
/// While set, admission uses `limit` instead of the request's (the manifest's) limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverride {
    pub limit: u32,
    pub set_by: String,
    pub set_at: Timestamp,
    pub reason: String,
}

/// The probe lease while HALF_OPEN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeLease {
    pub holder: HolderId,
    pub expires_at: Timestamp,
}

/// A snapshot of one connector's admission state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorState {
    pub connector: ConnectorId,
    /// False until the kill switches that govern this connector were copied onto its item
    /// (first use, or after TTL removed an idle item).
    pub initialized: bool,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub opened_at: Option<Timestamp>,
    pub open_until: Option<Timestamp>,
    pub probe: Option<ProbeLease>,
    pub slots: SlotTable,
    /// The kill switches that govern this connector, sorted by target key.
    pub switches: Vec<KillSwitch>,
    /// The operator's concurrency limit, replacing the requested one while set.
    pub limit_override: Option<LimitOverride>,
    /// TTL attribute (epoch seconds), if any.
    pub expires_at: Option<i64>,
}

impl ConnectorState {
    /// The state of a connector nobody has used.
    pub fn fresh(connector: ConnectorId) -> Self {
        Self {
            connector,
            initialized: false,
            breaker: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at: None,
            open_until: None,
            probe: None,
            slots: SlotTable::default(),
            switches: Vec::new(),
            limit_override: None,
            expires_at: None,
        }
    }

    /// The concurrency limit admission applies: the override if one is set, else `requested`.
    pub fn effective_limit(&self, requested: u32) -> u32 {
        self.limit_override.as_ref().map_or(requested, |o| o.limit)
    }
}

/// One tool call asking to be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionRequest {
    pub connector: ConnectorId,
    pub tool: ToolName,
    pub tenant: TenantId,
    pub holder: HolderId,
    /// Concurrent calls allowed on the connector.
    pub limit: u32,
    /// How long the slot is held if the caller never settles.
    pub slot_ttl_secs: i64,
    pub settings: BreakerSettings,
    pub now: Timestamp,
}

/// Why a call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferReason {
    BreakerOpen,
    ProbeInFlight,
    SlotsFull,
}

/// What a store should do for an admission request, given the state it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionDecision {
    /// The item lacks its copy of the kill switches: copy them, then decide again.
    Initialize,
    /// A kill switch refuses the call.
    Refuse(KillSwitch),
    /// Breaker closed and a slot free: take the slot.
    AdmitClosed,
    /// Cooldown over (or the probe abandoned) and a slot free: take the slot and the probe.
    AdmitProbe,
    /// Slots are all counted but some leases expired: reclaim exactly these, then decide again.
    Reclaim(Vec<(HolderId, Timestamp)>),
    /// Wait until `until`.
    Defer {
        until: Timestamp,
        reason: DeferReason,
    },
}

/// Decides admission for `req` on `state`. Stores apply the decision under a condition that
/// re-checks exactly what made it, so the decision holds at the moment of the write.
pub fn decide_admission(state: &ConnectorState, req: &AdmissionRequest) -> AdmissionDecision {
    if !state.initialized {
        return AdmissionDecision::Initialize;
    }
    if let Some(sw) = state.switches.iter().find(|s| s.target.refuses(req)) {
        return AdmissionDecision::Refuse(sw.clone());
    }
    let now = req.now;
    let short = now.plus_secs(req.settings.defer_secs);
    let wants_probe = match state.breaker {
        BreakerState::Closed => false,
        BreakerState::Open => match state.open_until {
            Some(until) if until > now => {
                return AdmissionDecision::Defer {
                    until,
                    reason: DeferReason::BreakerOpen,
                };
            }
            _ => true,
        },
        BreakerState::HalfOpen => match &state.probe {
            Some(p) if p.expires_at > now => {
                return AdmissionDecision::Defer {
                    until: p.expires_at.min(short),
                    reason: DeferReason::ProbeInFlight,
                };
            }
            _ => true,
        },
    };
    match state.slots.decide(state.effective_limit(req.limit), now) {
        SlotDecision::Take if wants_probe => AdmissionDecision::AdmitProbe,
        SlotDecision::Take => AdmissionDecision::AdmitClosed,
        SlotDecision::Reclaim(expired) => AdmissionDecision::Reclaim(expired),
        SlotDecision::Full { earliest_expiry } => AdmissionDecision::Defer {
            until: earliest_expiry.map_or(short, |e| e.min(short)),
            reason: DeferReason::SlotsFull,
        },
    }
}

/// A granted admission; hand it back to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionTicket {
    pub connector: ConnectorId,
    pub tool: ToolName,
    pub tenant: TenantId,
    pub holder: HolderId,
    /// Whether this call is the HALF_OPEN probe.
    pub probe: bool,
    pub slot_expires_at: Timestamp,
}

/// The answer to an admission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted(AdmissionTicket),
    Deferred {
        until: Timestamp,
        reason: DeferReason,
    },
    Refused(KillSwitch),
}

/// How a call went, as the breaker sees it. A non-retryable 4xx is `Healthy`: the connector
/// answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerSignal {
    Healthy,
    Unhealthy,
}

/// A breaker transition caused by a settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerTransition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// The answer to a settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleReport {
    /// Whether the caller's slot was still held (false: it expired and was reclaimed).
    pub released: bool,
    pub transition: Option<BreakerTransition>,
}

impl ConnectorState {
    /// Applies an admission decision of kind [`AdmissionDecision::AdmitClosed`] or
    /// [`AdmissionDecision::AdmitProbe`]; returns the ticket.
    pub fn admit(&mut self, req: &AdmissionRequest, probe: bool) -> AdmissionTicket {
        let slot_expires_at = req.now.plus_secs(req.slot_ttl_secs);
        self.slots.take(req.holder.clone(), slot_expires_at);
        if probe {
            self.breaker = BreakerState::HalfOpen;
            self.probe = Some(ProbeLease {
                holder: req.holder.clone(),
                expires_at: req.now.plus_secs(req.settings.probe_timeout_secs),
            });
        }
        self.expires_at = Some(req.settings.expires_at(req.now));
        AdmissionTicket {
            connector: req.connector.clone(),
            tool: req.tool.clone(),
            tenant: req.tenant.clone(),
            holder: req.holder.clone(),
            probe,
            slot_expires_at,
        }
    }

    /// Applies a settle: releases the slot (if still held) and moves the breaker.
    pub fn settle(
        &mut self,
        ticket: &AdmissionTicket,
        signal: BreakerSignal,
        settings: &BreakerSettings,
        now: Timestamp,
    ) -> SettleReport {
        let released = self.slots.release(&ticket.holder);
        let from = self.breaker;
        let is_probe = ticket.probe
            && self.breaker == BreakerState::HalfOpen
            && self
                .probe
                .as_ref()
                .is_some_and(|p| p.holder == ticket.holder);
        if is_probe {
            self.probe = None;
            self.consecutive_failures = 0;
            match signal {
                BreakerSignal::Healthy => {
                    self.breaker = BreakerState::Closed;
                    self.opened_at = None;
                    self.open_until = None;
                }
                BreakerSignal::Unhealthy => self.open(settings, now),
            }
        } else {
            match signal {
                BreakerSignal::Healthy => self.consecutive_failures = 0,
                BreakerSignal::Unhealthy => {
                    self.consecutive_failures += 1;
                    if self.breaker == BreakerState::Closed
                        && self.consecutive_failures >= settings.failure_threshold
                    {
                        self.open(settings, now);
                        self.consecutive_failures = 0;
                    }
                }
            }
        }
        self.expires_at = Some(settings.expires_at(now));
        let transition = (self.breaker != from).then_some(BreakerTransition {
            from,
            to: self.breaker,
        });
        SettleReport {
            released,
            transition,
        }
    }

    fn open(&mut self, settings: &BreakerSettings, now: Timestamp) {
        self.breaker = BreakerState::Open;
        self.opened_at = Some(now);
        self.open_until = Some(now.plus_secs(settings.cooldown_secs));
        self.probe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(state_now: i64, holder: &str) -> AdmissionRequest {
        AdmissionRequest {
            connector: ConnectorId::parse("crm").unwrap(),
            tool: ToolName::parse("create_lead").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            holder: HolderId::parse(holder).unwrap(),
            limit: 2,
            slot_ttl_secs: 60,
            settings: BreakerSettings {
                failure_threshold: 2,
                ..BreakerSettings::default()
            },
            now: Timestamp::from_secs(state_now),
        }
    }

    fn ready() -> ConnectorState {
        let mut s = ConnectorState::fresh(ConnectorId::parse("crm").unwrap());
        s.initialized = true;
        s
    }

    #[test]
    fn uninitialized_state_asks_for_switches_first() {
        let s = ConnectorState::fresh(ConnectorId::parse("crm").unwrap());
        assert_eq!(
            decide_admission(&s, &req(0, "a")),
            AdmissionDecision::Initialize
        );
    }

    #[test]
    fn breaker_cycle_closed_open_probe_closed() {
        let mut s = ready();
        let settings = req(0, "a").settings;
        for (t, h) in [(0, "a"), (1, "b")] {
            let r = req(t, h);
            assert_eq!(decide_admission(&s, &r), AdmissionDecision::AdmitClosed);
            let ticket = s.admit(&r, false);
            s.settle(&ticket, BreakerSignal::Unhealthy, &settings, r.now);
        }
        assert_eq!(s.breaker, BreakerState::Open);
        assert_eq!(s.open_until, Some(Timestamp::from_secs(31)));
        assert_eq!(
            decide_admission(&s, &req(10, "c")),
            AdmissionDecision::Defer {
                until: Timestamp::from_secs(31),
                reason: DeferReason::BreakerOpen
            }
        );
        let r = req(31, "p");
        assert_eq!(decide_admission(&s, &r), AdmissionDecision::AdmitProbe);
        let probe = s.admit(&r, true);
        assert!(matches!(
            decide_admission(&s, &req(32, "q")),
            AdmissionDecision::Defer {
                reason: DeferReason::ProbeInFlight,
                ..
            }
        ));
        // The probe is abandoned: after its timeout another caller takes it over.
        assert_eq!(
            decide_admission(&s, &req(61, "q")),
            AdmissionDecision::AdmitProbe
        );
        let report = s.settle(
            &probe,
            BreakerSignal::Healthy,
            &settings,
            Timestamp::from_secs(40),
        );
        assert_eq!(
            report.transition,
            Some(BreakerTransition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert_eq!(s.slots.in_flight, 0);
        assert!(s.probe.is_none());
    }

    #[test]
    fn failed_probe_reopens() {
        let mut s = ready();
        s.breaker = BreakerState::Open;
        s.open_until = Some(Timestamp::from_secs(5));
        let r = req(5, "p");
        let t = s.admit(&r, true);
        let rep = s.settle(
            &t,
            BreakerSignal::Unhealthy,
            &r.settings,
            Timestamp::from_secs(6),
        );
        assert_eq!(s.breaker, BreakerState::Open);
        assert_eq!(s.open_until, Some(Timestamp::from_secs(36)));
        assert!(rep.transition.is_some());
    }

    #[test]
    fn switches_refuse_with_their_scope() {
        let mut s = ready();
        s.switches.push(KillSwitch {
            target: SwitchTarget::Tool {
                connector: ConnectorId::parse("crm").unwrap(),
                tool: ToolName::parse("create_lead").unwrap(),
            },
            set_by: "oncall".into(),
            set_at: Timestamp::from_secs(0),
            reason: "bad leads".into(),
        });
        assert!(matches!(
            decide_admission(&s, &req(1, "a")),
            AdmissionDecision::Refuse(_)
        ));
        let mut other = req(1, "a");
        other.tool = ToolName::parse("get_lead").unwrap();
        assert_eq!(decide_admission(&s, &other), AdmissionDecision::AdmitClosed);
    }

    #[test]
    fn a_limit_override_replaces_the_requested_limit() {
        let mut s = ready();
        for h in ["a", "b"] {
            let r = req(0, h);
            s.admit(&r, false);
        }
        assert!(matches!(
            decide_admission(&s, &req(1, "c")),
            AdmissionDecision::Defer {
                reason: DeferReason::SlotsFull,
                ..
            }
        ));
        s.limit_override = Some(LimitOverride {
            limit: 3,
            set_by: "oncall".into(),
            set_at: Timestamp::from_secs(0),
            reason: "vendor raised our quota".into(),
        });
        assert_eq!(s.effective_limit(2), 3);
        let r = req(1, "c");
        assert_eq!(decide_admission(&s, &r), AdmissionDecision::AdmitClosed);
        s.admit(&r, false);
        assert!(matches!(
            decide_admission(&s, &req(1, "d")),
            AdmissionDecision::Defer {
                reason: DeferReason::SlotsFull,
                ..
            }
        ));
        // Lowered below what is in flight: nobody new is admitted until enough settle.
        s.limit_override.as_mut().unwrap().limit = 1;
        assert!(matches!(
            decide_admission(&s, &req(1, "d")),
            AdmissionDecision::Defer {
                reason: DeferReason::SlotsFull,
                ..
            }
        ));
        s.limit_override = None;
        assert_eq!(s.effective_limit(2), 2);
    }

    #[test]
    fn ttl_outlives_any_open() {
        let st = BreakerSettings::default();
        let now = Timestamp::from_secs(1_000);
        assert!(st.expires_at(now) > now.plus_secs(st.cooldown_secs).epoch_secs());
    }
}
