//! Network: outbound connect (TCP/UDP, IPv4/IPv6, with its result), accepted
//! inbound TCP connections, bind and listen. All from syscall tracepoints, plus
//! sock/inet_sock_set_state to learn that a connect is TCP and its local address.

use crate::layout::{
    SOCK_FAMILY, SOCK_NEWSTATE, SOCK_OLDSTATE, SOCK_SADDR, SOCK_SADDR_V6, SOCK_SKADDR, SOCK_SPORT, SYS_RET,
    slong, sys_arg, ulong,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use core::ffi::c_void;
use shrike_common::{SockRecord, kind, sock_flags};

use crate::{
    SYS_ARGS, SysArgs,
    emit::{emit, emit_value},
    fd_key, fill_header, is_agent,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const TCP_SYN_SENT: i32 = 2;

const CALL_SOCKET: u32 = 100;
const CALL_CONNECT: u32 = 101;
const CALL_ACCEPT: u32 = 102;
const CALL_BIND: u32 = 103;
const CALL_LISTEN: u32 = 104;

/// Local address of bound sockets, keyed by (tgid, fd).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Bound {
    family: u16,
    port: u16,
    _pad: u32,
    addr: [u8; 16],
}

#[map]
static BOUND: LruHashMap<u64, Bound> = LruHashMap::with_max_entries(16384, 0);

/// Socket type and protocol of sockets created while the agent runs, keyed by
/// (tgid, fd): `type | protocol << 16`.
#[map]
static SOCK_TYPE: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn save_args(ctx: &TracePointContext, call: u32, n: usize) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let mut args: SysArgs = unsafe { core::mem::zeroed() };
    args.call = call;
    for i in 0..3 {
        if i < n {
            args.a[i] = ulong(ctx, sys_arg(i))?;
        }
    }
    SYS_ARGS.insert(pid_tgid, args, 0).map_err(|e| e as i64)
}

/// Takes the saved arguments of `call` for the current thread, with the exit's ret.
#[inline(always)]
fn take_args(ctx: &TracePointContext, call: u32) -> Option<(u64, SysArgs, i64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let args = unsafe { SYS_ARGS.get(pid_tgid) }.copied()?;
    let _ = SYS_ARGS.remove(pid_tgid);
    if args.call != call {
        return None;
    }
    let ret = slong(ctx, SYS_RET).ok()?;
    Some((pid_tgid, args, ret))
}

/// A sockaddr_in/sockaddr_in6 read from user memory.
struct SockAddr {
    family: u16,
    port: u16,
    addr: [u8; 16],
}

#[inline(always)]
fn read_sockaddr(ptr: u64, len: u64) -> Option<SockAddr> {
    if ptr == 0 {
        return None;
    }
    // sockaddr_in: family@0 u16, port@2 (BE), addr@4 [4].
    // sockaddr_in6: family@0, port@2, flowinfo@4, addr@8 [16].
    let mut raw = [0u8; 24];
    let want = if len >= 24 { 24 } else { 16 };
    let r = unsafe { bpf_probe_read_user(raw.as_mut_ptr() as *mut c_void, want, ptr as *const c_void) };
    if r < 0 {
        return None;
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&raw[4..8]);
    } else if family == AF_INET6 && want == 24 {
        addr.copy_from_slice(&raw[8..24]);
    } else {
        return None;
    }
    Some(SockAddr { family, port, addr })
}

#[inline(always)]
fn protocol_of(key: u64) -> u16 {
    match unsafe { SOCK_TYPE.get(key) } {
        Some(v) => {
            let proto = (*v >> 16) as u16;
            if proto != 0 {
                proto
            } else if *v & 0xff == SOCK_STREAM {
                IPPROTO_TCP
            } else if *v & 0xff == SOCK_DGRAM {
                IPPROTO_UDP
            } else {
                0
            }
        }
        None => 0,
    }
}

// --- socket(family@16, type@24, protocol@32) ---

#[tracepoint]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    let _ = save_args(&ctx, CALL_SOCKET, 3);
    0
}

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    if let Some((pid_tgid, a, ret)) = take_args(&ctx, CALL_SOCKET) {
        let family = a.a[0] as u16;
        if ret >= 0 && (family == AF_INET || family == AF_INET6) {
            let v = (a.a[1] as u32 & 0xff) | ((a.a[2] as u32 & 0xffff) << 16);
            let _ = SOCK_TYPE.insert(fd_key(pid_tgid, ret as u64), v, 0);
        }
    }
    0
}

// --- connect(fd@16, uservaddr@24, addrlen@32) ---

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = save_args(&ctx, CALL_CONNECT, 3);
    0
}

/// A TCP connect between SYN_SENT and its outcome, keyed by the socket
/// (`skaddr`). Made inside connect() at CLOSE -> SYN_SENT; the outcome
/// (SYN_SENT -> ESTABLISHED or CLOSE) comes inside the syscall (blocking
/// connects, and loopback answers processed as connect() releases the socket)
/// or later, in softirq or timer context, for a connect that returned
/// EINPROGRESS: then the record waits here and is sent as the outcome.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// The connect's record, once its syscall returned EINPROGRESS.
    rec: SockRecord,
    /// PENDING_IN_SYSCALL or PENDING_WAITING.
    state: u32,
    /// 0 while in SYN_SENT, else OUTCOME | ESTABLISHED/RESET flags.
    outcome: u32,
    /// A reset came from the peer (tcp_receive_reset).
    reset: u32,
    lport: u16,
    _pad: u16,
    outcome_ns: u64,
    laddr: [u8; 16],
}

const PENDING_IN_SYSCALL: u32 = 0;
const PENDING_WAITING: u32 = 1;
const TCP_ESTABLISHED: i32 = 1;
const TCP_CLOSE: i32 = 7;
const EINPROGRESS: i64 = -115;

/// Bounded: a socket whose outcome never comes (its entry evicted) only loses
/// its outcome record.
#[map]
static CONNECTING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(8192, 0);

/// sock/inet_sock_set_state: skaddr@8, oldstate@16, newstate@20, sport@24,
/// dport@26, family@28, protocol@30, saddr@32 [4], daddr@36 [4],
/// saddr_v6@40 [16], daddr_v6@56 [16]. CLOSE -> SYN_SENT runs inside connect()
/// in the caller's context: it proves the socket is TCP and gives its local
/// address (not yet its port: tcp_v4_connect picks it after the transition).
/// Leaving SYN_SENT gives the outcome and the local port.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

#[inline(always)]
fn read_local(ctx: &TracePointContext, family: u16, laddr: &mut [u8; 16]) -> Result<(), i64> {
    if family == AF_INET {
        let a: [u8; 4] = unsafe { ctx.read_at(SOCK_SADDR)? };
        laddr[..4].copy_from_slice(&a);
    } else {
        *laddr = unsafe { ctx.read_at(SOCK_SADDR_V6)? };
    }
    Ok(())
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let oldstate: i32 = unsafe { ctx.read_at(SOCK_OLDSTATE)? };
    let newstate: i32 = unsafe { ctx.read_at(SOCK_NEWSTATE)? };
    if newstate == TCP_SYN_SENT {
        let pid_tgid = bpf_get_current_pid_tgid();
        let Some(args) = SYS_ARGS.get_ptr_mut(pid_tgid) else {
            return Ok(());
        };
        let args = unsafe { &mut *args };
        if args.call != CALL_CONNECT {
            return Ok(());
        }
        let family: u16 = unsafe { ctx.read_at(SOCK_FAMILY)? };
        args.flags |= sock_flags::TCP_CONFIRMED;
        args.lport = unsafe { ctx.read_at(SOCK_SPORT)? };
        read_local(ctx, family, &mut args.laddr)?;
        args.sk = ulong(ctx, SOCK_SKADDR)?;
        let mut p: Pending = unsafe { core::mem::zeroed() };
        p.state = PENDING_IN_SYSCALL;
        let _ = CONNECTING.insert(args.sk, p, 0);
        return Ok(());
    }
    if oldstate != TCP_SYN_SENT || (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE) {
        return Ok(());
    }
    let sk = ulong(ctx, SOCK_SKADDR)?;
    let Some(p) = CONNECTING.get_ptr_mut(sk) else {
        return Ok(());
    };
    let p = unsafe { &mut *p };
    let family: u16 = unsafe { ctx.read_at(SOCK_FAMILY)? };
    p.lport = unsafe { ctx.read_at(SOCK_SPORT)? };
    read_local(ctx, family, &mut p.laddr)?;
    p.outcome_ns = unsafe { bpf_ktime_get_ns() };
    p.outcome = sock_flags::OUTCOME;
    if newstate == TCP_ESTABLISHED {
        p.outcome |= sock_flags::ESTABLISHED;
    } else if p.reset != 0 {
        p.outcome |= sock_flags::RESET;
    }
    if p.state == PENDING_WAITING {
        // The syscall is over (softirq or timer context here): the record
        // carries the header of the task that called connect().
        finish_outcome(p);
        emit(
            ctx,
            kind::CONNECT,
            &p.rec as *const SockRecord as *const u8,
            core::mem::size_of::<SockRecord>(),
        );
        let _ = CONNECTING.remove(sk);
    }
    Ok(())
}

/// Turns the waiting in_progress record into its outcome record.
#[inline(always)]
fn finish_outcome(p: &mut Pending) {
    p.rec.hdr.ktime_ns = p.outcome_ns;
    p.rec.flags |= p.outcome | sock_flags::LOCAL_KNOWN;
    p.rec.lport = p.lport;
    p.rec.laddr = p.laddr;
}

/// tcp/tcp_receive_reset: skaddr@8. Runs in tcp_reset() just before the
/// socket leaves SYN_SENT for CLOSE: the connect was refused.
#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    if let Ok(sk) = ulong(&ctx, SOCK_SKADDR)
        && let Some(p) = CONNECTING.get_ptr_mut(sk)
    {
        unsafe { (*p).reset = 1 };
    }
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, a, ret)) = take_args(&ctx, CALL_CONNECT) else {
        return 0;
    };
    let Some(sa) = read_sockaddr(a.a[1], a.a[2]) else {
        if a.sk != 0 {
            let _ = CONNECTING.remove(a.sk);
        }
        return 0;
    };
    let mut rec: SockRecord = unsafe { core::mem::zeroed() };
    fill_header(&mut rec.hdr, kind::CONNECT, core::mem::size_of::<SockRecord>(), pid_tgid);
    rec.ret = ret;
    rec.fd = a.a[0] as i32;
    rec.family = sa.family;
    rec.rport = sa.port;
    rec.raddr = sa.addr;
    rec.flags = sock_flags::REMOTE_KNOWN;
    if a.flags & sock_flags::TCP_CONFIRMED == 0 {
        rec.protocol = protocol_of(fd_key(pid_tgid, a.a[0]));
        emit_value(&ctx, kind::CONNECT, &rec);
        return 0;
    }
    rec.protocol = IPPROTO_TCP;
    rec.flags |= sock_flags::TCP_CONFIRMED | sock_flags::LOCAL_KNOWN;
    rec.lport = a.lport;
    rec.laddr = a.laddr;
    let Some(p) = CONNECTING.get_ptr_mut(a.sk) else {
        emit_value(&ctx, kind::CONNECT, &rec);
        return 0;
    };
    let p = unsafe { &mut *p };
    if p.outcome != 0 {
        // Left SYN_SENT during the syscall: the local port is known.
        rec.lport = p.lport;
        rec.laddr = p.laddr;
    }
    emit_value(&ctx, kind::CONNECT, &rec);
    if ret != EINPROGRESS {
        // The syscall's result is the outcome (blocking connect).
        let _ = CONNECTING.remove(a.sk);
        return 0;
    }
    p.rec = rec;
    if p.outcome != 0 {
        // Stamped with the syscall's exit, not the earlier transition: the
        // outcome never sorts before the in_progress event (perf readers
        // order by time).
        p.outcome_ns = rec.hdr.ktime_ns;
        finish_outcome(p);
        emit(
            &ctx,
            kind::CONNECT,
            &p.rec as *const SockRecord as *const u8,
            core::mem::size_of::<SockRecord>(),
        );
        let _ = CONNECTING.remove(a.sk);
    } else {
        p.state = PENDING_WAITING;
    }
    0
}

// --- bind(fd@16, umyaddr@24, addrlen@32) ---

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    let _ = save_args(&ctx, CALL_BIND, 3);
    0
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, a, ret)) = take_args(&ctx, CALL_BIND) else {
        return 0;
    };
    if ret != 0 {
        return 0;
    }
    let Some(sa) = read_sockaddr(a.a[1], a.a[2]) else {
        return 0;
    };
    let key = fd_key(pid_tgid, a.a[0]);
    let bound = Bound { family: sa.family, port: sa.port, _pad: 0, addr: sa.addr };
    let _ = BOUND.insert(key, bound, 0);
    let mut rec: SockRecord = unsafe { core::mem::zeroed() };
    fill_header(&mut rec.hdr, kind::BIND, core::mem::size_of::<SockRecord>(), pid_tgid);
    rec.fd = a.a[0] as i32;
    rec.family = sa.family;
    rec.protocol = protocol_of(key);
    rec.lport = sa.port;
    rec.laddr = sa.addr;
    rec.flags = sock_flags::LOCAL_KNOWN;
    emit_value(&ctx, kind::BIND, &rec);
    0
}

// --- listen(fd@16, backlog@24) ---

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    let _ = save_args(&ctx, CALL_LISTEN, 1);
    0
}

#[tracepoint]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, a, ret)) = take_args(&ctx, CALL_LISTEN) else {
        return 0;
    };
    if ret != 0 {
        return 0;
    }
    let key = fd_key(pid_tgid, a.a[0]);
    let mut rec: SockRecord = unsafe { core::mem::zeroed() };
    fill_header(&mut rec.hdr, kind::LISTEN, core::mem::size_of::<SockRecord>(), pid_tgid);
    rec.fd = a.a[0] as i32;
    rec.protocol = IPPROTO_TCP;
    if let Some(b) = unsafe { BOUND.get(key) } {
        rec.family = b.family;
        rec.lport = b.port;
        rec.laddr = b.addr;
        rec.flags = sock_flags::LOCAL_KNOWN;
    }
    emit_value(&ctx, kind::LISTEN, &rec);
    0
}

// --- accept(fd@16, upeer_sockaddr@24, upeer_addrlen@32) and accept4 (+flags@40) ---

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    let _ = save_args(&ctx, CALL_ACCEPT, 3);
    0
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    let _ = save_args(&ctx, CALL_ACCEPT, 3);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    accept_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    accept_exit(&ctx);
    0
}

#[inline(always)]
fn accept_exit(ctx: &TracePointContext) {
    let Some((pid_tgid, a, ret)) = take_args(ctx, CALL_ACCEPT) else {
        return;
    };
    // Failed accepts (EAGAIN on non-blocking servers) are not connections.
    if ret < 0 {
        return;
    }
    let mut rec: SockRecord = unsafe { core::mem::zeroed() };
    fill_header(&mut rec.hdr, kind::ACCEPT, core::mem::size_of::<SockRecord>(), pid_tgid);
    rec.ret = ret;
    rec.fd = ret as i32;
    rec.protocol = IPPROTO_TCP;
    if let Some(b) = unsafe { BOUND.get(fd_key(pid_tgid, a.a[0])) } {
        rec.family = b.family;
        rec.lport = b.port;
        rec.laddr = b.addr;
        rec.flags |= sock_flags::LOCAL_KNOWN;
    }
    // The kernel wrote the peer's address and its length into user memory.
    if a.a[1] != 0 && a.a[2] != 0 {
        let mut alen: u32 = 0;
        let r =
            unsafe { bpf_probe_read_user(&mut alen as *mut u32 as *mut c_void, 4, a.a[2] as *const c_void) };
        if r == 0
            && let Some(sa) = read_sockaddr(a.a[1], alen as u64)
        {
            rec.family = sa.family;
            rec.rport = sa.port;
            rec.raddr = sa.addr;
            rec.flags |= sock_flags::REMOTE_KNOWN;
        }
    }
    if rec.family == 0 {
        // Neither the listener's bind (made before the agent started) nor
        // the peer (accept(fd, NULL, NULL)) was seen: an inet listener or a
        // unix one. The agent tells them apart from /proc and drops unix
        // accepts (not connections it reports).
        rec.flags |= sock_flags::FAMILY_UNKNOWN;
        rec.protocol = 0;
        emit_value(ctx, kind::ACCEPT, &rec);
        return;
    }
    let v = SOCK_STREAM | ((IPPROTO_TCP as u32) << 16);
    let _ = SOCK_TYPE.insert(fd_key(pid_tgid, ret as u64), v, 0);
    emit_value(ctx, kind::ACCEPT, &rec);
}
