//! execve/execveat: arguments captured at entry (the old image's memory is gone
//! after a successful exec), reported at exit with the result, so failed execs
//! are reported as failed.

use crate::layout::{EXEC_OLD_PID, EXEC_PID, LONG, SYS_RET, slong, sys_arg, ulong, user_ptr};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use core::ffi::c_void;
use shrike_common::{
    ARGS_BUF_LEN, ARGS_CAP, ExecRecord, FILENAME_LEN, MAX_ARG_LEN, MAX_ARGS, exec_flags, kind,
};

use crate::{config, emit::emit, fill_header, is_agent};

/// Per-CPU scratch to build a record (too large for the 512-byte stack).
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecRecord> = PerCpuArray::with_max_entries(1, 0);

/// Execs in flight, keyed by tid, from entry to exit.
#[map]
static EXEC_PENDING: LruHashMap<u32, ExecRecord> = LruHashMap::with_max_entries(512, 0);

/// Execs in flight from a thread other than the leader, keyed by tgid: while
/// one runs, the leader's exit is de_thread() ending the old leader (the
/// exec'ing thread takes its pid), not the end of the process.
#[map]
static EXEC_THREAD: LruHashMap<u32, u32> = LruHashMap::with_max_entries(512, 0);

/// True while a thread other than the leader of `tgid` is in execve.
#[inline(always)]
pub fn non_leader_exec_running(tgid: u32) -> bool {
    unsafe { EXEC_THREAD.get(tgid) }.is_some()
}

const AT_FDCWD: i32 = -100;

/// sched/sched_process_exec: pid@12, old_pid@16. A successful exec from a
/// thread other than the leader takes the leader's pid: the arguments saved at
/// entry under the thread's old id move to the new one, for the syscall's exit.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let Ok(pid) = (unsafe { ctx.read_at::<i32>(EXEC_PID) }) else { return 0 };
    let Ok(old) = (unsafe { ctx.read_at::<i32>(EXEC_OLD_PID) }) else { return 0 };
    // File integrity's directory marks: close-on-exec fds are gone.
    crate::file::on_exec(pid as u32);
    if pid != old
        && let Some(rec) = EXEC_PENDING.get_ptr(old as u32)
    {
        // A reference to the map value: the record is too big for the stack.
        let rec: &ExecRecord = unsafe { &*rec };
        let _ = EXEC_PENDING.insert(pid as u32, rec, 0);
        let _ = EXEC_PENDING.remove(old as u32);
    }
    0
}

/// syscalls/sys_enter_execve: filename@16, argv@24.
#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    let _ = exec_enter(&ctx, sys_arg(0), sys_arg(1), None);
    0
}

/// syscalls/sys_enter_execveat: fd@16, filename@24, argv@32.
#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    let _ = exec_enter(&ctx, sys_arg(1), sys_arg(2), Some(sys_arg(0)));
    0
}

/// syscalls/sys_exit_execve: ret@16.
#[tracepoint]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    let _ = exec_exit(&ctx);
    0
}

/// syscalls/sys_exit_execveat: ret@16.
#[tracepoint]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    let _ = exec_exit(&ctx);
    0
}

#[inline(always)]
fn exec_enter(
    ctx: &TracePointContext,
    filename_off: usize,
    argv_off: usize,
    dirfd_off: Option<usize>,
) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let cfg = config();
    let rec = EXEC_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    let rec = unsafe { &mut *rec };
    rec.ret = 0;
    rec.flags = 0;
    rec.argc = 0;
    rec.args_len = 0;
    rec.dirfd = AT_FDCWD;
    if let Some(off) = dirfd_off {
        rec.dirfd = ulong(ctx, off)? as i32;
        rec.flags |= exec_flags::EXECVEAT;
    }

    let filename = ulong(ctx, filename_off)?;
    let n = unsafe {
        bpf_probe_read_user_str(
            rec.filename.as_mut_ptr() as *mut c_void,
            FILENAME_LEN as u32,
            filename as *const c_void,
        )
    };
    if n < 0 {
        rec.filename[0] = 0;
    } else if n as usize >= FILENAME_LEN && more_bytes(filename + FILENAME_LEN as u64 - 1) {
        rec.flags |= exec_flags::FILENAME_TRUNCATED;
    }

    let argv = ulong(ctx, argv_off)?;
    let max_args = if cfg.max_args == 0 || cfg.max_args > MAX_ARGS { MAX_ARGS } else { cfg.max_args };
    let mut arg_len = cfg.max_arg_len as usize;
    if !(2..=MAX_ARG_LEN).contains(&arg_len) {
        arg_len = MAX_ARG_LEN;
    }
    // The loop keeps its running offset and flags in the record (map memory),
    // not in registers: each iteration then starts from the same verifier state
    // whatever the previous ones did, and the verifier prunes instead of
    // exploring every combination of argument lengths.
    for i in 0..MAX_ARGS {
        let Ok(p) = user_ptr(argv + LONG as u64 * i as u64) else {
            set_flag(rec, exec_flags::ARGS_UNREADABLE);
            break;
        };
        if p == 0 {
            break;
        }
        let off = unsafe { core::ptr::read_volatile(&rec.args_len) } as usize;
        if i >= max_args || off >= ARGS_CAP {
            set_flag(rec, exec_flags::ARGS_TRUNCATED);
            break;
        }
        // The mask is a no-op (off < ARGS_CAP) that the verifier can see: the
        // read of at most MAX_ARG_LEN bytes stays inside ARGS_BUF_LEN.
        let at = off & (ARGS_CAP - 1);
        // The length's bound, checked again next to the call on a fresh
        // (volatile) read: LLVM spills the clamped value, and Linux 6.1's
        // verifier loses its bounds through the spill ("R2 unbounded memory
        // access" on sys_enter_execve, found by `cargo xtask vm-test`).
        let len = unsafe { core::ptr::read_volatile(&arg_len) };
        let len = if len > MAX_ARG_LEN { MAX_ARG_LEN } else { len };
        let n = unsafe {
            bpf_probe_read_user_str(
                rec.args.as_mut_ptr().add(at) as *mut c_void,
                len as u32,
                p as *const c_void,
            )
        };
        if n < 0 {
            set_flag(rec, exec_flags::ARGS_UNREADABLE);
            break;
        }
        // An empty argument: Linux before 6.8 returns 0 for it, not 1 (its
        // strncpy_from_user_nofault counted the NUL only after a non-empty
        // string; Debian's 6.1 under `cargo xtask vm-test`).
        let n = if n == 0 {
            unsafe { *rec.args.as_mut_ptr().add(at) = 0 };
            1
        } else {
            n
        };
        let n = (n as usize) & (MAX_ARG_LEN * 2 - 1);
        if n >= arg_len && more_bytes(p + arg_len as u64 - 1) {
            set_flag(rec, exec_flags::ARGS_TRUNCATED);
        }
        unsafe {
            core::ptr::write_volatile(&mut rec.args_len, (at + n) as u32);
            core::ptr::write_volatile(&mut rec.argc, i + 1);
        }
    }
    if rec.args_len as usize > ARGS_BUF_LEN {
        rec.args_len = ARGS_BUF_LEN as u32;
    }
    let tid = pid_tgid as u32;
    EXEC_PENDING.insert(tid, rec, 0).map_err(|e| e as i64)?;
    let tgid = (pid_tgid >> 32) as u32;
    if tid != tgid {
        let _ = EXEC_THREAD.insert(tgid, tid, 0);
    }
    Ok(())
}

#[inline(always)]
fn set_flag(rec: &mut ExecRecord, flag: u32) {
    unsafe { core::ptr::write_volatile(&mut rec.flags, core::ptr::read_volatile(&rec.flags) | flag) };
}

/// True when the user byte at `addr` (the one a bounded string read replaced
/// with NUL) is not the string's end: the string was cut.
#[inline(always)]
fn more_bytes(addr: u64) -> bool {
    let mut b: u8 = 0;
    let r = unsafe { bpf_probe_read_user(&mut b as *mut u8 as *mut c_void, 1, addr as *const c_void) };
    r == 0 && b != 0
}

#[inline(always)]
fn exec_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let ret = slong(ctx, SYS_RET)?;
    let tid = pid_tgid as u32;
    let (rec, pending) = match EXEC_PENDING.get_ptr_mut(tid) {
        Some(p) => (p, true),
        None => {
            // Entry not seen (the agent started mid-exec, or the map was
            // full): report what is known.
            let p = EXEC_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
            let r = unsafe { &mut *p };
            r.flags = exec_flags::ENTRY_MISSING;
            r.argc = 0;
            r.args_len = 0;
            r.dirfd = AT_FDCWD;
            r.filename[0] = 0;
            (p, false)
        }
    };
    let r = unsafe { &mut *rec };
    r.ret = ret;
    let mut args_len = r.args_len as usize;
    if args_len > ARGS_BUF_LEN {
        args_len = ARGS_BUF_LEN;
    }
    let len = ExecRecord::FIXED_LEN + args_len;
    fill_header(&mut r.hdr, kind::EXEC, len, pid_tgid);
    emit(ctx, kind::EXEC, rec as *const u8, len);
    if pending {
        let _ = EXEC_PENDING.remove(tid);
    }
    if non_leader_exec_running((pid_tgid >> 32) as u32) {
        let _ = EXEC_THREAD.remove((pid_tgid >> 32) as u32);
    }
    Ok(())
}
