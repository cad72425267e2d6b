//! The web page (`--http ADDRESS:PORT`, off by default): server-rendered
//! HTML (maud templates, no JavaScript), a JSON API behind each page
//! (`/api/...`, the same queries) and Prometheus metrics at `/metrics`.
//! Optional authentication: a bearer token or HTTP basic credentials read
//! from a file.

mod pages;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    config::HttpSettings,
    metrics::Metrics,
    query::{self, AlertFilter},
    store::{Db, Param, Store, StoreError, Table},
    time,
};

#[derive(Clone)]
pub struct App {
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub silent_after: Duration,
    auth: Arc<HttpSettings>,
}

pub struct WebError(StoreError);

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        WebError(e)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        tracing::warn!("web: {}", self.0);
        (StatusCode::INTERNAL_SERVER_ERROR, format!("database error: {}\n", self.0)).into_response()
    }
}

type Result<T> = std::result::Result<T, WebError>;

/// The alert list's filters, as query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct AlertParams {
    pub severity: Option<String>,
    pub device: Option<String>,
    pub rule: Option<String>,
    pub since: Option<String>,
}

impl AlertParams {
    fn filter(&self) -> AlertFilter {
        let some = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        AlertFilter {
            since: self.since.as_deref().and_then(|s| crate::config::parse_duration(s).ok()),
            device: some(&self.device),
            severity: some(&self.severity).filter(|s| query::check_severity(s).is_ok()),
            rule: some(&self.rule),
            limit: 500,
        }
    }
}

fn objects(t: &Table) -> Vec<Value> {
    t.objects().into_iter().map(Value::Object).collect()
}

/// Everything the device page shows.
pub struct DevicePage {
    pub device: Option<serde_json::Map<String, Value>>,
    pub alerts: Table,
    pub recommendations: Table,
    pub ports: Vec<Value>,
    pub users: Vec<Value>,
    /// (kind, hour "YYYY-MM-DDTHH", hits) of the last 24 hours.
    pub timeline: Vec<(String, String, i64)>,
}

async fn device_page(app: &App, id: &str) -> Result<DevicePage> {
    let db = &app.db;
    let devices = query::devices(db, app.silent_after).await?;
    let device =
        devices.objects().into_iter().find(|d| d.get("client_id").and_then(Value::as_str) == Some(id));
    let alerts =
        query::alerts(db, &AlertFilter { device: Some(id.to_owned()), limit: 200, ..AlertFilter::default() })
            .await?;
    let recommendations = query::recommendations(db, Some(id), false).await?;
    let snaps = db
        .read(
            "SELECT kind, payload FROM snapshots WHERE device = $1".into(),
            vec![Param::Text(id.to_owned())],
        )
        .await?;
    let snapshot = |kind: &str| -> Vec<Value> {
        snaps
            .rows
            .iter()
            .find(|r| r[0] == kind)
            .and_then(|r| r[1].as_str())
            .and_then(|p| serde_json::from_str::<Vec<Value>>(p).ok())
            .unwrap_or_default()
    };
    let since = time::ago(Duration::from_secs(86400));
    let t = db
        .read(
            "SELECT kind, substr(time, 1, 13) AS hour, SUM(hit_count) AS hits FROM events \
             WHERE device = $1 AND time >= $2 GROUP BY kind, substr(time, 1, 13) ORDER BY kind, hour"
                .into(),
            vec![Param::Text(id.to_owned()), Param::Text(since)],
        )
        .await?;
    let timeline = t
        .rows
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or("").to_owned(),
                r[1].as_str().unwrap_or("").to_owned(),
                r[2].as_i64().or_else(|| r[2].as_f64().map(|f| f as i64)).unwrap_or(0),
            )
        })
        .collect();
    Ok(DevicePage {
        device,
        alerts,
        recommendations,
        ports: snapshot("ListeningPorts"),
        users: snapshot("LocalUsers"),
        timeline,
    })
}

async fn rejected(db: &Db) -> Result<Table> {
    Ok(db
        .read(
            "SELECT time, topic, reason, size, body FROM rejected ORDER BY time DESC LIMIT 200".into(),
            vec![],
        )
        .await?)
}

async fn fleet_counts(db: &Db) -> Result<Table> {
    Ok(db
        .read(
            "SELECT (SELECT COUNT(*) FROM devices) AS devices, \
             (SELECT COUNT(*) FROM alerts WHERE time >= $1) AS alerts_24h, \
             (SELECT COUNT(*) FROM rejected) AS rejected, \
             (SELECT COUNT(*) FROM messages WHERE time >= $1) AS messages_24h"
                .into(),
            vec![Param::Text(time::ago(Duration::from_secs(86400)))],
        )
        .await?)
}

// --- HTML

async fn index(State(app): State<App>) -> Result<maud::Markup> {
    let devices = query::devices(&app.db, app.silent_after).await?;
    let counts = fleet_counts(&app.db).await?;
    Ok(pages::index(&devices, &counts))
}

async fn alerts_page(State(app): State<App>, Query(p): Query<AlertParams>) -> Result<maud::Markup> {
    let t = query::alerts(&app.db, &p.filter()).await?;
    let triggers = triggers(&app.db, &t).await?;
    Ok(pages::alerts(&t, &p, &triggers))
}

/// The triggering event of each listed alert (by process and kind).
async fn triggers(db: &Db, alerts: &Table) -> Result<Vec<Option<serde_json::Map<String, Value>>>> {
    let mut out = Vec::new();
    for (i, a) in alerts.objects().into_iter().enumerate() {
        // The first 100: each is a query.
        if i >= 100 {
            out.push(None);
            continue;
        }
        out.push(query::trigger(db, &a).await?.and_then(|t| t.objects().into_iter().next()));
    }
    Ok(out)
}

async fn device(State(app): State<App>, Path(id): Path<String>) -> Result<Response> {
    let page = device_page(&app, &id).await?;
    if page.device.is_none() {
        return Ok((StatusCode::NOT_FOUND, pages::not_found(&format!("No device {id}"))).into_response());
    }
    Ok(pages::device(&id, &page).into_response())
}

async fn event_page(State(app): State<App>, Path(id): Path<String>) -> Result<Response> {
    let sections = query::event(&app.db, &id).await?;
    if sections.is_empty() {
        return Ok((StatusCode::NOT_FOUND, pages::not_found(&format!("No event {id}"))).into_response());
    }
    Ok(pages::event(&id, &sections).into_response())
}

async fn rejected_page(State(app): State<App>) -> Result<maud::Markup> {
    Ok(pages::rejected(&rejected(&app.db).await?))
}

// --- JSON

async fn api_devices(State(app): State<App>) -> Result<Json<Value>> {
    let d = query::devices(&app.db, app.silent_after).await?;
    let c = fleet_counts(&app.db).await?;
    Ok(Json(json!({ "devices": objects(&d), "counts": objects(&c).into_iter().next() })))
}

async fn api_alerts(State(app): State<App>, Query(p): Query<AlertParams>) -> Result<Json<Value>> {
    let t = query::alerts(&app.db, &p.filter()).await?;
    let triggers = triggers(&app.db, &t).await?;
    let alerts: Vec<Value> = objects(&t)
        .into_iter()
        .zip(triggers)
        .map(|(mut a, t)| {
            a["trigger"] = t.map(Value::Object).unwrap_or(Value::Null);
            a
        })
        .collect();
    Ok(Json(json!({ "alerts": alerts })))
}

async fn api_device(State(app): State<App>, Path(id): Path<String>) -> Result<Response> {
    let p = device_page(&app, &id).await?;
    let Some(d) = p.device else {
        return Ok((StatusCode::NOT_FOUND, Json(json!({"error": "no such device"}))).into_response());
    };
    let timeline: Vec<Value> =
        p.timeline.iter().map(|(k, h, n)| json!({"kind": k, "hour": h, "hits": n})).collect();
    Ok(Json(json!({
        "device": d,
        "alerts": objects(&p.alerts),
        "recommendations": objects(&p.recommendations),
        "listening_ports": p.ports,
        "users": p.users,
        "timeline": timeline,
    }))
    .into_response())
}

async fn api_event(State(app): State<App>, Path(id): Path<String>) -> Result<Response> {
    let sections = query::event(&app.db, &id).await?;
    if sections.is_empty() {
        return Ok((StatusCode::NOT_FOUND, Json(json!({"error": "no such event"}))).into_response());
    }
    let m: serde_json::Map<String, Value> =
        sections.iter().map(|(n, t)| (n.to_string(), Value::Array(objects(t)))).collect();
    Ok(Json(Value::Object(m)).into_response())
}

async fn api_rejected(State(app): State<App>) -> Result<Json<Value>> {
    Ok(Json(json!({ "rejected": objects(&rejected(&app.db).await?) })))
}

async fn metrics(State(app): State<App>) -> Response {
    let size = app.db.size().await.ok();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render(size, app.db.backend()))
        .into_response()
}

// --- auth

fn authorized(auth: &HttpSettings, headers: &HeaderMap, query: Option<&str>) -> bool {
    if auth.token.is_none() && auth.basic.is_none() {
        return true;
    }
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Some(token) = &auth.token {
        if given.strip_prefix("Bearer ").is_some_and(|t| t.trim() == token) {
            return true;
        }
        let in_query = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .any(|kv| kv.strip_prefix("token=").is_some_and(|t| t == token));
        if in_query {
            return true;
        }
    }
    if let Some((user, pass)) = &auth.basic
        && let Some(b64) = given.strip_prefix("Basic ")
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim())
    {
        return raw == format!("{user}:{pass}").as_bytes();
    }
    false
}

async fn require_auth(State(app): State<App>, req: Request, next: Next) -> Response {
    if authorized(&app.auth, req.headers(), req.uri().query()) {
        return next.run(req).await;
    }
    let mut r = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    if app.auth.basic.is_some() {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Basic realm=\"shrike-workspace\"".parse().expect("valid"));
    }
    r
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/alerts", get(alerts_page))
        .route("/devices/{id}", get(device))
        .route("/events/{id}", get(event_page))
        .route("/rejected", get(rejected_page))
        .route("/api/devices", get(api_devices))
        .route("/api/alerts", get(api_alerts))
        .route("/api/devices/{id}", get(api_device))
        .route("/api/events/{id}", get(api_event))
        .route("/api/rejected", get(api_rejected))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), require_auth))
        .with_state(app)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    db: Db,
    h: HttpSettings,
    m: Arc<Metrics>,
    silent_after: Duration,
) {
    let app = App { db, metrics: m, silent_after, auth: Arc::new(h) };
    if let Err(e) = axum::serve(listener, router(app)).await {
        tracing::error!("web server stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_basic_auth() {
        let s = |token: Option<&str>, basic: Option<(&str, &str)>| HttpSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: token.map(str::to_owned),
            basic: basic.map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        let mut h = HeaderMap::new();
        assert!(authorized(&s(None, None), &h, None));
        assert!(!authorized(&s(Some("t0k"), None), &h, None));
        assert!(authorized(&s(Some("t0k"), None), &h, Some("x=1&token=t0k")));
        h.insert(header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        assert!(authorized(&s(Some("t0k"), None), &h, None));
        assert!(!authorized(&s(Some("other"), None), &h, None));
        let b64 = base64::engine::general_purpose::STANDARD.encode("ops:pw");
        h.insert(header::AUTHORIZATION, format!("Basic {b64}").parse().unwrap());
        assert!(authorized(&s(None, Some(("ops", "pw"))), &h, None));
        assert!(!authorized(&s(None, Some(("ops", "other"))), &h, None));
    }
}
