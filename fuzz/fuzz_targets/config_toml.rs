//! The TOML config file: any text parses to settings or to an error naming
//! what is wrong (exit 2), never a panic; settings that resolve are usable
//! (intervals above zero, sizes within bounds).
#![no_main]

use std::sync::OnceLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use shrike::{config::FileConfig, daemon::RunSettings};

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    run: shrike::daemon::RunArgs,
}

fuzz_target!(|data: &[u8]| {
    static ARGS: OnceLock<Cmd> = OnceLock::new();
    let args = &ARGS.get_or_init(|| Cmd::parse_from(["shrike", "--dry-run"])).run;
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = toml::from_str::<FileConfig>(text) else { return };
    let Ok(s) = RunSettings::resolve_with(args, &file) else { return };
    assert!(!s.high_interval.is_zero() && !s.low_interval.is_zero());
    assert!(!s.snapshot_interval.is_zero() && !s.health_interval.is_zero());
    assert!(s.aggregation.values().flatten().all(|d| !d.is_zero()));
    assert!(s.spool_size >= 2 * s.max_message_size as u64);
});
