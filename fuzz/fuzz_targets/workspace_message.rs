//! The workspace's message decoder (`shrike_workspace::ingest::decode`):
//! any body (plain or gzip) on a topic of the agents' filter gives rows or a `rejected`
//! row with a reason, never a panic. Both are keyed by the body's SHA-256;
//! a rejected body is kept (cut at 64 KiB); accepted rows carry the device
//! and message they came from, and their payloads are JSON without a key
//! twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrike_workspace::ingest::decode::{Outcome, decode, message_id};

const FILTER: &str = "shrike/+/security";
const NOW: &str = "2026-12-06T06:00:00.000Z";
/// Small, so the size limit and gunzip's cap are reached too.
const MAX_SIZE: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the topic (the broker delivers only topics the
    // filter matches): a device's, or one whose `+` level is empty (the
    // device is then the message's AgentId).
    let (topic, body) = match data.split_first() {
        Some((b, rest)) if b & 1 == 0 => ("shrike/gw-17/security", rest),
        Some((_, rest)) => ("shrike//security", rest),
        None => ("shrike/gw-17/security", data),
    };
    let id = message_id(body);
    match decode(FILTER, topic, body, NOW, MAX_SIZE) {
        Outcome::Rejected(r) => {
            assert!(!r.reason.is_empty(), "a rejection has a reason");
            assert_eq!(r.id, id);
            assert_eq!(r.size, body.len() as i64);
            assert!(r.body.len() <= 4 * 64 * 1024 + 64, "the kept body is cut: {} bytes", r.body.len());
        }
        Outcome::Accepted(d) => {
            assert_eq!(d.message.id, id);
            if topic == "shrike/gw-17/security" {
                assert_eq!(d.message.device, "gw-17");
            } else {
                assert_eq!(d.message.device, d.message.agent_id);
            }
            for e in &d.events {
                assert_eq!(e.device, d.message.device);
                if let Err(err) = shrike_fuzz::check_json_no_duplicates(&e.payload) {
                    panic!("{err}: {}", e.payload);
                }
            }
            for a in &d.alerts {
                assert_eq!(a.device, d.message.device);
                let _: serde_json::Value =
                    serde_json::from_str(&a.payload).expect("an alert's payload is JSON");
            }
        }
    }
});
