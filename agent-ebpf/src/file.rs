//! File integrity: syscalls that create, write (open for writing), rename,
//! delete, chmod/chown or link files, filtered in the kernel against the
//! watched path prefixes (map `WATCH`, written by the agent at start), so that
//! writes elsewhere (/tmp) never reach userspace.
//!
//! Arguments are saved at entry (only for watched paths) and the record is
//! sent at exit with the result. The comparison is on the path string the
//! process passed: an absolute path is compared with every prefix; a relative
//! one (the kernel cannot see the cwd's or a dirfd's path without BTF) and the
//! fd-based calls (fchmod, fchown) go to the agent, which resolves them in
//! /proc and drops what is not watched. Symlinks and `..` in a path are not
//! resolved here (the string is what is compared).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use core::ffi::c_void;
use shrike_common::{FileRecord, PATH_LEN, WATCH_MAX, WATCH_WORDS, WatchPrefix, file_flags, file_op, kind};

use crate::{emit::emit, fill_header, is_agent};

/// Watched prefixes; the first slot with `nwords == 0` ends the list.
#[map]
static WATCH: Array<WatchPrefix> = Array::with_max_entries(WATCH_MAX, 0);

/// Per-CPU scratch to build a record (too large for the stack).
#[map]
static FILE_SCRATCH: PerCpuArray<FileRecord> = PerCpuArray::with_max_entries(1, 0);

/// Watched calls in flight, by tid, from entry to exit. The syscall number
/// rides along (in `hdr.size` until exit) so a stale entry (exit not seen)
/// is never paired with another call.
#[map]
static FILE_PENDING: LruHashMap<u32, FileRecord> = LruHashMap::with_max_entries(1024, 0);

const AT_FDCWD: i32 = -100;
/// O_WRONLY | O_RDWR | O_CREAT | O_TRUNC (same values on x86_64 and aarch64).
const WRITE_FLAGS: u64 = 0o1 | 0o2 | 0o100 | 0o1000;
const O_CREAT: u64 = 0o100;

/// What an entry hook captured, before the watch decision.
struct Call {
    op: u32,
    dirfd: i32,
    path: u64,
    dirfd2: i32,
    path2: u64,
    /// Whether `path` names the changed file (false for symlink's target text).
    check_path: bool,
    arg: u32,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Call {
    #[inline(always)]
    const fn new(op: u32) -> Call {
        Call {
            op,
            dirfd: AT_FDCWD,
            path: 0,
            dirfd2: AT_FDCWD,
            path2: 0,
            check_path: true,
            arg: 0,
            mode: 0,
            uid: 0,
            gid: 0,
        }
    }
}

#[inline(always)]
fn arg(ctx: &TracePointContext, off: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(off) }.unwrap_or(0)
}

/// Reads the user string at `ptr` into `buf`; returns the flags to set.
#[inline(always)]
fn read_path(buf: &mut [u8; PATH_LEN], ptr: u64, relative: u32, truncated: u32) -> u32 {
    let n = unsafe {
        bpf_probe_read_user_str(buf.as_mut_ptr() as *mut c_void, PATH_LEN as u32, ptr as *const c_void)
    };
    if n <= 0 {
        buf[0] = 0;
        return file_flags::PATH_UNREADABLE;
    }
    let mut f = 0;
    if buf[0] != b'/' {
        f |= relative;
    }
    if n as usize >= PATH_LEN {
        let mut b: u8 = 0;
        let r = unsafe {
            bpf_probe_read_user(
                &mut b as *mut u8 as *mut c_void,
                1,
                (ptr + PATH_LEN as u64 - 1) as *const c_void,
            )
        };
        if r == 0 && b != 0 {
            f |= truncated;
        }
    }
    f
}

/// True when the absolute path in `buf` starts with a watched prefix. Eight
/// bytes are compared at a time; a prefix longer than the path meets the
/// path's NUL, which no prefix byte equals.
#[inline(always)]
fn watched(buf: &[u8; PATH_LEN]) -> bool {
    let words = buf.as_ptr() as *const u64;
    for i in 0..WATCH_MAX {
        let Some(p) = WATCH.get(i) else { return false };
        if p.nwords == 0 {
            return false;
        }
        let mut all = true;
        for w in 0..WATCH_WORDS {
            if w as u32 >= p.nwords {
                break;
            }
            // In bounds: WATCH_WORDS * 8 <= PATH_LEN; `buf` is 8-aligned
            // (FileRecord::path's offset is a multiple of 8).
            let v = unsafe { core::ptr::read(words.add(w)) };
            if (v ^ p.words[w]) & p.masks[w] != 0 {
                all = false;
                break;
            }
        }
        if all {
            return true;
        }
    }
    false
}

#[inline(always)]
fn enter(ctx: &TracePointContext, c: Call) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some(rec) = FILE_SCRATCH.get_ptr_mut(0) else { return 0 };
    let rec = unsafe { &mut *rec };
    rec.op = c.op;
    rec.flags = 0;
    rec.dirfd = c.dirfd;
    rec.dirfd2 = c.dirfd2;
    rec.arg = c.arg;
    rec.mode = c.mode;
    rec.uid = c.uid;
    rec.gid = c.gid;
    rec.path[0] = 0;
    rec.path2[0] = 0;
    let mut send = false;
    if c.path == 0 {
        // fchmod/fchown: the fd's path is the agent's to find.
        rec.flags |= file_flags::BY_FD;
        send = true;
    } else {
        let f = read_path(&mut rec.path, c.path, file_flags::PATH_RELATIVE, file_flags::PATH_TRUNCATED);
        rec.flags |= f;
        if c.check_path && f & file_flags::PATH_UNREADABLE == 0 {
            send = f & file_flags::PATH_RELATIVE != 0 || watched(&rec.path);
        }
    }
    if c.path2 != 0 {
        let f = read_path(&mut rec.path2, c.path2, file_flags::PATH2_RELATIVE, file_flags::PATH2_TRUNCATED);
        rec.flags |= f & !file_flags::PATH_UNREADABLE;
        if !send && f & file_flags::PATH_UNREADABLE == 0 {
            send = f & file_flags::PATH2_RELATIVE != 0 || watched(&rec.path2);
        }
    }
    if !send {
        return 0;
    }
    // The syscall number, to pair the exit with this entry.
    rec.hdr.size = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(-1) as u32;
    let _ = FILE_PENDING.insert(pid_tgid as u32, rec, 0);
    0
}

/// Every file syscall's exit (`syscalls/sys_exit_*`): `__syscall_nr`@8, ret@16.
#[tracepoint]
pub fn sys_exit_file(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(rec) = FILE_PENDING.get_ptr_mut(tid) else { return 0 };
    let r = unsafe { &mut *rec };
    let nr = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(-2) as u32;
    if r.hdr.size == nr {
        r.ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0);
        fill_header(&mut r.hdr, kind::FILE, core::mem::size_of::<FileRecord>(), pid_tgid);
        emit(&ctx, kind::FILE, rec as *const u8, core::mem::size_of::<FileRecord>());
    }
    let _ = FILE_PENDING.remove(tid);
    0
}

#[inline(always)]
fn open_call(op: u32, dirfd: u64, path: u64, flags: u64, mode: u64) -> Option<Call> {
    if flags & WRITE_FLAGS == 0 {
        return None; // read-only opens: most opens, out before any copy
    }
    let mut c = Call::new(op);
    c.dirfd = dirfd as i32;
    c.path = path;
    c.arg = flags as u32;
    c.mode = if flags & O_CREAT != 0 { mode as u32 } else { 0 };
    Some(c)
}

/// syscalls/sys_enter_openat: dfd@16, filename@24, flags@32, mode@40.
#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    match open_call(file_op::OPEN, arg(&ctx, 16), arg(&ctx, 24), arg(&ctx, 32), arg(&ctx, 40)) {
        Some(c) => enter(&ctx, c),
        None => 0,
    }
}

/// syscalls/sys_enter_openat2: dfd@16, filename@24, how@32 (struct open_how
/// {u64 flags; u64 mode; u64 resolve}, in user memory).
#[tracepoint]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    let how = arg(&ctx, 32);
    let mut fm = [0u64; 2];
    let r = unsafe { bpf_probe_read_user(fm.as_mut_ptr() as *mut c_void, 16, how as *const c_void) };
    if r != 0 {
        return 0;
    }
    match open_call(file_op::OPEN, arg(&ctx, 16), arg(&ctx, 24), fm[0], fm[1]) {
        Some(c) => enter(&ctx, c),
        None => 0,
    }
}

/// syscalls/sys_enter_open (not on aarch64): filename@16, flags@24, mode@32.
#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    match open_call(file_op::OPEN, AT_FDCWD as u64, arg(&ctx, 16), arg(&ctx, 24), arg(&ctx, 32)) {
        Some(c) => enter(&ctx, c),
        None => 0,
    }
}

/// syscalls/sys_enter_creat (not on aarch64): pathname@16, mode@24.
#[tracepoint]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    let mut c = Call::new(file_op::CREAT);
    c.path = arg(&ctx, 16);
    c.mode = arg(&ctx, 24) as u32;
    c.arg = (0o1 | 0o100 | 0o1000) as u32;
    enter(&ctx, c)
}

/// Two-path calls: rename*, link*.
#[inline(always)]
fn two(
    ctx: &TracePointContext,
    op: u32,
    dfd: Option<usize>,
    old: usize,
    ndfd: Option<usize>,
    new: usize,
    flags: Option<usize>,
) -> u32 {
    let mut c = Call::new(op);
    if let Some(o) = dfd {
        c.dirfd = arg(ctx, o) as i32;
    }
    c.path = arg(ctx, old);
    if let Some(o) = ndfd {
        c.dirfd2 = arg(ctx, o) as i32;
    }
    c.path2 = arg(ctx, new);
    if let Some(o) = flags {
        c.arg = arg(ctx, o) as u32;
    }
    enter(ctx, c)
}

/// syscalls/sys_enter_rename: oldname@16, newname@24.
#[tracepoint]
pub fn sys_enter_rename(ctx: TracePointContext) -> u32 {
    two(&ctx, file_op::RENAME, None, 16, None, 24, None)
}

/// syscalls/sys_enter_renameat: olddfd@16, oldname@24, newdfd@32, newname@40.
#[tracepoint]
pub fn sys_enter_renameat(ctx: TracePointContext) -> u32 {
    two(&ctx, file_op::RENAME, Some(16), 24, Some(32), 40, None)
}

/// syscalls/sys_enter_renameat2: as renameat, flags@48.
#[tracepoint]
pub fn sys_enter_renameat2(ctx: TracePointContext) -> u32 {
    two(&ctx, file_op::RENAME, Some(16), 24, Some(32), 40, Some(48))
}

/// syscalls/sys_enter_link: oldname@16, newname@24.
#[tracepoint]
pub fn sys_enter_link(ctx: TracePointContext) -> u32 {
    two(&ctx, file_op::LINK, None, 16, None, 24, None)
}

/// syscalls/sys_enter_linkat: olddfd@16, oldname@24, newdfd@32, newname@40, flags@48.
#[tracepoint]
pub fn sys_enter_linkat(ctx: TracePointContext) -> u32 {
    two(&ctx, file_op::LINK, Some(16), 24, Some(32), 40, Some(48))
}

/// Symlinks: only the link's own path is judged (the target is any text).
#[inline(always)]
fn symlink(ctx: &TracePointContext, old: usize, ndfd: Option<usize>, new: usize) -> u32 {
    let mut c = Call::new(file_op::SYMLINK);
    c.path = arg(ctx, old);
    c.check_path = false;
    if let Some(o) = ndfd {
        c.dirfd2 = arg(ctx, o) as i32;
    }
    c.path2 = arg(ctx, new);
    enter(ctx, c)
}

/// syscalls/sys_enter_symlink: oldname@16, newname@24.
#[tracepoint]
pub fn sys_enter_symlink(ctx: TracePointContext) -> u32 {
    symlink(&ctx, 16, None, 24)
}

/// syscalls/sys_enter_symlinkat: oldname@16, newdfd@24, newname@32.
#[tracepoint]
pub fn sys_enter_symlinkat(ctx: TracePointContext) -> u32 {
    symlink(&ctx, 16, Some(24), 32)
}

/// One-path calls: unlink, rmdir, chmod, chown.
#[inline(always)]
fn one(ctx: &TracePointContext, mut c: Call, dfd: Option<usize>, path: usize) -> u32 {
    if let Some(o) = dfd {
        c.dirfd = arg(ctx, o) as i32;
    }
    c.path = arg(ctx, path);
    enter(ctx, c)
}

/// syscalls/sys_enter_unlink: pathname@16.
#[tracepoint]
pub fn sys_enter_unlink(ctx: TracePointContext) -> u32 {
    one(&ctx, Call::new(file_op::UNLINK), None, 16)
}

/// syscalls/sys_enter_unlinkat: dfd@16, pathname@24, flag@32.
#[tracepoint]
pub fn sys_enter_unlinkat(ctx: TracePointContext) -> u32 {
    let mut c = Call::new(file_op::UNLINK);
    c.arg = arg(&ctx, 32) as u32;
    one(&ctx, c, Some(16), 24)
}

/// syscalls/sys_enter_rmdir: pathname@16.
#[tracepoint]
pub fn sys_enter_rmdir(ctx: TracePointContext) -> u32 {
    one(&ctx, Call::new(file_op::RMDIR), None, 16)
}

#[inline(always)]
fn chmod_call(ctx: &TracePointContext, mode: usize) -> Call {
    let mut c = Call::new(file_op::CHMOD);
    c.mode = arg(ctx, mode) as u32;
    c
}

/// syscalls/sys_enter_chmod: filename@16, mode@24.
#[tracepoint]
pub fn sys_enter_chmod(ctx: TracePointContext) -> u32 {
    one(&ctx, chmod_call(&ctx, 24), None, 16)
}

/// syscalls/sys_enter_fchmodat: dfd@16, filename@24, mode@32.
#[tracepoint]
pub fn sys_enter_fchmodat(ctx: TracePointContext) -> u32 {
    one(&ctx, chmod_call(&ctx, 32), Some(16), 24)
}

/// syscalls/sys_enter_fchmodat2 (Linux >= 6.6): as fchmodat, flags@40.
#[tracepoint]
pub fn sys_enter_fchmodat2(ctx: TracePointContext) -> u32 {
    let mut c = chmod_call(&ctx, 32);
    c.arg = arg(&ctx, 40) as u32;
    one(&ctx, c, Some(16), 24)
}

/// syscalls/sys_enter_fchmod: fd@16, mode@24.
#[tracepoint]
pub fn sys_enter_fchmod(ctx: TracePointContext) -> u32 {
    let mut c = chmod_call(&ctx, 24);
    c.dirfd = arg(&ctx, 16) as i32;
    enter(&ctx, c)
}

#[inline(always)]
fn chown_call(ctx: &TracePointContext, user: usize) -> Call {
    let mut c = Call::new(file_op::CHOWN);
    c.uid = arg(ctx, user) as u32;
    c.gid = arg(ctx, user + 8) as u32;
    c
}

/// syscalls/sys_enter_chown: filename@16, user@24, group@32.
#[tracepoint]
pub fn sys_enter_chown(ctx: TracePointContext) -> u32 {
    one(&ctx, chown_call(&ctx, 24), None, 16)
}

/// syscalls/sys_enter_lchown: filename@16, user@24, group@32.
#[tracepoint]
pub fn sys_enter_lchown(ctx: TracePointContext) -> u32 {
    one(&ctx, chown_call(&ctx, 24), None, 16)
}

/// syscalls/sys_enter_fchownat: dfd@16, filename@24, user@32, group@40, flag@48.
#[tracepoint]
pub fn sys_enter_fchownat(ctx: TracePointContext) -> u32 {
    let mut c = chown_call(&ctx, 32);
    c.arg = arg(&ctx, 48) as u32;
    one(&ctx, c, Some(16), 24)
}

/// syscalls/sys_enter_fchown: fd@16, user@24, group@32.
#[tracepoint]
pub fn sys_enter_fchown(ctx: TracePointContext) -> u32 {
    let mut c = chown_call(&ctx, 24);
    c.dirfd = arg(&ctx, 16) as i32;
    enter(&ctx, c)
}
