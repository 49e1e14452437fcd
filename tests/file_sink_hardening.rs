//! The file sink against what crashes, slow compression, long runs of same-millisecond
//! rotations and hostile directories leave behind (issue 10). Every test awaits what the
//! sink reports (or `flush()`, or shutdown), none sleeps.

#![cfg(all(feature = "file", feature = "testing"))]

#[path = "support/child.rs"]
mod child;
#[path = "support/file.rs"]
mod support;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, SystemTime};

use sinkwatch::events;
use sinkwatch::testing::FsOp;
use sinkwatch::testing::{self, Matcher};
use sinkwatch::{Compression, FileSink, ManualClock};
use sinkwatch::{OverflowPolicy, Record};

use support::{census, ids, names, read_any, record, seqs, wait_total};

const SHUTDOWN: Duration = Duration::from_secs(10);

/// A record's JSON line, newline included.
fn line(r: &Record) -> Vec<u8> {
    let mut v = Vec::new();
    r.write_json(&mut v);
    v.push(b'\n');
    v
}

/// Builds a sink in `dir` with default settings.
fn plain_sink(dir: &Path) -> FileSink {
    FileSink::builder(dir).build().unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. A restart after kill -9 must not glue its first record to a torn last line.

/// The child process of the kill -9 test: it reads its directory from this variable.
const CHILD_DIR: &str = "SINKWATCH_HARDENING_CHILD_DIR";
/// The child's name, as the parent asks the test harness for it.
const CHILD_TEST: &str = "child_writes_until_killed";
/// Records the child writes at most (about 64 MiB) if the parent never kills it.
const CHILD_MAX_RECORDS: u64 = 256;
/// The child says it is ready after flushing this many records.
const CHILD_READY_AFTER: u64 = 8;

/// A record of about 256 KiB: long `write(2)`s for the kill to land in.
fn big_record(seq: u64) -> Record {
    record(0, seq).with_field("body", "y".repeat(256 * 1024))
}

#[tokio::test]
#[ignore = "the child process of a_kill_9_while_writing_never_glues_the_next_record_to_a_torn_line, which runs it"]
async fn child_writes_until_killed() {
    let dir = std::env::var_os(CHILD_DIR)
        .unwrap_or_else(|| panic!("run only by its parent test, which sets {CHILD_DIR}"));
    let sink = FileSink::builder(&dir)
        .overflow(OverflowPolicy::Wait)
        .build()
        .unwrap();
    for seq in 0..CHILD_MAX_RECORDS {
        sink.write_async(big_record(seq)).await.unwrap();
        if seq + 1 == CHILD_READY_AFTER {
            sink.flush().await.unwrap();
            // Straight to the process's stdout, past the harness's capture.
            let mut out = std::io::stdout().lock();
            writeln!(out, "ready").unwrap();
            out.flush().unwrap();
        }
    }
    // Never killed (the parent failed): do not outlive it, and do not fill the disk.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// Starts the child writing into `dir` and returns once it has flushed its first records.
fn start_child(dir: &Path) -> child::KillOnDrop {
    child::start(CHILD_TEST, &[(CHILD_DIR, dir.as_os_str())], "ready")
}

/// Where the last whole line of `bytes` ends.
fn whole_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// Kill attempts at most: a kill lands inside a write(2) about one time in three here, so
/// the test tries until one tears a line (and checks the untorn outcome on the way).
const KILL_ATTEMPTS: usize = 6;

#[cfg(unix)]
#[tokio::test]
async fn a_kill_9_while_writing_never_glues_the_next_record_to_a_torn_line() {
    testing::init();
    let mut tails = Vec::new();
    for _ in 0..KILL_ATTEMPTS {
        let torn = kill_while_writing_then_restart().await;
        tails.push(torn);
        if torn > 0 {
            break;
        }
    }
    // Not an assertion: whether a kill lands inside a write(2) is up to the scheduler (the
    // deterministic case is the next test). Shown with `--nocapture`.
    eprintln!("torn tails left by kill -9, in bytes: {tails:?}");
}

/// One round: a child writing big records is killed with SIGKILL; a sink started on what
/// it left must keep every whole line, cut (and report) a torn one, and start the next
/// record on a line of its own. Returns the bytes of the torn tail the kill left.
#[cfg(unix)]
async fn kill_while_writing_then_restart() -> u64 {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("app.log");
    let mut child = start_child(dir.path());
    // Kill it while it is busy writing, at a moment unrelated to its batches. `Child::kill`
    // sends SIGKILL: the worker dies wherever it is, inside a write(2) or not.
    let ready = std::fs::metadata(&active).unwrap().len();
    let size = || std::fs::metadata(&active).map_or(0, |m| m.len());
    testing::eventually("the child wrote 4 MiB more", || size() > ready + (4 << 20))
        .await
        .unwrap();
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the child was killed, not exited");

    let left = std::fs::read(&active).unwrap();
    let whole = whole_len(&left);
    let torn = (left.len() - whole) as u64;
    let events = testing::watch();
    let sink = plain_sink(dir.path());
    sink.try_write(record(1, 0)).unwrap();
    sink.flush().await.unwrap();
    let lines = ids(&active); // panics on any torn line
    assert_eq!(
        lines.last(),
        Some(&(1, 0)),
        "the new record, on a line of its own"
    );
    // `whole` ends in a newline (or is empty): one piece more than there are lines.
    let before = left[..whole].split(|&b| b == b'\n').count() - 1;
    assert_eq!(lines.len(), before + 1, "every whole line kept");
    assert_eq!(
        lines[..before],
        (0..before as u64).map(|s| (0, s)).collect::<Vec<_>>()[..]
    );
    let repaired = Matcher::sink_event(sink.id(), events::tail_repaired::NAME);
    if torn > 0 {
        let ev = events.wait(repaired).await.unwrap();
        assert_eq!(ev.u64(events::tail_repaired::BYTES_CUT), Some(torn));
        assert_eq!(ev.str(events::tail_repaired::PATH), active.to_str());
        sink.shutdown(SHUTDOWN).await;
    } else {
        sink.shutdown(SHUTDOWN).await;
        events
            .assert_none_before(
                repaired,
                Matcher::sink_event(sink.id(), events::sink_closed::NAME),
            )
            .await
            .unwrap();
    }
    torn
}

#[tokio::test]
async fn a_torn_tail_left_by_a_crash_is_cut_and_reported_and_the_next_record_starts_a_line() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("app.log");
    let mut content = [line(&record(0, 0)), line(&record(0, 1))].concat();
    let third = line(&record(0, 2));
    let torn = &third[..third.len() / 2];
    content.extend_from_slice(torn);
    std::fs::write(&active, &content).unwrap();

    let events = testing::watch();
    let sink = plain_sink(dir.path());
    let ev = events
        .wait(Matcher::sink_event(sink.id(), events::tail_repaired::NAME))
        .await
        .unwrap();
    assert_eq!(
        ev.u64(events::tail_repaired::BYTES_CUT),
        Some(torn.len() as u64)
    );
    assert_eq!(ev.str(events::tail_repaired::PATH), active.to_str());
    sink.try_write(record(1, 0)).unwrap();
    sink.flush().await.unwrap();
    assert_eq!(ids(&active), vec![(0, 0), (0, 1), (1, 0)]);
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_torn_file_without_a_whole_line_is_emptied_and_its_size_counts_from_zero() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("app.log");
    let first = line(&record(0, 0));
    std::fs::write(&active, &first[..first.len() - 1]).unwrap();

    let events = testing::watch();
    // Room for exactly two lines: a size counted from the torn bytes would rotate early.
    let sink = FileSink::builder(dir.path())
        .max_file_size(2 * first.len() as u64)
        .build()
        .unwrap();
    let ev = events
        .wait(Matcher::sink_event(sink.id(), events::tail_repaired::NAME))
        .await
        .unwrap();
    assert_eq!(
        ev.u64(events::tail_repaired::BYTES_CUT),
        Some(first.len() as u64 - 1)
    );
    sink.try_write(record(1, 0)).unwrap();
    sink.try_write(record(1, 1)).unwrap();
    sink.flush().await.unwrap();
    assert_eq!(seqs(&active), vec![0, 1]);
    assert_eq!(
        names(dir.path()),
        vec!["app.log".to_string()],
        "no rotation"
    );
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn a_whole_active_file_is_appended_to_and_not_reported() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("app.log");
    std::fs::write(&active, line(&record(0, 0))).unwrap();
    let events = testing::watch();
    let sink = plain_sink(dir.path());
    sink.try_write(record(0, 1)).unwrap();
    sink.shutdown(SHUTDOWN).await;
    events
        .assert_none_before(
            Matcher::sink_event(sink.id(), events::tail_repaired::NAME),
            Matcher::sink_event(sink.id(), events::sink_closed::NAME),
        )
        .await
        .unwrap();
    assert_eq!(seqs(&active), vec![0, 1]);
}

// ---------------------------------------------------------------------------------------
// 2. `max_total_bytes` must count archives at their compressed size, and must not delete
//    files before they are compressed when compression falls behind.

#[tokio::test]
async fn a_compression_backlog_never_makes_the_byte_budget_delete_what_fits_compressed() {
    const ROTATIONS: u64 = 40;
    const PER_FILE: u64 = 64;
    const BUDGET: u64 = 256 * 1024;
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    // The first compression blocks until released: compression falls behind the rotations.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let mut entered_rx = Some(entered_rx);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((entered_tx, release_rx)));
    let sink = FileSink::builder(dir.path())
        .compression(Compression::Gzip)
        .max_total_bytes(BUDGET)
        .fs_fault_hook(move |op, _| {
            if op == FsOp::CompressChunk {
                if let Some((entered, release)) = gate.lock().unwrap().take() {
                    let _ = entered.send(());
                    // A dropped sender (the test failed) lets it go as well.
                    let _ = release.recv();
                }
            }
            Ok(())
        })
        .build()
        .unwrap();
    let events = testing::watch();
    let body = "z".repeat(1000);
    let mut plain_bytes = 0;
    for file in 0..ROTATIONS {
        for seq in 0..PER_FILE {
            sink.try_write(record(file, seq).with_field("body", body.clone()))
                .unwrap();
        }
        let rotated = sink.rotate().await.unwrap().unwrap();
        plain_bytes += std::fs::metadata(&rotated).map_or(0, |m| m.len());
        if let Some(entered_rx) = entered_rx.take() {
            let entered = tokio::task::spawn_blocking(move || entered_rx.recv());
            entered.await.unwrap().unwrap();
        }
    }
    release_tx.send(()).unwrap();
    let report = sink.shutdown(SHUTDOWN).await;
    assert!(report.completed, "shutdown waited for every compression");
    events
        .assert_none_before(
            Matcher::sink_event(sink.id(), events::compression_failed::NAME),
            Matcher::sink_event(sink.id(), events::sink_closed::NAME),
        )
        .await
        .unwrap();

    assert!(
        plain_bytes > 8 * BUDGET,
        "at their plain size only a few files fit the budget ({plain_bytes} bytes rotated)"
    );
    let archives: Vec<PathBuf> = support::files(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    let archive_bytes: u64 = archives
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(archive_bytes <= BUDGET, "{archive_bytes} bytes of archives");
    assert_eq!(
        archives.len() as u64,
        ROTATIONS,
        "all {ROTATIONS} archives ({archive_bytes} bytes) fit the budget of {BUDGET}: {:?}",
        names(dir.path())
    );
    // Nothing else is left: no plain rotated file, no temporary; every record is there once.
    assert_eq!(names(dir.path()).len() as u64, ROTATIONS + 1);
    let seen = census(dir.path());
    assert_eq!(seen.len() as u64, ROTATIONS * PER_FILE);
    assert!(seen.values().all(|&n| n == 1));
}

#[tokio::test]
async fn the_byte_budget_counts_archives_at_their_compressed_size() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let body = "z".repeat(1000);
    let write_file = |sink: &FileSink, file: u64| {
        for seq in 0..64 {
            sink.try_write(record(file, seq).with_field("body", body.clone()))
                .unwrap();
        }
    };
    // Measure one archive first.
    let probe = FileSink::builder(dir.path().join("probe"))
        .compression(Compression::Gzip)
        .build()
        .unwrap();
    write_file(&probe, 0);
    probe.rotate().await.unwrap().unwrap();
    probe.shutdown(SHUTDOWN).await;
    let one = support::files(&dir.path().join("probe"))
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "gz"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();

    // A budget of about five archives, each far smaller than its plain file.
    let budget = 5 * one + one / 2;
    let logs = dir.path().join("logs");
    let events = testing::watch();
    let sink = FileSink::builder(&logs)
        .compression(Compression::Gzip)
        .max_total_bytes(budget)
        .build()
        .unwrap();
    let mut rotated = Vec::new();
    for file in 0..12 {
        write_file(&sink, file);
        rotated.push(sink.rotate().await.unwrap().unwrap());
    }
    sink.shutdown(SHUTDOWN).await;
    wait_total(
        &events,
        sink.id(),
        events::retention_pruned::NAME,
        "files",
        7,
    )
    .await;
    let kept: Vec<String> = names(&logs)
        .into_iter()
        .filter(|n| n != "app.log")
        .collect();
    let newest: Vec<String> = rotated[7..]
        .iter()
        .map(|p| format!("{}.gz", p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert_eq!(kept, newest, "the five newest archives");
}

// ---------------------------------------------------------------------------------------
// 3. Rotated names sort in creation order, also past counter 999.

#[tokio::test]
async fn rotated_names_sort_in_creation_order_past_counter_999() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // The newest rotated file so far, an hour ahead of the clock, at counter 999: every
    // rotation of this run must come after it.
    let newest = "app.20231114T231320.000Z_999.log";
    std::fs::write(dir.path().join(newest), line(&record(0, 0))).unwrap();
    let sink = FileSink::builder(dir.path())
        .clock(ManualClock::new(now))
        .build()
        .unwrap();
    let mut created = vec![dir.path().join(newest)];
    for seq in 1..4 {
        sink.try_write(record(0, seq)).unwrap();
        created.push(sink.rotate().await.unwrap().unwrap());
    }
    sink.shutdown(SHUTDOWN).await;
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(sorted, created, "names sort in creation order");
    for (seq, path) in created.iter().enumerate() {
        assert_eq!(seqs(path), vec![seq as u64], "{}", path.display());
    }
    assert!(
        created[1].to_string_lossy().ends_with("Z_a1000.log"),
        "{}",
        created[1].display()
    );
}

// ---------------------------------------------------------------------------------------
// 4. Repair, compression and retention never follow a symlink named like a rotated file.

#[cfg(unix)]
#[tokio::test]
async fn symlinks_named_like_rotated_files_and_their_targets_are_left_alone() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let d = dir.path();
    let planted = [
        "app.20240101T000000.000Z.log",
        "app.20240101T000001.000Z.log.gz",
        "app.20240101T000002.000Z.log.gz.tmp",
    ];
    for (i, name) in planted.iter().enumerate() {
        let target = outside.path().join(format!("target{i}"));
        std::fs::write(&target, format!("not the sink's {i}\n")).unwrap();
        std::os::unix::fs::symlink(&target, d.join(name)).unwrap();
    }
    // Real rotated files beside them, for start-up repair and retention to work on.
    for s in [3, 4] {
        let name = format!("app.20240101T00000{s}.000Z.log");
        std::fs::write(d.join(name), line(&record(s, 0))).unwrap();
    }

    let events = testing::watch();
    let sink = FileSink::builder(d)
        .compression(Compression::Gzip)
        .max_files(1)
        .max_total_bytes(1)
        .build()
        .unwrap();
    sink.try_write(record(5, 0)).unwrap();
    let fresh = sink.rotate().await.unwrap().unwrap();
    let report = sink.shutdown(SHUTDOWN).await;
    assert!(report.completed);
    // The two real files (after their compression at start-up) go; the fresh one is over
    // the 1-byte budget too.
    wait_total(
        &events,
        sink.id(),
        events::retention_pruned::NAME,
        "files",
        3,
    )
    .await;
    events
        .assert_none_before(
            Matcher::sink_event(sink.id(), events::compression_failed::NAME),
            Matcher::sink_event(sink.id(), events::sink_closed::NAME),
        )
        .await
        .unwrap();

    let mut expected: Vec<String> = planted.iter().map(ToString::to_string).collect();
    expected.push("app.log".into());
    expected.sort();
    assert_eq!(names(d), expected, "only the symlinks and the active file");
    for (i, name) in planted.iter().enumerate() {
        let target = outside.path().join(format!("target{i}"));
        assert_eq!(std::fs::read_link(d.join(name)).unwrap(), target, "{name}");
        assert_eq!(
            read_any(&target),
            format!("not the sink's {i}\n").into_bytes(),
            "{name}'s target"
        );
    }
    assert_eq!(names(outside.path()), vec!["target0", "target1", "target2"]);
    assert!(!fresh.exists());
}
