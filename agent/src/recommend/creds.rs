//! Default IoT credentials: accounts of /etc/shadow (under `--root`) whose
//! password is a vendor default (pi/raspberry, root/root, admin/admin,
//! ubnt/ubnt...). The list is data: `deploy/default-credentials.txt` is
//! built in, `credential_lists` / `--credentials` add files of the same
//! form (`user:password`, `*:password` for any account, `#` comments).
//!
//! Hashes are verified with RustCrypto's crates: yescrypt (`$y$`, Debian 11+,
//! Raspberry Pi OS), sha-crypt (`$6$`, `$5$`), and md5-crypt (`$1$`, old
//! firmware) implemented here over md-5. A yescrypt guess costs tens of
//! milliseconds and 16 MiB by design (about 45 ms in a release build on the
//! project's machine), so a run stops after its CPU budget
//! (`credential_budget`, default 2 s of this thread's CPU time, or five
//! times that in wall time on a machine too busy to give it the CPU): a
//! user's own defaults are tried first, then the `*` ones; what the budget
//! left untried is counted and reported, and the check says it could not
//! finish.

use std::time::{Duration, Instant};

use super::{eval::Env, root, sources::Line};

/// The built-in list.
pub const BUILTIN_LIST: &str = include_str!("../../../deploy/default-credentials.txt");

#[derive(Clone, Debug)]
pub struct CredConfig {
    /// (name for messages, text) of each list.
    pub lists: Vec<(String, String)>,
    pub budget: Duration,
}

impl Default for CredConfig {
    fn default() -> Self {
        CredConfig { lists: vec![("builtin".into(), BUILTIN_LIST.into())], budget: Duration::from_secs(2) }
    }
}

/// What a scan did, for the report and the log.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CredStats {
    /// Accounts with a password hash.
    pub accounts: u64,
    pub guesses: u64,
    /// Guesses the budget left untried.
    pub untried: u64,
    /// Hashes of a scheme Shrike cannot verify (DES, bcrypt...).
    pub unsupported: u64,
    pub elapsed_ms: u64,
    /// CPU time of the guesses (what the budget counts).
    pub cpu_ms: u64,
    pub budget_exhausted: bool,
}

/// (user or "*", password, "list:line") entries.
fn entries(cfg: &CredConfig) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (name, text) in &cfg.lists {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            if let Some((u, p)) = line.split_once(':') {
                out.push((u.trim().to_owned(), p.to_owned(), format!("{name}:{}", i + 1)));
            }
        }
    }
    out
}

/// Reads a list file, rejecting lines that are not `user:password`.
pub fn check_list(name: &str, text: &str) -> Result<(), String> {
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') && !t.contains(':') {
            return Err(format!("{name}:{}: expected user:password", i + 1));
        }
    }
    Ok(())
}

pub fn scan(env: &mut Env) -> Result<Vec<Line>, String> {
    let real = root::resolve(&env.root, "/etc/shadow").map_err(|e| format!("/etc/shadow: {e}"))?;
    let shadow = std::fs::read_to_string(real).map_err(|e| format!("/etc/shadow: {e}"))?;
    let list = entries(&env.creds);
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let budget = env.creds.budget;
    // CPU time is the budget; wall time is capped too, at a few times it,
    // for a machine so busy that this thread hardly runs.
    let out_of_budget = || thread_cpu().saturating_sub(cpu0) >= budget || start.elapsed() >= budget * 5;
    let mut stats = CredStats::default();
    let mut out = Vec::new();
    // Accounts with a hash that can be verified: (user, hash, shadow line).
    let mut accounts: Vec<(&str, &str, usize)> = Vec::new();
    for (n, line) in shadow.lines().enumerate() {
        let mut f = line.split(':');
        let (Some(user), Some(hash)) = (f.next(), f.next()) else { continue };
        if hash.is_empty() || hash.starts_with(['!', '*']) || hash == "x" {
            // Empty: its own check; locked or no password: nothing to guess.
            continue;
        }
        if !supported(hash) {
            stats.unsupported += 1;
            continue;
        }
        stats.accounts += 1;
        accounts.push((user, hash, n + 1));
    }
    // Every account's own defaults (the likely ones) first, then the
    // generic guesses.
    let mut work: Vec<(&str, &str, &str, &str, usize)> = Vec::new();
    for generic in [false, true] {
        for &(user, hash, line) in &accounts {
            for (u, p, at) in &list {
                let take = if generic {
                    u == "*" && !list.iter().any(|(u2, p2, _)| u2 == user && p2 == p)
                } else {
                    u == user
                };
                if take {
                    work.push((user, hash, p, at, line));
                }
            }
        }
    }
    let mut found: Vec<&str> = Vec::new();
    for (i, (user, hash, pw, at, line)) in work.iter().enumerate() {
        if found.contains(user) {
            continue;
        }
        if out_of_budget() {
            stats.untried = (work.len() - i) as u64;
            stats.budget_exhausted = true;
            break;
        }
        stats.guesses += 1;
        if verify(pw.as_bytes(), hash) {
            found.push(user);
            out.push(Line {
                text: format!("{user} has a vendor default password ({at})"),
                origin: format!("/etc/shadow:{line}"),
            });
        }
    }
    stats.elapsed_ms = start.elapsed().as_millis() as u64;
    stats.cpu_ms = thread_cpu().saturating_sub(cpu0).as_millis() as u64;
    env.cred_stats = stats;
    Ok(out)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; the thread CPU
    // clock exists on every Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn supported(hash: &str) -> bool {
    ["$y$", "$6$", "$5$", "$1$"].iter().any(|p| hash.starts_with(p))
}

/// Whether `password` hashes to `hash` (modular crypt format).
pub fn verify(password: &[u8], hash: &str) -> bool {
    if hash.starts_with("$y$") {
        use yescrypt::PasswordVerifier;
        yescrypt::Yescrypt::default().verify_password(password, hash).is_ok()
    } else if hash.starts_with("$6$") || hash.starts_with("$5$") {
        use sha_crypt::PasswordVerifier;
        sha_crypt::ShaCrypt::default().verify_password(password, hash).is_ok()
    } else if let Some(rest) = hash.strip_prefix("$1$") {
        let Some((salt, want)) = rest.split_once('$') else { return false };
        md5_crypt(password, salt.as_bytes()) == want
    } else {
        false
    }
}

/// md5-crypt (Poul-Henning Kamp's FreeBSD scheme, `$1$`): the 22-character
/// hash of `password` with `salt` (at most 8 bytes used).
pub fn md5_crypt(password: &[u8], salt: &[u8]) -> String {
    use md5::{Digest, Md5};
    let salt = &salt[..salt.len().min(8)];
    let alt = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(b"$1$");
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        ctx.update(&alt[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for r in 0..1000 {
        let mut c = Md5::new();
        if r & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if r % 3 != 0 {
            c.update(salt);
        }
        if r % 7 != 0 {
            c.update(password);
        }
        if r & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(fin[i]);
    for (a, m, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((b(a) << 16) | (b(m) << 8) | b(c), 4);
    }
    put(b(11), 2);
    out
}
