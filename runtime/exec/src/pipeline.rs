//! The pipeline file: source → chain of plugins → sink, with partitioning and limits.
//!
//! ```toml
//! workers = 2                        # default: one per core
//!
//! [source]
//! paths = ["data/*.parquet"]         # files, globs or directories, relative to this file
//! format = "parquet"                 # default: from the extension (parquet, csv, jsonl, ipc)
//! batch-size = 65536
//!
//! [partition]
//! by = ["user_id"]                   # hash partitioning on one or more key columns
//! count = 8                          # default: the number of workers
//! hash = "xxh3"                      # xxh3 (default), murmur3, fnv1a, md5
//! # or range partitioning on one key:
//! # scheme = "range"; by = ["amount"]; boundaries = [10, 100]   (n-1 boundaries → n partitions)
//! # scheme = "range"; by = ["amount"]; count = 4                (boundaries from a sample)
//!
//! [limits]                           # defaults for every plugin (see `sandbox::Limits`)
//! memory-mib = 512
//! timeout-ms = 10000
//!
//! [[plugin]]
//! name = "filter"                    # a plugin on the search path, or: path = "my.wasm"
//! params = { where = "amount > 100" }
//!
//! [[plugin]]
//! path = "plugins/scale.wasm"
//! sha256 = "9b9c…"                   # optional: refuse any other build of the component
//! params = { columns = ["amount"], a = 3.0, b = 2.0 }
//! limits = { memory-mib = 64 }       # overrides for this plugin
//! on-error = "dead-letter"           # fail (default), skip, or dead-letter the failing rows
//! retries = 1                        # tries again before the policy applies (default 0)
//! grants = { dirs = ["ref"], env = ["TZ"], clock = true }   # default: nothing (see `capability`)
//!
//! [sink]
//! path = "out/result.parquet"       # relative to this file
//! partition-by = ["country"]         # Hive-style directory instead of one file
//! overwrite = false
//!
//! [schedule]                         # for `quiver schedule` (see `quiver_schedule::spec`)
//! every = "15m"                      # or: cron = "0 * * * *" (UTC)
//! retries = 2                        # failed runs tried again, after 1s, 2s, … (backoff)
//! ```
//!
//! A lake table instead of files, as source or sink (Delta Lake):
//!
//! ```toml
//! [source]
//! table = "lake/raw"                 # version = 3 reads an older version
//! incremental = true                 # only what earlier runs of this pipeline have not read
//!
//! [sink]
//! table = "lake/orders"
//! mode = "append"                    # or "overwrite"
//! partition-by = ["day"]
//! schema = "merge"                   # add new columns (default "strict": refuse differences)
//! ```
//!
//! Several stages run in order, each committing on its own (ELT: land, then curate):
//!
//! ```toml
//! [[stage]]
//! name = "land"
//! source = { paths = ["incoming/*.csv"], incremental = true }
//! sink = { table = "lake/raw" }
//!
//! [[stage]]
//! name = "curate"
//! source = { table = "lake/raw", incremental = true }
//! plugin = [{ name = "filter", params = { where = "amount > 0" } }]
//! sink = { table = "lake/curated", partition-by = ["day"] }
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::incremental::OnChange;
use crate::policy::ErrorPolicy;
use quiver_data::io::Format;
use quiver_data::partition::{HashAlgorithm, RangeBoundaries};
use quiver_plugin_host::abi::{Param, ParamValue};
use quiver_plugin_host::capability::Grants;
use quiver_plugin_host::sandbox::{EngineOptions, LimitOutOfRange, Limits};

/// A pipeline file could not be read or makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A limit is set to a value the host cannot honour.
    #[error("{table}: {source}")]
    Limit {
        /// Where it was set: `[limits]`, or the plugin's `limits` table.
        table: String,
        /// The limit and its range.
        source: LimitOutOfRange,
    },
    /// A plugin could not be found.
    #[error("plugin `{name}` not found; looked in: {looked}")]
    PluginNotFound {
        /// What was asked for.
        name: String,
        /// Where it looked.
        looked: String,
    },
}

/// A whole pipeline.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pipeline {
    /// The pipeline's name, which identifies its runs in the lake tables it writes (default:
    /// the pipeline file's name without `.toml`).
    pub name: Option<String>,
    /// Worker threads; each runs its own instance of every plugin. Default: one per core.
    pub workers: Option<usize>,
    /// Stages run in order, each with its own source, plugins and sink (instead of one
    /// `[source]`, `[[plugin]]`s and `[sink]`).
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageSpec>,
    /// The input.
    #[serde(default)]
    pub source: SourceSpec,
    /// How rows are spread over partitions (default: whole batches round-robin, input order
    /// kept in the output).
    #[serde(default)]
    pub partition: Option<PartitionSpec>,
    /// Limits for every plugin, unless a plugin overrides them.
    #[serde(default)]
    pub limits: Limits,
    /// The chain of plugins, in order.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginSpec>,
    /// The output.
    #[serde(default)]
    pub sink: SinkSpec,
    /// Where failing plugin calls are recorded for `quiver replay` (default: `<sink>-replay`
    /// next to the output).
    pub replay_dir: Option<PathBuf>,
    /// Makes granted clocks and randomness deterministic, for reproducible runs.
    #[serde(default)]
    pub deterministic: bool,
    /// Where rows that plugins with `on-error = "dead-letter"` failed on are written.
    #[serde(default)]
    pub dead_letter: Option<DeadLetterSpec>,
    /// Settings for streaming mode (`quiver run --stream`).
    #[serde(default)]
    pub stream: Option<StreamSpec>,
    /// When `quiver schedule` runs the pipeline, and how it retries failed runs.
    #[serde(default)]
    pub schedule: Option<quiver_schedule::ScheduleSpec>,
    /// Directory relative paths are resolved against (the pipeline file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The pipeline file, when read from one.
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// The stage this pipeline is (`main` for a pipeline without stages).
    #[serde(skip)]
    pub stage: Option<String>,
}

/// `[[stage]]`: one step of a multi-stage pipeline.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StageSpec {
    /// The stage's name (letters, digits, `-`, `_`), for messages and `--from-stage`.
    pub name: String,
    /// Worker threads for this stage (default: the pipeline's).
    pub workers: Option<usize>,
    /// The stage's input.
    pub source: SourceSpec,
    /// How the stage's rows are spread over partitions.
    #[serde(default)]
    pub partition: Option<PartitionSpec>,
    /// The stage's plugins, in order (none: rows are loaded as they are).
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginSpec>,
    /// The stage's output.
    pub sink: SinkSpec,
}

/// The name of the one stage of a pipeline without `[[stage]]`s.
pub const MAIN_STAGE: &str = "main";

/// `[stream]` of a pipeline file: settings that apply when it runs in streaming mode.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StreamSpec {
    /// A micro-batch closes at this many rows (default 10000).
    pub batch_rows: Option<usize>,
    /// … or this long after its first row arrived (default 200 ms).
    pub batch_ms: Option<u64>,
    /// Time between checkpoints (default 1000 ms); 0 turns periodic checkpoints off (one is
    /// still taken when the run stops).
    pub checkpoint_ms: Option<u64>,
    /// Where checkpoints are kept (default `<sink>-checkpoints` next to the output).
    pub checkpoint_dir: Option<PathBuf>,
    /// The job's name, which names its checkpoints and temporary files (default: the output
    /// directory's name).
    pub job: Option<String>,
    /// How often the source is polled for new lines when it has none (default 10 ms).
    pub poll_ms: Option<u64>,
    /// Serve Prometheus metrics on this address (`host:port`; port 0 picks one), at
    /// `/metrics`. Default: none.
    pub metrics_addr: Option<String>,
    /// Take rows from an HTTP ingest endpoint on this address (`host:port`) instead of
    /// `[source] paths`: `POST /ingest` with JSON lines or an Arrow IPC stream. Rows are in a
    /// write-ahead log on disk before the request is answered.
    pub listen: Option<String>,
    /// The HTTP ingest's write-ahead log, a directory of segments (default
    /// `<checkpoint-dir>/<job>.wal`).
    pub wal: Option<PathBuf>,
    /// The write-ahead log starts a new segment past this many bytes (default 64 MiB);
    /// segments before the last checkpoint are deleted.
    pub wal_segment_bytes: Option<u64>,
    /// What to do with an input line that does not parse: `fail` (default), `skip`, or
    /// `dead-letter`.
    #[serde(default)]
    pub on_malformed: crate::policy::OnMalformed,
    /// An event-time window aggregation after the plugin chain (`[stream.window]`).
    pub window: Option<crate::window::WindowSpec>,
    /// What to do with events behind the watermark (late for their window): `drop`
    /// (default) or `dead-letter`.
    #[serde(default)]
    pub on_late: crate::policy::LatePolicy,
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SourceSpec {
    /// Files, glob patterns or directories. In streaming mode: one growing file, a directory
    /// files arrive in, or `-` for standard input.
    #[serde(default)]
    pub paths: Vec<String>,
    /// The format, if not implied by the extension.
    pub format: Option<Format>,
    /// Rows per batch read.
    pub batch_size: Option<usize>,
    /// Whether CSV files have a header line (default true).
    pub csv_header: Option<bool>,
    /// CSV field delimiter (default ",").
    pub csv_delimiter: Option<char>,
    /// Memory (MiB) for keeping the decoded input between the passes of a run that fits
    /// aggregates (default 4096; 0: read the files again for every pass).
    pub cache_mib: Option<u64>,
    /// A Delta table to read instead of files.
    pub table: Option<PathBuf>,
    /// The table version to read (default: the latest).
    pub version: Option<u64>,
    /// Read only the input earlier committed runs of this pipeline have not: new files (or
    /// changed ones, see `on-change`), or the table versions added since. Needs a table sink,
    /// whose commits record what each run read.
    #[serde(default)]
    pub incremental: bool,
    /// What an incremental run does with a file changed since a run read it: `refuse`
    /// (default), `reprocess` or `skip`.
    #[serde(default)]
    pub on_change: OnChange,
}

/// `[partition]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PartitionSpec {
    /// `hash` (default) or `range`.
    #[serde(default)]
    pub scheme: Scheme,
    /// Key columns (one for range partitioning).
    pub by: Vec<String>,
    /// Number of partitions (default: workers; for range: boundaries + 1).
    pub count: Option<usize>,
    /// Hash function for hash partitioning.
    #[serde(default)]
    pub hash: HashAlgorithm,
    /// Range boundaries given by hand (numbers or strings), n-1 for n partitions.
    pub boundaries: Option<Vec<toml::Value>>,
    /// Rows sampled from the start of the input to compute range boundaries (default 100000).
    pub sample_rows: Option<usize>,
}

/// Partitioning scheme.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// partition = hash(key) mod n.
    #[default]
    Hash,
    /// Sorted key ranges.
    Range,
}

/// `[[plugin]]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PluginSpec {
    /// A plugin on the search path (`filter` finds `filter.wasm`).
    pub name: Option<String>,
    /// A `.wasm` file (relative to the pipeline file).
    pub path: Option<PathBuf>,
    /// The SHA-256 (hex) the component must have; any other build is refused.
    pub sha256: Option<String>,
    /// Parameters.
    #[serde(default)]
    pub params: toml::Table,
    /// Limit overrides for this plugin.
    #[serde(default)]
    pub limits: Option<toml::Table>,
    /// What to do when the plugin fails on a batch: `fail` (default), `skip`, `dead-letter`.
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// Times a failing batch is tried again before the policy applies (default 0).
    #[serde(default)]
    pub retries: u32,
    /// What the plugin may reach outside its sandbox (default: nothing).
    #[serde(default)]
    pub grants: Grants,
}

/// `[dead-letter]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeadLetterSpec {
    /// Directory of the dead-letter dataset: one Parquet file per failing plugin,
    /// `<position>-<plugin>.parquet`, holding the failing rows as they reached the plugin plus
    /// `_error`, `_plugin`, `_partition` and `_batch` columns. Default: `<sink>-dead-letter`
    /// next to the output.
    pub path: PathBuf,
}

/// `[sink]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SinkSpec {
    /// Output file, or directory for Hive-style output.
    #[serde(default)]
    pub path: PathBuf,
    /// A Delta table to write instead of files (created by the first run).
    pub table: Option<PathBuf>,
    /// How a run writes the table: `append` (default) or `overwrite`.
    #[serde(default)]
    pub mode: TableMode,
    /// Whether rows whose columns differ from the table's are refused (`strict`, default) or
    /// merged (`merge`: new columns are added; missing ones are null).
    #[serde(default)]
    pub schema: SchemaMode,
    /// Format (default: from the extension, else Parquet).
    pub format: Option<Format>,
    /// Hive-style partition columns.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Replace an existing output.
    #[serde(default)]
    pub overwrite: bool,
}

/// How a run writes a table sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableMode {
    /// Add the run's rows.
    #[default]
    Append,
    /// Replace the table's rows with the run's.
    Overwrite,
}

/// How rows whose columns differ from a table sink's are treated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaMode {
    /// Refuse any difference, naming the columns.
    #[default]
    Strict,
    /// Add new columns to the table; write nulls for missing ones.
    Merge,
}

impl SchemaMode {
    /// The table writer's policy for this mode.
    pub fn policy(self) -> quiver_lake::delta::SchemaPolicy {
        match self {
            SchemaMode::Strict => quiver_lake::delta::SchemaPolicy::Strict,
            SchemaMode::Merge => quiver_lake::delta::SchemaPolicy::Merge,
        }
    }
}

impl Pipeline {
    /// Reads a pipeline file.
    pub fn from_file(path: &Path) -> Result<Pipeline, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut p = Self::from_toml(&text).map_err(|message| PipelineError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        p.base_dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        p.file = Some(path.to_path_buf());
        Ok(p)
    }

    /// The pipeline's name: as given, else the file's name without `.toml`, else `pipeline`.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .or_else(|| {
                self.file
                    .as_ref()
                    .and_then(|f| f.file_stem())
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "pipeline".into())
    }

    /// The stage's name (`main` for a pipeline without stages).
    pub fn stage_name(&self) -> &str {
        self.stage.as_deref().unwrap_or(MAIN_STAGE)
    }

    /// The id under which this pipeline's stage records its runs in a table it writes (a
    /// Delta transaction id).
    pub fn app_id(&self) -> String {
        format!("quiver/{}/{}", self.name(), self.stage_name())
    }

    /// The pipeline's stages, each as a pipeline of its own (one, `main`, when the file has
    /// no `[[stage]]`). A stage takes the pipeline's settings (workers, limits, name, …) and
    /// its own source, partitioning, plugins and sink.
    pub fn stages(&self) -> Vec<Pipeline> {
        if self.stages.is_empty() {
            let mut main = self.clone();
            main.stage = Some(MAIN_STAGE.into());
            return vec![main];
        }
        self.stages
            .iter()
            .map(|stage| {
                let mut p = self.clone();
                p.stages = Vec::new();
                p.stage = Some(stage.name.clone());
                p.workers = stage.workers.or(self.workers);
                p.source = stage.source.clone();
                p.partition = stage.partition.clone();
                p.plugins = stage.plugins.clone();
                p.sink = stage.sink.clone();
                p
            })
            .collect()
    }

    /// Where the output goes: the table sink's directory or the sink's path, resolved.
    pub fn sink_location(&self) -> PathBuf {
        match &self.sink.table {
            Some(t) => self.resolve(t),
            None => self.resolve(&self.sink.path),
        }
    }

    /// Parses pipeline TOML (relative paths resolve against the current directory).
    pub fn from_toml(text: &str) -> Result<Pipeline, String> {
        let mut p: Pipeline = toml::from_str(text).map_err(|e| e.to_string())?;
        p.base_dir = PathBuf::from(".");
        Ok(p)
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// Source paths resolved against the file's directory.
    pub fn source_paths(&self) -> Vec<String> {
        self.source
            .paths
            .iter()
            .map(|p| {
                if Path::new(p).is_absolute() {
                    p.clone()
                } else {
                    self.base_dir.join(p).to_string_lossy().into_owned()
                }
            })
            .collect()
    }

    /// A directory next to the output: `<sink stem>-<suffix>`.
    fn beside_sink(&self, suffix: &str) -> PathBuf {
        let sink = self.sink_location();
        let stem = sink
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        sink.with_file_name(format!("{stem}-{suffix}"))
    }

    /// The dead-letter directory: as configured, else `<sink>-dead-letter` next to the output.
    pub fn dead_letter_dir(&self) -> PathBuf {
        match &self.dead_letter {
            Some(d) => self.resolve(&d.path),
            None => self.beside_sink("dead-letter"),
        }
    }

    /// The flight-recorder directory: as configured, else `<sink>-replay` next to the output.
    pub fn replay_dir(&self) -> PathBuf {
        match &self.replay_dir {
            Some(d) => self.resolve(d),
            None => self.beside_sink("replay"),
        }
    }

    /// This plugin's grants, with paths resolved and the pipeline's `deterministic` applied.
    pub fn grants(&self, spec: &PluginSpec) -> Grants {
        let g = spec.grants.clone().resolved(&self.base_dir);
        if self.deterministic {
            g.deterministic()
        } else {
            g
        }
    }

    /// Engine-wide settings for this pipeline: room for every instance (plus replacements),
    /// fuel counting if any plugin has a fuel limit, and the largest stack any plugin is given
    /// (the Wasm stack limit is the engine's, not a store's).
    pub fn engine_options(&self) -> Result<EngineOptions, PipelineError> {
        self.check_limits()?;
        let mut o =
            EngineOptions::new((self.worker_count() * self.plugins.len().max(1) + 8) as u32);
        o.stack_kib = self.limits.stack_kib;
        o.fuel = self.limits.fuel.is_some();
        for spec in &self.plugins {
            let l = spec.limits(&self.limits)?;
            o.fuel |= l.fuel.is_some();
            o.stack_kib = o.stack_kib.max(l.stack_kib);
        }
        Ok(o)
    }

    /// Number of workers: as configured, else one per core.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// Refuses pipeline-wide limits out of range (per-plugin ones: [`PluginSpec::limits`]).
    fn check_limits(&self) -> Result<(), PipelineError> {
        self.limits.check().map_err(|source| PipelineError::Limit {
            table: "[limits]".into(),
            source,
        })
    }

    /// Checks the stages: names, and that a file has either stages or one source and sink.
    pub fn validate_stages(&self) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Invalid(m));
        if self.stages.is_empty() {
            return Ok(());
        }
        if !self.source.paths.is_empty()
            || self.source.table.is_some()
            || !self.sink.path.as_os_str().is_empty()
            || self.sink.table.is_some()
            || !self.plugins.is_empty()
            || self.partition.is_some()
        {
            return bad("a pipeline with [[stage]]s gives each stage its source, plugins and sink: move the top-level [source], [[plugin]], [partition] and [sink] into a stage".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let ok = !stage.name.is_empty()
                && stage
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return bad(format!(
                    "[[stage]] #{}: name {:?} must be letters, digits, '-' or '_'",
                    i + 1,
                    stage.name
                ));
            }
            if !seen.insert(stage.name.as_str()) {
                return bad(format!("[[stage]] name {:?} is used twice", stage.name));
            }
        }
        Ok(())
    }

    /// Checks what can be checked without reading data or plugins.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Invalid(m));
        self.validate_stages()?;
        if !self.stages.is_empty() {
            for stage in self.stages() {
                stage.validate().map_err(|e| {
                    PipelineError::Invalid(format!("[[stage]] {}: {e}", stage.stage_name()))
                })?;
            }
            return Ok(());
        }
        self.validate_lake()?;
        if self.source.paths.is_empty() && self.source.table.is_none() {
            return bad(
                "[source] names no input: give paths = [\"…\"] (files) or table = \"…\" (a Delta table)"
                    .into(),
            );
        }
        if self.workers == Some(0) {
            return bad("workers must be at least 1".into());
        }
        if self.source.batch_size == Some(0) {
            return bad("[source] batch-size must be at least 1 (rows per batch)".into());
        }
        self.check_limits()?;
        if let Some(p) = &self.partition {
            if p.by.is_empty() {
                return bad("[partition] by is empty: name the key column(s)".into());
            }
            if p.count == Some(0) {
                return bad("[partition] count must be at least 1".into());
            }
            if p.scheme == Scheme::Range && p.by.len() != 1 {
                return bad(format!(
                    "[partition] range partitioning takes one key column, not {}",
                    p.by.len()
                ));
            }
            if p.scheme == Scheme::Hash && p.boundaries.is_some() {
                return bad("[partition] boundaries only apply to scheme = \"range\"".into());
            }
        }
        for (i, spec) in self.plugins.iter().enumerate() {
            if spec.name.is_some() == spec.path.is_some() {
                return bad(format!(
                    "[[plugin]] #{}: give either name = \"…\" or path = \"….wasm\"",
                    i + 1
                ));
            }
            spec.limits(&self.limits)?;
        }
        Ok(())
    }
}

impl Pipeline {
    /// Checks the lake-table settings of the source and sink.
    pub fn validate_lake(&self) -> Result<(), PipelineError> {
        let bad = |m: &str| Err(PipelineError::Invalid(m.into()));
        let (source, sink) = (&self.source, &self.sink);
        if source.table.is_some() && !source.paths.is_empty() {
            return bad("[source] gives both paths and table: read files or a table, not both");
        }
        if source.version.is_some() && source.table.is_none() {
            return bad("[source] version = … reads a table version: give table = \"…\" too");
        }
        if source.version.is_some() && source.incremental {
            return bad("[source] version and incremental exclude each other: an incremental run reads the versions added since the last run");
        }
        if source.incremental && sink.table.is_none() {
            return bad("[source] incremental = true needs a table sink ([sink] table = \"…\"): the table's commits record what each run read");
        }
        match &sink.table {
            Some(_) => {
                if !sink.path.as_os_str().is_empty() {
                    return bad(
                        "[sink] gives both path and table: write files or a table, not both",
                    );
                }
                if sink.format.is_some() {
                    return bad("[sink] format applies to files; a table's files are Parquet");
                }
                if sink.overwrite {
                    return bad("[sink] overwrite = true is for files; a table sink takes mode = \"overwrite\"");
                }
            }
            None => {
                if sink.path.as_os_str().is_empty() {
                    return bad("[sink] names no output: give path = \"…\" (files) or table = \"…\" (a Delta table)");
                }
                if sink.mode != TableMode::Append || sink.schema != SchemaMode::Strict {
                    return bad("[sink] mode and schema apply to a table sink (table = \"…\")");
                }
            }
        }
        Ok(())
    }
}

impl PluginSpec {
    /// Parameters in the contract's form.
    pub fn params(&self) -> Result<Vec<Param>, PipelineError> {
        self.params
            .iter()
            .map(|(k, v)| {
                Ok(Param {
                    name: k.clone(),
                    value: param_value(k, v)?,
                })
            })
            .collect()
    }

    /// This plugin's limits: the pipeline's, with this plugin's overrides.
    pub fn limits(&self, defaults: &Limits) -> Result<Limits, PipelineError> {
        let Some(overrides) = &self.limits else {
            return Ok(*defaults);
        };
        let mut merged =
            toml::Table::try_from(defaults).map_err(|e| PipelineError::Invalid(e.to_string()))?;
        merged.extend(overrides.clone());
        let limits: Limits = merged
            .try_into()
            .map_err(|e| PipelineError::Invalid(format!("[[plugin]] limits: {e}")))?;
        limits.check().map_err(|source| PipelineError::Limit {
            table: format!("[[plugin]] {} limits", self.label()),
            source,
        })?;
        Ok(limits)
    }

    /// A short label for messages: the name or the path.
    pub fn label(&self) -> String {
        match (&self.name, &self.path) {
            (Some(n), _) => n.clone(),
            (None, Some(p)) => p.display().to_string(),
            (None, None) => "(unnamed)".into(),
        }
    }
}

/// Converts a TOML value to a parameter value (see [`ParamValue::from_toml`]).
pub fn param_value(name: &str, v: &toml::Value) -> Result<ParamValue, PipelineError> {
    ParamValue::from_toml(name, v).map_err(|e| PipelineError::Invalid(e.to_string()))
}

/// Parses `name=value` from the command line. The value is read as TOML (`3`, `2.5`, `true`,
/// `["a", "b"]`, `{ a = "b" }`) and otherwise taken as text, so `where=amount > 3` works
/// without quotes.
pub fn parse_cli_param(arg: &str) -> Result<(String, toml::Value), PipelineError> {
    let (name, raw) = arg
        .split_once('=')
        .ok_or_else(|| PipelineError::Invalid(format!("--param `{arg}`: expected name=value")))?;
    let name = name.trim().to_string();
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    Ok((name, value))
}

/// Directories searched for plugins given by name, in order: the pipeline's directory,
/// `$QUIVER_PLUGIN_PATH` (colon-separated), `plugins/` next to the `quiver` executable's
/// directory (so `target/release/quiver` finds `target/plugins/`), and `./target/plugins`.
pub fn plugin_search_path(base_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![base_dir.to_path_buf()];
    if let Some(p) = std::env::var_os("QUIVER_PLUGIN_PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            dirs.push(dir.join("plugins"));
        }
    }
    dirs.push(PathBuf::from("target/plugins"));
    dirs
}

/// Resolves a plugin spec to a `.wasm` path.
pub fn resolve_plugin(spec: &PluginSpec, base_dir: &Path) -> Result<PathBuf, PipelineError> {
    if let Some(p) = &spec.path {
        return Ok(if p.is_absolute() {
            p.clone()
        } else {
            base_dir.join(p)
        });
    }
    let name = spec.name.as_deref().unwrap_or_default();
    let file = if name.ends_with(".wasm") {
        name.to_string()
    } else {
        format!("{name}.wasm")
    };
    let dirs = plugin_search_path(base_dir);
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .ok_or_else(|| PipelineError::PluginNotFound {
            name: name.to_string(),
            looked: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Range boundaries given by hand (`[partition] boundaries`): all integers, all numbers or all
/// strings.
pub fn boundaries_from_toml(values: &[toml::Value]) -> Result<RangeBoundaries, PipelineError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_pipeline() {
        let p = Pipeline::from_toml(
            r#"
            workers = 3
            [source]
            paths = ["in/*.csv"]
            [partition]
            by = ["user"]
            count = 8
            hash = "murmur3"
            [limits]
            memory-mib = 64
            [[plugin]]
            name = "filter"
            params = { where = "x > 1" }
            [[plugin]]
            path = "scale.wasm"
            params = { columns = ["x"], a = 1, b = 2.5 }
            limits = { timeout-ms = 5 }
            [sink]
            path = "out.parquet"
            "#,
        )
        .unwrap();
        p.validate().unwrap();
        assert_eq!(p.worker_count(), 3);
        let part = p.partition.as_ref().unwrap();
        assert_eq!((part.count, part.hash), (Some(8), HashAlgorithm::Murmur3));
        let l = p.plugins[1].limits(&p.limits).unwrap();
        assert_eq!((l.memory_mib, l.timeout_ms), (64, 5));
        let params = p.plugins[1].params().unwrap();
        assert!(params.contains(&Param {
            name: "columns".into(),
            value: ParamValue::TextList(vec!["x".into()])
        }));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let e = Pipeline::from_toml("[source]\npaths=[\"a\"]\nbogus = 1\n[sink]\npath=\"o\"")
            .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let p = Pipeline::from_toml(
            "[source]\npaths=[\"a\"]\n[[plugin]]\nname=\"x\"\nlimits={ memory = 1 }\n[sink]\npath=\"o\"",
        )
        .unwrap();
        assert!(p.validate().unwrap_err().to_string().contains("memory"));
    }

    #[test]
    fn cli_params_are_toml_or_text() {
        let v = |s| parse_cli_param(s).unwrap().1;
        assert_eq!(v("a=3"), toml::Value::Integer(3));
        assert_eq!(
            v("where=amount > 3"),
            toml::Value::String("amount > 3".into())
        );
        assert_eq!(v("c=[\"x\", \"y\"]").as_array().unwrap().len(), 2);
        assert!(parse_cli_param("novalue").is_err());
    }

    #[test]
    fn grants_resolve_against_the_file_and_follow_deterministic() {
        let mut p = Pipeline::from_toml(
            r#"
            [source]
            paths = ["in.csv"]
            [limits]
            fuel = 1000
            [[plugin]]
            name = "geo-enrich"
            limits = { stack-kib = 2048 }
            [plugin.grants]
            dirs = ["ref-data", { path = "scratch", as = "/tmp", write = true }]
            env = ["TZ"]
            clock = true
            random = "deterministic"
            [[plugin]]
            name = "filter"
            [sink]
            path = "out.parquet"
            "#,
        )
        .unwrap();
        p.base_dir = PathBuf::from("/jobs/a");
        p.validate().unwrap();
        let g = p.grants(&p.plugins[0]);
        assert_eq!(g.dirs[0].path, PathBuf::from("/jobs/a/ref-data"));
        assert_eq!(g.dirs[1].guest_path(), "/tmp");
        assert!(g.dirs[1].write && !g.dirs[0].write);
        assert_eq!(g.env, vec!["TZ".to_string()]);
        assert_eq!(g.clock, quiver_plugin_host::capability::Access::Real);
        assert_eq!(p.grants(&p.plugins[1]), Grants::default());
        p.deterministic = true;
        assert_eq!(
            p.grants(&p.plugins[0]).clock,
            quiver_plugin_host::capability::Access::Deterministic
        );
        let o = p.engine_options().unwrap();
        assert!(o.fuel);
        assert_eq!(o.stack_kib, 2048);
        assert_eq!(o.max_instances as usize, p.worker_count() * 2 + 8);
    }
}
