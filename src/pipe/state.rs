//! The state of a sink's pipe: the queue, its bound, every count and the lifecycle, behind
//! the one lock in [`Shared`](super::Shared).
//!
//! Pure: no threads, no waiting, no events. Every change is a method that says what its
//! caller must do next: [`admit`](State::admit) says whether to wake the worker, report a
//! refusal or wait (and until when); [`take_reports`](State::take_reports) which drops to
//! report; [`close`](State::close) whether this call closed the sink. The producers and the
//! worker execute those answers (`producer.rs`, `consumer.rs`); nothing else touches the
//! fields.
//!
//! Every record's fate is counted here: `accepted` only when it is queued (or dropped at
//! the door by a full queue), and `delivered` or `dropped` exactly once after that, so
//! `accepted == delivered + dropped + pending` always holds, and at rest `pending == 0`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chunk::{Chunk, Entry, FlushAck, Put};
use crate::deadline;
use crate::events::reason;
use crate::{OverflowPolicy, ShutdownReport, SinkStats};

/// The longest an application's `tracing` call waits for room under
/// [`OverflowPolicy::Wait`] (re-exported as `SinkLayer::MAX_WAIT`).
pub(crate) const LAYER_MAX_WAIT: Duration = Duration::from_secs(1);

/// How often `writes_refused` reports at most, per sink.
pub(crate) const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(1);

/// The queue's bound and policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
    pub(crate) policy: OverflowPolicy,
}

/// How long a writer may wait for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// Never wait: a full queue drops the record (`queue_full`).
    None,
    /// As the sink's policy says.
    Policy,
    /// As the sink's policy says, but never without a bound: `Wait` waits at most
    /// [`LAYER_MAX_WAIT`], then sheds load as `Block` does. For the application layer,
    /// which must never stall the caller for long.
    Bounded,
}

/// What [`State::admit`] decided about a record.
pub(crate) enum Admit<'p> {
    /// Queued (and accepted). `wake`: the queue was empty, so the worker may be asleep.
    Queued { wake: bool },
    /// Accepted and dropped at once (a full queue that may not wait, a sink shedding load,
    /// or a wait that ran out, which starts shedding). The worker reports it: wake it.
    Dropped,
    /// Refused: the sink is closed (or failed). Counted in `refused`, not in the totals.
    Refused,
    /// No room yet: wait until room is released or `until` passes (`None`: no bound), then
    /// admit `put` again with the same deadline.
    Wait {
        put: Put<'p>,
        until: Option<Instant>,
    },
}

/// What the refusal reporter should do for this sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalReport {
    /// Report this many refused writes now.
    Now(u64),
    /// A report is due at this instant (the last one was less than a second ago).
    At(Instant),
    /// Nothing to report.
    Nothing,
}

/// The drops producers counted (a full queue, eviction, shedding) that the worker has yet
/// to report, and the end of a stall. Producers never emit events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reports {
    /// Counts by reason, in a fixed order; zero counts are not reported.
    pub(crate) drops: [(u64, &'static str); 3],
    /// A stall ended, having shed this many records (`queue_stalled`).
    pub(crate) stall_ended: Option<u64>,
}

/// Where a sink is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Accepting records.
    Open,
    /// Accepting nothing more; the worker delivers what is queued, by `deadline` if set (a
    /// shutdown, or the drop of the last handle), and finishes.
    Closing { deadline: Option<Instant> },
    /// The worker settled everything; nothing will read the queue again. `sink_closed` is
    /// on its way.
    Ended,
    /// `sink_closed` was emitted: the totals are final.
    Done,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    accepted: u64,
    delivered: u64,
    dropped: u64,
    refused: u64,
    replayed: u64,
    persisted: u64,
    /// Dropped with reason `shutdown`.
    dropped_shutdown: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Unreported {
    full: u64,
    oldest: u64,
    stalled: u64,
    /// Records shed in the current stall; reported as `queue_stalled` when it ends.
    stall_shed: u64,
    stall_ended: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Refusals {
    /// `refused` as of the last `writes_refused` report, and when it was made.
    reported: u64,
    at: Option<Instant>,
    /// The reporter knows there is something to report.
    scheduled: bool,
}

/// The pipe's whole state.
pub(crate) struct State {
    pending: Chunk,
    /// Records and bytes queued or taken by the worker and not yet released.
    used_records: usize,
    used_bytes: usize,
    limits: Limits,
    life: Life,
    failure: Option<Arc<str>>,
    shedding: bool,
    counts: Counts,
    unreported: Unreported,
    refusals: Refusals,
}

impl State {
    pub(crate) fn new(limits: Limits) -> Self {
        State {
            pending: Chunk::with_room(),
            used_records: 0,
            used_bytes: 0,
            limits: Limits {
                max_records: limits.max_records.max(1),
                max_bytes: limits.max_bytes.max(1),
                policy: limits.policy,
            },
            life: Life::Open,
            failure: None,
            shedding: false,
            counts: Counts::default(),
            unreported: Unreported::default(),
            refusals: Refusals::default(),
        }
    }

    pub(crate) fn stats(&self) -> SinkStats {
        let c = &self.counts;
        SinkStats {
            accepted: c.accepted,
            delivered: c.delivered,
            dropped: c.dropped,
            refused: c.refused,
            replayed: c.replayed,
            persisted: c.persisted,
        }
    }

    /// Records and bytes counted against the bound now: queued, or taken by the worker
    /// and not yet released.
    pub(crate) fn used(&self) -> (usize, usize) {
        (self.used_records, self.used_bytes)
    }

    /// The report of a shutdown: final if `completed`, else a snapshot in which what is
    /// still pending counts as undelivered.
    pub(crate) fn shutdown_report(&self, completed: bool) -> ShutdownReport {
        let stats = self.stats();
        let mut undelivered = self.counts.dropped_shutdown;
        if !completed {
            undelivered += stats.pending();
        }
        ShutdownReport {
            stats,
            undelivered,
            completed,
        }
    }

    // ----- admission -----

    /// Decides what happens to `put`: queued, dropped, refused, or made to wait.
    ///
    /// `deadline` is the end of this write's wait, set at its first refusal for want of
    /// room and kept across calls; `now` is read only then (never on the path with room).
    #[allow(clippy::inline_always)] // the writers' hot path: measured, one call fewer
    #[inline(always)]
    pub(crate) fn admit<'p>(
        &mut self,
        put: Put<'p>,
        patience: Patience,
        deadline: &mut Option<Instant>,
        now: impl FnOnce() -> Instant,
    ) -> Admit<'p> {
        if self.life != Life::Open {
            self.counts.refused += 1;
            return Admit::Refused;
        }
        if self.shedding {
            self.shed();
            return Admit::Dropped;
        }
        let size = put.size();
        if self.fits(size) || self.evict_for(size) {
            let wake = self.pending.is_empty();
            self.pending.push(put, size);
            self.used_records += 1;
            self.used_bytes += size;
            self.counts.accepted += 1;
            return Admit::Queued { wake };
        }
        let bound = match (patience, self.limits.policy) {
            (Patience::None, _) | (_, OverflowPolicy::DropNewest | OverflowPolicy::DropOldest) => {
                self.counts.accepted += 1;
                self.counts.dropped += 1;
                self.unreported.full += 1;
                return Admit::Dropped;
            }
            (Patience::Policy, OverflowPolicy::Wait) => return Admit::Wait { put, until: None },
            (Patience::Bounded, OverflowPolicy::Wait) => LAYER_MAX_WAIT,
            (_, OverflowPolicy::Block(bound)) => bound,
        };
        let now = now();
        let until = *deadline.get_or_insert_with(|| deadline::after(now, bound));
        if now >= until {
            // The writer waited as long as it may: drop its record and shed load.
            self.shedding = true;
            self.shed();
            return Admit::Dropped;
        }
        Admit::Wait {
            put,
            until: Some(until),
        }
    }

    /// [`admit`](Self::admit)'s common case for an event, in fewer steps: queues it if
    /// the sink is open, not shedding, and has room; returns whether to wake the worker.
    /// `None`: nothing was done or counted, and `admit` decides.
    #[allow(clippy::inline_always)] // the layer's hot path: measured, 20 instructions fewer
    #[inline(always)]
    pub(crate) fn try_queue_event(
        &mut self,
        entry: &[u8],
        metas: &[&'static tracing::Metadata<'static>],
    ) -> Option<bool> {
        if self.life != Life::Open || self.shedding {
            return None;
        }
        let put = Put::Event(entry, metas);
        let size = put.size();
        if !self.fits(size) {
            return None;
        }
        let wake = self.pending.is_empty();
        self.pending.push(put, size);
        self.used_records += 1;
        self.used_bytes += size;
        self.counts.accepted += 1;
        Some(wake)
    }

    fn fits(&self, size: usize) -> bool {
        self.used_records < self.limits.max_records
            && (self.used_records == 0 || self.used_bytes + size <= self.limits.max_bytes)
    }

    /// Under drop-oldest, evicts queued records until `size` fits; true if it then does.
    fn evict_for(&mut self, size: usize) -> bool {
        if self.limits.policy != OverflowPolicy::DropOldest {
            return false;
        }
        while !self.fits(size) {
            let Some(freed) = self.pending.evict_oldest() else {
                return false;
            };
            self.used_bytes -= freed;
            self.used_records -= 1;
            self.counts.dropped += 1;
            self.unreported.oldest += 1;
        }
        true
    }

    /// A record dropped while the sink sheds load after a stall.
    fn shed(&mut self) {
        self.counts.accepted += 1;
        self.counts.dropped += 1;
        self.unreported.stalled += 1;
        self.unreported.stall_shed += 1;
    }

    /// Queues a flush marker; true if the worker must be woken. Gives the marker back when
    /// no worker will ever complete it.
    pub(crate) fn queue_flush(&mut self, ack: FlushAck) -> Result<bool, FlushAck> {
        if matches!(self.life, Life::Ended | Life::Done) {
            return Err(ack);
        }
        let wake = self.pending.is_empty();
        self.pending.push_flush(ack);
        Ok(wake)
    }

    // ----- the worker's side -----

    /// Hands everything pending to the worker: swaps it with `into` (which must be empty);
    /// false if nothing was pending. The records stay counted against the bound until
    /// [`release`](Self::release)d, except under drop-oldest: records the worker holds can
    /// no longer be evicted, so they must not keep newer ones out (memory can then reach
    /// twice the bound).
    pub(crate) fn take(&mut self, into: &mut Chunk) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        std::mem::swap(&mut self.pending, into);
        if self.limits.policy == OverflowPolicy::DropOldest {
            let (records, bytes) = into.live();
            self.unreserve(records, bytes);
        }
        true
    }

    /// The worker is done with `records` records counted at `bytes`: room for writers.
    pub(crate) fn release(&mut self, records: usize, bytes: usize) {
        if self.limits.policy != OverflowPolicy::DropOldest {
            self.unreserve(records, bytes);
        }
    }

    /// Takes `records` and `bytes` off the bound, ending a stall once half the queue is free.
    fn unreserve(&mut self, records: usize, bytes: usize) {
        self.used_records = self.used_records.saturating_sub(records);
        self.used_bytes = self.used_bytes.saturating_sub(bytes);
        if self.shedding
            && self.used_records <= self.limits.max_records / 2
            && self.used_bytes <= self.limits.max_bytes / 2
        {
            self.shedding = false;
            self.unreported.stall_ended = Some(std::mem::take(&mut self.unreported.stall_shed));
        }
    }

    pub(crate) fn delivered(&mut self, n: u64) {
        self.counts.delivered += n;
    }

    /// `n` records an earlier process left in a disk buffer were taken over.
    #[allow(dead_code)] // the Loki disk buffer's (issue 15) to call
    pub(crate) fn replayed(&mut self, n: u64) {
        self.counts.replayed += n;
    }

    /// `n` records were left in a disk buffer at shutdown, for the next process.
    #[allow(dead_code)] // the Loki disk buffer's (issue 15) to call
    pub(crate) fn persisted(&mut self, n: u64) {
        self.counts.persisted += n;
    }

    pub(crate) fn dropped(&mut self, n: u64, why: &str) {
        self.counts.dropped += n;
        if why == reason::SHUTDOWN {
            self.counts.dropped_shutdown += n;
        }
    }

    /// The drops producers counted since the last call, by reason, and the end of a stall,
    /// for the worker to report.
    pub(crate) fn take_reports(&mut self) -> Reports {
        let u = &mut self.unreported;
        Reports {
            drops: [
                (std::mem::take(&mut u.full), reason::QUEUE_FULL),
                (std::mem::take(&mut u.oldest), reason::BUFFER_FULL_OLDEST),
                (std::mem::take(&mut u.stalled), reason::STALLED),
            ],
            stall_ended: u.stall_ended.take(),
        }
    }

    /// Drops everything still pending (not yet taken by the worker) with reason `why`, and
    /// returns how many, with the flush markers among it.
    pub(crate) fn abandon_pending(&mut self, why: &str) -> (u64, Vec<FlushAck>) {
        let mut chunk = std::mem::take(&mut self.pending);
        let mut acks = Vec::new();
        let (mut records, mut bytes) = (0, 0);
        for (entry, size) in chunk.drain() {
            if let Entry::Flush(ack) = entry {
                acks.push(ack);
            } else {
                records += 1;
                bytes += size;
            }
        }
        chunk.clear();
        self.pending = chunk;
        if self.limits.policy != OverflowPolicy::DropOldest {
            self.unreserve(records, bytes);
        }
        self.dropped(records as u64, why);
        (records as u64, acks)
    }

    // ----- the lifecycle -----

    /// Stops accepting records: every handle is gone, or a shutdown was asked for. The
    /// earliest deadline asked for holds; `None` lets the worker deliver everything queued.
    /// True if this call closed the sink (it was open).
    pub(crate) fn close(&mut self, deadline: Option<Instant>) -> bool {
        match self.life {
            Life::Open => {
                self.life = Life::Closing { deadline };
                true
            }
            Life::Closing { deadline: old } => {
                let earliest = match (old, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                self.life = Life::Closing { deadline: earliest };
                false
            }
            Life::Ended | Life::Done => false,
        }
    }

    /// True once the sink accepts nothing more.
    pub(crate) fn is_closed(&self) -> bool {
        self.life != Life::Open
    }

    /// The deadline by which the worker must finish, once one was set.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.life {
            Life::Closing { deadline } => deadline,
            _ => None,
        }
    }

    /// Ends the queue's life: nothing will read it again. Every record accepted and not yet
    /// settled is dropped (`why`), and the flush markers still queued are returned for the
    /// caller to complete (after those drops, so they are exact), or to fail if `failure`.
    pub(crate) fn end(&mut self, why: &str, failure: Option<Arc<str>>) -> (u64, Vec<FlushAck>) {
        self.life = Life::Ended;
        if failure.is_some() {
            self.failure = failure;
        }
        self.shedding = false;
        let lost = self.stats().pending();
        self.dropped(lost, why);
        let acks = self.pending.take_acks();
        self.pending.clear();
        self.used_bytes = 0;
        self.used_records = 0;
        (lost, acks)
    }

    /// `sink_closed` was emitted: the totals are final.
    pub(crate) fn finish(&mut self) {
        self.life = Life::Done;
    }

    /// True once `sink_closed` was emitted.
    pub(crate) fn is_done(&self) -> bool {
        self.life == Life::Done
    }

    /// Why the worker failed, if it did.
    pub(crate) fn failure(&self) -> Option<&Arc<str>> {
        self.failure.as_ref()
    }

    // ----- refused writes -----

    /// After a refusal: true if the reporter must be told, because no report is scheduled.
    pub(crate) fn schedule_refusal_report(&mut self) -> bool {
        !std::mem::replace(&mut self.refusals.scheduled, true)
    }

    /// The refusal reporter's turn: report now, at most once per [`REFUSAL_REPORT_EVERY`],
    /// or later. Once it says `Now` or `Nothing`, the next refusal schedules a new report.
    pub(crate) fn refusal_report(&mut self, now: Instant) -> RefusalReport {
        let r = &mut self.refusals;
        let n = self.counts.refused - r.reported;
        if n == 0 {
            r.scheduled = false;
            return RefusalReport::Nothing;
        }
        if let Some(due) = r.at.map(|at| deadline::after(at, REFUSAL_REPORT_EVERY)) {
            if now < due {
                return RefusalReport::At(due);
            }
        }
        r.reported = self.counts.refused;
        r.at = Some(now);
        r.scheduled = false;
        RefusalReport::Now(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use tokio::sync::oneshot;
    use tracing::Level;

    fn state(max_records: usize, policy: OverflowPolicy) -> State {
        State::new(Limits {
            max_records,
            max_bytes: 1 << 20,
            policy,
        })
    }

    /// What `admit` did, without the put handed back.
    #[derive(Debug, PartialEq, Eq)]
    enum Did {
        Queued(bool),
        Dropped,
        Refused,
        Wait(Option<Instant>),
    }

    fn admit_at(
        s: &mut State,
        text: &str,
        p: Patience,
        d: &mut Option<Instant>,
        t: Instant,
    ) -> Did {
        match s.admit(Put::Line(text.as_bytes()), p, d, || t) {
            Admit::Queued { wake } => Did::Queued(wake),
            Admit::Dropped => Did::Dropped,
            Admit::Refused => Did::Refused,
            Admit::Wait { until, .. } => Did::Wait(until),
        }
    }

    fn line(s: &mut State, text: &str) -> Did {
        admit_at(s, text, Patience::None, &mut None, Instant::now())
    }

    fn flush_ack() -> FlushAck {
        let (tx, _rx) = oneshot::channel();
        FlushAck {
            started: Instant::now(),
            tx,
        }
    }

    fn lines(chunk: &mut Chunk) -> Vec<String> {
        chunk
            .drain()
            .filter_map(|(e, _)| match e {
                Entry::Line(l) => Some(String::from_utf8(l.to_vec()).unwrap()),
                Entry::Record(r) => Some(r.message),
                _ => None,
            })
            .collect()
    }

    fn totals(s: &State) -> (u64, u64, u64, u64) {
        let st = s.stats();
        (st.accepted, st.delivered, st.dropped, st.refused)
    }

    #[test]
    fn entries_come_out_in_order_with_their_sizes() {
        let mut s = state(10, OverflowPolicy::DropNewest);
        assert_eq!(line(&mut s, "a"), Did::Queued(true));
        let record = Put::Record(Box::new(Record::new(Level::INFO, "b")));
        assert!(matches!(
            s.admit(record, Patience::None, &mut None, Instant::now),
            Admit::Queued { wake: false }
        ));
        s.queue_flush(flush_ack()).ok().unwrap();
        line(&mut s, "c");
        let mut chunk = Chunk::default();
        assert!(s.take(&mut chunk));
        let kinds: Vec<(String, usize)> = chunk
            .drain()
            .map(|(e, size)| match e {
                Entry::Line(l) => (String::from_utf8(l.to_vec()).unwrap(), size),
                Entry::Record(r) => (r.message, size),
                Entry::Flush(_) => ("flush".into(), size),
                Entry::Event(_) => ("event".into(), size),
            })
            .collect();
        assert_eq!(kinds[0], ("a".into(), 6));
        assert_eq!(kinds[1].0, "b");
        assert_eq!(kinds[2], ("flush".into(), 0));
        assert_eq!(kinds[3], ("c".into(), 6));
        assert_eq!(s.stats().accepted, 3);
    }

    #[test]
    fn the_bound_covers_records_taken_until_released() {
        let mut s = state(2, OverflowPolicy::DropNewest);
        line(&mut s, "a");
        line(&mut s, "b");
        let mut chunk = Chunk::default();
        s.take(&mut chunk);
        assert_eq!(
            line(&mut s, "c"),
            Did::Dropped,
            "two are held by the worker"
        );
        s.release(1, 6);
        assert_eq!(line(&mut s, "c"), Did::Queued(true));
        assert_eq!(s.take_reports().drops[0], (1, reason::QUEUE_FULL));
    }

    #[test]
    fn a_full_queue_without_patience_drops_the_newest_and_counts_it() {
        let mut s = state(1, OverflowPolicy::Block(Duration::from_secs(1)));
        line(&mut s, "a");
        assert_eq!(line(&mut s, "b"), Did::Dropped);
        assert_eq!(totals(&s), (2, 0, 1, 0));
        assert_eq!(s.take_reports().drops[0], (1, reason::QUEUE_FULL));
        assert_eq!(s.take_reports(), no_reports());
    }

    #[test]
    fn block_waits_until_its_bound_from_the_first_refusal_then_stalls() {
        let mut s = state(1, OverflowPolicy::Block(Duration::from_millis(100)));
        line(&mut s, "a");
        let t0 = Instant::now();
        let mut deadline = None;
        let until = t0 + Duration::from_millis(100);
        for p in [Patience::Policy, Patience::Bounded] {
            deadline = None;
            assert_eq!(
                admit_at(&mut s, "b", p, &mut deadline, t0),
                Did::Wait(Some(until))
            );
        }
        // A later look keeps the first deadline.
        let t1 = t0 + Duration::from_millis(60);
        assert_eq!(
            admit_at(&mut s, "b", Patience::Policy, &mut deadline, t1),
            Did::Wait(Some(until))
        );
        assert_eq!(
            admit_at(&mut s, "b", Patience::Policy, &mut deadline, until),
            Did::Dropped,
            "the wait ran out: dropped, and the sink sheds"
        );
        assert_eq!(line(&mut s, "c"), Did::Dropped, "shedding");
        assert_eq!(totals(&s), (3, 0, 2, 0));
        assert_eq!(s.take_reports().drops[2], (2, reason::STALLED));
    }

    #[test]
    fn a_zero_block_bound_stalls_at_once() {
        let mut s = state(1, OverflowPolicy::Block(Duration::ZERO));
        line(&mut s, "a");
        let t = Instant::now();
        assert_eq!(
            admit_at(&mut s, "b", Patience::Policy, &mut None, t),
            Did::Dropped
        );
    }

    #[test]
    fn wait_waits_without_bound_for_writers_and_at_most_the_layer_bound_for_the_layer() {
        let mut s = state(1, OverflowPolicy::Wait);
        line(&mut s, "a");
        let t = Instant::now();
        assert_eq!(
            admit_at(&mut s, "b", Patience::Policy, &mut None, t),
            Did::Wait(None)
        );
        assert_eq!(
            admit_at(&mut s, "b", Patience::Bounded, &mut None, t),
            Did::Wait(Some(t + LAYER_MAX_WAIT))
        );
        assert_eq!(
            admit_at(&mut s, "b", Patience::None, &mut None, t),
            Did::Dropped
        );
    }

    #[test]
    fn drop_policies_never_wait() {
        for policy in [OverflowPolicy::DropNewest, OverflowPolicy::DropOldest] {
            let mut s = state(1, policy);
            line(&mut s, "a");
            let mut chunk = Chunk::default();
            s.take(&mut chunk);
            line(&mut s, "b");
            let t = Instant::now();
            let did = admit_at(&mut s, "c", Patience::Policy, &mut None, t);
            assert_ne!(did, Did::Wait(None), "{policy:?}");
            assert!(!matches!(did, Did::Wait(_)), "{policy:?}");
        }
    }

    #[test]
    fn drop_oldest_evicts_queued_records_and_counts_them() {
        let mut s = state(2, OverflowPolicy::DropOldest);
        for t in ["a", "b", "c", "d"] {
            assert!(matches!(line(&mut s, t), Did::Queued(_)));
        }
        let mut chunk = Chunk::default();
        s.take(&mut chunk);
        assert_eq!(lines(&mut chunk), ["c", "d"]);
        assert_eq!(totals(&s), (4, 0, 2, 0));
        assert_eq!(s.take_reports().drops[1], (2, reason::BUFFER_FULL_OLDEST));
    }

    #[test]
    fn drop_oldest_does_not_let_records_the_worker_holds_keep_newer_ones_out() {
        let mut s = state(2, OverflowPolicy::DropOldest);
        line(&mut s, "a");
        line(&mut s, "b");
        let mut chunk = Chunk::default();
        s.take(&mut chunk);
        for t in ["c", "d", "e"] {
            line(&mut s, t);
        }
        let mut next = Chunk::default();
        s.take(&mut next);
        assert_eq!(lines(&mut next), ["d", "e"], "the newest are kept");
        s.release(2, 12);
        assert_eq!(s.stats().dropped, 1);
    }

    #[test]
    fn a_stall_sheds_until_half_the_queue_is_free_and_reports_its_count() {
        let mut s = state(4, OverflowPolicy::Block(Duration::ZERO));
        for t in ["a", "b", "c", "d"] {
            line(&mut s, t);
        }
        let now = Instant::now();
        assert_eq!(
            admit_at(&mut s, "e", Patience::Policy, &mut None, now),
            Did::Dropped
        );
        assert_eq!(line(&mut s, "f"), Did::Dropped);
        s.release(1, 6);
        assert_eq!(line(&mut s, "g"), Did::Dropped, "still 3 of 4 used");
        s.release(1, 6);
        let reports = s.take_reports();
        assert_eq!(reports.drops[2], (3, reason::STALLED));
        assert_eq!(reports.stall_ended, Some(3));
        assert_eq!(line(&mut s, "h"), Did::Queued(false));
        assert_eq!(totals(&s), (8, 0, 3, 0));
    }

    #[test]
    fn a_closed_sink_refuses_without_touching_the_totals() {
        let mut s = state(4, OverflowPolicy::DropNewest);
        line(&mut s, "a");
        assert!(s.close(None));
        assert_eq!(line(&mut s, "b"), Did::Refused);
        assert_eq!(totals(&s), (1, 0, 0, 1));
        assert!(s.is_closed());
    }

    #[test]
    fn closing_keeps_the_earliest_deadline() {
        let mut s = state(4, OverflowPolicy::DropNewest);
        let t = Instant::now();
        assert!(s.close(None));
        assert_eq!(s.deadline(), None);
        assert!(!s.close(Some(t + Duration::from_secs(5))));
        assert!(!s.close(Some(t + Duration::from_secs(1))));
        assert!(!s.close(Some(t + Duration::from_secs(3))));
        assert!(!s.close(None));
        assert_eq!(s.deadline(), Some(t + Duration::from_secs(1)));
    }

    #[test]
    fn ending_drops_everything_unsettled_and_returns_queued_flushes() {
        let mut s = state(8, OverflowPolicy::DropNewest);
        line(&mut s, "a");
        line(&mut s, "b");
        let mut chunk = Chunk::default();
        s.take(&mut chunk);
        line(&mut s, "c");
        s.queue_flush(flush_ack()).ok().unwrap();
        s.delivered(1);
        let (lost, acks) = s.end(reason::WORKER_FAILED, Some(Arc::from("boom")));
        assert_eq!((lost, acks.len()), (2, 1));
        let st = s.stats();
        assert_eq!(st.accepted, st.delivered + st.dropped);
        assert!(
            s.queue_flush(flush_ack()).is_err(),
            "no worker will read it"
        );
        assert_eq!(s.failure().map(|f| &**f), Some("boom"));
        assert!(!s.is_done());
        s.finish();
        assert!(s.is_done());
        assert_eq!(line(&mut s, "d"), Did::Refused);
    }

    #[test]
    fn replayed_and_persisted_records_balance_the_totals() {
        let mut s = state(8, OverflowPolicy::DropNewest);
        s.replayed(5);
        line(&mut s, "a");
        assert_eq!(s.stats().pending(), 6);
        s.delivered(2);
        s.persisted(3);
        let (lost, _) = s.end(reason::SHUTDOWN, None);
        assert_eq!(
            lost, 1,
            "what was neither delivered nor persisted is dropped"
        );
        let st = s.stats();
        assert_eq!(
            st.accepted + st.replayed,
            st.delivered + st.dropped + st.persisted
        );
        assert_eq!(st.pending(), 0);
    }

    #[test]
    fn shutdown_drops_are_counted_apart_and_release_the_bound() {
        let mut s = state(2, OverflowPolicy::DropNewest);
        line(&mut s, "a");
        line(&mut s, "b");
        let (n, _) = s.abandon_pending(reason::SHUTDOWN);
        assert_eq!(n, 2);
        assert_eq!(s.shutdown_report(true).undelivered, 2);
        assert_eq!(
            line(&mut s, "c"),
            Did::Queued(true),
            "the bound was released"
        );
        assert_eq!(s.shutdown_report(false).undelivered, 3, "c is pending");
    }

    #[test]
    fn refusals_are_reported_at_most_once_a_second_and_the_rest_later() {
        let mut s = state(1, OverflowPolicy::DropNewest);
        s.close(None);
        let t0 = Instant::now();
        assert_eq!(s.refusal_report(t0), RefusalReport::Nothing);
        line(&mut s, "a");
        assert!(s.schedule_refusal_report());
        assert!(!s.schedule_refusal_report(), "already scheduled");
        assert_eq!(s.refusal_report(t0), RefusalReport::Now(1));
        for _ in 0..9 {
            line(&mut s, "b");
        }
        assert!(
            s.schedule_refusal_report(),
            "the report was made: schedule anew"
        );
        let due = t0 + REFUSAL_REPORT_EVERY;
        assert_eq!(
            s.refusal_report(t0 + Duration::from_millis(10)),
            RefusalReport::At(due)
        );
        assert_eq!(
            s.refusal_report(due),
            RefusalReport::Now(9),
            "the trailing burst"
        );
        assert_eq!(s.refusal_report(due), RefusalReport::Nothing);
        assert!(s.schedule_refusal_report());
    }

    fn no_reports() -> Reports {
        Reports {
            drops: [
                (0, reason::QUEUE_FULL),
                (0, reason::BUFFER_FULL_OLDEST),
                (0, reason::STALLED),
            ],
            stall_ended: None,
        }
    }
}
