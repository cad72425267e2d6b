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
mod pipeline;
mod publisher;
mod reload;
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
    let settings = RunSettings::resolve(&args)?;
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
    let id = agent_id(&settings.agent_id_file);
    let sink = match PublisherSetup::of(&settings) {
        None => Sink::DryRun(std::io::stdout()),
        Some(setup) => Sink::Mqtt(setup.start()?),
    };

    let wake_kinds =
        collected.iter().copied().filter(|k| settings.priority[k] == KindPriority::High).collect();
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
    crate::caps::drop_after_attach();

    let mut procs = ProcessTable::new(&args.probe.proc_root);
    procs.seed();
    // Changes of `watch` take a restart (the kernel's prefixes are set once).
    procs.set_watch(std::sync::Arc::new(settings.detect.watch.clone()));
    let mut misses = MissFolder::new(settings.exec_misses);
    let mut ready = Vec::new();
    let mut users = Users::new("/etc/passwd");
    let mut attachable = probes::collected_kinds(&attach);
    attachable.insert(Kind::Alert);
    let mut pipe = Pipeline::new(settings, detect, attachable, id, sink);
    let mut reported = Health::default();

    let mut misses_tick =
        tokio::time::interval(crate::enrich::exec_misses::HOLD.to_std().unwrap_or_default());
    misses_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The OS baseline (recommendations): assessed on a blocking thread at
    // start and every snapshot interval, off the event path.
    let mut baseline_job: Option<tokio::task::JoinHandle<Option<Vec<shrike_common::schema::Event>>>> = None;
    let outcome: anyhow::Result<()> = loop {
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
                for ev in crate::collect::snapshot_events(&args.probe.proc_root) {
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
            _ = pipe.timers.high.tick() => pipe.batches.flush(Priority::High, &mut pipe.sink),
            _ = pipe.timers.low.tick() => pipe.batches.flush(Priority::Low, &mut pipe.sink),
            _ = pipe.timers.retry.tick(), if matches!(pipe.sink, Sink::Held(_)) => pipe.retry_publisher(),
            _ = pipe.timers.detect.tick(), if !pipe.detect.is_empty() => pipe.tick_detect(),
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(e.into()),
            },
            _ = sighup.recv() => pipe.reload(&args, &mut probes.ebpf).await,
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
        }
    };

    // Drain the kernel, then send everything pending (aggregates included).
    // Bounded: the probes are still attached, and a busy machine never goes
    // 300 ms without an event (the agent would never exit).
    let drain_end = Instant::now() + Duration::from_secs(1);
    while let Ok(Some(batch)) =
        tokio::time::timeout_at(drain_end.min(Instant::now() + Duration::from_millis(300)), rx.recv()).await
    {
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
    misses.flush(&mut ready);
    for mut ev in ready.drain(..) {
        pipe.handle(&mut ev, &mut users);
    }
    pipe.flush_all();
    // The learnt baseline, for the next start.
    pipe.detect.persist();
    // A last attempt for messages held since a failed reload.
    pipe.retry_publisher();
    let lost = probes::read_counters(&probes.ebpf, shrike_common::names::LOST);
    tracing::info!(
        received = stats.received.load(Ordering::Relaxed),
        kernel_lost = ?lost,
        messages = pipe.batches.messages,
        detect = ?pipe.detect.stats,
        dropped = ?pipe.batches.dropped,
        "shrike stopping"
    );
    match pipe.sink {
        // Whatever is not acknowledged in time stays in the spool for the next start.
        Sink::Mqtt(p) => {
            let stats = stop_publisher(p, Duration::from_secs(5)).await;
            tracing::info!(?stats, "publisher stopping");
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
