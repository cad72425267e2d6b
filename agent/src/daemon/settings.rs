//! Settings resolution: defaults, the config file and flags into `RunSettings`.

use crate::enrich::exec_misses::ExecMisses;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;
use shrike_common::schema::Uuid;

use crate::{
    config::{
        ConfigError, FileConfig, Hub, KindPriority, default_priority, duration_setting, parse_aggregation,
        parse_hub, parse_priority, readable,
    },
    detect::DetectConfig,
    events::Kind,
    publish::{
        azure::ConnectionString,
        mqtt::{Settings, TlsSettings},
    },
};

/// `shrike run`. Every setting can also be in the TOML file given with
/// `--config` (same names, `-` as `_`; `[priority]` and `[aggregation]` tables
/// per kind); flags override the file. Defaults: see `config::RunSettings`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TOML config file (deploy/shrike.toml documents every key) [default:
    /// none: defaults and flags only].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to publish: mqtt://HOST:PORT, mqtts://HOST:PORT (TLS), or azure
    /// (with --connection-string-file; azure://HOST:PORT to connect through a
    /// gateway or test broker instead of the hub's host) [default: none:
    /// required unless --dry-run].
    #[arg(long)]
    pub hub: Option<String>,
    /// Azure IoT Hub device or module connection string, in a file (kept off
    /// the command line: it holds the key) [default: none: required with
    /// azure].
    #[arg(long)]
    pub connection_string_file: Option<PathBuf>,
    /// MQTT client id (generic brokers) [default: the host name].
    #[arg(long)]
    pub client_id: Option<String>,
    /// Topic for generic brokers; `{client_id}` is replaced [default:
    /// shrike/{client_id}/security].
    #[arg(long)]
    pub topic: Option<String>,
    /// MQTT user name (generic brokers; IoT Hub's is derived from the
    /// connection string) [default: none: no user name].
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the MQTT password [default: none: no password].
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the MQTT password (when no
    /// --password-file) [default: none].
    #[arg(long)]
    pub password_env: Option<String>,
    /// CA certificates (PEM) to verify the broker with (mqtts) [default: the
    /// system bundle, /etc/ssl/certs/ca-certificates.crt].
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --client-key [default:
    /// none].
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with --client-cert
    /// [default: none].
    #[arg(long)]
    pub client_key: Option<PathBuf>,
    /// MQTT keep-alive: the broker drops a connection silent this long (1.5
    /// times it), the agent pings before [default: 60s].
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
    /// Spool capacity in bytes; when full, the oldest low-priority messages
    /// go first [default: 67108864 (64 MiB)].
    #[arg(long)]
    pub spool_size: Option<u64>,
    /// Size on disk of the journal (received events not yet in the spool,
    /// replayed after a crash), in bytes; 0 turns it off [default: 16777216
    /// (16 MiB)].
    #[arg(long)]
    pub journal_size: Option<u64>,
    /// The journal's group commit: one fsync per interval at most (10ms to
    /// 1s); a SIGKILL loses, and counts, what came in the last one [default: 200ms].
    #[arg(long)]
    pub journal_interval: Option<String>,
    /// Longest wait between attempts to reconnect to the broker (jittered,
    /// back to the shortest after each successful connection) [default: 4s].
    #[arg(long)]
    pub reconnect_max: Option<String>,
    /// Latency of high-priority events (1s, PT1S...) [default: 500ms].
    #[arg(long)]
    pub high_interval: Option<String>,
    /// Batching interval of low-priority events [default: 1m].
    #[arg(long)]
    pub low_interval: Option<String>,
    /// Default aggregation interval of every kind, or off [default: 1m].
    #[arg(long)]
    pub aggregate_interval: Option<String>,
    /// KIND=high|low|off (repeatable). Off kinds are not published (nor
    /// collected, unless detection looks at them); alerts are always high
    /// [default: per kind, as in deploy/shrike.toml].
    /// A NAME (starts with A-Z) is that of events other programs report
    /// through the SDK (default: high for their own kinds, low for Azure
    /// kinds other than Login).
    #[arg(long = "priority", value_name = "KIND|NAME=PRIORITY", value_parser = crate::config::parse_priority_value)]
    pub priorities: Vec<(crate::config::PriorityTarget, String)>,
    /// KIND=DURATION|off (repeatable): aggregation per kind [default:
    /// --aggregate-interval].
    #[arg(long = "aggregate", value_parser = crate::config::parse_kind_value)]
    pub aggregations: Vec<(Kind, String)>,
    /// Largest message in bytes; bigger batches are split, never truncated
    /// [default: 262144 (256 KiB, IoT Hub's limit)].
    #[arg(long)]
    pub max_message_size: Option<usize>,
    /// Interval of the snapshots (listening ports, local users, system
    /// information, OS baseline) [default: 1h].
    #[arg(long)]
    pub snapshot_interval: Option<String>,
    /// Interval of the agent's health events (dropped events, message
    /// statistics) [default: 5m].
    #[arg(long)]
    pub health_interval: Option<String>,
    /// File holding the agent's id (a GUID, created on first run) [default:
    /// STATE_DIR/agent-id].
    #[arg(long)]
    pub agent_id_file: Option<PathBuf>,
    /// Message compression for brokers that are not IoT Hub: none or gzip
    /// (consumers tell gzip by its magic bytes 1f 8b) [default: none].
    #[arg(long)]
    pub compression: Option<String>,
    /// Print the messages on stdout instead of publishing them; state (the
    /// agent id, the learnt baseline) is written only into a --state-dir
    /// given (or `state_dir` of the config file).
    #[arg(long)]
    pub dry_run: bool,
    /// Remote configuration: the topic of the retained JSON document on a
    /// generic broker, or `off` (with hub = azure: the twin, or `off`)
    /// [default: shrike/{client_id}/config].
    #[arg(long, value_name = "TOPIC|off")]
    pub remote_config: Option<String>,
    /// Interval of the Heartbeat event (high priority: the hub tells a
    /// silent device from a quiet one), or `off` [default: 5m].
    #[arg(long, value_name = "DURATION|off")]
    pub heartbeat_interval: Option<String>,
    /// Serve Prometheus metrics on HOST:PORT at /metrics (e.g.
    /// 127.0.0.1:9464) [default: off].
    #[arg(long, value_name = "HOST:PORT|off")]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub probe: crate::probes::ProbeArgs,
    #[command(flatten)]
    pub detect: crate::detect::DetectArgs,
    #[command(flatten)]
    pub sdk: crate::sdk::SdkArgs,
}

/// Everything `shrike run` needs, resolved from defaults, the file and flags.
#[derive(Debug)]
pub struct RunSettings {
    /// None with --dry-run.
    pub mqtt: Option<Settings>,
    /// The IoT Hub identity `mqtt`'s credentials come from (hub = azure): a
    /// reload compares it, as its SAS tokens differ at every resolve.
    pub hub_identity: Option<ConnectionString>,
    pub spool_dir: PathBuf,
    pub spool_size: u64,
    /// The journal's size on disk (0: off) and group commit interval; it
    /// lives in the spool folder (`journal_config`).
    pub journal_size: u64,
    pub journal_interval: Duration,
    pub high_interval: Duration,
    pub low_interval: Duration,
    pub priority: BTreeMap<Kind, KindPriority>,
    /// Per kind: aggregation interval, None = off.
    pub aggregation: BTreeMap<Kind, Option<Duration>>,
    pub max_message_size: usize,
    pub agent_id_file: PathBuf,
    /// Whether a new agent id is written to `agent_id_file` (not in a dry
    /// run without a state folder or id file of its own: the id then lives
    /// in memory; an existing file is still read).
    pub store_agent_id: bool,
    /// The state folder: agent id, learnt baseline, spool (unless set apart).
    pub state_dir: PathBuf,
    /// Listening ports, local users and system information, every...
    pub snapshot_interval: Duration,
    /// The FirewallConfiguration snapshot (`firewall_snapshot` in the file).
    pub firewall_snapshot: bool,
    /// DroppedEventsStatistics and MessageStatistics, every...
    pub health_interval: Duration,
    /// Gzip messages before spooling and publishing them.
    pub gzip: bool,
    /// The detection stage (`[detect]`).
    pub detect: DetectConfig,
    /// Failed PATH-search execs: folded (default) or reported.
    pub exec_misses: ExecMisses,
    pub dry_run: bool,
    /// Where remote configuration comes from (none in a dry run).
    pub remote: RemoteSource,
    /// Heartbeat events, every...
    pub heartbeat_interval: Option<Duration>,
    /// Prometheus metrics' listen address.
    pub metrics: Option<std::net::SocketAddr>,
    /// The SDK socket (off in a dry run unless given).
    pub sdk: crate::sdk::SdkConfig,
    /// Priorities of SDK events by Name (`--priority NAME=...`); a Name not
    /// here: see `RunSettings::sdk_priority`.
    pub sdk_priority: BTreeMap<String, KindPriority>,
}

/// Where remote configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteSource {
    Off,
    /// Retained topics on a generic broker.
    Topics(crate::remote::Topics),
    /// The IoT Hub twin.
    Twin,
}

/// The defaults, documented in one place.
pub mod defaults {
    /// The state folder; the spool and the agent id are in it unless set
    /// apart (`spool_dir`, `agent_id_file`).
    pub const STATE_DIR: &str = crate::detect::baseline::DEFAULT_STATE_DIR;
    pub const SPOOL_DIR: &str = "/var/lib/shrike/spool";
    /// 64 MiB: hours of a busy gateway's messages while the hub is away.
    pub const SPOOL_SIZE: u64 = 64 << 20;
    /// High-priority batches go out this often: with the reader woken at once
    /// for these kinds, alerts reach the hub well within a second.
    pub const HIGH_INTERVAL: &str = "500ms";
    pub const LOW_INTERVAL: &str = "1m";
    pub const AGGREGATE_INTERVAL: &str = "1m";
    /// IoT Hub's device-to-cloud message limit.
    pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;
    pub const AGENT_ID_FILE: &str = "/var/lib/shrike/agent-id";
    pub const KEEP_ALIVE: &str = "60s";
    /// Generic brokers; `{client_id}` is replaced.
    pub const TOPIC: &str = "shrike/{client_id}/security";
    pub const SNAPSHOT_INTERVAL: &str = "1h";
    pub const HEALTH_INTERVAL: &str = "5m";
    /// 16 MiB: a minute of a busy gateway's events at the default intervals.
    pub const JOURNAL_SIZE: u64 = 16 << 20;
    /// Group commit: a SIGKILL loses (and counts) at most this much.
    pub const JOURNAL_INTERVAL: &str = "200ms";
    /// Delivery resumes within this (and a connection attempt) after the broker returns.
    pub const RECONNECT_MAX: &str = "4s";
    /// Generic brokers; `{client_id}` is replaced.
    pub const REMOTE_CONFIG: &str = "shrike/{client_id}/config";
    pub const HEARTBEAT_INTERVAL: &str = "5m";
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "shrike".into())
}

pub(super) fn invalid(setting: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { setting: setting.into(), reason: reason.to_string() }
}

impl RunSettings {
    pub fn resolve(args: &RunArgs) -> Result<RunSettings, ConfigError> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Self::resolve_with(args, &file)
    }

    /// Flags over the remote layer over the file over the defaults: the
    /// layer's settings merged into the file's (tables key by key), its
    /// content (Sigma rules, IoC list) added to the configured rules and lists.
    pub fn resolve_layered(
        args: &RunArgs,
        layer: Option<&crate::remote::Layer>,
    ) -> Result<RunSettings, ConfigError> {
        let Some(layer) = layer else { return Self::resolve(args) };
        let mut base = match &args.config {
            Some(p) => {
                // Parsed as the config first: its errors read as a file's.
                FileConfig::load(p)?;
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.clone(), e))?;
                let v: toml::Value =
                    toml::from_str(&text).map_err(|e| ConfigError::Parse(p.clone(), e.to_string()))?;
                match serde_json::to_value(v) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => serde_json::Map::new(),
                }
            }
            None => serde_json::Map::new(),
        };
        crate::remote::merge(&mut base, &layer.settings);
        let file: FileConfig = serde_json::from_value(serde_json::Value::Object(base))
            .map_err(|e| invalid("remote configuration", e))?;
        let mut s = Self::resolve_with(args, &file)?;
        if s.detect.enabled {
            s.detect.rules.extend(layer.sigma.iter().cloned());
            s.detect.ioc.lists.extend(layer.ioc.iter().cloned());
        }
        Ok(s)
    }

    /// [`resolve`](Self::resolve) with the config file already parsed (the
    /// fuzz target feeds it documents that never were files).
    pub fn resolve_with(args: &RunArgs, file: &FileConfig) -> Result<RunSettings, ConfigError> {
        macro_rules! pick {
            ($name:ident) => {
                args.$name.clone().or(file.$name.clone())
            };
        }
        let high_interval = duration_setting(
            "high_interval",
            &pick!(high_interval).unwrap_or(defaults::HIGH_INTERVAL.into()),
        )?;
        let low_interval =
            duration_setting("low_interval", &pick!(low_interval).unwrap_or(defaults::LOW_INTERVAL.into()))?;
        let agg_default = parse_aggregation(
            "aggregate_interval",
            &pick!(aggregate_interval).unwrap_or(defaults::AGGREGATE_INTERVAL.into()),
        )?;
        // Alerts are always high priority; their aggregation is set like
        // any kind's (the first of a rule and process goes out at once).
        let mut priority: BTreeMap<Kind, KindPriority> =
            Kind::EVENTS.iter().map(|&k| (k, default_priority(k))).collect();
        let mut aggregation: BTreeMap<Kind, Option<Duration>> =
            Kind::EVENTS.iter().map(|&k| (k, agg_default)).collect();
        let fixed = |setting: &str, kind: Kind| match kind {
            Kind::Alert => {
                Err(invalid(setting, "alerts are always high priority (--no-detect turns them off)"))
            }
            _ => Ok(()),
        };
        let mut sdk_priority = BTreeMap::new();
        for (k, v) in file.priority.iter().flatten() {
            let setting = format!("priority.{k}");
            match crate::config::PriorityTarget::parse(k).map_err(|e| invalid(&setting, e))? {
                crate::config::PriorityTarget::Kind(kind) => {
                    fixed(&setting, kind)?;
                    priority.insert(kind, *v);
                }
                crate::config::PriorityTarget::Name(name) => {
                    sdk_priority.insert(name, *v);
                }
            }
        }
        for (k, v) in file.aggregation.iter().flatten() {
            let setting = format!("aggregation.{k}");
            let kind = Kind::from_name(k).ok_or_else(|| invalid(&setting, "unknown event kind"))?;
            aggregation.insert(kind, parse_aggregation(&setting, v)?);
        }
        for (target, v) in &args.priorities {
            let setting = format!("--priority {}", target.name());
            match target {
                crate::config::PriorityTarget::Kind(kind) => {
                    fixed(&setting, *kind)?;
                    priority.insert(*kind, parse_priority(&setting, v)?);
                }
                crate::config::PriorityTarget::Name(name) => {
                    sdk_priority.insert(name.clone(), parse_priority(&setting, v)?);
                }
            }
        }
        for (kind, v) in &args.aggregations {
            aggregation.insert(*kind, parse_aggregation(&format!("--aggregate {}", kind.name()), v)?);
        }
        // SDK events keep the Id their sender was given: never aggregated.
        if aggregation.insert(Kind::Sdk, None).flatten().is_some()
            && (args.aggregations.iter().any(|(k, _)| *k == Kind::Sdk)
                || file.aggregation.iter().flatten().any(|(k, v)| k == "sdk" && v != "off"))
        {
            return Err(invalid("aggregation.sdk", "SDK events are never aggregated (each keeps its Id)"));
        }
        let max_message_size = pick!(max_message_size).unwrap_or(defaults::MAX_MESSAGE_SIZE);
        if !(1024..=16 << 20).contains(&max_message_size) {
            return Err(invalid("max_message_size", format!("{max_message_size} is outside 1024..=16 MiB")));
        }
        let spool_size = pick!(spool_size).unwrap_or(defaults::SPOOL_SIZE);
        if spool_size < max_message_size as u64 * 2 {
            return Err(invalid(
                "spool_size",
                format!("{spool_size} cannot hold two messages of {max_message_size}"),
            ));
        }
        let journal_size = pick!(journal_size).unwrap_or(defaults::JOURNAL_SIZE);
        if journal_size != 0 && journal_size < 64 << 10 {
            return Err(invalid("journal_size", format!("{journal_size}: 0 (off) or at least 65536")));
        }
        let journal_interval = duration_setting(
            "journal_interval",
            &pick!(journal_interval).unwrap_or(defaults::JOURNAL_INTERVAL.into()),
        )?;
        if !(Duration::from_millis(10)..=Duration::from_secs(1)).contains(&journal_interval) {
            return Err(invalid("journal_interval", format!("{journal_interval:?} is outside 10ms..=1s")));
        }
        let dry_run = args.dry_run;
        let hub = pick!(hub).map(|h| parse_hub(&h)).transpose()?;
        let gzip = match pick!(compression).as_deref() {
            None | Some("none") => false,
            Some("gzip") if matches!(hub, Some(Hub::Azure { .. })) => {
                return Err(invalid(
                    "compression",
                    "IoT Hub takes JSON security messages: use none with azure",
                ));
            }
            Some("gzip") => true,
            Some(other) => return Err(invalid("compression", format!("{other:?}: expected none or gzip"))),
        };
        let (mut mqtt, hub_identity) = match hub {
            _ if dry_run => (None, None),
            None => return Err(invalid("hub", "not set: use --hub mqtt://HOST:PORT or azure, or --dry-run")),
            Some(h) => {
                let (mqtt, identity) = mqtt_settings(args, file, h, max_message_size)?;
                (Some(mqtt), identity)
            }
        };
        let remote_config = pick!(remote_config).unwrap_or(defaults::REMOTE_CONFIG.into());
        let remote = match &mut mqtt {
            None => RemoteSource::Off,
            Some(_) if remote_config == "off" => RemoteSource::Off,
            Some(m) if hub_identity.is_some() => {
                m.subscriptions = crate::remote::twin::SUBSCRIPTIONS.map(String::from).to_vec();
                RemoteSource::Twin
            }
            Some(m) => {
                let topic = remote_config.replace("{client_id}", &m.client_id);
                if topic.is_empty() || topic.contains(['+', '#', '\0']) {
                    return Err(invalid("remote_config", format!("{topic:?}: not a topic (no wildcards)")));
                }
                let topics = crate::remote::Topics::new(&topic);
                m.subscriptions = topics.subscriptions();
                RemoteSource::Topics(topics)
            }
        };
        // A dry run leaves the machine as it was: it writes state (the agent
        // id, the learnt baseline) only into a state folder it was given.
        let keep_state = !dry_run || pick!(state_dir).is_some();
        let state_dir: PathBuf = pick!(state_dir).unwrap_or_else(|| defaults::STATE_DIR.into());
        Ok(RunSettings {
            mqtt,
            hub_identity,
            spool_dir: pick!(spool_dir).unwrap_or_else(|| state_dir.join("spool")),
            spool_size,
            journal_size,
            journal_interval,
            high_interval,
            low_interval,
            priority,
            aggregation,
            max_message_size,
            store_agent_id: keep_state || pick!(agent_id_file).is_some(),
            agent_id_file: pick!(agent_id_file).unwrap_or_else(|| state_dir.join("agent-id")),
            snapshot_interval: duration_setting(
                "snapshot_interval",
                &pick!(snapshot_interval).unwrap_or(defaults::SNAPSHOT_INTERVAL.into()),
            )?,
            firewall_snapshot: file.firewall_snapshot.unwrap_or(true),
            health_interval: duration_setting(
                "health_interval",
                &pick!(health_interval).unwrap_or(defaults::HEALTH_INTERVAL.into()),
            )?,
            gzip,
            detect: {
                let mut d = DetectConfig::resolve(file.detect.as_ref(), &args.detect)?;
                d.proc_root.clone_from(&args.probe.proc_root);
                d.baseline.state_dir = keep_state.then(|| state_dir.clone());
                d
            },
            state_dir,
            exec_misses: args.probe.exec_misses.or(file.exec_misses).unwrap_or_default(),
            dry_run,
            remote,
            heartbeat_interval: match pick!(heartbeat_interval)
                .as_deref()
                .unwrap_or(defaults::HEARTBEAT_INTERVAL)
            {
                "off" => None,
                v => Some(duration_setting("heartbeat_interval", v)?),
            },
            metrics: match pick!(metrics).as_deref().unwrap_or("off") {
                "off" => None,
                v => Some(v.parse().map_err(|e| {
                    invalid("metrics", format!("{v:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:9464)"))
                })?),
            },
            // A dry run takes no socket unless given one (it would collide
            // with the running agent's).
            sdk: crate::sdk::SdkConfig {
                // The envelope (AgentVersion, AgentId...) takes the rest.
                max_event_bytes: max_message_size.saturating_sub(256),
                ..crate::sdk::SdkConfig::resolve(
                    &args.sdk,
                    &file.sdk(),
                    (!dry_run).then_some(crate::sdk::defaults::SOCKET),
                )?
            },
            sdk_priority,
        })
    }

    /// The priority of an SDK event: by its Name when set, else high for a
    /// custom kind and an Azure Login, low for the other Azure kinds (like
    /// the agent's own events of those kinds; `--priority sdk=...` moves
    /// the custom kinds' default).
    pub fn sdk_priority(&self, ev: &shrike_common::sdk::SdkEvent) -> KindPriority {
        use shrike_common::{schema::Kind as Name, sdk::SdkEvent};
        if let Some(p) = self.sdk_priority.get(ev.name()) {
            return *p;
        }
        match ev {
            SdkEvent::Custom(_) => self.priority[&Kind::Sdk],
            SdkEvent::Azure(e) if e.kind() == Name::Login => KindPriority::High,
            SdkEvent::Azure(_) => KindPriority::Low,
        }
    }

    /// The priority an event is published with (an SDK event's by its Name).
    pub fn priority_of(&self, ev: &crate::events::Event) -> KindPriority {
        match &ev.body {
            crate::events::Body::Sdk(s) => self.sdk_priority(&s.event),
            _ => self.priority.get(&ev.kind()).copied().unwrap_or(KindPriority::Off),
        }
    }

    /// The journal, when it is on (not in a dry run: there is no spool).
    pub fn journal_config(&self) -> Option<crate::journal::JournalConfig> {
        (self.journal_size > 0 && !self.dry_run).then(|| crate::journal::JournalConfig {
            dir: self.spool_dir.join("journal"),
            interval: self.journal_interval,
            size: self.journal_size,
        })
    }

    /// The kernel kinds to publish (priority not off); none, without
    /// detection, is an error.
    pub(super) fn collected(&self) -> Result<BTreeSet<Kind>, ConfigError> {
        let kinds: BTreeSet<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| self.priority.get(k).is_some_and(|p| *p != KindPriority::Off))
            .collect();
        if kinds.is_empty() && !self.detect.enabled {
            return Err(invalid("priority", "every kind is off and detection too: nothing to collect"));
        }
        Ok(kinds)
    }
}

pub(super) fn mqtt_settings(
    args: &RunArgs,
    file: &FileConfig,
    hub: Hub,
    max_message_size: usize,
) -> Result<(Settings, Option<ConnectionString>), ConfigError> {
    macro_rules! pick {
        ($name:ident) => {
            args.$name.clone().or(file.$name.clone())
        };
    }
    let keep_alive =
        duration_setting("keep_alive", &pick!(keep_alive).unwrap_or(defaults::KEEP_ALIVE.into()))?;
    let ca_file = pick!(ca_file);
    let client_cert = pick!(client_cert);
    let client_key = pick!(client_key);
    for (name, p) in [("ca_file", &ca_file), ("client_cert", &client_cert), ("client_key", &client_key)] {
        if let Some(p) = p {
            readable(name, p)?;
        }
    }
    if client_cert.is_some() != client_key.is_some() {
        return Err(invalid("client_cert", "client_cert and client_key go together"));
    }
    if let Some(k) = &client_key {
        crate::secrets::warn_if_exposed("client_key", k);
    }
    let password = match (pick!(password_file), pick!(password_env)) {
        (Some(f), _) => {
            crate::secrets::warn_if_exposed("password_file", &f);
            Some(
                std::fs::read_to_string(&f)
                    .map_err(|e| invalid("password_file", format!("{}: {e}", f.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            )
        }
        (None, Some(var)) => {
            Some(std::env::var(&var).map_err(|_| invalid("password_env", format!("${var} is not set")))?)
        }
        (None, None) => None,
    };
    let tls_with = |ca: Option<PathBuf>| -> Result<TlsSettings, ConfigError> {
        let ca_file = ca
            .or_else(|| {
                ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
            })
            .ok_or_else(|| {
                invalid("ca_file", "TLS needs CA certificates: none given and no system bundle")
            })?;
        Ok(TlsSettings { ca_file, client_cert: client_cert.clone(), client_key: client_key.clone() })
    };
    let reconnect_max =
        duration_setting("reconnect_max", &pick!(reconnect_max).unwrap_or(defaults::RECONNECT_MAX.into()))?;
    let reconnect_min = Settings::default().reconnect_min;
    if !(reconnect_min..=Duration::from_secs(3600)).contains(&reconnect_max) {
        return Err(invalid("reconnect_max", format!("{reconnect_max:?} is outside {reconnect_min:?}..=1h")));
    }
    let base = Settings { keep_alive, max_message_size, reconnect_max, ..Settings::default() };
    let mut identity = None;
    let settings = match hub {
        Hub::Mqtt { host, port, tls } => {
            let client_id = pick!(client_id).unwrap_or_else(hostname);
            let topic = pick!(topic).unwrap_or(defaults::TOPIC.into()).replace("{client_id}", &client_id);
            if !tls && client_cert.is_none() {
                crate::secrets::warn_plaintext(&host, port, password.is_some());
            }
            Settings {
                host,
                port,
                client_id,
                username: pick!(username),
                password,
                topic,
                tls: if tls || client_cert.is_some() { Some(tls_with(ca_file)?) } else { None },
                ..base
            }
        }
        Hub::Azure { endpoint } => {
            let path = pick!(connection_string_file)
                .ok_or_else(|| invalid("connection_string_file", "required with hub = azure"))?;
            crate::secrets::warn_if_exposed("connection_string_file", &path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid("connection_string_file", format!("{}: {e}", path.display())))?;
            let cs: ConnectionString =
                text.trim().parse().map_err(|e| invalid("connection_string_file", e))?;
            // SAS tokens live an hour; each connection attempt gets a fresh
            // one and the connection is renewed after 50 minutes.
            const TOKEN_TTL: Duration = Duration::from_secs(3600);
            let password = cs.password(crate::publish::azure::expiry_in(TOKEN_TTL));
            let credentials_refresh = password.is_some().then(|| {
                let cs = cs.clone();
                crate::publish::mqtt::CredentialsRefresh {
                    every: TOKEN_TTL * 5 / 6,
                    make: std::sync::Arc::new(move || {
                        cs.password(crate::publish::azure::expiry_in(TOKEN_TTL)).unwrap_or_default()
                    }),
                }
            });
            let (host, port) = endpoint.unwrap_or_else(|| (cs.broker_host().to_owned(), 8883));
            identity = Some(cs.clone());
            Settings {
                host,
                port,
                client_id: cs.client_id(),
                username: Some(cs.username()),
                password,
                topic: cs.security_message_topic(),
                tls: Some(tls_with(ca_file)?),
                credentials_refresh,
                ..base
            }
        }
    };
    settings.validate().map_err(|e| invalid("hub", e))?;
    Ok((settings, identity))
}

/// The agent's id: stable per installation, created on first run.
/// Only read, never written, unless `store`.
/// The file is read only when it is a regular file of root's or the agent's
/// user, not through a link; it is written 0600 in a 0700 folder (`ownfile`).
pub(super) fn agent_id(path: &Path, store: bool) -> Uuid {
    match crate::ownfile::open_own(path).and_then(std::io::read_to_string) {
        Ok(text) => match text.trim().parse() {
            Ok(id) => return id,
            Err(_) => tracing::warn!(file = %path.display(), "agent id file is not a GUID: making a new one"),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %path.display(), "agent id file not used ({e}): making a new one"),
    }
    let id = Uuid::new_v4();
    if !store {
        return id;
    }
    let write = || crate::ownfile::write_atomic(path, format!("{id}\n").as_bytes());
    if let Err(e) = write() {
        tracing::warn!(file = %path.display(), "cannot store the agent id ({e}): it will change at restart");
    }
    id
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from([&["shrike", "run"], args].concat()).expect("valid flags");
        match cli.command {
            Command::Run(a) => *a,
            _ => unreachable!("run"),
        }
    }

    /// The documented example is what the agent reads: every key in it,
    /// `[detect]` included, is accepted and gives the documented defaults.
    #[test]
    fn the_example_config_resolves_to_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/shrike.toml");
        let s = RunSettings::resolve(&run_args(&["--config", example])).expect("example config");
        let d = DetectConfig::default();
        assert_eq!(
            (s.detect.enabled, &s.detect.rules, &s.detect.disabled, &s.detect.builtin),
            (d.enabled, &d.rules, &d.disabled, &d.builtin)
        );
        assert_eq!(s.priority[&Kind::Alert], KindPriority::High);
        assert_eq!(s.aggregation[&Kind::Alert], Some(Duration::from_secs(60)));
        assert_eq!(
            s.detect.recommend,
            crate::recommend::RecommendConfig::default(),
            "[detect] recommendations"
        );
    }

    #[test]
    fn detect_flags_and_alert_settings() {
        let s = run_args(&["--dry-run", "--no-detect", "--priority", "exec=off", "--aggregate", "alert=10s"]);
        let s = RunSettings::resolve(&s).unwrap();
        assert!(!s.detect.enabled);
        assert_eq!(s.aggregation[&Kind::Alert], Some(Duration::from_secs(10)));
        assert!(!s.collected().unwrap().contains(&Kind::Exec));

        let err = RunSettings::resolve(&run_args(&["--dry-run", "--priority", "alert=low"])).unwrap_err();
        assert!(err.to_string().contains("always high"), "{err}");
        // A zero window: refused when the flag is parsed (exit 2), or the key read.
        let err =
            Cli::try_parse_from(["shrike", "run", "--dry-run", "--brute-force-window", "0s"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("longer than 0"), "{err}");

        // Every kind off: only detection is left to do, or nothing.
        let off: Vec<String> = Kind::ALL.iter().map(|k| format!("--priority={}=off", k.name())).collect();
        let off: Vec<&str> = off.iter().map(String::as_str).collect();
        let s = RunSettings::resolve(&run_args(&[&["--dry-run"], &off[..]].concat())).unwrap();
        assert!(s.collected().unwrap().is_empty());
        let s = RunSettings::resolve(&run_args(&[&["--dry-run", "--no-detect"], &off[..]].concat())).unwrap();
        assert!(s.collected().is_err());
    }

    /// `exec_misses`: fold by default, the file's key, the flag over it,
    /// a bad value rejected.
    #[test]
    fn exec_misses_from_the_file_and_the_flag() {
        use crate::enrich::exec_misses::ExecMisses;
        let dir = std::env::temp_dir().join(format!("shrike-exec-misses-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("c.toml");
        let cfg_s = cfg.to_str().unwrap();
        assert_eq!(RunSettings::resolve(&run_args(&["--dry-run"])).unwrap().exec_misses, ExecMisses::Fold);
        std::fs::write(&cfg, "exec_misses = \"report\"\n").unwrap();
        let s = RunSettings::resolve(&run_args(&["--dry-run", "--config", cfg_s])).unwrap();
        assert_eq!(s.exec_misses, ExecMisses::Report);
        let s = RunSettings::resolve(&run_args(&["--dry-run", "--config", cfg_s, "--exec-misses", "fold"]))
            .unwrap();
        assert_eq!(s.exec_misses, ExecMisses::Fold);
        std::fs::write(&cfg, "exec_misses = \"drop\"\n").unwrap();
        let err = RunSettings::resolve(&run_args(&["--dry-run", "--config", cfg_s])).unwrap_err();
        assert!(err.to_string().contains("exec_misses") || err.to_string().contains("drop"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `firewall_snapshot`: on by default, off from the file; a non-boolean
    /// rejected.
    #[test]
    fn firewall_snapshot_switch() {
        let dir = std::env::temp_dir().join(format!("shrike-firewall-switch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("c.toml");
        let cfg_s = cfg.to_str().unwrap();
        assert!(RunSettings::resolve(&run_args(&["--dry-run"])).unwrap().firewall_snapshot);
        std::fs::write(&cfg, "firewall_snapshot = false\n").unwrap();
        assert!(
            !RunSettings::resolve(&run_args(&["--dry-run", "--config", cfg_s])).unwrap().firewall_snapshot
        );
        std::fs::write(&cfg, "firewall_snapshot = \"no\"\n").unwrap();
        let err = RunSettings::resolve(&run_args(&["--dry-run", "--config", cfg_s])).unwrap_err();
        assert!(format!("{err:#}").contains("firewall_snapshot"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `shrike run --help` states the defaults that apply (written in the help
    /// because the config file comes between them and the flags).
    #[test]
    fn help_states_the_applied_defaults() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        let run = cli.find_subcommand("run").expect("run");
        let shown = |flag: &str| -> String {
            let arg = run.get_arguments().find(|a| a.get_long() == Some(flag)).expect(flag);
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let from = help.find("[default: ").unwrap_or_else(|| panic!("--{flag}: {help}")) + 10;
            help[from..].split(']').next().unwrap_or_default().to_owned()
        };
        assert_eq!(shown("high-interval"), defaults::HIGH_INTERVAL);
        assert_eq!(shown("low-interval"), defaults::LOW_INTERVAL);
        assert_eq!(shown("aggregate-interval"), defaults::AGGREGATE_INTERVAL);
        assert_eq!(shown("snapshot-interval"), defaults::SNAPSHOT_INTERVAL);
        assert_eq!(shown("health-interval"), defaults::HEALTH_INTERVAL);
        assert_eq!(shown("keep-alive"), defaults::KEEP_ALIVE);
        assert_eq!(shown("topic"), defaults::TOPIC);
        assert!(shown("spool-size").starts_with(&format!("{} ", defaults::SPOOL_SIZE)));
        assert!(shown("max-message-size").starts_with(&format!("{} ", defaults::MAX_MESSAGE_SIZE)));
        assert_eq!(shown("state-dir"), defaults::STATE_DIR);
    }

    /// The agent id, the baseline and the spool default under the state
    /// folder; explicit `spool_dir` / `agent_id_file` keep their place.
    #[test]
    fn state_dir_holds_the_agent_s_files_by_default() {
        let s = RunSettings::resolve(&run_args(&["--dry-run"])).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/shrike"));
        assert_eq!(s.spool_dir, PathBuf::from(defaults::SPOOL_DIR));
        assert_eq!(s.agent_id_file, PathBuf::from(defaults::AGENT_ID_FILE));
        // A dry run without a state folder of its own writes none.
        assert!(!s.store_agent_id);
        assert_eq!(s.detect.baseline.state_dir, None);
        let s = RunSettings::resolve(&run_args(&["--dry-run", "--state-dir", "/srv/st"])).unwrap();
        assert!(s.store_agent_id);
        assert_eq!(
            (s.spool_dir.as_path(), s.agent_id_file.as_path()),
            (Path::new("/srv/st/spool"), Path::new("/srv/st/agent-id"))
        );
        assert_eq!(s.detect.baseline.state_dir.as_deref(), Some(Path::new("/srv/st")));
        let s = RunSettings::resolve(&run_args(&[
            "--dry-run",
            "--state-dir",
            "/srv/st",
            "--spool-dir",
            "/q",
            "--agent-id-file",
            "/id",
            "--baseline-learn",
            "off",
        ]))
        .unwrap();
        assert_eq!((s.spool_dir.as_path(), s.agent_id_file.as_path()), (Path::new("/q"), Path::new("/id")));
        assert_eq!(s.detect.baseline.learn, None);
        let s = RunSettings::resolve(&run_args(&["--dry-run", "--agent-id-file", "/id"])).unwrap();
        assert!(s.store_agent_id, "an id file given is written");
        let err = RunSettings::resolve(&run_args(&["--dry-run", "--baseline-learn", "soon"])).unwrap_err();
        assert!(err.to_string().contains("detect.baseline_learn"), "{err}");
    }

    #[test]
    fn unknown_detect_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("shrike-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("bad.toml");
        std::fs::write(&cfg, "[detect]\nbrute_force = 3\n").unwrap();
        let err =
            RunSettings::resolve(&run_args(&["--dry-run", "--config", cfg.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("brute_force"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
