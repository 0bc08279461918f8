//! [`MemoryConnectorStore`]: per-connector admission state (kill switch copies, breaker,
//! slots) and the durable kill switches, in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::lock;
use crate::domain::connector::{
    decide_admission, Admission, AdmissionDecision, AdmissionRequest, AdmissionTicket,
    BreakerSettings, BreakerSignal, ConnectorState, DeferReason, KillSwitch, LimitOverride,
    SettleReport, SwitchTarget,
};
use crate::domain::ids::ConnectorId;
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{ConnectorStore, StoreResult};

/// Decision rounds one admission may take (initialize, reclaim, ...) before it gives up and
/// defers, as the DynamoDB adapter bounds its retries under contention.
const MAX_ADMISSION_ROUNDS: usize = 8;

#[derive(Debug, Default)]
struct Connectors {
    states: HashMap<ConnectorId, ConnectorState>,
    /// The durable kill switches, by target key.
    switches: BTreeMap<String, KillSwitch>,
}

/// The state of `connector`, created fresh (uninitialized) if it has none, as an UpdateItem
/// creates a missing item.
fn state_mut<'a>(
    states: &'a mut HashMap<ConnectorId, ConnectorState>,
    connector: &ConnectorId,
) -> &'a mut ConnectorState {
    states
        .entry(connector.clone())
        .or_insert_with(|| ConnectorState::fresh(connector.clone()))
}

impl Connectors {
    fn admit(&mut self, req: &AdmissionRequest) -> Admission {
        let state = state_mut(&mut self.states, &req.connector);
        for _ in 0..MAX_ADMISSION_ROUNDS {
            match decide_admission(state, req) {
                AdmissionDecision::Initialize => {
                    for switch in self
                        .switches
                        .values()
                        .filter(|s| s.target.applies_to_connector(&req.connector))
                    {
                        put_switch(state, switch.clone());
                    }
                    state.initialized = true;
                    state.expires_at = Some(req.settings.expires_at(req.now));
                }
                AdmissionDecision::Refuse(switch) => return Admission::Refused(switch),
                AdmissionDecision::AdmitClosed => {
                    return Admission::Admitted(state.admit(req, false))
                }
                AdmissionDecision::AdmitProbe => {
                    return Admission::Admitted(state.admit(req, true))
                }
                AdmissionDecision::Reclaim(expired) => {
                    for (holder, _) in &expired {
                        state.slots.release(holder);
                    }
                    state.expires_at = Some(req.settings.expires_at(req.now));
                }
                AdmissionDecision::Defer { until, reason } => {
                    return Admission::Deferred { until, reason }
                }
            }
        }
        Admission::Deferred {
            until: req.now.plus_secs(req.settings.defer_secs),
            reason: DeferReason::SlotsFull,
        }
    }
}

/// Puts `switch` on `state`, replacing one with the same target, keeping target-key order.
fn put_switch(state: &mut ConnectorState, switch: KillSwitch) {
    let key = switch.target.key();
    match state
        .switches
        .binary_search_by(|s| s.target.key().cmp(&key))
    {
        Ok(at) => state.switches[at] = switch,
        Err(at) => state.switches.insert(at, switch),
    }
}

/// Admission state of every connector, and the durable kill switches.
#[derive(Debug, Clone, Default)]
pub struct MemoryConnectorStore {
    inner: Arc<Mutex<Connectors>>,
}

impl MemoryConnectorStore {
    /// An empty store: no switches, every connector fresh.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ConnectorStore for MemoryConnectorStore {
    async fn admit(&self, req: &AdmissionRequest) -> StoreResult<Admission> {
        Ok(lock(&self.inner).admit(req))
    }

    async fn settle(
        &self,
        ticket: &AdmissionTicket,
        signal: BreakerSignal,
        settings: &BreakerSettings,
        now: Timestamp,
    ) -> StoreResult<SettleReport> {
        let mut inner = lock(&self.inner);
        // Like the DynamoDB UpdateItem, a settle on a connector with no state item creates one
        // (uninitialized) carrying the breaker fields.
        let state = state_mut(&mut inner.states, &ticket.connector);
        Ok(state.settle(ticket, signal, settings, now))
    }

    async fn state(&self, connector: &ConnectorId) -> StoreResult<ConnectorState> {
        let inner = lock(&self.inner);
        Ok(inner
            .states
            .get(connector)
            .cloned()
            .unwrap_or_else(|| ConnectorState::fresh(connector.clone())))
    }

    async fn set_switch(&self, switch: KillSwitch, connectors: &[ConnectorId]) -> StoreResult<()> {
        let mut inner = lock(&self.inner);
        inner.switches.insert(switch.target.key(), switch.clone());
        for connector in connectors
            .iter()
            .filter(|c| switch.target.applies_to_connector(c))
        {
            put_switch(state_mut(&mut inner.states, connector), switch.clone());
        }
        Ok(())
    }

    async fn clear_switch(
        &self,
        target: &SwitchTarget,
        connectors: &[ConnectorId],
    ) -> StoreResult<bool> {
        let mut inner = lock(&self.inner);
        let key = target.key();
        let existed = inner.switches.remove(&key).is_some();
        for connector in connectors.iter().filter(|c| target.applies_to_connector(c)) {
            if let Some(state) = inner.states.get_mut(connector) {
                state.switches.retain(|s| s.target.key() != key);
            }
        }
        Ok(existed)
    }

    async fn switches(&self) -> StoreResult<Vec<KillSwitch>> {
        Ok(lock(&self.inner).switches.values().cloned().collect())
    }

    async fn set_limit(
        &self,
        connector: &ConnectorId,
        limit: Option<LimitOverride>,
    ) -> StoreResult<()> {
        if limit.as_ref().is_some_and(|o| o.limit == 0) {
            return Err(StoreError::InvalidInput {
                operation: "connector.set_limit",
                detail: "a limit override must be at least 1".into(),
            });
        }
        let mut inner = lock(&self.inner);
        match limit {
            // Like the DynamoDB upsert: a connector with no state gets one, uninitialized.
            Some(o) => state_mut(&mut inner.states, connector).limit_override = Some(o),
            None => {
                if let Some(state) = inner.states.get_mut(connector) {
                    state.limit_override = None;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::connector::{BreakerState, BreakerTransition};
    use crate::domain::ids::{HolderId, TenantId, ToolName};

    fn crm() -> ConnectorId {
        ConnectorId::parse("crm").unwrap()
    }

    fn req(now: Timestamp) -> AdmissionRequest {
        AdmissionRequest {
            connector: crm(),
            tool: ToolName::parse("create_lead").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            holder: HolderId::random(),
            limit: 2,
            slot_ttl_secs: 60,
            settings: BreakerSettings {
                failure_threshold: 2,
                ..BreakerSettings::default()
            },
            now,
        }
    }

    fn switch(target: SwitchTarget) -> KillSwitch {
        KillSwitch {
            target,
            set_by: "oncall".into(),
            set_at: Timestamp::from_secs(0),
            reason: "test".into(),
        }
    }

    async fn ticket(store: &MemoryConnectorStore, r: &AdmissionRequest) -> AdmissionTicket {
        match store.admit(r).await.unwrap() {
            Admission::Admitted(t) => t,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn first_admission_copies_the_durable_switches() {
        let store = MemoryConnectorStore::new();
        let tenant = switch(SwitchTarget::Tenant {
            tenant: TenantId::parse("acme").unwrap(),
        });
        let other = switch(SwitchTarget::Connector {
            connector: ConnectorId::parse("erp").unwrap(),
        });
        // Set before the connector is known: only the durable records exist.
        store.set_switch(tenant.clone(), &[]).await.unwrap();
        store.set_switch(other.clone(), &[]).await.unwrap();
        assert!(!store.state(&crm()).await.unwrap().initialized);
        let t = Timestamp::from_secs(1_000);
        assert_eq!(
            store.admit(&req(t)).await.unwrap(),
            Admission::Refused(tenant.clone())
        );
        let state = store.state(&crm()).await.unwrap();
        assert!(state.initialized);
        assert_eq!(state.switches, vec![tenant.clone()]);
        assert!(store.clear_switch(&tenant.target, &[crm()]).await.unwrap());
        assert!(!store.clear_switch(&tenant.target, &[crm()]).await.unwrap());
        assert!(matches!(
            store.admit(&req(t)).await.unwrap(),
            Admission::Admitted(_)
        ));
        assert_eq!(store.switches().await.unwrap(), vec![other]);
    }

    #[tokio::test]
    async fn set_switch_copies_onto_governed_connectors_without_initializing() {
        let store = MemoryConnectorStore::new();
        let tool = switch(SwitchTarget::Tool {
            connector: crm(),
            tool: ToolName::parse("create_lead").unwrap(),
        });
        let erp = ConnectorId::parse("erp").unwrap();
        store
            .set_switch(tool.clone(), &[crm(), erp.clone()])
            .await
            .unwrap();
        let state = store.state(&crm()).await.unwrap();
        assert_eq!(
            (state.initialized, state.switches),
            (false, vec![tool.clone()])
        );
        assert!(store.state(&erp).await.unwrap().switches.is_empty());
        // Replacing keeps one copy.
        let mut again = tool.clone();
        again.reason = "still bad".into();
        store.set_switch(again.clone(), &[crm()]).await.unwrap();
        assert_eq!(store.state(&crm()).await.unwrap().switches, vec![again]);
    }

    #[tokio::test]
    async fn breaker_opens_then_one_probe_at_a_time_with_takeover() {
        let store = MemoryConnectorStore::new();
        let t = Timestamp::from_secs(1_000);
        let settings = req(t).settings;
        for _ in 0..2 {
            let tk = ticket(&store, &req(t)).await;
            store
                .settle(&tk, BreakerSignal::Unhealthy, &settings, t)
                .await
                .unwrap();
        }
        let open_until = t.plus_secs(settings.cooldown_secs);
        assert_eq!(
            store.admit(&req(t)).await.unwrap(),
            Admission::Deferred {
                until: open_until,
                reason: DeferReason::BreakerOpen
            }
        );
        let probe = ticket(&store, &req(open_until)).await;
        assert!(probe.probe);
        assert!(matches!(
            store.admit(&req(open_until.plus_secs(1))).await.unwrap(),
            Admission::Deferred {
                reason: DeferReason::ProbeInFlight,
                ..
            }
        ));
        // The first probe never settles; once its lease expires another caller takes over.
        let takeover_at = open_until.plus_secs(settings.probe_timeout_secs);
        let second = ticket(&store, &req(takeover_at)).await;
        assert!(second.probe);
        // The abandoned probe's late settle no longer decides the breaker.
        let late = store
            .settle(&probe, BreakerSignal::Healthy, &settings, takeover_at)
            .await
            .unwrap();
        assert_eq!(late.transition, None);
        assert_eq!(
            store.state(&crm()).await.unwrap().breaker,
            BreakerState::HalfOpen
        );
        let closed = store
            .settle(&second, BreakerSignal::Healthy, &settings, takeover_at)
            .await
            .unwrap();
        assert_eq!(
            closed.transition,
            Some(BreakerTransition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert!(closed.released);
        assert_eq!(store.state(&crm()).await.unwrap().slots.in_flight, 0);
    }

    #[tokio::test]
    async fn expired_slots_are_reclaimed_and_full_slots_defer() {
        let store = MemoryConnectorStore::new();
        let t = Timestamp::from_secs(1_000);
        let a = ticket(&store, &req(t)).await;
        ticket(&store, &req(t)).await;
        assert_eq!(
            store.admit(&req(t.plus_secs(1))).await.unwrap(),
            Admission::Deferred {
                until: t.plus_secs(6),
                reason: DeferReason::SlotsFull
            }
        );
        let late = ticket(&store, &req(t.plus_secs(60))).await;
        let state = store.state(&crm()).await.unwrap();
        assert_eq!(state.slots.in_flight, 1);
        assert!(state.slots.holders.contains_key(&late.holder));
        let report = store
            .settle(
                &a,
                BreakerSignal::Healthy,
                &req(t).settings,
                t.plus_secs(61),
            )
            .await
            .unwrap();
        assert!(!report.released, "a's slot was reclaimed");
    }
}
