//! `system-binary-replaced`: a program or service unit in the system
//! folders changed by something other than a package manager.

use super::{
    Rule,
    file_change::{FileChange, Spec},
};
use crate::detect::{DetectConfig, Severity};

pub const RULE: Rule = Rule {
    id: "system-binary-replaced",
    title: "System program or service unit changed outside the package manager",
    severity: Severity::High,
    tags: &["attack.persistence", "attack.defense_evasion", "attack.t1036.005", "attack.t1543.002"],
    description: "Replacing ps, ssh or busybox with a trojaned copy, or adding a systemd unit, keeps an intruder \
        in and hidden. Seen: a file in /usr/bin, /usr/sbin, /bin, /sbin, /lib/systemd/system or \
        /usr/lib/systemd/system opened for writing, created, renamed into or out of place, deleted, chmod'ed, \
        chown'ed or linked, unless a package manager (dpkg, apt, apt-get, aptitude, rpm, dnf, yum, microdnf, zypper, \
        apk, opkg, pacman, snapd, packagekitd) is the process or one of its four nearest ancestors (read from /proc \
        when the alert would fire: a process already gone is not known, and fires). A manual `make install` or \
        `cp` fires.",
    remediation: "Compare the file with the package's (`dpkg -V`, `rpm -Va`, `debsums`); reinstall the package or \
        remove the unit, and find what process and account made the change.",
};

const DIRS: &[&str] =
    &["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/", "/lib/systemd/system/", "/usr/lib/systemd/system/"];

fn matches(path: &str) -> bool {
    DIRS.iter().any(|d| path.strip_prefix(d).is_some_and(|rest| !rest.is_empty() && !rest.contains('/')))
}

static SPEC: Spec = Spec {
    rule: &RULE,
    ops: &["write", "create", "rename", "delete", "chmod", "chown", "link", "symlink"],
    matches,
    rename_from: true,
    skip_package_managers: true,
};

pub fn detector(cfg: &DetectConfig) -> FileChange {
    FileChange::new(&SPEC, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::{
        file_change::testing::*,
        testing::{Scratch, run},
    };

    #[test]
    fn replaced_outside_package_managers() {
        let s = Scratch::new("sysbin");
        // pid 49 (the events' parent) is a shell whose parent, 48, is dpkg.
        s.write("49/stat", "49 (sh) S 48 49 49 0");
        s.link("49/exe", "/usr/bin/dash");
        s.write("48/stat", "48 (dpkg) S 1 48 48 0");
        s.link("48/exe", "/usr/bin/dpkg");
        let mut d = detector(&s.config());
        let mut orphan = change("write", "/usr/bin/ssh", None, "/usr/bin/cp");
        orphan.ppid = Some(77); // no /proc entry: not known to be a package manager
        let events = [
            orphan,
            change("rename", "/usr/sbin/.tmp", Some("/usr/sbin/sshd"), "/usr/bin/mv"),
            change("create", "/lib/systemd/system/evil.service", None, "/usr/bin/tee"),
            change("delete", "/bin/ps", None, "/usr/bin/rm"),
        ];
        let alerts = run(&mut d, &events);
        assert_eq!(alerts.len(), 1, "only the orphan: the others descend from dpkg: {alerts:#?}");
        assert_eq!(alerts[0].details["path"], "/usr/bin/ssh");

        let mut dpkg = change("write", "/usr/bin/ssh", None, "/usr/bin/dpkg");
        dpkg.ppid = Some(77);
        assert!(run(&mut d, &[dpkg]).is_empty(), "dpkg itself");
        // Not in a system folder, or in a subfolder.
        let mut other = change("write", "/usr/bin/x/y", None, "/usr/bin/cp");
        other.ppid = Some(77);
        let mut local = change("write", "/usr/local/bin/tool", None, "/usr/bin/cp");
        local.ppid = Some(77);
        assert!(run(&mut d, &[other, local]).is_empty());
    }
}
