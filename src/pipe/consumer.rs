//! The worker's side of a sink's pipe: taking work, giving room back, settling records and
//! reporting drops.

use std::sync::Arc;
use std::time::Instant;

use super::chunk::{Chunk, FlushAck};
use super::thread::end;
use super::{seen, Shared};
use crate::deadline::{self, Check};
use crate::events::{self, reason};
use crate::SinkId;

/// The worker side of a pipe (cloned for the worker's own tasks).
#[derive(Clone)]
pub(crate) struct Consumer {
    shared: Arc<Shared>,
}

/// What [`Consumer::recv`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recv {
    /// Entries were moved into the chunk.
    Items,
    /// The queue is closed and empty: the worker should finish.
    Closed,
}

/// Emits `records_dropped` for the drops the producers counted since the last call, and
/// `queue_stalled` when a stall has ended. The lock is not held while emitting: a layer
/// feeding this very sink may take it.
pub(super) fn report(shared: &Shared) {
    let (reports, seen) = {
        let mut st = shared.lock();
        (st.take_reports(), seen(&st))
    };
    shared.metrics.publish(seen);
    for (n, why) in reports.drops {
        if n > 0 {
            events::records_dropped(&shared.id, n, why);
        }
    }
    if let Some(shed) = reports.stall_ended {
        events::queue_stalled(&shared.id, shed);
    }
}

impl Consumer {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Consumer { shared }
    }

    pub(crate) fn id(&self) -> &SinkId {
        &self.shared.id
    }

    /// Waits until there is something to do, then moves everything queued into `into`
    /// (which must be empty). Also emits any pending drop reports.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: entries are only moved once the future resolves.
    pub(crate) async fn recv(&self, into: &mut Chunk) -> Recv {
        deadline::wait_on(&self.shared.wake_worker, || {
            report(&self.shared);
            let mut st = self.shared.lock();
            if st.take(into) {
                Check::Ready(Recv::Items)
            } else if st.is_closed() {
                Check::Ready(Recv::Closed)
            } else {
                Check::Until(None)
            }
        })
        .await
    }

    /// Moves everything queued into `into` (which must be empty); true if anything was.
    pub(crate) fn try_recv(&self, into: &mut Chunk) -> bool {
        debug_assert!(into.is_empty());
        let (taken, seen) = {
            let mut st = self.shared.lock();
            (st.take(into), seen(&st))
        };
        self.shared.metrics.publish(seen);
        taken
    }

    /// True once the queue is closed (every handle dropped, or a shutdown asked for).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().is_closed()
    }

    /// The worker is done with `records` records counted at `bytes`: room for writers.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        if records == 0 && bytes == 0 {
            return;
        }
        let seen = {
            let mut st = self.shared.lock();
            st.release(records, bytes);
            seen(&st)
        };
        self.shared.wake_writers();
        self.shared.metrics.publish(seen);
    }

    /// Emits `records_dropped` for the drops the producers counted since the last call
    /// (a full queue, eviction, shedding), and `queue_stalled` when a stall has ended.
    pub(crate) fn report_drops(&self) {
        report(&self.shared);
    }

    /// Records that `n` records were delivered.
    pub(crate) fn delivered(&self, n: u64) {
        if n > 0 {
            self.shared.lock().delivered(n);
            self.shared.metrics.delivered(n);
        }
    }

    /// Records that `n` records an earlier process left in the disk buffer were taken over.
    #[allow(dead_code)] // the Loki disk buffer's (issue 15) to call
    pub(crate) fn replayed(&self, n: u64) {
        if n > 0 {
            self.shared.lock().replayed(n);
        }
    }

    /// Records that `n` records stay in the disk buffer at shutdown, for the next process.
    #[allow(dead_code)] // the Loki disk buffer's (issue 15) to call
    pub(crate) fn persisted(&self, n: u64) {
        if n > 0 {
            self.shared.lock().persisted(n);
        }
    }

    /// Records that `n` records were dropped and emits `records_dropped`.
    pub(crate) fn dropped(&self, n: u64, why: &str) {
        if n > 0 {
            self.shared.lock().dropped(n, why);
            events::records_dropped(&self.shared.id, n, why);
        }
    }

    /// Completes a flush marker: emits pending drop reports, then `flush_complete`.
    pub(crate) fn complete_flush(&self, ack: FlushAck) {
        self.report_drops();
        let accepted = self.shared.lock().stats().accepted;
        events::flush_complete(
            &self.shared.id,
            accepted,
            events::micros(ack.started.elapsed()),
        );
        let _ = ack.tx.send(());
    }

    /// The deadline by which the worker must finish, once one was set (a shutdown, or the
    /// drop of the last handle).
    pub(crate) fn shutdown_deadline(&self) -> Option<Instant> {
        self.shared.lock().deadline()
    }

    /// Resolves when a deadline to finish is set (at once if it already was), with it.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub(crate) async fn shutdown_requested(&self) -> Instant {
        deadline::wait_on(&self.shared.closing, || match self.shutdown_deadline() {
            Some(d) => Check::Ready(d),
            None => Check::Until(None),
        })
        .await
    }

    /// Drops everything still queued (reason `shutdown`), completing its flush markers.
    pub(crate) fn abandon_queue(&self) -> u64 {
        let (n, acks) = self.shared.lock().abandon_pending(reason::SHUTDOWN);
        if n > 0 {
            events::records_dropped(&self.shared.id, n, reason::SHUTDOWN);
        }
        self.shared.wake_writers();
        for ack in acks {
            self.complete_flush(ack);
        }
        n
    }

    /// Finishes the worker: settles anything left (reason `shutdown`), completes the flush
    /// markers queued after the last drain, emits `sink_closed`, and wakes shutdown waiters.
    pub(crate) fn finish(&self) {
        end(&self.shared, reason::SHUTDOWN, None);
    }
}
