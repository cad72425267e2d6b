//! The reading side: `query` (any read-only SQL) and the ready commands
//! (`alerts`, `devices`, `recommendations`, `event`). The web page runs the
//! same queries.

use std::{process::ExitCode, time::Duration};

use serde_json::Value;

use crate::{
    cli::{Command, DbArgs},
    config::{DbTarget, parse_duration},
    store::{Db, Param, Store, StoreError, Table, rows::severity_level},
    time,
};

/// Filters of the alert list (command and page).
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    pub since: Option<Duration>,
    pub device: Option<String>,
    /// This severity and above.
    pub severity: Option<String>,
    pub rule: Option<String>,
    pub limit: u32,
}

pub fn check_severity(s: &str) -> Result<(), String> {
    match s {
        "informational" | "low" | "medium" | "high" | "critical" => Ok(()),
        _ => Err(format!("severity {s:?}: one of informational, low, medium, high, critical")),
    }
}

pub async fn alerts<S: Store>(db: &S, f: &AlertFilter) -> Result<Table, StoreError> {
    let mut sql = String::from(
        "SELECT time, device, severity, rule, title, hit_count, source, executable, command_line, process_id, \
         trigger_kind, event_id, item FROM alerts WHERE 1 = 1",
    );
    let mut params = Vec::new();
    let mut add = |cond: &str, p: Param, sql: &mut String| {
        params.push(p);
        sql.push_str(&format!(" AND {cond} ${}", params.len()));
    };
    if let Some(d) = f.since {
        add("time >=", Param::Text(time::ago(d)), &mut sql);
    }
    if let Some(d) = &f.device {
        add("device =", Param::Text(d.clone()), &mut sql);
    }
    if let Some(s) = &f.severity {
        add("severity_level >=", Param::Int(severity_level(s)), &mut sql);
    }
    if let Some(r) = &f.rule {
        add("rule =", Param::Text(r.clone()), &mut sql);
    }
    sql.push_str(&format!(" ORDER BY time DESC, event_id LIMIT {}", f.limit.max(1)));
    db.read(sql, params).await
}

/// Devices with their alerts of the last 24 hours; `silent` when nothing
/// came for `silent_after`.
pub async fn devices<S: Store>(db: &S, silent_after: Duration) -> Result<Table, StoreError> {
    db.read(
        "SELECT d.client_id, CASE WHEN d.last_seen < $2 THEN 'silent' ELSE 'online' END AS status, \
         d.last_seen, d.agent_version, d.host_name, d.os, d.agent_id, d.first_seen, d.messages, d.events, \
         (SELECT COUNT(*) FROM alerts a WHERE a.device = d.client_id AND a.time >= $1) AS alerts_24h \
         FROM devices d ORDER BY d.client_id"
            .into(),
        vec![Param::Text(time::ago(Duration::from_secs(86400))), Param::Text(time::ago(silent_after))],
    )
    .await
}

pub async fn recommendations<S: Store>(
    db: &S,
    device: Option<&str>,
    failed: bool,
) -> Result<Table, StoreError> {
    let mut sql = String::from(
        "SELECT device, result, severity, check_id, title, time, error FROM recommendations WHERE 1 = 1",
    );
    let mut params = Vec::new();
    if let Some(d) = device {
        params.push(Param::Text(d.to_owned()));
        sql.push_str(" AND device = $1");
    }
    if failed {
        sql.push_str(" AND result <> 'Pass'");
    }
    sql.push_str(" ORDER BY device, result DESC, check_id");
    db.read(sql, params).await
}

/// An event or alert by id, the alert's triggering event, and the device's
/// events within a minute of it: (section, rows).
pub async fn event<S: Store>(db: &S, id: &str) -> Result<Vec<(&'static str, Table)>, StoreError> {
    let mut out = Vec::new();
    let events = db
        .read(
            "SELECT * FROM events WHERE event_id = $1 ORDER BY item".into(),
            vec![Param::Text(id.to_owned())],
        )
        .await?;
    let alerts = db
        .read(
            "SELECT * FROM alerts WHERE event_id = $1 ORDER BY item".into(),
            vec![Param::Text(id.to_owned())],
        )
        .await?;
    let anchor = alerts.objects().into_iter().next().or_else(|| events.objects().into_iter().next());
    if !alerts.rows.is_empty() {
        out.push(("alert", alerts.clone()));
    }
    if !events.rows.is_empty() {
        out.push(("event", events));
    }
    // Each alert item's triggering event (an Alert event may carry several).
    let mut triggers = Table::default();
    for a in alerts.objects() {
        if let Some(t) = trigger(db, &a).await? {
            triggers.columns = t.columns;
            triggers.rows.extend(t.rows);
        }
    }
    if !triggers.rows.is_empty() {
        out.push(("trigger", triggers));
    }
    if let Some(a) = anchor {
        let device = a.get("device").and_then(Value::as_str).unwrap_or("").to_owned();
        if let Some(t) = a.get("time").and_then(Value::as_str).and_then(time::parse) {
            let m = chrono::Duration::minutes(1);
            let around = db
                .read(
                    "SELECT time, kind, hit_count, process_id, executable, command_line, user_name, remote_address, \
                     remote_port, path, event_id FROM events WHERE device = $1 AND time >= $2 AND time <= $3 \
                     ORDER BY time LIMIT 100"
                        .into(),
                    vec![Param::Text(device), Param::Text(time::format(t - m)), Param::Text(time::format(t + m))],
                )
                .await?;
            out.push(("around", around));
        }
    }
    Ok(out)
}

/// The event that triggered an alert (a row of `alerts` as an object): the
/// event of its `trigger_kind` and process on its device closest before
/// it; an aggregated event is stamped when its window closed, so up to a
/// minute after is taken too.
pub async fn trigger<S: Store>(
    db: &S,
    a: &serde_json::Map<String, Value>,
) -> Result<Option<Table>, StoreError> {
    let text = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let (Some(kind), Some(pid)) =
        (a.get("trigger_kind").and_then(Value::as_str), a.get("process_id").and_then(Value::as_i64))
    else {
        return Ok(None);
    };
    let until = time::parse(&text("time")).map(|t| time::format(t + chrono::Duration::minutes(1)));
    let t = db
        .read(
            "SELECT * FROM events WHERE device = $1 AND kind = $2 AND process_id = $3 AND time <= $4 \
             ORDER BY time DESC LIMIT 1"
                .into(),
            vec![
                Param::Text(text("device")),
                Param::Text(kind.to_owned()),
                Param::Int(pid),
                Param::Text(until.unwrap_or_else(|| text("time"))),
            ],
        )
        .await?;
    Ok((!t.rows.is_empty()).then_some(t))
}

/// Cuts a cell for the table view.
fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = s.replace(['\n', '\r', '\t'], " ");
    if s.chars().count() > 60 { format!("{}…", s.chars().take(59).collect::<String>()) } else { s }
}

pub fn print(t: &Table, json: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        for o in t.objects() {
            let _ = writeln!(out, "{}", Value::Object(o));
        }
        return;
    }
    let cells: Vec<Vec<String>> = t.rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    let mut widths: Vec<usize> = t.columns.iter().map(|c| c.chars().count()).collect();
    for r in &cells {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |r: &[String]| -> String {
        r.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(out, "{}", line(&t.columns));
    let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    for r in &cells {
        let _ = writeln!(out, "{}", line(r));
    }
    let _ = writeln!(out, "({} rows)", t.rows.len());
}

async fn open(db: &DbArgs) -> Result<Db, StoreError> {
    Db::open(&DbTarget::parse(&db.db), false).await
}

/// Runs a reading command; exit code 0, 1 (failure) or 2 (bad arguments).
pub async fn run(cmd: Command) -> ExitCode {
    match run_inner(cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("shrike-workspace: {e}");
            ExitCode::from(code)
        }
    }
}

async fn run_inner(cmd: Command) -> Result<(), (u8, String)> {
    let fail = |e: StoreError| (1, e.to_string());
    match cmd {
        Command::Query { db, sql } => {
            let d = open(&db).await.map_err(fail)?;
            print(&d.read(sql, vec![]).await.map_err(fail)?, db.json);
        }
        Command::Alerts { db, since, device, severity, rule, limit } => {
            let since =
                since.map(|s| parse_duration(&s)).transpose().map_err(|e| (2, format!("--since: {e}")))?;
            if let Some(s) = &severity {
                check_severity(s).map_err(|e| (2, e))?;
            }
            let d = open(&db).await.map_err(fail)?;
            let t = alerts(&d, &AlertFilter { since, device, severity, rule, limit }).await.map_err(fail)?;
            print(&t, db.json);
        }
        Command::Devices { db } => {
            let d = open(&db).await.map_err(fail)?;
            let silent = parse_duration(crate::config::defaults::SILENT_AFTER).expect("valid default");
            print(&devices(&d, silent).await.map_err(fail)?, db.json);
        }
        Command::Recommendations { db, device, failed } => {
            let d = open(&db).await.map_err(fail)?;
            print(&recommendations(&d, device.as_deref(), failed).await.map_err(fail)?, db.json);
        }
        Command::Event { db, id } => {
            let d = open(&db).await.map_err(fail)?;
            let sections = event(&d, &id).await.map_err(fail)?;
            if sections.is_empty() {
                return Err((1, format!("no event or alert with id {id}")));
            }
            for (name, t) in sections {
                if db.json {
                    for o in t.objects() {
                        println!("{}", serde_json::json!({ name: o }));
                    }
                } else {
                    println!("== {name}");
                    print(&t, false);
                }
            }
        }
    }
    Ok(())
}
