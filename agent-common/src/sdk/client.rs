//! The blocking client: std only, no async runtime.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde::Serialize;

use super::{DEFAULT_SOCKET, Reply};
use crate::schema::{CustomItem, Uuid};

/// Why an event was not reported.
#[derive(Debug)]
pub enum SdkError {
    /// The socket (connect, write, read).
    Io(std::io::Error),
    /// The agent refused the event; its reason, naming the field.
    Rejected(String),
    /// The agent's answer was not a reply line (or the connection closed).
    BadReply(String),
}

impl std::fmt::Display for SdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdkError::Io(e) => write!(f, "shrike SDK socket: {e}"),
            SdkError::Rejected(why) => write!(f, "rejected by the agent: {why}"),
            SdkError::BadReply(r) => write!(f, "unexpected reply from the agent: {r}"),
        }
    }
}

impl std::error::Error for SdkError {}

impl From<std::io::Error> for SdkError {
    fn from(e: std::io::Error) -> SdkError {
        SdkError::Io(e)
    }
}

/// A connection to the agent's SDK socket. Each `send*` writes one line and
/// waits for its reply; keep the client to send many events.
///
/// ```no_run
/// use shrike_common::sdk::Client;
/// let mut client = Client::connect_default()?;
/// let id = client.send_custom("DoorOpened", [("Door", "cabinet".into()), ("Forced", true.into())])?;
/// println!("reported as {id}");
/// # Ok::<(), shrike_common::sdk::SdkError>(())
/// ```
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: String,
}

impl Client {
    /// Connects to the agent's socket at `path`. Replies are waited for at
    /// most 10 seconds (see [`Client::set_timeout`]).
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, SdkError> {
        let writer = UnixStream::connect(path)?;
        let reader = BufReader::new(writer.try_clone()?);
        let mut c = Client { writer, reader, line: String::new() };
        c.set_timeout(Some(Duration::from_secs(10)))?;
        Ok(c)
    }

    /// Connects to [`DEFAULT_SOCKET`], or `$SHRIKE_SDK_SOCKET` when set.
    pub fn connect_default() -> Result<Client, SdkError> {
        match std::env::var_os("SHRIKE_SDK_SOCKET") {
            Some(p) => Client::connect(p),
            None => Client::connect(DEFAULT_SOCKET),
        }
    }

    /// How long a write or a reply may take (`None`: forever).
    pub fn set_timeout(&mut self, t: Option<Duration>) -> Result<(), SdkError> {
        self.writer.set_read_timeout(t)?;
        self.writer.set_write_timeout(t)?;
        Ok(())
    }

    /// Sends one line as is (it must not contain a newline) and returns the
    /// agent's reply, accepted or not.
    pub fn send_line(&mut self, line: &str) -> Result<Reply, SdkError> {
        if line.contains('\n') {
            return Err(SdkError::Rejected("a line must not contain a newline".into()));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.writer.write_all(&buf)?;
        self.read_reply()
    }

    /// Sends an event (any value that serializes to the event form: a
    /// `serde_json::Value`, a [`crate::schema::Event`] of an Azure kind...);
    /// returns its `Id`, or why it was refused.
    pub fn send<T: Serialize + ?Sized>(&mut self, event: &T) -> Result<Uuid, SdkError> {
        let line = serde_json::to_string(event).map_err(|e| SdkError::Rejected(format!("not JSON: {e}")))?;
        accepted(self.send_line(&line)?)
    }

    /// Sends an event of a custom kind (Triggered, Security) with one
    /// payload item of these fields.
    pub fn send_custom<K: Into<String>>(
        &mut self,
        name: &str,
        fields: impl IntoIterator<Item = (K, crate::schema::Scalar)>,
    ) -> Result<Uuid, SdkError> {
        let item = CustomItem {
            fields: fields.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            ..Default::default()
        };
        self.send(&custom_line(name, &[item]))
    }

    fn read_reply(&mut self) -> Result<Reply, SdkError> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(SdkError::BadReply("the agent closed the connection".into()));
        }
        parse_reply(&self.line)
    }
}

/// The line of a custom event (Name and Payload; the agent fills the rest).
pub(crate) fn custom_line(name: &str, items: &[CustomItem]) -> serde_json::Value {
    serde_json::json!({ "Name": name, "Payload": items })
}

pub(crate) fn parse_reply(line: &str) -> Result<Reply, SdkError> {
    serde_json::from_str(line.trim_end()).map_err(|_| SdkError::BadReply(line.trim_end().to_owned()))
}

pub(crate) fn accepted(reply: Reply) -> Result<Uuid, SdkError> {
    match reply {
        Reply { ok: true, id: Some(id), .. } => {
            Uuid::try_parse(&id).map_err(|_| SdkError::BadReply(format!("id {id:?} is not a GUID")))
        }
        Reply { error, .. } => Err(SdkError::Rejected(error.unwrap_or_else(|| "no reason given".into()))),
    }
}
