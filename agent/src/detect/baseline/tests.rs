//! Recorded events and a fake clock (`t(s)`): learning, then alerting.

use super::*;
use crate::detect::builtin::testing::{Scratch, connect, exec, listen, t};

const LEARN: Duration = Duration::from_secs(100);

fn rules(alerts: &[Alert]) -> Vec<String> {
    alerts.iter().map(|a| a.rule.to_string()).collect()
}

fn feed(d: &mut Baseline, events: &[Event]) -> Vec<Alert> {
    let mut out = Vec::new();
    for ev in events {
        d.observe(ev, &mut out);
    }
    out
}

fn with_exe(mut ev: Event, exe: &str) -> Event {
    ev.exe = Some(exe.into());
    ev
}

fn parent(mut ev: Event, p: &str) -> Event {
    if let Body::Exec(x) = &mut ev.body {
        x.parent_exe = Some(p.into());
    }
    ev
}

/// What a gateway does during the learning period.
fn normal(at: f64) -> Vec<Event> {
    vec![
        parent(exec(at, 10, 1, "/usr/bin/true", &["true"]), "/usr/bin/bash"),
        with_exe(connect(at, 11, "10.1.2.3", 443), "/usr/bin/curl"),
        with_exe(listen(at, 12, 8080), "/usr/sbin/mosquitto"),
    ]
}

#[test]
fn learns_then_alerts_once_on_a_new_binary_and_a_new_destination() {
    let mut d = Baseline::new(LEARN, None);
    assert!(feed(&mut d, &normal(0.0)).is_empty(), "learning: no alert");
    // Still learning at 99 s: a new binary is learnt silently.
    assert!(feed(&mut d, &[exec(99.0, 13, 1, "/usr/bin/id", &["id"])]).is_empty());
    let mut out = Vec::new();
    d.tick(t(100.0), &mut out);
    assert!(out.is_empty());
    // After learning: the known behaviour is quiet...
    assert!(feed(&mut d, &normal(200.0)).is_empty());
    assert!(
        feed(&mut d, &[with_exe(connect(201.0, 11, "10.1.2.99", 443), "/usr/bin/curl")]).is_empty(),
        "same /24"
    );
    assert!(feed(&mut d, &[exec(202.0, 13, 1, "/usr/bin/id", &["id"])]).is_empty());
    // ...what is new fires once each.
    let new_bin = parent(exec(210.0, 20, 1, "/tmp/x/mytrue", &["mytrue"]), "/usr/bin/bash");
    let new_dest = with_exe(connect(211.0, 11, "10.1.3.3", 443), "/usr/bin/curl");
    let new_port = with_exe(connect(212.0, 11, "10.1.2.3", 8443), "/usr/bin/curl");
    let alerts =
        feed(&mut d, &[new_bin.clone(), new_dest.clone(), new_port, new_bin.clone(), new_dest.clone()]);
    assert_eq!(
        rules(&alerts),
        ["baseline-new-executable", "baseline-new-destination", "baseline-new-destination"],
        "{alerts:#?}"
    );
    let a = &alerts[0];
    assert_eq!((a.severity, a.source), (Severity::Low, "builtin"));
    assert_eq!(a.details["new"], "/tmp/x/mytrue");
    assert_eq!(a.details["known_count"], "4");
    assert!(a.description.contains("4 executables known"), "{}", a.description);
    assert_eq!(*a.event, new_bin);
    let b = &alerts[1];
    assert_eq!((b.details["new"].as_str(), b.details["known_count"].as_str()), ("10.1.3.0/24:443", "1"));
    assert!(b.description.contains("known destinations (1): 10.1.2.0/24:443"), "{}", b.description);
    assert_eq!(b.details["learnt_until"], "2026-12-06T04:01:40Z");
    assert_eq!(alerts[2].details["known_count"], "2");
}

#[test]
fn users_parents_and_listeners() {
    let mut d = Baseline::new(LEARN, None);
    feed(&mut d, &normal(0.0));
    let mut root = parent(exec(150.0, 30, 1, "/usr/bin/true", &["true"]), "/usr/sbin/cron");
    root.user = Some("root".into());
    let alerts =
        feed(&mut d, &[root.clone(), with_exe(listen(151.0, 12, 1883), "/usr/sbin/mosquitto"), root]);
    assert_eq!(rules(&alerts), ["baseline-new-user", "baseline-new-parent", "baseline-new-listener"]);
    assert_eq!(alerts[0].details["new"], "root");
    assert_eq!(alerts[0].details["known"], "alice");
    assert_eq!(alerts[1].details["known"], "/usr/bin/bash");
    assert_eq!(alerts[2].details["new"], "1883/tcp");
    // Writes to watched files (`file` events); failed ones are not learnt.
    let w = |at: f64, op: &'static str, path: &str, ok: bool| {
        let f = crate::events::file::File {
            operation: op,
            path: path.into(),
            new_path: None,
            target: None,
            mode: None,
            owner_uid: None,
            owner_gid: None,
            open_flags: None,
            directory: false,
            result: if ok { 0 } else { -13 },
            success: ok,
            error: None,
            path_truncated: false,
            resolved_from: None,
            raw: Default::default(),
        };
        let mut ev = crate::detect::builtin::testing::event(at, 31, Body::File(f));
        ev.exe = Some("/usr/sbin/useradd".into());
        ev
    };
    let out = feed(
        &mut d,
        &[
            w(152.0, "write", "/etc/passwd", true),
            w(153.0, "write", "/etc/shadow", false),
            w(154.0, "write", "/etc/shadow", true),
            w(155.0, "write", "/etc/passwd", true),
        ],
    );
    assert_eq!(rules(&out), ["baseline-new-executable", "baseline-new-file-write"]);
    assert_eq!(out[1].details["new"], "/etc/shadow");
    assert_eq!(out[1].details["known"], "/etc/passwd");
}

#[test]
fn ipv6_destinations_by_64() {
    let s = |a: &str| crate::detect::builtin::testing::sock(None, Some((a, 443)), "success");
    assert_eq!(destination(&s("2001:db8:1:2:3::9")).unwrap(), "[2001:db8:1:2::/64]:443");
    assert_eq!(destination(&s("::ffff:192.168.7.9")).unwrap(), "192.168.7.0/24:443");
}

#[test]
fn churn_stays_within_the_caps_and_is_reported_once() {
    let mut d = Baseline::new(LEARN, None);
    feed(&mut d, &normal(0.0));
    let mut out = Vec::new();
    d.tick(t(101.0), &mut out);
    // A hostile process: random executables and destinations, after learning.
    for i in 0..10_000u32 {
        d.observe(&exec(200.0, 100 + i, 1, &format!("/tmp/r{i}"), &["r"]), &mut out);
        let c =
            with_exe(connect(200.0, 5, &format!("10.{}.{}.1", i / 256 % 256, i % 256), 443), "/usr/bin/curl");
        d.observe(&c, &mut out);
    }
    let p = d.profile();
    assert_eq!(p.executables.len(), profile::caps::EXECUTABLES);
    assert_eq!(p.executables["/usr/bin/curl"].destinations.values.len(), profile::caps::PER_SET);
    assert!(p.overflow.executables > 0 && p.overflow.values > 0);
    let n = |r: &str| out.iter().filter(|a| &*a.rule == r).count();
    assert_eq!(n("baseline-overflow"), 2, "executables full, curl's destinations full");
    assert_eq!(n("baseline-new-executable"), profile::caps::EXECUTABLES - 3);
    assert_eq!(n("baseline-new-destination"), profile::caps::PER_SET - 1);
    let mut stats = DetectStats::default();
    d.report(&mut stats);
    let b = stats.baseline.unwrap();
    assert_eq!(b.executables, profile::caps::EXECUTABLES as u64);
    assert!(!b.learning);
}

#[test]
fn survives_a_restart_and_relearns_a_damaged_file() {
    let s = Scratch::new("baseline");
    let path = store::path_in(&s.0);
    let mut d = Baseline::new(LEARN, Some(path.clone()));
    feed(&mut d, &normal(0.0));
    let mut out = Vec::new();
    d.tick(t(1.0), &mut out);
    assert!(path.exists(), "saved at the first tick");
    // Saved again only once a minute has passed (and something changed).
    feed(&mut d, &[exec(2.0, 13, 1, "/usr/bin/id", &["id"])]);
    d.tick(t(30.0), &mut out);
    assert!(!store::read(&path).unwrap().executables.contains_key("/usr/bin/id"));
    d.tick(t(61.0), &mut out);
    assert!(store::read(&path).unwrap().executables.contains_key("/usr/bin/id"));
    d.observe(&exec(62.0, 14, 1, "/usr/bin/env", &["env"]), &mut out);
    d.persist(); // a clean stop
    drop(d);

    // Restarted after learning ended: the old ones are quiet, new ones fire.
    let mut d = Baseline::new(LEARN, Some(path.clone()));
    assert_eq!(d.profile().executables.len(), 5);
    let quiet = [normal(300.0), vec![exec(300.0, 14, 1, "/usr/bin/env", &["env"])]].concat();
    assert!(feed(&mut d, &quiet).is_empty());
    assert_eq!(rules(&feed(&mut d, &[exec(301.0, 15, 1, "/usr/bin/new", &[])])), ["baseline-new-executable"]);
    d.persist();

    for (what, damage) in [
        ("torn", Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)) as Box<dyn Fn(&mut Vec<u8>)>),
        ("corrupt", Box::new(|b: &mut Vec<u8>| *b.last_mut().unwrap() ^= 1)),
        ("version", Box::new(|b: &mut Vec<u8>| b[16] = b'9')),
        ("empty", Box::new(|b: &mut Vec<u8>| b.clear())),
    ] {
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        // Relearnt from scratch, never a panic; the damaged file kept aside.
        let mut d = Baseline::new(LEARN, Some(path.clone()));
        assert!(d.profile().executables.is_empty(), "{what}");
        assert!(s.0.join("baseline.profile.damaged").exists(), "{what}");
        assert!(feed(&mut d, &[exec(400.0, 15, 1, "/usr/bin/new2", &[])]).is_empty(), "{what}: learning");
        d.tick(t(401.0), &mut out);
        assert!(feed(&mut d, &[exec(499.0, 15, 1, "/usr/bin/new3", &[])]).is_empty(), "{what}: learning");
        assert_eq!(
            rules(&feed(&mut d, &[exec(501.0, 15, 1, "/usr/bin/new4", &[])])),
            ["baseline-new-executable"]
        );
        d.persist();
        assert!(store::read(&path).is_ok(), "{what}: a whole file again");
    }
}

#[test]
fn a_reset_on_disk_is_taken_over() {
    let s = Scratch::new("baseline-reset");
    let path = store::path_in(&s.0);
    let mut d = Baseline::new(LEARN, Some(path.clone()));
    feed(&mut d, &normal(0.0));
    d.persist();
    let mut out = Vec::new();
    d.tick(t(150.0), &mut out);
    assert_eq!(rules(&feed(&mut d, &[exec(151.0, 15, 1, "/usr/bin/new", &[])])), ["baseline-new-executable"]);
    // `shrike baseline reset` while the agent runs.
    cli::reset_file(&path).unwrap();
    d.persist(); // what a SIGHUP does before rebuilding the stage
    assert!(d.profile().executables.is_empty());
    assert!(feed(&mut d, &[exec(160.0, 16, 1, "/usr/bin/new5", &[])]).is_empty(), "learning again");
    d.persist();
    let p = store::read(&path).unwrap();
    assert_eq!(p.learn_started, Some(t(160.0).timestamp()));
    assert!(p.executables.contains_key("/usr/bin/new5"));
}

/// What a SIGHUP does: the running stage persists, a new stage is built
/// from the same settings and loads the profile; nothing is relearnt.
#[test]
fn a_rebuilt_stage_keeps_the_profile() {
    let s = Scratch::new("baseline-stage");
    let mut cfg = s.config();
    cfg.baseline = BaselineConfig { learn: Some(LEARN), state_dir: Some(s.0.clone()) };
    let mut stage = crate::detect::Detect::new(&cfg).unwrap();
    let mut out = Vec::new();
    for mut ev in normal(0.0) {
        stage.process(&mut ev, &mut out);
    }
    stage.persist();
    let mut stage = crate::detect::Detect::new(&cfg).unwrap();
    stage.tick(t(150.0), &mut out);
    let baseline_alerts = |out: &[Event]| {
        out.iter().filter(|e| matches!(&e.body, Body::Alert(a) if a.rule.starts_with("baseline-"))).count()
    };
    for mut ev in normal(151.0) {
        stage.process(&mut ev, &mut out);
    }
    assert_eq!(baseline_alerts(&out), 0, "learnt before the rebuild: {out:#?}");
    let mut ev = exec(152.0, 40, 1, "/usr/bin/new", &["new"]);
    stage.process(&mut ev, &mut out);
    assert_eq!(baseline_alerts(&out), 1);
    stage.tick(t(153.0), &mut out); // the counters are reported at ticks
    assert!(stage.stats.baseline.as_ref().is_some_and(|b| !b.learning && b.executables == 4));
}

#[test]
fn learning_period_setting() {
    assert_eq!(parse_learn("24h"), Ok(Some(Duration::from_secs(86400))));
    assert_eq!(parse_learn("off"), Ok(None));
    assert_eq!(parse_learn("0"), Ok(None));
    assert_eq!(parse_learn("0s"), Ok(None));
    assert!(parse_learn("soon").is_err());
    let mut cfg = DetectConfig::default();
    assert!(load(&cfg).is_some(), "on by default");
    cfg.baseline.learn = None;
    assert!(load(&cfg).is_none());
    let mut cfg = DetectConfig::default();
    cfg.disabled.insert(ID.into());
    assert!(load(&cfg).is_none());
}
