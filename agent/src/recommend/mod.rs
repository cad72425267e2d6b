//! Recommendations: the OS baseline, with checks as data.
//!
//! Policies in the YAML format of Wazuh's security configuration assessment
//! ([`policy`]) are evaluated against a root file system ([`root`]: the live
//! `/` or `--root DIR`) by [`eval`], with Shrike's `x:` extension sources
//! ([`sources`]) and the default-credential check ([`creds`]). Shrike's own
//! gateway policy (`deploy/policies/shrike-gateway.yml`) is built in.
//!
//! One result per check: `pass`, `fail`, `not_applicable` (what it checks is
//! not on this system, or its policy's requirements are not met) or `error`
//! (the check could not finish). Printed by `shrike recommendations` (a table,
//! or JSON lines), at start by `shrike events` (JSON lines), and sent by
//! `shrike run` as an `OSBaseline` snapshot at start and every snapshot
//! interval (not-applicable checks are left out: the schema has no such
//! result).

pub mod cli;
pub mod creds;
pub mod eval;
pub mod policy;
pub mod root;
pub mod sources;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Serialize;
use shrike_common::schema as sm;

use self::{
    creds::{CredConfig, CredStats},
    eval::{Env, Outcome},
    policy::{Origin, Policy, Severity, Target},
    sources::Source,
};

/// Shrike's gateway policy, built in.
pub const BUILTIN_POLICY: &str = include_str!("../../../deploy/policies/shrike-gateway.yml");
pub const BUILTIN_POLICY_NAME: &str = "builtin:shrike-gateway.yml";

/// Settings (`[detect]` keys and flags).
#[derive(Clone, Debug, PartialEq)]
pub struct RecommendConfig {
    /// Recommendations at all (`recommendations = false`, `--no-recommendations`).
    pub enabled: bool,
    /// Shrike's gateway policy (`builtin_policy = false` leaves it out).
    pub builtin_policy: bool,
    /// More policy files (`policies = [...]`, `--policy`).
    pub policies: Vec<PathBuf>,
    /// `c:` rules of local policy files run (`allow_commands`, `--allow-commands`).
    pub allow_commands: bool,
    /// The root file system assessed (`--root`).
    pub root: PathBuf,
    /// Default-credential lists besides the built-in one.
    pub credential_lists: Vec<PathBuf>,
    /// CPU time the default-credential check may spend per run.
    pub credential_budget: Duration,
}

impl Default for RecommendConfig {
    fn default() -> Self {
        RecommendConfig {
            enabled: true,
            builtin_policy: true,
            policies: Vec::new(),
            allow_commands: false,
            root: PathBuf::from("/"),
            credential_lists: Vec::new(),
            credential_budget: Duration::from_secs(2),
        }
    }
}

/// Policies read and compiled, with the credential lists.
pub struct Loaded {
    pub policies: Vec<Policy>,
    pub creds: CredConfig,
}

/// Reads every policy and list: all problems as `file:line: reason`.
pub fn load(cfg: &RecommendConfig) -> Result<Loaded, Vec<String>> {
    let mut errors = Vec::new();
    let mut policies = Vec::new();
    if cfg.builtin_policy {
        match policy::parse(BUILTIN_POLICY, BUILTIN_POLICY_NAME, Origin::Embedded) {
            Ok(p) => policies.push(p),
            Err(e) => errors.extend(e),
        }
    }
    for p in &cfg.policies {
        match policy::load_file(p) {
            Ok(p) => policies.push(p),
            Err(e) => errors.extend(e),
        }
    }
    let mut creds = CredConfig { budget: cfg.credential_budget, ..CredConfig::default() };
    for p in &cfg.credential_lists {
        let name = p.display().to_string();
        match std::fs::read_to_string(p) {
            Ok(text) => match creds::check_list(&name, &text) {
                Ok(()) => creds.lists.push((name, text)),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if errors.is_empty() { Ok(Loaded { policies, creds }) } else { Err(errors) }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    Pass,
    Fail,
    NotApplicable,
    Error,
}

impl CheckResult {
    pub fn name(self) -> &'static str {
        match self {
            CheckResult::Pass => "pass",
            CheckResult::Fail => "fail",
            CheckResult::NotApplicable => "not_applicable",
            CheckResult::Error => "error",
        }
    }
}

/// One check's result: a `{"kind":"recommendation",...}` line.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    /// The policy's check id.
    pub check: String,
    pub policy: String,
    pub title: String,
    pub result: CheckResult,
    pub severity: &'static str,
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remediation: String,
    /// What made it fail, not apply or err (the rule and the line found).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// CceId as sent in OSBaseline (a CCE or CIS id, else policy:check).
    pub cce_id: String,
    #[serde(skip)]
    sev: Severity,
}

/// A run's results and what it cost.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub creds: CredStats,
    /// Rules of types Shrike does not evaluate, by type.
    pub skipped_rules: BTreeMap<String, u64>,
    /// A directory walk stopped at its bound.
    pub walk_truncated: bool,
}

/// Runs every check of every policy once (blocking: file reads, walks,
/// hash verification; run it off the event path).
pub fn assess(loaded: &Loaded, cfg: &RecommendConfig) -> Report {
    let mut env = Env::new(cfg.root.clone(), cfg.allow_commands, loaded.creds.clone());
    let mut report = Report::default();
    for p in &loaded.policies {
        for (t, n) in &p.skipped {
            *report.skipped_rules.entry(t.clone()).or_default() += n;
        }
        let unmet = p.requirements.as_ref().and_then(|req| {
            let v = eval::check(req, &p.origin, &mut env);
            (v.outcome != Outcome::Pass)
                .then(|| format!("policy requirements not met: {} ({})", req.title, v.detail))
        });
        for c in &p.checks {
            let (result, reason) = match &unmet {
                Some(why) => (CheckResult::NotApplicable, why.clone()),
                None => {
                    let v = eval::check(c, &p.origin, &mut env);
                    let uses_creds = c
                        .rules
                        .iter()
                        .any(|r| matches!(&r.target, Target::Ext(Source::DefaultCredentials, _)));
                    let walked = c.rules.iter().find_map(|r| match &r.target {
                        Target::Ext(Source::Suid(d) | Source::WorldWritable(d), _) => {
                            env.truncated.contains(&d.join(",")).then(|| d.join(", "))
                        }
                        _ => None,
                    });
                    let s = &env.cred_stats;
                    if let Some(dirs) = walked.filter(|_| v.outcome != Outcome::Fail) {
                        let why = format!(
                            "the walk of {dirs} stopped at its bound of {} entries before finishing",
                            sources::WALK_MAX_ENTRIES
                        );
                        (CheckResult::Error, why)
                    } else if uses_creds && s.budget_exhausted && v.outcome != Outcome::Fail {
                        let why = format!(
                            "the credential budget ({} ms) ran out: {} guesses tried, {} left untried",
                            loaded.creds.budget.as_millis(),
                            s.guesses,
                            s.untried
                        );
                        (CheckResult::Error, why)
                    } else {
                        match v.outcome {
                            Outcome::Pass => (CheckResult::Pass, String::new()),
                            Outcome::Fail => (CheckResult::Fail, v.detail),
                            Outcome::NotApplicable => (CheckResult::NotApplicable, v.detail),
                        }
                    }
                }
            };
            report.findings.push(Finding {
                kind: "recommendation",
                check: c.id.clone(),
                policy: p.id.clone(),
                title: c.title.clone(),
                result,
                severity: c.severity.name(),
                description: if c.description.is_empty() { c.title.clone() } else { c.description.clone() },
                remediation: c.remediation.clone(),
                reason,
                cce_id: c.cce_id(&p.id),
                sev: c.severity,
            });
        }
    }
    report.creds = env.cred_stats.clone();
    report.walk_truncated = !env.truncated.is_empty();
    report
}

impl Report {
    /// Failed checks of high or critical severity (exit 1 when any).
    pub fn high_failures(&self) -> usize {
        self.findings.iter().filter(|f| f.result == CheckResult::Fail && f.sev >= Severity::High).count()
    }

    pub fn count(&self, r: CheckResult) -> usize {
        self.findings.iter().filter(|f| f.result == r).count()
    }

    /// One JSON line per check.
    pub fn json_lines(&self) -> Vec<String> {
        self.findings.iter().map(|f| serde_json::to_string(f).unwrap_or_default()).collect()
    }

    /// The `OSBaseline` snapshot: one item per check that applies here, in
    /// as many events as keep each under `max_bytes` of JSON (a message
    /// holds at least one event, and `max_message_size` bounds messages).
    pub fn os_baseline(&self, max_bytes: usize) -> Vec<sm::Event> {
        // The message envelope and the event's own fields.
        let budget = max_bytes.saturating_sub(1024).max(256);
        let mut out = Vec::new();
        let mut items: Vec<sm::OSBaseline> = Vec::new();
        let mut size = 0;
        for item in self.baseline_items() {
            let n = serde_json::to_vec(&item).map(|v| v.len()).unwrap_or(0) + 1;
            if !items.is_empty() && size + n > budget {
                out.push(sm::Event::new(sm::Payload::OSBaseline(std::mem::take(&mut items))));
                size = 0;
            }
            size += n;
            items.push(item);
        }
        if !items.is_empty() {
            out.push(sm::Event::new(sm::Payload::OSBaseline(items)));
        }
        if out.is_empty() {
            out.push(sm::Event::empty(sm::Kind::OSBaseline));
        }
        out
    }

    fn baseline_items(&self) -> impl Iterator<Item = sm::OSBaseline> + '_ {
        self.findings.iter().filter(|f| f.result != CheckResult::NotApplicable).map(|f| {
            let mut extra = sm::ExtraDetails::new();
            extra.insert("CheckId".into(), f.check.clone());
            extra.insert("Policy".into(), f.policy.clone());
            extra.insert("Title".into(), f.title.clone());
            if !f.remediation.is_empty() {
                extra.insert("Remediation".into(), f.remediation.clone());
            }
            sm::OSBaseline {
                description: f.description.clone(),
                cce_id: f.cce_id.clone(),
                result: match f.result {
                    CheckResult::Pass => sm::BaselineResult::Pass,
                    CheckResult::Fail => sm::BaselineResult::Fail,
                    _ => sm::BaselineResult::Err,
                },
                error: if f.result == CheckResult::Pass { String::new() } else { f.reason.clone() },
                severity: match f.sev {
                    Severity::Critical => sm::BaselineSeverity::Critical,
                    Severity::High => sm::BaselineSeverity::Important,
                    Severity::Medium => sm::BaselineSeverity::Warning,
                    Severity::Low | Severity::Informational => sm::BaselineSeverity::Informational,
                },
                extra_details: extra,
            }
        })
    }

    /// A readable table: result, severity, check, title, and why.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "{:<14} {:<13} {:<22} TITLE", "RESULT", "SEVERITY", "CHECK");
        for f in &self.findings {
            let id = format!("{}:{}", f.policy, f.check);
            let _ = writeln!(out, "{:<14} {:<13} {:<22} {}", f.result.name(), f.severity, id, f.title);
            if matches!(f.result, CheckResult::Fail | CheckResult::Error) && !f.reason.is_empty() {
                let _ = writeln!(out, "{:<51}why: {}", "", f.reason);
            }
        }
        let _ = writeln!(
            out,
            "\n{} checks: {} pass, {} fail ({} high or critical), {} not applicable, {} error",
            self.findings.len(),
            self.count(CheckResult::Pass),
            self.count(CheckResult::Fail),
            self.high_failures(),
            self.count(CheckResult::NotApplicable),
            self.count(CheckResult::Error),
        );
        out
    }

    /// For the log: counts and costs.
    pub fn log_summary(&self) {
        tracing::info!(
            checks = self.findings.len(),
            pass = self.count(CheckResult::Pass),
            fail = self.count(CheckResult::Fail),
            high_failures = self.high_failures(),
            not_applicable = self.count(CheckResult::NotApplicable),
            error = self.count(CheckResult::Error),
            skipped_rules = ?self.skipped_rules,
            walk_truncated = self.walk_truncated,
            credentials = ?self.creds,
            "recommendations assessed"
        );
    }
}

/// Loads and assesses (for `shrike run` and `shrike events`, on a blocking
/// thread); a load error is logged and gives no report.
pub fn run_once(cfg: &RecommendConfig) -> Option<Report> {
    match load(cfg) {
        Ok(loaded) => {
            let r = assess(&loaded, cfg);
            r.log_summary();
            Some(r)
        }
        Err(errors) => {
            tracing::warn!("recommendations not assessed, invalid policies:\n{}", errors.join("\n"));
            None
        }
    }
}

#[cfg(test)]
mod tests;
