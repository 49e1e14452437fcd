//! Crash tests' child processes: the test binary re-executed to run one ignored test (the
//! child's side), killed with `SIGKILL` by the parent.

use std::ffi::OsStr;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the child when dropped, so a failing parent never leaves it running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the ignored test `test` of this binary in a child process with `envs`, and returns
/// once the child printed the line `marker` (its stdin stays open: a child that reads it to
/// the end does not outlive a parent that failed).
pub fn start(test: &str, envs: &[(&str, &OsStr)], marker: &'static str) -> KillOnDrop {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command
        .args([test, "--exact", "--ignored", "--nocapture"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = KillOnDrop(command.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines() {
            if l.as_deref().is_ok_and(|l| l == marker) {
                let _ = tx.send(());
            }
        }
    });
    // A bound on a wait for another process, not a sleep: it fails the test if the child
    // never gets there.
    rx.recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("the child never printed {marker:?}"));
    child
}

/// Kills the child with `SIGKILL` (`Child::kill` on Unix) and checks it did not finish.
#[allow(dead_code)] // the file sink's crash test checks the signal itself
pub fn kill(mut child: KillOnDrop) {
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");
}
