//! Finding the system's libpam for the login uprobes: what the dynamic linker
//! would load (ldconfig's cache), then the usual library directories.

use std::path::{Path, PathBuf};

const SONAME: &str = "libpam.so.0";

/// Why `symbol` of `lib` cannot be uprobed on this machine, if it cannot:
/// 32-bit ARM kernels place uprobes in ARM-mode code only (4-byte aligned
/// offsets, EINVAL otherwise), and a Thumb function's symbol has an odd
/// address (Debian's armhf libpam is Thumb-2). None elsewhere, and when the
/// library cannot be read (the attach then says what is wrong).
pub fn unprobeable(lib: &Path, symbol: &str) -> Option<String> {
    if !cfg!(target_arch = "arm") {
        return None;
    }
    let addr = thumb_symbol(lib, symbol)?;
    Some(format!(
        "{}'s {symbol} is Thumb code ({addr:#x}): 32-bit ARM uprobes probe ARM-mode code only",
        lib.display()
    ))
}

/// The address of `symbol` in the ELF file `lib` when it is odd (Thumb).
fn thumb_symbol(lib: &Path, symbol: &str) -> Option<u64> {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(lib).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.dynamic_symbols()
        .chain(file.symbols())
        .find(|s| s.name() == Ok(symbol))
        .map(|s| s.address())
        .filter(|a| a & 1 == 1)
}

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

    /// ARM-mode and x86 functions have even addresses: only Thumb's are
    /// odd (the armhf VM of `cargo xtask vm-test` shows the other side).
    #[test]
    fn thumb_functions_only_are_unprobeable() {
        let Ok(lib) = find_libpam() else {
            eprintln!("skipped: no libpam here");
            return;
        };
        let data = std::fs::read(&lib).unwrap();
        let file = object::File::parse(&*data).unwrap();
        use object::{Object, ObjectSymbol};
        let start = file.dynamic_symbols().find(|s| s.name() == Ok("pam_start")).expect("pam_start exported");
        assert_ne!(start.address(), 0);
        if !cfg!(target_arch = "arm") {
            assert_eq!(thumb_symbol(&lib, "pam_start"), None);
            assert_eq!(unprobeable(&lib, "pam_start"), None);
        }
        assert_eq!(thumb_symbol(&lib, "no_such_symbol"), None);
        assert_eq!(thumb_symbol(Path::new("/nonexistent/libpam.so.0"), "pam_start"), None);
    }
}
