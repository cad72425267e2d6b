//! `cargo xtask fuzz [--seconds N] [TARGET...]`: builds the fuzz targets of
//! `fuzz/` (cargo-fuzz's layout) and runs each with libFuzzer.
//!
//! The build is cargo-fuzz's own (`cargo fuzz build`): nightly, `--release`
//! for the host triple, the same sanitizer-coverage and AddressSanitizer
//! flags, `--cfg fuzzing`. Done here rather than through cargo-fuzz so that
//! CI (a fresh machine) need not `cargo install cargo-fuzz` first, which
//! compiles a hundred crates (measured in fuzz/README.md); `cargo fuzz run
//! NAME` works on the same directory for whoever has it.
//!
//! Each target runs on two corpus folders: a working one in
//! `target/fuzz/corpus/NAME` (libFuzzer writes the new inputs it finds
//! there) and the committed seeds in `fuzz/corpus/NAME` (read only). A crash
//! leaves its input in `target/fuzz/artifacts/NAME/`: fix the bug, then copy
//! the input into `fuzz/corpus/NAME/` so it stays tested.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::Args;

#[derive(Args)]
pub struct FuzzArgs {
    /// Seconds each target runs (its build not included).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only build the targets.
    #[arg(long)]
    build_only: bool,
    /// CI's build: no AddressSanitizer and no optimization (a cold build
    /// in about half the time; panics, overflows and hangs are still found,
    /// at fewer executions per second), in target/fuzz-quick.
    #[arg(long)]
    quick: bool,
    /// Targets to run [default: all, the files of fuzz/fuzz_targets/].
    targets: Vec<String>,
}

/// cargo-fuzz 0.12's flags for `cargo fuzz build` on x86_64/aarch64 Linux
/// (sanitizer address, the default).
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "-Zsanitizer=address",
];

fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The targets in fuzz/fuzz_targets/, sorted.
fn all_targets(root: &Path) -> anyhow::Result<Vec<String>> {
    let dir = root.join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

struct Outcome {
    target: String,
    runs: u64,
    seconds: f64,
    corpus: usize,
    /// The crashing input, when libFuzzer found one.
    crash: Option<String>,
}

pub fn run(args: &FuzzArgs, root: &Path) -> anyhow::Result<()> {
    let all = all_targets(root)?;
    let targets = if args.targets.is_empty() { all.clone() } else { args.targets.clone() };
    if let Some(bad) = targets.iter().find(|t| !all.contains(t)) {
        bail!("no fuzz target {bad:?}: the targets are {}", all.join(", "));
    }
    super::ensure_nightly_components()?;
    let out_dir = root.join(if args.quick { "target/fuzz-quick" } else { "target/fuzz" });
    let triple = host_triple();

    // The targets never load the kernel programs: the agent's build script
    // embeds empty objects instead of building them (SHRIKE_EBPF_OBJECTS).
    let no_ebpf = out_dir.join("no-ebpf");
    std::fs::create_dir_all(&no_ebpf)?;
    for obj in ["shrike-ring.bpf.o", "shrike-perf.bpf.o"] {
        std::fs::write(no_ebpf.join(obj), b"")?;
    }
    let started = Instant::now();
    let mut build = Command::new("rustup");
    build
        .current_dir(root.join("fuzz"))
        .args(["run", "nightly", "cargo", "build", "--release", "--target", &triple])
        .arg("--target-dir")
        .arg(&out_dir)
        .env("SHRIKE_EBPF_OBJECTS", &no_ebpf);
    if args.quick {
        let flags: Vec<&str> = RUSTFLAGS.iter().copied().filter(|f| !f.starts_with("-Zsanitizer")).collect();
        build
            .env("RUSTFLAGS", flags.join(" "))
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    } else {
        build.env("RUSTFLAGS", RUSTFLAGS.join(" "));
    }
    for t in &targets {
        build.args(["--bin", t]);
    }
    for var in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "CARGO_ENCODED_RUSTFLAGS", "CARGO", "CARGO_TARGET_DIR"] {
        build.env_remove(var);
    }
    super::run(build)?;
    eprintln!("xtask: fuzz targets built in {:.0?}", started.elapsed());
    if args.build_only {
        return Ok(());
    }

    let mut outcomes = Vec::new();
    for t in &targets {
        outcomes.push(run_one(root, &out_dir, &triple, t, args.seconds)?);
    }
    eprintln!("\n== cargo xtask fuzz: {} s per target ==", args.seconds);
    eprintln!("{:<16} {:>12} {:>10} {:>8}  result", "target", "executions", "exec/s", "corpus");
    for o in &outcomes {
        eprintln!(
            "{:<16} {:>12} {:>10.0} {:>8}  {}",
            o.target,
            o.runs,
            o.runs as f64 / o.seconds.max(1e-3),
            o.corpus,
            o.crash.as_deref().map_or("ok".to_owned(), |c| format!("CRASH: {c}"))
        );
    }
    let crashed: Vec<&str> =
        outcomes.iter().filter(|o| o.crash.is_some()).map(|o| o.target.as_str()).collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (inputs in {}; fix, then add them to fuzz/corpus/)",
            crashed.join(", "),
            out_dir.join("artifacts").display()
        );
    }
    Ok(())
}

fn run_one(root: &Path, out_dir: &Path, triple: &str, target: &str, seconds: u64) -> anyhow::Result<Outcome> {
    let bin = out_dir.join(triple).join("release").join(target);
    let work = out_dir.join("corpus").join(target);
    let seeds = root.join("fuzz/corpus").join(target);
    let artifacts = out_dir.join("artifacts").join(target);
    for d in [&work, &seeds, &artifacts] {
        std::fs::create_dir_all(d)?;
    }
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("-max_total_time={seconds}"))
        // A single input that takes this long is a hang: reported as a crash.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    let dict = root.join("fuzz/dict").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    cmd.arg(&work).arg(&seeds).stdout(Stdio::null()).stderr(Stdio::piped());
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {}", bin.display()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |name: &str| -> Option<u64> {
        log.lines().find_map(|l| l.strip_prefix(&format!("stat::{name}:"))?.trim().parse().ok())
    };
    let runs = stat("number_of_executed_units").unwrap_or(0);
    let corpus = std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0)
        + std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0);
    let crash = if out.status.success() {
        None
    } else {
        // The end of libFuzzer's report: the error, the stack, the artifact.
        let tail: Vec<&str> = log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
        eprintln!("{}", tail.join("\n"));
        Some(
            log.lines()
                .find_map(|l| l.split("Test unit written to ").nth(1).map(str::to_owned))
                .unwrap_or_else(|| format!("exit {}", out.status)),
        )
    };
    Ok(Outcome { target: target.into(), runs, seconds: elapsed, corpus, crash })
}
