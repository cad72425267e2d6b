//! Load generator of `cargo xtask bench --workspace`: publishes realistic
//! agent messages (built with the SDK: ProcessCreate, ConnectionCreate and
//! Login events with HitCounts, ~100 payload items a message, gzip or not)
//! for many devices through an MQTT broker at QoS 1, and prints a JSON line
//! with what it sent.
//!
//! Two modes: by default every message is built first (unique Ids, so none
//! is a duplicate) and then published as fast as the broker acknowledges
//! (throughput); `--rate N` builds each message when it is sent, stamped
//! then, N messages a second (ingest-to-queryable latency).

use std::time::{Duration, Instant};

use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shrike_common::schema::{
    ConnectionCreate, Direction, Event as SmEvent, HIT_COUNT, Login, MessageBuilder, Outcome, ProcessCreate,
    Uuid,
};

#[derive(Parser)]
struct Args {
    /// mqtt://HOST:PORT
    #[arg(long)]
    broker: String,
    /// Devices (client ids `bench-N`, topics `shrike/bench-N/security`).
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Messages in all.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Payload items a message.
    #[arg(long, default_value_t = 100)]
    items: usize,
    /// Messages a second, built when sent (0: prebuilt, as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Publishers (MQTT connections) in parallel.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    #[arg(long)]
    gzip: bool,
}

fn build(device: usize, items: usize, n: usize, gzip: bool) -> Vec<u8> {
    let agent = Uuid::from_u128(0x5a5a_0000_0000_0000_0000_0000_0000_0000 | device as u128);
    // No size cap: the bench decides the message's size by its item count.
    let mut b = MessageBuilder::new(agent, "0.1.0").with_max_bytes(usize::MAX);
    let execs = items * 6 / 10;
    let conns = items * 3 / 10;
    let logins = items - execs - conns;
    let hits = |i: usize| [(HIT_COUNT.to_string(), ((i % 7) + 1).to_string())].into();
    let pc: Vec<ProcessCreate> = (0..execs)
        .map(|i| ProcessCreate {
            executable: ["/usr/bin/curl", "/bin/sh", "/usr/sbin/cron", "/usr/bin/python3"][i % 4].into(),
            process_id: (1000 + n * 7 + i) as u32,
            parent_process_id: 1,
            user_id: "1000".into(),
            user_name: Some("pi".into()),
            command_line: format!("/usr/bin/curl -s http://10.0.0.{}/api/v1/telemetry?seq={n}", i % 250),
            extra_details: hits(i),
        })
        .collect();
    let cc: Vec<ConnectionCreate> = (0..conns)
        .map(|i| ConnectionCreate {
            remote_address: format!("10.0.{}.{}", i % 200, n % 250).parse().expect("address"),
            remote_port: "443".into(),
            local_address: Some("192.168.1.20".parse().expect("address")),
            local_port: Some((40000 + i).to_string()),
            direction: Direction::Out,
            protocol: "TCP".into(),
            process_id: (2000 + i) as u32,
            user_id: Some("1000".into()),
            executable: "/usr/bin/curl".into(),
            command_line: Some("curl https://telemetry.example".into()),
            extra_details: hits(i),
        })
        .collect();
    let lg: Vec<Login> = (0..logins)
        .map(|i| Login {
            process_id: (3000 + i) as u32,
            user_id: Some("0".into()),
            user_name: Some("root".into()),
            operation: "PAM:authentication".into(),
            executable: "/usr/sbin/sshd".into(),
            remote_address: Some(format!("203.0.113.{}", i % 250).parse().expect("address")),
            remote_port: Some("51234".into()),
            local_port: Some("22".into()),
            result: if i % 3 == 0 { Outcome::Fail } else { Outcome::Success },
            extra_details: hits(i),
        })
        .collect();
    for e in [SmEvent::new(pc), SmEvent::new(cc), SmEvent::new(lg)] {
        if !e.payload.is_empty() {
            b.push(&e).expect("fits");
        }
    }
    let json = b.finish().expect("one event at least");
    if gzip {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&json).expect("memory");
        z.finish().expect("memory")
    } else {
        json
    }
}

async fn publisher(
    args: std::sync::Arc<Args>,
    id: usize,
    host: String,
    port: u16,
    mut prebuilt: Vec<(usize, Vec<u8>)>,
    share: usize,
) -> usize {
    let mut o = MqttOptions::new(format!("shrike-loadgen-{}-{id}", std::process::id()), host, port);
    o.set_max_packet_size(64 << 20, 64 << 20).set_inflight(200).set_keep_alive(Duration::from_secs(60));
    let (client, mut el) = AsyncClient::new(o, 1000);
    let sender = {
        let args = std::sync::Arc::clone(&args);
        tokio::spawn(async move {
            let start = Instant::now();
            for k in 0..share {
                let (device, body) = if args.rate == 0 {
                    prebuilt.pop().expect("prebuilt")
                } else {
                    // The whole rate split over the publishers.
                    let due =
                        start + Duration::from_secs_f64(k as f64 * args.publishers as f64 / args.rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let device = (id + k * args.publishers) % args.devices;
                    (device, build(device, args.items, id * 1_000_000 + k, args.gzip))
                };
                let topic = format!("shrike/bench-{device}/security");
                if client.publish(topic, QoS::AtLeastOnce, false, body).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut acked = 0;
    while acked < share {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => {
                eprintln!("publisher {id}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = sender.await;
    acked
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = std::sync::Arc::new(Args::parse());
    let (host, port, _) = shrike_workspace::config::parse_broker(&args.broker).unwrap_or_else(|e| {
        eprintln!("shrike-workspace-loadgen: {e}");
        std::process::exit(2)
    });
    let p = args.publishers.max(1);
    let mut shares = vec![args.messages / p; p];
    for s in shares.iter_mut().take(args.messages % p) {
        *s += 1;
    }
    let mut built = Vec::new();
    let t_build = Instant::now();
    for (id, share) in shares.iter().enumerate() {
        let mut v = Vec::new();
        if args.rate == 0 {
            for k in 0..*share {
                let device = (id + k * p) % args.devices;
                v.push((device, build(device, args.items, id * 1_000_000 + k, args.gzip)));
            }
        }
        built.push(v);
    }
    let build_secs = t_build.elapsed().as_secs_f64();
    let bytes: usize = built.iter().flatten().map(|(_, b)| b.len()).sum();
    let start = Instant::now();
    let tasks: Vec<_> = built
        .into_iter()
        .zip(shares)
        .enumerate()
        .map(|(id, (v, share))| {
            tokio::spawn(publisher(std::sync::Arc::clone(&args), id, host.clone(), port, v, share))
        })
        .collect();
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap_or(0);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "messages": acked,
            "events": acked * args.items,
            "seconds": secs,
            "build_seconds": build_secs,
            "bytes": bytes,
        })
    );
}
