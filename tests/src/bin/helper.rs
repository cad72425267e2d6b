//! `shrike-test-helper`: performs known actions, named on its command line, so
//! the integration tests can assert on the exact events the kernel reports.
//!
//! The arguments are a sequence of operations, run in order; each prints one
//! line `op key=value ...` on stdout (flushed) that the tests parse. After the
//! last operation the helper exits 0. Operations:
//!
//! - `exit CODE`: exit now with CODE (the rest of argv is not parsed, so markers
//!   and test arguments may follow).
//! - `sleep SECS`: print `sleeping`, then sleep (to be killed by a signal).
//! - `trap SIG`: handle signal SIG (the handler does nothing).
//! - `fork-exit CODE`: fork a child that `_exit(CODE)`s; wait for it.
//! - `fork-exit-far CODE`: the same, the child exiting on another CPU.
//! - `fork-exit-cross N CODE`: N `fork-exit-far`, half forked on CPU 0, half on CPU 1.
//! - `exec PATH [ARGS...]`: execv(PATH, [PATH, ARGS...]) (consumes the rest of
//!   argv); prints the errno when it fails and exits 100.
//! - `execveat DIR NAME [ARGS...]`: execveat(open(DIR), NAME, [NAME, ARGS...]).
//! - `thread-exec PATH [ARGS...]`: `exec` from a second thread.
//! - `setuid ID`, `setgid ID`, `setresuid R E S`, `setresgid R E S`: the raw
//!   syscalls (`-1` = unchanged).
//! - `connect-tcp ADDR PORT`, `connect-udp ADDR PORT`: one blocking connect.
//! - `connect-tcp-nb ADDR PORT`: a non-blocking connect (curl's way): prints
//!   its result, waits for the outcome (poll, SO_ERROR) and prints it.
//! - `listen-full ADDR PORT`: a listener with backlog 0 whose queue one
//!   connection fills: later SYNs to it are dropped (kept until exit).
//! - `listen ADDR PORT`: bind, listen, print the port, accept one connection.
//! - `listen-null ADDR PORT`: the same, waiting in poll(2), with
//!   accept(fd, NULL, NULL) (no peer address for the kernel to read); keeps
//!   the connection until the peer closes it.
//! - `spawn-many N THREADS PROG ARG`: run `PROG ARG` N times over THREADS
//!   threads, waiting for each.
//! - `seccomp FILE`: from now on (and across `exec`), only the system calls
//!   whose numbers FILE lists (one a line), of the native architecture, are
//!   allowed; any other kills the process with SIGSYS (the deployment test
//!   runs the agent under the unit's SystemCallFilter= this way).
//! - `bpf-progs PID`: one line per BPF program PID holds (found by the
//!   `prog_id` of its fds' fdinfo, read with BPF_OBJ_GET_INFO_BY_FD):
//!   `bpf-prog id= name= xlated_insns= jited_bytes= verified_insns=`
//!   (verified_insns, the verifier's count, is 0 before Linux 5.16).

use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    os::unix::process::ExitStatusExt,
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn die(msg: &str) -> ! {
    eprintln!("shrike-test-helper: {msg}");
    std::process::exit(99);
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

struct Args {
    items: Vec<String>,
    pos: usize,
}

impl Args {
    fn next(&mut self, what: &str) -> String {
        let v = self.items.get(self.pos).cloned().unwrap_or_else(|| die(&format!("missing {what}")));
        self.pos += 1;
        v
    }

    fn num<T: std::str::FromStr>(&mut self, what: &str) -> T {
        let s = self.next(what);
        s.parse().unwrap_or_else(|_| die(&format!("bad {what}: {s:?}")))
    }

    /// An id argument: `-1` is passed as (uid_t)-1, "unchanged".
    fn id(&mut self, what: &str) -> libc::c_long {
        let v: i64 = self.num(what);
        v as libc::c_long
    }

    fn rest(&mut self) -> Vec<String> {
        let r = self.items[self.pos..].to_vec();
        self.pos = self.items.len();
        r
    }
}

fn main() {
    // The signals the tests kill the helper with take their default action,
    // whatever the test runner inherited (`nohup` ignores SIGHUP, and an
    // ignored signal stays ignored across exec: the helper would live on).
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: resetting a disposition to its default, before any thread.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // Lossy: the kernel matrix passes non-UTF-8 arguments after `exit CODE`.
    let mut args = Args {
        items: std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect(),
        pos: 0,
    };
    while args.pos < args.items.len() {
        let op = args.next("operation");
        match op.as_str() {
            "exit" => std::process::exit(args.num("exit code")),
            "sleep" => {
                let secs: u64 = args.num("seconds");
                say("sleeping");
                std::thread::sleep(Duration::from_secs(secs));
            }
            "trap" => {
                let sig: i32 = args.num("signal");
                // SAFETY: installs a handler that does nothing (async-signal-safe).
                let old = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
                if old == libc::SIG_ERR {
                    die(&format!("signal({sig}): errno {}", errno()));
                }
                say(&format!("trap sig={sig}"));
            }
            "fork-exit" => fork_exit(args.num("exit code"), false),
            "fork-exit-cross" => {
                let n: usize = args.num("count");
                let code = args.num("exit code");
                // Half the children forked on CPU 0 exit on CPU 1, the other
                // half the other way round.
                for half in 0..2 {
                    pin(half);
                    for _ in 0..n / 2 {
                        fork_exit(code, true);
                    }
                }
            }
            "exec" => exec(args.next("path"), args.rest()),
            "seccomp" => seccomp(&args.next("file of syscall numbers")),
            "execveat" => {
                let dir = args.next("directory");
                execveat(dir, args.next("name"), args.rest())
            }
            "thread-exec" => {
                let (path, rest) = (args.next("path"), args.rest());
                // The exec happens in a second thread: the kernel makes that
                // thread the leader (its tid becomes the pid) as it succeeds.
                let t = std::thread::spawn(move || exec(path, rest));
                let _ = t.join();
                std::process::exit(101);
            }
            "setuid" => id_call("setuid", SYS_SETUID, &[args.id("uid")]),
            "setgid" => id_call("setgid", SYS_SETGID, &[args.id("gid")]),
            "setresuid" => {
                let ids = [args.id("ruid"), args.id("euid"), args.id("suid")];
                id_call("setresuid", SYS_SETRESUID, &ids)
            }
            "setresgid" => {
                let ids = [args.id("rgid"), args.id("egid"), args.id("sgid")];
                id_call("setresgid", SYS_SETRESGID, &ids)
            }
            "connect-tcp" => connect(libc::SOCK_STREAM, addr(&mut args)),
            "connect-udp" => connect(libc::SOCK_DGRAM, addr(&mut args)),
            "connect-tcp-nb" => connect_nonblocking(addr(&mut args)),
            "listen" => listen(addr(&mut args), false),
            "listen-full" => listen_full(addr(&mut args)),
            "listen-null" => listen(addr(&mut args), true),
            "spawn-many" => {
                let n: u64 = args.num("count");
                let threads: u64 = args.num("threads");
                spawn_many(n, threads, args.next("program"), args.next("argument"));
            }
            "bpf-progs" => bpf_progs(args.num("pid")),
            other => die(&format!("unknown operation {other:?}")),
        }
    }
}

extern "C" fn on_signal(_sig: libc::c_int) {}

// The set*id syscalls glibc uses: on 32-bit arm the 32-bit-id ones
// (setuid32...: the kernel's sys_setuid; plain setuid is sys_setuid16).
#[cfg(not(target_arch = "arm"))]
const SYS_SETUID: libc::c_long = libc::SYS_setuid;
#[cfg(not(target_arch = "arm"))]
const SYS_SETGID: libc::c_long = libc::SYS_setgid;
#[cfg(not(target_arch = "arm"))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid;
#[cfg(not(target_arch = "arm"))]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid;
#[cfg(target_arch = "arm")]
const SYS_SETUID: libc::c_long = libc::SYS_setuid32;
#[cfg(target_arch = "arm")]
const SYS_SETGID: libc::c_long = libc::SYS_setgid32;
#[cfg(target_arch = "arm")]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid32;
#[cfg(target_arch = "arm")]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid32;

/// `bpf-progs PID` (see the module documentation).
fn bpf_progs(pid: u32) {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| die(&format!("{dir}: {e}"))).flatten() {
        // Programs' and links' fdinfo name the program (prog_id:).
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("prog_id:")?.trim().parse::<u32>().ok()) {
            ids.insert(id);
        }
    }
    for id in ids {
        // union bpf_attr for BPF_PROG_GET_FD_BY_ID: prog_id, next_id, open_flags.
        let attr: [u32; 3] = [id, 0, 0];
        // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of a valid attr.
        let fd = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, attr.as_ptr(), std::mem::size_of_val(&attr))
        };
        if fd < 0 {
            say(&format!("bpf-prog id={id} errno={}", errno()));
            continue;
        }
        // struct bpf_prog_info up to attach_btf_id (232 bytes): jited_prog_len
        // @16, xlated_prog_len @20, name @64, verified_insns @216. A kernel
        // with a shorter struct fills only its part (the rest stays 0).
        let mut info = [0u64; 29];
        // bpf_fd, info_len, info (a u64 pointer).
        let mut attr = [0u32; 4];
        attr[0] = fd as u32;
        attr[1] = std::mem::size_of_val(&info) as u32;
        let ptr = info.as_mut_ptr() as usize as u64;
        attr[2] = ptr as u32;
        attr[3] = (ptr >> 32) as u32;
        // SAFETY: attr points to `info`, which outlives the call, with its length.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        let e = errno();
        // SAFETY: closes the fd opened above.
        unsafe { libc::close(fd as i32) };
        if ret < 0 {
            say(&format!("bpf-prog id={id} errno={e}"));
            continue;
        }
        // SAFETY: any bytes are valid u8s; the slice stays within `info`.
        let bytes = unsafe { std::slice::from_raw_parts(info.as_ptr().cast::<u8>(), 232) };
        let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let name = &bytes[64..80];
        let name =
            String::from_utf8_lossy(&name[..name.iter().position(|b| *b == 0).unwrap_or(16)]).into_owned();
        say(&format!(
            "bpf-prog id={id} name={name} xlated_insns={} jited_bytes={} verified_insns={}",
            u32_at(20) / 8,
            u32_at(16),
            u32_at(216)
        ));
    }
}

/// Pins the calling thread to `cpu` (modulo the online CPUs).
fn pin(cpu: usize) {
    // SAFETY: sysconf and sched_setaffinity on a cpu_set_t we own.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            die(&format!("sched_setaffinity: errno {}", errno()));
        }
    }
}

/// Forks a child that exits with `code`. `far`: the child first moves to a CPU
/// other than the one the parent forked on (when there is one).
fn fork_exit(code: i32, far: bool) {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    // SAFETY: the helper is single-threaded here; the child only calls
    // async-signal-safe functions (sched_setaffinity, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die(&format!("fork: errno {}", errno()));
    }
    if pid == 0 {
        // SAFETY: a cpu_set_t we own; then ends the child without running the
        // parent's atexit handlers.
        unsafe {
            // c_long: 32 bits on armv7.
            let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN) as i64;
            if far && n > 1 && cpu >= 0 {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(((cpu as i64 + 1) % n) as usize, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            libc::_exit(code)
        };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; status is ours.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        die(&format!("waitpid: errno {}", errno()));
    }
    let st = std::process::ExitStatus::from_raw(status);
    say(&format!("fork-exit child={pid} code={}", st.code().unwrap_or(-1)));
}

fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap_or_else(|_| die("NUL in argument"))
}

/// argv `[argv0, rest...]` as C strings (alive while their pointers are used).
fn c_argv(argv0: &str, rest: &[String]) -> Vec<std::ffi::CString> {
    std::iter::once(cstr(argv0)).chain(rest.iter().map(|a| cstr(a))).collect()
}

fn ptrs(args: &[std::ffi::CString]) -> Vec<*const libc::c_char> {
    args.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

fn exec(path: String, rest: Vec<String>) {
    let cargs = c_argv(&path, &rest);
    let argv = ptrs(&cargs);
    // SAFETY: NUL-terminated strings and a NULL-terminated array that outlive the call.
    unsafe { libc::execv(cargs[0].as_ptr(), argv.as_ptr()) };
    say(&format!("exec errno={}", errno()));
    std::process::exit(100);
}

/// Installs a seccomp filter allowing only the syscall numbers listed in
/// `file`, on the native architecture (no x32 calls on x86_64), with
/// no_new_privs set; anything else kills the process.
fn seccomp(file: &str) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| die(&format!("{file}: {e}")));
    let nrs: Vec<u32> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap_or_else(|_| die(&format!("{file}: bad number {l:?}"))))
        .collect();
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    #[cfg(target_arch = "arm")]
    const ARCH: u32 = 0x4000_0028; // AUDIT_ARCH_ARM
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const ALLOW: u32 = 0x7fff_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    // seccomp_data: nr at offset 0, arch at 4.
    let mut prog = vec![
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 1, 0, ARCH),
        op(RET_K, 0, 0, KILL_PROCESS),
        op(LD_W_ABS, 0, 0, 0),
        // x32 calls (__X32_SYSCALL_BIT) are not native.
        op(JGE_K, 0, 1, 0x4000_0000),
        op(RET_K, 0, 0, KILL_PROCESS),
    ];
    for nr in nrs {
        prog.push(op(JEQ_K, 0, 1, nr));
        prog.push(op(RET_K, 0, 0, ALLOW));
    }
    prog.push(op(RET_K, 0, 0, KILL_PROCESS));
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    // SAFETY: prctl with integer arguments, then with a pointer to a filter
    // program that outlives the call (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            die(&format!("PR_SET_NO_NEW_PRIVS: errno {}", errno()));
        }
        if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog)
            != 0
        {
            die(&format!("PR_SET_SECCOMP: errno {}", errno()));
        }
    }
    say(&format!("seccomp allowed={}", (prog.len() - 7) / 2));
}

/// execveat(open(DIR), NAME, [NAME, rest...], {}, 0).
fn execveat(dir: String, name: String, rest: Vec<String>) {
    let cdir = cstr(&dir);
    // SAFETY: opens a directory by a NUL-terminated path.
    let dirfd = unsafe { libc::open(cdir.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
    if dirfd < 0 {
        die(&format!("open {dir}: errno {}", errno()));
    }
    let cargs = c_argv(&name, &rest);
    let argv = ptrs(&cargs);
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: a valid fd, a NUL-terminated name, NULL-terminated arrays that
    // outlive the call.
    unsafe { libc::syscall(libc::SYS_execveat, dirfd, cargs[0].as_ptr(), argv.as_ptr(), envp.as_ptr(), 0) };
    say(&format!("execveat errno={}", errno()));
    std::process::exit(100);
}

fn id_call(name: &str, nr: libc::c_long, ids: &[libc::c_long]) {
    // SAFETY: set*id syscalls take integer arguments only.
    let ret = unsafe {
        match ids {
            [a] => libc::syscall(nr, *a),
            [a, b, c] => libc::syscall(nr, *a, *b, *c),
            _ => die("bad id count"),
        }
    };
    let e = if ret < 0 { errno() } else { 0 };
    say(&format!("{name} ret={ret} errno={e}"));
}

fn addr(args: &mut Args) -> SocketAddr {
    let ip: IpAddr = args.num("address");
    let port: u16 = args.num("port");
    SocketAddr::new(ip, port)
}

/// A sockaddr_in/sockaddr_in6 for `sa`, and its length.
fn raw_sockaddr(sa: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match sa {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_raw(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

fn local_of(fd: i32) -> Option<SocketAddr> {
    // SAFETY: getsockname writes at most `len` bytes into storage we own.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let r = unsafe { libc::getsockname(fd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) };
    if r == 0 { from_raw(&ss) } else { None }
}

fn socket_for(sa: SocketAddr, ty: i32) -> i32 {
    let family = if sa.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, ty, 0) };
    if fd < 0 {
        die(&format!("socket: errno {}", errno()));
    }
    fd
}

fn connect(ty: i32, sa: SocketAddr) {
    let fd = socket_for(sa, ty);
    let (ss, len) = raw_sockaddr(sa);
    // SAFETY: ss holds a valid sockaddr of `len` bytes.
    let r = unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) };
    let e = if r < 0 { errno() } else { 0 };
    let local = local_of(fd);
    let (lip, lport) = local.map(|l| (l.ip().to_string(), l.port())).unwrap_or_else(|| ("none".into(), 0));
    say(&format!("connect fd={fd} ret={r} errno={e} local_addr={lip} local_port={lport}"));
    // SAFETY: closes the socket we opened.
    unsafe { libc::close(fd) };
}

fn connect_nonblocking(sa: SocketAddr) {
    let fd = socket_for(sa, libc::SOCK_STREAM | libc::SOCK_NONBLOCK);
    let (ss, len) = raw_sockaddr(sa);
    // SAFETY: ss holds a valid sockaddr of `len` bytes.
    let r = unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) };
    let e = if r < 0 { errno() } else { 0 };
    say(&format!("connect fd={fd} ret={r} errno={e}"));
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&mut pfd, 1, 10_000) };
    let mut err: libc::c_int = 0;
    let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes a c_int into `err`.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut elen,
        )
    };
    let local = local_of(fd);
    let (lip, lport) = local.map(|l| (l.ip().to_string(), l.port())).unwrap_or_else(|| ("none".into(), 0));
    say(&format!("outcome so_error={err} local_addr={lip} local_port={lport}"));
    // SAFETY: closes the socket we opened.
    unsafe { libc::close(fd) };
}

fn listen_full(sa: SocketAddr) {
    let fd = socket_for(sa, libc::SOCK_STREAM);
    let (ss, len) = raw_sockaddr(sa);
    // SAFETY: bind/listen on our socket with a valid sockaddr.
    unsafe {
        if libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) != 0 {
            die(&format!("bind {sa}: errno {}", errno()));
        }
        if libc::listen(fd, 0) != 0 {
            die(&format!("listen: errno {}", errno()));
        }
    }
    let filler = socket_for(sa, libc::SOCK_STREAM);
    // SAFETY: ss holds a valid sockaddr of `len` bytes.
    if unsafe { libc::connect(filler, (&ss as *const libc::sockaddr_storage).cast(), len) } != 0 {
        die(&format!("filler connect: errno {}", errno()));
    }
    // Both sockets stay open until the helper exits.
    say(&format!("listen-full fd={fd} filler={filler}"));
}

fn listen(sa: SocketAddr, null_peer: bool) {
    let fd = socket_for(sa, libc::SOCK_STREAM);
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a c_int value; bind/listen on our socket.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let (ss, len) = raw_sockaddr(sa);
        if libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) != 0 {
            die(&format!("bind {sa}: errno {}", errno()));
        }
        if libc::listen(fd, 16) != 0 {
            die(&format!("listen: errno {}", errno()));
        }
    }
    let port = local_of(fd).map(|l| l.port()).unwrap_or(0);
    say(&format!("listen fd={fd} port={port}"));
    if null_peer {
        // Like an event-loop server (mosquitto): wait for a connection, then
        // accept it with no address buffer.
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd we own; then accept with null address pointers.
        unsafe { libc::poll(&mut pfd, 1, -1) };
        let c = unsafe { libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) };
        if c < 0 {
            die(&format!("accept: errno {}", errno()));
        }
        say(&format!("accept fd={c}"));
        // Until the peer closes: the socket stays for the agent to look up.
        let mut buf = [0u8; 64];
        // SAFETY: reads into a buffer we own, then closes our sockets.
        unsafe {
            while libc::read(c, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
            libc::close(c);
            libc::close(fd);
        }
        return;
    }
    // SAFETY: accept writes the peer's address into storage we own.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let c = unsafe { libc::accept(fd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) };
    if c < 0 {
        die(&format!("accept: errno {}", errno()));
    }
    let peer = from_raw(&ss).unwrap_or_else(|| die("accept: unknown peer family"));
    say(&format!("accept fd={c} peer_addr={} peer_port={}", peer.ip(), peer.port()));
    // SAFETY: closes the sockets we opened.
    unsafe {
        libc::close(c);
        libc::close(fd);
    }
}

fn spawn_many(n: u64, threads: u64, prog: String, arg: String) {
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    match Command::new(&prog).arg(&arg).status() {
                        Ok(st) if st.success() => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    let elapsed = start.elapsed();
    say(&format!(
        "spawn-many ok={} failed={} elapsed_us={}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        elapsed.as_micros()
    ));
}
