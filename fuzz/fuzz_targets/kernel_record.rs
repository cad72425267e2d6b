//! Kernel record decoding: whatever bytes come out of the ring buffer (or a
//! perf sample with its padding), `decode` returns an event or an error,
//! never panics, and never reads past what arrived.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrike::events::decode::{Clock, decode, raw_kind};

fuzz_target!(|data: &[u8]| {
    let clock = Clock::with_offset(0);
    let _ = raw_kind(data);
    let _ = decode(data, &clock);
    // A record of the right kind at every length: the first bytes are kept,
    // the kind is forced to each known one.
    if data.len() >= 4 {
        for k in 1..=16u32 {
            let mut rec = data.to_vec();
            rec[..4].copy_from_slice(&k.to_ne_bytes());
            let _ = decode(&rec, &clock);
        }
    }
});
