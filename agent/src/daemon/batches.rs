//! Batching: events into messages per priority, and where finished messages go.

use std::collections::{HashMap, VecDeque};

use shrike_common::schema::{self as sm, Family, MessageBuilder, PushError, Uuid};

use super::{health, publisher::Retired, settings::RunSettings};
use crate::{
    journal::cover::Cover,
    publish::{
        mqtt::Publisher,
        spool::{Meta, Priority},
    },
};

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
    pub(super) msgs: VecDeque<(Priority, Vec<u8>, Meta)>,
    pub(super) bytes: u64,
    pub(super) capacity: u64,
}

impl Held {
    pub(super) fn new(capacity: u64) -> Held {
        Held { msgs: VecDeque::new(), bytes: 0, capacity }
    }

    /// Keeps `msg`; returns the messages dropped for room.
    pub(super) fn push(
        &mut self,
        prio: Priority,
        msg: Vec<u8>,
        meta: Meta,
    ) -> Vec<(Priority, Vec<u8>, Meta)> {
        let size = msg.len() as u64;
        if size > self.capacity {
            return vec![(prio, msg, meta)];
        }
        let mut dropped = Vec::new();
        while self.bytes + size > self.capacity {
            let at = self.msgs.iter().position(|(p, ..)| *p == Priority::Low).unwrap_or(0);
            let Some(m) = self.msgs.remove(at) else { break };
            self.bytes -= m.1.len() as u64;
            dropped.push(m);
        }
        self.bytes += size;
        self.msgs.push_back((prio, msg, meta));
        dropped
    }
}

/// Messages being filled, per priority and family (Azure kinds and our own
/// never share a message).
pub(super) struct Batches {
    pub(super) builders: HashMap<(Priority, Family), MessageBuilder>,
    /// What each message being filled carries: its collected events (hits)
    /// and whether it has health statistics (what its drop must report).
    pub(super) metas: HashMap<(Priority, Family), Meta>,
    pub(super) id: Uuid,
    pub(super) max: usize,
    pub(super) gzip: bool,
    pub(super) messages: u64,
    /// Messages under 4 KB (IoT Hub bills 4 KB blocks: these waste some).
    pub(super) small: u64,
    /// Events dropped in userspace (invalid, too large, in messages not
    /// spooled), per queue: events, not messages (aggregated hits included).
    pub(super) dropped: HashMap<Priority, u64>,
    /// Events taken in per queue (aggregated hits included).
    pub(super) collected: HashMap<Priority, u64>,
    pub(super) retired: Retired,
    /// Received events not yet in the spool (daemon/journal.rs), when on.
    pub(super) journal: Option<crate::journal::Journal>,
    /// The spool's ticket of the last message submitted.
    pub(super) last_ticket: u64,
    /// The journal records each message being filled holds (journal/cover.rs).
    pub(super) covers: HashMap<(Priority, Family), Cover>,
    /// Events that fit no message, and messages that could not be spooled
    /// (for the log's rate limit; `dropped` counts them per queue).
    pub(super) event_drops: u64,
    pub(super) message_drops: u64,
}

impl Batches {
    pub(super) fn new(id: Uuid, settings: &RunSettings) -> Batches {
        Batches {
            builders: HashMap::new(),
            metas: HashMap::new(),
            id,
            max: settings.max_message_size,
            gzip: settings.gzip,
            messages: 0,
            small: 0,
            dropped: HashMap::new(),
            collected: HashMap::new(),
            retired: Retired::default(),
            journal: None,
            last_ticket: 0,
            covers: HashMap::new(),
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

    /// An event that stands for no collected event (snapshots, health).
    pub(super) fn push(&mut self, prio: Priority, ev: sm::Event, sink: &mut Sink) {
        self.push_counted(prio, ev, 0, sink);
    }

    /// An event standing for `hits` collected events (its HitCount when
    /// aggregated): the drop statistics count what a lost message held.
    pub(super) fn push_counted(&mut self, prio: Priority, ev: sm::Event, hits: u64, sink: &mut Sink) {
        self.push_keyed(prio, ev, hits, sink);
    }

    /// [`push_counted`](Self::push_counted); the message it went into (None
    /// when it was dropped), for its journal records ([`Batches::cover`]).
    pub(super) fn push_keyed(
        &mut self,
        prio: Priority,
        ev: sm::Event,
        hits: u64,
        sink: &mut Sink,
    ) -> Option<(Priority, Family)> {
        let key = (prio, ev.family());
        let result = match self.builder(key).push(&ev) {
            Err(PushError::Full { .. }) => {
                // Split, never truncate: send what is there, start a new message.
                self.take_and_send(key, sink);
                self.builder(key).push(&ev)
            }
            other => other,
        };
        match result {
            Ok(()) => {
                let meta = self.metas.entry(key).or_insert(Meta { events: 0, health: false });
                meta.events += hits;
                meta.health |= health::is_health(&ev);
                Some(key)
            }
            Err(e) => {
                self.events_dropped(prio, hits.max(1), &e);
                None
            }
        }
    }

    /// The message being filled at `key` holds the journal records `add`
    /// names: the spool learns it with the message.
    pub(super) fn cover(&mut self, key: (Priority, Family), add: impl FnOnce(&mut Cover)) {
        add(self.covers.entry(key).or_default());
    }

    fn take_and_send(&mut self, key: (Priority, Family), sink: &mut Sink) {
        let meta = self.metas.remove(&key).unwrap_or(Meta { events: 0, health: false });
        let cover = self.covers.remove(&key);
        if let Some(msg) = self.builder(key).take() {
            self.send_with(key.0, &msg, meta, cover, sink);
        }
    }

    /// An SDK event (one collected event): of an Azure kind with the
    /// agent's Azure events, of a custom kind in messages of custom kinds.
    pub(super) fn push_sdk(&mut self, prio: Priority, ev: &shrike_common::sdk::SdkEvent, sink: &mut Sink) {
        use shrike_common::sdk::SdkEvent;
        let custom = match ev {
            SdkEvent::Azure(e) => return self.push_counted(prio, e.clone(), 1, sink),
            SdkEvent::Custom(c) => c,
        };
        let key = (prio, Family::Custom);
        let result = match self.builder(key).push_custom(custom) {
            Err(PushError::Full { .. }) => {
                self.take_and_send(key, sink);
                self.builder(key).push_custom(custom)
            }
            other => other,
        };
        match result {
            Ok(()) => self.metas.entry(key).or_insert(Meta { events: 0, health: false }).events += 1,
            Err(e) => self.events_dropped(prio, 1, &e),
        }
    }

    /// An event standing for `events` collected events did not fit a message.
    pub(super) fn events_dropped(&mut self, prio: Priority, events: u64, e: &PushError) {
        *self.dropped.entry(prio).or_default() += events;
        self.event_drops += 1;
        if crate::telemetry::sampled(self.event_drops) {
            tracing::warn!(count = self.event_drops, "security event dropped: {e}");
        }
    }

    /// A message lost before the spool took it: its events are dropped and
    /// its health counts (if any) go into the next health message.
    pub(super) fn message_dropped(
        &mut self,
        prio: Priority,
        msg: &[u8],
        meta: Meta,
        why: impl std::fmt::Display,
    ) {
        *self.dropped.entry(prio).or_default() += meta.events;
        if meta.health {
            health::carry_dropped(msg);
        }
        self.message_drops += 1;
        if crate::telemetry::sampled(self.message_drops) {
            tracing::error!(count = self.message_drops, "{why}");
        }
    }

    pub(super) fn flush(&mut self, prio: Priority, sink: &mut Sink) {
        let keys: Vec<_> = self.builders.keys().copied().filter(|k| k.0 == prio).collect();
        for k in keys {
            self.take_and_send(k, sink);
        }
        self.journal_flushed(prio, sink);
    }

    pub(super) fn flush_all(&mut self, sink: &mut Sink) {
        self.flush(Priority::High, sink);
        self.flush(Priority::Low, sink);
    }

    /// `cover`: the journal records the message holds (lost with a message
    /// held in memory: those would be delivered twice after a kill).
    pub(super) fn send_with(
        &mut self,
        prio: Priority,
        msg: &[u8],
        meta: Meta,
        cover: Option<Cover>,
        sink: &mut Sink,
    ) {
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
            Sink::Mqtt(p) => match p.submit_covered(prio, msg, meta, cover) {
                Ok(ticket) => self.last_ticket = ticket,
                Err(e) => self.message_dropped(prio, msg, meta, format_args!("message not spooled: {e}")),
            },
            Sink::Held(held) => {
                for (p, m, meta) in held.push(prio, msg.to_vec(), meta) {
                    self.message_dropped(
                        p,
                        &m,
                        meta,
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
        let m = Meta::default();
        let prios = |v: Vec<(Priority, Vec<u8>, Meta)>| v.into_iter().map(|d| d.0).collect::<Vec<_>>();
        assert!(h.push(Priority::High, vec![1; 10], m).is_empty());
        assert!(h.push(Priority::Low, vec![2; 10], m).is_empty());
        assert!(h.push(Priority::Low, vec![3; 10], m).is_empty());
        assert_eq!(prios(h.push(Priority::High, vec![4; 10], m)), [Priority::Low]);
        let left: Vec<u8> = h.msgs.iter().map(|(_, m, _)| m[0]).collect();
        assert_eq!(left, [1, 3, 4]);
        assert_eq!(prios(h.push(Priority::Low, vec![5; 31], m)), [Priority::Low], "larger than everything");
        assert_eq!(h.bytes, 30);
    }
}
