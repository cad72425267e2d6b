//! `ssh-key-added`: an authorized_keys file under a .ssh directory written,
//! created, renamed into place or linked.

use super::{
    Rule,
    file_change::{FileChange, Spec},
};
use crate::detect::{DetectConfig, Severity};

pub const RULE: Rule = Rule {
    id: "ssh-key-added",
    title: "SSH authorized_keys changed",
    severity: Severity::High,
    tags: &["attack.persistence", "attack.t1098.004"],
    description: "A key added to a user's authorized_keys lets whoever holds the private key log in as that user \
        without a password, and survives password changes: a favourite persistence of attackers and IoT botnets. \
        Seen: an authorized_keys or authorized_keys2 in any .ssh directory under a watched path (/root/.ssh and every \
        user's ~/.ssh by default) opened for writing, created, renamed into place or linked. Not seen: keys in a file \
        named by sshd's AuthorizedKeysFile elsewhere, or a home directory not watched.",
    remediation: "Compare the file with what the user expects; remove keys nobody can account for, find how they \
        were added (the process, its parent, the user's recent logins) and rotate the credentials of that account.",
};

fn matches(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    let (Some(name), Some(dir)) = (parts.next(), parts.next()) else { return false };
    dir == ".ssh" && (name == "authorized_keys" || name == "authorized_keys2")
}

static SPEC: Spec = Spec {
    rule: &RULE,
    ops: &["write", "create", "rename", "link", "symlink"],
    matches,
    rename_from: false,
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
    fn authorized_keys_written_or_moved_into_place() {
        let mut d = detector(&DetectConfig::default());
        let events = [
            change("write", "/home/alice/.ssh/authorized_keys", None, "/usr/bin/bash"),
            change("create", "/root/.ssh/authorized_keys2", None, "/usr/bin/cp"),
            change("rename", "/root/.ssh/.tmp123", Some("/root/.ssh/authorized_keys"), "/usr/bin/mv"),
            // Not: another file, a key file elsewhere, read-side ops, failures, moved away.
            change("write", "/root/.ssh/known_hosts", None, "/usr/bin/ssh"),
            change("write", "/root/authorized_keys", None, "/usr/bin/bash"),
            change("chmod", "/root/.ssh/authorized_keys", None, "/usr/bin/chmod"),
            failed(change("write", "/root/.ssh/authorized_keys", None, "/usr/bin/bash")),
            change("rename", "/root/.ssh/authorized_keys", Some("/root/.ssh/old"), "/usr/bin/mv"),
        ];
        let alerts = run(&mut d, &events);
        assert_eq!(alerts.len(), 3, "{alerts:#?}");
        assert_eq!(alerts[0].details["path"], "/home/alice/.ssh/authorized_keys");
        assert_eq!(alerts[2].details["path"], "/root/.ssh/authorized_keys");
        assert_eq!(alerts[2].details["old_path"], "/root/.ssh/.tmp123");
        assert!(alerts[0].description.contains("opened for writing"), "{}", alerts[0].description);
        assert_eq!((&*alerts[0].rule, alerts[0].severity), ("ssh-key-added", Severity::High));
    }
}
