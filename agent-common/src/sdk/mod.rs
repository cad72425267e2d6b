//! The send-security-message SDK: other programs on the gateway report their
//! own security events through the agent, which validates, batches, spools and
//! publishes them with its own (and runs its detection over them).
//!
//! # Protocol
//! A Unix stream socket ([`DEFAULT_SOCKET`], `shrike run --sdk-socket`). The
//! client writes one JSON object a line, each an event in the
//! security-message event form; the agent answers each line with one line:
//!
//! ```text
//! > {"Name":"DoorOpened","Payload":[{"Door":"cabinet","Forced":true}]}
//! < {"ok":true,"id":"0f8fad5b-d9cb-469f-a165-70867728950e"}
//! > {"Name":"ProcessCreate","Payload":[{"Executable":"/bin/x","ProcessId":"1"}]}
//! < {"ok":false,"error":"Payload[0].ProcessId: invalid type: string \"1\", expected u32"}
//! ```
//!
//! - `Name` (required): an Azure kind (`ProcessCreate`, `Login`,
//!   `ConnectionCreate`...: the payload is validated against that kind's
//!   schema, unknown fields rejected), or a custom kind of the sender's own
//!   (see [`check_custom_name`]: starts with A-Z; payload items are flat
//!   objects of strings, numbers and booleans, plus `ExtraDetails`). Shrike's
//!   own kinds (`Alert`, `PrivilegeChange`, `FileChange`) are refused: a
//!   sender cannot forge the agent's alerts.
//! - `Payload` (required): the array of items.
//! - `EventType` (`Security`|`Operational`|`Diagnostic`) and `Category`
//!   (`Triggered`|`Periodic`): an Azure kind's are fixed (given, they must
//!   match); a custom kind's default to Security and Triggered.
//! - `PayloadSchemaVersion` "1.0", `IsEmpty`: checked when given.
//! - `Id`, `TimestampLocal`, `TimestampUTC`: filled in when missing (a
//!   fresh GUID, the time the agent read the line); one timestamp given
//!   gives the other.
//!
//! A line over [`MAX_LINE`] bytes, or that is not JSON, not an object, of a
//! wrong type, or with an unknown field, gets `{"ok":false,"error":...}`
//! naming the field; the connection stays open. The agent adds who sent the
//! event to every item's `ExtraDetails` (from the socket's peer credentials,
//! overwriting whatever the sender put there): [`SENDER_PID`],
//! [`SENDER_UID`], [`SENDER_GID`], [`SENDER_EXECUTABLE`].
//!
//! The clients: [`Client`] (feature `sdk`, blocking, std only) and
//! [`AsyncClient`] (feature `sdk-tokio`).

#[cfg(feature = "sdk")]
mod client;
#[cfg(feature = "sdk-tokio")]
mod tokio_client;

use chrono::{DateTime, FixedOffset, Local, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(feature = "sdk")]
pub use client::{Client, SdkError};
#[cfg(feature = "sdk-tokio")]
pub use tokio_client::AsyncClient;

use crate::schema::{
    Category, CustomEvent, CustomItem, Event, EventType, ExtraDetails, Family, Kind, MAX_FIELD_NAME_LEN,
    PAYLOAD_SCHEMA_VERSION, Payload, Scalar, Uuid, check_custom_name,
};

/// Where the agent listens by default.
pub const DEFAULT_SOCKET: &str = "/run/shrike/sdk.sock";
/// Longest line (newline excluded) the agent reads: 64 KiB.
pub const MAX_LINE: usize = 64 * 1024;

/// `ExtraDetails` keys the agent sets from the socket's peer credentials.
pub const SENDER_PID: &str = "SenderPid";
pub const SENDER_UID: &str = "SenderUid";
pub const SENDER_GID: &str = "SenderGid";
pub const SENDER_EXECUTABLE: &str = "SenderExecutable";

/// The top-level fields of a line.
const FIELDS: [&str; 9] = [
    "Name",
    "Payload",
    "EventType",
    "Category",
    "PayloadSchemaVersion",
    "IsEmpty",
    "Id",
    "TimestampLocal",
    "TimestampUTC",
];

/// An accepted event: of an Azure kind (typed, valid against its schema) or
/// of a custom kind.
#[derive(Clone, Debug, PartialEq)]
pub enum SdkEvent {
    Azure(Event),
    Custom(CustomEvent),
}

impl SdkEvent {
    pub fn id(&self) -> Uuid {
        match self {
            SdkEvent::Azure(e) => e.id,
            SdkEvent::Custom(e) => e.id,
        }
    }

    /// `Name`.
    pub fn name(&self) -> &str {
        match self {
            SdkEvent::Azure(e) => e.name(),
            SdkEvent::Custom(e) => &e.name,
        }
    }

    pub fn category(&self) -> Category {
        match self {
            SdkEvent::Azure(e) => e.category(),
            SdkEvent::Custom(e) => e.category,
        }
    }

    pub fn event_type(&self) -> EventType {
        match self {
            SdkEvent::Azure(e) => e.event_type(),
            SdkEvent::Custom(e) => e.event_type,
        }
    }

    pub fn timestamp_utc(&self) -> DateTime<Utc> {
        match self {
            SdkEvent::Azure(e) => e.timestamp_utc,
            SdkEvent::Custom(e) => e.timestamp_utc,
        }
    }

    /// The message family it travels in: Azure kinds with the agent's Azure
    /// events, custom kinds in messages of their own.
    pub fn family(&self) -> Family {
        match self {
            SdkEvent::Azure(e) => e.family(),
            SdkEvent::Custom(_) => Family::Custom,
        }
    }

    /// Number of payload items.
    pub fn len(&self) -> usize {
        match self {
            SdkEvent::Azure(e) => e.payload.len(),
            SdkEvent::Custom(e) => e.items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every payload item's `ExtraDetails`.
    pub fn for_each_extra_details(&mut self, mut f: impl FnMut(&mut ExtraDetails)) {
        match self {
            SdkEvent::Azure(e) => e.payload.for_each_extra_details(f),
            SdkEvent::Custom(e) => e.items.iter_mut().for_each(|i| f(&mut i.extra_details)),
        }
    }

    /// The payload items as JSON objects, as they go in the message.
    pub fn payload_json(&self) -> Vec<Map<String, Value>> {
        let v = match self {
            SdkEvent::Azure(e) => serde_json::to_value(&e.payload),
            SdkEvent::Custom(e) => serde_json::to_value(&e.items),
        };
        match v {
            Ok(Value::Array(items)) => items
                .into_iter()
                .filter_map(|i| match i {
                    Value::Object(m) => Some(m),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Serialize for SdkEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SdkEvent::Azure(e) => e.serialize(s),
            SdkEvent::Custom(e) => e.serialize(s),
        }
    }
}

/// The agent's answer to one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// The event's `Id` (accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What is wrong, naming the field (rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn accepted(id: Uuid) -> Reply {
        Reply { ok: true, id: Some(id.to_string()), error: None }
    }

    pub fn rejected(error: impl Into<String>) -> Reply {
        Reply { ok: false, id: None, error: Some(error.into()) }
    }

    /// The reply line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("a reply always serializes");
        out.push(b'\n');
        out
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(format!("{key}: expected a string, got {}", type_name(v))),
    }
}

fn parse_time(key: &str, s: &str) -> Result<DateTime<FixedOffset>, String> {
    if s.as_bytes().get(10) != Some(&b'T') {
        return Err(format!("{key}: {s:?} is not RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS.sss+hh:mm)"));
    }
    DateTime::parse_from_rfc3339(s).map_err(|e| format!("{key}: {s:?} is not RFC 3339 date-time: {e}"))
}

fn parse_enum<T: for<'de> Deserialize<'de>>(
    obj: &Map<String, Value>,
    key: &str,
    allowed: &str,
) -> Result<Option<T>, String> {
    match string(obj, key)? {
        None => Ok(None),
        Some(s) => serde_json::from_value(Value::String(s.to_owned()))
            .map(Some)
            .map_err(|_| format!("{key}: {s:?} is not one of {allowed}")),
    }
}

/// Reads one line (without its newline) as an SDK event; `now` stamps it
/// when it has no timestamp. The error is the reply's text, naming the field.
pub fn parse_line(line: &[u8], now: DateTime<Utc>) -> Result<SdkEvent, String> {
    if line.len() > MAX_LINE {
        return Err(format!("line too long: {} bytes, at most {MAX_LINE}", line.len()));
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err(format!("a line is one JSON object (an event), not {}", type_name(&value)));
    };
    parse_object(obj, now)
}

/// [`parse_line`] of an already parsed object.
pub fn parse_object(mut obj: Map<String, Value>, now: DateTime<Utc>) -> Result<SdkEvent, String> {
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field {k:?}: an event has {}", FIELDS.join(", ")));
    }
    let name = string(&obj, "Name")?.ok_or("Name: missing (the kind of event)")?.to_owned();
    let payload = match obj.remove("Payload") {
        Some(Value::Array(items)) => items,
        Some(v) => return Err(format!("Payload: expected an array of items, got {}", type_name(&v))),
        None => return Err("Payload: missing (an array of items)".into()),
    };
    let event_type: Option<EventType> = parse_enum(&obj, "EventType", "Security, Operational or Diagnostic")?;
    let category: Option<Category> = parse_enum(&obj, "Category", "Triggered or Periodic")?;
    if let Some(v) = string(&obj, "PayloadSchemaVersion")?
        && v != PAYLOAD_SCHEMA_VERSION
    {
        return Err(format!("PayloadSchemaVersion: {v:?} is not supported (\"{PAYLOAD_SCHEMA_VERSION}\")"));
    }
    let is_empty = match obj.get("IsEmpty") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => return Err(format!("IsEmpty: expected a boolean, got {}", type_name(v))),
    };
    if let Some(e) = is_empty
        && e != payload.is_empty()
    {
        return Err(format!("IsEmpty: {e} but Payload has {} items", payload.len()));
    }
    let id = match string(&obj, "Id")? {
        None => Uuid::new_v4(),
        Some(s) if s.len() == 36 => {
            Uuid::try_parse(s).map_err(|e| format!("Id: {s:?} is not a GUID: {e}"))?
        }
        Some(s) => return Err(format!("Id: {s:?} is not a 36-character GUID")),
    };
    let local = string(&obj, "TimestampLocal")?.map(|s| parse_time("TimestampLocal", s)).transpose()?;
    let utc = string(&obj, "TimestampUTC")?.map(|s| parse_time("TimestampUTC", s)).transpose()?;
    let (timestamp_local, timestamp_utc) = match (local, utc) {
        (Some(l), Some(u)) => (l, u.to_utc()),
        (Some(l), None) => (l, l.to_utc()),
        (None, Some(u)) => (u.to_utc().with_timezone(&Local).fixed_offset(), u.to_utc()),
        (None, None) => (now.with_timezone(&Local).fixed_offset(), now),
    };

    match Kind::from_name(&name) {
        Some(kind) if kind.family() != Family::Azure => Err(format!(
            "Name: {name:?} is a kind of Shrike's own: report an Azure kind or a Name of your own"
        )),
        Some(kind) => {
            if let Some(t) = event_type
                && t != kind.event_type()
            {
                return Err(format!("EventType: {name} events are {:?}, not {t:?}", kind.event_type()));
            }
            if let Some(c) = category
                && c != kind.category()
            {
                return Err(format!("Category: {name} events are {:?}, not {c:?}", kind.category()));
            }
            let payload = Payload::from_json_at(kind, Value::Array(payload), "Payload")?;
            let event = Event { id, timestamp_local, timestamp_utc, payload };
            event.validate().map_err(|e| format!("Payload: {e}"))?;
            Ok(SdkEvent::Azure(event))
        }
        None => {
            check_custom_name(&name).map_err(|e| format!("Name: {e}"))?;
            let category = category.unwrap_or(Category::Triggered);
            if category == Category::Triggered && payload.is_empty() {
                return Err(format!("Payload: a Triggered event ({name}) carries at least one item"));
            }
            let items =
                payload.into_iter().enumerate().map(|(i, v)| custom_item(i, v)).collect::<Result<_, _>>()?;
            Ok(SdkEvent::Custom(CustomEvent {
                id,
                timestamp_local,
                timestamp_utc,
                name,
                category,
                event_type: event_type.unwrap_or(EventType::Security),
                items,
            }))
        }
    }
}

fn custom_item(i: usize, v: Value) -> Result<CustomItem, String> {
    let Value::Object(obj) = v else {
        return Err(format!("Payload[{i}]: expected an object, got {}", type_name(&v)));
    };
    let mut item = CustomItem::default();
    for (k, v) in obj {
        if k.is_empty() || k.len() > MAX_FIELD_NAME_LEN {
            return Err(format!("Payload[{i}]: a field name is 1 to {MAX_FIELD_NAME_LEN} bytes long"));
        }
        if k == "ExtraDetails" {
            let Value::Object(extra) = v else {
                return Err(format!(
                    "Payload[{i}].ExtraDetails: expected an object of strings, got {}",
                    type_name(&v)
                ));
            };
            for (ek, ev) in extra {
                match ev {
                    Value::String(s) => {
                        item.extra_details.insert(ek, s);
                    }
                    other => {
                        return Err(format!(
                            "Payload[{i}].ExtraDetails.{ek}: expected a string, got {}",
                            type_name(&other)
                        ));
                    }
                }
            }
            continue;
        }
        let scalar = match v {
            Value::String(s) => Scalar::Str(s),
            Value::Number(n) => Scalar::Number(n),
            Value::Bool(b) => Scalar::Bool(b),
            other => {
                return Err(format!(
                    "Payload[{i}].{k}: a custom kind's values are strings, numbers or booleans, not {}",
                    type_name(&other)
                ));
            }
        };
        item.fields.insert(k, scalar);
    }
    Ok(item)
}

#[cfg(test)]
mod tests;
