//! The plain identifiers and quantities every decision is made over.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node of the cluster. Every node is also a worker, so the same id names both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// One partition of a job's input; a job with `n` partitions has ids `0..n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u32);

/// The fencing token of one assignment of a partition to a worker. Generations of a job are
/// issued by one counter and never repeat, so a higher one always means a later assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation after this one, or `None` once the counter is exhausted.
    pub fn next(self) -> Option<Generation> {
        self.0.checked_add(1).map(Generation)
    }
}

/// A reading of a monotonic clock in milliseconds, passed in by the caller: nothing in this
/// crate reads a clock. Only differences between readings of the same clock mean anything.
pub type Millis = u64;

/// An index into the replicated log.
pub type LogIndex = u64;

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition {}", self.0)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "generation {}", self.0)
    }
}

/// A Raft group. Today a cluster is one group, [`GroupId::FIRST`]; every stored file and every
/// message between nodes names its group, so that the events can later be spread over several
/// groups (one per range of partitions) without a change of format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct GroupId(pub u32);

impl GroupId {
    /// The one group of today's clusters.
    pub const FIRST: GroupId = GroupId(0);

    /// The name of the group's directory under a node's data directory: `group-<id>`.
    pub fn dir_name(self) -> String {
        format!("group-{}", self.0)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {}", self.0)
    }
}
