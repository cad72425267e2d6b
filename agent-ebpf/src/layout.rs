//! The tracepoint records' `long` and pointer fields, and user-space
//! pointers, read at the kernel's word size ([`LONG`]: 8 bytes on 64-bit
//! kernels, 4 on armhf). The offsets are in `shrike_common::layout`, shared
//! with the agent's format check.

use aya_ebpf::{EbpfContext, helpers::generated::bpf_probe_read_user, programs::TracePointContext};
use core::ffi::c_void;
pub use shrike_common::layout::*;

/// The record's `long` (zero-extended) at `off`, loaded directly from the
/// context (the verifier checks the offset against the record's size when
/// the program is attached; [`ulong`]'s `read_at` calls
/// bpf_probe_read_kernel, tens of ns a field: the file hooks, on every
/// file syscall, load directly). `off` must be a constant.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, off: usize) -> u64 {
    let at = unsafe { (ctx.as_ptr() as *const u8).add(off) };
    if LONG == 8 {
        unsafe { core::ptr::read(at as *const u64) }
    } else {
        u64::from(unsafe { core::ptr::read(at as *const u32) })
    }
}

/// A `sys_exit_*` record's `long ret`, sign-extended (loaded as [`arg`]).
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    let at = unsafe { (ctx.as_ptr() as *const u8).add(SYS_RET) };
    if LONG == 8 {
        unsafe { core::ptr::read(at as *const i64) }
    } else {
        i64::from(unsafe { core::ptr::read(at as *const i32) })
    }
}

/// A `syscalls/` record's `int __syscall_nr` (loaded as [`arg`]).
#[inline(always)]
pub fn syscall_nr(ctx: &TracePointContext) -> u32 {
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(SYS_NR) as *const u32) }
}

/// An `unsigned long` or pointer field of the record, zero-extended
/// (bpf_probe_read_kernel).
#[inline(always)]
pub fn ulong(ctx: &TracePointContext, off: usize) -> Result<u64, i64> {
    if LONG == 8 {
        unsafe { ctx.read_at::<u64>(off) }.map_err(i64::from)
    } else {
        unsafe { ctx.read_at::<u32>(off) }.map(u64::from).map_err(i64::from)
    }
}

/// A `long` field of the record (a syscall's ret, an exit code), sign-extended.
#[inline(always)]
pub fn slong(ctx: &TracePointContext, off: usize) -> Result<i64, i64> {
    if LONG == 8 {
        unsafe { ctx.read_at::<i64>(off) }.map_err(i64::from)
    } else {
        unsafe { ctx.read_at::<i32>(off) }.map(i64::from).map_err(i64::from)
    }
}

/// The user-space pointer stored at `addr` (`argv[i]`, a `pam_handle_t **`),
/// zero-extended: the tasks' word size is the kernel's (compat tasks on a
/// 64-bit kernel are not supported).
#[inline(always)]
pub fn user_ptr(addr: u64) -> Result<u64, i64> {
    let mut p: u64 = 0;
    // Little-endian: LONG bytes into a zeroed u64 zero-extend.
    let r =
        unsafe { bpf_probe_read_user(&mut p as *mut u64 as *mut c_void, LONG as u32, addr as *const c_void) };
    if r < 0 { Err(r) } else { Ok(p) }
}
