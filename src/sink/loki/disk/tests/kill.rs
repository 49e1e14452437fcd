//! A real kill -9: a child process (this test binary, running the ignored
//! `disk_buffer_sigkill_child`) appends, commits, hands out and settles out of order,
//! printing what it committed and settled, and is killed with SIGKILL mid-stream. The
//! parent reopens the directory: every committed, unsettled entry comes back once, in
//! order, whole; no settled one comes back.
//!
//! The kills land while the child writes megabytes (some entries are 512 KiB). Whether one
//! lands inside a `write(2)` and tears a record is up to the kernel: here a 512 KiB write
//! into the page cache was never seen torn (large folios make it all or nothing), so the
//! tear itself is covered by the proptest in `torn.rs`, and this test prints what it cut.

use std::collections::BTreeSet;
use std::io::{BufRead as _, Read as _, Write as _};
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::super::{DiskBuffer, EntryView, Options};

/// The child reads its directory from this variable.
const CHILD_DIR: &str = "SINKWATCH_DISK_KILL_CHILD_DIR";
/// The child's name, a filter unique in the binary (the module path is not part of it, so
/// it holds wherever the module moves).
const CHILD_TEST: &str = "disk_buffer_sigkill_child";
/// Appends the child makes at most if it is never killed (the parent failed): about 50 MiB.
const CHILD_MAX_ENTRIES: u64 = 6_000;

/// True for the entries of 512 KiB: runs of 16 in every 1,000, so some rounds write megabytes,
/// long `write(2)`s for a kill to land in.
fn big(seq: u64) -> bool {
    seq % 1000 >= 984
}

/// Entry `seq`'s stream and payload: derived from the number, so the parent can check
/// every byte it gets back.
fn content(seq: u64) -> (String, Vec<u8>) {
    let stream = format!("{{app=\"kill\", n=\"{}\"}}", seq % 5);
    let len = if big(seq) {
        512 * 1024
    } else {
        40 + (seq % 300) as usize
    };
    let payload = seq
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect();
    (stream, payload)
}

fn verify(view: &EntryView<'_>) {
    let (stream, payload) = content(view.seq);
    assert_eq!(view.stream, stream.as_bytes(), "stream of {}", view.seq);
    assert_eq!(view.payload, &payload[..], "payload of {}", view.seq);
    assert_eq!(
        view.unix_nanos,
        i128::from(view.seq),
        "timestamp of {}",
        view.seq
    );
}

fn child_opts(dir: &Path) -> Options {
    Options {
        segment_bytes: Some(64 * 1024),
        ..Options::new(dir, 1 << 30)
    }
}

/// One line straight to the process's stdout, past the harness's capture.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

#[test]
#[ignore = "the child process of a_kill_9_never_brings_back_a_settled_entry_nor_loses_a_committed_one, which runs it"]
fn disk_buffer_sigkill_child() {
    let dir = std::env::var_os(CHILD_DIR)
        .unwrap_or_else(|| panic!("run only by its parent test, which sets {CHILD_DIR}"));
    let (mut buf, _) = DiskBuffer::open(child_opts(Path::new(&dir))).unwrap();
    let mut in_flight: Vec<Range<u64>> = Vec::new();
    let mut seq = 0;
    let mut round = 0u64;
    while seq < CHILD_MAX_ENTRIES {
        round += 1;
        let n = 1 + round % 40;
        if (seq..seq + n).any(big) {
            // MiBs to write (each big entry fills a segment, and is written as the next one
            // is appended): the parent kills the child somewhere in there.
            say(format_args!("@long {}", seq + n));
        }
        for _ in 0..n {
            let (stream, payload) = content(seq);
            assert_eq!(
                buf.append(stream.as_bytes(), i128::from(seq), &payload)
                    .unwrap(),
                seq
            );
            seq += 1;
        }
        buf.commit().unwrap();
        say(format_args!("@committed {seq}"));
        if let Some(r) = buf.next_batch(30, 256 * 1024, |_| {}).unwrap() {
            in_flight.push(r);
        }
        // Settle one of the requests in flight, not always the oldest.
        if in_flight.len() >= 3 {
            let r = in_flight.remove(usize::try_from(round * 7).unwrap() % in_flight.len());
            say(format_args!("@settling {} {}", r.start, r.end));
            buf.settle(r.clone());
            say(format_args!("@settled {} {}", r.start, r.end));
        }
    }
    // Never killed (the parent failed): do not outlive it.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// Kills the child when dropped, so a failing parent never leaves it running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the child said before it died.
#[derive(Debug, Default)]
struct Said {
    /// Every entry below this was committed.
    committed: u64,
    settled: BTreeSet<u64>,
    /// Being settled when the kill came: may or may not come back.
    unsure: BTreeSet<u64>,
}

fn parse(lines: &[String]) -> Said {
    let mut said = Said::default();
    for line in lines {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["@committed", n] => said.committed = n.parse().unwrap(),
            ["@settling", a, b] => said
                .unsure
                .extend(a.parse::<u64>().unwrap()..b.parse().unwrap()),
            ["@settled", a, b] => {
                let r = a.parse::<u64>().unwrap()..b.parse().unwrap();
                for s in r {
                    said.unsure.remove(&s);
                    said.settled.insert(s);
                }
            }
            _ => {}
        }
    }
    said
}

/// The bytes of the segments in `dir` (files removed meanwhile count as empty).
fn segment_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Runs the child in `dir` and kills it once, after it announced its `nth` long round,
/// its segments have grown by `grown` bytes: while it is writing, at a point unrelated
/// to what it prints. Returns all it said.
#[cfg(unix)]
fn run_and_kill(dir: &Path, nth: usize, grown: u64) -> Vec<String> {
    use std::os::unix::process::ExitStatusExt as _;
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([CHILD_TEST, "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("@long") {
                let _ = tx.send(());
            }
            if line.starts_with('@') {
                all.push(line);
            }
        }
        all
    });
    for _ in 0..nth {
        // A bound on a wait for another process, not a sleep: it fails the test if the
        // child never gets going.
        rx.recv_timeout(Duration::from_secs(120))
            .expect("the child stopped talking");
    }
    // Polled, not slept on: the child is writing MiBs, and each look is a directory read.
    let start = segment_bytes(dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while segment_bytes(dir) < start + grown {
        assert!(
            std::time::Instant::now() < deadline,
            "the child stopped writing"
        );
        std::thread::yield_now();
    }
    // `Child::kill` sends SIGKILL: the child dies wherever it is, inside a write(2) or not.
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the child was killed, not exited: {status}"
    );
    // The pipe keeps what the child wrote before it died.
    reader.join().unwrap()
}

#[cfg(unix)]
#[test]
fn a_kill_9_never_brings_back_a_settled_entry_nor_loses_a_committed_one() {
    // Kill points: 1, 3 and 5 MiB into the first, second and fourth long round.
    for (nth, mib) in [(1, 1), (2, 3), (4, 5)] {
        let dir = tempfile::tempdir().unwrap();
        let said = parse(&run_and_kill(dir.path(), nth, mib << 20));
        assert!(said.committed > 0 && !said.settled.is_empty(), "{said:?}");

        let (mut buf, rec) = DiskBuffer::open(child_opts(dir.path())).unwrap();
        let mut got = Vec::new();
        while let Some(r) = buf
            .next_batch(1000, usize::MAX, |v| {
                verify(&v);
                got.push(v.seq);
            })
            .unwrap()
        {
            assert!(r.start < r.end);
        }
        assert_eq!(rec.entries, got.len() as u64, "the replay count");
        assert_eq!(rec.lost, 0, "a kill loses nothing committed: {rec:?}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, each once");
        let back: BTreeSet<u64> = got.iter().copied().collect();
        let settled_back: Vec<&u64> = back.intersection(&said.settled).collect();
        assert!(
            settled_back.is_empty(),
            "settled entries came back: {settled_back:?}"
        );
        let missing: Vec<u64> = (0..said.committed)
            .filter(|s| !said.settled.contains(s) && !said.unsure.contains(s) && !back.contains(s))
            .collect();
        assert!(
            missing.is_empty(),
            "committed entries lost: {missing:?} ({said:?})"
        );
        // Shown with --nocapture: how far the child got, and what the kill tore.
        eprintln!(
            "kill {mib} MiB into long round {nth}: {} committed, {} settled, {} handed out again, torn: {:?}",
            said.committed,
            said.settled.len(),
            got.len(),
            rec.repaired
        );
    }
}
