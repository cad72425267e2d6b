//! The command line: the subcommands, each with its flags defined beside the
//! code that runs it (nothing in the crate depends on this module).

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shrike",
    version = crate::VERSION,
    about = "eBPF security telemetry agent for Linux IoT gateways",
    after_help = "Each command has its own flags: shrike <COMMAND> --help (e.g. shrike run --help).\n\
                  Every flag of `run` can also be set in its TOML config file (deploy/shrike.toml).\n\
                  Exit codes: 0 ok, 1 failure, 2 bad flag or setting, 3 cannot run on this kernel."
)]
pub struct Cli {
    /// Log filter for the agent's own log on stderr (tracing's EnvFilter syntax;
    /// RUST_LOG works too).
    #[arg(long, global = true, default_value = "info", env = "SHRIKE_LOG")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Each variant's first paragraph is its one line in `shrike --help`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Live security events, one JSON object per line on stdout.
    Events(Box<crate::EventsArgs>),
    /// The daemon: security messages to an MQTT broker or Azure IoT Hub.
    ///
    /// Events are aggregated, batched by priority and kept in an on-disk
    /// spool until the broker acknowledges them.
    Run(Box<crate::daemon::RunArgs>),
    /// Preflight: what this kernel supports (exit 3 when Shrike cannot run).
    Check(crate::check::CheckArgs),
    /// Sigma rules without the kernel: validate, or test on recorded events.
    ///
    /// No root needed: `rules check` validates rule files, `rules test` runs
    /// them over recorded `shrike events` output.
    Rules(crate::detect::sigma::cli::RulesArgs),
    /// The learnt baseline of normal behaviour: show it, or relearn.
    Baseline(crate::detect::baseline::cli::BaselineArgs),
    /// The OS baseline: security configuration checks, run once.
    ///
    /// Shrike's gateway policy and SCA policy files, without the kernel
    /// probes; exits 1 when a high-severity check fails.
    Recommendations(crate::recommend::cli::RecommendArgs),
    /// Threat-intelligence lists without the kernel: validate and count them.
    ///
    /// Counts by type, malformed lines with their line numbers.
    Ioc(crate::detect::ioc::cli::IocArgs),
    /// Report a security event through the agent's SDK socket (as any program can).
    ///
    /// One event from --name/--payload, or JSON lines on stdin; prints the
    /// agent's replies, exits 1 when one is a rejection.
    Send(crate::sdk::send::SendArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag of every command, with the path of commands it belongs to.
    fn flags() -> Vec<(String, clap::Arg)> {
        fn walk(path: String, cmd: &clap::Command, out: &mut Vec<(String, clap::Arg)>) {
            for a in cmd.get_arguments() {
                if !a.is_positional() && !matches!(a.get_id().as_str(), "help" | "version") {
                    out.push((path.clone(), a.clone()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(format!("{path} {}", sub.get_name()), sub, out);
            }
        }
        let mut cli = Cli::command();
        cli.build();
        let mut out = Vec::new();
        walk("shrike".into(), &cli, &mut out);
        out
    }

    /// `--help` of every command: each flag says what it does and, when it
    /// takes a value, what it is without it (clap's default, or written in
    /// the help where the default is computed or comes from the file).
    #[test]
    fn every_flag_has_a_description_and_a_default() {
        let mut missing = Vec::new();
        for (cmd, a) in flags() {
            let help = a.get_long_help().or(a.get_help()).map(|h| h.to_string()).unwrap_or_default();
            let name = format!("{cmd} --{}", a.get_long().unwrap_or(a.get_id().as_str()));
            if help.trim().is_empty() {
                missing.push(format!("{name}: no description"));
            }
            let takes_value = a.get_num_args().is_some_and(|n| n.takes_values())
                && !matches!(a.get_action(), clap::ArgAction::SetTrue | clap::ArgAction::Count);
            if takes_value
                && !a.is_required_set()
                && a.get_default_values().is_empty()
                && !help.contains("[default: ")
            {
                missing.push(format!("{name}: no default shown"));
            }
        }
        assert!(missing.is_empty(), "flags without help:\n{}", missing.join("\n"));
    }

    /// `shrike --help` lists the commands, one line each, and says where
    /// their flags are.
    #[test]
    fn top_level_help_lists_the_commands_one_line_each() {
        let help = Cli::command().render_help().to_string();
        for sub in Cli::command().get_subcommands() {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{} ", sub.get_name())))
                .unwrap_or_else(|| panic!("{} not listed:\n{help}", sub.get_name()));
            assert!(line.len() <= 100, "one short line for {}: {line}", sub.get_name());
        }
        assert!(help.contains("shrike <COMMAND> --help"), "{help}");
    }
}
