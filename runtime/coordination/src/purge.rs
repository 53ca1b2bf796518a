//! How much of the replicated log may be purged.
//!
//! Ingested events live in the replicated log until every partition that reads them has
//! committed a checkpoint covering them. A partition's checkpoint covers the log up to some
//! index: events up to it are no longer needed by that partition (a restart resumes after
//! it). The log may be purged up to the lowest index covered by every partition of every
//! running job, but never within the last `keep` entries applied, which stay as slack for
//! followers that lag a little (they catch up from the log instead of a snapshot).

use crate::ids::LogIndex;

/// The highest log index that may be purged (entries at and below it), or `None` if nothing
/// may be.
///
/// `covered` holds, for each partition of every running job, the log index its last
/// committed checkpoint covers, or `None` if it has committed none yet: such a partition may
/// still need any event, so nothing is purged. (A caller that knows the index at which a job
/// started can pass that index minus one for its partitions instead, since the job needs
/// nothing from before it.) With no partitions at all, only the slack limits the purge.
pub fn purgeable(
    covered: impl IntoIterator<Item = Option<LogIndex>>,
    last_applied: LogIndex,
    keep: u64,
) -> Option<LogIndex> {
    let mut upto = last_applied.checked_sub(keep)?;
    for partition in covered {
        upto = upto.min(partition?);
    }
    Some(upto)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The reference: tries every index and keeps the highest that no partition still needs
    /// and that leaves `keep` entries after it.
    fn brute_force(
        covered: &[Option<LogIndex>],
        last_applied: LogIndex,
        keep: u64,
    ) -> Option<LogIndex> {
        (0..=last_applied)
            .filter(|&i| i + keep <= last_applied)
            .filter(|&i| covered.iter().all(|c| c.is_some_and(|c| c >= i)))
            .max()
    }

    #[test]
    fn the_lowest_checkpoint_limits_the_purge() {
        assert_eq!(purgeable([Some(40), Some(25), Some(90)], 100, 10), Some(25));
    }

    #[test]
    fn the_slack_limits_the_purge() {
        assert_eq!(purgeable([Some(95), Some(99)], 100, 10), Some(90));
        assert_eq!(purgeable([Some(95)], 100, 0), Some(95));
        assert_eq!(purgeable([Some(5)], 9, 10), None);
    }

    #[test]
    fn a_partition_without_a_checkpoint_pins_the_whole_log() {
        assert_eq!(purgeable([Some(40), None, Some(90)], 100, 10), None);
    }

    #[test]
    fn with_no_partitions_only_the_slack_counts() {
        assert_eq!(purgeable([], 100, 10), Some(90));
    }

    #[test]
    fn small_cases_match_the_brute_force_exhaustively() {
        let coverages: Vec<Option<LogIndex>> =
            std::iter::once(None).chain((0..6).map(Some)).collect();
        for a in &coverages {
            for b in &coverages {
                for last_applied in 0..7 {
                    for keep in 0..4 {
                        for covered in [vec![], vec![*a], vec![*a, *b]] {
                            assert_eq!(
                                purgeable(covered.iter().copied(), last_applied, keep),
                                brute_force(&covered, last_applied, keep),
                                "{covered:?} {last_applied} {keep}"
                            );
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn never_purges_what_a_partition_still_needs(
            covered in proptest::collection::vec(
                proptest::option::weighted(0.95, 0..300u64), 0..12),
            last_applied in 0..300u64,
            keep in 0..50u64,
        ) {
            let upto = purgeable(covered.iter().copied(), last_applied, keep);
            prop_assert_eq!(upto, brute_force(&covered, last_applied, keep));
            if let Some(upto) = upto {
                prop_assert!(covered.iter().all(|c| c.is_some_and(|c| upto <= c)));
                prop_assert!(upto + keep <= last_applied);
            }
        }
    }
}
