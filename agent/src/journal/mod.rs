//! The journal: what `shrike run` received and has not yet put in the spool
//! (events wait up to the aggregation interval plus the low-priority batch,
//! minutes by default), kept on disk so that a SIGKILL loses nothing it had
//! more than a commit interval to write, and counts the rest.
//!
//! - The event path gives each published event (after detection, before
//!   aggregation) a sequence number, counts it in a memory-mapped counters
//!   page ([`counters`]) and sends a copy to the journal's thread
//!   ([`writer`]), which appends it as a record and fsyncs once per group
//!   (`journal_interval`, 200 ms by default). The event path never waits on
//!   a disk: a thread that falls behind (`MAX_QUEUED` events) or a journal at
//!   `journal_size` makes it skip events instead, recorded as skipped.
//! - A [`Tracker`] knows the oldest sequence number still held in memory (an
//!   aggregator, a message being filled, messages held while no publisher
//!   runs); below it every event is in the spool. That watermark goes to the
//!   thread, which drops the segments below it.
//! - At start, [`read`] replays what is above the last watermark and counts
//!   what was received but never written (the counters page against the
//!   records: [`format::recover`]); the daemon delivers the events again and
//!   reports the loss in a DroppedEventsStatistics event. Then [`Journal::start`]
//!   begins a new epoch.
//!
//! Files (0600, in a 0700 folder `journal` of the spool folder): segments
//! `{epoch}-{first_seq}.jnl` and `counters`; the format is in [`format`].

pub mod counters;
pub mod cover;
pub mod format;
mod writer;

use std::{
    collections::BTreeMap,
    io::Read,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering, mpsc},
    time::Duration,
};

use shrike_common::schema as sm;

pub use self::format::Recovery;
use self::{
    counters::Counters,
    format::{Header, slot},
    writer::{Msg, Queue, Shared, Writer},
};
use crate::{
    events::{Event, Kind},
    publish::spool::Priority,
};

/// Events sent to the thread and not yet taken, at most; past it the event
/// path skips (and counts) rather than queueing without bound.
pub const MAX_QUEUED: usize = 8192;

/// Where and how the journal runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    pub dir: PathBuf,
    /// Group commit: one fsync per this interval at most.
    pub interval: Duration,
    /// Bytes on disk, at most.
    pub size: u64,
}

/// Counters for the log and the stop line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalStats {
    pub written: u64,
    /// Events not journaled (full, or the thread behind): delivered as usual,
    /// but a kill before they reach the spool loses them (counted then).
    pub skipped: u64,
    pub commits: u64,
    pub write_errors: u64,
    pub bytes: u64,
}

/// Reads what an earlier run left in `dir` (nothing when it does not exist),
/// leaving out what `covered` (the spool's) says is in the spool.
/// Files larger than a segment can be are damaged and not read.
pub fn read(dir: &Path, size: u64, covered: &cover::Covered) -> Recovery {
    let limit = size + format::MAX_BODY as u64 + 4096;
    let read_one = |p: &Path| -> std::io::Result<Vec<u8>> {
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(p)?;
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let mut b = Vec::new();
        f.take(limit + 1).read_to_end(&mut b)?;
        if b.len() as u64 > limit {
            return Err(std::io::Error::other(format!("larger than {limit} bytes")));
        }
        Ok(b)
    };
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for ent in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".jnl") {
            continue;
        }
        match read_one(&ent.path()) {
            Ok(b) => files.push((name, b)),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    let counters = read_one(&dir.join("counters")).ok();
    let mut r = format::recover_with(counters.as_deref(), &files, covered);
    r.damaged += problems.len() as u64;
    r.problems.extend(problems);
    r
}

/// Where a flushed queue's messages went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Delivered at once (stdout).
    Done,
    /// Queued for the spool; durable once the spool's `durable_through`
    /// reaches this ticket.
    Spooling(u64),
    /// Held in memory: no publisher runs.
    Held,
}

/// The oldest sequence number each holder of events keeps in memory.
#[derive(Debug, Default)]
pub struct Tracker {
    aggs: BTreeMap<Kind, u64>,
    /// The records each aggregator holds: their messages' cover (cover.rs).
    agg_cover: BTreeMap<Kind, cover::Ranges>,
    batch: [Option<u64>; 2],
    held: Option<u64>,
    /// Messages on their way into the spool: (ticket, oldest seq).
    spooling: std::collections::VecDeque<(u64, u64)>,
}

fn keep_min(slot: &mut Option<u64>, seq: u64) {
    *slot = Some(slot.map_or(seq, |s| s.min(seq)));
}

impl Tracker {
    pub fn hold_agg(&mut self, kind: Kind, seq: u64) {
        self.aggs.entry(kind).or_insert(seq);
        let c = self.agg_cover.entry(kind).or_default();
        c.insert(seq);
        c.cap(cover::MAX_RANGES);
    }

    /// The records a kind's aggregator holds, as it is flushed.
    pub fn take_agg_cover(&mut self, kind: Kind) -> cover::Ranges {
        self.agg_cover.remove(&kind).unwrap_or_default()
    }

    pub fn hold_batch(&mut self, prio: Priority, seq: u64) {
        keep_min(&mut self.batch[slot(prio)], seq);
    }

    /// A kind's aggregates went into `prio`'s messages.
    pub fn agg_flushed(&mut self, kind: Kind, prio: Priority) {
        if let Some(s) = self.aggs.remove(&kind) {
            keep_min(&mut self.batch[slot(prio)], s);
        }
    }

    /// `prio`'s messages went to the sink.
    pub fn batch_flushed(&mut self, prio: Priority, to: Flushed) {
        if let Some(s) = self.batch[slot(prio)].take() {
            self.went(s, to);
        }
    }

    fn went(&mut self, seq: u64, to: Flushed) {
        match to {
            Flushed::Done => {}
            Flushed::Spooling(ticket) => self.spooling.push_back((ticket, seq)),
            Flushed::Held => keep_min(&mut self.held, seq),
        }
    }

    /// The messages held in memory went to a new publisher.
    pub fn held_flushed(&mut self, to: Flushed) {
        if let Some(s) = self.held.take() {
            self.went(s, to);
        }
    }

    /// The spool has every message up to `ticket` (durable, or dropped and counted).
    pub fn durable_through(&mut self, ticket: u64) {
        while self.spooling.front().is_some_and(|(t, _)| *t <= ticket) {
            self.spooling.pop_front();
        }
    }

    /// Messages handed to the spool and not yet known to be durable.
    pub fn spooling(&self) -> bool {
        !self.spooling.is_empty()
    }

    /// Every event below this is in the spool.
    pub fn watermark(&self, next: u64) -> u64 {
        let spooling = self.spooling.iter().map(|(_, s)| *s);
        let held = self.batch.iter().chain([&self.held]).flatten().copied();
        self.aggs.values().copied().chain(held).chain(spooling).fold(next, u64::min)
    }
}

/// The event path's handle on the journal.
pub struct Journal {
    queue: Arc<Queue>,
    shared: Arc<Shared>,
    counters: Counters,
    next_seq: u64,
    /// Events skipped on the event path, not yet told to the thread.
    skip: Option<(u64, u64, [u64; 2])>,
    pub tracker: Tracker,
    sent_watermark: u64,
    thread: Option<std::thread::JoinHandle<()>>,
    pub dir: PathBuf,
    /// This run's journal: the sequence numbers a message's [`cover::Cover`] names are of it.
    pub epoch: u64,
}

impl Journal {
    /// Begins a new epoch in `cfg.dir` (after [`read`] and the replay of its
    /// events into the spool): an empty first segment, a zeroed counters
    /// page (the commit point: from then on the old segments are stale),
    /// then the old segments removed; and starts the thread.
    pub fn start(cfg: &JournalConfig) -> std::io::Result<Journal> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&cfg.dir)?;
        let epoch = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            h.finish()
        };
        let first =
            writer::create_segment(&cfg.dir, &Header { epoch, first_seq: 0, base: [0; 2], watermark: 0 })?;
        let counters = Counters::create(&cfg.dir.join("counters"), epoch)?;
        let mine = writer::segment_name(epoch, 0);
        for ent in std::fs::read_dir(&cfg.dir)?.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.ends_with(".jnl") && name != mine {
                let _ = std::fs::remove_file(ent.path());
            }
        }
        let shared = Arc::new(Shared::default());
        let w = Writer::new(cfg.dir.clone(), epoch, cfg.interval, cfg.size, first, Arc::clone(&shared));
        let queue = Arc::new(Queue::default());
        let q = Arc::clone(&queue);
        let thread = std::thread::Builder::new().name("shrike-journal".into()).spawn(move || w.run(&q))?;
        Ok(Journal {
            queue,
            shared,
            counters,
            next_seq: 0,
            skip: None,
            tracker: Tracker::default(),
            sent_watermark: 0,
            thread: Some(thread),
            dir: cfg.dir.clone(),
            epoch,
        })
    }

    /// Journals `ev` (of queue `prio`; `id`: the Id of the message event
    /// already made of it, kept by a replay so a duplicate is detectable);
    /// its sequence number, to hold where the event waits. Never blocks.
    pub fn append(&mut self, prio: Priority, ev: &Event, id: Option<sm::Uuid>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        // Counted before the thread can write it: a kill in between counts
        // it lost, never written-but-uncounted.
        self.counters.bump(slot(prio));
        let sh = &self.shared;
        if sh.full.load(Ordering::Relaxed) || sh.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
            let mut counts = [0; 2];
            counts[slot(prio)] = 1;
            match &mut self.skip {
                Some((_, end, c)) => {
                    *end = seq + 1;
                    c[slot(prio)] += 1;
                }
                None => self.skip = Some((seq, seq + 1, counts)),
            }
            return seq;
        }
        self.flush_skip();
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.send(Msg::Event { seq, prio, ev: Box::new(ev.clone()), id });
        seq
    }

    fn send(&mut self, m: Msg) {
        self.queue.send(m);
    }

    fn flush_skip(&mut self) {
        if let Some((from, to, counts)) = self.skip.take() {
            self.send(Msg::Skip { from, to, counts });
        }
    }

    /// Tells the thread how far the spool has everything (after a flush);
    /// `durable`: the spool's `durable_through` (None without a spool).
    pub fn update(&mut self, durable: Option<u64>) {
        self.flush_skip();
        if let Some(t) = durable {
            self.tracker.durable_through(t);
        }
        let w = self.tracker.watermark(self.next_seq);
        if w > self.sent_watermark {
            self.sent_watermark = w;
            self.send(Msg::Watermark(w));
        }
    }

    /// Commits what was sent and waits for it (tests, stop).
    pub fn sync(&mut self, durable: Option<u64>) {
        self.update(durable);
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Sync(tx));
        let _ = rx.recv_timeout(Duration::from_secs(10));
    }

    pub fn stats(&self) -> JournalStats {
        let s = &self.shared;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let skipped_here = self.skip.map_or(0, |(_, _, c)| c[0] + c[1]);
        JournalStats {
            written: get(&s.written),
            skipped: get(&s.skipped) + skipped_here,
            commits: get(&s.commits),
            write_errors: get(&s.write_errors),
            bytes: get(&s.bytes),
        }
    }

    /// Below this, a start replays nothing whatever the spool's cover says
    /// (the watermark committed to the files): the cover can forget it.
    pub fn committed_watermark(&self) -> u64 {
        self.shared.committed_watermark.load(Ordering::Relaxed)
    }

    /// Events received this epoch, per queue (high, low).
    pub fn received(&self) -> [u64; 2] {
        self.counters.get()
    }

    /// Commits, compacts and stops the thread.
    pub fn close(mut self, durable: Option<u64>) -> JournalStats {
        self.sync(durable);
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stats()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // The thread ends after a last commit.
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
