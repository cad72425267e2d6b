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
//!
//! Directory-fd cache: `rm -rf`, `find -delete` and most tree walkers open a
//! directory once and then unlink (or open) names relative to its fd, one
//! syscall per file; sending each to the agent floods it. So a directory
//! opened (O_DIRECTORY) by an absolute path that neither is under a watched
//! prefix nor is a prefix of one (nothing watched below it), or by one
//! name with O_NOFOLLOW from such a directory, is marked in `DIR_MARKS` under
//! (tgid, fd) at the open's exit; a relative path without `.`/`..`
//! components under a marked fd is then dropped here. A mark dies with its
//! fd: close and dup2/dup3 onto it remove it; close_range, a successful
//! exec (close-on-exec fds) and a new process reusing the tgid change the
//! process's epoch (`FD_EPOCH`), which every mark must match; a thread with
//! an fd table of its own (clone without CLONE_FILES, unshare(CLONE_FILES))
//! poisons its process (no marks until it execs). The agent turns the cache
//! on only when those hooks are attached (`Config::dir_cache`).

use crate::layout::{LONG, arg, ret, sys_arg, syscall_nr};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, ProgramArray},
    programs::TracePointContext,
};
use core::ffi::c_void;
use shrike_common::{
    FileRecord, PATH_LEN, WATCH_MAX, WATCH_WORDS, WatchHead, WatchPrefix, file_flags, file_op, kind,
};

use crate::{config, emit::emit, fd_key, fill_header, is_agent};

/// Watched prefixes; the first slot with `nwords == 0` ends the list.
#[map]
static WATCH: Array<WatchPrefix> = Array::with_max_entries(WATCH_MAX, 0);

/// The prefixes' first words (written by the agent before `WATCH`): most
/// absolute paths (/tmp, /proc, /home, /var/lib...) fail all of them on
/// their first 8 bytes, read alone, and are out before the path is copied.
#[map]
static WATCH_HEAD: Array<WatchHead> = Array::with_max_entries(1, 0);

/// Per-CPU scratch to build a record (too large for the stack).
#[map]
static FILE_SCRATCH: PerCpuArray<FileRecord> = PerCpuArray::with_max_entries(1, 0);

/// Watched calls in flight, by tid, from entry to exit. The syscall number
/// rides along (in `hdr.size` until exit) so a stale entry (exit not seen)
/// is never paired with another call.
#[map]
static FILE_PENDING: LruHashMap<u32, FileRecord> = LruHashMap::with_max_entries(1024, 0);

/// Entries put in `FILE_PENDING` minus those taken out (never less than
/// the entries there: one evicted or never taken out leaves it high). At 0
/// (nearly always: watched calls are rare) an exit skips the hash lookup.
/// Atomic adds; a thread's own entry is counted before its exit runs.
#[map]
static FILE_PENDING_N: Array<u64> = Array::with_max_entries(1, 0);

/// A directory fd known to hold nothing watched: its process's epoch and
/// the watch generation when it was marked.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DirMark {
    epoch: u64,
    generation: u32,
    /// Pending opens: the syscall number, to pair the exit with the entry.
    nr: u32,
}

/// Directory fds outside every watched prefix, by `(tgid << 32) | fd`.
#[map]
static DIR_MARKS: LruHashMap<u64, DirMark> = LruHashMap::with_max_entries(8192, 0);

/// Counting filter over `DIR_MARKS` for close and dup2: slot
/// [`mark_slot`] of a key counts marks made minus marks removed there, so
/// it is never 0 while the key has a mark (an evicted or overwritten mark
/// leaves it high: a hash lookup more, no mark missed). Nearly every closed
/// fd finds 0 in this array (no hash lookup); only tree walkers' processes
/// hold marks.
#[map]
static MARK_COUNT: Array<u64> = Array::with_max_entries(MARK_SLOTS, 0);

const MARK_SLOTS: u32 = 4096;

/// The `MARK_COUNT` slot of a `DIR_MARKS` key (multiplicative hash: the
/// fds of one process spread over the slots).
#[inline(always)]
fn mark_slot(key: u64) -> u32 {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32 & (MARK_SLOTS - 1)
}

/// Adds `d` (1 or -1) to a counter in an array map, atomically (BPF's
/// atomic add, which core's atomics do not offer on this target).
#[inline(always)]
fn count_add(p: *mut u64, d: i64) {
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {d}", p = in(reg) p, d = in(reg) d) };
}

/// Marks `key` (counted first, so a close never sees the mark uncounted).
#[inline(always)]
fn mark(key: u64, m: &DirMark) {
    let Some(c) = MARK_COUNT.get_ptr_mut(mark_slot(key)) else { return };
    count_add(c, 1);
    if DIR_MARKS.insert(key, m, 0).is_err() {
        count_add(c, -1);
    }
}

/// Per process (tgid): the epoch its marks must carry. Missing: made at the
/// next mark; [`POISONED`]: never marked.
#[map]
static FD_EPOCH: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// Markable directory opens in flight, by tid, from entry to exit.
#[map]
static DIR_PENDING: LruHashMap<u32, DirMark> = LruHashMap::with_max_entries(1024, 0);

/// Per CPU: the thread whose `DIR_PENDING` entry was last made here, so
/// the exit of every other open (nearly all) skips that hash lookup. A
/// thread that moved to another CPU in its syscall, or whose hint another
/// thread overwrote, just gets no mark.
#[map]
static DIR_HINT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn pend(tid: u32, m: DirMark) {
    let _ = DIR_PENDING.insert(tid, m, 0);
    if let Some(h) = DIR_HINT.get_ptr_mut(0) {
        unsafe { *h = tid };
    }
}

const POISONED: u64 = u64::MAX;
const CLONE_FILES: u64 = 0x400;
const CLONE_THREAD: u64 = 0x0001_0000;

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
            // Read anew each round (volatile): otherwise LLVM folds the two
            // bounds into one counter from `nwords`, which Linux 6.1's
            // verifier cannot bound ("invalid access to map value", found by
            // `cargo xtask vm-test`).
            if w as u32 >= unsafe { core::ptr::read_volatile(&p.nwords) } {
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

/// True when nothing watched is at or below the absolute directory path in
/// `buf` (cleaned by [`clean_scan`] in full: zero after its NUL): for every prefix,
/// the two strings differ within the shorter one's length. A string test
/// like [`watched`]: "/e" is refused (a prefix of "/etc"), "/etcx" too.
#[inline(always)]
fn subtree_unwatched(buf: &[u8; PATH_LEN]) -> bool {
    let words = buf.as_ptr() as *const u64;
    for i in 0..WATCH_MAX {
        let Some(p) = WATCH.get(i) else { return false };
        if p.nwords == 0 {
            return true;
        }
        let mut differ = false;
        for w in 0..WATCH_WORDS {
            // Read anew each round (volatile): otherwise LLVM folds the two
            // bounds into one counter from `nwords`, which Linux 6.1's
            // verifier cannot bound ("invalid access to map value", found by
            // `cargo xtask vm-test`).
            if w as u32 >= unsafe { core::ptr::read_volatile(&p.nwords) } {
                break;
            }
            // In bounds: see `watched`.
            let v = unsafe { core::ptr::read(words.add(w)) };
            // The path's own bytes (non-zero) in this word.
            let mine = !((zero_bytes(v) >> 7) * 0xff);
            if (v ^ p.words[w]) & p.masks[w] & mine != 0 {
                differ = true;
                break;
            }
        }
        if !differ {
            return false;
        }
    }
    true
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const ONES: u64 = 0x0101_0101_0101_0101;

/// 0x80 in each zero byte of `x`, 0 elsewhere (exact, no carries).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// Zeroes what follows the string's NUL in `buf` (a read leaves older bytes
/// there) and says what the string holds: (`..`, `./` or `//` anywhere, or
/// a last `.`: any of them may leave or re-enter a folder; a '/' anywhere).
/// Eight bytes at a time, with no data-dependent branch but the stop after
/// the NUL's word (`full`: zero the whole buffer, for [`subtree_unwatched`]).
#[inline(always)]
fn clean_scan(buf: &mut [u8; PATH_LEN], full: bool) -> (bool, bool) {
    let words = buf.as_mut_ptr() as *mut u64;
    let mut alive: u64 = !0;
    let (mut bad, mut slash, mut prev_dot, mut prev_slash) = (0u64, 0u64, 0u64, 0u64);
    for w in 0..PATH_LEN / 8 {
        if !full && alive == 0 {
            break;
        }
        // In bounds: PATH_LEN / 8 words; 8-aligned (see `watched`).
        let raw = unsafe { core::ptr::read(words.add(w)) };
        let z = zero_bytes(raw);
        // The first zero byte's flag, when the NUL has not been seen yet.
        let nul = z & z.wrapping_neg() & alive;
        let keep = alive & (nul >> 7).wrapping_sub(1);
        let v = raw & keep;
        unsafe { core::ptr::write(words.add(w), v) };
        let dots = zero_bytes(v ^ (b'.' as u64 * ONES)) & keep;
        let slashes = zero_bytes(v ^ (b'/' as u64 * ONES)) & keep;
        let after_dot = (dots << 8) | prev_dot;
        bad |= (after_dot & (dots | slashes | nul)) | (((slashes << 8) | prev_slash) & slashes);
        slash |= slashes;
        prev_dot = dots >> 56;
        prev_slash = slashes >> 56;
        // Past the NUL: nothing more is the string's (top bit of
        // nul | -nul: nul != 0).
        alive &= ((nul | nul.wrapping_neg()) >> 63).wrapping_sub(1);
    }
    (bad != 0, slash != 0)
}

/// The mark of `(tgid, fd)`, when it is current (same process epoch and
/// watch generation).
#[inline(always)]
fn dir_marked(pid_tgid: u64, fd: i32, generation: u32) -> bool {
    if fd < 0 || generation == 0 {
        return false;
    }
    let Some(m) = (unsafe { DIR_MARKS.get(fd_key(pid_tgid, fd as u64)) }) else { return false };
    if m.generation != generation {
        return false;
    }
    match unsafe { FD_EPOCH.get((pid_tgid >> 32) as u32) } {
        Some(e) => *e == m.epoch && *e != POISONED,
        None => false,
    }
}

/// A relative path that the kernel can judge unwatched: no `.`/`..`
/// component, under a marked directory fd (string semantics, as for
/// absolute paths: a symlink on the way is not followed here).
#[inline(always)]
fn relative_unwatched(pid_tgid: u64, dirfd: i32, buf: &mut [u8; PATH_LEN], generation: u32) -> bool {
    if !dir_marked(pid_tgid, dirfd, generation) {
        return false;
    }
    let (bad, _) = clean_scan(buf, false);
    !bad
}

/// Drops the mark of `(tgid, fd)` (its fd is closed or replaced). The
/// counting filter first (an array slot: nearly always 0), then a lookup
/// (takes no lock) before the remove (does).
#[inline(always)]
fn unmark(pid_tgid: u64, fd: u64) {
    let key = fd_key(pid_tgid, fd);
    let Some(c) = MARK_COUNT.get_ptr_mut(mark_slot(key)) else { return };
    if unsafe { core::ptr::read_volatile(c) } == 0 {
        return;
    }
    if unsafe { DIR_MARKS.get(key) }.is_some() && DIR_MARKS.remove(key).is_ok() {
        count_add(c, -1);
    }
}

/// Tail call from the open hooks to [`file_dir_open`] (slot 0, set by the
/// agent): one program holding both the write check and the directory
/// check is over the verifier's 1M-instruction budget.
#[map]
static FILE_TAIL: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The open's (dirfd, path, flags), for the tail-called program.
#[map]
static DIR_ARGS: PerCpuArray<[u64; 3]> = PerCpuArray::with_max_entries(1, 0);

/// A read-only open with O_DIRECTORY: when the directory it opens holds
/// nothing watched, [`file_dir_open`] marks its fd at the exit.
#[inline(always)]
fn dir_open(ctx: &TracePointContext, dirfd: u64, path: u64, flags: u64) -> u32 {
    let cfg = config();
    if cfg.dir_cache == 0 || flags & cfg.o_directory as u64 == 0 {
        return 0;
    }
    let Some(a) = DIR_ARGS.get_ptr_mut(0) else { return 0 };
    unsafe { *a = [dirfd, path, flags] };
    // Returns only when the slot is empty (no marks then).
    unsafe { FILE_TAIL.tail_call(ctx, 0) };
    0
}

/// Tail-called by the open hooks (`FILE_TAIL`), never attached: judges a
/// read-only O_DIRECTORY open (arguments in `DIR_ARGS`).
#[tracepoint]
pub fn file_dir_open(ctx: TracePointContext) -> u32 {
    let Some(a) = DIR_ARGS.get(0) else { return 0 };
    let [dirfd, path, flags] = *a;
    let dirfd = dirfd as i32;
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if is_agent(tgid) {
        return 0;
    }
    let Some(rec) = FILE_SCRATCH.get_ptr_mut(0) else { return 0 };
    let rec = unsafe { &mut *rec };
    let n = unsafe {
        bpf_probe_read_user_str(rec.path.as_mut_ptr() as *mut c_void, PATH_LEN as u32, path as *const c_void)
    };
    if n <= 1 || n as usize >= PATH_LEN {
        return 0; // unreadable, empty or possibly cut: not judged
    }
    let absolute = rec.path[0] == b'/';
    let (bad, slash) = clean_scan(&mut rec.path, true);
    if bad {
        return 0;
    }
    if absolute {
        if !subtree_unwatched(&rec.path) {
            return 0;
        }
    } else {
        // One name, not followed if a symlink: a real child directory.
        if slash || flags & cfg.o_nofollow as u64 == 0 || !dir_marked(pid_tgid, dirfd, cfg.dir_cache) {
            return 0;
        }
    }
    // The process's epoch, made now if it has none (never over a poison).
    let _ = FD_EPOCH.insert(tgid, unsafe { bpf_ktime_get_ns() }, 1 /* BPF_NOEXIST */);
    let Some(epoch) = (unsafe { FD_EPOCH.get(tgid) }) else { return 0 };
    if *epoch == POISONED {
        return 0;
    }
    let m = DirMark { epoch: *epoch, generation: cfg.dir_cache, nr: syscall_nr(&ctx) };
    pend(pid_tgid as u32, m);
    0
}

/// The fd-table hooks below keep `DIR_MARKS` true; they run for every
/// process (the agent attaches them with the file probes).
///
/// syscalls/sys_enter_close: fd@16.
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    unmark(bpf_get_current_pid_tgid(), arg(&ctx, sys_arg(0)));
    0
}

/// A copy of a marked fd (dup, dup2/dup3, fcntl F_DUPFD*) is marked at the
/// exit (`sys_exit_file`) too: fts (rm -rf, find) works on such copies.
#[inline(always)]
fn dup_enter(ctx: &TracePointContext, pid_tgid: u64, oldfd: u64) {
    let generation = config().dir_cache;
    if !dir_marked(pid_tgid, oldfd as i32, generation) {
        return;
    }
    let Some(m) = (unsafe { DIR_MARKS.get(fd_key(pid_tgid, oldfd)) }) else { return };
    let mut m = *m;
    m.nr = syscall_nr(ctx);
    pend(pid_tgid as u32, m);
}

/// syscalls/sys_enter_dup2 (not on aarch64): oldfd@16, newfd@24. newfd is
/// closed first when open. Also attached to sys_enter_dup3 (same offsets).
#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    unmark(pid_tgid, arg(&ctx, sys_arg(1)));
    dup_enter(&ctx, pid_tgid, arg(&ctx, sys_arg(0)));
    0
}

/// syscalls/sys_enter_dup: fildes@16.
#[tracepoint]
pub fn sys_enter_dup(ctx: TracePointContext) -> u32 {
    dup_enter(&ctx, bpf_get_current_pid_tgid(), arg(&ctx, sys_arg(0)));
    0
}

const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// syscalls/sys_enter_fcntl: fd@16, cmd@24.
#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    let cmd = arg(&ctx, sys_arg(1));
    if cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC {
        dup_enter(&ctx, bpf_get_current_pid_tgid(), arg(&ctx, sys_arg(0)));
    }
    0
}

/// New epoch for the current process: every mark it holds is dropped.
#[inline(always)]
fn new_epoch(tgid: u32, clear_poison: bool) {
    if let Some(e) = FD_EPOCH.get_ptr_mut(tgid) {
        let e = unsafe { &mut *e };
        if clear_poison || *e != POISONED {
            // Removed: the next mark makes a fresh one.
            let _ = FD_EPOCH.remove(tgid);
        }
    }
}

/// syscalls/sys_enter_close_range (Linux >= 5.9): fd@16, max_fd@24, flags@32.
#[tracepoint]
pub fn sys_enter_close_range(_ctx: TracePointContext) -> u32 {
    new_epoch((bpf_get_current_pid_tgid() >> 32) as u32, false);
    0
}

/// syscalls/sys_enter_unshare: unshare_flags@16. CLONE_FILES gives the
/// calling thread an fd table of its own: its process gets no more marks.
#[tracepoint]
pub fn sys_enter_unshare(ctx: TracePointContext) -> u32 {
    if arg(&ctx, sys_arg(0)) & CLONE_FILES != 0 {
        let _ = FD_EPOCH.insert((bpf_get_current_pid_tgid() >> 32) as u32, POISONED, 0);
    }
    0
}

/// From task/task_newtask (process.rs): a new process (its pid a tgid that
/// may have been used before) starts with no epoch; a thread without
/// CLONE_FILES poisons its process.
#[inline(always)]
pub fn on_new_task(parent_tgid: u32, child: u32, flags: u64) {
    if flags & CLONE_THREAD == 0 {
        if unsafe { FD_EPOCH.get(child) }.is_some() {
            let _ = FD_EPOCH.remove(child);
        }
    } else if flags & CLONE_FILES == 0 {
        let _ = FD_EPOCH.insert(parent_tgid, POISONED, 0);
    }
}

/// From sched/sched_process_exec (exec.rs): the close-on-exec fds are closed
/// without a close(); the exec'd image is single-threaded again.
#[inline(always)]
pub fn on_exec(tgid: u32) {
    new_epoch(tgid, true);
}

/// True when the path at `ptr` is absolute and under no watched prefix,
/// judged on its first 8 bytes alone (`WATCH_HEAD`): no copy of the path,
/// no loop over `WATCH`; its second byte alone rules out most (/tmp, /proc). False when it cannot tell (relative, shorter than
/// 8 readable bytes, or a first word some prefix starts with).
#[inline(always)]
fn head_unwatched(ptr: u64) -> bool {
    let mut b = [0u8; 8];
    let r = unsafe { bpf_probe_read_user(b.as_mut_ptr() as *mut c_void, 8, ptr as *const c_void) };
    if r != 0 || b[0] != b'/' {
        return false;
    }
    let first = u64::from_ne_bytes(b);
    let Some(h) = WATCH_HEAD.get(0) else { return false };
    let c = b[1] as usize;
    if h.second[(c >> 6) & 3] & (1 << (c & 63)) == 0 {
        return true;
    }
    for i in 0..WATCH_MAX as usize {
        // Read anew each round (volatile), as in `watched`.
        if i as u32 >= unsafe { core::ptr::read_volatile(&h.n) } {
            return true;
        }
        if (first ^ h.words[i]) & h.masks[i] == 0 {
            return false;
        }
    }
    true
}

#[inline(always)]
fn enter(ctx: &TracePointContext, c: Call) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return 0;
    }
    // The common case (a write under /tmp, /var/lib, /proc...) ends here:
    // every path the call judges is absolute and unwatched by its start.
    // Not tried with a directory fd (`rm -rf`'s unlinkat): its path is
    // nearly always relative, and the pre-check's read would be one more.
    if c.path != 0
        && (!c.check_path || (c.dirfd < 0 && head_unwatched(c.path)))
        && (c.path2 == 0 || (c.dirfd2 < 0 && head_unwatched(c.path2)))
    {
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
    let generation = config().dir_cache;
    let mut send = false;
    if c.path == 0 {
        // fchmod/fchown: the fd's path is the agent's to find, unless it is
        // a marked directory.
        rec.flags |= file_flags::BY_FD;
        send = !dir_marked(pid_tgid, c.dirfd, generation);
    } else {
        let f = read_path(&mut rec.path, c.path, file_flags::PATH_RELATIVE, file_flags::PATH_TRUNCATED);
        rec.flags |= f;
        if c.check_path && f & file_flags::PATH_UNREADABLE == 0 {
            send = if f & file_flags::PATH_RELATIVE != 0 {
                f & file_flags::PATH_TRUNCATED != 0
                    || !relative_unwatched(pid_tgid, c.dirfd, &mut rec.path, generation)
            } else {
                watched(&rec.path)
            };
        }
    }
    if c.path2 != 0 {
        let f = read_path(&mut rec.path2, c.path2, file_flags::PATH2_RELATIVE, file_flags::PATH2_TRUNCATED);
        rec.flags |= f & !file_flags::PATH_UNREADABLE;
        if !send && f & file_flags::PATH_UNREADABLE == 0 {
            send = if f & file_flags::PATH2_RELATIVE != 0 {
                f & file_flags::PATH2_TRUNCATED != 0
                    || !relative_unwatched(pid_tgid, c.dirfd2, &mut rec.path2, generation)
            } else {
                watched(&rec.path2)
            };
        }
    }
    if !send {
        return 0;
    }
    // The syscall number, to pair the exit with this entry.
    rec.hdr.size = syscall_nr(ctx);
    if FILE_PENDING.insert(pid_tgid as u32, rec, 0).is_ok()
        && let Some(n) = FILE_PENDING_N.get_ptr_mut(0)
    {
        count_add(n, 1);
    }
    0
}

/// Every file syscall's exit (`syscalls/sys_exit_*`): `__syscall_nr`@8, ret@16.
#[tracepoint]
pub fn sys_exit_file(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let nr = syscall_nr(&ctx);
    let Some(pending_n) = FILE_PENDING_N.get_ptr_mut(0) else { return 0 };
    let pending = if unsafe { core::ptr::read_volatile(pending_n) } == 0 {
        None
    } else {
        FILE_PENDING.get_ptr_mut(tid)
    };
    let Some(rec) = pending else {
        // A markable directory open or a copy of a marked fd: mark the new fd.
        let Some(h) = DIR_HINT.get_ptr_mut(0) else { return 0 };
        if unsafe { *h } != tid {
            return 0;
        }
        unsafe { *h = 0 };
        if let Some(m) = unsafe { DIR_PENDING.get(tid) } {
            let m = *m;
            let _ = DIR_PENDING.remove(tid);
            let ret = ret(&ctx);
            if m.nr == nr && ret >= 0 {
                mark(fd_key(pid_tgid, ret as u64), &m);
            }
        }
        return 0;
    };
    let r = unsafe { &mut *rec };
    if r.hdr.size == nr {
        r.ret = ret(&ctx);
        fill_header(&mut r.hdr, kind::FILE, core::mem::size_of::<FileRecord>(), pid_tgid);
        emit(&ctx, kind::FILE, rec as *const u8, core::mem::size_of::<FileRecord>());
    }
    if FILE_PENDING.remove(tid).is_ok() {
        count_add(pending_n, -1);
    }
    0
}

/// An open's entry: a write open is judged, a read-only directory open may
/// mark its fd, other opens (most) are out before any copy.
#[inline(always)]
fn open_enter(ctx: &TracePointContext, dirfd: u64, path: u64, flags: u64, mode: u64) -> u32 {
    match open_call(file_op::OPEN, dirfd, path, flags, mode) {
        Some(c) => enter(ctx, c),
        None => dir_open(ctx, dirfd, path, flags),
    }
}

#[inline(always)]
fn open_call(op: u32, dirfd: u64, path: u64, flags: u64, mode: u64) -> Option<Call> {
    if flags & WRITE_FLAGS == 0 {
        return None;
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
    open_enter(
        &ctx,
        arg(&ctx, sys_arg(0)),
        arg(&ctx, sys_arg(1)),
        arg(&ctx, sys_arg(2)),
        arg(&ctx, sys_arg(3)),
    )
}

/// syscalls/sys_enter_openat2: dfd@16, filename@24, how@32 (struct open_how
/// {u64 flags; u64 mode; u64 resolve}, in user memory).
#[tracepoint]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    let how = arg(&ctx, sys_arg(2));
    let mut fm = [0u64; 2];
    let r = unsafe { bpf_probe_read_user(fm.as_mut_ptr() as *mut c_void, 16, how as *const c_void) };
    if r != 0 {
        return 0;
    }
    open_enter(&ctx, arg(&ctx, sys_arg(0)), arg(&ctx, sys_arg(1)), fm[0], fm[1])
}

/// syscalls/sys_enter_open (not on aarch64): filename@16, flags@24, mode@32.
#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    open_enter(&ctx, AT_FDCWD as u64, arg(&ctx, sys_arg(0)), arg(&ctx, sys_arg(1)), arg(&ctx, sys_arg(2)))
}

/// syscalls/sys_enter_creat (not on aarch64): pathname@16, mode@24.
#[tracepoint]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    let mut c = Call::new(file_op::CREAT);
    c.path = arg(&ctx, sys_arg(0));
    c.mode = arg(&ctx, sys_arg(1)) as u32;
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
    two(&ctx, file_op::RENAME, None, sys_arg(0), None, sys_arg(1), None)
}

/// syscalls/sys_enter_renameat: olddfd@16, oldname@24, newdfd@32, newname@40.
#[tracepoint]
pub fn sys_enter_renameat(ctx: TracePointContext) -> u32 {
    two(&ctx, file_op::RENAME, Some(sys_arg(0)), sys_arg(1), Some(sys_arg(2)), sys_arg(3), None)
}

/// syscalls/sys_enter_renameat2: as renameat, flags@48.
#[tracepoint]
pub fn sys_enter_renameat2(ctx: TracePointContext) -> u32 {
    two(&ctx, file_op::RENAME, Some(sys_arg(0)), sys_arg(1), Some(sys_arg(2)), sys_arg(3), Some(sys_arg(4)))
}

/// syscalls/sys_enter_link: oldname@16, newname@24.
#[tracepoint]
pub fn sys_enter_link(ctx: TracePointContext) -> u32 {
    two(&ctx, file_op::LINK, None, sys_arg(0), None, sys_arg(1), None)
}

/// syscalls/sys_enter_linkat: olddfd@16, oldname@24, newdfd@32, newname@40, flags@48.
#[tracepoint]
pub fn sys_enter_linkat(ctx: TracePointContext) -> u32 {
    two(&ctx, file_op::LINK, Some(sys_arg(0)), sys_arg(1), Some(sys_arg(2)), sys_arg(3), Some(sys_arg(4)))
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
    symlink(&ctx, sys_arg(0), None, sys_arg(1))
}

/// syscalls/sys_enter_symlinkat: oldname@16, newdfd@24, newname@32.
#[tracepoint]
pub fn sys_enter_symlinkat(ctx: TracePointContext) -> u32 {
    symlink(&ctx, sys_arg(0), Some(sys_arg(1)), sys_arg(2))
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
    one(&ctx, Call::new(file_op::UNLINK), None, sys_arg(0))
}

/// syscalls/sys_enter_unlinkat: dfd@16, pathname@24, flag@32.
#[tracepoint]
pub fn sys_enter_unlinkat(ctx: TracePointContext) -> u32 {
    let mut c = Call::new(file_op::UNLINK);
    c.arg = arg(&ctx, sys_arg(2)) as u32;
    one(&ctx, c, Some(sys_arg(0)), sys_arg(1))
}

/// syscalls/sys_enter_rmdir: pathname@16.
#[tracepoint]
pub fn sys_enter_rmdir(ctx: TracePointContext) -> u32 {
    one(&ctx, Call::new(file_op::RMDIR), None, sys_arg(0))
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
    one(&ctx, chmod_call(&ctx, sys_arg(1)), None, sys_arg(0))
}

/// syscalls/sys_enter_fchmodat: dfd@16, filename@24, mode@32.
#[tracepoint]
pub fn sys_enter_fchmodat(ctx: TracePointContext) -> u32 {
    one(&ctx, chmod_call(&ctx, sys_arg(2)), Some(sys_arg(0)), sys_arg(1))
}

/// syscalls/sys_enter_fchmodat2 (Linux >= 6.6): as fchmodat, flags@40.
#[tracepoint]
pub fn sys_enter_fchmodat2(ctx: TracePointContext) -> u32 {
    let mut c = chmod_call(&ctx, sys_arg(2));
    c.arg = arg(&ctx, sys_arg(3)) as u32;
    one(&ctx, c, Some(sys_arg(0)), sys_arg(1))
}

/// syscalls/sys_enter_fchmod: fd@16, mode@24.
#[tracepoint]
pub fn sys_enter_fchmod(ctx: TracePointContext) -> u32 {
    let mut c = chmod_call(&ctx, sys_arg(1));
    c.dirfd = arg(&ctx, sys_arg(0)) as i32;
    enter(&ctx, c)
}

#[inline(always)]
fn chown_call(ctx: &TracePointContext, user: usize) -> Call {
    let mut c = Call::new(file_op::CHOWN);
    c.uid = arg(ctx, user) as u32;
    c.gid = arg(ctx, user + LONG) as u32;
    c
}

/// syscalls/sys_enter_chown: filename@16, user@24, group@32.
#[tracepoint]
pub fn sys_enter_chown(ctx: TracePointContext) -> u32 {
    one(&ctx, chown_call(&ctx, sys_arg(1)), None, sys_arg(0))
}

/// syscalls/sys_enter_lchown: filename@16, user@24, group@32.
#[tracepoint]
pub fn sys_enter_lchown(ctx: TracePointContext) -> u32 {
    one(&ctx, chown_call(&ctx, sys_arg(1)), None, sys_arg(0))
}

/// syscalls/sys_enter_fchownat: dfd@16, filename@24, user@32, group@40, flag@48.
#[tracepoint]
pub fn sys_enter_fchownat(ctx: TracePointContext) -> u32 {
    let mut c = chown_call(&ctx, sys_arg(2));
    c.arg = arg(&ctx, sys_arg(4)) as u32;
    one(&ctx, c, Some(sys_arg(0)), sys_arg(1))
}

/// syscalls/sys_enter_fchown: fd@16, user@24, group@32.
#[tracepoint]
pub fn sys_enter_fchown(ctx: TracePointContext) -> u32 {
    let mut c = chown_call(&ctx, sys_arg(1));
    c.dirfd = arg(&ctx, sys_arg(0)) as i32;
    enter(&ctx, c)
}
