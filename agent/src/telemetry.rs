//! The agent's own log: tracing to stderr; kernel-side logs (aya-log) go into it.

use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;

pub fn init(filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // tracing-subscriber's default init also routes the `log` crate (aya-log's
    // records) into tracing.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Forwards the eBPF programs' aya-log records into the log. The perf-array
/// object has no log map (aya-log needs a ring buffer): then nothing to do.
pub fn spawn_kernel_log(ebpf: &mut aya::Ebpf, tasks: &mut JoinSet<anyhow::Result<()>>) {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => {
            tasks.spawn(async move {
                let mut fd = crate::events::reader::register(logger)?;
                loop {
                    let mut guard = fd.readable_mut().await?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            });
        }
        Err(e) => tracing::debug!("no kernel log: {e}"),
    }
}
