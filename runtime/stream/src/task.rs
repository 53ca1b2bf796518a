//! One task of a streaming job: the plugin chain (and window) over one partition, run by a
//! worker thread, with the state it keeps between micro-batches and saves at every barrier.
//!
//! State has three parts, saved together in one blob: plugins that keep state across
//! batches (`snapshot`/`restore` of the WIT `state` interface), the running statistics of
//! fitted plugins (each micro-batch is folded into the merged state with `partial` and
//! `merge`, and the plugin is refitted with `finish` before it transforms the batch; with
//! several partitions, each keeps its own), and the window operator's open windows.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::Mutex;

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::chunk::encode_json_lines;
use super::commit::BarrierAck;
use super::messages::{FromWorker, Progress, ToWorker};
use super::output::{DeadLetterLines, EpochFile, EpochFiles};
use super::table::TableSink;
use super::{io_err, StreamError};
use quiver_checkpoint::{Epoch, StoreError, TaskId};
use quiver_data::io::{Format, IoError};
use quiver_exec::chain::WorkerContext;
use quiver_exec::policy::LatePolicy;
use quiver_exec::window::{WindowOperator, WindowSpec};
use quiver_plugin_host::plugin::{Instance, PluginError};

/// Everything a task saves at a checkpoint, in one blob.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TaskState {
    /// How many tasks (partitions) the job had: keyed state only lines up with the same count.
    partitions: u32,
    /// Per plugin in chain order: its SHA-256 and, if it keeps state, the state.
    plugins: Vec<(String, Option<Vec<u8>>)>,
    /// Per plugin: the merged running statistics of a fitted plugin.
    fits: Vec<Option<Vec<u8>>>,
    /// The window operator's open windows.
    window: Option<Vec<u8>>,
}

/// The chain of one task with what it keeps between micro-batches.
pub(crate) struct Task {
    pub(crate) instances: Vec<Instance>,
    /// How many tasks the job has.
    pub(crate) partitions: u32,
    /// Per plugin: `None` until the first batch reaches it; then whether it is fitted as it
    /// goes, with its merged statistics so far.
    pub(crate) fits: Vec<Option<Option<Vec<u8>>>>,
    pub(crate) window: Option<WindowOperator>,
    /// Window state restored from a checkpoint, until the first batch gives its schema.
    pub(crate) window_saved: Option<Vec<u8>>,
    /// The schema of the first output: every later output must have it.
    pub(crate) out_schema: Option<arrow::datatypes::SchemaRef>,
}

impl Task {
    /// The task's state blob (`None` if it keeps no state).
    pub(crate) fn snapshot(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        let mut state = TaskState {
            partitions: self.partitions,
            ..TaskState::default()
        };
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
    pub(crate) fn restore(&mut self, bytes: &[u8], from: &Path) -> Result<(), StreamError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: from.to_path_buf(),
            reason,
        };
        let state: TaskState = postcard::from_bytes(bytes)
            .map_err(|e| corrupt(format!("the task state does not decode: {e}")))?;
        if state.partitions != self.partitions {
            return Err(StreamError::Setup(format!(
                "the checkpoint holds state of {} partitions, but the pipeline now makes {}: keyed state would land in the wrong partition; keep the partition count, or start over with --from-beginning",
                state.partitions, self.partitions
            )));
        }
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

/// Where a worker's output goes, and how the window and late events are handled.
pub(crate) struct WorkerSettings<'a> {
    pub(crate) job: &'a str,
    /// The sink's directory (a table sink's too); `None` for stdout.
    pub(crate) sink_dir: Option<&'a Path>,
    /// The table sink, if the output is a table.
    pub(crate) table: Option<&'a TableSink>,
    pub(crate) format: Format,
    pub(crate) window: Option<&'a WindowSpec>,
    pub(crate) on_late: LatePolicy,
    pub(crate) stdout: &'a Mutex<std::io::Stdout>,
}

/// Starts one worker thread per task in `scope`; returns the channel to each, in task order,
/// and the one all of them report on.
pub(crate) fn spawn_all<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    tasks: &'scope mut [Task],
    settings: &'scope WorkerSettings<'scope>,
    context: &'scope WorkerContext<'scope>,
) -> Result<(Vec<SyncSender<ToWorker>>, Receiver<FromWorker>), StreamError> {
    let (from_tx, from_rx) = std::sync::mpsc::channel::<FromWorker>();
    let mut to_workers = Vec::with_capacity(tasks.len());
    for (id, task) in tasks.iter_mut().enumerate() {
        // Two micro-batches queued per worker at most: backpressure up to the source.
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let from = from_tx.clone();
        std::thread::Builder::new()
            .name(format!("quiver-task-{id}"))
            // Plugins run on this thread's stack: room for the deepest Wasm stack allowed.
            .stack_size(quiver_plugin_host::sandbox::PLUGIN_THREAD_STACK)
            .spawn_scoped(scope, move || {
                work(id as u32, task, settings, context, rx, from)
            })
            .map_err(|source| StreamError::Thread {
                what: "a worker",
                source,
            })?;
        to_workers.push(tx);
    }
    Ok((to_workers, from_rx))
}

/// The worker loop of task `task`: runs until the driver hangs up or a step fails.
pub(crate) fn work(
    id: TaskId,
    task: &mut Task,
    s: &WorkerSettings<'_>,
    context: &WorkerContext<'_>,
    rx: Receiver<ToWorker>,
    tx: Sender<FromWorker>,
) {
    let mut files = EpochFiles::default();
    for msg in rx {
        let result = match msg {
            ToWorker::Rows {
                batch,
                number,
                epoch,
                dead,
            } => rows(id, task, s, context, &mut files, batch, number, epoch, dead)
                .map(FromWorker::Done),
            ToWorker::Barrier => barrier(id, task, s, &mut files),
        };
        match result {
            Ok(m) => {
                if tx.send(m).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(FromWorker::Failed(e));
                return;
            }
        }
    }
}

fn barrier(
    id: TaskId,
    task: &mut Task,
    s: &WorkerSettings<'_>,
    files: &mut EpochFiles,
) -> Result<FromWorker, StreamError> {
    let (files, bytes) = match s.sink_dir {
        Some(dir) => files.close(dir)?,
        None => (Vec::new(), 0),
    };
    Ok(FromWorker::Barrier(BarrierAck {
        task: id,
        files,
        bytes,
        state: task.snapshot()?,
    }))
}

/// Runs one micro-batch of this partition through the chain and the window into the epoch's
/// files (or stdout), with its dead letters.
#[allow(clippy::too_many_arguments)]
fn rows(
    id: TaskId,
    task: &mut Task,
    s: &WorkerSettings<'_>,
    context: &WorkerContext<'_>,
    files: &mut EpochFiles,
    batch: Option<RecordBatch>,
    number: u64,
    epoch: Epoch,
    dead_lines: Vec<String>,
) -> Result<Progress, StreamError> {
    let mut progress = Progress {
        task: id,
        ..Progress::default()
    };
    let mut dead = DeadLetterLines(dead_lines);
    let bad_rows = |e: arrow::error::ArrowError| StreamError::DeadLetters(e.into());
    if let Some(batch) = batch {
        let mut incidents = quiver_exec::chain::Incidents::default();
        let fits = &mut task.fits;
        let outputs = quiver_exec::chain::run_chain_with(
            &mut task.instances,
            context,
            batch,
            (id as usize, number),
            &mut incidents,
            |position, instance, batches| fit_running(fits, position, instance, batches),
        )?;
        progress.skipped = incidents.skipped.len() as u64;
        progress.retries = incidents.retries.len() as u64;
        for (_, rows) in &incidents.dead {
            dead.rows(rows).map_err(bad_rows)?;
        }
        let outputs = match s.window {
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
                    progress.late += late;
                    if late > 0 && s.on_late == LatePolicy::DeadLetter {
                        let why = format!(
                            "late event: behind the watermark {}",
                            op.watermark().map_or("-".into(), |w| w.to_string())
                        );
                        let rows = quiver_exec::chain::dead_letter_rows(
                            &pushed.late,
                            &why,
                            "window",
                            (id as usize, number),
                        )
                        .map_err(StreamError::DeadLetters)?;
                        dead.rows(&rows).map_err(bad_rows)?;
                    }
                    closed.push(pushed.closed);
                }
                closed
            }
        };
        for out in outputs.iter().filter(|b| b.num_rows() > 0) {
            let first = task.out_schema.get_or_insert_with(|| out.schema());
            if first.fields() != out.schema().fields() {
                let names = |s: &arrow::datatypes::Schema| {
                    s.fields()
                        .iter()
                        .map(|f| format!("{} {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(StreamError::SchemaChanged {
                    batch: number,
                    before: names(first),
                    after: names(&out.schema()),
                });
            }
            match (s.table, s.sink_dir) {
                (Some(table), _) => files.write_table(table, s.job, (id, epoch), out)?,
                (None, Some(dir)) => {
                    if files.output.is_none() {
                        files.output = Some(EpochFile::create(
                            dir,
                            s.job,
                            (id, epoch),
                            s.format,
                            out.schema_ref(),
                        )?);
                    }
                    files.output.as_mut().expect("opened above").write(out)?;
                }
                (None, None) => {
                    let stdout = PathBuf::from("<stdout>");
                    let text = encode_json_lines(out).map_err(|e| IoError::Write {
                        path: stdout.clone(),
                        format: Format::Jsonl,
                        reason: e.to_string(),
                    })?;
                    // One write per batch under the lock: partitions never interleave lines.
                    let mut w = s.stdout.lock().unwrap_or_else(|e| e.into_inner());
                    w.write_all(&text)
                        .and_then(|_| w.flush())
                        .map_err(io_err(&stdout, "cannot write"))?;
                }
            }
            progress.rows_out += out.num_rows() as u64;
        }
    }
    if let Some(dir) = s.sink_dir {
        progress.dead_letters = dead.write(files, dir, s.job, (id, epoch))?;
    }
    progress.open_windows = task.window.as_ref().map_or(0, |w| w.open_windows() as u64);
    progress.plugins = task
        .instances
        .iter()
        .map(|i| (i.plugin().name.clone(), i.metrics()))
        .collect();
    Ok(progress)
}
