//! The workspace end to end: two real agents (two client ids) publish to a
//! real mosquitto; two `shrike-workspace` processes share the subscription
//! and write into one SQLite file (and, in the PostgreSQL test, into a real
//! throwaway PostgreSQL cluster). Checked: every exec the test makes is
//! counted once per device (HitCount sums), an agent's alert is in `alerts`
//! with its triggering event, a garbage message is kept in `rejected`, a
//! message published six times is stored once, an event re-sent in other
//! envelopes is stored and counted once, retention deletes old rows,
//! a device whose agent is killed raises `device-silent`, and wrong
//! passwords against the broker raise `hub-auth-failures` from mosquitto's
//! own log.
//!
//! Run as root: `cargo test -p shrike-tests --test workspace -- --test-threads=1`.

mod hub_support;
mod workspace_support;

use std::{process::Command, time::Duration};

use hub_support::RunAgent;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shrike_tests::{
    TempDir,
    broker::{Auth, BrokerConfig, Subscriber, poll_until},
    marker,
    postgres::Postgres,
    require_root,
};
use workspace_support::*;

const EXECS: usize = 40;

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `shrike run` has a flag (the SDK socket's came later; two agents
/// on one machine cannot share its default path).
fn agent_has_flag(flag: &str) -> bool {
    let out = Command::new(shrike_tests::agent_bin()).args(["run", "--help"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains(flag)
}

fn agent(port: u16, client_id: &str, dir: &std::path::Path) -> RunAgent {
    let state = dir.join(client_id);
    std::fs::create_dir_all(&state).unwrap();
    let mut args: Vec<String> = Vec::new();
    if agent_has_flag("--sdk-socket") {
        args.extend(["--sdk-socket".into(), "off".into()]);
    }
    args.extend([
        "--hub".into(),
        format!("mqtt://127.0.0.1:{port}"),
        "--client-id".into(),
        client_id.into(),
        "--state-dir".into(),
        state.display().to_string(),
        "--high-interval".into(),
        "200ms".into(),
        "--low-interval".into(),
        "1s".into(),
        "--aggregate-interval".into(),
        "1s".into(),
        "--health-interval".into(),
        "2s".into(),
    ]);
    RunAgent::start(&args)
}

/// Waits until `f` holds (`limit`), else fails with `what` and the logs.
fn wait(limit: Duration, what: &str, logs: &dyn Fn() -> String, mut f: impl FnMut() -> bool) {
    let ok = poll_until(limit, || {
        let r = f();
        if !r {
            std::thread::sleep(Duration::from_millis(200));
        }
        r
    });
    assert!(ok, "{what} (waited {limit:?})\n{}", logs());
}

/// `stopped: N messages stored` of a workspace's last log line.
fn stored(log: &[String]) -> u64 {
    let line = log.iter().rev().find(|l| l.contains("stopped:")).expect("a stopped: line");
    let at = line.find("stopped: ").unwrap() + "stopped: ".len();
    line[at..].split_whitespace().next().unwrap().parse().unwrap()
}

/// The whole scenario against `db` (a SQLite path or a postgres:// URL).
fn scenario(tag: &str, db: &str) {
    let dir = TempDir::new(tag);
    let mut cfg = BrokerConfig::new(dir.path());
    cfg.user("gw", "right-password").log_to_topic();
    let pw_port = cfg.listener(Auth::Password);
    let broker = cfg.start();
    let port = broker.port;

    let ws_args: Vec<String> = [
        "--broker",
        &format!("mqtt://127.0.0.1:{port}"),
        "--db",
        db,
        "--group",
        "test",
        "--analytics-interval",
        "1s",
        "--silent-after",
        "8s",
        "--retain",
        "30d",
        "--retain-interval",
        "1s",
        "--batch-delay",
        "20ms",
        // Fleet alerts back to the broker, on the default topic.
        "--publish-alerts",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let fleet_alerts = Subscriber::start(port, "shrike/fleet/alerts");
    let w1 = Workspace::start(&ws_args);
    let w2 = Workspace::start(&ws_args);
    let a = agent(port, "gw-a", dir.path());
    let b = agent(port, "gw-b", dir.path());
    let logs = || {
        format!(
            "workspace 1:\n{}\nworkspace 2:\n{}\nbroker:\n{}",
            w1.log().join("\n"),
            w2.log().join("\n"),
            broker.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
        )
    };

    wait(Duration::from_secs(30), "both devices in `devices`", &logs, || {
        number(db, "SELECT COUNT(*) FROM devices WHERE client_id IN ('gw-a', 'gw-b')") == 2
    });
    // Two processes, one new-device alert per device.
    assert_eq!(number(db, "SELECT COUNT(*) FROM alerts WHERE rule = 'new-device' AND device = 'gw-a'"), 1);

    // Every exec counted once per device. (The query commands' own execs
    // carry the marker too: they are not /bin/true.)
    let m = marker("wsexec");
    for _ in 0..EXECS {
        let st = Command::new("/bin/true").arg(&m).status().unwrap();
        assert!(st.success());
    }
    let sum_sql = |device: &str| {
        format!(
            "SELECT SUM(hit_count) FROM events WHERE device = '{device}' AND kind = 'ProcessCreate' \
             AND executable LIKE '%bin/true' AND command_line LIKE '%{m}%'"
        )
    };
    wait(Duration::from_secs(30), &format!("{EXECS} execs of each agent stored"), &logs, || {
        number(db, &sum_sql("gw-a")) >= EXECS as i64 && number(db, &sum_sql("gw-b")) >= EXECS as i64
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(number(db, &sum_sql("gw-a")), EXECS as i64, "gw-a's execs counted once");
    assert_eq!(number(db, &sum_sql("gw-b")), EXECS as i64, "gw-b's execs counted once");

    // An agent's alert, with its triggering event.
    let staged = dir.path().join("staged-true");
    std::fs::copy("/bin/true", &staged).unwrap();
    let m2 = marker("wsalert");
    assert!(Command::new(&staged).arg(&m2).status().unwrap().success());
    let find_alert = || {
        json_lines(&[
            "alerts",
            "--db",
            db,
            "--device",
            "gw-a",
            "--severity",
            "high",
            "--since",
            "1h",
            "--json",
        ])
        .into_iter()
        .find(|a| a["rule"] == "exec-from-tmp")
    };
    wait(Duration::from_secs(20), "an exec-from-tmp alert of gw-a", &logs, || find_alert().is_some());
    let alert = find_alert().unwrap();
    let id = alert["event_id"].as_str().unwrap().to_owned();
    // The triggering exec is low priority: it may come a second after the alert.
    let mut sections = Vec::new();
    wait(Duration::from_secs(10), "the alert's triggering event", &logs, || {
        sections = json_lines(&["event", "--db", db, "--json", &id]);
        sections
            .iter()
            .filter_map(|s| s.get("trigger"))
            .any(|t| t["command_line"].as_str().is_some_and(|c| c.contains(&m2)))
    });
    // (An Alert event may carry other alerts of the same moment too.)
    let mine = |section: &str| {
        sections
            .iter()
            .filter_map(|s| s.get(section))
            .find(|r| r["command_line"].as_str().is_some_and(|c| c.contains(&m2)))
            .cloned()
    };
    assert!(mine("alert").is_some(), "the alert row: {sections:?}");
    let trigger = mine("trigger").unwrap_or_else(|| panic!("the triggering event: {sections:?}"));
    assert_eq!(trigger["kind"], "ProcessCreate");
    assert!(sections.iter().any(|s| s.get("around").is_some()), "the device's events around it");

    // Garbage is kept in `rejected`.
    let m3 = marker("garbage");
    publish(port, "shrike/gw-x/security", format!("garbage {m3}").as_bytes());
    wait(Duration::from_secs(10), "the garbage in rejected", &logs, || {
        number(db, &format!("SELECT COUNT(*) FROM rejected WHERE body LIKE '%{m3}%'")) == 1
    });
    let r = query(db, &format!("SELECT topic, reason FROM rejected WHERE body LIKE '%{m3}%'"));
    assert_eq!(r[0]["topic"], "shrike/gw-x/security");
    assert!(r[0]["reason"].as_str().unwrap().contains("not JSON"), "{r:?}");

    // A message delivered six times (each copy may go to either process) is stored once.
    let m4 = marker("redelivered");
    let agent_id = new_guid();
    let exec = |cmd: &str| json!([{ "Executable": "/bin/echo", "ProcessId": 7, "ParentProcessId": 1, "UserId": "0", "CommandLine": cmd }]);
    let body = message(&agent_id, "ProcessCreate", "Triggered", &utc_ago(0), exec(&m4));
    for _ in 0..6 {
        publish(port, "shrike/gw-r/security", &body);
    }
    let msg_id = hex(&body);
    wait(Duration::from_secs(10), "the repeated message stored", &logs, || {
        number(db, &format!("SELECT COUNT(*) FROM messages WHERE id = '{msg_id}'")) == 1
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(number(db, &format!("SELECT COUNT(*) FROM messages WHERE id = '{msg_id}'")), 1);
    assert_eq!(number(db, &format!("SELECT COUNT(*) FROM events WHERE command_line = '{m4}'")), 1);
    assert_eq!(number(db, "SELECT messages FROM devices WHERE client_id = 'gw-r'"), 1);

    // The same event (one Id) sent again in other bytes, as an agent that
    // re-sends after a crash does: another AgentVersion, the keys in
    // another order, pretty-printed, and once beside a new event. Each copy
    // may go to either process (racing): the event is stored and counted
    // once, the copies with nothing new are duplicates (no `messages` row),
    // the one with a new event is a message with one new event.
    let m6 = marker("resent");
    let ev_id = new_guid();
    let event = |cmd: &str, id: &str| {
        let mut v: Value =
            serde_json::from_slice(&message(&agent_id, "ProcessCreate", "Triggered", &utc_ago(0), exec(cmd)))
                .unwrap();
        v["Events"][0]["Id"] = Value::from(id);
        v["Events"][0].clone()
    };
    let (same, new) = (event(&m6, &ev_id), event(&format!("{m6}-new"), &new_guid()));
    let envelope = |version: &str, events: Vec<Value>| json!({ "AgentVersion": version, "AgentId": agent_id, "MessageSchemaVersion": "1.0", "Events": events });
    let copies: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&envelope("9.9.9", vec![same.clone()])).unwrap(),
        serde_json::to_vec(&envelope("9.9.10", vec![same.clone()])).unwrap(),
        serde_json::to_vec_pretty(&envelope("9.9.9", vec![same.clone()])).unwrap(),
        serde_json::to_vec(&json!({ "Events": [same.clone()], "MessageSchemaVersion": "1.0",
            "AgentId": agent_id, "AgentVersion": "9.9.9" }))
        .unwrap(),
    ];
    for c in &copies {
        publish(port, "shrike/gw-s/security", c);
    }
    let ev_sql = |what: &str| format!("SELECT {what} FROM events WHERE command_line LIKE '{m6}%'");
    wait(Duration::from_secs(10), "the re-sent event stored", &logs, || number(db, &ev_sql("COUNT(*)")) >= 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(number(db, &ev_sql("COUNT(*)")), 1, "the re-sent event stored once");
    assert_eq!(number(db, "SELECT COUNT(*) FROM messages WHERE device = 'gw-s'"), 1);
    assert_eq!(number(db, "SELECT messages FROM devices WHERE client_id = 'gw-s'"), 1);
    // Then beside a new event: a message, with one new event.
    publish(port, "shrike/gw-s/security", &serde_json::to_vec(&envelope("9.9.11", vec![same, new])).unwrap());
    wait(Duration::from_secs(10), "the new event stored", &logs, || number(db, &ev_sql("COUNT(*)")) == 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(number(db, &ev_sql("COUNT(*)")), 2);
    assert_eq!(number(db, &ev_sql("SUM(hit_count)")), 2);
    assert_eq!(
        number(db, &format!("SELECT COUNT(*) FROM events WHERE event_id = '{ev_id}' AND device = 'gw-s'")),
        1
    );
    assert_eq!(number(db, "SELECT COUNT(*) FROM messages WHERE device = 'gw-s'"), 2);
    assert_eq!(number(db, "SELECT messages FROM devices WHERE client_id = 'gw-s'"), 2);
    assert_eq!(number(db, "SELECT events FROM devices WHERE client_id = 'gw-s'"), 2);

    // Retention: an event 40 days old is taken (its message row stays: it
    // was received now) and deleted by the 30-day retention.
    let m5 = marker("old");
    let old = message(&agent_id, "ProcessCreate", "Triggered", &utc_ago(40 * 86400), exec(&m5));
    let old_id = hex(&old);
    publish(port, "shrike/gw-r/security", &old);
    wait(Duration::from_secs(15), "the old message taken, its event deleted by retention", &logs, || {
        number(db, &format!("SELECT COUNT(*) FROM messages WHERE id = '{old_id}' AND events = 1")) == 1
            && number(db, &format!("SELECT COUNT(*) FROM events WHERE command_line = '{m5}'")) == 0
    });
    assert!(
        w1.log()
            .iter()
            .chain(w2.log().iter())
            .any(|l| l.contains("retention: deleted") && l.contains("events")),
        "no retention line\n{}",
        logs()
    );

    // Wrong passwords against the broker: mosquitto's log, one alert.
    for _ in 0..6 {
        bad_login(pw_port, "gw", "wrong-password");
    }
    wait(Duration::from_secs(15), "hub-auth-failures", &logs, || {
        number(db, "SELECT COUNT(*) FROM alerts WHERE rule = 'hub-auth-failures'") >= 1
    });
    let a_rows = query(db, "SELECT title, device FROM alerts WHERE rule = 'hub-auth-failures'");
    assert_eq!(a_rows.len(), 1, "stored once by two processes: {a_rows:?}");
    assert!(a_rows[0]["title"].as_str().unwrap().contains("127.0.0.1"), "{a_rows:?}");

    // A killed agent: its device falls silent.
    let _ = b.kill9();
    wait(Duration::from_secs(30), "device-silent for gw-b", &logs, || {
        number(db, "SELECT COUNT(*) FROM alerts WHERE rule = 'device-silent' AND device = 'gw-b'") == 1
    });
    assert_eq!(
        number(db, "SELECT COUNT(*) FROM alerts WHERE rule = 'device-silent' AND device = 'gw-a'"),
        0,
        "gw-a's agent is running"
    );
    // The fleet alerts were published to shrike/fleet/alerts as JSON, each
    // stored alert once (by the process that stored it): the published Ids
    // are the stored event_ids, none twice.
    let published = |rule: &str, device: &str| {
        fleet_alerts.with_messages(|ms| {
            ms.iter().map(|m| m.json()).filter(|j| j["RuleId"] == rule && j["Device"] == device).count()
        })
    };
    let seen = poll_until(Duration::from_secs(10), || {
        published("device-silent", "gw-b") >= 1 && published("hub-auth-failures", "(fleet)") >= 1
    });
    assert!(seen, "fleet alerts not published: {:?}\n{}", fleet_alerts.messages(), logs());
    let rules = "('device-silent', 'hub-auth-failures', 'new-device')";
    let (mut stored_ids, mut published_ids) = (Vec::new(), Vec::new());
    let same = poll_until(Duration::from_secs(10), || {
        stored_ids =
            query(db, &format!("SELECT event_id FROM alerts WHERE rule IN {rules} ORDER BY event_id"))
                .iter()
                .map(|r| r["event_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>();
        published_ids = fleet_alerts.with_messages(|ms| {
            let mut ids: Vec<String> = ms
                .iter()
                .map(|m| m.json())
                .filter(|j| rules.contains(&format!("'{}'", j["RuleId"].as_str().unwrap_or("?"))))
                .map(|j| j["Id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        });
        stored_ids == published_ids
    });
    assert!(same, "stored {stored_ids:?}\npublished {published_ids:?}");
    let silent = fleet_alerts.with_messages(|ms| {
        ms.iter().map(|m| m.json()).find(|j| j["RuleId"] == "device-silent" && j["Device"] == "gw-b").unwrap()
    });
    assert_eq!(silent["Severity"], "high");
    assert!(silent["Title"].as_str().unwrap().contains("gw-b"), "{silent}");

    let devices = json_lines(&["devices", "--db", db, "--json"]);
    let status = |id: &str| devices.iter().find(|d| d["client_id"] == id).map(|d| d["status"].clone());
    assert_eq!(status("gw-a"), Some(Value::from("online")));

    a.stop();
    let (l1, l2) = (w1.stop(), w2.stop());
    let (s1, s2) = (stored(&l1), stored(&l2));
    eprintln!("workspace 1 stored {s1} messages, workspace 2 {s2}");
    assert!(s1 > 0 && s2 > 0, "both processes of the group took a share: {s1} and {s2}");
}

#[test]
fn two_agents_two_workspaces_sqlite() {
    if !require_root() || !shrike_tests::broker::available("workspace sqlite") {
        return;
    }
    let dir = TempDir::new("ws-sqlite");
    let db = dir.path().join("workspace.db").display().to_string();
    scenario("ws-sqlite-run", &db);
    // The query command is read-only.
    let (code, _, err) = command(&["query", "--db", &db, "DELETE FROM events"]);
    assert_ne!(code, 0);
    assert!(err.contains("read"), "{err}");
}

#[test]
fn two_agents_two_workspaces_postgres() {
    if !require_root()
        || !shrike_tests::broker::available("workspace postgres")
        || !Postgres::available("workspace postgres")
    {
        return;
    }
    let pg = Postgres::start("e2e");
    scenario("ws-pg-run", &pg.url());
    let (code, _, err) = command(&["query", "--db", &pg.url(), "DELETE FROM events"]);
    assert_ne!(code, 0);
    assert!(err.contains("read-only"), "{err}");
}

/// `GET /metrics` of a workspace's page.
fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A database that never comes back (the PostgreSQL server stopped for
/// good): the workspace retries with back-off, says so in its log and in
/// /metrics, then exits with code 1 after `--db-retry-for` without
/// acknowledging what it did not store; the broker keeps those messages
/// for its persistent session, and a process started again with the same
/// `--client-id` (here on SQLite) stores them.
#[test]
fn a_database_gone_for_good_stops_the_workspace_without_acks() {
    if !require_root()
        || !shrike_tests::broker::available("workspace db gone")
        || !Postgres::available("workspace db gone")
    {
        return;
    }
    let dir = TempDir::new("ws-db-gone");
    let broker = BrokerConfig::new(dir.path()).start();
    let port = broker.port;
    let pg = Postgres::start("gone");
    let http = shrike_tests::free_port("127.0.0.1");
    let args = |db: &str| -> Vec<String> {
        [
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--db",
            db,
            "--client-id",
            "ws-gone",
            "--db-retry-for",
            "5s",
            "--batch-delay",
            "20ms",
            "--no-broker-log",
            "--http",
            &format!("127.0.0.1:{http}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let w = Workspace::start(&args(&pg.url()));
    let agent_id = new_guid();
    let exec = |cmd: &str| json!([{ "Executable": "/bin/echo", "ProcessId": 7, "ParentProcessId": 1, "UserId": "0", "CommandLine": cmd }]);
    let m = marker("dbgone");
    let send = |n: usize| {
        let body = message(&agent_id, "ProcessCreate", "Triggered", &utc_ago(0), exec(&format!("{m}-{n}")));
        publish(port, "shrike/gw-g/security", &body);
    };
    send(0);
    let count =
        |db: &str| number(db, &format!("SELECT COUNT(*) FROM events WHERE command_line LIKE '{m}-%'"));
    let logs = || w.log().join("\n");
    wait(Duration::from_secs(10), "the first message stored in PostgreSQL", &logs, || count(&pg.url()) == 1);

    pg.stop();
    send(1);
    send(2);
    let failing = poll_until(Duration::from_secs(10), || {
        let t = metrics(http);
        t.contains("\nshrike_workspace_write_failing 1\n")
            && !t.contains("\nshrike_workspace_write_errors_total 0\n")
    });
    assert!(failing, "/metrics does not show the failing writes:\n{}\n{}", metrics(http), logs());
    let (status, log) = w.wait_exit(Duration::from_secs(30));
    let text = log.join("\n");
    assert_eq!(status.and_then(|s| s.code()), Some(1), "exit status {status:?}; log:\n{text}");
    let retries = log.iter().filter(|l| l.contains("failed (attempt")).count();
    assert!(retries >= 2, "each failure logged: {retries}\n{text}");
    assert!(
        text.contains("giving up: the database refused every write for 5s")
            && text.contains("not acknowledged"),
        "{text}"
    );

    // The same session again, on a database that works: the broker hands
    // it the two messages that were never acknowledged.
    let db = dir.path().join("after.db").display().to_string();
    let w2 = Workspace::start(&args(&db));
    let logs2 = || w2.log().join("\n");
    wait(Duration::from_secs(15), "the two unacknowledged messages redelivered", &logs2, || count(&db) == 2);
    for n in 1..=2 {
        assert_eq!(number(&db, &format!("SELECT COUNT(*) FROM events WHERE command_line = '{m}-{n}'")), 1);
    }
    w2.stop();
}
