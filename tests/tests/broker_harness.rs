//! The shared broker harness itself (`shrike_tests::broker`), against the
//! real mosquitto every test crate and `cargo xtask soak` use: passwords
//! and ACLs are enforced, TLS with and without a client certificate, the
//! broker's log on `$SYS/broker/log/#`, and a kill and restart on the same
//! ports that the persistent subscriber survives.

use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use shrike_tests::{
    TempDir,
    broker::{Auth, BrokerConfig, Subscriber, available, make_pki},
    marker,
};

/// Connects, publishes one QoS 1 message and reports how it went:
/// Ok(()) once the PUBACK came, Err(why) on a refused connection.
fn publish(port: u16, user: Option<(&str, &str)>, topic: &str, payload: &str) -> Result<(), String> {
    let mut o = MqttOptions::new(marker("pub"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = user {
        o.set_credentials(u, p);
    }
    publish_with(o, topic, payload)
}

fn publish_with(o: MqttOptions, topic: &str, payload: &str) -> Result<(), String> {
    let (client, mut conn) = Client::new(o, 8);
    client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                let _ = client.disconnect();
                return Ok(());
            }
            Ok(Err(e)) => return Err(e.to_string()),
            _ => {}
        }
    }
    Err("no PUBACK".into())
}

fn received(sub: &Subscriber, payload: &str, wait: Duration) -> bool {
    sub.wait_until(wait, |m| m.iter().any(|r| r.payload == payload.as_bytes()))
}

#[test]
fn passwords_acls_tls_log_topic_and_restarts() {
    if !available("passwords_acls_tls_log_topic_and_restarts") {
        return;
    }
    let dir = TempDir::new("broker-harness");
    let pki = make_pki(&dir.path().join("pki"));
    let mut cfg = BrokerConfig::new(dir.path());
    cfg.user("agent", "right").acl("user agent\ntopic write shrike/#\n").log_to_topic();
    let pw = cfg.listener(Auth::Password);
    let acl = cfg.listener(Auth::PasswordAcl);
    let tls = cfg.tls_listener(&pki, false, Auth::Anonymous);
    let mtls = cfg.tls_listener(&pki, true, Auth::Anonymous);
    let mut broker = cfg.start();
    assert_eq!(broker.ports().len(), 5);
    let sub = Subscriber::start(broker.port, "#");
    let log_sub = Subscriber::start(broker.port, "$SYS/broker/log/#");

    // Passwords.
    assert!(publish(pw, Some(("agent", "wrong")), "shrike/a", "x").is_err(), "a wrong password is refused");
    assert!(publish(pw, None, "shrike/a", "x").is_err(), "no password is refused");
    let m = marker("pw");
    publish(pw, Some(("agent", "right")), "shrike/a", &m).expect("the right password");
    assert!(received(&sub, &m, Duration::from_secs(5)));

    // The ACL: acknowledged (MQTT 3.1.1) but not delivered outside shrike/#.
    let denied = marker("denied");
    publish(acl, Some(("agent", "right")), "elsewhere/a", &denied).expect("connected");
    let allowed = marker("allowed");
    publish(acl, Some(("agent", "right")), "shrike/b", &allowed).expect("connected");
    assert!(received(&sub, &allowed, Duration::from_secs(5)));
    assert!(!received(&sub, &denied, Duration::from_millis(500)), "the ACL let a denied publish through");
    // Changed and re-read while running.
    broker.set_acl("user agent\ntopic write elsewhere/#\n");
    std::thread::sleep(Duration::from_millis(300));
    let now_ok = marker("now-allowed");
    publish(acl, Some(("agent", "right")), "elsewhere/b", &now_ok).expect("connected");
    assert!(received(&sub, &now_ok, Duration::from_secs(5)), "the new ACL was not applied");

    // TLS (mosquitto_pub): the harness's CA verifies the server; mutual TLS
    // needs the client's certificate.
    let tls_pub = |port: u16, client_cert: bool, payload: &str| {
        let mut c = std::process::Command::new("mosquitto_pub");
        c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", "shrike/tls", "-m", payload])
            .arg("--cafile")
            .arg(pki.ca());
        if client_cert {
            c.arg("--cert").arg(pki.client_cert()).arg("--key").arg(pki.client_key());
        }
        c.stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
    };
    let m = marker("tls");
    assert!(tls_pub(tls, false, &m), "TLS publish failed");
    assert!(received(&sub, &m, Duration::from_secs(5)));
    let refused = marker("mtls-refused");
    assert!(!tls_pub(mtls, false, &refused), "mTLS without a certificate was accepted");
    let m = marker("mtls");
    assert!(tls_pub(mtls, true, &m), "mutual TLS publish failed");
    assert!(received(&sub, &m, Duration::from_secs(5)));

    // The broker's log on its topic: the refused password is there.
    let logged = log_sub.wait_until(Duration::from_secs(5), |m| {
        m.iter().any(|r| String::from_utf8_lossy(&r.payload).contains("not authorised"))
    });
    assert!(logged, "no 'not authorised' on $SYS/broker/log/#: {:?}", log_sub.messages().len());

    // Killed and restarted on the same ports; the subscriber is back.
    let pid = broker.pid();
    let subscribed = sub.subscriptions();
    broker.kill();
    assert!(!broker.running());
    broker.restart();
    assert_ne!(broker.pid(), pid);
    assert!(
        sub.wait_subscribed_after(subscribed, Duration::from_secs(10)),
        "the subscriber did not reconnect"
    );
    let m = marker("after-restart");
    let ok = shrike_tests::broker::poll_until(Duration::from_secs(10), || {
        publish(pw, Some(("agent", "right")), "shrike/c", &m).is_ok()
    });
    assert!(ok, "no publish after the restart");
    assert!(received(&sub, &m, Duration::from_secs(10)), "the subscriber did not come back");
}
