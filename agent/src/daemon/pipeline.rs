//! The pipeline after the kernel and the enrichment: aggregation into batches.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use shrike_common::schema::Uuid;
use tokio::time::Instant;

use super::{
    batches::{Batches, Sink},
    journal::Holder,
    settings::RunSettings,
    timers::Timers,
};
use crate::{
    aggregate::{Aggregator, Pushed},
    config::KindPriority,
    detect::Detect,
    enrich::users::Users,
    events::{Event, Kind},
    journal::cover::Cover,
    message,
    publish::spool::Priority,
};

/// Everything after the kernel and the enrichment: detection, aggregation
/// and batching; what `handle` feeds, the loop's timers drive, and a reload
/// changes in place (the probes stay).
pub(super) struct Pipeline {
    pub(super) settings: RunSettings,
    /// Sees every event before the priority filter; its alerts are
    /// published like events of kind `alert` (always high priority).
    pub(super) detect: Detect,
    /// Alerts of the event (or tick) at hand; kept for its buffer.
    alerts: Vec<Event>,
    /// Kinds whose probes are attached: a reload can turn on only these.
    pub(super) attachable: BTreeSet<Kind>,
    /// One aggregator per kind with aggregation on, each with its own interval.
    pub(super) aggs: BTreeMap<Kind, Aggregator>,
    pub(super) agg_due: BTreeMap<Kind, (Duration, Instant)>,
    pub(super) batches: Batches,
    pub(super) sink: Sink,
    pub(super) timers: Timers,
    /// The SDK socket's counters, when it is on (the stop log, metrics).
    pub(super) sdk_stats: Option<std::sync::Arc<crate::sdk::SdkStats>>,
}

impl Pipeline {
    pub(super) fn new(
        settings: RunSettings,
        detect: Detect,
        attachable: BTreeSet<Kind>,
        id: Uuid,
        sink: Sink,
    ) -> Pipeline {
        let mut p = Pipeline {
            batches: Batches::new(id, &settings),
            timers: Timers::new(&settings),
            settings,
            detect,
            alerts: Vec::new(),
            attachable,
            aggs: BTreeMap::new(),
            agg_due: BTreeMap::new(),
            sink,
            sdk_stats: None,
        };
        let now = Instant::now();
        for kind in Kind::EVENTS {
            if let Some(iv) = p.aggregation(kind) {
                p.aggs.insert(kind, new_aggregator(p.settings.priority[&kind]));
                p.agg_due.insert(kind, (iv, now + iv));
            }
        }
        p
    }

    /// The aggregation interval of a kind that is collected.
    pub(super) fn aggregation(&self, kind: Kind) -> Option<Duration> {
        let on = self.settings.priority[&kind] != KindPriority::Off;
        self.settings.aggregation[&kind].filter(|_| on)
    }

    /// One enriched event: detection, then (unless its kind is off) the
    /// aggregator and the batches; then the alerts it raised.
    pub(super) fn handle(&mut self, ev: &mut Event, users: &mut Users) {
        let published = self.settings.priority_of(ev) != KindPriority::Off;
        if !published && self.detect.is_empty() {
            return;
        }
        // Before detection: an alert carries its event with the user name.
        ev.user = users.name(ev.uid);
        self.detect.process(ev, &mut self.alerts);
        if published {
            publish(ev, &self.settings, &mut self.aggs, &mut self.batches, &mut self.sink);
        }
        self.publish_alerts();
    }

    /// Detection's periodic call: windows that closed without an event.
    pub(super) fn tick_detect(&mut self) {
        self.detect.tick(chrono::Utc::now(), &mut self.alerts);
        self.publish_alerts();
    }

    fn publish_alerts(&mut self) {
        for alert in &self.alerts {
            publish(alert, &self.settings, &mut self.aggs, &mut self.batches, &mut self.sink);
        }
        self.alerts.clear();
    }

    pub(super) fn next_aggregate(&self) -> Option<Instant> {
        self.agg_due.values().map(|(_, at)| *at).min()
    }

    pub(super) fn flush_due_aggregates(&mut self) {
        let now = Instant::now();
        let due: Vec<Kind> = self.agg_due.iter().filter(|(_, (_, at))| *at <= now).map(|(k, _)| *k).collect();
        for kind in due {
            if let Some((every, at)) = self.agg_due.get_mut(&kind) {
                *at = now + *every;
            }
            self.flush_aggregate(kind);
        }
    }

    /// Sends a kind's aggregated events, in its (current) queue.
    pub(super) fn flush_aggregate(&mut self, kind: Kind) {
        let prio = self.settings.priority[&kind].spool().unwrap_or(Priority::Low);
        let mut last = None;
        for (hits, ev) in self.aggs.get_mut(&kind).map(Aggregator::flush).unwrap_or_default() {
            last = self.batches.push_keyed(prio, ev, hits, &mut self.sink).or(last);
        }
        if let Some(j) = &mut self.batches.journal {
            j.tracker.agg_flushed(kind, prio);
            // The aggregator's records go with the message of its last
            // aggregate: the messages before it (split when full) are
            // spooled before it, so none is named before it is durable.
            let ranges = j.tracker.take_agg_cover(kind);
            let epoch = j.epoch;
            if let Some(key) = last {
                self.batches.cover(key, |c| c.add_all(&Cover { epoch, ranges }));
            }
        }
    }

    /// Everything pending, aggregates included, into the sink.
    pub(super) fn flush_all(&mut self) {
        let kinds: Vec<Kind> = self.aggs.keys().copied().collect();
        for kind in kinds {
            self.flush_aggregate(kind);
        }
        self.batches.flush_all(&mut self.sink);
    }
}

/// A kind's aggregator: at start and when a reload changes the kind's
/// priority or interval.
pub(super) fn new_aggregator(priority: KindPriority) -> Aggregator {
    // Distinct keys held per aggregator, at most. High-priority kinds are
    // alerts: the first event of each key goes out at once, only repeats
    // wait for the interval.
    Aggregator::new(100_000).leading_edge(priority == KindPriority::High)
}

/// Into its kind's aggregator, or straight into its queue's batch.
fn publish(
    ev: &Event,
    settings: &RunSettings,
    aggs: &mut BTreeMap<Kind, Aggregator>,
    batches: &mut Batches,
    sink: &mut Sink,
) {
    let kind = ev.kind();
    let Some(prio) = settings.priority_of(ev).spool() else { return };
    *batches.collected.entry(prio).or_default() += 1;
    // Other programs' events go as they were accepted (their Id and time),
    // never aggregated.
    if let crate::events::Body::Sdk(s) = &ev.body {
        batches.push_sdk(prio, &s.event, sink);
        return;
    }
    // Where the event waits (journal/: replayed after a crash until it is in the spool).
    let single = match aggs.get_mut(&kind) {
        Some(agg) => match agg.push(ev) {
            Pushed::Merged => {
                batches.journal_hold(prio, ev, Holder::Agg(kind));
                None
            }
            Pushed::Unmapped => None,
            Pushed::Single(m) => Some(m),
        },
        None => message::to_message_event(ev),
    };
    if let Some(m) = single {
        // Journaled first: its message names it (journal/cover.rs).
        let at = batches.journal_hold(prio, ev, Holder::Batch(prio, m.id));
        if let Some(key) = batches.push_keyed(prio, m, 1, sink)
            && let Some((epoch, seq)) = at
        {
            batches.cover(key, |c| c.add(epoch, seq));
        }
    }
}
