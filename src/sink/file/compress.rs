//! Atomic gzip compression of rotated files, and recovery from a crash part-way through.
//!
//! The archive is written as `name.gz.tmp`, synced, renamed to `name.gz` (and the directory
//! synced), and only then is the plain file removed. So at every instant the data is in the
//! plain file, or in a complete archive, or both; a `.gz.tmp` is never the only copy.
//!
//! Only regular files are touched: a symlink (or anything else) named like a rotated file
//! is not the sink's, so it is never read, compressed, replaced or removed, and neither is
//! what it points to.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::naming::{with_suffix, Kind, Naming, Rotated, GZ};

/// What compressing one file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compressed {
    pub(crate) archive: PathBuf,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

/// Compresses `plain` into `plain.gz` atomically, then removes `plain`. `go_on` is asked
/// before each chunk; an error from it stops the compression (shutdown's deadline).
///
/// Fails, touching nothing, when `plain` is not a regular file or the archive's name is
/// taken (by anything, a symlink included).
pub(crate) fn gzip(
    plain: &Path,
    level: u32,
    go_on: &dyn Fn() -> io::Result<()>,
) -> io::Result<Compressed> {
    let archive = with_suffix(plain, GZ);
    let tmp = with_suffix(&archive, super::naming::TMP);
    let input = open_regular(plain)?;
    // Never through an existing name: `create_new` does not follow a symlink planted there
    // (and one that is there is not ours to remove).
    let out = File::options().write(true).create_new(true).open(&tmp)?;
    let result = write_archive(input, out, level, go_on);
    let (bytes_in, bytes_out) = match result {
        Ok(sizes) => sizes,
        Err(e) => {
            // The plain file is untouched; a half-written temporary must not linger.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // The name was free when the file was rotated (or repair found no archive): something
    // that appeared since is not ours to replace. (Not atomic with the rename; a hard link
    // would be, but not every file system has them.)
    if std::fs::symlink_metadata(&archive).is_ok() {
        let _ = std::fs::remove_file(&tmp);
        let shown = archive.display();
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{shown} already exists; it is left alone and so is the plain file"),
        ));
    }
    std::fs::rename(&tmp, &archive)?;
    sync_dir(plain);
    std::fs::remove_file(plain)?;
    Ok(Compressed {
        archive,
        bytes_in,
        bytes_out,
    })
}

fn write_archive(
    mut input: File,
    out: File,
    level: u32,
    go_on: &dyn Fn() -> io::Result<()>,
) -> io::Result<(u64, u64)> {
    let mut encoder = GzEncoder::new(
        BufWriter::with_capacity(256 * 1024, out),
        flate2::Compression::new(level),
    );
    let mut chunk = vec![0; 256 * 1024];
    let mut bytes_in = 0;
    loop {
        go_on()?;
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        encoder.write_all(&chunk[..n])?;
        bytes_in += n as u64;
    }
    let out = encoder
        .finish()?
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    out.sync_all()?;
    Ok((bytes_in, out.metadata()?.len()))
}

/// Opens `path` for reading if it is a regular file, not following a symlink: the name is
/// checked without following it, and the file opened is checked to be the one checked.
fn open_regular(path: &Path) -> io::Result<File> {
    let not_ours = || {
        let shown = path.display();
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{shown} is not a regular file (a symlink?); it is left alone"),
        )
    };
    let before = std::fs::symlink_metadata(path)?;
    if !before.file_type().is_file() {
        return Err(not_ours());
    }
    let file = File::open(path)?;
    if !same_file(&before, &file.metadata()?) {
        return Err(not_ours());
    }
    Ok(file)
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

// Elsewhere only the type can be compared.
#[cfg(not(unix))]
fn same_file(_a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    b.is_file()
}

/// Makes a rename in `path`'s directory durable. Best effort: some file systems refuse to
/// sync a directory, and the rename itself is already atomic.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// A step to bring a directory back to a clean state after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Repair {
    /// A temporary archive (a compression cut short): delete it.
    DeleteTemp(PathBuf),
    /// A plain file with an archive: keep the plain file only if the archive is not whole.
    CheckArchive { plain: PathBuf, archive: PathBuf },
    /// A plain rotated file never compressed: compress it.
    Compress(PathBuf),
}

/// Plans the repairs for this sink's files in `dir`. Pure given the listing.
pub(crate) fn plan(dir: &Path, files: &[Rotated], compress: bool) -> Vec<Repair> {
    let has_archive = |base: &str| files.iter().any(|f| f.kind == Kind::Gz && f.base == base);
    let mut out = Vec::new();
    for f in files {
        match f.kind {
            Kind::GzTmp => out.push(Repair::DeleteTemp(dir.join(format!("{}.gz.tmp", f.base)))),
            Kind::Plain if has_archive(&f.base) => out.push(Repair::CheckArchive {
                plain: dir.join(&f.base),
                archive: dir.join(format!("{}{GZ}", f.base)),
            }),
            Kind::Plain if compress => out.push(Repair::Compress(dir.join(&f.base))),
            Kind::Plain | Kind::Gz => {}
        }
    }
    // Temporaries first: a re-compression must not find one in its way.
    out.sort_by_key(|r| !matches!(r, Repair::DeleteTemp(_)));
    out
}

/// This sink's files in `dir`, parsed: regular files with names it produces. A symlink
/// named like a rotated file is not listed, so repair never follows it.
pub(crate) fn scan(dir: &Path, naming: &Naming) -> io::Result<Vec<Rotated>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(parsed) = entry.file_name().to_str().and_then(|n| naming.parse(n)) else {
            continue;
        };
        // `file_type` does not follow symlinks; one that fails (the file vanished) is skipped.
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// True when `archive` decompresses completely to exactly `plain`'s length: only then may
/// the plain file go. The archive was renamed into place after a sync, so this is a check
/// against files we did not write, not against our own crash.
pub(crate) fn archive_is_whole(archive: &Path, plain: &Path) -> bool {
    let Ok(expected) = open_regular(plain)
        .and_then(|f| f.metadata())
        .map(|m| m.len())
    else {
        return false;
    };
    let Ok(file) = open_regular(archive) else {
        return false;
    };
    let mut decoder = GzDecoder::new(BufReader::new(file));
    io::copy(&mut decoder, &mut io::sink()).is_ok_and(|n| n == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn naming() -> Naming {
        Naming::new("app", "log")
    }

    /// Decompresses a gzip file fully.
    fn read_gz(path: &Path) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        GzDecoder::new(File::open(path)?).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Writes `data` compressed to `path` (test helper for building crash leftovers).
    fn write_gz(path: &Path, data: &[u8]) {
        let mut e = GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap();
    }

    fn base(n: u64) -> String {
        naming().rotated(SystemTime::UNIX_EPOCH + Duration::from_secs(n), 0)
    }

    #[test]
    fn gzip_replaces_the_plain_file_with_a_whole_archive() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join(base(1));
        std::fs::write(&plain, b"line 1\nline 2\n").unwrap();
        let c = gzip(&plain, 6, &|| Ok(())).unwrap();
        assert!(!plain.exists());
        assert_eq!(c.bytes_in, 14);
        assert_eq!(read_gz(&c.archive).unwrap(), b"line 1\nline 2\n");
        assert!(!with_suffix(&c.archive, ".tmp").exists());
    }

    #[test]
    fn a_stopped_compression_keeps_the_plain_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join(base(1));
        std::fs::write(&plain, b"line\n").unwrap();
        let stop = || Err(io::Error::other("stopped"));
        assert_eq!(gzip(&plain, 6, &stop).unwrap_err().to_string(), "stopped");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(plain.exists());
    }

    #[test]
    fn a_missing_source_fails_without_leaving_a_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join(base(1));
        assert!(gzip(&plain, 6, &|| Ok(())).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn plan_deletes_temporaries_first_and_recompresses_their_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(1);
        std::fs::write(dir.path().join(&b), "x").unwrap();
        std::fs::write(dir.path().join(format!("{b}.gz.tmp")), "partial").unwrap();
        let files = scan(dir.path(), &naming()).unwrap();
        assert_eq!(
            plan(dir.path(), &files, true),
            vec![
                Repair::DeleteTemp(dir.path().join(format!("{b}.gz.tmp"))),
                Repair::Compress(dir.path().join(&b))
            ]
        );
    }

    #[test]
    fn plan_checks_a_plain_file_that_has_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(2);
        let files = vec![
            naming().parse(&b).unwrap(),
            naming().parse(&format!("{b}.gz")).unwrap(),
        ];
        assert_eq!(
            plan(dir.path(), &files, false),
            vec![Repair::CheckArchive {
                plain: dir.path().join(&b),
                archive: dir.path().join(format!("{b}.gz")),
            }]
        );
    }

    #[test]
    fn plan_leaves_plain_files_alone_without_compression() {
        let files = vec![naming().parse(&base(3)).unwrap()];
        assert!(plan(Path::new("/x"), &files, false).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn scan_skips_symlinks_named_like_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("secret");
        std::fs::write(&target, "secret\n").unwrap();
        let b = base(4);
        for name in [b.clone(), format!("{b}.gz"), format!("{b}.gz.tmp")] {
            std::os::unix::fs::symlink(&target, dir.path().join(name)).unwrap();
        }
        let regular = base(5);
        std::fs::write(dir.path().join(&regular), "x").unwrap();
        let files = scan(dir.path(), &naming()).unwrap();
        assert_eq!(files, vec![naming().parse(&regular).unwrap()]);
    }

    #[cfg(unix)]
    #[test]
    fn gzip_refuses_a_symlink_and_touches_neither_it_nor_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("secret");
        std::fs::write(&target, "secret\n").unwrap();
        let link = dir.path().join(base(6));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(gzip(&link, 1, &|| Ok(())).is_err());
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        assert_eq!(std::fs::read(&target).unwrap(), b"secret\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn gzip_never_writes_through_or_over_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("secret");
        std::fs::write(&target, "secret\n").unwrap();
        for suffix in [".gz.tmp", ".gz"] {
            let plain = dir.path().join(base(7));
            std::fs::write(&plain, "line\n").unwrap();
            let link = dir.path().join(format!("{}{suffix}", base(7)));
            std::os::unix::fs::symlink(&target, &link).unwrap();
            assert!(gzip(&plain, 1, &|| Ok(())).is_err(), "{suffix}");
            assert_eq!(std::fs::read_link(&link).unwrap(), target, "{suffix}");
            assert_eq!(std::fs::read(&target).unwrap(), b"secret\n", "{suffix}");
            assert_eq!(std::fs::read(&plain).unwrap(), b"line\n", "{suffix}");
            std::fs::remove_file(&link).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_truncated_archive_is_not_whole() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("p");
        let data = vec![b'a'; 100_000];
        std::fs::write(&plain, &data).unwrap();
        let archive = dir.path().join("p.gz");
        write_gz(&archive, &data);
        assert!(archive_is_whole(&archive, &plain));
        let bytes = std::fs::read(&archive).unwrap();
        std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
        assert!(!archive_is_whole(&archive, &plain));
    }
}
