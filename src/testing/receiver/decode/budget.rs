//! Caps on what one request may decode to, counted while decoding: a small compressed body
//! of empty streams or entries must be refused before it becomes millions of structs.

use std::cell::{Cell, RefCell};

use super::DecodeError;

/// The limits one body is decoded under. A count of 0 means no limit, as elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodeLimits {
    /// Largest body after decompression, in bytes.
    pub(crate) decoded_bytes: usize,
    pub(crate) streams: usize,
    pub(crate) entries: usize,
    /// Structured-metadata pairs, all entries together.
    pub(crate) metadata_pairs: usize,
}

impl DecodeLimits {
    /// Only a byte limit: the structural caps off.
    #[cfg(test)]
    pub(crate) fn bytes(decoded_bytes: usize) -> Self {
        DecodeLimits {
            decoded_bytes,
            streams: 0,
            entries: 0,
            metadata_pairs: 0,
        }
    }
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    Stream,
    Entry,
    MetadataPair,
}

impl Item {
    fn limit(self, limits: &DecodeLimits) -> usize {
        match self {
            Item::Stream => limits.streams,
            Item::Entry => limits.entries,
            Item::MetadataPair => limits.metadata_pairs,
        }
    }

    /// Loki answers 413 `request body too large: …` for an over-size body; a body over a
    /// structural cap is the same kind of refusal, and the text names the receiver's limit.
    fn error(self, limit: usize) -> DecodeError {
        let (what, setting) = match self {
            Item::Stream => ("streams", "max_streams_per_request"),
            Item::Entry => ("entries", "max_entries_per_request"),
            Item::MetadataPair => (
                "structured metadata pairs",
                "max_structured_metadata_pairs_per_request",
            ),
        };
        DecodeError::TooLarge(format!(
            "request body too large: more than {limit} {what} in one request (the receiver's {setting})"
        ))
    }
}

/// Counts items as they are met and remembers the first error a decoder hit (serde
/// visitors can only return serde's own error, so the real one is kept here).
#[derive(Debug)]
pub(crate) struct Budget {
    limits: DecodeLimits,
    counts: Cell<[usize; 3]>,
    error: RefCell<Option<DecodeError>>,
}

impl Budget {
    pub(crate) fn new(limits: DecodeLimits) -> Self {
        Budget {
            limits,
            counts: Cell::new([0; 3]),
            error: RefCell::new(None),
        }
    }

    /// Counts one more `item`; past its limit, the error (also kept, see [`Self::failed`]).
    pub(crate) fn take(&self, item: Item) -> Result<(), DecodeError> {
        let mut counts = self.counts.get();
        let n = &mut counts[item as usize];
        *n += 1;
        let over = item.limit(&self.limits) != 0 && *n > item.limit(&self.limits);
        self.counts.set(counts);
        if over {
            return Err(self.fail(item.error(item.limit(&self.limits))));
        }
        Ok(())
    }

    /// Keeps `e` as the decoding's error unless one is already kept; returns it.
    pub(crate) fn fail(&self, e: DecodeError) -> DecodeError {
        self.error.borrow_mut().get_or_insert(e).clone()
    }

    /// The first error kept, if any.
    pub(crate) fn failed(&self) -> Option<DecodeError> {
        self.error.borrow().clone()
    }
}

/// Counts the streams, entries and metadata pairs of a protobuf `PushRequest` by walking
/// the wire format, without allocating: the error when one is over its cap. A malformed
/// message ends the walk with `Ok`, leaving its error to the real decoder.
pub(crate) fn scan_protobuf(bytes: &[u8], budget: &Budget) -> Result<(), DecodeError> {
    for (field, stream) in DelimitedFields(bytes) {
        if field != 1 {
            continue;
        }
        budget.take(Item::Stream)?;
        for (field, entry) in DelimitedFields(stream) {
            if field != 2 {
                continue;
            }
            budget.take(Item::Entry)?;
            // structuredMetadata (3) and parsed (4) both become pairs.
            for (field, _) in DelimitedFields(entry) {
                if field == 3 || field == 4 {
                    budget.take(Item::MetadataPair)?;
                }
            }
        }
    }
    Ok(())
}

/// The length-delimited fields of a message (number and payload), skipping the others;
/// stops at the first malformed byte.
struct DelimitedFields<'a>(&'a [u8]);

impl<'a> Iterator for DelimitedFields<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let key = varint(&mut self.0)?;
            let skip = match key & 7 {
                0 => {
                    varint(&mut self.0)?;
                    0
                }
                1 => 8,
                5 => 4,
                2 => {
                    let len = usize::try_from(varint(&mut self.0)?).ok()?;
                    if len > self.0.len() {
                        self.0 = &[];
                        return None;
                    }
                    let (payload, rest) = self.0.split_at(len);
                    self.0 = rest;
                    return Some((key >> 3, payload));
                }
                _ => {
                    self.0 = &[];
                    return None;
                }
            };
            if skip > self.0.len() {
                self.0 = &[];
                return None;
            }
            self.0 = &self.0[skip..];
        }
    }
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    *buf = &[];
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(streams: usize, entries: usize, pairs: usize) -> DecodeLimits {
        DecodeLimits {
            decoded_bytes: 0,
            streams,
            entries,
            metadata_pairs: pairs,
        }
    }

    #[test]
    fn empty_streams_are_counted_up_to_the_cap() {
        let body = [0x0a, 0x00].repeat(3);
        assert!(scan_protobuf(&body, &Budget::new(limits(3, 0, 0))).is_ok());
        let err = scan_protobuf(&body, &Budget::new(limits(2, 0, 0))).unwrap_err();
        assert!(
            matches!(&err, DecodeError::TooLarge(m) if m.contains("more than 2 streams") && m.contains("max_streams_per_request")),
            "{err:?}"
        );
    }

    #[test]
    fn entries_and_pairs_are_counted_across_streams() {
        // Two streams, each one entry with two metadata pairs (empty messages).
        let entry = [0x12, 0x04, 0x1a, 0x00, 0x22, 0x00];
        let stream: Vec<u8> = [&[0x0a, 6][..], &entry].concat();
        let body = stream.repeat(2);
        assert!(scan_protobuf(&body, &Budget::new(limits(2, 2, 4))).is_ok());
        assert!(scan_protobuf(&body, &Budget::new(limits(2, 1, 0))).is_err());
        assert!(scan_protobuf(&body, &Budget::new(limits(0, 0, 3))).is_err());
    }

    #[test]
    fn malformed_input_ends_the_scan_quietly() {
        for body in [&[0x0a, 0x05][..], &[0xff; 11], &[0x0b], &[0x09, 1, 2]] {
            assert!(scan_protobuf(body, &Budget::new(limits(1, 1, 1))).is_ok());
        }
    }

    #[test]
    fn the_first_error_is_kept() {
        let budget = Budget::new(limits(1, 0, 0));
        budget.take(Item::Stream).unwrap();
        let first = budget.take(Item::Stream).unwrap_err();
        budget.fail(DecodeError::BadRequest("later".into()));
        assert_eq!(budget.failed(), Some(first));
    }
}
