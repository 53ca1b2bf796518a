//! The client side: [`PeerClient`], one per peer address, with its two connections, a
//! timeout on every call, and errors that tell an unreachable peer from a slow one and from
//! one that answered with an error.

use std::error::Error as _;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, TimeoutExpired};

use crate::dial::{lock, Backoff, DialError, Dialer};
use crate::error::{Rpc, TransportError};
use crate::proto::control_client::ControlClient;
use crate::proto::peer_client::PeerClient as PeerStub;
use crate::proto::{ControlRequest, RaftReply, RaftRequest, SnapshotChunk};
use crate::GroupId;

/// Timeouts, backoff and limits of a [`PeerClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The timeout of a call made without one (1 s). openraft passes its own per RPC.
    pub default_timeout: Duration,
    /// How long a TCP connect may take before the peer counts as unreachable (1 s).
    pub connect_timeout: Duration,
    /// The first backoff window after a failed connect (100 ms).
    pub backoff_min: Duration,
    /// The largest backoff window (2 s); each failure in a row doubles the window up to this.
    pub backoff_max: Duration,
    /// The largest reply accepted, in bytes (64 MiB).
    pub max_message_size: usize,
    /// The size of the pieces a snapshot is sent in (1 MiB). Must stay under the receiving
    /// server's [`ServerConfig::max_message_size`](crate::ServerConfig::max_message_size).
    pub snapshot_chunk_size: usize,
    /// How often a connection is pinged, even idle, so that a peer machine that vanished
    /// without closing its sockets is noticed (5 s; the ping's answer may take as long).
    pub keepalive_interval: Duration,
    /// The address connections are made from (`None`: the system's choice). A node sets the
    /// address it listens on, so that its peers (and anything between them) see every
    /// connection of one node come from one address.
    pub local_ip: Option<std::net::IpAddr>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            default_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_message_size: 64 << 20,
            snapshot_chunk_size: 1 << 20,
            keepalive_interval: Duration::from_secs(5),
            local_ip: None,
        }
    }
}

/// The calls to one peer, by address (`host:port`; a name is resolved at every connect).
///
/// Cheap to clone; the clones share the connections. Nothing is dialed until the first call.
/// Two connections are kept:
///
/// - the **Raft** connection carries `AppendEntries` and `Vote` only, so heartbeats are never
///   queued behind bulk data on the same TCP stream;
/// - the **bulk** connection carries snapshots and control calls.
///
/// Every call has a timeout: the one passed in, or [`ClientConfig::default_timeout`]. It is
/// also sent to the peer (`grpc-timeout`), which then stops working on a call nobody awaits.
///
/// A peer that is down is reported as [`TransportError::Unreachable`]. After a failed connect
/// (or a connection that broke), calls on either connection that would need a new one are
/// refused at once, without dialing, for a backoff window that doubles from
/// [`ClientConfig::backoff_min`] to [`ClientConfig::backoff_max`]; the first answer from the
/// peer resets it. A connection that is up is never held back by the window.
#[derive(Clone)]
pub struct PeerClient {
    inner: Arc<Inner>,
}

struct Inner {
    addr: Arc<str>,
    endpoint: Endpoint,
    config: ClientConfig,
    backoff: Arc<Mutex<Backoff>>,
    /// Made at the first call, inside the caller's runtime (a channel spawns a task).
    channels: OnceLock<Channels>,
}

struct Channels {
    raft: Channel,
    bulk: Channel,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("peer", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    /// A client for the peer at `addr` (`host:port`). Checks the address; does not connect.
    pub fn new(addr: impl Into<String>, config: ClientConfig) -> Result<Self, TransportError> {
        let addr: String = addr.into();
        let invalid = |reason: String| TransportError::InvalidAddress {
            addr: addr.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|err| invalid(err.to_string()))?;
        let uri = endpoint.uri();
        if uri.port_u16().is_none() || uri.path() != "/" || uri.query().is_some() {
            return Err(invalid("expected host:port".into()));
        }
        let endpoint = endpoint
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_interval)
            .keep_alive_while_idle(true);
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        Ok(PeerClient {
            inner: Arc::new(Inner {
                addr: addr.into(),
                endpoint,
                config,
                backoff: Arc::new(Mutex::new(backoff)),
                channels: OnceLock::new(),
            }),
        })
    }

    /// The peer's address, as given.
    pub fn peer(&self) -> &str {
        &self.inner.addr
    }

    /// Sends an AppendEntries request for `group` on the Raft connection; returns the reply's
    /// payload.
    pub async fn append_entries(
        &self,
        group: GroupId,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, TransportError> {
        self.raft_call(
            Rpc::AppendEntries,
            group,
            payload,
            timeout,
            |mut stub, r| async move { stub.append_entries(r).await },
        )
        .await
    }

    /// Sends a Vote request for `group` on the Raft connection; returns the reply's payload.
    pub async fn vote(
        &self,
        group: GroupId,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, TransportError> {
        self.raft_call(
            Rpc::Vote,
            group,
            payload,
            timeout,
            |mut stub, r| async move { stub.vote(r).await },
        )
        .await
    }

    /// One request of the Raft connection, sent by `send` on its stub.
    async fn raft_call<F, Fut>(
        &self,
        rpc: Rpc,
        group: GroupId,
        payload: Bytes,
        timeout: Option<Duration>,
        send: F,
    ) -> Result<Bytes, TransportError>
    where
        F: FnOnce(PeerStub<Channel>, Request<RaftRequest>) -> Fut,
        Fut: Future<Output = Result<Response<RaftReply>, Status>>,
    {
        let after = self.timeout(timeout);
        let request = with_timeout(
            RaftRequest {
                group: group.0,
                payload,
            },
            after,
        );
        let reply = self.finish(rpc, after, send(self.raft(), request)).await?;
        Ok(reply.payload)
    }

    /// Sends a whole snapshot for `group` on the bulk connection, in chunks of
    /// [`ClientConfig::snapshot_chunk_size`]; returns the reply's payload. The timeout covers
    /// the whole transfer, so give one that fits the size.
    pub async fn install_snapshot(
        &self,
        group: GroupId,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, TransportError> {
        let after = self.timeout(timeout);
        let mut stub = PeerStub::new(self.channels().bulk.clone())
            .max_decoding_message_size(self.inner.config.max_message_size);
        let chunks = chunks(group, payload, self.inner.config.snapshot_chunk_size);
        let request = with_timeout(tokio_stream::iter(chunks), after);
        let reply = self
            .finish(Rpc::InstallSnapshot, after, stub.install_snapshot(request))
            .await?;
        Ok(reply.payload)
    }

    /// Makes the control call `method` about `group` on the bulk connection; returns the
    /// reply's payload.
    pub async fn call(
        &self,
        method: &str,
        group: GroupId,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, TransportError> {
        let after = self.timeout(timeout);
        let mut stub = ControlClient::new(self.channels().bulk.clone())
            .max_decoding_message_size(self.inner.config.max_message_size);
        let request = ControlRequest {
            method: method.to_owned(),
            group: group.0,
            payload,
        };
        let call = Rpc::Control(method.to_owned());
        let reply = self
            .finish(call, after, stub.call(with_timeout(request, after)))
            .await?;
        Ok(reply.payload)
    }

    fn timeout(&self, timeout: Option<Duration>) -> Duration {
        timeout.unwrap_or(self.inner.config.default_timeout)
    }

    fn channels(&self) -> &Channels {
        self.inner.channels.get_or_init(|| {
            let lane = || {
                let dialer = Dialer {
                    addr: self.inner.addr.clone(),
                    connect_timeout: self.inner.config.connect_timeout,
                    backoff: self.inner.backoff.clone(),
                    local_ip: self.inner.config.local_ip,
                };
                // Lazy: a failed dial fails the calls waiting for it, not the channel, and
                // the next call dials again (or is refused by the backoff).
                self.inner.endpoint.connect_with_connector_lazy(dialer)
            };
            Channels {
                raft: lane(),
                bulk: lane(),
            }
        })
    }

    fn raft(&self) -> PeerStub<Channel> {
        PeerStub::new(self.channels().raft.clone())
            .max_decoding_message_size(self.inner.config.max_message_size)
    }

    /// Awaits a call within its timeout and sorts out how it failed.
    async fn finish<T>(
        &self,
        call: Rpc,
        after: Duration,
        response: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, TransportError> {
        let peer = || self.inner.addr.to_string();
        let status = match tokio::time::timeout(after, response).await {
            Ok(Ok(response)) => {
                lock(&self.inner.backoff).succeeded();
                return Ok(response.into_inner());
            }
            Ok(Err(status)) => status,
            Err(_) => {
                return Err(TransportError::Timeout {
                    peer: peer(),
                    call,
                    after,
                })
            }
        };
        if find_source::<TimeoutExpired>(&status).is_some() {
            // tonic's own timer for the deadline sent with the call rang before ours.
            return Err(TransportError::Timeout {
                peer: peer(),
                call,
                after,
            });
        }
        if let Some(dial) = find_source::<DialError>(&status) {
            // The dialer has already recorded the failure in the backoff.
            let reason = dial.to_string();
            return Err(TransportError::Unreachable {
                peer: peer(),
                reason,
            });
        }
        if status.source().is_some() {
            // A status made on this side from a transport error: the connection failed or
            // broke. The peer's own statuses come from the wire and have no source.
            let reason = format!("connection failed: {}", error_chain(&status));
            lock(&self.inner.backoff).failed(Instant::now(), reason.clone());
            return Err(TransportError::Unreachable {
                peer: peer(),
                reason,
            });
        }
        if status.code() == Code::Unavailable {
            // The peer says it cannot serve (it is shutting down): as good as unreachable.
            let reason = format!("the peer is unavailable: {}", status.message());
            lock(&self.inner.backoff).failed(Instant::now(), reason.clone());
            return Err(TransportError::Unreachable {
                peer: peer(),
                reason,
            });
        }
        lock(&self.inner.backoff).succeeded();
        match status.code() {
            // The peer gave up at the deadline it was sent (tonic answers CANCELLED then).
            Code::DeadlineExceeded | Code::Cancelled => Err(TransportError::Timeout {
                peer: peer(),
                call,
                after,
            }),
            // A handler's error: its message as it is.
            Code::Internal => Err(TransportError::Remote {
                peer: peer(),
                call,
                message: status.message().to_owned(),
            }),
            code => Err(TransportError::Remote {
                peer: peer(),
                call,
                message: format!("{}: {}", code.description(), status.message()),
            }),
        }
    }
}

fn with_timeout<T>(message: T, after: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(after);
    request
}

/// Splits a snapshot payload into chunks without copying; the first names the group and the
/// total length. An empty payload is one empty chunk, so the receiver still learns the group.
fn chunks(group: GroupId, payload: Bytes, chunk_size: usize) -> Vec<SnapshotChunk> {
    let chunk_size = chunk_size.max(1);
    let total_len = payload.len() as u64;
    let mut chunks = Vec::with_capacity(payload.len() / chunk_size + 1);
    let mut start = 0;
    loop {
        let end = payload.len().min(start + chunk_size);
        let first = start == 0;
        chunks.push(SnapshotChunk {
            group: if first { group.0 } else { 0 },
            total_len: if first { total_len } else { 0 },
            data: payload.slice(start..end),
        });
        start = end;
        if start == payload.len() {
            return chunks;
        }
    }
}

/// The first error of type `E` among the status's sources.
fn find_source<E: std::error::Error + 'static>(status: &Status) -> Option<&E> {
    let mut source = status.source();
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        source = err.source();
    }
    None
}

/// The status's message and its sources', skipping any already contained in the previous one.
fn error_chain(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = status.source();
    while let Some(err) = source {
        let message = err.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_chunks_cover_the_payload_in_order_and_the_first_names_group_and_length() {
        let payload = Bytes::from((0..=255u8).cycle().take(2500).collect::<Vec<u8>>());
        let chunks = chunks(GroupId(3), payload.clone(), 1000);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.data.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        assert_eq!((chunks[0].group, chunks[0].total_len), (3, 2500));
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
        assert_eq!(joined, payload);
    }

    #[test]
    fn an_empty_snapshot_is_one_empty_chunk() {
        let chunks = chunks(GroupId(1), Bytes::new(), 1000);
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].group, chunks[0].total_len), (1, 0));
    }

    #[test]
    fn an_address_without_a_port_is_refused() {
        for addr in ["localhost", "127.0.0.1:7000/path", "not an address:1"] {
            let err = PeerClient::new(addr, ClientConfig::default()).unwrap_err();
            assert!(
                matches!(err, TransportError::InvalidAddress { .. }),
                "{addr}: {err}"
            );
        }
        assert!(PeerClient::new("node-2.cluster:7000", ClientConfig::default()).is_ok());
    }
}
