//! The on-disk spool (store and forward): every message is written here before
//! it is published and removed only when the broker acknowledged it.
//!
//! Format, kept simple on purpose (no crate fit: the queue crates on crates.io
//! either lack per-record integrity checks or priority-aware eviction):
//! one file per message in the spool directory, named `{seq:020}.{h|l}.msg`
//! (`seq` increasing, `h`/`l` the priority). A file is
//!
//! ```text
//! magic "SHRKSPL2" (8) | payload length u32 LE | events u32 LE | flags u32 LE
//!   | CRC-32 of (length, events, flags, payload) u32 LE | payload
//! ```
//!
//! `events` is how many collected events the message carries (the drop
//! statistics count events, not messages); flag 1 marks a message carrying the
//! agent's own health statistics (if it is dropped, its counts are resent in
//! the next one). Files of the first format (`SHRKSPL1`, a 16-byte header
//! without events and flags) are still read; each counts as one event.
//!
//! **Off the event path.** Writes and fsyncs run on a thread of their own
//! ([`Spool::submit`] only queues): a slow disk never stalls the runtime
//! thread that reads the kernel's ring buffer. The thread takes every message
//! queued meanwhile as one group, writes each to its final name (`O_EXCL`: a
//! name that exists is never overwritten) and makes the group durable with one
//! `syncfs` (group commit: one flush for many messages). Only then does the
//! publisher see the group's messages: nothing is sent, so nothing is
//! acknowledged to anyone, before it is durable. Messages keep their order
//! (sequence numbers follow the queue). The queue is bounded (messages and
//! bytes); when it is full the oldest low-priority message queued is dropped
//! (then the oldest high-priority one), counted and logged. Removals after
//! PUBACKs and the reads of a backlog run on the same thread too.
//!
//! A torn write (kill -9, power loss) leaves at most a file whose length or
//! CRC does not match: it is detected at open (header and length) or when it
//! is read (CRC), removed and counted (reported to the hub as dropped events);
//! no other message is affected. A record claiming more than the largest
//! message is rejected without reading it. When the spool is full, or the file
//! system is (ENOSPC), the oldest low-priority messages are dropped first,
//! then the oldest high-priority ones, and every drop is counted.
//!
//! The directory is locked (`flock` on its `lock` file) for as long as the
//! spool is open: a second agent on the same directory is refused.
//!
//! A message may name the journal records it holds (`journal/cover.rs`): the
//! spool adds them to a set it writes to `covered.a`/`covered.b` with each
//! group, so that a start after a kill replays none of them from the journal.

use std::{
    collections::{BTreeMap, VecDeque},
    fs::{self, File},
    io::{Read, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock},
    thread::JoinHandle,
};

use crate::journal::cover::{Cover, Covered, MAX_FILE as MAX_COVER_FILE};

const MAGIC_V1: &[u8; 8] = b"SHRKSPL1";
const HEADER_V1: usize = 16;
const MAGIC: &[u8; 8] = b"SHRKSPL2";
/// Header bytes of a record in the current format.
pub const HEADER: usize = 24;
/// Flag: the message carries the agent's health statistics.
pub const FLAG_HEALTH: u32 = 1;
/// The lock file's name in the spool directory.
pub const LOCK_FILE: &str = "lock";

/// Payloads kept in memory for the publisher (just written, or read ahead by
/// the spool thread), at most this many bytes (at least one message).
const CACHE_BYTES: u64 = 1 << 20;
/// Read ahead at most this many records at a time.
const READ_AHEAD: usize = 64;
/// The queue in front of the spool thread: at most this many messages...
const QUEUE_MESSAGES: usize = 1024;
/// ...and this many bytes (or two of the largest messages, if more).
const QUEUE_BYTES: u64 = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    High,
    Low,
}

impl Priority {
    fn tag(self) -> &'static str {
        match self {
            Priority::High => "h",
            Priority::Low => "l",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The directory cannot be used (missing and not creatable, not a
    /// directory, read-only, not writable without CAP_DAC_OVERRIDE).
    #[error("spool_dir {}: {}", .0.display(), .1)]
    Unusable(PathBuf, String),
    /// Another process holds the directory's lock.
    #[error(
        "spool_dir {} is in use by another shrike agent{}: two agents cannot share a spool; give each its own spool_dir",
        .0.display(), .1.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse(PathBuf, Option<u32>),
    #[error("writing spool file {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("message of {size} bytes does not fit a spool of {capacity} bytes")]
    TooLarge { size: u64, capacity: u64 },
    #[error("spool record {0} is corrupt ({1}); removed")]
    Corrupt(u64, String),
    #[error("spool record {0} not found")]
    Missing(u64),
}

/// What the spool knows of a message besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Collected events in it (what a drop of it loses).
    pub events: u64,
    /// It carries health statistics (see [`Spool::on_health_dropped`]).
    pub health: bool,
}

impl Default for Meta {
    /// One event, no health statistics.
    fn default() -> Self {
        Meta { events: 1, health: false }
    }
}

/// Counters reported in the agent's health events. Messages and, apart, the
/// events they carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    /// Messages dropped for room: spool full, file system full, queue full.
    pub dropped_low: u64,
    pub dropped_high: u64,
    /// The events in the messages dropped (for room, unwritable, corrupt).
    pub dropped_low_events: u64,
    pub dropped_high_events: u64,
    /// Of the drops: for lack of room on the file system (ENOSPC, EDQUOT).
    pub disk_full: u64,
    /// Of the drops: the queue in front of the spool thread was full.
    pub queue_full: u64,
    /// Torn or corrupt records found (and removed) at open or read.
    pub corrupt: u64,
    /// Messages that could not be written or made durable (I/O errors).
    pub write_errors: u64,
    /// Entries with a spool file's name that are not spool files (a
    /// directory...): moved aside to `NAME.foreign`, or skipped.
    pub foreign: u64,
    /// `syncfs` calls, and the messages they made durable (their ratio is
    /// the group-commit size).
    pub syncs: u64,
    pub written: u64,
}

/// Options of [`Spool::open`].
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Bytes on disk, headers included.
    pub capacity: u64,
    /// The largest payload a record may have; a record claiming more is corrupt.
    pub max_payload: usize,
}

impl Options {
    pub fn new(capacity: u64, max_payload: usize) -> Options {
        Options { capacity, max_payload }
    }
}

/// A capacity alone: any payload that fits it.
impl From<u64> for Options {
    fn from(capacity: u64) -> Options {
        Options { capacity, max_payload: usize::try_from(capacity).unwrap_or(usize::MAX) }
    }
}

/// Where a record is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Taken off the queue, not written yet.
    Reserved,
    /// Written, not yet durable.
    Written,
    /// Durable: the publisher may send it.
    Durable,
}

#[derive(Clone, Debug)]
struct Entry {
    prio: Priority,
    /// Bytes on disk (header included).
    size: u64,
    meta: Meta,
    stage: Stage,
    /// The payload, while it is in memory.
    cached: Option<Arc<[u8]>>,
}

/// A message waiting for the spool thread.
struct Queued {
    ticket: u64,
    prio: Priority,
    meta: Meta,
    payload: Arc<[u8]>,
    /// The journal records the message holds (journal/cover.rs).
    cover: Option<Box<Cover>>,
}

/// Everything behind the spool's one lock: memory only (no I/O is done while
/// holding it, so the publisher never waits on the disk through it).
struct State {
    entries: BTreeMap<u64, Entry>,
    /// Bytes on disk of the entries, reserved ones included.
    used: u64,
    next_seq: u64,
    cached_bytes: u64,
    stats: SpoolStats,
    queue: VecDeque<Queued>,
    queued_bytes: u64,
    /// Files of acknowledged (or evicted) records, to remove.
    unlink: Vec<(u64, Priority)>,
    /// The publisher waits for records from this sequence number on to be read.
    read_from: Option<u64>,
    next_ticket: u64,
    /// Every message submitted up to this ticket is durable or counted as dropped.
    settled: u64,
    /// The spool thread is working on a group (for [`Spool::flush`]).
    busy: bool,
    stop: bool,
    /// Tests: the spool thread takes no work (a stalled disk).
    paused: bool,
    /// Groups that found the spool full (the log's sampling).
    full_groups: u64,
    /// The journal records of every message made durable (journal/cover.rs),
    /// written to `covered.a`/`covered.b` before any of them is sent.
    covered: Covered,
    cover_errors: u64,
}

struct Inner {
    dir: PathBuf,
    opts: Options,
    state: Mutex<State>,
    /// Wakes the spool thread (work queued) and [`Spool::flush`] (work done).
    work: Condvar,
    done: Condvar,
    /// Woken when records become durable or were read: the publisher.
    waker: OnceLock<Arc<tokio::sync::Notify>>,
    health_dropped: OnceLock<fn(&[u8])>,
    /// Held open for the directory's flock and for syncfs.
    _lock: File,
    dir_fd: File,
}

/// The spool: an index in memory, files on disk, and the thread that does
/// the disk's work. Dropping it writes what is queued and stops the thread.
pub struct Spool {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

fn file_name(seq: u64, prio: Priority) -> String {
    format!("{seq:020}.{}.msg", prio.tag())
}

fn parse_name(name: &str) -> Option<(u64, Priority)> {
    let stem = name.strip_suffix(".msg")?;
    let (seq, tag) = stem.split_once('.')?;
    let prio = match tag {
        "h" => Priority::High,
        "l" => Priority::Low,
        _ => return None,
    };
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, prio))
}

/// A record parsed from its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub events: u64,
    pub flags: u32,
    pub payload: &'a [u8],
}

/// The header's claims: (header length, payload length, events, flags, CRC).
fn parse_header(head: &[u8]) -> Result<(usize, usize, u64, u32, u32), String> {
    let u32_at = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    if head.len() >= HEADER && &head[..8] == MAGIC {
        Ok((HEADER, u32_at(8) as usize, u64::from(u32_at(12)), u32_at(16), u32_at(20)))
    } else if head.len() >= HEADER_V1 && &head[..8] == MAGIC_V1 {
        Ok((HEADER_V1, u32_at(8) as usize, 1, 0, u32_at(12)))
    } else if head.len() < HEADER_V1 || (&head[..8] == MAGIC && head.len() < HEADER) {
        Err("shorter than its header".into())
    } else {
        Err("bad magic".into())
    }
}

/// The CRC of a record: over the header's fields after the magic (length,
/// events, flags; none in the first format) and the payload.
fn crc(fields: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(fields);
    h.update(payload);
    h.finalize()
}

/// Parses and checks a whole spool file (either format). Bounded: a payload
/// over `max_payload` is an error, whatever the bytes (also the fuzz target's
/// entry point).
pub fn parse_record(bytes: &[u8], max_payload: usize) -> Result<Record<'_>, String> {
    let (hlen, len, events, flags, sum) = parse_header(bytes)?;
    if len > max_payload {
        return Err(format!("claims {len} bytes, over the largest message ({max_payload})"));
    }
    if bytes.len() != hlen + len {
        return Err(format!("length {} but header says {len}", bytes.len().saturating_sub(hlen)));
    }
    let payload = &bytes[hlen..];
    let fields = if hlen == HEADER { &bytes[8..20] } else { &[][..] };
    if crc(fields, payload) != sum {
        return Err("CRC mismatch".into());
    }
    Ok(Record { events, flags, payload })
}

/// A record's bytes in the current format.
pub fn encode_record(meta: Meta, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(meta.events.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    out.extend_from_slice(&u32::from(meta.health).to_le_bytes());
    let sum = crc(&out[8..20], payload);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Opens a spool file without following a link, as a regular file only.
fn open_record(path: &Path) -> std::io::Result<(File, u64)> {
    let f = File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((f, md.len()))
}

/// Checks a file's header and length without reading its payload: its
/// (events, flags, bytes on disk).
fn check_file(path: &Path, max_payload: usize) -> Result<(u64, u32, u64), String> {
    let (mut f, size) = open_record(path).map_err(|e| e.to_string())?;
    let mut head = [0u8; HEADER];
    let n = read_up_to(&mut f, &mut head).map_err(|e| e.to_string())?;
    let (hlen, len, events, flags, _) = parse_header(&head[..n])?;
    if len > max_payload {
        return Err(format!("claims {len} bytes, over the largest message ({max_payload})"));
    }
    if size != (hlen + len) as u64 {
        return Err(format!("length {} but header says {len}", size.saturating_sub(hlen as u64)));
    }
    Ok((events, flags, size))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads and checks a spool file, never more than its header allows (and
/// never a payload over `max_payload`).
fn read_file(path: &Path, max_payload: usize) -> Result<Vec<u8>, String> {
    let (mut f, size) = open_record(path).map_err(|e| e.to_string())?;
    let mut head = [0u8; HEADER];
    let n = read_up_to(&mut f, &mut head[..HEADER_V1]).map_err(|e| e.to_string())?;
    let mut hn = n;
    if n == HEADER_V1 && &head[..8] == MAGIC {
        hn += read_up_to(&mut f, &mut head[HEADER_V1..]).map_err(|e| e.to_string())?;
    }
    let (hlen, len, _, _, _) = parse_header(&head[..hn])?;
    if len > max_payload {
        return Err(format!("claims {len} bytes, over the largest message ({max_payload})"));
    }
    if size != (hlen + len) as u64 {
        return Err(format!("length {} but header says {len}", size.saturating_sub(hlen as u64)));
    }
    let mut bytes = Vec::with_capacity(hlen + len);
    bytes.extend_from_slice(&head[..hlen]);
    bytes.resize(hlen + len, 0);
    f.read_exact(&mut bytes[hlen..]).map_err(|e| e.to_string())?;
    parse_record(&bytes, max_payload)?;
    bytes.drain(..hlen);
    Ok(bytes)
}

/// Whether `md` (a directory) lets the effective user create files in it by
/// its mode bits alone: the running agent drops CAP_DAC_OVERRIDE after the
/// probes are attached, so root's override must not count.
fn writable_by_mode(md: &fs::Metadata) -> bool {
    // SAFETY: plain getters without arguments.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mode = md.mode();
    if md.uid() == uid {
        mode & 0o300 == 0o300
    } else if md.gid() == gid || in_groups(md.gid()) {
        mode & 0o030 == 0o030
    } else {
        mode & 0o003 == 0o003
    }
}

/// Whether `gid` is one of the process's supplementary groups.
fn in_groups(gid: libc::gid_t) -> bool {
    let mut groups = [0 as libc::gid_t; 256];
    // SAFETY: the buffer holds `groups.len()` entries.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}

/// Creates `dir` if needed (0700), checks it is a directory this agent can
/// write, and takes its lock.
fn prepare_dir(dir: &Path) -> Result<(File, File), SpoolError> {
    let unusable = |why: String| SpoolError::Unusable(dir.to_path_buf(), why);
    if fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(unusable("not a directory".into()));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| unusable(format!("cannot create it: {e}")))?;
    let md = fs::metadata(dir).map_err(|e| unusable(e.to_string()))?;
    if !md.is_dir() {
        return Err(unusable("not a directory".into()));
    }
    if !writable_by_mode(&md) {
        return Err(unusable(format!(
            "not writable by this user (mode {:o}, owner uid {}); the agent writes its spool there",
            md.mode() & 0o7777,
            md.uid()
        )));
    }
    let lock_path = dir.join(LOCK_FILE);
    let mut lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|e| unusable(format!("cannot create its lock file: {e}")))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut s = String::new();
            let _ = lock.read_to_string(&mut s);
            return Err(SpoolError::InUse(dir.to_path_buf(), s.trim().parse().ok()));
        }
        return Err(unusable(format!("cannot lock {}: {e}", lock_path.display())));
    }
    // Our pid, for the message a second agent gets; the write also proves
    // the file system writable (a read-only one fails here).
    let pid = format!("{}\n", std::process::id());
    lock.set_len(0)
        .and_then(|()| lock.write_all(pid.as_bytes()))
        .and_then(|()| lock.sync_data())
        .map_err(|e| unusable(format!("cannot write its lock file: {e}")))?;
    let dir_fd = File::open(dir).map_err(|e| unusable(e.to_string()))?;
    Ok((lock, dir_fd))
}

impl State {
    fn count_drop(&mut self, prio: Priority, events: u64) {
        match prio {
            Priority::Low => {
                self.stats.dropped_low += 1;
                self.stats.dropped_low_events += events;
            }
            Priority::High => {
                self.stats.dropped_high += 1;
                self.stats.dropped_high_events += events;
            }
        }
    }

    fn count_lost_events(&mut self, prio: Priority, events: u64) {
        match prio {
            Priority::Low => self.stats.dropped_low_events += events,
            Priority::High => self.stats.dropped_high_events += events,
        }
    }

    /// Forgets `seq`; its file, if written, is to be removed by the caller.
    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let e = self.entries.remove(&seq)?;
        self.used -= e.size;
        if let Some(c) = &e.cached {
            self.cached_bytes -= c.len() as u64;
        }
        Some(e)
    }

    /// The record to drop for room: the oldest low-priority one, else (when
    /// `high_too`) the oldest high-priority one; never `except`; with
    /// `on_disk`, only records that have a file (dropping the others frees
    /// no disk space).
    fn victim(&self, except: Option<u64>, high_too: bool, on_disk: bool) -> Option<u64> {
        let others = || {
            self.entries
                .iter()
                .filter(move |(s, e)| Some(**s) != except && !(on_disk && e.stage == Stage::Reserved))
        };
        others()
            .find(|(_, e)| e.prio == Priority::Low)
            .or_else(|| if high_too { others().next() } else { None })
            .map(|(s, _)| *s)
    }

    fn pending(&self) -> u64 {
        (self.entries.len() + self.queue.len()) as u64
    }
}

/// A record dropped for room: what its drop must report, and its file.
struct Victim {
    seq: u64,
    entry: Entry,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, resuming what an earlier run left,
    /// and starts its thread. The directory must be writable and not in use.
    pub fn open(dir: impl Into<PathBuf>, opts: impl Into<Options>) -> Result<Spool, SpoolError> {
        let dir = dir.into();
        let opts = opts.into();
        let (lock, dir_fd) = prepare_dir(&dir)?;
        let mut st = State {
            entries: BTreeMap::new(),
            used: 0,
            next_seq: 0,
            cached_bytes: 0,
            stats: SpoolStats::default(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            unlink: Vec::new(),
            read_from: None,
            next_ticket: 1,
            settled: 0,
            busy: false,
            stop: false,
            paused: false,
            full_groups: 0,
            covered: read_covered(&dir),
            cover_errors: 0,
        };
        let rd = fs::read_dir(&dir).map_err(|e| SpoolError::Unusable(dir.clone(), e.to_string()))?;
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = ent.path();
            if let Some(stem) = name.strip_suffix(".tmp") {
                // A write of the first format that never completed.
                if ent.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(&path).is_ok() {
                    st.stats.corrupt += 1;
                    if let Some((seq, prio)) = parse_name(stem) {
                        st.count_lost_events(prio, 1);
                        st.next_seq = st.next_seq.max(seq + 1);
                    }
                }
                continue;
            }
            let Some((seq, prio)) = parse_name(&name) else { continue };
            // Whatever has a spool file's name, its number is never used again.
            st.next_seq = st.next_seq.max(seq + 1);
            if !ent.file_type().is_ok_and(|t| t.is_file()) {
                st.stats.foreign += 1;
                let aside = dir.join(format!("{name}.foreign"));
                match fs::rename(&path, &aside) {
                    Ok(()) => tracing::warn!(
                        entry = %path.display(),
                        moved_to = %aside.display(),
                        "an entry with a spool file's name is not a file: moved aside"
                    ),
                    Err(e) => tracing::warn!(
                        entry = %path.display(),
                        "an entry with a spool file's name is not a file; skipped (cannot move it aside: {e})"
                    ),
                }
                continue;
            }
            match check_file(&path, opts.max_payload) {
                Ok((events, flags, size)) => {
                    let meta = Meta { events, health: flags & FLAG_HEALTH != 0 };
                    st.entries.insert(seq, Entry { prio, size, meta, stage: Stage::Durable, cached: None });
                    st.used += size;
                }
                Err(why) => {
                    let _ = fs::remove_file(&path);
                    st.stats.corrupt += 1;
                    st.count_lost_events(prio, 1);
                    let n = st.stats.corrupt;
                    if crate::telemetry::sampled(n) {
                        tracing::warn!(file = %path.display(), count = n, "removing corrupt spool record: {why}");
                    }
                }
            }
        }
        if st.stats.corrupt > 0 && !st.covered.epochs.is_empty() {
            // Records damaged after they were written (a kill tears only
            // records the set does not name yet): their events may still be
            // in the journal, which then delivers them again (duplicates of
            // the spool's other records rather than a loss).
            st.covered = Covered::default();
            tracing::warn!(
                dir = %dir.display(),
                "damaged spool records: the journal delivers again everything it holds"
            );
        }
        let inner = Arc::new(Inner {
            dir,
            opts,
            state: Mutex::new(st),
            work: Condvar::new(),
            done: Condvar::new(),
            waker: OnceLock::new(),
            health_dropped: OnceLock::new(),
            _lock: lock,
            dir_fd,
        });
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("shrike-spool".into())
            .spawn(move || worker.run())
            .map_err(|e| SpoolError::Unusable(inner.dir.clone(), format!("cannot start its thread: {e}")))?;
        Ok(Spool { inner, thread: Some(thread) })
    }

    /// Wakes `notify` whenever records become ready to send.
    pub fn set_waker(&self, notify: Arc<tokio::sync::Notify>) {
        let _ = self.inner.waker.set(notify);
    }

    /// Called with the payload of every dropped message that carried health
    /// statistics (flagged with [`Meta::health`]), so its counts can be
    /// reported again.
    pub fn on_health_dropped(&self, f: fn(&[u8])) {
        let _ = self.inner.health_dropped.set(f);
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state()
    }

    pub fn stats(&self) -> SpoolStats {
        self.state().stats
    }

    /// Messages not yet acknowledged: spooled, or queued for the disk.
    pub fn len(&self) -> usize {
        self.state().pending() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes used on disk.
    pub fn used(&self) -> u64 {
        self.state().used
    }

    /// Sequence numbers spooled, oldest first (durable or being written).
    pub fn pending(&self) -> Vec<(u64, Priority)> {
        self.state().entries.iter().map(|(s, e)| (*s, e.prio)).collect()
    }

    /// Queues a message for the disk; never waits for it. Returns its ticket:
    /// [`durable_through`](Self::durable_through) says when it is settled
    /// (durable, or dropped and counted). A full queue makes room by dropping
    /// its oldest low-priority message (counted).
    pub fn submit(&self, prio: Priority, payload: &[u8], meta: Meta) -> Result<u64, SpoolError> {
        self.submit_covered(prio, payload, meta, None)
    }

    /// [`submit`](Self::submit) a message holding the journal records `cover`:
    /// once it is durable, a start after a kill does not replay them.
    pub fn submit_covered(
        &self,
        prio: Priority,
        payload: &[u8],
        meta: Meta,
        cover: Option<Cover>,
    ) -> Result<u64, SpoolError> {
        let size = (HEADER + payload.len()) as u64;
        let capacity = self.inner.opts.capacity;
        if size > capacity {
            return Err(SpoolError::TooLarge { size, capacity });
        }
        let max_bytes = QUEUE_BYTES.max(2 * (HEADER + self.inner.opts.max_payload) as u64);
        let mut dropped = Vec::new();
        let ticket = {
            let mut st = self.state();
            while !st.queue.is_empty()
                && (st.queue.len() >= QUEUE_MESSAGES || st.queued_bytes + size > max_bytes)
            {
                let at = st.queue.iter().position(|q| q.prio == Priority::Low).unwrap_or(0);
                let Some(q) = st.queue.remove(at) else { break };
                st.queued_bytes -= q.payload.len() as u64;
                st.count_drop(q.prio, q.meta.events);
                st.stats.queue_full += 1;
                // Settled once the writer has passed it (see write_group).
                dropped.push(q);
            }
            let ticket = st.next_ticket;
            st.next_ticket += 1;
            st.queued_bytes += payload.len() as u64;
            let cover = cover.filter(|c| !c.is_empty()).map(Box::new);
            st.queue.push_back(Queued { ticket, prio, meta, payload: Arc::from(payload), cover });
            if !dropped.is_empty() {
                let n = st.stats.queue_full;
                if crate::telemetry::sampled(n) {
                    tracing::warn!(
                        count = n,
                        "spool queue full (the disk is slower than the messages): dropped the oldest queued message"
                    );
                }
            }
            ticket
        };
        self.inner.work.notify_one();
        for q in dropped {
            self.inner.report_health(&q.meta, &q.payload);
        }
        Ok(ticket)
    }

    /// Every message submitted up to this ticket is durable, or was dropped
    /// and counted.
    pub fn durable_through(&self) -> u64 {
        self.state().settled
    }

    /// The journal's committed watermark for `epoch`: the set forgets what
    /// is below it (written with the next group).
    pub fn forget_covered_below(&self, epoch: u64, seq: u64) {
        self.state().covered.remove_below(epoch, seq);
    }

    /// The journal records of the messages made durable (this run's and what
    /// `covered.a`/`covered.b` kept of earlier ones): a journal's recovery
    /// skips them.
    pub fn covered(&self) -> Covered {
        self.state().covered.clone()
    }

    /// Waits until everything submitted so far is settled (and the removals
    /// asked for are done).
    pub fn flush(&self) {
        let mut st = self.state();
        while !st.queue.is_empty() || st.busy || !st.unlink.is_empty() {
            self.inner.work.notify_one();
            st = self.inner.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stores a message durably; returns its sequence number (submit, then
    /// wait for the disk: for tests and tools, not the event path).
    pub fn push(&mut self, prio: Priority, payload: &[u8]) -> Result<u64, SpoolError> {
        self.push_with(prio, payload, Meta::default())
    }

    pub fn push_with(&mut self, prio: Priority, payload: &[u8], meta: Meta) -> Result<u64, SpoolError> {
        let before = self.state().next_seq;
        self.submit(prio, payload, meta)?;
        self.flush();
        let st = self.state();
        st.entries.range(before..).next_back().map(|(s, _)| *s).ok_or_else(|| {
            SpoolError::Write(self.inner.dir.clone(), std::io::Error::other("message dropped"))
        })
    }

    /// The oldest durable record from `from` on, with its payload, for the
    /// publisher. None when there is none yet, or when it must be read from
    /// disk first: the spool thread reads it and wakes the waker.
    pub fn next_ready(&self, from: u64) -> Option<(u64, Vec<u8>)> {
        let mut st = self.state();
        let (seq, e) = st.entries.range_mut(from..).next()?;
        let seq = *seq;
        if e.stage != Stage::Durable {
            return None;
        }
        match e.cached.take() {
            Some(p) => {
                st.cached_bytes -= p.len() as u64;
                Some((seq, p.to_vec()))
            }
            None => {
                st.read_from = Some(seq);
                drop(st);
                self.inner.work.notify_one();
                None
            }
        }
    }

    /// Reads a stored message now, checking its integrity (for tests and
    /// tools). A corrupt record is removed, counted and reported as an error.
    pub fn read(&mut self, seq: u64) -> Result<Vec<u8>, SpoolError> {
        let prio = self.state().entries.get(&seq).ok_or(SpoolError::Missing(seq))?.prio;
        let path = self.inner.dir.join(file_name(seq, prio));
        read_file(&path, self.inner.opts.max_payload).map_err(|why| {
            self.inner.drop_corrupt(seq, &why);
            SpoolError::Corrupt(seq, why)
        })
    }

    /// The broker acknowledged `seq`: forget it (the spool thread removes its file).
    pub fn ack(&self, seq: u64) {
        let mut st = self.state();
        if let Some(e) = st.remove(seq) {
            st.unlink.push((seq, e.prio));
            drop(st);
            self.inner.work.notify_one();
        }
    }
}

impl Drop for Spool {
    /// Writes what is queued, removes what was acknowledged, stops the thread
    /// (and releases the directory's lock).
    fn drop(&mut self) {
        self.inner.state().stop = true;
        self.inner.work.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    /// A panic elsewhere while holding the lock leaves the state consistent
    /// (memory only, each step complete), so poisoning is ignored.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn pause(&self, paused: bool) {
        self.state().paused = paused;
        self.work.notify_all();
    }

    fn path(&self, seq: u64, prio: Priority) -> PathBuf {
        self.dir.join(file_name(seq, prio))
    }

    fn wake_publisher(&self) {
        if let Some(w) = self.waker.get() {
            w.notify_one();
        }
    }

    fn report_health(&self, meta: &Meta, payload: &[u8]) {
        if meta.health
            && let Some(f) = self.health_dropped.get()
        {
            f(payload);
        }
    }

    /// A dropped record's payload for the health hook (memory, else its file).
    fn victim_payload(&self, v: &Victim) -> Option<Vec<u8>> {
        if !v.entry.meta.health {
            return None;
        }
        match &v.entry.cached {
            Some(p) => Some(p.to_vec()),
            None if v.entry.stage != Stage::Reserved => {
                read_file(&self.path(v.seq, v.entry.prio), self.opts.max_payload).ok()
            }
            None => None,
        }
    }

    /// Reports and removes records dropped for room (not holding the lock).
    fn discard(&self, victims: Vec<Victim>) {
        for v in victims {
            if let Some(p) = self.victim_payload(&v) {
                self.report_health(&v.entry.meta, &p);
            }
            if v.entry.stage != Stage::Reserved {
                let _ = fs::remove_file(self.path(v.seq, v.entry.prio));
            }
        }
    }

    fn drop_corrupt(&self, seq: u64, why: &str) {
        let mut st = self.state();
        let Some(e) = st.remove(seq) else { return };
        st.stats.corrupt += 1;
        st.count_lost_events(e.prio, e.meta.events);
        let n = st.stats.corrupt;
        drop(st);
        let path = self.path(seq, e.prio);
        let _ = fs::remove_file(&path);
        if crate::telemetry::sampled(n) {
            tracing::warn!(file = %path.display(), count = n, "removing corrupt spool record: {why}");
        }
    }

    /// The spool thread: removals, then the queued messages as one group,
    /// then the reads the publisher waits for; until stopped with nothing left.
    fn run(self: Arc<Self>) {
        loop {
            let (unlink, group, read_from) = {
                let mut st = self.state();
                loop {
                    let work = !st.unlink.is_empty() || !st.queue.is_empty() || st.read_from.is_some();
                    if work && (st.stop || !st.paused) {
                        break;
                    }
                    st.busy = false;
                    self.done.notify_all();
                    if st.stop {
                        return;
                    }
                    st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                st.busy = true;
                let unlink = std::mem::take(&mut st.unlink);
                let group: Vec<Queued> = st.queue.drain(..).collect();
                st.queued_bytes = 0;
                (unlink, group, st.read_from.take())
            };
            for (seq, prio) in unlink {
                let _ = fs::remove_file(self.path(seq, prio));
            }
            if !group.is_empty() {
                self.write_group(group);
            }
            if let Some(from) = read_from {
                self.read_ahead(from);
            }
        }
    }

    /// Writes a group of messages and makes them durable with one syncfs.
    fn write_group(&self, group: Vec<Queued>) {
        let last_ticket = group.last().map_or(0, |q| q.ticket);
        // Reserve: sequence numbers in queue order, room made per the policy.
        let mut victims = Vec::new();
        let mut seqs = Vec::with_capacity(group.len());
        {
            let mut st = self.state();
            for q in &group {
                let size = (HEADER + q.payload.len()) as u64;
                while st.used + size > self.opts.capacity {
                    let Some(seq) = st.victim(None, true, false) else { break };
                    let entry = st.remove(seq).expect("victim exists");
                    st.count_drop(entry.prio, entry.meta.events);
                    victims.push(Victim { seq, entry });
                }
                let seq = st.next_seq;
                st.next_seq += 1;
                st.used += size;
                st.cached_bytes += q.payload.len() as u64;
                st.entries.insert(
                    seq,
                    Entry {
                        prio: q.prio,
                        size,
                        meta: q.meta,
                        stage: Stage::Reserved,
                        cached: Some(Arc::clone(&q.payload)),
                    },
                );
                seqs.push(seq);
            }
            if !victims.is_empty() {
                // Sampled per group that met a full spool, not per drop.
                st.full_groups += 1;
                if crate::telemetry::sampled(st.full_groups) {
                    tracing::warn!(
                        dropped = victims.len(),
                        dropped_total = st.stats.dropped_low + st.stats.dropped_high,
                        count = st.full_groups,
                        "spool full: dropped the oldest messages"
                    );
                }
            }
        }
        self.discard(victims);

        let mut written = Vec::with_capacity(seqs.len());
        // The tickets of `written`, for their covers.
        let mut written_tickets = Vec::with_capacity(seqs.len());
        for (q, mut seq) in group.iter().zip(seqs) {
            let bytes = encode_record(q.meta, &q.payload);
            loop {
                if !self.state().entries.contains_key(&seq) {
                    // Dropped for room meanwhile (counted then).
                    break;
                }
                let path = self.path(seq, q.prio);
                match write_new(&path, &bytes) {
                    Ok(()) => {
                        if let Some(e) = self.state().entries.get_mut(&seq) {
                            e.stage = Stage::Written;
                            written.push(seq);
                            written_tickets.push(q.ticket);
                        } else {
                            // Dropped while it was written.
                            let _ = fs::remove_file(&path);
                        }
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        // Something took the name since the spool was opened:
                        // never overwrite it, take the next free number.
                        let mut st = self.state();
                        let Some(entry) = st.entries.remove(&seq) else { break };
                        seq = st.next_seq;
                        st.next_seq += 1;
                        st.entries.insert(seq, entry);
                        st.stats.foreign += 1;
                        tracing::warn!(entry = %path.display(), "a spool file's name is taken: skipped");
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
                        if !self.make_room_on_disk(seq, q.prio) {
                            break;
                        }
                    }
                    Err(e) => {
                        let mut st = self.state();
                        if let Some(entry) = st.remove(seq) {
                            st.count_drop(entry.prio, entry.meta.events);
                            st.stats.write_errors += 1;
                        }
                        let n = st.stats.write_errors;
                        drop(st);
                        self.report_health(&q.meta, &q.payload);
                        if crate::telemetry::sampled(n) {
                            tracing::error!(count = n, "message dropped: {}", SpoolError::Write(path, e));
                        }
                        break;
                    }
                }
            }
        }

        // Right after the records (a kill keeps what was written: only the
        // microseconds in between can lose a cover, never claim a record that
        // is not there), and made durable with them.
        self.write_covered(&group, &written_tickets);
        // One flush for the whole group.
        // SAFETY: syncfs on a descriptor we own.
        let synced = if written.is_empty() || unsafe { libc::syncfs(self.dir_fd.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        };
        let mut st = self.state();
        match synced {
            Ok(()) => {
                if !written.is_empty() {
                    st.stats.syncs += 1;
                    st.stats.written += written.len() as u64;
                }
                let mut over = st.cached_bytes.saturating_sub(CACHE_BYTES);
                // The newest lose their payloads first: the oldest go out first.
                for seq in written.iter().rev() {
                    let Some(e) = st.entries.get_mut(seq) else { continue };
                    e.stage = Stage::Durable;
                    // Keep the payloads for the publisher within the budget.
                    if over > 0
                        && let Some(c) = e.cached.take()
                    {
                        over = over.saturating_sub(c.len() as u64);
                        st.cached_bytes -= c.len() as u64;
                    }
                }
            }
            Err(e) => {
                // Not durable: never handed to anyone; dropped and counted.
                let mut lost = Vec::new();
                for seq in &written {
                    if let Some(entry) = st.remove(*seq) {
                        st.count_drop(entry.prio, entry.meta.events);
                        st.stats.write_errors += 1;
                        lost.push(Victim { seq: *seq, entry });
                    }
                }
                tracing::error!(messages = lost.len(), "spool syncfs failed, messages dropped: {e}");
                drop(st);
                self.discard(lost);
                st = self.state();
            }
        }
        // Every ticket up to the group's last is durable or was dropped (the
        // queue is FIFO but for drops); with nothing queued, every ticket is.
        st.settled = if st.queue.is_empty() { st.next_ticket - 1 } else { st.settled.max(last_ticket) };
        drop(st);
        self.done.notify_all();
        self.wake_publisher();
    }

    /// Adds the covers of the messages just written to the set and writes
    /// it, before the group's syncfs (which makes it durable with them) and
    /// before the publisher may send (so before an acknowledgement can
    /// remove) any of them. A write that fails leaves the older file:
    /// duplicates after a kill, never a loss. (Should the syncfs fail, the
    /// records are dropped and counted: the set still names them, so a kill
    /// does not deliver what was counted.)
    fn write_covered(&self, group: &[Queued], written: &[u64]) {
        let mut covers = group
            .iter()
            .filter(|q| q.cover.is_some() && written.binary_search(&q.ticket).is_ok())
            .filter_map(|q| q.cover.as_deref());
        let Some(first) = covers.next() else { return };
        let (bytes, generation) = {
            let mut st = self.state();
            st.covered.add(first);
            for c in covers {
                st.covered.add(c);
            }
            let b = st.covered.encode();
            (b, st.covered.generation)
        };
        let path = self.dir.join(COVERED_FILES[(generation % 2) as usize]);
        let res = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|mut f| f.write_all(&bytes));
        if let Err(e) = res {
            let n = {
                let mut st = self.state();
                st.cover_errors += 1;
                st.cover_errors
            };
            if crate::telemetry::sampled(n) {
                tracing::warn!(
                    file = %path.display(),
                    count = n,
                    "cannot record which journal records the spool holds ({e}): a kill now would deliver them twice"
                );
            }
        }
    }

    /// The file system is full while writing `seq`: drops the oldest
    /// low-priority record (then, for a high-priority message, the oldest
    /// high-priority one) and says to try again; when nothing else can go,
    /// drops `seq` itself and says to stop. Every drop is counted.
    fn make_room_on_disk(&self, seq: u64, prio: Priority) -> bool {
        let _ = fs::remove_file(self.path(seq, prio));
        let mut st = self.state();
        // Removals still to do free room first.
        let unlink = std::mem::take(&mut st.unlink);
        if !unlink.is_empty() {
            drop(st);
            for (s, p) in unlink {
                let _ = fs::remove_file(self.path(s, p));
            }
            return true;
        }
        let victim = st.victim(Some(seq), prio == Priority::High, true);
        let (victims, go_on) = match victim {
            Some(v) => {
                let entry = st.remove(v).expect("victim exists");
                st.count_drop(entry.prio, entry.meta.events);
                st.stats.disk_full += 1;
                (vec![Victim { seq: v, entry }], true)
            }
            None => match st.remove(seq) {
                Some(entry) => {
                    st.count_drop(entry.prio, entry.meta.events);
                    st.stats.disk_full += 1;
                    (vec![Victim { seq, entry: Entry { stage: Stage::Reserved, ..entry } }], false)
                }
                None => (Vec::new(), false),
            },
        };
        let n = st.stats.disk_full;
        drop(st);
        if crate::telemetry::sampled(n) {
            tracing::warn!(
                count = n,
                dir = %self.dir.display(),
                "file system full: dropped the oldest low-priority spooled message"
            );
        }
        self.discard(victims);
        go_on
    }

    /// Reads records from `from` on into memory, within the budget (at least one).
    fn read_ahead(&self, from: u64) {
        let todo: Vec<(u64, Priority)> = {
            let st = self.state();
            let mut room = CACHE_BYTES.saturating_sub(st.cached_bytes);
            let mut out = Vec::new();
            for (seq, e) in st.entries.range(from..) {
                if e.stage != Stage::Durable || out.len() >= READ_AHEAD {
                    break;
                }
                if e.cached.is_some() {
                    continue;
                }
                if !out.is_empty() && e.size > room {
                    break;
                }
                room = room.saturating_sub(e.size);
                out.push((*seq, e.prio));
            }
            out
        };
        for (seq, prio) in todo {
            match read_file(&self.path(seq, prio), self.opts.max_payload) {
                Ok(p) => {
                    let mut st = self.state();
                    let len = p.len() as u64;
                    if let Some(e) = st.entries.get_mut(&seq)
                        && e.cached.is_none()
                    {
                        e.cached = Some(Arc::from(p));
                        st.cached_bytes += len;
                    }
                }
                Err(why) => self.drop_corrupt(seq, &why),
            }
        }
        self.wake_publisher();
    }
}

/// The two files the journal cover set is written to, alternately.
const COVERED_FILES: [&str; 2] = ["covered.a", "covered.b"];

/// The newer valid cover set of the spool folder (empty when there is none).
fn read_covered(dir: &Path) -> Covered {
    let read = |name: &str| -> Option<Vec<u8>> {
        let (f, size) = open_record(&dir.join(name)).ok()?;
        if size > MAX_COVER_FILE as u64 {
            return None;
        }
        let mut b = Vec::new();
        f.take(MAX_COVER_FILE as u64).read_to_end(&mut b).ok()?;
        Some(b)
    };
    let (a, b) = (read(COVERED_FILES[0]), read(COVERED_FILES[1]));
    Covered::newest(a.as_deref(), b.as_deref())
}

/// Writes a new file (never an existing name, never through a link), 0600.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if let Err(e) = f.write_all(bytes) {
        drop(f);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
