//! SIGHUP: new settings applied in place, the probes stay.

use std::{collections::BTreeSet, time::Duration};

use tokio::time::Instant;

use super::{
    RunArgs,
    pipeline::{Pipeline, new_aggregator},
    publisher::PublisherSetup,
    settings::RunSettings,
    timers::every,
};
use crate::{config::KindPriority, detect::Detect, events::Kind};

impl Pipeline {
    /// SIGHUP: reads the settings again (the --config file; flags keep
    /// precedence) and the rule files, and applies them. Invalid settings or
    /// rules change nothing: the running settings and detection stay.
    /// The remote configuration's layer (`remote`) stays over the file.
    pub(super) async fn reload(
        &mut self,
        args: &RunArgs,
        remote: Option<&crate::remote::Layer>,
        ebpf: &mut aya::Ebpf,
    ) {
        // What the running stage learnt is on disk before the new one loads
        // it (the baseline's profile; a reset on disk is taken over here).
        self.detect.persist();
        let built = RunSettings::resolve_layered(args, remote)
            .and_then(|s| s.collected().map(|_| s))
            .and_then(|s| Ok((Detect::new(&s.detect)?, s)));
        match built {
            Ok((detect, new)) => {
                self.replace_detect(detect, &new);
                self.apply_reload(new, ebpf).await;
            }
            // One line (journald): rule errors come one per line.
            Err(e) => tracing::error!(
                "configuration not reloaded, the running settings stay: {}",
                e.to_string().replace('\n', "; ")
            ),
        }
    }

    /// The rebuilt detection stage takes over (the old one's windows and
    /// state are dropped with it).
    pub(super) fn replace_detect(&mut self, detect: Detect, new: &RunSettings) {
        let blind: Vec<&str> =
            detect.kinds().into_iter().filter(|k| !self.attachable.contains(k)).map(Kind::name).collect();
        if !blind.is_empty() {
            tracing::warn!(
                kinds = ?blind,
                "detection does not see these kinds: their probes are not attached; restart shrike to attach them"
            );
        }
        tracing::info!(
            enabled = new.detect.enabled,
            detectors_changed = new.detect != self.settings.detect,
            rules = detect.stats.rules_loaded,
            rules_skipped = ?detect.stats.rules_skipped,
            "detection rebuilt"
        );
        self.detect = detect;
    }

    /// Applies what can change without touching the probes: priorities of the
    /// kinds whose probes are attached, aggregation, intervals, message
    /// format, and the hub and spool (a new publisher). Logs what changed.
    pub(super) async fn apply_reload(&mut self, mut new: RunSettings, ebpf: &mut aya::Ebpf) {
        let now = Instant::now();
        let mut changes: Vec<String> = Vec::new();

        let mut need_restart = Vec::new();
        for kind in Kind::ALL {
            let (was, is) = (self.settings.priority[&kind], new.priority[&kind]);
            if is != KindPriority::Off && !self.attachable.contains(&kind) {
                need_restart.push(kind.name());
                new.priority.insert(kind, KindPriority::Off);
            } else if was != is {
                changes.push(format!("priority.{} {} -> {}", kind.name(), was.name(), is.name()));
            }
        }
        if !need_restart.is_empty() {
            tracing::warn!(
                kinds = ?need_restart,
                "not collected: their probes are not attached; restart shrike to collect them"
            );
        }
        let high = |s: &RunSettings| -> BTreeSet<Kind> {
            Kind::ALL.into_iter().filter(|k| s.priority[k] == KindPriority::High).collect()
        };
        if high(&self.settings) != high(&new) {
            // Records of high kinds wake the reader at once; the others wait
            // for its poll timer (milliseconds): only latency depends on this.
            if let Err(e) = set_wake_kinds(ebpf, &high(&new)) {
                tracing::warn!("cannot update the kinds that wake the reader: {e}");
            }
        }

        for kind in Kind::EVENTS {
            let (was, is) = (self.settings.aggregation[&kind], new.aggregation[&kind]);
            if was != is {
                changes.push(format!("aggregation.{} {} -> {}", kind.name(), agg_name(was), agg_name(is)));
            }
            let on = new.priority[&kind] != KindPriority::Off;
            let wanted = is.filter(|_| on);
            let unchanged = was == is && self.settings.priority[&kind] == new.priority[&kind];
            if self.aggs.contains_key(&kind) {
                if unchanged {
                    continue;
                }
                // The hits so far go out first, in the kind's old queue; a
                // fresh aggregator takes the new settings.
                self.flush_aggregate(kind);
                self.aggs.remove(&kind);
                self.agg_due.remove(&kind);
            }
            if let Some(iv) = wanted {
                self.aggs.insert(kind, new_aggregator(new.priority[&kind]));
                self.agg_due.insert(kind, (iv, now + iv));
            }
        }

        for (name, was, is, timer) in [
            ("high_interval", self.settings.high_interval, new.high_interval, &mut self.timers.high),
            ("low_interval", self.settings.low_interval, new.low_interval, &mut self.timers.low),
            (
                "snapshot_interval",
                self.settings.snapshot_interval,
                new.snapshot_interval,
                &mut self.timers.snapshots,
            ),
            ("health_interval", self.settings.health_interval, new.health_interval, &mut self.timers.health),
        ] {
            if was != is {
                changes.push(format!("{name} {was:?} -> {is:?}"));
                *timer = every(is, now + is);
            }
        }

        let old_hub = PublisherSetup::of(&self.settings);
        let new_hub = PublisherSetup::of(&new);
        let hub_changed = match (&old_hub, &new_hub) {
            (Some(a), Some(b)) => !a.same(b),
            _ => false,
        };
        let format_changed =
            self.settings.max_message_size != new.max_message_size || self.settings.gzip != new.gzip;
        if hub_changed || format_changed {
            // Messages being filled were made for the running publisher and
            // limits: they go out first.
            self.batches.flush_all(&mut self.sink);
        }
        if let (true, Some(old_hub), Some(new_hub)) = (hub_changed, old_hub, new_hub) {
            match self.swap_publisher(&old_hub, &new_hub).await {
                Ok(()) => changes.extend(old_hub.changes(&new_hub)),
                Err(e) => {
                    tracing::error!("cannot apply the new hub settings ({e}): the old ones stay");
                    // The message format belongs to the publisher that runs.
                    new.mqtt = self.settings.mqtt.clone();
                    new.hub_identity = self.settings.hub_identity.clone();
                    new.spool_dir = self.settings.spool_dir.clone();
                    new.spool_size = self.settings.spool_size;
                    new.max_message_size = self.settings.max_message_size;
                    new.gzip = self.settings.gzip;
                }
            }
        }
        if self.settings.max_message_size != new.max_message_size {
            changes.push(format!(
                "max_message_size {} -> {}",
                self.settings.max_message_size, new.max_message_size
            ));
        }
        if self.settings.gzip != new.gzip {
            changes.push(format!("gzip {} -> {}", self.settings.gzip, new.gzip));
        }
        if hub_changed || format_changed {
            // Empty (flushed above): new messages are made with the new limits.
            self.batches.builders.clear();
            self.batches.max = new.max_message_size;
            self.batches.gzip = new.gzip;
        }

        if new.detect.watch != self.settings.detect.watch {
            // File integrity's watched paths: the kernel's prefixes are
            // rewritten in place (the probes stay); the process table's exact
            // filter follows (daemon loop, `procs.set_watch`).
            let applied = new
                .detect
                .watch
                .kernel_prefixes()
                .map_err(|e| e.to_string())
                .and_then(|p| crate::probes::set_watch(ebpf, &p).map_err(|e| e.to_string()));
            match applied {
                Ok(()) => changes.push(format!(
                    "watch {:?} -> {:?}",
                    self.settings.detect.watch.paths(),
                    new.detect.watch.paths()
                )),
                Err(e) => {
                    tracing::error!("cannot apply the new watch list ({e}): the old one stays");
                    new.detect.watch = self.settings.detect.watch.clone();
                }
            }
        }

        if new.agent_id_file != self.settings.agent_id_file {
            tracing::warn!(
                file = %new.agent_id_file.display(),
                "agent_id_file changed: the agent id is read at start; restart shrike to use it"
            );
            new.agent_id_file = self.settings.agent_id_file.clone();
        }
        self.settings = new;
        let changes = if changes.is_empty() { "none".to_owned() } else { changes.join(", ") };
        tracing::info!(%changes, "configuration reloaded");
    }
}

pub(super) fn agg_name(a: Option<Duration>) -> String {
    a.map_or_else(|| "off".to_owned(), |d| format!("{d:?}"))
}

/// Sets the kinds whose records wake the reader at once in the kernel's
/// configuration (the rest is left as loaded).
pub(super) fn set_wake_kinds(ebpf: &mut aya::Ebpf, kinds: &BTreeSet<Kind>) -> Result<(), String> {
    let map = ebpf.map_mut(shrike_common::names::CONFIG).ok_or("no CONFIG map")?;
    let mut cfg: aya::maps::Array<_, shrike_common::Config> =
        aya::maps::Array::try_from(map).map_err(|e| e.to_string())?;
    let mut c = cfg.get(&0, 0).map_err(|e| e.to_string())?;
    c.wake_kinds = kinds.iter().fold(0, |m, k| m | (1 << k.raw()));
    cfg.set(0, c, 0).map_err(|e| e.to_string())
}
