//! Health events: dropped events per queue and message statistics.
//!
//! They report differences since the last health events. If the message
//! carrying them is itself dropped (full spool or file system, queue full, no
//! publisher), the counts it carried are added to the next ones
//! ([`carry_dropped`]): a delta is never lost, and never counted twice (the
//! dropped message never arrives).

use std::{collections::HashMap, io::Read, sync::Mutex};

use serde_json::Value;
use shrike_common::schema as sm;

use super::{batches::Sink, pipeline::Pipeline, publisher::failed};
use crate::{probes, publish::spool::Priority};

/// Counts of dropped health messages, to report again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Carried {
    /// (collected, dropped) per queue: high, low.
    pub(super) high: (u64, u64),
    pub(super) low: (u64, u64),
    pub(super) messages: u64,
    pub(super) small: u64,
    pub(super) failed: u64,
}

/// One agent runs per process: the spool's thread reports dropped health
/// messages here, the next health events take them.
static CARRIED: Mutex<Carried> =
    Mutex::new(Carried { high: (0, 0), low: (0, 0), messages: 0, small: 0, failed: 0 });

fn carried() -> std::sync::MutexGuard<'static, Carried> {
    CARRIED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an event is one of the health events.
pub(super) fn is_health(ev: &sm::Event) -> bool {
    matches!(ev.payload, sm::Payload::DroppedEventsStatistics(_) | sm::Payload::MessageStatistics(_))
}

/// A message that carried health events was dropped: its counts go into the
/// next health events. `msg` is the message as spooled (gzip or not).
pub(super) fn carry_dropped(msg: &[u8]) {
    if let Some(c) = counts_in(msg) {
        let mut all = carried();
        all.high.0 += c.high.0;
        all.high.1 += c.high.1;
        all.low.0 += c.low.0;
        all.low.1 += c.low.1;
        all.messages += c.messages;
        all.small += c.small;
        all.failed += c.failed;
    }
}

/// The health counts a message carries (None: not a message we can read).
pub(super) fn counts_in(msg: &[u8]) -> Option<Carried> {
    let mut plain = Vec::new();
    let json = if msg.starts_with(&[0x1f, 0x8b]) {
        // Bounded: a message is at most 16 MiB before compression.
        flate2::read::GzDecoder::new(msg).take(16 << 20).read_to_end(&mut plain).ok()?;
        &plain[..]
    } else {
        msg
    };
    let v: Value = serde_json::from_slice(json).ok()?;
    let mut c = Carried::default();
    let num = |v: &Value| v.as_u64().or_else(|| v.as_str()?.parse().ok()).unwrap_or(0);
    for e in v["Events"].as_array()? {
        for p in e["Payload"].as_array().into_iter().flatten() {
            match e["Name"].as_str() {
                Some("DroppedEventsStatistics") => {
                    let q = match p["Queue"].as_str() {
                        Some("High") => &mut c.high,
                        Some("Low") => &mut c.low,
                        _ => continue,
                    };
                    q.0 += num(&p["CollectedEvents"]);
                    q.1 += num(&p["DroppedEvents"]);
                }
                Some("MessageStatistics") => {
                    c.messages += num(&p["MessagesSent"]);
                    c.small += num(&p["MessagesUnder4KB"]);
                    c.failed += num(&p["TotalFailed"]);
                }
                _ => {}
            }
        }
    }
    Some(c)
}

/// Counters behind the health events, per queue; events report differences.
#[derive(Clone, Debug, Default)]
pub(super) struct Health {
    pub(super) collected: HashMap<Priority, u64>,
    /// Userspace drops, spool drops and kernel losses of the queue's kinds.
    pub(super) dropped: HashMap<Priority, u64>,
    pub(super) messages: u64,
    pub(super) small: u64,
    pub(super) failed: u64,
    /// Spool records found corrupt, drops for a full file system or queue
    /// (reported in MessageStatistics' ExtraDetails).
    pub(super) corrupt: u64,
    pub(super) disk_full: u64,
    pub(super) queue_full: u64,
}

impl Health {
    pub(super) fn now(pipe: &Pipeline, probes: &probes::Probes) -> Health {
        let batches = &pipe.batches;
        let mut dropped = batches.dropped.clone();
        let retired = batches.retired;
        *dropped.entry(Priority::Low).or_default() += retired.dropped_low;
        *dropped.entry(Priority::High).or_default() += retired.dropped_high;
        let mut failed_total = retired.failed;
        let mut spool = (retired.corrupt, retired.disk_full, retired.queue_full);
        if let Sink::Mqtt(p) = &pipe.sink {
            let st = p.stats();
            // Events, not messages (a message holds many).
            *dropped.entry(Priority::Low).or_default() += st.spool.dropped_low_events;
            *dropped.entry(Priority::High).or_default() += st.spool.dropped_high_events;
            failed_total += failed(&st);
            spool.0 += st.spool.corrupt;
            spool.1 += st.spool.disk_full;
            spool.2 += st.spool.queue_full;
        }
        for (kind, lost) in probes::read_counters(&probes.ebpf, shrike_common::names::LOST) {
            if let Some(prio) = pipe.settings.priority.get(&kind).and_then(|p| p.spool()) {
                *dropped.entry(prio).or_default() += lost;
            }
        }
        Health {
            collected: batches.collected.clone(),
            dropped,
            messages: batches.messages,
            small: batches.small,
            failed: failed_total,
            corrupt: spool.0,
            disk_full: spool.1,
            queue_full: spool.2,
        }
    }
    /// DroppedEventsStatistics per queue and MessageStatistics since
    /// `before`, with the counts of dropped health messages added.
    pub(super) fn events_since(&self, before: &Health) -> Vec<sm::Event> {
        let carry = std::mem::take(&mut *carried());
        self.events_since_with(before, carry)
    }

    pub(super) fn events_since_with(&self, before: &Health, carry: Carried) -> Vec<sm::Event> {
        let delta = |now: &HashMap<Priority, u64>, then: &HashMap<Priority, u64>, p: Priority| {
            now.get(&p).copied().unwrap_or(0).saturating_sub(then.get(&p).copied().unwrap_or(0))
        };
        let mut out: Vec<sm::Event> =
            [(Priority::High, sm::Queue::High, carry.high), (Priority::Low, sm::Queue::Low, carry.low)]
                .into_iter()
                .map(|(p, queue, (c_collected, c_dropped))| {
                    sm::Event::new(sm::DroppedEventsStatistics {
                        queue,
                        collected_events: delta(&self.collected, &before.collected, p) + c_collected,
                        dropped_events: delta(&self.dropped, &before.dropped, p) + c_dropped,
                        extra_details: Default::default(),
                    })
                })
                .collect();
        let mut extra = sm::ExtraDetails::new();
        for (name, now, then) in [
            ("SpoolCorruptRecords", self.corrupt, before.corrupt),
            ("SpoolDiskFullDrops", self.disk_full, before.disk_full),
            ("SpoolQueueFullDrops", self.queue_full, before.queue_full),
        ] {
            if now > then {
                extra.insert(name.into(), (now - then).to_string());
            }
        }
        out.push(sm::Event::new(sm::MessageStatistics {
            messages_sent: self.messages.saturating_sub(before.messages) + carry.messages,
            messages_under_4kb: self.small.saturating_sub(before.small) + carry.small,
            total_failed: self.failed.saturating_sub(before.failed) + carry.failed,
            extra_details: extra,
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(h: &Health, before: &Health, carry: Carried) -> Value {
        let events = h.events_since_with(before, carry);
        let mut b = sm::MessageBuilder::new(sm::Uuid::nil(), "test");
        for e in &events {
            b.push(e).unwrap();
        }
        serde_json::from_slice(&b.take().unwrap()).unwrap()
    }

    /// Defect 2: the counts of a dropped health message (plain or gzip) are
    /// added to the next health events, once.
    #[test]
    fn a_dropped_health_message_s_counts_go_into_the_next_one() {
        let first = Health {
            collected: HashMap::from([(Priority::High, 10), (Priority::Low, 3000)]),
            dropped: HashMap::from([(Priority::Low, 2509)]),
            messages: 40,
            small: 7,
            failed: 12,
            corrupt: 1,
            ..Health::default()
        };
        let msg = serde_json::to_vec(&report(&first, &Health::default(), Carried::default())).unwrap();
        let want = Carried { high: (10, 0), low: (3000, 2509), messages: 40, small: 7, failed: 12 };
        assert_eq!(counts_in(&msg), Some(want));
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, &msg).unwrap();
        assert_eq!(counts_in(&z.finish().unwrap()), Some(want), "gzip messages too");
        assert_eq!(counts_in(b"not json"), None);

        // The next report: its own differences plus what the lost one carried.
        let second = Health {
            collected: HashMap::from([(Priority::High, 11), (Priority::Low, 3005)]),
            dropped: HashMap::from([(Priority::Low, 2510)]),
            messages: 42,
            small: 8,
            failed: 12,
            corrupt: 3,
            ..Health::default()
        };
        let v = report(&second, &first, want);
        let ev = |name: &str, queue: Option<&str>| {
            v["Events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["Name"] == name && queue.is_none_or(|q| e["Payload"][0]["Queue"] == q))
                .unwrap()["Payload"][0]
                .clone()
        };
        let low = ev("DroppedEventsStatistics", Some("Low"));
        assert_eq!((&low["CollectedEvents"], &low["DroppedEvents"]), (&3005.into(), &2510.into()));
        let high = ev("DroppedEventsStatistics", Some("High"));
        assert_eq!(high["CollectedEvents"], 11);
        let m = ev("MessageStatistics", None);
        assert_eq!((&m["MessagesSent"], &m["TotalFailed"]), (&42.into(), &12.into()));
        assert_eq!(m["ExtraDetails"]["SpoolCorruptRecords"], "2", "corrupt records are reported: {m}");

        // Through the process-wide carry: taken once.
        carry_dropped(&msg);
        let a = report(&second, &second, std::mem::take(&mut *carried()));
        assert_eq!(a["Events"][1]["Payload"][0]["DroppedEvents"], 2509);
        let again = second.events_since(&second);
        assert!(
            again.iter().all(|e| match &e.payload {
                sm::Payload::DroppedEventsStatistics(d) => d[0].dropped_events == 0,
                _ => true,
            }),
            "not twice"
        );
    }
}
