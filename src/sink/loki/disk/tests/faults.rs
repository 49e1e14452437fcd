//! Faults: another holder, a removed directory, permissions, a full disk, files removed
//! under the buffer. Every one is an error or a count, never a panic.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::super::{AppendError, Op, OpenError};
use super::*;

/// A fault hook failing `op` with `kind` while `on` is set.
fn failing(
    op: fn(Op) -> bool,
    kind: io::ErrorKind,
    on: &Arc<AtomicBool>,
) -> super::super::FaultHook {
    let on = Arc::clone(on);
    Arc::new(move |o, _: &Path| {
        if on.load(Ordering::Relaxed) && op(o) {
            Err(io::Error::new(kind, "injected"))
        } else {
            Ok(usize::MAX)
        }
    })
}

#[test]
fn a_second_open_of_a_directory_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = open(dir.path());
    let Err(err) = DiskBuffer::open(opts(dir.path())) else {
        panic!("a second buffer on one directory");
    };
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(
        text.contains("directory of its own"),
        "says how to fix it: {text}"
    );
}

#[test]
fn the_lock_is_free_again_once_the_holder_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(dir.path());
    drop(first);
    let (_second, _) = open(dir.path());
}

#[test]
fn a_removed_directory_is_an_error_with_its_entries_counted_not_a_panic() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("buffer");
    let (mut buf, _) = open(&dir);
    append(&mut buf, 0..30);
    buf.commit().unwrap();
    let (_, in_flight) = batch(&mut buf, 10);
    append(&mut buf, 30..35);
    std::fs::remove_dir_all(&dir).unwrap();

    let err = buf.commit().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("was removed"), "{err}");
    assert!(buf.is_gone());
    assert!(matches!(buf.append(b"s", 0, b"p"), Err(AppendError::Io(_))));
    assert!(buf.next_batch(10, usize::MAX, |_| {}).is_err());
    // What the worker reports: the unsent are lost, the in-flight are its requests', the
    // unwritten it can take back.
    let backlog = buf.backlog();
    assert_eq!(backlog.unsent.entries, 20);
    assert_eq!(backlog.in_flight.entries, 10);
    let mut taken = Vec::new();
    assert_eq!(buf.take_unwritten(|v| taken.push(check(v).1)).entries, 5);
    assert_eq!(taken, [30, 31, 32, 33, 34]);
    assert_eq!(
        buf.settle(in_flight.unwrap()),
        10,
        "a delivered request still settles"
    );
    drop(buf);
    // A new open starts afresh.
    let (mut buf, rec) = open(&dir);
    assert_eq!(rec.entries, 0);
    append(&mut buf, 0..1);
    buf.commit().unwrap();
    assert_eq!(numbers(&drain(&mut buf)), [0]);
}

/// True (and the test goes on through the fault hook) when permissions do not bind this
/// process (root).
fn permissions_are_ignored(dir: &Path) -> bool {
    std::fs::write(dir.join("probe"), b"").is_ok()
}

#[cfg(unix)]
#[test]
fn a_read_only_directory_is_an_error_not_a_panic() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("buffer");
    let on = Arc::new(AtomicBool::new(false));
    let faults = failing(
        |o| matches!(o, Op::Create | Op::Compact),
        io::ErrorKind::PermissionDenied,
        &on,
    );
    let with_faults = || Options {
        faults: Some(Arc::clone(&faults)),
        ..opts(&dir)
    };
    let (mut buf, _) = DiskBuffer::open(with_faults()).unwrap();
    append(&mut buf, 0..150);
    buf.commit().unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if permissions_are_ignored(&dir) {
        std::fs::remove_file(dir.join("probe")).unwrap();
        on.store(true, Ordering::Relaxed);
    }
    // Appending goes on until a segment must be created.
    let failed = (150..400).find_map(|i| {
        let (s, t, p) = entry(i);
        buf.append(s.as_bytes(), t, &p).err()
    });
    let Some(AppendError::Io(e)) = failed else {
        panic!("no segment could be created, yet: {failed:?}");
    };
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    buf.commit().unwrap();
    assert!(
        !drain(&mut buf).is_empty(),
        "what is on disk is still readable"
    );
    drop(buf);
    // Opening rewrites the settlement log, so a read-only directory cannot be opened.
    let Err(err) = DiskBuffer::open(with_faults()) else {
        panic!("opened a read-only directory");
    };
    assert!(matches!(err, OpenError::Io { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    on.store(false, Ordering::Relaxed);
    let (_, rec) = DiskBuffer::open(with_faults()).unwrap();
    assert!(rec.entries >= 150, "nothing was lost: {}", rec.entries);
}

#[test]
fn a_full_disk_at_commit_keeps_the_entries_for_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let on = Arc::clone(&full);
    // Lets a third of each write through, then fails it: a torn write.
    let opts = Options {
        faults: Some(Arc::new(move |op, _: &Path| match op {
            Op::Write { len } if on.load(Ordering::Relaxed) => Ok(len / 3),
            _ => Ok(usize::MAX),
        })),
        ..opts(dir.path())
    };
    let (mut buf, _) = DiskBuffer::open(opts.clone()).unwrap();
    append(&mut buf, 0..10);
    buf.commit().unwrap();
    append(&mut buf, 10..20);
    full.store(true, Ordering::Relaxed);
    assert!(buf.commit().is_err());
    assert_eq!(buf.backlog().unwritten.entries, 10);
    assert_eq!(
        numbers(&drain(&mut buf)),
        (0..10).collect::<Vec<_>>(),
        "the torn write was cut back"
    );
    full.store(false, Ordering::Relaxed);
    buf.commit().unwrap();
    assert_eq!(numbers(&drain(&mut buf)), (10..20).collect::<Vec<_>>());
    drop(buf);
    let (mut buf, rec) = DiskBuffer::open(opts).unwrap();
    assert!(rec.repaired.is_empty(), "nothing torn: {:?}", rec.repaired);
    assert_eq!(numbers(&drain(&mut buf)), (0..20).collect::<Vec<_>>());
}

#[test]
fn entries_a_failed_commit_left_can_be_taken_back_for_memory() {
    let dir = tempfile::tempdir().unwrap();
    let on = Arc::new(AtomicBool::new(false));
    let opts = Options {
        faults: Some(failing(
            |o| matches!(o, Op::Write { .. }),
            io::ErrorKind::StorageFull,
            &on,
        )),
        ..opts(dir.path())
    };
    let (mut buf, _) = DiskBuffer::open(opts).unwrap();
    append(&mut buf, 0..5);
    buf.commit().unwrap();
    append(&mut buf, 5..9);
    on.store(true, Ordering::Relaxed);
    assert!(buf.commit().is_err());
    let mut taken = Vec::new();
    buf.take_unwritten(|v| taken.push(check(v)));
    assert_eq!(taken, [(5, 5), (6, 6), (7, 7), (8, 8)]);
    on.store(false, Ordering::Relaxed);
    // Their numbers are given out again; nothing of them reached the disk.
    assert_eq!(append(&mut buf, 9..10), [5]);
    buf.commit().unwrap();
    assert_eq!(numbers(&drain(&mut buf)), [0, 1, 2, 3, 4, 9]);
}

#[test]
fn a_failed_settlement_write_is_retried_and_reported_by_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let on = Arc::new(AtomicBool::new(false));
    let opts = Options {
        faults: Some(failing(|o| o == Op::Ack, io::ErrorKind::StorageFull, &on)),
        ..opts(dir.path())
    };
    let (mut buf, _) = DiskBuffer::open(opts.clone()).unwrap();
    append(&mut buf, 0..10);
    buf.commit().unwrap();
    let (_, r) = batch(&mut buf, 4);
    on.store(true, Ordering::Relaxed);
    assert_eq!(buf.settle(r.unwrap()), 4, "settled in memory all the same");
    assert_eq!(buf.commit().unwrap_err().kind(), io::ErrorKind::StorageFull);
    assert_eq!(
        numbers(&drain(&mut buf)),
        [4, 5, 6, 7, 8, 9],
        "not handed out again"
    );
    on.store(false, Ordering::Relaxed);
    buf.commit().unwrap();
    drop(buf);
    let (_, rec) = DiskBuffer::open(opts).unwrap();
    assert_eq!(rec.entries, 6, "the retry wrote the settlement");
}

#[test]
fn a_failed_removal_is_retried_and_disk_use_counts_the_file_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let on = Arc::new(AtomicBool::new(true));
    let opts = Options {
        faults: Some(failing(
            |o| o == Op::Remove,
            io::ErrorKind::PermissionDenied,
            &on,
        )),
        ..opts(dir.path())
    };
    let (mut buf, _) = DiskBuffer::open(opts).unwrap();
    append(&mut buf, 0..200);
    buf.commit().unwrap();
    let before = buf.disk_bytes();
    let (_, r) = batch(&mut buf, 200);
    buf.settle(r.unwrap());
    assert!(buf.disk_bytes() >= before, "files still there count");
    assert!(buf.commit().is_err());
    on.store(false, Ordering::Relaxed);
    buf.commit().unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
    assert!(buf.disk_bytes() < 4096 + 200);
}

#[test]
fn a_segment_removed_under_the_buffer_loses_its_unsent_entries_counted() {
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
    let third: Seq = files[2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    let got = drain(&mut buf);
    let lost = third - second;
    assert_eq!(buf.take_lost(), lost);
    assert_eq!(buf.take_lost(), 0, "counted once");
    let expected: Vec<u64> = (0..second).chain(third..200).collect();
    assert_eq!(numbers(&got), expected);
    assert_eq!(buf.unsettled().entries, 200 - lost);
    drop(buf);
    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec.lost, 0, "settled: not reported again");
    assert_eq!(numbers(&drain(&mut buf)), expected);
}

#[test]
fn the_active_segment_removed_under_the_buffer_is_noticed_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..3);
    buf.commit().unwrap();
    let (_, r) = batch(&mut buf, 1);
    append(&mut buf, 3..5);
    let active = segments(dir.path()).pop().unwrap();
    std::fs::remove_file(&active).unwrap();
    buf.commit().unwrap();
    assert_eq!(buf.take_lost(), 2, "written and not handed out");
    assert_eq!(buf.backlog().in_flight.entries, 1);
    assert_eq!(
        numbers(&drain(&mut buf)),
        [3, 4],
        "the unwritten went to a new segment"
    );
    assert_eq!(buf.settle(r.unwrap()), 1);
    drop(buf);
    let (mut buf, rec) = open(dir.path());
    assert_eq!((rec.entries, rec.lost), (2, 0));
    assert_eq!(numbers(&drain(&mut buf)), [3, 4]);
}

#[test]
fn a_fault_at_every_step_never_panics_and_never_loses_count() {
    // Every operation fails in turn, for a while; the tallies must still add up.
    let victims = [
        Op::Write { len: 0 },
        Op::Create,
        Op::Ack,
        Op::Compact,
        Op::Sync,
        Op::Remove,
        Op::Read,
    ];
    for victim in victims {
        let dir = tempfile::tempdir().unwrap();
        let on = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&on);
        let opts = Options {
            faults: Some(Arc::new(move |op, _: &Path| {
                let same = std::mem::discriminant(&op) == std::mem::discriminant(&victim);
                if same && flag.load(Ordering::Relaxed) {
                    Err(io::Error::other("injected"))
                } else {
                    Ok(usize::MAX)
                }
            })),
            ..opts(dir.path())
        };
        let (mut buf, _) = DiskBuffer::open(opts).unwrap();
        let mut accepted = 0;
        let mut settled = 0;
        for round in 0..40u64 {
            on.store((10..25).contains(&round), Ordering::Relaxed);
            for i in round * 10..round * 10 + 10 {
                let (s, t, p) = entry(i);
                if buf.append(s.as_bytes(), t, &p).is_ok() {
                    accepted += 1;
                }
            }
            let _ = buf.commit();
            if let Ok(Some(r)) = buf.next_batch(7, usize::MAX, |v| {
                check(v);
            }) {
                settled += buf.settle(r);
            }
            assert_eq!(buf.backlog().total(), buf.unsettled(), "{victim:?}");
        }
        on.store(false, Ordering::Relaxed);
        buf.commit().unwrap();
        let lost = buf.take_lost();
        assert_eq!(
            accepted,
            settled + lost + buf.unsettled().entries,
            "{victim:?}"
        );
    }
}

#[test]
fn an_active_segment_removed_before_anything_was_written_to_it_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    // Append until a new segment opens: its first entry is only in memory.
    let mut n = 0;
    while segments(dir.path()).len() < 2 {
        append(&mut buf, n..n + 1);
        n += 1;
    }
    // Everything written is handed out: the reader waits at the new segment.
    assert_eq!(numbers(&drain(&mut buf)), (0..n - 1).collect::<Vec<_>>());
    std::fs::remove_file(segments(dir.path()).pop().unwrap()).unwrap();
    buf.commit().unwrap();
    assert_eq!(buf.take_lost(), 0, "nothing of it was written");
    assert_eq!(numbers(&drain(&mut buf)), [n - 1]);
    drop(buf);
    let (mut buf, _) = open(dir.path());
    assert_eq!(numbers(&drain(&mut buf)), (0..n).collect::<Vec<_>>());
}

#[test]
fn a_directory_that_is_a_file_is_an_open_error() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let Err(err) = DiskBuffer::open(opts(&file)) else {
        panic!("opened a file as a directory");
    };
    assert!(
        matches!(err, OpenError::Io { what: "create", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

/// A child process being spawned holds a copy of every descriptor until it execs, the
/// lock's too: a lock released here a moment ago can look held by this process.
#[cfg(unix)]
#[test]
fn reopening_while_this_process_spawns_children_is_not_refused() {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let spawner = std::thread::spawn(move || {
        let mut spawned = 0;
        while !stopping.load(Ordering::Relaxed) {
            let _ = std::process::Command::new("true").status();
            spawned += 1;
        }
        spawned
    });
    let dir = tempfile::tempdir().unwrap();
    let mut refused = Vec::new();
    for _ in 0..300 {
        match DiskBuffer::open(opts(dir.path())) {
            Ok((buf, _)) => drop(buf),
            Err(e) => refused.push(e.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(spawner.join().unwrap() > 0);
    assert!(
        refused.is_empty(),
        "{} refused: {:?}",
        refused.len(),
        refused.first()
    );
}
