//! The CloudWatch adapter on ministack: points published with `PutMetricData` read back by
//! `ListMetrics` and `GetMetricStatistics` (names, units, dimensions, values), and the alarms in
//! state ALARM found by prefix with `DescribeAlarms`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, StateValue, Statistic};
use aws_sdk_cloudwatch::Client;
use sluice::adapters::cloudwatch::{
    CloudWatchAlarms, CloudWatchError, CloudWatchPublisher, MetricPoint, MetricUnit,
    MAX_DATUMS_PER_CALL,
};
use sluice::domain::time::Timestamp;
use sluice::ports::{AlarmSource, AlarmState};
use sluice_tests::engines;

/// A minute ago: inside every statistics window below, and never in the future.
fn a_minute_ago() -> Timestamp {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    Timestamp::from_millis(now.as_millis() as i64 - 60_000)
}

/// Dimensions as (name, value) pairs.
type Dims<'a> = &'a [(&'a str, &'a str)];
/// (sum, maximum, sample count) of a series.
type Stats = (f64, f64, f64);

/// A client, a namespace nobody else uses, and a publisher into it.
async fn fresh_namespace() -> (Client, String, CloudWatchPublisher) {
    let client = engines::cloudwatch().await;
    let namespace = engines::unique_name("SluiceTest");
    let publisher = CloudWatchPublisher::new(client.clone(), &namespace);
    (client, namespace, publisher)
}

fn point(name: &str, unit: MetricUnit, dims: &[(&str, &str)], value: f64) -> MetricPoint {
    MetricPoint {
        name: name.to_owned(),
        unit,
        dimensions: dims
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        value,
        at: a_minute_ago(),
    }
}

/// (metric name, sorted "Name=Value" dimensions) of every metric in `namespace`.
async fn listed(client: &Client, namespace: &str) -> BTreeSet<(String, Vec<String>)> {
    let mut out = BTreeSet::new();
    let mut token = None;
    loop {
        let page = client
            .list_metrics()
            .namespace(namespace)
            .set_next_token(token)
            .send()
            .await
            .expect("ListMetrics");
        for metric in page.metrics() {
            let mut dims: Vec<String> = metric
                .dimensions()
                .iter()
                .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
                .collect();
            dims.sort();
            out.insert((metric.metric_name().unwrap_or("").to_owned(), dims));
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    out
}

/// (sum, maximum, sample count) of one series over the last 15 minutes, all datapoints summed.
async fn statistics(client: &Client, namespace: &str, name: &str, dims: Dims<'_>) -> Stats {
    let now = SystemTime::now();
    let out = client
        .get_metric_statistics()
        .namespace(namespace)
        .metric_name(name)
        .set_dimensions(Some(
            dims.iter()
                .map(|(n, v)| Dimension::builder().name(*n).value(*v).build())
                .collect(),
        ))
        .start_time(DateTime::from(now - Duration::from_secs(900)))
        .end_time(DateTime::from(now + Duration::from_secs(300)))
        .period(60)
        .statistics(Statistic::Sum)
        .statistics(Statistic::Maximum)
        .statistics(Statistic::SampleCount)
        .send()
        .await
        .expect("GetMetricStatistics");
    let points = out.datapoints();
    assert!(!points.is_empty(), "no datapoints for {name} {dims:?}");
    let sum = points.iter().map(|p| p.sum().expect("Sum")).sum();
    let max = points
        .iter()
        .map(|p| p.maximum().expect("Maximum"))
        .fold(f64::MIN, f64::max);
    let count = points
        .iter()
        .map(|p| p.sample_count().expect("SampleCount"))
        .sum();
    (sum, max, count)
}

#[tokio::test]
async fn published_points_read_back_with_names_dimensions_and_values() {
    let (client, namespace, publisher) = fresh_namespace().await;
    let ms = MetricUnit::Milliseconds;
    let count = MetricUnit::Count;
    let points = [
        point("tool_latency_ms", ms, &[("Connector", "crm")], 100.0),
        point("tool_latency_ms", ms, &[("Connector", "crm")], 300.0),
        point(
            "tool_latency_ms",
            ms,
            &[("Connector", "crm"), ("Tool", "upsert")],
            300.0,
        ),
        point("tool_latency_ms", ms, &[], 100.0),
        point("tool_latency_ms", ms, &[], 300.0),
        point(
            "pipeline_run_outcome_total",
            count,
            &[("Outcome", "failed")],
            1.0,
        ),
        point("pipeline_run_outcome_total", count, &[], 1.0),
    ];
    assert_eq!(publisher.publish(&points).await.expect("publish"), 7);

    let expected: BTreeSet<(String, Vec<String>)> = [
        ("tool_latency_ms", vec!["Connector=crm"]),
        ("tool_latency_ms", vec!["Connector=crm", "Tool=upsert"]),
        ("tool_latency_ms", vec![]),
        ("pipeline_run_outcome_total", vec!["Outcome=failed"]),
        ("pipeline_run_outcome_total", vec![]),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_owned(), d.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(listed(&client, &namespace).await, expected);

    let series: [(&str, Dims, Stats); 3] = [
        (
            "tool_latency_ms",
            &[("Connector", "crm")],
            (400.0, 300.0, 2.0),
        ),
        (
            "tool_latency_ms",
            &[("Connector", "crm"), ("Tool", "upsert")],
            (300.0, 300.0, 1.0),
        ),
        (
            "pipeline_run_outcome_total",
            &[("Outcome", "failed")],
            (1.0, 1.0, 1.0),
        ),
    ];
    for (name, dims, expected) in series {
        let got = statistics(&client, &namespace, name, dims).await;
        assert_eq!(got, expected, "{name} {dims:?}: (sum, max, samples)");
    }
}

/// The aggregate series (no dimensions) on its own: ministack's GetMetricStatistics without
/// dimensions sums every series of the metric (CloudWatch returns only the dimensionless one),
/// so the aggregate's values are read back in a namespace that holds nothing else.
#[tokio::test]
async fn aggregate_points_read_back() {
    let (client, namespace, publisher) = fresh_namespace().await;
    let ms = MetricUnit::Milliseconds;
    let points = [
        point("tool_latency_ms", ms, &[], 100.0),
        point("tool_latency_ms", ms, &[], 300.0),
    ];
    assert_eq!(publisher.publish(&points).await.expect("publish"), 2);
    assert_eq!(
        statistics(&client, &namespace, "tool_latency_ms", &[]).await,
        (400.0, 300.0, 2.0)
    );
}

#[tokio::test]
async fn more_points_than_one_call_takes_are_published_in_chunks() {
    let (client, namespace, publisher) = fresh_namespace().await;
    let total = MAX_DATUMS_PER_CALL + 7;
    let points: Vec<MetricPoint> = (0..total)
        .map(|_| {
            point(
                "pipeline_runs_total",
                MetricUnit::Count,
                &[("Pipeline", "p")],
                1.0,
            )
        })
        .collect();
    assert_eq!(publisher.publish(&points).await.expect("publish"), total);
    let (sum, _, samples) = statistics(
        &client,
        &namespace,
        "pipeline_runs_total",
        &[("Pipeline", "p")],
    )
    .await;
    assert_eq!((sum, samples), (total as f64, total as f64));
}

#[tokio::test]
async fn an_invalid_point_publishes_nothing() {
    let (client, namespace, publisher) = fresh_namespace().await;
    let points = [
        point("tool_error", MetricUnit::Count, &[], 0.0),
        point("tool_latency_ms", MetricUnit::Milliseconds, &[], f64::NAN),
    ];
    match publisher.publish(&points).await {
        Err(CloudWatchError::InvalidPoint { index: 1, name, .. }) => {
            assert_eq!(name, "tool_latency_ms")
        }
        other => panic!("expected InvalidPoint at index 1, got {other:?}"),
    }
    assert!(listed(&client, &namespace).await.is_empty());
}

/// Creates a metric alarm named `name` on a metric nobody publishes.
async fn put_alarm(client: &Client, name: &str) {
    client
        .put_metric_alarm()
        .alarm_name(name)
        .namespace("SluiceTest")
        .metric_name("tool_error")
        .statistic(Statistic::Sum)
        .period(300)
        .evaluation_periods(1)
        .threshold(5.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .treat_missing_data("notBreaching")
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutMetricAlarm {name}: {e:?}"));
}

async fn set_state(client: &Client, name: &str, state: StateValue, reason: &str) {
    client
        .set_alarm_state()
        .alarm_name(name)
        .state_value(state)
        .state_reason(reason)
        .send()
        .await
        .unwrap_or_else(|e| panic!("SetAlarmState {name}: {e:?}"));
}

#[tokio::test]
async fn in_alarm_returns_exactly_the_firing_alarms_with_the_prefix() {
    let client = engines::cloudwatch().await;
    let prefix = format!("{}-", engines::unique_name("sluice-test"));
    let firing = format!("{prefix}tool-errors");
    let quiet = format!("{prefix}dlq-depth");
    let other = format!("{}-tool-errors", engines::unique_name("other-stack"));
    for name in [&firing, &quiet, &other] {
        put_alarm(&client, name).await;
    }
    let alarms = CloudWatchAlarms::new(client.clone(), &prefix);
    assert_eq!(alarms.in_alarm().await.expect("in_alarm"), vec![]);

    set_state(
        &client,
        &firing,
        StateValue::Alarm,
        "Threshold Crossed: 9 > 5",
    )
    .await;
    // Another stack's alarm firing must not show up.
    set_state(&client, &other, StateValue::Alarm, "Threshold Crossed").await;

    let found = alarms.in_alarm().await.expect("in_alarm");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].name, firing);
    assert_eq!(found[0].reason, "Threshold Crossed: 9 > 5");
    assert!(found[0].since.is_some(), "{found:?}");
    // Through the port, as the reliability summary calls it.
    let through_port: Vec<AlarmState> = AlarmSource::in_alarm(&alarms).await.expect("port");
    assert_eq!(through_port, found);

    set_state(&client, &firing, StateValue::Ok, "recovered").await;
    assert_eq!(alarms.in_alarm().await.expect("in_alarm"), vec![]);
}

#[tokio::test]
async fn composite_alarms_are_reported_too() {
    let client = engines::cloudwatch().await;
    let prefix = format!("{}-", engines::unique_name("sluice-test"));
    let child = format!("{prefix}executor-errors");
    let composite = format!("{prefix}any");
    put_alarm(&client, &child).await;
    client
        .put_composite_alarm()
        .alarm_name(&composite)
        .alarm_rule(format!("ALARM(\"{child}\")"))
        .send()
        .await
        .expect("PutCompositeAlarm");
    set_state(&client, &child, StateValue::Alarm, "child fired").await;
    set_state(&client, &composite, StateValue::Alarm, "a child fired").await;
    let found = CloudWatchAlarms::new(client, &prefix)
        .in_alarm()
        .await
        .expect("in_alarm");
    let names: Vec<&str> = found.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec![composite.as_str(), child.as_str()]);
}

#[tokio::test]
async fn in_alarm_follows_next_token_across_pages() {
    let client = engines::cloudwatch().await;
    let prefix = format!("{}-", engines::unique_name("sluice-test"));
    // DescribeAlarms pages hold at most 100 alarms.
    let names: Vec<String> = (0..105).map(|i| format!("{prefix}alarm-{i:03}")).collect();
    for name in &names {
        put_alarm(&client, name).await;
        set_state(&client, name, StateValue::Alarm, "Threshold Crossed").await;
    }
    // The engine does page: one page of 100 and a NextToken, so the adapter must follow it.
    let first = client
        .describe_alarms()
        .alarm_name_prefix(&prefix)
        .max_records(100)
        .send()
        .await
        .expect("DescribeAlarms");
    assert_eq!(first.metric_alarms().len(), 100);
    assert!(first.next_token().is_some());

    let found = CloudWatchAlarms::new(client, &prefix)
        .in_alarm()
        .await
        .expect("in_alarm");
    let found: Vec<String> = found.into_iter().map(|a| a.name).collect();
    assert_eq!(found, names);
}

/// What the local run's `--cloudwatch` does: the recorder's points, drained and published,
/// read back as the contract's metrics with every dimension set.
#[tokio::test]
async fn the_local_runs_recorded_metrics_are_published_with_every_dimension_set() {
    let (client, namespace, publisher) = fresh_namespace().await;
    let clock = sluice::clock::FakeClock::at(a_minute_ago());
    let metrics = sluice::telemetry::Metrics::new(
        namespace.clone(),
        std::sync::Arc::new(clock),
        sluice::telemetry::EmfSink::Off,
    );
    metrics.keep_points(true);
    metrics.tool_call("crm", "create", 40, false);
    metrics.tool_call("crm", "create", 60, true);
    metrics.count(sluice::telemetry::WEBHOOK_DEDUPED, &[("Source", "gh")]);
    // 2 calls x 2 metrics x 3 dimension sets + 1 counter x 2 sets.
    assert_eq!(
        sluice_local::publish::publish_once(&metrics, &publisher).await,
        14
    );
    assert_eq!(
        sluice_local::publish::publish_once(&metrics, &publisher).await,
        0,
        "drained"
    );

    let series = listed(&client, &namespace).await;
    for expected in [
        ("tool_latency_ms", vec!["Connector=crm"]),
        ("tool_latency_ms", vec!["Connector=crm", "Tool=create"]),
        ("tool_error", vec!["Connector=crm", "Tool=create"]),
        ("webhook_deduped_total", vec!["Source=gh"]),
        ("webhook_deduped_total", vec![]),
    ] {
        let key = (
            expected.0.to_owned(),
            expected
                .1
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        );
        assert!(series.contains(&key), "{key:?} not in {series:?}");
    }
    let by_tool = [("Connector", "crm"), ("Tool", "create")];
    let (sum, max, count) = statistics(&client, &namespace, "tool_latency_ms", &by_tool).await;
    assert_eq!((sum, max, count), (100.0, 60.0, 2.0));
    let (errors, _, _) = statistics(&client, &namespace, "tool_error", &by_tool).await;
    assert_eq!(errors, 1.0);
}
