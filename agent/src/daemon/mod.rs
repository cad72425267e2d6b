//! `shrike run`: kernel events -> enrichment -> detection -> aggregation ->
//! priority batches -> security messages -> spool -> MQTT (or stdout with
//! --dry-run).
//!
//! This file is the run loop; the jobs it drives: `settings` (defaults, the
//! file and flags into `RunSettings`), `pipeline` (detection, aggregation
//! into batches), `batches` (messages per priority, where they go),
//! `publisher` (its lifecycle: start, swap, retry, stop), `reload` (SIGHUP),
//! `timers` and `health` (the health events).

mod batches;
mod health;
mod journal;
mod metrics;
mod pipeline;
mod publisher;
mod reload;
mod remote;
mod settings;
mod timers;

use std::{sync::atomic::Ordering, time::Duration};

use tokio::{signal::unix::SignalKind, time::Instant};

pub use self::settings::{RunArgs, RunSettings, defaults};
use self::{
    batches::Sink,
    health::Health,
    pipeline::Pipeline,
    publisher::{PublisherSetup, stop_publisher},
    settings::agent_id,
};
use crate::{
    config::KindPriority,
    detect::Detect,
    enrich::{ProcessTable, exec_misses::MissFolder, users::Users},
    events::Kind,
    probes,
    publish::spool::Priority,
};

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // The last applied remote configuration over the file (offline boots too).
    let (settings, mut remote) = remote::RemoteState::start(&args)?;
    let collected = settings.collected()?;
    // Rules are read and compiled before anything starts: a bad one exits 2.
    let detect = Detect::new(&settings.detect)?;
    // Policies too: one that does not load exits 2 here, not at the first snapshot.
    if settings.detect.recommend.enabled {
        crate::recommend::load(&settings.detect.recommend).map_err(crate::detect::DetectError::Rules)?;
    }
    // The probes of the kinds detection looks at are attached even when
    // those kinds are not published (priority off).
    let mut attach = collected.clone();
    attach.extend(detect.kinds());
    // Before anything is logged (`shrike ready` above all): a signal that
    // comes before its handler exists kills the agent (SIGHUP's default
    // action too), unflushed.
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let id = agent_id(&settings.agent_id_file, settings.store_agent_id);
    let sink = match PublisherSetup::of(&settings) {
        None => Sink::DryRun(std::io::stdout()),
        Some(setup) => Sink::Mqtt(setup.start()?),
    };
    // Other programs' events (the SDK socket) come into the loop below.
    let (sdk_tx, mut sdk_rx) = tokio::sync::mpsc::channel(crate::sdk::QUEUE);
    let sdk = crate::sdk::start_or_skip(&settings.sdk, sdk_tx)?;

    let wake_kinds =
        collected.iter().copied().filter(|k| settings.priority[k] == KindPriority::High).collect();
    // Bound before `shrike ready`: a taken port is an error at start.
    let mut scrapes = match settings.metrics {
        Some(addr) => Some(
            metrics::serve(addr).await.map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?,
        ),
        None => None,
    };
    let crate::Kernel { mut probes, mut rx, stats, mut tasks } =
        crate::start_kernel(&args.probe, attach.clone(), wake_kinds, &settings.detect.watch)?;
    let attached = probes.status.iter().filter(|s| s.attached).count();
    tracing::info!(
        agent_id = %id,
        kinds = ?collected,
        detect_kinds = ?detect.kinds(),
        rules = detect.stats.rules_loaded,
        rules_skipped = ?detect.stats.rules_skipped,
        dry_run = settings.dry_run,
        "shrike ready: {attached} probes attached"
    );
    if settings.firewall_snapshot {
        // `nft` gets it as an ambient capability (collect/firewall.rs).
        crate::caps::keep_permitted_only(1 << crate::caps::CAP_NET_ADMIN);
    }
    crate::caps::drop_after_attach();

    let mut procs = ProcessTable::new(&args.probe.proc_root);
    procs.seed();
    // Set again after each reload (SIGHUP, remote configuration).
    procs.set_watch(std::sync::Arc::new(settings.detect.watch.clone()));
    let mut misses = MissFolder::new(settings.exec_misses);
    let mut ready = Vec::new();
    let mut users = Users::new("/etc/passwd");
    let mut attachable = probes::collected_kinds(&attach);
    attachable.insert(Kind::Alert);
    let mut pipe = Pipeline::new(settings, detect, attachable, id, sink);
    pipe.sdk_stats = sdk.as_ref().map(|s| std::sync::Arc::clone(&s.stats));
    remote.flush_pending(&mut pipe);
    // What an earlier run received and had not spooled (killed), then a new journal.
    pipe.start_journal().await;
    let mut reported = Health::default();

    // After a burst, memory goes back to the kernel (memory.rs).
    // The journal's watermark follows the spool's durability (daemon/journal.rs).
    let mut durable_tick = timers::every(DURABLE_TICK, Instant::now() + DURABLE_TICK);
    let mut trim_tick = timers::every(crate::memory::TRIM_EVERY, Instant::now() + crate::memory::TRIM_EVERY);
    let mut misses_tick =
        tokio::time::interval(crate::enrich::exec_misses::HOLD.to_std().unwrap_or_default());
    misses_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The OS baseline (recommendations): assessed on a blocking thread at
    // start and every snapshot interval, off the event path.
    let mut baseline_job: Option<tokio::task::JoinHandle<Option<Vec<shrike_common::schema::Event>>>> = None;
    // Heartbeats every interval (a reload or a remote configuration may
    // change it); the snapshots at start already say the agent is up.
    let started = Instant::now();
    // Devices plugged in or removed (collect/hardware.rs: sysfs polled).
    let mut hardware = crate::collect::hardware::Hardware::new(std::path::Path::new("/sys"));
    let mut hardware_tick = timers::every(HARDWARE_POLL, started + HARDWARE_POLL);
    // From here on, warnings and errors are Diagnostic events too.
    let mut diags = crate::diagnostic::open();
    let mut heartbeat_every = pipe.settings.heartbeat_interval;
    let mut heartbeat = heartbeat_every.map(|iv| timers::every(iv, started + iv));
    let outcome: anyhow::Result<()> = loop {
        if pipe.settings.heartbeat_interval != heartbeat_every {
            heartbeat_every = pipe.settings.heartbeat_interval;
            heartbeat = heartbeat_every.map(|iv| timers::every(iv, Instant::now() + iv));
        }
        let next_agg = pipe.next_aggregate();
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break Err(anyhow::anyhow!("kernel readers stopped")) };
                // The policy may have changed with a reload.
                misses.set_policy(pipe.settings.exec_misses, &mut ready);
                for mut ev in batch {
                    if !procs.apply(&mut ev) {
                        continue;
                    }
                    misses.push(ev, &mut ready);
                    for mut ev in ready.drain(..) {
                        pipe.handle(&mut ev, &mut users);
                    }
                }
            }
            // Failed execs wait for the exec that may follow them (enrich/exec_misses.rs).
            _ = misses_tick.tick(), if misses.held() > 0 => {
                misses.expire(chrono::Utc::now(), &mut ready);
                for mut ev in ready.drain(..) {
                    pipe.handle(&mut ev, &mut users);
                }
            }
            _ = sleep_until_opt(next_agg) => pipe.flush_due_aggregates(),
            _ = pipe.timers.snapshots.tick() => {
                for ev in crate::collect::snapshot_events(&args.probe.proc_root, pipe.settings.firewall_snapshot) {
                    pipe.batches.push(Priority::Low, ev, &mut pipe.sink);
                }
                if pipe.settings.detect.recommend.enabled && baseline_job.is_none() {
                    let cfg = pipe.settings.detect.recommend.clone();
                    let max = pipe.settings.max_message_size;
                    baseline_job = Some(tokio::task::spawn_blocking(move || {
                        crate::recommend::run_once(&cfg).map(|r| r.os_baseline(max))
                    }));
                }
            }
            Some(done) = async { Some(baseline_job.as_mut()?.await) }, if baseline_job.is_some() => {
                baseline_job = None;
                for ev in done.ok().flatten().unwrap_or_default() {
                    pipe.batches.push(Priority::Low, ev, &mut pipe.sink);
                }
            }
            _ = pipe.timers.health.tick() => {
                let now = Health::now(&pipe, &probes);
                for ev in now.events_since(&reported) {
                    pipe.batches.push(Priority::Low, ev, &mut pipe.sink);
                }
                reported = now;
            }
            _ = async {
                match heartbeat.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            } => {
                let ev = remote.heartbeat(started.elapsed(), heartbeat_every.unwrap_or_default());
                pipe.batches.push(Priority::High, ev, &mut pipe.sink);
            }
            // The agent's own warnings and errors (rate-limited).
            Some(d) = async {
                match diags.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let prio = match d.severity {
                    shrike_common::schema::DiagnosticSeverity::Error => Priority::High,
                    _ => Priority::Low,
                };
                pipe.batches.push(prio, d.into_event(), &mut pipe.sink);
            }
            _ = hardware_tick.tick() => {
                if let Some(ev) = hardware.poll() {
                    pipe.batches.push(Priority::High, ev, &mut pipe.sink);
                }
            }
            _ = pipe.timers.high.tick() => pipe.batches.flush(Priority::High, &mut pipe.sink),
            _ = pipe.timers.low.tick() => pipe.batches.flush(Priority::Low, &mut pipe.sink),
            _ = pipe.timers.retry.tick(), if matches!(pipe.sink, Sink::Held(_)) => pipe.retry_publisher(),
            _ = pipe.timers.detect.tick(), if !pipe.detect.is_empty() => pipe.tick_detect(),
            _ = durable_tick.tick() => pipe.batches.journal_durable(&pipe.sink),
            _ = trim_tick.tick() => {
                procs.shrink();
                for agg in pipe.aggs.values_mut() {
                    agg.shrink();
                }
                crate::memory::trim();
            }
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(e.into()),
            },
            _ = sighup.recv() => {
                pipe.reload(&args, remote.layer.as_ref(), &mut probes.ebpf).await;
                procs.set_watch(std::sync::Arc::new(pipe.settings.detect.watch.clone()));
                if let Some(s) = &sdk {
                    s.update(&pipe.settings.sdk);
                }
            }
            Some(reply) = async {
                match scrapes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let _ = reply.send(metrics::render(&pipe, &probes, &stats));
            }
            // Remote configuration (the publisher's subscriptions).
            Some(msg) = async {
                match &mut pipe.sink {
                    Sink::Mqtt(p) => p.incoming().await,
                    _ => std::future::pending().await,
                }
            } => {
                remote.handle(msg, &mut pipe, &args, &mut probes.ebpf).await;
                procs.set_watch(std::sync::Arc::new(pipe.settings.detect.watch.clone()));
                if let Some(s) = &sdk {
                    s.update(&pipe.settings.sdk);
                }
            }
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
            Some(mut ev) = sdk_rx.recv(), if sdk.is_some() => pipe.handle(&mut ev, &mut users),
        }
    };

    // Detach, drain the kernel, then send everything pending (aggregates
    // included). Detached first, as `shrike events` does: with the programs
    // attached a busy machine never lets the readers go quiet, and the lost
    // counters read below would miss records still in the buffers.
    probes.detach();
    crate::drain_detached(&mut rx, |batch| {
        for mut ev in batch {
            if !procs.apply(&mut ev) {
                continue;
            }
            misses.push(ev, &mut ready);
            for mut ev in ready.drain(..) {
                pipe.handle(&mut ev, &mut users);
            }
        }
        true
    })
    .await;
    misses.flush(&mut ready);
    for mut ev in ready.drain(..) {
        pipe.handle(&mut ev, &mut users);
    }
    // No more SDK clients; what they sent before is published.
    drop(sdk);
    while let Ok(mut ev) = sdk_rx.try_recv() {
        pipe.handle(&mut ev, &mut users);
    }
    pipe.flush_all();
    // The learnt baseline, for the next start.
    pipe.detect.persist();
    // A last attempt for messages held since a failed reload.
    pipe.retry_publisher();
    let journal = pipe.stop_journal().await;
    let lost = probes::read_counters(&probes.ebpf, shrike_common::names::LOST);
    let counters = serde_json::json!({
        "received": stats.received.load(Ordering::Relaxed),
        "kernel_lost": lost.iter().map(|(k, n)| (k.name(), n)).collect::<std::collections::BTreeMap<_, _>>(),
        "messages": pipe.batches.messages,
        "detect": pipe.detect.stats,
        "sdk": pipe.sdk_stats.as_ref().map(|s| s.counts()),
        "journal": journal,
        "dropped": {
            "high": pipe.batches.dropped.get(&Priority::High),
            "low": pipe.batches.dropped.get(&Priority::Low),
        },
    });
    tracing::info!("shrike stopping: {}", crate::telemetry::fields(&counters));
    match pipe.sink {
        // Whatever is not acknowledged in time stays in the spool for the next start.
        Sink::Mqtt(p) => {
            let stats = stop_publisher(p, Duration::from_secs(5)).await;
            tracing::info!("publisher stopping: {}", crate::telemetry::fields(&stats));
        }
        Sink::Held(held) => {
            tracing::error!(
                messages = held.msgs.len(),
                "no publisher runs: the messages held in memory are lost"
            );
        }
        Sink::DryRun(_) => {}
    }
    tasks.abort_all();
    outcome
}

/// How often sysfs's device lists are compared (a USB device plugged in
/// is reported within this and the high interval).
const HARDWARE_POLL: Duration = Duration::from_secs(2);
/// How often the journal learns what the spool made durable: with the
/// journal's group commit (200 ms) an event in the spool is off the
/// journal's replay list well within the 1 s the guarantee names.
const DURABLE_TICK: Duration = Duration::from_millis(100);

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
