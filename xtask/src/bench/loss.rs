//! The loss search: per event kind (exec, connect) and per transport (BPF
//! ring buffer, perf event arrays), the rate at which the kernel first
//! drops a record. One `shrike run` (default settings: detection on) per
//! transport; paced steps of rising rate made by several generator
//! processes (this xtask binary re-run with `bench --generate`), the
//! agent's loss counters read from its Prometheus endpoint before and after
//! each step, so one agent per transport serves every step of every kind.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{Broker, close_rst, free_port, listener, start_run, stop_child};

/// A generator process's job (`cargo xtask bench --generate KIND ...`).
#[derive(Debug, Clone)]
pub(super) struct GenJob {
    pub(super) kind: String,
    pub(super) rate: f64,
    pub(super) secs: f64,
    pub(super) threads: u64,
    pub(super) bin: Option<std::path::PathBuf>,
}

impl GenJob {
    fn arg(&self) -> String {
        let bin = self.bin.as_ref().map(|b| b.display().to_string()).unwrap_or_default();
        format!("{}:{}:{}:{}:{bin}", self.kind, self.rate, self.secs, self.threads)
    }

    /// KIND:RATE:SECS:THREADS:BIN (BIN may be empty: /bin/true).
    pub(super) fn parse(s: &str) -> anyhow::Result<GenJob> {
        let f: Vec<&str> = s.splitn(5, ':').collect();
        let [kind, rate, secs, threads, bin] = f[..] else {
            bail!("--generate KIND:RATE:SECS:THREADS:BIN, not {s}")
        };
        Ok(GenJob {
            kind: kind.to_owned(),
            rate: rate.parse()?,
            secs: secs.parse()?,
            threads: threads.parse()?,
            bin: (!bin.is_empty()).then(|| bin.into()),
        })
    }
}

/// Runs in the generator process: `rate` ops a second spread over
/// `threads`, for `secs`; prints `{"ops": N, "secs": S}`.
pub(super) fn generate(job: &GenJob) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    // Connects go to this process's own listener (accept + close on a thread),
    // so processes do not share an accept queue.
    let (port, stop) = if job.kind == "connect" {
        let l = listener();
        let port = l.local_addr()?.port();
        (port, Some(super::acceptor(l)))
    } else {
        (0, None)
    };
    let bin = job.bin.clone().unwrap_or_else(|| "/bin/true".into());
    let per_thread = job.rate / job.threads.max(1) as f64;
    let t0 = Instant::now();
    let threads: Vec<_> = (0..job.threads.max(1))
        .map(|_| {
            let done = Arc::clone(&done);
            let (kind, bin, secs) = (job.kind.clone(), bin.clone(), job.secs);
            std::thread::spawn(move || {
                let mut i = 0u64;
                loop {
                    let now = t0.elapsed();
                    if now.as_secs_f64() >= secs {
                        break;
                    }
                    // Paced: behind schedule, run at once (catch up).
                    if let Some(wait) = Duration::from_secs_f64(i as f64 / per_thread).checked_sub(now) {
                        std::thread::sleep(wait);
                    }
                    let ok = if kind == "exec" {
                        Command::new(&bin)
                            .arg("sbloss")
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .is_ok()
                    } else {
                        TcpStream::connect(("127.0.0.1", port)).map(close_rst).is_ok()
                    };
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    if let Some(stop) = stop {
        stop();
    }
    println!("{}", json!({"ops": done.load(Ordering::Relaxed), "secs": secs}));
    Ok(())
}

/// Runs `procs` generator processes at `rate` in all; (ops, achieved rate).
fn generators(
    kind: &str,
    rate: f64,
    secs: f64,
    procs: u64,
    threads: u64,
    tiny: &Path,
) -> anyhow::Result<(u64, f64)> {
    // This very binary, even if a build replaced the file since it started
    // (current_exe() would then name a deleted path).
    let me = Path::new("/proc/self/exe");
    let t0 = Instant::now();
    let children: Vec<_> = (0..procs)
        .map(|_| {
            let job = GenJob {
                kind: kind.to_owned(),
                rate: rate / procs as f64,
                secs,
                threads,
                bin: Some(tiny.to_path_buf()),
            };
            Command::new(me)
                .args(["bench", "--generate", &job.arg()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect::<Result<_, _>>()
        .context("starting the generator processes")?;
    let mut ops = 0;
    let mut longest = 0f64;
    for c in children {
        let out = c.wait_with_output()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        ops += v["ops"].as_u64().unwrap_or(0);
        longest = longest.max(v["secs"].as_f64().unwrap_or(0.0));
    }
    if longest == 0.0 {
        longest = t0.elapsed().as_secs_f64();
    }
    Ok((ops, ops as f64 / longest.max(1e-9)))
}

/// The agent's counters from its /metrics: (name with labels) -> value.
fn scrape(port: u16) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let mut out = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with("shrike_")) {
        if let Some((k, v)) = l.rsplit_once(' ')
            && let Ok(v) = v.trim().parse::<u64>()
        {
            out.insert(k.to_owned(), v);
        }
    }
    if out.is_empty() {
        bail!("no shrike_ counters at /metrics");
    }
    Ok(out)
}

/// Per kind deltas of a labelled counter between two scrapes.
fn per_kind(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, family: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{family}{{kind=\"");
    b.iter()
        .filter_map(|(k, v)| {
            let kind = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let d = v.saturating_sub(a.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (kind.to_owned(), d))
        })
        .collect()
}

pub(super) struct Setup<'a> {
    pub(super) agent: &'a Path,
    pub(super) broker: &'a Broker,
    pub(super) dir: &'a Path,
    pub(super) tiny: &'a Path,
    pub(super) quick: bool,
}

/// One step: the generators at `rate`, the counters around them.
fn step(s: &Setup, port: u16, kind: &str, rate: f64, secs: f64) -> anyhow::Result<Value> {
    // Exec: one thread a process (fork+exec is CPU-bound: both cores);
    // connect: 4 processes of 2 threads (one loop does ~10-25K/s here).
    let (procs, threads) = if kind == "exec" { (4, 1) } else { (4, 2) };
    let m0 = scrape(port)?;
    let (ops, achieved) = generators(kind, rate, secs, procs, threads, s.tiny)?;
    // The reader drains what is in the buffer; loss is counted at write.
    std::thread::sleep(Duration::from_millis(300));
    let m1 = scrape(port)?;
    let lost = per_kind(&m0, &m1, "shrike_kernel_records_lost_total");
    let sent = per_kind(&m0, &m1, "shrike_kernel_records_total");
    let d = |k: &str| m1.get(k).copied().unwrap_or(0).saturating_sub(m0.get(k).copied().unwrap_or(0));
    let perf_lost = d("shrike_perf_lost_total");
    let total_lost: u64 = lost.values().sum::<u64>() + perf_lost;
    let total_sent: u64 = sent.values().sum();
    eprintln!(
        "bench: loss {kind} target {rate:.0}/s achieved {achieved:.0}/s ops {ops} records sent {total_sent} lost {total_lost}"
    );
    Ok(json!({"target_per_s": rate, "achieved_per_s": achieved, "ops": ops, "generator_processes": procs,
        "records_sent": total_sent, "records_lost": total_lost, "lost_by_kind": lost, "sent_by_kind": sent,
        "perf_lost": perf_lost, "received": d("shrike_records_received_total"),
        // Compatible with the earlier max-rate steps.
        "kernel_sent": total_sent, "kernel_lost": total_lost}))
}

/// The search for one kind on one transport.
/// The search for one kind on one transport, against the agent whose
/// /metrics are on `port`.
fn search(s: &Setup, port: u16, transport: &str, kind: &str) -> Value {
    let secs = if s.quick { 1.0 } else { 3.0 };
    let rates: &[f64] = match (kind, s.quick) {
        ("exec", true) => &[6000.0],
        ("exec", false) => &[1500.0, 3000.0, 6000.0, 12000.0],
        (_, true) => &[50000.0],
        (_, false) => &[12500.0, 25000.0, 50000.0, 100000.0, 200000.0],
    };
    let mut steps = Vec::new();
    let mut last_ok: Option<f64> = None;
    let mut first_loss: Option<f64> = None;
    let mut gen_max = 0f64;
    let mut error = None;
    let mut run = |rate: f64, steps: &mut Vec<Value>| -> Option<(f64, u64)> {
        match step(s, port, kind, rate, secs) {
            Ok(v) => {
                let r =
                    (v["achieved_per_s"].as_f64().unwrap_or(0.0), v["records_lost"].as_u64().unwrap_or(0));
                steps.push(v);
                Some(r)
            }
            Err(e) => {
                error = Some(format!("{e:#}"));
                None
            }
        }
    };
    for &rate in rates {
        let Some((achieved, lost)) = run(rate, &mut steps) else { break };
        gen_max = gen_max.max(achieved);
        if lost > 0 {
            first_loss = Some(achieved);
            break;
        }
        last_ok = Some(last_ok.map_or(achieved, |m| m.max(achieved)));
        // The generators cannot go faster: higher targets give the same.
        if achieved < rate * 0.8 {
            break;
        }
    }
    // Full runs narrow the bracket: two halvings between the last rate
    // without loss and the first with.
    if !s.quick
        && let (Some(ok), Some(_)) = (last_ok, first_loss)
    {
        let (mut lo, mut hi) = (ok, first_loss.unwrap_or(ok));
        for _ in 0..2 {
            let mid = (lo + hi) / 2.0;
            let Some((achieved, lost)) = run(mid, &mut steps) else { break };
            if lost > 0 {
                hi = achieved;
                first_loss = Some(first_loss.map_or(achieved, |f| f.min(achieved)));
            } else {
                lo = achieved;
                last_ok = Some(last_ok.map_or(achieved, |m| m.max(achieved)));
            }
        }
    }
    let note = match (first_loss, error.as_ref()) {
        (_, Some(e)) => format!("step failed: {e}"),
        (Some(r), _) => format!("first loss at {r:.0}/s"),
        (None, _) => format!("no loss up to {gen_max:.0}/s, the generators' maximum here (or the last step)"),
    };
    json!({"transport": transport, "kind": kind, "first_loss_per_s": first_loss,
        "max_rate_without_loss_per_s": last_ok, "generator_max_per_s": gen_max, "steps": steps,
        "note": note, "step_secs": secs})
}

/// One agent on `transport`, every kind searched in turn (each step's
/// figures are deltas of the counters, so the kinds do not mix).
fn transport(s: &Setup, transport: &str) -> anyhow::Result<serde_json::Map<String, Value>> {
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let (sub, mut child) = start_run(
        s.agent,
        s.broker,
        s.dir,
        &format!("loss-{transport}"),
        &["--transport", transport, "--metrics", &metrics, "--log", "info"],
    )?;
    let mut per = serde_json::Map::new();
    for kind in ["exec", "connect"] {
        per.insert(kind.to_owned(), search(s, port, transport, kind));
    }
    // The counters are read: a slow stop (timed in the start/stop phase)
    // is cut short here to keep the phase's time down.
    stop_child(&mut child, libc::SIGTERM, Duration::from_secs(if s.quick { 1 } else { 3 }));
    drop(sub);
    Ok(per)
}

/// Every kind on every transport: {transport: {kind: result}}.
pub(super) fn phase(s: &Setup) -> Value {
    let dir = s.dir.join("loss");
    let _ = std::fs::create_dir_all(&dir);
    let s = Setup { dir: &dir, ..*s };
    let mut out = serde_json::Map::new();
    for t in ["ringbuf", "perf"] {
        let per = transport(&s, t).unwrap_or_else(|e| {
            let e = json!({"error": format!("{e:#}")});
            ["exec", "connect"].iter().map(|k| ((*k).to_owned(), e.clone())).collect()
        });
        out.insert(t.to_owned(), Value::Object(per));
    }
    Value::Object(out)
}
