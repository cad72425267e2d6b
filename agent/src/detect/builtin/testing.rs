//! Recorded events for the detectors' unit tests: a fake clock (seconds from
//! a fixed instant) and small builders, the way the enrichment stage hands
//! events over (ppid, exe, parent_exe filled).

use std::{net::IpAddr, path::PathBuf};

use chrono::{DateTime, TimeZone, Utc};

use crate::{
    detect::{Alert, DetectConfig, Detector},
    events::{Body, Caps, Event, Exec, Exit, Fork, Login, Privilege, Sock},
};

/// The fake clock: `t(s)` is `s` seconds after a fixed instant.
pub fn t(secs: f64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 4, 0, 0).unwrap()
        + chrono::Duration::milliseconds((secs * 1000.0) as i64)
}

pub fn event(at: f64, pid: u32, body: Body) -> Event {
    Event {
        time: t(at),
        ktime_ns: (at * 1e9) as u64,
        pid,
        tid: pid,
        ppid: Some(1),
        uid: 1000,
        gid: 1000,
        user: Some("alice".into()),
        comm: "test".into(),
        exe: None,
        body,
    }
}

/// A successful exec of `path` with `argv` by `pid`, child of `ppid`.
pub fn exec(at: f64, pid: u32, ppid: u32, path: &str, argv: &[&str]) -> Event {
    let mut ev = event(at, pid, Body::Exec(Exec::succeeded(path, argv)));
    ev.ppid = Some(ppid);
    ev.exe = path.starts_with('/').then(|| path.into());
    ev.comm = crate::detect::builtin::base_name(path).chars().take(15).collect();
    ev
}

/// The same exec, failed with ENOENT.
pub fn failed_exec(at: f64, pid: u32, ppid: u32, path: &str, argv: &[&str]) -> Event {
    let mut ev = exec(at, pid, ppid, path, argv);
    ev.exe = None;
    if let Body::Exec(x) = &mut ev.body {
        x.success = false;
        x.result = -2;
        x.error = Some("ENOENT");
    }
    ev
}

pub fn fork(at: f64, pid: u32, child: u32) -> Event {
    event(at, pid, Body::Fork(Fork { child_pid: child }))
}

pub fn exit(at: f64, pid: u32) -> Event {
    event(at, pid, Body::Exit(Exit { exit_code: Some(0), signal: None }))
}

pub fn sock(local: Option<(&str, u16)>, remote: Option<(&str, u16)>, status: &'static str) -> Sock {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let family = match local.or(remote) {
        Some((a, _)) if a.contains(':') => "ipv6",
        _ => "ipv4",
    };
    Sock {
        protocol: "tcp",
        family,
        local_addr: local.map(|(a, _)| ip(a)),
        local_port: local.map(|(_, p)| p),
        remote_addr: remote.map(|(a, _)| ip(a)),
        remote_port: remote.map(|(_, p)| p),
        fd: 3,
        result: 0,
        status,
        error: None,
        async_outcome: false,
    }
}

pub fn connect(at: f64, pid: u32, addr: &str, port: u16) -> Event {
    event(at, pid, Body::Connect(sock(None, Some((addr, port)), "success")))
}

pub fn listen(at: f64, pid: u32, port: u16) -> Event {
    event(at, pid, Body::Listen(sock(Some(("0.0.0.0", port)), None, "success")))
}

pub fn accept(at: f64, pid: u32, port: u16, from: &str) -> Event {
    let mut s = sock(Some(("0.0.0.0", port)), Some((from, 40000)), "success");
    s.fd = 4;
    s.result = 4;
    event(at, pid, Body::Accept(s))
}

pub fn login(at: f64, user: &str, rhost: Option<&str>, step: &'static str, ok: bool) -> Event {
    let mut ev = event(
        at,
        4000,
        Body::Login(Login {
            service: "sshd".into(),
            user: user.into(),
            rhost: rhost.map(Into::into),
            tty: None,
            step,
            result: if ok { "success" } else { "failure" },
            pam_code: if ok { 0 } else { 7 },
            pam_error: if ok { "PAM_SUCCESS" } else { "PAM_AUTH_ERR" },
        }),
    );
    ev.uid = 0;
    ev.exe = Some("/usr/sbin/sshd".into());
    ev
}

/// A set*id call by `pid` (running `exe`) that moved the real uid.
pub fn privilege(
    at: f64,
    pid: u32,
    exe: &str,
    call: &'static str,
    args: &[Option<u32>],
    old: u32,
    new: u32,
) -> Event {
    let mut ev = event(
        at,
        pid,
        Body::Privilege(Privilege {
            call,
            args: args.to_vec(),
            old_uid: old,
            old_gid: old,
            new_uid: new,
            new_gid: new,
            result: 0,
            success: true,
            error: None,
            caps: None,
        }),
    );
    ev.uid = new;
    ev.exe = Some(exe.into());
    ev
}

pub fn capset(at: f64, pid: u32, exe: &str, uid: u32, effective: &str) -> Event {
    let mut ev = privilege(at, pid, exe, "capset", &[], uid, uid);
    if let Body::Privilege(p) = &mut ev.body {
        p.caps = Some(Caps {
            effective: effective.into(),
            permitted: effective.into(),
            inheritable: "0x0".into(),
        });
    }
    ev
}

/// Feeds `events` in order; every alert fired.
pub fn run(d: &mut dyn Detector, events: &[Event]) -> Vec<Alert> {
    let mut out = Vec::new();
    for ev in events {
        d.observe(ev, &mut out);
    }
    out
}

/// A scratch directory (a fake proc root, files to stat), removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "shrike-detect-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// Writes `rel` (creating its directories).
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A symbolic link `rel` -> `target` (e.g. `PID/fd/0` -> `socket:[N]`).
    pub fn link(&self, rel: &str, target: &str) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p).unwrap();
    }

    /// A config whose proc root is this directory.
    pub fn config(&self) -> DetectConfig {
        DetectConfig {
            proc_root: self.0.clone(),
            agent_pid: 777,
            agent_exe: Some("/usr/bin/shrike".into()),
            ..DetectConfig::default()
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A /proc/net/tcp line (IPv4) for a fake proc root.
pub fn tcp_line(local: ([u8; 4], u16), remote: ([u8; 4], u16), state: u8, inode: u64) -> String {
    let hex = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
    format!(
        "   0: {}:{:04X} {}:{:04X} {state:02X} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n",
        hex(local.0),
        local.1,
        hex(remote.0),
        remote.1
    )
}

pub const TCP_HEADER: &str =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
