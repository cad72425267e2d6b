//! The async client, on tokio (feature `sdk-tokio`).

use std::path::Path;

use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use super::{
    DEFAULT_SOCKET, Reply,
    client::{SdkError, accepted, custom_line, parse_reply},
};
use crate::schema::{CustomItem, Scalar, Uuid};

/// [`super::Client`]'s async twin: one line out, one reply back per call.
///
/// ```no_run
/// # async fn f() -> Result<(), shrike_common::sdk::SdkError> {
/// let mut client = shrike_common::sdk::AsyncClient::connect_default().await?;
/// let id = client.send_custom("DoorOpened", [("Door", "cabinet".into())]).await?;
/// # Ok(()) }
/// ```
pub struct AsyncClient {
    writer: OwnedWriteHalf,
    reader: BufReader<OwnedReadHalf>,
    line: String,
}

impl AsyncClient {
    pub async fn connect(path: impl AsRef<Path>) -> Result<AsyncClient, SdkError> {
        let (r, w) = UnixStream::connect(path).await?.into_split();
        Ok(AsyncClient { writer: w, reader: BufReader::new(r), line: String::new() })
    }

    /// [`DEFAULT_SOCKET`], or `$SHRIKE_SDK_SOCKET` when set.
    pub async fn connect_default() -> Result<AsyncClient, SdkError> {
        match std::env::var_os("SHRIKE_SDK_SOCKET") {
            Some(p) => AsyncClient::connect(p).await,
            None => AsyncClient::connect(DEFAULT_SOCKET).await,
        }
    }

    /// One line as is (no newline in it); the reply, accepted or not.
    pub async fn send_line(&mut self, line: &str) -> Result<Reply, SdkError> {
        if line.contains('\n') {
            return Err(SdkError::Rejected("a line must not contain a newline".into()));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.writer.write_all(&buf).await?;
        self.line.clear();
        if self.reader.read_line(&mut self.line).await? == 0 {
            return Err(SdkError::BadReply("the agent closed the connection".into()));
        }
        parse_reply(&self.line)
    }

    pub async fn send<T: Serialize + ?Sized>(&mut self, event: &T) -> Result<Uuid, SdkError> {
        let line = serde_json::to_string(event).map_err(|e| SdkError::Rejected(format!("not JSON: {e}")))?;
        accepted(self.send_line(&line).await?)
    }

    pub async fn send_custom<K: Into<String>>(
        &mut self,
        name: &str,
        fields: impl IntoIterator<Item = (K, Scalar)>,
    ) -> Result<Uuid, SdkError> {
        let item = CustomItem {
            fields: fields.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            ..Default::default()
        };
        self.send(&custom_line(name, &[item])).await
    }
}
