//! Start and stop of `shrike run`: from the spawn to `shrike ready` (every
//! probe attached), to the first event out (at a subscriber of the broker),
//! and from SIGTERM to the exit. The agent runs with its default settings
//! (detection and the OS baseline on) except exec at high priority and
//! not aggregated, so the first exec goes out at once instead of waiting
//! for a batch interval; a thread execs a marked tiny binary every 10 ms
//! from before the spawn, so the first event is the first exec the probes
//! saw.

use std::{
    collections::HashMap,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{Broker, Sub, TOPIC_ID, median, now_real_ns, spawn_logged, stop_child, text_of};

fn once(agent: &Path, broker: &Broker, dir: &Path, tiny: &Path, i: usize) -> anyhow::Result<Value> {
    let dir = dir.join(format!("startup-{i}"));
    std::fs::create_dir_all(&dir)?;
    let sub = Sub::start(broker.port, &dir, "startup")?;
    let marker = format!("sbstart{}x{i}", std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let execs = {
        let (stop, sent, marker, tiny) =
            (Arc::clone(&stop), Arc::clone(&sent), marker.clone(), tiny.to_path_buf());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let seq = n.to_string();
                sent.lock().map(|mut m| m.insert(seq.clone(), now_real_ns())).ok();
                let _ = Command::new(&tiny).arg(&marker).arg(&seq).stdout(Stdio::null()).status();
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let hub = format!("mqtt://127.0.0.1:{}", broker.port);
    let err = dir.join("stderr");
    let mut c = Command::new(agent);
    c.args(["run", "--hub", &hub, "--client-id", TOPIC_ID])
        .args(["--priority", "exec=high", "--aggregate", "exec=off"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .arg("--agent-id-file")
        .arg(dir.join("agent-id"));
    let spawn_real = now_real_ns();
    let t0 = Instant::now();
    let mut child = spawn_logged(&mut c, &dir.join("stdout"), &err)?;
    let mut ready_ms = None;
    while t0.elapsed() < Duration::from_secs(30) {
        if std::fs::read_to_string(&err).is_ok_and(|s| s.contains("shrike ready")) {
            ready_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
            break;
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Long enough for the first high-priority flush.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let _ = execs.join();
    let t = Instant::now();
    stop_child(&mut child, libc::SIGTERM, Duration::from_secs(30));
    let stop_ms = t.elapsed().as_secs_f64() * 1e3;
    let msgs = sub.finish();
    let sent = sent.lock().map(|m| m.clone()).unwrap_or_default();
    // The earliest receipt of a marked exec, and the earliest exec seen.
    let mut first_out: Option<f64> = None;
    let mut first_seen: Option<u64> = None;
    for (at, _, m) in &msgs {
        for ev in m["Events"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let cl = text_of(&ev["Payload"][0]["CommandLine"]);
            let mut w = cl.split(' ');
            if ev["Name"] == "ProcessCreate" && w.nth(1) == Some(marker.as_str()) {
                let ms = at * 1e3 - spawn_real as f64 / 1e6;
                first_out = Some(first_out.map_or(ms, |f| f.min(ms)));
                if let Some(t) = w.next().and_then(|s| sent.get(s)) {
                    let at_ms = (*t as f64 - spawn_real as f64) / 1e6;
                    first_seen = Some(first_seen.map_or(at_ms as u64, |f| f.min(at_ms as u64)));
                }
            }
        }
    }
    Ok(json!({"ready_ms": ready_ms, "first_event_out_ms": first_out,
        "first_exec_seen_made_at_ms": first_seen, "stop_ms": stop_ms, "execs_made": sent.len()}))
}

/// `runs` starts and stops; each run's figures and their medians.
pub(super) fn phase(agent: &Path, broker: &Broker, dir: &Path, tiny: &Path, runs: usize) -> Value {
    let mut list = Vec::new();
    for i in 0..runs {
        match once(agent, broker, dir, tiny, i) {
            Ok(v) => {
                eprintln!("bench: start/stop {i}: {v}");
                list.push(v);
            }
            Err(e) => list.push(json!({"error": e.to_string()})),
        }
    }
    let med = |k: &str| median(&list.iter().filter_map(|v| v[k].as_f64()).collect::<Vec<_>>());
    let nan = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    json!({"runs": list, "ready_ms_median": nan(med("ready_ms")),
        "first_event_out_ms_median": nan(med("first_event_out_ms")), "stop_ms_median": nan(med("stop_ms")),
        "agent_args": "defaults (detection, OS baseline) + --priority exec=high --aggregate exec=off"})
}
