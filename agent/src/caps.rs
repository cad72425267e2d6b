//! Dropping capabilities once the probes are attached.
//!
//! Loading and attaching eBPF programs needs CAP_BPF, CAP_PERFMON and
//! CAP_SYS_ADMIN (tracefs mount, older kernels); once they run, the agent only
//! reads /proc (CAP_DAC_READ_SEARCH, and CAP_SYS_PTRACE for other users'
//! `/proc/PID/exe`) and talks to its hub. [`drop_after_attach`] keeps only
//! those two, on every thread of the process: capabilities are per thread in
//! Linux (capset(2) changes the calling thread only), so the other threads
//! (the runtime's workers) are asked to drop theirs with a real-time signal,
//! the way glibc applies setuid to all threads, and each thread's
//! `/proc/self/task/TID/status` is checked afterwards.
//!
//! One exception is decided at run time: kernels before 6.5 with
//! `kernel.unprivileged_bpf_disabled` set refuse every bpf(2) call without
//! CAP_BPF (CAP_SYS_ADMIN before 5.8), even on maps the agent already holds,
//! and the agent reads its lost-record counters at exit. The agent probes for
//! that gate (a map lookup on fd -1 with only the kept capabilities effective:
//! EPERM means the gate is there) and then keeps that one capability too.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// True when `caps` (CapEff) allow loading and attaching the probes.
pub fn privileged(caps: u64) -> bool {
    let has = |c: u32| caps & (1u64 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// The process's effective capabilities (CapEff of /proc/self/status).
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// What the running agent keeps: /proc reads of every process.
pub const KEEP: &[u32] = &[CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE];

/// Capability names by number (linux/capability.h).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The name of capability `n` (`CAP_<n>` for numbers newer than this table).
pub fn name(n: u32) -> String {
    NAMES.get(n as usize).map(|s| (*s).to_owned()).unwrap_or_else(|| format!("CAP_{n}"))
}

/// A set of capabilities as the kernel's 64-bit mask.
pub fn mask(caps: &[u32]) -> u64 {
    caps.iter().filter(|&&c| c < 64).fold(0, |m, &c| m | (1 << c))
}

/// The names of the capabilities in `m`, lowest first.
pub fn names(m: u64) -> Vec<String> {
    (0..64).filter(|c| m & (1 << c) != 0).map(name).collect()
}

/// The capability sets of a thread, from its `/proc/.../status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCaps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl ThreadCaps {
    /// Parses the `Cap*:` lines of a `/proc/PID/status` text.
    pub fn parse(status: &str) -> Option<ThreadCaps> {
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        };
        Some(ThreadCaps {
            inheritable: field("CapInh:")?,
            permitted: field("CapPrm:")?,
            effective: field("CapEff:")?,
            bounding: field("CapBnd:")?,
            // Kernels before 4.3 have no ambient set.
            ambient: field("CapAmb:").unwrap_or(0),
        })
    }

    /// True when no set holds anything beyond `keep` (the bounding set only
    /// counts when `bounding` is asked for).
    pub fn within(&self, keep: u64, bounding: bool) -> bool {
        let extra = !keep;
        self.permitted & extra == 0
            && self.effective & extra == 0
            && self.inheritable & extra == 0
            && self.ambient & extra == 0
            && (!bounding || self.bounding & extra == 0)
    }
}

/// What [`drop_to`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Permitted capabilities given up.
    pub dropped: u64,
    /// Permitted capabilities kept.
    pub kept: u64,
    /// Whether the bounding set was trimmed too (needs CAP_SETPCAP).
    pub bounding_trimmed: bool,
    /// Threads of the process when it was done.
    pub threads: usize,
}

/// Drops every capability but [`KEEP`] (plus CAP_BPF/CAP_SYS_ADMIN where the
/// kernel gates bpf(2) on maps already held) from every thread, and logs what
/// it dropped. Never fails: a failure is logged as a warning and the agent
/// runs on with its capabilities.
pub fn drop_after_attach() {
    let mut keep = mask(KEEP);
    if let Some(extra) = bpf_gate_capability() {
        tracing::info!(
            "capabilities: this kernel refuses bpf(2) on held maps without {}; keeping it for the exit counters",
            name(extra)
        );
        keep |= 1 << extra;
    }
    match drop_to(keep) {
        Ok(r) if r.dropped == 0 => {
            tracing::info!(kept = ?names(r.kept), "capabilities: nothing to drop");
        }
        Ok(r) => tracing::info!(
            dropped = ?names(r.dropped),
            kept = ?names(r.kept),
            bounding_set_trimmed = r.bounding_trimmed,
            threads = r.threads,
            "capabilities dropped after attaching the probes"
        ),
        Err(e) => tracing::warn!("capabilities not (all) dropped, running on: {e}"),
    }
}

// ---------------------------------------------------------------------------
// The system calls

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// (effective, permitted, inheritable) of the calling thread.
fn capget() -> std::io::Result<(u64, u64, u64)> {
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData (version 3) through valid pointers.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

/// capset on the calling thread; returns 0 or the errno. Async-signal-safe.
fn capset(effective: u64, permitted: u64, inheritable: u64) -> i32 {
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData { effective: effective as u32, permitted: permitted as u32, inheritable: inheritable as u32 },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: capset reads the header and two CapData through valid pointers.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r == 0 { 0 } else { errno() }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The plan every thread applies (set before the signal is sent).
static PLAN_KEEP: AtomicU64 = AtomicU64::new(u64::MAX);
/// Bounding-set capabilities to drop (0 without CAP_SETPCAP).
static PLAN_BOUNDING: AtomicU64 = AtomicU64::new(0);
static ACKS: AtomicUsize = AtomicUsize::new(0);
static FAILURES: AtomicUsize = AtomicUsize::new(0);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// Capabilities [`drop_to`] keeps permitted but not effective: raised only
/// as ambient capabilities of a child ([`with_ambient`]); CAP_NET_ADMIN for
/// the firewall snapshot's `nft`.
static PERMITTED_ONLY: AtomicU64 = AtomicU64::new(0);

/// Asks the coming [`drop_to`] to keep `caps` permitted (never effective).
pub fn keep_permitted_only(caps: u64) {
    PERMITTED_ONLY.store(caps, Ordering::SeqCst);
}

/// Runs `f` (which spawns a child) with `cap` in the calling thread's
/// inheritable and ambient sets, so the child gets it and the agent never
/// has it effective; then lowers it again. Without `cap` permitted, `f` runs
/// as is (the child then reports its own permission error).
pub fn with_ambient<T>(cap: u32, f: impl FnOnce() -> T) -> T {
    let bit = 1u64 << cap;
    let Ok((eff, prm, inh)) = capget() else { return f() };
    if prm & bit == 0 || eff & bit != 0 {
        // Not ours to give, or held effective already (root without a drop:
        // the child gets it anyway).
        return f();
    }
    if capset(eff, prm, inh | bit) != 0 {
        return f();
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            cap as libc::c_ulong,
            0,
            0,
        )
    };
    let r = f();
    // SAFETY: as above.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_LOWER as libc::c_ulong,
            cap as libc::c_ulong,
            0,
            0,
        )
    };
    capset(eff, prm, inh);
    r
}

/// Applies the plan to the calling thread: bounding set, ambient set, then
/// permitted/effective/inheritable. Only raw system calls: async-signal-safe.
fn apply_plan_here() -> i32 {
    let keep = PLAN_KEEP.load(Ordering::SeqCst);
    let bounding = PLAN_BOUNDING.load(Ordering::SeqCst);
    for cap in 0..64u64 {
        if bounding & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments. EINVAL (a number the
            // kernel does not know) is fine.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    // SAFETY: prctl with integer arguments; EINVAL on kernels without ambient sets.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: as in capget.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) } != 0 {
        return errno();
    }
    let held = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    let permitted = held & (keep | PERMITTED_ONLY.load(Ordering::SeqCst));
    capset(permitted & keep, permitted, 0)
}

extern "C" fn on_signal(_sig: libc::c_int) {
    // SAFETY: errno is thread-local; saved and restored around the handler.
    let saved = unsafe { *errno_location() };
    if apply_plan_here() != 0 {
        FAILURES.fetch_add(1, Ordering::SeqCst);
    }
    ACKS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: see above.
    unsafe { *errno_location() = saved };
}

unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns the calling thread's errno.
    unsafe { libc::__errno_location() }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn threads() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn thread_caps(tid: i32) -> Option<ThreadCaps> {
    ThreadCaps::parse(&std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?)
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAP_BPF + 1)
}

/// The capability bpf(2) needs on this kernel for maps already held, when it
/// gates every call on one (kernels before 6.5 with unprivileged BPF
/// disabled): CAP_BPF, or CAP_SYS_ADMIN on kernels without CAP_BPF.
pub fn bpf_gate_capability() -> Option<u32> {
    let (eff, prm, inh) = capget().ok()?;
    let keep = mask(KEEP);
    if eff & !keep == 0 {
        return None; // nothing to give up
    }
    if capset(eff & keep, prm, inh) != 0 {
        return None;
    }
    // BPF_MAP_LOOKUP_ELEM on fd -1: EBADF when the call got past the gate.
    let attr = [0u8; 32];
    let mut with_fd = attr;
    with_fd[..4].copy_from_slice(&(-1i32).to_ne_bytes());
    // SAFETY: bpf reads `size` bytes of the attribute, which is that long.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, 1 as libc::c_long, with_fd.as_ptr(), with_fd.len() as libc::c_uint)
    };
    let err = if r < 0 { errno() } else { 0 };
    if capset(eff, prm, inh) != 0 {
        tracing::warn!("capabilities: cannot restore the effective set after probing bpf(2)");
    }
    if err != libc::EPERM {
        return None;
    }
    Some(if last_cap() >= CAP_BPF { CAP_BPF } else { CAP_SYS_ADMIN })
}

/// Drops every capability outside `keep` from every thread of the process
/// (permitted, effective, inheritable, ambient, and the bounding set when
/// CAP_SETPCAP allows it), then checks every thread.
pub fn drop_to(keep: u64) -> Result<Report, String> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (eff, prm, _) = capget().map_err(|e| format!("capget: {e}"))?;
    let all = if last_cap() >= 63 { u64::MAX } else { (1u64 << (last_cap() + 1)) - 1 };
    let can_trim_bounding = eff & (1 << CAP_SETPCAP) != 0;
    let me = gettid();
    let bounding_before = thread_caps(me).map(|c| c.bounding).unwrap_or(all);
    PLAN_KEEP.store(keep, Ordering::SeqCst);
    let also = PERMITTED_ONLY.load(Ordering::SeqCst);
    PLAN_BOUNDING
        .store(if can_trim_bounding { bounding_before & all & !(keep | also) } else { 0 }, Ordering::SeqCst);
    // What a thread may still hold (PERMITTED_ONLY only permitted, as planned).
    let keep = keep | also;

    // Every other thread first (the handler is installed once and stays: a
    // late signal only applies the same plan again).
    let sig = libc::SIGRTMIN() + 4;
    install_handler(sig)?;
    let pid = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last_pending = Vec::new();
    for _round in 0..10 {
        let pending: Vec<i32> = threads()
            .into_iter()
            .filter(|&t| t != me)
            .filter(|&t| thread_caps(t).is_some_and(|c| !c.within(keep, can_trim_bounding)))
            .collect();
        if pending.is_empty() {
            last_pending.clear();
            break;
        }
        ACKS.store(0, Ordering::SeqCst);
        let mut sent = 0;
        for &tid in &pending {
            // SAFETY: tgkill with integer arguments; ESRCH when the thread is gone.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) } == 0 {
                sent += 1;
            }
        }
        while ACKS.load(Ordering::SeqCst) < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        last_pending = pending;
        if Instant::now() >= deadline {
            break;
        }
    }
    // This thread last.
    let r = apply_plan_here();
    if r != 0 {
        return Err(format!("capset: {}", std::io::Error::from_raw_os_error(r)));
    }
    let all_threads = threads();
    let unchanged: Vec<i32> = all_threads
        .iter()
        .copied()
        .filter(|&t| thread_caps(t).is_some_and(|c| !c.within(keep, can_trim_bounding)))
        .collect();
    if !unchanged.is_empty() {
        return Err(format!(
            "threads {unchanged:?} still hold capabilities beyond {:?} (signalled last round: {last_pending:?}, failures: {})",
            names(keep),
            FAILURES.load(Ordering::SeqCst)
        ));
    }
    Ok(Report {
        dropped: prm & !keep,
        kept: prm & keep,
        bounding_trimmed: can_trim_bounding,
        threads: all_threads.len(),
    })
}

fn install_handler(sig: libc::c_int) -> Result<(), String> {
    // SAFETY: a zeroed sigaction is a valid start; the handler only makes raw
    // system calls and touches atomics (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_masks() {
        assert_eq!(name(CAP_BPF), "CAP_BPF");
        assert_eq!(name(CAP_SYS_PTRACE), "CAP_SYS_PTRACE");
        assert_eq!(name(63), "CAP_63");
        assert_eq!(mask(KEEP), (1 << 2) | (1 << 19));
        assert_eq!(names(mask(KEEP)), ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]);
        assert_eq!(NAMES[40], "CAP_CHECKPOINT_RESTORE");
    }

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tshrike\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\n\
                    CapEff:\t0000000000080004\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        let c = ThreadCaps::parse(text).expect("parsed");
        assert_eq!(c.permitted, 0x1ff_feff_ffff);
        assert_eq!(c.effective, mask(KEEP));
        assert!(!c.within(mask(KEEP), false));
        let dropped = ThreadCaps { permitted: c.effective, ..c };
        assert!(dropped.within(mask(KEEP), false));
        assert!(!dropped.within(mask(KEEP), true), "the bounding set still has everything");
        assert_eq!(ThreadCaps::parse("Name:\tx\n"), None);
    }

    /// The real drop, in a child process (it cannot be undone): this test
    /// binary again, running only `drop_in_child` with SHRIKE_CAPS_CHILD set.
    #[test]
    fn drops_on_every_thread() {
        let (_, prm, _) = capget().expect("capget");
        if prm & !mask(KEEP) == 0 {
            eprintln!("SKIPPED: this process holds no capability to drop");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "caps::tests::drop_in_child", "--nocapture", "--test-threads=1"])
            .env("SHRIKE_CAPS_CHILD", "1")
            .output()
            .expect("running the child");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(text.contains("CHILD OK"), "the child did not run the check:\n{text}");
    }

    #[test]
    fn drop_in_child() {
        if std::env::var_os("SHRIKE_CAPS_CHILD").is_none() {
            return;
        }
        // Threads that exist before the drop, and one started after it.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        let keep = mask(KEEP);
        let report = drop_to(keep).expect("drop_to");
        assert!(report.threads >= 4, "{report:?}");
        assert_ne!(report.dropped, 0);
        let late = std::thread::spawn(|| thread_caps(gettid()).expect("own status"));
        let late_caps = late.join().expect("late thread");
        assert!(late_caps.within(keep, report.bounding_trimmed), "{late_caps:?}");
        for t in threads() {
            let c = thread_caps(t).expect("status");
            assert!(c.within(keep, report.bounding_trimmed), "thread {t}: {c:?}");
        }
        // The dropped capabilities are gone for good: raising one fails.
        let (_, prm, inh) = capget().expect("capget");
        assert_ne!(capset(prm | (1 << CAP_BPF), prm | (1 << CAP_BPF), inh), 0);
        // Again: nothing left to drop, still fine.
        assert_eq!(drop_to(keep).expect("second drop").dropped, 0);
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().expect("worker");
        }
        println!("CHILD OK");
    }
}
