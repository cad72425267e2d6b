//! The SDK socket: other programs on the gateway report their own security
//! events (one JSON event a line, `shrike_common::sdk` has the protocol);
//! each accepted one becomes an [`Event`] of kind `sdk` from its sender and
//! goes through detection, batching, the spool and the publisher like the
//! agent's own.
//!
//! What keeps a client from hurting the agent or the others: a line is read
//! into at most 64 KiB (the rest of a longer one is discarded as it comes),
//! a connection with nothing to read for `idle_timeout`, or a line that does
//! not arrive whole within `line_timeout` of its first byte, is closed;
//! events beyond the per-connection and global rates are rejected ("rate
//! limited") before they are parsed; at most `max_connections` clients at
//! once; and a reply that cannot be written within `line_timeout` closes
//! the connection. Each connection is its own task: one slow client holds
//! up nobody else. Every outcome is counted in [`SdkStats`].

pub mod send;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use clap::Args;
use serde::Serialize;
use shrike_common::sdk::{self as proto, Reply, SdkEvent};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc},
    time::Instant,
};

use crate::{
    config::{ConfigError, duration_setting},
    events::{Body, Event},
};

/// The SDK socket's flags (`shrike run`, `shrike events`); each also a key
/// of the config file (`sdk_socket`, `sdk_rate`...).
#[derive(Debug, Clone, Default, Args)]
pub struct SdkArgs {
    /// Unix socket on which other programs report security events (one JSON
    /// event a line, see README "SDK"), or `off` [default: /run/shrike/sdk.sock
    /// for `run`; off for `events`].
    #[arg(long, value_name = "PATH|off")]
    pub sdk_socket: Option<String>,
    /// SDK events per second from all clients together; more are rejected
    /// as "rate limited" [default: 1000].
    #[arg(long, value_name = "N")]
    pub sdk_rate: Option<u32>,
    /// SDK events per second from one connection [default: 200].
    #[arg(long, value_name = "N")]
    pub sdk_connection_rate: Option<u32>,
    /// An SDK connection with nothing to read for this long is closed
    /// [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub sdk_idle_timeout: Option<String>,
    /// A line must arrive whole within this time of its first byte, and a
    /// reply be taken as long, or the connection is closed [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub sdk_line_timeout: Option<String>,
    /// SDK clients connected at once; more are refused [default: 64].
    #[arg(long, value_name = "N")]
    pub sdk_max_connections: Option<usize>,
}

/// The same settings in the config file (top-level keys).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct FileSdk {
    pub sdk_socket: Option<String>,
    pub sdk_rate: Option<u32>,
    pub sdk_connection_rate: Option<u32>,
    pub sdk_idle_timeout: Option<String>,
    pub sdk_line_timeout: Option<String>,
    pub sdk_max_connections: Option<usize>,
}

/// Accepted events waiting for the pipeline; beyond, senders wait for their
/// replies (back-pressure, never a drop).
pub const QUEUE: usize = 1024;

/// Defaults, in one place.
pub mod defaults {
    pub const SOCKET: &str = shrike_common::sdk::DEFAULT_SOCKET;
    pub const RATE: u32 = 1000;
    pub const CONNECTION_RATE: u32 = 200;
    pub const IDLE_TIMEOUT: &str = "60s";
    pub const LINE_TIMEOUT: &str = "10s";
    pub const MAX_CONNECTIONS: usize = 64;
    /// Group allowed to use the socket, where it exists (the .deb creates it).
    pub const GROUP: &str = "shrike";
}

/// The resolved settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SdkConfig {
    /// `None`: off.
    pub socket: Option<PathBuf>,
    /// Whether the socket was asked for (flag or file): then a socket that
    /// cannot be made stops the agent; the default's only logs a warning
    /// (a container without /run, a read-only root).
    pub explicit: bool,
    pub rate: u32,
    pub connection_rate: u32,
    pub idle_timeout: Duration,
    pub line_timeout: Duration,
    pub max_connections: usize,
    /// Largest accepted event, in bytes of JSON with the sender's details:
    /// not a setting, `shrike run` sets it from max_message_size (an event
    /// that fits no message is refused here rather than dropped later).
    pub max_event_bytes: usize,
}

impl SdkConfig {
    /// Flags over the file over the defaults; `default_socket` is the
    /// command's (`run`: the standard path, `events`: none).
    pub fn resolve(
        args: &SdkArgs,
        file: &FileSdk,
        default_socket: Option<&str>,
    ) -> Result<SdkConfig, ConfigError> {
        let invalid =
            |setting: &str, reason: String| ConfigError::Invalid { setting: setting.into(), reason };
        let given = args.sdk_socket.clone().or(file.sdk_socket.clone());
        let explicit = given.is_some();
        let socket = match given.as_deref().or(default_socket) {
            None | Some("off") => None,
            Some("") => return Err(invalid("sdk_socket", "empty: a path, or off".into())),
            Some(p) => Some(PathBuf::from(p)),
        };
        let positive = |setting: &str, v: Option<u32>, d: u32| -> Result<u32, ConfigError> {
            match v.unwrap_or(d) {
                0 => Err(invalid(setting, "must be at least 1".into())),
                n => Ok(n),
            }
        };
        let max_connections =
            args.sdk_max_connections.or(file.sdk_max_connections).unwrap_or(defaults::MAX_CONNECTIONS);
        if !(1..=4096).contains(&max_connections) {
            return Err(invalid("sdk_max_connections", format!("{max_connections} is outside 1..=4096")));
        }
        Ok(SdkConfig {
            socket,
            explicit,
            rate: positive("sdk_rate", args.sdk_rate.or(file.sdk_rate), defaults::RATE)?,
            connection_rate: positive(
                "sdk_connection_rate",
                args.sdk_connection_rate.or(file.sdk_connection_rate),
                defaults::CONNECTION_RATE,
            )?,
            idle_timeout: duration_setting(
                "sdk_idle_timeout",
                args.sdk_idle_timeout
                    .as_deref()
                    .or(file.sdk_idle_timeout.as_deref())
                    .unwrap_or(defaults::IDLE_TIMEOUT),
            )?,
            line_timeout: duration_setting(
                "sdk_line_timeout",
                args.sdk_line_timeout
                    .as_deref()
                    .or(file.sdk_line_timeout.as_deref())
                    .unwrap_or(defaults::LINE_TIMEOUT),
            )?,
            max_connections,
            max_event_bytes: usize::MAX,
        })
    }
}

/// The SDK's counters: the stats line, the stop log and the metrics read
/// these (one bookkeeping).
#[derive(Debug, Default)]
pub struct SdkStats {
    /// Connections taken.
    pub connections: AtomicU64,
    /// Connections refused (max_connections reached).
    pub refused_connections: AtomicU64,
    /// Events accepted (replied ok, handed to the pipeline).
    pub accepted: AtomicU64,
    /// Lines rejected, for any reason (rate limits and too-long lines
    /// included).
    pub rejected: AtomicU64,
    /// Of `rejected`: over a rate limit.
    pub rate_limited: AtomicU64,
    /// Of `rejected`: over 64 KiB.
    pub too_long: AtomicU64,
    /// Connections closed for being idle or slow (a line or a reply).
    pub timed_out: AtomicU64,
}

/// [`SdkStats`] at one moment, for the stats line and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SdkCounts {
    pub connections: u64,
    pub refused_connections: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub rate_limited: u64,
    pub too_long: u64,
    pub timed_out: u64,
}

impl SdkStats {
    pub fn counts(&self) -> SdkCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SdkCounts {
            connections: g(&self.connections),
            refused_connections: g(&self.refused_connections),
            accepted: g(&self.accepted),
            rejected: g(&self.rejected),
            rate_limited: g(&self.rate_limited),
            too_long: g(&self.too_long),
            timed_out: g(&self.timed_out),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Why the socket cannot be served (the agent does not start: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("SDK socket {0}: another process is listening there (another agent?)")]
    InUse(PathBuf),
    #[error("SDK socket {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// The body of an `sdk` event: what the sender reported, with who sent it
/// in every item's ExtraDetails (the event's header has the sender too).
#[derive(Clone, Debug, PartialEq)]
pub struct Sdk {
    pub event: SdkEvent,
}

impl Serialize for Sdk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let e = &self.event;
        let mut st = s.serialize_struct("Sdk", 6)?;
        st.serialize_field("name", e.name())?;
        st.serialize_field("event_type", &e.event_type())?;
        st.serialize_field("category", &e.category())?;
        st.serialize_field("id", &e.id())?;
        st.serialize_field("timestamp", &shrike_common::schema::format_utc(&e.timestamp_utc()))?;
        st.serialize_field("payload", &e.payload_json())?;
        st.end()
    }
}

/// Token bucket: `rate` a second, bursts of up to one second's worth.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket { rate: f64::from(rate), tokens: f64::from(rate), last: Instant::now() }
    }

    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a reload may change while the socket stays (new connections take
/// the new per-connection rate).
#[derive(Clone, Copy, Debug)]
struct Limits {
    rate: u32,
    connection_rate: u32,
    idle_timeout: Duration,
    line_timeout: Duration,
}

impl Limits {
    fn of(cfg: &SdkConfig) -> Limits {
        Limits {
            rate: cfg.rate,
            connection_rate: cfg.connection_rate,
            idle_timeout: cfg.idle_timeout,
            line_timeout: cfg.line_timeout,
        }
    }
}

struct Shared {
    limits: std::sync::RwLock<Limits>,
    max_connections: usize,
    max_event_bytes: usize,
    stats: Arc<SdkStats>,
    global: Mutex<Bucket>,
    tx: mpsc::Sender<Event>,
}

impl Shared {
    fn limits(&self) -> Limits {
        self.limits.read().map(|l| *l).unwrap_or_else(|e| *e.into_inner())
    }
}

/// The running server; dropping it stops it and removes the socket file.
pub struct SdkServer {
    pub stats: Arc<SdkStats>,
    path: PathBuf,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SdkServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl SdkServer {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies reloaded settings: rates and timeouts at once; another
    /// socket or connection limit takes a restart (logged).
    pub fn update(&self, cfg: &SdkConfig) {
        if cfg.socket.as_deref() != Some(self.path.as_path())
            || cfg.max_connections != self.shared.max_connections
        {
            tracing::warn!("sdk_socket and sdk_max_connections take a restart: the running socket stays");
        }
        let new = Limits::of(cfg);
        if let Ok(mut l) = self.shared.limits.write() {
            *l = new;
        }
        if let Ok(mut g) = self.shared.global.lock() {
            *g = Bucket::new(new.rate);
        }
    }
}

/// [`start`], for the commands: a socket that was asked for and cannot be
/// made is a bad setting (exit 2); the default one is skipped with a warning.
pub fn start_or_skip(cfg: &SdkConfig, tx: mpsc::Sender<Event>) -> Result<Option<SdkServer>, ConfigError> {
    match start(cfg, tx) {
        Ok(s) => Ok(s),
        Err(e) if !cfg.explicit => {
            tracing::warn!("SDK socket off: {e} (set sdk_socket to another path, or off)");
            Ok(None)
        }
        Err(e) => Err(ConfigError::Invalid { setting: "sdk_socket".into(), reason: e.to_string() }),
    }
}

/// Binds the socket (mode 0660; group `shrike` when its folder is setgid
/// shrike, as the .deb makes it) and serves
/// it; accepted events go to `tx`. `None` when the SDK is off.
pub fn start(cfg: &SdkConfig, tx: mpsc::Sender<Event>) -> Result<Option<SdkServer>, SdkError> {
    let Some(path) = cfg.socket.clone() else { return Ok(None) };
    let io = |e| SdkError::Io(path.clone(), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir).map_err(io)?;
        // Reachable by the group's members (the agent's umask may be 077).
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    if path.exists() {
        // A socket nobody answers on is left over from an agent that died.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(SdkError::InUse(path));
        }
        std::fs::remove_file(&path).map_err(io)?;
    }
    let listener = UnixListener::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    // The group comes from the folder (setgid root:shrike, made by the
    // .deb's tmpfiles.d): no chown, which needs CAP_CHOWN and a system call
    // the systemd unit's filter refuses.
    let group = {
        use std::os::unix::fs::MetadataExt;
        let gid = std::fs::metadata(&path).map_err(io)?.gid();
        group_id(defaults::GROUP).filter(|g| *g == gid)
    };
    if group.is_none() {
        tracing::info!(
            socket = %path.display(),
            "SDK socket in the agent's group: only root can send (chgrp {} and chmod 2750 its folder to let the group in)",
            defaults::GROUP
        );
    }
    tracing::info!(
        socket = %path.display(),
        group = group.map(|_| defaults::GROUP),
        "SDK socket listening (mode 0660)"
    );
    let stats = Arc::new(SdkStats::default());
    let shared = Arc::new(Shared {
        limits: std::sync::RwLock::new(Limits::of(cfg)),
        max_connections: cfg.max_connections,
        max_event_bytes: cfg.max_event_bytes,
        stats: Arc::clone(&stats),
        global: Mutex::new(Bucket::new(cfg.rate)),
        tx,
    });
    let keep = Arc::clone(&shared);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin.
                    tracing::warn!("SDK socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => {
                    bump(&shared.stats.connections);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        serve(stream, &shared).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    bump(&shared.stats.refused_connections);
                    let n = shared.stats.refused_connections.load(Ordering::Relaxed);
                    let max = shared.max_connections;
                    if crate::telemetry::sampled(n) {
                        tracing::warn!(count = n, "SDK connection refused: {max} clients connected");
                    }
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let r = Reply::rejected(format!("too many connections: at most {max} at once"));
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&r.to_line()))
                            .await;
                    });
                }
            }
        }
    });
    Ok(Some(SdkServer { stats, path, shared: keep, task }))
}

/// The gid of `name` in /etc/group, if it exists.
fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Who is on the other end (SO_PEERCRED), read once per connection.
#[derive(Clone, Debug, Default)]
struct Sender {
    pid: u32,
    uid: u32,
    gid: u32,
    exe: Option<String>,
    comm: String,
}

impl Sender {
    fn of(stream: &UnixStream) -> Sender {
        let Ok(cred) = stream.peer_cred() else { return Sender::default() };
        let pid = cred.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
        let proc = PathBuf::from(format!("/proc/{pid}"));
        Sender {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            exe: (pid != 0)
                .then(|| std::fs::read_link(proc.join("exe")).ok())
                .flatten()
                .map(|p| crate::events::text::escape(p.as_os_str().as_encoded_bytes())),
            comm: std::fs::read(proc.join("comm"))
                .map(|b| crate::events::text::escape(b.strip_suffix(b"\n").unwrap_or(&b)))
                .unwrap_or_default(),
        }
    }

    /// Sets the sender's keys in every item, over anything the sender wrote.
    fn stamp(&self, ev: &mut SdkEvent) {
        ev.for_each_extra_details(|d| {
            d.insert(proto::SENDER_PID.into(), self.pid.to_string());
            d.insert(proto::SENDER_UID.into(), self.uid.to_string());
            d.insert(proto::SENDER_GID.into(), self.gid.to_string());
            match &self.exe {
                Some(exe) => d.insert(proto::SENDER_EXECUTABLE.into(), exe.clone()),
                None => d.remove(proto::SENDER_EXECUTABLE),
            };
        });
    }

    fn event(&self, ev: SdkEvent) -> Event {
        Event {
            time: chrono::Utc::now(),
            ktime_ns: 0,
            pid: self.pid,
            tid: self.pid,
            ppid: None,
            uid: self.uid,
            gid: self.gid,
            user: None,
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            body: Body::Sdk(Box::new(Sdk { event: ev })),
        }
    }
}

/// What ended a read.
enum Read {
    Line,
    Eof,
    Closed,
    /// Idle or slow: the reason, replied before closing.
    TimedOut(String),
}

/// One connection: lines in, one reply out per line.
async fn serve(stream: UnixStream, shared: &Shared) {
    let sender = Sender::of(&stream);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(16 << 10, r);
    let mut bucket = Bucket::new(shared.limits().connection_rate);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let (read, too_long) = read_line(&mut r, &mut line, shared).await;
        let reply = match read {
            Read::Closed => return,
            Read::TimedOut(why) => {
                let r = Reply::rejected(why).to_line();
                let _ = tokio::time::timeout(Duration::from_secs(1), w.write_all(&r)).await;
                return;
            }
            Read::Eof if line.is_empty() && !too_long => return,
            Read::Line | Read::Eof => handle(&line, too_long, &mut bucket, &sender, shared).await,
        };
        let Some(reply) = reply else { return };
        match tokio::time::timeout(shared.limits().line_timeout, w.write_all(&reply.to_line())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                // The client does not read its replies.
                bump(&shared.stats.timed_out);
                return;
            }
        }
        if matches!(read, Read::Eof) {
            return;
        }
    }
}

/// Reads one line into `line` (at most MAX_LINE bytes; the rest of a longer
/// line is consumed and dropped: `too_long`). Times out an idle connection
/// and a slow line, replying why.
async fn read_line(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    line: &mut Vec<u8>,
    shared: &Shared,
) -> (Read, bool) {
    let mut too_long = false;
    let idle_deadline = Instant::now() + shared.limits().idle_timeout;
    let mut line_deadline: Option<Instant> = None;
    loop {
        let deadline = line_deadline.unwrap_or(idle_deadline);
        let buf = match tokio::time::timeout_at(deadline, r.fill_buf()).await {
            Err(_) => {
                bump(&shared.stats.timed_out);
                let why = match line_deadline {
                    Some(_) => {
                        format!(
                            "timed out: a line must arrive whole within {:?}",
                            shared.limits().line_timeout
                        )
                    }
                    None => format!("timed out: nothing sent for {:?}", shared.limits().idle_timeout),
                };
                tracing::debug!("SDK connection closed: {why}");
                return (Read::TimedOut(why), too_long);
            }
            Ok(Err(_)) => return (Read::Closed, too_long),
            Ok(Ok(b)) => b,
        };
        if buf.is_empty() {
            return (Read::Eof, too_long);
        }
        line_deadline.get_or_insert_with(|| Instant::now() + shared.limits().line_timeout);
        let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > proto::MAX_LINE {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = end.unwrap_or(buf.len());
        r.consume(used);
        if end.is_some() {
            return (Read::Line, too_long);
        }
    }
}

/// The reply to one line (`None`: the agent is stopping, close).
async fn handle(
    line: &[u8],
    too_long: bool,
    bucket: &mut Bucket,
    sender: &Sender,
    shared: &Shared,
) -> Option<Reply> {
    let stats = &shared.stats;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let now = Instant::now();
    let rejected = |why: String| {
        bump(&stats.rejected);
        Some(Reply::rejected(why))
    };
    if too_long {
        bump(&stats.too_long);
        return rejected(format!("line too long: more than {} bytes", proto::MAX_LINE));
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return rejected("empty line: one JSON event a line".into());
    }
    if !bucket.take(now) {
        bump(&stats.rate_limited);
        return rejected(format!(
            "rate limited: more than {} events a second on this connection",
            shared.limits().connection_rate
        ));
    }
    let global_ok = shared.global.lock().map(|mut g| g.take(now)).unwrap_or(true);
    if !global_ok {
        bump(&stats.rate_limited);
        return rejected(format!(
            "rate limited: more than {} events a second from all clients",
            shared.limits().rate
        ));
    }
    match proto::parse_line(line, chrono::Utc::now()) {
        Err(e) => rejected(e),
        Ok(mut ev) => {
            sender.stamp(&mut ev);
            if shared.max_event_bytes < usize::MAX {
                let size = serde_json::to_vec(&ev).map_or(usize::MAX, |v| v.len());
                if size > shared.max_event_bytes {
                    return rejected(format!(
                        "Payload: the event is {size} bytes with its sender's details; a message holds at most {}",
                        shared.max_event_bytes
                    ));
                }
            }
            let id = ev.id();
            // Waits while the pipeline is behind: back-pressure on the
            // sender, never a silent drop.
            if shared.tx.send(sender.event(ev)).await.is_err() {
                return None;
            }
            bump(&stats.accepted);
            Some(Reply::accepted(id))
        }
    }
}

#[cfg(test)]
mod tests;
