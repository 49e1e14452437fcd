//! The Loki-compatible receiver.
