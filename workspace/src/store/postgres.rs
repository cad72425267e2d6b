//! PostgreSQL: for many workspace processes on many machines. Each batch is
//! one transaction of one multi-row statement per table (`INSERT ... SELECT
//! FROM UNNEST($1::text[], ...)`): a round trip per table instead of per row.
//! Rows are sorted by key so that two processes lock shared rows (devices,
//! latest recommendations) in one order; a deadlock or serialization failure
//! the server reports anyway is retried.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, types::Type};

use super::{
    Param, Store, StoreError, Table,
    rows::{AlertRow, Batch, DeviceSeen, RecommendationRow, SnapshotRow, Written},
    sqlite::merge_device,
};
use crate::analytics::fleet;

pub struct PgStore {
    url: String,
    writer: Mutex<Client>,
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

/// Rows of `events` per INSERT statement.
const EVENTS_PER_STATEMENT: usize = 10_000;

/// The writer's session: a batch's `UNNEST` of 100,000 rows is a function
/// scan materialized in `work_mem`; with the default 4 MB it spills to a
/// temporary file on every batch (measured: a sixth of the server's time in
/// writes of temporary files).
async fn writer_session(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("SET work_mem = '256MB'").await
}

impl PgStore {
    pub async fn open(url: &str, migrate: bool) -> Result<PgStore, StoreError> {
        let mut client = connect(url).await?;
        if migrate {
            // Processes starting together migrate one at a time.
            client.execute("SELECT pg_advisory_lock(7415263)", &[]).await?;
            let r = super::migrations::runner().run_async(&mut client).await;
            client.execute("SELECT pg_advisory_unlock(7415263)", &[]).await?;
            r?;
        }
        writer_session(&client).await?;
        Ok(PgStore { url: url.to_owned(), writer: Mutex::new(client) })
    }

    async fn write_once(&self, client: &mut Client, batch: &Batch) -> Result<Written, tokio_postgres::Error> {
        let mut w = Written::default();
        let tx = client.transaction().await?;
        let mut decoded: Vec<_> = batch.decoded.iter().collect();
        decoded.sort_by(|a, b| a.message.id.cmp(&b.message.id));
        decoded.dedup_by(|a, b| a.message.id == b.message.id);
        let fresh: BTreeSet<String> = if decoded.is_empty() {
            BTreeSet::new()
        } else {
            let col = |f: fn(&crate::store::rows::MessageRow) -> String| -> Vec<String> {
                decoded.iter().map(|d| f(&d.message)).collect()
            };
            let rows = tx
                .query(
                    "INSERT INTO messages (id, device, agent_id, agent_version, topic, time, size, compressed, events) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::int8[], $8::bool[], $9::int8[]) ON CONFLICT (id) DO NOTHING RETURNING id",
                    &[
                        &col(|m| m.id.clone()),
                        &col(|m| m.device.clone()),
                        &col(|m| m.agent_id.clone()),
                        &col(|m| m.agent_version.clone()),
                        &col(|m| m.topic.clone()),
                        &col(|m| m.received.clone()),
                        &decoded.iter().map(|d| d.message.size).collect::<Vec<i64>>(),
                        &decoded.iter().map(|d| d.message.compressed).collect::<Vec<bool>>(),
                        &decoded.iter().map(|d| d.message.events).collect::<Vec<i64>>(),
                    ],
                )
                .await?;
            rows.iter().map(|r| r.get::<_, String>(0)).collect()
        };
        let mut taken: Vec<_> = decoded.iter().filter(|d| fresh.contains(&d.message.id)).collect();

        // Events, keyed by (event Id, device, item): only new ones count.
        // In key order, so that two processes writing the same events take
        // their locks in one order (no deadlock).
        let mut evs: Vec<_> = taken.iter().flat_map(|d| d.events.iter()).collect();
        evs.sort_unstable_by(|a, b| (&a.event_id, &a.device, a.item).cmp(&(&b.event_id, &b.device, b.item)));
        // Per message: events newly stored and their hit counts.
        let mut new_events: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        // In statements of at most EVENTS_PER_STATEMENT rows: a batch's
        // 100,000 payloads as one text[] (~40 MB) is allocated fresh by the
        // server for every statement (above glibc's mmap threshold: page
        // faults, zeroed pages); smaller arrays reuse its memory.
        for evs in evs.chunks(EVENTS_PER_STATEMENT) {
            macro_rules! c {
                ($f:ident) => {
                    evs.iter().map(|r| &r.$f).collect::<Vec<_>>()
                };
            }
            let rows = tx
                .query(
                    "WITH ins AS (INSERT INTO events (event_id, item, device, kind, category, time, hit_count, \
                     process_id, parent_process_id, executable, command_line, user_id, user_name, remote_address, \
                     remote_port, local_address, local_port, direction, protocol, operation, path, result, payload, \
                     message_id) \
                     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::int8[], $8::int8[], $9::int8[], $10::text[], $11::text[], $12::text[], $13::text[], \
                     $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], \
                     $21::text[], $22::text[], $23::text[], $24::text[]) \
                     ON CONFLICT (event_id, device, item) DO NOTHING RETURNING message_id, hit_count) \
                     SELECT message_id, COUNT(*)::int8, SUM(hit_count)::int8 FROM ins GROUP BY message_id",
                    &[
                        &c!(event_id),
                        &c!(item),
                        &c!(device),
                        &c!(kind),
                        &c!(category),
                        &c!(time),
                        &c!(hit_count),
                        &c!(process_id),
                        &c!(parent_process_id),
                        &c!(executable),
                        &c!(command_line),
                        &c!(user_id),
                        &c!(user_name),
                        &c!(remote_address),
                        &c!(remote_port),
                        &c!(local_address),
                        &c!(local_port),
                        &c!(direction),
                        &c!(protocol),
                        &c!(operation),
                        &c!(path),
                        &c!(result),
                        &c!(payload),
                        &c!(message_id),
                    ],
                )
                .await?;
            for r in &rows {
                let e = new_events.entry(r.get(0)).or_insert((0, 0));
                e.0 += r.get::<_, i64>(1);
                e.1 += r.get::<_, i64>(2);
            }
        }
        // A message whose every event is stored already: the same message
        // sent again with other bytes (an agent re-sending after a crash).
        // A duplicate, like a byte-identical one: its row goes again.
        let resent: Vec<String> = taken
            .iter()
            .filter(|d| !d.events.is_empty() && !new_events.contains_key(&d.message.id))
            .map(|d| d.message.id.clone())
            .collect();
        if !resent.is_empty() {
            tx.execute("DELETE FROM messages WHERE id = ANY($1)", &[&resent]).await?;
            taken.retain(|d| !resent.contains(&d.message.id));
        }
        w.resent = resent.len() as u64;
        w.messages = taken.len() as u64;
        w.duplicates = (batch.decoded.len() - taken.len()) as u64;
        w.events = new_events.values().map(|v| v.0 as u64).sum();

        // Devices: new ones first (their new-device alerts), then the update.
        let mut devices: BTreeMap<String, DeviceSeen> = BTreeMap::new();
        for d in &taken {
            merge_device(&mut devices, &d.device, new_events.get(&d.message.id).map_or(0, |v| v.1));
        }
        let mut alerts: Vec<AlertRow> = taken.iter().flat_map(|d| d.alerts.iter().cloned()).collect();
        alerts.extend(batch.alerts.iter().cloned());
        if !devices.is_empty() {
            let ds: Vec<&DeviceSeen> = devices.values().collect();
            macro_rules! c {
                ($f:ident) => {
                    ds.iter().map(|r| &r.$f).collect::<Vec<_>>()
                };
            }
            let new = tx
                .query(
                    "INSERT INTO devices (client_id, agent_id, first_seen, last_seen, agent_version) \
                     SELECT u.c, u.a, u.t, u.t, u.v FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
                     AS u(c, a, t, v) ON CONFLICT (client_id) DO NOTHING RETURNING client_id, agent_id, first_seen",
                    &[&c!(client_id), &c!(agent_id), &c!(received), &c!(agent_version)],
                )
                .await?;
            for r in &new {
                w.new_devices += 1;
                alerts.push(fleet::new_device(r.get(0), r.get(1), r.get(2)));
            }
            tx.execute(
                "UPDATE devices d SET agent_id = u.a, agent_version = u.v, \
                 last_seen = CASE WHEN u.t > d.last_seen THEN u.t ELSE d.last_seen END, \
                 messages = d.messages + u.m, events = d.events + u.e, \
                 heartbeat_seconds = COALESCE(u.h, d.heartbeat_seconds) \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
                 $7::int8[]) AS u(c, a, v, t, m, e, h) WHERE d.client_id = u.c",
                &[
                    &c!(client_id),
                    &c!(agent_id),
                    &c!(agent_version),
                    &c!(received),
                    &c!(messages),
                    &c!(events),
                    &c!(heartbeat_seconds),
                ],
            )
            .await?;
            let sys: Vec<_> = ds
                .iter()
                .filter_map(|d| d.system_information.as_ref().map(|s| (d.client_id.clone(), s)))
                .collect();
            if !sys.is_empty() {
                tx.execute(
                    "UPDATE devices d SET host_name = u.h, os = u.o, system_information = u.p, \
                     system_information_time = u.t \
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(c, h, o, p, t) \
                     WHERE d.client_id = u.c AND (d.system_information_time IS NULL OR d.system_information_time <= u.t)",
                    &[
                        &sys.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
                        &sys.iter().map(|s| s.1.host_name.clone()).collect::<Vec<_>>(),
                        &sys.iter().map(|s| s.1.os.clone()).collect::<Vec<_>>(),
                        &sys.iter().map(|s| s.1.payload.clone()).collect::<Vec<_>>(),
                        &sys.iter().map(|s| s.1.time.clone()).collect::<Vec<_>>(),
                    ],
                )
                .await?;
            }
        }

        // Alerts.
        alerts.sort_by(|a, b| (&a.event_id, a.item).cmp(&(&b.event_id, b.item)));
        if !alerts.is_empty() {
            macro_rules! c {
                ($f:ident) => {
                    alerts.iter().map(|r| &r.$f).collect::<Vec<_>>()
                };
            }
            // RETURNING: which rows this write stored (the new fleet
            // alerts are published by this process only).
            let took = tx
                .query(
                    "INSERT INTO alerts (event_id, item, device, rule, severity, severity_level, title, time, \
                     hit_count, source, description, tags, process_id, executable, command_line, user_name, \
                     remote_address, trigger_kind, payload) SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], \
                     $4::text[], $5::text[], $6::int8[], $7::text[], $8::text[], $9::int8[], $10::text[], \
                     $11::text[], $12::text[], $13::int8[], $14::text[], $15::text[], $16::text[], $17::text[], \
                     $18::text[], $19::text[]) ON CONFLICT (event_id, item) DO NOTHING RETURNING event_id, item",
                    &[
                        &c!(event_id),
                        &c!(item),
                        &c!(device),
                        &c!(rule),
                        &c!(severity),
                        &c!(severity_level),
                        &c!(title),
                        &c!(time),
                        &c!(hit_count),
                        &c!(source),
                        &c!(description),
                        &c!(tags),
                        &c!(process_id),
                        &c!(executable),
                        &c!(command_line),
                        &c!(user_name),
                        &c!(remote_address),
                        &c!(trigger_kind),
                        &c!(payload),
                    ],
                )
                .await?;
            w.alerts = took.len() as u64;
            for r in &took {
                let (id, item): (String, i64) = (r.get(0), r.get(1));
                if let Some(a) = alerts.iter().find(|a| a.event_id == id && a.item == item && a.is_fleet()) {
                    w.new_fleet_alerts.push(a.clone());
                }
            }
        }

        // Recommendations: history all, latest one per device and check
        // (ON CONFLICT DO UPDATE may touch a row once per statement).
        let recs: Vec<&RecommendationRow> = taken.iter().flat_map(|d| d.recommendations.iter()).collect();
        if !recs.is_empty() {
            macro_rules! c {
                ($v:expr, $f:ident) => {
                    $v.iter().map(|r| &r.$f).collect::<Vec<_>>()
                };
            }
            tx.execute(
                "INSERT INTO recommendation_history (event_id, item, device, check_id, result, time) \
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                 ON CONFLICT (event_id, item) DO NOTHING",
                &[
                    &c!(recs, event_id),
                    &c!(recs, item),
                    &c!(recs, device),
                    &c!(recs, check_id),
                    &c!(recs, result),
                    &c!(recs, time),
                ],
            )
            .await?;
            let mut latest: BTreeMap<(&str, &str), &RecommendationRow> = BTreeMap::new();
            for r in &recs {
                let e = latest.entry((&r.device, &r.check_id)).or_insert(r);
                if r.time >= e.time {
                    *e = r;
                }
            }
            let l: Vec<&RecommendationRow> = latest.into_values().collect();
            tx.execute(
                "INSERT INTO recommendations (device, check_id, result, severity, title, description, error, \
                 policy, time, event_id, payload) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], \
                 $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) \
                 ON CONFLICT (device, check_id) DO UPDATE SET result = excluded.result, \
                 severity = excluded.severity, title = excluded.title, description = excluded.description, \
                 error = excluded.error, policy = excluded.policy, time = excluded.time, \
                 event_id = excluded.event_id, payload = excluded.payload \
                 WHERE excluded.time >= recommendations.time",
                &[
                    &c!(l, device),
                    &c!(l, check_id),
                    &c!(l, result),
                    &c!(l, severity),
                    &c!(l, title),
                    &c!(l, description),
                    &c!(l, error),
                    &c!(l, policy),
                    &c!(l, time),
                    &c!(l, event_id),
                    &c!(l, payload),
                ],
            )
            .await?;
        }

        let mut snaps: BTreeMap<(&str, &str), &SnapshotRow> = BTreeMap::new();
        for s in taken.iter().flat_map(|d| d.snapshots.iter()) {
            let e = snaps.entry((&s.device, &s.kind)).or_insert(s);
            if s.time >= e.time {
                *e = s;
            }
        }
        if !snaps.is_empty() {
            let s: Vec<&SnapshotRow> = snaps.into_values().collect();
            macro_rules! c {
                ($f:ident) => {
                    s.iter().map(|r| &r.$f).collect::<Vec<_>>()
                };
            }
            tx.execute(
                "INSERT INTO snapshots (device, kind, time, items, payload, event_id) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[]) \
                 ON CONFLICT (device, kind) DO UPDATE SET time = excluded.time, items = excluded.items, \
                 payload = excluded.payload, event_id = excluded.event_id WHERE excluded.time >= snapshots.time",
                &[&c!(device), &c!(kind), &c!(time), &c!(items), &c!(payload), &c!(event_id)],
            )
            .await?;
        }

        if !batch.rejected.is_empty() {
            let r = &batch.rejected;
            macro_rules! c {
                ($f:ident) => {
                    r.iter().map(|r| &r.$f).collect::<Vec<_>>()
                };
            }
            w.rejected = tx
                .execute(
                    "INSERT INTO rejected (id, time, topic, reason, size, body) SELECT * FROM UNNEST($1::text[], \
                     $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[]) ON CONFLICT (id) DO NOTHING",
                    &[&c!(id), &c!(time), &c!(topic), &c!(reason), &c!(size), &c!(body)],
                )
                .await?;
        }

        if !batch.broker_log.is_empty() {
            let mut l: Vec<_> = batch.broker_log.iter().collect();
            l.sort_by(|a, b| a.id.cmp(&b.id));
            macro_rules! c {
                ($f:ident) => {
                    l.iter().map(|r| &r.$f).collect::<Vec<_>>()
                };
            }
            let new = tx
                .query(
                    "INSERT INTO broker_log (id, time, level, event, client_id, address, line) SELECT * FROM \
                     UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
                     ON CONFLICT (id) DO NOTHING RETURNING event, client_id, address, time",
                    &[&c!(id), &c!(time), &c!(level), &c!(event), &c!(client_id), &c!(address), &c!(line)],
                )
                .await?;
            let mut clients: BTreeMap<(String, String), (String, i64)> = BTreeMap::new();
            for r in &new {
                let (ev, c, a, t): (String, Option<String>, Option<String>, String) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                if let (true, Some(c), Some(a)) = (ev == "connect", c, a) {
                    let e = clients.entry((c, a)).or_insert((t.clone(), 0));
                    e.1 += 1;
                    if t > e.0 {
                        e.0 = t;
                    }
                }
            }
            if !clients.is_empty() {
                tx.execute(
                    "INSERT INTO broker_clients (client_id, address, first_seen, last_seen, connects) \
                     SELECT u.c, u.a, u.t, u.t, u.n FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[]) \
                     AS u(c, a, t, n) ON CONFLICT (client_id, address) DO UPDATE SET \
                     last_seen = excluded.last_seen, connects = broker_clients.connects + excluded.connects",
                    &[
                        &clients.keys().map(|k| k.0.clone()).collect::<Vec<_>>(),
                        &clients.keys().map(|k| k.1.clone()).collect::<Vec<_>>(),
                        &clients.values().map(|v| v.0.clone()).collect::<Vec<_>>(),
                        &clients.values().map(|v| v.1).collect::<Vec<_>>(),
                    ],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(w)
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code()
        .is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// A value of a text-protocol answer as JSON, by the column's type.
fn json_value(ty: &Type, text: Option<&str>) -> Value {
    let Some(t) = text else { return Value::Null };
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => {
            t.parse::<i64>().map(Value::from).unwrap_or(t.into())
        }
        Type::FLOAT4 | Type::FLOAT8 => t.parse::<f64>().map(Value::from).unwrap_or(t.into()),
        // SUM and AVG of integers are numeric in PostgreSQL.
        Type::NUMERIC => t
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| t.parse::<f64>().map(Value::from))
            .unwrap_or(t.into()),
        Type::BOOL => Value::from(t == "t"),
        Type::JSON | Type::JSONB => serde_json::from_str(t).unwrap_or(t.into()),
        _ => Value::from(t),
    }
}

/// `$1` parameters inlined as literals, for the simple-query protocol (the
/// values are quoted: `'` doubled, no backslash escapes with
/// standard_conforming_strings, PostgreSQL's default since 9.1).
fn inline(sql: &str, params: &[Param]) -> String {
    // One pass, so a value holding `$1` is never substituted again.
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
        match after[..digits].parse::<usize>().ok().and_then(|n| params.get(n.wrapping_sub(1))) {
            Some(Param::Text(s)) => {
                out.push('\'');
                out.push_str(&s.replace('\'', "''"));
                out.push('\'');
            }
            Some(Param::Int(n)) => out.push_str(&n.to_string()),
            None => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

impl Store for PgStore {
    async fn write(&self, batch: &Batch) -> Result<Written, StoreError> {
        let mut client = self.writer.lock().await;
        if client.is_closed() {
            *client = connect(&self.url).await?;
            writer_session(&client).await?;
        }
        let mut tries = 0;
        loop {
            match self.write_once(&mut client, batch).await {
                Ok(w) => return Ok(w),
                Err(e) if retryable(&e) && tries < 5 => {
                    tries += 1;
                    tracing::debug!("PostgreSQL write retried ({e})");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn read(&self, sql: String, params: Vec<Param>) -> Result<Table, StoreError> {
        // A connection of its own, in a READ ONLY transaction that is rolled
        // back: the server refuses any write. Preparing first checks that
        // it is one statement (the simple protocol would run several, and a
        // COMMIT among them would end the read-only transaction).
        let mut client = connect(&self.url).await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        tx.batch_execute("SET LOCAL statement_timeout = '60s'").await?;
        let text = inline(&sql, &params);
        let st = tx.prepare(&text).await?;
        let types: Vec<Type> = st.columns().iter().map(|c| c.type_().clone()).collect();
        let columns: Vec<String> = st.columns().iter().map(|c| c.name().to_owned()).collect();
        let mut rows = Vec::new();
        for m in tx.simple_query(&text).await? {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                rows.push((0..r.len()).map(|i| json_value(&types[i], r.get(i))).collect());
            }
        }
        tx.rollback().await?;
        Ok(Table { columns, rows })
    }

    async fn delete_before(
        &self,
        table: &'static str,
        column: &'static str,
        before: String,
    ) -> Result<u64, StoreError> {
        let client = self.writer.lock().await;
        let sql = format!(
            "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {column} < $1 LIMIT 20000)"
        );
        let mut total = 0;
        loop {
            let n = client.execute(&sql, &[&before]).await?;
            total += n;
            if n < 20000 {
                return Ok(total);
            }
        }
    }

    async fn size(&self) -> Result<u64, StoreError> {
        let client = self.writer.lock().await;
        let r = client.query_one("SELECT pg_database_size(current_database())", &[]).await?;
        Ok(r.get::<_, i64>(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_quoted() {
        let sql = inline("SELECT * FROM alerts WHERE device = $1 AND time > $2 LIMIT $10", &{
            let mut p = vec![Param::Text("it's".into()), Param::Text("$1".into())];
            p.extend((3..=10).map(Param::Int));
            p
        });
        assert_eq!(sql, "SELECT * FROM alerts WHERE device = 'it''s' AND time > '$1' LIMIT 10");
    }
}
