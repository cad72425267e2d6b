//! `crypto-miner`: a cryptocurrency miner, by its name, its pool URL, or its
//! connection to a mining pool port.

use std::collections::BTreeMap;

use super::{Bounded, PidMap, Rule, base_name, command_line, exec_path};
use crate::{
    detect::{Alert, Detector, Severity},
    events::{Body, Event, Kind},
};

pub const RULE: Rule = Rule {
    id: "crypto-miner",
    title: "Cryptocurrency miner",
    severity: Severity::High,
    tags: &["attack.impact", "attack.t1496"],
    description: "Miners are the most common payload on compromised Linux devices: they burn the CPU and the \
        power budget. Signals: a known miner program name (xmrig, minerd, cpuminer, ccminer, ethminer, nbminer, \
        t-rex, lolminer, ...) as the executable or argv[0]; a stratum pool URL (stratum+tcp://, stratum+ssl://, \
        stratum2+tcp://...) or xmrig's --donate-level in the command line (high); an outgoing TCP connection to \
        a common pool port (3333, 4444, 5555, 7777, 14433, 14444, 45700, ...) on a non-loopback address \
        (medium: these ports have other uses; one alert per process). Not seen: a renamed miner with its pool \
        in a config file and connecting to port 443 or through a proxy.",
    remediation: "Kill the process, remove its binary and whatever restarts it (cron entries, systemd units, \
        ~/.bashrc, /etc/rc.local), and find how it got in (exposed service, weak password). Block the pool \
        address.",
};

/// Miner program names (lower case): exact base names, then prefixes.
const NAMES: &[&str] = &[
    "xmrig",
    "xmrig-notls",
    "xmrig-cuda",
    "minerd",
    "cpuminer",
    "cpuminer-multi",
    "cpuminer-opt",
    "ccminer",
    "cgminer",
    "bfgminer",
    "ethminer",
    "nbminer",
    "t-rex",
    "lolminer",
    "phoenixminer",
    "teamredminer",
    "gminer",
    "nanominer",
    "srbminer",
    "srbminer-multi",
    "bzminer",
    "xmr-stak",
    "xmr-stak-cpu",
    "xmr-stak-rx",
    "kawpowminer",
    "nheqminer",
    "wildrig-multi",
    "z-enemy",
    "rigel",
    "kdevtmpfsi",
    "kinsing",
];
const PREFIXES: &[&str] = &["xmrig", "cpuminer", "xmr-stak", "ccminer"];

/// Pool ports commonly used by miners.
const POOL_PORTS: &[u16] = &[
    3333, 3334, 3357, 4444, 5555, 5588, 7777, 13333, 14433, 14444, 15555, 17777, 19999, 20535, 45560, 45700,
];

/// Processes already reported for a pool-port connection: at most this many.
const REPORTED_CAP: usize = 4096;

pub struct CryptoMiner {
    reported: PidMap<()>,
}

impl Default for CryptoMiner {
    fn default() -> Self {
        Self::new()
    }
}

impl CryptoMiner {
    pub fn new() -> CryptoMiner {
        CryptoMiner { reported: Bounded::new(REPORTED_CAP) }
    }
}

/// Case-insensitive, without allocating (this runs for every exec).
fn miner_name(name: &str) -> bool {
    let name = name.as_bytes();
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        || PREFIXES.iter().any(|p| name.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes())))
}

/// A stratum URL (`stratum+tcp://`, `stratum2+ssl://`...) in `arg`, in any
/// case, without allocating.
fn stratum(arg: &str) -> bool {
    const WORD: &[u8] = b"stratum";
    let b = arg.as_bytes();
    (0..b.len().saturating_sub(WORD.len() - 1))
        .filter(|&i| b[i..i + WORD.len()].eq_ignore_ascii_case(WORD))
        .any(|i| {
            let mut j = i + WORD.len();
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            // "+" then a transport of at most 5 letters then "://".
            b.get(j) == Some(&b'+')
                && (j + 1..(j + 7).min(b.len()))
                    .any(|k| b[j + 1..k].iter().all(u8::is_ascii_alphanumeric) && b[k..].starts_with(b"://"))
        })
}

impl Detector for CryptoMiner {
    fn id(&self) -> &'static str {
        RULE.id
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Exec, Kind::Exit, Kind::Connect]
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        match &ev.body {
            Body::Exec(x) if x.success => {
                let path = exec_path(ev, x);
                let arg0 = x.argv.first().map(|a| base_name(a)).unwrap_or("");
                let signal = if miner_name(base_name(path)) || miner_name(arg0) {
                    Some(("name", format!("runs as a known miner ({})", base_name(path))))
                } else if let Some(a) = x.argv.iter().find(|a| stratum(a)) {
                    Some(("stratum_url", format!("has a mining pool URL in its command line ({a})")))
                } else if x.argv.iter().any(|a| a.starts_with("--donate-level")) {
                    Some(("xmrig_option", "has xmrig's --donate-level option".to_owned()))
                } else {
                    None
                };
                let Some((signal, what)) = signal else { return };
                let mut details = BTreeMap::new();
                details.insert("signal", signal.to_owned());
                details.insert("executable", path.to_owned());
                details.insert("command_line", command_line(&x.argv));
                out.push(RULE.alert(ev, RULE.severity, format!("{path} (pid {}) {what}.", ev.pid), details));
            }
            Body::Connect(s) => {
                let (Some(addr), Some(port)) = (s.remote_addr, s.remote_port) else { return };
                if s.protocol != "tcp"
                    || !matches!(s.status, "success" | "in_progress")
                    || addr.is_loopback()
                    || !POOL_PORTS.contains(&port)
                    || self.reported.contains(&ev.pid)
                {
                    return;
                }
                self.reported.insert(ev.pid, ());
                let exe = ev.exe.as_deref().unwrap_or(&ev.comm);
                let to = std::net::SocketAddr::new(addr, port);
                let mut details = BTreeMap::new();
                details.insert("signal", "pool_port".to_owned());
                details.insert("remote", to.to_string());
                out.push(RULE.alert(
                    ev,
                    Severity::Medium,
                    format!("{exe} (pid {}) connected to {to}, a common mining pool port.", ev.pid),
                    details,
                ));
            }
            Body::Exit(_) => {
                self.reported.remove(&ev.pid);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    #[test]
    fn names_urls_and_pool_ports_fire() {
        let mut d = CryptoMiner::new();
        let url = exec(
            1.0,
            11,
            1,
            "/usr/bin/sysupdate",
            &["sysupdate", "-o", "STRATUM+TCP://pool.example:3333", "-u", "w"],
        );
        let events = [
            exec(0.0, 10, 1, "/tmp/.x/xmrig", &["xmrig"]),
            url.clone(),
            exec(2.0, 12, 1, "/usr/bin/kworker", &["kworker", "--url=stratum2+ssl://p.example:443"]),
            exec(3.0, 13, 1, "/usr/bin/svc", &["cpuminer-opt-avx2", "-a", "x"]),
            exec(4.0, 14, 1, "/usr/bin/svc", &["svc", "--donate-level=1"]),
            connect(5.0, 15, "198.51.100.1", 14444),
            connect(5.1, 15, "198.51.100.1", 3333), // same process: reported once
        ];
        let alerts = run(&mut d, &events);
        let signals: Vec<&str> = alerts.iter().map(|a| a.details["signal"].as_str()).collect();
        assert_eq!(signals, ["name", "stratum_url", "stratum_url", "name", "xmrig_option", "pool_port"]);
        assert_eq!((&*alerts[1].rule, alerts[1].severity), ("crypto-miner", Severity::High));
        assert_eq!(*alerts[1].event, url);
        assert_eq!(alerts[5].severity, Severity::Medium);
    }

    #[test]
    fn stratum_urls_in_any_case() {
        for yes in ["stratum+tcp://p:1", "x=STRATUM+SSL://p", "stratum2+tcp://p", "--url=Stratum1+tls://p"] {
            assert!(stratum(yes), "{yes}");
        }
        for no in
            ["stratum", "stratum+", "stratum+tcp", "stratum+toolongproto://x", "stratum tcp://x", "stratu"]
        {
            assert!(!stratum(no), "{no}");
        }
        assert!(miner_name("XMRig") && miner_name("xmrig-6.21") && !miner_name("xm"));
    }

    #[test]
    fn look_alikes_do_not() {
        let mut d = CryptoMiner::new();
        let events = [
            exec(0.0, 10, 1, "/usr/bin/grep", &["grep", "stratum", "notes.txt"]),
            exec(0.1, 11, 1, "/usr/bin/minerva", &["minerva"]),
            exec(0.2, 12, 1, "/usr/bin/curl", &["curl", "https://example.com/stratum+tcp"]),
            failed_exec(0.3, 13, 1, "/tmp/xmrig", &["xmrig"]),
            connect(1.0, 14, "127.0.0.1", 3333),
            connect(1.1, 15, "198.51.100.1", 443),
            event(1.2, 16, Body::Connect(sock(None, Some(("198.51.100.1", 3333)), "refused"))),
        ];
        assert!(run(&mut d, &events).is_empty());
    }

    #[test]
    fn state_stays_bounded_under_churn() {
        let mut d = CryptoMiner::new();
        let (mut out, mut fired) = (Vec::new(), 0);
        for pid in 0..1_000_000u32 {
            d.observe(&connect(0.0, pid, "198.51.100.1", 3333), &mut out);
            fired += out.len();
            out.clear();
        }
        assert_eq!(fired, 1_000_000, "each process once");
        assert!(d.reported.len() <= REPORTED_CAP && d.reported.queue_len() <= 2 * REPORTED_CAP + 16);
    }
}
