//! `passwd-changed`: the account databases (/etc/passwd, /etc/shadow,
//! /etc/group, /etc/gshadow) changed.

use super::{
    Rule,
    file_change::{FileChange, Spec},
};
use crate::detect::{DetectConfig, Severity};

pub const RULE: Rule = Rule {
    id: "passwd-changed",
    title: "Account database changed (/etc/passwd, shadow, group, gshadow)",
    severity: Severity::Medium,
    tags: &["attack.persistence", "attack.t1136.001", "attack.t1098"],
    description: "Adding a user, a uid-0 account or a password hash is how an intruder keeps access. Seen: the file \
        opened for writing, created, renamed into place (what useradd, passwd and vipw do: they write NAME+ and rename \
        it), deleted, renamed away, chmod'ed or chown'ed. Legitimate administration fires this too: the alert says \
        which program did it.",
    remediation: "Check that the change was made by an administrator (the program, the user, the time); compare the \
        file with its backup (/etc/passwd-) and look for new accounts, uid 0 besides root, or empty password fields.",
};

fn matches(path: &str) -> bool {
    matches!(path, "/etc/passwd" | "/etc/shadow" | "/etc/group" | "/etc/gshadow")
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
    fn account_files_changed() {
        let mut d = detector(&DetectConfig::default());
        let events = [
            change("rename", "/etc/passwd+", Some("/etc/passwd"), "/usr/sbin/useradd"),
            change("write", "/etc/shadow", None, "/usr/bin/bash"),
            change("chmod", "/etc/gshadow", None, "/usr/bin/chmod"),
            change("rename", "/etc/group", Some("/tmp/g"), "/usr/bin/mv"),
            // Not: the lock and backup files, other files.
            change("create", "/etc/passwd.lock", None, "/usr/sbin/useradd"),
            change("link", "/etc/passwd-", None, "/usr/sbin/useradd"),
            change("write", "/etc/passwdx", None, "/usr/bin/bash"),
        ];
        let alerts = run(&mut d, &events);
        let paths: Vec<&str> = alerts.iter().map(|a| a.details["path"].as_str()).collect();
        assert_eq!(paths, ["/etc/passwd", "/etc/shadow", "/etc/gshadow", "/etc/group"]);
        assert!(
            alerts[0].description.contains("renamed /etc/passwd+ to /etc/passwd"),
            "{}",
            alerts[0].description
        );
    }
}
