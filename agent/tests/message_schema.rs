//! Every message the mapping and the SDK produce validates against the JSON
//! Schemas in `agent-common/schemas/` (draft-07, formats checked), and what the
//! schemas reject the SDK's reader rejects too.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::OnceLock,
};

use chrono::{TimeZone, Utc};
use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde_json::{Value, json};
use shrike::{
    detect::{Alert as DetectAlert, Severity},
    events::{Body, Caps, Event as AgentEvent, Exec, Exit, Login as PamLogin, Privilege, Sock},
    message::to_message_event,
};
use shrike_common::schema::{self as sm, *};

const BASE: &str = "https://raw.githubusercontent.com/shrike-agent/shrike/main/agent-common/schemas/";

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent-common/schemas")
}

fn read_schema(rel: &str) -> Value {
    let path = schema_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Serves `$ref`s from the schema directory; nothing is fetched from the network.
struct LocalSchemas;

impl Retrieve for LocalSchemas {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let uri = uri.as_str();
        let rel = uri.strip_prefix(BASE).ok_or_else(|| format!("not one of ours: {uri}"))?;
        let rel = rel.split('#').next().unwrap_or(rel);
        Ok(read_schema(rel))
    }
}

fn validator(root: &str) -> Validator {
    jsonschema::options()
        .with_draft(Draft::Draft7)
        .should_validate_formats(true)
        .with_retriever(LocalSchemas)
        .build(&read_schema(root))
        .unwrap_or_else(|e| panic!("{root}: {e}"))
}

struct Schemas {
    any: Validator,
    azure: Validator,
    own: Validator,
}

fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| Schemas {
        any: validator("message.schema.json"),
        azure: validator("message-azure.schema.json"),
        own: validator("message-own.schema.json"),
    })
}

/// Valid under the root schema and the schema of its family only, and
/// readable by the SDK.
fn assert_valid(msg: &Value) {
    let s = schemas();
    let errors: Vec<String> =
        s.any.iter_errors(msg).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "invalid message: {errors:#?}\n{msg:#}");
    let family = Message::from_json(&serde_json::to_vec(msg).unwrap())
        .unwrap_or_else(|e| panic!("the SDK cannot read it: {e}\n{msg:#}"))
        .family();
    match family {
        Family::Azure => assert!(s.azure.is_valid(msg) && !s.own.is_valid(msg)),
        Family::Own => assert!(s.own.is_valid(msg) && !s.azure.is_valid(msg)),
        Family::Custom => unreachable!("a Message holds Azure or own kinds"),
    }
}

/// Rejected by the schema and by the SDK's reader.
fn assert_invalid(what: &str, msg: &Value) {
    assert!(!schemas().any.is_valid(msg), "{what}: the schema accepts\n{msg:#}");
    assert!(Message::from_json(&serde_json::to_vec(msg).unwrap()).is_err(), "{what}: the SDK reads\n{msg:#}");
}

fn agent_id() -> Uuid {
    Uuid::parse_str("072f3eca-3db0-45ba-8174-fa383bc93caf").unwrap()
}

fn to_value(msg: &Message) -> Value {
    serde_json::from_slice(&msg.to_json()).unwrap()
}

// ---- agent events ----------------------------------------------------------

fn agent_event(body: Body) -> AgentEvent {
    AgentEvent {
        time: "2026-03-01T12:00:00.123456789Z".parse().unwrap(),
        ktime_ns: 1,
        pid: 4242,
        tid: 4243,
        ppid: Some(1000),
        uid: 1001,
        gid: 1002,
        user: Some("pi".into()),
        comm: "curl\nx\u{1b}[31m".into(),
        exe: Some("/usr/bin/curl".into()),
        body,
    }
}

fn exec(success: bool) -> Exec {
    Exec {
        filename: "/usr/bin/curl".into(),
        argv: vec!["curl".into(), "-s".into(), "http://example.com/\"q\"".into()],
        args_truncated: !success,
        filename_truncated: false,
        result: if success { 0 } else { -13 },
        success,
        error: if success { None } else { Some("EACCES") },
        parent_exe: Some("/bin/bash".into()),
        execveat: false,
        entry_missing: false,
        args_unreadable: false,
        path_misses: if success { 2 } else { 0 },
        // ExtraDetails.Sha256 of a hashed exec validates too.
        sha256: success.then(|| "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()),
        sha256_skipped: None,
    }
}

fn sock(family: &'static str, remote: Option<IpAddr>) -> Sock {
    Sock {
        protocol: "tcp",
        family,
        local_addr: remote.map(|r| {
            if r.is_ipv4() { Ipv4Addr::new(10, 0, 0, 2).into() } else { Ipv6Addr::LOCALHOST.into() }
        }),
        local_port: Some(40000),
        remote_addr: remote,
        remote_port: remote.map(|_| 443),
        fd: 3,
        result: if remote.is_some() { 0 } else { -111 },
        status: if remote.is_some() { "success" } else { "refused" },
        error: if remote.is_some() { None } else { Some("ECONNREFUSED") },
        async_outcome: false,
    }
}

fn pam(rhost: Option<&str>, result: &'static str) -> PamLogin {
    PamLogin {
        service: "sshd".into(),
        user: "root".into(),
        rhost: rhost.map(String::from),
        tty: Some("ssh".into()),
        step: "authenticate",
        result,
        pam_code: 7,
        pam_error: "PAM_AUTH_ERR",
    }
}

fn privilege(call: &'static str, caps: bool) -> Privilege {
    Privilege {
        call,
        args: if caps { vec![] } else { vec![Some(0), None] },
        old_uid: 1001,
        old_gid: 1002,
        new_uid: 0,
        new_gid: 1002,
        result: 0,
        success: true,
        error: None,
        caps: caps.then(|| Caps {
            effective: "0x0".into(),
            permitted: "0x20".into(),
            inheritable: "0x0".into(),
        }),
    }
}

/// A file change (file integrity) with its optional fields set.
fn file(operation: &'static str, success: bool) -> shrike::events::file::File {
    shrike::events::file::File {
        operation,
        path: "/etc/passwd+".into(),
        new_path: (operation == "rename").then(|| "/etc/passwd".into()),
        target: None,
        mode: (operation == "chmod").then(|| "600".into()),
        owner_uid: None,
        owner_gid: None,
        open_flags: None,
        directory: false,
        result: if success { 0 } else { -1 },
        success,
        error: (!success).then_some("EPERM"),
        path_truncated: false,
        resolved_from: Some("cwd"),
        raw: Default::default(),
    }
}

fn agent_events() -> Vec<AgentEvent> {
    let v4: IpAddr = Ipv4Addr::new(93, 184, 216, 34).into();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let mapped: IpAddr = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().into();
    let mut no_exe = agent_event(Body::Exit(Exit { exit_code: None, signal: Some(9) }));
    no_exe.exe = None;
    no_exe.user = None;
    no_exe.ppid = None;
    vec![
        agent_event(Body::Exec(exec(true))),
        agent_event(Body::Exec(exec(false))),
        agent_event(Body::Exit(Exit { exit_code: Some(0), signal: None })),
        no_exe,
        agent_event(Body::Connect(sock("ipv4", Some(v4)))),
        agent_event(Body::Connect(sock("ipv6", Some(v6)))),
        agent_event(Body::Connect(sock("ipv6", None))),
        agent_event(Body::Accept(sock("ipv6", Some(mapped)))),
        agent_event(Body::Login(pam(Some("203.0.113.7"), "failure"))),
        agent_event(Body::Login(pam(Some("fe80::1%eth0"), "success"))),
        agent_event(Body::Login(pam(Some("host.example"), "success"))),
        agent_event(Body::Login(pam(None, "success"))),
        agent_event(Body::Privilege(privilege("setresuid", false))),
        agent_event(Body::Privilege(privilege("capset", true))),
        agent_event(Body::File(file("rename", true))),
        agent_event(Body::File(file("chmod", false))),
        alert(agent_event(Body::Exec(exec(true))), Severity::Critical),
        alert(agent_event(Body::Connect(sock("ipv6", Some(mapped)))), Severity::Informational),
        alert(agent_event(Body::Login(pam(Some("host.example"), "failure"))), Severity::Medium),
        alert(agent_event(Body::Exit(Exit { exit_code: Some(0), signal: None })), Severity::Low),
    ]
}

/// An alert of a built-in detector on `trigger`, as the detect stage makes it.
fn alert(trigger: AgentEvent, severity: Severity) -> AgentEvent {
    DetectAlert {
        rule: "exec-from-tmp".into(),
        title: "Executable run from a temporary directory".into(),
        severity,
        source: "builtin",
        tags: vec!["attack.t1059.004".into(), "attack.execution".into()].into(),
        description: "a program ran from /tmp".into(),
        remediation: "Find what wrote it".into(),
        details: [("remote_host", "host.example".to_owned()), ("failures", "6".to_owned())].into(),
        event: Box::new(trigger),
    }
    .into_event()
}

#[test]
fn alert_events_carry_the_rule_and_the_trigger() {
    let v = |ev: &AgentEvent| -> Value { serde_json::to_value(to_message_event(ev).unwrap()).unwrap() };
    let exec = v(&alert(agent_event(Body::Exec(exec(true))), Severity::Critical));
    assert_eq!(exec["Name"], "Alert");
    let p = &exec["Payload"][0];
    assert_eq!(p["RuleId"], "exec-from-tmp");
    assert_eq!(p["Severity"], "Critical");
    assert_eq!(p["Source"], "builtin");
    assert_eq!(p["Tags"], json!(["attack.t1059.004", "attack.execution"]));
    assert_eq!(p["Remediation"], "Find what wrote it");
    assert_eq!(p["Description"], "a program ran from /tmp");
    assert_eq!(p["ProcessId"], 4242);
    assert!(p["CommandLine"].as_str().is_some_and(|c| !c.is_empty()), "{p:#}");
    assert!(p["Executable"].is_string() && p["UserId"].is_string(), "{p:#}");
    assert_eq!(p["ExtraDetails"]["TriggerKind"], "exec");
    assert_eq!(p["ExtraDetails"]["Failures"], "6");
    assert_eq!(p["ExtraDetails"]["RemoteHost"], "host.example");
    assert!(p.get("RemoteAddress").is_none());

    let mapped: IpAddr = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().into();
    let conn = v(&alert(agent_event(Body::Connect(sock("ipv6", Some(mapped)))), Severity::High));
    let p = &conn["Payload"][0];
    assert_eq!(p["RemoteAddress"], "192.0.2.1");
    assert!(p["RemotePort"].is_string(), "{p:#}");
    assert_eq!(p["ExtraDetails"]["TriggerKind"], "connect");
    assert!(p.get("CommandLine").is_none());
}

#[test]
fn every_mapped_event_validates() {
    let events: Vec<sm::Event> =
        agent_events().iter().map(|e| to_message_event(e).expect("mapped")).collect();
    // One event per message, then all of them segregated by family.
    for e in &events {
        assert_valid(&to_value(&Message::new(agent_id(), "0.1.0", vec![e.clone()]).unwrap()));
    }
    let messages = Message::segregate(agent_id(), "0.1.0", events.clone()).unwrap();
    assert_eq!(messages.len(), 2);
    for m in &messages {
        assert_valid(&to_value(m));
    }
    // The builder's bytes, per family.
    for family in [Family::Azure, Family::Own] {
        let mut b = MessageBuilder::new(agent_id(), "0.1.0");
        for e in events.iter().filter(|e| e.family() == family) {
            b.push(e).unwrap();
        }
        assert_valid(&serde_json::from_slice(&b.finish().unwrap()).unwrap());
    }
}

// ---- the SDK, every kind ---------------------------------------------------

fn x(pairs: &[(&str, &str)]) -> ExtraDetails {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn every_kind() -> Vec<Payload> {
    let v4: IpAddr = Ipv4Addr::new(127, 0, 0, 1).into();
    vec![
        ProcessCreate {
            executable: "/bin/sh".into(),
            process_id: 2,
            parent_process_id: 1,
            user_id: "0".into(),
            user_name: None,
            command_line: "sh -c 'echo hi'".into(),
            extra_details: ExtraDetails::new(),
        }
        .into(),
        ProcessTerminate {
            executable: "/bin/sh".into(),
            process_id: 2,
            exit_status: 0,
            extra_details: x(&[]),
        }
        .into(),
        ConnectionCreate {
            remote_address: v4,
            remote_port: "500".into(),
            local_address: None,
            local_port: None,
            direction: Direction::In,
            protocol: protocol::UDP.into(),
            process_id: 9,
            user_id: None,
            executable: "/usr/sbin/ntpd".into(),
            command_line: Some("ntpd -g".into()),
            extra_details: x(&[("SomeKey", "39")]),
        }
        .into(),
        Login {
            process_id: 9,
            user_id: Some("0".into()),
            user_name: None,
            operation: "PAM:open_session".into(),
            executable: "/usr/sbin/sshd".into(),
            remote_address: Some("2001:db8::2".parse().unwrap()),
            remote_port: Some("51234".into()),
            local_port: Some("22".into()),
            result: Outcome::Success,
            extra_details: x(&[]),
        }
        .into(),
        vec![
            ListeningPorts {
                local_port: "22".into(),
                protocol: protocol::TCP.into(),
                local_address: Some(Ipv6Addr::UNSPECIFIED.into()),
                remote_address: None,
                remote_port: None,
                extra_details: x(&[]),
            },
            ListeningPorts {
                local_port: "*".into(),
                protocol: protocol::UDP.into(),
                local_address: Some(v4),
                remote_address: Some(v4),
                remote_port: Some("501".into()),
                extra_details: x(&[("Pid", "7")]),
            },
        ]
        .into(),
        LocalUsers {
            user_name: "daemon".into(),
            user_id: "1".into(),
            group_names: LocalUsers::join(["daemon", "root"]),
            group_ids: LocalUsers::join(["1", "0"]),
            extra_details: x(&[]),
        }
        .into(),
        SystemInformation {
            os_name: Some("Debian GNU/Linux".into()),
            os_version: Some("12".into()),
            os_architecture: Some("x86_64".into()),
            host_name: Some("gw-1".into()),
            total_physical_memory_kb: Some(2_000_000),
            free_physical_memory_kb: Some(1_000_000),
            ..Default::default()
        }
        .into(),
        FirewallConfiguration {
            priority: Some(1),
            direction: Some(Direction::In),
            chain_name: Some("INPUT".into()),
            application: Some("*".into()),
            enabled: true,
            action: FirewallAction::Allow,
            source_address: Some("Local subnet".into()),
            source_port: Some("*".into()),
            destination_address: Some("127.0.0.1".into()),
            destination_port: Some("22".into()),
            protocol: Some(protocol::TCP.into()),
            extra_details: x(&[]),
        }
        .into(),
        OSBaseline {
            description: "SSH root login disabled".into(),
            cce_id: "CCE-4387-7".into(),
            result: BaselineResult::Fail,
            error: "PermitRootLogin yes".into(),
            severity: BaselineSeverity::Critical,
            extra_details: x(&[]),
        }
        .into(),
        ConnectedHardware {
            hardware_category: "USB".into(),
            hardware_sub_category: "Adapter".into(),
            hardware_name: "FTDI FT232R".into(),
            extra_details: x(&[("VendorId", "0403")]),
        }
        .into(),
        Diagnostic {
            correlation_id: Some(Uuid::new_v4()),
            severity: DiagnosticSeverity::Warning,
            message: "ring buffer full".into(),
            process_id: 1,
            thread_id: 2,
            extra_details: x(&[]),
        }
        .into(),
        ConfigurationError {
            configuration_name: "highPriorityMessageFrequency".into(),
            error_type: ConfigurationErrorType::TypeMismatch,
            used_configuration: "PT7M".into(),
            message: "not an ISO 8601 duration".into(),
            extra_details: x(&[]),
        }
        .into(),
        vec![
            DroppedEventsStatistics {
                queue: Queue::High,
                collected_events: 10,
                dropped_events: 0,
                extra_details: x(&[]),
            },
            DroppedEventsStatistics {
                queue: Queue::Low,
                collected_events: 99,
                dropped_events: 3,
                extra_details: x(&[]),
            },
        ]
        .into(),
        MessageStatistics { messages_sent: 4, messages_under_4kb: 1, total_failed: 0, extra_details: x(&[]) }
            .into(),
        PrivilegeChange {
            process_id: 3,
            executable: "/usr/bin/su".into(),
            command_line: Some("su -".into()),
            operation: "setgid".into(),
            result: Outcome::Fail,
            user_id: "1000".into(),
            user_name: Some("pi".into()),
            group_id: Some("1000".into()),
            new_user_id: None,
            new_group_id: None,
            extra_details: x(&[("Error", "EPERM")]),
        }
        .into(),
        FileChange {
            process_id: 5,
            executable: "/usr/bin/cp".into(),
            command_line: Some("cp x /etc/cron.d/job".into()),
            operation: "create".into(),
            path: "/etc/cron.d/job".into(),
            new_path: None,
            result: Outcome::Success,
            user_id: "0".into(),
            user_name: Some("root".into()),
            extra_details: x(&[("Mode", "644")]),
        }
        .into(),
        Alert {
            rule_id: "exec-from-tmp".into(),
            severity: AlertSeverity::Critical,
            source: Some("builtin".into()),
            title: "Executable started from /tmp".into(),
            description: None,
            remediation: Some("Find what wrote it".into()),
            tags: vec!["attack.t1059.004".into(), "attack.execution".into()],
            process_id: Some(77),
            executable: Some("/tmp/x".into()),
            command_line: None,
            user_id: Some("33".into()),
            user_name: None,
            remote_address: Some(Ipv6Addr::LOCALHOST.into()),
            remote_port: Some("4444".into()),
            extra_details: x(&[]),
        }
        .into(),
        Heartbeat {
            uptime_seconds: 3600,
            interval_seconds: 300,
            configuration_sha256: Some("ab".repeat(32)),
            extra_details: x(&[("AgentVersion", "0.1.0")]),
        }
        .into(),
    ]
}

#[test]
fn every_kind_validates() {
    let payloads = every_kind();
    let kinds: Vec<Kind> = payloads.iter().map(Payload::kind).collect();
    assert_eq!(kinds, Kind::ALL, "one example per kind, in order");
    for payload in payloads {
        let msg = Message::new(agent_id(), "1.0.0", vec![sm::Event::new(payload)]).unwrap();
        assert_valid(&to_value(&msg));
    }
}

#[test]
fn empty_snapshots_validate() {
    for kind in Kind::ALL.iter().filter(|k| k.category() == Category::Periodic) {
        let msg = Message::new(agent_id(), "1.0.0", vec![sm::Event::empty(*kind)]).unwrap();
        let v = to_value(&msg);
        assert_eq!(v["Events"][0]["IsEmpty"], json!(true));
        assert_valid(&v);
    }
}

#[test]
fn aggregated_events_validate() {
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let events: Vec<sm::Event> = agent_events().iter().map(|e| to_message_event(e).unwrap()).collect();
    let mut out = Vec::new();
    // Every ConnectionCreate merged into one (different pids, addresses, families).
    let conns: Vec<ConnectionCreate> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::ConnectionCreate(v) if v[0].direction == Direction::Out => Some(v[0].clone()),
            _ => None,
        })
        .collect();
    let mut agg = Aggregate::new(conns[0].clone(), t);
    for (i, c) in conns[1..].iter().enumerate() {
        agg.add(c, t + chrono::Duration::seconds(i as i64 + 1)).unwrap();
    }
    out.push(agg.into_event());
    for e in &events {
        match &e.payload {
            Payload::ProcessCreate(v) => {
                let mut agg = Aggregate::new(v[0].clone(), t);
                let mut other = v[0].clone();
                other.process_id += 1;
                other.extra_details.insert("ThreadId".into(), "1".into());
                agg.add(&other, t).unwrap();
                out.push(agg.into_event());
            }
            Payload::PrivilegeChange(v) => {
                let mut agg = Aggregate::new(v[0].clone(), t);
                agg.add(&v[0], t).unwrap();
                out.push(agg.into_event());
            }
            Payload::Alert(v) => {
                // Repeats of a (rule, process) differ in their trigger.
                let mut agg = Aggregate::new(v[0].clone(), t);
                let mut other = v[0].clone();
                other.command_line = Some("other".into());
                other.tags.pop();
                agg.add(&other, t).unwrap();
                out.push(agg.into_event());
            }
            _ => {}
        }
    }
    for msg in Message::segregate(agent_id(), "1", out).unwrap() {
        let v = to_value(&msg);
        for e in v["Events"].as_array().unwrap() {
            let extra = &e["Payload"][0]["ExtraDetails"];
            for key in [HIT_COUNT, START_TIME_LOCAL, START_TIME_UTC, END_TIME_LOCAL, END_TIME_UTC] {
                assert!(extra[key].is_string(), "{key} in {e:#}");
            }
        }
        assert_valid(&v);
    }
}

// ---- what must not validate ------------------------------------------------

fn sample() -> Value {
    let conn = agent_event(Body::Connect(sock("ipv4", Some(Ipv4Addr::new(1, 2, 3, 4).into()))));
    let login = agent_event(Body::Login(pam(Some("203.0.113.7"), "success")));
    let events = vec![to_message_event(&conn).unwrap(), to_message_event(&login).unwrap()];
    let v = to_value(&Message::new(agent_id(), "0.1.0", events).unwrap());
    assert_valid(&v);
    v
}

fn with(f: impl FnOnce(&mut Value)) -> Value {
    let mut v = sample();
    f(&mut v);
    v
}

#[test]
fn invalid_messages_are_rejected() {
    let own_event = to_value(
        &Message::new(
            agent_id(),
            "1",
            vec![to_message_event(&agent_event(Body::Privilege(privilege("setuid", false)))).unwrap()],
        )
        .unwrap(),
    )["Events"][0]
        .clone();
    let cases: Vec<(&str, Value)> = vec![
        (
            "space instead of T (local)",
            with(|v| v["Events"][0]["TimestampLocal"] = json!("2026-03-01 12:00:00.123+00:00")),
        ),
        (
            "space instead of T (UTC)",
            with(|v| v["Events"][1]["TimestampUTC"] = json!("2026-03-01 12:00:00.123Z")),
        ),
        ("not a date", with(|v| v["Events"][0]["TimestampUTC"] = json!("yesterday"))),
        ("bad IPv4", with(|v| v["Events"][0]["Payload"][0]["RemoteAddress"] = json!("999.1.2.3"))),
        ("bad IP", with(|v| v["Events"][0]["Payload"][0]["LocalAddress"] = json!("localhost"))),
        ("bad IPv6", with(|v| v["Events"][1]["Payload"][0]["RemoteAddress"] = json!("2001:db8:::1"))),
        (
            "numeric ExtraDetails value",
            with(|v| v["Events"][0]["Payload"][0]["ExtraDetails"]["Fd"] = json!(3)),
        ),
        ("mixed own and Azure kinds", with(|v| v["Events"].as_array_mut().unwrap().push(own_event.clone()))),
        ("numeric port", with(|v| v["Events"][0]["Payload"][0]["RemotePort"] = json!(443))),
        ("string ProcessId", with(|v| v["Events"][0]["Payload"][0]["ProcessId"] = json!("4242"))),
        ("unknown payload field", with(|v| v["Events"][0]["Payload"][0]["Pid"] = json!(1))),
        ("unknown event field", with(|v| v["Events"][0]["Severity"] = json!("High"))),
        ("unknown envelope field", with(|v| v["Hostname"] = json!("gw"))),
        (
            "missing required field",
            with(|v| drop(v["Events"][0]["Payload"][0].as_object_mut().unwrap().remove("Direction"))),
        ),
        ("bad Direction", with(|v| v["Events"][0]["Payload"][0]["Direction"] = json!("Sideways"))),
        (
            "login without user",
            with(|v| drop(v["Events"][1]["Payload"][0].as_object_mut().unwrap().remove("UserName"))),
        ),
        ("bad login Result", with(|v| v["Events"][1]["Payload"][0]["Result"] = json!("success"))),
        (
            "empty Triggered event",
            with(|v| {
                v["Events"][0]["Payload"] = json!([]);
                v["Events"][0]["IsEmpty"] = json!(true);
            }),
        ),
        ("IsEmpty with items", with(|v| v["Events"][0]["IsEmpty"] = json!(true))),
        ("wrong Category for the kind", with(|v| v["Events"][0]["Category"] = json!("Periodic"))),
        ("wrong EventType for the kind", with(|v| v["Events"][0]["EventType"] = json!("Operational"))),
        ("unknown kind", with(|v| v["Events"][0]["Name"] = json!("Keylogger"))),
        ("payload of another kind", with(|v| v["Events"][0]["Name"] = json!("ProcessCreate"))),
        ("PayloadSchemaVersion", with(|v| v["Events"][0]["PayloadSchemaVersion"] = json!("2.0"))),
        ("MessageSchemaVersion", with(|v| v["MessageSchemaVersion"] = json!("1.1"))),
        ("short GUID", with(|v| v["Events"][0]["Id"] = json!("9c647395-b913-4997-a732"))),
        ("AgentId not a GUID", with(|v| v["AgentId"] = json!("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"))),
        ("no events", with(|v| v["Events"] = json!([]))),
        ("not an object", json!([])),
    ];
    for (what, msg) in &cases {
        assert_invalid(what, msg);
    }
}

#[test]
fn own_kinds_alone_are_not_azure_messages() {
    let e = to_message_event(&agent_event(Body::Privilege(privilege("setuid", false)))).unwrap();
    let v = to_value(&Message::new(agent_id(), "1", vec![e]).unwrap());
    assert_valid(&v);
    assert!(!schemas().azure.is_valid(&v), "IoT Hub's schema has no PrivilegeChange");
}

/// Every kind has its schema file, listed under its family, and no file is
/// left without a kind.
#[test]
fn schema_files_cover_the_kinds() {
    let azure = read_schema("event-azure.schema.json").to_string();
    let own = read_schema("event-own.schema.json").to_string();
    for kind in Kind::ALL {
        let file = format!("kinds/{}.schema.json", kind.name());
        let schema = read_schema(&file);
        assert_eq!(schema["$id"], json!(format!("{BASE}{file}")));
        assert_eq!(schema["properties"]["Name"]["const"], json!(kind.name()));
        assert_eq!(schema["properties"]["Category"]["const"], json!(format!("{:?}", kind.category())));
        assert_eq!(schema["properties"]["EventType"]["const"], json!(format!("{:?}", kind.event_type())));
        let reference = format!("\"{file}\"");
        let (listed, not_listed) = match kind.family() {
            Family::Azure => (&azure, &own),
            Family::Own => (&own, &azure),
            Family::Custom => unreachable!("no kind is custom"),
        };
        assert!(listed.contains(&reference) && !not_listed.contains(&reference), "{file}");
    }
    let files = std::fs::read_dir(schema_dir().join("kinds")).unwrap().count();
    assert_eq!(files, Kind::ALL.len());
}

// ---- SDK lines: other programs' events --------------------------------------

/// What the agent accepts on its SDK socket goes into messages that validate:
/// Azure kinds under the Azure schema (with the sender in ExtraDetails),
/// custom kinds under message-custom.schema.json (and the root), never the
/// other family's; what the line parser rejects, the schema rejects too.
#[test]
fn sdk_events_validate() {
    use shrike_common::sdk::{SdkEvent, parse_line};
    let custom_v = validator("message-custom.schema.json");
    let now = Utc.with_ymd_and_hms(2026, 12, 6, 7, 0, 0).unwrap();
    // Azure kinds first: a custom event then cannot join their message.
    let lines = [
        json!({"Name": "ProcessCreate", "Payload": [{"Executable": "/bin/x", "ProcessId": 1, "ParentProcessId": 0,
               "UserId": "0", "CommandLine": "x"}]}),
        json!({"Name": "Login", "Payload": [{"ProcessId": 1, "UserName": "pi", "Operation": "app:login",
               "Executable": "/usr/bin/app", "Result": "Fail", "RemoteAddress": "10.0.0.9"}]}),
        json!({"Name": "DoorOpened", "Payload": [{"Door": "cabinet", "Forced": true, "Tries": 3, "Temp": -1.5}]}),
        json!({"Name": "Firmware.Update-v2", "Category": "Periodic", "EventType": "Operational", "Payload": []}),
    ];
    let mut azure_b = MessageBuilder::new(agent_id(), "0.1.0");
    let mut custom_b = MessageBuilder::new(agent_id(), "0.1.0");
    for line in &lines {
        let mut ev = parse_line(line.to_string().as_bytes(), now).unwrap_or_else(|e| panic!("{line}: {e}"));
        ev.for_each_extra_details(|d| {
            d.insert("SenderPid".into(), "4242".into());
            d.insert("SenderExecutable".into(), "/usr/bin/app".into());
        });
        match &ev {
            SdkEvent::Azure(e) => azure_b.push(e).unwrap(),
            SdkEvent::Custom(c) => {
                assert!(matches!(azure_b.push_custom(c), Err(PushError::FamilyMismatch { .. })));
                custom_b.push_custom(c).unwrap();
            }
        }
    }
    let azure: Value = serde_json::from_slice(&azure_b.finish().unwrap()).unwrap();
    assert_valid(&azure);
    assert_eq!(azure["Events"][0]["Payload"][0]["ExtraDetails"]["SenderPid"], "4242");
    let custom: Value = serde_json::from_slice(&custom_b.finish().unwrap()).unwrap();
    let s = schemas();
    let errors: Vec<String> =
        s.any.iter_errors(&custom).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{custom:#}");
    assert!(custom_v.is_valid(&custom) && !s.azure.is_valid(&custom) && !s.own.is_valid(&custom));
    assert_eq!(custom["Events"][0]["Payload"][0]["Tries"], 3);
    assert_eq!(custom["Events"][1]["IsEmpty"], true);

    // What the parser refuses, the custom schema refuses too.
    let good = custom["Events"][0].clone();
    for (what, change) in [
        ("lower-case name", json!({"Name": "doorOpened"})),
        ("an Azure kind's name", json!({"Name": "ProcessCreate"})),
        ("an own kind's name", json!({"Name": "Alert"})),
        ("a nested value", json!({"Payload": [{"Door": {"x": 1}}]})),
        ("a null value", json!({"Payload": [{"Door": null}]})),
        ("a number in ExtraDetails", json!({"Payload": [{"ExtraDetails": {"k": 1}}]})),
        ("an empty Triggered event", json!({"Payload": [], "IsEmpty": true})),
    ] {
        let mut ev = good.clone();
        for (k, v) in change.as_object().unwrap() {
            ev[k] = v.clone();
        }
        let mut msg = custom.clone();
        msg["Events"] = json!([ev.clone()]);
        assert!(!custom_v.is_valid(&msg), "{what}: the schema accepts {ev}");
        let mut line = ev.as_object().unwrap().clone();
        line.remove("IsEmpty");
        let parsed = parse_line(Value::Object(line).to_string().as_bytes(), now);
        assert!(!matches!(parsed, Ok(SdkEvent::Custom(_))), "{what}: the parser takes it as a custom kind");
    }
}

/// The custom schema refuses every name Shrike knows (the parser does too:
/// `check_custom_name`).
#[test]
fn the_custom_schema_lists_every_known_name() {
    let custom = read_schema("event-custom.schema.json");
    let taken = &custom["allOf"][1]["properties"]["Name"]["not"]["enum"];
    for kind in Kind::ALL {
        assert!(
            taken.as_array().unwrap().contains(&json!(kind.name())),
            "event-custom.schema.json does not refuse the Name {}",
            kind.name()
        );
        assert!(check_custom_name(kind.name()).is_err());
    }
}
