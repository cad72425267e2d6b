//! The probe table: every kernel program, where it attaches, which event kinds
//! need it, and the tracepoint fields (name, offset) its code relies on. A hook
//! whose tracepoint is missing or whose format differs is skipped with a warning
//! naming it, instead of failing the agent (kunai's compat.rs does the same).

use std::{collections::HashMap, path::Path};

use crate::events::Kind;
use shrike_common::layout as L;

#[derive(Clone, Copy, Debug)]
pub enum Hook {
    /// A tracepoint `category/name`.
    Tracepoint { category: &'static str, name: &'static str },
    /// A uprobe (or uretprobe) on a libpam symbol.
    Pam { symbol: &'static str, ret: bool },
}

#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    /// The program's name in the object (its function name).
    pub program: &'static str,
    pub hook: Hook,
    /// Event kinds that need this program.
    pub kinds: &'static [Kind],
    /// Tracepoint fields read by the program, with their offsets.
    pub fields: &'static [(&'static str, usize)],
    /// Missing on many kernels or libpam versions: skipped quietly (debug log).
    pub optional: bool,
}

const fn tp(
    program: &'static str,
    category: &'static str,
    kinds: &'static [Kind],
    fields: &'static [(&'static str, usize)],
) -> ProbeSpec {
    ProbeSpec { program, hook: Hook::Tracepoint { category, name: program }, kinds, fields, optional: false }
}

const fn pam(program: &'static str, symbol: &'static str, ret: bool) -> ProbeSpec {
    ProbeSpec {
        program,
        hook: Hook::Pam { symbol, ret },
        kinds: &[Kind::Login],
        fields: &[],
        optional: false,
    }
}

const EXEC: &[Kind] = &[Kind::Exec];
const PROC: &[Kind] = &[Kind::Exit, Kind::Exec];
const FORK: &[Kind] = &[Kind::Fork, Kind::Exec];
const CONNECT: &[Kind] = &[Kind::Connect];
const SOCKET: &[Kind] = &[Kind::Connect, Kind::Bind];
const BIND: &[Kind] = &[Kind::Bind, Kind::Listen, Kind::Accept];
const ACCEPT: &[Kind] = &[Kind::Accept];
const LISTEN: &[Kind] = &[Kind::Listen];
const PRIV: &[Kind] = &[Kind::Privilege];
const FILE: &[Kind] = &[Kind::File];

const ARGS3: &[(&str, usize)] = &[];
const RET: &[(&str, usize)] = &[("ret", L::SYS_RET)];
/// `syscalls/sys_exit_*` records paired with their entry by number.
const NR_RET: &[(&str, usize)] = &[("__syscall_nr", L::SYS_NR), ("ret", L::SYS_RET)];
/// `syscalls/sys_enter_*` arguments 0-4 (`shrike_common::layout`).
const A0: usize = L::sys_arg(0);
const A1: usize = L::sys_arg(1);
const A2: usize = L::sys_arg(2);
const A3: usize = L::sys_arg(3);
const A4: usize = L::sys_arg(4);

macro_rules! priv_pair {
    ($enter:literal, $exit:literal) => {
        [tp($enter, "syscalls", PRIV, ARGS3), tp($exit, "syscalls", PRIV, RET)]
    };
}

/// All probes. Fork and exit are collected whenever exec is, to keep the
/// process table (ppid, parent executable) right for short-lived processes.
pub fn table() -> Vec<ProbeSpec> {
    let mut t = vec![
        tp("sys_enter_execve", "syscalls", EXEC, &[("filename", A0), ("argv", A1)]),
        tp("sys_exit_execve", "syscalls", EXEC, RET),
        tp("sys_enter_execveat", "syscalls", EXEC, &[("fd", A0), ("filename", A1), ("argv", A2)]),
        tp("sys_exit_execveat", "syscalls", EXEC, RET),
        tp("sched_process_exec", "sched", EXEC, &[("pid", L::EXEC_PID), ("old_pid", L::EXEC_OLD_PID)]),
        tp("task_newtask", "task", FORK, &[("pid", L::NEWTASK_PID), ("clone_flags", L::NEWTASK_CLONE_FLAGS)]),
        tp("sched_process_exit", "sched", PROC, &[("pid", L::EXIT_PID)]),
        tp("sys_enter_exit_group", "syscalls", PROC, &[("error_code", A0)]),
        tp("sys_enter_exit", "syscalls", PROC, &[("error_code", A0)]),
        tp(
            "signal_generate",
            "signal",
            PROC,
            &[("sig", L::GENERATE_SIG), ("pid", L::GENERATE_PID), ("result", L::GENERATE_RESULT)],
        ),
        tp(
            "signal_deliver",
            "signal",
            PROC,
            &[("sig", L::DELIVER_SIG), ("sa_handler", L::DELIVER_SA_HANDLER)],
        ),
        tp("sys_enter_socket", "syscalls", SOCKET, &[("family", A0), ("type", A1), ("protocol", A2)]),
        tp("sys_exit_socket", "syscalls", SOCKET, RET),
        tp("sys_enter_connect", "syscalls", CONNECT, &[("fd", A0), ("uservaddr", A1), ("addrlen", A2)]),
        tp("sys_exit_connect", "syscalls", CONNECT, RET),
        tp(
            "inet_sock_set_state",
            "sock",
            CONNECT,
            &[
                ("skaddr", L::SOCK_SKADDR),
                ("oldstate", L::SOCK_OLDSTATE),
                ("newstate", L::SOCK_NEWSTATE),
                ("sport", L::SOCK_SPORT),
                ("family", L::SOCK_FAMILY),
                ("saddr", L::SOCK_SADDR),
                ("saddr_v6", L::SOCK_SADDR_V6),
            ],
        ),
        // Tells a refused non-blocking connect from one that timed out or was
        // abandoned (Linux >= 4.16); without it both are "failed".
        ProbeSpec {
            optional: true,
            ..tp("tcp_receive_reset", "tcp", CONNECT, &[("skaddr", L::SOCK_SKADDR)])
        },
        tp("sys_enter_bind", "syscalls", BIND, &[("fd", A0), ("umyaddr", A1), ("addrlen", A2)]),
        tp("sys_exit_bind", "syscalls", BIND, RET),
        tp("sys_enter_listen", "syscalls", LISTEN, &[("fd", A0)]),
        tp("sys_exit_listen", "syscalls", LISTEN, RET),
        tp(
            "sys_enter_accept",
            "syscalls",
            ACCEPT,
            &[("fd", A0), ("upeer_sockaddr", A1), ("upeer_addrlen", A2)],
        ),
        tp("sys_exit_accept", "syscalls", ACCEPT, RET),
        tp(
            "sys_enter_accept4",
            "syscalls",
            ACCEPT,
            &[("fd", A0), ("upeer_sockaddr", A1), ("upeer_addrlen", A2)],
        ),
        tp("sys_exit_accept4", "syscalls", ACCEPT, RET),
        pam("pam_start", "pam_start", false),
        pam("pam_start_ret", "pam_start", true),
        ProbeSpec { optional: true, ..pam("pam_start_confdir", "pam_start_confdir", false) },
        ProbeSpec { optional: true, ..pam("pam_start_ret", "pam_start_confdir", true) },
        pam("pam_set_item", "pam_set_item", false),
        pam("pam_get_user", "pam_get_user", false),
        pam("pam_get_user_ret", "pam_get_user", true),
        pam("pam_end", "pam_end", false),
        pam("pam_authenticate", "pam_authenticate", false),
        pam("pam_authenticate_ret", "pam_authenticate", true),
        pam("pam_acct_mgmt", "pam_acct_mgmt", false),
        pam("pam_acct_mgmt_ret", "pam_acct_mgmt", true),
        pam("pam_open_session", "pam_open_session", false),
        pam("pam_open_session_ret", "pam_open_session", true),
        pam("pam_close_session", "pam_close_session", false),
        pam("pam_close_session_ret", "pam_close_session", true),
        pam("pam_setcred", "pam_setcred", false),
        pam("pam_setcred_ret", "pam_setcred", true),
        pam("pam_chauthtok", "pam_chauthtok", false),
        pam("pam_chauthtok_ret", "pam_chauthtok", true),
    ];
    for pair in [
        priv_pair!("sys_enter_setuid", "sys_exit_setuid"),
        priv_pair!("sys_enter_setgid", "sys_exit_setgid"),
        priv_pair!("sys_enter_setreuid", "sys_exit_setreuid"),
        priv_pair!("sys_enter_setregid", "sys_exit_setregid"),
        priv_pair!("sys_enter_setresuid", "sys_exit_setresuid"),
        priv_pair!("sys_enter_setresgid", "sys_exit_setresgid"),
        priv_pair!("sys_enter_setfsuid", "sys_exit_setfsuid"),
        priv_pair!("sys_enter_setfsgid", "sys_exit_setfsgid"),
        priv_pair!("sys_enter_capset", "sys_exit_capset"),
    ] {
        t.extend(pair);
    }
    t.extend(file_table());
    t
}

/// File integrity (agent-ebpf/src/file.rs): an entry program per syscall,
/// one exit program (`sys_exit_file`) attached to every one's exit. The
/// legacy calls (open, creat, rename, unlink, rmdir, chmod, chown, lchown,
/// link, symlink) do not exist on aarch64, openat2 before 5.6, fchmodat2
/// before 6.6: optional.
macro_rules! file_call {
    ($call:literal, $fields:expr, $optional:expr) => {
        [
            ProbeSpec { optional: $optional, ..tp(concat!("sys_enter_", $call), "syscalls", FILE, $fields) },
            ProbeSpec {
                program: "sys_exit_file",
                hook: Hook::Tracepoint { category: "syscalls", name: concat!("sys_exit_", $call) },
                kinds: FILE,
                fields: NR_RET,
                optional: $optional,
            },
        ]
    };
}

fn file_table() -> Vec<ProbeSpec> {
    const P: &str = "pathname";
    [
        file_call!("openat", &[("dfd", A0), ("filename", A1), ("flags", A2), ("mode", A3)], false),
        file_call!("openat2", &[("dfd", A0), ("filename", A1), ("how", A2)], true),
        file_call!("open", &[("filename", A0), ("flags", A1), ("mode", A2)], true),
        file_call!("creat", &[(P, A0), ("mode", A1)], true),
        file_call!("rename", &[("oldname", A0), ("newname", A1)], true),
        file_call!("renameat", &[("olddfd", A0), ("oldname", A1), ("newdfd", A2), ("newname", A3)], true),
        file_call!(
            "renameat2",
            &[("olddfd", A0), ("oldname", A1), ("newdfd", A2), ("newname", A3), ("flags", A4)],
            false
        ),
        file_call!("unlink", &[(P, A0)], true),
        file_call!("unlinkat", &[("dfd", A0), (P, A1), ("flag", A2)], false),
        file_call!("rmdir", &[(P, A0)], true),
        file_call!("chmod", &[("filename", A0), ("mode", A1)], true),
        file_call!("fchmodat", &[("dfd", A0), ("filename", A1), ("mode", A2)], false),
        file_call!("fchmodat2", &[("dfd", A0), ("filename", A1), ("mode", A2), ("flags", A3)], true),
        file_call!("fchmod", &[("fd", A0), ("mode", A1)], false),
        file_call!("chown", &[("filename", A0), ("user", A1), ("group", A2)], true),
        file_call!("lchown", &[("filename", A0), ("user", A1), ("group", A2)], true),
        file_call!(
            "fchownat",
            &[("dfd", A0), ("filename", A1), ("user", A2), ("group", A3), ("flag", A4)],
            false
        ),
        file_call!("fchown", &[("fd", A0), ("user", A1), ("group", A2)], false),
        file_call!("link", &[("oldname", A0), ("newname", A1)], true),
        file_call!(
            "linkat",
            &[("olddfd", A0), ("oldname", A1), ("newdfd", A2), ("newname", A3), ("flags", A4)],
            false
        ),
        file_call!("symlink", &[("oldname", A0), ("newname", A1)], true),
        file_call!("symlinkat", &[("oldname", A0), ("newdfd", A1), ("newname", A2)], false),
    ]
    .into_iter()
    .flatten()
    .chain(FD_LIFETIME.iter().copied())
    .chain(FD_COPIES.iter().copied())
    .collect()
}

/// The hooks that end a directory fd's mark (agent-ebpf/src/file.rs,
/// directory-fd cache): the kernel side may mark fds only when each is
/// attached or its syscall does not exist here (dup2 on aarch64,
/// close_range before 5.9); see [`super::dir_cache_ready`].
pub const FD_LIFETIME: &[ProbeSpec] = &[
    tp("sys_enter_close", "syscalls", FILE, &[("fd", A0)]),
    ProbeSpec { optional: true, ..tp("sys_enter_dup2", "syscalls", FILE, &[("oldfd", A0), ("newfd", A1)]) },
    ProbeSpec {
        program: "sys_enter_dup2",
        hook: Hook::Tracepoint { category: "syscalls", name: "sys_enter_dup3" },
        kinds: FILE,
        fields: &[("oldfd", A0), ("newfd", A1)],
        optional: false,
    },
    ProbeSpec { optional: true, ..tp("sys_enter_close_range", "syscalls", FILE, &[("fd", A0)]) },
    tp("sys_enter_unshare", "syscalls", FILE, &[("unshare_flags", A0)]),
];

/// Copies of a marked directory fd are marked too (dup, dup2/dup3, fcntl
/// F_DUPFD*; the entries above and here, the exits in `sys_exit_file`).
/// Only the cache's hit rate depends on these (fts dups every folder's fd).
const FD_COPIES: &[ProbeSpec] = &[
    ProbeSpec { optional: true, ..tp("sys_enter_dup", "syscalls", FILE, &[("fildes", A0)]) },
    ProbeSpec { optional: true, ..tp("sys_enter_fcntl", "syscalls", FILE, &[("fd", A0), ("cmd", A1)]) },
    exit_file("sys_exit_dup"),
    exit_file("sys_exit_dup2"),
    exit_file("sys_exit_dup3"),
    exit_file("sys_exit_fcntl"),
];

const fn exit_file(name: &'static str) -> ProbeSpec {
    ProbeSpec {
        program: "sys_exit_file",
        hook: Hook::Tracepoint { category: "syscalls", name },
        kinds: FILE,
        fields: NR_RET,
        optional: true,
    }
}

/// Field name -> offset of a tracepoint, from its `format` file.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> std::io::Result<HashMap<String, usize>> {
    let text = std::fs::read_to_string(tracefs.join("events").join(category).join(name).join("format"))?;
    Ok(parse_format(&text))
}

/// Parses lines like `\tfield:const char * filename;\toffset:16;\tsize:8;\tsigned:0;`.
pub fn parse_format(text: &str) -> HashMap<String, usize> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                // The name is the last word, without any array suffix.
                decl = d.split_whitespace().last().map(|n| n.split('[').next().unwrap_or(n).to_owned());
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.trim().parse().ok();
            }
        }
        if let (Some(d), Some(o)) = (decl, offset) {
            fields.insert(d, o);
        }
    }
    fields
}

/// Why a tracepoint's format does not match what the program reads, if it doesn't.
pub fn check_fields(found: &HashMap<String, usize>, want: &[(&str, usize)]) -> Result<(), String> {
    for (name, off) in want {
        match found.get(*name) {
            Some(o) if o == off => {}
            Some(o) => return Err(format!("field {name} is at offset {o}, the program reads {off}")),
            None => return Err(format!("field {name} is missing")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracepoint_format() {
        let text = "name: sys_enter_execve\nID: 700\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:const char * filename;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n";
        let f = parse_format(text);
        assert_eq!(f.get("filename"), Some(&16));
        assert_eq!(f.get("saddr"), Some(&32));
        assert_eq!(f.get("common_type"), Some(&0));
        assert!(check_fields(&f, &[("filename", 16)]).is_ok());
        assert!(check_fields(&f, &[("filename", 24)]).unwrap_err().contains("offset 16"));
        assert!(check_fields(&f, &[("argv", 24)]).unwrap_err().contains("missing"));
    }

    #[test]
    fn every_kind_has_a_probe_and_names_are_unique_per_hook() {
        let t = table();
        for k in Kind::ALL {
            assert!(t.iter().any(|p| p.kinds.contains(&k)), "{k:?} has no probe");
        }
        let mut seen = std::collections::HashSet::new();
        for p in &t {
            let hook = format!("{}:{:?}", p.program, p.hook);
            assert!(seen.insert(hook), "duplicate {}", p.program);
        }
    }
}
