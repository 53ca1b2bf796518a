//! A node's storage for one group: its log and its state machine, opened together.
//!
//! ```text
//! <data dir>/group-<id>/log/      the log and the vote (crate::log_store)
//! <data dir>/group-<id>/state/    the state machine's snapshot (crate::state_machine)
//! ```
//!
//! Opening both together checks what neither can alone: that the log still holds every entry
//! after the snapshot, i.e. that it is not purged beyond it. That holds by construction
//! (openraft purges only entries a durable snapshot covers) and breaks only if a snapshot was
//! lost to damage. [`open`] then refuses with [`StoreError::SnapshotBehindLog`];
//! [`open_repairing`] discards the log's entries (keeping the vote), so that the leader sends
//! a snapshot.

use std::path::{Path, PathBuf};

use crate::directory::Repair;
use crate::error::StoreError;
use crate::log_store::{LogOptions, LogStore};
use crate::state_machine::StateMachineStore;
use crate::types::GroupId;

/// The opened storage of one group, ready to hand to `openraft::Raft::new`.
pub struct GroupStorage {
    /// The log and vote.
    pub log: LogStore,
    /// The state machine and its snapshots.
    pub state_machine: StateMachineStore,
    /// What [`open_repairing`] did to get past damage (always empty from [`open`]).
    pub repairs: Vec<Repair>,
}

/// The directory of `group` under a node's `data_dir`.
pub fn group_dir(data_dir: &Path, group: GroupId) -> PathBuf {
    data_dir.join(group.dir_name())
}

/// Opens the storage of `group` under `data_dir`, refusing any damage.
pub fn open(
    data_dir: impl AsRef<Path>,
    group: GroupId,
    options: LogOptions,
) -> Result<GroupStorage, StoreError> {
    let dir = group_dir(data_dir.as_ref(), group);
    let state_machine = StateMachineStore::open(dir.join("state"), group)?;
    let log = LogStore::open(dir.join("log"), group, options)?;
    if let Some(purged) = log.log_state().last_purged_log_id {
        let snapshot = state_machine.last_applied();
        if Some(purged) > snapshot {
            return Err(StoreError::SnapshotBehindLog { purged, snapshot });
        }
    }
    Ok(GroupStorage {
        log,
        state_machine,
        repairs: Vec::new(),
    })
}

/// Opens the storage of `group` under `data_dir`, getting past damage: see
/// [`LogStore::open_repairing`] and [`StateMachineStore::open_repairing`] for what is kept, and
/// the log store's docs for when that is safe. Files of another group or version are still
/// refused.
pub fn open_repairing(
    data_dir: impl AsRef<Path>,
    group: GroupId,
    options: LogOptions,
) -> Result<GroupStorage, StoreError> {
    let dir = group_dir(data_dir.as_ref(), group);
    let (state_machine, mut repairs) = StateMachineStore::open_repairing(dir.join("state"), group)?;
    let (log, log_repairs) = LogStore::open_repairing(dir.join("log"), group, options)?;
    repairs.extend(log_repairs);
    if let Some(purged) = log.log_state().last_purged_log_id {
        let snapshot = state_machine.last_applied();
        if Some(purged) > snapshot {
            // The snapshot was damaged and moved aside, and the log no longer reaches back to
            // where the state began: nothing here can rebuild it. Starting empty is not safe
            // either: the leader still counts this node's old progress and sends it entries
            // that start past the gap. The node needs a new identity (see the error).
            return Err(StoreError::SnapshotBehindLog { purged, snapshot });
        }
    }
    Ok(GroupStorage {
        log,
        state_machine,
        repairs,
    })
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::types::{Entry, LogId, Vote};

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn the_group_lives_in_its_own_directory() {
        let data = tempfile::tempdir().unwrap();
        let storage = open(data.path(), GroupId(3), LogOptions::default()).unwrap();
        assert_eq!(storage.log.dir(), data.path().join("group-3").join("log"));
        assert!(data.path().join("group-3").join("state").is_dir());
        assert!(storage.repairs.is_empty());
    }

    #[test]
    fn a_log_purged_beyond_the_snapshot_is_refused_even_when_repairing() {
        let data = tempfile::tempdir().unwrap();
        let storage = open(data.path(), GroupId::FIRST, LogOptions::default()).unwrap();
        storage
            .log
            .append_entries((0..10).map(blank).collect())
            .unwrap();
        storage.log.set_vote(Vote::new(1, 1)).unwrap();
        // As if the snapshot covering the purged entries had been lost to damage.
        let purged = blank(4).log_id;
        storage.log.purge_through(purged).unwrap();
        drop(storage);
        for repairing in [false, true] {
            let opened = if repairing {
                open_repairing(data.path(), GroupId::FIRST, LogOptions::default())
            } else {
                open(data.path(), GroupId::FIRST, LogOptions::default())
            };
            let e = opened.err().expect("refused");
            assert!(
                matches!(e, StoreError::SnapshotBehindLog { purged: p, snapshot: None } if p == purged),
                "{e}"
            );
            assert!(e.to_string().contains("new id"), "it says what to do: {e}");
        }
    }
}
