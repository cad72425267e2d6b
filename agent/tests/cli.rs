//! The command line as a new user meets it (no root needed: every case is
//! refused or answered before the kernel probes load): bad values exit 2
//! with a message naming the flag or setting, never a panic (exit 134).

use std::process::{Command, Output};

fn shrike(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shrike")).args(args).output().expect("run shrike")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Defect 7 of #14: zero intervals panicked tokio's `interval` (exit 134).
#[test]
fn zero_intervals_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["events", "--poll-interval", "0"][..], "--poll-interval"),
        (&["events", "--stats-interval", "0"], "--stats-interval"),
        (&["events", "--stats-interval", "0ms"], "--stats-interval"),
        (&["run", "--dry-run", "--poll-interval", "0"], "--poll-interval"),
        (&["run", "--dry-run", "--poll-interval", "PT0S"], "--poll-interval"),
        (&["run", "--dry-run", "--brute-force-window", "0s"], "--brute-force-window"),
        (&["run", "--dry-run", "--ioc-reload-interval", "0"], "--ioc-reload-interval"),
        (&["recommendations", "--credential-budget", "0s"], "--credential-budget"),
    ] {
        let out = shrike(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && err.contains("longer than 0"), "{args:?}: {err}");
    }
}

/// The same settings in the config file: exit 2 naming the key.
#[test]
fn zero_intervals_in_the_config_exit_2_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("shrike-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (toml, key) in [
        ("high_interval = \"0s\"\n", "high_interval"),
        ("health_interval = \"PT0S\"\n", "health_interval"),
        ("keep_alive = \"0\"\n", "keep_alive"),
        ("[detect]\nbrute_force_window = \"0s\"\n", "brute_force_window"),
        ("[detect]\nioc_reload_interval = \"0ms\"\n", "ioc_reload_interval"),
        ("[detect]\ncredential_budget = \"0s\"\n", "credential_budget"),
    ] {
        let cfg = dir.join("shrike.toml");
        std::fs::write(&cfg, format!("hub = \"mqtt://127.0.0.1:1\"\n{toml}")).unwrap();
        let out = shrike(&["run", "--config", cfg.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(key), "{toml}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `shrike --help` lists the commands and says where their flags are;
/// `shrike run --help` describes every flag with its default.
#[test]
fn help_shows_the_commands_and_the_flags_defaults() {
    let out = shrike(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["events", "run", "check", "rules", "baseline", "recommendations", "ioc"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(&format!("{cmd} "))), "{cmd}:\n{help}");
    }
    assert!(help.contains("shrike <COMMAND> --help"), "{help}");
    let out = shrike(&["run", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, default) in [
        ("--username", "[default: none"),
        ("--client-key", "[default: none"),
        ("--keep-alive", "[default: 60s]"),
        ("--high-interval", "[default: 500ms]"),
        ("--poll-interval", "[default: 20ms]"),
    ] {
        let at = help.find(&format!("{flag} <")).unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        let entry = &help[at..];
        let entry = &entry[..entry[2..].find("\n      --").map_or(entry.len(), |n| n + 2)];
        assert!(entry.contains(default), "{flag}: {entry}");
    }
}
