//! Records shared by Shrike's kernel programs (`shrike-ebpf`) and its agent.
//!
//! Every record starts with a [`Header`]. All records are `#[repr(C)]`, contain no
//! implicit padding (checked by the `const` assertions below) and use only integer
//! and byte-array fields, so any byte pattern is a valid value: userspace decodes
//! them with unaligned reads and never trusts the contents.
//!
//! With the `schema` feature (userspace only), the `schema` module is the security
//! message SDK: the message types, their JSON, and a size-bounded builder.
// no_std for the kernel crate; the `schema` feature (the security message SDK)
// is userspace-only and needs std.
#![cfg_attr(not(feature = "schema"), no_std)]

#[cfg(feature = "schema")]
pub mod schema;
/// The send-security-message SDK: the socket protocol (feature `schema`),
/// a blocking client (`sdk`) and an async one (`sdk-tokio`).
#[cfg(feature = "schema")]
pub mod sdk;

/// Stable numeric record kinds. Never renumber: they are part of the wire format
/// between the kernel object and the agent, and index the per-kind lost counters.
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const EXIT: u32 = 2;
    pub const FORK: u32 = 3;
    pub const CONNECT: u32 = 4;
    pub const ACCEPT: u32 = 5;
    pub const LISTEN: u32 = 6;
    pub const BIND: u32 = 7;
    pub const LOGIN: u32 = 8;
    pub const PRIVILEGE: u32 = 9;
    /// A change to a file under a watched path ([`super::FileRecord`]).
    pub const FILE: u32 = 10;
    /// Made by the agent's detection, never by the kernel: no probe, no
    /// counters; the number only keeps the kinds distinct.
    pub const ALERT: u32 = 15;
    /// An event another program reported through the SDK socket: made by
    /// the agent, never by the kernel, like ALERT.
    pub const SDK: u32 = 14;
    /// Number of slots in the per-kind counters (kind values are < MAX).
    pub const MAX: u32 = 16;
}

/// Length of `comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes reserved for an exec's filename (including the NUL).
pub const FILENAME_LEN: usize = 256;
/// Largest number of argv entries the kernel side can capture (the configured
/// bound, [`Config::max_args`], is at most this).
pub const MAX_ARGS: u32 = 64;
/// Largest length of one captured argument, including its NUL (the configured
/// bound, [`Config::max_arg_len`], is at most this).
pub const MAX_ARG_LEN: usize = 512;
/// Capacity for the captured arguments (NUL-separated). The buffer holds
/// `ARGS_CAP + MAX_ARG_LEN` bytes so a read at any offset below `ARGS_CAP`
/// stays inside it, which the verifier can check with one mask.
pub const ARGS_CAP: usize = 2048;
pub const ARGS_BUF_LEN: usize = ARGS_CAP + MAX_ARG_LEN;

pub const PAM_SERVICE_LEN: usize = 32;
pub const PAM_USER_LEN: usize = 64;
pub const PAM_RHOST_LEN: usize = 64;
pub const PAM_TTY_LEN: usize = 32;

/// Common header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u32,
    /// Bytes of the record that are meaningful (exec records are sent short).
    pub size: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds.
    pub ktime_ns: u64,
    /// Process id (tgid) of the task that caused the event.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid/gid of the task (`bpf_get_current_uid_gid`).
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; COMM_LEN],
}

/// Exec record flags.
pub mod exec_flags {
    /// More arguments than the configured bound, or one longer than the bound.
    pub const ARGS_TRUNCATED: u32 = 1;
    /// The filename was longer than [`super::FILENAME_LEN`] - 1.
    pub const FILENAME_TRUNCATED: u32 = 2;
    /// The exec's arguments could not be read from user memory.
    pub const ARGS_UNREADABLE: u32 = 4;
    /// The record is from `execveat`.
    pub const EXECVEAT: u32 = 8;
    /// The syscall's entry was not seen (agent started mid-exec, or the
    /// pending-exec map was full): filename and argv are missing.
    pub const ENTRY_MISSING: u32 = 16;
}

/// `execve`/`execveat`: emitted at syscall exit with the arguments captured at entry.
/// Sent short: only `ExecRecord::FIXED_LEN + args_len` bytes travel.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub hdr: Header,
    /// Syscall result: 0 on success, `-errno` on failure.
    pub ret: i64,
    pub flags: u32,
    /// Number of arguments captured in `args`.
    pub argc: u32,
    /// Bytes used in `args` (each argument is NUL-terminated).
    pub args_len: u32,
    /// `execveat`'s dirfd (AT_FDCWD = -100 for execve).
    pub dirfd: i32,
    pub filename: [u8; FILENAME_LEN],
    pub args: [u8; ARGS_BUF_LEN],
}

impl ExecRecord {
    /// Size of everything before `args`.
    pub const FIXED_LEN: usize = core::mem::offset_of!(ExecRecord, args);
}

/// Process exit (the thread group leader's `sched_process_exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub hdr: Header,
    /// Wait-status style: `(code << 8) | signal`; see [`ExitRecord::has_status`].
    pub status: u32,
    /// 1 when `status` is known (exit/exit_group argument or fatal signal seen).
    pub has_status: u32,
}

/// A new process (`task_newtask` without CLONE_THREAD). `hdr` is the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub hdr: Header,
    pub child_pid: u32,
    /// Lower 32 bits of the clone flags.
    pub clone_flags: u32,
}

/// Socket record flags.
pub mod sock_flags {
    /// Protocol learned from the TCP state machine (SYN_SENT during connect).
    pub const TCP_CONFIRMED: u32 = 1;
    /// Local address/port are known.
    pub const LOCAL_KNOWN: u32 = 2;
    /// Remote address/port are known.
    pub const REMOTE_KNOWN: u32 = 4;
    /// connect: this record is the outcome of an earlier connect whose
    /// syscall returned EINPROGRESS (same socket, same `fd`, same `ret`), from
    /// sock/inet_sock_set_state leaving SYN_SENT.
    pub const OUTCOME: u32 = 8;
    /// With [`OUTCOME`]: SYN_SENT -> ESTABLISHED (else SYN_SENT -> CLOSE).
    pub const ESTABLISHED: u32 = 16;
    /// With [`OUTCOME`]: the peer answered with a reset (tcp/tcp_receive_reset):
    /// refused.
    pub const RESET: u32 = 32;
    /// accept: the kernel knows neither end (a listener bound before the
    /// agent started, and no peer address buffer): maybe not an inet socket.
    pub const FAMILY_UNKNOWN: u32 = 64;
}

/// connect / accept / listen / bind. Addresses are network-order bytes (IPv4 in
/// the first 4 bytes), ports host order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockRecord {
    pub hdr: Header,
    /// Syscall result (accept: the new fd, or `-errno`).
    pub ret: i64,
    pub fd: i32,
    pub flags: u32,
    /// AF_INET (2) or AF_INET6 (10); other families are not reported.
    pub family: u16,
    /// IPPROTO_TCP (6), IPPROTO_UDP (17) or 0 when unknown.
    pub protocol: u16,
    pub lport: u16,
    pub rport: u16,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

/// PAM step of a [`LoginRecord`].
pub mod pam_step {
    pub const AUTHENTICATE: u32 = 1;
    pub const ACCT_MGMT: u32 = 2;
    pub const OPEN_SESSION: u32 = 3;
    pub const CLOSE_SESSION: u32 = 4;
    pub const SETCRED: u32 = 5;
    pub const CHAUTHTOK: u32 = 6;
}

/// A PAM step (uretprobe on libpam) with what the handle carried.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LoginRecord {
    pub hdr: Header,
    pub step: u32,
    /// PAM return code (0 = PAM_SUCCESS).
    pub result: i32,
    pub items: PamItems,
}

/// The PAM items Shrike tracks per handle (`pam_start`, `pam_set_item`, `pam_get_user`).
/// NUL-terminated; empty when never set.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PamItems {
    pub service: [u8; PAM_SERVICE_LEN],
    pub user: [u8; PAM_USER_LEN],
    pub rhost: [u8; PAM_RHOST_LEN],
    pub tty: [u8; PAM_TTY_LEN],
}

/// Privilege-changing syscalls of a [`PrivRecord`].
pub mod priv_call {
    pub const SETUID: u32 = 1;
    pub const SETGID: u32 = 2;
    pub const SETREUID: u32 = 3;
    pub const SETREGID: u32 = 4;
    pub const SETRESUID: u32 = 5;
    pub const SETRESGID: u32 = 6;
    pub const SETFSUID: u32 = 7;
    pub const SETFSGID: u32 = 8;
    pub const CAPSET: u32 = 9;
}

/// set*id / capset at syscall exit. `hdr.uid/gid` are the ids after the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrivRecord {
    pub hdr: Header,
    pub call: u32,
    pub ret: i32,
    /// Real uid/gid before the call.
    pub old_uid: u32,
    pub old_gid: u32,
    /// The syscall's id arguments as passed (u32::MAX = -1 = unchanged).
    pub args: [u32; 3],
    /// capset: 1 when `caps` holds the requested sets.
    pub has_caps: u32,
    /// capset: effective, permitted, inheritable; low then high 32 bits each.
    pub caps: [u32; 6],
}

/// Bytes of a file path captured (including the NUL); longer paths are cut
/// and flagged.
pub const PATH_LEN: usize = 256;
/// Watched path prefixes the kernel compares against (map `WATCH`).
pub const WATCH_MAX: u32 = 32;
/// 8-byte words of one watched prefix: prefixes are at most 128 bytes.
pub const WATCH_WORDS: usize = 16;

/// The file-changing syscall of a [`FileRecord`].
pub mod file_op {
    /// open/openat/openat2 with a write flag (`arg` holds the open flags).
    pub const OPEN: u32 = 1;
    /// creat().
    pub const CREAT: u32 = 2;
    /// rename/renameat/renameat2: `path` -> `path2`.
    pub const RENAME: u32 = 3;
    /// unlink/unlinkat (`arg`: unlinkat's flags, AT_REMOVEDIR = 0x200).
    pub const UNLINK: u32 = 4;
    pub const RMDIR: u32 = 5;
    /// chmod/fchmodat/fchmodat2/fchmod (`mode`).
    pub const CHMOD: u32 = 6;
    /// chown/lchown/fchownat/fchown (`uid`, `gid`; u32::MAX = unchanged).
    pub const CHOWN: u32 = 7;
    /// link/linkat: the existing `path`, the new link `path2`.
    pub const LINK: u32 = 8;
    /// symlink/symlinkat: the target text `path`, the new link `path2`.
    pub const SYMLINK: u32 = 9;
}

/// File record flags.
pub mod file_flags {
    /// `path` is relative (to `dirfd`, or the cwd when it is AT_FDCWD): the
    /// kernel could not compare it with the watched prefixes.
    pub const PATH_RELATIVE: u32 = 1;
    pub const PATH2_RELATIVE: u32 = 2;
    pub const PATH_TRUNCATED: u32 = 4;
    pub const PATH2_TRUNCATED: u32 = 8;
    /// fchmod/fchown: no path, `dirfd` is the file's descriptor.
    pub const BY_FD: u32 = 16;
    pub const PATH_UNREADABLE: u32 = 32;
}

/// A file change (syscall exit, arguments from its entry), sent only when a
/// path is under a watched prefix or could not be judged in the kernel
/// (relative path, file descriptor).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileRecord {
    pub hdr: Header,
    /// Syscall result: 0 (open: the new fd) or `-errno`.
    pub ret: i64,
    /// One of [`file_op`].
    pub op: u32,
    /// [`file_flags`].
    pub flags: u32,
    /// Directory fd `path` is relative to (AT_FDCWD = -100); with
    /// [`file_flags::BY_FD`] the file's own fd.
    pub dirfd: i32,
    /// Directory fd of `path2`.
    pub dirfd2: i32,
    /// The syscall's flags (open flags; unlinkat, renameat2, linkat,
    /// fchownat, fchmodat2 flags).
    pub arg: u32,
    /// chmod's mode; open/creat's creation mode.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub path: [u8; PATH_LEN],
    pub path2: [u8; PATH_LEN],
}

/// One watched prefix as the kernel compares it: `(word ^ words[i]) &
/// masks[i] == 0` for the first `nwords` 8-byte words of the path.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WatchPrefix {
    pub words: [u64; WATCH_WORDS],
    pub masks: [u64; WATCH_WORDS],
    /// 0: an unused slot (ends the list).
    pub nwords: u32,
    pub _pad: u32,
}

impl WatchPrefix {
    /// The prefix `bytes` (at most `WATCH_WORDS * 8` bytes, else None),
    /// in the byte order the kernel loads the path's words in (native).
    pub fn new(bytes: &[u8]) -> Option<WatchPrefix> {
        if bytes.is_empty() || bytes.len() > WATCH_WORDS * 8 {
            return None;
        }
        let mut p = WatchPrefix { words: [0; WATCH_WORDS], masks: [0; WATCH_WORDS], nwords: 0, _pad: 0 };
        let mut w = [0u8; WATCH_WORDS * 8];
        let mut m = [0u8; WATCH_WORDS * 8];
        w[..bytes.len()].copy_from_slice(bytes);
        for b in &mut m[..bytes.len()] {
            *b = 0xff;
        }
        for i in 0..WATCH_WORDS {
            let mut a = [0u8; 8];
            a.copy_from_slice(&w[i * 8..i * 8 + 8]);
            p.words[i] = u64::from_ne_bytes(a);
            a.copy_from_slice(&m[i * 8..i * 8 + 8]);
            p.masks[i] = u64::from_ne_bytes(a);
        }
        p.nwords = bytes.len().div_ceil(8) as u32;
        Some(p)
    }

    /// What the kernel computes, for tests: `path` (NUL-padded to
    /// PATH_LEN) starts with the prefix.
    pub fn matches(&self, path: &[u8; PATH_LEN]) -> bool {
        (0..self.nwords as usize).all(|i| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&path[i * 8..i * 8 + 8]);
            (u64::from_ne_bytes(a) ^ self.words[i]) & self.masks[i] == 0
        })
    }
}

/// The first 8-byte word of every watched prefix (map `WATCH_HEAD`, index
/// 0): the kernel reads a path's first 8 bytes and stops when none of
/// these matches, before copying the whole path. A path that fails a
/// prefix's first word fails the prefix ([`WatchPrefix`]'s masks run from
/// byte 0 and its bytes are never 0, so a path shorter than the word meets
/// its NUL under the mask whatever follows the NUL).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WatchHead {
    /// Bit `b` set: some prefix has `b` as its second byte (or is "/"
    /// alone: all set). A path whose second byte is not here (/tmp, /proc
    /// with the defaults) is out at once.
    pub second: [u64; 4],
    pub words: [u64; WATCH_MAX as usize],
    pub masks: [u64; WATCH_MAX as usize],
    /// Entries used (distinct first words); 0: nothing is watched.
    pub n: u32,
    pub _pad: u32,
}

impl WatchHead {
    /// The distinct first words of `list`.
    pub fn new(list: &[WatchPrefix]) -> WatchHead {
        let mut h = WatchHead {
            second: [0; 4],
            words: [0; WATCH_MAX as usize],
            masks: [0; WATCH_MAX as usize],
            n: 0,
            _pad: 0,
        };
        for p in list.iter().filter(|p| p.nwords > 0) {
            let [_, b, ..] = p.words[0].to_ne_bytes();
            let [_, m, ..] = p.masks[0].to_ne_bytes();
            if m == 0 {
                h.second = [u64::MAX; 4];
            } else {
                h.second[b as usize / 64] |= 1 << (b % 64);
            }
            let n = h.n as usize;
            let seen = (0..n).any(|i| h.words[i] == p.words[0] && h.masks[i] == p.masks[0]);
            if !seen && n < WATCH_MAX as usize {
                h.words[n] = p.words[0];
                h.masks[n] = p.masks[0];
                h.n += 1;
            }
        }
        h
    }

    /// What the kernel computes, for tests: the 8 bytes `first` (a path's
    /// start, read without stopping at its NUL) may begin a watched path.
    pub fn may_match(&self, first: u64) -> bool {
        let b = first.to_ne_bytes()[1];
        self.second[b as usize / 64] & (1 << (b % 64)) != 0
            && (0..self.n as usize).any(|i| (first ^ self.words[i]) & self.masks[i] == 0)
    }
}

/// Agent-to-kernel settings (array map `CONFIG`, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// The agent's own tgid: its activity is never reported.
    pub agent_tgid: u32,
    /// argv entries to capture (1..=MAX_ARGS).
    pub max_args: u32,
    /// Bytes per argument including the NUL (2..=MAX_ARG_LEN).
    pub max_arg_len: u32,
    /// Ring buffer: bitmask of kinds (`1 << kind`) whose records wake the
    /// reader at once; other records wake it only once `wake_bytes` are waiting
    /// (the reader also polls on a short timer). A wakeup is an interrupt
    /// (irq_work) that costs microseconds, a virtual machine far more.
    pub wake_kinds: u32,
    pub wake_bytes: u32,
    /// File integrity's directory-fd cache (map `DIR_MARKS`): 0 = off (the
    /// hooks that end an fd's life are not all attached), else the
    /// generation of the watch list; a mark made under another generation
    /// is ignored, so rewriting `WATCH` and bumping this drops every mark.
    pub dir_cache: u32,
    /// The open flags O_DIRECTORY and O_NOFOLLOW of the agent's
    /// architecture (they differ between x86_64 and aarch64).
    pub o_directory: u32,
    pub o_nofollow: u32,
}

/// Offsets of the tracepoint fields the kernel programs read, for the
/// kernel's word size. `long` and pointers are 8 bytes on a 64-bit kernel and
/// 4 on a 32-bit one (armhf), and every field after one moves with it. The
/// kernel programs read at these offsets (`bpf_target_arch` names the
/// kernel's architecture in their build); the agent, built for the same
/// architecture, checks each against the tracepoint's `format` file before it
/// attaches (agent/src/probes/compat.rs), so a kernel laid out otherwise
/// skips that probe with the reason.
pub mod layout {
    /// Bytes of a `long` or pointer in the kernel's records.
    #[cfg(any(bpf_target_arch = "arm", all(not(target_arch = "bpf"), target_pointer_width = "32")))]
    pub const LONG: usize = 4;
    /// Bytes of a `long` or pointer in the kernel's records.
    #[cfg(not(any(bpf_target_arch = "arm", all(not(target_arch = "bpf"), target_pointer_width = "32"))))]
    pub const LONG: usize = 8;

    /// `off` rounded up to a `long`'s alignment.
    const fn align(off: usize) -> usize {
        off.div_ceil(LONG) * LONG
    }

    /// `syscalls/sys_enter_*`, `sys_exit_*`: `int __syscall_nr` after the
    /// 8-byte common header.
    pub const SYS_NR: usize = 8;
    /// `syscalls/sys_enter_*`: argument `i`, one `long` each (16, 24, 32…
    /// on 64-bit; 12, 16, 20… on 32-bit).
    pub const fn sys_arg(i: usize) -> usize {
        align(12) + LONG * i
    }
    /// `syscalls/sys_exit_*`: `long ret`.
    pub const SYS_RET: usize = align(12);

    /// `sched/sched_process_exec`: `__data_loc filename`, `pid_t pid`, `pid_t old_pid`.
    pub const EXEC_PID: usize = 12;
    pub const EXEC_OLD_PID: usize = 16;
    /// `sched/sched_process_exit`: `char comm[16]`, `pid_t pid`.
    pub const EXIT_PID: usize = 24;
    /// `task/task_newtask`: `pid_t pid`, `char comm[16]`, `unsigned long clone_flags`.
    pub const NEWTASK_PID: usize = 8;
    pub const NEWTASK_CLONE_FLAGS: usize = align(28);
    /// `signal/signal_generate`: `int sig, errno, code`, `char comm[16]`,
    /// `pid_t pid`, `int group, result`.
    pub const GENERATE_SIG: usize = 8;
    pub const GENERATE_PID: usize = 36;
    pub const GENERATE_RESULT: usize = 44;
    /// `signal/signal_deliver`: `int sig, errno, code`, `unsigned long sa_handler`.
    pub const DELIVER_SIG: usize = 8;
    pub const DELIVER_SA_HANDLER: usize = align(20);
    /// `sock/inet_sock_set_state` and `tcp/tcp_receive_reset`: `const void *skaddr`.
    pub const SOCK_SKADDR: usize = 8;
    /// `sock/inet_sock_set_state`, after `skaddr`: `int oldstate, newstate`,
    /// `__u16 sport, dport, family, protocol`, `__u8 saddr[4], daddr[4]`,
    /// `__u8 saddr_v6[16], daddr_v6[16]`.
    pub const SOCK_OLDSTATE: usize = SOCK_SKADDR + LONG;
    pub const SOCK_NEWSTATE: usize = SOCK_OLDSTATE + 4;
    pub const SOCK_SPORT: usize = SOCK_OLDSTATE + 8;
    pub const SOCK_FAMILY: usize = SOCK_OLDSTATE + 12;
    pub const SOCK_SADDR: usize = SOCK_OLDSTATE + 16;
    pub const SOCK_SADDR_V6: usize = SOCK_OLDSTATE + 24;
}

/// Names of maps and programs the agent looks up in the object.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const CONFIG: &str = "CONFIG";
    pub const LOST: &str = "LOST";
    pub const SENT: &str = "SENT";
    pub const WATCH: &str = "WATCH";
    pub const WATCH_HEAD: &str = "WATCH_HEAD";
}

// No implicit padding: each size is the sum of its fields.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<Header>() == 48);
    assert!(size_of::<ExecRecord>() == 48 + 8 + 16 + FILENAME_LEN + ARGS_BUF_LEN);
    assert!(size_of::<ExitRecord>() == 56);
    assert!(size_of::<ForkRecord>() == 56);
    assert!(size_of::<SockRecord>() == 48 + 8 + 8 + 8 + 32);
    assert!(
        size_of::<LoginRecord>() == 48 + 8 + PAM_SERVICE_LEN + PAM_USER_LEN + PAM_RHOST_LEN + PAM_TTY_LEN
    );
    assert!(size_of::<PrivRecord>() == 48 + 8 + 8 + 12 + 4 + 24);
    assert!(size_of::<Config>() == 32);
    assert!(size_of::<FileRecord>() == 48 + 8 + 32 + 2 * PATH_LEN);
    assert!(core::mem::offset_of!(FileRecord, path) % 8 == 0);
    assert!(size_of::<WatchPrefix>() == 16 * WATCH_WORDS + 8);
    assert!(size_of::<WatchHead>() == 32 + 16 * WATCH_MAX as usize + 8);
    // The 64-bit layouts the x86_64 and aarch64 kernels' format files show.
    if layout::LONG == 8 {
        assert!(layout::sys_arg(0) == 16 && layout::sys_arg(2) == 32 && layout::SYS_RET == 16);
        assert!(layout::NEWTASK_CLONE_FLAGS == 32 && layout::DELIVER_SA_HANDLER == 24);
        assert!(layout::SOCK_OLDSTATE == 16 && layout::SOCK_FAMILY == 28 && layout::SOCK_SADDR_V6 == 40);
    } else {
        // armhf (Debian's 6.1 armmp kernel's format files).
        assert!(layout::sys_arg(0) == 12 && layout::sys_arg(2) == 20 && layout::SYS_RET == 12);
        assert!(layout::NEWTASK_CLONE_FLAGS == 28 && layout::DELIVER_SA_HANDLER == 20);
        assert!(layout::SOCK_OLDSTATE == 12 && layout::SOCK_FAMILY == 24 && layout::SOCK_SADDR_V6 == 36);
    }
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain-old-data records: only integers and byte arrays, no padding.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for WatchPrefix {}
    unsafe impl aya::Pod for WatchHead {}
}
