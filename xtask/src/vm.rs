//! `cargo xtask vm-test`: the kernel matrix. Each kernel of the matrix is a
//! Debian kernel package, downloaded with apt-get (a sources file of the
//! harness's own, never the host's) and unpacked under target/vm/; it boots
//! under qemu (TCG: nested KVM hangs on these machines) with a busybox
//! initramfs holding the static agent, the test helper and vm/vmtest.sh. The
//! script's marked output comes back over the serial console; the verdicts
//! are computed here from the agent's own JSON events. `native` runs the same
//! script on this machine's kernel, without a VM.
//!
//! The arm kernels run the agent built for their architecture
//! (aarch64-unknown-linux-musl, static; armv7-unknown-linux-gnueabihf,
//! dynamic, with a glibc in the initramfs: Debian's, of the PAM packages,
//! else the cross toolchain's), cross-compiled with Debian's gcc cross
//! compilers, under qemu-system-aarch64/-arm, with Debian's busybox-static
//! and PAM login (pamtester, libpam, pam_unix and their dependencies) of
//! that architecture.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{cargo, run};

const SCRIPT: &str = include_str!("vm/vmtest.sh");
/// The agent's and helper's profile: unoptimized is fine for correctness
/// and is what CI already builds (the deployment tests' container).
const PROFILE: &str = "ci-dev";
/// Execs in the burst (loss must be counted, never silent).
const BURST: u32 = 300;
/// Execs while the agent is stopped and its perf buffers hold 2 pages a CPU:
/// far more than fit, so records are lost and must be counted.
const LOSS_BURST: u32 = 400;
const TRANSPORTS: [&str; 2] = ["ringbuf", "perf"];

#[derive(clap::Args)]
pub struct VmArgs {
    /// Kernels to test [default: native and bookworm-6.1]; see --all.
    #[arg(long = "kernel", value_name = "NAME")]
    kernels: Vec<String>,
    /// Only the kernels of this architecture.
    #[arg(long, value_parser = ["x86_64", "aarch64", "armv7"])]
    arch: Option<String>,
    /// The whole matrix.
    #[arg(long, conflicts_with = "kernels")]
    all: bool,
}

/// An architecture of the matrix: how its agent is built and its kernels
/// booted.
struct Arch {
    name: &'static str,
    /// The agent's and helper's Rust target (static binaries).
    triple: &'static str,
    /// Debian's architecture (apt) and the C cross compiler's package.
    deb: &'static str,
    gcc: &'static str,
    gcc_package: &'static str,
    /// The cross C library's headers (ring's C needs them), and their package.
    libc_dev: Option<(&'static str, &'static str)>,
    qemu: &'static str,
    qemu_package: &'static str,
    /// Machine, CPU and memory.
    machine: &'static [&'static str],
    console: &'static str,
    /// Where the cross toolchain's shared libraries are, for a dynamically
    /// linked agent (copied into the initramfs's /lib).
    libs: Option<&'static str>,
}

const ARCHES: &[Arch] = &[
    Arch {
        name: "x86_64",
        triple: "x86_64-unknown-linux-musl",
        deb: "amd64",
        gcc: "musl-gcc",
        gcc_package: "musl-tools",
        libc_dev: None,
        qemu: "qemu-system-x86_64",
        qemu_package: "qemu-system-x86",
        machine: &["-cpu", "max", "-m", "1536"],
        console: "ttyS0",
        libs: None,
    },
    Arch {
        name: "aarch64",
        // rustc brings musl's libc and start files (self-contained); the
        // glibc cross gcc only compiles ring's C and drives the link.
        triple: "aarch64-unknown-linux-musl",
        deb: "arm64",
        gcc: "aarch64-linux-gnu-gcc",
        gcc_package: "gcc-aarch64-linux-gnu",
        libc_dev: Some(("/usr/aarch64-linux-gnu/include/stdio.h", "libc6-dev-arm64-cross")),
        qemu: "qemu-system-aarch64",
        qemu_package: "qemu-system-arm",
        // cortex-a72 rather than max: TCG's pointer authentication makes
        // `max` about twice as slow.
        machine: &["-M", "virt", "-cpu", "cortex-a72", "-m", "1536"],
        console: "ttyAMA0",
        libs: None,
    },
    Arch {
        name: "armv7",
        // glibc, dynamic: the armv7 musl standard library is not on
        // rustup's server for this toolchain (404), and a static glibc
        // build crashes before main (in memcpy's IRELATIVE resolver).
        triple: "armv7-unknown-linux-gnueabihf",
        deb: "armhf",
        gcc: "arm-linux-gnueabihf-gcc",
        gcc_package: "gcc-arm-linux-gnueabihf",
        libc_dev: Some(("/usr/arm-linux-gnueabihf/include/stdio.h", "libc6-dev-armhf-cross")),
        qemu: "qemu-system-arm",
        qemu_package: "qemu-system-arm",
        // The armmp kernel is not LPAE: keep the virt board's RAM low.
        machine: &["-M", "virt,highmem=off", "-cpu", "cortex-a15", "-m", "1024"],
        console: "ttyAMA0",
        libs: Some("/usr/arm-linux-gnueabihf/lib"),
    },
];

fn arch(name: &str) -> &'static Arch {
    ARCHES.iter().find(|a| a.name == name).expect("an architecture of ARCHES")
}

struct Kernel {
    name: &'static str,
    arch: &'static str,
    /// apt sources lines (one-line style) for the harness's own sources file.
    sources: &'static [&'static str],
    /// The metapackage whose dependency is the versioned image.
    meta: &'static str,
}

const MATRIX: &[Kernel] = &[
    Kernel { name: "native", arch: "x86_64", sources: &[], meta: "" },
    Kernel {
        name: "bullseye-5.10",
        arch: "x86_64",
        sources: &[
            "deb http://deb.debian.org/debian bullseye main",
            "deb http://deb.debian.org/debian-security bullseye-security main",
        ],
        meta: "linux-image-cloud-amd64",
    },
    Kernel {
        name: "bookworm-6.1",
        arch: "x86_64",
        sources: &[
            "deb http://deb.debian.org/debian bookworm main",
            "deb http://deb.debian.org/debian-security bookworm-security main",
        ],
        meta: "linux-image-cloud-amd64",
    },
    Kernel {
        name: "bookworm-6.12",
        arch: "x86_64",
        sources: &[
            "deb http://deb.debian.org/debian bookworm main",
            "deb http://deb.debian.org/debian-security bookworm-security main",
        ],
        meta: "linux-image-6.12-cloud-amd64",
    },
    Kernel {
        name: "bookworm-6.1-arm64",
        arch: "aarch64",
        sources: &[
            "deb http://deb.debian.org/debian bookworm main",
            "deb http://deb.debian.org/debian-security bookworm-security main",
        ],
        // The generic flavour: PL011 console and virtio built in for qemu's
        // virt board.
        meta: "linux-image-arm64",
    },
    Kernel {
        name: "bookworm-6.1-armmp",
        arch: "armv7",
        sources: &[
            "deb http://deb.debian.org/debian bookworm main",
            "deb http://deb.debian.org/debian-security bookworm-security main",
        ],
        meta: "linux-image-armmp",
    },
];

pub fn run_vm(args: &VmArgs, root: &Path) -> anyhow::Result<()> {
    let of_arch = |k: &Kernel| args.arch.as_deref().is_none_or(|a| a == k.arch);
    let names: Vec<String> = if args.all || (args.kernels.is_empty() && args.arch.is_some()) {
        MATRIX.iter().filter(|k| of_arch(k)).map(|k| k.name.to_owned()).collect()
    } else if args.kernels.is_empty() {
        vec!["native".into(), "bookworm-6.1".into()]
    } else {
        args.kernels.clone()
    };
    let kernels: Vec<&Kernel> = names
        .iter()
        .map(|n| {
            MATRIX.iter().find(|k| k.name == n).with_context(|| {
                format!(
                    "unknown kernel {n:?}; the matrix: {}",
                    MATRIX.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let kernels: Vec<&Kernel> = kernels.into_iter().filter(|k| of_arch(k)).collect();
    if kernels.is_empty() {
        bail!("no kernel of the matrix is of architecture {}", args.arch.as_deref().unwrap_or_default());
    }
    if !crate::is_root() {
        bail!("vm-test runs the agent (natively, as root) and apt-get download: run it as root");
    }
    let vm_dir = root.join("target/vm");
    fs::create_dir_all(&vm_dir)?;
    let _lock = lock(&vm_dir)?;
    crate::ensure_nightly_components()?;
    let mut binaries = std::collections::BTreeMap::new();
    for a in ARCHES.iter().filter(|a| kernels.iter().any(|k| k.arch == a.name)) {
        ensure_packages(a, kernels.iter().any(|k| k.arch == a.name && k.name != "native"))?;
        binaries.insert(a.name, build_binaries(root, a)?);
    }

    let mut results = Vec::new();
    for k in kernels {
        let started = Instant::now();
        let (agent, helper) = &binaries[k.arch];
        let out = if k.name == "native" {
            run_native(&vm_dir, agent, helper)
        } else {
            run_in_vm(&vm_dir, k, agent, helper)
        };
        let res = match out {
            Ok(text) => evaluate(k, &text),
            Err(e) => KernelResult::failed(k, format!("{e:#}")),
        };
        eprintln!("vm-test: {} done in {:.0} s", k.name, started.elapsed().as_secs_f64());
        results.push(res);
    }
    let table = render(&results);
    print!("{table}");
    fs::write(vm_dir.join("results.md"), &table)?;
    eprintln!("vm-test: table written to {}", vm_dir.join("results.md").display());
    if results.iter().any(KernelResult::any_failure) {
        bail!("vm-test: failures (logs under target/vm/<kernel>/)");
    }
    Ok(())
}

/// One vm-test at a time on a machine: runs share target/vm/ (initramfs,
/// logs) and, natively, the kernel (each would see the other's workload).
/// The lock is released when the returned file is closed.
fn lock(vm_dir: &Path) -> anyhow::Result<fs::File> {
    use std::os::fd::AsRawFd;
    let f = fs::File::create(vm_dir.join(".lock"))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("vm-test: waiting for another vm-test on this machine (target/vm/.lock)");
        // SAFETY: as above, blocking.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("locking target/vm/.lock: {}", std::io::Error::last_os_error());
        }
    }
    Ok(f)
}

/// Installs the cross compiler and qemu of `a` when missing (Debian, as root).
fn ensure_packages(a: &Arch, vm: bool) -> anyhow::Result<()> {
    let on_path = |bin: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
    };
    let mut missing = Vec::new();
    if !on_path(a.gcc) {
        missing.push(a.gcc_package);
    }
    if let Some((header, package)) = a.libc_dev
        && !Path::new(header).is_file()
    {
        missing.push(package);
    }
    if vm && !on_path(a.qemu) {
        missing.push(a.qemu_package);
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("vm-test: installing {}", missing.join(" "));
    crate::apt_install(&missing)
}

/// The static agent and helper for `a`, in one cargo run.
fn build_binaries(root: &Path, a: &Arch) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut add = Command::new("rustup");
    add.args(["target", "add", a.triple]).current_dir(root);
    run(add).with_context(|| format!("rustup target add {}", a.triple))?;
    let mut c = cargo();
    c.args(["build", "--package", "shrike", "--bin", "shrike"])
        .args(["--package", "shrike-tests", "--bin", "shrike-test-helper"])
        .args(["--profile", PROFILE, "--target", a.triple]);
    let var = a.triple.replace('-', "_");
    let upper = var.to_uppercase();
    for (name, value) in [
        (format!("CC_{var}"), a.gcc.to_owned()),
        (format!("AR_{var}"), a.gcc.replace("-gcc", "-ar")),
        (format!("CARGO_TARGET_{upper}_LINKER"), a.gcc.to_owned()),
    ] {
        // x86_64 musl links with the host's cc (rustc brings musl's start
        // files); only ring's C needs musl-gcc.
        let host_link = a.name == "x86_64" && !name.starts_with("CC_");
        if std::env::var_os(&name).is_none() && !host_link {
            c.env(name, value);
        }
    }
    run(c)?;
    let dir = root.join("target").join(a.triple).join(PROFILE);
    Ok((dir.join("shrike"), dir.join("shrike-test-helper")))
}

fn run_native(vm_dir: &Path, agent: &Path, helper: &Path) -> anyhow::Result<String> {
    let dir = vm_dir.join("native");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let script = dir.join("vmtest.sh");
    fs::write(&script, SCRIPT)?;
    let out = Command::new("sh")
        .arg(&script)
        .env("SHRIKE", agent)
        .env("HELPER", helper)
        .env("WORK", dir.join("work"))
        .env("TRUE", "/bin/true")
        .env("BURST", BURST.to_string())
        .env("LOSS_BURST", LOSS_BURST.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("running vmtest.sh")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    fs::write(dir.join("console.log"), &text)?;
    Ok(text)
}

/// The harness's own apt state: its sources file, lists and cache, so the
/// host's apt configuration is neither read for sources nor changed; the
/// kernel's architecture is apt's only one there.
fn apt(dir: &Path, kernel: &Kernel) -> anyhow::Result<Command> {
    let apt = dir.join("apt");
    fs::create_dir_all(apt.join("lists/partial"))?;
    fs::create_dir_all(apt.join("cache/archives/partial"))?;
    let list = apt.join("sources.list");
    fs::write(&list, kernel.sources.join("\n") + "\n")?;
    let mut c = Command::new("apt-get");
    c.arg("-o")
        .arg(format!("Dir::Etc::sourcelist={}", list.display()))
        .args(["-o", "Dir::Etc::sourceparts=-"])
        .arg("-o")
        .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
        .arg("-o")
        .arg(format!("Dir::Cache={}", apt.join("cache").display()))
        .arg("-o")
        .arg(format!("APT::Architecture={}", arch(kernel.arch).deb))
        .arg("-o")
        .arg(format!("APT::Architectures={}", arch(kernel.arch).deb))
        .args(["-o", "APT::Get::List-Cleanup=0", "-qq"]);
    Ok(c)
}

/// Downloads and unpacks the kernel once; returns its vmlinuz.
fn kernel_image(vm_dir: &Path, k: &Kernel) -> anyhow::Result<PathBuf> {
    let dir = vm_dir.join("kernels").join(k.name);
    let unpacked = dir.join("root");
    if let Some(v) = find_vmlinuz(&unpacked) {
        return Ok(v);
    }
    apt_update(&dir, k)?;
    let text = apt_cache(&dir, k, &["depends", k.meta])?;
    let image = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("no linux-image dependency of {} in: {text}", k.meta))?
        .to_owned();
    download(&dir, k, &[&image], &unpacked)?;
    // Only boot/vmlinuz-* is booted: the modules (most of the package,
    // ~300 MB for arm64) need not stay in target/.
    for unused in ["lib", "usr"] {
        let _ = fs::remove_dir_all(unpacked.join(unused));
    }
    find_vmlinuz(&unpacked).context("no boot/vmlinuz-* in the kernel package")
}

fn apt_update(dir: &Path, k: &Kernel) -> anyhow::Result<()> {
    let mut update = apt(dir, k)?;
    update.arg("update");
    run(update).context("apt-get update with the harness's sources")
}

/// `apt_update` unless the harness's lists for `k` are there already.
fn ensure_lists(dir: &Path, k: &Kernel) -> anyhow::Result<()> {
    if dir.join("apt/lists").read_dir().is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().is_file()))) {
        return Ok(());
    }
    apt_update(dir, k)
}

/// apt-cache with the harness's apt state (`apt`): its stdout.
fn apt_cache(dir: &Path, k: &Kernel, args: &[&str]) -> anyhow::Result<String> {
    let mut state = apt(dir, k)?;
    state.args(["-o", "Debug::NoLocking=1"]);
    let out = Command::new("apt-cache")
        .args(state.get_args().filter(|a| *a != "-qq"))
        .args(args)
        .output()
        .context("apt-cache")?;
    if !out.status.success() {
        bail!("apt-cache {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `apt-get download PACKAGES` (of the kernel's architecture) unpacked into `into`.
fn download(dir: &Path, k: &Kernel, packages: &[&str], into: &Path) -> anyhow::Result<()> {
    let tmp = dir.join("download");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let mut dl = apt(dir, k)?;
    dl.arg("download").args(packages).current_dir(&tmp);
    run(dl).with_context(|| format!("apt-get download {}", packages.join(" ")))?;
    let debs: Vec<PathBuf> = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    if debs.len() != packages.len() {
        bail!("apt-get download {}: {} .deb files", packages.join(" "), debs.len());
    }
    for deb in debs {
        let mut x = Command::new("dpkg");
        x.arg("-x").arg(&deb).arg(into);
        run(x)?;
    }
    let _ = fs::remove_dir_all(&tmp);
    Ok(())
}

/// A static busybox of the kernel's architecture: the host's for x86_64,
/// Debian's busybox-static of that architecture (fetched once) otherwise.
fn busybox(vm_dir: &Path, k: &Kernel) -> anyhow::Result<PathBuf> {
    if k.arch == "x86_64" {
        let host = Path::new("/bin/busybox");
        if !host.exists() {
            bail!("/bin/busybox is missing: apt-get install busybox-static");
        }
        return Ok(host.to_path_buf());
    }
    let dir = vm_dir.join("kernels").join(k.name);
    let unpacked = dir.join("busybox");
    let bin = unpacked.join("bin/busybox");
    if !bin.exists() {
        ensure_lists(&dir, k)?;
        download(&dir, k, &["busybox-static"], &unpacked)?;
    }
    Ok(bin)
}

/// Debian's pamtester, libpam, its modules and every library they need, of
/// the kernel's architecture, unpacked once (cached like the kernel) into a
/// root of their own: what the arm VMs log in with. The dependencies are
/// apt's, through the harness's apt state; virtual packages are left out,
/// and so are the other programs, the documentation, locales and perl
/// (debconf's, not needed).
fn pam_packages(vm_dir: &Path, k: &Kernel) -> anyhow::Result<PathBuf> {
    let dir = vm_dir.join("kernels").join(k.name);
    let root = dir.join("pam");
    if root.join("usr/bin/pamtester").is_file() {
        return Ok(root);
    }
    ensure_lists(&dir, k)?;
    let text = apt_cache(
        &dir,
        k,
        &[
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            "pamtester",
            "libpam-modules",
            "libpam-modules-bin",
            "libpam0g",
        ],
    )?;
    // Top-level lines name a package; `<name>` is a virtual one.
    let mut packages: Vec<&str> =
        text.lines().filter(|l| !l.starts_with([' ', '<']) && !l.is_empty()).collect();
    packages.sort_unstable();
    packages.dedup();
    eprintln!("vm-test: PAM for {}: downloading {}", k.name, packages.join(" "));
    let tmp = dir.join("pam.partial");
    let _ = fs::remove_dir_all(&tmp);
    download(&dir, k, &packages, &tmp)?;
    for unused in ["usr/share", "usr/sbin", "sbin", "bin", "var", "usr/lib/locale"] {
        let _ = fs::remove_dir_all(tmp.join(unused));
    }
    // Of the programs only pamtester: busybox is the VM's shell and tools.
    for e in fs::read_dir(tmp.join("usr/bin"))?.flatten() {
        if e.file_name() != "pamtester" {
            fs::remove_file(e.path())?;
        }
    }
    for lib in ["lib", "usr/lib"] {
        for e in fs::read_dir(tmp.join(lib)).into_iter().flatten().flatten() {
            for unused in ["gconv", "perl-base", "perl5", "perl"] {
                let _ = fs::remove_dir_all(e.path().join(unused));
            }
        }
    }
    let _ = fs::remove_dir_all(&root);
    fs::rename(&tmp, &root)?;
    Ok(root)
}

fn find_vmlinuz(root: &Path) -> Option<PathBuf> {
    fs::read_dir(root.join("boot"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
}

const INIT: &str = "#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || mount -t debugfs nodev /sys/kernel/debug
mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
ip link set lo up
SHRIKE=/shrike HELPER=/helper WORK=/tmp/vmtest TRUE=/bin/true BURST=@BURST@ LOSS_BURST=@LOSS_BURST@ PAMTESTER=@PAMTESTER@ sh /vmtest.sh
reboot -f
";

fn initramfs(vm_dir: &Path, k: &Kernel, agent: &Path, helper: &Path) -> anyhow::Result<PathBuf> {
    let busybox = busybox(vm_dir, k)?;
    let dir = vm_dir.join("initramfs");
    let _ = fs::remove_dir_all(&dir);
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::copy(&busybox, dir.join("bin/busybox"))?;
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    let pam = if k.arch == "x86_64" {
        pam_root(&dir, &PamSource::Host)?
    } else {
        pam_root(&dir, &PamSource::Packages(pam_packages(vm_dir, k)?))?
    };
    // The cross toolchain's C library for a dynamic agent, unless the PAM
    // packages brought Debian's (its loader and libraries, one glibc).
    if let Some(libs) = arch(k.arch).libs
        && !pam
    {
        fs::create_dir_all(dir.join("lib"))?;
        // The dynamic loader and what the agent and helper link (fs::copy
        // follows the symlinks).
        for lib in [
            "ld-linux-armhf.so.3",
            "libc.so.6",
            "libm.so.6",
            "libgcc_s.so.1",
            "libdl.so.2",
            "libpthread.so.0",
            "librt.so.1",
        ] {
            let src = Path::new(libs).join(lib);
            if src.exists() {
                fs::copy(&src, dir.join("lib").join(lib))?;
            }
        }
    }
    fs::copy(agent, dir.join("shrike"))?;
    fs::copy(helper, dir.join("helper"))?;
    fs::write(dir.join("vmtest.sh"), SCRIPT)?;
    fs::write(
        dir.join("init"),
        INIT.replace("@BURST@", &BURST.to_string())
            .replace("@LOSS_BURST@", &LOSS_BURST.to_string())
            .replace("@PAMTESTER@", if pam { "/usr/bin/pamtester" } else { "" }),
    )?;
    let mut perm = Command::new("chmod");
    perm.arg("755").arg(dir.join("init")).arg(dir.join("vmtest.sh"));
    run(perm)?;
    let out = vm_dir.join("initramfs.cpio");
    // The host's cpio (any architecture's busybox is in the archive).
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("find . | /bin/busybox cpio -o -H newc > '{}'", out.display()))
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("building the initramfs failed: {status}");
    }
    Ok(out)
}

/// Where a VM's pamtester, libpam, pam_unix and their libraries come from.
enum PamSource {
    /// The host's (Debian's, x86_64), copied at their paths with what ldd
    /// says they link.
    Host,
    /// A root of Debian's packages of the VM's architecture
    /// (`pam_packages`), copied whole: the arm VMs.
    Packages(PathBuf),
}

/// Real PAM logins in a VM: pamtester, libpam, pam_unix and the libraries
/// they load, from `source`, in the initramfs `dir` at their paths, with a
/// PAM service `shrike-vmtest` (pam_unix) and a user `vmuser` whose
/// password is `vmtest-pass` (SHA-512 crypt). False, with a message, when
/// the host has no pamtester (`PamSource::Host`).
fn pam_root(dir: &Path, source: &PamSource) -> anyhow::Result<bool> {
    match source {
        PamSource::Host => {
            if !pam_from_host(dir)? {
                return Ok(false);
            }
        }
        PamSource::Packages(root) => {
            // Symlinks kept (the loader's, the libraries' sonames).
            let mut cp = Command::new("cp");
            cp.arg("-a").arg("--remove-destination").arg(root.join(".")).arg(dir);
            run(cp).with_context(|| format!("copying {}", root.display()))?;
        }
    }
    fs::create_dir_all(dir.join("etc/pam.d"))?;
    fs::write(
        dir.join("etc/pam.d/shrike-vmtest"),
        "auth required pam_unix.so\naccount required pam_unix.so\n",
    )?;
    fs::write(dir.join("etc/nsswitch.conf"), "passwd: files\ngroup: files\nshadow: files\n")?;
    let mut passwd = fs::OpenOptions::new().append(true).open(dir.join("etc/passwd"))?;
    std::io::Write::write_all(&mut passwd, b"vmuser:x:1000:1000::/tmp:/bin/sh\n")?;
    // openssl passwd -6 -salt shrikevm vmtest-pass
    fs::write(
        dir.join("etc/shadow"),
        "root:*:19000:0:99999:7:::\nvmuser:$6$shrikevm$FD8CxWAqNkBIbOgZrTZ4YjQ7f7vdXNx/lez6tHrxUw7B7Rv.mVCv9ElIbNkLXvaVLoTglnSI4d2J59hVTGjpe/:19000:0:99999:7:::\n",
    )?;
    Ok(true)
}

/// `PamSource::Host`: false, with a message, when the host has no pamtester.
fn pam_from_host(dir: &Path) -> anyhow::Result<bool> {
    const PAMTESTER: &str = "/usr/bin/pamtester";
    const SECURITY: &str = "/lib/x86_64-linux-gnu/security";
    if !Path::new(PAMTESTER).exists() || !Path::new(SECURITY).join("pam_unix.so").exists() {
        eprintln!("vm-test: no PAM login in the x86_64 VMs: install pamtester (and libpam-modules)");
        return Ok(false);
    }
    let mut files: Vec<PathBuf> = vec![PAMTESTER.into()];
    for m in ["pam_unix.so", "pam_permit.so", "pam_deny.so"] {
        files.push(Path::new(SECURITY).join(m));
    }
    // What they link, as ldd resolves it (the loader too).
    let mut libs = Vec::new();
    for f in &files {
        let out = Command::new("ldd").arg(f).output().context("ldd")?;
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let path = l.split("=>").nth(1).unwrap_or(l).split_whitespace().next().unwrap_or("");
            if path.starts_with('/') {
                libs.push(PathBuf::from(path));
            }
        }
    }
    for f in files.iter().chain(&libs) {
        let dst = dir.join(f.strip_prefix("/").unwrap_or(f));
        fs::create_dir_all(dst.parent().unwrap_or(dir))?;
        fs::copy(f, &dst).with_context(|| format!("copying {}", f.display()))?;
    }
    Ok(true)
}

fn run_in_vm(vm_dir: &Path, k: &Kernel, agent: &Path, helper: &Path) -> anyhow::Result<String> {
    let vmlinuz = kernel_image(vm_dir, k)?;
    let initrd = initramfs(vm_dir, k, agent, helper)?;
    let a = arch(k.arch);
    let dir = vm_dir.join(k.name);
    fs::create_dir_all(&dir)?;
    let console = dir.join("console.log");
    let _ = fs::remove_file(&console);
    let mut q = Command::new("nice");
    q.args(["-n", "10", a.qemu, "-smp", "2"])
        .args(a.machine)
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!("console={} panic=-1 loglevel=4 rdinit=/init", a.console))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null());
    let mut child =
        q.spawn().with_context(|| format!("starting {} (apt-get install {})", a.qemu, a.qemu_package))?;
    // Emulating arm on x86 is several times slower.
    let limit = if k.arch == "x86_64" { 900 } else { 2400 };
    let deadline = Instant::now() + Duration::from_secs(limit);
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("qemu exited with {status}");
            }
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the VM did not finish within {limit} s (console: {})", console.display());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(String::from_utf8_lossy(&fs::read(&console)?).replace('\r', ""))
}

/// One cell: pass, skip (reason) or fail (reason).
#[derive(Clone)]
enum Verdict {
    Pass(String),
    Skip(String),
    Fail(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (word, why) = match self {
            Verdict::Pass(w) => ("pass", w),
            Verdict::Skip(w) => ("skip", w),
            Verdict::Fail(w) => ("FAIL", w),
        };
        if why.is_empty() { write!(f, "{word}") } else { write!(f, "{word} ({why})") }
    }
}

struct TransportResult {
    transport: &'static str,
    rows: Vec<(&'static str, Verdict)>,
    attached: String,
    attach_secs: Option<f64>,
    /// The loaded programs (helper's `bpf-progs`): count, largest, verifier.
    progs: String,
}

struct KernelResult {
    name: &'static str,
    arch: &'static str,
    release: String,
    btf: String,
    check: String,
    /// `shrike check` with /sys/kernel/btf hidden: must say no BTF and the
    /// same verdict.
    check_nobtf: Verdict,
    transports: Vec<TransportResult>,
    /// The perf buffers made to overflow: loss counted.
    perf_loss: Verdict,
    error: Option<String>,
}

impl KernelResult {
    fn failed(k: &Kernel, error: String) -> Self {
        KernelResult {
            name: k.name,
            arch: k.arch,
            release: String::new(),
            btf: String::new(),
            check: String::new(),
            check_nobtf: Verdict::Fail("not run".into()),
            transports: Vec::new(),
            perf_loss: Verdict::Fail("not run".into()),
            error: Some(error),
        }
    }

    fn any_failure(&self) -> bool {
        self.error.is_some()
            || matches!(self.check_nobtf, Verdict::Fail(_))
            || matches!(self.perf_loss, Verdict::Fail(_))
            || self.transports.iter().any(|t| t.rows.iter().any(|(_, v)| matches!(v, Verdict::Fail(_))))
    }
}

/// The text between `=== VMTEST begin WHAT` and `=== VMTEST end WHAT`.
fn section<'a>(text: &'a str, what: &str) -> Option<&'a str> {
    let begin = format!("=== VMTEST begin {what}\n");
    let start = text.find(&begin)? + begin.len();
    let end = text[start..].find(&format!("=== VMTEST end {what}"))?;
    Some(&text[start..start + end])
}

fn marker<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let p = format!("=== VMTEST {prefix}");
    text.lines().find_map(|l| l.strip_prefix(&p)).map(str::trim)
}

fn evaluate(k: &Kernel, text: &str) -> KernelResult {
    let mut r = KernelResult::failed(k, String::new());
    r.error = None;
    r.release = marker(text, "kernel ").unwrap_or("?").to_owned();
    r.btf = marker(text, "btf ").unwrap_or("?").to_owned();
    let mut check_verdict = String::new();
    match section(text, "check") {
        Some(c) => {
            let verdict = c.lines().last().unwrap_or("").trim();
            verdict.clone_into(&mut check_verdict);
            // "no   NAME   detail" lines, by name (the log keeps the detail).
            let missing: Vec<String> = c
                .lines()
                .filter(|l| !l.starts_with("ok ") && l.trim() != verdict)
                .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
                .collect();
            r.check = if missing.is_empty() {
                verdict.to_owned()
            } else {
                format!("{verdict}; {}", missing.join("; "))
            };
        }
        None => {
            r.error = Some(format!(
                "no test output (console tail: {})",
                text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            ));
            return r;
        }
    }
    r.check_nobtf = match section(text, "check-nobtf") {
        None => Verdict::Fail("no output".into()),
        Some(c) => {
            let verdict = c.lines().last().unwrap_or("").trim();
            let btf_line = c.lines().find(|l| l.split_whitespace().nth(1) == Some("btf")).unwrap_or("");
            if !btf_line.starts_with("no ") {
                Verdict::Fail(format!("BTF still reported: {btf_line:?}"))
            } else if verdict != check_verdict {
                Verdict::Fail(format!("{verdict:?} (with BTF: {check_verdict:?})"))
            } else {
                Verdict::Pass(format!("btf no, {verdict:?}"))
            }
        }
    };
    for t in TRANSPORTS {
        r.transports.push(evaluate_transport(t, text));
    }
    // Without the exec probes (a kernel whose formats differ) there is
    // nothing to overflow with: the burst's skip and reason.
    let burst = r.transports.iter().find(|t| t.transport == "perf").and_then(|t| {
        t.rows.iter().find_map(|(k, v)| match v {
            Verdict::Skip(why) if *k == "burst" => Some(why.clone()),
            _ => None,
        })
    });
    r.perf_loss = match burst {
        Some(why) => Verdict::Skip(why),
        None => perf_loss(text),
    };
    r
}

/// The perf-loss run: the agent stopped while LOSS_BURST execs ran over
/// perf buffers of 2 pages a CPU. Records must be lost and counted, from
/// both sides: by the probes (`kernel_lost.exec`, outputs the buffer
/// refused) and by perf (`perf_lost`, its LOST records, all kinds); and
/// every exec of the burst reported or counted lost. An exec is two records
/// (entry and result) and the waiting loop's execs overflow too, so the
/// count bounds the burst rather than equals it.
fn perf_loss(text: &str) -> Verdict {
    if !marker(text, "attach perf-loss ").is_some_and(|m| m.contains("ready=yes")) {
        return Verdict::Fail("the agent did not start".into());
    }
    let events: Vec<Value> = section(text, "events perf-loss")
        .unwrap_or("")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let Some(stats) = events.iter().find(|e| e["kind"] == "stats") else {
        return Verdict::Fail("no stats line".into());
    };
    let seen = events
        .iter()
        .filter(|e| {
            e["kind"] == "exec"
                && e["argv"]
                    .as_array()
                    .is_some_and(|a| a.get(1).and_then(Value::as_str) == Some("vmtest-loss"))
        })
        .count() as u64;
    let perf = stats["perf_lost"].as_u64().unwrap_or(0);
    let exec = stats["kernel_lost"]["exec"].as_u64().unwrap_or(0);
    let n = u64::from(LOSS_BURST);
    if perf == 0 || exec == 0 {
        Verdict::Fail(format!(
            "{seen}/{n} seen, perf_lost {perf}, kernel_lost.exec {exec}: the buffers did not overflow or the loss went uncounted"
        ))
    } else if seen + exec < n {
        Verdict::Fail(format!("{seen}/{n} seen, only {exec} exec records counted lost"))
    } else {
        Verdict::Pass(format!("{seen}/{n} seen; lost: {exec} exec records by the probes, {perf} by perf"))
    }
}

/// `bpf-prog id= name= xlated_insns= jited_bytes= verified_insns=` lines:
/// how many, the largest program and the verifier's largest count.
fn programs(text: &str) -> String {
    let mut progs: Vec<(String, u64, u64, u64)> = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("bpf-prog ")) {
        let get = |k: &str| l.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("");
        let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
        progs.push((
            get("name=").to_owned(),
            num("xlated_insns="),
            num("jited_bytes="),
            num("verified_insns="),
        ));
    }
    let Some(largest) = progs.iter().max_by_key(|p| p.1) else {
        return "-".into();
    };
    let mut s =
        format!("{} loaded; largest {} ({} insns, {} B jited)", progs.len(), largest.0, largest.1, largest.2);
    match progs.iter().max_by_key(|p| p.3) {
        Some(v) if v.3 > 0 => {
            let _ = write!(s, "; verifier max {} insns processed ({})", v.3, v.0);
        }
        _ => s.push_str("; verified_insns not reported (Linux < 5.16)"),
    }
    s
}

fn evaluate_transport(t: &'static str, text: &str) -> TransportResult {
    let log = section(text, &format!("log {t}")).unwrap_or("");
    let attach = marker(text, &format!("attach {t} ")).unwrap_or("");
    let field = |name: &str| {
        attach.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse::<f64>().ok())
    };
    let ready = attach.contains("ready=yes");
    let ready_line = log.lines().find(|l| l.contains("shrike ready")).unwrap_or("");
    let attached = ready_line
        .split_once("shrike ready: ")
        .map(|(_, rest)| rest.split(" transport=").next().unwrap_or(rest).to_owned())
        .unwrap_or_default();
    let skipped =
        ready_line.split_once("skipped=").map(|(_, s)| s.split(" rules=").next().unwrap_or(s).to_owned());
    let mut res = TransportResult {
        transport: t,
        rows: Vec::new(),
        attached: match &skipped {
            Some(s) if s != "[]" => format!("{attached}; skipped: {}", compact_skipped(s)),
            _ => attached,
        },
        attach_secs: field("t1=").zip(field("t0=")).map(|(a, b)| a - b),
        progs: programs(section(text, &format!("progs {t}")).unwrap_or("")),
    };
    if !ready {
        let why = log
            .lines()
            .find(|l| l.contains("ERROR") || l.starts_with("error:"))
            .unwrap_or("the agent did not start")
            .chars()
            .take(200)
            .collect::<String>();
        for kind in KINDS {
            res.rows.push((kind, Verdict::Fail(why.clone())));
        }
        return res;
    }
    let events: Vec<Value> = section(text, &format!("events {t}"))
        .unwrap_or("")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let pam = marker(text, "pam").is_some_and(|m| m == "yes");
    let checks = Checks { events: &events, transport: t, pam };
    // "probe skipped ...: REASON program=... kinds=[Exec, ...]" warnings.
    let mut skipped_kinds: std::collections::BTreeMap<String, String> = Default::default();
    for l in log.lines().filter(|l| l.contains("probe skipped")) {
        let reason = l.split_once("missing: ").map_or("", |(_, r)| r);
        let reason: String = reason.split(" program=").next().unwrap_or("").chars().take(120).collect();
        if let Some((_, kinds)) = l.split_once("kinds=[") {
            for k in kinds.split(']').next().unwrap_or("").split(", ") {
                skipped_kinds.entry(k.to_lowercase()).or_insert_with(|| reason.clone());
            }
        }
    }
    for kind in KINDS {
        let v = checks.verdict(kind);
        // A kind whose probe the agent skipped (the kernel lacks it) is a
        // skip with the agent's reason, not a failure.
        let v = match (v, skipped_kinds.get(kind_of(kind))) {
            (Verdict::Fail(_), Some(why)) => Verdict::Skip(why.clone()),
            (v, _) => v,
        };
        res.rows.push((kind, v));
    }
    res
}

/// `["pam_start", ..., "sys_enter_fchmodat2"]` as "20 pam_*,
/// sys_enter_fchmodat2" (why the pam_* are skipped: the login column).
fn compact_skipped(list: &str) -> String {
    let names: Vec<&str> = list.trim_matches(['[', ']']).split(", ").map(|n| n.trim_matches('"')).collect();
    let pam = names.iter().filter(|n| n.starts_with("pam_")).count();
    let mut out: Vec<String> = Vec::new();
    // One exit program serves many calls: each name once.
    for n in names.iter().filter(|n| !n.starts_with("pam_")) {
        if !out.iter().any(|o| o == n) {
            out.push((*n).to_owned());
        }
    }
    if pam > 0 {
        out.insert(0, format!("{pam} pam_*"));
    }
    out.join(", ")
}

/// The agent's event kind a row checks.
fn kind_of(row: &str) -> &str {
    match row {
        "connect-ipv4" | "connect-ipv6" => "connect",
        "burst" => "exec",
        k => k,
    }
}

const KINDS: [&str; 10] = [
    "exec",
    "exit",
    "fork",
    "connect-ipv4",
    "connect-ipv6",
    "listen",
    "accept",
    "privilege",
    "login",
    "burst",
];

struct Checks<'a> {
    events: &'a [Value],
    transport: &'static str,
    /// The root has pamtester and the PAM service (the VMs).
    pam: bool,
}

impl Checks<'_> {
    fn of_kind<'b>(&'b self, kind: &'b str) -> impl Iterator<Item = &'b Value> + 'b {
        self.events.iter().filter(move |e| e["kind"] == kind)
    }

    /// The pid of the helper's exec whose argv[1..] starts with `args`.
    fn helper_pid(&self, args: &[&str]) -> Option<u64> {
        self.of_kind("exec")
            .find(|e| {
                let argv = e["argv"].as_array();
                argv.is_some_and(|a| {
                    a.len() > args.len()
                        && args.iter().enumerate().all(|(i, want)| a[i + 1].as_str() == Some(want))
                }) && e["exe"].as_str().is_some_and(|x| x.ends_with("helper"))
            })
            .and_then(|e| e["pid"].as_u64())
    }

    fn verdict(&self, kind: &str) -> Verdict {
        let t = self.transport;
        let marker = format!("vmtest-exec-{t}");
        match kind {
            "exec" => {
                let want = ["exit", "7", marker.as_str(), "a\nb", "$(id);`id`", "'\"\\\\", "\\xff\u{1}", ""];
                match self.helper_pid(&["exit", "7", &marker]) {
                    None => Verdict::Fail("no exec event of the helper".into()),
                    Some(_) if self.helper_pid(&want).is_some() => Verdict::Pass(String::new()),
                    Some(_) => Verdict::Fail("hostile argv not reported exactly".into()),
                }
            }
            "exit" => match self.helper_pid(&["exit", "7", &marker]) {
                None => Verdict::Fail("no exec event to match".into()),
                Some(pid) => {
                    if self.of_kind("exit").any(|e| e["pid"] == pid && e["exit_code"] == 7) {
                        Verdict::Pass(String::new())
                    } else {
                        Verdict::Fail("no exit event with code 7".into())
                    }
                }
            },
            "fork" => {
                let Some(pid) = self.helper_pid(&["fork-exit", "9"]) else {
                    return Verdict::Fail("no exec event of fork-exit".into());
                };
                let child =
                    self.of_kind("fork").find(|e| e["pid"] == pid).and_then(|e| e["child_pid"].as_u64());
                match child {
                    None => Verdict::Fail("no fork event".into()),
                    Some(c) if self.of_kind("exit").any(|e| e["pid"] == c && e["exit_code"] == 9) => {
                        Verdict::Pass(String::new())
                    }
                    Some(_) => Verdict::Fail("the child's exit code 9 is missing".into()),
                }
            }
            "connect-ipv4" | "connect-ipv6" => {
                let (family, port) = if kind == "connect-ipv4" { ("ipv4", 47001) } else { ("ipv6", 47002) };
                let connects: Vec<&Value> =
                    self.of_kind("connect").filter(|e| e["family"] == family).collect();
                let refused = connects.iter().any(|e| e["remote_port"] == 9 && e["status"] == "refused");
                let ok = connects.iter().any(|e| e["remote_port"] == port && e["result"] == 0);
                match (ok, refused) {
                    (true, true) => Verdict::Pass(String::new()),
                    (false, _) => Verdict::Fail(format!("no successful {family} connect")),
                    (_, false) => Verdict::Fail(format!("no refused {family} connect")),
                }
            }
            "listen" | "accept" => {
                let ports: Vec<u64> = self.of_kind(kind).filter_map(|e| e["local_port"].as_u64()).collect();
                if ports.contains(&47001) && ports.contains(&47002) {
                    Verdict::Pass(String::new())
                } else {
                    Verdict::Fail(format!("{kind} ports seen: {ports:?}, want 47001 and 47002"))
                }
            }
            "privilege" => match self.helper_pid(&["setgid", "4321"]) {
                None => Verdict::Fail("no exec event of the set*id helper".into()),
                Some(pid) => {
                    let n = self.of_kind("privilege").filter(|e| e["pid"] == pid).count();
                    if n >= 2 {
                        Verdict::Pass(String::new())
                    } else {
                        Verdict::Fail(format!("{n} privilege events, want setgid and setuid"))
                    }
                }
            },
            "login" if !self.pam => Verdict::Skip(
                "no pamtester and libpam in this root (the VMs get them); natively: tests/tests/login.rs"
                    .into(),
            ),
            "login" => {
                let auth = |result: &str| {
                    self.of_kind("login").any(|e| {
                        e["service"] == "shrike-vmtest"
                            && e["login_user"] == "vmuser"
                            && e["step"] == "authenticate"
                            && e["result"] == result
                    })
                };
                match (auth("success"), auth("failure")) {
                    (true, true) => Verdict::Pass(String::new()),
                    (false, _) => Verdict::Fail("no successful authenticate of vmuser".into()),
                    (_, false) => Verdict::Fail("no failed authenticate of vmuser".into()),
                }
            }
            "burst" => {
                let tag = format!("vmtest-burst-{t}");
                let seen = self
                    .of_kind("exec")
                    .filter(|e| {
                        e["argv"].as_array().is_some_and(|a| a.get(1).and_then(Value::as_str) == Some(&tag))
                    })
                    .count() as u64;
                let stats = self.events.iter().find(|e| e["kind"] == "stats");
                let lost = stats.map_or(0, |s| s["kernel_lost"]["exec"].as_u64().unwrap_or(0))
                    + stats.map_or(0, |s| s["perf_lost"].as_u64().unwrap_or(0));
                let n = u64::from(BURST);
                if stats.is_none() {
                    Verdict::Fail("no stats line".into())
                } else if seen == n {
                    Verdict::Pass(format!("{seen}/{n}, {lost} lost"))
                } else if seen + lost >= n {
                    Verdict::Pass(format!("{seen}/{n}, {lost} lost and counted"))
                } else {
                    Verdict::Fail(format!("{seen}/{n} seen, only {lost} counted lost"))
                }
            }
            _ => Verdict::Fail("unknown check".into()),
        }
    }
}

fn render(results: &[KernelResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| kernel | arch | transport | {} | perf overflow |", KINDS.join(" | "));
    let _ = writeln!(s, "|---|---|---|{}---|", "---|".repeat(KINDS.len()));
    for r in results {
        if let Some(e) = &r.error {
            let _ = writeln!(
                s,
                "| {} | {} | - | FAIL ({}) |{}",
                r.name,
                r.arch,
                e.replace('|', "/"),
                " |".repeat(KINDS.len())
            );
            continue;
        }
        for t in &r.transports {
            let mut cells: Vec<String> =
                t.rows.iter().map(|(_, v)| v.to_string().replace('|', "/")).collect();
            cells.push(if t.transport == "perf" { r.perf_loss.to_string() } else { "-".into() });
            let transport = if t.transport == "perf" { "perf, BTF hidden" } else { t.transport };
            let _ = writeln!(s, "| {} | {} | {} | {} |", r.name, r.arch, transport, cells.join(" | "));
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| kernel | release | BTF | `shrike check` | `shrike check`, BTF hidden | transport | probes attached | programs | time to attach |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in results.iter().filter(|r| r.error.is_none()) {
        for t in &r.transports {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                r.release,
                r.btf,
                r.check.replace('|', "/"),
                r.check_nobtf.to_string().replace('|', "/"),
                t.transport,
                t.attached.replace('|', "/"),
                t.progs,
                t.attach_secs.map_or("-".into(), |x| format!("{x:.1} s"))
            );
        }
    }
    let _ = writeln!(
        s,
        "\nprograms: the agent's loaded programs (BPF_OBJ_GET_INFO_BY_FD): the largest by instructions after verification (xlated), and the verifier's count of instructions processed (verified_insns, Linux 5.16+)."
    );
    s
}
