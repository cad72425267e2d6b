//! Recorded `shrike events` output back into [`Event`]s, so `shrike rules
//! test` reads fields through the same table ([`super::fields::View`]) as the
//! live agent. Only the kinds Sigma looks at are rebuilt (exec, fork, exit,
//! connect, accept, file, sdk); other lines are passed over.

use serde_json::Value;

use crate::events::{Body, Event, Exec, Exit, Fork, Sock, names};

/// One JSON line: `Ok(None)` for a line that is not an event Sigma uses
/// (`{"kind":"stats"...}`, alerts, logins...), `Err` for one that is not
/// JSON or misses a field its kind needs.
pub fn event_of_line(line: &str) -> Result<Option<Event>, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    event_of_json(&v)
}

pub fn event_of_json(v: &Value) -> Result<Option<Event>, String> {
    let Some(kind) = v.get("kind").and_then(Value::as_str) else {
        return Err("no \"kind\"".into());
    };
    let body = match kind {
        "exec" => Body::Exec(Exec {
            filename: string(v, "filename")?,
            argv: v
                .get("argv")
                .and_then(Value::as_array)
                .ok_or("exec without \"argv\"")?
                .iter()
                .map(|a| a.as_str().unwrap_or_default().to_owned())
                .collect(),
            args_truncated: flag(v, "args_truncated"),
            filename_truncated: flag(v, "filename_truncated"),
            result: v.get("result").and_then(Value::as_i64).unwrap_or(0),
            success: v.get("success").and_then(Value::as_bool).ok_or("exec without \"success\"")?,
            error: errno(v),
            parent_exe: opt_string(v, "parent_exe"),
            execveat: flag(v, "execveat"),
            entry_missing: flag(v, "entry_missing"),
            args_unreadable: flag(v, "args_unreadable"),
            path_misses: v.get("path_misses").and_then(Value::as_u64).unwrap_or(0) as u32,
            sha256: v.get("sha256").and_then(Value::as_str).map(String::from),
            sha256_skipped: None,
        }),
        "exit" => Body::Exit(Exit {
            exit_code: v.get("exit_code").and_then(Value::as_i64).map(|c| c as i32),
            signal: v.get("signal").and_then(Value::as_i64).map(|c| c as i32),
        }),
        "fork" => Body::Fork(Fork { child_pid: uint(v, "child_pid")? }),
        "connect" => Body::Connect(sock(v)?),
        "accept" => Body::Accept(sock(v)?),
        "file" => Body::File(file(v)?),
        "sdk" => Body::Sdk(Box::new(sdk(v)?)),
        _ => return Ok(None),
    };
    let time = v
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .ok_or("no valid \"time\"")?
        .with_timezone(&chrono::Utc);
    Ok(Some(Event {
        time,
        ktime_ns: v.get("ktime_ns").and_then(Value::as_u64).unwrap_or(0),
        pid: uint(v, "pid")?,
        tid: v.get("tid").and_then(Value::as_u64).unwrap_or(0) as u32,
        ppid: v.get("ppid").and_then(Value::as_u64).map(|p| p as u32),
        uid: v.get("uid").and_then(Value::as_u64).unwrap_or(0) as u32,
        gid: v.get("gid").and_then(Value::as_u64).unwrap_or(0) as u32,
        user: opt_string(v, "user"),
        comm: opt_string(v, "comm").unwrap_or_default(),
        exe: opt_string(v, "exe"),
        body,
    }))
}

fn string(v: &Value, k: &str) -> Result<String, String> {
    opt_string(v, k).ok_or_else(|| format!("no \"{k}\""))
}

fn opt_string(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn flag(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn uint(v: &Value, k: &str) -> Result<u32, String> {
    v.get(k).and_then(Value::as_u64).map(|n| n as u32).ok_or_else(|| format!("no \"{k}\""))
}

/// The error name as the agent spells it (a static string: the same table).
fn errno(v: &Value) -> Option<&'static str> {
    let name = v.get("error").and_then(Value::as_str)?;
    (1..=133).map(names::errno_name).find(|n| *n == name).or(Some("EUNKNOWN"))
}

fn sock(v: &Value) -> Result<Sock, String> {
    let pick = |k: &str, known: &[&'static str]| -> &'static str {
        let s = v.get(k).and_then(Value::as_str).unwrap_or("unknown");
        known.iter().copied().find(|n| *n == s).unwrap_or("unknown")
    };
    let addr = |k: &str| v.get(k).and_then(Value::as_str).and_then(|a| a.parse().ok());
    let port = |k: &str| v.get(k).and_then(Value::as_u64).map(|p| p as u16);
    Ok(Sock {
        protocol: pick("protocol", &["tcp", "udp"]),
        family: pick("family", &["ipv4", "ipv6"]),
        local_addr: addr("local_addr"),
        local_port: port("local_port"),
        remote_addr: addr("remote_addr"),
        remote_port: port("remote_port"),
        fd: v.get("fd").and_then(Value::as_i64).unwrap_or(-1) as i32,
        result: v.get("result").and_then(Value::as_i64).unwrap_or(0),
        status: pick("status", &["success", "in_progress", "refused", "failed"]),
        error: errno(v),
        async_outcome: v.get("async_outcome").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// A `file` line: the fields Sigma reads (operation, paths, result).
fn file(v: &Value) -> Result<crate::events::file::File, String> {
    const OPS: [&str; 8] = ["create", "write", "rename", "delete", "chmod", "chown", "link", "symlink"];
    let op = v.get("operation").and_then(Value::as_str).ok_or("file without \"operation\"")?;
    let operation =
        OPS.into_iter().find(|o| *o == op).ok_or_else(|| format!("unknown file operation {op:?}"))?;
    Ok(crate::events::file::File {
        operation,
        path: string(v, "path")?,
        new_path: opt_string(v, "new_path"),
        target: opt_string(v, "target"),
        mode: opt_string(v, "mode"),
        owner_uid: None,
        owner_gid: None,
        open_flags: None,
        directory: flag(v, "directory"),
        result: v.get("result").and_then(Value::as_i64).unwrap_or(0),
        success: v.get("success").and_then(Value::as_bool).ok_or("file without \"success\"")?,
        error: errno(v),
        path_truncated: flag(v, "path_truncated"),
        resolved_from: None,
        raw: Default::default(),
    })
}

/// An `sdk` line: the event as its sender's agent accepted it.
fn sdk(v: &Value) -> Result<crate::sdk::Sdk, String> {
    let mut obj = serde_json::Map::new();
    for (from, to) in [
        ("name", "Name"),
        ("event_type", "EventType"),
        ("category", "Category"),
        ("id", "Id"),
        ("timestamp", "TimestampUTC"),
    ] {
        if let Some(x) = v.get(from) {
            obj.insert(to.into(), x.clone());
        }
    }
    obj.insert("Payload".into(), v.get("payload").cloned().ok_or("sdk without \"payload\"")?);
    let event = shrike_common::sdk::parse_object(obj, chrono::Utc::now()).map_err(|e| format!("sdk: {e}"))?;
    Ok(crate::sdk::Sdk { event })
}
