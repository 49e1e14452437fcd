//! `writes_refused`: every write refused by a closed sink is reported, at most once a
//! second per sink, and a trailing burst gets its report once the second has passed.
//!
//! The reports come from a thread of their own: a refusal may happen inside a `tracing`
//! layer callback, where an event would be dropped (tracing does not re-enter a
//! dispatcher), and producers never emit events. The reporter emits to the global
//! subscriber; its events are never fed back to any sink (its thread is marked, see
//! `thread::Mark::is_reporter`).

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use super::state::RefusalReport;
use super::Shared;
use crate::events;

/// Tells the reporter that `shared` has refusals to report (once per report: the state
/// says when, see `State::schedule_refusal_report`).
pub(super) fn schedule(shared: &Arc<Shared>) {
    static REPORTER: OnceLock<Option<Mutex<Sender<Arc<Shared>>>>> = OnceLock::new();
    let reporter = REPORTER.get_or_init(|| {
        let (tx, rx) = channel::<Arc<Shared>>();
        std::thread::Builder::new()
            .name("sinkwatch-reporter".into())
            .spawn(move || {
                super::thread::mark_reporter();
                run(&rx);
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    if let Some(tx) = reporter {
        let _ = tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(shared.clone());
    }
}

fn run(rx: &std::sync::mpsc::Receiver<Arc<Shared>>) {
    // Sinks with a report scheduled, and when it is due.
    let mut due: Vec<(Arc<Shared>, Instant)> = Vec::new();
    loop {
        let next = due.iter().map(|(_, at)| *at).min();
        let received = match next {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(shared) => due.push((shared, Instant::now())),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        due.retain_mut(|(shared, at)| {
            if *at > now {
                return true;
            }
            // The lock is released before the event: a layer may feed this very sink.
            let report = shared.lock().refusal_report(now);
            match report {
                RefusalReport::Now(n) => {
                    events::writes_refused(&shared.id, n);
                    false
                }
                RefusalReport::At(later) => {
                    *at = later;
                    true
                }
                RefusalReport::Nothing => false,
            }
        });
    }
}
