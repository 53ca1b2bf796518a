//! Which checkpoint commits the replicated state accepts.
//!
//! A worker commits a partition's checkpoint with the generation under which the partition was
//! given to it. [`check_commit`] accepts it only from the current owner with the current
//! generation, so an owner that was replaced while it was paused, cut off or slow cannot
//! commit over its successor's progress, whatever its lease said.
//!
//! The generation is checked before the node: generations of a job never repeat (see
//! [`crate::assignment`]), so a claim with an older one is stale whoever sends it, and that is
//! the reason worth reporting.

use serde::{Deserialize, Serialize};

use crate::assignment::Owner;
use crate::ids::{Generation, NodeId, PartitionId};

/// A worker's claim to commit a checkpoint of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommitClaim {
    /// The partition whose checkpoint it commits.
    pub partition: PartitionId,
    /// The worker committing.
    pub node: NodeId,
    /// The generation under which it believes it owns the partition.
    pub generation: Generation,
}

/// Why a commit was refused. The worker must stop processing the partition. Serialisable, since
/// the replicated state machine returns it as its answer to a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Fenced {
    /// The job has no such partition (it never had, or the job shrank).
    #[error("{partition} is not assigned to anyone")]
    UnknownPartition {
        /// The partition claimed.
        partition: PartitionId,
    },
    /// The partition was reassigned after the claimant got it.
    #[error("{partition}: {claimed} is stale, {current} has taken over")]
    Stale {
        /// The partition claimed.
        partition: PartitionId,
        /// The generation of the claim.
        claimed: Generation,
        /// The current owner's generation.
        current: Generation,
    },
    /// A generation that was never issued for this partition: the claimant's state is not
    /// derived from this log.
    #[error("{partition}: {claimed} was never issued (current is {current})")]
    Unissued {
        /// The partition claimed.
        partition: PartitionId,
        /// The generation of the claim.
        claimed: Generation,
        /// The current owner's generation.
        current: Generation,
    },
    /// The generation is current but the claimant does not own the partition.
    #[error("{partition} is owned by {owner}, not {claimant}")]
    NotOwner {
        /// The partition claimed.
        partition: PartitionId,
        /// The worker that claimed it.
        claimant: NodeId,
        /// Its owner.
        owner: NodeId,
    },
}

/// Accepts `commit` only if `current` (the partition's owner in the replicated state, `None`
/// if it has none) is the claimant with the claimed generation.
pub fn check_commit(current: Option<&Owner>, commit: &CommitClaim) -> Result<(), Fenced> {
    let partition = commit.partition;
    let Some(owner) = current else {
        return Err(Fenced::UnknownPartition { partition });
    };
    let (claimed, current) = (commit.generation, owner.generation);
    if claimed < current {
        return Err(Fenced::Stale {
            partition,
            claimed,
            current,
        });
    }
    if claimed > current {
        return Err(Fenced::Unissued {
            partition,
            claimed,
            current,
        });
    }
    if commit.node != owner.node {
        return Err(Fenced::NotOwner {
            partition,
            claimant: commit.node,
            owner: owner.node,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every owner (or none) and every claim over nodes 0..3 and generations 0..4.
    #[test]
    fn only_the_current_owner_with_the_current_generation_commits() {
        let partition = PartitionId(7);
        let owners = (0..3u64).flat_map(|node| {
            (0..4u64).map(move |generation| Owner {
                node: NodeId(node),
                generation: Generation(generation),
            })
        });
        for current in std::iter::once(None).chain(owners.map(Some)) {
            for node in (0..3).map(NodeId) {
                for generation in (0..4).map(Generation) {
                    let claim = CommitClaim {
                        partition,
                        node,
                        generation,
                    };
                    let expected = match current {
                        None => Err(Fenced::UnknownPartition { partition }),
                        Some(o) if generation < o.generation => Err(Fenced::Stale {
                            partition,
                            claimed: generation,
                            current: o.generation,
                        }),
                        Some(o) if generation > o.generation => Err(Fenced::Unissued {
                            partition,
                            claimed: generation,
                            current: o.generation,
                        }),
                        Some(o) if node != o.node => Err(Fenced::NotOwner {
                            partition,
                            claimant: node,
                            owner: o.node,
                        }),
                        Some(_) => Ok(()),
                    };
                    assert_eq!(check_commit(current.as_ref(), &claim), expected);
                    assert_eq!(
                        expected.is_ok(),
                        current == Some(Owner { node, generation })
                    );
                }
            }
        }
    }

    #[test]
    fn a_stale_claim_names_both_generations() {
        let current = Owner {
            node: NodeId(2),
            generation: Generation(9),
        };
        let claim = CommitClaim {
            partition: PartitionId(3),
            node: NodeId(1),
            generation: Generation(4),
        };
        let refused = check_commit(Some(&current), &claim).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "partition 3: generation 4 is stale, generation 9 has taken over"
        );
    }
}
