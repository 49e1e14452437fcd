//! The events the testing side itself emits: the Loki-compatible receiver's, one per request
//! it handles. They are not part of the sinks' schema ([`events::ALL`](crate::events::ALL)):
//! production code never emits them. They share its shape (target, the `event` and `sink`
//! fields, constants per field) so they are awaited the same way, and `docs/events.md` lists
//! them in a section of their own, checked against [`EVENTS`] by the same test.

crate::events::schema! {
    @list
    /// Every event the testing side emits (the receiver's).
    EVENTS;

    /// The Loki-compatible test receiver handled a push request (its id is in `sink`).
    receiver_request: INFO {
        /// The HTTP status it answered.
        STATUS = status: u64,
        /// The tenant (`X-Scope-OrgID`, or `fake` with auth off; empty if rejected before).
        TENANT = tenant: str,
        /// Entries stored.
        ACCEPTED = accepted: u64,
        /// Entries rejected (validation errors).
        REJECTED = rejected: u64,
        /// Bytes of the request body as received.
        BYTES = bytes: u64,
        /// The error text of the response (empty on success).
        ERROR = error: str,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::assert_emitters_match;

    #[tokio::test]
    async fn every_emitter_emits_exactly_its_schema() {
        assert_emitters_match(EVENTS, emit_every_event).await;
    }

    #[test]
    fn names_do_not_clash_with_the_sinks_events() {
        for e in EVENTS {
            assert!(
                crate::events::ALL.iter().all(|s| s.name != e.name),
                "{} is also a sink event",
                e.name
            );
        }
    }
}
