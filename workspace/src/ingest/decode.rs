//! A received MQTT message into rows: gzip or plain JSON, the security
//! message schema (Azure kinds, Shrike's own kinds, messages of other
//! programs made with the SDK), one row per payload item. What does not
//! decode becomes a `rejected` row with the reason; nothing is dropped.

use std::io::Read;

use sha2::{Digest, Sha256};
use shrike_common::schema::{self as sm, Event, Message, Payload};

use crate::{
    store::rows::{
        AlertRow, Decoded, DeviceSeen, EventRow, MessageRow, RecommendationRow, RejectedRow, SnapshotRow,
        SystemInfo, severity_level,
    },
    time,
};

/// Bytes of a rejected body kept.
const REJECTED_BODY_MAX: usize = 64 * 1024;

pub enum Outcome {
    Accepted(Box<Decoded>),
    Rejected(RejectedRow),
}

/// SHA-256 of the raw body, hex: the message's id.
pub fn message_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The device a topic names: the level under the filter's first `+`
/// (`shrike/+/security` and `shrike/gw-17/security` give `gw-17`).
pub fn device_from_topic(filter: &str, topic: &str) -> Option<String> {
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        let t = topic_levels.next()?;
        match f {
            "+" => return (!t.is_empty()).then(|| t.to_owned()),
            "#" => return None,
            _ => {}
        }
    }
    None
}

/// Text of a body for people: UTF-8 as is, other bytes as `\xNN`, cut.
pub fn body_text(body: &[u8]) -> String {
    let body = &body[..body.len().min(REJECTED_BODY_MAX)];
    let mut out = String::with_capacity(body.len());
    for chunk in body.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            use std::fmt::Write;
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(body.len() * 4);
    // Read one byte past the limit to tell "exactly the limit" from a bomb.
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip: {e}"))?;
    if out.len() > limit {
        return Err(format!("gzip: expands beyond the {limit}-byte limit"));
    }
    Ok(out)
}

/// Decodes one message received on `topic` at `received` (UTC, stored format).
pub fn decode(filter: &str, topic: &str, body: &[u8], received: &str, max_size: usize) -> Outcome {
    let id = message_id(body);
    let reject = |reason: String| {
        Outcome::Rejected(RejectedRow {
            id: id.clone(),
            time: received.to_owned(),
            topic: topic.to_owned(),
            reason,
            size: body.len() as i64,
            body: body_text(body),
        })
    };
    if body.is_empty() {
        return reject("empty message".into());
    }
    if body.len() > max_size {
        return reject(format!("{} bytes, larger than the {max_size}-byte limit", body.len()));
    }
    let compressed = body.starts_with(&[0x1f, 0x8b]);
    let plain;
    let json: &[u8] = if compressed {
        match gunzip(body, max_size) {
            Ok(p) => {
                plain = p;
                &plain
            }
            Err(e) => return reject(e),
        }
    } else {
        body
    };
    let msg = match Message::from_json(json) {
        Ok(m) => m,
        Err(e) => {
            let what = if serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok() {
                "not a security message"
            } else {
                "not JSON"
            };
            return reject(format!("{what}: {e}"));
        }
    };
    let agent_id = msg.agent_id().to_string();
    let device = device_from_topic(filter, topic).unwrap_or_else(|| agent_id.clone());
    let mut d = Decoded {
        message: MessageRow {
            id: id.clone(),
            device: device.clone(),
            agent_id: agent_id.clone(),
            agent_version: msg.agent_version().to_owned(),
            topic: topic.to_owned(),
            received: received.to_owned(),
            size: body.len() as i64,
            compressed,
            events: 0,
        },
        device: DeviceSeen {
            client_id: device.clone(),
            agent_id,
            agent_version: msg.agent_version().to_owned(),
            received: received.to_owned(),
            messages: 1,
            events: 0,
            system_information: None,
            heartbeat_seconds: None,
        },
        events: Vec::new(),
        alerts: Vec::new(),
        recommendations: Vec::new(),
        snapshots: Vec::new(),
        losses: Vec::new(),
    };
    for event in msg.events() {
        rows_of(event, &device, &id, &mut d);
    }
    d.message.events = d.events.len() as i64;
    d.device.events = d.events.iter().map(|e| e.hit_count).sum();
    Outcome::Accepted(Box::new(d))
}

fn hit_count(extra: &sm::ExtraDetails) -> i64 {
    extra.get(sm::HIT_COUNT).and_then(|h| h.parse().ok()).filter(|h| *h > 0).unwrap_or(1)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("payload items serialize")
}

fn rows_of(event: &Event, device: &str, message_id: &str, d: &mut Decoded) {
    let event_id = event.id.to_string();
    let t = time::format(event.timestamp_utc);
    let kind = event.name();
    let category = format!("{:?}", event.category());
    let base = |item: usize| EventRow {
        event_id: event_id.clone(),
        item: item as i64,
        device: device.to_owned(),
        kind: kind.to_owned(),
        category: category.clone(),
        time: t.clone(),
        hit_count: 1,
        message_id: message_id.to_owned(),
        ..EventRow::default()
    };
    let mut push = |row: EventRow| d.events.push(row);
    macro_rules! each {
        ($items:expr, |$i:ident, $it:ident, $r:ident| $body:block) => {
            for ($i, $it) in $items.iter().enumerate() {
                let mut $r = base($i);
                $r.hit_count = hit_count(&$it.extra_details);
                $r.payload = json($it);
                $body
                push($r);
            }
        };
    }
    match &event.payload {
        Payload::ProcessCreate(items) => each!(items, |i, it, r| {
            r.process_id = Some(it.process_id.into());
            r.parent_process_id = Some(it.parent_process_id.into());
            r.executable = Some(it.executable.clone());
            r.command_line = Some(it.command_line.clone());
            r.user_id = Some(it.user_id.clone());
            r.user_name = it.user_name.clone();
        }),
        Payload::ProcessTerminate(items) => each!(items, |i, it, r| {
            r.process_id = Some(it.process_id.into());
            r.executable = Some(it.executable.clone());
            r.result = Some(it.exit_status.to_string());
        }),
        Payload::ConnectionCreate(items) => each!(items, |i, it, r| {
            r.process_id = Some(it.process_id.into());
            r.executable = Some(it.executable.clone());
            r.command_line = it.command_line.clone();
            r.user_id = it.user_id.clone();
            r.remote_address = Some(it.remote_address.to_string());
            r.remote_port = Some(it.remote_port.clone());
            r.local_address = it.local_address.map(|a| a.to_string());
            r.local_port = it.local_port.clone();
            r.direction = Some(it.direction.as_str().into());
            r.protocol = Some(it.protocol.clone());
        }),
        Payload::Login(items) => each!(items, |i, it, r| {
            r.process_id = Some(it.process_id.into());
            r.executable = Some(it.executable.clone());
            r.user_id = it.user_id.clone();
            r.user_name = it.user_name.clone();
            r.remote_address = it.remote_address.map(|a| a.to_string());
            r.remote_port = it.remote_port.clone();
            r.local_port = it.local_port.clone();
            r.operation = Some(it.operation.clone());
            r.result = Some(it.result.as_str().into());
        }),
        Payload::PrivilegeChange(items) => each!(items, |i, it, r| {
            r.process_id = Some(it.process_id.into());
            r.executable = Some(it.executable.clone());
            r.command_line = it.command_line.clone();
            r.user_id = Some(it.user_id.clone());
            r.user_name = it.user_name.clone();
            r.operation = Some(it.operation.clone());
            r.result = Some(it.result.as_str().into());
        }),
        Payload::FileChange(items) => each!(items, |i, it, r| {
            r.process_id = Some(it.process_id.into());
            r.executable = Some(it.executable.clone());
            r.command_line = it.command_line.clone();
            r.user_id = Some(it.user_id.clone());
            r.user_name = it.user_name.clone();
            r.operation = Some(it.operation.clone());
            r.path = Some(it.path.clone());
            r.result = Some(it.result.as_str().into());
        }),
        Payload::ListeningPorts(items) => {
            each!(items, |i, it, r| {
                r.local_address = it.local_address.map(|a| a.to_string());
                r.local_port = Some(it.local_port.clone());
                r.protocol = Some(it.protocol.clone());
            });
            snapshot(d, device, event, &t, &event_id, items.len(), json(items));
        }
        Payload::LocalUsers(items) => {
            each!(items, |i, it, r| {
                r.user_id = Some(it.user_id.clone());
                r.user_name = Some(it.user_name.clone());
            });
            snapshot(d, device, event, &t, &event_id, items.len(), json(items));
        }
        Payload::FirewallConfiguration(items) => {
            each!(items, |i, it, r| {
                r.protocol = it.protocol.clone();
                r.direction = it.direction.map(|x| x.as_str().into());
            });
            snapshot(d, device, event, &t, &event_id, items.len(), json(items));
        }
        Payload::ConnectedHardware(items) => {
            each!(items, |i, it, r| {
                let _ = it;
            });
            snapshot(d, device, event, &t, &event_id, items.len(), json(items));
        }
        Payload::SystemInformation(items) => {
            each!(items, |i, it, r| {
                let _ = it;
            });
            if let Some(it) = items.last() {
                let os = match (&it.os_name, &it.os_version) {
                    (Some(n), Some(v)) => Some(format!("{n} {v}")),
                    (Some(n), None) => Some(n.clone()),
                    _ => None,
                };
                d.device.system_information = Some(SystemInfo {
                    time: t.clone(),
                    host_name: it.host_name.clone(),
                    os,
                    payload: json(it),
                });
            }
        }
        Payload::OSBaseline(items) => each!(items, |i, it, r| {
            r.result = Some(it.result.as_str().into());
            let x = &it.extra_details;
            // The check's own id (policy:check) when the agent gave it:
            // several checks may share a CCE id.
            let check_id = match (x.get("Policy"), x.get("CheckId")) {
                (Some(p), Some(c)) => format!("{p}:{c}"),
                _ => it.cce_id.clone(),
            };
            d.recommendations.push(RecommendationRow {
                device: device.to_owned(),
                check_id,
                result: it.result.as_str().into(),
                severity: it.severity.as_str().into(),
                title: x.get("Title").cloned(),
                description: it.description.clone(),
                error: it.error.clone(),
                policy: x.get("Policy").cloned(),
                time: t.clone(),
                event_id: event_id.clone(),
                item: i as i64,
                payload: r.payload.clone(),
            });
        }),
        Payload::Diagnostic(items) => each!(items, |i, it, r| {
            r.process_id = Some(it.process_id.into());
            r.result = Some(it.severity.as_str().into());
        }),
        Payload::ConfigurationError(items) => each!(items, |i, it, r| {
            r.operation = Some(it.configuration_name.clone());
        }),
        Payload::DroppedEventsStatistics(items) => each!(items, |i, it, r| {
            r.operation = Some(it.queue.as_str().into());
            if it.dropped_events > 0 {
                d.losses.push((it.queue.as_str().into(), it.dropped_events.min(i64::MAX as u64) as i64));
            }
        }),
        Payload::MessageStatistics(items) => each!(items, |i, it, r| {
            let _ = it;
        }),
        Payload::Alert(items) => each!(items, |i, it, r| {
            r.process_id = it.process_id.map(i64::from);
            r.executable = it.executable.clone();
            r.command_line = it.command_line.clone();
            r.user_id = it.user_id.clone();
            r.user_name = it.user_name.clone();
            r.remote_address = it.remote_address.map(|a| a.to_string());
            r.remote_port = it.remote_port.clone();
            r.operation = Some(it.rule_id.clone());
            let severity = it.severity.as_str().to_ascii_lowercase();
            d.alerts.push(AlertRow {
                event_id: event_id.clone(),
                item: i as i64,
                device: device.to_owned(),
                rule: it.rule_id.clone(),
                severity_level: severity_level(&severity),
                severity,
                title: it.title.clone(),
                time: t.clone(),
                hit_count: r.hit_count,
                source: it.source.clone(),
                description: it.description.clone(),
                tags: (!it.tags.is_empty()).then(|| it.tags.join(",")),
                process_id: r.process_id,
                executable: it.executable.clone(),
                command_line: it.command_line.clone(),
                user_name: it.user_name.clone(),
                remote_address: r.remote_address.clone(),
                trigger_kind: it.extra_details.get("TriggerKind").map(|k| message_kind(k).to_owned()),
                payload: r.payload.clone(),
            });
        }),
        // Kinds this build has no columns for (newer own kinds such as an
        // agent's Heartbeat): a row per item with its payload, and the
        // heartbeat interval the silence detector uses.
        #[allow(unreachable_patterns, reason = "reachable when the schema has kinds not listed here")]
        other => {
            let items = serde_json::to_value(other).unwrap_or_default();
            for (i, item) in items.as_array().into_iter().flatten().enumerate() {
                let mut r = base(i);
                r.hit_count = item["ExtraDetails"][sm::HIT_COUNT]
                    .as_str()
                    .and_then(|h| h.parse().ok())
                    .filter(|h| *h > 0)
                    .unwrap_or(1);
                if let Some(every) = item.get("IntervalSeconds").and_then(serde_json::Value::as_i64) {
                    d.device.heartbeat_seconds = Some(every);
                    // The first heartbeat after the agent started.
                    if item
                        .get("UptimeSeconds")
                        .and_then(serde_json::Value::as_i64)
                        .is_some_and(|u| u <= every)
                    {
                        r.operation = Some("start".into());
                    }
                }
                r.payload = item.to_string();
                push(r);
            }
        }
    }
}

fn snapshot(
    d: &mut Decoded,
    device: &str,
    event: &Event,
    t: &str,
    event_id: &str,
    n: usize,
    payload: String,
) {
    d.snapshots.push(SnapshotRow {
        device: device.to_owned(),
        kind: event.name().to_owned(),
        time: t.to_owned(),
        items: n as i64,
        payload,
        event_id: event_id.to_owned(),
    });
}

/// An alert's `TriggerKind` (the agent's event kind: exec, connect...) as
/// the `kind` of the events table, so the two join.
fn message_kind(agent_kind: &str) -> &str {
    match agent_kind {
        "exec" => "ProcessCreate",
        "exit" => "ProcessTerminate",
        "connect" | "accept" => "ConnectionCreate",
        "login" => "Login",
        "privilege" => "PrivilegeChange",
        "file" => "FileChange",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm::{Alert, AlertSeverity, MessageBuilder, ProcessCreate, Uuid};

    fn exec(n: u32) -> ProcessCreate {
        ProcessCreate {
            executable: "/usr/bin/curl".into(),
            process_id: n,
            parent_process_id: 1,
            user_id: "0".into(),
            user_name: Some("root".into()),
            command_line: format!("curl {n}"),
            extra_details: [(sm::HIT_COUNT.to_string(), "3".to_string())].into(),
        }
    }

    fn message(events: &[Event]) -> Vec<u8> {
        let mut b = MessageBuilder::new(Uuid::new_v4(), "0.1.0");
        for e in events {
            b.push(e).unwrap();
        }
        b.finish().unwrap()
    }

    const NOW: &str = "2026-12-06T06:00:00.000Z";

    #[test]
    fn plain_and_gzip_give_the_same_rows() {
        let body = message(&[Event::new(vec![exec(1), exec(2)])]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        let gz = gz.finish().unwrap();
        for (b, compressed) in [(&body, false), (&gz, true)] {
            let Outcome::Accepted(d) = decode("shrike/+/security", "shrike/gw1/security", b, NOW, 1 << 20)
            else {
                panic!("rejected")
            };
            assert_eq!(d.message.device, "gw1");
            assert_eq!(d.message.compressed, compressed);
            assert_eq!(d.events.len(), 2);
            assert_eq!(d.events[1].item, 1);
            assert_eq!(d.events[0].hit_count, 3);
            assert_eq!(d.device.events, 6);
            assert_eq!(d.events[0].command_line.as_deref(), Some("curl 1"));
            assert!(d.events[0].payload.contains("\"CommandLine\":\"curl 1\""));
        }
    }

    #[test]
    fn alerts_become_alert_rows() {
        let alert = Alert {
            rule_id: "exec-from-tmp".into(),
            severity: AlertSeverity::High,
            source: Some("builtin".into()),
            title: "Executable run from /tmp".into(),
            description: None,
            remediation: None,
            tags: vec!["attack.t1059".into()],
            process_id: Some(7),
            executable: Some("/tmp/x".into()),
            command_line: None,
            user_id: None,
            user_name: None,
            remote_address: None,
            remote_port: None,
            extra_details: [("TriggerKind".to_string(), "exec".to_string())].into(),
        };
        let body = message(&[Event::new(alert)]);
        let Outcome::Accepted(d) = decode("shrike/+/security", "shrike/gw1/security", &body, NOW, 1 << 20)
        else {
            panic!("rejected")
        };
        assert_eq!(d.alerts.len(), 1);
        assert_eq!(d.alerts[0].severity, "high");
        assert_eq!(d.alerts[0].severity_level, 3);
        assert_eq!(d.alerts[0].trigger_kind.as_deref(), Some("ProcessCreate"));
        assert_eq!(d.events[0].kind, "Alert");
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        for (body, why) in [
            (&b"hello"[..], "not JSON"),
            (br#"{"AgentId":"x"}"#, "not a security message"),
            (&[0x1f, 0x8b, 0, 1, 2][..], "gzip"),
            (b"", "empty"),
        ] {
            let Outcome::Rejected(r) = decode("shrike/+/security", "shrike/x/security", body, NOW, 1 << 20)
            else {
                panic!("accepted {body:?}")
            };
            assert!(r.reason.contains(why), "{why}: {}", r.reason);
            assert_eq!(r.topic, "shrike/x/security");
        }
        let Outcome::Rejected(r) = decode("t/+", "t/x", b"\xff\xfeabc", NOW, 1 << 20) else { panic!() };
        assert_eq!(r.body, "\\xff\\xfeabc");
    }

    #[test]
    fn gzip_bomb_is_refused() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &vec![b' '; 4 << 20]).unwrap();
        let gz = gz.finish().unwrap();
        let Outcome::Rejected(r) = decode("t/+", "t/x", &gz, NOW, 1 << 20) else { panic!() };
        assert!(r.reason.contains("limit"), "{}", r.reason);
    }

    #[test]
    fn devices_from_topics() {
        assert_eq!(device_from_topic("shrike/+/security", "shrike/a/security").as_deref(), Some("a"));
        assert_eq!(
            device_from_topic("devices/+/messages/#", "devices/b/messages/events").as_deref(),
            Some("b")
        );
        assert_eq!(device_from_topic("fixed/topic", "fixed/topic"), None);
    }
}
