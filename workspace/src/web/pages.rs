//! The HTML of each page (maud: escaped by default, checked at compile time).

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::{Map, Value};

use super::{AlertParams, DevicePage};
use crate::store::Table;

const CSS: &str = "body{font-family:sans-serif;margin:0;color:#222}header{background:#263238;color:#fff;\
padding:.6em 1em}header a{color:#fff;margin-right:1.2em;text-decoration:none}main{padding:1em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border-bottom:1px solid #ddd;padding:.3em .6em;\
text-align:left;vertical-align:top;font-size:.9em}th{background:#eceff1}.sev-critical,.sev-high{color:#b71c1c;\
font-weight:bold}.sev-medium{color:#e65100}.silent{color:#b71c1c;font-weight:bold}.online{color:#2e7d32}\
.Pass{color:#2e7d32}.Fail,.Err{color:#b71c1c}.small{color:#666;font-size:.85em}code{font-size:.85em}\
.cards span{display:inline-block;background:#eceff1;padding:.5em 1em;margin-right:.5em;border-radius:4px}";

fn s(o: &Map<String, Value>, k: &str) -> String {
    match o.get(k) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " — Shrike workspace" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    a href="/" { b { "Shrike workspace" } }
                    a href="/" { "Fleet" }
                    a href="/alerts" { "Alerts" }
                    a href="/rejected" { "Rejected" }
                    a href="/metrics" { "Metrics" }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn not_found(what: &str) -> Markup {
    layout("Not found", html! { p { (what) } })
}

pub fn index(devices: &Table, counts: &Table) -> Markup {
    let c = counts.objects().into_iter().next().unwrap_or_default();
    layout(
        "Fleet",
        html! {
            p.cards {
                span { b { (s(&c, "devices")) } " devices" }
                span { b { (s(&c, "alerts_24h")) } " alerts (24 h)" }
                span { b { (s(&c, "messages_24h")) } " messages (24 h)" }
                span { a href="/rejected" { b { (s(&c, "rejected")) } " rejected" } }
            }
            table {
                tr { th { "Device" } th { "Status" } th { "Last seen" } th { "Agent" } th { "Host" } th { "OS" } th { "Alerts (24 h)" } }
                @for d in devices.objects() {
                    tr {
                        td { a href={ "/devices/" (s(&d, "client_id")) } { (s(&d, "client_id")) } }
                        td class=(s(&d, "status")) { (s(&d, "status")) }
                        td { (s(&d, "last_seen")) }
                        td { (s(&d, "agent_version")) }
                        td { (s(&d, "host_name")) }
                        td { (s(&d, "os")) }
                        td { a href={ "/alerts?device=" (s(&d, "client_id")) } { (s(&d, "alerts_24h")) } }
                    }
                }
            }
            @if devices.rows.is_empty() { p { "No device has sent a message yet." } }
        },
    )
}

fn alert_rows(alerts: &Table, triggers: Option<&[Option<Map<String, Value>>]>) -> Markup {
    html! {
        table {
            tr { th { "Time" } th { "Device" } th { "Severity" } th { "Alert" } th { "Triggering event" } }
            @for (i, a) in alerts.objects().into_iter().enumerate() {
                tr {
                    td { a href={ "/events/" (s(&a, "event_id")) } { (s(&a, "time")) } }
                    td { a href={ "/devices/" (s(&a, "device")) } { (s(&a, "device")) } }
                    td class={ "sev-" (s(&a, "severity")) } { (s(&a, "severity")) }
                    td { b { (s(&a, "title")) } br; span.small { (s(&a, "rule")) " · " (s(&a, "source")) } }
                    td {
                        @match triggers.and_then(|t| t.get(i)).and_then(Option::as_ref) {
                            Some(t) => {
                                (s(t, "kind")) " " code { (s(t, "command_line")) }
                                br; span.small { "pid " (s(t, "process_id")) " · " (s(t, "user_name")) " · " (s(t, "time")) }
                            }
                            None => { span.small { (s(&a, "trigger_kind")) " " (s(&a, "executable")) } }
                        }
                    }
                }
            }
        }
    }
}

pub fn alerts(alerts: &Table, p: &AlertParams, triggers: &[Option<Map<String, Value>>]) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    layout(
        "Alerts",
        html! {
            form method="get" action="/alerts" {
                "Severity at least "
                select name="severity" {
                    @for sev in ["", "informational", "low", "medium", "high", "critical"] {
                        option value=(sev) selected[p.severity.as_deref() == Some(sev)] { (if sev.is_empty() { "any" } else { sev }) }
                    }
                }
                " Device " input name="device" value=(v(&p.device));
                " Rule " input name="rule" value=(v(&p.rule));
                " Since " input name="since" placeholder="1h, 7d" value=(v(&p.since));
                " " button type="submit" { "Filter" }
            }
            p.small { (alerts.rows.len()) " alerts, newest first" }
            (alert_rows(alerts, Some(triggers)))
        },
    )
}

/// Events per kind and hour as an SVG line chart, drawn here.
fn timeline_svg(points: &[(String, String, i64)]) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 200.0;
    const PAD: f64 = 30.0;
    let now = chrono::Utc::now();
    let hours: Vec<String> =
        (0..24).rev().map(|h| (now - chrono::Duration::hours(h)).format("%Y-%m-%dT%H").to_string()).collect();
    let mut kinds: Vec<&str> = points.iter().map(|(k, _, _)| k.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let max = points.iter().map(|p| p.2).max().unwrap_or(0).max(1) as f64;
    let colors = ["#1565c0", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037", "#ad1457"];
    let x = |i: usize| PAD + i as f64 * (W - 2.0 * PAD) / 23.0;
    let y = |n: i64| H - PAD - n as f64 / max * (H - 2.0 * PAD);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(W) height=(H + 20.0 * kinds.len().div_ceil(4) as f64) role="img" {
            title { "Events per kind and hour, last 24 hours" }
            line x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) stroke="#999" {}
            line x1=(PAD) y1=(PAD) x2=(PAD) y2=(H - PAD) stroke="#999" {}
            text x="2" y=(PAD) font-size="10" { (max as i64) }
            text x=(PAD) y=(H - 12.0) font-size="10" { (hours[0].get(11..).unwrap_or("")) ":00" }
            text x=(W - PAD - 30.0) y=(H - 12.0) font-size="10" { "now" }
            @for (ki, kind) in kinds.iter().enumerate() {
                @let color = colors[ki % colors.len()];
                @let pts: String = hours.iter().enumerate().map(|(i, h)| {
                    let n = points.iter().find(|(k, ph, _)| k == kind && ph == h).map(|p| p.2).unwrap_or(0);
                    format!("{:.1},{:.1} ", x(i), y(n))
                }).collect();
                polyline points=(pts) fill="none" stroke=(color) stroke-width="2" {}
                text x=(PAD + (ki % 4) as f64 * 170.0) y=(H + 8.0 + (ki / 4) as f64 * 18.0) font-size="12" fill=(color) { "■ " (kind) }
            }
        }
    }
}

pub fn device(id: &str, p: &DevicePage) -> Markup {
    let d = p.device.clone().unwrap_or_default();
    let recs = p.recommendations.objects();
    let count = |r: &str| recs.iter().filter(|o| s(o, "result") == r).count();
    layout(
        &format!("Device {id}"),
        html! {
            p {
                span class=(s(&d, "status")) { (s(&d, "status")) } " · last seen " (s(&d, "last_seen"))
                " · agent " (s(&d, "agent_version")) " · " (s(&d, "host_name")) " · " (s(&d, "os"))
                br; span.small { "agent id " (s(&d, "agent_id")) " · first seen " (s(&d, "first_seen"))
                    " · " (s(&d, "messages")) " messages, " (s(&d, "events")) " events" }
            }
            h2 { "Events per kind, last 24 hours" }
            (timeline_svg(&p.timeline))
            h2 { "Alerts" }
            (alert_rows(&p.alerts, None))
            h2 { "Recommendations" }
            p { span.Pass { (count("Pass")) " pass" } " · " span.Fail { (count("Fail")) " fail" } " · " (count("Err")) " error" }
            table {
                tr { th { "Result" } th { "Severity" } th { "Check" } th { "Evidence" } }
                @for r in &recs {
                    tr {
                        td class=(s(r, "result")) { (s(r, "result")) }
                        td { (s(r, "severity")) }
                        td { (s(r, "title")) br; span.small { (s(r, "check_id")) } }
                        td.small { (s(r, "error")) }
                    }
                }
            }
            h2 { "Listening ports" }
            table {
                tr { th { "Protocol" } th { "Address" } th { "Port" } }
                @for port in &p.ports {
                    @if let Some(o) = port.as_object() {
                        tr { td { (s(o, "Protocol")) } td { (s(o, "LocalAddress")) } td { (s(o, "LocalPort")) } }
                    }
                }
            }
            h2 { "Users" }
            table {
                tr { th { "User" } th { "Id" } th { "Groups" } }
                @for u in &p.users {
                    @if let Some(o) = u.as_object() {
                        tr { td { (s(o, "UserName")) } td { (s(o, "UserId")) } td { (s(o, "GroupNames")) } }
                    }
                }
            }
        },
    )
}

fn table(t: &Table) -> Markup {
    html! {
        table {
            tr { @for c in &t.columns { th { (c) } } }
            @for r in &t.rows {
                tr { @for v in r { td { @match v { Value::Null => {}, Value::String(s) => (s), other => (other.to_string()) } } } }
            }
        }
    }
}

pub fn event(id: &str, sections: &[(&'static str, Table)]) -> Markup {
    layout(
        &format!("Event {id}"),
        html! {
            @for (name, t) in sections {
                h2 { (match *name { "alert" => "Alert", "event" => "Event", "trigger" => "Triggering event", _ => "The device's events around it" }) }
                (table(t))
            }
        },
    )
}

pub fn rejected(t: &Table) -> Markup {
    layout(
        "Rejected messages",
        html! {
            p.small { "Messages that did not decode, newest first, with the reason." }
            table {
                tr { th { "Time" } th { "Topic" } th { "Reason" } th { "Size" } th { "Body (start)" } }
                @for r in t.objects() {
                    tr {
                        td { (s(&r, "time")) } td { (s(&r, "topic")) } td { (s(&r, "reason")) } td { (s(&r, "size")) }
                        td { code { (s(&r, "body").chars().take(200).collect::<String>()) } }
                    }
                }
            }
        },
    )
}
