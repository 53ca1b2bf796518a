//! One running node: its storage opened, its Raft instance, the transport server answering
//! peers and control calls, and the first node's initialisation or a later node's join.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::{Raft, ServerState};
use quiver_replication::types::RaftNodeId;
use quiver_replication::{
    group, ClusterNode, Command, GroupId, LogOptions, Reply, StateReader, StoreError, TypeConfig,
};
use quiver_transport::{
    method, ClientConfig, ControlCall, ControlHandler, HandlerError, HandlerResult, PeerClient,
    PeerHandler, ServerConfig, ServerHandle,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::batching::{self, BatchLimits, Batcher, Failed, Route, Routes};
use crate::leader_failover;
use crate::raft_network::Network;
use crate::status::{
    CheckpointStatus, JobStatus, MemberStatus, NodeStatus, PartitionStatus, WorkerStatus,
};
use crate::timing::Timing;
use crate::worker_liveness::{self, Beat, BeatAnswer, Clock, LeaderView, Lease};
use quiver_coordination::status::hottest;
use quiver_coordination::{NodeId, PartitionId};

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's id in the cluster (unique, never reused for another data directory).
    pub id: u64,
    /// Where its log, vote and snapshots live.
    pub data_dir: PathBuf,
    /// Where it listens for peers and control calls (`127.0.0.1:0` takes a free port).
    pub listen: SocketAddr,
    /// The address other nodes and clients reach the listener at; the bound address if `None`.
    pub advertise: Option<String>,
    /// The address of its HTTP API, as told to others.
    pub api: String,
    /// A node of an existing cluster to join through; `None` starts (or restarts) a cluster.
    pub join: Option<String>,
    /// Open the storage even if damaged, keeping what precedes the damage (see
    /// `quiver_replication::log_store`): only for one node at a time of a healthy cluster.
    pub repair: bool,
    /// Raft's timings.
    pub timing: Timing,
}

/// A node could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Its storage could not be opened (damaged, locked, of another group).
    #[error("node {node}: {source}")]
    Storage {
        /// The node.
        node: u64,
        /// Why.
        source: quiver_replication::StoreError,
    },
    /// Raft refused its configuration or failed to start.
    #[error("node {node}: Raft: {message}")]
    Raft {
        /// The node.
        node: u64,
        /// What Raft said.
        message: String,
    },
    /// Its listener could not be opened.
    #[error("node {node}: cannot listen on {addr}: {source}")]
    Listen {
        /// The node.
        node: u64,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The transport server could not start.
    #[error("node {node}: {source}")]
    Serve {
        /// The node.
        node: u64,
        /// Why.
        source: quiver_transport::ServeError,
    },
    /// Joining the cluster failed.
    #[error("node {node}: cannot join the cluster through {through}: {message}")]
    Join {
        /// The node.
        node: u64,
        /// The address given with `--join`.
        through: String,
        /// Why.
        message: String,
    },
}

/// A running node.
pub struct Node {
    /// Its id.
    pub id: u64,
    /// The address peers and clients reach it at.
    pub addr: String,
    raft: Raft<TypeConfig>,
    handlers: Arc<Handlers>,
    server: ServerHandle,
    lease: Lease,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A write failed; whether it was applied is unknown unless the error says it was not.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The node knows of no leader (an election is under way): try again.
    #[error("node {node} knows of no leader yet")]
    NoLeader {
        /// The node asked.
        node: u64,
    },
    /// The leader could not be reached, or did not answer in time.
    #[error("writing through the leader at {leader}: {message}")]
    Forward {
        /// The leader's address.
        leader: String,
        /// Why.
        message: String,
    },
    /// Raft did not commit the write (this node stopped leading, or shut down).
    #[error("node {node}: {message}")]
    Raft {
        /// The node that tried.
        node: u64,
        /// What Raft said.
        message: String,
    },
}

/// Writes commands to the replicated log from inside a node: directly when the node leads,
/// through the leader otherwise. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    handlers: Arc<Handlers>,
}

impl Writer {
    /// Writes `command`; returns the log index it was committed at and the state machine's
    /// reply, once a majority holds it (the durability point: each of them fsynced it).
    pub async fn write(&self, command: Command) -> Result<(u64, Reply), WriteError> {
        self.handlers.write_anywhere(command).await
    }

    /// A linearizable read point: returns once this node's state machine has applied every
    /// entry the leader had committed when asked (confirmed by a majority), so that what the
    /// caller reads next from the local state is at least that recent.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<u64, WriteError> {
        let index = self
            .handlers
            .at_leader(READ_INDEX, (), |()| self.handlers.read_index())
            .await?;
        self.handlers
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map_err(|e| WriteError::Raft {
                node: self.node(),
                message: format!("waiting to apply log index {index}: {e}"),
            })?;
        Ok(index)
    }

    /// The node's id.
    pub fn node(&self) -> u64 {
        self.handlers.id
    }
}

/// The control call that takes a node out of the cluster.
pub const REMOVE: &str = "remove";

/// The control call that answers the leader's read index (see [`Writer::read_barrier`]).
pub const READ_INDEX: &str = "read_index";

impl Node {
    /// Opens the storage, starts Raft and the server, and initialises or joins the cluster.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let node = config.id;
        let (storage, rejoin) = open_storage(&config).await?;
        for r in &storage.repairs {
            tracing::warn!(node, "repaired storage: {r:?}");
        }
        let raft_config = config
            .timing
            .raft_config()
            .map_err(|e| NodeError::Raft { node, message: e })?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| NodeError::Listen {
                node,
                addr: config.listen,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| NodeError::Listen {
            node,
            addr: config.listen,
            source,
        })?;
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string());
        // Connections to peers come from the address the node listens on (when it names one),
        // so that peers see one address per node.
        let local_ip = Some(config.listen.ip()).filter(|ip| !ip.is_unspecified());
        let network = Network {
            me: node,
            group: GroupId::FIRST,
            config: client_config(&config.timing, local_ip),
        };
        let state = storage.state_machine.reader();
        let raft = Raft::new(
            node,
            Arc::new(raft_config),
            network,
            storage.log,
            storage.state_machine,
        )
        .await
        .map_err(|e| NodeError::Raft {
            node,
            message: e.to_string(),
        })?;
        let clock = Clock::new();
        let view = Arc::new(std::sync::Mutex::new(LeaderView::default()));
        let (batcher, queue) = Batcher::new();
        let handlers = Arc::new(Handlers {
            id: node,
            raft: raft.clone(),
            batcher,
            state: state.clone(),
            timing: config.timing.clone(),
            view: view.clone(),
            clock: clock.clone(),
            local_ip,
            clients: std::sync::Mutex::new(BTreeMap::new()),
        });
        let batching = batching::spawn(handlers.clone(), queue, BatchLimits::default());
        let server = quiver_transport::serve_listener(
            listener,
            handlers.clone(),
            handlers.clone(),
            ServerConfig::default(),
        )
        .map_err(|source| NodeError::Serve { node, source })?;
        let me = ClusterNode {
            peer: addr.clone(),
            api: config.api.clone(),
        };
        match &config.join {
            None => {
                // Only a node that has never been part of a cluster initialises one; on a
                // restart Raft finds its membership in its own log.
                if !raft.is_initialized().await.unwrap_or(true) {
                    let members = BTreeMap::from([(node, me)]);
                    if let Err(e) = raft.initialize(members).await {
                        tracing::info!(node, "not initialising: {e}");
                    }
                }
            }
            Some(through) => {
                // A node that kept its vote counts as initialised to Raft, so one that left to
                // join again says so itself.
                if rejoin || !raft.is_initialized().await.unwrap_or(true) {
                    join(node, through, me, &config.timing, local_ip).await?;
                }
            }
        }
        let lease = Lease::new(clock.clone(), config.timing.workers);
        let tasks = vec![
            tokio::spawn(worker_liveness::lead(
                raft.clone(),
                state,
                view,
                clock,
                config.timing.workers,
                node,
            )),
            tokio::spawn(beat(handlers.clone(), lease.clone())),
            batching,
        ];
        Ok(Node {
            id: node,
            addr,
            raft,
            handlers,
            server,
            lease,
            tasks,
        })
    }

    /// The replicated state as this node has applied it.
    pub fn state(&self) -> StateReader {
        self.handlers.state.clone()
    }

    /// A handle that writes commands to the log.
    pub fn writer(&self) -> Writer {
        Writer {
            handlers: self.handlers.clone(),
        }
    }

    /// This node's lease as a worker.
    pub fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        status_of(
            &self.raft,
            &self.handlers.state,
            &self.handlers.view,
            &self.handlers.clock,
        )
    }

    /// Stops Raft and the server.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.raft.shutdown().await;
        let _ = self.server.shutdown(Duration::from_millis(500)).await;
    }
}

/// Asks the cluster, through `through`, to take `me` in as a voter; retries while the
/// cluster has no leader, up to the join deadline.
async fn join(
    node: u64,
    through: &str,
    me: ClusterNode,
    timing: &Timing,
    local_ip: Option<std::net::IpAddr>,
) -> Result<(), NodeError> {
    let fail = |message: String| NodeError::Join {
        node,
        through: through.to_string(),
        message,
    };
    let client = PeerClient::new(through.to_string(), client_config(timing, local_ip))
        .map_err(|e| fail(e.to_string()))?;
    let request = JoinRequest { id: node, node: me };
    let deadline = tokio::time::Instant::now() + timing.join_deadline;
    loop {
        let answer = client
            .call(
                JOIN,
                GroupId::FIRST,
                encode(&request),
                Some(timing.join_deadline),
            )
            .await;
        match answer {
            Ok(bytes) => {
                return decode::<Result<(), String>>(&bytes)
                    .map_err(|e| fail(e.message))?
                    .map_err(fail)
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(node, "joining through {through}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    }
}

/// The control call that adds a node to the cluster.
pub const JOIN: &str = "join";

/// Sends this node's heartbeat to the leader every heartbeat interval and keeps its lease: a
/// leader's answer says how long ago a majority acknowledged it.
async fn beat(handlers: Arc<Handlers>, lease: Lease) {
    let every = Duration::from_millis(handlers.timing.workers.heartbeat_interval);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = handlers.clock.now();
        let call = ControlCall {
            method: method::HEARTBEAT.to_string(),
            group: GroupId::FIRST,
            payload: encode(&Beat { node: handlers.id }),
        };
        match handlers.heartbeat(call).await {
            Ok(bytes) => match decode::<BeatAnswer>(&bytes) {
                Ok(BeatAnswer {
                    quorum_ack_ms: Some(age),
                }) => lease.touch(sent.saturating_sub(age)),
                Ok(_) => {}
                Err(e) => tracing::warn!("bad heartbeat answer: {}", e.message),
            },
            Err(e) => tracing::debug!(node = handlers.id, "heartbeat: {}", e.message),
        }
    }
}

/// A node asking to join: its id and addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JoinRequest {
    id: u64,
    node: ClusterNode,
}

fn client_config(timing: &Timing, local_ip: Option<std::net::IpAddr>) -> ClientConfig {
    ClientConfig {
        local_ip,
        default_timeout: timing.call_timeout,
        // A restarted peer must hear the leader's heartbeats before its election timeout
        // runs out, or it campaigns and deposes a healthy leader: the leader retries a peer it
        // could not reach at most every half election timeout.
        backoff_min: (timing.election_min / 8).max(Duration::from_millis(10)),
        backoff_max: (timing.election_min / 2).max(Duration::from_millis(20)),
        ..ClientConfig::default()
    }
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(postcard::to_allocvec(value).expect("control payloads serialize"))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HandlerError> {
    postcard::from_bytes(bytes).map_err(|e| HandlerError::new(format!("bad payload: {e}")))
}

fn status_of(
    raft: &Raft<TypeConfig>,
    state: &StateReader,
    view: &std::sync::Mutex<LeaderView>,
    clock: &Clock,
) -> NodeStatus {
    let m = raft.metrics().borrow().clone();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let membership = m.membership_config.membership();
    let voters: BTreeSet<RaftNodeId> = membership.voter_ids().collect();
    let last = m.last_log_index;
    let members = membership
        .nodes()
        .map(|(id, n)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|l| l.map_or(0, |l| l.index));
            MemberStatus {
                id: *id,
                peer: n.peer.clone(),
                api: n.api.clone(),
                voter: voters.contains(id),
                matched_index: matched,
                lag: matched.map(|i| last.unwrap_or(0).saturating_sub(i)),
            }
        })
        .collect();
    let (checksum, jobs) = state.read(|s, _| (hex(&s.checksum()), job_statuses(s)));
    let heartbeats = view.lock().expect("liveness lock").heartbeats.clone();
    let now = clock.now();
    let workers = membership
        .nodes()
        .map(|(id, _)| WorkerStatus {
            node: *id,
            since_heartbeat_ms: heartbeats
                .as_ref()
                .and_then(|h| h.reference(NodeId(*id)))
                .map(|at| now.saturating_sub(at)),
            owns: jobs
                .iter()
                .filter(|j| j.running)
                .flat_map(|j| {
                    j.partitions
                        .iter()
                        .filter(|p| p.owner == Some(*id))
                        .map(|p| (j.name.clone(), p.partition, p.generation.unwrap_or(0)))
                })
                .collect(),
        })
        .collect();
    NodeStatus {
        id: m.id,
        role: role.to_string(),
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: last,
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        state_checksum: checksum,
        snapshots_installed: state.snapshots_installed(),
        members,
        jobs,
        workers,
    }
}

/// How many partitions the status names as the hottest of a job.
const HOTTEST: usize = 3;

fn job_statuses(s: &quiver_replication::ClusterState) -> Vec<JobStatus> {
    s.jobs()
        .map(|(name, j)| {
            let partitions: Vec<PartitionStatus> = j
                .partition_states
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let owner = j.assignment.get(&PartitionId(i as u32));
                    PartitionStatus {
                        partition: i as u32,
                        owner: owner.map(|o| o.node.0),
                        generation: owner.map(|o| o.generation.0),
                        rows: p.ingested_rows,
                        bytes: p.ingested_bytes,
                        pending_requests: p.events.values().map(Vec::len).sum(),
                        checkpoint: p.checkpoint.as_ref().map(|c| CheckpointStatus {
                            epoch: c.epoch,
                            node: c.node.0,
                            generation: c.generation.0,
                            through: c.through,
                            committed_at: c.committed_at,
                        }),
                    }
                })
                .collect();
            let hottest = hottest(
                partitions
                    .iter()
                    .map(|p| (PartitionId(p.partition), p.rows)),
                HOTTEST,
            )
            .into_iter()
            .filter(|(_, rows)| *rows > 0)
            .map(|(p, rows)| (p.0, rows))
            .collect();
            JobStatus {
                name: name.to_string(),
                running: j.running,
                partitions,
                hottest,
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What answers the transport's calls: the peers' Raft RPCs and the control calls.
struct Handlers {
    id: u64,
    raft: Raft<TypeConfig>,
    state: StateReader,
    timing: Timing,
    view: Arc<std::sync::Mutex<LeaderView>>,
    clock: Clock,
    local_ip: Option<std::net::IpAddr>,
    /// A client per leader address, kept so that forwarded calls reuse one connection.
    clients: std::sync::Mutex<BTreeMap<String, PeerClient>>,
    /// The queue that groups this node's writes.
    batcher: Batcher,
}

impl Handlers {
    fn check_group(&self, group: GroupId) -> Result<(), HandlerError> {
        if group != GroupId::FIRST {
            return Err(HandlerError::new(format!(
                "node {} serves only {}, not {group}",
                self.id,
                GroupId::FIRST
            )));
        }
        Ok(())
    }

    /// The leader's peer address, if this node knows of one other than itself.
    fn leader_addr(&self) -> Result<Option<String>, HandlerError> {
        let m = self.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(l) if l == self.id => Ok(None),
            Some(l) => Ok(m
                .membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.peer.clone())),
            None => Err(HandlerError::new(format!(
                "node {} knows of no leader yet; try again",
                self.id
            ))),
        }
    }

    /// Sends `call` on to the leader and returns its answer.
    async fn forward(&self, leader: String, call: ControlCall) -> HandlerResult {
        let client = {
            let mut clients = self.clients.lock().expect("clients lock");
            match clients.get(&leader) {
                Some(c) => c.clone(),
                None => {
                    let c =
                        PeerClient::new(leader.clone(), client_config(&self.timing, self.local_ip))
                            .map_err(|e| HandlerError::new(e.to_string()))?;
                    clients.insert(leader, c.clone());
                    c
                }
            }
        };
        client
            .call(
                &call.method,
                call.group,
                call.payload,
                Some(self.timing.join_deadline),
            )
            .await
            .map_err(|e| HandlerError::new(e.to_string()))
    }

    async fn join(&self, request: JoinRequest) -> Result<(), String> {
        let JoinRequest { id, node } = request;
        // Nodes joining at once: one membership change at a time, so a step that finds another
        // in progress waits for it and tries again (with the voters as they are then).
        let deadline = tokio::time::Instant::now() + self.timing.join_deadline;
        let in_progress = |e: &openraft::error::RaftError<
            RaftNodeId,
            openraft::error::ClientWriteError<RaftNodeId, ClusterNode>,
        >| {
            matches!(
                e,
                openraft::error::RaftError::APIError(
                    openraft::error::ClientWriteError::ChangeMembershipError(
                        openraft::error::ChangeMembershipError::InProgress(_),
                    ),
                )
            ) && tokio::time::Instant::now() < deadline
        };
        let pause = || tokio::time::sleep(Duration::from_millis(50));
        loop {
            match self.raft.add_learner(id, node.clone(), true).await {
                Ok(_) => break,
                Err(e) if in_progress(&e) => pause().await,
                Err(e) => return Err(format!("adding node {id} as a learner: {e}")),
            }
        }
        loop {
            let m = self.raft.metrics().borrow().clone();
            let mut voters: BTreeSet<RaftNodeId> =
                m.membership_config.membership().voter_ids().collect();
            if !voters.insert(id) {
                return Ok(());
            }
            match self.raft.change_membership(voters, false).await {
                Ok(_) => return Ok(()),
                Err(e) if in_progress(&e) => pause().await,
                Err(e) => return Err(format!("making node {id} a voter: {e}")),
            }
        }
    }

    /// A heartbeat: recorded when this node leads (and answered with its quorum contact),
    /// forwarded to the leader otherwise.
    async fn heartbeat(&self, call: ControlCall) -> HandlerResult {
        if let Some(leader) = self.leader_addr()? {
            return self.forward(leader, call).await;
        }
        let Beat { node } = decode(&call.payload)?;
        worker_liveness::record(&self.view, node, self.clock.now());
        let m = self.raft.metrics().borrow().clone();
        let alone = m.membership_config.membership().voter_ids().count() == 1;
        let quorum_ack_ms = match m.millis_since_quorum_ack {
            None if alone && m.state == ServerState::Leader => Some(0),
            other => other,
        };
        Ok(encode(&BeatAnswer { quorum_ack_ms }))
    }

    /// Takes node `id` out of the voters and the membership; its partitions move to the
    /// others once its heartbeats are missed.
    async fn remove(&self, id: u64) -> Result<(), String> {
        let m = self.raft.metrics().borrow().clone();
        let mut voters: BTreeSet<RaftNodeId> =
            m.membership_config.membership().voter_ids().collect();
        if !voters.remove(&id) {
            return Err(format!("node {id} is not a voter of this cluster"));
        }
        if voters.is_empty() {
            return Err(format!(
                "node {id} is the last voter; stop the cluster instead"
            ));
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| format!("removing node {id}: {e}"))?;
        Ok(())
    }

    /// The leader's read index: its commit index, once a majority confirmed it still leads.
    async fn read_index(&self) -> Result<u64, String> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|l| l.map_or(0, |l| l.index))
            .map_err(|e| e.to_string())
    }

    /// Writes `command` here when leading, through the leader otherwise, grouped with the
    /// node's other writes under way ([`batching`]).
    async fn write_anywhere(&self, command: Command) -> Result<(u64, Reply), WriteError> {
        self.batcher.write(command).await.map_err(|f| match f {
            Failed::NoLeader => WriteError::NoLeader { node: self.id },
            Failed::Forward { leader, message } => WriteError::Forward { leader, message },
            Failed::Raft(message) => WriteError::Raft {
                node: self.id,
                message,
            },
        })
    }

    /// Runs `here` with `request` when this node leads; otherwise sends `request` as control
    /// call `method` to the leader and decodes its answer.
    async fn at_leader<R, T, F>(
        &self,
        method: &str,
        request: R,
        here: impl FnOnce(R) -> F,
    ) -> Result<T, WriteError>
    where
        R: Serialize,
        T: DeserializeOwned,
        F: std::future::Future<Output = Result<T, String>>,
    {
        let leader = self
            .leader_addr()
            .map_err(|_| WriteError::NoLeader { node: self.id })?;
        let Some(leader) = leader else {
            return here(request).await.map_err(|message| WriteError::Raft {
                node: self.id,
                message,
            });
        };
        self.ask_leader(&leader, method, &request)
            .await
            .map_err(|message| WriteError::Forward { leader, message })
    }

    /// Makes control call `method` with `request` at the leader at `leader` and decodes its
    /// answer; the error says why it failed, there or on the way.
    async fn ask_leader<R: Serialize, T: DeserializeOwned>(
        &self,
        leader: &str,
        method: &str,
        request: &R,
    ) -> Result<T, String> {
        let call = ControlCall {
            method: method.to_string(),
            group: GroupId::FIRST,
            payload: encode(request),
        };
        let bytes = self
            .forward(leader.to_string(), call)
            .await
            .map_err(|e| e.message)?;
        decode::<Result<T, String>>(&bytes).map_err(|e| e.message)?
    }
}

impl Routes for Handlers {
    fn route(&self) -> Route {
        match self.leader_addr() {
            Ok(None) => Route::Here,
            Ok(Some(leader)) => Route::Leader(leader),
            Err(_) => Route::Unknown,
        }
    }

    fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    async fn forward_write(&self, leader: String, entry: Command) -> batching::Written {
        self.ask_leader(&leader, method::CLIENT_WRITE, &entry)
            .await
            .map_err(|message| Failed::Forward { leader, message })
    }
}

impl PeerHandler for Handlers {
    async fn append_entries(&self, group: GroupId, payload: Bytes) -> HandlerResult {
        self.check_group(group)?;
        let answer = self.raft.append_entries(decode(&payload)?).await;
        Ok(encode(&answer))
    }

    async fn vote(&self, group: GroupId, payload: Bytes) -> HandlerResult {
        self.check_group(group)?;
        let answer = leader_failover::answer_vote(&self.raft, self.id, decode(&payload)?).await;
        Ok(encode(&answer))
    }

    async fn install_snapshot(&self, group: GroupId, payload: Bytes) -> HandlerResult {
        self.check_group(group)?;
        let answer = self.raft.install_snapshot(decode(&payload)?).await;
        Ok(encode(&answer))
    }
}

impl ControlHandler for Handlers {
    async fn call(&self, call: ControlCall) -> HandlerResult {
        self.check_group(call.group)?;
        match call.method.as_str() {
            method::STATUS => {
                let status = status_of(&self.raft, &self.state, &self.view, &self.clock);
                Ok(Bytes::from(
                    serde_json::to_vec(&status).expect("a status serializes"),
                ))
            }
            JOIN => {
                if let Some(leader) = self.leader_addr()? {
                    return self.forward(leader, call).await;
                }
                let answer = self.join(decode(&call.payload)?).await;
                Ok(encode(&answer))
            }
            REMOVE => {
                if let Some(leader) = self.leader_addr()? {
                    return self.forward(leader, call).await;
                }
                let id: u64 = decode(&call.payload)?;
                let answer = self.remove(id).await;
                Ok(encode(&answer))
            }
            method::HEARTBEAT => self.heartbeat(call).await,
            READ_INDEX => {
                if let Some(leader) = self.leader_addr()? {
                    return self.forward(leader, call).await;
                }
                Ok(encode(&self.read_index().await))
            }
            method::CLIENT_WRITE => {
                if let Some(leader) = self.leader_addr()? {
                    return self.forward(leader, call).await;
                }
                let answer = self
                    .write_anywhere(decode(&call.payload)?)
                    .await
                    .map_err(|e| e.to_string());
                Ok(encode(&answer))
            }
            other => Err(HandlerError::new(format!(
                "node {} has no control call `{other}`",
                self.id
            ))),
        }
    }
}

/// A client for a caller outside the cluster (the `quiver cluster` commands).
fn outside_client(addr: String, timeout: Duration) -> Result<PeerClient, String> {
    let config = ClientConfig {
        default_timeout: timeout,
        ..ClientConfig::default()
    };
    PeerClient::new(addr, config).map_err(|e| e.to_string())
}

/// Opens the node's storage: strictly, or getting past damage with `--repair`. A repair that
/// finds the state gone (a damaged snapshot whose log was purged) rebuilds it from the
/// leader: the node leaves the cluster through `--join`, so that the cluster no longer counts
/// the entries it acknowledged (the others hold every committed one) nor its old progress,
/// sets its log aside and opens empty; [`Node::start`] then joins again (the second value is
/// true), and the leader sends its snapshot.
async fn open_storage(config: &NodeConfig) -> Result<(group::GroupStorage, bool), NodeError> {
    let node = config.id;
    let storage = |source| NodeError::Storage { node, source };
    if !config.repair {
        return group::open(&config.data_dir, GroupId::FIRST, LogOptions::default())
            .map(|s| (s, false))
            .map_err(storage);
    }
    match group::open_repairing(&config.data_dir, GroupId::FIRST, LogOptions::default()) {
        Err(e @ StoreError::SnapshotBehindLog { .. }) => {
            let Some(through) = &config.join else {
                return Err(storage(e));
            };
            tracing::warn!(
                node,
                "{e}: leaving the cluster through {through} to join again"
            );
            leave(node, through, &config.timing).await?;
            let set_aside =
                group::set_log_aside(&config.data_dir, GroupId::FIRST).map_err(storage)?;
            let mut s =
                group::open_repairing(&config.data_dir, GroupId::FIRST, LogOptions::default())
                    .map_err(storage)?;
            s.repairs.extend(set_aside);
            Ok((s, true))
        }
        other => other.map(|s| (s, false)).map_err(storage),
    }
}

/// Takes node `node` out of the cluster through the member at `through` (done already if it
/// is no member).
async fn leave(node: u64, through: &str, timing: &Timing) -> Result<(), NodeError> {
    let fail = |message: String| NodeError::Join {
        node,
        through: through.to_string(),
        message: format!("leaving the cluster before joining again: {message}"),
    };
    if let Err(e) = remove_node(through, node, timing.join_deadline).await {
        let members = cluster_status(through, false, timing.join_deadline)
            .await
            .map_err(fail)?
            .members;
        if members.iter().any(|m| m.id == node) {
            return Err(fail(e));
        }
    }
    Ok(())
}

/// Asks the node at `addr` for its view of the cluster; unless `local`, asks the leader too if
/// that node knows another one, as the leader's view has every member's replication progress.
pub async fn cluster_status(
    addr: &str,
    local: bool,
    timeout: Duration,
) -> Result<NodeStatus, String> {
    let ask = |addr: String| async move {
        let client = outside_client(addr, timeout)?;
        let bytes = client
            .call(method::STATUS, GroupId::FIRST, Bytes::new(), Some(timeout))
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<NodeStatus>(&bytes).map_err(|e| e.to_string())
    };
    let first = ask(addr.to_string()).await?;
    if local {
        return Ok(first);
    }
    let leader = first
        .leader
        .filter(|l| *l != first.id)
        .and_then(|l| first.members.iter().find(|m| m.id == l))
        .map(|m| m.peer.clone());
    match leader {
        Some(leader) => Ok(ask(leader).await.unwrap_or(first)),
        None => Ok(first),
    }
}

/// Takes node `id` out of the cluster, through the node at `addr` (forwarded to the leader).
pub async fn remove_node(addr: &str, id: u64, timeout: Duration) -> Result<(), String> {
    let client = outside_client(addr.to_string(), timeout)?;
    let bytes = client
        .call(REMOVE, GroupId::FIRST, encode(&id), Some(timeout))
        .await
        .map_err(|e| e.to_string())?;
    decode::<Result<(), String>>(&bytes).map_err(|e| e.message)?
}

/// Writes `command` through the node at `addr` (forwarded to the leader), returning the log
/// index it was committed at and the state machine's reply.
pub async fn write(
    addr: &str,
    command: &Command,
    timeout: Duration,
) -> Result<(u64, Reply), String> {
    let client = outside_client(addr.to_string(), timeout)?;
    let bytes = client
        .call(
            method::CLIENT_WRITE,
            GroupId::FIRST,
            encode(command),
            Some(timeout),
        )
        .await
        .map_err(|e| e.to_string())?;
    decode::<Result<(u64, Reply), String>>(&bytes).map_err(|e| e.message)?
}
