//! Bursts of 10,000 execs: every exec is either received or counted lost by
//! the kernel side, never dropped silently. Prints generated/received/lost.
//!
//! The kernel's lost counters are per kind, not per process: an exec of some
//! other process lost in the same burst would count too. The exact equality is
//! therefore asserted when no other process was created or exec'd while the
//! agent ran (a quiet machine, as in CI) or nothing was lost; otherwise
//! received + lost must at least cover what was generated.

use std::time::{Duration, Instant};

use shrike_tests::{Agent, Value, helper_bin, run_helper};

const BURST: u64 = 10_000;
const PROG: &str = "/bin/true";

struct Outcome {
    generated: u64,
    received: u64,
    lost: u64,
}

fn ours(e: &Value, marker: &str) -> bool {
    e["kind"] == "exec" && e["filename"] == PROG && e["argv"][1] == marker
}

/// Runs `spawn-many` of /bin/true under an agent started with `args`.
/// `stall`: stop reading the agent's output during the burst, so its kernel
/// buffer fills and records are lost.
fn burst(label: &str, args: &[&str], stall: bool) -> Outcome {
    let agent = Agent::start(args);
    let marker = shrike_tests::marker("burst");
    if stall {
        agent.pause_reading();
    }
    let started = Instant::now();
    let n = BURST.to_string();
    let (helper, lines, status) = run_helper(helper_bin!(), &["spawn-many", &n, "2", PROG, &marker]);
    assert!(status.success());
    let out = &lines[0];
    assert_eq!(out.get("failed"), "0", "{out:?}");
    let generated: u64 = out.num("ok");
    assert_eq!(generated, BURST);
    let burst_secs = out.num::<f64>("elapsed_us") / 1e6;
    agent.resume_reading();

    // Wait until every exec arrived or none arrives for a while (lost ones).
    let (mut received, mut scanned) = (0u64, 0usize);
    let mut before = u64::MAX;
    while received < generated && received != before {
        before = received;
        agent.try_wait_until(Duration::from_secs(2), |events| {
            received += events[scanned..].iter().filter(|e| ours(e, &marker)).count() as u64;
            scanned = events.len();
            received >= generated
        });
    }
    let delivered_secs = started.elapsed().as_secs_f64();
    let (stats, events) = agent.stop_with_events();
    // The drain at stop may have written a few more.
    let received = events.iter().filter(|e| ours(e, &marker)).count() as u64;
    // The helper's own exec is the only other one expected.
    let helper_seen = events.iter().any(|e| shrike_tests::is(e, "exec", helper));
    let foreign =
        events.iter().filter(|e| e["kind"] == "exec" && !ours(e, &marker) && e["pid"] != helper).count();
    let lost = stats.lost("exec");
    let expected = generated + u64::from(!helper_seen);
    // Processes created by others while the agent ran (this test created the
    // helper and the burst): their execs may be among the lost ones.
    let foreign_forks = (stats.sent("fork") + stats.lost("fork")).saturating_sub(generated + 1);
    // Records of every kind (exec, fork, exit) the agent read from the kernel.
    let records = stats.field("received");
    println!(
        "BURST {label}: generated={generated} received={received} lost={lost} \
         execs/s={:.0} (burst {burst_secs:.2}s); agent read {records} kernel records \
         ({:.0}/s, all delivered {delivered_secs:.2}s after the start); \
         foreign_execs_seen={foreign} foreign_forks={foreign_forks} helper_exec_seen={helper_seen}\n  stats={}",
        generated as f64 / burst_secs,
        records as f64 / delivered_secs,
        stats.0
    );
    assert!(received <= generated, "more events than execs: {received} > {generated}");
    // Every exec record the kernel sent was decoded and written: as an exec
    // event, or folded as a PATH-search miss (ENOENT) into the exec that
    // followed it (`path_misses`, the default `--exec-misses fold`).
    let execs = events.iter().filter(|e| e["kind"] == "exec");
    let folded: u64 = execs.clone().filter_map(|e| e["path_misses"].as_u64()).sum();
    assert_eq!(stats.sent("exec") as usize, execs.count() + folded as usize, "{}", stats.0);
    if (foreign == 0 && foreign_forks == 0) || lost == 0 {
        assert_eq!(received + lost, expected, "execs silently dropped: {}", stats.0);
    } else {
        assert!(received + lost >= expected, "execs silently dropped: {}", stats.0);
    }
    if stats.transport() == "perf" {
        // PERF_RECORD_LOST notices never exceed what the programs counted lost.
        assert!(stats.field("perf_lost") <= stats.total_lost(), "{}", stats.0);
    }
    Outcome { generated, received, lost }
}

#[test]
fn exec_burst_ringbuf() {
    if !shrike_tests::require_root() {
        return;
    }
    let o = burst("ringbuf (default 4 MiB ring, reader running)", &["--kinds", "exec"], false);
    assert_eq!(o.generated, BURST);
}

#[test]
fn exec_burst_perf() {
    if !shrike_tests::require_root() {
        return;
    }
    let o = burst("perf (256 pages/CPU, reader running)", &["--kinds", "exec", "--transport", "perf"], false);
    assert_eq!(o.generated, BURST);
}

/// The output stalls (a slow consumer): the small ring fills and records are
/// lost, and every one of them is counted.
#[test]
fn exec_burst_ringbuf_stalled_consumer_counts_losses() {
    if !shrike_tests::require_root() {
        return;
    }
    let o =
        burst("ringbuf (64 KiB ring, output stalled)", &["--kinds", "exec", "--ring-size", "65536"], true);
    assert!(o.lost > 0, "a stalled consumer and a 64 KiB ring lost nothing: the loss path was not exercised");
    assert!(o.received > 0);
}

#[test]
fn exec_burst_perf_stalled_consumer_counts_losses() {
    if !shrike_tests::require_root() {
        return;
    }
    let o = burst(
        "perf (1 page/CPU, output stalled)",
        &["--kinds", "exec", "--transport", "perf", "--perf-pages", "1"],
        true,
    );
    assert!(
        o.lost > 0,
        "a stalled consumer and 1-page perf buffers lost nothing: the loss path was not exercised"
    );
    assert!(o.received > 0);
}
