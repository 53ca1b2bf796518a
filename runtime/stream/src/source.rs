//! Where a streaming run's rows come from: one enum over the source kinds, each handing out
//! [`Chunk`]s — complete lines (JSON lines or CSV records), or from the HTTP ingest's log also
//! rows that arrived as Arrow record batches — and telling where it is, so that a checkpoint can
//! rewind it.
//!
//! | kind | replay after a crash |
//! |---|---|
//! | a growing file ([`tail`](super::tail)) | exact: byte offset and inode |
//! | a directory files arrive in | exact: the files done, and the offset in the current one |
//! | HTTP ingest ([`ingest`](super::ingest)) | exact: rows are in a write-ahead log ([`wal`](super::wal)) before they are acknowledged |
//! | stdin | none: lines read since the last checkpoint are not read again |

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use super::chunk::Chunk;
use super::ingest::{IngestConfig, IngestServer, IngestStats};
use super::tail::{Lines, Position, Tail};
use super::wal::{self, WalPosition, WalReader};
use super::StreamError;
use quiver_data::io::IoError;

/// Which kind of source a pipeline streams from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// One growing file.
    File(PathBuf),
    /// A directory that files arrive in.
    Directory(PathBuf),
    /// An HTTP endpoint on this address, logging to this write-ahead log.
    Http {
        /// `host:port`.
        addr: String,
        /// The write-ahead log's directory.
        wal: PathBuf,
        /// Size past which the log starts a new segment.
        segment_bytes: u64,
    },
    /// Standard input.
    Stdin,
    /// A [`Feed`](super::feed::Feed) the caller hands the run.
    Feed,
}

/// Where a directory source is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirPosition {
    /// Files read to their end.
    pub done: BTreeSet<String>,
    /// The file being read, and where.
    pub current: Option<(String, Position)>,
}

/// A directory into which files arrive; each is read once, in order of arrival.
pub struct DirSource {
    dir: PathBuf,
    extension: &'static str,
    done: BTreeSet<String>,
    current: Option<(String, Tail)>,
}

impl DirSource {
    fn open(dir: &Path, extension: &'static str, from: DirPosition) -> Result<Self, IoError> {
        let current = match from.current {
            Some((name, pos)) => Some((name.clone(), Tail::open(&dir.join(&name), Some(pos))?)),
            None => None,
        };
        Ok(DirSource {
            dir: dir.into(),
            extension,
            done: from.done,
            current,
        })
    }

    /// The next file to read: the oldest not done (by modification time, then name). Names
    /// starting with `.` or `_` are files still being written (or not data), skipped.
    fn next_file(&self) -> Result<Option<String>, IoError> {
        let listing = std::fs::read_dir(&self.dir).map_err(|source| IoError::Io {
            path: self.dir.clone(),
            action: "cannot list",
            source,
        })?;
        let mut candidates = Vec::new();
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(['.', '_'])
                || !name.ends_with(self.extension)
                || self.done.contains(&name)
            {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                candidates.push((meta.modified().ok(), name));
            }
        }
        Ok(candidates.into_iter().min().map(|(_, name)| name))
    }

    fn poll(&mut self, max: usize) -> Result<Lines, IoError> {
        loop {
            if let Some((name, tail)) = &mut self.current {
                let lines = tail.poll(max)?;
                if lines.count > 0 {
                    return Ok(lines);
                }
                if let Some(last) = tail.last_line() {
                    return Ok(last);
                }
                tracing::debug!(file = %name, "read to its end");
                self.done.insert(name.clone());
                self.current = None;
            }
            let Some(name) = self.next_file()? else {
                return Ok(Lines::default());
            };
            let tail = Tail::open(&self.dir.join(&name), None)?;
            self.current = Some((name, tail));
        }
    }

    fn position(&self) -> DirPosition {
        DirPosition {
            done: self.done.clone(),
            current: self
                .current
                .as_ref()
                .map(|(n, t)| (n.clone(), t.position())),
        }
    }

    fn lag_bytes(&self) -> u64 {
        self.current.as_ref().map_or(0, |(_, t)| t.lag_bytes())
    }
}

/// Lines of standard input, read by a thread into a bounded queue (so a fast writer waits).
pub struct StdinSource {
    lines: Receiver<std::io::Result<Vec<u8>>>,
    read: u64,
    ended: bool,
}

impl StdinSource {
    fn open() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(8192);
        std::thread::Builder::new()
            .name("quiver-stdin".into())
            .spawn(move || {
                let mut input = std::io::stdin().lock();
                loop {
                    let mut line = Vec::new();
                    match input.read_until(b'\n', &mut line) {
                        Ok(0) => return,
                        Ok(_) => {
                            if line.last() != Some(&b'\n') {
                                line.push(b'\n');
                            }
                            if tx.send(Ok(line)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .expect("a thread for stdin");
        StdinSource {
            lines: rx,
            read: 0,
            ended: false,
        }
    }

    fn poll(&mut self, max: usize) -> Result<Lines, IoError> {
        let mut out = Lines {
            first_line: self.read + 1,
            path: PathBuf::from("<stdin>"),
            ..Lines::default()
        };
        while out.count < max {
            match self.lines.try_recv() {
                Ok(Ok(line)) => {
                    out.bytes.extend_from_slice(&line);
                    out.count += 1;
                }
                Ok(Err(source)) => {
                    return Err(IoError::Io {
                        path: out.path,
                        action: "cannot read",
                        source,
                    })
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.ended = true;
                    break;
                }
            }
        }
        self.read += out.count as u64;
        Ok(out)
    }
}

/// A streaming source, open at its resume point.
pub enum StreamInput {
    /// A growing file.
    File(Tail),
    /// A directory files arrive in.
    Directory(DirSource),
    /// HTTP ingest: the server, and the write-ahead log it appends to.
    Http(IngestServer, WalReader),
    /// Standard input.
    Stdin(StdinSource),
    /// The caller's feed.
    Feed(Box<dyn super::feed::Feed>),
}

/// The checkpoint's record of a source position that does not read back.
fn bad_position(v: &serde_json::Value, e: serde_json::Error) -> StreamError {
    StreamError::Setup(format!(
        "the checkpoint's source position {v} does not fit this source ({e}); was the pipeline's source changed? Start over with --from-beginning"
    ))
}

/// The checkpoint's record of a source position, read as this source's kind of position.
fn position_from<T: serde::de::DeserializeOwned>(
    from: Option<&serde_json::Value>,
) -> Result<Option<T>, StreamError> {
    from.map(|v| serde_json::from_value(v.clone()).map_err(|e| bad_position(v, e)))
        .transpose()
}

impl StreamInput {
    /// Opens a source of `kind` at `from` (a position from a checkpoint, or `None` for the
    /// start). `extension` picks a directory's files (`.jsonl`, `.csv`); `schema` is the run's,
    /// if it has one yet (see [`IngestConfig::schema`]).
    pub fn open(
        kind: &SourceKind,
        extension: &'static str,
        from: Option<&serde_json::Value>,
        schema: Option<SchemaRef>,
    ) -> Result<StreamInput, StreamError> {
        Ok(match kind {
            SourceKind::File(path) => StreamInput::File(Tail::open(path, position_from(from)?)?),
            SourceKind::Directory(dir) => {
                let at = position_from(from)?.unwrap_or_default();
                StreamInput::Directory(DirSource::open(dir, extension, at)?)
            }
            SourceKind::Http {
                addr,
                wal,
                segment_bytes,
            } => {
                // The server creates the log, or repairs a torn last record, before it is read.
                let server = IngestServer::start(IngestConfig {
                    addr: addr.clone(),
                    wal: wal.clone(),
                    max_body_bytes: 64 << 20,
                    max_unread_bytes: 256 << 20,
                    segment_bytes: *segment_bytes,
                    handlers: 4,
                    max_connections: 256,
                    idle_timeout: Duration::from_secs(30),
                    schema,
                })
                .map_err(StreamError::IngestStart)?;
                let reader = WalReader::open(wal, position_from(from)?)?;
                server.set_read_offset(reader.position().offset);
                StreamInput::Http(server, reader)
            }
            SourceKind::Stdin => StreamInput::Stdin(StdinSource::open()),
            SourceKind::Feed => {
                return Err(StreamError::Setup(
                    "a fed run opens its feed with StreamOptions::feed".into(),
                ))
            }
        })
    }

    /// Where the HTTP ingest endpoint listens, for an HTTP source.
    pub fn ingest_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            StreamInput::Http(server, _) => Some(server.local_addr()),
            _ => None,
        }
    }

    /// The run's schema is known: the HTTP ingest endpoint refuses Arrow bodies that do not
    /// fit it from now on.
    pub fn set_schema(&self, schema: SchemaRef) {
        if let StreamInput::Http(server, _) = self {
            server.set_schema(schema);
        }
    }

    /// Rows that arrived since the last call: up to `max` complete lines, or from the HTTP
    /// ingest's log whole records until they hold `max` rows or more. Never blocks.
    pub fn poll(&mut self, max: usize) -> Result<Vec<Chunk>, StreamError> {
        let lines = match self {
            StreamInput::File(t) => t.poll(max)?,
            StreamInput::Directory(d) => d.poll(max)?,
            StreamInput::Http(server, r) => {
                if !server.is_serving() {
                    return Err(StreamError::Ingest(format!(
                        "the endpoint on {} stopped unexpectedly (its panic is printed above); restart the run (acknowledged rows are in the write-ahead log)",
                        server.local_addr()
                    )));
                }
                r.read_up_to(server.durable_end());
                let chunks = r.poll(max)?;
                server.set_read_offset(r.position().offset);
                return Ok(chunks);
            }
            StreamInput::Stdin(s) => s.poll(max)?,
            StreamInput::Feed(f) => return f.poll(max),
        };
        Ok(if lines.count > 0 {
            vec![Chunk::Lines(lines)]
        } else {
            Vec::new()
        })
    }

    /// Where the rows handed out so far end, for a checkpoint; `None` if the source cannot
    /// be rewound (stdin).
    pub fn position(&self) -> Option<serde_json::Value> {
        let v = match self {
            StreamInput::File(t) => serde_json::to_value(t.position()),
            StreamInput::Http(_, r) => serde_json::to_value(r.position()),
            StreamInput::Directory(d) => serde_json::to_value(d.position()),
            StreamInput::Feed(f) => Ok(f.position()),
            StreamInput::Stdin(_) => return None,
        };
        Some(v.expect("a position serializes"))
    }

    /// The HTTP ingest endpoint's figures, if the source is one.
    pub fn ingest_stats(&self) -> Option<IngestStats> {
        match self {
            StreamInput::Http(server, _) => Some(server.stats()),
            _ => None,
        }
    }

    /// Bytes that arrived and are not read yet (an estimate of the lag).
    pub fn lag_bytes(&self) -> u64 {
        match self {
            StreamInput::File(t) => t.lag_bytes(),
            StreamInput::Http(_, r) => r.lag_bytes(),
            StreamInput::Directory(d) => d.lag_bytes(),
            StreamInput::Feed(f) => f.lag_bytes(),
            StreamInput::Stdin(_) => 0,
        }
    }

    /// A checkpoint at `position` has committed: what is before it is never read again. The
    /// HTTP ingest's log deletes its segments before it; a failure to is only logged (they are
    /// deleted after a later checkpoint).
    pub fn committed(&self, position: &serde_json::Value) {
        let StreamInput::Http(_, reader) = self else {
            return;
        };
        let Ok(at) = serde_json::from_value::<WalPosition>(position.clone()) else {
            return;
        };
        match wal::trim(reader.dir(), at.offset) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                segments = n,
                offset = at.offset,
                "trimmed the write-ahead log"
            ),
            Err(e) => tracing::warn!("cannot trim the write-ahead log: {e}"),
        }
    }

    /// Whether the source has ended for good (stdin closed); other sources never end.
    pub fn ended(&self) -> bool {
        matches!(self, StreamInput::Stdin(s) if s.ended)
    }
}
