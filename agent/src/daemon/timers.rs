//! The loop's timers.

use std::time::Duration;

use tokio::time::{Instant, Interval};

use super::{publisher::PUBLISHER_RETRY, settings::RunSettings};

/// How often detection is told the time.
const DETECT_TICK: Duration = Duration::from_secs(1);

/// The loop's timers; a reload remakes those whose interval changed.
pub(super) struct Timers {
    pub(super) high: Interval,
    pub(super) low: Interval,
    pub(super) snapshots: Interval,
    pub(super) health: Interval,
    /// Starting a publisher again while messages are held.
    pub(super) retry: Interval,
    /// Detection's clock (windows that close without an event).
    pub(super) detect: Interval,
}

impl Timers {
    pub(super) fn new(s: &RunSettings) -> Timers {
        let now = Instant::now();
        Timers {
            high: every(s.high_interval, now),
            low: every(s.low_interval, now),
            snapshots: every(s.snapshot_interval, now),
            // The first health events after one interval.
            health: every(s.health_interval, now + s.health_interval),
            retry: every(PUBLISHER_RETRY, now + PUBLISHER_RETRY),
            detect: every(DETECT_TICK, now + DETECT_TICK),
        }
    }
}

/// A timer ticking every `period` from `first`. A busy loop must not flush
/// several times in a row to catch up: that would send small, early batches.
pub(super) fn every(period: Duration, first: Instant) -> Interval {
    let mut t = tokio::time::interval_at(first, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}
