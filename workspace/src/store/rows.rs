//! What one write puts in the tables: plain rows, built by the decoder and the
//! fleet detectors, written by either store in one transaction.

/// `messages`: one row per security message taken (its SHA-256 is the key:
/// a redelivered message is stored once; one whose every event is stored
/// already, by a copy with other bytes, is not kept either).
#[derive(Clone, Debug)]
pub struct MessageRow {
    pub id: String,
    pub device: String,
    pub agent_id: String,
    pub agent_version: String,
    pub topic: String,
    /// When the workspace took it (UTC, [`crate::time`] format).
    pub received: String,
    /// Bytes on the wire (compressed, when it was).
    pub size: i64,
    pub compressed: bool,
    pub events: i64,
}

/// `events`: one row per payload item of every event.
#[derive(Clone, Debug, Default)]
pub struct EventRow {
    /// The event's `Id` (GUID); `item` numbers its payload items from 0.
    pub event_id: String,
    pub item: i64,
    pub device: String,
    pub kind: String,
    pub category: String,
    pub time: String,
    pub hit_count: i64,
    pub process_id: Option<i64>,
    pub parent_process_id: Option<i64>,
    pub executable: Option<String>,
    pub command_line: Option<String>,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub remote_address: Option<String>,
    pub remote_port: Option<String>,
    pub local_address: Option<String>,
    pub local_port: Option<String>,
    pub direction: Option<String>,
    pub protocol: Option<String>,
    pub operation: Option<String>,
    pub path: Option<String>,
    pub result: Option<String>,
    /// The payload item, JSON text.
    pub payload: String,
    pub message_id: String,
}

/// `alerts`: an agent's `Alert` item, or a fleet detector's finding.
#[derive(Clone, Debug, Default)]
pub struct AlertRow {
    pub event_id: String,
    pub item: i64,
    pub device: String,
    pub rule: String,
    /// informational, low, medium, high, critical.
    pub severity: String,
    pub severity_level: i64,
    pub title: String,
    pub time: String,
    pub hit_count: i64,
    /// builtin, sigma (agents), fleet, broker (the workspace's detectors).
    pub source: Option<String>,
    pub description: Option<String>,
    pub tags: Option<String>,
    pub process_id: Option<i64>,
    pub executable: Option<String>,
    pub command_line: Option<String>,
    pub user_name: Option<String>,
    pub remote_address: Option<String>,
    /// The kind of the event that triggered it (agents' alerts).
    pub trigger_kind: Option<String>,
    pub payload: String,
}

/// `recommendations` (latest per device and check) and
/// `recommendation_history` (every result).
#[derive(Clone, Debug)]
pub struct RecommendationRow {
    pub device: String,
    pub check_id: String,
    pub result: String,
    pub severity: String,
    pub title: Option<String>,
    pub description: String,
    pub error: String,
    pub policy: Option<String>,
    pub time: String,
    pub event_id: String,
    pub item: i64,
    pub payload: String,
}

/// `snapshots`: the latest ListeningPorts, LocalUsers, FirewallConfiguration
/// or ConnectedHardware of a device.
#[derive(Clone, Debug)]
pub struct SnapshotRow {
    pub device: String,
    pub kind: String,
    pub time: String,
    pub items: i64,
    /// The payload items, a JSON array.
    pub payload: String,
    pub event_id: String,
}

/// What a message says about its device (`devices`).
#[derive(Clone, Debug)]
pub struct DeviceSeen {
    pub client_id: String,
    pub agent_id: String,
    pub agent_version: String,
    pub received: String,
    /// Messages and events (hit counts summed) this stands for.
    pub messages: i64,
    pub events: i64,
    /// The last SystemInformation item, JSON, with its host and OS.
    pub system_information: Option<SystemInfo>,
    /// The agent's heartbeat interval, when it sends heartbeats.
    pub heartbeat_seconds: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct SystemInfo {
    pub time: String,
    pub host_name: Option<String>,
    pub os: Option<String>,
    pub payload: String,
}

/// `rejected`: a message that did not decode, with why.
#[derive(Clone, Debug)]
pub struct RejectedRow {
    /// SHA-256 of the body: a redelivered bad message is kept once.
    pub id: String,
    pub time: String,
    pub topic: String,
    pub reason: String,
    pub size: i64,
    /// The body as text (invalid UTF-8 as `\xNN`), cut at 64 KiB.
    pub body: String,
}

/// `broker_log`: a line of the broker's own log ($SYS/broker/log/#) that
/// the detectors use (connects, disconnects, authentication failures).
#[derive(Clone, Debug)]
pub struct BrokerLogRow {
    pub id: String,
    pub time: String,
    pub level: String,
    pub event: String,
    pub client_id: Option<String>,
    pub address: Option<String>,
    pub line: String,
}

/// A decoded message and everything it yields.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub message: MessageRow,
    pub device: DeviceSeen,
    pub events: Vec<EventRow>,
    pub alerts: Vec<AlertRow>,
    pub recommendations: Vec<RecommendationRow>,
    pub snapshots: Vec<SnapshotRow>,
    /// Items of DroppedEventsStatistics with drops (loss-reported).
    pub losses: Vec<(String, i64)>,
}

/// One transaction's worth.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub decoded: Vec<Decoded>,
    pub rejected: Vec<RejectedRow>,
    /// The workspace's own alerts (fleet and broker-log detectors).
    pub alerts: Vec<AlertRow>,
    pub broker_log: Vec<BrokerLogRow>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.decoded.is_empty()
            && self.rejected.is_empty()
            && self.alerts.is_empty()
            && self.broker_log.is_empty()
    }
}

/// What a write did.
#[derive(Clone, Debug, Default)]
pub struct Written {
    pub messages: u64,
    /// Messages already stored (a redelivery): skipped whole.
    pub duplicates: u64,
    /// Of those, messages with other bytes whose events were all stored
    /// already (the same events sent again in another envelope).
    pub resent: u64,
    pub events: u64,
    pub alerts: u64,
    pub rejected: u64,
    /// Devices seen for the first time (new-device alerts raised).
    pub new_devices: u64,
    /// Fleet and broker alerts (`source` fleet or broker) this write stored
    /// for the first time: only the process that stored one publishes it
    /// (`--publish-alerts`), so each is published once.
    pub new_fleet_alerts: Vec<AlertRow>,
}

impl AlertRow {
    /// Raised by the workspace (a fleet or broker-log detector), not by an agent.
    pub fn is_fleet(&self) -> bool {
        matches!(self.source.as_deref(), Some("fleet" | "broker"))
    }
}

pub fn severity_level(s: &str) -> i64 {
    match s {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}
