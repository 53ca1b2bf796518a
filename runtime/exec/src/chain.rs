//! The chain runner: a pipeline's plugins loaded as a [`Chain`], and one batch run through
//! them on a worker under each plugin's error policy (retries, skip, dead letters by
//! bisection), recording failing calls. Batch mode and streaming mode both drive it.
//!
//! Uses the pipeline file ([`crate::pipeline`]), the plugin host ([`quiver_plugin_host::plugin`],
//! [`quiver_plugin_host::replay`]), the error policies ([`crate::policy`]) and the ground modules below them.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::pipeline::{self, Pipeline, PipelineError};
use crate::policy::{self, ErrorPolicy};
use quiver_data::io::IoError;
use quiver_data::partition::PartitionError;
use quiver_plugin_host::fit::FitError;
use quiver_plugin_host::plugin::{Host, Instance, Plugin, PluginError};
use quiver_plugin_host::replay::Recorder;

/// Why a run failed. Nothing is written to the output when a run fails.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pipeline is invalid.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Reading input or writing output failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Reading or writing a lake table failed.
    #[error(transparent)]
    Lake(#[from] quiver_lake::LakeError),
    /// The record of which inputs earlier runs read could not be used.
    #[error(transparent)]
    Incremental(#[from] crate::incremental::IncrementalError),
    /// Partitioning failed (missing key column, unsupported key type, bad boundaries).
    #[error("partitioning: {0}")]
    Partition(#[from] PartitionError),
    /// A plugin could not be loaded or set up.
    #[error(transparent)]
    Plugin(Box<PluginError>),
    /// A fitted-parameters file cannot be used.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// So many rows failed that the dead-letter policy stopped the run.
    #[error("more than {limit} rows went to dead letters; stopping the run (the plugin probably fails on every row)")]
    TooManyDeadLetters {
        /// The limit.
        limit: u64,
    },
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

/// What error policies did with one input batch.
#[derive(Default)]
pub struct Incidents {
    /// Rows plugins failed on (dead-letter policy), already annotated for the dataset.
    pub dead: Vec<(usize, RecordBatch)>,
    /// (plugin position, rows) of batches dropped by the skip policy.
    pub skipped: Vec<(usize, u64)>,
    /// Plugin positions of each retry.
    pub retries: Vec<usize>,
}

/// One plugin of a chain: loaded, with checked parameters, its limits and grants.
pub struct Link {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// Its parameters.
    pub params: Vec<quiver_plugin_host::abi::Param>,
    /// Its limits.
    pub limits: quiver_plugin_host::sandbox::Limits,
    /// What it may reach outside the sandbox.
    pub grants: Arc<quiver_plugin_host::capability::Grants>,
}

/// The plugins of a pipeline, loaded and with parameters and grants checked.
pub struct Chain {
    /// Each plugin, in chain order.
    pub plugins: Vec<Link>,
    /// Each plugin's error policy and retries.
    pub policies: Vec<(ErrorPolicy, u32)>,
}

impl Chain {
    /// Loads every plugin of the pipeline.
    pub fn load(pipeline: &Pipeline, host: &Host) -> Result<Chain, RunError> {
        let mut plugins = Vec::with_capacity(pipeline.plugins.len());
        let policies = pipeline
            .plugins
            .iter()
            .map(|p| (p.on_error, p.retries))
            .collect();
        for spec in &pipeline.plugins {
            let path = pipeline::resolve_plugin(spec, &pipeline.base_dir)?;
            let limits = spec.limits(&pipeline.limits)?;
            let plugin = host.load_with(&path, &limits, spec.sha256.as_deref())?;
            let params = spec.params()?;
            plugin.check_params(&params)?;
            let grants = pipeline.grants(spec);
            plugin.check_grants(&grants)?;
            plugins.push(Link {
                plugin,
                params,
                limits,
                grants: Arc::new(grants),
            });
        }
        Ok(Chain { plugins, policies })
    }

    /// A fresh set of instances, one per plugin, for one worker.
    pub fn instantiate(&self) -> Result<Vec<Instance>, PluginError> {
        self.plugins
            .iter()
            .map(|l| {
                Instance::new(
                    l.plugin.clone(),
                    l.params.clone(),
                    l.limits,
                    l.grants.clone(),
                )
            })
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

/// Where a plugin call happens: the plugin's place and policy, the batch's origin, and the
/// flight recorder.
struct Step<'a> {
    position: usize,
    policy: (ErrorPolicy, u32),
    /// (partition, batch number).
    origin: (usize, u64),
    recorder: &'a Recorder,
}

/// Runs one plugin over batches, skipping empty ones, under its error policy.
fn transform_all(
    instance: &mut Instance,
    step: &Step<'_>,
    batches: Vec<RecordBatch>,
    incidents: &mut Incidents,
) -> Result<Vec<RecordBatch>, PluginError> {
    let (position, (policy, retries), origin) = (step.position, step.policy, step.origin);
    let mut next = Vec::with_capacity(batches.len());
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        let mut attempt = 0;
        let result = loop {
            match instance.transform(b) {
                Err(e) if e.is_call_failure() => {
                    if attempt == 0 {
                        step.recorder.record(position, instance, b, &e, origin);
                    }
                    if attempt == retries {
                        break Err(e);
                    }
                    tracing::warn!(plugin = %instance.plugin().name, "retrying a batch after: {e}");
                    attempt += 1;
                    incidents.retries.push(position);
                }
                result => break result,
            }
        };
        let error = match result {
            Ok(out) => {
                next.extend(out);
                continue;
            }
            Err(e) if !e.is_call_failure() || policy == ErrorPolicy::Fail => return Err(e),
            Err(e) => e,
        };
        let name = instance.plugin().name.clone();
        if policy == ErrorPolicy::Skip {
            tracing::warn!(plugin = %name, "skipping a batch of {} rows: {error}", b.num_rows());
            incidents.skipped.push((position, b.num_rows() as u64));
            continue;
        }
        // A time limit is not about particular rows, and every probe would wait for it.
        let splittable = |e: &PluginError| !matches!(e, PluginError::Timeout { .. });
        let found = policy::bisect(b, error, |slice| instance.transform(slice), splittable);
        next.extend(found.output);
        for (rows, error) in found.dead {
            let annotated =
                dead_letter_rows(&rows, &error.to_string(), &name, origin).map_err(|source| {
                    PluginError::Abi {
                        plugin: name.clone(),
                        source,
                    }
                })?;
            incidents.dead.push((position, annotated));
        }
    }
    Ok(next)
}

/// Failing rows with the columns that say what happened.
pub fn dead_letter_rows(
    rows: &RecordBatch,
    error: &str,
    plugin: &str,
    (partition, batch): (usize, u64),
) -> Result<RecordBatch, quiver_plugin_host::abi::AbiError> {
    use arrow::array::{ArrayRef, StringArray, UInt32Array, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    let n = rows.num_rows();
    let mut fields: Vec<_> = rows.schema().fields().iter().cloned().collect();
    let mut columns = rows.columns().to_vec();
    let extra: [(&str, DataType, ArrayRef); 4] = [
        (
            "_error",
            DataType::Utf8,
            Arc::new(StringArray::from(vec![error; n])),
        ),
        (
            "_plugin",
            DataType::Utf8,
            Arc::new(StringArray::from(vec![plugin; n])),
        ),
        (
            "_partition",
            DataType::UInt32,
            Arc::new(UInt32Array::from(vec![partition as u32; n])),
        ),
        (
            "_batch",
            DataType::UInt64,
            Arc::new(UInt64Array::from(vec![batch; n])),
        ),
    ];
    for (name, t, array) in extra {
        fields.push(Arc::new(Field::new(name, t, false)));
        columns.push(array);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Runs the chain over one batch.
pub fn run_chain(
    instances: &mut [Instance],
    context: &WorkerContext<'_>,
    batch: RecordBatch,
    origin: (usize, u64),
    incidents: &mut Incidents,
) -> Result<Vec<RecordBatch>, PluginError> {
    run_chain_with(instances, context, batch, origin, incidents, |_, _, _| {
        Ok(())
    })
}

/// Runs the chain over one batch, calling `before` with each plugin and the batches it is
/// about to transform (streaming refits running statistics there).
pub fn run_chain_with(
    instances: &mut [Instance],
    context: &WorkerContext<'_>,
    batch: RecordBatch,
    origin: (usize, u64),
    incidents: &mut Incidents,
    mut before: impl FnMut(usize, &mut Instance, &[RecordBatch]) -> Result<(), PluginError>,
) -> Result<Vec<RecordBatch>, PluginError> {
    let mut batches = vec![batch];
    for (position, instance) in instances.iter_mut().enumerate() {
        before(position, instance, &batches)?;
        let step = context.step(position, origin);
        batches = transform_all(instance, &step, batches, incidents)?;
    }
    Ok(batches)
}

/// What every worker shares: the plugins' policies and the flight recorder.
pub struct WorkerContext<'a> {
    /// Each plugin's error policy and retries, by position.
    pub policies: &'a [(ErrorPolicy, u32)],
    /// The flight recorder of failing calls.
    pub recorder: &'a Recorder,
}

impl WorkerContext<'_> {
    /// Runs the plugin at `position` over `batches` (from `origin`: partition, batch number)
    /// under its error policy.
    pub fn transform(
        &self,
        instance: &mut Instance,
        (position, origin): (usize, (usize, u64)),
        batches: Vec<RecordBatch>,
        incidents: &mut Incidents,
    ) -> Result<Vec<RecordBatch>, PluginError> {
        transform_all(instance, &self.step(position, origin), batches, incidents)
    }

    fn step(&self, position: usize, origin: (usize, u64)) -> Step<'_> {
        Step {
            position,
            policy: self.policies[position],
            origin,
            recorder: self.recorder,
        }
    }
}
