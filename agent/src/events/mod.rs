//! Typed security events: what the kernel reported, decoded and never trusted.

pub mod decode;
pub mod file;
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
    /// A change to a file under a watched path.
    File,
    /// A detection fired (`detect/`): made by the agent, never by the kernel.
    Alert,
    /// Another program's security event, reported through the SDK socket
    /// (`sdk/`): made by the agent, never by the kernel.
    Sdk,
}

impl Kind {
    /// The kinds the kernel reports (each has probes). [`Kind::Alert`] is not
    /// among them: see [`Kind::EVENTS`].
    pub const ALL: [Kind; 10] = [
        Kind::Exec,
        Kind::Exit,
        Kind::Fork,
        Kind::Connect,
        Kind::Accept,
        Kind::Listen,
        Kind::Bind,
        Kind::Login,
        Kind::Privilege,
        Kind::File,
    ];

    /// Every kind an event can have: the kernel's, `alert` and `sdk`.
    pub const EVENTS: [Kind; 12] = [
        Kind::Exec,
        Kind::Exit,
        Kind::Fork,
        Kind::Connect,
        Kind::Accept,
        Kind::Listen,
        Kind::Bind,
        Kind::Login,
        Kind::Privilege,
        Kind::File,
        Kind::Alert,
        Kind::Sdk,
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
            Kind::File => "file",
            Kind::Alert => "alert",
            Kind::Sdk => "sdk",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::EVENTS.into_iter().find(|k| k.name() == s)
    }

    /// A kind given on the command line (`--kinds`, `--wake-kinds`); the
    /// error lists the kinds.
    pub fn parse(s: &str) -> Result<Kind, String> {
        Kind::from_name(s.trim()).ok_or_else(|| {
            let all: Vec<_> = Kind::EVENTS.iter().map(|k| k.name()).collect();
            format!("unknown event kind {s:?}; kinds are {}", all.join(", "))
        })
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
            Kind::File => kind::FILE,
            Kind::Alert => kind::ALERT,
            Kind::Sdk => kind::SDK,
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
            Body::File(_) => Kind::File,
            Body::Alert(_) => Kind::Alert,
            Body::Sdk(_) => Kind::Sdk,
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
    File(file::File),
    /// Boxed: alerts are rare and carry the event that triggered them.
    Alert(Box<crate::detect::Alert>),
    /// Boxed: reported by other programs through the SDK socket; the
    /// header is the sender (SO_PEERCRED, /proc).
    Sdk(Box<crate::sdk::Sdk>),
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
    /// Failed (ENOENT) execs of the same process just before this one,
    /// folded into it: a shell's PATH search (`--exec-misses fold`).
    #[serde(skip_serializing_if = "is_zero")]
    pub path_misses: u32,
    /// SHA-256 of the executed file (lowercase hex), when executables are
    /// hashed (an IoC list has hashes, or `hash_executables`) and the file's
    /// hash was already known: computed off the event path, so the first
    /// exec of a new file has none and later execs of it do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why the file was not hashed: `too_large` (over `hash_max_size`),
    /// `unreadable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256_skipped: Option<&'static str>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
impl Exec {
    /// A successful exec of `filename` with `argv`, nothing else set (tests).
    pub fn succeeded(filename: &str, argv: &[&str]) -> Exec {
        Exec {
            filename: filename.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            args_truncated: false,
            filename_truncated: false,
            result: 0,
            success: true,
            error: None,
            parent_exe: None,
            execveat: false,
            entry_missing: false,
            args_unreadable: false,
            path_misses: 0,
            sha256: None,
            sha256_skipped: None,
        }
    }
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
    /// connect: this event is the outcome (`status` success, refused or
    /// failed) of the earlier `in_progress` connect of the same process, fd
    /// and addresses (a non-blocking connect); `result` stays the syscall's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub async_outcome: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Login {
    pub service: String,
    /// The PAM user (who logs in). In JSON `login_user`: the header's `user`
    /// is the name of the process's uid (root for sshd), a different thing.
    #[serde(rename = "login_user")]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A JSON value whose objects are checked for repeated keys while parsing
    /// (serde_json's `Value` keeps the last of two equal keys silently).
    struct NoDuplicates;

    impl<'de> serde::de::DeserializeSeed<'de> for NoDuplicates {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> serde::de::Visitor<'de> for NoDuplicates {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(NoDuplicates)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys: Vec<(String, ())> = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                if keys.iter().any(|(k, _)| *k == key) {
                    return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                }
                map.next_value_seed(NoDuplicates)?;
                keys.push((key, ()));
            }
            Ok(())
        }
    }

    fn event(body: Body) -> Event {
        Event {
            time: Default::default(),
            ktime_ns: 1,
            pid: 10,
            tid: 11,
            ppid: Some(1),
            uid: 0,
            gid: 0,
            user: Some("root".into()),
            comm: "sshd".into(),
            exe: Some("/usr/sbin/sshd".into()),
            body,
        }
    }

    /// One event of `kind` with every optional field set, so each key its
    /// JSON can have appears.
    fn full_event(kind: Kind) -> Event {
        let sock = Sock {
            protocol: "tcp",
            family: "ipv4",
            local_addr: Some("127.0.0.1".parse().unwrap()),
            local_port: Some(40000),
            remote_addr: Some("10.0.0.1".parse().unwrap()),
            remote_port: Some(22),
            fd: 3,
            result: -111,
            status: "refused",
            error: Some("ECONNREFUSED"),
            async_outcome: true,
        };
        let body = match kind {
            Kind::Exec => Body::Exec(Exec {
                filename: "/bin/true".into(),
                argv: vec!["true".into()],
                args_truncated: true,
                filename_truncated: true,
                result: -13,
                success: false,
                error: Some("EACCES"),
                parent_exe: Some("/bin/sh".into()),
                execveat: true,
                entry_missing: true,
                args_unreadable: true,
                path_misses: 3,
                sha256: None,
                sha256_skipped: None,
            }),
            Kind::Exit => Body::Exit(Exit { exit_code: Some(1), signal: Some(9) }),
            Kind::Fork => Body::Fork(Fork { child_pid: 12 }),
            Kind::Connect => Body::Connect(sock),
            Kind::Accept => Body::Accept(sock),
            Kind::Listen => Body::Listen(sock),
            Kind::Bind => Body::Bind(sock),
            Kind::Login => Body::Login(Login {
                service: "sshd".into(),
                user: "alice".into(),
                rhost: Some("10.0.0.9".into()),
                tty: Some("ssh".into()),
                step: "authenticate",
                result: "failure",
                pam_code: 7,
                pam_error: "PAM_AUTH_ERR",
            }),
            Kind::Privilege => Body::Privilege(Privilege {
                call: "capset",
                args: vec![None, Some(0)],
                old_uid: 1000,
                old_gid: 1000,
                new_uid: 0,
                new_gid: 0,
                result: -1,
                success: false,
                error: Some("EPERM"),
                caps: Some(Caps {
                    effective: "0x1".into(),
                    permitted: "0x1".into(),
                    inheritable: "0x0".into(),
                }),
            }),
            Kind::File => Body::File(file::File {
                operation: "rename",
                path: "/etc/a".into(),
                new_path: Some("/etc/b".into()),
                target: Some("x".into()),
                mode: Some("644".into()),
                owner_uid: Some(0),
                owner_gid: Some(0),
                open_flags: Some("1101".into()),
                directory: true,
                result: -2,
                success: false,
                error: Some("ENOENT"),
                path_truncated: true,
                resolved_from: Some("cwd"),
                raw: Default::default(),
            }),
            Kind::Alert => {
                let alert = crate::detect::Alert {
                    rule: "test-rule".into(),
                    title: "Test".into(),
                    severity: crate::detect::Severity::High,
                    source: "builtin",
                    tags: vec!["attack.t1110".into()].into(),
                    description: "d".into(),
                    remediation: "r".into(),
                    details: [("failures", "6".to_string())].into(),
                    event: Box::new(full_event(Kind::Login)),
                };
                return alert.into_event();
            }
            Kind::Sdk => {
                let line = br#"{"Name":"DoorOpened","Payload":[{"Door":"cabinet","ExtraDetails":{"SenderPid":"10"}}]}"#;
                let ev = shrike_common::sdk::parse_line(line, Default::default()).unwrap();
                Body::Sdk(Box::new(crate::sdk::Sdk { event: ev }))
            }
        };
        event(body)
    }

    #[test]
    fn no_event_kind_has_a_duplicate_json_key() {
        for kind in Kind::EVENTS {
            let ev = full_event(kind);
            assert_eq!(ev.kind(), kind);
            let json = serde_json::to_string(&ev).unwrap();
            let mut de = serde_json::Deserializer::from_str(&json);
            serde::de::DeserializeSeed::deserialize(NoDuplicates, &mut de)
                .unwrap_or_else(|e| panic!("{}: {e}: {json}", kind.name()));
        }
        // The checker itself catches a repeated key.
        let mut de = serde_json::Deserializer::from_str(r#"{"a":1,"b":{"user":1,"user":2}}"#);
        assert!(serde::de::DeserializeSeed::deserialize(NoDuplicates, &mut de).is_err());
    }

    #[test]
    fn login_names_the_pam_user_apart_from_the_process_user() {
        let json = serde_json::to_value(full_event(Kind::Login)).unwrap();
        assert_eq!(json["user"], "root");
        assert_eq!(json["login_user"], "alice");
    }
}
