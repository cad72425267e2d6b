//! A shell's PATH search, folded: `curl` typed in a shell is tried in each
//! PATH directory until one exists, so the kernel reports several execs that
//! fail with ENOENT before the one that runs (three quarters of all exec
//! events on an ordinary shell session). With [`ExecMisses::Fold`] the misses
//! of a process are held, briefly, and counted into its next exec of the
//! same program (`path_misses`); a miss that nothing follows (command not
//! found) is still reported, when the process exits or after [`HOLD`], with
//! the earlier misses of its search counted in it. Failures other than
//! ENOENT (EACCES, ENOEXEC...) are never held.
//!
//! State is bounded: at most [`MAX_HELD`] processes with a held miss, one
//! event each; past that, misses pass through unfolded.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::events::{Body, Event};

/// What to do with failed PATH-search execs (`--exec-misses`, `exec_misses`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecMisses {
    /// ENOENT execs followed by an exec of the same program (same argv,
    /// same file name) by the same process are counted in it.
    #[default]
    Fold,
    /// Every failed exec is an event of its own.
    Report,
}

/// How long a miss waits for the exec that follows it (a PATH search takes
/// microseconds).
pub const HOLD: TimeDelta = TimeDelta::milliseconds(200);

/// Processes with a held miss, at most.
pub const MAX_HELD: usize = 1024;

const ENOENT: i64 = -2;

struct Held {
    /// The latest miss.
    last: Event,
    /// Misses before it, of the same search.
    earlier: u32,
}

impl Held {
    fn release(self) -> Event {
        with_misses(self.last, self.earlier)
    }
}

fn with_misses(mut ev: Event, n: u32) -> Event {
    if let Body::Exec(x) = &mut ev.body {
        x.path_misses = n;
    }
    ev
}

/// The same program tried again: the same argv, and a file name with the
/// same last component (`/usr/local/bin/curl`, then `/usr/bin/curl`).
fn same_program(miss: &Event, ev: &Event) -> bool {
    let base = |f: &str| f.rsplit('/').next().unwrap_or(f).to_owned();
    match (&miss.body, &ev.body) {
        (Body::Exec(a), Body::Exec(b)) => a.argv == b.argv && base(&a.filename) == base(&b.filename),
        _ => false,
    }
}

fn is_miss(ev: &Event) -> bool {
    matches!(&ev.body, Body::Exec(x) if x.result == ENOENT)
}

/// The folding stage: events in, events out (in order, except that a
/// released miss comes when it is released).
pub struct MissFolder {
    policy: ExecMisses,
    held: HashMap<u32, Held>,
    /// No held miss is older than this (a lower bound: checked on expiry).
    oldest: Option<DateTime<Utc>>,
}

impl MissFolder {
    pub fn new(policy: ExecMisses) -> MissFolder {
        MissFolder { policy, held: HashMap::new(), oldest: None }
    }

    /// A new policy (reload); turning folding off releases what is held.
    pub fn set_policy(&mut self, policy: ExecMisses, out: &mut Vec<Event>) {
        if policy == ExecMisses::Report {
            self.flush(out);
        }
        self.policy = policy;
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes an (enriched) event; appends to `out` what is ready.
    pub fn push(&mut self, ev: Event, out: &mut Vec<Event>) {
        self.expire(ev.time, out);
        if self.policy == ExecMisses::Report || (self.held.is_empty() && !is_miss(&ev)) {
            out.push(ev);
            return;
        }
        match &ev.body {
            Body::Exec(x) => {
                let miss = x.result == ENOENT;
                let held = self.held.remove(&ev.pid);
                let earlier = match held {
                    Some(h) if same_program(&h.last, &ev) => h.earlier + 1,
                    Some(h) => {
                        out.push(h.release());
                        0
                    }
                    None => 0,
                };
                if !miss || self.held.len() >= MAX_HELD {
                    out.push(with_misses(ev, earlier));
                    return;
                }
                self.oldest = Some(self.oldest.map_or(ev.time, |o| o.min(ev.time)));
                self.held.insert(ev.pid, Held { last: ev, earlier });
            }
            Body::Exit(_) => {
                if let Some(h) = self.held.remove(&ev.pid) {
                    out.push(h.release());
                }
                out.push(ev);
            }
            _ => out.push(ev),
        }
    }

    /// Releases the misses held for [`HOLD`] or longer at `now`.
    pub fn expire(&mut self, now: DateTime<Utc>, out: &mut Vec<Event>) {
        match self.oldest {
            Some(oldest) if now - oldest >= HOLD => {}
            _ => return,
        }
        let mut due: Vec<u32> =
            self.held.iter().filter(|(_, h)| now - h.last.time >= HOLD).map(|(pid, _)| *pid).collect();
        due.sort_by_key(|pid| self.held[pid].last.ktime_ns);
        for pid in due {
            if let Some(h) = self.held.remove(&pid) {
                out.push(h.release());
            }
        }
        self.oldest = self.held.values().map(|h| h.last.time).min();
    }

    /// Releases every held miss (at exit).
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        let mut all: Vec<Held> = self.held.drain().map(|(_, h)| h).collect();
        all.sort_by_key(|h| h.last.ktime_ns);
        out.extend(all.into_iter().map(Held::release));
        self.oldest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Exec, Exit, Fork};

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::milliseconds(ms)
    }

    fn event(pid: u32, ms: i64, body: Body) -> Event {
        Event {
            time: at(ms),
            ktime_ns: ms as u64 * 1_000_000,
            pid,
            tid: pid,
            ppid: Some(1),
            uid: 0,
            gid: 0,
            user: None,
            comm: "sh".into(),
            exe: Some("/bin/sh".into()),
            body,
        }
    }

    fn exec(pid: u32, ms: i64, filename: &str, result: i64) -> Event {
        let argv = vec![filename.rsplit('/').next().unwrap().to_owned(), "-s".into()];
        event(
            pid,
            ms,
            Body::Exec(Exec {
                filename: filename.into(),
                argv,
                args_truncated: false,
                filename_truncated: false,
                result,
                success: result == 0,
                error: None,
                parent_exe: None,
                execveat: false,
                entry_missing: false,
                args_unreadable: false,
                path_misses: 0,
                sha256: None,
                sha256_skipped: None,
            }),
        )
    }

    fn exit(pid: u32, ms: i64) -> Event {
        event(pid, ms, Body::Exit(Exit { exit_code: Some(127), signal: None }))
    }

    fn misses(ev: &Event) -> (i64, u32) {
        match &ev.body {
            Body::Exec(x) => (x.result, x.path_misses),
            _ => panic!("not an exec: {ev:?}"),
        }
    }

    fn run(f: &mut MissFolder, evs: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::new();
        for ev in evs {
            f.push(ev, &mut out);
        }
        out
    }

    #[test]
    fn misses_before_a_success_fold_into_it() {
        let mut f = MissFolder::new(ExecMisses::Fold);
        let out = run(
            &mut f,
            vec![
                exec(10, 0, "/usr/local/sbin/curl", -2),
                exec(10, 0, "/usr/local/bin/curl", -2),
                exec(10, 1, "/usr/sbin/curl", -2),
                exec(10, 1, "/usr/bin/curl", 0),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(misses(&out[0]), (0, 3));
        assert_eq!(f.held(), 0);
        let json = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(json["path_misses"], 3);
    }

    #[test]
    fn other_failures_are_reported_with_the_misses_before_them() {
        let mut f = MissFolder::new(ExecMisses::Fold);
        let out = run(&mut f, vec![exec(10, 0, "/a/tool", -2), exec(10, 0, "/b/tool", -13)]);
        assert_eq!(out.iter().map(misses).collect::<Vec<_>>(), vec![(-13, 1)]);
        // An EACCES alone is never held.
        let out = run(&mut f, vec![exec(11, 0, "/b/tool", -13)]);
        assert_eq!(out.iter().map(misses).collect::<Vec<_>>(), vec![(-13, 0)]);
    }

    #[test]
    fn a_miss_nothing_follows_is_reported_at_exit_or_after_the_hold() {
        let mut f = MissFolder::new(ExecMisses::Fold);
        // Command not found: the shell tries two directories, then exits.
        let out = run(&mut f, vec![exec(10, 0, "/a/nope", -2), exec(10, 0, "/b/nope", -2), exit(10, 1)]);
        assert_eq!(out.len(), 2);
        assert_eq!(misses(&out[0]), (-2, 1));
        assert!(matches!(out[1].body, Body::Exit(_)));
        // A lone execve("/nonexistent") of a process that lives on: released
        // by the next event after HOLD, or by expire.
        let out = run(&mut f, vec![exec(20, 0, "/nonexistent", -2), exec(21, 100, "/bin/true", 0)]);
        assert_eq!(out.len(), 1, "held for now");
        let fork = event(22, 250, Body::Fork(Fork { child_pid: 23 }));
        let out = run(&mut f, vec![fork]);
        assert_eq!(out.len(), 2);
        assert_eq!(misses(&out[0]), (-2, 0));
        let mut out = Vec::new();
        f.push(exec(30, 1000, "/x/gone", -2), &mut out);
        f.expire(at(1100), &mut out);
        assert!(out.is_empty());
        f.expire(at(1200), &mut out);
        assert_eq!(out.iter().map(misses).collect::<Vec<_>>(), vec![(-2, 0)]);
        assert_eq!(f.held(), 0);
    }

    #[test]
    fn a_different_program_releases_the_held_miss() {
        let mut f = MissFolder::new(ExecMisses::Fold);
        let out = run(&mut f, vec![exec(10, 0, "/a/foo", -2), exec(10, 0, "/bin/bar", 0)]);
        assert_eq!(out.iter().map(misses).collect::<Vec<_>>(), vec![(-2, 0), (0, 0)]);
    }

    #[test]
    fn report_passes_everything_and_held_is_bounded() {
        let mut f = MissFolder::new(ExecMisses::Report);
        let out = run(&mut f, vec![exec(10, 0, "/a/x", -2), exec(10, 0, "/b/x", 0)]);
        assert_eq!(out.iter().map(misses).collect::<Vec<_>>(), vec![(-2, 0), (0, 0)]);

        let mut f = MissFolder::new(ExecMisses::Fold);
        let evs = (0..MAX_HELD as u32 + 10).map(|pid| exec(pid, 0, "/a/x", -2)).collect();
        let out = run(&mut f, evs);
        assert_eq!(f.held(), MAX_HELD);
        assert_eq!(out.len(), 10, "past the bound, misses pass through");
        let mut out = Vec::new();
        f.set_policy(ExecMisses::Report, &mut out);
        assert_eq!(out.len(), MAX_HELD);
        assert_eq!(f.held(), 0);
    }
}
