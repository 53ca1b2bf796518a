//! The decisions of cluster mode, as pure functions over plain data.
//!
//! In cluster mode several `quiver node` processes form one replicated group whose log holds
//! the membership, the job definitions, which worker owns which partition under which
//! generation, the checkpoints and the ingested events. Every node is also a worker. This
//! crate decides, and only decides; the node applies its answers to the replicated state and
//! acts on them. One module per concept:
//!
//! - [`assignment`]: which live worker owns each partition, rebalanced with the fewest moves;
//! - [`fencing`]: which checkpoint commits are accepted (current owner, current generation).
//!
//! Nothing here does I/O, reads a clock or starts a thread: time is a number of milliseconds
//! of a monotonic clock that the caller passes in ([`Millis`]), so every rule is tested
//! exhaustively or against a reference model. Every data type derives serde, since it is
//! written to the replicated log. Uses std, serde and thiserror only: no Arrow, no tokio, no
//! wasmtime.

pub mod assignment;
pub mod fencing;
pub mod ids;

pub use ids::{Generation, LogIndex, Millis, NodeId, PartitionId};
