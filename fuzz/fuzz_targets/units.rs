//! The value parsers behind flags and config keys: durations (`10s`, `PT7M`),
//! intervals (never zero), sizes (`64MiB`), learning periods, hubs, kinds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = shrike::units::parse_duration(s) {
        assert!(d.as_secs() <= 10_000_000_000, "{s:?} gave {d:?}");
    }
    if let Ok(d) = shrike::units::parse_interval(s) {
        assert!(!d.is_zero(), "{s:?} gave a zero interval");
    }
    let _ = shrike::detect::config::parse_size(s);
    let _ = shrike::detect::baseline::parse_learn(s);
    let _ = shrike::config::parse_hub(s);
    let _ = shrike::config::parse_kind_value(s);
    let _ = shrike::events::Kind::parse(s);
});
