//! Counters behind `/metrics` (Prometheus text format) and the stats log line.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the ingest-lag histogram's buckets.
pub const LAG_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct Metrics {
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    pub stored_messages: AtomicU64,
    pub duplicates: AtomicU64,
    /// Duplicates with other bytes (every event stored already).
    pub resent: AtomicU64,
    pub events: AtomicU64,
    pub alerts: AtomicU64,
    pub rejected: AtomicU64,
    pub batches: AtomicU64,
    pub write_errors: AtomicU64,
    /// 1 while writes fail (the last attempt failed).
    pub write_failing: AtomicU64,
    pub retained_deleted: AtomicU64,
    pub broker_log_lines: AtomicU64,
    /// Fleet alerts handed to the broker (`--publish-alerts`).
    pub alerts_published: AtomicU64,
    /// Fleet alerts not published: the client's queue was full (broker away).
    pub alerts_publish_dropped: AtomicU64,
    pub connected: AtomicU64,
    /// Messages received and not yet written (waiting in the batch channel).
    pub pending: AtomicU64,
    /// Seconds from a message's oldest event (the device's clock) to the
    /// commit that made it queryable, as a histogram (one count per message).
    lag_buckets: [AtomicU64; 11],
    lag_count: AtomicU64,
    lag_sum_ms: AtomicU64,
    /// Receipt to commit, milliseconds, of the last batch.
    pub last_commit_ms: AtomicU64,
}

impl Metrics {
    pub fn add_alerts(&self, n: u64) {
        self.alerts.fetch_add(n, Relaxed);
    }

    pub fn observe_lag(&self, secs: f64) {
        let secs = secs.max(0.0);
        for (i, b) in LAG_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.lag_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.lag_count.fetch_add(1, Relaxed);
        self.lag_sum_ms.fetch_add((secs * 1000.0) as u64, Relaxed);
    }

    /// The Prometheus text exposition; `db_size` in bytes.
    pub fn render(&self, db_size: Option<u64>, backend: &str) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
        };
        counter(
            "shrike_workspace_messages_received_total",
            "Messages taken from the broker.",
            self.received.load(Relaxed),
        );
        counter(
            "shrike_workspace_received_bytes_total",
            "Bytes of messages taken from the broker.",
            self.received_bytes.load(Relaxed),
        );
        counter(
            "shrike_workspace_messages_stored_total",
            "Messages written (new).",
            self.stored_messages.load(Relaxed),
        );
        counter(
            "shrike_workspace_messages_duplicate_total",
            "Messages already stored (redeliveries), skipped.",
            self.duplicates.load(Relaxed),
        );
        counter(
            "shrike_workspace_messages_resent_total",
            "Of the duplicates, messages with other bytes whose events were all stored already.",
            self.resent.load(Relaxed),
        );
        counter("shrike_workspace_events_stored_total", "Event rows written.", self.events.load(Relaxed));
        counter("shrike_workspace_alerts_stored_total", "Alert rows written.", self.alerts.load(Relaxed));
        counter(
            "shrike_workspace_messages_rejected_total",
            "Messages that did not decode (kept in rejected).",
            self.rejected.load(Relaxed),
        );
        counter("shrike_workspace_batches_total", "Transactions written.", self.batches.load(Relaxed));
        counter(
            "shrike_workspace_write_errors_total",
            "Failed transactions (retried for --db-retry-for, then the process exits).",
            self.write_errors.load(Relaxed),
        );
        counter(
            "shrike_workspace_retention_deleted_total",
            "Rows deleted by retention.",
            self.retained_deleted.load(Relaxed),
        );
        counter(
            "shrike_workspace_broker_log_lines_total",
            "Broker log lines kept.",
            self.broker_log_lines.load(Relaxed),
        );
        counter(
            "shrike_workspace_alerts_published_total",
            "Fleet alerts published to the broker (--publish-alerts).",
            self.alerts_published.load(Relaxed),
        );
        counter(
            "shrike_workspace_alerts_publish_dropped_total",
            "Fleet alerts not published: the MQTT client's queue was full.",
            self.alerts_publish_dropped.load(Relaxed),
        );
        let mut gauge = |name: &str, help: &str, v: String| {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"));
        };
        gauge(
            "shrike_workspace_broker_connected",
            "1 while connected to the broker.",
            self.connected.load(Relaxed).to_string(),
        );
        gauge(
            "shrike_workspace_write_failing",
            "1 while the database refuses writes (retrying).",
            self.write_failing.load(Relaxed).to_string(),
        );
        gauge(
            "shrike_workspace_pending_messages",
            "Messages received, not yet written.",
            self.pending.load(Relaxed).to_string(),
        );
        gauge(
            "shrike_workspace_last_commit_seconds",
            "Receipt to commit of the last batch.",
            format!("{:.3}", self.last_commit_ms.load(Relaxed) as f64 / 1000.0),
        );
        if let Some(b) = db_size {
            gauge(
                &format!("shrike_workspace_db_size_bytes{{backend=\"{backend}\"}}"),
                "Bytes the database takes.",
                b.to_string(),
            );
        }
        let name = "shrike_workspace_ingest_lag_seconds";
        s.push_str(&format!(
            "# HELP {name} Event time (device clock) to queryable (commit), per message.\n# TYPE {name} histogram\n"
        ));
        for (i, b) in LAG_BUCKETS.iter().enumerate() {
            s.push_str(&format!("{name}_bucket{{le=\"{b}\"}} {}\n", self.lag_buckets[i].load(Relaxed)));
        }
        let count = self.lag_count.load(Relaxed);
        s.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        s.push_str(&format!(
            "{name}_sum {:.3}\n{name}_count {count}\n",
            self.lag_sum_ms.load(Relaxed) as f64 / 1000.0
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn histogram_is_cumulative() {
        let m = super::Metrics::default();
        m.observe_lag(0.02);
        m.observe_lag(3.0);
        let t = m.render(Some(10), "sqlite");
        assert!(t.contains("shrike_workspace_ingest_lag_seconds_bucket{le=\"0.025\"} 1\n"), "{t}");
        assert!(t.contains("shrike_workspace_ingest_lag_seconds_bucket{le=\"5\"} 2\n"), "{t}");
        assert!(t.contains("shrike_workspace_ingest_lag_seconds_count 2\n"));
        assert!(t.contains("shrike_workspace_db_size_bytes{backend=\"sqlite\"} 10\n"));
    }
}
