//! The built-in detectors against the real kernel: each test makes the
//! activity a detector exists for (a binary run from /tmp, a shell spawned by
//! a server that accepted a connection, failed logins through real PAM, a
//! reverse shell on a real socket...), then checks the `"kind":"alert"` line
//! `shrike events` printed: its rule, its severity, and that its `event` is
//! the triggering event (pid, filename). Where a look-alike exists, it is run
//! too and must not fire.
//!
//! Needs the Debian packages pamtester and passwd (login and account tests).

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use shrike_tests::{
    Agent, Helper, InstalledFile, TestUser, Value, helper_bin, is, marker, require_program, run_helper,
    run_to_end,
};

const DETECT_HELPER: &str = env!("CARGO_BIN_EXE_detect-helper");

/// An alert of `rule` whose triggering event matches `pred`.
fn is_alert(e: &Value, rule: &str, pred: impl Fn(&Value) -> bool) -> bool {
    e["kind"] == "alert" && e["rule"] == rule && pred(&e["event"])
}

/// Waits for the alert of `rule` about an event matching `pred`; checks the
/// fields every built-in alert has.
fn wait_alert(agent: &Agent, rule: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let a = agent.wait_for(&format!("a {rule} alert about {what}"), |e| is_alert(e, rule, &pred));
    assert_eq!(a["source"], "builtin", "{a}");
    assert!(a["title"].as_str().is_some_and(|t| !t.is_empty()), "{a}");
    assert!(a["description"].as_str().is_some_and(|t| t.len() > 40), "{a}");
    assert!(a["remediation"].as_str().is_some_and(|t| !t.is_empty()), "{a}");
    assert!(
        a["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t.as_str().is_some_and(|t| t.starts_with("attack.t")))),
        "{a}"
    );
    // The header is the triggering event's.
    assert_eq!(a["pid"], a["event"]["pid"], "{a}");
    assert_eq!(a["time"], a["event"]["time"], "{a}");
    a
}

/// No alert of `rule` about an event matching `pred`, once the event the
/// look-alike made (`seen`) has arrived and a moment has passed.
fn assert_no_alert(
    agent: &Agent,
    rule: &str,
    what: &str,
    seen: impl Fn(&Value) -> bool,
    pred: impl Fn(&Value) -> bool,
) {
    agent.wait_for(&format!("the event of {what}"), seen);
    std::thread::sleep(Duration::from_millis(500));
    let got = agent.matching(|e| is_alert(e, rule, &pred));
    assert!(got.is_empty(), "{what} fired {rule}: {got:#?}");
}

fn exec_of(pid: u32, filename: &str) -> impl Fn(&Value) -> bool {
    let filename = filename.to_owned();
    move |e: &Value| is(e, "exec", pid) && e["filename"] == filename.as_str()
}

fn start(transport: &str) -> Agent {
    Agent::start(&["--transport", transport])
}

// Each detector over both transports: per-CPU perf buffers may hand a
// process's fork after its exec, which the stateful detectors must survive.
shrike_tests::both_transports!(
    exec_from_tmp,
    shell_from_service,
    shell_from_service_started_before_the_agent,
    login_brute_force_then_success,
    user_account_change,
    new_listener,
    privilege_escalation,
    reverse_shell,
    crypto_miner,
    agent_tampering,
);

/// Copies /usr/bin/true to `dir` as `name`, executable.
fn copy_true(dir: &std::path::Path, name: &str) -> String {
    let p = dir.join(name);
    std::fs::copy("/usr/bin/true", &p).unwrap_or_else(|e| panic!("copy to {}: {e}", p.display()));
    p.to_string_lossy().into_owned()
}

/// A directory removed when dropped.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(parent: &str, tag: &str) -> Dir {
        let p = std::path::Path::new(parent).join(format!("shrike-{}", marker(tag)));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn exec_from_tmp(transport: &str) {
    let agent = start(transport);
    let tmp = Dir::new("/tmp", "xtmp");
    let staged = copy_true(&tmp.0, "payload");
    let (pid, _, st) = run_to_end(&mut Command::new(&staged));
    assert!(st.success());
    let a = wait_alert(&agent, "exec-from-tmp", "the binary run from /tmp", exec_of(pid, &staged));
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["event"]["kind"], "exec", "{a}");
    assert_eq!(a["event"]["exe"], staged.as_str(), "{a}");
    assert_eq!(a["details"]["reason"], "staging_dir", "{a}");

    // The same binary elsewhere: no alert.
    let elsewhere = Dir::new(shrike_tests::workspace_root().join("target").to_str().expect("utf-8"), "xok");
    let fine = copy_true(&elsewhere.0, "tool");
    let (pid, _, st) = run_to_end(&mut Command::new(&fine));
    assert!(st.success());
    assert_no_alert(&agent, "exec-from-tmp", "a binary outside /tmp", exec_of(pid, &fine), |e| {
        e["pid"] == pid
    });

    // Fileless: sleep copied into a memfd and run with fexecve. The exec's
    // filename is empty; the executable (/proc/PID/exe, read while the
    // process sleeps) names the memfd.
    let mut h = Helper::spawn(Command::new(DETECT_HELPER).args(["memfd-exec", "/usr/bin/sleep", "1"]));
    assert_eq!(h.line().op, "memfd");
    let pid = h.pid();
    let a = wait_alert(&agent, "exec-from-tmp", "the memfd exec", |e| {
        is(e, "exec", pid) && e["execveat"] == true
    });
    assert_eq!(a["event"]["exe"], "/memfd:shrike-test (deleted)", "{a}");
    assert_eq!(a["details"]["reason"], "memfd", "{a}");
    assert!(h.wait().success());
    agent.stop();
}

fn shell_from_service(transport: &str) {
    let agent = start(transport);
    // A server accepts a connection, then starts `sh -c true`.
    let mut server = Helper::spawn(Command::new(DETECT_HELPER).args([
        "serve-exec",
        "127.0.0.1",
        "0",
        "/bin/sh",
        "-c",
        "true",
    ]));
    let port: u16 = server.line().num("port");
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the server");
    assert_eq!(server.line().op, "accept");
    let spawned = server.line();
    let child: u32 = spawned.num("pid");
    assert_eq!(spawned.get("status"), "0");
    let a = wait_alert(&agent, "shell-from-service", "the server's shell", exec_of(child, "/bin/sh"));
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["event"]["argv"], shrike_tests::json!(["/bin/sh", "-c", "true"]), "{a}");
    assert_eq!(a["details"]["service_pid"], server.pid().to_string(), "{a}");
    assert_eq!(a["details"]["depth"], "1", "{a}");
    assert!(a["details"]["service_activity"].as_str().is_some_and(|s| s.contains("accepted")), "{a}");
    server.wait();

    // The same shell from a process that never served: no alert.
    let (pid, _, st) = run_to_end(Command::new("/bin/sh").args(["-c", "true"]));
    assert!(st.success());
    assert_no_alert(&agent, "shell-from-service", "a shell of the test", exec_of(pid, "/bin/sh"), |e| {
        e["pid"] == pid
    });
    agent.stop();
}

/// A server that was listening, and had accepted its connection, before the
/// agent started: the agent finds it from /proc (its listening socket) and
/// still flags the shell it starts.
fn shell_from_service_started_before_the_agent(transport: &str) {
    let mut server = Helper::spawn(Command::new(DETECT_HELPER).args([
        "serve-exec-on-usr1",
        "127.0.0.1",
        "0",
        "/bin/sh",
        "-c",
        "true",
    ]));
    let port: u16 = server.line().num("port");
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the server");
    assert_eq!(server.line().op, "accept");
    let agent = start(transport);
    server.signal(libc::SIGUSR1);
    assert_eq!(server.line().op, "signal");
    let child: u32 = server.line().num("pid");
    let a = wait_alert(&agent, "shell-from-service", "the older server's shell", exec_of(child, "/bin/sh"));
    assert_eq!(a["details"]["service_pid"], server.pid().to_string(), "{a}");
    assert!(
        a["details"]["service_activity"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("port {port} at start-up"))),
        "{a}"
    );
    server.wait();
    agent.stop();
}

const PAM_SERVICE: &str = "shrike-detect-test";
const PAMTESTER: &str = "/usr/bin/pamtester";

/// pamtester's authenticate for `user` with `password`: (pid, success).
fn pamtester(user: &str, password: &str) -> (u32, bool) {
    pamtester_from(user, password, None)
}

/// The same, with PAM_RHOST set to `rhost` (as sshd sets it).
fn pamtester_from(user: &str, password: &str, rhost: Option<&str>) -> (u32, bool) {
    let item = rhost.map(|h| format!("rhost={h}"));
    let mut child = Command::new(PAMTESTER)
        .args(item.iter().flat_map(|i| ["-I", i.as_str()]))
        .args([PAM_SERVICE, user, "authenticate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running pamtester");
    writeln!(child.stdin.take().expect("piped"), "{password}").expect("writing the password");
    let pid = child.id();
    (pid, child.wait().expect("pamtester").success())
}

fn login_brute_force_then_success(transport: &str) {
    require_program(PAMTESTER, "pamtester");
    let _service = InstalledFile::new(
        format!("/etc/pam.d/{PAM_SERVICE}"),
        "# Installed by Shrike's integration tests; removed when they end.\n\
         auth required pam_unix.so nodelay\n\
         account required pam_unix.so\n",
    );
    let user = TestUser::create("shrike-bf-test", "Corr3ct-horse-pw");
    let agent = start(transport);
    let mut failed = Vec::new();
    for _ in 0..6 {
        let (pid, ok) = pamtester(&user.name, "wrong-password");
        assert!(!ok, "a wrong password was accepted");
        failed.push(pid);
    }
    let (ok_pid, ok) = pamtester(&user.name, &user.password);
    assert!(ok, "the right password was refused");

    let login_of = |pid: u32| {
        let name = user.name.clone();
        move |e: &Value| {
            is(e, "login", pid) && e["login_user"] == name.as_str() && e["step"] == "authenticate"
        }
    };
    // The fifth failure crosses the threshold (5 in 60 s); the sixth does not fire again.
    let bf = wait_alert(&agent, "login-brute-force", "the fifth failure", login_of(failed[4]));
    assert_eq!(bf["severity"], "medium", "{bf}");
    assert_eq!(bf["event"]["result"], "failure", "{bf}");
    assert_eq!(bf["details"]["user"], user.name.as_str(), "{bf}");
    assert_eq!(bf["details"]["failures"], "5", "{bf}");
    let after = wait_alert(&agent, "login-after-failures", "the good password", login_of(ok_pid));
    assert_eq!(after["severity"], "high", "{after}");
    assert_eq!(after["event"]["result"], "success", "{after}");
    assert_eq!(after["details"]["user"], user.name.as_str(), "{after}");
    let all_bf = agent.matching(|e| {
        e["kind"] == "alert"
            && e["rule"] == "login-brute-force"
            && e["event"]["login_user"] == user.name.as_str()
    });
    assert_eq!(all_bf.len(), 1, "one alert per user and window: {all_bf:#?}");

    // Password spraying: one failure for each of five users, all from one
    // remote host: the host crosses the threshold.
    let host = "203.0.113.77";
    let mut sprayed = Vec::new();
    for i in 0..5 {
        let (pid, ok) = pamtester_from(&format!("{}-spray{i}", user.name), "guess", Some(host));
        assert!(!ok);
        sprayed.push(pid);
    }
    let a = wait_alert(&agent, "login-brute-force", "the spraying host", |e| {
        is(e, "login", sprayed[4]) && e["rhost"] == host
    });
    assert_eq!(a["details"]["remote_host"], host, "{a}");
    assert_eq!(a["details"].get("user"), None, "no user failed 5 times: {a}");
    agent.stop();
}

fn user_account_change(transport: &str) {
    let agent = start(transport);
    let user = TestUser::create("shrike-uac-test", "Some-pw-123");
    let is_tool = |tool: &'static str, name: String| {
        move |e: &Value| {
            e["kind"] == "exec"
                && e["filename"].as_str().is_some_and(|f| f.ends_with(&format!("/{tool}")))
                && e["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == name.as_str()))
        }
    };
    let a = wait_alert(&agent, "user-account-change", "useradd", is_tool("useradd", user.name.clone()));
    assert_eq!(a["severity"], "medium", "{a}");
    assert_eq!(a["details"]["program"], "useradd", "{a}");
    shrike_tests::run_ok(Command::new("usermod").args(["--comment", "shrike detect test", &user.name]));
    let a = wait_alert(&agent, "user-account-change", "usermod", is_tool("usermod", user.name.clone()));
    assert_eq!(a["event"]["argv"][0], "usermod", "{a}");
    agent.stop();
}

fn new_listener(transport: &str) {
    let agent = start(transport);
    let mut h = Helper::spawn(Command::new(helper_bin!()).args(["listen", "127.0.0.1", "0"]));
    let line = h.line();
    let port: u16 = line.num("port");
    let a = wait_alert(&agent, "new-listener", "the helper's port", |e| is(e, "listen", h.pid()));
    assert_eq!(a["severity"], "medium", "{a}");
    // Bound to port 0, the kernel picked the port: the event has no port
    // (bind said 0), the detector read it from /proc/PID/fd.
    assert_eq!(a["event"]["fd"], line.num::<i64>("fd"), "{a}");
    assert_eq!(a["details"]["port"], port.to_string(), "{a}");
    drop(TcpStream::connect(("127.0.0.1", port)));
    h.wait();
    agent.stop();
}

fn privilege_escalation(transport: &str) {
    let agent = start(transport);
    // Root drops to uid 1000 keeping saved uid 0, then takes 0 back.
    let (pid, lines, st) =
        run_helper(helper_bin!(), &["setresuid", "1000", "1000", "0", "setresuid", "0", "0", "0"]);
    assert!(st.success());
    assert!(lines.iter().all(|l| l.get("ret") == "0"), "{lines:?}");
    let a = wait_alert(&agent, "privilege-escalation", "the regained root", |e| {
        is(e, "privilege", pid) && e["new_uid"] == 0 && e["old_uid"] == 1000
    });
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["event"]["call"], "setresuid", "{a}");
    assert_eq!(a["event"]["exe"], helper_bin!(), "{a}");
    // The drop itself did not fire: one alert for the process.
    std::thread::sleep(Duration::from_millis(300));
    let n = agent
        .matching(|e| e["kind"] == "alert" && e["rule"] == "privilege-escalation" && e["pid"] == pid)
        .len();
    assert_eq!(n, 1);
    agent.stop();
}

/// A reverse shell: the helper connects to the test's listener and execs
/// `sh -c 'sleep 1'` with the socket as its stdin and stdout.
fn reverse_shell_to(agent: &Agent, listen_on: &str, connect_to: &str) -> Value {
    let l = TcpListener::bind((listen_on, 0)).expect("listener");
    let port = l.local_addr().expect("addr").port().to_string();
    let mut h = Helper::spawn(Command::new(DETECT_HELPER).args([
        "connect-exec",
        connect_to,
        &port,
        "/bin/sh",
        "-c",
        "sleep 1",
    ]));
    let (_conn, _) = l.accept().expect("accepting the shell's connection");
    assert_eq!(h.line().op, "connected");
    let pid = h.pid();
    let a = wait_alert(agent, "reverse-shell", "the shell on a socket", exec_of(pid, "/bin/sh"));
    h.wait();
    a
}

fn reverse_shell(transport: &str) {
    let agent = start(transport);
    let a = reverse_shell_to(&agent, "127.0.0.1", "127.0.0.1");
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["details"]["signal"], "stdio_socket", "{a}");
    assert_eq!(a["details"]["stdio_socket"], "stdin,stdout", "{a}");
    assert_eq!(a["event"]["argv"], shrike_tests::json!(["/bin/sh", "-c", "sleep 1"]), "{a}");

    // Through a non-loopback address of this machine, the connection before
    // the exec counts too: both signals, critical.
    if let Some(ip) = global_ipv4() {
        let a = reverse_shell_to(&agent, "0.0.0.0", &ip);
        assert_eq!(a["severity"], "critical", "{a}");
        assert_eq!(a["details"]["signal"], "stdio_socket,connect", "{a}");
    } else {
        eprintln!("no global IPv4 address: the connect signal is not tested end to end");
    }

    // bash's /dev/tcp: the shell itself connects out.
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("listener");
    let port = l.local_addr().expect("addr").port();
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port}; echo hi >&3");
    let (pid, _, st) = run_to_end(Command::new("/bin/bash").args(["-c", &script]));
    assert!(st.success());
    let a = wait_alert(&agent, "reverse-shell", "bash's /dev/tcp connect", |e| {
        is(e, "connect", pid) && e["remote_port"] == port
    });
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["details"]["signal"], "shell_connect", "{a}");
    drop(l);

    // A shell on pipes: nothing.
    let (pid, _, st) = run_to_end(Command::new("/bin/sh").args(["-c", "true"]));
    assert!(st.success());
    assert_no_alert(&agent, "reverse-shell", "a shell on pipes", exec_of(pid, "/bin/sh"), |e| {
        e["pid"] == pid
    });
    agent.stop();
}

/// An IPv4 address of this machine other than loopback (`ip -4 -o addr`).
fn global_ipv4() -> Option<String> {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let word = text.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
    Some(word.split('/').next()?.to_owned())
}

fn crypto_miner(transport: &str) {
    let agent = start(transport);
    let (pid, _, st) =
        run_to_end(Command::new("/bin/true").args(["-o", "stratum+tcp://pool.invalid:3333", "-u", "x"]));
    assert!(st.success());
    let a = wait_alert(&agent, "crypto-miner", "the stratum URL", exec_of(pid, "/bin/true"));
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["details"]["signal"], "stratum_url", "{a}");
    // The word alone is not a URL.
    let (pid, _, st) = run_to_end(Command::new("/bin/true").args(["stratum", "tcp"]));
    assert!(st.success());
    assert_no_alert(&agent, "crypto-miner", "a look-alike", exec_of(pid, "/bin/true"), |e| e["pid"] == pid);
    agent.stop();
}

fn agent_tampering(transport: &str) {
    let agent = start(transport);
    // Signal 0 checks the process exists and harms nothing.
    let target = agent.pid().to_string();
    let (pid, _, st) = run_to_end(Command::new("/usr/bin/kill").args(["-0", &target]));
    assert!(st.success());
    let a = wait_alert(&agent, "agent-tampering", "kill -0 of the agent", exec_of(pid, "/usr/bin/kill"));
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["event"]["argv"], shrike_tests::json!(["/usr/bin/kill", "-0", target]), "{a}");
    // Another process: nothing.
    let me = std::process::id().to_string();
    let (pid, _, st) = run_to_end(Command::new("/usr/bin/kill").args(["-0", &me]));
    assert!(st.success());
    assert_no_alert(&agent, "agent-tampering", "kill -0 of the test", exec_of(pid, "/usr/bin/kill"), |e| {
        e["pid"] == pid
    });
    agent.stop();
}
