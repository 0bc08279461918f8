//! `--cloudwatch`: the local run forwards its metrics to CloudWatch (or a local engine that
//! speaks it, such as ministack) with `PutMetricData`, where the Lambda functions print EMF
//! lines instead. Every [`PUBLISH_EVERY`] the recorded points are drained and sent, at most
//! [`MAX_POINTS_PER_TICK`] per tick; a failed send is logged and its points dropped (metrics
//! are never worth stalling the run for).

use std::time::Duration;

use sluice::adapters::cloudwatch::{CloudWatchPublisher, MetricPoint, MetricUnit};
use sluice::telemetry::{Metrics, Point, Unit};
use tokio::sync::watch;

/// How often points are sent.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(10);
/// The most points one tick sends (the publisher splits them into calls of 1000).
pub const MAX_POINTS_PER_TICK: usize = 5_000;

/// The datums of one recorded point: one per dimension set it is published with.
pub fn datums(point: &Point) -> Vec<MetricPoint> {
    let unit = match point.unit {
        Unit::Milliseconds => MetricUnit::Milliseconds,
        Unit::Count => MetricUnit::Count,
    };
    point
        .dimension_sets
        .iter()
        .map(|set| MetricPoint {
            name: point.name.to_owned(),
            unit,
            dimensions: point
                .dimensions
                .iter()
                .filter(|(key, _)| set.contains(&key.as_str()))
                .cloned()
                .collect(),
            value: point.value,
            at: point.at,
        })
        .collect()
}

/// Sends what `metrics` recorded until `stop` turns true, then once more.
pub async fn publish_loop(
    metrics: Metrics,
    publisher: CloudWatchPublisher,
    mut stop: watch::Receiver<bool>,
) {
    metrics.keep_points(true);
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => true,
            _ = tick.tick() => false,
        };
        publish_once(&metrics, &publisher).await;
        if stopping {
            return;
        }
    }
}

/// Drains up to [`MAX_POINTS_PER_TICK`] points and sends them; how many datums went out.
pub async fn publish_once(metrics: &Metrics, publisher: &CloudWatchPublisher) -> usize {
    let points = metrics.drain_points(MAX_POINTS_PER_TICK);
    if points.is_empty() {
        return 0;
    }
    let datums: Vec<MetricPoint> = points.iter().flat_map(datums).collect();
    match publisher.publish(&datums).await {
        Ok(sent) => {
            tracing::debug!(points = points.len(), datums = sent, "metrics published");
            sent
        }
        Err(error) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                dropped = points.len(),
                "metrics not published"
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice::clock::FakeClock;
    use sluice::domain::time::Timestamp;
    use sluice::telemetry::EmfSink;

    use super::*;

    #[test]
    fn a_point_becomes_one_datum_per_dimension_set() {
        let clock = FakeClock::at(Timestamp::from_millis(1_000));
        let metrics = Metrics::new("Sluice", std::sync::Arc::new(clock), EmfSink::Off);
        metrics.keep_points(true);
        metrics.tool_call("crm", "create", 12, false);
        let points = metrics.drain_points(10);
        assert_eq!(points.len(), 2, "latency and error");
        let latency = datums(&points[0]);
        let dims: Vec<Vec<(String, String)>> =
            latency.iter().map(|d| d.dimensions.clone()).collect();
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            dims,
            [
                vec![pair("Connector", "crm")],
                vec![pair("Connector", "crm"), pair("Tool", "create")],
                vec![],
            ]
        );
        assert!(latency
            .iter()
            .all(|d| d.value == 12.0 && d.unit == MetricUnit::Milliseconds));
    }
}
