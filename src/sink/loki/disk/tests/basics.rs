//! Appending, committing, handing out, settling, reopening: the normal life.

use super::super::{AppendError, Backlog, Fsync, Tally};
use super::*;

#[test]
fn append_commit_reopen_hands_out_every_committed_entry_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec, Recovered::default());
    assert_eq!(append(&mut buf, 0..100), (0..100).collect::<Vec<_>>());
    buf.commit().unwrap();
    drop(buf);
    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec.entries, 100);
    assert!(rec.repaired.is_empty(), "{:?}", rec.repaired);
    assert_eq!(rec.oldest_unix_nanos, Some(entry(0).1));
    let got = drain(&mut buf);
    assert_eq!(numbers(&got), (0..100).collect::<Vec<_>>());
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    // New entries follow the recovered ones.
    assert_eq!(append(&mut buf, 100..101), [100]);
}

#[test]
fn recovered_counts_the_bytes_of_what_is_unsettled() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..10);
    buf.commit().unwrap();
    let unsettled = buf.unsettled();
    drop(buf);
    let (buf, rec) = open(dir.path());
    assert_eq!(
        (rec.entries, rec.bytes),
        (unsettled.entries, unsettled.bytes)
    );
    assert_eq!(buf.unsettled(), unsettled);
    let expected: u64 = (0..10).map(record_len).sum();
    assert_eq!(rec.bytes, expected);
}

#[test]
fn entries_not_committed_are_not_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..5);
    assert_eq!(batch(&mut buf, 10).1, None);
    buf.commit().unwrap();
    append(&mut buf, 5..8);
    assert_eq!(numbers(&drain(&mut buf)), [0, 1, 2, 3, 4]);
    buf.commit().unwrap();
    assert_eq!(numbers(&drain(&mut buf)), [5, 6, 7]);
}

#[test]
fn a_dropped_buffer_writes_what_it_had_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..5);
    drop(buf);
    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec.entries, 5);
    assert_eq!(numbers(&drain(&mut buf)), [0, 1, 2, 3, 4]);
}

#[test]
fn settlements_out_of_order_are_kept_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..30);
    buf.commit().unwrap();
    let (_, a) = batch(&mut buf, 10);
    let (_, b) = batch(&mut buf, 10);
    let (_, c) = batch(&mut buf, 10);
    assert_eq!(buf.settle(c.unwrap()), 10);
    assert_eq!(buf.settle(a.unwrap()), 10);
    drop(buf);
    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec.entries, 10);
    assert_eq!(numbers(&drain(&mut buf)), (10..20).collect::<Vec<_>>());
    assert_eq!(b, Some(10..20));
}

#[test]
fn settle_counts_only_what_it_newly_settles() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..20);
    buf.commit().unwrap();
    let (_, r) = batch(&mut buf, 10);
    let r = r.unwrap();
    assert_eq!(buf.settle(2..5), 3);
    assert_eq!(buf.settle(r.clone()), 7);
    assert_eq!(buf.settle(r), 0, "settled twice");
    assert_eq!(buf.settle(10..20), 0, "never handed out");
    assert_eq!(buf.unsettled().entries, 10);
    assert_eq!(numbers(&drain(&mut buf)), (10..20).collect::<Vec<_>>());
}

#[test]
fn a_batch_never_settled_is_handed_out_again_by_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..10);
    buf.commit().unwrap();
    let (got, _) = batch(&mut buf, 4);
    assert_eq!(numbers(&got), [0, 1, 2, 3]);
    // Shut down with the request cut: nothing settled.
    buf.close().unwrap();
    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec.entries, 10);
    assert_eq!(numbers(&drain(&mut buf)), (0..10).collect::<Vec<_>>());
}

#[test]
fn batches_span_segments_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..200);
    buf.commit().unwrap();
    assert!(segments(dir.path()).len() > 3, "4 KiB segments");
    let (got, range) = batch(&mut buf, 200);
    assert_eq!(numbers(&got), (0..200).collect::<Vec<_>>());
    assert_eq!(range, Some(0..200));
}

#[test]
fn next_batch_keeps_to_its_limits_and_hands_out_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..20);
    buf.commit().unwrap();
    let mut sizes = Vec::new();
    let r = buf
        .next_batch(100, 1, |v| sizes.push(v.payload.len()))
        .unwrap();
    assert_eq!(
        (r, sizes.len()),
        (Some(0..1), 1),
        "one entry, larger than the byte limit"
    );
    let mut n = 0;
    let r = buf.next_batch(3, usize::MAX, |_| n += 1).unwrap();
    assert_eq!((r, n), (Some(1..4), 3));
    let one = usize::try_from(record_len(4) + record_len(5)).unwrap();
    let mut got = Vec::new();
    let r = buf.next_batch(100, one, |v| got.push(check(v).1)).unwrap();
    assert_eq!(
        (r, got),
        (Some(4..6), vec![4, 5]),
        "exactly two records' bytes"
    );
}

#[test]
fn a_segment_is_removed_only_when_every_entry_in_it_is_settled() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..200);
    buf.commit().unwrap();
    let files = segments(dir.path());
    let first_of_second: Seq = files[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, r) = batch(&mut buf, 200);
    // Everything of the first segment but its first entry.
    buf.settle(1..first_of_second);
    assert!(files[0].exists(), "one entry left in it");
    buf.settle(0..1);
    assert!(!files[0].exists(), "all settled");
    assert!(files[1].exists());
    buf.settle(r.unwrap());
    let left = segments(dir.path());
    assert_eq!(left.len(), 1, "only the active segment stays: {left:?}");
    assert_eq!(buf.unsettled(), Tally::default());
    drop(buf);
    let (_, rec) = open(dir.path());
    assert_eq!(rec.entries, 0);
    assert!(
        segments(dir.path()).is_empty(),
        "a settled segment goes at open"
    );
}

#[test]
fn the_settlement_log_is_compacted_and_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    // A 256 KiB cap: the log is rewritten past 4 KiB.
    let (mut buf, _) = DiskBuffer::open(Options::new(dir.path(), 256 * 1024)).unwrap();
    let acks = dir.path().join("acks");
    let mut largest = 0;
    for i in 0..3000 {
        append(&mut buf, i..i + 1);
        buf.commit().unwrap();
        let (_, r) = batch(&mut buf, 1);
        // Every other one late, so ranges do not all merge at once.
        if i % 2 == 1 {
            buf.settle(r.unwrap());
            buf.settle(i - 1..i);
        }
        largest = largest.max(std::fs::metadata(&acks).unwrap().len());
    }
    // 3000 settlements of about 20 bytes each, kept near the 4 KiB threshold.
    assert!(largest <= 4096 + 64, "largest log: {largest} bytes");
    assert!(!dir.path().join("acks.tmp").exists());
    drop(buf);
    let (mut buf, rec) = DiskBuffer::open(Options::new(dir.path(), 256 * 1024)).unwrap();
    assert_eq!(rec.entries, 0, "every settlement survived compaction");
    assert!(drain(&mut buf).is_empty());
}

#[test]
fn the_cap_refuses_with_full_and_disk_use_never_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 256 * 1024;
    let (mut buf, _) = DiskBuffer::open(Options::new(dir.path(), cap)).unwrap();
    let payload = vec![b'x'; 1000];
    let mut appended = 0u64;
    loop {
        match buf.append(b"{app=\"x\"}", 0, &payload) {
            Ok(_) => appended += 1,
            Err(AppendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        if appended.is_multiple_of(16) {
            buf.commit().unwrap();
        }
        assert!(buf.disk_bytes() <= cap);
    }
    buf.commit().unwrap();
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "lock")
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, buf.disk_bytes());
    assert!(
        on_disk <= cap && on_disk > cap - 2 * 1024,
        "{on_disk} of {cap}"
    );
    assert!(
        segments(dir.path()).len() >= 8,
        "segments are a fraction of a small cap"
    );
    // Delivering makes room again.
    let mut n = 0;
    let r = buf
        .next_batch(usize::MAX, usize::MAX, |_| n += 1)
        .unwrap()
        .unwrap();
    assert_eq!(n, appended);
    assert_eq!(buf.settle(r), appended);
    buf.append(b"{app=\"x\"}", 0, &payload).unwrap();
}

#[test]
fn an_entry_that_can_never_fit_is_too_large_not_full() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = DiskBuffer::open(Options::new(dir.path(), 64 * 1024)).unwrap();
    let big = vec![0u8; 64 * 1024];
    assert!(matches!(
        buf.append(b"", 0, &big),
        Err(AppendError::TooLarge)
    ));
    assert_eq!(buf.unsettled(), Tally::default());
}

#[test]
fn evict_oldest_drops_the_oldest_segment_in_flight_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..200);
    buf.commit().unwrap();
    let files = segments(dir.path());
    let second: Seq = files[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, r) = batch(&mut buf, 5);
    assert_eq!(
        buf.evict_oldest(),
        second,
        "the whole first segment, 5 of it in flight"
    );
    assert!(!files[0].exists());
    // The request in flight comes back: its entries were already counted dropped.
    assert_eq!(buf.settle(r.unwrap()), 0);
    let got = drain(&mut buf);
    assert_eq!(got.first().map(|g| g.0), Some(second));
    assert_eq!(buf.backlog().in_flight.entries, 200 - second);
    drop(buf);
    let (_, rec) = open(dir.path());
    assert_eq!(rec.entries, 200 - second, "evicted entries never come back");
}

#[test]
fn evicting_the_only_segment_drops_its_buffer_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..3);
    buf.commit().unwrap();
    append(&mut buf, 3..5);
    assert_eq!(buf.evict_oldest(), 5);
    assert_eq!(buf.evict_oldest(), 0, "nothing left");
    assert_eq!(buf.backlog(), Backlog::default());
    assert_eq!(append(&mut buf, 5..6), [5]);
    buf.commit().unwrap();
    assert_eq!(numbers(&drain(&mut buf)), [5]);
    drop(buf);
    let (mut buf, _) = open(dir.path());
    assert_eq!(numbers(&drain(&mut buf)), [5]);
}

#[test]
fn the_backlog_adds_up_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    let sum = |b: &DiskBuffer| {
        let l = b.backlog();
        assert_eq!(l.total(), b.unsettled());
        l
    };
    append(&mut buf, 0..50);
    // A segment filling up writes what was buffered for it.
    let l = sum(&buf);
    assert!(l.unwritten.entries > 0);
    assert_eq!(l.unwritten.entries + l.unsent.entries, 50);
    buf.commit().unwrap();
    assert_eq!(sum(&buf).unsent.entries, 50);
    let (_, r) = batch(&mut buf, 20);
    let l = sum(&buf);
    assert_eq!((l.unsent.entries, l.in_flight.entries), (30, 20));
    buf.settle(r.unwrap());
    append(&mut buf, 50..60);
    let l = sum(&buf);
    assert_eq!(
        (l.unwritten.entries, l.unsent.entries, l.in_flight.entries),
        (10, 30, 0)
    );
    buf.evict_oldest();
    sum(&buf);
    let taken = buf.take_unwritten(|_| {});
    assert_eq!(taken.entries, 10);
    assert_eq!(sum(&buf).unwritten, Tally::default());
}

#[test]
fn fsync_follows_the_policy() {
    use super::super::Op;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    for (policy, expected) in [
        (Fsync::EveryCommit, 3),
        (Fsync::Interval(std::time::Duration::from_secs(3600)), 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let syncs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&syncs);
        let opts = Options {
            fsync: policy,
            faults: Some(Arc::new(move |op, _: &Path| {
                if op == Op::Sync {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(usize::MAX)
            })),
            ..opts(dir.path())
        };
        let (mut buf, _) = DiskBuffer::open(opts).unwrap();
        for i in 0..3 {
            append(&mut buf, i..i + 1);
            buf.commit().unwrap();
        }
        assert_eq!(syncs.load(Ordering::Relaxed), expected, "{policy:?}");
        buf.close().unwrap();
        let after = syncs.load(Ordering::Relaxed);
        // Close syncs what is not synced yet, whatever the policy.
        assert_eq!(
            after,
            if expected == 0 { 1 } else { expected },
            "{policy:?}"
        );
    }
}

#[test]
fn the_buffer_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<DiskBuffer>();
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..3);
    let mut buf = std::thread::spawn(move || {
        buf.commit().unwrap();
        buf
    })
    .join()
    .unwrap();
    assert_eq!(numbers(&drain(&mut buf)), [0, 1, 2]);
}
