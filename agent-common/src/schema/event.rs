//! One event of a message: `Id`, timestamps, and a [`Payload`] from which
//! `Name`, `Category`, `EventType` and `IsEmpty` follow.

use chrono::{DateTime, FixedOffset, Local, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::SerializeStruct};

use super::{Category, EventType, Family, Kind, PAYLOAD_SCHEMA_VERSION, Payload, Uuid};

/// An event. Build it with [`Event::new`] (fresh `Id`, stamped now) or
/// [`Event::at`] (stamped when the thing happened).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `Id`: unique per event.
    pub id: Uuid,
    /// `TimestampLocal`: the same instant in the device's time zone.
    pub timestamp_local: DateTime<FixedOffset>,
    /// `TimestampUTC`.
    pub timestamp_utc: DateTime<Utc>,
    pub payload: Payload,
}

/// An event the schema would reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// A Triggered event must carry at least one payload item.
    EmptyTriggered(Kind),
    /// A Login item needs `UserId` or `UserName`.
    LoginWithoutUser,
    /// A Triggered custom-kind event (named) must carry a payload item.
    EmptyCustomTriggered(String),
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventError::EmptyTriggered(kind) => {
                write!(f, "a {} event is Triggered and must carry at least one payload item", kind.name())
            }
            EventError::LoginWithoutUser => f.write_str("a Login payload item needs UserId or UserName"),
            EventError::EmptyCustomTriggered(name) => {
                write!(f, "a {name} event is Triggered and must carry at least one payload item")
            }
        }
    }
}

impl std::error::Error for EventError {}

impl Event {
    /// A new event with a fresh `Id`, stamped now.
    pub fn new(payload: impl Into<Payload>) -> Event {
        Event::at(Utc::now(), payload)
    }

    /// A new event with a fresh `Id`, stamped `utc` (local time: the system's
    /// time zone at that instant). Timestamps keep milliseconds, as written.
    pub fn at(utc: DateTime<Utc>, payload: impl Into<Payload>) -> Event {
        let utc = utc.trunc_subsecs(3);
        Event {
            id: Uuid::new_v4(),
            timestamp_local: local_time(utc),
            timestamp_utc: utc,
            payload: payload.into(),
        }
    }

    /// Like [`Event::at`] with a given UTC offset for the local time (cheaper in
    /// a loop: look the offset up once).
    pub fn at_offset(utc: DateTime<Utc>, offset: FixedOffset, payload: impl Into<Payload>) -> Event {
        let utc = utc.trunc_subsecs(3);
        Event {
            id: Uuid::new_v4(),
            timestamp_local: utc.with_timezone(&offset),
            timestamp_utc: utc,
            payload: payload.into(),
        }
    }

    /// An empty snapshot (`IsEmpty` true): valid for Periodic kinds only.
    pub fn empty(kind: Kind) -> Event {
        Event::new(Payload::empty(kind))
    }

    pub fn kind(&self) -> Kind {
        self.payload.kind()
    }

    /// `Name`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    pub fn category(&self) -> Category {
        self.kind().category()
    }

    pub fn event_type(&self) -> EventType {
        self.kind().event_type()
    }

    pub fn family(&self) -> Family {
        self.kind().family()
    }

    /// `IsEmpty`: no payload items.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Checks what the types cannot: a Triggered event is never empty, a Login
    /// names its user.
    pub fn validate(&self) -> Result<(), EventError> {
        if self.category() == Category::Triggered && self.is_empty() {
            return Err(EventError::EmptyTriggered(self.kind()));
        }
        self.payload.check()
    }
}

/// The local time zone's view of `utc`.
pub(crate) fn local_time(utc: DateTime<Utc>) -> DateTime<FixedOffset> {
    utc.with_timezone(&Local).fixed_offset()
}

/// The `TimestampLocal` form: RFC 3339, milliseconds, numeric offset
/// (`2018-08-10T11:01:21.000+01:00`).
pub fn format_local(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// The `TimestampUTC` form: RFC 3339, milliseconds, `Z` (`2018-08-10T10:01:21.000Z`).
pub fn format_utc(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339 with `T` between date and time (JSON Schema's `date-time`; the
/// space RFC 3339 tolerates in prose is not accepted).
fn parse_timestamp(s: &str) -> Result<DateTime<FixedOffset>, String> {
    if s.as_bytes().get(10) != Some(&b'T') {
        return Err(format!("timestamp {s:?} is not RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS...)"));
    }
    DateTime::parse_from_rfc3339(s).map_err(|e| format!("timestamp {s:?} is not RFC 3339 date-time: {e}"))
}

/// A GUID in its 36-character form, as the schema wants.
pub(crate) fn parse_guid(s: &str) -> Result<Uuid, String> {
    if s.len() != 36 {
        return Err(format!("{s:?} is not a 36-character GUID"));
    }
    Uuid::try_parse(s).map_err(|e| format!("{s:?} is not a GUID: {e}"))
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kind = self.kind();
        let mut st = s.serialize_struct("Event", 9)?;
        st.serialize_field("Id", &self.id)?;
        st.serialize_field("TimestampLocal", &format_local(&self.timestamp_local))?;
        st.serialize_field("TimestampUTC", &format_utc(&self.timestamp_utc))?;
        st.serialize_field("Category", &kind.category())?;
        st.serialize_field("Name", kind.name())?;
        st.serialize_field("EventType", &kind.event_type())?;
        st.serialize_field("IsEmpty", &self.is_empty())?;
        st.serialize_field("PayloadSchemaVersion", PAYLOAD_SCHEMA_VERSION)?;
        st.serialize_field("Payload", &self.payload)?;
        st.end()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "TimestampLocal")]
    timestamp_local: String,
    #[serde(rename = "TimestampUTC")]
    timestamp_utc: String,
    #[serde(rename = "Category")]
    category: Category,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "EventType")]
    event_type: EventType,
    #[serde(rename = "IsEmpty")]
    is_empty: bool,
    #[serde(rename = "PayloadSchemaVersion")]
    payload_schema_version: String,
    #[serde(rename = "Payload")]
    payload: serde_json::Value,
}

/// Reading an event checks it as the schema would: a known `Name` whose
/// `Category` and `EventType` match, `IsEmpty` true exactly when the payload is
/// empty, items of that kind with no unknown field.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawEvent::deserialize(d)?;
        let kind = Kind::from_name(&raw.name)
            .ok_or_else(|| D::Error::custom(format!("unknown event Name {:?}", raw.name)))?;
        if raw.category != kind.category() || raw.event_type != kind.event_type() {
            return Err(D::Error::custom(format!(
                "{} events are {:?}/{:?}, not {:?}/{:?}",
                kind.name(),
                kind.category(),
                kind.event_type(),
                raw.category,
                raw.event_type
            )));
        }
        if raw.payload_schema_version != PAYLOAD_SCHEMA_VERSION {
            return Err(D::Error::custom(format!(
                "unsupported PayloadSchemaVersion {:?} (want {PAYLOAD_SCHEMA_VERSION:?})",
                raw.payload_schema_version
            )));
        }
        let payload = Payload::from_json(kind, raw.payload)
            .map_err(|e| D::Error::custom(format!("{} payload: {e}", kind.name())))?;
        if raw.is_empty != payload.is_empty() {
            return Err(D::Error::custom(format!(
                "IsEmpty is {} but the payload has {} items",
                raw.is_empty,
                payload.len()
            )));
        }
        let event = Event {
            id: parse_guid(&raw.id).map_err(D::Error::custom)?,
            timestamp_local: parse_timestamp(&raw.timestamp_local).map_err(D::Error::custom)?,
            timestamp_utc: parse_timestamp(&raw.timestamp_utc).map_err(D::Error::custom)?.to_utc(),
            payload,
        };
        event.validate().map_err(D::Error::custom)?;
        Ok(event)
    }
}
