//! `baseline-*`: a learnt profile of the device's normal behaviour, simple
//! and explainable. Per executable path it learns the users that run it, its
//! parent executables, the remotes it connects to (address/24 for IPv4, /64
//! for IPv6, and port), the ports it listens on and the watched files it
//! writes (`file` events: the path changed, a rename's new name).
//!
//! For `baseline_learn` (default 24h) from the first event it only learns.
//! After that every first-seen combination raises one low-severity alert
//! (`baseline-new-executable`, `-new-user`, `-new-parent`,
//! `-new-destination`, `-new-listener`, `-new-file-write`) naming what is
//! new and what was known, and is learnt (it does not fire again).
//!
//! The profile is kept in `<state_dir>/baseline.profile` ([`store`]): saved
//! at most every minute when it changed, at a clean stop and before a reload
//! rebuilds the stage ([`crate::detect::Detector::persist`]), and loaded when
//! the stage is built: it survives restarts and SIGHUP. A damaged file is
//! reported (a warning naming the file and why), kept aside as
//! `baseline.profile.damaged`, and the agent learns again from scratch.
//! `shrike baseline reset` rewrites the file with an empty profile of a new
//! id; a running agent sees the new id within a minute (or at once on
//! SIGHUP) and learns again.
//!
//! Bounded ([`profile::caps`]): at a cap nothing more is stored, the refusal
//! is counted (stats, `shrike baseline show`), and, after learning, the first
//! refusal of each cap raises one `baseline-overflow` alert (medium): from
//! then on what that cap refuses is not alerted on (it would alert at every
//! repeat, since it cannot be learnt).

pub mod cli;
pub mod profile;
pub mod store;

use std::{collections::BTreeMap, fmt::Write, net::IpAddr, path::PathBuf, time::Duration};

use chrono::{DateTime, TimeZone, Utc};

use self::profile::{Aspect, Finding, Profile};
use super::{
    Alert, DetectConfig, DetectStats, Detector, Severity,
    builtin::{Rule, exec_path},
};
use crate::events::{Body, Event, Kind, Sock};

/// Caps reached that are logged (each is counted in the stats).
const MAX_CAP_WARNINGS: u32 = 16;

/// The detector's id (`disabled = ["baseline"]` switches it off).
pub const ID: &str = "baseline";
/// Learning period by default.
pub const DEFAULT_LEARN: Duration = Duration::from_secs(24 * 3600);
/// The state folder by default (also the agent id's and the spool's).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/shrike";
/// A changed profile is saved at most this often (and at a clean stop); a
/// reset on disk is looked for as often.
pub const SAVE_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// `baseline_learn` and where the profile is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineConfig {
    /// Learning period; None: the detector is off (`--baseline-learn off`).
    pub learn: Option<Duration>,
    /// The state folder; None: the profile lives in memory only (unit tests;
    /// `shrike run` and `shrike events` always set it).
    pub state_dir: Option<PathBuf>,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig { learn: Some(DEFAULT_LEARN), state_dir: None }
    }
}

/// `off`, `0`, or a duration.
pub fn parse_learn(s: &str) -> Result<Option<Duration>, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let d = crate::units::parse_duration(s)?;
    Ok((!d.is_zero()).then_some(d))
}

/// The detector when it is on.
pub fn load(cfg: &DetectConfig) -> Option<Baseline> {
    let learn = cfg.baseline.learn?;
    if cfg.is_disabled(ID) {
        return None;
    }
    Some(Baseline::new(learn, cfg.baseline.state_dir.as_ref().map(|d| store::path_in(d))))
}

/// Counters for the log and the stats line.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct BaselineStats {
    pub learning: bool,
    pub executables: u64,
    pub values: u64,
    /// Refused at the caps (see [`profile::caps`]).
    pub overflow_executables: u64,
    pub overflow_values: u64,
    pub saves: u64,
    pub save_errors: u64,
}

pub struct Baseline {
    learn: chrono::TimeDelta,
    path: Option<PathBuf>,
    profile: Profile,
    dirty: bool,
    /// Last save or look at the file.
    last_check: Option<DateTime<Utc>>,
    /// Learning seen to have ended (logged once).
    ended: bool,
    saves: u64,
    save_errors: u64,
    found: Vec<Finding>,
    /// A value made for the event at hand (a destination, a port).
    buf: String,
    /// Cap warnings logged (the first few only; all are counted).
    cap_warnings: u32,
}

const RULE_EXE: Rule = Rule {
    id: "baseline-new-executable",
    title: "Executable not in the learnt baseline",
    severity: Severity::Low,
    tags: &["attack.execution", "attack.t1204", "attack.persistence"],
    description: "The baseline is what this device's executables did during the learning period \
        (`baseline_learn`); an executable path not seen then raises this alert once, and is learnt. \
        A new program after an update or an installation is expected; one in a writable folder, run by a \
        service or a user that never runs programs, is not.",
    remediation: "Check where the file came from (package: dpkg -S PATH; hash; owner and time), what \
        started it (the parent) and what it does. If expected, nothing to do (it is learnt); \
        `shrike baseline show` lists the profile.",
};
const RULE_USER: Rule = Rule {
    id: "baseline-new-user",
    title: "Executable run by a user it was never run by",
    severity: Severity::Low,
    tags: &["attack.privilege_escalation", "attack.t1078"],
    description: "Each executable's users were learnt during the learning period; a user not among \
        them raises this alert once, and is learnt.",
    remediation: "Check why this user runs the program (a login, a cron job, a service changed its \
        user); an unexpected root run of a network-facing program deserves a look at its parent.",
};
const RULE_PARENT: Rule = Rule {
    id: "baseline-new-parent",
    title: "Executable started by a parent it was never started by",
    severity: Severity::Low,
    tags: &["attack.execution", "attack.t1059"],
    description: "Each executable's parent executables were learnt during the learning period; a parent \
        not among them raises this alert once, and is learnt. A shell started by a web server or a \
        broker is the classic case.",
    remediation: "Look at the parent process and what it was doing (its connections, its own parent); \
        a service spawning programs it never spawned may be exploited.",
};
const RULE_DEST: Rule = Rule {
    id: "baseline-new-destination",
    title: "Executable connects to a destination it never connected to",
    severity: Severity::Low,
    tags: &["attack.command_and_control", "attack.t1071", "attack.exfiltration"],
    description: "Each executable's destinations (remote address/24 for IPv4 or /64 for IPv6, and port) \
        were learnt during the learning period; one not among them raises this alert once, and is \
        learnt.",
    remediation: "Check who owns the address and whether the program has a reason to talk to it \
        (an update server, a new cloud endpoint); an unknown host on an unusual port from a system \
        program may be a command-and-control channel.",
};
const RULE_LISTEN: Rule = Rule {
    id: "baseline-new-listener",
    title: "Executable listens on a port it never listened on",
    severity: Severity::Low,
    tags: &["attack.persistence", "attack.t1205", "attack.command_and_control", "attack.t1571"],
    description: "Each executable's listening ports were learnt during the learning period; a port \
        not among them raises this alert once, and is learnt.",
    remediation: "Check the service's configuration change or the process that opened the port; block \
        it in the firewall if it is not expected.",
};
const RULE_FILE: Rule = Rule {
    id: "baseline-new-file-write",
    title: "Executable writes a watched file it never wrote",
    severity: Severity::Low,
    tags: &["attack.persistence", "attack.t1543", "attack.defense_evasion"],
    description: "Each executable's writes to watched files were learnt during the learning period; a \
        file not among them raises this alert once, and is learnt.",
    remediation: "Look at the change to the file (diff it against the package or a backup) and at the \
        process that made it.",
};
const RULE_FULL: Rule = Rule {
    id: "baseline-overflow",
    title: "Learnt baseline full: new values no longer reported",
    severity: Severity::Medium,
    tags: &["attack.defense_evasion", "attack.t1562"],
    description: "The baseline's caps bound its memory and file (4096 executables, 64 values per set \
        of an executable, 32768 values in all); this one was reached after learning, so what it refuses \
        from now on is only counted, not alerted on. Churn of random names or destinations can do this \
        on purpose.",
    remediation: "Look at what filled it (`shrike baseline show`: the sets with an overflow count); if \
        the device's normal behaviour has changed, `shrike baseline reset` learns it again.",
};

fn rule_of(a: Aspect) -> &'static Rule {
    match a {
        Aspect::User => &RULE_USER,
        Aspect::Parent => &RULE_PARENT,
        Aspect::Destination => &RULE_DEST,
        Aspect::Listener => &RULE_LISTEN,
        Aspect::FileWrite => &RULE_FILE,
    }
}

/// The rule ids the detector fires.
pub const RULES: [&str; 7] =
    [RULE_EXE.id, RULE_USER.id, RULE_PARENT.id, RULE_DEST.id, RULE_LISTEN.id, RULE_FILE.id, RULE_FULL.id];

impl Baseline {
    /// Loads the profile at `path` (None: memory only). A missing file
    /// starts learning; a damaged one is reported, kept aside, and learning
    /// starts again.
    pub fn new(learn: Duration, path: Option<PathBuf>) -> Baseline {
        let learn = chrono::TimeDelta::from_std(learn).unwrap_or(chrono::TimeDelta::MAX);
        let mut dirty = false;
        let profile = match &path {
            None => Profile::new(),
            Some(p) => match store::read(p) {
                Ok(profile) => {
                    tracing::info!(
                        file = %p.display(),
                        executables = profile.executables.len(),
                        values = profile.values,
                        "baseline profile loaded"
                    );
                    profile
                }
                Err(store::LoadError::Missing) => {
                    tracing::info!(file = %p.display(), "no baseline profile yet: learning");
                    dirty = true;
                    Profile::new()
                }
                Err(e) => {
                    let mut aside = p.clone().into_os_string();
                    aside.push(".damaged");
                    let kept = std::fs::rename(p, &aside).is_ok();
                    tracing::warn!(
                        file = %p.display(),
                        reason = %e,
                        kept_as = kept.then(|| PathBuf::from(&aside).display().to_string()),
                        "baseline profile unusable ({e}): learning again from scratch"
                    );
                    dirty = true;
                    Profile::new()
                }
            },
        };
        let mut b = Baseline {
            learn,
            path,
            profile,
            dirty,
            last_check: None,
            ended: false,
            saves: 0,
            save_errors: 0,
            found: Vec::new(),
            buf: String::new(),
            cap_warnings: 0,
        };
        b.set_until();
        b
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn set_until(&mut self) {
        let until = self.profile.learn_started.map(|s| s.saturating_add(self.learn.num_seconds()));
        if until != self.profile.learn_until {
            self.profile.learn_until = until;
            self.dirty = true;
        }
    }

    /// Starts the learning clock at the first time seen; whether `now` is
    /// still in the learning period.
    fn learning(&mut self, now: DateTime<Utc>) -> bool {
        if self.profile.learn_started.is_none() {
            self.profile.learn_started = Some(now.timestamp());
            self.set_until();
            self.dirty = true;
        }
        let until = self.profile.learn_until.unwrap_or(i64::MAX);
        let learning = now.timestamp() < until;
        if !learning && !self.ended {
            self.ended = true;
            let p = &self.profile;
            tracing::info!(
                executables = p.executables.len(),
                values = p.values,
                overflow_executables = p.overflow.executables,
                overflow_values = p.overflow.values,
                "baseline learnt: what is new from now on raises baseline-* alerts"
            );
        }
        learning
    }

    fn learn(&mut self, ev: &Event, exe: &str, values: &[(Aspect, &str)], out: &mut Vec<Alert>) {
        let learning = self.learning(ev.time);
        let before = (self.profile.overflow.executables, self.profile.overflow.values);
        let mut found = std::mem::take(&mut self.found);
        self.profile.learn(exe, values, &mut found);
        if !found.is_empty() || before != (self.profile.overflow.executables, self.profile.overflow.values) {
            self.dirty = true;
        }
        for f in &found {
            if let Finding::Full(what) = f {
                self.cap_warnings += 1;
                if self.cap_warnings <= MAX_CAP_WARNINGS {
                    tracing::warn!(
                        cap = %what,
                        exe,
                        "baseline cap reached: what it refuses from now on is counted, not stored{}",
                        if self.cap_warnings == MAX_CAP_WARNINGS { " (further caps: in the stats only)" } else { "" }
                    );
                }
            }
        }
        if !learning {
            for f in found.drain(..) {
                out.push(self.alert(ev, exe, values, f));
            }
        }
        found.clear();
        self.found = found;
    }

    fn learnt_until(&self) -> String {
        self.profile
            .learn_until
            .and_then(|t| Utc.timestamp_opt(t, 0).single())
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    }

    fn alert(&self, ev: &Event, exe: &str, values: &[(Aspect, &str)], f: Finding) -> Alert {
        let mut details = BTreeMap::new();
        details.insert("executable", exe.to_owned());
        details.insert("learnt_until", self.learnt_until());
        let who = format!("{exe} (pid {})", ev.pid);
        match f {
            Finding::NewExecutable => {
                let known = self.profile.executables.len().saturating_sub(1);
                // Those of the same folder first: what it sits beside.
                let dir = exe.rsplit_once('/').map_or("", |(d, _)| d);
                let mut examples: Vec<&str> = self
                    .profile
                    .executables
                    .keys()
                    .filter(|k| k.as_str() != exe && k.rsplit_once('/').map_or("", |(d, _)| d) == dir)
                    .take(3)
                    .map(String::as_str)
                    .collect();
                if examples.is_empty() {
                    examples = self
                        .profile
                        .executables
                        .keys()
                        .filter(|k| *k != exe)
                        .take(3)
                        .map(String::as_str)
                        .collect();
                }
                let did: Vec<String> = values.iter().map(|(a, v)| format!("{} {v}", a.name())).collect();
                details.insert("new", exe.to_owned());
                details.insert("known_count", known.to_string());
                details.insert("known", examples.join(", "));
                RULE_EXE.alert(
                    ev,
                    RULE_EXE.severity,
                    format!(
                        "{who} is not in the baseline ({}): {known} executables known, e.g. {}.",
                        if did.is_empty() { "first seen".to_owned() } else { did.join(", ") },
                        if examples.is_empty() { "none".to_owned() } else { examples.join(", ") }
                    ),
                    details,
                )
            }
            Finding::NewValue(a, v) => {
                let set = self.profile.executables.get(exe).map(|e| &e.set(a).values);
                let known: Vec<&str> =
                    set.into_iter().flatten().filter(|k| **k != v).map(String::as_str).collect();
                let shown: Vec<&str> = known.iter().take(5).copied().collect();
                let rule = rule_of(a);
                details.insert("new", v.clone());
                details.insert("known_count", known.len().to_string());
                details.insert("known", shown.join(", "));
                let what = match a {
                    Aspect::User => format!("{who} runs as {v}"),
                    Aspect::Parent => format!("{who} was started by {v}"),
                    Aspect::Destination => format!("{who} connects to {v}"),
                    Aspect::Listener => format!("{who} listens on {v}"),
                    Aspect::FileWrite => format!("{who} writes {v}"),
                };
                let more = if known.len() > shown.len() { ", ..." } else { "" };
                rule.alert(
                    ev,
                    rule.severity,
                    format!(
                        "{what}, not in its baseline: its known {} ({}): {}{more}.",
                        a.name().replace('_', " "),
                        known.len(),
                        if shown.is_empty() { "none".to_owned() } else { shown.join(", ") }
                    ),
                    details,
                )
            }
            Finding::Full(what) => {
                details.insert("cap", what.clone());
                RULE_FULL.alert(
                    ev,
                    RULE_FULL.severity,
                    format!("The baseline's cap on {what} was reached (by {who})."),
                    details,
                )
            }
        }
    }

    /// Saves the profile if it changed, unless the file on disk was reset
    /// meanwhile (another id): then that profile is taken over.
    fn sync(&mut self) {
        let Some(path) = self.path.clone() else { return };
        if let Some(id) = store::read_id(&path)
            && id != self.profile.id
            && let Ok(p) = store::read(&path)
        {
            tracing::info!(file = %path.display(), "baseline profile reset on disk: learning again");
            self.profile = p;
            self.ended = false;
            self.dirty = false;
            self.set_until();
            if self.profile.learn_started.is_none() {
                // Learning restarts at the next event or tick.
                self.dirty = true;
            }
        }
        if !self.dirty {
            return;
        }
        match store::write(&path, &self.profile) {
            Ok(()) => {
                self.saves += 1;
                self.dirty = false;
            }
            Err(e) => {
                self.save_errors += 1;
                tracing::warn!(file = %path.display(), "cannot save the baseline profile: {e}");
            }
        }
    }
}

impl Detector for Baseline {
    fn id(&self) -> &'static str {
        ID
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Exec, Kind::Connect, Kind::Listen, Kind::File]
    }

    /// No allocation for what is already known: values are borrowed from
    /// the event, or written into a buffer kept between events.
    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match &ev.body {
            Body::Exec(x) if x.success => {
                let user = match ev.user.as_deref() {
                    Some(u) => u,
                    None => {
                        let _ = write!(buf, "uid {}", ev.uid);
                        &buf
                    }
                };
                let vals = [(Aspect::User, user), (Aspect::Parent, x.parent_exe.as_deref().unwrap_or(""))];
                let n = if x.parent_exe.is_some() { 2 } else { 1 };
                self.learn(ev, exec_path(ev, x), &vals[..n], out);
            }
            Body::Connect(s) => {
                if let Some(exe) = ev.exe.as_deref()
                    && write_destination(&mut buf, s)
                {
                    self.learn(ev, exe, &[(Aspect::Destination, &buf)], out);
                }
            }
            Body::Listen(s) => {
                if let (Some(exe), Some(port)) = (ev.exe.as_deref(), s.local_port.filter(|p| *p != 0)) {
                    let _ = write!(buf, "{port}/{}", s.protocol);
                    self.learn(ev, exe, &[(Aspect::Listener, &buf)], out);
                }
            }
            // A change to a watched file: its path (a rename's new name too).
            Body::File(f) if f.success => {
                if let Some(exe) = ev.exe.as_deref() {
                    let vals = [
                        (Aspect::FileWrite, f.path.as_str()),
                        (Aspect::FileWrite, f.new_path.as_deref().unwrap_or("")),
                    ];
                    let n = if f.new_path.is_some() { 2 } else { 1 };
                    self.learn(ev, exe, &vals[..n], out);
                }
            }
            _ => {}
        }
        self.buf = buf;
    }

    fn tick(&mut self, now: DateTime<Utc>, _out: &mut Vec<Alert>) {
        self.learning(now);
        let due = match self.last_check {
            None => true,
            // A clock set back counts as due.
            Some(last) => now - last >= SAVE_EVERY || now < last,
        };
        if due {
            self.last_check = Some(now);
            self.sync();
        }
    }

    fn persist(&mut self) {
        self.sync();
    }

    fn report(&self, stats: &mut DetectStats) {
        let p = &self.profile;
        stats.baseline = Some(BaselineStats {
            learning: !self.ended,
            executables: p.executables.len() as u64,
            values: p.values as u64,
            overflow_executables: p.overflow.executables,
            overflow_values: p.overflow.values,
            saves: self.saves,
            save_errors: self.save_errors,
        });
    }
}

/// The remote of a connection as learnt: `10.1.2.0/24:443`,
/// `[2001:db8:1:2::/64]:443` (IPv4-mapped addresses as IPv4).
pub fn destination(s: &Sock) -> Option<String> {
    let mut out = String::new();
    write_destination(&mut out, s).then_some(out)
}

/// [`destination`] appended to `out`; false when the remote is not known.
fn write_destination(out: &mut String, s: &Sock) -> bool {
    let (Some(addr), Some(port)) = (s.remote_addr, s.remote_port) else { return false };
    let v4 = |out: &mut String, a: std::net::Ipv4Addr| {
        let o = a.octets();
        let _ = write!(out, "{}.{}.{}.0/24:{port}", o[0], o[1], o[2]);
    };
    match addr {
        IpAddr::V4(a) => v4(out, a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => v4(out, a),
            None => {
                let s = a.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                let _ = write!(out, "[{net}/64]:{port}");
            }
        },
    }
    true
}

#[cfg(test)]
mod tests;
