//! Aggregation (deduplication): identical events within an interval become one
//! event with a hit count and first/last times, the Azure agent's "event
//! aggregation". Identity is a key of the fields that matter for security:
//! process events by executable + command line + user; connections by
//! executable + remote address/port + protocol + direction; logins by service +
//! user + remote host + step + result. Fields that differ between merged hits
//! (pid, tid, ports chosen by the kernel...) are zeroed in the aggregate.

use std::collections::{BTreeSet, HashMap};

use crate::events::{Body, Event, Kind};

/// One aggregated event: the first hit with its varying fields zeroed.
#[derive(Clone, Debug)]
pub struct Aggregate {
    pub event: Event,
    pub hits: u64,
    /// Wall-clock times (RFC 3339) of the first and last hit.
    pub first_time: String,
    pub last_time: String,
}

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

/// Zeroes what differs between merged hits.
fn zero_varying(ev: &mut Event) {
    ev.pid = 0;
    ev.tid = 0;
    ev.ppid = ev.ppid.map(|_| 0);
    ev.ktime_ns = 0;
    match &mut ev.body {
        Body::Fork(f) => f.child_pid = 0,
        Body::Connect(s) => {
            s.local_port = s.local_port.map(|_| 0);
            s.fd = 0;
        }
        Body::Accept(s) => {
            s.remote_port = s.remote_port.map(|_| 0);
            s.fd = 0;
            s.result = 0;
        }
        Body::Listen(s) | Body::Bind(s) => s.fd = 0,
        _ => {}
    }
}

pub struct Aggregator {
    kinds: BTreeSet<Kind>,
    open: HashMap<Key, Aggregate>,
    /// Bound on distinct keys held; past it, events pass through unaggregated
    /// rather than growing memory without limit.
    max_keys: usize,
}

impl Aggregator {
    /// Aggregates events of `kinds`; the rest pass through.
    pub fn new(kinds: BTreeSet<Kind>, max_keys: usize) -> Aggregator {
        Aggregator { kinds, open: HashMap::new(), max_keys }
    }

    /// Takes an event; returns it back when it is not aggregated.
    pub fn push(&mut self, ev: Event) -> Option<Event> {
        if !self.kinds.contains(&ev.kind()) {
            return Some(ev);
        }
        let k = key(&ev);
        if let Some(a) = self.open.get_mut(&k) {
            a.hits += 1;
            a.last_time = ev.time;
            return None;
        }
        if self.open.len() >= self.max_keys {
            return Some(ev);
        }
        let first = ev.time.clone();
        let mut event = ev;
        zero_varying(&mut event);
        self.open.insert(k, Aggregate { event, hits: 1, last_time: first.clone(), first_time: first });
        None
    }

    /// Ends the interval: every aggregate, oldest first.
    pub fn flush(&mut self) -> Vec<Aggregate> {
        let mut out: Vec<Aggregate> = self.open.drain().map(|(_, a)| a).collect();
        out.sort_by(|a, b| a.first_time.cmp(&b.first_time));
        out
    }

    pub fn pending(&self) -> usize {
        self.open.len()
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
        let mut a = Aggregator::new([Kind::Exec].into_iter().collect(), 100);
        for i in 0..1000 {
            assert!(a.push(exec(100 + i, &format!("t{i:04}"), &["true", "x"])).is_none());
        }
        assert!(a.push(exec(5, "t9999", &["true", "other"])).is_none());
        let out = a.flush();
        assert_eq!(out.len(), 2);
        assert_eq!(out.iter().map(|a| a.hits).sum::<u64>(), 1001);
        let big = out.iter().find(|a| a.hits == 1000).unwrap();
        assert_eq!((big.first_time.as_str(), big.last_time.as_str()), ("t0000", "t0999"));
        assert_eq!(big.event.pid, 0, "differing pid zeroed");
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn other_kinds_and_overflow_pass_through() {
        let mut a = Aggregator::new([Kind::Connect].into_iter().collect(), 1);
        assert!(a.push(exec(1, "t", &["a"])).is_some(), "exec not aggregated");
        let conn = |port| {
            let mut e = exec(1, "t", &[]);
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
        assert!(a.push(conn(443)).is_none());
        assert!(a.push(conn(443)).is_none());
        assert!(a.push(conn(80)).is_some(), "key limit reached: passes through");
        let out = a.flush();
        assert_eq!(out[0].hits, 2);
        let Body::Connect(s) = &out[0].event.body else { panic!() };
        assert_eq!(s.local_port, Some(0));
    }
}
