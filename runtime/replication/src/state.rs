//! The replicated state and the deterministic function that applies a command to it.
//!
//! [`ClusterState::apply`] reads no clock, does no I/O and iterates over ordered maps only, so
//! every replica that applies the same log reaches the same state, byte for byte: that is what
//! [`ClusterState::checksum`] compares. The checks use `quiver-coordination`'s decisions:
//! [`check_commit`] fences checkpoint commits, [`Producers`] applies retried ingest requests
//! once, and [`rebalance`] computes the assignments the leader proposes.
//!
//! The state is bounded: per partition it keeps the last committed checkpoint and the events
//! after it. A commit drops the events it covers, so memory (and a snapshot) grows with the
//! events not yet checkpointed, not with the history.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use quiver_coordination::assignment::{rebalance, Assignment, AssignmentError};
use quiver_coordination::fencing::{check_commit, CommitClaim};
use quiver_coordination::idempotency::{Decision, Producers};
use quiver_coordination::{Generation, LogIndex, NodeId, PartitionId};

use crate::command::{Command, Epoch, Reply};

/// How many producers each job remembers for idempotent ingest. Part of the replicated
/// behaviour: every replica must use the same number, so it is a constant of the format.
pub const PRODUCERS_PER_JOB: NonZeroUsize = match NonZeroUsize::new(4096) {
    Some(n) => n,
    None => unreachable!(),
};

/// The replicated state of the cluster's jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    jobs: BTreeMap<String, Job>,
}

/// A job as the replicated state knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Its pipeline definition (TOML text).
    pub pipeline_toml: String,
    /// The directory the pipeline's relative paths resolve against.
    pub base_dir: String,
    /// The schema of its events (an Arrow IPC stream without batches), fixed by the first
    /// ingest request; `None` until then.
    #[serde(with = "serde_bytes")]
    pub schema: Option<Vec<u8>>,
    /// How many partitions its input has.
    pub partitions: u32,
    /// Whether it runs (false once stopped).
    pub running: bool,
    /// The log index of the command that submitted it.
    pub submitted_at: LogIndex,
    /// The owner of each partition, empty until the first assignment and after a stop.
    pub assignment: Assignment,
    /// The highest generation issued for it, across its submissions: generations never repeat.
    pub last_issued: Generation,
    /// The last sequence number applied for each recent producer.
    pub producers: Producers,
    /// Each partition's checkpoint and pending events, indexed by partition id.
    pub partition_states: Vec<PartitionState>,
}

/// One partition's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The last committed checkpoint.
    pub checkpoint: Option<CommittedCheckpoint>,
    /// The events after it: log index of the ingest command → the partition's parts, one per
    /// ingest request applied at that index (several when the entry was a batch), in order.
    #[serde(with = "crate::bytes::events")]
    pub events: BTreeMap<LogIndex, Vec<Vec<u8>>>,
    /// Rows ingested into it since the job was submitted (as the doors counted them).
    pub ingested_rows: u64,
    /// Bytes ingested into it since the job was submitted.
    pub ingested_bytes: u64,
}

/// A checkpoint the state accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedCheckpoint {
    /// The worker that committed it.
    pub node: NodeId,
    /// Its generation.
    pub generation: Generation,
    /// Its epoch.
    pub epoch: Epoch,
    /// The log index whose events it covers, inclusive.
    pub through: LogIndex,
    /// The log index of the commit.
    pub committed_at: LogIndex,
    /// Its manifest (opaque).
    #[serde(with = "serde_bytes")]
    pub manifest: Vec<u8>,
    /// The operators' state, if it travelled in the log (opaque).
    #[serde(with = "serde_bytes")]
    pub state: Option<Vec<u8>>,
}

/// Why a worker's read of the state has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No job of that name.
    #[error("no job named {job:?}")]
    UnknownJob {
        /// The name asked for.
        job: String,
    },
    /// The job was stopped: its events are gone.
    #[error("job {job:?} was stopped")]
    Stopped {
        /// The job.
        job: String,
    },
    /// The job has no such partition.
    #[error("job {job:?} has no {partition}")]
    UnknownPartition {
        /// The job.
        job: String,
        /// The partition asked for.
        partition: PartitionId,
    },
    /// The events asked for are covered by a checkpoint and were dropped: resume from it.
    #[error("events up to log index {through} are covered by a checkpoint and were dropped")]
    Covered {
        /// The log index the last checkpoint covers.
        through: LogIndex,
    },
}

/// Why no assignment could be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No such job, or it was stopped.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// No assignment can be made (no live worker, or generations exhausted).
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
}

impl ClusterState {
    /// An empty state: no jobs.
    pub fn new() -> Self {
        ClusterState::default()
    }

    /// Applies `cmd`, the command of the log entry at `index`, and says what it did. Anything
    /// but [`Reply::Applied`] and [`Reply::Duplicate`] leaves the state unchanged; a duplicate
    /// only marks its producer as recently used.
    pub fn apply(&mut self, index: LogIndex, cmd: &Command) -> Reply {
        self.apply_owned(index, cmd.clone())
    }

    /// [`ClusterState::apply`], taking the command by value so that event bytes are moved into
    /// the state rather than copied (what the state machine does with the entries it owns).
    pub fn apply_owned(&mut self, index: LogIndex, cmd: Command) -> Reply {
        match cmd {
            Command::SubmitJob {
                job,
                pipeline_toml,
                partitions,
                base_dir,
            } => self.submit(index, job, pipeline_toml, partitions, base_dir),
            Command::StopJob { job } => self.stop(&job),
            Command::Assign {
                job,
                based_on,
                assignment,
                last_issued,
            } => match self.running_mut(&job) {
                Ok(j) => j.assign(based_on, assignment, last_issued),
                Err(reply) => reply,
            },
            Command::Ingest {
                job,
                producer,
                seq,
                parts,
                schema,
                rows,
            } => match self.running_mut(&job) {
                Ok(j) => j.ingest(index, &producer, seq, parts, schema, &rows),
                Err(reply) => reply,
            },
            Command::Batch { commands } => Reply::Batch {
                replies: commands
                    .into_iter()
                    .map(|c| self.apply_owned(index, c))
                    .collect(),
            },
            Command::Checkpoint {
                job,
                partition,
                node,
                generation,
                epoch,
                through,
                manifest,
                state,
            } => match self.running_mut(&job) {
                Ok(j) => {
                    let claim = CommitClaim {
                        partition,
                        node,
                        generation,
                    };
                    let checkpoint = CommittedCheckpoint {
                        node,
                        generation,
                        epoch,
                        through,
                        committed_at: index,
                        manifest,
                        state,
                    };
                    j.commit(claim, checkpoint)
                }
                Err(reply) => reply,
            },
        }
    }

    fn running_mut(&mut self, job: &str) -> Result<&mut Job, Reply> {
        match self.jobs.get_mut(job) {
            None => Err(Reply::UnknownJob),
            Some(j) if !j.running => Err(Reply::JobStopped),
            Some(j) => Ok(j),
        }
    }

    fn submit(
        &mut self,
        index: LogIndex,
        job: String,
        pipeline_toml: String,
        partitions: u32,
        base_dir: String,
    ) -> Reply {
        if partitions == 0 {
            return Reply::NoPartitions;
        }
        let last_issued = match self.jobs.get(&job) {
            Some(j) if j.running => return Reply::JobExists,
            // A resubmitted job continues its stopped predecessor's generation counter, so a
            // worker of the old run can never commit into the new one.
            Some(j) => j.last_issued,
            None => Generation(0),
        };
        let fresh = Job {
            pipeline_toml,
            base_dir,
            schema: None,
            partitions,
            running: true,
            submitted_at: index,
            assignment: Assignment::new(),
            last_issued,
            producers: Producers::new(PRODUCERS_PER_JOB),
            partition_states: vec![PartitionState::default(); partitions as usize],
        };
        self.jobs.insert(job, fresh);
        Reply::Applied
    }

    fn stop(&mut self, job: &str) -> Reply {
        let j = match self.running_mut(job) {
            Ok(j) => j,
            Err(reply) => return reply,
        };
        j.running = false;
        j.assignment.clear();
        j.producers = Producers::new(PRODUCERS_PER_JOB);
        for partition in &mut j.partition_states {
            partition.events.clear();
        }
        Reply::Applied
    }

    /// The job named `job`, running or stopped.
    pub fn job(&self, job: &str) -> Option<&Job> {
        self.jobs.get(job)
    }

    /// Every job, by name.
    pub fn jobs(&self) -> impl Iterator<Item = (&str, &Job)> {
        self.jobs.iter().map(|(name, j)| (name.as_str(), j))
    }

    fn partition(&self, job: &str, partition: PartitionId) -> Result<&PartitionState, ReadError> {
        let j = self.jobs.get(job).ok_or_else(|| ReadError::UnknownJob {
            job: job.to_owned(),
        })?;
        j.partition_states
            .get(partition.0 as usize)
            .ok_or_else(|| ReadError::UnknownPartition {
                job: job.to_owned(),
                partition,
            })
    }

    /// The events of `partition` of `job` after log index `after`, in log order: what the
    /// partition's owner processes after resuming from a checkpoint covering `after`. An index
    /// may come several times in a row (the parts of a batch): a reader that keeps its place
    /// as a log index must take all of an index's parts at once. Refused
    /// with [`ReadError::Covered`] if a checkpoint covering more than `after` dropped some of
    /// them.
    pub fn events_after(
        &self,
        job: &str,
        partition: PartitionId,
        after: LogIndex,
    ) -> Result<impl Iterator<Item = (LogIndex, &[u8])> + '_, ReadError> {
        let p = self.partition(job, partition)?;
        if !self.jobs[job].running {
            return Err(ReadError::Stopped {
                job: job.to_owned(),
            });
        }
        if let Some(c) = &p.checkpoint {
            if after < c.through {
                return Err(ReadError::Covered { through: c.through });
            }
        }
        Ok(p.events
            .range((Bound::Excluded(after), Bound::Unbounded))
            .flat_map(|(index, parts)| parts.iter().map(|bytes| (*index, bytes.as_slice()))))
    }

    /// The last committed checkpoint of `partition` of `job`, if it has one.
    pub fn last_checkpoint(
        &self,
        job: &str,
        partition: PartitionId,
    ) -> Result<Option<&CommittedCheckpoint>, ReadError> {
        Ok(self.partition(job, partition)?.checkpoint.as_ref())
    }

    /// The leader's next assignment of `job` over the `live` workers, as the command to
    /// propose, or `None` if every partition already has a live owner and the balance holds.
    /// Computed with [`rebalance`] from the job's assignment and generation counter, which the
    /// command names as its base, so it is refused if another assignment is applied first.
    pub fn plan_assignment(
        &self,
        job: &str,
        live: &BTreeSet<NodeId>,
    ) -> Result<Option<Command>, PlanError> {
        let j = self.jobs.get(job).ok_or_else(|| ReadError::UnknownJob {
            job: job.to_owned(),
        })?;
        if !j.running {
            return Err(ReadError::Stopped {
                job: job.to_owned(),
            }
            .into());
        }
        let next = rebalance(&j.assignment, j.partitions, live, j.last_issued)?;
        if next.moves.is_empty() && next.dropped.is_empty() {
            return Ok(None);
        }
        Ok(Some(Command::Assign {
            job: job.to_owned(),
            based_on: j.last_issued,
            assignment: next.assignment,
            last_issued: next.last_issued,
        }))
    }

    /// The SHA-256 of the state's canonical encoding (postcard over ordered maps): equal on
    /// every replica that applied the same log.
    pub fn checksum(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }

    /// The state's canonical encoding, as a snapshot carries it.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("the state is plain data and always encodes")
    }

    /// Decodes [`ClusterState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl Job {
    fn assign(
        &mut self,
        based_on: Generation,
        assignment: Assignment,
        last_issued: Generation,
    ) -> Reply {
        if based_on != self.last_issued {
            return Reply::AssignmentConflict {
                current: self.last_issued,
            };
        }
        if let Some(&partition) = assignment.keys().find(|p| p.0 >= self.partitions) {
            return Reply::InvalidAssignment { partition };
        }
        let mut fresh = BTreeSet::new();
        for partition in (0..self.partitions).map(PartitionId) {
            let Some(owner) = assignment.get(&partition) else {
                return Reply::InvalidAssignment { partition };
            };
            let unchanged = self.assignment.get(&partition) == Some(owner);
            let issued_now = owner.generation > based_on
                && owner.generation <= last_issued
                && fresh.insert(owner.generation);
            if !unchanged && !issued_now {
                return Reply::InvalidAssignment { partition };
            }
        }
        self.assignment = assignment;
        self.last_issued = self.last_issued.max(last_issued);
        Reply::Applied
    }

    fn ingest(
        &mut self,
        index: LogIndex,
        producer: &str,
        seq: u64,
        parts: Vec<(PartitionId, Vec<u8>)>,
        schema: Option<Vec<u8>>,
        rows: &[u64],
    ) -> Reply {
        // Check the whole request before recording its sequence number: a refused request
        // must not count as applied.
        let mut seen = BTreeSet::new();
        for (partition, _) in &parts {
            if partition.0 >= self.partitions {
                return Reply::UnknownPartition {
                    partition: *partition,
                };
            }
            if !seen.insert(*partition) {
                return Reply::RepeatedPartition {
                    partition: *partition,
                };
            }
        }
        if let (Some(theirs), Some(ours)) = (&schema, &self.schema) {
            if theirs != ours {
                return Reply::SchemaConflict {
                    schema: ours.clone(),
                };
            }
        }
        match self.producers.apply(producer, seq, index).decision {
            Decision::Duplicate { last } => Reply::Duplicate { last },
            Decision::Gap { expected } => Reply::Gap { expected },
            Decision::Apply => {
                if self.schema.is_none() {
                    self.schema = schema;
                }
                for (i, (partition, bytes)) in parts.into_iter().enumerate() {
                    let state = &mut self.partition_states[partition.0 as usize];
                    state.ingested_rows += rows.get(i).copied().unwrap_or(0);
                    state.ingested_bytes += bytes.len() as u64;
                    state.events.entry(index).or_default().push(bytes);
                }
                Reply::Applied
            }
        }
    }

    fn commit(&mut self, claim: CommitClaim, checkpoint: CommittedCheckpoint) -> Reply {
        if let Err(fenced) = check_commit(self.assignment.get(&claim.partition), &claim) {
            return Reply::Fenced(fenced);
        }
        if checkpoint.through >= checkpoint.committed_at {
            return Reply::CheckpointAhead {
                through: checkpoint.through,
                index: checkpoint.committed_at,
            };
        }
        // The fencing check found an owner, so the partition exists.
        let state = &mut self.partition_states[claim.partition.0 as usize];
        if let Some(last) = &state.checkpoint {
            if checkpoint.epoch <= last.epoch || checkpoint.through < last.through {
                return Reply::StaleCheckpoint {
                    epoch: last.epoch,
                    through: last.through,
                };
            }
        }
        // `through < committed_at`, so `through + 1` does not overflow.
        state.events = state.events.split_off(&(checkpoint.through + 1));
        state.checkpoint = Some(checkpoint);
        Reply::Applied
    }
}

#[cfg(test)]
mod tests;
