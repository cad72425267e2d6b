//! `user-account-change`: a program that creates, changes or deletes local
//! users or groups, or their passwords.

use std::collections::BTreeMap;

use super::{Rule, base_name, command_line, exec_path, program_name};
use crate::{
    detect::{Alert, Detector, Severity},
    events::{Body, Event, Kind},
};

pub const RULE: Rule = Rule {
    id: "user-account-change",
    title: "Local user account changed",
    severity: Severity::Medium,
    tags: &["attack.persistence", "attack.t1136.001", "attack.t1098", "attack.t1531"],
    description: "Attackers add a user (or a second uid 0), give one a password or a group such as sudo, or \
        lock the owners out. Seen: a successful exec of useradd, usermod, userdel, passwd, chpasswd, adduser, \
        deluser, addgroup, delgroup, groupadd, groupmod, groupdel, gpasswd, chage, newusers, vipw or vigr (one \
        alert when one of them runs another, e.g. adduser running useradd). Not seen: /etc/passwd, /etc/shadow \
        or /etc/group edited directly by another program (file integrity comes with a later issue).",
    remediation: "Check that the change was planned (who ran it: the user, the parent process, the login \
        session). If not, revert it (`userdel`, `passwd -l`, group membership), review /etc/passwd, /etc/shadow, \
        /etc/group and ~/.ssh/authorized_keys, and find how the attacker got the rights to do it.",
};

const TOOLS: &[&str] = &[
    "useradd", "usermod", "userdel", "passwd", "chpasswd", "adduser", "deluser", "addgroup", "delgroup",
    "groupadd", "groupmod", "groupdel", "gpasswd", "chage", "newusers", "vipw", "vigr",
];

/// Stateless.
#[derive(Default)]
pub struct UserAccountChange;

impl UserAccountChange {
    pub fn new() -> UserAccountChange {
        UserAccountChange
    }
}

impl Detector for UserAccountChange {
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
        let name = program_name(ev, x);
        if !TOOLS.contains(&name) {
            return;
        }
        // adduser runs useradd, passwd...: the outer one is reported.
        if x.parent_exe.as_deref().is_some_and(|p| TOOLS.contains(&base_name(p))) {
            return;
        }
        let mut details = BTreeMap::new();
        details.insert("program", name.to_owned());
        details.insert("command_line", command_line(&x.argv));
        if let Some(p) = &x.parent_exe {
            details.insert("parent_exe", p.clone());
        }
        let who = ev.user.clone().unwrap_or_else(|| format!("uid {}", ev.uid));
        out.push(RULE.alert(
            ev,
            RULE.severity,
            format!("{who} ran {} (pid {}): {}.", exec_path(ev, x), ev.pid, command_line(&x.argv)),
            details,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    #[test]
    fn account_tools_fire_once_per_command() {
        let mut d = UserAccountChange::new();
        let add = exec(0.0, 10, 1, "/usr/sbin/useradd", &["useradd", "-o", "-u", "0", "backdoor"]);
        let mut inner = exec(1.1, 12, 11, "/usr/sbin/useradd", &["useradd", "bob"]);
        if let Body::Exec(x) = &mut inner.body {
            x.parent_exe = Some("/usr/sbin/adduser".into());
        }
        let events = [
            add.clone(),
            exec(1.0, 11, 1, "/usr/sbin/adduser", &["adduser", "bob"]),
            inner,
            exec(2.0, 13, 1, "/usr/bin/passwd", &["passwd", "root"]),
            exec(3.0, 14, 1, "/bin/busybox", &["deluser", "bob"]),
        ];
        let alerts = run(&mut d, &events);
        let progs: Vec<&str> = alerts.iter().map(|a| a.details["program"].as_str()).collect();
        assert_eq!(progs, ["useradd", "adduser", "passwd", "deluser"]);
        assert_eq!((&*alerts[0].rule, alerts[0].severity), ("user-account-change", Severity::Medium));
        assert_eq!(*alerts[0].event, add);
        assert!(alerts[0].description.contains("alice ran /usr/sbin/useradd"), "{}", alerts[0].description);
    }

    #[test]
    fn other_programs_and_failed_execs_do_not() {
        let mut d = UserAccountChange::new();
        let events = [
            exec(0.0, 10, 1, "/usr/bin/id", &["id"]),
            exec(0.1, 11, 1, "/usr/bin/passwdqc", &["passwdqc"]),
            failed_exec(0.2, 12, 1, "/usr/local/bin/useradd", &["useradd", "x"]),
        ];
        assert!(run(&mut d, &events).is_empty());
        // Stateless: nothing to grow.
        assert_eq!(std::mem::size_of::<UserAccountChange>(), 0);
    }
}
