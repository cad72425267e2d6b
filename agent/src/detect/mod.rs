//! Detection: the pipeline stage between enrichment and aggregation that
//! turns events into alerts, on the gateway itself.
//!
//! Data in, alerts out (style.md, 12): every source is a [`Detector`] fed one
//! enriched [`Event`] at a time (and the time, for windows that close without
//! an event), returning [`Alert`]s; nothing here reads the clock or the
//! kernel, so each detector is tested with a recorded event list and a fake
//! clock. One module per source:
//! - [`sigma`]: Sigma rules (files given with `--rules` / `[detect] rules`),
//!   detection and correlation rules;
//! - [`builtin`]: stateful detectors a single-event rule cannot express
//!   (one file each: `exec-from-tmp`, `login-brute-force`, ...);
//! - [`ioc`]: threat-intelligence lists (`--ioc` / `[detect] ioc`):
//!   addresses, CIDRs, domains, executables' SHA-256 (hashed off the event
//!   path);
//! - [`baseline`]: a learnt profile of normal behaviour per executable
//!   (`--baseline-learn`, kept in the state folder), alerting on what is new.
//!
//! [`Detect`] runs them all and hands each alert back as an [`Event`] of kind
//! `alert` (the triggering event's header, the alert as its body), which
//! `shrike events` prints and `shrike run` sends as an `Alert` message event.

pub mod alert;
pub mod baseline;
pub mod builtin;
pub mod config;
pub mod ioc;
pub mod sigma;

use chrono::{DateTime, Utc};

pub use alert::{Alert, Severity};
pub use config::{DetectArgs, DetectConfig};

use crate::events::{Body, Event, Kind};

/// The kernel kinds detection looks at: their probes are attached whenever a
/// detector runs, even when they are not printed or published.
pub const DETECT_KINDS: [Kind; 9] = [
    Kind::Exec,
    Kind::Exit,
    Kind::Fork,
    Kind::Connect,
    Kind::Accept,
    Kind::Listen,
    Kind::Login,
    Kind::Privilege,
    Kind::File,
];

/// A source of alerts.
pub trait Detector: Send {
    /// Stable id of the detector (a built-in's rule id; "sigma" for the engine).
    fn id(&self) -> &'static str;
    /// The kinds it looks at (their probes are attached for it).
    fn kinds(&self) -> &'static [Kind] {
        &DETECT_KINDS
    }
    /// Looks at one enriched event; appends what it fires to `out`. Time is
    /// the event's own (`ev.time`), never the clock.
    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>);
    /// Adds what the detector learns about the event to it, before any
    /// detector observes it and before it is printed or published (the IoC
    /// detector's executable SHA-256). Must not block.
    fn annotate(&mut self, _ev: &mut Event) {}
    /// Writes the detector's own counters into the stage's (after it is
    /// built and at every tick).
    fn report(&self, _stats: &mut DetectStats) {}
    /// Called about once a second with the current time: expire state, fire
    /// alerts whose window closed without a further event.
    fn tick(&mut self, _now: DateTime<Utc>, _out: &mut Vec<Alert>) {}
    /// Writes what the detector learnt to disk (the baseline's profile): at
    /// a clean stop, and before a reload rebuilds the stage (the new stage
    /// loads it).
    fn persist(&mut self) {}
}

/// Why detection cannot start (exit 2) or a reload is refused (the running
/// rules stay).
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A rule file that does not parse or uses what Shrike cannot evaluate:
    /// every problem as `file:line: reason`.
    #[error("invalid rules:\n{}", .0.join("\n"))]
    Rules(Vec<String>),
    #[error("invalid setting detect.{setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

/// Counters of the stage, for the log and health events.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DetectStats {
    pub events: u64,
    pub alerts: u64,
    /// Sigma rules loaded, and skipped (by reason: a logsource Shrike cannot
    /// feed...).
    pub rules_loaded: u64,
    pub rules_skipped: std::collections::BTreeMap<String, u64>,
    /// IoC lists (entries, malformed lines, reloads) and executable hashing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ioc: Option<ioc::IocStats>,
    /// The learnt baseline: learning or not, its size, what its caps refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<baseline::BaselineStats>,
}

/// The stage: every enabled detector, in order.
pub struct Detect {
    detectors: Vec<Box<dyn Detector>>,
    scratch: Vec<Alert>,
    pub stats: DetectStats,
}

impl Detect {
    /// Builds the stage from its settings: loads and compiles the Sigma rules,
    /// creates the enabled built-in detectors.
    pub fn new(cfg: &DetectConfig) -> Result<Detect, DetectError> {
        let mut stats = DetectStats::default();
        let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
        if cfg.enabled {
            detectors.extend(builtin::detectors(cfg)?);
            if let Some(engine) = sigma::load(cfg, &mut stats)? {
                detectors.push(Box::new(engine));
            }
            if let Some(ioc) = ioc::load(cfg)? {
                detectors.push(Box::new(ioc));
            }
            if let Some(b) = baseline::load(cfg) {
                detectors.push(Box::new(b));
            }
        }
        for d in &detectors {
            d.report(&mut stats);
        }
        Ok(Detect { detectors, scratch: Vec::new(), stats })
    }

    /// A stage of the given detectors (tests, tools).
    pub fn from_detectors(detectors: Vec<Box<dyn Detector>>) -> Detect {
        Detect { detectors, scratch: Vec::new(), stats: DetectStats::default() }
    }

    /// A stage that never fires (detection off).
    pub fn disabled() -> Detect {
        Detect { detectors: Vec::new(), scratch: Vec::new(), stats: DetectStats::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// The kernel kinds the running detectors look at.
    pub fn kinds(&self) -> std::collections::BTreeSet<Kind> {
        self.detectors.iter().flat_map(|d| d.kinds().iter().copied()).collect()
    }

    /// Runs every detector over `ev` (alerts themselves are not looked at);
    /// each alert is appended to `out` as an event of kind `alert`. What the
    /// detectors annotate (an exec's `sha256`) is added to `ev` first.
    pub fn process(&mut self, ev: &mut Event, out: &mut Vec<Event>) {
        if self.detectors.is_empty() || matches!(ev.body, Body::Alert(_)) {
            return;
        }
        self.stats.events += 1;
        for d in &mut self.detectors {
            d.annotate(ev);
        }
        for d in &mut self.detectors {
            d.observe(ev, &mut self.scratch);
        }
        self.emit(out);
    }

    /// The periodic call (about once a second).
    pub fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Event>) {
        for d in &mut self.detectors {
            d.tick(now, &mut self.scratch);
            d.report(&mut self.stats);
        }
        self.emit(out);
    }

    /// Learnt state to disk (at a clean stop; before a reload).
    pub fn persist(&mut self) {
        for d in &mut self.detectors {
            d.persist();
        }
    }

    fn emit(&mut self, out: &mut Vec<Event>) {
        for alert in self.scratch.drain(..) {
            self.stats.alerts += 1;
            out.push(alert.into_event());
        }
    }
}
