//! Agent events to security message events: each kernel-reported [`Event`]
//! becomes one event of the security message (`shrike_common::schema`).
//!
//! | agent event | message kind | notes |
//! |---|---|---|
//! | exec (also failed ones) | `ProcessCreate` | `ExtraDetails.Result` Success/Fail |
//! | exit | `ProcessTerminate` | killed by a signal: `ExitStatus` 128+signal |
//! | connect | `ConnectionCreate`, `Direction` Out | every attempt, `ExtraDetails.Status` |
//! | accept | `ConnectionCreate`, `Direction` In | |
//! | PAM step | `Login` | `Operation` "PAM:{step}" |
//! | set*id / capset | `PrivilegeChange` | own kind: goes in messages of its own |
//! | alert | `Alert` | own kind; the triggering event's kind in `ExtraDetails.TriggerKind` |
//! | file (file integrity) | `FileChange` | own kind; `Path`, `NewPath` (rename) |
//! | fork, listen, bind | — | no message kind |
//!
//! The fields the Azure kinds have are filled from the event; everything else
//! goes into `ExtraDetails`, as text, under the keys in [`keys`]. Flags
//! (`ArgsTruncated`...) appear only when set, so a message stays small.

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::events::file::File;
use chrono::{DateTime, Utc};
use shrike_common::schema::{
    self as sm, ConnectionCreate, Direction, ExtraDetails, Login, Outcome, Payload, PrivilegeChange,
    ProcessCreate, ProcessTerminate, protocol,
};

use crate::{
    detect::{Alert, Severity},
    events::{Body, Event, Exec, Exit, Privilege, Sock},
};

/// `ExtraDetails` keys written by the mapping.
pub mod keys {
    /// Thread id of the task that made the call.
    pub const THREAD_ID: &str = "ThreadId";
    /// The task's `comm` (process name, 15 bytes at most).
    pub const COMM: &str = "Comm";
    pub const GROUP_ID: &str = "GroupId";
    /// Where the kind has no `UserId` field.
    pub const USER_ID: &str = "UserId";
    /// Where the kind has no `UserName` field.
    pub const USER_NAME: &str = "UserName";
    /// Where the kind has no `ParentProcessId` field.
    pub const PARENT_PROCESS_ID: &str = "ParentProcessId";
    pub const PARENT_EXECUTABLE: &str = "ParentExecutable";
    /// "Success" or "Fail" (exec).
    pub const RESULT: &str = "Result";
    /// The syscall's return value (`-errno` on failure; accept: the new fd).
    pub const RETURN_CODE: &str = "ReturnCode";
    /// The errno name of a failure ("ENOENT").
    pub const ERROR: &str = "Error";
    /// The path given to execve when it differs from `Executable`.
    pub const FILENAME: &str = "Filename";
    pub const ARGS_TRUNCATED: &str = "ArgsTruncated";
    pub const FILENAME_TRUNCATED: &str = "FilenameTruncated";
    pub const ARGS_UNREADABLE: &str = "ArgsUnreadable";
    /// The exec was an execveat.
    pub const EXECVEAT: &str = "Execveat";
    /// The kernel missed the exec's entry; filename/argv come from /proc.
    pub const ENTRY_MISSING: &str = "EntryMissing";
    /// The signal that killed the process.
    pub const SIGNAL: &str = "Signal";
    /// connect: "success", "in_progress", "refused" or "failed".
    pub const STATUS: &str = "Status";
    pub const FD: &str = "Fd";
    /// PAM service ("sshd", "sudo"...).
    pub const SERVICE: &str = "Service";
    pub const TTY: &str = "Tty";
    /// PAM_RHOST when it is not an IP address (a host name).
    pub const REMOTE_HOST: &str = "RemoteHost";
    pub const PAM_CODE: &str = "PamCode";
    pub const PAM_ERROR: &str = "PamError";
    /// Login: the user id of the process handling the login (not the user
    /// logging in).
    pub const PROCESS_USER_ID: &str = "ProcessUserId";
    /// set*id: the ids passed, comma-separated, -1 for "unchanged".
    pub const ARGS: &str = "Args";
    /// set*id: the name of the user id after the call.
    pub const NEW_USER_NAME: &str = "NewUserName";
    pub const CAP_EFFECTIVE: &str = "CapEffective";
    pub const CAP_PERMITTED: &str = "CapPermitted";
    pub const CAP_INHERITABLE: &str = "CapInheritable";
    /// exec: failed (ENOENT) execs of the PATH search folded into this one.
    pub const PATH_MISSES: &str = "PathMisses";
    /// The executed file's SHA-256 (hex), when hashed in time (see the
    /// `sha256` of exec events).
    pub const SHA256: &str = "Sha256";
    /// Why it was not hashed: `too_large`, `unreadable`.
    pub const SHA256_SKIPPED: &str = "Sha256Skipped";
    /// connect: the outcome of an earlier in_progress connect ("true").
    pub const ASYNC_OUTCOME: &str = "AsyncOutcome";
    /// The peer of the connection is unknown ("true"): the required
    /// `RemoteAddress`/`RemotePort` then hold the unspecified address and 0,
    /// which name no peer.
    pub const REMOTE_UNKNOWN: &str = "RemoteUnknown";
    /// Alert: the kind of the event that triggered it ("exec", "login"...).
    /// The detector's own facts follow under their names in PascalCase
    /// (`failures` -> `Failures`).
    pub const TRIGGER_KIND: &str = "TriggerKind";
    /// file: link's existing file, symlink's text.
    pub const TARGET: &str = "Target";
    /// file: chmod's mode, a create's mode (octal).
    pub const MODE: &str = "Mode";
    /// file: chown's new owner and group.
    pub const OWNER_UID: &str = "OwnerUid";
    pub const OWNER_GID: &str = "OwnerGid";
    /// file: an open's flags (octal).
    pub const OPEN_FLAGS: &str = "OpenFlags";
    /// file: the deleted path was a directory.
    pub const DIRECTORY: &str = "Directory";
    pub const PATH_TRUNCATED: &str = "PathTruncated";
    /// file: how a relative path was made absolute (cwd, dirfd, fd, parent_cwd).
    pub const RESOLVED_FROM: &str = "ResolvedFrom";
}

/// The security message event for `ev`, stamped when the kernel saw it, or
/// `None` for kinds with no message counterpart (fork, listen, bind).
pub fn to_message_event(ev: &Event) -> Option<sm::Event> {
    to_payload(ev).map(|payload| sm::Event::at(time_of(ev), payload))
}

/// The payload item for `ev` (see the module table).
pub fn to_payload(ev: &Event) -> Option<Payload> {
    Some(match &ev.body {
        Body::Exec(exec) => process_create(ev, exec).into(),
        Body::Exit(exit) => process_terminate(ev, exit).into(),
        Body::Connect(sock) => connection_create(ev, sock, Direction::Out).into(),
        Body::Accept(sock) => connection_create(ev, sock, Direction::In).into(),
        Body::Login(login) => login_item(ev, login).into(),
        Body::Privilege(p) => privilege_change(ev, p).into(),
        Body::File(f) => file_change(ev, f).into(),
        Body::Fork(_) | Body::Listen(_) | Body::Bind(_) => return None,
        Body::Alert(alert) => alert_item(ev, alert).into(),
        // Already a message event, Id and time as the sender gave them
        // (`daemon/pipeline.rs` sends it as is); custom kinds have no
        // typed payload.
        Body::Sdk(s) => match &s.event {
            shrike_common::sdk::SdkEvent::Azure(e) => e.payload.clone(),
            shrike_common::sdk::SdkEvent::Custom(_) => return None,
        },
    })
}

/// When the event happened; now if its time does not parse (it always should).
pub fn time_of(ev: &Event) -> DateTime<Utc> {
    ev.time
}

fn set(extra: &mut ExtraDetails, key: &str, value: impl ToString) {
    extra.insert(key.to_string(), value.to_string());
}

fn flag(extra: &mut ExtraDetails, key: &str, on: bool) {
    if on {
        set(extra, key, "true");
    }
}

/// What every event adds: thread id and comm.
fn common(ev: &Event) -> ExtraDetails {
    let mut extra = ExtraDetails::new();
    set(&mut extra, keys::THREAD_ID, ev.tid);
    set(&mut extra, keys::COMM, &ev.comm);
    extra
}

/// The process's executable path; its comm when the process table did not
/// know it (a process that was gone before it could be looked at).
fn executable(ev: &Event) -> String {
    ev.exe.clone().unwrap_or_else(|| ev.comm.clone())
}

/// argv joined with spaces (as /proc/PID/cmdline reads with NULs as spaces);
/// the filename when there is no argv.
fn command_line(exec: &Exec) -> String {
    if exec.argv.is_empty() { exec.filename.clone() } else { exec.argv.join(" ") }
}

fn process_create(ev: &Event, exec: &Exec) -> ProcessCreate {
    // After a successful exec the process table has the new image's path; a
    // failed exec leaves the caller's image, so the path asked for is it.
    let executable = match (&ev.exe, exec.success) {
        (Some(exe), true) => exe.clone(),
        _ => exec.filename.clone(),
    };
    let mut extra = common(ev);
    set(&mut extra, keys::GROUP_ID, ev.gid);
    set(&mut extra, keys::RESULT, Outcome::from_success(exec.success).as_str());
    if !exec.success {
        set(&mut extra, keys::RETURN_CODE, exec.result);
        if let Some(error) = exec.error {
            set(&mut extra, keys::ERROR, error);
        }
    }
    if exec.filename != executable {
        set(&mut extra, keys::FILENAME, &exec.filename);
    }
    if let Some(parent) = &exec.parent_exe {
        set(&mut extra, keys::PARENT_EXECUTABLE, parent);
    }
    flag(&mut extra, keys::ARGS_TRUNCATED, exec.args_truncated);
    flag(&mut extra, keys::FILENAME_TRUNCATED, exec.filename_truncated);
    flag(&mut extra, keys::ARGS_UNREADABLE, exec.args_unreadable);
    flag(&mut extra, keys::EXECVEAT, exec.execveat);
    flag(&mut extra, keys::ENTRY_MISSING, exec.entry_missing);
    if exec.path_misses > 0 {
        set(&mut extra, keys::PATH_MISSES, exec.path_misses);
    }
    if let Some(h) = &exec.sha256 {
        set(&mut extra, keys::SHA256, h);
    }
    if let Some(why) = exec.sha256_skipped {
        set(&mut extra, keys::SHA256_SKIPPED, why);
    }
    ProcessCreate {
        executable,
        process_id: ev.pid,
        parent_process_id: ev.ppid.unwrap_or(0),
        user_id: ev.uid.to_string(),
        user_name: ev.user.clone(),
        command_line: command_line(exec),
        extra_details: extra,
    }
}

fn process_terminate(ev: &Event, exit: &Exit) -> ProcessTerminate {
    let mut extra = common(ev);
    set(&mut extra, keys::USER_ID, ev.uid);
    set(&mut extra, keys::GROUP_ID, ev.gid);
    if let Some(user) = &ev.user {
        set(&mut extra, keys::USER_NAME, user);
    }
    if let Some(ppid) = ev.ppid {
        set(&mut extra, keys::PARENT_PROCESS_ID, ppid);
    }
    if let Some(signal) = exit.signal {
        set(&mut extra, keys::SIGNAL, signal);
    }
    // A shell's convention for a process killed by a signal: 128 + signal.
    let exit_status = exit.exit_code.or(exit.signal.map(|s| 128 + s)).unwrap_or(0);
    ProcessTerminate { executable: executable(ev), process_id: ev.pid, exit_status, extra_details: extra }
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn protocol_name(p: &str) -> String {
    match p {
        "tcp" => protocol::TCP.into(),
        "udp" => protocol::UDP.into(),
        other => other.to_ascii_uppercase(),
    }
}

fn connection_create(ev: &Event, sock: &Sock, direction: Direction) -> ConnectionCreate {
    // RemoteAddress is required: when the kernel could not read it, the
    // unspecified address of the socket's family stands in.
    let unspecified: IpAddr =
        if sock.family == "ipv6" { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
    let mut extra = common(ev);
    set(&mut extra, keys::GROUP_ID, ev.gid);
    if let Some(user) = &ev.user {
        set(&mut extra, keys::USER_NAME, user);
    }
    if let Some(ppid) = ev.ppid {
        set(&mut extra, keys::PARENT_PROCESS_ID, ppid);
    }
    set(&mut extra, keys::STATUS, sock.status);
    set(&mut extra, keys::RETURN_CODE, sock.result);
    if let Some(error) = sock.error {
        set(&mut extra, keys::ERROR, error);
    }
    set(&mut extra, keys::FD, sock.fd);
    flag(&mut extra, keys::ASYNC_OUTCOME, sock.async_outcome);
    flag(&mut extra, keys::REMOTE_UNKNOWN, sock.remote_addr.is_none());
    ConnectionCreate {
        remote_address: sock.remote_addr.map(canonical).unwrap_or(unspecified),
        remote_port: sock.remote_port.unwrap_or(0).to_string(),
        local_address: sock.local_addr.map(canonical),
        local_port: sock.local_port.map(|p| p.to_string()),
        direction,
        protocol: protocol_name(sock.protocol),
        process_id: ev.pid,
        user_id: Some(ev.uid.to_string()),
        executable: executable(ev),
        command_line: None,
        extra_details: extra,
    }
}

fn login_item(ev: &Event, login: &crate::events::Login) -> Login {
    let mut extra = common(ev);
    set(&mut extra, keys::SERVICE, &login.service);
    set(&mut extra, keys::PROCESS_USER_ID, ev.uid);
    if let Some(ppid) = ev.ppid {
        set(&mut extra, keys::PARENT_PROCESS_ID, ppid);
    }
    if let Some(tty) = &login.tty {
        set(&mut extra, keys::TTY, tty);
    }
    set(&mut extra, keys::PAM_CODE, login.pam_code);
    set(&mut extra, keys::PAM_ERROR, login.pam_error);
    // RemoteAddress must be an IP; PAM_RHOST may be a host name.
    let rhost = login.rhost.as_deref().map(str::trim).filter(|h| !h.is_empty());
    let remote_address = rhost.and_then(|h| h.parse::<IpAddr>().ok()).map(canonical);
    if let (Some(host), None) = (rhost, remote_address) {
        set(&mut extra, keys::REMOTE_HOST, host);
    }
    Login {
        process_id: ev.pid,
        user_id: None,
        user_name: Some(login.user.clone()),
        operation: format!("PAM:{}", login.step),
        executable: executable(ev),
        remote_address,
        remote_port: None,
        local_port: None,
        result: Outcome::from_success(login.result == "success"),
        extra_details: extra,
    }
}

fn privilege_change(ev: &Event, p: &Privilege) -> PrivilegeChange {
    let mut extra = common(ev);
    if let Some(ppid) = ev.ppid {
        set(&mut extra, keys::PARENT_PROCESS_ID, ppid);
    }
    let args: Vec<String> = p.args.iter().map(|a| a.map_or("-1".to_string(), |id| id.to_string())).collect();
    if !args.is_empty() {
        set(&mut extra, keys::ARGS, args.join(","));
    }
    set(&mut extra, keys::RETURN_CODE, p.result);
    if let Some(error) = p.error {
        set(&mut extra, keys::ERROR, error);
    }
    // The event's user is the one after the call.
    if let Some(user) = &ev.user {
        set(&mut extra, keys::NEW_USER_NAME, user);
    }
    if let Some(caps) = &p.caps {
        set(&mut extra, keys::CAP_EFFECTIVE, &caps.effective);
        set(&mut extra, keys::CAP_PERMITTED, &caps.permitted);
        set(&mut extra, keys::CAP_INHERITABLE, &caps.inheritable);
    }
    PrivilegeChange {
        process_id: ev.pid,
        executable: executable(ev),
        command_line: None,
        operation: p.call.to_string(),
        result: Outcome::from_success(p.success),
        user_id: p.old_uid.to_string(),
        user_name: None,
        group_id: Some(p.old_gid.to_string()),
        new_user_id: Some(p.new_uid.to_string()),
        new_group_id: Some(p.new_gid.to_string()),
        extra_details: extra,
    }
}

fn file_change(ev: &Event, f: &File) -> sm::FileChange {
    let mut extra = common(ev);
    if let Some(ppid) = ev.ppid {
        set(&mut extra, keys::PARENT_PROCESS_ID, ppid);
    }
    set(&mut extra, keys::GROUP_ID, ev.gid);
    if !f.success {
        set(&mut extra, keys::RETURN_CODE, f.result);
        if let Some(error) = f.error {
            set(&mut extra, keys::ERROR, error);
        }
    }
    if let Some(t) = &f.target {
        set(&mut extra, keys::TARGET, t);
    }
    if let Some(m) = &f.mode {
        set(&mut extra, keys::MODE, m);
    }
    if let Some(u) = f.owner_uid {
        set(&mut extra, keys::OWNER_UID, u);
    }
    if let Some(g) = f.owner_gid {
        set(&mut extra, keys::OWNER_GID, g);
    }
    if let Some(o) = &f.open_flags {
        set(&mut extra, keys::OPEN_FLAGS, o);
    }
    flag(&mut extra, keys::DIRECTORY, f.directory);
    flag(&mut extra, keys::PATH_TRUNCATED, f.path_truncated);
    if let Some(r) = f.resolved_from {
        set(&mut extra, keys::RESOLVED_FROM, r);
    }
    sm::FileChange {
        process_id: ev.pid,
        executable: executable(ev),
        command_line: None,
        operation: f.operation.to_string(),
        path: f.path.clone(),
        new_path: f.new_path.clone(),
        result: Outcome::from_success(f.success),
        user_id: ev.uid.to_string(),
        user_name: ev.user.clone(),
        extra_details: extra,
    }
}

/// `snake_case` detail names as `ExtraDetails` keys (`remote_host` -> `RemoteHost`).
fn pascal(name: &str) -> String {
    name.split('_')
        .flat_map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase()).into_iter().chain(c)
        })
        .collect()
}

fn alert_item(ev: &Event, alert: &Alert) -> sm::Alert {
    let trigger = &alert.event;
    let mut extra = common(ev);
    set(&mut extra, keys::TRIGGER_KIND, trigger.kind().name());
    if let Some(ppid) = ev.ppid {
        set(&mut extra, keys::PARENT_PROCESS_ID, ppid);
    }
    for (name, value) in &alert.details {
        extra.insert(pascal(name), value.clone());
    }
    let mut command = None;
    let mut remote: Option<(IpAddr, Option<String>)> = None;
    match &trigger.body {
        Body::Exec(exec) => command = Some(command_line(exec)),
        Body::Connect(s) | Body::Accept(s) => {
            remote = s.remote_addr.map(|a| (canonical(a), s.remote_port.map(|p| p.to_string())));
        }
        Body::Login(login) => {
            let rhost = login.rhost.as_deref().map(str::trim);
            remote = rhost.and_then(|h| h.parse::<IpAddr>().ok()).map(|a| (canonical(a), None));
            if let (Some(host), None) = (rhost.filter(|h| !h.is_empty()), &remote) {
                set(&mut extra, keys::REMOTE_HOST, host);
            }
        }
        _ => {}
    }
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    sm::Alert {
        rule_id: alert.rule.to_string(),
        severity: match alert.severity {
            Severity::Critical => sm::AlertSeverity::Critical,
            Severity::High => sm::AlertSeverity::High,
            Severity::Medium => sm::AlertSeverity::Medium,
            Severity::Low => sm::AlertSeverity::Low,
            Severity::Informational => sm::AlertSeverity::Informational,
        },
        source: text(alert.source),
        title: alert.title.to_string(),
        description: text(&alert.description),
        remediation: text(&alert.remediation),
        tags: alert.tags.iter().map(|t| t.to_string()).collect(),
        process_id: Some(ev.pid),
        executable: Some(executable(ev)),
        command_line: command,
        user_id: Some(ev.uid.to_string()),
        user_name: ev.user.clone(),
        remote_address: remote.as_ref().map(|r| r.0),
        remote_port: remote.and_then(|r| r.1),
        extra_details: extra,
    }
}
