//! `cargo xtask bench --ioc [--ioc-entries N]`: threat-intelligence lists
//! at scale. Writes a list of N entries (default 1,000,000; a mix like a
//! merged set of public feeds: 40 % IPv4 addresses, 10 % IPv4 CIDRs, 5 %
//! IPv6 addresses, 5 % IPv6 /48s, 20 % SHA-256s, 20 % domains) to a
//! temporary file, then has the release agent's hidden `shrike ioc bench`
//! load it in-process: load time, the RSS the sets add (VmRSS before and
//! after in the agent process; the parse's peak from VmHWM), and the cost of
//! one lookup of each type over a million random probes. No root needed.

use std::{
    io::{BufWriter, Write},
    path::Path,
    process::Command,
};

use anyhow::{Context, bail};
use serde_json::Value;

/// Targets (issue 13): load under 2 s and under 64 MiB of extra RSS.
const LOAD_MS: f64 = 2000.0;
const RSS_KIB: u64 = 64 * 1024;

/// xorshift64*: spread values, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Writes `n` entries to `path`.
pub fn generate(path: &Path, n: usize) -> anyhow::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "# shrike bench: {n} generated entries")?;
    let mut r = Rng(0x5eed_1234_abcd_ef01);
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for i in 0..n {
        let x = r.next();
        match i % 20 {
            0..=7 => {
                let a = x as u32;
                writeln!(w, "{}.{}.{}.{}", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255)?;
            }
            8 | 9 => {
                let bits = 16 + (x >> 40) % 15;
                let a = (x as u32) & (u32::MAX << (32 - bits));
                writeln!(w, "{}.{}.{}.{}/{bits}", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255)?;
            }
            10 => {
                let y = r.next();
                writeln!(
                    w,
                    "2001:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
                    x & 0xffff,
                    (x >> 16) & 0xffff,
                    (x >> 32) & 0xffff,
                    y & 0xffff,
                    (y >> 16) & 0xffff,
                    (y >> 32) & 0xffff,
                    (y >> 48) & 0xffff
                )?;
            }
            11 => writeln!(w, "2a0{:x}:{:x}:{:x}::/48", x & 0xf, (x >> 8) & 0xffff, (x >> 24) & 0xffff)?,
            12..=15 => {
                let mut s = String::with_capacity(64);
                for _ in 0..4 {
                    s.push_str(&format!("{:016x}", r.next()));
                }
                writeln!(w, "{s}")?;
            }
            _ => {
                let len = 6 + (x % 10) as usize;
                let mut v = x;
                let label: String = (0..len)
                    .map(|_| {
                        v = v.rotate_left(7) ^ 0x9E37_79B9;
                        LETTERS[(v % LETTERS.len() as u64) as usize] as char
                    })
                    .collect();
                let tld = ["com", "net", "org", "ru", "xyz", "top"][(x >> 50) as usize % 6];
                writeln!(w, "{label}{i}.{tld}")?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

pub fn run(agent: &Path, entries: usize, out: &Path) -> anyhow::Result<Value> {
    std::fs::create_dir_all(out)?;
    let list = out.join("ioc-bench-list.txt");
    generate(&list, entries).context("writing the generated list")?;
    let o = Command::new(agent)
        .args(["ioc", "bench"])
        .arg(&list)
        .args(["--lookups", "1000000"])
        .output()
        .with_context(|| format!("running {}", agent.display()))?;
    let _ = std::fs::remove_file(&list);
    eprint!("{}", String::from_utf8_lossy(&o.stderr));
    if !o.status.success() {
        bail!("shrike ioc bench failed ({})", o.status);
    }
    let v: Value = serde_json::from_slice(&o.stdout).context("shrike ioc bench output")?;
    let load = v["load_ms"].as_f64().unwrap_or(f64::NAN);
    let rss = v["rss_delta_kib"].as_u64().unwrap_or(u64::MAX);
    let peak = v["peak_delta_kib"].as_u64().unwrap_or(0);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("\nIoC lists, {} entries ({} bytes of list; {}):", v["entries"], v["file_bytes"], v["counts"]);
    println!("| measure | value | target | |");
    println!("|---|---|---|---|");
    println!("| load (parse, sort, merge) | {load:.0} ms | < {LOAD_MS:.0} ms | {} |", met(load < LOAD_MS));
    println!(
        "| RSS added (VmRSS after - before) | {:.1} MiB | < 64 MiB | {} |",
        rss as f64 / 1024.0,
        met(rss < RSS_KIB)
    );
    println!("| peak during the load (VmHWM - VmRSS before) | {:.1} MiB | | |", peak as f64 / 1024.0);
    for k in ["ipv4", "ipv6", "sha256", "domain"] {
        println!(
            "| lookup {k} | {:.0} ns | O(log n) | hits {} |",
            v["lookup_ns"][k].as_f64().unwrap_or(f64::NAN),
            v["hits"][k]
        );
    }
    std::fs::write(out.join("ioc.json"), serde_json::to_vec_pretty(&v)?)?;
    Ok(v)
}
