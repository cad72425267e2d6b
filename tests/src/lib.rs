//! Harness of Shrike's privileged integration tests: builds the agent, runs
//! `shrike events` against the real kernel, collects its JSON lines, waits for
//! the events a test caused, and stops the agent to read its final counters.
//!
//! Tests share kernel state (probes, ports, users): run them with
//! `--test-threads=1`. Every test starts with `if !require_root() { return; }`.

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Condvar, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
pub use serde_json::{Value, json};

pub mod broker;
pub mod postgres;

/// Default bound of every wait for an event.
pub const WAIT: Duration = Duration::from_secs(10);

/// The path of the test helper binary (only integration tests of this package
/// have it, hence a macro).
#[macro_export]
macro_rules! helper_bin {
    () => {
        env!("CARGO_BIN_EXE_shrike-test-helper")
    };
}

/// Declares, for each `NAME`, the tests `NAME::ringbuf` and `NAME::perf`, each
/// running `NAME(transport)` after [`require_root`].
#[macro_export]
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn ringbuf() {
                if $crate::require_root() {
                    super::$name("ringbuf");
                }
            }

            #[test]
            fn perf() {
                if $crate::require_root() {
                    super::$name("perf");
                }
            }
        }
    )*};
}

// ---------------------------------------------------------------------------
// Privilege gate

/// True when these tests can run here (root, eBPF loads). Otherwise: with `CI`
/// set, panics with the reason (CI must fail loudly); without it, prints
/// `SKIPPED: <reason>` on stderr and returns false (the test returns early).
pub fn require_root() -> bool {
    static GATE: OnceLock<Result<(), String>> = OnceLock::new();
    match GATE.get_or_init(privilege_check) {
        Ok(()) => true,
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("privileged integration tests cannot run (CI is set): {reason}")
        }
        Err(reason) => {
            // Straight to the process's stderr: the test harness captures eprintln!.
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {reason}");
            false
        }
    }
}

fn privilege_check() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!("not root (euid {euid}): the kernel probes need root"));
    }
    bpf_can_load().map_err(|e| format!("eBPF programs cannot be loaded here: {e}"))
}

/// Loads the smallest tracepoint program (`r0 = 0; exit`) with bpf(2).
fn bpf_can_load() -> Result<(), String> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
    // mov64 r0, 0 ; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_TRACEPOINT.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: bpf(BPF_PROG_LOAD) reads the attribute and the buffers it points
    // to, which outlive the call.
    let fd =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len() as libc::c_uint) };
    if fd < 0 {
        return Err(format!("bpf(BPF_PROG_LOAD): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: closes the program fd just returned.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

// ---------------------------------------------------------------------------
// Building and running the agent

/// The workspace root (this crate is `tests/` in it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `shrike` binary: `$SHRIKE_BIN`, or built once per test process with
/// `cargo build -p shrike` (cargo from `$CARGO`).
pub fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("SHRIKE_BIN") {
        Some(p) => PathBuf::from(p),
        None => build_agent().unwrap_or_else(|e| panic!("cannot build the agent: {e:#}")),
    })
}

fn build_agent() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let out = Command::new(&cargo)
        .args(["build", "-p", "shrike", "--bin", "shrike", "--message-format=json-render-diagnostics"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cargo:?}"))?;
    if !out.status.success() {
        bail!("cargo build -p shrike failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let mut exe = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "shrike"
            && let Some(p) = msg["executable"].as_str()
        {
            exe = Some(PathBuf::from(p));
        }
    }
    let exe = exe.context("cargo reported no `shrike` executable")?;
    eprintln!("[harness] agent built in {:.1?}: {}", started.elapsed(), exe.display());
    Ok(exe)
}

#[derive(Default)]
struct State {
    events: Vec<Value>,
    stats: Option<Value>,
    /// Stdout lines that are not JSON objects (must never happen).
    bad_lines: Vec<String>,
    stdout_closed: bool,
    stderr: Vec<String>,
    ready: bool,
    stderr_closed: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    paused: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running `shrike events`. Killed (SIGKILL) when dropped without `stop`.
pub struct Agent {
    child: Option<Child>,
    pid: u32,
    args: Vec<String>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// The agent's final `{"kind":"stats",...}` line.
#[derive(Clone, Debug)]
pub struct Stats(pub Value);

impl Stats {
    fn count(&self, field: &str, kind: &str) -> u64 {
        self.0[field][kind].as_u64().unwrap_or_else(|| panic!("stats have no {field}.{kind}: {}", self.0))
    }
    /// Records of `kind` the kernel could not write to the transport.
    pub fn lost(&self, kind: &str) -> u64 {
        self.count("kernel_lost", kind)
    }
    /// Records of `kind` the kernel wrote to the transport.
    pub fn sent(&self, kind: &str) -> u64 {
        self.count("kernel_sent", kind)
    }
    pub fn total_lost(&self) -> u64 {
        self.0["kernel_lost"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0)
    }
    /// Prints the kernel's lost counters to stderr when any is non-zero.
    pub fn report_losses(&self) {
        if self.total_lost() > 0 {
            eprintln!("[harness] the kernel lost records during this test: {}", self.0["kernel_lost"]);
        }
    }

    pub fn field(&self, name: &str) -> u64 {
        self.0[name].as_u64().unwrap_or_else(|| panic!("stats have no {name}: {}", self.0))
    }
    pub fn transport(&self) -> &str {
        self.0["transport"].as_str().unwrap_or("")
    }
}

impl Agent {
    /// Starts `shrike events ARGS...` and waits until it logs `shrike ready`.
    pub fn start(args: &[&str]) -> Agent {
        let bin = agent_bin();
        let mut child = Command::new(bin)
            .arg("events")
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("SHRIKE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let pid = child.id();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            paused: AtomicBool::new(false),
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let threads = vec![
            std::thread::spawn({
                let shared = Arc::clone(&shared);
                move || read_stdout(stdout, &shared)
            }),
            std::thread::spawn({
                let shared = Arc::clone(&shared);
                move || read_stderr(stderr, &shared)
            }),
        ];
        let mut agent = Agent {
            child: Some(child),
            pid,
            args: args.iter().map(|s| s.to_string()).collect(),
            shared,
            threads,
        };
        let started = Instant::now();
        agent.wait_ready(Duration::from_secs(60));
        eprintln!("[harness] shrike events {:?} ready in {:.1?}", agent.args, started.elapsed());
        agent
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut st = self.shared.lock();
        loop {
            if st.ready {
                return;
            }
            if st.stderr_closed || Instant::now() >= deadline {
                let why = if st.stderr_closed { "exited" } else { "timed out" };
                let log = st.stderr.join("\n");
                drop(st);
                let status = self.kill();
                panic!(
                    "shrike events {:?} {why} before `shrike ready` ({status:?}); its log:\n{log}",
                    self.args
                );
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, Duration::from_millis(100))
                .map(|r| r.0)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// The agent's log (its stderr lines) so far.
    pub fn log(&self) -> Vec<String> {
        self.shared.lock().stderr.clone()
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A copy of every event received so far.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    /// Events received so far that match `pred`.
    pub fn matching(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.shared.lock().events.iter().filter(|e| pred(e)).cloned().collect()
    }

    /// Waits (at most [`WAIT`]) for an event matching `pred`; panics naming `what`.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(WAIT, what, pred)
    }

    pub fn wait_for_within(&self, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        self.wait_until(limit, what, |events| {
            found = events.iter().find(|e| pred(e)).cloned();
            found.is_some()
        });
        found.expect("wait_until returned")
    }

    /// Waits until at least `n` events match `pred`, then returns them all.
    pub fn wait_for_count(&self, n: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut found = Vec::new();
        self.wait_until(WAIT, what, |events| {
            found = events.iter().filter(|e| pred(e)).cloned().collect();
            found.len() >= n
        });
        found
    }

    /// Waits until `done(events)` holds, rechecking as events arrive.
    pub fn wait_until(&self, limit: Duration, what: &str, mut done: impl FnMut(&[Value]) -> bool) {
        let deadline = Instant::now() + limit;
        let mut st = self.shared.lock();
        let mut seen = usize::MAX;
        loop {
            if seen != st.events.len() {
                seen = st.events.len();
                if done(&st.events) {
                    return;
                }
            }
            let now = Instant::now();
            if now >= deadline || st.stdout_closed {
                let why = if st.stdout_closed { "the agent's output ended" } else { "timed out" };
                let tail: Vec<String> =
                    st.events.iter().rev().take(15).rev().map(|e| e.to_string()).collect();
                let log: Vec<&String> = st.stderr.iter().rev().take(10).collect();
                panic!(
                    "{why} after {limit:?} waiting for {what}; {} events received, the last ones:\n{}\nagent log (newest first):\n{}",
                    st.events.len(),
                    tail.join("\n"),
                    log.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
                );
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(200)))
                .map(|r| r.0)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Like [`Agent::wait_until`], but returns false instead of panicking.
    pub fn try_wait_until(&self, limit: Duration, mut done: impl FnMut(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut st = self.shared.lock();
        loop {
            if done(&st.events) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.stdout_closed {
                return false;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(200)))
                .map(|r| r.0)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Number of events received so far.
    pub fn event_count(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// Freezes the agent (SIGSTOP): the kernel keeps writing records, which
    /// pile up in its buffers until [`Agent::resume`].
    pub fn suspend(&self) {
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(self.pid as i32, libc::SIGSTOP) };
    }

    /// Thaws the agent (SIGCONT).
    pub fn resume(&self) {
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(self.pid as i32, libc::SIGCONT) };
    }

    /// Stops reading the agent's stdout: its pipe fills, its writes block and
    /// its kernel buffer fills (to exercise the loss accounting).
    pub fn pause_reading(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume_reading(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// SIGINT, waits (bounded) for a clean exit, and returns the final stats.
    /// Also checks every stdout line was JSON and no event came from the agent.
    pub fn stop(self) -> Stats {
        self.stop_with_events().0
    }

    /// [`Agent::stop`], also returning every event received (drain included).
    pub fn stop_with_events(mut self) -> (Stats, Vec<Value>) {
        self.resume_reading();
        self.resume();
        let asked = Instant::now();
        // SAFETY: signals the child we started (still unreaped, so its pid is ours).
        unsafe { libc::kill(self.pid as i32, libc::SIGINT) };
        let status = self.wait_exit(Duration::from_secs(30));
        eprintln!("[harness] shrike events {:?} exited {:.1?} after SIGINT", self.args, asked.elapsed());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let st = self.shared.lock();
        let log = st.stderr.join("\n");
        assert!(
            status.success(),
            "shrike events {:?} exited with {status} after SIGINT; log:\n{log}",
            self.args
        );
        assert!(st.bad_lines.is_empty(), "non-JSON lines on stdout: {:?}", st.bad_lines);
        let own: Vec<&Value> = st.events.iter().filter(|e| e["pid"] == self.pid).take(3).collect();
        assert!(own.is_empty(), "the agent reported its own activity: {own:?}");
        let stats = st.stats.clone().unwrap_or_else(|| panic!("no stats line after SIGINT; log:\n{log}"));
        assert_eq!(stats["decode_errors"], 0, "undecodable kernel records: {stats}");
        (Stats(stats), st.events.clone())
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("agent running");
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return status;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let status = self.kill();
                    panic!("shrike events did not exit within {limit:?} of SIGINT (killed: {status:?})");
                }
                Err(e) => panic!("waiting for the agent: {e}"),
            }
        }
    }

    fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.resume_reading();
        self.kill();
    }
}

fn read_stdout(out: impl Read, shared: &Shared) {
    let mut reader = BufReader::with_capacity(1 << 16, out);
    let mut line = String::new();
    loop {
        while shared.paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = line.trim_end_matches('\n');
        let mut st = shared.lock();
        match serde_json::from_str::<Value>(text) {
            Ok(v) if v["kind"] == "stats" => st.stats = Some(v),
            Ok(v) if v.is_object() => st.events.push(v),
            _ => st.bad_lines.push(text.to_owned()),
        }
        drop(st);
        shared.cond.notify_all();
    }
    shared.lock().stdout_closed = true;
    shared.cond.notify_all();
}

fn read_stderr(err: impl Read, shared: &Shared) {
    for line in BufReader::new(err).lines() {
        let Ok(line) = line else { break };
        let mut st = shared.lock();
        if line.contains("shrike ready") {
            st.ready = true;
        }
        st.stderr.push(line);
        drop(st);
        shared.cond.notify_all();
    }
    shared.lock().stderr_closed = true;
    shared.cond.notify_all();
}

// ---------------------------------------------------------------------------
// Matching events

/// `ev` is of `kind` and from process `pid`.
pub fn is(ev: &Value, kind: &str, pid: u32) -> bool {
    ev["kind"] == kind && ev["pid"] == pid
}

/// Events of `kind` from `pid`, in kernel time order.
pub fn of(events: &[Value], kind: &str, pid: u32) -> Vec<Value> {
    let mut v: Vec<Value> = events.iter().filter(|e| is(e, kind, pid)).cloned().collect();
    v.sort_by_key(|e| e["ktime_ns"].as_u64().unwrap_or(0));
    v
}

/// `ev` is an exec whose argv contains `marker`.
pub fn exec_with_marker(ev: &Value, marker: &str) -> bool {
    ev["kind"] == "exec" && ev["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == marker))
}

/// Checks an enrichment field (`ppid`, `exe`, `parent_exe`) of `ev`: it must
/// be `want`. Over perf buffers (one per CPU, read independently) the agent
/// may handle a record before an earlier one from another CPU (a child's exit
/// before its fork) and then not know the process: there the field may be
/// missing, a known agent bug that `exec.rs`'s
/// `short_lived_children_keep_their_parent::perf` asserts on; when present it
/// must still be exact.
pub fn assert_enriched(ev: &Value, field: &str, want: impl Into<Value>, transport: &str) {
    let want = want.into();
    if transport == "perf" && ev.get(field).is_none() {
        return;
    }
    assert_eq!(ev[field], want, "{field} of {ev}");
}

/// A string unique to this test run, for argv markers and names.
pub fn marker(tag: &str) -> String {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{}-{nanos:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The canonical path of a file (how /proc/PID/exe names it).
pub fn canonical(p: impl AsRef<Path>) -> String {
    std::fs::canonicalize(p.as_ref())
        .unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.as_ref().display()))
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------
// Helper processes

/// Output of a helper operation: `op key=value ...`.
#[derive(Debug, Clone)]
pub struct Line {
    pub op: String,
    pub fields: Vec<(String, String)>,
}

impl Line {
    pub fn parse(text: &str) -> Line {
        let mut words = text.split_whitespace();
        let op = words.next().unwrap_or_default().to_owned();
        let fields =
            words.filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect();
        Line { op, fields }
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("helper line {self:?} has no {key}"))
    }

    pub fn num<T: std::str::FromStr>(&self, key: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        self.get(key).parse().unwrap_or_else(|e| panic!("helper line {self:?}: {key}: {e:?}"))
    }
}

/// A helper process; killed when dropped.
pub struct Helper {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Helper {
    pub fn spawn(cmd: &mut Command) -> Helper {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Helper { child, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the helper prints (panics at EOF).
    pub fn line(&mut self) -> Line {
        let mut s = String::new();
        let n = self.out.read_line(&mut s).expect("reading the helper's output");
        assert!(n > 0, "the helper (pid {}) ended its output early", self.child.id());
        Line::parse(s.trim_end())
    }

    /// Waits (at most 60 s) for the helper to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "helper pid {} did not exit", self.child.id());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the helper with `args` to completion: (pid, its output lines, status).
pub fn run_helper(helper: &str, args: &[&str]) -> (u32, Vec<Line>, ExitStatus) {
    run_to_end(Command::new(helper).args(args))
}

/// Runs `cmd` (stdout piped) to completion: (pid, its output lines, status).
pub fn run_to_end(cmd: &mut Command) -> (u32, Vec<Line>, ExitStatus) {
    let mut h = Helper::spawn(cmd);
    let pid = h.pid();
    let mut text = String::new();
    h.out.read_to_string(&mut text).expect("reading the helper's output");
    let status = h.wait();
    (pid, text.lines().map(Line::parse).collect(), status)
}

/// A TCP port that was free a moment ago on `addr`.
pub fn free_port(addr: &str) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

// ---------------------------------------------------------------------------
// Cleanup guards

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("shrike-{}", marker(tag)));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file installed for the test (e.g. in /etc/pam.d), removed when dropped.
pub struct InstalledFile(pub PathBuf);

impl InstalledFile {
    pub fn new(path: impl Into<PathBuf>, content: &str) -> InstalledFile {
        let path = path.into();
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        InstalledFile(path)
    }
}

impl Drop for InstalledFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A local user with a password, created with useradd/chpasswd and deleted
/// (with its home) when dropped.
pub struct TestUser {
    pub name: String,
    pub password: String,
}

impl TestUser {
    pub fn create(name: &str, password: &str) -> TestUser {
        // A user left by an interrupted run is removed first.
        remove_user(name);
        run_ok(Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", name]));
        let user = TestUser { name: name.into(), password: password.into() };
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run chpasswd: {e}"));
        {
            use std::io::Write;
            let mut stdin = chpasswd.stdin.take().expect("piped");
            writeln!(stdin, "{name}:{password}").expect("writing to chpasswd");
        }
        let st = chpasswd.wait().expect("chpasswd");
        assert!(st.success(), "chpasswd failed: {st}");
        user
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        remove_user(&self.name);
    }
}

fn remove_user(name: &str) {
    let exists = Command::new("id").arg(name).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if exists.is_ok_and(|s| s.success()) {
        let _ = Command::new("userdel").args(["--force", "--remove", name]).stderr(Stdio::null()).status();
    }
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct Daemon(pub Child);

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd`, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails (panics) naming the missing program, for tests that need one.
pub fn require_program(path: &str, package: &str) {
    assert!(Path::new(path).exists(), "{path} is missing: install the Debian package `{package}`");
}
