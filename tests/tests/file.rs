//! File integrity against the real kernel: `shrike events` with the default
//! watch list reports changes under /etc and the users' ~/.ssh as `file`
//! events (absolute paths, the right operation), its built-ins fire on an
//! authorized_keys append, a `useradd` and a dropped cron file, a Sigma
//! file_event rule of our own fires, and writes under /tmp never reach it
//! (the kernel drops them). Everything created in /etc is removed.
//!
//! Needs the Debian package passwd (useradd, userdel, chpasswd).

use std::{path::PathBuf, process::Command, time::Duration};

use shrike_tests::{Agent, TestUser, Value, require_program, workspace_root};

/// Files this test may leave in /etc, removed when it ends (or fails).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn sh(script: &str) {
    let st = Command::new("/bin/bash").args(["-c", script]).status().expect("bash");
    assert!(st.success(), "{script}: {st}");
}

fn is_file(e: &Value, op: &str, path: &str) -> bool {
    e["kind"] == "file" && e["operation"] == op && e["path"] == path && e["success"] == true
}

fn alert_about(e: &Value, rule: &str, path: &str) -> bool {
    e["kind"] == "alert" && e["rule"] == rule && e["details"]["path"] == path
}

#[test]
fn watched_changes_are_reported_and_alerted_and_tmp_is_not() {
    if !shrike_tests::require_root() {
        return;
    }
    require_program("/usr/sbin/useradd", "passwd");
    let etc = |n: &str| PathBuf::from("/etc").join(n);
    let _cleanup = Cleanup(vec![
        etc("cron.d/shrike-test-cron"),
        etc("shrike-test-a"),
        etc("shrike-test-b"),
        etc("shrike-test-file"),
        etc("shrike-sigma-file-marker"),
        etc("shrike-test-after-tmp"),
    ]);
    // Made before the agent starts: its ~/.ssh is in the watch list then.
    let keyed = TestUser::create("shrikefk", "Shr1ke-file-test");
    let rules = workspace_root().join("tests/rules/file");
    let agent = Agent::start(&["--kinds", "file,alert", "--rules", rules.to_str().unwrap()]);

    // An ssh key appended to the user's authorized_keys.
    let keys = format!("/home/{}/.ssh/authorized_keys", keyed.name);
    sh(&format!(
        "mkdir -p /home/{u}/.ssh && echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIShrikeTestKey test' >> {keys}",
        u = keyed.name
    ));
    let a = agent.wait_for("ssh-key-added", |e| alert_about(e, "ssh-key-added", &keys));
    assert_eq!(a["event"]["kind"], "file", "{a}");
    assert_eq!(a["event"]["comm"], "bash", "{a}");
    assert_eq!(a["source"], "builtin", "{a}");

    // useradd rewrites /etc/passwd (NAME+ renamed into place).
    let added = TestUser::create("shrikefu", "Shr1ke-file-test2");
    let a = agent.wait_for("passwd-changed", |e| alert_about(e, "passwd-changed", "/etc/passwd"));
    assert!(a["event"]["exe"].as_str().is_some_and(|x| x.ends_with("useradd")), "{a}");
    drop(added);

    // A cron file dropped in /etc/cron.d.
    sh("printf '* * * * * root /bin/true\\n' > /etc/cron.d/shrike-test-cron");
    agent.wait_for("cron-changed", |e| alert_about(e, "cron-changed", "/etc/cron.d/shrike-test-cron"));

    // A rename and a delete in /etc: operation and absolute paths.
    sh("echo a > /etc/shrike-test-a && mv /etc/shrike-test-a /etc/shrike-test-b && rm /etc/shrike-test-b");
    agent.wait_for("the create", |e| is_file(e, "create", "/etc/shrike-test-a"));
    let r = agent.wait_for("the rename", |e| is_file(e, "rename", "/etc/shrike-test-a"));
    assert_eq!(r["new_path"], "/etc/shrike-test-b", "{r}");
    assert_eq!(r["comm"], "mv", "{r}");
    let d = agent.wait_for("the delete", |e| is_file(e, "delete", "/etc/shrike-test-b"));
    assert_eq!(d["comm"], "rm", "{d}");

    // A relative path: made absolute against the process's cwd (or, when
    // touch is gone before the agent looks, its parent shell's, in /etc too).
    sh("cd /etc && touch shrike-test-file && sleep 0.5 && rm -f shrike-test-file");
    let t = agent.wait_for("the relative create", |e| is_file(e, "create", "/etc/shrike-test-file"));
    assert!(matches!(t["resolved_from"].as_str(), Some("cwd" | "parent_cwd")), "{t}");

    // Our Sigma file_event rule: the marker under /etc fires, in /tmp not.
    let tmp = std::env::temp_dir().join(format!("shrike-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    sh(&format!("echo x > {}/shrike-sigma-file-marker", tmp.display()));
    sh("echo x > /etc/shrike-sigma-file-marker");
    let a = agent.wait_for("the sigma file_event alert", |e| {
        e["kind"] == "alert" && e["rule"] == "shrike-test-file" && e["source"] == "sigma"
    });
    assert_eq!(a["event"]["path"], "/etc/shrike-sigma-file-marker", "{a}");

    // Writes under /tmp: many files, then one watched write; none of the
    // /tmp ones is reported (the kernel drops them: not even counted sent).
    let before = agent.events().iter().filter(|e| e["kind"] == "file").count();
    sh(&format!(
        "cd / && for i in $(seq 1 200); do echo $i > {d}/f$i; mv {d}/f$i {d}/g$i; rm {d}/g$i; done; echo done > /etc/shrike-test-after-tmp",
        d = tmp.display()
    ));
    agent.wait_for("the write after the /tmp ones", |e| is_file(e, "create", "/etc/shrike-test-after-tmp"));
    std::thread::sleep(Duration::from_millis(300));
    let events = agent.events();
    let tmp_prefix = tmp.to_string_lossy().to_string();
    let in_tmp: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["kind"] == "file"
                && [&e["path"], &e["new_path"]]
                    .iter()
                    .any(|p| p.as_str().is_some_and(|p| p.starts_with(&tmp_prefix)))
        })
        .collect();
    assert!(in_tmp.is_empty(), "writes under {tmp_prefix} reported: {in_tmp:?}");
    let after = events.iter().filter(|e| e["kind"] == "file").count();
    assert!(after - before < 20, "{} file events for 600 changes in /tmp and one in /etc", after - before);
    let _ = std::fs::remove_dir_all(&tmp);

    let stats = agent.stop();
    assert_eq!(stats.lost("file"), 0);
    drop(keyed);
}
