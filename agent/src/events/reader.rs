//! Reading the kernel's records: a ring buffer, or one perf buffer per CPU,
//! polled with tokio's AsyncFd. Records are decoded here and handed on in
//! batches over a bounded channel. When the consumer falls behind, the readers
//! wait and the kernel buffer fills: records are then lost in the kernel, where
//! the LOST counters count every one. Nothing is dropped silently in userspace.

use std::{
    ops::ControlFlow,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::maps::{Map, MapData, PerfEventArray, RingBuf, perf::PerfEvent};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinSet};

use super::{
    Event,
    decode::{Clock, decode},
};

/// Counters of the userspace side of the transport.
#[derive(Debug, Default)]
pub struct ReaderStats {
    pub received: AtomicU64,
    pub decode_errors: AtomicU64,
    /// PERF_RECORD_LOST totals (the kernel LOST counters count the same losses).
    pub perf_lost: AtomicU64,
}

pub type Batch = Vec<Event>;

/// Largest batch handed on at once.
const BATCH: usize = 256;

/// Batches waiting between the readers and the pipeline, at most (≤ 2,048
/// events, about a megabyte). The kernel's buffer is the place to absorb
/// bursts: when the pipeline stalls, readers wait, the kernel buffer fills and
/// its losses are counted there, instead of memory growing here.
pub const QUEUE_BATCHES: usize = 8;

fn handle(buf: &[u8], clock: &Clock, stats: &ReaderStats, batch: &mut Batch) {
    stats.received.fetch_add(1, Ordering::Relaxed);
    match decode(buf, clock) {
        Ok(ev) => batch.push(ev),
        Err(e) => {
            let n = stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            // Rate-limited: a broken object would otherwise flood the log.
            if n < 10 || n.is_power_of_two() {
                tracing::warn!(count = n + 1, "undecodable kernel record: {e}");
            }
        }
    }
}

/// Registers a kernel buffer with tokio for readability.
pub fn register<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: AsyncFd owns `inner`, and with it the file descriptor, which stays
    // open until the AsyncFd (and so its registration) is dropped.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// Spawns the reader task(s) for the EVENTS map.
pub fn spawn(
    map: Map,
    perf_pages: usize,
    poll: std::time::Duration,
    clock: Clock,
    stats: Arc<ReaderStats>,
    tx: mpsc::Sender<Batch>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    match map {
        Map::RingBuf(_) => {
            let ring = RingBuf::try_from(map)?;
            tasks.spawn(read_ring(ring, poll, clock, stats, tx));
        }
        Map::PerfEventArray(_) => {
            let mut perf = PerfEventArray::try_from(map)?;
            let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
            let mut bufs = Vec::with_capacity(cpus.len());
            for cpu in cpus {
                bufs.push(register(perf.open(cpu, Some(perf_pages))?)?);
            }
            tasks.spawn(read_perf(bufs, poll, clock, stats, tx));
        }
        other => anyhow::bail!("EVENTS map has an unexpected type: {:?}", other),
    }
    Ok(())
}

/// The kernel wakes this reader only for urgent kinds or a filling buffer
/// (`Config::wake_kinds`): it also drains on a `poll` timer.
async fn read_ring(
    ring: RingBuf<MapData>,
    poll: std::time::Duration,
    clock: Clock,
    stats: Arc<ReaderStats>,
    tx: mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let mut fd = register(ring)?;
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Readiness is cleared before draining: a record arriving meanwhile
            // is drained now and only costs a spurious wakeup later.
            g = fd.readable_mut() => g?.clear_ready(),
            _ = ticker.tick() => {}
        }
        loop {
            let mut batch = Vec::with_capacity(BATCH);
            {
                let ring = fd.get_mut();
                while batch.len() < BATCH {
                    let Some(item) = ring.next() else { break };
                    handle(&item, &clock, &stats, &mut batch);
                }
            }
            let full = batch.len() == BATCH;
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return Ok(());
            }
            if !full {
                break;
            }
        }
    }
}

/// One reader for every CPU's perf buffer: records of one process can sit in
/// different CPUs' buffers (a fork on one, the child's exit on another), so
/// each pass drains them all and orders the pass by the kernel's timestamps.
async fn read_perf(
    mut fds: Vec<AsyncFd<aya::maps::perf::PerfEventArrayBuffer<MapData>>>,
    poll: std::time::Duration,
    clock: Clock,
    stats: Arc<ReaderStats>,
    tx: mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let mut scratch = Vec::new();
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = std::future::poll_fn(|cx| {
                for fd in &fds {
                    if let std::task::Poll::Ready(Ok(mut g)) = fd.poll_read_ready(cx) {
                        g.clear_ready();
                        return std::task::Poll::Ready(());
                    }
                }
                std::task::Poll::Pending
            }) => {}
            _ = ticker.tick() => {}
        }
        let mut batch = Vec::new();
        for fd in &mut fds {
            let _ = fd.get_mut().try_fold((), |(), ev| {
                match ev {
                    PerfEvent::Sample { head, tail } => {
                        if tail.is_empty() {
                            handle(head, &clock, &stats, &mut batch);
                        } else {
                            scratch.clear();
                            scratch.extend_from_slice(head);
                            scratch.extend_from_slice(tail);
                            handle(&scratch, &clock, &stats, &mut batch);
                        }
                    }
                    PerfEvent::Lost { count } => {
                        stats.perf_lost.fetch_add(count, Ordering::Relaxed);
                    }
                }
                ControlFlow::<(), ()>::Continue(())
            });
        }
        batch.sort_by_key(|e| e.ktime_ns);
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return Ok(());
        }
    }
}
