//! The cluster checkpoint store: `quiver-stream`'s [`CheckpointStore`] for one partition of a
//! job, over the replicated log.
//!
//! - **claim**: waits until this node's replica is as recent as the leader's commit index (a
//!   read barrier), then checks that the partition is still assigned to this node under the
//!   generation the runner was started with; that generation is the claim.
//! - **put_state** keeps the task's state blob in memory until the commit, which carries it in
//!   the log.
//! - **commit** is the commit point: one `Checkpoint` command with the generation, the epoch,
//!   the log index the checkpoint covers (the feed's position), the manifest and the state,
//!   acknowledged once a majority of the nodes fsynced it and the state machine applied it.
//!   The state machine refuses it if another worker took the partition over (fencing); and the
//!   worker does not even try once its lease has run out.
//! - **latest** and **get_state** read the partition's last checkpoint from the local replica.

use std::collections::BTreeMap;
use std::time::Duration;

use quiver_checkpoint::store::{CheckpointStore, StoreError};
use quiver_checkpoint::{Epoch, Manifest, StateRef, TaskId};
use quiver_coordination::fencing::Fenced;
use quiver_coordination::{Generation, LogIndex, NodeId, PartitionId};
use quiver_node::worker_liveness::Lease;
use quiver_node::{WriteError, Writer};
use quiver_replication::{Command, Reply, StateReader};
use sha2::{Digest, Sha256};

use crate::feed::FeedPosition;

/// Why the cluster store did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterStoreError {
    /// The partition belongs to another worker now (or the job stopped): this one stops.
    #[error("job {job} {partition}: {node} was fenced ({reason}); it stops the partition's tasks")]
    Fenced {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// This node.
        node: NodeId,
        /// The state machine's reason.
        reason: Fenced,
    },
    /// The partition is no longer this node's under the runner's generation.
    #[error("job {job} {partition} is no longer assigned to node {node} under {generation}")]
    NotOwned {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// This node.
        node: NodeId,
        /// The runner's generation.
        generation: Generation,
    },
    /// The worker has not heard of a majority for longer than its lease.
    #[error("{node} stops committing job {job} {partition}: no majority contact for {since} (lease {lease_ms} ms)")]
    LeaseExpired {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// This node.
        node: NodeId,
        /// Since the last contact, or "ever".
        since: String,
        /// The lease.
        lease_ms: u64,
    },
    /// The write did not complete: whether it was applied is unknown; the run resumes from
    /// the last checkpoint it then finds.
    #[error("job {job} {partition}: {what}: {source}")]
    Write {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// What was being done.
        what: String,
        /// Why it failed.
        source: WriteError,
    },
    /// The write did not complete in time.
    #[error("job {job} {partition}: {what}: no answer within {timeout:?}")]
    Timeout {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// What was being done.
        what: String,
        /// The limit.
        timeout: Duration,
    },
    /// The state machine refused the checkpoint for another reason.
    #[error("job {job} {partition}: the cluster refused checkpoint {epoch}: {reply:?}")]
    Refused {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// The epoch.
        epoch: Epoch,
        /// What the state machine answered.
        reply: Reply,
    },
    /// The replicated state has no such partition (any more).
    #[error("job {job} {partition}: {source}")]
    Read {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// Why.
        source: quiver_replication::state::ReadError,
    },
    /// A cluster job resumes from its last checkpoint; it does not start over.
    #[error("job {job} {partition}: a cluster job always resumes from its last checkpoint; to start it over, stop it and submit it again")]
    StartOver {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
    },
    /// A partition runs as one task, whose one state blob travels in the log.
    #[error("job {job} {partition}: a checkpoint of {tasks} tasks, where a partition runs one")]
    MoreThanOneTask {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// The tasks the manifest names.
        tasks: usize,
    },
    /// The last checkpoint in the log cannot be used.
    #[error(
        "job {job} {partition}: the last checkpoint (committed at log index {index}) {problem}"
    )]
    Damaged {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// Where it was committed.
        index: LogIndex,
        /// What is wrong.
        problem: String,
    },
}

/// A partition's last checkpoint: its manifest, its state blob, and the log index of its
/// commit.
type LastCheckpoint = (Manifest, Option<Vec<u8>>, LogIndex);

/// One partition's checkpoints in the replicated log.
pub struct ClusterStore {
    /// The job's name in the cluster.
    pub job: String,
    /// The partition.
    pub partition: PartitionId,
    /// This node.
    pub node: NodeId,
    /// The generation the partition was assigned to this node under.
    pub generation: Generation,
    /// The local replica.
    pub state: StateReader,
    /// Writes through the leader.
    pub writer: Writer,
    /// This node's lease.
    pub lease: Lease,
    /// The runtime the node's calls run on.
    pub runtime: tokio::runtime::Handle,
    /// The most a call may take.
    pub timeout: Duration,
    /// State blobs put since the last commit, by (epoch, task).
    pending: BTreeMap<(Epoch, TaskId), Vec<u8>>,
}

impl ClusterStore {
    /// A store for `partition` of `job`, owned by this node under `generation`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job: &str,
        partition: PartitionId,
        generation: Generation,
        state: StateReader,
        writer: Writer,
        lease: Lease,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Self {
        ClusterStore {
            job: job.to_string(),
            partition,
            node: NodeId(writer.node()),
            generation,
            state,
            writer,
            lease,
            runtime,
            timeout,
            pending: BTreeMap::new(),
        }
    }

    fn fail(&self, e: ClusterStoreError) -> StoreError {
        StoreError::Remote(Box::new(e))
    }

    fn write_failed(&self, what: String, source: WriteError) -> StoreError {
        self.fail(ClusterStoreError::Write {
            job: self.job.clone(),
            partition: self.partition,
            what,
            source,
        })
    }

    fn timed_out(&self, what: String) -> StoreError {
        self.fail(ClusterStoreError::Timeout {
            job: self.job.clone(),
            partition: self.partition,
            what,
            timeout: self.timeout,
        })
    }

    /// Runs `call` on the node's runtime until it answers, retrying while there is no leader
    /// or the leader cannot be reached (an election under way), up to the call time-out.
    /// Retrying a write whose outcome is unknown is safe: the state machine applies a
    /// checkpoint once and fences stale writers.
    fn retrying<T, F>(&self, what: &str, call: impl Fn() -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, WriteError>>,
    {
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            // The timer is made inside the runtime: this thread is not one of its own.
            let answer = self
                .runtime
                .block_on(async { tokio::time::timeout(left, call()).await });
            match answer {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if std::time::Instant::now() + Duration::from_millis(100) < deadline => {
                    tracing::debug!(job = %self.job, partition = %self.partition, "{what}: {e}; trying again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(Err(e)) => return Err(self.write_failed(what.to_string(), e)),
                Err(_) => return Err(self.timed_out(what.to_string())),
            }
        }
    }

    /// Waits (up to the call time-out) for the lease to hold: a worker whose heartbeats were
    /// late may renew it.
    fn hold_lease(&self) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + self.timeout;
        while !self.lease.may_write() {
            if std::time::Instant::now() >= deadline {
                return Err(self.fail(ClusterStoreError::LeaseExpired {
                    job: self.job.clone(),
                    partition: self.partition,
                    node: self.node,
                    since: self
                        .lease
                        .since_contact()
                        .map_or("ever".into(), |ms| format!("{ms} ms")),
                    lease_ms: self.lease_ms(),
                }));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn lease_ms(&self) -> u64 {
        self.lease.timeouts().lease
    }

    /// The partition's last committed checkpoint: its manifest and state blob, and the log
    /// index of its commit.
    fn last(&self) -> Result<Option<LastCheckpoint>, StoreError> {
        let last = self.state.read(|s, _| {
            s.last_checkpoint(&self.job, self.partition)
                .map(|c| c.map(|c| (c.manifest.clone(), c.state.clone(), c.committed_at)))
        });
        let last = last.map_err(|source| {
            self.fail(ClusterStoreError::Read {
                job: self.job.clone(),
                partition: self.partition,
                source,
            })
        })?;
        let Some((manifest, state, index)) = last else {
            return Ok(None);
        };
        let manifest = serde_json::from_slice(&manifest).map_err(|e| {
            self.fail(ClusterStoreError::Damaged {
                job: self.job.clone(),
                partition: self.partition,
                index,
                problem: format!("has a manifest that does not parse: {e}"),
            })
        })?;
        Ok(Some((manifest, state, index)))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl CheckpointStore for ClusterStore {
    fn call_timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn forget(&mut self, _job: &str) -> Result<(), StoreError> {
        // A partition of a cluster job always resumes from its last checkpoint; starting a job
        // over is `quiver cluster stop` and a new submission.
        Err(self.fail(ClusterStoreError::StartOver {
            job: self.job.clone(),
            partition: self.partition,
        }))
    }

    fn claim(&mut self, _job: &str) -> Result<u64, StoreError> {
        self.retrying(
            "waiting for this replica to catch up with the leader",
            || self.writer.read_barrier(self.timeout),
        )?;
        let owner = self.state.read(|s, _| {
            s.job(&self.job)
                .filter(|j| j.running)
                .and_then(|j| j.assignment.get(&self.partition).copied())
        });
        match owner {
            Some(o) if o.node == self.node && o.generation == self.generation => {
                Ok(self.generation.0)
            }
            _ => Err(self.fail(ClusterStoreError::NotOwned {
                job: self.job.clone(),
                partition: self.partition,
                node: self.node,
                generation: self.generation,
            })),
        }
    }

    fn put_state(
        &mut self,
        _job: &str,
        epoch: Epoch,
        task: TaskId,
        bytes: &[u8],
    ) -> Result<StateRef, StoreError> {
        self.pending.insert((epoch, task), bytes.to_vec());
        Ok(StateRef {
            key: format!("log:{epoch}-{task}"),
            len: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        })
    }

    fn get_state(&self, _job: &str, state: &StateRef) -> Result<Vec<u8>, StoreError> {
        let Some((_, blob, index)) = self.last()? else {
            return Err(self.fail(ClusterStoreError::Damaged {
                job: self.job.clone(),
                partition: self.partition,
                index: 0,
                problem: format!("names state {} but there is no checkpoint", state.key),
            }));
        };
        match blob {
            Some(b) if b.len() as u64 == state.len && sha256_hex(&b) == state.sha256 => Ok(b),
            _ => Err(self.fail(ClusterStoreError::Damaged {
                job: self.job.clone(),
                partition: self.partition,
                index,
                problem: format!(
                    "names state {} ({} bytes, SHA-256 {}) that it does not carry",
                    state.key, state.len, state.sha256
                ),
            })),
        }
    }

    fn commit(&mut self, manifest: &Manifest) -> Result<(), StoreError> {
        if manifest.state.len() > 1 || manifest.state.keys().any(|t| *t != 0) {
            // A partition runs as one task; its one blob travels in the log.
            return Err(self.fail(ClusterStoreError::MoreThanOneTask {
                job: self.job.clone(),
                partition: self.partition,
                tasks: manifest.state.len(),
            }));
        }
        self.hold_lease()?;
        let through = match manifest.sources.get("input") {
            Some(p) => serde_json::from_value::<FeedPosition>(p.0.clone())
                .map(|p| p.index)
                .unwrap_or(0),
            None => 0,
        };
        let state = manifest
            .state
            .get(&0)
            .and_then(|_| self.pending.get(&(manifest.epoch, 0)).cloned());
        let command = Command::Checkpoint {
            job: self.job.clone(),
            partition: self.partition,
            node: self.node,
            generation: self.generation,
            epoch: manifest.epoch,
            through,
            manifest: serde_json::to_vec(manifest).expect("a manifest serializes"),
            state,
        };
        let what = format!("committing checkpoint {}", manifest.epoch);
        // The durability point of a cluster checkpoint: the write returns once a majority of
        // the nodes fsynced the entry and this leader applied it.
        let (_, reply) = self.retrying(&what, || self.writer.write(command.clone()))?;
        self.pending.retain(|(epoch, _), _| *epoch > manifest.epoch);
        match reply {
            Reply::Applied => Ok(()),
            // A retried commit that had been applied.
            Reply::StaleCheckpoint { epoch, .. } if epoch == manifest.epoch => Ok(()),
            Reply::Fenced(reason) => Err(self.fail(ClusterStoreError::Fenced {
                job: self.job.clone(),
                partition: self.partition,
                node: self.node,
                reason,
            })),
            reply => Err(self.fail(ClusterStoreError::Refused {
                job: self.job.clone(),
                partition: self.partition,
                epoch: manifest.epoch,
                reply,
            })),
        }
    }

    fn latest(&self, _job: &str) -> Result<Option<Manifest>, StoreError> {
        Ok(self.last()?.map(|(m, _, _)| m))
    }
}
