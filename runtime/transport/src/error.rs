//! What can go wrong: on a call ([`TransportError`]), in a handler ([`HandlerError`]), and
//! while serving ([`ServeError`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Which call failed, for error messages and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rpc {
    /// `Peer.AppendEntries`.
    AppendEntries,
    /// `Peer.Vote`.
    Vote,
    /// `Peer.InstallSnapshot`.
    InstallSnapshot,
    /// `Control.Call` with this method.
    Control(String),
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rpc::AppendEntries => f.write_str("AppendEntries"),
            Rpc::Vote => f.write_str("Vote"),
            Rpc::InstallSnapshot => f.write_str("InstallSnapshot"),
            Rpc::Control(method) => write!(f, "control call `{method}`"),
        }
    }
}

/// A call to a peer that did not give an answer. The three main cases call for different
/// reactions: an unreachable peer is skipped until later, a timeout may be retried, a remote
/// error is the peer's verdict.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer address cannot be used to build a connection.
    #[error("invalid peer address `{addr}`: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection to the peer: refused, name not resolved, connect timeout, the connection
    /// broke, the peer answered that it is shutting down, or a recent such failure whose
    /// backoff window is still open (then no dial was attempted; the reason says so). A call
    /// whose connection broke while it was in flight may or may not have been received.
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer's address.
        peer: String,
        /// What failed.
        reason: String,
    },
    /// No answer within the call's timeout. The peer may still act on the request.
    #[error("{call} to {peer} timed out after {after:?}")]
    Timeout {
        /// The peer's address.
        peer: String,
        /// The call.
        call: Rpc,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The peer answered with an error: its handler failed, or it refused the request (too
    /// big, unknown call).
    #[error("{call} failed on {peer}: {message}")]
    Remote {
        /// The peer's address.
        peer: String,
        /// The call.
        call: Rpc,
        /// The peer's message: the handler's own message when the handler failed.
        message: String,
    },
}

impl TransportError {
    /// The address of the peer the call was for.
    pub fn peer(&self) -> &str {
        match self {
            TransportError::InvalidAddress { addr: peer, .. }
            | TransportError::Unreachable { peer, .. }
            | TransportError::Timeout { peer, .. }
            | TransportError::Remote { peer, .. } => peer,
        }
    }
}

/// A handler's failure. It reaches the caller as [`TransportError::Remote`] with this message,
/// so the message should say what happened in terms the calling node can log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What went wrong.
    pub message: String,
}

impl HandlerError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
        }
    }
}

/// The server could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The bound socket's address could not be read.
    #[error("cannot read the address of the listening socket: {source}")]
    LocalAddr {
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the server on {addr} failed: {source}")]
    Failed {
        /// The address it listened on.
        addr: SocketAddr,
        /// tonic's error.
        source: tonic::transport::Error,
    },
    /// The server's task panicked or was cancelled.
    #[error("the server on {addr} stopped abnormally: {reason}")]
    Aborted {
        /// The address it listened on.
        addr: SocketAddr,
        /// The task's failure.
        reason: String,
    },
}
