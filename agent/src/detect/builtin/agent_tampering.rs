//! `agent-tampering`: something stops, kills, traces or removes Shrike.

use std::collections::BTreeMap;

use super::{Rule, base_name, command_line, program_name};
use crate::{
    detect::{Alert, DetectConfig, Detector, Severity},
    events::{Body, Event, Kind},
};

pub const RULE: Rule = Rule {
    id: "agent-tampering",
    title: "Security agent tampering",
    severity: Severity::High,
    tags: &["attack.defense_evasion", "attack.t1562.001", "attack.t1489"],
    description: "Attackers blind the security agent first. The kernel probes do not report kill() or ptrace() \
        calls (and Shrike's own activity is filtered in the kernel), so this is seen from the commands that do \
        it: kill, pkill, killall, skill with Shrike's pid or name; systemctl stop|disable|mask|kill|freeze \
        shrike and service shrike stop; gdb, strace, ltrace with Shrike's pid; rm, mv, unlink, shred, truncate, \
        cp, install or ln over Shrike's binary or unit file. Not seen: a shell's builtin kill (no exec), a \
        program calling kill() or ptrace() itself, a process name given as a pattern that does not contain \
        \"shrike\"; a SIGKILL leaves this alert as the last thing the agent reported.",
    remediation: "Find who ran the command (user, parent process, login session). If it was not an operator, \
        treat the device as compromised: restart the agent, check its binary and unit against the package \
        (dpkg --verify shrike), and review what happened around the time the agent was targeted.",
};

const SYSTEMCTL_VERBS: &[&str] = &["stop", "disable", "mask", "kill", "freeze", "clean"];

/// Stateless: who the agent is, fixed at start.
pub struct AgentTampering {
    pid: String,
    /// The agent's executable path and base name ("shrike").
    exe: Option<String>,
    name: String,
}

impl AgentTampering {
    pub fn new(cfg: &DetectConfig) -> AgentTampering {
        let name = cfg.agent_exe.as_deref().map(base_name).filter(|n| !n.is_empty()).unwrap_or("shrike");
        AgentTampering { pid: cfg.agent_pid.to_string(), exe: cfg.agent_exe.clone(), name: name.to_owned() }
    }

    /// `arg` names the agent's process (pid, or a name/pattern of it).
    fn names_process(&self, arg: &str) -> bool {
        arg == self.pid || (arg.len() >= 3 && (self.name.contains(arg) || arg.contains(self.name.as_str())))
    }

    /// `arg` names the agent's unit (`shrike`, `shrike.service`, `shrike@x`).
    fn names_unit(&self, arg: &str) -> bool {
        let unit = base_name(arg);
        unit == "shrike" || unit.starts_with("shrike.") || unit.starts_with("shrike@")
    }

    /// `arg` is a path of the agent's binary or unit file.
    fn names_file(&self, arg: &str) -> bool {
        let base = base_name(arg);
        self.exe.as_deref() == Some(arg)
            || base == self.name
            || base == "shrike.service"
            || (base.starts_with("shrike@") && base.ends_with(".service"))
    }

    /// What the command does to the agent, if anything.
    fn verdict(&self, name: &str, argv: &[String]) -> Option<String> {
        let args = argv.get(1..).unwrap_or(&[]);
        let operands = || args.iter().filter(|a| !a.starts_with('-'));
        match name {
            "kill" => {
                // kill [-SIG|-s SIG|-n NUM] PID...: the pid as an operand.
                let hit = args.contains(&self.pid);
                hit.then(|| format!("signals the agent's pid {}", self.pid))
            }
            "pkill" | "killall" | "skill" => operands()
                .find(|a| self.names_process(a))
                .map(|a| format!("signals processes matching {a:?}, which names the agent")),
            "systemctl" => {
                let verb = args.iter().find(|a| SYSTEMCTL_VERBS.contains(&a.as_str()))?;
                let unit = operands().find(|a| self.names_unit(a))?;
                Some(format!("asks systemd to {verb} the agent's unit {unit}"))
            }
            "service" => {
                let unit = args.first().filter(|a| self.names_unit(a))?;
                let verb = args.get(1).filter(|v| matches!(v.as_str(), "stop" | "disable"))?;
                Some(format!("asks to {verb} the agent's service {unit}"))
            }
            "gdb" | "strace" | "ltrace" | "perf" | "bpftrace" | "gcore" => args
                .iter()
                .any(|a| {
                    a == &self.pid
                        || a.strip_prefix("-p").is_some_and(|p| p == self.pid)
                        || a.strip_prefix("--pid=").is_some_and(|p| p == self.pid)
                        || a.strip_prefix("--attach=").is_some_and(|p| p == self.pid)
                })
                .then(|| format!("attaches to the agent's pid {}", self.pid)),
            "rm" | "unlink" | "shred" | "truncate" | "mv" => operands()
                .find(|a| self.names_file(a))
                .map(|a| format!("removes or replaces the agent's file {a}")),
            "cp" | "install" | "ln" => operands()
                .next_back()
                .filter(|a| self.names_file(a))
                .map(|a| format!("overwrites the agent's file {a}")),
            _ => None,
        }
    }
}

impl Detector for AgentTampering {
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
        let Some(what) = self.verdict(name, &x.argv) else { return };
        let mut details = BTreeMap::new();
        details.insert("program", name.to_owned());
        details.insert("command_line", command_line(&x.argv));
        details.insert("agent_pid", self.pid.clone());
        let who = ev.user.clone().unwrap_or_else(|| format!("uid {}", ev.uid));
        out.push(RULE.alert(
            ev,
            RULE.severity,
            format!("{who} ran `{}` (pid {}), which {what}.", command_line(&x.argv), ev.pid),
            details,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    fn detector() -> (Scratch, AgentTampering) {
        let s = Scratch::new("at");
        let d = AgentTampering::new(&s.config()); // pid 777, /usr/bin/shrike
        (s, d)
    }

    #[test]
    fn commands_against_the_agent_fire() {
        let (_s, mut d) = detector();
        let kill = exec(0.0, 10, 1, "/usr/bin/kill", &["kill", "-0", "777"]);
        let events = [
            kill.clone(),
            exec(0.1, 11, 1, "/usr/bin/kill", &["kill", "-s", "KILL", "777"]),
            exec(0.2, 12, 1, "/usr/bin/pkill", &["pkill", "-9", "shrike"]),
            exec(0.3, 13, 1, "/usr/bin/killall", &["killall", "shrike"]),
            exec(0.4, 14, 1, "/usr/bin/systemctl", &["systemctl", "--no-block", "stop", "shrike.service"]),
            exec(0.5, 15, 1, "/usr/bin/systemctl", &["systemctl", "mask", "shrike"]),
            exec(0.6, 16, 1, "/usr/sbin/service", &["service", "shrike", "stop"]),
            exec(0.7, 17, 1, "/usr/bin/strace", &["strace", "-f", "-p", "777"]),
            exec(0.8, 18, 1, "/usr/bin/gdb", &["gdb", "-p777"]),
            exec(0.9, 19, 1, "/usr/bin/rm", &["rm", "-f", "/usr/bin/shrike"]),
            exec(1.0, 20, 1, "/usr/bin/mv", &["mv", "/lib/systemd/system/shrike.service", "/tmp/x"]),
            exec(1.1, 21, 1, "/usr/bin/cp", &["cp", "/tmp/evil", "/usr/bin/shrike"]),
            exec(1.2, 22, 1, "/bin/busybox", &["kill", "777"]),
        ];
        let alerts = run(&mut d, &events);
        let pids: Vec<u32> = alerts.iter().map(|a| a.event.pid).collect();
        assert_eq!(pids, (10..=22).collect::<Vec<_>>(), "{alerts:#?}");
        assert_eq!((&*alerts[0].rule, alerts[0].severity), ("agent-tampering", Severity::High));
        assert_eq!(*alerts[0].event, kill);
        assert!(alerts[0].description.contains("signals the agent's pid 777"), "{}", alerts[0].description);
    }

    #[test]
    fn other_targets_do_not() {
        let (_s, mut d) = detector();
        let events = [
            exec(0.0, 10, 1, "/usr/bin/kill", &["kill", "-9", "7777"]),
            exec(0.1, 11, 1, "/usr/bin/pkill", &["pkill", "sh"]),
            exec(0.2, 12, 1, "/usr/bin/pgrep", &["pgrep", "shrike"]),
            exec(0.3, 13, 1, "/usr/bin/systemctl", &["systemctl", "status", "shrike"]),
            exec(0.4, 14, 1, "/usr/bin/systemctl", &["systemctl", "stop", "nginx"]),
            exec(0.5, 15, 1, "/usr/bin/strace", &["strace", "-p", "778"]),
            exec(0.6, 16, 1, "/usr/bin/rm", &["rm", "/tmp/shrike.log"]),
            exec(0.7, 17, 1, "/usr/bin/cp", &["cp", "/usr/bin/shrike", "/tmp/copy"]),
            failed_exec(0.8, 18, 1, "/usr/bin/kill", &["kill", "777"]),
        ];
        assert!(run(&mut d, &events).is_empty(), "{:#?}", run(&mut d, &events));
        // Stateless beyond who the agent is.
        let mut out = Vec::new();
        for pid in 0..1_000_000u32 {
            d.observe(&exec(0.0, pid, 1, "/usr/bin/true", &["true"]), &mut out);
        }
        assert!(out.is_empty() && d.pid == "777");
    }
}
