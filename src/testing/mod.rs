//! Test support: await sinkwatch's (and your own) events instead of sleeping, and a
//! Loki-compatible receiver.

pub mod receiver;
