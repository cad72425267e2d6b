//! The envelope: `AgentVersion`, `AgentId`, `MessageSchemaVersion`, `Events`.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::SerializeStruct};

use super::{CustomEvent, Event, EventError, Family, Kind, MESSAGE_SCHEMA_VERSION, Uuid, event::parse_guid};

/// A security message: one or more events of one [`Family`].
///
/// Built with [`Message::new`] (or [`Message::segregate`]), or read with
/// [`Message::from_json`]; both check what the schema checks, so a `Message`
/// always serializes to a valid message. For building messages up to a size
/// limit without keeping the events, use [`MessageBuilder`].
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    agent_version: String,
    agent_id: Uuid,
    events: Vec<Event>,
}

/// Why events do not make a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// A message carries at least one event.
    NoEvents,
    /// Event `index` is not valid on its own.
    InvalidEvent { index: usize, error: EventError },
    /// Event `index` is of another family than the events before it: Azure
    /// kinds and own kinds never share a message.
    MixedFamilies { index: usize, family: Family, kind: Kind },
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::NoEvents => f.write_str("a security message needs at least one event"),
            MessageError::InvalidEvent { index, error } => write!(f, "event {index}: {error}"),
            MessageError::MixedFamilies { index, family, kind } => write!(
                f,
                "event {index} ({}) is of the {:?} family but the message holds {family:?} kinds; \
                 Azure kinds and own kinds go in separate messages",
                kind.name(),
                kind.family()
            ),
        }
    }
}

impl std::error::Error for MessageError {}

impl Message {
    /// A message of `events`, which must all be valid and of one family.
    pub fn new(
        agent_id: Uuid,
        agent_version: impl Into<String>,
        events: Vec<Event>,
    ) -> Result<Message, MessageError> {
        let Some(first) = events.first() else { return Err(MessageError::NoEvents) };
        let family = first.family();
        for (index, event) in events.iter().enumerate() {
            event.validate().map_err(|error| MessageError::InvalidEvent { index, error })?;
            if event.family() != family {
                return Err(MessageError::MixedFamilies { index, family, kind: event.kind() });
            }
        }
        Ok(Message { agent_version: agent_version.into(), agent_id, events })
    }

    /// Splits `events` by family: at most two messages, the Azure one first.
    /// Order within a family is kept.
    pub fn segregate(
        agent_id: Uuid,
        agent_version: &str,
        events: Vec<Event>,
    ) -> Result<Vec<Message>, MessageError> {
        if let Some((index, error)) =
            events.iter().enumerate().find_map(|(i, e)| e.validate().err().map(|e| (i, e)))
        {
            return Err(MessageError::InvalidEvent { index, error });
        }
        let (azure, own): (Vec<Event>, Vec<Event>) =
            events.into_iter().partition(|e| e.family() == Family::Azure);
        Ok([azure, own]
            .into_iter()
            .filter(|events| !events.is_empty())
            .map(|events| Message { agent_version: agent_version.to_owned(), agent_id, events })
            .collect())
    }

    pub fn agent_id(&self) -> Uuid {
        self.agent_id
    }

    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    pub fn family(&self) -> Family {
        self.events[0].family()
    }

    /// The message as compact JSON, UTF-8.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a message always serializes")
    }

    /// Reads and checks a message (as another program's SDK would send it).
    pub fn from_json(bytes: &[u8]) -> Result<Message, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Message", 4)?;
        st.serialize_field("AgentVersion", &self.agent_version)?;
        st.serialize_field("AgentId", &self.agent_id)?;
        st.serialize_field("MessageSchemaVersion", MESSAGE_SCHEMA_VERSION)?;
        st.serialize_field("Events", &self.events)?;
        st.end()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    #[serde(rename = "AgentVersion")]
    agent_version: String,
    #[serde(rename = "AgentId")]
    agent_id: String,
    #[serde(rename = "MessageSchemaVersion")]
    message_schema_version: String,
    #[serde(rename = "Events")]
    events: Vec<Event>,
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawMessage::deserialize(d)?;
        if raw.message_schema_version != MESSAGE_SCHEMA_VERSION {
            return Err(D::Error::custom(format!(
                "unsupported MessageSchemaVersion {:?} (want {MESSAGE_SCHEMA_VERSION:?})",
                raw.message_schema_version
            )));
        }
        let agent_id = parse_guid(&raw.agent_id).map_err(D::Error::custom)?;
        Message::new(agent_id, raw.agent_version, raw.events).map_err(D::Error::custom)
    }
}

/// Builds message JSON event by event, up to a size limit, without keeping the
/// events: each [`push`](MessageBuilder::push) serializes the event straight
/// into the message. The first event fixes the message's [`Family`]; an event of
/// the other family is refused ([`PushError::MixedFamilies`]), so keep one
/// builder per family.
///
/// ```
/// # use shrike_common::schema::*;
/// # let events: Vec<Event> = vec![];
/// # fn send(_: Vec<u8>) {}
/// let mut builder = MessageBuilder::new(Uuid::new_v4(), "1.0.0").with_max_bytes(4096);
/// for event in &events {
///     match builder.push(event) {
///         Ok(()) => {}
///         Err(PushError::Full { .. }) => {
///             send(builder.take().expect("a full builder holds events"));
///             builder.push(event).expect("fits in an empty message");
///         }
///         Err(e) => eprintln!("dropped: {e}"),
///     }
/// }
/// if let Some(json) = builder.finish() {
///     send(json);
/// }
/// ```
#[derive(Clone, Debug)]
pub struct MessageBuilder {
    /// `{"AgentVersion":...,"Events":[`
    head: Vec<u8>,
    buf: Vec<u8>,
    events: usize,
    family: Option<Family>,
    max_bytes: usize,
    scratch: Vec<u8>,
}

/// Why [`MessageBuilder::push`] refused an event (the builder is unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The event is not valid on its own.
    Invalid(EventError),
    /// The message holds events of `message`'s family; `event` is of the other.
    MixedFamilies { message: Family, event: Kind },
    /// The event would take the message to `size` bytes, over `max`:
    /// [`take`](MessageBuilder::take) the message and push the event again.
    Full { size: usize, max: usize },
    /// Even alone in a message, the event would make it `size` bytes, over `max`.
    TooLarge { size: usize, max: usize },
    /// A custom-kind event and a message of Azure or own kinds
    /// ([`MessageBuilder::push_custom`]).
    FamilyMismatch { message: Family, event: Family },
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Invalid(e) => write!(f, "invalid event: {e}"),
            PushError::MixedFamilies { message, event } => write!(
                f,
                "a {} event ({:?} family) cannot join a message of {message:?} kinds",
                event.name(),
                event.family()
            ),
            PushError::Full { size, max } => {
                write!(f, "message full: {size} bytes with this event, limit {max}")
            }
            PushError::TooLarge { size, max } => {
                write!(f, "event too large: a message with it alone is {size} bytes, limit {max}")
            }
            PushError::FamilyMismatch { message, event } => {
                write!(f, "an event of the {event:?} family cannot join a message of {message:?} kinds")
            }
        }
    }
}

impl std::error::Error for PushError {}

impl MessageBuilder {
    /// The default size limit: the Azure agents' `maxMessageSizeInBytes`
    /// default (200 KiB), under IoT Hub's 256 KiB per device-to-cloud message.
    pub const DEFAULT_MAX_BYTES: usize = 204_800;
    /// IoT Hub refuses device-to-cloud messages larger than this.
    pub const IOT_HUB_MAX_BYTES: usize = 256 * 1024;

    pub fn new(agent_id: Uuid, agent_version: &str) -> MessageBuilder {
        let mut head = Vec::with_capacity(96 + agent_version.len());
        head.extend_from_slice(br#"{"AgentVersion":"#);
        serde_json::to_writer(&mut head, agent_version).expect("writing to a Vec cannot fail");
        head.extend_from_slice(br#","AgentId":""#);
        head.extend_from_slice(agent_id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
        head.extend_from_slice(br#"","MessageSchemaVersion":""#);
        head.extend_from_slice(MESSAGE_SCHEMA_VERSION.as_bytes());
        head.extend_from_slice(br#"","Events":["#);
        MessageBuilder {
            buf: head.clone(),
            head,
            events: 0,
            family: None,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            scratch: Vec::new(),
        }
    }

    /// Sets the size limit of a message, in bytes of JSON.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> MessageBuilder {
        self.max_bytes = max_bytes;
        self
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Adds an event, if it is valid, of the message's family and fits.
    pub fn push(&mut self, event: &Event) -> Result<(), PushError> {
        event.validate().map_err(PushError::Invalid)?;
        match self.family {
            Some(family) if family != event.family() => {
                return Err(PushError::MixedFamilies { message: family, event: event.kind() });
            }
            _ => {}
        }
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, event).expect("writing to a Vec cannot fail");
        self.append(event.family())
    }

    /// Adds an event of a custom kind (SDK senders' own kinds): messages of
    /// custom kinds hold nothing else.
    pub fn push_custom(&mut self, event: &CustomEvent) -> Result<(), PushError> {
        if event.category == super::Category::Triggered && event.is_empty() {
            return Err(PushError::Invalid(EventError::EmptyCustomTriggered(event.name.clone())));
        }
        match self.family {
            Some(family) if family != Family::Custom => {
                return Err(PushError::FamilyMismatch { message: family, event: Family::Custom });
            }
            _ => {}
        }
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, event).expect("writing to a Vec cannot fail");
        self.append(Family::Custom)
    }

    /// The event in `scratch` into the message, if it fits.
    fn append(&mut self, family: Family) -> Result<(), PushError> {
        let sep = usize::from(self.events > 0);
        let size = self.buf.len() + sep + self.scratch.len() + 2;
        if size > self.max_bytes {
            return Err(if self.events == 0 {
                PushError::TooLarge { size, max: self.max_bytes }
            } else {
                PushError::Full { size, max: self.max_bytes }
            });
        }
        if sep == 1 {
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(&self.scratch);
        self.events += 1;
        self.family = Some(family);
        Ok(())
    }

    /// Bytes of the message if finished now.
    pub fn size(&self) -> usize {
        self.buf.len() + 2
    }

    /// Events in the message.
    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The family of the events pushed so far (`None` while empty).
    pub fn family(&self) -> Option<Family> {
        self.family
    }

    /// The message's JSON, and an empty builder (same agent, same limit) to
    /// go on with. `None` when no event was pushed: a message needs one.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if self.events == 0 {
            return None;
        }
        let mut out = std::mem::replace(&mut self.buf, self.head.clone());
        out.extend_from_slice(b"]}");
        self.events = 0;
        self.family = None;
        Some(out)
    }

    /// The message's JSON (`None` when no event was pushed).
    pub fn finish(mut self) -> Option<Vec<u8>> {
        self.take()
    }
}
