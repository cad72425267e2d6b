//! The transport: a BPF ring buffer, or a perf event array on kernels without one
//! (feature `perf`; the agent embeds both objects). Every record either reaches
//! the transport (counted in `SENT`) or is counted in `LOST`, per kind.

use aya_ebpf::{EbpfContext, macros::map};
use core::ffi::c_void;

use crate::{LOST, SENT};

#[cfg(not(feature = "perf"))]
#[map]
pub static EVENTS: aya_ebpf::maps::RingBuf = aya_ebpf::maps::RingBuf::with_byte_size(1 << 24, 0);

#[cfg(feature = "perf")]
#[map]
pub static EVENTS: aya_ebpf::maps::PerfEventByteArray = aya_ebpf::maps::PerfEventByteArray::new(0);

/// Writes `len` bytes at `data` (a stack value or map value) as one record.
#[inline(always)]
pub fn emit<C: EbpfContext>(ctx: &C, kind: u32, data: *const u8, len: usize) {
    let map = core::ptr::addr_of!(EVENTS) as *mut c_void;
    #[cfg(not(feature = "perf"))]
    let ret = {
        let _ = ctx;
        let flags = wake_flags(kind);
        unsafe {
            aya_ebpf::helpers::generated::bpf_ringbuf_output(map, data as *mut c_void, len as u64, flags)
        }
    };
    #[cfg(feature = "perf")]
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_perf_event_output(
            ctx.as_ptr(),
            map,
            aya_ebpf::bindings::BPF_F_CURRENT_CPU,
            data as *mut c_void,
            len as u64,
        )
    };
    let counters = if ret < 0 { &LOST } else { &SENT };
    if let Some(c) = counters.get_ptr_mut(kind) {
        unsafe { *c += 1 };
    }
}

/// Ring buffer wakeup policy (see `Config::wake_kinds`): wake the reader for
/// urgent kinds and when enough data waits; otherwise let its timer collect.
#[cfg(not(feature = "perf"))]
#[inline(always)]
fn wake_flags(kind: u32) -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    let Some(cfg) = crate::CONFIG.get(0) else { return 0 };
    if cfg.wake_kinds & (1 << (kind & 31)) != 0 {
        return 0; // the kernel's adaptive wakeup
    }
    let avail = unsafe {
        aya_ebpf::helpers::generated::bpf_ringbuf_query(
            core::ptr::addr_of!(EVENTS) as *mut c_void,
            BPF_RB_AVAIL_DATA as u64,
        )
    };
    if avail >= cfg.wake_bytes as u64 { BPF_RB_FORCE_WAKEUP as u64 } else { BPF_RB_NO_WAKEUP as u64 }
}

/// Emits a fixed-size record that lives on the stack.
#[inline(always)]
pub fn emit_value<C: EbpfContext, T>(ctx: &C, kind: u32, value: &T) {
    emit(ctx, kind, value as *const T as *const u8, core::mem::size_of::<T>());
}
