//! Shrike's workspace: the hub side. Security messages from every agent come
//! off an MQTT broker (a shared subscription: processes of a group split the
//! stream), are stored in SQLite or PostgreSQL, watched by fleet detectors,
//! and read with the query commands and the web page. The tables are
//! documented in docs/workspace.md.

//!
//! Without the `server` feature (on by default) only the message decoder
//! ([`ingest::decode`]) and the rows it makes ([`store::rows`]) build: what
//! the fuzz crate takes, with no database or web stack to compile.

#[cfg(feature = "server")]
pub mod analytics;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
pub mod ingest;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod query;
pub mod store;
pub mod time;
#[cfg(feature = "server")]
pub mod web;

#[cfg(feature = "server")]
mod app;
#[cfg(feature = "server")]
pub use app::{init_tracing, run, serve};
