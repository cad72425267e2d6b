//! The broker's own log, for devices with or without an agent ("built-in"
//! mode): mosquitto publishes it on `$SYS/broker/log/<level>` with
//! `log_dest topic`. Connects, disconnects and authentication failures are
//! kept in `broker_log`; the detectors in [`super`] read that table.
//!
//! mosquitto 2.0's lines (after the `TIMESTAMP: ` prefix):
//! - `New connection from 127.0.0.1:40512 on port 1883.`
//! - `New client connected from 127.0.0.1:40512 as gw-17 (p2, c1, k60, u'gw').`
//! - `Client <unknown> disconnected, not authorised.` (the address is the
//!   `New connection` line's just before it; the client id is not known yet)
//! - `Client gw-17 disconnected.` / `Client gw-17 closed its connection.`
//!
//! Every process of a group subscribes to the whole log (it is not shared:
//! the pairing above needs each line in order). Lines get the same id in
//! every process (timestamp, text and the count of identical lines before
//! it), so each is stored once.

use std::collections::HashMap;

use crate::{ingest::decode::message_id, store::rows::BrokerLogRow, time};

/// The topic filter of mosquitto's log.
pub const FILTER: &str = "$SYS/broker/log/#";

#[derive(Default)]
pub struct Parser {
    /// The address of the last `New connection from` line.
    last_address: Option<String>,
    /// Identical (timestamp, line) pairs seen, to number repeats.
    seen: HashMap<String, u32>,
    seen_second: String,
}

/// `127.0.0.1:40512` or `[::1]:40512` into the address alone.
fn host_of(addr: &str) -> String {
    let a = addr.trim_end_matches(['.', ',']);
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match a.rsplit_once(':') {
        // IPv6 without brackets has several colons: keep it whole.
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
        _ => a.to_owned(),
    }
}

impl Parser {
    /// One published log line (`topic` is `$SYS/broker/log/N` etc.);
    /// `None` for lines the detectors do not use.
    pub fn line(&mut self, topic: &str, payload: &[u8], received: &str) -> Option<BrokerLogRow> {
        let text = String::from_utf8_lossy(payload);
        let text = text.trim();
        let level = topic.rsplit('/').next().unwrap_or("").to_owned();
        // mosquitto's default prefix is a Unix time: `1733465400: `.
        let (stamp, msg) = match text.split_once(": ") {
            Some((s, m)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => (Some(s), m),
            _ => (None, text),
        };
        let time = stamp
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(time::format)
            .unwrap_or_else(|| received.to_owned());
        let (event, client_id, address) = if let Some(rest) = msg.strip_prefix("New connection from ") {
            let addr = host_of(rest.split_whitespace().next().unwrap_or(""));
            self.last_address = Some(addr.clone());
            ("connection", None, Some(addr))
        } else if let Some(rest) = msg.strip_prefix("New client connected from ") {
            // `ADDR:PORT as CLIENT (p2, ...)`.
            let mut w = rest.split_whitespace();
            let addr = host_of(w.next().unwrap_or(""));
            let client = match (w.next(), w.next()) {
                (Some("as"), Some(c)) => Some(c.to_owned()),
                _ => None,
            };
            ("connect", client, Some(addr))
        } else if let Some(rest) = msg.strip_prefix("Client ") {
            let (client, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let client = (client != "<unknown>").then(|| client.to_owned());
            if tail.contains("not authorised") || tail.contains("not authorized") {
                ("auth-failure", client, self.last_address.clone())
            } else if tail.starts_with("disconnected") || tail.starts_with("closed its connection") {
                ("disconnect", client, None)
            } else {
                return None;
            }
        } else {
            return None;
        };
        if stamp.unwrap_or("") != self.seen_second {
            self.seen.clear();
            self.seen_second = stamp.unwrap_or("").to_owned();
        }
        let n = self.seen.entry(text.to_owned()).or_insert(0);
        *n += 1;
        let id = message_id(format!("{text}#{n}").as_bytes());
        Some(BrokerLogRow {
            id,
            time,
            level,
            event: event.to_owned(),
            client_id,
            address,
            line: text.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-12-06T06:00:00.000Z";

    #[test]
    fn mosquitto_lines() {
        let mut p = Parser::default();
        let r = p
            .line("$SYS/broker/log/N", b"1733465400: New connection from 10.1.2.3:40512 on port 1883.", NOW)
            .unwrap();
        assert_eq!((r.event.as_str(), r.address.as_deref()), ("connection", Some("10.1.2.3")));
        assert_eq!(r.time, "2024-12-06T06:10:00.000Z");
        let r = p
            .line("$SYS/broker/log/N", b"1733465400: Client <unknown> disconnected, not authorised.", NOW)
            .unwrap();
        assert_eq!(
            (r.event.as_str(), r.address.as_deref(), r.client_id),
            ("auth-failure", Some("10.1.2.3"), None)
        );
        let r = p
            .line(
                "$SYS/broker/log/N",
                b"1733465401: New client connected from [::1]:5 as gw-17 (p2, c1, k60, u'gw').",
                NOW,
            )
            .unwrap();
        assert_eq!(
            (r.event.as_str(), r.address.as_deref(), r.client_id.as_deref()),
            ("connect", Some("::1"), Some("gw-17"))
        );
        assert_eq!(
            p.line("$SYS/broker/log/N", b"1733465402: Client gw-17 disconnected.", NOW).unwrap().event,
            "disconnect"
        );
        assert!(p.line("$SYS/broker/log/I", b"1733465402: mosquitto version 2.0.11 running", NOW).is_none());
    }

    #[test]
    fn repeated_lines_get_their_own_ids_and_the_same_ids_in_every_process() {
        let line = b"1733465400: Client <unknown> disconnected, not authorised.";
        let ids = |p: &mut Parser| -> Vec<String> {
            (0..3).map(|_| p.line("$SYS/broker/log/N", line, NOW).unwrap().id).collect()
        };
        let (a, b) = (ids(&mut Parser::default()), ids(&mut Parser::default()));
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        assert_ne!(a[1], a[2]);
    }
}
