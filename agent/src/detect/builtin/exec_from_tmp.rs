//! `exec-from-tmp`: a program run from a world-writable staging directory,
//! from a file deleted since, or from memory (memfd).

use std::collections::BTreeMap;

use super::{Rule, exec_path};
use crate::{
    detect::{Alert, DetectConfig, DetectError, Detector, Severity},
    events::{Body, Event, Kind},
};

pub const RULE: Rule = Rule {
    id: "exec-from-tmp",
    title: "Program executed from a temporary directory, a deleted file or memory",
    severity: Severity::High,
    tags: &["attack.execution", "attack.t1204.002", "attack.defense_evasion", "attack.t1620"],
    description: "Droppers download a payload to /tmp, /var/tmp or /dev/shm (writable by every user) and run it; \
        fileless malware runs from a memfd or deletes its file once started. The executable is the path the kernel \
        executed (for execveat/fexecve, /proc/PID/exe: a memfd shows as /memfd:NAME, a deleted file with a \
        \" (deleted)\" suffix). Not seen: a script in /tmp run through an interpreter (`sh /tmp/x`: the exec is of \
        the interpreter), a relative path of a process gone before /proc could be read, a symlink elsewhere that \
        points into /tmp.",
    remediation: "Find out what put the file there (the parent process, the user's recent logins) and whether it \
        is known software. If not, isolate the device, keep a copy of the file (or of /proc/PID/exe while the process \
        runs) for analysis and kill the process. Mounting /tmp, /var/tmp and /dev/shm noexec stops this class of \
        execution.",
};

/// Stateless: each successful exec is judged on its own.
pub struct ExecFromTmp {
    /// Staging directories, without their trailing '/'.
    dirs: Vec<String>,
}

impl ExecFromTmp {
    pub fn new(cfg: &DetectConfig) -> Result<ExecFromTmp, DetectError> {
        let mut dirs: Vec<String> = ["/tmp", "/var/tmp", "/dev/shm"].map(String::from).to_vec();
        for d in &cfg.builtin.tmp_dirs {
            if !d.starts_with('/') {
                return Err(DetectError::Invalid {
                    setting: "tmp_dirs".into(),
                    reason: format!("{d:?}: not an absolute path"),
                });
            }
            let d = d.trim_end_matches('/');
            if !d.is_empty() && !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_owned());
            }
        }
        Ok(ExecFromTmp { dirs })
    }

    /// Why `path` is suspicious, if it is.
    fn reason(&self, path: &str) -> Option<(&'static str, String)> {
        if path.starts_with("/memfd:") {
            return Some(("memfd", "an anonymous memory file (memfd)".into()));
        }
        if path.ends_with(" (deleted)") {
            return Some(("deleted", "a file deleted since it was started".into()));
        }
        let norm = normalize(path);
        self.dirs
            .iter()
            .find(|d| norm.strip_prefix(d.as_str()).is_some_and(|rest| rest.starts_with('/')))
            .map(|d| ("staging_dir", format!("the writable directory {d}")))
    }
}

/// `path` with `.` and `..` components resolved lexically (so
/// `/usr/../tmp/x` is in /tmp and `/tmp/../usr/bin/x` is not).
fn normalize(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains("/.") && !path.contains("//") {
        return path.into();
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/")).into()
}

impl Detector for ExecFromTmp {
    fn id(&self) -> &'static str {
        RULE.id
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Exec]
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let Body::Exec(x) = &ev.body else { return };
        if !x.success {
            return;
        }
        let path = exec_path(ev, x);
        let Some((reason, what)) = self.reason(path) else { return };
        let mut details = BTreeMap::new();
        details.insert("executable", path.to_owned());
        details.insert("reason", reason.to_owned());
        if let Some(p) = &x.parent_exe {
            details.insert("parent_exe", p.clone());
        }
        let how = if x.execveat { " (execveat)" } else { "" };
        out.push(RULE.alert(
            ev,
            RULE.severity,
            format!("Process {} executed {path}{how}, {what}.", ev.pid),
            details,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    fn detector(extra: &[&str]) -> ExecFromTmp {
        let mut cfg = DetectConfig::default();
        cfg.builtin.tmp_dirs = extra.iter().map(|s| s.to_string()).collect();
        ExecFromTmp::new(&cfg).unwrap()
    }

    #[test]
    fn staging_dirs_deleted_files_and_memfds_fire() {
        let mut d = detector(&["/run/stage/"]);
        let mut memfd = exec(4.0, 14, 1, "", &["x"]);
        memfd.exe = Some("/memfd:payload (deleted)".into());
        if let Body::Exec(x) = &mut memfd.body {
            x.execveat = true;
        }
        let mut deleted = exec(5.0, 15, 1, "./run", &["./run"]);
        deleted.exe = Some("/home/a/run (deleted)".into());
        let events = [
            exec(0.0, 10, 1, "/tmp/x", &["/tmp/x"]),
            exec(1.0, 11, 1, "/var/tmp/a/b", &["b"]),
            exec(2.0, 12, 1, "/dev/shm/.k", &["k"]),
            exec(3.0, 13, 1, "/run/stage/tool", &["tool"]),
            memfd.clone(),
            deleted,
            exec(6.0, 16, 1, "/usr/../tmp/y", &["y"]),
        ];
        let alerts = run(&mut d, &events);
        let pids: Vec<u32> = alerts.iter().map(|a| a.event.pid).collect();
        assert_eq!(pids, [10, 11, 12, 13, 14, 15, 16]);
        let a = &alerts[4];
        assert_eq!((&*a.rule, a.severity, a.source), ("exec-from-tmp", Severity::High, "builtin"));
        assert_eq!(*a.event, memfd, "the alert carries its event");
        assert_eq!(a.details["reason"], "memfd");
        assert!(a.description.contains("memfd") && a.description.contains("(execveat)"), "{}", a.description);
        assert_eq!(alerts[5].details["reason"], "deleted");
        assert_eq!(alerts[0].details["reason"], "staging_dir");
        assert!(a.tags.iter().any(|t| &**t == "attack.t1620"));
    }

    #[test]
    fn elsewhere_and_failed_execs_do_not() {
        let mut d = detector(&[]);
        let events = [
            exec(0.0, 10, 1, "/usr/bin/tmpreaper", &["tmpreaper"]),
            exec(0.1, 11, 1, "/tmpfoo/x", &["x"]),
            exec(0.2, 12, 1, "/tmp/../usr/bin/id", &["id"]),
            exec(0.3, 13, 1, "/home/tmp/x", &["x"]),
            failed_exec(0.4, 14, 1, "/tmp/missing", &["missing"]),
            fork(0.5, 1, 2),
        ];
        assert!(run(&mut d, &events).is_empty());
        assert!(
            ExecFromTmp::new(&{
                let mut c = DetectConfig::default();
                c.builtin.tmp_dirs = vec!["relative".into()];
                c
            })
            .is_err()
        );
    }

    #[test]
    fn stateless_under_churn() {
        // No state at all: a million execs leave the detector as it was.
        let mut d = detector(&[]);
        let mut out = Vec::new();
        for pid in 0..1_000_000u32 {
            d.observe(&exec(0.0, pid, 1, "/usr/bin/true", &["true"]), &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(d.dirs.len(), 3);
    }
}
