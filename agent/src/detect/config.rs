//! `[detect]`: which detectors run and how they are tuned. Every key has a
//! default (the `Default` impl); the config file's section and the flags of
//! `shrike run` / `shrike events` fill it; SIGHUP rebuilds the stage from it.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use clap::Args;
use serde::Deserialize;

use super::DetectError;
use crate::units::parse_interval;

/// Detection (`[detect]` in the config file; these flags override it).
#[derive(Debug, Clone, Default, Args)]
pub struct DetectArgs {
    /// Sigma rules: a file, or a folder searched recursively for .yml/.yaml
    /// (repeatable; replaces `rules` of the config file) [default: none:
    /// the built-in detectors only].
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// No detection: no alerts (and no probes attached for it).
    #[arg(long)]
    pub no_detect: bool,
    /// Switches a rule off: a built-in detector's id or a Sigma rule's id
    /// (repeatable; added to `disabled` of the config file) [default: none].
    #[arg(long = "disable-rule", value_name = "ID")]
    pub disable_rules: Vec<String>,
    /// A security configuration policy in Wazuh's SCA format for the
    /// recommendations (repeatable; added to `policies` of the config file,
    /// besides Shrike's built-in gateway policy) [default: none].
    #[arg(long = "policy", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// Run the command (`c:`) rules of the local policy files.
    #[arg(long)]
    pub allow_commands: bool,
    /// No recommendations (the OS baseline at start and every snapshot interval).
    #[arg(long)]
    pub no_recommendations: bool,
    /// The root file system the recommendations assess (a host's / mounted
    /// in a container, an image) [default: /].
    #[arg(long, value_name = "DIR")]
    pub recommend_root: Option<PathBuf>,
    /// Learning period of the baseline (`baseline-*` alerts after it), e.g.
    /// 24h, 7d; `off` (or 0) turns the baseline off [default: 24h].
    #[arg(long, value_name = "DURATION|off")]
    pub baseline_learn: Option<String>,
    /// login-brute-force: failed logins for one user or one remote host...
    /// [default: 5]
    #[arg(long, value_name = "N")]
    pub brute_force_failures: Option<u32>,
    /// ...within this window (e.g. 60s, 5m) [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub brute_force_window: Option<std::time::Duration>,
    /// Threat-intelligence list: addresses, CIDRs, domains, SHA-256s, one a
    /// line, or a feed's CSV (repeatable; replaces `ioc` of the config file).
    /// Reloaded when it changes [default: none].
    #[arg(long = "ioc", value_name = "PATH")]
    pub ioc: Vec<PathBuf>,
    /// Hash every executed file (SHA-256 in exec events) even when no IoC
    /// list has hashes.
    #[arg(long)]
    pub hash_executables: bool,
    /// How often the IoC list files are checked for changes [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub ioc_reload_interval: Option<std::time::Duration>,
    /// A path watched for file changes (`file` events), a file or a folder
    /// (repeatable; replaces `watch` of the config file); `defaults` stands
    /// for the built-in list (/etc, ~/.ssh, cron spools, system binaries...)
    /// [default: defaults].
    #[arg(long = "watch", value_name = "PATH")]
    pub watch: Vec<String>,
}

/// The settings of the detection stage.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectConfig {
    /// Detection as a whole (`--no-detect`).
    pub enabled: bool,
    /// Sigma rule files and folders (searched recursively for .yml/.yaml).
    pub rules: Vec<PathBuf>,
    /// Rule ids switched off (built-in names or Sigma ids).
    pub disabled: BTreeSet<String>,
    /// Built-in detectors' tuning.
    pub builtin: BuiltinConfig,
    /// Threat-intelligence lists and executable hashing.
    pub ioc: super::ioc::IocConfig,
    /// The learnt baseline: learning period, state folder.
    pub baseline: super::baseline::BaselineConfig,
    /// Recommendations: the OS baseline's policies and settings.
    pub recommend: crate::recommend::RecommendConfig,
    /// Where the detectors read /proc (`--proc-root`: a host's /proc mounted
    /// elsewhere; a fake tree in tests): listening sockets at start, a shell's
    /// stdin/stdout, the executable of a process that gained uid 0.
    pub proc_root: PathBuf,
    /// The agent itself, for agent-tampering: its pid and executable (this
    /// process's; other values in tests).
    pub agent_pid: u32,
    pub agent_exe: Option<String>,
    /// File events: the watched paths (`watch`, `--watch`; default
    /// [`crate::enrich::files::DEFAULT_WATCH`] and every user's ~/.ssh).
    pub watch: crate::enrich::files::Watch,
}

/// Tuning of the built-in detectors (`[detect.builtin]` keys).
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltinConfig {
    /// login-brute-force: failures for one user or one remote host...
    pub brute_force_failures: u32,
    /// ...within this window.
    pub brute_force_window: Duration,
    /// Extra directories exec-from-tmp treats as writable staging places.
    pub tmp_dirs: Vec<String>,
    /// Programs allowed to gain uid 0 (privilege-escalation), besides
    /// setuid-root files and the known login/sudo programs.
    pub privileged_programs: Vec<String>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            rules: Vec::new(),
            disabled: BTreeSet::new(),
            builtin: BuiltinConfig::default(),
            ioc: super::ioc::IocConfig::default(),
            baseline: super::baseline::BaselineConfig::default(),
            recommend: crate::recommend::RecommendConfig::default(),
            proc_root: PathBuf::from("/proc"),
            agent_pid: std::process::id(),
            agent_exe: std::env::current_exe().ok().map(|p| p.to_string_lossy().into_owned()),
            watch: crate::enrich::files::Watch::defaults(std::path::Path::new("/etc/passwd"))
                .unwrap_or_else(|_| crate::enrich::files::Watch::builtin()),
        }
    }
}

impl Default for BuiltinConfig {
    fn default() -> Self {
        BuiltinConfig {
            brute_force_failures: 5,
            brute_force_window: Duration::from_secs(60),
            tmp_dirs: Vec::new(),
            privileged_programs: Vec::new(),
        }
    }
}

impl DetectConfig {
    pub fn is_disabled(&self, rule: &str) -> bool {
        self.disabled.contains(rule)
    }

    /// The settings from the defaults, the config file's `[detect]` section
    /// and the flags, in that order of precedence (lowest first): `--rules`
    /// replaces the file's `rules`, `--disable-rule` adds to its `disabled`.
    pub fn resolve(file: Option<&FileDetect>, args: &DetectArgs) -> Result<DetectConfig, DetectError> {
        let mut cfg = DetectConfig::default();
        if let Some(f) = file {
            if let Some(on) = f.enabled {
                cfg.enabled = on;
            }
            if let Some(rules) = &f.rules {
                cfg.rules.clone_from(rules);
            }
            cfg.disabled.extend(f.disabled.iter().flatten().cloned());
            let b = &mut cfg.builtin;
            if let Some(n) = f.brute_force_failures {
                b.brute_force_failures = n;
            }
            if let Some(w) = &f.brute_force_window {
                b.brute_force_window = parse_interval(w).map_err(|e| invalid("brute_force_window", e))?;
            }
            if let Some(d) = &f.tmp_dirs {
                b.tmp_dirs.clone_from(d);
            }
            if let Some(p) = &f.privileged_programs {
                b.privileged_programs.clone_from(p);
            }
            let i = &mut cfg.ioc;
            if let Some(l) = &f.ioc {
                i.lists.clone_from(l);
            }
            i.hash_executables = f.hash_executables;
            if let Some(v) = &f.hash_max_size {
                i.hash_max_size = v.bytes().map_err(|e| invalid("hash_max_size", e))?;
            }
            if let Some(v) = &f.hash_rate {
                i.hash_rate = v.bytes().map_err(|e| invalid("hash_rate", e))?;
            }
            if let Some(w) = &f.ioc_reload_interval {
                i.reload_interval = parse_interval(w).map_err(|e| invalid("ioc_reload_interval", e))?;
            }
        }
        // The flag over the file's key.
        let learn = args.baseline_learn.as_deref().or(file.and_then(|f| f.baseline_learn.as_deref()));
        if let Some(l) = learn {
            cfg.baseline.learn = super::baseline::parse_learn(l).map_err(|e| invalid("baseline_learn", e))?;
        }
        if args.no_detect {
            cfg.enabled = false;
        }
        let watch =
            if args.watch.is_empty() { file.and_then(|f| f.watch.as_ref()) } else { Some(&args.watch) };
        if let Some(entries) = watch {
            cfg.watch = crate::enrich::files::Watch::new(entries, std::path::Path::new("/etc/passwd"))
                .map_err(|e| invalid("watch", e))?;
        }
        resolve_recommend(&mut cfg.recommend, file, args)?;
        if !args.rules.is_empty() {
            cfg.rules.clone_from(&args.rules);
        }
        cfg.disabled.extend(args.disable_rules.iter().cloned());
        if let Some(n) = args.brute_force_failures {
            cfg.builtin.brute_force_failures = n;
        }
        if let Some(w) = args.brute_force_window {
            cfg.builtin.brute_force_window = w;
        }
        if !args.ioc.is_empty() {
            cfg.ioc.lists.clone_from(&args.ioc);
        }
        if args.hash_executables {
            cfg.ioc.hash_executables = Some(true);
        }
        if let Some(i) = args.ioc_reload_interval {
            cfg.ioc.reload_interval = i;
        }
        if cfg.ioc.hash_rate < 64 * 1024 {
            return Err(invalid(
                "hash_rate",
                "below 64KiB (a second): executables would wait minutes for a hash",
            ));
        }
        if cfg.ioc.reload_interval < Duration::from_secs(1) {
            return Err(invalid("ioc_reload_interval", "under 1s"));
        }

        if cfg.builtin.brute_force_failures == 0 {
            return Err(invalid("brute_force_failures", "0: at least one failure"));
        }
        if cfg.builtin.brute_force_window.is_zero() {
            return Err(invalid("brute_force_window", "0s: the window must be longer than that"));
        }
        if cfg.enabled {
            // A missing path is a mistake, not an empty rule set.
            for p in &cfg.rules {
                if let Err(e) = std::fs::metadata(p) {
                    return Err(invalid("rules", format!("{}: {e}", p.display())));
                }
            }
            for p in &cfg.ioc.lists {
                match std::fs::metadata(p) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => return Err(invalid("ioc", format!("{}: not a file", p.display()))),
                    Err(e) => return Err(invalid("ioc", format!("{}: {e}", p.display()))),
                }
            }
        }
        Ok(cfg)
    }
}

/// The recommendations' keys of `[detect]` and their flags: `--policy`
/// adds to `policies`; a policy or list that is missing is an error.
fn resolve_recommend(
    r: &mut crate::recommend::RecommendConfig,
    file: Option<&FileDetect>,
    args: &DetectArgs,
) -> Result<(), DetectError> {
    if let Some(f) = file {
        if let Some(on) = f.recommendations {
            r.enabled = on;
        }
        if let Some(on) = f.builtin_policy {
            r.builtin_policy = on;
        }
        r.policies.extend(f.policies.iter().flatten().cloned());
        if let Some(on) = f.allow_commands {
            r.allow_commands = on;
        }
        r.credential_lists.extend(f.credential_lists.iter().flatten().cloned());
        if let Some(b) = &f.credential_budget {
            r.credential_budget = parse_interval(b).map_err(|e| invalid("credential_budget", e))?;
        }
        if let Some(root) = &f.recommend_root {
            r.root.clone_from(root);
        }
    }
    r.policies.extend(args.policies.iter().cloned());
    r.allow_commands |= args.allow_commands;
    if args.no_recommendations {
        r.enabled = false;
    }
    if let Some(root) = &args.recommend_root {
        r.root.clone_from(root);
    }
    for (setting, paths) in [("policies", &r.policies), ("credential_lists", &r.credential_lists)] {
        for p in paths {
            if let Err(e) = std::fs::metadata(p) {
                return Err(invalid(setting, format!("{}: {e}", p.display())));
            }
        }
    }
    if !r.root.is_dir() {
        return Err(invalid("recommend_root", format!("{}: not a directory", r.root.display())));
    }
    Ok(())
}

fn invalid(setting: &str, reason: impl std::fmt::Display) -> DetectError {
    DetectError::Invalid { setting: setting.into(), reason: reason.to_string() }
}

/// The `[detect]` section as written in the TOML file (every key optional).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDetect {
    pub enabled: Option<bool>,
    pub rules: Option<Vec<PathBuf>>,
    pub disabled: Option<Vec<String>>,
    pub brute_force_failures: Option<u32>,
    /// Duration string ("60s").
    pub brute_force_window: Option<String>,
    pub tmp_dirs: Option<Vec<String>>,
    pub privileged_programs: Option<Vec<String>>,
    /// IoC list files.
    pub ioc: Option<Vec<PathBuf>>,
    /// Learning period of the baseline: a duration ("24h"), or "off".
    pub baseline_learn: Option<String>,
    /// true/false; absent: hash when a list has SHA-256s.
    pub hash_executables: Option<bool>,
    /// Bytes: 67108864 or "64MiB".
    pub hash_max_size: Option<Size>,
    /// Bytes a second: "32MiB".
    pub hash_rate: Option<Size>,
    /// Duration string ("10s").
    pub ioc_reload_interval: Option<String>,
    /// Recommendations (the OS baseline) on or off.
    pub recommendations: Option<bool>,
    /// Shrike's built-in gateway policy on or off.
    pub builtin_policy: Option<bool>,
    /// SCA policy files besides the built-in one.
    pub policies: Option<Vec<PathBuf>>,
    /// Command (`c:`) rules of local policy files run.
    pub allow_commands: Option<bool>,
    /// Default-credential lists besides the built-in one.
    pub credential_lists: Option<Vec<PathBuf>>,
    /// Duration string ("2s").
    pub credential_budget: Option<String>,
    /// The root file system assessed (default /).
    pub recommend_root: Option<PathBuf>,
    /// Paths watched for file changes ("defaults": the built-in list).
    pub watch: Option<Vec<String>>,
}

/// A size in the config file: a number of bytes, or a string with a unit
/// (`K`/`KiB`, `M`/`MiB`, `G`/`GiB`: powers of 1024; `KB`, `MB`, `GB`: of 1000).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t),
        }
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: not a size (e.g. 64MiB)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        u => return Err(format!("{s:?}: unknown unit {u:?} (B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    n.checked_mul(mul).ok_or_else(|| format!("{s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml: &str) -> FileDetect {
        toml::from_str(toml).expect("valid [detect]")
    }

    #[test]
    fn flags_override_the_file() {
        let f = file(
            r#"
            rules = ["/"]
            disabled = ["exec-from-tmp"]
            brute_force_failures = 8
            brute_force_window = "2m"
            tmp_dirs = ["/run/stage"]
            "#,
        );
        let cfg = DetectConfig::resolve(Some(&f), &DetectArgs::default()).unwrap();
        assert_eq!(cfg.rules, [PathBuf::from("/")]);
        assert_eq!(cfg.builtin.brute_force_failures, 8);
        assert_eq!(cfg.builtin.brute_force_window, Duration::from_secs(120));
        assert_eq!(cfg.builtin.tmp_dirs, ["/run/stage"]);
        assert!(cfg.is_disabled("exec-from-tmp"));

        let args = DetectArgs {
            rules: vec!["/tmp".into()],
            disable_rules: vec!["new-listener".into()],
            brute_force_failures: Some(3),
            brute_force_window: Some(Duration::from_secs(10)),
            ..DetectArgs::default()
        };
        let cfg = DetectConfig::resolve(Some(&f), &args).unwrap();
        assert_eq!(cfg.rules, [PathBuf::from("/tmp")], "--rules replaces the file's rules");
        assert!(cfg.is_disabled("exec-from-tmp") && cfg.is_disabled("new-listener"));
        assert_eq!(cfg.builtin.brute_force_failures, 3);
        assert_eq!(cfg.builtin.brute_force_window, Duration::from_secs(10));
        assert!(cfg.enabled);

        let off = DetectArgs { no_detect: true, ..DetectArgs::default() };
        assert!(!DetectConfig::resolve(Some(&f), &off).unwrap().enabled);
        assert_eq!(DetectConfig::resolve(None, &DetectArgs::default()).unwrap(), DetectConfig::default());
    }

    #[test]
    fn bad_settings_are_named() {
        let err =
            |f: &str| DetectConfig::resolve(Some(&file(f)), &DetectArgs::default()).unwrap_err().to_string();
        assert!(err("brute_force_window = \"soon\"").contains("detect.brute_force_window"));
        assert!(err("brute_force_failures = 0").contains("detect.brute_force_failures"));
        assert!(err("rules = [\"/nonexistent/rules.yml\"]").contains("/nonexistent/rules.yml"));
        assert!(toml::from_str::<FileDetect>("brute_force = 3").is_err(), "unknown keys are rejected");
        assert!(err("ioc = [\"/nonexistent/c2.txt\"]").contains("detect.ioc: /nonexistent/c2.txt"));
        assert!(err("hash_max_size = \"64 parsecs\"").contains("detect.hash_max_size"));
        assert!(err("hash_rate = 100").contains("detect.hash_rate"));
    }

    #[test]
    fn ioc_settings() {
        let f = file(
            r#"
            ioc = ["/"]
            hash_executables = false
            hash_max_size = "16MiB"
            hash_rate = 1048576
            ioc_reload_interval = "1m"
            "#,
        );
        let cfg = DetectConfig::resolve(Some(&f), &DetectArgs::default()).unwrap_err().to_string();
        assert!(cfg.contains("not a file"), "{cfg}");
        let f = FileDetect { ioc: Some(vec!["/etc/hostname".into()]), ..f };
        let cfg = DetectConfig::resolve(Some(&f), &DetectArgs::default()).unwrap();
        assert_eq!(cfg.ioc.lists, [PathBuf::from("/etc/hostname")]);
        assert_eq!(
            (cfg.ioc.hash_executables, cfg.ioc.hash_max_size, cfg.ioc.hash_rate),
            (Some(false), 16 << 20, 1 << 20)
        );
        assert_eq!(cfg.ioc.reload_interval, Duration::from_secs(60));
        let args =
            DetectArgs { ioc: vec!["/etc/passwd".into()], hash_executables: true, ..DetectArgs::default() };
        let cfg = DetectConfig::resolve(Some(&f), &args).unwrap();
        assert_eq!(cfg.ioc.lists, [PathBuf::from("/etc/passwd")], "--ioc replaces the file's lists");
        assert_eq!(cfg.ioc.hash_executables, Some(true));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
    }

    #[test]
    fn watch_from_the_file_or_the_flags() {
        let f: FileDetect = toml::from_str("watch = [\"defaults\", \"/opt/app/\"]").unwrap();
        let cfg = DetectConfig::resolve(Some(&f), &DetectArgs::default()).unwrap();
        assert!(cfg.watch.matches("/etc/passwd") && cfg.watch.matches("/opt/app/config.ini"));
        let args = DetectArgs { watch: vec!["/srv".into()], ..DetectArgs::default() };
        let cfg = DetectConfig::resolve(Some(&f), &args).unwrap();
        assert_eq!(cfg.watch.paths(), ["/srv"], "--watch replaces the file's list");
        let bad: FileDetect = toml::from_str("watch = [\"etc\"]").unwrap();
        let e = DetectConfig::resolve(Some(&bad), &DetectArgs::default()).unwrap_err().to_string();
        assert!(e.contains("detect.watch") && e.contains("not an absolute path"), "{e}");
    }
}
