//! A Delta Lake table in a local directory: its versions, the data files of a version, the
//! files added since a version, writers that add one atomic commit, and files written now and
//! [published](publish) in a commit later.
//!
//! The log, snapshots and commits go through `delta_kernel`. Reading the rows is left to the
//! caller's own Parquet reader: a version is a list of [`DataFile`]s, each with the values of
//! the partition columns (which are not stored in the files, as the protocol wants). Tables
//! that need more than that to read — deletion vectors, column mapping — are refused by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use delta_kernel::engine::arrow_conversion::TryFromKernel;
use delta_kernel::scan::state::ScanFile;
use delta_kernel::table_features::ColumnMappingMode;
use delta_kernel::Snapshot;
use delta_kernel_default_engine::executor::tokio::TokioBackgroundExecutor;
use delta_kernel_default_engine::storage::store_from_url;
use delta_kernel_default_engine::{DefaultEngine, DefaultEngineBuilder};
use url::Url;

pub mod log;
pub mod maintenance;
pub mod publish;
pub mod schema;
mod stats;
mod write;

pub use publish::StagedWriter;
pub use schema::{SchemaDiff, SchemaPolicy};
pub use write::{Commit, CommitSummary, Mode, TableWriter, WriteOptions};

/// What goes into the table's commit info as the writing engine.
const ENGINE_INFO: &str = concat!("quiver/", env!("CARGO_PKG_VERSION"));

/// The directory of a table's log.
pub const LOG_DIR: &str = "_delta_log";

/// Why a table operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The table's directory or one of its files could not be read or written.
    #[error("table {table}: {action}: {source}")]
    Io {
        /// The table's directory.
        table: PathBuf,
        /// What was being done.
        action: String,
        /// The cause.
        source: std::io::Error,
    },
    /// There is no Delta table at the path.
    #[error("{table} is not a Delta table (it has no {LOG_DIR} directory)")]
    NotATable {
        /// The path.
        table: PathBuf,
    },
    /// The Delta library refused or failed.
    #[error("table {table}: {message}")]
    Delta {
        /// The table's directory.
        table: PathBuf,
        /// What it said.
        message: String,
    },
    /// Other writers kept committing first, past the retries.
    #[error("table {table}: other writers committed first {attempts} times in a row; nothing of this commit is visible")]
    Contended {
        /// The table's directory.
        table: PathBuf,
        /// How many times this commit tried.
        attempts: u32,
    },
    /// The rows' columns differ from the table's and the pipeline did not ask to merge them.
    #[error("table {table}: the rows do not match the table's schema: {diff}. Set schema = \"merge\" in [sink] to add new columns")]
    SchemaMismatch {
        /// The table's directory.
        table: PathBuf,
        /// How they differ.
        diff: SchemaDiff,
    },
    /// A difference even a merge cannot make: a column changing type.
    #[error("table {table}: cannot merge schemas: {diff}")]
    SchemaConflict {
        /// The table's directory.
        table: PathBuf,
        /// How they differ.
        diff: SchemaDiff,
    },
    /// A column type no Delta type holds.
    #[error("table {table}: {source}")]
    UnsupportedType {
        /// The table's directory.
        table: PathBuf,
        /// The column and its type.
        source: schema::UnsupportedType,
    },
    /// The writer's partition columns differ from the table's.
    #[error("table {table} is partitioned by [{table_columns}], not by [{asked}]")]
    PartitionColumns {
        /// The table's directory.
        table: PathBuf,
        /// The table's partition columns.
        table_columns: String,
        /// The pipeline's.
        asked: String,
    },
    /// A partition column of a type a partition value cannot carry.
    #[error("table {table}: partition column {column:?} has type {found}, which a partition value cannot hold (use strings, integers, dates or booleans)")]
    PartitionType {
        /// The table's directory.
        table: PathBuf,
        /// The column.
        column: String,
        /// Its type.
        found: arrow::datatypes::DataType,
    },
    /// A partition column missing from the rows written.
    #[error("table {table}: the rows have no partition column {column:?}")]
    MissingPartitionColumn {
        /// The table's directory.
        table: PathBuf,
        /// The column.
        column: String,
    },
    /// The table uses a feature this reader does not implement.
    #[error("table {table}: {feature} is not supported when reading")]
    Unsupported {
        /// The table's directory.
        table: PathBuf,
        /// The feature.
        feature: String,
    },
    /// An incremental read over versions that removed rows: it cannot tell which rows are new.
    #[error("table {table}: version {version} removed data files ({operation}); an incremental read only follows appends. Run with --full-refresh to read the whole table")]
    NotAppendOnly {
        /// The table's directory.
        table: PathBuf,
        /// The version that removed files.
        version: u64,
        /// Its operation, as recorded.
        operation: String,
    },
    /// A data file could not be written.
    #[error("table {table}: writing {file}: {message}")]
    WriteFile {
        /// The table's directory.
        table: PathBuf,
        /// The data file.
        file: PathBuf,
        /// Why.
        message: String,
    },
    /// A data file could not be read.
    #[error("table {table}: reading {file}: {message}")]
    ReadFile {
        /// The table's directory.
        table: PathBuf,
        /// The data file.
        file: PathBuf,
        /// Why.
        message: String,
    },
    /// Another writer removed files that a compaction was rewriting: nothing was committed.
    #[error("table {table}: version {version} no longer holds {missing} of the files this compaction rewrote (another writer removed them); nothing was committed and its new files were deleted")]
    CompactionConflict {
        /// The table's directory.
        table: PathBuf,
        /// The version that lacks them.
        version: u64,
        /// How many of the files it lacks.
        missing: usize,
    },
    /// A vacuum retention under the safe minimum, not forced.
    #[error("table {table}: a vacuum retention of {retention:?} is under the safe minimum of {minimum:?}: files removed by recent commits may still be read by readers of older versions, and the files of a writer still running are named by no commit yet; deleting them would break those reads or lose that commit. Force it (--force) only when nothing else reads or writes the table")]
    RetentionTooShort {
        /// The table's directory.
        table: PathBuf,
        /// The retention asked for.
        retention: std::time::Duration,
        /// The least retention taken without force.
        minimum: std::time::Duration,
    },
}

/// A table version's shape.
#[derive(Debug, Clone)]
pub struct TableState {
    /// The version.
    pub version: u64,
    /// Every column, partition columns included, as Arrow reads them.
    pub schema: SchemaRef,
    /// The partition columns, in order.
    pub partition_columns: Vec<String>,
}

/// One data file of a table version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its rows, when the log records them.
    pub rows: Option<u64>,
    /// The value of each partition column for every row of the file (`None`: null), in the
    /// order of [`TableState::partition_columns`].
    pub partition_values: Vec<(String, Option<String>)>,
}

/// A Delta table in a directory.
#[derive(Clone)]
pub struct Table {
    dir: PathBuf,
    url: Url,
    engine: Arc<DefaultEngine<TokioBackgroundExecutor>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("dir", &self.dir).finish()
    }
}

impl Table {
    /// The table in `dir`, which need not exist yet (a writer creates it); its directory is
    /// made if missing.
    pub fn at(dir: &Path) -> Result<Table, LakeError> {
        std::fs::create_dir_all(dir).map_err(|source| LakeError::Io {
            table: dir.to_path_buf(),
            action: "creating the directory".into(),
            source,
        })?;
        Self::handle(dir)
    }

    /// The existing table in `dir`.
    pub fn open(dir: &Path) -> Result<Table, LakeError> {
        if !dir.join(LOG_DIR).is_dir() {
            return Err(LakeError::NotATable {
                table: dir.to_path_buf(),
            });
        }
        Self::handle(dir)
    }

    fn handle(dir: &Path) -> Result<Table, LakeError> {
        let dir = std::fs::canonicalize(dir).map_err(|source| LakeError::Io {
            table: dir.to_path_buf(),
            action: "resolving the path".into(),
            source,
        })?;
        let url = Url::from_directory_path(&dir).map_err(|()| LakeError::Delta {
            table: dir.clone(),
            message: "the path cannot be a URL".into(),
        })?;
        let store = store_from_url(&url).map_err(|e| LakeError::Delta {
            table: dir.clone(),
            message: e.to_string(),
        })?;
        let engine = Arc::new(DefaultEngineBuilder::new(store).build());
        Ok(Table { dir, url, engine })
    }

    /// The table's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn delta(&self, e: impl std::fmt::Display) -> LakeError {
        LakeError::Delta {
            table: self.dir.clone(),
            message: e.to_string(),
        }
    }

    pub(crate) fn io(&self, action: impl Into<String>, source: std::io::Error) -> LakeError {
        LakeError::Io {
            table: self.dir.clone(),
            action: action.into(),
            source,
        }
    }

    /// Whether the directory holds a Delta table (a `_delta_log` with a commit).
    pub fn exists(&self) -> bool {
        std::fs::read_dir(self.dir.join(LOG_DIR)).is_ok_and(|mut entries| {
            entries.any(|e| {
                e.is_ok_and(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".json") || name.ends_with(".checkpoint.parquet")
                })
            })
        })
    }

    pub(crate) fn snapshot(&self, version: Option<u64>) -> Result<Arc<Snapshot>, LakeError> {
        if !self.exists() {
            return Err(LakeError::NotATable {
                table: self.dir.clone(),
            });
        }
        let mut builder = Snapshot::builder_for(self.url.as_str());
        if let Some(v) = version {
            builder = builder.at_version(v);
        }
        builder
            .build(self.engine.as_ref())
            .map_err(|e| self.delta(e))
    }

    pub(crate) fn state_of(&self, snapshot: &Arc<Snapshot>) -> Result<TableState, LakeError> {
        let schema =
            ArrowSchema::try_from_kernel(snapshot.schema().as_ref()).map_err(|e| self.delta(e))?;
        Ok(TableState {
            version: snapshot.version(),
            schema: Arc::new(schema),
            partition_columns: snapshot
                .table_configuration()
                .metadata()
                .partition_columns()
                .to_vec(),
        })
    }

    /// The latest version's shape, or that of `version`.
    pub fn state(&self, version: Option<u64>) -> Result<TableState, LakeError> {
        self.state_of(&self.snapshot(version)?)
    }

    /// The table's latest version.
    pub fn version(&self) -> Result<u64, LakeError> {
        Ok(self.snapshot(None)?.version())
    }

    /// The last version recorded for transaction id `app` (a writer's own numbering, such as
    /// a streaming job's epoch or a pipeline's run), if any.
    pub fn app_version(&self, app: &str) -> Result<Option<i64>, LakeError> {
        match self.latest()? {
            Some(snapshot) => self.app_version_in(&snapshot, app),
            None => Ok(None),
        }
    }

    /// The latest snapshot, or `None` when there is no table yet.
    pub(crate) fn latest(&self) -> Result<Option<Arc<Snapshot>>, LakeError> {
        match self.exists() {
            true => self.snapshot(None).map(Some),
            false => Ok(None),
        }
    }

    /// [`Table::app_version`] as of `snapshot`.
    pub(crate) fn app_version_in(
        &self,
        snapshot: &Snapshot,
        app: &str,
    ) -> Result<Option<i64>, LakeError> {
        snapshot
            .get_app_id_version(app, self.engine.as_ref())
            .map_err(|e| self.delta(e))
    }

    /// The data files of the latest version, or of `version`, with its shape.
    pub fn files(&self, version: Option<u64>) -> Result<(TableState, Vec<DataFile>), LakeError> {
        let snapshot = self.snapshot(version)?;
        self.check_readable(&snapshot)?;
        let state = self.state_of(&snapshot)?;
        let scan = snapshot
            .clone()
            .scan_builder()
            .build()
            .map_err(|e| self.delta(e))?;
        let mut found: Vec<ScanFile> = Vec::new();
        for metadata in scan
            .scan_metadata(self.engine.as_ref())
            .map_err(|e| self.delta(e))?
        {
            let metadata = metadata.map_err(|e| self.delta(e))?;
            found = metadata
                .visit_scan_files(found, |found: &mut Vec<ScanFile>, file| found.push(file))
                .map_err(|e| self.delta(e))?;
        }
        let mut files = Vec::with_capacity(found.len());
        for file in found {
            if file.dv_info.has_vector() {
                return Err(LakeError::Unsupported {
                    table: self.dir.clone(),
                    feature: "a deletion vector".into(),
                });
            }
            files.push(DataFile {
                path: self.data_path(&file.path)?,
                size: file.size.max(0) as u64,
                rows: file.stats.map(|s| s.num_records),
                partition_values: ordered_values(&state.partition_columns, &file.partition_values),
            });
        }
        // The log's order is not the order rows were written; the path order is stable.
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((state, files))
    }

    /// The data files added by the commits after `base` up to the latest version (or
    /// `target`), in commit order: what an incremental read of an append-only table reads. A
    /// commit in the range that removed data (an overwrite, a delete) is refused; files that
    /// a compaction rewrote are not new rows and are skipped, and files added in the range
    /// are read even if a later compaction removed them (they stay on disk until vacuumed).
    pub fn added_since(
        &self,
        base: u64,
        target: Option<u64>,
    ) -> Result<(TableState, Vec<DataFile>), LakeError> {
        let snapshot = self.snapshot(target)?;
        self.check_readable(&snapshot)?;
        let state = self.state_of(&snapshot)?;
        let mut files = Vec::new();
        for version in base + 1..=state.version {
            let commit = log::read_commit(self, version)?;
            if commit.removes.iter().any(|r| r.data_change) {
                return Err(LakeError::NotAppendOnly {
                    table: self.dir.clone(),
                    version,
                    operation: commit.operation.clone().unwrap_or_else(|| "unknown".into()),
                });
            }
            for add in commit.adds.iter().filter(|a| a.data_change) {
                files.push(DataFile {
                    path: self.data_path(&add.path)?,
                    size: add.size,
                    rows: add.rows,
                    partition_values: state
                        .partition_columns
                        .iter()
                        .map(|c| (c.clone(), add.partition_values.get(c).cloned().flatten()))
                        .collect(),
                });
            }
        }
        Ok((state, files))
    }

    /// Refuses what the caller's plain Parquet reading cannot honour.
    fn check_readable(&self, snapshot: &Snapshot) -> Result<(), LakeError> {
        let mode = snapshot.table_properties().column_mapping_mode;
        if mode.is_some_and(|m| m != ColumnMappingMode::None) {
            return Err(LakeError::Unsupported {
                table: self.dir.clone(),
                feature: "column mapping".into(),
            });
        }
        Ok(())
    }

    /// A data file's path in the log (relative to the table, URL-encoded, or an absolute URL)
    /// as a local path.
    fn data_path(&self, path: &str) -> Result<PathBuf, LakeError> {
        let url = self.url.join(path).map_err(|e| self.delta(e))?;
        url.to_file_path()
            .map_err(|()| self.delta(format!("data file {path} is not a local file")))
    }

    /// A writer of one commit of rows with `schema` (see [`TableWriter`]).
    pub fn writer(
        &self,
        schema: &ArrowSchema,
        options: WriteOptions,
    ) -> Result<TableWriter, LakeError> {
        TableWriter::new(self.clone(), schema, options)
    }
}

/// Partition values in the order of the table's partition columns.
fn ordered_values(
    columns: &[String],
    values: &HashMap<String, String>,
) -> Vec<(String, Option<String>)> {
    columns
        .iter()
        .map(|c| (c.clone(), values.get(c).cloned()))
        .collect()
}

#[cfg(test)]
mod tests;
