//! Spool file reading: a spool folder holding any bytes under a message's
//! name (torn, truncated, foreign, huge-length headers) opens, every record
//! it keeps reads back intact, and the rest is counted as corrupt: never a
//! panic, never a message that is not what was written.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shrike::publish::spool::Spool;

/// Sets the CRC of a spool file of either format (see publish/spool.rs).
fn fix_crc(b: &mut [u8]) {
    if b.starts_with(b"SHRKSPL1") && b.len() >= 16 {
        let crc = shrike_fuzz::crc32(&b[16..]);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
    } else if b.starts_with(b"SHRKSPL2") && b.len() >= 24 {
        let mut covered = b[8..20].to_vec();
        covered.extend_from_slice(&b[24..]);
        let crc = shrike_fuzz::crc32(&covered);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| shrike_fuzz::scratch("spool"));
    // Empty the folder (a previous input's files).
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    // The first byte picks the file's name (bits 0-1: high or low priority,
    // a torn write's temporary name, or a name that is not the spool's),
    // whether the CRC is made right (bit 2: the fuzzer then gets past it)
    // and whether a message is pushed after (bit 3).
    let Some((&sel, body)) = data.split_first() else { return };
    let mut body = body.to_vec();
    if sel & 4 != 0 {
        fix_crc(&mut body);
    }
    let body = body.as_slice();
    // The record parser alone (what every read goes through).
    if let Ok(rec) = shrike::publish::spool::parse_record(body, 1 << 20) {
        assert!(body.ends_with(rec.payload) && rec.payload.len() <= 1 << 20);
    }
    let name = match sel % 4 {
        0 => "00000000000000000007.h.msg",
        1 => "00000000000000000003.l.msg",
        2 => "00000000000000000005.l.msg.tmp",
        _ => "foreign.msg",
    };
    std::fs::write(dir.join(name), body).expect("write the spool file");
    let Ok(mut spool) = Spool::open(dir, 1 << 20) else { return };
    let pending: Vec<u64> = spool.pending().into_iter().map(|(seq, _)| seq).collect();
    for seq in pending {
        if let Ok(payload) = spool.read(seq) {
            // What reads back is exactly the file's payload, after its
            // header (of either format).
            assert!(body.len() >= payload.len() + 16 && body.ends_with(&payload), "read back {payload:?}");
        }
    }
    // A spool that opened takes a new message after whatever it found (bit 3:
    // a durable write costs a sync, so not at every input).
    if sel & 8 == 0 {
        return;
    }
    let seq = spool.push(shrike::publish::spool::Priority::High, b"after").expect("push");
    assert_eq!(spool.read(seq).expect("read back"), b"after");
});
