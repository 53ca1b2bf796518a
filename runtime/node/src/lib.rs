//! A node of a Quiver cluster.
//!
//! Several `quiver node` processes form one Raft group (`quiver-replication`) that replicates
//! the membership, the jobs, the assignment of partitions to workers, the checkpoints and the
//! ingested events. A node here is:
//!
//! - [`node`]: its storage opened (strictly, or repairing damage when asked), its openraft
//!   instance, the transport server answering peers' Raft RPCs and the control calls
//!   (`status`, `join`, `client_write` — a write sent to a follower is forwarded to the
//!   leader), and the start of a cluster (the first node initialises it; later nodes join
//!   through any member, as learners promoted to voters);
//! - [`raft_network`]: openraft's network over `quiver-transport` (gRPC): a peer that is down
//!   is unreachable, a slow one times out after openraft's per-call time-to-live;
//! - `batching`: group commit at the leader — writes that arrive while entries are being
//!   replicated go out together as one entry;
//! - `leader_failover`: a follower that refuses a candidate for its shorter log campaigns at
//!   once (see `quiver_coordination::election`);
//! - [`timing`]: Raft's timings and the call time-outs;
//! - [`status`]: what `quiver cluster status` shows;
//! - [`worker_liveness`]: workers' heartbeats to the leader (in memory), the leader's loop that
//!   reassigns the partitions of silent workers, and a worker's lease.
//!
//! **Leader failover** is Raft's: followers that miss the leader's heartbeats for an election
//! timeout campaign, and a node grants its vote only to a candidate whose log is at least as
//! up to date as its own (last term, then last index), so a follower that missed committed
//! entries cannot become leader. A follower that refuses such a candidate campaigns itself at
//! once, in the next term (`leader_failover`), rather than waiting for its own timer and
//! colliding with the candidate's term. An old leader that comes back learns the higher term
//! from the first message it gets, becomes a follower, and its uncommitted entries are
//! overwritten.
//! **Follower catch-up** is Raft's too: the leader sends a returning follower every entry after
//! the last one it matches, or its snapshot when those entries were purged.
//!
//! Uses `quiver-replication`, `quiver-transport`, `quiver-coordination`, openraft and tokio; no
//! Arrow, no wasmtime.

mod batching;
mod leader_failover;
pub mod node;
pub mod raft_network;
pub mod status;
pub mod timing;
pub mod worker_liveness;

pub use node::{
    cluster_status, remove_node, write, Node, NodeConfig, NodeError, WriteError, Writer,
};
pub use status::{
    CheckpointStatus, JobStatus, MemberStatus, NodeStatus, PartitionStatus, WorkerStatus,
};
pub use timing::Timing;
