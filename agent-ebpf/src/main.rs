//! Shrike's kernel programs.
//!
//! Only hooks that work on vendor gateway kernels: syscall/sched/sock tracepoints
//! with stable formats, and uprobes on libpam. No kprobes, no fentry, no CO-RE.
//! Each hook names the tracepoint format it relies on; the agent checks these
//! offsets against `/sys/kernel/tracing/events/<cat>/<name>/format` before it
//! attaches (agent/src/probes/compat.rs) and skips a hook whose format differs.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)] // BPF atomic adds (file.rs: `count_add`)

mod emit;
mod exec;
mod file;
mod layout;
mod net;
mod pam;
mod privilege;
mod process;

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_uid_gid, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use shrike_common::{Config, Header, kind};

/// Agent settings, written once by the agent before it attaches anything.
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Records that could not be written to the transport, per kind (the kernel-side
/// loss counter the agent reports).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::MAX, 0);

/// Records written to the transport, per kind.
#[map]
static SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::MAX, 0);

/// Syscall arguments saved at entry for the exit hook, keyed by pid_tgid.
#[map]
static SYS_ARGS: LruHashMap<u64, SysArgs> = LruHashMap::with_max_entries(16384, 0);

/// Arguments of a syscall in flight (private to the kernel side).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SysArgs {
    pub call: u32,
    pub flags: u32,
    pub old_uid: u32,
    pub old_gid: u32,
    pub a: [u64; 3],
    pub lport: u16,
    pub _pad: [u16; 3],
    pub laddr: [u8; 16],
    /// connect: the socket (`skaddr` of sock/inet_sock_set_state) once the
    /// kernel moved it to SYN_SENT, else 0.
    pub sk: u64,
}

#[inline(always)]
pub fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

/// True when the current task belongs to the agent itself.
#[inline(always)]
pub fn is_agent(tgid: u32) -> bool {
    match CONFIG.get(0) {
        Some(c) => c.agent_tgid == tgid,
        None => false,
    }
}

#[inline(always)]
pub fn fill_header(h: &mut Header, kind: u32, size: usize, pid_tgid: u64) {
    h.kind = kind;
    h.size = size as u32;
    h.ktime_ns = unsafe { bpf_ktime_get_ns() };
    h.pid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    let ug = bpf_get_current_uid_gid();
    h.uid = ug as u32;
    h.gid = (ug >> 32) as u32;
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// `(tgid << 32) | fd`: the key of per-socket maps.
#[inline(always)]
pub fn fd_key(pid_tgid: u64, fd: u64) -> u64 {
    (pid_tgid & 0xffff_ffff_0000_0000) | (fd & 0xffff_ffff)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
