//! Journal files read at start (`journal::format::recover`): any counters
//! page and segment files give a recovery (events to deliver again, losses
//! counted, problems named), never a panic, whatever the bytes.
//!
//! Input: byte 0 = flags (bit 0: a counters page is present, its 32 bytes
//! follow; bit 1: the CRCs are made right before reading, so the fuzzer
//! gets past them to the records and the recovery logic); then segment
//! files, each starting at an occurrence of the segment magic; from the
//! first occurrence of the cover magic on, the spool's cover set
//! (`journal::cover`: the records the spool holds, skipped), its CRC made
//! right too with bit 1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrike::journal::{
    cover::Covered,
    format::{HEADER_LEN, SEGMENT_MAGIC, recover_with},
};

/// Sets the header's and every whole record's CRC.
fn fix_crcs(seg: &mut [u8]) {
    if seg.len() < HEADER_LEN {
        return;
    }
    let crc = shrike_fuzz::crc32(&seg[..48]);
    seg[48..52].copy_from_slice(&crc.to_le_bytes());
    let mut at = HEADER_LEN;
    while at + 8 <= seg.len() {
        let len = u32::from_le_bytes(seg[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e <= seg.len()) else { break };
        let crc = shrike_fuzz::crc32(&seg[at + 8..end]);
        seg[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let counters = if flags & 1 != 0 {
        let n = rest.len().min(32);
        let (c, r) = rest.split_at(n);
        rest = r;
        let mut page = c.to_vec();
        page.resize(4096, 0);
        Some(page)
    } else {
        None
    };
    let cover = match rest.windows(8).position(|w| w == b"SHRKCOV1") {
        Some(at) => {
            let (r, c) = rest.split_at(at);
            rest = r;
            let mut c = c.to_vec();
            if flags & 2 != 0 && c.len() >= 12 {
                let n = c.len();
                let crc = shrike_fuzz::crc32(&c[8..n - 4]);
                c[n - 4..].copy_from_slice(&crc.to_le_bytes());
            }
            Some(c)
        }
        None => None,
    };
    let covered = Covered::newest(cover.as_deref(), None);
    // Segments: split at each magic.
    let mut starts: Vec<usize> =
        rest.windows(8).enumerate().filter(|(_, w)| w == SEGMENT_MAGIC).map(|(i, _)| i).collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let mut files = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(rest.len());
        let mut seg = rest[s..e].to_vec();
        if flags & 2 != 0 {
            fix_crcs(&mut seg);
        }
        files.push((format!("{i:016x}-{s:020}.jnl"), seg));
    }
    let r = recover_with(counters.as_deref(), &files, &covered);
    assert!(r.segments <= files.len());
    assert_eq!(r.events.len(), r.seqs.len());
    if let Some(in_spool) = r.epoch.and_then(|e| covered.get(e)) {
        assert!(r.seqs.iter().all(|s| !in_spool.contains(*s)), "a record the spool holds is replayed");
    }
});
