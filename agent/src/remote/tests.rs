use serde_json::json;

use super::*;

#[test]
fn documents_with_config_keys_parse() {
    let d = parse_document(br#"{"priority":{"exec":"off"},"high_interval":"2s","version":"v7","detect":{"brute_force_failures":3}}"#)
        .unwrap();
    assert_eq!(d.settings["priority"]["exec"], "off");
    assert_eq!(d.version.as_deref(), Some("v7"));
    assert_eq!(d.sha256.len(), 64);
    // null: not set here.
    let d = parse_document(br#"{"priority":{"exec":null},"low_interval":null}"#).unwrap();
    assert_eq!(Value::Object(d.settings), json!({"priority": {}}));
}

#[test]
fn invalid_documents_are_rejected_naming_what_is_wrong() {
    let cases: &[(&[u8], &str, &str)] = &[
        (b"not json", "remote configuration", "not JSON"),
        (b"[1,2]", "remote configuration", "not a JSON object"),
        (b"\xff\xfe", "remote configuration", "UTF-8"),
        (br#"{"priority":{"exec":"urgent"}}"#, "priority.exec", "urgent"),
        (br#"{"priority":{"exec":7}}"#, "priority.exec", "invalid type"),
        (br#"{"hihg_interval":"1s"}"#, "hihg_interval", "unknown field"),
        (br#"{"max_message_size":"big"}"#, "max_message_size", "invalid type"),
        (br#"{"detect":{"brute_force":1}}"#, "detect.brute_force", "unknown field"),
        (br#"{"sigma_rules":5}"#, "sigma_rules", "expected a string"),
        (br#"{"":3}"#, "\"\"", "unknown field"),
    ];
    for (doc, setting, why) in cases {
        let r = parse_document(doc).unwrap_err();
        assert_eq!(r.setting, *setting, "{}: {r}", String::from_utf8_lossy(doc));
        assert!(r.message.contains(why), "{}: {r}", String::from_utf8_lossy(doc));
        assert!(!r.conflict);
    }
    for doc in [&br#"{"hub":"mqtt://evil:1883"}"#[..], br#"{"detect":{"rules":["/etc/shadow"]}}"#] {
        let r = parse_document(doc).unwrap_err();
        assert!(r.conflict && r.message.contains("device only"), "{r}");
    }
    let big = vec![b'x'; MAX_DOCUMENT + 1];
    assert!(parse_document(&big).unwrap_err().message.contains("limit"));
    let garbage: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    assert_eq!(parse_document(&garbage).unwrap_err().setting, "remote configuration");
}

#[test]
fn merge_is_table_by_table() {
    let mut base = json!({"priority": {"exec": "low", "login": "high"}, "high_interval": "1s"});
    let over = json!({"priority": {"exec": "off"}, "low_interval": "5s"});
    merge(base.as_object_mut().unwrap(), over.as_object().unwrap());
    assert_eq!(
        base,
        json!({"priority": {"exec": "off", "login": "high"}, "high_interval": "1s", "low_interval": "5s"})
    );
}

#[test]
fn inline_content_wins_over_its_topic() {
    let r = Remote {
        document: Some(r#"{"sigma_rules":"title: a"}"#.into()),
        sigma_topic: Some("title: b".into()),
        ioc_topic: Some("1.2.3.4".into()),
    };
    let a = r.parse().unwrap();
    assert_eq!(a.sigma, Some(("title: a".into(), "inline")));
    assert_eq!(a.ioc, Some(("1.2.3.4".into(), "topic")));
}

#[test]
fn the_azure_twin_configuration_maps_to_settings() {
    let desired = json!({
        "$version": 4,
        twin::AZURE_CONFIG: {
            "highPriorityMessageFrequency": {"value": "PT1M"},
            "lowPriorityMessageFrequency": {"value": "PT5H"},
            "snapshotFrequency": {"value": "PT13H"},
            "maxLocalCacheSizeInBytes": {"value": 2_560_000},
            "maxMessageSizeInBytes": {"value": 204_800},
            "eventPriorityProcessCreate": {"value": "Off"},
            "eventPriorityConnectionCreate": {"value": "High"},
            "eventPriorityListeningPorts": {"value": "Low"},
            "aggregationEnabledProcessCreate": {"value": true},
            "aggregationIntervalConnectionCreate": {"value": "PT2M"},
            "hubResourceId": {"value": "/subscriptions/x"}
        },
        "shrike": {"priority": {"login": "low"}, "high_interval": "2s"}
    });
    let (bytes, ignored) = twin::to_document(&desired).unwrap();
    let d = parse_document(&bytes).unwrap();
    assert_eq!(
        Value::Object(d.settings),
        json!({
            "high_interval": "2s", "low_interval": "PT5H", "snapshot_interval": "PT13H",
            "spool_size": 2_560_000, "max_message_size": 204_800,
            "priority": {"exec": "off", "connect": "high", "accept": "high", "login": "low"},
            "aggregation": {"exec": "PT1H", "connect": "PT2M", "accept": "PT2M"}
        })
    );
    assert_eq!(ignored, ["eventPriorityListeningPorts", "hubResourceId"]);
    for (bad, setting) in [
        (json!({twin::AZURE_CONFIG: {"eventPriorityProcessCreate": "Off"}}), "eventPriorityProcessCreate"),
        (
            json!({twin::AZURE_CONFIG: {"eventPriorityProcessCreate": {"value": "Sometimes"}}}),
            "eventPriorityProcessCreate",
        ),
        (json!({twin::AZURE_CONFIG: {"eventPriorityWarpDrive": {"value": "Off"}}}), "eventPriorityWarpDrive"),
        (json!({twin::AZURE_CONFIG: {"colour": {"value": 1}}}), "colour"),
        (json!({twin::SHRIKE: 3}), "shrike"),
    ] {
        let r = twin::to_document(&bad).unwrap_err();
        assert!(r.setting.ends_with(setting), "{r}");
    }
}

#[test]
fn twin_topics_and_patches() {
    use twin::{TwinTopic, classify};
    assert_eq!(
        classify("$iothub/twin/res/200/?$rid=7"),
        Some(TwinTopic::Response { status: 200, rid: Some(7) })
    );
    assert_eq!(
        classify("$iothub/twin/res/204/?$rid=8&$version=3"),
        Some(TwinTopic::Response { status: 204, rid: Some(8) })
    );
    assert_eq!(classify("$iothub/twin/PATCH/properties/desired/?$version=5"), Some(TwinTopic::DesiredPatch));
    assert_eq!(classify("shrike/x/config"), None);
    let mut desired = json!({"shrike": {"priority": {"exec": "off", "login": "low"}}, "$version": 1});
    twin::merge_patch(&mut desired, &json!({"shrike": {"priority": {"exec": null}}, "$version": 2}));
    assert_eq!(desired, json!({"shrike": {"priority": {"login": "low"}}, "$version": 2}));
}
