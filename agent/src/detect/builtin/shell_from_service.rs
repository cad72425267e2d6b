//! `shell-from-service`: a shell or interpreter started by a network service
//! (a process that listens or accepted a connection), directly or through a
//! short chain of processes: what a web shell or an exploited daemon does.

use std::{collections::BTreeMap, path::PathBuf};

use super::{Bounded, PidMap, Rule, base_name, command_line, exec_path, is_shell, procfs, program_name};
use crate::{
    detect::{Alert, DetectConfig, Detector, Severity},
    events::{Body, Event, Kind},
};

pub const RULE: Rule = Rule {
    id: "shell-from-service",
    title: "Shell started by a network service",
    severity: Severity::High,
    tags: &[
        "attack.execution",
        "attack.t1059.004",
        "attack.initial_access",
        "attack.t1190",
        "attack.persistence",
        "attack.t1505.003",
    ],
    description: "A server process rarely needs a shell; one started by it, or by its child or grandchild, is how \
        an exploited service or a web shell runs commands. A service is a process seen calling listen() on a TCP \
        port or accepting a TCP connection, or found holding a listening TCP socket when Shrike started; its \
        children are followed through fork and exec events. Shells are sh, bash, dash, ash, zsh, ksh, csh, fish, \
        busybox sh, python, perl, ruby, php, lua, and nc/ncat/socat when told to run a program. Services that hand \
        out shells by design (sshd, dropbear, telnetd, login, systemd, tmux, web consoles such as cockpit and \
        ttyd) are not services here. Not seen: a \
        service reached over UDP or a Unix socket, a service whose listening socket was handed over by another \
        process after start-up (systemd socket activation) until it accepts.",
    remediation: "Look at what the service was serving when the shell started (its logs, the accepted \
        connection's address) and at what the shell ran. An unexpected shell from a web server, broker or device \
        daemon means the service is compromised: isolate the device, patch the service, rotate its credentials.",
};

/// Services that start shells by design.
const SHELL_SERVERS: &[&str] = &[
    "sshd",
    "sshd-session",
    "sshd-auth",
    "dropbear",
    "telnetd",
    "in.telnetd",
    "login",
    "systemd",
    "init",
    "tmux",
    "tmux: server",
    "screen",
    "mosh-server",
    // Web consoles and terminals: a shell is what they serve.
    "cockpit-ws",
    "cockpit-tls",
    "cockpit-session",
    "ttyd",
    "shellinaboxd",
    "gotty",
];

/// Processes known as services: at most this many (the oldest forgotten).
const SERVICE_CAP: usize = 4096;
/// Descendants (up to 3 levels) of services being followed: at most this many.
const TAINT_CAP: usize = 16384;
/// How far below the service a shell still counts.
const MAX_DEPTH: u8 = 3;

struct Service {
    exe: Option<String>,
    /// What made it a service ("accepted a connection from 10.0.0.9:41000").
    how: String,
}

#[derive(Clone, Copy)]
struct Taint {
    service: u32,
    /// 0: the service itself; 1: its child...
    depth: u8,
    /// A shell in this chain already fired: its own children do not again.
    alerted: bool,
}

pub struct ShellFromService {
    proc_root: PathBuf,
    services: PidMap<Service>,
    tainted: PidMap<Taint>,
}

impl ShellFromService {
    /// Seeds the services from the processes that hold a listening TCP socket
    /// now (under the proc root).
    pub fn new(cfg: &DetectConfig) -> ShellFromService {
        let mut d = ShellFromService {
            proc_root: cfg.proc_root.clone(),
            services: Bounded::new(SERVICE_CAP),
            tainted: Bounded::new(TAINT_CAP),
        };
        for (pid, ports) in procfs::listening_processes(&cfg.proc_root) {
            let exe = std::fs::read_link(cfg.proc_root.join(pid.to_string()).join("exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned());
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            d.add_service(pid, exe, format!("was listening on TCP port {} at start-up", ports.join(", ")));
        }
        d
    }

    fn add_service(&mut self, pid: u32, exe: Option<String>, how: String) {
        if pid == 1 || exe.as_deref().is_some_and(|e| SHELL_SERVERS.contains(&base_name(e))) {
            return;
        }
        self.services.insert(pid, Service { exe, how });
    }

    /// The chain `pid` (child of `ppid`) belongs to, if any.
    fn origin(&self, pid: u32, ppid: Option<u32>) -> Option<Taint> {
        if self.services.contains(&pid) {
            return Some(Taint { service: pid, depth: 0, alerted: false });
        }
        if let Some(t) = self.tainted.get(&pid) {
            return Some(*t);
        }
        // The fork was not seen (lost, or the process predates the agent):
        // the exec's parent still tells.
        let ppid = ppid?;
        if self.services.contains(&ppid) {
            return Some(Taint { service: ppid, depth: 1, alerted: false });
        }
        self.tainted.get(&ppid).filter(|t| t.depth < MAX_DEPTH).map(|t| Taint { depth: t.depth + 1, ..*t })
    }
}

fn relation(depth: u8) -> &'static str {
    match depth {
        0 => "itself",
        1 => "its parent",
        2 => "its grandparent",
        _ => "its great-grandparent",
    }
}

impl Detector for ShellFromService {
    fn id(&self) -> &'static str {
        RULE.id
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Exec, Kind::Fork, Kind::Exit, Kind::Listen, Kind::Accept]
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        match &ev.body {
            Body::Listen(s) => {
                // A listen() whose bind was not seen (an autobound or
                // inherited socket, or a Unix one): the port from /proc.
                let port = s
                    .local_port
                    .or_else(|| procfs::fd_tcp_socket(&self.proc_root, ev.pid, s.fd).map(|t| t.local.1));
                if let Some(port) = port {
                    self.add_service(ev.pid, ev.exe.clone(), format!("listens on TCP port {port}"));
                }
            }
            Body::Accept(s) => {
                let how = match (s.remote_addr, s.remote_port) {
                    (Some(a), Some(p)) => {
                        format!("accepted a TCP connection from {}", std::net::SocketAddr::new(a, p))
                    }
                    _ => "accepted a TCP connection".to_owned(),
                };
                self.add_service(ev.pid, ev.exe.clone(), how);
            }
            Body::Fork(f) => {
                if let Some(t) = self.origin(ev.pid, None)
                    && t.depth < MAX_DEPTH
                {
                    self.tainted.insert(f.child_pid, Taint { depth: t.depth + 1, ..t });
                }
            }
            Body::Exit(_) => {
                self.services.remove(&ev.pid);
                self.tainted.remove(&ev.pid);
            }
            Body::Exec(x) if x.success => {
                let Some(t) = self.origin(ev.pid, ev.ppid) else { return };
                let name = program_name(ev, x);
                if t.alerted || !is_shell(name, &x.argv) {
                    if t.depth > 0 && !self.tainted.contains(&ev.pid) {
                        self.tainted.insert(ev.pid, t);
                    }
                    return;
                }
                let (svc_exe, how) = match self.services.get(&t.service) {
                    Some(s) => (s.exe.clone(), s.how.clone()),
                    None => (None, "was a network service".to_owned()),
                };
                // This process is a shell now: its children are its, not the
                // service's, and do not fire again.
                if t.depth == 0 {
                    self.services.remove(&ev.pid);
                }
                self.tainted.insert(ev.pid, Taint { alerted: true, ..t });

                let shell = exec_path(ev, x).to_owned();
                let svc_name = svc_exe.as_deref().unwrap_or("?");
                let mut details = BTreeMap::new();
                details.insert("shell", shell.clone());
                details.insert("command_line", command_line(&x.argv));
                details.insert("service_pid", t.service.to_string());
                details.insert("service_exe", svc_name.to_owned());
                details.insert("service_activity", how.clone());
                details.insert("depth", t.depth.to_string());
                let what = if t.depth == 0 {
                    format!(
                        "The network service {svc_name} (pid {}), which {how}, executed the shell {shell}.",
                        t.service
                    )
                } else {
                    format!(
                        "Shell {shell} (pid {}) was started by a network service: {} is {svc_name} (pid {}), which {how}.",
                        ev.pid,
                        relation(t.depth),
                        t.service
                    )
                };
                out.push(RULE.alert(ev, RULE.severity, what, details));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    fn detector() -> (Scratch, ShellFromService) {
        let s = Scratch::new("sfs");
        let d = ShellFromService::new(&s.config());
        (s, d)
    }

    fn with_exe(mut ev: Event, exe: &str) -> Event {
        ev.exe = Some(exe.into());
        ev
    }

    #[test]
    fn a_shell_below_a_server_fires_once() {
        let (_s, mut d) = detector();
        let shell = exec(1.3, 301, 300, "/bin/sh", &["sh", "-c", "id"]);
        let events = [
            with_exe(listen(0.0, 100, 8080), "/usr/bin/webd"),
            with_exe(accept(1.0, 100, 8080, "10.0.0.9"), "/usr/bin/webd"),
            fork(1.1, 100, 300),
            exec(1.2, 300, 100, "/usr/bin/php-cgi", &["php-cgi"]),
            fork(1.25, 300, 301),
            shell.clone(),
            // The shell's own children: no second alert.
            fork(1.4, 301, 302),
            exec(1.5, 302, 301, "/bin/bash", &["bash"]),
        ];
        let alerts = run(&mut d, &events);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!((&*a.rule, a.severity), ("shell-from-service", Severity::High));
        assert_eq!(*a.event, shell);
        assert_eq!(a.details["service_pid"], "100");
        assert_eq!(a.details["depth"], "2");
        assert!(
            a.description.contains("grandparent") && a.description.contains("10.0.0.9:40000"),
            "{}",
            a.description
        );
    }

    #[test]
    fn depth_limit_exemptions_and_non_shells() {
        let (_s, mut d) = detector();
        let events = [
            with_exe(accept(0.0, 100, 80, "10.0.0.9"), "/usr/sbin/httpd"),
            // Four levels down: too far.
            fork(0.1, 100, 201),
            fork(0.2, 201, 202),
            fork(0.3, 202, 203),
            fork(0.4, 203, 204),
            exec(0.5, 204, 203, "/bin/sh", &["sh"]),
            // Not a shell.
            fork(0.6, 100, 210),
            exec(0.7, 210, 100, "/usr/bin/convert", &["convert"]),
            // nc without -e is a client, not a shell.
            fork(0.8, 100, 211),
            exec(0.9, 211, 100, "/bin/nc", &["nc", "host", "80"]),
            // sshd gives shells by design.
            with_exe(accept(1.0, 50, 22, "10.0.0.9"), "/usr/sbin/sshd"),
            fork(1.1, 50, 51),
            exec(1.2, 51, 50, "/bin/bash", &["-bash"]),
            // A process that never served: nothing.
            exec(1.3, 60, 59, "/bin/sh", &["sh"]),
            // A service that exited; its pid reused by a plain process.
            exit(1.4, 100),
            exec(1.5, 100, 1, "/bin/sh", &["sh"]),
        ];
        assert!(run(&mut d, &events).is_empty());
        // A great-grandchild (depth 3) does count, and the exec's ppid stands
        // in for a lost fork.
        let events = [
            with_exe(accept(2.0, 400, 80, "10.0.0.9"), "/usr/sbin/httpd"),
            fork(2.1, 400, 401),
            fork(2.2, 401, 402),
            exec(2.3, 403, 402, "/usr/bin/python3.11", &["python3", "-c", "x"]),
        ];
        let alerts = run(&mut d, &events);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].details["depth"], "3");
    }

    #[test]
    fn a_service_exec_ing_a_shell_itself_and_busybox() {
        let (_s, mut d) = detector();
        let mut sh = exec(1.0, 100, 1, "/bin/busybox", &["sh", "-i"]);
        sh.exe = Some("/bin/busybox".into());
        let alerts = run(&mut d, &[accept(0.5, 100, 4444, "10.0.0.9"), sh.clone()]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].details["depth"], "0");
        assert!(alerts[0].description.contains("executed the shell"), "{}", alerts[0].description);
        // Its children are the shell's.
        assert!(run(&mut d, &[fork(1.1, 100, 101), exec(1.2, 101, 100, "/bin/sh", &["sh"])]).is_empty());
    }

    #[test]
    fn services_listening_at_start_are_seeded_from_proc() {
        let s = Scratch::new("sfs-seed");
        s.write(
            "net/tcp",
            &format!(
                "{TCP_HEADER}{}{}",
                tcp_line(([0, 0, 0, 0], 8080), ([0, 0, 0, 0], 0), 0x0A, 5555),
                tcp_line(([127, 0, 0, 1], 8080), ([127, 0, 0, 1], 50000), 0x01, 6666)
            ),
        );
        s.link("200/fd/3", "socket:[5555]");
        s.link("200/exe", "/usr/bin/broker");
        s.link("201/fd/3", "socket:[6666]"); // connected, not listening
        s.link("1/fd/7", "socket:[5555]"); // pid 1 never counts
        let mut d = ShellFromService::new(&s.config());
        assert!(d.services.contains(&200) && !d.services.contains(&201) && !d.services.contains(&1));
        let alerts =
            run(&mut d, &[fork(1.0, 200, 210), exec(1.1, 210, 200, "/bin/dash", &["sh", "-c", "x"])]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].details["service_exe"], "/usr/bin/broker");
        assert!(alerts[0].details["service_activity"].contains("8080"));
    }

    #[test]
    fn state_stays_bounded_under_churn() {
        let (_s, mut d) = detector();
        let mut out = Vec::new();
        // A hostile service accepting and forking a million children that never exit.
        for pid in 0..1_000_000u32 {
            let svc = 2 + (pid % 10_000);
            d.observe(&accept(0.0, svc, 80, "10.0.0.9"), &mut out);
            d.observe(&fork(0.0, svc, 20_000_000 + pid), &mut out);
        }
        assert!(out.is_empty());
        assert!(d.services.len() <= SERVICE_CAP && d.services.queue_len() <= 2 * SERVICE_CAP + 16);
        assert!(d.tainted.len() <= TAINT_CAP && d.tainted.queue_len() <= 2 * TAINT_CAP + 16);
    }
}
