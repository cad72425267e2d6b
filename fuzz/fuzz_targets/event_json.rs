//! JSON event output: whatever bytes the kernel gives, the line `shrike
//! events` prints is valid JSON without a key twice, and so is the event of
//! the security message `shrike run` sends; the kernel text in it (comm)
//! unescapes to exactly the bytes the kernel sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrike::events::{
    decode::{Clock, decode},
    text::{unescape, until_nul},
};

fuzz_target!(|data: &[u8]| {
    // Random bytes rarely pass the kind and length checks: the first byte
    // picks a kind, the rest is the record after its kind field.
    let Some((&k, rest)) = data.split_first() else { return };
    let mut rec = u32::from(k % 16).to_ne_bytes().to_vec();
    rec.extend_from_slice(rest);
    let clock = Clock::with_offset(i128::from(k) << 40);
    let Ok(ev) = decode(&rec, &clock) else { return };
    let line = serde_json::to_string(&ev).expect("an event serializes");
    assert!(!line.contains('\n'), "a line break inside the line: {line}");
    if let Err(e) = shrike_fuzz::check_json_no_duplicates(&line) {
        panic!("{e}: {line}");
    }
    if let Some(msg) = shrike::message::to_message_event(&ev) {
        let text = serde_json::to_string(&msg).expect("a message event serializes");
        if let Err(e) = shrike_fuzz::check_json_no_duplicates(&text) {
            panic!("{e}: {text}");
        }
    }
    // The header's comm: 16 bytes at offset 32 (shrike_common::Header).
    let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    if let (Some(comm), Some(raw)) = (v["comm"].as_str(), rec.get(32..48)) {
        assert_eq!(unescape(comm).as_deref(), Ok(until_nul(raw)), "comm {comm:?}");
    }
});
