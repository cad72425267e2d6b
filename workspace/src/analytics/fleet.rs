//! Fleet detectors: what no single agent can see. Each alert has an id made
//! of its rule and what it is about (`device-silent:gw-17:<last seen>`), so
//! that every workspace process may run the detectors and the alert is still
//! stored once (the alerts' unique key).

use serde_json::json;

use crate::store::rows::{AlertRow, Decoded, severity_level};

/// The `device` of alerts about the fleet as a whole.
pub const FLEET: &str = "(fleet)";

#[expect(clippy::too_many_arguments, reason = "one argument per column of the alert, all needed")]
pub fn alert(
    id: String,
    device: &str,
    rule: &str,
    severity: &str,
    title: String,
    description: String,
    time: &str,
    source: &str,
    details: serde_json::Value,
) -> AlertRow {
    let payload = json!({
        "RuleId": rule,
        "Severity": severity,
        "Title": title,
        "Description": description,
        "Source": source,
        "Details": details,
    });
    AlertRow {
        event_id: id,
        item: 0,
        device: device.to_owned(),
        rule: rule.to_owned(),
        severity: severity.to_owned(),
        severity_level: severity_level(severity),
        title,
        time: time.to_owned(),
        hit_count: 1,
        source: Some(source.to_owned()),
        description: Some(description),
        payload: payload.to_string(),
        ..AlertRow::default()
    }
}

/// `new-device`: the first message of a client id never seen before.
pub fn new_device(client_id: &str, agent_id: &str, time: &str) -> AlertRow {
    alert(
        format!("new-device:{client_id}"),
        client_id,
        "new-device",
        "low",
        format!("New device {client_id}"),
        format!("First message from {client_id} (agent id {agent_id}): a device joined the fleet."),
        time,
        "fleet",
        json!({ "client_id": client_id, "agent_id": agent_id }),
    )
}

/// `loss-reported`: the agent says it dropped events (kernel ring buffer
/// full, spool full...). Added to the message's own rows, so a redelivery
/// does not raise it twice.
pub fn loss_reported(d: &mut Decoded) {
    if d.losses.is_empty() {
        return;
    }
    let total: i64 = d.losses.iter().map(|(_, n)| n).sum();
    let queues: Vec<String> = d.losses.iter().map(|(q, n)| format!("{q}: {n}")).collect();
    let a = alert(
        format!("loss-reported:{}", d.message.id),
        &d.message.device,
        "loss-reported",
        "medium",
        format!("{} lost {total} events", d.message.device),
        format!(
            "The agent reported dropped events ({}): what it saw in that period is incomplete.",
            queues.join(", ")
        ),
        &d.message.received,
        "fleet",
        json!({ "dropped": total, "queues": queues }),
    );
    d.alerts.push(a);
}

/// `device-silent`: nothing from a device for `silent_after`; one alert per
/// silence (its id holds the last message's time).
pub fn device_silent(client_id: &str, last_seen: &str, silent_for: &str, now: &str) -> AlertRow {
    alert(
        format!("device-silent:{client_id}:{last_seen}"),
        client_id,
        "device-silent",
        "high",
        format!("Device {client_id} is silent"),
        format!(
            "No message from {client_id} since {last_seen} (more than {silent_for}): the agent may be stopped, \
             killed, or cut off from the broker."
        ),
        now,
        "fleet",
        json!({ "last_seen": last_seen, "silent_after": silent_for }),
    )
}

/// `fleet-spread`: the same rule fired on many devices within a window.
pub fn fleet_spread(rule: &str, devices: i64, window: &str, bucket: i64, now: &str) -> AlertRow {
    alert(
        format!("fleet-spread:{rule}:{bucket}"),
        FLEET,
        "fleet-spread",
        "high",
        format!("{rule} on {devices} devices"),
        format!("The rule {rule} fired on {devices} devices within {window}: something is spreading."),
        now,
        "fleet",
        json!({ "rule": rule, "devices": devices, "window": window }),
    )
}

/// How many times an agent started, from its heartbeats' (UptimeSeconds,
/// IntervalSeconds) in time order: a start is an uptime smaller than the
/// previous one (it went back to zero), or, for the first heartbeat seen,
/// an uptime within one interval (the first heartbeat after a start).
pub fn heartbeat_starts(beats: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    let mut prev: Option<u64> = None;
    let mut starts = 0;
    for (uptime, interval) in beats {
        let start = match prev {
            Some(p) => uptime < p,
            None => uptime <= interval,
        };
        starts += u64::from(start);
        prev = Some(uptime);
    }
    starts
}

/// `agent-restarted`: a device's agent started several times within a
/// window, seen in its heartbeats (uptime going back) or, for agents
/// without heartbeats, its SystemInformation snapshots (one at each start).
pub fn agent_restarted(
    device: &str,
    starts: i64,
    evidence: &str,
    window: &str,
    bucket: i64,
    now: &str,
) -> AlertRow {
    alert(
        format!("agent-restarted:{device}:{bucket}"),
        device,
        "agent-restarted",
        "medium",
        format!("Agent on {device} restarted {starts} times"),
        format!(
            "The agent on {device} started {starts} times within {window} (from its {evidence}): it is \
             restarting (crashing, or being stopped)."
        ),
        now,
        "fleet",
        json!({ "starts": starts, "window": window, "evidence": evidence }),
    )
}

#[cfg(test)]
mod tests {
    use super::heartbeat_starts;

    #[test]
    fn starts_from_heartbeat_uptimes() {
        // Running before the window: no start seen.
        assert_eq!(heartbeat_starts([(3600, 60), (3660, 60), (3720, 60)]), 0);
        // The first heartbeat after a start (uptime within one interval).
        assert_eq!(heartbeat_starts([(0, 60), (60, 60), (120, 60)]), 1);
        // Uptime going back: a restart each time, even when the first
        // heartbeat after it was lost (uptime already past one interval).
        assert_eq!(heartbeat_starts([(500, 60), (560, 60), (0, 60), (60, 60), (130, 60), (5, 60)]), 2);
        assert_eq!(heartbeat_starts([(10, 60), (5, 60), (2, 60)]), 3);
        // Equal uptimes (a redelivered heartbeat) are not a start.
        assert_eq!(heartbeat_starts([(900, 60), (900, 60)]), 0);
        assert_eq!(heartbeat_starts([]), 0);
    }
}
