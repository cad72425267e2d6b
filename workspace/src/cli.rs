//! The command line: `shrike-workspace --broker ...` runs the workspace;
//! `query`, `alerts`, `devices`, `recommendations` and `event` read what it
//! stored.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Shrike's workspace: takes the security messages of every agent from an
/// MQTT broker (a shared subscription, so several processes split the
/// stream), stores them in SQLite or PostgreSQL, watches the fleet, and
/// answers queries.
#[derive(Debug, Parser)]
#[command(name = "shrike-workspace", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs one read-only SQL statement: a table, or one JSON object a line.
    Query {
        #[command(flatten)]
        db: DbArgs,
        /// The SQL (one statement; writes are refused).
        sql: String,
    },
    /// Alerts, newest first.
    Alerts {
        #[command(flatten)]
        db: DbArgs,
        /// Only alerts newer than this (1h, 7d...).
        #[arg(long)]
        since: Option<String>,
        /// Only this device (its client id).
        #[arg(long)]
        device: Option<String>,
        /// Only this severity and above: informational, low, medium, high, critical.
        #[arg(long)]
        severity: Option<String>,
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Devices: last seen, agent version, open alerts.
    Devices {
        #[command(flatten)]
        db: DbArgs,
    },
    /// The latest result of each OS baseline check per device.
    Recommendations {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        device: Option<String>,
        /// Only failed checks.
        #[arg(long)]
        failed: bool,
    },
    /// An event or alert by its Id: its rows, for an alert the triggering
    /// event, and the device's events around it.
    Event {
        #[command(flatten)]
        db: DbArgs,
        id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// SQLite file, or postgres://USER@HOST:PORT/DB.
    #[arg(long, env = "SHRIKE_WORKSPACE_DB")]
    pub db: String,
    /// One JSON object a line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Running the workspace. Every flag can also be in the TOML file given with
/// `--config` (same names, `-` as `_`); flags override the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The broker: mqtt://HOST:PORT or mqtts://HOST:PORT (TLS).
    #[arg(long)]
    pub broker: Option<String>,
    /// MQTT client id. Given: a persistent session (the broker keeps this
    /// process's share while it is away). Default: generated, clean session.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Topic filter of the agents' messages; the `+` level names the device
    /// [default: shrike/+/security].
    #[arg(long)]
    pub topic: Option<String>,
    /// Shared subscription group: processes of one group split the stream
    /// [default: shrike-workspace].
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the MQTT password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the MQTT password.
    #[arg(long)]
    pub password_env: Option<String>,
    /// CA certificates (PEM) to verify the broker with (mqtts).
    #[arg(long, visible_alias = "ca")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, visible_alias = "cert")]
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, visible_alias = "key")]
    pub client_key: Option<PathBuf>,
    #[arg(long)]
    pub keep_alive: Option<String>,
    /// SQLite file (created) or postgres://USER@HOST:PORT/DB
    /// [default: /var/lib/shrike-workspace/workspace.db].
    #[arg(long)]
    pub db: Option<String>,
    /// How long rows are kept: DURATION for every table, TABLE=DURATION for
    /// one (repeatable; off keeps forever) [default: 30d].
    #[arg(long)]
    pub retain: Vec<String>,
    /// How often retention runs [default: 10m].
    #[arg(long)]
    pub retain_interval: Option<String>,
    /// Longest a received message waits before its batch is written [default: 50ms].
    #[arg(long)]
    pub batch_delay: Option<String>,
    /// How long a write the database refuses (down, full, read-only) is
    /// retried before the process exits with code 1, leaving what it did not
    /// store unacknowledged for the broker to deliver again [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub db_retry_for: Option<String>,
    /// Serve the web page and /metrics on ADDRESS:PORT (e.g. 127.0.0.1:8080); off by default.
    #[arg(long)]
    pub http: Option<String>,
    /// File holding a token the page asks for (Authorization: Bearer, or ?token=).
    #[arg(long)]
    pub http_token_file: Option<PathBuf>,
    /// File holding USER:PASSWORD for HTTP basic authentication of the page.
    #[arg(long)]
    pub http_basic_file: Option<PathBuf>,
    /// A device that sent nothing for this long raises device-silent [default: 15m].
    #[arg(long)]
    pub silent_after: Option<String>,
    /// How often the fleet detectors run [default: 30s].
    #[arg(long)]
    pub analytics_interval: Option<String>,
    /// Do not subscribe to the broker's log ($SYS/broker/log/#).
    #[arg(long)]
    pub no_broker_log: bool,
    /// Publish each fleet alert this process stores (JSON, QoS 1) to TOPIC
    /// [default TOPIC: shrike/fleet/alerts]; off by default.
    #[arg(long, value_name = "TOPIC", num_args = 0..=1, default_missing_value = crate::config::defaults::PUBLISH_ALERTS)]
    pub publish_alerts: Option<String>,
}
