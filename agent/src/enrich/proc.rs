//! Reading /proc (or a host's /proc mounted elsewhere, in a container).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

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

/// The target of /proc/PID/NAME (`cwd`, `fd/3`), as text.
pub fn read_link(root: &Path, pid: u32, name: &str) -> Option<String> {
    let p = std::fs::read_link(root.join(pid.to_string()).join(name)).ok()?;
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

/// The two ends of TCP socket `fd` of `pid`, from /proc/PID/fd/FD (its
/// inode) and the process's network namespace's /proc/PID/net/tcp{,6}: for
/// an accept whose peer the kernel could not read (accept(fd, NULL, NULL)).
/// Costs a readlink and a read of the TCP table: only for such accepts.
pub fn socket_ends(root: &Path, pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
    let dir = root.join(pid.to_string());
    let link = std::fs::read_link(dir.join("fd").join(fd.to_string())).ok()?;
    let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned();
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(dir.join(table)) else { continue };
        if let Some(ends) = find_inode(&text, &inode) {
            return Some(ends);
        }
    }
    None
}

/// The line of a /proc/net/tcp{,6} table whose inode (10th column) is
/// `inode`: (local, remote).
fn find_inode(table: &str, inode: &str) -> Option<(SocketAddr, SocketAddr)> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.get(9) != Some(&inode) {
            return None;
        }
        Some((parse_end(cols.get(1)?)?, parse_end(cols.get(2)?)?))
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6) then the port: the address
/// is printed as native-endian 32-bit words of the network-order bytes.
fn parse_end(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes())
    };
    let ip: IpAddr = match addr.len() {
        8 => Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Ipv6Addr::from(b).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
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

    #[test]
    fn finds_both_ends_of_an_accepted_socket() {
        use std::os::fd::AsRawFd;
        for addr in ["127.0.0.1", "::1"] {
            let listener = std::net::TcpListener::bind((addr, 0)).unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (conn, peer) = listener.accept().unwrap();
            let ends = socket_ends(Path::new("/proc"), std::process::id(), conn.as_raw_fd());
            assert_eq!(ends, Some((conn.local_addr().unwrap(), peer)));
            assert_eq!(peer, client.local_addr().unwrap());
        }
        // Not a socket.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(socket_ends(Path::new("/proc"), std::process::id(), file.as_raw_fd()), None);
    }

    #[test]
    fn parses_tcp_table_addresses() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                  0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n";
        let (l, r) = find_inode(v4, "4242").unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(l, "127.0.0.1:8080".parse().unwrap());
            assert_eq!(r, "127.0.0.1:54321".parse().unwrap());
        }
        assert_eq!(find_inode(v4, "424"), None);
        assert_eq!(parse_end("00000000000000000000000001000000:0016").map(|a| a.port()), Some(22));
    }
}
