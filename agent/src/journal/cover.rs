//! Which journal records the spool already holds, so that a start after a
//! kill replays none of them (without it, an event spooled in the last few
//! hundred milliseconds before a SIGKILL was delivered twice, the aggregated
//! ones under new Ids: the journal's watermark learns of the spool's
//! durability only with its next tick and group commit).
//!
//! Each message handed to the spool carries the journal sequence numbers of
//! the events it holds (a [`Cover`]: an epoch and ranges). The spool adds them
//! to its [`Covered`] set once the message is durable and writes that set
//! (`covered.a`/`covered.b` in the spool folder, alternately, so a write cut
//! by a kill leaves the other whole) before the publisher may send the
//! message, hence before it can be acknowledged and its file removed. At
//! start the journal's recovery skips every record in the set.
//!
//! A set holds only what is sure: it may lack a record that reached the spool
//! (a kill between a group's sync and the set's write, a set cut at
//! [`MAX_RANGES`]): that record is replayed (a duplicate); it never holds one
//! that did not (that would be a loss).
//!
//! File: magic "SHRKCOV1" | generation u64 | epochs u32 | per epoch: epoch u64
//! | ranges u32 | (from u64, to u64 exclusive)... | CRC-32 of what follows the
//! magic u32. All little endian. Pure functions over bytes (unit tested).

use std::collections::BTreeMap;

/// Ranges kept per epoch, at most: past it the oldest are forgotten (their
/// records, if still in the journal, would be replayed: duplicates, never a
/// loss). 4096 ranges are 64 KiB on disk.
pub const MAX_RANGES: usize = 4096;
/// A set's file is never read past this size.
pub const MAX_FILE: usize = 16 + 4 + 4 * (12 + MAX_RANGES * 16) + 4;
const MAGIC: &[u8; 8] = b"SHRKCOV1";

/// Sorted, disjoint, non-adjacent half-open ranges of sequence numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn insert(&mut self, seq: u64) {
        self.insert_range(seq, seq.saturating_add(1));
    }

    pub fn insert_range(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        let v = &mut self.0;
        // The common case: sequence numbers come in increasing order.
        match v.last_mut() {
            None => return v.push((from, to)),
            Some(last) if from > last.1 => return v.push((from, to)),
            Some(last) if from >= last.0 => {
                last.1 = last.1.max(to);
                return;
            }
            Some(_) => {}
        }
        // Ranges i..j overlap or touch [from, to).
        let i = v.partition_point(|r| r.1 < from);
        let j = v.partition_point(|r| r.0 <= to);
        if i == j {
            v.insert(i, (from, to));
        } else {
            let merged = (from.min(v[i].0), to.max(v[j - 1].1));
            v.splice(i..j, [merged]);
        }
    }

    pub fn union(&mut self, other: &Ranges) {
        for &(from, to) in &other.0 {
            self.insert_range(from, to);
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|r| r.1 <= seq);
        self.0.get(i).is_some_and(|r| r.0 <= seq)
    }

    /// How many of `from..to` are in the set.
    pub fn count_in(&self, from: u64, to: u64) -> u64 {
        self.0.iter().map(|&(a, b)| b.min(to).saturating_sub(a.max(from))).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ranges, not sequence numbers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Forgets what is below `seq`.
    pub fn remove_below(&mut self, seq: u64) {
        let i = self.0.partition_point(|r| r.1 <= seq);
        self.0.drain(..i);
        if let Some(first) = self.0.first_mut() {
            first.0 = first.0.max(seq);
        }
    }

    /// Forgets the oldest ranges past `max`.
    pub fn cap(&mut self, max: usize) {
        if self.0.len() > max {
            let extra = self.0.len() - max;
            self.0.drain(..extra);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().copied()
    }
}

/// The journal records a message holds: sequence numbers of one journal
/// epoch (a run of the agent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cover {
    pub epoch: u64,
    pub ranges: Ranges,
}

impl Cover {
    pub fn add(&mut self, epoch: u64, seq: u64) {
        self.switch(epoch);
        self.ranges.insert(seq);
        self.ranges.cap(MAX_RANGES);
    }

    pub fn add_all(&mut self, other: &Cover) {
        self.switch(other.epoch);
        self.ranges.union(&other.ranges);
        self.ranges.cap(MAX_RANGES);
    }

    /// Another epoch's records replace the old ones (those are forgotten:
    /// duplicates at worst, never a loss).
    fn switch(&mut self, epoch: u64) {
        if self.epoch != epoch {
            self.epoch = epoch;
            self.ranges = Ranges::default();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// What the spool made durable, per epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    pub epochs: BTreeMap<u64, Ranges>,
    /// Incremented at each write; the higher of the two files is the newer.
    pub generation: u64,
}

impl Covered {
    /// Adds a durable message's cover. An epoch not seen yet is a new
    /// journal, begun once the earlier ones were recovered: those are dropped.
    pub fn add(&mut self, c: &Cover) {
        if c.is_empty() {
            return;
        }
        if !self.epochs.contains_key(&c.epoch) {
            self.epochs.clear();
        }
        let r = self.epochs.entry(c.epoch).or_default();
        r.union(&c.ranges);
        r.cap(MAX_RANGES);
    }

    /// Forgets `epoch`'s records below `seq`: the journal's committed
    /// watermark, under which a start replays nothing anyway (keeps the set
    /// small, far from [`MAX_RANGES`]).
    pub fn remove_below(&mut self, epoch: u64, seq: u64) {
        if let Some(r) = self.epochs.get_mut(&epoch) {
            r.remove_below(seq);
        }
    }

    pub fn get(&self, epoch: u64) -> Option<&Ranges> {
        self.epochs.get(&epoch)
    }

    /// The file's bytes (and the generation they carry: the next one).
    pub fn encode(&mut self) -> Vec<u8> {
        self.generation += 1;
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&(self.epochs.len() as u32).to_le_bytes());
        for (epoch, r) in &self.epochs {
            b.extend_from_slice(&epoch.to_le_bytes());
            b.extend_from_slice(&(r.len() as u32).to_le_bytes());
            for (from, to) in r.iter() {
                b.extend_from_slice(&from.to_le_bytes());
                b.extend_from_slice(&to.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&b[8..]);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads a file; None when it is cut, damaged or not one. Never panics.
    pub fn decode(b: &[u8]) -> Option<Covered> {
        if b.len() < 8 + 8 + 4 + 4 || b.len() > MAX_FILE || &b[..8] != MAGIC {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(&body[8..]) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut at = 8;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = body.get(at..at + n)?;
            at += n;
            Some(s)
        };
        let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
        let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or_default());
        let generation = u64_of(take(8)?);
        let n = u32_of(take(4)?);
        let mut epochs = BTreeMap::new();
        for _ in 0..n.min(4) {
            let epoch = u64_of(take(8)?);
            let k = u32_of(take(4)?) as usize;
            let mut r = Ranges::default();
            for _ in 0..k.min(MAX_RANGES) {
                let (from, to) = (u64_of(take(8)?), u64_of(take(8)?));
                r.insert_range(from, to);
            }
            epochs.insert(epoch, r);
        }
        Some(Covered { epochs, generation })
    }

    /// The newer of the two files' contents (either may be missing or cut).
    pub fn newest(a: Option<&[u8]>, b: Option<&[u8]>) -> Covered {
        let a = a.and_then(Covered::decode);
        let b = b.and_then(Covered::decode);
        match (a, b) {
            (Some(a), Some(b)) => {
                if a.generation >= b.generation {
                    a
                } else {
                    b
                }
            }
            (a, b) => a.or(b).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[(u64, u64)]) -> Ranges {
        let mut r = Ranges::default();
        for &(a, b) in v {
            r.insert_range(a, b);
        }
        r
    }

    #[test]
    fn ranges_merge_and_answer() {
        let mut r = Ranges::default();
        for s in [5, 6, 7, 1, 2, 10, 3, 4, 20, 8] {
            r.insert(s);
        }
        assert_eq!(r.0, [(1, 9), (10, 11), (20, 21)]);
        assert!(r.contains(1) && r.contains(8) && r.contains(10) && r.contains(20));
        assert!(!r.contains(0) && !r.contains(9) && !r.contains(11) && !r.contains(21));
        assert_eq!(r.count_in(0, 100), 10);
        assert_eq!(r.count_in(7, 11), 3);
        r.insert_range(9, 20);
        assert_eq!(r.0, [(1, 21)]);
        let mut a = set(&[(0, 2), (10, 12)]);
        a.union(&set(&[(2, 3), (5, 6), (11, 15)]));
        assert_eq!(a.0, [(0, 3), (5, 6), (10, 15)]);
        let mut c = set(&[(0, 1), (2, 3), (4, 5)]);
        c.cap(2);
        assert_eq!(c.0, [(2, 3), (4, 5)], "the oldest go first");
        let mut d = set(&[(0, 3), (5, 9), (12, 20)]);
        d.remove_below(7);
        assert_eq!(d.0, [(7, 9), (12, 20)]);
        d.remove_below(10);
        assert_eq!(d.0, [(12, 20)]);
        d.remove_below(30);
        assert!(d.is_empty());
    }

    /// A new epoch replaces the old ones; the file round trips, the newer of
    /// two wins, and a cut or damaged one is ignored.
    #[test]
    fn covered_epochs_and_files() {
        let mut c = Covered::default();
        c.add(&Cover { epoch: 7, ranges: set(&[(0, 3)]) });
        c.add(&Cover { epoch: 7, ranges: set(&[(5, 6)]) });
        let old = c.encode();
        c.add(&Cover { epoch: 9, ranges: set(&[(0, 1)]) });
        assert_eq!(c.epochs.keys().copied().collect::<Vec<_>>(), [9]);
        let new = c.encode();
        assert_eq!(Covered::decode(&old).unwrap().get(7), Some(&set(&[(0, 3), (5, 6)])));
        assert_eq!(Covered::newest(Some(&old), Some(&new)), c);
        assert_eq!(Covered::newest(Some(&new), Some(&old)), c);
        for cut in 0..new.len() {
            assert_eq!(Covered::newest(Some(&old), Some(&new[..cut])).generation, 1, "cut at {cut}");
        }
        let mut bad = new.clone();
        bad[20] ^= 1;
        assert_eq!(Covered::newest(Some(&bad), None), Covered::default());
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for n in 0..3000usize {
            let mut b = MAGIC.to_vec();
            for _ in 0..(n % 200) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            // With a valid CRC too, so the parser past it is exercised.
            let crc = crc32fast::hash(&b[8..]);
            let _ = Covered::decode(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            if let Some(c) = Covered::decode(&b) {
                for r in c.epochs.values() {
                    assert!(r.0.windows(2).all(|w| w[0].1 < w[1].0), "{r:?}");
                }
            }
        }
    }
}
