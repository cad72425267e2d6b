//! `shrike run`: kernel events -> enrichment -> aggregation -> priority
//! batches -> security messages -> spool -> MQTT (or stdout with --dry-run).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Duration,
};

use shrike_common::schema::{self as sm, Family, MessageBuilder, PushError, Uuid};
use tokio::signal::unix::SignalKind;

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
        mqtt::{Publisher, Settings, TlsSettings},
        spool::{Priority, Spool},
    },
};

/// Everything `shrike run` needs, resolved from defaults, the file and flags.
#[derive(Debug)]
pub struct RunSettings {
    /// None with --dry-run.
    pub mqtt: Option<Settings>,
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
    pub const HIGH_INTERVAL: &str = "1s";
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
        let mqtt = match hub {
            _ if dry_run => None,
            None => return Err(invalid("hub", "not set: use --hub mqtt://HOST:PORT or azure, or --dry-run")),
            Some(h) => Some(mqtt_settings(args, &file, h, max_message_size)?),
        };
        Ok(RunSettings {
            mqtt,
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
}

fn mqtt_settings(
    args: &RunArgs,
    file: &FileConfig,
    hub: Hub,
    max_message_size: usize,
) -> Result<Settings, ConfigError> {
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
    Ok(settings)
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
}

impl Batches {
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
                    *self.dropped.entry(prio).or_default() += 1;
                    tracing::warn!("security event dropped: {e}");
                }
            }
            Err(e) => {
                *self.dropped.entry(prio).or_default() += 1;
                tracing::warn!("security event dropped: {e}");
            }
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

    fn send(&mut self, prio: Priority, msg: &[u8], sink: &mut Sink) {
        let zipped;
        let msg = if self.gzip && matches!(sink, Sink::Mqtt(_)) {
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
                    *self.dropped.entry(prio).or_default() += 1;
                    tracing::error!("message not spooled: {e}");
                }
            }
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = RunSettings::resolve(&args)?;
    let collected: BTreeSet<Kind> =
        settings.priority.iter().filter(|(_, p)| **p != KindPriority::Off).map(|(k, _)| *k).collect();
    if collected.is_empty() {
        return Err(invalid("priority", "every kind is off: nothing to collect").into());
    }
    // Before anything is logged (`shrike ready` above all): a SIGINT or
    // SIGTERM that comes before the handlers exist kills the agent unflushed.
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let id = agent_id(&settings.agent_id_file);
    let mut sink = match &settings.mqtt {
        None => Sink::DryRun(std::io::stdout()),
        Some(mqtt) => {
            let spool = Spool::open(&settings.spool_dir, settings.spool_size)?;
            tracing::info!(dir = %settings.spool_dir.display(), waiting = spool.len(), "spool opened");
            Sink::Mqtt(Publisher::start(mqtt.clone(), spool)?)
        }
    };

    let wake_kinds =
        collected.iter().copied().filter(|k| settings.priority[k] == KindPriority::High).collect();
    let crate::Kernel { probes, mut rx, stats, mut tasks } =
        crate::start_kernel(&args.probe, collected.clone(), wake_kinds)?;
    let attached = probes.status.iter().filter(|s| s.attached).count();
    tracing::info!(agent_id = %id, kinds = ?collected, dry_run = settings.dry_run, "shrike ready: {attached} probes attached");
    crate::caps::drop_after_attach();

    let mut procs = ProcessTable::new(&args.probe.proc_root);
    procs.seed();
    let mut users = Users::new("/etc/passwd");
    let mut batches = Batches {
        builders: HashMap::new(),
        id,
        max: settings.max_message_size,
        gzip: settings.gzip,
        messages: 0,
        small: 0,
        dropped: HashMap::new(),
        collected: HashMap::new(),
    };
    let mut snapshots = tokio::time::interval(settings.snapshot_interval);
    let mut health = tokio::time::interval(settings.health_interval);
    health.reset();
    let mut reported = Health::default();
    // One aggregator per kind with aggregation on, each with its own interval.
    let mut aggs: BTreeMap<Kind, Aggregator> = BTreeMap::new();
    let mut agg_due: BTreeMap<Kind, (Duration, tokio::time::Instant)> = BTreeMap::new();
    for (&kind, interval) in &settings.aggregation {
        if let (Some(iv), true) = (interval, collected.contains(&kind)) {
            aggs.insert(kind, Aggregator::new(100_000));
            agg_due.insert(kind, (*iv, tokio::time::Instant::now() + *iv));
        }
    }
    let mut high = tokio::time::interval(settings.high_interval);
    let mut low = tokio::time::interval(settings.low_interval);
    // A busy loop must not flush several times in a row to catch up: that
    // would send small, early batches.
    for t in [&mut snapshots, &mut health, &mut high, &mut low] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }

    let outcome: anyhow::Result<()> = loop {
        let next_agg = agg_due.values().map(|(_, at)| *at).min();
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break Err(anyhow::anyhow!("kernel readers stopped")) };
                for mut ev in batch {
                    procs.apply(&mut ev);
                    handle(&mut ev, &settings, &mut users, &mut aggs, &mut batches, &mut sink);
                }
            }
            _ = sleep_until_opt(next_agg) => {
                let now = tokio::time::Instant::now();
                for (kind, (every, at)) in agg_due.iter_mut() {
                    if *at <= now {
                        *at = now + *every;
                        let prio = settings.priority[kind].spool().unwrap_or(Priority::Low);
                        for (_, ev) in aggs.get_mut(kind).map(Aggregator::flush).unwrap_or_default() {
                            batches.push(prio, ev, &mut sink);
                        }
                    }
                }
            }
            _ = snapshots.tick() => {
                for ev in crate::collect::snapshot_events(&args.probe.proc_root) {
                    batches.push(Priority::Low, ev, &mut sink);
                }
            }
            _ = health.tick() => {
                let now = Health::now(&batches, &sink, &probes, &settings);
                for ev in now.events_since(&reported) {
                    batches.push(Priority::Low, ev, &mut sink);
                }
                reported = now;
            }
            _ = high.tick() => batches.flush(Priority::High, &mut sink),
            _ = low.tick() => batches.flush(Priority::Low, &mut sink),
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(e.into()),
            },
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
        }
    };

    // Drain the kernel, then send everything pending (aggregates included).
    // Bounded: the probes are still attached, and a busy machine never goes
    // 300 ms without an event (the agent would never exit).
    let drain_end = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(batch)) = tokio::time::timeout_at(
        drain_end.min(tokio::time::Instant::now() + Duration::from_millis(300)),
        rx.recv(),
    )
    .await
    {
        for mut ev in batch {
            procs.apply(&mut ev);
            handle(&mut ev, &settings, &mut users, &mut aggs, &mut batches, &mut sink);
        }
    }
    for (kind, agg) in aggs.iter_mut() {
        let prio = settings.priority[kind].spool().unwrap_or(Priority::Low);
        for (_, ev) in agg.flush() {
            batches.push(prio, ev, &mut sink);
        }
    }
    batches.flush(Priority::High, &mut sink);
    batches.flush(Priority::Low, &mut sink);
    let lost = probes::read_counters(&probes.ebpf, shrike_common::names::LOST);
    tracing::info!(
        received = stats.received.load(Ordering::Relaxed),
        kernel_lost = ?lost,
        messages = batches.messages,
        dropped = ?batches.dropped,
        "shrike stopping"
    );
    if let Sink::Mqtt(p) = sink {
        // Give the publisher a moment to hand over what is spooled; whatever
        // is not acknowledged stays in the spool for the next start.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while p.stats().pending > 0 && p.stats().connected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(stats = ?p.stats(), "publisher stopping");
        p.shutdown().await;
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
    fn now(batches: &Batches, sink: &Sink, probes: &probes::Probes, settings: &RunSettings) -> Health {
        let mut dropped = batches.dropped.clone();
        let mut failed = 0;
        if let Sink::Mqtt(p) = sink {
            let st = p.stats();
            *dropped.entry(Priority::Low).or_default() += st.spool.dropped_low;
            *dropped.entry(Priority::High).or_default() += st.spool.dropped_high;
            failed = st.submit_errors + st.oversize_dropped + st.spool_dropped;
        }
        for (kind, lost) in probes::read_counters(&probes.ebpf, shrike_common::names::LOST) {
            if let Some(prio) = settings.priority.get(&kind).and_then(|p| p.spool()) {
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

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
