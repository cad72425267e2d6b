//! The journal's bytes: segment files and the received-counters page, and
//! recovery from them. Pure functions over bytes (no I/O), so they are unit
//! tested and fuzzed (`fuzz/`: `journal::format::recover`) directly.
//!
//! A segment file `{epoch:016x}-{first_seq:020}.jnl` is a header then records:
//!
//! ```text
//! header (56): magic "SHRKJNL1" | epoch u64 | first_seq u64 | base_high u64 | base_low u64
//!              | watermark u64 | CRC-32 of the 48 bytes before u32 | 0 u32
//! record:      body length u32 | CRC-32 of body u32 | body
//! body:        1 | seq u64 | priority u8 (0 high, 1 low) | the event as message JSON
//!              2 | from u64 | to u64 (exclusive) | high u64 | low u64   (events not journaled)
//!              3 | watermark u64   (every event of a lower seq reached the spool)
//! ```
//!
//! All integers little-endian. `base_*` count the events of each queue the
//! journal was told about (written or skipped) before `first_seq`, so that
//! the events a segment should hold are known from the next segment's header
//! (or, for the last one, from the counters page). A torn last record (the
//! agent killed during a write) or a corrupt one ends its segment: what
//! follows is not trusted, and what is missing is counted.
//!
//! The counters page `counters` (4096 bytes, memory-mapped by the agent):
//! `magic "SHRKJCT1" | epoch u64 | received_high u64 | received_low u64`: the
//! events received per queue since `epoch` began, updated in memory at every
//! event (the page cache keeps it when the process is killed).

use std::collections::BTreeMap;

use shrike_common::schema as sm;

use super::cover::{Covered, Ranges};
use crate::publish::spool::Priority;

pub const SEGMENT_MAGIC: &[u8; 8] = b"SHRKJNL1";
pub const COUNTERS_MAGIC: &[u8; 8] = b"SHRKJCT1";
pub const HEADER_LEN: usize = 56;
pub const COUNTERS_LEN: usize = 4096;
/// Larger record bodies are corrupt (an event's JSON is bounded far below).
pub const MAX_BODY: usize = 4 << 20;

const EVENT: u8 = 1;
const SKIP: u8 = 2;
const CHECKPOINT: u8 = 3;

/// Queue index in the counters: high 0, low 1.
pub fn slot(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Low => 1,
    }
}

fn prio_of(b: u8) -> Option<Priority> {
    match b {
        0 => Some(Priority::High),
        1 => Some(Priority::Low),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub epoch: u64,
    pub first_seq: u64,
    /// Events per queue (high, low) before `first_seq`.
    pub base: [u64; 2],
    pub watermark: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(SEGMENT_MAGIC);
        for (i, v) in
            [self.epoch, self.first_seq, self.base[0], self.base[1], self.watermark].iter().enumerate()
        {
            h[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&h[..48]);
        h[48..52].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn decode(b: &[u8]) -> Result<Header, String> {
        let h = b.get(..HEADER_LEN).ok_or("shorter than its header")?;
        if &h[..8] != SEGMENT_MAGIC {
            return Err("bad magic".into());
        }
        if crc32fast::hash(&h[..48]) != u32_at(h, 48) {
            return Err("header CRC mismatch".into());
        }
        Ok(Header {
            epoch: u64_at(h, 8),
            first_seq: u64_at(h, 16),
            base: [u64_at(h, 24), u64_at(h, 32)],
            watermark: u64_at(h, 40),
        })
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// One record, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Event {
        seq: u64,
        prio: Priority,
        json: &'a [u8],
    },
    /// Events `from..to` that were not journaled (journal full or behind),
    /// `counts` of them per queue.
    Skip {
        from: u64,
        to: u64,
        counts: [u64; 2],
    },
    Checkpoint {
        watermark: u64,
    },
}

fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    body(out);
    let len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends an event record; `json` writes the event's JSON. On an error
/// from `json` nothing is appended.
pub fn encode_event<E>(
    out: &mut Vec<u8>,
    seq: u64,
    prio: Priority,
    json: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = out.len();
    let mut res = Ok(());
    frame(out, |b| {
        b.push(EVENT);
        b.extend_from_slice(&seq.to_le_bytes());
        b.push(slot(prio) as u8);
        res = json(b);
    });
    if res.is_err() {
        out.truncate(start);
    }
    res
}

pub fn encode_skip(out: &mut Vec<u8>, from: u64, to: u64, counts: [u64; 2]) {
    frame(out, |b| {
        b.push(SKIP);
        for v in [from, to, counts[0], counts[1]] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    });
}

pub fn encode_checkpoint(out: &mut Vec<u8>, watermark: u64) {
    frame(out, |b| {
        b.push(CHECKPOINT);
        b.extend_from_slice(&watermark.to_le_bytes());
    });
}

/// How a segment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    Clean,
    /// The last record is incomplete (expected after a kill during a write).
    Torn {
        offset: usize,
    },
    /// A record failed its checks; nothing after it is read.
    Corrupt {
        offset: usize,
        why: String,
    },
}

#[derive(Debug)]
pub struct Segment<'a> {
    pub header: Header,
    pub records: Vec<Record<'a>>,
    pub tail: Tail,
}

/// Reads a segment's header and records, stopping at the first record that
/// is torn or fails its checks. Never panics, whatever the bytes.
pub fn parse_segment(b: &[u8]) -> Result<Segment<'_>, String> {
    let header = Header::decode(b)?;
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    let tail = loop {
        if at == b.len() {
            break Tail::Clean;
        }
        let Some(head) = b.get(at..at + 8) else { break Tail::Torn { offset: at } };
        let len = u32_at(head, 0) as usize;
        if len == 0 || len > MAX_BODY {
            break Tail::Corrupt { offset: at, why: format!("record length {len}") };
        }
        let Some(body) = b.get(at + 8..at + 8 + len) else { break Tail::Torn { offset: at } };
        if crc32fast::hash(body) != u32_at(head, 4) {
            // A record cut short and followed by nothing is torn; one
            // followed by more bytes is damaged.
            break Tail::Corrupt { offset: at, why: "record CRC mismatch".into() };
        }
        let rec = match (body[0], body.len()) {
            (EVENT, n) if n >= 10 => match prio_of(body[9]) {
                Some(prio) => Record::Event { seq: u64_at(body, 1), prio, json: &body[10..] },
                None => break Tail::Corrupt { offset: at, why: format!("priority {}", body[9]) },
            },
            (SKIP, 33) => Record::Skip {
                from: u64_at(body, 1),
                to: u64_at(body, 9),
                counts: [u64_at(body, 17), u64_at(body, 25)],
            },
            (CHECKPOINT, 9) => Record::Checkpoint { watermark: u64_at(body, 1) },
            (t, n) => break Tail::Corrupt { offset: at, why: format!("record type {t} of {n} bytes") },
        };
        records.push(rec);
        at += 8 + len;
    };
    Ok(Segment { header, records, tail })
}

/// The counters page: (epoch, received per queue).
pub fn parse_counters(b: &[u8]) -> Option<(u64, [u64; 2])> {
    let b = b.get(..32)?;
    (&b[..8] == COUNTERS_MAGIC).then(|| (u64_at(b, 8), [u64_at(b, 16), u64_at(b, 24)]))
}

pub fn encode_counters(epoch: u64) -> Vec<u8> {
    let mut b = vec![0u8; COUNTERS_LEN];
    b[..8].copy_from_slice(COUNTERS_MAGIC);
    b[8..16].copy_from_slice(&epoch.to_le_bytes());
    b
}

/// What a start finds in the journal.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Events not known to have reached the spool, oldest first, to deliver again.
    pub events: Vec<(Priority, sm::Event)>,
    /// Events received and not recoverable (not yet written when the agent
    /// was killed, skipped, torn or corrupt), per queue (high, low).
    pub lost: [u64; 2],
    /// Segments that ended in a torn or corrupt record.
    pub damaged: u64,
    /// What was wrong, for the log.
    pub problems: Vec<String>,
    /// Segments read (of the chosen epoch).
    pub segments: usize,
    /// The journal sequence number of each of `events` (same order).
    pub seqs: Vec<u64>,
    /// The epoch read (the counters page's, else the newest segment's).
    pub epoch: Option<u64>,
    /// Records not replayed because the spool holds them (`cover`).
    pub spooled: u64,
}

/// Recovers from the counters page (None when absent) and the segment files
/// (name, bytes). Only segments of the counters' epoch count; without a
/// counters page, every readable segment is replayed and the loss of the
/// last window cannot be known (said in `problems`).
pub fn recover(counters: Option<&[u8]>, files: &[(String, Vec<u8>)]) -> Recovery {
    recover_with(counters, files, &Covered::default())
}

/// [`recover`], leaving out the records `covered` (what the spool made
/// durable) says reached the spool: neither replayed nor counted lost.
pub fn recover_with(counters: Option<&[u8]>, files: &[(String, Vec<u8>)], covered: &Covered) -> Recovery {
    let mut r = Recovery::default();
    let counters = match counters.map(parse_counters) {
        Some(Some(c)) => Some(c),
        Some(None) => {
            r.problems.push("the counters page is damaged: the loss of the last window is unknown".into());
            None
        }
        None => None,
    };
    let mut segs: Vec<(&str, Segment<'_>)> = Vec::new();
    for (name, bytes) in files {
        match parse_segment(bytes) {
            Ok(s) if counters.is_none_or(|(epoch, _)| s.header.epoch == epoch) => segs.push((name, s)),
            // Of an earlier epoch: delivered before that epoch ended.
            Ok(_) => {}
            Err(why) => {
                r.damaged += 1;
                r.problems.push(format!("{name}: {why}"));
            }
        }
    }
    if counters.is_none() && !segs.is_empty() {
        r.problems.push("no counters page: replaying every segment, the last window's loss unknown".into());
    }
    segs.sort_by_key(|(_, s)| (s.header.epoch, s.header.first_seq));
    r.segments = segs.len();
    r.epoch = counters.map(|(e, _)| e).or_else(|| segs.last().map(|(_, s)| s.header.epoch));
    let no_cover = Ranges::default();
    let watermark = segs
        .iter()
        .flat_map(|(_, s)| {
            std::iter::once(s.header.watermark).chain(s.records.iter().filter_map(|rec| match rec {
                Record::Checkpoint { watermark } => Some(*watermark),
                _ => None,
            }))
        })
        .max()
        .unwrap_or(0);
    let mut replay: BTreeMap<u64, (Priority, sm::Event)> = BTreeMap::new();
    for (i, (name, s)) in segs.iter().enumerate() {
        let in_spool = covered.get(s.header.epoch).unwrap_or(&no_cover);
        let mut covered = [0u64; 2];
        for rec in &s.records {
            match rec {
                Record::Event { seq, prio, json } => {
                    if *seq < watermark {
                        covered[slot(*prio)] += 1;
                        continue;
                    }
                    if in_spool.contains(*seq) {
                        covered[slot(*prio)] += 1;
                        r.spooled += 1;
                        continue;
                    }
                    match serde_json::from_slice::<sm::Event>(json) {
                        Ok(ev) => {
                            covered[slot(*prio)] += 1;
                            replay.insert(*seq, (*prio, ev));
                        }
                        Err(e) => r.problems.push(format!("{name}: event {seq} unreadable: {e}")),
                    }
                }
                // Counts come from the file: saturating, so that damaged or
                // hostile bytes cannot overflow them (found by the
                // journal_file fuzz target).
                Record::Skip { from, to, counts } => {
                    covered[0] = covered[0].saturating_add(counts[0]);
                    covered[1] = covered[1].saturating_add(counts[1]);
                    // Skipped events not yet in the spool are lost; where a
                    // run straddles the watermark, its high ones count first.
                    let start = (*from).max(watermark);
                    let above = to
                        .saturating_sub(start)
                        .saturating_sub(in_spool.count_in(start, *to))
                        .min(counts[0].saturating_add(counts[1]));
                    let high = above.min(counts[0]);
                    r.lost[0] = r.lost[0].saturating_add(high);
                    r.lost[1] = r.lost[1].saturating_add(above - high);
                }
                Record::Checkpoint { .. } => {}
            }
        }
        if s.tail != Tail::Clean {
            r.damaged += 1;
            r.problems.push(format!("{name}: {:?}", s.tail));
        }
        // What the segment should hold, from the next header or the counters.
        let end = match (segs.get(i + 1), counters) {
            (Some((_, next)), _) if next.header.epoch == s.header.epoch => Some(next.header.base),
            (None, Some((_, received))) => Some(received),
            _ => None,
        };
        if let Some(end) = end {
            for q in 0..2 {
                r.lost[q] = r.lost[q]
                    .saturating_add(end[q].saturating_sub(s.header.base[q]).saturating_sub(covered[q]));
            }
        }
    }
    r.seqs = replay.keys().copied().collect();
    r.events = replay.into_values().collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u32) -> sm::Event {
        sm::Event::new(sm::ProcessCreate {
            executable: "/bin/true".into(),
            process_id: n,
            parent_process_id: 1,
            user_id: "0".into(),
            user_name: None,
            command_line: format!("/bin/true {n}"),
            extra_details: Default::default(),
        })
    }

    fn event_rec(out: &mut Vec<u8>, seq: u64, prio: Priority) {
        encode_event(out, seq, prio, |b| serde_json::to_writer(b, &ev(seq as u32))).unwrap();
    }

    fn seg(epoch: u64, first_seq: u64, base: [u64; 2], watermark: u64) -> Vec<u8> {
        Header { epoch, first_seq, base, watermark }.encode().to_vec()
    }

    fn counters(epoch: u64, received: [u64; 2]) -> Vec<u8> {
        let mut c = encode_counters(epoch);
        c[16..24].copy_from_slice(&received[0].to_le_bytes());
        c[24..32].copy_from_slice(&received[1].to_le_bytes());
        c
    }

    fn cmd_lines(r: &Recovery) -> Vec<String> {
        r.events
            .iter()
            .map(|(_, e)| match &e.payload {
                sm::Payload::ProcessCreate(items) => items[0].command_line.clone(),
                p => panic!("{p:?}"),
            })
            .collect()
    }

    /// Counts from the file cannot overflow the recovery's sums (found by
    /// the journal_file fuzz target; its input is in the corpus).
    #[test]
    fn huge_counts_saturate() {
        let mut b = seg(1, 0, [0, 0], 0);
        encode_skip(&mut b, 0, u64::MAX, [u64::MAX, u64::MAX]);
        encode_skip(&mut b, 0, u64::MAX, [u64::MAX, 1]);
        let r = recover(Some(&counters(1, [u64::MAX, u64::MAX])), &[("a".into(), b)]);
        assert_eq!(r.lost[0], u64::MAX, "{:?}", r.lost);
    }

    #[test]
    fn records_round_trip() {
        let mut b = seg(7, 3, [1, 2], 3);
        event_rec(&mut b, 3, Priority::Low);
        encode_skip(&mut b, 4, 6, [1, 1]);
        encode_checkpoint(&mut b, 5);
        let s = parse_segment(&b).unwrap();
        assert_eq!(s.header, Header { epoch: 7, first_seq: 3, base: [1, 2], watermark: 3 });
        assert_eq!(s.tail, Tail::Clean);
        assert!(matches!(s.records[0], Record::Event { seq: 3, prio: Priority::Low, .. }));
        assert_eq!(s.records[1], Record::Skip { from: 4, to: 6, counts: [1, 1] });
        assert_eq!(s.records[2], Record::Checkpoint { watermark: 5 });
    }

    /// Every cut of the last record (a kill in the middle of a write) keeps
    /// the records before it, replays them, and counts the cut one as lost.
    #[test]
    fn a_torn_last_record_is_counted_and_the_rest_replayed() {
        let mut b = seg(1, 0, [0, 0], 0);
        event_rec(&mut b, 0, Priority::High);
        event_rec(&mut b, 1, Priority::Low);
        let whole = b.len();
        event_rec(&mut b, 2, Priority::Low);
        let c = counters(1, [1, 2]);
        for cut in whole + 1..b.len() {
            let files = vec![("s".to_string(), b[..cut].to_vec())];
            let r = recover(Some(&c), &files);
            assert_eq!(cmd_lines(&r), ["/bin/true 0", "/bin/true 1"], "cut at {cut}");
            assert_eq!(r.lost, [0, 1], "cut at {cut}");
            assert_eq!(r.damaged, 1);
        }
        let r = recover(Some(&c), &[("s".to_string(), b.clone())]);
        assert_eq!((r.events.len(), r.lost, r.damaged), (3, [0, 0], 0));
    }

    /// Events received (counted in the page) but never written: the window
    /// a SIGKILL loses, counted per queue.
    #[test]
    fn the_unwritten_window_is_counted_per_queue() {
        let mut b = seg(9, 0, [0, 0], 0);
        event_rec(&mut b, 0, Priority::High);
        let r = recover(Some(&counters(9, [3, 4])), &[("s".into(), b)]);
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.lost, [2, 4]);
    }

    /// Below the watermark an event reached the spool: not replayed.
    /// Segments of another epoch are stale. Skipped events above the
    /// watermark are lost; those below were delivered.
    #[test]
    fn watermark_epochs_and_skips() {
        let mut a = seg(5, 0, [0, 0], 0);
        event_rec(&mut a, 0, Priority::Low);
        event_rec(&mut a, 1, Priority::Low);
        encode_skip(&mut a, 2, 4, [0, 2]);
        encode_checkpoint(&mut a, 3);
        let mut b = seg(5, 4, [0, 4], 3);
        event_rec(&mut b, 4, Priority::High);
        encode_skip(&mut b, 5, 6, [1, 0]);
        let mut stale = seg(4, 0, [0, 0], 0);
        event_rec(&mut stale, 0, Priority::High);
        let files = vec![("b".into(), b), ("stale".into(), stale), ("a".into(), a)];
        let r = recover(Some(&counters(5, [2, 4])), &files);
        assert_eq!(cmd_lines(&r), ["/bin/true 4"]);
        assert_eq!(r.lost, [1, 1], "skip 3 (low) and 5 (high) are above the watermark");
        assert_eq!(r.segments, 2);
    }

    /// A damaged record in the middle ends its segment; the next segment's
    /// header says how many it should have held.
    #[test]
    fn a_corrupt_record_ends_its_segment_and_is_counted() {
        let mut a = seg(2, 0, [0, 0], 0);
        event_rec(&mut a, 0, Priority::Low);
        let at = a.len();
        event_rec(&mut a, 1, Priority::Low);
        event_rec(&mut a, 2, Priority::Low);
        a[at + 12] ^= 0xff;
        let mut b = seg(2, 3, [0, 3], 0);
        event_rec(&mut b, 3, Priority::Low);
        let r = recover(Some(&counters(2, [0, 4])), &[("a".into(), a), ("b".into(), b)]);
        assert_eq!(cmd_lines(&r), ["/bin/true 0", "/bin/true 3"]);
        assert_eq!(r.lost, [0, 2]);
        assert_eq!(r.damaged, 1);
    }

    /// Records the spool holds (cover.rs) are neither replayed nor, when
    /// skipped, counted lost; a cover of another epoch does not apply.
    #[test]
    fn covered_records_are_left_out() {
        let mut a = seg(3, 0, [0, 0], 0);
        for s in 0..6 {
            event_rec(&mut a, s, Priority::Low);
        }
        encode_skip(&mut a, 6, 10, [0, 4]);
        let mut covered = Covered::default();
        let mut c = super::super::cover::Cover::default();
        for s in [1, 2, 4, 7, 8] {
            c.add(3, s);
        }
        covered.add(&c);
        let r = recover_with(Some(&counters(3, [0, 10])), &[("a".into(), a.clone())], &covered);
        assert_eq!(cmd_lines(&r), ["/bin/true 0", "/bin/true 3", "/bin/true 5"]);
        assert_eq!(r.seqs, [0, 3, 5]);
        assert_eq!(
            (r.spooled, r.lost, r.epoch),
            (3, [0, 2], Some(3)),
            "skipped 6 and 9 lost, 7 and 8 spooled"
        );
        let mut other = Covered::default();
        c.epoch = 4;
        other.add(&c);
        let r = recover_with(Some(&counters(3, [0, 10])), &[("a".into(), a)], &other);
        assert_eq!((r.events.len(), r.spooled, r.lost), (6, 0, [0, 4]));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..2000usize {
            let mut b = seg(1, 0, [0, 0], 0);
            for _ in 0..(n % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            let _ = recover(Some(&counters(1, [x % 5, 3])), &[("g".into(), b.clone())]);
            let _ = recover(None, &[("g".into(), b[n % b.len()..].to_vec())]);
        }
        let r = recover(Some(b"short"), &[]);
        assert_eq!(r.problems.len(), 1);
    }
}
