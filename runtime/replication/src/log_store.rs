//! The durable Raft log and vote of a group: openraft's [`RaftLogStorage`] in a directory.
//!
//! # On disk
//!
//! ```text
//! <dir>/lock                      held (flock) while a store has the directory open
//! <dir>/vote                      the vote: header + postcard(Vote), written whole
//! <dir>/meta                      the last purged log id: header + postcard(LogMeta), written whole
//! <dir>/<first index:020>.seg     a segment: header (its first index) + one record per entry
//! ```
//!
//! Every file is a sequence of [`quiver_durable::records`] (length, checksums, payload) whose
//! first record is the header of [`crate::format`]: kind, format version and [`GroupId`]. A
//! segment's entries are `postcard(Entry)`, one record each, with consecutive indexes starting
//! at the index in its name; segments follow each other without a gap. A segment is closed once
//! it holds [`LogOptions::segment_bytes`] and the next one starts with the next entry.
//!
//! # Durability points
//!
//! - **append**: the entries are written at the end of the last segment and the segment is
//!   `fdatasync`ed; only then is openraft's callback told the entries are flushed. Before a new
//!   segment is started, the previous one is synced, and the new one is created whole (header
//!   in a temporary file, fsync, rename, directory fsync), so a crash never leaves a hole.
//! - **save_vote**: [`quiver_durable::write_durably`] (temporary file, fsync, rename, directory
//!   fsync) before it returns.
//! - **truncate**: later segments are deleted last first, each followed by a directory fsync,
//!   then the segment holding the first dropped entry is cut and `fdatasync`ed: a crash in
//!   between leaves a shorter log, never a hole nor the dropped entries after a kept gap.
//! - **purge**: the new last purged log id is written to `meta` durably first, then the
//!   segments it wholly covers are deleted. Entries at or below it that remain (in a segment
//!   that also holds later ones, or left by a crash) are never read and are deleted at open.
//!
//! The last committed log id is not saved (openraft's default): after a restart the state
//! machine is its last snapshot until the node learns the commit index from a leader, which
//! re-applies the log after it.
//!
//! # Opening, damage and repair
//!
//! [`LogStore::open`] reads every file back. A torn last record of the last segment (a crash
//! during an append, which nobody was told was durable) is cut off, with a warning. Anything
//! else that is wrong — a record failing its checksum before the tail, a segment whose header
//! is wrong, a gap between segments, a damaged vote or meta file — is refused with
//! [`StoreError::Damaged`] naming the file and offset: the store never serves entries it
//! cannot vouch for, and never drops them silently.
//!
//! [`LogStore::open_repairing`] is the explicit way out, for the node's operator to choose:
//! it keeps the valid prefix of the log before the first damage (the damaged segment is cut,
//! a copy of it and every later segment are renamed `*.damaged`), keeps the vote if it is
//! intact, and reports what it did ([`Repair`]) as well as logging it. The leader then sends
//! the missing entries, or a snapshot.
//!
//! The trade-off: Raft counts this node's acknowledgement of every entry it held. A node that
//! loses acknowledged entries may have been part of the majority that committed them; if the
//! other members of that majority fail too before the entries spread, a committed entry can be
//! lost cluster-wide. A lost vote (a damaged `vote` file moved aside) lets the node vote twice
//! in one term, which can elect two leaders in that term. So repair one node at a time, and
//! only while the rest of the cluster is healthy; a damaged `meta` file makes the repair
//! discard every segment, since which entries were purged is no longer known.

use std::fs::{self, File};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};

use quiver_durable::records::{self, End};

use crate::directory::{self, Repair};
use crate::error::{Damage, StoreError};
use crate::format::{self, Kind};
use crate::types::{Entry, GroupId, LogId, StorageError, TypeConfig, Vote};

const VOTE: &str = "vote";
const META: &str = "meta";
const SEGMENT_SUFFIX: &str = ".seg";

/// How the log is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is closed once it holds this many bytes (an entry is never split, so a
    /// segment may exceed it by its last entry).
    pub segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 << 20,
        }
    }
}

/// The log's metadata file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct LogMeta {
    /// The last purged log id.
    purged: Option<LogId>,
}

/// An entry's place in its segment.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u64,
    payload_len: usize,
    log_id: LogId,
}

struct Segment {
    first: u64,
    path: PathBuf,
    /// Opened for reading and appending.
    file: File,
    /// The length of its valid bytes.
    len: u64,
    /// Entry `first + i` is at `slots[i]`.
    slots: Vec<Slot>,
}

impl Segment {
    /// The index after its last entry.
    fn end(&self) -> u64 {
        self.first + self.slots.len() as u64
    }

    fn open(path: &Path, first: u64, len: u64, slots: Vec<Slot>) -> Result<Segment, StoreError> {
        let file = File::options()
            .read(true)
            .append(true)
            .open(path)
            .map_err(StoreError::io(path))?;
        Ok(Segment {
            first,
            path: path.to_path_buf(),
            file,
            len,
            slots,
        })
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// What reading a segment back found.
struct SegmentScan {
    /// The valid entries.
    slots: Vec<Slot>,
    /// Where the valid records end.
    valid_len: u64,
    /// The first damage, if any.
    damage: Option<(u64, Damage)>,
    /// A torn tail to cut, at this offset (the last segment only).
    torn: Option<u64>,
}

/// Reads the segment `path`, named for entry `first`, back. `last` says whether it is the
/// last segment, the only one that may end in a torn record.
fn scan_segment(
    path: &Path,
    first: u64,
    group: GroupId,
    last: bool,
) -> Result<SegmentScan, StoreError> {
    let bytes = fs::read(path).map_err(StoreError::io(path))?;
    let scan = records::scan(&bytes);
    let mut found = SegmentScan {
        slots: Vec::new(),
        valid_len: 0,
        damage: None,
        torn: None,
    };
    let Some(head) = scan.records.first() else {
        found.damage = Some(match scan.end {
            End::Torn { offset, defect } | End::Damaged { offset, defect } => {
                (offset, Damage::Record(defect))
            }
            End::Clean => (0, Damage::Header),
        });
        return Ok(found);
    };
    match format::check_header(path, head.payload, Kind::Segment, group) {
        Ok(named) if named == first => {}
        Ok(_) | Err(StoreError::Damaged { .. }) => {
            found.damage = Some((0, Damage::Header));
            return Ok(found);
        }
        Err(e) => return Err(e),
    }
    found.valid_len = records::framed_len(head.payload.len());
    for record in &scan.records[1..] {
        let expected = first + found.slots.len() as u64;
        let entry: Entry = match postcard::from_bytes(record.payload) {
            Ok(entry) => entry,
            Err(_) => {
                found.damage = Some((record.offset, Damage::Undecodable));
                return Ok(found);
            }
        };
        if entry.log_id.index != expected {
            let damage = Damage::Sequence {
                expected,
                found: entry.log_id.index,
            };
            found.damage = Some((record.offset, damage));
            return Ok(found);
        }
        found.slots.push(Slot {
            offset: record.offset,
            payload_len: record.payload.len(),
            log_id: entry.log_id,
        });
        found.valid_len = record.offset + records::framed_len(record.payload.len());
    }
    match scan.end {
        End::Clean => {}
        End::Torn { offset, .. } if last => found.torn = Some(offset),
        End::Torn { offset, defect } | End::Damaged { offset, defect } => {
            found.damage = Some((offset, Damage::Record(defect)));
        }
    }
    Ok(found)
}

/// The log's state, shared by the store and its readers.
struct Log {
    dir: PathBuf,
    group: GroupId,
    options: LogOptions,
    vote: Option<Vote>,
    purged: Option<LogId>,
    /// In order of their first index, without gaps.
    segments: Vec<Segment>,
    /// A write failed part-way: refuse everything until reopened.
    broken: bool,
    /// Appends written so far (synced or not); see [`LogStore`]'s group commit.
    written: u64,
    _lock: File,
}

impl Log {
    fn load(
        dir: &Path,
        group: GroupId,
        options: LogOptions,
        repair: bool,
    ) -> Result<(Log, Vec<Repair>), StoreError> {
        let lock = directory::lock(dir)?;
        directory::remove_temporaries(dir)?;
        let mut repairs = Vec::new();
        let move_aside = |file: &Path, repairs: &mut Vec<Repair>| -> Result<(), StoreError> {
            let to = directory::move_aside(file)?;
            repairs.push(Repair::MovedAside {
                file: file.to_path_buf(),
                to,
            });
            Ok(())
        };

        let vote_path = dir.join(VOTE);
        let vote = match format::read_value::<Vote>(&vote_path, Kind::Vote, group) {
            Ok(vote) => vote,
            Err(e @ StoreError::Damaged { .. }) if repair => {
                tracing::warn!(error = %e, "the vote is damaged and is dropped: this node may vote twice in its current term");
                move_aside(&vote_path, &mut repairs)?;
                None
            }
            Err(e) => return Err(e),
        };
        let meta_path = dir.join(META);
        let (purged, meta_lost) = match format::read_value::<LogMeta>(
            &meta_path,
            Kind::LogMeta,
            group,
        ) {
            Ok(meta) => (meta.unwrap_or_default().purged, false),
            Err(e @ StoreError::Damaged { .. }) if repair => {
                tracing::warn!(error = %e, "the log's metadata is damaged: every segment is moved aside");
                move_aside(&meta_path, &mut repairs)?;
                (None, true)
            }
            Err(e) => return Err(e),
        };

        let mut listed = directory::list(dir, parse_segment_name)?;
        if meta_lost {
            // Which entries were purged is unknown, so none can be vouched for.
            for (_, file) in listed.drain(..).rev() {
                move_aside(&file, &mut repairs)?;
            }
        }
        let mut segments: Vec<Segment> = Vec::new();
        // The first listed segment that is damaged, where, and how.
        let mut damaged: Option<(usize, u64, Damage)> = None;
        for (i, (first, path)) in listed.iter().enumerate() {
            let expected = match segments.last() {
                Some(previous) => Some(previous.end()),
                // The first segment may start at or before the entry after the purged one.
                None => purged
                    .map(|p| p.index + 1)
                    .filter(|&after_purged| *first > after_purged),
            };
            if let Some(expected) = expected.filter(|&e| e != *first) {
                let gap = Damage::Sequence {
                    expected,
                    found: *first,
                };
                damaged = Some((i, 0, gap));
                break;
            }
            let last = i + 1 == listed.len();
            let scan = scan_segment(path, *first, group, last)?;
            if let Some((offset, damage)) = scan.damage {
                damaged = Some((i, offset, damage));
                if scan.slots.is_empty() || !repair {
                    break;
                }
            }
            if let Some(offset) = scan.torn {
                // Never acknowledged: the append that wrote it did not return.
                tracing::warn!(file = %path.display(), offset, "cutting off a torn last record");
                let file = File::options()
                    .write(true)
                    .open(path)
                    .map_err(StoreError::io(path))?;
                file.set_len(offset)
                    .and_then(|()| file.sync_data())
                    .map_err(StoreError::io(path))?;
            }
            let stop = scan.damage.is_some();
            // When repairing a damaged segment, the entries before the damage are kept.
            segments.push(Segment::open(path, *first, scan.valid_len, scan.slots)?);
            if stop {
                break;
            }
        }

        if let Some((i, offset, damage)) = damaged {
            let file = listed[i].1.clone();
            if !repair {
                return Err(StoreError::Damaged {
                    file,
                    offset,
                    damage,
                });
            }
            tracing::warn!(file = %file.display(), offset, %damage, "the log is damaged: keeping the entries before the damage");
            // Later segments go first, last first, so that the log is a prefix at every step.
            for (_, later) in listed[i + 1..].iter().rev() {
                move_aside(later, &mut repairs)?;
            }
            match segments.last() {
                Some(kept) if kept.path == file => {
                    let bytes = fs::read(&file).map_err(StoreError::io(&file))?;
                    let copy = directory::cut_keeping_copy(&file, &bytes, kept.len)?;
                    repairs.push(Repair::Cut {
                        file: file.clone(),
                        kept_bytes: kept.len,
                        copy,
                    });
                    // Reopen: the file was replaced by the cut copy.
                    let kept = segments.pop().expect("just matched");
                    segments.push(Segment::open(&file, kept.first, kept.len, kept.slots)?);
                }
                _ => move_aside(&file, &mut repairs)?,
            }
        }

        let mut log = Log {
            dir: dir.to_path_buf(),
            group,
            options,
            vote,
            purged,
            segments,
            broken: false,
            written: 0,
            _lock: lock,
        };
        // Finish a purge that a crash interrupted.
        log.remove_purged_segments()?;
        Ok((log, repairs))
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.broken {
            return Err(StoreError::Broken {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Runs a write, marking the log broken if it fails: its files may then hold bytes its
    /// index does not know about, which only a reopen sorts out.
    fn write<T>(
        &mut self,
        op: impl FnOnce(&mut Log) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.check()?;
        let done = op(self);
        if done.is_err() {
            self.broken = true;
        }
        done
    }

    /// The index the next appended entry must have, or `None` if the log is empty and nothing
    /// was purged (any index may start it).
    fn next_index(&self) -> Option<u64> {
        match self.segments.last() {
            Some(segment) => Some(segment.end()),
            None => self.purged.map(|p| p.index + 1),
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        // The last segment may be empty: started just before a crash, or just now.
        let last = self
            .segments
            .iter()
            .rev()
            .find_map(|s| s.slots.last())
            .map(|slot| slot.log_id);
        last.max(self.purged)
    }

    /// Appends `entries` and syncs them.
    fn append(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        self.write(|log| {
            log.append_unchecked(entries)?;
            log.sync_last()
        })
    }

    /// Appends `entries` without syncing the last segment; returns the append's number, for
    /// [`Log::sync_point`].
    fn append_unsynced(&mut self, entries: Vec<Entry>) -> Result<u64, StoreError> {
        self.write(|log| {
            log.append_unchecked(entries)?;
            log.written += 1;
            Ok(log.written)
        })
    }

    /// What a sync must cover now: the last segment (earlier ones were synced when the next
    /// began), as a second handle that can be synced without the log's lock, and the number
    /// of the last append it holds.
    fn sync_point(&self) -> Result<(Option<(File, PathBuf)>, u64), StoreError> {
        self.check()?;
        let file = match self.segments.last() {
            Some(s) => Some((
                s.file.try_clone().map_err(StoreError::io(&s.path))?,
                s.path.clone(),
            )),
            None => None,
        };
        Ok((file, self.written))
    }

    fn sync_last(&mut self) -> Result<(), StoreError> {
        match self.segments.last() {
            Some(s) => s.file.sync_data().map_err(StoreError::io(&s.path)),
            None => Ok(()),
        }
    }

    fn append_unchecked(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let mut next = self.next_index();
        let mut pending: Vec<u8> = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            if self.purged.is_some_and(|p| index <= p.index) {
                // Already covered by a snapshot: there is nothing to keep. (openraft's storage
                // suite appends such entries after a purge; openraft itself does not.)
                continue;
            }
            if let Some(expected) = next.filter(|&e| e != index) {
                return Err(StoreError::OutOfSequence {
                    expected,
                    found: index,
                });
            }
            next = Some(index + 1);
            let payload = postcard::to_stdvec(&entry).expect("entries are plain data");
            if payload.len() > records::MAX_PAYLOAD {
                return Err(StoreError::TooLarge {
                    index,
                    len: payload.len(),
                });
            }
            let full = self.segments.last().is_none_or(|s| {
                s.len + pending.len() as u64 >= self.options.segment_bytes
                    && (!s.slots.is_empty() || !slots.is_empty())
            });
            if full {
                self.flush(&mut pending, &mut slots)?;
                // Only the last segment is ever left unsynced.
                self.sync_last()?;
                self.start_segment(index)?;
            }
            let segment = self.segments.last().expect("a segment was started");
            slots.push(Slot {
                offset: segment.len + pending.len() as u64,
                payload_len: payload.len(),
                log_id: entry.log_id,
            });
            records::frame(&payload, &mut pending);
        }
        self.flush(&mut pending, &mut slots)
    }

    /// Writes `pending` frames at the end of the last segment; then the `slots` join the
    /// index, readable. Not synced: the caller syncs (see [`LogStore`]'s group commit).
    fn flush(&mut self, pending: &mut Vec<u8>, slots: &mut Vec<Slot>) -> Result<(), StoreError> {
        let Some(segment) = self.segments.last_mut() else {
            return Ok(());
        };
        if pending.is_empty() {
            return Ok(());
        }
        use std::io::Write;
        segment
            .file
            .write_all(pending)
            .map_err(StoreError::io(&segment.path))?;
        segment.len += pending.len() as u64;
        segment.slots.append(slots);
        pending.clear();
        Ok(())
    }

    /// Starts a new last segment for entry `first`. The previous last segment was synced by
    /// the flush before this.
    fn start_segment(&mut self, first: u64) -> Result<(), StoreError> {
        let path = self.dir.join(segment_name(first));
        let header = format::header(Kind::Segment, self.group, first);
        let bytes = records::frames([&header[..]]);
        // Durability point of the new segment's existence (the directory fsync): it exists
        // whole, header included, before any entry is written to it.
        quiver_durable::write_durably(&path, &bytes).map_err(StoreError::io(&path))?;
        let segment = Segment::open(&path, first, bytes.len() as u64, Vec::new())?;
        self.segments.push(segment);
        Ok(())
    }

    fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, StoreError> {
        self.check()?;
        let start = start.max(self.purged.map_or(0, |p| p.index + 1));
        let mut entries = Vec::new();
        for segment in &self.segments {
            let from = start.max(segment.first);
            let to = end.min(segment.end());
            for index in from..to {
                let slot = segment.slots[(index - segment.first) as usize];
                let damaged = |damage| StoreError::Damaged {
                    file: segment.path.clone(),
                    offset: slot.offset,
                    damage,
                };
                let payload = match records::read_at(&segment.file, slot.offset, slot.payload_len) {
                    Ok(payload) => payload,
                    Err(records::ReadError::Io(e)) => return Err(StoreError::io(&segment.path)(e)),
                    Err(records::ReadError::Defect(defect)) => {
                        return Err(damaged(Damage::Record(defect)))
                    }
                };
                let entry: Entry =
                    postcard::from_bytes(&payload).map_err(|_| damaged(Damage::Undecodable))?;
                if entry.log_id != slot.log_id {
                    return Err(damaged(Damage::Sequence {
                        expected: slot.log_id.index,
                        found: entry.log_id.index,
                    }));
                }
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    fn truncate(&mut self, index: u64) -> Result<(), StoreError> {
        self.write(|log| {
            // Whole segments from the end, each deletion durable before the next, so that a
            // crash leaves a shorter log and never a gap.
            while log.segments.last().is_some_and(|s| s.first >= index) {
                let segment = log.segments.pop().expect("just checked");
                directory::remove(&segment.path)?;
            }
            if let Some(segment) = log.segments.last_mut() {
                let keep = (index - segment.first) as usize;
                if keep < segment.slots.len() {
                    let cut = segment.slots[keep].offset;
                    // Durability point of a truncation inside a segment.
                    segment
                        .file
                        .set_len(cut)
                        .and_then(|()| segment.file.sync_data())
                        .map_err(StoreError::io(&segment.path))?;
                    segment.len = cut;
                    segment.slots.truncate(keep);
                }
            }
            Ok(())
        })
    }

    fn purge(&mut self, log_id: LogId) -> Result<(), StoreError> {
        if self.purged >= Some(log_id) {
            return self.check();
        }
        self.write(|log| {
            let meta = LogMeta {
                purged: Some(log_id),
            };
            // Durability point of a purge: the purged log id is on disk before any entry goes.
            format::write_value(&log.dir.join(META), Kind::LogMeta, log.group, &meta)?;
            log.purged = Some(log_id);
            log.remove_purged_segments()
        })
    }

    /// Deletes the segments whose entries are all purged.
    fn remove_purged_segments(&mut self) -> Result<(), StoreError> {
        let Some(purged) = self.purged else {
            return Ok(());
        };
        let wholly = self
            .segments
            .iter()
            .take_while(|s| s.end() <= purged.index + 1)
            .count();
        if wholly == 0 {
            return Ok(());
        }
        for segment in self.segments.drain(..wholly) {
            fs::remove_file(&segment.path).map_err(StoreError::io(&segment.path))?;
        }
        quiver_durable::sync_dir(&self.dir).map_err(StoreError::io(&self.dir))
    }

    fn save_vote(&mut self, vote: Vote) -> Result<(), StoreError> {
        self.write(|log| {
            // Durability point of the vote: write_durably's directory fsync.
            format::write_value(&log.dir.join(VOTE), Kind::Vote, log.group, &vote)?;
            log.vote = Some(vote);
            Ok(())
        })
    }
}

/// The durable log and vote of one group (see the module's docs).
pub struct LogStore {
    log: Arc<Mutex<Log>>,
    /// Group commit: the number of the last append known durable. An append is written at
    /// once (readable, so replication can send it) and then waits here; whoever gets the lock
    /// first syncs every append written so far with one `fdatasync`, so appends that arrive
    /// during a sync share the next one.
    synced: Arc<tokio::sync::Mutex<u64>>,
}

/// Reads entries of a [`LogStore`] while it goes on writing (for openraft's replication
/// tasks).
#[derive(Clone)]
pub struct LogReader {
    log: Arc<Mutex<Log>>,
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    // A panic while the lock was held left the log as consistent as any failed write: its
    // `broken` flag decides.
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The half-open range of indexes `range` names.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// Runs blocking file work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(
    log: &Arc<Mutex<Log>>,
    op: impl FnOnce(&mut Log) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let log = Arc::clone(log);
    match tokio::task::spawn_blocking(move || op(&mut lock(&log))).await {
        Ok(done) => done,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

impl LogStore {
    /// Opens (creating if needed) the log of `group` in `dir`, refusing any damage (see the
    /// module's docs). A torn last record is cut off.
    pub fn open(
        dir: impl AsRef<Path>,
        group: GroupId,
        options: LogOptions,
    ) -> Result<LogStore, StoreError> {
        let (log, repairs) = Log::load(dir.as_ref(), group, options, false)?;
        debug_assert!(repairs.is_empty());
        Ok(LogStore {
            log: Arc::new(Mutex::new(log)),
            synced: Arc::default(),
        })
    }

    /// Opens the log of `group` in `dir`, getting past damage by keeping what precedes it and
    /// moving the rest aside (see the module's docs for when that is safe). Returns what it
    /// did; empty if nothing was damaged. Files of another group or version are still refused.
    pub fn open_repairing(
        dir: impl AsRef<Path>,
        group: GroupId,
        options: LogOptions,
    ) -> Result<(LogStore, Vec<Repair>), StoreError> {
        let (log, repairs) = Log::load(dir.as_ref(), group, options, true)?;
        let store = LogStore {
            log: Arc::new(Mutex::new(log)),
            synced: Arc::default(),
        };
        Ok((store, repairs))
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> PathBuf {
        lock(&self.log).dir.clone()
    }

    /// A reader of the log's entries that shares the store.
    pub fn reader(&self) -> LogReader {
        LogReader {
            log: Arc::clone(&self.log),
        }
    }

    /// The last purged log id and the last log id (the last purged one if no entry follows).
    pub fn log_state(&self) -> LogState<TypeConfig> {
        let log = lock(&self.log);
        LogState {
            last_purged_log_id: log.purged,
            last_log_id: log.last_log_id(),
        }
    }

    /// The saved vote.
    pub fn vote(&self) -> Option<Vote> {
        lock(&self.log).vote
    }

    /// The entries with indexes in `range` that the log holds (purged ones are not).
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StoreError> {
        let (start, end) = bounds(&range);
        lock(&self.log).read(start, end)
    }

    /// Appends `entries`, which must continue the log, and returns once they are durable.
    pub fn append_entries(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        lock(&self.log).append(entries)
    }

    /// Drops the entries at and after `index`, durably.
    pub fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        lock(&self.log).truncate(index)
    }

    /// Drops the entries up to and including `log_id`, durably recording it as purged.
    pub fn purge_through(&self, log_id: LogId) -> Result<(), StoreError> {
        lock(&self.log).purge(log_id)
    }

    /// Saves `vote`, durably.
    pub fn set_vote(&self, vote: Vote) -> Result<(), StoreError> {
        lock(&self.log).save_vote(vote)
    }
}

fn to_storage(verb: fn(AnyError) -> StorageIOError<u64>) -> impl Fn(StoreError) -> StorageError {
    move |e| verb(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        blocking(&self.log, move |log| log.read(start, end))
            .await
            .map_err(to_storage(StorageIOError::read_logs))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader().try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(self.log_state())
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        // Returns only once the vote is durable (see `Log::save_vote`).
        blocking(&self.log, move |log| log.save_vote(vote))
            .await
            .map_err(to_storage(StorageIOError::write_vote))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let number = match blocking(&self.log, move |log| log.append_unsynced(entries)).await {
            Ok(n) => n,
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                return Err(to_storage(StorageIOError::write_logs)(e));
            }
        };
        let (log, synced) = (Arc::clone(&self.log), Arc::clone(&self.synced));
        tokio::spawn(async move {
            let mut synced = synced.lock().await;
            if *synced < number {
                let point = {
                    let log = Arc::clone(&log);
                    tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
                        let (file, covers) = lock(&log).sync_point()?;
                        // Durability point of an append: the fdatasync covering it. Only
                        // then is openraft told (and through it, anyone).
                        if let Some((file, path)) = file {
                            file.sync_data().map_err(StoreError::io(&path))?;
                        }
                        Ok(covers)
                    })
                    .await
                };
                match point {
                    Ok(Ok(covers)) => *synced = covers,
                    Ok(Err(e)) => {
                        lock(&log).broken = true;
                        callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                        return;
                    }
                    Err(join) => std::panic::resume_unwind(join.into_panic()),
                }
            }
            callback.log_io_completed(Ok(()));
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(&self.log, move |log| log.truncate(log_id.index))
            .await
            .map_err(to_storage(StorageIOError::write_logs))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(&self.log, move |log| log.purge(log_id))
            .await
            .map_err(to_storage(StorageIOError::write_logs))
    }
}

#[cfg(test)]
mod tests;
