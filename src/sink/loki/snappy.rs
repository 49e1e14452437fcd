// Derived from the raw block encoder of the `snap` crate (https://github.com/BurntSushi/rust-snappy),
// whose licence asks that this notice be kept:
//
// Copyright 2011, The Snappy-Rust Authors. All rights reserved.
//
// Redistribution and use in source and binary forms, with or without
// modification, are permitted provided that the following conditions are
// met:
//
//     * Redistributions of source code must retain the above copyright
// notice, this list of conditions and the following disclaimer.
//     * Redistributions in binary form must reproduce the above
// copyright notice, this list of conditions and the following disclaimer
// in the documentation and/or other materials provided with the
// distribution.
//     * Neither the name of the copyright holder nor the names of its
// contributors may be used to endorse or promote products derived from
// this software without specific prior written permission.
//
// THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS
// "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT
// LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR
// A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT
// OWNER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
// SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT
// LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
// DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY
// THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT
// (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
// OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

//! Snappy block compression, as the `snap` crate's raw encoder does it (the same
//! algorithm, hash and heuristics, so the same bytes: a test compares them), for the
//! requests compressed a 64 KiB block at a time (`encode::Encoder::snappy_by_stream`).
//!
//! The one difference is the hash table's reset. `snap` zeroes its table (32 KiB) for
//! every block; here each slot holds a position plus the block's `base`, which grows by
//! 64 KiB per block, so a slot written for an earlier block reads below the base, that
//! is as 0, what a zeroed slot reads as. The table is zeroed only when the base would
//! overflow, every 64 Ki blocks (4 GiB).

/// The largest block: positions in it fit 16 bits, as `snap`'s table holds them.
pub(crate) const MAX_BLOCK: usize = 1 << 16;
/// `snap`'s table size limit.
const MAX_TABLE: usize = 1 << 14;
/// Bytes at the end of a block never searched for matches.
const INPUT_MARGIN: usize = 16 - 1;
/// Blocks shorter than this are one literal.
const MIN_NON_LITERAL_BLOCK: usize = 1 + 1 + INPUT_MARGIN;

/// The most a block of `len` bytes compresses to, with room for the 16-byte copies of
/// short literals (`snap::raw::max_compress_len`).
pub(crate) const fn max_compressed_len(len: usize) -> usize {
    32 + len + len / 6
}

/// Compresses blocks one after another, keeping the hash table between them.
pub(crate) struct Blocks {
    table: Box<[u32; MAX_TABLE]>,
    /// What this block's positions are stored plus; every slot below it reads as 0.
    base: u32,
}

impl Default for Blocks {
    fn default() -> Self {
        // Made on the heap: 64 KiB is much for a stack.
        let Ok(table) = vec![0; MAX_TABLE].into_boxed_slice().try_into() else {
            unreachable!("a vector of MAX_TABLE slots");
        };
        Blocks {
            table,
            base: first_base(),
        }
    }
}

/// The first block's base: above the zeros of a fresh table.
const fn first_base() -> u32 {
    // 64 Ki: above every zero slot.
    1 << 16
}

#[allow(clippy::cast_possible_truncation)] // positions below 64 Ki, lengths checked
impl Blocks {
    /// Compresses `src` (at most [`MAX_BLOCK`] bytes) into `dst` (at least
    /// [`max_compressed_len`] of it) as snappy elements, without the block's header (its
    /// length), and returns the bytes written: `snap`'s output for `src` past its header.
    // Kept out of its caller: inlined, it compiled to a slower loop.
    #[inline(never)]
    pub(crate) fn compress(&mut self, src: &[u8], dst: &mut [u8]) -> usize {
        debug_assert!(src.len() <= MAX_BLOCK && dst.len() >= max_compressed_len(src.len()));
        if src.is_empty() {
            return 0;
        }
        if src.len() < MIN_NON_LITERAL_BLOCK {
            return emit_literal(dst, 0, src, 0, src.len());
        }
        if self.base > u32::MAX - 2 * (MAX_BLOCK as u32) {
            self.table.fill(0);
            self.base = first_base();
        }
        let base = self.base;
        self.base += MAX_BLOCK as u32;
        // The table size `snap` takes for the block: a power of two from 256 to 16 Ki, at
        // least the block's length where it can.
        let mut shift = 32 - 8;
        let mut size = 256;
        while size < MAX_TABLE && size < src.len() {
            shift -= 1;
            size *= 2;
        }
        let hash = |x: u32| (x.wrapping_mul(0x1E35_A7BD) >> shift) as usize & (MAX_TABLE - 1);
        let table = &mut *self.table;
        let mut d = 0;
        let mut s = 1;
        let mut next_emit = 0;
        let s_limit = src.len() - INPUT_MARGIN;
        let mut next_hash = hash(load32(src, s));
        loop {
            let mut skip = 32;
            let mut candidate;
            let mut s_next = s;
            loop {
                s = s_next;
                let between = skip >> 5;
                s_next = s + between;
                skip += between;
                if s_next > s_limit {
                    return done(dst, d, src, next_emit);
                }
                candidate = table[next_hash].saturating_sub(base) as usize;
                table[next_hash] = base + s as u32;
                next_hash = hash(load32(src, s_next));
                if load32(src, s) == load32(src, candidate) {
                    break;
                }
            }
            d = emit_literal(dst, d, src, next_emit, s);
            loop {
                let start = s;
                s = extend_match(src, s + 4, candidate + 4);
                d = emit_copy(dst, d, start - candidate, s - start);
                next_emit = s;
                if s >= s_limit {
                    return done(dst, d, src, next_emit);
                }
                // The sequences at s - 1 and at s, from one 8-byte read.
                let x = load64(src, s - 1);
                table[hash(x as u32)] = base + (s - 1) as u32;
                let cur = hash((x >> 8) as u32);
                candidate = table[cur].saturating_sub(base) as usize;
                table[cur] = base + s as u32;
                if (x >> 8) as u32 != load32(src, candidate) {
                    next_hash = hash((x >> 16) as u32);
                    s += 1;
                    break;
                }
            }
        }
    }
}

/// The four bytes at `i`, little-endian (0 past the end, which the callers never reach).
#[inline(always)]
#[allow(clippy::inline_always)] // the compressor's inner loop
fn load32(src: &[u8], i: usize) -> u32 {
    src.get(i..i + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// The eight bytes at `i`, little-endian (0 past the end, which the callers never reach).
#[inline(always)]
#[allow(clippy::inline_always)] // the compressor's inner loop
fn load64(src: &[u8], i: usize) -> u64 {
    src.get(i..i + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Where the match of the bytes at `s` with those at `cand` (before it) ends.
#[inline(always)]
#[allow(clippy::inline_always)] // the compressor's inner loop
fn extend_match(src: &[u8], s: usize, cand: usize) -> usize {
    let (Some(here), Some(there)) = (src.get(s..), src.get(cand..)) else {
        return s;
    };
    // Sixteen bytes at a time, in words of known length (no bounds checks in the loop),
    // then the last few one by one. Log lines repeat long runs: this loop is most of
    // the compressor's work.
    let words = here.chunks_exact(16).zip(there.chunks_exact(16));
    let mut n = 0;
    for (x, y) in words {
        let x = u128::from_le_bytes(x.try_into().unwrap_or_default());
        let y = u128::from_le_bytes(y.try_into().unwrap_or_default());
        if x != y {
            return s + n + (x ^ y).trailing_zeros() as usize / 8;
        }
        n += 16;
    }
    let tail = here.iter().zip(there).skip(n);
    s + n + tail.take_while(|(x, y)| x == y).count()
}

/// The end of a block: what is left of it as a literal.
fn done(dst: &mut [u8], d: usize, src: &[u8], next_emit: usize) -> usize {
    if next_emit < src.len() {
        emit_literal(dst, d, src, next_emit, src.len())
    } else {
        d
    }
}

/// Appends `src[start..end]` (not empty, below 64 Ki bytes) as a literal at `dst[d..]`;
/// returns the new end.
#[inline(always)]
#[allow(clippy::inline_always, clippy::cast_possible_truncation)] // lengths below 64 Ki
fn emit_literal(dst: &mut [u8], mut d: usize, src: &[u8], start: usize, end: usize) -> usize {
    let len = end - start;
    let n = len - 1;
    if n <= 59 {
        dst[d] = (n as u8) << 2;
        d += 1;
        if len <= 16 && start + 16 <= src.len() {
            // One copy of constant size; the bytes past the literal are overwritten next.
            dst[d..d + 16].copy_from_slice(&src[start..start + 16]);
            return d + len;
        }
    } else if n < 256 {
        dst[d] = 60 << 2;
        dst[d + 1] = n as u8;
        d += 2;
    } else {
        dst[d] = 61 << 2;
        dst[d + 1..d + 3].copy_from_slice(&(n as u16).to_le_bytes());
        d += 3;
    }
    dst[d..d + len].copy_from_slice(&src[start..end]);
    d + len
}

/// Appends copies of `len` bytes (4 or more) from `offset` back (1 to 64 Ki - 1), as
/// `snap` splits them; returns the new end.
#[inline(always)]
#[allow(clippy::inline_always, clippy::cast_possible_truncation)] // lengths below 64 Ki
fn emit_copy(dst: &mut [u8], mut d: usize, offset: usize, mut len: usize) -> usize {
    while len >= 68 {
        d = emit_copy2(dst, d, offset, 64);
        len -= 64;
    }
    if len > 64 {
        d = emit_copy2(dst, d, offset, 60);
        len -= 60;
    }
    if len <= 11 && offset <= 2047 {
        dst[d] = (((offset >> 8) as u8) << 5) | (((len - 4) as u8) << 2) | 0b01;
        dst[d + 1] = offset as u8;
        d + 2
    } else {
        emit_copy2(dst, d, offset, len)
    }
}

/// A copy with a two-byte offset, of 1 to 64 bytes.
#[inline(always)]
#[allow(clippy::inline_always, clippy::cast_possible_truncation)] // lengths below 64 Ki
fn emit_copy2(dst: &mut [u8], d: usize, offset: usize, len: usize) -> usize {
    dst[d] = (((len - 1) as u8) << 2) | 0b10;
    dst[d + 1..d + 3].copy_from_slice(&(offset as u16).to_le_bytes());
    d + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `snap`'s raw output for `src` without its header.
    fn snap(src: &[u8]) -> Vec<u8> {
        let mut out = snap::raw::Encoder::new().compress_vec(src).unwrap();
        let mut header = 1;
        while out[header - 1] & 0x80 != 0 {
            header += 1;
        }
        out.drain(..header);
        out
    }

    fn ours(blocks: &mut Blocks, src: &[u8]) -> Vec<u8> {
        let mut dst = vec![0; max_compressed_len(src.len())];
        let n = blocks.compress(src, &mut dst);
        dst.truncate(n);
        dst
    }

    /// Log-like text, random bytes, runs, and their mixes, of many lengths.
    fn inputs() -> Vec<Vec<u8>> {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed.to_le_bytes()[0]
                })
                .collect()
        };
        let mut log = Vec::new();
        let mut i = 0_u64;
        while log.len() < MAX_BLOCK + 1000 {
            log.extend_from_slice(
                format!(
                    r#"{{"level":"INFO","target":"app","message":"request handled","fields":{{"request_id":{i},"user":"ada","ratio":0.75}}}}"#
                )
                .as_bytes(),
            );
            i += 7;
        }
        let mut all = Vec::new();
        for n in [
            0, 1, 2, 15, 16, 17, 18, 31, 100, 255, 256, 1000, 5000, 20_000,
        ] {
            all.push(log[..n].to_vec());
            all.push(random(n));
            all.push(vec![b'a'; n]);
        }
        all.push(log[..MAX_BLOCK].to_vec());
        all.push(log[500..500 + MAX_BLOCK].to_vec());
        all.push(random(MAX_BLOCK));
        all.push(vec![0; MAX_BLOCK]);
        let mut mixed = random(3000);
        mixed.extend_from_slice(&log[..30_000]);
        mixed.extend_from_slice(&random(200));
        mixed.extend_from_slice(&[7; 70]);
        mixed.extend_from_slice(&log[..20_000]);
        all.push(mixed);
        all
    }

    #[test]
    fn blocks_compress_to_snaps_bytes_and_decode() {
        let inputs = inputs();
        let mut blocks = Blocks::default();
        // Twice through, one table: slots from earlier blocks (of other sizes) never count.
        for _ in 0..2 {
            for src in &inputs {
                let got = ours(&mut blocks, src);
                assert!(got == snap(src), "{} bytes", src.len());
                let mut framed = Vec::new();
                crate::sink::loki::encode::put_varint(&mut framed, src.len() as u64);
                framed.extend_from_slice(&got);
                let back = snap::raw::Decoder::new().decompress_vec(&framed).unwrap();
                assert!(back == *src);
            }
        }
    }

    #[test]
    fn the_table_starts_over_before_its_base_overflows() {
        let inputs = inputs();
        let mut blocks = Blocks {
            base: u32::MAX - 3 * (1 << 16),
            ..Blocks::default()
        };
        for src in inputs.iter().rev() {
            assert!(ours(&mut blocks, src) == snap(src), "{} bytes", src.len());
        }
        assert!(blocks.base < 1 << 24);
    }
}
