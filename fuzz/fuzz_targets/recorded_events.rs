//! Recorded `shrike events` output, as `shrike rules test --events FILE`
//! reads it: any line is an event, passed over, or refused with a reason;
//! an event read back prints as valid JSON without a key twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrike::detect::sigma::record::event_of_line;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Ok(Some(ev)) = event_of_line(line) {
            let out = serde_json::to_string(&ev).expect("an event serializes");
            if let Err(e) = shrike_fuzz::check_json_no_duplicates(&out) {
                panic!("{e}: {out}");
            }
        }
    }
});
