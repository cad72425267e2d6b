//! `sudoers-changed`: /etc/sudoers or a file in /etc/sudoers.d changed.

use super::{
    Rule,
    file_change::{FileChange, Spec},
};
use crate::detect::{DetectConfig, Severity};

pub const RULE: Rule = Rule {
    id: "sudoers-changed",
    title: "sudo configuration changed",
    severity: Severity::High,
    tags: &["attack.privilege_escalation", "attack.t1548.003", "attack.persistence"],
    description: "A line in sudoers (NOPASSWD: ALL for an account the attacker holds) is a lasting way back to root. \
        Seen: /etc/sudoers, or any file in /etc/sudoers.d, opened for writing, created, renamed into place or away, \
        deleted, chmod'ed, chown'ed or linked (visudo writes a temporary file and renames it).",
    remediation: "Review the sudo rules (`sudo -l -U USER`, the files) for entries nobody can account for and \
        remove them; find out which account made the change.",
};

fn matches(path: &str) -> bool {
    path == "/etc/sudoers" || path == "/etc/sudoers.d" || path.starts_with("/etc/sudoers.d/")
}

static SPEC: Spec = Spec {
    rule: &RULE,
    ops: &["write", "create", "rename", "delete", "chmod", "chown", "link", "symlink"],
    matches,
    rename_from: true,
    skip_package_managers: false,
};

pub fn detector(cfg: &DetectConfig) -> FileChange {
    FileChange::new(&SPEC, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::{file_change::testing::*, testing::run};

    #[test]
    fn sudoers_and_its_folder() {
        let mut d = detector(&DetectConfig::default());
        let events = [
            change("rename", "/etc/sudoers.tmp", Some("/etc/sudoers"), "/usr/sbin/visudo"),
            change("create", "/etc/sudoers.d/backdoor", None, "/usr/bin/tee"),
            change("write", "/etc/sudoers.dx", None, "/usr/bin/tee"),
            change("write", "/etc/sudo.conf", None, "/usr/bin/tee"),
        ];
        let alerts = run(&mut d, &events);
        let paths: Vec<&str> = alerts.iter().map(|a| a.details["path"].as_str()).collect();
        assert_eq!(paths, ["/etc/sudoers", "/etc/sudoers.d/backdoor"]);
    }
}
