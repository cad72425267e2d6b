//! The journal in the run loop (see `crate::journal`): each published event
//! is journaled where it starts to wait (an aggregator or a message being
//! filled), released once the message carrying it is durable in the spool;
//! at start what an earlier run left is delivered again and its loss
//! reported.

use std::time::Duration;

use shrike_common::schema as sm;

use super::{
    batches::{Batches, Sink},
    pipeline::Pipeline,
};
use crate::{
    events::{Event, Kind},
    journal::{Flushed, Journal, JournalStats},
    publish::spool::Priority,
};

/// Replayed events are handed to the spool this many at a time.
const REPLAY_STEP: usize = 2000;

/// Where an event waits.
pub(super) enum Holder {
    Agg(Kind),
    /// With the Id of the message event made of it.
    Batch(Priority, sm::Uuid),
}

impl Batches {
    /// Journals `ev` where it waits; its (epoch, sequence number) when journaled.
    pub(super) fn journal_hold(&mut self, prio: Priority, ev: &Event, h: Holder) -> Option<(u64, u64)> {
        let j = self.journal.as_mut()?;
        let seq = match h {
            Holder::Agg(kind) => {
                let seq = j.append(prio, ev, None);
                j.tracker.hold_agg(kind, seq);
                seq
            }
            Holder::Batch(p, id) => {
                let seq = j.append(prio, ev, Some(id));
                j.tracker.hold_batch(p, seq);
                seq
            }
        };
        Some((j.epoch, seq))
    }

    /// `prio`'s messages went to `sink`.
    pub(super) fn journal_flushed(&mut self, prio: Priority, sink: &Sink) {
        let Some(j) = &mut self.journal else { return };
        let (to, durable) = match sink {
            Sink::DryRun(_) => (Flushed::Done, None),
            Sink::Mqtt(p) => (Flushed::Spooling(self.last_ticket), Some(p.durable_through())),
            Sink::Held(_) => (Flushed::Held, None),
        };
        j.tracker.batch_flushed(prio, to);
        j.update(durable);
    }
}

impl Batches {
    /// Tells the journal how far the spool made its messages durable, so
    /// the watermark follows the spool within a tick rather than waiting
    /// for the next flush (a kill in between would deliver those events
    /// twice after the restart).
    pub(super) fn journal_durable(&mut self, sink: &Sink) {
        let (Some(j), Sink::Mqtt(p)) = (&mut self.journal, sink) else { return };
        if j.tracker.spooling() {
            j.update(Some(p.durable_through()));
        }
        p.forget_covered_below(j.epoch, j.committed_watermark());
    }
}

impl Pipeline {
    /// Delivers what the journal holds from an earlier run (and reports
    /// what it lost), waits until the spool has it, then starts a new
    /// journal. Only with a spool (not in a dry run).
    pub(super) async fn start_journal(&mut self) {
        let Some(cfg) = self.settings.journal_config() else { return };
        if !matches!(self.sink, Sink::Mqtt(_)) {
            return;
        }
        let Sink::Mqtt(p) = &self.sink else { return };
        let started = std::time::Instant::now();
        // What the spool already holds is not replayed (journal/cover.rs).
        let r = crate::journal::read(&cfg.dir, cfg.size, &p.covered());
        for p in r.problems.iter().take(10) {
            tracing::warn!(dir = %cfg.dir.display(), "journal: {p}");
        }
        let replayed = r.events.len();
        if replayed > 0 || r.lost != [0, 0] {
            let mut per_queue = [0u64; 2];
            let epoch = r.epoch.unwrap_or_default();
            for (n, ((prio, ev), seq)) in r.events.into_iter().zip(r.seqs).enumerate() {
                per_queue[crate::journal::format::slot(prio)] += 1;
                // Under the old journal's epoch: a kill before the new journal
                // starts does not replay these a second time.
                if let Some(key) = self.batches.push_keyed(prio, ev, 1, &mut self.sink) {
                    self.batches.cover(key, |c| c.add(epoch, seq));
                }
                // A full journal is tens of thousands of events: in steps the
                // spool's queue takes without dropping.
                if n % REPLAY_STEP == REPLAY_STEP - 1 {
                    self.batches.flush_all(&mut self.sink);
                    self.wait_spooled(Duration::from_secs(10)).await;
                }
            }
            for (q, queue) in [(0, sm::Queue::High), (1, sm::Queue::Low)] {
                if r.lost[q] == 0 {
                    continue;
                }
                let mut extra = sm::ExtraDetails::default();
                extra.insert("Reason".into(), "agent stopped before journaling them (killed)".into());
                extra.insert("Source".into(), "journal".into());
                extra.insert("Replayed".into(), per_queue[q].to_string());
                let stats = sm::Event::new(sm::DroppedEventsStatistics {
                    queue,
                    collected_events: r.lost[q] + per_queue[q],
                    dropped_events: r.lost[q],
                    extra_details: extra,
                });
                // Urgent: the record of what came just before a kill.
                self.batches.push(Priority::High, stats, &mut self.sink);
            }
            self.batches.flush_all(&mut self.sink);
            // The new journal replaces the old one: only once the spool has it all.
            let settled = self.wait_spooled(Duration::from_secs(10)).await;
            tracing::warn!(
                replayed,
                spooled = r.spooled,
                took_ms = started.elapsed().as_millis() as u64,
                lost_high = r.lost[0],
                lost_low = r.lost[1],
                damaged = r.damaged,
                "journal: delivering again what an earlier run had not spooled"
            );
            if !settled {
                tracing::error!(
                    "journal: the spool did not take the replayed events in time; kept for the next start"
                );
                return;
            }
        }
        match Journal::start(&cfg) {
            Ok(j) => {
                tracing::info!(dir = %cfg.dir.display(), interval = ?cfg.interval, size = cfg.size, "journal started");
                self.batches.journal = Some(j);
            }
            Err(e) => tracing::error!(
                dir = %cfg.dir.display(),
                "journal not started ({e}): events waiting in memory are lost, uncounted, if the agent is killed"
            ),
        }
    }

    /// Waits until the spool has settled every message submitted so far.
    async fn wait_spooled(&self, limit: Duration) -> bool {
        let Sink::Mqtt(p) = &self.sink else { return true };
        let deadline = tokio::time::Instant::now() + limit;
        while p.durable_through() < self.batches.last_ticket {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// At a clean stop, after everything was flushed: once the spool has it,
    /// the journal is compacted to nothing and stopped.
    pub(super) async fn stop_journal(&mut self) -> Option<JournalStats> {
        self.batches.journal.as_ref()?;
        self.wait_spooled(Duration::from_secs(5)).await;
        let durable = match &self.sink {
            Sink::Mqtt(p) => Some(p.durable_through()),
            _ => None,
        };
        let j = self.batches.journal.take()?;
        Some(j.close(durable))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::{
        cli::{Cli, Command},
        config::ConfigError,
        daemon::RunSettings,
        journal::JournalConfig,
    };

    fn resolve(args: &[&str]) -> Result<RunSettings, ConfigError> {
        let cli = Cli::try_parse_from([&["shrike", "run"], args].concat()).expect("valid flags");
        match cli.command {
            Command::Run(a) => RunSettings::resolve(&a),
            _ => unreachable!("run"),
        }
    }

    #[test]
    fn journal_and_reconnect_settings() {
        let hub = ["--hub", "mqtt://127.0.0.1:1883", "--spool-dir", "/q", "--sdk-socket", "off"];
        let s = resolve(&hub).unwrap();
        assert_eq!(
            s.journal_config(),
            Some(JournalConfig {
                dir: "/q/journal".into(),
                interval: std::time::Duration::from_millis(200),
                size: 16 << 20
            })
        );
        assert_eq!(s.mqtt.as_ref().unwrap().reconnect_max, std::time::Duration::from_secs(4));
        let s = resolve(&[&hub[..], &["--journal-size", "0", "--reconnect-max", "10s"]].concat()).unwrap();
        assert_eq!(s.journal_config(), None, "0 turns it off");
        assert_eq!(s.mqtt.unwrap().reconnect_max, std::time::Duration::from_secs(10));
        assert_eq!(resolve(&["--dry-run"]).unwrap().journal_config(), None, "no spool, no journal");
        for (flag, value) in
            [("--journal-size", "1000"), ("--journal-interval", "2s"), ("--reconnect-max", "100ms")]
        {
            let err = resolve(&[&hub[..], &[flag, value]].concat()).unwrap_err();
            assert!(err.to_string().contains(&flag[2..].replace('-', "_")), "{flag} {value}: {err}");
        }
    }
}
