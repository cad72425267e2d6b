//! Privilege changes against the real kernel: set*id transitions of a helper
//! running as root, successful and refused, with the ids before and after.

use shrike_tests::{Agent, Value, helper_bin, json, of, run_helper};

/// (call, args, old uid/gid, new uid/gid, result, error) of a privilege event.
type Expect<'a> = (&'a str, Value, [u32; 2], [u32; 2], i32, Option<&'a str>);

/// Runs the helper with `ops`, then checks its privilege events are exactly
/// `want`, in order, and agree with what the helper saw.
fn check(agent: &Agent, ops: &[&str], want: &[Expect<'_>]) {
    let (pid, lines, status) = run_helper(helper_bin!(), ops);
    assert!(status.success(), "helper {ops:?}: {status}");
    assert_eq!(lines.len(), want.len(), "helper output {lines:?}");
    let mut got = Vec::new();
    agent.wait_until(
        shrike_tests::WAIT,
        &format!("{} privilege events of pid {pid}", want.len()),
        |events| {
            got = of(events, "privilege", pid);
            got.len() >= want.len()
        },
    );
    // Nothing more arrives for this pid.
    std::thread::sleep(std::time::Duration::from_millis(300));
    got = of(&agent.events(), "privilege", pid);
    assert_eq!(got.len(), want.len(), "privilege events of {pid}: {got:#?}");
    for ((ev, w), line) in got.iter().zip(want).zip(&lines) {
        let (call, args, old, new, result, error) = w;
        let ctx = format!("expected {w:?}, got {ev}");
        assert_eq!(ev["call"], *call, "{ctx}");
        assert_eq!(ev["args"], *args, "{ctx}");
        assert_eq!([&ev["old_uid"], &ev["old_gid"]], [old[0], old[1]], "{ctx}");
        assert_eq!([&ev["new_uid"], &ev["new_gid"]], [new[0], new[1]], "{ctx}");
        // The header's ids are the ones after the call.
        assert_eq!([&ev["uid"], &ev["gid"]], [new[0], new[1]], "{ctx}");
        assert_eq!(ev["result"], *result, "{ctx}");
        assert_eq!(ev["success"], *result == 0, "{ctx}");
        assert_eq!(ev.get("error").and_then(Value::as_str), *error, "{ctx}");
        assert_eq!(ev["comm"], "shrike-test-hel", "{ctx}");
        assert_eq!(ev["exe"], helper_bin!(), "{ctx}");
        assert_eq!(ev["ppid"], std::process::id(), "{ctx}");
        // The helper saw the same result.
        assert_eq!(line.op, *call, "{ctx}");
        assert_eq!(line.num::<i32>("ret"), *result, "{ctx}");
    }
}

#[test]
fn setuid_setgid_transitions() {
    if !shrike_tests::require_root() {
        return;
    }
    let agent = Agent::start(&["--kinds", "privilege"]);
    // Drop the group, then the user: root -> nobody; going back is refused.
    check(
        &agent,
        &["setgid", "65534", "setuid", "65534", "setuid", "0"],
        &[
            ("setgid", json!([65534]), [0, 0], [0, 65534], 0, None),
            ("setuid", json!([65534]), [0, 65534], [65534, 65534], 0, None),
            ("setuid", json!([0]), [65534, 65534], [65534, 65534], -1, Some("EPERM")),
        ],
    );
    // setres*id with "unchanged" (-1) arguments: the real uid stays 0 while
    // only the effective one moves, and comes back (the saved uid is still 0).
    check(
        &agent,
        &[
            "setresgid",
            "65534",
            "65534",
            "65534", //
            "setresuid",
            "-1",
            "65534",
            "-1", //
            "setresuid",
            "-1",
            "0",
            "-1", //
            "setresuid",
            "65534",
            "65534",
            "65534",
        ],
        &[
            ("setresgid", json!([65534, 65534, 65534]), [0, 0], [0, 65534], 0, None),
            ("setresuid", json!([null, 65534, null]), [0, 65534], [0, 65534], 0, None),
            ("setresuid", json!([null, 0, null]), [0, 65534], [0, 65534], 0, None),
            ("setresuid", json!([65534, 65534, 65534]), [0, 65534], [65534, 65534], 0, None),
        ],
    );
    let stats = agent.stop();
    assert_eq!(stats.lost("privilege"), 0, "{:?}", stats.0);
    assert!(stats.sent("privilege") >= 7, "{:?}", stats.0);
}
