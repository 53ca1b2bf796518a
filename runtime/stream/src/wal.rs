//! The HTTP ingest's write-ahead log on disk: a directory of segment files, each named by the
//! log offset it starts at (`00000000000000000000.jsonl`, `00000000000067108901.jsonl`, …).
//!
//! The ingest server ([`ingest`](super::ingest)) appends whole lines to the newest segment
//! through [`WalWriter`] and starts a new one once it has passed a size. The streaming driver reads the segments in
//! order as one stream of lines ([`WalReader`]). Once a checkpoint has committed a position,
//! the segments wholly before it are never read again and are deleted ([`trim`]), so the log
//! holds what arrived since about the last checkpoint rather than everything ever sent.
//!
//! Offsets are positions in the whole log: they stay valid across segments and trimming, and
//! a checkpoint stores one ([`WalPosition`]).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quiver_durable::sync_dir;
use serde::{Deserialize, Serialize};

use super::ingest::IngestError;

use super::io_err;
use super::tail::{Lines, Position, Tail};
use quiver_data::io::IoError;

/// Default size past which the server starts a new segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Extension of segment files.
const EXTENSION: &str = ".jsonl";

/// The file name of the segment starting at log offset `base`.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}{EXTENSION}")
}

/// The start offset of a segment named `name`; `None` for other files.
fn segment_base(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(EXTENSION)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The segments in `dir`, by start offset.
pub(crate) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, IoError> {
    let listing = std::fs::read_dir(dir).map_err(io_err(dir, "cannot list the write-ahead log"))?;
    let mut found: Vec<(u64, PathBuf)> = listing
        .flatten()
        .filter_map(|e| {
            let base = segment_base(&e.file_name().to_string_lossy())?;
            Some((base, e.path()))
        })
        .collect();
    found.sort();
    Ok(found)
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
    /// Log offset after the last line handed out.
    pub offset: u64,
    /// Lines of the current segment handed out (for line numbers in messages).
    pub line: u64,
}

/// Reads the log's segments in order as one stream of complete lines.
#[derive(Debug)]
pub struct WalReader {
    dir: PathBuf,
    /// Start offset of the segment being read.
    base: u64,
    tail: Tail,
    /// The log offset up to which its bytes are durable, if it is being written.
    durable: Option<u64>,
}

impl WalReader {
    /// Opens the log in `dir` at `from` (from a checkpoint), or at the start of its oldest
    /// segment. The log must hold that position: a checkpoint older than the oldest segment
    /// means rows were deleted that it still needs.
    pub fn open(dir: &Path, from: Option<WalPosition>) -> Result<WalReader, IoError> {
        let found = segments(dir)?;
        let not_held = |why: String| IoError::Io {
            path: dir.into(),
            action: "cannot resume from",
            source: std::io::Error::new(std::io::ErrorKind::NotFound, why),
        };
        let Some((oldest, _)) = found.first() else {
            return Err(not_held("the write-ahead log has no segment".into()));
        };
        let Some(at) = from else {
            let (base, path) = &found[0];
            return Ok(WalReader {
                dir: dir.into(),
                base: *base,
                tail: Tail::open(path, None)?,
                durable: None,
            });
        };
        let Some((base, path)) = found.iter().rev().find(|(b, _)| *b <= at.offset) else {
            return Err(not_held(format!(
                "the checkpoint is at log offset {}, but the log starts at {oldest} now (its older segments were deleted); start from the beginning instead",
                at.offset
            )));
        };
        let meta = std::fs::metadata(path).map_err(io_err(path, "cannot stat"))?;
        let within = at.offset - base;
        if within > meta.len() {
            return Err(not_held(format!(
                "the checkpoint is at log offset {}, past the end of the log ({}); was the log replaced?",
                at.offset,
                base + meta.len()
            )));
        }
        use std::os::unix::fs::MetadataExt;
        let position = Position {
            dev: meta.dev(),
            ino: meta.ino(),
            offset: within,
            // At a segment's very start the count was of the segment before it.
            lines: if within == 0 { 0 } else { at.line },
        };
        Ok(WalReader {
            dir: dir.into(),
            base: *base,
            tail: Tail::open(path, Some(position))?,
            durable: None,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the lines handed out so far end.
    pub fn position(&self) -> WalPosition {
        let p = self.tail.position();
        WalPosition {
            offset: self.base + p.offset,
            line: p.lines,
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

    /// Up to `max` complete lines that arrived since the last call. Never blocks.
    pub fn poll(&mut self, max: usize) -> Result<Lines, IoError> {
        loop {
            self.tail
                .read_up_to(self.durable.map(|end| end.saturating_sub(self.base)));
            let lines = self.tail.poll(max)?;
            if lines.count > 0 {
                return Ok(lines);
            }
            let Some((base, path)) = self.next_segment()? else {
                return Ok(lines);
            };
            // The segment being read may end in bytes that are not durable yet.
            if self.durable.is_some_and(|end| end < base) {
                return Ok(lines);
            }
            // The server wrote its last lines here before it started the next segment: read
            // on once more before moving.
            let rest = self.tail.poll(max)?;
            if rest.count > 0 {
                return Ok(rest);
            }
            tracing::debug!(segment = %path.display(), "reading the next write-ahead log segment");
            self.tail = Tail::open(&path, None)?;
            self.base = base;
        }
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
        self.tail.lag_bytes() + later
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
    /// Its length: everything in it is whole lines.
    pub(crate) len: u64,
    /// The log offset up to which everything was fsynced (or was there at the start).
    pub(crate) durable: u64,
    pub(crate) segment_bytes: u64,
    /// Why appending is no longer safe, once a failed write could not be undone or an fsync
    /// failed (after which the kernel may have dropped the data while a later fsync succeeds).
    pub(crate) broken: Option<String>,
}

impl WalWriter {
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> Result<WalWriter, IngestError> {
        let wal_err = |source| IngestError::Wal {
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
                return Err(IngestError::WalLocked {
                    path: dir.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(wal_err(e)),
        }
        let (base, path) = segments(dir)
            .map_err(|e| wal_err(io::Error::other(e.to_string())))?
            .pop()
            .unwrap_or_else(|| (0, dir.join(segment_name(0))));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(wal_err)?;
        // A newly created log is only durable once its directory entries are.
        for d in &dirs[..=existing] {
            sync_dir(d).map_err(wal_err)?;
        }
        let len = cut_torn_tail(&mut file, &path).map_err(wal_err)?;
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

    /// The log offset after its last line.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.len
    }

    /// Appends `bytes` (whole lines) with one write; returns the log's new end. The bytes are
    /// durable only once a [`Worker::sync_to`] has covered them.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<u64, String> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        if let Err(e) = (&*self.file).write_all(bytes) {
            let mut msg = format!(
                "{}: cannot append to the write-ahead log: {e}",
                self.path.display()
            );
            // A partial write must not stay: the next append would glue onto the torn line.
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

/// If the log does not end in `\n`, cuts it back to just after its last `\n`: the rest is a line
/// torn by a crash during an append, which was therefore never acknowledged. Returns the length.
fn cut_torn_tail(file: &mut File, path: &Path) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut buf = vec![0u8; 64 << 10];
    let mut end = len;
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if keep < len {
        file.set_len(keep)?;
        file.sync_all()?;
        tracing::warn!(
            wal = %path.display(),
            dropped_bytes = len - keep,
            "cut a torn last line off the write-ahead log (an append interrupted by a crash, never acknowledged)"
        );
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_other_files_are_ignored() {
        for base in [0, 1, 67_108_901, u64::MAX] {
            assert_eq!(segment_base(&segment_name(base)), Some(base));
        }
        for other in ["LOCK", "0.jsonl", "00000000000000000000.json", ".tmp-1"] {
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

    fn write(dir: &Path, base: u64, text: &str) {
        std::fs::write(dir.join(segment_name(base)), text).unwrap();
    }

    fn drain(r: &mut WalReader) -> String {
        let mut out = String::new();
        loop {
            let l = r.poll(2).unwrap();
            if l.count == 0 {
                return out;
            }
            out.push_str(std::str::from_utf8(&l.bytes).unwrap());
        }
    }

    #[test]
    fn segments_read_as_one_stream_resume_at_a_log_offset_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, 0, "a\nb\n");
        write(d, 4, "c\n");
        write(d, 6, "d\ne\n");
        std::fs::write(d.join("LOCK"), "").unwrap();
        let mut r = WalReader::open(d, None).unwrap();
        assert_eq!(r.lag_bytes(), 10);
        assert_eq!(r.poll(3).unwrap().bytes, b"a\nb\n");
        assert_eq!(r.poll(3).unwrap().bytes, b"c\n");
        let mid = r.position();
        assert_eq!(mid, WalPosition { offset: 6, line: 1 });
        assert_eq!(drain(&mut r), "d\ne\n");
        assert_eq!(r.position().offset, 10);
        assert_eq!(r.lag_bytes(), 0);

        // Appends to the newest segment, and a new segment, are followed.
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.join(segment_name(6)))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"f\n"))
            .unwrap();
        write(d, 12, "g\n");
        assert_eq!(drain(&mut r), "f\ng\n");

        // A restart at a checkpoint's position, then trimming up to it.
        let mut again = WalReader::open(d, Some(mid)).unwrap();
        assert_eq!(drain(&mut again), "d\ne\nf\ng\n");
        assert_eq!(trim(d, mid.offset).unwrap(), 2);
        let left: Vec<u64> = segments(d).unwrap().iter().map(|(b, _)| *b).collect();
        assert_eq!(left, vec![6, 12]);
        let mut resumed = WalReader::open(d, Some(mid)).unwrap();
        assert_eq!(drain(&mut resumed), "d\ne\nf\ng\n");
        let mut from_start = WalReader::open(d, None).unwrap();
        assert_eq!(drain(&mut from_start), "d\ne\nf\ng\n");

        let err = WalReader::open(d, Some(WalPosition { offset: 4, line: 0 }))
            .unwrap_err()
            .to_string();
        assert!(err.contains("log starts at 6"), "{err}");
        let err = WalReader::open(
            d,
            Some(WalPosition {
                offset: 99,
                line: 0,
            }),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("past the end of the log (14)"), "{err}");
    }

    #[test]
    fn nothing_past_the_durable_end_is_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The writer's last bytes of the first segment, and its second segment, are not
        // durable yet; `x` is a torn write that will be cut back.
        write(d, 0, "a\nb\nc\nx");
        let mut r = WalReader::open(d, None).unwrap();
        r.read_up_to(4);
        assert_eq!(drain(&mut r), "a\nb\n");
        write(d, 0, "a\nb\nc\n");
        write(d, 6, "d\n");
        // The next segment exists, but the rest of this one is not durable: stay.
        assert_eq!(drain(&mut r), "");
        assert_eq!(r.position().offset, 4);
        r.read_up_to(7);
        assert_eq!(drain(&mut r), "c\n");
        assert_eq!(r.position().offset, 6);
        r.read_up_to(8);
        assert_eq!(drain(&mut r), "d\n");
        assert_eq!(r.position(), WalPosition { offset: 8, line: 1 });
    }
}
