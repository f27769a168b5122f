//! The set of allocated addresses of one family, kept as merged intervals so that finding the lowest free
//! address of a range is one ordered-map lookup (O(log n)) and memory grows with the number of allocation
//! runs, never with the size of a pool.

use std::collections::BTreeMap;

/// A set of `u128` values stored as maximal, non-adjacent inclusive intervals `start -> end`.
///
/// Invariant: intervals are disjoint and no two are adjacent (`end + 1 < next.start`). Because of it the
/// value right after an interval is always free, which is what makes [`IntervalSet::first_free`] a single
/// lookup, and the representation of a given set is unique, so two sets compare equal exactly when they hold
/// the same values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    runs: BTreeMap<u128, u128>,
    len: u128,
}

impl IntervalSet {
    /// Number of values in the set.
    pub(crate) fn len(&self) -> u128 {
        self.len
    }

    /// The interval holding `v`, if any.
    fn run_containing(&self, v: u128) -> Option<(u128, u128)> {
        let (&start, &end) = self.runs.range(..=v).next_back()?;
        (end >= v).then_some((start, end))
    }

    pub(crate) fn contains(&self, v: u128) -> bool {
        self.run_containing(v).is_some()
    }

    /// Adds `v`; returns false when it was already present.
    pub(crate) fn insert(&mut self, v: u128) -> bool {
        let before = self.runs.range(..=v).next_back().map(|(&s, &e)| (s, e));
        if let Some((_, end)) = before
            && end >= v
        {
            return false;
        }
        let mut start = v;
        let mut end = v;
        // Merge with the run ending right below `v`.
        if let Some((s, e)) = before
            && v > 0
            && e == v - 1
        {
            start = s;
        }
        // Merge with the run starting right above `v`.
        if v < u128::MAX
            && let Some(next_end) = self.runs.remove(&(v + 1))
        {
            end = next_end;
        }
        self.runs.insert(start, end);
        self.len += 1;
        true
    }

    /// Removes `v`; returns false when it was absent.
    pub(crate) fn remove(&mut self, v: u128) -> bool {
        let Some((start, end)) = self.run_containing(v) else {
            return false;
        };
        self.runs.remove(&start);
        if start < v {
            self.runs.insert(start, v - 1);
        }
        if v < end {
            self.runs.insert(v + 1, end);
        }
        self.len -= 1;
        true
    }

    /// The lowest value in `lo..=hi` that is not in the set.
    pub(crate) fn first_free(&self, lo: u128, hi: u128) -> Option<u128> {
        let candidate = match self.run_containing(lo) {
            None => lo,
            // Runs are never adjacent, so `end + 1` is free (if it exists).
            Some((_, end)) => end.checked_add(1)?,
        };
        (candidate <= hi).then_some(candidate)
    }

    /// Number of runs; memory is proportional to it.
    #[cfg(test)]
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Every value in ascending order (walks the whole set).
    #[cfg(test)]
    pub(crate) fn values(&self) -> impl Iterator<Item = u128> + '_ {
        self.runs.iter().flat_map(|(&s, &e)| s..=e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_neighbours_and_splits_on_remove() {
        let mut s = IntervalSet::default();
        assert!(s.insert(5));
        assert!(s.insert(7));
        assert_eq!(s.runs(), 2);
        assert!(s.insert(6));
        assert_eq!(s.runs(), 1, "5,6,7 form one run");
        assert!(!s.insert(6), "double insert is refused");
        assert!(s.remove(6));
        assert_eq!(s.runs(), 2);
        assert!(!s.remove(6));
        assert_eq!(s.len(), 2);
        assert_eq!(s.values().collect::<Vec<_>>(), vec![5, 7]);
    }

    #[test]
    fn first_free_skips_a_whole_run_at_once() {
        let mut s = IntervalSet::default();
        for v in 10..=1_000 {
            s.insert(v);
        }
        assert_eq!(s.runs(), 1);
        assert_eq!(s.first_free(10, 2_000), Some(1_001));
        assert_eq!(s.first_free(0, 2_000), Some(0));
        assert_eq!(s.first_free(10, 1_000), None, "range fully used");
        assert_eq!(s.first_free(500, 1_001), Some(1_001));
    }

    #[test]
    fn handles_the_ends_of_u128() {
        let mut s = IntervalSet::default();
        assert!(s.insert(u128::MAX));
        assert!(s.insert(0));
        assert!(s.insert(u128::MAX - 1));
        assert_eq!(s.runs(), 2);
        assert_eq!(s.first_free(u128::MAX - 1, u128::MAX), None);
        assert!(s.remove(u128::MAX));
        assert_eq!(s.first_free(u128::MAX - 1, u128::MAX), Some(u128::MAX));
    }

    proptest! {
        /// The interval set behaves exactly like a plain set, and stays canonical (so `==` is set equality).
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u128..64), 0..200)) {
            let mut s = IntervalSet::default();
            let mut model = BTreeSet::new();
            for (add, v) in ops {
                if add {
                    prop_assert_eq!(s.insert(v), model.insert(v));
                } else {
                    prop_assert_eq!(s.remove(v), model.remove(&v));
                }
                prop_assert_eq!(s.len(), model.len() as u128);
                let lo = v / 2;
                let hi = v + 8;
                let expected = (lo..=hi).find(|x| !model.contains(x));
                prop_assert_eq!(s.first_free(lo, hi), expected);
            }
            prop_assert_eq!(s.values().collect::<BTreeSet<_>>(), model.clone());
            let mut rebuilt = IntervalSet::default();
            for v in model {
                rebuilt.insert(v);
            }
            prop_assert_eq!(rebuilt, s);
        }
    }
}
