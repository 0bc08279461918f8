//! The alert webhook's configuration, read once at cold start from the seed's `ALERT_*`
//! variables (listed in docs/configuration.md), validated with errors that name the variable.
//!
//! The webhook URL is https only; plain http is accepted for a loopback host (`127.0.0.1`,
//! `localhost`, `[::1]`) only when the caller says this is a local run. A webhook URL often
//! carries a token (in its path, query or userinfo), so it never appears in a `Debug` or
//! `Display` output, nor in a [`ConfigError`]: only its scheme, host and port do.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

use super::model::{Severity, MAX_DEAD_LETTERS};
use crate::config::{ConfigError, Vars};

/// The webhook's address; prints as `scheme://host:port` only.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Parses `raw`: an absolute `https` URL, or `http` to a loopback host when
    /// `allow_loopback_http`. The error reason never repeats the URL.
    pub fn parse(raw: &str, allow_loopback_http: bool) -> Result<Self, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("not an absolute URL ({e})"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host".into());
        }
        match url.scheme() {
            "https" => Ok(Self(url)),
            "http" if allow_loopback_http && is_loopback(&url) => Ok(Self(url)),
            "http" if allow_loopback_http => {
                Err("http is allowed only to 127.0.0.1, localhost or [::1]; use https".into())
            }
            "http" => Err("must use https (http only in a local run, to a loopback host)".into()),
            other => Err(format!("scheme {other:?} is not https")),
        }
    }

    /// The full URL, for the request only: never log it.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// `scheme://host[:port]`: what may be shown of `url`.
    fn shown(url: &Url) -> String {
        let host = url.host_str().unwrap_or_default();
        match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/…", Self::shown(&self.0))
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// The default backoff step between attempts: attempt `n`'s retry waits `n` steps.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// The alert knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertConfig {
    /// `ALERT_WEBHOOK_URL`: where alerts go; `None` (unset or blank) disables alerting.
    pub webhook_url: Option<WebhookUrl>,
    /// `ALERT_WEBHOOK_TIMEOUT_SEC`: the whole of one attempt (connect, send, answer).
    pub timeout: Duration,
    /// `ALERT_MIN_SEVERITY`: alerts below it are dropped before anything is stored or sent.
    pub min_severity: Severity,
    /// `ALERT_DEDUP_WINDOW_SEC`: the same alert (see `Alert::dedup_key`) is sent at most once
    /// per window across every instance; 0 sends every alert.
    pub dedup_window_secs: u64,
    /// `ALERT_RETRY_COUNT`: attempts after the first.
    pub retry_count: u32,
    /// `ALERT_DEAD_LETTER_MAX`: dead letters kept (the newest).
    pub dead_letter_max: u32,
    /// The backoff step between attempts (not a variable; tests shorten it).
    pub retry_backoff: Duration,
}

impl AlertConfig {
    /// Alerting off, every other knob at its default.
    pub fn disabled() -> Self {
        Self {
            webhook_url: None,
            timeout: Duration::from_secs(3),
            min_severity: Severity::Medium,
            dedup_window_secs: 90,
            retry_count: 2,
            dead_letter_max: 200,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
        }
    }

    /// Reads the process environment; `allow_loopback_http` is true for the local run only.
    pub fn from_env(allow_loopback_http: bool) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok(), allow_loopback_http)
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        allow_loopback_http: bool,
    ) -> Result<Self, ConfigError> {
        const URL: &str = "ALERT_WEBHOOK_URL";
        const SEVERITY: &str = "ALERT_MIN_SEVERITY";
        let defaults = Self::disabled();
        let vars = Vars(&lookup);
        let webhook_url = match lookup(URL) {
            Some(raw) if !raw.trim().is_empty() => Some(
                WebhookUrl::parse(&raw, allow_loopback_http).map_err(|reason| ConfigError {
                    variable: URL,
                    value: Url::parse(raw.trim())
                        .map(|u| WebhookUrl::shown(&u))
                        .unwrap_or_else(|_| "(unparsable, not shown)".into()),
                    reason,
                })?,
            ),
            _ => None,
        };
        let min_severity = match lookup(SEVERITY) {
            None => defaults.min_severity,
            Some(raw) => Severity::parse(&raw).ok_or_else(|| ConfigError {
                variable: SEVERITY,
                value: raw.clone(),
                reason: "must be low, medium, high or critical".into(),
            })?,
        };
        Ok(Self {
            webhook_url,
            timeout: Duration::from_secs(vars.number("ALERT_WEBHOOK_TIMEOUT_SEC", 3, 1, 60)?),
            min_severity,
            dedup_window_secs: vars.number("ALERT_DEDUP_WINDOW_SEC", 90, 0, 86_400)?,
            retry_count: vars.number("ALERT_RETRY_COUNT", 2, 0, 10)?,
            dead_letter_max: vars.number("ALERT_DEAD_LETTER_MAX", 200, 1, MAX_DEAD_LETTERS)?,
            retry_backoff: defaults.retry_backoff,
        })
    }

    /// Whether a webhook is configured.
    pub fn enabled(&self) -> bool {
        self.webhook_url.is_some()
    }

    /// Attempts per alert: `1 + retry_count`.
    pub fn attempts(&self) -> u32 {
        self.retry_count.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with(pairs: &[(&str, &str)], local: bool) -> Result<AlertConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AlertConfig::from_lookup(|k| map.get(k).cloned(), local)
    }

    #[test]
    fn defaults_are_the_seeds_and_disabled() {
        let c = with(&[], false).expect("defaults");
        assert!(!c.enabled());
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.min_severity, Severity::Medium);
        assert_eq!(c.dedup_window_secs, 90);
        assert_eq!(c.retry_count, 2);
        assert_eq!(c.attempts(), 3);
        assert_eq!(c.dead_letter_max, 200);
        assert_eq!(c, AlertConfig::disabled());
        assert!(!with(&[("ALERT_WEBHOOK_URL", "  ")], false)
            .unwrap()
            .enabled());
    }

    #[test]
    fn reads_every_variable() {
        let c = with(
            &[
                ("ALERT_WEBHOOK_URL", "https://hooks.example/alerts"),
                ("ALERT_WEBHOOK_TIMEOUT_SEC", "5"),
                ("ALERT_MIN_SEVERITY", "critical"),
                ("ALERT_DEDUP_WINDOW_SEC", "0"),
                ("ALERT_RETRY_COUNT", "0"),
                ("ALERT_DEAD_LETTER_MAX", "10"),
            ],
            false,
        )
        .expect("valid");
        assert!(c.enabled());
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.min_severity, Severity::Critical);
        assert_eq!((c.dedup_window_secs, c.retry_count), (0, 0));
        assert_eq!((c.attempts(), c.dead_letter_max), (1, 10));
    }

    #[test]
    fn https_only_except_loopback_in_a_local_run() {
        let url = |raw: &str, local: bool| with(&[("ALERT_WEBHOOK_URL", raw)], local);
        assert!(url("https://hooks.example/a", false).is_ok());
        for loopback in [
            "http://127.0.0.1:9000/a",
            "http://localhost/a",
            "http://[::1]:8080/",
        ] {
            assert!(url(loopback, true).is_ok(), "{loopback}");
            let e = url(loopback, false).expect_err(loopback);
            assert_eq!(e.variable, "ALERT_WEBHOOK_URL");
        }
        for refused in [
            "http://example.com/a",
            "http://10.0.0.1/a",
            "ftp://127.0.0.1/a",
            "hooks.example/a",
            "https://",
        ] {
            let e = url(refused, true).expect_err(refused);
            assert_eq!(e.variable, "ALERT_WEBHOOK_URL", "{refused}");
        }
    }

    #[test]
    fn the_url_never_shows_beyond_its_host() {
        let raw = "https://user:pa55word@hooks.example:8443/T000/B000/XXXXsecret?token=abc";
        let c = with(&[("ALERT_WEBHOOK_URL", raw)], false).unwrap();
        let url = c.webhook_url.clone().unwrap();
        assert_eq!(url.as_url().as_str(), raw);
        let shown = format!("{c:?} {url}");
        assert!(shown.contains("https://hooks.example:8443"), "{shown}");
        for secret in ["pa55word", "user", "XXXXsecret", "token", "T000"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let refused = "http://user:pa55word@example.com/XXXXsecret?token=abc";
        let e = with(&[("ALERT_WEBHOOK_URL", refused)], false).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("http://example.com"), "{shown}");
        for secret in ["pa55word", "XXXXsecret", "token"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn errors_name_the_variable() {
        for (variable, bad) in [
            ("ALERT_WEBHOOK_TIMEOUT_SEC", "0"),
            ("ALERT_WEBHOOK_TIMEOUT_SEC", "3s"),
            ("ALERT_MIN_SEVERITY", "urgent"),
            ("ALERT_DEDUP_WINDOW_SEC", "-1"),
            ("ALERT_RETRY_COUNT", "11"),
            ("ALERT_DEAD_LETTER_MAX", "0"),
            ("ALERT_DEAD_LETTER_MAX", "1001"),
        ] {
            let e = with(&[(variable, bad)], false).expect_err(bad);
            assert_eq!(e.variable, variable);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
