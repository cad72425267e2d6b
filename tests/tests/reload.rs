//! `shrike run` under a service manager: SIGHUP reloads the config file in
//! place (systemd's `ExecReload`), against a real mosquitto and real execs;
//! and the log has colour codes only on a terminal (journald keeps them).
//!
//! Run as root: `cargo test -p shrike-tests --test reload -- --test-threads=1`.

mod hub_support;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hub_support::*;
use serde_json::Value;
use shrike_tests::{TempDir, marker, require_root};

const CLIENT_ID: &str = "reload";
const OLD_TOPIC: &str = "shrike/reload/security";
const NEW_TOPIC: &str = "shrike/reload-renamed/security";

/// Writes the agent's config file: `hub`, its id in `dir`, then `body`.
/// Written whole and renamed into place, as an editor would.
fn write_config(path: &Path, dir: &Path, hub: &str, body: &str) {
    let text = format!(
        "hub = \"{hub}\"\nclient_id = \"{CLIENT_ID}\"\nagent_id_file = \"{}\"\n{body}",
        dir.join("agent-id").display()
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("writing the config");
    std::fs::rename(&tmp, path).expect("renaming the config");
}

/// ProcessCreate payload items of `/bin/true {m}` on topic `t` (events
/// deduplicated by Id, messages validated).
fn creates(msgs: &[Received], t: &str, m: &str) -> Vec<Value> {
    let on: Vec<Received> = msgs.iter().filter(|r| r.topic == t).cloned().collect();
    let (events, _) = unique_events(&on);
    events.iter().filter_map(|e| marked_create(e, m)).cloned().collect()
}

fn lines_with(agent: &RunAgent, text: &str) -> Vec<String> {
    agent.log().into_iter().filter(|l| l.contains(text)).collect()
}

/// Sends SIGHUP and waits for the `n`-th log line containing `text`.
fn reload_and_wait(agent: &mut RunAgent, n: usize, text: &str) -> String {
    agent.signal(libc::SIGHUP);
    let ok = poll_until(Duration::from_secs(10), || lines_with(agent, text).len() >= n);
    assert!(ok, "no {text:?} line #{n} after SIGHUP; agent log:\n{}", agent.log().join("\n"));
    lines_with(agent, text).swap_remove(n - 1)
}

/// Slow settings, then a reload to fast ones: events run before the reload
/// are not lost, events after it arrive promptly and unaggregated. A broken
/// config changes nothing and the agent keeps delivering; a new topic
/// restarts the publisher on it.
#[test]
fn sighup_reloads_the_config_in_place() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("reload");
    let broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let cfg = dir.path().join("shrike.toml");
    let hub = format!("mqtt://127.0.0.1:{}", broker.port);
    let spool = |name: &str| format!("spool_dir = \"{}\"\n", dir.path().join(name).display());
    // Exec events batched for an hour and aggregated for an hour: none can
    // arrive while this test runs unless a reload changes that.
    let slow = &format!(
        "{}high_interval = \"1s\"\nlow_interval = \"1h\"\naggregate_interval = \"1h\"\n\
                [priority]\nexec = \"low\"\n",
        spool("spool")
    );
    write_config(&cfg, dir.path(), &hub, slow);
    let mut agent = RunAgent::start(&["--config".into(), cfg.display().to_string()]);

    let before = marker("before");
    run_true(&[&before]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        creates(&sub.messages(), OLD_TOPIC, &before).is_empty(),
        "an exec arrived under the slow settings; agent log:\n{}",
        agent.log().join("\n")
    );

    // Exec high and not aggregated, high interval 200 ms, low 1 s; bind
    // turned on (it was off: its probes are not attached).
    let fast = &format!(
        "{}high_interval = \"200ms\"\nlow_interval = \"1s\"\naggregate_interval = \"1h\"\n\
                [priority]\nexec = \"high\"\nbind = \"high\"\n[aggregation]\nexec = \"off\"\n",
        spool("spool")
    );
    write_config(&cfg, dir.path(), &hub, fast);
    let line = reload_and_wait(&mut agent, 1, "configuration reloaded");
    eprintln!("[reload] {line}");
    for change in [
        "priority.exec low -> high",
        "aggregation.exec 3600s -> off",
        "high_interval 1s -> 200ms",
        "low_interval 3600s -> 1s",
    ] {
        assert!(line.contains(change), "{change:?} missing in {line}");
    }
    assert!(!line.contains("priority.bind"), "bind cannot be turned on in place: {line}");
    let warned =
        agent.log().into_iter().any(|l| l.contains("WARN") && l.contains("bind") && l.contains("restart"));
    assert!(warned, "no warning that bind needs a restart; log:\n{}", agent.log().join("\n"));

    // The exec aggregated before the reload was flushed by it (low queue, now 1 s).
    let ok = sub.wait_until(Duration::from_secs(5), |m| !creates(m, OLD_TOPIC, &before).is_empty());
    assert!(ok, "the exec aggregated before the reload was lost; log:\n{}", agent.log().join("\n"));
    let items = creates(&sub.messages(), OLD_TOPIC, &before);
    assert_eq!(items.iter().map(hits).sum::<u64>(), 1, "{items:?}");

    // Three identical execs: three single events (no aggregation), promptly.
    let fast_m = marker("fast");
    let started = Instant::now();
    for _ in 0..3 {
        run_true(&[&fast_m]);
    }
    let ok = sub.wait_until(Duration::from_secs(10), |m| creates(m, OLD_TOPIC, &fast_m).len() >= 3);
    let took = started.elapsed();
    assert!(ok, "the execs after the reload did not arrive; log:\n{}", agent.log().join("\n"));
    let items = creates(&sub.messages(), OLD_TOPIC, &fast_m);
    assert_eq!(items.len(), 3, "three execs, three events: {items:?}");
    for item in &items {
        assert!(item["ExtraDetails"]["HitCount"].is_null(), "aggregated: {item}");
    }
    eprintln!("[reload] 3 execs delivered in {took:.2?}");
    assert!(took < Duration::from_secs(3), "high priority every 200 ms, yet it took {took:?}");

    // Broken configs: a syntax error, then an invalid value. Each is logged
    // with what is wrong; the agent keeps running with what it had.
    write_config(&cfg, dir.path(), &hub, &format!("{fast}this is not toml\n"));
    let line = reload_and_wait(&mut agent, 1, "configuration not reloaded");
    eprintln!("[reload] {line}");
    assert!(line.contains("ERROR") && line.contains(&cfg.display().to_string()), "{line}");
    let broken = fast.replace("\"200ms\"", "\"soon\"");
    write_config(&cfg, dir.path(), &hub, &broken);
    let line = reload_and_wait(&mut agent, 2, "configuration not reloaded");
    eprintln!("[reload] {line}");
    assert!(line.contains("ERROR") && line.contains("high_interval"), "{line}");
    assert!(agent.running(), "a broken config stopped the agent; log:\n{}", agent.log().join("\n"));
    assert_eq!(lines_with(&agent, "configuration reloaded").len(), 1);
    let still = marker("still");
    let started = Instant::now();
    run_true(&[&still]);
    let ok = sub.wait_until(Duration::from_secs(10), |m| !creates(m, OLD_TOPIC, &still).is_empty());
    let took = started.elapsed();
    assert!(ok, "no delivery after a broken config; log:\n{}", agent.log().join("\n"));
    assert!(took < Duration::from_secs(3), "the old 200 ms high interval should still run: {took:?}");

    // A new topic and spool: the publisher restarts with them.
    let renamed_topic = "topic = \"shrike/{client_id}-renamed/security\"\n";
    let moved = fast.replace(&spool("spool"), &spool("spool2"));
    write_config(&cfg, dir.path(), &hub, &format!("{renamed_topic}{moved}"));
    let line = reload_and_wait(&mut agent, 2, "configuration reloaded");
    eprintln!("[reload] {line}");
    assert!(line.contains(&format!("topic {OLD_TOPIC} -> {NEW_TOPIC}")), "{line}");
    assert!(line.contains("spool_dir") && line.contains("spool2"), "{line}");
    let renamed = marker("renamed");
    run_true(&[&renamed]);
    let ok = sub.wait_until(Duration::from_secs(10), |m| !creates(m, NEW_TOPIC, &renamed).is_empty());
    assert!(ok, "nothing on the new topic; log:\n{}", agent.log().join("\n"));
    assert!(creates(&sub.messages(), OLD_TOPIC, &renamed).is_empty(), "sent on the old topic too");
    assert!(dir.path().join("spool2").is_dir(), "the new spool was not opened");

    // Hub settings that pass the config check but cannot start (a CA file
    // that is no certificate): an error, and the running publisher stays.
    let not_a_cert = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_a_cert, "not a certificate\n").unwrap();
    let tls = format!("ca_file = \"{}\"\nhigh_interval = \"300ms\"\n", not_a_cert.display());
    let tls_hub = format!("mqtts://127.0.0.1:{}", broker.port);
    let body = format!("{renamed_topic}{tls}{}", moved.replace("high_interval = \"200ms\"\n", ""));
    write_config(&cfg, dir.path(), &tls_hub, &body);
    let line = reload_and_wait(&mut agent, 3, "configuration reloaded");
    eprintln!("[reload] {line}");
    let refused = lines_with(&agent, "cannot apply the new hub settings");
    assert!(refused.len() == 1 && refused[0].contains("not-a-cert.pem"), "{refused:?}");
    eprintln!("[reload] {}", refused[0]);
    assert!(line.ends_with("changes=high_interval 200ms -> 300ms"), "only the interval applies: {line}");
    let kept = marker("kept");
    run_true(&[&kept]);
    let ok = sub.wait_until(Duration::from_secs(10), |m| !creates(m, NEW_TOPIC, &kept).is_empty());
    assert!(ok, "no delivery after refused hub settings; log:\n{}", agent.log().join("\n"));

    let log = agent.stop();
    let errors: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("ERROR"))
        .filter(|l| !l.contains("configuration not reloaded") && !l.contains("cannot apply the new hub"))
        .collect();
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
}

/// The agent's log on a pipe (journald, a file) has no ANSI colour codes; on
/// a terminal it has them, unless NO_COLOR is set.
#[test]
fn log_colours_only_on_a_terminal() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("colours");
    let bin = shrike_tests::agent_bin().display().to_string();
    let id_file = dir.path().join("agent-id").display().to_string();
    // SIGINT after 3 s, before or after `shrike ready`: either way the agent
    // stops cleanly and logs `shrike stopping`.
    let command = ["timeout", "-s", "INT", "3", &bin, "run", "--dry-run", "--agent-id-file", &id_file];
    let run = |tty: bool, no_color: Option<&str>| -> String {
        let mut cmd = if tty {
            // script(1) runs it on a pseudo-terminal and copies what it prints.
            let mut c = Command::new("script");
            c.args(["-q", "-e", "-c", &command.join(" "), "/dev/null"]).stdout(Stdio::piped());
            c
        } else {
            let mut c = Command::new(command[0]);
            c.args(&command[1..]).stdout(Stdio::null());
            c
        };
        cmd.env_remove("NO_COLOR").env_remove("RUST_LOG").env_remove("SHRIKE_LOG");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).output().expect("running the agent");
        let text = String::from_utf8_lossy(if tty { &out.stdout } else { &out.stderr }).into_owned();
        assert!(text.contains("shrike stopping"), "tty={tty} NO_COLOR={no_color:?}: no log?\n{text}");
        text
    };
    let piped = run(false, None);
    assert!(!piped.contains("\x1b["), "colour codes on a pipe:\n{piped:?}");
    if !Path::new("/usr/bin/script").exists() {
        eprintln!("[reload] no script(1): the terminal half of this test is skipped");
        return;
    }
    let tty = run(true, None);
    assert!(tty.contains("\x1b["), "no colour codes on a terminal:\n{tty:?}");
    let no_color = run(true, Some("1"));
    assert!(!no_color.contains("\x1b["), "colour codes on a terminal with NO_COLOR=1:\n{no_color:?}");
}

/// FileChange payload items of `path` (any topic).
fn file_changes(msgs: &[Received], path: &str) -> Vec<Value> {
    let (events, _) = unique_events(msgs);
    events
        .iter()
        .filter(|e| e["Name"] == "FileChange")
        .filter_map(|e| e["Payload"].as_array())
        .flatten()
        .filter(|p| p["Path"] == path)
        .cloned()
        .collect()
}

/// Waits (10 s at most) for a FileChange of `p`.
fn arrives(sub: &Subscriber, agent: &RunAgent, p: &str) {
    let ok = sub.wait_until(Duration::from_secs(10), |m| !file_changes(m, p).is_empty());
    assert!(ok, "no FileChange of {p}; agent log:\n{}", agent.log().join("\n"));
}

/// `[detect] watch` changed by SIGHUP: the kernel's prefixes are rewritten
/// while the probes stay. A write in the newly watched folder is reported,
/// one in the folder no longer watched is not, and a directory fd the
/// kernel had marked as holding nothing watched (opened before the reload)
/// no longer hides writes through it.
#[test]
fn sighup_applies_watch_changes() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("reload-watch");
    let (a, b) = (dir.path().join("watched-a"), dir.path().join("watched-b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let broker = Broker::start(dir.path(), "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let cfg = dir.path().join("shrike.toml");
    let hub = format!("mqtt://127.0.0.1:{}", broker.port);
    let body = |watched: &Path| {
        format!(
            "spool_dir = \"{}\"\nhigh_interval = \"200ms\"\n[priority]\nfile = \"high\"\n\
             [aggregation]\nfile = \"off\"\n[detect]\nwatch = [\"{}\"]\n",
            dir.path().join("spool").display(),
            watched.display()
        )
    };
    write_config(&cfg, dir.path(), &hub, &body(&a));
    let mut agent = RunAgent::start(&["--config".into(), cfg.display().to_string()]);
    let path = |d: &Path, n: &str| d.join(n).display().to_string();

    std::fs::write(path(&a, "f1"), "1").unwrap();
    std::fs::write(path(&b, "f1"), "1").unwrap();
    arrives(&sub, &agent, &path(&a, "f1"));
    // B holds nothing watched: the kernel marks this fd of it.
    let bdir = std::ffi::CString::new(b.display().to_string()).unwrap();
    // SAFETY: a valid path; the fd is closed below.
    let bfd = unsafe { libc::open(bdir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW) };
    assert!(bfd >= 0, "open {}: {}", b.display(), std::io::Error::last_os_error());

    write_config(&cfg, dir.path(), &hub, &body(&b));
    let line = reload_and_wait(&mut agent, 1, "configuration reloaded");
    eprintln!("[reload] {line}");
    assert!(line.contains("watch ["), "no watch change in {line}");
    std::fs::write(path(&b, "f2"), "2").unwrap();
    std::fs::write(path(&a, "f2"), "2").unwrap();
    let name = std::ffi::CString::new("f3").unwrap();
    // SAFETY: bfd is open, the name valid; the new fd is closed at once.
    let fd = unsafe { libc::openat(bfd, name.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600) };
    assert!(fd >= 0, "openat f3: {}", std::io::Error::last_os_error());
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    arrives(&sub, &agent, &path(&b, "f2"));
    // (The agent resolves the dirfd in /proc: it stays open until then.)
    arrives(&sub, &agent, &path(&b, "f3"));
    // SAFETY: bfd is ours.
    unsafe { libc::close(bfd) };
    // A marker write in B after the unwatched ones: once it is here, they
    // would have been too.
    std::fs::write(path(&b, "last"), "x").unwrap();
    arrives(&sub, &agent, &path(&b, "last"));
    let msgs = sub.messages();
    for p in [path(&b, "f1"), path(&a, "f2")] {
        assert!(file_changes(&msgs, &p).is_empty(), "{p} is not watched, yet reported");
    }
    let log = agent.stop();
    assert!(!log.iter().any(|l| l.contains("ERROR")), "errors: {log:#?}");
}
