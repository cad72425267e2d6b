//! The learnt baseline against the real kernel: `shrike events` learns for
//! a few seconds (`--baseline-learn`) in a state folder of its own, then a
//! new binary and a new destination raise `baseline-*` alerts and what was
//! learnt stays quiet (a binary, a connection, a write to a watched file);
//! the profile survives a restart (no relearning), and
//! a corrupted profile is reported and relearnt without a crash.

mod hub_support;

use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use shrike_tests::{Agent, TempDir, Value, agent_bin, helper_bin, is, require_root, run_helper, run_to_end};

fn start(state: &Path, learn: &str, watch: &Path) -> Agent {
    Agent::start(&[
        "--state-dir",
        state.to_str().expect("utf-8"),
        "--baseline-learn",
        learn,
        "--watch",
        watch.to_str().expect("utf-8"),
    ])
}

/// A shell writes `file` (under the watched folder); waits for the `file`
/// event; returns the shell's pid.
fn write(agent: &Agent, file: &Path) -> u32 {
    let script = format!("echo x > {}", file.display());
    let (pid, _, st) = run_to_end(Command::new("/bin/sh").args(["-c", &script]));
    assert!(st.success(), "{script}: {st}");
    agent.wait_for(&format!("the write of {}", file.display()), |e| is(e, "file", pid));
    pid
}

fn wait_log(agent: &Agent, what: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(l) = agent.log().into_iter().find(|l| l.contains(what)) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the log within {limit:?}:\n{}",
            agent.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Baseline alerts about process `pid`.
fn baseline_alerts(agent: &Agent, pid: u32) -> Vec<Value> {
    agent.matching(|e| {
        e["kind"] == "alert"
            && e["rule"].as_str().is_some_and(|r| r.starts_with("baseline-"))
            && e["event"]["pid"] == pid
    })
}

/// Runs `path`; waits for its exec event; returns its pid.
fn run(agent: &Agent, path: &str) -> u32 {
    let (pid, _, st) = run_to_end(&mut Command::new(path));
    assert!(st.success(), "{path}: {st}");
    agent.wait_for(&format!("the exec of {path}"), |e| is(e, "exec", pid));
    pid
}

/// The helper connects to 127.0.0.1:`port`; waits for the connect event.
fn connect(agent: &Agent, addr: &str, port: u16) -> u32 {
    let (pid, _, st) = run_helper(helper_bin!(), &["connect-tcp", addr, &port.to_string()]);
    assert!(st.success(), "connect to {addr}:{port}: {st}");
    agent.wait_for(&format!("the connect to {addr}:{port}"), |e| is(e, "connect", pid));
    pid
}

/// No baseline alert about any of `pids` (their events have arrived; a
/// moment for the alerts that would follow them).
fn assert_quiet(agent: &Agent, pids: &[u32], what: &str) {
    std::thread::sleep(Duration::from_millis(700));
    for &pid in pids {
        let got = baseline_alerts(agent, pid);
        assert!(got.is_empty(), "{what}: baseline alerts about pid {pid}: {got:#?}");
    }
}

fn show(state: &Path) -> Value {
    let out = Command::new(agent_bin())
        .args(["baseline", "show", "--json", "--state-dir", state.to_str().expect("utf-8")])
        .output()
        .expect("shrike baseline show");
    assert!(out.status.success(), "baseline show: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn learns_alerts_survives_a_restart_and_a_corrupt_file() {
    if !require_root() {
        return;
    }
    let state = TempDir::new("baseline-state");
    let bins = TempDir::new("baseline-bins");
    let watched = TempDir::new("baseline-watched");
    let (conf, other_conf) = (watched.path().join("a.conf"), watched.path().join("b.conf"));
    let known = TcpListener::bind("127.0.0.1:0").expect("listener");
    let known_port = known.local_addr().unwrap().port();
    let other = TcpListener::bind("127.0.0.2:0").expect("listener on 127.0.0.2");
    let other_port = other.local_addr().unwrap().port();
    let third = TcpListener::bind("127.0.0.1:0").expect("listener");
    let third_port = third.local_addr().unwrap().port();
    let helper = helper_bin!().to_owned();

    // 1. Learning: /bin/true and a connection to a local port.
    let agent = start(state.path(), "5s", watched.path());
    let learnt = [run(&agent, "/bin/true"), connect(&agent, "127.0.0.1", known_port), write(&agent, &conf)];
    wait_log(&agent, "baseline learnt", Duration::from_secs(30));
    assert_quiet(&agent, &learnt, "during learning");

    // After learning: the learnt ones are quiet...
    let again = [run(&agent, "/bin/true"), connect(&agent, "127.0.0.1", known_port), write(&agent, &conf)];
    assert_quiet(&agent, &again, "learnt behaviour");
    // ...a new binary and a new destination fire, once.
    let mytrue = bins.path().join("mytrue");
    std::fs::copy("/usr/bin/true", &mytrue).unwrap();
    let mytrue = mytrue.to_string_lossy().into_owned();
    let pid = run(&agent, &mytrue);
    let a = agent.wait_for("baseline-new-executable", |e| {
        e["kind"] == "alert" && e["rule"] == "baseline-new-executable" && e["event"]["pid"] == pid
    });
    assert_eq!((a["severity"].as_str(), a["source"].as_str()), (Some("low"), Some("builtin")), "{a}");
    assert_eq!(a["details"]["new"], mytrue.as_str(), "{a}");
    assert!(a["details"]["known_count"].as_str().unwrap().parse::<u32>().unwrap() >= 2, "{a}");
    assert!(a["description"].as_str().unwrap().contains("not in the baseline"), "{a}");
    let pid = connect(&agent, "127.0.0.2", other_port);
    let a = agent.wait_for("baseline-new-destination", |e| {
        e["kind"] == "alert" && e["rule"] == "baseline-new-destination" && e["event"]["pid"] == pid
    });
    assert_eq!(a["details"]["new"], format!("127.0.0.0/24:{other_port}").as_str(), "{a}");
    assert_eq!(a["details"]["executable"], helper.as_str(), "{a}");
    assert!(
        a["details"]["known"].as_str().unwrap().contains(&format!("127.0.0.0/24:{known_port}")),
        "what was known is named: {a}"
    );
    assert_eq!(baseline_alerts(&agent, pid).len(), 1, "one alert: {:#?}", baseline_alerts(&agent, pid));
    // A watched file the shell never wrote.
    let pid = write(&agent, &other_conf);
    let a = agent.wait_for("baseline-new-file-write", |e| {
        e["kind"] == "alert" && e["rule"] == "baseline-new-file-write" && e["event"]["pid"] == pid
    });
    assert_eq!(a["details"]["new"], other_conf.to_str().unwrap(), "{a}");
    assert_eq!(a["details"]["known"], conf.to_str().unwrap(), "{a}");
    let repeat = [run(&agent, &mytrue), connect(&agent, "127.0.0.2", other_port), write(&agent, &other_conf)];
    assert_quiet(&agent, &repeat, "a repeat of what was new");
    let stats = agent.stop();
    assert_eq!(stats.0["detect"]["baseline"]["learning"], false, "{}", stats.0);

    // The profile on disk, as `shrike baseline show` prints it.
    let p = show(state.path());
    assert!(p["executables"]["/bin/true"]["users"]["values"].is_array(), "{p}");
    assert!(p["executables"][mytrue.as_str()].is_object(), "{p}");
    let dests = p["executables"][helper.as_str()]["destinations"]["values"].to_string();
    assert!(dests.contains(&format!("127.0.0.0/24:{other_port}")), "{dests}");

    // 2. Restart on the same state: no relearning, the learnt ones stay quiet.
    let agent = start(state.path(), "5s", watched.path());
    wait_log(&agent, "baseline profile loaded", Duration::from_secs(5));
    let quiet = [
        run(&agent, "/bin/true"),
        run(&agent, &mytrue),
        connect(&agent, "127.0.0.1", known_port),
        connect(&agent, "127.0.0.2", other_port),
    ];
    assert_quiet(&agent, &quiet, "after a restart");
    let pid = connect(&agent, "127.0.0.1", third_port);
    agent.wait_for("a new destination after the restart", |e| {
        e["kind"] == "alert" && e["rule"] == "baseline-new-destination" && e["event"]["pid"] == pid
    });
    agent.stop();

    // 3. A corrupted profile: reported (file and reason), relearnt, no crash.
    let file = state.path().join("baseline.profile");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() - 10;
    bytes[mid] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let agent = start(state.path(), "1h", watched.path());
    let line = wait_log(&agent, "baseline profile unusable", Duration::from_secs(5));
    assert!(line.contains(file.to_str().unwrap()) && line.contains("corrupt"), "{line}");
    let learning = [run(&agent, &mytrue), connect(&agent, "127.0.0.1", third_port)];
    let other_bin = bins.path().join("mytrue2");
    std::fs::copy("/usr/bin/true", &other_bin).unwrap();
    let learning2 = run(&agent, other_bin.to_str().unwrap());
    assert_quiet(&agent, &[learning[0], learning[1], learning2], "learning again");
    let stats = agent.stop();
    assert_eq!(stats.0["detect"]["baseline"]["learning"], true, "{}", stats.0);
    assert!(state.path().join("baseline.profile.damaged").exists());
    let p = show(state.path());
    assert!(p["executables"][mytrue.as_str()].is_object(), "relearnt: {p}");
    assert!(
        p["executables"][helper.as_str()]["destinations"]["values"]
            .to_string()
            .contains(&third_port.to_string())
    );
    assert!(
        !p["executables"][helper.as_str()]["destinations"]["values"]
            .to_string()
            .contains(&other_port.to_string())
    );

    // `shrike baseline reset`: an empty profile, learning not started.
    let out = Command::new(agent_bin())
        .args(["baseline", "reset", "--state-dir", state.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = show(state.path());
    assert_eq!(p["executables"], serde_json::json!({}), "{p}");
    assert_eq!(p["learn_started"], "-", "{p}");
    drop((known, other, third));
}

/// `shrike run`: the agent id lives in the state folder; a SIGHUP saves the
/// running profile before the rebuilt stage loads it (what was learnt a
/// moment before is in it, well before the minute's save); a `shrike
/// baseline reset` made while the agent runs is taken over at the next
/// SIGHUP, not overwritten by the running profile.
#[test]
fn shrike_run_keeps_the_profile_over_sighup_and_takes_a_reset() {
    if !require_root() {
        return;
    }
    let state = TempDir::new("baseline-run");
    let st = state.path().to_str().unwrap().to_owned();
    let args: Vec<String> =
        ["--dry-run", "--state-dir", &st, "--baseline-learn", "1h"].iter().map(|s| s.to_string()).collect();
    let mut agent = hub_support::RunAgent::start(&args);
    assert!(state.path().join("agent-id").is_file(), "the agent id is in the state folder");
    assert!(agent.wait_log(Duration::from_secs(5), "no baseline profile yet"), "{:?}", agent.log());
    let bins = TempDir::new("baseline-run-bins");
    let tool = bins.path().join("learnt-before-sighup");
    std::fs::copy("/usr/bin/true", &tool).unwrap();
    let (_, _, status) = run_to_end(&mut Command::new(&tool));
    assert!(status.success());
    // The exec reaches the stage within the reader's poll interval.
    std::thread::sleep(Duration::from_secs(2));
    agent.signal(libc::SIGHUP);
    assert!(agent.wait_log(Duration::from_secs(10), "detection rebuilt"), "{:?}", agent.log());
    assert!(agent.wait_log(Duration::from_secs(5), "baseline profile loaded"), "{:?}", agent.log());
    let p = show(state.path());
    assert!(p["executables"][tool.to_str().unwrap()].is_object(), "saved before the rebuild: {p}");
    let before = p["id"].clone();

    let out = Command::new(agent_bin()).args(["baseline", "reset", "--state-dir", &st]).output().unwrap();
    assert!(out.status.success());
    let reset = show(state.path())["id"].clone();
    assert_ne!(reset, before);
    agent.signal(libc::SIGHUP);
    assert!(agent.wait_log(Duration::from_secs(10), "reset on disk"), "{:?}", agent.log());
    agent.stop();
    let p = show(state.path());
    assert_eq!(p["id"], reset, "the reset profile was kept, not overwritten: {p}");
    assert!(p["executables"][tool.to_str().unwrap()].is_null(), "{p}");
}
