//! Custom kinds: events another program on the gateway reports through the
//! SDK under a `Name` of its own (`DoorOpened`, `FirmwareUpdateRejected`...).
//!
//! Same event form as every kind (`Id`, timestamps, `Category`, `EventType`,
//! `IsEmpty`, `PayloadSchemaVersion` "1.0", `Payload`), with payload items
//! that are flat objects of strings, numbers and booleans, plus
//! `ExtraDetails` (string to string) like every kind. Neither Azure nor
//! Shrike knows these kinds, so they travel in messages of their own
//! ([`Family::Custom`], `message-custom.schema.json`).
//!
//! A custom `Name` starts with an upper-case ASCII letter (PascalCase, like
//! the published kinds), then up to 63 letters, digits, `_`, `.` or `-`, and
//! is none of the names in [`Kind::ALL`] (those are validated as their kind).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Serialize, Serializer, ser::SerializeMap, ser::SerializeStruct};

use super::{
    Category, EventType, ExtraDetails, Family, Kind, PAYLOAD_SCHEMA_VERSION, Uuid, format_local, format_utc,
};

/// Longest custom `Name`.
pub const MAX_NAME_LEN: usize = 64;
/// Longest field name in a custom payload item.
pub const MAX_FIELD_NAME_LEN: usize = 128;

/// One value of a custom payload item.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Str(String),
    /// Kept as written (integer or float), never rounded.
    Number(serde_json::Number),
    Bool(bool),
}

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Str(v) => s.serialize_str(v),
            Scalar::Number(n) => n.serialize(s),
            Scalar::Bool(b) => s.serialize_bool(*b),
        }
    }
}

impl From<&str> for Scalar {
    fn from(v: &str) -> Scalar {
        Scalar::Str(v.to_owned())
    }
}

impl From<String> for Scalar {
    fn from(v: String) -> Scalar {
        Scalar::Str(v)
    }
}

impl From<bool> for Scalar {
    fn from(v: bool) -> Scalar {
        Scalar::Bool(v)
    }
}

impl From<i64> for Scalar {
    fn from(v: i64) -> Scalar {
        Scalar::Number(v.into())
    }
}

impl From<u64> for Scalar {
    fn from(v: u64) -> Scalar {
        Scalar::Number(v.into())
    }
}

/// One payload item of a custom kind: its fields (sorted by name) and
/// `ExtraDetails`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CustomItem {
    pub fields: BTreeMap<String, Scalar>,
    pub extra_details: ExtraDetails,
}

impl Serialize for CustomItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let extra = usize::from(!self.extra_details.is_empty());
        let mut m = s.serialize_map(Some(self.fields.len() + extra))?;
        for (k, v) in &self.fields {
            m.serialize_entry(k, v)?;
        }
        if extra == 1 {
            m.serialize_entry("ExtraDetails", &self.extra_details)?;
        }
        m.end()
    }
}

/// An event of a custom kind.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomEvent {
    pub id: Uuid,
    pub timestamp_local: DateTime<FixedOffset>,
    pub timestamp_utc: DateTime<Utc>,
    /// Checked by [`check_custom_name`].
    pub name: String,
    pub category: Category,
    pub event_type: EventType,
    pub items: Vec<CustomItem>,
}

impl CustomEvent {
    /// Always [`Family::Custom`].
    pub fn family(&self) -> Family {
        Family::Custom
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Serialize for CustomEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Event", 9)?;
        st.serialize_field("Id", &self.id)?;
        st.serialize_field("TimestampLocal", &format_local(&self.timestamp_local))?;
        st.serialize_field("TimestampUTC", &format_utc(&self.timestamp_utc))?;
        st.serialize_field("Category", &self.category)?;
        st.serialize_field("Name", &self.name)?;
        st.serialize_field("EventType", &self.event_type)?;
        st.serialize_field("IsEmpty", &self.is_empty())?;
        st.serialize_field("PayloadSchemaVersion", PAYLOAD_SCHEMA_VERSION)?;
        st.serialize_field("Payload", &self.items)?;
        st.end()
    }
}

/// Whether `name` can be a custom kind's `Name`; the error says why not.
pub fn check_custom_name(name: &str) -> Result<(), String> {
    if Kind::from_name(name).is_some() {
        return Err(format!("Name {name:?} is a kind Shrike knows, not a custom one"));
    }
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("Name is empty".into()),
        Some(c) if !c.is_ascii_uppercase() => {
            return Err(format!("Name {name:?} must start with an upper-case letter A-Z"));
        }
        Some(_) => {}
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("Name is {} bytes long, at most {MAX_NAME_LEN}", name.len()));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!("Name {name:?} has {c:?}: letters, digits, '_', '.' and '-' only"));
    }
    Ok(())
}
