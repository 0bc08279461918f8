//! Start-up of the local run: command-line options, state (memory or DynamoDB/SQS endpoints),
//! the demo connector, secrets, the HTTP front, the executor loops and the sweeper tick, and an
//! orderly stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice::adapters::cloudwatch::{Alarms, CloudWatchAlarms, CloudWatchPublisher};
use sluice::alerts::{AlertConfig, AlerterSetupError};
use sluice::app::App;
use sluice::clock::SystemClock;
use sluice::config::{ConfigError, ReliabilityConfig};
use sluice::domain::ids::HolderId;
use sluice::manifest::{Manifest, ManifestError};
use sluice::ports::{Backend, ToolClient};
use sluice::startup;
use sluice::usecases::{execute, sweep};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::banner::{self, Banner, SourceSecret};
use crate::demo::{DemoConnector, PLACEHOLDER_AUTHORITY};
use crate::dev_auth::{DevAuth, DevAuthError};
use crate::publish;
use crate::server;
use crate::state::{self, StateError};

/// The default port of the local API.
pub const DEFAULT_PORT: u16 = 8787;
/// The default manifest, relative to the working directory (the repository root).
pub const DEFAULT_MANIFEST: &str = "infra/sluice.example.yaml";
/// How often the sweeper runs by default.
pub const DEFAULT_SWEEP_SECS: u64 = 30;
/// How long the printed dev token is valid.
pub const TOKEN_HOURS: u64 = 12;
/// The tenant of the printed dev token.
pub const TOKEN_TENANT: &str = "demo";

/// The usage text.
pub const USAGE: &str = "\
sluice-local: the whole of Sluice in one process on 127.0.0.1

USAGE:
    sluice-local [OPTIONS]

OPTIONS:
    --port <N>          API port (default 8787; 0 picks a free one, printed)
    --manifest <PATH>   sluice.yaml to load (default infra/sluice.example.yaml)
    --aws               keep state in DynamoDB + SQS instead of memory; reads
                        SLUICE_AWS_ENDPOINT (e.g. ministack's URL; unset: real AWS),
                        SLUICE_TABLE_NAME and SLUICE_STAGE_QUEUE_URL
    --create            with --aws: create the table and the queue first (local engines)
    --cloudwatch        publish metrics with PutMetricData every 10 s to CloudWatch at
                        SLUICE_AWS_ENDPOINT (e.g. ministack; unset: real AWS), and list the
                        alarms named SLUICE_ALARM_PREFIX* in /v1/health and /v1/reliability
    --demo-port <N>     port of the demo connector (default 0: a free one)
    --workers <N>       executor poll loops (default 2)
    --sweep-every <S>   seconds between sweeper runs (default 30)
    -h, --help          this text

ENVIRONMENT:
    <secret_env of each source>  signing secrets (unset: generated and printed)
    SLUICE_DEV_JWT_SECRET        HS256 secret for API tokens (unset: generated and printed)
    RUST_LOG                     log filter (default info); logs go to stderr
    ALERT_WEBHOOK_URL            alert webhook (https, or http to 127.0.0.1/localhost)
    MAX_PIPELINE_ATTEMPTS, BASE_BACKOFF_SECONDS, ... see docs/configuration.md
";

/// Command-line options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub port: u16,
    pub manifest: PathBuf,
    pub aws: bool,
    pub create: bool,
    pub cloudwatch: bool,
    pub demo_port: u16,
    pub workers: u32,
    pub sweep_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            manifest: PathBuf::from(DEFAULT_MANIFEST),
            aws: false,
            create: false,
            cloudwatch: false,
            demo_port: 0,
            workers: 2,
            sweep_every: Duration::from_secs(DEFAULT_SWEEP_SECS),
        }
    }
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
}

/// A command line that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} (see --help)")]
pub struct UsageError(String);

impl Options {
    /// Parses the arguments after the program name.
    pub fn parse<I, S>(args: I) -> Result<Command, UsageError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut options = Options::default();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| UsageError(format!("{name} needs a value")))
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "--port" => options.port = number(&flag, &value(&flag)?)?,
                "--demo-port" => options.demo_port = number(&flag, &value(&flag)?)?,
                "--workers" => {
                    options.workers = number(&flag, &value(&flag)?)?;
                    if !(1..=64).contains(&options.workers) {
                        return Err(UsageError("--workers must be from 1 to 64".into()));
                    }
                }
                "--sweep-every" => {
                    let secs: u64 = number(&flag, &value(&flag)?)?;
                    if secs == 0 {
                        return Err(UsageError("--sweep-every must be at least 1".into()));
                    }
                    options.sweep_every = Duration::from_secs(secs);
                }
                "--manifest" => options.manifest = PathBuf::from(value(&flag)?),
                "--aws" => options.aws = true,
                "--create" => options.create = true,
                "--cloudwatch" => options.cloudwatch = true,
                other => return Err(UsageError(format!("unknown argument {other:?}"))),
            }
        }
        if options.create && !options.aws {
            return Err(UsageError("--create needs --aws".into()));
        }
        Ok(Command::Run(options))
    }
}

fn number<T: std::str::FromStr>(flag: &str, raw: &str) -> Result<T, UsageError> {
    raw.parse()
        .map_err(|_| UsageError(format!("{flag} needs a number, not {raw:?}")))
}

/// Why the local run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] DevAuthError),
    #[error(transparent)]
    Alerts(#[from] AlerterSetupError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// Runs until `shutdown` completes: serves the API, runs the executor loops and the sweeper,
/// then stops them all and returns.
pub async fn run(
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LocalError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());

    let mut manifest = Manifest::load(&options.manifest)?;
    manifest.log_warnings();
    let config = ReliabilityConfig::from_env()?;
    let alert_config = AlertConfig::from_env(true)?;
    let (publisher, alarms) = if options.cloudwatch {
        let client = state::cloudwatch_client().await;
        let publisher = CloudWatchPublisher::new(
            client.clone(),
            config.observability.metrics_namespace.clone(),
        );
        let alarms = match env(startup::ALARM_PREFIX_VAR) {
            Some(prefix) => Alarms::CloudWatch(CloudWatchAlarms::new(client, prefix)),
            None => Alarms::Off,
        };
        (Some(publisher), alarms)
    } else {
        (None, Alarms::Off)
    };

    // The demo connector stands in for connectors whose base URL is the example's placeholder.
    let demo_targets: Vec<String> = manifest
        .connectors
        .iter()
        .filter(|(_, c)| points_at_placeholder(&c.base_url))
        .map(|(id, _)| id.to_string())
        .collect();
    let demo = if demo_targets.is_empty() {
        None
    } else {
        let demo = DemoConnector::start(options.demo_port)
            .await
            .map_err(io("starting the demo connector on 127.0.0.1"))?;
        for connector in manifest.connectors.values_mut() {
            if points_at_placeholder(&connector.base_url) {
                connector.base_url = demo.base_url();
            }
        }
        Some(demo)
    };

    // Source secrets: from the environment, or made up (and printed).
    let mut generated = BTreeMap::new();
    for source in manifest.sources.values() {
        if env(&source.secret_env).is_none() && !generated.contains_key(&source.secret_env) {
            let bytes: [u8; 20] = rand::random();
            generated.insert(source.secret_env.clone(), hex::encode(bytes));
        }
    }
    let secrets = manifest.secrets(|name| env(name).or_else(|| generated.get(name).cloned()))?;
    let source_secrets: Vec<SourceSecret> = manifest
        .sources
        .iter()
        .map(|(id, source)| SourceSecret {
            source: id.clone(),
            variable: source.secret_env.clone(),
            value: env(&source.secret_env)
                .or_else(|| generated.get(&source.secret_env).cloned())
                .unwrap_or_default(),
            generated: generated.contains_key(&source.secret_env),
        })
        .collect();

    let (auth, auth_generated) = match env("SLUICE_DEV_JWT_SECRET") {
        Some(secret) => (DevAuth::new(secret), false),
        None => (DevAuth::generate(), true),
    };
    let token = auth.mint(TOKEN_TENANT, "local-developer", TOKEN_HOURS * 3600)?;

    let listener = TcpListener::bind(("127.0.0.1", options.port))
        .await
        .map_err(io(format!("binding 127.0.0.1:{}", options.port)))?;
    let addr = listener
        .local_addr()
        .map_err(io("reading the bound address"))?;

    let examples_dir = std::env::temp_dir().join(format!("sluice-local-{}", addr.port()));
    std::fs::create_dir_all(&examples_dir)
        .map_err(io(format!("creating {}", examples_dir.display())))?;
    let mut examples = Vec::new();
    for (id, source) in &manifest.sources {
        let secret = secrets.source_secret(id).unwrap_or_default();
        examples.push(
            banner::example(&examples_dir, id, source, secret).map_err(io(format!(
                "writing an example body in {}",
                examples_dir.display()
            )))?,
        );
    }

    let base_url = format!("http://{addr}");
    let demo_line = demo.as_ref().map(|d| (d.base_url(), demo_targets));
    let print = |manifest: &Manifest, state_line: &str| {
        let text = Banner {
            base_url: &base_url,
            state: state_line,
            manifest_path: &options.manifest,
            manifest,
            demo: demo_line.as_ref().map(|(u, c)| (u.as_str(), c.clone())),
            secrets: &source_secrets,
            examples: &examples,
            dev_secret: auth.secret(),
            dev_secret_generated: auth_generated,
            token: &token,
            token_tenant: TOKEN_TENANT,
            token_hours: TOKEN_HOURS,
        }
        .render();
        println!("{text}");
    };
    let front = Front {
        listener,
        addr,
        auth: auth.clone(),
        options: options.clone(),
        publisher,
    };
    if options.aws {
        let (app, description) = state::aws_app(manifest, secrets, config, options.create).await?;
        let app = app.with_alarms(alarms).with_alerts(alert_config)?;
        print(&app.manifest, &description);
        serve(app, front, shutdown).await
    } else {
        let app = startup::memory_app(manifest, secrets, config, Arc::new(SystemClock))
            .with_alarms(alarms)
            .with_alerts(alert_config)?;
        print(&app.manifest, "in memory (gone when the process stops)");
        serve(app, front, shutdown).await
    }
}

/// Logs to stderr (the start-up text owns stdout), one line per event with its fields as
/// `key=value`, or JSON lines with `SLUICE_LOG_JSON=1`; filtered by `RUST_LOG` (default
/// `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if std::env::var("SLUICE_LOG_JSON").is_ok_and(|v| v == "1") {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Whether `base_url` is the example's placeholder for the demo connector.
fn points_at_placeholder(base_url: &str) -> bool {
    let authority = base_url
        .strip_prefix("http://")
        .unwrap_or(base_url)
        .trim_end_matches('/');
    authority == PLACEHOLDER_AUTHORITY || authority == "localhost:8088"
}

/// The bound listener and what the server needs besides the app.
struct Front {
    listener: TcpListener,
    addr: SocketAddr,
    auth: DevAuth,
    options: Options,
    publisher: Option<CloudWatchPublisher>,
}

/// Serves `app` and runs its background work until the shutdown future completes.
async fn serve<B, T>(
    app: App<B, T>,
    ctx: Front,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LocalError>
where
    B: Backend,
    T: ToolClient + Clone + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = spawn_background(&app, &ctx.options, &stop_rx);
    if let Some(publisher) = ctx.publisher {
        tasks.spawn(publish::publish_loop(
            app.metrics.clone(),
            publisher,
            stop_rx.clone(),
        ));
    }

    let router = server::router(app, ctx.auth);
    tracing::info!(addr = %ctx.addr, "listening");
    let mut stop_server = stop_rx.clone();
    let server = axum::serve(ctx.listener, router).with_graceful_shutdown(async move {
        let _ = stop_server.wait_for(|stop| *stop).await;
    });
    let mut server = tokio::spawn(async move { server.await });

    let served = tokio::select! {
        () = shutdown => None,
        result = &mut server => Some(result),
    };
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let served = match served {
        Some(result) => result,
        None => server.await,
    };
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined {
            tracing::error!(%error, "a background task failed");
        }
    }
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(LocalError::Io {
            what: "serving HTTP".into(),
            source,
        }),
        Err(error) => Err(LocalError::Io {
            what: "the HTTP server task".into(),
            source: std::io::Error::other(error),
        }),
    }
}

/// Starts `options.workers` executor loops and the sweeper tick; they stop when `stop` turns
/// true.
pub fn spawn_background<B, T>(
    app: &App<B, T>,
    options: &Options,
    stop: &watch::Receiver<bool>,
) -> JoinSet<()>
where
    B: Backend,
    T: ToolClient + Clone + 'static,
{
    let mut tasks = JoinSet::new();
    for _ in 0..options.workers {
        tasks.spawn(executor_loop(app.clone(), stop.clone()));
    }
    tasks.spawn(sweeper_loop(app.clone(), options.sweep_every, stop.clone()));
    tasks
}

/// One executor: polls the stage queue until `stop` turns true.
pub async fn executor_loop<B, T>(app: App<B, T>, stop: watch::Receiver<bool>)
where
    B: Backend,
    T: ToolClient + Clone + 'static,
{
    let worker = HolderId::random();
    tracing::info!(worker = %worker, "executor started");
    let handled = execute::poll_queue(&app, worker.clone(), stop).await;
    tracing::info!(worker = %worker, handled, "executor stopped");
}

/// Runs the sweeper every `every` until `stop` turns true.
pub async fn sweeper_loop<B, T>(app: App<B, T>, every: Duration, mut stop: watch::Receiver<bool>)
where
    B: Backend,
    T: ToolClient + Clone + 'static,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        match sweep::sweep(&app).await {
            Ok(report) if report.recovered + report.requeued + report.failed > 0 => {
                tracing::info!(?report, "sweeper ran")
            }
            Ok(report) => tracing::debug!(?report, "sweeper ran"),
            Err(error) => {
                tracing::warn!(error = &error as &dyn std::error::Error, "sweeper failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, UsageError> {
        Options::parse(args.iter().copied())
    }

    #[test]
    fn every_flag_of_the_usage_is_in_the_configuration_doc() {
        let doc = include_str!("../../../docs/configuration.md");
        let flags: Vec<&str> = USAGE
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.starts_with("--") && *w != "--help")
            .map(|w| w.trim_end_matches(','))
            .collect();
        assert!(flags.len() >= 8, "{flags:?}");
        let missing: Vec<_> = flags
            .iter()
            .filter(|f| !doc.contains(&format!("`{f}")))
            .collect();
        assert!(
            missing.is_empty(),
            "flags missing from docs/configuration.md: {missing:?}"
        );
    }

    #[test]
    fn defaults_and_flags() {
        assert_eq!(parse(&[]).unwrap(), Command::Run(Options::default()));
        let Command::Run(o) = parse(&[
            "--port=0",
            "--manifest",
            "x.yaml",
            "--aws",
            "--create",
            "--workers",
            "3",
            "--sweep-every",
            "5",
        ])
        .unwrap() else {
            panic!("not a run");
        };
        assert_eq!(o.port, 0);
        assert_eq!(o.manifest, PathBuf::from("x.yaml"));
        assert!(o.aws && o.create);
        assert_eq!(o.workers, 3);
        assert_eq!(o.sweep_every, Duration::from_secs(5));
        assert_eq!(parse(&["-h"]).unwrap(), Command::Help);
    }

    #[test]
    fn bad_command_lines_say_why() {
        assert!(parse(&["--port"]).unwrap_err().0.contains("needs a value"));
        assert!(parse(&["--port", "x"]).unwrap_err().0.contains("number"));
        assert!(parse(&["--create"]).unwrap_err().0.contains("--aws"));
        assert!(parse(&["--frobnicate"]).unwrap_err().0.contains("unknown"));
        assert!(parse(&["--workers", "0"]).is_err());
    }

    #[test]
    fn the_placeholder_is_recognised() {
        assert!(points_at_placeholder("http://127.0.0.1:8088"));
        assert!(points_at_placeholder("http://127.0.0.1:8088/"));
        assert!(points_at_placeholder("http://localhost:8088"));
        assert!(!points_at_placeholder("https://crm.example"));
    }
}
