//! The Raft type configuration and the identifiers every stored file carries.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Reply};

openraft::declare_raft_types!(
    /// The openraft types of Quiver's replicated group: the log carries [`Command`]s, the state
    /// machine answers with [`Reply`]s, and nodes are numbered by `u64` (the same number as
    /// [`quiver_coordination::NodeId`]) and described by a [`ClusterNode`].
    ///
    /// A snapshot travels as the bytes of its file ([`crate::snapshot`]) in memory: the state is
    /// bounded (the last checkpoint of each partition and the events after it) and is held in
    /// memory anyway, so a file handle would save nothing, and the bytes carry their own header
    /// and checksums so that the receiver checks them before installing.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = ClusterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's Raft id.
pub type RaftNodeId = u64;
/// A log entry of the group.
pub type Entry = openraft::Entry<TypeConfig>;
/// The id of a log entry: the leader's term and node, and the index.
pub type LogId = openraft::LogId<RaftNodeId>;
/// A node's vote: the term and the candidate it voted for, and whether it is committed.
pub type Vote = openraft::Vote<RaftNodeId>;
/// The membership as of a log id.
pub type StoredMembership = openraft::StoredMembership<RaftNodeId, ClusterNode>;
/// What a snapshot covers: last log id, membership, id.
pub type SnapshotMeta = openraft::SnapshotMeta<RaftNodeId, ClusterNode>;
/// The error openraft expects from storage.
pub type StorageError = openraft::StorageError<RaftNodeId>;

/// How other nodes reach a node of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterNode {
    /// `host:port` of the node's Raft (peer) gRPC endpoint.
    pub peer: String,
    /// `host:port` of its HTTP ingest and control API.
    pub api: String,
}

impl fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}, api {}", self.peer, self.api)
    }
}

pub use quiver_coordination::GroupId;
