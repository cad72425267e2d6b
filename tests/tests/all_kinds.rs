//! The default configuration (every kind, transport auto): one helper process
//! changes its group, connects over TCP and UDP, forks, drops its user and
//! exits. Its events are exactly these, in this order, each with the ids the
//! process had at that moment.

use std::net::{TcpListener, UdpSocket};

use shrike_tests::{Agent, Value, helper_bin, json, of, run_helper};

#[test]
fn one_process_every_kind_in_order() {
    if !shrike_tests::require_root() {
        return;
    }
    let helper = helper_bin!();
    let agent = Agent::start(&[]);
    let tcp = TcpListener::bind("127.0.0.1:0").expect("listener");
    let tcp_port = tcp.local_addr().expect("addr").port().to_string();
    let udp = UdpSocket::bind("[::1]:0").expect("udp socket");
    let udp_port = udp.local_addr().expect("addr").port().to_string();
    let ops = [
        "setgid",
        "65534",
        "connect-tcp",
        "127.0.0.1",
        &tcp_port,
        "connect-udp",
        "::1",
        &udp_port,
        "fork-exit",
        "5",
        "setuid",
        "65534",
        "exit",
        "9",
    ];
    let (pid, lines, status) = run_helper(helper, &ops);
    assert_eq!(status.code(), Some(9));
    let child: u32 = lines[3].num("child");

    let exit = agent.wait_for("the helper's exit", |e| shrike_tests::is(e, "exit", pid));
    agent.wait_for("the child's exit", |e| shrike_tests::is(e, "exit", child));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let events = agent.events();
    let mut mine: Vec<Value> = events.iter().filter(|e| e["pid"] == pid).cloned().collect();
    mine.sort_by_key(|e| e["ktime_ns"].as_u64().unwrap_or(0));
    let kinds: Vec<&str> = mine.iter().map(|e| e["kind"].as_str().unwrap_or("?")).collect();
    assert_eq!(
        kinds,
        ["exec", "privilege", "connect", "connect", "fork", "privilege", "exit"],
        "events of the helper: {mine:#?}"
    );
    let helper_exe = helper; // the path executed
    for ev in &mine {
        assert_eq!(ev["ppid"], std::process::id(), "{ev}");
        assert_eq!(ev["exe"], helper_exe, "{ev}");
        assert_eq!(ev["comm"], "shrike-test-hel", "{ev}");
    }
    // (uid, gid) in each header: what the process had then.
    let ids: Vec<(u64, u64)> =
        mine.iter().map(|e| (e["uid"].as_u64().unwrap_or(9), e["gid"].as_u64().unwrap_or(9))).collect();
    assert_eq!(ids, [(0, 0), (0, 65534), (0, 65534), (0, 65534), (0, 65534), (65534, 65534), (65534, 65534)]);
    assert_eq!(mine[0]["argv"], json!([helper].into_iter().chain(ops).collect::<Vec<_>>()));
    assert_eq!((&mine[1]["call"], &mine[1]["args"]), (&json!("setgid"), &json!([65534])));
    assert_eq!(mine[2]["protocol"], "tcp");
    assert_eq!(mine[2]["remote_addr"], "127.0.0.1");
    assert_eq!(mine[2]["remote_port"], tcp_port.parse::<u16>().unwrap());
    assert_eq!(mine[2]["status"], "success");
    assert_eq!(mine[3]["protocol"], "udp");
    assert_eq!(mine[3]["family"], "ipv6");
    assert_eq!(mine[3]["remote_addr"], "::1");
    assert_eq!(mine[3]["remote_port"], udp_port.parse::<u16>().unwrap());
    assert_eq!(mine[4]["child_pid"], child);
    assert_eq!(
        (&mine[5]["call"], &mine[5]["old_uid"], &mine[5]["new_uid"]),
        (&json!("setuid"), &json!(0), &json!(65534))
    );
    assert_eq!((&exit["exit_code"], &exit["signal"]), (&json!(9), &Value::Null));
    assert_eq!(exit["user"], "nobody");

    let child_events = of(&events, "exit", child);
    assert_eq!(child_events.len(), 1);
    assert_eq!(child_events[0]["exit_code"], 5);
    assert_eq!(child_events[0]["ppid"], pid);
    // The child inherited the group set by setgid before the fork.
    assert_eq!((&child_events[0]["uid"], &child_events[0]["gid"]), (&json!(0), &json!(65534)));

    let stats = agent.stop();
    assert_eq!(stats.transport(), "ringbuf", "auto picks the ring buffer on this kernel");
    for kind in ["exec", "exit", "fork", "connect", "privilege"] {
        assert!(stats.sent(kind) > 0, "no {kind} records sent: {:?}", stats.0);
    }
    stats.report_losses();
}
