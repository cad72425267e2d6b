//! `new-listener`: a TCP port that starts listening after Shrike started and
//! was not listening then: a new service, or a backdoor.

use std::{collections::BTreeMap, path::PathBuf};

use super::{Rule, procfs};
use crate::{
    detect::{Alert, DetectConfig, Detector, Severity},
    events::{Body, Event, Kind},
};

pub const RULE: Rule = Rule {
    id: "new-listener",
    title: "New listening port",
    severity: Severity::Medium,
    tags: &["attack.persistence", "attack.command_and_control", "attack.t1571", "attack.t1205"],
    description: "The ports listening when Shrike started (TCP, IPv4 and IPv6, from /proc/net/tcp{,6}) are the \
        baseline; a listen() on any other port raises one alert per port (a port that closes and listens again \
        does not alert twice). The port is the one bound by bind(), or, for a socket bound elsewhere (autobind, \
        inherited), read from /proc/PID/fd. Not seen: UDP services (no listen call); a listener in another network \
        namespace (a container) is compared with the agent's namespace's baseline.",
    remediation: "Identify the process (pid, exe, its parent) and whether the service is expected on this \
        device. If not, kill it, find what started it (a cron entry, a systemd unit, a dropped binary) and block \
        the port in the firewall.",
};

/// One bit per port (8 KiB, whatever happens): listening at start-up, or
/// already reported.
pub struct NewListener {
    proc_root: PathBuf,
    known: Box<[u64; 1024]>,
}

impl NewListener {
    /// Reads the listening ports now (under the proc root): the baseline.
    pub fn new(cfg: &DetectConfig) -> NewListener {
        let mut d = NewListener { proc_root: cfg.proc_root.clone(), known: Box::new([0; 1024]) };
        for port in procfs::listening_ports(&cfg.proc_root) {
            d.mark(port);
        }
        d
    }

    fn mark(&mut self, port: u16) -> bool {
        let (word, bit) = (usize::from(port) / 64, 1u64 << (port % 64));
        let was = self.known[word] & bit != 0;
        self.known[word] |= bit;
        was
    }
}

impl Detector for NewListener {
    fn id(&self) -> &'static str {
        RULE.id
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Listen]
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let Body::Listen(s) = &ev.body else { return };
        let (port, addr) = match s.local_port {
            Some(p) => (p, s.local_addr),
            // Not bound in this process (or not an IP socket at all): /proc.
            None => match procfs::fd_tcp_socket(&self.proc_root, ev.pid, s.fd) {
                Some(t) => (t.local.1, Some(t.local.0)),
                None => return,
            },
        };
        if port == 0 || self.mark(port) {
            return;
        }
        let exe = ev.exe.as_deref().unwrap_or(&ev.comm);
        let on =
            addr.map(|a| std::net::SocketAddr::new(a, port).to_string()).unwrap_or_else(|| port.to_string());
        let mut details = BTreeMap::new();
        details.insert("port", port.to_string());
        if let Some(a) = addr {
            details.insert("address", a.to_string());
        }
        details.insert("protocol", "tcp".to_owned());
        out.push(RULE.alert(
            ev,
            RULE.severity,
            format!("{exe} (pid {}) listens on TCP {on}, a port not listening when Shrike started.", ev.pid),
            details,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    #[test]
    fn ports_beyond_the_baseline_fire_once() {
        let s = Scratch::new("nl");
        s.write(
            "net/tcp",
            &format!("{TCP_HEADER}{}", tcp_line(([0, 0, 0, 0], 22), ([0, 0, 0, 0], 0), 0x0A, 1)),
        );
        s.write(
            "net/tcp6",
            "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0\n",
        );
        // 8080 was only connected, not listening.
        s.write("net/udp", "");
        let mut d = NewListener::new(&s.config());
        let l = listen(1.0, 50, 8080);
        let events = [listen(0.5, 40, 22), listen(0.6, 41, 443), l.clone(), listen(2.0, 51, 8080)];
        let alerts = run(&mut d, &events);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!((&*a.rule, a.severity), ("new-listener", Severity::Medium));
        assert_eq!(*a.event, l);
        assert_eq!((a.details["port"].as_str(), a.details["address"].as_str()), ("8080", "0.0.0.0"));
    }

    #[test]
    fn an_unbound_socket_s_port_comes_from_proc() {
        let s = Scratch::new("nl-proc");
        s.write("net/tcp", TCP_HEADER);
        let mut d = NewListener::new(&s.config());
        s.write(
            "60/net/tcp",
            &format!("{TCP_HEADER}{}", tcp_line(([127, 0, 0, 1], 41234), ([0, 0, 0, 0], 0), 0x0A, 77)),
        );
        s.link("60/fd/3", "socket:[77]");
        s.link("61/fd/3", "socket:[78]"); // a Unix socket: not in the TCP tables
        let mut unbound = listen(1.0, 60, 0);
        let mut unix = listen(1.0, 61, 0);
        for ev in [&mut unbound, &mut unix] {
            if let Body::Listen(s) = &mut ev.body {
                s.local_port = None;
                s.local_addr = None;
            }
        }
        let alerts = run(&mut d, &[unbound, unix]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].details["port"], "41234");
    }

    #[test]
    fn state_is_a_fixed_bitmap() {
        let s = Scratch::new("nl-churn");
        let mut d = NewListener::new(&s.config());
        let mut out = Vec::new();
        for pid in 0..1_000_000u32 {
            d.observe(&listen(0.0, pid, (pid % 65536) as u16), &mut out);
        }
        assert_eq!(out.len(), 65535, "each port once (0 is never a port)");
        assert_eq!(std::mem::size_of_val(&*d.known), 8192);
    }
}
