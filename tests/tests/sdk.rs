//! The SDK socket end to end: other programs report security events through
//! the agent. Against `shrike run` and a real mosquitto: 1,000 events from 10
//! concurrent clients (5 `shrike send` processes reading JSON lines on stdin,
//! 5 threads with the Rust client) all reach the broker with their sender in
//! ExtraDetails, while hostile clients (not JSON, a 10 MB line, wrong types,
//! an unknown field, one that never writes, one that writes a byte a second)
//! are rejected or timed out; a Sigma rule on an SDK kind fires; an Azure kind
//! sent through the SDK arrives in an Azure message. Against `shrike events
//! --sdk-socket`: a `shrike send` round trip (flags and stdin) and the C
//! example compiled with gcc and run.
//!
//! Run as root: `cargo test -p shrike-tests --test sdk -- --test-threads=1`.

mod hub_support;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hub_support::*;
use serde_json::{Value, json};
use shrike_common::sdk::Client;
use shrike_tests::{Agent, TempDir, marker, require_program, require_root, workspace_root};

const CLIENT_ID: &str = "sdk";
const TOPIC: &str = "shrike/sdk/security";
const CLIENTS: usize = 10;
const PER_CLIENT: usize = 100;
/// The agent's SDK timeouts in these tests (short, so the hostile clients
/// are dealt with while the load runs).
const IDLE: Duration = Duration::from_secs(2);
const LINE: Duration = Duration::from_secs(3);

/// Every event on the agent's topic (each message validated against the
/// root schema: Azure, own or custom kinds), by Id.
fn received(sub: &Subscriber) -> HashMap<String, Value> {
    let msgs: Vec<Received> = sub.messages().into_iter().filter(|r| r.topic == TOPIC).collect();
    let (events, _) = unique_events(&msgs);
    events.into_iter().map(|e| (e["Id"].as_str().expect("Id").to_owned(), e)).collect()
}

/// One raw connection: write bytes, read reply lines.
struct Raw {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Raw {
    fn open(path: &Path) -> Raw {
        let w = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw { r: BufReader::new(w.try_clone().unwrap()), w }
    }

    fn reply(&mut self) -> Value {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("a reply line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
    }

    fn send(&mut self, bytes: &[u8]) -> Value {
        self.w.write_all(bytes).expect("write");
        self.reply()
    }

    /// Reads until the server closes (true) or 20 s pass.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.r.read_to_end(&mut rest).is_ok()
    }
}

fn error_of(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"].as_str().unwrap_or_else(|| panic!("no error in {reply}"))
}

/// (client, seq) -> (id, sender pid, sender executable)
type Sent = Arc<Mutex<HashMap<(u64, u64), (String, u32, String)>>>;

#[test]
fn thousand_events_from_ten_clients_reach_the_broker_while_hostile_clients_are_refused() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("sdk");
    let broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let socket = dir.path().join("sdk.sock");
    let cfg = dir.path().join("shrike.toml");
    std::fs::write(
        &cfg,
        format!(
            "hub = \"mqtt://127.0.0.1:{}\"\nclient_id = \"{CLIENT_ID}\"\nagent_id_file = \"{}\"\n\
             spool_dir = \"{}\"\nhigh_interval = \"200ms\"\nlow_interval = \"1s\"\naggregate_interval = \"1h\"\n\
             sdk_socket = \"{}\"\nsdk_rate = 100000\nsdk_connection_rate = 100000\n\
             sdk_idle_timeout = \"{}s\"\nsdk_line_timeout = \"{}s\"\n\
             [priority]\nexec = \"off\"\nexit = \"off\"\nconnect = \"off\"\naccept = \"off\"\n\
             login = \"off\"\nprivilege = \"off\"\nfile = \"off\"\n\
             [detect]\nrules = [\"{}\"]\n",
            broker.port,
            dir.path().join("agent-id").display(),
            dir.path().join("spool").display(),
            socket.display(),
            IDLE.as_secs(),
            LINE.as_secs(),
            workspace_root().join("tests/rules/sdk").display(),
        ),
    )
    .unwrap();
    let agent = RunAgent::start(&["--config".into(), cfg.display().to_string()]);
    assert!(socket.exists(), "no socket at {}; log:\n{}", socket.display(), agent.log().join("\n"));
    let test_exe = std::fs::read_link("/proc/self/exe").unwrap().display().to_string();
    let me = std::process::id();

    // Hostile clients, alive while the load runs.
    let t0 = Instant::now();
    let (s1, s2, s3) = (socket.clone(), socket.clone(), socket.clone());
    let silent = std::thread::spawn(move || {
        let mut c = Raw::open(&s1);
        let r = c.reply();
        (r, t0.elapsed(), c.closed())
    });
    let slow = std::thread::spawn(move || {
        let mut c = Raw::open(&s2);
        for b in br#"{"Name":"Slow","Payload":[{}]}"# {
            if c.w.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            if t0.elapsed() > LINE + Duration::from_secs(2) {
                break;
            }
        }
        let r = c.reply();
        (r, c.closed())
    });
    let junk = std::thread::spawn(move || {
        let mut c = Raw::open(&s3);
        let not_json = c.send(b"this is not JSON\n");
        let mut huge = vec![b'{'; 10 << 20];
        huge.push(b'\n');
        let too_long = c.send(&huge);
        let wrong = c.send(br#"{"Name":"ProcessCreate","Payload":[{"Executable":"/x","ProcessId":"1","ParentProcessId":0,"UserId":"0","CommandLine":"x"}]}
"#);
        let unknown = c.send(br#"{"Name":"ProcessTerminate","Payload":[{"Executable":"/x","ProcessId":1,"ExitStatus":0,"Colour":"red"}]}
"#);
        let fine = c.send(
            br#"{"Name":"AfterJunk","Payload":[{"Ok":true}]}
"#,
        );
        (not_json, too_long, wrong, unknown, fine)
    });

    // The load: 5 `shrike send` processes and 5 Rust clients, 100 each.
    let sent: Sent = Arc::default();
    let run_marker = marker("load");
    let mut workers = Vec::new();
    for client in 0..CLIENTS as u64 {
        let (socket, sent, m, exe) =
            (socket.clone(), Arc::clone(&sent), run_marker.clone(), test_exe.clone());
        workers.push(std::thread::spawn(move || {
            let line = |seq: u64| {
                json!({"Name": "SdkLoad", "Payload": [{"Client": client, "Seq": seq, "Marker": m}]})
                    .to_string()
            };
            if client % 2 == 0 {
                let bin = shrike_tests::agent_bin();
                let mut child = Command::new(bin)
                    .args(["send", "--socket"])
                    .arg(&socket)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("shrike send");
                let pid = child.id();
                let input: String = (0..PER_CLIENT as u64).map(|s| line(s) + "\n").collect();
                let mut stdin = child.stdin.take().unwrap();
                let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
                let out = child.wait_with_output().expect("shrike send output");
                feeder.join().unwrap().expect("feeding shrike send");
                assert!(out.status.success(), "shrike send: {out:?}");
                let replies: Vec<Value> = String::from_utf8(out.stdout)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                assert_eq!(replies.len(), PER_CLIENT);
                let mut sent = sent.lock().unwrap();
                for (seq, r) in replies.iter().enumerate() {
                    assert_eq!(r["ok"], true, "{r}");
                    let id = r["id"].as_str().unwrap().to_owned();
                    sent.insert((client, seq as u64), (id, pid, bin.display().to_string()));
                }
            } else {
                let mut c = Client::connect(&socket).expect("the Rust client connects");
                for seq in 0..PER_CLIENT as u64 {
                    let v: Value = serde_json::from_str(&line(seq)).unwrap();
                    let id = c.send(&v).unwrap_or_else(|e| panic!("client {client} seq {seq}: {e}"));
                    sent.lock().unwrap().insert((client, seq), (id.to_string(), me, exe.clone()));
                }
            }
        }));
    }
    for w in workers {
        w.join().expect("a load client failed");
    }
    let load_time = t0.elapsed();
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), CLIENTS * PER_CLIENT);
    eprintln!("[sdk] {} events accepted from {CLIENTS} clients in {load_time:?}", sent.len());

    // A Sigma rule on an SDK kind, and an Azure kind through the SDK.
    let mut c = Client::connect(&socket).unwrap();
    let door = c
        .send(&json!({"Name": "DoorOpened", "Payload": [{"Door": "cabinet-1", "Forced": true}]}))
        .expect("DoorOpened accepted");
    let login = c
        .send(&json!({"Name": "Login", "Payload": [{"ProcessId": me, "UserName": "operator",
            "Operation": "webui:login", "Executable": test_exe, "Result": "Fail", "RemoteAddress": "192.0.2.7"}]}))
        .expect("Login accepted");
    // Closed now: left open, it would time out as idle while the test waits.
    drop(c);

    // Everything reaches the broker.
    let ok = sub.wait_until(Duration::from_secs(30), |msgs| {
        let ids: std::collections::HashSet<String> = msgs
            .iter()
            .filter(|r| r.topic == TOPIC)
            .flat_map(|r| r.json()["Events"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["Id"].as_str().map(str::to_owned))
            .collect();
        sent.values().all(|(id, ..)| ids.contains(id)) && ids.contains(&login.to_string())
    });
    let events = received(&sub);
    let missing: Vec<_> = sent.iter().filter(|(_, (id, ..))| !events.contains_key(id)).take(5).collect();
    assert!(ok, "{} events missing, e.g. {missing:?}; agent log:\n{}", missing.len(), agent.log().join("\n"));
    for ((client, seq), (id, pid, exe)) in &sent {
        let ev = &events[id];
        assert_eq!(
            (&ev["Name"], &ev["Category"], &ev["EventType"]),
            (&json!("SdkLoad"), &json!("Triggered"), &json!("Security"))
        );
        let item = &ev["Payload"][0];
        assert_eq!(
            (&item["Client"], &item["Seq"], &item["Marker"]),
            (&json!(client), &json!(seq), &json!(run_marker))
        );
        let x = &item["ExtraDetails"];
        assert_eq!(x["SenderPid"], pid.to_string(), "{ev}");
        assert_eq!(x["SenderExecutable"], exe.as_str(), "{ev}");
        assert_eq!(x["SenderUid"], "0", "{ev}");
    }
    let l = &events[&login.to_string()];
    assert_eq!(l["Payload"][0]["UserName"], "operator");
    assert_eq!(l["Payload"][0]["ExtraDetails"]["SenderPid"], me.to_string());
    assert!(events.contains_key(&door.to_string()), "DoorOpened missing");
    let alert_ok = sub.wait_until(Duration::from_secs(10), |msgs| {
        msgs.iter().filter(|r| r.topic == TOPIC).any(|r| {
            r.json()["Events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["Payload"][0]["RuleId"] == "shrike-test-sdk-door")
        })
    });
    assert!(alert_ok, "no Sigma alert on DoorOpened; log:\n{}", agent.log().join("\n"));
    let alert =
        received(&sub).into_values().find(|e| e["Payload"][0]["RuleId"] == "shrike-test-sdk-door").unwrap();
    assert_eq!(alert["Payload"][0]["ProcessId"], me, "{alert}");
    assert_eq!(alert["Payload"][0]["ExtraDetails"]["TriggerKind"], "sdk", "{alert}");

    // The hostile clients got their reasons; the junk connection stayed usable.
    let (not_json, too_long, wrong, unknown, fine) = junk.join().unwrap();
    assert!(error_of(&not_json).starts_with("not JSON"));
    assert!(error_of(&too_long).starts_with("line too long"));
    assert!(error_of(&wrong).starts_with("Payload[0].ProcessId: invalid type"), "{wrong}");
    assert!(error_of(&unknown).contains("unknown field `Colour`"), "{unknown}");
    assert_eq!(fine["ok"], true, "{fine}");
    let (r, after, closed) = silent.join().unwrap();
    assert!(error_of(&r).contains("nothing sent"), "{r}");
    assert!(after >= IDLE && closed, "silent client closed after {after:?}");
    let (r, closed) = slow.join().unwrap();
    assert!(error_of(&r).contains("a line must arrive whole"), "{r}");
    assert!(closed);

    // The counters in the stop log.
    let log = agent.stop();
    let line = log.iter().find(|l| l.contains("shrike stopping")).expect("a stop line").clone();
    eprintln!("[sdk] {line}");
    assert_eq!(field(&line, "sdk.accepted"), (CLIENTS * PER_CLIENT + 3) as u64, "{line}");
    assert_eq!(field(&line, "sdk.rejected"), 4, "{line}");
    assert_eq!(field(&line, "sdk.too_long"), 1, "{line}");
    assert_eq!(field(&line, "sdk.timed_out"), 2, "{line}");
}

/// `shrike send` and the C example against `shrike events --sdk-socket`:
/// each accepted event is printed as an `sdk` line with the id its sender
/// was given and the sender's pid and executable; rejections exit 1.
#[test]
fn shrike_send_and_the_c_example_round_trip() {
    if !require_root() {
        return;
    }
    require_program("/usr/bin/gcc", "gcc");
    let dir = TempDir::new("sdk-send");
    let socket = dir.path().join("sdk.sock");
    let rules = workspace_root().join("tests/rules/sdk");
    let agent = Agent::start(&[
        "--kinds",
        "sdk,alert",
        "--sdk-socket",
        socket.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    let bin = shrike_tests::agent_bin();
    let send = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(bin)
            .args(["send", "--socket", socket.to_str().unwrap()])
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shrike send");
        let pid = child.id();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let replies: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (pid, out.status.code(), replies)
    };

    // Flags: accepted, printed with its id and sender; the Sigma rule fires.
    let m = marker("door");
    let payload = format!("{{\"Door\":\"cabinet-{m}\",\"Forced\":true}}");
    let (pid, code, replies) = send(&["--name", "DoorOpened", "--payload", &payload], None);
    assert_eq!((code, replies.len()), (Some(0), 1), "{replies:?}");
    let id = replies[0]["id"].as_str().expect("an id").to_owned();
    let ev = agent.wait_for("the sdk event", |e| e["kind"] == "sdk" && e["id"] == id);
    assert_eq!(
        (&ev["name"], &ev["pid"], &ev["exe"]),
        (&json!("DoorOpened"), &json!(pid), &json!(bin.display().to_string()))
    );
    assert_eq!(ev["payload"][0]["Door"], format!("cabinet-{m}"));
    assert_eq!(ev["payload"][0]["ExtraDetails"]["SenderPid"], pid.to_string());
    let alert = agent.wait_for("the Sigma alert", |e| e["kind"] == "alert" && e["event"]["id"] == id);
    assert_eq!(alert["rule"], "shrike-test-sdk-door");

    // A rejection: exit 1, the reason names the field.
    let (_, code, replies) =
        send(&["--name", "ProcessCreate", "--payload", r#"{"Executable":"/x","ProcessId":"1"}"#], None);
    assert_eq!(code, Some(1));
    assert!(error_of(&replies[0]).starts_with("Payload[0]"), "{replies:?}");
    // Lines on stdin: one reply each; one bad line makes the exit code 1.
    let (_, code, replies) = send(
        &[],
        Some(
            "{\"Name\":\"Tick\",\"Payload\":[{\"N\":1}]}\n[]\n{\"Name\":\"Tick\",\"Payload\":[{\"N\":2}]}\n",
        ),
    );
    assert_eq!(code, Some(1));
    assert_eq!(replies.iter().map(|r| r["ok"] == true).collect::<Vec<_>>(), [true, false, true]);

    // The C example, compiled with gcc and run.
    let exe = dir.path().join("shrike-send-c");
    let src = workspace_root().join("docs/sdk/send.c");
    let out = Command::new("gcc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc {}: {}", src.display(), String::from_utf8_lossy(&out.stderr));
    let run_c = |args: &[&str]| {
        let child = Command::new(&exe)
            .args(args)
            .env("SHRIKE_SDK_SOCKET", &socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        (pid, out.status.code(), String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let (pid, code, reply) = run_c(&["Tamper", r#"{"Sensor":3,"Lid":"open"}"#]);
    assert_eq!(code, Some(0), "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    let id = reply["id"].as_str().unwrap().to_owned();
    let ev = agent.wait_for("the C example's event", |e| e["kind"] == "sdk" && e["id"] == id);
    assert_eq!((&ev["name"], &ev["pid"]), (&json!("Tamper"), &json!(pid)));
    assert_eq!(ev["exe"], exe.display().to_string());
    assert_eq!(ev["payload"][0]["Sensor"], 3);
    let (_, code, reply) = run_c(&["Tamper", r#"{"Sensor":[3]}"#]);
    assert_eq!(code, Some(1), "{reply}");
    assert!(reply.contains("Payload[0].Sensor"), "{reply}");

    let stats = agent.stop();
    let sdk = &stats.0["sdk"];
    assert_eq!((sdk["accepted"].as_u64(), sdk["rejected"].as_u64()), (Some(4), Some(3)), "{}", stats.0);
}
