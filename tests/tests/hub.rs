//! "Security messages to the hub": `shrike run` against a real mosquitto on
//! loopback ports, a real subscriber, real kernel events from real workloads
//! (`/bin/true` with marker arguments, loopback connects). Messages are
//! checked against the schemas, events counted by marker.
//!
//! Run as root: `cargo test -p shrike-tests --test hub -- --test-threads=1`.

mod hub_support;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{TcpListener, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use hub_support::*;
use serde_json::Value;
use shrike_tests::{TempDir, free_port, marker, require_root};

/// Arguments every agent of these tests gets: its hub, its own spool, agent id
/// file and client id (so its topic is `shrike/{id}/security`), short intervals.
fn agent_args(hub: &str, dir: &Path, id: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--hub".into(),
        hub.into(),
        "--spool-dir".into(),
        dir.join(format!("{id}-spool")).display().to_string(),
        "--agent-id-file".into(),
        dir.join(format!("{id}-agent-id")).display().to_string(),
        "--client-id".into(),
        id.into(),
    ];
    // 1 s intervals unless `extra` sets them (a flag may be given only once).
    for flag in ["--high-interval", "--low-interval", "--aggregate-interval"] {
        if !extra.contains(&flag) {
            v.extend([flag.to_string(), "1s".to_string()]);
        }
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn plain(port: u16) -> String {
    format!("mqtt://127.0.0.1:{port}")
}

fn topic(id: &str) -> String {
    format!("shrike/{id}/security")
}

fn on_topic(msgs: &[Received], t: &str) -> Vec<Received> {
    msgs.iter().filter(|m| m.topic == t).cloned().collect()
}

/// Sum of the hits of ProcessCreate events marked `marker` on topic `t`
/// (events deduplicated by Id; every message validated).
fn marked_hits(msgs: &[Received], t: &str, marker: &str) -> u64 {
    let (events, _) = unique_events(&on_topic(msgs, t));
    events.iter().filter_map(|e| marked_create(e, marker)).map(hits).sum()
}

/// The numeric suffixes `i` of `/bin/true {marker} {i}` events on topic `t`,
/// with their hit counts.
fn marked_indices(msgs: &[Received], t: &str, marker: &str) -> Vec<(u32, u64)> {
    let (events, _) = unique_events(&on_topic(msgs, t));
    events
        .iter()
        .filter_map(|e| marked_create(e, marker))
        .filter_map(|item| {
            let cl = item["CommandLine"].as_str()?;
            let i = cl.rsplit(' ').next()?.parse().ok()?;
            Some((i, hits(item)))
        })
        .collect()
}

/// Waits until no new message arrived for `quiet` (at most `limit`).
fn settle(sub: &Subscriber, quiet: Duration, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut n = sub.messages().len();
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < quiet {
        std::thread::sleep(Duration::from_millis(50));
        let m = sub.messages().len();
        if m != n {
            n = m;
            since = Instant::now();
        }
    }
}

fn agent_id(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{id}-agent-id"))).expect("agent id file").trim().to_owned()
}

/// Check 1: Live events arrive as valid messages; 1,000 identical execs become a
/// handful of aggregated ProcessCreate events whose HitCounts sum to 1,000.
#[test]
fn live_messages_are_valid_and_identical_execs_aggregate() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("hub-live");
    let broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let id = "live";
    let agent =
        RunAgent::start(&agent_args(&plain(broker.port), dir.path(), id, &["--aggregate-interval", "2s"]));

    // Some connections too (ConnectionCreate), to a port only this test uses.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = listener.local_addr().unwrap().port();
    for _ in 0..3 {
        drop(TcpStream::connect(("127.0.0.1", lport)).unwrap());
    }
    let m = marker("agg");
    let started = Instant::now();
    for _ in 0..1000 {
        run_true(&[&m]);
    }
    eprintln!("[hub] 1000 execs in {:.2?}", started.elapsed());
    let t = topic(id);
    let ok = sub.wait_until(Duration::from_secs(20), |msgs| marked_hits(msgs, &t, &m) >= 1000);
    let log = agent.stop();
    settle(&sub, Duration::from_millis(500), Duration::from_secs(5));
    let msgs = on_topic(&sub.messages(), &t);
    assert!(
        ok,
        "the 1000 execs did not arrive: {} hits; agent log:\n{}",
        marked_hits(&msgs, &t, &m),
        log.join("\n")
    );

    let (events, dups) = unique_events(&msgs);
    let marked: Vec<&Value> = events.iter().filter_map(|e| marked_create(e, &m)).collect();
    let total: u64 = marked.iter().map(|i| hits(i)).sum();
    eprintln!(
        "[hub] {} messages, {} events ({dups} duplicates); the 1000 execs as {} ProcessCreate events, hits {:?}",
        msgs.len(),
        events.len(),
        marked.len(),
        marked.iter().map(|i| hits(i)).collect::<Vec<_>>()
    );
    assert_eq!(total, 1000, "HitCounts must sum to exactly the execs");
    assert!(
        (1..=10).contains(&marked.len()),
        "1000 identical execs in ~2 s: a handful of aggregates, got {}",
        marked.len()
    );
    // The image's path from /proc when the agent read it in time, else the
    // path given to execve (these processes live for a millisecond).
    let true_exes = ["/bin/true".to_string(), shrike_tests::canonical("/bin/true")];
    for item in &marked {
        assert!(true_exes.iter().any(|e| item["Executable"] == e.as_str()), "{item}");
        assert_eq!(item["CommandLine"], format!("/bin/true {m}"), "{item}");
        assert_eq!(item["UserId"], "0", "{item}");
        assert_eq!(item["UserName"], "root", "{item}");
        assert_eq!(item["ParentProcessId"], std::process::id(), "{item}");
        assert_eq!(item["ExtraDetails"]["Result"], "Success", "{item}");
        if hits(item) > 1 {
            // Required by the schema: zeroed, and named as merged.
            assert_eq!(item["ProcessId"], 0, "differing pids are zeroed: {item}");
            let merged = item["ExtraDetails"]["MergedFields"].as_str().unwrap_or_default();
            assert!(merged.split(',').any(|f| f == "ProcessId"), "{item}");
            // Optional: left out, never a false value.
            assert_eq!(item["ExtraDetails"].get("ThreadId"), None, "{item}");
            for k in ["StartTimeUtc", "EndTimeUtc", "StartTimeLocal", "EndTimeLocal"] {
                assert!(item["ExtraDetails"][k].is_string(), "{k} missing: {item}");
            }
        }
    }
    // The three connects: one aggregated ConnectionCreate (same exe, address, port).
    let conns: Vec<&Value> = events
        .iter()
        .filter(|e| e["Name"] == "ConnectionCreate")
        .map(|e| &e["Payload"][0])
        .filter(|p| p["RemotePort"] == lport.to_string().as_str() && p["Direction"] == "Out")
        .collect();
    assert_eq!(conns.iter().map(|p| hits(p)).sum::<u64>(), 3, "connects to port {lport}: {conns:?}");
    for p in &conns {
        assert_eq!(p["RemoteAddress"], "127.0.0.1");
        assert_eq!(p["Protocol"], "TCP");
    }
    let aid = agent_id(dir.path(), id);
    for msg in &msgs {
        let v = msg.json();
        assert_eq!(v["AgentId"], aid.as_str());
        assert_eq!(v["MessageSchemaVersion"], "1.0");
    }
}

/// Measurement: payload bytes received per exec for 1,000 identical execs,
/// aggregation on and off (only exec collected, so the messages hold little
/// else).
#[test]
fn bytes_per_exec_with_and_without_aggregation() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("hub-bytes");
    let broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let only_exec = [
        "--priority",
        "exit=off",
        "--priority",
        "connect=off",
        "--priority",
        "accept=off",
        "--priority",
        "login=off",
        "--priority",
        "privilege=off",
    ];
    let mut results: Vec<f64> = Vec::new();
    for (id, agg) in [("bytes-agg-on", "exec=1s"), ("bytes-agg-off", "exec=off")] {
        let mut extra = only_exec.to_vec();
        extra.extend(["--aggregate", agg]);
        let agent = RunAgent::start(&agent_args(&plain(broker.port), dir.path(), id, &extra));
        let m = marker("bytes");
        for _ in 0..1000 {
            run_true(&[&m]);
        }
        let t = topic(id);
        let ok = sub.wait_until(Duration::from_secs(20), |msgs| marked_hits(msgs, &t, &m) >= 1000);
        let log = agent.stop();
        settle(&sub, Duration::from_millis(500), Duration::from_secs(5));
        let msgs = on_topic(&sub.messages(), &t);
        assert!(ok, "{id}: {} hits arrived; log:\n{}", marked_hits(&msgs, &t, &m), log.join("\n"));
        let (events, dups) = unique_events(&msgs);
        let marked: Vec<&Value> = events.iter().filter(|e| marked_create(e, &m).is_some()).collect();
        let hits_sum: u64 = marked.iter().map(|e| hits(&e["Payload"][0])).sum();
        assert_eq!(hits_sum, 1000, "{id}");
        if agg == "exec=off" {
            assert_eq!(marked.len(), 1000, "no aggregation: one event per exec");
        }
        let total: usize = msgs.iter().map(|m| m.payload.len()).sum();
        let marked_bytes: usize = marked.iter().map(|e| serde_json::to_vec(e).unwrap().len()).sum();
        // Each message's bytes shared out over its events by their size: the
        // envelope's share included, other events (the machine's own
        // activity, snapshots) left out.
        let mut attributed = 0f64;
        let mut seen = HashSet::new();
        for r in &msgs {
            let v = r.json();
            let evs = v["Events"].as_array().unwrap();
            let size = |e: &Value| serde_json::to_vec(e).unwrap().len() as f64;
            let all: f64 = evs.iter().map(size).sum();
            let ours: f64 = evs
                .iter()
                .filter(|e| {
                    marked_create(e, &m).is_some() && seen.insert(e["Id"].as_str().unwrap().to_owned())
                })
                .map(size)
                .sum();
            attributed += r.payload.len() as f64 * ours / all;
        }
        eprintln!(
            "[hub] {id}: {:.1} payload bytes per exec (the 1000 execs' share of the messages); the marked events' JSON alone {:.1} per exec ({} events); all {} messages {total} bytes ({} other events, {dups} duplicates)",
            attributed / 1000.0,
            marked_bytes as f64 / 1000.0,
            marked.len(),
            msgs.len(),
            events.len() - marked.len()
        );
        results.push(attributed);
    }
    assert!(results[0] * 10.0 < results[1], "aggregation saves at least 10x: {results:?}");
}

/// Check 2: A high-priority event arrives within its latency; low-priority events
/// are batched.
#[test]
fn high_priority_is_prompt_and_low_priority_is_batched() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("hub-prio");
    let broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");

    // High: exec at high priority, not aggregated, high interval 1 s.
    let id = "prio-high";
    let agent = RunAgent::start(&agent_args(
        &plain(broker.port),
        dir.path(),
        id,
        &["--priority", "exec=high", "--aggregate", "exec=off", "--low-interval", "30s"],
    ));
    let t = topic(id);
    let m = marker("high");
    let mut worst = Duration::ZERO;
    for i in 0..4u32 {
        let arg = i.to_string();
        let spawned = Instant::now();
        run_true(&[&m, &arg]);
        let mut at = None;
        sub.wait_until(Duration::from_secs(5), |msgs| {
            at = msgs
                .iter()
                .filter(|r| r.topic == t)
                .find(|r| {
                    r.json()["Events"].as_array().unwrap().iter().any(|e| {
                        marked_create(e, &m).is_some_and(|p| p["CommandLine"] == format!("/bin/true {m} {i}"))
                    })
                })
                .map(|r| r.at);
            at.is_some()
        });
        let at = at.unwrap_or_else(|| panic!("high-priority exec {i} did not arrive within 5 s"));
        let latency = at.duration_since(spawned);
        eprintln!("[hub] high-priority exec {i}: spawn to receipt {latency:.3?}");
        worst = worst.max(latency);
        assert!(latency < Duration::from_millis(1500), "exec {i} took {latency:?} (high interval 1 s)");
        // Sample other phases of the 1 s tick.
        std::thread::sleep(Duration::from_millis(230));
    }
    agent.stop();
    eprintln!("[hub] worst high-priority latency {worst:.3?}");

    // Low: batched every 2 s. Six execs 50 ms apart (0.3 s in all) meet at
    // most one tick, whatever its phase: at most two messages, one of them
    // with at least three of the execs (with high priority: six messages).
    let id = "prio-low";
    let agent = RunAgent::start(&agent_args(
        &plain(broker.port),
        dir.path(),
        id,
        &["--priority", "exec=low", "--aggregate", "exec=off", "--low-interval", "2s"],
    ));
    let t = topic(id);
    let m = marker("low");
    let spawned = Instant::now();
    for i in 0..6 {
        run_true(&[&m, &i.to_string()]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let spawn_time = spawned.elapsed();
    let ok = sub.wait_until(Duration::from_secs(8), |msgs| marked_indices(msgs, &t, &m).len() >= 6);
    let log = agent.stop();
    assert!(ok, "the six low-priority execs did not arrive; log:\n{}", log.join("\n"));
    let msgs = on_topic(&sub.messages(), &t);
    // (arrival after the first spawn, marked execs in it)
    let split: Vec<(Duration, usize)> = msgs
        .iter()
        .map(|r| {
            let v = r.json();
            let n = v["Events"].as_array().unwrap().iter().filter(|e| marked_create(e, &m).is_some()).count();
            (r.at.duration_since(spawned), n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    eprintln!(
        "[hub] low priority: six execs in {spawn_time:.3?} arrived as (after the first spawn, execs): {split:?}"
    );
    assert_eq!(split.iter().map(|s| s.1).sum::<usize>(), 6, "{split:?}");
    assert!(
        split.len() <= 2,
        "six execs within {spawn_time:?}, interval 2 s: at most two batches: {split:?}"
    );
    assert!(split.iter().any(|s| s.1 >= 3), "one batch holds at least three: {split:?}");
}

/// Check 3: The broker goes away during a workload and comes back on the same port:
/// every event generated meanwhile arrives; duplicates only as at-least-once
/// allows (same Id, same content).
#[test]
fn broker_outage_loses_nothing() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("hub-outage");
    let mut broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let id = "outage";
    let mut agent = RunAgent::start(&agent_args(&plain(broker.port), dir.path(), id, &[]));
    assert!(agent.wait_log(Duration::from_secs(10), "MQTT connected"), "{:?}", agent.log());
    let m = marker("outage");
    const N: u32 = 150;
    let workload = {
        let m = m.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            for i in 0..N {
                run_true(&[&m, &i.to_string()]);
                // 40 ms apart: about 6 s.
                let next = Duration::from_millis(40) * (i + 1);
                if let Some(d) = next.checked_sub(start.elapsed()) {
                    std::thread::sleep(d);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    broker.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    eprintln!("[hub] broker down for {:.2?}", down.elapsed());
    workload.join().unwrap();
    let t = topic(id);
    let ok = sub.wait_until(Duration::from_secs(30), |msgs| marked_indices(msgs, &t, &m).len() >= N as usize);
    let log = agent.stop();
    settle(&sub, Duration::from_millis(500), Duration::from_secs(5));
    let msgs = on_topic(&sub.messages(), &t);
    let got = marked_indices(&msgs, &t, &m);
    let idx: BTreeSet<u32> = got.iter().map(|(i, _)| *i).collect();
    let missing: Vec<u32> = (0..N).filter(|i| !idx.contains(i)).collect();
    assert!(ok && missing.is_empty(), "missing events {missing:?}; agent log:\n{}", log.join("\n"));
    assert_eq!(got.len(), N as usize, "each marked exec once after deduplication");
    assert!(got.iter().all(|(_, h)| *h == 1), "distinct command lines are not merged: {got:?}");
    let (_, dups) = unique_events(&msgs);
    let stopping = log.iter().find(|l| l.contains("publisher stopping")).expect("publisher stats");
    eprintln!("[hub] {N} events across the outage, {dups} duplicate events; {stopping}");
    assert!(log.iter().any(|l| l.contains("MQTT connection failed")), "the outage was not noticed");
    assert!(stat(stopping, "reconnects") >= 1, "{stopping}");
    assert_eq!(stat(stopping, "spool_dropped"), 0, "{stopping}");
}

/// Bytes of a spool file's header (agent/src/publish/spool.rs): 24 in the
/// current format (`SHRKSPL2`), 16 in the first.
const SPOOL_HEADER: usize = 24;

/// Spool files and the JSON messages in them.
fn spooled(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Complete records only: the agent writes a file in place and makes
        // it durable with its group, so a reader can see one half-written.
        if name.ends_with(".msg")
            && let Ok(bytes) = std::fs::read(e.path())
            && bytes.starts_with(b"SHRKSPL2")
            && bytes.len() > SPOOL_HEADER
            && bytes.len() == SPOOL_HEADER + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize
        {
            out.push((name, bytes[SPOOL_HEADER..].to_vec()));
        }
    }
    out.sort();
    out
}

/// Check 4: The agent is SIGKILLed while the broker is down, right after its
/// spool took the messages (before the journal, committing once a second
/// here, can learn it); broker and agent restart (same spool): the messages
/// arrive, and the journal replays none of what the spool holds: no event Id
/// arrives twice, and no exec arrives twice under another Id (each marked
/// command ran 3 times: its HitCounts sum to 3).
#[test]
fn spooled_messages_survive_an_agent_kill() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("hub-kill");
    let mut broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let id = "kill";
    // Aggregated for 3 s: the journal has written the execs well before
    // the spool takes them.
    let args = agent_args(
        &plain(broker.port),
        dir.path(),
        id,
        &["--sdk-socket", "off", "--journal-interval", "1s", "--aggregate-interval", "3s"],
    );
    let mut agent = RunAgent::start(&args);
    assert!(agent.wait_log(Duration::from_secs(10), "journal started"), "{:?}", agent.log());
    assert!(agent.wait_log(Duration::from_secs(10), "MQTT connected"), "{:?}", agent.log());
    broker.stop();
    let m = marker("kill");
    const N: u32 = 20;
    const RUNS: u64 = 3;
    for _ in 0..RUNS {
        for i in 0..N {
            run_true(&[&m, &i.to_string()]);
        }
    }
    // Past the aggregation and low intervals (1 s each) the spool holds them.
    let spool_dir = dir.path().join(format!("{id}-spool"));
    // Marked index -> HitCounts summed, over the events of `payloads`.
    let hit_sums = |payloads: &mut dyn Iterator<Item = &[u8]>| -> BTreeMap<u32, u64> {
        let mut sums = BTreeMap::new();
        for p in payloads {
            let v: Value = serde_json::from_slice(p).expect("a message is JSON");
            for e in v["Events"].as_array().unwrap() {
                if let Some(item) = marked_create(e, &m)
                    && let Some(i) =
                        item["CommandLine"].as_str().unwrap().rsplit(' ').next().and_then(|s| s.parse().ok())
                {
                    *sums.entry(i).or_default() += hits(item);
                }
            }
        }
        sums
    };
    let complete = |sums: &BTreeMap<u32, u64>| sums.len() == N as usize && sums.values().all(|h| *h >= RUNS);
    let mut files = Vec::new();
    let all = poll_until(Duration::from_secs(10), || {
        files = spooled(&spool_dir);
        complete(&hit_sums(&mut files.iter().map(|f| f.1.as_slice())))
    });
    assert!(
        all,
        "the spool has {:?} of the {N}x{RUNS} execs: {:?}",
        hit_sums(&mut files.iter().map(|f| f.1.as_slice())),
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    // At once: the journal (1 s group commit) has not learnt that the spool
    // holds these; it must not replay them (journal/cover.rs).
    let log = agent.kill9();
    let files_after = spooled(&spool_dir);
    assert!(!files_after.is_empty(), "*.msg files are left after SIGKILL");
    eprintln!("[hub] spool after SIGKILL: {:?}", files_after.iter().map(|f| &f.0).collect::<Vec<_>>());
    assert!(log.iter().any(|l| l.contains("MQTT connection failed")), "{log:?}");

    broker.restart();
    let agent2 = RunAgent::start(&args);
    let t = topic(id);
    let sums_of = |msgs: &[Received]| hit_sums(&mut on_topic(msgs, &t).iter().map(|r| r.payload.as_slice()));
    let ok = sub.wait_until(Duration::from_secs(20), |msgs| complete(&sums_of(msgs)));
    // A replayed copy comes with the first messages after the start: time
    // for it to arrive too.
    settle(&sub, Duration::from_secs(2), Duration::from_secs(10));
    let log2 = agent2.stop();
    let msgs = on_topic(&sub.messages(), &t);
    assert!(ok, "after the restart {:?} of {N}x{RUNS} arrived; log:\n{}", sums_of(&msgs), log2.join("\n"));
    assert!(log2.iter().any(|l| l.contains("spool opened") && !l.contains("waiting=0")), "{log2:?}");
    if let Some(replay) = log2.iter().find(|l| l.contains("delivering again")) {
        eprintln!("[hub] {replay}");
    }
    // The spooled messages arrive byte for byte.
    let received: HashSet<&[u8]> = msgs.iter().map(|r| r.payload.as_slice()).collect();
    for (name, p) in &files_after {
        assert!(received.contains(p.as_slice()), "spooled {name} did not arrive as it was spooled");
    }
    let aid = agent_id(dir.path(), id);
    let mut ids: HashMap<String, u32> = HashMap::new();
    for r in &msgs {
        let v = r.json();
        assert_eq!(v["AgentId"], aid.as_str(), "the agent id survives the restart");
        for e in v["Events"].as_array().unwrap() {
            *ids.entry(e["Id"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "event Ids delivered more than once: {twice:?}");
    // Every exec once (nothing of them was lost): a duplicate under a new Id
    // would push a sum past 3.
    let sums = sums_of(&msgs);
    let want: BTreeMap<u32, u64> = (0..N).map(|i| (i, RUNS)).collect();
    assert_eq!(sums, want, "HitCounts per marked command");
}

/// Check 5: TLS with a test CA; mutual TLS with and without the client certificate;
/// username and password, right and wrong. The agents that cannot connect
/// keep retrying and deliver nothing.
#[test]
fn tls_mutual_tls_and_passwords() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("hub-tls");
    let pki = dir.path().join("pki");
    make_pki(&pki);
    let f = |n: &str| pki.join(n).display().to_string();
    let pwfile = dir.path().join("passwd");
    mosquitto_passwd(&pwfile, "shrike", "right-password");
    std::fs::write(dir.path().join("ok.pw"), "right-password\n").unwrap();
    std::fs::write(dir.path().join("bad.pw"), "wrong-password\n").unwrap();
    let (p_tls, p_mtls, p_pw) = (free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1"));
    let tls = format!(
        "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n",
        f("ca.pem"),
        f("server.pem"),
        f("server.key")
    );
    let extra = format!(
        "listener {p_tls} 127.0.0.1\n{tls}listener {p_mtls} 127.0.0.1\n{tls}require_certificate true\n\
         listener {p_pw} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        pwfile.display()
    );
    let broker = Broker::start(dir.path(), &extra, &[p_tls, p_mtls, p_pw]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let d = dir.path();
    let (ca, cert, key) = (f("ca.pem"), f("client.pem"), f("client.key"));
    let okpw = d.join("ok.pw").display().to_string();
    let badpw = d.join("bad.pw").display().to_string();
    let mqtts = |p: u16| format!("mqtts://127.0.0.1:{p}");
    let cases: Vec<(&str, bool, Vec<String>)> = vec![
        ("tls", true, agent_args(&mqtts(p_tls), d, "tls", &["--ca-file", &ca])),
        (
            "mtls",
            true,
            agent_args(
                &mqtts(p_mtls),
                d,
                "mtls",
                &["--ca-file", &ca, "--client-cert", &cert, "--client-key", &key],
            ),
        ),
        ("mtls-nocert", false, agent_args(&mqtts(p_mtls), d, "mtls-nocert", &["--ca-file", &ca])),
        (
            "pw-ok",
            true,
            agent_args(&plain(p_pw), d, "pw-ok", &["--username", "shrike", "--password-file", &okpw]),
        ),
        (
            "pw-bad",
            false,
            agent_args(&plain(p_pw), d, "pw-bad", &["--username", "shrike", "--password-file", &badpw]),
        ),
    ];
    let mut agents: Vec<(&str, bool, RunAgent)> =
        cases.into_iter().map(|(n, ok, a)| (n, ok, RunAgent::spawn(&a))).collect();
    for (_, ok, a) in agents.iter_mut() {
        a.wait_ready();
        if *ok {
            assert!(a.wait_log(Duration::from_secs(10), "MQTT connected"), "not connected: {:?}", a.log());
        }
    }
    let m = marker("tls");
    let spawned = Instant::now();
    run_true(&[&m]);
    let good: Vec<String> = agents.iter().filter(|a| a.1).map(|a| topic(a.0)).collect();
    let ok =
        sub.wait_until(Duration::from_secs(10), |msgs| good.iter().all(|t| marked_hits(msgs, t, &m) == 1));
    assert!(
        ok,
        "not every connected agent delivered the exec: {:?}",
        good.iter().map(|t| marked_hits(&sub.messages(), t, &m)).collect::<Vec<_>>()
    );
    // The others had 4 s (4 low intervals) to deliver anything at all.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(spawned.elapsed()));
    let msgs = sub.messages();
    for (name, ok, a) in agents.iter_mut() {
        if !*ok {
            assert!(a.running(), "{name} keeps running (and retrying)");
        }
        a.interrupt();
    }
    for (name, ok, a) in agents {
        let t = topic(name);
        if ok {
            let log = a.stop();
            eprintln!(
                "[hub] {name}: delivered; {}",
                log.iter().find(|l| l.contains("publisher stopping")).unwrap()
            );
            continue;
        }
        assert!(on_topic(&msgs, &t).is_empty(), "{name} must deliver nothing");
        let log = a.stop();
        assert!(!log.iter().any(|l| l.contains("MQTT connected")), "{name} connected: {log:?}");
        let stopping = log.iter().find(|l| l.contains("publisher stopping")).expect("publisher stats");
        eprintln!("[hub] {name}: refused; {stopping}");
        assert!(stat(stopping, "connection_errors") >= 2, "{name} retries: {stopping}");
        assert_eq!(stat(stopping, "connects"), 0, "{stopping}");
        assert!(stat(stopping, "pending") >= 1, "{name} keeps its messages spooled: {stopping}");
    }
}

const AZURE_USER: &str = "shrike-test.azure-devices.net/gateway-01/?api-version=2021-04-12";
const AZURE_TOPIC: &str = "devices/gateway-01/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1";

/// Checks an IoT Hub SAS token against the device key.
fn check_sas(token: &str, key: &[u8]) -> u64 {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use hmac::{Hmac, KeyInit, Mac};
    let rest =
        token.strip_prefix("SharedAccessSignature ").unwrap_or_else(|| panic!("not a SAS token: {token}"));
    let mut fields = std::collections::BTreeMap::new();
    for kv in rest.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("bad field {kv:?} in {token}"));
        assert!(fields.insert(k, v).is_none(), "{k} twice in {token}");
    }
    assert_eq!(fields.keys().copied().collect::<Vec<_>>(), ["se", "sig", "sr"], "{token}");
    assert_eq!(
        fields["sr"], "shrike-test.azure-devices.net%2Fdevices%2Fgateway-01",
        "the URL-encoded resource URI"
    );
    let se: u64 = fields["se"].parse().expect("se is a number");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(se > now && se <= now + 2 * 86400, "expiry {se} not within 2 days of now {now}");
    let sig = percent_encoding::percent_decode_str(fields["sig"]).decode_utf8().expect("sig is UTF-8");
    let sig = STANDARD.decode(sig.as_bytes()).expect("sig is base64");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{}\n{se}", fields["sr"]).as_bytes());
    mac.verify_slice(&sig).expect("the signature is HMAC-SHA256 of sr\\nse with the device key");
    se - now
}

/// Check 6: Azure mode: IoT Hub's identity strings and topic against mosquitto with
/// an ACL that lets only that user publish only there (over TLS); the SAS
/// token checked at a fake hub endpoint (TLS) that reads the CONNECT packet.
#[test]
fn azure_identity_topic_and_sas_token() {
    if !require_root() {
        return;
    }
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let dir = TempDir::new("hub-azure");
    let d = dir.path();
    let pki = d.join("pki");
    make_pki(&pki);
    let f = |n: &str| pki.join(n).display().to_string();
    let key = b"shrike-test-device-key-32-bytes!";
    let cs = d.join("cs");
    std::fs::write(
        &cs,
        format!(
            "HostName=shrike-test.azure-devices.net;DeviceId=gateway-01;SharedAccessKey={}\n",
            STANDARD.encode(key)
        ),
    )
    .unwrap();
    let acl = d.join("acl");
    std::fs::write(&acl, format!("user {AZURE_USER}\ntopic write devices/gateway-01/messages/events/#\n"))
        .unwrap();
    let p_az = free_port("127.0.0.1");
    let extra = format!(
        "listener {p_az} 127.0.0.1\nallow_anonymous true\nacl_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
        acl.display(),
        f("ca.pem"),
        f("server.pem"),
        f("server.key")
    );
    let broker = Broker::start(d, &extra, &[p_az]);
    let sub = Subscriber::start(broker.port, "devices/gateway-01/messages/events/#");

    // Built (if needed) before the fake hub's time limit starts.
    shrike_tests::agent_bin();
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let p_fake = fake.local_addr().unwrap().port();
    let capture = fake_hub(fake, pki.join("server.pem"), pki.join("server.key"), Duration::from_secs(30));

    let ca = f("ca.pem");
    let cs_s = cs.display().to_string();
    let azure = |endpoint: &str, name: &str| {
        vec![
            "--hub".to_string(),
            endpoint.to_string(),
            "--connection-string-file".into(),
            cs_s.clone(),
            "--ca-file".into(),
            ca.clone(),
            "--spool-dir".into(),
            d.join(format!("{name}-spool")).display().to_string(),
            "--agent-id-file".into(),
            d.join(format!("{name}-id")).display().to_string(),
            "--low-interval".into(),
            "1s".into(),
            "--aggregate-interval".into(),
            "1s".into(),
        ]
    };
    let mut hub_agent = RunAgent::spawn(&azure(&format!("azure://127.0.0.1:{p_az}"), "azure"));
    let mut fake_agent = RunAgent::spawn(&azure(&format!("azure://127.0.0.1:{p_fake}"), "fake"));
    // Control: another user on the same listener, publishing under the
    // device's topic, must be refused by the ACL.
    let mut intruder = RunAgent::spawn(&agent_args(
        &format!("mqtts://127.0.0.1:{p_az}"),
        d,
        "intruder",
        &[
            "--ca-file",
            &ca,
            "--username",
            "intruder",
            "--topic",
            "devices/gateway-01/messages/events/intruder",
        ],
    ));
    for a in [&mut hub_agent, &mut fake_agent, &mut intruder] {
        a.wait_ready();
    }
    for a in [&mut hub_agent, &mut intruder] {
        assert!(a.wait_log(Duration::from_secs(10), "MQTT connected"), "{:?}", a.log());
    }
    let m = marker("azure");
    let spawned = Instant::now();
    run_true(&[&m]);
    let ok = sub.wait_until(Duration::from_secs(10), |msgs| marked_hits(msgs, AZURE_TOPIC, &m) == 1);
    std::thread::sleep(Duration::from_secs(4).saturating_sub(spawned.elapsed()));
    let msgs = sub.messages();
    assert!(
        ok,
        "the exec did not arrive on {AZURE_TOPIC}: {:?}",
        msgs.iter().map(|r| &r.topic).collect::<Vec<_>>()
    );
    let topics: BTreeSet<&str> = msgs.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, BTreeSet::from([AZURE_TOPIC]), "only the device's messages, on the exact topic");
    unique_events(&msgs);
    let aid = std::fs::read_to_string(d.join("azure-id")).unwrap();
    assert!(msgs.iter().all(|r| r.json()["AgentId"] == aid.trim()));

    let captured = capture
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("fake hub: {e}; agent log:\n{}", fake_agent.log().join("\n")));
    let c = &captured.connect;
    assert_eq!(c.client_id, "gateway-01");
    let login = c.login.as_ref().expect("CONNECT has a user name and password");
    assert_eq!(login.username, AZURE_USER);
    let ttl = check_sas(&login.password, key);
    eprintln!(
        "[hub] SAS token verified: valid for {ttl} s; keep_alive {} s, clean_session {}",
        c.keep_alive, c.clean_session
    );
    let p = captured.publish.expect("the agent published to the fake hub");
    assert_eq!(p.topic, AZURE_TOPIC);
    assert_eq!(p.qos, rumqttc::QoS::AtLeastOnce);
    assert_valid(&serde_json::from_slice(&p.payload).expect("JSON"));

    for a in [&hub_agent, &fake_agent, &intruder] {
        a.interrupt();
    }
    for (name, a) in [("azure", hub_agent), ("fake", fake_agent), ("intruder", intruder)] {
        let log = a.stop();
        eprintln!(
            "[hub] {name}: {}",
            log.iter().find(|l| l.contains("publisher stopping")).map_or("", |s| s)
        );
    }
}

/// Check 7: A small spool while the broker is down: the oldest low-priority
/// messages are dropped (and counted in the logged stats); high-priority ones
/// all arrive. Two kinds the rest of the machine hardly produces, so that its
/// activity cannot crowd ours out of the small spool: low, privilege changes
/// (`setresgid` by setpriv, to group ids only this test uses: the index is in
/// the id); high, PAM logins (pamtester, a PAM service only this test uses).
#[test]
fn full_spool_drops_the_oldest_low_priority_messages() {
    if !require_root() {
        return;
    }
    for (bin, pkg) in [("/usr/bin/setpriv", "util-linux"), ("/usr/bin/pamtester", "pamtester")] {
        assert!(Path::new(bin).exists(), "{bin} is missing: install the Debian package {pkg}");
    }
    let dir = TempDir::new("hub-full");
    let service = marker("shrike-hub");
    let _pam = shrike_tests::InstalledFile::new(
        format!("/etc/pam.d/{service}"),
        "auth required pam_permit.so\naccount required pam_permit.so\n",
    );
    let mut broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    broker.stop();
    let id = "full";
    let agent = RunAgent::start(&agent_args(
        &plain(broker.port),
        dir.path(),
        id,
        &[
            "--max-message-size",
            "2048",
            "--spool-size",
            "16384",
            "--priority",
            "privilege=low",
            "--aggregate",
            "privilege=off",
            "--priority",
            "login=high",
            "--aggregate",
            "login=off",
            "--priority",
            "exec=off",
            "--priority",
            "exit=off",
            "--priority",
            "connect=off",
            "--priority",
            "accept=off",
            // Only the privilege changes and logins may fill this tiny spool:
            // file changes and the OS baseline snapshot (taken a second after
            // start) would push the newest privilege change out.
            "--priority",
            "file=off",
            "--no-recommendations",
        ],
    ));
    const N: u32 = 200;
    let gid_base = 3_000_000_000u32 + (std::process::id() % 1_000_000) * 256;
    let mut logins = BTreeSet::new();
    for i in 0..N {
        let st = std::process::Command::new("/usr/bin/setpriv")
            .args([&format!("--regid={}", gid_base + i), "--keep-groups", "/bin/true"])
            .status()
            .unwrap();
        assert!(st.success());
        if i == N / 2 {
            for _ in 0..3 {
                let mut child = std::process::Command::new("/usr/bin/pamtester")
                    .args([&service, "root", "authenticate"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                logins.insert(child.id());
                assert!(child.wait().unwrap().success(), "pamtester {service} root authenticate");
            }
        }
    }
    // Once the newest change is spooled (past the low interval), the broker
    // returns at once.
    let spool_dir = dir.path().join(format!("{id}-spool"));
    let last = format!("\"NewGroupId\":\"{}\"", gid_base + N - 1);
    let mut files = Vec::new();
    let spooled_all = poll_until(Duration::from_secs(5), || {
        files = spooled(&spool_dir);
        files.iter().any(|f| String::from_utf8_lossy(&f.1).contains(&last))
    });
    let bytes: usize = files.iter().map(|f| f.1.len() + SPOOL_HEADER).sum();
    eprintln!("[hub] spool while offline: {} files, {bytes} bytes", files.len());
    assert!(spooled_all, "the newest privilege change was not spooled within 5 s: {:?}", agent.log());
    assert!(bytes <= 16384, "the spool stays within its size");
    broker.restart();
    let t = topic(id);
    let index = |e: &Value| -> Option<u32> {
        let p = &e["Payload"][0];
        if e["Name"] != "PrivilegeChange" || p["Operation"] != "setresgid" {
            return None;
        }
        let g: u32 = p["NewGroupId"].as_str()?.parse().ok()?;
        (gid_base..gid_base + N).contains(&g).then(|| g - gid_base)
    };
    let login_pid = |e: &Value| -> Option<u32> {
        let p = &e["Payload"][0];
        (e["Name"] == "Login" && p["ExtraDetails"]["Service"] == service.as_str())
            .then(|| p["ProcessId"].as_u64().unwrap() as u32)
    };
    let ok = sub.wait_until(Duration::from_secs(30), |msgs| {
        let (events, _) = unique_events(&on_topic(msgs, &t));
        let pids: BTreeSet<u32> = events.iter().filter_map(login_pid).collect();
        pids == logins && events.iter().any(|e| index(e) == Some(N - 1))
    });
    let log = agent.stop();
    settle(&sub, Duration::from_millis(500), Duration::from_secs(5));
    let msgs = on_topic(&sub.messages(), &t);
    let (events, _) = unique_events(&msgs);
    let login_events: Vec<&Value> = events.iter().filter(|e| login_pid(e).is_some()).collect();
    let pids: BTreeSet<u32> = events.iter().filter_map(login_pid).collect();
    let idx: BTreeSet<u32> = events.iter().filter_map(index).collect();
    assert!(
        ok,
        "the logins (pids {logins:?}, got {pids:?}) or the newest change did not arrive (indices {idx:?}); log:\n{}",
        log.join("\n")
    );
    assert_eq!(pids, logins, "every high-priority event arrives");
    for e in &login_events {
        assert_eq!(e["Payload"][0]["Result"], "Success", "{e}");
        assert_eq!(e["Payload"][0]["UserName"], "root", "{e}");
    }
    let first = *idx.first().unwrap();
    assert!(first > 0, "the oldest low-priority messages are dropped");
    assert_eq!(idx, (first..N).collect::<BTreeSet<_>>(), "what remains is the newest, without gaps");
    assert_eq!(events.iter().filter(|e| index(e).is_some()).count() as u32, N - first, "each once");

    let stopping = log.iter().find(|l| l.contains("shrike stopping")).expect("shrike stopping line");
    let publisher = log.iter().find(|l| l.contains("publisher stopping")).expect("publisher stopping line");
    let made = field(stopping, "messages");
    let distinct: HashSet<String> =
        msgs.iter().map(|r| r.json()["Events"][0]["Id"].as_str().unwrap().to_owned()).collect();
    let dropped = stat(publisher, "spool_dropped");
    let pending = stat(publisher, "pending");
    eprintln!(
        "[hub] {made} messages made, {} arrived, {dropped} dropped by the full spool, {pending} left; {} login events; setresgid {first}..{N} arrived, 0..{first} dropped; {stopping}; {publisher}",
        distinct.len(),
        login_events.len()
    );
    assert!(dropped > 0);
    assert_eq!(stat(publisher, "dropped_low"), dropped, "{publisher}");
    assert_eq!(stat(publisher, "dropped_high"), 0, "{publisher}");
    assert_eq!(stat(publisher, "submit_errors"), 0, "{publisher}");
    assert_eq!(
        distinct.len() as u64 + dropped + pending,
        made,
        "every message made arrived, was counted as dropped, or is still spooled"
    );
}

/// Check 8: Bad settings: exit code 2 and the setting named.
#[test]
fn bad_settings_exit_2_naming_the_setting() {
    let dir = TempDir::new("hub-bad");
    let d = dir.path();
    let cfg = d.join("bad.toml");
    std::fs::write(&cfg, "hub = \"mqtt://127.0.0.1:1\"\nspool_sise = 1000000\n").unwrap();
    let spool = d.join("spool").display().to_string();
    let idf = d.join("id").display().to_string();
    let cfg_s = cfg.display().to_string();
    let common = ["--spool-dir", spool.as_str(), "--agent-id-file", idf.as_str()];
    let cases: [(Vec<&str>, &[&str]); 3] = [
        (vec!["--config", &cfg_s], &["spool_sise"]),
        (vec!["--hub", "mqtt://127.0.0.1:1", "--low-interval", "5parsecs"], &["low_interval", "5parsecs"]),
        (vec!["--hub", "mqtts://127.0.0.1:1", "--ca-file", "/nonexistent"], &["ca_file", "/nonexistent"]),
    ];
    for (args, named) in cases {
        let all: Vec<&str> = args.iter().chain(common.iter()).copied().collect();
        let (code, err) = run_to_exit(&all);
        eprintln!("[hub] shrike run {args:?}: exit {code:?}: {}", err.trim());
        assert_eq!(code, Some(2), "{args:?}: {err}");
        for n in named {
            assert!(err.contains(n), "{args:?}: the message must name {n}: {err}");
        }
    }
}
