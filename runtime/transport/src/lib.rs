//! The transport of cluster mode: how `quiver node` processes talk to each other, and how
//! clients and workers talk to a node, over gRPC.
//!
//! The nodes form a Raft group; this crate carries its messages and the control calls
//! around it, and nothing else: every payload is bytes that the node encodes and decodes
//! (openraft's requests and responses with serde, its own control messages likewise). Every
//! Raft message names its group ([`GroupId`]), so that the events can later be spread over
//! several Raft groups without a change of format; today there is one, [`GroupId::FIRST`].
//!
//! The wire format is `proto/quiver.proto`, two services:
//!
//! - `Peer`, node to node: `AppendEntries`, `Vote` and `InstallSnapshot`. A snapshot travels
//!   as a client-streamed sequence of chunks (1 MiB by default) that the receiver puts back
//!   together, so tens of megabytes pass without raising the per-message limit; that limit
//!   is raised anyway, explicitly, to 64 MiB ([`ServerConfig::max_message_size`]), because a
//!   batch of log entries carrying events can exceed tonic's default of 4 MiB.
//! - `Control`, from clients, workers and nodes to a node: one generic `Call` named by a
//!   method string ([`method`] lists the usual ones: forwarding a client write to the
//!   leader, worker heartbeats, cluster status). The node's vocabulary grows without a change
//!   of format, and the transport never needs to know what a call means.
//!
//! How the modules fit:
//!
//! - [`server`]: the traits the node implements ([`PeerHandler`], [`ControlHandler`]) and
//!   [`serve`], which answers both services on one port and returns a [`ServerHandle`] for
//!   the bound address and a graceful shutdown;
//! - [`client`]: [`PeerClient`], one per peer, with Raft traffic on a connection of its own,
//!   a timeout on every call, and a backoff that keeps a node from redialing a dead peer in
//!   a tight loop;
//! - `dial` (private): the connector behind every connection, and its backoff;
//! - [`error`]: [`TransportError`] tells an unreachable peer from a timeout and from the
//!   peer's own error, each naming the peer and the call.
//!
//! The code for the messages and services is generated at build time from the `.proto` file
//! by protox and tonic-prost-build, with cargo alone (no `protoc`). Uses tonic, prost, tokio,
//! thiserror and tracing; no openraft, no Arrow, no wasmtime.
//!
//! # Adding Arrow Flight later
//!
//! The exchange of Arrow batches between workers would be an Arrow Flight service (the
//! arrow-flight 60 crate, built on the same tonic 0.14) added as a third service to the
//! router that [`serve`] builds, next to `Peer` and `Control`, so each node still listens on
//! one port; its handler would be a `FlightService` implementation supplied by a crate that
//! may use Arrow, passed in like the other handlers, with message limits of its own.
//! Streams of record batches are bulk traffic: on the client side they would go on the bulk
//! connection of [`PeerClient`] (or a third one of their own), never on the Raft
//! connection, and would share the peer's dialer and backoff so that an unreachable worker
//! is reported and backed off from the same way.
//!
//! # A call and its answer
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use quiver_transport::{
//!     serve, ClientConfig, ControlCall, ControlHandler, GroupId, HandlerError, HandlerResult,
//!     PeerClient, PeerHandler, ServerConfig, TransportError,
//! };
//!
//! struct Node;
//!
//! impl PeerHandler for Node {
//!     async fn append_entries(&self, _group: GroupId, payload: Bytes) -> HandlerResult {
//!         Ok(payload) // a real node decodes the openraft request and answers it
//!     }
//!     async fn vote(&self, _group: GroupId, payload: Bytes) -> HandlerResult {
//!         Ok(payload)
//!     }
//!     async fn install_snapshot(&self, _group: GroupId, _payload: Bytes) -> HandlerResult {
//!         Err(HandlerError::new("no snapshots here"))
//!     }
//! }
//!
//! impl ControlHandler for Node {
//!     async fn call(&self, call: ControlCall) -> HandlerResult {
//!         Err(HandlerError::new(format!("unknown method `{}`", call.method)))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Arc::new(Node);
//! let server = serve(
//!     "127.0.0.1:0".parse()?,
//!     node.clone(),
//!     node,
//!     ServerConfig::default(),
//! )
//! .await?;
//!
//! let peer = PeerClient::new(server.local_addr().to_string(), ClientConfig::default())?;
//! let reply = peer
//!     .append_entries(GroupId::FIRST, Bytes::from_static(b"entries"), None)
//!     .await?;
//! assert_eq!(reply, "entries");
//!
//! let err = peer
//!     .call("launch", GroupId::FIRST, Bytes::new(), Some(Duration::from_secs(1)))
//!     .await
//!     .unwrap_err();
//! assert!(matches!(err, TransportError::Remote { message, .. } if message == "unknown method `launch`"));
//!
//! server.shutdown(Duration::from_secs(1)).await?;
//! # Ok(())
//! # }
//! ```

pub mod client;
mod dial;
pub mod error;
pub mod server;

mod proto {
    //! The messages and services generated from `proto/quiver.proto`.
    tonic::include_proto!("quiver.transport.v1");
}

pub use client::{ClientConfig, PeerClient};
pub use error::{HandlerError, Rpc, ServeError, TransportError};
pub use server::{
    serve, serve_listener, ControlCall, ControlHandler, HandlerResult, PeerHandler, ServerConfig,
    ServerHandle,
};

pub use quiver_coordination::GroupId;

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
