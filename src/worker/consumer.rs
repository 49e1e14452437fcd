//! The worker's side of a sink's queue: taking work, giving room back, settling records
//! and reporting drops.

use std::sync::Arc;
use std::time::Instant;

use super::{end, Shared};
use crate::events::{self, reason};
use crate::queue::{Chunk, FlushAck};
use crate::SinkId;

/// The worker side of a queue (cloned for the worker's own tasks).
#[derive(Clone)]
pub(crate) struct Consumer {
    pub(super) shared: Arc<Shared>,
}

/// What [`Consumer::recv`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recv {
    /// Entries were moved into the chunk.
    Items,
    /// The queue is closed and empty: the worker should finish.
    Closed,
}

impl Consumer {
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
        loop {
            let notified = self.shared.wake_worker.notified();
            self.report_refusals();
            if self.try_recv(into) {
                return Recv::Items;
            }
            if self.shared.lock().closed {
                return Recv::Closed;
            }
            notified.await;
        }
    }

    /// Moves everything queued into `into` (which must be empty); true if anything was.
    pub(crate) fn try_recv(&self, into: &mut Chunk) -> bool {
        debug_assert!(into.is_empty());
        self.shared.lock().take(into)
    }

    /// True once the queue is closed (every handle dropped, or a shutdown asked for).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// The worker is done with `records` records counted at `bytes`: room for writers.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        if records == 0 && bytes == 0 {
            return;
        }
        if self.shared.lock().release(records, bytes) {
            self.shared.wake_writers();
        }
    }

    /// Emits `records_dropped` for refusals the producers counted since the last call, and
    /// `queue_stalled` when a stall has ended.
    pub(crate) fn report_refusals(&self) {
        let (drops, stall) = self.shared.lock().take_reports();
        for (n, why) in drops {
            if n > 0 {
                events::records_dropped(&self.shared.id, n, why);
            }
        }
        if let Some(shed) = stall {
            events::queue_stalled(&self.shared.id, shed);
        }
    }

    /// Records that `n` records were delivered.
    pub(crate) fn delivered(&self, n: u64) {
        if n > 0 {
            self.shared.lock().delivered(n);
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
        self.report_refusals();
        let accepted = self.shared.lock().counts.accepted;
        events::flush_complete(
            &self.shared.id,
            accepted,
            events::micros(ack.started.elapsed()),
        );
        let _ = ack.tx.send(());
    }

    /// The shutdown deadline, once shutdown has been requested.
    pub(crate) fn shutdown_deadline(&self) -> Option<Instant> {
        self.shared.lock().shutdown
    }

    /// Resolves when shutdown is requested (at once if it already was), with its deadline.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub(crate) async fn shutdown_requested(&self) -> Instant {
        loop {
            let notified = self.shared.shutdown_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = self.shutdown_deadline() {
                return d;
            }
            notified.await;
        }
    }

    /// Drops everything still queued (reason `shutdown`), completing its flush markers.
    pub(crate) fn abandon_queue(&self) -> u64 {
        let (n, acks) = self.shared.lock().abandon_pending(reason::SHUTDOWN);
        if n > 0 {
            events::records_dropped(&self.shared.id, n, reason::SHUTDOWN);
        }
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
