//! Sigma rules end to end: `shrike events --rules tests/rules/shrike-test.yml`
//! fires on real execs and connects and not on their look-alikes, the
//! event_count correlation fires on real execs; a rule file with an error
//! stops the agent (exit 2, file and line); `shrike rules check` and
//! `shrike rules test` on a recording, without the kernel.

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use base64::Engine as _;
use shrike_tests::{Agent, Value, agent_bin, marker, require_root, workspace_root};

fn rules(name: &str) -> PathBuf {
    workspace_root().join("tests/rules").join(name)
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(st.success(), "{cmd} {args:?}: {st}");
}

fn alerts_of(events: &[Value], rule: &str) -> Vec<Value> {
    events.iter().filter(|e| e["kind"] == "alert" && e["rule"] == rule).cloned().collect()
}

fn shrike(args: &[&str]) -> Output {
    Command::new(agent_bin()).args(args).env("NO_COLOR", "1").output().expect("run shrike")
}

/// The triggering exec of an alert carries `marker`.
fn on_marker(alert: &Value, marker: &str) -> bool {
    alert["event"]["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == marker))
}

#[test]
fn rules_fire_on_real_events_and_not_on_look_alikes() {
    if !require_root() {
        return;
    }
    let file = rules("shrike-test.yml");
    let agent = Agent::start(&["--rules", file.to_str().unwrap(), "--kinds", "exec,connect,alert"]);
    let m = marker("m");

    // contains|all + endswith + not filter.
    run("/bin/true", &["shrike-sigma-marker", &m, "--alpha", "--beta"]);
    run("/bin/true", &["shrike-sigma-marker", &m, "--alpha"]);
    run("/bin/true", &["shrike-sigma-marker", &m, "--alpha", "--beta", "--dry-run"]);
    run("/bin/echo", &["shrike-sigma-marker", &m, "--alpha", "--beta"]);
    // re: three digits at the end.
    let re_yes = format!("{m}-shrike-sigma-re-123");
    let re_no = format!("{m}-shrike-sigma-re-1234");
    run("/bin/true", &[&re_yes]);
    run("/bin/true", &[&re_no]);
    // base64offset: the marker encoded behind one byte; a look-alike encoding
    // another word (different early: the last bits of the needle's encoding
    // are cut, as the specification says, so `b64` and `b65` look alike).
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let enc_yes = b64(&format!("xshrike-sigma-b64 {m}"));
    let enc_no = b64(&format!("xshrike-zigma-b64 {m}"));
    run("/bin/true", &[&enc_yes, &m]);
    run("/bin/true", &[&enc_no, &m]);
    // cidr + port + Initiated: a connect to 127.0.0.1:4719, and to 4720.
    let listener = TcpListener::bind("127.0.0.1:4719").ok();
    let _ = TcpStream::connect_timeout(&"127.0.0.1:4719".parse().unwrap(), Duration::from_secs(1));
    let _ = TcpStream::connect_timeout(&"127.0.0.1:4720".parse().unwrap(), Duration::from_secs(1));
    drop(listener);

    let me = std::process::id();
    agent.wait_for("the contains|all alert", |e| {
        e["kind"] == "alert" && e["rule"] == "shrike-test-all" && on_marker(e, &m)
    });
    agent.wait_for("the re alert", |e| {
        e["kind"] == "alert" && e["rule"] == "shrike-test-re" && on_marker(e, &re_yes)
    });
    agent.wait_for("the base64offset alert", |e| {
        e["kind"] == "alert" && e["rule"] == "shrike-test-b64" && on_marker(e, &enc_yes)
    });
    let net = agent.wait_for("the network alert", |e| {
        e["kind"] == "alert" && e["rule"] == "shrike-test-net" && e["pid"] == me
    });
    // Every look-alike was seen by the agent before we count alerts.
    agent.wait_for("the last look-alike exec", |e| shrike_tests::exec_with_marker(e, &enc_no));
    agent.wait_for("the look-alike connect", |e| {
        e["kind"] == "connect" && e["remote_port"] == 4720 && e["pid"] == me
    });
    let (_, events) = agent.stop_with_events();

    let all = alerts_of(&events, "shrike-test-all");
    assert_eq!(all.iter().filter(|a| on_marker(a, &m)).count(), 1, "only the exact command: {all:#?}");
    let a = &all[0];
    assert_eq!(a["severity"], "high");
    assert_eq!(a["source"], "sigma");
    assert_eq!(a["title"], "Shrike test - marker command with both flags");
    assert_eq!(a["tags"], serde_json::json!(["attack.execution", "attack.t1059"]));
    assert!(
        a["description"].as_str().unwrap().contains("False positives: None, outside Shrike's tests"),
        "{a}"
    );
    assert_eq!(a["event"]["kind"], "exec");
    assert_eq!(a["event"]["filename"], "/bin/true");
    assert_eq!(a["pid"], a["event"]["pid"]);

    let re: Vec<_> = alerts_of(&events, "shrike-test-re")
        .into_iter()
        .filter(|a| on_marker(a, &re_yes) || on_marker(a, &re_no))
        .collect();
    assert_eq!(re.len(), 1, "{re:#?}");
    let b: Vec<_> = alerts_of(&events, "shrike-test-b64").into_iter().filter(|a| on_marker(a, &m)).collect();
    assert_eq!(b.len(), 1, "{b:#?}");
    assert!(on_marker(&b[0], &enc_yes));

    assert_eq!(net["event"]["kind"], "connect");
    assert_eq!(net["event"]["remote_port"], 4719);
    let nets: Vec<_> = alerts_of(&events, "shrike-test-net").into_iter().filter(|a| a["pid"] == me).collect();
    assert!(nets.iter().all(|a| a["event"]["remote_port"] == 4719), "{nets:#?}");
}

#[test]
fn the_correlation_fires_on_a_burst_of_real_execs() {
    if !require_root() {
        return;
    }
    let file = rules("shrike-test.yml");
    let agent = Agent::start(&["--rules", file.to_str().unwrap(), "--kinds", "exec,alert"]);
    let m = marker("burst");
    for _ in 0..4 {
        run("/bin/true", &["shrike-sigma-burst", &m]);
    }
    agent.wait_for_count(4, "four burst execs", |e| shrike_tests::exec_with_marker(e, &m));
    // Four are not enough (gte: 5), and the member rule alerts on its own never.
    std::thread::sleep(Duration::from_millis(300));
    assert!(alerts_of(&agent.events(), "shrike-test-burst").is_empty());
    run("/bin/true", &["shrike-sigma-burst", &m]);
    let a =
        agent.wait_for("the correlation alert", |e| e["kind"] == "alert" && e["rule"] == "shrike-test-burst");
    assert_eq!(a["details"]["correlation"], "event_count");
    assert_eq!(a["details"]["count"], "5");
    assert!(a["details"]["group"].as_str().unwrap().starts_with("User="), "{a}");
    assert!(on_marker(&a, &m), "the last exec: {a}");
    let (_, events) = agent.stop_with_events();
    assert!(alerts_of(&events, "shrike-test-burst-member").is_empty());
}

#[test]
fn a_rule_with_an_error_stops_the_agent() {
    if !require_root() {
        return;
    }
    let broken = rules("broken");
    let out = shrike(&["events", "--rules", broken.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tests/rules/broken/bad-modifier.yml:10:"), "{err}");
    assert!(err.contains("startwith"), "{err}");
}

#[test]
fn rules_check_and_test_without_the_kernel() {
    // No root needed.
    let out = shrike(&["rules", "check", rules("shrike-test.yml").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("1 files: 6 rules loaded (5 detection, 1 correlation), 0 skipped, 0 errors"),
        "{text}"
    );

    let out = shrike(&["rules", "check", rules("").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.lines().next().unwrap().contains("broken/bad-modifier.yml:10: "), "{text}");
    assert!(text.contains("1 errors"), "{text}");

    // A recording: two matching execs, a look-alike, a stats line, a bad line.
    let dir = std::env::temp_dir().join(format!("shrike-sigma-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("events.jsonl");
    let exec = |argv: &[&str], t: &str| {
        serde_json::json!({
            "time": t, "ktime_ns": 1, "pid": 4242, "tid": 4242, "ppid": 1, "uid": 0, "gid": 0,
            "user": "root", "comm": "true", "exe": "/usr/bin/true", "kind": "exec",
            "filename": "/usr/bin/true", "argv": argv, "args_truncated": false,
            "filename_truncated": false, "result": 0, "success": true, "parent_exe": "/usr/bin/bash"
        })
        .to_string()
    };
    let lines = [
        exec(&["true", "shrike-sigma-marker", "--alpha", "--beta"], "2026-12-06T04:00:00.000000001Z"),
        exec(&["true", "shrike-sigma-marker", "--alpha"], "2026-12-06T04:00:01Z"),
        r#"{"kind":"stats","received":3}"#.to_owned(),
        "{not json".to_owned(),
        exec(&["true", "x-shrike-sigma-re-007"], "2026-12-06T04:00:02Z"),
    ];
    std::fs::write(&rec, lines.join("\n") + "\n").unwrap();
    let out = shrike(&[
        "rules",
        "test",
        rules("shrike-test.yml").to_str().unwrap(),
        "--events",
        rec.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:4: ", rec.display())), "the bad line named: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    let alerts: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let rules: Vec<&str> = alerts.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["shrike-test-all", "shrike-test-re"], "{alerts:#?}");
    // As `shrike events` prints them: the triggering event's header and the
    // event itself exactly as recorded.
    assert_eq!(alerts[0]["kind"], "alert");
    assert_eq!(alerts[0]["pid"], 4242);
    assert_eq!(alerts[0]["time"], "2026-12-06T04:00:00.000000001Z");
    let recorded: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(alerts[0]["event"], recorded);
    let _ = std::fs::remove_dir_all(&dir);
}
