//! What a crash or damage leaves, repaired at open: cut, reported, never a refusal to
//! start (except for another version's files, which are not ours to change).

use std::io::Write as _;

use super::super::format::{encode, header, HEADER_LEN};
use super::super::{OpenError, Repaired};
use super::*;

/// Appends `bytes` to `path`.
fn append_bytes(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn a_torn_tail_is_cut_reported_and_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..5);
    buf.commit().unwrap();
    drop(buf);
    let last = segments(dir.path()).pop().unwrap();
    // Half a record, as a kill inside write(2) leaves it.
    let mut torn = Vec::new();
    encode(&mut torn, 5, b"s", 0, b"a payload cut short");
    append_bytes(&last, &torn[..torn.len() / 2]);
    let len = std::fs::metadata(&last).unwrap().len();

    let (mut buf, rec) = open(dir.path());
    let cut = (torn.len() / 2) as u64;
    assert_eq!(
        rec.repaired,
        [Repaired {
            path: last.clone(),
            bytes_cut: cut
        }]
    );
    assert_eq!(std::fs::metadata(&last).unwrap().len(), len - cut);
    assert_eq!((rec.entries, rec.lost), (5, 0));
    append(&mut buf, 5..7);
    buf.commit().unwrap();
    assert_eq!(numbers(&drain(&mut buf)), (0..7).collect::<Vec<_>>());
    drop(buf);
    let (_, rec) = open(dir.path());
    assert!(rec.repaired.is_empty(), "repaired once");
}

#[test]
fn a_corrupt_record_is_skipped_reported_once_and_its_neighbours_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..5);
    buf.commit().unwrap();
    drop(buf);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // The last byte of the third record's payload.
    let at = HEADER_LEN + usize::try_from((0..3).map(record_len).sum::<u64>()).unwrap();
    bytes[at - 1] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let (mut buf, rec) = open(dir.path());
    assert_eq!((rec.entries, rec.lost), (4, 1));
    assert!(
        rec.repaired.is_empty(),
        "nothing cut: the record's length was good"
    );
    assert_eq!(numbers(&drain(&mut buf)), [0, 1, 3, 4]);
    drop(buf);
    let (_, rec) = open(dir.path());
    assert_eq!((rec.entries, rec.lost), (4, 0), "reported once");
}

#[test]
fn damage_inside_a_sealed_segment_loses_the_rest_of_it_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..200);
    buf.commit().unwrap();
    drop(buf);
    let files = segments(dir.path());
    let second: Seq = files[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = std::fs::read(&files[0]).unwrap();
    // The first record's length: nothing after it can be framed.
    bytes[HEADER_LEN + 3] = 0xff;
    std::fs::write(&files[0], &bytes).unwrap();

    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec.lost, second);
    assert_eq!(rec.entries, 200 - second);
    assert_eq!(
        rec.repaired,
        [Repaired {
            path: files[0].clone(),
            bytes_cut: (bytes.len() - HEADER_LEN) as u64
        }]
    );
    assert_eq!(numbers(&drain(&mut buf)), (second..200).collect::<Vec<_>>());
}

#[test]
fn a_segment_torn_at_its_creation_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..3);
    buf.commit().unwrap();
    drop(buf);
    let torn = dir.path().join("00000000000000000003.seg");
    std::fs::write(&torn, &header(3)[..10]).unwrap();
    let (mut buf, rec) = open(dir.path());
    assert_eq!(
        rec.repaired,
        [Repaired {
            path: torn.clone(),
            bytes_cut: 10
        }]
    );
    assert!(!torn.exists());
    assert_eq!(numbers(&drain(&mut buf)), [0, 1, 2]);
    assert_eq!(append(&mut buf, 3..4), [3]);
    drop(buf);
    // Killed before even the header: an empty file, removed without a report.
    let empty = dir.path().join("00000000000000000004.seg");
    std::fs::write(&empty, b"").unwrap();
    let (mut buf, rec) = open(dir.path());
    assert!(rec.repaired.is_empty() && !empty.exists(), "{rec:?}");
    assert_eq!(numbers(&drain(&mut buf)), [0, 1, 2, 3]);
}

#[test]
fn a_torn_settlement_line_is_cut_and_the_others_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..10);
    buf.commit().unwrap();
    let (_, r) = batch(&mut buf, 3);
    buf.settle(r.unwrap());
    drop(buf);
    let acks = dir.path().join("acks");
    append_bytes(&acks, b"3 9 ab");
    let (mut buf, rec) = open(dir.path());
    assert_eq!(
        rec.repaired,
        [Repaired {
            path: acks,
            bytes_cut: 6
        }]
    );
    assert_eq!(numbers(&drain(&mut buf)), (3..10).collect::<Vec<_>>());
}

#[test]
fn a_damaged_settlement_line_is_counted_and_its_entries_come_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..10);
    buf.commit().unwrap();
    let (_, r) = batch(&mut buf, 3);
    buf.settle(r.unwrap());
    drop(buf);
    let acks = dir.path().join("acks");
    let text = std::fs::read_to_string(&acks)
        .unwrap()
        .replace("0 3 ", "0 4 ");
    std::fs::write(&acks, text).unwrap();
    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec.lost_settlements, 1);
    assert_eq!(
        numbers(&drain(&mut buf)),
        (0..10).collect::<Vec<_>>(),
        "at least once"
    );
}

#[test]
fn another_version_is_refused_and_its_files_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..3);
    buf.commit().unwrap();
    drop(buf);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8] = 2;
    let crc = crc32fast::hash(&bytes[..20]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(b"torn?");
    std::fs::write(&seg, &bytes).unwrap();
    let acks_before = std::fs::read(dir.path().join("acks")).unwrap();
    let Err(err) = DiskBuffer::open(opts(dir.path())) else {
        panic!("opened a version 2 segment");
    };
    assert!(
        matches!(err, OpenError::Version { version: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    assert_eq!(std::fs::read(dir.path().join("acks")).unwrap(), acks_before);
}

#[test]
fn settled_numbers_are_never_given_out_again_even_if_the_data_before_them_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = open(dir.path());
    append(&mut buf, 0..10);
    buf.commit().unwrap();
    let (_, r) = batch(&mut buf, 10);
    buf.settle(8..10);
    drop(buf);
    // A power loss took the data but not the log: the segment ends after entry 4.
    let seg = segments(dir.path()).pop().unwrap();
    let len = HEADER_LEN as u64 + (0..5).map(record_len).sum::<u64>();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len)
        .unwrap();
    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec.entries, 5);
    let fresh = append(&mut buf, 100..101);
    assert_eq!(fresh, [10], "past the settled 8..10, not 5");
    buf.commit().unwrap();
    assert_eq!(numbers(&drain(&mut buf)), [0, 1, 2, 3, 4, 100]);
    assert_eq!(r, Some(0..10));
}

#[test]
fn foreign_files_in_the_directory_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    std::fs::write(dir.path().join("42.seg"), b"not a segment name").unwrap();
    let (mut buf, rec) = open(dir.path());
    assert_eq!(rec, Recovered::default());
    append(&mut buf, 0..1);
    drop(buf);
    let _ = open(dir.path());
    assert_eq!(
        std::fs::read(dir.path().join("notes.txt")).unwrap(),
        b"mine"
    );
    assert!(dir.path().join("42.seg").exists());
}
