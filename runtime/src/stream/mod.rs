//! Streaming mode: the same pipeline file over an unbounded source, with exactly-once output.
//!
//! The [`source`] is a growing file ([`tail`]: JSON lines or CSV), a directory files arrive
//! in, an HTTP ingest endpoint ([`ingest`], backed by a write-ahead log) or standard input.
//! Lines are gathered into micro-batches that close at `batch-rows` rows or after `batch-ms`,
//! whichever comes first, [`decode`]d (a line that does not parse fails the run, is skipped or
//! goes to the dead letters), run through the plugin chain under the plugins' error policies,
//! and optionally aggregated in event-time [`window`]s. Output goes to a directory, one file
//! per checkpoint epoch under a temporary name until the epoch commits, or to stdout.
//!
//! State lives in three places, all saved at every checkpoint in one blob per task: plugins
//! that keep state across batches (the WIT `state` interface: `snapshot`/`restore`), the
//! running statistics of fitted plugins (`aggregate`: each micro-batch is folded into the
//! merged state with `partial` and `merge`, and the plugin is refitted with `finish` before it
//! transforms the batch), and the open windows.
//!
//! Every `checkpoint-ms` the driver takes a checkpoint with the [`checkpoint`](crate::checkpoint)
//! protocol: it closes the epoch's files, and the committer thread fsyncs them, stores the
//! state blob and one manifest (the source position after the epoch's last line, the state,
//! the files to make visible) in the checkpoint store. That write is the commit point; the
//! files are then renamed to their final names. A run that starts finds the last manifest,
//! completes its renames, deletes files of epochs that never committed, restores the state and
//! reads on from the manifest's position, so a crash at any moment (`kill -9` included)
//! neither loses nor repeats a row of output. Stdin cannot be rewound and stdout cannot take
//! rows back: with either, delivery is at-least-once (stdout) or rows read since the last
//! checkpoint are lost (stdin).
//!
//! A stop request (SIGINT or SIGTERM in the binary) ends the current micro-batch and takes a
//! final checkpoint.

pub mod decode;
pub mod ingest;
pub mod metrics;
pub mod source;
pub mod tail;
pub mod window;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use crate::batch::{Chain, RunError, WorkerContext};
use crate::checkpoint::store::{sync_dir, write_durably};
use crate::checkpoint::{
    self, names, Action, CheckpointStore, Coordinator, Epoch, LocalStore, PendingFile,
    ProtocolError, SourceOffset, StoreError, TaskSnapshot,
};
use crate::io::{self, FileWriter, Format, IoError, SourceOptions};
use crate::pipeline::Pipeline;
use crate::plugin::{Host, Instance, PluginError};
use crate::replay::Recorder;
use decode::{BadLine, Decoder, OnMalformed};
use source::{Source, SourceKind};
use tail::Lines;
use window::{WindowOperator, WindowSpec};

/// What to do with an event behind the watermark (`[stream] on-late`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicy {
    /// Drop it (counted in the metrics).
    #[default]
    Drop,
    /// Write it to the dead letters, with the watermark it missed.
    DeadLetter,
}

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

/// How a streaming run is driven.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Set it to stop: the run closes its micro-batch, takes a final checkpoint and returns.
    pub stop: Arc<AtomicBool>,
    /// Show a live status line on stderr.
    pub status: bool,
    /// Where to start.
    pub start: Start,
    /// Stop at the end of the input (once a poll finds no new line), with a final checkpoint,
    /// instead of waiting for more.
    pub stop_at_end: bool,
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
    /// JSON lines on stdout, as micro-batches finish (at-least-once).
    Stdout,
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

/// The directory of a sink's dead letters, relative to the sink's directory: inside it, so
/// that they commit with the same protocol; `_` makes dataset readers skip it.
const DEAD_LETTER_DIR: &str = "_dead-letter";

impl Settings {
    fn new(p: &Pipeline) -> Result<Settings, StreamError> {
        let spec = p.stream.clone().unwrap_or_default();
        let stdout = p.sink.path.as_os_str() == "-";
        let sink = if stdout {
            Sink::Stdout
        } else {
            Sink::Dir(p.resolve(&p.sink.path))
        };
        let uses_dead_letters = spec.on_malformed == OnMalformed::DeadLetter
            || spec.on_late == LatePolicy::DeadLetter
            || p.plugins
                .iter()
                .any(|s| s.on_error == crate::policy::ErrorPolicy::DeadLetter);
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
        if !p.sink.partition_by.is_empty() {
            return Err(StreamError::Setup(
                "a Hive-partitioned output is not available in streaming mode yet".into(),
            ));
        }
        let format = match (&sink, p.sink.format) {
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
            None => match &sink {
                Sink::Dir(dir) => dir
                    .file_name()
                    .map(|n| {
                        n.to_string_lossy().replace(
                            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                            "_",
                        )
                    })
                    .unwrap_or_else(|| "stream".into()),
                Sink::Stdout => "stdout".into(),
            },
        };
        if !names::valid_job(&job) {
            return Err(StreamError::Setup(format!(
                "`{job}` cannot name a job: use letters, digits, `-` and `_`"
            )));
        }
        let store_dir = match (spec.checkpoint_dir, &sink) {
            (Some(d), _) => p.resolve(&d),
            (None, Sink::Dir(dir)) => {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                dir.with_file_name(format!("{name}-checkpoints"))
            }
            (None, Sink::Stdout) => p.base_dir.join("quiver-checkpoints"),
        };
        let source = match (&spec.listen, &p.source.paths[..]) {
            (Some(addr), []) => SourceKind::Http {
                addr: addr.clone(),
                wal: spec
                    .wal
                    .map(|w| p.resolve(&w))
                    .unwrap_or_else(|| store_dir.join(format!("{job}.wal.jsonl"))),
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
            SourceKind::Http { .. } => Format::Jsonl,
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

    /// The directory epoch files go to (`None` for stdout).
    fn sink_dir(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Dir(d) => Some(d),
            Sink::Stdout => None,
        }
    }
}

/// Performs one checkpoint action in the output directory (idempotent).
fn apply(dir: &Path, action: &Action) -> Result<(), StreamError> {
    match action {
        Action::Rename { temp, fin } => {
            let (t, f) = (dir.join(temp), dir.join(fin));
            match std::fs::rename(&t, &f) {
                Ok(()) => Ok(()),
                // Renamed before a crash: done.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && f.exists() => Ok(()),
                Err(e) => Err(io_err(&t, "cannot commit")(e).into()),
            }
        }
        Action::Delete(temp) => {
            let t = dir.join(temp);
            match std::fs::remove_file(&t) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io_err(&t, "cannot delete an uncommitted file")(e).into())
                }
                _ => Ok(()),
            }
        }
    }
}

/// Names (relative to `dir`) of this job's temporary files and of final files, in `dir` and
/// its dead-letter directory.
fn listing(dir: &Path, job: &str) -> Result<(Vec<String>, Vec<String>), StreamError> {
    let mut temps = Vec::new();
    let mut finals = Vec::new();
    for sub in ["", DEAD_LETTER_DIR] {
        let d = dir.join(sub);
        let entries = match std::fs::read_dir(&d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !sub.is_empty() => continue,
            r => r.map_err(io_err(&d, "cannot list"))?,
        };
        for entry in entries {
            let name = entry
                .map_err(io_err(&d, "cannot list"))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            let rel = if sub.is_empty() {
                name.clone()
            } else {
                format!("{sub}/{name}")
            };
            if names::parse_temp(&name).is_some_and(|t| t.job == job) {
                temps.push(rel);
            } else if name.starts_with("part-") {
                finals.push(rel);
            }
        }
    }
    Ok((temps, finals))
}

/// A file of one epoch, open under its temporary name in the sink's directory.
struct EpochFile {
    temp: String,
    fin: String,
    path: PathBuf,
    format: Format,
    writer: FileWriter,
}

impl EpochFile {
    fn create(
        dir: &Path,
        job: &str,
        epoch: Epoch,
        format: Format,
        schema: &SchemaRef,
    ) -> Result<EpochFile, StreamError> {
        let ext = format.extension();
        let temp = names::temp_name(job, 0, epoch, 0, ext);
        let fin = names::final_name(0, epoch, 0, ext);
        let path = dir.join(&temp);
        // A file of this name can only be left from a run that crashed before committing.
        let file = std::fs::File::create(&path).map_err(io_err(&path, "cannot create"))?;
        let final_path = dir.join(&fin);
        let writer = FileWriter::new(file, format, schema).map_err(|reason| IoError::Write {
            path: final_path.clone(),
            format,
            reason,
        })?;
        Ok(EpochFile {
            temp,
            fin,
            path: final_path,
            format,
            writer,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), StreamError> {
        self.writer
            .write(batch)
            .map_err(|reason| self.error(reason))
    }

    fn error(&self, reason: String) -> StreamError {
        IoError::Write {
            path: self.path.clone(),
            format: self.format,
            reason,
        }
        .into()
    }

    /// Writes the file's footer and hands it over, to be fsynced by the committer.
    fn close(self) -> Result<(std::fs::File, PendingFile), StreamError> {
        let path = self.path;
        let format = self.format;
        let file = self.writer.finish().map_err(|reason| IoError::Write {
            path,
            format,
            reason,
        })?;
        Ok((
            file,
            PendingFile {
                temp: self.temp,
                fin: self.fin,
            },
        ))
    }
}

/// An epoch's output and dead-letter files, opened at their first row.
#[derive(Default)]
struct EpochFiles {
    output: Option<EpochFile>,
    dead: Option<DeadFile>,
}

impl EpochFiles {
    fn is_empty(&self) -> bool {
        self.output.is_none() && self.dead.is_none()
    }

    /// Closes both, for the committer.
    fn close(&mut self, dir: &Path) -> Result<Vec<(std::fs::File, PendingFile)>, StreamError> {
        let mut out = Vec::new();
        if let Some(f) = self.output.take() {
            out.push(f.close()?);
        }
        if let Some(f) = self.dead.take() {
            out.push(f.close(dir)?);
        }
        Ok(out)
    }
}

/// A checkpoint taken at a barrier, for the committer to make durable.
struct Barrier {
    position: Option<serde_json::Value>,
    files: Vec<(std::fs::File, PendingFile)>,
    state: Option<Vec<u8>>,
}

/// A committed checkpoint: its epoch, how long the commit took, and the bytes it made visible.
struct Committed {
    epoch: Epoch,
    seconds: f64,
    bytes: u64,
}

/// The committer: makes each barrier's files and state durable, stores its manifest (the
/// commit point) and renames the files, in barrier order, while the driver goes on with the
/// next epoch. Runs until the driver hangs up; stops at the first error.
fn commit_barriers(
    job: &str,
    sink_dir: Option<&Path>,
    mut store: LocalStore,
    mut coordinator: Coordinator,
    barriers: std::sync::mpsc::Receiver<Barrier>,
    done: std::sync::mpsc::Sender<Result<Committed, StreamError>>,
) {
    let commit = |b: Barrier,
                  store: &mut LocalStore,
                  coordinator: &mut Coordinator|
     -> Result<Committed, StreamError> {
        let started = Instant::now();
        let sources = b
            .position
            .map(|p| ("input".to_string(), SourceOffset(p)))
            .into_iter()
            .collect();
        let epoch = coordinator.start(sources)?;
        let mut pending = Vec::new();
        let mut bytes = 0;
        let dir = sink_dir.unwrap_or(Path::new("."));
        for (file, p) in b.files {
            let path = dir.join(&p.temp);
            file.sync_all().map_err(io_err(&path, "cannot sync"))?;
            bytes += file.metadata().map_or(0, |m| m.len());
            pending.push(p);
        }
        if let Some(dir) = sink_dir {
            // The temporary files' names must be durable before a manifest names them.
            sync_dir(dir)?;
            if pending.iter().any(|p| p.temp.starts_with(DEAD_LETTER_DIR)) {
                sync_dir(&dir.join(DEAD_LETTER_DIR))?;
            }
        }
        let state = match &b.state {
            Some(bytes) => Some(store.put_state(job, epoch, 0, bytes)?),
            None => None,
        };
        let manifest = coordinator
            .ack(0, epoch, TaskSnapshot { pending, state })?
            .expect("one task: its acknowledgement completes the checkpoint");
        store.commit(&manifest)?;
        // The renames need no fsync: after a crash, recovery redoes them.
        for action in coordinator.stored(&manifest) {
            apply(dir, &action)?;
        }
        Ok(Committed {
            epoch,
            seconds: started.elapsed().as_secs_f64(),
            bytes,
        })
    };
    for b in barriers {
        let result = commit(b, &mut store, &mut coordinator);
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

/// The input's schema (and for CSV its header line): inferred as batch mode does, from the
/// first lines the job ever saw, which are kept with its checkpoints so that every restart
/// reads with the same schema. Returns the lines read from `source` to infer it, which are
/// the first rows to process.
fn input_decoder(
    s: &Settings,
    source: &mut Source,
    stop: &AtomicBool,
) -> Result<(Decoder, Option<Lines>), StreamError> {
    let ext = s.in_format.extension();
    let sample = s.store_dir.join(&s.job).join(format!("sample.{ext}"));
    let options = SourceOptions {
        format: Some(s.in_format),
        csv_delimiter: s.csv_delimiter,
        ..SourceOptions::default()
    };
    let mut first = None;
    if !sample.exists() {
        let mut lines = source.poll(options.schema_infer_rows)?;
        while lines.count == 0 {
            if stop.load(Ordering::Relaxed) || source.ended() {
                return Err(StreamError::Setup(
                    "stopped before the source had a complete line to infer its schema from".into(),
                ));
            }
            std::thread::sleep(s.poll);
            lines = source.poll(options.schema_infer_rows)?;
        }
        write_durably(&sample, &lines.bytes)?;
        first = Some(lines);
    }
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
    Ok((
        Decoder::new(schema, s.in_format, header, s.csv_delimiter),
        first,
    ))
}

/// Everything a task saves at a checkpoint, in one blob.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TaskState {
    /// Per plugin in chain order: its SHA-256 and, if it keeps state, the state.
    plugins: Vec<(String, Option<Vec<u8>>)>,
    /// Per plugin: the merged running statistics of a fitted plugin.
    fits: Vec<Option<Vec<u8>>>,
    /// The window operator's open windows.
    window: Option<Vec<u8>>,
}

/// The chain of one task with what it keeps between micro-batches.
struct Task {
    instances: Vec<Instance>,
    /// Per plugin: `None` until the first batch reaches it; then whether it is fitted as it
    /// goes, with its merged statistics so far.
    fits: Vec<Option<Option<Vec<u8>>>>,
    window: Option<WindowOperator>,
    /// Window state restored from a checkpoint, until the first batch gives its schema.
    window_saved: Option<Vec<u8>>,
}

impl Task {
    /// The task's state blob (`None` if it keeps no state).
    fn snapshot(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        let mut state = TaskState::default();
        let mut any = false;
        for i in &mut self.instances {
            let s = i.snapshot()?;
            any |= s.is_some();
            state.plugins.push((i.plugin().sha256.clone(), s));
        }
        state.fits = self.fits.iter().map(|f| f.clone().flatten()).collect();
        any |= state.fits.iter().any(Option::is_some);
        state.window = match &self.window {
            Some(w) => Some(w.snapshot()),
            None => self.window_saved.clone(),
        };
        any |= state.window.is_some();
        if !any {
            return Ok(None);
        }
        Ok(Some(
            postcard::to_allocvec(&state).expect("the task state serializes"),
        ))
    }

    /// Restores a blob saved by [`Task::snapshot`].
    fn restore(&mut self, bytes: &[u8], from: &Path) -> Result<(), StreamError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: from.to_path_buf(),
            reason,
        };
        let state: TaskState = postcard::from_bytes(bytes)
            .map_err(|e| corrupt(format!("the task state does not decode: {e}")))?;
        if state.plugins.len() != self.instances.len() {
            return Err(StreamError::Setup(format!(
                "the checkpoint holds state for a chain of {} plugins, but the pipeline has {}; start over with --from-beginning",
                state.plugins.len(),
                self.instances.len()
            )));
        }
        let chain = self.instances.iter_mut().zip(state.plugins).zip(state.fits);
        for (n, ((inst, (sha, saved)), fit)) in chain.enumerate() {
            if (saved.is_some() || fit.is_some()) && sha != inst.plugin().sha256 {
                return Err(StreamError::Setup(format!(
                    "plugin {} (`{}`) is another build than the one whose state the checkpoint holds (SHA-256 {} there, {} now); its state may not fit: start over with --from-beginning",
                    inst.plugin().name,
                    inst.plugin().path.display(),
                    &sha[..12.min(sha.len())],
                    &inst.plugin().sha256[..12]
                )));
            }
            if let Some(saved) = saved {
                inst.restore(saved)?;
            }
            if let Some(fit) = fit {
                let fitted = inst.finish(fit.clone())?;
                inst.set_fitted(fitted)?;
                self.fits[n] = Some(Some(fit));
            }
        }
        self.window_saved = state.window;
        Ok(())
    }
}

/// Folds `batches` into the running statistics of the plugin at `position` (if it is fitted)
/// and refits it, before it transforms them.
fn fit_running(
    fits: &mut [Option<Option<Vec<u8>>>],
    position: usize,
    instance: &mut Instance,
    batches: &[RecordBatch],
) -> Result<(), PluginError> {
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        if fits[position].is_none() {
            let fitted = !instance.fit_reads(b.schema_ref())?.is_empty();
            fits[position] = Some(fitted.then(Vec::new));
        }
        let Some(Some(merged)) = &mut fits[position] else {
            return Ok(());
        };
        let partial = instance.partial(b)?;
        let next = if merged.is_empty() {
            partial
        } else {
            instance.merge(vec![std::mem::take(merged), partial])?
        };
        let fitted = instance.finish(next.clone())?;
        instance.set_fitted(fitted)?;
        *merged = next;
    }
    Ok(())
}

/// Writes `batch` as JSON lines, for stdout and dead letters.
fn json_lines(batch: &RecordBatch) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

/// Dead letters of one micro-batch, as one batch of JSON text lines (rows of any schema, with
/// why they are there).
struct DeadLetters(Vec<String>);

impl DeadLetters {
    fn lines(&mut self, bad: &[BadLine]) {
        for b in bad {
            self.0.push(
                serde_json::json!({
                    "_error": b.message,
                    "_source": format!("{}:{}", b.path.display(), b.line),
                    "_line": b.text,
                })
                .to_string(),
            );
        }
    }

    fn rows(&mut self, rows: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
        let text = json_lines(rows)?;
        self.0
            .extend(String::from_utf8_lossy(&text).lines().map(str::to_string));
        Ok(())
    }

    /// Appends the lines to the epoch's dead-letter file (opened at its first line).
    fn write(
        self,
        files: &mut EpochFiles,
        dir: &Path,
        job: &str,
        epoch: Epoch,
    ) -> Result<u64, StreamError> {
        if self.0.is_empty() {
            return Ok(0);
        }
        if files.dead.is_none() {
            files.dead = Some(DeadFile::create(dir, job, epoch)?);
        }
        let dead = files.dead.as_mut().expect("opened above");
        for line in &self.0 {
            dead.file
                .write_all(line.as_bytes())
                .and_then(|_| dead.file.write_all(b"\n"))
                .map_err(io_err(&dir.join(&dead.temp), "cannot write"))?;
        }
        Ok(self.0.len() as u64)
    }
}

/// An epoch's dead letters: JSON lines of any shape, under a temporary name until it commits.
struct DeadFile {
    temp: String,
    fin: String,
    file: std::io::BufWriter<std::fs::File>,
}

impl DeadFile {
    fn create(dir: &Path, job: &str, epoch: Epoch) -> Result<DeadFile, StreamError> {
        let sub = dir.join(DEAD_LETTER_DIR);
        std::fs::create_dir_all(&sub).map_err(io_err(&sub, "cannot create"))?;
        let ext = Format::Jsonl.extension();
        let temp = format!(
            "{DEAD_LETTER_DIR}/{}",
            names::temp_name(job, 0, epoch, 0, ext)
        );
        let fin = format!("{DEAD_LETTER_DIR}/{}", names::final_name(0, epoch, 0, ext));
        let path = dir.join(&temp);
        let file = std::fs::File::create(&path).map_err(io_err(&path, "cannot create"))?;
        Ok(DeadFile {
            temp,
            fin,
            file: std::io::BufWriter::new(file),
        })
    }

    fn close(self, dir: &Path) -> Result<(std::fs::File, PendingFile), StreamError> {
        let path = dir.join(&self.temp);
        let file = self
            .file
            .into_inner()
            .map_err(|e| io_err(&path, "cannot write")(e.into_error()))?;
        Ok((
            file,
            PendingFile {
                temp: self.temp,
                fin: self.fin,
            },
        ))
    }
}

/// Runs `pipeline` in streaming mode until `options.stop` is set (or the input ends, with
/// `stop_at_end` or a closed stdin).
pub fn run(
    pipeline: &Pipeline,
    host: &Host,
    options: &StreamOptions,
) -> Result<StreamReport, StreamError> {
    let started = Instant::now();
    let s = Settings::new(pipeline)?;
    if let Some(dir) = s.sink_dir() {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "cannot create"))?;
    }
    let mut store = LocalStore::new(&s.store_dir);
    if options.start != Start::Resume {
        if let Some(dir) = s.sink_dir() {
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
        let job_dir = s.store_dir.join(&s.job);
        if job_dir.exists() {
            std::fs::remove_dir_all(&job_dir).map_err(io_err(&job_dir, "cannot remove"))?;
        }
    }
    let generation = store.claim(&s.job)?;
    let last = store.latest(&s.job)?;
    let temps = match s.sink_dir() {
        Some(dir) => listing(dir, &s.job)?.0,
        None => Vec::new(),
    };
    let recovery = checkpoint::recover(&s.job, last.as_ref(), &temps, generation - 1);
    if let Some(dir) = s.sink_dir() {
        for action in &recovery.actions {
            apply(dir, action)?;
        }
        sync_dir(dir)?;
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
    if let Some(f) = &from {
        tracing::info!(job = %s.job, epoch = recovery.committed, position = %f, "resuming");
    }
    let ext = match s.in_format {
        Format::Csv => ".csv",
        _ => ".jsonl",
    };
    let mut source = Source::open(&s.source, ext, from.as_ref())?;

    let (decoder, first_lines) = input_decoder(&s, &mut source, &options.stop)?;
    let chain = Chain::load(pipeline, host)?;
    let instances = chain.instantiate()?;
    let mut task = Task {
        fits: vec![None; instances.len()],
        instances,
        window: None,
        window_saved: None,
    };
    if let Some(state) = recovery.state.get(&0) {
        let bytes = store.get_state(&s.job, state)?;
        task.restore(&bytes, &s.store_dir.join(&s.job))?;
    }
    // Asked once now so that a plugin keeping state is known to from the first batch on (an
    // instance that then fails cannot be replaced by a blank one).
    for i in &mut task.instances {
        i.snapshot()?;
    }
    let recorder = Recorder::new(pipeline.replay_dir());
    let context = WorkerContext {
        policies: &chain.policies,
        recorder: &recorder,
    };

    let metrics = match &s.metrics_addr {
        Some(addr) => {
            let (bound, shared) = metrics::serve(addr)
                .map_err(|e| StreamError::Setup(format!("cannot serve metrics on {addr}: {e}")))?;
            // On stderr so that whoever started the run (or a test) learns the port.
            eprintln!("metrics: http://{bound}/metrics");
            Some(shared)
        }
        None => None,
    };
    let mut snapshot = metrics::Snapshot {
        job: s.job.clone(),
        last_epoch: recovery.committed,
        ..Default::default()
    };
    let coordinator = Coordinator::new(&s.job, generation, [0], recovery.committed);
    // At most one barrier waits while another commits: the driver blocks beyond that.
    let (barrier_tx, barrier_rx) = std::sync::mpsc::sync_channel::<Barrier>(0);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let committer = {
        let sink_dir = s.sink_dir().map(Path::to_path_buf);
        let job = s.job.clone();
        std::thread::Builder::new()
            .name("quiver-commit".into())
            .spawn(move || {
                commit_barriers(
                    &job,
                    sink_dir.as_deref(),
                    store,
                    coordinator,
                    barrier_rx,
                    done_tx,
                )
            })
            .map_err(|e| StreamError::Setup(format!("cannot start the committer: {e}")))?
    };
    let mut barrier_tx = Some(barrier_tx);
    let mut next_epoch = recovery.committed + 1;
    let mut report = StreamReport {
        job: s.job.clone(),
        resumed_from: recovery.committed,
        last_checkpoint: recovery.committed,
        ..Default::default()
    };
    let sink_dir = s.sink_dir().map(Path::to_path_buf);
    let mut stdout = std::io::stdout().lock();
    let mut files = EpochFiles::default();
    // Whether anything happened since the last barrier (rows read, or state changed).
    let mut dirty = false;
    let mut last_checkpoint = Instant::now();
    let mut last_status = Instant::now();
    let mut last_render = Instant::now();
    let mut batch_number = 0u64;
    let mut pending: Vec<Lines> = Vec::new();
    let mut pending_rows = 0;
    if let Some(lines) = first_lines {
        report.rows_in += lines.count as u64;
        pending_rows = lines.count;
        pending.push(lines);
    }
    let mut batch_started: Option<Instant> = (pending_rows > 0).then(Instant::now);
    let mut at_end = false;
    loop {
        let stopping = at_end || options.stop.load(Ordering::Relaxed);
        let lines = if stopping {
            Lines::default()
        } else {
            source.poll(s.batch_rows - pending_rows)?
        };
        let idle = lines.count == 0;
        at_end |= idle && (options.stop_at_end || source.ended());
        if !idle {
            report.rows_in += lines.count as u64;
            if pending_rows == 0 {
                batch_started = Some(Instant::now());
            }
            pending_rows += lines.count;
            pending.push(lines);
            dirty = true;
        }
        let due = s
            .checkpoint_every
            .is_some_and(|every| last_checkpoint.elapsed() >= every);
        let full = pending_rows >= s.batch_rows
            || batch_started.is_some_and(|t| t.elapsed() >= s.batch_age);
        if pending_rows > 0 && (full || due || stopping) {
            let chunks = std::mem::take(&mut pending);
            pending_rows = 0;
            batch_started = None;
            let mut dead = DeadLetters(Vec::new());
            let (batch, bad) = decoder.decode(&chunks, s.on_malformed)?;
            report.malformed += bad.len() as u64;
            for b in &bad {
                tracing::warn!("{}:{}: {}", b.path.display(), b.line, b.message);
            }
            if s.on_malformed == OnMalformed::DeadLetter {
                dead.lines(&bad);
            }
            if let Some(batch) = batch {
                let mut incidents = crate::batch::Incidents::default();
                let fits = &mut task.fits;
                let outputs = crate::batch::run_chain_with(
                    &mut task.instances,
                    &context,
                    batch,
                    (0, batch_number),
                    &mut incidents,
                    |position, instance, batches| fit_running(fits, position, instance, batches),
                )?;
                batch_number += 1;
                report.skipped_batches += incidents.skipped.len() as u64;
                snapshot.retries += incidents.retries.len() as u64;
                for (_, rows) in &incidents.dead {
                    dead.rows(rows)
                        .map_err(|e| StreamError::Setup(e.to_string()))?;
                }
                let outputs = match &s.window {
                    None => outputs,
                    Some(spec) => {
                        let mut closed = Vec::new();
                        for out in outputs.iter().filter(|b| b.num_rows() > 0) {
                            if task.window.is_none() {
                                task.window = Some(match task.window_saved.take() {
                                    Some(saved) => {
                                        WindowOperator::restore(spec.clone(), out.schema(), &saved)?
                                    }
                                    None => WindowOperator::new(spec.clone(), out.schema())?,
                                });
                            }
                            let op = task.window.as_mut().expect("made above");
                            let pushed = op.push(out)?;
                            let late = pushed.late.num_rows() as u64;
                            report.late += late;
                            if late > 0 && s.on_late == LatePolicy::DeadLetter {
                                let why = format!(
                                    "late event: behind the watermark {}",
                                    op.watermark().map_or("-".into(), |w| w.to_string())
                                );
                                let rows = crate::batch::dead_letter_rows(
                                    &pushed.late,
                                    &why,
                                    "window",
                                    (0, batch_number - 1),
                                )
                                .map_err(|e| StreamError::Setup(e.to_string()))?;
                                dead.rows(&rows)
                                    .map_err(|e| StreamError::Setup(e.to_string()))?;
                            }
                            closed.push(pushed.closed);
                        }
                        closed
                    }
                };
                for out in outputs.iter().filter(|b| b.num_rows() > 0) {
                    match &sink_dir {
                        Some(dir) => {
                            if files.output.is_none() {
                                files.output = Some(EpochFile::create(
                                    dir,
                                    &s.job,
                                    next_epoch,
                                    s.format,
                                    out.schema_ref(),
                                )?);
                            }
                            files.output.as_mut().expect("opened above").write(out)?;
                        }
                        None => {
                            let text = json_lines(out).map_err(|e| IoError::Write {
                                path: "<stdout>".into(),
                                format: Format::Jsonl,
                                reason: e.to_string(),
                            })?;
                            stdout
                                .write_all(&text)
                                .and_then(|_| stdout.flush())
                                .map_err(io_err(Path::new("<stdout>"), "cannot write"))?;
                        }
                    }
                    report.rows_out += out.num_rows() as u64;
                }
            }
            if let Some(dir) = &sink_dir {
                report.dead_letters += dead.write(&mut files, dir, &s.job, next_epoch)?;
            }
        }
        // Commits finished by the committer (or its error).
        while let Ok(result) = done_rx.try_recv() {
            let c = result?;
            report.checkpoints += 1;
            report.last_checkpoint = c.epoch;
            snapshot.last_checkpoint_seconds = c.seconds;
            snapshot.last_checkpoint_bytes = c.bytes;
        }
        if (due || stopping) && pending_rows == 0 {
            if dirty || !files.is_empty() {
                let barrier = Barrier {
                    position: source.position(),
                    files: match &sink_dir {
                        Some(dir) => files.close(dir)?,
                        None => Vec::new(),
                    },
                    state: task.snapshot()?,
                };
                let sent = barrier_tx
                    .as_ref()
                    .is_some_and(|tx| tx.send(barrier).is_ok());
                if !sent {
                    // The committer stopped on an error: report it.
                    break;
                }
                next_epoch += 1;
                dirty = false;
            }
            last_checkpoint = Instant::now();
        }
        // Rendered at most every 100 ms: scrapes are seconds apart, and this is the hot loop.
        if let Some(shared) = &metrics {
            if last_render.elapsed() >= Duration::from_millis(100) || stopping {
                last_render = Instant::now();
                snapshot.rows_in = report.rows_in;
                snapshot.rows_out = report.rows_out;
                snapshot.lag_bytes = source.lag_bytes();
                snapshot.checkpoints = report.checkpoints;
                snapshot.last_epoch = report.last_checkpoint;
                snapshot.skipped_batches = report.skipped_batches;
                snapshot.malformed = report.malformed;
                snapshot.late = report.late;
                snapshot.dead_letters = report.dead_letters;
                snapshot.open_windows = task.window.as_ref().map_or(0, |w| w.open_windows() as u64);
                snapshot.plugins = task
                    .instances
                    .iter()
                    .map(|i| (i.plugin().name.clone(), i.metrics()))
                    .collect();
                let text = metrics::render(&snapshot);
                if let Ok(mut t) = shared.lock() {
                    *t = text;
                }
            }
        }
        if stopping && pending_rows == 0 && files.is_empty() && !dirty {
            break;
        }
        if options.status && last_status.elapsed() >= Duration::from_secs(1) {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r{} rows in ({:.0}/s), {} out; lag {} bytes; checkpoint {} {:.1} s ago   ",
                report.rows_in,
                report.rows_in as f64 / secs,
                report.rows_out,
                source.lag_bytes(),
                report.last_checkpoint,
                last_checkpoint.elapsed().as_secs_f64()
            );
            last_status = Instant::now();
        }
        if idle && !stopping {
            std::thread::sleep(s.poll);
        }
    }
    // Wait for the last commits.
    drop(barrier_tx.take());
    let _ = committer.join();
    for result in done_rx {
        let c = result?;
        report.checkpoints += 1;
        report.last_checkpoint = c.epoch;
    }
    if options.status {
        eprintln!();
    }
    report.elapsed = started.elapsed();
    Ok(report)
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
