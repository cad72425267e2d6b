//! Health events: dropped events per queue and message statistics.

use std::collections::HashMap;

use shrike_common::schema as sm;

use super::{batches::Sink, pipeline::Pipeline};
use crate::{probes, publish::spool::Priority};

/// Counters behind the health events, per queue; events report differences.
#[derive(Clone, Debug, Default)]
pub(super) struct Health {
    pub(super) collected: HashMap<Priority, u64>,
    /// Userspace drops, spool drops and kernel losses of the queue's kinds.
    pub(super) dropped: HashMap<Priority, u64>,
    pub(super) messages: u64,
    pub(super) small: u64,
    pub(super) failed: u64,
}

impl Health {
    pub(super) fn now(pipe: &Pipeline, probes: &probes::Probes) -> Health {
        let batches = &pipe.batches;
        let mut dropped = batches.dropped.clone();
        let retired = batches.retired;
        *dropped.entry(Priority::Low).or_default() += retired.dropped_low;
        *dropped.entry(Priority::High).or_default() += retired.dropped_high;
        let mut failed = retired.failed;
        if let Sink::Mqtt(p) = &pipe.sink {
            let st = p.stats();
            *dropped.entry(Priority::Low).or_default() += st.spool.dropped_low;
            *dropped.entry(Priority::High).or_default() += st.spool.dropped_high;
            failed += st.submit_errors + st.oversize_dropped + st.spool_dropped;
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
            failed,
        }
    }
    /// DroppedEventsStatistics per queue and MessageStatistics since `before`.
    pub(super) fn events_since(&self, before: &Health) -> Vec<sm::Event> {
        let delta = |now: &HashMap<Priority, u64>, then: &HashMap<Priority, u64>, p: Priority| {
            now.get(&p).copied().unwrap_or(0).saturating_sub(then.get(&p).copied().unwrap_or(0))
        };
        let mut out: Vec<sm::Event> = [(Priority::High, sm::Queue::High), (Priority::Low, sm::Queue::Low)]
            .into_iter()
            .map(|(p, queue)| {
                sm::Event::new(sm::DroppedEventsStatistics {
                    queue,
                    collected_events: delta(&self.collected, &before.collected, p),
                    dropped_events: delta(&self.dropped, &before.dropped, p),
                    extra_details: Default::default(),
                })
            })
            .collect();
        out.push(sm::Event::new(sm::MessageStatistics {
            messages_sent: self.messages.saturating_sub(before.messages),
            messages_under_4kb: self.small.saturating_sub(before.small),
            total_failed: self.failed.saturating_sub(before.failed),
            extra_details: Default::default(),
        }));
        out
    }
}
