//! Builds the kernel programs (`shrike-ebpf`) for `bpfel-unknown-none` and leaves
//! two objects in OUT_DIR for the agent to embed: one using the BPF ring buffer,
//! one using a perf event array (kernels older than 5.8).
//!
//! The build needs the nightly toolchain with `rust-src` (for `-Z build-std=core`).
//! It links with `bpf-linker` when that is on PATH, as aya's users have it, and
//! otherwise with `agent-ebpf/bpf-link`, which finishes the job with the LLVM
//! tools of rustup's `llvm-tools` component (bpf-linker does not install on
//! Debian bookworm: it needs LLVM 22 development libraries). Missing components
//! are installed with rustup; if that fails the build stops with the command.
//!
//! The objects are built in `ebpf/` of the target directory, shared by all the
//! agent's builds, and copied to OUT_DIR.
//!
//! Set SHRIKE_EBPF_OBJECTS=DIR to use prebuilt `shrike-ring.bpf.o` and
//! `shrike-perf.bpf.o` from DIR instead (cross builds reuse one build).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const TOOLCHAIN: &str = "nightly";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    for dir in ["agent-ebpf/src", "agent-ebpf/Cargo.toml", "agent-ebpf/bpf-link", "agent-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=SHRIKE_EBPF_OBJECTS");
    println!("cargo:rerun-if-env-changed=PATH");

    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown commit".into());
    println!("cargo:rustc-env=SHRIKE_GIT_COMMIT={commit}");
    for git in [".git/HEAD", ".git/refs/heads"] {
        if root.join(git).exists() {
            println!("cargo:rerun-if-changed={}", root.join(git).display());
        }
    }

    if let Some(dir) = env::var_os("SHRIKE_EBPF_OBJECTS") {
        for name in ["shrike-ring.bpf.o", "shrike-perf.bpf.o"] {
            let src = Path::new(&dir).join(name);
            std::fs::copy(&src, out_dir.join(name))
                .unwrap_or_else(|e| fail(&format!("cannot copy {}: {e}", src.display())));
        }
        return;
    }

    let sysroot = nightly_sysroot();
    ensure_components(&sysroot);
    let llvm_bin = sysroot.join("lib/rustlib").join(host_triple(&sysroot)).join("bin");
    let linker = if which("bpf-linker") { None } else { Some(root.join("agent-ebpf/bpf-link")) };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("target arch");
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").expect("target endian");
    let target = if endian == "big" { "bpfeb-unknown-none" } else { "bpfel-unknown-none" };

    // The kernel programs do not depend on the agent's profile or libc: every
    // build of the agent for one architecture (debug, release, tests, clippy,
    // glibc and musl) shares one eBPF build, kept current by cargo itself; the
    // variants share `core`, the architectures the build scripts.
    let target_dir = ebpf_target_dir(&out_dir);
    for (variant, features) in [("ring", "ringbuf"), ("perf", "perf")] {
        // This build's own copy of the object (cargo's `--artifact-dir`): the
        // shared directory's `release/shrike-ebpf` is whichever variant was
        // built last, by any build.
        let artifact_dir = out_dir.join(format!("ebpf-{variant}"));
        let mut rustflags = format!("--cfg=bpf_target_arch=\"{arch}\"");
        if let Some(linker) = &linker {
            rustflags.push('\x1f');
            rustflags.push_str(&format!("-Clinker={}", linker.display()));
        }
        let mut cmd = Command::new("rustup");
        cmd.args(["run", TOOLCHAIN, "cargo", "build", "--package", "shrike-ebpf", "--bins"])
            .args(["--release", "--target", target, "-Z", "build-std=core"])
            .args(["--no-default-features", "--features", features])
            .arg("--target-dir")
            .arg(&target_dir)
            .args(["-Z", "unstable-options", "--artifact-dir"])
            .arg(&artifact_dir)
            .current_dir(&root)
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
            .env("SHRIKE_LLVM_BIN", &llvm_bin);
        for var in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"]
        {
            cmd.env_remove(var);
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| fail(&format!("cannot run rustup to build the eBPF object: {e}")));
        if !status.success() {
            fail(&format!("building the eBPF object ({variant}) failed: {cmd:?}"));
        }
        let obj = artifact_dir.join("shrike-ebpf");
        let dst = out_dir.join(format!("shrike-{variant}.bpf.o"));
        std::fs::copy(&obj, &dst).unwrap_or_else(|e| fail(&format!("cannot copy {}: {e}", obj.display())));
    }
}

/// `ebpf/` in the cargo target directory: OUT_DIR is
/// `<target dir>/[<triple>/]<profile>/build/<package>-<hash>/out` (the
/// triple when cargo was given `--target`). Cargo's lock on it serializes the
/// builds that share it.
fn ebpf_target_dir(out_dir: &Path) -> PathBuf {
    let Some(mut dir) = out_dir.ancestors().nth(4) else {
        return out_dir.to_path_buf();
    };
    if dir.file_name().is_some_and(|name| Some(name) == env::var_os("TARGET").as_deref()) {
        dir = dir.parent().unwrap_or(dir);
    }
    dir.join("ebpf")
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    panic!("{msg}");
}

fn which(bin: &str) -> bool {
    env::var_os("PATH").map(|p| env::split_paths(&p).any(|d| d.join(bin).is_file())).unwrap_or(false)
}

fn nightly_sysroot() -> PathBuf {
    let out = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| fail(&format!("rustup is needed to build the eBPF object: {e}")));
    if !out.status.success() {
        fail(&format!(
            "the {TOOLCHAIN} toolchain is needed to build the eBPF object; run: rustup toolchain install {TOOLCHAIN} --component rust-src,llvm-tools\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn host_triple(sysroot: &Path) -> String {
    let out = Command::new(sysroot.join("bin/rustc"))
        .args(["-vV"])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run rustc -vV: {e}")));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .unwrap_or_else(|| fail("rustc -vV printed no host"))
}

fn ensure_components(sysroot: &Path) {
    let host = host_triple(sysroot);
    let have_src = sysroot.join("lib/rustlib/src/rust/library/core").is_dir();
    let have_llvm = sysroot.join("lib/rustlib").join(&host).join("bin/opt").is_file();
    if have_src && have_llvm {
        return;
    }
    let cmd = format!("rustup component add rust-src llvm-tools --toolchain {TOOLCHAIN}");
    // Not a `cargo:warning`: cargo replays those at every build that does not
    // rerun this script, long after the components were installed. `cargo
    // xtask` checks and says so itself; a failure below is shown.
    eprintln!("installing missing nightly components: {cmd}");
    let ok = Command::new("rustup")
        .args(["component", "add", "rust-src", "llvm-tools", "--toolchain", TOOLCHAIN])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        fail(&format!("the eBPF build needs nightly's rust-src and llvm-tools; run: {cmd}"));
    }
}
