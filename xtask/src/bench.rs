//! `cargo xtask bench [--quick] [--out DIR]`: Shrike side by side with no
//! agent, auditd, bpftrace and libbpf-tools' execsnoop on the same workloads.
//!
//! Configurations run in alternation (A B C... A B C...) for several rounds;
//! each round starts the configuration, runs every workload, stops it and
//! counts what it reported. Workloads are generated here, bounded in count and
//! time, loopback only:
//! - `exec_tiny` / `exec_true`: fork+exec of a tiny static binary (built here
//!   with rustc) and of /bin/true, with a marker argument, on two threads;
//! - `connect`: loopback TCP connect/accept/close (RST on close, so no
//!   TIME_WAIT piles up); `connect_closed`: connects to a closed port;
//! - `login`: PAM logins with pamtester (half succeed, half fail) against a
//!   PAM service and user the bench creates and removes;
//! - `mixed`: stress-ng `--exec` + `--sock` with bounded ops.
//!
//! Then, with Shrike alone: latency from exec to broker delivery of
//! high-priority events, start and stop times (startup.rs), and the loss
//! search: per kind and transport, the rate at which the kernel first drops
//! a record (loss.rs). Results: a table on stdout, `bench.json`,
//! `results.md` and one PNG per question (plots.rs: `throughput.png`,
//! `kernel_ns.png`, `agent_cpu.png`, `rss.png`, `loss.png`) in `--out`.
//!
//! `--sigma DIR`: only the Sigma detection cost (see sigma_bench.rs).
//! `--ioc`: only the IoC lists' load time, RSS and lookup cost at a million
//! entries (see ioc_bench.rs).
//!
//! Needs root; installs missing Debian packages (mosquitto, auditd, bpftrace,
//! libbpf-tools, pamtester, stress-ng, fonts-dejavu-core) with apt-get. A peer that cannot run is
//! reported with the reason.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    io::Write,
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

mod loss;
mod plots;
mod startup;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Few rounds and small counts (under 2 minutes; the harness check CI runs).
    #[arg(long)]
    quick: bool,
    /// Where bench.json, the plots and results.md go (default: target/bench,
    /// target/bench-quick with --quick, so a CI check keeps the full results).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rounds per configuration (default: 5, 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// The agent binary to measure (default: `cargo build --release`, or the
    /// debug build with --quick).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// A second agent binary (the "before" of a change), run as the
    /// configuration `baseline` alternated with `shrike` in every round,
    /// with the same settings; the start/stop and loss phases run for it
    /// too. Before and after side by side in one run.
    #[arg(long, value_name = "PATH")]
    baseline_agent: Option<PathBuf>,
    /// Configurations to run, comma-separated (default: all):
    /// none, shrike, auditd, bpftrace, execsnoop (and baseline with
    /// --baseline-agent).
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
    /// Skip the phases after the rounds (latency, start/stop, loss search,
    /// spool flood).
    #[arg(long)]
    no_extra: bool,
    /// Only the Sigma phase: detection CPU per event with the rules of these
    /// folders loaded (repeatable; skipped with a note when absent). No root
    /// needed.
    #[arg(long, value_name = "DIR")]
    sigma: Vec<PathBuf>,
    /// The recording the Sigma phase replays (default: a built-in mix).
    #[arg(long, value_name = "FILE.jsonl")]
    sigma_events: Option<PathBuf>,
    /// Only the IoC phase: a generated list loaded by the agent (load time,
    /// RSS, lookup cost). No root needed.
    #[arg(long)]
    ioc: bool,
    /// Only the spool-flood phase: `shrike run` with aggregation off under a
    /// loopback connect flood; kernel records lost and spool syncs (the
    /// spool's fsyncs must not stall the reading of the ring buffer).
    #[arg(long)]
    spool_flood: bool,
    /// Only the workspace phase: shrike-workspace's ingest into SQLite (one
    /// process) and PostgreSQL (two), and its ingest-to-queryable latency,
    /// from a generator through mosquitto (target/bench/workspace.md).
    #[arg(long)]
    workspace: bool,
    /// Only draw the plots again from `--out`'s bench.json (no root needed).
    #[arg(long)]
    replot: bool,
    /// Entries in the IoC phase's list.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    ioc_entries: usize,
    /// Workloads to run, comma-separated (default: all): exec_tiny,
    /// exec_true, connect, connect_closed, login, mixed, files, files_tmpfs.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Internal: run as one of the loss search's generator processes,
    /// KIND:RATE:SECS:THREADS:BIN (kind exec or connect), and print what it
    /// did (one field: the whole Task stays small).
    #[arg(long, hide = true)]
    generate: Option<String>,
}

const CONFIGS: &[&str] = &["none", "shrike", "auditd", "bpftrace", "execsnoop"];
const PAM_SERVICE: &str = "shrike-bench";
const BENCH_USER: &str = "shrikebench";
const BENCH_PASSWORD: &str = "Bench-pw-42";
const TOPIC_ID: &str = "shrike-bench";

/// Debian packages the bench drives: (binary, package).
const PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/mosquitto", "mosquitto"),
    ("/usr/bin/mosquitto_sub", "mosquitto-clients"),
    ("/usr/sbin/auditd", "auditd"),
    ("/usr/bin/bpftrace", "bpftrace"),
    ("/usr/sbin/execsnoop", "libbpf-tools"),
    ("/usr/sbin/bpftool", "bpftool"),
    ("/usr/bin/pamtester", "pamtester"),
    ("/usr/bin/stress-ng", "stress-ng"),
    // The plots' text (plots.rs).
    (plots::FONT, "fonts-dejavu-core"),
];

// ---------------------------------------------------------------------------
// Small helpers

fn now_mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn now_real_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn output(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let o = Command::new(prog).args(args).output().with_context(|| format!("running {prog}"))?;
    if !o.status.success() {
        bail!("{prog} {args:?}: {} {}", o.status, String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn quiet(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// CPU time of `pid` in ns: the sum of its threads' run time from
/// /proc/PID/task/*/schedstat (nanoseconds), or utime+stime (10 ms ticks)
/// where schedstat is missing. The larger of the two: a thread that has
/// exited is gone from task/ but still counted in utime+stime.
fn cpu_ns(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let from_ticks = ticks * 1_000_000_000 / hz;
    let sched: u64 = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    // Ticks are sampled: trust them only where they exceed schedstat by more
    // than their own granularity (exited threads).
    Some(if from_ticks > sched + 2 * 1_000_000_000 / hz { from_ticks } else { sched.max(1) })
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len() + 1..].split_whitespace().next()?.parse().ok()
}

fn wait_file(path: &Path, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if fs::read_to_string(path).is_ok_and(|s| pred(&s)) {
            return true;
        }
        // Fine enough for the start times the bench reports.
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; pid is our child's.
    unsafe { libc::kill(pid as i32, sig) };
}

/// SIGINT (or `sig`) then SIGKILL after `limit`; waits for the exit.
pub(crate) fn stop_child(child: &mut Child, sig: i32, limit: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    signal(child.id(), sig);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_logged(cmd: &mut Command, out: &Path, err: &Path) -> anyhow::Result<Child> {
    cmd.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(fs::File::create(out)?)
        .stderr(fs::File::create(err)?)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))
}

// ---------------------------------------------------------------------------
// BPF program statistics (kernel.bpf_stats_enabled + bpftool)

#[derive(Clone, Debug)]
struct Prog {
    name: String,
    run_ns: u64,
    runs: u64,
}

fn progs() -> BTreeMap<u64, Prog> {
    let mut out = BTreeMap::new();
    let Ok(text) = output("bpftool", &["prog", "show", "--json"]) else { return out };
    let Ok(Value::Array(v)) = serde_json::from_str::<Value>(&text) else { return out };
    for p in v {
        let Some(id) = p["id"].as_u64() else { continue };
        out.insert(
            id,
            Prog {
                name: p["name"].as_str().unwrap_or("?").to_owned(),
                run_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                runs: p["run_cnt"].as_u64().unwrap_or(0),
            },
        );
    }
    out
}

/// Per-program cost between two snapshots, for the programs in `ids`.
fn prog_costs(
    ids: &HashSet<u64>,
    before: &BTreeMap<u64, Prog>,
    after: &BTreeMap<u64, Prog>,
    events: u64,
) -> Value {
    let mut list = Vec::new();
    let mut total = 0u64;
    for id in ids {
        let (Some(b), Some(a)) = (before.get(id), after.get(id)) else { continue };
        let runs = a.runs.saturating_sub(b.runs);
        let ns = a.run_ns.saturating_sub(b.run_ns);
        total += ns;
        if runs > 0 {
            list.push(json!({"id": id, "name": a.name, "runs": runs, "ns_per_run": ns as f64 / runs as f64,
                "ns_per_event": ns as f64 / events.max(1) as f64}));
        }
    }
    list.sort_by(|a, b| {
        b["ns_per_event"].as_f64().unwrap_or(0.0).total_cmp(&a["ns_per_event"].as_f64().unwrap_or(0.0))
    });
    json!({"total_ns_per_event": total as f64 / events.max(1) as f64, "programs": list})
}

// ---------------------------------------------------------------------------
// Workloads

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wl {
    ExecTiny,
    ExecTrue,
    Connect,
    ConnectClosed,
    Login,
    Mixed,
    /// 100,000 small files created, written and closed under a fresh
    /// folder in /tmp (not watched: file integrity's kernel filter drops
    /// them), one thread, then `rm -rf` of the folder (unlinks relative to
    /// directory fds: the kernel's directory-fd cache drops them).
    Files,
    /// The same in a tmpfs mounted under /tmp (gateways often have a tmpfs
    /// /tmp): no journal, so the rate is CPU-bound and steadier, and the
    /// agent's share of it the largest.
    FilesTmpfs,
}

impl Wl {
    const ALL: [Wl; 8] = [
        Wl::ExecTiny,
        Wl::ExecTrue,
        Wl::Connect,
        Wl::ConnectClosed,
        Wl::Login,
        Wl::Mixed,
        Wl::Files,
        Wl::FilesTmpfs,
    ];
    fn name(self) -> &'static str {
        match self {
            Wl::ExecTiny => "exec_tiny",
            Wl::ExecTrue => "exec_true",
            Wl::Connect => "connect",
            Wl::ConnectClosed => "connect_closed",
            Wl::Login => "login",
            Wl::Mixed => "mixed",
            Wl::Files => "files",
            Wl::FilesTmpfs => "files_tmpfs",
        }
    }
}

/// What one workload run did.
#[derive(Clone, Debug)]
struct Done {
    wl: Wl,
    /// Events the generator made (execs, connects, logins); 0 when unknown.
    generated: u64,
    secs: f64,
    /// Operations (events for the generated workloads, stress-ng ops for `mixed`).
    ops: u64,
    /// Operations per second.
    rate: f64,
    /// Exec marker argument, or the connect port as text.
    marker: String,
    /// Time window, monotonic and wall clock (ns).
    mono: (u64, u64),
    real: (u64, u64),
    /// Files workloads: seconds of the `rm -rf` that ends them (in the time
    /// window, not in `secs`).
    rm_secs: Option<f64>,
    /// Files workloads: CPU seconds of the thread that made the files.
    cpu_secs: Option<f64>,
}

struct Counts {
    exec: u64,
    connect: u64,
    login: u64,
    mixed_ops: u64,
    files: u64,
}

impl Counts {
    fn new(quick: bool) -> Counts {
        if quick {
            Counts { exec: 400, connect: 3000, login: 10, mixed_ops: 200, files: 10_000 }
        } else {
            Counts { exec: 4000, connect: 30000, login: 60, mixed_ops: 1000, files: 100_000 }
        }
    }
}

/// Creates, writes (16 bytes) and closes `n` files in `dir` (absolute
/// paths), then removes the folder with `rm -rf` (fts: opens each folder and
/// unlinks relative to its fd). Returns (seconds creating, seconds of the
/// rm -rf, CPU seconds of the creating thread).
fn files_storm(dir: &Path, n: u64) -> (f64, f64, f64) {
    let _ = Command::new("rm").arg("-rf").arg(dir).status();
    if fs::create_dir_all(dir).is_err() {
        return (0.0, 0.0, 0.0);
    }
    // Each run starts with the earlier runs' creates and deletes written
    // back: file creation speed depends on the journal's state, and the
    // configurations run in a fixed order.
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let c0 = thread_cpu_secs();
    for i in 0..n {
        if let Ok(mut f) = fs::File::create(dir.join(format!("f{i:06}"))) {
            let _ = f.write_all(b"shrike bench 16\n");
        }
    }
    let create = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs() - c0;
    let t1 = Instant::now();
    let ok = Command::new("rm").arg("-rf").arg(dir).status().is_ok_and(|s| s.success());
    let rm = t1.elapsed().as_secs_f64();
    if !ok {
        eprintln!("bench: rm -rf {} failed", dir.display());
    }
    (create, rm, cpu)
}

/// CPU time of the calling thread, user and system (the kernel programs a
/// syscall runs are in its system time): what a workload costs whatever
/// else the machine runs.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The tmpfs of the `files_tmpfs` workload, mounted under /tmp for the
/// bench and unmounted after.
const FILES_TMPFS: &str = "/tmp/shrike-bench-tmpfs";

fn mount_files_tmpfs() -> Result<(), String> {
    fs::create_dir_all(FILES_TMPFS).map_err(|e| format!("{FILES_TMPFS}: {e}"))?;
    // 100,000 files of one page each.
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1g,nr_inodes=400k", "shrike-bench", FILES_TMPFS])
        .status()
        .map_err(|e| format!("mount: {e}"))?;
    if st.success() { Ok(()) } else { Err(format!("mount -t tmpfs {FILES_TMPFS}: {st}")) }
}

fn unmount_files_tmpfs() {
    let _ = Command::new("umount").arg(FILES_TMPFS).status();
    let _ = fs::remove_dir(FILES_TMPFS);
}

/// Runs `n` execs of `bin MARKER` on `workers` threads.
fn exec_storm(bin: &Path, n: u64, workers: u64, marker: &str) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let bin = bin.to_path_buf();
            let marker = marker.to_owned();
            let done = Arc::clone(&done);
            let share = n / workers + u64::from(w < n % workers);
            std::thread::spawn(move || {
                for _ in 0..share {
                    let ok = Command::new(&bin)
                        .arg(&marker)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok();
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    done.load(Ordering::Relaxed)
}

/// Closes with RST (SO_LINGER 0): the client's port is free at once.
fn close_rst(s: TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `l` for its size; the fd is open.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// A loopback listener with a deep accept queue (std's is 128: two
/// connecting threads overflow it and SYNs wait 1 s for a retry).
fn listener() -> TcpListener {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a socket we create and own; the address
    // is a local sockaddr_in of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let r = libc::bind(
            fd,
            (&a as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert!(r == 0, "bind: {}", std::io::Error::last_os_error());
        assert!(libc::listen(fd, 4096) == 0, "listen: {}", std::io::Error::last_os_error());
        TcpListener::from_raw_fd(fd)
    }
}

/// Accepts and closes connections on a thread until the returned closure is
/// called (it shuts the listener down, which wakes accept: no extra connect).
fn acceptor(l: TcpListener) -> impl FnOnce() {
    let fd = l.as_raw_fd();
    let t = std::thread::spawn(move || {
        for s in l.incoming() {
            if s.is_err() {
                break;
            }
        }
    });
    move || {
        // SAFETY: the listener is still open (owned by the thread until it ends).
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        let _ = t.join();
    }
}

/// `n` loopback connects on `workers` threads to a listener (accepting and
/// closing) or, with `closed`, to a port nobody listens on. Returns (attempts, port).
pub(crate) fn connect_storm(n: u64, workers: u64, closed: bool) -> (u64, u16) {
    let l = listener();
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    let stop: Option<Box<dyn FnOnce()>> = if closed {
        drop(l);
        None
    } else {
        Some(Box::new(acceptor(l)))
    };
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let done = Arc::clone(&done);
            let share = n / workers + u64::from(w < n % workers);
            std::thread::spawn(move || {
                for _ in 0..share {
                    match TcpStream::connect(("127.0.0.1", port)) {
                        Ok(s) => {
                            close_rst(s);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) if closed => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    if let Some(stop) = stop {
        stop();
    }
    (done.load(Ordering::Relaxed), port)
}

/// `n` pamtester logins, alternately with the right and a wrong password.
fn login_storm(n: u64) -> u64 {
    let mut done = 0;
    for i in 0..n {
        let pw = if i % 2 == 0 { BENCH_PASSWORD } else { "wrong-password" };
        let Ok(mut child) = Command::new("pamtester")
            .args([PAM_SERVICE, BENCH_USER, "authenticate"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            continue;
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{pw}");
        }
        if child.wait().is_ok() {
            done += 1;
        }
    }
    done
}

struct Env {
    tiny: PathBuf,
    login_ok: Result<(), String>,
    stress_ng: bool,
    counts: Counts,
    /// The files_tmpfs workload's tmpfs (mounted when it is selected).
    files_tmpfs: Result<(), String>,
}

fn run_workload(env: &Env, wl: Wl, round: usize, config: &str) -> Option<Done> {
    let marker = format!("sbm{}{}{}", wl.name().replace('_', ""), config, round);
    let (m0, r0, t0) = (now_mono_ns(), now_real_ns(), Instant::now());
    let mut timed = None;
    let mut rm_secs = None;
    let mut cpu_secs = None;
    let (generated, marker, ops) = match wl {
        Wl::Files | Wl::FilesTmpfs => {
            let name = format!("shrike-bench-files-{config}-{round}");
            let dir = if wl == Wl::Files {
                std::env::temp_dir().join(name)
            } else {
                env.files_tmpfs.as_ref().ok()?;
                Path::new(FILES_TMPFS).join(name)
            };
            let (create, rm, cpu) = files_storm(&dir, env.counts.files);
            timed = Some(create);
            rm_secs = Some(rm);
            cpu_secs = Some(cpu);
            (0, String::new(), env.counts.files)
        }
        Wl::ExecTiny => {
            let n = exec_storm(&env.tiny, env.counts.exec, 2, &marker);
            (n, marker, n)
        }
        Wl::ExecTrue => {
            let n = exec_storm(Path::new("/bin/true"), env.counts.exec, 2, &marker);
            (n, marker, n)
        }
        Wl::Connect | Wl::ConnectClosed => {
            let (n, port) = connect_storm(env.counts.connect, 2, wl == Wl::ConnectClosed);
            (n, port.to_string(), n)
        }
        Wl::Login => {
            env.login_ok.as_ref().ok()?;
            let n = login_storm(env.counts.login);
            (n, BENCH_USER.to_owned(), n)
        }
        Wl::Mixed => {
            if !env.stress_ng {
                return None;
            }
            let ops = env.counts.mixed_ops.to_string();
            let ok = quiet(
                "stress-ng",
                &[
                    "--exec",
                    "2",
                    "--exec-ops",
                    &ops,
                    "--sock",
                    "1",
                    "--sock-ops",
                    &ops,
                    "--timeout",
                    "60s",
                    "--quiet",
                ],
            );
            if !ok {
                return None;
            }
            (0, String::new(), env.counts.mixed_ops * 2)
        }
    };
    let secs = timed.unwrap_or_else(|| t0.elapsed().as_secs_f64());
    Some(Done {
        wl,
        generated,
        secs,
        ops,
        rate: ops as f64 / secs.max(1e-9),
        marker,
        mono: (m0, now_mono_ns()),
        real: (r0, now_real_ns()),
        rm_secs,
        cpu_secs,
    })
}

/// Builds a tiny static binary (`fn main(){}`, crt-static); /bin/true if rustc fails.
fn build_tiny(dir: &Path) -> PathBuf {
    let src = dir.join("tiny.rs");
    let bin = dir.join("tiny");
    if fs::write(&src, "fn main() {}\n").is_ok() {
        let ok = Command::new("rustc")
            .args([
                "-O",
                "-C",
                "target-feature=+crt-static",
                "-C",
                "panic=abort",
                "-C",
                "strip=symbols",
                "-o",
            ])
            .arg(&bin)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return bin;
        }
    }
    eprintln!("bench: could not build the tiny static binary; using /bin/true for exec_tiny");
    PathBuf::from("/bin/true")
}

// ---------------------------------------------------------------------------
// Setup: packages, PAM service, user

fn install_packages() -> Vec<String> {
    let missing: Vec<&str> =
        PACKAGES.iter().filter(|(b, _)| !Path::new(b).exists()).map(|(_, p)| *p).collect();
    if missing.is_empty() {
        return Vec::new();
    }
    eprintln!("bench: installing {}", missing.join(" "));
    let _ = quiet("apt-get", &["update", "-qq"]);
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("bench: apt-get install {} failed", missing.join(" "));
    }
    PACKAGES.iter().filter(|(b, _)| !Path::new(b).exists()).map(|(_, p)| (*p).to_owned()).collect()
}

fn setup_login() -> Result<(), String> {
    if !Path::new("/usr/bin/pamtester").exists() {
        return Err("pamtester is not installed".into());
    }
    fs::write(
        format!("/etc/pam.d/{PAM_SERVICE}"),
        "# Installed by `cargo xtask bench`; removed when it ends.\nauth required pam_unix.so nodelay\naccount required pam_unix.so\n",
    )
    .map_err(|e| format!("writing /etc/pam.d/{PAM_SERVICE}: {e}"))?;
    let _ = quiet("userdel", &["-r", BENCH_USER]);
    if !quiet("useradd", &["-M", "-s", "/usr/sbin/nologin", BENCH_USER]) {
        return Err("useradd failed".into());
    }
    let mut c =
        Command::new("chpasswd").stdin(Stdio::piped()).spawn().map_err(|e| format!("chpasswd: {e}"))?;
    if let Some(mut i) = c.stdin.take() {
        let _ = writeln!(i, "{BENCH_USER}:{BENCH_PASSWORD}");
    }
    if !c.wait().is_ok_and(|s| s.success()) {
        return Err("chpasswd failed".into());
    }
    Ok(())
}

fn teardown_login() {
    let _ = fs::remove_file(format!("/etc/pam.d/{PAM_SERVICE}"));
    let _ = quiet("userdel", &[BENCH_USER]);
}

// ---------------------------------------------------------------------------
// Broker and subscriber

pub(crate) struct Broker {
    child: Child,
    pub(crate) port: u16,
}

impl Broker {
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Broker> {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        fs::write(
            &conf,
            format!(
                "user root\npersistence false\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
            ),
        )?;
        let child = spawn_logged(
            Command::new("mosquitto").arg("-c").arg(&conf),
            &dir.join("mosquitto.out"),
            &dir.join("mosquitto.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Broker { child, port })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(3));
    }
}

/// mosquitto_sub printing `unix_time payload_len topic payload` per message.
pub(crate) struct Sub {
    child: Child,
    out: PathBuf,
}

impl Drop for Sub {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(2));
    }
}

impl Sub {
    fn start(port: u16, dir: &Path, tag: &str) -> anyhow::Result<Sub> {
        let out = dir.join(format!("sub-{tag}.txt"));
        let p = port.to_string();
        let child = spawn_logged(
            Command::new("mosquitto_sub").args([
                "-h",
                "127.0.0.1",
                "-p",
                &p,
                "-q",
                "1",
                "-t",
                "shrike/#",
                "-F",
                "%U %l %t %p",
            ]),
            &out,
            &dir.join(format!("sub-{tag}.err")),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Sub { child, out })
    }

    /// Stops the subscriber; (receipt unix time s, payload length, payload JSON).
    fn finish(mut self) -> Vec<(f64, u64, Value)> {
        stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(2));
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut it = l.splitn(4, ' ');
                let t = it.next()?.parse().ok()?;
                let n = it.next()?.parse().ok()?;
                let _topic = it.next()?;
                let v = serde_json::from_str(it.next()?).ok()?;
                Some((t, n, v))
            })
            .collect()
    }
}

fn hits(item: &Value) -> u64 {
    item["ExtraDetails"]["HitCount"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .or_else(|| item["ExtraDetails"]["HitCount"].as_u64())
        .unwrap_or(1)
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// Does a Shrike message event belong to workload run `d`?
fn shrike_match(d: &Done, ev: &Value) -> bool {
    let name = ev["Name"].as_str().unwrap_or("");
    let item = &ev["Payload"][0];
    match d.wl {
        Wl::ExecTiny | Wl::ExecTrue => {
            name == "ProcessCreate" && text_of(&item["CommandLine"]).split(' ').any(|w| w == d.marker)
        }
        Wl::Connect | Wl::ConnectClosed => {
            name == "ConnectionCreate"
                && text_of(&item["RemotePort"]) == d.marker
                && text_of(&item["Direction"]).eq_ignore_ascii_case("out")
        }
        Wl::Login => name == "Login" && text_of(&item["UserName"]) == d.marker,
        Wl::Mixed | Wl::Files | Wl::FilesTmpfs => false,
    }
}

/// Per workload run: (received hits, payload bytes attributed).
fn shrike_received(msgs: &[(f64, u64, Value)], runs: &[Done]) -> Vec<(u64, f64)> {
    let mut out = vec![(0u64, 0f64); runs.len()];
    let mut seen = HashSet::new();
    for (_, len, m) in msgs {
        let Some(evs) = m["Events"].as_array() else { continue };
        let n = evs.len().max(1) as f64;
        for ev in evs {
            let id = text_of(&ev["Id"]);
            if !seen.insert(id) {
                continue;
            }
            for (i, d) in runs.iter().enumerate() {
                if shrike_match(d, ev) {
                    out[i].0 += hits(&ev["Payload"][0]);
                    out[i].1 += *len as f64 / n;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Configurations

struct Running {
    name: String,
    child: Option<Child>,
    pid: Option<u32>,
    dir: PathBuf,
    prog_ids: HashSet<u64>,
    sub: Option<Sub>,
    audit_log: PathBuf,
    audit_lost_before: u64,
    /// From the spawn to the tool's ready sign (Shrike: `shrike ready`, all
    /// probes attached; bpftrace: "Attaching"; execsnoop: its header).
    ready_ms: Option<f64>,
    /// From the stop signal (SIGTERM for Shrike) to the exit.
    stop_ms: Option<f64>,
}

fn new_progs(before: &BTreeMap<u64, Prog>) -> HashSet<u64> {
    progs().keys().filter(|id| !before.contains_key(id)).copied().collect()
}

/// The BPF programs `pid` holds (prog and link fds: `prog_id:` in fdinfo).
/// Other agents loaded meanwhile (other people's tests) are not counted.
fn pid_prog_ids(pid: u32) -> HashSet<u64> {
    let mut ids = HashSet::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return ids };
    for e in dir.flatten() {
        let Ok(text) = fs::read_to_string(e.path()) else { continue };
        for l in text.lines() {
            if let Some(id) = l.strip_prefix("prog_id:").and_then(|v| v.trim().parse().ok()) {
                ids.insert(id);
            }
        }
    }
    ids
}

fn bpftrace_script(libpam: &str) -> String {
    let mut s = String::from(
        "tracepoint:syscalls:sys_enter_execve { printf(\"exec %d %llu %s\\n\", pid, nsecs, str(args->filename)); join(args->argv); }\n\
         tracepoint:syscalls:sys_exit_connect { printf(\"connect %d %llu %d\\n\", pid, nsecs, args->ret); }\n\
         tracepoint:syscalls:sys_exit_accept4 { printf(\"accept %d %llu %d\\n\", pid, nsecs, args->ret); }\n\
         tracepoint:sched:sched_process_fork { printf(\"fork %d %llu %d\\n\", pid, nsecs, args->child_pid); }\n\
         tracepoint:sched:sched_process_exit { printf(\"exit %d %llu\\n\", pid, nsecs); }\n\
         tracepoint:syscalls:sys_enter_setuid,tracepoint:syscalls:sys_enter_setresuid,tracepoint:syscalls:sys_enter_setgid,tracepoint:syscalls:sys_enter_setresgid { printf(\"priv %d %llu\\n\", pid, nsecs); }\n",
    );
    if !libpam.is_empty() {
        s.push_str(&format!(
            "uretprobe:{libpam}:pam_authenticate {{ printf(\"login %d %llu %d\\n\", pid, nsecs, retval); }}\n"
        ));
    }
    s
}

fn libpam_path() -> String {
    output("ldconfig", &["-p"])
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.contains("libpam.so.0 "))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Starts configuration `name`; Err(reason) when it cannot run here.
fn start_config(
    name: &str,
    agents: (&Path, Option<&Path>),
    broker: Option<&Broker>,
    dir: &Path,
    round: usize,
) -> Result<Running, String> {
    let dir = dir.join(format!("{name}-{round}"));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let before = progs();
    let mut r = Running {
        name: name.to_owned(),
        child: None,
        pid: None,
        dir: dir.clone(),
        prog_ids: HashSet::new(),
        sub: None,
        audit_log: PathBuf::new(),
        audit_lost_before: 0,
        ready_ms: None,
        stop_ms: None,
    };
    let t_spawn = Instant::now();
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    match name {
        "none" => return Ok(r),
        "shrike" | "baseline" => {
            let agent = if name == "baseline" {
                agents.1.ok_or("configuration baseline needs --baseline-agent PATH")?
            } else {
                agents.0
            };
            let broker = broker.ok_or("no mosquitto broker")?;
            r.sub = Some(Sub::start(broker.port, &dir, name).map_err(|e| e.to_string())?);
            let hub = format!("mqtt://127.0.0.1:{}", broker.port);
            let mut c = Command::new(agent);
            c.args([
                "run",
                "--hub",
                &hub,
                "--client-id",
                TOPIC_ID,
                "--low-interval",
                "1s",
                "--high-interval",
                "1s",
            ])
            .args(["--aggregate-interval", "1s", "--log", "info"])
            // The OS baseline's file walk at start is not what this measures.
            .arg("--no-recommendations")
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .arg("--agent-id-file")
            .arg(dir.join("agent-id"));
            let child = spawn_logged(&mut c, &out, &err).map_err(|e| e.to_string())?;
            r.pid = Some(child.id());
            r.child = Some(child);
            if !wait_file(&err, Duration::from_secs(30), |s| s.contains("shrike ready")) {
                let log = fs::read_to_string(&err).unwrap_or_default();
                stop_config(r);
                return Err(format!(
                    "shrike run did not log `shrike ready` in 30 s: {}",
                    last_lines(&log, 3)
                ));
            }
        }
        "bpftrace" => {
            let script = dir.join("bench.bt");
            fs::write(&script, bpftrace_script(&libpam_path())).map_err(|e| e.to_string())?;
            let child =
                spawn_logged(Command::new("bpftrace").arg(&script), &out, &err).map_err(|e| e.to_string())?;
            r.pid = Some(child.id());
            r.child = Some(child);
            if !wait_file(&out, Duration::from_secs(60), |s| s.contains("Attaching")) {
                let log = fs::read_to_string(&err).unwrap_or_default();
                stop_config(r);
                return Err(format!("bpftrace did not attach in 60 s: {}", last_lines(&log, 3)));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        "execsnoop" => {
            // Its stdout is a file: glibc buffers it in 4 KiB blocks, so
            // the header (and every exec) stays in the buffer until 4 KiB
            // of execs follow. On a quiet machine that never happens within
            // the wait below ("printed no header in 30 s"). Line-buffered
            // through coreutils' stdbuf (execsnoop is dynamically linked).
            let mut c = if Path::new("/usr/bin/stdbuf").exists() {
                let mut c = Command::new("stdbuf");
                c.args(["-oL", "execsnoop", "-T"]);
                c
            } else {
                let mut c = Command::new("execsnoop");
                c.arg("-T");
                c
            };
            let child = spawn_logged(&mut c, &out, &err).map_err(|e| e.to_string())?;
            r.pid = Some(child.id());
            r.child = Some(child);
            let exited = |r: &mut Running| r.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if fs::read_to_string(&out).is_ok_and(|s| s.contains("PID")) {
                    break;
                }
                // It exits at once when it cannot attach (e.g. libbpf finds
                // no tracepoint id: tracefs not mounted).
                let status = exited(&mut r);
                if status.is_some() || Instant::now() > deadline {
                    let log = fs::read_to_string(&err).unwrap_or_default();
                    stop_config(r);
                    return Err(match status {
                        Some(st) => format!("execsnoop exited ({st}): {}", last_lines(&log, 3)),
                        None => format!("execsnoop printed no header in 30 s: {}", last_lines(&log, 3)),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        "auditd" => {
            output("auditctl", &["-s"])
                .map_err(|e| format!("the kernel's audit interface does not answer: {e}"))?;
            r.audit_log = dir.join("audit.log");
            let conf_dir = audit_conf(&dir, &r.audit_log).map_err(|e| format!("writing auditd.conf: {e}"))?;
            let child = spawn_logged(Command::new("auditd").arg("-n").arg("-c").arg(&conf_dir), &out, &err)
                .map_err(|e| e.to_string())?;
            r.pid = Some(child.id());
            r.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let s = output("auditctl", &["-s"]).unwrap_or_default();
                if s.lines().any(|l| l.starts_with("pid ") && l != "pid 0") {
                    break;
                }
                if Instant::now() > deadline
                    || r.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
                {
                    let log = fs::read_to_string(&err).unwrap_or_default();
                    stop_config(r);
                    return Err(format!("auditd did not register with the kernel: {}", last_lines(&log, 3)));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let rules: &[&[&str]] = &[
                &["-D"],
                &["-b", "8192"],
                &["-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-k", "sb_exec"],
                &["-a", "always,exit", "-F", "arch=b64", "-S", "connect,accept,accept4", "-k", "sb_net"],
                &[
                    "-a",
                    "always,exit",
                    "-F",
                    "arch=b64",
                    "-S",
                    "setuid,setresuid,setgid,setresgid",
                    "-k",
                    "sb_priv",
                ],
                &["-e", "1"],
            ];
            for rule in rules {
                if let Err(e) = output("auditctl", rule) {
                    stop_config(r);
                    return Err(format!("auditctl {rule:?}: {e}"));
                }
            }
            r.audit_lost_before = audit_lost();
        }
        other => return Err(format!("unknown configuration {other}")),
    }
    if r.pid.is_some() {
        r.ready_ms = Some(t_spawn.elapsed().as_secs_f64() * 1e3);
    }
    // The tool's own programs; new programs only if its fds show none.
    r.prog_ids = r.pid.map(pid_prog_ids).unwrap_or_default();
    if r.prog_ids.is_empty() && r.pid.is_some() && name != "auditd" {
        r.prog_ids = new_progs(&before);
        eprintln!("bench: {name}: no BPF program fds found; counting the programs loaded since its start");
    }
    Ok(r)
}

/// auditd.conf in `dir/auditd`: Debian's, logging to `log` with no rotation
/// (a rotation mid-round would lose records we count) and no disk actions.
fn audit_conf(dir: &Path, log: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let base = fs::read_to_string("/etc/audit/auditd.conf").unwrap_or_default();
    let overrides: [(&str, String); 9] = [
        ("log_file", log.display().to_string()),
        ("max_log_file", "4000".into()),
        ("max_log_file_action", "ignore".into()),
        ("num_logs", "1".into()),
        ("space_left_action", "ignore".into()),
        ("admin_space_left_action", "ignore".into()),
        ("disk_full_action", "ignore".into()),
        ("disk_error_action", "ignore".into()),
        ("flush", "incremental_async".into()),
    ];
    let mut text: String = base
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !overrides.iter().any(|(k, _)| *k == key)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    for (k, v) in &overrides {
        text.push_str(&format!("{k} = {v}\n"));
    }
    let conf_dir = dir.join("auditd");
    fs::create_dir_all(&conf_dir)?;
    let conf = conf_dir.join("auditd.conf");
    fs::write(&conf, text)?;
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o640))?;
    Ok(conf_dir)
}

fn audit_lost() -> u64 {
    output("auditctl", &["-s"])
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("lost ").and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

/// The log without terminal colour sequences (ESC [ ... letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn last_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join(" | ")
}

/// What a configuration reported after it stopped.
#[derive(Default)]
struct Report {
    /// Per workload run: events received (None: this tool does not see them).
    received: Vec<Option<u64>>,
    bytes: Vec<Option<f64>>,
    /// Lost in the kernel or the tool over the whole round.
    lost: Option<u64>,
    lost_detail: Value,
    /// Kernel records the agent read over the round (its stop log).
    records: Option<u64>,
    /// From the stop signal to the exit.
    stop_ms: Option<f64>,
}

fn stop_config(mut r: Running) -> (Running, Option<String>) {
    let mut log = None;
    if r.name == "auditd" {
        let _ = quiet("auditctl", &["-D"]);
    }
    if let Some(c) = r.child.as_mut() {
        // Shrike: SIGTERM, what systemd sends.
        let sig = if matches!(r.name.as_str(), "auditd" | "shrike" | "baseline") {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        let t = Instant::now();
        stop_child(c, sig, Duration::from_secs(15));
        r.stop_ms = Some(t.elapsed().as_secs_f64() * 1e3);
        if t.elapsed() > Duration::from_secs(2) {
            eprintln!("bench: {} took {:.1} s to stop", r.name, t.elapsed().as_secs_f64());
        }
        log = fs::read_to_string(r.dir.join("stderr")).ok();
    }
    if r.name == "auditd" {
        let _ = quiet("auditctl", &["-e", "0"]);
    }
    (r, log)
}

fn finish_config(r: Running, runs: &[Done], bench_pid: u32) -> Report {
    let lost_before = r.audit_lost_before;
    let (mut r, log) = stop_config(r);
    let stdout = fs::read_to_string(r.dir.join("stdout")).unwrap_or_default();
    let mut rep = Report { stop_ms: r.stop_ms, ..Report::default() };
    match r.name.as_str() {
        "shrike" | "baseline" => {
            std::thread::sleep(Duration::from_millis(500));
            let msgs = r.sub.take().map(Sub::finish).unwrap_or_default();
            let got = shrike_received(&msgs, runs);
            for (d, (n, b)) in runs.iter().zip(got) {
                let seen = !matches!(d.wl, Wl::Mixed | Wl::Files | Wl::FilesTmpfs);
                rep.received.push(seen.then_some(n));
                rep.bytes.push(seen.then(|| b / d.generated.max(1) as f64));
            }
            // `kernel_lost={Exec: 0, ...}` in the stop log line.
            let log = strip_ansi(&log.unwrap_or_default());
            let mut detail = serde_json::Map::new();
            if let Some(line) = log.lines().rev().find(|l| l.contains("kernel_lost=")) {
                let at = line.find("kernel_lost=").unwrap_or(0);
                let map = &line[at..];
                let map = &map[map.find('{').unwrap_or(0)..=map.find('}').unwrap_or(map.len() - 1)];
                for part in map.trim_matches(|c| c == '{' || c == '}').split(',') {
                    if let Some((k, v)) = part.split_once(':') {
                        let v: u64 = v.trim().parse().unwrap_or(0);
                        detail.insert(k.trim().to_owned(), json!(v));
                    }
                }
                rep.lost = Some(detail.values().filter_map(Value::as_u64).sum());
            } else if let Some(line) = log.lines().rev().find(|l| l.contains("shrike stopping:")) {
                // `kernel_lost.exec=N` fields, zero ones left out
                // (telemetry::fields): none at all is no loss.
                for (k, v) in
                    line.split_whitespace().filter_map(|t| t.strip_prefix("kernel_lost.")?.split_once('='))
                {
                    detail.insert(k.to_owned(), json!(v.parse::<u64>().unwrap_or(0)));
                }
                rep.lost = Some(detail.values().filter_map(Value::as_u64).sum());
            }
            rep.lost_detail = Value::Object(detail);
            rep.records = log
                .lines()
                .rev()
                .find_map(|l| l.split_once(" received=")?.1.split_whitespace().next()?.parse().ok());
        }
        "bpftrace" => {
            let mut lines_by_kind: HashMap<&str, Vec<(u32, u64)>> = HashMap::new();
            let mut lost = 0;
            for l in stdout.lines() {
                let f: Vec<&str> = l.split(' ').collect();
                if l.starts_with("Lost ") {
                    lost += f.get(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
                    continue;
                }
                if let (Some(kind), Some(pid), Some(ns)) = (f.first(), f.get(1), f.get(2))
                    && let (Ok(pid), Ok(ns)) = (pid.parse(), ns.parse())
                {
                    lines_by_kind.entry(kind).or_default().push((pid, ns));
                }
            }
            let in_window = |kind: &str, d: &Done, pid: Option<u32>| {
                lines_by_kind
                    .get(kind)
                    .map(|v| {
                        v.iter()
                            .filter(|(p, t)| *t >= d.mono.0 && *t <= d.mono.1 && pid.is_none_or(|x| x == *p))
                            .count() as u64
                    })
                    .unwrap_or(0)
            };
            for d in runs {
                let n = match d.wl {
                    Wl::ExecTiny | Wl::ExecTrue => {
                        Some(stdout.lines().filter(|l| l.split(' ').any(|w| w == d.marker)).count() as u64)
                    }
                    Wl::Connect | Wl::ConnectClosed => Some(in_window("connect", d, Some(bench_pid))),
                    Wl::Login => Some(in_window("login", d, None)),
                    Wl::Mixed | Wl::Files | Wl::FilesTmpfs => None,
                };
                rep.received.push(n);
                rep.bytes.push(None);
            }
            rep.lost = Some(lost);
        }
        "execsnoop" => {
            let err = log.unwrap_or_default();
            let lost: u64 = err
                .lines()
                .filter(|l| l.to_ascii_lowercase().contains("lost"))
                .filter_map(|l| l.split_whitespace().find_map(|w| w.parse::<u64>().ok()))
                .sum();
            for d in runs {
                let n = match d.wl {
                    Wl::ExecTiny | Wl::ExecTrue => {
                        Some(stdout.lines().filter(|l| l.split_whitespace().any(|w| w == d.marker)).count()
                            as u64)
                    }
                    _ => None,
                };
                rep.received.push(n);
                rep.bytes.push(None);
            }
            rep.lost = Some(lost);
        }
        "auditd" => {
            let text = fs::read(&r.audit_log).unwrap_or_default();
            let text = String::from_utf8_lossy(&text).into_owned();
            // (type, unix ns, line)
            let recs: Vec<(&str, u64, &str)> = text
                .lines()
                .filter_map(|l| {
                    let ty = l.strip_prefix("type=")?.split(' ').next()?;
                    let ts = l.split("msg=audit(").nth(1)?.split(':').next()?;
                    let ns = (ts.parse::<f64>().ok()? * 1e9) as u64;
                    Some((ty, ns, l))
                })
                .collect();
            let pid = format!(" pid={bench_pid} ");
            for d in runs {
                let win = |ns: u64| ns + 5_000_000 >= d.real.0 && ns <= d.real.1 + 5_000_000;
                let n = match d.wl {
                    Wl::ExecTiny | Wl::ExecTrue => {
                        let m = format!("=\"{}\"", d.marker);
                        Some(recs.iter().filter(|(t, _, l)| *t == "EXECVE" && l.contains(&m)).count() as u64)
                    }
                    Wl::Connect | Wl::ConnectClosed => Some(
                        recs.iter()
                            .filter(|(t, ns, l)| {
                                *t == "SYSCALL" && l.contains("syscall=42 ") && l.contains(&pid) && win(*ns)
                            })
                            .count() as u64,
                    ),
                    Wl::Login => Some(
                        recs.iter()
                            .filter(|(t, ns, l)| *t == "USER_AUTH" && l.contains(BENCH_USER) && win(*ns))
                            .count() as u64,
                    ),
                    Wl::Mixed | Wl::Files | Wl::FilesTmpfs => None,
                };
                rep.received.push(n);
                rep.bytes.push(None);
            }
            rep.lost = Some(audit_lost().saturating_sub(lost_before));
        }
        _ => {
            rep.received = vec![None; runs.len()];
            rep.bytes = vec![None; runs.len()];
        }
    }
    rep
}

// ---------------------------------------------------------------------------
// Shrike-only phases: latency and max rate without loss

/// `shrike run` against `broker` (recommendations off: their assessment at
/// start is not what these phases time) with `extra` flags, its files in
/// `dir/<name>`, a subscriber started first; returns once the agent is ready.
pub(crate) fn start_run(
    agent: &Path,
    broker: &Broker,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<(Sub, Child)> {
    let dir = dir.join(name);
    fs::create_dir_all(&dir)?;
    let sub = Sub::start(broker.port, &dir, name)?;
    let hub = format!("mqtt://127.0.0.1:{}", broker.port);
    let err = dir.join("stderr");
    let mut c = Command::new(agent);
    c.args(["run", "--hub", &hub, "--client-id", TOPIC_ID, "--no-recommendations"])
        .args(extra)
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .arg("--agent-id-file")
        .arg(dir.join("agent-id"));
    let mut child = spawn_logged(&mut c, &dir.join("stdout"), &err)?;
    if !wait_file(&err, Duration::from_secs(30), |s| s.contains("shrike ready")) {
        stop_child(&mut child, libc::SIGINT, Duration::from_secs(10));
        bail!("shrike run did not become ready");
    }
    Ok((sub, child))
}

fn latency_phase(agent: &Path, broker: &Broker, dir: &Path, quick: bool) -> anyhow::Result<Value> {
    let extra = ["--priority", "exec=high", "--aggregate", "exec=off"];
    let (sub, mut child) = start_run(agent, broker, dir, "latency", &extra)?;
    let n = if quick { 10 } else { 100 };
    let marker = format!("sblat{}", std::process::id());
    let mut sent = HashMap::new();
    for i in 0..n {
        let t = now_real_ns();
        sent.insert(i.to_string(), t);
        let _ = Command::new("/bin/true").arg(&marker).arg(i.to_string()).status();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop_child(&mut child, libc::SIGINT, Duration::from_secs(15));
    let msgs = sub.finish();
    let mut lat_ms = Vec::new();
    for (at, _, m) in &msgs {
        for ev in m["Events"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let cl = text_of(&ev["Payload"][0]["CommandLine"]);
            let mut w = cl.split(' ');
            if ev["Name"] == "ProcessCreate"
                && w.nth(1) == Some(marker.as_str())
                && let Some(t) = w.next().and_then(|i| sent.remove(i))
            {
                lat_ms.push((at * 1e3) - t as f64 / 1e6);
            }
        }
    }
    Ok(json!({
        "spawned": n, "received": lat_ms.len(),
        "p50_ms": percentile(&lat_ms, 50.0), "p99_ms": percentile(&lat_ms, 99.0), "max_ms": percentile(&lat_ms, 100.0),
        "agent_args": "--priority exec=high --aggregate exec=off (default high interval)",
    }))
}

/// Alert latency: `shrike run` with its default settings (detection on,
/// default intervals) and 100 execs of a copy of /bin/true in a directory
/// under /tmp, each one a distinct process, so each fires `exec-from-tmp`
/// whose first alert of a (rule, process) goes out at once. Latency: from
/// just before the exec to the subscriber's receipt of the Alert event.
fn alert_latency_phase(agent: &Path, broker: &Broker, dir: &Path, quick: bool) -> anyhow::Result<Value> {
    let (sub, mut child) = start_run(agent, broker, dir, "alert-latency", &[])?;
    let staging = std::env::temp_dir().join(format!("shrike-bench-alert-{}", std::process::id()));
    fs::create_dir_all(&staging)?;
    let bin = staging.join("true");
    fs::copy("/bin/true", &bin)?;
    let n = if quick { 10 } else { 100 };
    let marker = format!("sbalert{}", std::process::id());
    let mut sent = HashMap::new();
    for i in 0..n {
        let t = now_real_ns();
        if let Ok(child) = Command::new(&bin).arg(&marker).arg(i.to_string()).spawn() {
            sent.insert(child.id(), t);
            let mut child = child;
            let _ = child.wait();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop_child(&mut child, libc::SIGINT, Duration::from_secs(15));
    let _ = fs::remove_dir_all(&staging);
    let msgs = sub.finish();
    let mut lat_ms = Vec::new();
    for (at, _, m) in &msgs {
        for ev in m["Events"].as_array().map(Vec::as_slice).unwrap_or_default() {
            if ev["Name"] != "Alert" {
                continue;
            }
            for item in ev["Payload"].as_array().map(Vec::as_slice).unwrap_or_default() {
                if item["RuleId"] != "exec-from-tmp" {
                    continue;
                }
                let pid = item["ProcessId"].as_u64().or_else(|| text_of(&item["ProcessId"]).parse().ok());
                if let Some(t) = pid.and_then(|p| sent.remove(&(p as u32))) {
                    lat_ms.push((at * 1e3) - t as f64 / 1e6);
                }
            }
        }
    }
    Ok(json!({
        "spawned": n, "received": lat_ms.len(),
        "p50_ms": percentile(&lat_ms, 50.0), "p99_ms": percentile(&lat_ms, 99.0), "max_ms": percentile(&lat_ms, 100.0),
        "agent_args": "defaults (detection on, high interval 500 ms)",
    }))
}

/// Start and stop: the start/stop phase's medians and every tool's over rounds.
fn start_stop_md(which: &str, s: &Value, rounds: &[Value]) -> String {
    let mut md = String::new();
    let ms = |v: &Value| v.as_f64().map_or("-".into(), |v| format!("{v:.0} ms"));
    if s.is_object() {
        let n = s["runs"].as_array().map_or(0, Vec::len);
        md.push_str(&format!(
            "\nStart and stop of `shrike run`, {which} agent ({}; medians of {n} runs; targets < 1 s):\n\n",
            s["agent_args"].as_str().unwrap_or("")
        ));
        md.push_str("| measure | median | each run |\n|---|---|---|\n");
        for (key, what) in [
            ("ready_ms", "spawn to probes attached (`shrike ready`)"),
            (
                "first_event_out_ms",
                "spawn to first event out (an exec received by a subscriber of the broker)",
            ),
            ("stop_ms", "SIGTERM to exit, idle agent"),
        ] {
            let each: Vec<String> = s["runs"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|r| ms(&r[key]))
                .collect();
            md.push_str(&format!(
                "| {what} | {} | {} |\n",
                ms(&s[&format!("{key}_median")]),
                each.join(", ")
            ));
        }
    }
    let mut cfgs: Vec<&str> = Vec::new();
    for r in rounds {
        if let Some(c) = r["config"].as_str()
            && !cfgs.contains(&c)
            && r["ready_ms"].is_number()
        {
            cfgs.push(c);
        }
    }
    if !cfgs.is_empty() {
        md.push_str("\nEach tool in the rounds (median over rounds): spawn to ready (shrike: `shrike ready`; bpftrace: `Attaching`; execsnoop: its header; auditd: registered with the kernel) and stop signal to exit after a round of workloads (shrike and auditd SIGTERM, the others SIGINT):\n\n");
        for c in cfgs {
            let of = |k: &str| {
                median(
                    &rounds
                        .iter()
                        .filter(|r| r["config"] == c)
                        .filter_map(|r| r[k].as_f64())
                        .collect::<Vec<_>>(),
                )
            };
            md.push_str(&format!("- {c}: ready {:.0} ms, stop {:.0} ms\n", of("ready_ms"), of("stop_ms")));
        }
    }
    md
}

/// The loss search's table: per kind and transport, the rate at first loss.
fn loss_md(which: &str, loss: &Value) -> String {
    let Some(by_transport) = loss.as_object() else { return String::new() };
    let mut md = format!(
        "\nKernel loss against rate, {which} agent (`shrike run`, default settings; paced steps of several generator \
         processes; lost = records the kernel could not deliver, all kinds, during the step):\n\n\
         | kind | transport | first loss at | highest rate without loss | generators' max | steps (achieved/s: lost of made) |\n\
         |---|---|---|---|---|---|\n",
    );
    let rate = |v: &Value| v.as_f64().map_or("-".into(), |v| format!("{v:.0}/s"));
    for kind in ["exec", "connect"] {
        for (t, per) in by_transport {
            let r = &per[kind];
            if let Some(e) = r["error"].as_str() {
                md.push_str(&format!("| {kind} | {t} | error: {e} | | | |\n"));
                continue;
            }
            let steps: Vec<String> = r["steps"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    format!(
                        "{:.0}: {} of {}",
                        s["achieved_per_s"].as_f64().unwrap_or(0.0),
                        s["records_lost"].as_u64().unwrap_or(0),
                        s["records_sent"].as_u64().unwrap_or(0) + s["records_lost"].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            let failed = r["note"].as_str().filter(|n| n.starts_with("step failed"));
            md.push_str(&format!(
                "| {kind} | {t} | {} | {} | {} | {} |\n",
                match (failed, r["first_loss_per_s"].as_f64()) {
                    (_, Some(v)) => format!("**{v:.0}/s**"),
                    (Some(n), None) => n.to_owned(),
                    (None, None) => "no loss".into(),
                },
                rate(&r["max_rate_without_loss_per_s"]),
                rate(&r["generator_max_per_s"]),
                steps.join("; ")
            ));
        }
    }
    md
}

// ---------------------------------------------------------------------------
// Plots (plots.rs draws them)

/// `--replot`: the plots of an earlier run, from its bench.json.
fn replot(out: &Path) -> anyhow::Result<()> {
    let path = out.join("bench.json");
    let doc: Value =
        serde_json::from_str(&fs::read_to_string(&path).with_context(|| path.display().to_string())?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
    let summary: Vec<Value> = doc["summary"].as_array().cloned().unwrap_or_default();
    let rounds: Vec<Value> = doc["rounds_detail"].as_array().cloned().unwrap_or_default();
    let configs: Vec<String> = doc["configs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.as_str().filter(|c| *c != "none").map(str::to_owned))
        .collect();
    let workloads: Vec<&str> = Wl::ALL
        .iter()
        .map(|w| w.name())
        .filter(|w| summary.iter().any(|e| e["workload"] == *w && e["ops_per_s_median"].is_number()))
        .collect();
    let ratio = |wl: &str, cfg: &str| {
        summary
            .iter()
            .find(|e| e["config"] == cfg && e["workload"] == wl && e["ops_per_s_median"].is_number())
            .and_then(|e| e["ratio_to_none"].as_f64())
    };
    let mut notes = Vec::new();
    let files = draw_plots(out, &workloads, &configs, &ratio, &summary, &rounds, &doc, &mut notes);
    for (f, _) in files {
        println!("{}", out.join(f).display());
    }
    for n in notes {
        eprintln!("bench: {n}");
    }
    Ok(())
}

/// Every plot, one PNG per question; (file, what it shows) of those written.
#[expect(clippy::too_many_arguments, reason = "the summaries the run made, each used by one plot")]
fn draw_plots(
    out: &Path,
    workloads: &[&str],
    configs: &[String],
    ratio: &dyn Fn(&str, &str) -> Option<f64>,
    summary: &[Value],
    rounds: &[Value],
    extra: &Value,
    notes: &mut Vec<String>,
) -> Vec<(&'static str, &'static str)> {
    use plots::{HLine, LinePanel, Panel, SERIES, Series, VLine, si};
    use plotters::style::RGBColor;
    let mut written = Vec::new();
    if let Err(e) = plots::load_font() {
        notes.push(format!("no plots: {e} (Debian's fonts-dejavu-core)"));
        return written;
    }
    let red = RGBColor(200, 30, 30);
    let black = RGBColor(0, 0, 0);
    let of = |cfg: &str, wl: &str, key: &str| {
        summary
            .iter()
            .find(|e| e["config"] == cfg && e["workload"] == wl)
            .and_then(|e| e[key].as_f64())
            .filter(|v| v.is_finite())
    };
    let panels = |value: &dyn Fn(&str, &str) -> Option<f64>, hl: &dyn Fn(&str) -> Vec<HLine>| -> Vec<Panel> {
        workloads
            .iter()
            .map(|wl| Panel {
                title: (*wl).to_owned(),
                bars: configs.iter().map(|c| (c.clone(), value(wl, c))).collect(),
                hlines: hl(wl),
            })
            .collect()
    };
    let mut draw = |file: &'static str, what: &'static str, r: anyhow::Result<()>| match r {
        Ok(()) => written.push((file, what)),
        Err(e) => notes.push(format!("{file} not drawn: {e}")),
    };

    let p = panels(ratio, &|wl| {
        // Issue 18: mixed 0.97x, the others 0.95x; issue 13: the files workloads 0.97x.
        let target = if matches!(wl, "mixed" | "files" | "files_tmpfs") { 0.97 } else { 0.95 };
        vec![
            HLine { y: 1.0, label: "no agent = 1.0".into(), color: black },
            HLine { y: target, label: format!("target {target}"), color: red },
        ]
    });
    draw(
        "throughput.png",
        "throughput with each tool / without (median ops/s ratio), per workload",
        plots::bar_panels(
            &out.join("throughput.png"),
            "Workload throughput with the tool / without (higher is better)",
            "ratio to no agent",
            &p,
            &|v| format!("{v:.2}"),
            Some(1.0),
        ),
    );

    let kernel_target = |wl: &str| match wl {
        "exec_tiny" | "exec_true" => {
            vec![HLine { y: 2500.0, label: "target 2.5 µs per exec".into(), color: red }]
        }
        "connect" | "connect_closed" => {
            vec![HLine { y: 1000.0, label: "target 1 µs per connect".into(), color: red }]
        }
        _ => Vec::new(),
    };
    let p = panels(&|wl, c| of(c, wl, "kernel_ns_per_event_median"), &kernel_target);
    draw(
        "kernel_ns.png",
        "BPF run time of each tool's programs per generated event (ns), per workload",
        plots::bar_panels(
            &out.join("kernel_ns.png"),
            "Kernel (BPF) time per generated event, ns (lower is better; auditd has no BPF programs)",
            "ns per event",
            &p,
            &|v| si(v),
            None,
        ),
    );

    let p = panels(&|wl, c| of(c, wl, "agent_cpu_ns_per_event_median"), &|_| Vec::new());
    let per_record = median(
        &rounds
            .iter()
            .filter(|r| r["config"] == "shrike")
            .filter_map(|r| r["cpu_ns_per_record"].as_f64())
            .collect::<Vec<_>>(),
    );
    let title = if per_record.is_finite() {
        format!(
            "The tool's own CPU time per generated event, ns (shrike: {} ns per kernel record, target < 1000)",
            si(per_record)
        )
    } else {
        "The tool's own CPU time per generated event, ns".to_owned()
    };
    draw(
        "agent_cpu.png",
        "each tool's userspace CPU time per generated event (ns), per workload",
        plots::bar_panels(&out.join("agent_cpu.png"), &title, "CPU ns per event", &p, &|v| si(v), None),
    );

    // RSS: the agent's rounds; workload starts from its first round.
    let shrike_rounds: Vec<&Value> =
        rounds.iter().filter(|r| r["config"] == "shrike" || r["config"] == "baseline").collect();
    let series: Vec<Series> = shrike_rounds
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            label: format!(
                "{}, round {}",
                r["config"].as_str().unwrap_or(""),
                r["round"].as_u64().unwrap_or(0) + 1
            ),
            color: SERIES[i % SERIES.len()],
            points: r["rss_series_kb"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()? / 1024.0)))
                .collect(),
            notes: Vec::new(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !series.is_empty() {
        let vlines = shrike_rounds
            .first()
            .and_then(|r| r["workload_starts_s"].as_array())
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|w| Some(VLine { x: w[1].as_f64()?, label: w[0].as_str()?.to_owned() }))
            .collect();
        let panel = LinePanel {
            title: "VmRSS sampled every 200 ms from `shrike ready` (workload starts of round 1 marked)"
                .into(),
            x_desc: "seconds since the agent was ready".into(),
            y_desc: "RSS, MB".into(),
            series,
            hlines: vec![
                // Grey and black: the rounds' lines take the colours.
                HLine { y: 10.0, label: "target idle < 10 MB".into(), color: RGBColor(120, 120, 120) },
                HLine { y: 24.0, label: "target peak < 24 MB".into(), color: black },
            ],
            vlines,
            log_x: false,
            legend: plotters::chart::SeriesLabelPosition::LowerRight,
        };
        draw(
            "rss.png",
            "the agent's resident memory over each round",
            plots::line_panels(
                &out.join("rss.png"),
                "Shrike's resident memory during the rounds",
                &[panel],
                &|v| if v.abs() >= 10.0 { format!("{v:.0}") } else { format!("{v:.1}") },
                &|v| format!("{v:.0}"),
            ),
        );
    }

    // Loss: lost share of the records the kernel made, against the rate.
    let mut panels_loss = Vec::new();
    for kind in ["exec", "connect"] {
        let mut series = Vec::new();
        // With --baseline-agent, its curves beside the agent's.
        let runs = [("loss", ""), ("baseline_loss", " (baseline)")];
        let runs = runs.iter().filter(|(key, _)| extra[*key].is_object());
        for (i, (transport, (key, suffix))) in
            runs.flat_map(|r| ["ringbuf", "perf"].iter().map(move |t| (t, r))).enumerate()
        {
            let r = &extra[*key][transport][kind];
            let points: Vec<(f64, f64)> = r["steps"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|s| {
                    let lost = s["records_lost"].as_f64()?;
                    let sent = s["records_sent"].as_f64()?;
                    Some((s["achieved_per_s"].as_f64()? as u64, 100.0 * lost / (lost + sent).max(1.0)))
                })
                .collect::<std::collections::BTreeMap<u64, f64>>()
                .into_iter()
                .map(|(x, y)| (x as f64, y))
                .collect();
            if points.is_empty() {
                continue;
            }
            let notes = match r["first_loss_per_s"].as_f64() {
                Some(f) => {
                    let y = points.iter().find(|p| p.0 == f.trunc()).map_or(0.0, |p| p.1);
                    vec![(f, y, format!("first loss {}/s ", si(f)))]
                }
                None => {
                    let last = *points.last().unwrap_or(&(0.0, 0.0));
                    vec![(last.0, last.1, format!("no loss to {}/s ", si(last.0)))]
                }
            };
            series.push(Series {
                label: format!(
                    "{}{suffix}",
                    if *transport == "ringbuf" { "ring buffer" } else { "perf buffer" }
                ),
                color: SERIES[i % SERIES.len()],
                points,
                notes,
            });
        }
        if !series.is_empty() {
            panels_loss.push(LinePanel {
                title: format!("{kind} storm (several generator processes)"),
                x_desc: format!("{kind}s per second achieved (log scale)"),
                y_desc: "records lost, % of records made".into(),
                series,
                hlines: Vec::new(),
                vlines: Vec::new(),
                log_x: true,
                legend: plotters::chart::SeriesLabelPosition::UpperLeft,
            });
        }
    }
    if !panels_loss.is_empty() {
        draw(
            "loss.png",
            "share of kernel records lost against the rate, per kind and transport",
            plots::line_panels(
                &out.join("loss.png"),
                "Kernel records lost against the event rate, shrike run with default settings",
                &panels_loss,
                &|v| si(v),
                &|v| format!("{v:.1}"),
            ),
        );
    }
    written
}

// ---------------------------------------------------------------------------
// RSS over a round

/// Samples a process's VmRSS every 200 ms on a thread, from its start
/// (`t0`, right after the tool is ready) until `finish`.
struct RssSampler {
    t0: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(f64, u64)>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let t0 = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut v = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match status_kb(pid, "VmRSS") {
                    Some(kb) => v.push((t0.elapsed().as_secs_f64(), kb)),
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            v
        });
        RssSampler { t0, stop, handle }
    }

    /// (seconds since the start, kB).
    fn finish(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Machine

fn machine(load_at_start: &str) -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem_kb: u64 = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let load_end = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let l1: f64 = load_at_start.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_mb": mem_kb / 1024,
        "kernel": output("uname", &["-r"]).unwrap_or_default().trim(),
        "cpu_model": cpu,
        "loadavg_at_start": load_at_start.trim(),
        "loadavg_at_end": load_end.trim(),
        "other_load_present": l1 > 0.5,
    })
}

// ---------------------------------------------------------------------------
// Main

struct Sample {
    config: String,
    round: usize,
    done: Done,
    received: Option<u64>,
    bytes_per_event: Option<f64>,
    cpu_ns_per_event: Option<f64>,
    kernel: Value,
}

/// The agent to measure: `--agent`, else a release build, or the debug build
/// with --quick (what CI has already built for the tests; --quick checks the
/// harness, not the numbers).
fn agent_binary(args: &BenchArgs, root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(a) = &args.agent {
        return Ok(a.clone());
    }
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root).args(["build", "--package", "shrike"]);
    if !args.quick {
        c.arg("--release");
    }
    if !c.status()?.success() {
        bail!("building the agent failed");
    }
    Ok(root.join("target").join(if args.quick { "debug" } else { "release" }).join("shrike"))
}

pub fn run(args: BenchArgs, root: &Path) -> anyhow::Result<()> {
    if let Some(job) = &args.generate {
        return loss::generate(&loss::GenJob::parse(job)?);
    }
    if args.replot {
        let out = args.out.clone().unwrap_or_else(|| "target/bench".into());
        let out = if out.is_absolute() { out } else { root.join(out) };
        return replot(&out);
    }
    if args.workspace {
        let out = args.out.clone().unwrap_or_else(|| "target/bench".into());
        let out = if out.is_absolute() { out } else { root.join(out) };
        return crate::workspace_bench::run(root, &out, args.quick);
    }
    if args.spool_flood {
        let agent = agent_binary(&args, root)?;
        let out = args.out.clone().unwrap_or_else(|| "target/bench".into());
        let out = if out.is_absolute() { out } else { root.join(out) };
        return crate::spool_bench::run(&agent, &out, args.quick);
    }
    if !args.sigma.is_empty() || args.ioc {
        if !args.ioc && !args.sigma.iter().any(|d| d.exists()) {
            crate::sigma_bench::skipped(&args.sigma);
            return Ok(());
        }
        // Release build unless --quick or --agent: the numbers are the point.
        let agent = agent_binary(&args, root)?;
        let out = args.out.clone().unwrap_or_else(|| "target/bench".into());
        let out = if out.is_absolute() { out } else { root.join(out) };
        if args.ioc {
            crate::ioc_bench::run(&agent, args.ioc_entries, &out)?;
        }
        if !args.sigma.is_empty() {
            crate::sigma_bench::run(&agent, &args.sigma, args.sigma_events.as_deref(), &out)?;
        }
        return Ok(());
    }
    let t_start = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench loads eBPF programs, starts auditd and creates a user: run it as root");
    }
    let load_at_start = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| if args.quick { "target/bench-quick" } else { "target/bench" }.into());
    let out = if out.is_absolute() { out } else { root.join(out) };
    let work = out.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 5 });
    let mut configs: Vec<String> = if args.configs.is_empty() {
        CONFIGS.iter().map(|s| s.to_string()).collect()
    } else {
        args.configs.clone()
    };
    if args.baseline_agent.is_some() && !configs.iter().any(|c| c == "baseline") {
        let at = configs.iter().position(|c| c == "shrike").map_or(configs.len(), |i| i + 1);
        configs.insert(at, "baseline".into());
    }
    let mut notes: Vec<String> = Vec::new();
    if let Some(b) = &args.baseline_agent {
        notes.push(format!("baseline = the agent {} with the same settings as shrike", b.display()));
    }
    if args.quick && args.configs.is_empty() {
        // bpftrace takes seconds to compile and attach per round.
        configs.retain(|c| c != "bpftrace");
        notes.push("--quick: bpftrace skipped (it takes several seconds to start per round); run without --quick for it".into());
    }

    let missing = install_packages();
    // tracefs is not mounted on a fresh machine: Shrike mounts it itself, but
    // execsnoop (libbpf reads tracepoint ids there) and bpftrace do not, and
    // exit at once when they run before Shrike did.
    if !Path::new("/sys/kernel/tracing/events").exists() {
        let ok = quiet("mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"]);
        notes.push(format!(
            "tracefs was not mounted at /sys/kernel/tracing: {} by the bench (execsnoop and bpftrace need it)",
            if ok { "mounted" } else { "mounting it failed" }
        ));
    }
    let mut unavailable: BTreeMap<String, String> = BTreeMap::new();
    for (bin, pkg) in PACKAGES {
        if missing.iter().any(|m| m == pkg) {
            unavailable
                .insert((*pkg).to_owned(), format!("{bin} missing and apt-get could not install {pkg}"));
        }
    }

    // The agent: release build, or the debug build with --quick (what CI has
    // already built for the tests; --quick checks the harness, not the numbers).
    let agent = agent_binary(&args, root)?;
    let t_setup = Instant::now();

    // kernel.bpf_stats_enabled for the run.
    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = fs::read_to_string(stats_path).unwrap_or_else(|_| "0".into());
    let _ = fs::write(stats_path, "1");

    let env = Env {
        tiny: build_tiny(&work),
        login_ok: setup_login(),
        stress_ng: Path::new("/usr/bin/stress-ng").exists(),
        counts: Counts::new(args.quick),
        files_tmpfs: if args.workloads.is_empty() || args.workloads.iter().any(|w| w == "files_tmpfs") {
            mount_files_tmpfs()
        } else {
            Err("not selected".into())
        },
    };
    if let Err(e) = &env.files_tmpfs
        && e != "not selected"
    {
        notes.push(format!("files_tmpfs workload skipped: {e}"));
    }
    if let Err(e) = &env.login_ok {
        notes.push(format!("login workload skipped: {e}"));
    }
    if !env.stress_ng {
        notes.push("mixed workload skipped: stress-ng is not installed".into());
    }
    let broker = Broker::start(&work).map_err(|e| {
        unavailable.insert("shrike".into(), format!("mosquitto: {e}"));
        e
    });
    let broker = broker.ok();
    let bench_pid = std::process::id();

    let mut samples: Vec<Sample> = Vec::new();
    let mut rounds_json = Vec::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..rounds {
        for cfg in &configs {
            if failed.contains_key(cfg) {
                continue;
            }
            eprintln!(
                "bench: [{:.0} s] round {} / {rounds}: {cfg}",
                t_start.elapsed().as_secs_f64(),
                round + 1
            );
            let r = match start_config(
                cfg,
                (&agent, args.baseline_agent.as_deref()),
                broker.as_ref(),
                &work,
                round,
            ) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("bench: {cfg} cannot run: {e}");
                    failed.insert(cfg.clone(), e);
                    continue;
                }
            };
            let sampler = r.pid.map(RssSampler::start);
            std::thread::sleep(Duration::from_millis(500));
            let idle_rss = r.pid.and_then(|p| status_kb(p, "VmRSS"));
            // The peak of the start (loading programs: aya parses the
            // kernel's BTF) apart from the peak under the workloads, which is
            // what the target speaks of: the high-water mark is reset here
            // (clear_refs 5) and read again after the workloads.
            let start_peak_rss = r.pid.and_then(|p| status_kb(p, "VmHWM"));
            if let Some(p) = r.pid {
                let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
            }
            let round_cpu0 = r.pid.and_then(cpu_ns);
            let mut runs = Vec::new();
            let mut per = Vec::new();
            let mut wl_starts = Vec::new();
            for wl in Wl::ALL {
                if !args.workloads.is_empty() && !args.workloads.iter().any(|w| w == wl.name()) {
                    continue;
                }
                if let Some(s) = &sampler {
                    wl_starts.push(json!([wl.name(), s.t0.elapsed().as_secs_f64()]));
                }
                let cpu0 = r.pid.and_then(cpu_ns);
                let p0 = progs();
                let Some(d) = run_workload(&env, wl, round, cfg) else { continue };
                // Let the tool catch up before reading its CPU time.
                std::thread::sleep(Duration::from_millis(if cfg == "none" { 0 } else { 300 }));
                let p1 = progs();
                let cpu1 = r.pid.and_then(cpu_ns);
                let ev = if d.generated > 0 { d.generated } else { d.ops.max(1) };
                let cpu = cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a) as f64 / ev as f64);
                // No BPF programs (no agent, auditd): no kernel figure.
                let kernel =
                    if r.prog_ids.is_empty() { Value::Null } else { prog_costs(&r.prog_ids, &p0, &p1, ev) };
                per.push((cpu, kernel));
                runs.push(d);
            }
            let peak_rss = r.pid.and_then(|p| status_kb(p, "VmHWM"));
            let rss_now = r.pid.and_then(|p| status_kb(p, "VmRSS"));
            let round_cpu = round_cpu0.zip(r.pid.and_then(cpu_ns)).map(|(a, b)| b.saturating_sub(a));
            let rss_series = sampler.map(RssSampler::finish).unwrap_or_default();
            let ready_ms = r.ready_ms;
            let rep = finish_config(r, &runs, bench_pid);
            // Userspace cost per kernel record (fork, exec, exit, connect,
            // accept... each one record), over the whole round.
            let per_record = round_cpu.zip(rep.records).map(|(c, n)| c as f64 / n.max(1) as f64);
            rounds_json.push(
                json!({"config": cfg, "round": round, "idle_rss_kb": idle_rss, "peak_rss_kb": peak_rss,
                "start_peak_rss_kb": start_peak_rss,
                "rss_after_kb": rss_now, "lost": rep.lost, "lost_detail": rep.lost_detail,
                "cpu_ns": round_cpu, "records": rep.records, "cpu_ns_per_record": per_record,
                "ready_ms": ready_ms, "stop_ms": rep.stop_ms,
                "rss_series_kb": rss_series.iter().map(|(t, kb)| json!([(t * 100.0).round() / 100.0, kb])).collect::<Vec<_>>(),
                "workload_starts_s": wl_starts}),
            );
            for (i, (d, (cpu, kernel))) in runs.into_iter().zip(per).enumerate() {
                samples.push(Sample {
                    config: cfg.clone(),
                    round,
                    done: d,
                    received: rep.received.get(i).copied().flatten(),
                    bytes_per_event: rep.bytes.get(i).copied().flatten(),
                    cpu_ns_per_event: cpu,
                    kernel,
                });
            }
        }
    }
    teardown_login();
    if env.files_tmpfs.is_ok() {
        unmount_files_tmpfs();
    }

    let mut extra = json!({});
    if !args.no_extra && !failed.contains_key("shrike") && configs.iter().any(|c| c == "shrike") {
        if let Some(b) = broker.as_ref() {
            eprintln!("bench: [{:.0} s] latency of high-priority execs", t_start.elapsed().as_secs_f64());
            extra["latency"] = latency_phase(&agent, b, &work, args.quick)
                .unwrap_or_else(|e| json!({"error": e.to_string()}));
            eprintln!("bench: [{:.0} s] latency of alerts", t_start.elapsed().as_secs_f64());
            extra["alert_latency"] = alert_latency_phase(&agent, b, &work, args.quick)
                .unwrap_or_else(|e| json!({"error": e.to_string()}));
        }
        if let Some(b) = broker.as_ref() {
            let base_dir = work.join("baseline");
            let mut agents = vec![("", agent.as_path(), work.as_path())];
            if let Some(base) = args.baseline_agent.as_deref()
                && configs.iter().any(|c| c == "baseline")
            {
                let _ = fs::create_dir_all(&base_dir);
                agents.push(("baseline_", base, base_dir.as_path()));
            }
            for (prefix, a, dir) in agents {
                eprintln!("bench: [{:.0} s] {prefix}start and stop", t_start.elapsed().as_secs_f64());
                extra[format!("{prefix}startup")] =
                    startup::phase(a, b, dir, &env.tiny, if args.quick { 1 } else { 3 });
                eprintln!(
                    "bench: [{:.0} s] {prefix}loss search (exec, connect; ring buffer, perf)",
                    t_start.elapsed().as_secs_f64()
                );
                let setup = loss::Setup { agent: a, broker: b, dir, tiny: &env.tiny, quick: args.quick };
                extra[format!("{prefix}loss")] = loss::phase(&setup);
            }
            // The earlier "max_rate" figures: the ring buffer's.
            extra["max_rate"] = extra["loss"]["ringbuf"].clone();
            eprintln!("bench: [{:.0} s] spool flood (aggregation off)", t_start.elapsed().as_secs_f64());
            extra["spool_flood"] = crate::spool_bench::phase(&agent, b, &work, args.quick)
                .unwrap_or_else(|e| json!({"error": e.to_string()}));
        }
    }
    drop(broker);
    let _ = fs::write(stats_path, stats_before.trim());

    // Summaries.
    let wl_names: Vec<&str> = Wl::ALL.iter().map(|w| w.name()).collect();
    let rates = |cfg: &str, wl: &str| -> Vec<f64> {
        samples.iter().filter(|s| s.config == cfg && s.done.wl.name() == wl).map(|s| s.done.rate).collect()
    };
    let base: HashMap<&str, f64> = wl_names.iter().map(|w| (*w, median(&rates("none", w)))).collect();
    let ratio = |wl: &str, cfg: &str| -> Option<f64> {
        let m = median(&rates(cfg, wl));
        let b = base.get(wl).copied().unwrap_or(f64::NAN);
        (m.is_finite() && b.is_finite() && b > 0.0).then(|| m / b)
    };
    let mut summary = Vec::new();
    let mut table = String::new();
    table.push_str(&format!(
        "{:<10} {:<15} {:>10} {:>15} {:>6} {:>16} {:>8} {:>10} {:>9} {:>9}\n",
        "config",
        "workload",
        "ops/s",
        "min-max",
        "ratio",
        "recv/gen",
        "lost",
        "kern ns/ev",
        "cpu ns/ev",
        "B/ev"
    ));
    for cfg in &configs {
        for wl in &wl_names {
            let ss: Vec<&Sample> =
                samples.iter().filter(|s| &s.config == cfg && s.done.wl.name() == *wl).collect();
            if ss.is_empty() {
                continue;
            }
            let r = rates(cfg, wl);
            let (mn, mx) = r.iter().fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(*v), b.max(*v)));
            let gen_: u64 = ss.iter().map(|s| s.done.generated).sum();
            let rec: Option<u64> = ss.iter().map(|s| s.received).sum();
            let kern = median(
                &ss.iter().filter_map(|s| s.kernel["total_ns_per_event"].as_f64()).collect::<Vec<_>>(),
            );
            let cpu = median(&ss.iter().filter_map(|s| s.cpu_ns_per_event).collect::<Vec<_>>());
            let bytes = median(&ss.iter().filter_map(|s| s.bytes_per_event).collect::<Vec<_>>());
            let lost: Option<u64> =
                rounds_json.iter().filter(|r| r["config"] == cfg.as_str()).map(|r| r["lost"].as_u64()).sum();
            let rt = ratio(wl, cfg);
            table.push_str(&format!(
                "{:<10} {:<15} {:>10.0} {:>15} {:>6} {:>16} {:>8} {:>10} {:>9} {:>9}\n",
                cfg,
                wl,
                median(&r),
                format!("{mn:.0}-{mx:.0}"),
                rt.map_or("-".into(), |v| format!("{v:.2}")),
                rec.map_or(format!("-/{gen_}"), |n| format!("{n}/{gen_}")),
                lost.map_or("-".into(), |n| n.to_string()),
                if cfg == "none" || kern.is_nan() { "-".into() } else { format!("{kern:.0}") },
                if cpu.is_nan() || cfg == "none" { "-".into() } else { format!("{cpu:.0}") },
                if bytes.is_nan() { "-".into() } else { format!("{bytes:.1}") },
            ));
            // Per-program medians of ns per run.
            let mut per_prog: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for s in &ss {
                for p in s.kernel["programs"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    per_prog
                        .entry(text_of(&p["name"]))
                        .or_default()
                        .push(p["ns_per_run"].as_f64().unwrap_or(0.0));
                }
            }
            let per_prog: BTreeMap<String, f64> =
                per_prog.into_iter().map(|(k, v)| (k, median(&v))).collect();
            summary.push(json!({
                "config": cfg, "workload": wl, "rounds": ss.len(),
                "ops_per_s_median": median(&r), "ops_per_s_min": mn, "ops_per_s_max": mx,
                "ratio_to_none": rt, "generated": gen_, "received": rec, "lost_in_rounds": lost,
                "kernel_ns_per_event_median": kern, "kernel_ns_per_run_by_program": per_prog,
                "agent_cpu_ns_per_event_median": cpu, "wire_bytes_per_event_median": bytes,
            }));
        }
    }
    let mut mem = String::new();
    for cfg in &configs {
        let rr: Vec<&Value> = rounds_json.iter().filter(|r| r["config"] == cfg.as_str()).collect();
        let idle = median(&rr.iter().filter_map(|r| r["idle_rss_kb"].as_f64()).collect::<Vec<_>>());
        let peak = median(&rr.iter().filter_map(|r| r["peak_rss_kb"].as_f64()).collect::<Vec<_>>());
        let start_peak =
            median(&rr.iter().filter_map(|r| r["start_peak_rss_kb"].as_f64()).collect::<Vec<_>>());
        if idle.is_finite() {
            mem.push_str(&format!(
                "{cfg}: idle RSS {:.1} MB, peak RSS {:.1} MB under the workloads, {:.1} MB at start (medians over rounds)\n",
                idle / 1024.0,
                peak / 1024.0,
                start_peak / 1024.0
            ));
        }
        let per_record =
            median(&rr.iter().filter_map(|r| r["cpu_ns_per_record"].as_f64()).collect::<Vec<_>>());
        if per_record.is_finite() {
            let records = median(&rr.iter().filter_map(|r| r["records"].as_f64()).collect::<Vec<_>>());
            mem.push_str(&format!(
                "{cfg}: agent CPU {:.0} ns per kernel record, over whole rounds of all workloads \
                 ({:.0} records per round; median over rounds)\n",
                per_record, records
            ));
        }
    }
    // Files workloads: the creation rate swings with the machine (the
    // journal, other I/O, CPU steal), so each round's run with a tool is
    // compared with the no-agent run of the same round (adjacent in time):
    // the median of those pair ratios, their spread, and the rm -rf times.
    let mut files_md = String::new();
    for wl in [Wl::Files, Wl::FilesTmpfs] {
        let of = |cfg: &str, round: usize| {
            samples.iter().find(|s| s.config == cfg && s.round == round && s.done.wl == wl)
        };
        for cfg in configs.iter().filter(|c| c.as_str() != "none") {
            let pairs: Vec<(usize, f64)> = (0..rounds)
                .filter_map(|r| Some((r, of(cfg, r)?.done.rate / of("none", r)?.done.rate)))
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let ratios: Vec<f64> = pairs.iter().map(|p| p.1).collect();
            // Files per CPU-second of the creating thread (its syscalls'
            // kernel programs included), same-round pairs: insensitive to
            // what else runs on the machine.
            let cpu_rate = |c: &str, r: usize| {
                of(c, r).and_then(|s| Some(s.done.ops as f64 / s.done.cpu_secs.filter(|c| *c > 0.0)?))
            };
            let cpu_ratios: Vec<f64> =
                (0..rounds).filter_map(|r| Some(cpu_rate(cfg, r)? / cpu_rate("none", r)?)).collect();
            let cpu_us = |c: &str| {
                median(&(0..rounds).filter_map(|r| cpu_rate(c, r)).map(|v| 1e6 / v).collect::<Vec<_>>())
            };
            files_md.push_str(&format!(
                "{} {cfg}/none, CPU time of the creating thread per file: median {:.2} us none, {:.2} us \
                 {cfg}; same-round pairs (files per CPU-second): median {:.3}, quartiles {:.3}-{:.3} over {} rounds\n",
                wl.name(),
                cpu_us("none"),
                cpu_us(cfg),
                median(&cpu_ratios),
                percentile(&cpu_ratios, 25.0),
                percentile(&cpu_ratios, 75.0),
                cpu_ratios.len(),
            ));
            let rm = |c: &str| {
                median(
                    &samples
                        .iter()
                        .filter(|s| s.config == c && s.done.wl == wl)
                        .filter_map(|s| s.done.rm_secs)
                        .collect::<Vec<_>>(),
                )
            };
            let (lo, hi) = ratios.iter().fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(*v), b.max(*v)));
            let per_round: Vec<String> = pairs.iter().map(|(r, v)| format!("{r}: {v:.3}")).collect();
            files_md.push_str(&format!(
                "{} {cfg}/none, same-round pairs: median {:.3}, quartiles {:.3}-{:.3}, min-max {lo:.3}-{hi:.3} \
                 over {} rounds ({}); rm -rf of the {} files: median {:.2} s none, {:.2} s {cfg}\n",
                wl.name(),
                median(&ratios),
                percentile(&ratios, 25.0),
                percentile(&ratios, 75.0),
                ratios.len(),
                per_round.join(", "),
                env.counts.files,
                rm("none"),
                rm(cfg),
            ));
            summary.push(json!({
                "config": cfg, "workload": wl.name(), "pair_ratios": ratios,
                "pair_ratio_median": median(&ratios), "pair_ratio_p25": percentile(&ratios, 25.0),
                "pair_ratio_p75": percentile(&ratios, 75.0), "pair_ratio_min": lo, "pair_ratio_max": hi,
                "rm_secs_median": rm(cfg), "rm_secs_median_none": rm("none"),
                "cpu_pair_ratios": cpu_ratios, "cpu_pair_ratio_median": median(&cpu_ratios),
                "cpu_us_per_file_median": cpu_us(cfg), "cpu_us_per_file_median_none": cpu_us("none"),
            }));
        }
    }
    for (c, e) in &failed {
        notes.push(format!("{c} could not run: {e}"));
    }
    for (c, e) in &unavailable {
        notes.push(format!("{c} unavailable: {e}"));
    }
    for c in CONFIGS {
        if !configs.iter().any(|x| x == c) && !notes.iter().any(|n| n.contains(c)) {
            notes.push(format!("{c} not selected (--configs)"));
        }
    }
    let m = machine(&load_at_start);
    let elapsed = t_start.elapsed().as_secs_f64();
    let cmdline: Vec<String> = std::env::args().collect();
    let doc = json!({
        "command": format!("cargo xtask bench{}", cmdline.iter().skip(2).map(|a| format!(" {a}")).collect::<String>()),
        "quick": args.quick, "rounds": rounds, "configs": configs, "machine": m,
        "agent": agent.display().to_string(),
        "git": output("git", &["-C", &root.display().to_string(), "describe", "--always", "--dirty"]).unwrap_or_default().trim(),
        "counts": {"exec": env.counts.exec, "connect": env.counts.connect, "login": env.counts.login, "mixed_ops": env.counts.mixed_ops},
        "summary": summary, "rounds_detail": rounds_json,
        "samples": samples.iter().map(|s| json!({
            "config": s.config, "round": s.round, "workload": s.done.wl.name(), "generated": s.done.generated,
            "secs": s.done.secs, "ops_per_s": s.done.rate, "received": s.received, "bytes_per_event": s.bytes_per_event,
            "agent_cpu_ns_per_event": s.cpu_ns_per_event, "kernel": s.kernel,
            "rm_secs": s.done.rm_secs, "workload_cpu_secs": s.done.cpu_secs,
        })).collect::<Vec<_>>(),
        "latency": extra["latency"], "alert_latency": extra["alert_latency"], "max_rate": extra["max_rate"],
        "startup": extra["startup"], "loss": extra["loss"],
        "baseline_agent": args.baseline_agent.as_ref().map(|b| b.display().to_string()),
        "baseline_startup": extra["baseline_startup"], "baseline_loss": extra["baseline_loss"], "notes": notes,
        "seconds_total": elapsed, "seconds_excluding_setup": t_setup.elapsed().as_secs_f64(),
    });
    fs::write(out.join("bench.json"), serde_json::to_string_pretty(&doc)?)?;

    let plot_wls: Vec<&str> =
        wl_names.iter().copied().filter(|w| samples.iter().any(|s| s.done.wl.name() == *w)).collect();
    let plot_cfgs: Vec<String> = configs.iter().filter(|c| *c != "none").cloned().collect();
    let plot_files =
        draw_plots(&out, &plot_wls, &plot_cfgs, &ratio, &summary, &rounds_json, &extra, &mut notes);

    // Report.
    let mut md = String::new();
    md.push_str(&format!("Command: `{}`\n\n", doc["command"].as_str().unwrap_or("")));
    md.push_str(&format!(
        "Machine: {} CPUs ({}), {} MB, kernel {}; load average at start {} / at end {}; other load present: {}\n\n",
        m["nproc"], m["cpu_model"].as_str().unwrap_or(""), m["memory_mb"], m["kernel"].as_str().unwrap_or(""),
        m["loadavg_at_start"].as_str().unwrap_or(""), m["loadavg_at_end"].as_str().unwrap_or(""), m["other_load_present"]
    ));
    md.push_str(&format!(
        "Agent: `{}` (tree {}).\n\n",
        doc["agent"].as_str().unwrap_or(""),
        doc["git"].as_str().unwrap_or("?")
    ));
    md.push_str(&format!(
        "Rounds: {rounds}, configurations alternated in the order {}.\n\n",
        configs.join(", ")
    ));
    md.push_str("```\n");
    md.push_str(&table);
    md.push_str("```\n\n");
    md.push_str("Columns: ops/s median (min-max over rounds); ratio = median ops/s / no-agent median; recv/gen = events the tool reported / events the generator made, summed over rounds (Shrike: HitCount sums of the workload's events received by a subscriber of the broker); lost = the tool's own loss counter summed over the rounds (Shrike: kernel_lost, all kinds); kern ns/ev = BPF run time of the tool's programs / generated events (median); cpu ns/ev = the tool's CPU time / generated events (its threads' schedstat run time, ns); B/ev = MQTT payload bytes / generated event.\n\n");
    md.push_str("BPF cost per program run (median ns per run over rounds; kernel.bpf_stats_enabled):\n\n");
    for e in &summary {
        let Some(progs) = e["kernel_ns_per_run_by_program"].as_object() else { continue };
        if progs.is_empty() || !matches!(e["workload"].as_str(), Some("exec_true" | "connect")) {
            continue;
        }
        let list: Vec<String> =
            progs.iter().map(|(k, v)| format!("{k} {:.0}", v.as_f64().unwrap_or(f64::NAN))).collect();
        md.push_str(&format!(
            "- {} / {}: {}\n",
            e["config"].as_str().unwrap_or(""),
            e["workload"].as_str().unwrap_or(""),
            list.join(", ")
        ));
    }
    md.push('\n');
    if !files_md.is_empty() {
        md.push_str(&files_md);
        md.push('\n');
    }
    md.push_str(&mem);
    if let Some(l) = doc["latency"].as_object() {
        md.push_str(&format!(
            "\nHigh-priority exec latency, syscall to subscriber: p50 {:.0} ms, p99 {:.0} ms ({} of {} received)\n",
            l.get("p50_ms").and_then(Value::as_f64).unwrap_or(f64::NAN),
            l.get("p99_ms").and_then(Value::as_f64).unwrap_or(f64::NAN),
            l.get("received").cloned().unwrap_or_default(),
            l.get("spawned").cloned().unwrap_or_default()
        ));
    }
    if let Some(l) = doc["alert_latency"].as_object() {
        md.push_str(&format!(
            "Alert latency (exec-from-tmp), syscall to subscriber: p50 {:.0} ms, p99 {:.0} ms ({} of {} received)\n",
            l.get("p50_ms").and_then(Value::as_f64).unwrap_or(f64::NAN),
            l.get("p99_ms").and_then(Value::as_f64).unwrap_or(f64::NAN),
            l.get("received").cloned().unwrap_or_default(),
            l.get("spawned").cloned().unwrap_or_default()
        ));
    }
    md.push_str(&start_stop_md("shrike", &doc["startup"], &rounds_json));
    if doc["baseline_startup"].is_object() {
        md.push_str(&start_stop_md("baseline", &doc["baseline_startup"], &[]));
    }
    md.push_str(&loss_md("shrike", &doc["loss"]));
    md.push_str(&loss_md("baseline", &doc["baseline_loss"]));
    if !plot_files.is_empty() {
        md.push_str("\nPlots (in the same folder):\n\n");
        for (f, what) in &plot_files {
            md.push_str(&format!("- `{f}`: {what}\n"));
        }
    }
    if !notes.is_empty() {
        md.push_str("\nNotes:\n");
        for n in &notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    md.push_str(&format!(
        "\nTotal time {elapsed:.0} s ({:.0} s after setup and build).\n",
        t_setup.elapsed().as_secs_f64()
    ));
    fs::write(out.join("results.md"), &md)?;
    println!("{md}");
    println!("bench: results in {}", out.display());
    Ok(())
}
