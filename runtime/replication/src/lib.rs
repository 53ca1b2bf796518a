//! The replicated state of a Quiver cluster: what one Raft group agrees on, and how each node
//! keeps it on disk.
//!
//! In cluster mode several `quiver node` processes form one Raft group (openraft 0.9, storage
//! API v2). Its log carries the job definitions, the partition assignments with their
//! generations, the checkpoints and the ingested events; Raft itself carries the membership.
//! This crate is everything below the network:
//!
//! - [`types`]: the openraft type configuration ([`TypeConfig`]), how nodes are reached
//!   ([`ClusterNode`]) and the [`GroupId`] every stored file carries;
//! - [`command`]: the replicated [`Command`]s and the state machine's [`Reply`]s;
//! - [`state`]: [`ClusterState`] and its pure, deterministic `apply`, which checks commands
//!   with `quiver-coordination`'s decisions (fencing, idempotent ingest, assignment);
//!
//! Uses openraft, tokio (to run file work off the runtime's threads), serde, postcard,
//! thiserror, sha2, tracing, `quiver-durable` (durable files and checksummed records) and
//! `quiver-coordination` (the decisions); no Arrow, no wasmtime: event batches are opaque
//! bytes here.

pub mod command;
pub mod state;
pub mod types;

pub use command::{Command, Epoch, Reply};
pub use state::ClusterState;
pub use types::{ClusterNode, GroupId, TypeConfig};
