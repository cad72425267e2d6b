//! Real PAM logins against the agent's libpam uprobes: `pamtester` with a PAM
//! service the test installs, and password logins through a real sshd. A test
//! user is created (useradd + chpasswd) and removed afterwards.
//!
//! Needs the Debian packages pamtester, openssh-server, openssh-client, sshpass
//! (and passwd for useradd/chpasswd/userdel).

use std::{
    fs::File,
    io::Write,
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use shrike_tests::{
    Agent, Daemon, InstalledFile, TempDir, TestUser, Value, free_port, of, require_program, run_ok,
};

const PAM_SERVICE: &str = "shrike-test";
const PAMTESTER: &str = "/usr/bin/pamtester";
const SSHD: &str = "/usr/sbin/sshd";

fn pam_service() -> InstalledFile {
    InstalledFile::new(
        format!("/etc/pam.d/{PAM_SERVICE}"),
        "# Installed by Shrike's integration tests; removed when they end.\n\
         auth required pam_unix.so nodelay\n\
         account required pam_unix.so\n",
    )
}

/// Runs pamtester for `user` with `password` on stdin: (pid, success).
fn pamtester(user: &str, password: &str, ops: &[&str]) -> (u32, bool) {
    let mut child = Command::new(PAMTESTER)
        .args(["-v", PAM_SERVICE, user])
        .args(ops)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running pamtester");
    writeln!(child.stdin.take().expect("piped"), "{password}").expect("writing the password");
    let pid = child.id();
    let status = child.wait().expect("pamtester");
    (pid, status.success())
}

/// (step, result, pam_code, pam_error) of each login event of `pid`, in order.
fn steps(events: &[Value], pid: u32) -> Vec<(String, String, i64, String)> {
    of(events, "login", pid)
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap_or("?").to_owned(),
                e["result"].as_str().unwrap_or("?").to_owned(),
                e["pam_code"].as_i64().unwrap_or(-1),
                e["pam_error"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn step(s: &str, ok: bool) -> (String, String, i64, String) {
    if ok {
        (s.into(), "success".into(), 0, "PAM_SUCCESS".into())
    } else {
        (s.into(), "failure".into(), 7, "PAM_AUTH_ERR".into())
    }
}

/// Waits until `pid` has `n` login events and no more arrive for a moment.
fn settle(agent: &Agent, pid: u32, n: usize) -> Vec<Value> {
    agent.wait_for_count(n, &format!("{n} login events of pid {pid}"), |e| shrike_tests::is(e, "login", pid));
    std::thread::sleep(Duration::from_millis(300));
    agent.events()
}

#[test]
fn pamtester_login_success_and_failure() {
    if !shrike_tests::require_root() {
        return;
    }
    require_program(PAMTESTER, "pamtester");
    let _service = pam_service();
    let user = TestUser::create("shrike-pam-test", "Corr3ct-horse-pw");
    // Only login events are written: fork/exec/exit still run for the exe.
    let agent = Agent::start(&["--kinds", "login"]);

    let (ok_pid, ok) = pamtester(&user.name, &user.password, &["authenticate", "acct_mgmt"]);
    assert!(ok, "pamtester with the right password failed");
    let (bad_pid, bad) = pamtester(&user.name, "wrong-password", &["authenticate", "acct_mgmt"]);
    assert!(!bad, "pamtester with a wrong password succeeded");

    let events = settle(&agent, ok_pid, 2);
    assert_eq!(steps(&events, ok_pid), vec![step("authenticate", true), step("acct_mgmt", true)]);
    let events = settle(&agent, bad_pid, 1);
    // pamtester stops at the failed step.
    assert_eq!(steps(&events, bad_pid), vec![step("authenticate", false)]);

    for pid in [ok_pid, bad_pid] {
        for ev in of(&events, "login", pid) {
            assert_eq!(ev["service"], PAM_SERVICE, "{ev}");
            assert_eq!(ev["login_user"], user.name.as_str(), "{ev}");
            // pamtester sets neither PAM_RHOST nor PAM_TTY.
            assert_eq!(ev.get("rhost"), None, "{ev}");
            assert_eq!(ev.get("tty"), None, "{ev}");
            assert_eq!(ev["uid"], 0, "{ev}");
            assert_eq!(ev["comm"], "pamtester", "{ev}");
            assert_eq!(ev["exe"], PAMTESTER, "{ev}");
            assert_eq!(ev["ppid"], std::process::id(), "{ev}");
        }
    }
    assert!(events.iter().all(|e| e["kind"] == "login"), "--kinds login wrote other kinds");
    let stats = agent.stop();
    assert_eq!(stats.lost("login"), 0, "{:?}", stats.0);
    assert_eq!(stats.field("written") as usize, events.len(), "{:?}", stats.0);
}

/// sshd on a loopback port with its own config and host key.
struct Sshd {
    daemon: Daemon,
    port: u16,
    dir: TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        require_program(SSHD, "openssh-server");
        // The privilege separation directory (a tmpfs: missing after boot).
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = TempDir::new("sshd");
        let key = dir.path().join("host_ed25519");
        run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
        let port = free_port("127.0.0.1");
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {key}\n\
                 PidFile {pid}\n\
                 UsePAM yes\n\
                 PasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication no\n\
                 PermitRootLogin no\n\
                 UseDNS no\n\
                 LogLevel VERBOSE\n",
                key = key.display(),
                pid = dir.path().join("sshd.pid").display(),
            ),
        )
        .expect("writing sshd_config");
        run_ok(Command::new(SSHD).arg("-t").arg("-f").arg(&config));
        let log = File::create(dir.path().join("sshd.log")).expect("sshd log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        let sshd = Sshd { daemon: Daemon(child), port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sshd.log().lines().all(|l| !l.contains("Server listening on 127.0.0.1")) {
            assert!(Instant::now() < deadline, "sshd did not start:\n{}", sshd.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok(), "sshd does not accept:\n{}", sshd.log());
        sshd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `sshpass -p PASSWORD ssh ... USER@127.0.0.1 true`: whether it succeeded.
    fn login(&self, user: &str, password: &str) -> bool {
        require_program("/usr/bin/sshpass", "sshpass");
        let port = self.port.to_string();
        let out = Command::new("sshpass")
            .args(["-p", password, "ssh"])
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no"])
            .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"])
            .args(["-p", &port, &format!("{user}@127.0.0.1"), "true"])
            .stdin(Stdio::null())
            .output()
            .expect("running sshpass");
        out.status.success()
    }
}

#[test]
fn sshd_password_login_success_and_failure() {
    if !shrike_tests::require_root() {
        return;
    }
    let user = TestUser::create("shrike-ssh-test", "Sshd-l0gin-pw");
    let sshd = Sshd::start();
    let agent = Agent::start(&["--kinds", "login"]);
    let daemon = sshd.daemon.pid();
    let is_auth = |e: &Value, result: &str| {
        e["kind"] == "login"
            && e["service"] == "sshd"
            && e["login_user"] == user.name.as_str()
            && e["step"] == "authenticate"
            && e["result"] == result
    };

    assert!(
        sshd.login(&user.name, &user.password),
        "ssh login with the right password failed:\n{}",
        sshd.log()
    );
    let ok = agent.wait_for("a successful sshd authentication", |e| is_auth(e, "success"));
    let session = ok["pid"].as_u64().expect("pid") as u32;
    assert!(
        !sshd.login(&user.name, "not-the-password"),
        "ssh login with a wrong password succeeded:\n{}",
        sshd.log()
    );
    let bad = agent.wait_for("a failed sshd authentication", |e| is_auth(e, "failure"));

    for ev in [&ok, &bad] {
        assert_eq!(ev["login_user"], user.name.as_str(), "{ev}");
        assert_eq!(ev["rhost"], "127.0.0.1", "{ev}");
        // OpenSSH sets PAM_TTY to "ssh" for sessions without a terminal.
        assert_eq!(ev["tty"], "ssh", "{ev}");
        assert_eq!(ev["comm"], "sshd", "{ev}");
        assert_eq!(ev["exe"], SSHD, "{ev}");
        assert_eq!(ev["uid"], 0, "{ev}");
        // Each connection is handled by a child of the daemon started here.
        assert_eq!(ev["ppid"], daemon, "{ev}");
    }
    assert_eq!(
        (bad["pam_code"].as_i64(), bad["pam_error"].as_str()),
        (Some(7), Some("PAM_AUTH_ERR")),
        "{bad}"
    );
    assert_eq!((ok["pam_code"].as_i64(), ok["pam_error"].as_str()), (Some(0), Some("PAM_SUCCESS")), "{ok}");
    assert_ne!(bad["pid"], ok["pid"], "each connection has its own process");

    // The successful session went on through account and session management.
    let close = agent.wait_for("the session's close", |e| {
        shrike_tests::is(e, "login", session) && e["step"] == "close_session"
    });
    let events = agent.events();
    // The steps after the session's end name the service and the user the
    // session was opened with, like the steps before it.
    let after: Vec<&Value> = events
        .iter()
        .filter(|e| {
            shrike_tests::is(e, "login", session) && e["ktime_ns"].as_u64() >= close["ktime_ns"].as_u64()
        })
        .collect();
    assert!(after.iter().any(|e| e["step"] == "setcred"), "no setcred after close_session: {after:?}");
    for e in &after {
        assert!(matches!(e["step"].as_str(), Some("setcred" | "close_session")), "{e}");
        assert_eq!(e["service"], "sshd", "{e}");
        assert_eq!(e["login_user"], user.name.as_str(), "{e}");
        assert_eq!(e["rhost"], "127.0.0.1", "{e}");
    }
    let got: Vec<String> = of(&events, "login", session)
        .iter()
        .filter(|e| e["result"] == "success")
        .map(|e| e["step"].as_str().unwrap_or("?").to_owned())
        .collect();
    for want in ["authenticate", "acct_mgmt", "open_session", "close_session"] {
        assert!(got.iter().any(|s| s == want), "no successful {want} for session {session}: {got:?}");
    }
    let stats = agent.stop();
    assert_eq!(stats.lost("login"), 0, "{:?}", stats.0);
}

/// `su` forks the shell's process, which calls pam_end on its copy of the
/// handle before it execs; the parent then closes the session with the same
/// handle: close_session and setcred still name the service and the user.
#[test]
fn su_session_close_keeps_service_and_user() {
    if !shrike_tests::require_root() {
        return;
    }
    require_program("/usr/bin/su", "util-linux");
    let agent = Agent::start(&["--kinds", "login"]);
    // Root needs no password (pam_rootok).
    let mut child = Command::new("/usr/bin/su")
        .args(["-s", "/bin/sh", "nobody", "-c", "true"])
        .stdin(Stdio::null())
        .spawn()
        .expect("running su");
    let pid = child.id();
    assert!(child.wait().expect("su").success());
    let events = settle(&agent, pid, 6);
    let got = steps(&events, pid);
    for want in ["open_session", "close_session", "setcred"] {
        assert!(got.iter().any(|(s, ..)| s == want), "no {want}: {got:?}");
    }
    for ev in of(&events, "login", pid) {
        assert_eq!(ev["service"], "su", "{ev}");
        assert_eq!(ev["login_user"], "nobody", "{ev}");
        assert_eq!(ev["result"], "success", "{ev}");
    }
    let close = of(&events, "login", pid).into_iter().position(|e| e["step"] == "close_session");
    let setcred_after =
        of(&events, "login", pid).into_iter().skip(close.unwrap_or(0)).any(|e| e["step"] == "setcred");
    assert!(setcred_after, "no setcred after close_session: {got:?}");
    agent.stop();
}
