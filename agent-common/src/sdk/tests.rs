use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 7, 0, 0).unwrap()
}

fn parse(v: serde_json::Value) -> Result<SdkEvent, String> {
    parse_line(&serde_json::to_vec(&v).unwrap(), now())
}

fn err(v: serde_json::Value) -> String {
    parse(v.clone()).expect_err(&format!("accepted: {v}"))
}

#[test]
fn custom_kind_gets_defaults_and_keeps_its_values() {
    let e = parse(
        json!({"Name": "DoorOpened", "Payload": [{"Door": "cabinet", "Forced": true, "Tries": 3, "T": 1.5}]}),
    )
    .unwrap();
    let SdkEvent::Custom(c) = &e else { panic!("custom: {e:?}") };
    assert_eq!((c.category, c.event_type), (Category::Triggered, EventType::Security));
    assert_eq!(c.timestamp_utc, now());
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["Name"], "DoorOpened");
    assert_eq!(v["IsEmpty"], false);
    assert_eq!(v["PayloadSchemaVersion"], "1.0");
    assert_eq!(v["Payload"], json!([{"Door": "cabinet", "Forced": true, "Tries": 3, "T": 1.5}]));
    assert_eq!(v["Id"].as_str().unwrap().len(), 36);
}

#[test]
fn given_id_and_timestamps_are_kept() {
    let e = parse(json!({
        "Name": "Tamper", "Category": "Periodic", "EventType": "Operational", "Payload": [],
        "Id": "9c647395-b913-4997-a732-a7fe7303b649", "TimestampUTC": "2018-08-10T10:01:21.000Z", "IsEmpty": true
    }))
    .unwrap();
    assert_eq!(e.id().to_string(), "9c647395-b913-4997-a732-a7fe7303b649");
    assert_eq!(e.timestamp_utc(), Utc.with_ymd_and_hms(2018, 8, 10, 10, 1, 21).unwrap());
    assert_eq!(e.category(), Category::Periodic);
}

#[test]
fn azure_kind_is_validated_against_its_schema() {
    let ok = parse(json!({"Name": "ProcessCreate", "Payload": [{
        "Executable": "/bin/x", "ProcessId": 1, "ParentProcessId": 0, "UserId": "0", "CommandLine": "x"
    }]}))
    .unwrap();
    assert_eq!(ok.family(), Family::Azure);
    assert_eq!(ok.name(), "ProcessCreate");
    let e = err(json!({"Name": "ProcessCreate", "Payload": [{
        "Executable": "/bin/x", "ProcessId": "1", "ParentProcessId": 0, "UserId": "0", "CommandLine": "x"
    }]}));
    assert!(e.starts_with("Payload[0].ProcessId: invalid type"), "{e}");
    let e = err(json!({"Name": "ProcessCreate", "Payload": [{
        "Executable": "/bin/x", "ProcessId": 1, "ParentProcessId": 0, "UserId": "0", "CommandLine": "x", "Colour": "red"
    }]}));
    assert!(e.contains("Payload[0]") && e.contains("unknown field `Colour`"), "{e}");
    let e = err(json!({"Name": "ConnectionCreate", "Payload": [{
        "RemoteAddress": "999.1.1.1", "RemotePort": "22", "Direction": "Out", "Protocol": "TCP", "ProcessId": 1, "Executable": "/x"
    }]}));
    assert!(e.starts_with("Payload[0].RemoteAddress"), "{e}");
    let e = err(
        json!({"Name": "Login", "Payload": [{"ProcessId": 1, "Operation": "PAM", "Executable": "/x", "Result": "Fail"}]}),
    );
    assert!(e.contains("UserId or UserName"), "{e}");
    let e = err(json!({"Name": "ProcessCreate", "EventType": "Diagnostic", "Payload": []}));
    assert!(e.starts_with("EventType:"), "{e}");
    let e = err(json!({"Name": "ListeningPorts", "Category": "Triggered", "Payload": []}));
    assert!(e.starts_with("Category:"), "{e}");
    let e = err(json!({"Name": "ProcessCreate", "Payload": []}));
    assert!(e.contains("at least one payload item"), "{e}");
}

#[test]
fn bad_lines_name_what_is_wrong() {
    assert!(parse_line(b"hello", now()).unwrap_err().starts_with("not JSON"));
    assert!(parse_line(b"[1,2]", now()).unwrap_err().contains("not an array"));
    assert!(parse_line(&vec![b' '; MAX_LINE + 1], now()).unwrap_err().starts_with("line too long"));
    for (v, field) in [
        (json!({"Payload": []}), "Name:"),
        (json!({"Name": 3, "Payload": []}), "Name: expected a string"),
        (json!({"Name": "A"}), "Payload: missing"),
        (json!({"Name": "A", "Payload": {}}), "Payload: expected an array"),
        (json!({"Name": "A", "Payload": [{}], "Extra": 1}), "unknown field \"Extra\""),
        (json!({"Name": "A", "Payload": [{}], "EventType": "Fun"}), "EventType: \"Fun\""),
        (json!({"Name": "A", "Payload": [{}], "PayloadSchemaVersion": "2.0"}), "PayloadSchemaVersion"),
        (json!({"Name": "A", "Payload": [{}], "IsEmpty": true}), "IsEmpty"),
        (json!({"Name": "A", "Payload": [{}], "Id": "nope"}), "Id:"),
        (json!({"Name": "A", "Payload": [{}], "TimestampUTC": "2018-08-10 10:01:21Z"}), "TimestampUTC:"),
        (json!({"Name": "A", "Payload": []}), "Payload: a Triggered event"),
        (json!({"Name": "A", "Payload": [1]}), "Payload[0]: expected an object"),
        (json!({"Name": "A", "Payload": [{"x": [1]}]}), "Payload[0].x: a custom kind's values"),
        (json!({"Name": "A", "Payload": [{"x": null}]}), "Payload[0].x:"),
        (json!({"Name": "A", "Payload": [{"ExtraDetails": {"k": 1}}]}), "Payload[0].ExtraDetails.k"),
        (json!({"Name": "lower", "Payload": [{}]}), "Name: "),
        (json!({"Name": "A b", "Payload": [{}]}), "Name: "),
        (json!({"Name": "Alert", "Payload": [{}]}), "Shrike's own"),
        (json!({"Name": "PrivilegeChange", "Payload": [{}]}), "Shrike's own"),
    ] {
        let e = err(v.clone());
        assert!(e.starts_with(field) || e.contains(field), "{v}: {e}");
    }
}

#[test]
fn extra_details_reach_every_item_and_replies_render() {
    let mut e = parse(
        json!({"Name": "A", "Payload": [{"a": 1}, {"b": "x", "ExtraDetails": {"SenderPid": "forged"}}]}),
    )
    .unwrap();
    e.for_each_extra_details(|d| {
        d.insert(SENDER_PID.into(), "42".into());
    });
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["Payload"][0]["ExtraDetails"]["SenderPid"], "42");
    assert_eq!(v["Payload"][1]["ExtraDetails"]["SenderPid"], "42");
    assert_eq!(e.payload_json().len(), 2);
    let id = e.id();
    assert_eq!(Reply::accepted(id).to_line(), format!("{{\"ok\":true,\"id\":\"{id}\"}}\n").into_bytes());
    assert_eq!(Reply::rejected("Name: x").to_line(), b"{\"ok\":false,\"error\":\"Name: x\"}\n".to_vec());
}
