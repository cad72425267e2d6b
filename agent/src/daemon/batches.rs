//! Batching: events into messages per priority, and where finished messages go.

use std::collections::{HashMap, VecDeque};

use shrike_common::schema::{self as sm, Family, MessageBuilder, PushError, Uuid};

use super::{publisher::Retired, settings::RunSettings};
use crate::publish::{mqtt::Publisher, spool::Priority};

/// Where finished messages go.
pub(super) enum Sink {
    DryRun(std::io::Stdout),
    Mqtt(Publisher),
    /// No publisher runs: a reload stopped one and could start neither the
    /// new hub settings nor the old ones again. Messages wait in memory for
    /// the next publisher; starting it is retried every few seconds.
    Held(Held),
}

/// Messages kept in memory while no publisher runs, at most `capacity`
/// bytes (the spool's size); the oldest low-priority ones make room first,
/// as in the spool.
pub(super) struct Held {
    pub(super) msgs: VecDeque<(Priority, Vec<u8>)>,
    pub(super) bytes: u64,
    pub(super) capacity: u64,
}

impl Held {
    pub(super) fn new(capacity: u64) -> Held {
        Held { msgs: VecDeque::new(), bytes: 0, capacity }
    }

    /// Keeps `msg`; returns the priorities of the messages dropped for room.
    pub(super) fn push(&mut self, prio: Priority, msg: Vec<u8>) -> Vec<Priority> {
        let size = msg.len() as u64;
        if size > self.capacity {
            return vec![prio];
        }
        let mut dropped = Vec::new();
        while self.bytes + size > self.capacity {
            let at = self.msgs.iter().position(|(p, _)| *p == Priority::Low).unwrap_or(0);
            let Some((p, m)) = self.msgs.remove(at) else { break };
            self.bytes -= m.len() as u64;
            dropped.push(p);
        }
        self.bytes += size;
        self.msgs.push_back((prio, msg));
        dropped
    }
}

/// Messages being filled, per priority and family (Azure kinds and our own
/// never share a message).
pub(super) struct Batches {
    pub(super) builders: HashMap<(Priority, Family), MessageBuilder>,
    pub(super) id: Uuid,
    pub(super) max: usize,
    pub(super) gzip: bool,
    pub(super) messages: u64,
    /// Messages under 4 KB (IoT Hub bills 4 KB blocks: these waste some).
    pub(super) small: u64,
    /// Events dropped in userspace (invalid, too large, spool write failed), per queue.
    pub(super) dropped: HashMap<Priority, u64>,
    /// Events taken in per queue (aggregated hits included).
    pub(super) collected: HashMap<Priority, u64>,
    pub(super) retired: Retired,
    /// Events that fit no message, and messages that could not be spooled
    /// (for the log's rate limit; `dropped` counts them per queue).
    pub(super) event_drops: u64,
    pub(super) message_drops: u64,
}

impl Batches {
    pub(super) fn new(id: Uuid, settings: &RunSettings) -> Batches {
        Batches {
            builders: HashMap::new(),
            id,
            max: settings.max_message_size,
            gzip: settings.gzip,
            messages: 0,
            small: 0,
            dropped: HashMap::new(),
            collected: HashMap::new(),
            retired: Retired::default(),
            event_drops: 0,
            message_drops: 0,
        }
    }

    pub(super) fn builder(&mut self, key: (Priority, Family)) -> &mut MessageBuilder {
        let (id, max) = (self.id, self.max);
        self.builders
            .entry(key)
            .or_insert_with(|| MessageBuilder::new(id, crate::VERSION).with_max_bytes(max))
    }

    pub(super) fn push(&mut self, prio: Priority, ev: sm::Event, sink: &mut Sink) {
        let key = (prio, ev.family());
        match self.builder(key).push(&ev) {
            Ok(()) => {}
            Err(PushError::Full { .. }) => {
                // Split, never truncate: send what is there, start a new message.
                if let Some(msg) = self.builder(key).take() {
                    self.send(prio, &msg, sink);
                }
                if let Err(e) = self.builder(key).push(&ev) {
                    self.event_dropped(prio, &e);
                }
            }
            Err(e) => self.event_dropped(prio, &e),
        }
    }

    pub(super) fn event_dropped(&mut self, prio: Priority, e: &PushError) {
        *self.dropped.entry(prio).or_default() += 1;
        self.event_drops += 1;
        if crate::telemetry::sampled(self.event_drops) {
            tracing::warn!(count = self.event_drops, "security event dropped: {e}");
        }
    }

    pub(super) fn message_dropped(&mut self, prio: Priority, why: impl std::fmt::Display) {
        *self.dropped.entry(prio).or_default() += 1;
        self.message_drops += 1;
        if crate::telemetry::sampled(self.message_drops) {
            tracing::error!(count = self.message_drops, "{why}");
        }
    }

    pub(super) fn flush(&mut self, prio: Priority, sink: &mut Sink) {
        let keys: Vec<_> = self.builders.keys().copied().filter(|k| k.0 == prio).collect();
        for k in keys {
            if let Some(msg) = self.builder(k).take() {
                self.send(prio, &msg, sink);
            }
        }
    }

    pub(super) fn flush_all(&mut self, sink: &mut Sink) {
        self.flush(Priority::High, sink);
        self.flush(Priority::Low, sink);
    }

    pub(super) fn send(&mut self, prio: Priority, msg: &[u8], sink: &mut Sink) {
        let zipped;
        let msg = if self.gzip && !matches!(sink, Sink::DryRun(_)) {
            use std::io::Write as _;
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            zipped = z.write_all(msg).and_then(|()| z.finish()).unwrap_or_else(|_| msg.to_vec());
            &zipped[..]
        } else {
            msg
        };
        self.messages += 1;
        if msg.len() < 4096 {
            self.small += 1;
        }
        match sink {
            Sink::DryRun(out) => {
                use std::io::Write;
                let mut out = out.lock();
                let _ = out.write_all(msg).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
            }
            Sink::Mqtt(p) => {
                if let Err(e) = p.submit(prio, msg) {
                    self.message_dropped(prio, format_args!("message not spooled: {e}"));
                }
            }
            Sink::Held(held) => {
                for p in held.push(prio, msg.to_vec()) {
                    self.message_dropped(
                        p,
                        "message dropped: no publisher runs and the messages held meanwhile fill spool_size",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_messages_make_room_oldest_low_first() {
        let mut h = Held::new(30);
        assert!(h.push(Priority::High, vec![1; 10]).is_empty());
        assert!(h.push(Priority::Low, vec![2; 10]).is_empty());
        assert!(h.push(Priority::Low, vec![3; 10]).is_empty());
        assert_eq!(h.push(Priority::High, vec![4; 10]), [Priority::Low]);
        let left: Vec<u8> = h.msgs.iter().map(|(_, m)| m[0]).collect();
        assert_eq!(left, [1, 3, 4]);
        assert_eq!(h.push(Priority::Low, vec![5; 31]), [Priority::Low], "larger than everything");
        assert_eq!(h.bytes, 30);
    }
}
