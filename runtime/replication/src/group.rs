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
//! lost to damage. [`open`] and [`open_repairing`] then refuse with
//! [`StoreError::SnapshotBehindLog`]: nothing on the node can rebuild the state. The node
//! repairs it from the leader instead — it leaves the cluster, [`set_log_aside`] empties its
//! log (keeping the vote), and it joins again, receiving the leader's snapshot (`quiver-node`
//! does this for `quiver node --repair --join ADDR`).

use std::path::{Path, PathBuf};

use crate::directory::{self, Repair, SET_ASIDE_SUFFIX};
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
            // where the state began: nothing here can rebuild it. Starting empty at once is
            // not safe either: the cluster still counts the entries this node acknowledged,
            // and the leader its old progress. The node must leave first (see the module).
            return Err(StoreError::SnapshotBehindLog { purged, snapshot });
        }
    }
    Ok(GroupStorage {
        log,
        state_machine,
        repairs,
    })
}

/// Sets the log of `group` under `data_dir` aside — its segments and purge mark renamed
/// `*.set-aside`, durably — keeping its vote, so that it opens empty. Safe only once the
/// cluster no longer counts this node (it was removed from the membership), since the entries
/// it acknowledged go with its log. Fails if the log is open.
pub fn set_log_aside(
    data_dir: impl AsRef<Path>,
    group: GroupId,
) -> Result<Vec<Repair>, StoreError> {
    let dir = group_dir(data_dir.as_ref(), group).join("log");
    let _lock = directory::lock(&dir)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(StoreError::io(&dir))?
        .map(|e| e.map(|e| e.path()).map_err(StoreError::io(&dir)))
        .collect::<Result<_, _>>()?;
    files.retain(|f| {
        f.file_name().is_some_and(|n| n == "meta") || f.extension().is_some_and(|e| e == "seg")
    });
    // Segments before the purge mark: a crash midway leaves a purge mark with no segments
    // after it, which opens as an empty log purged through it, never as a log with a hole.
    files.sort_by_key(|f| f.file_name().is_some_and(|n| n == "meta"));
    let mut repairs = Vec::new();
    for file in files {
        let to = directory::rename_aside(&file, SET_ASIDE_SUFFIX)?;
        repairs.push(Repair::SetAside { file, to });
    }
    Ok(repairs)
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
            assert!(
                e.to_string().contains("--repair --join"),
                "it says what to do: {e}"
            );
        }
    }

    #[test]
    fn a_log_set_aside_opens_empty_with_its_vote() {
        let data = tempfile::tempdir().unwrap();
        let storage = open(data.path(), GroupId::FIRST, LogOptions::default()).unwrap();
        storage
            .log
            .append_entries((1..10).map(blank).collect())
            .unwrap();
        let vote = Vote::new(3, 2);
        storage.log.set_vote(vote).unwrap();
        storage.log.purge_through(blank(4).log_id).unwrap();
        // Refused while open.
        assert!(set_log_aside(data.path(), GroupId::FIRST).is_err());
        drop(storage);
        let repairs = set_log_aside(data.path(), GroupId::FIRST).unwrap();
        assert!(repairs.len() >= 2, "{repairs:?}");
        for r in &repairs {
            let Repair::SetAside { file, to } = r else {
                panic!("{r:?}")
            };
            assert!(!file.exists() && to.exists(), "{r:?}");
        }
        let reopened = open(data.path(), GroupId::FIRST, LogOptions::default()).unwrap();
        let state = reopened.log.log_state();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
        assert_eq!(reopened.log.vote(), Some(vote));
    }
}
