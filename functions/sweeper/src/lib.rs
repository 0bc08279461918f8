//! The sweeper Lambda's handler: a scheduled EventBridge event in, the sweep's report out (as
//! the function's JSON result, and as one log line).

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use sluice::app::App;
use sluice::ports::{Backend, ToolClient};
use sluice::usecases::sweep::{sweep, SweepError, SweepReport};

/// Sweeps once for the schedule event `event`.
pub async fn handle<B: Backend, T: ToolClient>(
    app: &App<B, T>,
    event: EventBridgeEvent<serde_json::Value>,
) -> Result<SweepReport, SweepError> {
    tracing::info!(
        event_id = event.id.as_deref().unwrap_or(""),
        scheduled_at = ?event.time,
        "scheduled sweep"
    );
    sweep(app).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use sluice::clock::{Clock, FakeClock};
    use sluice::config::ReliabilityConfig;
    use sluice::domain::execution::{ExecutionStatus, NewExecution};
    use sluice::domain::ids::{ExecutionId, PipelineName, RunKey, SourceId, TenantId};
    use sluice::domain::time::Timestamp;
    use sluice::manifest::{Manifest, Secrets};
    use sluice::ports::ExecutionStore;

    use super::*;

    const EVENT: &str = include_str!("../../../events/sweeper_schedule.json");
    const MANIFEST: &str = include_str!("../../../infra/sluice.example.yaml");

    #[tokio::test]
    async fn a_schedule_event_sweeps_and_reports() {
        let event: EventBridgeEvent<serde_json::Value> =
            serde_json::from_str(EVENT).expect("a schedule event");
        assert_eq!(event.detail_type, "Scheduled Event");

        let clock = FakeClock::at(Timestamp::from_secs(1_767_225_600));
        let manifest = Manifest::parse(MANIFEST, "sluice.example.yaml").unwrap();
        let config = ReliabilityConfig::from_lookup(|_| None).unwrap();
        let app = sluice::startup::memory_app(
            manifest,
            Secrets::default(),
            config,
            Arc::new(clock.clone()) as Arc<dyn Clock>,
        );
        let source = SourceId::parse("github-demo").unwrap();
        let run_key = RunKey::parse("acme/app:abc").unwrap();
        let id = ExecutionId::for_run_key(&TenantId::parse("demo").unwrap(), &source, &run_key);
        let new = NewExecution {
            id: id.clone(),
            tenant: TenantId::parse("demo").unwrap(),
            source,
            pipeline: PipelineName::parse("review").unwrap(),
            run_key,
            replay_of: None,
            not_before: None,
        };
        app.backend
            .executions
            .create(new, clock.now())
            .await
            .unwrap();
        clock.advance_secs(120);

        let report = handle(&app, event).await.unwrap();
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            json!({
                "inspected": 1,
                "recovered": 0,
                "requeued": 1,
                "skipped": 0,
                "failed": 0,
                "truncated": false,
            })
        );
        let record = app.backend.executions.get(&id).await.unwrap().unwrap();
        assert_eq!(record.status, ExecutionStatus::Queued);
        assert_eq!(app.backend.queue.len(), 1);
    }
}
