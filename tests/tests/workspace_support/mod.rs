//! Support of the workspace tests: `shrike-workspace` built and run as child
//! processes, its query command, an MQTT publisher, a client that fails to
//! log in, a throwaway PostgreSQL cluster, and security messages made with
//! the SDK's JSON layout.
#![allow(dead_code, reason = "shared by several test crates, each uses a part")]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex, OnceLock},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use shrike_tests::broker::poll_until;

/// The `shrike-workspace` binary: `$SHRIKE_WORKSPACE_BIN`, or built once per
/// test process with `cargo build -p shrike-workspace`.
pub fn workspace_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SHRIKE_WORKSPACE_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let started = Instant::now();
        let out = Command::new(&cargo)
            .args([
                "build",
                "-p",
                "shrike-workspace",
                "--bin",
                "shrike-workspace",
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(shrike_tests::workspace_root())
            .stdin(Stdio::null())
            .output()
            .expect("running cargo");
        assert!(
            out.status.success(),
            "cargo build -p shrike-workspace failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exe = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "shrike-workspace")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no shrike-workspace executable");
        eprintln!("[harness] workspace built in {:.1?}: {}", started.elapsed(), exe.display());
        exe
    })
}

/// A running `shrike-workspace` with its stderr collected; SIGKILLed when
/// dropped.
pub struct Workspace {
    child: Option<Child>,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
    reader: Option<JoinHandle<()>>,
    pub args: Vec<String>,
}

impl Workspace {
    /// Starts it and waits until it is subscribed (30 s at most).
    pub fn start(args: &[String]) -> Workspace {
        let mut child = Command::new(workspace_bin())
            .args(args)
            .env("NO_COLOR", "1")
            .env("SHRIKE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting shrike-workspace");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let reader = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.0.lock().unwrap().push(line);
                    log.1.notify_all();
                }
            })
        };
        let mut w = Workspace { child: Some(child), log, reader: Some(reader), args: args.to_vec() };
        assert!(
            w.wait_log(Duration::from_secs(30), "subscribed (packet"),
            "shrike-workspace {:?} did not connect; log:\n{}",
            w.args,
            w.log().join("\n")
        );
        w
    }

    pub fn wait_log(&mut self, limit: Duration, text: &str) -> bool {
        let deadline = Instant::now() + limit;
        let mut lines = self.log.0.lock().unwrap();
        loop {
            if lines.iter().any(|l| l.contains(text)) {
                return true;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                drop(lines);
                panic!("shrike-workspace exited ({st}); log:\n{}", self.log().join("\n"));
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines =
                self.log.1.wait_timeout(lines, (deadline - now).min(Duration::from_millis(100))).unwrap().0;
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    fn finish(&mut self, sig: i32) -> Option<std::process::ExitStatus> {
        let child = self.child.as_ref()?;
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(child.id() as i32, sig) };
        self.reap(Duration::from_secs(30))
    }

    /// Waits up to `limit` for the process to exit (killed past it), then
    /// for its log reader: its status.
    fn reap(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let mut status = None;
        poll_until(limit, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
        status
    }

    /// SIGINT: it writes what it received and exits 0 (asserted). Its log.
    pub fn stop(mut self) -> Vec<String> {
        let st = self.finish(libc::SIGINT);
        let log = self.log();
        assert!(
            st.is_some_and(|s| s.success()),
            "shrike-workspace exited with {st:?}; log:\n{}",
            log.join("\n")
        );
        log
    }

    /// Waits (`limit`) for it to exit by itself: its status, and its log.
    pub fn wait_exit(mut self, limit: Duration) -> (Option<std::process::ExitStatus>, Vec<String>) {
        assert!(self.child.is_some(), "running");
        let status = self.reap(limit);
        (status, self.log())
    }

    pub fn kill9(mut self) -> Vec<String> {
        self.finish(libc::SIGKILL);
        self.log()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `shrike-workspace ARGS` to its end: (exit code, stdout, stderr).
pub fn command(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(workspace_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running shrike-workspace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `shrike-workspace query --db DB --json SQL`: the rows as JSON objects.
pub fn query(db: &str, sql: &str) -> Vec<Value> {
    json_lines(&["query", "--db", db, "--json", sql])
}

/// A reading command's `--json` output (it must succeed).
pub fn json_lines(args: &[&str]) -> Vec<Value> {
    let (code, out, err) = command(args);
    assert_eq!(code, 0, "shrike-workspace {args:?}: {err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

/// One number of a one-row, one-column query (null as 0).
pub fn number(db: &str, sql: &str) -> i64 {
    let rows = query(db, sql);
    let row = rows.first().and_then(Value::as_object).unwrap_or_else(|| panic!("no row from {sql}"));
    row.values().next().and_then(Value::as_i64).unwrap_or(0)
}

/// Publishes `payload` at QoS 1 and waits for the broker's PUBACK.
pub fn publish(port: u16, topic: &str, payload: &[u8]) {
    let mut o = MqttOptions::new(format!("ws-test-pub-{}", std::process::id()), "127.0.0.1", port);
    o.set_max_packet_size(1 << 24, 1 << 24);
    let (client, mut conn) = Client::new(o, 10);
    client.publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Packet::PubAck(_))) => break,
            Err(e) => panic!("publishing to {topic}: {e}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "no PUBACK for {topic}");
    }
    let _ = client.disconnect();
    for ev in conn.iter() {
        if ev.is_err() {
            break;
        }
    }
}

/// A connection with a wrong password; returns once the broker refused it.
pub fn bad_login(port: u16, user: &str, password: &str) {
    let mut o = MqttOptions::new(format!("intruder-{}", shrike_tests::marker("c")), "127.0.0.1", port);
    o.set_credentials(user, password);
    let (_client, mut conn) = Client::new(o, 10);
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(a))) => {
                assert_ne!(a.code, rumqttc::ConnectReturnCode::Success, "the broker took a wrong password");
            }
            Err(_) => break,
            _ => {}
        }
    }
}

/// A security message (SDK JSON layout) of one event of `name` at `utc`.
pub fn message(agent_id: &str, name: &str, category: &str, utc: &str, payload: Value) -> Vec<u8> {
    let ev = json!({
        "Id": new_guid(),
        "TimestampLocal": utc,
        "TimestampUTC": utc,
        "Category": category,
        "Name": name,
        "EventType": "Security",
        "IsEmpty": false,
        "PayloadSchemaVersion": "1.0",
        "Payload": payload,
    });
    serde_json::to_vec(&json!({
        "AgentVersion": "9.9.9",
        "AgentId": agent_id,
        "MessageSchemaVersion": "1.0",
        "Events": [ev],
    }))
    .unwrap()
}

pub fn new_guid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap().trim().to_owned()
}

pub fn utc_ago(secs: i64) -> String {
    // Civil time from Unix seconds (Howard Hinnant's days-from-civil, inverted).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let t = now - secs;
    let (days, rem) = (t.div_euclid(86400), t.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
