//! Aggregation (deduplication): identical events within an interval become one
//! event with a hit count and first/last times, the Azure agent's "event
//! aggregation". Identity is a key of the fields that matter for security:
//! process events by executable + command line + user; connections by
//! executable + remote address/port + protocol + direction; logins by service +
//! user + remote host + step + result. Fields that differ between merged hits
//! (pid, tid, ports chosen by the kernel...) are left out of the aggregate,
//! or, where the kind requires them, zeroed and named in
//! `ExtraDetails.MergedFields` (see `shrike_common::schema::Merge`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shrike_common::schema as sm;

use crate::{
    events::{Body, Event, Kind, Sock},
    message,
};

/// A payload item being merged, of one of the kinds events map to.
#[derive(Clone, Debug)]
enum Merging {
    ProcessCreate(sm::Aggregate<sm::ProcessCreate>),
    ProcessTerminate(sm::Aggregate<sm::ProcessTerminate>),
    ConnectionCreate(sm::Aggregate<sm::ConnectionCreate>),
    Login(sm::Aggregate<sm::Login>),
    PrivilegeChange(sm::Aggregate<sm::PrivilegeChange>),
    FileChange(sm::Aggregate<sm::FileChange>),
    Alert(sm::Aggregate<sm::Alert>),
}

macro_rules! merging {
    ($($kind:ident),*) => {
        impl Merging {
            fn new(payload: sm::Payload, at: DateTime<Utc>) -> Option<Merging> {
                match payload {
                    $(sm::Payload::$kind(mut items) if items.len() == 1 => {
                        Some(Merging::$kind(sm::Aggregate::new(items.remove(0), at)))
                    })*
                    _ => None,
                }
            }

            /// Adds a hit; false when it cannot merge (a field with no zero value differs).
            fn add(&mut self, payload: &sm::Payload, at: DateTime<Utc>) -> bool {
                match (self, payload) {
                    $((Merging::$kind(agg), sm::Payload::$kind(items)) if items.len() == 1 => {
                        agg.add(&items[0], at).is_ok()
                    })*
                    _ => false,
                }
            }

            fn add_repeat(&mut self, at: DateTime<Utc>) {
                match self {
                    $(Merging::$kind(agg) => agg.add_repeat(at),)*
                }
            }

            fn hits(&self) -> u64 {
                match self {
                    $(Merging::$kind(agg) => agg.hits(),)*
                }
            }

            fn into_event(self) -> sm::Event {
                match self {
                    $(Merging::$kind(agg) => agg.into_event(),)*
                }
            }
        }
    };
}

merging!(ProcessCreate, ProcessTerminate, ConnectionCreate, Login, PrivilegeChange, FileChange, Alert);

/// The fields that identify a hit, borrowed from the event.
#[derive(PartialEq, Hash)]
enum KeyParts<'a> {
    Exec(&'a str, &'a [String], u32, i64),
    Exit(Option<&'a str>, Option<i32>, Option<i32>, u32),
    Fork(Option<&'a str>, u32),
    Sock(Option<&'a str>, &'static str, Option<std::net::IpAddr>, Option<u16>, &'static str, u32),
    Login(&'a str, &'a str, Option<&'a str>, &'static str, &'static str),
    Privilege(Option<&'a str>, &'static str, &'a [Option<u32>], u32, i32),
    File(Option<&'a str>, &'static str, &'a str, Option<&'a str>, u32, i64),
    /// One key per (rule, process).
    Alert(&'a str, u32),
    /// SDK events are never merged (each keeps the Id its sender was
    /// given): one key per event.
    Sdk(u128),
}

fn key_parts(ev: &Event) -> (Kind, KeyParts<'_>) {
    let user = ev.uid;
    let exe = ev.exe.as_deref();
    let parts = match &ev.body {
        Body::Exec(x) => KeyParts::Exec(&x.filename, &x.argv, user, x.result),
        Body::Exit(x) => KeyParts::Exit(exe, x.exit_code, x.signal, user),
        Body::Fork(_) => KeyParts::Fork(exe, user),
        Body::Connect(s) | Body::Accept(s) | Body::Listen(s) | Body::Bind(s) => {
            let port = if matches!(ev.body, Body::Connect(_)) { s.remote_port } else { s.local_port };
            KeyParts::Sock(exe, s.protocol, s.remote_addr, port, s.status, user)
        }
        Body::Login(l) => KeyParts::Login(&l.service, &l.user, l.rhost.as_deref(), l.step, l.result),
        Body::Privilege(p) => KeyParts::Privilege(exe, p.call, &p.args, user, p.result),
        Body::File(f) => KeyParts::File(exe, f.operation, &f.path, f.new_path.as_deref(), user, f.result),
        Body::Alert(a) => KeyParts::Alert(&a.rule, ev.pid),
        Body::Sdk(s) => KeyParts::Sdk(s.event.id().as_u128()),
    };
    (ev.kind(), parts)
}

/// An aggregation key: a keyed hash (SipHash, random keys per agent) of the
/// identifying fields, computed without allocating. A hit is merged only
/// when its fields equal those of the key's first hit, so a collision,
/// however unlikely or crafted, never merges different things.
type Key = u64;

/// Fields that differ between hits of one key in most workloads (the
/// process and thread ids, the fd, the port the kernel chose), as bits.
mod volatile {
    pub const PID: u8 = 1;
    pub const TID: u8 = 2;
    pub const PPID: u8 = 4;
    pub const FD: u8 = 8;
    pub const LOCAL_PORT: u8 = 16;
    /// accept: the peer's port and the new fd (the return value).
    pub const REMOTE_PORT: u8 = 32;
    pub const RESULT: u8 = 64;
}

/// Which volatile fields of `ev` differ from `first`, or None when any other
/// field differs. Every volatile field maps one-to-one onto a payload field,
/// so a hit whose differing fields were all zeroed by an earlier merge
/// would merge without changing the item: it is only counted (no payload
/// is built for it: the hot path of a repetitive workload).
fn volatile_diff(first: &Event, ev: &Event) -> Option<u8> {
    if (first.uid, first.gid, &first.user, &first.comm, &first.exe)
        != (ev.uid, ev.gid, &ev.user, &ev.comm, &ev.exe)
    {
        return None;
    }
    let mut d = 0;
    if first.pid != ev.pid {
        d |= volatile::PID;
    }
    if first.tid != ev.tid {
        d |= volatile::TID;
    }
    if first.ppid != ev.ppid {
        d |= volatile::PPID;
    }
    let same_body = match (&first.body, &ev.body) {
        (Body::Connect(a), Body::Connect(b)) | (Body::Accept(a), Body::Accept(b)) => {
            if a.fd != b.fd {
                d |= volatile::FD;
            }
            if a.local_port != b.local_port {
                d |= volatile::LOCAL_PORT;
            }
            if a.remote_port != b.remote_port {
                d |= volatile::REMOTE_PORT;
            }
            if a.result != b.result {
                d |= volatile::RESULT;
            }
            let masked = |s: &Sock| Sock { fd: 0, local_port: None, remote_port: None, result: 0, ..*s };
            masked(a) == masked(b)
        }
        (a, b) => a == b,
    };
    same_body.then_some(d)
}

enum Slot {
    /// Seen once and sent at once (leading edge), no repeat yet.
    Sent(Box<Event>),
    Open(Box<Open>),
}

/// One key's aggregate: the merged item, the first hit as the agent saw it,
/// and the volatile fields already zeroed in the item.
struct Open {
    merging: Merging,
    first: Event,
    zeroed: u8,
}

pub struct Aggregator {
    /// Keys seen this interval.
    open: HashMap<Key, Slot>,
    /// Send the first event of each key at once and aggregate only the
    /// repeats: alerts (high-priority kinds) must not wait for the interval.
    leading_edge: bool,
    /// Bound on distinct keys held; past it, events pass through unaggregated
    /// rather than growing memory without limit.
    max_keys: usize,
    /// Events taken in (hits), for the agent's statistics.
    hits: u64,
    keys: std::hash::RandomState,
}

/// What [`Aggregator::push`] did with an event.
pub enum Pushed {
    /// Merged into an aggregate (reported at the next flush).
    Merged,
    /// Not aggregated: send it as it is.
    Single(sm::Event),
    /// Kinds with no security message (fork, listen, bind).
    Unmapped,
}

impl Aggregator {
    pub fn new(max_keys: usize) -> Aggregator {
        Aggregator {
            open: HashMap::new(),
            leading_edge: false,
            max_keys,
            hits: 0,
            keys: std::hash::RandomState::new(),
        }
    }

    /// The first event of each key in an interval passes through at once;
    /// only its repeats are merged (for kinds whose events are alerts).
    pub fn leading_edge(mut self, on: bool) -> Aggregator {
        self.leading_edge = on;
        self
    }

    pub fn push(&mut self, ev: &Event) -> Pushed {
        use std::hash::BuildHasher;
        if matches!(ev.body, Body::Fork(_) | Body::Listen(_) | Body::Bind(_) | Body::Sdk(_)) {
            return Pushed::Unmapped;
        }
        let at = message::time_of(ev);
        let parts = key_parts(ev);
        let k = self.keys.hash_one(&parts);
        match self.open.get_mut(&k) {
            Some(Slot::Open(open)) if key_parts(&open.first) == parts => {
                let diff = volatile_diff(&open.first, ev);
                if diff.is_some_and(|d| d & !open.zeroed == 0) {
                    open.merging.add_repeat(at);
                    self.hits += 1;
                    return Pushed::Merged;
                }
                let Some(payload) = message::to_payload(ev) else { return Pushed::Unmapped };
                if open.merging.add(&payload, at) {
                    open.zeroed |= diff.unwrap_or(0);
                    self.hits += 1;
                    return Pushed::Merged;
                }
                Pushed::Single(sm::Event::at(at, payload))
            }
            Some(slot) if matches!(&*slot, Slot::Sent(first) if key_parts(first) == parts) => {
                // The first repeat after a leading-edge event.
                let Some(payload) = message::to_payload(ev) else { return Pushed::Unmapped };
                match Merging::new(payload.clone(), at) {
                    Some(merging) => {
                        self.hits += 1;
                        *slot = Slot::Open(Box::new(Open { merging, first: ev.clone(), zeroed: 0 }));
                        Pushed::Merged
                    }
                    None => Pushed::Single(sm::Event::at(at, payload)),
                }
            }
            // A hash collision: the other key keeps the slot.
            Some(_) => message::to_message_event(ev).map_or(Pushed::Unmapped, Pushed::Single),
            None => {
                let Some(payload) = message::to_payload(ev) else { return Pushed::Unmapped };
                if self.open.len() >= self.max_keys {
                    return Pushed::Single(sm::Event::at(at, payload));
                }
                if self.leading_edge {
                    self.open.insert(k, Slot::Sent(Box::new(ev.clone())));
                    return Pushed::Single(sm::Event::at(at, payload));
                }
                match Merging::new(payload.clone(), at) {
                    Some(merging) => {
                        self.hits += 1;
                        self.open
                            .insert(k, Slot::Open(Box::new(Open { merging, first: ev.clone(), zeroed: 0 })));
                        Pushed::Merged
                    }
                    None => Pushed::Single(sm::Event::at(at, payload)),
                }
            }
        }
    }

    /// Ends the interval: one event per distinct key, with its hit count.
    pub fn flush(&mut self) -> Vec<(u64, sm::Event)> {
        self.open
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Open(o) => Some((o.merging.hits(), o.merging.into_event())),
                Slot::Sent(_) => None,
            })
            .collect()
    }

    /// Gives back the room a burst of distinct keys took (after a flush).
    pub fn shrink(&mut self) {
        crate::memory::shrink_map(&mut self.open);
    }

    /// Aggregates waiting for the end of the interval.
    pub fn pending(&self) -> usize {
        self.open.values().filter(|s| matches!(s, Slot::Open(_))).count()
    }

    pub fn hits(&self) -> u64 {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Exec, Sock};

    fn exec(pid: u32, time: &str, argv: &[&str]) -> Event {
        Event {
            time: time.parse().unwrap(),
            ktime_ns: 1,
            pid,
            tid: pid,
            ppid: Some(1),
            uid: 0,
            gid: 0,
            user: None,
            comm: "sh".into(),
            exe: Some("/bin/sh".into()),
            body: Body::Exec(Exec::succeeded("/bin/true", argv)),
        }
    }

    #[test]
    fn identical_execs_merge_with_counts_and_times() {
        let mut a = Aggregator::new(100);
        for i in 0..1000 {
            let t = format!("2026-12-02T00:00:{:02}.{:03}Z", i / 100, i % 1000);
            assert!(matches!(a.push(&exec(100 + i, &t, &["true", "x"])), Pushed::Merged));
        }
        assert!(matches!(a.push(&exec(5, "2026-12-02T00:00:30Z", &["true", "other"])), Pushed::Merged));
        let out = a.flush();
        assert_eq!(out.len(), 2);
        assert_eq!(out.iter().map(|(h, _)| h).sum::<u64>(), 1001);
        let (_, big) = out.iter().find(|(h, _)| *h == 1000).unwrap();
        let json = serde_json::to_value(big).unwrap();
        let item = &json["Payload"][0];
        assert_eq!(item["ExtraDetails"]["HitCount"], "1000");
        assert_eq!(item["ExtraDetails"]["StartTimeUtc"], "2026-12-02T00:00:00.000Z");
        assert_eq!(item["ExtraDetails"]["EndTimeUtc"], "2026-12-02T00:00:09.999Z");
        assert_eq!(item["ProcessId"], 0, "differing pid zeroed");
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn unmapped_kinds_and_overflow_pass_through() {
        let mut a = Aggregator::new(1);
        let mut fork = exec(1, "2026-12-02T00:00:00Z", &[]);
        fork.body = Body::Fork(crate::events::Fork { child_pid: 2 });
        assert!(matches!(a.push(&fork), Pushed::Unmapped));
        let conn = |port| {
            let mut e = exec(1, "2026-12-02T00:00:00Z", &[]);
            e.body = Body::Connect(Sock {
                protocol: "tcp",
                family: "ipv4",
                local_addr: None,
                local_port: Some(40000),
                remote_addr: Some("10.0.0.1".parse().unwrap()),
                remote_port: Some(port),
                fd: 3,
                result: 0,
                status: "success",
                error: None,
                async_outcome: false,
            });
            e
        };
        assert!(matches!(a.push(&conn(443)), Pushed::Merged));
        assert!(matches!(a.push(&conn(443)), Pushed::Merged));
        assert!(matches!(a.push(&conn(80)), Pushed::Single(_)), "key limit reached: passes through");
        let out = a.flush();
        assert_eq!(out[0].0, 2);
    }

    /// The counted-only path (no payload built) must give exactly what
    /// merging every hit's payload gives.
    #[test]
    fn repeats_counted_without_a_payload_merge_like_full_merges() {
        let mut hits = Vec::new();
        for i in 0..50u32 {
            let mut e = exec(100 + i % 7, &format!("2026-12-02T00:00:{:02}Z", i), &["true", "x"]);
            e.tid = 200 + i % 3;
            e.ppid = Some(1 + i % 2);
            if i == 20 {
                e.comm = "other".into(); // a non-volatile difference: the full path
            }
            hits.push(e);
        }
        let mut a = Aggregator::new(100);
        for e in &hits {
            assert!(matches!(a.push(e), Pushed::Merged));
        }
        let out = a.flush();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 50);
        let at = |e: &Event| message::time_of(e);
        let sm::Payload::ProcessCreate(first) = message::to_payload(&hits[0]).unwrap() else { panic!() };
        let mut expect = sm::Aggregate::new(first[0].clone(), at(&hits[0]));
        for e in &hits[1..] {
            let sm::Payload::ProcessCreate(p) = message::to_payload(e).unwrap() else { panic!() };
            expect.add(&p[0], at(e)).unwrap();
        }
        let got = serde_json::to_value(&out[0].1).unwrap()["Payload"][0].clone();
        let want = serde_json::to_value(expect.into_item()).unwrap();
        assert_eq!(got, want);
        assert_eq!(got["ProcessId"], 0);
        assert_eq!(got["ExtraDetails"].get("Comm"), None, "differs between hits: left out");
        assert_eq!(got["ExtraDetails"]["MergedFields"], "ParentProcessId,ProcessId");
        assert_eq!(got["ExtraDetails"]["HitCount"], "50");
    }

    /// Exits of many processes of one program: the ids they do not share
    /// are left out (ExtraDetails) or named as merged (the required
    /// ProcessId), never reported as a false 0.
    #[test]
    fn aggregated_exits_leave_out_the_ids_they_do_not_share() {
        let mut a = Aggregator::new(100);
        for i in 0..3u32 {
            let mut e = exec(100 + i, "2026-12-02T00:00:00Z", &[]);
            e.tid = 100 + i;
            e.ppid = Some(50 + i);
            e.body = Body::Exit(crate::events::Exit { exit_code: Some(0), signal: None });
            assert!(matches!(a.push(&e), Pushed::Merged));
        }
        let out = a.flush();
        assert_eq!(out.len(), 1);
        let item = serde_json::to_value(&out[0].1).unwrap()["Payload"][0].clone();
        let extra = &item["ExtraDetails"];
        assert_eq!(extra.get("ParentProcessId"), None, "{item}");
        assert_eq!(extra.get("ThreadId"), None, "{item}");
        assert_eq!(extra["MergedFields"], "ProcessId", "{item}");
        assert_eq!(item["ProcessId"], 0, "required by the schema: zero, named in MergedFields");
        assert_eq!(extra["HitCount"], "3");
        assert_eq!(extra["UserId"], "0", "shared: kept");
    }

    #[test]
    fn leading_edge_sends_the_first_at_once_and_counts_the_repeats() {
        let mut a = Aggregator::new(100).leading_edge(true);
        let t = "2026-12-02T00:00:00Z";
        assert!(matches!(a.push(&exec(1, t, &["true", "x"])), Pushed::Single(_)), "first: at once");
        assert!(matches!(a.push(&exec(2, t, &["true", "y"])), Pushed::Single(_)), "another key: at once");
        assert_eq!(a.pending(), 0);
        for i in 0..5 {
            assert!(matches!(a.push(&exec(10 + i, t, &["true", "x"])), Pushed::Merged));
        }
        let out = a.flush();
        assert_eq!(out.len(), 1, "only keys with repeats make an aggregate");
        assert_eq!(out[0].0, 5, "the repeats, not the leading event");
        assert!(
            matches!(a.push(&exec(1, t, &["true", "x"])), Pushed::Single(_)),
            "a new interval starts over"
        );
    }

    #[test]
    fn alerts_go_out_at_once_per_rule_and_process_and_repeats_fold() {
        use crate::detect::{Alert, Severity};
        let t = "2026-12-02T00:00:00Z";
        let alert = |rule: &str, pid: u32, argv: &[&str]| {
            Alert {
                rule: rule.into(),
                title: "t".into(),
                severity: Severity::High,
                source: "builtin",
                tags: vec!["attack.execution".into()].into(),
                description: String::new(),
                remediation: "".into(),
                details: Default::default(),
                event: Box::new(exec(pid, t, argv)),
            }
            .into_event()
        };
        let mut a = Aggregator::new(100).leading_edge(true);
        let Pushed::Single(first) = a.push(&alert("exec-from-tmp", 7, &["/tmp/x"])) else {
            panic!("the first alert waits")
        };
        assert_eq!(serde_json::to_value(&first).unwrap()["Name"], "Alert");
        for argv in [["/tmp/x", "1"], ["/tmp/x", "2"]] {
            assert!(matches!(a.push(&alert("exec-from-tmp", 7, &argv)), Pushed::Merged), "a repeat folds");
        }
        assert!(
            matches!(a.push(&alert("exec-from-tmp", 8, &["/tmp/x"])), Pushed::Single(_)),
            "another process"
        );
        assert!(matches!(a.push(&alert("other-rule", 7, &["/tmp/x"])), Pushed::Single(_)), "another rule");
        let out = a.flush();
        assert_eq!(out.len(), 1);
        let v = serde_json::to_value(&out[0].1).unwrap();
        let item = &v["Payload"][0];
        assert_eq!(item["RuleId"], "exec-from-tmp");
        assert_eq!(item["ExtraDetails"]["HitCount"], "2");
        assert_eq!(item["ProcessId"], 7);
    }
}
