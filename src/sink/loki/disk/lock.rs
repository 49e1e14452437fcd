//! One buffer per directory: an exclusive `flock` on `dir/lock`, which the kernel releases
//! when the holder exits, however it exits (a lock left by a `kill -9` is free again). The
//! file names the holder, for the error a second opener gets.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::error::OpenError;

/// The lock file's name in the buffer's directory.
pub(super) const LOCK: &str = "lock";

/// How long a lock that no buffer of this process holds, but whose holder text names this
/// process, is waited for. A child process being spawned holds a copy of every descriptor
/// until it execs (the lock's too, `O_CLOEXEC` or not), so a lock released here a moment ago
/// stays held for that moment, which on a loaded machine can be long. A lock held by a live
/// buffer of this process ([`HELD`]) or by another process is reported at once.
const CHILD_COPY_WAIT: Duration = Duration::from_secs(5);

/// The longest pause between two tries while [`CHILD_COPY_WAIT`] runs (the first is 1 ms,
/// doubling up to this).
const CHILD_COPY_MAX_PAUSE: Duration = Duration::from_millis(50);

/// The lock files held by this process's live buffers, by identity: what tells "another
/// sink of this process holds it" (refused at once) from "a copy of a descriptor this
/// process closed is still open in a child" (waited for).
static HELD: Mutex<Vec<LockId>> = Mutex::new(Vec::new());

/// A lock file's identity: its device and inode where those can be read, else its path.
#[cfg(unix)]
type LockId = (u64, u64);
#[cfg(not(unix))]
type LockId = PathBuf;

fn held() -> std::sync::MutexGuard<'static, Vec<LockId>> {
    // The list stays consistent whatever panicked while holding it (a push or a remove).
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The held lock; released when dropped.
#[derive(Debug)]
pub(super) struct DirLock {
    file: File,
    id: LockId,
    #[cfg_attr(
        unix,
        allow(dead_code, reason = "read where the link count cannot be seen")
    )]
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock on `dir` (without waiting, unless the only holder can be a child
    /// process of this one: see [`CHILD_COPY_WAIT`]), and writes this process's pid, host
    /// name and start time into it (over a stale holder's text).
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, OpenError> {
        Self::acquire_waiting(dir, CHILD_COPY_WAIT)
    }

    /// [`acquire`](Self::acquire), waiting `child_copy_wait` for a copy held by a child.
    fn acquire_waiting(dir: &Path, child_copy_wait: Duration) -> Result<DirLock, OpenError> {
        let path = dir.join(LOCK);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(OpenError::io("open", &path))?;
        let id = lock_id(&file, &path).map_err(OpenError::io("open", &path))?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            // `File::try_lock` (Rust 1.89, the crate's minimum): the lock dies with its
            // holder, as flock's does.
            let locked = file.try_lock();
            match locked {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = holder_of(&path);
                    let ours = holder.starts_with(&format!("pid {} ", std::process::id()));
                    let by_a_sink_here = held().contains(&id);
                    if ours && !by_a_sink_here && started.elapsed() < child_copy_wait {
                        backoff(pause);
                        pause = (pause * 2).min(CHILD_COPY_MAX_PAUSE);
                        continue;
                    }
                    let holder = match (ours, by_a_sink_here) {
                        (_, true) => format!("{holder} (this process: another sink in it)"),
                        (true, false) => format!(
                            "{holder} (this process, through a copy of a closed descriptor \
                             that a child process still held after {} ms)",
                            child_copy_wait.as_millis()
                        ),
                        (false, false) => holder,
                    };
                    return Err(OpenError::Locked {
                        dir: dir.to_owned(),
                        holder,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(OpenError::io("lock", &path)(e));
                }
            }
        }
        // Registered while the lock is held, so no other buffer of this process can hold
        // the same id now.
        #[cfg_attr(unix, allow(clippy::clone_on_copy, reason = "a path elsewhere"))]
        held().push(id.clone());
        let lock = DirLock { file, id, path };
        lock.file
            .set_len(0)
            .and_then(|()| (&lock.file).write_all(holder_text().as_bytes()))
            .map_err(OpenError::io("write", &lock.path))?;
        Ok(lock)
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

impl Drop for DirLock {
    fn drop(&mut self) {
        // Taken off the list before the file (and with it the lock) is closed, so a buffer
        // of this process opening it meanwhile waits for the close instead of being refused.
        let mut held = held();
        if let Some(at) = held.iter().position(|id| *id == self.id) {
            held.swap_remove(at);
        }
    }
}

#[cfg(unix)]
fn lock_id(file: &File, _path: &Path) -> std::io::Result<LockId> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn lock_id(_file: &File, path: &Path) -> std::io::Result<LockId> {
    std::fs::canonicalize(path)
}

// A retry backoff, not synchronisation with this crate's own code: the other side is a
// child process between its fork and its exec, which tells no one when it execs.
#[allow(clippy::disallowed_methods)]
fn backoff(pause: Duration) {
    std::thread::sleep(pause); // retry backoff against a child process
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
    fn a_lock_held_by_another_sink_here_is_refused_as_that() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another sink in it"), "{err}");
    }

    /// A lock taken and released by a buffer of this process, still held through a copy of
    /// its descriptor: what a child being spawned holds (the same open file, so the same lock).
    fn released_but_held_by_a_copy() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let copy = held.file.try_clone().unwrap();
        drop(held);
        (dir, copy)
    }

    #[test]
    fn a_lock_this_process_still_holds_through_a_copy_is_reported_as_this_process() {
        let (dir, copy) = released_but_held_by_a_copy();
        let err = DirLock::acquire_waiting(dir.path(), Duration::from_millis(20))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a child process still held"), "{err}");
        assert!(!err.contains("another sink"), "{err}");
        drop(copy);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_copy_closed_while_waited_for_lets_the_lock_be_taken() {
        let (dir, copy) = released_but_held_by_a_copy();
        let path = dir.path().to_owned();
        // Whether it tries before or after the copy closes, it must end with the lock.
        let opener = std::thread::spawn(move || DirLock::acquire(&path).map(drop));
        drop(copy);
        opener.join().unwrap().unwrap();
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
