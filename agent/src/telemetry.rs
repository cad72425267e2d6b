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
    // Warnings and errors are also copied to `shrike run`'s Diagnostic
    // events (crate::diagnostic; inert in other commands).
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .finish()
        .with(crate::diagnostic::Layer)
        .try_init();
}

/// Whether the `n`-th occurrence (from 1) of a repeated warning is logged:
/// the first 10, then the powers of two, so a flood of drops cannot flood
/// the log. The line carries `n`; the counters themselves stay exact.
pub fn sampled(n: u64) -> bool {
    n <= 10 || n.is_power_of_two()
}

/// Counters as readable `key=value` fields for a log line (nested keys
/// joined with `.`, zero and empty values left out): `received=120
/// detect.alerts=2 kernel_lost.exec=3`, not a Rust Debug dump.
pub fn fields(v: &impl serde::Serialize) -> String {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        let key = |k: &str| if prefix.is_empty() { k.to_owned() } else { format!("{prefix}.{k}") };
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    walk(&key(k), v, out);
                }
            }
            Value::Null | Value::Bool(false) => {}
            Value::Number(n) if n.as_f64() == Some(0.0) => {}
            Value::String(s) if s.is_empty() => {}
            Value::Array(a) if a.is_empty() => {}
            Value::String(s) if s.contains([' ', '=', '"']) => out.push(format!("{prefix}={s:?}")),
            Value::String(s) => out.push(format!("{prefix}={s}")),
            Value::Array(a) => {
                let items: Vec<String> =
                    a.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned)).collect();
                out.push(format!("{prefix}={}", items.join(",")));
            }
            other => out.push(format!("{prefix}={other}")),
        }
    }
    let mut out = Vec::new();
    match serde_json::to_value(v) {
        Ok(v) => walk("", &v, &mut out),
        Err(e) => out.push(format!("unprintable={e}")),
    }
    out.join(" ")
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

    #[test]
    fn counters_log_as_flat_fields() {
        let v = serde_json::json!({
            "kind": "stats",
            "received": 120,
            "perf_lost": 0,
            "detect": {"alerts": 2, "rules_skipped": {"windows logsource": 3}},
            "kernel_lost": {"exec": 3, "fork": 0},
            "note": "two words",
        });
        assert_eq!(
            super::fields(&v),
            "detect.alerts=2 detect.rules_skipped.windows logsource=3 kernel_lost.exec=3 kind=stats \
             note=\"two words\" received=120"
        );
    }
}
