//! Support of `hub.rs`: `shrike run` as a child process, the message
//! schemas, and a fake IoT Hub endpoint over TLS that reads the CONNECT
//! packet (to check the SAS token mosquitto cannot check). The broker, the
//! subscriber and the test PKI are the shared harness `shrike_tests::broker`.
//!
//! Included (`mod hub_support;`) by several test crates, each of which uses
//! a part of it: what one leaves unused is not dead.
#![allow(dead_code, reason = "shared by several test crates, each uses a part")]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex, OnceLock},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use jsonschema::{Draft, Retrieve, Uri, Validator};
use rumqttc::Packet;
use serde_json::Value;

#[allow(unused_imports, reason = "each includer uses a part of the shared harness")]
pub use shrike_tests::broker::{
    Auth, Broker, BrokerConfig, MOSQUITTO, Pki, Received, Subscriber, make_pki, mosquitto_passwd, poll_until,
};

// ---------------------------------------------------------------------------
// `shrike run`

/// `shrike run ARGS` with its stderr collected; SIGKILLed when dropped.
pub struct RunAgent {
    child: Option<Child>,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
    reader: Option<JoinHandle<()>>,
    pub args: Vec<String>,
}

/// Removes ANSI colour sequences from a log line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
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

impl RunAgent {
    /// Starts it without waiting for `shrike ready`.
    pub fn spawn(args: &[String]) -> RunAgent {
        let bin = shrike_tests::agent_bin();
        let mut child = Command::new(bin)
            .arg("run")
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("SHRIKE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let reader = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.0.lock().unwrap().push(strip_ansi(&line));
                    log.1.notify_all();
                }
            })
        };
        RunAgent { child: Some(child), log, reader: Some(reader), args: args.to_vec() }
    }

    /// Starts it and waits (60 s at most) for `shrike ready`.
    pub fn start(args: &[String]) -> RunAgent {
        let mut a = RunAgent::spawn(args);
        a.wait_ready();
        a
    }

    pub fn wait_ready(&mut self) {
        let ok = self.wait_log(Duration::from_secs(60), "shrike ready");
        if !ok {
            let running = self.running();
            panic!(
                "shrike run {:?} not ready (running: {running}); its log:\n{}",
                self.args,
                self.log().join("\n")
            );
        }
    }

    /// Waits until a log line contains `text`.
    pub fn wait_log(&mut self, limit: Duration, text: &str) -> bool {
        let deadline = Instant::now() + limit;
        let mut lines = self.log.0.lock().unwrap();
        loop {
            if lines.iter().any(|l| l.contains(text)) {
                return true;
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

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn finish(&mut self, sig: i32, limit: Duration) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let mut status = None;
        poll_until(limit, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "shrike run {:?} did not exit within {limit:?}; log:\n{}",
                    self.args,
                    self.log().join("\n")
                );
            }
        };
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
        (status, self.log())
    }

    /// Sends SIGINT without waiting (to stop several agents at once).
    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Sends `sig` (SIGHUP: reload) without waiting.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signals our own, not yet reaped, child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// SIGINT: the agent flushes, publishes and exits 0 (asserted). Its log.
    pub fn stop(mut self) -> Vec<String> {
        let (status, log) = self.finish(libc::SIGINT, Duration::from_secs(30));
        assert!(
            status.success(),
            "shrike run {:?} exited with {status}; log:\n{}",
            self.args,
            log.join("\n")
        );
        log
    }

    /// SIGKILL: a crash, nothing flushed.
    pub fn kill9(mut self) -> Vec<String> {
        // A killed agent's exit still releases ~120 probe links in the
        // kernel (RCU waits): seconds, and over 10 s on a loaded machine.
        self.finish(libc::SIGKILL, Duration::from_secs(30)).1
    }
}

impl Drop for RunAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `shrike run ARGS` to completion: (exit code, stderr).
pub fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(shrike_tests::agent_bin())
        .arg("run")
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting shrike");
    let mut err = String::new();
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let mut status = None;
    let exited = poll_until(Duration::from_secs(20), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("shrike run {args:?} did not exit within 20 s");
    }
    (status.and_then(|s| s.code()), strip_ansi(&reader.join().unwrap_or_default()))
}

/// `key: N` in a `Debug`-printed struct of a log line (`spool_dropped: 3`).
/// Also `key=N` or `group.key=N` of a `key=value` counters line (the agent's
/// stop lines print `telemetry::fields`, which leaves zero values out: a key
/// absent from such a line is 0).
pub fn stat(line: &str, key: &str) -> u64 {
    for pat in [format!("{key}: "), format!(" {key}="), format!(".{key}=")] {
        if let Some(at) = line.find(&pat) {
            let at = at + pat.len();
            return line[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap();
        }
    }
    // A Debug-printed struct prints every field: absence is a wrong key.
    assert!(!line.contains(" { "), "no {key} in {line}");
    0
}

/// `key=N` of a tracing log line (`messages=12`).
pub fn field(line: &str, key: &str) -> u64 {
    let pat = format!(" {key}=");
    let at = line.find(&pat).unwrap_or_else(|| panic!("no {key} in {line}")) + pat.len();
    line[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
}

// ---------------------------------------------------------------------------
// Schemas

const SCHEMA_BASE: &str = "https://raw.githubusercontent.com/shrike-agent/shrike/main/agent-common/schemas/";

fn read_schema(rel: &str) -> Value {
    let path = shrike_tests::workspace_root().join("agent-common/schemas").join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Serves `$ref`s from agent-common/schemas; nothing is fetched.
struct LocalSchemas;

impl Retrieve for LocalSchemas {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let uri = uri.as_str();
        let rel = uri.strip_prefix(SCHEMA_BASE).ok_or_else(|| format!("not one of ours: {uri}"))?;
        Ok(read_schema(rel.split('#').next().unwrap_or(rel)))
    }
}

/// Validates against `message.schema.json` (draft-07, formats checked);
/// panics listing the errors.
pub fn assert_valid(msg: &Value) {
    static V: OnceLock<Validator> = OnceLock::new();
    let v = V.get_or_init(|| {
        jsonschema::options()
            .with_draft(Draft::Draft7)
            .should_validate_formats(true)
            .with_retriever(LocalSchemas)
            .build(&read_schema("message.schema.json"))
            .expect("message.schema.json")
    });
    let errors: Vec<String> = v.iter_errors(msg).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "invalid message: {errors:#?}\n{msg:#}");
}

/// Every event of every message, deduplicated by `Id` (at-least-once delivery
/// may repeat a message: a repeated Id must carry identical content). Also
/// validates every message. Returns (events, duplicates seen).
pub fn unique_events(msgs: &[Received]) -> (Vec<Value>, usize) {
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut out = Vec::new();
    let mut dups = 0;
    for m in msgs {
        let v = m.json();
        assert_valid(&v);
        for ev in v["Events"].as_array().expect("Events") {
            let id = ev["Id"].as_str().expect("event Id").to_owned();
            match seen.get(&id) {
                Some(prev) => {
                    assert_eq!(prev, ev, "event {id} received twice with different content");
                    dups += 1;
                }
                None => {
                    seen.insert(id, ev.clone());
                    out.push(ev.clone());
                }
            }
        }
    }
    (out, dups)
}

/// The payload item of a ProcessCreate event whose command line is exactly
/// `/bin/true {words}`... starting with `/bin/true {marker}`.
pub fn marked_create<'a>(ev: &'a Value, marker: &str) -> Option<&'a Value> {
    if ev["Name"] != "ProcessCreate" {
        return None;
    }
    let item = &ev["Payload"][0];
    let cl = item["CommandLine"].as_str()?;
    let rest = cl.strip_prefix("/bin/true ")?;
    (rest == marker || rest.starts_with(&format!("{marker} "))).then_some(item)
}

/// HitCount of an aggregated payload item, 1 for a single event.
pub fn hits(item: &Value) -> u64 {
    match item["ExtraDetails"]["HitCount"].as_str() {
        Some(h) => h.parse().expect("HitCount is a number"),
        None => 1,
    }
}

/// Runs `/bin/true ARGS` to completion.
pub fn run_true(args: &[&str]) {
    let st = Command::new("/bin/true").args(args).status().expect("spawning /bin/true");
    assert!(st.success());
}

// ---------------------------------------------------------------------------
// A fake IoT Hub endpoint: TLS, reads CONNECT, answers CONNACK, reads the
// first PUBLISH.

pub struct Captured {
    pub connect: rumqttc::Connect,
    pub publish: Option<rumqttc::Publish>,
}

/// Serves one connection on `listener` (TLS with `cert`/`key`), within `limit`.
pub fn fake_hub(
    listener: TcpListener,
    cert: PathBuf,
    key: PathBuf,
    limit: Duration,
) -> JoinHandle<Result<Captured, String>> {
    std::thread::spawn(move || {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .map_err(|e| e.to_string())?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| e.to_string())?;
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + limit;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let sock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(format!("no connection: {e}")),
            }
        };
        sock.set_nonblocking(false).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let conn = rustls::ServerConnection::new(Arc::new(config)).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = bytes::BytesMut::new();
        let mut next =
            |tls: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>| -> Result<Packet, String> {
                loop {
                    match Packet::read(&mut buf, 1 << 20) {
                        Ok(p) => return Ok(p),
                        Err(rumqttc::Error::InsufficientBytes(_)) => {}
                        Err(e) => return Err(format!("bad packet: {e}")),
                    }
                    let mut chunk = [0u8; 4096];
                    let n = tls.read(&mut chunk).map_err(|e| format!("reading: {e}"))?;
                    if n == 0 {
                        return Err("connection closed".into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            };
        let connect = match next(&mut tls)? {
            Packet::Connect(c) => c,
            other => return Err(format!("first packet is not CONNECT: {other:?}")),
        };
        // CONNACK, accepted, no session present.
        tls.write_all(&[0x20, 0x02, 0x00, 0x00]).map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        let mut publish = None;
        while Instant::now() < deadline {
            match next(&mut tls) {
                Ok(Packet::Publish(p)) => {
                    publish = Some(p);
                    break;
                }
                Ok(Packet::PingReq) => {
                    let _ = tls.write_all(&[0xd0, 0x00]);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(Captured { connect, publish })
    })
}
