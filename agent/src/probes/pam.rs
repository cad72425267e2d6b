//! Finding the system's libpam for the login uprobes: what the dynamic linker
//! would load (ldconfig's cache), then the usual library directories.

use std::path::{Path, PathBuf};

const SONAME: &str = "libpam.so.0";

pub fn find_libpam() -> Result<PathBuf, String> {
    if let Some(p) = from_ldconfig() {
        return Ok(p);
    }
    let arch = std::env::consts::ARCH;
    let multiarch = match arch {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        other => other,
    };
    let dirs = [
        format!("/lib/{multiarch}"),
        format!("/usr/lib/{multiarch}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ];
    dirs.iter()
        .map(|d| Path::new(d).join(SONAME))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{SONAME} not found by ldconfig nor in {}", dirs.join(", ")))
}

fn from_ldconfig() -> Option<PathBuf> {
    for ldconfig in ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"] {
        let Ok(out) = std::process::Command::new(ldconfig).arg("-p").output() else {
            continue;
        };
        if let Some(p) = parse_ldconfig(&String::from_utf8_lossy(&out.stdout)) {
            return Some(p);
        }
    }
    None
}

/// Picks the libpam line of `ldconfig -p` for this machine's word size.
pub fn parse_ldconfig(text: &str) -> Option<PathBuf> {
    let want64 = cfg!(target_pointer_width = "64");
    text.lines()
        .filter(|l| l.trim_start().starts_with(SONAME))
        .filter(|l| !want64 || l.contains("64") || !l.contains("libc6,"))
        .filter_map(|l| l.split("=>").nth(1).map(|p| PathBuf::from(p.trim())))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldconfig_cache_listing() {
        // Only existing files are taken, so check the parsing on a path that exists.
        let text = "2 libs found in cache `/etc/ld.so.cache'\n\tlibpam.so.0 (libc6,x86-64) => /bin/sh\n";
        let p = parse_ldconfig(text);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(p, Some(PathBuf::from("/bin/sh")));
        }
        assert_eq!(parse_ldconfig("\tlibpam.so.0 (libc6,x86-64) => /nonexistent/libpam.so.0\n"), None);
    }
}
