//! The partitions this node owns, each run by streaming mode over its replicated events.
//!
//! A loop reads the local replica's assignment every tick. For each partition assigned to this
//! node it starts a run: the job's pipeline, with its `[source]` replaced by the partition's
//! [`ReplicaFeed`] and its checkpoints going to a [`ClusterStore`] under the assignment's
//! generation. The run's output goes to `<sink>/p<partition>/` of the job's (shared) sink
//! directory, and its local job name `<job>-p<partition>-g<generation>` puts the generation in
//! the names of its temporary files, so that a worker that was fenced and the one that took
//! over never write the same file.
//!
//! A partition that the assignment gives to another node is stopped at once, and a run that
//! its store fenced ends; both are logged, saying why. A run that fails otherwise (the leader
//! changed during a commit, say) is started again after a pause while the partition is still
//! this node's: it resumes from the last checkpoint, so nothing is lost or written twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quiver_checkpoint::store::StoreError;
use quiver_coordination::{Generation, NodeId, PartitionId};
use quiver_exec::pipeline::Pipeline;
use quiver_node::worker_liveness::Lease;
use quiver_node::Writer;
use quiver_plugin_host::plugin::Host;
use quiver_replication::StateReader;
use quiver_stream::{StreamOptions, StreamReport};

use crate::feed::ReplicaFeed;
use crate::store::ClusterStore;

/// What the runner needs of its node.
#[derive(Clone)]
pub struct RunnerConfig {
    /// The local replica of the state.
    pub state: StateReader,
    /// Writes through the leader.
    pub writer: Writer,
    /// The node's lease.
    pub lease: Lease,
    /// The runtime the node's calls run on.
    pub runtime: tokio::runtime::Handle,
    /// A directory of this node's own, for the partitions' schema files.
    pub work_dir: PathBuf,
    /// The most one call to the cluster may take.
    pub call_timeout: Duration,
    /// Where compiled plugins are cached (`None`: compile every time).
    pub cache_dir: Option<PathBuf>,
}

/// Runs the partitions assigned to this node until stopped.
pub struct Runner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A partition of a job.
type Key = (String, PartitionId);

/// A partition running here.
struct Running {
    generation: Generation,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<StreamReport, String>>,
}

/// How long a failed run waits before it is started again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often the assignment is read.
const TICK: Duration = Duration::from_millis(50);

impl Runner {
    /// Starts the loop.
    pub fn start(config: RunnerConfig) -> Runner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("partitions".into())
            .spawn(move || run_loop(config, flag))
            .expect("starting the partition runner thread");
        Runner {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops every partition (each takes a final checkpoint if it still may) and the loop.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the assignment gives this node: each partition with its generation. (Read every
/// tick: the job's pipeline is read once, when a run starts.)
fn owned(state: &StateReader, me: NodeId) -> BTreeMap<Key, Generation> {
    state.read(|s, _| {
        let mut out = BTreeMap::new();
        for (name, job) in s.jobs().filter(|(_, j)| j.running) {
            for (partition, owner) in &job.assignment {
                if owner.node == me {
                    out.insert((name.to_string(), *partition), owner.generation);
                }
            }
        }
        out
    })
}

fn run_loop(config: RunnerConfig, stop: Arc<AtomicBool>) {
    let me = NodeId(config.writer.node());
    let mut running: BTreeMap<Key, Running> = BTreeMap::new();
    // When a partition whose run failed may start again.
    let mut retry_at: BTreeMap<Key, Instant> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let mine = owned(&config.state, me);
        // Partitions that moved away (or whose job stopped) stop at once.
        for (key, r) in &running {
            let still = mine.get(key) == Some(&r.generation);
            if !still && !r.stop.load(Ordering::Relaxed) {
                say_moved(&config.state, me, key);
                r.stop.store(true, Ordering::Relaxed);
            }
        }
        // Runs that ended.
        let ended: Vec<Key> = running
            .iter()
            .filter(|(_, r)| r.thread.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            let r = running.remove(&key).expect("listed above");
            let still = mine.get(&key) == Some(&r.generation);
            if !still && !r.stop.load(Ordering::Relaxed) {
                // It ended on its own (a refused or failed commit) after the partition moved.
                say_moved(&config.state, me, &key);
            }
            match r.thread.join() {
                Ok(Ok(report)) => tracing::info!("node {}: {}", me.0, report.to_string().trim()),
                Ok(Err(e)) => {
                    tracing::warn!("node {}: {e}", me.0);
                    retry_at.insert(key, Instant::now() + RETRY_AFTER);
                }
                Err(_) => {
                    tracing::error!("node {}: job {} {}: the run panicked", me.0, key.0, key.1);
                    retry_at.insert(key, Instant::now() + RETRY_AFTER);
                }
            }
        }
        retry_at.retain(|_, at| *at > Instant::now());
        for (key, generation) in &mine {
            if running.contains_key(key) || retry_at.contains_key(key) {
                continue;
            }
            let flag = Arc::new(AtomicBool::new(false));
            let thread = {
                let (config, key, flag) = (config.clone(), key.clone(), flag.clone());
                let generation = *generation;
                std::thread::Builder::new()
                    .name(format!("{}-p{}", key.0, key.1 .0))
                    .spawn(move || run_partition(&config, &key, generation, flag))
                    .expect("starting a partition thread")
            };
            tracing::info!(
                "node {}: running job {} {} ({generation})",
                me.0,
                key.0,
                key.1
            );
            running.insert(
                key.clone(),
                Running {
                    generation: *generation,
                    stop: flag,
                    thread,
                },
            );
        }
        std::thread::sleep(TICK);
    }
    for r in running.values() {
        r.stop.store(true, Ordering::Relaxed);
    }
    for (_, r) in running {
        let _ = r.thread.join();
    }
}

/// Logs that `key` is no longer this node's, and whose it is.
fn say_moved(state: &StateReader, me: NodeId, key: &Key) {
    let now = state.read(|s, _| {
        s.job(&key.0)
            .and_then(|j| j.assignment.get(&key.1).copied())
    });
    match now {
        Some(o) => tracing::warn!(
            "node {}: job {} {} moved to node {} ({}); stopping its tasks here",
            me.0,
            key.0,
            key.1,
            o.node.0,
            o.generation
        ),
        None => tracing::warn!(
            "node {}: job {} {} has no owner now (the job stopped); stopping its tasks here",
            me.0,
            key.0,
            key.1
        ),
    }
}

/// Why a partition's run ended, naming the job and partition: the cluster store's errors name
/// them already, the others get them in front.
fn run_error(job: &str, partition: PartitionId, e: impl std::fmt::Display) -> String {
    format!("job {job} {partition}: {e}")
}

/// The pipeline of one partition's run: the job's, reading the feed, writing to
/// `<sink>/p<partition>/`, named with the partition and generation.
pub fn partition_pipeline(
    toml: &str,
    base_dir: &str,
    job: &str,
    partition: PartitionId,
    generation: Generation,
    work_dir: &Path,
) -> Result<Pipeline, String> {
    let mut p = Pipeline::from_toml(toml).map_err(|e| format!("the job's pipeline: {e}"))?;
    p.base_dir = PathBuf::from(base_dir);
    let sub = format!("p{}", partition.0);
    let replay = p.replay_dir().join(&sub);
    p.replay_dir = Some(replay);
    p.sink.path = p.resolve(&p.sink.path).join(&sub);
    // The rows were split into partitions at the door.
    p.partition = None;
    p.workers = Some(1);
    let mut spec = p.stream.take().unwrap_or_default();
    spec.job = Some(format!("{job}-{sub}-g{}", generation.0));
    spec.checkpoint_dir = Some(work_dir.join(job).join(&sub));
    spec.listen = None;
    spec.metrics_addr = None;
    p.stream = Some(spec);
    Ok(p)
}

fn run_partition(
    config: &RunnerConfig,
    key: &Key,
    generation: Generation,
    stop: Arc<AtomicBool>,
) -> Result<StreamReport, String> {
    let (job, partition) = (&key.0, key.1);
    let (toml, base_dir) = config
        .state
        .read(|s, _| {
            s.job(job)
                .filter(|j| j.running)
                .map(|j| (j.pipeline_toml.clone(), j.base_dir.clone()))
        })
        .ok_or_else(|| run_error(job, partition, "the job is no longer running"))?;
    let p = partition_pipeline(
        &toml,
        &base_dir,
        job,
        partition,
        generation,
        &config.work_dir,
    )
    .map_err(|e| run_error(job, partition, e))?;
    let options = p
        .engine_options()
        .map_err(|e| run_error(job, partition, e))?;
    let host =
        Host::new(options, config.cache_dir.clone()).map_err(|e| run_error(job, partition, e))?;
    let store = ClusterStore::new(
        job,
        partition,
        generation,
        config.state.clone(),
        config.writer.clone(),
        config.lease.clone(),
        config.runtime.clone(),
        config.call_timeout,
    );
    let options = StreamOptions {
        stop,
        feed: Some(ReplicaFeed::opener(config.state.clone(), job, partition)),
        ..StreamOptions::default()
    };
    quiver_stream::run_with_store(&p, &host, &options, store).map_err(|e| match e {
        quiver_stream::StreamError::Store(StoreError::Remote(e)) => e.to_string(),
        e => run_error(job, partition, e),
    })
}
