//! The rotating file sink.
