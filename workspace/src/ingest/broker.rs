//! The broker side: one task owns rumqttc's event loop (it must be polled,
//! and reconnects by being polled on), subscribes at every connection to
//! `$share/<group>/<topic>` at QoS 1 (and to the broker's log), hands each
//! publish to the writer, and acknowledges it only when the writer says its
//! batch is committed (manual acks). So a message is either in the database
//! or redelivered by the broker: never lost, and stored once thanks to its
//! unique key.
//!
//! Packet ids belong to a connection: an ack that comes back after a
//! reconnect is for a packet of the old connection and is not sent (the
//! broker redelivers that message; the database drops the repeat).

use std::{collections::VecDeque, path::Path, sync::Arc, time::Duration};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};

use crate::{
    analytics::broker_log,
    config::{BrokerSettings, Tls},
    metrics::Metrics,
};

/// What the broker task hands the writer.
pub enum Received {
    /// A message of the agents' topic: (connection number, packet id).
    Message { conn: u64, pkid: u16, topic: String, body: bytes::Bytes, received: String },
    /// A broker log line already parsed.
    Log(crate::store::rows::BrokerLogRow),
}

/// Acks the writer sends back after a commit: (connection number, packet id).
pub type Acks = Vec<(u64, u16)>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("reading {what} {}: {reason}", path.display())]
    Pem { what: &'static str, path: std::path::PathBuf, reason: String },
    #[error("setting up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

fn tls_config(tls: &Tls) -> Result<Arc<rustls::ClientConfig>, BrokerError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let pem = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| BrokerError::Pem { what, path, reason: e.to_string() }
    };
    let certs = |what, path: &Path| -> Result<Vec<CertificateDer<'static>>, BrokerError> {
        let c = CertificateDer::pem_file_iter(path)
            .map_err(pem(what, path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem(what, path))?;
        if c.is_empty() {
            return Err(BrokerError::Pem { what, path: path.into(), reason: "no certificate in it".into() });
        }
        Ok(c)
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in certs("CA file", &tls.ca_file)? {
        roots.add(c)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certs("client certificate", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(pem("client key", key))?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Checks the settings (TLS files) and builds the client's options.
pub fn options(b: &BrokerSettings, max_message_size: usize) -> Result<MqttOptions, BrokerError> {
    let mut o = MqttOptions::new(b.client_id.clone(), b.host.clone(), b.port);
    o.set_keep_alive(b.keep_alive)
        .set_clean_session(!b.persistent)
        .set_manual_acks(true)
        .set_max_packet_size(max_message_size + 64 * 1024, max_message_size + 64 * 1024);
    if let Some(user) = &b.username {
        o.set_credentials(user.clone(), b.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &b.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls_config(tls)?)));
    }
    Ok(o)
}

/// Runs until `stop` turns true; then returns once the acks of what the
/// writer committed are sent.
pub async fn run(
    b: BrokerSettings,
    opts: MqttOptions,
    tx: mpsc::Sender<Received>,
    mut acks: mpsc::UnboundedReceiver<Acks>,
    mut alerts: Option<mpsc::UnboundedReceiver<crate::store::rows::AlertRow>>,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(opts, 10_000);
    let filter = b.shared_filter();
    let mut conn: u64 = 0;
    let mut pending: VecDeque<(u64, u16)> = VecDeque::new();
    let mut log = broker_log::Parser::default();
    let mut backoff = Duration::from_millis(250);
    let mut errors_logged = 0u32;
    let mut stopping = false;
    // Dropped at stop: the writer then ends after its last batch and drops
    // its ack sender, which tells this task that every ack is in.
    let mut tx = Some(tx);
    let mut writer_done = false;
    loop {
        // Acks of this connection, in the order the writer committed them.
        while let Some(&(c, pkid)) = pending.front() {
            if c != conn {
                pending.pop_front();
                continue;
            }
            let mut p = Publish::new("", QoS::AtLeastOnce, Vec::new());
            p.pkid = pkid;
            if client.try_ack(&p).is_err() {
                break;
            }
            pending.pop_front();
        }
        if writer_done && pending.iter().all(|(c, _)| *c != conn) {
            // Let the event loop send what was queued, then say goodbye.
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while eventloop.poll().await.is_ok() {}
            })
            .await;
            return;
        }
        tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    conn += 1;
                    backoff = Duration::from_millis(250);
                    errors_logged = 0;
                    metrics.connected.store(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("connected to {}:{}, subscribing to {filter}", b.host, b.port);
                    if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        tracing::error!("subscribing to {filter}: {e}");
                    }
                    if b.broker_log && let Err(e) = client.try_subscribe(broker_log::FILTER, QoS::AtMostOnce) {
                        tracing::error!("subscribing to {}: {e}", broker_log::FILTER);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    if s.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                        tracing::error!("the broker refused a subscription (ACL?): {:?}", s.return_codes);
                    } else {
                        // From here on the broker routes messages to us
                        // (tests and the bench wait for this line).
                        tracing::info!("subscribed (packet {})", s.pkid);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let received = crate::time::now();
                    if p.topic.starts_with("$SYS/") {
                        if p.qos != QoS::AtMostOnce {
                            pending.push_back((conn, p.pkid));
                        }
                        if let (Some(row), Some(tx)) = (log.line(&p.topic, &p.payload, &received), &tx) {
                            let _ = tx.send(Received::Log(row)).await;
                        }
                    } else {
                        metrics.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        metrics.received_bytes.fetch_add(p.payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        metrics.pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let m = Received::Message { conn, pkid: p.pkid, topic: p.topic, body: p.payload, received };
                        // Waits when the writer is behind: the broker then
                        // holds the messages (QoS 1 window), nothing is lost.
                        match &tx {
                            Some(tx) if tx.send(m).await.is_ok() => {}
                            // Stopping: not acknowledged, so the broker
                            // hands it to another process of the group.
                            _ => {}
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.connected.store(0, std::sync::atomic::Ordering::Relaxed);
                    // One line per failure streak, then quiet until it connects.
                    if errors_logged < 3 {
                        tracing::warn!("broker {}:{}: {e}; reconnecting", b.host, b.port);
                        errors_logged += 1;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
            Some(a) = async { alerts.as_mut()?.recv().await }, if alerts.is_some() => {
                // QoS 1, queued in the client (sent, and resent after a
                // reconnect, by the event loop). A full queue (the broker
                // away for long) drops it, counted.
                let topic = b.publish_alerts.clone().unwrap_or_default();
                match client.try_publish(topic, QoS::AtLeastOnce, false, crate::analytics::published(&a)) {
                    Ok(()) => metrics.alerts_published.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!("publishing fleet alert {}: {e}", a.event_id);
                        metrics.alerts_publish_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    }
                };
            }
            a = acks.recv(), if !writer_done => match a {
                Some(a) => pending.extend(a),
                None => writer_done = true,
            },
            _ = stop.changed(), if !stopping => {
                stopping = true;
                tx = None;
            }
        }
    }
}
