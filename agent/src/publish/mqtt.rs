//! The MQTT publisher: every message goes to the [spool](super::spool) first,
//! then one task sends what the spool holds, oldest first, at QoS 1, and
//! removes a message from the spool only when the broker's PUBACK for it
//! arrived. Delivery is at least once: after a reconnect (or a restart of the
//! agent) every message not yet acknowledged is sent again, so the receiver may
//! see duplicates, never gaps.
//!
//! How PUBACKs are matched to spool records (rumqttc 0.25, read in its
//! `state.rs` and `eventloop.rs`): rumqttc gives each QoS 1 publish a packet id
//! when its event loop takes the request off its channel, and reports it as
//! `Event::Outgoing(Outgoing::Publish(pkid))`, in the order the requests were
//! queued (the channel is FIFO). Only this module queues publishes, so the n-th
//! such event of a connection belongs to the n-th message handed to rumqttc in
//! that connection; `Event::Incoming(Packet::PubAck)` then names the packet id.
//! When the broker acknowledges out of order, rumqttc may hit a packet id that
//! is still in flight (a "collision"): it parks that publish, reports
//! `Outgoing::AwaitAck`, and sends it after the PUBACK for that id with another
//! `Outgoing::Publish(pkid)`, which comes after the `PubAck` event, so the
//! mapping still holds.
//!
//! Reconnects: the session is clean (`clean_session = true`), so on a new
//! connection rumqttc drops what it had in flight (`pending.clear()` when the
//! CONNACK says no session is present). Everything not yet acknowledged is
//! still in the spool and is queued again from the oldest. Events rumqttc had
//! buffered before the failure (acks read in the same batch) are handled with
//! the old connection's mapping first, then the mapping is reset; rumqttc's
//! leftovers (`pending`, a parked collision) are cleared so nothing of the old
//! connection is sent after the new CONNACK.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::{sync::Notify, task::JoinHandle, time::Instant};

use super::spool::{Meta, Priority, Spool, SpoolError, SpoolStats};

/// TLS to the broker: the CA that signed its certificate, and for mutual TLS
/// (IoT Hub's X.509 devices) the client's certificate chain and key, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca_file: PathBuf,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// How to reach the broker and how fast to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Broker host name or IP address (also the name checked in its certificate).
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Topic every message is published to (QoS 1, not retained).
    pub topic: String,
    /// MQTT keep-alive: zero, or whole seconds from 1 s to 65535 s.
    pub keep_alive: Duration,
    /// `None`: plain TCP.
    pub tls: Option<TlsSettings>,
    /// Publishes sent and not yet acknowledged, at most.
    pub max_inflight: u16,
    /// Messages per second when draining a backlog (0: no limit). Bursts of up
    /// to `max_inflight` messages go out at once.
    pub rate_limit: u32,
    /// Largest payload accepted, in bytes.
    pub max_message_size: usize,
    /// First wait before reconnecting; doubles on each failure up to
    /// `reconnect_max` (each wait jittered down to half, so agents that lost
    /// one broker do not come back in step), and starts over at every
    /// successful connection (CONNACK).
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Passwords that expire (IoT Hub SAS tokens): a fresh one is made for
    /// every connection attempt, and the connection is renewed `every`.
    pub credentials_refresh: Option<CredentialsRefresh>,
    /// Topic filters subscribed (QoS 1) at every connection: remote
    /// configuration (a retained document, the IoT Hub twin). What arrives
    /// comes out of [`Publisher::incoming`].
    pub subscriptions: Vec<String>,
}

/// A message from the broker on a subscribed topic, or the news that the
/// subscriptions are in place on a new connection (the IoT Hub twin is read
/// then: it is not retained).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    Subscribed,
    Message { topic: String, payload: Vec<u8>, retain: bool },
}

/// Incoming packets may be this large when something is subscribed (remote
/// documents: Sigma rules, IoC lists). A larger one fails the connection
/// (rumqttc reads packets whole), so the limit is generous.
pub const MAX_INCOMING: usize = 16 << 20;

/// Messages from the broker waiting for the run loop, at most; more are
/// dropped and counted (remote documents are retained: the next connection
/// brings the newest again).
const INCOMING_QUEUE: usize = 32;

/// Marks a publish in `handed`/`inflight` that is not a spooled message (a
/// control message: reported configuration, twin requests).
const CONTROL: u64 = u64::MAX;

/// Makes a fresh password (e.g. a SAS token with a new expiry).
#[derive(Clone)]
pub struct CredentialsRefresh {
    /// Reconnect with a fresh password this long after connecting (well before
    /// the password expires: the hub drops a client whose token expired).
    pub every: Duration,
    pub make: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
}

impl PartialEq for CredentialsRefresh {
    fn eq(&self, o: &Self) -> bool {
        self.every == o.every && std::sync::Arc::ptr_eq(&self.make, &o.make)
    }
}

impl Eq for CredentialsRefresh {}

impl Default for Settings {
    /// Plain MQTT on localhost; IoT Hub needs TLS on port 8883 and the
    /// identity strings from [`super::azure::ConnectionString`].
    fn default() -> Self {
        Settings {
            host: "localhost".into(),
            port: 1883,
            client_id: "shrike".into(),
            username: None,
            password: None,
            topic: "shrike/events".into(),
            keep_alive: Duration::from_secs(60),
            tls: None,
            max_inflight: 100,
            rate_limit: 100,
            // IoT Hub's device-to-cloud message limit.
            max_message_size: 256 * 1024,
            reconnect_min: Duration::from_millis(500),
            // Delivery resumes within a few seconds of the broker's return
            // (60 s waits were measured with a doubling up to a minute).
            reconnect_max: Duration::from_secs(4),
            credentials_refresh: None,
            subscriptions: Vec::new(),
        }
    }
}

/// Never prints the password (an IoT Hub SAS token).
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("topic", &self.topic)
            .field("keep_alive", &self.keep_alive)
            .field("tls", &self.tls)
            .field("max_inflight", &self.max_inflight)
            .field("rate_limit", &self.rate_limit)
            .field("max_message_size", &self.max_message_size)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("credentials_refresh", &self.credentials_refresh.as_ref().map(|r| r.every))
            .field("subscriptions", &self.subscriptions)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("invalid MQTT setting {0}: {1}")]
    Invalid(&'static str, String),
    #[error("reading {what} {}: {reason}", path.display())]
    Pem { what: &'static str, path: PathBuf, reason: String },
    #[error("setting up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("message of {size} bytes is larger than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("spooling message: {0}")]
    Spool(#[from] SpoolError),
    #[error("the MQTT publisher must be started from within a tokio runtime")]
    NoRuntime,
}

impl Settings {
    /// Rejects what rumqttc would panic on or what could never work.
    pub fn validate(&self) -> Result<(), MqttError> {
        let invalid = |what, why: &str| Err(MqttError::Invalid(what, why.to_string()));
        if self.host.is_empty() {
            return invalid("host", "empty");
        }
        if self.port == 0 {
            return invalid("port", "0");
        }
        if self.topic.is_empty() || self.topic.len() > usize::from(u16::MAX) {
            return invalid("topic", "empty or longer than 65535 bytes");
        }
        if let Some(c) = self.topic.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
            return invalid("topic", &format!("contains {c:?}, not allowed in a topic to publish to"));
        }
        if self.client_id.len() > usize::from(u16::MAX) {
            return invalid("client_id", "longer than 65535 bytes");
        }
        let ka = self.keep_alive;
        if !ka.is_zero() && (ka < Duration::from_secs(1) || ka.as_secs() > u64::from(u16::MAX)) {
            return invalid("keep_alive", "must be 0 or 1 s to 65535 s");
        }
        if self.max_inflight == 0 {
            return invalid("max_inflight", "must be at least 1");
        }
        if self.max_message_size == 0 {
            return invalid("max_message_size", "must be at least 1");
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return invalid("reconnect_min", "must be above zero and at most reconnect_max");
        }
        if self.password.is_some() && self.username.is_none() {
            return invalid("password", "MQTT 3.1.1 sends a password only with a username");
        }
        Ok(())
    }

    /// What [`Publisher::start`] checks, without starting anything: the
    /// settings and the TLS files (a reload checks new hub settings before it
    /// stops the running publisher).
    pub fn check(&self) -> Result<(), MqttError> {
        self.validate()?;
        self.mqtt_options().map(drop)
    }

    fn mqtt_options(&self) -> Result<MqttOptions, MqttError> {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        // Room for the topic and the fixed header; incoming packets are acks
        // only unless something is subscribed.
        let outgoing = self.max_message_size + self.topic.len() + 16;
        let incoming =
            if self.subscriptions.is_empty() { outgoing } else { outgoing.max(MAX_INCOMING + 1024) };
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(true)
            .set_inflight(self.max_inflight)
            .set_max_packet_size(incoming, outgoing);
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls_client_config(tls)?)));
        }
        Ok(o)
    }
}

/// Builds the rustls configuration once, at start, so a bad file is reported
/// then and not at every connection attempt. The ring provider is passed
/// explicitly: no process-wide default is needed.
fn tls_client_config(tls: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

    let pem_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| MqttError::Pem { what, path, reason: e.to_string() }
    };
    let read_certs = |what, path: &Path| -> Result<Vec<CertificateDer<'static>>, MqttError> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(pem_err(what, path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err(what, path))?;
        if certs.is_empty() {
            return Err(MqttError::Pem {
                what,
                path: path.to_path_buf(),
                reason: "no PEM certificate in it".into(),
            });
        }
        Ok(certs)
    };

    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(read_certs("CA file", &tls.ca_file)?);
    if added == 0 {
        return Err(MqttError::Pem {
            what: "CA file",
            path: tls.ca_file.clone(),
            reason: format!("none of its {ignored} certificates could be parsed"),
        });
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("client certificate", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err("client key", key))?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(MqttError::Invalid("tls", "client_cert and client_key go together".into()));
        }
    };
    Ok(Arc::new(config))
}

/// Counters, readable at any time with [`Publisher::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PublisherStats {
    /// PUBLISH packets sent, resends after a reconnect included.
    pub published: u64,
    /// Messages the broker acknowledged (and removed from the spool).
    pub acked: u64,
    /// Payload bytes of the PUBLISH packets sent.
    pub bytes_sent: u64,
    /// Connections established (CONNACK received).
    pub connects: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Failed connection attempts and lost connections.
    pub connection_errors: u64,
    /// Messages the full spool dropped (low and high priority).
    pub spool_dropped: u64,
    /// Spooled messages over `max_message_size` (a smaller limit than the run
    /// that spooled them), removed unsent.
    pub oversize_dropped: u64,
    /// `submit` calls that failed (message too large, spool write error).
    pub submit_errors: u64,
    /// Messages in the spool now (sent or not, not yet acknowledged).
    pub pending: u64,
    pub connected: bool,
    pub spool: SpoolStats,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    acked: AtomicU64,
    bytes_sent: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    connection_errors: AtomicU64,
    oversize_dropped: AtomicU64,
    submit_errors: AtomicU64,
    /// Messages on subscribed topics dropped because the run loop was behind.
    incoming_dropped: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

struct Shared {
    spool: Spool,
    /// The spool's thread wakes the sender task when messages are durable.
    wake: Arc<Notify>,
    counters: Counters,
    connected: AtomicBool,
    /// Control messages to publish (not spooled): (topic, payload, retain).
    control: Mutex<VecDeque<(String, Vec<u8>, bool)>>,
    incoming: tokio::sync::mpsc::Sender<Incoming>,
}

impl Shared {
    /// The spool (it has its own lock, never held across disk I/O).
    fn lock(&self) -> &Spool {
        &self.spool
    }
}

/// Publishes spooled messages to an MQTT broker. Dropping it stops the sender
/// task; unacknowledged messages stay in the spool for the next run.
pub struct Publisher {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    max_message_size: usize,
    incoming: tokio::sync::mpsc::Receiver<Incoming>,
}

impl Publisher {
    /// Starts the sender task (within the current tokio runtime). It connects,
    /// and first sends what `spool` holds from an earlier run.
    pub fn start(settings: Settings, spool: Spool) -> Result<Publisher, MqttError> {
        settings.validate()?;
        let options = settings.mqtt_options()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MqttError::NoRuntime)?;
        let (incoming_tx, incoming) = tokio::sync::mpsc::channel(INCOMING_QUEUE);
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            spool: {
                spool.set_waker(Arc::clone(&wake));
                spool
            },
            wake,
            counters: Counters::default(),
            connected: AtomicBool::new(false),
            control: Mutex::new(VecDeque::new()),
            incoming: incoming_tx,
        });
        // The request channel never holds more than the in-flight window.
        let (client, eventloop) = AsyncClient::new(options, usize::from(settings.max_inflight));
        let sender = Sender {
            shared: Arc::clone(&shared),
            client,
            topic: settings.topic.clone(),
            max_inflight: usize::from(settings.max_inflight),
            max_message_size: settings.max_message_size,
            handed: VecDeque::new(),
            inflight: HashMap::new(),
            next_seq: 0,
            connected: false,
            bucket: TokenBucket::new(settings.rate_limit, settings.max_inflight),
        };
        let task = runtime.spawn(sender.run(eventloop, settings.clone()));
        Ok(Publisher { shared, task, max_message_size: settings.max_message_size, incoming })
    }

    /// The next message on a subscribed topic (or a new connection's
    /// subscriptions in place). Cancel-safe.
    pub async fn incoming(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// Publishes a control message (reported configuration, a twin request)
    /// at QoS 1 on the current connection, ahead of the spool; it is not
    /// spooled: one lost with the connection is not sent again (whoever
    /// sends it sends it again at the next connection).
    pub fn publish_control(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        const MAX_QUEUED: usize = 64;
        let mut q = self.shared.control.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_QUEUED {
            // Oldest first: a newer report supersedes it.
            q.pop_front();
        }
        q.push_back((topic.to_owned(), payload, retain));
        drop(q);
        self.shared.wake.notify_one();
    }

    /// A message of one event (see [`submit_with`](Self::submit_with)).
    pub fn submit(&self, priority: Priority, payload: &[u8]) -> Result<u64, MqttError> {
        self.submit_with(priority, payload, Meta::default())
    }

    /// Queues `payload` for the spool; the spool's thread writes it (group
    /// commit) and wakes the sender once it is durable: never waits for the
    /// disk or the network. Returns its ticket (see
    /// [`durable_through`](Self::durable_through)). A full spool, file system
    /// or queue makes room by dropping the oldest low-priority messages
    /// (counted in the stats, with their events).
    pub fn submit_with(&self, priority: Priority, payload: &[u8], meta: Meta) -> Result<u64, MqttError> {
        self.submit_covered(priority, payload, meta, None)
    }

    /// [`submit_with`](Self::submit_with) a message holding the journal
    /// records `cover` (journal/cover.rs).
    pub fn submit_covered(
        &self,
        priority: Priority,
        payload: &[u8],
        meta: Meta,
        cover: Option<crate::journal::cover::Cover>,
    ) -> Result<u64, MqttError> {
        let counters = &self.shared.counters;
        if payload.len() > self.max_message_size {
            bump(&counters.submit_errors, 1);
            return Err(MqttError::TooLarge { size: payload.len(), limit: self.max_message_size });
        }
        let ticket = self
            .shared
            .lock()
            .submit_covered(priority, payload, meta, cover)
            .inspect_err(|_| bump(&counters.submit_errors, 1))?;
        Ok(ticket)
    }

    /// See [`Spool::forget_covered_below`].
    pub fn forget_covered_below(&self, epoch: u64, seq: u64) {
        self.shared.lock().forget_covered_below(epoch, seq);
    }

    /// The journal records the spool holds (see [`Spool::covered`]).
    pub fn covered(&self) -> crate::journal::cover::Covered {
        self.shared.lock().covered()
    }

    /// Every message submitted up to this ticket is durable in the spool, or
    /// was dropped and counted.
    pub fn durable_through(&self) -> u64 {
        self.shared.lock().durable_through()
    }

    pub fn stats(&self) -> PublisherStats {
        let c = &self.shared.counters;
        let (spool, pending) = {
            let spool = self.shared.lock();
            (spool.stats(), spool.len() as u64)
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PublisherStats {
            published: get(&c.published),
            acked: get(&c.acked),
            bytes_sent: get(&c.bytes_sent),
            connects: get(&c.connects),
            reconnects: get(&c.reconnects),
            connection_errors: get(&c.connection_errors),
            spool_dropped: dropped(&spool),
            oversize_dropped: get(&c.oversize_dropped),
            submit_errors: get(&c.submit_errors),
            pending,
            connected: self.shared.connected.load(Ordering::Relaxed),
            spool,
        }
    }

    /// Stops the sender task and waits for it to end. Messages not yet
    /// acknowledged stay spooled.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The join error is the cancellation; `Drop` aborts again, harmlessly.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn dropped(s: &SpoolStats) -> u64 {
    s.dropped_low + s.dropped_high
}

/// Limits the send rate: `rate` tokens a second, at most `burst` saved up.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u16) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: f64::from(rate), burst, tokens: burst, last: Instant::now() }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    fn ready(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        self.refill(now);
        self.tokens >= 1.0
    }

    fn take(&mut self) {
        if self.rate != 0.0 {
            self.tokens -= 1.0;
        }
    }

    /// When the next token is there (call after `ready` returned false).
    fn next_ready(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.last + Duration::from_secs_f64(missing / self.rate)
    }
}

/// What woke the sender's loop.
enum Step {
    Polled(Result<Event, rumqttc::ConnectionError>),
    Renew,
}

/// Bounded exponential backoff between connection attempts, with jitter:
/// each wait is drawn from [d/2, d] for the current step d.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    jitter: std::collections::hash_map::RandomState,
    draws: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, next: min, jitter: Default::default(), draws: 0 }
    }

    fn next_delay(&mut self) -> Duration {
        use std::hash::BuildHasher;
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        self.draws += 1;
        // A random fraction in [0.5, 1.0] (a keyed hash: no RNG crate needed).
        let r = (self.jitter.hash_one(self.draws) >> 11) as f64 / (1u64 << 53) as f64;
        step.mul_f64(0.5 + r / 2.0)
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The sender task's state: it alone owns the rumqttc event loop.
struct Sender {
    shared: Arc<Shared>,
    client: AsyncClient,
    topic: String,
    max_inflight: usize,
    max_message_size: usize,
    /// Handed to rumqttc in this connection, no packet id seen yet, in order:
    /// (sequence number, payload bytes).
    handed: VecDeque<(u64, usize)>,
    /// Packet id of each publish sent in this connection and not yet acked.
    inflight: HashMap<u16, u64>,
    /// The next message to hand over is the oldest spooled one from this
    /// sequence number on. Below it, the spool holds only messages in flight
    /// (at most `max_inflight`), so finding it is cheap; what a full spool
    /// dropped is simply not found.
    next_seq: u64,
    connected: bool,
    bucket: TokenBucket,
}

impl Sender {
    async fn run(mut self, mut eventloop: EventLoop, settings: Settings) {
        let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
        let mut connected_at: Option<Instant> = None;
        loop {
            let renew_at = settings
                .credentials_refresh
                .as_ref()
                .and_then(|r| connected_at.filter(|_| self.connected).map(|t| t + r.every));
            let step = {
                // The poll future is kept across wake-ups and never dropped
                // half-way: rumqttc's poll is not cancel-safe (a publish can be
                // taken off its channel and then lost with the future).
                let mut poll = std::pin::pin!(eventloop.poll());
                loop {
                    let room = self.connected && self.handed.len() + self.inflight.len() < self.max_inflight;
                    let throttled_until = if room && !self.bucket.ready(Instant::now()) {
                        Some(self.bucket.next_ready())
                    } else {
                        None
                    };
                    let polled = tokio::select! {
                        biased;
                        r = &mut poll => Some(Step::Polled(r)),
                        () = tokio::time::sleep_until(renew_at.unwrap_or_else(Instant::now)),
                            if renew_at.is_some() => Some(Step::Renew),
                        () = self.shared.wake.notified(), if room && throttled_until.is_none() => None,
                        () = tokio::time::sleep_until(throttled_until.unwrap_or_else(Instant::now)),
                            if throttled_until.is_some() => None,
                    };
                    match polled {
                        Some(step) => break step,
                        None => self.feed(),
                    }
                }
            };
            let result = match step {
                Step::Polled(r) => r,
                Step::Renew => {
                    // Dropping the poll future may lose a publish on its way
                    // out: harmless, the spool resends everything unacknowledged
                    // after the reconnect.
                    tracing::info!("renewing MQTT credentials: reconnecting");
                    self.refresh_credentials(&mut eventloop, &settings);
                    eventloop.clean();
                    self.on_disconnect(&mut eventloop);
                    connected_at = None;
                    continue;
                }
            };
            match result {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected_at = Some(Instant::now());
                    // rumqttc reports only a successful CONNACK as an event
                    // (a refusal is an error): the next outage starts short.
                    backoff.reset();
                    self.on_connect(&mut eventloop, &settings);
                }
                Ok(event) => self.on_event(event),
                Err(e) => {
                    // Acks rumqttc read before the failure are still good.
                    for event in std::mem::take(&mut eventloop.state.events) {
                        self.on_event(event);
                    }
                    self.on_disconnect(&mut eventloop);
                    bump(&self.shared.counters.connection_errors, 1);
                    connected_at = None;
                    self.refresh_credentials(&mut eventloop, &settings);
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        broker = %format_args!("{}:{}", settings.host, settings.port),
                        error = %e,
                        "MQTT connection failed; reconnecting in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
            self.feed();
        }
    }

    /// A fresh password for the next connection attempt, where they expire.
    fn refresh_credentials(&self, eventloop: &mut EventLoop, settings: &Settings) {
        if let Some(r) = &settings.credentials_refresh {
            let user = settings.username.clone().unwrap_or_default();
            eventloop.mqtt_options.set_credentials(user, (r.make)());
        }
    }

    fn on_connect(&mut self, eventloop: &mut EventLoop, settings: &Settings) {
        let c = &self.shared.counters;
        if c.connects.fetch_add(1, Ordering::Relaxed) > 0 {
            bump(&c.reconnects, 1);
        }
        // A clean session: nothing of an earlier connection may be sent now.
        // rumqttc already clears `pending` (no session present); the parked
        // collision it would keep (`clean()` does not reset it) would block
        // all publishes until a PUBACK that can no longer come.
        eventloop.pending.clear();
        eventloop.state.collision = None;
        eventloop.state.events.clear();
        self.handed.clear();
        self.inflight.clear();
        // Everything still spooled is sent again, from the oldest.
        self.next_seq = 0;
        self.connected = true;
        self.shared.connected.store(true, Ordering::Relaxed);
        if !settings.subscriptions.is_empty() {
            let filters = settings
                .subscriptions
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
            if let Err(e) = self.client.try_subscribe_many(filters) {
                tracing::warn!("cannot subscribe to {:?}: {e}", settings.subscriptions);
            }
        }
        let backlog = self.shared.lock().len();
        tracing::info!(
            broker = %format_args!("{}:{}", settings.host, settings.port),
            backlog,
            "MQTT connected"
        );
    }

    fn on_disconnect(&mut self, eventloop: &mut EventLoop) {
        eventloop.state.collision = None;
        self.handed.clear();
        self.inflight.clear();
        self.connected = false;
        self.shared.connected.store(false, Ordering::Relaxed);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let Some((seq, len)) = self.handed.pop_front() else {
                    tracing::debug!(pkid, "publish reported by rumqttc that this publisher did not queue");
                    return;
                };
                if let Some(old) = self.inflight.insert(pkid, seq) {
                    // rumqttc reuses an id only once it is acked; if not, the
                    // older message is resent after the next reconnect.
                    tracing::warn!(pkid, seq, old, "packet id reused before its PUBACK");
                }
                let c = &self.shared.counters;
                bump(&c.published, 1);
                bump(&c.bytes_sent, len as u64);
            }
            Event::Incoming(Packet::PubAck(ack)) => match self.inflight.remove(&ack.pkid) {
                Some(CONTROL) => {}
                Some(seq) => {
                    self.shared.lock().ack(seq);
                    bump(&self.shared.counters.acked, 1);
                }
                None => tracing::debug!(pkid = ack.pkid, "PUBACK for no message in flight"),
            },
            Event::Incoming(Packet::SubAck(_)) => self.forward(Incoming::Subscribed),
            Event::Incoming(Packet::Publish(p)) => self.forward(Incoming::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
                retain: p.retain,
            }),
            _ => {}
        }
    }

    fn forward(&self, msg: Incoming) {
        if self.shared.incoming.try_send(msg).is_err() {
            let n = self.shared.counters.incoming_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if crate::telemetry::sampled(n) {
                tracing::warn!(count = n, "message on a subscribed topic dropped: the agent is behind");
            }
        }
    }

    /// Hands queued control messages to rumqttc, within the in-flight window.
    fn feed_control(&mut self) {
        while self.connected && self.handed.len() + self.inflight.len() < self.max_inflight {
            let Some((topic, payload, retain)) =
                self.shared.control.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
            else {
                return;
            };
            let len = payload.len();
            match self.client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
                Ok(()) => self.handed.push_back((CONTROL, len)),
                Err(e) => {
                    tracing::warn!("rumqttc did not take a control message: {e}");
                    return;
                }
            }
        }
    }

    /// Hands spooled messages to rumqttc, oldest first, while the in-flight
    /// window and the rate limit allow.
    fn feed(&mut self) {
        self.feed_control();
        while self.connected && self.handed.len() + self.inflight.len() < self.max_inflight {
            if !self.bucket.ready(Instant::now()) {
                return;
            }
            let spool = self.shared.lock();
            // None also while the spool's thread reads the next one from
            // disk (it wakes this task then); corrupt records never come out.
            let Some((seq, payload)) = spool.next_ready(self.next_seq) else {
                return;
            };
            self.next_seq = seq + 1;
            if payload.len() > self.max_message_size {
                spool.ack(seq);
                let n = self.shared.counters.oversize_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if crate::telemetry::sampled(n) {
                    tracing::warn!(
                        seq,
                        size = payload.len(),
                        limit = self.max_message_size,
                        count = n,
                        "dropping spooled message over the size limit"
                    );
                }
                continue;
            }
            let len = payload.len();
            match self.client.try_publish(self.topic.as_str(), QoS::AtLeastOnce, false, payload) {
                Ok(()) => {
                    self.handed.push_back((seq, len));
                    self.bucket.take();
                }
                Err(e) => {
                    // Cannot happen while the window bounds the channel; retry later.
                    self.next_seq = seq;
                    tracing::warn!("rumqttc did not take a publish: {e}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        collections::HashSet,
        fs,
        net::{Ipv4Addr, TcpListener},
    };

    use shrike_tests::broker::{Auth, Broker, BrokerConfig, available as have_mosquitto, make_pki};

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shrike-mqtt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn free_port() -> u16 {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
    }

    /// A QoS 1 subscriber with a persistent session, resubscribing on every
    /// connection; received payloads come out of `rx`.
    struct Subscriber {
        rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
        task: JoinHandle<()>,
    }

    impl Subscriber {
        async fn start(port: u16, topic: &str) -> Subscriber {
            let mut o = MqttOptions::new(format!("sub-{port}"), "127.0.0.1", port);
            o.set_clean_session(false).set_keep_alive(Duration::from_secs(5));
            let (client, mut eventloop) = AsyncClient::new(o, 10);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
            let topic = topic.to_string();
            let task = tokio::spawn(async move {
                let mut subscribed_tx = Some(subscribed_tx);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            client.subscribe(topic.as_str(), QoS::AtLeastOnce).await.unwrap();
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(s) = subscribed_tx.take() {
                                let _ = s.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let _ = tx.send(p.payload.to_vec());
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
            tokio::time::timeout(Duration::from_secs(5), subscribed_rx)
                .await
                .expect("subscriber did not subscribe in time")
                .unwrap();
            Subscriber { rx, task }
        }

        /// Receives until `want` distinct payloads arrived; returns all
        /// payloads received, duplicates included.
        async fn collect(&mut self, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
            let mut got = Vec::new();
            let mut distinct = HashSet::new();
            let deadline = Instant::now() + timeout;
            while distinct.len() < want {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(p)) => {
                        distinct.insert(p.clone());
                        got.push(p);
                    }
                    _ => panic!("received {} of {want} distinct messages in {timeout:?}", distinct.len()),
                }
            }
            got
        }
    }

    impl Drop for Subscriber {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn settings(port: u16, topic: &str) -> Settings {
        Settings {
            host: "127.0.0.1".into(),
            port,
            client_id: format!("pub-{port}"),
            topic: topic.into(),
            keep_alive: Duration::from_secs(5),
            rate_limit: 0,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(500),
            ..Settings::default()
        }
    }

    fn messages(prefix: &str, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("{prefix}-{i:04}").into_bytes()).collect()
    }

    /// Order of first arrival, duplicates (at-least-once resends) removed.
    fn first_arrivals(got: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut seen = HashSet::new();
        got.iter().filter(|p| seen.insert(p.to_vec())).cloned().collect()
    }

    async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn messages_arrive_in_order() {
        if !have_mosquitto("messages_arrive_in_order") {
            return;
        }
        let dir = temp_dir("order");
        let broker = Broker::start(&dir, "", &[]);
        let topic = "shrike/test/order";
        let mut sub = Subscriber::start(broker.port, topic).await;
        let spool = Spool::open(dir.join("spool"), 1 << 20).unwrap();
        let mut s = settings(broker.port, topic);
        // Exercise the window and the rate limit: 200 messages at 1000/s,
        // 8 in flight.
        s.max_inflight = 8;
        s.rate_limit = 1000;
        let publisher = Publisher::start(s, spool).unwrap();
        let sent = messages("order", 200);
        for (i, m) in sent.iter().enumerate() {
            let prio = if i % 2 == 0 { Priority::High } else { Priority::Low };
            publisher.submit(prio, m).unwrap();
        }
        let got = sub.collect(sent.len(), Duration::from_secs(10)).await;
        assert_eq!(got, sent, "in order, nothing twice");
        wait_until("all acks", Duration::from_secs(5), || publisher.stats().pending == 0).await;
        let st = publisher.stats();
        assert_eq!((st.published, st.acked, st.connects, st.reconnects), (200, 200, 1, 0), "{st:?}");
        assert_eq!(st.bytes_sent, sent.iter().map(|m| m.len() as u64).sum::<u64>());
        assert!(st.connected);
        assert!(matches!(
            publisher.submit(Priority::Low, &vec![0; 256 * 1024 + 1]),
            Err(MqttError::TooLarge { .. })
        ));
        assert_eq!(publisher.stats().submit_errors, 1);
        publisher.shutdown().await;
        drop(broker);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn expiring_credentials_are_renewed_by_reconnecting() {
        if !have_mosquitto("expiring_credentials_are_renewed_by_reconnecting") {
            return;
        }
        let dir = temp_dir("renew");
        let broker = Broker::start(&dir, "", &[]);
        let topic = "shrike/test/renew";
        let mut sub = Subscriber::start(broker.port, topic).await;
        let spool = Spool::open(dir.join("spool"), 1 << 20).unwrap();
        let made = std::sync::Arc::new(AtomicU64::new(0));
        let mut s = settings(broker.port, topic);
        s.username = Some("device".into());
        let counter = std::sync::Arc::clone(&made);
        s.credentials_refresh = Some(CredentialsRefresh {
            every: Duration::from_millis(700),
            make: std::sync::Arc::new(move || format!("token-{}", counter.fetch_add(1, Ordering::SeqCst))),
        });
        let publisher = Publisher::start(s, spool).unwrap();
        let sent = messages("renew", 30);
        for m in &sent {
            publisher.submit(Priority::Low, m).unwrap();
            tokio::time::sleep(Duration::from_millis(70)).await;
        }
        let got = sub.collect(sent.len(), Duration::from_secs(10)).await;
        assert_eq!(first_arrivals(&got), sent, "every message, in order, across renewals");
        let st = publisher.stats();
        assert!(st.reconnects >= 2, "renewed by reconnecting: {st:?}");
        assert!(made.load(Ordering::SeqCst) >= 2, "a fresh password per renewal");
        publisher.shutdown().await;
        drop(broker);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn nothing_lost_while_the_broker_is_down() {
        if !have_mosquitto("nothing_lost_while_the_broker_is_down") {
            return;
        }
        let dir = temp_dir("restart");
        let mut broker = Broker::start(&dir, "", &[]);
        let topic = "shrike/test/restart";
        let mut sub = Subscriber::start(broker.port, topic).await;
        let spool = Spool::open(dir.join("spool"), 1 << 20).unwrap();
        let publisher = Publisher::start(settings(broker.port, topic), spool).unwrap();

        let before = messages("before", 5);
        for m in &before {
            publisher.submit(Priority::High, m).unwrap();
        }
        assert_eq!(sub.collect(before.len(), Duration::from_secs(5)).await, before);
        wait_until("acks", Duration::from_secs(5), || publisher.stats().pending == 0).await;

        // The broker stops in the middle of a stream: some messages are in
        // flight (sent, not acknowledged), some not sent yet.
        let burst = messages("burst", 300);
        for m in &burst {
            publisher.submit(Priority::Low, m).unwrap();
        }
        let mut got = sub.collect(10, Duration::from_secs(5)).await;
        broker.stop();
        wait_until("the publisher to notice", Duration::from_secs(5), || !publisher.stats().connected).await;
        let during = messages("during", 30);
        for m in &during {
            publisher.submit(Priority::Low, m).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting = publisher.stats().pending;
        assert!(waiting >= during.len() as u64, "{waiting} messages spooled");
        broker.restart();

        let want: HashSet<Vec<u8>> = burst.iter().chain(&during).cloned().collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !want.iter().all(|m| got.contains(m)) {
            match tokio::time::timeout_at(deadline, sub.rx.recv()).await {
                Ok(Some(p)) => got.push(p),
                _ => {
                    let missing = want.iter().filter(|m| !got.contains(m)).count();
                    panic!("{missing} of {} messages never arrived", want.len());
                }
            }
        }
        assert!(got.iter().all(|m| want.contains(m)), "only what was sent arrives");
        wait_until("acks", Duration::from_secs(5), || publisher.stats().pending == 0).await;
        let st = publisher.stats();
        assert!(st.reconnects >= 1 && st.connection_errors >= 1, "{st:?}");
        assert_eq!(st.acked, (before.len() + want.len()) as u64, "each message acked once: {st:?}");
        assert!(st.published >= st.acked, "{st:?}");
        assert_eq!(st.spool_dropped, 0);
        eprintln!(
            "broker restart: {} published for {} messages, {} duplicates received",
            st.published,
            st.acked,
            got.len() - want.len()
        );
        publisher.shutdown().await;
        drop(broker);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_new_publisher_sends_what_a_crashed_one_spooled() {
        if !have_mosquitto("a_new_publisher_sends_what_a_crashed_one_spooled") {
            return;
        }
        let dir = temp_dir("crash");
        let mut broker = Broker::start(&dir, "", &[]);
        let topic = "shrike/test/crash";
        let mut sub = Subscriber::start(broker.port, topic).await;
        // The broker is down while the first publisher runs: its messages
        // can only be spooled.
        broker.stop();
        let spool_dir = dir.join("spool");
        let first = Publisher::start(settings(broker.port, topic), Spool::open(&spool_dir, 1 << 20).unwrap())
            .unwrap();
        let spooled = messages("spooled", 20);
        for m in &spooled {
            first.submit(Priority::High, m).unwrap();
        }
        assert_eq!(first.stats().pending, spooled.len() as u64);
        // A crash: the task is aborted, nothing is flushed or disconnected.
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;

        broker.restart();
        let spool = Spool::open(&spool_dir, 1 << 20).unwrap();
        assert_eq!(spool.len(), spooled.len());
        let second = Publisher::start(settings(broker.port, topic), spool).unwrap();
        let later = messages("later", 5);
        for m in &later {
            second.submit(Priority::Low, m).unwrap();
        }
        let want: Vec<_> = spooled.iter().chain(&later).cloned().collect();
        let got = sub.collect(want.len(), Duration::from_secs(10)).await;
        assert_eq!(first_arrivals(&got), want, "the earlier run's messages first");
        wait_until("acks", Duration::from_secs(5), || second.stats().pending == 0).await;
        second.shutdown().await;
        drop(broker);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A scripted broker on one connection, for what mosquitto never does
    /// (acknowledging out of order).
    struct FakeConn {
        stream: tokio::net::TcpStream,
        buf: bytes::BytesMut,
    }

    impl FakeConn {
        /// Accepts a connection and answers its CONNECT.
        async fn accept(listener: &tokio::net::TcpListener) -> FakeConn {
            let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("no connection in time")
                .unwrap();
            let mut c = FakeConn { stream, buf: bytes::BytesMut::new() };
            assert!(matches!(c.next().await, Some(Packet::Connect(_))));
            c.send(Packet::ConnAck(rumqttc::ConnAck::new(rumqttc::ConnectReturnCode::Success, false))).await;
            c
        }

        async fn next(&mut self) -> Option<Packet> {
            use tokio::io::AsyncReadExt;
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("bad packet from the publisher: {e}"),
                }
                if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        }

        async fn send(&mut self, p: Packet) {
            use tokio::io::AsyncWriteExt;
            let mut b = bytes::BytesMut::new();
            p.write(&mut b, 1 << 20).unwrap();
            self.stream.write_all(&b).await.unwrap();
        }

        /// The next PUBLISH, answering pings on the way; `None` after `wait`.
        async fn publish(&mut self, wait: Duration) -> Option<rumqttc::Publish> {
            loop {
                match tokio::time::timeout(wait, self.next()).await.ok()?? {
                    Packet::Publish(p) => {
                        assert_eq!(p.qos, QoS::AtLeastOnce);
                        return Some(p);
                    }
                    Packet::PingReq => self.send(Packet::PingResp).await,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }

        async fn ack(&mut self, pkid: u16) {
            self.send(Packet::PubAck(rumqttc::PubAck::new(pkid))).await;
        }
    }

    /// PUBACKs out of order, a connection lost with messages in flight, and
    /// rumqttc's packet-id collisions: the spool keeps exactly the messages
    /// not acknowledged, and they are sent again, oldest first.
    #[tokio::test]
    async fn acks_out_of_order_are_matched_to_the_right_messages() {
        let dir = temp_dir("fake");
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = Settings { max_inflight: 4, ..settings(port, "shrike/test/fake") };
        let publisher = Publisher::start(s, Spool::open(dir.join("spool"), 1 << 20).unwrap()).unwrap();
        let sent = messages("fake", 12);
        for m in &sent {
            publisher.submit(Priority::High, m).unwrap();
        }
        let wait = Duration::from_secs(5);

        // First connection: the window's four messages arrive; only the
        // third and the first are acknowledged, in that order; then the
        // connection is lost.
        let mut conn = FakeConn::accept(&listener).await;
        let mut first = Vec::new();
        for _ in 0..4 {
            first.push(conn.publish(wait).await.expect("a publish"));
        }
        let payloads: Vec<_> = first.iter().map(|p| p.payload.to_vec()).collect();
        assert_eq!(payloads, sent[..4]);
        conn.ack(first[2].pkid).await;
        conn.ack(first[0].pkid).await;
        wait_until("2 acks", wait, || publisher.stats().acked == 2).await;
        drop(conn);

        // Second connection: everything not acknowledged, oldest first.
        // Each window is acknowledged last-first with pauses, so rumqttc
        // runs into packet ids still in flight (collisions).
        let mut conn = FakeConn::accept(&listener).await;
        let mut second = Vec::new();
        while second.len() < 10 {
            let mut window = vec![conn.publish(wait).await.expect("a publish")];
            while window.len() < 4 {
                match conn.publish(Duration::from_millis(200)).await {
                    Some(p) => window.push(p),
                    None => break,
                }
            }
            for p in window.iter().rev() {
                conn.ack(p.pkid).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            second.extend(window.into_iter().map(|p| p.payload.to_vec()));
        }
        let expected: Vec<_> =
            sent.iter().enumerate().filter(|(i, _)| *i != 0 && *i != 2).map(|(_, m)| m.clone()).collect();
        assert_eq!(second, expected);
        wait_until("all acks", wait, || publisher.stats().pending == 0).await;
        assert!(conn.publish(Duration::from_millis(300)).await.is_none(), "nothing sent twice");
        let st = publisher.stats();
        assert_eq!((st.acked, st.connects, st.reconnects), (12, 2, 1), "{st:?}");
        publisher.shutdown().await;
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_full_spool_drops_and_counts_while_offline() {
        let dir = temp_dir("full");
        // Nothing listens on this port.
        let mut s = settings(free_port(), "shrike/test/full");
        s.reconnect_min = Duration::from_secs(1);
        s.reconnect_max = Duration::from_secs(1);
        let record = super::super::spool::HEADER as u64 + 10;
        let publisher = Publisher::start(s, Spool::open(dir.join("spool"), 5 * record).unwrap()).unwrap();
        for i in 0..8u8 {
            publisher.submit(Priority::Low, &[i; 10]).unwrap();
        }
        // The spool's thread writes them (and drops for room) apart.
        wait_until("the spool thread", Duration::from_secs(5), || publisher.stats().spool_dropped == 3).await;
        let st = publisher.stats();
        assert_eq!((st.pending, st.spool_dropped, st.spool.dropped_low), (5, 3, 3), "{st:?}");
        wait_until("a failed connection", Duration::from_secs(5), || {
            publisher.stats().connection_errors >= 1
        })
        .await;
        assert!(!publisher.stats().connected);
        publisher.shutdown().await;
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Mutual TLS with the ring provider, against mosquitto's TLS listener
    /// that requires a client certificate.
    #[tokio::test]
    async fn mutual_tls() {
        if !have_mosquitto("mutual_tls") {
            return;
        }
        let dir = temp_dir("tls-broker");
        let pki = make_pki(&dir.join("certs"));
        let certs = pki.dir.clone();
        let mut cfg = BrokerConfig::new(&dir);
        let tls_port = cfg.tls_listener(&pki, true, Auth::Anonymous);
        let broker = cfg.start();
        let topic = "shrike/test/tls";
        let mut sub = Subscriber::start(broker.port, topic).await;

        let tls = TlsSettings {
            ca_file: certs.join("ca.pem"),
            client_cert: Some(certs.join("client.pem")),
            client_key: Some(certs.join("client.key")),
        };
        let s = Settings { host: "localhost".into(), tls: Some(tls.clone()), ..settings(tls_port, topic) };
        let publisher =
            Publisher::start(s.clone(), Spool::open(dir.join("spool"), 1 << 20).unwrap()).unwrap();
        let sent = messages("tls", 10);
        for m in &sent {
            publisher.submit(Priority::High, m).unwrap();
        }
        assert_eq!(sub.collect(sent.len(), Duration::from_secs(10)).await, sent);
        wait_until("acks", Duration::from_secs(5), || publisher.stats().pending == 0).await;
        publisher.shutdown().await;

        // Without the client certificate the broker refuses the handshake.
        let anonymous =
            Settings { tls: Some(TlsSettings { client_cert: None, client_key: None, ..tls }), ..s };
        let refused = Publisher::start(anonymous, Spool::open(dir.join("spool2"), 1 << 20).unwrap()).unwrap();
        refused.submit(Priority::High, b"never").unwrap();
        wait_until("a refused connection", Duration::from_secs(5), || refused.stats().connection_errors >= 1)
            .await;
        let st = refused.stats();
        assert_eq!((st.connects, st.acked, st.pending), (0, 0, 1), "{st:?}");
        refused.shutdown().await;
        drop(broker);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_are_checked() {
        assert!(Settings::default().validate().is_ok());
        let bad = |f: fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(bad(|s| s.topic = "a/+/b".into()).contains("topic"));
        assert!(bad(|s| s.keep_alive = Duration::from_millis(500)).contains("keep_alive"));
        assert!(bad(|s| s.max_inflight = 0).contains("max_inflight"));
        assert!(bad(|s| s.host = String::new()).contains("host"));
        assert!(bad(|s| s.reconnect_min = Duration::ZERO).contains("reconnect_min"));
        assert!(bad(|s| s.password = Some("x".into())).contains("password"));
        let s = Settings {
            password: Some("SharedAccessSignature sr=secret".into()),
            username: Some("hub/dev".into()),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn tls_files_are_checked_at_start() {
        let dir = temp_dir("tls");
        let missing = TlsSettings { ca_file: dir.join("none.pem"), client_cert: None, client_key: None };
        let e = tls_client_config(&missing).unwrap_err().to_string();
        assert!(e.contains("CA file") && e.contains("none.pem"), "{e}");
        fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
        let empty = TlsSettings { ca_file: dir.join("empty.pem"), client_cert: None, client_key: None };
        assert!(tls_client_config(&empty).unwrap_err().to_string().contains("no PEM certificate"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_bucket_and_backoff() {
        let mut b = TokenBucket::new(10, 2);
        let now = Instant::now();
        assert!(b.ready(now));
        b.take();
        assert!(b.ready(now));
        b.take();
        assert!(!b.ready(now));
        let next = b.next_ready();
        assert!(next > now && next <= now + Duration::from_millis(101));
        assert!(b.ready(now + Duration::from_millis(100)));
        let mut unlimited = TokenBucket::new(0, 1);
        for _ in 0..1000 {
            assert!(unlimited.ready(now));
            unlimited.take();
        }

        let mut k = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let steps = [100, 200, 400, 500, 500];
        let mut seen = std::collections::HashSet::new();
        for round in 0..50 {
            for step in steps {
                let d = k.next_delay().as_millis();
                assert!((step / 2..=step).contains(&d), "round {round}: {d} ms for a step of {step} ms");
                seen.insert(d);
            }
            k.reset();
        }
        assert!(seen.len() > 20, "jittered: {seen:?}");
    }
}
