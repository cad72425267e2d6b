//! `cargo xtask bench --workspace`: the workspace's ingest throughput and
//! latency. A generator (`shrike-workspace-loadgen`) publishes realistic
//! agent messages (100 payload items each, ProcessCreate, ConnectionCreate,
//! Login with HitCounts) for 50 devices through a real mosquitto at QoS 1;
//! the workspace's own `/metrics` say when every event row is committed.
//!
//! Phases: SQLite with one process; PostgreSQL (a throwaway cluster,
//! Debian's postgresql-15) with two processes sharing the subscription;
//! ingest-to-queryable latency at a steady rate (the workspace's histogram
//! of event time to commit). Results: target/bench/workspace.md.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;
use shrike_tests::{
    broker::BrokerConfig,
    postgres::{PG_BIN, Postgres},
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn wait_port(port: u16, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metrics(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// p50 and p99 upper bounds from the lag histogram's cumulative buckets.
fn quantiles(text: &str) -> (String, String) {
    let name = "shrike_workspace_ingest_lag_seconds_bucket{le=\"";
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|l| {
            let (le, rest) = l.split_once("\"}")?;
            Some((le.to_owned(), rest.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    let q = |p: f64| {
        buckets.iter().find(|(_, n)| *n >= p * total).map(|(le, _)| format!("≤ {le} s")).unwrap_or("-".into())
    };
    (q(0.5), q(0.99))
}

struct Workspace {
    child: Kill,
    http: u16,
}

/// CPU seconds (user + system) a process used so far, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // utime and stime are fields 14 and 15 (indexes 11 and 12 from field 3).
    (ticks(11) + ticks(12)) / hz
}

/// CPU seconds of a process and all its descendants still running (the
/// PostgreSQL server's backends).
fn tree_cpu_seconds(root: u32) -> f64 {
    let mut total = cpu_seconds(root);
    let Ok(dir) = std::fs::read_dir("/proc") else { return total };
    let mut parents = std::collections::HashMap::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|r| r.1.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        parents.insert(pid, ppid);
    }
    for &pid in parents.keys() {
        let mut p = pid;
        while let Some(&pp) = parents.get(&p) {
            if pp == root {
                total += cpu_seconds(pid);
                break;
            }
            if pp <= 1 {
                break;
            }
            p = pp;
        }
    }
    total
}

/// The 1-minute load average.
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// CPU counters sampled around a phase: the workspace processes, mosquitto,
/// the PostgreSQL server (with its backends).
struct Cpu {
    pids: Vec<u32>,
    broker: u32,
    pg: Option<u32>,
    start: (f64, f64, f64),
    load_start: f64,
}

impl Cpu {
    fn sample(pids: &[u32], broker: u32, pg: Option<u32>) -> (f64, f64, f64) {
        (
            pids.iter().map(|p| cpu_seconds(*p)).sum(),
            cpu_seconds(broker),
            pg.map(tree_cpu_seconds).unwrap_or(0.0),
        )
    }

    fn start(pids: Vec<u32>, broker: u32, pg: Option<u32>) -> Cpu {
        let start = Cpu::sample(&pids, broker, pg);
        Cpu { pids, broker, pg, start, load_start: load1() }
    }

    /// (workspace, mosquitto, PostgreSQL) CPU seconds since start, and the
    /// load average at start and now.
    fn stop(&self) -> ((f64, f64, f64), (f64, f64)) {
        let now = Cpu::sample(&self.pids, self.broker, self.pg);
        ((now.0 - self.start.0, now.1 - self.start.1, now.2 - self.start.2), (self.load_start, load1()))
    }
}

fn start_workspace(bin: &Path, broker: u16, db: &str, log: &Path) -> anyhow::Result<Workspace> {
    let http = free_port();
    let child = Command::new(bin)
        .args(["--broker", &format!("mqtt://127.0.0.1:{broker}"), "--db", db, "--group", "bench"])
        .args(["--http", &format!("127.0.0.1:{http}"), "--no-broker-log", "--retain", "off"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting shrike-workspace")?;
    let w = Workspace { child: Kill(child), http };
    if !wait_port(http, Duration::from_secs(30)) {
        bail!(
            "shrike-workspace did not serve /metrics; log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    // Subscribed: the log says so.
    let end = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(log).unwrap_or_default().contains("subscribed (packet") {
        if Instant::now() > end {
            bail!("shrike-workspace did not subscribe");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(w)
}

struct Run {
    events: u64,
    seconds: f64,
    publish_seconds: f64,
    /// CPU seconds: workspace processes, mosquitto, PostgreSQL.
    cpu: (f64, f64, f64),
    load: (f64, f64),
}

impl Run {
    /// A table line: rate, CPU per event and the load average around it.
    fn line(&self, phase: &str) -> String {
        let us = |s: f64| s * 1e6 / self.events.max(1) as f64;
        format!(
            "| {phase} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} / {:.1} |\n",
            self.events,
            self.seconds,
            self.events as f64 / self.seconds,
            self.publish_seconds,
            us(self.cpu.0),
            us(self.cpu.1),
            if self.cpu.2 > 0.0 { format!("{:.2}", us(self.cpu.2)) } else { "-".into() },
            self.load.0,
            self.load.1
        )
    }
}

/// Publishes `messages` and waits until the workspaces stored every event.
fn throughput(
    loadgen: &Path,
    broker: (u16, u32),
    ws: &[&Workspace],
    pg: Option<u32>,
    messages: usize,
    gzip: bool,
) -> anyhow::Result<Run> {
    let before: f64 =
        ws.iter().map(|w| metric(&metrics(w.http), "shrike_workspace_events_stored_total")).sum();
    let mut cmd = Command::new(loadgen);
    cmd.args(["--broker", &format!("mqtt://127.0.0.1:{}", broker.0), "--messages", &messages.to_string()]);
    if gzip {
        cmd.arg("--gzip");
    }
    let cpu = Cpu::start(ws.iter().map(|w| w.child.0.id()).collect(), broker.1, pg);
    // The generator builds its messages first; the clock starts when it
    // starts publishing (its JSON says how long building took).
    let t0 = Instant::now();
    let out = cmd.stderr(Stdio::inherit()).output().context("running the load generator")?;
    let generated: Value = serde_json::from_slice(&out.stdout).context("load generator output")?;
    let expected = generated["events"].as_f64().unwrap_or(0.0);
    let build = generated["build_seconds"].as_f64().unwrap_or(0.0);
    let end = Instant::now() + Duration::from_secs(600);
    let stored = loop {
        let s: f64 =
            ws.iter().map(|w| metric(&metrics(w.http), "shrike_workspace_events_stored_total")).sum();
        if s - before >= expected || Instant::now() > end {
            break s - before;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = t0.elapsed().as_secs_f64() - build;
    let (cpu, load) = cpu.stop();
    if stored < expected {
        bail!("only {stored} of {expected} events stored within 10 minutes");
    }
    Ok(Run {
        events: stored as u64,
        seconds,
        publish_seconds: generated["seconds"].as_f64().unwrap_or(0.0),
        cpu,
        load,
    })
}

pub fn run(root: &Path, out: &Path, quick: bool) -> anyhow::Result<()> {
    // $SHRIKE_WORKSPACE_BINS: a folder with both binaries already built
    // (no build: e.g. while others hold the target directory's lock).
    let bins = match std::env::var_os("SHRIKE_WORKSPACE_BINS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            build.current_dir(root).args(["build", "-p", "shrike-workspace", "--bins"]);
            if !quick {
                build.arg("--release");
            }
            if !build.status()?.success() {
                bail!("building shrike-workspace failed");
            }
            root.join(if quick { "target/debug" } else { "target/release" })
        }
    };
    let (ws_bin, loadgen) = (bins.join("shrike-workspace"), bins.join("shrike-workspace-loadgen"));
    let dir = std::env::temp_dir().join(format!("shrike-ws-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(out)?;
    let messages = if quick { 200 } else { 4000 };
    let mut report = format!(
        "# Workspace ingest ({} messages of 100 payload items, 50 devices, QoS 1 through mosquitto)\n\n\
         CPU: µs of CPU time (user + system, /proc) per event stored; load: the 1-minute load average \
         at the phase's start / end (the machine is shared: wall time depends on it, CPU time much less).\n\n\
         | phase | events | seconds | events/s | publish s | workspace CPU µs/event | mosquitto µs/event | \
         PostgreSQL µs/event | load |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        messages
    );
    // The tests' broker harness, without persistence and with no cap on
    // queued or in-flight messages: a backlog waits in the broker for the
    // workspace (which acknowledges only after its commit).
    let broker = BrokerConfig::new(&dir.join("broker"))
        .persistence(false)
        .global("max_inflight_messages 1000\nmax_queued_messages 0\nmax_queued_bytes 0")
        .start();
    let port = broker.port;
    let broker_pid = broker.pid().context("mosquitto is not running")?;

    // $SHRIKE_WORKSPACE_BENCH_ONLY=sqlite or postgres: one backend's phases.
    let only = std::env::var("SHRIKE_WORKSPACE_BENCH_ONLY").unwrap_or_default();
    let mut lat = String::new();
    if only != "postgres" {
        lat = sqlite_phases(&ws_bin, &loadgen, &dir, (port, broker_pid), messages, quick, &mut report)?;
    }
    if only == "sqlite" {
        // PostgreSQL's phase not asked for.
    } else if Path::new(PG_BIN).join("initdb").exists() {
        let pg = Postgres::start_in(
            &dir.join("pg"),
            "-c shared_buffers=512MB -c synchronous_commit=off -c max_wal_size=4GB",
        )
        .map_err(anyhow::Error::msg)?;
        let url = pg.url();
        let w1 = start_workspace(&ws_bin, port, &url, &dir.join("ws-pg1.log"))?;
        let w2 = start_workspace(&ws_bin, port, &url, &dir.join("ws-pg2.log"))?;
        let r = throughput(&loadgen, (port, broker_pid), &[&w1, &w2], pg.pid(), messages * 2, false)?;
        let line = r.line("PostgreSQL, 2 processes");
        eprint!("{line}");
        report.push_str(&line);
    } else {
        report.push_str("| PostgreSQL | skipped: postgresql-15 not installed | | | | | | | |\n");
    }
    report.push_str(&lat);
    std::fs::write(out.join("workspace.md"), &report)?;
    println!("{report}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// SQLite with one process, plain and gzip, then the latency at a steady
/// rate; the latency line.
fn sqlite_phases(
    ws_bin: &Path,
    loadgen: &Path,
    dir: &Path,
    (port, broker_pid): (u16, u32),
    messages: usize,
    quick: bool,
    report: &mut String,
) -> anyhow::Result<String> {
    let db = dir.join("bench.db").display().to_string();
    let w = start_workspace(ws_bin, port, &db, &dir.join("ws-sqlite.log"))?;
    for gzip in [false, true] {
        let r = throughput(loadgen, (port, broker_pid), &[&w], None, messages, gzip)?;
        let line = r.line(&format!("SQLite, 1 process{}", if gzip { ", gzip" } else { "" }));
        eprint!("{line}");
        report.push_str(&line);
    }
    // Latency at a steady 10,000 events/s (100 messages of 100 items a
    // second), stamped when sent.
    let before = metrics(w.http);
    let secs = if quick { 3 } else { 15 };
    let generated = Command::new(loadgen)
        .args([
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--rate",
            "100",
            "--messages",
            &(100 * secs).to_string(),
        ])
        .output()?;
    if !generated.status.success() {
        bail!("load generator failed");
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = metrics(w.http);
    // The histogram is cumulative since start: subtract the earlier phases.
    let delta = diff_histogram(&before, &after);
    let (p50, p99) = quantiles(&delta);
    let lat = format!(
        "\nIngest to queryable (event time to commit), SQLite, 10,000 events/s: p50 {p50}, p99 {p99} \
         (load {load:.1})\n",
        load = load1()
    );
    eprint!("{lat}");
    Ok(lat)
}

/// `after - before` of the lag histogram's lines.
fn diff_histogram(before: &str, after: &str) -> String {
    let name = "shrike_workspace_ingest_lag_seconds_bucket";
    after
        .lines()
        .filter(|l| l.starts_with(name))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or((l, "0"));
            let b =
                before.lines().find(|x| x.starts_with(k)).and_then(|x| x.rsplit(' ').next()).unwrap_or("0");
            let d = v.parse::<f64>().unwrap_or(0.0) - b.parse::<f64>().unwrap_or(0.0);
            format!("{k} {d}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
