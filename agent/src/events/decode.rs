//! Kernel records to typed events. Every length, kind and count is checked
//! against the bytes actually received; a bad record is an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use shrike_common::{
    ExecRecord, ExitRecord, ForkRecord, Header, LoginRecord, PrivRecord, SockRecord, exec_flags, kind,
    priv_call, sock_flags,
};

use super::{
    Body, Caps, Event, Exec, Exit, Fork, Login, Privilege, Sock,
    names::{error_of, pam_code_name, pam_step_name, priv_call_arity, priv_call_name},
    text::{kstr, split_args},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("{kind} record of {got} bytes, expected at least {want}")]
    Truncated { kind: u32, got: usize, want: usize },
}

/// Converts the kernel's CLOCK_MONOTONIC stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, nanoseconds.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        Clock { offset_ns: real - mono }
    }

    /// For tests: a fixed offset.
    pub fn with_offset(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    pub fn wall_ns(&self, ktime_ns: u64) -> i128 {
        ktime_ns as i128 + self.offset_ns
    }

    /// Wall-clock time of a kernel timestamp.
    pub fn wall(&self, ktime_ns: u64) -> chrono::DateTime<chrono::Utc> {
        let ns = self.wall_ns(ktime_ns);
        let secs = ns.div_euclid(1_000_000_000) as i64;
        let sub = ns.rem_euclid(1_000_000_000) as u32;
        chrono::DateTime::<chrono::Utc>::from_timestamp(secs, sub).unwrap_or_default()
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Reads a `T` from the front of `buf` if it is long enough. The records are
/// plain integers and byte arrays: every bit pattern is a valid value.
fn read<T: Copy>(buf: &[u8], kind: u32) -> Result<T, DecodeError> {
    let want = std::mem::size_of::<T>();
    if buf.len() < want {
        return Err(DecodeError::Truncated { kind, got: buf.len(), want });
    }
    // SAFETY: length checked; read_unaligned has no alignment requirement; T is
    // one of the POD records of shrike_common.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// The record kind of a raw record, if it has a header.
pub fn raw_kind(buf: &[u8]) -> Option<u32> {
    buf.get(..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn decode(buf: &[u8], clock: &Clock) -> Result<Event, DecodeError> {
    if buf.len() < std::mem::size_of::<Header>() {
        return Err(DecodeError::Short(buf.len()));
    }
    let hdr: Header = read(buf, 0)?;
    // Perf samples carry alignment padding after the record: the header says
    // how many bytes are the record's (never more than arrived).
    let size = hdr.size as usize;
    let buf = if size >= std::mem::size_of::<Header>() && size < buf.len() { &buf[..size] } else { buf };
    let body = match hdr.kind {
        kind::EXEC => Body::Exec(decode_exec(buf)?),
        kind::EXIT => {
            let r: ExitRecord = read(buf, hdr.kind)?;
            let (exit_code, signal) = if r.has_status == 0 {
                (None, None)
            } else if r.status & 0x7f != 0 {
                (None, Some((r.status & 0x7f) as i32))
            } else {
                (Some(((r.status >> 8) & 0xff) as i32), None)
            };
            Body::Exit(Exit { exit_code, signal })
        }
        kind::FORK => {
            let r: ForkRecord = read(buf, hdr.kind)?;
            Body::Fork(Fork { child_pid: r.child_pid })
        }
        kind::CONNECT => Body::Connect(decode_sock(buf, true)?),
        kind::ACCEPT => Body::Accept(decode_sock(buf, false)?),
        kind::LISTEN => Body::Listen(decode_sock(buf, false)?),
        kind::BIND => Body::Bind(decode_sock(buf, false)?),
        kind::LOGIN => {
            let r: LoginRecord = read(buf, hdr.kind)?;
            let nonempty = |s: String| (!s.is_empty()).then_some(s);
            Body::Login(Login {
                service: kstr(&r.items.service),
                user: kstr(&r.items.user),
                rhost: nonempty(kstr(&r.items.rhost)),
                tty: nonempty(kstr(&r.items.tty)),
                step: pam_step_name(r.step),
                result: if r.result == 0 { "success" } else { "failure" },
                pam_code: r.result,
                pam_error: pam_code_name(r.result),
            })
        }
        kind::PRIVILEGE => {
            let r: PrivRecord = read(buf, hdr.kind)?;
            let arity = priv_call_arity(r.call);
            let args = r.args[..arity].iter().map(|&a| (a != u32::MAX).then_some(a)).collect();
            let caps = (r.call == priv_call::CAPSET && r.has_caps != 0).then(|| {
                let mask = |lo: u32, hi: u32| format!("{:#x}", (u64::from(hi) << 32) | u64::from(lo));
                Caps {
                    effective: mask(r.caps[0], r.caps[1]),
                    permitted: mask(r.caps[2], r.caps[3]),
                    inheritable: mask(r.caps[4], r.caps[5]),
                }
            });
            // setfsuid/setfsgid return the previous id, not an error code.
            let fs = matches!(r.call, priv_call::SETFSUID | priv_call::SETFSGID);
            Body::Privilege(Privilege {
                call: priv_call_name(r.call),
                args,
                old_uid: r.old_uid,
                old_gid: r.old_gid,
                new_uid: hdr.uid,
                new_gid: hdr.gid,
                result: r.ret,
                success: fs || r.ret == 0,
                error: if fs { None } else { error_of(i64::from(r.ret)) },
                caps,
            })
        }
        kind::FILE => Body::File(super::file::decode_file(buf)?),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(Event {
        time: clock.wall(hdr.ktime_ns),
        ktime_ns: hdr.ktime_ns,
        pid: hdr.pid,
        tid: hdr.tid,
        ppid: None,
        uid: hdr.uid,
        gid: hdr.gid,
        user: None,
        comm: kstr(&hdr.comm),
        exe: None,
        body,
    })
}

fn decode_exec(buf: &[u8]) -> Result<Exec, DecodeError> {
    let fixed = ExecRecord::FIXED_LEN;
    if buf.len() < fixed {
        return Err(DecodeError::Truncated { kind: kind::EXEC, got: buf.len(), want: fixed });
    }
    // The record travels short: read the fixed part, then only the argument
    // bytes that actually arrived (never trusting args_len).
    let mut rec = std::mem::MaybeUninit::<ExecRecord>::zeroed();
    let n = buf.len().min(std::mem::size_of::<ExecRecord>());
    // SAFETY: copies at most size_of::<ExecRecord>() bytes into a zeroed
    // record; all-zero and any byte pattern are valid for this POD struct.
    let rec = unsafe {
        std::ptr::copy_nonoverlapping(buf.as_ptr(), rec.as_mut_ptr().cast::<u8>(), n);
        rec.assume_init()
    };
    let avail = n - fixed;
    let args_len = (rec.args_len as usize).min(avail).min(rec.args.len());
    let argv = split_args(&rec.args[..args_len], rec.argc as usize);
    let flags = rec.flags;
    Ok(Exec {
        filename: kstr(&rec.filename),
        // Fewer args than the kernel counted means the record was cut.
        args_truncated: flags & exec_flags::ARGS_TRUNCATED != 0 || argv.len() < rec.argc as usize,
        argv,
        filename_truncated: flags & exec_flags::FILENAME_TRUNCATED != 0,
        result: rec.ret,
        success: rec.ret == 0,
        error: error_of(rec.ret),
        parent_exe: None,
        execveat: flags & exec_flags::EXECVEAT != 0,
        entry_missing: flags & exec_flags::ENTRY_MISSING != 0,
        args_unreadable: flags & exec_flags::ARGS_UNREADABLE != 0,
        path_misses: 0,
        sha256: None,
        sha256_skipped: None,
    })
}

fn ip(family: u16, bytes: [u8; 16]) -> IpAddr {
    if family == 10 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

fn decode_sock(buf: &[u8], connect: bool) -> Result<Sock, DecodeError> {
    let r: SockRecord = read(buf, raw_kind(buf).unwrap_or(0))?;
    let local = r.flags & sock_flags::LOCAL_KNOWN != 0;
    let remote = r.flags & sock_flags::REMOTE_KNOWN != 0;
    // The outcome of an in_progress connect (sock_flags::OUTCOME): `ret` is
    // still the syscall's EINPROGRESS; the flags say how it ended.
    let outcome = connect && r.flags & sock_flags::OUTCOME != 0;
    let (status, error) = if outcome {
        if r.flags & sock_flags::ESTABLISHED != 0 {
            ("success", None)
        } else if r.flags & sock_flags::RESET != 0 {
            ("refused", Some("ECONNREFUSED"))
        } else {
            // Timed out, unreachable, or closed by the application before
            // the end of the handshake: the tracepoints do not say which.
            ("failed", None)
        }
    } else if !connect || r.ret == 0 {
        ("success", None)
    } else if r.ret == -115 {
        ("in_progress", error_of(r.ret))
    } else if r.ret == -111 {
        ("refused", error_of(r.ret))
    } else {
        ("failed", error_of(r.ret))
    };
    Ok(Sock {
        protocol: match r.protocol {
            6 => "tcp",
            17 => "udp",
            _ => "unknown",
        },
        family: match r.family {
            10 => "ipv6",
            2 => "ipv4",
            // accept with neither end known (sock_flags::FAMILY_UNKNOWN):
            // enrichment finds out, or drops it.
            _ => "unknown",
        },
        local_addr: local.then(|| ip(r.family, r.laddr)),
        // A TCP connect learns its address before the kernel picks its port
        // (known once the socket leaves SYN_SENT).
        local_port: (local && r.lport != 0).then_some(r.lport),
        remote_addr: remote.then(|| ip(r.family, r.raddr)),
        remote_port: remote.then_some(r.rport),
        fd: r.fd,
        result: r.ret,
        status,
        error,
        async_outcome: outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shrike_common::{ARGS_BUF_LEN, COMM_LEN, FILENAME_LEN, PamItems};

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a POD record.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    fn header(kind: u32) -> Header {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"test");
        Header { kind, size: 0, ktime_ns: 1_000, pid: 42, tid: 43, uid: 1000, gid: 100, comm }
    }

    fn exec_record(args: &[&[u8]]) -> ExecRecord {
        let mut rec = ExecRecord {
            hdr: header(kind::EXEC),
            ret: 0,
            flags: 0,
            argc: 0,
            args_len: 0,
            dirfd: -100,
            filename: [0; FILENAME_LEN],
            args: [0; ARGS_BUF_LEN],
        };
        rec.filename[..8].copy_from_slice(b"/bin/foo");
        let mut off = 0;
        for a in args {
            rec.args[off..off + a.len()].copy_from_slice(a);
            off += a.len() + 1;
        }
        rec.argc = args.len() as u32;
        rec.args_len = off as u32;
        rec
    }

    #[test]
    fn exec_round_trip() {
        let rec = exec_record(&[b"foo", b"", "\u{e9}t\u{e9}".as_bytes()]);
        let len = ExecRecord::FIXED_LEN + rec.args_len as usize;
        let buf = &bytes_of(&rec)[..len];
        let ev = decode(buf, &Clock::with_offset(0)).unwrap();
        assert_eq!(serde_json::to_value(&ev).unwrap()["time"], "1970-01-01T00:00:00.000001000Z");
        let Body::Exec(e) = ev.body else { panic!("not exec") };
        assert_eq!(e.filename, "/bin/foo");
        assert_eq!(e.argv, vec!["foo", "", "\u{e9}t\u{e9}"]);
        assert!(!e.args_truncated);
        assert!(e.success);
        assert_eq!(ev.comm, "test");
    }

    #[test]
    fn exec_cut_short_keeps_what_arrived() {
        let rec = exec_record(&[b"one", b"two", b"three"]);
        // Only "one\0tw" of the arguments arrived.
        let buf = &bytes_of(&rec)[..ExecRecord::FIXED_LEN + 6];
        let Body::Exec(e) = decode(buf, &Clock::with_offset(0)).unwrap().body else { panic!() };
        assert_eq!(e.argv, vec!["one", "tw"]);
        assert!(e.args_truncated);
    }

    #[test]
    fn exec_with_lying_counts_does_not_panic() {
        let mut rec = exec_record(&[b"a"]);
        rec.args_len = u32::MAX;
        rec.argc = u32::MAX;
        rec.filename = [0xff; FILENAME_LEN];
        let buf = bytes_of(&rec);
        let Body::Exec(e) = decode(&buf, &Clock::with_offset(0)).unwrap().body else { panic!() };
        assert!(e.filename.starts_with("\\xff\\xff"));
        assert!(e.args_truncated);
    }

    #[test]
    fn failed_exec_names_errno() {
        let mut rec = exec_record(&[b"x"]);
        rec.ret = -2;
        let buf = bytes_of(&rec);
        let Body::Exec(e) = decode(&buf, &Clock::with_offset(0)).unwrap().body else { panic!() };
        assert!(!e.success);
        assert_eq!(e.error, Some("ENOENT"));
    }

    #[test]
    fn short_and_garbage_records_are_errors() {
        let clock = Clock::with_offset(0);
        assert_eq!(decode(&[], &clock).unwrap_err(), DecodeError::Short(0));
        assert_eq!(decode(&[1, 0, 0], &clock).unwrap_err(), DecodeError::Short(3));
        let mut buf = bytes_of(&header(77));
        assert_eq!(decode(&buf, &clock).unwrap_err(), DecodeError::UnknownKind(77));
        buf = bytes_of(&header(kind::CONNECT));
        assert!(matches!(decode(&buf, &clock), Err(DecodeError::Truncated { .. })));
        buf = bytes_of(&header(kind::EXEC));
        assert!(matches!(decode(&buf, &clock), Err(DecodeError::Truncated { .. })));
        // Random bytes: any result but a panic.
        let mut seed = 0x1234_5678_u64;
        for len in 0..400 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode(&junk, &clock);
            for k in 1..=9u32 {
                let mut j = junk.clone();
                if j.len() >= 4 {
                    j[..4].copy_from_slice(&k.to_ne_bytes());
                    let _ = decode(&j, &clock);
                }
            }
        }
    }

    #[test]
    fn sock_and_login_decode() {
        let clock = Clock::with_offset(0);
        let rec = SockRecord {
            hdr: header(kind::CONNECT),
            ret: -111,
            fd: 3,
            flags: sock_flags::REMOTE_KNOWN,
            family: 10,
            protocol: 6,
            lport: 0,
            rport: 8080,
            laddr: [0; 16],
            raddr: Ipv6Addr::LOCALHOST.octets(),
        };
        let Body::Connect(s) = decode(&bytes_of(&rec), &clock).unwrap().body else { panic!() };
        assert_eq!(s.status, "refused");
        assert_eq!(s.error, Some("ECONNREFUSED"));
        assert_eq!(s.remote_addr, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(s.local_addr, None);
        assert_eq!(s.protocol, "tcp");

        let mut items = PamItems { service: [0; 32], user: [0xc3; 64], rhost: [0; 64], tty: [0; 32] };
        items.service[..4].copy_from_slice(b"sshd");
        let login = LoginRecord { hdr: header(kind::LOGIN), step: 1, result: 7, items };
        let Body::Login(l) = decode(&bytes_of(&login), &clock).unwrap().body else { panic!() };
        assert_eq!(l.service, "sshd");
        assert_eq!(l.result, "failure");
        assert_eq!(l.pam_error, "PAM_AUTH_ERR");
        assert!(l.user.starts_with("\\xc3"));
        assert_eq!(l.rhost, None);
    }

    #[test]
    fn connect_outcome_records_decode_to_the_final_status() {
        let clock = Clock::with_offset(0);
        let mut rec = SockRecord {
            hdr: header(kind::CONNECT),
            ret: -115,
            fd: 3,
            flags: sock_flags::REMOTE_KNOWN | sock_flags::LOCAL_KNOWN | sock_flags::TCP_CONFIRMED,
            family: 2,
            protocol: 6,
            lport: 0,
            rport: 80,
            laddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            raddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let sock = |rec: &SockRecord| match decode(&bytes_of(rec), &clock).unwrap().body {
            Body::Connect(s) => s,
            _ => panic!(),
        };
        let s = sock(&rec);
        assert_eq!(
            (s.status, s.error, s.async_outcome, s.local_port),
            ("in_progress", Some("EINPROGRESS"), false, None)
        );
        rec.lport = 40000;
        for (flags, status, error) in [
            (sock_flags::ESTABLISHED, "success", None),
            (sock_flags::RESET, "refused", Some("ECONNREFUSED")),
            (0, "failed", None),
        ] {
            let mut r = rec;
            r.flags |= sock_flags::OUTCOME | flags;
            let s = sock(&r);
            assert_eq!((s.status, s.error, s.async_outcome), (status, error, true));
            assert_eq!((s.result, s.local_port), (-115, Some(40000)));
        }
    }

    #[test]
    fn exit_status_decodes_code_and_signal() {
        let clock = Clock::with_offset(0);
        let mut rec = ExitRecord { hdr: header(kind::EXIT), status: 7 << 8, has_status: 1 };
        let Body::Exit(e) = decode(&bytes_of(&rec), &clock).unwrap().body else { panic!() };
        assert_eq!((e.exit_code, e.signal), (Some(7), None));
        rec.status = 9;
        let Body::Exit(e) = decode(&bytes_of(&rec), &clock).unwrap().body else { panic!() };
        assert_eq!((e.exit_code, e.signal), (None, Some(9)));
    }
}
