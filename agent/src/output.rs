//! Local sinks: JSON lines on stdout.

use std::{
    collections::BTreeSet,
    io::{BufWriter, Write},
    path::Path,
};

use chrono::{DateTime, Utc};

use crate::{
    detect::Detect,
    enrich::{
        ProcessTable,
        exec_misses::{ExecMisses, MissFolder},
        users::Users,
    },
    events::{Event, Kind},
    probes::Transport,
};

/// Final counters, printed as the last line on exit.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub kind: &'static str,
    pub transport: Transport,
    /// Records read from the kernel.
    pub received: u64,
    pub decode_errors: u64,
    pub perf_lost: u64,
    /// Events written (after the --kinds filter), alerts included.
    pub written: u64,
    /// Detection: events looked at, alerts, rules loaded and skipped.
    pub detect: crate::detect::DetectStats,
    /// Per kind: records the kernel wrote to the transport, and could not.
    pub kernel_sent: std::collections::BTreeMap<&'static str, u64>,
    pub kernel_lost: std::collections::BTreeMap<&'static str, u64>,
    /// The SDK socket's counters (with --sdk-socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdk: Option<crate::sdk::SdkCounts>,
}

/// `shrike events`' pipeline: enrichment, detection, then the kinds asked
/// for as JSON lines (detection sees every event, printed or not).
pub struct JsonLines<W: Write> {
    out: BufWriter<W>,
    kinds: BTreeSet<Kind>,
    procs: ProcessTable,
    /// Failed PATH-search execs folded into the exec that follows them.
    misses: MissFolder,
    /// Events the folding stage let through, for the event at hand.
    ready: Vec<Event>,
    users: Users,
    detect: Detect,
    alerts: Vec<Event>,
    written: u64,
    line: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W, kinds: BTreeSet<Kind>, proc_root: &Path, detect: Detect) -> Self {
        let mut procs = ProcessTable::new(proc_root);
        procs.seed();
        JsonLines {
            out: BufWriter::with_capacity(1 << 16, out),
            kinds,
            procs,
            misses: MissFolder::new(ExecMisses::default()),
            ready: Vec::new(),
            users: Users::new("/etc/passwd"),
            detect,
            alerts: Vec::new(),
            written: 0,
            line: Vec::with_capacity(1024),
        }
    }

    /// A line that is not an event (a recommendation), not counted in
    /// `written`.
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn detect(&self) -> &Detect {
        &self.detect
    }

    /// The policy for failed PATH-search execs (default: fold).
    pub fn exec_misses(mut self, policy: ExecMisses) -> Self {
        self.misses = MissFolder::new(policy);
        self
    }

    /// File events are kept only under these paths (relative ones resolved).
    pub fn watch(mut self, watch: std::sync::Arc<crate::enrich::files::Watch>) -> Self {
        self.procs.set_watch(watch);
        self
    }

    pub fn write_batch(&mut self, batch: Vec<Event>) -> std::io::Result<()> {
        let mut ready = std::mem::take(&mut self.ready);
        for mut ev in batch {
            if !self.procs.apply(&mut ev) {
                continue;
            }
            self.misses.push(ev, &mut ready);
            for ev in ready.drain(..) {
                self.emit(ev)?;
            }
        }
        self.ready = ready;
        Ok(())
    }

    /// One enriched event: detection, then the line if its kind is printed.
    fn emit(&mut self, mut ev: Event) -> std::io::Result<()> {
        let print = self.kinds.contains(&ev.kind());
        if !print && self.detect.is_empty() {
            return Ok(());
        }
        // Before detection: an alert carries its event as printed.
        ev.user = self.users.name(ev.uid);
        self.detect.process(&mut ev, &mut self.alerts);
        if print {
            self.write(&ev)?;
        }
        self.write_alerts()
    }

    /// An event another program reported through the SDK socket (its
    /// header is the sender's): detection, then the line.
    pub fn write_sdk(&mut self, ev: Event) -> std::io::Result<()> {
        self.emit(ev)
    }

    /// Failed execs are held for a moment: the periodic call must run.
    pub fn holds_misses(&self) -> bool {
        self.misses.held() > 0
    }

    /// The periodic call: misses held long enough, detection's windows
    /// that close without an event.
    pub fn tick(&mut self, now: DateTime<Utc>) -> std::io::Result<()> {
        let mut ready = std::mem::take(&mut self.ready);
        self.misses.expire(now, &mut ready);
        for ev in ready.drain(..) {
            self.emit(ev)?;
        }
        self.ready = ready;
        self.detect.tick(now, &mut self.alerts);
        self.write_alerts()
    }

    /// At exit: what is still held goes out.
    pub fn finish(&mut self) -> std::io::Result<()> {
        let mut ready = Vec::new();
        self.misses.flush(&mut ready);
        for ev in ready {
            self.emit(ev)?;
        }
        self.detect.persist();
        Ok(())
    }

    fn write_alerts(&mut self) -> std::io::Result<()> {
        if self.alerts.is_empty() {
            return Ok(());
        }
        // Taken and put back: the buffer is reused.
        let mut alerts = std::mem::take(&mut self.alerts);
        let mut res = Ok(());
        if self.kinds.contains(&Kind::Alert) {
            res = alerts.iter().try_for_each(|a| self.write(a));
        }
        alerts.clear();
        self.alerts = alerts;
        res
    }

    fn write(&mut self, ev: &Event) -> std::io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, ev)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    pub fn write_summary(&mut self, s: &Summary) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, s)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::Value;

    use super::*;
    use crate::{
        detect::{Alert, Detector, Severity},
        events::{Body, Exit},
    };

    /// A JSON object's keys in order, duplicates kept (serde_json's maps
    /// keep the last of two equal keys, hiding the defect).
    struct Keys(Vec<String>);

    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, IgnoredAny)) = m.next_entry::<String, IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }

    fn exit_event(pid: u32) -> Event {
        Event {
            time: "2026-03-01T12:00:00.123456789Z".parse().unwrap(),
            ktime_ns: 7,
            pid,
            tid: pid,
            ppid: Some(1),
            uid: 0,
            gid: 0,
            user: None,
            comm: "true".into(),
            exe: Some("/tmp/x/true".into()),
            body: Body::Exit(Exit { exit_code: Some(0), signal: None }),
        }
    }

    fn alert(ev: &Event) -> Alert {
        Alert {
            rule: "exec-from-tmp".into(),
            title: "Executable run from a temporary directory".into(),
            severity: Severity::High,
            source: "builtin",
            tags: Arc::from(vec![Arc::from("attack.t1059.004"), Arc::from("attack.execution")]),
            description: "/tmp/x/true ran from /tmp".into(),
            remediation: "Find what wrote it".into(),
            details: [("dir", "/tmp/x".to_owned())].into(),
            event: Box::new(ev.clone()),
        }
    }

    /// Fires on every exit of pid 4242.
    struct OnExit;
    impl Detector for OnExit {
        fn id(&self) -> &'static str {
            "on-exit"
        }
        fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
            if ev.pid == 4242 && matches!(ev.body, Body::Exit(_)) {
                out.push(alert(ev));
            }
        }
    }

    #[test]
    fn alert_line_has_the_contract_keys_once() {
        let mut ev = exit_event(4242);
        ev.user = Some("root".into());
        let line = serde_json::to_string(&alert(&ev).into_event()).unwrap();
        let Keys(keys) = serde_json::from_str(&line).unwrap();
        assert_eq!(
            keys,
            [
                "time",
                "ktime_ns",
                "pid",
                "tid",
                "ppid",
                "uid",
                "gid",
                "user",
                "comm",
                "exe",
                "kind",
                "rule",
                "title",
                "severity",
                "source",
                "tags",
                "description",
                "remediation",
                "details",
                "event"
            ],
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], "alert");
        assert_eq!(v["rule"], "exec-from-tmp");
        assert_eq!(v["severity"], "high");
        assert_eq!(v["source"], "builtin");
        assert_eq!(v["tags"], serde_json::json!(["attack.t1059.004", "attack.execution"]));
        assert_eq!(v["details"]["dir"], "/tmp/x");
        assert_eq!(v["time"], "2026-03-01T12:00:00.123456789Z");
        assert_eq!(v["pid"], 4242);
        // The triggering event exactly as `shrike events` prints it.
        assert_eq!(v["event"], serde_json::to_value(&ev).unwrap());
        let Keys(inner) = serde_json::from_value(v["event"].clone()).unwrap();
        let mut unique = inner.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), inner.len(), "{inner:?}");
    }

    #[test]
    fn detection_sees_kinds_that_are_not_printed() {
        let mut out = Vec::new();
        let detect = Detect::from_detectors(vec![Box::new(OnExit)]);
        let mut sink =
            JsonLines::new(&mut out, [Kind::Exec, Kind::Alert].into(), Path::new("/nonexistent"), detect);
        sink.write_batch(vec![exit_event(1), exit_event(4242)]).unwrap();
        sink.tick(chrono::Utc::now()).unwrap();
        assert_eq!(sink.written(), 1);
        assert_eq!(sink.detect().stats.events, 2);
        assert_eq!(sink.detect().stats.alerts, 1);
        drop(sink);
        let lines: Vec<Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["kind"], "alert");
        assert_eq!(lines[0]["event"]["kind"], "exit");
        // Enriched before detection: the alert's event has the user name.
        assert_eq!(lines[0]["event"]["user"], "root");
        assert_eq!(lines[0]["user"], "root");

        // Alerts hidden by --kinds are not printed.
        let mut out = Vec::new();
        let detect = Detect::from_detectors(vec![Box::new(OnExit)]);
        let mut sink = JsonLines::new(&mut out, [Kind::Exit].into(), Path::new("/nonexistent"), detect);
        sink.write_batch(vec![exit_event(4242)]).unwrap();
        assert_eq!(sink.written(), 1);
        drop(sink);
        assert!(String::from_utf8(out).unwrap().contains("\"kind\":\"exit\""));
    }
}
