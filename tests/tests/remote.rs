//! Remote configuration against a real mosquitto and the real agent: a
//! retained document that turns `exec` off and back on while the agent
//! runs, reported back; invalid documents rejected whole, reported, and
//! their `ConfigurationError` events delivered; a restart with the broker
//! down keeps the last applied remote configuration.
//!
//! Run as root: `cargo test -p shrike-tests --test remote -- --test-threads=1`.

mod hub_support;

use std::{path::Path, process::Command, time::Duration};

use hub_support::*;
use serde_json::Value;
use shrike_tests::{TempDir, marker, require_root};

const ID: &str = "remote-gw";
const EVENTS: &str = "shrike/remote-gw/security";
const CONFIG: &str = "shrike/remote-gw/config";
const REPORTED: &str = "shrike/remote-gw/config/reported";

/// `mosquitto_pub -r`: a retained message (empty: the retained one removed).
fn publish_retained(port: u16, topic: &str, payload: &[u8], dir: &Path) {
    let file = dir.join("payload");
    std::fs::write(&file, payload).unwrap();
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r", "-t", topic]);
    if payload.is_empty() {
        cmd.arg("-n");
    } else {
        cmd.arg("-f").arg(&file);
    }
    let st = cmd.status().expect("mosquitto_pub (Debian package mosquitto-clients)");
    assert!(st.success(), "mosquitto_pub failed: {st}");
}

fn write_config(dir: &Path, port: u16) -> String {
    let cfg = dir.join("shrike.toml");
    std::fs::write(
        &cfg,
        format!(
            "hub = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"{ID}\"\nstate_dir = \"{}\"\n\
             high_interval = \"200ms\"\nlow_interval = \"1s\"\n[priority]\nexec = \"high\"\n\
             [aggregation]\nexec = \"off\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    cfg.display().to_string()
}

fn creates(msgs: &[Received], m: &str) -> usize {
    let on: Vec<Received> = msgs.iter().filter(|r| r.topic == EVENTS).cloned().collect();
    let (events, _) = unique_events(&on);
    events.iter().filter(|e| marked_create(e, m).is_some()).count()
}

/// The reports received, newest last.
fn reports(msgs: &[Received]) -> Vec<Value> {
    msgs.iter().filter(|r| r.topic == REPORTED).map(Received::json).collect()
}

fn wait_report(sub: &Subscriber, agent: &RunAgent, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let ok = sub.wait_until(Duration::from_secs(15), |m| reports(m).last().is_some_and(&f));
    assert!(
        ok,
        "no report {what}; reports: {:#?}\nagent log:\n{}",
        reports(&sub.messages()),
        agent.log().join("\n")
    );
    reports(&sub.messages()).pop().unwrap()
}

fn config_errors(msgs: &[Received]) -> Vec<Value> {
    let on: Vec<Received> = msgs.iter().filter(|r| r.topic == EVENTS).cloned().collect();
    let (events, _) = unique_events(&on);
    events.into_iter().filter(|e| e["Name"] == "ConfigurationError").collect()
}

/// exec off by a retained document while the agent runs, then on again;
/// each reported back; then invalid documents (a bad value, an unknown
/// key, a local-only key, not JSON, 1 MB of garbage) rejected whole with a
/// ConfigurationError each, while the running settings stay.
#[test]
fn retained_config_applies_in_place_and_bad_ones_are_rejected() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("remote");
    let d = dir.path();
    let broker = Broker::start(d, "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/remote-gw/#");
    let cfg = write_config(d, broker.port);
    // A flag: it wins over the remote document (flags > remote > file).
    let mut agent = RunAgent::start(&["--config".into(), cfg, "--priority".into(), "connect=low".into()]);
    assert!(agent.wait_log(Duration::from_secs(10), "MQTT connected"), "{:?}", agent.log());

    let on1 = marker("on1");
    run_true(&[&on1]);
    assert!(
        sub.wait_until(Duration::from_secs(10), |m| creates(m, &on1) == 1),
        "exec before any remote config"
    );

    // exec off.
    let doc = br#"{"priority":{"exec":"off","connect":"high"},"version":"fleet-1"}"#;
    publish_retained(broker.port, CONFIG, doc, d);
    let r = wait_report(&sub, &agent, "with exec off", |r| r["effective"]["priority"]["exec"] == "off");
    assert_eq!(r["status"], "applied", "{r:#}");
    assert_eq!(r["applied"]["version"], "fleet-1");
    assert_eq!(r["applied"]["settings"]["priority"]["exec"], "off");
    assert_eq!(r["effective"]["priority"]["login"], "high", "the file's other settings stay: {r:#}");
    assert_eq!(r["effective"]["priority"]["connect"], "low", "the flag wins over the remote: {r:#}");
    assert!(agent.wait_log(Duration::from_secs(5), "priority.exec high -> off"), "{:?}", agent.log());
    // SIGHUP re-reads the file: the remote layer stays over it.
    agent.signal(libc::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || {
            agent.log().iter().filter(|l| l.contains("configuration reloaded")).count() >= 2
        }),
        "{:?}",
        agent.log()
    );
    let off = marker("off");
    run_true(&[&off]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(creates(&sub.messages(), &off), 0, "an exec arrived while exec was off remotely");
    assert!(agent.log().iter().all(|l| !l.contains("probes detached")));

    // exec back on: the probes never left.
    publish_retained(broker.port, CONFIG, br#"{"priority":{"exec":"high"},"version":"fleet-2"}"#, d);
    wait_report(&sub, &agent, "with exec high", |r| r["applied"]["version"] == "fleet-2");
    let on2 = marker("on2");
    run_true(&[&on2]);
    assert!(
        sub.wait_until(Duration::from_secs(10), |m| creates(m, &on2) == 1),
        "exec did not come back; log:\n{}",
        agent.log().join("\n")
    );

    // Invalid documents: each rejected whole (its valid part not applied
    // either), reported, and a ConfigurationError sent; exec keeps flowing.
    let garbage: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let bad: [(&[u8], &str, &str); 5] = [
        (br#"{"low_interval":"5s","priority":{"exec":"urgent"}}"#, "priority.exec", "TypeMismatch"),
        (br#"{"priority":{"exec":"off"},"hihg_interval":"1s"}"#, "hihg_interval", "TypeMismatch"),
        (br#"{"hub":"mqtt://elsewhere:1883"}"#, "hub", "Conflict"),
        (br#"{"max_message_size":10}"#, "max_message_size", "TypeMismatch"),
        (&garbage, "remote configuration", "TypeMismatch"),
    ];
    for (i, (doc, setting, error_type)) in bad.iter().enumerate() {
        publish_retained(broker.port, CONFIG, doc, d);
        let r = wait_report(&sub, &agent, &format!("rejecting {setting}"), |r| {
            r["status"] == "rejected" && r["rejected"]["setting"] == *setting
        });
        assert_eq!(r["rejected"]["error_type"], *error_type, "{r:#}");
        assert_eq!(r["applied"]["version"], "fleet-2", "the running settings stay: {r:#}");
        assert_eq!(r["effective"]["low_interval"], "1s", "{r:#}");
        let ok = sub.wait_until(Duration::from_secs(10), |m| {
            config_errors(m).iter().any(|e| e["Payload"][0]["ConfigurationName"] == *setting)
        });
        assert!(ok, "no ConfigurationError for {setting}; log:\n{}", agent.log().join("\n"));
        let still = marker(&format!("still{i}"));
        run_true(&[&still]);
        assert!(
            sub.wait_until(Duration::from_secs(10), |m| creates(m, &still) == 1),
            "exec stopped after rejecting {setting}"
        );
    }
    let errors = config_errors(&sub.messages());
    let e = errors.iter().find(|e| e["Payload"][0]["ConfigurationName"] == "priority.exec").unwrap();
    assert_eq!(e["Category"], "Triggered");
    assert_eq!(e["EventType"], "Operational");
    assert!(e["Payload"][0]["Message"].as_str().unwrap().contains("urgent"), "{e:#}");
    assert!(
        e["Payload"][0]["UsedConfiguration"].as_str().unwrap().contains("running configuration"),
        "{e:#}"
    );
    let rejected = || agent.log().iter().filter(|l| l.contains("remote configuration rejected")).count();
    assert!(poll_until(Duration::from_secs(5), || rejected() == bad.len()), "{:?}", agent.log());
    // The agent's own errors reach the hub as Diagnostic events too.
    let diag = |m: &[Received]| -> Option<Value> {
        let on: Vec<Received> = m.iter().filter(|r| r.topic == EVENTS).cloned().collect();
        unique_events(&on).0.into_iter().find(|e| {
            e["Name"] == "Diagnostic"
                && e["Payload"][0]["Message"]
                    .as_str()
                    .is_some_and(|t| t.contains("remote configuration rejected"))
        })
    };
    assert!(sub.wait_until(Duration::from_secs(10), |m| diag(m).is_some()), "no Diagnostic event");
    let e = diag(&sub.messages()).unwrap();
    assert_eq!((e["EventType"].as_str(), e["Category"].as_str()), (Some("Diagnostic"), Some("Triggered")));
    assert_eq!(e["Payload"][0]["Severity"], "Error", "{e:#}");
    assert!(e["Payload"][0]["ProcessId"].as_u64().unwrap() > 1, "{e:#}");
    assert!(agent.running());
    agent.stop();
}

/// A gateway that restarts while the broker is away starts with the last
/// applied remote configuration (from its state folder), not its file's.
#[test]
fn restart_with_the_broker_down_keeps_the_remote_config() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("remote-restart");
    let d = dir.path();
    let mut broker = Broker::start(d, "", &[]);
    let port = broker.port;
    let cfg = write_config(d, port);
    {
        let sub = Subscriber::start(port, "shrike/remote-gw/#");
        let agent = RunAgent::start(&["--config".into(), cfg.clone()]);
        publish_retained(port, CONFIG, br#"{"priority":{"exec":"off"},"version":"offline-1"}"#, d);
        wait_report(&sub, &agent, "with exec off", |r| r["applied"]["version"] == "offline-1");
        agent.stop();
    }
    // The retained document goes (the agent is stopped: it does not see
    // that): the broker has none to send when it is back.
    publish_retained(port, CONFIG, b"", d);
    publish_retained(port, REPORTED, b"", d);
    broker.stop();

    // Broker down: the agent starts all the same, with the stored layer.
    let mut agent = RunAgent::start(&["--config".into(), cfg]);
    assert!(
        agent.log().iter().any(|l| l.contains("starting with the last applied remote configuration")),
        "{:?}",
        agent.log()
    );
    let offline = marker("offline");
    run_true(&[&offline]);
    std::thread::sleep(Duration::from_secs(1));

    broker.restart();
    let sub = Subscriber::start(port, "shrike/remote-gw/#");
    assert!(agent.wait_log(Duration::from_secs(30), "MQTT connected"), "{:?}", agent.log());
    // What runs is reported at the connection: the stored document.
    let r = wait_report(&sub, &agent, "of the stored document", |r| r["applied"]["version"] == "offline-1");
    assert_eq!(r["effective"]["priority"]["exec"], "off", "{r:#}");
    // Control: the pipeline delivers (exec turned on remotely arrives), and
    // the exec run while offline with exec off never does.
    publish_retained(port, CONFIG, br#"{"version":"online-2"}"#, d);
    wait_report(&sub, &agent, "online-2", |r| r["applied"]["version"] == "online-2");
    let on = marker("online");
    run_true(&[&on]);
    assert!(
        sub.wait_until(Duration::from_secs(10), |m| creates(m, &on) == 1),
        "exec (the file's high priority) did not come back; log:\n{}",
        agent.log().join("\n")
    );
    assert_eq!(creates(&sub.messages(), &offline), 0, "an exec made while exec was off arrived");
    agent.stop();
}

/// A stand-in for IoT Hub's twin service on the same mosquitto the agent
/// talks to: it answers GETs with the desired properties and PATCHes of
/// the reported ones with 204, and pushes desired patches.
///
/// How far this proves it: the agent's side of the twin protocol (topics,
/// `$rid`s, the GET at every connection, merge patches, the reported
/// document) and the Azure configuration's mapping are what IoT Hub
/// documents; the service itself (its ACLs, its `$version`s, throttling,
/// answers only to the requesting client) is not IoT Hub's, and a real hub
/// may differ where its documentation is silent.
struct TwinStandIn {
    client: rumqttc::Client,
    reported: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    gets: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl TwinStandIn {
    fn start(port: u16, desired: Value) -> TwinStandIn {
        use rumqttc::{Event, MqttOptions, Packet, QoS};
        use std::sync::{Arc, Mutex, atomic::AtomicU32, atomic::Ordering};
        let mut o = MqttOptions::new(marker("twin"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = rumqttc::Client::new(o, 64);
        client.subscribe("$iothub/twin/GET/#", QoS::AtLeastOnce).unwrap();
        client.subscribe("$iothub/twin/PATCH/properties/reported/#", QoS::AtLeastOnce).unwrap();
        let reported = Arc::new(Mutex::new(Vec::new()));
        let gets = Arc::new(AtomicU32::new(0));
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        {
            let (client, reported, gets) = (client.clone(), Arc::clone(&reported), Arc::clone(&gets));
            std::thread::spawn(move || {
                let mut version = 1u64;
                let mut subacks = 0;
                for ev in conn.iter() {
                    let p = match ev {
                        Ok(Event::Incoming(Packet::Publish(p))) => p,
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            subacks += 1;
                            if subacks == 2 {
                                let _ = subscribed_tx.send(());
                            }
                            continue;
                        }
                        Ok(_) => continue,
                        Err(_) => break,
                    };
                    let rid =
                        p.topic.split("$rid=").nth(1).unwrap_or("0").split('&').next().unwrap().to_owned();
                    if p.topic.starts_with("$iothub/twin/GET/") {
                        gets.fetch_add(1, Ordering::SeqCst);
                        let body = serde_json::json!({"desired": desired, "reported": {"$version": version}});
                        let _ = client.publish(
                            format!("$iothub/twin/res/200/?$rid={rid}"),
                            QoS::AtLeastOnce,
                            false,
                            serde_json::to_vec(&body).unwrap(),
                        );
                    } else {
                        version += 1;
                        if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                            reported.lock().unwrap().push(v);
                        }
                        let _ = client.publish(
                            format!("$iothub/twin/res/204/?$rid={rid}&$version={version}"),
                            QoS::AtLeastOnce,
                            false,
                            Vec::new(),
                        );
                    }
                }
            });
        }
        subscribed_rx.recv_timeout(Duration::from_secs(10)).expect("the twin stand-in's subscriptions");
        TwinStandIn { client, reported, gets }
    }

    fn patch_desired(&self, version: u64, patch: Value) {
        self.client
            .publish(
                format!("$iothub/twin/PATCH/properties/desired/?$version={version}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&patch).unwrap(),
            )
            .unwrap();
    }

    fn wait_reported(&self, agent: &RunAgent, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let ok = poll_until(Duration::from_secs(15), || self.reported.lock().unwrap().last().is_some_and(&f));
        let all = self.reported.lock().unwrap().clone();
        assert!(ok, "no reported properties {what}: {all:#?}\nagent log:\n{}", agent.log().join("\n"));
        all.last().unwrap().clone()
    }
}

const SECURITY_CONFIG: &str = "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration";
const AZURE_EVENTS: &str = "devices/gateway-01/messages/events/#";

/// The twin: read at connection, the Azure security agent's configuration
/// object applied (exec off), reported back; a desired patch turns exec on
/// again (it arrives); an invalid patch is rejected, reported, and its
/// ConfigurationError arrives.
#[test]
fn iot_hub_twin_against_a_stand_in() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("remote-twin");
    let d = dir.path();
    let pki = make_pki(&d.join("pki"));
    let mut bc = BrokerConfig::new(d);
    let tls = bc.tls_listener(&pki, false, Auth::Anonymous);
    let broker = bc.start();
    let cs = d.join("cs");
    // The key is not checked here (mosquitto knows no SAS tokens; hub.rs
    // checks them at a fake endpoint).
    std::fs::write(&cs, "HostName=shrike-test.azure-devices.net;DeviceId=gateway-01;SharedAccessKey=a2V5\n")
        .unwrap();
    let desired = serde_json::json!({
        "$version": 1,
        SECURITY_CONFIG: {
            "eventPriorityProcessCreate": {"value": "Off"},
            "highPriorityMessageFrequency": {"value": "PT1S"},
            "lowPriorityMessageFrequency": {"value": "PT1S"},
            "aggregationEnabledProcessCreate": {"value": false},
            "hubResourceId": {"value": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/h"}
        }
    });
    let twin = TwinStandIn::start(broker.port, desired);
    let sub = Subscriber::start(broker.port, AZURE_EVENTS);
    let args: Vec<String> = [
        "--hub",
        &format!("azure://127.0.0.1:{tls}"),
        "--connection-string-file",
        &cs.display().to_string(),
        "--ca-file",
        &pki.ca().display().to_string(),
        "--state-dir",
        &d.join("state").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent = RunAgent::start(&args);
    let r = twin
        .wait_reported(&agent, "with exec off", |r| r["shrike"]["effective"]["priority"]["exec"] == "off");
    assert_eq!(r[SECURITY_CONFIG]["eventPriorityProcessCreate"]["value"], "Off", "{r:#}");
    assert_eq!(r[SECURITY_CONFIG]["highPriorityMessageFrequency"]["value"], "PT1S", "{r:#}");
    assert_eq!(r["shrike"]["status"], "applied");
    assert_eq!(r["shrike"]["ignored"], serde_json::json!(["hubResourceId"]));
    assert_eq!(twin.gets.load(std::sync::atomic::Ordering::SeqCst), 1);
    let off = marker("twin-off");
    run_true(&[&off]);

    twin.patch_desired(2, serde_json::json!({"$version": 2, SECURITY_CONFIG: {"eventPriorityProcessCreate": {"value": "High"}}}));
    twin.wait_reported(&agent, "with exec high", |r| r["shrike"]["effective"]["priority"]["exec"] == "high");
    let on = marker("twin-on");
    run_true(&[&on]);
    let marked = |m: &[Received], mk: &str| {
        let (events, _) = unique_events(m);
        events.iter().filter(|e| marked_create(e, mk).is_some()).count()
    };
    assert!(
        sub.wait_until(Duration::from_secs(10), |m| marked(m, &on) == 1),
        "exec did not arrive after the desired patch; log:\n{}",
        agent.log().join("\n")
    );
    assert_eq!(marked(&sub.messages(), &off), 0, "an exec arrived while the twin had it off");

    // Invalid: the running settings stay; reported; ConfigurationError.
    twin.patch_desired(3, serde_json::json!({"$version": 3, "shrike": {"priority": {"exec": "urgent"}}}));
    let r = twin.wait_reported(&agent, "rejecting", |r| r["shrike"]["status"] == "rejected");
    assert_eq!(r["shrike"]["rejected"]["setting"], "priority.exec", "{r:#}");
    assert_eq!(r["shrike"]["effective"]["priority"]["exec"], "high", "{r:#}");
    let ok = sub.wait_until(Duration::from_secs(10), |m| {
        unique_events(m).0.iter().any(|e| e["Name"] == "ConfigurationError")
    });
    assert!(ok, "no ConfigurationError; log:\n{}", agent.log().join("\n"));
    agent.stop();
}

/// `GET PATH` on the metrics port: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// The text exposition parsed: every sample `name{labels}` -> value; each
/// family declared (HELP and TYPE) before its samples.
fn parse_metrics(body: &str) -> std::collections::BTreeMap<String, f64> {
    let mut declared = std::collections::BTreeSet::new();
    let mut out = std::collections::BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            declared.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(declared.contains(name), "{name} has no TYPE before it");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{series}");
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(out.insert(series.to_owned(), v).is_none(), "{series} twice");
    }
    out
}

/// `--metrics`: /metrics scraped and parsed, its counters follow real
/// execs and publishes; `--heartbeat-interval 1s`: Heartbeat events arrive
/// and validate.
#[test]
fn metrics_scrape_and_heartbeat() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("remote-metrics");
    let d = dir.path();
    let broker = Broker::start(d, "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/remote-gw/#");
    let cfg = write_config(d, broker.port);
    let port = shrike_tests::free_port("127.0.0.1");
    let agent = RunAgent::start(&[
        "--config".into(),
        cfg,
        "--metrics".into(),
        format!("127.0.0.1:{port}"),
        "--heartbeat-interval".into(),
        "1s".into(),
    ]);
    let (status, body) = http_get(port, "/metrics");
    assert!(status.contains("200"), "{status}\n{body}");
    let before = parse_metrics(&body);
    let m = marker("metrics");
    for _ in 0..20 {
        run_true(&[&m]);
    }
    assert!(sub.wait_until(Duration::from_secs(10), |msgs| creates(msgs, &m) == 20), "the 20 execs");
    let after = parse_metrics(&http_get(port, "/metrics").1);
    let get = |s: &std::collections::BTreeMap<String, f64>, k: &str| {
        *s.get(k).unwrap_or_else(|| panic!("no {k} in {s:#?}"))
    };
    let execs = "shrike_kernel_records_total{kind=\"exec\"}";
    assert!(get(&after, execs) - get(&before, execs) >= 20.0, "{before:?}\n{after:?}");
    assert!(get(&after, "shrike_records_received_total") > get(&before, "shrike_records_received_total"));
    assert!(
        get(&after, "shrike_events_total{queue=\"high\"}")
            - get(&before, "shrike_events_total{queue=\"high\"}")
            >= 20.0
    );
    assert!(get(&after, "shrike_mqtt_published_total") >= 1.0);
    assert!(
        get(&after, "shrike_mqtt_published_bytes_total") > get(&before, "shrike_mqtt_published_bytes_total")
    );
    assert_eq!(get(&after, "shrike_mqtt_connected"), 1.0);
    let rss = get(&after, "shrike_resident_memory_bytes");
    assert!((1e6..1e9).contains(&rss), "RSS {rss}");
    eprintln!(
        "[metrics] {} series; exec records {}, RSS {:.1} MB",
        after.len(),
        get(&after, execs),
        rss / 1e6
    );
    assert!(http_get(port, "/other").0.contains("404"));

    let beats = |msgs: &[Received]| -> Vec<Value> {
        let on: Vec<Received> = msgs.iter().filter(|r| r.topic == EVENTS).cloned().collect();
        unique_events(&on).0.into_iter().filter(|e| e["Name"] == "Heartbeat").collect()
    };
    assert!(sub.wait_until(Duration::from_secs(10), |msgs| beats(msgs).len() >= 2), "two heartbeats");
    let b = beats(&sub.messages()).pop().unwrap();
    assert_eq!(b["Category"], "Periodic");
    assert_eq!(b["EventType"], "Operational");
    assert_eq!(b["Payload"][0]["IntervalSeconds"], 1);

    // ConnectedHardware: the snapshot at start lists this machine's PCI
    // devices, as sysfs does (validated with every message above).
    let hw = |msgs: &[Received]| -> Option<Value> {
        let on: Vec<Received> = msgs.iter().filter(|r| r.topic == EVENTS).cloned().collect();
        unique_events(&on).0.into_iter().find(|e| e["Name"] == "ConnectedHardware")
    };
    assert!(sub.wait_until(Duration::from_secs(10), |m| hw(m).is_some()), "no ConnectedHardware snapshot");
    let e = hw(&sub.messages()).unwrap();
    let pci_slots: std::collections::BTreeSet<String> = std::fs::read_dir("/sys/bus/pci/devices")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let reported: std::collections::BTreeSet<String> = e["Payload"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|i| i["HardwareCategory"] == "PCI")
                .map(|i| i["ExtraDetails"]["Slot"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(reported, pci_slots, "{e:#}");
    eprintln!(
        "[hardware] {} devices, {} on PCI",
        e["Payload"].as_array().map_or(0, Vec::len),
        reported.len()
    );
    agent.stop();
}
