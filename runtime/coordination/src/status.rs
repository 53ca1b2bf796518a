//! Small summaries for the cluster's status display.

use crate::ids::PartitionId;

/// The `k` partitions with the most events, most first; equal counts in partition order. A
/// partition listed twice counts as the sum of its entries.
pub fn hottest(
    events_per_partition: impl IntoIterator<Item = (PartitionId, u64)>,
    k: usize,
) -> Vec<(PartitionId, u64)> {
    let mut totals = std::collections::BTreeMap::<PartitionId, u64>::new();
    for (partition, events) in events_per_partition {
        let total = totals.entry(partition).or_default();
        *total = total.saturating_add(events);
    }
    let mut ranked: Vec<(PartitionId, u64)> = totals.into_iter().collect();
    ranked.sort_by_key(|&(partition, events)| (std::cmp::Reverse(events), partition));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_busiest_come_first_and_ties_go_by_id() {
        let counts = [(3, 10), (1, 50), (2, 10), (0, 7)].map(|(p, n)| (PartitionId(p), n));
        let top: Vec<(u32, u64)> = hottest(counts, 3)
            .into_iter()
            .map(|(p, n)| (p.0, n))
            .collect();
        assert_eq!(top, [(1, 50), (2, 10), (3, 10)]);
        assert_eq!(hottest(counts, 0), []);
        assert_eq!(hottest(counts, 9).len(), 4);
    }

    proptest! {
        /// Against a full sort: most events first, then lowest id, cut at `k`.
        #[test]
        fn the_top_k_match_a_full_sort(
            counts in proptest::collection::btree_map(0..40u32, 0..20u64, 0..30),
            k in 0..35usize,
        ) {
            let mut sorted: Vec<(PartitionId, u64)> =
                counts.iter().map(|(p, n)| (PartitionId(*p), *n)).collect();
            sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            sorted.truncate(k);
            prop_assert_eq!(hottest(counts.iter().map(|(p, n)| (PartitionId(*p), *n)), k), sorted);
        }
    }
}
