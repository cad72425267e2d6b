//! PAM logins: uprobes on the system's libpam. The items of each handle
//! (service, user, remote host, tty) are tracked from pam_start, pam_set_item
//! and pam_get_user; each step (authenticate, acct_mgmt, open/close session,
//! setcred, chauthtok) is reported at its return with its result.

use crate::layout::user_ptr;
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user_str},
    },
    macros::{map, uprobe, uretprobe},
    maps::{LruHashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};
use core::ffi::c_void;
use shrike_common::{LoginRecord, PamItems, kind, pam_step};

use crate::{emit::emit, fill_header, is_agent};

/// A live PAM handle: its items and the process that started it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Handle {
    /// tgid that called pam_start: only its pam_end ends the handle. A
    /// child forked with a copy of the handle may call pam_end on its copy
    /// (su and login do, before they exec the shell) while the parent goes on
    /// with close_session and setcred on the same pointer.
    owner: u32,
    _pad: u32,
    items: PamItems,
}

/// Items per live PAM handle (pointer value), from pam_start to pam_end.
#[map]
static PAM_HANDLES: LruHashMap<u64, Handle> = LruHashMap::with_max_entries(4096, 0);

/// Arguments saved at a function's entry for its return probe, keyed by
/// `tid | function << 32` (pam_get_user runs inside pam_authenticate).
#[map]
static PAM_ARGS: LruHashMap<u64, [u64; 3]> = LruHashMap::with_max_entries(4096, 0);

#[map]
static PAM_SCRATCH: PerCpuArray<LoginRecord> = PerCpuArray::with_max_entries(1, 0);

#[map]
static ITEMS_SCRATCH: PerCpuArray<Handle> = PerCpuArray::with_max_entries(1, 0);

const FN_START: u64 = 1;
const FN_GET_USER: u64 = 2;
const FN_STEP: u64 = 3;

const PAM_SERVICE: u64 = 1;
const PAM_USER: u64 = 2;
const PAM_TTY: u64 = 3;
const PAM_RHOST: u64 = 4;

#[inline(always)]
fn key(f: u64) -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return None;
    }
    Some((pid_tgid & 0xffff_ffff) | (f << 32))
}

#[inline(always)]
fn read_str(dst: &mut [u8], src: u64) {
    if src == 0 {
        dst[0] = 0;
        return;
    }
    let r = unsafe {
        bpf_probe_read_user_str(dst.as_mut_ptr() as *mut c_void, dst.len() as u32, src as *const c_void)
    };
    if r < 0 {
        dst[0] = 0;
    }
}

// int pam_start(const char *service, const char *user, const struct pam_conv *, pam_handle_t **pamh)
#[uprobe]
pub fn pam_start(ctx: ProbeContext) -> u32 {
    if let Some(k) = key(FN_START) {
        let a: [u64; 3] =
            [ctx.arg::<u64>(0).unwrap_or(0), ctx.arg::<u64>(1).unwrap_or(0), ctx.arg::<u64>(3).unwrap_or(0)];
        let _ = PAM_ARGS.insert(k, a, 0);
    }
    0
}

// int pam_start_confdir(service, user, conv, const char *confdir, pam_handle_t **pamh)
#[uprobe]
pub fn pam_start_confdir(ctx: ProbeContext) -> u32 {
    if let Some(k) = key(FN_START) {
        let a: [u64; 3] =
            [ctx.arg::<u64>(0).unwrap_or(0), ctx.arg::<u64>(1).unwrap_or(0), ctx.arg::<u64>(4).unwrap_or(0)];
        let _ = PAM_ARGS.insert(k, a, 0);
    }
    0
}

/// Return of pam_start and pam_start_confdir.
#[uretprobe]
pub fn pam_start_ret(ctx: RetProbeContext) -> u32 {
    let Some(k) = key(FN_START) else { return 0 };
    let Some(a) = (unsafe { PAM_ARGS.get(k) }).copied() else { return 0 };
    let _ = PAM_ARGS.remove(k);
    if ctx.ret::<i64>() as i32 != 0 {
        return 0;
    }
    let Ok(pamh) = user_ptr(a[2]) else { return 0 };
    if pamh == 0 {
        return 0;
    }
    let Some(h) = ITEMS_SCRATCH.get_ptr_mut(0) else { return 0 };
    let h = unsafe { &mut *h };
    h.owner = (bpf_get_current_pid_tgid() >> 32) as u32;
    read_str(&mut h.items.service, a[0]);
    read_str(&mut h.items.user, a[1]);
    h.items.rhost[0] = 0;
    h.items.tty[0] = 0;
    let _ = PAM_HANDLES.insert(pamh, h, 0);
    0
}

// int pam_set_item(pam_handle_t *pamh, int item_type, const void *item)
#[uprobe]
pub fn pam_set_item(ctx: ProbeContext) -> u32 {
    if key(0).is_none() {
        return 0;
    }
    let pamh = ctx.arg::<u64>(0).unwrap_or(0);
    let item_type = ctx.arg::<u64>(1).unwrap_or(0) as u32 as u64;
    let item = ctx.arg::<u64>(2).unwrap_or(0);
    let Some(h) = PAM_HANDLES.get_ptr_mut(pamh) else { return 0 };
    let items = unsafe { &mut (*h).items };
    match item_type {
        PAM_SERVICE => read_str(&mut items.service, item),
        PAM_USER => read_str(&mut items.user, item),
        PAM_TTY => read_str(&mut items.tty, item),
        PAM_RHOST => read_str(&mut items.rhost, item),
        _ => {}
    }
    0
}

// int pam_get_user(pam_handle_t *pamh, const char **user, const char *prompt)
#[uprobe]
pub fn pam_get_user(ctx: ProbeContext) -> u32 {
    if let Some(k) = key(FN_GET_USER) {
        let a = [ctx.arg::<u64>(0).unwrap_or(0), ctx.arg::<u64>(1).unwrap_or(0), 0];
        let _ = PAM_ARGS.insert(k, a, 0);
    }
    0
}

#[uretprobe]
pub fn pam_get_user_ret(ctx: RetProbeContext) -> u32 {
    let Some(k) = key(FN_GET_USER) else { return 0 };
    let Some(a) = (unsafe { PAM_ARGS.get(k) }).copied() else { return 0 };
    let _ = PAM_ARGS.remove(k);
    if ctx.ret::<i64>() as i32 != 0 || a[1] == 0 {
        return 0;
    }
    let Ok(user) = user_ptr(a[1]) else { return 0 };
    if let Some(h) = PAM_HANDLES.get_ptr_mut(a[0]) {
        read_str(unsafe { &mut (*h).items.user }, user);
    }
    0
}

// int pam_end(pam_handle_t *pamh, int status)
#[uprobe]
pub fn pam_end(ctx: ProbeContext) -> u32 {
    let pamh = ctx.arg::<u64>(0).unwrap_or(0);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(h) = PAM_HANDLES.get_ptr(pamh)
        && unsafe { (*h).owner } == tgid
    {
        let _ = PAM_HANDLES.remove(pamh);
    }
    0
}

#[inline(always)]
fn step_enter(ctx: &ProbeContext, step: u32) -> u32 {
    if let Some(k) = key(FN_STEP) {
        let a = [ctx.arg::<u64>(0).unwrap_or(0), step as u64, 0];
        let _ = PAM_ARGS.insert(k, a, 0);
    }
    0
}

#[inline(always)]
fn step_exit(ctx: &RetProbeContext) -> u32 {
    let Some(k) = key(FN_STEP) else { return 0 };
    let Some(a) = (unsafe { PAM_ARGS.get(k) }).copied() else { return 0 };
    let _ = PAM_ARGS.remove(k);
    let Some(rec) = PAM_SCRATCH.get_ptr_mut(0) else { return 0 };
    let rec = unsafe { &mut *rec };
    let size = core::mem::size_of::<LoginRecord>();
    fill_header(&mut rec.hdr, kind::LOGIN, size, bpf_get_current_pid_tgid());
    rec.step = a[1] as u32;
    rec.result = ctx.ret::<i64>() as i32;
    match PAM_HANDLES.get_ptr(a[0]) {
        // A helper copy: a struct assignment would go through the small stack.
        Some(h) => unsafe {
            bpf_probe_read_kernel(
                &mut rec.items as *mut PamItems as *mut c_void,
                core::mem::size_of::<PamItems>() as u32,
                &(*h).items as *const PamItems as *const c_void,
            );
        },
        None => {
            rec.items.service[0] = 0;
            rec.items.user[0] = 0;
            rec.items.rhost[0] = 0;
            rec.items.tty[0] = 0;
        }
    }
    emit(ctx, kind::LOGIN, rec as *const LoginRecord as *const u8, size);
    0
}

macro_rules! pam_steps {
    ($($f:ident, $ret:ident, $step:expr;)*) => {$(
        #[uprobe]
        pub fn $f(ctx: ProbeContext) -> u32 {
            step_enter(&ctx, $step)
        }

        #[uretprobe]
        pub fn $ret(ctx: RetProbeContext) -> u32 {
            step_exit(&ctx)
        }
    )*};
}

pam_steps! {
    pam_authenticate, pam_authenticate_ret, pam_step::AUTHENTICATE;
    pam_acct_mgmt, pam_acct_mgmt_ret, pam_step::ACCT_MGMT;
    pam_open_session, pam_open_session_ret, pam_step::OPEN_SESSION;
    pam_close_session, pam_close_session_ret, pam_step::CLOSE_SESSION;
    pam_setcred, pam_setcred_ret, pam_step::SETCRED;
    pam_chauthtok, pam_chauthtok_ret, pam_step::CHAUTHTOK;
}
