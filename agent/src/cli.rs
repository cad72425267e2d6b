//! The command line: the subcommands, each with its flags defined beside the
//! code that runs it (nothing in the crate depends on this module).

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "shrike", version = crate::VERSION, about = "eBPF security telemetry agent for Linux IoT gateways")]
pub struct Cli {
    /// Log filter for the agent's own log on stderr (tracing's EnvFilter syntax;
    /// RUST_LOG works too).
    #[arg(long, global = true, default_value = "info", env = "SHRIKE_LOG")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every security event as one JSON object per line on stdout.
    Events(Box<crate::EventsArgs>),
    /// The daemon: security messages to an MQTT broker or Azure IoT Hub, with
    /// aggregation, priority batching and an on-disk spool.
    Run(Box<crate::daemon::RunArgs>),
    /// Preflight: what this kernel and machine support; exits non-zero when the
    /// agent cannot run here.
    Check(crate::check::CheckArgs),
    /// Sigma rules without the kernel (no root needed): validate them, or run
    /// them over recorded `shrike events` output.
    Rules(crate::detect::sigma::cli::RulesArgs),
    /// The learnt baseline of normal behaviour: show it, or start learning
    /// again.
    Baseline(crate::detect::baseline::cli::BaselineArgs),
    /// The OS baseline: runs the security configuration checks (Shrike's
    /// gateway policy and SCA policy files) once, without the kernel probes;
    /// exits 1 when a high-severity check fails.
    Recommendations(crate::recommend::cli::RecommendArgs),
    /// Threat-intelligence lists without the kernel: validate them (counts
    /// by type, malformed lines with their line numbers).
    Ioc(crate::detect::ioc::cli::IocArgs),
}
