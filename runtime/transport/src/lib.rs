//! The transport of cluster mode: how `quiver node` processes talk to each other, and how
//! clients and workers talk to a node, over gRPC.
//!
//! The wire format is `proto/quiver.proto`; its code is generated at build time by protox and
//! tonic-prost-build, with cargo alone (no `protoc`). Every payload is opaque bytes, and every
//! Raft message names its group ([`GroupId`]).

#[allow(dead_code)]
mod dial;
pub mod error;

#[allow(dead_code)]
mod proto {
    //! The messages and services generated from `proto/quiver.proto`.
    tonic::include_proto!("quiver.transport.v1");
}

use std::fmt;

pub use error::{HandlerError, Rpc, ServeError, TransportError};

/// A Raft group, named on every Raft message and control call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GroupId(pub u32);

impl GroupId {
    /// The first group: the only one while the cluster runs a single Raft group.
    pub const FIRST: GroupId = GroupId(0);
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {}", self.0)
    }
}

/// The names of the usual control calls. The transport does not interpret them; they are
/// here so that the node and its callers agree on the spelling.
pub mod method {
    /// A client's write, forwarded by a node that is not the leader to the leader.
    pub const CLIENT_WRITE: &str = "client_write";
    /// A worker's periodic heartbeat to the leader.
    pub const HEARTBEAT: &str = "heartbeat";
    /// The cluster's status, for the status display.
    pub const STATUS: &str = "status";
}
