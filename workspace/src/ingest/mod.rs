//! Ingest: [`broker`] takes messages off the shared subscription, the writer
//! here batches them (up to `batch_messages` or `batch_delay`), decodes
//! them ([`decode`]), writes each batch in one transaction and only then
//! has the broker task acknowledge them.

#[cfg(feature = "server")]
pub mod broker;
pub mod decode;

#[cfg(feature = "server")]
use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

#[cfg(feature = "server")]
use tokio::sync::mpsc;

#[cfg(feature = "server")]
use crate::{
    analytics::fleet,
    metrics::Metrics,
    store::{Store, rows::Batch},
    time,
};
#[cfg(feature = "server")]
use broker::{Acks, Received};
#[cfg(feature = "server")]
use decode::Outcome;

#[cfg(feature = "server")]
pub struct WriterSettings {
    pub filter: String,
    pub batch_messages: usize,
    pub batch_delay: Duration,
    pub max_message_size: usize,
    /// New fleet alerts (new-device, loss-reported) to publish.
    pub alerts: crate::analytics::AlertSink,
    /// How long a batch's write is retried while the database refuses it
    /// (`--db-retry-for`); then the writer gives up.
    pub retry_for: Duration,
}

#[cfg(feature = "server")]
/// The database refused every write for `retry_for`: the writer stopped.
/// Nothing of the failed batch (nor anything after it) was acknowledged.
#[derive(Debug, thiserror::Error)]
#[error(
    "giving up: the database refused every write for {retry_for:?} ({attempts} attempts, last error: {last}); \
     {unacked} messages received were not stored and are not acknowledged (the broker keeps them for this \
     session, or hands them to another process of the group)"
)]
pub struct WriteFailed {
    pub retry_for: Duration,
    pub attempts: u64,
    pub last: String,
    pub unacked: u64,
}

#[cfg(feature = "server")]
/// Takes what the broker task receives until the channel closes; writes it.
/// Ends with an error when a batch could not be written within
/// `retry_for`: what it holds then is never acknowledged.
pub async fn writer<S: Store + Clone>(
    store: S,
    s: WriterSettings,
    mut rx: mpsc::Receiver<Received>,
    acks: mpsc::UnboundedSender<Acks>,
    metrics: Arc<Metrics>,
) -> Result<(), WriteFailed> {
    let mut buf: Vec<Received> = Vec::with_capacity(s.batch_messages);
    let mut writing: Option<tokio::task::JoinHandle<Done>> = None;
    loop {
        // The first of a batch waits as long as needed; the rest at most
        // until the batch is `batch_delay` old.
        // Meanwhile a finished write is counted and acknowledged at once.
        let first = loop {
            match writing.as_mut() {
                Some(h) => tokio::select! {
                    r = rx.recv() => break r,
                    d = h => {
                        writing = None;
                        if !finish(d, &acks, &metrics, &s.alerts)? {
                            return Ok(());
                        }
                    }
                },
                None => break rx.recv().await,
            }
        };
        match first {
            Some(r) => buf.push(r),
            None => {
                if let Some(prev) = writing.take() {
                    finish(prev.await, &acks, &metrics, &s.alerts)?;
                }
                return Ok(());
            }
        }
        let deadline = tokio::time::Instant::now() + s.batch_delay;
        while buf.len() < s.batch_messages {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => buf.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        let n_messages = buf.iter().filter(|r| matches!(r, Received::Message { .. })).count() as u64;
        let mut batch = Batch::default();
        let mut done: Acks = Vec::with_capacity(buf.len());
        let mut event_times = Vec::new();
        for r in buf.drain(..) {
            match r {
                Received::Message { conn, pkid, topic, body, received } => {
                    done.push((conn, pkid));
                    match decode::decode(&s.filter, &topic, &body, &received, s.max_message_size) {
                        Outcome::Accepted(mut d) => {
                            fleet::loss_reported(&mut d);
                            if let Some(t) =
                                d.events.iter().map(|e| &e.time).min().and_then(|t| time::parse(t))
                            {
                                event_times.push(t);
                            }
                            batch.decoded.push(*d);
                        }
                        Outcome::Rejected(r) => {
                            tracing::debug!("rejected a message on {}: {}", r.topic, r.reason);
                            batch.rejected.push(r);
                        }
                    }
                }
                Received::Log(row) => batch.broker_log.push(row),
            }
        }
        // The write runs while the next batch is received and decoded (two
        // cores: one decodes, one writes); batches still commit, and are
        // acknowledged, in order.
        if let Some(prev) = writing.take()
            && !finish(prev.await, &acks, &metrics, &s.alerts)?
        {
            return Ok(());
        }
        let (store, metrics2, retry_for) = (store.clone(), Arc::clone(&metrics), s.retry_for);
        writing = Some(tokio::spawn(async move {
            Done {
                n_messages,
                n_log: batch.broker_log.len() as u64,
                event_times,
                acks: done,
                started: Instant::now(),
                written: write(&store, &batch, &metrics2, retry_for).await,
            }
        }));
    }
}

#[cfg(feature = "server")]
/// What a finished write hands back.
struct Done {
    n_messages: u64,
    n_log: u64,
    event_times: Vec<chrono::DateTime<chrono::Utc>>,
    acks: Acks,
    started: Instant,
    written: Result<crate::store::rows::Written, WriteFailed>,
}

#[cfg(feature = "server")]
/// Writes a batch, retrying while the database refuses it (down, full,
/// read-only...): backing off from 200 ms to 10 s, each failure logged and
/// counted (`shrike_workspace_write_errors_total`, and
/// `shrike_workspace_write_failing` while it lasts). Nothing is
/// acknowledged meanwhile, so the broker keeps the rest. After `retry_for`
/// of failures it gives up.
async fn write<S: Store>(
    store: &S,
    batch: &Batch,
    metrics: &Metrics,
    retry_for: Duration,
) -> Result<crate::store::rows::Written, WriteFailed> {
    let mut wait = Duration::from_millis(200);
    let started = Instant::now();
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        match store.write(batch).await {
            Ok(w) => {
                metrics.write_failing.store(0, Relaxed);
                if attempts > 1 {
                    tracing::info!("the database took the batch again after {attempts} attempts");
                }
                return Ok(w);
            }
            Err(e) => {
                metrics.write_errors.fetch_add(1, Relaxed);
                metrics.write_failing.store(1, Relaxed);
                let left = retry_for.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(WriteFailed { retry_for, attempts, last: e.to_string(), unacked: 0 });
                }
                let pause = wait.min(left);
                tracing::warn!(
                    "writing a batch of {} messages failed (attempt {attempts}): {e}; retrying in {pause:?} \
                     (giving up after {retry_for:?} of failures, {left:?} from now)",
                    batch.decoded.len() + batch.rejected.len()
                );
                tokio::time::sleep(pause).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(feature = "server")]
/// Counts a committed batch and has its messages acknowledged; false when
/// the broker task is gone, an error when the batch could not be written.
fn finish(
    done: Result<Done, tokio::task::JoinError>,
    acks: &mpsc::UnboundedSender<Acks>,
    metrics: &Metrics,
    sink: &crate::analytics::AlertSink,
) -> Result<bool, WriteFailed> {
    let Ok(d) = done else { return Ok(false) };
    let written = match d.written {
        Ok(w) => w,
        Err(mut e) => {
            e.unacked = metrics.pending.load(Relaxed);
            return Err(e);
        }
    };
    let now = chrono::Utc::now();
    for t in d.event_times {
        metrics.observe_lag((now - t).num_milliseconds() as f64 / 1000.0);
    }
    metrics.last_commit_ms.store(d.started.elapsed().as_millis() as u64, Relaxed);
    metrics.batches.fetch_add(1, Relaxed);
    metrics.stored_messages.fetch_add(written.messages, Relaxed);
    metrics.duplicates.fetch_add(written.duplicates, Relaxed);
    metrics.resent.fetch_add(written.resent, Relaxed);
    metrics.events.fetch_add(written.events, Relaxed);
    metrics.add_alerts(written.alerts);
    metrics.rejected.fetch_add(written.rejected, Relaxed);
    metrics.broker_log_lines.fetch_add(d.n_log, Relaxed);
    metrics.pending.fetch_sub(d.n_messages, Relaxed);
    if written.new_devices > 0 {
        tracing::info!("{} new devices", written.new_devices);
    }
    crate::analytics::publish(sink, written.new_fleet_alerts);
    Ok(acks.send(d.acks).is_ok())
}

#[cfg(feature = "server")]
/// Deletes what is older than each table's retention, every `every`.
pub async fn retention<S: Store>(
    store: S,
    retain: std::collections::BTreeMap<&'static str, Duration>,
    every: Duration,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (table, column) in crate::config::RETAINED_TABLES {
            let Some(d) = retain.get(table).filter(|d| !d.is_zero()) else { continue };
            match store.delete_before(table, column, time::ago(*d)).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics.retained_deleted.fetch_add(n, Relaxed);
                    tracing::info!("retention: deleted {n} rows of {table} older than {d:?}");
                }
                Err(e) => tracing::warn!("retention of {table}: {e}"),
            }
        }
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::store::{Param, StoreError, Table, rows::Written};

    /// A database that refuses the first `fail` writes (all: `u64::MAX`).
    #[derive(Clone)]
    struct Refusing {
        fail: u64,
        tries: Arc<AtomicU64>,
    }

    impl Store for Refusing {
        async fn write(&self, batch: &Batch) -> Result<Written, StoreError> {
            if self.tries.fetch_add(1, Relaxed) < self.fail {
                return Err(StoreError::Refused("attempt to write a readonly database".into()));
            }
            Ok(Written { messages: batch.decoded.len() as u64, ..Written::default() })
        }
        async fn read(&self, _: String, _: Vec<Param>) -> Result<Table, StoreError> {
            Ok(Table::default())
        }
        async fn delete_before(
            &self,
            _: &'static str,
            _: &'static str,
            _: String,
        ) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn size(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    async fn run(fail: u64) -> (Result<(), WriteFailed>, Vec<Acks>, Arc<Metrics>, u64) {
        let store = Refusing { fail, tries: Arc::default() };
        let (tx, rx) = mpsc::channel(16);
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::default());
        let settings = WriterSettings {
            filter: "shrike/+/security".into(),
            batch_messages: 10,
            batch_delay: Duration::from_millis(10),
            max_message_size: 1 << 20,
            alerts: None,
            retry_for: Duration::from_millis(700),
        };
        let writer = tokio::spawn(writer(store.clone(), settings, rx, ack_tx, Arc::clone(&metrics)));
        use shrike_common::schema as sm;
        let mut m = sm::MessageBuilder::new(sm::Uuid::from_u128(1), "0.1.0");
        m.push(&sm::Event::new(sm::ProcessCreate {
            executable: "/bin/true".into(),
            process_id: 1,
            parent_process_id: 1,
            user_id: "0".into(),
            user_name: None,
            command_line: "true".into(),
            extra_details: Default::default(),
        }))
        .unwrap();
        let body = m.finish().unwrap();
        for pkid in 1..=3 {
            metrics.pending.fetch_add(1, Relaxed);
            tx.send(Received::Message {
                conn: 1,
                pkid,
                topic: "shrike/gw/security".into(),
                body: bytes::Bytes::from(body.clone()),
                received: time::now(),
            })
            .await
            .unwrap();
        }
        drop(tx);
        let r = writer.await.unwrap();
        let mut acks = Vec::new();
        while let Ok(a) = ack_rx.try_recv() {
            acks.push(a);
        }
        (r, acks, metrics, store.tries.load(Relaxed))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_that_never_takes_the_batch_stops_the_writer_without_acks() {
        let (r, acks, metrics, tries) = run(u64::MAX).await;
        let e = r.expect_err("the writer gives up");
        assert!(e.attempts >= 3 && e.attempts == tries, "{e:?} after {tries} tries");
        assert_eq!(e.unacked, 3);
        assert!(e.to_string().contains("readonly database"), "{e}");
        assert!(acks.is_empty(), "nothing acknowledged: {acks:?}");
        assert_eq!(metrics.write_errors.load(Relaxed), tries);
        assert_eq!(metrics.write_failing.load(Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_back_within_the_limit_takes_the_batch() {
        let (r, acks, metrics, tries) = run(2).await;
        r.expect("written on the third attempt");
        assert_eq!(tries, 3);
        assert_eq!(acks.concat(), vec![(1, 1), (1, 2), (1, 3)]);
        assert_eq!(metrics.write_errors.load(Relaxed), 2);
        assert_eq!(metrics.write_failing.load(Relaxed), 0);
    }
}
