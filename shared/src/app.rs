//! The application context every use case runs in: the backend's ports, the tool client, the
//! clock, the manifest (`sluice.yaml`) with its resolved secrets, and the reliability config.
//! Built once at cold start (Lambda) or at start-up (local run) and shared by reference.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::ReliabilityConfig;
use crate::manifest::{Manifest, Secrets};
use crate::ports::{Backend, ToolClient};

/// Everything a use case needs.
#[derive(Clone)]
pub struct App<B: Backend, T: ToolClient> {
    pub backend: B,
    pub tools: T,
    pub clock: Arc<dyn Clock>,
    pub manifest: Arc<Manifest>,
    pub secrets: Arc<Secrets>,
    pub config: Arc<ReliabilityConfig>,
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
