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
    pub probe: crate::probes::ProbeArgs,
    #[command(flatten)]
    pub detect: crate::detect::DetectArgs,
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
    pub high_interval: Duration,
    pub low_interval: Duration,
    pub priority: BTreeMap<Kind, KindPriority>,
    /// Per kind: aggregation interval, None = off.
    pub aggregation: BTreeMap<Kind, Option<Duration>>,
    pub max_message_size: usize,
    pub agent_id_file: PathBuf,
    /// The state folder: agent id, learnt baseline, spool (unless set apart).
    pub state_dir: PathBuf,
    /// Listening ports, local users and system information, every...
    pub snapshot_interval: Duration,
    /// DroppedEventsStatistics and MessageStatistics, every...
    pub health_interval: Duration,
    /// Gzip messages before spooling and publishing them.
    pub gzip: bool,
    /// The detection stage (`[detect]`).
    pub detect: DetectConfig,
    /// Failed PATH-search execs: folded (default) or reported.
    pub exec_misses: ExecMisses,
    pub dry_run: bool,
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
        for (k, v) in file.priority.iter().flatten() {
            let setting = format!("priority.{k}");
            let kind = Kind::from_name(k).ok_or_else(|| invalid(&setting, "unknown event kind"))?;
            fixed(&setting, kind)?;
            priority.insert(kind, *v);
        }
        for (k, v) in file.aggregation.iter().flatten() {
            let setting = format!("aggregation.{k}");
            let kind = Kind::from_name(k).ok_or_else(|| invalid(&setting, "unknown event kind"))?;
            aggregation.insert(kind, parse_aggregation(&setting, v)?);
        }
        for (kind, v) in &args.priorities {
            fixed(&format!("--priority {}", kind.name()), *kind)?;
            priority.insert(*kind, parse_priority(&format!("--priority {}", kind.name()), v)?);
        }
        for (kind, v) in &args.aggregations {
            aggregation.insert(*kind, parse_aggregation(&format!("--aggregate {}", kind.name()), v)?);
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
        let (mqtt, hub_identity) = match hub {
            _ if dry_run => (None, None),
            None => return Err(invalid("hub", "not set: use --hub mqtt://HOST:PORT or azure, or --dry-run")),
            Some(h) => {
                let (mqtt, identity) = mqtt_settings(args, &file, h, max_message_size)?;
                (Some(mqtt), identity)
            }
        };
        let state_dir: PathBuf = pick!(state_dir).unwrap_or_else(|| defaults::STATE_DIR.into());
        Ok(RunSettings {
            mqtt,
            hub_identity,
            spool_dir: pick!(spool_dir).unwrap_or_else(|| state_dir.join("spool")),
            spool_size,
            high_interval,
            low_interval,
            priority,
            aggregation,
            max_message_size,
            agent_id_file: pick!(agent_id_file).unwrap_or_else(|| state_dir.join("agent-id")),
            snapshot_interval: duration_setting(
                "snapshot_interval",
                &pick!(snapshot_interval).unwrap_or(defaults::SNAPSHOT_INTERVAL.into()),
            )?,
            health_interval: duration_setting(
                "health_interval",
                &pick!(health_interval).unwrap_or(defaults::HEALTH_INTERVAL.into()),
            )?,
            gzip,
            detect: {
                let mut d = DetectConfig::resolve(file.detect.as_ref(), &args.detect)?;
                d.proc_root.clone_from(&args.probe.proc_root);
                d.baseline.state_dir = Some(state_dir.clone());
                d
            },
            state_dir,
            exec_misses: args.probe.exec_misses.or(file.exec_misses).unwrap_or_default(),
            dry_run,
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
    let password = match (pick!(password_file), pick!(password_env)) {
        (Some(f), _) => Some(
            std::fs::read_to_string(&f)
                .map_err(|e| invalid("password_file", format!("{}: {e}", f.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
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
    let base = Settings { keep_alive, max_message_size, ..Settings::default() };
    let mut identity = None;
    let settings = match hub {
        Hub::Mqtt { host, port, tls } => {
            let client_id = pick!(client_id).unwrap_or_else(hostname);
            let topic = pick!(topic).unwrap_or(defaults::TOPIC.into()).replace("{client_id}", &client_id);
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
pub(super) fn agent_id(path: &Path) -> Uuid {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(id) = text.trim().parse() {
            return id;
        }
        tracing::warn!(file = %path.display(), "agent id file is not a GUID: making a new one");
    }
    let id = Uuid::new_v4();
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, format!("{id}\n"))
    };
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
        let err = RunSettings::resolve(&run_args(&["--dry-run", "--brute-force-window", "0s"])).unwrap_err();
        assert!(err.to_string().contains("detect.brute_force_window"), "{err}");

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

    /// The agent id, the baseline and the spool default under the state
    /// folder; explicit `spool_dir` / `agent_id_file` keep their place.
    #[test]
    fn state_dir_holds_the_agent_s_files_by_default() {
        let s = RunSettings::resolve(&run_args(&["--dry-run"])).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/shrike"));
        assert_eq!(s.spool_dir, PathBuf::from(defaults::SPOOL_DIR));
        assert_eq!(s.agent_id_file, PathBuf::from(defaults::AGENT_ID_FILE));
        let s = RunSettings::resolve(&run_args(&["--dry-run", "--state-dir", "/srv/st"])).unwrap();
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
