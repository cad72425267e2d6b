//! The spool, end to end: `shrike run` against a real mosquitto, real execs.
//! What a user saw (issue 14, part 7): drop statistics that counted messages
//! instead of events, health counts lost with their own message, corrupt
//! records reported only in the local log, directories with a spool file's
//! name, unusable or shared spool directories.
//!
//! Run as root: `cargo test -p shrike-tests --test spool -- --test-threads=1`.

mod hub_support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hub_support::*;
use serde_json::Value;
use shrike_tests::{TempDir, marker, require_root};

fn args(port: u16, dir: &Path, id: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--hub",
        &format!("mqtt://127.0.0.1:{port}"),
        "--spool-dir",
        &spool_dir(dir, id).display().to_string(),
        "--agent-id-file",
        &dir.join(format!("{id}-agent-id")).display().to_string(),
        "--client-id",
        id,
        "--high-interval",
        "1s",
        "--low-interval",
        "1s",
        "--health-interval",
        "1s",
        "--aggregate-interval",
        "1s",
        // Kinds the rest of the machine makes plenty of, not looked at here.
        "--priority",
        "exit=off",
        "--priority",
        "connect=off",
        "--priority",
        "accept=off",
        "--priority",
        "file=off",
        "--no-recommendations",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn spool_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}-spool"))
}

fn topic(id: &str) -> String {
    format!("shrike/{id}/security")
}

/// The payloads of the health events named `name` (all messages of topic `t`,
/// events deduplicated by Id).
fn health(msgs: &[Received], t: &str, name: &str) -> Vec<Value> {
    let mine: Vec<Received> = msgs.iter().filter(|m| m.topic == t).cloned().collect();
    let (events, _) = unique_events(&mine);
    events.into_iter().filter(|e| e["Name"] == name).map(|e| e["Payload"][0].clone()).collect()
}

fn sum(items: &[Value], queue: &str, field: &str) -> u64 {
    items.iter().filter(|p| p["Queue"] == queue).map(|p| p[field].as_u64().unwrap()).sum()
}

/// Defects 1 and 2: the broker is down and the spool (600,000 bytes) takes
/// about a third of 3,000 distinct execs. The DroppedEventsStatistics that
/// reach the hub afterwards count every lost exec (events, not messages), and
/// the counts of health messages the full spool dropped are not lost with them.
#[test]
fn lost_events_are_counted_as_events_while_the_broker_is_down() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("spool-lost");
    let mut broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    broker.stop();
    let id = "lost";
    let agent = RunAgent::start(&args(
        broker.port,
        dir.path(),
        id,
        &["--spool-size", "600000", "--priority", "exec=high", "--aggregate", "exec=off"],
    ));
    let m = marker("lost");
    const N: u32 = 3000;
    let start = Instant::now();
    for i in 0..N {
        run_true(&[&m, &i.to_string()]);
    }
    eprintln!("[spool] {N} execs in {:.2?}", start.elapsed());
    // Batches, health events and drops settle while the broker is away.
    std::thread::sleep(Duration::from_secs(4));
    broker.restart();
    let t = topic(id);
    let arrived = |msgs: &[Received]| -> BTreeSet<u32> {
        let mine: Vec<Received> = msgs.iter().filter(|r| r.topic == t).cloned().collect();
        let (events, _) = unique_events(&mine);
        events
            .iter()
            .filter_map(|e| marked_create(e, &m))
            .filter_map(|item| item["CommandLine"].as_str()?.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    // Everything spooled is delivered, then two more health intervals.
    let mut last = 0;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(200));
        let n = arrived(&sub.messages()).len();
        if n != last {
            last = n;
            since = Instant::now();
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let log = agent.stop();
    let msgs = sub.messages();
    let got = arrived(&msgs);
    let lost = u64::from(N) - got.len() as u64;
    let stats = health(&msgs, &t, "DroppedEventsStatistics");
    let (collected, dropped) = (sum(&stats, "High", "CollectedEvents"), sum(&stats, "High", "DroppedEvents"));
    let publisher = log.iter().find(|l| l.contains("publisher stopping")).cloned().unwrap_or_default();
    eprintln!(
        "[spool] {} of {N} marked execs arrived, {lost} lost; the hub was told: {collected} collected, {dropped} dropped (high queue); {publisher}",
        got.len()
    );
    assert!(lost >= 1000, "the small spool must have overflowed: {lost} lost; log:\n{}", log.join("\n"));
    assert!(collected >= u64::from(N), "every exec is counted as collected: {collected}");
    assert!(
        dropped >= lost,
        "every lost exec is reported as a dropped event: {dropped} reported, {lost} marked execs lost"
    );
    assert!(dropped <= collected, "no more dropped than collected: {dropped} > {collected}");
    // Health messages were dropped too (low priority, the oldest go first):
    // their counts arrived with later ones, or the sums above would be short.
    assert!(log.iter().any(|l| l.contains("spool full")), "the spool was full; log:\n{}", log.join("\n"));
}

/// Defects 5 and 6: a corrupt record and a directory with a spool file's
/// name are in the spool at start. The corrupt record reaches the hub as a
/// dropped event and a SpoolCorruptRecords count; the directory is moved
/// aside once, and new messages are not lost to it. A restart counts neither
/// again.
#[test]
fn corrupt_and_foreign_spool_entries_are_reported_once() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("spool-corrupt");
    let broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let id = "corrupt";
    let spool = spool_dir(dir.path(), id);
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join("00000000000000000007.h.msg"), b"SHRKSPL2 not a record at all").unwrap();
    std::fs::create_dir(spool.join("00000000000000000009.l.msg")).unwrap();
    let argv = args(broker.port, dir.path(), id, &[]);
    let agent = RunAgent::start(&argv);
    let m = marker("corrupt");
    run_true(&[&m, "0"]);
    let t = topic(id);
    let reported = |msgs: &[Received]| {
        health(msgs, &t, "MessageStatistics")
            .iter()
            .filter_map(|p| {
                p["ExtraDetails"]["SpoolCorruptRecords"].as_str().map(|s| s.parse::<u64>().unwrap())
            })
            .sum::<u64>()
    };
    let ok = sub.wait_until(Duration::from_secs(20), |msgs| {
        let (events, _) = unique_events(&msgs.iter().filter(|r| r.topic == t).cloned().collect::<Vec<_>>());
        reported(msgs) >= 1 && events.iter().any(|e| marked_create(e, &m).is_some())
    });
    let log = agent.stop();
    let msgs = sub.messages();
    assert!(ok, "no corrupt-record report or no exec; log:\n{}", log.join("\n"));
    assert_eq!(reported(&msgs), 1, "one corrupt record");
    let stats = health(&msgs, &t, "DroppedEventsStatistics");
    assert!(
        sum(&stats, "High", "DroppedEvents") >= 1,
        "the corrupt high-priority record is a dropped event: {stats:?}"
    );
    assert!(spool.join("00000000000000000009.l.msg.foreign").is_dir(), "the directory was moved aside");
    assert!(!spool.join("00000000000000000007.h.msg").exists(), "the corrupt record was removed");
    assert!(log.iter().any(|l| l.contains("moved aside")), "{log:?}");

    // Again on the same spool: nothing to report, nothing moved.
    let before = msgs.len();
    let agent = RunAgent::start(&argv);
    run_true(&[&m, "1"]);
    let ok = sub.wait_until(Duration::from_secs(20), |msgs| {
        health(&msgs[before..], &t, "MessageStatistics").len() >= 2
    });
    let log = agent.stop();
    assert!(ok, "no health events after the restart; log:\n{}", log.join("\n"));
    assert_eq!(reported(&sub.messages()[before..]), 0, "not counted again");
    let again: Vec<&String> =
        log.iter().filter(|l| l.contains("moved aside") || l.contains("corrupt spool record")).collect();
    assert!(again.is_empty(), "{again:?}");
}

/// Defects 8 and 10: a spool directory the agent cannot use, or one another
/// agent holds, stops `shrike run` at start with exit 2 naming `spool_dir`.
#[test]
fn unusable_or_shared_spool_dirs_exit_2_naming_spool_dir() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("spool-unusable");
    let d = dir.path();
    let file = d.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let ro = d.join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let rofs = d.join("rofs");
    std::fs::create_dir(&rofs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
        .arg(&rofs)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a read-only tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(rofs.clone());
    let id = d.join("id").display().to_string();
    for (spool, why) in [
        (file.join("spool"), "not a directory"),
        (file.clone(), "not a directory"),
        (ro.clone(), "not writable"),
        (rofs.clone(), "Read-only file system"),
    ] {
        let s = spool.display().to_string();
        let (code, err) =
            run_to_exit(&["--hub", "mqtt://127.0.0.1:1", "--spool-dir", &s, "--agent-id-file", &id]);
        eprintln!("[spool] --spool-dir {s}: exit {code:?}: {}", err.trim());
        assert_eq!(code, Some(2), "{s}: {err}");
        assert!(
            err.contains("spool_dir") && err.to_lowercase().contains(&why.to_lowercase()),
            "{s}: must name spool_dir and say {why:?}: {err}"
        );
    }

    // A second agent on a running agent's spool.
    let shared = d.join("shared").display().to_string();
    let first_args: Vec<String> = [
        "--hub",
        "mqtt://127.0.0.1:1",
        "--spool-dir",
        &shared,
        "--agent-id-file",
        &id,
        "--no-recommendations",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let first = RunAgent::start(&first_args);
    let (code, err) =
        run_to_exit(&["--hub", "mqtt://127.0.0.1:1", "--spool-dir", &shared, "--agent-id-file", &id]);
    let log = first.stop();
    eprintln!("[spool] a second agent on {shared}: exit {code:?}: {}", err.trim());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("spool_dir") && err.contains("in use by another shrike agent (pid "), "{err}");
    assert!(!log.iter().any(|l| l.contains("ERROR")), "the first agent is undisturbed: {log:?}");
}

/// Defect 3: the spool's file system fills up (a 256 KiB tmpfs, far below
/// `spool_size`) while the broker is down. New high-priority events (PAM
/// logins) are kept by dropping the oldest low-priority messages (privilege
/// changes), as when `spool_size` is reached; the newest low-priority ones
/// and every login arrive once the broker is back, and the hub is told how
/// many low-priority events were dropped.
#[test]
fn a_full_file_system_drops_the_oldest_low_priority_messages() {
    if !require_root() {
        return;
    }
    for (bin, pkg) in [("/usr/bin/setpriv", "util-linux"), ("/usr/bin/pamtester", "pamtester")] {
        assert!(Path::new(bin).exists(), "{bin} is missing: install the Debian package {pkg}");
    }
    let dir = TempDir::new("spool-enospc");
    let id = "enospc";
    let spool = spool_dir(dir.path(), id);
    std::fs::create_dir_all(&spool).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(&spool)
        .status()
        .unwrap();
    assert!(st.success(), "mount a 256 KiB tmpfs on {}", spool.display());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spool.clone());
    let service = marker("shrike-enospc");
    let _pam = shrike_tests::InstalledFile::new(
        format!("/etc/pam.d/{service}"),
        "auth required pam_permit.so\naccount required pam_permit.so\n",
    );
    let mut broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    broker.stop();
    let agent = RunAgent::start(&args(
        broker.port,
        dir.path(),
        id,
        &[
            "--max-message-size",
            "2048",
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
        ],
    ));
    const N: u32 = 600;
    let gid_base = 3_100_000_000u32 + (std::process::id() % 1_000_000) * 256;
    let setpriv = |i: u32| {
        let st = std::process::Command::new("/usr/bin/setpriv")
            .args([&format!("--regid={}", gid_base + i), "--keep-groups", "/bin/true"])
            .status()
            .unwrap();
        assert!(st.success());
    };
    for i in 0..N / 2 {
        setpriv(i);
    }
    // Past the low interval: the file system is full of low-priority messages.
    std::thread::sleep(Duration::from_secs(3));
    let mut logins = BTreeSet::new();
    for _ in 0..3 {
        let mut child = std::process::Command::new("/usr/bin/pamtester")
            .args([&service, "root", "authenticate"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        logins.insert(child.id());
        assert!(child.wait().unwrap().success());
    }
    for i in N / 2..N {
        setpriv(i);
    }
    std::thread::sleep(Duration::from_secs(3));
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
    let mine = |msgs: &[Received]| -> Vec<Value> {
        unique_events(&msgs.iter().filter(|r| r.topic == t).cloned().collect::<Vec<_>>()).0
    };
    let ok = sub.wait_until(Duration::from_secs(40), |msgs| {
        let events = mine(msgs);
        events.iter().filter_map(login_pid).collect::<BTreeSet<_>>() == logins
            && events.iter().any(|e| index(e) == Some(N - 1))
    });
    // A health interval after the drain: the drops are reported.
    std::thread::sleep(Duration::from_secs(3));
    let log = agent.stop();
    let msgs = sub.messages();
    let events = mine(&msgs);
    let pids: BTreeSet<u32> = events.iter().filter_map(login_pid).collect();
    let idx: BTreeSet<u32> = events.iter().filter_map(index).collect();
    let missing = N - idx.len() as u32;
    let stats = health(&msgs, &t, "DroppedEventsStatistics");
    let dropped_low = sum(&stats, "Low", "DroppedEvents");
    eprintln!(
        "[spool] full tmpfs: {} of {N} privilege changes arrived ({missing} missing), logins {pids:?} of {logins:?}; the hub was told {dropped_low} low-priority events dropped",
        idx.len()
    );
    assert!(ok, "logins {pids:?} of {logins:?} or the newest change missing; log:\n{}", log.join("\n"));
    assert_eq!(pids, logins, "every high-priority event arrives");
    assert!(log.iter().any(|l| l.contains("file system full")), "ENOSPC was met: {log:?}");
    assert!(missing > 0, "the file system was full: some low-priority changes were dropped");
    assert!(!idx.contains(&0), "the oldest low-priority messages went first");
    assert!(idx.contains(&(N - 1)), "the newest stays");
    assert!(dropped_low >= u64::from(missing), "{missing} lost, {dropped_low} reported");
    assert!(!log.iter().any(|l| l.contains("message dropped: writing")), "no write errors: {log:?}");
}
