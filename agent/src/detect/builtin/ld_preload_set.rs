//! `ld-preload-set`: /etc/ld.so.preload written or put in place.

use super::{
    Rule,
    file_change::{FileChange, Spec},
};
use crate::detect::{DetectConfig, Severity};

pub const RULE: Rule = Rule {
    id: "ld-preload-set",
    title: "Library preloaded into every program (/etc/ld.so.preload)",
    severity: Severity::Critical,
    tags: &["attack.persistence", "attack.defense_evasion", "attack.t1574.006"],
    description: "Every dynamically linked program loads the libraries listed in /etc/ld.so.preload: userland \
        rootkits (Azazel, Jynx, the ones IoT miners ship) use it to hide their files and processes from ps, ls and \
        netstat. The file is absent on most systems. Seen: it opened for writing, created, renamed into place or \
        linked; its deletion is not an alert.",
    remediation: "Read the file and the libraries it names (with a statically linked tool or from another system: \
        the library may hide itself); remove the entry, then treat the device as compromised.",
};

fn matches(path: &str) -> bool {
    path == "/etc/ld.so.preload"
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
    fn preload_written_not_deleted() {
        let mut d = detector(&DetectConfig::default());
        let events = [
            change("write", "/etc/ld.so.preload", None, "/usr/bin/bash"),
            change("symlink", "/etc/ld.so.preload", None, "/usr/bin/ln"),
            change("delete", "/etc/ld.so.preload", None, "/usr/bin/rm"),
            change("write", "/etc/ld.so.conf", None, "/usr/bin/bash"),
        ];
        let alerts = run(&mut d, &events);
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].severity, Severity::Critical);
    }
}
