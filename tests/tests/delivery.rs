//! Delivery when things go wrong, with the real agent and a real mosquitto:
//! the agent SIGKILLed while events wait in memory (the journal delivers
//! them after the restart), and the broker coming back after a long outage
//! (the reconnect backoff is capped, so delivery resumes within seconds).
//!
//! Run as root: `cargo test -p shrike-tests --test delivery -- --test-threads=1`.

mod hub_support;

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use hub_support::*;
use serde_json::Value;
use shrike_tests::{TempDir, marker, require_root};

fn agent_args(port: u16, dir: &Path, id: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--hub",
        &format!("mqtt://127.0.0.1:{port}"),
        "--state-dir",
        &dir.join(format!("{id}-state")).display().to_string(),
        "--client-id",
        id,
        // Tests run beside other agents: no shared SDK socket.
        "--sdk-socket",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The `i` of each `/bin/true {marker} {i}` ProcessCreate on `topic`.
fn marked(msgs: &[Received], topic: &str, marker: &str) -> BTreeSet<u32> {
    let on: Vec<Received> = msgs.iter().filter(|m| m.topic == topic).cloned().collect();
    let (events, _) = unique_events(&on);
    events
        .iter()
        .filter_map(|e| marked_create(e, marker))
        .filter_map(|item| item["CommandLine"].as_str()?.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// HitCounts summed per `i` of `/bin/true {marker} {i}` on `topic`, each
/// event Id counted once.
fn marked_hits(msgs: &[Received], topic: &str, marker: &str) -> std::collections::BTreeMap<u32, u64> {
    let on: Vec<Received> = msgs.iter().filter(|m| m.topic == topic).cloned().collect();
    let (events, _) = unique_events(&on);
    let mut sums = std::collections::BTreeMap::new();
    for item in events.iter().filter_map(|e| marked_create(e, marker)) {
        if let Some(i) = item["CommandLine"].as_str().and_then(|c| c.rsplit(' ').next()?.parse().ok()) {
            *sums.entry(i).or_default() += hits(item);
        }
    }
    sums
}

/// DroppedEventsStatistics the journal reported (events a kill lost).
fn journal_drops(msgs: &[Received], topic: &str) -> u64 {
    let mut n = 0;
    for m in msgs.iter().filter(|m| m.topic == topic) {
        let v: Value = m.json();
        for e in v["Events"].as_array().into_iter().flatten() {
            if e["Name"] == "DroppedEventsStatistics" {
                for item in e["Payload"].as_array().into_iter().flatten() {
                    if item["ExtraDetails"]["Source"] == "journal" {
                        n += item["DroppedEvents"].as_u64().unwrap_or(0);
                    }
                }
            }
        }
    }
    n
}

/// 50 marked execs wait in memory (60 s aggregation and batching); the
/// agent is SIGKILLed 1.5 s after the last one. None has reached the
/// broker; after a restart on the same state folder all 50 arrive (without
/// the journal all 50 were lost, uncounted).
#[test]
fn a_sigkill_loses_nothing_received_a_second_before() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("delivery-kill");
    let broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let id = "journalkill";
    let args = agent_args(
        broker.port,
        dir.path(),
        id,
        &["--low-interval", "60s", "--aggregate-interval", "60s", "--health-interval", "1h"],
    );
    let mut agent = RunAgent::start(&args);
    assert!(agent.wait_log(Duration::from_secs(20), "journal started"), "{:?}", agent.log());
    assert!(agent.wait_log(Duration::from_secs(10), "MQTT connected"), "{:?}", agent.log());
    let m = marker("jkill");
    const N: u32 = 50;
    for i in 0..N {
        run_true(&[&m, &i.to_string()]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let topic = format!("shrike/{id}/security");
    let before = marked(&sub.messages(), &topic, &m);
    let log = agent.kill9();
    assert!(before.is_empty(), "the 60 s intervals held them in memory, yet {before:?} arrived");
    let journal = dir.path().join(format!("{id}-state/spool/journal"));
    let files: Vec<String> = std::fs::read_dir(&journal)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    eprintln!("[delivery] journal after SIGKILL: {files:?}");

    let agent2 = RunAgent::start(&args);
    let ok = sub.wait_until(Duration::from_secs(30), |msgs| marked(msgs, &topic, &m).len() >= N as usize);
    let log2 = agent2.stop();
    let msgs = sub.messages();
    let got = marked(&msgs, &topic, &m);
    let missing: Vec<u32> = (0..N).filter(|i| !got.contains(i)).collect();
    assert!(
        ok && missing.is_empty(),
        "missing {missing:?} after the restart; first run:\n{}\nsecond run:\n{}",
        log.join("\n"),
        log2.join("\n")
    );
    // Each exec once: none both replayed and sent from the spool (under another Id).
    let twice: Vec<(u32, u64)> =
        marked_hits(&msgs, &topic, &m).into_iter().filter(|(_, h)| *h != 1).collect();
    assert!(twice.is_empty(), "HitCounts other than 1: {twice:?}");
    let replay = log2.iter().find(|l| l.contains("delivering again")).expect("the replay is logged");
    eprintln!("[delivery] {N} of {N} delivered after SIGKILL; {replay}");
    assert!(field(replay, "replayed") >= u64::from(N), "{replay}");
    // What the kill did lose (events of the last ~200 ms) is reported, never more than was there.
    eprintln!("[delivery] reported lost by the journal: {}", journal_drops(&msgs, &topic));
    // The clean stop compacted the journal: a third start has nothing to replay.
    let mut agent3 = RunAgent::start(&args);
    assert!(agent3.wait_log(Duration::from_secs(20), "journal started"));
    let log3 = agent3.stop();
    assert!(!log3.iter().any(|l| l.contains("delivering again")), "{log3:?}");
}

/// The broker is away for 20 s (long enough for the old backoff to wait
/// 16 s), then returns: a high-priority event made right after its return
/// arrives within 5 s.
#[test]
fn delivery_resumes_within_seconds_of_the_broker_return() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("delivery-reconnect");
    let mut broker = Broker::start(dir.path(), "", &[]);
    let id = "reconnect";
    let args =
        agent_args(broker.port, dir.path(), id, &["--priority", "exec=high", "--high-interval", "200ms"]);
    let mut agent = RunAgent::start(&args);
    assert!(agent.wait_log(Duration::from_secs(10), "MQTT connected"), "{:?}", agent.log());
    broker.stop();
    std::thread::sleep(Duration::from_secs(20));
    broker.restart();
    let back = Instant::now();
    let sub = Subscriber::start(broker.port, "shrike/#");
    let m = marker("back");
    run_true(&[&m, "0"]);
    let topic = format!("shrike/{id}/security");
    let ok = sub.wait_until(Duration::from_secs(30), |msgs| !marked(msgs, &topic, &m).is_empty());
    let took = back.elapsed();
    let log = agent.stop();
    assert!(ok, "never delivered after the broker returned; log:\n{}", log.join("\n"));
    let waits: Vec<&String> = log.iter().filter(|l| l.contains("reconnecting in")).collect();
    eprintln!("[delivery] delivered {took:.2?} after the broker returned; {} failed attempts", waits.len());
    assert!(took < Duration::from_secs(5), "{took:?}; log:\n{}", log.join("\n"));
}
