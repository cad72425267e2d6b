//! The server on a real Unix socket (no root needed): replies, the sender's
//! credentials, limits, rates and timeouts.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    time::Duration,
};

use serde_json::Value;

use super::*;

fn cfg(path: &Path) -> SdkConfig {
    SdkConfig {
        socket: Some(path.to_owned()),
        explicit: true,
        rate: 10_000,
        connection_rate: 10_000,
        idle_timeout: Duration::from_secs(5),
        line_timeout: Duration::from_secs(2),
        max_connections: 4,
        max_event_bytes: usize::MAX,
    }
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shrike-sdk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("run").join("sdk.sock")
}

/// A blocking client on its own thread (the server runs on the test's runtime).
struct Conn {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Conn {
    fn open(path: &Path) -> Conn {
        let w = UnixStream::connect(path).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn { r: BufReader::new(w.try_clone().unwrap()), w }
    }

    fn send(&mut self, bytes: &[u8]) -> Value {
        self.w.write_all(bytes).unwrap();
        self.reply()
    }

    fn reply(&mut self) -> Value {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
    }

    /// True when the server closed the connection.
    fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(self.r.read_line(&mut line), Ok(0))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_sender_limits_and_timeouts() {
    let path = temp("server");
    let (tx, mut rx) = mpsc::channel(16);
    let server = start(&cfg(&path), tx).unwrap().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // A second server on the same path is refused while the first answers.
    let (tx2, _rx2) = mpsc::channel(1);
    assert!(matches!(start(&cfg(&path), tx2), Err(SdkError::InUse(_))));

    let p = path.clone();
    let replies = blocking(move || {
        let mut c = Conn::open(&p);
        let ok = c.send(b"{\"Name\":\"DoorOpened\",\"Payload\":[{\"Door\":\"a\"}]}\n");
        let bad_json = c.send(b"hello\n");
        let wrong_type = c.send(b"{\"Name\":\"ProcessTerminate\",\"Payload\":[{\"Executable\":\"/x\",\"ProcessId\":1,\"ExitStatus\":\"0\"}]}\n");
        let mut long = vec![b'x'; proto::MAX_LINE + 10];
        long.push(b'\n');
        let too_long = c.send(&long);
        let after = c.send(b"{\"Name\":\"DoorOpened\",\"Payload\":[{\"Door\":\"b\"}]}\r\n");
        (ok, bad_json, wrong_type, too_long, after)
    })
    .await;
    let (ok, bad_json, wrong_type, too_long, after) = replies;
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(bad_json["error"].as_str().unwrap().starts_with("not JSON"), "{bad_json}");
    assert!(wrong_type["error"].as_str().unwrap().starts_with("Payload[0].ExitStatus"), "{wrong_type}");
    assert!(too_long["error"].as_str().unwrap().starts_with("line too long"), "{too_long}");
    assert_eq!(after["ok"], true, "the connection stays usable: {after}");

    let ev = rx.recv().await.unwrap();
    assert_eq!(ev.pid, std::process::id(), "SO_PEERCRED pid");
    assert_eq!(ev.exe.as_deref(), std::env::current_exe().ok().as_deref().and_then(Path::to_str));
    let Body::Sdk(sdk) = &ev.body else { panic!("{ev:?}") };
    assert_eq!(sdk.event.id().to_string(), ok["id"].as_str().unwrap());
    let item = &sdk.event.payload_json()[0];
    assert_eq!(item["ExtraDetails"]["SenderPid"], std::process::id().to_string());
    assert_eq!(item["ExtraDetails"]["SenderUid"], unsafe { libc::getuid() }.to_string());
    assert!(rx.recv().await.is_some(), "the second event");

    // A client that never writes, one that writes a byte a second: closed
    // with a reply saying why; a third client is served meanwhile.
    let (p1, p2, p3) = (path.clone(), path.clone(), path.clone());
    let idle = blocking(move || {
        let mut c = Conn::open(&p1);
        c.w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (c.reply(), c.closed())
    });
    let slow = blocking(move || {
        let mut c = Conn::open(&p2);
        for b in b"{\"Name\":" {
            if c.w.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        (c.reply(), c.closed())
    });
    let other = blocking(move || {
        let mut c = Conn::open(&p3);
        (0..20)
            .map(|i| c.send(format!("{{\"Name\":\"Tick\",\"Payload\":[{{\"N\":{i}}}]}}\n").as_bytes()))
            .collect::<Vec<_>>()
    });
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let other = other.await;
    assert!(other.iter().all(|r| r["ok"] == true), "{other:?}");
    let (r, closed) = slow.await;
    assert!(r["error"].as_str().unwrap().contains("a line must arrive whole"), "{r}");
    assert!(closed);
    let (r, closed) = idle.await;
    assert!(r["error"].as_str().unwrap().contains("nothing sent"), "{r}");
    assert!(closed);
    let counts = server.stats.counts();
    assert_eq!(counts.timed_out, 2, "{counts:?}");
    assert_eq!(counts.accepted, 22, "{counts:?}");
    assert_eq!((counts.rejected, counts.too_long), (3, 1), "{counts:?}");
    drop(server);
    assert!(!path.exists(), "the socket is removed at stop");
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_connection_limit() {
    let path = temp("rate");
    let (tx, mut rx) = mpsc::channel(1024);
    let mut c = cfg(&path);
    c.connection_rate = 5;
    c.rate = 8;
    c.max_connections = 2;
    let server = start(&c, tx).unwrap().unwrap();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let p = path.clone();
    let (first, second, refused) = blocking(move || {
        let line = b"{\"Name\":\"Tick\",\"Payload\":[{}]}\n";
        let mut a = Conn::open(&p);
        let first: Vec<Value> = (0..10).map(|_| a.send(line)).collect();
        let mut b = Conn::open(&p);
        let second: Vec<Value> = (0..10).map(|_| b.send(line)).collect();
        let mut c3 = Conn::open(&p);
        (first, second, c3.reply())
    })
    .await;
    let ok = |v: &[Value]| v.iter().filter(|r| r["ok"] == true).count();
    // Bursts of one second's worth: 5 on the first connection, then the
    // global 8 leaves about 3 for the second.
    assert!((5..=6).contains(&ok(&first)), "{first:?}");
    assert!((3..=4).contains(&ok(&second)), "{second:?}");
    let limited = first.iter().chain(&second).find(|r| r["ok"] == false).unwrap();
    assert!(limited["error"].as_str().unwrap().starts_with("rate limited"), "{limited}");
    assert!(refused["error"].as_str().unwrap().contains("too many connections"), "{refused}");
    let n = server.stats.counts();
    assert_eq!(n.rate_limited, 20 - n.accepted, "{n:?}");
    assert_eq!(n.refused_connections, 1, "{n:?}");
}

#[test]
fn settings_resolve() {
    let d = SdkConfig::resolve(&SdkArgs::default(), &FileSdk::default(), Some(defaults::SOCKET)).unwrap();
    assert_eq!(d.socket.as_deref(), Some(Path::new("/run/shrike/sdk.sock")));
    assert_eq!((d.rate, d.connection_rate, d.max_connections), (1000, 200, 64));
    let off = SdkConfig::resolve(&SdkArgs::default(), &FileSdk::default(), None).unwrap();
    assert_eq!(off.socket, None);
    let file = FileSdk { sdk_socket: Some("/x.sock".into()), sdk_rate: Some(5), ..Default::default() };
    let args = SdkArgs { sdk_socket: Some("off".into()), ..Default::default() };
    let r = SdkConfig::resolve(&args, &file, Some(defaults::SOCKET)).unwrap();
    assert_eq!((r.socket, r.rate), (None, 5), "flags over the file");
    let bad = SdkArgs { sdk_rate: Some(0), ..Default::default() };
    assert!(SdkConfig::resolve(&bad, &file, None).unwrap_err().to_string().contains("sdk_rate"));
    let bad = SdkArgs { sdk_line_timeout: Some("soon".into()), ..Default::default() };
    assert!(SdkConfig::resolve(&bad, &file, None).unwrap_err().to_string().contains("sdk_line_timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_message_holds_is_refused() {
    let path = temp("size");
    let (tx, mut rx) = mpsc::channel(16);
    let mut c = cfg(&path);
    c.max_event_bytes = 1000;
    let _server = start(&c, tx).unwrap().unwrap();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let p = path.clone();
    let (small, big) = blocking(move || {
        let mut conn = Conn::open(&p);
        let small = conn.send(b"{\"Name\":\"Tick\",\"Payload\":[{}]}\n");
        // 20 empty items: small as sent, over 1000 bytes once each carries
        // the sender's details.
        let items = vec!["{}"; 20].join(",");
        let big = conn.send(format!("{{\"Name\":\"Tick\",\"Payload\":[{items}]}}\n").as_bytes());
        (small, big)
    })
    .await;
    assert_eq!(small["ok"], true, "{small}");
    assert!(big["error"].as_str().unwrap().contains("a message holds at most 1000"), "{big}");
}
