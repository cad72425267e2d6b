//! Prometheus metrics (`--metrics HOST:PORT`, off by default): `GET /metrics`
//! in the text exposition format (version 0.0.4).
//!
//! Hand-written rather than the prometheus-client crate: the counters
//! already exist (the reader's, the kernel maps', the pipeline's, the
//! publisher's: what the stop line and the health events print), so a
//! registry would be a second bookkeeping to keep in step; the format is a
//! few lines of text, and a tiny HTTP/1.1 responder on tokio adds no
//! dependency to a binary that must stay small. A scrape asks the run loop,
//! which owns the counters, to render them: the numbers are read where they
//! are kept, at the moment of the scrape.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use super::{batches::Sink, pipeline::Pipeline};
use crate::{events::reader::ReaderStats, probes, publish::spool::Priority};

/// A scrape waiting for the run loop's rendering.
pub(super) type Scrape = oneshot::Sender<String>;

/// Binds `addr` (a failure is an error at start) and serves scrapes; each
/// comes out of the receiver for the run loop to answer.
pub(super) async fn serve(addr: SocketAddr) -> std::io::Result<mpsc::Receiver<Scrape>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "Prometheus metrics on http://{addr}/metrics");
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                // A slow or silent client cannot hold a connection for long.
                let _ = tokio::time::timeout(Duration::from_secs(5), answer(conn, tx)).await;
            });
        }
    });
    Ok(rx)
}

async fn answer(mut conn: tokio::net::TcpStream, tx: mpsc::Sender<Scrape>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (status, body) = if method != b"GET" {
        ("405 Method Not Allowed", String::from("GET only\n"))
    } else if path != b"/metrics" {
        ("404 Not Found", String::from("metrics are at /metrics\n"))
    } else {
        let (reply, rendered) = oneshot::channel();
        match tx.send(reply).await {
            Ok(()) => match rendered.await {
                Ok(text) => ("200 OK", text),
                Err(_) => ("503 Service Unavailable", String::from("stopping\n")),
            },
            Err(_) => ("503 Service Unavailable", String::from("stopping\n")),
        }
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

/// Text exposition of a metric family: HELP, TYPE, then samples.
struct Families(String);

impl Families {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {v}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
            }
        }
    }
}

fn labelled(v: &[(String, u64)]) -> Vec<(&str, u64)> {
    v.iter().map(|(l, n)| (l.as_str(), *n)).collect()
}

/// The resident set size, from /proc/self/statm (pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    pages * page
}

/// Renders every counter the run loop keeps.
pub(super) fn render(pipe: &Pipeline, probes: &probes::Probes, reader: &ReaderStats) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut f = Families(String::with_capacity(4096));
    let per_kind = |m: std::collections::BTreeMap<crate::events::Kind, u64>| -> Vec<(String, u64)> {
        m.into_iter().map(|(k, v)| (format!("kind=\"{}\"", k.name()), v)).collect()
    };
    let sent = per_kind(probes::read_counters(&probes.ebpf, shrike_common::names::SENT));
    let lost = per_kind(probes::read_counters(&probes.ebpf, shrike_common::names::LOST));
    f.family(
        "shrike_kernel_records_total",
        "counter",
        "Records the kernel programs sent, per kind.",
        &labelled(&sent),
    );
    f.family(
        "shrike_kernel_records_lost_total",
        "counter",
        "Records the kernel could not deliver (buffer full), per kind.",
        &labelled(&lost),
    );
    f.family(
        "shrike_records_received_total",
        "counter",
        "Records the agent read from the kernel.",
        &[("", reader.received.load(Relaxed))],
    );
    f.family(
        "shrike_records_decode_errors_total",
        "counter",
        "Records that did not decode.",
        &[("", reader.decode_errors.load(Relaxed))],
    );
    f.family(
        "shrike_perf_lost_total",
        "counter",
        "PERF_RECORD_LOST totals (perf transport).",
        &[("", reader.perf_lost.load(Relaxed))],
    );
    let b = &pipe.batches;
    let q = |m: &std::collections::HashMap<Priority, u64>, p| m.get(&p).copied().unwrap_or(0);
    f.family(
        "shrike_events_total",
        "counter",
        "Security events taken into a priority queue (aggregated hits included).",
        &[
            ("queue=\"high\"", q(&b.collected, Priority::High)),
            ("queue=\"low\"", q(&b.collected, Priority::Low)),
        ],
    );
    f.family(
        "shrike_events_dropped_total",
        "counter",
        "Events and messages dropped in the agent (invalid, too large, not spooled), per queue.",
        &[("queue=\"high\"", q(&b.dropped, Priority::High)), ("queue=\"low\"", q(&b.dropped, Priority::Low))],
    );
    let d = &pipe.detect.stats;
    f.family("shrike_detect_events_total", "counter", "Events the detection stage saw.", &[("", d.events)]);
    f.family("shrike_alerts_total", "counter", "Alerts raised.", &[("", d.alerts)]);
    f.family("shrike_rules_loaded", "gauge", "Sigma rules loaded.", &[("", d.rules_loaded)]);
    f.family("shrike_messages_total", "counter", "Security messages made.", &[("", b.messages)]);
    let retired = b.retired;
    let (mut published, mut acked, mut bytes, mut reconnects, mut conn_errors) = (0, 0, 0, 0, 0);
    let (mut pending, mut connected) = (0, 0);
    let (mut spool_low, mut spool_high) = (retired.dropped_low, retired.dropped_high);
    if let Sink::Mqtt(p) = &pipe.sink {
        let st = p.stats();
        published = st.published;
        acked = st.acked;
        bytes = st.bytes_sent;
        reconnects = st.reconnects;
        conn_errors = st.connection_errors;
        pending = st.pending;
        connected = u64::from(st.connected);
        spool_low += st.spool.dropped_low;
        spool_high += st.spool.dropped_high;
    }
    f.family(
        "shrike_mqtt_published_total",
        "counter",
        "PUBLISH packets sent by the current publisher (resends included).",
        &[("", published)],
    );
    f.family("shrike_mqtt_acked_total", "counter", "Messages the broker acknowledged.", &[("", acked)]);
    f.family("shrike_mqtt_published_bytes_total", "counter", "Payload bytes published.", &[("", bytes)]);
    f.family(
        "shrike_mqtt_reconnects_total",
        "counter",
        "Connections after the first one.",
        &[("", reconnects)],
    );
    f.family(
        "shrike_mqtt_connection_errors_total",
        "counter",
        "Failed connection attempts and lost connections.",
        &[("", conn_errors)],
    );
    f.family("shrike_mqtt_connected", "gauge", "1 while connected to the broker.", &[("", connected)]);
    f.family(
        "shrike_spool_messages",
        "gauge",
        "Messages in the spool, not yet acknowledged.",
        &[("", pending)],
    );
    f.family(
        "shrike_spool_dropped_total",
        "counter",
        "Messages the full spool dropped, per priority.",
        &[("priority=\"high\"", spool_high), ("priority=\"low\"", spool_low)],
    );
    // The SDK socket's counters (absent when it is off).
    if let Some(sdk) = &pipe.sdk_stats {
        let c = sdk.counts();
        f.family("shrike_sdk_accepted_total", "counter", "SDK events accepted.", &[("", c.accepted)]);
        f.family(
            "shrike_sdk_rejected_total",
            "counter",
            "SDK lines rejected (rate limited and too long are also counted apart).",
            &[("", c.rejected)],
        );
        f.family(
            "shrike_sdk_rate_limited_total",
            "counter",
            "SDK lines over a rate limit.",
            &[("", c.rate_limited)],
        );
        f.family("shrike_sdk_connections_total", "counter", "SDK connections taken.", &[("", c.connections)]);
        f.family(
            "shrike_sdk_timed_out_total",
            "counter",
            "SDK connections closed for being idle or slow.",
            &[("", c.timed_out)],
        );
    }
    f.family("shrike_resident_memory_bytes", "gauge", "The agent's resident set size.", &[("", rss_bytes())]);
    f.0
}
