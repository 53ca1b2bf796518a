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
//! - [`log_store`]: the durable, checksummed, segmented log and the vote ([`LogStore`]);
//! - [`state_machine`]: the state machine with durable snapshots ([`StateMachineStore`]),
//!   whose file format is in [`snapshot`];
//! - [`group`]: both opened together for one group, strictly or repairing damage;
//! - [`format`](mod@format), [`directory`], [`error`]: the file header, the directory handling (lock,
//!   leftovers, damaged files moved aside) and the errors, shared by both stores.
//!
//! The node builds an `openraft::Raft<TypeConfig>` from a [`group::GroupStorage`] and its own
//! network. Every write says in a comment where its durability point is; every file that was
//! once durable and is found damaged is reported with the file and offset, never used.
//!
//! Uses openraft, tokio (to run file work off the runtime's threads), serde, postcard,
//! thiserror, sha2, tracing, `quiver-durable` (durable files and checksummed records) and
//! `quiver-coordination` (the decisions); no Arrow, no wasmtime: event batches are opaque
//! bytes here.

mod bytes;
pub mod command;
pub mod directory;
pub mod error;
pub mod format;
pub mod group;
pub mod log_store;
pub mod snapshot;
pub mod state;
pub mod state_machine;
pub mod types;

pub use command::{Command, Epoch, Reply};
pub use directory::Repair;
pub use error::{Damage, StoreError};
pub use log_store::{LogOptions, LogReader, LogStore};
pub use state::ClusterState;
pub use state_machine::{StateMachineStore, StateReader};
pub use types::{ClusterNode, GroupId, TypeConfig};
