//! File integrity in userspace: the watched paths (defaults, the users'
//! ~/.ssh), their kernel prefixes, and the resolution of the paths the
//! kernel could not judge (relative to the cwd or a dirfd, or a file
//! descriptor) against /proc, with the exact watch filter after it.
//!
//! Resolution reads /proc when the event is handled, after the syscall: a
//! process that changed directory, closed the fd or exited in between is
//! resolved against what /proc says then (or, when it is gone, its parent's
//! cwd, flagged `resolved_from: "parent_cwd"`); an fd that cannot be read any
//! more drops the event (it cannot be judged).

use std::path::{Path, PathBuf};

use shrike_common::{WATCH_MAX, WATCH_WORDS, WatchPrefix};

use super::proc;
use crate::events::file::{AT_FDCWD, File};

/// What attackers change on a gateway (issue 13): system configuration,
/// the cron and service directories, system binaries, the boot files. The
/// users' ~/.ssh (from /etc/passwd) are added at start.
pub const DEFAULT_WATCH: &[&str] = &[
    "/etc",
    "/root/.ssh",
    "/var/spool/cron",
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/boot",
];

/// The watched paths, normalized (absolute, no trailing '/').
#[derive(Clone, Debug, PartialEq)]
pub struct Watch {
    paths: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WatchError {
    #[error("{0:?}: not an absolute path")]
    Relative(String),
    #[error("{0:?}: longer than 128 bytes (the kernel's prefix size)")]
    TooLong(String),
    #[error("{0} prefixes after grouping the users' ~/.ssh: at most 32")]
    TooMany(usize),
}

impl Watch {
    /// `entries` as given (`"defaults"` stands for [`DEFAULT_WATCH`] plus
    /// every user's ~/.ssh from `passwd`).
    pub fn new(entries: &[String], passwd: &Path) -> Result<Watch, WatchError> {
        let mut paths: Vec<String> = Vec::new();
        let mut add = |p: &str| {
            let p = if p.len() > 1 { p.trim_end_matches('/') } else { p };
            if !paths.iter().any(|x| x == p) {
                paths.push(p.to_owned());
            }
        };
        for e in entries {
            if e == "defaults" {
                DEFAULT_WATCH.iter().for_each(|p| add(p));
                for home in homes(passwd) {
                    add(&format!("{home}/.ssh"));
                }
                continue;
            }
            if !e.starts_with('/') {
                return Err(WatchError::Relative(e.clone()));
            }
            if e.len() > WATCH_WORDS * 8 {
                return Err(WatchError::TooLong(e.clone()));
            }
            add(e);
        }
        let w = Watch { paths };
        w.kernel_prefixes()?;
        Ok(w)
    }

    /// The defaults ([`DEFAULT_WATCH`] and the users' ~/.ssh).
    pub fn defaults(passwd: &Path) -> Result<Watch, WatchError> {
        Watch::new(&["defaults".to_string()], passwd)
    }

    /// [`DEFAULT_WATCH`] alone (when the users' ~/.ssh make too many
    /// prefixes).
    pub fn builtin() -> Watch {
        Watch { paths: DEFAULT_WATCH.iter().map(|p| p.to_string()).collect() }
    }

    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// `path` is a watched path or under one.
    pub fn matches(&self, path: &str) -> bool {
        self.paths.iter().any(|p| {
            p == "/"
                || path.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// What the kernel compares (a superset: "/etc" also lets "/etcx"
    /// through, which [`Watch::matches`] then drops). When the users' ~/.ssh
    /// make more than [`WATCH_MAX`] prefixes, those under one directory
    /// (/home) become that directory.
    pub fn kernel_prefixes(&self) -> Result<Vec<WatchPrefix>, WatchError> {
        let mut list: Vec<String> = self.paths.clone();
        if list.len() > WATCH_MAX as usize {
            let mut grouped: Vec<String> = Vec::new();
            for p in &list {
                let g = match p.strip_suffix("/.ssh").and_then(|home| home.rsplit_once('/')) {
                    Some((parent, _)) if !parent.is_empty() => format!("{parent}/"),
                    _ => p.clone(),
                };
                if !grouped.contains(&g) {
                    grouped.push(g);
                }
            }
            list = grouped;
        }
        if list.len() > WATCH_MAX as usize {
            return Err(WatchError::TooMany(list.len()));
        }
        // "/" is every absolute path: one byte.
        Ok(list.iter().filter_map(|p| WatchPrefix::new(p.as_bytes())).collect())
    }

    /// Makes the event's paths absolute (the kernel's relative and fd-based
    /// ones, from /proc under `proc_root`) and says whether it is watched.
    /// `parent`: the process's parent, for a process gone before this.
    pub fn resolve(&self, proc_root: &Path, pid: u32, parent: Option<u32>, f: &mut File) -> bool {
        if f.raw.by_fd {
            match proc::read_link(proc_root, pid, &format!("fd/{}", f.raw.dirfd)) {
                Some(p) if p.starts_with('/') => {
                    f.path = p;
                    f.resolved_from = Some("fd");
                }
                _ => return false,
            }
        } else if f.raw.path_relative {
            match base(proc_root, pid, parent, f.raw.dirfd) {
                Some((dir, how)) => {
                    f.path = join(&dir, &f.path);
                    f.resolved_from = Some(how);
                }
                None => return false,
            }
        } else {
            f.path = normalize(&f.path);
        }
        if let Some(new) = &mut f.new_path {
            if f.raw.path2_relative {
                match base(proc_root, pid, parent, f.raw.dirfd2) {
                    Some((dir, how)) => {
                        *new = join(&dir, new);
                        f.resolved_from.get_or_insert(how);
                    }
                    None => return false,
                }
            } else {
                *new = normalize(new);
            }
        }
        if f.operation == "link" && f.raw.path2_relative {
            // link: the existing file (target) relative to its own dirfd.
            if let (Some(t), Some((dir, _))) = (&mut f.target, base(proc_root, pid, parent, f.raw.dirfd2)) {
                *t = join(&dir, t);
            }
        }
        self.matches(&f.path)
            || f.new_path.as_deref().is_some_and(|p| self.matches(p))
            || (f.operation == "link" && f.target.as_deref().is_some_and(|p| self.matches(p)))
    }
}

/// The directory a relative path is relative to, and how it was found.
fn base(proc_root: &Path, pid: u32, parent: Option<u32>, dirfd: i32) -> Option<(String, &'static str)> {
    if dirfd != AT_FDCWD {
        return proc::read_link(proc_root, pid, &format!("fd/{dirfd}")).map(|d| (d, "dirfd"));
    }
    if let Some(d) = proc::read_link(proc_root, pid, "cwd") {
        return Some((d, "cwd"));
    }
    parent.and_then(|pp| proc::read_link(proc_root, pp, "cwd")).map(|d| (d, "parent_cwd"))
}

/// `dir` + `rel`, normalized.
pub fn join(dir: &str, rel: &str) -> String {
    normalize(&format!("{dir}/{rel}"))
}

/// `.`, `..` and repeated '/' resolved lexically (symlinks are not
/// followed: the path names what the process asked for).
pub fn normalize(path: &str) -> String {
    if !path.contains("/.") && !path.contains("//") && !path.ends_with('/') {
        return path.to_owned();
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Home directories of /etc/passwd worth watching: absolute, not "/", and
/// existing (system accounts' /nonexistent, /var/empty are skipped).
fn homes(passwd: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(passwd) else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(home) = line.split(':').nth(5) else { continue };
        let home = home.trim_end_matches('/');
        if home.is_empty() || !home.starts_with('/') || !PathBuf::from(home).is_dir() {
            continue;
        }
        if !out.iter().any(|h| h == home) {
            out.push(home.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::file::RawPaths;

    /// A scratch directory, removed when dropped.
    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("shrike-files-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn file(op: &'static str, path: &str, raw: RawPaths) -> File {
        File {
            operation: op,
            path: path.into(),
            new_path: None,
            target: None,
            mode: None,
            owner_uid: None,
            owner_gid: None,
            open_flags: None,
            directory: false,
            result: 0,
            success: true,
            error: None,
            path_truncated: false,
            resolved_from: None,
            raw,
        }
    }

    #[test]
    fn defaults_have_the_users_ssh_and_match_exactly() {
        let dir = Dir::new("defaults");
        let home = dir.path().join("alice");
        std::fs::create_dir(&home).unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            format!("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::{}:/bin/sh\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n", home.display()),
        )
        .unwrap();
        let w = Watch::defaults(&passwd).unwrap();
        let ssh = format!("{}/.ssh", home.display());
        assert!(w.paths().contains(&ssh), "{:?}", w.paths());
        assert!(!w.paths().iter().any(|p| p.starts_with("/nonexistent")));
        assert!(
            w.matches("/etc/passwd") && w.matches("/etc") && w.matches(&format!("{ssh}/authorized_keys"))
        );
        assert!(!w.matches("/etcx/passwd") && !w.matches("/tmp/etc/passwd") && !w.matches("/usr/binx"));
        // The kernel's prefixes are a superset: /etcx passes there.
        let k = w.kernel_prefixes().unwrap();
        let pad = |s: &str| {
            let mut b = [0u8; shrike_common::PATH_LEN];
            b[..s.len()].copy_from_slice(s.as_bytes());
            b
        };
        assert!(k.iter().any(|p| p.matches(&pad("/etcx"))));
        assert!(k.iter().any(|p| p.matches(&pad(&format!("{ssh}/authorized_keys")))));
        assert!(!k.iter().any(|p| p.matches(&pad("/tmp/shrike/file-000001"))));
        assert!(!k.iter().any(|p| p.matches(&pad("/et"))), "a path shorter than the prefix");
    }

    /// The kernel's pre-check (`WATCH_HEAD`) reads a path's first 8 bytes
    /// without stopping at its NUL: whatever follows the NUL, a path it
    /// rejects matches no prefix, and it rejects the /tmp workload's paths.
    #[test]
    fn head_precheck_never_rejects_a_watched_path() {
        let none = Path::new("/nonexistent/passwd");
        let mut list: Vec<String> = DEFAULT_WATCH.iter().map(|s| s.to_string()).collect();
        list.extend(["/", "/e", "/home/", "/root/.ssh", "/a/b/c/d/e/f/g/h"].map(String::from));
        let paths = [
            "/",
            "/e",
            "/et",
            "/etc",
            "/etcx",
            "/etc/passwd",
            "/bin",
            "/bi",
            "/boot/x",
            "/sbin",
            "/usr",
            "/usr/bin/ls",
            "/usr/binx",
            "/root",
            "/root/.ssh/authorized_keys",
            "/tmp",
            "/tmp/x",
            "/tmp/shrike-bench-files-shrike-1/f000001",
            "/proc/self/fd",
            "/a/b/c/d/e/f/g/h/i",
            "/home",
            "/home/alice/.ssh/id",
            "/var/spool/cron/crontabs/root",
            "/lib/systemd/system/x.service",
        ];
        for watch in [&list[..1], &list[..DEFAULT_WATCH.len()], &list[..]] {
            let k = Watch::new(watch, none).unwrap().kernel_prefixes().unwrap();
            let head = shrike_common::WatchHead::new(&k);
            for path in paths {
                let mut buf = [0u8; shrike_common::PATH_LEN];
                buf[..path.len()].copy_from_slice(path.as_bytes());
                let exact = k.iter().any(|p| p.matches(&buf));
                // The bytes after the NUL in the first word: anything.
                for junk in [0u8, b'/', b'c', b't', 0xff] {
                    let mut first = [junk; 8];
                    let n = path.len().min(8);
                    first[..n].copy_from_slice(&path.as_bytes()[..n]);
                    if n < 8 {
                        first[n] = 0;
                    }
                    let pass = head.may_match(u64::from_ne_bytes(first));
                    assert!(pass || !exact, "{path:?} (junk {junk}) rejected under {watch:?}");
                }
            }
            if !watch.iter().any(|w| w == "/") {
                let tmp = *b"/tmp/shr";
                assert!(!head.may_match(u64::from_ne_bytes(tmp)), "{watch:?}");
            }
        }
    }

    #[test]
    fn config_errors_and_grouping() {
        let none = Path::new("/nonexistent/passwd");
        assert_eq!(Watch::new(&["etc".into()], none), Err(WatchError::Relative("etc".into())));
        assert!(matches!(Watch::new(&[format!("/{}", "a".repeat(200))], none), Err(WatchError::TooLong(_))));
        let w = Watch::new(&["/etc/".into(), "/etc".into(), "/srv/x".into()], none).unwrap();
        assert_eq!(w.paths(), ["/etc", "/srv/x"]);
        // 40 users' ~/.ssh under /home collapse to one kernel prefix.
        let mut many: Vec<String> = (0..40).map(|i| format!("/home/u{i}/.ssh")).collect();
        many.push("/etc".into());
        let w = Watch::new(&many, none).unwrap();
        assert_eq!(w.kernel_prefixes().unwrap().len(), 2);
        assert!(w.matches("/home/u7/.ssh/authorized_keys") && !w.matches("/home/u7/notes"));
        let too_many: Vec<String> = (0..40).map(|i| format!("/d{i}")).collect();
        assert_eq!(Watch::new(&too_many, none), Err(WatchError::TooMany(40)));
    }

    #[test]
    fn relative_paths_resolve_against_cwd_dirfd_or_the_parent() {
        let root = Dir::new("resolve");
        let p = root.path();
        std::fs::create_dir_all(p.join("10/fd")).unwrap();
        std::os::unix::fs::symlink("/etc", p.join("10/cwd")).unwrap();
        std::os::unix::fs::symlink("/etc/cron.d", p.join("10/fd/5")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", p.join("10/fd/6")).unwrap();
        std::fs::create_dir_all(p.join("1")).unwrap();
        std::os::unix::fs::symlink("/tmp", p.join("1/cwd")).unwrap();
        let w = Watch::new(&["/etc".into()], Path::new("/nonexistent")).unwrap();
        let rel = RawPaths { dirfd: AT_FDCWD, path_relative: true, ..Default::default() };

        let mut f = file("create", "shrike-test-file", rel.clone());
        assert!(w.resolve(p, 10, Some(1), &mut f));
        assert_eq!((f.path.as_str(), f.resolved_from), ("/etc/shrike-test-file", Some("cwd")));

        let mut f = file("create", "./sub/../job", RawPaths { dirfd: 5, ..rel.clone() });
        assert!(w.resolve(p, 10, Some(1), &mut f));
        assert_eq!((f.path.as_str(), f.resolved_from), ("/etc/cron.d/job", Some("dirfd")));

        let mut f = file("chmod", "", RawPaths { dirfd: 6, by_fd: true, ..Default::default() });
        assert!(w.resolve(p, 10, None, &mut f));
        assert_eq!((f.path.as_str(), f.resolved_from), ("/etc/shadow", Some("fd")));

        // Gone (no /proc/99): the parent's cwd, /tmp here: not watched.
        let mut f = file("create", "x", rel.clone());
        assert!(!w.resolve(p, 99, Some(1), &mut f));
        assert_eq!((f.path.as_str(), f.resolved_from), ("/tmp/x", Some("parent_cwd")));
        let mut f = file("create", "x", rel);
        assert!(!w.resolve(p, 99, None, &mut f), "nothing to resolve against");

        // Absolute: normalized, then judged.
        let mut f = file("write", "/tmp/../etc//passwd", RawPaths::default());
        assert!(w.resolve(p, 10, None, &mut f));
        assert_eq!(f.path, "/etc/passwd");
        let mut f = file("rename", "/tmp/a", RawPaths::default());
        f.new_path = Some("/etc/a".into());
        assert!(w.resolve(p, 10, None, &mut f), "renamed into a watched dir");
    }
}
