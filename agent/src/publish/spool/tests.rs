use std::{
    os::unix::fs::{PermissionsExt, symlink},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shrike-spool-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn seqs(s: &Spool) -> Vec<u64> {
    s.pending().into_iter().map(|(q, _)| q).collect()
}

/// Bytes this process has read through read(2) and friends.
fn rchar() -> u64 {
    let io = fs::read_to_string("/proc/self/io").unwrap();
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).unwrap().trim().parse().unwrap()
}

#[test]
fn push_read_ack_and_resume_in_order() {
    let d = dir("order");
    let mut s = Spool::open(&d, 1 << 20).unwrap();
    let a = s.push(Priority::Low, b"first").unwrap();
    let b = s.push(Priority::High, b"second").unwrap();
    assert!(a < b);
    drop(s);
    let mut s = Spool::open(&d, 1 << 20).unwrap();
    assert_eq!(s.pending(), vec![(a, Priority::Low), (b, Priority::High)]);
    assert_eq!(s.read(a).unwrap(), b"first");
    s.ack(a);
    s.flush();
    assert_eq!(s.len(), 1);
    assert!(!d.join(file_name(a, Priority::Low)).exists(), "the spool thread removed the acked file");
    let c = s.push(Priority::Low, b"third").unwrap();
    assert!(c > b, "sequence resumes after restart");
    // Files are the agent's own.
    let mode = fs::metadata(d.join(file_name(c, Priority::Low))).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(s);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn records_round_trip_and_any_damage_is_caught() {
    let meta = Meta { events: 42, health: true };
    let bytes = encode_record(meta, b"payload bytes");
    let r = parse_record(&bytes, 1024).unwrap();
    assert_eq!((r.events, r.flags, r.payload), (42, FLAG_HEALTH, &b"payload bytes"[..]));
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x40;
        assert!(parse_record(&b, 1024).is_err(), "a flipped bit at byte {i} is caught");
    }
    for n in 0..bytes.len() {
        assert!(parse_record(&bytes[..n], 1024).is_err(), "cut at {n}");
    }
    assert!(parse_record(&bytes, 5).unwrap_err().contains("over the largest message"));
    // The first format still reads, as one event.
    let mut v1 = Vec::from(&MAGIC_V1[..]);
    v1.extend_from_slice(&3u32.to_le_bytes());
    v1.extend_from_slice(&crc32fast::hash(b"abc").to_le_bytes());
    v1.extend_from_slice(b"abc");
    let r = parse_record(&v1, 1024).unwrap();
    assert_eq!((r.events, r.flags, r.payload), (1, 0, &b"abc"[..]));
}

#[test]
fn full_spool_drops_oldest_low_first_and_counts_events() {
    let d = dir("full");
    let rec = HEADER as u64 + 10;
    let mut s = Spool::open(&d, 3 * rec).unwrap();
    let m = |events| Meta { events, health: false };
    let h1 = s.push_with(Priority::High, &[1; 10], m(5)).unwrap();
    let l1 = s.push_with(Priority::Low, &[2; 10], m(7)).unwrap();
    let l2 = s.push_with(Priority::Low, &[3; 10], m(11)).unwrap();
    let h2 = s.push_with(Priority::High, &[4; 10], m(1)).unwrap();
    assert_eq!(seqs(&s), vec![h1, l2, h2], "the oldest low-priority message went first");
    let st = s.stats();
    assert_eq!((st.dropped_low, st.dropped_low_events, st.dropped_high), (1, 7, 0));
    let _ = l1;
    s.push_with(Priority::High, &[5; 10], m(2)).unwrap();
    s.push_with(Priority::High, &[6; 10], m(3)).unwrap();
    let st = s.stats();
    assert_eq!((st.dropped_low, st.dropped_low_events), (2, 18));
    assert_eq!((st.dropped_high, st.dropped_high_events), (1, 5), "then the oldest high one: {st:?}");
    assert!(matches!(s.submit(Priority::Low, &[0; 100], m(1)), Err(SpoolError::TooLarge { .. })));
    drop(s);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn torn_and_corrupt_records_are_detected_isolated_and_counted_as_lost_events() {
    let d = dir("torn");
    let mut s = Spool::open(&d, 1 << 20).unwrap();
    let good = s.push(Priority::High, b"intact message").unwrap();
    let bad = s.push_with(Priority::Low, b"will be cut short", Meta { events: 9, health: false }).unwrap();
    let flipped = s.push_with(Priority::High, b"will be flipped", Meta { events: 4, health: false }).unwrap();
    drop(s);
    // A torn write: the file is cut; a temp file of the first format left behind.
    let bad_path = d.join(file_name(bad, Priority::Low));
    let len = fs::metadata(&bad_path).unwrap().len();
    File::options().write(true).open(&bad_path).unwrap().set_len(len - 5).unwrap();
    fs::write(d.join("00000000000000000099.l.msg.tmp"), b"SHRKSPL1 partial").unwrap();
    // A flipped payload byte: only a read (CRC) finds it.
    let fp = d.join(file_name(flipped, Priority::High));
    let mut bytes = fs::read(&fp).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&fp, bytes).unwrap();

    let mut s = Spool::open(&d, 1 << 20).unwrap();
    assert_eq!(seqs(&s), vec![good, flipped]);
    let st = s.stats();
    assert_eq!(st.corrupt, 2, "the cut file and the temp file: {st:?}");
    assert_eq!(st.dropped_low_events, 2, "one event each when the header cannot be trusted");
    assert!(matches!(s.read(flipped), Err(SpoolError::Corrupt(..))));
    let st = s.stats();
    assert_eq!((st.corrupt, st.dropped_high_events), (3, 4), "the flipped one's events: {st:?}");
    assert_eq!(s.read(good).unwrap(), b"intact message");
    assert!(!fp.exists() && !bad_path.exists());
    // The publisher's path: a record read from disk by the spool thread.
    let notify = Arc::new(tokio::sync::Notify::new());
    s.set_waker(Arc::clone(&notify));
    assert_eq!(s.next_ready(0), None, "not in memory after a restart: read by the spool thread");
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        if let Some(r) = s.next_ready(0) {
            break r;
        }
        assert!(Instant::now() < deadline, "the spool thread did not read the record");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(got, (good, b"intact message".to_vec()));
    drop(s);
    fs::remove_dir_all(&d).unwrap();
}

/// Defect 4: a record claiming (or having) more than the largest message is
/// rejected as corrupt without being read.
#[test]
fn oversized_records_are_rejected_without_reading_them() {
    let d = dir("huge");
    fs::create_dir_all(&d).unwrap();
    // A valid header claiming 300 MB, and the 300 MB (sparse: no disk used).
    let claims = d.join(file_name(1, Priority::Low));
    let mut head = Vec::from(&MAGIC[..]);
    head.extend_from_slice(&(300u32 << 20).to_le_bytes());
    head.extend_from_slice(&[0; 12]);
    fs::write(&claims, &head).unwrap();
    File::options().write(true).open(&claims).unwrap().set_len(HEADER as u64 + (300 << 20)).unwrap();
    // A small header on a 300 MB file.
    let long = d.join(file_name(2, Priority::High));
    fs::write(&long, encode_record(Meta::default(), b"small")).unwrap();
    File::options().write(true).open(&long).unwrap().set_len(300 << 20).unwrap();
    let before = rchar();
    let mut s = Spool::open(&d, Options::new(64 << 20, 256 << 10)).unwrap();
    let read = rchar() - before;
    assert!(read < 1 << 20, "{read} bytes read to open the spool");
    assert!(s.is_empty());
    assert_eq!(s.stats().corrupt, 2);
    assert!(!claims.exists() && !long.exists(), "removed");
    // Grown after open: caught when read, again without reading it.
    let seq = s.push(Priority::Low, b"grows later").unwrap();
    File::options()
        .write(true)
        .open(d.join(file_name(seq, Priority::Low)))
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let before = rchar();
    assert!(matches!(s.read(seq), Err(SpoolError::Corrupt(..))));
    assert!(rchar() - before < 1 << 20);
    drop(s);
    fs::remove_dir_all(&d).unwrap();
}

/// Defect 5: entries with a spool file's name that are not spool files are
/// moved aside once, their numbers never reused, and a name taken while the
/// agent runs costs no message.
#[test]
fn foreign_entries_are_moved_aside_once_and_never_cost_a_message() {
    let d = dir("foreign");
    fs::create_dir_all(d.join(file_name(5, Priority::Low))).unwrap();
    symlink("/etc/passwd", d.join(file_name(3, Priority::High))).unwrap();
    fs::write(d.join("notes.txt"), b"not ours").unwrap();
    let mut s = Spool::open(&d, 1 << 20).unwrap();
    let st = s.stats();
    assert_eq!((st.foreign, st.corrupt), (2, 0), "{st:?}");
    assert!(d.join(format!("{}.foreign", file_name(5, Priority::Low))).is_dir());
    assert!(d.join("notes.txt").exists(), "other files are left alone");
    let first = s.push(Priority::Low, b"after the foreign entries").unwrap();
    assert_eq!(first, 6, "numbers skip what exists");
    // A directory appears where the next message goes.
    fs::create_dir(d.join(file_name(first + 1, Priority::High))).unwrap();
    let next = s.push(Priority::High, b"not lost").unwrap();
    assert!(next > first + 1);
    assert_eq!(s.read(next).unwrap(), b"not lost");
    assert_eq!(s.stats().dropped_high, 0);
    drop(s);
    let s = Spool::open(&d, 1 << 20).unwrap();
    let st = s.stats();
    assert_eq!(
        (st.foreign, st.corrupt),
        (1, 0),
        "the first ones are not counted again; the new one once: {st:?}"
    );
    assert_eq!(s.len(), 2);
    drop(s);
    let s = Spool::open(&d, 1 << 20).unwrap();
    assert_eq!((s.stats().foreign, s.stats().corrupt), (0, 0));
    drop(s);
    fs::remove_dir_all(&d).unwrap();
}

/// Defect 10: one agent per spool directory.
#[test]
fn a_second_spool_on_the_same_directory_is_refused() {
    let d = dir("lock");
    let s = Spool::open(&d, 1 << 20).unwrap();
    let e = Spool::open(&d, 1 << 20).err().expect("a second open must fail");
    let msg = e.to_string();
    assert!(matches!(e, SpoolError::InUse(_, Some(p)) if p == std::process::id()), "{msg}");
    assert!(msg.contains("spool_dir") && msg.contains("in use"), "{msg}");
    drop(s);
    drop(Spool::open(&d, 1 << 20).expect("free again once the first is closed"));
    fs::remove_dir_all(&d).unwrap();
}

/// Defect 8: a directory the agent cannot use is refused at open, naming it.
#[test]
fn unusable_directories_are_refused_at_open() {
    let d = dir("unusable");
    fs::create_dir_all(&d).unwrap();
    let file = d.join("regular");
    fs::write(&file, b"x").unwrap();
    let e = Spool::open(file.join("spool"), 1 << 20).err().unwrap();
    assert!(matches!(e, SpoolError::Unusable(..)) && e.to_string().starts_with("spool_dir "), "{e}");
    let e = Spool::open(&file, 1 << 20).err().unwrap();
    assert!(e.to_string().contains("not a directory"), "{e}");
    // Read-only by its mode: root could still write now, not once the
    // agent dropped CAP_DAC_OVERRIDE.
    let ro = d.join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let e = Spool::open(&ro, 1 << 20).err().unwrap();
    assert!(e.to_string().contains("not writable"), "{e}");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_dir_all(&d).unwrap();
}

/// Part 4: submit only queues; the messages become visible to the publisher
/// once durable, in order, several per sync; a full queue drops (counted) the
/// oldest low-priority message.
#[test]
fn group_commit_order_and_a_bounded_queue() {
    let d = dir("group");
    let s = Spool::open(&d, 64 << 20).unwrap();
    let n = 300u64;
    let start = Instant::now();
    let mut tickets = Vec::new();
    for i in 0..n {
        let prio = if i % 3 == 0 { Priority::High } else { Priority::Low };
        tickets.push(s.submit(prio, format!("message {i}").as_bytes(), Meta::default()).unwrap());
    }
    let queued_in = start.elapsed();
    assert!(tickets.windows(2).all(|w| w[0] < w[1]));
    s.flush();
    assert_eq!(s.durable_through(), *tickets.last().unwrap());
    let st = s.stats();
    eprintln!("{n} submits in {queued_in:?}; {} messages in {} syncs", st.written, st.syncs);
    assert_eq!(st.written, n);
    assert!(st.syncs * 4 <= n, "group commit: {} syncs for {n} messages", st.syncs);
    let mut from = 0;
    let mut got = Vec::new();
    while let Some((seq, p)) = s.next_ready(from) {
        from = seq + 1;
        got.push(String::from_utf8(p).unwrap());
    }
    let want: Vec<String> = (0..n).map(|i| format!("message {i}")).collect();
    // The last ones may be beyond the in-memory budget (then read from disk).
    assert!(got.len() >= 100, "the newest stay in memory for the publisher");
    assert_eq!(got[..], want[..got.len()], "submission order");
    drop(s);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_full_queue_drops_the_oldest_low_priority_message_and_counts_it() {
    let d = dir("queue");
    let s = Spool::open(&d, 64 << 20).unwrap();
    // The disk "stalls": the spool thread takes nothing while paused.
    s.inner.pause(true);
    let mut last = s.submit(Priority::High, b"high first", Meta { events: 3, health: false }).unwrap();
    for i in 0..QUEUE_MESSAGES + 10 {
        last = s
            .submit(Priority::Low, format!("low {i}").as_bytes(), Meta { events: 2, health: false })
            .unwrap();
    }
    assert_eq!(s.next_ready(0), None, "nothing is visible before it is durable");
    let st = s.stats();
    assert_eq!(st.queue_full, 11, "{st:?}");
    assert_eq!((st.dropped_low, st.dropped_low_events, st.dropped_high), (11, 22, 0));
    s.inner.pause(false);
    s.flush();
    let pending = s.pending();
    assert_eq!(pending.len(), QUEUE_MESSAGES);
    assert_eq!(pending[0].1, Priority::High, "the high-priority message stayed");
    assert_eq!(s.durable_through(), last);
    drop(s);
    fs::remove_dir_all(&d).unwrap();
}

static HEALTH_DROPS: AtomicU64 = AtomicU64::new(0);

fn count_health_drop(payload: &[u8]) {
    assert_eq!(payload, b"health counts");
    HEALTH_DROPS.fetch_add(1, Ordering::Relaxed);
}

/// Defect 2's spool side: a dropped message that carried health statistics
/// is handed to the hook (from memory or from its file).
#[test]
fn dropped_health_messages_are_handed_back() {
    let d = dir("health");
    let rec = (HEADER + 13) as u64;
    let mut s = Spool::open(&d, 2 * rec).unwrap();
    s.on_health_dropped(count_health_drop);
    let health = Meta { events: 0, health: true };
    s.push_with(Priority::Low, b"health counts", health).unwrap();
    s.push_with(Priority::Low, b"other message", Meta::default()).unwrap();
    drop(s);
    let mut s = Spool::open(&d, 2 * rec).unwrap();
    s.on_health_dropped(count_health_drop);
    // Read from its file after a restart, when it is dropped for room.
    s.push(Priority::High, b"newer message").unwrap();
    assert_eq!(HEALTH_DROPS.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats().dropped_low, 1);
    drop(s);
    fs::remove_dir_all(&d).unwrap();
}

/// Runs `f` on a tmpfs of `kib` KiB mounted for it (root only: skipped
/// with a reason elsewhere, a failure under CI=true).
fn on_small_tmpfs(name: &str, kib: u64, f: impl FnOnce(&Path)) {
    // SAFETY: a getter.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("CI").is_none(), "{name} needs root to mount a tmpfs");
        eprintln!("skipping {name}: not root (a tmpfs is mounted for it)");
        return;
    }
    let d = dir(name);
    fs::create_dir_all(&d).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(&d)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs on {}", d.display());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&d)));
    let _ = std::process::Command::new("umount").arg(&d).status();
    let _ = fs::remove_dir_all(&d);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

/// Defect 3: a full file system (ENOSPC) drops the oldest low-priority
/// messages for a new high-priority one, never the new one; a new
/// low-priority one that finds only high-priority messages is dropped.
#[test]
fn a_full_file_system_drops_the_oldest_low_priority_messages() {
    on_small_tmpfs("enospc", 64, |d| {
        // The spool's own limit is far above the file system's.
        let mut s = Spool::open(d.join("spool"), 64 << 20).unwrap();
        let payload = vec![b'x'; 3000];
        let mut lows = Vec::new();
        loop {
            let before = s.stats().disk_full;
            let seq = s.push(Priority::Low, &payload);
            if s.stats().disk_full > before {
                break;
            }
            lows.push(seq.unwrap());
            assert!(lows.len() < 1000, "the tmpfs never filled");
        }
        eprintln!("{} low-priority messages filled the file system", lows.len());
        let dropped_before = s.stats().dropped_low;
        let high = s.push(Priority::High, &payload).unwrap();
        let st = s.stats();
        assert_eq!(st.dropped_high, 0, "{st:?}");
        assert!(st.dropped_low > dropped_before, "room was made by dropping low ones: {st:?}");
        let left = seqs(&s);
        assert!(left.contains(&high), "the new high-priority message is spooled");
        assert!(!left.contains(&lows[0]), "the oldest low-priority message went first");
        assert!(left.contains(lows.last().unwrap()), "the newest low-priority ones stay");
        // Only high-priority messages: a new one replaces the oldest of them.
        let mut highs = vec![high];
        for _ in 0..lows.len() + 5 {
            highs.push(s.push(Priority::High, &payload).unwrap());
        }
        assert!(s.pending().iter().all(|(_, p)| *p == Priority::High));
        assert!(s.stats().dropped_high > 0);
        assert!(seqs(&s).contains(highs.last().unwrap()));
        // A new low one finds no low one to drop: it is the one dropped.
        let before = s.stats().dropped_low;
        assert!(s.push(Priority::Low, &payload).is_err());
        assert_eq!(s.stats().dropped_low, before + 1);
        assert!(s.stats().disk_full > 0);
        drop(s);
    });
}

/// Defect 8: a read-only file system is refused at open.
#[test]
fn a_read_only_file_system_is_refused_at_open() {
    on_small_tmpfs("rofs", 64, |d| {
        fs::create_dir(d.join("spool")).unwrap();
        let st = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(d).status().unwrap();
        assert!(st.success());
        let e = Spool::open(d.join("spool"), 1 << 20).err().expect("read-only must be refused");
        assert!(e.to_string().contains("spool_dir") && e.to_string().contains("Read-only"), "{e}");
    });
}
