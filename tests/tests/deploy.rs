//! Deployment as users run it: the Debian package (lintian, install, purge),
//! the systemd unit, the capability set it grants (and the agent's drop
//! after attaching), the Kubernetes manifest, the container image around the
//! static agent, and the aarch64 cross build.
//!
//! They build what they need with `cargo xtask build --profile P [--target T]`
//! and `cargo xtask deb` (cached after the first run) and need Debian
//! packages: lintian, dpkg, man-db, systemd, podman, runc, musl-tools,
//! gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user-static, file,
//! binutils (`cargo xtask test` and `.ci/run` install them). A missing tool
//! fails the test in CI (`CI` set) and skips it elsewhere, saying why.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use shrike_tests::{TempDir, Value, marker, require_root, run_ok, workspace_root};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether the slow deployment checks run (the .deb, the static musl
/// container, the aarch64 cross build: about 3 minutes on top of the other
/// tests, cold on CI's 2 cores, nearly all of it builds): with
/// SHRIKE_HEAVY_TESTS=1, which `cargo xtask test` sets (SHRIKE_HEAVY_TESTS=0
/// with `--quick`), and in CI unless SHRIKE_HEAVY_TESTS=0. Otherwise they say
/// they were skipped.
fn heavy(test: &str) -> bool {
    let run = heavy_enabled();
    if !run {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED {test}: slow deployment test; `cargo xtask test` runs it (SHRIKE_HEAVY_TESTS=1)"
        );
    }
    run
}

fn heavy_enabled() -> bool {
    match std::env::var("SHRIKE_HEAVY_TESTS").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => std::env::var_os("CI").is_some(),
    }
}

/// The agent the unit's sandbox and capability tests run: the release build
/// the package ships (SHRIKE_RELEASE_BIN, or built: the package test builds
/// it anyway) when the heavy tests run; otherwise (`cargo xtask test
/// --quick`) the debug build every other test uses, so that `--quick` builds
/// no release agent. The sandbox and the capabilities do not depend on the
/// profile.
fn unit_bin() -> PathBuf {
    match std::env::var_os("SHRIKE_RELEASE_BIN") {
        Some(p) => PathBuf::from(p),
        None if heavy_enabled() => release_bin(None),
        None => shrike_tests::agent_bin().to_path_buf(),
    }
}

/// True when `path` exists; otherwise fails in CI, or prints why the test is
/// skipped and returns false.
fn need(path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    let reason = format!("{path} is missing: install the Debian package `{package}`");
    assert!(std::env::var_os("CI").is_none(), "{reason}");
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {reason}");
    false
}

fn cargo_xtask(args: &[&str]) -> std::process::Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let out = run_ok(Command::new(cargo).arg("xtask").args(args).current_dir(workspace_root()));
    eprintln!("[deploy] cargo xtask {} took {:.1?}", args.join(" "), started.elapsed());
    out
}

/// The stripped release binary for `target` (the host's when None): what
/// the package ships (under the 10 MB budget).
fn release_bin(target: Option<&str>) -> PathBuf {
    let bin = agent_bin(target, "release");
    let size = std::fs::metadata(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display())).len();
    eprintln!("[deploy] {} is {:.2} MB", bin.display(), size as f64 / 1e6);
    assert!(size < 10_000_000, "{} is {size} bytes, over the 10 MB budget", bin.display());
    bin
}

/// The agent built with `cargo xtask build --profile <profile> [--target T]`.
/// The container and cross tests use `ci-dev` (the dev profile without debug
/// info, Cargo.toml): they check linking and running, and a release build per
/// target would add minutes.
fn agent_bin(target: Option<&str>, profile: &str) -> PathBuf {
    let mut args = vec!["build", "--profile", profile];
    if let Some(t) = target {
        args.extend(["--target", t]);
    }
    cargo_xtask(&args);
    let mut dir = workspace_root().join("target");
    if let Some(t) = target {
        dir.push(t);
    }
    dir.join(if profile == "dev" { "debug" } else { profile }).join("shrike")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn mode_owner(path: &str) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

// ---------------------------------------------------------------------------
// (a) The Debian package

/// Purges the package when dropped (a failed test leaves no install behind).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "shrike"]).stdout(Stdio::null()).status();
    }
}

fn dpkg_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", "shrike"])
        .output()
        .expect("dpkg-query");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

const PACKAGED: &[(&str, u32)] = &[
    ("/usr/bin/shrike", 0o755),
    ("/etc/shrike/shrike.toml", 0o644),
    ("/lib/systemd/system/shrike.service", 0o644),
    ("/usr/share/man/man1/shrike.1.gz", 0o644),
    ("/usr/share/doc/shrike/copyright", 0o644),
    ("/usr/share/doc/shrike/changelog.gz", 0o644),
    ("/usr/lib/tmpfiles.d/shrike.conf", 0o644),
];

#[test]
fn debian_package_passes_lintian_installs_and_purges() {
    if !heavy("debian_package_passes_lintian_installs_and_purges") {
        return;
    }
    if !require_root() {
        return;
    }
    if !need("/usr/bin/dpkg-deb", "dpkg") || !need("/usr/bin/lintian", "lintian") {
        return;
    }
    if !need("/usr/bin/systemd-analyze", "systemd") {
        return;
    }
    // A package left by an interrupted run goes first.
    let _ = Command::new("dpkg").args(["--purge", "shrike"]).stdout(Stdio::null()).status();

    cargo_xtask(&["deb"]);
    let arch =
        String::from_utf8(run_ok(Command::new("dpkg").arg("--print-architecture")).stdout).expect("utf-8");
    let deb = workspace_root().join(format!("target/debian/shrike_{VERSION}_{}.deb", arch.trim()));
    assert!(deb.is_file(), "{} was not built", deb.display());

    // lintian: no errors (and, as of this writing, no warnings either).
    let started = Instant::now();
    let lint = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .expect("lintian");
    let report = text(&lint);
    eprintln!("[deploy] lintian ({:.1?}):\n{report}", started.elapsed());
    assert!(lint.status.success(), "lintian failed ({}):\n{report}", lint.status);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors: {errors:#?}");

    let _installed = Installed;
    let out = run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    eprintln!("[deploy] dpkg -i:\n{}", text(&out));
    assert_eq!(dpkg_status(), "ii", "package not installed");

    for (path, mode) in PACKAGED {
        assert_eq!(mode_owner(path), (*mode, 0, 0), "mode/uid/gid of {path}");
    }
    // The spool directory: made by the postinst, root only.
    assert_eq!(mode_owner("/var/lib/shrike"), (0o700, 0, 0), "mode/uid/gid of /var/lib/shrike");
    // The SDK socket's folder: group shrike (made by the postinst), setgid
    // so the socket the agent binds there is in the group.
    let group = run_ok(Command::new("getent").args(["group", "shrike"])).stdout;
    let gid: u32 =
        String::from_utf8_lossy(&group).split(':').nth(2).and_then(|g| g.parse().ok()).expect("gid");
    assert_eq!(mode_owner("/run/shrike"), (0o2750, 0, gid), "mode/uid/gid of /run/shrike");
    // Enabled (deb-systemd-helper makes the link without a running systemd).
    let wants = "/etc/systemd/system/multi-user.target.wants/shrike.service";
    assert!(std::fs::symlink_metadata(wants).is_ok(), "{wants} missing: the unit was not enabled");

    let conffiles = run_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "shrike"])).stdout;
    let conffiles = String::from_utf8_lossy(&conffiles);
    let lines: Vec<Vec<&str>> = conffiles
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| !w.is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "conffiles: {conffiles:?}");
    assert_eq!(lines[0][0], "/etc/shrike/shrike.toml");
    let md5 = run_ok(Command::new("md5sum").arg("/etc/shrike/shrike.toml")).stdout;
    assert!(String::from_utf8_lossy(&md5).starts_with(lines[0][1]), "conffile md5 {conffiles:?} vs {md5:?}");
    // The packaged config is the documented one.
    assert_eq!(
        std::fs::read_to_string("/etc/shrike/shrike.toml").expect("config"),
        std::fs::read_to_string(workspace_root().join("deploy/shrike.toml")).expect("deploy config")
    );

    // The installed unit verifies, man page and binary included.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/lib/systemd/system/shrike.service"])
        .output()
        .expect("systemd-analyze");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        text(&verify)
    );
    if need("/usr/bin/man", "man-db") {
        let man = run_ok(
            Command::new("man").args(["-l", "/usr/share/man/man1/shrike.1.gz"]).env("MANWIDTH", "100"),
        );
        let page = String::from_utf8_lossy(&man.stdout);
        for section in ["shrike run", "shrike events", "shrike check", "--proc-root", "--config"] {
            assert!(page.contains(section), "the man page has no {section:?}:\n{page}");
        }
    }

    let version = run_ok(Command::new("/usr/bin/shrike").arg("--version")).stdout;
    let version = String::from_utf8_lossy(&version);
    assert!(version.starts_with(&format!("shrike {VERSION} (")), "--version: {version}");
    assert!(!version.contains("unknown commit"), "--version has no commit: {version}");
    let check = Command::new("/usr/bin/shrike").arg("check").output().expect("shrike check");
    assert!(check.status.success(), "installed shrike check failed ({}):\n{}", check.status, text(&check));

    // Remove keeps the conffile; purge removes everything.
    std::fs::write("/var/lib/shrike/agent-id", "spool and id are purged\n").expect("state file");
    run_ok(Command::new("dpkg").args(["-r", "shrike"]));
    assert_eq!(dpkg_status(), "rc", "removed, config kept");
    assert!(Path::new("/etc/shrike/shrike.toml").exists(), "remove deleted the conffile");
    assert!(!Path::new("/usr/bin/shrike").exists());
    run_ok(Command::new("dpkg").args(["--purge", "shrike"]));
    assert_eq!(dpkg_status(), "", "dpkg still knows the package after purge");
    for (path, _) in PACKAGED {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
    for path in [
        "/etc/shrike",
        "/var/lib/shrike",
        wants,
        "/usr/share/doc/shrike",
        // deb-systemd-helper's mask (made on remove) and its state.
        "/etc/systemd/system/shrike.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/shrike.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/shrike.service",
    ] {
        assert!(std::fs::symlink_metadata(path).is_err(), "{path} left after purge");
    }
}

// ---------------------------------------------------------------------------
// (b) The systemd unit, and the capability set it grants

fn unit_text() -> String {
    std::fs::read_to_string(workspace_root().join("deploy/shrike.service")).expect("deploy/shrike.service")
}

fn unit_values(key: &str) -> Vec<String> {
    unit_text()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[test]
fn systemd_unit_verifies() {
    if !need("/usr/bin/systemd-analyze", "systemd") {
        return;
    }
    // systemd-analyze checks that ExecStart's binary exists and man pages
    // resolve: verify in a root holding the system's units and stand-ins for
    // /usr/bin/shrike and /bin/kill (the package test verifies the installed
    // unit for real).
    let root = TempDir::new("unit-root");
    let units = root.path().join("lib/systemd");
    std::fs::create_dir_all(&units).expect("mkdir");
    run_ok(Command::new("cp").arg("-a").arg("/lib/systemd/system").arg(&units));
    // The unit is looked up inside the root too.
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::copy(workspace_root().join("deploy/shrike.service"), etc.join("shrike.service"))
        .expect("copy the unit");
    // Stand-ins for ExecStart's and ExecReload's commands.
    for bin in ["usr/bin/shrike", "bin/kill"] {
        let bin = root.path().join(bin);
        std::fs::create_dir_all(bin.parent().expect("parent")).expect("mkdir");
        std::fs::write(&bin, "#!/bin/sh\n").expect("stand-in");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .arg(workspace_root().join("deploy/shrike.service"))
        .output()
        .expect("systemd-analyze");
    assert!(out.status.success() && out.stderr.is_empty(), "systemd-analyze verify:\n{}", text(&out));

    let unit = unit_text();
    for line in [
        "ExecStart=/usr/bin/shrike run --config /etc/shrike/shrike.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "StateDirectory=shrike",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has no {line:?}");
    }
    let mut caps = unit_values("CapabilityBoundingSet");
    caps.sort();
    assert_eq!(
        caps,
        ["CAP_BPF", "CAP_DAC_READ_SEARCH", "CAP_PERFMON", "CAP_SETPCAP", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]
    );
    // hidepid=invisible hides only what the agent could not ptrace: it keeps
    // CAP_SYS_PTRACE, so it still sees every process (checked below).
    assert!(unit.lines().any(|l| l == "ProtectProc=invisible"), "the unit has no ProtectProc=invisible");
    assert!(caps.iter().any(|c| c == "CAP_SYS_PTRACE"), "ProtectProc=invisible needs CAP_SYS_PTRACE");
}

/// `systemd-analyze security --offline=yes` scores the unit at most 3.0
/// (it was 4.8 before the system call filter and the /proc, /sys and device
/// restrictions); each exposure left is explained in the unit.
#[test]
fn systemd_unit_exposure_is_at_most_3() {
    if !need("/usr/bin/systemd-analyze", "systemd") {
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(workspace_root().join("deploy/shrike.service"))
        .env("SYSTEMD_COLORS", "0")
        .output()
        .expect("systemd-analyze security");
    let all = text(&out);
    let line = all
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{all}"));
    let score: f64 = line
        .split_once(": ")
        .and_then(|(_, v)| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line:?}"));
    eprintln!("[deploy] {line}");
    assert!(score <= 3.0, "exposure {score} > 3.0:\n{all}");
}

/// The system calls the unit's SystemCallFilter= allows, as systemd resolves
/// it: each line in order, an allow list adding its calls, a `~` line
/// removing them; groups (`@name`) expanded by `systemd-analyze syscall-filter`.
fn unit_syscalls() -> std::collections::BTreeSet<String> {
    fn expand(item: &str, out: &mut std::collections::BTreeSet<String>) {
        let Some(group) = item.strip_prefix('@').map(|_| item) else {
            out.insert(item.to_owned());
            return;
        };
        let o = run_ok(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager", group]));
        for l in String::from_utf8_lossy(&o.stdout).lines().skip(1) {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            expand(l, out);
        }
    }
    let mut allowed = std::collections::BTreeSet::new();
    for line in unit_text().lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")) {
        let (deny, items) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let mut set = std::collections::BTreeSet::new();
        for item in items.split_whitespace() {
            expand(item, &mut set);
        }
        if deny {
            allowed.retain(|c| !set.contains(c));
        } else {
            allowed.extend(set);
        }
    }
    allowed
}

/// Syscall numbers by name, from the kernel headers (linux-libc-dev).
fn syscall_numbers() -> Option<std::collections::HashMap<String, u32>> {
    let header = match std::env::consts::ARCH {
        "x86_64" => "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
        _ => return None,
    };
    let text = std::fs::read_to_string(header).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("#define __NR_")?.split_whitespace();
                Some((w.next()?.to_owned(), w.next()?.parse().ok()?))
            })
            .collect(),
    )
}

/// The agent under the unit's sandbox, approximated without systemd as PID
/// 1: its system call filter (as seccomp, a denied call killing the agent),
/// NoNewPrivileges, its bounding set, /sys and /proc/sys read-only
/// (ProtectKernelTunables) and /proc with hidepid=invisible (ProtectProc), in
/// a mount namespace of its own. `shrike run` attaches its probes, drops its
/// capabilities, reports execs to a real mosquitto (spool writes, fsync,
/// TLS-less MQTT), reloads on SIGHUP and stops cleanly on SIGTERM.
#[test]
fn daemon_runs_under_the_units_sandbox() {
    if !require_root()
        || !need("/usr/bin/setpriv", "util-linux")
        || !need("/usr/bin/unshare", "util-linux")
        || !need("/usr/bin/systemd-analyze", "systemd")
        || !shrike_tests::broker::available("daemon_runs_under_the_units_sandbox")
    {
        return;
    }
    let Some(numbers) = syscall_numbers() else {
        eprintln!(
            "SKIPPED daemon_runs_under_the_units_sandbox: no syscall table for {}",
            std::env::consts::ARCH
        );
        return;
    };
    let allowed = unit_syscalls();
    for call in ["bpf", "perf_event_open", "capset", "read", "fsync", "connect"] {
        assert!(allowed.contains(call), "the unit's filter does not allow {call}");
    }
    for call in ["mount", "ptrace", "setuid", "reboot", "init_module", "setrlimit", "settimeofday"] {
        assert!(!allowed.contains(call), "the unit's filter allows {call}");
    }
    let dir = TempDir::new("sandbox");
    let nrs: Vec<String> = allowed.iter().filter_map(|c| numbers.get(c)).map(u32::to_string).collect();
    let nr_file = dir.path().join("syscalls");
    std::fs::write(&nr_file, nrs.join("\n")).expect("writing the syscall list");

    let broker = shrike_tests::broker::Broker::start(dir.path(), "", &[]);
    let sub = shrike_tests::broker::Subscriber::start(broker.port, "shrike/#");
    let config = dir.path().join("shrike.toml");
    std::fs::write(&config, format!("hub = \"mqtt://127.0.0.1:{}\"\n", broker.port)).expect("config");

    let bin = unit_bin();
    let bounding: Vec<String> = unit_values("CapabilityBoundingSet")
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    // Read-only /sys (each of its mounts) and /proc/sys; a new /proc with
    // hidepid=invisible (the same pid namespace).
    let sandbox = r#"set -e
sys=$(awk '$5 == "/sys" || index($5, "/sys/") == 1 { print $5 }' /proc/self/mountinfo)
mount -t proc -o hidepid=invisible proc /proc
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
for m in $sys; do mount -o remount,bind,ro "$m"; done
exec "$@""#;
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", sandbox, "sh", "setpriv"])
        .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .args(["--no-new-privs", "--"])
        .arg(shrike_tests::helper_bin!())
        .arg("seccomp")
        .arg(&nr_file)
        .arg("exec")
        .arg(&bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--priority", "exec=high", "--aggregate", "exec=off", "--high-interval", "200ms"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare ... shrike run");
    let stdout = collect_lines(child.stdout.take().expect("piped"));
    let stderr = collect_lines(child.stderr.take().expect("piped"));
    let mut child = Kill(child);
    let pid = child.0.id();
    let log = || stderr.lock().expect("lines").join("\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    let dropped = loop {
        let found = stderr.lock().expect("lines").iter().find(|l| l.contains("capabilities")).cloned();
        if let Some(l) = found {
            break l;
        }
        if let Some(st) = child.0.try_wait().expect("try_wait") {
            use std::os::unix::process::ExitStatusExt;
            let why = if st.signal() == Some(libc::SIGSYS) {
                "killed by a system call outside the unit's filter (dmesg names it: audit type=1326)"
                    .to_owned()
            } else {
                format!("exited with {st}")
            };
            panic!("the sandboxed agent {why}; its log:\n{}", log());
        }
        assert!(Instant::now() < deadline, "no capability drop in the log within 60 s:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(dropped.contains("capabilities dropped"), "{dropped}");
    assert!(stdout.lock().expect("lines").iter().any(|l| l.starts_with("seccomp allowed=")));

    let delivered = |tag: &str| {
        let tag = tag.to_owned();
        sub.wait_until(Duration::from_secs(20), move |m| {
            m.iter().any(|r| String::from_utf8_lossy(&r.payload).contains(&tag))
        })
    };
    let tag = marker("sandbox");
    run_ok(Command::new("/bin/sh").args(["-c", "exit 0", &tag]));
    assert!(delivered(&tag), "no message with {tag} from the sandboxed agent; its log:\n{}", log());
    // A reload, then more events.
    // SAFETY: signals our own, not yet reaped, child (exec keeps the pid).
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    wait_for(&stderr, Duration::from_secs(20), "the reload", |l| l.contains("configuration reloaded"));
    let tag = marker("sandbox-reloaded");
    run_ok(Command::new("/bin/sh").args(["-c", "exit 0", &tag]));
    assert!(delivered(&tag), "no message with {tag} after the reload; its log:\n{}", log());

    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "shrike run did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_ne!(
        status.signal(),
        Some(libc::SIGSYS),
        "a system call outside the unit's filter killed the agent (dmesg names it: audit type=1326); log:\n{}",
        log()
    );
    assert!(status.success(), "shrike run exited with {status}:\n{}", log());
    assert!(log().contains("shrike stopping"), "{}", log());
}

/// Capability masks of every thread of `pid`: (tid, CapPrm, CapEff, CapBnd).
fn thread_caps(pid: u32) -> Vec<(String, u64, u64, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir").flatten() {
        let tid = e.file_name().to_string_lossy().into_owned();
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else { continue };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
        };
        out.push((
            tid,
            field("CapPrm:").expect("CapPrm"),
            field("CapEff:").expect("CapEff"),
            field("CapBnd:").expect("CapBnd"),
        ));
    }
    out
}

/// Lines of a child's stream, collected by a thread.
fn collect_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            l.lock().expect("lines").push(line);
        }
    });
    lines
}

fn wait_for(
    lines: &Mutex<Vec<String>>,
    limit: Duration,
    what: &str,
    mut ok: impl FnMut(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(l) = lines.lock().expect("lines").iter().find(|l| ok(l)) {
            return l.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}:\n{}",
            lines.lock().expect("lines").join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills and reaps a child when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `shrike run` with exactly the unit's capability bounding set (root, as
/// systemd starts it) attaches its probes, then keeps only
/// CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE on every thread, and still reports
/// a process (with its command line from /proc) and stops cleanly.
#[test]
fn daemon_runs_with_the_units_capabilities_and_drops_them() {
    if !require_root() || !need("/usr/bin/setpriv", "util-linux") {
        return;
    }
    let bin = unit_bin();
    let state = TempDir::new("caps-state");
    let bounding: Vec<String> = unit_values("CapabilityBoundingSet")
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let mut child = Command::new("setpriv")
        .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .arg("--")
        .arg(&bin)
        .args([
            "run",
            "--dry-run",
            "--priority",
            "exec=high",
            "--aggregate",
            "exec=off",
            "--high-interval",
            "200ms",
        ])
        .arg("--agent-id-file")
        .arg(state.path().join("agent-id"))
        .arg("--spool-dir")
        .arg(state.path().join("spool"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv shrike run");
    let stdout = collect_lines(child.stdout.take().expect("piped"));
    let stderr = collect_lines(child.stderr.take().expect("piped"));
    let child = Kill(child);
    let pid = child.0.id();
    let dropped = wait_for(&stderr, Duration::from_secs(30), "capability drop in the log", |l| {
        l.contains("capabilities dropped") || l.contains("capabilities not")
    });
    assert!(dropped.contains("capabilities dropped"), "{dropped}");
    for name in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SETPCAP"] {
        assert!(dropped.contains(name), "the log does not name {name} as dropped: {dropped}");
    }
    let keep: u64 = (1 << 2) | (1 << 19);
    for (tid, prm, eff, bnd) in thread_caps(pid) {
        assert_eq!(prm & !keep, 0, "thread {tid} permitted {prm:x}");
        assert_eq!(eff & !keep, 0, "thread {tid} effective {eff:x}");
        assert_eq!(bnd & !keep, 0, "thread {tid} bounding {bnd:x}");
    }
    // Still working: a process with a marker in its argv becomes a message.
    let tag = marker("caps");
    run_ok(Command::new("/bin/sh").args(["-c", "exit 0", &tag]));
    wait_for(&stdout, Duration::from_secs(15), "message with the marker", |l| l.contains(&tag));
    // A clean stop (the exit path reads the kernel's counters).
    let mut child = child;
    // SAFETY: signals our own, not yet reaped, child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "shrike run did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = stderr.lock().expect("lines").join("\n");
    assert!(status.success(), "shrike run exited with {status}:\n{log}");
    assert!(log.contains("shrike stopping"), "{log}");
}

// ---------------------------------------------------------------------------
// (c) The Kubernetes manifest and the Dockerfile

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("one");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .map(|doc| {
            let v: serde_yaml::Value = serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
            serde_json::to_value(v).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .collect()
}

#[test]
fn daemonset_manifest_has_what_the_agent_needs() {
    let docs = yaml_documents("deploy/k8s/daemonset.yaml");
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").expect("a DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "hostPID");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels") {
        assert_eq!(&labels[k], v, "the selector must match the pod labels");
    }
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let caps: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        sc["privileged"] == true || ["BPF", "PERFMON", "SYS_ADMIN"].iter().all(|x| caps.contains(x)),
        "neither privileged nor the eBPF capabilities: {sc}"
    );
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(args.first(), Some(&"run"), "{args:?}");
    let arg = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {args:?}"))
    };

    let mounts: Vec<(&str, &str)> = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| (m["name"].as_str().expect("name"), m["mountPath"].as_str().expect("mountPath")))
        .collect();
    let volume =
        |name: &str| pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == name).cloned();
    let host_path_at = |mount_path: &str| -> String {
        let (name, _) = mounts
            .iter()
            .find(|(_, p)| *p == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        let v = volume(name).unwrap_or_else(|| panic!("no volume {name}"));
        v["hostPath"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("volume {name} is not a hostPath: {v}"))
            .to_owned()
    };
    assert_eq!(host_path_at("/sys/kernel/tracing"), "/sys/kernel/tracing");
    assert_eq!(host_path_at("/sys/fs/bpf"), "/sys/fs/bpf");
    assert_eq!(host_path_at(arg("--proc-root")), "/proc");
    assert_eq!(host_path_at("/var/lib/shrike"), "/var/lib/shrike");
    // The recommendations assess the node's root, mounted read-only.
    let root = arg("--recommend-root");
    assert_eq!(host_path_at(root), "/", "--recommend-root={root} is not the host's /");
    let root_ro = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .any(|m| m["mountPath"] == root && m["readOnly"] == true);
    assert!(root_ro, "the host's / at {root} is not mounted read-only");
    assert_eq!(pod["hostNetwork"], true, "hostNetwork: the socket checks see the pod's namespace otherwise");
    // --libpam is a file inside a mounted host directory.
    let libpam = arg("--libpam");
    assert!(
        mounts.iter().any(|(_, p)| libpam.starts_with(&format!("{p}/"))),
        "{libpam} is in no mount: {mounts:?}"
    );
    // The config comes from the ConfigMap, mounted where --config points.
    let config = arg("--config");
    let (cfg_vol, cfg_dir) =
        mounts.iter().find(|(_, p)| config.starts_with(&format!("{p}/"))).expect("config mount");
    let cm_name =
        volume(cfg_vol).expect("config volume")["configMap"]["name"].as_str().expect("configMap").to_owned();
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm_name.as_str())
        .expect("ConfigMap");
    let key = config.strip_prefix(&format!("{cfg_dir}/")).expect("file name");
    assert!(cm["data"][key].as_str().is_some_and(|t| t.contains("hub")), "ConfigMap {cm_name} has no {key}");
    // Every resource in one namespace.
    let ns = &ds["metadata"]["namespace"];
    assert!(docs.iter().filter(|d| d["kind"] != "Namespace").all(|d| &d["metadata"]["namespace"] == ns));
}

#[test]
fn dockerfile_builds_a_static_agent_from_scratch() {
    let text =
        std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains("rust:") && froms[0].contains(" AS builder"), "{froms:?}");
    assert_eq!(froms[1], "FROM scratch");
    for needed in [
        "rust-src",
        "llvm-tools",
        "musl-tools",
        "-unknown-linux-musl",
        "COPY --from=builder",
        "ENTRYPOINT [\"/shrike\"]",
    ] {
        assert!(text.contains(needed), "the Dockerfile has no {needed:?}");
    }
    // The documented run flags.
    for flag in [
        "--privileged",
        "--pid host",
        "/sys/kernel/tracing:/sys/kernel/tracing",
        "/sys/fs/bpf",
        "--proc-root /host/proc",
        "--libpam",
    ] {
        assert!(text.contains(flag), "the Dockerfile does not document {flag:?}");
    }
    let ignore = std::fs::read_to_string(workspace_root().join("deploy/Dockerfile.dockerignore"))
        .expect("ignore file");
    assert!(ignore.lines().any(|l| l.trim() == "target"), "target/ must stay out of the build context");
}

// ---------------------------------------------------------------------------
// (d) The container

struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn container_from_scratch_reports_host_events() {
    if !heavy("container_from_scratch_reports_host_events") {
        return;
    }
    if !require_root() {
        return;
    }
    if !need("/usr/bin/podman", "podman")
        || !need("/usr/sbin/runc", "runc")
        || !need("/usr/bin/musl-gcc", "musl-tools")
    {
        return;
    }
    let bin = agent_bin(Some("x86_64-unknown-linux-musl"), "ci-dev");
    let file = run_ok(Command::new("file").arg(&bin)).stdout;
    let file = String::from_utf8_lossy(&file);
    assert!(file.contains("static-pie linked") || file.contains("statically linked"), "not static: {file}");

    // The image: the runtime stage of deploy/Dockerfile around the host's build.
    let ctx = TempDir::new("image");
    // Without debug info, should the build have any (ci-dev has none).
    run_ok(Command::new("objcopy").arg("--strip-debug").arg(&bin).arg(ctx.path().join("shrike")));
    std::fs::write(
        ctx.path().join("Containerfile"),
        "FROM scratch\nCOPY shrike /shrike\nENTRYPOINT [\"/shrike\"]\nCMD [\"events\"]\n",
    )
    .expect("Containerfile");
    let tag = marker("ctr").to_lowercase();
    let image = Image(format!("localhost/shrike-test:{tag}"));
    let started = Instant::now();
    run_ok(Command::new("podman").args(["build", "-q", "-t", &image.0]).arg(ctx.path()));
    eprintln!("[deploy] podman build took {:.1?}", started.elapsed());

    let name = format!("shrike-test-{tag}");
    let container = Container(name.clone());
    let mut child = Command::new("podman")
        .args(["run", "--rm", "--name", &name, "--privileged", "--pid", "host", "--runtime", "runc"])
        .args(["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"])
        .args(["-v", "/sys/kernel/tracing:/sys/kernel/tracing"])
        // The rest of deploy/Dockerfile's documented flags: host /proc
        // elsewhere, user names, the host's libpam for the login probes.
        .args([
            "-v",
            "/sys/fs/bpf:/sys/fs/bpf",
            "-v",
            "/proc:/host/proc:ro",
            "-v",
            "/etc/passwd:/etc/passwd:ro",
        ])
        .arg("-v")
        .arg(format!("/lib/{}-linux-gnu:/host/lib:ro", std::env::consts::ARCH))
        .arg(&image.0)
        .args(["events", "--kinds", "exec,connect,login", "--proc-root", "/host/proc"])
        .args(["--libpam", "/host/lib/libpam.so.0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podman run");
    let stdout = collect_lines(child.stdout.take().expect("piped"));
    let stderr = collect_lines(child.stderr.take().expect("piped"));
    let mut child = Kill(child);
    let ready = wait_for(&stderr, Duration::from_secs(60), "`shrike ready` from the container", |l| {
        l.contains("shrike ready")
    });
    let ready = strip_ansi(&ready);
    assert!(
        ready.contains("skipped=[]"),
        "probes skipped in the container (login probes on /host/lib?): {ready}"
    );
    eprintln!("[deploy] container ready {:.1?} after podman build", started.elapsed());

    // Host processes: an exec with the marker in its argv, and a connect from
    // this test process to a port of its own.
    let marker_arg = marker("host-exec");
    let (exec_pid, _) = {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "exit 0", &marker_arg]);
        let mut ch = c.spawn().expect("sh");
        let pid = ch.id();
        (pid, ch.wait().expect("wait"))
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let _conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let me = std::process::id();

    let parse = |l: &str| serde_json::from_str::<Value>(l).ok();
    let exec = wait_for(&stdout, Duration::from_secs(15), "the host exec", |l| {
        parse(l).is_some_and(|e| {
            e["kind"] == "exec"
                && e["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == marker_arg.as_str()))
        })
    });
    let exec = parse(&exec).expect("json");
    assert_eq!(exec["pid"], exec_pid, "host pid namespace: {exec}");
    // Enriched from the host's /proc (--proc-root) and /etc/passwd.
    assert_eq!(exec["user"], "root", "{exec}");
    assert!(exec["parent_exe"].as_str().is_some_and(|p| p.starts_with('/')), "no parent_exe: {exec}");
    let connect = wait_for(&stdout, Duration::from_secs(15), "the host connect", |l| {
        parse(l).is_some_and(|e| {
            e["kind"] == "connect" && e["pid"] == me && e.to_string().contains(&port.to_string())
        })
    });
    eprintln!("[deploy] from the container: {exec}\n{connect}");

    // SIGINT through podman's signal proxy: the agent ends with its stats line.
    // SAFETY: signals our own, not yet reaped, child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the container did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = stderr.lock().expect("lines").join("\n");
    assert!(status.success(), "podman run exited with {status}:\n{log}");
    wait_for(&stdout, Duration::from_secs(5), "the stats line", |l| l.contains("\"kind\":\"stats\""));
    drop(container);

    // Recommendations from the container assess the host when its / is
    // mounted and named (what deploy/k8s/daemonset.yaml does with
    // --recommend-root=/host): the same file checks (owner and mode of
    // passwd, shadow..., sshd's settings) as the agent run on the host;
    // without it, the empty image's.
    let results = |cmd: &mut Command, extra: &[&str]| -> BTreeMap<String, String> {
        let out = cmd
            .args(["recommendations", "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("recommendations");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| Some((v["check"].as_str()?.to_owned(), v["result"].as_str()?.to_owned())))
            .filter(|(id, _)| {
                id.parse::<u32>().is_ok_and(|n| (91010..=91016).contains(&n) || (91050..=91059).contains(&n))
            })
            .collect()
    };
    let podman = |root: bool| {
        let mut c = Command::new("podman");
        c.args([
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ]);
        if root {
            c.args(["-v", "/:/host:ro"]);
        }
        c.arg(&image.0);
        c
    };
    let host = results(&mut Command::new(ctx.path().join("shrike")), &[]);
    assert!(host.len() >= 10, "too few file checks on the host: {host:?}");
    let from_ctr = results(&mut podman(true), &["--root", "/host"]);
    assert_eq!(from_ctr, host, "the container with --root /host does not see the host's files");
    let empty = results(&mut podman(false), &[]);
    assert_ne!(empty, host, "the container without the host's / saw the host's files?");
    eprintln!(
        "[deploy] recommendations from the container with --root /host match the host's ({} checks)",
        host.len()
    );
}

/// The agent's log without terminal colours.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// (e) The aarch64 cross build

#[test]
fn aarch64_build_links_and_runs_under_qemu() {
    if !heavy("aarch64_build_links_and_runs_under_qemu") {
        return;
    }
    if !need("/usr/bin/aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu") || !need("/usr/bin/file", "file") {
        return;
    }
    let bin = agent_bin(Some("aarch64-unknown-linux-gnu"), "ci-dev");
    let header = run_ok(Command::new("readelf").arg("-h").arg(&bin)).stdout;
    let header = String::from_utf8_lossy(&header);
    assert!(header.lines().any(|l| l.trim().starts_with("Machine:") && l.contains("AArch64")), "{header}");
    let file = String::from_utf8_lossy(&run_ok(Command::new("file").arg(&bin)).stdout).into_owned();
    assert!(file.contains("ARM aarch64") && file.contains("dynamically linked"), "{file}");
    if !need("/usr/bin/qemu-aarch64-static", "qemu-user-static") {
        return;
    }
    let out = run_ok(
        Command::new("/usr/bin/qemu-aarch64-static")
            .arg("-L")
            .arg("/usr/aarch64-linux-gnu")
            .arg(&bin)
            .arg("--version"),
    );
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.starts_with(&format!("shrike {VERSION} (")), "{version}");
}
