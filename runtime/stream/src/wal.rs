//! The HTTP ingest's write-ahead log on disk: a directory of segment files, each named by the
//! log offset it starts at (`00000000000000000000.wal`, `00000000000067108901.wal`, …).
//!
//! The ingest server ([`ingest`](super::ingest)) appends one record per accepted request to the
//! newest segment through [`WalWriter`] and starts a new segment once it has passed a size. The
//! streaming driver reads the segments in order as one stream of records ([`WalReader`]). Once a
//! checkpoint has committed a position, the segments wholly before it are never read again and
//! are deleted ([`trim`]), so the log holds what arrived since about the last checkpoint rather
//! than everything ever sent.
//!
//! # Records
//! A segment is a sequence of records, each a frame of [`quiver_durable::records`] (the framing
//! and checksums the replicated log uses too) whose payload starts with the log's own prefix:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | length of the frame's payload: the prefix and the body (u32, little-endian) |
//! | 4..8 | CRC-32 (IEEE) of that payload (u32, little-endian) |
//! | 8..12 | CRC-32 of bytes 0..8 (u32, little-endian) |
//! | 12 | format version, `1` |
//! | 13 | kind: `1` JSON lines, `2` an Arrow IPC stream |
//! | 14.. | the body |
//!
//! The frame's header has a checksum of its own so that a damaged length is told apart from an
//! append that a crash cut short: only a header that checks out is believed about where its
//! record ends. The prefix is covered by the payload's checksum.
//!
//! A JSON-lines body holds the request's checked lines, each ending in `\n`. An Arrow body is
//! the request body as it arrived, an Arrow IPC stream (its schema, then its record batches),
//! which the server decoded whole before writing it; the reader hands its batches on as they
//! are, with no detour through JSON. A body is at most 4 GiB − 3 bytes ([`MAX_BODY_BYTES`]).
//!
//! # Offsets
//! Offsets are byte positions in the whole log (frame headers and prefixes included): they stay valid across
//! segments and trimming, a checkpoint stores one ([`WalPosition`]), and it is always where a
//! record starts.
//!
//! # Damage
//! Every record is checked against its checksums when it is read. At start the server reads the
//! newest segment through and cuts off a last record that a crash interrupted (its append was
//! never acknowledged), as [`quiver_durable::records`] tells a torn tail: an incomplete one (a
//! partial header, or a sound header whose payload runs past the end of the file), or one that
//! fails a checksum and is the last (its length ends it at the end of the file, or only zeros
//! follow it: the file grew before its data reached the disk). Anything else that is not a
//! whole, valid record — in the middle of a segment, in an older segment, or a sound frame
//! whose prefix names a format version or kind this Quiver does not read, wherever it is —
//! stops the server or the reader with [`WalError::Damaged`], naming the segment file and the
//! log offset: a damaged record is never skipped.
//!
//! # Older logs
//! Quiver once kept the log as JSON-lines segments (`00000000000000000000.jsonl`, …). Such a log
//! is refused ([`WalError::OldFormat`]), with what to do about it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use quiver_durable::records::{self, Defect};
use quiver_durable::sync_dir;
use serde::{Deserialize, Serialize};

use super::chunk::{ArrowRows, Chunk};
use super::io_err;
use super::tail::Lines;
use quiver_data::io::IoError;

/// Default size past which the server starts a new segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Extension of segment files.
const EXTENSION: &str = ".wal";

/// Extension of the JSON-lines segments of logs written by older versions.
const OLD_EXTENSION: &str = ".jsonl";

/// Bytes of the prefix a record's payload starts with: its format version and kind.
const PREFIX_BYTES: usize = 2;

/// Bytes of a record before its body: the frame's header and the prefix.
pub const HEADER_BYTES: usize = records::HEADER_LEN + PREFIX_BYTES;

/// The record format's version, the prefix's first byte.
const VERSION: u8 = 1;

/// The largest body a record holds (the frame's payload, prefix included, is at most
/// [`records::MAX_PAYLOAD`] bytes).
pub const MAX_BODY_BYTES: u64 = (records::MAX_PAYLOAD - PREFIX_BYTES) as u64;

/// How much of a segment is read at a time.
const READ_CHUNK: u64 = 4 << 20;

/// What a record's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// JSON lines, each ending in `\n`.
    JsonLines,
    /// An Arrow IPC stream.
    ArrowStream,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            RecordKind::JsonLines => 1,
            RecordKind::ArrowStream => 2,
        }
    }

    fn from_code(code: u8) -> Option<RecordKind> {
        match code {
            1 => Some(RecordKind::JsonLines),
            2 => Some(RecordKind::ArrowStream),
            _ => None,
        }
    }
}

/// Why the log cannot be read or written as it is.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The log was written by an older Quiver, as JSON-lines segments.
    #[error("the write-ahead log in {} was written by an older Quiver (JSON-lines segments such as {segment}); finish reading it with that version (`quiver run PIPELINE --stream --stop-at-end`), or move {} away to start a new log (then start the job over with `--from-beginning`, as its checkpoints point into the old log)", .dir.display(), .dir.display())]
    OldFormat {
        /// The log's directory.
        dir: PathBuf,
        /// Its oldest JSON-lines segment.
        segment: String,
    },
    /// Bytes of the log that should hold a record do not.
    #[error("{}: the write-ahead log is damaged at log offset {offset}: {reason}; the rows from there on cannot be read and are not skipped: restore the segment file, or move the log away to start a new one", .path.display())]
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// The log offset where the damaged record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log (or its directory) could not be created, opened or repaired.
    #[error("{}: cannot open the write-ahead log: {source}", .path.display())]
    Open {
        /// The log.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another ingest server holds the log.
    #[error("{}: the write-ahead log is in use by another ingest server", .path.display())]
    Locked {
        /// The log.
        path: PathBuf,
    },
    /// Listing, opening or reading the log failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// `body` framed as a record of `kind`: a frame of [`records`] whose payload is the prefix,
/// then the body. The body must be at most [`MAX_BODY_BYTES`] long.
pub fn frame(kind: RecordKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    records::frame_parts(&[&[VERSION, kind.code()], body], &mut out);
    out
}

/// The kind and body of a record whose frame checks out, from its `payload`; or why this
/// Quiver cannot read it.
pub(crate) fn unprefix(payload: &[u8]) -> Result<(RecordKind, &[u8]), String> {
    let Some((&[version, kind], body)) = payload.split_first_chunk::<PREFIX_BYTES>() else {
        return Err(format!(
            "a record of {} bytes, too short for the {PREFIX_BYTES}-byte prefix of its format version and kind",
            payload.len()
        ));
    };
    if version != VERSION {
        return Err(format!(
            "a record of format version {version}, which this Quiver does not read (it reads version {VERSION})"
        ));
    }
    let kind =
        RecordKind::from_code(kind).ok_or_else(|| format!("a record of unknown kind {kind}"))?;
    Ok((kind, body))
}

/// What the bytes at a record boundary hold.
#[derive(Debug, PartialEq, Eq)]
enum Parsed<'a> {
    /// A whole record whose frame checks out, and its length, frame header included.
    Record {
        kind: RecordKind,
        body: &'a [u8],
        len: usize,
    },
    /// A frame that is not whole ([`Defect::Incomplete`]: its rest is not there, yet) or fails
    /// a checksum.
    Defective(Defect),
    /// A sound frame whose prefix this Quiver does not read: why.
    Unreadable(String),
}

fn parse(buf: &[u8]) -> Parsed<'_> {
    match records::check_frame(buf) {
        Ok(payload) => match unprefix(payload) {
            Ok((kind, body)) => Parsed::Record {
                kind,
                body,
                len: records::HEADER_LEN + payload.len(),
            },
            Err(why) => Parsed::Unreadable(why),
        },
        Err(defect) => Parsed::Defective(defect),
    }
}

/// The file name of the segment starting at log offset `base`.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}{EXTENSION}")
}

/// The start offset of a segment named `name` with extension `extension`; `None` for other
/// files.
fn base_of(name: &str, extension: &str) -> Option<u64> {
    let digits = name.strip_suffix(extension)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The start offset of a segment named `name`; `None` for other files.
fn segment_base(name: &str) -> Option<u64> {
    base_of(name, EXTENSION)
}

/// The files of `dir` whose names `base` reads, by start offset.
fn named_by_offset(
    dir: &Path,
    base: impl Fn(&str) -> Option<u64>,
) -> Result<Vec<(u64, PathBuf)>, IoError> {
    let listing = std::fs::read_dir(dir).map_err(io_err(dir, "cannot list the write-ahead log"))?;
    let mut found: Vec<(u64, PathBuf)> = listing
        .flatten()
        .filter_map(|e| Some((base(&e.file_name().to_string_lossy())?, e.path())))
        .collect();
    found.sort();
    Ok(found)
}

/// The segments in `dir`, by start offset.
pub(crate) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, IoError> {
    named_by_offset(dir, segment_base)
}

/// Refuses a log written by an older version: one holding JSON-lines segments.
pub fn check_format(dir: &Path) -> Result<(), WalError> {
    let old = named_by_offset(dir, |name| base_of(name, OLD_EXTENSION))?;
    match old.first() {
        None => Ok(()),
        Some((_, path)) => Err(WalError::OldFormat {
            dir: dir.to_path_buf(),
            segment: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }),
    }
}

/// The segments a reader at log offset `offset` will never read again: each one followed by a
/// segment that starts at or before `offset`. The newest segment is never among them.
pub(crate) fn trimmable(bases: &[u64], offset: u64) -> Vec<u64> {
    bases
        .windows(2)
        .filter(|pair| pair[1] <= offset)
        .map(|pair| pair[0])
        .collect()
}

/// Deletes the segments of the log in `dir` that a reader resuming at `offset` does not need;
/// returns how many. Called once a checkpoint at `offset` has committed.
pub fn trim(dir: &Path, offset: u64) -> Result<usize, IoError> {
    let found = segments(dir)?;
    let bases: Vec<u64> = found.iter().map(|(b, _)| *b).collect();
    let doomed = trimmable(&bases, offset);
    for (base, path) in &found {
        if doomed.contains(base) {
            std::fs::remove_file(path).map_err(io_err(path, "cannot delete"))?;
        }
    }
    Ok(doomed.len())
}

/// Where a [`WalReader`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalPosition {
    /// Log offset after the last record handed out.
    pub offset: u64,
}

/// How the rows of a record are named in messages: its segment and log offset,
/// `…/00000000000000000000.wal@1234`.
fn record_path(segment: &Path, offset: u64) -> PathBuf {
    PathBuf::from(format!("{}@{offset}", segment.display()))
}

/// A record's payload as rows: JSON lines to decode, or the batches of an Arrow IPC stream.
fn record_rows(
    kind: RecordKind,
    payload: &[u8],
    segment: &Path,
    offset: u64,
) -> Result<Chunk, WalError> {
    Ok(match kind {
        RecordKind::JsonLines => Chunk::Lines(Lines {
            bytes: payload.to_vec(),
            count: payload.iter().filter(|&&b| b == b'\n').count(),
            first_line: 1,
            path: record_path(segment, offset),
        }),
        RecordKind::ArrowStream => {
            let damaged = |e: arrow::error::ArrowError| WalError::Damaged {
                path: segment.to_path_buf(),
                offset,
                reason: format!("its Arrow IPC stream does not decode ({e})"),
            };
            let reader = StreamReader::try_new(payload, None).map_err(damaged)?;
            let schema = reader.schema();
            let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(damaged)?;
            Chunk::Arrow(ArrowRows {
                rows: batches.iter().map(RecordBatch::num_rows).sum(),
                schema,
                batches,
                first_row: 1,
                path: segment.to_path_buf(),
                offset,
            })
        }
    })
}

/// Reads the log's segments in order as one stream of records.
#[derive(Debug)]
pub struct WalReader {
    dir: PathBuf,
    /// Start offset of the segment being read.
    base: u64,
    /// Its path.
    path: PathBuf,
    file: File,
    /// Bytes of the segment handed out (so where a record starts).
    at: u64,
    /// Bytes of the segment read: those from `start` on follow `at`.
    buf: Vec<u8>,
    start: usize,
    /// The log offset up to which its bytes are durable, if it is being written.
    durable: Option<u64>,
}

impl WalReader {
    /// Opens the log in `dir` at `from` (from a checkpoint), or at the start of its oldest
    /// segment. The log must hold that position: a checkpoint older than the oldest segment
    /// means rows were deleted that it still needs.
    pub fn open(dir: &Path, from: Option<WalPosition>) -> Result<WalReader, WalError> {
        check_format(dir)?;
        let found = segments(dir)?;
        let not_held = |why: String| IoError::Io {
            path: dir.into(),
            action: "cannot resume from",
            source: std::io::Error::new(std::io::ErrorKind::NotFound, why),
        };
        let Some((oldest, _)) = found.first() else {
            return Err(not_held("the write-ahead log has no segment".into()).into());
        };
        let (base, path, at) = match from {
            None => (found[0].0, &found[0].1, 0),
            Some(at) => {
                let Some((base, path)) = found.iter().rev().find(|(b, _)| *b <= at.offset) else {
                    return Err(not_held(format!(
                        "the checkpoint is at log offset {}, but the log starts at {oldest} now (its older segments were deleted); start from the beginning instead",
                        at.offset
                    )).into());
                };
                let meta = std::fs::metadata(path).map_err(io_err(path, "cannot stat"))?;
                let within = at.offset - base;
                if within > meta.len() {
                    return Err(not_held(format!(
                        "the checkpoint is at log offset {}, past the end of the log ({}); was the log replaced?",
                        at.offset,
                        base + meta.len()
                    )).into());
                }
                (*base, path, within)
            }
        };
        let mut file = File::open(path).map_err(io_err(path, "cannot open"))?;
        file.seek(SeekFrom::Start(at))
            .map_err(io_err(path, "cannot seek"))?;
        Ok(WalReader {
            dir: dir.into(),
            base,
            path: path.clone(),
            file,
            at,
            buf: Vec::new(),
            start: 0,
            durable: None,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the records handed out so far end.
    pub fn position(&self) -> WalPosition {
        WalPosition {
            offset: self.base + self.at,
        }
    }

    /// The segment after the one being read, if the server has started one.
    fn next_segment(&self) -> Result<Option<(u64, PathBuf)>, IoError> {
        Ok(segments(&self.dir)?
            .into_iter()
            .find(|(b, _)| *b > self.base))
    }

    /// Reads the log no further than log offset `end`: the writer's bytes past it are not
    /// durable yet and may be cut back (after a failed write or fsync), so handing them out
    /// could let a checkpoint point past the log's real end.
    pub fn read_up_to(&mut self, end: u64) {
        self.durable = Some(end);
    }

    /// Reads more of the segment, no further than the durable end; returns how many bytes.
    fn fill(&mut self) -> Result<usize, IoError> {
        let read_to = self.at + (self.buf.len() - self.start) as u64;
        let want = match self.durable {
            Some(end) => {
                let limit = end.saturating_sub(self.base);
                if limit <= read_to {
                    return Ok(0);
                }
                (limit - read_to).min(READ_CHUNK)
            }
            None => READ_CHUNK,
        };
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        (&mut self.file)
            .take(want)
            .read_to_end(&mut self.buf)
            .map_err(io_err(&self.path, "cannot read"))
    }

    fn damaged(&self, reason: String) -> WalError {
        WalError::Damaged {
            path: self.path.clone(),
            offset: self.base + self.at,
            reason,
        }
    }

    /// The next whole, durable record, if there is one yet.
    fn next_record(&mut self) -> Result<Option<Chunk>, WalError> {
        loop {
            match parse(&self.buf[self.start..]) {
                Parsed::Record { kind, body, len } => {
                    let offset = self.base + self.at;
                    if self.durable.is_some_and(|end| offset + len as u64 > end) {
                        return Ok(None);
                    }
                    let rows = record_rows(kind, body, &self.path, offset)?;
                    self.start += len;
                    self.at += len as u64;
                    return Ok(Some(rows));
                }
                Parsed::Defective(Defect::Incomplete) => {}
                Parsed::Defective(defect) => return Err(self.damaged(defect.to_string())),
                Parsed::Unreadable(reason) => return Err(self.damaged(reason)),
            }
            if self.fill()? > 0 {
                continue;
            }
            let Some((base, path)) = self.next_segment()? else {
                return Ok(None);
            };
            // The segment being read may end in bytes that are not durable yet.
            if self.durable.is_some_and(|end| end < base) {
                return Ok(None);
            }
            // The server wrote its last records here before it started the next segment: read
            // on once more before moving.
            if self.fill()? > 0 {
                continue;
            }
            let left = self.buf.len() - self.start;
            if left > 0 {
                return Err(self.damaged(format!(
                    "the segment ends in {left} bytes that are not a whole record, and a later segment follows"
                )));
            }
            tracing::debug!(segment = %path.display(), "reading the next write-ahead log segment");
            self.file = File::open(&path).map_err(io_err(&path, "cannot open"))?;
            self.path = path;
            self.base = base;
            self.at = 0;
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Whole records that arrived since the last call, until they hold `max` rows or more
    /// (a record is never split, so it may be more). Never blocks.
    pub fn poll(&mut self, max: usize) -> Result<Vec<Chunk>, WalError> {
        let mut out = Vec::new();
        let mut rows = 0;
        while rows < max {
            let Some(chunk) = self.next_record()? else {
                break;
            };
            rows += chunk.rows();
            out.push(chunk);
        }
        Ok(out)
    }

    /// Bytes written to the log and not read yet.
    pub fn lag_bytes(&self) -> u64 {
        let later: u64 = segments(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter(|(b, _)| *b > self.base)
            .filter_map(|(_, p)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let here = self.file.metadata().map_or(0, |m| m.len());
        here.saturating_sub(self.at) + later
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// The log, as the server thread writes it: its newest segment, appended to.
pub(crate) struct WalWriter {
    pub(crate) dir: PathBuf,
    /// Locked while the server runs; the lock goes with it.
    pub(crate) _lock: File,
    /// The newest segment, opened for appending (and reading, for the repair at start);
    /// shared with a sync running outside the lock.
    pub(crate) file: Arc<File>,
    /// Its path, for messages.
    pub(crate) path: PathBuf,
    /// The log offset of its first byte.
    pub(crate) base: u64,
    /// Its length: everything in it is whole records.
    pub(crate) len: u64,
    /// The log offset up to which everything was fsynced (or was there at the start).
    pub(crate) durable: u64,
    pub(crate) segment_bytes: u64,
    /// Why appending is no longer safe, once a failed write could not be undone or an fsync
    /// failed (after which the kernel may have dropped the data while a later fsync succeeds).
    pub(crate) broken: Option<String>,
}

impl WalWriter {
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> Result<WalWriter, WalError> {
        let wal_err = |source| WalError::Open {
            path: dir.to_path_buf(),
            source,
        };
        if dir.is_file() {
            return Err(wal_err(io::Error::other(
                "this is a file; the write-ahead log is a directory of segments (move the file away, or name another path in [stream] wal)",
            )));
        }
        let dirs: Vec<&Path> = dir
            .ancestors()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .collect();
        // Directories created below the first existing one must reach the disk too.
        let existing = dirs.iter().position(|d| d.is_dir()).unwrap_or(0);
        fs::create_dir_all(dir).map_err(wal_err)?;
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))
            .map_err(wal_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(WalError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(wal_err(e)),
        }
        check_format(dir)?;
        let (base, path) = segments(dir)
            .map_err(|e| wal_err(io::Error::other(e.to_string())))?
            .pop()
            .unwrap_or_else(|| (0, dir.join(segment_name(0))));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(wal_err)?;
        // A newly created log is only durable once its directory entries are.
        for d in &dirs[..=existing] {
            sync_dir(d).map_err(wal_err)?;
        }
        let len = cut_torn_tail(&file, &path, base)?;
        Ok(WalWriter {
            dir: dir.to_path_buf(),
            _lock: lock,
            file: Arc::new(file),
            path,
            base,
            len,
            durable: base + len,
            segment_bytes,
            broken: None,
        })
    }

    /// The log offset after its last record.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.len
    }

    /// Appends `bytes` (whole records, see [`frame`]) with one write; returns the log's new
    /// end. The bytes are durable only once a sync has covered them.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<u64, String> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        if let Err(e) = (&*self.file).write_all(bytes) {
            let mut msg = format!(
                "{}: cannot append to the write-ahead log: {e}",
                self.path.display()
            );
            // A partial write must not stay: the next append would follow a torn record.
            // (Earlier appends waiting for their sync stay.)
            if let Err(undo) = self.cut_back(self.len) {
                msg.push_str(&format!("; cutting it back failed too: {undo}"));
                self.broken = Some(msg.clone());
            }
            return Err(msg);
        }
        self.len += bytes.len() as u64;
        let end = self.end();
        if self.len >= self.segment_bytes {
            self.roll();
        }
        Ok(end)
    }

    /// After a failed fsync: drops what was not durable (none of it was acknowledged) and
    /// refuses appends from now on, as the kernel may have dropped written data while a later
    /// fsync succeeds.
    pub(crate) fn sync_failed(&mut self, msg: &str) -> String {
        let mut msg = msg.to_string();
        if let Err(undo) = self.cut_back(self.durable.saturating_sub(self.base)) {
            msg.push_str(&format!("; cutting it back failed too: {undo}"));
        }
        self.broken = Some(msg.clone());
        msg
    }

    /// Starts the next segment. Failing to create it is harmless (appends go on to this one);
    /// failing to make its name durable once it exists breaks the log, as rows appended to it
    /// could vanish with it.
    pub(crate) fn roll(&mut self) {
        // A sync covers the newest segment only: this one must be durable before the next.
        if let Err(e) = self.file.sync_data() {
            self.sync_failed(&format!(
                "{}: cannot fsync the write-ahead log: {e}",
                self.path.display()
            ));
            return;
        }
        self.durable = self.end();
        let path = self.dir.join(segment_name(self.end()));
        let file = match OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "cannot start a new write-ahead log segment; appending to the current one");
                return;
            }
        };
        self.base = self.end();
        self.len = 0;
        self.file = Arc::new(file);
        self.path = path;
        if let Err(e) = sync_dir(&self.dir) {
            self.broken = Some(format!(
                "{}: cannot fsync the directory after starting a segment: {e}",
                self.dir.display()
            ));
        }
    }

    /// Why nothing can be appended any more, if so.
    pub(crate) fn refusal(&self) -> Option<String> {
        let why = self.broken.as_ref()?;
        Some(format!(
            "{}: the write-ahead log failed earlier ({why}); restart the ingest server",
            self.dir.display()
        ))
    }

    /// Cuts the newest segment back to `len` bytes.
    pub(crate) fn cut_back(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.len = len;
        Ok(())
    }
}

/// Reads the newest segment (`file` at `path`, starting at log offset `base`) through, record
/// by record, and returns the length of its whole, valid records. A last record that a crash
/// interrupted (never acknowledged; [`records::is_torn_tail`] tells) is cut off. Any other bad
/// record is [`WalError::Damaged`].
fn cut_torn_tail(file: &File, path: &Path, base: u64) -> Result<u64, WalError> {
    let io = |source| WalError::Open {
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    // The segment's bytes from `buf[start]` on, which is at `at` in it; one record at a time.
    let mut buf = Vec::new();
    let mut start = 0usize;
    let mut at = 0u64;
    let torn = loop {
        if at == len {
            return Ok(len);
        }
        let read = at + (buf.len() - start) as u64;
        match parse(&buf[start..]) {
            Parsed::Record { len: n, .. } => {
                start += n;
                at += n as u64;
            }
            Parsed::Defective(Defect::Incomplete) if read < len => {
                buf.drain(..start);
                start = 0;
                reader
                    .take((len - read).min(READ_CHUNK))
                    .read_to_end(&mut buf)
                    .map_err(io)?;
                if at + buf.len() as u64 == read {
                    // The file got shorter while it was read: something else changed it.
                    return Err(io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the segment got shorter while it was read",
                    )));
                }
            }
            Parsed::Defective(defect) => {
                if records::is_torn_tail(&buf[start..], defect, len - at, &mut reader)
                    .map_err(io)?
                {
                    break defect;
                }
                return Err(damaged(path, base + at, defect.to_string()));
            }
            // A sound record, of a format this Quiver does not read: never cut, wherever it is.
            Parsed::Unreadable(reason) => return Err(damaged(path, base + at, reason)),
        }
    };
    file.set_len(at).map_err(io)?;
    file.sync_all().map_err(io)?;
    tracing::warn!(
        wal = %path.display(),
        offset = base + at,
        dropped_bytes = len - at,
        "cut a torn last record ({torn}) off the end of the write-ahead log (an append interrupted by a crash, never acknowledged)"
    );
    Ok(at)
}

fn damaged(path: &Path, offset: u64, reason: String) -> WalError {
    WalError::Damaged {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_other_files_are_ignored() {
        for base in [0, 1, 67_108_901, u64::MAX] {
            assert_eq!(segment_base(&segment_name(base)), Some(base));
        }
        for other in [
            "LOCK",
            "0.wal",
            "00000000000000000000.jsonl",
            "00000000000000000000.wa",
            ".tmp-1",
        ] {
            assert_eq!(segment_base(other), None, "{other}");
        }
    }

    /// Against a naive rule: a segment may go when every byte of it is before `offset`.
    #[test]
    fn only_segments_wholly_before_the_offset_are_trimmed() {
        let bases = [0u64, 10, 25, 40];
        for offset in 0..60 {
            let want: Vec<u64> = bases
                .iter()
                .enumerate()
                .filter(|(i, _)| bases.get(i + 1).is_some_and(|end| *end <= offset))
                .map(|(_, b)| *b)
                .collect();
            assert_eq!(trimmable(&bases, offset), want, "offset {offset}");
            assert!(!trimmable(&bases, offset).contains(&40));
        }
        assert!(trimmable(&[5], u64::MAX).is_empty());
    }

    #[test]
    fn records_round_trip_and_no_flipped_byte_or_cut_passes_for_one() {
        let payloads: [(RecordKind, &[u8]); 4] = [
            (RecordKind::JsonLines, b"{\"a\":1}\n{\"a\":2}\n"),
            (
                RecordKind::ArrowStream,
                &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            ),
            (RecordKind::JsonLines, b""),
            (RecordKind::ArrowStream, &[7; 1000]),
        ];
        let mut log = Vec::new();
        for (kind, body) in payloads {
            let record = frame(kind, body);
            assert_eq!(record.len(), HEADER_BYTES + body.len());
            // A frame of `records`, whose payload is the prefix and the body.
            let payload = [&[VERSION, kind.code()][..], body].concat();
            assert_eq!(records::check_frame(&record), Ok(&payload[..]));
            assert_eq!(
                &record[records::HEADER_LEN..HEADER_BYTES],
                &[1, kind.code()]
            );
            assert_eq!(
                parse(&record),
                Parsed::Record {
                    kind,
                    body,
                    len: record.len()
                }
            );
            // Every cut short of the whole record is incomplete.
            for cut in 0..record.len() {
                assert_eq!(
                    parse(&record[..cut]),
                    Parsed::Defective(Defect::Incomplete),
                    "cut at {cut}"
                );
            }
            // Every flipped bit is caught, the length's included (by the header's checksum),
            // and the prefix's (by the payload's).
            for at in 0..record.len() {
                for bit in 0..8 {
                    let mut bad = record.clone();
                    bad[at] ^= 1 << bit;
                    assert!(
                        matches!(
                            parse(&bad),
                            Parsed::Defective(Defect::Header | Defect::Payload)
                        ),
                        "byte {at} bit {bit} of {kind:?}"
                    );
                }
            }
            log.extend_from_slice(&record);
        }
        // Records follow each other.
        let mut at = 0;
        let mut read = Vec::new();
        while let Parsed::Record { kind, body, len } = parse(&log[at..]) {
            read.push((kind, body.to_vec()));
            at += len;
        }
        assert_eq!(at, log.len());
        let want: Vec<(RecordKind, Vec<u8>)> =
            payloads.iter().map(|(k, p)| (*k, p.to_vec())).collect();
        assert_eq!(read, want);
    }

    /// A sound frame whose payload is `payload`, prefix included.
    fn raw_record(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        records::frame(payload, &mut out);
        out
    }

    #[test]
    fn a_sound_frame_with_an_unknown_version_or_kind_or_no_prefix_is_unreadable() {
        for (payload, says) in [
            (&[VERSION + 1, 1, b'{', b'}'][..], "format version 2"),
            (&[0, 1][..], "format version 0"),
            (&[VERSION, 9, b'x'][..], "unknown kind 9"),
            (&[VERSION][..], "too short"),
            (&[][..], "too short"),
        ] {
            let Parsed::Unreadable(why) = parse(&raw_record(payload)) else {
                panic!("{payload:?} read");
            };
            assert!(why.contains(says), "{payload:?}: {why}");
        }
    }

    /// Writes a segment holding `lines`, one record each.
    fn write(dir: &Path, base: u64, lines: &[&str]) {
        std::fs::write(dir.join(segment_name(base)), records(lines)).unwrap();
    }

    fn records(lines: &[&str]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| frame(RecordKind::JsonLines, l.as_bytes()))
            .collect()
    }

    /// Bytes of the record holding `line`.
    fn rec(line: &str) -> u64 {
        (HEADER_BYTES + line.len()) as u64
    }

    fn text(chunks: &[Chunk]) -> String {
        chunks
            .iter()
            .map(|c| match c {
                Chunk::Lines(l) => std::str::from_utf8(&l.bytes).unwrap().to_string(),
                Chunk::Arrow(_) => panic!("an Arrow record"),
            })
            .collect()
    }

    fn drain(r: &mut WalReader) -> String {
        let mut out = String::new();
        loop {
            let chunks = r.poll(2).unwrap();
            if chunks.is_empty() {
                return out;
            }
            out.push_str(&text(&chunks));
        }
    }

    #[test]
    fn segments_read_as_one_stream_resume_at_a_log_offset_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let r1 = rec("a\n");
        write(d, 0, &["a\n", "b\n"]);
        write(d, 2 * r1, &["c\n"]);
        write(d, 3 * r1, &["d\n", "e\n"]);
        std::fs::write(d.join("LOCK"), "").unwrap();
        let mut r = WalReader::open(d, None).unwrap();
        assert_eq!(r.lag_bytes(), 5 * r1);
        // Whole records, until they hold `max` rows.
        let first = r.poll(2).unwrap();
        assert_eq!(text(&first), "a\nb\n");
        let Chunk::Lines(l) = &first[1] else { panic!() };
        assert_eq!(l.path, d.join(format!("{}@{r1}", segment_name(0))));
        assert_eq!(text(&r.poll(1).unwrap()), "c\n");
        let mid = r.position();
        assert_eq!(mid, WalPosition { offset: 3 * r1 });
        assert_eq!(drain(&mut r), "d\ne\n");
        assert_eq!(r.position().offset, 5 * r1);
        assert_eq!(r.lag_bytes(), 0);

        // Appends to the newest segment, and a new segment, are followed.
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.join(segment_name(3 * r1)))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &records(&["f\n"])))
            .unwrap();
        write(d, 6 * r1, &["g\n"]);
        assert_eq!(drain(&mut r), "f\ng\n");

        // A restart at a checkpoint's position, then trimming up to it.
        let mut again = WalReader::open(d, Some(mid)).unwrap();
        assert_eq!(drain(&mut again), "d\ne\nf\ng\n");
        assert_eq!(trim(d, mid.offset).unwrap(), 2);
        let left: Vec<u64> = segments(d).unwrap().iter().map(|(b, _)| *b).collect();
        assert_eq!(left, vec![3 * r1, 6 * r1]);
        let mut resumed = WalReader::open(d, Some(mid)).unwrap();
        assert_eq!(drain(&mut resumed), "d\ne\nf\ng\n");
        let mut from_start = WalReader::open(d, None).unwrap();
        assert_eq!(drain(&mut from_start), "d\ne\nf\ng\n");

        let err = WalReader::open(d, Some(WalPosition { offset: r1 }))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("log starts at {}", 3 * r1)), "{err}");
        let err = WalReader::open(d, Some(WalPosition { offset: 999 }))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("past the end of the log ({})", 7 * r1)),
            "{err}"
        );
    }

    #[test]
    fn nothing_past_the_durable_end_is_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let r1 = rec("a\n");
        // The writer's last record of the first segment, and its second segment, are not
        // durable yet; the torn record at the end will be cut back.
        let mut first = records(&["a\n", "b\n", "c\n"]);
        first.extend_from_slice(&frame(RecordKind::JsonLines, b"x\n")[..5]);
        std::fs::write(d.join(segment_name(0)), &first).unwrap();
        let mut r = WalReader::open(d, None).unwrap();
        r.read_up_to(2 * r1);
        assert_eq!(drain(&mut r), "a\nb\n");
        // Part of a record is durable: not handed out.
        r.read_up_to(2 * r1 + 5);
        assert_eq!(drain(&mut r), "");
        write(d, 0, &["a\n", "b\n", "c\n"]);
        write(d, 3 * r1, &["d\n"]);
        // The next segment exists, but the rest of this one is not durable: stay.
        assert_eq!(drain(&mut r), "");
        assert_eq!(r.position().offset, 2 * r1);
        r.read_up_to(3 * r1 + 1);
        assert_eq!(drain(&mut r), "c\n");
        assert_eq!(r.position().offset, 3 * r1);
        r.read_up_to(4 * r1);
        assert_eq!(drain(&mut r), "d\n");
        assert_eq!(r.position(), WalPosition { offset: 4 * r1 });
    }

    fn segment_len(dir: &Path, base: u64) -> u64 {
        std::fs::metadata(dir.join(segment_name(base)))
            .unwrap()
            .len()
    }

    #[test]
    fn a_torn_or_checksum_failing_last_record_is_cut_off_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let whole = records(&["{\"a\":1}\n", "{\"a\":2}\n"]);
        let last = frame(RecordKind::JsonLines, b"{\"a\":3}\n");
        let flipped = |at: usize| {
            let mut bad = last.clone();
            bad[at] ^= 0x01;
            bad
        };
        let mut zero_filled = last.clone();
        zero_filled[records::HEADER_LEN..].fill(0);
        let tails: [Vec<u8>; 11] = [
            // A torn header, a torn prefix, a torn body.
            last[..5].to_vec(),
            last[..records::HEADER_LEN + 1].to_vec(),
            last[..last.len() - 1].to_vec(),
            // A last record failing its payload's checksum (in its body, in its prefix), or its
            // header's.
            flipped(last.len() - 1),
            flipped(records::HEADER_LEN + 1),
            flipped(9),
            // Its payload never reached the disk; the file was extended and nothing written.
            zero_filled,
            vec![0; 100],
            // A failing checksum followed by zeros; a sound header, then zeros; a header of
            // garbage, then zeros.
            [flipped(HEADER_BYTES), vec![0; 30]].concat(),
            [last[..HEADER_BYTES].to_vec(), vec![0; 3]].concat(),
            [vec![0xab; records::HEADER_LEN], vec![0; 30]].concat(),
        ];
        for (i, tail) in tails.iter().enumerate() {
            let segment = d.join(segment_name(40));
            std::fs::write(&segment, [whole.clone(), tail.clone()].concat()).unwrap();
            let w = WalWriter::open(d, 1 << 20).unwrap_or_else(|e| panic!("tail {i}: {e}"));
            assert_eq!(w.end(), 40 + whole.len() as u64, "tail {i}");
            drop(w);
            assert_eq!(segment_len(d, 40), whole.len() as u64, "tail {i}");
        }
        // A sound last record of a newer format version, or of an unknown kind, is refused, not
        // cut.
        for (payload, says) in [
            (&[VERSION + 1, 1, b'\n'][..], "format version 2"),
            (&[VERSION, 3, b'\n'][..], "unknown kind 3"),
        ] {
            let segment = d.join(segment_name(40));
            let bytes = [whole.clone(), raw_record(payload)].concat();
            std::fs::write(&segment, &bytes).unwrap();
            let err = WalWriter::open(d, 1 << 20).err().expect("refused");
            let WalError::Damaged { path, offset, .. } = &err else {
                panic!("{err}");
            };
            assert_eq!((path, *offset), (&segment, 40 + whole.len() as u64));
            assert!(err.to_string().contains(says), "{err}");
            assert_eq!(std::fs::read(&segment).unwrap(), bytes);
        }
        // Whole records are kept as they are.
        let all = [whole.clone(), last.clone()].concat();
        std::fs::write(d.join(segment_name(40)), &all).unwrap();
        assert_eq!(
            WalWriter::open(d, 1 << 20).unwrap().end(),
            40 + all.len() as u64
        );
    }

    /// The start's check reads a segment a few MiB at a time: records spanning several reads.
    #[test]
    fn records_longer_than_a_read_are_checked_whole_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let segment = d.join(segment_name(0));
        let long = "x".repeat(2 * READ_CHUNK as usize + 100) + "\n";
        let big = frame(RecordKind::JsonLines, long.as_bytes());
        let small = frame(RecordKind::JsonLines, b"{}\n");
        let open = |bytes: &[u8]| {
            std::fs::write(&segment, bytes).unwrap();
            WalWriter::open(d, 1 << 30).map(|w| w.end())
        };
        // Whole, then torn at the end of a read; whole, then failing its checksum with zeros
        // past the next read after it.
        let torn = [&big[..], &small, &big[..READ_CHUNK as usize]].concat();
        assert_eq!(open(&torn).unwrap(), (big.len() + small.len()) as u64);
        let mut flipped = big.clone();
        flipped[big.len() - 1] ^= 0x01;
        let zeros = vec![0; READ_CHUNK as usize + 7];
        assert_eq!(
            open(&[&big[..], &flipped, &zeros].concat()).unwrap(),
            big.len() as u64
        );
        // Failing its checksum with a record after it, past the next read.
        let bad = [&small[..], &flipped, &zeros, &small].concat();
        let err = open(&bad).expect_err("refused");
        assert!(
            matches!(&err, WalError::Damaged { offset, .. } if *offset == small.len() as u64),
            "{err}"
        );
        assert_eq!(std::fs::read(&segment).unwrap(), bad);
        // Read back whole.
        std::fs::write(&segment, [&big[..], &small].concat()).unwrap();
        let mut r = WalReader::open(d, None).unwrap();
        assert_eq!(drain(&mut r), long + "{}\n");
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_refused_naming_the_segment_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let lines = ["{\"a\":1}\n", "{\"a\":2}\n", "{\"a\":3}\n"];
        let good = records(&lines);
        let second = rec(lines[0]) as usize;
        let segment = d.join(segment_name(1000));
        let header = "the record's header fails its checksum";
        let payload = "the record's payload fails its checksum";
        // A byte of the second record (a third follows it) flipped: in its body, its length,
        // the payload's and the header's checksums, and the prefix's version and kind.
        let mut cases: Vec<(String, Vec<u8>, &str)> = [
            (HEADER_BYTES + 2, payload),
            (1, header),
            (5, header),
            (9, header),
            (records::HEADER_LEN, payload),
            (records::HEADER_LEN + 1, payload),
        ]
        .into_iter()
        .map(|(at, says)| {
            let mut bad = good.clone();
            bad[second + at] ^= 0x40;
            (format!("byte {at}"), bad, says)
        })
        .collect();
        // A sound second record of a newer version, or of an unknown kind.
        for (prefix, says) in [
            ([VERSION + 1, 1], "format version 2"),
            ([VERSION, 0], "unknown kind 0"),
        ] {
            let unreadable = raw_record(&[&prefix[..], lines[1].as_bytes()].concat());
            let bytes = [records(&lines[..1]), unreadable, records(&lines[2..])].concat();
            cases.push((format!("prefix {prefix:?}"), bytes, says));
        }
        let offset_named = 1000 + second as u64;
        for (case, bad, says) in cases {
            std::fs::write(&segment, &bad).unwrap();
            let err = WalWriter::open(d, 1 << 20).err().expect("refused");
            let WalError::Damaged { path, offset, .. } = &err else {
                panic!("{case}: {err}");
            };
            assert_eq!((path, *offset), (&segment, offset_named), "{case}");
            let msg = err.to_string();
            assert!(
                msg.contains(&segment.display().to_string())
                    && msg.contains(&format!("log offset {offset_named}"))
                    && msg.contains(says),
                "{case}: {msg}"
            );
            // The file is left as it was.
            assert_eq!(std::fs::read(&segment).unwrap(), bad, "{case}");
            // The reader refuses it too, after handing out the record before it.
            let mut r = WalReader::open(d, None).unwrap();
            assert_eq!(text(&r.poll(1).unwrap()), lines[0]);
            let err = r.poll(1).unwrap_err();
            assert!(
                matches!(&err, WalError::Damaged { path, offset, .. }
                    if *offset == offset_named && path == &segment)
                    && err.to_string().contains(says),
                "{case}: {err}"
            );
            assert_eq!(r.position().offset, offset_named);
        }
    }

    #[test]
    fn a_damaged_older_segment_is_refused_by_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut older = records(&["a\n", "b\n"]);
        older.truncate(older.len() - 3);
        std::fs::write(d.join(segment_name(0)), &older).unwrap();
        write(d, 26, &["c\n"]);
        let mut r = WalReader::open(d, None).unwrap();
        assert_eq!(drain_until_error(&mut r), ("a\n".to_string(), rec("a\n")));
    }

    /// Reads until the log refuses; the text read and the offset it names.
    fn drain_until_error(r: &mut WalReader) -> (String, u64) {
        let mut out = String::new();
        loop {
            match r.poll(1) {
                Ok(chunks) => out.push_str(&text(&chunks)),
                Err(WalError::Damaged { offset, .. }) => return (out, offset),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_log_of_json_lines_segments_from_an_older_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("out.wal");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("00000000000000000000.jsonl"), "{\"a\":1}\n").unwrap();
        std::fs::write(d.join("00000000000000000008.jsonl"), "{\"a\":2}\n").unwrap();
        let err = WalWriter::open(&d, 1 << 20).err().expect("refused");
        let WalError::OldFormat {
            dir: named,
            segment,
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(
            (named, segment.as_str()),
            (&d, "00000000000000000000.jsonl")
        );
        let msg = err.to_string();
        for part in [
            format!(
                "the write-ahead log in {} was written by an older Quiver",
                d.display()
            ),
            "00000000000000000000.jsonl".to_string(),
            "--stop-at-end".to_string(),
            "move".to_string(),
        ] {
            assert!(msg.contains(&part), "{part} in {msg}");
        }
        // Nothing was created or changed.
        assert!(segments(&d).unwrap().is_empty());
        let err = WalReader::open(&d, None).unwrap_err();
        assert!(matches!(err, WalError::OldFormat { .. }), "{err}");
    }
}
