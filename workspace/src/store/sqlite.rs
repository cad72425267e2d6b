//! SQLite: one file, WAL (readers never block the writer), each batch one
//! `BEGIN IMMEDIATE` transaction of prepared statements. Several processes
//! on one machine may share the file: SQLite's lock serializes their writes
//! (a busy writer waits up to 30 s), and the unique keys make a message
//! taken twice count once.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params, types::ValueRef};
use serde_json::Value;

use super::{
    Param, Store, StoreError, Table,
    rows::{Batch, DeviceSeen, Written},
};
use crate::analytics::fleet;

pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
}

fn err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite { path: path.display().to_string(), source }
}

const BUSY: Duration = Duration::from_secs(30);

impl SqliteStore {
    pub fn open(path: &Path, migrate: bool) -> Result<SqliteStore, StoreError> {
        let e = err(path);
        if migrate && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|x| StoreError::Refused(format!("{}: {x}", dir.display())))?;
        }
        let flags = if migrate {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let mut conn = Connection::open_with_flags(path, flags).map_err(&e)?;
        conn.busy_timeout(BUSY).map_err(&e)?;
        if migrate {
            // WAL: readers (the page, queries) and the writer do not block
            // each other. NORMAL: a commit is durable at the next checkpoint
            // (a power loss may lose the last batches, which the broker then
            // redelivers: they were not acknowledged... only after commit).
            conn.pragma_update(None, "journal_mode", "WAL").map_err(&e)?;
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(&e)?;
            // The writer's page cache: 64 MiB rather than SQLite's 2 MiB.
            // `events`' key starts with a random Id, so its index takes
            // inserts all over: with a small cache each one reads and
            // writes back pages.
            conn.pragma_update(None, "cache_size", -65536).map_err(&e)?;
            // Two processes migrating a new file at once: the second fails on
            // the first's tables; a retry sees them applied.
            let mut tries = 0;
            loop {
                match super::migrations::runner().run(&mut conn) {
                    Ok(_) => break,
                    Err(x) if tries < 10 => {
                        tracing::debug!("migration attempt failed ({x}), retrying");
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(100 * tries));
                    }
                    Err(x) => return Err(x.into()),
                }
            }
        }
        Ok(SqliteStore { path: path.to_owned(), writer: Mutex::new(conn) })
    }

    fn write_sync(&self, batch: &Batch) -> Result<Written, StoreError> {
        let e = err(&self.path);
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let mut w = Written::default();
        // Sorted: two writers take row locks in one order (PostgreSQL needs
        // it; here it keeps both stores alike).
        let mut decoded: Vec<_> = batch.decoded.iter().collect();
        decoded.sort_by(|a, b| a.message.id.cmp(&b.message.id));
        let mut devices: BTreeMap<String, DeviceSeen> = BTreeMap::new();
        {
            let mut ins_msg = tx
                .prepare_cached(
                    "INSERT INTO messages (id, device, agent_id, agent_version, topic, time, size, compressed, events) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
                )
                .map_err(&e)?;
            let mut ins_ev = tx
                .prepare_cached(
                    "INSERT INTO events (event_id, item, device, kind, category, time, hit_count, process_id, \
                     parent_process_id, executable, command_line, user_id, user_name, remote_address, remote_port, \
                     local_address, local_port, direction, protocol, operation, path, result, payload, message_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
                     ?20, ?21, ?22, ?23, ?24) ON CONFLICT (event_id, device, item) DO NOTHING",
                )
                .map_err(&e)?;
            let mut del_msg = tx.prepare_cached("DELETE FROM messages WHERE id = ?1").map_err(&e)?;
            let alert_sql = INSERT_ALERT.replace('$', "?");
            let mut ins_alert = tx.prepare_cached(&alert_sql).map_err(&e)?;
            let mut ins_rec = tx
                .prepare_cached(
                    "INSERT INTO recommendations (device, check_id, result, severity, title, description, error, \
                     policy, time, event_id, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                     ON CONFLICT (device, check_id) DO UPDATE SET result = excluded.result, \
                     severity = excluded.severity, title = excluded.title, description = excluded.description, \
                     error = excluded.error, policy = excluded.policy, time = excluded.time, \
                     event_id = excluded.event_id, payload = excluded.payload \
                     WHERE excluded.time >= recommendations.time",
                )
                .map_err(&e)?;
            let mut ins_hist = tx
                .prepare_cached(
                    "INSERT INTO recommendation_history (event_id, item, device, check_id, result, time) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (event_id, item) DO NOTHING",
                )
                .map_err(&e)?;
            let mut ins_snap = tx
                .prepare_cached(
                    "INSERT INTO snapshots (device, kind, time, items, payload, event_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (device, kind) DO UPDATE SET \
                     time = excluded.time, items = excluded.items, payload = excluded.payload, \
                     event_id = excluded.event_id WHERE excluded.time >= snapshots.time",
                )
                .map_err(&e)?;
            for d in decoded {
                let m = &d.message;
                let took = ins_msg
                    .execute(params![
                        m.id,
                        m.device,
                        m.agent_id,
                        m.agent_version,
                        m.topic,
                        m.received,
                        m.size,
                        m.compressed,
                        m.events
                    ])
                    .map_err(&e)?;
                if took == 0 {
                    w.duplicates += 1;
                    continue;
                }
                // Events are keyed by (event Id, device, item): only the new
                // ones are counted, for the device as for the metrics.
                let (mut new_events, mut new_hits) = (0u64, 0i64);
                for r in &d.events {
                    let took = ins_ev
                        .execute(params![
                            r.event_id,
                            r.item,
                            r.device,
                            r.kind,
                            r.category,
                            r.time,
                            r.hit_count,
                            r.process_id,
                            r.parent_process_id,
                            r.executable,
                            r.command_line,
                            r.user_id,
                            r.user_name,
                            r.remote_address,
                            r.remote_port,
                            r.local_address,
                            r.local_port,
                            r.direction,
                            r.protocol,
                            r.operation,
                            r.path,
                            r.result,
                            r.payload,
                            r.message_id
                        ])
                        .map_err(&e)?;
                    if took > 0 {
                        new_events += 1;
                        new_hits += r.hit_count;
                    }
                }
                if new_events == 0 && !d.events.is_empty() {
                    // Every event of it is stored already: the same message
                    // sent again with other bytes (an agent re-sending after
                    // a crash). A duplicate, like a byte-identical one.
                    del_msg.execute(params![m.id]).map_err(&e)?;
                    w.duplicates += 1;
                    w.resent += 1;
                    continue;
                }
                w.messages += 1;
                w.events += new_events;
                for a in &d.alerts {
                    stored_alert(&mut w, insert_alert(&mut ins_alert, a).map_err(&e)?, a);
                }
                for r in &d.recommendations {
                    ins_rec
                        .execute(params![
                            r.device,
                            r.check_id,
                            r.result,
                            r.severity,
                            r.title,
                            r.description,
                            r.error,
                            r.policy,
                            r.time,
                            r.event_id,
                            r.payload
                        ])
                        .map_err(&e)?;
                    ins_hist
                        .execute(params![r.event_id, r.item, r.device, r.check_id, r.result, r.time])
                        .map_err(&e)?;
                }
                for s in &d.snapshots {
                    ins_snap
                        .execute(params![s.device, s.kind, s.time, s.items, s.payload, s.event_id])
                        .map_err(&e)?;
                }
                merge_device(&mut devices, &d.device, new_hits);
            }
            for a in &batch.alerts {
                stored_alert(&mut w, insert_alert(&mut ins_alert, a).map_err(&e)?, a);
            }
            let mut new_dev = tx
                .prepare_cached(
                    "INSERT INTO devices (client_id, agent_id, first_seen, last_seen, agent_version) \
                     VALUES (?1, ?2, ?3, ?3, ?4) ON CONFLICT (client_id) DO NOTHING",
                )
                .map_err(&e)?;
            let mut upd_dev = tx
                .prepare_cached(
                    "UPDATE devices SET agent_id = ?2, agent_version = ?3, \
                     last_seen = CASE WHEN ?4 > last_seen THEN ?4 ELSE last_seen END, \
                     messages = messages + ?5, events = events + ?6, \
                     heartbeat_seconds = COALESCE(?7, heartbeat_seconds) WHERE client_id = ?1",
                )
                .map_err(&e)?;
            let mut upd_sys = tx
                .prepare_cached(
                    "UPDATE devices SET host_name = ?2, os = ?3, system_information = ?4, \
                     system_information_time = ?5 WHERE client_id = ?1 AND \
                     (system_information_time IS NULL OR system_information_time <= ?5)",
                )
                .map_err(&e)?;
            for (id, d) in &devices {
                if new_dev.execute(params![id, d.agent_id, d.received, d.agent_version]).map_err(&e)? == 1 {
                    w.new_devices += 1;
                    let a = fleet::new_device(id, &d.agent_id, &d.received);
                    stored_alert(&mut w, insert_alert(&mut ins_alert, &a).map_err(&e)?, &a);
                }
                upd_dev
                    .execute(params![
                        id,
                        d.agent_id,
                        d.agent_version,
                        d.received,
                        d.messages,
                        d.events,
                        d.heartbeat_seconds
                    ])
                    .map_err(&e)?;
                if let Some(s) = &d.system_information {
                    upd_sys.execute(params![id, s.host_name, s.os, s.payload, s.time]).map_err(&e)?;
                }
            }
            let mut ins_rej = tx
                .prepare_cached(
                    "INSERT INTO rejected (id, time, topic, reason, size, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .map_err(&e)?;
            for r in &batch.rejected {
                w.rejected += ins_rej
                    .execute(params![r.id, r.time, r.topic, r.reason, r.size, r.body])
                    .map_err(&e)? as u64;
            }
            let mut ins_log = tx
                .prepare_cached(
                    "INSERT INTO broker_log (id, time, level, event, client_id, address, line) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                )
                .map_err(&e)?;
            let mut ins_client = tx
                .prepare_cached(
                    "INSERT INTO broker_clients (client_id, address, first_seen, last_seen, connects) \
                     VALUES (?1, ?2, ?3, ?3, 1) ON CONFLICT (client_id, address) DO UPDATE SET \
                     last_seen = excluded.last_seen, connects = broker_clients.connects + 1",
                )
                .map_err(&e)?;
            for l in &batch.broker_log {
                let took = ins_log
                    .execute(params![l.id, l.time, l.level, l.event, l.client_id, l.address, l.line])
                    .map_err(&e)?;
                if took == 1
                    && l.event == "connect"
                    && let (Some(c), Some(a)) = (&l.client_id, &l.address)
                {
                    ins_client.execute(params![c, a, l.time]).map_err(&e)?;
                }
            }
        }
        tx.commit().map_err(&e)?;
        Ok(w)
    }

    fn read_sync(&self, sql: &str, params: &[Param]) -> Result<Table, StoreError> {
        let e = err(&self.path);
        // A connection of its own, read-only twice over (the open flag and
        // query_only): a statement that writes fails in SQLite itself.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&e)?;
        conn.busy_timeout(BUSY).map_err(&e)?;
        conn.pragma_update(None, "query_only", true).map_err(&e)?;
        // `$1` in the shared SQL is SQLite's `?1`.
        let sql = if params.is_empty() { sql.to_owned() } else { sql.replace('$', "?") };
        let mut st = conn.prepare(&sql).map_err(&e)?;
        if !st.readonly() {
            return Err(StoreError::Refused("only statements that read are run".into()));
        }
        let columns: Vec<String> = st.column_names().into_iter().map(str::to_owned).collect();
        let n = columns.len();
        let bound: Vec<rusqlite::types::Value> = params
            .iter()
            .map(|p| match p {
                Param::Text(s) => rusqlite::types::Value::Text(s.clone()),
                Param::Int(i) => rusqlite::types::Value::Integer(*i),
            })
            .collect();
        let mut rows = st.query(rusqlite::params_from_iter(bound.iter())).map_err(&e)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&e)? {
            let mut r = Vec::with_capacity(n);
            for i in 0..n {
                r.push(match row.get_ref(i).map_err(&e)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::from(i),
                    ValueRef::Real(f) => Value::from(f),
                    ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::from(crate::ingest::decode::body_text(b)),
                });
            }
            out.push(r);
        }
        Ok(Table { columns, rows: out })
    }

    fn delete_sync(&self, table: &str, column: &str, before: &str) -> Result<u64, StoreError> {
        let e = err(&self.path);
        let mut total = 0;
        // In chunks: one huge delete would hold the write lock for long.
        let sql = format!(
            "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT 5000)"
        );
        loop {
            let n = {
                let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
                conn.execute(&sql, params![before]).map_err(&e)?
            };
            total += n as u64;
            if n < 5000 {
                return Ok(total);
            }
        }
    }
}

pub(super) const INSERT_ALERT: &str = "INSERT INTO alerts (event_id, item, device, rule, severity, severity_level, \
     title, time, hit_count, source, description, tags, process_id, executable, command_line, user_name, \
     remote_address, trigger_kind, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
     $15, $16, $17, $18, $19) ON CONFLICT (event_id, item) DO NOTHING";

/// Counts an alert insert (`took`: rows inserted) and keeps a new fleet alert.
fn stored_alert(w: &mut Written, took: usize, a: &super::rows::AlertRow) {
    w.alerts += took as u64;
    if took > 0 && a.is_fleet() {
        w.new_fleet_alerts.push(a.clone());
    }
}

fn insert_alert(
    st: &mut rusqlite::CachedStatement<'_>,
    a: &super::rows::AlertRow,
) -> rusqlite::Result<usize> {
    st.execute(params![
        a.event_id,
        a.item,
        a.device,
        a.rule,
        a.severity,
        a.severity_level,
        a.title,
        a.time,
        a.hit_count,
        a.source,
        a.description,
        a.tags,
        a.process_id,
        a.executable,
        a.command_line,
        a.user_name,
        a.remote_address,
        a.trigger_kind,
        a.payload
    ])
}

/// Several messages of one device in a batch: one update of its row.
/// `events`: the hit counts of the message's events newly stored (those
/// stored before, by an earlier copy of the message, are not counted again).
pub(super) fn merge_device(devices: &mut BTreeMap<String, DeviceSeen>, d: &DeviceSeen, events: i64) {
    match devices.get_mut(&d.client_id) {
        None => {
            let mut d = d.clone();
            d.events = events;
            devices.insert(d.client_id.clone(), d);
        }
        Some(seen) => {
            seen.messages += d.messages;
            seen.events += events;
            if d.received >= seen.received {
                seen.received = d.received.clone();
                seen.agent_id = d.agent_id.clone();
                seen.agent_version = d.agent_version.clone();
            }
            if d.heartbeat_seconds.is_some() {
                seen.heartbeat_seconds = d.heartbeat_seconds;
            }
            if let Some(s) = &d.system_information
                && seen.system_information.as_ref().is_none_or(|o| o.time <= s.time)
            {
                seen.system_information = Some(s.clone());
            }
        }
    }
}

impl Store for SqliteStore {
    async fn write(&self, batch: &Batch) -> Result<Written, StoreError> {
        tokio::task::block_in_place(|| self.write_sync(batch))
    }

    async fn read(&self, sql: String, params: Vec<Param>) -> Result<Table, StoreError> {
        tokio::task::block_in_place(|| self.read_sync(&sql, &params))
    }

    async fn delete_before(
        &self,
        table: &'static str,
        column: &'static str,
        before: String,
    ) -> Result<u64, StoreError> {
        tokio::task::block_in_place(|| self.delete_sync(table, column, &before))
    }

    async fn size(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::decode::{Outcome, decode};
    use shrike_common::schema::{Event, MessageBuilder, ProcessCreate, Uuid};

    fn batch(n: usize) -> Batch {
        let mut b = Batch::default();
        for i in 0..n {
            let mut m = MessageBuilder::new(Uuid::new_v4(), "0.1.0");
            let exec = ProcessCreate {
                executable: "/bin/true".into(),
                process_id: i as u32,
                parent_process_id: 1,
                user_id: "0".into(),
                user_name: None,
                command_line: "true".into(),
                extra_details: Default::default(),
            };
            m.push(&Event::new(exec)).unwrap();
            let body = m.finish().unwrap();
            let Outcome::Accepted(d) =
                decode("shrike/+/security", "shrike/gw/security", &body, &crate::time::now(), 1 << 20)
            else {
                panic!()
            };
            b.decoded.push(*d);
        }
        b
    }

    fn decoded(body: &[u8]) -> crate::store::rows::Decoded {
        let Outcome::Accepted(d) =
            decode("shrike/+/security", "shrike/gw/security", body, &crate::time::now(), 1 << 20)
        else {
            panic!()
        };
        *d
    }

    /// `n` messages of one event each, in an envelope of `version`: the same
    /// events (Ids) in other bytes for another version.
    fn envelopes(events: &[Event], version: &str) -> Batch {
        let agent = Uuid::from_u128(7);
        let mut b = Batch::default();
        for e in events {
            let mut m = MessageBuilder::new(agent, version);
            m.push(e).unwrap();
            b.decoded.push(decoded(&m.finish().unwrap()));
        }
        b
    }

    #[test]
    fn the_same_events_in_other_bytes_are_stored_once_also_by_two_writers_at_once() {
        let dir = std::env::temp_dir().join(format!("shrike-ws-test-resent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("w.db");
        let events: Vec<Event> = (0..100)
            .map(|i| {
                let mut e = Event::new(ProcessCreate {
                    executable: "/bin/true".into(),
                    process_id: i,
                    parent_process_id: 1,
                    user_id: "0".into(),
                    user_name: None,
                    command_line: "true".into(),
                    extra_details: [(shrike_common::schema::HIT_COUNT.to_string(), "3".to_string())].into(),
                });
                e.id = Uuid::from_u128(1000 + u128::from(i));
                e
            })
            .collect();
        let (first, again) = (envelopes(&events, "0.1.0"), envelopes(&events, "0.1.1"));
        assert_ne!(first.decoded[0].message.id, again.decoded[0].message.id, "other bytes");
        let (a, c) = (SqliteStore::open(&path, true).unwrap(), SqliteStore::open(&path, true).unwrap());
        let (wa, wc) = std::thread::scope(|s| {
            let ta = s.spawn(|| a.write_sync(&first).unwrap());
            let tc = s.spawn(|| c.write_sync(&again).unwrap());
            (ta.join().unwrap(), tc.join().unwrap())
        });
        assert_eq!((wa.messages + wc.messages, wa.events + wc.events), (100, 100));
        assert_eq!((wa.duplicates + wc.duplicates, wa.resent + wc.resent), (100, 100));
        // A third envelope, half old events and half new: the message is
        // taken, only its new events counted.
        let mut mixed = MessageBuilder::new(Uuid::from_u128(7), "0.2.0");
        for e in &events[..50] {
            mixed.push(e).unwrap();
        }
        for i in 0..50 {
            mixed.push(&Event::new(ProcessCreate { process_id: 5000 + i, ..exec_item() })).unwrap();
        }
        let w = a
            .write_sync(&Batch { decoded: vec![decoded(&mixed.finish().unwrap())], ..Batch::default() })
            .unwrap();
        assert_eq!((w.messages, w.events, w.duplicates), (1, 50, 0));
        let t = a.read_sync("SELECT COUNT(*), SUM(hit_count) FROM events", &[]).unwrap();
        assert_eq!(t.rows[0], vec![Value::from(150), Value::from(350)]);
        let t = a.read_sync("SELECT messages, events FROM devices", &[]).unwrap();
        assert_eq!(t.rows[0], vec![Value::from(101), Value::from(350)]);
        let t = a.read_sync("SELECT COUNT(*) FROM messages", &[]).unwrap();
        assert_eq!(t.rows[0], vec![Value::from(101)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn exec_item() -> ProcessCreate {
        ProcessCreate {
            executable: "/bin/false".into(),
            process_id: 0,
            parent_process_id: 1,
            user_id: "0".into(),
            user_name: None,
            command_line: "false".into(),
            extra_details: Default::default(),
        }
    }

    #[test]
    fn a_message_written_twice_or_by_two_writers_at_once_is_stored_once() {
        let dir = std::env::temp_dir().join(format!("shrike-ws-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("w.db");
        let b = batch(200);
        let (a, c) = (SqliteStore::open(&path, true).unwrap(), SqliteStore::open(&path, true).unwrap());
        let (wa, wc) = std::thread::scope(|s| {
            let ta = s.spawn(|| a.write_sync(&b).unwrap());
            let tc = s.spawn(|| c.write_sync(&b).unwrap());
            (ta.join().unwrap(), tc.join().unwrap())
        });
        assert_eq!(wa.messages + wc.messages, 200);
        assert_eq!(wa.duplicates + wc.duplicates, 200);
        assert_eq!(wa.new_devices + wc.new_devices, 1);
        let again = a.write_sync(&b).unwrap();
        assert_eq!((again.messages, again.duplicates, again.events), (0, 200, 0));
        let t = a.read_sync("SELECT COUNT(*), SUM(hit_count) FROM events", &[]).unwrap();
        assert_eq!(t.rows[0], vec![Value::from(200), Value::from(200)]);
        let t = a.read_sync("SELECT messages, events FROM devices", &[]).unwrap();
        assert_eq!(t.rows[0], vec![Value::from(200), Value::from(200)]);
        assert!(a.read_sync("DELETE FROM events", &[]).is_err(), "a write through read");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
