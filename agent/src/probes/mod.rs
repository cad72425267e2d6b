//! Loading the kernel object and attaching its programs.

pub mod compat;
pub mod pam;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapType, PerCpuArray},
    programs::{TracePoint, UProbe, uprobe::UProbeScope},
};
use clap::Args;
use shrike_common::{Config, kind, names};

use crate::events::Kind;
use compat::{Hook, ProbeSpec};

/// The kernel objects, built by agent/build.rs from agent-ebpf.
static OBJ_RING: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shrike-ring.bpf.o"));
static OBJ_PERF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shrike-perf.bpf.o"));

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Ring buffer when the kernel has it (>= 5.8), else perf event arrays.
    Auto,
    Ringbuf,
    Perf,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "not permitted to load eBPF programs ({0}): run as root, or with CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH"
    )]
    Permission(String),
    #[error("the kernel has no BPF ring buffer (Linux < 5.8): use --transport perf or auto")]
    NoRingBuf,
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0}")]
    Tracefs(std::io::Error),
    #[error("failed to load the eBPF object: {0}")]
    Load(String),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("failed to write map {0}: {1}")]
    Map(&'static str, String),
    #[error("no probe could be attached: {0}")]
    NothingAttached(String),
}

/// The probes' and reader's flags (`shrike events`, `shrike run`).
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Kernel-to-agent transport. `perf` forces perf event arrays (the fallback
    /// for kernels without a BPF ring buffer).
    #[arg(long, value_enum, default_value = "auto")]
    pub transport: Transport,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    /// The kernel maps all of it into the agent (twice: it counts double in
    /// RSS); 4 MiB holds ~150 ms of a 50K connects/s storm.
    #[arg(long, default_value_t = 4 << 20, value_parser = parse_ring_size)]
    pub ring_size: u32,
    /// How often the reader collects records that did not wake it.
    #[arg(long, default_value = "20ms", value_parser = crate::units::parse_interval)]
    pub poll_interval: std::time::Duration,
    /// Waiting bytes in the ring buffer that wake the reader before its timer
    /// [default: an eighth of the ring].
    #[arg(long)]
    pub wake_bytes: Option<u32>,
    /// Kinds that wake the reader at once, for the lowest latency.
    #[arg(long, value_delimiter = ',', value_parser = Kind::parse, default_value = "login,privilege")]
    pub wake_kinds: Vec<Kind>,
    /// Pages per CPU of each perf buffer (a power of two).
    #[arg(long, default_value_t = 256, value_parser = parse_pages)]
    pub perf_pages: usize,
    /// argv entries captured per exec (1-64); more set `args_truncated`.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_args: u32,
    /// Bytes captured per argument, NUL included (2-512); longer set `args_truncated`.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(2..=512))]
    pub max_arg_len: u32,
    /// libpam to attach the login probes to [default: found with ldconfig].
    #[arg(long)]
    pub libpam: Option<PathBuf>,
    /// Where the host's /proc is (a container mounts it elsewhere).
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Failed (ENOENT) execs of a PATH search: `fold` counts them into the
    /// exec of the same program that follows (`path_misses`), and reports
    /// one that nothing follows; `report` reports each [default: fold;
    /// `exec_misses` in the config file].
    #[arg(long, value_enum, value_name = "fold|report")]
    pub exec_misses: Option<crate::enrich::exec_misses::ExecMisses>,
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if !n.is_power_of_two() || n < 4096 {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

fn parse_pages(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two"));
    }
    Ok(n)
}

/// What to load and attach.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub kinds: BTreeSet<Kind>,
    pub transport: Transport,
    pub ring_bytes: u32,
    pub max_args: u32,
    pub max_arg_len: u32,
    /// Kinds whose records wake the reader at once (ring buffer).
    pub wake_kinds: BTreeSet<Kind>,
    /// Bytes waiting in the ring buffer that wake the reader.
    pub wake_bytes: u32,
    /// libpam to attach the login probes to; found with ldconfig when None.
    pub libpam: Option<PathBuf>,
    /// File events: the watched prefixes the kernel compares paths with
    /// (empty: nothing absolute is watched).
    pub watch: Vec<shrike_common::WatchPrefix>,
}

/// Outcome of one probe, for the log and for `shrike check`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeStatus {
    pub program: &'static str,
    pub attach: String,
    pub attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub struct Probes {
    /// Declared before `ebpf`: fields drop in order, so the programs are
    /// detached before their maps close.
    _links: Links,
    pub ebpf: Ebpf,
    pub transport: Transport,
    pub status: Vec<ProbeStatus>,
}

impl Probes {
    /// Detaches every program now (blocking: the kernel's grace periods),
    /// keeping the maps: after this no record is produced, so a reader that
    /// drains the buffers sees everything the `SENT` counters count.
    pub fn detach(&mut self) {
        drop(std::mem::take(&mut self._links));
    }
}

/// The attached programs' links (`TracePointLink`, `UProbeLink`, taken from
/// their programs with `take_link`); dropping this detaches them, in parallel.
///
/// Each detach waits for RCU grace periods in the kernel (Linux 6.18: a
/// tasks-trace grace period in `perf_event_detach_bpf_prog`, then another in
/// `perf_trace_event_unreg` under `event_mutex`, plus a normal one), about
/// 90 ms a link here: with the ~110 file, process and network hooks, 8-11 s
/// when done one by one (what dropping `Ebpf` does). Concurrent detaches share
/// the first wait; only the `event_mutex` part stays serial: 3-4 s measured.
#[derive(Default)]
pub struct Links(Vec<Box<dyn Send>>);

impl Drop for Links {
    fn drop(&mut self) {
        let start = std::time::Instant::now();
        let n = self.0.len();
        // One thread a link (they only sleep in the kernel; 2, 4 and 16
        // threads were measured slower). A thread that cannot start drops its
        // closure, and so its link, here: detached all the same.
        std::thread::scope(|s| {
            for link in self.0.drain(..) {
                let _ = std::thread::Builder::new()
                    .name("shrike-detach".into())
                    .spawn_scoped(s, move || drop(link));
            }
        });
        tracing::debug!(links = n, ms = start.elapsed().as_millis() as u64, "probes detached");
    }
}

/// Kinds whose probes must run for `wanted` to be reported right: every event
/// takes its ppid and exe from the process table, which needs fork and exit to
/// know short-lived processes and exec to know what each one runs (without
/// exec, a forked child keeps its parent's exe).
pub fn collected_kinds(wanted: &BTreeSet<Kind>) -> BTreeSet<Kind> {
    let mut k = wanted.clone();
    k.extend([Kind::Exec, Kind::Fork, Kind::Exit]);
    k
}

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// The tracefs mount aya resolves tracepoint ids in; mounted when missing (a
/// fresh machine, or a privileged container with /sys but no tracefs).
pub fn ensure_tracefs() -> Result<PathBuf, ProbeError> {
    let path = Path::new(TRACEFS);
    if path.join("events").is_dir() {
        return Ok(path.to_path_buf());
    }
    let debug = Path::new("/sys/kernel/debug/tracing");
    if debug.join("events").is_dir() {
        return Ok(debug.to_path_buf());
    }
    let target = std::ffi::CString::new(TRACEFS).expect("static path");
    let fstype = std::ffi::CString::new("tracefs").expect("static");
    let source = std::ffi::CString::new("nodev").expect("static");
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let r = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(ProbeError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(path.to_path_buf())
}

pub fn ringbuf_supported() -> bool {
    aya::sys::is_map_supported(MapType::RingBuf).unwrap_or(false)
}

fn permission_or(
    e: impl std::fmt::Display + std::fmt::Debug,
    f: impl FnOnce(String) -> ProbeError,
) -> ProbeError {
    let text = e.to_string();
    let lower = format!("{e:?}").to_lowercase();
    if lower.contains("permission denied")
        || lower.contains("operation not permitted")
        || lower.contains("eperm")
    {
        ProbeError::Permission(text)
    } else {
        f(text)
    }
}

pub fn load(opts: &ProbeOptions) -> Result<Probes, ProbeError> {
    let caps = crate::caps::effective_caps();
    if !crate::caps::privileged(caps) {
        return Err(ProbeError::Permission(format!(
            "effective capabilities {caps:#x} lack CAP_BPF+CAP_PERFMON and CAP_SYS_ADMIN"
        )));
    }
    let tracefs = ensure_tracefs()?;
    let transport = match opts.transport {
        Transport::Auto if ringbuf_supported() => Transport::Ringbuf,
        Transport::Auto => Transport::Perf,
        Transport::Ringbuf if !ringbuf_supported() => return Err(ProbeError::NoRingBuf),
        t => t,
    };
    let mut loader = EbpfLoader::new();
    let obj = if transport == Transport::Ringbuf {
        loader.map_max_entries(names::EVENTS, opts.ring_bytes);
        OBJ_RING
    } else {
        OBJ_PERF
    };
    let mut ebpf = loader.load(obj).map_err(|e| permission_or(e, ProbeError::Load))?;

    let config = Config {
        agent_tgid: std::process::id(),
        max_args: opts.max_args,
        max_arg_len: opts.max_arg_len,
        wake_kinds: opts.wake_kinds.iter().fold(0, |m, k| m | (1 << k.raw())),
        wake_bytes: opts.wake_bytes,
        // Turned on once the fd-lifetime hooks are attached (below).
        dir_cache: 0,
        o_directory: libc::O_DIRECTORY as u32,
        o_nofollow: libc::O_NOFOLLOW as u32,
    };
    let mut cfg: Array<_, Config> = ebpf
        .map_mut(names::CONFIG)
        .ok_or(ProbeError::MissingMap(names::CONFIG))?
        .try_into()
        .map_err(|e: aya::maps::MapError| ProbeError::Map(names::CONFIG, e.to_string()))?;
    cfg.set(0, config, 0).map_err(|e| ProbeError::Map(names::CONFIG, e.to_string()))?;
    write_watch(&mut ebpf, &opts.watch)?;

    let collect = collected_kinds(&opts.kinds);
    let libpam = if collect.contains(&Kind::Login) {
        match opts.libpam.clone().map(Ok).unwrap_or_else(pam::find_libpam) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("login events disabled: {e}");
                None
            }
        }
    } else {
        None
    };

    let mut status = Vec::new();
    let mut links = Links::default();
    let mut formats = BTreeMap::new();
    let mut loaded = preload(&mut ebpf, &collect, &tracefs, libpam.is_some(), &mut formats);
    for spec in compat::table() {
        if !spec.kinds.iter().any(|k| collect.contains(k)) {
            continue;
        }
        let (attach, result) =
            attach_one(&mut ebpf, &spec, &tracefs, libpam.as_deref(), &mut loaded, &mut formats, &mut links);
        match &result {
            Ok(()) => tracing::debug!(program = spec.program, %attach, "attached"),
            Err(reason) if spec.optional => {
                tracing::debug!(program = spec.program, %attach, "optional probe not attached: {reason}")
            }
            Err(reason) => tracing::warn!(
                program = spec.program,
                %attach,
                kinds = ?spec.kinds,
                "probe skipped, its events will be missing: {reason}"
            ),
        }
        if let Err(reason) = &result
            && reason.starts_with("permission:")
        {
            return Err(ProbeError::Permission(reason.clone()));
        }
        status.push(ProbeStatus {
            program: spec.program,
            attach,
            attached: result.is_ok(),
            reason: result.err(),
        });
    }
    if !status.iter().any(|s| s.attached) {
        let reasons: Vec<_> = status.iter().filter_map(|s| s.reason.clone()).take(3).collect();
        return Err(ProbeError::NothingAttached(reasons.join("; ")));
    }
    if collect.contains(&Kind::File) {
        let tail = if dir_cache_ready(&status) { set_dir_tail(&mut ebpf) } else { Ok(()) };
        if let Err(e) = &tail {
            tracing::warn!(
                "file events: directory-fd cache off (paths relative to a directory fd all go to the agent): {e}"
            );
        }
        if dir_cache_ready(&status) && tail.is_ok() {
            update_config(&mut ebpf, |c| c.dir_cache = 1)?;
        } else if tail.is_ok() {
            tracing::warn!(
                "file events: a hook that ends a directory fd (close, dup2/dup3, close_range, unshare) is \
                 missing, so paths relative to a directory fd all go to the agent (slower, nothing missed)"
            );
        }
    }
    Ok(Probes { _links: links, ebpf, transport, status })
}

/// The kernel's directory-fd cache may be used: every fd-lifetime hook is
/// attached, or its syscall does not exist on this kernel.
pub fn dir_cache_ready(status: &[ProbeStatus]) -> bool {
    compat::FD_LIFETIME.iter().all(|spec| {
        let compat::Hook::Tracepoint { category, name } = spec.hook else { return false };
        let attach = format!("tracepoint {category}/{name}");
        status.iter().any(|s| {
            s.attach == attach
                && (s.attached
                    || (spec.optional
                        && s.reason.as_deref().is_some_and(|r| r.starts_with("tracepoint not available"))))
        })
    })
}

/// Loads the directory-open program the open hooks tail-call
/// (agent-ebpf/src/file.rs, `FILE_TAIL` slot 0).
fn set_dir_tail(ebpf: &mut Ebpf) -> Result<(), String> {
    let prog: &mut TracePoint = ebpf
        .program_mut("file_dir_open")
        .ok_or("program file_dir_open not in the eBPF object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    prog.load().map_err(|e| verifier_or_permission("load file_dir_open", e))?;
    let fd = prog.fd().map_err(|e| format!("{e}"))?.try_clone().map_err(|e| format!("{e}"))?;
    let mut tail: aya::maps::ProgramArray<_> = ebpf
        .map_mut("FILE_TAIL")
        .ok_or("map FILE_TAIL not in the eBPF object")?
        .try_into()
        .map_err(|e: aya::maps::MapError| format!("{e}"))?;
    tail.set(0, &fd, 0).map_err(|e| format!("FILE_TAIL: {e}"))
}

/// Reads, changes and writes back the kernel's [`Config`].
fn update_config(ebpf: &mut Ebpf, f: impl FnOnce(&mut Config)) -> Result<(), ProbeError> {
    let mut cfg: Array<_, Config> = ebpf
        .map_mut(names::CONFIG)
        .ok_or(ProbeError::MissingMap(names::CONFIG))?
        .try_into()
        .map_err(|e: aya::maps::MapError| ProbeError::Map(names::CONFIG, e.to_string()))?;
    let mut c = cfg.get(&0, 0).map_err(|e| ProbeError::Map(names::CONFIG, e.to_string()))?;
    f(&mut c);
    cfg.set(0, c, 0).map_err(|e| ProbeError::Map(names::CONFIG, e.to_string()))
}

/// Writes the watched prefixes into `WATCH` (unused slots zeroed: the first
/// empty one ends the list), their first words into `WATCH_HEAD` before
/// (the kernel's pre-check: a call in flight meanwhile is judged as by the
/// new list's first words and then the old or the new prefixes).
fn write_watch(ebpf: &mut Ebpf, list: &[shrike_common::WatchPrefix]) -> Result<(), ProbeError> {
    let mut head: Array<_, shrike_common::WatchHead> = ebpf
        .map_mut(names::WATCH_HEAD)
        .ok_or(ProbeError::MissingMap(names::WATCH_HEAD))?
        .try_into()
        .map_err(|e: aya::maps::MapError| ProbeError::Map(names::WATCH_HEAD, e.to_string()))?;
    head.set(0, shrike_common::WatchHead::new(list), 0)
        .map_err(|e| ProbeError::Map(names::WATCH_HEAD, e.to_string()))?;
    let mut watch: Array<_, shrike_common::WatchPrefix> = ebpf
        .map_mut(names::WATCH)
        .ok_or(ProbeError::MissingMap(names::WATCH))?
        .try_into()
        .map_err(|e: aya::maps::MapError| ProbeError::Map(names::WATCH, e.to_string()))?;
    let empty = shrike_common::WatchPrefix {
        words: [0; shrike_common::WATCH_WORDS],
        masks: [0; shrike_common::WATCH_WORDS],
        nwords: 0,
        _pad: 0,
    };
    for i in 0..shrike_common::WATCH_MAX {
        let p = list.get(i as usize).copied().unwrap_or(empty);
        watch.set(i, p, 0).map_err(|e| ProbeError::Map(names::WATCH, e.to_string()))?;
    }
    Ok(())
}

/// Replaces the watched prefixes while the probes run (SIGHUP, remote
/// configuration). The slots are written in place, so a call in flight may
/// compare with a mix of the two lists; the directory-fd cache's generation
/// is bumped after, which drops every mark made against the old list.
pub fn set_watch(ebpf: &mut Ebpf, list: &[shrike_common::WatchPrefix]) -> Result<(), ProbeError> {
    if list.len() > shrike_common::WATCH_MAX as usize {
        return Err(ProbeError::Map(names::WATCH, format!("{} prefixes: at most 32", list.len())));
    }
    write_watch(ebpf, list)?;
    update_config(ebpf, |c| {
        if c.dir_cache != 0 {
            c.dir_cache = c.dir_cache.wrapping_add(1).max(1);
        }
    })
}

/// Formats of the tracepoints read so far, by `category/name`.
type Formats = BTreeMap<String, Result<HashMap<String, usize>, String>>;

/// Loads (verifies) the programs the attach loop will need, on a thread per
/// CPU: verification is most of the start (~100 programs, 0.5-1.5 s on one
/// CPU of this 2-core VM) and the kernel verifies a privileged loader's
/// programs in parallel. The programs whose tracepoint is missing or whose
/// fields moved are left to the attach loop, which reports them.
/// The outcome per program: the attach loop loads no program again, and
/// reports a failed load as its probe's reason.
fn preload(
    ebpf: &mut Ebpf,
    collect: &BTreeSet<Kind>,
    tracefs: &Path,
    libpam: bool,
    formats: &mut Formats,
) -> HashMap<&'static str, Result<(), String>> {
    let mut wanted = HashSet::new();
    for spec in compat::table() {
        if !spec.kinds.iter().any(|k| collect.contains(k)) {
            continue;
        }
        let usable = match spec.hook {
            Hook::Tracepoint { category, name } => formats
                .entry(format!("{category}/{name}"))
                .or_insert_with(|| {
                    compat::read_format(tracefs, category, name)
                        .map_err(|e| format!("tracepoint not available: {e}"))
                })
                .as_ref()
                .is_ok_and(|f| compat::check_fields(f, spec.fields).is_ok()),
            Hook::Pam { .. } => libpam,
        };
        if usable {
            wanted.insert(spec.program);
        }
    }
    let work: Vec<(&'static str, &mut aya::programs::Program)> =
        ebpf.programs_mut().filter_map(|(name, prog)| wanted.get(name).map(|&n| (n, prog))).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let mut shares: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, w) in work.into_iter().enumerate() {
        shares[i % threads].push(w);
    }
    std::thread::scope(|s| {
        // A thread that cannot start drops its share: the attach loop
        // loads those programs itself.
        let handles: Vec<_> = shares
            .into_iter()
            .filter_map(|share| {
                std::thread::Builder::new()
                    .name("shrike-load".into())
                    .spawn_scoped(s, move || {
                        share
                            .into_iter()
                            .filter_map(|(name, prog)| {
                                let r = match prog {
                                    aya::programs::Program::TracePoint(p) => p.load(),
                                    aya::programs::Program::UProbe(p) => p.load(),
                                    _ => return None,
                                };
                                Some((name, r.map_err(|e| verifier_or_permission("load", e))))
                            })
                            .collect::<Vec<_>>()
                    })
                    .ok()
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

/// Loads `name` unless done before; a failed load is that probe's reason
/// (and the reason of every other probe of the same program).
fn ensure_loaded(
    loaded: &mut HashMap<&'static str, Result<(), String>>,
    name: &'static str,
    load: impl FnOnce() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), String> {
    loaded.entry(name).or_insert_with(|| load().map_err(|e| verifier_or_permission("load", e))).clone()
}

fn attach_one(
    ebpf: &mut Ebpf,
    spec: &ProbeSpec,
    tracefs: &Path,
    libpam: Option<&Path>,
    loaded: &mut HashMap<&'static str, Result<(), String>>,
    formats: &mut Formats,
    links: &mut Links,
) -> (String, Result<(), String>) {
    let describe = match spec.hook {
        Hook::Tracepoint { category, name } => format!("tracepoint {category}/{name}"),
        Hook::Pam { symbol, ret } => format!(
            "{} {}:{symbol}",
            if ret { "uretprobe" } else { "uprobe" },
            libpam.map(|p| p.display().to_string()).unwrap_or_else(|| "libpam".into())
        ),
    };
    let result = (|| -> Result<(), String> {
        let Some(prog) = ebpf.program_mut(spec.program) else {
            return Err(format!("program {} not in the eBPF object", spec.program));
        };
        match spec.hook {
            Hook::Tracepoint { category, name } => {
                let key = format!("{category}/{name}");
                let fields = formats
                    .entry(key)
                    .or_insert_with(|| {
                        compat::read_format(tracefs, category, name)
                            .map_err(|e| format!("tracepoint not available: {e}"))
                    })
                    .clone()?;
                compat::check_fields(&fields, spec.fields)?;
                let tp: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
                ensure_loaded(loaded, spec.program, || tp.load())?;
                let id = tp.attach(category, name).map_err(|e| verifier_or_permission("attach", e))?;
                links.0.push(Box::new(tp.take_link(id).map_err(|e| format!("{e}"))?));
            }
            Hook::Pam { symbol, .. } => {
                let Some(lib) = libpam else {
                    return Err("libpam not found".into());
                };
                if let Some(why) = pam::unprobeable(lib, symbol) {
                    return Err(why);
                }
                let up: &mut UProbe = prog.try_into().map_err(|e| format!("{e}"))?;
                ensure_loaded(loaded, spec.program, || up.load())?;
                let id = up
                    .attach(symbol, lib, UProbeScope::AllProcesses)
                    .map_err(|e| verifier_or_permission("attach", e))?;
                links.0.push(Box::new(up.take_link(id).map_err(|e| format!("{e}"))?));
            }
        }
        Ok(())
    })();
    (describe, result)
}

fn verifier_or_permission(what: &str, e: aya::programs::ProgramError) -> String {
    let dbg = format!("{e:?}").to_lowercase();
    // The verifier rejects a program with EACCES too; its log then ends with
    // "processed N insns": that is this program failing on this kernel (skip
    // it), not missing privileges (Debian's 6.1 under `cargo xtask vm-test`).
    let verifier = dbg.contains("processed ") && dbg.contains(" insns");
    if !verifier && (dbg.contains("permission denied") || dbg.contains("operation not permitted")) {
        format!("permission: {what}: {e}")
    } else {
        // Verifier logs are long: keep the last lines, where the reason is.
        let full = format!("{what} failed: {e:#}");
        let lines: Vec<&str> = full.lines().collect();
        let tail = lines.len().saturating_sub(6);
        lines[tail..].join(" | ")
    }
}

/// Per-kind counters summed over CPUs, from the LOST or SENT map.
pub fn read_counters(ebpf: &Ebpf, map: &'static str) -> BTreeMap<Kind, u64> {
    let mut out = BTreeMap::new();
    let Some(m) = ebpf.map(map) else { return out };
    let Ok(arr) = PerCpuArray::<_, u64>::try_from(m) else { return out };
    for k in Kind::ALL {
        if let Ok(vals) = arr.get(&k.raw(), 0) {
            let sum: u64 = vals.iter().sum();
            out.insert(k, sum);
        }
    }
    debug_assert!(kind::MAX as usize > Kind::ALL.len());
    out
}
