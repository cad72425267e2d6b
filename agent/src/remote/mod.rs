//! Remote configuration from the hub: a retained JSON document on any MQTT
//! broker (`shrike/{client_id}/config`) or the IoT Hub twin
//! ([`twin`]), with the keys of the TOML config file, and detection content
//! (Sigma rules, an IoC list) inline or on a retained topic each.
//!
//! This module parses and checks what arrives (no I/O but the state
//! folder); `daemon::remote` applies it like SIGHUP. Layering: flags >
//! remote > file > defaults: the person at the gateway's command line wins
//! (a flag is a deliberate local override, e.g. while debugging), and the
//! fleet's document wins over the packaged file, which is the fleet's
//! baseline anyway.

pub mod twin;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::FileConfig;

/// A configuration document (inline content included) larger than this is
/// rejected unread.
pub const MAX_DOCUMENT: usize = 4 << 20;
/// Content on its own topic (Sigma rules, an IoC list), at most.
pub const MAX_CONTENT: usize = crate::publish::mqtt::MAX_INCOMING;

/// Keys of the config file a remote document may not set: paths and
/// identities of this machine (a document must not point the agent at a
/// local file, or move it to another hub and cut the fleet off), and the
/// remote configuration itself.
const LOCAL_ONLY: &[&str] = &[
    "state_dir",
    "hub",
    "connection_string_file",
    "client_id",
    "topic",
    "username",
    "password_file",
    "password_env",
    "ca_file",
    "client_cert",
    "client_key",
    "spool_dir",
    "agent_id_file",
    "remote_config",
    "metrics",
    // A path of this machine; the SDK's rates and timeouts may come remotely.
    "sdk_socket",
];
/// The same in `[detect]`: local files (pushed content travels inline or
/// on its own topic instead) and the watched paths (they take a restart).
const LOCAL_ONLY_DETECT: &[&str] =
    &["rules", "ioc", "policies", "credential_lists", "recommend_root", "allow_commands", "watch"];

/// Document keys that are not config-file keys.
const SIGMA_KEY: &str = "sigma_rules";
const IOC_KEY: &str = "ioc_list";
const VERSION_KEY: &str = "version";

/// Why a document was rejected, in the terms of the Azure
/// `ConfigurationError` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The setting (`priority.exec`), or `remote configuration` for the
    /// document as a whole.
    pub setting: String,
    pub conflict: bool,
    pub message: String,
}

impl Rejection {
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Rejection {
        Rejection { setting: setting.into(), conflict: false, message: message.into() }
    }

    pub fn error_type(&self) -> shrike_common::schema::ConfigurationErrorType {
        use shrike_common::schema::ConfigurationErrorType as T;
        if self.conflict { T::Conflict } else { T::TypeMismatch }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

const WHOLE: &str = "remote configuration";

/// A parsed, structurally valid document: settings with the config file's
/// keys, and inline content.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    /// Config-file keys (nulls removed): merged over the file.
    pub settings: Map<String, Value>,
    pub sigma: Option<String>,
    pub ioc: Option<String>,
    /// The sender's label for this version, reported back.
    pub version: Option<String>,
    /// SHA-256 of the document as received (hex).
    pub sha256: String,
}

/// Parses and checks a configuration document: size, UTF-8, JSON, an
/// object, no key the remote may not set, every key and value of the type
/// the config file takes. Values are checked further (ranges, durations,
/// rules) when the settings are resolved, before anything changes.
pub fn parse_document(bytes: &[u8]) -> Result<Document, Rejection> {
    if bytes.len() > MAX_DOCUMENT {
        return Err(Rejection::new(
            WHOLE,
            format!("{} bytes, over the {MAX_DOCUMENT}-byte limit", bytes.len()),
        ));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| Rejection::new(WHOLE, format!("not UTF-8 text: {e}")))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| Rejection::new(WHOLE, format!("not JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(Rejection::new(WHOLE, "not a JSON object"));
    };
    let mut text_key = |key: &str| -> Result<Option<String>, Rejection> {
        match map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Rejection::new(key, format!("expected a string, got {}", kind_of(&other)))),
        }
    };
    let sigma = text_key(SIGMA_KEY)?;
    let ioc = text_key(IOC_KEY)?;
    let version = text_key(VERSION_KEY)?;
    let settings = check_settings(map)?;
    Ok(Document { settings, sigma, ioc, version, sha256: sha256_hex(bytes) })
}

/// Nulls removed (a null means "not set here"); local-only keys refused;
/// each key deserialized on its own into the config file's types, so the
/// rejection names the setting.
pub fn check_settings(mut map: Map<String, Value>) -> Result<Map<String, Value>, Rejection> {
    strip_nulls(&mut map);
    for key in map.keys() {
        if LOCAL_ONLY.contains(&key.as_str()) {
            return Err(local_only(key));
        }
    }
    if let Some(Value::Object(d)) = map.get("detect") {
        for key in d.keys() {
            if LOCAL_ONLY_DETECT.contains(&key.as_str()) {
                return Err(local_only(&format!("detect.{key}")));
            }
        }
    }
    for (key, v) in &map {
        let one = |v: Value| {
            serde_json::from_value::<FileConfig>(Value::Object(Map::from_iter([(key.clone(), v)])))
        };
        if let Err(e) = one(v.clone()) {
            // Name the table's key that is wrong, where it is one (an
            // empty key is named as JSON writes it: found by fuzzing).
            let mut setting = if key.is_empty() { "\"\"".to_owned() } else { key.clone() };
            if let Value::Object(inner) = v {
                for (k, iv) in inner {
                    if one(Value::Object(Map::from_iter([(k.clone(), iv.clone())]))).is_err() {
                        setting = format!("{key}.{k}");
                        break;
                    }
                }
            }
            return Err(Rejection::new(setting, e.to_string()));
        }
    }
    Ok(map)
}

fn local_only(key: &str) -> Rejection {
    Rejection {
        setting: key.into(),
        conflict: true,
        message: "set on the device only (a local path, identity or hub), not remotely".into(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn strip_nulls(map: &mut Map<String, Value>) {
    map.retain(|_, v| !v.is_null());
    for v in map.values_mut() {
        if let Value::Object(m) = v {
            strip_nulls(m);
        }
    }
}

/// `over` merged into `base`: tables key by key, any other value replaces.
pub fn merge(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Content pushed on its own topic: UTF-8 text under the size limit.
pub fn parse_content(what: &str, bytes: &[u8]) -> Result<String, Rejection> {
    if bytes.len() > MAX_CONTENT {
        return Err(Rejection::new(
            what,
            format!("{} bytes, over the {MAX_CONTENT}-byte limit", bytes.len()),
        ));
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| Rejection::new(what, format!("not UTF-8 text: {e}")))
}

/// Everything remote that is applied: the document (or the twin's, made
/// into one) and the content of the content topics. What is persisted in
/// the state folder, so an offline restart starts with it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Remote {
    /// The configuration document as received (JSON), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// Sigma rules from the rules topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_topic: Option<String>,
    /// IoC list from the IoC topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ioc_topic: Option<String>,
}

/// The files of the remote state in the state folder.
pub struct Files {
    pub dir: PathBuf,
}

/// Content ready to apply: settings to layer and the content files' paths.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    pub settings: Map<String, Value>,
    pub sigma: Option<PathBuf>,
    pub ioc: Option<PathBuf>,
}

/// What was applied, for the reported document.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub document: Option<Document>,
    pub sigma: Option<(String, &'static str)>,
    pub ioc: Option<(String, &'static str)>,
}

impl Remote {
    pub fn is_empty(&self) -> bool {
        self.document.is_none() && self.sigma_topic.is_none() && self.ioc_topic.is_none()
    }

    /// Parsed: the document and which content applies (inline wins over
    /// its topic).
    pub fn parse(&self) -> Result<Applied, Rejection> {
        let document = self.document.as_deref().map(|d| parse_document(d.as_bytes())).transpose()?;
        let pick = |inline: Option<&String>, topic: &Option<String>| match (inline, topic) {
            (Some(i), _) => Some((i.clone(), "inline")),
            (None, Some(t)) => Some((t.clone(), "topic")),
            (None, None) => None,
        };
        let sigma = pick(document.as_ref().and_then(|d| d.sigma.as_ref()), &self.sigma_topic);
        let ioc = pick(document.as_ref().and_then(|d| d.ioc.as_ref()), &self.ioc_topic);
        Ok(Applied { document, sigma, ioc })
    }
}

impl Files {
    pub fn new(state_dir: &Path) -> Files {
        Files { dir: state_dir.join("remote") }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn sigma(&self, staging: bool) -> PathBuf {
        self.dir.join(if staging { "staging-sigma.yml" } else { "sigma.yml" })
    }

    pub fn ioc(&self, staging: bool) -> PathBuf {
        self.dir.join(if staging { "staging-ioc.txt" } else { "ioc.txt" })
    }

    /// The last applied remote state; empty when there is none or it cannot
    /// be read (logged).
    pub fn load(&self) -> Remote {
        match std::fs::read(self.state()) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %self.state().display(), "stored remote configuration unreadable: {e}");
                Remote::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Remote::default(),
            Err(e) => {
                tracing::warn!(file = %self.state().display(), "stored remote configuration unreadable: {e}");
                Remote::default()
            }
        }
    }

    /// Writes the content files (staging or final) and gives the layer
    /// that uses them.
    pub fn write_layer(&self, applied: &Applied, staging: bool) -> std::io::Result<Layer> {
        std::fs::create_dir_all(&self.dir)?;
        let mut layer = Layer {
            settings: applied.document.as_ref().map(|d| d.settings.clone()).unwrap_or_default(),
            ..Layer::default()
        };
        for (content, path, slot) in [
            (&applied.sigma, self.sigma(staging), &mut layer.sigma),
            (&applied.ioc, self.ioc(staging), &mut layer.ioc),
        ] {
            match content {
                Some((text, _)) => {
                    write_atomic(&path, text.as_bytes())?;
                    *slot = Some(path);
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(layer)
    }

    /// Staging files into place: the applied content.
    pub fn commit(&self, remote: &Remote, applied: &Applied) -> std::io::Result<Layer> {
        let layer = self.write_layer(applied, false)?;
        let _ = std::fs::remove_file(self.sigma(true));
        let _ = std::fs::remove_file(self.ioc(true));
        let json = serde_json::to_vec(remote).map_err(std::io::Error::other)?;
        write_atomic(&self.state(), &json)?;
        Ok(layer)
    }

    pub fn discard_staging(&self) {
        let _ = std::fs::remove_file(self.sigma(true));
        let _ = std::fs::remove_file(self.ioc(true));
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The topics of the remote configuration on a generic broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub config: String,
    pub sigma: String,
    pub ioc: String,
    pub reported: String,
}

impl Topics {
    pub fn new(config: &str) -> Topics {
        Topics {
            config: config.to_owned(),
            sigma: format!("{config}/sigma"),
            ioc: format!("{config}/ioc"),
            reported: format!("{config}/reported"),
        }
    }

    pub fn subscriptions(&self) -> Vec<String> {
        vec![self.config.clone(), self.sigma.clone(), self.ioc.clone()]
    }
}

#[cfg(test)]
mod tests;
