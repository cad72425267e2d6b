//! Reading /proc (or a host's /proc mounted elsewhere, in a container).

use std::path::Path;

use super::ProcInfo;
use crate::events::text::{escape, split_args};

pub fn pids(root: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(root) else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// ppid from /proc/PID/stat. The comm field may hold spaces and parentheses,
/// so parse after the last ')'.
pub fn read_ppid(root: &Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read(root.join(pid.to_string()).join("stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

pub fn read_exe(root: &Path, pid: u32) -> Option<String> {
    let p = std::fs::read_link(root.join(pid.to_string()).join("exe")).ok()?;
    Some(escape(p.as_os_str().as_encoded_bytes()))
}

pub fn read_info(root: &Path, pid: u32) -> Option<ProcInfo> {
    let ppid = read_ppid(root, pid)?;
    Some(ProcInfo { ppid, exe: read_exe(root, pid).map(Into::into) })
}

/// (executable, argv) from /proc/PID/cmdline.
pub fn read_cmdline(root: &Path, pid: u32) -> Option<(String, Vec<String>)> {
    let raw = std::fs::read(root.join(pid.to_string()).join("cmdline")).ok()?;
    let argc = raw.iter().filter(|&&b| b == 0).count().max(1);
    let argv = split_args(&raw, argc);
    let exe = read_exe(root, pid).or_else(|| argv.first().cloned())?;
    Some((exe, argv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let root = Path::new("/proc");
        let me = std::process::id();
        let info = read_info(root, me).unwrap();
        assert_eq!(info.ppid, std::os::unix::process::parent_id());
        assert!(info.exe.is_some());
        assert!(pids(root).contains(&me));
    }

    #[test]
    fn hostile_comm_does_not_confuse_ppid() {
        let dir = std::env::temp_dir().join(format!("shrike-stat-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("77")).unwrap();
        std::fs::write(dir.join("77/stat"), b"77 (a) b) 5 S) R 1234 77 77 0").unwrap();
        assert_eq!(read_ppid(&dir, 77), Some(1234));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
