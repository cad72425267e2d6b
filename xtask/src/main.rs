//! `cargo xtask`: the project's tasks.
//!
//! - `cargo xtask run [--release] -- <agent args>`: build and run the agent as root.
//! - `cargo xtask test [--quick]`: unit tests, then the privileged integration
//!   tests, the deployment tests included unless `--quick`.
//! - `cargo xtask lint`: rustfmt check and clippy (-D warnings), kernel crate included.
//! - `cargo xtask build [--release | --profile P] [--target T]`: build the agent (and its embedded eBPF objects).
//! - `cargo xtask deb [--target T]`: the Debian package, in target/debian/.
//! - `cargo xtask fuzz [--seconds N] [TARGET...]`: build the fuzz targets
//!   (fuzz/) with libFuzzer's instrumentation and run each for N seconds.
//! - `cargo xtask vm-test [--kernel NAME...] [--all]`: the kernel matrix under qemu.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
};

mod bench;
mod ioc_bench;
mod sigma_bench;
mod soak;
mod spool_bench;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod deb;
mod fuzz;
mod testsum;
mod vm;
mod workspace_bench;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the agent (the eBPF objects are built and embedded by its build script).
    Build {
        #[arg(long)]
        release: bool,
        /// Cargo profile (default: dev, or release with --release); the
        /// deployment tests build the container's and the cross build's
        /// binaries with the workspace's ci-dev.
        #[arg(long, conflicts_with = "release")]
        profile: Option<String>,
        /// Rust target triple (x86_64-unknown-linux-musl for a static binary,
        /// aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf).
        #[arg(long)]
        target: Option<String>,
    },
    /// Build the Debian package target/debian/shrike_<version>_<arch>.deb
    /// (release build, dpkg-deb).
    Deb {
        /// Rust target triple (default: the host's).
        #[arg(long)]
        target: Option<String>,
        /// Package this binary instead of building one.
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// Build and run the agent as root; arguments after `--` go to the agent
    /// (default: `events`, live security events as JSON lines).
    Run {
        #[arg(long)]
        release: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run all tests: unit tests, then the privileged integration tests
    /// (real kernel, real logins, deployment) one at a time.
    Test {
        /// Leave out the slow deployment tests (Debian package with lintian
        /// and dpkg, static container under podman, aarch64 cross build under
        /// qemu), which add several minutes of builds.
        #[arg(long)]
        quick: bool,
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// rustfmt --check and clippy -D warnings on every crate, the kernel crate
    /// built for bpfel-unknown-none with the nightly toolchain.
    Lint,
    /// Fuzzing: builds the targets in fuzz/ (nightly, libFuzzer, the flags
    /// cargo-fuzz uses) and runs each for a while on its seed corpus.
    Fuzz(fuzz::FuzzArgs),
    /// Benchmarks: Shrike side by side with no agent, auditd, bpftrace and
    /// execsnoop on exec/connect/login/mixed workloads (as root).
    Bench(bench::BenchArgs),
    /// The fault-soak suite: the release agent against a real mosquitto under
    /// faults (broker killed and away, agent SIGKILLed, spool file system
    /// full, corrupt spool, SIGHUP storm, hostile processes, slow and
    /// refusing broker); a table of generated, delivered, duplicated and lost
    /// events per scenario (as root; RELIABILITY.md).
    Soak(soak::SoakArgs),
    /// The kernel matrix: Debian kernels booted under qemu (TCG) with a
    /// busybox initramfs, the static agent and the probe workloads, plus
    /// this machine's kernel natively; a pass/skip/fail table per kernel,
    /// transport and probe kind, written to target/vm/results.md (as root).
    VmTest(vm::VmArgs),
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status: ExitStatus = cmd.status().with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// `/sys/kernel/rcu_expedited` set to 1 while alive, its old value back
/// when dropped (nothing when not root or the file is missing: the tests
/// then only take longer).
struct RcuExpedited(Option<String>);

impl RcuExpedited {
    const PATH: &'static str = "/sys/kernel/rcu_expedited";

    fn enable() -> RcuExpedited {
        let Ok(old) = std::fs::read_to_string(Self::PATH) else { return RcuExpedited(None) };
        match std::fs::write(Self::PATH, "1") {
            Ok(()) => RcuExpedited(Some(old.trim().to_owned())),
            Err(e) => {
                eprintln!("xtask: {} not set ({e}): agent stops take longer", Self::PATH);
                RcuExpedited(None)
            }
        }
    }
}

impl Drop for RcuExpedited {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(Self::PATH, old);
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Debian packages the integration tests drive for real: (binary, package).
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/pamtester", "pamtester"),
    ("/usr/sbin/sshd", "openssh-server"),
    ("/usr/bin/ssh", "openssh-client"),
    ("/usr/bin/sshpass", "sshpass"),
    ("/usr/sbin/mosquitto", "mosquitto"),
    ("/usr/bin/mosquitto_sub", "mosquitto-clients"),
    // The SDK's C example (tests/tests/sdk.rs).
    ("/usr/bin/gcc", "gcc"),
    // FirewallConfiguration from real rules (tests/tests/firewall.rs).
    ("/usr/sbin/nft", "nftables"),
    ("/usr/sbin/iptables-save", "iptables"),
    // The workspace: a throwaway PostgreSQL cluster and the pages in a real
    // browser (tests/tests/workspace*.rs).
    ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
    ("/usr/bin/chromium", "chromium"),
];

/// What the deployment tests (tests/tests/deploy.rs) build and run with:
/// (file, package).
const DEPLOY_TEST_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/dpkg-deb", "dpkg"),
    ("/usr/bin/lintian", "lintian"),
    ("/usr/bin/man", "man-db"),
    ("/usr/bin/file", "file"),
    ("/usr/bin/objcopy", "binutils"),
    ("/usr/bin/podman", "podman"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/bin/musl-gcc", "musl-tools"),
    ("/usr/bin/aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ("/usr/bin/aarch64-linux-gnu-objcopy", "binutils-aarch64-linux-gnu"),
    ("/usr/aarch64-linux-gnu/lib/libc.so", "libc6-dev-arm64-cross"),
    ("/usr/bin/qemu-aarch64-static", "qemu-user-static"),
];

/// Installs the packages the tests need when they are missing (Debian, as
/// root), those of the deployment tests too when `deploy`.
fn install_test_packages(deploy: bool) -> anyhow::Result<()> {
    let deploy = if deploy { DEPLOY_TEST_PACKAGES } else { &[] };
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .chain(deploy)
        .filter(|(bin, _)| !Path::new(bin).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        eprintln!("xtask: the integration tests need these packages: {}", missing.join(" "));
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    apt_install(&missing)
}

/// `apt-get update` then `apt-get install` of `packages`, without questions.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    run(update)?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "-qq", "--no-install-recommends"]).args(packages);
    install.env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
}

/// The eBPF build's nightly components (rust-src for `-Z build-std`,
/// llvm-tools for the linker): added here, once, with a message, when
/// missing. The agent's build script adds them too for a plain `cargo
/// build`, but quietly: cargo replays a build script's warnings at every
/// later build that does not rerun it, so a `cargo:warning` there would say
/// "installing" long after they were installed.
fn ensure_nightly_components() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .context("rustup is needed (the eBPF build uses the nightly toolchain)")?;
    if !out.status.success() {
        bail!(
            "the nightly toolchain is needed: rustup toolchain install nightly --component rust-src,llvm-tools"
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let have_src = sysroot.join("lib/rustlib/src/rust/library/core").is_dir();
    let have_llvm = sysroot.join("lib/rustlib").join(host).join("bin/opt").is_file();
    if have_src && have_llvm {
        return Ok(());
    }
    eprintln!("xtask: installing nightly's rust-src and llvm-tools (the eBPF build needs them)");
    let mut add = Command::new("rustup");
    add.args(["component", "add", "rust-src", "llvm-tools", "--toolchain", "nightly"]);
    run(add)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Build { release, profile, target } => {
            ensure_nightly_components()?;
            let profile = profile.unwrap_or_else(|| if release { "release" } else { "dev" }.to_owned());
            let bin = deb::build(&profile, target.as_deref())?;
            deb::report_size(&bin, &profile)
        }
        Task::Deb { target, bin } => deb::deb(target.as_deref(), bin).map(drop),
        Task::Run { release, args } => {
            ensure_nightly_components()?;
            let mut c = cargo();
            c.args(["build", "--package", "shrike"]);
            if release {
                c.arg("--release");
            }
            run(c)?;
            let bin = root().join("target").join(if release { "release" } else { "debug" }).join("shrike");
            let args = if args.is_empty() { vec!["events".to_owned()] } else { args };
            let mut cmd = if is_root() {
                Command::new(&bin)
            } else {
                eprintln!("xtask: the agent needs root (eBPF); running it with sudo");
                let mut s = Command::new("sudo");
                s.arg(&bin);
                s
            };
            cmd.args(&args);
            run(cmd)
        }
        Task::Test { quick, args } => {
            install_test_packages(!quick)?;
            ensure_nightly_components()?;
            let mut unit = cargo();
            // The kernel crate only builds for its BPF target (`lint` checks it there).
            unit.args(["test", "--workspace", "--exclude", "shrike-tests", "--exclude", "shrike-ebpf"])
                .args(["--all-features", "--"])
                .args(&args);
            let (status, unit) = testsum::run("unit tests", unit)?;
            if !status.success() {
                let it = testsum::Phase {
                    name: "integration tests".into(),
                    not_run: Some("the unit tests failed".into()),
                    ..Default::default()
                };
                testsum::print(&[unit, it]);
                bail!("unit tests failed: {status}");
            }
            if !is_root() {
                eprintln!("xtask: the integration tests need root; running them with sudo");
            }
            // SAFETY: single-threaded here; the child cargo inherits it.
            unsafe { std::env::set_var("SHRIKE_HEAVY_TESTS", if quick { "0" } else { "1" }) };
            let mut it = cargo();
            // Every test binary runs even when one fails: the summary then
            // lists all failures, not the first binary's.
            it.args(["test", "--no-fail-fast", "--package", "shrike-tests", "--"])
                .args(["--test-threads=1", "--nocapture"])
                .args(&args);
            if !is_root() {
                let mut s = Command::new("sudo");
                s.arg("-E").arg(it.get_program()).args(it.get_args()).current_dir(root());
                it = s;
            }
            // Each agent a test stops releases ~100 tracepoint perf events,
            // and the kernel waits for RCU grace periods for each one (the
            // release build: 5.5-6.0 s a stop on this 2-core VM, 4.0 s with
            // normal grace periods expedited; the tasks-trace ones are not):
            // with ~150 agents stopped, a quarter of the test time. The
            // tests do not measure stop time (`cargo xtask bench` does, with
            // the kernel's default), so they run with expedited grace periods.
            let _rcu = RcuExpedited::enable();
            let (status, it) = testsum::run("integration tests", it)?;
            testsum::print(&[unit, it]);
            if !status.success() {
                bail!("integration tests failed: {status}");
            }
            Ok(())
        }
        Task::Lint => {
            let mut fmt = cargo();
            fmt.args(["fmt", "--all", "--check"]);
            run(fmt)?;
            // The fuzz targets: a workspace of their own (nightly to build).
            let mut fmt = cargo();
            fmt.args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--all", "--check"]);
            run(fmt)?;
            let mut clippy = cargo();
            clippy
                .args([
                    "clippy",
                    "--workspace",
                    "--exclude",
                    "shrike-ebpf",
                    "--all-targets",
                    "--all-features",
                ])
                .args(["--", "-D", "warnings"]);
            run(clippy)?;
            // The kernel crate, for its real target, with both transports.
            for features in ["ringbuf", "perf"] {
                let mut k = Command::new("rustup");
                k.current_dir(root())
                    .args(["run", "nightly", "cargo", "clippy", "--package", "shrike-ebpf"])
                    .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--release"])
                    .args(["--no-default-features", "--features", features])
                    .args(["--target-dir", "target/ebpf-clippy", "--", "-D", "warnings"])
                    .env(
                        "CARGO_ENCODED_RUSTFLAGS",
                        format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
                    );
                for var in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "RUSTFLAGS", "CARGO"] {
                    k.env_remove(var);
                }
                run(k)?;
            }
            Ok(())
        }
        Task::Fuzz(args) => fuzz::run(&args, &root()),
        Task::Bench(args) => bench::run(args, &root()),
        Task::Soak(args) => soak::run(args, &root()),
        Task::VmTest(args) => vm::run_vm(&args, &root()),
    }
}
