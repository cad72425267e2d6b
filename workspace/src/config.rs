//! Settings: defaults, the TOML file and flags into [`Settings`]. The broker
//! keys are the agent's (`shrike run`): same names, same meaning.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::cli::ServeArgs;

/// A setting that cannot be applied: `shrike-workspace` exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

pub fn invalid(setting: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { setting: setting.into(), reason: reason.to_string() }
}

/// Defaults, documented once.
pub mod defaults {
    /// The agents' topics (`shrike run` publishes to `shrike/{client_id}/security`);
    /// the `+` level is the device's client id.
    pub const TOPIC: &str = "shrike/+/security";
    /// The shared subscription's group: every process of a group gets a share.
    pub const GROUP: &str = "shrike-workspace";
    pub const DB: &str = "/var/lib/shrike-workspace/workspace.db";
    pub const KEEP_ALIVE: &str = "30s";
    /// Rows kept per table (`--retain`).
    pub const RETAIN: &str = "30d";
    pub const RETAIN_INTERVAL: &str = "10m";
    /// A batch is written when it holds this many messages or is this old.
    pub const BATCH_MESSAGES: usize = 1000;
    pub const BATCH_DELAY: &str = "50ms";
    /// A write the database keeps refusing is retried this long, then the
    /// process exits (code 1) without acknowledging what it did not store.
    pub const DB_RETRY_FOR: &str = "5m";
    /// For agents that send no heartbeat: three times the agent's default
    /// health interval (5m), which it sends at least that often.
    pub const SILENT_AFTER: &str = "15m";
    pub const ANALYTICS_INTERVAL: &str = "30s";
    /// The largest message (after gzip) taken: above, it is rejected.
    pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
    pub const FLEET_SPREAD_DEVICES: u32 = 3;
    pub const FLEET_SPREAD_WINDOW: &str = "1h";
    pub const AUTH_FAILURES: u32 = 5;
    pub const AUTH_WINDOW: &str = "1m";
    pub const STORM_CONNECTS: u32 = 10;
    pub const STORM_WINDOW: &str = "1m";
    pub const RESTARTS: u32 = 3;
    pub const RESTART_WINDOW: &str = "1h";
    /// `--publish-alerts` without a topic (off unless asked).
    pub const PUBLISH_ALERTS: &str = "shrike/fleet/alerts";
}

/// The config file (`--config`): every key optional, unknown keys rejected;
/// flags override it. Durations are strings ("30d", "5m", "PT7M").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub broker: Option<String>,
    pub client_id: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    #[serde(alias = "ca")]
    pub ca_file: Option<PathBuf>,
    #[serde(alias = "cert")]
    pub client_cert: Option<PathBuf>,
    #[serde(alias = "key")]
    pub client_key: Option<PathBuf>,
    pub keep_alive: Option<String>,
    pub db: Option<String>,
    /// `"30d"` for every table, or a table of per-table durations with an
    /// optional `default`: `retain = { default = "30d", events = "7d" }`.
    pub retain: Option<RetainConfig>,
    pub retain_interval: Option<String>,
    pub batch_delay: Option<String>,
    pub db_retry_for: Option<String>,
    pub http: Option<String>,
    pub http_token_file: Option<PathBuf>,
    pub http_basic_file: Option<PathBuf>,
    pub silent_after: Option<String>,
    pub analytics_interval: Option<String>,
    pub broker_log: Option<bool>,
    /// `true` (the default topic), `false`, or a topic.
    pub publish_alerts: Option<PublishAlerts>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PublishAlerts {
    On(bool),
    Topic(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RetainConfig {
    All(String),
    PerTable(BTreeMap<String, String>),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), e.to_string()))
    }
}

/// Where the rows go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbTarget {
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL (libpq's key=value form works too).
    Postgres(String),
}

impl DbTarget {
    pub fn parse(s: &str) -> DbTarget {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") || s.contains("host=") {
            DbTarget::Postgres(s.to_owned())
        } else {
            DbTarget::Sqlite(PathBuf::from(s.strip_prefix("sqlite://").unwrap_or(s)))
        }
    }
}

/// TLS to the broker, as the agent's: CA, and for mutual TLS a client
/// certificate and key (PEM).
#[derive(Clone, Debug)]
pub struct Tls {
    pub ca_file: PathBuf,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Clone)]
pub struct BrokerSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// A client id given by the user is kept across restarts with a
    /// persistent session (the broker keeps our share while we are away);
    /// a generated one uses a clean session.
    pub persistent: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub topic: String,
    pub group: String,
    pub keep_alive: Duration,
    pub tls: Option<Tls>,
    /// Subscribe to `$SYS/broker/log/#` (mosquitto's `log_dest topic`).
    pub broker_log: bool,
    /// Publish the fleet alerts this process stores to this topic.
    pub publish_alerts: Option<String>,
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("tls", &self.tls)
            .finish()
    }
}

impl BrokerSettings {
    /// `$share/<group>/<topic>`: the broker hands each message to one
    /// subscriber of the group.
    pub fn shared_filter(&self) -> String {
        format!("$share/{}/{}", self.group, self.topic)
    }
}

/// The tables retention applies to, with the column that dates a row.
pub const RETAINED_TABLES: &[(&str, &str)] = &[
    ("events", "time"),
    ("alerts", "time"),
    ("messages", "time"),
    ("rejected", "time"),
    ("recommendation_history", "time"),
    ("broker_log", "time"),
];

#[derive(Clone, Debug)]
pub struct Analytics {
    pub interval: Duration,
    /// Set: a device silent this long is silent. Unset: three of its
    /// heartbeat intervals, or [`defaults::SILENT_AFTER`] for agents without
    /// heartbeats.
    pub silent_after: Option<Duration>,
    pub spread_devices: u32,
    pub spread_window: Duration,
    pub auth_failures: u32,
    pub auth_window: Duration,
    pub storm_connects: u32,
    pub storm_window: Duration,
    pub restarts: u32,
    pub restart_window: Duration,
}

#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// A bearer token (`Authorization: Bearer T` or `?token=T`).
    pub token: Option<String>,
    /// `user:password` for HTTP basic auth.
    pub basic: Option<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub broker: BrokerSettings,
    pub db: DbTarget,
    /// Per table (names of [`RETAINED_TABLES`]): rows older are deleted.
    pub retain: BTreeMap<&'static str, Duration>,
    pub retain_interval: Duration,
    pub batch_messages: usize,
    pub batch_delay: Duration,
    pub db_retry_for: Duration,
    pub max_message_size: usize,
    pub http: Option<HttpSettings>,
    pub analytics: Analytics,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 =
        num.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 5m, 30d"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        "w" => value * 7.0 * 86400.0,
        other => return Err(format!("invalid duration unit {other:?} in {s:?}: use ms, s, m, h, d or w")),
    };
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn duration(setting: &str, s: &str) -> Result<Duration, ConfigError> {
    parse_duration(s).map_err(|e| invalid(setting, e))
}

fn positive(setting: &str, s: &str) -> Result<Duration, ConfigError> {
    let d = duration(setting, s)?;
    if d.is_zero() {
        return Err(invalid(setting, "must be longer than zero"));
    }
    Ok(d)
}

/// `mqtt://HOST:PORT` or `mqtts://HOST:PORT` into (host, port, tls).
pub fn parse_broker(s: &str) -> Result<(String, u16, bool), ConfigError> {
    let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(invalid("broker", format!("{s:?}: expected mqtt://HOST:PORT or mqtts://HOST:PORT")));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p.parse().map_err(|_| invalid("broker", format!("bad port {p:?} in {s:?}")))?;
            (h.trim_start_matches('[').trim_end_matches(']').to_owned(), port)
        }
        _ => (rest.to_owned(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(invalid("broker", format!("no host in {s:?}")));
    }
    if port == 0 {
        return Err(invalid("broker", "port 0"));
    }
    Ok((host, port, tls))
}

/// `--retain` values: `30d` (every table) or `TABLE=DURATION`; `0`/`off`
/// keeps rows forever.
pub fn parse_retain(
    values: &[String],
    file: Option<&RetainConfig>,
) -> Result<BTreeMap<&'static str, Duration>, ConfigError> {
    let mut pairs: Vec<(Option<String>, String)> = Vec::new();
    match file {
        Some(RetainConfig::All(d)) => pairs.push((None, d.clone())),
        Some(RetainConfig::PerTable(m)) => {
            for (k, v) in m {
                pairs.push(((k != "default").then(|| k.clone()), v.clone()));
            }
        }
        None => pairs.push((None, defaults::RETAIN.into())),
    }
    for v in values {
        match v.split_once('=') {
            Some((t, d)) => pairs.push((Some(t.trim().to_owned()), d.trim().to_owned())),
            None => pairs.push((None, v.clone())),
        }
    }
    // Defaults first, then per-table values override them.
    pairs.sort_by_key(|(t, _)| t.is_some());
    let mut out = BTreeMap::new();
    for (table, d) in pairs {
        let d = if d == "off" { Duration::ZERO } else { duration("retain", &d)? };
        match table {
            None => {
                for (t, _) in RETAINED_TABLES {
                    out.insert(*t, d);
                }
            }
            Some(t) => {
                let Some((name, _)) = RETAINED_TABLES.iter().find(|(n, _)| *n == t) else {
                    let names: Vec<_> = RETAINED_TABLES.iter().map(|(n, _)| *n).collect();
                    return Err(invalid(
                        "retain",
                        format!("unknown table {t:?}: one of {}", names.join(", ")),
                    ));
                };
                out.insert(*name, d);
            }
        }
    }
    Ok(out)
}

fn read_secret(setting: &str, path: &Path) -> Result<String, ConfigError> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| invalid(setting, format!("{}: {e}", path.display())))?
        .trim_end_matches(['\r', '\n'])
        .to_owned())
}

fn readable(setting: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path).map(drop).map_err(|e| invalid(setting, format!("{}: {e}", path.display())))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

impl Settings {
    pub fn resolve(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        macro_rules! pick {
            ($name:ident) => {
                args.$name.clone().or(file.$name.clone())
            };
        }
        let broker = pick!(broker).ok_or_else(|| invalid("broker", "required: --broker mqtt://HOST:PORT"))?;
        let (host, port, tls) = parse_broker(&broker)?;
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
            (Some(f), _) => Some(read_secret("password_file", &f)?),
            (None, Some(var)) => {
                Some(std::env::var(&var).map_err(|_| invalid("password_env", format!("${var} is not set")))?)
            }
            (None, None) => None,
        };
        let username = pick!(username);
        if password.is_some() && username.is_none() {
            return Err(invalid("password", "MQTT 3.1.1 sends a password only with a username"));
        }
        let tls = if tls || client_cert.is_some() {
            let ca_file = ca_file
                .or_else(|| {
                    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
                        .iter()
                        .map(PathBuf::from)
                        .find(|p| p.is_file())
                })
                .ok_or_else(|| {
                    invalid("ca_file", "TLS needs CA certificates: none given and no system bundle")
                })?;
            Some(Tls { ca_file, client_cert, client_key })
        } else {
            None
        };
        let topic = pick!(topic).unwrap_or(defaults::TOPIC.into());
        if topic.is_empty() || topic.starts_with("$share/") || topic.contains('\0') {
            return Err(invalid("topic", format!("{topic:?}: a topic filter without $share/ (see --group)")));
        }
        let group = pick!(group).unwrap_or(defaults::GROUP.into());
        if group.is_empty() || group.contains(['/', '+', '#']) {
            return Err(invalid("group", format!("{group:?}: a name without / + #")));
        }
        let (client_id, persistent) = match pick!(client_id) {
            Some(id) => (id, true),
            None => (format!("shrike-workspace-{}-{}", hostname(), std::process::id()), false),
        };
        let keep_alive = duration("keep_alive", &pick!(keep_alive).unwrap_or(defaults::KEEP_ALIVE.into()))?;
        let db = DbTarget::parse(&pick!(db).unwrap_or(defaults::DB.into()));
        let http = match pick!(http) {
            None => None,
            Some(a) if a == "off" => None,
            Some(a) => {
                let addr: SocketAddr = a.parse().map_err(|_| {
                    invalid("http", format!("{a:?}: expected ADDRESS:PORT, e.g. 127.0.0.1:8080"))
                })?;
                let token = pick!(http_token_file).map(|p| read_secret("http_token_file", &p)).transpose()?;
                let basic = match pick!(http_basic_file) {
                    None => None,
                    Some(p) => {
                        let line = read_secret("http_basic_file", &p)?;
                        let (u, pw) = line
                            .split_once(':')
                            .ok_or_else(|| invalid("http_basic_file", "expected one line USER:PASSWORD"))?;
                        Some((u.to_owned(), pw.to_owned()))
                    }
                };
                if token.as_deref().is_some_and(str::is_empty) {
                    return Err(invalid("http_token_file", "empty token"));
                }
                Some(HttpSettings { addr, token, basic })
            }
        };
        let retain = parse_retain(&args.retain, file.retain.as_ref())?;
        let publish_alerts = match (&args.publish_alerts, &file.publish_alerts) {
            (Some(t), _) | (None, Some(PublishAlerts::Topic(t))) => Some(t.clone()),
            (None, Some(PublishAlerts::On(true))) => Some(defaults::PUBLISH_ALERTS.to_owned()),
            (None, Some(PublishAlerts::On(false)) | None) => None,
        };
        if let Some(t) = &publish_alerts
            && (t.is_empty() || t.contains(['+', '#', '\0']) || t.starts_with('$'))
        {
            return Err(invalid("publish_alerts", format!("{t:?}: a topic name without + # or a leading $")));
        }
        Ok(Settings {
            broker: BrokerSettings {
                host,
                port,
                client_id,
                persistent,
                username,
                password,
                topic,
                group,
                keep_alive,
                tls,
                broker_log: !args.no_broker_log && file.broker_log.unwrap_or(true),
                publish_alerts,
            },
            db,
            retain,
            retain_interval: positive(
                "retain_interval",
                &pick!(retain_interval).unwrap_or(defaults::RETAIN_INTERVAL.into()),
            )?,
            batch_messages: defaults::BATCH_MESSAGES,
            batch_delay: positive(
                "batch_delay",
                &pick!(batch_delay).unwrap_or(defaults::BATCH_DELAY.into()),
            )?,
            db_retry_for: positive(
                "db_retry_for",
                &pick!(db_retry_for).unwrap_or(defaults::DB_RETRY_FOR.into()),
            )?,
            max_message_size: defaults::MAX_MESSAGE_SIZE,
            http,
            analytics: Analytics {
                interval: positive(
                    "analytics_interval",
                    &pick!(analytics_interval).unwrap_or(defaults::ANALYTICS_INTERVAL.into()),
                )?,
                silent_after: pick!(silent_after).map(|s| positive("silent_after", &s)).transpose()?,
                spread_devices: defaults::FLEET_SPREAD_DEVICES,
                spread_window: duration("fleet_spread_window", defaults::FLEET_SPREAD_WINDOW)?,
                auth_failures: defaults::AUTH_FAILURES,
                auth_window: duration("auth_window", defaults::AUTH_WINDOW)?,
                storm_connects: defaults::STORM_CONNECTS,
                storm_window: duration("storm_window", defaults::STORM_WINDOW)?,
                restarts: defaults::RESTARTS,
                restart_window: duration("restart_window", defaults::RESTART_WINDOW)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(parse_broker("mqtt://127.0.0.1:1884").unwrap(), ("127.0.0.1".into(), 1884, false));
        assert_eq!(parse_broker("mqtts://hub.example").unwrap(), ("hub.example".into(), 8883, true));
        assert_eq!(parse_broker("mqtt://[::1]:1883").unwrap(), ("::1".into(), 1883, false));
        assert!(parse_broker("http://x").is_err());
        assert!(parse_broker("mqtt://:1883").is_err());
    }

    #[test]
    fn retention_per_table_overrides_default() {
        let r = parse_retain(&["7d".into(), "events=1d".into()], None).unwrap();
        assert_eq!(r["events"], Duration::from_secs(86400));
        assert_eq!(r["alerts"], Duration::from_secs(7 * 86400));
        let r = parse_retain(&[], None).unwrap();
        assert_eq!(r["rejected"], Duration::from_secs(30 * 86400));
        assert!(parse_retain(&["nosuch=1d".into()], None).is_err());
        let file =
            RetainConfig::PerTable([("default".into(), "off".into()), ("alerts".into(), "2d".into())].into());
        let r = parse_retain(&[], Some(&file)).unwrap();
        assert_eq!(r["events"], Duration::ZERO);
        assert_eq!(r["alerts"], Duration::from_secs(2 * 86400));
    }

    #[test]
    fn db_targets() {
        assert_eq!(DbTarget::parse("/tmp/x.db"), DbTarget::Sqlite("/tmp/x.db".into()));
        assert!(matches!(DbTarget::parse("postgres://u@h/db"), DbTarget::Postgres(_)));
    }
}
