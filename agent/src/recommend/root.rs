//! Paths under `--root DIR`: every path a check names is resolved inside
//! DIR as if DIR were `/` (like openat2's RESOLVE_IN_ROOT, done in userspace
//! so it works on the old kernels gateways run): `..` stops at DIR, an
//! absolute symlink target starts again at DIR, so no rule reads outside it.

use std::{
    collections::VecDeque,
    ffi::OsString,
    io,
    path::{Component, Path, PathBuf},
};

/// Symlinks followed per resolution before giving up (the kernel's limit).
const MAX_HOPS: u32 = 40;

/// Resolves `path` (absolute, as a policy writes it) inside `root`. A
/// component that does not exist ends the resolution: the rest is appended
/// and the caller's open fails with NotFound.
pub fn resolve(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut queue: VecDeque<OsString> = components(Path::new(path));
    let mut done: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        let candidate = join(root, &done).join(&c);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(io::Error::other(format!("{path}: too many levels of symbolic links")));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    done.clear();
                }
                for t in components(&target).into_iter().rev() {
                    queue.push_front(t);
                }
            }
            Ok(_) => done.push(c),
            Err(_) => {
                done.push(c);
                done.extend(queue.drain(..).filter(|c| c != ".."));
            }
        }
    }
    Ok(join(root, &done))
}

/// The path as the policy names it, for messages: `resolved` minus `root`.
pub fn display(root: &Path, resolved: &Path) -> String {
    match resolved.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => resolved.display().to_string(),
    }
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("shrike-root-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
        std::fs::write(root.join("etc/ssh/sshd_config"), "inside\n").unwrap();
        // An absolute link to the live /etc/passwd must land on root/etc/passwd.
        symlink("/etc/passwd", root.join("etc/passwd-link")).unwrap();
        symlink("../../../../../../etc/hostname", root.join("etc/ssh/up")).unwrap();
        symlink("ssh", root.join("etc/rel")).unwrap();
        symlink("loop", root.join("etc/loop")).unwrap();

        let r = |p: &str| resolve(&root, p).unwrap();
        assert_eq!(r("/etc/passwd-link"), root.join("etc/passwd"));
        assert_eq!(r("/../../etc/ssh/sshd_config"), root.join("etc/ssh/sshd_config"));
        assert_eq!(r("/etc/ssh/up"), root.join("etc/hostname"));
        assert_eq!(r("/etc/rel/sshd_config"), root.join("etc/ssh/sshd_config"));
        assert_eq!(std::fs::read_to_string(r("/etc/rel/sshd_config")).unwrap(), "inside\n");
        assert!(resolve(&root, "/etc/loop").is_err(), "a symlink loop is an error");
        assert!(!r("/etc/passwd-link").exists(), "the live /etc/passwd is not read");
        assert_eq!(display(&root, &r("/etc/rel/sshd_config")), "/etc/ssh/sshd_config");
        // The live root resolves as the plain path.
        assert_eq!(resolve(Path::new("/"), "/etc/../etc/hostname").unwrap(), Path::new("/etc/hostname"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
