//! The committer thread: the I/O half of the checkpoint protocol. For each barrier, in order,
//! it fsyncs every task's closed files, stores each task's state blob, acknowledges every task
//! to the [`Coordinator`], stores the manifest (the commit point) and renames the files — or,
//! for a table sink, publishes them as the epoch's Delta commit — while the driver and the
//! workers go on with the next epoch.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::output::{apply, DEAD_LETTER_DIR};
use super::table::TableSink;
use super::StreamError;
use quiver_checkpoint::store::sync_dir;
use quiver_checkpoint::{
    CheckpointStore, Coordinator, Epoch, PendingFile, SourceOffset, TaskId, TaskSnapshot,
};

/// What one task hands over at a barrier, as plain data that can cross a process boundary: the
/// names of the files it closed — already on disk, synced by the task before it acknowledged —
/// their size, and its state blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BarrierAck {
    /// The task.
    pub task: TaskId,
    /// Its closed files, under their temporary names.
    pub files: Vec<PendingFile>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Its state blob, if it keeps state.
    pub state: Option<Vec<u8>>,
}

/// A checkpoint taken at a barrier, for the committer to make durable.
pub(crate) struct Barrier {
    /// The source's position after the epoch's last line (`None`: it cannot be rewound).
    pub(crate) position: Option<serde_json::Value>,
    /// Every task's part.
    pub(crate) tasks: Vec<BarrierAck>,
}

/// A committed checkpoint: its epoch, the source position it holds, how long the commit took,
/// and the bytes it made visible.
pub(crate) struct Committed {
    pub(crate) epoch: Epoch,
    pub(crate) position: Option<serde_json::Value>,
    pub(crate) seconds: f64,
    pub(crate) bytes: u64,
}

/// The committer thread as the driver sees it: where barriers go, where committed
/// checkpoints (or the error that stopped it) come back, and whether it is waiting.
pub(crate) struct CommitterHandle {
    /// Barriers to commit; dropping it stops the committer after its last commit.
    pub(crate) barriers: SyncSender<Barrier>,
    /// Each commit's outcome, in order.
    pub(crate) done: Receiver<Result<Committed, StreamError>>,
    /// Set while the committer waits for a barrier.
    pub(crate) idle: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl CommitterHandle {
    /// Starts the committer of `job` over `store`.
    pub(crate) fn spawn<S: CheckpointStore + 'static>(
        job: &str,
        sink_dir: Option<&Path>,
        table: Option<Arc<TableSink>>,
        store: S,
        coordinator: Coordinator,
    ) -> Result<Self, StreamError> {
        // At most one barrier waits while another commits: the driver blocks beyond that.
        let (barrier_tx, barrier_rx) = std::sync::mpsc::sync_channel::<Barrier>(0);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let idle = Arc::new(AtomicBool::new(true));
        let thread = {
            let (job, sink_dir, idle) = (
                job.to_string(),
                sink_dir.map(Path::to_path_buf),
                idle.clone(),
            );
            std::thread::Builder::new()
                .name("quiver-commit".into())
                .spawn(move || {
                    commit_barriers(
                        &job,
                        (sink_dir.as_deref(), table.as_deref()),
                        store,
                        coordinator,
                        barrier_rx,
                        done_tx,
                        &idle,
                    )
                })
                .map_err(|source| StreamError::Thread {
                    what: "the committer",
                    source,
                })?
        };
        Ok(Self {
            barriers: barrier_tx,
            done: done_rx,
            idle,
            thread,
        })
    }

    /// Hangs up, waits for the committer's last commit, and hands over the outcomes not taken
    /// in yet.
    pub(crate) fn finish(self) -> Receiver<Result<Committed, StreamError>> {
        drop(self.barriers);
        // A panic of the committer shows as a missing outcome: the run then ends with the
        // outcomes it has.
        let _ = self.thread.join();
        self.done
    }
}

/// `idle` is set while it waits for a barrier, so the driver starts one only then and keeps
/// reading into the current epoch meanwhile, instead of waiting on a busy committer.
pub(crate) fn commit_barriers<S: CheckpointStore>(
    job: &str,
    sink: (Option<&Path>, Option<&TableSink>),
    mut store: S,
    mut coordinator: Coordinator,
    barriers: Receiver<Barrier>,
    done: Sender<Result<Committed, StreamError>>,
    idle: &AtomicBool,
) {
    loop {
        idle.store(true, Ordering::Release);
        let Ok(b) = barriers.recv() else { return };
        idle.store(false, Ordering::Release);
        let result = commit(job, sink, b, &mut store, &mut coordinator);
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

fn commit<S: CheckpointStore>(
    job: &str,
    (sink_dir, table): (Option<&Path>, Option<&TableSink>),
    b: Barrier,
    store: &mut S,
    coordinator: &mut Coordinator,
) -> Result<Committed, StreamError> {
    let started = Instant::now();
    let position = b.position;
    let sources = position
        .clone()
        .map(|p| ("input".to_string(), SourceOffset(p)))
        .into_iter()
        .collect();
    let epoch = coordinator.start(sources)?;
    let dir = sink_dir.unwrap_or(Path::new("."));
    let mut bytes = 0;
    let mut dead_letters = false;
    let mut snapshots = Vec::with_capacity(b.tasks.len());
    for t in b.tasks {
        bytes += t.bytes;
        dead_letters |= t.files.iter().any(|p| p.temp.starts_with(DEAD_LETTER_DIR));
        let pending = t.files;
        let state = match &t.state {
            Some(blob) => Some(store.put_state(job, epoch, t.task, blob)?),
            None => None,
        };
        snapshots.push((t.task, TaskSnapshot { pending, state }));
    }
    if let Some(dir) = sink_dir {
        // The temporary files' names must be durable before a manifest names them.
        sync_dir(dir)?;
        if dead_letters {
            sync_dir(&dir.join(DEAD_LETTER_DIR))?;
        }
    }
    if let Some(table) = table {
        table.sync_dirs(snapshots.iter().flat_map(|(_, s)| &s.pending))?;
    }
    let mut manifest = None;
    for (task, snapshot) in snapshots {
        manifest = coordinator.ack(task, epoch, snapshot)?;
    }
    let manifest = manifest.expect("every task acknowledged: the checkpoint is complete");
    store.commit(&manifest)?;
    // The renames need no fsync: after a crash, recovery redoes them.
    for action in coordinator.stored(&manifest) {
        apply(dir, &action)?;
    }
    // After the commit point, as the renames: lost in a crash, it is redone by recovery, and
    // the transaction id makes a second time a no-op. On return it is synced.
    if let Some(table) = table {
        table.publish(epoch, &manifest.pending)?;
    }
    Ok(Committed {
        epoch,
        position,
        seconds: started.elapsed().as_secs_f64(),
        bytes,
    })
}
