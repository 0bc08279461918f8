//! The application context every use case runs in: the backend's ports, the tool client, the
//! clock, the manifest (`sluice.yaml`) with its resolved secrets, the reliability config and the
//! metrics recorder, the alerter and the alarm source. Built once at cold start (Lambda) or at start-up (local run) and shared by
//! reference.

use std::sync::Arc;

use crate::adapters::cloudwatch::Alarms;
use crate::alerts::{AlertConfig, Alerter, AlerterSetupError};
use crate::clock::Clock;
use crate::config::ReliabilityConfig;
use crate::manifest::{Manifest, Secrets};
use crate::ports::{Backend, ToolClient};
use crate::telemetry::{EmfSink, Metrics};
use crate::usecases::reliability::ReadCaches;

/// Everything a use case needs.
#[derive(Clone)]
pub struct App<B: Backend, T: ToolClient> {
    pub backend: B,
    pub tools: T,
    pub clock: Arc<dyn Clock>,
    pub manifest: Arc<Manifest>,
    pub secrets: Arc<Secrets>,
    pub config: Arc<ReliabilityConfig>,
    pub metrics: Metrics,
    /// Alert webhooks (disabled until [`App::with_alerts`]).
    pub alerts: Alerter<B::Alerts>,
    /// Alarms the summaries list ([`Alarms::Off`] until [`App::with_alarms`]).
    pub alarms: Alarms,
    /// The instance's caches of the reliability summaries and the health check.
    pub caches: Arc<ReadCaches>,
}

impl<B: Backend, T: ToolClient> App<B, T> {
    /// The context, with a metrics recorder that writes no EMF lines (the in-process registry
    /// still counts; see [`App::with_emf`]), alerting disabled and no alarm source.
    ///
    /// # Panics
    /// If no HTTP client can be built for alerts (its TLS set-up fails), as the tool client
    /// would.
    pub fn new(
        backend: B,
        tools: T,
        clock: Arc<dyn Clock>,
        manifest: Manifest,
        secrets: Secrets,
        config: ReliabilityConfig,
    ) -> Self {
        let metrics = Metrics::new(
            config.observability.metrics_namespace.clone(),
            clock.clone(),
            EmfSink::Off,
        );
        let alerts = Alerter::new(
            AlertConfig::disabled(),
            backend.alerts().clone(),
            clock.clone(),
            Vec::new(),
        )
        .expect("an HTTP client for alerts");
        alerts.attach_metrics(metrics.clone());
        Self {
            backend,
            tools,
            clock,
            manifest: Arc::new(manifest),
            secrets: Arc::new(secrets),
            config: Arc::new(config),
            metrics,
            alerts,
            alarms: Alarms::Off,
            caches: Arc::default(),
        }
    }

    /// The same context alerting per `config`, with every secret of the manifest redacted
    /// from what is sent and stored.
    pub fn with_alerts(mut self, config: AlertConfig) -> Result<Self, AlerterSetupError> {
        let alerts = Alerter::new(
            config,
            self.backend.alerts().clone(),
            self.clock.clone(),
            self.secrets.values(),
        )?;
        alerts.attach_metrics(self.metrics.clone());
        self.alerts = alerts;
        Ok(self)
    }

    /// The same context listing `alarms` in the summaries.
    pub fn with_alarms(mut self, alarms: Alarms) -> Self {
        self.alarms = alarms;
        self
    }

    /// The same context writing EMF lines to `sink` (stdout in Lambda, memory in tests).
    pub fn with_emf(self, sink: EmfSink) -> Self {
        self.metrics.set_sink(sink);
        self
    }
}

impl<B: Backend, T: ToolClient> std::fmt::Debug for App<B, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("sources", &self.manifest.sources.len())
            .field("connectors", &self.manifest.connectors.len())
            .field("pipelines", &self.manifest.pipelines.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
