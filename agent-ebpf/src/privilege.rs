//! Privilege changes: set*id and capset, with the ids before and after.

use crate::layout::{SYS_RET, slong, sys_arg, ulong};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated::bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use core::ffi::c_void;
use shrike_common::{PrivRecord, kind, priv_call};

use crate::{SYS_ARGS, SysArgs, emit::emit_value, fill_header, is_agent};

/// Marks saved arguments as a privilege call (the net calls use 100+).
const CALL_BASE: u32 = 200;

#[inline(always)]
fn priv_enter(ctx: &TracePointContext, call: u32, n: usize) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return 0;
    }
    let mut args: SysArgs = unsafe { core::mem::zeroed() };
    args.call = CALL_BASE + call;
    let ug = bpf_get_current_uid_gid();
    args.old_uid = ug as u32;
    args.old_gid = (ug >> 32) as u32;
    for i in 0..3 {
        if i < n {
            args.a[i] = ulong(ctx, sys_arg(i)).unwrap_or(0);
        }
    }
    let _ = SYS_ARGS.insert(pid_tgid, args, 0);
    0
}

#[inline(always)]
fn priv_exit(ctx: &TracePointContext, call: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { SYS_ARGS.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = SYS_ARGS.remove(pid_tgid);
    if args.call != CALL_BASE + call {
        return 0;
    }
    let mut rec: PrivRecord = unsafe { core::mem::zeroed() };
    fill_header(&mut rec.hdr, kind::PRIVILEGE, core::mem::size_of::<PrivRecord>(), pid_tgid);
    rec.call = call;
    rec.ret = slong(ctx, SYS_RET).unwrap_or(0) as i32;
    rec.old_uid = args.old_uid;
    rec.old_gid = args.old_gid;
    if call == priv_call::CAPSET {
        // capset(header, data): data is two __user_cap_data_struct {effective,
        // permitted, inheritable} (u32 each) for _LINUX_CAPABILITY_VERSION_3.
        let mut d = [0u32; 6];
        let r = unsafe { bpf_probe_read_user(d.as_mut_ptr() as *mut c_void, 24, args.a[1] as *const c_void) };
        if r == 0 {
            rec.has_caps = 1;
            rec.caps = [d[0], d[3], d[1], d[4], d[2], d[5]];
        }
    } else {
        rec.args = [args.a[0] as u32, args.a[1] as u32, args.a[2] as u32];
    }
    emit_value(ctx, kind::PRIVILEGE, &rec);
    0
}

macro_rules! priv_probes {
    ($($enter:ident, $exit:ident, $call:expr, $n:expr;)*) => {$(
        /// syscalls tracepoint: id arguments at @16, @24, @32; ret@16 at exit.
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            priv_enter(&ctx, $call, $n)
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            priv_exit(&ctx, $call)
        }
    )*};
}

priv_probes! {
    sys_enter_setuid, sys_exit_setuid, priv_call::SETUID, 1;
    sys_enter_setgid, sys_exit_setgid, priv_call::SETGID, 1;
    sys_enter_setreuid, sys_exit_setreuid, priv_call::SETREUID, 2;
    sys_enter_setregid, sys_exit_setregid, priv_call::SETREGID, 2;
    sys_enter_setresuid, sys_exit_setresuid, priv_call::SETRESUID, 3;
    sys_enter_setresgid, sys_exit_setresgid, priv_call::SETRESGID, 3;
    sys_enter_setfsuid, sys_exit_setfsuid, priv_call::SETFSUID, 1;
    sys_enter_setfsgid, sys_exit_setfsgid, priv_call::SETFSGID, 1;
    sys_enter_capset, sys_exit_capset, priv_call::CAPSET, 2;
}
