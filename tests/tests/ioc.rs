//! Threat intelligence against the real kernel: `shrike events --ioc LIST`
//! with real connections over loopback (127.0.0.0/8 is all local, so a
//! listed 127.0.0.2 and an unlisted 127.1.0.1 both answer) and real execs of
//! binaries copied to a temporary directory, one whose SHA-256 is listed and
//! one whose is not. Checks the `ioc-connection` / `ioc-executable` alerts,
//! the `sha256` the exec events carry, and that a list edited while the
//! agent runs is reloaded.

use std::{
    net::{TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use sha2::{Digest, Sha256};
use shrike_tests::{Agent, TempDir, Value, require_root, run_to_end};

fn hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|b| format!("{b:02x}")).collect()
}

fn is_alert(e: &Value, rule: &str, pred: impl Fn(&Value) -> bool) -> bool {
    e["kind"] == "alert" && e["rule"] == rule && pred(&e["event"])
}

/// A connect event to `addr:port`.
fn connect_to(addr: &str, port: u16) -> impl Fn(&Value) -> bool {
    let addr = addr.to_owned();
    move |e: &Value| e["kind"] == "connect" && e["remote_addr"] == addr.as_str() && e["remote_port"] == port
}

/// Listens on `addr` (an ephemeral port) and connects to it.
fn connect_once(addr: &str) -> u16 {
    let l = TcpListener::bind((addr, 0)).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let port = l.local_addr().unwrap().port();
    let c = TcpStream::connect((addr, port)).unwrap_or_else(|e| panic!("connect {addr}:{port}: {e}"));
    drop(l.accept());
    drop(c);
    port
}

fn start(list: &std::path::Path) -> Agent {
    Agent::start(&[
        "--ioc",
        list.to_str().unwrap(),
        "--ioc-reload-interval",
        "1s",
        "--kinds",
        "exec,connect,alert",
    ])
}

#[test]
fn connections_to_listed_addresses_and_a_reloaded_list() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("ioc-conn");
    let list = dir.path().join("c2.txt");
    // A malformed line is reported and skipped; the rest loads.
    std::fs::write(&list, "# test C2 list\n127.0.0.0/24\nnot an address\n").unwrap();
    let agent = start(&list);

    let port = connect_once("127.0.0.2");
    let a = agent.wait_for("an ioc-connection alert for 127.0.0.2", |e| {
        is_alert(e, "ioc-connection", connect_to("127.0.0.2", port))
    });
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["source"], "builtin", "{a}");
    assert_eq!(a["details"]["address"], "127.0.0.2", "{a}");
    assert_eq!(a["details"]["ioc_list"], list.to_str().unwrap(), "{a}");
    assert_eq!(a["pid"], std::process::id(), "the connecting process: {a}");

    // Unlisted: its connect is seen, no alert.
    let other = connect_once("127.1.0.1");
    agent.wait_for("the connect to 127.1.0.1", connect_to("127.1.0.1", other));
    std::thread::sleep(Duration::from_millis(500));
    let got = agent.matching(|e| is_alert(e, "ioc-connection", connect_to("127.1.0.1", other)));
    assert!(got.is_empty(), "an unlisted address fired: {got:#?}");

    // The list changes while the agent runs: polled every second, reloaded.
    std::fs::write(&list, "127.0.0.0/24\n127.1.0.0/16\n").unwrap();
    // Polled every second: three seconds is ample.
    std::thread::sleep(Duration::from_secs(3));
    let port = connect_once("127.1.0.1");
    agent.wait_for("an ioc-connection alert for 127.1.0.1 after the reload", |e| {
        is_alert(e, "ioc-connection", connect_to("127.1.0.1", port))
    });
    let stats = agent.stop();
    let ioc = &stats.0["detect"]["ioc"];
    assert_eq!(ioc["reloads"], 1, "{ioc}");
    assert_eq!(ioc["loaded"]["cidr"], 2, "{ioc}");
}

#[test]
fn executables_with_a_listed_hash() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("ioc-exe");
    let listed = dir.path().join("listed-true");
    let unlisted = dir.path().join("unlisted-false");
    std::fs::copy("/usr/bin/true", &listed).unwrap();
    std::fs::copy("/usr/bin/false", &unlisted).unwrap();
    let want = hex(&std::fs::read(&listed).unwrap());
    let other = hex(&std::fs::read(&unlisted).unwrap());
    assert_ne!(want, other);
    let list = dir.path().join("hashes.csv");
    // MalwareBazaar's CSV shape: the header in a comment line.
    std::fs::write(
        &list,
        format!(
            "# \"first_seen_utc\",\"sha256_hash\",\"md5_hash\",\"file_name\"\n\
             \"2026-12-06 00:00:00\",\"{want}\",\"d41d8cd98f00b204e9800998ecf8427e\",\"x.elf\"\n"
        ),
    )
    .unwrap();
    let agent = start(&list);
    let path = listed.to_str().unwrap().to_owned();
    let (pid, _, _) = run_to_end(&mut Command::new(&listed));
    // First exec: hashed in the background; the alert follows with the exec.
    let a = agent.wait_for("an ioc-executable alert", |e| {
        is_alert(e, "ioc-executable", |ev| ev["pid"] == pid && ev["filename"] == path.as_str())
    });
    assert_eq!(a["severity"], "critical", "{a}");
    assert_eq!(a["details"]["sha256"], want.as_str(), "{a}");
    assert_eq!(a["event"]["sha256"], want.as_str(), "the alert's exec carries the hash: {a}");

    // Second exec of the same file: the cached hash is in the exec event
    // itself, and it fires again.
    let (pid2, _, _) = run_to_end(&mut Command::new(&listed));
    let ev = agent.wait_for("the second exec", |e| e["kind"] == "exec" && e["pid"] == pid2);
    assert_eq!(ev["sha256"], want.as_str(), "{ev}");
    agent.wait_for("the second alert", |e| is_alert(e, "ioc-executable", |ev| ev["pid"] == pid2));

    // Not listed: hashed, no alert.
    let upath = unlisted.to_str().unwrap().to_owned();
    let (upid, _, _) = run_to_end(&mut Command::new(&unlisted));
    agent.wait_for("the unlisted exec", |e| e["kind"] == "exec" && e["pid"] == upid);
    std::thread::sleep(Duration::from_millis(1500));
    let (upid2, _, _) = run_to_end(&mut Command::new(&unlisted));
    let ev = agent.wait_for("the second unlisted exec", |e| e["kind"] == "exec" && e["pid"] == upid2);
    assert_eq!(ev["sha256"], other.as_str(), "the unlisted file's hash: {ev}");
    let got = agent.matching(|e| is_alert(e, "ioc-executable", |ev| ev["filename"] == upath.as_str()));
    assert!(got.is_empty(), "an unlisted executable fired: {got:#?}");
    let stats = agent.stop();
    let hash = &stats.0["detect"]["ioc"]["hash"];
    assert!(hash["hashed"].as_u64().unwrap() >= 2, "{hash}");
}

/// A listed binary deleted while it runs: the hash is read through
/// /proc/PID/exe, so the file that ran is still judged.
#[test]
fn a_listed_binary_deleted_while_it_runs() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("ioc-deleted");
    let bin = dir.path().join("dropper");
    std::fs::copy("/usr/bin/sleep", &bin).unwrap();
    let want = hex(&std::fs::read(&bin).unwrap());
    let list = dir.path().join("hashes.txt");
    std::fs::write(&list, format!("{want}\n")).unwrap();
    let agent = start(&list);
    // The agent frozen until the file is gone: it sees the exec only after
    // the deletion (as with droppers that delete themselves at once), when
    // the path no longer opens and only /proc/PID/exe reaches the file.
    agent.suspend();
    std::thread::sleep(Duration::from_millis(100));
    let mut child = Command::new(&bin).arg("3").spawn().unwrap();
    std::fs::remove_file(&bin).unwrap();
    agent.resume();
    let pid = child.id();
    let a = agent.wait_for("an ioc-executable alert for the deleted binary", |e| {
        is_alert(e, "ioc-executable", |ev| ev["pid"] == pid)
    });
    assert_eq!(a["details"]["sha256"], want.as_str(), "{a}");
    let _ = child.kill();
    let _ = child.wait();
    agent.stop();
}
