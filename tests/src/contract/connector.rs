//! Contract of [`ConnectorStore`]: kill switches, the breaker cycle with its probe lease,
//! connector slots and the operator's limit override, all decided in admission.

use sluice::domain::connector::{
    Admission, AdmissionRequest, AdmissionTicket, BreakerSettings, BreakerSignal, BreakerState,
    BreakerTransition, ConnectorState, DeferReason, KillSwitch, LimitOverride, SettleReport,
    SwitchTarget,
};
use sluice::domain::ids::{ConnectorId, HolderId};
use sluice::domain::time::Timestamp;
use sluice::ports::ConnectorStore;
use sluice::StoreError;

use super::t0;
use crate::id;

const SETTINGS: BreakerSettings = BreakerSettings {
    failure_threshold: 2,
    cooldown_secs: 30,
    probe_timeout_secs: 20,
    defer_secs: 5,
    state_ttl_days: 14,
};

fn req(connector: &str, tool: &str, tenant: &str, limit: u32, now: Timestamp) -> AdmissionRequest {
    AdmissionRequest {
        connector: id!(ConnectorId, connector),
        tool: id!(ToolName, tool),
        tenant: id!(TenantId, tenant),
        holder: HolderId::random(),
        limit,
        slot_ttl_secs: 60,
        settings: SETTINGS,
        now,
    }
}

async fn admitted<C: ConnectorStore>(store: &C, r: &AdmissionRequest) -> AdmissionTicket {
    match store.admit(r).await.expect("admit") {
        Admission::Admitted(t) => t,
        other => panic!("expected admission for {r:?}, got {other:?}"),
    }
}

async fn settle<C: ConnectorStore>(
    store: &C,
    t: &AdmissionTicket,
    signal: BreakerSignal,
    now: Timestamp,
) -> SettleReport {
    store
        .settle(t, signal, &SETTINGS, now)
        .await
        .expect("settle")
}

fn transition(from: BreakerState, to: BreakerState) -> Option<BreakerTransition> {
    Some(BreakerTransition { from, to })
}

fn switch(target: SwitchTarget, now: Timestamp) -> KillSwitch {
    KillSwitch {
        target,
        set_by: "oncall@acme".into(),
        set_at: now,
        reason: "incident 42".into(),
    }
}

/// Runs the whole contract on an empty store.
pub async fn run<C: ConnectorStore>(store: &C) {
    breaker_and_slots(store).await;
    kill_switches(store).await;
    limit_override(store).await;
}

async fn breaker_and_slots<C: ConnectorStore>(store: &C) {
    let now = t0();
    let crm = id!(ConnectorId, "crm");
    let fresh = store.state(&crm).await.expect("state");
    assert!(!fresh.initialized);
    assert_eq!(
        (fresh.breaker, fresh.slots.in_flight),
        (BreakerState::Closed, 0)
    );

    // Slots: limit 1 admits one call and defers the next.
    let a = req("crm", "create_lead", "acme", 1, now);
    let ta = admitted(store, &a).await;
    assert!(!ta.probe);
    assert_eq!(ta.slot_expires_at, now.plus_secs(60));
    let st = store.state(&crm).await.expect("state");
    assert!(st.initialized);
    assert_eq!(st.slots.in_flight, 1);
    assert_eq!(st.expires_at, Some(SETTINGS.expires_at(now)));
    let b = store
        .admit(&req("crm", "create_lead", "acme", 1, now))
        .await
        .expect("admit");
    assert_eq!(
        b,
        Admission::Deferred {
            until: now.plus_secs(5),
            reason: DeferReason::SlotsFull
        }
    );
    let rep = settle(store, &ta, BreakerSignal::Healthy, now).await;
    assert_eq!(
        rep,
        SettleReport {
            released: true,
            transition: None
        }
    );
    assert_eq!(store.state(&crm).await.expect("state").slots.in_flight, 0);

    // Two consecutive unhealthy calls open the breaker.
    let tc = admitted(store, &req("crm", "create_lead", "acme", 5, now)).await;
    let td = admitted(store, &req("crm", "create_lead", "acme", 5, now)).await;
    assert_eq!(
        settle(store, &tc, BreakerSignal::Unhealthy, now)
            .await
            .transition,
        None
    );
    assert_eq!(
        store.state(&crm).await.expect("state").consecutive_failures,
        1
    );
    let opened = settle(store, &td, BreakerSignal::Unhealthy, now.plus_secs(1)).await;
    assert_eq!(
        opened.transition,
        transition(BreakerState::Closed, BreakerState::Open)
    );
    let st = store.state(&crm).await.expect("state");
    assert_eq!(st.breaker, BreakerState::Open);
    assert_eq!(st.open_until, Some(now.plus_secs(31)));
    assert_eq!(st.opened_at, Some(now.plus_secs(1)));
    assert_eq!(st.slots.in_flight, 0);

    // Open: callers wait until the cooldown ends.
    let e = store
        .admit(&req("crm", "create_lead", "acme", 5, now.plus_secs(10)))
        .await;
    let until = now.plus_secs(31);
    assert_eq!(
        e.expect("admit"),
        Admission::Deferred {
            until,
            reason: DeferReason::BreakerOpen
        }
    );

    // Cooldown over: one probe; others wait for it; an abandoned probe is taken over.
    let tp = admitted(
        store,
        &req("crm", "create_lead", "acme", 5, now.plus_secs(31)),
    )
    .await;
    assert!(tp.probe);
    let st = store.state(&crm).await.expect("state");
    assert_eq!(st.breaker, BreakerState::HalfOpen);
    assert_eq!(
        st.probe.as_ref().map(|p| (&p.holder, p.expires_at)),
        Some((&tp.holder, now.plus_secs(51)))
    );
    let q = store
        .admit(&req("crm", "create_lead", "acme", 5, now.plus_secs(32)))
        .await;
    let until = now.plus_secs(37);
    assert_eq!(
        q.expect("admit"),
        Admission::Deferred {
            until,
            reason: DeferReason::ProbeInFlight
        }
    );
    let tq = admitted(
        store,
        &req("crm", "create_lead", "acme", 5, now.plus_secs(51)),
    )
    .await;
    assert!(tq.probe, "the probe lease expired: taken over");
    // The first prober settles late: its slot is released but the breaker is the new probe's.
    let late = settle(store, &tp, BreakerSignal::Healthy, now.plus_secs(52)).await;
    assert_eq!(
        late,
        SettleReport {
            released: true,
            transition: None
        }
    );
    assert_eq!(
        store.state(&crm).await.expect("state").breaker,
        BreakerState::HalfOpen
    );
    // A failed probe re-opens.
    let reopened = settle(store, &tq, BreakerSignal::Unhealthy, now.plus_secs(53)).await;
    assert_eq!(
        reopened.transition,
        transition(BreakerState::HalfOpen, BreakerState::Open)
    );
    let st = store.state(&crm).await.expect("state");
    assert_eq!(
        (st.breaker, st.open_until, st.probe.clone()),
        (BreakerState::Open, Some(now.plus_secs(83)), None)
    );
    // A healthy probe closes.
    let tr = admitted(
        store,
        &req("crm", "create_lead", "acme", 5, now.plus_secs(83)),
    )
    .await;
    assert!(tr.probe);
    let closed = settle(store, &tr, BreakerSignal::Healthy, now.plus_secs(84)).await;
    assert_eq!(
        closed.transition,
        transition(BreakerState::HalfOpen, BreakerState::Closed)
    );
    let st = store.state(&crm).await.expect("state");
    assert_eq!(
        (st.breaker, st.open_until, st.opened_at),
        (BreakerState::Closed, None, None)
    );
    assert_eq!(
        (st.consecutive_failures, st.slots.in_flight, st.probe),
        (0, 0, None)
    );
    assert_eq!(st.expires_at, Some(SETTINGS.expires_at(now.plus_secs(84))));

    // A healthy call between failures resets the count.
    for signal in [
        BreakerSignal::Unhealthy,
        BreakerSignal::Healthy,
        BreakerSignal::Unhealthy,
    ] {
        let t = admitted(
            store,
            &req("crm", "create_lead", "acme", 5, now.plus_secs(90)),
        )
        .await;
        assert_eq!(
            settle(store, &t, signal, now.plus_secs(90))
                .await
                .transition,
            None
        );
    }
    assert_eq!(
        store.state(&crm).await.expect("state").breaker,
        BreakerState::Closed
    );
    let t = admitted(
        store,
        &req("crm", "create_lead", "acme", 5, now.plus_secs(90)),
    )
    .await;
    settle(store, &t, BreakerSignal::Healthy, now.plus_secs(90)).await;

    // A slot whose holder died is reclaimed after its TTL; the dead holder's settle is harmless.
    let mut s = req("crm", "create_lead", "acme", 1, now.plus_secs(100));
    s.slot_ttl_secs = 10;
    let ts = admitted(store, &s).await;
    let held = store
        .admit(&req("crm", "create_lead", "acme", 1, now.plus_secs(109)))
        .await;
    assert!(matches!(
        held.expect("admit"),
        Admission::Deferred {
            reason: DeferReason::SlotsFull,
            ..
        }
    ));
    let tt = admitted(
        store,
        &req("crm", "create_lead", "acme", 1, now.plus_secs(110)),
    )
    .await;
    assert_eq!(store.state(&crm).await.expect("state").slots.in_flight, 1);
    let dead = settle(store, &ts, BreakerSignal::Healthy, now.plus_secs(111)).await;
    assert_eq!(
        dead,
        SettleReport {
            released: false,
            transition: None
        }
    );
    assert_eq!(store.state(&crm).await.expect("state").slots.in_flight, 1);
    let live = settle(store, &tt, BreakerSignal::Healthy, now.plus_secs(111)).await;
    assert!(live.released);
    assert_eq!(store.state(&crm).await.expect("state").slots.in_flight, 0);
}

async fn kill_switches<C: ConnectorStore>(store: &C) {
    let now = t0().plus_secs(200);
    let (crm, erp): (ConnectorId, ConnectorId) =
        (id!(ConnectorId, "crm2"), id!(ConnectorId, "erp"));
    let known = [crm.clone(), erp.clone()];
    // crm2 has state; erp has none yet.
    let t = admitted(store, &req("crm2", "get_lead", "acme", 5, now)).await;
    settle(store, &t, BreakerSignal::Healthy, now).await;

    let tool = switch(
        SwitchTarget::Tool {
            connector: crm.clone(),
            tool: id!(ToolName, "create_lead"),
        },
        now,
    );
    store.set_switch(tool.clone(), &known).await.expect("set");
    let refused = store
        .admit(&req("crm2", "create_lead", "acme", 5, now))
        .await
        .expect("admit");
    assert_eq!(refused, Admission::Refused(tool.clone()));
    let t = admitted(store, &req("crm2", "get_lead", "acme", 5, now)).await;
    settle(store, &t, BreakerSignal::Healthy, now).await;

    // A tenant switch governs every connector, including one first used after it was set.
    let tenant = switch(
        SwitchTarget::Tenant {
            tenant: id!(TenantId, "acme"),
        },
        now,
    );
    store.set_switch(tenant.clone(), &known).await.expect("set");
    let on_erp = store
        .admit(&req("erp", "sync", "acme", 5, now))
        .await
        .expect("admit");
    assert_eq!(on_erp, Admission::Refused(tenant.clone()));
    let t = admitted(store, &req("erp", "sync", "globex", 5, now)).await;
    settle(store, &t, BreakerSignal::Healthy, now).await;

    let conn = switch(
        SwitchTarget::Connector {
            connector: crm.clone(),
        },
        now.plus_secs(1),
    );
    store.set_switch(conn.clone(), &known).await.expect("set");
    let r = store
        .admit(&req("crm2", "get_lead", "globex", 5, now))
        .await
        .expect("admit");
    assert_eq!(r, Admission::Refused(conn.clone()));
    // The connector switch is checked before the tool and tenant ones.
    let r = store
        .admit(&req("crm2", "create_lead", "acme", 5, now))
        .await
        .expect("admit");
    assert_eq!(r, Admission::Refused(conn.clone()));

    let listed = store.switches().await.expect("switches");
    assert_eq!(listed, vec![conn.clone(), tenant.clone(), tool.clone()]);
    let st = store.state(&crm).await.expect("state");
    assert_eq!(
        st.switches,
        vec![conn.clone(), tenant.clone(), tool.clone()]
    );
    let st = store.state(&erp).await.expect("state");
    assert_eq!(
        st.switches,
        vec![tenant.clone()],
        "erp only carries the switches that govern it"
    );

    // A switch set for a connector nobody has used yet (not in the known list) still refuses.
    let ghost = switch(
        SwitchTarget::Connector {
            connector: id!(ConnectorId, "ledgerly"),
        },
        now,
    );
    store.set_switch(ghost.clone(), &[]).await.expect("set");
    let r = store
        .admit(&req("ledgerly", "post", "globex", 5, now))
        .await
        .expect("admit");
    assert_eq!(r, Admission::Refused(ghost.clone()));

    // Replacing a switch keeps one record with the new audit fields.
    let mut again = tool.clone();
    again.reason = "still bad".into();
    store.set_switch(again.clone(), &known).await.expect("set");
    assert_eq!(store.switches().await.expect("switches").len(), 4);

    // Clearing.
    for target in [&conn.target, &tenant.target, &again.target, &ghost.target] {
        assert!(store.clear_switch(target, &known).await.expect("clear"));
        assert!(!store.clear_switch(target, &known).await.expect("clear"));
    }
    assert!(store.switches().await.expect("switches").is_empty());
    assert!(store.state(&crm).await.expect("state").switches.is_empty());
    let t = admitted(store, &req("crm2", "create_lead", "acme", 5, now)).await;
    settle(store, &t, BreakerSignal::Healthy, now).await;
    let t = admitted(store, &req("erp", "sync", "acme", 5, now)).await;
    settle(store, &t, BreakerSignal::Healthy, now).await;
}

fn limit(limit: u32, now: Timestamp, reason: &str) -> LimitOverride {
    LimitOverride {
        limit,
        set_by: "oncall@acme".into(),
        set_at: now,
        reason: reason.into(),
    }
}

async fn limit_override<C: ConnectorStore>(store: &C) {
    let now = t0().plus_secs(300);
    let crm = id!(ConnectorId, "crm3");
    let slots_full = Admission::Deferred {
        until: now.plus_secs(5),
        reason: DeferReason::SlotsFull,
    };
    // Set before the connector's first use: the state is created uninitialized and the first
    // admission (which initializes it) already applies the override.
    let three = limit(3, now, "vendor raised our quota");
    store
        .set_limit(&crm, Some(three.clone()))
        .await
        .expect("set_limit");
    let st = store.state(&crm).await.expect("state");
    assert!(!st.initialized);
    assert_eq!(st.limit_override, Some(three.clone()));

    // The request says 1; the override says 3.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(admitted(store, &req("crm3", "create_lead", "acme", 1, now)).await);
    }
    let fourth = req("crm3", "create_lead", "acme", 1, now);
    assert_eq!(store.admit(&fourth).await.expect("admit"), slots_full);
    let st = store.state(&crm).await.expect("state");
    assert_eq!((st.initialized, st.slots.in_flight), (true, 3));
    assert_eq!(st.limit_override, Some(three));

    // Replacing the override keeps one, with the new audit fields; it applies at once.
    let four = limit(4, now.plus_secs(1), "one more");
    store
        .set_limit(&crm, Some(four.clone()))
        .await
        .expect("set_limit");
    held.push(admitted(store, &fourth).await);
    let st = store.state(&crm).await.expect("state");
    assert_eq!((st.slots.in_flight, st.limit_override), (4, Some(four)));

    // A limit of 0 is refused and changes nothing.
    let zero = store.set_limit(&crm, Some(limit(0, now, "stop"))).await;
    assert!(
        matches!(zero, Err(StoreError::InvalidInput { .. })),
        "{zero:?}"
    );
    assert_eq!(
        store
            .state(&crm)
            .await
            .expect("state")
            .limit_override
            .map(|o| o.limit),
        Some(4)
    );

    // Cleared: back to the request's limit of 1, with 4 still held.
    store.set_limit(&crm, None).await.expect("clear");
    assert_eq!(store.state(&crm).await.expect("state").limit_override, None);
    let r = store
        .admit(&req("crm3", "create_lead", "acme", 1, now))
        .await
        .expect("admit");
    assert_eq!(r, slots_full);
    // Clearing again, or for a connector with no state, is harmless and creates nothing.
    store.set_limit(&crm, None).await.expect("clear");
    let ghost = id!(ConnectorId, "nolimit");
    store.set_limit(&ghost, None).await.expect("clear");
    assert_eq!(
        store.state(&ghost).await.expect("state"),
        ConnectorState::fresh(ghost.clone())
    );

    for t in &held {
        assert!(settle(store, t, BreakerSignal::Healthy, now).await.released);
    }
    assert_eq!(store.state(&crm).await.expect("state").slots.in_flight, 0);
    let t = admitted(store, &req("crm3", "create_lead", "acme", 1, now)).await;
    let r = store
        .admit(&req("crm3", "create_lead", "acme", 1, now))
        .await
        .expect("admit");
    assert_eq!(r, slots_full);
    settle(store, &t, BreakerSignal::Healthy, now).await;
}
