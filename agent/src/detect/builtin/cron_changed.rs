//! `cron-changed`: a crontab or cron folder changed (/etc/crontab,
//! /etc/cron.*, /var/spool/cron).

use super::{
    Rule,
    file_change::{FileChange, Spec},
};
use crate::detect::{DetectConfig, Severity};

pub const RULE: Rule = Rule {
    id: "cron-changed",
    title: "Scheduled task (cron) changed",
    severity: Severity::Medium,
    tags: &["attack.persistence", "attack.execution", "attack.t1053.003"],
    description: "A cron entry runs the attacker's command again after a reboot or a cleanup: IoT malware installs \
        one to re-download itself. Seen: /etc/crontab, anything in /etc/cron.d, /etc/cron.hourly, daily, weekly, \
        monthly (/etc/cron*), and the users' crontabs in /var/spool/cron, opened for writing, created, renamed into \
        place or away, deleted, chmod'ed or linked. Package installs (dpkg, rpm... as the process or an ancestor) are \
        not excluded here: a package's cron file is worth a look too.",
    remediation: "Read the new entry: what it runs, as whom, and where that program came from; remove what nobody \
        installed and look for the download it fetches.",
};

fn matches(path: &str) -> bool {
    path.strip_prefix("/etc/cron").is_some_and(|rest| !rest.contains('/') || rest.split('/').count() == 2)
        || path == "/var/spool/cron"
        || path.starts_with("/var/spool/cron/")
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
    fn crontabs_and_cron_folders() {
        let mut d = detector(&DetectConfig::default());
        let events = [
            change("create", "/etc/cron.d/shrike-test", None, "/usr/bin/cp"),
            change("write", "/etc/crontab", None, "/usr/bin/vi"),
            change(
                "rename",
                "/var/spool/cron/crontabs/tmp.X",
                Some("/var/spool/cron/crontabs/root"),
                "/usr/bin/crontab",
            ),
            change("create", "/etc/cron.daily/update", None, "/usr/bin/cp"),
            change("write", "/etc/hosts", None, "/usr/bin/vi"),
            change("write", "/var/spool/mail/root", None, "/usr/bin/vi"),
        ];
        let alerts = run(&mut d, &events);
        let paths: Vec<&str> = alerts.iter().map(|a| a.details["path"].as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/cron.d/shrike-test",
                "/etc/crontab",
                "/var/spool/cron/crontabs/root",
                "/etc/cron.daily/update"
            ]
        );
    }
}
