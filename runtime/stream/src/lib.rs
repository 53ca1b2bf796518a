//! Streaming mode: the same pipeline file over an unbounded source, with exactly-once output.
//!
//! The [`source`] is a growing file ([`tail`]: JSON lines or CSV), a directory files arrive
//! in, an HTTP ingest endpoint ([`ingest`], backed by a write-ahead log of segments, [`wal`];
//! served, like the [`metrics`] endpoint, by [`http`]) or standard input.
//! Rows — lines, or from HTTP ingest also Arrow record batches kept as they arrived — are
//! gathered into micro-batches that close at `batch-rows` rows or after `batch-ms`,
//! whichever comes first, [`decode`]d into one batch of the run's schema (a line that does not
//! parse, or Arrow rows that do not fit the schema, fail the run, are skipped or go to the dead
//! letters), run through the plugin chain under the plugins' error policies,
//! and optionally aggregated in event-time [`window`]s. Output goes to a directory, one file
//! per checkpoint epoch under a temporary name until the epoch commits; to a Delta table, one
//! commit per epoch whose transaction id (job, epoch) makes it exactly-once (`table`); or to
//! stdout.
//!
//! State lives in three places, all saved at every checkpoint in one blob per task: plugins
//! that keep state across batches (the WIT `state` interface: `snapshot`/`restore`), the
//! running statistics of fitted plugins (`aggregate`: each micro-batch is folded into the
//! merged state with `partial` and `merge`, and the plugin is refitted with `finish` before it
//! transforms the batch), and the open windows.
//!
//! Every `checkpoint-ms` the driver takes a checkpoint with the [`checkpoint`](quiver_checkpoint)
//! protocol: each task closes and fdatasyncs the epoch's files and acknowledges with their names
//! ([`BarrierAck`], plain data), and the committer thread syncs the output directory, stores the
//! state blob and one manifest (the source position after the epoch's last line, the state,
//! the files to make visible) in the checkpoint store. That write is the commit point; the
//! files are then renamed to their final names. A run that starts finds the last manifest,
//! completes its renames, deletes files of epochs that never committed, restores the state and
//! reads on from the manifest's position, so a crash at any moment (`kill -9` included)
//! neither loses nor repeats a row of output. Stdin cannot be rewound and stdout cannot take
//! rows back: with either, delivery is at-least-once (stdout) or rows read since the last
//! checkpoint are lost (stdin).
//!
//! The driver and the tasks talk only in [`messages`]: micro-batches and barriers one way,
//! progress, acknowledgements and failures the other, all serialisable (a micro-batch as Arrow
//! IPC), so a task need not share the driver's process. A run is its settings, its recovery
//! (`resume`, then the tasks restored from the last checkpoint), the committer thread, one
//! worker thread per task, and the driver loop.
//!
//! A stop request (SIGINT or SIGTERM in the binary) ends the current micro-batch and takes a
//! final checkpoint.
//!
//! Uses `quiver-exec` (the pipeline file, the chain runner, windows, policies),
//! `quiver-checkpoint`, `quiver-data`, `quiver-durable` and `quiver-plugin-host`.

pub mod chunk;
mod commit;
pub mod decode;
pub mod feed;
pub mod http;
pub mod ingest;
pub mod messages;
pub mod metrics;
mod output;
pub mod source;
mod table;
pub mod tail;
mod task;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use chunk::{rows, take_rows, Chunk};
pub use commit::BarrierAck;
use commit::{Barrier, Committed, CommitterHandle};
use decode::Decoder;
use messages::{FromWorker, ToWorker};
use output::{apply, listing, DEAD_LETTER_DIR};
use quiver_checkpoint::store::{sync_dir, write_durably};
use quiver_checkpoint::{
    self, names, CheckpointStore, Coordinator, Epoch, LocalStore, ProtocolError, SourceOffset,
    StoreError,
};
use quiver_data::io::{self, Format, IoError, SourceOptions};
use quiver_data::partition::Partitioning;
use quiver_exec::chain::{Chain, RunError, WorkerContext};
use quiver_exec::pipeline::Pipeline;
use quiver_exec::policy::{LatePolicy, OnMalformed};
use quiver_exec::window::{self, WindowSpec};
use quiver_lake::delta::SchemaPolicy;
use quiver_plugin_host::plugin::{Host, PluginError};
use quiver_plugin_host::replay::Recorder;
use source::{SourceKind, StreamInput};
use table::TableSink;
use task::{Task, WorkerSettings};

/// Where a streaming run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// From the last checkpoint, or the start of the input if there is none.
    #[default]
    Resume,
    /// From the start of the input, forgetting the job's checkpoints (the output directory must
    /// hold no output of the job).
    Beginning,
    /// From this byte offset of the input file (which must start a line), forgetting the
    /// job's checkpoints, as with `Beginning`.
    Offset(u64),
}

/// What a streaming run tells its caller while it runs; the library prints nothing, the
/// `quiver` binary prints these.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The HTTP ingest endpoint listens here (the port is the system's choice for `:0`).
    IngestListening(std::net::SocketAddr),
    /// The metrics endpoint listens here.
    MetricsListening(std::net::SocketAddr),
    /// The live figures, about once a second when [`StreamOptions::status`] is set.
    Status(StreamStatus),
}

/// The live figures of a streaming run.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStatus {
    /// Lines read so far.
    pub rows_in: u64,
    /// Lines read per second since the start.
    pub rows_per_second: f64,
    /// Rows written so far.
    pub rows_out: u64,
    /// Bytes of input not read yet.
    pub lag_bytes: u64,
    /// The last checkpoint committed.
    pub last_checkpoint: Epoch,
    /// Time since the last checkpoint was taken.
    pub since_checkpoint: Duration,
}

/// Where a run's [`StreamEvent`]s go.
pub type EventSink = Arc<dyn Fn(StreamEvent) + Send + Sync>;

/// How a streaming run is driven.
#[derive(Clone, Default)]
pub struct StreamOptions {
    /// Set it to stop: the run closes its micro-batch, takes a final checkpoint and returns.
    pub stop: Arc<AtomicBool>,
    /// Send [`StreamEvent::Status`] about once a second.
    pub status: bool,
    /// Where events go (nowhere by default).
    pub events: Option<EventSink>,
    /// Where to start.
    pub start: Start,
    /// Stop at the end of the input (once a poll finds no new line), with a final checkpoint,
    /// instead of waiting for more.
    pub stop_at_end: bool,
    /// Read rows from this feed instead of the pipeline's `[source]` (which is then ignored).
    pub feed: Option<feed::FeedOpener>,
}

impl std::fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOptions")
            .field("stop", &self.stop)
            .field("status", &self.status)
            .field("events", &self.events.is_some())
            .field("start", &self.start)
            .field("stop_at_end", &self.stop_at_end)
            .field("feed", &self.feed.is_some())
            .finish()
    }
}

impl StreamOptions {
    fn tell(&self, event: StreamEvent) {
        if let Some(events) = &self.events {
            events(event);
        }
    }
}

/// What a streaming run did.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// The job.
    pub job: String,
    /// The checkpoint it resumed from (0: none).
    pub resumed_from: Epoch,
    /// The last checkpoint committed.
    pub last_checkpoint: Epoch,
    /// Lines read.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Checkpoints committed by this run.
    pub checkpoints: u64,
    /// Batches dropped by plugins under the `skip` policy.
    pub skipped_batches: u64,
    /// Input lines that did not parse (skipped or dead-lettered).
    pub malformed: u64,
    /// Events behind the watermark (dropped or dead-lettered).
    pub late: u64,
    /// Rows written to the dead letters.
    pub dead_letters: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl std::fmt::Display for StreamReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stream `{}`: {} rows in, {} rows out in {:.1} s; {} checkpoints (resumed after checkpoint {}, last {})",
            self.job,
            self.rows_in,
            self.rows_out,
            self.elapsed.as_secs_f64(),
            self.checkpoints,
            self.resumed_from,
            self.last_checkpoint
        )?;
        for (n, what) in [
            (self.malformed, "malformed lines"),
            (self.late, "late events"),
            (self.skipped_batches, "skipped batches"),
            (self.dead_letters, "dead letters"),
        ] {
            if n > 0 {
                write!(f, "; {n} {what}")?;
            }
        }
        writeln!(f)
    }
}

/// A streaming run failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The pipeline cannot run in streaming mode as written.
    #[error("streaming: {0}")]
    Setup(String),
    /// Reading the source or writing the output failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The HTTP ingest endpoint stopped working.
    #[error("HTTP ingest: {0}")]
    Ingest(String),
    /// The caller's [`feed`](feed::Feed) failed.
    #[error(transparent)]
    Feed(Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP ingest's write-ahead log cannot be read: damaged, or written by an older
    /// version.
    #[error("HTTP ingest: {0}")]
    Wal(#[from] wal::WalError),
    /// Rows of the write-ahead log that arrived as Arrow do not fit the run's schema.
    #[error("{}: the Arrow record at log offset {offset} does not fit the run's schema: {message}", .path.display())]
    ArrowMismatch {
        /// The log segment holding the record.
        path: PathBuf,
        /// The record's log offset.
        offset: u64,
        /// What does not fit.
        message: String,
    },
    /// The rows of a micro-batch could not be joined into one batch.
    #[error("cannot join the rows of a micro-batch: {0}")]
    Join(#[source] arrow::error::ArrowError),
    /// A line of the source does not parse.
    #[error("{}:{line}: {message}", .path.display())]
    Malformed {
        /// The source file.
        path: PathBuf,
        /// The 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint store failed or refused a commit.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The driver broke the checkpoint protocol (a bug).
    #[error("checkpoint protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// Loading the plugins failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A plugin failed under the `fail` policy.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The window aggregation refused its input.
    #[error(transparent)]
    Window(#[from] window::WindowError),
    /// The metrics endpoint cannot be served.
    #[error("cannot serve metrics: {0}")]
    Metrics(#[source] http::HttpError),
    /// The HTTP ingest endpoint cannot start (its address, its write-ahead log).
    #[error("HTTP ingest: {0}")]
    IngestStart(#[source] ingest::IngestError),
    /// A thread of the run cannot be started.
    #[error("cannot start {what}: {source}")]
    Thread {
        /// Which thread: `the committer`, `a worker`.
        what: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// A task in another thread or process failed; only its message reached the driver.
    #[error("{message}")]
    TaskFailed {
        /// The task's error, as it said it.
        message: String,
    },
    /// A worker thread ended without reporting an error (it panicked).
    #[error("a worker stopped without saying why (it panicked; see the log above)")]
    WorkerGone,
    /// A micro-batch could not be split into partitions.
    #[error("partitioning micro-batch {batch}: {source}")]
    Partition {
        /// The micro-batch.
        batch: u64,
        /// Why.
        source: quiver_data::partition::PartitionError,
    },
    /// Rows could not be turned into dead letters.
    #[error("dead letters: {0}")]
    DeadLetters(#[source] quiver_plugin_host::abi::AbiError),
    /// The table sink refused or failed.
    #[error(transparent)]
    Lake(#[from] quiver_lake::LakeError),
    /// The table holds a later epoch of the job than the job's last checkpoint.
    #[error("table {}: job `{job}` committed epoch {table_epoch} to it, but the job's checkpoints end at epoch {checkpoint_epoch}: they are not the ones the table was written with (lost, or another job's), and the next epochs would be taken for committed ones. Restore the checkpoints, or write under another [stream] job", .table.display())]
    TableAhead {
        /// The table's directory.
        table: PathBuf,
        /// The job.
        job: String,
        /// The job's last epoch the table records.
        table_epoch: i64,
        /// The job's last checkpoint.
        checkpoint_epoch: Epoch,
    },
    /// The output's columns changed between micro-batches.
    #[error("micro-batch {batch}: the output's columns changed from [{before}] to [{after}]; a stream's output keeps one schema (a fitted plugin whose columns depend on the data, such as one-hot's, cannot run on a stream)")]
    SchemaChanged {
        /// The micro-batch.
        batch: u64,
        /// The columns before.
        before: String,
        /// The columns now.
        after: String,
    },
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> IoError + 'a {
    move |source| IoError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Where output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sink {
    /// Files in a directory, committed per epoch (exactly-once).
    Dir(PathBuf),
    /// A Delta table, one commit per epoch (exactly-once, see [`table`]).
    Table {
        /// The table's directory.
        dir: PathBuf,
        /// Its partition columns, for a table the job creates.
        partition_by: Vec<String>,
        /// Whether other columns than the table's are refused or merged.
        schema: SchemaPolicy,
    },
    /// JSON lines on stdout, as micro-batches finish (at-least-once).
    Stdout,
}

impl Sink {
    /// The directory files go to (`None` for stdout).
    fn dir(&self) -> Option<&Path> {
        match self {
            Sink::Dir(dir) | Sink::Table { dir, .. } => Some(dir),
            Sink::Stdout => None,
        }
    }
}

/// The settings of a streaming run, resolved.
struct Settings {
    source: SourceKind,
    in_format: Format,
    csv_delimiter: u8,
    sink: Sink,
    format: Format,
    job: String,
    store_dir: PathBuf,
    batch_rows: usize,
    batch_age: Duration,
    /// `None`: checkpoints only when the run stops.
    checkpoint_every: Option<Duration>,
    poll: Duration,
    metrics_addr: Option<String>,
    on_malformed: OnMalformed,
    window: Option<WindowSpec>,
    on_late: LatePolicy,
}

impl Settings {
    fn new(p: &Pipeline, fed: bool) -> Result<Settings, StreamError> {
        let spec = p.stream.clone().unwrap_or_default();
        let stdout = p.sink.table.is_none() && p.sink.path.as_os_str() == "-";
        let sink = match &p.sink.table {
            Some(dir) => {
                p.validate_lake()
                    .map_err(|e| StreamError::Setup(e.to_string()))?;
                if p.sink.mode == quiver_exec::pipeline::TableMode::Overwrite {
                    return Err(StreamError::Setup(
                        "[sink] mode = \"overwrite\" replaces a table's rows in one run; a stream adds each epoch's rows to the table: use mode = \"append\" (the default)".into(),
                    ));
                }
                Sink::Table {
                    dir: p.resolve(dir),
                    partition_by: p.sink.partition_by.clone(),
                    schema: p.sink.schema.policy(),
                }
            }
            None if stdout => Sink::Stdout,
            None => Sink::Dir(p.resolve(&p.sink.path)),
        };
        let uses_dead_letters = spec.on_malformed == OnMalformed::DeadLetter
            || spec.on_late == LatePolicy::DeadLetter
            || p.plugins
                .iter()
                .any(|s| s.on_error == quiver_exec::policy::ErrorPolicy::DeadLetter);
        if stdout && uses_dead_letters {
            return Err(StreamError::Setup(
                "dead letters are written next to a directory sink; with `path = \"-\"` (stdout) use `fail` or `skip`".into(),
            ));
        }
        if p.dead_letter.is_some() && uses_dead_letters {
            return Err(StreamError::Setup(format!(
                "[dead-letter] path is for batch runs; a streaming run writes its dead letters into `{DEAD_LETTER_DIR}/` of the output directory, committed with each checkpoint"
            )));
        }
        if !p.sink.partition_by.is_empty() && p.sink.table.is_none() {
            return Err(StreamError::Setup(
                "a Hive-partitioned output is not available in streaming mode yet (a table sink takes partition-by)".into(),
            ));
        }
        let format = match (&sink, p.sink.format) {
            (Sink::Table { .. }, _) => Format::Parquet,
            (Sink::Stdout, None | Some(Format::Jsonl)) => Format::Jsonl,
            (Sink::Stdout, Some(f)) => {
                return Err(StreamError::Setup(format!(
                    "stdout takes JSON lines, not {}",
                    f.name()
                )))
            }
            (_, Some(Format::Csv)) => {
                return Err(StreamError::Setup(
                    "streaming writes Parquet, JSON lines or Arrow IPC files".into(),
                ))
            }
            (_, f) => f.unwrap_or(Format::Parquet),
        };
        let job = match spec.job {
            Some(j) => j,
            None => match sink.dir() {
                Some(dir) => dir
                    .file_name()
                    .map(|n| {
                        n.to_string_lossy().replace(
                            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                            "_",
                        )
                    })
                    .unwrap_or_else(|| "stream".into()),
                None => "stdout".into(),
            },
        };
        if !names::valid_job(&job) {
            return Err(StreamError::Setup(format!(
                "`{job}` cannot name a job: use letters, digits, `-` and `_`"
            )));
        }
        let store_dir = match (spec.checkpoint_dir, sink.dir()) {
            (Some(d), _) => p.resolve(&d),
            (None, Some(dir)) => {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                dir.with_file_name(format!("{name}-checkpoints"))
            }
            (None, None) => p.base_dir.join("quiver-checkpoints"),
        };
        let source = match (&spec.listen, &p.source.paths[..]) {
            _ if fed => SourceKind::Feed,
            (Some(addr), []) => SourceKind::Http {
                addr: addr.clone(),
                wal: spec
                    .wal
                    .map(|w| p.resolve(&w))
                    .unwrap_or_else(|| store_dir.join(format!("{job}.wal"))),
                segment_bytes: match spec.wal_segment_bytes {
                    Some(0) => {
                        return Err(StreamError::Setup(
                            "[stream] wal-segment-bytes must be at least 1".into(),
                        ))
                    }
                    Some(n) => n,
                    None => wal::DEFAULT_SEGMENT_BYTES,
                },
            },
            (Some(_), _) => {
                return Err(StreamError::Setup(
                    "[stream] listen takes rows over HTTP: leave [source] paths empty".into(),
                ))
            }
            (None, [one]) if one == "-" => SourceKind::Stdin,
            (None, [one]) => {
                let path = p.resolve(Path::new(one));
                if path.is_dir() {
                    SourceKind::Directory(path)
                } else {
                    SourceKind::File(path)
                }
            }
            (None, paths) => {
                return Err(StreamError::Setup(format!(
                    "streaming reads one source (a growing file, a directory files arrive in, `-` for stdin, or [stream] listen); the pipeline names {} paths",
                    paths.len()
                )))
            }
        };
        let in_format = match &source {
            SourceKind::Http { .. } | SourceKind::Feed => Format::Jsonl,
            SourceKind::File(path) => p
                .source
                .format
                .or_else(|| Format::from_path(path))
                .unwrap_or(Format::Jsonl),
            _ => p.source.format.unwrap_or(Format::Jsonl),
        };
        if !matches!(in_format, Format::Jsonl | Format::Csv) {
            return Err(StreamError::Setup(format!(
                "streaming reads JSON lines or CSV; this input is {}",
                in_format.name()
            )));
        }
        if in_format == Format::Csv && p.source.csv_header == Some(false) {
            return Err(StreamError::Setup(
                "a streamed CSV source needs a header line (it names the columns)".into(),
            ));
        }
        Ok(Settings {
            source,
            in_format,
            csv_delimiter: p.source.csv_delimiter.map_or(b',', |c| c as u8),
            sink,
            format,
            job,
            store_dir,
            batch_rows: spec.batch_rows.unwrap_or(10_000).max(1),
            batch_age: Duration::from_millis(spec.batch_ms.unwrap_or(200)),
            checkpoint_every: match spec.checkpoint_ms.unwrap_or(1000) {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            poll: Duration::from_millis(spec.poll_ms.unwrap_or(10).max(1)),
            metrics_addr: spec.metrics_addr,
            on_malformed: spec.on_malformed,
            window: spec.window,
            on_late: spec.on_late,
        })
    }

    /// The directory epoch files go to, a table sink's included (`None` for stdout).
    fn sink_dir(&self) -> Option<&Path> {
        self.sink.dir()
    }
}

/// File of a job's checkpoint directory holding the run's schema when it came from Arrow rows:
/// an Arrow IPC stream with no batches.
const ARROW_SCHEMA_FILE: &str = "schema.arrows";

/// Where a job keeps what gave it its schema: the first lines it ever saw, and the schema
/// of an Arrow IPC stream if its first rows arrived as one.
fn schema_files(s: &Settings) -> (PathBuf, PathBuf) {
    let job_dir = s.store_dir.join(&s.job);
    let ext = s.in_format.extension();
    (
        job_dir.join(format!("sample.{ext}")),
        job_dir.join(ARROW_SCHEMA_FILE),
    )
}

/// The job's decoder, if it has a schema already (from an earlier run): see [`input_decoder`].
fn stored_decoder(s: &Settings) -> Result<Option<Decoder>, StreamError> {
    let (sample, arrow_schema) = schema_files(s);
    if sample.exists() {
        let options = SourceOptions {
            format: Some(s.in_format),
            csv_delimiter: s.csv_delimiter,
            ..SourceOptions::default()
        };
        let header = if s.in_format == Format::Csv {
            let text = std::fs::read(&sample).map_err(io_err(&sample, "cannot read"))?;
            let end = text
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |i| i + 1);
            Some(text[..end].to_vec())
        } else {
            None
        };
        let schema = io::open(&[sample.to_string_lossy().into_owned()], &options)?.schema();
        return Ok(Some(Decoder::new(
            schema,
            s.in_format,
            header,
            s.csv_delimiter,
        )));
    }
    if arrow_schema.exists() {
        let schema = read_schema_stream(&arrow_schema)?;
        return Ok(Some(Decoder::new(
            schema,
            s.in_format,
            None,
            s.csv_delimiter,
        )));
    }
    Ok(None)
}

/// The input's schema (and for CSV its header line), kept with the job's checkpoints so that
/// every restart reads with the same schema: inferred as batch mode does, from the first lines
/// the job ever saw (kept as `sample.jsonl` or `sample.csv`); or, when the first rows of an HTTP
/// ingest arrived as an Arrow IPC stream, that stream's schema with every column nullable (kept
/// as `schema.arrows`). For a job that has none yet, returns the rows read from `source` to
/// find it, which are the first rows to process.
fn input_decoder(
    s: &Settings,
    source: &mut StreamInput,
    stop: &AtomicBool,
) -> Result<(Decoder, Vec<Chunk>), StreamError> {
    if let Some(decoder) = stored_decoder(s)? {
        return Ok((decoder, Vec::new()));
    }
    let (sample, arrow_schema) = schema_files(s);
    let infer_rows = SourceOptions::default().schema_infer_rows;
    let mut chunks = source.poll(infer_rows)?;
    while rows(&chunks) == 0 {
        if stop.load(Ordering::Relaxed) || source.ended() {
            return Err(StreamError::Setup(
                "stopped before the source had a complete line to infer its schema from".into(),
            ));
        }
        std::thread::sleep(s.poll);
        chunks = source.poll(infer_rows)?;
    }
    match chunks.first() {
        Some(Chunk::Arrow(a)) => {
            write_durably(&arrow_schema, &schema_stream(&nullable(&a.schema))?)?;
        }
        _ => {
            // The lines before the first Arrow rows, if any came too.
            let lines: Vec<u8> = chunks
                .iter()
                .map_while(|c| match c {
                    Chunk::Lines(l) => Some(l.bytes.as_slice()),
                    Chunk::Arrow(_) => None,
                })
                .flatten()
                .copied()
                .collect();
            write_durably(&sample, &lines)?;
        }
    }
    let decoder = stored_decoder(s)?.expect("the schema was just stored");
    Ok((decoder, chunks))
}

/// `schema` with every column nullable: JSON lines mixed in later may lack a key, as may an
/// Arrow body a column (the cluster's ingest door fixes a job's schema the same way).
pub fn nullable(schema: &arrow::datatypes::Schema) -> arrow::datatypes::SchemaRef {
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// `schema` as an Arrow IPC stream with no batches.
pub fn schema_stream(schema: &arrow::datatypes::Schema) -> Result<Vec<u8>, StreamError> {
    let bad = |e: arrow::error::ArrowError| {
        StreamError::Setup(format!("cannot encode the run's schema: {e}"))
    };
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(bad)?;
    w.finish().map_err(bad)?;
    w.into_inner().map_err(bad)
}

/// The schema of the Arrow IPC stream in `path`.
fn read_schema_stream(path: &Path) -> Result<arrow::datatypes::SchemaRef, StreamError> {
    let file = std::fs::File::open(path).map_err(io_err(path, "cannot open"))?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)
        .map_err(|e| {
            StreamError::Setup(format!(
                "{}: cannot read the run's schema: {e}",
                path.display()
            ))
        })?;
    Ok(reader.schema())
}

/// Runs `pipeline` in streaming mode until `options.stop` is set (or the input ends, with
/// `stop_at_end` or a closed stdin).
///
/// Checkpoints go to a [`LocalStore`] in the pipeline's checkpoint directory.
pub fn run(
    pipeline: &Pipeline,
    host: &Host,
    options: &StreamOptions,
) -> Result<StreamReport, StreamError> {
    let s = Settings::new(pipeline, options.feed.is_some())?;
    let store = LocalStore::new(&s.store_dir);
    drive(pipeline, host, options, s, store)
}

/// [`run`] with checkpoints in `store` (a store other processes share, for one).
pub fn run_with_store<S: CheckpointStore + 'static>(
    pipeline: &Pipeline,
    host: &Host,
    options: &StreamOptions,
    store: S,
) -> Result<StreamReport, StreamError> {
    let s = Settings::new(pipeline, options.feed.is_some())?;
    drive(pipeline, host, options, s, store)
}

/// Where a run starts: its generation (which fences off every earlier writer of the job), what
/// the last checkpoint says, and the source position to read on from.
struct Resumed {
    generation: quiver_checkpoint::Generation,
    recovery: quiver_checkpoint::Recovery,
    from: Option<serde_json::Value>,
}

/// Recovery, before anything is read: starts over (forgetting the job, refusing if output is
/// already committed) or resumes; takes a new generation; completes the last checkpoint's
/// renames (or its table commit) and deletes the files of epochs that never committed —
/// durable once the output directory is synced —; and works out where the source reads on.
fn resume<S: CheckpointStore>(
    s: &Settings,
    table: Option<&TableSink>,
    store: &mut S,
    options: &StreamOptions,
) -> Result<Resumed, StreamError> {
    if options.start != Start::Resume {
        if let Some(table) = table {
            table.refuse_restart()?;
        } else if let Some(dir) = s.sink_dir() {
            let (_, finals) = listing(dir, &s.job)?;
            if !finals.is_empty() {
                return Err(StreamError::Setup(format!(
                    "{} already holds output ({} and {} more); starting over would write those rows again: remove them first",
                    dir.display(),
                    finals[0],
                    finals.len() - 1
                )));
            }
        }
        store.forget(&s.job)?;
    }
    let generation = store.claim(&s.job)?;
    let last = store.latest(&s.job)?;
    let temps = match s.sink_dir() {
        Some(dir) => listing(dir, &s.job)?.0,
        None => Vec::new(),
    };
    let recovery = quiver_checkpoint::recover(&s.job, last.as_ref(), &temps, generation - 1);
    if let Some(dir) = s.sink_dir() {
        for action in &recovery.actions {
            apply(dir, action)?;
        }
        sync_dir(dir)?;
    }
    if let Some(table) = table {
        table.recover(last.as_ref())?;
    }
    let from = match (recovery.sources.get("input"), options.start) {
        (Some(SourceOffset(v)), _) => Some(v.clone()),
        (None, Start::Offset(offset)) => match &s.source {
            SourceKind::File(path) => Some(
                serde_json::to_value(offset_position(path, offset)?)
                    .expect("a position serializes"),
            ),
            _ => {
                return Err(StreamError::Setup(
                    "--from-offset is a byte offset in a followed file; this source is not one"
                        .into(),
                ))
            }
        },
        (None, _) => None,
    };
    Ok(Resumed {
        generation,
        recovery,
        from,
    })
}

/// One task per partition, each with its own instances of the chain and, when resuming, the
/// state the last checkpoint saved for it. A checkpoint holding state of a partition the
/// pipeline no longer makes is refused.
fn restore_tasks<S: CheckpointStore>(
    s: &Settings,
    store: &S,
    chain: &Chain,
    partitions: u32,
    recovery: &quiver_checkpoint::Recovery,
) -> Result<Vec<Task>, StreamError> {
    let mut tasks = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let instances = chain.instantiate()?;
        let mut task = Task {
            fits: vec![None; instances.len()],
            instances,
            partitions,
            window: None,
            window_saved: None,
            out_schema: None,
        };
        if let Some(state) = recovery.state.get(&p) {
            let bytes = store.get_state(&s.job, state)?;
            task.restore(&bytes, &s.store_dir.join(&s.job))?;
        }
        // Asked once now so that a plugin keeping state is known to from the first batch on
        // (an instance that then fails cannot be replaced by a blank one).
        for i in &mut task.instances {
            i.snapshot()?;
        }
        tasks.push(task);
    }
    if let Some(t) = recovery.state.keys().find(|t| **t >= partitions) {
        return Err(StreamError::Setup(format!(
            "the checkpoint holds state of partition {t}, but the pipeline now makes {partitions} partitions; keep the partition count, or start over with --from-beginning"
        )));
    }
    Ok(tasks)
}

fn drive<S: CheckpointStore + 'static>(
    pipeline: &Pipeline,
    host: &Host,
    options: &StreamOptions,
    s: Settings,
    mut store: S,
) -> Result<StreamReport, StreamError> {
    let started = Instant::now();
    if let Some(dir) = s.sink_dir() {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "cannot create"))?;
    }
    let table = match &s.sink {
        Sink::Table {
            dir,
            partition_by,
            schema,
        } => Some(Arc::new(TableSink::new(
            dir,
            &s.job,
            partition_by.clone(),
            *schema,
        )?)),
        Sink::Dir(_) | Sink::Stdout => None,
    };
    let Resumed {
        generation,
        recovery,
        from,
    } = resume(&s, table.as_deref(), &mut store, options)?;
    if let Some(f) = &from {
        tracing::info!(job = %s.job, epoch = recovery.committed, position = %f, "resuming");
    }
    let ext = match s.in_format {
        Format::Csv => ".csv",
        _ => ".jsonl",
    };
    // A job that has its schema already gives it to the HTTP ingest before it listens, so that
    // no Arrow body that does not fit it is ever acknowledged.
    let stored = stored_decoder(&s)?;
    let mut source = match &options.feed {
        Some(open) => StreamInput::Feed(open(from.as_ref())?),
        None => StreamInput::open(
            &s.source,
            ext,
            from.as_ref(),
            stored.as_ref().map(|d| d.schema().clone()),
        )?,
    };
    if let Some(addr) = source.ingest_addr() {
        options.tell(StreamEvent::IngestListening(addr));
    }

    let (decoder, first_rows) = match stored {
        Some(decoder) => (decoder, Vec::new()),
        None => input_decoder(&s, &mut source, &options.stop)?,
    };
    source.set_schema(decoder.schema().clone());
    let chain = Chain::load(pipeline, host)?;
    let partitioning = partitioning(pipeline)?;
    let partitions = partitioning.as_ref().map_or(1, |p| p.partitions()) as u32;
    let mut tasks = restore_tasks(&s, &store, &chain, partitions, &recovery)?;
    let recorder = Recorder::new(pipeline.replay_dir());
    let context = WorkerContext {
        policies: &chain.policies,
        recorder: &recorder,
    };

    let metrics = match &s.metrics_addr {
        Some(addr) => {
            let (server, shared) = metrics::serve(addr).map_err(StreamError::Metrics)?;
            options.tell(StreamEvent::MetricsListening(server.local_addr()));
            Some((server, shared))
        }
        None => None,
    };
    let mut snapshot = metrics::MetricsSnapshot {
        job: s.job.clone(),
        last_epoch: recovery.committed,
        ..Default::default()
    };
    let coordinator = Coordinator::new(&s.job, generation, 0..partitions, recovery.committed);
    let committer =
        CommitterHandle::spawn(&s.job, s.sink_dir(), table.clone(), store, coordinator)?;
    let mut report = StreamReport {
        job: s.job.clone(),
        resumed_from: recovery.committed,
        last_checkpoint: recovery.committed,
        ..Default::default()
    };
    let stdout = std::sync::Mutex::new(std::io::stdout());
    let worker_settings = WorkerSettings {
        job: &s.job,
        sink_dir: s.sink_dir(),
        table: table.as_deref(),
        format: s.format,
        window: s.window.as_ref(),
        on_late: s.on_late,
        stdout: &stdout,
    };
    let driven = std::thread::scope(|scope| -> Result<(), StreamError> {
        let (to_workers, from_workers) =
            task::spawn_all(scope, &mut tasks, &worker_settings, &context)?;
        let mut driver = Driver {
            s: &s,
            options,
            source: &mut source,
            decoder: &decoder,
            partitioning: partitioning.as_ref(),
            to_workers,
            from_workers,
            committer: &committer,
            report: &mut report,
            snapshot: &mut snapshot,
            plugin_figures: vec![Vec::new(); partitions as usize],
            open_windows: vec![0; partitions as usize],
            metrics: metrics.as_ref().map(|(_, text)| text),
            started,
        };
        let result = driver.drive(first_rows);
        // Hanging up stops the workers.
        drop(driver);
        result
    });
    // Report the committer's error first: it is why the driver stopped, if it did.
    for result in committer.finish() {
        committed(&source, &mut report, &result?);
    }
    driven?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Takes in a checkpoint the committer has committed: counts it, and tells the source what it
/// will never read again.
fn committed(source: &StreamInput, report: &mut StreamReport, c: &Committed) {
    if let Some(p) = &c.position {
        source.committed(p);
    }
    report.checkpoints += 1;
    report.last_checkpoint = c.epoch;
}

/// How a streaming job spreads rows over its tasks: `[partition]` (hash, or range with given
/// boundaries), else one task.
pub fn partitioning(p: &Pipeline) -> Result<Option<Partitioning>, StreamError> {
    let Some(spec) = &p.partition else {
        return Ok(None);
    };
    let count = spec.count.unwrap_or_else(|| p.worker_count());
    Ok(Some(match spec.scheme {
        quiver_exec::pipeline::Scheme::Hash => Partitioning::Hash {
            keys: spec.by.clone(),
            algorithm: spec.hash,
            partitions: count,
        },
        quiver_exec::pipeline::Scheme::Range => {
            let Some(values) = &spec.boundaries else {
                return Err(StreamError::Setup(
                    "range partitioning in streaming mode needs [partition] boundaries: there is no input to sample them from".into(),
                ));
            };
            let boundaries =
                quiver_exec::pipeline::boundaries_from_toml(values).map_err(RunError::from)?;
            boundaries
                .validate()
                .map_err(|e| StreamError::Setup(e.to_string()))?;
            Partitioning::Range {
                key: spec.by[0].clone(),
                boundaries,
            }
        }
    }))
}

/// The driver's side of a run: reads the source into micro-batches, spreads them over the
/// workers, and injects barriers.
struct Driver<'a> {
    s: &'a Settings,
    options: &'a StreamOptions,
    source: &'a mut StreamInput,
    decoder: &'a Decoder,
    partitioning: Option<&'a Partitioning>,
    to_workers: Vec<std::sync::mpsc::SyncSender<ToWorker>>,
    from_workers: std::sync::mpsc::Receiver<FromWorker>,
    committer: &'a CommitterHandle,
    report: &'a mut StreamReport,
    snapshot: &'a mut metrics::MetricsSnapshot,
    /// Per task, the latest figures of each plugin.
    plugin_figures: Vec<Vec<(String, quiver_plugin_host::plugin::Metrics)>>,
    open_windows: Vec<u64>,
    metrics: Option<&'a Arc<std::sync::Mutex<String>>>,
    started: Instant,
}

impl Driver<'_> {
    /// Takes in a worker's progress.
    fn progress(&mut self, p: messages::Progress) {
        let r = &mut *self.report;
        r.rows_out += p.rows_out;
        r.skipped_batches += p.skipped;
        r.late += p.late;
        r.dead_letters += p.dead_letters;
        self.snapshot.retries += p.retries;
        self.open_windows[p.task as usize] = p.open_windows;
        self.plugin_figures[p.task as usize] = p.plugins;
    }

    /// Handles what workers reported so far, without waiting.
    fn poll_workers(&mut self) -> Result<(), StreamError> {
        while let Ok(msg) = self.from_workers.try_recv() {
            match msg {
                FromWorker::Done(p) => self.progress(p),
                FromWorker::Failed(e) => return Err(e),
                FromWorker::Barrier(_) => unreachable!("barriers are awaited"),
            }
        }
        Ok(())
    }

    /// Sends a barrier to every worker and waits for all their parts.
    fn barrier(&mut self) -> Result<Vec<BarrierAck>, StreamError> {
        for tx in &self.to_workers {
            if tx.send(ToWorker::Barrier).is_err() {
                break; // It failed: its error is waiting below.
            }
        }
        let mut parts = Vec::with_capacity(self.to_workers.len());
        while parts.len() < self.to_workers.len() {
            match self.from_workers.recv() {
                Ok(FromWorker::Done(p)) => self.progress(p),
                Ok(FromWorker::Barrier(ack)) => parts.push(ack),
                Ok(FromWorker::Failed(e)) => return Err(e),
                Err(_) => return Err(StreamError::WorkerGone),
            }
        }
        Ok(parts)
    }

    /// Decodes a micro-batch and hands each partition's rows to its worker.
    fn dispatch(&mut self, chunks: &[Chunk], number: u64, epoch: Epoch) -> Result<(), StreamError> {
        let (batch, bad) = self.decoder.decode(chunks, self.s.on_malformed)?;
        self.report.malformed += bad.len() as u64;
        for b in &bad {
            tracing::warn!("{}:{}: {}", b.path.display(), b.line, b.message);
        }
        let mut dead = output::DeadLetterLines(Vec::new());
        if self.s.on_malformed == OnMalformed::DeadLetter {
            dead.lines(&bad);
        }
        let n = self.to_workers.len();
        let mut parts: Vec<Option<RecordBatch>> = match (batch, self.partitioning) {
            (None, _) => vec![None; n],
            (Some(b), None) => vec![Some(b)],
            (Some(b), Some(p)) => {
                let fail = |source| StreamError::Partition {
                    batch: number,
                    source,
                };
                let assignment = p.assign(&b).map_err(fail)?;
                quiver_data::partition::split(&b, &assignment, n).map_err(fail)?
            }
        };
        let mut dead = Some(dead.0);
        for (id, tx) in self.to_workers.iter().enumerate() {
            let batch = parts[id].take();
            let letters = if id == 0 {
                dead.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            if batch.is_none() && letters.is_empty() {
                continue;
            }
            let msg = ToWorker::Rows {
                batch,
                number,
                epoch,
                dead: letters,
            };
            if tx.send(msg).is_err() {
                break; // It failed: its error is reported by the next poll.
            }
        }
        Ok(())
    }

    /// Dispatches `chunks` (`rows` rows) as micro-batches of at most `batch-rows` rows: a
    /// record of the HTTP ingest's log may hold more.
    fn dispatch_all(
        &mut self,
        mut chunks: Vec<Chunk>,
        mut rows: usize,
        batch_number: &mut u64,
        epoch: Epoch,
    ) -> Result<(), StreamError> {
        let most = self.s.batch_rows;
        while rows > most {
            let front = take_rows(&mut chunks, most);
            self.dispatch(&front, *batch_number, epoch)?;
            *batch_number += 1;
            rows -= most;
        }
        self.dispatch(&chunks, *batch_number, epoch)?;
        *batch_number += 1;
        Ok(())
    }

    fn drive(&mut self, first_rows: Vec<Chunk>) -> Result<(), StreamError> {
        let s = self.s;
        let options = self.options;
        let mut next_epoch = self.report.resumed_from + 1;
        // Whether rows were read since the last barrier.
        let mut dirty = false;
        let mut last_checkpoint = Instant::now();
        let mut last_status = Instant::now();
        let mut last_render = Instant::now();
        let mut batch_number = 0u64;
        let mut pending: Vec<Chunk> = Vec::new();
        let mut pending_rows = 0;
        if !first_rows.is_empty() {
            let mut first = first_rows;
            let mut count = rows(&first);
            self.report.rows_in += count as u64;
            dirty = true;
            // The rows read to infer the schema may be more than a micro-batch.
            while count > s.batch_rows {
                let front = take_rows(&mut first, s.batch_rows);
                self.dispatch(&front, batch_number, next_epoch)?;
                batch_number += 1;
                count -= s.batch_rows;
            }
            pending_rows = count;
            pending = first;
        }
        let mut batch_started: Option<Instant> = (pending_rows > 0).then(Instant::now);
        let mut at_end = false;
        loop {
            let stopping = at_end || options.stop.load(Ordering::Relaxed);
            let polled = if stopping {
                Vec::new()
            } else {
                self.source
                    .poll(s.batch_rows.saturating_sub(pending_rows).max(1))?
            };
            let count = rows(&polled);
            let idle = count == 0;
            at_end |= idle && (options.stop_at_end || self.source.ended());
            if !idle {
                self.report.rows_in += count as u64;
                if pending_rows == 0 {
                    batch_started = Some(Instant::now());
                }
                pending_rows += count;
                pending.extend(polled.into_iter().filter(|c| c.rows() > 0));
                dirty = true;
            }
            // While the committer is busy with the last barrier, rows go on into this epoch and
            // the checkpoint waits until it is free, rather than the driver waiting for it (at
            // a stop, the send below waits).
            let committer_free = stopping || self.committer.idle.load(Ordering::Acquire);
            let due = committer_free
                && s.checkpoint_every
                    .is_some_and(|every| last_checkpoint.elapsed() >= every);
            let full = pending_rows >= s.batch_rows
                || batch_started.is_some_and(|t| t.elapsed() >= s.batch_age);
            if pending_rows > 0 && (full || due || stopping) {
                let chunks = std::mem::take(&mut pending);
                let count = std::mem::take(&mut pending_rows);
                batch_started = None;
                self.dispatch_all(chunks, count, &mut batch_number, next_epoch)?;
            }
            self.poll_workers()?;
            // Commits finished by the committer (or its error).
            while let Ok(result) = self.committer.done.try_recv() {
                let c = result?;
                committed(self.source, self.report, &c);
                self.snapshot.last_checkpoint_seconds = c.seconds;
                self.snapshot.last_checkpoint_bytes = c.bytes;
            }
            if (due || stopping) && pending_rows == 0 {
                if dirty {
                    let barrier = Barrier {
                        position: self.source.position(),
                        tasks: self.barrier()?,
                    };
                    if self.committer.barriers.send(barrier).is_err() {
                        // The committer stopped on an error, reported once it is joined.
                        return Ok(());
                    }
                    next_epoch += 1;
                    dirty = false;
                }
                last_checkpoint = Instant::now();
            }
            // Rendered at most every 100 ms: scrapes are seconds apart, and this is the hot
            // loop.
            if self.metrics.is_some()
                && (last_render.elapsed() >= Duration::from_millis(100) || stopping)
            {
                last_render = Instant::now();
                self.render();
            }
            if stopping && pending_rows == 0 && !dirty {
                return Ok(());
            }
            if options.status && last_status.elapsed() >= Duration::from_secs(1) {
                let r = &self.report;
                let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                options.tell(StreamEvent::Status(StreamStatus {
                    rows_in: r.rows_in,
                    rows_per_second: r.rows_in as f64 / secs,
                    rows_out: r.rows_out,
                    lag_bytes: self.source.lag_bytes(),
                    last_checkpoint: r.last_checkpoint,
                    since_checkpoint: last_checkpoint.elapsed(),
                }));
                last_status = Instant::now();
            }
            if idle && !stopping {
                std::thread::sleep(s.poll);
            }
        }
    }

    /// Renders the metrics page from the latest figures.
    fn render(&mut self) {
        let Some(shared) = self.metrics else { return };
        let (r, m) = (&*self.report, &mut *self.snapshot);
        m.rows_in = r.rows_in;
        m.rows_out = r.rows_out;
        m.lag_bytes = self.source.lag_bytes();
        m.ingest = self.source.ingest_stats();
        m.checkpoints = r.checkpoints;
        m.last_epoch = r.last_checkpoint;
        m.skipped_batches = r.skipped_batches;
        m.malformed = r.malformed;
        m.late = r.late;
        m.dead_letters = r.dead_letters;
        m.open_windows = self.open_windows.iter().sum();
        // Each plugin's figures summed over the tasks.
        let mut plugins: Vec<(String, quiver_plugin_host::plugin::Metrics)> = Vec::new();
        for task in &self.plugin_figures {
            for (i, (name, figures)) in task.iter().enumerate() {
                match plugins.get_mut(i) {
                    Some((_, sum)) => sum.merge(figures),
                    None => plugins.push((name.clone(), figures.clone())),
                }
            }
        }
        m.plugins = plugins;
        let text = metrics::render(m);
        if let Ok(mut t) = shared.lock() {
            *t = text;
        }
    }
}

/// The position of byte `offset` of `path`, which must be 0 or just after a newline.
fn offset_position(path: &Path, offset: u64) -> Result<tail::Position, StreamError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io_err(path, "cannot open"))?;
    let meta = file.metadata().map_err(io_err(path, "cannot stat"))?;
    if offset > meta.len() {
        return Err(StreamError::Setup(format!(
            "{}: offset {offset} is past the end of the file ({} bytes)",
            path.display(),
            meta.len()
        )));
    }
    let mut head = vec![0u8; offset as usize];
    file.read_exact(&mut head)
        .map_err(io_err(path, "cannot read"))?;
    if offset > 0 && head.last() != Some(&b'\n') {
        return Err(StreamError::Setup(format!(
            "{}: offset {offset} is not at the start of a line",
            path.display()
        )));
    }
    use std::os::unix::fs::MetadataExt;
    Ok(tail::Position {
        dev: meta.dev(),
        ino: meta.ino(),
        offset,
        lines: head.iter().filter(|&&b| b == b'\n').count() as u64,
    })
}
