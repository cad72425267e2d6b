//! Typed security events: what the kernel reported, decoded and never trusted.

pub mod decode;
pub mod names;
pub mod reader;
pub mod text;

use serde::Serialize;
use std::net::IpAddr;

/// Event kinds, as named on the command line (`--kinds`) and in the JSON output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Exec,
    Exit,
    Fork,
    Connect,
    Accept,
    Listen,
    Bind,
    Login,
    Privilege,
    /// A detection fired (`detect/`): made by the agent, never by the kernel.
    Alert,
}

impl Kind {
    /// The kinds the kernel reports (each has probes). [`Kind::Alert`] is not
    /// among them: see [`Kind::EVENTS`].
    pub const ALL: [Kind; 9] = [
        Kind::Exec,
        Kind::Exit,
        Kind::Fork,
        Kind::Connect,
        Kind::Accept,
        Kind::Listen,
        Kind::Bind,
        Kind::Login,
        Kind::Privilege,
    ];

    /// Every kind an event can have: the kernel's and `alert`.
    pub const EVENTS: [Kind; 10] = [
        Kind::Exec,
        Kind::Exit,
        Kind::Fork,
        Kind::Connect,
        Kind::Accept,
        Kind::Listen,
        Kind::Bind,
        Kind::Login,
        Kind::Privilege,
        Kind::Alert,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Exit => "exit",
            Kind::Fork => "fork",
            Kind::Connect => "connect",
            Kind::Accept => "accept",
            Kind::Listen => "listen",
            Kind::Bind => "bind",
            Kind::Login => "login",
            Kind::Privilege => "privilege",
            Kind::Alert => "alert",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::EVENTS.into_iter().find(|k| k.name() == s)
    }

    /// The record kind number shared with the kernel (`shrike_common::kind`).
    pub fn raw(self) -> u32 {
        use shrike_common::kind;
        match self {
            Kind::Exec => kind::EXEC,
            Kind::Exit => kind::EXIT,
            Kind::Fork => kind::FORK,
            Kind::Connect => kind::CONNECT,
            Kind::Accept => kind::ACCEPT,
            Kind::Listen => kind::LISTEN,
            Kind::Bind => kind::BIND,
            Kind::Login => kind::LOGIN,
            Kind::Privilege => kind::PRIVILEGE,
            Kind::Alert => kind::ALERT,
        }
    }

    pub fn from_raw(raw: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.raw() == raw)
    }
}

/// One security event. Header fields are common to every kind; `body` is
/// flattened into the same JSON object, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Wall-clock time, from the kernel's monotonic timestamp; in JSON,
    /// RFC 3339 UTC with nanoseconds (formatted only when printed).
    #[serde(serialize_with = "rfc3339_nanos")]
    pub time: chrono::DateTime<chrono::Utc>,
    /// CLOCK_MONOTONIC nanoseconds as the kernel stamped it.
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// Parent pid (process table), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub comm: String,
    /// The process's executable (process table), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(flatten)]
    pub body: Body,
}

fn rfc3339_nanos<S: serde::Serializer>(t: &chrono::DateTime<chrono::Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.format("%Y-%m-%dT%H:%M:%S%.9fZ"))
}

impl Event {
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Exec(_) => Kind::Exec,
            Body::Exit(_) => Kind::Exit,
            Body::Fork(_) => Kind::Fork,
            Body::Connect(_) => Kind::Connect,
            Body::Accept(_) => Kind::Accept,
            Body::Listen(_) => Kind::Listen,
            Body::Bind(_) => Kind::Bind,
            Body::Login(_) => Kind::Login,
            Body::Privilege(_) => Kind::Privilege,
            Body::Alert(_) => Kind::Alert,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Exec(Exec),
    Exit(Exit),
    Fork(Fork),
    Connect(Sock),
    Accept(Sock),
    Listen(Sock),
    Bind(Sock),
    Login(Login),
    Privilege(Privilege),
    /// Boxed: alerts are rare and carry the event that triggered them.
    Alert(Box<crate::detect::Alert>),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Exec {
    pub filename: String,
    pub argv: Vec<String>,
    /// More arguments, or longer ones, than the configured bounds.
    pub args_truncated: bool,
    pub filename_truncated: bool,
    /// 0 on success, `-errno` on failure.
    pub result: i64,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// Executable of the parent process, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_exe: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub execveat: bool,
    /// The kernel did not see the exec's entry; filename/argv come from /proc.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub entry_missing: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub args_unreadable: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Exit {
    /// The exit code when the process exited normally.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fork {
    pub child_pid: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sock {
    /// "tcp", "udp" or "unknown".
    pub protocol: &'static str,
    /// "ipv4" or "ipv6".
    pub family: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_addr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    pub fd: i32,
    /// Syscall result (connect: 0 or `-errno`; accept: the new fd).
    pub result: i64,
    /// connect: "success", "in_progress", "refused" or "failed".
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Login {
    pub service: String,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rhost: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
    /// "authenticate", "acct_mgmt", "open_session", "close_session", "setcred", "chauthtok".
    pub step: &'static str,
    /// "success" or "failure".
    pub result: &'static str,
    pub pam_code: i32,
    pub pam_error: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Privilege {
    /// "setuid", "setresgid", "capset", ...
    pub call: &'static str,
    /// The ids passed (`-1`, unchanged, as null).
    pub args: Vec<Option<u32>>,
    pub old_uid: u32,
    pub old_gid: u32,
    pub new_uid: u32,
    pub new_gid: u32,
    pub result: i32,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// capset: requested effective/permitted/inheritable sets, as hex masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps: Option<Caps>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Caps {
    pub effective: String,
    pub permitted: String,
    pub inheritable: String,
}
