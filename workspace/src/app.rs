//! The `shrike-workspace` process: its command line run, and the workspace
//! itself (ingest, retention, analytics, the page). Behind the `server`
//! feature.

use std::{process::ExitCode, sync::Arc};

use tokio::sync::{mpsc, watch};

use crate::{analytics, cli::Cli, config, config::Settings, ingest, metrics, query, store::Db, web};

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SHRIKE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .init();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("starting the tokio runtime")
}

/// Runs a command line; the exit code (2: bad settings, 1: failure).
pub fn run(cli: Cli) -> ExitCode {
    let rt = runtime();
    match cli.command {
        Some(cmd) => rt.block_on(query::run(cmd)),
        None => {
            let settings = match Settings::resolve(&cli.serve) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("shrike-workspace: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(serve(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shrike-workspace: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The workspace itself: ingest, retention, analytics, and the page if asked.
pub async fn serve(s: Settings) -> anyhow::Result<()> {
    let opts = ingest::broker::options(&s.broker, s.max_message_size)
        .map_err(|e| anyhow::anyhow!("broker settings: {e}"))?;
    let db = Db::open(&s.db, true).await.map_err(|e| anyhow::anyhow!("opening the database: {e}"))?;
    let metrics = Arc::new(metrics::Metrics::default());
    if let Some(h) = &s.http {
        let listener = tokio::net::TcpListener::bind(h.addr)
            .await
            .map_err(|e| anyhow::anyhow!("listening on {}: {e}", h.addr))?;
        tracing::info!("web page on http://{}", listener.local_addr()?);
        tokio::spawn(web::serve(
            listener,
            db.clone(),
            h.clone(),
            Arc::clone(&metrics),
            s.analytics.silent_after.unwrap_or(std::time::Duration::from_secs(15 * 60)),
        ));
    }
    tokio::spawn(ingest::retention(db.clone(), s.retain.clone(), s.retain_interval, Arc::clone(&metrics)));
    // --publish-alerts: the broker task publishes what the writer and the
    // detectors newly store.
    let (alert_tx, alert_rx) = match &s.broker.publish_alerts {
        Some(_) => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    tokio::spawn(analytics::run(db.clone(), s.analytics.clone(), Arc::clone(&metrics), alert_tx.clone()));

    let (tx, rx) = mpsc::channel(s.batch_messages * 4);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut writer = tokio::spawn(ingest::writer(
        db.clone(),
        ingest::WriterSettings {
            filter: s.broker.topic.clone(),
            batch_messages: s.batch_messages,
            batch_delay: s.batch_delay,
            max_message_size: s.max_message_size,
            alerts: alert_tx,
            retry_for: s.db_retry_for,
        },
        rx,
        ack_tx,
        Arc::clone(&metrics),
    ));
    let broker = tokio::spawn(ingest::broker::run(
        s.broker.clone(),
        opts,
        tx,
        ack_rx,
        alert_rx,
        stop_rx,
        Arc::clone(&metrics),
    ));
    tracing::info!(
        "shrike-workspace ready: {} ({}), {}:{} {}",
        match &s.db {
            config::DbTarget::Sqlite(p) => p.display().to_string(),
            config::DbTarget::Postgres(_) => "postgres".into(),
        },
        db.backend(),
        s.broker.host,
        s.broker.port,
        s.broker.shared_filter()
    );
    let failed = tokio::select! {
        _ = shutdown_signal() => None,
        // The writer ends before a stop only when it gave up.
        w = &mut writer => Some(w),
    };
    let failed = match failed {
        None => {
            tracing::info!("stopping: writing what was received, then acknowledging it");
            let _ = stop_tx.send(true);
            // The broker task drops its sender when it returns: the writer
            // then ends after its last batch, and the broker task sends
            // that batch's acks.
            let mut failed = None;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(20), async {
                let _ = broker.await;
                if let Ok(Err(e)) = writer.await {
                    failed = Some(e);
                }
            })
            .await;
            failed
        }
        Some(w) => {
            // The writer's ack sender is gone: the broker task sends the
            // acks of what was committed before, disconnects and returns;
            // the rest stays unacknowledged.
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), broker).await;
            match w {
                Ok(Err(e)) => Some(e),
                Ok(Ok(())) => None,
                Err(e) => anyhow::bail!("the writer task failed: {e}"),
            }
        }
    };
    use std::sync::atomic::Ordering::Relaxed;
    tracing::info!(
        "stopped: {} messages stored, {} duplicates skipped, {} events, {} alerts, {} rejected",
        metrics.stored_messages.load(Relaxed),
        metrics.duplicates.load(Relaxed),
        metrics.events.load(Relaxed),
        metrics.alerts.load(Relaxed),
        metrics.rejected.load(Relaxed)
    );
    if let Some(e) = failed {
        tracing::error!("{e}");
        return Err(e.into());
    }
    Ok(())
}
