//! Process events against the real kernel: exec (argv, bounds, failures), fork
//! and exit (codes, signals). Each check runs over both transports.

use std::{os::unix::process::CommandExt, os::unix::process::ExitStatusExt, process::Command};

use shrike_tests::{
    Agent, Helper, Value, assert_enriched, helper_bin, is, json, marker, of, run_helper, run_to_end,
};

shrike_tests::both_transports!(
    argv_exact,
    arg_bounds,
    failed_exec,
    fork_and_exit_codes,
    killed_by_signal,
    short_lived_children_keep_their_parent,
    exec_variants,
    exec_from_a_thread,
    path_search_misses
);

fn test_pid() -> u32 {
    std::process::id()
}

/// The agent with the process kinds only (all kinds together: all_kinds.rs).
fn start(transport: &str, extra: &[&str]) -> Agent {
    let mut args = vec!["--transport", transport, "--kinds", "exec,exit,fork"];
    args.extend_from_slice(extra);
    Agent::start(&args)
}

fn stop(agent: Agent, transport: &str) {
    let stats = agent.stop();
    assert_eq!(stats.transport(), transport, "stats: {:?}", stats.0);
    // This test's events all arrived (waited for above); records lost under
    // load from other processes are only reported.
    stats.report_losses();
}

/// The fields every successful exec of the helper has.
fn assert_helper_exec(ev: &Value, pid: u32, argv: &[&str], truncated: bool, transport: &str) {
    let helper = helper_bin!();
    let ctx = format!("event {ev}");
    assert_eq!(ev["kind"], "exec", "{ctx}");
    assert_eq!(ev["pid"], pid, "{ctx}");
    assert_eq!(ev["tid"], pid, "{ctx}");
    assert_enriched(ev, "ppid", test_pid(), transport);
    assert_eq!(ev["uid"], 0, "{ctx}");
    assert_eq!(ev["gid"], 0, "{ctx}");
    assert_eq!(ev["user"], "root", "{ctx}");
    // TASK_COMM_LEN: 15 bytes of "shrike-test-helper".
    assert_eq!(ev["comm"], "shrike-test-hel", "{ctx}");
    assert_eq!(ev["filename"], helper, "{ctx}");
    assert_eq!(ev["filename_truncated"], false, "{ctx}");
    assert_eq!(ev["argv"], json!(argv), "{ctx}");
    assert_eq!(ev["args_truncated"], truncated, "{ctx}");
    assert_eq!(ev["result"], 0, "{ctx}");
    assert_eq!(ev["success"], true, "{ctx}");
    assert_eq!(ev.get("error"), None, "{ctx}");
    assert_enriched(ev, "exe", helper, transport);
    let me = std::env::current_exe().expect("current_exe");
    assert_enriched(ev, "parent_exe", shrike_tests::canonical(me), transport);
    assert!(ev["ktime_ns"].as_u64().is_some_and(|t| t > 0), "{ctx}");
    assert!(ev["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 30), "{ctx}");
}

/// Non-ASCII, empty, whitespace/control and 255-byte arguments arrive exactly.
fn argv_exact(transport: &str) {
    let helper = helper_bin!();
    let agent = start(transport, &[]);
    let m = marker("argv");
    // 255 bytes + NUL = the default --max-arg-len 256: fits exactly.
    let long = "L".repeat(255);
    let args = ["exit", "0", &m, "héllo wörld ✓ 日本語", "", "two words", "tab\tnew\nline", &long, ""];
    let (pid, _, status) = run_helper(helper, &args);
    assert_eq!(status.code(), Some(0));

    let ev = agent.wait_for("the helper's exec", |e| is(e, "exec", pid));
    let mut argv = vec![helper];
    argv.extend_from_slice(&args);
    assert_helper_exec(&ev, pid, &argv, false, transport);

    let fork = agent.wait_for("the fork of the helper", |e| e["kind"] == "fork" && e["child_pid"] == pid);
    assert_eq!(fork["pid"], test_pid(), "{fork}");
    let exit = agent.wait_for("the helper's exit", |e| is(e, "exit", pid));
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert_eq!(exit["signal"], Value::Null, "{exit}");
    assert_enriched(&exit, "ppid", test_pid(), transport);
    // Exactly one exec from the helper.
    assert_eq!(of(&agent.events(), "exec", pid).len(), 1);
    stop(agent, transport);
}

/// --max-args 4 --max-arg-len 32: exact fits are whole, longer ones cut.
fn arg_bounds(transport: &str) {
    let helper = helper_bin!();
    let agent = start(transport, &["--max-args", "4", "--max-arg-len", "32"]);
    let run = |args: &[&str]| -> u32 {
        // argv[0] "h" keeps the helper's long path out of the length bound.
        let (pid, _, status) = run_to_end(Command::new(helper).arg0("h").args(args));
        assert_eq!(status.code(), Some(0), "helper {args:?}");
        pid
    };
    // 4 arguments, the last exactly 31 bytes (+ NUL = 32): nothing truncated.
    let mut m31 = marker("b");
    m31.push_str(&"x".repeat(31usize.saturating_sub(m31.len())));
    m31.truncate(31);
    let fits = run(&["exit", "0", &m31]);
    // One argument of 40 bytes: 31 captured.
    let long = run(&["exit", "0", &"b".repeat(40)]);
    // 20 two-byte characters (40 bytes): the cut falls inside the 16th one,
    // whose lone first byte is escaped.
    let utf8 = run(&["exit", "0", &"é".repeat(20)]);
    // 5 arguments: exactly 4 captured.
    let many = run(&["exit", "0", "d", "e"]);

    let get = |pid: u32| agent.wait_for(&format!("exec of pid {pid}"), |e| is(e, "exec", pid));
    assert_helper_exec(&get(fits), fits, &["h", "exit", "0", &m31], false, transport);
    assert_helper_exec(&get(long), long, &["h", "exit", "0", &"b".repeat(31)], true, transport);
    let cut = format!("{}\\xc3", "é".repeat(15));
    assert_helper_exec(&get(utf8), utf8, &["h", "exit", "0", &cut], true, transport);
    assert_helper_exec(&get(many), many, &["h", "exit", "0", "d"], true, transport);
    stop(agent, transport);
}

/// Failed execs are reported with success=false and the errno's name.
fn failed_exec(transport: &str) {
    let helper = helper_bin!();
    let agent = start(transport, &[]);
    let m = marker("noexec");
    let t = helper;

    // ENOENT, from the helper itself (its pid is known).
    let missing = format!("/nonexistent-{m}/prog");
    let (pid, lines, status) = run_helper(helper, &["exec", &missing, "a", ""]);
    assert_eq!(status.code(), Some(100));
    assert_eq!(lines[0].get("errno"), "2");
    let execs = agent.wait_for_count(2, "the helper's two execs", |e| is(e, "exec", pid));
    let ev =
        execs.iter().find(|e| e["success"] == false).unwrap_or_else(|| panic!("no failed exec: {execs:?}"));
    let ctx = format!("event {ev}");
    assert_eq!(ev["filename"], missing.as_str(), "{ctx}");
    assert_eq!(ev["argv"], json!([missing, "a", ""]), "{ctx}");
    assert_eq!(ev["args_truncated"], false, "{ctx}");
    assert_eq!(ev["result"], -2, "{ctx}");
    assert_eq!(ev["error"], "ENOENT", "{ctx}");
    assert_eq!(ev["comm"], "shrike-test-hel", "{ctx}");
    assert_enriched(ev, "ppid", test_pid(), transport);
    // The process is still the helper (its exec failed).
    assert_enriched(ev, "exe", t, transport);

    // EACCES: a file without any execute bit.
    let file = shrike_tests::TempDir::new("noexec");
    let path = file.path().join("not-executable");
    std::fs::write(&path, "#!/bin/sh\n").expect("write");
    let path = path.to_string_lossy().into_owned();
    let (pid, lines, status) = run_helper(helper, &["exec", &path]);
    assert_eq!(status.code(), Some(100));
    assert_eq!(lines[0].get("errno"), "13");
    let ev = agent.wait_for("the failed exec (EACCES)", |e| is(e, "exec", pid) && e["success"] == false);
    assert_eq!(ev["filename"], path.as_str(), "{ev}");
    assert_eq!(ev["result"], -13, "{ev}");
    assert_eq!(ev["error"], "EACCES", "{ev}");

    // A spawn of a nonexistent program by this process: the exec fails in
    // the child it created.
    let spawned = format!("/nonexistent-{m}/spawned");
    let err = Command::new(&spawned).arg(&m).spawn().expect_err("spawning a nonexistent program");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let ev = agent.wait_for("the failed spawn", |e| e["kind"] == "exec" && e["filename"] == spawned.as_str());
    assert_eq!(ev["argv"], json!([spawned, m]), "{ev}");
    assert_eq!(ev["success"], false, "{ev}");
    assert_eq!(ev["result"], -2, "{ev}");
    assert_eq!(ev["error"], "ENOENT", "{ev}");
    assert_enriched(&ev, "ppid", test_pid(), transport);
    assert_ne!(ev["pid"], test_pid(), "{ev}");
    stop(agent, transport);
}

/// fork: the child's pid and parent; exit: the codes of child and parent.
fn fork_and_exit_codes(transport: &str) {
    let helper = helper_bin!();
    let agent = start(transport, &[]);
    let (pid, lines, status) = run_helper(helper, &["fork-exit", "3", "exit", "7"]);
    assert_eq!(status.code(), Some(7));
    let child: u32 = lines[0].num("child");
    assert_eq!(lines[0].get("code"), "3");

    let exec = agent.wait_for("the helper's exec", |e| is(e, "exec", pid));
    assert_helper_exec(&exec, pid, &[helper_bin!(), "fork-exit", "3", "exit", "7"], false, transport);

    let spawn =
        agent.wait_for("the fork creating the helper", |e| e["kind"] == "fork" && e["child_pid"] == pid);
    assert_eq!(spawn["pid"], test_pid(), "{spawn}");

    let fork = agent.wait_for("the helper's fork", |e| is(e, "fork", pid));
    assert_eq!(fork["child_pid"], child, "{fork}");
    assert_enriched(&fork, "ppid", test_pid(), transport);
    assert_eq!(fork["comm"], "shrike-test-hel", "{fork}");

    let child_exit = agent.wait_for("the child's exit", |e| is(e, "exit", child));
    assert_eq!(child_exit["exit_code"], 3, "{child_exit}");
    assert_eq!(child_exit["signal"], Value::Null, "{child_exit}");
    assert_enriched(&child_exit, "ppid", pid, transport);

    let exit = agent.wait_for("the helper's exit", |e| is(e, "exit", pid));
    assert_eq!(exit["exit_code"], 7, "{exit}");
    assert_eq!(exit["signal"], Value::Null, "{exit}");
    assert_enriched(&exit, "ppid", test_pid(), transport);

    let events = agent.events();
    assert_eq!(of(&events, "fork", pid).len(), 1, "the helper forked once");
    assert_eq!(of(&events, "exit", pid).len(), 1, "one exit per process");
    assert_eq!(of(&events, "exit", child).len(), 1, "one exit per process");
    stop(agent, transport);
}

/// A process killed by a signal: the exit names the signal, not a code.
fn killed_by_signal(transport: &str) {
    let helper = helper_bin!();
    let agent = start(transport, &[]);
    // SIGKILL, and signals whose default action ends the process ("Term":
    // the kernel turns them into a group exit by SIGKILL, but the process dies
    // of the signal sent, as waitpid reports).
    for sig in [libc::SIGKILL, libc::SIGTERM, libc::SIGUSR1, libc::SIGHUP] {
        let mut h = Helper::spawn(Command::new(helper).args(["sleep", "30"]));
        assert_eq!(h.line().op, "sleeping");
        h.signal(sig);
        let status = h.wait();
        assert_eq!(status.signal(), Some(sig));
        let pid = h.pid();
        let exit = agent.wait_for(&format!("the exit of pid {pid} (signal {sig})"), |e| is(e, "exit", pid));
        assert_eq!(exit["signal"], sig, "{exit}");
        assert_eq!(exit["exit_code"], Value::Null, "{exit}");
        assert_enriched(&exit, "ppid", test_pid(), transport);
        assert_eq!(exit["comm"], "shrike-test-hel", "{exit}");
    }
    // A handled SIGTERM is not the cause of death of the SIGKILL that follows.
    let mut h = Helper::spawn(Command::new(helper).args(["trap", "15", "sleep", "30"]));
    assert_eq!(h.line().op, "trap");
    assert_eq!(h.line().op, "sleeping");
    h.signal(libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(200));
    h.signal(libc::SIGKILL);
    assert_eq!(h.wait().signal(), Some(libc::SIGKILL));
    let pid = h.pid();
    let exit = agent.wait_for("the exit of the helper trapping SIGTERM", |e| is(e, "exit", pid));
    assert_eq!(exit["signal"], libc::SIGKILL, "{exit}");
    assert_eq!(exit["exit_code"], Value::Null, "{exit}");
    stop(agent, transport);
}

/// Records from different CPUs reach the agent in the order they happened:
/// the kernel writes a fork record (in the parent's context) before the child
/// runs, so the agent must know each child when its exit arrives. The agent is
/// frozen while 100 children are forked on one CPU and exit on the other (half
/// each way), so per-CPU buffers fill up with records that are only in order
/// when merged by time.
fn short_lived_children_keep_their_parent(transport: &str) {
    const N: usize = 100;
    let helper = helper_bin!();
    let agent = start(transport, &[]);
    agent.suspend();
    let result = std::panic::catch_unwind(|| run_helper(helper, &["fork-exit-cross", &N.to_string(), "3"]));
    agent.resume();
    let (pid, lines, status) = result.expect("running the helper");
    assert!(status.success());
    let children: Vec<u32> = lines.iter().map(|l| l.num("child")).collect();
    assert_eq!(children.len(), N);
    agent.wait_until(shrike_tests::WAIT, &format!("the exits of {N} children"), |events| {
        children.iter().all(|c| events.iter().any(|e| is(e, "exit", *c)))
    });
    let events = agent.events();
    let exits: Vec<&Value> =
        children.iter().filter_map(|c| events.iter().find(|e| is(e, "exit", *c))).collect();
    for exit in &exits {
        assert_eq!(exit["exit_code"], 3, "{exit}");
    }
    let orphans: Vec<&&Value> = exits.iter().filter(|e| e["ppid"] != pid || e["exe"] != helper).collect();
    assert!(
        orphans.is_empty(),
        "{} of {N} child exits lack their parent (pid {pid}) or its executable, e.g. {}",
        orphans.len(),
        orphans[0]
    );
    stop(agent, transport);
}

/// execveat with a relative name; a filename longer than its bound; more
/// argument bytes than the record holds.
fn exec_variants(transport: &str) {
    let helper = helper_bin!();
    let agent = start(transport, &[]);
    let m = marker("variants");

    // execveat(dirfd, "shrike-test-helper", ...): the name as passed.
    let dir = std::path::Path::new(helper).parent().expect("helper dir").to_string_lossy().into_owned();
    let (pid, _, status) = run_helper(helper, &["execveat", &dir, "shrike-test-helper", "exit", "0", &m]);
    assert_eq!(status.code(), Some(0));
    let ev = agent.wait_for("the execveat", |e| is(e, "exec", pid) && e["execveat"] == true);
    assert_eq!(ev["filename"], "shrike-test-helper", "{ev}");
    assert_eq!(ev["argv"], json!(["shrike-test-helper", "exit", "0", m]), "{ev}");
    assert_eq!((&ev["success"], &ev["result"]), (&json!(true), &json!(0)), "{ev}");
    assert_eq!(ev["args_truncated"], false, "{ev}");

    // A 300-byte path (through a symlink to the helper): 255 bytes captured.
    let tmp = shrike_tests::TempDir::new("longpath");
    let deep = tmp.path().join("d".repeat(120)).join("e".repeat(120));
    std::fs::create_dir_all(&deep).expect("mkdir");
    let mut link = deep.join("helper-link-").to_string_lossy().into_owned();
    link.push_str(&"l".repeat(300usize.saturating_sub(link.len())));
    std::os::unix::fs::symlink(helper, &link).expect("symlink");
    assert_eq!(link.len(), 300);
    let (pid, _, status) = run_to_end(Command::new(&link).arg0("h").args(["exit", "0"]));
    assert_eq!(status.code(), Some(0));
    let ev = agent.wait_for("the exec by a long path", |e| is(e, "exec", pid));
    assert_eq!(ev["filename"], &link[..255], "{ev}");
    assert_eq!(ev["filename_truncated"], true, "{ev}");
    assert_eq!(ev["argv"], json!(["h", "exit", "0"]), "{ev}");
    assert_eq!(ev["args_truncated"], false, "{ev}");
    assert_eq!(ev["success"], true, "{ev}");
    // The executable is never a cut path that names nothing.
    if let Some(exe) = ev.get("exe").and_then(Value::as_str) {
        assert!(exe == link || exe == shrike_tests::canonical(helper), "exe {exe:?} of {ev}");
    }

    // 20 arguments of 200 bytes (4 KB): the record holds arguments that start
    // within its first ARGS_CAP (2048) bytes, each whole; the rest is cut.
    const ARGS_CAP: usize = 2048;
    let big: Vec<String> = (0..20).map(|i| format!("{i:02}{}", "x".repeat(198))).collect();
    let mut argv: Vec<&str> = vec!["h", "exit", "0"];
    argv.extend(big.iter().map(String::as_str));
    let (pid, _, status) = run_to_end(Command::new(helper).arg0("h").args(&argv[1..]));
    assert_eq!(status.code(), Some(0));
    let mut want = Vec::new();
    let mut off = 0;
    for a in &argv {
        if off >= ARGS_CAP {
            break;
        }
        want.push(*a);
        off += a.len() + 1;
    }
    assert!(want.len() < argv.len());
    let ev = agent.wait_for("the exec with 4 KB of arguments", |e| is(e, "exec", pid));
    assert_eq!(ev["argv"], json!(want), "{ev}");
    assert_eq!(ev["args_truncated"], true, "{ev}");
    stop(agent, transport);
}

/// An exec from a thread other than the leader: the kernel kills the old
/// leader and gives the exec'ing thread its pid. One process, one exit; the
/// exec keeps its filename and arguments.
fn exec_from_a_thread(transport: &str) {
    let helper = helper_bin!();
    let agent = start(transport, &[]);
    let m = marker("thread");
    let (pid, _, status) = run_helper(helper, &["thread-exec", helper, "exit", "0", &m]);
    assert_eq!(status.code(), Some(0));
    let ev = agent.wait_for("the exec from the thread", |e| {
        is(e, "exec", pid) && e["argv"].get(1) == Some(&json!("exit"))
    });
    assert_eq!(ev["filename"], helper, "{ev}");
    assert_eq!(ev["argv"], json!([helper, "exit", "0", m]), "{ev}");
    assert_eq!(ev["success"], true, "{ev}");
    assert_eq!(ev.get("entry_missing"), None, "the exec's entry was lost: {ev}");
    assert_eq!(ev["tid"], pid, "{ev}");
    assert_enriched(&ev, "ppid", test_pid(), transport);
    let exit = agent.wait_for("the process's exit", |e| is(e, "exit", pid));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let exits = of(&agent.events(), "exit", pid);
    assert_eq!(exits.len(), 1, "one process, one exit: {exits:#?}");
    assert_eq!((&exit["exit_code"], &exit["signal"]), (&json!(0), &Value::Null), "{exit}");
    stop(agent, transport);
}

/// A shell's PATH search: the ENOENT execs before the one that runs are
/// folded into it (`path_misses`) by default, reported one by one with
/// `--exec-misses report`; a miss with no exec after it is still reported.
fn path_search_misses(transport: &str) {
    let search = |agent: &Agent, m: &str| -> (u32, Vec<Value>) {
        let script = format!("PATH=/nonexistent1:/nonexistent2:/bin:/usr/bin exec true {m}");
        let mut child = Command::new("/bin/sh").args(["-c", &script]).spawn().expect("sh");
        let pid = child.id();
        assert!(child.wait().expect("sh").success());
        agent.wait_for("the exec of true", |e| is(e, "exec", pid) && e["argv"] == json!(["true", m]));
        agent.wait_for("the shell's exit", |e| is(e, "exit", pid));
        (pid, of(&agent.events(), "exec", pid))
    };

    let agent = start(transport, &[]);
    let m = marker("pathsearch");
    let (pid, execs) = search(&agent, &m);
    let failed: Vec<&Value> = execs.iter().filter(|e| e["success"] == false).collect();
    assert!(failed.is_empty(), "misses reported on their own: {failed:?}");
    let ran = execs.iter().find(|e| e["argv"] == json!(["true", m])).expect("exec of true");
    assert_eq!(ran["filename"], "/bin/true", "{ran}");
    assert_eq!(ran["path_misses"], 2, "{ran}");
    assert_eq!(ran["success"], true, "{ran}");
    assert_eq!(execs.len(), 2, "the shell's exec and true's: {execs:?}");
    assert_eq!(execs[0].get("path_misses"), None, "{:?}", execs[0]);
    let _ = pid;

    // A lone miss (nothing follows it) is reported, when the process exits.
    let missing = format!("/nonexistent-{m}/prog");
    let (pid, _, status) = run_helper(helper_bin!(), &["exec", &missing]);
    assert_eq!(status.code(), Some(100));
    let ev = agent.wait_for("the lone failed exec", |e| is(e, "exec", pid) && e["success"] == false);
    assert_eq!(ev["filename"], missing.as_str(), "{ev}");
    assert_eq!(ev["error"], "ENOENT", "{ev}");
    assert_eq!(ev.get("path_misses"), None, "{ev}");
    stop(agent, transport);

    let agent = start(transport, &["--exec-misses", "report"]);
    let m = marker("pathreport");
    let (_, execs) = search(&agent, &m);
    let failed: Vec<&str> =
        execs.iter().filter(|e| e["error"] == "ENOENT").filter_map(|e| e["filename"].as_str()).collect();
    assert_eq!(failed, vec!["/nonexistent1/true", "/nonexistent2/true"], "{execs:?}");
    let ran = execs.iter().find(|e| e["success"] == true && e["argv"] == json!(["true", m])).expect("true");
    assert_eq!(ran.get("path_misses"), None, "{ran}");
    stop(agent, transport);
}
