//! The alert: one contract for every detector, every output.
//!
//! In `shrike events` an alert is one JSON line: the header of the event that
//! triggered it (time, pid, user, exe...), `"kind":"alert"`, the fields below,
//! and `"event"`: the triggering event exactly as `shrike events` prints it.
//! In `shrike run` it is an `Alert` message event (always high priority).

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

use crate::events::{Body, Event};

/// How urgent: Sigma's `level` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Sigma's `level` (and our config's spelling).
    pub fn from_name(s: &str) -> Option<Severity> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "informational" | "info" => Severity::Informational,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A detection that fired.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// Stable rule id: a built-in's name (`exec-from-tmp`) or a Sigma rule's
    /// `id` (its title when it has none).
    pub rule: Arc<str>,
    pub title: Arc<str>,
    pub severity: Severity,
    /// "builtin" or "sigma".
    pub source: &'static str,
    /// ATT&CK and other tags (`attack.t1059.004`).
    pub tags: Arc<[Arc<str>]>,
    /// What happened and why it matters (Sigma: the rule's description and
    /// its false positives).
    pub description: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub remediation: Arc<str>,
    /// Facts the detector adds (`"failures":"6"`, `"remote_host":"10.0.0.9"`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<&'static str, String>,
    /// The event that triggered it (for a correlation: the last one).
    pub event: Box<Event>,
}

impl Alert {
    /// The alert as an event of kind `alert`, with its triggering event's
    /// header (time, pid, user...).
    pub fn into_event(self) -> Event {
        let ev = &self.event;
        Event {
            time: ev.time,
            ktime_ns: ev.ktime_ns,
            pid: ev.pid,
            tid: ev.tid,
            ppid: ev.ppid,
            uid: ev.uid,
            gid: ev.gid,
            user: ev.user.clone(),
            comm: ev.comm.clone(),
            exe: ev.exe.clone(),
            body: Body::Alert(Box::new(self)),
        }
    }
}
