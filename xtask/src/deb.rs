//! Release builds for other targets (`cargo xtask build --target T`) and the
//! Debian package (`cargo xtask deb`).
//!
//! The package is assembled in `target/debian/` and built with `dpkg-deb`
//! (Debian's dpkg), no other tool: the stripped release binary in /usr/bin, the
//! default config as a conffile, the systemd unit, a man page written from the
//! agent's own `--help` texts, copyright and changelog, and maintainer scripts
//! that enable the service (deb-systemd-helper) and start or stop it only
//! where systemd runs.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{cargo, root, run};

/// The workspace version (xtask shares it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

// ---------------------------------------------------------------------------
// Release builds

/// C cross compiler (for ring) and linker of each supported target, and the
/// Debian package that has it: (triple, compiler, package).
const TARGETS: &[(&str, &str, &str)] = &[
    ("x86_64-unknown-linux-gnu", "x86_64-linux-gnu-gcc", "gcc"),
    ("x86_64-unknown-linux-musl", "musl-gcc", "musl-tools"),
    ("aarch64-unknown-linux-gnu", "aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ("aarch64-unknown-linux-musl", "aarch64-linux-musl-gcc", "a musl cross toolchain"),
    ("armv7-unknown-linux-gnueabihf", "arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf"),
];

fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// `cargo build --package shrike --profile <profile>` (`dev`, `release`, or
/// one of the workspace's CI profiles), for `target` when given: adds the
/// rustup target when missing and sets the C compiler and linker a cross
/// build needs. Returns the binary's path.
pub fn build(profile: &str, target: Option<&str>) -> anyhow::Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--package", "shrike", "--profile", profile]);
    // Cargo's directory of the dev profile is `debug`.
    let profile = if profile == "dev" { "debug" } else { profile };
    let Some(triple) = target.filter(|t| *t != host_triple()) else {
        run(c)?;
        return Ok(root().join("target").join(profile).join("shrike"));
    };
    c.args(["--target", triple]);
    ensure_rustup_target(triple)?;
    let Some(&(_, compiler, package)) = TARGETS.iter().find(|(t, _, _)| *t == triple) else {
        bail!(
            "unsupported target {triple}; supported: {}",
            TARGETS.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
        );
    };
    // A musl target of the host's own architecture links with the host's cc
    // (rustc brings musl's start files); only ring's C needs musl-gcc.
    let native_musl = triple == format!("{}-unknown-linux-musl", std::env::consts::ARCH);
    if !on_path(compiler) {
        bail!("building for {triple} needs {compiler}: install the Debian package `{package}`");
    }
    let var = triple.replace('-', "_");
    if std::env::var_os(format!("CC_{var}")).is_none() {
        c.env(format!("CC_{var}"), compiler);
    }
    let linker_var = format!("CARGO_TARGET_{}_LINKER", var.to_uppercase());
    if !native_musl && std::env::var_os(&linker_var).is_none() {
        c.env(linker_var, compiler);
    }
    if !native_musl && std::env::var_os(format!("AR_{var}")).is_none() {
        let ar = compiler.replace("-gcc", "-ar");
        if on_path(&ar) {
            c.env(format!("AR_{var}"), ar);
        }
    }
    run(c)?;
    Ok(root().join("target").join(triple).join(profile).join("shrike"))
}

fn ensure_rustup_target(triple: &str) -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root())
        .output()
        .context("running rustup")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == triple) {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", triple]).current_dir(root());
    run(add)
}

/// Prints the binary's size (for release notes and the 10 MB budget, which
/// is the release profile's).
pub fn report_size(bin: &Path, profile: &str) -> anyhow::Result<()> {
    let len = fs::metadata(bin).with_context(|| format!("{}", bin.display()))?.len();
    let note = if profile == "release" { "" } else { ", not a release build" };
    eprintln!("xtask: {} ({:.2} MB, profile {profile}{note})", bin.display(), len as f64 / 1e6);
    Ok(())
}

// ---------------------------------------------------------------------------
// The Debian package

/// Debian architecture of a Rust target triple.
pub fn deb_arch(triple: &str) -> anyhow::Result<&'static str> {
    Ok(match triple.split('-').next().unwrap_or_default() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7" => "armhf",
        "i686" => "i386",
        "riscv64gc" => "riscv64",
        other => bail!("no Debian architecture known for {other} ({triple})"),
    })
}

const MAINTAINER: &str = "Shrike developers <shrike-agent@users.noreply.github.com>";
const SERVICE: &str = "shrike.service";

/// Builds `target/debian/shrike_<version>_<arch>.deb` (the release binary is
/// built first unless `bin` is given) and returns its path.
pub fn deb(target: Option<&str>, bin: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let triple = target.map(str::to_owned).unwrap_or_else(host_triple);
    let arch = deb_arch(&triple)?;
    let bin = match bin {
        Some(b) => b,
        None => build("release", Some(&triple))?,
    };
    let out_dir = root().join("target/debian");
    let stage = out_dir.join(format!("shrike_{VERSION}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    fs::create_dir_all(&stage).with_context(|| format!("mkdir {}", stage.display()))?;
    fs::set_permissions(&stage, fs::Permissions::from_mode(0o755))?;
    let deploy = root().join("deploy");

    // Payload.
    put(&stage, "usr/bin/shrike", &fs::read(&bin).with_context(|| format!("{}", bin.display()))?, 0o755)?;
    strip_comment(&stage.join("usr/bin/shrike"), &triple)?;
    let config = fs::read_to_string(deploy.join("shrike.toml")).context("deploy/shrike.toml")?;
    put(&stage, "etc/shrike/shrike.toml", config.as_bytes(), 0o644)?;
    let unit = fs::read_to_string(deploy.join(SERVICE)).context("deploy/shrike.service")?;
    put(&stage, &format!("lib/systemd/system/{SERVICE}"), unit.as_bytes(), 0o644)?;
    // /run/shrike, the SDK socket's folder (setgid group shrike).
    let tmpfiles = fs::read_to_string(deploy.join("shrike.tmpfiles")).context("deploy/shrike.tmpfiles")?;
    put(&stage, "usr/lib/tmpfiles.d/shrike.conf", tmpfiles.as_bytes(), 0o644)?;
    let man = man_page(&bin, &triple)?;
    put(&stage, "usr/share/man/man1/shrike.1.gz", &gzip(man.as_bytes())?, 0o644)?;
    put(&stage, "usr/share/doc/shrike/copyright", copyright().as_bytes(), 0o644)?;
    put(&stage, "usr/share/lintian/overrides/shrike", LINTIAN_OVERRIDES.as_bytes(), 0o644)?;
    let date = changelog_date()?;
    let changelog = format!(
        "shrike ({VERSION}) unstable; urgency=medium\n\n  * Release {VERSION}.\n\n -- {MAINTAINER}  {date}\n"
    );
    // A native package (the version has no Debian revision): changelog.gz.
    put(&stage, "usr/share/doc/shrike/changelog.gz", &gzip(changelog.as_bytes())?, 0o644)?;

    // Control area.
    let installed_kib = dir_size(&stage)?.div_ceil(1024);
    let depends = shlib_depends(&bin)?;
    // A static (musl) binary depends on nothing.
    let depends = if depends.is_empty() { String::new() } else { format!("Depends: {depends}\n") };
    let control = format!(
        "Package: shrike\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         {depends}\
         Section: admin\n\
         Priority: optional\n\
         Homepage: https://github.com/shrike-agent/shrike\n\
         Description: eBPF security telemetry agent for Linux IoT gateways\n \
         Shrike watches a Linux machine with kernel programs on tracepoints and\n \
         uprobes: process exec, exit and fork, network connect, accept, listen\n \
         and bind, PAM logins and privilege changes. It reports them as JSON\n \
         lines (shrike events) or, as a daemon, as security messages to an MQTT\n \
         broker or Azure IoT Hub with an on-disk spool (shrike run).\n \
         .\n \
         The package installs the agent, its systemd unit (enabled, and started\n \
         where systemd runs) and the default configuration in\n \
         /etc/shrike/shrike.toml.\n"
    );
    put(&stage, "DEBIAN/control", control.as_bytes(), 0o644)?;
    put(&stage, "DEBIAN/conffiles", b"/etc/shrike/shrike.toml\n", 0o644)?;
    put(&stage, "DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    put(&stage, "DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    put(&stage, "DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
    put(&stage, "DEBIAN/md5sums", md5sums(&stage)?.as_bytes(), 0o644)?;

    let deb = out_dir.join(format!("shrike_{VERSION}_{arch}.deb"));
    let mut build = Command::new("dpkg-deb");
    build.args(["--root-owner-group", "-Zxz", "--build"]).arg(&stage).arg(&deb);
    if let Some(epoch) = source_date_epoch() {
        build.env("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    run(build).context("dpkg-deb is needed: install the Debian package `dpkg` (or `dpkg-dev`)")?;
    eprintln!("xtask: {}", deb.display());
    Ok(deb)
}

/// Writes `rel` under `stage` with `mode`; directories are made 0755.
fn put(stage: &Path, rel: &str, content: &[u8], mode: u32) -> anyhow::Result<()> {
    let path = stage.join(rel);
    let mut dir = stage.to_path_buf();
    for part in Path::new(rel).parent().into_iter().flat_map(Path::components) {
        dir.push(part);
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }
    fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Removes the `.comment` section (compiler versions) that cargo's strip
/// leaves, with the objcopy of the binary's architecture.
fn strip_comment(bin: &Path, triple: &str) -> anyhow::Result<()> {
    let objcopy = match TARGETS.iter().find(|t| t.0 == triple) {
        Some((_, cc, _)) if triple != host_triple() && !cc.starts_with("musl") => {
            cc.replace("-gcc", "-objcopy")
        }
        _ => "objcopy".to_owned(),
    };
    let mut c = Command::new(&objcopy);
    c.args(["--remove-section=.comment"]).arg(bin);
    run(c).with_context(|| format!("{objcopy} (binutils) is needed"))
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    // gzip -9n: no name, no time stamp (reproducible, as lintian wants).
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        total += if meta.is_dir() { dir_size(&e.path())? } else { meta.len() };
    }
    Ok(total)
}

/// `DEBIAN/md5sums` of the payload (conffiles are tracked by dpkg itself).
fn md5sums(stage: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    collect(stage, stage, &mut files)?;
    files.retain(|f| !f.starts_with("DEBIAN/") && !f.starts_with("etc/"));
    files.sort();
    let out = Command::new("md5sum").args(&files).current_dir(stage).output().context("running md5sum")?;
    if !out.status.success() {
        bail!("md5sum failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect(base, &p, out)?;
        } else {
            out.push(p.strip_prefix(base)?.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The commit time of HEAD (reproducible dates), else now.
fn source_date_epoch() -> Option<i64> {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()) {
        return Some(e);
    }
    let out = Command::new("git").args(["log", "-1", "--format=%ct"]).current_dir(root()).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Lintian's findings that are not defects of this package, each with why.
const LINTIAN_OVERRIDES: &str = "\
# The YAML parser of the Sigma and SCA policy loaders is unsafe-libyaml, a Rust
# translation of libyaml compiled into the binary (no C library to link to):
# lintian recognises libyaml's strings in it.
shrike: embedded-library libyaml [usr/bin/shrike]
# The recommendations read dpkg's file lists (read-only, /var/lib/dpkg/info) to
# tell the distribution's SUID files from others; there is no dpkg interface
# for that from a program that may assess another root file system (--root).
shrike: uses-dpkg-database-directly [usr/bin/shrike]
";

fn changelog_date() -> anyhow::Result<String> {
    let mut date = Command::new("date");
    date.args(["-u", "-R"]);
    if let Some(epoch) = source_date_epoch() {
        date.arg("-d").arg(format!("@{epoch}"));
    }
    let out = date.output().context("running date")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Depends on the shared libraries the binary links: libc6 at the newest
/// GLIBC symbol version it uses, libgcc-s1 for libgcc_s (readelf works for
/// every architecture; a static binary depends on nothing).
fn shlib_depends(bin: &Path) -> anyhow::Result<String> {
    let dynamic =
        Command::new("readelf").arg("-d").arg(bin).output().context("running readelf (binutils)")?;
    let dynamic = String::from_utf8_lossy(&dynamic.stdout).into_owned();
    let versions = Command::new("readelf").arg("-V").arg(bin).output()?;
    let versions = String::from_utf8_lossy(&versions.stdout).into_owned();
    let glibc = versions
        .split(|c: char| c.is_whitespace())
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let nums: Option<Vec<u32>> = v.split('.').map(|n| n.parse().ok()).collect();
            nums.map(|n| (n, v.to_owned()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v);
    let mut deps = Vec::new();
    for lib in dynamic
        .lines()
        .filter_map(|l| l.split_once("Shared library: ["))
        .map(|(_, r)| r.trim_end_matches(']'))
    {
        let dep = match lib {
            l if l.starts_with("libc.so") || l.starts_with("libm.so") || l.starts_with("ld-linux") => {
                match &glibc {
                    Some(v) => format!("libc6 (>= {v})"),
                    None => "libc6".to_owned(),
                }
            }
            l if l.starts_with("libgcc_s.so") => "libgcc-s1".to_owned(),
            other => bail!("{} links {other}: add its Debian package to shlib_depends", bin.display()),
        };
        if !deps.contains(&dep) {
            deps.push(dep);
        }
    }
    Ok(deps.join(", "))
}

fn copyright() -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: shrike\n\
         Upstream-Contact: {MAINTAINER}\n\
         Source: https://github.com/shrike-agent/shrike\n\
         \n\
         Files: *\n\
         Copyright: 2026 Shrike developers\n\
         License: Expat or Apache-2.0\n\
         \n\
         License: Expat\n{EXPAT}\n\
         License: Apache-2.0\n \
         Licensed under the Apache License, Version 2.0 (the \"License\"); you may\n \
         not use this file except in compliance with the License. You may obtain\n \
         a copy of the License at\n \
         .\n \
         http://www.apache.org/licenses/LICENSE-2.0\n \
         .\n \
         Unless required by applicable law or agreed to in writing, software\n \
         distributed under the License is distributed on an \"AS IS\" BASIS,\n \
         WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.\n \
         See the License for the specific language governing permissions and\n \
         limitations under the License.\n \
         .\n \
         On Debian systems, the complete text of the Apache License, Version 2.0\n \
         can be found in /usr/share/common-licenses/Apache-2.0.\n"
    )
}

const EXPAT: &str = " Permission is hereby granted, free of charge, to any person obtaining a\n \
copy of this software and associated documentation files (the \"Software\"),\n \
to deal in the Software without restriction, including without limitation\n \
the rights to use, copy, modify, merge, publish, distribute, sublicense,\n \
and/or sell copies of the Software, and to permit persons to whom the\n \
Software is furnished to do so, subject to the following conditions:\n \
.\n \
The above copyright notice and this permission notice shall be included\n \
in all copies or substantial portions of the Software.\n \
.\n \
THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR\n \
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,\n \
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL\n \
THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER\n \
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING\n \
FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER\n \
DEALINGS IN THE SOFTWARE.";

// Maintainer scripts: what debhelper's dh_installsystemd generates. The unit
// is enabled with deb-systemd-helper (symlinks, also without a running
// systemd, so it starts at the next boot); it is started, stopped and
// reloaded only where systemd runs. No command's failure fails the script.
const POSTINST: &str = r#"#!/bin/sh
set -e

if [ "$1" = "configure" ]; then
	# Spool and agent id: root only (security events wait here).
	mkdir -p /var/lib/shrike
	chown root:root /var/lib/shrike
	chmod 0700 /var/lib/shrike
	# Group shrike: its members may report events through the SDK socket
	# (/run/shrike/sdk.sock, mode 0660). Kept on purge, like any system group.
	if ! getent group shrike >/dev/null; then
		groupadd --system shrike
	fi
	# /run/shrike now (at boot, systemd-tmpfiles makes it).
	if command -v systemd-tmpfiles >/dev/null 2>&1; then
		systemd-tmpfiles --create /usr/lib/tmpfiles.d/shrike.conf >/dev/null || true
	else
		mkdir -p /run/shrike && chgrp shrike /run/shrike && chmod 2750 /run/shrike
	fi
fi

if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		# This will only remove masks created by d-s-h on package removal.
		deb-systemd-helper unmask 'shrike.service' >/dev/null || true
		# was-enabled defaults to true, so new installations run enable.
		if deb-systemd-helper --quiet was-enabled 'shrike.service'; then
			deb-systemd-helper enable 'shrike.service' >/dev/null || true
		else
			deb-systemd-helper update-state 'shrike.service' >/dev/null || true
		fi
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			_action=restart
		else
			_action=start
		fi
		deb-systemd-invoke $_action 'shrike.service' >/dev/null || true
	fi
fi

exit 0
"#;

const PRERM: &str = r#"#!/bin/sh
set -e

if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	deb-systemd-invoke stop 'shrike.service' >/dev/null || true
fi

exit 0
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e

if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi

if [ "$1" = "remove" ]; then
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper mask 'shrike.service' >/dev/null || true
	fi
fi

if [ "$1" = "purge" ]; then
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper purge 'shrike.service' >/dev/null || true
		deb-systemd-helper unmask 'shrike.service' >/dev/null || true
	fi
	# The spool (undelivered messages) and the agent id.
	rm -rf /var/lib/shrike
fi

exit 0
"#;

// ---------------------------------------------------------------------------
// The man page, from the agent's own help texts

/// roff for shrike(1): the top-level `--help` and every subcommand's, verbatim.
/// The binary runs on the build machine only when it is of its architecture;
/// otherwise the host's (dev) build of the same sources gives the texts.
fn man_page(bin: &Path, triple: &str) -> anyhow::Result<String> {
    let helper =
        if triple == host_triple() || triple == format!("{}-unknown-linux-musl", std::env::consts::ARCH) {
            bin.to_path_buf()
        } else {
            build("dev", None)?
        };
    let help = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(&helper)
            .args(args)
            .output()
            .with_context(|| format!("running {}", helper.display()))?;
        if !out.status.success() {
            bail!("{} {args:?} failed: {}", helper.display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    let top = help(&["--help"])?;
    let about = top.lines().next().unwrap_or("eBPF security telemetry agent").trim().to_owned();
    // "Commands:" lists `  name  text`; `help` is clap's own.
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    let mut m = String::new();
    writeln!(m, ".TH SHRIKE 1 \"\" \"shrike {VERSION}\" \"User Commands\"")?;
    writeln!(m, ".SH NAME\nshrike \\- {}", roff_text(&lowercase_first(&about)))?;
    writeln!(m, ".SH SYNOPSIS\n.B shrike\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fICOMMAND OPTIONS\\fR]")?;
    writeln!(m, ".SH DESCRIPTION")?;
    writeln!(
        m,
        "Shrike loads kernel programs on tracepoints and uprobes and reports process, \
         network, login and privilege events. It needs root (CAP_BPF, CAP_PERFMON, \
         CAP_SYS_ADMIN); the daemon drops all but CAP_DAC_READ_SEARCH and \
         CAP_SYS_PTRACE once its probes are attached (and keeps CAP_BPF on kernels \
         that refuse bpf(2) without it). The systemd unit shrike.service runs \
         \\fBshrike run\\fR with /etc/shrike/shrike.toml."
    )?;
    writeln!(m, ".SH OPTIONS")?;
    preformatted(&mut m, &top)?;
    for c in &commands {
        writeln!(m, ".SH \"shrike {c}\"")?;
        preformatted(&mut m, &help(&[c, "--help"])?)?;
    }
    writeln!(
        m,
        ".SH EXIT STATUS\n0 success, 1 runtime failure, 2 bad usage or configuration, 3 the agent cannot run here."
    )?;
    writeln!(
        m,
        ".SH FILES\n.TP\n.I /etc/shrike/shrike.toml\nconfiguration of \\fBshrike run\\fR (every setting documented)"
    )?;
    writeln!(m, ".TP\n.I /var/lib/shrike\nthe spool of undelivered messages and the agent id")?;
    writeln!(m, ".SH SEE ALSO\n\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1)")?;
    Ok(m)
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if !s.starts_with("eBPF") => f.to_lowercase().chain(c).collect(),
        _ => s.to_owned(),
    }
}

/// Escapes text for roff: backslashes, and lines starting with a control character.
fn roff_text(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

fn preformatted(m: &mut String, text: &str) -> anyhow::Result<()> {
    writeln!(m, ".nf")?;
    for line in text.lines() {
        let l = roff_text(line);
        if l.starts_with('.') || l.starts_with('\'') {
            writeln!(m, "\\&{l}")?;
        } else if l.is_empty() {
            writeln!(m, ".sp")?;
        } else {
            writeln!(m, "{l}")?;
        }
    }
    writeln!(m, ".fi")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_architectures() {
        assert_eq!(deb_arch("x86_64-unknown-linux-gnu").unwrap(), "amd64");
        assert_eq!(deb_arch("x86_64-unknown-linux-musl").unwrap(), "amd64");
        assert_eq!(deb_arch("aarch64-unknown-linux-gnu").unwrap(), "arm64");
        assert_eq!(deb_arch("armv7-unknown-linux-gnueabihf").unwrap(), "armhf");
        assert!(deb_arch("sparc64-unknown-linux-gnu").is_err());
    }

    #[test]
    fn roff_escapes() {
        let mut m = String::new();
        preformatted(&mut m, ".hidden\n\nback\\slash --flag\n").unwrap();
        assert_eq!(m, ".nf\n\\&.hidden\n.sp\nback\\eslash \\-\\-flag\n.fi\n");
    }
}
