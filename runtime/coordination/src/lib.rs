//! The decisions of cluster mode, as pure functions over plain data.
//!
//! In cluster mode several `quiver node` processes form one replicated group whose log holds
//! the membership, the job definitions, which worker owns which partition under which
//! generation, the checkpoints and the ingested events. Every node is also a worker. This
//! crate decides, and only decides; the node applies its answers to the replicated state and
//! acts on them. One module per concept:
//!
//! - [`assignment`]: which live worker owns each partition, rebalanced with the fewest moves;
//! - [`failure_detection`]: which workers the leader considers dead, from their heartbeats;
//! - [`election`]: when a follower that refused a candidate for its shorter log campaigns
//!   at once, so that a failover needs one election, not several;
//! - [`lease`]: when a cut-off worker stops writing on its own, and the timeouts that make
//!   that safe;
//! - [`fencing`]: which checkpoint commits are accepted (current owner, current generation);
//! - [`idempotency`]: retried ingest requests applied once, in bounded memory;
//! - [`purge`]: how much of the replicated log no partition needs any more;
//! - [`status`]: summaries for the status display.
//!
//! Nothing here does I/O, reads a clock or starts a thread: time is a number of milliseconds
//! of a monotonic clock that the caller passes in ([`Millis`]), so every rule is tested
//! exhaustively or against a reference model. Every data type derives serde, since it is
//! written to the replicated log. Uses std, serde and thiserror only: no Arrow, no tokio, no
//! wasmtime.
//!
//! # A worker dies
//!
//! ```
//! use std::collections::BTreeSet;
//!
//! use quiver_coordination::assignment::{rebalance, Assignment, AssignmentError};
//! use quiver_coordination::failure_detection::Heartbeats;
//! use quiver_coordination::fencing::{check_commit, CommitClaim, Fenced};
//! use quiver_coordination::lease::Timeouts;
//! use quiver_coordination::{Generation, NodeId};
//!
//! let timeouts = Timeouts::default(); // heartbeat 200 ms, lease 1 s, reassign after 1.5 s
//! let workers = [NodeId(1), NodeId(2), NodeId(3)];
//! // A new job's six partitions, two per worker; node 3 owns partitions 2 and 5.
//! let first = rebalance(&Assignment::new(), 6, &BTreeSet::from(workers), Generation(0))?;
//!
//! // The leader took office at 0 ms. Nodes 1 and 2 keep beating; node 3 fell silent at 100.
//! let mut beats = Heartbeats::new(0, workers);
//! beats.record(NodeId(1), 1_500);
//! beats.record(NodeId(2), 1_500);
//! beats.record(NodeId(3), 100);
//! let now = 1_600;
//! assert_eq!(beats.suspects(now, timeouts.reassign_after), [NodeId(3)]);
//!
//! // Only node 3's partitions move, one to each survivor, under new generations.
//! let live = beats.live(now, timeouts.reassign_after);
//! let next = rebalance(&first.assignment, 6, &live, first.last_issued)?;
//! let moved: Vec<(u32, u64)> = next.moves.iter().map(|m| (m.partition.0, m.to.0)).collect();
//! assert_eq!(moved, [(2, 1), (5, 2)]);
//! assert!(next.moves.iter().all(|m| m.generation > first.last_issued));
//!
//! // Node 3, if it is merely cut off, stopped writing when its lease ran out...
//! assert!(!timeouts.may_write(now, 100));
//! // ...and a checkpoint it sends late is refused.
//! let partition = next.moves[0].partition;
//! let late = CommitClaim {
//!     partition,
//!     node: NodeId(3),
//!     generation: first.assignment[&partition].generation,
//! };
//! let refused = check_commit(next.assignment.get(&partition), &late);
//! assert!(matches!(refused, Err(Fenced::Stale { .. })));
//! # Ok::<(), AssignmentError>(())
//! ```

pub mod assignment;
pub mod election;
pub mod failure_detection;
pub mod fencing;
pub mod idempotency;
pub mod ids;
pub mod lease;
pub mod purge;
pub mod status;

pub use ids::{Generation, GroupId, LogIndex, Millis, NodeId, PartitionId};
