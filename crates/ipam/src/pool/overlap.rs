//! Addresses claimed by two pools: found in O(entries · log entries), reported on both Eips.

use std::fmt;

use super::{Pool, PoolEntry};
use crate::never_allocated::usable_span;
use crate::range::AddrRange;

/// Two pools claiming the same addresses. Allocation stays safe (an address is never handed out twice), but
/// which pool an address is counted in then depends on which pool allocated it, so the controller should
/// report this on both Eips (`Overlapping` condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The first pool's name and the entry that overlaps.
    pub first: (String, String),
    /// The second pool's name and the entry that overlaps.
    pub second: (String, String),
    /// The common usable addresses, from the first to the last (a [`NeverAllocated`] block inside is not
    /// counted out).
    pub range: AddrRange,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Eip '{}' ({}) and Eip '{}' ({}) overlap on {}",
            self.first.0, self.first.1, self.second.0, self.second.1, self.range
        )
    }
}

/// Every pair of entries of different pools that share usable addresses, sorted by address. O(e · log e +
/// pairs found) for e entries in all, whatever their sizes.
pub fn find_overlaps<'a>(pools: impl IntoIterator<Item = &'a Pool>) -> Vec<Overlap> {
    let mut all: Vec<(&Pool, &PoolEntry)> = pools
        .into_iter()
        .flat_map(|p| p.entries.iter().map(move |e| (p, e)))
        .collect();
    all.sort_by(|a, b| (a.1.range, &a.0.name).cmp(&(b.1.range, &b.0.name)));
    let mut out = Vec::new();
    for (i, (pa, ea)) in all.iter().enumerate() {
        // Sorted by start, so only the following entries that start inside `ea` can overlap it.
        for (pb, eb) in &all[i + 1..] {
            let Some(common) = ea.range.intersection(&eb.range) else {
                break;
            };
            if pa.name == pb.name {
                continue;
            }
            // Both list 127.0.0.1, say: neither gives it out, so they do not compete for it.
            if let Some(range) = usable_span(common) {
                out.push(Overlap {
                    first: (pa.name.clone(), ea.text.clone()),
                    second: (pb.name.clone(), eb.text.clone()),
                    range,
                });
            }
        }
    }
    out
}

/// One side of an overlap: a pool and one of its entries.
type Side<'a> = (&'a Pool, &'a PoolEntry);

/// The overlaps of [`find_overlaps`] that involve `pool`, in the same order: the first `limit`, and how many
/// there are in all. Only `limit` of them are built, and finding them costs O(entries of `pool` · pools ·
/// log entries + overlaps), so an Eip's status stays cheap when hundreds of Eips all list `0.0.0.0/0`.
pub(crate) fn find_overlaps_of<'a>(
    pool: &'a Pool,
    others: impl IntoIterator<Item = &'a Pool>,
    limit: usize,
) -> (Vec<Overlap>, usize) {
    let mut found: Vec<(Side<'a>, Side<'a>, AddrRange)> = Vec::new();
    for other in others.into_iter().filter(|o| o.name != pool.name) {
        for mine in &pool.entries {
            // `other`'s entries are sorted and disjoint: the ones sharing addresses with `mine` are consecutive,
            // from the first that ends at or after `mine` starts.
            let key = (mine.range.family(), mine.range.first_raw());
            let start = other
                .entries
                .partition_point(|e| (e.range.family(), e.range.last_raw()) < key);
            for theirs in &other.entries[start..] {
                let Some(common) = mine.range.intersection(&theirs.range) else {
                    break;
                };
                let Some(range) = usable_span(common) else {
                    continue;
                };
                let (a, b) = ((pool, mine), (other, theirs));
                let (first, second) = if (mine.range, &pool.name) <= (theirs.range, &other.name) {
                    (a, b)
                } else {
                    (b, a)
                };
                found.push((first, second, range));
            }
        }
    }
    // The order find_overlaps produces: by the first side's entry, then the second's.
    let order = |x: &(Side<'a>, Side<'a>, AddrRange), y: &(Side<'a>, Side<'a>, AddrRange)| {
        let key = |(f, s, _): &(Side<'a>, Side<'a>, AddrRange)| (f.1.range, &f.0.name, s.1.range, &s.0.name);
        key(x).cmp(&key(y))
    };
    let total = found.len();
    if limit < total {
        found.select_nth_unstable_by(limit, order);
        found.truncate(limit);
    }
    found.sort_unstable_by(order);
    let listed = found
        .into_iter()
        .map(|((pa, ea), (pb, eb), range)| Overlap {
            first: (pa.name.clone(), ea.text.clone()),
            second: (pb.name.clone(), eb.text.clone()),
            range,
        })
        .collect();
    (listed, total)
}
