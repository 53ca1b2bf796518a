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

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::io::{self, IoError, SinkOptions, SourceOptions};
use crate::partition::{self, PartitionError, Partitioning, RangeBoundaries, SkewTracker};
use crate::pipeline::{self, Pipeline, PipelineError, Scheme};
use crate::plugin::{Host, Instance, Metrics, Plugin, PluginError};
use crate::report::{PluginReport, RunReport};

/// Batches in flight per worker before the reader waits (backpressure).
const QUEUE_DEPTH: usize = 4;
/// How many of the hottest keys the report lists.
const HOT_KEYS: usize = 5;

/// Why a run failed. Nothing is written to the output when a run fails.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pipeline is invalid.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Reading input or writing output failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Partitioning failed (missing key column, unsupported key type, bad boundaries).
    #[error("partitioning: {0}")]
    Partition(#[from] PartitionError),
    /// A plugin could not be loaded or set up.
    #[error(transparent)]
    Plugin(Box<PluginError>),
    /// A plugin failed on a batch.
    #[error("{source}\n  while processing partition {partition}, batch {batch} ({file}, rows {first_row}..{end_row})")]
    Batch {
        /// What the plugin did.
        source: Box<PluginError>,
        /// The partition.
        partition: usize,
        /// The batch number (0-based, in read order).
        batch: u64,
        /// The input file.
        file: String,
        /// First row of the input batch within its file (0-based).
        first_row: u64,
        /// One past its last row.
        end_row: u64,
    },
}

impl From<PluginError> for RunError {
    fn from(e: PluginError) -> Self {
        RunError::Plugin(Box::new(e))
    }
}

/// Options of a run that are not part of the pipeline.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Show a progress line on stderr.
    pub progress: bool,
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
    },
    Failed(Box<RunError>),
}

/// The plugins of a pipeline, loaded and with parameters checked.
pub struct Chain {
    plugins: Vec<(Arc<Plugin>, Vec<crate::abi::Param>, crate::sandbox::Limits)>,
}

impl Chain {
    /// Loads every plugin of the pipeline.
    pub fn load(pipeline: &Pipeline, host: &Host) -> Result<Chain, RunError> {
        let mut plugins = Vec::with_capacity(pipeline.plugins.len());
        for spec in &pipeline.plugins {
            let path = pipeline::resolve_plugin(spec, &pipeline.base_dir)?;
            let plugin = host.load(&path)?;
            let params = spec.params()?;
            plugin.check_params(&params)?;
            plugins.push((plugin, params, spec.limits(&pipeline.limits)?));
        }
        Ok(Chain { plugins })
    }

    /// A fresh set of instances, one per plugin, for one worker.
    pub fn instantiate(&self) -> Result<Vec<Instance>, PluginError> {
        self.plugins
            .iter()
            .map(|(p, params, limits)| Instance::new(p.clone(), params.clone(), *limits))
            .collect()
    }

    /// The output schema of the chain for `input`, asking each plugin for its plan.
    pub fn output_schema(
        instances: &mut [Instance],
        input: &SchemaRef,
    ) -> Result<SchemaRef, PluginError> {
        let mut schema = input.clone();
        for i in instances {
            schema = i.plan(&schema)?.output;
        }
        Ok(schema)
    }
}

/// Runs the chain over one batch.
fn run_chain(
    instances: &mut [Instance],
    batch: RecordBatch,
) -> Result<Vec<RecordBatch>, PluginError> {
    let mut batches = vec![batch];
    for instance in instances {
        let mut next = Vec::with_capacity(batches.len());
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            next.extend(instance.transform(b)?);
        }
        batches = next;
    }
    Ok(batches)
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

fn boundaries_from_toml(values: &[toml::Value]) -> Result<RangeBoundaries, RunError> {
    let bad = || {
        PipelineError::Invalid(
            "[partition] boundaries must be all integers, all numbers or all strings".into(),
        )
    };
    if let Some(ints) = values
        .iter()
        .map(toml::Value::as_integer)
        .collect::<Option<Vec<_>>>()
    {
        return Ok(RangeBoundaries::Int(ints));
    }
    if let Some(floats) = values
        .iter()
        .map(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
        .collect::<Option<Vec<_>>>()
    {
        return Ok(RangeBoundaries::Float(floats));
    }
    let strings = values
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(bad)?;
    Ok(RangeBoundaries::Utf8(strings))
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

/// Runs a pipeline to completion: everything is written, or nothing is.
pub fn run(pipeline: &Pipeline, host: &Host, options: &RunOptions) -> Result<RunReport, RunError> {
    let started = Instant::now();
    pipeline.validate()?;
    let workers = pipeline.worker_count();
    let source_options = SourceOptions {
        format: pipeline.source.format,
        batch_size: pipeline
            .source
            .batch_size
            .unwrap_or(SourceOptions::default().batch_size),
        csv_has_header: pipeline.source.csv_header.unwrap_or(true),
        csv_delimiter: pipeline.source.csv_delimiter.map_or(b',', |c| c as u8),
        ..SourceOptions::default()
    };
    let source = io::open(&pipeline.source_paths(), &source_options)?;
    let partitioning = partitioning(pipeline, &source, workers)?;
    let chain = Chain::load(pipeline, host)?;
    let mut per_worker: Vec<Vec<Instance>> = (0..workers)
        .map(|_| chain.instantiate())
        .collect::<Result<_, _>>()?;
    let output_schema = Chain::output_schema(&mut per_worker[0], &source.schema())?;
    let sink = io::create(
        &pipeline.resolve(&pipeline.sink.path),
        output_schema,
        &SinkOptions {
            format: pipeline.sink.format,
            partition_by: pipeline.sink.partition_by.clone(),
            overwrite: pipeline.sink.overwrite,
        },
    )?;
    let progress = progress_bar(options.progress);

    let ordered = partitioning.is_none();
    let partitions = partitioning
        .as_ref()
        .map_or(workers, Partitioning::partitions);
    let (done_tx, done_rx) = sync_channel::<Done>(workers * QUEUE_DEPTH);
    let mut skew = SkewTracker::new(partitions, HOT_KEYS);
    let mut rows_in = 0u64;
    let mut batches_in = 0u64;

    let (written, metrics) = std::thread::scope(|scope| {
        let mut queues = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for instances in per_worker.drain(..) {
            let (tx, rx) = sync_channel::<Work>(QUEUE_DEPTH);
            queues.push(tx);
            let done = done_tx.clone();
            handles.push(scope.spawn(move || worker(instances, rx, done)));
        }
        let reader = {
            let done = done_tx.clone();
            let source = &source;
            let partitioning = partitioning.as_ref();
            let progress = progress.clone();
            let skew = &mut skew;
            let rows_in = &mut rows_in;
            let batches_in = &mut batches_in;
            scope.spawn(move || {
                let result = read(
                    source,
                    partitioning,
                    &queues,
                    skew,
                    &progress,
                    rows_in,
                    batches_in,
                );
                if let Err(e) = result {
                    let _ = done.send(Done::Failed(Box::new(e)));
                }
            })
        };
        drop(done_tx);
        let written = write(sink, done_rx, ordered);
        let _ = reader.join();
        let metrics: Vec<Vec<Metrics>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        (written, metrics)
    });
    progress.finish_and_clear();
    let output = written?;

    let plugins = chain
        .plugins
        .iter()
        .enumerate()
        .map(|(i, (p, _, limits))| {
            let mut m = Metrics::default();
            metrics
                .iter()
                .filter_map(|w| w.get(i))
                .for_each(|x| m.merge(x));
            PluginReport {
                name: p.info.name.clone(),
                version: p.info.version.clone(),
                sha256: p.sha256.clone(),
                load_time: p.load_time,
                limits: *limits,
                metrics: m,
            }
        })
        .collect();
    Ok(RunReport {
        rows_in,
        batches_in,
        rows_out: output.rows,
        wall: started.elapsed(),
        workers,
        partitioning: partitioning.map(|p| describe_partitioning(&p)),
        skew: skew.report(),
        plugins,
        output,
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

fn progress_bar(enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {human_pos} rows read in {elapsed}, {per_sec:0}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[allow(clippy::too_many_arguments)]
fn read(
    source: &io::Source,
    partitioning: Option<&Partitioning>,
    queues: &[SyncSender<Work>],
    skew: &mut SkewTracker,
    progress: &indicatif::ProgressBar,
    rows_in: &mut u64,
    batches_in: &mut u64,
) -> Result<(), RunError> {
    let workers = queues.len();
    for (seq, item) in source.batches().enumerate() {
        let item = item?;
        let seq = seq as u64;
        let rows = item.batch.num_rows();
        *rows_in += rows as u64;
        *batches_in += 1;
        progress.inc(rows as u64);
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
            if queues[partition % workers].send(work).is_err() {
                return Ok(()); // a worker stopped: the writer reports why
            }
        }
    }
    Ok(())
}

fn partition_keys(p: &Partitioning) -> Vec<String> {
    match p {
        Partitioning::Hash { keys, .. } => keys.clone(),
        Partitioning::Range { key, .. } => vec![key.clone()],
    }
}

fn worker(
    mut instances: Vec<Instance>,
    queue: Receiver<Work>,
    done: SyncSender<Done>,
) -> Vec<Metrics> {
    for work in queue {
        let Origin {
            seq,
            file,
            first_row,
            rows,
        } = work.origin;
        let msg = match run_chain(&mut instances, work.batch) {
            Ok(batches) => Done::Batches {
                partition: work.partition,
                seq,
                batches,
            },
            Err(source) => Done::Failed(Box::new(RunError::Batch {
                source: Box::new(source),
                partition: work.partition,
                batch: seq,
                file: file.display().to_string(),
                first_row,
                end_row: first_row + rows,
            })),
        };
        let failed = matches!(msg, Done::Failed(_));
        if done.send(msg).is_err() || failed {
            break;
        }
    }
    instances.iter().map(Instance::metrics).collect()
}

/// Writes results as they arrive (in input order when `ordered`) and commits at the end.
fn write(
    mut sink: io::Sink,
    done: Receiver<Done>,
    ordered: bool,
) -> Result<io::SinkSummary, RunError> {
    let mut pending: BTreeMap<u64, (usize, Vec<RecordBatch>)> = BTreeMap::new();
    let mut next = 0u64;
    for msg in done {
        match msg {
            Done::Failed(e) => {
                sink.abort();
                return Err(*e);
            }
            Done::Batches {
                partition,
                seq,
                batches,
            } if ordered => {
                pending.insert(seq, (partition, batches));
                while let Some((partition, batches)) = pending.remove(&next) {
                    write_all(&mut sink, partition, &batches)?;
                    next += 1;
                }
            }
            Done::Batches {
                partition, batches, ..
            } => write_all(&mut sink, partition, &batches)?,
        }
    }
    Ok(sink.commit()?)
}

fn write_all(
    sink: &mut io::Sink,
    partition: usize,
    batches: &[RecordBatch],
) -> Result<(), RunError> {
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        sink.write(partition, b)?;
    }
    Ok(())
}
