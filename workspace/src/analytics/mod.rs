//! Fleet analytics: detectors over all devices ([`fleet`]) and over the
//! broker's own log ([`broker_log`]), written as alerts into the same
//! `alerts` table (`source` fleet or broker). The periodic ones read the
//! tables, so every process of a group sees the whole fleet, and their
//! alert ids make a finding stored once whichever process found it.

pub mod broker_log;
pub mod fleet;

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    config::Analytics,
    store::{
        Param, Store,
        rows::{AlertRow, Batch},
    },
    time,
};

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s.is_multiple_of(86400) && s > 0 => format!("{}d", s / 86400),
        _ if s.is_multiple_of(3600) && s > 0 => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) && s > 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where the fleet alerts this process stores go to be published
/// (`--publish-alerts`): the broker task, which owns the MQTT client.
/// `None`: not published.
pub type AlertSink = Option<tokio::sync::mpsc::UnboundedSender<AlertRow>>;

/// Hands newly stored fleet alerts to the broker task.
pub fn publish(sink: &AlertSink, alerts: Vec<AlertRow>) {
    if let Some(tx) = sink {
        for a in alerts {
            // Err: the broker task ended (stopping); nothing left to publish to.
            let _ = tx.send(a);
        }
    }
}

/// The JSON published for a fleet alert: its payload (RuleId, Severity,
/// Title, Description, Source, Details) with its Id, Device and Time.
pub fn published(a: &AlertRow) -> Vec<u8> {
    let mut v = match serde_json::from_str::<Value>(&a.payload) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    v.insert("Id".into(), Value::from(a.event_id.clone()));
    v.insert("Device".into(), Value::from(a.device.clone()));
    v.insert("Time".into(), Value::from(a.time.clone()));
    v.entry("RuleId").or_insert_with(|| Value::from(a.rule.clone()));
    v.entry("Severity").or_insert_with(|| Value::from(a.severity.clone()));
    v.entry("Title").or_insert_with(|| Value::from(a.title.clone()));
    Value::Object(v).to_string().into_bytes()
}

/// A Heartbeat row's (UptimeSeconds, IntervalSeconds); None when its
/// payload has no uptime (not the agent's Heartbeat).
fn heartbeat_uptime(payload: &Value) -> Option<(u64, u64)> {
    let v: Value = serde_json::from_str(payload.as_str()?).ok()?;
    Some((v.get("UptimeSeconds")?.as_u64()?, v.get("IntervalSeconds").and_then(Value::as_u64).unwrap_or(0)))
}

/// Which window a finding falls in: one alert per window.
fn bucket(window: Duration) -> i64 {
    chrono::Utc::now().timestamp() / window.as_secs().max(1) as i64
}

/// Runs the periodic detectors once; the alerts they raise (new or not:
/// the store keeps each once).
pub async fn detect<S: Store>(store: &S, a: &Analytics) -> Result<Vec<AlertRow>, crate::store::StoreError> {
    let now = time::now();
    let mut out = Vec::new();

    // Silent: for `silent_after` when set, else three heartbeat intervals
    // of the device, else the default.
    let fallback =
        crate::config::parse_duration(crate::config::defaults::SILENT_AFTER).expect("valid default");
    let shortest = a.silent_after.unwrap_or(Duration::from_secs(3));
    let silent = store
        .read(
            "SELECT client_id, last_seen, heartbeat_seconds FROM devices WHERE last_seen < $1 ORDER BY client_id"
                .into(),
            vec![Param::Text(time::ago(shortest))],
        )
        .await?;
    for r in &silent.rows {
        let limit = match (a.silent_after, r[2].as_u64()) {
            (Some(s), _) => s,
            (None, Some(h)) if h > 0 => Duration::from_secs(3 * h),
            _ => fallback,
        };
        if text(&r[1]) < time::ago(limit) {
            out.push(fleet::device_silent(&text(&r[0]), &text(&r[1]), &human(limit), &now));
        }
    }

    let spread = store
        .read(
            "SELECT rule, COUNT(DISTINCT device) FROM alerts WHERE time >= $1 AND source IN ('builtin', 'sigma') \
             GROUP BY rule HAVING COUNT(DISTINCT device) >= $2 ORDER BY rule"
                .into(),
            vec![Param::Text(time::ago(a.spread_window)), Param::Int(a.spread_devices.into())],
        )
        .await?;
    for r in &spread.rows {
        out.push(fleet::fleet_spread(
            &text(&r[0]),
            r[1].as_i64().unwrap_or(0),
            &human(a.spread_window),
            bucket(a.spread_window),
            &now,
        ));
    }

    // Restarts: from the agents' heartbeats (their uptime goes back), and
    // for devices that send none, from SystemInformation snapshots (an
    // agent sends one when it starts).
    let since = time::ago(a.restart_window);
    let beats = store
        .read(
            "SELECT device, time, payload FROM events WHERE kind = 'Heartbeat' AND time >= $1 \
             ORDER BY device, time, event_id, item"
                .into(),
            vec![Param::Text(since.clone())],
        )
        .await?;
    let mut with_heartbeats = std::collections::BTreeSet::new();
    let mut rows = beats.rows.iter().peekable();
    while let Some(first) = rows.next() {
        let device = text(&first[0]);
        let mut uptimes = vec![heartbeat_uptime(&first[2])];
        while let Some(r) = rows.next_if(|r| text(&r[0]) == device) {
            uptimes.push(heartbeat_uptime(&r[2]));
        }
        let starts = fleet::heartbeat_starts(uptimes.into_iter().flatten());
        if starts >= u64::from(a.restarts) {
            out.push(fleet::agent_restarted(
                &device,
                starts as i64,
                "heartbeats",
                &human(a.restart_window),
                bucket(a.restart_window),
                &now,
            ));
        }
        with_heartbeats.insert(device);
    }
    let restarts = store
        .read(
            "SELECT device, COUNT(*) FROM events WHERE kind = 'SystemInformation' AND time >= $1 \
             GROUP BY device HAVING COUNT(*) >= $2 ORDER BY device"
                .into(),
            vec![Param::Text(since), Param::Int(a.restarts.into())],
        )
        .await?;
    for r in restarts.rows.iter().filter(|r| !with_heartbeats.contains(&text(&r[0]))) {
        out.push(fleet::agent_restarted(
            &text(&r[0]),
            r[1].as_i64().unwrap_or(0),
            "SystemInformation snapshots",
            &human(a.restart_window),
            bucket(a.restart_window),
            &now,
        ));
    }

    let failures = store
        .read(
            "SELECT address, COUNT(*) FROM broker_log WHERE event = 'auth-failure' AND time >= $1 \
             AND address IS NOT NULL GROUP BY address HAVING COUNT(*) >= $2 ORDER BY address"
                .into(),
            vec![Param::Text(time::ago(a.auth_window)), Param::Int(a.auth_failures.into())],
        )
        .await?;
    for r in &failures.rows {
        let (addr, n) = (text(&r[0]), r[1].as_i64().unwrap_or(0));
        out.push(fleet::alert(
            format!("hub-auth-failures:{addr}:{}", bucket(a.auth_window)),
            fleet::FLEET,
            "hub-auth-failures",
            "high",
            format!("{n} failed broker logins from {addr}"),
            format!(
                "The broker refused {n} connections from {addr} within {} (bad password or unknown user): \
                 someone is guessing credentials, or a device is misconfigured.",
                human(a.auth_window)
            ),
            &now,
            "broker",
            json!({ "address": addr, "failures": n }),
        ));
    }

    let storms = store
        .read(
            "SELECT client_id, COUNT(*) FROM broker_log WHERE event = 'connect' AND time >= $1 \
             AND client_id IS NOT NULL GROUP BY client_id HAVING COUNT(*) >= $2 ORDER BY client_id"
                .into(),
            vec![Param::Text(time::ago(a.storm_window)), Param::Int(a.storm_connects.into())],
        )
        .await?;
    for r in &storms.rows {
        let (client, n) = (text(&r[0]), r[1].as_i64().unwrap_or(0));
        out.push(fleet::alert(
            format!("device-connection-storm:{client}:{}", bucket(a.storm_window)),
            &client,
            "device-connection-storm",
            "medium",
            format!("{client} connected {n} times"),
            format!(
                "{client} connected to the broker {n} times within {}: it keeps losing its connection, or \
                 two devices share its client id and push each other off.",
                human(a.storm_window)
            ),
            &now,
            "broker",
            json!({ "client_id": client, "connects": n }),
        ));
    }

    let moved = store
        .read(
            "SELECT c.client_id, c.address, c.first_seen FROM broker_clients c WHERE EXISTS \
             (SELECT 1 FROM broker_clients o WHERE o.client_id = c.client_id AND o.address <> c.address \
             AND o.first_seen < c.first_seen) ORDER BY c.client_id, c.address"
                .into(),
            vec![],
        )
        .await?;
    for r in &moved.rows {
        let (client, addr, first) = (text(&r[0]), text(&r[1]), text(&r[2]));
        out.push(fleet::alert(
            format!("device-new-address:{client}:{addr}"),
            &client,
            "device-new-address",
            "medium",
            format!("{client} connected from a new address {addr}"),
            format!(
                "{client} connected from {addr} at {first}, an address it never used before: the device moved, \
                 or someone else uses its identity."
            ),
            &first,
            "broker",
            json!({ "client_id": client, "address": addr }),
        ));
    }
    Ok(out)
}

/// Runs [`detect`] every `a.interval` and stores what it finds.
pub async fn run<S: Store>(
    store: S,
    a: Analytics,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    sink: AlertSink,
) {
    let mut tick = tokio::time::interval(a.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match detect(&store, &a).await {
            Ok(alerts) if alerts.is_empty() => {}
            Ok(alerts) => match store.write(&Batch { alerts, ..Batch::default() }).await {
                Ok(w) => {
                    if w.alerts > 0 {
                        tracing::info!("fleet analytics raised {} alerts", w.alerts);
                    }
                    metrics.add_alerts(w.alerts);
                    publish(&sink, w.new_fleet_alerts);
                }
                Err(e) => tracing::warn!("storing fleet alerts: {e}"),
            },
            Err(e) => tracing::warn!("fleet analytics: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{rows::BrokerLogRow, sqlite::SqliteStore};

    fn settings() -> Analytics {
        let d = |s| crate::config::parse_duration(s).unwrap();
        Analytics {
            interval: d("1s"),
            silent_after: None,
            spread_devices: 2,
            spread_window: d("1h"),
            auth_failures: 5,
            auth_window: d("1m"),
            storm_connects: 10,
            storm_window: d("1m"),
            restarts: 3,
            restart_window: d("1h"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broker_log_detectors_over_the_tables() {
        let dir = std::env::temp_dir().join(format!("shrike-ws-analytics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir.join("w.db"), true).unwrap();
        let now = time::now();
        let mut log = Vec::new();
        let mut row = |event: &str, client: Option<&str>, addr: &str| {
            log.push(BrokerLogRow {
                id: format!("{}", log.len()),
                time: now.clone(),
                level: "N".into(),
                event: event.into(),
                client_id: client.map(str::to_owned),
                address: Some(addr.into()),
                line: String::new(),
            })
        };
        for _ in 0..5 {
            row("auth-failure", None, "10.9.9.9");
        }
        for _ in 0..4 {
            row("auth-failure", None, "10.1.1.1");
        }
        for _ in 0..10 {
            row("connect", Some("flappy"), "10.0.0.2");
        }
        row("connect", Some("mover"), "10.0.0.3");
        store.write(&Batch { broker_log: log, ..Batch::default() }).await.unwrap();
        // Later, from elsewhere.
        let moved = BrokerLogRow {
            id: "moved".into(),
            time: time::format(chrono::Utc::now() + chrono::Duration::seconds(1)),
            level: "N".into(),
            event: "connect".into(),
            client_id: Some("mover".into()),
            address: Some("10.7.7.7".into()),
            line: String::new(),
        };
        store.write(&Batch { broker_log: vec![moved], ..Batch::default() }).await.unwrap();
        let alerts = detect(&store, &settings()).await.unwrap();
        let about = |rule: &str| -> Vec<String> {
            alerts.iter().filter(|a| a.rule == rule).map(|a| format!("{} {}", a.device, a.title)).collect()
        };
        assert_eq!(about("hub-auth-failures"), vec!["(fleet) 5 failed broker logins from 10.9.9.9"]);
        assert_eq!(about("device-connection-storm"), vec!["flappy flappy connected 10 times"]);
        assert_eq!(about("device-new-address"), vec!["mover mover connected from a new address 10.7.7.7"]);
        // Stored once, however often the detectors run.
        for _ in 0..2 {
            let a = detect(&store, &settings()).await.unwrap();
            store.write(&Batch { alerts: a, ..Batch::default() }).await.unwrap();
        }
        let t = store.read("SELECT COUNT(*) FROM alerts".into(), vec![]).await.unwrap();
        assert_eq!(t.rows[0][0], serde_json::Value::from(3));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Heartbeats through the decoder into SQLite: the uptimes going back
    /// three times raise agent-restarted; a steady agent does not. Each new
    /// fleet alert comes back from the write once (what --publish-alerts sends).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restarts_from_heartbeats() {
        use shrike_common::schema::{self as sm, Event, MessageBuilder, Uuid};
        let dir = std::env::temp_dir().join(format!("shrike-ws-restarts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir.join("w.db"), true).unwrap();
        let beat = |uptime| sm::Heartbeat {
            uptime_seconds: uptime,
            interval_seconds: 60,
            configuration_sha256: None,
            extra_details: Default::default(),
        };
        let mut batch = Batch::default();
        for (device, uptimes) in
            [("flaky", vec![4000, 4060, 3, 63, 10, 70, 1]), ("steady", vec![4000, 4060, 4120])]
        {
            let mut b = MessageBuilder::new(Uuid::new_v4(), "0.1.0");
            b.push(&Event::new(uptimes.into_iter().map(beat).collect::<Vec<_>>())).unwrap();
            let body = b.finish().unwrap();
            let topic = format!("shrike/{device}/security");
            match crate::ingest::decode::decode("shrike/+/security", &topic, &body, &time::now(), 1 << 20) {
                crate::ingest::decode::Outcome::Accepted(d) => batch.decoded.push(*d),
                crate::ingest::decode::Outcome::Rejected(r) => panic!("rejected: {}", r.reason),
            }
        }
        let w = store.write(&batch).await.unwrap();
        let new: Vec<_> = w.new_fleet_alerts.iter().map(|a| a.rule.as_str()).collect();
        assert_eq!(new, ["new-device", "new-device"]);
        let alerts = detect(&store, &settings()).await.unwrap();
        let restarted: Vec<_> = alerts
            .iter()
            .filter(|a| a.rule == "agent-restarted")
            .map(|a| (a.device.as_str(), &a.title))
            .collect();
        assert_eq!(restarted, [("flaky", &"Agent on flaky restarted 3 times".to_string())]);
        let w = store.write(&Batch { alerts: alerts.clone(), ..Batch::default() }).await.unwrap();
        assert!(w.new_fleet_alerts.iter().any(|a| a.rule == "agent-restarted"));
        let again = store.write(&Batch { alerts, ..Batch::default() }).await.unwrap();
        assert!(again.new_fleet_alerts.is_empty(), "stored once, so published once");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
