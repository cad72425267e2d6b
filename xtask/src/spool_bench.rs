//! The spool-flood phase (`cargo xtask bench --spool-flood`, also part of the
//! full bench): `shrike run` with connects at high priority and aggregation
//! off, under a loopback connect flood, so that messages fill fast and every
//! one goes through the spool. Before issue 14 part 4 each message was
//! written and fsync'd on the runtime thread, which then did not read the
//! ring buffer meanwhile: kernel records were lost to the fsyncs. The phase
//! reports the kernel's lost records, what the agent received, and the
//! spool's syncs and messages (their ratio is the group-commit size).

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::bail;
use serde_json::{Value, json};

use crate::bench::{Broker, connect_storm, start_run, stop_child};

/// Sums the numbers of `key` in a stop log line, whatever the format
/// (`kernel_lost.connect=3 kernel_lost.exec=1`, or the older
/// `kernel_lost={Connect: 3, Exec: 1}` / `received=10`).
fn field_sum(line: &str, key: &str) -> Option<u64> {
    let mut total = None;
    for (at, _) in line.match_indices(key) {
        let seg = &line[at + key.len()..];
        let seg = seg.strip_prefix(": ").unwrap_or(seg);
        // Up to the first space or comma outside braces.
        let mut depth = 0u32;
        let mut end = seg.len();
        for (i, c) in seg.char_indices() {
            match c {
                '{' | '[' | '(' => depth += 1,
                '}' | ']' | ')' => depth = depth.saturating_sub(1),
                ' ' | ',' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let seg = &seg[..end];
        if !seg.starts_with(['=', '.']) && !seg.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        for n in seg.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()) {
            *total.get_or_insert(0) += n.parse::<u64>().unwrap_or(0);
        }
    }
    total
}

pub(crate) fn phase(agent: &Path, broker: &Broker, dir: &Path, quick: bool) -> anyhow::Result<Value> {
    let extra = [
        "--priority",
        "connect=high",
        "--aggregate",
        "connect=off",
        "--priority",
        "accept=off",
        "--priority",
        "exec=off",
        "--priority",
        "exit=off",
        "--priority",
        "file=off",
        // Small messages (about 30 connects each): hundreds a second to
        // spool during the flood, as a gateway with a low message limit
        // would make.
        "--max-message-size",
        "16384",
    ];
    let name = "spool-flood";
    let (sub, mut child) = start_run(agent, broker, dir, name, &extra)?;
    let n = if quick { 20_000 } else { 200_000 };
    let t0 = Instant::now();
    let (done, _) = connect_storm(n, 2, false);
    let secs = t0.elapsed().as_secs_f64();
    // The last batches go out; then a clean stop logs the counters.
    std::thread::sleep(Duration::from_secs(2));
    stop_child(&mut child, libc::SIGINT, Duration::from_secs(30));
    drop(sub);
    let log = fs::read_to_string(dir.join(name).join("stderr"))?;
    let Some(stopping) = log.lines().find(|l| l.contains("shrike stopping")) else {
        bail!("no 'shrike stopping' line in the agent's log");
    };
    let publisher = log.lines().find(|l| l.contains("publisher stopping")).unwrap_or("");
    let lost = field_sum(stopping, "kernel_lost").unwrap_or(0);
    let received = field_sum(stopping, "received");
    let syncs = field_sum(publisher, "syncs");
    let written = field_sum(publisher, "written");
    let spool_dropped = field_sum(publisher, "spool_dropped");
    eprintln!(
        "bench: spool flood: {done} connects in {secs:.1} s ({:.0}/s); agent received {received:?} records, kernel lost {lost}; spool {written:?} messages in {syncs:?} syncs, dropped {spool_dropped:?}",
        done as f64 / secs
    );
    Ok(json!({
        "connects": done, "secs": secs, "rate_per_s": done as f64 / secs,
        "received": received, "kernel_lost": lost,
        "spool_syncs": syncs, "spool_messages_written": written, "spool_dropped": spool_dropped,
    }))
}

/// `--spool-flood` alone: its own broker; the result in OUT/spool-flood.json.
pub fn run(agent: &Path, out: &Path, quick: bool) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the spool-flood phase loads eBPF programs: run it as root");
    }
    let work = out.join("spool-flood-work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let broker = Broker::start(&work)?;
    let v = phase(agent, &broker, &work, quick)?;
    drop(broker);
    fs::write(out.join("spool-flood.json"), serde_json::to_string_pretty(&v)?)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_of_both_log_formats() {
        use super::field_sum;
        let new = "INFO shrike stopping: received=1200 kernel_lost.connect=3 kernel_lost.exec=1 messages=4";
        assert_eq!(field_sum(new, "kernel_lost"), Some(4));
        assert_eq!(field_sum(new, "received"), Some(1200));
        let old = "INFO shrike stopping received=1200 kernel_lost={Connect: 3, Exec: 1} messages=4";
        assert_eq!(field_sum(old, "kernel_lost"), Some(4));
        assert_eq!(field_sum(old, "received"), Some(1200));
        let pubs = "publisher stopping: acked=3 spool.syncs=12 spool.written=40";
        assert_eq!((field_sum(pubs, "syncs"), field_sum(pubs, "written")), (Some(12), Some(40)));
        let dbg = "publisher stopping stats=PublisherStats { published: 3, spool_dropped: 7, pending: 0 }";
        assert_eq!(field_sum(dbg, "spool_dropped"), Some(7));
        assert_eq!(field_sum(new, "absent"), None);
    }
}
