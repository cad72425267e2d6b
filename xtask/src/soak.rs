//! `cargo xtask soak [--quick] [--only NAME]`: the fault-soak suite. The
//! release agent (`shrike run`) against a real mosquitto (the tests' shared
//! harness, `shrike_tests::broker`) with marked workloads, under faults: the
//! broker killed and away, the agent SIGKILLed, the spool's file system
//! full, corrupt spool files, SIGHUP storms, hostile processes, a slow and a
//! refusing broker. For each scenario a row: events generated, delivered
//! (distinct), duplicated, lost and counted (by the agent's
//! DroppedEventsStatistics at the hub), lost and not counted (must be 0),
//! agent restarts, peak RSS, and what else was measured. The table goes to
//! stdout and target/soak/soak.md (RELIABILITY.md holds a full run).
//!
//! Marked workload: `/bin/true soak-<scenario>-<n>` with n counting up, exec
//! high priority, exec aggregation off, so each exec is one ProcessCreate
//! whose CommandLine names it. Delivery is at least once: a repeat is a
//! duplicate, not a second delivery.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;
use shrike_tests::broker::{Auth, Broker, BrokerConfig, Subscriber};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Short version of every scenario (CI: about 4 minutes).
    #[arg(long)]
    quick: bool,
    /// Only the scenarios whose name contains this (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// The agent binary (default: built with `cargo build --release`).
    #[arg(long)]
    agent: Option<PathBuf>,
}

/// One scenario's result.
#[derive(Default, Debug)]
struct Row {
    name: &'static str,
    generated: u64,
    delivered: u64,
    duplicated: u64,
    lost_counted: u64,
    lost_uncounted: u64,
    restarts: u64,
    peak_rss_kb: u64,
    notes: Vec<String>,
    /// A check of the scenario that failed (besides lost_uncounted).
    failures: Vec<String>,
    secs: f64,
}

struct Ctx {
    bin: PathBuf,
    work: PathBuf,
    quick: bool,
}

pub fn run(args: SoakArgs, root: &Path) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("the soak suite needs root (the agent's probes; tmpfs mounts)");
    }
    crate::install_test_packages(false)?;
    let bin = match args.agent {
        Some(b) => b,
        // The same build as the package's and the deployment tests' (cached in CI).
        None => crate::deb::build("release", None)?,
    };
    let work = std::env::temp_dir().join(format!("shrike-soak-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let ctx = Ctx { bin, work: work.clone(), quick: args.quick };
    type Scenario = fn(&Ctx, &mut Row) -> anyhow::Result<()>;
    let all: [(&'static str, Scenario); 10] = [
        ("broker-restarts", broker_restarts),
        ("broker-away", broker_away),
        ("agent-sigkill", agent_sigkill),
        ("spool-fs-full", spool_fs_full),
        ("corrupt-spool", corrupt_spool),
        ("sighup-storm", sighup_storm),
        ("hostile-processes", hostile_processes),
        ("hostile-argv", hostile_argv),
        ("slow-broker", slow_broker),
        ("refusing-broker", refusing_broker),
    ];
    let started = Instant::now();
    let mut rows = Vec::new();
    for (name, f) in all {
        if !args.only.is_empty() && !args.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        eprintln!("soak: {name}...");
        let t = Instant::now();
        let mut row = Row { name, ..Row::default() };
        if let Err(e) = f(&ctx, &mut row) {
            row.failures.push(format!("error: {e:#}"));
        }
        row.secs = t.elapsed().as_secs_f64();
        eprintln!("soak: {name}: {row:?}");
        rows.push(row);
    }
    let md = table(&rows, args.quick, started.elapsed());
    println!("{md}");
    let out = root.join("target/soak");
    fs::create_dir_all(&out)?;
    fs::write(out.join(if args.quick { "soak-quick.md" } else { "soak.md" }), &md)?;
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| r.lost_uncounted > 0 || !r.failures.is_empty())
        .map(|r| format!("{}: lost uncounted {}; {}", r.name, r.lost_uncounted, r.failures.join("; ")))
        .collect();
    if bad.is_empty() {
        let _ = fs::remove_dir_all(&work);
        Ok(())
    } else {
        bail!("soak failures (work files kept in {}):\n{}", work.display(), bad.join("\n"))
    }
}

fn table(rows: &[Row], quick: bool, took: Duration) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "Soak run ({}), {:.0} s in all.\n\n| scenario | generated | delivered | duplicated | lost, counted | lost, uncounted | agent restarts | peak RSS | s | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        if quick { "--quick" } else { "full" },
        took.as_secs_f64()
    ));
    for r in rows {
        let mut notes = r.notes.join("; ");
        if !r.failures.is_empty() {
            notes = format!("**FAILED: {}**; {notes}", r.failures.join("; "));
        }
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} MiB | {:.0} | {} |\n",
            r.name,
            r.generated,
            r.delivered,
            r.duplicated,
            r.lost_counted,
            r.lost_uncounted,
            r.restarts,
            r.peak_rss_kb as f64 / 1024.0,
            r.secs,
            notes.replace('|', "\\|")
        ));
    }
    md
}

// ---------------------------------------------------------------------------
// The agent

struct Agent {
    child: Child,
    log: PathBuf,
    /// Bytes of the log before this start (the log is appended across restarts).
    from: u64,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn log_since_start(&self) -> String {
        let s = self.log_text();
        s.get(self.from as usize..).unwrap_or("").to_owned()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak RSS so far (VmHWM), kB.
    fn peak_rss_kb(&self) -> u64 {
        status_kb(self.pid(), "VmHWM:")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// SIGINT and wait (30 s at most); whether it exited 0.
    fn stop(mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    bail!("the agent exited with {st}: {}", tail(&self.log_since_start(), 15));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the agent did not stop within 30 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, reaped.
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn status_kb(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) of `pid`, in clock ticks (10 ms).
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let Some(at) = s.rfind(')') else { return 0 };
    let f: Vec<&str> = s[at + 2..].split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Per scenario: its folder, the agent's arguments.
struct Setup {
    dir: PathBuf,
    state: PathBuf,
    log: PathBuf,
    args: Vec<String>,
}

fn setup(ctx: &Ctx, name: &str, port: u16, extra: &[&str]) -> Setup {
    let dir = ctx.work.join(name);
    let _ = fs::create_dir_all(&dir);
    let state = dir.join("state");
    let mut args: Vec<String> = [
        "run",
        "--hub",
        &format!("mqtt://127.0.0.1:{port}"),
        "--client-id",
        &format!("soak-{name}"),
        "--priority",
        "exec=high",
        "--aggregate",
        "exec=off",
        "--high-interval",
        "200ms",
        "--low-interval",
        "2s",
        "--health-interval",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--state-dir".into());
    args.push(state.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    Setup { log: dir.join("agent.log"), dir, state, args }
}

fn start_agent(ctx: &Ctx, s: &Setup) -> anyhow::Result<Agent> {
    let from = fs::metadata(&s.log).map(|m| m.len()).unwrap_or(0);
    let log = fs::OpenOptions::new().create(true).append(true).open(&s.log)?;
    let child = Command::new(&ctx.bin)
        .args(&s.args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("SHRIKE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", ctx.bin.display()))?;
    let mut a = Agent { child, log: s.log.clone(), from };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if a.log_since_start().contains("shrike ready") {
            return Ok(a);
        }
        if !a.alive() {
            bail!("the agent exited at start: {}", tail(&a.log_since_start(), 20));
        }
        if Instant::now() > deadline {
            bail!("the agent was not ready within 90 s: {}", tail(&a.log_since_start(), 20));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// The marked workload

/// Runs `/bin/true <prefix>-<n>` at `rate` per second on a thread until
/// stopped; can be paused (and says when it is idle).
struct Generator {
    prefix: String,
    next: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// When each mark was exec'd.
    made: Arc<Mutex<Vec<(u64, Instant)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Generator {
    fn start(prefix: &str, rate: u32) -> Generator {
        let g = Generator {
            prefix: prefix.to_owned(),
            next: Arc::new(AtomicU64::new(0)),
            paused: Arc::new(AtomicBool::new(false)),
            idle: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            made: Arc::new(Mutex::new(Vec::new())),
            thread: None,
        };
        let (prefix, next, paused, idle, stop, made) = (
            g.prefix.clone(),
            Arc::clone(&g.next),
            Arc::clone(&g.paused),
            Arc::clone(&g.idle),
            Arc::clone(&g.stop),
            Arc::clone(&g.made),
        );
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let thread = std::thread::spawn(move || {
            let mut due = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                if paused.load(Ordering::SeqCst) {
                    idle.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    due = Instant::now();
                    continue;
                }
                idle.store(false, Ordering::SeqCst);
                let n = next.fetch_add(1, Ordering::SeqCst);
                let ok = Command::new("/bin/true")
                    .arg(format!("{prefix}-{n}"))
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    made.lock().unwrap().push((n, Instant::now()));
                }
                due += period;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                } else if now - due > Duration::from_secs(1) {
                    due = now;
                }
            }
            idle.store(true, Ordering::SeqCst);
        });
        Generator { thread: Some(thread), ..g }
    }

    /// Stops exec'ing and waits until no exec is under way.
    fn pause(&self) {
        self.idle.store(false, Ordering::SeqCst);
        self.paused.store(true, Ordering::SeqCst);
        while !self.idle.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    fn finish(mut self) -> Vec<(u64, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.made.lock().unwrap())
    }
}

/// What the hub got: marks seen (with repeats), counted drops.
#[derive(Default)]
struct Tally {
    /// mark -> times received.
    marks: HashMap<u64, u64>,
    /// Receptions of a mark under an event Id already seen for it (a resend
    /// the hub can drop by Id) and under a new Id (a duplicate it cannot tell).
    dup_same_id: u64,
    dup_new_id: u64,
    ids: HashMap<u64, HashSet<String>>,
    dropped_counted: u64,
    /// Spool records found corrupt (MessageStatistics' SpoolCorruptRecords):
    /// their events cannot be counted, the records are.
    corrupt_records: u64,
    messages: u64,
}

fn tally(sub: &Subscriber, prefix: &str) -> Tally {
    let mut t = Tally::default();
    tally_more(sub, prefix, &mut t);
    t
}

/// Adds the messages received since `t` last looked (`t.messages` of them).
fn tally_more(sub: &Subscriber, prefix: &str, t: &mut Tally) {
    let pat = format!("/bin/true {prefix}-");
    sub.with_messages(|msgs| {
        for m in msgs.get(t.messages as usize..).unwrap_or(&[]) {
            t.messages += 1;
            // A cheap look first: most messages hold no mark and no drop.
            if !contains(&m.payload, &pat)
                && !contains(&m.payload, "DroppedEventsStatistics")
                && !contains(&m.payload, "SpoolCorruptRecords")
            {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else { continue };
            for ev in v["Events"].as_array().into_iter().flatten() {
                match ev["Name"].as_str() {
                    Some("ProcessCreate") => {
                        for p in ev["Payload"].as_array().into_iter().flatten() {
                            let Some(cl) = p["CommandLine"].as_str() else { continue };
                            if let Some(n) = cl.strip_prefix(&pat).and_then(|r| r.parse::<u64>().ok()) {
                                let seen = t.marks.entry(n).or_default();
                                *seen += 1;
                                let id = ev["Id"].as_str().unwrap_or("").to_owned();
                                let ids = t.ids.entry(n).or_default();
                                if *seen > 1 {
                                    if ids.contains(&id) {
                                        t.dup_same_id += 1;
                                    } else {
                                        t.dup_new_id += 1;
                                    }
                                }
                                ids.insert(id);
                            }
                        }
                    }
                    Some("MessageStatistics") => {
                        for p in ev["Payload"].as_array().into_iter().flatten() {
                            let c = &p["ExtraDetails"]["SpoolCorruptRecords"];
                            t.corrupt_records += c.as_u64().or_else(|| c.as_str()?.parse().ok()).unwrap_or(0);
                        }
                    }
                    Some("DroppedEventsStatistics") => {
                        for p in ev["Payload"].as_array().into_iter().flatten() {
                            let d = &p["DroppedEvents"];
                            t.dropped_counted += d.as_u64().or_else(|| d.as_str()?.parse().ok()).unwrap_or(0);
                        }
                    }
                    _ => {}
                }
            }
        }
    });
}

fn contains(hay: &[u8], needle: &str) -> bool {
    memchr_find(hay, needle.as_bytes())
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else { return true };
    let mut at = 0;
    while let Some(i) = hay[at..].iter().position(|&b| b == first) {
        let start = at + i;
        if hay[start..].starts_with(needle) {
            return true;
        }
        at = start + 1;
    }
    false
}

/// Fills the row's counts from the marks generated and what the hub got:
/// every generated mark not delivered is lost; the agent's counted drops
/// (all events, not only marks) cover at most that loss.
fn account(row: &mut Row, generated: &HashSet<u64>, t: &Tally) {
    row.generated += generated.len() as u64;
    let delivered = generated.iter().filter(|n| t.marks.contains_key(n)).count() as u64;
    row.delivered += delivered;
    row.duplicated += t.marks.values().map(|c| c.saturating_sub(1)).sum::<u64>();
    if t.dup_new_id > 0 {
        row.notes.push(format!(
            "duplicates: {} with the Id already seen, {} under a new Id (not detectable by Id)",
            t.dup_same_id, t.dup_new_id
        ));
    }
    let lost = generated.len() as u64 - delivered;
    let counted = lost.min(t.dropped_counted);
    row.lost_counted += counted;
    row.lost_uncounted += lost - counted;
    if t.dropped_counted > 0 {
        row.notes.push(format!("{} events reported dropped", t.dropped_counted));
    }
}

/// Waits until every mark of `generated` arrived, or none more arrived for
/// a third of `limit` (8 s at most: what is lost stays lost), or `limit`
/// passes; how long it waited until the last mark came.
fn wait_delivered(sub: &Subscriber, prefix: &str, generated: &HashSet<u64>, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut t = Tally::default();
    let (mut have, mut last_progress) = (usize::MAX, t0);
    while t0.elapsed() < limit {
        tally_more(sub, prefix, &mut t);
        let now = generated.iter().filter(|n| t.marks.contains_key(n)).count();
        if now == generated.len() {
            return t0.elapsed();
        }
        if now != have {
            (have, last_progress) = (now, Instant::now());
        } else if last_progress.elapsed() > (limit / 3).min(Duration::from_secs(8)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    last_progress.duration_since(t0)
}

/// The broker every scenario uses: persistence saved every second (a
/// killed broker keeps the subscriber's session), unbounded queues (the
/// subscriber never loses to the broker's limits).
fn soak_broker(dir: &Path) -> (Broker, Subscriber) {
    let mut cfg = BrokerConfig::new(dir);
    cfg.global("autosave_interval 1\nmax_queued_messages 0\nmax_queued_bytes 0\n");
    let b = cfg.start();
    let s = Subscriber::start(b.port, "shrike/#");
    (b, s)
}

fn marks(made: &[(u64, Instant)]) -> HashSet<u64> {
    made.iter().map(|(n, _)| *n).collect()
}

fn secs(ctx: &Ctx, full: u64, quick: u64) -> Duration {
    Duration::from_secs(if ctx.quick { quick } else { full })
}

// ---------------------------------------------------------------------------
// Scenarios

/// The broker killed (SIGKILL) and restarted 10 times during a steady workload.
fn broker_restarts(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    let s = setup(ctx, "broker-restarts", 0, &[]);
    let (mut broker, sub) = soak_broker(&s.dir);
    let s = setup(ctx, "broker-restarts", broker.port, &[]);
    let agent = start_agent(ctx, &s)?;
    let g = Generator::start("soak-br", 50);
    let times = if ctx.quick { 3 } else { 10 };
    for _ in 0..times {
        std::thread::sleep(secs(ctx, 5, 2));
        broker.kill();
        std::thread::sleep(secs(ctx, 3, 1));
        broker.restart();
    }
    std::thread::sleep(Duration::from_secs(2));
    let made = marks(&g.finish());
    let drained = wait_delivered(&sub, "soak-br", &made, secs(ctx, 60, 20));
    std::thread::sleep(Duration::from_secs(3));
    row.peak_rss_kb = agent.peak_rss_kb();
    agent.stop()?;
    account(row, &made, &tally(&sub, "soak-br"));
    row.notes.push(format!(
        "{times} broker kills; all delivered {:.1} s after the last restart",
        drained.as_secs_f64()
    ));
    Ok(())
}

/// The broker away for 10 minutes (quick: 20 s) with a spool too small for
/// the outage: it fills (oldest low-priority first, counted), then drains.
fn broker_away(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    let s = setup(ctx, "broker-away", 0, &[]);
    let (mut broker, sub) = soak_broker(&s.dir);
    // Messages of at most 32 KiB, so that a small spool holds many.
    let spool_size = if ctx.quick { "131072" } else { "1048576" };
    let s =
        setup(ctx, "broker-away", broker.port, &["--spool-size", spool_size, "--max-message-size", "32768"]);
    let agent = start_agent(ctx, &s)?;
    let g = Generator::start("soak-away", 20);
    std::thread::sleep(Duration::from_secs(2));
    broker.stop();
    let away = secs(ctx, 600, 8);
    let t0 = Instant::now();
    let mut peak_spool = 0u64;
    while t0.elapsed() < away {
        std::thread::sleep(Duration::from_secs(1));
        peak_spool = peak_spool.max(dir_bytes(&s.state.join("spool")));
    }
    broker.restart();
    std::thread::sleep(Duration::from_secs(2));
    let made = marks(&g.finish());
    let drained = wait_delivered(&sub, "soak-away", &made, secs(ctx, 120, 20));
    std::thread::sleep(Duration::from_secs(5));
    row.peak_rss_kb = agent.peak_rss_kb();
    let left = dir_bytes(&s.state.join("spool"));
    agent.stop()?;
    account(row, &made, &tally(&sub, "soak-away"));
    row.notes.push(format!(
        "away {} s; spool peak {} KiB of {} KiB; drained in {:.1} s, {} KiB left",
        away.as_secs(),
        peak_spool / 1024,
        spool_size.parse::<u64>().unwrap_or(0) / 1024,
        drained.as_secs_f64(),
        left / 1024
    ));
    Ok(())
}

/// A `key=N` field of a log line (0 when absent).
fn log_field(line: &str, key: &str) -> u64 {
    let pat = format!(" {key}=");
    line.find(&pat)
        .map(|at| &line[at + pat.len()..])
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(d: &Path) -> u64 {
    fs::read_dir(d)
        .map(|it| {
            it.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

/// The agent SIGKILLed 10 times during writes, restarted on the same spool.
/// Marks made while it is down are not made (the generator pauses): the
/// kernel cannot report to an agent that is not there.
fn agent_sigkill(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    let s = setup(ctx, "agent-sigkill", 0, &[]);
    let (broker, sub) = soak_broker(&s.dir);
    let s = setup(ctx, "agent-sigkill", broker.port, &[]);
    let mut agent = start_agent(ctx, &s)?;
    let g = Generator::start("soak-kill", 100);
    let times = if ctx.quick { 2 } else { 10 };
    let mut kills = Vec::new();
    for _ in 0..times {
        std::thread::sleep(secs(ctx, 4, 2));
        row.peak_rss_kb = row.peak_rss_kb.max(agent.peak_rss_kb());
        g.pause();
        kills.push(Instant::now());
        agent.kill9();
        row.restarts += 1;
        agent = start_agent(ctx, &s)?;
        g.resume();
    }
    std::thread::sleep(Duration::from_secs(2));
    let made_at = g.finish();
    let made = marks(&made_at);
    let drained = wait_delivered(&sub, "soak-kill", &made, secs(ctx, 30, 10));
    std::thread::sleep(Duration::from_secs(3));
    row.peak_rss_kb = row.peak_rss_kb.max(agent.peak_rss_kb());
    // The journal's replays at the restarts (the log spans them all).
    let replays: Vec<[u64; 3]> = agent
        .log_text()
        .lines()
        .filter(|l| l.contains("delivering again"))
        .map(|l| ["replayed", "spooled", "took_ms"].map(|k| log_field(l, k)))
        .collect();
    agent.stop()?;
    let t = tally(&sub, "soak-kill");
    account(row, &made, &t);
    row.notes.push(format!(
        "{} replays: {} events delivered again, {} left out as already spooled, read in at most {} ms",
        replays.len(),
        replays.iter().map(|r| r[0]).sum::<u64>(),
        replays.iter().map(|r| r[1]).sum::<u64>(),
        replays.iter().map(|r| r[2]).max().unwrap_or(0)
    ));
    // Of the marks lost, those made within 1 s before a kill (the journal's
    // group-commit window) and those older.
    let lost: Vec<&(u64, Instant)> = made_at.iter().filter(|(n, _)| !t.marks.contains_key(n)).collect();
    let recent = lost
        .iter()
        .filter(|(_, at)| kills.iter().any(|k| *k >= *at && k.duration_since(*at) < Duration::from_secs(1)))
        .count();
    row.notes.push(format!(
        "{times} SIGKILLs; lost {} marks, {recent} of them made < 1 s before a kill; waited {:.1} s",
        lost.len(),
        drained.as_secs_f64()
    ));
    Ok(())
}

/// The spool on a small tmpfs that fills while the broker is away; then
/// the space returns (a filler file removed) and the broker with it.
fn spool_fs_full(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    let s = setup(ctx, "spool-fs-full", 0, &[]);
    let (mut broker, sub) = soak_broker(&s.dir);
    let fsdir = s.dir.join("spoolfs");
    fs::create_dir_all(&fsdir)?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(&fsdir)
        .status()?;
    if !status.success() {
        bail!("mount -t tmpfs failed: {status}");
    }
    let _umount = Umount(fsdir.clone());
    // Most of the file system taken by a filler: little room is left.
    fs::write(fsdir.join("filler"), vec![0u8; 900 << 10])?;
    let spool = fsdir.join("spool");
    let s = setup(
        ctx,
        "spool-fs-full",
        broker.port,
        &["--spool-dir", &spool.display().to_string(), "--spool-size", "67108864"],
    );
    let agent = start_agent(ctx, &s)?;
    let g = Generator::start("soak-fs", 30);
    std::thread::sleep(Duration::from_secs(1));
    broker.stop();
    std::thread::sleep(secs(ctx, 60, 6));
    let full = statvfs_avail(&fsdir);
    fs::remove_file(fsdir.join("filler"))?;
    broker.restart();
    std::thread::sleep(secs(ctx, 10, 3));
    let made = marks(&g.finish());
    let drained = wait_delivered(&sub, "soak-fs", &made, secs(ctx, 60, 15));
    std::thread::sleep(Duration::from_secs(4));
    row.peak_rss_kb = agent.peak_rss_kb();
    let log = agent.log_since_start();
    agent.stop()?;
    account(row, &made, &tally(&sub, "soak-fs"));
    row.notes.push(format!(
        "1 MiB tmpfs, {} KiB free when full; {} ENOSPC log lines; drained in {:.1} s",
        full / 1024,
        log.lines().filter(|l| l.contains("No space left")).count(),
        drained.as_secs_f64()
    ));
    Ok(())
}

struct Umount(PathBuf);

impl Drop for Umount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn statvfs_avail(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: a zeroed statvfs filled by the call; a NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

/// Corrupt spool files present at start: truncated, random bytes,
/// zero-length, a directory in place of a file, unreadable. Real spool
/// files are made first (broker away), so the names follow the spool's.
fn corrupt_spool(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    let s = setup(ctx, "corrupt-spool", 0, &[]);
    let (mut broker, sub) = soak_broker(&s.dir);
    let s = setup(ctx, "corrupt-spool", broker.port, &[]);
    broker.stop();
    let agent = start_agent(ctx, &s)?;
    let g = Generator::start("soak-corrupt", 20);
    std::thread::sleep(secs(ctx, 5, 2));
    g.pause();
    std::thread::sleep(Duration::from_secs(1));
    agent.kill9();
    let spool = s.state.join("spool");
    let mut files: Vec<PathBuf> = fs::read_dir(&spool)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "msg"))
        .collect();
    files.sort();
    if files.len() < 6 {
        bail!("only {} spool files to corrupt", files.len());
    }
    // Five of them damaged in place, the marks they held lost (by us).
    let victims: Vec<PathBuf> = files[..5].to_vec();
    let per_victim: Vec<HashSet<u64>> =
        victims.iter().map(|v| marks_in_files(std::slice::from_ref(v), "soak-corrupt")).collect();
    let lost_marks: HashSet<u64> = per_victim.iter().flatten().copied().collect();
    let len = fs::metadata(&victims[0])?.len();
    fs::OpenOptions::new().write(true).open(&victims[0])?.set_len(len / 2)?;
    let mut rnd = vec![0u8; 4096];
    fs::File::open("/dev/urandom")?.read_exact(&mut rnd)?;
    fs::write(&victims[1], &rnd)?;
    fs::write(&victims[2], b"")?;
    fs::remove_file(&victims[3])?;
    fs::create_dir(&victims[3])?;
    fs::write(victims[3].join("inside"), b"x")?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&victims[4], fs::Permissions::from_mode(0o000))?;
    // And foreign names: random bytes under a later sequence number.
    broker.restart();
    let agent = start_agent(ctx, &s)?;
    g.resume();
    std::thread::sleep(Duration::from_secs(5));
    let made = marks(&g.finish());
    let expected: HashSet<u64> = made.difference(&lost_marks).copied().collect();
    let drained = wait_delivered(&sub, "soak-corrupt", &expected, secs(ctx, 30, 10));
    std::thread::sleep(Duration::from_secs(4));
    row.peak_rss_kb = agent.peak_rss_kb();
    let log = agent.log_since_start();
    agent.stop()?;
    row.restarts = 1;
    let t = tally(&sub, "soak-corrupt");
    // The marks in damaged files are lost by our hand; the agent cannot know
    // how many events a damaged record held, so they count as counted when
    // the hub was told of at least as many corrupt records as damaged files
    // whose marks did not arrive.
    account(row, &made, &t);
    let victims_lost =
        per_victim.iter().filter(|m| m.iter().any(|n| !t.marks.contains_key(n))).count() as u64;
    let lost_in_victims = lost_marks.iter().filter(|n| !t.marks.contains_key(n)).count() as u64;
    if t.corrupt_records >= victims_lost {
        let moved = lost_in_victims.min(row.lost_uncounted);
        row.lost_uncounted -= moved;
        row.lost_counted += moved;
    }
    row.notes.push(format!("{} corrupt records reported to the hub", t.corrupt_records));
    let corrupt_lines = log.lines().filter(|l| l.contains("corrupt")).count();
    row.notes.push(format!(
        "5 files damaged (holding {} marks); {corrupt_lines} log lines on corrupt records; rest delivered in {:.1} s",
        lost_marks.len(),
        drained.as_secs_f64()
    ));
    Ok(())
}

/// Marks named in spool files (plain JSON).
fn marks_in_files(files: &[PathBuf], prefix: &str) -> HashSet<u64> {
    let pat = format!("/bin/true {prefix}-");
    let mut out = HashSet::new();
    for f in files {
        let b = fs::read(f).unwrap_or_default();
        let text = String::from_utf8_lossy(&b);
        let mut rest = &text[..];
        while let Some(at) = rest.find(&pat) {
            rest = &rest[at + pat.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse() {
                out.insert(n);
            }
        }
    }
    out
}

/// SIGHUP 100 times in a row, every other one with an invalid file.
fn sighup_storm(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    let s = setup(ctx, "sighup-storm", 0, &[]);
    let (broker, sub) = soak_broker(&s.dir);
    let config = s.dir.join("shrike.toml");
    let valid = |n: u32| {
        format!("hub = \"mqtt://127.0.0.1:{}\"\nhealth_interval = \"{}s\"\n", broker.port, 2 + n % 2)
    };
    fs::write(&config, valid(0))?;
    let mut s = setup(ctx, "sighup-storm", broker.port, &[]);
    s.args.extend(["--config".to_string(), config.display().to_string()]);
    let agent = start_agent(ctx, &s)?;
    let fds0 = fd_count(agent.pid());
    let g = Generator::start("soak-hup", 50);
    let n = if ctx.quick { 40 } else { 100 };
    let invalid =
        ["hub = 42\n", "[[[ not toml", "spool_size = \"lots\"\n", "high_interval = \"-1s\"\n", "\u{0}\u{ff}"];
    for i in 0..n {
        if i % 2 == 0 {
            fs::write(&config, valid(i))?;
        } else {
            fs::write(&config, invalid[(i as usize / 2) % invalid.len()])?;
        }
        agent.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::write(&config, valid(0))?;
    agent.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(2));
    let made = marks(&g.finish());
    let drained = wait_delivered(&sub, "soak-hup", &made, secs(ctx, 30, 10));
    std::thread::sleep(Duration::from_secs(3));
    let fds1 = fd_count(agent.pid());
    row.peak_rss_kb = agent.peak_rss_kb();
    let log = agent.log_since_start();
    agent.stop()?;
    account(row, &made, &tally(&sub, "soak-hup"));
    let reloaded = log.lines().filter(|l| l.contains("configuration reloaded")).count();
    let rejected =
        log.lines().filter(|l| l.contains("reload") && (l.contains("ERROR") || l.contains("WARN"))).count();
    if fds1 > fds0 + 8 {
        row.failures.push(format!("open files grew from {fds0} to {fds1}"));
    }
    row.notes.push(format!(
        "{n} SIGHUPs: {reloaded} reloads logged, {rejected} rejected files logged; open files {fds0} -> {fds1}; drained in {:.1} s",
        drained.as_secs_f64()
    ));
    Ok(())
}

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// 100,000 distinct short-lived processes (quick: 10,000) as fast as two
/// threads fork them, then a process forking as fast as it can; the agent
/// stays responsive (a marked exec every second, its delivery time) and
/// its memory bounded.
fn hostile_processes(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    let s = setup(ctx, "hostile-processes", 0, &[]);
    let (broker, sub) = soak_broker(&s.dir);
    let s = setup(ctx, "hostile-processes", broker.port, &[]);
    let agent = start_agent(ctx, &s)?;
    let rss0 = status_kb(agent.pid(), "VmRSS:");
    let probe = Generator::start("soak-live", 1);
    let total: u64 = if ctx.quick { 3_000 } else { 100_000 };
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let flood: Vec<_> = (0..2)
        .map(|_| {
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= total {
                        break;
                    }
                    let _ = Command::new("/bin/true").arg(format!("soak-flood-{n}")).status();
                }
            })
        })
        .collect();
    let mut rss_max = 0;
    while flood.iter().any(|t| !t.is_finished()) {
        rss_max = rss_max.max(status_kb(agent.pid(), "VmRSS:"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let flood_secs = t0.elapsed().as_secs_f64();
    // A process that forks as fast as it can (each child exits at once).
    let fork_secs = if ctx.quick { 3 } else { 20 };
    let forks = fork_storm(Duration::from_secs(fork_secs));
    rss_max = rss_max.max(status_kb(agent.pid(), "VmRSS:"));
    std::thread::sleep(Duration::from_secs(3));
    let live_at = probe.finish();
    let live = marks(&live_at);
    let flood_marks: HashSet<u64> = (0..total).collect();
    let drained = wait_delivered(&sub, "soak-flood", &flood_marks, secs(ctx, 120, 20));
    wait_delivered(&sub, "soak-live", &live, Duration::from_secs(10));
    // Responsiveness: when each per-second probe arrived after its exec.
    let lat = probe_latencies(&sub, "soak-live", &live_at);
    std::thread::sleep(Duration::from_secs(4));
    row.peak_rss_kb = agent.peak_rss_kb();
    let rss_end = status_kb(agent.pid(), "VmRSS:");
    agent.stop()?;
    account(row, &flood_marks, &tally(&sub, "soak-flood"));
    account(row, &live, &tally(&sub, "soak-live"));
    row.notes.retain(|n| !n.contains("reported dropped"));
    let dropped = tally(&sub, "soak-flood").dropped_counted;
    row.notes.push(format!(
        "{total} execs in {flood_secs:.0} s ({:.0}/s), then {forks} forks in {fork_secs} s; {dropped} events reported dropped; RSS {} -> max {} -> {} MiB after; 1/s probe delivered in max {:.1} s; flood drained {:.0} s after",
        total as f64 / flood_secs,
        rss0 / 1024,
        rss_max / 1024,
        rss_end / 1024,
        lat,
        drained.as_secs_f64()
    ));
    Ok(())
}

/// Forks for `d`: each child `_exit`s at once, the parent reaps it. Count.
fn fork_storm(d: Duration) -> u64 {
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < d {
        // SAFETY: the child only calls _exit (async-signal-safe).
        let pid = unsafe { libc::fork() };
        match pid {
            0 => unsafe { libc::_exit(0) },
            p if p > 0 => {
                let mut st = 0;
                // SAFETY: reaps the child just forked.
                unsafe { libc::waitpid(p, &mut st, 0) };
                n += 1;
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    n
}

/// The largest delay between a probe's exec and its first arrival, s.
fn probe_latencies(sub: &Subscriber, prefix: &str, made: &[(u64, Instant)]) -> f64 {
    let pat = format!("/bin/true {prefix}-");
    let mut first: HashMap<u64, Instant> = HashMap::new();
    sub.with_messages(|msgs| {
        for m in msgs {
            let text = String::from_utf8_lossy(&m.payload);
            let mut rest = &text[..];
            while let Some(at) = rest.find(&pat) {
                rest = &rest[at + pat.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(n) = digits.parse::<u64>() {
                    first.entry(n).or_insert(m.at);
                }
            }
        }
    });
    // A probe that never arrived counts as infinitely late.
    made.iter()
        .map(|(n, at)| {
            first.get(n).map_or(f64::INFINITY, |got| got.saturating_duration_since(*at).as_secs_f64())
        })
        .fold(0.0, f64::max)
}

/// argv at every bound, invalid UTF-8 and control characters, in arguments
/// and in the executable's name: each exec is reported (its text escaped),
/// none crashes the agent.
fn hostile_argv(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let s = setup(ctx, "hostile-argv", 0, &[]);
    let (broker, sub) = soak_broker(&s.dir);
    let s = setup(ctx, "hostile-argv", broker.port, &[]);
    let agent = start_agent(ctx, &s)?;
    let cases: Vec<(String, Vec<Vec<u8>>)> = vec![
        ("no args".into(), vec![]),
        ("empty arg".into(), vec![b"".to_vec()]),
        ("invalid utf-8".into(), vec![b"\xff\xfe\xc3\x28".to_vec()]),
        ("control chars".into(), vec![b"\x01\x02\x1b[2J\r\n\t\x7f".to_vec()]),
        ("backslashes".into(), vec![b"\\xff \\\\ \\n".to_vec()]),
        ("64 args".into(), (0..64).map(|i| format!("a{i}").into_bytes()).collect()),
        ("65 args".into(), (0..65).map(|i| format!("a{i}").into_bytes()).collect()),
        ("1000 args".into(), (0..1000).map(|i| format!("a{i}").into_bytes()).collect()),
        ("arg of 255".into(), vec![vec![b'x'; 255]]),
        ("arg of 256".into(), vec![vec![b'x'; 256]]),
        ("arg of 4095".into(), vec![vec![b'x'; 4095]]),
        ("arg of 128 KiB - 1".into(), vec![vec![b'y'; 131_071]]),
        ("near ARG_MAX".into(), (0..15).map(|_| vec![b'z'; 131_071]).collect()),
    ];
    // Each case runs a copy of /bin/true of its own, `argv-<case>`, and one
    // whose name adds invalid UTF-8 and control bytes: the Executable tells
    // which exec an event is.
    let mut made: HashSet<(usize, bool)> = HashSet::new();
    let mut failed_exec = Vec::new();
    for (i, (name, args)) in cases.iter().enumerate() {
        for odd in [false, true] {
            let mut file = format!("argv-{i}").into_bytes();
            if odd {
                file.extend_from_slice(b"-\xff\x01\x1b[31m\n");
            }
            let exe = s.dir.join(std::ffi::OsStr::from_bytes(&file));
            fs::copy("/bin/true", &exe)?;
            let st = Command::new(&exe).args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a))).status();
            match st {
                Ok(st) if st.success() => {
                    made.insert((i, odd));
                }
                other => failed_exec.push(format!("{name}: {other:?}")),
            }
        }
    }
    let marker = Generator::start("soak-argv-after", 5);
    std::thread::sleep(Duration::from_secs(3));
    let after = marks(&marker.finish());
    let drained = wait_delivered(&sub, "soak-argv-after", &after, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let alive = agent_alive(&agent);
    row.peak_rss_kb = agent.peak_rss_kb();
    agent.stop()?;
    let mut seen: HashMap<(usize, bool), u64> = HashMap::new();
    let mut bad_json = 0u64;
    sub.with_messages(|msgs| {
        for m in msgs {
            let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else {
                bad_json += 1;
                continue;
            };
            for ev in v["Events"].as_array().into_iter().flatten() {
                if ev["Name"] != "ProcessCreate" {
                    continue;
                }
                for p in ev["Payload"].as_array().into_iter().flatten() {
                    let exe = p["Executable"].as_str().unwrap_or("");
                    let Some(at) = exe.rfind("/argv-") else { continue };
                    let rest = &exe[at + 6..];
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let Ok(i) = digits.parse::<usize>() else { continue };
                    let odd = rest[digits.len()..].starts_with('-');
                    *seen.entry((i, odd)).or_default() += 1;
                }
            }
        }
    });
    let generated = made.len() as u64;
    let delivered = made.iter().filter(|k| seen.contains_key(k)).count() as u64;
    row.generated = generated;
    row.delivered = delivered;
    row.duplicated = seen.values().map(|c| c.saturating_sub(1)).sum();
    row.lost_uncounted = generated - delivered;
    let missing: Vec<String> = made
        .iter()
        .filter(|k| !seen.contains_key(k))
        .map(|(i, odd)| format!("{}{}", cases[*i].0, if *odd { " (odd name)" } else { "" }))
        .collect();
    if !missing.is_empty() {
        row.notes.push(format!("not reported: {}", missing.join(", ")));
    }
    account(row, &after, &tally(&sub, "soak-argv-after"));
    if bad_json > 0 {
        row.failures.push(format!("{bad_json} messages not JSON"));
    }
    if !alive {
        row.failures.push("the agent died".into());
    }
    row.notes.push(format!(
        "{} argv shapes x 2 executables (one named with 0xff and control bytes); exec failures: {}; markers after delivered in {:.1} s",
        cases.len(),
        if failed_exec.is_empty() { "none".to_string() } else { failed_exec.join(", ") },
        drained.as_secs_f64()
    ));
    Ok(())
}

fn agent_alive(a: &Agent) -> bool {
    Path::new(&format!("/proc/{}", a.pid())).exists()
}

/// A broker behind a proxy that holds every byte from the broker (the
/// acknowledgements) for 3 s, then a broker whose ACL denies the agent's
/// topic: nothing spins (the agent's CPU time), the backlog stays bounded.
fn slow_broker(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    let s = setup(ctx, "slow-broker", 0, &[]);
    let (broker, sub) = soak_broker(&s.dir);
    let delay = Arc::new(Mutex::new(Duration::from_secs(3)));
    let proxy_port = delay_proxy(broker.port, Arc::clone(&delay))?;
    let s = setup(ctx, "slow-broker", proxy_port, &["--spool-size", "1048576"]);
    let agent = start_agent(ctx, &s)?;
    let g = Generator::start("soak-slow", 50);
    let cpu0 = cpu_ticks(agent.pid());
    let span = secs(ctx, 120, 6);
    let t0 = Instant::now();
    let mut peak_spool = 0;
    while t0.elapsed() < span {
        std::thread::sleep(Duration::from_secs(1));
        peak_spool = peak_spool.max(dir_bytes(&s.state.join("spool")));
    }
    let cpu = cpu_ticks(agent.pid()) - cpu0;
    // The acknowledgements come at once again: the backlog drains.
    *delay.lock().unwrap() = Duration::ZERO;
    let made = marks(&g.finish());
    let drained = wait_delivered(&sub, "soak-slow", &made, secs(ctx, 60, 15));
    std::thread::sleep(Duration::from_secs(3));
    row.peak_rss_kb = agent.peak_rss_kb();
    agent.stop()?;
    account(row, &made, &tally(&sub, "soak-slow"));
    let cpu_pct = cpu as f64 / span.as_secs_f64();
    if cpu_pct > 50.0 {
        row.failures.push(format!("agent CPU {cpu_pct:.0}% while acks were slow (spinning?)"));
    }
    row.notes.push(format!(
        "acks held 3 s for {} s: agent CPU {cpu_pct:.1}% of a core, spool peak {} KiB (cap 1024); drained in {:.1} s once prompt",
        span.as_secs(),
        peak_spool / 1024,
        drained.as_secs_f64()
    ));
    Ok(())
}

/// A TCP proxy on a free loopback port to `port`; bytes from the broker are
/// delivered `delay` after they came. Runs until the process ends.
fn delay_proxy(port: u16, delay: Arc<Mutex<Duration>>) -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let p = l.local_addr()?.port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(client) = c else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else { continue };
            let (c2, s2) = (client.try_clone(), server.try_clone());
            let (Ok(mut c2), Ok(mut s2)) = (c2, s2) else { continue };
            let mut client_r = client;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_r, &mut s2);
                let _ = s2.shutdown(std::net::Shutdown::Both);
            });
            let delay = Arc::clone(&delay);
            let mut server_r = server;
            std::thread::spawn(move || {
                let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
                let writer = std::thread::spawn(move || {
                    for (at, buf) in rx {
                        let now = Instant::now();
                        if at > now {
                            std::thread::sleep(at - now);
                        }
                        if c2.write_all(&buf).is_err() {
                            break;
                        }
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                let mut buf = [0u8; 16384];
                loop {
                    match server_r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let d = *delay.lock().unwrap();
                            if tx.send((Instant::now() + d, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                    }
                }
                drop(tx);
                let _ = writer.join();
            });
        }
    });
    Ok(p)
}

/// A broker that takes the agent's connection but whose ACL denies its
/// topic. MQTT 3.1.1 has no refusal for a QoS 1 publish: mosquitto
/// acknowledges and discards it (counted here from its log), so the agent
/// cannot know; then a broker refusing the connection itself (bad
/// password): the agent keeps everything in its bounded spool, counted
/// when it drops, without spinning; then the right password: it drains.
fn refusing_broker(ctx: &Ctx, row: &mut Row) -> anyhow::Result<()> {
    let dir = ctx.work.join("refusing-broker");
    fs::create_dir_all(&dir)?;
    let mut cfg = BrokerConfig::new(&dir);
    cfg.global("autosave_interval 1\nmax_queued_messages 0\nlog_type debug\n")
        .user("shrike", "right")
        .acl("user shrike\ntopic read shrike/#\n");
    let acl_port = cfg.listener(Auth::PasswordAcl);
    let mut broker = cfg.start();
    let sub = Subscriber::start(broker.port, "shrike/#");
    let pw = dir.join("password");
    fs::write(&pw, "right")?;
    let mut s = setup(ctx, "refusing-broker", acl_port, &["--spool-size", "524288"]);
    s.args.extend(["--username".into(), "shrike".into(), "--password-file".into(), pw.display().to_string()]);
    let agent = start_agent(ctx, &s)?;
    let g = Generator::start("soak-refused", 30);
    let cpu0 = cpu_ticks(agent.pid());
    let span = secs(ctx, 60, 5);
    std::thread::sleep(span);
    let denied_marks: HashSet<u64> = marks(&g.made.lock().unwrap());
    let cpu_acl = cpu_ticks(agent.pid()) - cpu0;
    // The broker forgets the agent's password: it refuses the connection
    // (CONNACK "not authorised"); the ACL now allows the topic.
    let pwfile = broker.dir().join("passwords");
    broker.stop();
    shrike_tests::broker::mosquitto_passwd(&pwfile, "shrike", "another");
    broker.set_acl("user shrike\ntopic readwrite shrike/#\n");
    broker.restart();
    let cpu1 = cpu_ticks(agent.pid());
    std::thread::sleep(span);
    let cpu_refused = cpu_ticks(agent.pid()) - cpu1;
    let spool_refused = dir_bytes(&s.state.join("spool"));
    // The agent's password is good again (mosquitto re-reads its files on
    // SIGHUP): the spool drains.
    shrike_tests::broker::mosquitto_passwd(&pwfile, "shrike", "right");
    broker.set_acl("user shrike\ntopic readwrite shrike/#\n");
    std::thread::sleep(Duration::from_secs(2));
    let made = marks(&g.finish());
    let want: HashSet<u64> = made.difference(&denied_marks).copied().collect();
    let drained = wait_delivered(&sub, "soak-refused", &want, secs(ctx, 90, 20));
    std::thread::sleep(Duration::from_secs(3));
    row.peak_rss_kb = agent.peak_rss_kb();
    let log = agent.log_since_start();
    agent.stop()?;
    let t = tally(&sub, "soak-refused");
    let denied_logged = broker.log().lines().filter(|l| l.contains("Denied PUBLISH")).count();
    // What the broker acknowledged and discarded is the broker's loss, not
    // the agent's: left out of the agent's figures, reported apart.
    let agent_made: HashSet<u64> = want;
    account(row, &agent_made, &t);
    let lost_by_acl = denied_marks.iter().filter(|n| !t.marks.contains_key(n)).count();
    let reconnect_lines = log.lines().filter(|l| l.contains("connection") || l.contains("refused")).count();
    let (pa, pr) = (cpu_acl as f64 / span.as_secs_f64(), cpu_refused as f64 / span.as_secs_f64());
    if pa > 50.0 || pr > 50.0 {
        row.failures.push(format!("agent CPU {pa:.0}% / {pr:.0}% while refused (spinning?)"));
    }
    row.notes.push(format!(
        "ACL deny {} s: {} marks acknowledged and discarded by the broker ({denied_logged} `Denied PUBLISH` in its log; MQTT 3.1.1 cannot refuse a publish), agent CPU {pa:.1}%; bad password {} s: CPU {pr:.1}%, spool {} KiB (cap 512), {reconnect_lines} connection log lines; drained in {:.1} s",
        span.as_secs(),
        lost_by_acl,
        span.as_secs(),
        spool_refused / 1024,
        drained.as_secs_f64()
    ));
    Ok(())
}
