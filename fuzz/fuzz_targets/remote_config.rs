//! The remote configuration document (a retained MQTT message, or the IoT
//! Hub twin's desired properties made into one): any bytes are accepted or
//! rejected naming the setting, never a panic; a document accepted has
//! settings the config file's types take as a whole, and they resolve to
//! usable settings or to an error.
#![no_main]

use std::sync::OnceLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use shrike::{config::FileConfig, daemon::RunSettings, remote};

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    run: shrike::daemon::RunArgs,
}

fn check(doc: &[u8], args: &shrike::daemon::RunArgs) {
    let d = match remote::parse_document(doc) {
        Ok(d) => d,
        Err(r) => {
            assert!(!r.setting.is_empty() && !r.message.is_empty());
            return;
        }
    };
    assert_eq!(d.sha256.len(), 64);
    let file: FileConfig = serde_json::from_value(serde_json::Value::Object(d.settings))
        .expect("every key checked alone: the whole deserializes");
    if let Ok(s) = RunSettings::resolve_with(args, &file) {
        assert!(!s.high_interval.is_zero() && !s.low_interval.is_zero());
        assert!(s.spool_size >= 2 * s.max_message_size as u64);
    }
}

fuzz_target!(|data: &[u8]| {
    static ARGS: OnceLock<Cmd> = OnceLock::new();
    let args = &ARGS.get_or_init(|| Cmd::parse_from(["shrike", "--dry-run"])).run;
    check(data, args);
    // The same bytes as a twin's desired properties.
    if let Ok(desired) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok((doc, _)) = remote::twin::to_document(&desired) {
            check(&doc, args);
        }
        let mut held = serde_json::json!({"shrike": {"priority": {"exec": "low"}}});
        remote::twin::merge_patch(&mut held, &desired);
    }
});
