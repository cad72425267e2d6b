use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use shrike_common::schema::{Family, Kind, Outcome, Payload};

use super::*;
use crate::events::{Caps, Fork, Login as PamLogin};

pub(crate) fn event(body: Body) -> Event {
    Event {
        time: "2026-03-01T12:00:00.123456789Z".parse().unwrap(),
        ktime_ns: 1,
        pid: 4242,
        tid: 4243,
        ppid: Some(1000),
        uid: 1001,
        gid: 1002,
        user: Some("pi".into()),
        comm: "curl".into(),
        exe: Some("/usr/bin/curl".into()),
        body,
    }
}

pub(crate) fn exec_ok() -> Exec {
    Exec {
        filename: "/usr/bin/curl".into(),
        argv: vec!["curl".into(), "-s".into(), "http://example.com".into()],
        args_truncated: false,
        filename_truncated: false,
        result: 0,
        success: true,
        error: None,
        parent_exe: Some("/bin/bash".into()),
        execveat: false,
        entry_missing: false,
        args_unreadable: false,
        path_misses: 0,
        sha256: None,
        sha256_skipped: None,
    }
}

pub(crate) fn sock(remote: Option<IpAddr>) -> Sock {
    Sock {
        protocol: "tcp",
        family: "ipv4",
        local_addr: Some(Ipv4Addr::new(10, 0, 0, 2).into()),
        local_port: Some(40000),
        remote_addr: remote,
        remote_port: Some(443),
        fd: 3,
        result: 0,
        status: "success",
        error: None,
        async_outcome: false,
    }
}

pub(crate) fn pam(rhost: Option<&str>, result: &'static str) -> PamLogin {
    PamLogin {
        service: "sshd".into(),
        user: "root".into(),
        rhost: rhost.map(String::from),
        tty: Some("ssh".into()),
        step: "authenticate",
        result,
        pam_code: if result == "success" { 0 } else { 7 },
        pam_error: if result == "success" { "PAM_SUCCESS" } else { "PAM_AUTH_ERR" },
    }
}

pub(crate) fn setuid() -> Privilege {
    Privilege {
        call: "setresuid",
        args: vec![Some(0), None, Some(0)],
        old_uid: 1001,
        old_gid: 1002,
        new_uid: 0,
        new_gid: 1002,
        result: 0,
        success: true,
        error: None,
        caps: None,
    }
}

fn extra(p: &Payload) -> &ExtraDetails {
    use shrike_common::schema::PayloadItem;
    match p {
        Payload::ProcessCreate(v) => v[0].extra_details(),
        Payload::ProcessTerminate(v) => v[0].extra_details(),
        Payload::ConnectionCreate(v) => v[0].extra_details(),
        Payload::Login(v) => v[0].extra_details(),
        Payload::PrivilegeChange(v) => v[0].extra_details(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn exec_maps_to_process_create() {
    let ev = event(Body::Exec(exec_ok()));
    let Some(Payload::ProcessCreate(items)) = to_payload(&ev) else { panic!() };
    let p = &items[0];
    assert_eq!(p.executable, "/usr/bin/curl");
    assert_eq!(p.process_id, 4242);
    assert_eq!(p.parent_process_id, 1000);
    assert_eq!(p.user_id, "1001");
    assert_eq!(p.user_name.as_deref(), Some("pi"));
    assert_eq!(p.command_line, "curl -s http://example.com");
    let x = &p.extra_details;
    assert_eq!(x["Result"], "Success");
    assert_eq!(x["ThreadId"], "4243");
    assert_eq!(x["Comm"], "curl");
    assert_eq!(x["GroupId"], "1002");
    assert_eq!(x["ParentExecutable"], "/bin/bash");
    for absent in ["ReturnCode", "Error", "Filename", "ArgsTruncated", "EntryMissing"] {
        assert!(!x.contains_key(absent), "{absent}");
    }
}

#[test]
fn failed_exec_is_reported_with_its_error() {
    let mut exec = exec_ok();
    exec.filename = "/tmp/nope".into();
    exec.argv = vec!["nope".into()];
    exec.success = false;
    exec.result = -2;
    exec.error = Some("ENOENT");
    exec.args_truncated = true;
    let mut ev = event(Body::Exec(exec));
    ev.exe = Some("/bin/bash".into()); // the caller's image: the exec did not happen
    let Some(Payload::ProcessCreate(items)) = to_payload(&ev) else { panic!() };
    let p = &items[0];
    assert_eq!(p.executable, "/tmp/nope");
    assert_eq!(p.extra_details["Result"], "Fail");
    assert_eq!(p.extra_details["ReturnCode"], "-2");
    assert_eq!(p.extra_details["Error"], "ENOENT");
    assert_eq!(p.extra_details["ArgsTruncated"], "true");
    assert!(!p.extra_details.contains_key("Filename"));
}

#[test]
fn exec_path_differs_from_filename() {
    let mut exec = exec_ok();
    exec.filename = "./run".into();
    exec.argv = vec![];
    exec.execveat = true;
    let ev = event(Body::Exec(exec));
    let Some(Payload::ProcessCreate(items)) = to_payload(&ev) else { panic!() };
    assert_eq!(items[0].executable, "/usr/bin/curl");
    assert_eq!(items[0].command_line, "./run");
    assert_eq!(items[0].extra_details["Filename"], "./run");
    assert_eq!(items[0].extra_details["Execveat"], "true");
}

#[test]
fn exit_maps_to_process_terminate() {
    let ev = event(Body::Exit(Exit { exit_code: Some(3), signal: None }));
    let Some(Payload::ProcessTerminate(items)) = to_payload(&ev) else { panic!() };
    assert_eq!(items[0].exit_status, 3);
    assert_eq!(items[0].executable, "/usr/bin/curl");
    let x = &items[0].extra_details;
    assert_eq!((x["UserId"].as_str(), x["GroupId"].as_str(), x["UserName"].as_str()), ("1001", "1002", "pi"));
    assert_eq!(x["ParentProcessId"], "1000");
    assert!(!x.contains_key("Signal"));

    let mut ev = event(Body::Exit(Exit { exit_code: None, signal: Some(9) }));
    ev.exe = None;
    let Some(Payload::ProcessTerminate(items)) = to_payload(&ev) else { panic!() };
    assert_eq!(items[0].exit_status, 137);
    assert_eq!(items[0].extra_details["Signal"], "9");
    assert_eq!(items[0].executable, "curl", "comm when the path is unknown");
}

#[test]
fn connect_and_accept_map_to_connection_create() {
    let remote = Ipv4Addr::new(93, 184, 216, 34).into();
    let ev = event(Body::Connect(sock(Some(remote))));
    let Some(Payload::ConnectionCreate(items)) = to_payload(&ev) else { panic!() };
    let c = &items[0];
    assert_eq!(c.direction, Direction::Out);
    assert_eq!(c.remote_address, remote);
    assert_eq!(c.remote_port, "443");
    assert_eq!(c.local_address, Some(Ipv4Addr::new(10, 0, 0, 2).into()));
    assert_eq!(c.local_port.as_deref(), Some("40000"));
    assert_eq!(c.protocol, "TCP");
    assert_eq!(c.user_id.as_deref(), Some("1001"));
    assert_eq!(c.extra_details["Status"], "success");
    assert_eq!(c.extra_details["Fd"], "3");

    let mut s = sock(Some(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().into()));
    s.family = "ipv6";
    s.protocol = "udp";
    s.result = 5;
    let Some(Payload::ConnectionCreate(items)) = to_payload(&event(Body::Accept(s))) else { panic!() };
    assert_eq!(items[0].direction, Direction::In);
    assert_eq!(items[0].protocol, "UDP");
    assert_eq!(items[0].remote_address, IpAddr::from(Ipv4Addr::new(192, 0, 2, 1)), "v4-mapped shown as IPv4");
    assert_eq!(items[0].extra_details["ReturnCode"], "5");
}

#[test]
fn refused_connect_with_unknown_peer() {
    let mut s = sock(None);
    s.family = "ipv6";
    s.remote_port = None;
    s.status = "refused";
    s.result = -111;
    s.error = Some("ECONNREFUSED");
    let Some(Payload::ConnectionCreate(items)) = to_payload(&event(Body::Connect(s))) else { panic!() };
    assert_eq!(items[0].remote_address, IpAddr::from(Ipv6Addr::UNSPECIFIED));
    assert_eq!(items[0].remote_port, "0");
    assert_eq!(items[0].extra_details["Status"], "refused");
    assert_eq!(items[0].extra_details["Error"], "ECONNREFUSED");
    // The required fields' unspecified values are marked as naming no peer.
    assert_eq!(items[0].extra_details["RemoteUnknown"], "true");
}

#[test]
fn connect_outcome_and_exec_misses_in_extra_details() {
    let mut s = sock(Some(Ipv4Addr::new(192, 0, 2, 7).into()));
    s.result = -115;
    s.status = "refused";
    s.error = Some("ECONNREFUSED");
    s.async_outcome = true;
    let Some(Payload::ConnectionCreate(items)) = to_payload(&event(Body::Connect(s))) else { panic!() };
    let x = &items[0].extra_details;
    assert_eq!((x["Status"].as_str(), x["AsyncOutcome"].as_str()), ("refused", "true"));
    assert!(!x.contains_key("RemoteUnknown"));
    let Some(Payload::ConnectionCreate(items)) = to_payload(&event(Body::Connect(sock(None)))) else {
        panic!()
    };
    assert!(!items[0].extra_details.contains_key("AsyncOutcome"));

    let mut exec = exec_ok();
    exec.path_misses = 7;
    let Some(Payload::ProcessCreate(items)) = to_payload(&event(Body::Exec(exec))) else { panic!() };
    assert_eq!(items[0].extra_details["PathMisses"], "7");
    let Some(Payload::ProcessCreate(items)) = to_payload(&event(Body::Exec(exec_ok()))) else { panic!() };
    assert!(!items[0].extra_details.contains_key("PathMisses"));
}

#[test]
fn pam_step_maps_to_login() {
    let mut ev = event(Body::Login(pam(Some("203.0.113.7"), "failure")));
    ev.uid = 0;
    ev.exe = Some("/usr/sbin/sshd".into());
    let Some(Payload::Login(items)) = to_payload(&ev) else { panic!() };
    let l = &items[0];
    assert_eq!(l.operation, "PAM:authenticate");
    assert_eq!(l.result, Outcome::Fail);
    assert_eq!(l.user_name.as_deref(), Some("root"));
    assert_eq!(l.user_id, None);
    assert_eq!(l.executable, "/usr/sbin/sshd");
    assert_eq!(l.remote_address, Some(Ipv4Addr::new(203, 0, 113, 7).into()));
    let x = &l.extra_details;
    assert_eq!(x["Service"], "sshd");
    assert_eq!(x["Tty"], "ssh");
    assert_eq!(x["PamCode"], "7");
    assert_eq!(x["PamError"], "PAM_AUTH_ERR");
    assert_eq!(x["ProcessUserId"], "0");
    assert!(!x.contains_key("RemoteHost"));

    let Some(Payload::Login(items)) = to_payload(&event(Body::Login(pam(Some("::1"), "success")))) else {
        panic!()
    };
    assert_eq!(items[0].result, Outcome::Success);
    assert_eq!(items[0].remote_address, Some(Ipv6Addr::LOCALHOST.into()));
}

#[test]
fn login_from_a_host_name_keeps_it_in_extra_details() {
    for (rhost, expected) in
        [(Some("attacker.example"), Some("attacker.example")), (Some(""), None), (None, None)]
    {
        let Some(Payload::Login(items)) = to_payload(&event(Body::Login(pam(rhost, "success")))) else {
            panic!()
        };
        assert_eq!(items[0].remote_address, None);
        assert_eq!(items[0].extra_details.get("RemoteHost").map(String::as_str), expected);
    }
    let Some(Payload::Login(items)) = to_payload(&event(Body::Login(pam(Some("999.1.1.1"), "success"))))
    else {
        panic!()
    };
    assert_eq!(items[0].remote_address, None);
    assert_eq!(items[0].extra_details["RemoteHost"], "999.1.1.1");
}

#[test]
fn privilege_maps_to_the_own_kind() {
    let ev = event(Body::Privilege(setuid()));
    let e = to_message_event(&ev).unwrap();
    assert_eq!(e.kind(), Kind::PrivilegeChange);
    assert_eq!(e.family(), Family::Own);
    let Payload::PrivilegeChange(items) = &e.payload else { panic!() };
    let p = &items[0];
    assert_eq!(p.operation, "setresuid");
    assert_eq!(p.result, Outcome::Success);
    assert_eq!(p.user_id, "1001");
    assert_eq!(p.group_id.as_deref(), Some("1002"));
    assert_eq!(p.new_user_id.as_deref(), Some("0"));
    assert_eq!(p.extra_details["Args"], "0,-1,0");
    assert_eq!(p.extra_details["NewUserName"], "pi");

    let mut cap = setuid();
    cap.call = "capset";
    cap.args = vec![];
    cap.success = false;
    cap.result = -1;
    cap.error = Some("EPERM");
    cap.caps = Some(Caps { effective: "0x0".into(), permitted: "0x20".into(), inheritable: "0x0".into() });
    let Some(Payload::PrivilegeChange(items)) = to_payload(&event(Body::Privilege(cap))) else { panic!() };
    let x = &items[0].extra_details;
    assert_eq!(items[0].result, Outcome::Fail);
    assert_eq!(x["Error"], "EPERM");
    assert_eq!(x["CapPermitted"], "0x20");
    assert!(!x.contains_key("Args"));
}

#[test]
fn kinds_without_a_message_counterpart() {
    assert!(to_payload(&event(Body::Fork(Fork { child_pid: 2 }))).is_none());
    assert!(to_payload(&event(Body::Listen(sock(None)))).is_none());
    assert!(to_payload(&event(Body::Bind(sock(None)))).is_none());
}

#[test]
fn events_are_stamped_when_the_kernel_saw_them() {
    let e = to_message_event(&event(Body::Exit(Exit { exit_code: Some(0), signal: None }))).unwrap();
    assert_eq!(shrike_common::schema::format_utc(&e.timestamp_utc), "2026-03-01T12:00:00.123Z");
    assert_eq!(e.timestamp_local, e.timestamp_utc);
    assert!(e.validate().is_ok());
}

#[test]
fn every_mapped_event_has_thread_and_comm() {
    let bodies = [
        Body::Exec(exec_ok()),
        Body::Exit(Exit { exit_code: Some(0), signal: None }),
        Body::Connect(sock(None)),
        Body::Accept(sock(None)),
        Body::Login(pam(None, "success")),
        Body::Privilege(setuid()),
    ];
    for body in bodies {
        let p = to_payload(&event(body)).unwrap();
        assert_eq!(extra(&p)["ThreadId"], "4243");
        assert_eq!(extra(&p)["Comm"], "curl");
    }
}

#[test]
fn exec_sha256_in_extra_details() {
    let mut exec = exec_ok();
    exec.sha256 = Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into());
    let Some(Payload::ProcessCreate(items)) = to_payload(&event(Body::Exec(exec))) else { panic!() };
    assert_eq!(
        items[0].extra_details["Sha256"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert!(!items[0].extra_details.contains_key("Sha256Skipped"));
    let mut exec = exec_ok();
    exec.sha256_skipped = Some("too_large");
    let Some(Payload::ProcessCreate(items)) = to_payload(&event(Body::Exec(exec))) else { panic!() };
    assert_eq!(items[0].extra_details["Sha256Skipped"], "too_large");
    assert!(!items[0].extra_details.contains_key("Sha256"));
}
