//! Aggregation (deduplication): identical events within an interval become one
//! event with a hit count and first/last times, the Azure agent's "event
//! aggregation". Identity is a key of the fields that matter for security:
//! process events by executable + command line + user; connections by
//! executable + remote address/port + protocol + direction; logins by service +
//! user + remote host + step + result. Fields that differ between merged hits
//! (pid, tid, ports chosen by the kernel...) are zeroed in the aggregate.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shrike_common::schema as sm;

use crate::{
    events::{Body, Event, Kind},
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

merging!(ProcessCreate, ProcessTerminate, ConnectionCreate, Login, PrivilegeChange);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    parts: Vec<String>,
}

fn key(ev: &Event) -> Key {
    let user = ev.uid.to_string();
    let exe = ev.exe.clone().unwrap_or_default();
    let parts = match &ev.body {
        Body::Exec(x) => vec![x.filename.clone(), x.argv.join("\u{0}"), user, x.result.to_string()],
        Body::Exit(x) => vec![exe, format!("{:?}/{:?}", x.exit_code, x.signal), user],
        Body::Fork(_) => vec![exe, user],
        Body::Connect(s) | Body::Accept(s) | Body::Listen(s) | Body::Bind(s) => vec![
            exe,
            s.protocol.to_owned(),
            format!("{:?}", s.remote_addr),
            format!("{:?}", if matches!(ev.body, Body::Connect(_)) { s.remote_port } else { s.local_port }),
            s.status.to_owned(),
            user,
        ],
        Body::Login(l) => vec![
            l.service.clone(),
            l.user.clone(),
            l.rhost.clone().unwrap_or_default(),
            l.step.to_owned(),
            l.result.to_owned(),
        ],
        Body::Privilege(p) => {
            vec![exe, p.call.to_owned(), format!("{:?}", p.args), user, p.result.to_string()]
        }
    };
    Key { kind: ev.kind(), parts }
}

/// Merges identical events of one interval into aggregated security message
/// events (the Azure agents' form: one payload item, `HitCount` and start/end
/// times in `ExtraDetails`, differing fields zeroed).
pub struct Aggregator {
    open: HashMap<Key, Merging>,
    /// Bound on distinct keys held; past it, events pass through unaggregated
    /// rather than growing memory without limit.
    max_keys: usize,
    /// Events taken in (hits), for the agent's statistics.
    hits: u64,
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
        Aggregator { open: HashMap::new(), max_keys, hits: 0 }
    }

    pub fn push(&mut self, ev: &Event) -> Pushed {
        let Some(payload) = message::to_payload(ev) else { return Pushed::Unmapped };
        let at = message::time_of(ev);
        let k = key(ev);
        if let Some(m) = self.open.get_mut(&k) {
            if m.add(&payload, at) {
                self.hits += 1;
                return Pushed::Merged;
            }
            return Pushed::Single(sm::Event::at(at, payload));
        }
        if self.open.len() >= self.max_keys {
            return Pushed::Single(sm::Event::at(at, payload));
        }
        match Merging::new(payload.clone(), at) {
            Some(m) => {
                self.hits += 1;
                self.open.insert(k, m);
                Pushed::Merged
            }
            None => Pushed::Single(sm::Event::at(at, payload)),
        }
    }

    /// Ends the interval: one event per distinct key, with its hit count.
    pub fn flush(&mut self) -> Vec<(u64, sm::Event)> {
        self.open.drain().map(|(_, m)| (m.hits(), m.into_event())).collect()
    }

    pub fn pending(&self) -> usize {
        self.open.len()
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
            time: time.into(),
            ktime_ns: 1,
            pid,
            tid: pid,
            ppid: Some(1),
            uid: 0,
            gid: 0,
            user: None,
            comm: "sh".into(),
            exe: Some("/bin/sh".into()),
            body: Body::Exec(Exec {
                filename: "/bin/true".into(),
                argv: argv.iter().map(|s| s.to_string()).collect(),
                args_truncated: false,
                filename_truncated: false,
                result: 0,
                success: true,
                error: None,
                parent_exe: None,
                execveat: false,
                entry_missing: false,
                args_unreadable: false,
            }),
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
            });
            e
        };
        assert!(matches!(a.push(&conn(443)), Pushed::Merged));
        assert!(matches!(a.push(&conn(443)), Pushed::Merged));
        assert!(matches!(a.push(&conn(80)), Pushed::Single(_)), "key limit reached: passes through");
        let out = a.flush();
        assert_eq!(out[0].0, 2);
    }
}
