//! CloudWatch: [`CloudWatchAlarms`] reads which of this deployment's alarms are firing (the
//! [`AlarmSource`] of the health and reliability summaries), and [`CloudWatchPublisher`] puts
//! metric points with `PutMetricData` (the local run pointed at CloudWatch or ministack; the
//! Lambda functions emit Embedded Metric Format lines instead and make no metrics call).

use aws_sdk_cloudwatch::config::http::HttpResponse;
use aws_sdk_cloudwatch::error::SdkError;
use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsError;
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError;
use aws_sdk_cloudwatch::types::{AlarmType, Dimension, MetricDatum, StandardUnit, StateValue};
use aws_smithy_types::date_time::{DateTime, Format};

use super::sdk_failure::{ErrorCodes, Failure};
use crate::domain::time::Timestamp;
use crate::error::StoreError;
use crate::ports::{AlarmSource, AlarmState, StoreResult};

/// `PutMetricData`'s cap on datums per request.
pub const MAX_DATUMS_PER_CALL: usize = 1000;
/// CloudWatch's cap on dimensions per metric.
pub const MAX_DIMENSIONS: usize = 30;
/// `DescribeAlarms`' cap on alarms per page.
const MAX_RECORDS: i32 = 100;

/// CloudWatch's error codes that say "slow down" and "try again".
const CLOUDWATCH_CODES: ErrorCodes = ErrorCodes {
    throttling: &["Throttling", "ThrottlingException", "RequestLimitExceeded"],
    transient: &[
        "InternalServiceError",
        "InternalFailure",
        "ServiceUnavailable",
    ],
};

/// A CloudWatch call that failed, or a metric point CloudWatch would refuse.
#[derive(Debug, thiserror::Error)]
pub enum CloudWatchError {
    /// `DescribeAlarms` failed.
    #[error("DescribeAlarms with prefix {prefix:?} failed")]
    DescribeAlarms {
        prefix: String,
        #[source]
        source: SdkError<DescribeAlarmsError, HttpResponse>,
    },
    /// A `PutMetricData` call failed; the `published` points before it were stored.
    #[error("PutMetricData to {namespace} failed after {published} points were published")]
    PutMetricData {
        namespace: String,
        published: usize,
        #[source]
        source: SdkError<PutMetricDataError, HttpResponse>,
    },
    /// A point is not publishable; nothing was sent.
    #[error("metric point {index} ({name:?}): {problem}")]
    InvalidPoint {
        index: usize,
        name: String,
        problem: &'static str,
    },
}

impl CloudWatchError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.failure(),
            Some(Failure::Throttled | Failure::Transient)
        )
    }

    /// The SDK failure's kind, `None` for an invalid point.
    fn failure(&self) -> Option<Failure> {
        match self {
            CloudWatchError::DescribeAlarms { source, .. } => {
                Some(Failure::of(&CLOUDWATCH_CODES, source))
            }
            CloudWatchError::PutMetricData { source, .. } => {
                Some(Failure::of(&CLOUDWATCH_CODES, source))
            }
            CloudWatchError::InvalidPoint { .. } => None,
        }
    }

    /// This error as a port's [`StoreError`] for `operation`, keeping it as the source.
    pub fn into_store_error(self, operation: &'static str) -> StoreError {
        match self.failure() {
            Some(failure) => failure.store_error(operation, self),
            None => StoreError::InvalidInput {
                operation,
                detail: self.to_string(),
            },
        }
    }
}

/// An SDK alarm (a `MetricAlarm` or a `CompositeAlarm`: the same accessors, no common trait) as
/// an [`AlarmState`], dated by its last state change.
macro_rules! state_of {
    ($alarm:expr) => {{
        let alarm = $alarm;
        alarm_state(
            alarm.alarm_name(),
            alarm.state_value(),
            alarm.state_reason(),
            alarm
                .state_transitioned_timestamp()
                .or(alarm.state_updated_timestamp()),
        )
    }};
}

/// The alarms of one deployment: those whose names start with a prefix (`<stack>-`).
#[derive(Debug, Clone)]
pub struct CloudWatchAlarms {
    client: aws_sdk_cloudwatch::Client,
    prefix: String,
}

impl CloudWatchAlarms {
    /// The alarms named `prefix...`, read through `client`. An empty prefix means every alarm
    /// of the account and region.
    pub fn new(client: aws_sdk_cloudwatch::Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
        }
    }

    /// The prefix the alarms are selected by.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The metric and composite alarms with the prefix that are in state ALARM, sorted by name
    /// (`DescribeAlarms`, following `NextToken` through every page).
    pub async fn in_alarm(&self) -> Result<Vec<AlarmState>, CloudWatchError> {
        let mut alarms = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_alarms()
                .set_alarm_name_prefix((!self.prefix.is_empty()).then(|| self.prefix.clone()))
                .state_value(StateValue::Alarm)
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .max_records(MAX_RECORDS)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|source| CloudWatchError::DescribeAlarms {
                    prefix: self.prefix.clone(),
                    source,
                })?;
            alarms.extend(page.metric_alarms().iter().filter_map(|a| state_of!(a)));
            alarms.extend(page.composite_alarms().iter().filter_map(|a| state_of!(a)));
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        alarms.sort_by(|a, b| a.name.cmp(&b.name));
        alarms.dedup_by(|a, b| a.name == b.name);
        Ok(alarms)
    }
}

impl AlarmSource for CloudWatchAlarms {
    async fn in_alarm(&self) -> StoreResult<Vec<AlarmState>> {
        CloudWatchAlarms::in_alarm(self)
            .await
            .map_err(|e| e.into_store_error("alarms.in_alarm"))
    }
}

/// `None` without a name or when the alarm is not in ALARM (the request filters by state; this
/// keeps a lax backend from reporting others).
fn alarm_state(
    name: Option<&str>,
    state: Option<&StateValue>,
    reason: Option<&str>,
    since: Option<&DateTime>,
) -> Option<AlarmState> {
    if state.is_some_and(|s| *s != StateValue::Alarm) {
        return None;
    }
    Some(AlarmState {
        name: name.filter(|n| !n.is_empty())?.to_owned(),
        reason: reason.unwrap_or_default().to_owned(),
        since: since.and_then(|t| t.fmt(Format::DateTime).ok()),
    })
}

/// The unit of a [`MetricPoint`]: the two units of Sluice's metric contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricUnit {
    /// Latencies (`tool_latency_ms`).
    Milliseconds,
    /// Everything counted.
    Count,
}

impl MetricUnit {
    fn standard(self) -> StandardUnit {
        match self {
            MetricUnit::Milliseconds => StandardUnit::Milliseconds,
            MetricUnit::Count => StandardUnit::Count,
        }
    }
}

/// One value of one metric series, at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// The metric's name, e.g. `tool_latency_ms`.
    pub name: String,
    pub unit: MetricUnit,
    /// (name, value) pairs; empty for the aggregate series. At most [`MAX_DIMENSIONS`].
    pub dimensions: Vec<(String, String)>,
    /// A finite number.
    pub value: f64,
    /// When it was measured (CloudWatch takes up to two weeks back and two hours ahead).
    pub at: Timestamp,
}

impl MetricPoint {
    /// Why CloudWatch would refuse this point, if it would.
    fn problem(&self) -> Option<&'static str> {
        if self.name.is_empty() {
            Some("the metric name is empty")
        } else if !self.value.is_finite() {
            Some("the value is not a finite number")
        } else if self.dimensions.len() > MAX_DIMENSIONS {
            Some("more than 30 dimensions")
        } else if self
            .dimensions
            .iter()
            .any(|(name, value)| name.is_empty() || value.is_empty())
        {
            Some("a dimension name or value is empty")
        } else {
            None
        }
    }

    fn datum(&self) -> MetricDatum {
        let dimensions = self
            .dimensions
            .iter()
            .map(|(name, value)| Dimension::builder().name(name).value(value).build())
            .collect();
        MetricDatum::builder()
            .metric_name(&self.name)
            .unit(self.unit.standard())
            .set_dimensions(Some(dimensions))
            .value(self.value)
            .timestamp(DateTime::from_millis(self.at.as_millis()))
            .build()
    }
}

/// Publishes metric points into one namespace with `PutMetricData`.
#[derive(Debug, Clone)]
pub struct CloudWatchPublisher {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
}

impl CloudWatchPublisher {
    /// Publishes into `namespace` (e.g. `Sluice`) through `client`.
    pub fn new(client: aws_sdk_cloudwatch::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    /// The namespace points go to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Publishes `points` in calls of at most [`MAX_DATUMS_PER_CALL`] and returns how many were
    /// published. Every point is checked before the first call: an invalid one sends nothing.
    pub async fn publish(&self, points: &[MetricPoint]) -> Result<usize, CloudWatchError> {
        if let Some((index, point, problem)) = points
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.problem().map(|problem| (i, p, problem)))
        {
            return Err(CloudWatchError::InvalidPoint {
                index,
                name: point.name.clone(),
                problem,
            });
        }
        let mut published = 0;
        for chunk in points.chunks(MAX_DATUMS_PER_CALL) {
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(chunk.iter().map(MetricPoint::datum).collect()))
                .send()
                .await
                .map_err(|source| CloudWatchError::PutMetricData {
                    namespace: self.namespace.clone(),
                    published,
                    source,
                })?;
            published += chunk.len();
        }
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str, value: f64, dimensions: &[(&str, &str)]) -> MetricPoint {
        MetricPoint {
            name: name.into(),
            unit: MetricUnit::Count,
            dimensions: dimensions
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            value,
            at: Timestamp::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn a_point_becomes_a_datum_with_its_unit_dimensions_and_time() {
        let mut p = point("tool_latency_ms", 12.5, &[("Connector", "crm")]);
        p.unit = MetricUnit::Milliseconds;
        let datum = p.datum();
        assert_eq!(datum.metric_name(), Some("tool_latency_ms"));
        assert_eq!(datum.unit(), Some(&StandardUnit::Milliseconds));
        assert_eq!(datum.value(), Some(12.5));
        assert_eq!(datum.dimensions().len(), 1);
        assert_eq!(datum.dimensions()[0].name(), Some("Connector"));
        assert_eq!(datum.dimensions()[0].value(), Some("crm"));
        assert_eq!(datum.timestamp().map(|t| t.secs()), Some(1_700_000_000));
    }

    #[test]
    fn unpublishable_points_are_named() {
        assert_eq!(point("m", 1.0, &[]).problem(), None);
        assert!(point("", 1.0, &[]).problem().is_some());
        assert!(point("m", f64::NAN, &[]).problem().is_some());
        assert!(point("m", f64::INFINITY, &[]).problem().is_some());
        assert!(point("m", 1.0, &[("Connector", "")]).problem().is_some());
        let many: Vec<(String, String)> = (0..31).map(|i| (format!("d{i}"), "v".into())).collect();
        let mut p = point("m", 1.0, &[]);
        p.dimensions = many;
        assert!(p.problem().is_some());
    }

    #[test]
    fn only_named_alarms_in_alarm_are_reported() {
        let at = DateTime::from_secs(1_700_000_000);
        let state = alarm_state(
            Some("stack-dlq-depth"),
            Some(&StateValue::Alarm),
            Some("Threshold Crossed"),
            Some(&at),
        );
        assert_eq!(
            state,
            Some(AlarmState {
                name: "stack-dlq-depth".into(),
                reason: "Threshold Crossed".into(),
                since: Some("2023-11-14T22:13:20Z".into()),
            })
        );
        assert_eq!(
            alarm_state(Some("x"), Some(&StateValue::Ok), None, None),
            None
        );
        assert_eq!(
            alarm_state(None, Some(&StateValue::Alarm), None, None),
            None
        );
        assert_eq!(
            alarm_state(Some("x"), None, None, None).map(|s| (s.reason, s.since)),
            Some((String::new(), None))
        );
    }

    #[test]
    fn invalid_points_are_invalid_input_and_not_retryable() {
        let error = CloudWatchError::InvalidPoint {
            index: 3,
            name: "m".into(),
            problem: "the value is not a finite number",
        };
        assert!(!error.is_retryable());
        assert!(matches!(
            error.into_store_error("metrics.publish"),
            StoreError::InvalidInput {
                operation: "metrics.publish",
                ..
            }
        ));
    }
}

/// The alarm source a deployment has: CloudWatch when `SLUICE_ALARM_PREFIX` is set, else none
/// (the local run without CloudWatch, tests).
#[derive(Debug, Clone, Default)]
pub enum Alarms {
    #[default]
    Off,
    CloudWatch(CloudWatchAlarms),
}

impl Alarms {
    /// `cloudwatch` or `off`, as the summaries name the source.
    pub fn source(&self) -> &'static str {
        match self {
            Alarms::Off => "off",
            Alarms::CloudWatch(_) => "cloudwatch",
        }
    }
}

impl AlarmSource for Alarms {
    async fn in_alarm(&self) -> StoreResult<Vec<AlarmState>> {
        match self {
            Alarms::Off => crate::ports::NoAlarms.in_alarm().await,
            Alarms::CloudWatch(alarms) => AlarmSource::in_alarm(alarms).await,
        }
    }
}
