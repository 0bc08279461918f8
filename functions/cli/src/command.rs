//! The command line, and the API request each command makes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

/// The sluice operator's command-line tool.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    /// The API's base URL, e.g. http://127.0.0.1:3000 or the stack's ApiUrl output.
    #[arg(long, env = "SLUICE_API_URL", global = true)]
    pub api_url: Option<String>,
    /// A bearer token for the operator API (the local run prints one).
    #[arg(long, env = "SLUICE_API_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's answer as JSON (one document on stdout) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and validate a manifest offline, as the functions do at start-up.
    Validate {
        /// The manifest file (sluice.yaml).
        manifest: PathBuf,
    },
    /// The API's health details (connectors, breakers, alarms).
    Health,
    /// The reliability summary of your tenant's newest runs.
    Reliability,
    /// Alerts the alert webhook did not take after every retry.
    DeadLetters,
    /// Executions of your tenant.
    #[command(subcommand)]
    Executions(Executions),
    /// Replay an execution (a new execution from a stage, same payload).
    Replay {
        /// The execution to replay.
        id: String,
        /// Why (kept in the audit ledger).
        #[arg(long)]
        reason: String,
        /// The stage to start from (name or 0-based index); the default is the first.
        #[arg(long)]
        from_stage: Option<String>,
    },
    /// Kill switches.
    #[command(subcommand)]
    Switches(Switches),
    /// Connectors: breaker, in-flight calls, limits.
    #[command(subcommand)]
    Connector(Connector),
}

#[derive(Debug, Subcommand)]
pub enum Executions {
    /// List executions, newest first.
    List {
        /// Only this status (QUEUED, RUNNING, SUCCEEDED, BLOCKED, ...).
        #[arg(long)]
        status: Option<String>,
        /// At most this many (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue from a previous page's next cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One execution and a page of its ledger.
    Show {
        id: String,
        /// At most this many ledger events (1 to 500).
        #[arg(long)]
        ledger_limit: Option<u32>,
        /// Continue the ledger from a previous answer's next_ledger_cursor.
        #[arg(long)]
        ledger_cursor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Switches {
    /// The switches you can see.
    List,
    /// Set a switch: new runs it covers are BLOCKED before any call.
    Set {
        #[command(flatten)]
        target: Target,
        /// Why (shown with the switch and in blocked runs).
        #[arg(long)]
        reason: String,
    },
    /// Clear a switch.
    Clear {
        #[command(flatten)]
        target: Target,
    },
}

/// What a switch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// Every tool of a connector (or one with --tool); operators only.
    Connector,
    /// Every run of a tenant.
    Tenant,
}

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// connector or tenant.
    #[arg(value_enum)]
    pub scope: Scope,
    /// The connector's or tenant's id.
    pub name: String,
    /// Only this tool of the connector.
    #[arg(long)]
    pub tool: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Connector {
    /// Breaker state, in-flight calls, limit and switches of a connector.
    Show { id: String },
    /// Override the connector's in-flight limit, or clear the override with --clear.
    Limit {
        id: String,
        /// The new limit (required unless --clear).
        #[arg(required_unless_present = "clear")]
        limit: Option<u32>,
        /// Why (required with a limit).
        #[arg(long, required_unless_present = "clear")]
        reason: Option<String>,
        /// Remove the override: back to the manifest's limit.
        #[arg(long, conflicts_with_all = ["limit", "reason"])]
        clear: bool,
    },
}

/// One API request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: &'static str,
    /// The path's segments, each percent-encoded when the URL is built.
    pub path: Vec<String>,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl Request {
    fn get(path: &[&str]) -> Self {
        Self {
            method: "GET",
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    fn with(mut self, method: &'static str, body: Option<Value>) -> Self {
        self.method = method;
        self.body = body;
        self
    }

    fn query(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }
}

/// The API request a command makes; `None` for the offline `validate`.
pub fn request(command: &Command) -> Option<Request> {
    let request = match command {
        Command::Validate { .. } => return None,
        Command::Health => Request::get(&["v1", "health"]),
        Command::Reliability => Request::get(&["v1", "reliability"]),
        Command::DeadLetters => Request::get(&["v1", "alerts", "dead-letters"]),
        Command::Executions(Executions::List {
            status,
            limit,
            cursor,
        }) => Request::get(&["v1", "executions"])
            .query("status", status.as_ref())
            .query("limit", *limit)
            .query("cursor", cursor.as_ref()),
        Command::Executions(Executions::Show {
            id,
            ledger_limit,
            ledger_cursor,
        }) => Request::get(&["v1", "executions", id])
            .query("limit", *ledger_limit)
            .query("ledger_cursor", ledger_cursor.as_ref()),
        Command::Replay {
            id,
            reason,
            from_stage,
        } => {
            let mut body = json!({ "replay_reason": reason });
            if let Some(stage) = from_stage {
                // A number is a stage index, anything else a stage name.
                body["from_stage"] = stage
                    .parse::<u64>()
                    .map_or_else(|_| json!(stage), |n| json!(n));
            }
            Request::get(&["v1", "executions", id, "replay"]).with("POST", Some(body))
        }
        Command::Switches(Switches::List) => Request::get(&["v1", "kill-switches"]),
        Command::Switches(Switches::Set { target, reason }) => {
            let body = json!({ "reason": reason });
            switch_path(target).with("PUT", Some(body))
        }
        Command::Switches(Switches::Clear { target }) => switch_path(target).with("DELETE", None),
        Command::Connector(Connector::Show { id }) => Request::get(&["v1", "connectors", id]),
        Command::Connector(Connector::Limit {
            id,
            limit,
            reason,
            clear,
        }) => {
            let path = Request::get(&["v1", "connectors", id, "limit"]);
            if *clear {
                path.with("DELETE", None)
            } else {
                let body = json!({ "limit": limit, "reason": reason });
                path.with("PUT", Some(body))
            }
        }
    };
    Some(request)
}

/// Checks what clap cannot express: a tenant switch has no tool.
pub fn check(command: &Command) -> Result<(), String> {
    match command {
        Command::Switches(Switches::Set { target, .. } | Switches::Clear { target })
            if target.scope == Scope::Tenant && target.tool.is_some() =>
        {
            Err("--tool applies to a connector switch, not a tenant's".to_owned())
        }
        _ => Ok(()),
    }
}

fn switch_path(target: &Target) -> Request {
    let name = target.name.as_str();
    match (target.scope, target.tool.as_deref()) {
        (Scope::Connector, None) => Request::get(&["v1", "kill-switches", "connectors", name]),
        (Scope::Connector, Some(tool)) => {
            Request::get(&["v1", "kill-switches", "connectors", name, "tools", tool])
        }
        (Scope::Tenant, _) => Request::get(&["v1", "kill-switches", "tenants", name]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        let mut argv = vec!["sluice"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parses").command
    }

    /// Arguments, then the request's method, path, query and body.
    type Case<'a> = (
        &'a [&'a str],
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<Value>,
    );

    #[test]
    fn each_command_makes_its_documented_request() {
        let cases: Vec<Case<'_>> = vec![
            (&["health"], "GET", "v1/health", vec![], None),
            (&["reliability"], "GET", "v1/reliability", vec![], None),
            (
                &["dead-letters"],
                "GET",
                "v1/alerts/dead-letters",
                vec![],
                None,
            ),
            (
                &["executions", "list", "--status", "blocked", "--limit", "5"],
                "GET",
                "v1/executions",
                vec![("status", "blocked"), ("limit", "5")],
                None,
            ),
            (
                &["executions", "show", "exe_1", "--ledger-cursor", "7"],
                "GET",
                "v1/executions/exe_1",
                vec![("ledger_cursor", "7")],
                None,
            ),
            (
                &["replay", "exe_1", "--reason", "fixed", "--from-stage", "1"],
                "POST",
                "v1/executions/exe_1/replay",
                vec![],
                Some(json!({"replay_reason": "fixed", "from_stage": 1})),
            ),
            (
                &[
                    "replay",
                    "exe_1",
                    "--reason",
                    "fixed",
                    "--from-stage",
                    "notify",
                ],
                "POST",
                "v1/executions/exe_1/replay",
                vec![],
                Some(json!({"replay_reason": "fixed", "from_stage": "notify"})),
            ),
            (
                &["switches", "list"],
                "GET",
                "v1/kill-switches",
                vec![],
                None,
            ),
            (
                &[
                    "switches",
                    "set",
                    "connector",
                    "crm",
                    "--tool",
                    "upsert",
                    "--reason",
                    "bad",
                ],
                "PUT",
                "v1/kill-switches/connectors/crm/tools/upsert",
                vec![],
                Some(json!({"reason": "bad"})),
            ),
            (
                &["switches", "clear", "tenant", "acme"],
                "DELETE",
                "v1/kill-switches/tenants/acme",
                vec![],
                None,
            ),
            (
                &["connector", "limit", "crm", "2", "--reason", "slow"],
                "PUT",
                "v1/connectors/crm/limit",
                vec![],
                Some(json!({"limit": 2, "reason": "slow"})),
            ),
            (
                &["connector", "limit", "crm", "--clear"],
                "DELETE",
                "v1/connectors/crm/limit",
                vec![],
                None,
            ),
        ];
        for (args, method, path, query, body) in cases {
            let r = request(&parse(args)).expect("an API command");
            assert_eq!(r.method, method, "{args:?}");
            assert_eq!(r.path.join("/"), path, "{args:?}");
            let q: Vec<(&str, &str)> = r.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(q, query, "{args:?}");
            assert_eq!(r.body, body, "{args:?}");
        }
        assert_eq!(request(&parse(&["validate", "sluice.yaml"])), None);
    }

    #[test]
    fn reasons_are_required_and_bad_combinations_refused() {
        let argv = ["sluice", "connector", "limit", "crm", "2"];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = ["sluice", "connector", "limit", "crm", "2", "--clear"];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = ["sluice", "connector", "limit", "crm"];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = ["sluice", "switches", "set", "connector", "crm"];
        assert!(
            Cli::try_parse_from(argv).is_err(),
            "a switch needs a reason"
        );
        let argv = ["sluice", "switches", "set", "region", "eu", "--reason", "x"];
        assert!(Cli::try_parse_from(argv).is_err(), "unknown scope");
    }
}
