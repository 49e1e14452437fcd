//! Fault injection: scripted answers that stand in for Loki's bad days.

use std::collections::VecDeque;
use std::time::Duration;

/// One scripted behaviour, consumed by one push request before normal handling.
///
/// Build one with [`Fault::status`], [`Fault::drop_connection`] or [`Fault::delay`], and queue it
/// with [`LokiReceiver::push_fault`](super::LokiReceiver::push_fault).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sinkwatch::testing::Fault;
///
/// // 429 with a Retry-After header, after a 50 ms pause.
/// let fault = Fault::status(429).retry_after("1").delayed(Duration::from_millis(50));
/// # let _ = fault;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub(crate) action: Action,
    pub(crate) delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Answer with this status instead of handling the request.
    Respond {
        status: u16,
        retry_after: Option<String>,
        body: Option<String>,
    },
    /// Close the connection without answering.
    Drop,
    /// Handle the request normally (after the delay).
    Pass,
}

impl Fault {
    /// Answer `status` instead of handling the request (nothing is stored).
    ///
    /// The body is the status' reason phrase (e.g. `Too Many Requests`) unless
    /// [`body`](Fault::body) sets one; 2xx answers have an empty body by default. A status
    /// outside 100..=999 is answered as 500.
    pub fn status(status: u16) -> Self {
        Fault {
            action: Action::Respond {
                status,
                retry_after: None,
                body: None,
            },
            delay: Duration::ZERO,
        }
    }

    /// Close the connection after reading the request, without any response: the client
    /// sees a transport error.
    pub fn drop_connection() -> Self {
        Fault {
            action: Action::Drop,
            delay: Duration::ZERO,
        }
    }

    /// Wait `delay`, then handle the request normally: a slow Loki.
    pub fn delay(delay: Duration) -> Self {
        Fault {
            action: Action::Pass,
            delay,
        }
    }

    /// Adds a `Retry-After` header with this exact value (seconds, an HTTP date, or any text
    /// to test a client's robustness). Values that are not valid header bytes are omitted.
    /// No effect on a fault that does not answer with a status.
    #[must_use]
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        if let Action::Respond { retry_after, .. } = &mut self.action {
            *retry_after = Some(value.into());
        }
        self
    }

    /// Sets the response body (a trailing newline is added, as Loki's `http.Error` does).
    /// No effect on a fault that does not answer with a status.
    #[must_use]
    pub fn body(mut self, text: impl Into<String>) -> Self {
        if let Action::Respond { body, .. } = &mut self.action {
            *body = Some(text.into());
        }
        self
    }

    /// Waits `delay` before acting (answering, dropping or handling the request).
    #[must_use]
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// The queue of scripted faults plus the standing response delay.
#[derive(Debug, Default)]
pub(crate) struct Script {
    queue: VecDeque<Fault>,
    pub(crate) latency: Duration,
}

impl Script {
    pub(crate) fn push(&mut self, fault: Fault) {
        self.queue.push_back(fault);
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The fault for the next push request: the next scripted one, else normal handling
    /// after the standing latency.
    pub(crate) fn next(&mut self) -> Fault {
        let mut fault = self
            .queue
            .pop_front()
            .unwrap_or(Fault::delay(Duration::ZERO));
        fault.delay += self.latency;
        fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_in_order_then_normal_handling() {
        let mut s = Script::default();
        s.push(Fault::status(503));
        s.push(Fault::drop_connection());
        assert!(matches!(
            s.next().action,
            Action::Respond { status: 503, .. }
        ));
        assert_eq!(s.next().action, Action::Drop);
        assert_eq!(s.next().action, Action::Pass);
    }

    #[test]
    fn latency_adds_to_every_request() {
        let mut s = Script {
            latency: Duration::from_millis(5),
            ..Script::default()
        };
        s.push(Fault::status(500).delayed(Duration::from_millis(1)));
        assert_eq!(s.next().delay, Duration::from_millis(6));
        assert_eq!(s.next().delay, Duration::from_millis(5));
    }

    #[test]
    fn retry_after_and_body_only_apply_to_status_faults() {
        assert_eq!(
            Fault::drop_connection().retry_after("1").body("x"),
            Fault::drop_connection()
        );
    }
}
