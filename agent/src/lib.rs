//! Shrike, the agent: loads the kernel probes, reads and decodes their records,
//! enriches them, and reports security events.

pub mod aggregate;
pub mod caps;
pub mod check;
pub mod cli;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod diagnostic;
pub mod enrich;
pub mod events;
pub mod journal;
pub mod memory;
pub mod message;
pub mod output;
pub mod ownfile;
pub mod probes;
pub mod publish;
pub mod recommend;
pub mod remote;
pub mod sdk;
pub mod secrets;
pub mod telemetry;
pub mod units;

/// `shrike --version`: the workspace version and the git commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SHRIKE_GIT_COMMIT"), ")");

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use clap::Args;
use tokio::{signal::unix::SignalKind, sync::mpsc, task::JoinSet};

use crate::{
    events::{
        Kind,
        decode::Clock,
        reader::{self, ReaderStats},
    },
    probes::{ProbeArgs, ProbeOptions},
};

/// The kernel side, running: attached probes, the reader task(s) (and kernel
/// log forwarding) in `tasks`, their decoded batches on `rx`.
pub struct Kernel {
    pub probes: probes::Probes,
    pub rx: mpsc::Receiver<reader::Batch>,
    pub stats: Arc<ReaderStats>,
    pub tasks: JoinSet<anyhow::Result<()>>,
}

/// Loads and attaches the probes for `kinds` and starts reading them (needs a
/// tokio runtime). `wake_kinds` wake the reader at once (see `Config`).
pub fn start_kernel(
    probe: &ProbeArgs,
    kinds: BTreeSet<Kind>,
    wake_kinds: BTreeSet<Kind>,
    watch: &enrich::files::Watch,
) -> anyhow::Result<Kernel> {
    let opts = ProbeOptions {
        kinds,
        transport: probe.transport,
        ring_bytes: probe.ring_size,
        max_args: probe.max_args,
        max_arg_len: probe.max_arg_len,
        wake_kinds,
        wake_bytes: probe.wake_bytes.unwrap_or(probe.ring_size / 8),
        libpam: probe.libpam.clone(),
        watch: watch.kernel_prefixes()?,
    };
    let mut probes = probes::load(&opts)?;
    let mut tasks = JoinSet::new();
    telemetry::spawn_kernel_log(&mut probes.ebpf, &mut tasks);
    let stats = Arc::new(ReaderStats::default());
    let (tx, rx) = mpsc::channel(reader::QUEUE_BATCHES);
    let map =
        probes.ebpf.take_map(shrike_common::names::EVENTS).ok_or(probes::ProbeError::MissingMap("EVENTS"))?;
    reader::spawn(
        map,
        probe.perf_pages,
        probe.poll_interval,
        Clock::now(),
        Arc::clone(&stats),
        tx,
        &mut tasks,
    )?;
    Ok(Kernel { probes, rx, stats, tasks })
}

/// Exit codes: 0 ok, 1 runtime failure, 2 bad usage/config, 3 cannot run here.
pub const EXIT_CANNOT_RUN: i32 = 3;

/// `shrike events`'s flags.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Event kinds to print, comma-separated [default: all]:
    /// exec, exit, fork, connect, accept, listen, bind, login, privilege, file, alert,
    /// sdk (with --sdk-socket). Detection still sees every kind its detectors need.
    #[arg(long, value_delimiter = ',', value_parser = Kind::parse)]
    pub kinds: Vec<Kind>,
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub detect: detect::DetectArgs,
    /// Other programs' events: with --sdk-socket PATH they are printed as
    /// `sdk` lines (off by default here, so `events` never takes the
    /// running agent's socket).
    #[command(flatten)]
    pub sdk: sdk::SdkArgs,
    /// How often to log the kernel's lost-record counters when they grow.
    #[arg(long, default_value = "10s", value_parser = units::parse_interval)]
    pub stats_interval: std::time::Duration,
    /// Stop after this many events (for scripts and tests) [default: none:
    /// until stopped].
    #[arg(long)]
    pub count: Option<u64>,
    /// The state folder: the learnt baseline is kept there [default:
    /// /var/lib/shrike].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `shrike events`: every security event as a JSON line on stdout.
pub async fn run_events(args: EventsArgs) -> anyhow::Result<()> {
    let wanted: BTreeSet<Kind> = if args.kinds.is_empty() {
        Kind::EVENTS.into_iter().collect()
    } else {
        args.kinds.iter().copied().collect()
    };
    // Before the probes: a bad rule file exits 2 at once.
    let mut detect_cfg = detect::DetectConfig::resolve(None, &args.detect)?;
    detect_cfg.proc_root.clone_from(&args.probe.proc_root);
    detect_cfg.baseline.state_dir =
        Some(args.state_dir.clone().unwrap_or_else(|| detect::baseline::DEFAULT_STATE_DIR.into()));
    let detect = detect::Detect::new(&detect_cfg)?;
    // Recommendations print at start when every kind is printed (a policy
    // that does not load exits 2 here); assessed on a blocking thread.
    let rec = &detect_cfg.recommend;
    let mut recommend_job = if rec.enabled && args.kinds.is_empty() {
        recommend::load(rec).map_err(detect::DetectError::Rules)?;
        let cfg = rec.clone();
        Some(tokio::task::spawn_blocking(move || recommend::run_once(&cfg).map(|r| r.json_lines())))
    } else {
        None
    };
    // The kinds printed and the kinds detection looks at, printed or not.
    let mut attach: BTreeSet<Kind> = wanted.iter().copied().filter(|k| Kind::ALL.contains(k)).collect();
    attach.extend(detect.kinds());
    let Kernel { mut probes, mut rx, stats, mut tasks } = start_kernel(
        &args.probe,
        attach,
        args.probe.wake_kinds.iter().copied().collect(),
        &detect_cfg.watch,
    )?;
    let attached = probes.status.iter().filter(|s| s.attached).count();
    let skipped: Vec<_> = probes.status.iter().filter(|s| !s.attached).map(|s| s.program).collect();

    let mut sink = output::JsonLines::new(std::io::stdout(), wanted, &args.probe.proc_root, detect)
        .exec_misses(args.probe.exec_misses.unwrap_or_default())
        .watch(Arc::new(detect_cfg.watch.clone()));
    tracing::info!(
        transport = ?probes.transport,
        attached,
        skipped = ?skipped,
        rules = sink.detect().stats.rules_loaded,
        "shrike ready: {attached} probes attached"
    );

    let sdk_cfg = sdk::SdkConfig::resolve(&args.sdk, &sdk::FileSdk::default(), None)?;
    let (sdk_tx, mut sdk_rx) = mpsc::channel(sdk::QUEUE);
    let sdk_server = sdk::start_or_skip(&sdk_cfg, sdk_tx)?;

    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut ticker = tokio::time::interval(args.stats_interval);
    // Detection's clock: windows that close without a further event.
    let mut detect_tick = tokio::time::interval(Duration::from_secs(1));
    detect_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_lost = BTreeMap::new();
    let limit = args.count.unwrap_or(u64::MAX);
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break Err(anyhow::anyhow!("kernel readers stopped")) };
                if let Err(e) = sink.write_batch(batch) {
                    break if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e.into()) };
                }
                if rx.is_empty()
                    && let Err(e) = sink.flush()
                {
                    break if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e.into()) };
                }
                if sink.written() >= limit {
                    break Ok(());
                }
            }
            _ = detect_tick.tick(), if !sink.detect().is_empty() || sink.holds_misses() => {
                if let Err(e) = sink.tick(chrono::Utc::now()).and_then(|()| sink.flush()) {
                    break if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e.into()) };
                }
                if sink.written() >= limit {
                    break Ok(());
                }
            }
            Some(done) = async { Some(recommend_job.as_mut()?.await) }, if recommend_job.is_some() => {
                recommend_job = None;
                for line in done.ok().flatten().unwrap_or_default() {
                    if let Err(e) = sink.write_line(&line) {
                        tracing::warn!("cannot print a recommendation: {e}");
                    }
                }
                let _ = sink.flush();
            }
            _ = ticker.tick() => {
                let lost = probes::read_counters(&probes.ebpf, shrike_common::names::LOST);
                for (k, n) in &lost {
                    let before = last_lost.get(k).copied().unwrap_or(0);
                    if *n > before {
                        tracing::warn!(kind = k.name(), lost = n - before, total = n, "kernel records lost (buffer full)");
                    }
                }
                last_lost = lost;
            }
            Some(done) = tasks.join_next() => {
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(e.into()),
                }
            }
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
            Some(ev) = sdk_rx.recv(), if sdk_server.is_some() => {
                if let Err(e) = sink.write_sdk(ev).and_then(|()| sink.flush()) {
                    break if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e.into()) };
                }
                if sink.written() >= limit {
                    break Ok(());
                }
            }
        }
    };

    // Detach first, then drain: with the programs still attached a busy
    // machine never lets the readers go quiet, and the counters read below
    // would count records still in the buffers (sent, yet neither written
    // nor lost: a silent gap, seen under load in the burst test).
    probes.detach();
    if outcome.is_ok() && sink.written() < limit {
        drain_detached(&mut rx, |batch| sink.write_batch(batch).is_ok()).await;
    }
    let _ = sink.finish();
    let _ = sink.flush();

    let summary = output::Summary {
        kind: "stats",
        transport: probes.transport,
        received: stats.received.load(Ordering::Relaxed),
        decode_errors: stats.decode_errors.load(Ordering::Relaxed),
        perf_lost: stats.perf_lost.load(Ordering::Relaxed),
        written: sink.written(),
        detect: sink.detect().stats.clone(),
        kernel_sent: names_of(probes::read_counters(&probes.ebpf, shrike_common::names::SENT)),
        kernel_lost: names_of(probes::read_counters(&probes.ebpf, shrike_common::names::LOST)),
        sdk: sdk_server.as_ref().map(|s| s.stats.counts()),
    };
    drop(sdk_server);
    tracing::info!("shrike stopping: {}", telemetry::fields(&summary));
    let _ = sink.write_summary(&summary);
    tasks.abort_all();
    outcome
}

/// After [`probes::Probes::detach`]: hands `f` what the kernel had already
/// handed over, batch by batch, until the readers go 300 ms without one
/// (3 s at most); `f` returning false stops it early.
pub async fn drain_detached(
    rx: &mut mpsc::Receiver<reader::Batch>,
    mut f: impl FnMut(reader::Batch) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(batch)) = tokio::time::timeout_at(
        deadline.min(tokio::time::Instant::now() + Duration::from_millis(300)),
        rx.recv(),
    )
    .await
    {
        if !f(batch) {
            break;
        }
    }
}

fn names_of(m: BTreeMap<Kind, u64>) -> BTreeMap<&'static str, u64> {
    m.into_iter().map(|(k, v)| (k.name(), v)).collect()
}
