//! Torn and damaged files, generated: whatever a crash or a bad disk leaves in the
//! segments, an open never panics, hands out only what was committed (in order, each entry
//! whole), reports what it cut, and never hands out a settled entry again.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::Index;

use super::super::format::{encode, HEADER_LEN};
use super::*;

/// Writes `n` entries (committing every `every`), hands them out in batches of 10 and
/// settles the batches whose bit is set in `mask`. Returns the settled entry numbers.
fn write(dir: &Path, n: u64, every: u64, mask: u64) -> BTreeSet<u64> {
    let (mut buf, _) = open(dir);
    let mut settled = BTreeSet::new();
    for i in 0..n {
        append(&mut buf, i..i + 1);
        if (i + 1) % every == 0 {
            buf.commit().unwrap();
        }
    }
    buf.commit().unwrap();
    for b in 0.. {
        let (got, range) = batch(&mut buf, 10);
        let Some(range) = range else { break };
        if mask & (1 << (b % 64)) != 0 {
            buf.settle(range);
            settled.extend(numbers(&got));
        }
    }
    settled
}

/// The first sequence number of each segment file, with its path.
fn firsts(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    segments(dir)
        .into_iter()
        .map(|p| (p.file_stem().unwrap().to_str().unwrap().parse().unwrap(), p))
        .collect()
}

/// Reopens and hands out everything; checks each entry whole (in `check`).
fn reopen(dir: &Path) -> (Vec<u64>, Recovered) {
    let (mut buf, rec) = open(dir);
    let got = numbers(&drain(&mut buf));
    assert_eq!(rec.entries, got.len() as u64);
    (got, rec)
}

/// A way a kill -9 tears the last segment.
#[derive(Debug, Clone)]
enum Tear {
    /// Cut at any offset.
    At(Index),
    /// Cut at a record's end, then a prefix of a record that was being written.
    Partial { boundary: Index, written: Index },
}

fn tear() -> impl Strategy<Value = Tear> {
    prop_oneof![
        any::<Index>().prop_map(Tear::At),
        (any::<Index>(), any::<Index>())
            .prop_map(|(boundary, written)| Tear::Partial { boundary, written }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_torn_last_segment_keeps_a_prefix_and_reports_the_cut(
        n in 1u64..300, every in 1u64..40, mask in any::<u64>(), tear in tear(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let settled = write(dir.path(), n, every, mask);
        let files = firsts(dir.path());
        let Some((last_first, last)) = files.last().cloned() else {
            // Everything settled and removed: nothing to tear.
            prop_assert_eq!(reopen(dir.path()).0, Vec::<u64>::new());
            return Ok(());
        };
        let len = usize::try_from(std::fs::metadata(&last).unwrap().len()).unwrap();
        // Record boundaries in the last segment, from its header on.
        let mut ends = vec![HEADER_LEN];
        for i in last_first..n {
            ends.push(ends.last().unwrap() + usize::try_from(record_len(i)).unwrap());
        }
        prop_assert_eq!(*ends.last().unwrap(), len);
        let (cut_at, tail) = match tear {
            Tear::At(at) => (at.index(len + 1), Vec::new()),
            Tear::Partial { boundary, written } => {
                let mut r = Vec::new();
                encode(&mut r, n, b"{app=\"torn\"}", 0, b"a record the kill cut short");
                (*boundary.get(&ends), r[..written.index(r.len())].to_vec())
            }
        };
        let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(cut_at as u64).unwrap();
        drop(f);
        std::fs::OpenOptions::new().append(true).open(&last).unwrap().write_all(&tail).unwrap();

        let (got, rec) = reopen(dir.path());
        // Whole records before the cut survive; the rest of the last segment does not.
        let kept = ends.iter().filter(|&&e| e <= cut_at).count().saturating_sub(1) as u64;
        let expected: Vec<u64> = (0..last_first + kept).filter(|i| !settled.contains(i)).collect();
        prop_assert_eq!(&got, &expected);
        let boundary = if cut_at < HEADER_LEN { 0 } else { ends[usize::try_from(kept).unwrap()] };
        let cut = (cut_at - boundary + tail.len()) as u64;
        let reported: Vec<u64> = rec.repaired.iter().map(|r| r.bytes_cut).collect();
        prop_assert_eq!(reported, if cut > 0 { vec![cut] } else { vec![] });
        prop_assert_eq!(rec.lost, 0);
        // Repaired once; appends go on after what was kept.
        let (again, rec) = reopen(dir.path());
        prop_assert_eq!(again, expected);
        prop_assert!(rec.repaired.is_empty());
    }

    #[test]
    fn damage_anywhere_never_panics_nor_brings_back_a_settled_entry(
        n in 1u64..300, mask in any::<u64>(),
        cuts in proptest::collection::vec((any::<Index>(), any::<Index>()), 0..3),
        flips in proptest::collection::vec((any::<Index>(), any::<Index>(), 1u8..=255), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let settled = write(dir.path(), n, 7, mask);
        let files = firsts(dir.path());
        if files.is_empty() {
            return Ok(());
        }
        for (file, at) in &cuts {
            let (_, path) = file.get(&files);
            let len = usize::try_from(std::fs::metadata(path).unwrap().len()).unwrap();
            std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(at.index(len + 1) as u64).unwrap();
        }
        for (file, at, mask) in &flips {
            let (_, path) = file.get(&files);
            let mut bytes = std::fs::read(path).unwrap();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
                std::fs::write(path, &bytes).unwrap();
            }
        }

        let (got, rec) = reopen(dir.path());
        // In order, each once, never settled (and each checked whole by `check`).
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "{:?}", got);
        prop_assert!(got.iter().all(|i| !settled.contains(i) && *i < n));
        // Lost entries are unsettled ones not handed out, each counted once.
        let unsettled = (0..n).filter(|i| !settled.contains(i)).count() as u64;
        prop_assert!(got.len() as u64 + rec.lost <= unsettled, "{} + {} > {}", got.len(), rec.lost, unsettled);
        // The repair is done once and for all: a second open finds nothing more.
        let (again, rec) = reopen(dir.path());
        prop_assert_eq!(again, got);
        prop_assert!(rec.repaired.is_empty() && rec.lost == 0, "{:?}", rec);
    }
}

use std::io::Write as _;
