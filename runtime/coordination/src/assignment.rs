//! Which worker owns which partition of a job, and how that changes when workers come and go.
//!
//! [`rebalance`] takes a job's current [`Assignment`], its partition count and the live workers,
//! and returns the new assignment with the [`Move`]s that lead to it:
//!
//! - every partition is owned by exactly one live worker;
//! - owned counts differ by at most one between live workers;
//! - as few partitions move as possible: a partition on a live worker stays unless balance
//!   requires otherwise, and the partitions of workers that are gone are placed first, on the
//!   least-loaded workers;
//! - every moved or newly assigned partition gets a generation greater than any the job has
//!   issued, so the previous owner is fenced (see [`crate::fencing`]);
//! - the same input gives the same output: ties are broken by id, never by chance.
//!
//! # Why the number of moves is minimal
//!
//! With `n` partitions over `w` live workers, balance leaves one shape of targets: every
//! worker owns `b = n / w` or `b + 1`, and exactly `e = n % w` of them own `b + 1`. A
//! partition that stays must stay on its live owner, so a worker holding `c` partitions keeps
//! at most `min(c, target)`. Raising one worker's target from `b` to `b + 1` keeps one more
//! partition only if it holds more than `b`, so the most partitions any balanced assignment
//! keeps is `Σ min(c, b) + min(e, #{workers holding more than b})`; every other partition
//! must move. [`rebalance`] gives the `e` larger targets to the workers holding the most,
//! keeps exactly `min(c, target)` on each, and moves only the rest, so it reaches that bound.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{Generation, NodeId, PartitionId};

/// Who owns a partition, and under which generation it was given to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The worker that processes the partition and commits its checkpoints.
    pub node: NodeId,
    /// The fencing token of this assignment: commits carrying an older one are refused.
    pub generation: Generation,
}

/// The owners of a job's partitions.
pub type Assignment = BTreeMap<PartitionId, Owner>;

/// One partition given to a (new) owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Move {
    /// The partition.
    pub partition: PartitionId,
    /// Its previous owner, live or not; `None` if it never had one.
    pub from: Option<NodeId>,
    /// Its new owner.
    pub to: NodeId,
    /// The generation the new owner commits with.
    pub generation: Generation,
}

/// What [`rebalance`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebalance {
    /// The new owner of every partition `0..partitions`.
    pub assignment: Assignment,
    /// The partitions whose owner changed or that had none, in partition order.
    pub moves: Vec<Move>,
    /// Partitions of the old assignment at or beyond the partition count, with their last
    /// owner: the job no longer has them, and that owner must stop processing them.
    pub dropped: Vec<(PartitionId, Owner)>,
    /// The job's generation counter after this decision: the highest generation issued. Pass it
    /// to the next call so that generations never repeat, not even those of dropped partitions.
    pub last_issued: Generation,
}

/// Why no assignment could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    /// Nobody is left to own the partitions; the job waits for a worker to come back.
    #[error("no live worker to own the job's {partitions} partitions")]
    NoLiveWorkers {
        /// The job's partition count.
        partitions: u32,
    },
    /// The generation counter would wrap around, which would let a fenced owner commit again.
    #[error("the job's generations are exhausted: {moves} moves needed after {last_issued}")]
    GenerationsExhausted {
        /// The highest generation issued so far.
        last_issued: Generation,
        /// How many new generations were needed.
        moves: usize,
    },
}

/// Assigns partitions `0..partitions` of a job to the `live` workers, starting from `current`.
///
/// `last_issued` is the job's generation counter: the highest generation it has issued. Moves
/// take the next ones, in partition order, after the greater of `last_issued` and every
/// generation in `current`, so a counter that lags behind the assignment cannot make a
/// generation repeat. Partitions of `current` at or beyond `partitions` are returned as
/// [`Rebalance::dropped`].
pub fn rebalance(
    current: &Assignment,
    partitions: u32,
    live: &BTreeSet<NodeId>,
    last_issued: Generation,
) -> Result<Rebalance, AssignmentError> {
    if live.is_empty() {
        return Err(AssignmentError::NoLiveWorkers { partitions });
    }
    let mut kept: BTreeMap<NodeId, Vec<PartitionId>> =
        live.iter().map(|&node| (node, Vec::new())).collect();
    // Partitions with no live owner, and with the owner they had (if any).
    let mut homeless: Vec<(PartitionId, Option<NodeId>)> = Vec::new();
    let mut dropped = Vec::new();
    let mut newest = last_issued;
    for (&partition, &owner) in current {
        newest = newest.max(owner.generation);
        if partition.0 >= partitions {
            dropped.push((partition, owner));
        } else if let Some(owned) = kept.get_mut(&owner.node) {
            owned.push(partition);
        } else {
            homeless.push((partition, Some(owner.node)));
        }
    }
    homeless.extend(
        (0..partitions)
            .map(PartitionId)
            .filter(|p| !current.contains_key(p))
            .map(|p| (p, None)),
    );
    homeless.sort();

    // The `extra` larger targets go to the workers holding the most: that keeps the most
    // partitions where they are (see the module's docs). Ties by id.
    let n = partitions as usize;
    let (base, extra) = (n / live.len(), n % live.len());
    let mut by_load: Vec<NodeId> = live.iter().copied().collect();
    by_load.sort_by_key(|node| (Reverse(kept[node].len()), *node));
    let target: BTreeMap<NodeId, usize> = by_load
        .iter()
        .enumerate()
        .map(|(rank, &node)| (node, base + usize::from(rank < extra)))
        .collect();

    // Overloaded workers give up their highest partitions beyond their target.
    let mut shed = Vec::new();
    for (node, owned) in &mut kept {
        if owned.len() > target[node] {
            shed.extend(
                owned
                    .split_off(target[node])
                    .into_iter()
                    .map(|p| (p, Some(*node))),
            );
        }
    }
    shed.sort();

    // Homeless partitions first, then shed ones, each to the least-loaded worker below its
    // target. The targets add up to `partitions`, so there is always one.
    let mut load: BTreeMap<NodeId, usize> = kept
        .iter()
        .map(|(node, owned)| (*node, owned.len()))
        .collect();
    let mut placed = Vec::with_capacity(homeless.len() + shed.len());
    for (partition, from) in homeless.into_iter().chain(shed) {
        let to = load
            .iter()
            .filter(|(node, count)| **count < target[*node])
            .min_by_key(|(node, count)| (**count, **node))
            .map(|(node, _)| *node)
            .expect("the targets add up to the partition count");
        *load.entry(to).or_default() += 1;
        placed.push((partition, from, to));
    }
    placed.sort();

    let mut assignment: Assignment = kept.values().flatten().map(|p| (*p, current[p])).collect();
    let exhausted = AssignmentError::GenerationsExhausted {
        last_issued: newest,
        moves: placed.len(),
    };
    let mut moves = Vec::with_capacity(placed.len());
    for (partition, from, to) in placed {
        newest = newest.next().ok_or_else(|| exhausted.clone())?;
        assignment.insert(
            partition,
            Owner {
                node: to,
                generation: newest,
            },
        );
        moves.push(Move {
            partition,
            from,
            to,
            generation: newest,
        });
    }
    Ok(Rebalance {
        assignment,
        moves,
        dropped,
        last_issued: newest,
    })
}

/// How many partitions each node owns (nodes owning none are absent).
pub fn owned_counts(assignment: &Assignment) -> BTreeMap<NodeId, usize> {
    let mut counts = BTreeMap::new();
    for owner in assignment.values() {
        *counts.entry(owner.node).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests;
