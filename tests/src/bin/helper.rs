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
    let mut args = Args { items: std::env::args().skip(1).collect(), pos: 0 };
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
            "setuid" => id_call("setuid", libc::SYS_setuid, &[args.id("uid")]),
            "setgid" => id_call("setgid", libc::SYS_setgid, &[args.id("gid")]),
            "setresuid" => {
                let ids = [args.id("ruid"), args.id("euid"), args.id("suid")];
                id_call("setresuid", libc::SYS_setresuid, &ids)
            }
            "setresgid" => {
                let ids = [args.id("rgid"), args.id("egid"), args.id("sgid")];
                id_call("setresgid", libc::SYS_setresgid, &ids)
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
            other => die(&format!("unknown operation {other:?}")),
        }
    }
}

extern "C" fn on_signal(_sig: libc::c_int) {}

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
            let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
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
