//! The settled sequence numbers: a set of disjoint ranges, small because settlements
//! arrive nearly in order (a few requests in flight) and everything below the oldest
//! segment collapses into one range.

use std::ops::Range;

/// A set of `u64`s stored as sorted, disjoint, non-adjacent, non-empty ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    /// One past the largest member (0 when empty).
    pub(super) fn max_end(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.end)
    }

    /// True if `x` is in the set. O(1) above the largest member (the common case: the
    /// reader is past every settlement), O(log n) below.
    pub(super) fn contains(&self, x: u64) -> bool {
        if x >= self.max_end() {
            return false;
        }
        let i = self.ranges.partition_point(|r| r.end <= x);
        self.ranges.get(i).is_some_and(|r| r.start <= x)
    }

    /// The end of the range holding `x`, if `x` is in the set.
    pub(super) fn end_of_range_with(&self, x: u64) -> Option<u64> {
        let i = self.ranges.partition_point(|r| r.end <= x);
        self.ranges.get(i).filter(|r| r.start <= x).map(|r| r.end)
    }

    /// Adds every member of `range`.
    pub(super) fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        // The ranges that touch or overlap `range`: from the first ending at or after its
        // start to the last starting at or before its end.
        let i = self.ranges.partition_point(|r| r.end < range.start);
        let j = self.ranges.partition_point(|r| r.start <= range.end);
        if i == j {
            self.ranges.insert(i, range);
            return;
        }
        let start = range.start.min(self.ranges[i].start);
        let end = range.end.max(self.ranges[j - 1].end);
        self.ranges.splice(i..j, std::iter::once(start..end));
    }

    /// Appends to `out` the parts of `range` not in the set, in order.
    pub(super) fn gaps_in(&self, range: Range<u64>, out: &mut Vec<Range<u64>>) {
        let mut at = range.start;
        let i = self.ranges.partition_point(|r| r.end <= range.start);
        for r in &self.ranges[i..] {
            if r.start >= range.end {
                break;
            }
            if r.start > at {
                out.push(at..r.start);
            }
            at = at.max(r.end);
        }
        if at < range.end {
            out.push(at..range.end);
        }
    }

    /// How many members of `range` are not in the set.
    pub(super) fn count_gaps_in(&self, range: Range<u64>) -> u64 {
        let mut gaps = Vec::new();
        self.gaps_in(range, &mut gaps);
        gaps.iter().map(|r| r.end - r.start).sum()
    }

    /// The ranges, in order.
    pub(super) fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// How many ranges the set holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
// One range of sequence numbers, not a vector of numbers.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn set(ranges: &[Range<u64>]) -> RangeSet {
        let mut s = RangeSet::default();
        for r in ranges {
            s.insert(r.clone());
        }
        s
    }

    #[test]
    fn adjacent_and_overlapping_ranges_merge() {
        assert_eq!(set(&[0..5, 5..9]).ranges(), [0..9]);
        assert_eq!(set(&[10..20, 0..5, 4..11]).ranges(), [0..20]);
        assert_eq!(set(&[0..2, 4..6, 8..10, 1..9]).ranges(), [0..10]);
        assert_eq!(set(&[0..2, 4..6]).ranges(), [0..2, 4..6]);
        assert_eq!(set(&[4..6, 0..2, 3..3]).ranges(), [0..2, 4..6]);
    }

    #[test]
    fn out_of_order_settlements_collapse_once_the_holes_fill() {
        let s = set(&[20..30, 0..10, 40..50, 10..20, 30..40]);
        assert_eq!(s.ranges(), [0..50]);
    }

    #[test]
    fn contains_checks_bounds() {
        let s = set(&[2..4, 8..9]);
        let members: Vec<u64> = (0..12).filter(|&x| s.contains(x)).collect();
        assert_eq!(members, [2, 3, 8]);
        assert_eq!(s.end_of_range_with(3), Some(4));
        assert_eq!(s.end_of_range_with(4), None);
        assert_eq!(s.end_of_range_with(8), Some(9));
    }

    #[test]
    fn gaps_are_what_is_missing_in_order() {
        let s = set(&[2..4, 8..9]);
        let mut g = Vec::new();
        s.gaps_in(0..12, &mut g);
        assert_eq!(g, [0..2, 4..8, 9..12]);
        g.clear();
        s.gaps_in(3..8, &mut g);
        assert_eq!(g, [4..8]);
        g.clear();
        s.gaps_in(2..4, &mut g);
        assert!(g.is_empty());
        assert_eq!(s.count_gaps_in(0..12), 9);
    }

    #[test]
    fn a_random_mix_agrees_with_a_bitmap() {
        let mut s = RangeSet::default();
        let mut bits = [false; 200];
        let mut x = 12345u64;
        for _ in 0..500 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let a = (x >> 33) % 190;
            let len = (x >> 20) % 10;
            s.insert(a..a + len);
            for b in a..a + len {
                bits[usize::try_from(b).unwrap()] = true;
            }
            for (i, &bit) in bits.iter().enumerate() {
                assert_eq!(s.contains(i as u64), bit);
            }
            assert!(s.ranges().windows(2).all(|w| w[0].end < w[1].start));
        }
    }
}
