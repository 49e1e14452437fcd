//! Behaviour of the rotating file sink, observed through its events: every test awaits
//! what the sink reports (or `flush()`), none sleeps.

#![cfg(all(feature = "file", feature = "testing"))]

#[path = "support/file.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use sinkwatch::events::{self, reason, rotation_reason};
use sinkwatch::testing::FsOp;
use sinkwatch::testing::{self, CapturedEvent, Matcher};
use sinkwatch::Sink;
use sinkwatch::{Compression, FileSink, FsyncPolicy, ManualClock};
use sinkwatch::{ErrorKind, OverflowPolicy};

use support::{arrange, census, files, ids, json_lines, names, read_any, record, seqs, wait_total};

/// A time on a whole hour plus ten seconds, so a one-minute boundary is 50 s away.
fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 / 3600 * 3600 + 10)
}

fn ev_path(ev: &CapturedEvent, field: &str) -> std::path::PathBuf {
    ev.str(field).expect("path field").into()
}

const SHUTDOWN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn seed_size_rotation_keeps_exactly_the_records_written_before_it() {
    let (seen, dir, sink) = arrange(|b| b.max_file_size(1000));
    for seq in 0..12 {
        sink.try_write(record(0, seq)).unwrap();
    }
    let rotated = seen
        .wait(
            Matcher::sink_event(sink.id(), events::rotation_complete::NAME)
                .field("reason", rotation_reason::SIZE),
        )
        .fail_on(Matcher::sink_event(
            sink.id(),
            events::rotation_failed::NAME,
        ))
        .await
        .unwrap();
    let to = ev_path(&rotated, "to");
    let line_len = std::fs::read_to_string(&to)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .len() as u64
        + 1;
    let kept = seqs(&to);
    let k = kept.len() as u64;
    assert_eq!(
        kept,
        (0..k).collect::<Vec<_>>(),
        "the first records, in order"
    );
    assert_eq!(rotated.u64("bytes"), Some(k * line_len));
    assert_eq!(std::fs::metadata(&to).unwrap().len(), k * line_len);
    assert!(
        k * line_len <= 1000 && (k + 1) * line_len > 1000,
        "rotated as late as the limit allows"
    );
    assert_eq!(ev_path(&rotated, "from"), sink.active_path());
    sink.flush().await.unwrap();
    let report = sink.shutdown(SHUTDOWN).await;
    assert_eq!(
        (
            report.stats.accepted,
            report.stats.delivered,
            report.stats.dropped
        ),
        (12, 12, 0)
    );
    let all: Vec<u64> = files(dir.path()).iter().flat_map(|p| seqs(p)).collect();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..12).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_time_boundary_rotates_without_any_new_record() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let sink = FileSink::builder(dir.path())
        .rotate_every(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let events = testing::watch();
    for seq in 0..3 {
        sink.try_write(record(0, seq)).unwrap();
    }
    sink.flush().await.unwrap();
    clock.advance(Duration::from_secs(50));
    let rotated = events
        .wait(
            Matcher::sink_event(sink.id(), events::rotation_complete::NAME)
                .field("reason", rotation_reason::TIME),
        )
        .await
        .unwrap();
    let to = ev_path(&rotated, "to");
    assert_eq!(seqs(&to), vec![0, 1, 2]);
    assert!(
        to.to_string_lossy().contains("20231114T220100.000Z"),
        "named after the clock: {}",
        to.display()
    );
    assert_eq!(std::fs::metadata(sink.active_path()).unwrap().len(), 0);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn an_empty_file_is_not_rotated_at_a_boundary() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let sink = FileSink::builder(dir.path())
        .rotate_every(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let events = testing::watch();
    clock.advance(Duration::from_secs(120));
    // The boundary woke the worker before this flush reached it.
    sink.flush().await.unwrap();
    events
        .assert_none_before(
            Matcher::sink_event(sink.id(), events::rotation_complete::NAME),
            Matcher::sink_event(sink.id(), events::flush_complete::NAME),
        )
        .await
        .unwrap();
    assert_eq!(names(dir.path()), vec!["app.log"]);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn size_and_time_rotation_work_together() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let sink = FileSink::builder(dir.path())
        .max_file_size(1000)
        .rotate_every(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let events = testing::watch();
    let size = Matcher::sink_event(sink.id(), events::rotation_complete::NAME)
        .field("reason", rotation_reason::SIZE);
    let time = Matcher::sink_event(sink.id(), events::rotation_complete::NAME)
        .field("reason", rotation_reason::TIME);
    for seq in 0..12 {
        sink.try_write(record(0, seq)).unwrap();
    }
    sink.flush().await.unwrap();
    events.wait(size).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let by_time = events.wait(time).await.unwrap();
    let last = seqs(&ev_path(&by_time, "to"));
    assert_eq!(
        last.last(),
        Some(&11),
        "the time rotation took the file's tail"
    );
    let total: usize = files(dir.path()).iter().map(|p| seqs(p).len()).sum();
    assert_eq!(total, 12);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn manual_rotation_resolves_with_the_rotated_file() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path()).build().unwrap();
    assert_eq!(
        sink.rotate().await.unwrap(),
        None,
        "an empty file is not rotated"
    );
    for seq in 0..4 {
        sink.try_write(record(0, seq)).unwrap();
    }
    let rotated = sink.rotate().await.unwrap().unwrap();
    assert_eq!(seqs(&rotated), vec![0, 1, 2, 3]);
    assert_eq!(std::fs::metadata(sink.active_path()).unwrap().len(), 0);
    sink.shutdown(SHUTDOWN).await;
    assert_eq!(sink.rotate().await.unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn rotate_writes_what_came_before_and_is_not_a_flush() {
    let (seen, _dir, sink) = arrange(|b| b);
    for seq in 0..4 {
        sink.try_write(record(0, seq)).unwrap();
    }
    let rotated = sink.rotate().await.unwrap().unwrap();
    assert_eq!(seqs(&rotated), vec![0, 1, 2, 3]);
    // flush_complete means a flush() completed: only the real one below may emit it.
    sink.flush().await.unwrap();
    let flushes = seen.take_all(Matcher::sink_event(sink.id(), events::flush_complete::NAME));
    assert_eq!(flushes.len(), 1, "{flushes:?}");
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn after_a_flush_every_size_rotation_so_far_has_been_captured() {
    let (seen, dir, sink) = arrange(|b| b.max_file_size(2000));
    let rotations = || Matcher::sink_event(sink.id(), events::rotation_complete::NAME);
    for seq in 0..100 {
        sink.try_write(record(0, seq)).unwrap();
    }
    sink.flush().await.unwrap();
    let first = seen.take_all(rotations());
    let rotated = files(dir.path()).len() - 1;
    assert!(
        rotated > 1,
        "the test writes enough to rotate several times"
    );
    assert_eq!(first.len(), rotated);
    for seq in 100..150 {
        sink.try_write(record(0, seq)).unwrap();
    }
    sink.flush().await.unwrap();
    let second = seen.take_all(rotations());
    assert_eq!(first.len() + second.len(), files(dir.path()).len() - 1);
    assert!(!second.is_empty(), "only the later rotations, none twice");
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn rotated_names_never_collide() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    // A clock that never moves: every rotation has the same time.
    let sink = FileSink::builder(dir.path())
        .clock(ManualClock::new(start_time()))
        .build()
        .unwrap();
    let mut rotated = Vec::new();
    for seq in 0..5 {
        sink.try_write(record(0, seq)).unwrap();
        rotated.push(sink.rotate().await.unwrap().unwrap());
    }
    for (seq, path) in rotated.iter().enumerate() {
        assert_eq!(
            seqs(path),
            vec![seq as u64],
            "{} was overwritten",
            path.display()
        );
    }
    let mut sorted = rotated.clone();
    sorted.sort();
    assert_eq!(sorted, rotated, "names sort in rotation order");
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest() {
    let (seen, dir, sink) = arrange(|b| b.max_files(2).clock(ManualClock::new(start_time())));
    let mut rotated = Vec::new();
    for seq in 0..5 {
        sink.try_write(record(0, seq)).unwrap();
        rotated.push(sink.rotate().await.unwrap().unwrap());
    }
    wait_total(&seen, sink.id(), events::retention_pruned::NAME, "files", 3).await;
    let mut left = files(dir.path());
    left.retain(|p| p != sink.active_path());
    assert_eq!(left, rotated[3..].to_vec());
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn retention_by_age_follows_the_clock() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let sink = FileSink::builder(dir.path())
        .max_age(Duration::from_secs(3600))
        .clock(clock.clone())
        .build()
        .unwrap();
    let events = testing::watch();
    sink.try_write(record(0, 0)).unwrap();
    let old = sink.rotate().await.unwrap().unwrap();
    clock.advance(Duration::from_secs(3599));
    sink.try_write(record(0, 1)).unwrap();
    let younger = sink.rotate().await.unwrap().unwrap();
    clock.advance(Duration::from_secs(2));
    sink.try_write(record(0, 2)).unwrap();
    let newest = sink.rotate().await.unwrap().unwrap();
    let pruned = events
        .wait(Matcher::sink_event(
            sink.id(),
            events::retention_pruned::NAME,
        ))
        .await
        .unwrap();
    assert_eq!(pruned.u64("files"), Some(1));
    assert!(!old.exists());
    assert!(younger.exists() && newest.exists());
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn retention_by_total_bytes_removes_the_oldest() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let line = {
        let mut v = Vec::new();
        record(0, 0).write_json(&mut v);
        v.len() as u64 + 1
    };
    let sink = FileSink::builder(dir.path())
        .max_total_bytes(2 * line + line / 2)
        .clock(ManualClock::new(start_time()))
        .build()
        .unwrap();
    let events = testing::watch();
    let mut rotated = Vec::new();
    for seq in 0..4 {
        sink.try_write(record(0, seq)).unwrap();
        rotated.push(sink.rotate().await.unwrap().unwrap());
    }
    let pruned = wait_total(
        &events,
        sink.id(),
        events::retention_pruned::NAME,
        "files",
        2,
    )
    .await;
    let bytes: u64 = pruned.iter().map(|e| e.u64("bytes").unwrap()).sum();
    assert_eq!(bytes, 2 * line);
    assert!(!rotated[0].exists() && !rotated[1].exists());
    assert!(rotated[2].exists() && rotated[3].exists());
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn retention_never_touches_a_foreign_file_sharing_the_prefix() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let foreign = [
        "app.log.1",
        "app.old.log",
        "app.20231114T221320.123Z.log.bak",
        "app-20231114T221320.123Z.log",
        "app.20231114T221320.123Z.txt",
        "app.20231114T221320.123Z_7.log",
        "app.backup.20231114T221320.123Z.log",
    ];
    for name in foreign {
        std::fs::write(dir.path().join(name), "not the sink's").unwrap();
    }
    let ours = [
        "app.20200101T000000.000Z.log",
        "app.20200102T000000.000Z.log.gz",
    ];
    for name in ours {
        std::fs::write(dir.path().join(name), "old").unwrap();
    }
    let events = testing::watch();
    let sink = FileSink::builder(dir.path()).max_files(1).build().unwrap();
    let pruned = events
        .wait(Matcher::sink_event(
            sink.id(),
            events::retention_pruned::NAME,
        ))
        .await
        .unwrap();
    assert_eq!(
        (pruned.u64("files"), pruned.u64("bytes")),
        (Some(1), Some(3))
    );
    assert!(!dir.path().join(ours[0]).exists(), "the older of ours goes");
    assert!(
        dir.path().join(ours[1]).exists(),
        "the newest of ours stays"
    );
    for name in foreign {
        assert!(dir.path().join(name).exists(), "{name} was deleted");
    }
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn compression_replaces_rotated_files_with_whole_archives() {
    let (seen, _dir, sink) = arrange(|b| b.compression(Compression::Gzip));
    for seq in 0..50 {
        sink.try_write(record(0, seq)).unwrap();
    }
    let rotated = sink.rotate().await.unwrap().unwrap();
    let done = seen
        .wait(Matcher::sink_event(
            sink.id(),
            events::compression_complete::NAME,
        ))
        .fail_on(Matcher::sink_event(
            sink.id(),
            events::compression_failed::NAME,
        ))
        .await
        .unwrap();
    assert_eq!(ev_path(&done, "source"), rotated);
    let archive = ev_path(&done, "path");
    assert_eq!(
        archive.to_string_lossy(),
        format!("{}.gz", rotated.display())
    );
    assert!(!rotated.exists());
    assert_eq!(seqs(&archive), (0..50).collect::<Vec<_>>());
    assert_eq!(
        done.u64("bytes_out"),
        Some(std::fs::metadata(&archive).unwrap().len())
    );
    assert!(done.u64("bytes_out") < done.u64("bytes_in"));
    sink.shutdown(SHUTDOWN).await;
}

/// Writes `data` gzipped to `path`.
fn gz(path: &std::path::Path, data: &[u8]) {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    e.write_all(data).unwrap();
    e.finish().unwrap();
}

#[tokio::test]
async fn start_up_recovers_from_a_crash_at_every_step_of_compression() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = |n: u64| -> Vec<u8> {
        let mut v = Vec::new();
        for seq in 0..20 {
            record(n, seq).write_json(&mut v);
            v.push(b'\n');
        }
        v
    };
    // Crashed while writing the archive: a truncated temporary beside the plain file.
    let x = "app.20240101T000000.000Z.log";
    std::fs::write(d.join(x), data(1)).unwrap();
    let full = {
        gz(&d.join("scratch"), &data(1));
        std::fs::read(d.join("scratch")).unwrap()
    };
    std::fs::remove_file(d.join("scratch")).unwrap();
    std::fs::write(d.join(format!("{x}.gz.tmp")), &full[..full.len() / 2]).unwrap();
    // Crashed after the rename, before removing the plain file.
    let y = "app.20240101T000001.000Z.log";
    std::fs::write(d.join(y), data(2)).unwrap();
    gz(&d.join(format!("{y}.gz")), &data(2));
    // Crashed after rotating, before compressing.
    let z = "app.20240101T000002.000Z.log";
    std::fs::write(d.join(z), data(3)).unwrap();

    let events = testing::watch();
    let sink = FileSink::builder(d)
        .compression(Compression::Gzip)
        .build()
        .unwrap();
    // The maintenance lane runs jobs in order: once a fresh rotation is compressed, the
    // start-up repairs before it are done.
    sink.try_write(record(4, 0)).unwrap();
    let fresh = sink.rotate().await.unwrap().unwrap();
    events
        .wait(
            Matcher::sink_event(sink.id(), events::compression_complete::NAME)
                .field("source", &*fresh.to_string_lossy()),
        )
        .fail_on(Matcher::sink_event(
            sink.id(),
            events::compression_failed::NAME,
        ))
        .await
        .unwrap();
    for (name, n) in [(x, 1), (y, 2), (z, 3)] {
        assert!(!d.join(name).exists(), "{name} plain file left");
        assert!(!d.join(format!("{name}.gz.tmp")).exists());
        assert_eq!(
            read_any(&d.join(format!("{name}.gz"))),
            data(n),
            "{name}.gz"
        );
    }
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_restart_appends_and_counts_the_existing_size() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let first = FileSink::builder(dir.path()).build().unwrap();
    for seq in 0..3 {
        first.try_write(record(0, seq)).unwrap();
    }
    first.shutdown(SHUTDOWN).await;
    let line = std::fs::metadata(first.active_path()).unwrap().len() / 3;

    let events = testing::watch();
    // Room for one more line on top of the three already there.
    let second = FileSink::builder(dir.path())
        .max_file_size(4 * line + line / 2)
        .build()
        .unwrap();
    for seq in 3..5 {
        second.try_write(record(0, seq)).unwrap();
    }
    let rotated = events
        .wait(Matcher::sink_event(
            second.id(),
            events::rotation_complete::NAME,
        ))
        .await
        .unwrap();
    assert_eq!(rotated.u64("bytes"), Some(4 * line));
    assert_eq!(seqs(&ev_path(&rotated, "to")), vec![0, 1, 2, 3]);
    second.flush().await.unwrap();
    assert_eq!(seqs(second.active_path()), vec![4]);
    second.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn an_active_file_deleted_under_the_sink_is_reopened() {
    let (seen, _dir, sink) = arrange(|b| b);
    sink.try_write(record(0, 0)).unwrap();
    sink.flush().await.unwrap();
    std::fs::remove_file(sink.active_path()).unwrap();
    sink.try_write(record(0, 1)).unwrap();
    sink.flush().await.unwrap();
    let reopened = seen
        .wait(Matcher::sink_event(sink.id(), events::file_reopened::NAME))
        .await
        .unwrap();
    assert_eq!(ev_path(&reopened, "path"), sink.active_path());
    assert_eq!(seqs(sink.active_path()), vec![1]);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn an_active_file_moved_away_is_reopened_and_the_moved_file_kept() {
    let (seen, dir, sink) = arrange(|b| b);
    sink.try_write(record(0, 0)).unwrap();
    sink.flush().await.unwrap();
    let moved = dir.path().join("moved-by-logrotate");
    std::fs::rename(sink.active_path(), &moved).unwrap();
    sink.try_write(record(0, 1)).unwrap();
    sink.flush().await.unwrap();
    seen.wait(Matcher::sink_event(sink.id(), events::file_reopened::NAME))
        .await
        .unwrap();
    assert_eq!(seqs(&moved), vec![0]);
    assert_eq!(seqs(sink.active_path()), vec![1]);
    sink.shutdown(SHUTDOWN).await;
}

fn disk_full() -> std::io::Error {
    std::io::Error::from_raw_os_error(28)
}

#[tokio::test]
async fn a_full_disk_drops_and_reports_exactly_then_recovers() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(true));
    let f = full.clone();
    let sink = FileSink::builder(dir.path())
        .fault_hook(move |len| {
            if f.load(Ordering::SeqCst) {
                Err(disk_full())
            } else {
                Ok(len)
            }
        })
        .build()
        .unwrap();
    let events = testing::watch();
    for seq in 0..5 {
        sink.try_write(record(0, seq)).unwrap();
    }
    sink.flush().await.unwrap();
    let failed = wait_total(&events, sink.id(), events::write_failed::NAME, "records", 5).await;
    assert!(
        failed[0].str("error").unwrap().contains("No space left"),
        "{:?}",
        failed[0].str("error")
    );
    let dropped = Matcher::sink_event(sink.id(), events::records_dropped::NAME)
        .field("reason", reason::WRITE_FAILED);
    support::wait_total_matching(&events, dropped, "count", 5).await;
    assert_eq!(std::fs::metadata(sink.active_path()).unwrap().len(), 0);

    full.store(false, Ordering::SeqCst);
    for seq in 5..8 {
        sink.try_write(record(0, seq)).unwrap();
    }
    sink.flush().await.unwrap();
    assert_eq!(seqs(sink.active_path()), vec![5, 6, 7]);
    let stats = sink.stats();
    assert_eq!((stats.accepted, stats.delivered, stats.dropped), (8, 3, 5));
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_write_cut_short_leaves_no_torn_line_and_counts_only_written_bytes() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let line = {
        let mut v = Vec::new();
        record(0, 0).write_json(&mut v);
        v.len() + 1
    };
    // The disk has room for two and a half lines.
    let room = Arc::new(AtomicUsize::new(2 * line + line / 2));
    let r = room.clone();
    let sink = FileSink::builder(dir.path())
        .max_file_size(1_000_000)
        .fault_hook(move |len| match r.load(Ordering::SeqCst) {
            0 => Err(disk_full()),
            left => {
                let n = len.min(left);
                r.fetch_sub(n, Ordering::SeqCst);
                Ok(n)
            }
        })
        .build()
        .unwrap();
    let events = testing::watch();
    for seq in 0..10 {
        sink.try_write(record(0, seq)).unwrap();
    }
    sink.flush().await.unwrap();
    let failed = wait_total(&events, sink.id(), events::write_failed::NAME, "records", 8).await;
    let lost: u64 = failed.iter().map(|e| e.u64("bytes").unwrap()).sum();
    assert_eq!(lost, 8 * line as u64);
    assert_eq!(seqs(sink.active_path()), vec![0, 1]);
    assert_eq!(
        std::fs::metadata(sink.active_path()).unwrap().len(),
        2 * line as u64
    );

    room.store(usize::MAX, Ordering::SeqCst);
    sink.try_write(record(0, 10)).unwrap();
    let rotated = sink.rotate().await.unwrap().unwrap();
    assert_eq!(seqs(&rotated), vec![0, 1, 10]);
    let stats = sink.stats();
    assert_eq!((stats.accepted, stats.delivered, stats.dropped), (11, 3, 8));
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn drop_newest_reports_exactly_what_it_dropped() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    // The first write blocks the worker until released, so the queue fills deterministically.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((entered_tx, release_rx)));
    let sink = FileSink::builder(dir.path())
        .queue_capacity(4)
        .fault_hook(move |len| {
            if let Some((entered, release)) = gate.lock().unwrap().take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            Ok(len)
        })
        .build()
        .unwrap();
    let events = testing::watch();
    sink.try_write(record(0, 0)).unwrap();
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    for seq in 1..11 {
        sink.try_write(record(0, seq)).unwrap();
    }
    release_tx.send(()).unwrap();
    sink.flush().await.unwrap();
    let dropped = Matcher::sink_event(sink.id(), events::records_dropped::NAME)
        .field("reason", reason::QUEUE_FULL);
    // The bound covers the record the worker holds (blocked in its write), so three more fit.
    support::wait_total_matching(&events, dropped, "count", 7).await;
    assert_eq!(seqs(sink.active_path()), vec![0, 1, 2, 3]);
    let stats = sink.stats();
    assert_eq!((stats.accepted, stats.delivered, stats.dropped), (11, 4, 7));
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn the_wait_policy_loses_nothing_when_the_queue_is_full() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path())
        .queue_capacity(2)
        .overflow(OverflowPolicy::Wait)
        .build()
        .unwrap();
    for seq in 0..200 {
        sink.write_async(record(0, seq)).await.unwrap();
    }
    let report = sink.shutdown(SHUTDOWN).await;
    assert!(report.completed);
    assert_eq!((report.stats.delivered, report.stats.dropped), (200, 0));
    assert_eq!(seqs(sink.active_path()), (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn shutdown_drains_reports_totals_and_refuses_later_records() {
    let (seen, _dir, sink) = arrange(|b| b);
    for seq in 0..100 {
        sink.try_write(record(0, seq)).unwrap();
    }
    let report = sink.shutdown(SHUTDOWN).await;
    assert!(report.completed);
    assert_eq!(report.undelivered, 0);
    let closed = seen
        .wait(Matcher::sink_event(sink.id(), events::sink_closed::NAME))
        .await
        .unwrap();
    assert_eq!(
        (
            closed.u64("accepted"),
            closed.u64("delivered"),
            closed.u64("dropped")
        ),
        (Some(100), Some(100), Some(0))
    );
    assert_eq!(json_lines(sink.active_path()).len(), 100);
    assert_eq!(
        sink.try_write(record(0, 100)).unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[tokio::test]
async fn dropping_every_handle_drains_the_queue() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path()).build().unwrap();
    let (id, path) = (sink.id().clone(), sink.active_path().to_owned());
    let events = testing::watch();
    for seq in 0..10 {
        sink.try_write(record(0, seq)).unwrap();
    }
    drop(sink);
    events
        .wait(Matcher::sink_event(&id, events::sink_closed::NAME))
        .await
        .unwrap();
    assert_eq!(seqs(&path), (0..10).collect::<Vec<_>>());
}

#[test]
fn build_needs_no_runtime_and_names_the_path_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let err = FileSink::builder(blocker.join("logs")).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(
        err.to_string().contains(&*blocker.to_string_lossy()),
        "{err}"
    );
    let sink = FileSink::builder(dir.path().join("new/nested"))
        .build()
        .unwrap();
    assert!(sink.active_path().exists());
    let report = Sink::shutdown_blocking(&sink, SHUTDOWN);
    assert!(report.completed);
}

#[test]
fn a_bad_setting_is_reported_by_build() {
    let err = FileSink::builder("unused")
        .max_file_size(0)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("max_file_size"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_through_many_compressed_rotations_lose_and_tear_nothing() {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 1500;
    let (seen, dir, sink) = arrange(|b| {
        b.max_file_size(16 * 1024)
            .compression(Compression::Gzip)
            .overflow(OverflowPolicy::Wait)
            .queue_capacity(256)
    });
    let writers: Vec<_> = (0..TASKS)
        .map(|task| {
            let sink = sink.clone();
            tokio::spawn(async move {
                for seq in 0..PER_TASK {
                    sink.write_async(record(task, seq)).await.unwrap();
                }
            })
        })
        .collect();
    seen.wait_n(
        Matcher::sink_event(sink.id(), events::rotation_complete::NAME),
        50,
    )
    .timeout(Duration::from_secs(60))
    .fail_on(Matcher::sink_event(
        sink.id(),
        events::rotation_failed::NAME,
    ))
    .fail_on(Matcher::sink_event(sink.id(), events::write_failed::NAME))
    .await
    .unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let report = sink.shutdown(Duration::from_secs(60)).await;
    assert!(report.completed);
    assert_eq!(
        (report.stats.delivered, report.stats.dropped),
        (TASKS * PER_TASK, 0)
    );
    let seen = census(dir.path());
    assert_eq!(seen.len() as u64, TASKS * PER_TASK);
    let repeated: Vec<_> = seen.iter().filter(|(_, &n)| n != 1).collect();
    assert!(
        repeated.is_empty(),
        "records found more than once: {repeated:?}"
    );
    for task in 0..TASKS {
        for seq in 0..PER_TASK {
            assert!(seen.contains_key(&(task, seq)), "({task}, {seq}) missing");
        }
    }
    let archives = files(dir.path())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .count();
    assert!(archives >= 50, "only {archives} archives");
    // Within one writer, records keep their order across files (names sort by rotation,
    // and the active file, holding the newest, sorts last).
    let mut by_task = std::collections::BTreeMap::<u64, Vec<u64>>::new();
    for path in files(dir.path()) {
        for (task, seq) in ids(&path) {
            by_task.entry(task).or_default().push(seq);
        }
    }
    for seqs in by_task.values() {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a writer's records are out of order"
        );
    }
}

fn io_error() -> std::io::Error {
    std::io::Error::other("injected I/O error")
}

/// A sink whose syncs all fail, with the given policy.
fn failing_sync(dir: &std::path::Path, policy: FsyncPolicy) -> FileSink {
    FileSink::builder(dir)
        .fsync(policy)
        .fs_fault_hook(|op, _| match op {
            FsOp::Sync => Err(io_error()),
            _ => Ok(()),
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_failed_sync_on_flush_is_reported_and_the_flush_still_resolves() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = failing_sync(dir.path(), FsyncPolicy::OnFlush);
    let events = testing::watch();
    sink.try_write(record(0, 0)).unwrap();
    sink.flush().await.unwrap();
    let failed = events
        .wait(Matcher::sink_event(sink.id(), events::sync_failed::NAME))
        .await
        .unwrap();
    assert_eq!(ev_path(&failed, "path"), sink.active_path());
    assert!(failed.str("error").unwrap().contains("injected"));
    assert_eq!(seqs(sink.active_path()), vec![0]);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_failed_sync_before_rotation_is_reported_and_the_rotation_still_happens() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = failing_sync(dir.path(), FsyncPolicy::OnRotation);
    let events = testing::watch();
    sink.try_write(record(0, 0)).unwrap();
    let rotated = sink.rotate().await.unwrap().expect("a rotated file");
    events
        .wait(Matcher::sink_event(sink.id(), events::sync_failed::NAME))
        .await
        .unwrap();
    assert_eq!(seqs(&rotated), vec![0]);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_failed_sync_at_shutdown_is_reported_before_the_sink_closes() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = failing_sync(dir.path(), FsyncPolicy::OnRotation);
    let events = testing::watch();
    sink.try_write(record(0, 0)).unwrap();
    let report = sink.shutdown(SHUTDOWN).await;
    assert_eq!(report.stats.delivered, 1);
    events
        .wait_sequence(vec![
            Matcher::sink_event(sink.id(), events::sync_failed::NAME),
            Matcher::sink_event(sink.id(), events::sink_closed::NAME),
        ])
        .await
        .unwrap();
}

#[tokio::test]
async fn retention_reports_a_file_it_cannot_remove_and_removes_it_on_a_later_pass() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let refuse = Arc::new(AtomicBool::new(true));
    let r = refuse.clone();
    let sink = FileSink::builder(dir.path())
        .max_files(1)
        .clock(ManualClock::new(start_time()))
        .fs_fault_hook(move |op, _| match op {
            FsOp::Remove if r.load(Ordering::SeqCst) => Err(io_error()),
            _ => Ok(()),
        })
        .build()
        .unwrap();
    let events = testing::watch();
    sink.try_write(record(0, 0)).unwrap();
    let first = sink.rotate().await.unwrap().unwrap();
    sink.try_write(record(0, 1)).unwrap();
    sink.rotate().await.unwrap().unwrap();
    let failed = events
        .wait(Matcher::sink_event(
            sink.id(),
            events::retention_failed::NAME,
        ))
        .fail_on(Matcher::sink_event(
            sink.id(),
            events::retention_pruned::NAME,
        ))
        .await
        .unwrap();
    assert_eq!(ev_path(&failed, "path"), first);
    assert!(failed.str("error").unwrap().contains("injected"));
    assert!(first.exists(), "the file stays");
    refuse.store(false, Ordering::SeqCst);
    sink.try_write(record(0, 2)).unwrap();
    sink.rotate().await.unwrap().unwrap();
    // The next pass removes both older files: the one that failed and the one now past the count.
    wait_total(
        &events,
        sink.id(),
        events::retention_pruned::NAME,
        "files",
        2,
    )
    .await;
    assert!(!first.exists());
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn retention_reports_a_directory_it_cannot_list() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    // Watching before the sink starts: its start-up pass may report at once.
    let events = testing::watch();
    let sink = FileSink::builder(dir.path())
        .max_files(1)
        .fs_fault_hook(|op, _| match op {
            FsOp::ListDir => Err(io_error()),
            _ => Ok(()),
        })
        .build()
        .unwrap();
    // The start-up pass already tries to list.
    let failed = events
        .wait(Matcher::sink_event(
            sink.id(),
            events::retention_failed::NAME,
        ))
        .await
        .unwrap();
    assert_eq!(
        std::fs::canonicalize(ev_path(&failed, "path")).unwrap(),
        std::fs::canonicalize(dir.path()).unwrap()
    );
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_clock_stepped_back_rotates_at_the_next_boundary_of_the_new_time() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let sink = FileSink::builder(dir.path())
        .rotate_every(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let events = testing::watch();
    sink.try_write(record(0, 0)).unwrap();
    sink.flush().await.unwrap();
    // Back one hour (an NTP step): the file's interval is over as the clock now reads it.
    // Waiting for the boundary armed before, an hour of the new time away, would keep the
    // file open that long.
    clock.set(start_time() - Duration::from_secs(3600));
    clock.advance(Duration::from_secs(50));
    let rotated = events
        .wait(
            Matcher::sink_event(sink.id(), events::rotation_complete::NAME)
                .field("reason", rotation_reason::TIME),
        )
        .await
        .unwrap();
    assert_eq!(seqs(&ev_path(&rotated, "to")), vec![0]);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_file_deleted_between_the_identity_check_and_the_write_loses_nothing() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("app.log");
    let once = AtomicBool::new(true);
    let path = active.clone();
    // The hook runs after the sink checked the file is still there, just before the write.
    let sink = FileSink::builder(dir.path())
        .fault_hook(move |len| {
            if once.swap(false, Ordering::SeqCst) {
                std::fs::remove_file(&path).unwrap();
            }
            Ok(len)
        })
        .build()
        .unwrap();
    let events = testing::watch();
    sink.try_write(record(0, 0)).unwrap();
    sink.flush().await.unwrap();
    events
        .wait(Matcher::sink_event(sink.id(), events::file_reopened::NAME))
        .await
        .unwrap();
    assert_eq!(seqs(&active), vec![0]);
    let report = sink.shutdown(SHUTDOWN).await;
    assert_eq!((report.stats.delivered, report.stats.dropped), (1, 0));
}

#[tokio::test]
async fn a_cancelled_write_async_under_wait_keeps_the_totals_exact() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((entered_tx, release_rx)));
    // Room for two: the record the worker holds (stuck in its write) still counts.
    let sink = FileSink::builder(dir.path())
        .queue_capacity(2)
        .overflow(OverflowPolicy::Wait)
        .fault_hook(move |len| {
            if let Some((entered, release)) = gate.lock().unwrap().take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            Ok(len)
        })
        .build()
        .unwrap();
    let events = testing::watch();
    sink.write_async(record(0, 0)).await.unwrap();
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    sink.write_async(record(0, 1)).await.unwrap();
    // The queue is full: this write waits for room, and is cancelled after one poll.
    let cancelled = tokio::time::timeout(Duration::ZERO, sink.write_async(record(0, 2))).await;
    assert!(cancelled.is_err(), "the queue was full");
    release_tx.send(()).unwrap();
    sink.write_async(record(0, 3)).await.unwrap();
    let report = sink.shutdown(SHUTDOWN).await;
    let closed = events
        .wait(Matcher::sink_event(sink.id(), events::sink_closed::NAME))
        .await
        .unwrap();
    assert_eq!(
        (
            closed.u64("accepted"),
            closed.u64("delivered"),
            closed.u64("dropped")
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(report.stats.accepted, 3);
    assert_eq!(seqs(sink.active_path()), vec![0, 1, 3]);
}

/// Every ASCII control character, DEL, and the Unicode line separators.
fn hostile() -> String {
    let mut s: String = (0_u8..0x20).map(char::from).collect();
    s.push('\u{7f}');
    s.push_str("\u{85}\u{2028}\u{2029} \"quoted\" a=b \\");
    s
}

fn hostile_record() -> sinkwatch::Record {
    sinkwatch::Record::new(tracing::Level::INFO, hostile())
        .with_target(hostile())
        .with_field("v", hostile())
        .with_field("after", 1_u64)
}

#[tokio::test]
async fn control_characters_never_break_a_json_line() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path()).build().unwrap();
    sink.try_write(hostile_record()).unwrap();
    sink.try_write(record(0, 1)).unwrap();
    sink.flush().await.unwrap();
    let lines = json_lines(sink.active_path());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["message"], hostile());
    assert_eq!(lines[0]["fields"]["v"], hostile());
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn control_characters_never_break_a_text_line() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path())
        .format(sinkwatch::Format::Text)
        .build()
        .unwrap();
    sink.try_write(hostile_record()).unwrap();
    sink.try_write(record(0, 1)).unwrap();
    sink.flush().await.unwrap();
    let text = std::fs::read_to_string(sink.active_path()).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 3, "two lines and the final newline: {text:?}");
    assert!(lines[0].ends_with("after=1"), "{:?}", lines[0]);
    assert!(!lines[0].contains('\r'));
    assert!(lines[1].contains("request handled"));
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_line_longer_than_the_size_limit_is_written_whole_in_a_file_of_its_own() {
    let (seen, _dir, sink) = arrange(|b| b.max_file_size(1000));
    // Over the queue's default byte bound (4 MiB): `write` waits until the queue is empty,
    // where any one record fits.
    let long = "y".repeat(8 * 1024 * 1024);
    sink.write(record(0, 0)).unwrap();
    sink.write(record(0, 1).with_field("long", long.clone()))
        .unwrap();
    sink.write(record(0, 2)).unwrap();
    sink.flush().await.unwrap();
    let rotations = seen
        .wait_n(
            Matcher::sink_event(sink.id(), events::rotation_complete::NAME),
            2,
        )
        .await
        .unwrap();
    assert_eq!(seqs(&ev_path(&rotations[0], "to")), vec![0]);
    let alone = json_lines(&ev_path(&rotations[1], "to"));
    assert_eq!(alone.len(), 1);
    assert_eq!(
        alone[0]["fields"]["long"].as_str().unwrap().len(),
        long.len()
    );
    assert_eq!(seqs(sink.active_path()), vec![2]);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_restart_in_the_same_millisecond_neither_collides_nor_prunes_one_too_many() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let build = || {
        FileSink::builder(dir.path())
            .max_files(2)
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let first = build();
    let mut rotated = Vec::new();
    for seq in 0..2 {
        first.try_write(record(0, seq)).unwrap();
        rotated.push(first.rotate().await.unwrap().unwrap());
    }
    first.try_write(record(0, 2)).unwrap();
    first.shutdown(SHUTDOWN).await;

    let events = testing::watch();
    // The clock has not moved: every name this run makes is in the same millisecond.
    let second = build();
    rotated.push(second.rotate().await.unwrap().unwrap());
    let pruned = events
        .wait(Matcher::sink_event(
            second.id(),
            events::retention_pruned::NAME,
        ))
        .await
        .unwrap();
    assert_eq!(pruned.u64("files"), Some(1));
    let mut left = files(dir.path());
    left.retain(|p| p != second.active_path());
    assert_eq!(left, rotated[1..].to_vec(), "the two newest, in name order");
    assert_eq!(seqs(&rotated[1]), vec![1]);
    assert_eq!(seqs(&rotated[2]), vec![2]);
    second.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn retention_at_start_up_counts_a_crashed_compression_once() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = |n: u64| -> Vec<u8> {
        let mut v = Vec::new();
        record(n, 0).write_json(&mut v);
        v.push(b'\n');
        v
    };
    let name = |s: u32| format!("app.20240101T00000{s}.000Z.log");
    gz(&d.join(format!("{}.gz", name(0))), &data(0));
    // Crashed after the archive's rename, before removing the plain file.
    std::fs::write(d.join(name(1)), data(1)).unwrap();
    gz(&d.join(format!("{}.gz", name(1))), &data(1));
    gz(&d.join(format!("{}.gz", name(2))), &data(2));
    let events = testing::watch();
    let sink = FileSink::builder(d)
        .compression(Compression::Gzip)
        .max_files(2)
        .build()
        .unwrap();
    let pruned = events
        .wait(Matcher::sink_event(
            sink.id(),
            events::retention_pruned::NAME,
        ))
        .await
        .unwrap();
    assert_eq!(pruned.u64("files"), Some(1));
    assert_eq!(
        names(d),
        vec![
            "app.20240101T000001.000Z.log.gz".to_string(),
            "app.20240101T000002.000Z.log.gz".to_string(),
            "app.log".to_string(),
        ]
    );
    assert_eq!(ids(&d.join(format!("{}.gz", name(1)))), vec![(1, 0)]);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn shutdown_past_its_deadline_stops_a_running_compression_before_the_sink_closes() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    // The compression's first chunk blocks until released: a compression still running when
    // the shutdown deadline passes.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((entered_tx, release_rx)));
    let sink = FileSink::builder(dir.path())
        .compression(Compression::Gzip)
        .fs_fault_hook(move |op, _| {
            if op == FsOp::CompressChunk {
                if let Some((entered, release)) = gate.lock().unwrap().take() {
                    entered.send(()).unwrap();
                    release.recv().unwrap();
                }
            }
            Ok(())
        })
        .build()
        .unwrap();
    let events = testing::watch();
    sink.try_write(record(0, 0)).unwrap();
    let rotated = sink.rotate().await.unwrap().unwrap();
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    // The deadline passes at once; the shutdown returns after its grace period while the
    // worker still waits for the stuck compression.
    let report = sink.shutdown(Duration::ZERO).await;
    assert!(
        !report.completed,
        "the compression was stuck past the deadline"
    );
    release_tx.send(()).unwrap();
    let failed = events
        .wait(Matcher::sink_event(
            sink.id(),
            events::compression_failed::NAME,
        ))
        .fail_on(Matcher::sink_event(
            sink.id(),
            events::compression_complete::NAME,
        ))
        .await
        .unwrap();
    assert!(failed.str("error").unwrap().contains("shutdown deadline"));
    let closed = events
        .wait(Matcher::sink_event(sink.id(), events::sink_closed::NAME))
        .await
        .unwrap();
    assert!(
        failed.seq() < closed.seq(),
        "sink_closed is the sink's last event"
    );
    assert_eq!(
        names(dir.path()),
        vec![
            rotated.file_name().unwrap().to_string_lossy().into_owned(),
            "app.log".to_string(),
        ],
        "the plain file stays, no temporary archive"
    );
    assert_eq!(seqs(&rotated), vec![0]);
}
