//! Shrike's extension rules, `x:NAME ARGS`: sources of text lines that the
//! usual content operators (`r:`, `n:`, `!`, `&&`) then match, for what
//! Wazuh's file, directory, process and command rules cannot see without
//! running commands. Without ` -> CONTENT` a source rule passes when the
//! source gave at least one line; a source whose input is missing makes the
//! rule not applicable. Every path is read under `--root`.
//!
//! - `x:stat PATH[,PATH...]`: one line per existing file, `PATH type=file
//!   mode=0640 uid=0 gid=42 user=6 group=4 other=0` (stat after symlinks;
//!   `user`/`group`/`other` are the octal permission digits); not applicable
//!   when none exists.
//! - `x:lines PATH[,PATH...]`: the lines of the files that exist; unlike
//!   `f:`, a missing file gives no lines (so the rule fails rather than not
//!   applying: "is it configured anywhere?").
//! - `x:ls DIR[,DIR...]`: the names of the entries of the directories that
//!   exist (same: missing gives none).
//! - `x:sockets`: one line per listening TCP socket and bound unconnected UDP
//!   socket of /proc/net/{tcp,tcp6,udp,udp6}, decoded from the kernel's hex:
//!   `tcp 0.0.0.0 1883 listen loopback=no`, `udp6 :: 69 bound loopback=no`.
//! - `x:sshd [PATH]`: sshd's effective global settings (default
//!   /etc/ssh/sshd_config, `Include`s followed, the first value of a keyword
//!   wins as in sshd, up to the first `Match`), one `keyword value` line per
//!   keyword in lower case, with OpenSSH's defaults for the keywords checks
//!   ask about that the files leave unset.
//! - `x:suid DIR[,DIR...]`, `x:world-writable DIR[,DIR...]`: a bounded walk
//!   (same file system, no symlinks followed, at most [`WALK_MAX_ENTRIES`]
//!   entries and [`WALK_MAX_DEPTH`] levels) listing set-uid/set-gid files, or
//!   world-writable files and directories without the sticky bit:
//!   `PATH mode=4755 uid=0 dpkg=owned|unowned|unknown` (whether a dpkg
//!   package installed the file; `unknown` without a dpkg database).
//! - `x:default-credentials`: one line per account of /etc/shadow whose
//!   hash matches a vendor default password of the credential lists
//!   (yescrypt, sha512/sha256-crypt, md5-crypt), within a CPU budget
//!   (see [`super::creds`]).

use std::{
    collections::HashSet,
    net::IpAddr,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use super::{eval::Env, root};

/// Entries a walk looks at, at most (a gateway's /usr has ~20-60K).
pub const WALK_MAX_ENTRIES: usize = 200_000;
pub const WALK_MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stat(Vec<String>),
    Lines(Vec<String>),
    Ls(Vec<String>),
    Sockets,
    Sshd(String),
    Suid(Vec<String>),
    WorldWritable(Vec<String>),
    DefaultCredentials,
}

impl Source {
    pub fn parse(target: &str) -> Result<Source, String> {
        let (name, args) = target.split_once(char::is_whitespace).unwrap_or((target, ""));
        let args = args.trim();
        let dirs = || -> Result<Vec<String>, String> {
            let d: Vec<String> =
                args.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
            if d.is_empty() { Err(format!("x:{name} needs paths")) } else { Ok(d) }
        };
        Ok(match name {
            "stat" => Source::Stat(dirs()?),
            "lines" => Source::Lines(dirs()?),
            "ls" => Source::Ls(dirs()?),
            "sockets" => Source::Sockets,
            "sshd" => Source::Sshd(if args.is_empty() { "/etc/ssh/sshd_config".into() } else { args.into() }),
            "suid" => Source::Suid(dirs()?),
            "world-writable" => Source::WorldWritable(dirs()?),
            "default-credentials" => Source::DefaultCredentials,
            other => {
                return Err(format!(
                    "unknown x: source {other:?} (stat, lines, ls, sockets, sshd, suid, world-writable, default-credentials)"
                ));
            }
        })
    }
}

/// A line a source produced, with where it came from (for evidence).
pub struct Line {
    pub text: String,
    pub origin: String,
}

/// The lines of a source, or why it does not apply here.
pub fn lines(src: &Source, env: &mut Env) -> Result<Vec<Line>, String> {
    match src {
        Source::Stat(paths) => {
            let found: Vec<Line> =
                expand(&env.root, paths).iter().filter_map(|p| stat(env, p).ok()).collect();
            if found.is_empty() { Err(format!("none of {} exists", paths.join(", "))) } else { Ok(found) }
        }
        Source::Lines(paths) => Ok(expand(&env.root, paths)
            .into_iter()
            .filter_map(|p| {
                let real = root::resolve(&env.root, &p).ok()?;
                let text = std::fs::read_to_string(real).ok()?;
                Some(
                    text.lines()
                        .enumerate()
                        .map(|(i, l)| Line { text: l.to_owned(), origin: format!("{p}:{}", i + 1) })
                        .collect::<Vec<_>>(),
                )
            })
            .flatten()
            .collect()),
        Source::Ls(dirs) => Ok(expand(&env.root, dirs)
            .into_iter()
            .filter_map(|d| {
                let real = root::resolve(&env.root, &d).ok()?;
                let mut names: Vec<Line> = std::fs::read_dir(real)
                    .ok()?
                    .flatten()
                    .map(|e| Line { text: e.file_name().to_string_lossy().into_owned(), origin: d.clone() })
                    .collect();
                names.sort_by(|a, b| a.text.cmp(&b.text));
                Some(names)
            })
            .flatten()
            .collect()),
        Source::Sockets => sockets(&env.root),
        Source::Sshd(p) => sshd(&env.root, p),
        Source::Suid(dirs) => walk(env, dirs, |m| m.mode() & 0o6000 != 0 && m.is_file()),
        Source::WorldWritable(dirs) => walk(env, dirs, |m| {
            let mode = m.mode();
            mode & 0o002 != 0 && (m.is_file() || (m.is_dir() && mode & 0o1000 == 0))
        }),
        Source::DefaultCredentials => super::creds::scan(env),
    }
}

fn stat(env: &Env, path: &str) -> Result<Line, String> {
    let real = root::resolve(&env.root, path).map_err(|e| format!("{path}: {e}"))?;
    let m = std::fs::metadata(&real).map_err(|e| format!("{path}: {e}"))?;
    let mode = m.permissions().mode();
    let ty = if m.is_dir() {
        "dir"
    } else if m.is_file() {
        "file"
    } else {
        "other"
    };
    Ok(Line {
        text: format!(
            "{path} type={ty} mode={:04o} uid={} gid={} user={} group={} other={}",
            mode & 0o7777,
            m.uid(),
            m.gid(),
            (mode >> 6) & 7,
            (mode >> 3) & 7,
            mode & 7
        ),
        origin: path.to_owned(),
    })
}

fn sockets(root: &Path) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    let mut found = false;
    for (file, v6, tcp) in
        [("tcp", false, true), ("tcp6", true, true), ("udp", false, false), ("udp6", true, false)]
    {
        let path = format!("/proc/net/{file}");
        let Ok(real) = root::resolve(root, &path) else { continue };
        let Ok(text) = std::fs::read_to_string(&real) else { continue };
        found = true;
        for (addr, port, state) in crate::collect::parse_proc_net(&text, v6) {
            // TCP_LISTEN is 0x0A; an unconnected bound UDP socket is TCP_CLOSE (7).
            let what = match (tcp, state) {
                (true, 0x0A) => "listen",
                (false, 0x07) => "bound",
                _ => continue,
            };
            let loopback = match addr {
                IpAddr::V4(a) => a.is_loopback(),
                IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
            };
            out.push(Line {
                text: format!("{file} {addr} {port} {what} loopback={}", if loopback { "yes" } else { "no" }),
                origin: path.clone(),
            });
        }
    }
    if found { Ok(out) } else { Err("no /proc/net/tcp here".into()) }
}

/// The sshd keywords our checks ask about, with OpenSSH's defaults (9.x).
const SSHD_DEFAULTS: &[(&str, &str)] = &[
    ("permitrootlogin", "prohibit-password"),
    ("passwordauthentication", "yes"),
    ("permitemptypasswords", "no"),
    ("x11forwarding", "no"),
    ("maxauthtries", "6"),
    ("logingracetime", "120"),
    ("hostbasedauthentication", "no"),
    ("ignorerhosts", "yes"),
    ("permituserenvironment", "no"),
    ("allowtcpforwarding", "yes"),
];

fn sshd(root: &Path, main: &str) -> Result<Vec<Line>, String> {
    let real = root::resolve(root, main).map_err(|e| format!("{main}: {e}"))?;
    let text = std::fs::read_to_string(&real).map_err(|e| format!("{main}: {e}"))?;
    let mut seen: Vec<(String, String, String)> = Vec::new();
    let mut in_match = false;
    sshd_file(root, main, &text, &mut seen, &mut in_match, 0);
    let mut out: Vec<Line> =
        seen.into_iter().map(|(k, v, origin)| Line { text: format!("{k} {v}"), origin }).collect();
    for (k, v) in SSHD_DEFAULTS {
        if !out.iter().any(|l| l.text.split_whitespace().next() == Some(k)) {
            out.push(Line { text: format!("{k} {v}"), origin: "OpenSSH default".into() });
        }
    }
    Ok(out)
}

fn sshd_file(
    root: &Path,
    name: &str,
    text: &str,
    seen: &mut Vec<(String, String, String)>,
    in_match: &mut bool,
    depth: u32,
) {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once([' ', '\t', '=']).unwrap_or((line, ""));
        let k = k.to_ascii_lowercase();
        let v = v.trim_start_matches([' ', '\t', '=']).trim();
        if k == "match" {
            // Settings after Match apply to some connections only.
            *in_match = true;
        }
        if *in_match {
            continue;
        }
        if k == "include" && depth < 8 {
            for pattern in v.split_whitespace() {
                let pattern =
                    if pattern.starts_with('/') { pattern.to_owned() } else { format!("/etc/ssh/{pattern}") };
                for file in glob(root, &pattern) {
                    let real = root::resolve(root, &file).unwrap_or_default();
                    if let Ok(t) = std::fs::read_to_string(real) {
                        sshd_file(root, &file, &t, seen, in_match, depth + 1);
                    }
                }
            }
            continue;
        }
        // sshd keeps the first value it reads for a keyword.
        if !seen.iter().any(|(sk, _, _)| *sk == k) {
            seen.push((k, v.to_owned(), format!("{name}:{}", i + 1)));
        }
    }
}

/// Each path with its wildcards expanded (a path without any as it is).
fn expand(root: &Path, paths: &[String]) -> Vec<String> {
    paths.iter().flat_map(|p| glob(root, p)).collect()
}

/// `*` and `?` in the last component of `pattern`, sorted (as glob(3) does).
fn glob(root: &Path, pattern: &str) -> Vec<String> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    if !name.contains(['*', '?']) {
        return vec![pattern.to_owned()];
    }
    let Ok(real) = root::resolve(root, if dir.is_empty() { "/" } else { dir }) else { return Vec::new() };
    let mut out: Vec<String> = std::fs::read_dir(real)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| wildcard(name.as_bytes(), n.as_bytes()))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    out.sort();
    out
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

fn walk(
    env: &mut Env,
    dirs: &[String],
    wanted: impl Fn(&std::fs::Metadata) -> bool,
) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    let mut visited = 0usize;
    let mut any_dir = false;
    // Resolved, and without the ones inside another (usrmerge: /bin is /usr/bin).
    let mut starts: Vec<PathBuf> = dirs.iter().filter_map(|d| root::resolve(&env.root, d).ok()).collect();
    starts.sort();
    starts.dedup();
    let all = starts.clone();
    starts.retain(|s| !all.iter().any(|o| o != s && s.starts_with(o)));
    for start in starts {
        let Ok(meta) = std::fs::symlink_metadata(&start) else { continue };
        if !meta.is_dir() {
            continue;
        }
        any_dir = true;
        let dev = meta.dev();
        let mut stack: Vec<(PathBuf, usize)> = vec![(start, 0)];
        while let Some((d, depth)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                visited += 1;
                if visited > WALK_MAX_ENTRIES {
                    env.truncated.push(dirs.join(","));
                    return Ok(out);
                }
                let p = e.path();
                let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
                if m.file_type().is_symlink() || m.dev() != dev {
                    continue;
                }
                if wanted(&m) {
                    let shown = root::display(&env.root, &p);
                    let dpkg = env.dpkg_owner(&shown);
                    out.push(Line {
                        text: format!("{shown} mode={:04o} uid={} dpkg={dpkg}", m.mode() & 0o7777, m.uid()),
                        origin: shown,
                    });
                }
                if m.is_dir() && depth + 1 < WALK_MAX_DEPTH {
                    stack.push((p, depth + 1));
                }
            }
        }
    }
    if any_dir { Ok(out) } else { Err(format!("none of {} exists", dirs.join(", "))) }
}

/// Files dpkg installed, from /var/lib/dpkg/info/*.list under the root
/// (None without a dpkg database).
pub fn dpkg_files(root: &Path) -> Option<HashSet<String>> {
    let info = root::resolve(root, "/var/lib/dpkg/info").ok()?;
    let rd = std::fs::read_dir(info).ok()?;
    let mut set = HashSet::new();
    for e in rd.flatten() {
        // A link could lead out of the root: dpkg writes plain files.
        let plain = e.file_type().is_ok_and(|t| t.is_file());
        if plain
            && e.path().extension().is_some_and(|x| x == "list")
            && let Ok(t) = std::fs::read_to_string(e.path())
        {
            set.extend(t.lines().map(str::to_owned));
        }
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_and_arguments() {
        assert_eq!(Source::parse("stat /etc/shadow").unwrap(), Source::Stat(vec!["/etc/shadow".into()]));
        assert_eq!(Source::parse("lines /a,/b/*").unwrap(), Source::Lines(vec!["/a".into(), "/b/*".into()]));
        assert_eq!(
            Source::parse("suid /usr, /bin").unwrap(),
            Source::Suid(vec!["/usr".into(), "/bin".into()])
        );
        assert_eq!(Source::parse("sshd").unwrap(), Source::Sshd("/etc/ssh/sshd_config".into()));
        assert!(Source::parse("stat").is_err());
        assert!(Source::parse("ls").is_err());
        assert!(Source::parse("suid").is_err());
        assert!(Source::parse("kernel-config").unwrap_err().contains("unknown x: source"));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*.conf", b"50-cloud.conf"));
        assert!(!wildcard(b"*.conf", b"50-cloud.conf.bak"));
        assert!(wildcard(b"a?c", b"abc"));
    }
}
