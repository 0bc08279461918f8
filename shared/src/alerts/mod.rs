//! Alert webhooks: Sluice tells an operator's webhook when a run fails or is blocked, a tool
//! step fails, a breaker opens or a tool call awaits approval.
//!
//! [`model`] is pure (alert types, severities, the payload, the dedup key); [`config`] reads the
//! `ALERT_*` variables; [`redact`] keeps secret values out of what is sent and stored;
//! [`dispatch`] filters, deduplicates across instances (through [`crate::ports::AlertStore`]),
//! sends with retries and keeps dead letters.

pub mod config;
pub mod dispatch;
pub mod model;
pub mod redact;

pub use config::{AlertConfig, WebhookUrl};
pub use dispatch::{Alerter, AlerterSetupError, AttemptError, DeliveryReport, LocalStats};
pub use model::{Alert, AlertCounts, AlertType, DeadLetter, Severity};
pub use redact::Redactor;
