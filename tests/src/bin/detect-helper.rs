//! `detect-helper`: what the detection tests (tests/tests/detect.rs) need a
//! process to do, beyond `shrike-test-helper`'s single syscalls. Each
//! operation prints `op key=value ...` lines (flushed) the tests parse.
//!
//! - `serve-exec ADDR PORT PROG [ARGS...]`: listen on ADDR:PORT (0: any
//!   port), print `listen port=P`, accept one connection, print `accept
//!   peer=ADDR:PORT`, then run PROG ARGS as a child (a network service
//!   starting a program), print `spawned pid=N status=S`.
//! - `serve-exec-on-usr1 ADDR PORT PROG [ARGS...]`: the same, but after the
//!   accept it waits for SIGUSR1 before running PROG (a server that was
//!   already serving when the agent started).
//! - `connect-exec ADDR PORT PROG [ARGS...]`: connect to ADDR:PORT, print
//!   `connected local=ADDR:PORT`, make the socket stdin and stdout, and exec
//!   PROG ARGS in this process (a reverse shell's shape).
//! - `memfd-exec PROG [ARGS...]`: copy PROG into a memfd named
//!   `shrike-test`, print `memfd fd=N`, and fexecve it (execveat(fd, "",
//!   AT_EMPTY_PATH)): fileless execution.

use std::{
    io::Write,
    net::{SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::Command,
};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn die(msg: &str) -> ! {
    eprintln!("detect-helper: {msg}");
    std::process::exit(99);
}

fn addr(args: &[String]) -> SocketAddr {
    let (Some(ip), Some(port)) = (args.first(), args.get(1)) else { die("ADDR PORT expected") };
    format!("{ip}:{port}").parse().unwrap_or_else(|e| die(&format!("bad address {ip}:{port}: {e}")))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(op) = args.first() else { die("an operation expected") };
    let rest = &args[1..];
    if op == "memfd-exec" {
        let prog = rest.first().unwrap_or_else(|| die("PROG expected"));
        memfd_exec(prog, &rest[1..]);
    }
    let prog = rest.get(2).unwrap_or_else(|| die("PROG expected"));
    let prog_args = &rest[3..];
    match op.as_str() {
        "serve-exec" | "serve-exec-on-usr1" => {
            // Blocked from the start: a SIGUSR1 sent before the sigwait stays
            // pending instead of killing the process.
            // SAFETY: all-zero is a valid sigset_t, initialized by sigemptyset;
            // the helper is single-threaded.
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            unsafe {
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let l = TcpListener::bind(addr(rest)).unwrap_or_else(|e| die(&format!("bind: {e}")));
            say(&format!("listen port={}", l.local_addr().map(|a| a.port()).unwrap_or(0)));
            let (conn, peer) = l.accept().unwrap_or_else(|e| die(&format!("accept: {e}")));
            say(&format!("accept peer={peer}"));
            if op == "serve-exec-on-usr1" {
                let mut sig = 0;
                // SAFETY: waits for the blocked signal; writes `sig`.
                unsafe { libc::sigwait(&set, &mut sig) };
                say(&format!("signal sig={sig}"));
            }
            let mut child = Command::new(prog)
                .args(prog_args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| die(&format!("spawn {prog}: {e}")));
            let pid = child.id();
            let status = child.wait().unwrap_or_else(|e| die(&format!("wait: {e}")));
            say(&format!("spawned pid={pid} status={}", status.code().unwrap_or(-1)));
            drop(conn);
        }
        "connect-exec" => {
            let s = TcpStream::connect(addr(rest)).unwrap_or_else(|e| die(&format!("connect: {e}")));
            let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
            say(&format!("connected local={local}"));
            let fd = s.as_raw_fd();
            // SAFETY: dup2 onto stdin/stdout of a socket we own; exec follows.
            unsafe {
                if libc::dup2(fd, 0) < 0 || libc::dup2(fd, 1) < 0 {
                    die("dup2 failed");
                }
            }
            let e = Command::new(prog).args(prog_args).exec();
            die(&format!("exec {prog}: {e}"));
        }
        other => die(&format!("unknown operation {other:?}")),
    }
}

fn memfd_exec(prog: &str, args: &[String]) -> ! {
    use std::{ffi::CString, os::fd::FromRawFd};
    let bytes = std::fs::read(prog).unwrap_or_else(|e| die(&format!("read {prog}: {e}")));
    // SAFETY: memfd_create with a NUL-terminated name; the fd is ours.
    let fd = unsafe { libc::memfd_create(c"shrike-test".as_ptr(), 0) };
    if fd < 0 {
        die("memfd_create failed");
    }
    // SAFETY: fd was just created and is owned by this File from now on.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(&bytes).unwrap_or_else(|e| die(&format!("write memfd: {e}")));
    say(&format!("memfd fd={fd}"));
    let cs = |s: &str| CString::new(s).unwrap_or_else(|_| die("NUL in argument"));
    let argv: Vec<CString> = std::iter::once(cs(prog)).chain(args.iter().map(|a| cs(a))).collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: a valid fd, an empty NUL-terminated path, NULL-terminated arrays
    // that outlive the call (it only returns on failure).
    unsafe {
        libc::syscall(libc::SYS_execveat, fd, c"".as_ptr(), ptrs.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH)
    };
    die(&format!("execveat: {}", std::io::Error::last_os_error()));
}
