//! The agent's own files (agent id, learnt baseline, the state folder):
//! created 0600 in folders created 0700, never opened through a link (a
//! symlink planted where the agent writes would otherwise make a root agent
//! overwrite or disclose any file), and not trusted when another user owns
//! them. The spool and the journal apply the same rules in their modules.

use std::{
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::Path,
};

fn euid() -> u32 {
    // SAFETY: a getter without arguments.
    unsafe { libc::geteuid() }
}

/// Whether files owned by `uid` are the agent's: its own user's, or root's.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

fn refuse(path: &Path, why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: {why}", path.display()))
}

/// Creates `dir` (and its missing parents) with mode 0700; an existing one
/// must be a directory owned by root or the agent's user, not writable by
/// others (another user could swap its files). A symlink to it is followed
/// only when root or the agent's user made the link.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let link = fs::symlink_metadata(dir)?;
    if link.file_type().is_symlink() && !trusted_owner(link.uid()) {
        return Err(refuse(dir, format!("a symbolic link owned by uid {}: not followed", link.uid())));
    }
    let md = fs::metadata(dir)?;
    if !md.is_dir() {
        return Err(refuse(dir, "not a directory".into()));
    }
    if !trusted_owner(md.uid()) {
        return Err(refuse(dir, format!("owned by uid {}, not by the agent's user", md.uid())));
    }
    // Sticky folders (/tmp) are shared on purpose: others cannot touch our files there.
    if md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0 {
        return Err(refuse(dir, format!("writable by other users (mode {:o})", md.mode() & 0o7777)));
    }
    Ok(())
}

/// A new file, mode 0600; fails if anything (a planted link included) is
/// already at `path`.
pub fn create_new(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens one of the agent's files for reading: not through a link, a
/// regular file owned by root or the agent's user.
pub fn open_own(path: &Path) -> io::Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refuse(path, "a symbolic link: not followed".into())
            } else {
                e
            }
        })?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(refuse(path, "not a regular file".into()));
    }
    if !trusted_owner(md.uid()) {
        return Err(refuse(path, format!("owned by uid {}, not by the agent's user", md.uid())));
    }
    Ok(f)
}

/// Replaces `path` with `bytes` atomically: a new 0600 temporary file
/// beside it (per process), fsync, rename (which replaces a link at `path`
/// itself, never its target), fsync of the folder. The folder is made
/// with [`private_dir`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    private_dir(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A leftover (or planted) entry: unlink removes a link, not its target.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let res = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("shrike-ownfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn files_and_folders_are_private() {
        let d = temp("private");
        let f = d.join("state/agent-id");
        write_atomic(&f, b"id\n").unwrap();
        assert_eq!(fs::metadata(d.join("state")).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        assert_eq!(io::read_to_string(open_own(&f).unwrap()).unwrap(), "id\n");
        // Rewritten in place of what was there.
        write_atomic(&f, b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&f).unwrap(), "two\n");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn planted_links_are_not_followed() {
        let d = temp("links");
        private_dir(&d).unwrap();
        let victim = d.join("victim");
        fs::write(&victim, "precious").unwrap();
        // A link where the agent reads and writes its file.
        let f = d.join("agent-id");
        std::os::unix::fs::symlink(&victim, &f).unwrap();
        let e = open_own(&f).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // The write replaces the link, the target is untouched.
        write_atomic(&f, b"mine\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!fs::symlink_metadata(&f).unwrap().file_type().is_symlink());
        // A link planted at the temporary file's name is removed, not followed.
        let tmp = d.join(format!("agent-id.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic(&f, b"again\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(&f).unwrap(), "again\n");
        // create_new never opens what exists.
        assert!(create_new(&f).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn foreign_owners_and_open_folders_are_refused() {
        // SAFETY: a getter.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping foreign_owners_and_open_folders_are_refused: needs root (chown)");
            return;
        }
        let d = temp("owners");
        private_dir(&d).unwrap();
        let f = d.join("baseline.profile");
        fs::write(&f, "x").unwrap();
        std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
        let e = open_own(&f).unwrap_err();
        assert!(e.to_string().contains("uid 65534"), "{e}");
        let open = d.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&open).unwrap_err();
        assert!(e.to_string().contains("writable by other users"), "{e}");
        let theirs = d.join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        assert!(private_dir(&theirs).unwrap_err().to_string().contains("uid 65534"));
        fs::remove_dir_all(&d).unwrap();
    }
}
