//! What can go wrong with the stored log, vote and snapshots.

use std::io;
use std::path::PathBuf;

use quiver_durable::records::Defect;

use crate::types::{GroupId, LogId};

/// Why the stored group could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Another process (or another store in this one) has the directory open.
    #[error("{} is in use by another store", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A file that was once durable is damaged: it is not used. See
    /// [`crate::log_store::LogStore::open_repairing`] for the way out.
    #[error("{} is damaged at byte {offset}: {damage}", file.display())]
    Damaged {
        /// The file.
        file: PathBuf,
        /// Where in it the damage starts.
        offset: u64,
        /// What is wrong.
        damage: Damage,
    },
    /// The file belongs to another Raft group: a configuration mistake, never repaired.
    #[error("{} belongs to {found}, not {expected}", file.display())]
    WrongGroup {
        /// The file.
        file: PathBuf,
        /// The group its header names.
        found: GroupId,
        /// The group being opened.
        expected: GroupId,
    },
    /// The file was written in a format version this build does not read.
    #[error("{} has format version {found}; this build reads version {supported}", file.display())]
    Version {
        /// The file.
        file: PathBuf,
        /// Its version.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The log was purged beyond the newest usable snapshot: the entries between them are
    /// gone, so the state cannot be rebuilt locally.
    #[error("the log is purged through {purged} but the snapshot ends at {snapshot:?}: the state before it is gone and cannot be rebuilt here; restart the node with --repair --join ADDR (ADDR: a live member): it leaves the cluster, sets its log aside and joins again, receiving the leader's snapshot")]
    SnapshotBehindLog {
        /// The last purged log id.
        purged: LogId,
        /// The newest snapshot's last log id.
        snapshot: Option<LogId>,
    },
    /// Entries appended out of sequence (a bug in the caller).
    #[error("appended entry {found} where entry {expected} was expected")]
    OutOfSequence {
        /// The index that would continue the log.
        expected: u64,
        /// The index given.
        found: u64,
    },
    /// An entry too large for one record.
    #[error("entry {index} encodes to {len} bytes, more than a record holds")]
    TooLarge {
        /// Its index.
        index: u64,
        /// Its encoded length.
        len: usize,
    },
    /// A received snapshot does not match the metadata it was sent with.
    #[error("the received snapshot is {found}, not {expected}")]
    SnapshotMismatch {
        /// What the metadata says.
        expected: String,
        /// What the bytes say.
        found: String,
    },
    /// An earlier write failed part-way: the store refuses further use until it is reopened
    /// (which cuts off what the failed write left).
    #[error("an earlier write to {} failed; reopen the store", dir.display())]
    Broken {
        /// The store's directory.
        dir: PathBuf,
    },
}

/// What is wrong with a damaged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// A record fails its checksum or is cut short, and it is not a torn tail.
    #[error("{0}")]
    Record(Defect),
    /// The file does not start with the header its name promises.
    #[error("the file does not start with a valid header")]
    Header,
    /// A record passes its checksum but does not decode: written by something else.
    #[error("a record does not decode")]
    Undecodable,
    /// A log entry's index is not the next one: entries are missing.
    #[error("expected entry {expected}, found entry {found}")]
    Sequence {
        /// The index that should be here.
        expected: u64,
        /// The index found.
        found: u64,
    },
    /// More or fewer records than the file holds when written whole.
    #[error("the file has the wrong number of records")]
    Records,
    /// A snapshot's body does not match the length and SHA-256 in its header.
    #[error("the snapshot's body does not match its checksum")]
    Body,
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
