//! Batch mode: runs a pipeline over bounded input on parallel workers.
//!
//! One reader thread reads the source, assigns every row to a partition and sends each
//! partition's rows to the worker that owns it (partition mod workers). Each worker holds its
//! own instance of every plugin and runs the chain on its partitions' batches in arrival order,
//! so output order within a partition is the input order. The calling thread writes results
//! to the sink, which stays invisible (temporary name) until the run commits.
//!
//! Without a `[partition]` table, whole batches go round-robin to the workers and the writer
//! puts them back in input order, so the output has the input's row order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

pub use crate::chain::RunError;
use crate::chain::{run_chain, Chain, Incidents, Link, WorkerContext};
use crate::pipeline::{boundaries_from_toml, Pipeline, PipelineError, Scheme};
use crate::policy::PolicyCounts;
use crate::report::{PluginReport, RunReport, TableCommit};
use quiver_data::io::{self, IoError, SinkOptions};
use quiver_data::partition::{self, PartitionError, Partitioning, RangeBoundaries, SkewTracker};
use quiver_lake::delta::{self, TableWriter};
use quiver_plugin_host::fit::{self, FittedFile};
use quiver_plugin_host::plugin::{Host, Instance, Metrics, PluginError};
use quiver_plugin_host::replay::Recorder;
use quiver_plugin_host::sandbox;
use quiver_plugin_host::untrusted;

mod inputs;

/// Memory for keeping decoded input between fit passes, unless `[source] cache-mib` says.
const DEFAULT_CACHE_MIB: u64 = 4096;

/// Batches in flight per worker before the reader waits (backpressure).
const QUEUE_DEPTH: usize = 4;
/// How many of the hottest keys the report lists.
const HOT_KEYS: usize = 5;

/// Where a run reports its progress while it reads its input: the `quiver` binary draws a
/// progress line; a library user may keep count or ignore it. Called from the reader thread.
pub trait Progress: Send + Sync {
    /// A phase starts (`fitting (pass 1)`, `running`): rows are counted from zero again.
    fn phase(&self, name: &str);
    /// `rows` more input rows were read.
    fn rows_read(&self, rows: u64);
    /// The run is over, succeeded or not.
    fn finish(&self);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &str) {}
    fn rows_read(&self, _: u64) {}
    fn finish(&self) {}
}

/// Options of a run that are not part of the pipeline.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Where progress goes (nowhere by default).
    pub progress: Option<Arc<dyn Progress>>,
    /// Apply fitted parameters from this file (`quiver fit`) instead of fitting.
    pub fitted: Option<PathBuf>,
    /// Read all the input, even in an incremental pipeline, and overwrite a table sink.
    pub full_refresh: bool,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("progress", &self.progress.is_some())
            .field("fitted", &self.fitted)
            .field("full_refresh", &self.full_refresh)
            .finish()
    }
}

/// Where a batch came from, for error messages.
#[derive(Debug, Clone)]
struct Origin {
    seq: u64,
    file: Arc<Path>,
    first_row: u64,
    rows: u64,
}

struct Work {
    partition: usize,
    batch: RecordBatch,
    origin: Origin,
}

enum Done {
    Batches {
        partition: usize,
        seq: u64,
        batches: Vec<RecordBatch>,
        incidents: Incidents,
    },
    Failed(Box<RunError>),
}

fn partitioning(
    pipeline: &Pipeline,
    source: &io::Source,
    workers: usize,
) -> Result<Option<Partitioning>, RunError> {
    let Some(spec) = &pipeline.partition else {
        return Ok(None);
    };
    let count = spec.count.unwrap_or(workers);
    Ok(Some(match spec.scheme {
        Scheme::Hash => Partitioning::Hash {
            keys: spec.by.clone(),
            algorithm: spec.hash,
            partitions: count,
        },
        Scheme::Range => {
            let key = spec.by[0].clone();
            let boundaries = match &spec.boundaries {
                Some(values) => boundaries_from_toml(values)?,
                None => {
                    sample_boundaries(source, &key, count, spec.sample_rows.unwrap_or(100_000))?
                }
            };
            boundaries.validate()?;
            Partitioning::Range { key, boundaries }
        }
    }))
}

/// Range boundaries at the quantiles of the first `rows` values of `key`.
fn sample_boundaries(
    source: &io::Source,
    key: &str,
    partitions: usize,
    rows: usize,
) -> Result<RangeBoundaries, RunError> {
    let mut parts = Vec::new();
    let mut seen = 0;
    for item in source.batches() {
        let batch = item?.batch;
        let column = batch
            .column_by_name(key)
            .ok_or_else(|| PartitionError::MissingColumn {
                column: key.to_string(),
                available: batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            })?;
        seen += column.len();
        parts.push(column.clone());
        if seen >= rows {
            break;
        }
    }
    let refs: Vec<&dyn arrow::array::Array> = parts.iter().map(|a| a.as_ref()).collect();
    let sample = arrow::compute::concat(&refs).map_err(PartitionError::from)?;
    let sample = sample.slice(0, sample.len().min(rows));
    Ok(partition::range_boundaries_from_sample(
        &sample, partitions,
    )?)
}

/// Opens the source, loads the chain and makes every worker's instances.
struct Setup {
    source: io::Source,
    /// Records failing plugin calls for `quiver replay`.
    recorder: Recorder,
    /// The decoded input, once a fit pass has read it whole (see `InputCache`).
    cache: Option<InputCache>,
    cache_budget: usize,
    partitioning: Option<Partitioning>,
    chain: Chain,
    per_worker: Vec<Vec<Instance>>,
    progress: Arc<dyn Progress>,
}

/// Refuses what batch mode cannot run.
fn check(pipeline: &Pipeline) -> Result<(), RunError> {
    pipeline.validate()?;
    if !pipeline.stages.is_empty() {
        return Err(PipelineError::Invalid(
            "the pipeline has [[stage]]s: run it with stages::run (quiver run runs every stage)"
                .into(),
        )
        .into());
    }
    if pipeline.stream.as_ref().is_some_and(|s| s.window.is_some()) {
        return Err(PipelineError::Invalid(
            "[stream.window]: event-time windows run in streaming mode only (quiver run --stream)"
                .into(),
        )
        .into());
    }
    Ok(())
}

/// The whole input of a pipeline: its files, or its table's version.
fn open_all(pipeline: &Pipeline) -> Result<io::Source, RunError> {
    let options = inputs::source_options(pipeline);
    Ok(match &pipeline.source.table {
        Some(dir) => {
            let table = quiver_lake::Table::open(&pipeline.resolve(dir))?;
            let (state, files) = table.files(pipeline.source.version)?;
            io::open_table(inputs::table_files(files), state.schema, &options)?
        }
        None => io::open(&pipeline.source_paths(), &options)?,
    })
}

impl Setup {
    fn new(
        pipeline: &Pipeline,
        host: &Host,
        options: &RunOptions,
        source: io::Source,
    ) -> Result<Self, RunError> {
        let workers = pipeline.worker_count();
        let partitioning = partitioning(pipeline, &source, workers)?;
        let chain = Chain::load(pipeline, host)?;
        let per_worker = (0..workers)
            .map(|_| chain.instantiate())
            .collect::<Result<_, _>>()?;
        Ok(Setup {
            recorder: Recorder::new(pipeline.replay_dir()),
            source,
            cache: None,
            cache_budget: (pipeline.source.cache_mib.unwrap_or(DEFAULT_CACHE_MIB) as usize) << 20,
            partitioning,
            chain,
            per_worker,
            progress: options
                .progress
                .clone()
                .unwrap_or_else(|| Arc::new(NoProgress)),
        })
    }

    fn workers(&self) -> usize {
        self.per_worker.len()
    }

    /// The instances of worker 0, which answer questions about schemas for everyone.
    fn first(&mut self) -> &mut [Instance] {
        &mut self.per_worker[0]
    }

    /// Gives fitted parameters to the plugin at `position` in every worker.
    fn set_fitted(&mut self, position: usize, fitted: &str) -> Result<(), RunError> {
        for instances in &mut self.per_worker {
            instances[position].set_fitted(fitted.to_string())?;
        }
        Ok(())
    }
}

/// What one pass over the input does with each batch.
#[derive(Debug, Clone)]
enum Job {
    /// Run the whole chain and send its output to the writer.
    Run,
    /// Fit the plugins at these positions: run the chain up to the last of them, calling
    /// `partial` where they are (they are not fitted yet, so they pass batches on unchanged).
    Fit(Vec<usize>),
}

/// Figures of one pass.
struct Pass {
    rows_in: u64,
    batches_in: u64,
    skew: SkewTracker,
    /// Per worker, per fitted position of a `Job::Fit`: that worker's merged state, if it saw
    /// any rows.
    states: Vec<Vec<Option<Vec<u8>>>>,
}

/// Reads the input once, sending every batch through the workers, while `consume` takes what
/// they produce on the calling thread. The instances come back to `setup` afterwards.
fn pass<T>(
    setup: &mut Setup,
    job: &Job,
    consume: impl FnOnce(Taken<'_>) -> Result<T, RunError>,
) -> Result<(T, Pass), RunError> {
    let workers = setup.workers();
    let partitions = setup
        .partitioning
        .as_ref()
        .map_or(workers, Partitioning::partitions);
    let (done_tx, done_rx) = sync_channel::<Done>(workers * QUEUE_DEPTH);
    // Fit passes hand nothing on per batch (their states come back at the end): only a run's
    // outputs are bounded.
    let outstanding = Outstanding::new(match job {
        Job::Run => OUTSTANDING_PER_WORKER * workers,
        Job::Fit(_) => usize::MAX,
    });
    let mut skew = SkewTracker::new(partitions, HOT_KEYS);
    let (mut rows_in, mut batches_in) = (0u64, 0u64);
    // Fit passes keep the decoded input for the passes after them; the run uses and drops it.
    let cached = match job {
        Job::Run => setup.cache.take().map(|c| c.batches),
        Job::Fit(_) => setup.cache.as_ref().map(|c| c.batches.clone()),
    };
    let mut filling = match (job, &cached) {
        (Job::Fit(_), None) => Some(InputCache {
            budget: setup.cache_budget,
            ..InputCache::default()
        }),
        _ => None,
    };
    let per_worker = std::mem::take(&mut setup.per_worker);
    let context = WorkerContext {
        policies: &setup.chain.policies,
        recorder: &setup.recorder,
    };
    let (consumed, outs) = std::thread::scope(|scope| {
        let mut queues = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for instances in per_worker {
            let (tx, rx) = sync_channel::<Work>(QUEUE_DEPTH);
            queues.push(tx);
            let done = done_tx.clone();
            let context = &context;
            // Plugins run on this thread's stack: room for the deepest Wasm stack allowed.
            let handle = std::thread::Builder::new()
                .name("quiver-worker".into())
                .stack_size(sandbox::PLUGIN_THREAD_STACK)
                .spawn_scoped(scope, move || worker(instances, context, rx, done, job))
                .expect("the system cannot start a worker thread");
            handles.push(handle);
        }
        let reader = {
            let done = done_tx.clone();
            let (source, partitioning) = (&setup.source, setup.partitioning.as_ref());
            let (progress, skew) = (&*setup.progress, &mut skew);
            let (rows_in, batches_in) = (&mut rows_in, &mut batches_in);
            let (cached, filling) = (cached, &mut filling);
            let outstanding = &outstanding;
            scope.spawn(move || {
                let mut items: Box<dyn Iterator<Item = Result<io::SourceBatch, IoError>>> =
                    match cached {
                        Some(batches) => Box::new(batches.into_iter().map(Ok)),
                        None => Box::new(source.batches()),
                    };
                let result = read(
                    &mut items,
                    filling.as_mut(),
                    partitioning,
                    (&queues, outstanding),
                    skew,
                    progress,
                    rows_in,
                    batches_in,
                );
                if let Err(e) = result {
                    let _ = done.send(Done::Failed(Box::new(e)));
                }
            })
        };
        drop(done_tx);
        let consumed = consume(Taken {
            rx: done_rx,
            outstanding: &outstanding,
        });
        let _ = reader.join();
        let outs: Vec<WorkerOut> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        (consumed, outs)
    });
    if let Some(cache) = filling.filter(|c| c.complete) {
        setup.cache = Some(cache);
    }
    let mut states = Vec::with_capacity(outs.len());
    for out in outs {
        setup.per_worker.push(out.instances);
        states.push(out.states);
    }
    Ok((
        consumed?,
        Pass {
            rows_in,
            batches_in,
            skew,
            states,
        },
    ))
}

/// The failure a failed pass reports. Several workers may fail before they all stop; the one
/// on the earliest input batch is reported, so that a run fails the same way every time
/// whatever the thread timing.
#[derive(Default)]
struct EarliestFailure(Option<Box<RunError>>);

impl EarliestFailure {
    /// (batch, partition) of a plugin failure; failures not tied to a batch (reading, the
    /// sink) stop the reader, so any batch failure seen with them came first.
    fn rank(e: &RunError) -> (u64, usize) {
        match e {
            RunError::Batch {
                batch, partition, ..
            } => (*batch, *partition),
            _ => (u64::MAX, usize::MAX),
        }
    }

    fn note(&mut self, e: Box<RunError>) {
        if self
            .0
            .as_ref()
            .is_none_or(|f| Self::rank(&e) < Self::rank(f))
        {
            self.0 = Some(e);
        }
    }

    fn failed(&self) -> bool {
        self.0.is_some()
    }

    fn into_result(self) -> Result<(), RunError> {
        self.0.map_or(Ok(()), |e| Err(*e))
    }
}

/// Waits for the workers of a fit pass; after a failure it only drains them (the reader stops
/// at its next send to the failed worker, so that is short).
fn first_failure(done: Taken<'_>) -> Result<(), RunError> {
    let mut failure = EarliestFailure::default();
    for msg in done {
        if let Done::Failed(e) = msg {
            failure.note(e);
        }
    }
    failure.into_result()
}

/// The next group of plugins to fit in one pass: consecutive unfitted aggregates, after the
/// plugins already fitted or with nothing to fit, that do not read each other's columns. Each
/// comes with the schema of the batches it is fitted on.
fn next_group(
    setup: &mut Setup,
    fitted: &[Option<String>],
) -> Result<Vec<(usize, SchemaRef)>, RunError> {
    let mut schema = setup.source.schema();
    let mut group: Vec<(usize, SchemaRef)> = Vec::new();
    let mut group_reads = BTreeSet::new();
    for (pos, instance) in setup.first().iter_mut().enumerate() {
        if fitted[pos].is_none() {
            let reads = match instance.fit_reads(&schema) {
                Ok(r) => r,
                // A column made by a plugin of the group: it is fitted in a later pass.
                Err(_) if !group.is_empty() => break,
                Err(e) => return Err(e.into()),
            };
            if !reads.is_empty() {
                if fit::group_ends_before(&group_reads, &reads) {
                    break;
                }
                group.push((pos, schema.clone()));
                group_reads.extend(reads);
                continue;
            }
        }
        if !group.is_empty() {
            break;
        }
        schema = instance.plan(&schema)?.output;
    }
    Ok(group)
}

/// Fits every aggregate of the chain, pass by pass. Returns the fitted parameters by position
/// and the number of passes.
fn fit_chain(setup: &mut Setup) -> Result<(Vec<Option<String>>, usize), RunError> {
    let mut fitted: Vec<Option<String>> = vec![None; setup.chain.plugins.len()];
    let mut passes = 0;
    loop {
        let group = next_group(setup, &fitted)?;
        if group.is_empty() {
            return Ok((fitted, passes));
        }
        passes += 1;
        setup.progress.phase(&format!("fitting (pass {passes})"));
        let positions: Vec<usize> = group.iter().map(|(p, _)| *p).collect();
        let ((), done) = pass(setup, &Job::Fit(positions), first_failure)?;
        for (k, (pos, schema)) in group.into_iter().enumerate() {
            let mut states: Vec<Vec<u8>> =
                done.states.iter().filter_map(|w| w[k].clone()).collect();
            let first = &mut setup.first()[pos];
            if states.is_empty() {
                // No rows reached it: let the plugin decide what an empty fit means.
                states.push(first.partial(&RecordBatch::new_empty(schema))?);
            }
            let merged = match states.len() {
                1 => states.pop().expect("one state"),
                _ => first.merge(states)?,
            };
            let json = first.finish(merged)?;
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
                return Err(PluginError::Failed {
                    plugin: first.plugin().name.clone(),
                    message: format!("`finish` returned fitted parameters that are not JSON: {e}"),
                }
                .into());
            }
            setup.set_fitted(pos, &json)?;
            fitted[pos] = Some(json);
        }
    }
}

/// Applies a fitted-parameters file: every aggregate of the chain must have its entry, made by
/// the same plugin build with the same parameters. Plugins with an entry are not asked what
/// they fit on (serving data may lack a label the fit needed).
fn apply_fitted(setup: &mut Setup, path: &Path) -> Result<(), RunError> {
    let file = FittedFile::read(path)?;
    let mut schema = setup.source.schema();
    let mut applied = BTreeSet::new();
    for pos in 0..setup.chain.plugins.len() {
        let has_entry = file.plugins.iter().any(|p| p.position == pos);
        let needs_fit = setup.chain.plugins[pos].plugin.is_aggregate()
            && (has_entry || !setup.first()[pos].fit_reads(&schema)?.is_empty());
        if needs_fit {
            let Link { plugin, params, .. } = &setup.chain.plugins[pos];
            let running = fit::ChainEntry {
                name: &plugin.info.name,
                version: &plugin.info.version,
                sha256: &plugin.sha256,
                params,
            };
            let fitted = file.entry_for(path, pos, &running)?.fitted.to_string();
            setup.set_fitted(pos, &fitted)?;
            applied.insert(pos);
        }
        schema = setup.first()[pos].plan(&schema)?.output;
    }
    file.check_no_extra(path, &applied)?;
    Ok(())
}

/// The file form of fitted parameters.
fn fitted_file(setup: &Setup, fitted: &[Option<String>]) -> Result<FittedFile, RunError> {
    let mut plugins = Vec::new();
    for (position, json) in fitted.iter().enumerate() {
        let Some(json) = json else { continue };
        let Link { plugin, params, .. } = &setup.chain.plugins[position];
        plugins.push(fit::FittedPlugin {
            position,
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            sha256: plugin.sha256.clone(),
            params: fit::params_json(params),
            fitted: serde_json::from_str(json).expect("checked when fitted"),
        });
    }
    Ok(FittedFile {
        format: fit::FORMAT,
        plugins,
    })
}

/// What `quiver fit` did.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// The fitted parameters.
    pub fitted: FittedFile,
    /// Passes over the input.
    pub passes: usize,
    /// Wall time.
    pub wall: Duration,
}

/// Fits the pipeline's aggregates on its input without writing output.
pub fn fit(pipeline: &Pipeline, host: &Host, options: &RunOptions) -> Result<FitReport, RunError> {
    let started = Instant::now();
    check(pipeline)?;
    let mut setup = Setup::new(pipeline, host, options, open_all(pipeline)?)?;
    let (fitted, passes) = fit_chain(&mut setup)?;
    setup.progress.finish();
    Ok(FitReport {
        fitted: fitted_file(&setup, &fitted)?,
        passes,
        wall: started.elapsed(),
    })
}

/// Runs a pipeline to completion: everything is written, or nothing is. Aggregates are fitted
/// first (extra passes over the input), or take their parameters from `options.fitted`.
///
/// With a table sink, the run is one commit of the table, carrying the pipeline stage's
/// transaction id with the run's number and, beside it, the record of the inputs read (see
/// [`crate::incremental`]). An incremental run reads only what committed runs have not; when
/// there is nothing new it loads no plugin and commits nothing.
pub fn run(pipeline: &Pipeline, host: &Host, options: &RunOptions) -> Result<RunReport, RunError> {
    let started = Instant::now();
    check(pipeline)?;
    let planned = inputs::plan(pipeline, options.full_refresh)?;
    // Before anything is written: no output may replace or write into an input.
    io::check_not_inputs(
        &[
            (&pipeline.sink_location(), "output"),
            (&pipeline.dead_letter_dir(), "dead-letter directory"),
            (&pipeline.replay_dir(), "recording directory"),
        ],
        &inputs::files(&planned.source),
    )?;
    let Some(source) = planned.source else {
        return Ok(RunReport::nothing_new(
            planned.report,
            pipeline.sink_location(),
            started.elapsed(),
        ));
    };
    let mut setup = Setup::new(pipeline, host, options, source)?;
    let fit_started = Instant::now();
    let fit_passes = match &options.fitted {
        Some(path) => {
            apply_fitted(&mut setup, path)?;
            0
        }
        None => fit_chain(&mut setup)?.1,
    };
    let fit_time = fit_started.elapsed();
    let source_schema = setup.source.schema();
    let output_schema = Chain::output_schema(setup.first(), &source_schema)?;
    let sink = match planned.target {
        None => Output::Files(io::create(
            &pipeline.resolve(&pipeline.sink.path),
            output_schema,
            &SinkOptions {
                format: pipeline.sink.format,
                partition_by: pipeline.sink.partition_by.clone(),
                overwrite: pipeline.sink.overwrite,
            },
        )?),
        Some((target, log, record)) => {
            let overwrite =
                options.full_refresh || pipeline.sink.mode == crate::pipeline::TableMode::Overwrite;
            let writer = target.table.writer(
                &output_schema,
                delta::WriteOptions {
                    mode: if overwrite {
                        delta::Mode::Overwrite
                    } else {
                        delta::Mode::Append
                    },
                    partition_by: pipeline.sink.partition_by.clone(),
                    schema: pipeline.sink.schema.policy(),
                    ..delta::WriteOptions::default()
                },
            )?;
            let commit = delta::Commit {
                transaction: Some((target.app.clone(), target.run)),
                parameters: vec![
                    ("quiver.pipeline".into(), pipeline.name()),
                    ("quiver.stage".into(), pipeline.stage_name().to_string()),
                    ("quiver.run".into(), target.run.to_string()),
                ],
            };
            Output::Table {
                writer: Box::new(writer),
                record: Box::new((log, record, commit)),
            }
        }
    };
    setup.progress.phase("running");
    let ordered = setup.partitioning.is_none();
    let dead_dir = pipeline.dead_letter_dir();
    let names: Vec<String> = setup
        .chain
        .plugins
        .iter()
        .map(|l| l.plugin.info.name.clone())
        .collect();
    let (written, done) = pass(&mut setup, &Job::Run, |rx| {
        write(sink, rx, ordered, &dead_dir, &names)
    })?;
    let output = written.output;
    setup.progress.finish();

    let plugins = setup
        .chain
        .plugins
        .iter()
        .enumerate()
        .map(|(i, link)| {
            let p = &link.plugin;
            let mut m = Metrics::default();
            setup
                .per_worker
                .iter()
                .for_each(|w| m.merge(&w[i].metrics()));
            PluginReport {
                incidents: written.dead.counts.get(&i).cloned().unwrap_or_default(),
                name: p.info.name.clone(),
                version: p.info.version.clone(),
                sha256: p.sha256.clone(),
                load_time: p.load_time,
                limits: link.limits,
                grants: link.grants.summary(),
                metrics: m,
            }
        })
        .collect();
    Ok(RunReport {
        rows_in: done.rows_in,
        batches_in: done.batches_in,
        rows_out: output.rows,
        wall: started.elapsed(),
        workers: setup.workers(),
        partitioning: setup.partitioning.as_ref().map(describe_partitioning),
        skew: done.skew.report(),
        fit_passes,
        fit_time,
        fitted_from: options.fitted.clone(),
        dead_letters: (written.dead.total > 0).then(|| (dead_dir.clone(), written.dead.total)),
        plugins,
        output,
        table_commit: written.table_commit,
        inputs: planned.report,
        host_peak_rss: crate::report::host_peak_rss(),
    })
}

fn describe_partitioning(p: &Partitioning) -> String {
    match p {
        Partitioning::Hash {
            keys,
            algorithm,
            partitions,
        } => {
            format!(
                "hash({}) with {algorithm} into {partitions}",
                keys.join(", ")
            )
        }
        Partitioning::Range { key, boundaries } => {
            format!(
                "range({key}) into {} at {boundaries:?}",
                boundaries.partitions()
            )
        }
    }
}

/// Decoded input kept in memory between the passes of a run that fits aggregates, so that
/// only the first pass reads and decodes the files.
#[derive(Default)]
struct InputCache {
    batches: Vec<io::SourceBatch>,
    bytes: usize,
    /// Bytes it may hold; past that it is dropped and later passes read the files again.
    budget: usize,
    /// Holds the whole input.
    complete: bool,
}

impl InputCache {
    fn keep(&mut self, item: &io::SourceBatch) {
        if self.budget == 0 {
            return;
        }
        self.bytes += item.batch.get_array_memory_size();
        if self.bytes > self.budget {
            tracing::info!(
                budget_mib = self.budget >> 20,
                "input larger than the cache budget: later passes read it again"
            );
            *self = InputCache::default();
        } else {
            self.batches.push(item.clone());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn read(
    items: &mut dyn Iterator<Item = Result<io::SourceBatch, IoError>>,
    mut cache: Option<&mut InputCache>,
    partitioning: Option<&Partitioning>,
    (queues, outstanding): (&[SyncSender<Work>], &Outstanding),
    skew: &mut SkewTracker,
    progress: &dyn Progress,
    rows_in: &mut u64,
    batches_in: &mut u64,
) -> Result<(), RunError> {
    let workers = queues.len();
    for (seq, item) in items.enumerate() {
        let item = item?;
        if let Some(cache) = cache.as_deref_mut() {
            cache.keep(&item);
        }
        let seq = seq as u64;
        let rows = item.batch.num_rows();
        *rows_in += rows as u64;
        *batches_in += 1;
        progress.rows_read(rows as u64);
        let origin = Origin {
            seq,
            file: item.file.clone(),
            first_row: item.first_row,
            rows: rows as u64,
        };
        let sends: Vec<(usize, RecordBatch)> = match partitioning {
            None => {
                let p = (seq % workers as u64) as usize;
                skew.observe_partition(p, rows as u64);
                vec![(p, item.batch)]
            }
            Some(part) => {
                let assignment = part.assign(&item.batch)?;
                skew.observe(&item.batch, &partition_keys(part), &assignment)?;
                partition::split(&item.batch, &assignment, part.partitions())?
                    .into_iter()
                    .enumerate()
                    .filter_map(|(p, b)| b.map(|b| (p, b)))
                    .collect()
            }
        };
        for (partition, batch) in sends {
            let work = Work {
                partition,
                batch,
                origin: origin.clone(),
            };
            // A worker or the consumer stopped: the writer reports why.
            if !outstanding.acquire() || queues[partition % workers].send(work).is_err() {
                return Ok(());
            }
        }
    }
    if let Some(cache) = cache {
        cache.complete = cache.budget > 0;
    }
    Ok(())
}

/// Work items dispatched per worker and not yet taken by the consumer of a run. Bounding them
/// bounds the outputs a run holds at once — in the workers, in the channel and in the ordered
/// writer's pending map — which the README's host-memory formula counts.
const OUTSTANDING_PER_WORKER: usize = 2;

/// Work items dispatched and not yet taken by the consumer, with a ceiling the reader waits
/// under.
struct Outstanding {
    /// (items out, whether the consumer is gone).
    state: Mutex<(usize, bool)>,
    changed: Condvar,
    max: usize,
}

impl Outstanding {
    fn new(max: usize) -> Self {
        Outstanding {
            state: Mutex::new((0, false)),
            changed: Condvar::new(),
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        // The counter stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for room for one more item; `false` once the consumer is gone.
    fn acquire(&self) -> bool {
        let mut state = self.lock();
        while state.0 >= self.max && !state.1 {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.0 += 1;
        !state.1
    }

    /// One item was taken (a failure not tied to an item may release one more: harmless).
    fn release(&self) {
        let mut state = self.lock();
        state.0 = state.0.saturating_sub(1);
        drop(state);
        self.changed.notify_one();
    }

    fn close(&self) {
        self.lock().1 = true;
        self.changed.notify_all();
    }
}

/// What the workers produce, as the consumer takes it; each item taken makes room for the
/// reader, and a failure or dropping it (the consumer stopped) releases the reader for good.
struct Taken<'a> {
    rx: Receiver<Done>,
    outstanding: &'a Outstanding,
}

impl Iterator for Taken<'_> {
    type Item = Done;

    fn next(&mut self) -> Option<Done> {
        let done = self.rx.recv().ok()?;
        match done {
            // A failed worker never answers for the items still queued to it, which would keep
            // their room taken for ever; and a failed pass reads no further anyway (what was
            // dispatched, all earlier batches, still reports its failures).
            Done::Failed(_) => self.outstanding.close(),
            Done::Batches { .. } => self.outstanding.release(),
        }
        Some(done)
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.outstanding.close();
    }
}

fn partition_keys(p: &Partitioning) -> Vec<String> {
    match p {
        Partitioning::Hash { keys, .. } => keys.clone(),
        Partitioning::Range { key, .. } => vec![key.clone()],
    }
}

/// What a worker hands back at the end of a pass.
struct WorkerOut {
    instances: Vec<Instance>,
    /// Per fitted position of a `Job::Fit`: the merged state of this worker's batches.
    states: Vec<Option<Vec<u8>>>,
}

/// States gathered before a worker merges them into one (bounds memory and merge cost).
const MERGE_EVERY: usize = 16;

/// One batch of a fit pass: the chain up to the last fitted position, `partial` at each
/// fitted position.
fn fit_batch(
    instances: &mut [Instance],
    context: &WorkerContext<'_>,
    positions: &[usize],
    batch: RecordBatch,
    states: &mut [Vec<Vec<u8>>],
) -> Result<(), PluginError> {
    // Error policies apply as in the run (so skipped and dead-lettered rows do not count in
    // the statistics); their incidents are reported by the run itself.
    let mut incidents = Incidents::default();
    let last = *positions.last().expect("a fit job names plugins");
    let mut batches = vec![batch];
    for (i, instance) in instances[..=last].iter_mut().enumerate() {
        match positions.iter().position(|&p| p == i) {
            Some(k) => {
                for b in batches.iter().filter(|b| b.num_rows() > 0) {
                    states[k].push(instance.partial(b)?);
                }
                if states[k].len() >= MERGE_EVERY {
                    let merged = instance.merge(std::mem::take(&mut states[k]))?;
                    states[k].push(merged);
                }
            }
            None => batches = context.transform(instance, (i, (0, 0)), batches, &mut incidents)?,
        }
    }
    Ok(())
}

fn worker(
    mut instances: Vec<Instance>,
    context: &WorkerContext<'_>,
    queue: Receiver<Work>,
    done: SyncSender<Done>,
    job: &Job,
) -> WorkerOut {
    let fitting: &[usize] = match job {
        Job::Fit(p) => p,
        Job::Run => &[],
    };
    let mut states: Vec<Vec<Vec<u8>>> = vec![Vec::new(); fitting.len()];
    let mut failed = false;
    for work in queue {
        let Origin {
            seq,
            file,
            first_row,
            rows,
        } = work.origin;
        let mut incidents = Incidents::default();
        let origin = (work.partition, seq);
        let result = match job {
            Job::Run => {
                run_chain(&mut instances, context, work.batch, origin, &mut incidents).map(Some)
            }
            Job::Fit(positions) => {
                fit_batch(&mut instances, context, positions, work.batch, &mut states)
                    .map(|()| None)
            }
        };
        let msg = match result {
            Ok(Some(batches)) => Done::Batches {
                partition: work.partition,
                seq,
                batches,
                incidents,
            },
            Ok(None) => continue,
            Err(source) => Done::Failed(Box::new(RunError::Batch {
                source: Box::new(source),
                partition: work.partition,
                batch: seq,
                file: file.display().to_string(),
                first_row,
                end_row: first_row + rows,
            })),
        };
        failed = matches!(msg, Done::Failed(_));
        if done.send(msg).is_err() || failed {
            break;
        }
    }
    let mut merged = Vec::with_capacity(states.len());
    for (k, mut s) in states.into_iter().enumerate() {
        merged.push(match s.len() {
            _ if failed => None,
            0 => None,
            1 => s.pop(),
            _ => match instances[fitting[k]].merge(s) {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = done.send(Done::Failed(Box::new(e.into())));
                    None
                }
            },
        });
    }
    WorkerOut {
        instances,
        states: merged,
    }
}

/// Most rows a run may send to dead letters (they are kept in memory until the commit).
const MAX_DEAD_ROWS: u64 = 1 << 20;

/// Dead-letter rows gathered during a run, written when it commits.
#[derive(Default)]
struct DeadLetterRows {
    rows: BTreeMap<usize, Vec<RecordBatch>>,
    counts: BTreeMap<usize, PolicyCounts>,
    total: u64,
}

impl DeadLetterRows {
    fn record(&mut self, incidents: Incidents) -> Result<(), RunError> {
        for (position, rows) in incidents.skipped {
            let c = self.counts.entry(position).or_default();
            c.skipped_batches += 1;
            c.skipped_rows += rows;
        }
        for position in incidents.retries {
            self.counts.entry(position).or_default().retries += 1;
        }
        for (position, rows) in incidents.dead {
            let n = rows.num_rows() as u64;
            self.counts.entry(position).or_default().dead_rows += n;
            self.total += n;
            if self.total > MAX_DEAD_ROWS {
                return Err(RunError::TooManyDeadLetters {
                    limit: MAX_DEAD_ROWS,
                });
            }
            self.rows.entry(position).or_default().push(rows);
        }
        Ok(())
    }

    /// Writes one Parquet file per failing plugin into `dir` (created if needed).
    fn write(&self, dir: &Path, names: &[String]) -> Result<(), RunError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| IoError::io(dir, "cannot create the dead-letter directory", e))?;
        for (position, batches) in &self.rows {
            // The plugin's name is its own text: reduced to one safe component, so the file
            // stays inside the dead-letter directory whatever the name says.
            let name = untrusted::file_name(&names[*position]);
            let path = dir.join(format!("{position:02}-{name}.parquet"));
            let options = SinkOptions {
                format: Some(io::Format::Parquet),
                partition_by: Vec::new(),
                overwrite: true,
            };
            let mut sink = io::create(&path, batches[0].schema(), &options)?;
            for b in batches {
                sink.write(0, b)?;
            }
            sink.commit()?;
        }
        Ok(())
    }
}

/// What the writer produced.
struct Written {
    output: io::SinkSummary,
    table_commit: Option<TableCommit>,
    dead: DeadLetterRows,
}

/// A run's output: files, or a table with the record of the run's inputs.
enum Output {
    Files(io::Sink),
    Table {
        writer: Box<TableWriter>,
        record: Box<TableRecord>,
    },
}

impl Output {
    fn write(&mut self, partition: usize, batch: &RecordBatch) -> Result<(), RunError> {
        match self {
            Output::Files(sink) => sink.write(partition, batch)?,
            Output::Table { writer, .. } => writer.write(batch)?,
        }
        Ok(())
    }

    fn abort(self) {
        match self {
            Output::Files(sink) => sink.abort(),
            Output::Table { writer, .. } => writer.abort(),
        }
    }
}

/// The record of a table run's inputs, and what its commit carries.
type TableRecord = (
    crate::incremental::RunLog,
    crate::incremental::RunRecord,
    delta::Commit,
);

/// Writes results as they arrive (in input order when `ordered`), gathers what error policies
/// did, and commits at the end: dead letters first, then the output.
fn write(
    mut sink: Output,
    done: Taken<'_>,
    ordered: bool,
    dead_dir: &Path,
    names: &[String],
) -> Result<Written, RunError> {
    let mut pending: BTreeMap<u64, (usize, Vec<RecordBatch>)> = BTreeMap::new();
    let mut next = 0u64;
    let mut dead = DeadLetterRows::default();
    let mut failure = EarliestFailure::default();
    for msg in done {
        let (partition, seq, batches) = match msg {
            Done::Failed(e) => {
                failure.note(e);
                continue;
            }
            // After a failure the rest is drained, not written.
            Done::Batches { .. } if failure.failed() => continue,
            Done::Batches {
                partition,
                seq,
                batches,
                incidents,
            } => {
                dead.record(incidents)?;
                (partition, seq, batches)
            }
        };
        if ordered {
            pending.insert(seq, (partition, batches));
            while let Some((partition, batches)) = pending.remove(&next) {
                write_all(&mut sink, partition, &batches)?;
                next += 1;
            }
        } else {
            write_all(&mut sink, partition, &batches)?;
        }
    }
    if let Err(e) = failure.into_result() {
        sink.abort();
        return Err(e);
    }
    dead.write(dead_dir, names)?;
    let (output, table_commit) = match sink {
        Output::Files(sink) => (sink.commit()?, None),
        Output::Table { writer, record } => {
            let (log, record, commit) = *record;
            let dir = writer.table_dir().to_path_buf();
            // The inputs' record first: it counts only once the commit below carries its run.
            log.write(&record)?;
            let summary = writer.commit(commit)?;
            (
                io::SinkSummary {
                    path: dir,
                    files: summary.files,
                    rows: summary.rows,
                    bytes: summary.bytes,
                },
                Some(TableCommit {
                    version: summary.version,
                    run: record.run,
                }),
            )
        }
    };
    Ok(Written {
        output,
        table_commit,
        dead,
    })
}

fn write_all(sink: &mut Output, partition: usize, batches: &[RecordBatch]) -> Result<(), RunError> {
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        sink.write(partition, b)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(batch: u64, partition: usize) -> Box<RunError> {
        Box::new(RunError::Batch {
            source: Box::new(PluginError::Failed {
                plugin: "p".into(),
                message: format!("b{batch}"),
            }),
            partition,
            batch,
            file: "in.csv".into(),
            first_row: 0,
            end_row: 1,
        })
    }

    #[test]
    fn the_reader_waits_for_room_and_is_released_when_the_consumer_stops() {
        let outstanding = Outstanding::new(2);
        assert!(outstanding.acquire() && outstanding.acquire());
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            let o = &outstanding;
            let third = scope.spawn(move || {
                let got = o.acquire();
                tx.send(()).unwrap();
                got
            });
            // Full: the third waits …
            let wait = std::time::Duration::from_millis(200);
            assert!(rx.recv_timeout(wait).is_err(), "acquired past the ceiling");
            // … until one item is taken.
            outstanding.release();
            rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            assert!(third.join().unwrap());
        });
        // Once the consumer is gone, a waiting reader is let go and told to stop.
        std::thread::scope(|scope| {
            let fourth = scope.spawn(|| outstanding.acquire());
            outstanding.close();
            assert!(!fourth.join().unwrap());
        });
        assert!(!outstanding.acquire());
    }

    #[test]
    fn a_failure_stops_the_reader_whose_queued_work_will_never_be_answered() {
        // Two items went to a worker that then failed: it answers with one failure and never
        // for the other, so the room that item takes would never come back.
        let outstanding = Outstanding::new(2);
        assert!(outstanding.acquire() && outstanding.acquire());
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(Done::Failed(at(0, 0))).unwrap();
        let mut taken = Taken {
            rx,
            outstanding: &outstanding,
        };
        assert!(matches!(taken.next(), Some(Done::Failed(_))));
        // The reader is told to stop at once instead of waiting (or handing out more work).
        assert!(!outstanding.acquire());
        drop(tx);
        assert!(taken.next().is_none());
    }

    #[test]
    fn the_earliest_batch_failure_is_reported_whatever_the_arrival_order() {
        let arrivals = [(9, 1), (0, 2), (4, 0), (0, 1)];
        // Every rotation of the arrival order reports batch 0 of partition 1.
        for start in 0..arrivals.len() {
            let mut failure = EarliestFailure::default();
            for k in 0..arrivals.len() {
                let (b, p) = arrivals[(start + k) % arrivals.len()];
                failure.note(at(b, p));
            }
            match failure.into_result() {
                Err(RunError::Batch {
                    batch, partition, ..
                }) => assert_eq!((batch, partition), (0, 1)),
                other => panic!("{other:?}"),
            }
        }
        let mut failure = EarliestFailure::default();
        failure.note(Box::new(RunError::TooManyDeadLetters { limit: 1 }));
        failure.note(at(7, 0));
        assert!(matches!(
            failure.into_result(),
            Err(RunError::Batch { batch: 7, .. })
        ));
        assert!(EarliestFailure::default().into_result().is_ok());
    }
}
