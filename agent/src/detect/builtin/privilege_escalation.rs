//! `privilege-escalation`: a process gains uid 0 (or capabilities) that its
//! program has no business granting: neither a setuid-root file, nor a file
//! with capabilities, nor a known login/sudo program.

use std::{collections::BTreeMap, os::unix::fs::MetadataExt, path::PathBuf};

use super::{Bounded, PidMap, Rule, base_name};
use crate::{
    detect::{Alert, DetectConfig, Detector, Severity},
    events::{Body, Event, Kind, Privilege},
};

pub const RULE: Rule = Rule {
    id: "privilege-escalation",
    title: "Process gained root privileges",
    severity: Severity::High,
    tags: &["attack.privilege_escalation", "attack.t1068", "attack.t1548"],
    description: "A successful setuid/setreuid/setresuid that made a non-root process's uid 0, or set one of \
        its ids to 0, or a capset that gave a non-root process effective capabilities (not after it \
        dropped from root itself), by a program that is not a setuid-root file, has no file capabilities, and is \
        not a known login/privilege program (su, sudo, login, sshd, passwd, pkexec, cron, systemd, ... and the \
        configured `privileged_programs`). A kernel exploit that writes the credentials directly makes no \
        set*id call: it shows only as a process whose later events have uid 0. The uid the probes report is the \
        real uid; the requested ids are the call's arguments.",
    remediation: "Look at the program (its path, hash, package) and at how it got the saved root id: an \
        exploited setuid program, a leftover root process that dropped privileges temporarily, or a kernel \
        exploit. Kill it, preserve the binary, patch the kernel or the program, and look for what ran as root \
        afterwards.",
};

/// Programs that change uids by design (base names).
const KNOWN: &[&str] = &[
    "su",
    "sudo",
    "sudoedit",
    "doas",
    "run0",
    "login",
    "sshd",
    "sshd-session",
    "sshd-auth",
    "dropbear",
    "passwd",
    "chsh",
    "chfn",
    "chage",
    "gpasswd",
    "newgrp",
    "sg",
    "expiry",
    "pkexec",
    "polkitd",
    "polkit-agent-helper-1",
    "cron",
    "crond",
    "atd",
    "at",
    "crontab",
    "systemd",
    "dbus-daemon-launch-helper",
    "unix_chkpwd",
    "mount",
    "umount",
    "fusermount",
    "fusermount3",
    "ssh-keysign",
    "Xorg",
    "Xorg.wrap",
    "ksu",
];

/// Processes seen dropping from root (their later capset keeps what they
/// had, it gains nothing): at most this many.
const DROPPED_CAP: usize = 4096;

pub struct PrivilegeEscalation {
    proc_root: PathBuf,
    allowed: Vec<String>,
    dropped: PidMap<()>,
}

impl PrivilegeEscalation {
    pub fn new(cfg: &DetectConfig) -> PrivilegeEscalation {
        PrivilegeEscalation {
            proc_root: cfg.proc_root.clone(),
            allowed: cfg.builtin.privileged_programs.clone(),
            dropped: Bounded::new(DROPPED_CAP),
        }
    }

    /// Why the program may grant root, if it may.
    fn allowed(&self, ev: &Event) -> Option<String> {
        let exe = ev.exe.as_deref().unwrap_or("");
        let name = if exe.is_empty() { ev.comm.as_str() } else { base_name(exe) };
        if KNOWN.contains(&name) || name.starts_with("systemd-") {
            return Some(format!("{name} is a known privilege program"));
        }
        if self.allowed.iter().any(|a| a == exe || a == name) {
            return Some(format!("{name} is in privileged_programs"));
        }
        // The running file itself (through /proc/PID/exe, which reaches it
        // even from another mount namespace), else the path.
        let proc_exe = self.proc_root.join(ev.pid.to_string()).join("exe");
        let paths = [proc_exe, PathBuf::from(exe)];
        for p in paths.iter().filter(|p| !p.as_os_str().is_empty()) {
            let Ok(md) = std::fs::metadata(p) else { continue };
            if md.mode() & libc::S_ISUID != 0 && md.uid() == 0 {
                return Some(format!("{exe} is setuid root"));
            }
            if has_file_caps(p) {
                return Some(format!("{exe} has file capabilities"));
            }
            return None;
        }
        None
    }
}

/// The file carries `security.capability` (setcap).
fn has_file_caps(p: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else { return false };
    // SAFETY: a size query (null buffer, size 0) on a valid C string path.
    let n = unsafe { libc::getxattr(c.as_ptr(), c"security.capability".as_ptr(), std::ptr::null_mut(), 0) };
    n > 0
}

/// A uid call asking for 0 in one of its ids (setfsuid is left out: it
/// returns the old fsuid, so its success is not known).
fn sets_uid_zero(p: &Privilege) -> bool {
    matches!(p.call, "setuid" | "setreuid" | "setresuid") && p.args.contains(&Some(0))
}

fn caps_mask(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or(0)
}

impl Detector for PrivilegeEscalation {
    fn id(&self) -> &'static str {
        RULE.id
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Privilege, Kind::Exit, Kind::Exec]
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let p = match &ev.body {
            Body::Privilege(p) if p.success => p,
            // A new program: what it does with its ids is its own.
            Body::Exit(_) | Body::Exec(_) => {
                self.dropped.remove(&ev.pid);
                return;
            }
            _ => return,
        };
        if p.old_uid == 0 && p.new_uid != 0 {
            self.dropped.insert(ev.pid, ());
        }
        let what = if p.call == "capset" {
            let eff = p.caps.as_ref().map(|c| caps_mask(&c.effective)).unwrap_or(0);
            if p.old_uid == 0 || eff == 0 || self.dropped.contains(&ev.pid) {
                return;
            }
            format!("capset gave effective capabilities {eff:#x} to a process of uid {}", p.old_uid)
        } else if p.old_uid != 0 && (p.new_uid == 0 || sets_uid_zero(p)) {
            let args: Vec<String> =
                p.args.iter().map(|a| a.map_or_else(|| "-1".to_owned(), |v| v.to_string())).collect();
            format!("{}({}) took a process of uid {} to uid 0", p.call, args.join(", "), p.old_uid)
        } else {
            return;
        };
        if let Some(why) = self.allowed(ev) {
            tracing::trace!(pid = ev.pid, why, "privilege change allowed");
            return;
        }
        let exe = ev.exe.as_deref().unwrap_or(&ev.comm);
        let mut details = BTreeMap::new();
        details.insert("call", p.call.to_owned());
        details.insert("old_uid", p.old_uid.to_string());
        details.insert("new_uid", p.new_uid.to_string());
        details.insert("executable", exe.to_owned());
        out.push(RULE.alert(
            ev,
            RULE.severity,
            format!("{what}: {exe} (pid {}) is neither setuid root nor a known privilege program.", ev.pid),
            details,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    fn setup() -> (Scratch, PrivilegeEscalation) {
        let s = Scratch::new("pe");
        let mut cfg = s.config();
        cfg.builtin.privileged_programs = vec!["/opt/vendor/bin/updater".into()];
        let d = PrivilegeEscalation::new(&cfg);
        (s, d)
    }

    #[test]
    fn regaining_root_from_a_plain_binary_fires() {
        let (s, mut d) = setup();
        let plain = s.write("bin/plain", "x");
        let plain = plain.to_str().unwrap();
        s.link("100/exe", plain);
        let up = privilege(1.0, 100, plain, "setresuid", &[Some(0), Some(0), Some(0)], 1000, 0);
        let alerts = run(&mut d, std::slice::from_ref(&up));
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!((&*a.rule, a.severity), ("privilege-escalation", Severity::High));
        assert_eq!(*a.event, up);
        assert!(
            a.description.contains("setresuid(0, 0, 0) took a process of uid 1000 to uid 0"),
            "{}",
            a.description
        );
        // Only the effective uid back to 0 (the real one stays 1000): the
        // argument says it.
        let euid = privilege(2.0, 100, plain, "setresuid", &[None, Some(0), None], 1000, 1000);
        assert_eq!(run(&mut d, &[euid]).len(), 1);
        // A capset from a non-root process that never was root.
        let caps = capset(3.0, 100, plain, 1000, "0x200000");
        assert_eq!(run(&mut d, &[caps]).len(), 1);
    }

    #[test]
    fn setuid_files_known_programs_drops_and_failures_do_not() {
        let (s, mut d) = setup();
        let suid = s.write("bin/suid", "x");
        std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
        let suid = suid.to_str().unwrap();
        let root_owned = std::fs::metadata(suid).unwrap().uid() == 0;
        let mut failed = privilege(5.0, 104, "/tmp/x", "setuid", &[Some(0)], 1000, 1000);
        if let Body::Privilege(p) = &mut failed.body {
            p.success = false;
            p.result = -1;
        }
        let events = [
            privilege(1.0, 101, "/usr/bin/sudo", "setresuid", &[Some(0), Some(0), Some(0)], 1000, 0),
            privilege(1.1, 102, "/opt/vendor/bin/updater", "setuid", &[Some(0)], 1000, 0),
            privilege(1.2, 103, "/usr/lib/systemd/systemd-logind", "setuid", &[Some(0)], 1000, 0),
            // Root dropping to nobody, then keeping some capabilities.
            privilege(2.0, 105, "/usr/sbin/chronyd", "setuid", &[Some(123)], 0, 123),
            capset(2.1, 105, "/usr/sbin/chronyd", 123, "0x2000000"),
            // Root to root, non-root to non-root, capset clearing everything.
            privilege(3.0, 106, "/tmp/x", "setuid", &[Some(0)], 0, 0),
            privilege(3.1, 107, "/tmp/x", "setuid", &[Some(1001)], 1000, 1001),
            capset(3.2, 108, "/tmp/x", 1000, "0x0"),
            failed,
        ];
        assert!(run(&mut d, &events).is_empty());
        if root_owned {
            s.link("110/exe", suid);
            let ev = privilege(4.0, 110, suid, "setuid", &[Some(0)], 1000, 0);
            assert!(run(&mut d, &[ev]).is_empty(), "setuid root file");
        }
    }

    #[test]
    fn state_stays_bounded_under_churn() {
        let (_s, mut d) = setup();
        let mut out = Vec::new();
        for pid in 0..1_000_000u32 {
            d.observe(&privilege(0.0, pid, "/usr/sbin/daemon", "setuid", &[Some(100)], 0, 100), &mut out);
        }
        assert!(out.is_empty());
        assert!(d.dropped.len() <= DROPPED_CAP && d.dropped.queue_len() <= 2 * DROPPED_CAP + 16);
    }
}
