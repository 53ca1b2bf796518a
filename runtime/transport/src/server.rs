//! The server side: the traits a node implements to answer its peers and clients, and
//! [`serve`], which runs them on a listening socket until [`ServerHandle::shutdown`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{HandlerError, ServeError};
use crate::proto::control_server::{Control, ControlServer};
use crate::proto::peer_server::{Peer, PeerServer};
use crate::proto::{ControlReply, ControlRequest, RaftReply, RaftRequest, SnapshotChunk};
use crate::GroupId;

/// What a handler returns: the encoded answer, or a failure sent back to the caller.
pub type HandlerResult = Result<Bytes, HandlerError>;

/// Answers the Raft traffic of a node's peers. The node implements it by decoding the payload
/// into openraft's request, handing it to the Raft instance of the group, and encoding the
/// response. Each method may be written as an `async fn`, as long as its future is `Send`.
pub trait PeerHandler: Send + Sync + 'static {
    /// An AppendEntries request (replication or heartbeat) for `group`.
    fn append_entries(
        &self,
        group: GroupId,
        payload: Bytes,
    ) -> impl Future<Output = HandlerResult> + Send;

    /// A Vote request for `group`.
    fn vote(&self, group: GroupId, payload: Bytes) -> impl Future<Output = HandlerResult> + Send;

    /// A whole snapshot for `group`, already put back together from its chunks.
    fn install_snapshot(
        &self,
        group: GroupId,
        payload: Bytes,
    ) -> impl Future<Output = HandlerResult> + Send;
}

/// One control call as the node receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlCall {
    /// What to do; the node defines the names (see [`method`](crate::method) for the usual ones).
    pub method: String,
    /// The Raft group the call is about; [`GroupId::FIRST`] when it is about none in particular.
    pub group: GroupId,
    /// The encoded arguments.
    pub payload: Bytes,
}

/// Answers control calls from clients, workers and other nodes: forwarded writes, heartbeats,
/// status. An unknown method should be answered with a [`HandlerError`] that names it.
pub trait ControlHandler: Send + Sync + 'static {
    /// One control call.
    fn call(&self, call: ControlCall) -> impl Future<Output = HandlerResult> + Send;
}

/// Limits and timers of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The largest AppendEntries, Vote or control request accepted, in bytes (64 MiB). tonic's
    /// own default of 4 MiB is too small for a batch of log entries carrying events.
    pub max_message_size: usize,
    /// The largest snapshot accepted, in bytes (1 GiB). A snapshot arrives in chunks, so this
    /// is not limited by `max_message_size`, but it is put back together in memory.
    pub max_snapshot_size: usize,
    /// How often an idle connection is pinged, so that a client that vanished without closing
    /// its socket is noticed (10 s).
    pub keepalive_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_size: 64 << 20,
            max_snapshot_size: 1 << 30,
            keepalive_interval: Duration::from_secs(10),
        }
    }
}

/// Binds `addr` and serves the `Peer` and `Control` services on it; see [`serve_listener`].
/// A port of 0 picks a free port: [`ServerHandle::local_addr`] tells which.
pub async fn serve<P: PeerHandler, C: ControlHandler>(
    addr: SocketAddr,
    peer: Arc<P>,
    control: Arc<C>,
    config: ServerConfig,
) -> Result<ServerHandle, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_listener(listener, peer, control, config)
}

/// Serves the `Peer` and `Control` services on an already bound listener, on a task of its
/// own, until [`ServerHandle::shutdown`] (or until the handle is dropped). Must be called
/// inside a Tokio runtime.
///
/// A handler's [`HandlerError`] is sent back as a gRPC `INTERNAL` status carrying its message.
pub fn serve_listener<P: PeerHandler, C: ControlHandler>(
    listener: TcpListener,
    peer: Arc<P>,
    control: Arc<C>,
    config: ServerConfig,
) -> Result<ServerHandle, ServeError> {
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::LocalAddr { source })?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let cancel = Cancel(cancel_rx);

    let peer = PeerServer::new(PeerService {
        handler: peer,
        cancel: cancel.clone(),
        max_snapshot_size: config.max_snapshot_size,
    })
    .max_decoding_message_size(config.max_message_size)
    .max_encoding_message_size(config.max_message_size);
    let control = ControlServer::new(ControlService {
        handler: control,
        cancel,
    })
    .max_decoding_message_size(config.max_message_size)
    .max_encoding_message_size(config.max_message_size);

    // More services (Arrow Flight for the data exchange between workers) are added here, on
    // the same router and port; see the crate documentation.
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .add_service(peer)
        .add_service(control);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        // The handle's drop also closes the channel: stop then too.
        let _ = stop_rx.await;
    }));
    tracing::debug!(%local_addr, "serving Peer and Control");
    Ok(ServerHandle {
        local_addr,
        stop: Some(stop_tx),
        cancel: cancel_tx,
        task: Some(task),
    })
}

/// A running server. Dropping it stops accepting connections and lets the calls in flight
/// finish; [`shutdown`](ServerHandle::shutdown) also waits for them, for a bounded time.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    cancel: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl ServerHandle {
    /// The address the server listens on, with the port the system chose if 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server: closes the listening socket at once (so the port may be bound again
    /// when this returns), lets the calls in flight finish for up to `grace`, then abandons
    /// the ones still running (their callers get an `UNAVAILABLE` status, which
    /// [`PeerClient`](crate::PeerClient) reports as unreachable) and waits up to `grace` again
    /// for the connections to close.
    pub async fn shutdown(mut self, grace: Duration) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        let joined = match tokio::time::timeout(grace, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::debug!(addr = %self.local_addr, "abandoning the calls still in flight");
                let _ = self.cancel.send(true);
                match tokio::time::timeout(grace, &mut task).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        // The listener is already closed; only stubborn connections remain.
                        task.abort();
                        tracing::warn!(addr = %self.local_addr, "connections still open after shutdown");
                        return Ok(());
                    }
                }
            }
        };
        let addr = self.local_addr;
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ServeError::Failed { addr, source }),
            Err(join) => Err(ServeError::Aborted {
                addr,
                reason: join.to_string(),
            }),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Fires when [`ServerHandle::shutdown`] gives up on the calls in flight.
#[derive(Clone)]
struct Cancel(watch::Receiver<bool>);

impl Cancel {
    /// Runs the work of a call unless the server abandons it first.
    async fn run<T>(
        &self,
        call: &str,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let mut cancel = self.0.clone();
        let cancelled = async move {
            if cancel.wait_for(|c| *c).await.is_err() {
                // The handle is gone without cancelling: never cancel.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = work => result,
            () = cancelled => Err(Status::unavailable(format!(
                "{call} abandoned: the server is shutting down"
            ))),
        }
    }
}

/// Awaits a handler, turning its error into the status sent back.
async fn answer(
    call: &str,
    group: GroupId,
    handler: impl Future<Output = HandlerResult>,
) -> Result<Bytes, Status> {
    handler.await.map_err(|err| {
        tracing::debug!(call, %group, "handler failed: {err}");
        Status::internal(err.message)
    })
}

struct PeerService<H> {
    handler: Arc<H>,
    cancel: Cancel,
    max_snapshot_size: usize,
}

#[tonic::async_trait]
impl<H: PeerHandler> Peer for PeerService<H> {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let RaftRequest { group, payload } = request.into_inner();
        let group = GroupId(group);
        let handler = self.handler.append_entries(group, payload);
        let work = answer("AppendEntries", group, handler);
        let payload = self.cancel.run("AppendEntries", work).await?;
        Ok(Response::new(RaftReply { payload }))
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let RaftRequest { group, payload } = request.into_inner();
        let group = GroupId(group);
        let work = answer("Vote", group, self.handler.vote(group, payload));
        let payload = self.cancel.run("Vote", work).await?;
        Ok(Response::new(RaftReply { payload }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let stream = request.into_inner();
        let work = async {
            let (group, payload) = receive_snapshot(stream, self.max_snapshot_size).await?;
            let handler = self.handler.install_snapshot(group, payload);
            answer("InstallSnapshot", group, handler).await
        };
        let payload = self.cancel.run("InstallSnapshot", work).await?;
        Ok(Response::new(RaftReply { payload }))
    }
}

/// Puts a snapshot back together from its chunks, checking it against the announced length.
async fn receive_snapshot(
    mut stream: Streaming<SnapshotChunk>,
    max_size: usize,
) -> Result<(GroupId, Bytes), Status> {
    let Some(first) = stream.message().await? else {
        return Err(Status::invalid_argument("InstallSnapshot carried no chunk"));
    };
    let group = GroupId(first.group);
    let total = usize::try_from(first.total_len).unwrap_or(usize::MAX);
    if total > max_size {
        return Err(Status::resource_exhausted(format!(
            "snapshot for {group} of {} bytes is over this node's limit of {max_size} bytes",
            first.total_len
        )));
    }
    if first.data.len() == total {
        // The whole snapshot in one chunk: no copy.
        if stream.message().await?.is_some() {
            return Err(too_long(group, total));
        }
        return Ok((group, first.data));
    }
    let mut payload = BytesMut::with_capacity(total);
    let mut data = first.data;
    loop {
        if payload.len() + data.len() > total {
            return Err(too_long(group, total));
        }
        payload.extend_from_slice(&data);
        match stream.message().await? {
            Some(next) => data = next.data,
            None => break,
        }
    }
    if payload.len() != total {
        return Err(Status::invalid_argument(format!(
            "snapshot for {group} ended after {} of the {total} bytes announced",
            payload.len()
        )));
    }
    Ok((group, payload.freeze()))
}

fn too_long(group: GroupId, total: usize) -> Status {
    Status::invalid_argument(format!(
        "snapshot for {group} is longer than the {total} bytes announced"
    ))
}

struct ControlService<H> {
    handler: Arc<H>,
    cancel: Cancel,
}

#[tonic::async_trait]
impl<H: ControlHandler> Control for ControlService<H> {
    async fn call(
        &self,
        request: Request<ControlRequest>,
    ) -> Result<Response<ControlReply>, Status> {
        let ControlRequest {
            method,
            group,
            payload,
        } = request.into_inner();
        let group = GroupId(group);
        let name = format!("control call `{method}`");
        let handler = self.handler.call(ControlCall {
            method,
            group,
            payload,
        });
        let payload = self
            .cancel
            .run(&name, answer(&name, group, handler))
            .await?;
        Ok(Response::new(ControlReply { payload }))
    }
}
