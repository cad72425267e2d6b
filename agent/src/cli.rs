//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{events::Kind, probes::Transport};

#[derive(Debug, Parser)]
#[command(name = "shrike", version = crate::VERSION, about = "eBPF security telemetry agent for Linux IoT gateways")]
pub struct Cli {
    /// Log filter for the agent's own log on stderr (tracing's EnvFilter syntax;
    /// RUST_LOG works too).
    #[arg(long, global = true, default_value = "info", env = "SHRIKE_LOG")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every security event as one JSON object per line on stdout.
    Events(Box<EventsArgs>),
    /// The daemon: security messages to an MQTT broker or Azure IoT Hub, with
    /// aggregation, priority batching and an on-disk spool.
    Run(Box<RunArgs>),
    /// Preflight: what this kernel and machine support; exits non-zero when the
    /// agent cannot run here.
    Check(CheckArgs),
    /// Sigma rules without the kernel (no root needed): validate them, or run
    /// them over recorded `shrike events` output.
    Rules(RulesArgs),
    /// The learnt baseline of normal behaviour: show it, or start learning
    /// again.
    Baseline(crate::detect::baseline::cli::BaselineArgs),
    /// The OS baseline: runs the security configuration checks (Shrike's
    /// gateway policy and SCA policy files) once, without the kernel probes;
    /// exits 1 when a high-severity check fails.
    Recommendations(crate::recommend::cli::RecommendArgs),
    /// Threat-intelligence lists without the kernel: validate them (counts
    /// by type, malformed lines with their line numbers).
    Ioc(IocArgs),
}

#[derive(Debug, Clone, Args)]
pub struct IocArgs {
    #[command(subcommand)]
    pub command: IocCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum IocCommand {
    /// Parses list files as the agent does; prints `file:line: reason` for
    /// malformed lines and each file's counts (exit 2 when one cannot be read).
    Check {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Load time, RSS and lookup cost of one list (for `cargo xtask bench
    /// --ioc`).
    #[command(hide = true)]
    Bench {
        path: PathBuf,
        /// Lookups of each type timed.
        #[arg(long, default_value_t = 1_000_000)]
        lookups: usize,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RulesCommand {
    /// Validates rule files and folders: prints `file:line: reason` for each
    /// error (exit 2) and a summary of rules loaded and skipped by reason.
    Check {
        /// Rule files, or folders searched recursively for .yml/.yaml.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Also list every skipped rule with its file, line and reason.
        #[arg(long)]
        list_skipped: bool,
    },
    /// Runs the rules over recorded `shrike events` JSON lines and prints the
    /// alerts as `shrike events` does.
    Test {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The recording (JSON lines; lines of other kinds are passed over).
        #[arg(long, value_name = "FILE.jsonl")]
        events: PathBuf,
        /// Switches a rule off by its id (repeatable).
        #[arg(long = "disable-rule", value_name = "ID")]
        disable_rules: Vec<String>,
    },
    /// CPU per event of the Sigma stage with these rules (for `cargo xtask
    /// bench --sigma`).
    #[command(hide = true)]
    Bench {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// A recording to replay instead of the built-in mix.
        #[arg(long, value_name = "FILE.jsonl")]
        events: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Event kinds to print, comma-separated (default: all):
    /// exec, exit, fork, connect, accept, listen, bind, login, privilege, alert.
    /// Detection still sees every kind its detectors need.
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    pub kinds: Vec<Kind>,
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
    /// How often to log the kernel's lost-record counters when they grow.
    #[arg(long, default_value = "10s", value_parser = crate::config::parse_duration)]
    pub stats_interval: std::time::Duration,
    /// Stop after this many events (for scripts and tests).
    #[arg(long)]
    pub count: Option<u64>,
    /// The state folder: the learnt baseline is kept there [default:
    /// /var/lib/shrike].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Kernel-to-agent transport. `perf` forces perf event arrays (the fallback
    /// for kernels without a BPF ring buffer).
    #[arg(long, value_enum, default_value = "auto")]
    pub transport: Transport,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    /// The kernel maps all of it into the agent (twice: it counts double in
    /// RSS); 4 MiB holds ~150 ms of a 50K connects/s storm.
    #[arg(long, default_value_t = 4 << 20, value_parser = parse_ring_size)]
    pub ring_size: u32,
    /// How often the reader collects records that did not wake it.
    #[arg(long, default_value = "20ms", value_parser = crate::config::parse_duration)]
    pub poll_interval: std::time::Duration,
    /// Waiting bytes in the ring buffer that wake the reader before its timer
    /// (default: an eighth of the ring).
    #[arg(long)]
    pub wake_bytes: Option<u32>,
    /// Kinds that wake the reader at once, for the lowest latency.
    #[arg(long, value_delimiter = ',', value_parser = parse_kind, default_value = "login,privilege")]
    pub wake_kinds: Vec<Kind>,
    /// Pages per CPU of each perf buffer (a power of two).
    #[arg(long, default_value_t = 256, value_parser = parse_pages)]
    pub perf_pages: usize,
    /// argv entries captured per exec (1-64); more set `args_truncated`.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_args: u32,
    /// Bytes captured per argument, NUL included (2-512); longer set `args_truncated`.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(2..=512))]
    pub max_arg_len: u32,
    /// libpam to attach the login probes to (default: found with ldconfig).
    #[arg(long)]
    pub libpam: Option<PathBuf>,
    /// Where the host's /proc is (a container mounts it elsewhere).
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Failed (ENOENT) execs of a PATH search: `fold` counts them into the
    /// exec of the same program that follows (`path_misses`), and reports
    /// one that nothing follows; `report` reports each [default: fold;
    /// `exec_misses` in the config file].
    #[arg(long, value_enum, value_name = "fold|report")]
    pub exec_misses: Option<crate::enrich::exec_misses::ExecMisses>,
}

/// Detection (`[detect]` in the config file; these flags override it).
#[derive(Debug, Clone, Default, Args)]
pub struct DetectArgs {
    /// Sigma rules: a file, or a folder searched recursively for .yml/.yaml
    /// (repeatable; replaces `rules` of the config file).
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// No detection: no alerts (and no probes attached for it).
    #[arg(long)]
    pub no_detect: bool,
    /// Switches a rule off: a built-in detector's id or a Sigma rule's id
    /// (repeatable; added to `disabled` of the config file).
    #[arg(long = "disable-rule", value_name = "ID")]
    pub disable_rules: Vec<String>,
    /// A security configuration policy in Wazuh's SCA format for the
    /// recommendations (repeatable; added to `policies` of the config file,
    /// besides Shrike's built-in gateway policy).
    #[arg(long = "policy", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// Run the command (`c:`) rules of the local policy files.
    #[arg(long)]
    pub allow_commands: bool,
    /// No recommendations (the OS baseline at start and every snapshot interval).
    #[arg(long)]
    pub no_recommendations: bool,
    /// The root file system the recommendations assess (a host's / mounted
    /// in a container, an image) [default: /].
    #[arg(long, value_name = "DIR")]
    pub recommend_root: Option<PathBuf>,
    /// Learning period of the baseline (`baseline-*` alerts after it), e.g.
    /// 24h, 7d; `off` (or 0) turns the baseline off [default: 24h].
    #[arg(long, value_name = "DURATION|off")]
    pub baseline_learn: Option<String>,
    /// login-brute-force: failed logins for one user or one remote host...
    #[arg(long, value_name = "N")]
    pub brute_force_failures: Option<u32>,
    /// ...within this window (e.g. 60s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub brute_force_window: Option<std::time::Duration>,
    /// Threat-intelligence list: addresses, CIDRs, domains, SHA-256s, one a
    /// line, or a feed's CSV (repeatable; replaces `ioc` of the config file).
    /// Reloaded when it changes.
    #[arg(long = "ioc", value_name = "PATH")]
    pub ioc: Vec<PathBuf>,
    /// Hash every executed file (SHA-256 in exec events) even when no IoC
    /// list has hashes.
    #[arg(long)]
    pub hash_executables: bool,
    /// How often the IoC list files are checked for changes (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub ioc_reload_interval: Option<std::time::Duration>,
    /// A path watched for file changes (`file` events), a file or a folder
    /// (repeatable; replaces `watch` of the config file); `defaults` stands
    /// for the built-in list (/etc, ~/.ssh, cron spools, system binaries...).
    #[arg(long = "watch", value_name = "PATH")]
    pub watch: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// libpam to check (default: found with ldconfig).
    #[arg(long)]
    pub libpam: Option<PathBuf>,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::from_name(s.trim()).ok_or_else(|| {
        let all: Vec<_> = Kind::EVENTS.iter().map(|k| k.name()).collect();
        format!("unknown event kind {s:?}; kinds are {}", all.join(", "))
    })
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if !n.is_power_of_two() || n < 4096 {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

fn parse_pages(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two"));
    }
    Ok(n)
}

/// `shrike run`. Every setting can also be in the TOML file given with
/// `--config` (same names, `-` as `_`; `[priority]` and `[aggregation]` tables
/// per kind); flags override the file. Defaults: see `config::RunSettings`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TOML config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to publish: mqtt://HOST:PORT, mqtts://HOST:PORT (TLS), or azure
    /// (with --connection-string-file; azure://HOST:PORT to connect through a
    /// gateway or test broker instead of the hub's host).
    #[arg(long)]
    pub hub: Option<String>,
    /// Azure IoT Hub device or module connection string, in a file (kept off
    /// the command line: it holds the key).
    #[arg(long)]
    pub connection_string_file: Option<PathBuf>,
    /// MQTT client id (generic brokers; default: the host name).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Topic for generic brokers; `{client_id}` is replaced.
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the MQTT password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the MQTT password.
    #[arg(long)]
    pub password_env: Option<String>,
    /// CA certificates (PEM) to verify the broker with (mqtts).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    #[arg(long)]
    pub client_key: Option<PathBuf>,
    #[arg(long)]
    pub keep_alive: Option<String>,
    /// The state folder: agent id, learnt baseline and, unless set apart,
    /// the spool [default: /var/lib/shrike].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Spool directory (messages wait here until the broker acknowledges
    /// them) [default: STATE_DIR/spool].
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
    /// Spool capacity in bytes.
    #[arg(long)]
    pub spool_size: Option<u64>,
    /// Latency of high-priority events (1s, PT1S...).
    #[arg(long)]
    pub high_interval: Option<String>,
    /// Batching interval of low-priority events.
    #[arg(long)]
    pub low_interval: Option<String>,
    /// Default aggregation interval of every kind.
    #[arg(long)]
    pub aggregate_interval: Option<String>,
    /// KIND=high|low|off (repeatable). Off kinds are not published (nor
    /// collected, unless detection looks at them); alerts are always high.
    #[arg(long = "priority", value_parser = crate::config::parse_kind_value)]
    pub priorities: Vec<(Kind, String)>,
    /// KIND=DURATION|off (repeatable): aggregation per kind.
    #[arg(long = "aggregate", value_parser = crate::config::parse_kind_value)]
    pub aggregations: Vec<(Kind, String)>,
    /// Largest message in bytes; bigger batches are split, never truncated.
    #[arg(long)]
    pub max_message_size: Option<usize>,
    /// Interval of the snapshots (listening ports, local users, system information).
    #[arg(long)]
    pub snapshot_interval: Option<String>,
    /// Interval of the agent's health events (dropped events, message statistics).
    #[arg(long)]
    pub health_interval: Option<String>,
    /// File holding the agent's id (a GUID, created on first run) [default:
    /// STATE_DIR/agent-id].
    #[arg(long)]
    pub agent_id_file: Option<PathBuf>,
    /// Message compression for brokers that are not IoT Hub: none or gzip
    /// (consumers tell gzip by its magic bytes 1f 8b).
    #[arg(long)]
    pub compression: Option<String>,
    /// Print the messages on stdout instead of publishing them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
}
