//! Retention: which rotated files to remove, by count, age and total bytes.
//!
//! Only regular files whose names this sink produces are ever considered (see `naming`);
//! the active file, temporary archives and symlinks never are. Archives count at their
//! compressed size; a rotated file still waiting for compression is left out (see
//! [`without`]) until it is compressed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::naming::{Kind, Naming, Stamp};

/// The retention limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Retention {
    pub(crate) count: Option<usize>,
    pub(crate) age: Option<Duration>,
    pub(crate) bytes: Option<u64>,
}

/// A rotated file retention may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) path: PathBuf,
    pub(crate) stamp: Stamp,
    pub(crate) bytes: u64,
}

impl Retention {
    pub(crate) fn is_active(&self) -> bool {
        *self != Retention::default()
    }

    /// Splits `files` into those to keep and those to remove (returned), newest kept first.
    /// A file goes when it is past the count, older than the age limit at `now_millis`, or
    /// would take the newest-first running total past the byte budget.
    pub(crate) fn select(&self, mut files: Vec<Candidate>, now_millis: i64) -> Vec<Candidate> {
        files.sort_by_key(|f| std::cmp::Reverse(f.stamp));
        let oldest_kept = self.age.map(|age| {
            now_millis.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
        });
        let mut total = 0_u64;
        let mut over_budget = false;
        let mut remove = Vec::new();
        for (i, file) in files.into_iter().enumerate() {
            total = total.saturating_add(file.bytes);
            // Once the budget is spent, every older file goes too, so the newest are kept.
            over_budget |= self.bytes.is_some_and(|max| total > max);
            let too_many = self.count.is_some_and(|max| i >= max);
            let too_old = oldest_kept.is_some_and(|limit| file.stamp.millis < limit);
            if too_many || too_old || over_budget {
                remove.push(file);
            }
        }
        remove
    }
}

/// Lists this sink's rotated files in `dir` (plain and archived, not temporaries).
pub(crate) fn list(dir: &Path, naming: &Naming) -> std::io::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(parsed) = naming.parse(&name) else {
            continue;
        };
        if parsed.kind == Kind::GzTmp {
            continue;
        }
        // Neither call follows a symlink: one named like a rotated file is not ours, and
        // neither is what it points to. A file that vanished since the listing is simply
        // not a candidate.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            out.push(Candidate {
                path: entry.path(),
                stamp: parsed.stamp,
                bytes: meta.len(),
            });
        }
    }
    Ok(out)
}

/// `files` without those in `pending` (rotated files whose compression has not run yet):
/// retention neither counts them nor removes them, so compression falling behind never
/// makes it delete a file before it is compressed, nor count one at its plain size.
///
/// Also returns the stamp of the oldest pending file: nothing newer may be removed yet, or
/// a newer archive would go while an older file waits (retention removes oldest first).
pub(crate) fn without(
    mut files: Vec<Candidate>,
    pending: &HashSet<PathBuf>,
) -> (Vec<Candidate>, Option<Stamp>) {
    if pending.is_empty() {
        return (files, None);
    }
    let oldest = files
        .iter()
        .filter(|f| pending.contains(&f.path))
        .map(|f| f.stamp)
        .min();
    files.retain(|f| !pending.contains(&f.path));
    (files, oldest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    fn files(specs: &[(i64, u64)]) -> Vec<Candidate> {
        specs
            .iter()
            .enumerate()
            .map(|(i, &(millis, bytes))| Candidate {
                path: PathBuf::from(format!("f{i}")),
                stamp: Stamp { millis, counter: 0 },
                bytes,
            })
            .collect()
    }

    fn removed(r: Retention, specs: &[(i64, u64)], now: i64) -> Vec<i64> {
        let mut out: Vec<i64> = r
            .select(files(specs), now)
            .iter()
            .map(|c| c.stamp.millis)
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn no_limits_remove_nothing() {
        assert!(removed(Retention::default(), &[(1, 10), (2, 10)], 100).is_empty());
    }

    #[test]
    fn count_keeps_the_newest() {
        let r = Retention {
            count: Some(2),
            ..Retention::default()
        };
        assert_eq!(
            removed(r, &[(3, 1), (1, 1), (4, 1), (2, 1)], 10),
            vec![1, 2]
        );
    }

    #[test]
    fn count_exactly_at_the_limit_removes_nothing() {
        let r = Retention {
            count: Some(3),
            ..Retention::default()
        };
        assert!(removed(r, &[(1, 1), (2, 1), (3, 1)], 10).is_empty());
    }

    #[test]
    fn age_removes_files_older_than_the_limit() {
        let r = Retention {
            age: Some(Duration::from_secs(86_400)),
            ..Retention::default()
        };
        let now = 10 * DAY_MS;
        assert_eq!(
            removed(
                r,
                &[(now - 2 * DAY_MS, 1), (now - DAY_MS, 1), (now - 5, 1)],
                now
            ),
            vec![now - 2 * DAY_MS]
        );
    }

    #[test]
    fn bytes_remove_the_oldest_past_the_budget() {
        let r = Retention {
            bytes: Some(250),
            ..Retention::default()
        };
        assert_eq!(
            removed(r, &[(1, 100), (2, 100), (3, 100), (4, 100)], 10),
            vec![1, 2]
        );
    }

    #[test]
    fn bytes_budget_removes_everything_older_once_spent() {
        let r = Retention {
            bytes: Some(150),
            ..Retention::default()
        };
        // The 20-byte file would fit, but it is older than one that did not.
        assert_eq!(removed(r, &[(1, 20), (2, 100), (3, 100)], 10), vec![1, 2]);
    }

    #[test]
    fn limits_combine() {
        let r = Retention {
            count: Some(3),
            age: Some(Duration::from_millis(50)),
            bytes: Some(1000),
        };
        assert_eq!(
            removed(r, &[(10, 1), (70, 1), (80, 1), (90, 1), (95, 1)], 100),
            vec![10, 70]
        );
    }

    #[test]
    fn files_waiting_for_compression_are_left_out() {
        let r = Retention {
            bytes: Some(250),
            ..Retention::default()
        };
        // The two newest are plain files waiting for compression: at their plain size they
        // would push out every archive.
        let all = files(&[(1, 100), (2, 100), (3, 1000), (4, 1000)]);
        let pending: HashSet<PathBuf> = all[2..].iter().map(|c| c.path.clone()).collect();
        let remove = r.select(without(all, &pending).0, 10);
        assert!(remove.is_empty(), "{remove:?}");
    }

    #[cfg(unix)]
    #[test]
    fn listing_skips_symlinks_named_like_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("big");
        std::fs::write(&target, "x".repeat(1000)).unwrap();
        let naming = Naming::new("app", "log");
        let ours = naming.rotated(std::time::SystemTime::UNIX_EPOCH, 0);
        std::os::unix::fs::symlink(&target, dir.path().join(&ours)).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(format!("{ours}.gz"))).unwrap();
        assert!(list(dir.path(), &naming).unwrap().is_empty());
    }

    #[test]
    fn listing_skips_foreign_files_active_and_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let naming = Naming::new("app", "log");
        let ours = naming.rotated(std::time::SystemTime::UNIX_EPOCH, 0);
        for name in [
            "app.log".to_string(),
            "app.log.1".to_string(),
            "app.backup.log".to_string(),
            format!("{ours}.gz.tmp"),
            format!("{ours}.gz"),
            ours.clone(),
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let mut names: Vec<String> = list(dir.path(), &naming)
            .unwrap()
            .into_iter()
            .map(|c| c.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![ours.clone(), format!("{ours}.gz")]);
    }
}
