//! Network events against the real kernel, over loopback: outbound connects
//! (TCP IPv4/IPv6, refused, UDP), bind, listen and accepted connections. Each
//! check runs over both transports.

use std::{
    net::{TcpListener, TcpStream},
    process::Command,
};

use shrike_tests::{Agent, Helper, Value, assert_enriched, free_port, helper_bin, is, run_helper};

shrike_tests::both_transports!(connect_tcp, connect_refused, connect_udp, listen_and_accept);

/// The agent with the network kinds only (the process table behind ppid and
/// exe still runs; all kinds together: all_kinds.rs).
fn start(transport: &str) -> Agent {
    Agent::start(&["--transport", transport, "--kinds", "connect,accept,listen,bind"])
}

fn stop(agent: Agent, transport: &str) {
    let stats = agent.stop();
    assert_eq!(stats.transport(), transport, "stats: {:?}", stats.0);
    // This test's events all arrived (waited for above); records lost under
    // load from other processes are only reported.
    stats.report_losses();
}

/// The fields of a socket event from the helper.
fn assert_sock(ev: &Value, kind: &str, pid: u32, family: &str, protocol: &str, transport: &str) {
    assert_eq!(ev["kind"], kind, "{ev}");
    assert_eq!(ev["pid"], pid, "{ev}");
    assert_enriched(ev, "ppid", std::process::id(), transport);
    assert_eq!(ev["family"], family, "{ev}");
    assert_eq!(ev["protocol"], protocol, "{ev}");
    assert_eq!(ev["comm"], "shrike-test-hel", "{ev}");
    assert_enriched(ev, "exe", helper_bin!(), transport);
}

/// Successful TCP connects to a loopback listener, IPv4 and IPv6: both ends exact.
fn connect_tcp(transport: &str) {
    let agent = start(transport);
    for (addr, family) in [("127.0.0.1", "ipv4"), ("::1", "ipv6")] {
        let listener = TcpListener::bind((addr, 0)).expect("loopback listener");
        let port = listener.local_addr().expect("local_addr").port().to_string();
        let (pid, lines, status) = run_helper(helper_bin!(), &["connect-tcp", addr, &port]);
        assert!(status.success());
        let out = &lines[0];
        assert_eq!((out.get("ret"), out.get("errno")), ("0", "0"), "{out:?}");
        let ev = agent.wait_for(&format!("the helper's connect to {addr}"), |e| is(e, "connect", pid));
        assert_sock(&ev, "connect", pid, family, "tcp", transport);
        assert_eq!(ev["remote_addr"], addr, "{ev}");
        assert_eq!(ev["remote_port"], port.parse::<u16>().unwrap(), "{ev}");
        assert_eq!(ev["local_addr"], out.get("local_addr"), "{ev}");
        // The kernel picks the port after the SYN_SENT transition the agent
        // learns the local end from: when reported, it must be exact.
        if let Some(p) = ev.get("local_port") {
            assert_eq!(*p, out.num::<u16>("local_port"), "{ev}");
        }
        assert_eq!(ev["fd"], out.num::<i32>("fd"), "{ev}");
        assert_eq!(ev["result"], 0, "{ev}");
        assert_eq!(ev["status"], "success", "{ev}");
        assert_eq!(ev.get("error"), None, "{ev}");
        // The listener's accept queue got it: the connection is real.
        let (_conn, peer) = listener.accept().expect("accept");
        assert_eq!(peer.port(), out.num::<u16>("local_port"));
    }
    stop(agent, transport);
}

/// A connect to a closed port: refused, with the errno's name.
fn connect_refused(transport: &str) {
    let agent = start(transport);
    for (addr, family) in [("127.0.0.1", "ipv4"), ("::1", "ipv6")] {
        let port = free_port(addr);
        let (pid, lines, status) = run_helper(helper_bin!(), &["connect-tcp", addr, &port.to_string()]);
        assert!(status.success());
        assert_eq!((lines[0].get("ret"), lines[0].get("errno")), ("-1", "111"), "{:?}", lines[0]);
        let ev = agent.wait_for(&format!("the refused connect to {addr}"), |e| is(e, "connect", pid));
        assert_sock(&ev, "connect", pid, family, "tcp", transport);
        assert_eq!(ev["remote_addr"], addr, "{ev}");
        assert_eq!(ev["remote_port"], port, "{ev}");
        assert_eq!(ev["fd"], lines[0].num::<i32>("fd"), "{ev}");
        assert_eq!(ev["result"], -111, "{ev}");
        assert_eq!(ev["status"], "refused", "{ev}");
        assert_eq!(ev["error"], "ECONNREFUSED", "{ev}");
        // The SYN left from a real local address.
        assert_eq!(ev["local_addr"], addr, "{ev}");
        if let Some(p) = ev.get("local_port") {
            assert!(p.as_u64().is_some_and(|p| p > 0), "{ev}");
        }
    }
    stop(agent, transport);
}

/// A UDP connect (no packet sent): protocol udp, the peer exact.
fn connect_udp(transport: &str) {
    let agent = start(transport);
    for (addr, family) in [("127.0.0.1", "ipv4"), ("::1", "ipv6")] {
        let port = free_port(addr);
        let (pid, lines, status) = run_helper(helper_bin!(), &["connect-udp", addr, &port.to_string()]);
        assert!(status.success());
        assert_eq!((lines[0].get("ret"), lines[0].get("errno")), ("0", "0"), "{:?}", lines[0]);
        let ev = agent.wait_for(&format!("the UDP connect to {addr}"), |e| is(e, "connect", pid));
        assert_sock(&ev, "connect", pid, family, "udp", transport);
        assert_eq!(ev["remote_addr"], addr, "{ev}");
        assert_eq!(ev["remote_port"], port, "{ev}");
        assert_eq!(ev["fd"], lines[0].num::<i32>("fd"), "{ev}");
        assert_eq!(ev["result"], 0, "{ev}");
        assert_eq!(ev["status"], "success", "{ev}");
        assert_eq!(ev.get("error"), None, "{ev}");
    }
    stop(agent, transport);
}

/// A new listening port (bind, listen) and an accepted inbound connection.
fn listen_and_accept(transport: &str) {
    let agent = start(transport);
    for (addr, family) in [("127.0.0.1", "ipv4"), ("::1", "ipv6")] {
        let port = free_port(addr);
        let mut h = Helper::spawn(Command::new(helper_bin!()).args(["listen", addr, &port.to_string()]));
        let pid = h.pid();
        let listening = h.line();
        assert_eq!(listening.num::<u16>("port"), port);
        let client = TcpStream::connect((addr, port)).expect("connecting to the helper");
        let client_port = client.local_addr().expect("local_addr").port();
        let accepted = h.line();
        assert_eq!(accepted.num::<u16>("peer_port"), client_port);
        assert!(h.wait().success());

        let bind = agent.wait_for(&format!("the bind on {addr}"), |e| is(e, "bind", pid));
        assert_sock(&bind, "bind", pid, family, "tcp", transport);
        assert_eq!(bind["local_addr"], addr, "{bind}");
        assert_eq!(bind["local_port"], port, "{bind}");
        assert_eq!(bind["fd"], listening.num::<i32>("fd"), "{bind}");

        let listen = agent.wait_for(&format!("the listen on {addr}"), |e| is(e, "listen", pid));
        assert_sock(&listen, "listen", pid, family, "tcp", transport);
        assert_eq!(listen["local_addr"], addr, "{listen}");
        assert_eq!(listen["local_port"], port, "{listen}");
        assert_eq!(listen["fd"], listening.num::<i32>("fd"), "{listen}");
        assert_eq!(listen["result"], 0, "{listen}");

        let accept = agent.wait_for(&format!("the accept on {addr}"), |e| is(e, "accept", pid));
        assert_sock(&accept, "accept", pid, family, "tcp", transport);
        assert_eq!(accept["local_addr"], addr, "{accept}");
        assert_eq!(accept["local_port"], port, "{accept}");
        assert_eq!(accept["remote_addr"], addr, "{accept}");
        assert_eq!(accept["remote_port"], client_port, "{accept}");
        assert_eq!(accept["fd"], accepted.num::<i32>("fd"), "{accept}");
        assert_eq!(accept["result"], accepted.num::<i64>("fd"), "{accept}");
        assert_eq!(accept["status"], "success", "{accept}");

        // This process's side of the same connection.
        let me = std::process::id();
        let connect = agent.wait_for("this process's connect", |e| {
            is(e, "connect", me) && e["remote_port"] == port && e["remote_addr"] == addr
        });
        assert_eq!(connect["local_addr"], addr, "{connect}");
        if let Some(p) = connect.get("local_port") {
            assert_eq!(*p, client_port, "{connect}");
        }
        assert_eq!(connect["status"], "success", "{connect}");
        assert_eq!(connect["protocol"], "tcp", "{connect}");
    }
    stop(agent, transport);
}
