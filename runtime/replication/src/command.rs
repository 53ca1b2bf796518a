//! The commands written to the replicated log, and the state machine's replies.
//!
//! A command is plain data: everything the state machine needs to apply it is in the command
//! or in the state, so every replica applying the same log reaches the same state. Decisions
//! that need a clock or a view of the live nodes (which partitions move where) are taken by
//! the leader before it writes the command ([`crate::state::ClusterState::plan_assignment`]),
//! and the state machine only checks that they still fit the state when they are applied.

use serde::{Deserialize, Serialize};

use quiver_coordination::assignment::Assignment;
use quiver_coordination::fencing::Fenced;
use quiver_coordination::{Generation, LogIndex, NodeId, PartitionId};

/// A checkpoint's number within a partition; the first is 1. Each commit must carry a higher
/// epoch than the last one committed for the partition.
pub type Epoch = u64;

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Define a job. It has no owners until an [`Command::Assign`] gives it some, but accepts
    /// events at once.
    SubmitJob {
        /// The job's name, unique among running jobs.
        job: String,
        /// Its pipeline definition (the TOML text), kept for the workers.
        pipeline_toml: String,
        /// How many partitions its input is split into (at least one).
        partitions: u32,
        /// The directory the pipeline's relative paths resolve against (where its file was),
        /// absolute: the plugins and the sink must be reachable there from every node.
        base_dir: String,
    },
    /// Stop a job: its partitions lose their owners (so any further commit is fenced), its
    /// events and producers are dropped. Its last checkpoints and generation counter stay, and
    /// a later [`Command::SubmitJob`] of the same name starts afresh with generations that
    /// never repeat the old ones.
    StopJob {
        /// The job.
        job: String,
    },
    /// The leader's new assignment of a job's partitions, computed with
    /// [`quiver_coordination::assignment::rebalance`] from the job's assignment and generation
    /// counter as of `based_on`.
    Assign {
        /// The job.
        job: String,
        /// The generation counter the decision was computed from. Refused if the job's counter
        /// has moved since (another assignment was applied first), so that no generation is
        /// ever issued twice.
        based_on: Generation,
        /// The owner of every partition `0..partitions`.
        assignment: Assignment,
        /// The job's generation counter after the decision.
        last_issued: Generation,
    },
    /// Events ingested for a job, already split into its partitions at the door.
    Ingest {
        /// The job.
        job: String,
        /// Who sent them; with `seq`, makes a retried request apply once
        /// ([`quiver_coordination::idempotency`]).
        producer: String,
        /// The producer's sequence number for this request.
        seq: u64,
        /// The events of each partition, at most one part per partition: an Arrow IPC stream,
        /// opaque here.
        #[serde(with = "crate::bytes::parts")]
        parts: Vec<(PartitionId, Vec<u8>)>,
        /// The schema the parts were encoded with (an Arrow IPC stream without batches), when
        /// the door had to infer it because the job had none yet: the first such request to
        /// apply fixes the job's schema, and a later one that inferred another is refused with
        /// [`Reply::SchemaConflict`].
        #[serde(with = "serde_bytes")]
        schema: Option<Vec<u8>>,
        /// The rows of each part, in the order of `parts` (for the status; may be empty).
        rows: Vec<u64>,
    },
    /// A worker commits a checkpoint of a partition it owns.
    Checkpoint {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// The worker committing.
        node: NodeId,
        /// The generation under which it owns the partition.
        generation: Generation,
        /// The checkpoint's epoch.
        epoch: Epoch,
        /// The events of the partition up to this log index are reflected in the checkpoint:
        /// the state drops them, and a new owner resumes after it.
        through: LogIndex,
        /// The checkpoint's manifest, opaque here.
        #[serde(with = "serde_bytes")]
        manifest: Vec<u8>,
        /// The operators' state, if small enough to travel in the log; opaque here.
        #[serde(with = "serde_bytes")]
        state: Option<Vec<u8>>,
    },
    /// Commands that reached a node while its earlier writes were under way, grouped there
    /// (`quiver-node`'s batching) and written as one log entry, so that one round of
    /// replication and one fsync per node carry them all; a leader may nest a follower's
    /// batch in its own. Each is applied in turn, at the
    /// entry's log index, exactly as if it were alone (one may be refused while the next
    /// applies); the reply is a [`Reply::Batch`] of their replies, in order.
    Batch {
        /// The commands, in the order they are applied.
        commands: Vec<Command>,
    },
}

impl Command {
    /// The job the command is about (`None` for a batch, which may span several).
    pub fn job(&self) -> Option<&str> {
        match self {
            Command::SubmitJob { job, .. }
            | Command::StopJob { job }
            | Command::Assign { job, .. }
            | Command::Ingest { job, .. }
            | Command::Checkpoint { job, .. } => Some(job),
            Command::Batch { .. } => None,
        }
    }

    /// About how many bytes the command takes in the log: what bounds a batch.
    pub fn approx_bytes(&self) -> usize {
        const FIXED: usize = 64;
        FIXED
            + match self {
                Command::SubmitJob { pipeline_toml, .. } => pipeline_toml.len(),
                Command::StopJob { .. } | Command::Assign { .. } => 0,
                Command::Ingest { parts, schema, .. } => {
                    parts.iter().map(|(_, b)| b.len()).sum::<usize>()
                        + schema.as_ref().map_or(0, Vec::len)
                }
                Command::Checkpoint {
                    manifest, state, ..
                } => manifest.len() + state.as_ref().map_or(0, Vec::len),
                Command::Batch { commands } => commands.iter().map(Command::approx_bytes).sum(),
            }
    }
}

/// What applying a command did. Anything but [`Reply::Applied`] left the state unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The command was applied (also the reply to blank and membership entries).
    Applied,
    /// An ingest request already applied (a retry): acknowledge it again.
    Duplicate {
        /// The producer's last applied sequence number.
        last: u64,
    },
    /// An ingest request arrived before an earlier one of its producer: resend from
    /// `expected`.
    Gap {
        /// The sequence number the producer's next request must carry.
        expected: u64,
    },
    /// A checkpoint commit from a worker that does not own the partition under that
    /// generation: the worker must stop processing the partition.
    Fenced(Fenced),
    /// No job of that name exists.
    UnknownJob,
    /// A running job of that name exists already.
    JobExists,
    /// The job was stopped.
    JobStopped,
    /// A job must have at least one partition.
    NoPartitions,
    /// A partition the job does not have.
    UnknownPartition {
        /// The partition named.
        partition: PartitionId,
    },
    /// An ingest request with two parts for one partition.
    RepeatedPartition {
        /// The partition named twice.
        partition: PartitionId,
    },
    /// An assignment computed from an outdated generation counter: recompute it.
    AssignmentConflict {
        /// The job's generation counter now.
        current: Generation,
    },
    /// An assignment that does not cover the job's partitions exactly, or whose new owners do
    /// not carry fresh generations within `(based_on, last_issued]`.
    InvalidAssignment {
        /// The first partition found wrong.
        partition: PartitionId,
    },
    /// A checkpoint that is not after the partition's last one (a lower or equal epoch, or
    /// fewer events covered).
    StaleCheckpoint {
        /// The last committed checkpoint's epoch.
        epoch: Epoch,
        /// The log index it covers.
        through: LogIndex,
    },
    /// An ingest request encoded with a schema other than the one the job already has: encode
    /// it again with this one.
    SchemaConflict {
        /// The job's schema (an Arrow IPC stream without batches).
        #[serde(with = "serde_bytes")]
        schema: Vec<u8>,
    },
    /// The replies to the commands of a [`Command::Batch`], in order.
    Batch {
        /// One reply per command.
        replies: Vec<Reply>,
    },
    /// A checkpoint claiming events at or beyond its own log index, which it cannot have read.
    CheckpointAhead {
        /// What it claimed to cover.
        through: LogIndex,
        /// Its own log index.
        index: LogIndex,
    },
}
