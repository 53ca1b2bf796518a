//! The worker half of a Quiver node.
//!
//! Every node of a cluster is also a worker. This crate holds what a worker does with the
//! replicated state that `quiver-node` keeps:
//!
//! - [`ingest`]: the cluster's HTTP ingest. Any node takes `POST /ingest/<job>`; the door
//!   decodes the body with the job's schema (the first request fixes it), splits the rows by the
//!   job's key into its partitions (hash or range, as `[partition]` says), writes them as one
//!   `Ingest` command of Arrow IPC parts through the leader, and answers only once a majority
//!   holds them. A producer id and sequence number make a retried request apply once.
//! - [`feed`]: one partition's replicated events as a streaming source, read from the local
//!   replica of the state.
//! - [`store`]: the cluster checkpoint store: a checkpoint commits as a `Checkpoint` command
//!   carrying its generation, which the replicated state machine refuses from a worker that no
//!   longer owns the partition (fencing).
//! - [`runner`]: the partitions this node owns, each run by `quiver-stream` with that feed and
//!   store; a partition that moves away or is fenced is stopped, saying why.
//!
//! Uses `quiver-node` (the replicated state, writes, the lease), `quiver-stream`,
//! `quiver-exec`, `quiver-data`, `quiver-checkpoint` and `quiver-plugin-host`.

pub mod feed;
pub mod ingest;
pub mod runner;
pub mod store;

pub use runner::{Runner, RunnerConfig};
