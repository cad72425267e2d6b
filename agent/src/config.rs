//! `shrike run`'s config file (`FileConfig`) and the parsers of its values
//! that need the crate's types (kinds, priorities, hubs).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use crate::units::parse_duration;
use crate::{events::Kind, publish::spool::Priority};

/// A setting that cannot be applied: the agent exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
    /// `[detect]` and its flags.
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
}

fn invalid(setting: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { setting: setting.into(), reason: reason.to_string() }
}

/// A kind's priority: High (sent within `high_interval`), Low (batched every
/// `low_interval`) or Off (not published; its probes are attached only when
/// detection looks at the kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KindPriority {
    High,
    Low,
    Off,
}

impl KindPriority {
    /// As written in the config file and flags (`parse_priority`).
    pub fn name(self) -> &'static str {
        match self {
            KindPriority::High => "high",
            KindPriority::Low => "low",
            KindPriority::Off => "off",
        }
    }

    pub fn spool(self) -> Option<Priority> {
        match self {
            KindPriority::High => Some(Priority::High),
            KindPriority::Low => Some(Priority::Low),
            KindPriority::Off => None,
        }
    }
}

/// The config file: every key optional, unknown keys rejected. Durations are
/// strings (`"1s"`, `"5m"`, `"PT7M"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The state folder (agent id, baseline, spool by default).
    pub state_dir: Option<PathBuf>,
    pub hub: Option<String>,
    pub connection_string_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub topic: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub keep_alive: Option<String>,
    pub spool_dir: Option<PathBuf>,
    pub spool_size: Option<u64>,
    pub journal_size: Option<u64>,
    pub journal_interval: Option<String>,
    pub reconnect_max: Option<String>,
    pub high_interval: Option<String>,
    pub low_interval: Option<String>,
    pub aggregate_interval: Option<String>,
    pub max_message_size: Option<usize>,
    pub agent_id_file: Option<PathBuf>,
    pub snapshot_interval: Option<String>,
    /// The FirewallConfiguration snapshot (nft / iptables-save) [default: true].
    pub firewall_snapshot: Option<bool>,
    pub health_interval: Option<String>,
    /// "none" or "gzip" (generic brokers only: IoT Hub takes JSON).
    pub compression: Option<String>,
    pub priority: Option<BTreeMap<String, KindPriority>>,
    /// Per kind: a duration (the aggregation interval) or "off".
    pub aggregation: Option<BTreeMap<String, String>>,
    /// Detection: rules, built-in detectors and their tuning.
    pub detect: Option<crate::detect::config::FileDetect>,
    /// "fold" or "report": failed PATH-search execs (`--exec-misses`).
    pub exec_misses: Option<crate::enrich::exec_misses::ExecMisses>,
    /// Remote configuration: topic of the retained document on a generic
    /// broker (`{client_id}` replaced), or "off" (the IoT Hub twin too).
    pub remote_config: Option<String>,
    /// Interval of the heartbeat event, or "off".
    pub heartbeat_interval: Option<String>,
    /// Prometheus metrics: HOST:PORT to serve /metrics on, or "off".
    pub metrics: Option<String>,
    /// The SDK socket (a path or "off") and its limits (`sdk/`).
    pub sdk_socket: Option<String>,
    pub sdk_rate: Option<u32>,
    pub sdk_connection_rate: Option<u32>,
    pub sdk_idle_timeout: Option<String>,
    pub sdk_line_timeout: Option<String>,
    pub sdk_max_connections: Option<usize>,
}

impl FileConfig {
    /// The SDK socket's keys.
    pub fn sdk(&self) -> crate::sdk::FileSdk {
        crate::sdk::FileSdk {
            sdk_socket: self.sdk_socket.clone(),
            sdk_rate: self.sdk_rate,
            sdk_connection_rate: self.sdk_connection_rate,
            sdk_idle_timeout: self.sdk_idle_timeout.clone(),
            sdk_line_timeout: self.sdk_line_timeout.clone(),
            sdk_max_connections: self.sdk_max_connections,
        }
    }

    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), e.to_string()))
    }
}

/// Where messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hub {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    Mqtt { host: String, port: u16, tls: bool },
    /// Azure IoT Hub, from a device or module connection string; `endpoint`
    /// overrides where to connect (`azure://HOST:PORT`: an IoT Edge gateway,
    /// a test broker), the identity strings still come from the string.
    Azure { endpoint: Option<(String, u16)> },
}

pub fn parse_hub(s: &str) -> Result<Hub, ConfigError> {
    if s == "azure" {
        return Ok(Hub::Azure { endpoint: None });
    }
    if let Some(rest) = s.strip_prefix("azure://") {
        return match parse_hub(&format!("mqtts://{rest}"))? {
            Hub::Mqtt { host, port, .. } => Ok(Hub::Azure { endpoint: Some((host, port)) }),
            Hub::Azure { .. } => unreachable!("parse_hub of mqtts:// is Mqtt"),
        };
    }
    let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(invalid(
            "hub",
            format!("{s:?}: expected mqtt://HOST:PORT, mqtts://HOST:PORT, azure or azure://HOST:PORT"),
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p.parse().map_err(|_| invalid("hub", format!("bad port {p:?} in {s:?}")))?;
            (h.trim_start_matches('[').trim_end_matches(']').to_owned(), port)
        }
        _ => (rest.to_owned(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(invalid("hub", format!("no host in {s:?}")));
    }
    Ok(Hub::Mqtt { host, port, tls })
}

/// Default priorities: logins and privilege changes are urgent; process and
/// network activity is batched; fork/listen/bind have no message kind.
pub fn default_priority(kind: Kind) -> KindPriority {
    match kind {
        Kind::Login | Kind::Privilege | Kind::Alert => KindPriority::High,
        // Other programs' events (custom kinds; `--priority NAME=...` per
        // Name): what a program bothers to report is urgent unless said.
        Kind::Sdk => KindPriority::High,
        Kind::Exec | Kind::Exit | Kind::Connect | Kind::Accept => KindPriority::Low,
        // File changes: batched and aggregated; what is urgent about them
        // is an alert (ssh-key-added...), which is high.
        Kind::File => KindPriority::Low,
        Kind::Fork | Kind::Listen | Kind::Bind => KindPriority::Off,
    }
}

/// What a `--priority` / `[priority]` key names: an event kind (`exec`), or
/// the `Name` of events other programs report through the SDK (an Azure
/// kind's, `Login`, or one of their own, `DoorOpened`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PriorityTarget {
    Kind(Kind),
    Name(String),
}

impl PriorityTarget {
    pub fn parse(k: &str) -> Result<PriorityTarget, String> {
        let k = k.trim();
        if let Some(kind) = Kind::from_name(k) {
            return Ok(PriorityTarget::Kind(kind));
        }
        let name_ok = shrike_common::schema::Kind::from_name(k)
            .is_some_and(|n| n.family() == shrike_common::schema::Family::Azure)
            || shrike_common::schema::check_custom_name(k).is_ok();
        if name_ok {
            Ok(PriorityTarget::Name(k.to_owned()))
        } else {
            let all: Vec<_> = Kind::EVENTS.iter().map(|k| k.name()).collect();
            Err(format!(
                "unknown event kind {k:?}: kinds are {}, or the Name of SDK events (starts with A-Z)",
                all.join(", ")
            ))
        }
    }

    pub fn name(&self) -> &str {
        match self {
            PriorityTarget::Kind(k) => k.name(),
            PriorityTarget::Name(n) => n,
        }
    }
}

/// `--priority KIND|NAME=VALUE`.
pub fn parse_priority_value(s: &str) -> Result<(PriorityTarget, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected KIND=VALUE or NAME=VALUE"))?;
    Ok((PriorityTarget::parse(k)?, v.trim().to_owned()))
}

/// `KIND=VALUE` pairs from the command line.
pub fn parse_kind_value(s: &str) -> Result<(Kind, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected KIND=VALUE"))?;
    let kind = Kind::from_name(k.trim()).ok_or_else(|| format!("unknown event kind {k:?}"))?;
    Ok((kind, v.trim().to_owned()))
}

pub fn parse_priority(setting: &str, v: &str) -> Result<KindPriority, ConfigError> {
    match v {
        "high" => Ok(KindPriority::High),
        "low" => Ok(KindPriority::Low),
        "off" => Ok(KindPriority::Off),
        _ => Err(invalid(setting, format!("{v:?}: expected high, low or off"))),
    }
}

/// A duration or "off".
pub fn parse_aggregation(setting: &str, v: &str) -> Result<Option<Duration>, ConfigError> {
    if v == "off" {
        return Ok(None);
    }
    let d = parse_duration(v).map_err(|e| invalid(setting, e))?;
    if d.is_zero() {
        return Err(invalid(setting, "an interval must be longer than 0 (use \"off\")"));
    }
    Ok(Some(d))
}

pub fn duration_setting(setting: &str, v: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(v).map_err(|e| invalid(setting, e))?;
    if d.is_zero() {
        return Err(invalid(setting, "must be longer than 0"));
    }
    Ok(d)
}

pub fn readable(setting: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path).map(drop).map_err(|e| invalid(setting, format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod run_tests {
    use super::*;

    #[test]
    fn hubs() {
        assert_eq!(
            parse_hub("mqtt://127.0.0.1:1883").unwrap(),
            Hub::Mqtt { host: "127.0.0.1".into(), port: 1883, tls: false }
        );
        assert_eq!(
            parse_hub("mqtts://broker.lan").unwrap(),
            Hub::Mqtt { host: "broker.lan".into(), port: 8883, tls: true }
        );
        assert_eq!(
            parse_hub("mqtt://[::1]:1884").unwrap(),
            Hub::Mqtt { host: "::1".into(), port: 1884, tls: false }
        );
        assert_eq!(parse_hub("azure").unwrap(), Hub::Azure { endpoint: None });
        assert_eq!(
            parse_hub("azure://127.0.0.1:8884").unwrap(),
            Hub::Azure { endpoint: Some(("127.0.0.1".into(), 8884)) }
        );
        for bad in ["http://x", "mqtt://:1", "mqtt://h:port", ""] {
            let e = parse_hub(bad).unwrap_err().to_string();
            assert!(e.contains("hub"), "{bad}: {e}");
        }
    }

    #[test]
    fn file_rejects_unknown_keys_and_names_bad_values() {
        let dir = std::env::temp_dir().join(format!("shrike-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(&p, "hub = \"mqtt://h:1\"\nhigh_interval = \"2s\"\n[priority]\nexec = \"high\"\n")
            .unwrap();
        let c = FileConfig::load(&p).unwrap();
        assert_eq!(c.priority.unwrap()["exec"], KindPriority::High);
        std::fs::write(&p, "hub = \"mqtt://h:1\"\nhihg_interval = \"2s\"\n").unwrap();
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("hihg_interval"), "{e}");
        std::fs::write(&p, "[priority]\nexec = \"urgent\"\n").unwrap();
        assert!(FileConfig::load(&p).is_err());
        assert!(
            duration_setting("low_interval", "5 parsecs").unwrap_err().to_string().contains("low_interval")
        );
        assert_eq!(parse_aggregation("aggregation.exec", "off").unwrap(), None);
        assert_eq!(parse_aggregation("aggregation.exec", "PT1M").unwrap(), Some(Duration::from_secs(60)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
