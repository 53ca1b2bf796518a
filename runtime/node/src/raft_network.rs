//! openraft's network over the transport: each Raft RPC travels as its postcard encoding in a
//! [`quiver_transport`] message of the group, and comes back as the remote's `Result`, so an
//! error the remote Raft returns stays a typed remote error here.
//!
//! A peer that is down is reported to openraft as unreachable (the transport backs off from
//! dialing it), a call that takes longer than openraft's per-call time-to-live as a timeout.

use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use quiver_replication::types::RaftNodeId;
use quiver_replication::{ClusterNode, GroupId, TypeConfig};
use quiver_transport::{ClientConfig, PeerClient, TransportError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Makes one [`PeerNetwork`] per peer of `group`, for openraft.
#[derive(Clone)]
pub struct Network {
    /// The node itself, for timeouts' reports.
    pub me: RaftNodeId,
    /// The group whose traffic this is.
    pub group: GroupId,
    /// Time-outs and backoff of the connections.
    pub config: ClientConfig,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: RaftNodeId, node: &ClusterNode) -> PeerNetwork {
        PeerNetwork {
            me: self.me,
            group: self.group,
            target,
            // An address that does not parse gives a client whose every call is unreachable.
            client: PeerClient::new(node.peer.clone(), self.config.clone())
                .map_err(|e| e.to_string()),
        }
    }
}

/// The connection to one peer.
pub struct PeerNetwork {
    me: RaftNodeId,
    group: GroupId,
    target: RaftNodeId,
    client: Result<PeerClient, String>,
}

/// Why a call failed before the remote Raft answered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CallFailed(String);

type Rpc<R, E> = Result<R, RPCError<RaftNodeId, ClusterNode, RaftError<RaftNodeId, E>>>;

impl PeerNetwork {
    async fn call<Req, Resp, E>(&self, kind: RPCTypes, request: &Req, ttl: Duration) -> Rpc<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = self
            .client
            .as_ref()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&CallFailed(e.clone()))))?;
        let payload = Bytes::from(
            postcard::to_allocvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?,
        );
        let answer = match kind {
            RPCTypes::Vote => client.vote(self.group, payload, Some(ttl)).await,
            RPCTypes::InstallSnapshot => {
                client
                    .install_snapshot(self.group, payload, Some(ttl))
                    .await
            }
            _ => client.append_entries(self.group, payload, Some(ttl)).await,
        };
        let bytes = answer.map_err(|e| match e {
            TransportError::Unreachable { .. } | TransportError::InvalidAddress { .. } => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            TransportError::Timeout { after, .. } => RPCError::Timeout(Timeout {
                action: kind,
                id: self.me,
                target: self.target,
                timeout: after,
            }),
            TransportError::Remote { .. } => RPCError::Network(NetworkError::new(&e)),
        })?;
        let result: Result<Resp, RaftError<RaftNodeId, E>> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<RaftNodeId>, openraft::error::Infallible> {
        self.call(RPCTypes::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        self.call(RPCTypes::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<RaftNodeId>, openraft::error::Infallible> {
        self.call(RPCTypes::Vote, &rpc, option.hard_ttl()).await
    }
}
