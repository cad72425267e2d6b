//! The journal on real files: replay, compaction, the unwritten window, the
//! size bound. A "kill" is `mem::forget` of the handle: nothing is committed
//! or cleaned up after it, as after a SIGKILL (the page cache keeps what was
//! written; the thread never writes again within the test).

use std::path::PathBuf;

use shrike_common::schema as sm;

use super::*;
use crate::events::{Body, Exec};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shrike-journal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cfg(d: &Path, interval_ms: u64, size: u64) -> JournalConfig {
    JournalConfig { dir: d.to_path_buf(), interval: Duration::from_millis(interval_ms), size }
}

fn exec(i: u32) -> Event {
    Event {
        time: "2026-12-06T00:00:00Z".parse().unwrap(),
        ktime_ns: 1,
        pid: 100 + i,
        tid: 100 + i,
        ppid: Some(1),
        uid: 0,
        gid: 0,
        user: None,
        comm: "sh".into(),
        exe: Some("/bin/sh".into()),
        body: Body::Exec(Exec::succeeded("/bin/true", &["true", &format!("marker-{i}")])),
    }
}

fn command_lines(r: &Recovery) -> Vec<String> {
    r.events
        .iter()
        .map(|(_, e)| match &e.payload {
            sm::Payload::ProcessCreate(items) => items[0].command_line.clone(),
            p => panic!("{p:?}"),
        })
        .collect()
}

fn kill(j: Journal) {
    std::mem::forget(j);
}

/// What the journal holds, none of it known to be in a spool.
fn read_all(d: &Path, size: u64) -> Recovery {
    read(d, size, &cover::Covered::default())
}

/// Messages that reached the spool name their journal records (cover.rs):
/// after a kill in the window before the journal's watermark learns of it,
/// none of them is replayed, whether the broker acknowledged the message
/// (its file removed) or not; only what is in no message is. A cut or
/// damaged cover file falls back to the other or to nothing: duplicates,
/// never a loss, never a crash.
#[test]
fn what_the_spool_holds_is_not_replayed() {
    use crate::publish::spool::{Meta, Spool};
    let d = dir("covered");
    let spool_dir = dir("covered-spool");
    let mut j = Journal::start(&cfg(&d, 10, 1 << 20)).unwrap();
    let spool = Spool::open(&spool_dir, 1 << 20).unwrap();
    let cover = |seqs: std::ops::Range<u64>| {
        let mut c = cover::Cover::default();
        for s in seqs {
            c.add(j.epoch, s);
        }
        c
    };
    // 0..10 aggregated (held), 10..15 singles, 15..17 still in memory.
    let (first, second) = (cover(0..8), cover(8..15));
    for i in 0..17 {
        let seq = j.append(Priority::Low, &exec(i), None);
        j.tracker.hold_agg(Kind::Exec, seq);
    }
    // The first message is acknowledged and removed, the second waits (broker away).
    spool.submit_covered(Priority::Low, b"one", Meta::default(), Some(first)).unwrap();
    spool.flush();
    let acked = spool.pending()[0].0;
    spool.ack(acked);
    spool.submit_covered(Priority::Low, b"two", Meta::default(), Some(second)).unwrap();
    spool.flush();
    assert_eq!(spool.len(), 1);
    // The watermark never learnt of either (the kill came first).
    j.sync(None);
    kill(j);
    drop(spool);
    let spool = Spool::open(&spool_dir, 1 << 20).unwrap();
    let r = read(&d, 1 << 20, &spool.covered());
    assert_eq!(command_lines(&r), ["true marker-15", "true marker-16"]);
    assert_eq!((r.spooled, r.lost), (15, [0, 0]));
    assert_eq!(r.seqs, [15, 16]);
    drop(spool);
    // The newer cover file cut (a kill in its write): the older one counts.
    let newest = ["covered.a", "covered.b"]
        .iter()
        .map(|n| spool_dir.join(n))
        .max_by_key(|p| cover::Covered::decode(&std::fs::read(p).unwrap()).unwrap().generation)
        .unwrap();
    let b = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &b[..b.len() / 2]).unwrap();
    let spool = Spool::open(&spool_dir, 1 << 20).unwrap();
    let r = read(&d, 1 << 20, &spool.covered());
    assert_eq!(r.seqs, (8..17).collect::<Vec<_>>(), "the second message's records again");
    assert_eq!((r.spooled, r.lost), (8, [0, 0]));
    drop(spool);
    // A spool record damaged (not by a kill: the set names it): the set is
    // not trusted, the journal gives back everything it holds.
    let spool = Spool::open(&spool_dir, 1 << 20).unwrap();
    assert!(!spool.covered().epochs.is_empty());
    let (seq, prio) = spool.pending()[0];
    drop(spool);
    let tag = if prio == Priority::High { "h" } else { "l" };
    std::fs::write(spool_dir.join(format!("{seq:020}.{tag}.msg")), b"SHRKSPL2 torn").unwrap();
    let spool = Spool::open(&spool_dir, 1 << 20).unwrap();
    assert!(spool.covered().epochs.is_empty());
    assert_eq!(read(&d, 1 << 20, &spool.covered()).events.len(), 17);
    drop(spool);
    // Both damaged: everything is replayed, nothing counted lost.
    for n in ["covered.a", "covered.b"] {
        std::fs::write(spool_dir.join(n), b"SHRKCOV1 garbage that is not a cover set").unwrap();
    }
    let spool = Spool::open(&spool_dir, 1 << 20).unwrap();
    let r = read(&d, 1 << 20, &spool.covered());
    assert_eq!((r.events.len(), r.spooled, r.lost), (17, 0, [0, 0]));
    drop(spool);
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&spool_dir).unwrap();
}

#[test]
fn events_held_in_memory_are_replayed_after_a_kill() {
    let d = dir("replay");
    let mut j = Journal::start(&cfg(&d, 100, 1 << 20)).unwrap();
    for i in 0..5 {
        let seq = j.append(Priority::Low, &exec(i), None);
        j.tracker.hold_agg(Kind::Exec, seq);
    }
    // The Id of a message event already made of it is kept.
    let id = sm::Uuid::new_v4();
    let seq = j.append(Priority::High, &exec(5), Some(id));
    j.tracker.hold_batch(Priority::High, seq);
    j.sync(None);
    assert_eq!(j.stats().written, 6);
    kill(j);
    let r = read_all(&d, 1 << 20);
    assert_eq!(command_lines(&r), (0..6).map(|i| format!("true marker-{i}")).collect::<Vec<_>>());
    assert_eq!(r.events[5].1.id, id);
    let ids: std::collections::HashSet<_> = r.events.iter().map(|(_, e)| e.id).collect();
    assert_eq!(ids.len(), 6, "distinct Ids");
    assert!(r.events.iter().all(|(_, e)| e.id.get_version_num() == 4), "version 4 GUIDs");
    assert_eq!(r.lost, [0, 0]);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    // The files are the agent's own.
    use std::os::unix::fs::PermissionsExt;
    for ent in std::fs::read_dir(&d).unwrap().flatten() {
        assert_eq!(ent.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{:?}", ent.path());
    }
    assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
    // A new epoch replaces what was read.
    let j = Journal::start(&cfg(&d, 100, 1 << 20)).unwrap();
    kill(j);
    assert!(read_all(&d, 1 << 20).events.is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Events whose messages reached the spool are compacted away: nothing is
/// replayed, and the segments below the watermark are deleted.
#[test]
fn compaction_follows_the_spool() {
    let d = dir("compact");
    // 64 KiB segments.
    let mut j = Journal::start(&cfg(&d, 10, 512 << 10)).unwrap();
    for round in 0..40 {
        for i in 0..50 {
            let seq = j.append(Priority::High, &exec(round * 50 + i), None);
            j.tracker.hold_agg(Kind::Exec, seq);
        }
        j.tracker.agg_flushed(Kind::Exec, Priority::High);
        j.tracker.batch_flushed(Priority::High, Flushed::Done);
        j.update(None);
    }
    // The last round stays in memory.
    let seq = j.append(Priority::Low, &exec(9999), None);
    j.tracker.hold_batch(Priority::Low, seq);
    j.sync(None);
    let st = j.stats();
    assert_eq!(st.written, 2001);
    assert_eq!(j.committed_watermark(), 2000, "the one held in memory");
    assert!(st.bytes < 200 << 10, "compacted: {st:?}");
    let segs = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
        .count();
    assert!(segs <= 2, "{segs} segments");
    kill(j);
    let r = read_all(&d, 512 << 10);
    assert_eq!(command_lines(&r), ["true marker-9999"]);
    assert_eq!(r.lost, [0, 0]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Received but not yet written when the agent dies: counted per queue.
#[test]
fn the_uncommitted_window_is_counted() {
    let d = dir("window");
    let mut j = Journal::start(&cfg(&d, 100, 1 << 20)).unwrap();
    for i in 0..3 {
        let seq = j.append(Priority::High, &exec(i), None);
        j.tracker.hold_batch(Priority::High, seq);
    }
    j.sync(None);
    // No commit for a minute: these stay in the thread's group.
    let mut slow = Journal::start(&cfg(&dir("window-slow"), 60_000, 1 << 20)).unwrap();
    kill(j);
    for i in 0..4 {
        slow.append(Priority::Low, &exec(i), None);
    }
    slow.append(Priority::High, &exec(9), None);
    std::thread::sleep(Duration::from_millis(100));
    let slow_dir = slow.dir.clone();
    kill(slow);
    let r = read_all(&slow_dir, 1 << 20);
    assert!(r.events.is_empty());
    assert_eq!(r.lost, [1, 4]);
    let r = read_all(&d, 1 << 20);
    assert_eq!((r.events.len(), r.lost), (3, [0, 0]));
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&slow_dir).unwrap();
}

/// At `journal_size` events are skipped; a kill before they reach the spool
/// counts them lost, those that reached it are not counted.
#[test]
fn a_full_journal_skips_and_counts() {
    let d = dir("full");
    let size = 64 << 10;
    let mut j = Journal::start(&cfg(&d, 10, size)).unwrap();
    let mut held = Vec::new();
    for i in 0..2000 {
        let seq = j.append(Priority::Low, &exec(i), None);
        j.tracker.hold_agg(Kind::Exec, seq);
        held.push(seq);
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    j.sync(None);
    let st = j.stats();
    assert!(st.skipped > 0 && st.written > 0 && st.written + st.skipped == 2000, "{st:?}");
    assert!(st.bytes <= size, "{st:?}");
    kill(j);
    let r = read_all(&d, size);
    assert_eq!(r.events.len() as u64, st.written);
    assert_eq!(r.lost, [0, st.skipped]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn tracker_watermark() {
    let mut t = Tracker::default();
    assert_eq!(t.watermark(10), 10);
    t.hold_agg(Kind::Exec, 3);
    t.hold_agg(Kind::Exec, 5);
    t.hold_batch(Priority::High, 4);
    assert_eq!(t.watermark(10), 3);
    t.agg_flushed(Kind::Exec, Priority::Low);
    assert_eq!(t.watermark(10), 3, "now in the low batch");
    t.batch_flushed(Priority::Low, Flushed::Held);
    assert_eq!(t.watermark(10), 3, "held: no publisher");
    t.held_flushed(Flushed::Spooling(7));
    assert_eq!(t.watermark(10), 3, "queued for the spool, not durable yet");
    t.durable_through(6);
    assert_eq!(t.watermark(10), 3);
    t.durable_through(7);
    assert_eq!(t.watermark(10), 4);
    t.batch_flushed(Priority::High, Flushed::Done);
    assert_eq!(t.watermark(10), 10);
}
