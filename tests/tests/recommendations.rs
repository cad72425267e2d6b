//! Recommendations end to end: a test root with a deliberately weak
//! sshd_config, a planted default credential (a real sha512-crypt hash of
//! "raspberry" made by `openssl passwd -6`), an MQTT listener on a network
//! address and a weak sysctl; `shrike recommendations --root ... --json`
//! finds each and exits 1; our SCA policy with every rule type gives the
//! expected results; and `shrike run --dry-run` sends an OSBaseline snapshot
//! of the same root that validates against the Azure schema.

mod hub_support;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

struct TestRoot(PathBuf);

impl Drop for TestRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn weak_root(tag: &str) -> TestRoot {
    let root = std::env::temp_dir().join(format!("shrike-rec-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let out = Command::new("openssl").args(["passwd", "-6", "-salt", "e2eSalt42", "raspberry"]).output();
    let hash = String::from_utf8(out.expect("openssl passwd").stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$6$e2eSalt42$"), "{hash}");
    write(&root, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\npi:x:1000:1000::/home/pi:/bin/bash\n");
    write(&root, "/etc/shadow", &format!("root:!:19000:0:99999:7:::\npi:{hash}:19000:0:99999:7:::\n"));
    write(
        &root,
        "/etc/ssh/sshd_config",
        "# weak on purpose\nPort 22\nPermitRootLogin yes\nPermitEmptyPasswords yes\nMaxAuthTries 10\n\
         Ciphers aes128-cbc,aes256-ctr\nX11Forwarding yes\n",
    );
    write(&root, "/etc/sysctl.d/10-net.conf", "net.ipv4.ip_forward = 0\n");
    write(&root, "/proc/sys/kernel/randomize_va_space", "0\n");
    write(&root, "/proc/sys/kernel/kptr_restrict", "1\n");
    // mosquitto listening on 0.0.0.0:1883 (0x075B), sshd on 127.0.0.1:22.
    write(
        &root,
        "/proc/net/tcp",
        "  sl  local_address rem_address   st tx_queue rx_queue\n   0: 00000000:075B 00000000:0000 0A 0:0 0\n   1: 0100007F:0016 00000000:0000 0A 0:0 0\n",
    );
    write(&root, "/proc/42/comm", "mosquitto\n");
    write(&root, "/proc/42/cmdline", "/usr/sbin/mosquitto\0-c\0/etc/mosquitto/mosquitto.conf\0");
    TestRoot(root)
}

fn recommendations(args: &[&str]) -> (Option<i32>, BTreeMap<String, Value>, String) {
    let out = Command::new(shrike_tests::agent_bin())
        .arg("recommendations")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running shrike recommendations");
    let mut by_id = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["kind"], "recommendation", "{v}");
        by_id.insert(format!("{}:{}", v["policy"].as_str().unwrap(), v["check"].as_str().unwrap()), v);
    }
    (out.status.code(), by_id, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_weak_root_is_found_and_exits_1() {
    let root = weak_root("weak");
    let dir = root.0.display().to_string();
    let policy = shrike_tests::workspace_root().join("tests/policies/every-rule.yml");
    let (code, r, stderr) =
        recommendations(&["--root", &dir, "--json", "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, Some(1), "a high-severity check fails: exit 1\n{stderr}");
    let result =
        |id: &str| r.get(id).unwrap_or_else(|| panic!("no {id} in {r:#?}"))["result"].as_str().unwrap();
    let reason = |id: &str| r[id]["reason"].as_str().unwrap_or_default().to_owned();
    // The gateway policy on the weak root: each weakness found, with its line.
    assert_eq!(result("shrike_gateway:91050"), "fail");
    assert!(
        reason("shrike_gateway:91050").contains("found /etc/ssh/sshd_config:3: permitrootlogin yes"),
        "{}",
        reason("shrike_gateway:91050")
    );
    assert_eq!(result("shrike_gateway:91052"), "fail", "PermitEmptyPasswords yes");
    assert_eq!(result("shrike_gateway:91053"), "fail", "CBC ciphers");
    assert_eq!(result("shrike_gateway:91055"), "fail", "X11Forwarding yes");
    assert_eq!(result("shrike_gateway:91056"), "fail", "MaxAuthTries 10");
    assert_eq!(result("shrike_gateway:91062"), "fail", "the planted default credential");
    assert!(
        reason("shrike_gateway:91062").contains("pi has a vendor default password"),
        "{}",
        reason("shrike_gateway:91062")
    );
    assert_eq!(r["shrike_gateway:91062"]["severity"], "critical");
    assert_eq!(result("shrike_gateway:91094"), "fail", "MQTT on 0.0.0.0:1883");
    assert_eq!(result("shrike_gateway:91033"), "fail", "randomize_va_space 0");
    assert_eq!(result("shrike_gateway:91030"), "pass", "kptr_restrict 1");
    assert_eq!(result("shrike_gateway:91090"), "pass", "no telnet");
    assert_eq!(result("shrike_gateway:91061"), "pass", "root is the only uid 0");
    assert_eq!(result("shrike_gateway:91032"), "not_applicable", "no such file in the test root");
    assert!(stderr.contains("default credentials: 1 accounts"), "{stderr}");

    // Our policy with every rule type.
    let mine: BTreeMap<&str, &str> = [
        ("1", "pass"),
        ("2", "fail"),
        ("3", "fail"),
        ("4", "pass"),
        ("5", "pass"),
        ("6", "pass"),
        ("7", "not_applicable"),
        ("8", "fail"),
        ("9", "pass"),
        ("10", "not_applicable"),
        ("11", "not_applicable"),
    ]
    .into();
    for (id, want) in mine {
        assert_eq!(
            result(&format!("shrike_test_every_rule:{id}")),
            want,
            "check {id}: {:#}",
            r[&format!("shrike_test_every_rule:{id}")]
        );
    }
    assert!(stderr.contains("\"r:\": 1"), "the registry rule is counted as skipped: {stderr}");

    // Fixed: PermitRootLogin no, no empty passwords... the high-severity failures go.
    write(&root.0, "/etc/ssh/sshd_config", "PermitRootLogin no\nPasswordAuthentication no\n");
    write(&root.0, "/etc/shadow", "root:!:19000:0:99999:7:::\npi:!:19000:0:99999:7:::\n");
    write(&root.0, "/proc/net/tcp", "h\n   0: 0100007F:075B 00000000:0000 0A 0:0 0\n");
    write(&root.0, "/proc/sys/kernel/randomize_va_space", "2\n");
    let (code, r, stderr) = recommendations(&["--root", &dir, "--json"]);
    let high: Vec<&Value> = r
        .values()
        .filter(|v| v["result"] == "fail" && (v["severity"] == "high" || v["severity"] == "critical"))
        .collect();
    assert_eq!(code, Some(if high.is_empty() { 0 } else { 1 }), "{high:#?}\n{stderr}");
    assert_eq!(r["shrike_gateway:91094"]["result"], "pass", "1883 on loopback only");
}

#[test]
fn policy_errors_name_file_and_line() {
    let dir = std::env::temp_dir().join(format!("shrike-rec-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yml");
    std::fs::write(&bad, "policy:\n  id: bad\nchecks:\n  - id: 1\n    title: x\n    condition: all\n    rules:\n      - 'f:/etc/passwd -> n:^x compare <= 1'\n").unwrap();
    let (code, _, stderr) = recommendations(&["--policy", bad.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:8: check 1", bad.display())), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `shrike run --dry-run` assesses the root at start and sends an OSBaseline
/// snapshot that validates against the Azure schema, with the findings in it.
#[test]
fn run_sends_an_os_baseline_that_validates() {
    if !shrike_tests::require_root() {
        return;
    }
    let root = weak_root("run");
    let spool = root.0.join("spool");
    let mut child = Command::new(shrike_tests::agent_bin())
        .args(["run", "--dry-run", "--low-interval", "1s", "--recommend-root"])
        .arg(&root.0)
        .arg("--agent-id-file")
        .arg(root.0.join("agent-id"))
        .arg("--spool-dir")
        .arg(&spool)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("shrike run");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else { continue };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
        let has = msg["Events"].as_array().is_some_and(|e| e.iter().any(|ev| ev["Name"] == "OSBaseline"));
        if has {
            found = Some(msg);
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    let msg = found.expect("an OSBaseline message within 90 s");
    hub_support::assert_valid(&msg);
    let ev = msg["Events"].as_array().unwrap().iter().find(|e| e["Name"] == "OSBaseline").unwrap();
    let items = ev["Payload"].as_array().unwrap();
    let item = |cce: &str| items.iter().find(|i| i["CceId"] == cce).unwrap_or_else(|| panic!("no {cce}"));
    assert_eq!(item("shrike_gateway:91050")["Result"], "Fail");
    assert_eq!(item("shrike_gateway:91062")["Result"], "Fail");
    assert_eq!(item("shrike_gateway:91062")["Severity"], "Critical");
    assert!(
        item("shrike_gateway:91062")["Error"].as_str().unwrap().contains("pi has a vendor default password")
    );
    assert!(
        item("shrike_gateway:91062")["ExtraDetails"]["Remediation"]
            .as_str()
            .is_some_and(|s| s.contains("passwd"))
    );
    assert_eq!(item("shrike_gateway:91090")["Result"], "Pass");
    assert!(items.iter().all(|i| i["CceId"] != "shrike_gateway:91032"), "not-applicable checks are left out");
}

/// `shrike events` prints the recommendations at start, as the same JSON
/// lines, next to the kernel's events.
#[test]
fn events_print_recommendations_at_start() {
    if !shrike_tests::require_root() {
        return;
    }
    let root = weak_root("events");
    let dir = root.0.display().to_string();
    let agent = shrike_tests::Agent::start(&["--recommend-root", &dir]);
    let rec = agent.wait_for("the default-credential recommendation", |e| {
        e["kind"] == "recommendation" && e["check"] == "91062"
    });
    assert_eq!(rec["result"], "fail", "{rec}");
    assert_eq!(rec["policy"], "shrike_gateway");
    assert!(rec["remediation"].as_str().is_some_and(|r| r.contains("passwd")), "{rec}");
    let all = agent.matching(|e| e["kind"] == "recommendation");
    assert!(all.len() >= 40, "one line per check: {}", all.len());
    // --kinds leaves them out (a script asked for some kinds only).
    drop(agent);
    let agent = shrike_tests::Agent::start(&["--recommend-root", &dir, "--kinds", "exec"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.matching(|e| e["kind"] == "recommendation").is_empty());
}
