use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn nodes(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

/// An assignment from `(partition, node, generation)` triples.
fn assignment(owners: &[(u32, u64, u64)]) -> Assignment {
    owners
        .iter()
        .map(|&(p, node, generation)| {
            (
                PartitionId(p),
                Owner {
                    node: NodeId(node),
                    generation: Generation(generation),
                },
            )
        })
        .collect()
}

fn owner_of(assignment: &Assignment, partition: u32) -> u64 {
    assignment[&PartitionId(partition)].node.0
}

/// The fewest moves any balanced assignment of `partitions` over `live` needs from `current`,
/// counted from the workers' side: every partition without a live owner moves, every worker
/// above the larger share gives up its excess, and when more workers hold the larger share
/// than there are larger shares (`partitions % live`), each surplus one gives up one more.
fn fewest_moves(current: &Assignment, partitions: u32, live: &BTreeSet<NodeId>) -> usize {
    let n = partitions as usize;
    let w = live.len();
    let larger = n.div_ceil(w);
    let larger_shares = n % w;
    let mut counts: BTreeMap<NodeId, usize> = live.iter().map(|&node| (node, 0)).collect();
    let mut homeless = 0;
    for p in (0..partitions).map(PartitionId) {
        match current.get(&p).and_then(|o| counts.get_mut(&o.node)) {
            Some(count) => *count += 1,
            None => homeless += 1,
        }
    }
    let excess: usize = counts.values().map(|&c| c.saturating_sub(larger)).sum();
    let at_larger = counts.values().filter(|&&c| c >= larger).count();
    let surplus = if larger_shares == 0 {
        0 // every share is the same: the excess above it is all there is
    } else {
        at_larger.saturating_sub(larger_shares)
    };
    homeless + excess + surplus
}

/// Checks everything [`rebalance`] promises about one call, and returns its result.
fn check_promises(
    current: &Assignment,
    partitions: u32,
    live: &BTreeSet<NodeId>,
    last_issued: Generation,
) -> Rebalance {
    let r = rebalance(current, partitions, live, last_issued).expect("there are live workers");
    let ids: Vec<PartitionId> = r.assignment.keys().copied().collect();
    assert_eq!(ids, (0..partitions).map(PartitionId).collect::<Vec<_>>());
    assert!(r.assignment.values().all(|o| live.contains(&o.node)));
    let counts: Vec<usize> = live
        .iter()
        .map(|node| owned_counts(&r.assignment).get(node).copied().unwrap_or(0))
        .collect();
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "unbalanced: {counts:?}");
    assert_eq!(r.moves.len(), fewest_moves(current, partitions, live));

    let before = current
        .values()
        .map(|o| o.generation)
        .chain([last_issued])
        .max()
        .unwrap();
    let mut previous = before;
    for m in &r.moves {
        assert!(m.generation > previous, "generations must rise: {m:?}");
        previous = m.generation;
        assert_eq!(
            r.assignment[&m.partition],
            Owner {
                node: m.to,
                generation: m.generation
            }
        );
        assert_eq!(m.from, current.get(&m.partition).map(|o| o.node));
    }
    assert_eq!(r.last_issued, previous);
    let moved: BTreeSet<PartitionId> = r.moves.iter().map(|m| m.partition).collect();
    for (p, owner) in &r.assignment {
        if !moved.contains(p) {
            assert_eq!(Some(owner), current.get(p), "{p} changed without a move");
        }
    }
    let dropped: Vec<(PartitionId, Owner)> = current
        .iter()
        .filter(|(p, _)| p.0 >= partitions)
        .map(|(p, o)| (*p, *o))
        .collect();
    assert_eq!(r.dropped, dropped);
    r
}

#[test]
fn a_new_job_is_spread_evenly_in_partition_order() {
    let r = rebalance(&Assignment::new(), 5, &nodes(&[1, 2]), Generation(0)).unwrap();
    let owners: Vec<u64> = (0..5).map(|p| owner_of(&r.assignment, p)).collect();
    assert_eq!(owners, [1, 2, 1, 2, 1]);
    assert_eq!(r.moves.len(), 5);
    assert!(r.moves.iter().all(|m| m.from.is_none()));
    let generations: Vec<u64> = r.moves.iter().map(|m| m.generation.0).collect();
    assert_eq!(generations, [1, 2, 3, 4, 5]);
    assert_eq!(r.last_issued, Generation(5));
}

#[test]
fn a_dead_workers_partitions_go_to_the_least_loaded() {
    // Node 3 died holding 2 and 5; node 2 holds fewer than node 1.
    let current = assignment(&[
        (0, 1, 1),
        (1, 1, 2),
        (2, 3, 3),
        (3, 2, 4),
        (4, 1, 5),
        (5, 3, 6),
    ]);
    let r = rebalance(&current, 6, &nodes(&[1, 2]), Generation(6)).unwrap();
    assert_eq!(
        r.moves,
        [
            Move {
                partition: PartitionId(2),
                from: Some(NodeId(3)),
                to: NodeId(2),
                generation: Generation(7)
            },
            Move {
                partition: PartitionId(5),
                from: Some(NodeId(3)),
                to: NodeId(2),
                generation: Generation(8)
            },
        ]
    );
    assert_eq!(owned_counts(&r.assignment)[&NodeId(1)], 3);
}

#[test]
fn a_joining_worker_takes_only_its_share() {
    let current = assignment(&[
        (0, 1, 1),
        (1, 1, 2),
        (2, 1, 3),
        (3, 2, 4),
        (4, 2, 5),
        (5, 2, 6),
    ]);
    let r = rebalance(&current, 6, &nodes(&[1, 2, 3]), Generation(6)).unwrap();
    // Each old worker gives up its highest partition.
    let moved: Vec<(u32, Option<u64>, u64)> = r
        .moves
        .iter()
        .map(|m| (m.partition.0, m.from.map(|n| n.0), m.to.0))
        .collect();
    assert_eq!(moved, [(2, Some(1), 3), (5, Some(2), 3)]);
}

#[test]
fn the_larger_shares_stay_with_the_workers_holding_most() {
    // 7 partitions over 3 workers: shares 3, 2, 2. Node 2 holds 3 and keeps them all.
    let current = assignment(&[
        (0, 1, 1),
        (1, 1, 2),
        (2, 2, 3),
        (3, 2, 4),
        (4, 2, 5),
        (5, 4, 6),
    ]);
    let r = check_promises(&current, 7, &nodes(&[1, 2, 3]), Generation(6));
    assert_eq!(owned_counts(&r.assignment)[&NodeId(2)], 3);
    assert!(r.moves.iter().all(|m| m.from != Some(NodeId(2))));
}

#[test]
fn a_shrunk_job_reports_its_dropped_partitions_and_never_reuses_their_generations() {
    let current = assignment(&[(0, 1, 1), (1, 2, 2), (2, 1, 3), (3, 2, 9)]);
    let r = check_promises(&current, 2, &nodes(&[1]), Generation(4));
    assert_eq!(
        r.dropped,
        [
            (
                PartitionId(2),
                Owner {
                    node: NodeId(1),
                    generation: Generation(3)
                }
            ),
            (
                PartitionId(3),
                Owner {
                    node: NodeId(2),
                    generation: Generation(9)
                }
            ),
        ]
    );
    // Partition 1 leaves node 2, which is gone; its new generation passes the dropped 9.
    assert_eq!(r.moves.len(), 1);
    assert_eq!(r.moves[0].generation, Generation(10));
}

#[test]
fn no_live_worker_is_an_error() {
    let current = assignment(&[(0, 1, 1)]);
    assert_eq!(
        rebalance(&current, 1, &BTreeSet::new(), Generation(1)),
        Err(AssignmentError::NoLiveWorkers { partitions: 1 })
    );
}

#[test]
fn an_exhausted_generation_counter_is_an_error_not_a_wrap() {
    let current = assignment(&[(0, 1, u64::MAX - 1), (1, 2, 3)]);
    assert_eq!(
        rebalance(&current, 3, &nodes(&[1]), Generation(5)),
        Err(AssignmentError::GenerationsExhausted {
            last_issued: Generation(u64::MAX - 1),
            moves: 2,
        })
    );
}

#[test]
fn zero_partitions_assign_nothing() {
    let r = check_promises(&Assignment::new(), 0, &nodes(&[1, 2]), Generation(3));
    assert!(r.assignment.is_empty() && r.moves.is_empty());
    assert_eq!(r.last_issued, Generation(3));
}

/// Every assignment of up to 5 partitions over nodes 1..=3 (or none), every non-empty live
/// set among them: the moves equal the minimum found by trying every balanced assignment.
#[test]
fn moves_are_the_fewest_of_every_balanced_assignment_exhaustively() {
    let universe = [1u64, 2, 3];
    for partitions in 0..=5u32 {
        let owner_choices = universe.len() + 1; // a node, or no owner
        for code in 0..owner_choices.pow(partitions) {
            let mut current = Assignment::new();
            let mut rest = code;
            for p in 0..partitions {
                let choice = rest % owner_choices;
                rest /= owner_choices;
                if choice > 0 {
                    current.insert(
                        PartitionId(p),
                        Owner {
                            node: NodeId(universe[choice - 1]),
                            generation: Generation(u64::from(p) + 1),
                        },
                    );
                }
            }
            for mask in 1..(1u32 << universe.len()) {
                let live: BTreeSet<NodeId> = universe
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, &n)| NodeId(n))
                    .collect();
                let r = check_promises(&current, partitions, &live, Generation(0));
                let best = brute_force_fewest_moves(&current, partitions, &live);
                assert_eq!(r.moves.len(), best, "{current:?} over {live:?}");
            }
        }
    }
}

/// Tries every assignment of the partitions to `live` and keeps the balanced ones.
fn brute_force_fewest_moves(
    current: &Assignment,
    partitions: u32,
    live: &BTreeSet<NodeId>,
) -> usize {
    let live: Vec<NodeId> = live.iter().copied().collect();
    let mut best = usize::MAX;
    for code in 0..live.len().pow(partitions) {
        let mut counts = vec![0usize; live.len()];
        let mut moves = 0;
        let mut rest = code;
        for p in 0..partitions {
            let index = rest % live.len();
            rest /= live.len();
            counts[index] += 1;
            if current.get(&PartitionId(p)).map(|o| o.node) != Some(live[index]) {
                moves += 1;
            }
        }
        if counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1 {
            best = best.min(moves);
        }
    }
    best
}

/// A job's state as the property tests draw it: owners among nodes 0..12 (some live, some
/// not), some partitions unassigned, some beyond the partition count.
#[derive(Debug, Clone)]
struct Case {
    current: Assignment,
    partitions: u32,
    live: BTreeSet<NodeId>,
    last_issued: Generation,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..48u32,
        0..4u32,
        proptest::collection::btree_set(0..10u64, 1..8),
        0..200u64,
    )
        .prop_flat_map(|(partitions, beyond, live, last_issued)| {
            let owners = proptest::option::weighted(0.9, (0..12u64, 0..200u64));
            (
                proptest::collection::vec(owners, (partitions + beyond) as usize),
                Just(partitions),
                Just(live),
                Just(last_issued),
            )
        })
        .prop_map(|(owners, partitions, live, last_issued)| Case {
            current: owners
                .into_iter()
                .enumerate()
                .filter_map(|(p, owner)| {
                    owner.map(|(node, generation)| {
                        (
                            PartitionId(p as u32),
                            Owner {
                                node: NodeId(node),
                                generation: Generation(generation),
                            },
                        )
                    })
                })
                .collect(),
            partitions,
            live: live.into_iter().map(NodeId).collect(),
            last_issued: Generation(last_issued),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_partition_has_exactly_one_live_owner(c in case()) {
        let r = rebalance(&c.current, c.partitions, &c.live, c.last_issued).unwrap();
        let ids: Vec<PartitionId> = r.assignment.keys().copied().collect();
        prop_assert_eq!(ids, (0..c.partitions).map(PartitionId).collect::<Vec<_>>());
        prop_assert!(r.assignment.values().all(|o| c.live.contains(&o.node)));
    }

    #[test]
    fn owned_counts_differ_by_at_most_one(c in case()) {
        let r = rebalance(&c.current, c.partitions, &c.live, c.last_issued).unwrap();
        let counts = owned_counts(&r.assignment);
        let counts: Vec<usize> =
            c.live.iter().map(|node| counts.get(node).copied().unwrap_or(0)).collect();
        prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    }

    #[test]
    fn moves_equal_the_minimum(c in case()) {
        let r = rebalance(&c.current, c.partitions, &c.live, c.last_issued).unwrap();
        prop_assert_eq!(r.moves.len(), fewest_moves(&c.current, c.partitions, &c.live));
    }

    #[test]
    fn assigning_again_with_the_same_workers_moves_nothing(c in case()) {
        let first = rebalance(&c.current, c.partitions, &c.live, c.last_issued).unwrap();
        let again = rebalance(&first.assignment, c.partitions, &c.live, first.last_issued).unwrap();
        prop_assert!(again.moves.is_empty());
        prop_assert_eq!(&again.assignment, &first.assignment);
        prop_assert_eq!(again.last_issued, first.last_issued);
    }

    /// Moved partitions get rising generations above all before; the others keep theirs.
    #[test]
    fn moves_raise_generations_and_nothing_else_changes(c in case()) {
        check_promises(&c.current, c.partitions, &c.live, c.last_issued);
    }

    #[test]
    fn the_same_input_gives_the_same_output(c in case()) {
        prop_assert_eq!(
            rebalance(&c.current, c.partitions, &c.live, c.last_issued),
            rebalance(&c.current.clone(), c.partitions, &c.live.clone(), c.last_issued)
        );
    }

    /// Across a chain of membership and size changes, no generation is ever issued twice.
    #[test]
    fn generations_never_repeat_across_changes(
        start in case(),
        changes in proptest::collection::vec(
            (proptest::collection::btree_set(0..10u64, 1..8), 0..48u32), 1..6),
    ) {
        let first =
            rebalance(&start.current, start.partitions, &start.live, start.last_issued).unwrap();
        let mut issued: BTreeSet<Generation> = first.moves.iter().map(|m| m.generation).collect();
        let (mut current, mut counter) = (first.assignment, first.last_issued);
        for (live, partitions) in changes {
            let live: BTreeSet<NodeId> = live.into_iter().map(NodeId).collect();
            let r = rebalance(&current, partitions, &live, counter).unwrap();
            for m in &r.moves {
                prop_assert!(issued.insert(m.generation), "{} issued twice", m.generation);
            }
            current = r.assignment;
            counter = r.last_issued;
        }
    }
}
