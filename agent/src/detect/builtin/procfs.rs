//! The few /proc reads the built-in detectors make (under a proc root that
//! tests replace with a fake tree): TCP sockets and the sockets a process
//! holds.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

/// TCP_LISTEN and TCP_ESTABLISHED in /proc/net/tcp's `st` column.
pub const TCP_LISTEN: u8 = 0x0A;
#[cfg(test)]
pub const TCP_ESTABLISHED: u8 = 0x01;

/// One line of /proc/net/tcp{,6}.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpSocket {
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub state: u8,
    pub inode: u64,
}

/// The TCP sockets of the network namespace of `dir` (`/proc` or
/// `/proc/PID`): `dir/net/tcp` and `dir/net/tcp6`.
pub fn tcp_sockets(dir: &Path) -> Vec<TcpSocket> {
    let mut out = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(dir.join("net").join(file)) else { continue };
        out.extend(text.lines().skip(1).filter_map(|l| parse_line(l, v6)));
    }
    out
}

fn parse_line(line: &str, v6: bool) -> Option<TcpSocket> {
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    let f: Vec<&str> = line.split_whitespace().take(10).collect();
    if f.len() < 10 {
        return None;
    }
    Some(TcpSocket {
        local: addr_port(f[1], v6)?,
        remote: addr_port(f[2], v6)?,
        state: u8::from_str_radix(f[3], 16).ok()?,
        inode: f[9].parse().ok()?,
    })
}

fn addr_port(s: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    Some((hex_addr(addr, v6)?, u16::from_str_radix(port, 16).ok()?))
}

/// The kernel prints addresses as 32-bit words in host byte order.
fn hex_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes())
    };
    match (v6, hex.len()) {
        (false, 8) => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        (true, 32) => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The inode of the socket that `PID/fd/FD` is, if it is one.
pub fn fd_socket_inode(root: &Path, pid: u32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(root.join(pid.to_string()).join("fd").join(fd.to_string())).ok()?;
    socket_inode(link.to_str()?)
}

/// `socket:[12345]` -> 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The TCP socket `fd` of `pid` is, from the process's own network namespace.
pub fn fd_tcp_socket(root: &Path, pid: u32, fd: i32) -> Option<TcpSocket> {
    let inode = fd_socket_inode(root, pid, fd)?;
    tcp_sockets(&root.join(pid.to_string())).into_iter().find(|s| s.inode == inode)
}

/// Processes holding one of the TCP sockets listening now (the proc root's
/// network namespace): each pid with the ports it listens on.
pub fn listening_processes(root: &Path) -> Vec<(u32, Vec<u16>)> {
    let listening: Vec<TcpSocket> = tcp_sockets(root).into_iter().filter(|s| s.state == TCP_LISTEN).collect();
    if listening.is_empty() {
        return Vec::new();
    }
    let inodes: HashSet<u64> = listening.iter().map(|s| s.inode).collect();
    let Ok(dir) = std::fs::read_dir(root) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let mut ports: Vec<u16> = fds
            .flatten()
            .filter_map(|fd| socket_inode(std::fs::read_link(fd.path()).ok()?.to_str()?))
            .filter(|i| inodes.contains(i))
            .filter_map(|i| listening.iter().find(|s| s.inode == i).map(|s| s.local.1))
            .collect();
        if !ports.is_empty() {
            ports.sort_unstable();
            ports.dedup();
            out.push((pid, ports));
        }
    }
    out
}

/// Ports with a TCP socket listening now (either family).
pub fn listening_ports(root: &Path) -> HashSet<u16> {
    tcp_sockets(root).into_iter().filter(|s| s.state == TCP_LISTEN).map(|s| s.local.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tables_and_finds_our_listener() {
        let line = "   0: 0100007F:1F90 0200007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1";
        let s = parse_line(line, false).unwrap();
        assert_eq!(s.local, (IpAddr::V4(Ipv4Addr::LOCALHOST), 8080));
        assert_eq!(s.remote, (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 50000));
        assert_eq!((s.state, s.inode), (TCP_ESTABLISHED, 4242));
        assert_eq!(parse_line("garbage", false), None);

        // The real /proc: a listener of this test process is found with its port.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening_ports(Path::new("/proc")).contains(&port));
        let me = std::process::id();
        let procs = listening_processes(Path::new("/proc"));
        assert!(procs.iter().any(|(p, ports)| *p == me && ports.contains(&port)), "{procs:?}");
        use std::os::fd::AsRawFd;
        let sock = fd_tcp_socket(Path::new("/proc"), me, l.as_raw_fd()).expect("our socket");
        assert_eq!((sock.local.1, sock.state), (port, TCP_LISTEN));
    }
}
