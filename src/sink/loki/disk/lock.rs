//! One buffer per directory: an exclusive `flock` on `dir/lock`, which the kernel releases
//! when the holder exits, however it exits (a lock left by a `kill -9` is free again). The
//! file names the holder, for the error a second opener gets.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::error::OpenError;

/// The lock file's name in the buffer's directory.
pub(super) const LOCK: &str = "lock";

/// How long (in milliseconds, one retry after each) a lock whose holder is this very
/// process is waited for: a child process being spawned holds a copy of every descriptor
/// until it execs, so a lock just released here can stay held for that moment. 127 ms in
/// all; a lock held by another process is reported at once.
const OWN_PID_RETRIES_MS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// The held lock; released when dropped.
#[derive(Debug)]
pub(super) struct DirLock {
    file: File,
    #[cfg_attr(
        unix,
        allow(dead_code, reason = "read where the link count cannot be seen")
    )]
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock on `dir` (without waiting, unless its holder is this process: see
    /// [`OWN_PID_RETRIES_MS`]), and writes this process's pid, host name and start time into
    /// it (over a stale holder's text).
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, OpenError> {
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(OpenError::io("open", &path))?;
        let mut retries = OWN_PID_RETRIES_MS.iter();
        loop {
            // `File::try_lock` (Rust 1.89, the crate's minimum): the lock dies with its
            // holder, as flock's does.
            let locked = file.try_lock();
            match locked {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = holder_of(&path);
                    let ours = holder.starts_with(&format!("pid {} ", std::process::id()));
                    match retries.next() {
                        Some(&ms) if ours => backoff(ms),
                        _ => {
                            return Err(OpenError::Locked {
                                dir: dir.to_owned(),
                                holder: if ours {
                                    format!("{holder} (this process: another sink in it)")
                                } else {
                                    holder
                                },
                            })
                        }
                    }
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(OpenError::io("lock", &path)(e));
                }
            }
        }
        file.set_len(0)
            .and_then(|()| file.write_all(holder_text().as_bytes()))
            .map_err(OpenError::io("write", &path))?;
        Ok(DirLock { file, path })
    }

    /// True when the lock file has no name left: the directory (or the file) was removed
    /// under the buffer. One `fstat`.
    #[cfg(unix)]
    pub(super) fn is_gone(&self) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        self.file.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    // Elsewhere a missing name is what can be seen.
    #[cfg(not(unix))]
    pub(super) fn is_gone(&self) -> bool {
        !self.path.exists()
    }
}

// A retry backoff, not synchronisation with this crate's own code: the other side is a
// child process between its fork and its exec.
#[allow(clippy::disallowed_methods)]
fn backoff(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms)); // retry backoff against a child process
}

/// Who holds the lock, as the holder wrote it.
fn holder_of(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
        // Taken a moment ago and not written yet, or unreadable.
        _ => "another process (or another sink in this one), which has not written its name"
            .to_owned(),
    }
}

/// `pid 4242 on host-a since Tue, 03 Dec 2024 11:39:48 GMT`.
fn holder_text() -> String {
    let since = httpdate::fmt_http_date(SystemTime::now());
    match host_name() {
        Some(host) => format!("pid {} on {host} since {since}\n", std::process::id()),
        None => format!("pid {} since {since}\n", std::process::id()),
    }
}

/// The host's name where it is one read away (Linux), else from the environment.
fn host_name() -> Option<String> {
    let read = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let host = read.trim();
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_this_process_still_holds_through_a_copy_is_reported_as_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        // What a child being spawned holds: the same open file, so the same lock.
        let copy = held.file.try_clone().unwrap();
        drop(held);
        let err = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("this process"), "{err}");
        drop(copy);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_stale_holder_text_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LOCK),
            "pid 1 on a-long-gone-host-with-a-long-name since then\n",
        )
        .unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK)).unwrap();
        assert!(
            text.starts_with(&format!("pid {} ", std::process::id())),
            "{text}"
        );
        assert!(!text.contains("long-gone"), "{text}");
    }

    #[test]
    fn removal_of_the_directory_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("buf");
        std::fs::create_dir(&sub).unwrap();
        let held = DirLock::acquire(&sub).unwrap();
        assert!(!held.is_gone());
        std::fs::remove_dir_all(&sub).unwrap();
        assert!(held.is_gone());
    }
}
