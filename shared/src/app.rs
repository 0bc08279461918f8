//! The application context every use case runs in: the backend's ports, the tool client, the
//! clock, the manifest (`sluice.yaml`) with its resolved secrets, the reliability config and the
//! metrics recorder. Built once at cold start (Lambda) or at start-up (local run) and shared by
//! reference.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::ReliabilityConfig;
use crate::manifest::{Manifest, Secrets};
use crate::ports::{Backend, ToolClient};
use crate::telemetry::{EmfSink, Metrics};

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
}

impl<B: Backend, T: ToolClient> App<B, T> {
    /// The context, with a metrics recorder that writes no EMF lines (the in-process registry
    /// still counts): see [`App::with_emf`].
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
        Self {
            backend,
            tools,
            clock,
            manifest: Arc::new(manifest),
            secrets: Arc::new(secrets),
            config: Arc::new(config),
            metrics,
        }
    }

    /// The same context with a fresh recorder writing EMF lines to `sink` (stdout in Lambda,
    /// memory in tests).
    pub fn with_emf(mut self, sink: EmfSink) -> Self {
        self.metrics = Metrics::new(
            self.config.observability.metrics_namespace.clone(),
            self.clock.clone(),
            sink,
        );
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
