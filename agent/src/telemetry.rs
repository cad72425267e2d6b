//! The agent's own log: tracing to stderr; kernel-side logs (aya-log) go into it.

use std::io::IsTerminal;

use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;

pub fn init(filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files would keep the
    // escape codes. NO_COLOR (https://no-color.org) turns them off there too.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // tracing-subscriber's default init also routes the `log` crate (aya-log's
    // records) into tracing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Whether the `n`-th occurrence (from 1) of a repeated warning is logged:
/// the first 10, then the powers of two, so a flood of drops cannot flood
/// the log. The line carries `n`; the counters themselves stay exact.
pub fn sampled(n: u64) -> bool {
    n <= 10 || n.is_power_of_two()
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

#[cfg(test)]
mod tests {
    #[test]
    fn sampling_logs_the_first_ten_then_powers_of_two() {
        let logged: Vec<u64> = (1..=300).filter(|&n| super::sampled(n)).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64, 128, 256]);
    }
}
