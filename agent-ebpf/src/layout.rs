//! The tracepoint records' `long` and pointer fields, and user-space
//! pointers, read at the kernel's word size ([`LONG`]: 8 bytes on 64-bit
//! kernels, 4 on armhf). The offsets are in `shrike_common::layout`, shared
//! with the agent's format check.

use aya_ebpf::{helpers::generated::bpf_probe_read_user, programs::TracePointContext};
use core::ffi::c_void;
pub use shrike_common::layout::*;

/// An `unsigned long` or pointer field of the record, zero-extended.
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
