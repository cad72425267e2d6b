//! `shrike ioc check FILE...` (validate lists without the kernel) and the
//! hidden `shrike ioc bench FILE` that `cargo xtask bench --ioc` runs: load
//! time, RSS added by the sets, and the cost of one lookup of each type.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Instant,
};

use clap::{Args, Subcommand};

use super::list::IocSet;

#[derive(Debug, Clone, Args)]
pub struct IocArgs {
    #[command(subcommand)]
    pub command: IocCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum IocCommand {
    /// Parses list files as the agent does; prints `file:line: reason` for
    /// malformed lines and each file's counts (exit 2 when one cannot be read).
    Check {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Load time, RSS and lookup cost of one list (for `cargo xtask bench
    /// --ioc`).
    #[command(hide = true)]
    Bench {
        path: PathBuf,
        /// Lookups of each type timed.
        #[arg(long, default_value_t = 1_000_000)]
        lookups: usize,
    },
}

pub fn run(args: &IocArgs) -> i32 {
    match &args.command {
        IocCommand::Check { paths } => check(paths),
        IocCommand::Bench { path, lookups } => bench(path, *lookups),
    }
}

/// Prints each file's counts and malformed lines (`file:line: why`); exit 2
/// when a file cannot be read, 0 otherwise (malformed lines are skipped by
/// the agent too).
fn check(paths: &[PathBuf]) -> i32 {
    let mut code = 0;
    for p in paths {
        match IocSet::load(p) {
            Ok(set) => {
                for (line, why) in &set.malformed {
                    println!("{}:{line}: {why}", p.display());
                }
                let c = set.counts;
                if c.malformed > set.malformed.len() as u64 {
                    println!("{}: {} malformed lines in all", p.display(), c.malformed);
                }
                println!(
                    "{}: {} entries: {} IPv4, {} IPv6, {} CIDRs, {} SHA-256, {} domains; {} URL hosts that are names skipped; {} malformed lines",
                    p.display(),
                    c.entries(),
                    c.ipv4,
                    c.ipv6,
                    c.cidr,
                    c.sha256,
                    c.domains,
                    c.url_hosts_skipped,
                    c.malformed
                );
            }
            Err(e) => {
                eprintln!("{}: {e}", p.display());
                code = 2;
            }
        }
    }
    code
}

/// The resident set of this process, in KiB (`VmRSS`, or `VmHWM` for the
/// peak).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?.trim_start_matches(':').split_whitespace().next()?.parse().ok()
            })
        })
        .unwrap_or(0)
}

/// A small deterministic generator (xorshift64*): the bench needs spread
/// values, not secrecy.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// ns per call of `f` over `n` calls, and how many returned true.
fn time_lookups(n: usize, mut f: impl FnMut(usize) -> bool) -> (f64, usize) {
    let t = Instant::now();
    let mut hits = 0;
    for i in 0..n {
        if black_box(f(i)) {
            hits += 1;
        }
    }
    (t.elapsed().as_nanos() as f64 / n.max(1) as f64, hits)
}

fn bench(path: &Path, lookups: usize) -> i32 {
    // The probe values first, so their memory is not counted as the sets'.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let v4: Vec<IpAddr> = (0..lookups).map(|_| IpAddr::V4(Ipv4Addr::from(rng.next() as u32))).collect();
    let v6: Vec<IpAddr> = (0..lookups)
        .map(|_| IpAddr::V6(Ipv6Addr::from((u128::from(rng.next()) << 64) | u128::from(rng.next()))))
        .collect();
    let hashes: Vec<[u8; 32]> = (0..lookups)
        .map(|_| {
            let mut h = [0u8; 32];
            for c in h.chunks_mut(8) {
                c.copy_from_slice(&rng.next().to_le_bytes());
            }
            h
        })
        .collect();
    let names: Vec<String> =
        (0..lookups.min(100_000)).map(|i| format!("host{i}.cdn{}.example.net", i % 97)).collect();

    let rss_before = status_kib("VmRSS");
    let hwm_before = status_kib("VmHWM");
    let t = Instant::now();
    let set = match IocSet::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return 2;
        }
    };
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_after = status_kib("VmRSS");
    let hwm_after = status_kib("VmHWM");

    let (v4_ns, v4_hits) = time_lookups(v4.len(), |i| set.contains_ip(v4[i]));
    let (v6_ns, v6_hits) = time_lookups(v6.len(), |i| set.contains_ip(v6[i]));
    let (sha_ns, sha_hits) = time_lookups(hashes.len(), |i| set.contains_sha256(&hashes[i]));
    let (dom_ns, dom_hits) = time_lookups(names.len(), |i| set.match_domain(&names[i]).is_some());
    let out = serde_json::json!({
        "file": path,
        "file_bytes": std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        "counts": set.counts,
        "entries": set.counts.entries(),
        "load_ms": load_ms,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_delta_kib": rss_after.saturating_sub(rss_before),
        "peak_delta_kib": hwm_after.max(hwm_before).saturating_sub(rss_before),
        "lookup_ns": {
            "ipv4": v4_ns, "ipv6": v6_ns, "sha256": sha_ns, "domain": dom_ns,
        },
        "lookups": lookups,
        "hits": { "ipv4": v4_hits, "ipv6": v6_hits, "sha256": sha_hits, "domain": dom_hits },
    });
    println!("{out}");
    0
}
