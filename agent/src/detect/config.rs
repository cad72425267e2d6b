//! `[detect]`: which detectors run and how they are tuned. Every key has a
//! default (the `Default` impl); the config file's section and the flags of
//! `shrike run` / `shrike events` fill it; SIGHUP rebuilds the stage from it.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::DetectError;
use crate::{cli::DetectArgs, config::parse_duration};

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
    /// Where the detectors read /proc (`--proc-root`: a host's /proc mounted
    /// elsewhere; a fake tree in tests): listening sockets at start, a shell's
    /// stdin/stdout, the executable of a process that gained uid 0.
    pub proc_root: PathBuf,
    /// The agent itself, for agent-tampering: its pid and executable (this
    /// process's; other values in tests).
    pub agent_pid: u32,
    pub agent_exe: Option<String>,
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
            proc_root: PathBuf::from("/proc"),
            agent_pid: std::process::id(),
            agent_exe: std::env::current_exe().ok().map(|p| p.to_string_lossy().into_owned()),
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
                b.brute_force_window = parse_duration(w).map_err(|e| invalid("brute_force_window", e))?;
            }
            if let Some(d) = &f.tmp_dirs {
                b.tmp_dirs.clone_from(d);
            }
            if let Some(p) = &f.privileged_programs {
                b.privileged_programs.clone_from(p);
            }
        }
        if args.no_detect {
            cfg.enabled = false;
        }
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
        }
        Ok(cfg)
    }
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
    }
}
