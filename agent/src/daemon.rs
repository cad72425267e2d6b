//! `shrike run`: kernel events -> enrichment -> aggregation -> priority
//! batches -> security messages -> spool -> MQTT (or stdout with --dry-run).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Duration,
};

use shrike_common::schema::{self as sm, Family, MessageBuilder, PushError, Uuid};
use tokio::{
    signal::unix::SignalKind,
    time::{Instant, Interval},
};

use crate::{
    aggregate::{Aggregator, Pushed},
    cli::RunArgs,
    config::{
        ConfigError, FileConfig, Hub, KindPriority, default_priority, duration_setting, parse_aggregation,
        parse_hub, parse_priority, readable,
    },
    enrich::{ProcessTable, users::Users},
    events::{Event, Kind},
    message,
    probes::{self},
    publish::{
        azure::ConnectionString,
        mqtt::{Publisher, PublisherStats, Settings, TlsSettings},
        spool::{Priority, Spool},
    },
};

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
    /// Listening ports, local users and system information, every...
    pub snapshot_interval: Duration,
    /// DroppedEventsStatistics and MessageStatistics, every...
    pub health_interval: Duration,
    /// Gzip messages before spooling and publishing them.
    pub gzip: bool,
    pub dry_run: bool,
}

/// The defaults, documented in one place.
pub mod defaults {
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "shrike".into())
}

fn invalid(setting: &str, reason: impl std::fmt::Display) -> ConfigError {
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
        let mut priority: BTreeMap<Kind, KindPriority> =
            Kind::ALL.iter().map(|&k| (k, default_priority(k))).collect();
        let mut aggregation: BTreeMap<Kind, Option<Duration>> =
            Kind::ALL.iter().map(|&k| (k, agg_default)).collect();
        for (k, v) in file.priority.iter().flatten() {
            let kind =
                Kind::from_name(k).ok_or_else(|| invalid(&format!("priority.{k}"), "unknown event kind"))?;
            priority.insert(kind, *v);
        }
        for (k, v) in file.aggregation.iter().flatten() {
            let setting = format!("aggregation.{k}");
            let kind = Kind::from_name(k).ok_or_else(|| invalid(&setting, "unknown event kind"))?;
            aggregation.insert(kind, parse_aggregation(&setting, v)?);
        }
        for (kind, v) in &args.priorities {
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
        Ok(RunSettings {
            mqtt,
            hub_identity,
            spool_dir: pick!(spool_dir).unwrap_or_else(|| defaults::SPOOL_DIR.into()),
            spool_size,
            high_interval,
            low_interval,
            priority,
            aggregation,
            max_message_size,
            agent_id_file: pick!(agent_id_file).unwrap_or_else(|| defaults::AGENT_ID_FILE.into()),
            snapshot_interval: duration_setting(
                "snapshot_interval",
                &pick!(snapshot_interval).unwrap_or(defaults::SNAPSHOT_INTERVAL.into()),
            )?,
            health_interval: duration_setting(
                "health_interval",
                &pick!(health_interval).unwrap_or(defaults::HEALTH_INTERVAL.into()),
            )?,
            gzip,
            dry_run,
        })
    }

    /// The kinds to collect (priority not off); none is an error.
    fn collected(&self) -> Result<BTreeSet<Kind>, ConfigError> {
        let kinds: BTreeSet<Kind> =
            self.priority.iter().filter(|(_, p)| **p != KindPriority::Off).map(|(k, _)| *k).collect();
        if kinds.is_empty() {
            return Err(invalid("priority", "every kind is off: nothing to collect"));
        }
        Ok(kinds)
    }
}

fn mqtt_settings(
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
fn agent_id(path: &Path) -> Uuid {
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

/// Where finished messages go.
enum Sink {
    DryRun(std::io::Stdout),
    Mqtt(Publisher),
    /// No publisher runs: a reload stopped one and could start neither the
    /// new hub settings nor the old ones again. Messages wait in memory for
    /// the next publisher; starting it is retried every few seconds.
    Held(Held),
}

/// Messages kept in memory while no publisher runs, at most `capacity`
/// bytes (the spool's size); the oldest low-priority ones make room first,
/// as in the spool.
struct Held {
    msgs: VecDeque<(Priority, Vec<u8>)>,
    bytes: u64,
    capacity: u64,
}

impl Held {
    fn new(capacity: u64) -> Held {
        Held { msgs: VecDeque::new(), bytes: 0, capacity }
    }

    /// Keeps `msg`; returns the priorities of the messages dropped for room.
    fn push(&mut self, prio: Priority, msg: Vec<u8>) -> Vec<Priority> {
        let size = msg.len() as u64;
        if size > self.capacity {
            return vec![prio];
        }
        let mut dropped = Vec::new();
        while self.bytes + size > self.capacity {
            let at = self.msgs.iter().position(|(p, _)| *p == Priority::Low).unwrap_or(0);
            let Some((p, m)) = self.msgs.remove(at) else { break };
            self.bytes -= m.len() as u64;
            dropped.push(p);
        }
        self.bytes += size;
        self.msgs.push_back((prio, msg));
        dropped
    }
}

/// The drop and failure counters of publishers a reload replaced: health
/// events report totals over the agent's run.
#[derive(Clone, Copy, Debug, Default)]
struct Retired {
    dropped_low: u64,
    dropped_high: u64,
    failed: u64,
}

impl Retired {
    fn add(&mut self, st: &PublisherStats) {
        self.dropped_low += st.spool.dropped_low;
        self.dropped_high += st.spool.dropped_high;
        self.failed += st.submit_errors + st.oversize_dropped + st.spool_dropped;
    }
}

/// Messages being filled, per priority and family (Azure kinds and our own
/// never share a message).
struct Batches {
    builders: HashMap<(Priority, Family), MessageBuilder>,
    id: Uuid,
    max: usize,
    gzip: bool,
    messages: u64,
    /// Messages under 4 KB (IoT Hub bills 4 KB blocks: these waste some).
    small: u64,
    /// Events dropped in userspace (invalid, too large, spool write failed), per queue.
    dropped: HashMap<Priority, u64>,
    /// Events taken in per queue (aggregated hits included).
    collected: HashMap<Priority, u64>,
    retired: Retired,
    /// Events that fit no message, and messages that could not be spooled
    /// (for the log's rate limit; `dropped` counts them per queue).
    event_drops: u64,
    message_drops: u64,
}

impl Batches {
    fn new(id: Uuid, settings: &RunSettings) -> Batches {
        Batches {
            builders: HashMap::new(),
            id,
            max: settings.max_message_size,
            gzip: settings.gzip,
            messages: 0,
            small: 0,
            dropped: HashMap::new(),
            collected: HashMap::new(),
            retired: Retired::default(),
            event_drops: 0,
            message_drops: 0,
        }
    }

    fn builder(&mut self, key: (Priority, Family)) -> &mut MessageBuilder {
        let (id, max) = (self.id, self.max);
        self.builders
            .entry(key)
            .or_insert_with(|| MessageBuilder::new(id, crate::VERSION).with_max_bytes(max))
    }

    fn push(&mut self, prio: Priority, ev: sm::Event, sink: &mut Sink) {
        let key = (prio, ev.family());
        match self.builder(key).push(&ev) {
            Ok(()) => {}
            Err(PushError::Full { .. }) => {
                // Split, never truncate: send what is there, start a new message.
                if let Some(msg) = self.builder(key).take() {
                    self.send(prio, &msg, sink);
                }
                if let Err(e) = self.builder(key).push(&ev) {
                    self.event_dropped(prio, &e);
                }
            }
            Err(e) => self.event_dropped(prio, &e),
        }
    }

    fn event_dropped(&mut self, prio: Priority, e: &PushError) {
        *self.dropped.entry(prio).or_default() += 1;
        self.event_drops += 1;
        if crate::telemetry::sampled(self.event_drops) {
            tracing::warn!(count = self.event_drops, "security event dropped: {e}");
        }
    }

    fn message_dropped(&mut self, prio: Priority, why: impl std::fmt::Display) {
        *self.dropped.entry(prio).or_default() += 1;
        self.message_drops += 1;
        if crate::telemetry::sampled(self.message_drops) {
            tracing::error!(count = self.message_drops, "{why}");
        }
    }

    fn flush(&mut self, prio: Priority, sink: &mut Sink) {
        let keys: Vec<_> = self.builders.keys().copied().filter(|k| k.0 == prio).collect();
        for k in keys {
            if let Some(msg) = self.builder(k).take() {
                self.send(prio, &msg, sink);
            }
        }
    }

    fn flush_all(&mut self, sink: &mut Sink) {
        self.flush(Priority::High, sink);
        self.flush(Priority::Low, sink);
    }

    fn send(&mut self, prio: Priority, msg: &[u8], sink: &mut Sink) {
        let zipped;
        let msg = if self.gzip && !matches!(sink, Sink::DryRun(_)) {
            use std::io::Write as _;
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            zipped = z.write_all(msg).and_then(|()| z.finish()).unwrap_or_else(|_| msg.to_vec());
            &zipped[..]
        } else {
            msg
        };
        self.messages += 1;
        if msg.len() < 4096 {
            self.small += 1;
        }
        match sink {
            Sink::DryRun(out) => {
                use std::io::Write;
                let mut out = out.lock();
                let _ = out.write_all(msg).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
            }
            Sink::Mqtt(p) => {
                if let Err(e) = p.submit(prio, msg) {
                    self.message_dropped(prio, format_args!("message not spooled: {e}"));
                }
            }
            Sink::Held(held) => {
                for p in held.push(prio, msg.to_vec()) {
                    self.message_dropped(
                        p,
                        "message dropped: no publisher runs and the messages held meanwhile fill spool_size",
                    );
                }
            }
        }
    }
}

/// What a publisher runs with: a reload that changes any of it restarts the
/// publisher.
#[derive(Clone)]
struct PublisherSetup {
    mqtt: Settings,
    identity: Option<ConnectionString>,
    spool_dir: PathBuf,
    spool_size: u64,
}

impl PublisherSetup {
    /// None with --dry-run.
    fn of(s: &RunSettings) -> Option<PublisherSetup> {
        Some(PublisherSetup {
            mqtt: s.mqtt.clone()?,
            identity: s.hub_identity.clone(),
            spool_dir: s.spool_dir.clone(),
            spool_size: s.spool_size,
        })
    }

    /// The MQTT settings without the SAS token, which is made afresh at every
    /// resolve (a new expiry): `identity` stands for it.
    fn comparable(&self) -> Settings {
        match self.mqtt.credentials_refresh {
            Some(_) => Settings { password: None, credentials_refresh: None, ..self.mqtt.clone() },
            None => self.mqtt.clone(),
        }
    }

    fn same(&self, o: &PublisherSetup) -> bool {
        self.comparable() == o.comparable()
            && self.mqtt.credentials_refresh.as_ref().map(|r| r.every)
                == o.mqtt.credentials_refresh.as_ref().map(|r| r.every)
            && self.identity == o.identity
            && self.spool_dir == o.spool_dir
            && self.spool_size == o.spool_size
    }

    /// What differs, for the log (never a secret).
    fn changes(&self, new: &PublisherSetup) -> Vec<String> {
        let (a, b) = (self.comparable(), new.comparable());
        let mut out = Vec::new();
        if (&a.host, a.port) != (&b.host, b.port) {
            out.push(format!("hub {}:{} -> {}:{}", a.host, a.port, b.host, b.port));
        }
        if a.client_id != b.client_id {
            out.push(format!("client_id {} -> {}", a.client_id, b.client_id));
        }
        if a.topic != b.topic {
            out.push(format!("topic {} -> {}", a.topic, b.topic));
        }
        if a.username != b.username || a.password != b.password || self.identity != new.identity {
            out.push("credentials".into());
        }
        if a.tls != b.tls {
            out.push("tls".into());
        }
        if a.keep_alive != b.keep_alive {
            out.push(format!("keep_alive {:?} -> {:?}", a.keep_alive, b.keep_alive));
        }
        if self.spool_dir != new.spool_dir {
            out.push(format!("spool_dir {} -> {}", self.spool_dir.display(), new.spool_dir.display()));
        }
        if self.spool_size != new.spool_size {
            out.push(format!("spool_size {} -> {}", self.spool_size, new.spool_size));
        }
        out
    }

    /// Opens the spool and starts a publisher on it.
    fn start(&self) -> anyhow::Result<Publisher> {
        let spool = Spool::open(&self.spool_dir, self.spool_size)?;
        self.start_on(spool)
    }

    fn start_on(&self, spool: Spool) -> anyhow::Result<Publisher> {
        let waiting = spool.len();
        let p = Publisher::start(self.mqtt.clone(), spool)?;
        tracing::info!(dir = %self.spool_dir.display(), waiting, "spool opened");
        Ok(p)
    }
}

/// Stops a publisher, giving it a moment (at most `limit`, while it is
/// connected) to hand over what is spooled; whatever is not acknowledged
/// stays in the spool for the next publisher on that directory. Its stats
/// before it stopped.
async fn stop_publisher(p: Publisher, limit: Duration) -> PublisherStats {
    let deadline = Instant::now() + limit;
    while p.stats().pending > 0 && p.stats().connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = p.stats();
    p.shutdown().await;
    stats
}

/// The loop's timers; a reload remakes those whose interval changed.
struct Timers {
    high: Interval,
    low: Interval,
    snapshots: Interval,
    health: Interval,
    /// Starting a publisher again while messages are held.
    retry: Interval,
}

/// How long a held sink waits between attempts to start a publisher.
const PUBLISHER_RETRY: Duration = Duration::from_secs(5);

impl Timers {
    fn new(s: &RunSettings) -> Timers {
        let now = Instant::now();
        Timers {
            high: every(s.high_interval, now),
            low: every(s.low_interval, now),
            snapshots: every(s.snapshot_interval, now),
            // The first health events after one interval.
            health: every(s.health_interval, now + s.health_interval),
            retry: every(PUBLISHER_RETRY, now + PUBLISHER_RETRY),
        }
    }
}

/// A timer ticking every `period` from `first`. A busy loop must not flush
/// several times in a row to catch up: that would send small, early batches.
fn every(period: Duration, first: Instant) -> Interval {
    let mut t = tokio::time::interval_at(first, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Everything after the kernel and the enrichment: what `handle` feeds, the
/// loop's timers drive, and a reload changes in place (the probes stay).
struct Pipeline {
    settings: RunSettings,
    /// Kinds whose probes are attached: a reload can turn on only these.
    attachable: BTreeSet<Kind>,
    /// One aggregator per kind with aggregation on, each with its own interval.
    aggs: BTreeMap<Kind, Aggregator>,
    agg_due: BTreeMap<Kind, (Duration, Instant)>,
    batches: Batches,
    sink: Sink,
    timers: Timers,
}

impl Pipeline {
    fn new(settings: RunSettings, attachable: BTreeSet<Kind>, id: Uuid, sink: Sink) -> Pipeline {
        let mut p = Pipeline {
            batches: Batches::new(id, &settings),
            timers: Timers::new(&settings),
            settings,
            attachable,
            aggs: BTreeMap::new(),
            agg_due: BTreeMap::new(),
            sink,
        };
        let now = Instant::now();
        for kind in Kind::ALL {
            if let Some(iv) = p.aggregation(kind) {
                p.aggs.insert(kind, new_aggregator(p.settings.priority[&kind]));
                p.agg_due.insert(kind, (iv, now + iv));
            }
        }
        p
    }

    /// The aggregation interval of a kind that is collected.
    fn aggregation(&self, kind: Kind) -> Option<Duration> {
        let on = self.settings.priority[&kind] != KindPriority::Off;
        self.settings.aggregation[&kind].filter(|_| on)
    }

    fn handle(&mut self, ev: &mut Event, users: &mut Users) {
        handle(ev, &self.settings, users, &mut self.aggs, &mut self.batches, &mut self.sink);
    }

    fn next_aggregate(&self) -> Option<Instant> {
        self.agg_due.values().map(|(_, at)| *at).min()
    }

    fn flush_due_aggregates(&mut self) {
        let now = Instant::now();
        let due: Vec<Kind> = self.agg_due.iter().filter(|(_, (_, at))| *at <= now).map(|(k, _)| *k).collect();
        for kind in due {
            if let Some((every, at)) = self.agg_due.get_mut(&kind) {
                *at = now + *every;
            }
            self.flush_aggregate(kind);
        }
    }

    /// Sends a kind's aggregated events, in its (current) queue.
    fn flush_aggregate(&mut self, kind: Kind) {
        let prio = self.settings.priority[&kind].spool().unwrap_or(Priority::Low);
        for (_, ev) in self.aggs.get_mut(&kind).map(Aggregator::flush).unwrap_or_default() {
            self.batches.push(prio, ev, &mut self.sink);
        }
    }

    /// Everything pending, aggregates included, into the sink.
    fn flush_all(&mut self) {
        let kinds: Vec<Kind> = self.aggs.keys().copied().collect();
        for kind in kinds {
            self.flush_aggregate(kind);
        }
        self.batches.flush_all(&mut self.sink);
    }

    /// SIGHUP: reads the settings again (the --config file; flags keep
    /// precedence) and applies them. Invalid settings change nothing.
    async fn reload(&mut self, args: &RunArgs, ebpf: &mut aya::Ebpf) {
        match RunSettings::resolve(args).and_then(|s| s.collected().map(|_| s)) {
            Ok(new) => self.apply_reload(new, ebpf).await,
            Err(e) => tracing::error!("configuration not reloaded, the running settings stay: {e}"),
        }
    }

    /// Applies what can change without touching the probes: priorities of the
    /// kinds whose probes are attached, aggregation, intervals, message
    /// format, and the hub and spool (a new publisher). Logs what changed.
    async fn apply_reload(&mut self, mut new: RunSettings, ebpf: &mut aya::Ebpf) {
        let now = Instant::now();
        let mut changes: Vec<String> = Vec::new();

        let mut need_restart = Vec::new();
        for kind in Kind::ALL {
            let (was, is) = (self.settings.priority[&kind], new.priority[&kind]);
            if is != KindPriority::Off && !self.attachable.contains(&kind) {
                need_restart.push(kind.name());
                new.priority.insert(kind, KindPriority::Off);
            } else if was != is {
                changes.push(format!("priority.{} {} -> {}", kind.name(), prio_name(was), prio_name(is)));
            }
        }
        if !need_restart.is_empty() {
            tracing::warn!(
                kinds = ?need_restart,
                "not collected: their probes are not attached; restart shrike to collect them"
            );
        }
        let high = |s: &RunSettings| -> BTreeSet<Kind> {
            s.priority.iter().filter(|(_, p)| **p == KindPriority::High).map(|(k, _)| *k).collect()
        };
        if high(&self.settings) != high(&new) {
            // Records of high kinds wake the reader at once; the others wait
            // for its poll timer (milliseconds): only latency depends on this.
            if let Err(e) = set_wake_kinds(ebpf, &high(&new)) {
                tracing::warn!("cannot update the kinds that wake the reader: {e}");
            }
        }

        for kind in Kind::ALL {
            let (was, is) = (self.settings.aggregation[&kind], new.aggregation[&kind]);
            if was != is {
                changes.push(format!("aggregation.{} {} -> {}", kind.name(), agg_name(was), agg_name(is)));
            }
            let on = new.priority[&kind] != KindPriority::Off;
            let wanted = is.filter(|_| on);
            let unchanged = was == is && self.settings.priority[&kind] == new.priority[&kind];
            if self.aggs.contains_key(&kind) {
                if unchanged {
                    continue;
                }
                // The hits so far go out first, in the kind's old queue; a
                // fresh aggregator takes the new settings.
                self.flush_aggregate(kind);
                self.aggs.remove(&kind);
                self.agg_due.remove(&kind);
            }
            if let Some(iv) = wanted {
                self.aggs.insert(kind, new_aggregator(new.priority[&kind]));
                self.agg_due.insert(kind, (iv, now + iv));
            }
        }

        for (name, was, is, timer) in [
            ("high_interval", self.settings.high_interval, new.high_interval, &mut self.timers.high),
            ("low_interval", self.settings.low_interval, new.low_interval, &mut self.timers.low),
            (
                "snapshot_interval",
                self.settings.snapshot_interval,
                new.snapshot_interval,
                &mut self.timers.snapshots,
            ),
            ("health_interval", self.settings.health_interval, new.health_interval, &mut self.timers.health),
        ] {
            if was != is {
                changes.push(format!("{name} {was:?} -> {is:?}"));
                *timer = every(is, now + is);
            }
        }

        let old_hub = PublisherSetup::of(&self.settings);
        let new_hub = PublisherSetup::of(&new);
        let hub_changed = match (&old_hub, &new_hub) {
            (Some(a), Some(b)) => !a.same(b),
            _ => false,
        };
        let format_changed =
            self.settings.max_message_size != new.max_message_size || self.settings.gzip != new.gzip;
        if hub_changed || format_changed {
            // Messages being filled were made for the running publisher and
            // limits: they go out first.
            self.batches.flush_all(&mut self.sink);
        }
        if let (true, Some(old_hub), Some(new_hub)) = (hub_changed, old_hub, new_hub) {
            match self.swap_publisher(&old_hub, &new_hub).await {
                Ok(()) => changes.extend(old_hub.changes(&new_hub)),
                Err(e) => {
                    tracing::error!("cannot apply the new hub settings ({e}): the old ones stay");
                    // The message format belongs to the publisher that runs.
                    new.mqtt = self.settings.mqtt.clone();
                    new.hub_identity = self.settings.hub_identity.clone();
                    new.spool_dir = self.settings.spool_dir.clone();
                    new.spool_size = self.settings.spool_size;
                    new.max_message_size = self.settings.max_message_size;
                    new.gzip = self.settings.gzip;
                }
            }
        }
        if self.settings.max_message_size != new.max_message_size {
            changes.push(format!(
                "max_message_size {} -> {}",
                self.settings.max_message_size, new.max_message_size
            ));
        }
        if self.settings.gzip != new.gzip {
            changes.push(format!("gzip {} -> {}", self.settings.gzip, new.gzip));
        }
        if hub_changed || format_changed {
            // Empty (flushed above): new messages are made with the new limits.
            self.batches.builders.clear();
            self.batches.max = new.max_message_size;
            self.batches.gzip = new.gzip;
        }

        if new.agent_id_file != self.settings.agent_id_file {
            tracing::warn!(
                file = %new.agent_id_file.display(),
                "agent_id_file changed: the agent id is read at start; restart shrike to use it"
            );
            new.agent_id_file = self.settings.agent_id_file.clone();
        }
        self.settings = new;
        let changes = if changes.is_empty() { "none".to_owned() } else { changes.join(", ") };
        tracing::info!(%changes, "configuration reloaded");
    }

    /// Replaces the publisher. The new settings are checked, and a new spool
    /// directory opened, before the running publisher stops: a mistake there
    /// leaves it running. What the old one did not deliver stays in its spool
    /// (the new publisher sends it when the directory is the same). If the new
    /// one then fails to start, the old settings start again; if even they
    /// cannot, messages are held in memory and starting them is retried.
    async fn swap_publisher(&mut self, old: &PublisherSetup, new: &PublisherSetup) -> Result<(), String> {
        new.mqtt.check().map_err(|e| e.to_string())?;
        let mut spool = if new.spool_dir == old.spool_dir {
            None
        } else {
            Some(Spool::open(&new.spool_dir, new.spool_size).map_err(|e| e.to_string())?)
        };
        let held = match std::mem::replace(&mut self.sink, Sink::Held(Held::new(old.spool_size))) {
            Sink::Mqtt(p) => {
                let stats = stop_publisher(p, Duration::from_secs(5)).await;
                tracing::info!(?stats, "publisher stopped for the new hub settings");
                self.batches.retired.add(&stats);
                Held::new(old.spool_size)
            }
            Sink::Held(held) => held,
            Sink::DryRun(out) => {
                self.sink = Sink::DryRun(out);
                return Ok(());
            }
        };
        let started = match spool.take() {
            Some(spool) => new.start_on(spool),
            None => new.start(),
        };
        match started {
            Ok(p) => {
                self.install(p, held);
                Ok(())
            }
            Err(e) => {
                self.sink = Sink::Held(held);
                // The settings still name the old hub: start it again.
                self.retry_publisher();
                Err(format!("{e:#}"))
            }
        }
    }

    /// While messages are held: starts the running settings' publisher and
    /// hands it the messages.
    fn retry_publisher(&mut self) {
        if !matches!(self.sink, Sink::Held(_)) {
            return;
        }
        let Some(setup) = PublisherSetup::of(&self.settings) else { return };
        match setup.start() {
            Ok(p) => {
                if let Sink::Held(held) = std::mem::replace(&mut self.sink, Sink::DryRun(std::io::stdout())) {
                    self.install(p, held);
                }
            }
            Err(e) => {
                let held = match &self.sink {
                    Sink::Held(h) => h.msgs.len(),
                    _ => 0,
                };
                tracing::error!(held, "cannot start the publisher: {e:#}; retrying in {PUBLISHER_RETRY:?}");
            }
        }
    }

    /// Makes `p` the sink and spools what was held.
    fn install(&mut self, p: Publisher, held: Held) {
        for (prio, msg) in held.msgs {
            if let Err(e) = p.submit(prio, &msg) {
                self.batches.message_dropped(prio, format_args!("message not spooled: {e}"));
            }
        }
        self.sink = Sink::Mqtt(p);
    }
}

/// A kind's aggregator: at start and when a reload changes the kind's
/// priority or interval.
fn new_aggregator(priority: KindPriority) -> Aggregator {
    // Distinct keys held per aggregator, at most. High-priority kinds are
    // alerts: the first event of each key goes out at once, only repeats
    // wait for the interval.
    Aggregator::new(100_000).leading_edge(priority == KindPriority::High)
}

fn prio_name(p: KindPriority) -> &'static str {
    match p {
        KindPriority::High => "high",
        KindPriority::Low => "low",
        KindPriority::Off => "off",
    }
}

fn agg_name(a: Option<Duration>) -> String {
    a.map_or_else(|| "off".to_owned(), |d| format!("{d:?}"))
}

/// Sets the kinds whose records wake the reader at once in the kernel's
/// configuration (the rest is left as loaded).
fn set_wake_kinds(ebpf: &mut aya::Ebpf, kinds: &BTreeSet<Kind>) -> Result<(), String> {
    let map = ebpf.map_mut(shrike_common::names::CONFIG).ok_or("no CONFIG map")?;
    let mut cfg: aya::maps::Array<_, shrike_common::Config> =
        aya::maps::Array::try_from(map).map_err(|e| e.to_string())?;
    let mut c = cfg.get(&0, 0).map_err(|e| e.to_string())?;
    c.wake_kinds = kinds.iter().fold(0, |m, k| m | (1 << k.raw()));
    cfg.set(0, c, 0).map_err(|e| e.to_string())
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = RunSettings::resolve(&args)?;
    let collected = settings.collected()?;
    // Before anything is logged (`shrike ready` above all): a signal that
    // comes before its handler exists kills the agent (SIGHUP's default
    // action too), unflushed.
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let id = agent_id(&settings.agent_id_file);
    let sink = match PublisherSetup::of(&settings) {
        None => Sink::DryRun(std::io::stdout()),
        Some(setup) => Sink::Mqtt(setup.start()?),
    };

    let wake_kinds =
        collected.iter().copied().filter(|k| settings.priority[k] == KindPriority::High).collect();
    let crate::Kernel { mut probes, mut rx, stats, mut tasks } =
        crate::start_kernel(&args.probe, collected.clone(), wake_kinds)?;
    let attached = probes.status.iter().filter(|s| s.attached).count();
    tracing::info!(agent_id = %id, kinds = ?collected, dry_run = settings.dry_run, "shrike ready: {attached} probes attached");
    crate::caps::drop_after_attach();

    let mut procs = ProcessTable::new(&args.probe.proc_root);
    procs.seed();
    let mut users = Users::new("/etc/passwd");
    let mut pipe = Pipeline::new(settings, probes::collected_kinds(&collected), id, sink);
    let mut reported = Health::default();

    let outcome: anyhow::Result<()> = loop {
        let next_agg = pipe.next_aggregate();
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break Err(anyhow::anyhow!("kernel readers stopped")) };
                for mut ev in batch {
                    procs.apply(&mut ev);
                    pipe.handle(&mut ev, &mut users);
                }
            }
            _ = sleep_until_opt(next_agg) => pipe.flush_due_aggregates(),
            _ = pipe.timers.snapshots.tick() => {
                for ev in crate::collect::snapshot_events(&args.probe.proc_root) {
                    pipe.batches.push(Priority::Low, ev, &mut pipe.sink);
                }
            }
            _ = pipe.timers.health.tick() => {
                let now = Health::now(&pipe, &probes);
                for ev in now.events_since(&reported) {
                    pipe.batches.push(Priority::Low, ev, &mut pipe.sink);
                }
                reported = now;
            }
            _ = pipe.timers.high.tick() => pipe.batches.flush(Priority::High, &mut pipe.sink),
            _ = pipe.timers.low.tick() => pipe.batches.flush(Priority::Low, &mut pipe.sink),
            _ = pipe.timers.retry.tick(), if matches!(pipe.sink, Sink::Held(_)) => pipe.retry_publisher(),
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(e.into()),
            },
            _ = sighup.recv() => pipe.reload(&args, &mut probes.ebpf).await,
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
        }
    };

    // Drain the kernel, then send everything pending (aggregates included).
    // Bounded: the probes are still attached, and a busy machine never goes
    // 300 ms without an event (the agent would never exit).
    let drain_end = Instant::now() + Duration::from_secs(1);
    while let Ok(Some(batch)) =
        tokio::time::timeout_at(drain_end.min(Instant::now() + Duration::from_millis(300)), rx.recv()).await
    {
        for mut ev in batch {
            procs.apply(&mut ev);
            pipe.handle(&mut ev, &mut users);
        }
    }
    pipe.flush_all();
    // A last attempt for messages held since a failed reload.
    pipe.retry_publisher();
    let lost = probes::read_counters(&probes.ebpf, shrike_common::names::LOST);
    tracing::info!(
        received = stats.received.load(Ordering::Relaxed),
        kernel_lost = ?lost,
        messages = pipe.batches.messages,
        dropped = ?pipe.batches.dropped,
        "shrike stopping"
    );
    match pipe.sink {
        // Whatever is not acknowledged in time stays in the spool for the next start.
        Sink::Mqtt(p) => {
            let stats = stop_publisher(p, Duration::from_secs(5)).await;
            tracing::info!(?stats, "publisher stopping");
        }
        Sink::Held(held) => {
            tracing::error!(
                messages = held.msgs.len(),
                "no publisher runs: the messages held in memory are lost"
            );
        }
        Sink::DryRun(_) => {}
    }
    tasks.abort_all();
    outcome
}

fn handle(
    ev: &mut Event,
    settings: &RunSettings,
    users: &mut Users,
    aggs: &mut BTreeMap<Kind, Aggregator>,
    batches: &mut Batches,
    sink: &mut Sink,
) {
    let kind = ev.kind();
    let Some(prio) = settings.priority.get(&kind).and_then(|p| p.spool()) else { return };
    *batches.collected.entry(prio).or_default() += 1;
    ev.user = users.name(ev.uid);
    match aggs.get_mut(&kind) {
        Some(agg) => match agg.push(ev) {
            Pushed::Merged | Pushed::Unmapped => {}
            Pushed::Single(m) => batches.push(prio, m, sink),
        },
        None => {
            if let Some(m) = message::to_message_event(ev) {
                batches.push(prio, m, sink);
            }
        }
    }
}

/// Counters behind the health events, per queue; events report differences.
#[derive(Clone, Debug, Default)]
struct Health {
    collected: HashMap<Priority, u64>,
    /// Userspace drops, spool drops and kernel losses of the queue's kinds.
    dropped: HashMap<Priority, u64>,
    messages: u64,
    small: u64,
    failed: u64,
}

impl Health {
    fn now(pipe: &Pipeline, probes: &probes::Probes) -> Health {
        let batches = &pipe.batches;
        let mut dropped = batches.dropped.clone();
        let retired = batches.retired;
        *dropped.entry(Priority::Low).or_default() += retired.dropped_low;
        *dropped.entry(Priority::High).or_default() += retired.dropped_high;
        let mut failed = retired.failed;
        if let Sink::Mqtt(p) = &pipe.sink {
            let st = p.stats();
            *dropped.entry(Priority::Low).or_default() += st.spool.dropped_low;
            *dropped.entry(Priority::High).or_default() += st.spool.dropped_high;
            failed += st.submit_errors + st.oversize_dropped + st.spool_dropped;
        }
        for (kind, lost) in probes::read_counters(&probes.ebpf, shrike_common::names::LOST) {
            if let Some(prio) = pipe.settings.priority.get(&kind).and_then(|p| p.spool()) {
                *dropped.entry(prio).or_default() += lost;
            }
        }
        Health {
            collected: batches.collected.clone(),
            dropped,
            messages: batches.messages,
            small: batches.small,
            failed,
        }
    }
    /// DroppedEventsStatistics per queue and MessageStatistics since `before`.
    fn events_since(&self, before: &Health) -> Vec<sm::Event> {
        let delta = |now: &HashMap<Priority, u64>, then: &HashMap<Priority, u64>, p: Priority| {
            now.get(&p).copied().unwrap_or(0).saturating_sub(then.get(&p).copied().unwrap_or(0))
        };
        let mut out: Vec<sm::Event> = [(Priority::High, sm::Queue::High), (Priority::Low, sm::Queue::Low)]
            .into_iter()
            .map(|(p, queue)| {
                sm::Event::new(sm::DroppedEventsStatistics {
                    queue,
                    collected_events: delta(&self.collected, &before.collected, p),
                    dropped_events: delta(&self.dropped, &before.dropped, p),
                    extra_details: Default::default(),
                })
            })
            .collect();
        out.push(sm::Event::new(sm::MessageStatistics {
            messages_sent: self.messages.saturating_sub(before.messages),
            messages_under_4kb: self.small.saturating_sub(before.small),
            total_failed: self.failed.saturating_sub(before.failed),
            extra_details: Default::default(),
        }));
        out
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::publish::mqtt::CredentialsRefresh;

    #[test]
    fn held_messages_make_room_oldest_low_first() {
        let mut h = Held::new(30);
        assert!(h.push(Priority::High, vec![1; 10]).is_empty());
        assert!(h.push(Priority::Low, vec![2; 10]).is_empty());
        assert!(h.push(Priority::Low, vec![3; 10]).is_empty());
        assert_eq!(h.push(Priority::High, vec![4; 10]), [Priority::Low]);
        let left: Vec<u8> = h.msgs.iter().map(|(_, m)| m[0]).collect();
        assert_eq!(left, [1, 3, 4]);
        assert_eq!(h.push(Priority::Low, vec![5; 31]), [Priority::Low], "larger than everything");
        assert_eq!(h.bytes, 30);
    }

    #[test]
    fn publisher_setups_compare_without_fresh_sas_tokens() {
        let refresh = |n: u32| CredentialsRefresh {
            every: Duration::from_secs(3000),
            make: Arc::new(move || format!("token {n}")),
        };
        let setup = |password: &str, refresh: Option<CredentialsRefresh>, key: &str| PublisherSetup {
            mqtt: Settings {
                username: Some("hub/dev".into()),
                password: Some(password.into()),
                credentials_refresh: refresh,
                ..Settings::default()
            },
            identity: Some(
                format!("HostName=h.azure-devices.net;DeviceId=dev;SharedAccessKey={key}").parse().unwrap(),
            ),
            spool_dir: "/s".into(),
            spool_size: 1 << 20,
        };
        // Each resolve makes a new token and a new token maker.
        let a = setup("SharedAccessSignature se=1", Some(refresh(1)), "a2V5");
        let b = setup("SharedAccessSignature se=2", Some(refresh(2)), "a2V5");
        assert!(a.same(&b), "a fresh SAS token is not a change");
        let rekeyed = setup("SharedAccessSignature se=2", Some(refresh(2)), "b3RoZXI=");
        assert!(!a.same(&rekeyed));
        assert_eq!(a.changes(&rekeyed), ["credentials"]);

        let plain = setup("secret", None, "a2V5");
        let other = setup("secret2", None, "a2V5");
        assert!(!plain.same(&other));
        assert_eq!(plain.changes(&other), ["credentials"]);
        let mut moved = plain.clone();
        moved.mqtt.topic = "t2".into();
        moved.spool_dir = "/s2".into();
        assert_eq!(plain.changes(&moved), ["topic shrike/events -> t2", "spool_dir /s -> /s2"]);
        assert!(plain.same(&plain.clone()));
    }
}
