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

/// `openat(dirfd, NAME, O_WRONLY|O_CREAT)`, its fd closed at once; panics
/// on failure.
fn create_at(dirfd: i32, name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated name; the fd returned is ours to close.
    let fd =
        unsafe { libc::openat(dirfd, c.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o600) };
    assert!(fd >= 0, "openat({dirfd}, {name}): {}", std::io::Error::last_os_error());
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
}

/// `openat(dirfd, path, flags)`; panics on failure.
fn open_at(dirfd: i32, path: &str, flags: i32) -> i32 {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC) };
    assert!(fd >= 0, "openat({dirfd}, {path}): {}", std::io::Error::last_os_error());
    fd
}

fn close(fd: i32) {
    // SAFETY: closing an fd this test opened.
    unsafe { libc::close(fd) };
}

/// The kernel's directory-fd cache drops paths relative to a directory fd
/// that holds nothing watched, but never one that reaches a watched file:
/// through the cwd, a dirfd of /etc, an fd number reused after close or
/// replaced by dup2, a `..` out of a marked directory, a symlink opened
/// without O_NOFOLLOW. Each write into /etc is reported with its absolute
/// path; the writes into the marked /tmp folder are not.
#[test]
fn writes_through_directory_fds_are_reported() {
    if !shrike_tests::require_root() {
        return;
    }
    let names = ["cwd", "a", "b", "c", "d", "e"].map(|n| format!("shrike-dirfd-{n}"));
    let _cleanup = Cleanup(names.iter().map(|n| PathBuf::from("/etc").join(n)).collect());
    let tmp = std::env::temp_dir().join(format!("shrike-dirfd-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc", tmp.join("link")).unwrap();
    let tmp_s = tmp.to_str().unwrap().to_owned();
    let agent = Agent::start(&["--kinds", "file"]);
    assert!(
        !agent.log().iter().any(|l| l.contains("hook that ends a directory fd")),
        "the directory-fd cache is off: {:?}",
        agent.log()
    );
    let me = std::process::id();
    let created = |name: &str| {
        let path = format!("/etc/{name}");
        agent.wait_for(&path, |e| is_file(e, "create", &path))
    };
    let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

    // `cd /etc && echo x > NAME`: relative to the cwd.
    // (The shell stays a moment: the agent reads its cwd in /proc.)
    sh(&format!("cd /etc && echo x > {} && sleep 0.5", names[0]));
    created(&names[0]);

    // openat(dirfd of /etc, NAME).
    let etc = open_at(libc::AT_FDCWD, "/etc", libc::O_RDONLY | libc::O_DIRECTORY);
    create_at(etc, &names[1]);
    let e = created(&names[1]);
    assert_eq!(e["pid"], me, "{e}");
    assert_eq!(e["resolved_from"], "dirfd", "{e}");
    close(etc);

    // A marked /tmp fd: its files are not reported. Closed, its number is
    // reused for /etc (opened without O_DIRECTORY: no mark is made).
    let t = open_at(libc::AT_FDCWD, &tmp_s, dir_flags);
    create_at(t, "in-tmp-1");
    close(t);
    let reused = open_at(libc::AT_FDCWD, "/etc", libc::O_RDONLY);
    assert_eq!(reused, t, "the lowest free fd is the closed one");
    create_at(reused, &names[2]);
    created(&names[2]);

    // dup2 of /etc onto a marked fd.
    let t = open_at(libc::AT_FDCWD, &tmp_s, dir_flags);
    create_at(t, "in-tmp-2");
    // SAFETY: both fds are ours; dup2 closes t and makes it /etc.
    assert_eq!(unsafe { libc::dup2(reused, t) }, t);
    create_at(t, &names[3]);
    created(&names[3]);
    close(t);
    close(reused);

    // `..` out of a marked folder (and one name from it, inherited).
    let t = open_at(libc::AT_FDCWD, &tmp_s, dir_flags);
    let sub = open_at(t, "sub", dir_flags);
    create_at(sub, "in-tmp-3");
    create_at(sub, &format!("../../../etc/{}", names[4]));
    created(&names[4]);
    close(sub);

    // A symlink to /etc opened from a marked folder without O_NOFOLLOW.
    let link = open_at(t, "link", libc::O_RDONLY | libc::O_DIRECTORY);
    create_at(link, &names[5]);
    created(&names[5]);
    close(link);
    close(t);

    std::thread::sleep(Duration::from_millis(500));
    let in_tmp: Vec<Value> =
        agent.matching(|e| e["kind"] == "file" && e["path"].as_str().is_some_and(|p| p.starts_with(&tmp_s)));
    assert!(in_tmp.is_empty(), "writes under {tmp_s} reported: {in_tmp:?}");
    let stats = agent.stop();
    assert_eq!(stats.lost("file"), 0);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `rm -rf` of a /tmp tree (unlinkat relative to directory fds, one a file)
/// stays in the kernel: the records it sends are a small fraction of its
/// unlinks, and none is lost. Before the directory-fd cache each unlink was
/// a record for the agent to resolve.
#[test]
fn rm_rf_of_a_tmp_tree_stays_in_the_kernel() {
    if !shrike_tests::require_root() {
        return;
    }
    const DIRS: usize = 40;
    const FILES: usize = 100;
    let tree = std::env::temp_dir().join(format!("shrike-rmrf-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    for d in 0..DIRS {
        let dir = tree.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES {
            std::fs::write(dir.join(format!("f{f}")), b"x").unwrap();
        }
    }
    let agent = Agent::start(&["--kinds", "file"]);
    let st = Command::new("rm").arg("-rf").arg(&tree).status().expect("rm");
    assert!(st.success() && !tree.exists(), "rm -rf failed: {st}");
    std::thread::sleep(Duration::from_millis(300));
    let stats = agent.stop();
    let unlinks = (DIRS * FILES + DIRS + 1) as u64;
    let sent = stats.sent("file");
    eprintln!("[file] rm -rf of {unlinks} entries: {sent} file records sent by the kernel (all activity)");
    assert!(sent < unlinks / 10, "{sent} file records for {unlinks} unlinks in /tmp");
    assert_eq!(stats.lost("file"), 0);
}
