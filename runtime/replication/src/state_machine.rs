//! The state machine of a group: openraft's [`RaftStateMachine`] over [`ClusterState`], with
//! durable snapshots in a directory.
//!
//! The state lives in memory. What is durable is the last snapshot (see [`crate::snapshot`]
//! for its format), one file `snapshot-<id>.snap` in the directory: after a restart the state
//! is that snapshot, and openraft re-applies the log after it. The snapshot is bounded, since
//! the state keeps only each partition's last checkpoint and the events after it; building one
//! takes a copy of the state under a read lock and encodes and writes it outside the lock.
//!
//! # Durability points
//!
//! - **build_snapshot**: the snapshot file is written with [`quiver_durable::write_durably`]
//!   (temporary file, fsync, rename, directory fsync) before it becomes the current snapshot;
//!   the previous one is deleted after.
//! - **install_snapshot**: the received bytes are checked (group, version, checksums, the
//!   body's SHA-256, the metadata they were sent with), then written the same way, and only
//!   then replace the state.
//! - **apply**: nothing is written; the log holds the entries until a snapshot covers them.
//!
//! # Opening
//!
//! [`StateMachineStore::open`] loads the newest snapshot and deletes older ones that a crash
//! left behind. A damaged snapshot file is refused naming the file
//! ([`StoreError::Damaged`]); [`StateMachineStore::open_repairing`] moves it aside and uses
//! the newest intact one, or none: then the node needs the log from the start, or a snapshot
//! from the leader (see [`crate::group`], which checks that the log can rebuild the state).

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};

use crate::command::Reply;
use crate::directory::{self, Repair};
use crate::error::StoreError;
use crate::snapshot;
use crate::state::ClusterState;
use crate::types::{
    Entry, GroupId, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The state and what it was built from.
#[derive(Debug, Clone, Default)]
struct Machine {
    state: ClusterState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The snapshot on disk.
#[derive(Debug, Clone)]
struct Current {
    meta: SnapshotMeta,
    path: PathBuf,
}

struct Shared {
    dir: PathBuf,
    group: GroupId,
    machine: RwLock<Machine>,
    /// Also serialises snapshot writes.
    current: Mutex<Option<Current>>,
    /// Snapshots received from the leader and installed since the store was opened.
    installed: std::sync::atomic::AtomicU64,
    _lock: File,
}

impl Shared {
    fn machine(&self) -> RwLockReadGuard<'_, Machine> {
        // Applying never leaves the state half-changed on a panic of its own making (the
        // state's functions do not panic on any input), so a poisoned lock is still usable.
        self.machine.read().unwrap_or_else(|p| p.into_inner())
    }

    fn machine_mut(&self) -> RwLockWriteGuard<'_, Machine> {
        self.machine.write().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the snapshot `bytes` described by `meta` the current one, durably, unless (when
    /// not `forced`) a newer one is current already. Deletes the previous one.
    fn store(&self, meta: &SnapshotMeta, bytes: &[u8], forced: bool) -> Result<(), StoreError> {
        let mut current = self.current();
        if !forced
            && current
                .as_ref()
                .is_some_and(|c| c.meta.last_log_id > meta.last_log_id)
        {
            return Ok(());
        }
        // Named after the last log id rather than the id it came with, which is only a label.
        let path = self.dir.join(snapshot::file_name(&snapshot::snapshot_id(
            meta.last_log_id,
        )));
        // Durability point of a snapshot.
        quiver_durable::write_durably(&path, bytes).map_err(StoreError::io(&path))?;
        let previous = current.replace(Current {
            meta: meta.clone(),
            path: path.clone(),
        });
        if let Some(previous) = previous.filter(|p| p.path != path) {
            directory::remove(&previous.path)?;
        }
        Ok(())
    }

    fn read_current(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let current = self.current();
        let Some(c) = current.as_ref() else {
            return Ok(None);
        };
        let bytes = std::fs::read(&c.path).map_err(StoreError::io(&c.path))?;
        Ok(Some(Snapshot {
            meta: c.meta.clone(),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// The state machine of one group (see the module's docs).
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

/// Reads the state while the state machine goes on applying: what workers and the API use.
#[derive(Clone)]
pub struct StateReader {
    shared: Arc<Shared>,
}

/// Builds a snapshot of the state as it is when [`RaftSnapshotBuilder::build_snapshot`] runs.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl StateMachineStore {
    /// Opens (creating if needed) the state machine of `group` in `dir`, loading its newest
    /// snapshot; refuses a damaged snapshot file.
    pub fn open(dir: impl AsRef<Path>, group: GroupId) -> Result<StateMachineStore, StoreError> {
        let (store, repairs) = Self::load(dir.as_ref(), group, false)?;
        debug_assert!(repairs.is_empty());
        Ok(store)
    }

    /// Opens the state machine of `group` in `dir`, moving damaged snapshot files aside and
    /// loading the newest intact one (or none). Returns what it did.
    pub fn open_repairing(
        dir: impl AsRef<Path>,
        group: GroupId,
    ) -> Result<(StateMachineStore, Vec<Repair>), StoreError> {
        Self::load(dir.as_ref(), group, true)
    }

    fn load(
        dir: &Path,
        group: GroupId,
        repair: bool,
    ) -> Result<(StateMachineStore, Vec<Repair>), StoreError> {
        let lock = directory::lock(dir)?;
        directory::remove_temporaries(dir)?;
        let mut repairs = Vec::new();
        let mut newest: Option<(SnapshotMeta, ClusterState, PathBuf)> = None;
        let mut older = Vec::new();
        let files = directory::list(dir, |name| snapshot::is_file_name(name).then_some(()))?;
        for (_, path) in files {
            let bytes = std::fs::read(&path).map_err(StoreError::io(&path))?;
            match snapshot::decode(&path, &bytes, group) {
                Ok((meta, state)) => {
                    if newest
                        .as_ref()
                        .is_some_and(|(m, _, _)| m.last_log_id >= meta.last_log_id)
                    {
                        older.push(path);
                    } else if let Some((_, _, replaced)) = newest.replace((meta, state, path)) {
                        older.push(replaced);
                    }
                }
                Err(e @ StoreError::Damaged { .. }) if repair => {
                    tracing::warn!(error = %e, "a snapshot is damaged and is not used");
                    let to = directory::move_aside(&path)?;
                    repairs.push(Repair::MovedAside { file: path, to });
                }
                Err(e) => return Err(e),
            }
        }
        // Left by a crash between writing a newer snapshot and deleting the older one.
        for path in older {
            directory::remove(&path)?;
        }
        let (machine, current) = match newest {
            Some((meta, state, path)) => {
                let machine = Machine {
                    state,
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                };
                (machine, Some(Current { meta, path }))
            }
            None => (Machine::default(), None),
        };
        let shared = Shared {
            dir: dir.to_path_buf(),
            group,
            machine: RwLock::new(machine),
            current: Mutex::new(current),
            installed: std::sync::atomic::AtomicU64::new(0),
            _lock: lock,
        };
        let store = StateMachineStore {
            shared: Arc::new(shared),
        };
        Ok((store, repairs))
    }

    /// A reader of the state that shares the store.
    pub fn reader(&self) -> StateReader {
        StateReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.machine().last_applied
    }

    /// The metadata of the snapshot on disk, if any.
    pub fn current_snapshot(&self) -> Option<SnapshotMeta> {
        self.shared.current().as_ref().map(|c| c.meta.clone())
    }
}

impl StateReader {
    /// How many snapshots from the leader this node installed since it started: a follower
    /// that caught up from a snapshot rather than from log entries shows it here.
    pub fn snapshots_installed(&self) -> u64 {
        self.shared
            .installed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Calls `read` with the state and the log id it was last applied at.
    pub fn read<T>(&self, read: impl FnOnce(&ClusterState, Option<LogId>) -> T) -> T {
        let machine = self.shared.machine();
        read(&machine.state, machine.last_applied)
    }

    /// The state's checksum (see [`ClusterState::checksum`]) and the log id it is at.
    pub fn checksum(&self) -> ([u8; 32], Option<LogId>) {
        self.read(|state, last| (state.checksum(), last))
    }
}

/// Runs blocking file work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(op).await {
        Ok(done) => done,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // A copy, so that applying goes on while the snapshot is encoded and written.
        let (meta, state) = {
            let machine = self.shared.machine();
            let meta = SnapshotMeta {
                last_log_id: machine.last_applied,
                last_membership: machine.membership.clone(),
                snapshot_id: snapshot::snapshot_id(machine.last_applied),
            };
            (meta, machine.state.clone())
        };
        let shared = Arc::clone(&self.shared);
        let written = meta.clone();
        let bytes = blocking(move || {
            let bytes = snapshot::encode(shared.group, &written, &state);
            shared.store(&written, &bytes, false)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let machine = self.shared.machine();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut machine = self.shared.machine_mut();
        let mut replies = Vec::new();
        for entry in entries {
            machine.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Reply::Applied,
                EntryPayload::Normal(command) => {
                    machine.state.apply_owned(entry.log_id.index, command)
                }
                EntryPayload::Membership(membership) => {
                    machine.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Reply::Applied
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let shared = Arc::clone(&self.shared);
        let meta = meta.clone();
        let signature = meta.signature();
        blocking(move || {
            let bytes = snapshot.into_inner();
            let name = snapshot::file_name(&snapshot::snapshot_id(meta.last_log_id));
            let (found, state) = snapshot::decode(&shared.dir.join(name), &bytes, shared.group)?;
            if found != meta {
                return Err(StoreError::SnapshotMismatch {
                    expected: meta.to_string(),
                    found: found.to_string(),
                });
            }
            // Durable before the state is replaced.
            shared.store(&meta, &bytes, true)?;
            let mut machine = shared.machine_mut();
            machine.state = state;
            machine.last_applied = meta.last_log_id;
            machine.membership = meta.last_membership;
            shared
                .installed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(signature), AnyError::new(&e)).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let shared = Arc::clone(&self.shared);
        blocking(move || shared.read_current())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)).into())
    }
}

#[cfg(test)]
mod tests;
