//! Fork and exit.

use crate::layout::{
    DELIVER_SA_HANDLER, DELIVER_SIG, GENERATE_PID, GENERATE_RESULT, GENERATE_SIG, NEWTASK_CLONE_FLAGS,
    NEWTASK_PID, slong, sys_arg, ulong,
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{Array, LruHashMap},
    programs::TracePointContext,
};
use shrike_common::{ExitRecord, ForkRecord, kind};

use crate::{emit::emit_value, fill_header, is_agent};

const CLONE_THREAD: u64 = 0x0001_0000;

/// Exit status per tgid, from exit_group/exit or a fatal signal, until the
/// leader's sched_process_exit reports it: the statuses that do not fit in
/// [`EXIT_SLOTS`].
#[map]
static EXIT_STATUS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// The fast path of [`EXIT_STATUS`]: direct-mapped by tgid (slot `tgid %
/// EXIT_SLOT_COUNT`), `tgid << 32 | SLOT_USED | status`. An array slot is one
/// memory access where an LRU insert cost about a microsecond in exit_group
/// (BENCHMARKS.md, "Kernel cost, round 2"). A slot that holds another
/// process's status moves it to [`EXIT_STATUS`] before it is reused.
#[map]
static EXIT_SLOTS: Array<u64> = Array::with_max_entries(EXIT_SLOT_COUNT, 0);
const EXIT_SLOT_COUNT: u32 = 32768;
const SLOT_USED: u64 = 1 << 31;

/// Records `status` for `tgid`; with `first`, only when none is recorded yet
/// (the first cause of an exit wins).
#[inline(always)]
fn status_set(tgid: u32, status: u32, first: bool) {
    let Some(slot) = EXIT_SLOTS.get_ptr_mut(tgid % EXIT_SLOT_COUNT) else { return };
    let v = unsafe { *slot };
    let used = v & SLOT_USED != 0;
    if used && (v >> 32) as u32 == tgid {
        if first {
            return;
        }
    } else {
        if first && unsafe { EXIT_STATUS.get(tgid) }.is_some() {
            return;
        }
        if used {
            let _ = EXIT_STATUS.insert((v >> 32) as u32, (v & 0xffff) as u32, 0);
        }
    }
    unsafe { *slot = (u64::from(tgid) << 32) | SLOT_USED | u64::from(status & 0xffff) };
}

/// The status recorded for `tgid`; with `take`, forgets it.
#[inline(always)]
fn status_get(tgid: u32, take: bool) -> Option<u32> {
    if let Some(slot) = EXIT_SLOTS.get_ptr_mut(tgid % EXIT_SLOT_COUNT) {
        let v = unsafe { *slot };
        if v & SLOT_USED != 0 && (v >> 32) as u32 == tgid {
            if take {
                unsafe { *slot = 0 };
            }
            return Some((v & 0xffff) as u32);
        }
    }
    let status = unsafe { EXIT_STATUS.get(tgid) }.copied();
    if take && status.is_some() {
        let _ = EXIT_STATUS.remove(tgid);
    }
    status
}

/// task/task_newtask: pid@8 (i32), comm@12 [16], clone_flags@32 (u64).
/// Runs in the parent's context; threads (CLONE_THREAD) are not processes.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = try_task_newtask(&ctx);
    0
}

fn try_task_newtask(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let flags = ulong(ctx, NEWTASK_CLONE_FLAGS)?;
    let child: i32 = unsafe { ctx.read_at(NEWTASK_PID)? };
    // Also for the agent's children: they are reported.
    crate::file::on_new_task((pid_tgid >> 32) as u32, child as u32, flags);
    if is_agent((pid_tgid >> 32) as u32) || flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    let mut rec: ForkRecord = unsafe { core::mem::zeroed() };
    fill_header(&mut rec.hdr, kind::FORK, core::mem::size_of::<ForkRecord>(), pid_tgid);
    rec.child_pid = child as u32;
    rec.clone_flags = flags as u32;
    emit_value(ctx, kind::FORK, &rec);
    Ok(())
}

/// syscalls/sys_enter_exit_group: error_code@16.
#[tracepoint]
pub fn sys_enter_exit_group(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Ok(code) = slong(&ctx, sys_arg(0)) {
        let status = ((code as u32) & 0xff) << 8;
        status_set((pid_tgid >> 32) as u32, status, false);
    }
    0
}

/// syscalls/sys_enter_exit: error_code@16. Only the leader's exit() matters
/// (a thread's exit() does not end the process).
#[tracepoint]
pub fn sys_enter_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return 0;
    }
    if let Ok(code) = slong(&ctx, sys_arg(0)) {
        let status = ((code as u32) & 0xff) << 8;
        status_set((pid_tgid >> 32) as u32, status, false);
    }
    0
}

/// Signals whose default action ends the process (signal(7): Term and Core).
const FATAL_DEFAULT: u64 = (1 << 1) // SIGHUP
    | (1 << 2) // SIGINT
    | (1 << 3) // SIGQUIT
    | (1 << 4) // SIGILL
    | (1 << 5) // SIGTRAP
    | (1 << 6) // SIGABRT
    | (1 << 7) // SIGBUS
    | (1 << 8) // SIGFPE
    | (1 << 9) // SIGKILL
    | (1 << 10) // SIGUSR1
    | (1 << 11) // SIGSEGV
    | (1 << 12) // SIGUSR2
    | (1 << 13) // SIGPIPE
    | (1 << 14) // SIGALRM
    | (1 << 15) // SIGTERM
    | (1 << 16) // SIGSTKFLT
    | (1 << 24) // SIGXCPU
    | (1 << 25) // SIGXFSZ
    | (1 << 26) // SIGVTALRM
    | (1 << 27) // SIGPROF
    | (1 << 29) // SIGIO
    | (1 << 30) // SIGPWR
    | (1 << 31); // SIGSYS

const SIGKILL: i32 = 9;

/// Fatal-by-default signals sent to a task (by its pid) and not yet delivered.
/// When such a signal ("Term" action: SIGTERM, SIGINT, SIGHUP, ...) is fatal,
/// the sender's complete_signal() starts the group exit at once and queues
/// SIGKILL to every thread: signal_deliver then only sees SIGKILL, while the
/// process dies of the signal sent (its group_exit_code). That signal is
/// taken from here.
#[map]
static FATAL_SENT: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// signal/signal_generate: sig@8 (i32), pid@36 (i32, the target task),
/// result@44 (i32, 0 = TRACE_SIGNAL_DELIVERED). Runs in the sender's context
/// once the kernel has decided; a signal to a process already dying is
/// reported ignored, so the first fatal one stays.
#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let Ok(sig) = (unsafe { ctx.read_at::<i32>(GENERATE_SIG) }) else {
        return 0;
    };
    let Ok(pid) = (unsafe { ctx.read_at::<i32>(GENERATE_PID) }) else {
        return 0;
    };
    let Ok(result) = (unsafe { ctx.read_at::<i32>(GENERATE_RESULT) }) else {
        return 0;
    };
    if result == 0 && (1..32).contains(&sig) && FATAL_DEFAULT & (1u64 << sig) != 0 {
        let _ = FATAL_SENT.insert(pid as u32, sig as u32, 0);
    }
    0
}

/// signal/signal_deliver: sig@8 (i32), sa_handler@24 (u64). A signal with the
/// default handler whose default action is fatal ends the process with it. The
/// first cause wins (exit_group's SIGKILL to the other threads must not
/// overwrite the exit code).
#[tracepoint]
pub fn signal_deliver(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let Ok(sig) = (unsafe { ctx.read_at::<i32>(DELIVER_SIG) }) else {
        return 0;
    };
    // Most signals delivered are not fatal by default (SIGCHLD to every
    // parent of an exiting child): nothing to record, and no FATAL_SENT entry
    // can be this signal (only fatal-by-default ones are stored).
    if !(1..32).contains(&sig) || FATAL_DEFAULT & (1u64 << sig) == 0 {
        return 0;
    }
    let Ok(handler) = ulong(&ctx, DELIVER_SA_HANDLER) else {
        return 0;
    };
    let by_tgid = unsafe { FATAL_SENT.get(tgid) }.copied();
    let by_tid = if tid != tgid { unsafe { FATAL_SENT.get(tid) }.copied() } else { None };
    if handler == 0 && (1..32).contains(&sig) && FATAL_DEFAULT & (1u64 << sig) != 0 {
        let mut status = sig as u32;
        if sig == SIGKILL {
            // The SIGKILL of a group exit: the signal actually sent, if seen.
            if let Some(s) = by_tgid.or(by_tid) {
                status = s;
            }
        }
        status_set(tgid, status, true);
    }
    // That signal is delivered now (to a handler, or fatally).
    let done = |s: u32| sig == SIGKILL || s == sig as u32;
    if by_tgid.is_some_and(done) {
        let _ = FATAL_SENT.remove(tgid);
    }
    if by_tid.is_some_and(done) {
        let _ = FATAL_SENT.remove(tid);
    }
    0
}

/// sched/sched_process_exit: comm@8, pid@24. Reported once per process, when
/// its thread group leader exits.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 || is_agent(tgid) {
        return 0;
    }
    if crate::exec::non_leader_exec_running(tgid) {
        // de_thread(): another thread's exec ends the old leader with SIGKILL
        // and takes over its pid; the process goes on (unless it was really
        // ending: exit_group's status, or a signal other than that SIGKILL).
        let status = status_get(tgid, false);
        if status.is_none() || status == Some(SIGKILL as u32) {
            let _ = status_get(tgid, true);
            return 0;
        }
    }
    let mut rec: ExitRecord = unsafe { core::mem::zeroed() };
    fill_header(&mut rec.hdr, kind::EXIT, core::mem::size_of::<ExitRecord>(), pid_tgid);
    if let Some(status) = status_get(tgid, true) {
        rec.status = status;
        rec.has_status = 1;
    }
    // A lookup first: deleting a key that is not there (most exits) still
    // takes the bucket's lock.
    if unsafe { FATAL_SENT.get(tgid) }.is_some() {
        let _ = FATAL_SENT.remove(tgid);
    }
    emit_value(&ctx, kind::EXIT, &rec);
    0
}
