//! A record's trace context: the OpenTelemetry ids of the span it was logged in.

use std::fmt;

/// The OpenTelemetry trace id and span id a record carries: those of the span it was logged
/// in, as tracing-opentelemetry's layer knows them (feature `opentelemetry`), or set by hand
/// with [`Record::with_trace_ids`](crate::Record::with_trace_ids).
///
/// Sinks write them as lowercase hex, as W3C Trace Context and Loki's OTLP ingestion do:
/// `trace_id` (32 digits) and `span_id` (16 digits), as fields of the file sink's lines and
/// as structured metadata of Loki entries.
///
/// # Examples
///
/// ```
/// use sinkwatch::TraceIds;
///
/// let ids = TraceIds::new([0xab; 16], [0x01; 8]).unwrap();
/// assert_eq!(ids.trace_id_hex(), "abababababababababababababababab");
/// assert_eq!(ids.span_id_hex(), "0101010101010101");
/// // All zeros is W3C's "invalid": no ids at all.
/// assert!(TraceIds::new([0; 16], [1; 8]).is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceIds {
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

/// The two ids, in the compact form's byte order: the trace id, then the span id.
pub(crate) const TRACE_BYTES: usize = 24;

impl TraceIds {
    /// The ids, big-endian as OpenTelemetry's `TraceId::to_bytes` and `SpanId::to_bytes`
    /// give them, or `None` when either is all zeros (W3C's invalid value, which no span
    /// has).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8]) -> Option<Self> {
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceIds { trace_id, span_id })
    }

    /// The trace id's bytes.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span id's bytes.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        let (trace, _) = self.hex();
        String::from_utf8_lossy(&trace).into_owned()
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        let (_, span) = self.hex();
        String::from_utf8_lossy(&span).into_owned()
    }

    /// Both ids in lowercase hex, without an allocation (what the sinks' workers write).
    pub(crate) fn hex(&self) -> ([u8; 32], [u8; 16]) {
        let mut trace = [0; 32];
        let mut span = [0; 16];
        hex_into(&mut trace, &self.trace_id);
        hex_into(&mut span, &self.span_id);
        (trace, span)
    }

    /// The compact form's 24 bytes.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))] // the layer's capture
    pub(crate) fn to_bytes(self) -> [u8; TRACE_BYTES] {
        let mut out = [0; TRACE_BYTES];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..].copy_from_slice(&self.span_id);
        out
    }

    /// Reads the compact form's 24 bytes (`None` if they are not a valid pair).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let trace_id = bytes.get(..16)?.try_into().ok()?;
        let span_id = bytes.get(16..TRACE_BYTES)?.try_into().ok()?;
        TraceIds::new(trace_id, span_id)
    }
}

impl fmt::Debug for TraceIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceIds")
            .field("trace_id", &self.trace_id_hex())
            .field("span_id", &self.span_id_hex())
            .finish()
    }
}

fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_big_endian() {
        let mut trace = [0_u8; 16];
        trace[0] = 0x4b;
        trace[15] = 0xf9;
        let ids = TraceIds::new(trace, [0, 0, 0, 0, 0, 0, 0xa1, 0x0c]).unwrap();
        assert_eq!(ids.trace_id_hex(), "4b0000000000000000000000000000f9");
        assert_eq!(ids.span_id_hex(), "000000000000a10c");
    }

    #[test]
    fn an_all_zero_id_is_no_ids() {
        assert!(TraceIds::new([0; 16], [1; 8]).is_none());
        assert!(TraceIds::new([1; 16], [0; 8]).is_none());
    }

    #[test]
    fn the_compact_bytes_read_back() {
        let ids = TraceIds::new([7; 16], [9; 8]).unwrap();
        assert_eq!(TraceIds::from_bytes(&ids.to_bytes()), Some(ids));
        assert_eq!(TraceIds::from_bytes(&[1; 23]), None);
    }
}
