//! The on-disk spool (store and forward): every message is written here before
//! it is published and removed only when the broker acknowledged it.
//!
//! Format, kept simple on purpose (no crate fit: the queue crates on crates.io
//! either lack per-record integrity checks or priority-aware eviction):
//! one file per message in the spool directory, named `{seq:020}.{h|l}.msg`
//! (`seq` increasing, `h`/`l` the priority). A file is
//!
//! ```text
//! magic "SHRKSPL1" (8) | payload length u32 LE | CRC-32 of payload u32 LE | payload
//! ```
//!
//! written as `NAME.tmp`, fsync'd, renamed to `NAME` and the directory fsync'd.
//! A torn write (kill -9, power loss) leaves at most one `.tmp` file or one file
//! whose length or CRC does not match: it is detected at open (or read), removed
//! and counted; no other message is affected. When the spool is full the oldest
//! low-priority messages are dropped first, then the oldest high-priority ones,
//! and every drop is counted.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{Read, Write},
    path::{Path, PathBuf},
};

const MAGIC: &[u8; 8] = b"SHRKSPL1";
const HEADER: usize = 16;

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
    #[error("spool directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("writing spool file {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("message of {size} bytes does not fit a spool of {capacity} bytes")]
    TooLarge { size: u64, capacity: u64 },
    #[error("spool record {0} is corrupt ({1}); removed")]
    Corrupt(u64, String),
    #[error("spool record {0} not found")]
    Missing(u64),
}

/// Counters reported in the agent's health events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    pub dropped_low: u64,
    pub dropped_high: u64,
    /// Torn or corrupt records found (and removed) at open or read.
    pub corrupt: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    prio: Priority,
    /// Bytes on disk (header included).
    size: u64,
}

pub struct Spool {
    dir: PathBuf,
    capacity: u64,
    used: u64,
    next_seq: u64,
    entries: BTreeMap<u64, Entry>,
    stats: SpoolStats,
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
    Some((seq.parse().ok()?, prio))
}

impl Spool {
    /// Opens (creating) the spool in `dir`, resuming what an earlier run left.
    pub fn open(dir: impl Into<PathBuf>, capacity: u64) -> Result<Spool, SpoolError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| SpoolError::Dir(dir.clone(), e))?;
        let mut spool = Spool {
            dir,
            capacity,
            used: 0,
            next_seq: 0,
            entries: BTreeMap::new(),
            stats: SpoolStats::default(),
        };
        let rd = fs::read_dir(&spool.dir).map_err(|e| SpoolError::Dir(spool.dir.clone(), e))?;
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = ent.path();
            if name.ends_with(".tmp") {
                // A write that never completed.
                let _ = fs::remove_file(&path);
                spool.stats.corrupt += 1;
                continue;
            }
            let Some((seq, prio)) = parse_name(&name) else { continue };
            match check_file(&path) {
                Ok(size) => {
                    spool.entries.insert(seq, Entry { prio, size });
                    spool.used += size;
                    spool.next_seq = spool.next_seq.max(seq + 1);
                }
                Err(why) => {
                    let _ = fs::remove_file(&path);
                    spool.stats.corrupt += 1;
                    let n = spool.stats.corrupt;
                    if crate::telemetry::sampled(n) {
                        tracing::warn!(file = %path.display(), count = n, "removing corrupt spool record: {why}");
                    }
                }
            }
        }
        Ok(spool)
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes used on disk.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Sequence numbers waiting, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = (u64, Priority)> + '_ {
        self.entries.iter().map(|(s, e)| (*s, e.prio))
    }

    /// Stores a message durably; returns its sequence number. Makes room by
    /// dropping the oldest low-priority messages, then the oldest high ones.
    pub fn push(&mut self, prio: Priority, payload: &[u8]) -> Result<u64, SpoolError> {
        let size = (HEADER + payload.len()) as u64;
        if size > self.capacity {
            return Err(SpoolError::TooLarge { size, capacity: self.capacity });
        }
        while self.used + size > self.capacity {
            let victim = self
                .entries
                .iter()
                .find(|(_, e)| e.prio == Priority::Low)
                .or_else(|| self.entries.iter().next())
                .map(|(s, e)| (*s, *e));
            let Some((seq, e)) = victim else { break };
            self.remove(seq);
            match e.prio {
                Priority::Low => self.stats.dropped_low += 1,
                Priority::High => self.stats.dropped_high += 1,
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.dir.join(file_name(seq, prio));
        let tmp = path.with_extension("msg.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            let mut head = [0u8; HEADER];
            head[..8].copy_from_slice(MAGIC);
            head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            head[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
            f.write_all(&head)?;
            f.write_all(payload)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(SpoolError::Write(path, e));
        }
        self.entries.insert(seq, Entry { prio, size });
        self.used += size;
        Ok(seq)
    }

    /// Reads a stored message, checking its integrity. A corrupt record is
    /// removed, counted and reported as an error.
    pub fn read(&mut self, seq: u64) -> Result<Vec<u8>, SpoolError> {
        let e = *self.entries.get(&seq).ok_or(SpoolError::Missing(seq))?;
        let path = self.dir.join(file_name(seq, e.prio));
        match read_file(&path) {
            Ok(p) => Ok(p),
            Err(why) => {
                self.remove(seq);
                self.stats.corrupt += 1;
                Err(SpoolError::Corrupt(seq, why))
            }
        }
    }

    /// The broker acknowledged `seq`: forget it.
    pub fn ack(&mut self, seq: u64) {
        self.remove(seq);
    }

    fn remove(&mut self, seq: u64) {
        if let Some(e) = self.entries.remove(&seq) {
            self.used -= e.size;
            let _ = fs::remove_file(self.dir.join(file_name(seq, e.prio)));
        }
    }
}

fn check_file(path: &Path) -> Result<u64, String> {
    read_file(path).map(|p| (HEADER + p.len()) as u64)
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let mut head = [0u8; HEADER];
    f.read_exact(&mut head).map_err(|_| "shorter than its header".to_owned())?;
    if &head[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
    let crc = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    let mut payload = Vec::with_capacity(len.min(1 << 24));
    f.read_to_end(&mut payload).map_err(|e| e.to_string())?;
    if payload.len() != len {
        return Err(format!("length {} but header says {len}", payload.len()));
    }
    if crc32fast::hash(&payload) != crc {
        return Err("CRC mismatch".into());
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shrike-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn push_read_ack_and_resume_in_order() {
        let d = dir("order");
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        let a = s.push(Priority::Low, b"first").unwrap();
        let b = s.push(Priority::High, b"second").unwrap();
        assert!(a < b);
        drop(s);
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        let order: Vec<_> = s.pending().collect();
        assert_eq!(order, vec![(a, Priority::Low), (b, Priority::High)]);
        assert_eq!(s.read(a).unwrap(), b"first");
        s.ack(a);
        assert_eq!(s.len(), 1);
        let c = s.push(Priority::Low, b"third").unwrap();
        assert!(c > b, "sequence resumes after restart");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn full_spool_drops_oldest_low_first_and_counts() {
        let d = dir("full");
        let cap = 3 * (HEADER as u64 + 10);
        let mut s = Spool::open(&d, cap).unwrap();
        let h1 = s.push(Priority::High, &[1; 10]).unwrap();
        let l1 = s.push(Priority::Low, &[2; 10]).unwrap();
        let l2 = s.push(Priority::Low, &[3; 10]).unwrap();
        let h2 = s.push(Priority::High, &[4; 10]).unwrap();
        let seqs: Vec<u64> = s.pending().map(|(q, _)| q).collect();
        assert_eq!(seqs, vec![h1, l2, h2], "the oldest low-priority message went first");
        assert_eq!(s.stats(), SpoolStats { dropped_low: 1, dropped_high: 0, corrupt: 0 });
        let _ = l1;
        s.push(Priority::High, &[5; 10]).unwrap();
        s.push(Priority::High, &[6; 10]).unwrap();
        assert_eq!(s.stats().dropped_low, 2);
        assert_eq!(s.stats().dropped_high, 1);
        assert!(matches!(s.push(Priority::Low, &[0; 100]), Err(SpoolError::TooLarge { .. })));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn torn_and_corrupt_records_are_detected_and_isolated() {
        let d = dir("torn");
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        let good = s.push(Priority::High, b"intact message").unwrap();
        let bad = s.push(Priority::Low, b"will be cut short").unwrap();
        let flipped = s.push(Priority::Low, b"will be flipped").unwrap();
        drop(s);
        // A torn write: the file is cut, a temp file left behind.
        let bad_path = d.join(file_name(bad, Priority::Low));
        let len = fs::metadata(&bad_path).unwrap().len();
        File::options().write(true).open(&bad_path).unwrap().set_len(len - 5).unwrap();
        fs::write(d.join("00000000000000000099.l.msg.tmp"), b"SHRKSPL1 partial").unwrap();
        // A flipped byte.
        let fp = d.join(file_name(flipped, Priority::Low));
        let mut bytes = fs::read(&fp).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&fp, bytes).unwrap();

        let mut s = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(s.pending().map(|(q, _)| q).collect::<Vec<_>>(), vec![good]);
        assert_eq!(s.stats().corrupt, 3);
        assert_eq!(s.read(good).unwrap(), b"intact message");
        fs::remove_dir_all(&d).unwrap();
    }
}
