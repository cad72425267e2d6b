use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{FixedOffset, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2018, 8, 10, 10, 1, 21).unwrap() + chrono::Duration::milliseconds(7)
}

fn agent() -> Uuid {
    Uuid::parse_str("072f3eca-3db0-45ba-8174-fa383bc93caf").unwrap()
}

fn exec(pid: u32) -> ProcessCreate {
    ProcessCreate {
        executable: "/usr/bin/curl".into(),
        process_id: pid,
        parent_process_id: 1,
        user_id: "1000".into(),
        user_name: Some("pi".into()),
        command_line: "curl -s http://example.com".into(),
        extra_details: [("ThreadId".to_string(), pid.to_string())].into(),
    }
}

fn privilege() -> PrivilegeChange {
    PrivilegeChange {
        process_id: 7,
        executable: "/usr/bin/sudo".into(),
        command_line: None,
        operation: "setuid".into(),
        result: Outcome::Success,
        user_id: "1000".into(),
        user_name: None,
        group_id: None,
        new_user_id: Some("0".into()),
        new_group_id: None,
        extra_details: ExtraDetails::new(),
    }
}

fn event_at(payload: impl Into<Payload>) -> Event {
    let mut e = Event::at_offset(t0(), FixedOffset::east_opt(3600).unwrap(), payload);
    e.id = Uuid::parse_str("9c647395-b913-4997-a732-a7fe7303b649").unwrap();
    e
}

#[test]
fn event_serializes_with_the_published_field_names() {
    let v: Value = serde_json::to_value(event_at(exec(6052))).unwrap();
    assert_eq!(
        v,
        json!({
            "Id": "9c647395-b913-4997-a732-a7fe7303b649",
            "TimestampLocal": "2018-08-10T11:01:21.007+01:00",
            "TimestampUTC": "2018-08-10T10:01:21.007Z",
            "Category": "Triggered",
            "Name": "ProcessCreate",
            "EventType": "Security",
            "IsEmpty": false,
            "PayloadSchemaVersion": "1.0",
            "Payload": [{
                "Executable": "/usr/bin/curl",
                "ProcessId": 6052,
                "ParentProcessId": 1,
                "UserId": "1000",
                "UserName": "pi",
                "CommandLine": "curl -s http://example.com",
                "ExtraDetails": { "ThreadId": "6052" }
            }]
        })
    );
}

#[test]
fn optional_fields_and_empty_extra_details_are_left_out() {
    let item = ProcessTerminate {
        executable: "/bin/true".into(),
        process_id: 3,
        exit_status: -1,
        extra_details: ExtraDetails::new(),
    };
    let v = serde_json::to_value(&item).unwrap();
    assert_eq!(v, json!({"Executable": "/bin/true", "ProcessId": 3, "ExitStatus": -1}));
    let info = SystemInformation {
        os_name: Some("Debian".into()),
        total_physical_memory_kb: Some(1),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&info).unwrap(),
        json!({"OSName": "Debian", "TotalPhysicalMemoryInKB": 1})
    );
}

#[test]
fn names_categories_and_families() {
    assert_eq!(Kind::ALL.len(), 18);
    for kind in Kind::ALL {
        assert_eq!(Kind::from_name(kind.name()), Some(*kind));
    }
    let own: Vec<_> = Kind::ALL.iter().filter(|k| k.family() == Family::Own).map(|k| k.name()).collect();
    assert_eq!(own, ["PrivilegeChange", "FileChange", "Alert", "Heartbeat"]);
    assert_eq!(Kind::Heartbeat.category(), Category::Periodic);
    assert_eq!(Kind::Heartbeat.event_type(), EventType::Operational);
    assert_eq!(Kind::ConfigurationError.category(), Category::Triggered);
    assert_eq!(Kind::ConfigurationError.event_type(), EventType::Operational);
    assert_eq!(Kind::Diagnostic.event_type(), EventType::Diagnostic);
    assert_eq!(Kind::ListeningPorts.category(), Category::Periodic);
    assert_eq!(Kind::from_name("processcreate"), None);
}

#[test]
fn builder_output_is_the_message_serialized() {
    let events = vec![event_at(exec(1)), event_at(exec(2)), Event::empty(Kind::LocalUsers)];
    let mut b = MessageBuilder::new(agent(), "1.0.0 \"beta\"");
    for e in &events {
        b.push(e).unwrap();
    }
    assert_eq!(b.len(), 3);
    let size = b.size();
    let bytes = b.finish().unwrap();
    assert_eq!(bytes.len(), size);
    let msg = Message::new(agent(), "1.0.0 \"beta\"", events).unwrap();
    assert_eq!(bytes, msg.to_json());
    assert_eq!(Message::from_json(&bytes).unwrap(), msg);
}

#[test]
fn builder_keeps_families_apart() {
    let mut b = MessageBuilder::new(agent(), "1");
    b.push(&Event::new(exec(1))).unwrap();
    assert_eq!(
        b.push(&Event::new(privilege())),
        Err(PushError::MixedFamilies { message: Family::Azure, event: Kind::PrivilegeChange })
    );
    assert_eq!(b.len(), 1);
    // After take() the builder is empty and the family open again.
    assert!(b.take().is_some());
    assert_eq!(b.family(), None);
    b.push(&Event::new(privilege())).unwrap();
    assert_eq!(b.family(), Some(Family::Own));
    assert!(matches!(b.push(&Event::new(exec(2))), Err(PushError::MixedFamilies { .. })));
}

#[test]
fn message_refuses_mixed_families_and_segregate_splits() {
    let events = vec![Event::new(exec(1)), Event::new(privilege()), Event::new(exec(2))];
    assert_eq!(
        Message::new(agent(), "1", events.clone()),
        Err(MessageError::MixedFamilies { index: 1, family: Family::Azure, kind: Kind::PrivilegeChange })
    );
    let msgs = Message::segregate(agent(), "1", events).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].family(), Family::Azure);
    assert_eq!(msgs[0].events().len(), 2);
    assert_eq!(msgs[1].family(), Family::Own);
    assert!(Message::segregate(agent(), "1", vec![]).unwrap().is_empty());
    assert_eq!(Message::new(agent(), "1", vec![]), Err(MessageError::NoEvents));
}

#[test]
fn size_limit() {
    let event = event_at(exec(1));
    let one = serde_json::to_vec(&event).unwrap().len();
    let head = MessageBuilder::new(agent(), "1").size();
    // Room for exactly two events.
    let mut b = MessageBuilder::new(agent(), "1").with_max_bytes(head + 2 * one + 1);
    b.push(&event).unwrap();
    b.push(&event).unwrap();
    assert_eq!(b.size(), head + 2 * one + 1);
    let full = b.push(&event).unwrap_err();
    assert_eq!(full, PushError::Full { size: head + 3 * one + 2, max: head + 2 * one + 1 });
    assert_eq!(b.len(), 2);
    let mut tiny = MessageBuilder::new(agent(), "1").with_max_bytes(head + one - 1);
    assert!(matches!(tiny.push(&event), Err(PushError::TooLarge { .. })));
    assert!(tiny.finish().is_none());
}

#[test]
fn triggered_events_are_never_empty() {
    let e = Event::empty(Kind::ProcessCreate);
    assert_eq!(e.validate(), Err(EventError::EmptyTriggered(Kind::ProcessCreate)));
    let mut b = MessageBuilder::new(agent(), "1");
    assert!(matches!(b.push(&e), Err(PushError::Invalid(_))));
    let snapshot = Event::empty(Kind::ListeningPorts);
    assert!(snapshot.is_empty());
    b.push(&snapshot).unwrap();
    let v: Value = serde_json::from_slice(&b.finish().unwrap()).unwrap();
    assert_eq!(v["Events"][0]["IsEmpty"], json!(true));
    assert_eq!(v["Events"][0]["Payload"], json!([]));
}

#[test]
fn login_needs_a_user() {
    let login = Login {
        process_id: 1,
        user_id: None,
        user_name: None,
        operation: "PAM:authenticate".into(),
        executable: "/usr/sbin/sshd".into(),
        remote_address: None,
        remote_port: None,
        local_port: None,
        result: Outcome::Fail,
        extra_details: ExtraDetails::new(),
    };
    assert_eq!(Event::new(login.clone()).validate(), Err(EventError::LoginWithoutUser));
    assert_eq!(Event::new(Login { user_name: Some("root".into()), ..login }).validate(), Ok(()));
}

fn valid_message() -> Value {
    serde_json::from_slice(&Message::new(agent(), "1", vec![event_at(exec(5))]).unwrap().to_json()).unwrap()
}

#[test]
fn reading_checks_like_the_schema() {
    let read = |v: &Value| Message::from_json(&serde_json::to_vec(v).unwrap());
    assert!(read(&valid_message()).is_ok());

    let mut v = valid_message();
    v["Events"][0]["TimestampUTC"] = json!("2018-08-10 10:01:21.007Z");
    assert!(read(&v).unwrap_err().to_string().contains("RFC 3339"));

    let mut v = valid_message();
    v["Events"][0]["Payload"][0]["ExtraDetails"]["ThreadId"] = json!(5);
    assert!(read(&v).is_err());

    let mut v = valid_message();
    v["Events"][0]["Payload"][0]["Surprise"] = json!("x");
    assert!(read(&v).unwrap_err().to_string().contains("unknown field"));

    let mut v = valid_message();
    v["Events"][0]["Category"] = json!("Periodic");
    assert!(read(&v).is_err());

    let mut v = valid_message();
    v["Events"][0]["IsEmpty"] = json!(true);
    assert!(read(&v).is_err());

    let mut v = valid_message();
    v["Events"][0]["Name"] = json!("Keylogger");
    assert!(read(&v).unwrap_err().to_string().contains("unknown event Name"));

    let mut v = valid_message();
    v["AgentId"] = json!("072f3eca3db045ba8174fa383bc93caf");
    assert!(read(&v).is_err());

    let mut v = valid_message();
    v["Events"] = json!([]);
    assert!(read(&v).is_err());

    let mut v = valid_message();
    let own = serde_json::to_value(Event::new(privilege())).unwrap();
    v["Events"].as_array_mut().unwrap().push(own);
    assert!(read(&v).unwrap_err().to_string().contains("separate messages"));

    let mut v = valid_message();
    v["Events"][0]["Name"] = json!("ConnectionCreate");
    assert!(read(&v).is_err(), "a ProcessCreate payload is not a ConnectionCreate one");
}

#[test]
fn aggregation_leaves_out_what_differs() {
    let conn = |pid: u32, port: u16, addr: IpAddr| ConnectionCreate {
        remote_address: addr,
        remote_port: "443".into(),
        local_address: Some(Ipv4Addr::new(10, 0, 0, 2).into()),
        local_port: Some(port.to_string()),
        direction: Direction::Out,
        protocol: protocol::TCP.into(),
        process_id: pid,
        user_id: Some("0".into()),
        executable: "/usr/bin/curl".into(),
        command_line: Some(format!("curl #{pid}")),
        extra_details: [("Fd".to_string(), "3".to_string()), ("Comm".to_string(), format!("c{pid}"))].into(),
    };
    let remote: IpAddr = Ipv6Addr::LOCALHOST.into();
    let mut agg = Aggregate::new(conn(10, 40000, remote), t0() + chrono::Duration::seconds(1));
    agg.add(&conn(11, 40001, remote), t0() + chrono::Duration::seconds(9)).unwrap();
    let mut third = conn(12, 40002, Ipv6Addr::UNSPECIFIED.into());
    third.extra_details.remove("Fd");
    agg.add(&third, t0()).unwrap();
    assert_eq!(agg.hits(), 3);
    let mut inbound = conn(13, 40003, remote);
    inbound.direction = Direction::In;
    assert_eq!(agg.add(&inbound, t0()), Err(AggregateError::Incompatible));
    assert_eq!(agg.hits(), 3);

    let event = agg.into_event();
    assert!(event.validate().is_ok());
    let v = serde_json::to_value(&event).unwrap();
    let item = &v["Payload"][0];
    assert_eq!(v["Payload"].as_array().unwrap().len(), 1);
    // Required by the schema: zeroed, and named as merged.
    assert_eq!(item["ProcessId"], json!(0));
    assert_eq!(item["RemoteAddress"], json!("::"));
    // Optional: left out.
    assert_eq!(item.get("LocalPort"), None);
    assert_eq!(item.get("CommandLine"), None);
    // The same in every hit: kept.
    assert_eq!(item["RemotePort"], json!("443"));
    assert_eq!(item["LocalAddress"], json!("10.0.0.2"));
    assert_eq!(item["Direction"], json!("Out"));
    let extra = &item["ExtraDetails"];
    assert_eq!(extra.get("Fd"), None, "missing in one hit");
    assert_eq!(extra.get("Comm"), None, "differs");
    assert_eq!(extra[MERGED_FIELDS], json!("ProcessId,RemoteAddress"));
    assert_eq!(extra[HIT_COUNT], json!("3"));
    assert_eq!(extra[START_TIME_UTC], json!("2018-08-10T10:01:21.007Z"));
    assert_eq!(extra[END_TIME_UTC], json!("2018-08-10T10:01:30.007Z"));
    assert!(extra[START_TIME_LOCAL].as_str().unwrap().starts_with("2018-08-10T"));
    assert!(extra[END_TIME_LOCAL].is_string());
}

#[test]
fn aggregated_process_terminate_has_no_false_ids() {
    let exit = |pid: u32| ProcessTerminate {
        executable: "/usr/bin/true".into(),
        process_id: pid,
        exit_status: 0,
        extra_details: [
            ("ThreadId".to_string(), pid.to_string()),
            ("ParentProcessId".to_string(), (pid - 1).to_string()),
            ("UserId".to_string(), "0".to_string()),
        ]
        .into(),
    };
    let mut agg = Aggregate::new(exit(100), t0());
    agg.add(&exit(200), t0()).unwrap();
    agg.add(&exit(300), t0()).unwrap();
    let v = serde_json::to_value(agg.into_item()).unwrap();
    let extra = &v["ExtraDetails"];
    assert_eq!(extra.get("ThreadId"), None, "{v}");
    assert_eq!(extra.get("ParentProcessId"), None, "{v}");
    assert_eq!(extra["UserId"], "0", "the same in every hit: kept");
    // ProcessId is required: 0 with its name in MergedFields.
    assert_eq!(v["ProcessId"], 0);
    assert_eq!(extra[MERGED_FIELDS], "ProcessId");
    // Hits that agree name nothing as merged.
    let mut same = Aggregate::new(exit(5), t0());
    same.add(&exit(5), t0()).unwrap();
    let v = serde_json::to_value(same.into_item()).unwrap();
    assert_eq!(v["ProcessId"], 5);
    assert_eq!(v["ExtraDetails"].get(MERGED_FIELDS), None);
}

#[test]
fn merge_of_optional_and_numeric_text() {
    let mut a = Some("1000".to_string());
    assert!(a.merge(&Some("0".to_string())));
    assert_eq!(a, None);
    let mut b: Option<u32> = Some(5);
    assert!(b.merge(&None));
    assert_eq!(b, None);
    let mut c = String::from("sshd");
    assert!(c.merge(&"sudo".to_string()));
    assert_eq!(c, "");
    let mut d = String::from("1000");
    assert!(d.merge(&"0".to_string()));
    assert_eq!(d, "0");
}

#[test]
fn timestamps_have_milliseconds_and_offsets() {
    assert_eq!(format_utc(&t0()), "2018-08-10T10:01:21.007Z");
    let local = t0().with_timezone(&FixedOffset::west_opt(5 * 3600 + 1800).unwrap());
    assert_eq!(format_local(&local), "2018-08-10T04:31:21.007-05:30");
    let utc_local = t0().fixed_offset();
    assert_eq!(format_local(&utc_local), "2018-08-10T10:01:21.007+00:00");
    let e = Event::at(t0(), exec(1));
    assert_eq!(e.timestamp_local, e.timestamp_utc, "same instant");
}

#[test]
fn fresh_ids() {
    let a = Event::new(exec(1));
    let b = Event::new(exec(1));
    assert_ne!(a.id, b.id);
    assert_eq!(a.id.get_version_num(), 4);
}

#[test]
fn local_users_join() {
    assert_eq!(LocalUsers::join(["root", "daemon"]), "root;daemon");
    assert_eq!(LocalUsers::join(Vec::<String>::new()), "");
}

fn alert(command_line: &str, tags: &[&str]) -> Alert {
    Alert {
        rule_id: "exec-from-tmp".into(),
        severity: AlertSeverity::Critical,
        source: Some("builtin".into()),
        title: "Program executed from a temporary directory".into(),
        description: None,
        remediation: Some("Find what wrote it".into()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        process_id: Some(42),
        executable: Some("/tmp/x".into()),
        command_line: Some(command_line.into()),
        user_id: Some("0".into()),
        user_name: None,
        remote_address: None,
        remote_port: None,
        extra_details: [("TriggerKind".to_string(), "exec".to_string())].into(),
    }
}

#[test]
fn alert_fields_and_their_aggregation() {
    let v = serde_json::to_value(event_at(alert("/tmp/x -a", &["attack.execution", "attack.t1204.002"])))
        .unwrap();
    assert_eq!((&v["Name"], &v["Category"]), (&json!("Alert"), &json!("Triggered")));
    let p = &v["Payload"][0];
    assert_eq!(p["Severity"], "Critical");
    assert_eq!(p["Source"], "builtin");
    assert_eq!(p["Remediation"], "Find what wrote it");
    assert_eq!(p["Tags"], json!(["attack.execution", "attack.t1204.002"]));
    assert!(p.get("Description").is_none());
    // The reader takes what the writer wrote.
    let msg = Message::new(agent(), "1", vec![event_at(alert("x", &[]))]).unwrap();
    let back = Message::from_json(&serde_json::to_vec(&msg).unwrap()).unwrap();
    let Payload::Alert(items) = &back.events()[0].payload else { panic!("not an alert") };
    assert!(items[0].tags.is_empty() && items[0].severity == AlertSeverity::Critical);
    let json = serde_json::to_value(&msg).unwrap();
    assert!(json["Events"][0]["Payload"][0].get("Tags").is_none(), "no tags: left out");

    // Repeats of a rule for one process: the tags they share stay.
    let mut agg = Aggregate::new(alert("/tmp/x -a", &["attack.execution", "attack.t1204.002"]), t0());
    agg.add(&alert("/tmp/x -b", &["attack.t1204.002", "attack.t1620"]), t0()).unwrap();
    assert_eq!(agg.hits(), 2);
    assert_eq!(agg.into_item().tags, ["attack.t1204.002"]);
}
