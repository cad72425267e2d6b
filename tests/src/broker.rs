//! The one MQTT broker harness of every test crate (the agent's unit tests,
//! the integration tests, `cargo xtask soak`, the workspace): a real
//! mosquitto on loopback ports, started, stopped (SIGTERM, sessions saved),
//! killed (SIGKILL) and restarted on the same ports; users and passwords,
//! ACLs, TLS listeners with a test PKI made by openssl, the broker's own log
//! in a file and, on request, on `$SYS/broker/log/#`; and a QoS 1 subscriber
//! with a persistent session.
//!
//! ```no_run
//! use shrike_tests::broker::{Auth, BrokerConfig, Subscriber};
//! let dir = std::path::Path::new("/tmp/t");
//! let mut cfg = BrokerConfig::new(dir);
//! cfg.user("shrike", "secret").acl("user shrike\ntopic write shrike/#\n");
//! let pw = cfg.listener(Auth::PasswordAcl);
//! let broker = cfg.start();
//! let sub = Subscriber::start(broker.port, "shrike/#");
//! ```

use std::{
    io::Write,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Whether mosquitto is installed; without it a test is skipped with a
/// printed reason, except in CI (`CI` set), where that is a failure.
pub fn available(test: &str) -> bool {
    if Path::new(MOSQUITTO).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {MOSQUITTO} is missing (install the Debian package mosquitto)"
    );
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {MOSQUITTO} is not installed");
    false
}

/// Polls `f` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

// ---------------------------------------------------------------------------
// Configuration

/// Who may connect to a listener (`per_listener_settings true`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone, no password.
    Anonymous,
    /// The users of [`BrokerConfig::user`] only.
    Password,
    /// Those users, limited by the ACL of [`BrokerConfig::acl`].
    PasswordAcl,
}

/// Certificates made by [`make_pki`].
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

/// A broker to start: its listeners, users, ACL and log.
pub struct BrokerConfig {
    dir: PathBuf,
    /// The first listener: plain and anonymous, for subscribers.
    port: u16,
    listeners: String,
    ports: Vec<u16>,
    users: Vec<(String, String)>,
    acl: Option<String>,
    log_to_topic: bool,
    persistence: bool,
    extra: String,
}

impl BrokerConfig {
    /// A broker whose files go to `dir/broker`, with one plain anonymous
    /// listener on a free loopback port (`Broker::port`).
    pub fn new(dir: &Path) -> BrokerConfig {
        BrokerConfig {
            dir: dir.join("broker"),
            port: crate::free_port("127.0.0.1"),
            listeners: String::new(),
            ports: Vec::new(),
            users: Vec::new(),
            acl: None,
            log_to_topic: false,
            persistence: true,
            extra: String::new(),
        }
    }

    /// A user of the password file (listeners with [`Auth::Password`]).
    pub fn user(&mut self, name: &str, password: &str) -> &mut Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// The ACL file's text (listeners with [`Auth::PasswordAcl`]); see
    /// mosquitto.conf(5), e.g. `user shrike\ntopic write shrike/#\n`.
    pub fn acl(&mut self, text: &str) -> &mut Self {
        self.acl = Some(text.into());
        self
    }

    /// The broker's log also on `$SYS/broker/log/<level>` (`log_dest topic`).
    pub fn log_to_topic(&mut self) -> &mut Self {
        self.log_to_topic = true;
        self
    }

    /// Persistence (on by default): a subscriber's session and its queued
    /// messages survive a stop (SIGTERM); a SIGKILL loses what was not saved.
    pub fn persistence(&mut self, on: bool) -> &mut Self {
        self.persistence = on;
        self
    }

    /// Global configuration lines added as they are (`max_queued_messages 0`).
    pub fn global(&mut self, lines: &str) -> &mut Self {
        self.extra.push_str(lines);
        if !lines.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// A plain listener on a new loopback port; its port.
    pub fn listener(&mut self, auth: Auth) -> u16 {
        self.listener_with(auth, "")
    }

    /// A TLS listener with the server certificate of `pki`, requiring a
    /// client certificate signed by its CA when `client_cert`; its port.
    pub fn tls_listener(&mut self, pki: &Pki, client_cert: bool, auth: Auth) -> u16 {
        let conf = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {client_cert}\n",
            pki.ca().display(),
            pki.server_cert().display(),
            pki.server_key().display()
        );
        self.listener_with(auth, &conf)
    }

    /// A listener with more lines of its own (after `listener PORT 127.0.0.1`).
    pub fn listener_with(&mut self, auth: Auth, lines: &str) -> u16 {
        let port = crate::free_port("127.0.0.1");
        let auth_lines = match auth {
            Auth::Anonymous => "allow_anonymous true\n".to_string(),
            Auth::Password => {
                format!("allow_anonymous false\npassword_file {}\n", self.password_file().display())
            }
            Auth::PasswordAcl => format!(
                "allow_anonymous false\npassword_file {}\nacl_file {}\n",
                self.password_file().display(),
                self.acl_file().display()
            ),
        };
        self.listeners.push_str(&format!("listener {port} 127.0.0.1\n{auth_lines}{lines}"));
        if !lines.is_empty() && !lines.ends_with('\n') {
            self.listeners.push('\n');
        }
        self.ports.push(port);
        port
    }

    fn password_file(&self) -> PathBuf {
        self.dir.join("passwords")
    }

    fn acl_file(&self) -> PathBuf {
        self.dir.join("acl")
    }

    /// Writes the files and starts the broker; waits until every listener accepts.
    pub fn start(&self) -> Broker {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: install the Debian package mosquitto"
        );
        std::fs::create_dir_all(&self.dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", self.dir.display()));
        if !self.users.is_empty() {
            let _ = std::fs::remove_file(self.password_file());
            for (u, p) in &self.users {
                mosquitto_passwd(&self.password_file(), u, p);
            }
        }
        if let Some(acl) = &self.acl {
            std::fs::write(self.acl_file(), acl).unwrap();
            chmod(&self.acl_file(), 0o600);
        }
        let conf = self.dir.join("mosquitto.conf");
        // `user root`: started as root, mosquitto would switch to the user
        // `mosquitto`, which cannot read the test's files.
        let mut text = format!(
            "per_listener_settings true\nuser root\npersistence {}\npersistence_location {}/\n\
             log_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n",
            self.persistence,
            self.dir.display(),
            self.dir.join("mosquitto.log").display()
        );
        if self.log_to_topic {
            text.push_str("log_dest topic\nlog_type subscribe\nlog_type unsubscribe\n");
        }
        text.push_str(&self.extra);
        text.push_str(&format!("listener {} 127.0.0.1\nallow_anonymous true\n", self.port));
        text.push_str(&self.listeners);
        std::fs::write(&conf, text).unwrap();
        let mut ports = vec![self.port];
        ports.extend_from_slice(&self.ports);
        let mut b = Broker { dir: self.dir.clone(), conf, port: self.port, ports, child: None };
        b.restart();
        b
    }
}

// ---------------------------------------------------------------------------
// The broker

/// A running mosquitto with its config, persistence and log in its folder.
/// Stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Broker {
    dir: PathBuf,
    conf: PathBuf,
    /// The plain anonymous listener (subscribers).
    pub port: u16,
    ports: Vec<u16>,
    child: Option<Child>,
}

impl Broker {
    /// A broker with its anonymous listener and `extra` configuration lines
    /// appended as they are (more `listener`s, whose ports are `extra_ports`).
    pub fn start(dir: &Path, extra: &str, extra_ports: &[u16]) -> Broker {
        let mut cfg = BrokerConfig::new(dir);
        cfg.listeners.push_str(extra);
        if !extra.is_empty() && !extra.ends_with('\n') {
            cfg.listeners.push('\n');
        }
        cfg.ports.extend_from_slice(extra_ports);
        cfg.start()
    }

    /// Every listener's port, the anonymous one first.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The broker's folder (config, log, persistence, password and ACL files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log file's text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts it (again, on the same ports) and waits until every listener accepts.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        let ports = self.ports.clone();
        // A port just released by a killed broker may take a moment to bind.
        let up = poll_until(Duration::from_secs(10), || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("mosquitto exited ({st}); its log:\n{}", self.log());
            }
            ports.iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        assert!(up, "mosquitto does not listen on {ports:?}; its log:\n{}", self.log());
    }

    /// SIGTERM (mosquitto saves its sessions), waits for the exit.
    pub fn stop(&mut self) {
        self.end(libc::SIGTERM);
    }

    /// SIGKILL: a crash; what it had not saved is lost.
    pub fn kill(&mut self) {
        self.end(libc::SIGKILL);
    }

    fn end(&mut self, sig: i32) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let done = poll_until(Duration::from_secs(5), || matches!(child.try_wait(), Ok(Some(_))));
        if !done {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Replaces the ACL file and makes the running broker re-read it (SIGHUP).
    pub fn set_acl(&mut self, text: &str) {
        let f = self.dir.join("acl");
        std::fs::write(&f, text).unwrap();
        chmod(&f, 0o600);
        if let Some(c) = &self.child {
            // SAFETY: signals our own, not yet reaped, child.
            unsafe { libc::kill(c.id() as i32, libc::SIGHUP) };
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Adds a user to a mosquitto password file (created if missing).
pub fn mosquitto_passwd(file: &Path, user: &str, password: &str) {
    let mut cmd = Command::new("mosquitto_passwd");
    if !file.exists() {
        cmd.arg("-c");
    }
    crate::run_ok(cmd.arg("-b").arg(file).args([user, password]));
    chmod(file, 0o600);
}

/// CA `ca.pem`, server `server.pem`/`server.key` (SAN localhost and
/// 127.0.0.1), client `client.pem`/`client.key`, made with openssl in `dir`.
pub fn make_pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        crate::run_ok(Command::new("openssl").args(args).current_dir(dir));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=shrike-test-ca", "-days", "2"],
        ]
        .concat(),
    );
    for (name, ext) in [
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        openssl(
            &[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ]);
    }
    Pki { dir: dir.to_path_buf() }
}

// ---------------------------------------------------------------------------
// Subscriber

#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!("not JSON on {}: {e}: {}", self.topic, String::from_utf8_lossy(&self.payload))
        })
    }
}

#[derive(Default)]
struct SubState {
    msgs: Vec<Received>,
    subscribed: bool,
    /// SUBACKs received: one per connection (it subscribes on each).
    subacks: u64,
}

/// A QoS 1 subscriber with a persistent session (`clean_session = false`):
/// across a broker stop and restart it misses nothing published meanwhile.
pub struct Subscriber {
    client: Client,
    shared: Arc<(Mutex<SubState>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    pub fn start(port: u16, filter: &str) -> Subscriber {
        let id = crate::marker("sub");
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false)
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut connection) = Client::new(o, 16);
        let shared = Arc::new((Mutex::new(SubState::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            let client = client.clone();
            let filter = filter.to_string();
            // Detached: it ends at its next event after `stop` is set.
            std::thread::spawn(move || {
                for ev in connection.iter() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match ev {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let r = Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                at: Instant::now(),
                            };
                            shared.0.lock().unwrap().msgs.push(r);
                            shared.1.notify_all();
                        }
                        // Subscribed again on every connection: a broker
                        // killed before saving its sessions forgot us.
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            let mut st = shared.0.lock().unwrap();
                            st.subscribed = true;
                            st.subacks += 1;
                            drop(st);
                            shared.1.notify_all();
                        }
                        Ok(_) => {}
                        // The broker is away: rumqttc reconnects at the next poll.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            });
        }
        let s = Subscriber { client, shared, stop };
        let ok = s.wait(Duration::from_secs(10), |st| st.subscribed);
        assert!(ok, "the subscriber got no SUBACK from the broker on port {port}");
        s
    }

    fn wait(&self, limit: Duration, mut f: impl FnMut(&SubState) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut st = self.shared.0.lock().unwrap();
        loop {
            if f(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.shared.1.wait_timeout(st, (deadline - now).min(Duration::from_millis(100))).unwrap().0;
        }
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.0.lock().unwrap().msgs.clone()
    }

    /// How many times it subscribed (once per connection to the broker):
    /// after a broker restart, wait for this to grow before publishing what
    /// it must see, as a killed broker may have lost its session.
    pub fn subscriptions(&self) -> u64 {
        self.shared.0.lock().unwrap().subacks
    }

    /// Waits (at most `limit`) until it subscribed more than `n` times.
    pub fn wait_subscribed_after(&self, n: u64, limit: Duration) -> bool {
        self.wait(limit, |st| st.subacks > n)
    }

    /// How many messages were received so far.
    pub fn count(&self) -> usize {
        self.shared.0.lock().unwrap().msgs.len()
    }

    /// Runs `f` on the messages received so far (no copy).
    pub fn with_messages<R>(&self, f: impl FnOnce(&[Received]) -> R) -> R {
        f(&self.shared.0.lock().unwrap().msgs)
    }

    /// Waits (at most `limit`) until `f(messages)` holds; false if it never did.
    pub fn wait_until(&self, limit: Duration, mut f: impl FnMut(&[Received]) -> bool) -> bool {
        self.wait(limit, |st| f(&st.msgs))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}
