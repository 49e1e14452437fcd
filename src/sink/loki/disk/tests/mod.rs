//! The engine's behaviour: tests named after their cases, on real files in temporary
//! directories. Faults a root user cannot cause (permission denied, a full disk) go
//! through the fault hook.

mod basics;
mod bench;
mod faults;
mod kill;
mod repair;
mod torn;

use std::path::Path;

use super::{DiskBuffer, EntryView, Options, Recovered, Seq};

/// Options for a test buffer: a 1 MiB cap, 4 KiB segments (several per test).
fn opts(dir: &Path) -> Options {
    Options {
        segment_bytes: Some(4096),
        ..Options::new(dir, 1 << 20)
    }
}

fn open(dir: &Path) -> (DiskBuffer, Recovered) {
    DiskBuffer::open(opts(dir)).unwrap()
}

/// Entry `i`: its stream, timestamp and payload, all derived from `i` so a reader can
/// check what it got back.
fn entry(i: u64) -> (String, i128, Vec<u8>) {
    let stream = format!("{{app=\"test\", shard=\"{}\"}}", i % 3);
    let payload = format!("entry {i} ")
        .repeat(1 + (i % 7) as usize)
        .into_bytes();
    (stream, 1_700_000_000_000_000_000 + i128::from(i), payload)
}

/// The bytes entry `i`'s record takes.
fn record_len(i: u64) -> u64 {
    let (s, _, p) = entry(i);
    (s.len() + p.len() + 32) as u64
}

/// Appends entries `range` (by their number) and returns their sequence numbers.
fn append(buf: &mut DiskBuffer, range: std::ops::Range<u64>) -> Vec<Seq> {
    range
        .map(|i| {
            let (s, t, p) = entry(i);
            buf.append(s.as_bytes(), t, &p).unwrap()
        })
        .collect()
}

/// What a handed-out entry was: its sequence number and entry number (checked whole
/// against [`entry`]).
fn check(view: EntryView<'_>) -> (Seq, u64) {
    let text = std::str::from_utf8(view.payload).unwrap();
    let i: u64 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let (s, t, p) = entry(i);
    assert_eq!(view.stream, s.as_bytes(), "stream of entry {i}");
    assert_eq!(view.unix_nanos, t, "timestamp of entry {i}");
    assert_eq!(view.payload, &p[..], "payload of entry {i}");
    (view.seq, i)
}

/// One batch (up to `n` entries): what it held, and its range.
fn batch(buf: &mut DiskBuffer, n: usize) -> (Vec<(Seq, u64)>, Option<std::ops::Range<Seq>>) {
    let mut got = Vec::new();
    let range = buf
        .next_batch(n, usize::MAX, |v| got.push(check(v)))
        .unwrap();
    (got, range)
}

/// Everything left to hand out, in batches of 10, without settling.
fn drain(buf: &mut DiskBuffer) -> Vec<(Seq, u64)> {
    let mut all = Vec::new();
    loop {
        let (got, range) = batch(buf, 10);
        if range.is_none() {
            assert!(got.is_empty());
            return all;
        }
        assert!(!got.is_empty());
        all.extend(got);
    }
}

/// The entry numbers of what was handed out.
fn numbers(got: &[(Seq, u64)]) -> Vec<u64> {
    got.iter().map(|&(_, i)| i).collect()
}

/// The segment files in `dir`, sorted.
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}
