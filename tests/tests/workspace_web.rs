//! The workspace's web page in a real browser: a real agent publishes to a
//! real mosquitto, `shrike-workspace --http` stores it, and headless
//! Chromium (Debian's package) loads each page: the fleet overview shows the
//! device's name, the alert list and the device page show the agent's alert
//! title, the rejected page shows a garbage message. Screenshots go to
//! `target/workspace-screenshots/`. The page asks for a token (from a file):
//! without it the answer is 401.
//!
//! Run as root: `cargo test -p shrike-tests --test workspace_web -- --test-threads=1`.

mod hub_support;
mod workspace_support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use hub_support::RunAgent;
use shrike_tests::{TempDir, broker::BrokerConfig, marker, require_root};
use workspace_support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

/// Chromium's DOM of a page after it loaded (what a person sees, as text).
fn dump_dom(url: &str) -> String {
    let out = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("running chromium");
    assert!(out.status.success(), "chromium --dump-dom {url}: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshot(url: &str, file: &Path) {
    let st = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", file.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running chromium");
    assert!(st.success(), "chromium --screenshot {url}");
    assert!(
        std::fs::metadata(file).map(|m| m.len() > 1000).unwrap_or(false),
        "no screenshot {}",
        file.display()
    );
}

#[test]
fn pages_in_a_real_browser() {
    if !require_root() || !shrike_tests::broker::available("workspace web") {
        return;
    }
    if !Path::new(CHROMIUM).exists() {
        assert!(std::env::var_os("CI").is_none(), "{CHROMIUM} is missing (Debian package chromium)");
        eprintln!("SKIPPED workspace web: {CHROMIUM} is not installed");
        return;
    }
    let dir = TempDir::new("ws-web");
    let broker = BrokerConfig::new(dir.path()).start();
    let db = dir.path().join("workspace.db").display().to_string();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let http = shrike_tests::free_port("127.0.0.1");
    let ws = Workspace::start(&[
        "--broker".into(),
        format!("mqtt://127.0.0.1:{}", broker.port),
        "--db".into(),
        db.clone(),
        "--http".into(),
        format!("127.0.0.1:{http}"),
        "--http-token-file".into(),
        token_file.display().to_string(),
    ]);
    let state = dir.path().join("agent");
    std::fs::create_dir_all(&state).unwrap();
    let mut args: Vec<String> = Vec::new();
    let help = Command::new(shrike_tests::agent_bin()).args(["run", "--help"]).output().unwrap();
    if String::from_utf8_lossy(&help.stdout).contains("--sdk-socket") {
        args.extend(["--sdk-socket".into(), "off".into()]);
    }
    args.extend(
        [
            "--hub",
            &format!("mqtt://127.0.0.1:{}", broker.port),
            "--client-id",
            "gw-web-7",
            "--state-dir",
            &state.display().to_string(),
            "--high-interval",
            "200ms",
            "--low-interval",
            "1s",
            "--aggregate-interval",
            "1s",
        ]
        .map(String::from),
    );
    let agent = RunAgent::start(&args);
    let logs = || format!("workspace:\n{}\nagent:\n{}", ws.log().join("\n"), agent.log().join("\n"));

    let staged = dir.path().join("web-true");
    std::fs::copy("/bin/true", &staged).unwrap();
    assert!(Command::new(&staged).arg(marker("web")).status().unwrap().success());
    publish(broker.port, "shrike/gw-junk/security", b"{\"not\": \"a security message\"}");
    let staged_s = staged.display().to_string();
    let ok = shrike_tests::broker::poll_until(Duration::from_secs(20), || {
        number(
            &db,
            &format!("SELECT COUNT(*) FROM alerts WHERE device = 'gw-web-7' AND executable = '{staged_s}'"),
        ) >= 1
            && number(&db, "SELECT COUNT(*) FROM rejected WHERE topic = 'shrike/gw-junk/security'") == 1
    });
    assert!(ok, "the alert and the rejected message stored\n{}", logs());
    let title = query(&db, &format!("SELECT title FROM alerts WHERE executable = '{staged_s}'"))[0]["title"]
        .as_str()
        .unwrap()
        .to_owned();

    // Without the token: refused; with it: served.
    assert_eq!(http_get(http, "/").0, 401);
    assert_eq!(http_get(http, "/api/devices").0, 401);
    let (code, body) = http_get(http, "/metrics?token=s3cret-token");
    assert_eq!(code, 200);
    assert!(body.contains("shrike_workspace_messages_stored_total"), "{body}");
    let (code, body) = http_get(http, "/api/alerts?token=s3cret-token&device=gw-web-7");
    assert_eq!(code, 200);
    assert!(body.contains(&title), "{body}");

    let shots = shrike_tests::workspace_root().join("target/workspace-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let url = |path: &str| {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("http://127.0.0.1:{http}{path}{sep}token=s3cret-token")
    };
    let pages = [
        ("fleet", "/", vec!["gw-web-7", "online"]),
        ("alerts", "/alerts?severity=high", vec![title.as_str(), "gw-web-7", "ProcessCreate"]),
        ("device", "/devices/gw-web-7", vec![title.as_str(), "Events per kind", "<svg", "Recommendations"]),
        ("rejected", "/rejected", vec!["shrike/gw-junk/security", "not a security message"]),
    ];
    for (name, path, want) in pages {
        let dom = dump_dom(&url(path));
        for w in want {
            assert!(dom.contains(w), "{path}: {w:?} not on the page:\n{dom}");
        }
        screenshot(&url(path), &shots.join(format!("{name}.png")));
    }
    // The alerts page lists the alert with its triggering exec (which is low
    // priority: it may come a second after the alert).
    let ok = shrike_tests::broker::poll_until(Duration::from_secs(10), || {
        // "pid N · user · time" is written only for a triggering event found.
        dump_dom(&url("/alerts?device=gw-web-7&rule=exec-from-tmp")).contains("pid ")
    });
    assert!(ok, "the triggering exec on /alerts\n{}", logs());
    eprintln!("screenshots in {}", shots.display());
    agent.stop();
    ws.stop();
}
