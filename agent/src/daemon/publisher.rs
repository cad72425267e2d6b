//! The publisher's lifecycle: start, swap on a reload, retry while messages are held, stop.

use std::{path::PathBuf, time::Duration};

use tokio::time::Instant;

use super::{
    batches::{Held, Sink},
    pipeline::Pipeline,
    settings::RunSettings,
};
use crate::publish::{
    azure::ConnectionString,
    mqtt::{Publisher, PublisherStats, Settings},
    spool::{self, Spool, SpoolError},
};

/// The drop and failure counters of publishers a reload replaced: health
/// events report totals over the agent's run.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Retired {
    pub(super) dropped_low: u64,
    pub(super) dropped_high: u64,
    pub(super) failed: u64,
    pub(super) corrupt: u64,
    pub(super) disk_full: u64,
    pub(super) queue_full: u64,
}

impl Retired {
    /// Events, not messages, for the drop statistics.
    pub(super) fn add(&mut self, st: &PublisherStats) {
        self.dropped_low += st.spool.dropped_low_events;
        self.dropped_high += st.spool.dropped_high_events;
        self.failed += failed(st);
        self.corrupt += st.spool.corrupt;
        self.disk_full += st.spool.disk_full;
        self.queue_full += st.spool.queue_full;
    }
}

/// Messages that failed: not taken, over the size limit, dropped by the
/// spool (full, file system full, queue full, write errors) or corrupt.
pub(super) fn failed(st: &PublisherStats) -> u64 {
    st.submit_errors + st.oversize_dropped + st.spool_dropped + st.spool.corrupt
}

/// What a publisher runs with: a reload that changes any of it restarts the
/// publisher.
#[derive(Clone)]
pub(super) struct PublisherSetup {
    pub(super) mqtt: Settings,
    pub(super) identity: Option<ConnectionString>,
    pub(super) spool_dir: PathBuf,
    pub(super) spool_size: u64,
}

impl PublisherSetup {
    /// None with --dry-run.
    pub(super) fn of(s: &RunSettings) -> Option<PublisherSetup> {
        Some(PublisherSetup {
            mqtt: s.mqtt.clone()?,
            identity: s.hub_identity.clone(),
            spool_dir: s.spool_dir.clone(),
            spool_size: s.spool_size,
        })
    }

    /// The MQTT settings without the SAS token, which is made afresh at every
    /// resolve (a new expiry): `identity` stands for it.
    pub(super) fn comparable(&self) -> Settings {
        match self.mqtt.credentials_refresh {
            Some(_) => Settings { password: None, credentials_refresh: None, ..self.mqtt.clone() },
            None => self.mqtt.clone(),
        }
    }

    pub(super) fn same(&self, o: &PublisherSetup) -> bool {
        self.comparable() == o.comparable()
            && self.mqtt.credentials_refresh.as_ref().map(|r| r.every)
                == o.mqtt.credentials_refresh.as_ref().map(|r| r.every)
            && self.identity == o.identity
            && self.spool_dir == o.spool_dir
            && self.spool_size == o.spool_size
    }

    /// What differs, for the log (never a secret).
    pub(super) fn changes(&self, new: &PublisherSetup) -> Vec<String> {
        let (a, b) = (self.comparable(), new.comparable());
        let mut out = Vec::new();
        if (&a.host, a.port) != (&b.host, b.port) {
            out.push(format!("hub {}:{} -> {}:{}", a.host, a.port, b.host, b.port));
        }
        if a.client_id != b.client_id {
            out.push(format!("client_id {} -> {}", a.client_id, b.client_id));
        }
        if a.topic != b.topic {
            out.push(format!("topic {} -> {}", a.topic, b.topic));
        }
        if a.username != b.username || a.password != b.password || self.identity != new.identity {
            out.push("credentials".into());
        }
        if a.tls != b.tls {
            out.push("tls".into());
        }
        if a.keep_alive != b.keep_alive {
            out.push(format!("keep_alive {:?} -> {:?}", a.keep_alive, b.keep_alive));
        }
        if self.spool_dir != new.spool_dir {
            out.push(format!("spool_dir {} -> {}", self.spool_dir.display(), new.spool_dir.display()));
        }
        if self.spool_size != new.spool_size {
            out.push(format!("spool_size {} -> {}", self.spool_size, new.spool_size));
        }
        out
    }

    /// Opens the spool: the directory locked, checked writable, what an
    /// earlier run left indexed. A directory that cannot be used, or that
    /// another agent holds, is a bad `spool_dir` (exit 2 at start).
    pub(super) fn open_spool(&self) -> Result<Spool, crate::config::ConfigError> {
        let opts = spool::Options::new(self.spool_size, self.mqtt.max_message_size);
        let spool = Spool::open(&self.spool_dir, opts).map_err(|e| match e {
            SpoolError::Unusable(_, why) => crate::config::ConfigError::Invalid {
                setting: "spool_dir".into(),
                reason: format!("{}: {why}", self.spool_dir.display()),
            },
            other => {
                crate::config::ConfigError::Invalid { setting: "spool_dir".into(), reason: other.to_string() }
            }
        })?;
        // A dropped health message's counts go into the next one.
        spool.on_health_dropped(super::health::carry_dropped);
        Ok(spool)
    }

    /// Opens the spool and starts a publisher on it.
    pub(super) fn start(&self) -> anyhow::Result<Publisher> {
        let spool = self.open_spool()?;
        self.start_on(spool)
    }

    pub(super) fn start_on(&self, spool: Spool) -> anyhow::Result<Publisher> {
        let waiting = spool.len();
        let p = Publisher::start(self.mqtt.clone(), spool)?;
        tracing::info!(dir = %self.spool_dir.display(), waiting, "spool opened");
        Ok(p)
    }
}

/// Stops a publisher, giving it a moment (at most `limit`, while it is
/// connected) to hand over what is spooled; whatever is not acknowledged
/// stays in the spool for the next publisher on that directory. Its stats
/// before it stopped.
pub(super) async fn stop_publisher(p: Publisher, limit: Duration) -> PublisherStats {
    let deadline = Instant::now() + limit;
    while p.stats().pending > 0 && p.stats().connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = p.stats();
    p.shutdown().await;
    stats
}

/// How long a held sink waits between attempts to start a publisher.
pub(super) const PUBLISHER_RETRY: Duration = Duration::from_secs(5);

impl Pipeline {
    /// Replaces the publisher. The new settings are checked, and a new spool
    /// directory opened, before the running publisher stops: a mistake there
    /// leaves it running. What the old one did not deliver stays in its spool
    /// (the new publisher sends it when the directory is the same). If the new
    /// one then fails to start, the old settings start again; if even they
    /// cannot, messages are held in memory and starting them is retried.
    pub(super) async fn swap_publisher(
        &mut self,
        old: &PublisherSetup,
        new: &PublisherSetup,
    ) -> Result<(), String> {
        new.mqtt.check().map_err(|e| e.to_string())?;
        let mut spool = if new.spool_dir == old.spool_dir {
            None
        } else {
            Some(new.open_spool().map_err(|e| e.to_string())?)
        };
        let held = match std::mem::replace(&mut self.sink, Sink::Held(Held::new(old.spool_size))) {
            Sink::Mqtt(p) => {
                let stats = stop_publisher(p, Duration::from_secs(5)).await;
                tracing::info!(?stats, "publisher stopped for the new hub settings");
                self.batches.retired.add(&stats);
                Held::new(old.spool_size)
            }
            Sink::Held(held) => held,
            Sink::DryRun(out) => {
                self.sink = Sink::DryRun(out);
                return Ok(());
            }
        };
        let started = match spool.take() {
            Some(spool) => new.start_on(spool),
            None => new.start(),
        };
        match started {
            Ok(p) => {
                self.install(p, held);
                Ok(())
            }
            Err(e) => {
                self.sink = Sink::Held(held);
                // The settings still name the old hub: start it again.
                self.retry_publisher();
                Err(format!("{e:#}"))
            }
        }
    }

    /// While messages are held: starts the running settings' publisher and
    /// hands it the messages.
    pub(super) fn retry_publisher(&mut self) {
        if !matches!(self.sink, Sink::Held(_)) {
            return;
        }
        let Some(setup) = PublisherSetup::of(&self.settings) else { return };
        match setup.start() {
            Ok(p) => {
                if let Sink::Held(held) = std::mem::replace(&mut self.sink, Sink::DryRun(std::io::stdout())) {
                    self.install(p, held);
                }
            }
            Err(e) => {
                let held = match &self.sink {
                    Sink::Held(h) => h.msgs.len(),
                    _ => 0,
                };
                tracing::error!(held, "cannot start the publisher: {e:#}; retrying in {PUBLISHER_RETRY:?}");
            }
        }
    }

    /// Makes `p` the sink and spools what was held.
    pub(super) fn install(&mut self, p: Publisher, held: Held) {
        // The stopped publisher's spool wrote what it had queued.
        if let Some(j) = &mut self.batches.journal {
            j.tracker.durable_through(u64::MAX);
        }
        // Tickets start again with each spool.
        self.batches.last_ticket = 0;
        for (prio, msg, meta) in held.msgs {
            match p.submit_with(prio, &msg, meta) {
                Ok(ticket) => self.batches.last_ticket = ticket,
                Err(e) => {
                    self.batches.message_dropped(prio, &msg, meta, format_args!("message not spooled: {e}"))
                }
            }
        }
        if let Some(j) = &mut self.batches.journal {
            j.tracker.held_flushed(crate::journal::Flushed::Spooling(self.batches.last_ticket));
        }
        self.sink = Sink::Mqtt(p);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::publish::mqtt::CredentialsRefresh;

    #[test]
    fn publisher_setups_compare_without_fresh_sas_tokens() {
        let refresh = |n: u32| CredentialsRefresh {
            every: Duration::from_secs(3000),
            make: Arc::new(move || format!("token {n}")),
        };
        let setup = |password: &str, refresh: Option<CredentialsRefresh>, key: &str| PublisherSetup {
            mqtt: Settings {
                username: Some("hub/dev".into()),
                password: Some(password.into()),
                credentials_refresh: refresh,
                ..Settings::default()
            },
            identity: Some(
                format!("HostName=h.azure-devices.net;DeviceId=dev;SharedAccessKey={key}").parse().unwrap(),
            ),
            spool_dir: "/s".into(),
            spool_size: 1 << 20,
        };
        // Each resolve makes a new token and a new token maker.
        let a = setup("SharedAccessSignature se=1", Some(refresh(1)), "a2V5");
        let b = setup("SharedAccessSignature se=2", Some(refresh(2)), "a2V5");
        assert!(a.same(&b), "a fresh SAS token is not a change");
        let rekeyed = setup("SharedAccessSignature se=2", Some(refresh(2)), "b3RoZXI=");
        assert!(!a.same(&rekeyed));
        assert_eq!(a.changes(&rekeyed), ["credentials"]);

        let plain = setup("secret", None, "a2V5");
        let other = setup("secret2", None, "a2V5");
        assert!(!plain.same(&other));
        assert_eq!(plain.changes(&other), ["credentials"]);
        let mut moved = plain.clone();
        moved.mqtt.topic = "t2".into();
        moved.spool_dir = "/s2".into();
        assert_eq!(plain.changes(&moved), ["topic shrike/events -> t2", "spool_dir /s -> /s2"]);
        assert!(plain.same(&plain.clone()));
    }
}
