//! SHA-256 of executables, off the event path.
//!
//! The stage looks up an exec's file in a cache keyed by (device, inode,
//! size, mtime, ctime) — one `stat` of /proc/PID/exe, which follows the
//! kernel's link to the file that ran even when it was deleted or replaced
//! since. A hit is attached to the event at once. A miss opens the file
//! (the open descriptor keeps it readable after the process exits) and hands
//! it to one hashing thread through a bounded queue; the result comes back
//! through a channel the stage drains at its next event or tick, goes into
//! the cache, and its waiting exec events are returned (with `sha256` set)
//! so the IoC detector can judge them then. The thread reads at most
//! `rate` bytes a second (a token bucket, one second of burst) so a stream
//! of new large binaries cannot take a core; files over `max_size` are not
//! read: cached as too large and flagged on the exec events.

use std::{
    collections::HashMap,
    fs::{File, Metadata},
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, SyncSender, TrySendError},
    thread,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{
    detect::builtin::Bounded,
    events::{Body, Event},
};

/// Exec events queued for hashing at once (more are counted, not hashed).
pub const QUEUE: usize = 256;
/// Files whose hash (or verdict) is remembered.
pub const CACHE: usize = 8192;
/// Exec events kept waiting for one file's hash.
const WAITERS: usize = 8;

/// What identifies one version of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl FileKey {
    pub fn of(m: &Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The verdict on one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hashed {
    Sha256([u8; 32]),
    /// Over the size bound: not read.
    TooLarge,
    /// Could not be read (the error).
    Failed,
}

/// Counters (part of the IoC stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HashStats {
    pub hashed: u64,
    pub bytes_hashed: u64,
    pub cache_hits: u64,
    pub too_large: u64,
    pub errors: u64,
    /// Execs not hashed: the queue was full.
    pub queue_full: u64,
    /// Execs whose file could not be found (process gone, no path).
    pub no_file: u64,
}

struct Job {
    key: FileKey,
    file: File,
}

struct Done {
    key: FileKey,
    result: Hashed,
    bytes: u64,
}

/// The hashing side of the IoC detector.
pub struct ExeHasher {
    proc_root: PathBuf,
    max_size: u64,
    jobs: SyncSender<Job>,
    done: Receiver<Done>,
    cache: Bounded<FileKey, Hashed>,
    /// Files being hashed, with the exec events waiting for them.
    pending: HashMap<FileKey, Vec<Event>>,
    pub stats: HashStats,
}

impl ExeHasher {
    /// Starts the hashing thread (it ends when this is dropped).
    pub fn new(proc_root: &Path, max_size: u64, rate: u64) -> std::io::Result<ExeHasher> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let (tx, done) = mpsc::channel::<Done>();
        thread::Builder::new().name("shrike-hash".into()).spawn(move || worker(rx, tx, rate))?;
        Ok(ExeHasher {
            proc_root: proc_root.to_owned(),
            max_size,
            jobs,
            done,
            cache: Bounded::new(CACHE),
            pending: HashMap::new(),
            stats: HashStats::default(),
        })
    }

    /// An exec event: sets `sha256` (or `sha256_skipped`) from the cache, or
    /// queues its file for hashing (the event waits for it).
    pub fn annotate(&mut self, ev: &mut Event) {
        let Body::Exec(x) = &mut ev.body else { return };
        if !x.success {
            return;
        }
        // The file that ran, even if deleted or replaced since; when the
        // process is already gone, the path it ran (if it still exists).
        let proc_exe = self.proc_root.join(ev.pid.to_string()).join("exe");
        let by_path = ev.exe.as_deref().filter(|p| p.starts_with('/') && !p.ends_with(" (deleted)"));
        let (path, meta) = match std::fs::metadata(&proc_exe) {
            Ok(m) => (proc_exe, m),
            Err(_) => match by_path.map(|p| (PathBuf::from(p), std::fs::metadata(p))) {
                Some((p, Ok(m))) if m.is_file() => (p, m),
                _ => {
                    self.stats.no_file += 1;
                    return;
                }
            },
        };
        let key = FileKey::of(&meta);
        if let Some(h) = self.cache.get(&key) {
            self.stats.cache_hits += 1;
            set(x, h);
            return;
        }
        if meta.size() > self.max_size {
            self.stats.too_large += 1;
            self.cache.insert(key, Hashed::TooLarge);
            set(x, &Hashed::TooLarge);
            return;
        }
        if let Some(waiting) = self.pending.get_mut(&key) {
            if waiting.len() < WAITERS {
                waiting.push(ev.clone());
            }
            return;
        }
        let file = match File::open(&path) {
            // The same version still (not replaced between stat and open).
            Ok(f) if f.metadata().is_ok_and(|m| FileKey::of(&m) == key) => f,
            _ => {
                self.stats.no_file += 1;
                return;
            }
        };
        match self.jobs.try_send(Job { key, file }) {
            Ok(()) => {
                self.pending.insert(key, vec![ev.clone()]);
            }
            Err(TrySendError::Full(_)) => self.stats.queue_full += 1,
            Err(TrySendError::Disconnected(_)) => self.stats.errors += 1,
        }
    }

    /// Hashes finished since the last call: cached, and their waiting exec
    /// events returned with `sha256` set.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        while let Ok(d) = self.done.try_recv() {
            match d.result {
                Hashed::Sha256(_) => {
                    self.stats.hashed += 1;
                    self.stats.bytes_hashed += d.bytes;
                }
                Hashed::Failed => self.stats.errors += 1,
                Hashed::TooLarge => self.stats.too_large += 1,
            }
            for mut ev in self.pending.remove(&d.key).unwrap_or_default() {
                if let Body::Exec(x) = &mut ev.body {
                    set(x, &d.result);
                }
                out.push(ev);
            }
            self.cache.insert(d.key, d.result);
        }
    }

    /// Files queued or being hashed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

fn set(x: &mut crate::events::Exec, h: &Hashed) {
    match h {
        Hashed::Sha256(d) => x.sha256 = Some(hex(d)),
        Hashed::TooLarge => x.sha256_skipped = Some("too_large"),
        Hashed::Failed => x.sha256_skipped = Some("unreadable"),
    }
}

pub fn hex(d: &[u8; 32]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The hashing thread: one file at a time, at most `rate` bytes a second.
fn worker(jobs: Receiver<Job>, done: mpsc::Sender<Done>, rate: u64) {
    let rate = rate.max(64 * 1024) as f64;
    let mut budget = rate;
    let mut last = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Job { key, mut file }) = jobs.recv() {
        let mut h = Sha256::new();
        let mut bytes = 0u64;
        let result = loop {
            let now = Instant::now();
            budget = (budget + now.duration_since(last).as_secs_f64() * rate).min(rate);
            last = now;
            if budget < buf.len() as f64 {
                thread::sleep(Duration::from_secs_f64((buf.len() as f64 - budget) / rate));
                continue;
            }
            match file.read(&mut buf) {
                Ok(0) => break Hashed::Sha256(h.finalize().into()),
                Ok(n) => {
                    h.update(&buf[..n]);
                    bytes += n as u64;
                    budget -= n as f64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break Hashed::Failed,
            }
        };
        if done.send(Done { key, result, bytes }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    fn sha(b: &[u8]) -> String {
        hex(&Sha256::digest(b).into())
    }

    fn wait(h: &mut ExeHasher) -> Vec<Event> {
        let mut out = Vec::new();
        for _ in 0..500 {
            h.drain(&mut out);
            if h.pending() == 0 {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        out
    }

    fn sha_of(ev: &Event) -> (Option<String>, Option<&'static str>) {
        let Body::Exec(x) = &ev.body else { panic!() };
        (x.sha256.clone(), x.sha256_skipped)
    }

    #[test]
    fn miss_then_hit_and_the_key_follows_the_file() {
        let s = Scratch::new("hash");
        let bin = s.write("bin/tool", "#!/bin/sh\necho one\n");
        // A fake /proc: PID/exe links to the file.
        s.link("42/exe", bin.to_str().unwrap());
        let mut h = ExeHasher::new(&s.0, 1 << 20, 64 << 20).unwrap();
        let mut ev = exec(0.0, 42, 1, bin.to_str().unwrap(), &["tool"]);
        h.annotate(&mut ev);
        assert_eq!(sha_of(&ev), (None, None), "a miss is not waited for");
        let done = wait(&mut h);
        assert_eq!(done.len(), 1);
        assert_eq!(sha_of(&done[0]).0.as_deref(), Some(sha(b"#!/bin/sh\necho one\n").as_str()));
        assert_eq!(done[0].pid, 42, "the waiting exec comes back");

        let mut again = exec(1.0, 42, 1, bin.to_str().unwrap(), &["tool"]);
        h.annotate(&mut again);
        assert_eq!(sha_of(&again).0, sha_of(&done[0]).0, "a hit is attached at once");
        assert_eq!((h.stats.hashed, h.stats.cache_hits), (1, 1));

        // Rewritten in place (same inode): size/mtime/ctime change the key.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&bin, "#!/bin/sh\necho two, longer\n").unwrap();
        let mut changed = exec(2.0, 42, 1, bin.to_str().unwrap(), &["tool"]);
        h.annotate(&mut changed);
        assert_eq!(sha_of(&changed), (None, None), "a changed file is a miss");
        let done = wait(&mut h);
        assert_eq!(sha_of(&done[0]).0.as_deref(), Some(sha(b"#!/bin/sh\necho two, longer\n").as_str()));
    }

    #[test]
    fn large_files_flagged_gone_processes_fall_back_to_the_path() {
        let s = Scratch::new("hash-large");
        let big = s.write("big", &"x".repeat(5000));
        let mut h = ExeHasher::new(&s.0, 4096, 64 << 20).unwrap();
        // No PID/exe in the fake /proc: the path is used.
        let mut ev = exec(0.0, 7, 1, big.to_str().unwrap(), &["big"]);
        h.annotate(&mut ev);
        assert_eq!(sha_of(&ev), (None, Some("too_large")), "known at once, without reading");
        assert_eq!(h.stats.too_large, 1);
        let mut gone = exec(0.0, 8, 1, "/nonexistent/x", &["x"]);
        h.annotate(&mut gone);
        assert_eq!(h.stats.no_file, 1);
    }

    #[test]
    fn the_rate_limit_holds() {
        let s = Scratch::new("hash-rate");
        let f = s.write("f", &"y".repeat(300 * 1024));
        let mut h = ExeHasher::new(&s.0, 1 << 30, 128 * 1024).unwrap();
        let t0 = Instant::now();
        h.annotate(&mut exec(0.0, 9, 1, f.to_str().unwrap(), &["f"]));
        let done = wait(&mut h);
        // 300 KiB at 128 KiB/s with one second of burst: at least ~1.3 s.
        assert!(t0.elapsed() >= Duration::from_millis(1200), "{:?}", t0.elapsed());
        assert!(sha_of(&done[0]).0.is_some());
    }
}
