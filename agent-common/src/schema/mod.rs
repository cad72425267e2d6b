//! The security message SDK (feature `schema`): the message Shrike sends to Azure
//! IoT Hub (Defender for IoT) or any MQTT broker, as typed Rust values, and the
//! builder other gateway programs use to produce the same messages.
//!
//! The format is the Azure IoT security agent's "security message", schema 1.0
//! (JSON Schemas published in the `Azure/Azure-IoT-Security` repository,
//! `security_message/schemas/*_v1_0.json`). Shrike's own JSON Schemas, with the
//! same constraints, are in `agent-common/schemas/` next to this crate.
//!
//! ```text
//! { "AgentVersion": "0.1.0", "AgentId": "<GUID>", "MessageSchemaVersion": "1.0",
//!   "Events": [ { "Id": "<GUID>", "TimestampLocal": "2018-08-10T11:01:21.000+01:00",
//!                 "TimestampUTC": "2018-08-10T10:01:21.000Z", "Category": "Triggered",
//!                 "Name": "ProcessCreate", "EventType": "Security", "IsEmpty": false,
//!                 "PayloadSchemaVersion": "1.0", "Payload": [ { "Executable": ... } ] } ] }
//! ```
//!
//! # Kinds
//! Every event is of one [`Kind`]; its `Name`, `Category` and `EventType` follow
//! from the kind, and its `Payload` is a list of items of that kind's type
//! ([`ProcessCreate`], [`ConnectionCreate`]...). The Azure kinds are the 14 that
//! the published schema accepts. [`PrivilegeChange`] and [`Alert`] are **own
//! kinds** ([`Family::Own`]): Shrike's, in the same envelope, but unknown to
//! Azure. A message holds events of one [`Family`] only, so that a consumer that
//! knows only the Azure kinds never rejects (or drops) Azure events because an
//! own-kind event travels with them. [`MessageBuilder`] and [`Message::new`]
//! refuse to mix them; [`Message::segregate`] splits a list in two.
//!
//! Every payload item has `ExtraDetails`, a map of string to string for what the
//! kind has no field for (numbers go in as text).
//!
//! # Building a message
//! ```
//! use shrike_common::schema::{Event, MessageBuilder, ProcessCreate, Uuid};
//!
//! let agent_id = Uuid::new_v4(); // keep it stable for the installation
//! let exec = ProcessCreate {
//!     executable: "/usr/bin/curl".into(),
//!     process_id: 4242,
//!     parent_process_id: 4200,
//!     user_id: "1000".into(),
//!     user_name: Some("pi".into()),
//!     command_line: "curl http://example.com".into(),
//!     extra_details: [("ThreadId".to_string(), "4242".to_string())].into(),
//! };
//! let mut builder = MessageBuilder::new(agent_id, "1.0.0");
//! builder.push(&Event::new(exec)).expect("fits, and is of the message's family");
//! let json: Vec<u8> = builder.finish().expect("one event");
//! assert!(json.starts_with(br#"{"AgentVersion":"1.0.0","AgentId":""#));
//! ```
//!
//! # Aggregation
//! [`Aggregate`] merges repeated hits of the same thing into one payload item
//! whose `ExtraDetails` carry `HitCount`, `StartTimeLocal`, `StartTimeUtc`,
//! `EndTimeLocal` and `EndTimeUtc`; fields that differ between hits are zeroed
//! (see [`Merge`]).

mod aggregate;
mod custom;
mod event;
mod message;
mod payload;

use serde::{Deserialize, Serialize, Serializer};

pub use aggregate::{
    Aggregate, AggregateError, END_TIME_LOCAL, END_TIME_UTC, HIT_COUNT, MERGED_FIELDS, Merge,
    START_TIME_LOCAL, START_TIME_UTC,
};
pub use custom::{CustomEvent, CustomItem, MAX_FIELD_NAME_LEN, MAX_NAME_LEN, Scalar, check_custom_name};
pub use event::{Event, EventError, format_local, format_utc};
pub use message::{Message, MessageBuilder, MessageError, PushError};
pub use payload::*;

/// Re-exported so users of the SDK need no direct dependency for the types in
/// its signatures.
pub use chrono;
pub use uuid::{self, Uuid};

/// `MessageSchemaVersion` of every message.
pub const MESSAGE_SCHEMA_VERSION: &str = "1.0";
/// `PayloadSchemaVersion` of every event.
pub const PAYLOAD_SCHEMA_VERSION: &str = "1.0";

/// `ExtraDetails`: string to string, sorted by key.
pub type ExtraDetails = std::collections::BTreeMap<String, String>;

/// `Category` of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Category {
    /// Something happened (a process started...). Never empty.
    Triggered,
    /// A snapshot taken on a schedule (listening ports...). May be empty.
    Periodic,
}

/// `EventType` of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    Security,
    Operational,
    Diagnostic,
}

/// Which schema a kind belongs to. A message carries events of one family only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Kinds of the published Azure IoT security message schema.
    Azure,
    /// Shrike's own kinds ([`PrivilegeChange`], [`FileChange`], [`Alert`]): same envelope, not
    /// known to Azure.
    Own,
    /// Kinds of other programs, reported through the SDK under names of
    /// their own ([`CustomEvent`]): known to neither Azure nor Shrike.
    Custom,
}

/// A type of payload item: one per [`Kind`].
pub trait PayloadItem: Clone + Serialize + serde::de::DeserializeOwned + Merge + Into<Payload> {
    const KIND: Kind;
    fn extra_details(&self) -> &ExtraDetails;
    fn extra_details_mut(&mut self) -> &mut ExtraDetails;
    /// A payload of these items.
    fn into_payload(items: Vec<Self>) -> Payload;
}

macro_rules! kinds {
    ($($kind:ident => $category:ident, $event_type:ident, $family:ident;)*) => {
        /// The kind of an event: its `Name`, which fixes its `Category`,
        /// `EventType`, [`Family`] and payload type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($kind,)*
        }

        impl Kind {
            /// Every kind: the Azure ones, then the own ones.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            /// The event's `Name`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Kind::$kind => stringify!($kind),)*
                }
            }

            pub fn from_name(name: &str) -> Option<Kind> {
                match name {
                    $(stringify!($kind) => Some(Kind::$kind),)*
                    _ => None,
                }
            }

            pub const fn category(self) -> Category {
                match self {
                    $(Kind::$kind => Category::$category,)*
                }
            }

            pub const fn event_type(self) -> EventType {
                match self {
                    $(Kind::$kind => EventType::$event_type,)*
                }
            }

            pub const fn family(self) -> Family {
                match self {
                    $(Kind::$kind => Family::$family,)*
                }
            }
        }

        /// An event's `Payload`: items of one kind (the variant).
        #[derive(Clone, Debug, PartialEq)]
        pub enum Payload {
            $($kind(Vec<$kind>),)*
        }

        impl Payload {
            pub fn kind(&self) -> Kind {
                match self {
                    $(Payload::$kind(_) => Kind::$kind,)*
                }
            }

            /// Number of payload items.
            pub fn len(&self) -> usize {
                match self {
                    $(Payload::$kind(items) => items.len(),)*
                }
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// No items (an empty Periodic snapshot).
            pub fn empty(kind: Kind) -> Payload {
                match kind {
                    $(Kind::$kind => Payload::$kind(Vec::new()),)*
                }
            }

            pub(crate) fn from_json(kind: Kind, items: serde_json::Value) -> Result<Payload, serde_json::Error> {
                match kind {
                    $(Kind::$kind => serde_json::from_value(items).map(Payload::$kind),)*
                }
            }

            /// Like `from_json`, the error naming where it is
            /// (`[0].ProcessId: invalid type...`): the SDK's replies.
            pub(crate) fn from_json_at(kind: Kind, items: serde_json::Value, prefix: &str) -> Result<Payload, String> {
                let at = |e: serde_path_to_error::Error<serde_json::Error>| {
                    let path = e.path().to_string();
                    let inner = e.into_inner();
                    match path.as_str() {
                        "." => format!("{prefix}: {inner}"),
                        p if p.starts_with('[') => format!("{prefix}{p}: {inner}"),
                        p => format!("{prefix}.{p}: {inner}"),
                    }
                };
                match kind {
                    $(Kind::$kind => serde_path_to_error::deserialize(items).map(Payload::$kind).map_err(at),)*
                }
            }

            /// Calls `f` with each item's `ExtraDetails`.
            pub fn for_each_extra_details(&mut self, mut f: impl FnMut(&mut ExtraDetails)) {
                match self {
                    $(Payload::$kind(items) => items.iter_mut().for_each(|i| f(&mut i.extra_details)),)*
                }
            }
        }

        impl Serialize for Payload {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Payload::$kind(items) => items.serialize(s),)*
                }
            }
        }

        $(
            impl PayloadItem for $kind {
                const KIND: Kind = Kind::$kind;
                fn extra_details(&self) -> &ExtraDetails {
                    &self.extra_details
                }
                fn extra_details_mut(&mut self) -> &mut ExtraDetails {
                    &mut self.extra_details
                }
                fn into_payload(items: Vec<Self>) -> Payload {
                    Payload::$kind(items)
                }
            }

            impl From<$kind> for Payload {
                fn from(item: $kind) -> Payload {
                    Payload::$kind(vec![item])
                }
            }

            impl From<Vec<$kind>> for Payload {
                fn from(items: Vec<$kind>) -> Payload {
                    Payload::$kind(items)
                }
            }
        )*
    };
}

kinds! {
    ProcessCreate => Triggered, Security, Azure;
    ProcessTerminate => Triggered, Security, Azure;
    ConnectionCreate => Triggered, Security, Azure;
    Login => Triggered, Security, Azure;
    ListeningPorts => Periodic, Security, Azure;
    LocalUsers => Periodic, Security, Azure;
    SystemInformation => Periodic, Security, Azure;
    FirewallConfiguration => Periodic, Security, Azure;
    OSBaseline => Periodic, Security, Azure;
    ConnectedHardware => Periodic, Security, Azure;
    Diagnostic => Triggered, Diagnostic, Azure;
    ConfigurationError => Triggered, Operational, Azure;
    DroppedEventsStatistics => Periodic, Operational, Azure;
    MessageStatistics => Periodic, Operational, Azure;
    PrivilegeChange => Triggered, Security, Own;
    FileChange => Triggered, Security, Own;
    Alert => Triggered, Security, Own;
    Heartbeat => Periodic, Operational, Own;
}

impl Payload {
    /// Constraints of the published schema that the types alone do not enforce.
    pub(crate) fn check(&self) -> Result<(), EventError> {
        if let Payload::Login(items) = self {
            // The Login schema wants UserId or UserName (`anyOf`).
            if items.iter().any(|l| l.user_id.is_none() && l.user_name.is_none()) {
                return Err(EventError::LoginWithoutUser);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
