//! Streaming mode: the same pipeline file over an unbounded source, with exactly-once output.
//!
//! The source is a JSON-lines file that keeps growing ([`tail`]). Lines are gathered into
//! micro-batches that close at `batch-rows` rows or after `batch-ms`, whichever comes first,
//! and run through the plugin chain under the plugins' error policies. Output goes to a
//! directory, one file per checkpoint epoch, under a temporary name until the epoch commits.
//!
//! Every `checkpoint-ms` the driver takes a checkpoint with the [`checkpoint`](crate::checkpoint)
//! protocol: it closes and fsyncs the epoch's file, and stores one manifest (the source
//! position after the epoch's last line, and the file to make visible) in the checkpoint store.
//! That write is the commit point; the file is then renamed to its final name. A run that
//! starts finds the last manifest, completes its rename, deletes files of epochs that never
//! committed, and reads on from the manifest's position, so a crash at any moment (`kill -9`
//! included) neither loses nor repeats a row of output.
//!
//! A stop request (SIGINT or SIGTERM in the binary) ends the current micro-batch and takes a
//! final checkpoint.

pub mod metrics;
pub mod tail;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::batch::{Chain, RunError, WorkerContext};
use crate::checkpoint::store::{sync_dir, write_durably};
use crate::checkpoint::{
    self, names, Action, CheckpointStore, Coordinator, Epoch, LocalStore, PendingFile,
    ProtocolError, SourceOffset, StoreError, TaskSnapshot,
};
use crate::io::{self, FileWriter, Format, IoError, SourceOptions};
use crate::pipeline::Pipeline;
use crate::plugin::{Host, PluginError};
use crate::policy::ErrorPolicy;
use crate::replay::Recorder;
use tail::{Position, Tail};

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
    /// How long it ran.
    pub elapsed: Duration,
}

impl std::fmt::Display for StreamReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "stream `{}`: {} rows in, {} rows out in {:.1} s; {} checkpoints (resumed after checkpoint {}, last {})",
            self.job,
            self.rows_in,
            self.rows_out,
            self.elapsed.as_secs_f64(),
            self.checkpoints,
            self.resumed_from,
            self.last_checkpoint
        )
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
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> IoError + 'a {
    move |source| IoError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// The settings of a streaming run, resolved.
struct Settings {
    input: PathBuf,
    sink_dir: PathBuf,
    format: Format,
    job: String,
    store_dir: PathBuf,
    batch_rows: usize,
    batch_age: Duration,
    checkpoint_every: Duration,
    poll: Duration,
    metrics_addr: Option<String>,
}

impl Settings {
    fn new(p: &Pipeline) -> Result<Settings, StreamError> {
        let spec = p.stream.clone().unwrap_or_default();
        let [input] = &p.source.paths[..] else {
            return Err(StreamError::Setup(format!(
                "streaming follows one growing JSON-lines file; the pipeline names {} inputs",
                p.source.paths.len()
            )));
        };
        let input = p.resolve(Path::new(input));
        let in_format = p
            .source
            .format
            .or_else(|| Format::from_path(&input))
            .unwrap_or(Format::Jsonl);
        if in_format != Format::Jsonl {
            return Err(StreamError::Setup(format!(
                "{}: streaming reads JSON lines; this input is {}",
                input.display(),
                in_format.name()
            )));
        }
        if let Some(spec) = p
            .plugins
            .iter()
            .find(|s| s.on_error == ErrorPolicy::DeadLetter)
        {
            return Err(StreamError::Setup(format!(
                "plugin {}: on-error = \"dead-letter\" is not available in streaming mode yet; use \"skip\" or \"fail\"",
                spec.name.clone().unwrap_or_else(|| spec.path.clone().unwrap_or_default().display().to_string())
            )));
        }
        let sink_dir = p.resolve(&p.sink.path);
        if !p.sink.partition_by.is_empty() {
            return Err(StreamError::Setup(
                "a Hive-partitioned output is not available in streaming mode yet".into(),
            ));
        }
        let format = p.sink.format.unwrap_or(Format::Parquet);
        if format == Format::Csv {
            return Err(StreamError::Setup(
                "streaming writes Parquet, JSON lines or Arrow IPC files".into(),
            ));
        }
        let job = match spec.job {
            Some(j) => j,
            None => sink_dir
                .file_name()
                .map(|n| {
                    n.to_string_lossy().replace(
                        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                        "_",
                    )
                })
                .unwrap_or_else(|| "stream".into()),
        };
        if !names::valid_job(&job) {
            return Err(StreamError::Setup(format!(
                "`{job}` cannot name a job: use letters, digits, `-` and `_`"
            )));
        }
        let store_dir = match spec.checkpoint_dir {
            Some(d) => p.resolve(&d),
            None => {
                let name = sink_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                sink_dir.with_file_name(format!("{name}-checkpoints"))
            }
        };
        Ok(Settings {
            input,
            sink_dir,
            format,
            job,
            store_dir,
            batch_rows: spec.batch_rows.unwrap_or(10_000).max(1),
            batch_age: Duration::from_millis(spec.batch_ms.unwrap_or(200)),
            checkpoint_every: Duration::from_millis(spec.checkpoint_ms.unwrap_or(1000)),
            poll: Duration::from_millis(spec.poll_ms.unwrap_or(10).max(1)),
            metrics_addr: spec.metrics_addr,
        })
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

/// Names in `dir` of this job's temporary files and final files.
fn listing(dir: &Path, job: &str) -> Result<(Vec<String>, Vec<String>), StreamError> {
    let mut temps = Vec::new();
    let mut finals = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir, "cannot list"))? {
        let name = entry
            .map_err(io_err(dir, "cannot list"))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if names::parse_temp(&name).is_some_and(|t| t.job == job) {
            temps.push(name);
        } else if name.starts_with("part-") {
            finals.push(name);
        }
    }
    Ok((temps, finals))
}

/// An encoder failure on an epoch's file, named by its final name as batch mode does.
fn write_err(s: &Settings, fin: &str, reason: String) -> IoError {
    IoError::Write {
        path: s.sink_dir.join(fin),
        format: s.format,
        reason,
    }
}

/// The epoch's output file, open under its temporary name.
struct EpochFile {
    temp: String,
    fin: String,
    writer: FileWriter,
}

impl EpochFile {
    fn create(s: &Settings, epoch: Epoch, schema: &SchemaRef) -> Result<EpochFile, StreamError> {
        let ext = s.format.extension();
        let temp = names::temp_name(&s.job, 0, epoch, 0, ext);
        let path = s.sink_dir.join(&temp);
        // A file of this name can only be left from a run that crashed before committing.
        let file = std::fs::File::create(&path).map_err(io_err(&path, "cannot create"))?;
        let fin = names::final_name(0, epoch, 0, ext);
        let writer =
            FileWriter::new(file, s.format, schema).map_err(|reason| write_err(s, &fin, reason))?;
        Ok(EpochFile { fin, temp, writer })
    }

    fn write(&mut self, s: &Settings, batch: &RecordBatch) -> Result<(), StreamError> {
        self.writer
            .write(batch)
            .map_err(|reason| write_err(s, &self.fin, reason).into())
    }

    /// Writes the file's footer and hands it over, to be fsynced by the committer.
    fn close(self, s: &Settings) -> Result<(std::fs::File, PendingFile), StreamError> {
        let file = self
            .writer
            .finish()
            .map_err(|reason| write_err(s, &self.fin, reason))?;
        Ok((
            file,
            PendingFile {
                temp: self.temp,
                fin: self.fin,
            },
        ))
    }
}

/// A checkpoint taken at a barrier, for the committer to make durable.
struct Barrier {
    position: Position,
    file: Option<(std::fs::File, PendingFile)>,
}

/// A committed checkpoint: its epoch, how long the commit took, and the bytes it made visible.
struct Committed {
    epoch: Epoch,
    seconds: f64,
    bytes: u64,
}

/// The committer: makes each barrier's file durable, stores its manifest (the commit point)
/// and renames the file, in barrier order, while the driver goes on with the next epoch.
/// Runs until the driver hangs up; stops at the first error.
fn commit_barriers(
    sink_dir: &Path,
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
        let epoch = coordinator.start(
            [(
                "input".to_string(),
                SourceOffset(serde_json::to_value(b.position).expect("a position serializes")),
            )]
            .into(),
        )?;
        let mut pending = Vec::new();
        let mut bytes = 0;
        if let Some((file, p)) = b.file {
            let path = sink_dir.join(&p.temp);
            file.sync_all().map_err(io_err(&path, "cannot sync"))?;
            bytes = file.metadata().map_or(0, |m| m.len());
            pending.push(p);
        }
        // The temporary file's name must be durable before a manifest names it.
        sync_dir(sink_dir)?;
        let manifest = coordinator
            .ack(
                0,
                epoch,
                TaskSnapshot {
                    pending,
                    state: None,
                },
            )?
            .expect("one task: its acknowledgement completes the checkpoint");
        store.commit(&manifest)?;
        // The renames need no fsync: after a crash, recovery redoes them.
        for action in coordinator.stored(&manifest) {
            apply(sink_dir, &action)?;
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

/// The input's schema: inferred as batch mode does, from the first lines the job ever saw,
/// which are kept with its checkpoints so that every restart reads with the same schema.
fn input_schema(
    s: &Settings,
    tail_from: Option<Position>,
    stop: &AtomicBool,
) -> Result<SchemaRef, StreamError> {
    let sample = s.store_dir.join(&s.job).join("sample.jsonl");
    if !sample.exists() {
        let options = SourceOptions::default();
        let mut t = Tail::open(&s.input, tail_from)?;
        let mut lines = t.poll(options.schema_infer_rows)?;
        while lines.count == 0 {
            if stop.load(Ordering::Relaxed) {
                return Err(StreamError::Setup(format!(
                    "stopped before {} had a complete line to infer its schema from",
                    s.input.display()
                )));
            }
            std::thread::sleep(s.poll);
            lines = t.poll(options.schema_infer_rows)?;
        }
        write_durably(&sample, &lines.bytes)?;
    }
    let source = io::open(
        &[sample.to_string_lossy().into_owned()],
        &SourceOptions {
            format: Some(Format::Jsonl),
            ..SourceOptions::default()
        },
    )?;
    Ok(source.schema())
}

/// Decodes complete JSON lines; a line that does not parse is named by its number.
fn decode(schema: &SchemaRef, lines: &tail::Lines) -> Result<Option<RecordBatch>, StreamError> {
    let build = || {
        arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(lines.count.max(1))
            .build_decoder()
            .expect("a decoder for the inferred schema")
    };
    let mut decoder = build();
    let whole = decoder.decode(&lines.bytes).and_then(|_| decoder.flush());
    match whole {
        Ok(batch) => Ok(batch),
        Err(_) => {
            // Find the first line that does not parse, to name it.
            for (i, line) in lines.bytes.split_inclusive(|&b| b == b'\n').enumerate() {
                let mut one = build();
                if let Err(e) = one.decode(line).and_then(|_| one.flush()) {
                    return Err(StreamError::Malformed {
                        path: lines.path.clone(),
                        line: lines.first_line + i as u64,
                        message: io::arrow_reason(&e),
                    });
                }
            }
            Err(StreamError::Malformed {
                path: lines.path.clone(),
                line: lines.first_line,
                message: "the lines do not parse together".into(),
            })
        }
    }
}

/// Runs `pipeline` in streaming mode until `options.stop` is set.
pub fn run(
    pipeline: &Pipeline,
    host: &Host,
    options: &StreamOptions,
) -> Result<StreamReport, StreamError> {
    let started = Instant::now();
    let s = Settings::new(pipeline)?;
    std::fs::create_dir_all(&s.sink_dir).map_err(io_err(&s.sink_dir, "cannot create"))?;
    let mut store = LocalStore::new(&s.store_dir);
    if options.start != Start::Resume {
        let (_, finals) = listing(&s.sink_dir, &s.job)?;
        if !finals.is_empty() {
            return Err(StreamError::Setup(format!(
                "{} already holds output ({} and {} more); starting over would write those rows again: remove them first",
                s.sink_dir.display(),
                finals[0],
                finals.len() - 1
            )));
        }
        let job_dir = s.store_dir.join(&s.job);
        if job_dir.exists() {
            std::fs::remove_dir_all(&job_dir).map_err(io_err(&job_dir, "cannot remove"))?;
        }
    }
    let generation = store.claim(&s.job)?;
    let last = store.latest(&s.job)?;
    let (temps, _) = listing(&s.sink_dir, &s.job)?;
    let recovery = checkpoint::recover(&s.job, last.as_ref(), &temps, generation - 1);
    for action in &recovery.actions {
        apply(&s.sink_dir, action)?;
    }
    sync_dir(&s.sink_dir)?;
    let from: Option<Position> = match recovery.sources.get("input") {
        Some(SourceOffset(v)) => {
            Some(
                serde_json::from_value(v.clone()).map_err(|e| StoreError::Corrupt {
                    path: s.store_dir.join(&s.job),
                    reason: format!("the input position {v} does not read: {e}"),
                })?,
            )
        }
        None => match options.start {
            Start::Offset(offset) => Some(offset_position(&s.input, offset)?),
            _ => None,
        },
    };
    if let Some(f) = from {
        tracing::info!(job = %s.job, epoch = recovery.committed, offset = f.offset, "resuming");
    }

    let schema = input_schema(&s, from, &options.stop)?;
    let chain = Chain::load(pipeline, host)?;
    let mut instances = chain.instantiate()?;
    let out_schema = Chain::output_schema(&mut instances, &schema)?;
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
    let mut tail = Tail::open(&s.input, from)?;
    let coordinator = Coordinator::new(&s.job, generation, [0], recovery.committed);
    // At most one barrier waits while another commits: the driver blocks beyond that.
    let (barrier_tx, barrier_rx) = std::sync::mpsc::sync_channel::<Barrier>(0);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let committer = {
        let sink_dir = s.sink_dir.clone();
        std::thread::Builder::new()
            .name("quiver-commit".into())
            .spawn(move || commit_barriers(&sink_dir, store, coordinator, barrier_rx, done_tx))
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
    let mut file: Option<EpochFile> = None;
    let mut committed_pos = tail.position();
    let mut last_checkpoint = Instant::now();
    let mut last_status = Instant::now();
    let mut last_render = Instant::now();
    let mut batch_number = 0u64;
    let mut pending_lines = tail::Lines::default();
    let mut batch_started: Option<Instant> = None;
    let mut at_end = false;
    loop {
        let stopping = at_end || options.stop.load(Ordering::Relaxed);
        let room = s.batch_rows - pending_lines.count;
        let lines = if stopping {
            tail::Lines::default()
        } else {
            tail.poll(room)?
        };
        let idle = lines.count == 0;
        at_end |= idle && options.stop_at_end;
        if !idle {
            report.rows_in += lines.count as u64;
            if pending_lines.count == 0 {
                batch_started = Some(Instant::now());
                pending_lines = lines;
            } else {
                pending_lines.bytes.extend_from_slice(&lines.bytes);
                pending_lines.count += lines.count;
            }
        }
        let due = last_checkpoint.elapsed() >= s.checkpoint_every;
        let full = pending_lines.count >= s.batch_rows
            || batch_started.is_some_and(|t| t.elapsed() >= s.batch_age);
        if pending_lines.count > 0 && (full || due || stopping) {
            let lines = std::mem::take(&mut pending_lines);
            batch_started = None;
            if let Some(batch) = decode(&schema, &lines)? {
                let mut incidents = crate::batch::Incidents::default();
                let outputs = crate::batch::run_chain(
                    &mut instances,
                    &context,
                    batch,
                    (0, batch_number),
                    &mut incidents,
                )?;
                batch_number += 1;
                report.skipped_batches += incidents.skipped.len() as u64;
                snapshot.retries += incidents.retries.len() as u64;
                for out in outputs.iter().filter(|b| b.num_rows() > 0) {
                    if file.is_none() {
                        file = Some(EpochFile::create(&s, next_epoch, &out_schema)?);
                    }
                    file.as_mut().expect("opened above").write(&s, out)?;
                    report.rows_out += out.num_rows() as u64;
                }
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
        if (due || stopping) && pending_lines.count == 0 {
            let position = tail.position();
            if position != committed_pos || file.is_some() {
                let barrier = Barrier {
                    position,
                    file: file.take().map(|f| f.close(&s)).transpose()?,
                };
                let sent = barrier_tx
                    .as_ref()
                    .is_some_and(|tx| tx.send(barrier).is_ok());
                if !sent {
                    // The committer stopped on an error: report it.
                    break;
                }
                next_epoch += 1;
                committed_pos = position;
            }
            last_checkpoint = Instant::now();
        }
        // Rendered at most every 100 ms: scrapes are seconds apart, and this is the hot loop.
        if let Some(shared) = &metrics {
            if last_render.elapsed() >= Duration::from_millis(100) || stopping {
                last_render = Instant::now();
                snapshot.rows_in = report.rows_in;
                snapshot.rows_out = report.rows_out;
                snapshot.lag_bytes = tail.lag_bytes();
                snapshot.checkpoints = report.checkpoints;
                snapshot.last_epoch = report.last_checkpoint;
                snapshot.skipped_batches = report.skipped_batches;
                snapshot.plugins = instances
                    .iter()
                    .map(|i| (i.plugin().name.clone(), i.metrics()))
                    .collect();
                let text = metrics::render(&snapshot);
                if let Ok(mut t) = shared.lock() {
                    *t = text;
                }
            }
        }
        if stopping && pending_lines.count == 0 && file.is_none() {
            break;
        }
        if options.status && last_status.elapsed() >= Duration::from_secs(1) {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r{} rows in ({:.0}/s), {} out; lag {} bytes; checkpoint {} {:.1} s ago   ",
                report.rows_in,
                report.rows_in as f64 / secs,
                report.rows_out,
                tail.lag_bytes(),
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
fn offset_position(path: &Path, offset: u64) -> Result<Position, StreamError> {
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
    Ok(Position {
        dev: meta.dev(),
        ino: meta.ino(),
        offset,
        lines: head.iter().filter(|&&b| b == b'\n').count() as u64,
    })
}
