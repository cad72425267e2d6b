//! Periodic snapshots: listening ports, local users, system information — the
//! Azure agents' Periodic security events, read from /proc and /etc.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use shrike_common::schema::{self as sm, ExtraDetails};

pub mod firewall;
pub mod hardware;

/// Listening sockets from `/proc/net/{tcp,tcp6,udp,udp6}` under `proc_root`:
/// TCP in LISTEN, UDP bound with no peer.
pub fn listening_ports(proc_root: &Path) -> Vec<sm::ListeningPorts> {
    let mut out = Vec::new();
    for (file, proto, v6) in
        [("tcp", "TCP", false), ("tcp6", "TCP", true), ("udp", "UDP", false), ("udp6", "UDP", true)]
    {
        let Ok(text) = std::fs::read_to_string(proc_root.join("net").join(file)) else { continue };
        for (local, port, state) in parse_proc_net(&text, v6) {
            // TCP_LISTEN is 0x0A; an unconnected UDP socket is TCP_CLOSE (0x07).
            let listening = if proto == "TCP" { state == 0x0A } else { state == 0x07 };
            if listening {
                out.push(sm::ListeningPorts {
                    local_port: port.to_string(),
                    protocol: proto.into(),
                    local_address: Some(local),
                    remote_address: None,
                    remote_port: None,
                    extra_details: ExtraDetails::new(),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.protocol, &a.local_port).cmp(&(&b.protocol, &b.local_port)));
    out.dedup_by(|a, b| {
        a.protocol == b.protocol && a.local_port == b.local_port && a.local_address == b.local_address
    });
    out
}

/// (local address, local port, state) of each line of a /proc/net table.
pub fn parse_proc_net(text: &str, v6: bool) -> Vec<(IpAddr, u16, u8)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let state = u8::from_str_radix(f.nth(1)?, 16).ok()?;
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((parse_hex_addr(addr, v6)?, port, state))
        })
        .collect()
}

/// The kernel prints addresses as 32-bit words in host byte order.
fn parse_hex_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    if v6 {
        if hex.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        if hex.len() != 8 {
            return None;
        }
        Some(IpAddr::V4(Ipv4Addr::from(word(0)?)))
    }
}

/// Local users with their groups (primary and supplementary), from the passwd
/// and group files.
pub fn local_users(passwd: &str, group: &str) -> Vec<sm::LocalUsers> {
    // group name -> (gid, members)
    let groups: Vec<(String, String, Vec<String>)> = group
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then(|| {
                (
                    f[0].to_owned(),
                    f[2].to_owned(),
                    f[3].split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect(),
                )
            })
        })
        .collect();
    let by_gid: HashMap<&str, &str> = groups.iter().map(|(n, g, _)| (g.as_str(), n.as_str())).collect();
    passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[2].parse::<u32>().is_err() {
                return None;
            }
            let (name, uid, gid) = (f[0], f[2], f[3]);
            let mut names = vec![by_gid.get(gid).copied().unwrap_or(gid).to_owned()];
            let mut ids = vec![gid.to_owned()];
            for (gname, g, members) in &groups {
                if g != gid && members.iter().any(|m| m == name) {
                    names.push(gname.clone());
                    ids.push(g.clone());
                }
            }
            Some(sm::LocalUsers {
                user_name: name.to_owned(),
                user_id: uid.to_owned(),
                group_names: names.join(";"),
                group_ids: ids.join(";"),
                extra_details: ExtraDetails::new(),
            })
        })
        .collect()
}

fn os_release() -> HashMap<String, String> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

fn meminfo(proc_root: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(proc_root.join("meminfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_owned(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

pub fn system_information(proc_root: &Path) -> sm::SystemInformation {
    let os = os_release();
    let mem = meminfo(proc_root);
    let read =
        |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let mut extra = ExtraDetails::new();
    if let Some(k) = read("/proc/sys/kernel/osrelease") {
        extra.insert("KernelRelease".into(), k);
    }
    sm::SystemInformation {
        os_name: os.get("NAME").cloned().or_else(|| Some("Linux".into())),
        os_version: os.get("VERSION_ID").or_else(|| os.get("VERSION")).cloned(),
        os_vendor: os.get("ID").cloned(),
        os_architecture: Some(std::env::consts::ARCH.into()),
        host_name: read("/proc/sys/kernel/hostname"),
        bios_version: read("/sys/class/dmi/id/bios_version"),
        boot_device: None,
        total_physical_memory_kb: mem.get("MemTotal").copied(),
        free_physical_memory_kb: mem.get("MemAvailable").or_else(|| mem.get("MemFree")).copied(),
        total_virtual_memory_kb: mem.get("SwapTotal").map(|s| s + mem.get("MemTotal").copied().unwrap_or(0)),
        free_virtual_memory_kb: mem
            .get("SwapFree")
            .map(|s| s + mem.get("MemAvailable").copied().unwrap_or(0)),
        extra_details: extra,
    }
}

/// The snapshot events (empty ones say so, `IsEmpty`); FirewallConfiguration
/// when `firewall` is on and the rules could be read.
pub fn snapshot_events(proc_root: &Path, firewall: bool) -> Vec<sm::Event> {
    let ports = listening_ports(proc_root);
    let users = local_users(
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        &std::fs::read_to_string("/etc/group").unwrap_or_default(),
    );
    let mut out = Vec::new();
    out.push(if ports.is_empty() {
        sm::Event::empty(sm::Kind::ListeningPorts)
    } else {
        sm::Event::new(sm::Payload::ListeningPorts(ports))
    });
    out.push(if users.is_empty() {
        sm::Event::empty(sm::Kind::LocalUsers)
    } else {
        sm::Event::new(sm::Payload::LocalUsers(users))
    });
    out.push(sm::Event::new(system_information(proc_root)));
    out.push(hardware::snapshot(&hardware::devices(Path::new("/sys"))));
    if firewall {
        out.extend(firewall::snapshot());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n";
        let rows = parse_proc_net(tcp, false);
        assert_eq!(rows[0], (IpAddr::V4(Ipv4Addr::LOCALHOST), 22, 0x0A));
        assert_eq!(rows[1].1, 8080);
        let tcp6 = "header\n   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 0 0 0 0 0 1\n";
        assert_eq!(parse_proc_net(tcp6, true)[0], (IpAddr::V6(Ipv6Addr::LOCALHOST), 22, 0x0A));
        assert!(parse_proc_net("h\n garbage line\n   0: zz:yy 0 0A\n", false).is_empty());
    }

    #[test]
    fn live_listening_ports_include_a_listener_of_ours() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port().to_string();
        let ports = listening_ports(Path::new("/proc"));
        assert!(ports.iter().any(|p| p.protocol == "TCP" && p.local_port == port), "{port} not in {ports:?}");
    }

    #[test]
    fn users_with_primary_and_supplementary_groups() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000::/home/bob:/bin/sh\nbroken\n";
        let group = "root:x:0:\nbob:x:1000:\nsudo:x:27:bob,alice\n";
        let u = local_users(passwd, group);
        assert_eq!(u.len(), 2);
        assert_eq!((u[1].group_names.as_str(), u[1].group_ids.as_str()), ("bob;sudo", "1000;27"));
        assert_eq!(u[0].group_names, "root");
    }

    #[test]
    fn snapshot_events_validate() {
        for ev in snapshot_events(Path::new("/proc"), true) {
            ev.validate().unwrap();
        }
    }
}
