//! `Diagnostic` events: the agent's own warnings and errors (its `tracing`
//! log) sent to the hub as well, so a fleet sees a gateway's troubles
//! without its journal. A tracing layer copies WARN and ERROR events into
//! a bounded channel that `shrike run` drains into messages; other
//! commands never open it, and the layer then costs one atomic load.
//!
//! Rate-limited: a burst of `BURST`, then `PER_MINUTE` a minute; what the
//! limit (or a full channel) holds back is counted and said in the next
//! event sent (`ExtraDetails.Suppressed`), never silently lost.

use std::{
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use shrike_common::schema as sm;
use tokio::sync::mpsc;
use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{layer::Context, registry::LookupSpan};

const BURST: f64 = 20.0;
const PER_MINUTE: f64 = 10.0;
const QUEUE: usize = 64;
/// Longest message kept (a rule file's errors can be long).
const MAX_MESSAGE: usize = 2048;

/// A warning or error of the agent's log.
#[derive(Debug)]
pub struct Diag {
    pub severity: sm::DiagnosticSeverity,
    pub message: String,
    pub target: String,
    pub thread_id: u32,
    /// Held back (rate limit, full queue) since the previous one sent.
    pub suppressed: u64,
}

impl Diag {
    pub fn into_event(self) -> sm::Event {
        let mut extra = sm::ExtraDetails::new();
        extra.insert("Module".into(), self.target);
        if self.suppressed > 0 {
            extra.insert("Suppressed".into(), self.suppressed.to_string());
        }
        sm::Event::new(sm::Diagnostic {
            correlation_id: None,
            severity: self.severity,
            message: self.message,
            process_id: std::process::id(),
            thread_id: self.thread_id,
            extra_details: extra,
        })
    }
}

struct Sink {
    tx: mpsc::Sender<Diag>,
    /// Token bucket: (tokens, last refill).
    bucket: Mutex<(f64, Instant)>,
}

static SINK: OnceLock<Sink> = OnceLock::new();
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Starts copying warnings and errors; the receiver gets them (once per
/// process: a second call gets None).
pub fn open() -> Option<mpsc::Receiver<Diag>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    SINK.set(Sink { tx, bucket: Mutex::new((BURST, Instant::now())) }).ok()?;
    Some(rx)
}

/// The tracing layer (installed by `telemetry::init`).
pub struct Layer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(sink) = SINK.get() else { return };
        let severity = match *event.metadata().level() {
            Level::ERROR => sm::DiagnosticSeverity::Error,
            // The broker connection's warnings (a failed attempt every few
            // seconds while it is away) would only fill the spool with news
            // of the outage the hub sees anyway.
            Level::WARN if event.metadata().target() == "shrike::publish::mqtt" => return,
            Level::WARN => sm::DiagnosticSeverity::Warning,
            _ => return,
        };
        {
            let mut b = sink.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * PER_MINUTE / 60.0).min(BURST);
            b.1 = now;
            if b.0 < 1.0 {
                SUPPRESSED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            b.0 -= 1.0;
        }
        let mut v = Visitor::default();
        event.record(&mut v);
        let mut message = v.message;
        for (k, val) in v.fields {
            message.push_str(&format!(" {k}={val}"));
        }
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let diag = Diag {
            severity,
            message,
            target: event.metadata().target().to_owned(),
            // SAFETY: gettid has no preconditions.
            thread_id: u32::try_from(unsafe { libc::gettid() }).unwrap_or(0),
            suppressed: SUPPRESSED.swap(0, Ordering::Relaxed),
        };
        if let Err(e) = sink.tx.try_send(diag) {
            let lost = match e {
                mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d.suppressed,
            };
            SUPPRESSED.fetch_add(lost + 1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Visitor {
    message: String,
    fields: Vec<(String, String)>,
}

impl tracing::field::Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push((field.name().to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name().to_owned(), format!("{value:?}")));
        }
    }
}
