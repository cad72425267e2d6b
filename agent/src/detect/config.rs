//! `[detect]`: which detectors run and how they are tuned. Every key has a
//! default (the `Default` impl); the config file's section and the flags of
//! `shrike run` / `shrike events` fill it; SIGHUP rebuilds the stage from it.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use serde::Deserialize;

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
