//! Storage: one trait, [`Store`], with SQLite ([`sqlite`], the embedded
//! default) and PostgreSQL ([`postgres`], for many processes on many
//! machines) behind it. One schema, versioned migrations in
//! `workspace/migrations/` run by refinery on either.
//!
//! Exactly once in effect: every write is one transaction that first inserts
//! the message's row (its key is the SHA-256 of the body) with `ON CONFLICT
//! DO NOTHING`, and writes the message's events only when that insert took.
//! A redelivered message, or the same message taken by two processes at
//! once, is stored once: the unique key decides, inside the database. Events
//! are keyed by (event Id, device, item) as well, so a copy re-sent in other
//! bytes stores (and counts) only the events that are new.

#[cfg(feature = "server")]
pub mod postgres;
pub mod rows;
#[cfg(feature = "server")]
pub mod sqlite;

#[cfg(feature = "server")]
use std::future::Future;

#[cfg(feature = "server")]
use serde_json::Value;

#[cfg(feature = "server")]
use crate::config::DbTarget;
#[cfg(feature = "server")]
use rows::{Batch, Written};

#[cfg(feature = "server")]
refinery::embed_migrations!("migrations");

#[cfg(feature = "server")]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("PostgreSQL: {}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("migrating the schema: {0}")]
    Migrate(#[from] refinery::Error),
    #[error("{0}")]
    Refused(String),
    #[error("the database task stopped: {0}")]
    Task(String),
}

#[cfg(feature = "server")]
/// tokio-postgres says "db error" and keeps the server's words in its source.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

#[cfg(feature = "server")]
/// A query's answer: column names and rows of JSON values.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

#[cfg(feature = "server")]
impl Table {
    /// Rows as JSON objects (column name to value).
    pub fn objects(&self) -> Vec<serde_json::Map<String, Value>> {
        self.rows.iter().map(|r| self.columns.iter().cloned().zip(r.iter().cloned()).collect()).collect()
    }
}

#[cfg(feature = "server")]
/// A bound parameter of a query (`$1`, `$2`... in the SQL).
#[derive(Clone, Debug)]
pub enum Param {
    Text(String),
    Int(i64),
}

#[cfg(feature = "server")]
/// What the workspace asks of a database.
pub trait Store: Send + Sync + 'static {
    /// Writes a batch in one transaction.
    fn write(&self, batch: &Batch) -> impl Future<Output = Result<Written, StoreError>> + Send;
    /// Runs one statement read-only (anything that writes is refused by the
    /// database itself). Parameters are `$1`, `$2`...
    fn read(&self, sql: String, params: Vec<Param>)
    -> impl Future<Output = Result<Table, StoreError>> + Send;
    /// Deletes rows of `table` whose `column` is before `before`; the count.
    fn delete_before(
        &self,
        table: &'static str,
        column: &'static str,
        before: String,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Bytes the database takes on disk.
    fn size(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(feature = "server")]
/// The store a `--db` names.
#[derive(Clone)]
pub enum Db {
    Sqlite(std::sync::Arc<sqlite::SqliteStore>),
    Postgres(std::sync::Arc<postgres::PgStore>),
}

#[cfg(feature = "server")]
impl Db {
    /// Opens it, creating and migrating the schema when `migrate` (the
    /// workspace itself; the query commands only read).
    pub async fn open(target: &DbTarget, migrate: bool) -> Result<Db, StoreError> {
        Ok(match target {
            DbTarget::Sqlite(path) => {
                let path = path.clone();
                let s = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path, migrate))
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))??;
                Db::Sqlite(std::sync::Arc::new(s))
            }
            DbTarget::Postgres(url) => {
                Db::Postgres(std::sync::Arc::new(postgres::PgStore::open(url, migrate).await?))
            }
        })
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

#[cfg(feature = "server")]
impl Store for Db {
    async fn write(&self, batch: &Batch) -> Result<Written, StoreError> {
        match self {
            Db::Sqlite(s) => s.write(batch).await,
            Db::Postgres(s) => s.write(batch).await,
        }
    }

    async fn read(&self, sql: String, params: Vec<Param>) -> Result<Table, StoreError> {
        match self {
            Db::Sqlite(s) => s.read(sql, params).await,
            Db::Postgres(s) => s.read(sql, params).await,
        }
    }

    async fn delete_before(
        &self,
        table: &'static str,
        column: &'static str,
        before: String,
    ) -> Result<u64, StoreError> {
        match self {
            Db::Sqlite(s) => s.delete_before(table, column, before).await,
            Db::Postgres(s) => s.delete_before(table, column, before).await,
        }
    }

    async fn size(&self) -> Result<u64, StoreError> {
        match self {
            Db::Sqlite(s) => s.size().await,
            Db::Postgres(s) => s.size().await,
        }
    }
}
