//! What an alert is, pure: its type and severity, the fields it carries, the key that makes two
//! alerts "the same" for dedup, the JSON body sent to the operator's webhook, and the records
//! the [`crate::ports::AlertStore`] keeps (counters, dead letters). No I/O, no clock.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::ids::{ExecutionId, TenantId};
use crate::domain::time::Timestamp;

/// How urgent an alert is; ordered `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// `low`, `medium`, `high` or `critical`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity named `text` (case-insensitive, surrounding blanks ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlertType {
    /// A run ended FAILED.
    #[serde(rename = "run.failed")]
    RunFailed,
    /// A run was BLOCKED (loop protection, or a refused tool call).
    #[serde(rename = "run.blocked")]
    RunBlocked,
    /// One tool call of a step failed (it may still be retried).
    #[serde(rename = "tool.step.failed")]
    ToolStepFailed,
    /// A connector's breaker opened.
    #[serde(rename = "breaker.opened")]
    BreakerOpened,
    /// A tool call waits for an operator's approval.
    #[serde(rename = "tool.approval.requested")]
    ToolApprovalRequested,
}

impl AlertType {
    /// Every alert type.
    pub const ALL: [AlertType; 5] = [
        AlertType::RunFailed,
        AlertType::RunBlocked,
        AlertType::ToolStepFailed,
        AlertType::BreakerOpened,
        AlertType::ToolApprovalRequested,
    ];

    /// The wire name, e.g. `run.failed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertType::RunFailed => "run.failed",
            AlertType::RunBlocked => "run.blocked",
            AlertType::ToolStepFailed => "tool.step.failed",
            AlertType::BreakerOpened => "breaker.opened",
            AlertType::ToolApprovalRequested => "tool.approval.requested",
        }
    }

    /// The alert type named `text` (its wire name).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text.trim())
    }

    /// The severity an alert of this type has unless its raiser says otherwise.
    pub const fn default_severity(self) -> Severity {
        match self {
            AlertType::RunFailed | AlertType::RunBlocked | AlertType::BreakerOpened => {
                Severity::High
            }
            AlertType::ToolApprovalRequested => Severity::Medium,
            AlertType::ToolStepFailed => Severity::Low,
        }
    }
}

impl fmt::Display for AlertType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest `error_code` an alert carries.
pub const MAX_ERROR_CODE_LEN: usize = 64;

/// What an empty `error_code` becomes.
pub const UNKNOWN_ERROR_CODE: &str = "unknown";

/// `code` restricted to `[A-Za-z0-9_.:#-]` (`#` keeps a kill-switch target such as
/// `kill_switch:connector#crm` equal to the run's `blocked_reason`): every other character becomes `_`, the result is cut
/// to [`MAX_ERROR_CODE_LEN`] characters, and an empty code becomes [`UNKNOWN_ERROR_CODE`]. An
/// error code is a label, never free text that might carry a message, a URL or a body.
pub fn sanitize_error_code(code: &str) -> String {
    let clean: String = code
        .chars()
        .take(MAX_ERROR_CODE_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '#' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        UNKNOWN_ERROR_CODE.to_owned()
    } else {
        clean
    }
}

/// One alert, as raised by a use case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub alert_type: AlertType,
    pub severity: Severity,
    /// The run it concerns (the payload's `run_id`).
    pub run_id: Option<ExecutionId>,
    /// The run's tenant: kept on a dead letter so a tenant lists only its own; not sent.
    pub tenant: Option<TenantId>,
    /// The pipeline (the seed's `agent_id`).
    pub pipeline: Option<String>,
    /// The connector, when one is involved.
    pub connector: Option<String>,
    /// A sanitized label (see [`sanitize_error_code`]).
    pub error_code: String,
    /// When it was raised.
    pub ts: Timestamp,
}

impl Alert {
    /// An alert of `alert_type` at its default severity, with `error_code` sanitized.
    pub fn new(alert_type: AlertType, error_code: &str, ts: Timestamp) -> Self {
        Self {
            alert_type,
            severity: alert_type.default_severity(),
            run_id: None,
            tenant: None,
            pipeline: None,
            connector: None,
            error_code: sanitize_error_code(error_code),
            ts,
        }
    }

    /// With another severity.
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// About run `run_id` of `tenant`.
    pub fn for_run(mut self, run_id: ExecutionId, tenant: TenantId) -> Self {
        self.run_id = Some(run_id);
        self.tenant = Some(tenant);
        self
    }

    /// About pipeline `pipeline`.
    pub fn with_pipeline(mut self, pipeline: impl Into<String>) -> Self {
        self.pipeline = Some(pipeline.into());
        self
    }

    /// About connector `connector`.
    pub fn with_connector(mut self, connector: impl Into<String>) -> Self {
        self.connector = Some(connector.into());
        self
    }

    /// What makes two alerts the same for dedup: type, pipeline, connector and error code. Not
    /// the run: a storm of runs failing the same way is one alert. Each part is length-prefixed
    /// so that no two different tuples give the same key.
    pub fn dedup_key(&self) -> String {
        let part = |text: Option<&str>| match text {
            Some(t) => format!("{}:{t}", t.len()),
            None => "-".to_owned(),
        };
        format!(
            "{}|{}|{}|{}",
            self.alert_type.as_str(),
            part(self.pipeline.as_deref()),
            part(self.connector.as_deref()),
            part(Some(&self.error_code)),
        )
    }

    /// The webhook body: `alert_type`, `severity`, `run_id`, `pipeline`, `error_code`, `ts`
    /// (RFC 3339 UTC), and `connector` when there is one. Absent `run_id` / `pipeline` are
    /// `null`, so the shape is the same for every alert.
    pub fn payload(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "alert_type": self.alert_type.as_str(),
            "severity": self.severity.as_str(),
            "run_id": self.run_id.as_ref().map(ExecutionId::as_str),
            "pipeline": self.pipeline,
            "error_code": self.error_code,
            "ts": self.ts.to_rfc3339(),
        });
        if let (Some(connector), Some(map)) = (&self.connector, body.as_object_mut()) {
            map.insert("connector".into(), connector.clone().into());
        }
        body
    }
}

/// The alert counters every instance adds to (one shared record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCounts {
    /// Alerts the webhook accepted (2xx).
    pub sent: u64,
    /// Alerts not sent because the same alert was sent within the dedup window.
    pub deduplicated: u64,
    /// Attempts after the first (one per retry).
    pub retried: u64,
    /// Alerts given up on and kept as dead letters.
    pub dead_lettered: u64,
}

impl AlertCounts {
    /// Whether every counter is zero (nothing to add).
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// `self + other`, saturating.
    pub fn plus(self, other: AlertCounts) -> AlertCounts {
        AlertCounts {
            sent: self.sent.saturating_add(other.sent),
            deduplicated: self.deduplicated.saturating_add(other.deduplicated),
            retried: self.retried.saturating_add(other.retried),
            dead_lettered: self.dead_lettered.saturating_add(other.dead_lettered),
        }
    }
}

/// An alert the webhook never accepted, kept so an operator can list it (serializes as the
/// API may show it: `at` in epoch milliseconds, `payload` as sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Unique (a ULID); with `at` it orders letters of the same millisecond.
    pub id: String,
    /// When it was given up on.
    pub at: Timestamp,
    pub alert_type: AlertType,
    /// The run's tenant, if the alert concerned a run.
    pub tenant: Option<TenantId>,
    /// The body that was (to be) sent, already redacted.
    pub payload: serde_json::Value,
    /// The last failure: `status 503`, `timeout`, `connect` or `transport` (never the URL).
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
}

/// The largest `limit` [`crate::ports::AlertStore::dead_letters`] accepts, and the largest
/// number of dead letters kept.
pub const MAX_DEAD_LETTERS: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Timestamp {
        Timestamp::from_secs(1_772_020_800)
    }

    #[test]
    fn severities_are_ordered_and_parse_back() {
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::Medium < Severity::High);
        assert!(Severity::High < Severity::Critical);
        for s in Severity::ALL {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        assert_eq!(Severity::parse(" HIGH "), Some(Severity::High));
        assert_eq!(Severity::parse("urgent"), None);
        assert_eq!(Severity::parse(""), None);
    }

    #[test]
    fn alert_types_have_wire_names_and_default_severities() {
        let names: Vec<_> = AlertType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "run.failed",
                "run.blocked",
                "tool.step.failed",
                "breaker.opened",
                "tool.approval.requested"
            ]
        );
        for t in AlertType::ALL {
            assert_eq!(AlertType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(AlertType::RunFailed.default_severity(), Severity::High);
        assert_eq!(AlertType::RunBlocked.default_severity(), Severity::High);
        assert_eq!(AlertType::BreakerOpened.default_severity(), Severity::High);
        assert_eq!(
            AlertType::ToolApprovalRequested.default_severity(),
            Severity::Medium
        );
        assert_eq!(AlertType::ToolStepFailed.default_severity(), Severity::Low);
    }

    #[test]
    fn error_codes_are_labels_only() {
        assert_eq!(sanitize_error_code("HTTP_503"), "HTTP_503");
        assert_eq!(
            sanitize_error_code("kill_switch:tool#crm#create"),
            "kill_switch:tool#crm#create"
        );
        assert_eq!(
            sanitize_error_code("tool:crm.create-1"),
            "tool:crm.create-1"
        );
        assert_eq!(
            sanitize_error_code("see https://x/y?token=a b"),
            "see_https:__x_y_token_a_b"
        );
        assert_eq!(sanitize_error_code("é\n"), "__");
        assert_eq!(sanitize_error_code(""), UNKNOWN_ERROR_CODE);
        let long = "A".repeat(100);
        assert_eq!(sanitize_error_code(&long).len(), MAX_ERROR_CODE_LEN);
        assert_eq!(
            Alert::new(AlertType::RunFailed, "bad code!", at()).error_code,
            "bad_code_"
        );
    }

    #[test]
    fn payload_has_the_seed_shape() {
        let run = ExecutionId::parse("exe_1").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let alert = Alert::new(AlertType::RunFailed, "ERR_TOOL", at())
            .for_run(run, tenant)
            .with_pipeline("deploy");
        assert_eq!(
            alert.payload(),
            serde_json::json!({
                "alert_type": "run.failed",
                "severity": "high",
                "run_id": "exe_1",
                "pipeline": "deploy",
                "error_code": "ERR_TOOL",
                "ts": "2026-02-25T12:00:00Z",
            })
        );
        let breaker = Alert::new(AlertType::BreakerOpened, "HTTP_503", at())
            .with_connector("crm")
            .with_severity(Severity::Critical);
        let body = breaker.payload();
        assert_eq!(body["connector"], "crm");
        assert_eq!(body["severity"], "critical");
        assert!(body["run_id"].is_null() && body["pipeline"].is_null());
        assert!(body.get("tenant").is_none());
    }

    #[test]
    fn dedup_key_ignores_the_run_but_not_what_failed() {
        let base = |run: &str| {
            Alert::new(AlertType::RunFailed, "E1", at())
                .for_run(
                    ExecutionId::parse(run).unwrap(),
                    TenantId::parse("acme").unwrap(),
                )
                .with_pipeline("p")
        };
        assert_eq!(base("exe_1").dedup_key(), base("exe_2").dedup_key());
        let later = Alert {
            ts: at().plus_secs(60),
            ..base("exe_1")
        };
        assert_eq!(later.dedup_key(), base("exe_1").dedup_key());
        let differs = [
            Alert {
                alert_type: AlertType::RunBlocked,
                ..base("exe_1")
            },
            base("exe_1").with_pipeline("q"),
            base("exe_1").with_connector("crm"),
            Alert {
                error_code: "E2".into(),
                ..base("exe_1")
            },
        ];
        for other in differs {
            assert_ne!(other.dedup_key(), base("exe_1").dedup_key(), "{other:?}");
        }
        // Separators inside values cannot make two tuples collide.
        let a = Alert::new(AlertType::RunFailed, "E", at()).with_pipeline("a|1:b");
        let b = Alert::new(AlertType::RunFailed, "E", at())
            .with_pipeline("a")
            .with_connector("b");
        assert_ne!(a.dedup_key(), b.dedup_key());
    }

    #[test]
    fn counts_add_up() {
        let one = AlertCounts {
            sent: 1,
            deduplicated: 2,
            retried: 3,
            dead_lettered: 4,
        };
        assert!(AlertCounts::default().is_zero());
        assert!(!one.is_zero());
        assert_eq!(
            one.plus(one),
            AlertCounts {
                sent: 2,
                deduplicated: 4,
                retried: 6,
                dead_lettered: 8
            }
        );
    }
}
