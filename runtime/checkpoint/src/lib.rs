//! Checkpoints for streaming runs: the protocol as pure logic, the store behind a trait.
//!
//! The protocol is the Flink/Arroyo one. The [`Coordinator`] starts epoch *n* and every task
//! receives barrier *n* in-band, after the rows of epoch *n*. At the barrier a task snapshots
//! its state, closes its sink's temporary files (named by job, partition and epoch, see
//! [`names`]) and acknowledges with a [`TaskSnapshot`]. When every task has acknowledged, the
//! coordinator returns one [`Manifest`]: source offsets, state, pending files and the writer's
//! generation. Writing that manifest to the [`store`] is the commit point. Only then are the
//! pending files renamed to their final names, which is idempotent, so recovery can redo it.
//!
//! [`recover`] is what a restarted job does with the last manifest and the files it finds:
//! complete the manifest's renames, delete every temporary file the manifest does not name
//! (rows of an epoch that never committed, which the rewound sources will produce again), and
//! rewind the sources to the manifest's offsets.
//!
//! Nothing in this crate does I/O except [`store`], so the protocol is tested exhaustively
//! and fast; the streaming driver performs the actions it returns.
//!
//! Uses `quiver-durable` only: no Arrow, no wasmtime.

pub mod names;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use store::{CheckpointStore, LocalStore, StoreError};

/// A checkpoint's number. Epoch 0 is "nothing committed yet"; the first checkpoint is epoch 1.
pub type Epoch = u64;

/// Who may write checkpoints: every restart takes a higher generation, and the store refuses a
/// write from a lower one (fencing: a stale writer that wakes up cannot commit).
pub type Generation = u64;

/// Names one task of a job: the plugin chain running over one partition.
pub type TaskId = u32;

/// Where a source is: a byte offset in a file, a sequence number in a log, a set of files
/// done. Opaque to the protocol; each source kind reads back its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOffset(pub serde_json::Value);

/// A file a sink closed at a barrier and that becomes visible when the checkpoint commits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PendingFile {
    /// Its temporary name (see [`names::temp_name`]), relative to the sink's directory.
    pub temp: String,
    /// The name it takes on commit.
    pub fin: String,
}

/// A blob of task state saved at a barrier, referred to by its checksum so that a damaged
/// blob is detected when it is read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRef {
    /// Where the store keeps it.
    pub key: String,
    /// Its length in bytes.
    pub len: u64,
    /// Lowercase hex SHA-256 of its bytes.
    pub sha256: String,
}

/// What one task reports at barrier `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// The files its sink closed for this epoch.
    pub pending: Vec<PendingFile>,
    /// Its state, if it has any.
    pub state: Option<StateRef>,
}

/// The commit record of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job it belongs to.
    pub job: String,
    /// The generation of the writer.
    pub generation: Generation,
    /// The checkpoint's epoch.
    pub epoch: Epoch,
    /// Each source's position after the last row of this epoch.
    pub sources: BTreeMap<String, SourceOffset>,
    /// Each task's state after this epoch.
    pub state: BTreeMap<TaskId, StateRef>,
    /// The files this checkpoint makes visible (renamed after the manifest is stored).
    pub pending: Vec<PendingFile>,
}

/// A protocol violation: a bug in the driver, reported rather than acted upon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A barrier was started while another is still collecting acknowledgements.
    #[error("checkpoint {in_flight} is still in flight; cannot start another")]
    InFlight {
        /// The epoch in flight.
        in_flight: Epoch,
    },
    /// An acknowledgement for an epoch that is not in flight.
    #[error("task {task} acknowledged checkpoint {epoch}, but {expected} is in flight")]
    WrongEpoch {
        /// The task.
        task: TaskId,
        /// The epoch it acknowledged.
        epoch: Epoch,
        /// What is in flight (0: none).
        expected: Epoch,
    },
    /// An acknowledgement from a task the job does not have.
    #[error("task {0} is not part of this job")]
    UnknownTask(TaskId),
    /// The same task acknowledged twice.
    #[error("task {task} acknowledged checkpoint {epoch} twice")]
    Duplicate {
        /// The task.
        task: TaskId,
        /// The epoch.
        epoch: Epoch,
    },
}

/// The coordinator's side of the protocol for one job and generation.
#[derive(Debug, Clone)]
pub struct Coordinator {
    job: String,
    generation: Generation,
    tasks: BTreeSet<TaskId>,
    /// The last epoch committed (0 if none).
    committed: Epoch,
    in_flight: Option<InFlight>,
}

#[derive(Debug, Clone)]
struct InFlight {
    epoch: Epoch,
    sources: BTreeMap<String, SourceOffset>,
    acks: BTreeMap<TaskId, TaskSnapshot>,
}

impl Coordinator {
    /// A coordinator for `tasks`, resuming after `committed` (0 for a fresh job) with a
    /// generation higher than any before.
    pub fn new(
        job: &str,
        generation: Generation,
        tasks: impl IntoIterator<Item = TaskId>,
        committed: Epoch,
    ) -> Self {
        Coordinator {
            job: job.into(),
            generation,
            tasks: tasks.into_iter().collect(),
            committed,
            in_flight: None,
        }
    }

    /// The last committed epoch.
    pub fn committed(&self) -> Epoch {
        self.committed
    }

    /// The epoch whose acknowledgements are being collected, if any.
    pub fn in_flight(&self) -> Option<Epoch> {
        self.in_flight.as_ref().map(|f| f.epoch)
    }

    /// Starts the next checkpoint. `sources` are the source positions at the barrier: the
    /// driver injects the barrier after the last row read before those positions. Returns the
    /// barrier's epoch.
    pub fn start(
        &mut self,
        sources: BTreeMap<String, SourceOffset>,
    ) -> Result<Epoch, ProtocolError> {
        if let Some(f) = &self.in_flight {
            return Err(ProtocolError::InFlight { in_flight: f.epoch });
        }
        let epoch = self.committed + 1;
        self.in_flight = Some(InFlight {
            epoch,
            sources,
            acks: BTreeMap::new(),
        });
        Ok(epoch)
    }

    /// Records a task's acknowledgement. When it is the last one, returns the manifest to
    /// write: the caller stores it, then calls [`Coordinator::stored`].
    pub fn ack(
        &mut self,
        task: TaskId,
        epoch: Epoch,
        snapshot: TaskSnapshot,
    ) -> Result<Option<Manifest>, ProtocolError> {
        if !self.tasks.contains(&task) {
            return Err(ProtocolError::UnknownTask(task));
        }
        let Some(f) = self.in_flight.as_mut().filter(|f| f.epoch == epoch) else {
            return Err(ProtocolError::WrongEpoch {
                task,
                epoch,
                expected: self.in_flight().unwrap_or(0),
            });
        };
        if f.acks.insert(task, snapshot).is_some() {
            return Err(ProtocolError::Duplicate { task, epoch });
        }
        if f.acks.len() < self.tasks.len() {
            return Ok(None);
        }
        let mut pending: Vec<PendingFile> = f
            .acks
            .values()
            .flat_map(|s| s.pending.iter().cloned())
            .collect();
        pending.sort();
        Ok(Some(Manifest {
            job: self.job.clone(),
            generation: self.generation,
            epoch,
            sources: f.sources.clone(),
            state: f
                .acks
                .iter()
                .filter_map(|(t, s)| s.state.clone().map(|st| (*t, st)))
                .collect(),
            pending,
        }))
    }

    /// The manifest of the in-flight epoch was stored: it is committed. Returns the renames
    /// to perform (each idempotent: see [`commit_actions`]).
    pub fn stored(&mut self, manifest: &Manifest) -> Vec<Action> {
        if self.in_flight() == Some(manifest.epoch) {
            self.in_flight = None;
            self.committed = manifest.epoch;
        }
        commit_actions(manifest)
    }

    /// Abandons the in-flight checkpoint (a task failed before acknowledging). Its temporary
    /// files stay until recovery deletes them as orphans.
    pub fn abort(&mut self) {
        self.in_flight = None;
    }
}

/// One filesystem step the driver performs for the protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Rename `temp` to `fin`, unless `fin` already exists and `temp` does not (done before).
    Rename {
        /// The temporary name.
        temp: String,
        /// The final name.
        fin: String,
    },
    /// Delete a temporary file that no committed checkpoint names.
    Delete(String),
}

/// The renames that make a stored manifest's files visible.
pub fn commit_actions(manifest: &Manifest) -> Vec<Action> {
    manifest
        .pending
        .iter()
        .map(|p| Action::Rename {
            temp: p.temp.clone(),
            fin: p.fin.clone(),
        })
        .collect()
}

/// What a restarted job does before it reads again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Renames to complete, then orphans to delete.
    pub actions: Vec<Action>,
    /// Where each source resumes (empty: from its start).
    pub sources: BTreeMap<String, SourceOffset>,
    /// Each task's state to restore.
    pub state: BTreeMap<TaskId, StateRef>,
    /// The last committed epoch; the next checkpoint is this + 1.
    pub committed: Epoch,
    /// The generation the restarted job writes with.
    pub generation: Generation,
}

/// Plans recovery of `job` from its last stored manifest (`None`: nothing was committed) and
/// the temporary files of this job found in the sink's directory. `last_generation` is the
/// highest generation the store has seen, so the new one fences every earlier writer.
pub fn recover(
    job: &str,
    last: Option<&Manifest>,
    temp_files: &[String],
    last_generation: Generation,
) -> Recovery {
    let mut actions = last.map(commit_actions).unwrap_or_default();
    let named: BTreeSet<&str> = last
        .map(|m| m.pending.iter().map(|p| p.temp.as_str()).collect())
        .unwrap_or_default();
    let committed = last.map_or(0, |m| m.epoch);
    let mut orphans: Vec<&String> = temp_files
        .iter()
        .filter(|t| !named.contains(t.as_str()))
        // Only this job's files: another job may share the directory.
        .filter(|t| names::parse_temp(t).is_some_and(|n| n.job == job))
        .collect();
    orphans.sort();
    actions.extend(orphans.into_iter().map(|t| Action::Delete(t.clone())));
    Recovery {
        actions,
        sources: last.map(|m| m.sources.clone()).unwrap_or_default(),
        state: last.map(|m| m.state.clone()).unwrap_or_default(),
        committed,
        generation: last_generation.max(last.map_or(0, |m| m.generation)) + 1,
    }
}

#[cfg(test)]
mod tests;
