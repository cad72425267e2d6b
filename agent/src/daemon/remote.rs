//! Remote configuration applied to the running pipeline: what arrives on the
//! subscribed topics (a retained document and content topics on a generic
//! broker, the twin on IoT Hub) is checked whole (parsed, resolved over the
//! file, rules compiled) before anything changes, then applied like SIGHUP
//! (the probes stay), persisted in the state folder and reported back. A
//! rejected document changes nothing: it is logged, reported back and sent
//! as a `ConfigurationError` event.

use std::time::Duration;

use serde_json::{Value, json};
use shrike_common::schema as sm;

use super::{
    RunArgs,
    pipeline::Pipeline,
    settings::{RemoteSource, RunSettings},
};
use crate::{
    config::ConfigError,
    detect::{Detect, DetectError},
    events::Kind,
    publish::{mqtt::Incoming, spool::Priority},
    remote::{self, Applied, Files, Layer, Rejection, Remote, twin},
};

/// The remote configuration's state in the run loop.
pub(super) struct RemoteState {
    files: Files,
    /// Applied and persisted.
    applied: Remote,
    /// Its settings and content files, layered over the file (SIGHUP too).
    pub(super) layer: Option<Layer>,
    /// What was applied, parsed (for the report).
    parsed: Applied,
    /// The last rejection, reported until something is applied.
    rejected: Option<(String, Rejection)>,
    /// The twin's desired properties as last read and patched.
    desired: Value,
    /// Azure settings accepted without effect here.
    ignored: Vec<String>,
    next_rid: u64,
    get_rid: Option<u64>,
    /// Rejections not yet sent as events (a stored layer refused at start).
    pending_errors: Vec<(Rejection, String)>,
}

fn rejection_of(e: &ConfigError) -> Rejection {
    match e {
        ConfigError::Invalid { setting, reason } => Rejection::new(setting.clone(), reason.clone()),
        ConfigError::Detect(DetectError::Invalid { setting, reason }) => {
            Rejection::new(format!("detect.{setting}"), reason.clone())
        }
        ConfigError::Detect(DetectError::Rules(list)) => Rejection::new("sigma_rules", list.join("; ")),
        other => Rejection { setting: "config file".into(), conflict: true, message: other.to_string() },
    }
}

/// Settings and detection of a layer, checked whole.
fn build(args: &RunArgs, layer: &Layer) -> Result<(RunSettings, Detect), Rejection> {
    let s = RunSettings::resolve_layered(args, Some(layer)).map_err(|e| rejection_of(&e))?;
    s.collected().map_err(|e| rejection_of(&e))?;
    let d = Detect::new(&s.detect).map_err(|e| rejection_of(&ConfigError::Detect(e)))?;
    Ok((s, d))
}

impl RemoteState {
    /// The settings to start with: the file and flags with the last applied
    /// remote configuration over them (the gateway may boot offline). A
    /// stored layer that no longer applies is dropped, logged and reported.
    pub(super) fn start(args: &RunArgs) -> Result<(RunSettings, RemoteState), ConfigError> {
        let plain = RunSettings::resolve(args)?;
        let files = Files::new(&plain.state_dir);
        let mut state = RemoteState {
            applied: Remote::default(),
            layer: None,
            parsed: Applied::default(),
            rejected: None,
            desired: json!({}),
            ignored: Vec::new(),
            next_rid: 1,
            get_rid: None,
            pending_errors: Vec::new(),
            files,
        };
        let stored = state.files.load();
        if stored.is_empty() {
            return Ok((plain, state));
        }
        let tried = stored.parse().and_then(|parsed| {
            let layer = state.files.write_layer(&parsed, false).map_err(|e| {
                Rejection::new("remote configuration", format!("cannot write its content: {e}"))
            })?;
            let (s, _) = build(args, &layer)?;
            Ok((s, layer, parsed))
        });
        match tried {
            Ok((s, layer, parsed)) => {
                tracing::info!(
                    file = %state.files.dir.display(),
                    "starting with the last applied remote configuration"
                );
                state.applied = stored;
                state.layer = Some(layer);
                state.parsed = parsed;
                Ok((s, state))
            }
            Err(r) => {
                tracing::error!(
                    "the stored remote configuration no longer applies, starting without it: {r}"
                );
                state.pending_errors.push((r, "the config file and flags".into()));
                Ok((plain, state))
            }
        }
    }

    /// The Heartbeat event: uptime, when the next is due, the remote
    /// configuration applied.
    pub(super) fn heartbeat(&self, uptime: Duration, interval: Duration) -> sm::Event {
        let mut extra = sm::ExtraDetails::new();
        extra.insert("AgentVersion".into(), crate::VERSION.into());
        sm::Event::new(sm::Heartbeat {
            uptime_seconds: uptime.as_secs(),
            interval_seconds: interval.as_secs(),
            configuration_sha256: self.parsed.document.as_ref().map(|d| d.sha256.clone()),
            extra_details: extra,
        })
    }

    /// ConfigurationError events waiting since the start.
    pub(super) fn flush_pending(&mut self, pipe: &mut Pipeline) {
        for (r, used) in std::mem::take(&mut self.pending_errors) {
            push_error(pipe, &r, &used);
        }
    }

    /// A message on a subscribed topic (or new subscriptions).
    pub(super) async fn handle(
        &mut self,
        msg: Incoming,
        pipe: &mut Pipeline,
        args: &RunArgs,
        ebpf: &mut aya::Ebpf,
    ) {
        let source = pipe.settings.remote.clone();
        let (topic, payload) = match msg {
            Incoming::Subscribed => {
                match source {
                    // The twin is not retained: read it at every connection.
                    RemoteSource::Twin => {
                        let rid = self.rid();
                        self.get_rid = Some(rid);
                        publish(pipe, &twin::get_topic(rid), Vec::new(), false);
                    }
                    RemoteSource::Topics(_) if !self.applied.is_empty() => self.report(pipe),
                    _ => {}
                }
                return;
            }
            Incoming::Message { topic, payload, .. } => (topic, payload),
        };
        let mut candidate = self.applied.clone();
        let what: Result<String, Rejection> = match &source {
            RemoteSource::Off => return,
            RemoteSource::Topics(t) if topic == t.config => {
                if payload.is_empty() {
                    candidate.document = None;
                    Ok("document removed".into())
                } else {
                    remote::parse_document(&payload).map(|d| {
                        candidate.document = Some(String::from_utf8_lossy(&payload).into_owned());
                        format!("document sha256 {}", &d.sha256[..16])
                    })
                }
            }
            RemoteSource::Topics(t) if topic == t.sigma || topic == t.ioc => {
                let sigma = topic == t.sigma;
                let name = if sigma { "sigma_rules" } else { "ioc_list" };
                let slot = if sigma { &mut candidate.sigma_topic } else { &mut candidate.ioc_topic };
                if payload.is_empty() {
                    *slot = None;
                    Ok(format!("{name} removed"))
                } else {
                    remote::parse_content(name, &payload).map(|text| {
                        *slot = Some(text);
                        format!("{name} sha256 {}", &remote::sha256_hex(&payload)[..16])
                    })
                }
            }
            RemoteSource::Topics(_) => return,
            RemoteSource::Twin => match twin::classify(&topic) {
                Some(twin::TwinTopic::Response { status: 200, rid }) if rid == self.get_rid => {
                    self.get_rid = None;
                    match serde_json::from_slice::<Value>(&payload) {
                        Ok(v) => {
                            self.desired = v.get("desired").cloned().unwrap_or_else(|| json!({}));
                            self.twin_document(&mut candidate)
                        }
                        Err(e) => Err(Rejection::new("twin", format!("not JSON: {e}"))),
                    }
                }
                Some(twin::TwinTopic::Response { status, rid }) => {
                    if status >= 300 {
                        tracing::warn!(status, ?rid, "IoT Hub refused a twin request");
                    }
                    return;
                }
                Some(twin::TwinTopic::DesiredPatch) => match serde_json::from_slice::<Value>(&payload) {
                    Ok(patch) if patch.is_object() => {
                        twin::merge_patch(&mut self.desired, &patch);
                        self.twin_document(&mut candidate)
                    }
                    Ok(_) => Err(Rejection::new("twin", "a desired patch that is not an object")),
                    Err(e) => Err(Rejection::new("twin", format!("not JSON: {e}"))),
                },
                None => return,
            },
        };
        let what = match what {
            Ok(w) => w,
            Err(r) => {
                self.reject(pipe, &topic, &payload, r);
                return;
            }
        };
        if candidate == self.applied {
            // A retained document seen again (a new connection): nothing
            // changes, the report is sent again (the last one may be lost).
            self.report(pipe);
            return;
        }
        match self.apply(candidate, pipe, args, ebpf).await {
            Ok(()) => {
                tracing::info!(topic = %topic, "remote configuration applied ({what})");
                self.rejected = None;
            }
            Err(r) => self.reject(pipe, &topic, &payload, r),
        }
        self.report(pipe);
    }

    fn twin_document(&mut self, candidate: &mut Remote) -> Result<String, Rejection> {
        let (doc, ignored) = twin::to_document(&self.desired)?;
        remote::parse_document(&doc)?;
        self.ignored = ignored;
        let version = self.desired.get("$version").and_then(Value::as_u64);
        candidate.document = Some(String::from_utf8_lossy(&doc).into_owned());
        Ok(format!("twin desired $version {}", version.map_or("?".into(), |v| v.to_string())))
    }

    fn rid(&mut self) -> u64 {
        self.next_rid += 1;
        self.next_rid
    }

    /// Checks the candidate whole, then applies it in place.
    async fn apply(
        &mut self,
        candidate: Remote,
        pipe: &mut Pipeline,
        args: &RunArgs,
        ebpf: &mut aya::Ebpf,
    ) -> Result<(), Rejection> {
        let io = |e: std::io::Error| Rejection::new("remote configuration", format!("state folder: {e}"));
        let parsed = candidate.parse()?;
        let staged = self.files.write_layer(&parsed, true).map_err(io)?;
        if let Err(r) = build(args, &staged) {
            self.files.discard_staging();
            return Err(r);
        }
        let layer = self.files.commit(&candidate, &parsed).map_err(io)?;
        // Same content, final paths (IoC lists are reloaded by path).
        let (new, detect) = build(args, &layer)?;
        pipe.detect.persist();
        pipe.replace_detect(detect, &new);
        pipe.apply_reload(new, ebpf).await;
        self.applied = candidate;
        self.parsed = parsed;
        self.layer = Some(layer);
        Ok(())
    }

    fn reject(&mut self, pipe: &mut Pipeline, topic: &str, payload: &[u8], r: Rejection) {
        let sha = remote::sha256_hex(payload);
        tracing::error!(
            topic = %topic,
            sha256 = %&sha[..16],
            "remote configuration rejected, the running settings stay: {r}"
        );
        let used = match &self.parsed.document {
            Some(d) => format!("the running configuration (remote document sha256 {})", &d.sha256[..16]),
            None if self.applied.is_empty() => "the config file and flags".into(),
            None => "the running configuration".into(),
        };
        push_error(pipe, &r, &used);
        self.rejected = Some((sha, r));
        self.report(pipe);
    }

    /// What runs, and the last rejection: retained on `.../reported` on a
    /// generic broker, reported properties on IoT Hub.
    fn report(&mut self, pipe: &mut Pipeline) {
        let report = self.report_value(pipe);
        match pipe.settings.remote.clone() {
            RemoteSource::Topics(t) => {
                publish(pipe, &t.reported, serde_json::to_vec(&report).unwrap_or_default(), true);
            }
            RemoteSource::Twin => {
                let body = json!({
                    twin::SHRIKE: report,
                    twin::AZURE_CONFIG: azure_reported(&pipe.settings),
                });
                let rid = self.rid();
                publish(
                    pipe,
                    &twin::reported_topic(rid),
                    serde_json::to_vec(&body).unwrap_or_default(),
                    false,
                );
            }
            RemoteSource::Off => {}
        }
    }

    fn report_value(&self, pipe: &Pipeline) -> Value {
        let content = |c: &Option<(String, &str)>| {
            c.as_ref().map(|(text, source)| {
                json!({"sha256": remote::sha256_hex(text.as_bytes()), "bytes": text.len(), "source": source})
            })
        };
        let doc = self.parsed.document.as_ref();
        let mut v = json!({
            "status": if self.rejected.is_some() { "rejected" } else { "applied" },
            "agent_version": crate::VERSION,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "applied": {
                "sha256": doc.map(|d| d.sha256.clone()),
                "version": doc.and_then(|d| d.version.clone()),
                "settings": doc.map(|d| Value::Object(d.settings.clone())),
                "sigma_rules": content(&self.parsed.sigma),
                "ioc_list": content(&self.parsed.ioc),
                "rules_loaded": pipe.detect.stats.rules_loaded,
            },
            "effective": effective(&pipe.settings),
        });
        if !self.ignored.is_empty() {
            v["ignored"] = json!(self.ignored);
        }
        if let Some((sha, r)) = &self.rejected {
            v["rejected"] = json!({
                "sha256": sha,
                "setting": r.setting,
                "error_type": format!("{:?}", r.error_type()),
                "message": r.message,
            });
        }
        v
    }
}

fn publish(pipe: &Pipeline, topic: &str, payload: Vec<u8>, retain: bool) {
    if let super::batches::Sink::Mqtt(p) = &pipe.sink {
        p.publish_control(topic, payload, retain);
    }
}

fn push_error(pipe: &mut Pipeline, r: &Rejection, used: &str) {
    let ev = sm::Event::new(sm::ConfigurationError {
        configuration_name: r.setting.clone(),
        error_type: r.error_type(),
        used_configuration: used.to_owned(),
        message: r.message.chars().take(2000).collect(),
        extra_details: Default::default(),
    });
    pipe.batches.push(Priority::High, ev, &mut pipe.sink);
}

/// A duration as the config file writes it.
pub(super) fn dur(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// ISO 8601, as the Azure agents' twin writes durations.
fn iso(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("PT{}S", d.as_secs()) } else { format!("PT{}S", d.as_secs_f64()) }
}

/// The settings in effect, for the report.
fn effective(s: &RunSettings) -> Value {
    let kinds = |f: &dyn Fn(Kind) -> Value| -> serde_json::Map<String, Value> {
        Kind::EVENTS.iter().map(|k| (k.name().to_owned(), f(*k))).collect()
    };
    json!({
        "high_interval": dur(s.high_interval),
        "low_interval": dur(s.low_interval),
        "snapshot_interval": dur(s.snapshot_interval),
        "health_interval": dur(s.health_interval),
        "heartbeat_interval": s.heartbeat_interval.map_or_else(|| "off".into(), dur),
        "max_message_size": s.max_message_size,
        "spool_size": s.spool_size,
        "priority": kinds(&|k| json!(s.priority[&k].name())),
        "aggregation": kinds(&|k| json!(s.aggregation[&k].map_or_else(|| "off".into(), dur))),
        "detect": s.detect.enabled,
    })
}

/// The Azure agent's settings as they are in effect, in its twin's form.
fn azure_reported(s: &RunSettings) -> Value {
    let prio = |k: Kind| {
        let p = s.priority[&k].name();
        let mut c = p.chars();
        let cap: String = c.next().map(|f| f.to_ascii_uppercase()).into_iter().chain(c).collect();
        json!({ "value": cap })
    };
    json!({
        "highPriorityMessageFrequency": {"value": iso(s.high_interval)},
        "lowPriorityMessageFrequency": {"value": iso(s.low_interval)},
        "snapshotFrequency": {"value": iso(s.snapshot_interval)},
        "maxLocalCacheSizeInBytes": {"value": s.spool_size},
        "maxMessageSizeInBytes": {"value": s.max_message_size},
        "eventPriorityProcessCreate": prio(Kind::Exec),
        "eventPriorityProcessTerminate": prio(Kind::Exit),
        "eventPriorityConnectionCreate": prio(Kind::Connect),
        "eventPriorityLogin": prio(Kind::Login),
    })
}
