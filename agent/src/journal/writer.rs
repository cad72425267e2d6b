//! The journal's thread: turns events into records, writes them with one
//! fdatasync per group (`journal_interval`), and compacts segments as the
//! watermark (every event below it is in the spool) advances. The event path
//! only sends it messages; it never waits for this thread.

use std::{
    collections::VecDeque,
    fs::File,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::format::{self, HEADER_LEN, Header, slot};
use crate::{events::Event, publish::spool::Priority};

pub(super) enum Msg {
    Event {
        seq: u64,
        prio: Priority,
        ev: Box<Event>,
        id: Option<shrike_common::schema::Uuid>,
    },
    /// Events `from..to` the event path did not send (the thread was behind).
    Skip {
        from: u64,
        to: u64,
        counts: [u64; 2],
    },
    /// Every event below this seq is in the spool.
    Watermark(u64),
    /// Commit now, then answer.
    Sync(std::sync::mpsc::Sender<()>),
}

/// The messages for the thread. The event path wakes the thread only for
/// the first message of a group (or a `Sync`): one wake-up per commit, not
/// one per event.
#[derive(Default)]
pub(super) struct Queue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

#[derive(Default)]
struct QueueState {
    msgs: Vec<Msg>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // Plain data: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn send(&self, m: Msg) {
        let urgent = matches!(m, Msg::Sync(_));
        let mut st = self.lock();
        let first = st.msgs.is_empty();
        st.msgs.push(m);
        drop(st);
        if first || urgent {
            self.cv.notify_one();
        }
    }

    /// The thread ends after a last commit.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_one();
    }
}

/// What the event path and the thread share.
#[derive(Default)]
pub(super) struct Shared {
    /// Events sent and not yet taken by the thread.
    pub(super) queued: AtomicUsize,
    /// The journal reached `journal_size`: events are skipped (counted) until
    /// compaction makes room.
    pub(super) full: AtomicBool,
    pub(super) written: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) write_errors: AtomicU64,
    pub(super) bytes: AtomicU64,
    /// The watermark the files hold (committed): a start replays nothing below it.
    pub(super) committed_watermark: AtomicU64,
}

struct Seg {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
}

pub(super) fn segment_name(epoch: u64, first_seq: u64) -> String {
    format!("{epoch:016x}-{first_seq:020}.jnl")
}

/// Creates a segment file holding just its header, durably.
pub(super) fn create_segment(dir: &Path, h: &Header) -> std::io::Result<(PathBuf, File)> {
    let path = dir.join(segment_name(h.epoch, h.first_seq));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    f.write_all(&h.encode())?;
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok((path, f))
}

pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) epoch: u64,
    pub(super) interval: Duration,
    pub(super) cap: u64,
    segs: VecDeque<Seg>,
    file: File,
    /// Events per queue the thread was told about (written or skipped).
    seen: [u64; 2],
    next_seq: u64,
    watermark: u64,
    written_watermark: u64,
    skip: Option<(u64, u64, [u64; 2])>,
    buf: Vec<u8>,
    /// Bytes on disk, all segments.
    total: u64,
    shared: Arc<Shared>,
    /// The local time zone's offset, looked up once per group.
    offset: chrono::FixedOffset,
    ids: std::collections::hash_map::RandomState,
}

impl Writer {
    /// `first`: the epoch's first (empty) segment, just created.
    pub(super) fn new(
        dir: PathBuf,
        epoch: u64,
        interval: Duration,
        cap: u64,
        first: (PathBuf, File),
        shared: Arc<Shared>,
    ) -> Writer {
        let (path, file) = first;
        shared.bytes.store(HEADER_LEN as u64, Ordering::Relaxed);
        Writer {
            dir,
            epoch,
            interval,
            cap,
            segs: VecDeque::from([Seg { first_seq: 0, path, bytes: HEADER_LEN as u64 }]),
            file,
            seen: [0; 2],
            next_seq: 0,
            watermark: 0,
            written_watermark: 0,
            skip: None,
            buf: Vec::with_capacity(64 << 10),
            total: HEADER_LEN as u64,
            shared,
            offset: *chrono::Local::now().offset(),
            ids: Default::default(),
        }
    }

    /// A new segment when the current one is this large.
    fn seg_max(&self) -> u64 {
        (self.cap / 8).max(64 << 10)
    }

    pub(super) fn run(mut self, queue: &Queue) {
        let mut batch = Vec::new();
        loop {
            let mut st = queue.lock();
            // Idle: block until the first message of a group (no timer runs).
            while st.msgs.is_empty() && !st.closed {
                st = queue.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            // The group: what comes within the interval, or until a sync.
            let deadline = Instant::now() + self.interval;
            while !st.closed && !st.msgs.iter().any(|m| matches!(m, Msg::Sync(_))) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = queue.cv.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            }
            std::mem::swap(&mut batch, &mut st.msgs);
            let closed = st.closed;
            drop(st);
            let mut syncs = Vec::new();
            for m in batch.drain(..) {
                self.take(m, &mut syncs);
            }
            self.commit();
            for s in syncs {
                let _ = s.send(());
            }
            if closed && queue.lock().msgs.is_empty() {
                return;
            }
        }
    }

    fn take(&mut self, m: Msg, syncs: &mut Vec<std::sync::mpsc::Sender<()>>) {
        match m {
            Msg::Event { seq, prio, ev, id } => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.seen[slot(prio)] += 1;
                self.next_seq = seq + 1;
                if !self.shared.full.load(Ordering::Relaxed) && self.record(seq, prio, &ev, id) {
                    return;
                }
                self.skipped(seq, seq + 1, prio);
            }
            Msg::Skip { from, to, counts } => {
                self.seen[0] += counts[0];
                self.seen[1] += counts[1];
                self.next_seq = to;
                self.add_skip(from, to, counts);
            }
            Msg::Watermark(w) => self.watermark = self.watermark.max(w),
            Msg::Sync(tx) => syncs.push(tx),
        }
    }

    /// Encodes an event record into the group's buffer; false when it does
    /// not fit the journal's size.
    fn record(
        &mut self,
        seq: u64,
        prio: Priority,
        ev: &Event,
        id: Option<shrike_common::schema::Uuid>,
    ) -> bool {
        // `message::to_message_event`, without its costs per event (a look-up
        // of the local time zone, a getrandom call for the Id).
        let Some(payload) = crate::message::to_payload(ev) else { return false };
        let utc = chrono::SubsecRound::trunc_subsecs(crate::message::time_of(ev), 3);
        let m = shrike_common::schema::Event {
            id: id.unwrap_or_else(|| self.new_id(seq)),
            timestamp_local: utc.with_timezone(&self.offset),
            timestamp_utc: utc,
            payload,
        };
        self.flush_skip();
        // The segment is full: commit the group so far, so that it rolls and
        // compaction drops what the watermark passed (a group can be large).
        if self.segs.back().map_or(0, |s| s.bytes) + self.buf.len() as u64 >= self.seg_max() {
            self.commit();
        }
        let before = self.buf.len();
        if format::encode_event(&mut self.buf, seq, prio, |b| serde_json::to_writer(b, &m)).is_err() {
            return false;
        }
        if self.total + self.buf.len() as u64 > self.cap {
            self.buf.truncate(before);
            self.shared.full.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn skipped(&mut self, from: u64, to: u64, prio: Priority) {
        let mut counts = [0; 2];
        counts[slot(prio)] = 1;
        self.add_skip(from, to, counts);
    }

    fn add_skip(&mut self, from: u64, to: u64, counts: [u64; 2]) {
        self.shared.skipped.fetch_add(counts[0] + counts[1], Ordering::Relaxed);
        match &mut self.skip {
            Some((_, end, c)) if *end == from => {
                *end = to;
                c[0] += counts[0];
                c[1] += counts[1];
            }
            _ => {
                self.flush_skip();
                self.skip = Some((from, to, counts));
            }
        }
    }

    /// Skip records are written even when the journal is full: a few dozen
    /// bytes a group, and they tell a restart which events were not kept.
    fn flush_skip(&mut self) {
        if let Some((from, to, counts)) = self.skip.take() {
            format::encode_skip(&mut self.buf, from, to, counts);
        }
    }

    /// Writes the group and syncs it, then compacts.
    /// A random-looking version 4 GUID, unique per journal (a keyed hash of
    /// the sequence number): the replay of a record keeps it.
    fn new_id(&self, seq: u64) -> shrike_common::schema::Uuid {
        use std::hash::BuildHasher;
        let hi = self.ids.hash_one((seq, 0u8));
        let lo = self.ids.hash_one((seq, 1u8));
        let mut b = ((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        shrike_common::schema::Uuid::from_bytes(b)
    }

    fn commit(&mut self) {
        // The local time zone's offset, for the events of the next group.
        self.offset = *chrono::Local::now().offset();
        self.flush_skip();
        if self.watermark > self.written_watermark {
            format::encode_checkpoint(&mut self.buf, self.watermark);
        }
        if !self.buf.is_empty() {
            let n = self.buf.len() as u64;
            let events = count_events(&self.buf);
            match self.file.write_all(&self.buf).and_then(|()| self.file.sync_data()) {
                Ok(()) => {
                    if let Some(s) = self.segs.back_mut() {
                        s.bytes += n;
                    }
                    self.total += n;
                    self.written_watermark = self.written_watermark.max(self.watermark);
                    self.shared.committed_watermark.store(self.written_watermark, Ordering::Relaxed);
                    self.shared.written.fetch_add(events, Ordering::Relaxed);
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // Cut back to the last whole record, so later records stay
                    // readable; the group's events count as lost if the agent
                    // dies before they reach the spool.
                    let keep = self.segs.back().map_or(HEADER_LEN as u64, |s| s.bytes);
                    let _ = self.file.set_len(keep);
                    let errors = self.shared.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if crate::telemetry::sampled(errors) {
                        tracing::error!(dir = %self.dir.display(), count = errors, "journal write failed: {e}");
                    }
                }
            }
            self.buf.clear();
            if self.buf.capacity() > 1 << 20 {
                self.buf.shrink_to(64 << 10);
            }
        }
        self.compact();
        self.shared.bytes.store(self.total, Ordering::Relaxed);
    }

    fn compact(&mut self) {
        let delivered_all = self.written_watermark >= self.next_seq;
        let cur = self.segs.back().map_or(0, |s| s.bytes);
        let cur_first = self.segs.back().map_or(0, |s| s.first_seq);
        if (cur >= self.seg_max() || (delivered_all && cur >= 64 << 10)) && self.next_seq > cur_first {
            self.roll();
        }
        // A segment whose every event is below the watermark is done.
        let mut removed = false;
        while self.segs.len() > 1 && self.segs[1].first_seq <= self.written_watermark {
            if let Some(s) = self.segs.pop_front() {
                let _ = std::fs::remove_file(&s.path);
                self.total -= s.bytes;
                removed = true;
            }
        }
        if removed && let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        if self.total < self.cap / 2 {
            self.shared.full.store(false, Ordering::Relaxed);
        }
    }

    fn roll(&mut self) {
        let h = Header {
            epoch: self.epoch,
            first_seq: self.next_seq,
            base: self.seen,
            watermark: self.written_watermark,
        };
        match create_segment(&self.dir, &h) {
            Ok((path, file)) => {
                self.file = file;
                self.segs.push_back(Seg { first_seq: h.first_seq, path, bytes: HEADER_LEN as u64 });
                self.total += HEADER_LEN as u64;
            }
            Err(e) => {
                let errors = self.shared.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if crate::telemetry::sampled(errors) {
                    tracing::error!(dir = %self.dir.display(), count = errors, "journal segment not created: {e}");
                }
            }
        }
    }
}

/// Event records in an encoded group.
fn count_events(mut b: &[u8]) -> u64 {
    let mut n = 0;
    while b.len() >= 9 {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if b[8] == 1 {
            n += 1;
        }
        b = b.get(8 + len..).unwrap_or_default();
    }
    n
}
