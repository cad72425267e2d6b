//! `cargo xtask bench --sigma DIR`: the Sigma stage's CPU per event with the
//! rules of DIR loaded (e.g. SigmaHQ's `rules/linux/process_creation` and
//! `rules/linux/network_connection`), measured in-process by the release
//! agent's hidden `shrike rules bench` over a mix of gateway execs and
//! connections (or `--sigma-events FILE.jsonl`, a `shrike events`
//! recording). No root needed. Skipped, with a note, when DIR is absent.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Targets (architecture.md): detection must add less than this per event.
const TARGET_US: &[(&str, f64)] = &[("process_creation", 5.0), ("network_connection", 0.5)];

/// The note when no rule folder is there.
pub fn skipped(dirs: &[PathBuf]) {
    println!(
        "sigma: skipped: {} absent (extract SigmaHQ's rules/linux/process_creation and \
         rules/linux/network_connection there)",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    );
}

pub fn run(
    agent: &Path,
    dirs: &[PathBuf],
    events: Option<&Path>,
    out: &Path,
) -> anyhow::Result<Option<Value>> {
    let present: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    if present.is_empty() {
        skipped(dirs);
        return Ok(None);
    }
    let mut c = Command::new(agent);
    c.args(["rules", "bench"]).args(&present).args(["--rounds", "50"]);
    if let Some(e) = events {
        c.arg("--events").arg(e);
    }
    let o = c.output().with_context(|| format!("running {}", agent.display()))?;
    eprint!("{}", String::from_utf8_lossy(&o.stderr));
    if !o.status.success() {
        bail!("shrike rules bench failed ({})", o.status);
    }
    let mut v: Value = serde_json::from_slice(&o.stdout).context("shrike rules bench output")?;
    println!("\nSigma detection, {} rules loaded, {} skipped:", v["rules_loaded"], v["rules_skipped"]);
    println!("| category | events | alerts per pass | CPU per event | target | |");
    println!("|---|---|---|---|---|---|");
    for (cat, target) in TARGET_US {
        let r = &v[cat];
        let Some(us) = r["us_per_event"].as_f64() else { continue };
        let met = if us < *target { "met" } else { "NOT met" };
        println!(
            "| {cat} | {} | {} | {us:.3} µs | < {target} µs | {met} |",
            r["events"], r["alerts_per_pass"]
        );
    }
    v["dirs"] = json!(present);
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("sigma.json"), serde_json::to_vec_pretty(&v)?)?;
    Ok(Some(v))
}
