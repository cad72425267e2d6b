//! The Azure IoT Hub twin: the desired properties made into a remote
//! document, and the twin topics (Microsoft's "Communicate with an IoT hub
//! using the MQTT protocol": GET on `$iothub/twin/GET/?$rid=N`, answers on
//! `$iothub/twin/res/STATUS/?$rid=N`, desired patches on
//! `$iothub/twin/PATCH/properties/desired/?$version=V`, reported patches to
//! `$iothub/twin/PATCH/properties/reported/?$rid=N`).
//!
//! Two objects of the desired properties configure Shrike:
//! `ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration`, the Azure IoT
//! security agent's (each setting as `{"value": X}`), so existing twins keep
//! working, and `shrike`, a document with the config file's keys (as on a
//! generic broker), which wins where both set something.

use serde_json::{Map, Value, json};

use super::Rejection;

pub const AZURE_CONFIG: &str = "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration";
pub const SHRIKE: &str = "shrike";

pub const SUBSCRIPTIONS: [&str; 2] = ["$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"];

pub fn get_topic(rid: u64) -> String {
    format!("$iothub/twin/GET/?$rid={rid}")
}

pub fn reported_topic(rid: u64) -> String {
    format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}")
}

/// A message on a twin topic.
#[derive(Debug, PartialEq, Eq)]
pub enum TwinTopic {
    /// An answer: status and request id.
    Response {
        status: u16,
        rid: Option<u64>,
    },
    DesiredPatch,
}

pub fn classify(topic: &str) -> Option<TwinTopic> {
    if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
        let (status, query) = rest.split_once('/').unwrap_or((rest, ""));
        let status = status.parse().ok()?;
        let rid = query
            .trim_start_matches('?')
            .split('&')
            .find_map(|kv| kv.strip_prefix("$rid="))
            .and_then(|v| v.parse().ok());
        return Some(TwinTopic::Response { status, rid });
    }
    topic.starts_with("$iothub/twin/PATCH/properties/desired/").then_some(TwinTopic::DesiredPatch)
}

/// A desired-properties patch applied to the desired properties held
/// (JSON merge patch, RFC 7396: null removes a key).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Azure event kinds and the Shrike kinds they set.
fn kinds_of(azure: &str) -> Option<&'static [&'static str]> {
    Some(match azure {
        "ProcessCreate" => &["exec"],
        "ProcessTerminate" => &["exit"],
        "ConnectionCreate" => &["connect", "accept"],
        "Login" => &["login"],
        "PrivilegeChange" => &["privilege"],
        "FileChange" => &["file"],
        _ => return None,
    })
}

/// Azure kinds Shrike accepts in a twin but sets no priority for: its
/// snapshots and operational events follow `snapshot_interval` and the low
/// queue.
const NOT_APPLICABLE: &[&str] = &[
    "SystemInformation",
    "ListeningPorts",
    "LocalUsers",
    "FirewallConfiguration",
    "OSBaseline",
    "Baseline",
    "ConnectedHardware",
    "Diagnostic",
    "Operational",
    "ProcessTerminate",
];

/// The desired properties as a remote document (the bytes are JSON: they
/// go through [`super::parse_document`] like a generic broker's), and the
/// Azure settings that have no effect here (reported back).
pub fn to_document(desired: &Value) -> Result<(Vec<u8>, Vec<String>), Rejection> {
    let mut doc = Map::new();
    let mut ignored = Vec::new();
    if let Some(cfg) = desired.get(AZURE_CONFIG).filter(|v| !v.is_null()) {
        let Value::Object(cfg) = cfg else {
            return Err(Rejection::new(AZURE_CONFIG, "not an object"));
        };
        azure_settings(cfg, &mut doc, &mut ignored)?;
    }
    if let Some(own) = desired.get(SHRIKE).filter(|v| !v.is_null()) {
        let Value::Object(own) = own else {
            return Err(Rejection::new(SHRIKE, "not an object"));
        };
        super::merge(&mut doc, own);
    }
    Ok((serde_json::to_vec(&Value::Object(doc)).unwrap_or_default(), ignored))
}

fn azure_settings(
    cfg: &Map<String, Value>,
    doc: &mut Map<String, Value>,
    ignored: &mut Vec<String>,
) -> Result<(), Rejection> {
    let mut priority = Map::new();
    let mut aggregation = Map::new();
    let mut agg_enabled: Vec<(&str, bool)> = Vec::new();
    for (key, wrapped) in cfg {
        let setting = format!("{AZURE_CONFIG}.{key}");
        let Some(v) = wrapped
            .as_object()
            .and_then(|o| o.get("value"))
            .filter(|_| wrapped.as_object().is_some_and(|o| o.len() == 1))
        else {
            return Err(Rejection::new(setting, "expected {\"value\": ...}"));
        };
        let text =
            || v.as_str().map(str::to_owned).ok_or_else(|| Rejection::new(&setting, "expected a string"));
        let number = || v.as_u64().ok_or_else(|| Rejection::new(&setting, "expected a whole number"));
        match key.as_str() {
            "highPriorityMessageFrequency" => {
                doc.insert("high_interval".into(), json!(text()?));
            }
            "lowPriorityMessageFrequency" => {
                doc.insert("low_interval".into(), json!(text()?));
            }
            "snapshotFrequency" => {
                doc.insert("snapshot_interval".into(), json!(text()?));
            }
            "maxLocalCacheSizeInBytes" => {
                doc.insert("spool_size".into(), json!(number()?));
            }
            "maxMessageSizeInBytes" => {
                doc.insert("max_message_size".into(), json!(number()?));
            }
            "hubResourceId" => {
                text()?;
                ignored.push(key.clone());
            }
            k if k.starts_with("baselineCustomChecks") => ignored.push(key.clone()),
            k => {
                let (prefix, kind) = ["eventPriority", "aggregationEnabled", "aggregationInterval"]
                    .iter()
                    .find_map(|p| k.strip_prefix(p).map(|kind| (*p, kind)))
                    .ok_or_else(|| Rejection::new(&setting, "unknown setting"))?;
                let Some(ours) = kinds_of(kind) else {
                    if NOT_APPLICABLE.contains(&kind) {
                        ignored.push(key.clone());
                        continue;
                    }
                    return Err(Rejection::new(&setting, format!("unknown event kind {kind:?}")));
                };
                match prefix {
                    "eventPriority" => {
                        let p = match text()?.as_str() {
                            "High" => "high",
                            "Low" => "low",
                            "Off" => "off",
                            other => {
                                return Err(Rejection::new(
                                    &setting,
                                    format!("{other:?}: expected High, Low or Off"),
                                ));
                            }
                        };
                        for k in ours {
                            priority.insert((*k).into(), json!(p));
                        }
                    }
                    "aggregationEnabled" => {
                        let on =
                            v.as_bool().ok_or_else(|| Rejection::new(&setting, "expected true or false"))?;
                        for k in ours {
                            agg_enabled.push((k, on));
                        }
                    }
                    _ => {
                        let iv = text()?;
                        for k in ours {
                            aggregation.insert((*k).into(), json!(iv));
                        }
                    }
                }
            }
        }
    }
    for (k, on) in agg_enabled {
        if !on {
            aggregation.insert(k.into(), json!("off"));
        } else if !aggregation.contains_key(k) {
            // The Azure agents' default aggregation interval.
            aggregation.insert(k.into(), json!("PT1H"));
        }
    }
    if !priority.is_empty() {
        doc.insert("priority".into(), Value::Object(priority));
    }
    if !aggregation.is_empty() {
        doc.insert("aggregation".into(), Value::Object(aggregation));
    }
    Ok(())
}
