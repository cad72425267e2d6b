//! `shrike recommendations`: the checks once, without the kernel probes
//! (and without root, except for what only root may read: /etc/shadow).

use std::{io::Write, path::PathBuf};

use clap::Args;

use super::{RecommendConfig, assess, load};

#[derive(Debug, Clone, Args)]
pub struct RecommendArgs {
    /// A policy file in Wazuh's SCA format (repeatable), besides Shrike's
    /// built-in gateway policy [default: none].
    #[arg(long = "policy", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// Leave Shrike's built-in gateway policy out.
    #[arg(long)]
    pub no_builtin_policy: bool,
    /// Assess this root file system instead of the live one (every path a
    /// check reads is resolved inside it; commands are not run).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Run the `c:` (command) rules of the policy files given with --policy.
    #[arg(long)]
    pub allow_commands: bool,
    /// A list of default credentials (`user:password` lines; repeatable),
    /// besides the built-in one [default: none].
    #[arg(long = "credentials", value_name = "FILE")]
    pub credentials: Vec<PathBuf>,
    /// CPU time the default-credential check may spend.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::units::parse_interval)]
    pub credential_budget: std::time::Duration,
    /// One JSON object per check instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Exit codes: 0 no high-severity check fails, 1 one does, 2 a policy or
/// list does not load (each error printed as `file:line: reason`).
pub fn run(args: &RecommendArgs) -> i32 {
    let cfg = RecommendConfig {
        enabled: true,
        builtin_policy: !args.no_builtin_policy,
        policies: args.policies.clone(),
        allow_commands: args.allow_commands,
        root: args.root.clone(),
        credential_lists: args.credentials.clone(),
        credential_budget: args.credential_budget,
    };
    if !cfg.root.is_dir() {
        eprintln!("error: --root {}: not a directory", cfg.root.display());
        return 2;
    }
    let loaded = match load(&cfg) {
        Ok(l) => l,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return 2;
        }
    };
    let report = assess(&loaded, &cfg);
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        report.json_lines().iter().try_for_each(|l| writeln!(out, "{l}"))
    } else {
        write!(out, "{}", report.table())
    };
    if written.is_err() {
        return 1;
    }
    let c = &report.creds;
    eprintln!(
        "default credentials: {} accounts, {} guesses in {} ms of CPU ({} ms){}{}",
        c.accounts,
        c.guesses,
        c.cpu_ms,
        c.elapsed_ms,
        if c.budget_exhausted {
            format!(", budget ran out with {} untried", c.untried)
        } else {
            String::new()
        },
        if c.unsupported > 0 {
            format!(", {} hashes of an unsupported scheme", c.unsupported)
        } else {
            String::new()
        },
    );
    if !report.skipped_rules.is_empty() {
        eprintln!("rules skipped (type not evaluated by Shrike): {:?}", report.skipped_rules);
    }
    if report.walk_truncated {
        eprintln!("a directory walk stopped at its bound of {} entries", super::sources::WALK_MAX_ENTRIES);
    }
    if report.high_failures() > 0 { 1 } else { 0 }
}
