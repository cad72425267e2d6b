//! `file` events: a change to a file under a watched path (kernel record
//! [`FileRecord`], filtered by prefix in the kernel; relative and fd-based
//! paths are resolved and filtered by the agent, `enrich/files.rs`).

use serde::Serialize;
use shrike_common::{FileRecord, file_flags, file_op, kind};

use super::{decode::DecodeError, names::error_of, text::kstr};

/// AT_FDCWD: a path relative to the current directory.
pub const AT_FDCWD: i32 = -100;
/// unlinkat's flag: remove a directory.
const AT_REMOVEDIR: u32 = 0x200;
const O_CREAT: u32 = 0o100;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct File {
    /// "create" (creat, or open with O_CREAT: the file may have existed),
    /// "write" (opened for writing or truncation without O_CREAT), "rename",
    /// "delete", "chmod", "chown", "link", "symlink".
    pub operation: &'static str,
    /// The file changed, absolute once resolved (rename: the old name;
    /// link/symlink: the new link).
    pub path: String,
    /// rename: the new name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    /// link: the existing file linked to; symlink: the link's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// chmod's new mode, creat/open's creation mode (octal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// chown: the new owner and group (`None`: unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_gid: Option<u32>,
    /// open: the flags (octal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_flags: Option<String>,
    /// delete of a directory (rmdir, unlinkat AT_REMOVEDIR).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub directory: bool,
    /// 0 (open: the new fd) or `-errno`.
    pub result: i64,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// The path was longer than the kernel captures (255 bytes).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// How a path the kernel got relative (or as a file descriptor) was
    /// made absolute: "cwd" (/proc/PID/cwd), "dirfd" (/proc/PID/fd/N), "fd"
    /// (fchmod/fchown: /proc/PID/fd/N), "parent_cwd" (the process was gone:
    /// its parent's cwd, which it inherited unless it changed directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_from: Option<&'static str>,
    /// The kernel's view before resolution (not serialized).
    #[serde(skip)]
    pub raw: RawPaths,
}

/// What the agent needs to resolve relative or fd-based paths.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawPaths {
    pub dirfd: i32,
    pub dirfd2: i32,
    pub path_relative: bool,
    pub path2_relative: bool,
    pub by_fd: bool,
}

pub fn op_name(op: u32, arg: u32) -> &'static str {
    match op {
        file_op::OPEN if arg & O_CREAT != 0 => "create",
        file_op::OPEN => "write",
        file_op::CREAT => "create",
        file_op::RENAME => "rename",
        file_op::UNLINK | file_op::RMDIR => "delete",
        file_op::CHMOD => "chmod",
        file_op::CHOWN => "chown",
        file_op::LINK => "link",
        file_op::SYMLINK => "symlink",
        _ => "unknown",
    }
}

pub fn decode_file(buf: &[u8]) -> Result<File, DecodeError> {
    let want = std::mem::size_of::<FileRecord>();
    if buf.len() < want {
        return Err(DecodeError::Truncated { kind: kind::FILE, got: buf.len(), want });
    }
    // SAFETY: length checked; FileRecord is plain integers and byte arrays.
    let r: FileRecord = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<FileRecord>()) };
    let flags = r.flags;
    let p1 = kstr(&r.path);
    let p2 = kstr(&r.path2);
    let (path, new_path, target) = match r.op {
        file_op::RENAME => (p1, Some(p2), None),
        file_op::LINK | file_op::SYMLINK => (p2, None, Some(p1)),
        _ => (p1, None, None),
    };
    // link/symlink: the judged path is path2; swap the flags with it.
    let swapped = matches!(r.op, file_op::LINK | file_op::SYMLINK);
    let (rel1, rel2) = (flags & file_flags::PATH_RELATIVE != 0, flags & file_flags::PATH2_RELATIVE != 0);
    let (dirfd, dirfd2, path_relative, path2_relative) =
        if swapped { (r.dirfd2, r.dirfd, rel2, rel1) } else { (r.dirfd, r.dirfd2, rel1, rel2) };
    let trunc = if swapped { file_flags::PATH2_TRUNCATED } else { file_flags::PATH_TRUNCATED };
    let id = |v: u32| (v != u32::MAX).then_some(v);
    Ok(File {
        operation: op_name(r.op, r.arg),
        path,
        new_path,
        target,
        mode: match r.op {
            file_op::CHMOD => Some(format!("{:o}", r.mode & 0o7777)),
            file_op::OPEN | file_op::CREAT if r.arg & O_CREAT != 0 => Some(format!("{:o}", r.mode & 0o7777)),
            _ => None,
        },
        owner_uid: (r.op == file_op::CHOWN).then(|| id(r.uid)).flatten(),
        owner_gid: (r.op == file_op::CHOWN).then(|| id(r.gid)).flatten(),
        open_flags: (r.op == file_op::OPEN).then(|| format!("{:o}", r.arg)),
        directory: r.op == file_op::RMDIR || (r.op == file_op::UNLINK && r.arg & AT_REMOVEDIR != 0),
        result: r.ret,
        success: r.ret >= 0,
        error: error_of(r.ret),
        path_truncated: flags & trunc != 0,
        resolved_from: None,
        raw: RawPaths { dirfd, dirfd2, path_relative, path2_relative, by_fd: flags & file_flags::BY_FD != 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shrike_common::Header;

    fn record(op: u32, flags: u32, arg: u32, p1: &str, p2: &str) -> Vec<u8> {
        // SAFETY: all-zero is a valid FileRecord.
        let mut r: FileRecord = unsafe { std::mem::zeroed() };
        r.hdr = Header {
            kind: kind::FILE,
            size: 600,
            ktime_ns: 1,
            pid: 5,
            tid: 5,
            uid: 0,
            gid: 0,
            comm: [0; 16],
        };
        r.op = op;
        r.flags = flags;
        r.arg = arg;
        r.dirfd = AT_FDCWD;
        r.dirfd2 = 7;
        r.mode = 0o100644;
        r.uid = 1000;
        r.gid = u32::MAX;
        r.path[..p1.len()].copy_from_slice(p1.as_bytes());
        r.path2[..p2.len()].copy_from_slice(p2.as_bytes());
        r.ret = -13;
        // SAFETY: a POD record viewed as its bytes.
        unsafe { std::slice::from_raw_parts((&r as *const FileRecord).cast::<u8>(), 600) }.to_vec()
    }

    #[test]
    fn operations_and_paths() {
        let f = decode_file(&record(file_op::OPEN, 0, 0o1101, "/etc/x", "")).unwrap();
        assert_eq!((f.operation, f.path.as_str(), f.mode.as_deref()), ("create", "/etc/x", Some("644")));
        assert_eq!((f.success, f.error), (false, Some("EACCES")));
        let f = decode_file(&record(file_op::OPEN, 0, 0o1001, "/etc/x", "")).unwrap();
        assert_eq!((f.operation, f.mode), ("write", None));
        let f = decode_file(&record(file_op::RENAME, file_flags::PATH2_RELATIVE, 0, "/etc/a", "b")).unwrap();
        assert_eq!((f.operation, f.path.as_str(), f.new_path.as_deref()), ("rename", "/etc/a", Some("b")));
        assert!(f.raw.path2_relative && !f.raw.path_relative);
        let f =
            decode_file(&record(file_op::SYMLINK, file_flags::PATH_RELATIVE, 0, "../x", "/etc/l")).unwrap();
        assert_eq!((f.path.as_str(), f.target.as_deref()), ("/etc/l", Some("../x")));
        assert!(!f.raw.path_relative && f.raw.path2_relative);
        assert_eq!(f.raw.dirfd, 7, "the link's own dirfd");
        let f = decode_file(&record(file_op::UNLINK, 0, 0x200, "/etc/d", "")).unwrap();
        assert!(f.directory && f.operation == "delete");
        let f = decode_file(&record(file_op::CHOWN, 0, 0, "/etc/x", "")).unwrap();
        assert_eq!((f.owner_uid, f.owner_gid), (Some(1000), None));
        assert!(decode_file(&record(file_op::OPEN, 0, 1, "/etc/x", "")[..100]).is_err());
    }
}
