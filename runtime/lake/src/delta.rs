//! A Delta Lake table in a local directory: created, written as one atomic commit per call
//! (append or overwrite, with an optional transaction id), and read back.
//!
//! Commits go through `delta_kernel`: the log file of a new version is created only if absent,
//! so a commit is all or nothing and two writers of one version cannot both win; a reader sees
//! a version whole or not at all. Data files are written with the workspace's parquet writer
//! under `<column>=<value>/` directories for partition columns, which are not stored in the
//! files (as the Delta protocol wants).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType as ArrowType, Schema as ArrowSchema};
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::expressions::Scalar;
use delta_kernel::schema::StructType;
use delta_kernel::transaction::create_table::create_table;
use delta_kernel::transaction::data_layout::DataLayout;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation};
use delta_kernel::{Engine, FileMeta, Snapshot};
use delta_kernel_default_engine::executor::tokio::TokioBackgroundExecutor;
use delta_kernel_default_engine::parquet::DataFileMetadata;
use delta_kernel_default_engine::storage::store_from_url;
use delta_kernel_default_engine::{build_add_file_metadata, DefaultEngine, DefaultEngineBuilder};
use url::Url;

/// What goes into the table's commit info as the writing engine.
const ENGINE_INFO: &str = concat!("quiver/", env!("CARGO_PKG_VERSION"));

/// Why a table operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The table's directory could not be made or reached.
    #[error("table {table}: {source}")]
    Io {
        /// The table's directory.
        table: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The Delta library refused or failed.
    #[error("table {table}: {message}")]
    Delta {
        /// The table's directory.
        table: PathBuf,
        /// What it said.
        message: String,
    },
    /// Another writer committed the same version first; nothing of this commit is visible.
    #[error("table {table}: another writer committed version {version} first; nothing of this run was committed")]
    Conflict {
        /// The table's directory.
        table: PathBuf,
        /// The version both wanted.
        version: u64,
    },
    /// A partition column of a type partition values cannot carry.
    #[error("table {table}: partition column {column:?} has type {found}, which a partition value cannot hold (use strings, integers, dates or booleans)")]
    PartitionType {
        /// The table's directory.
        table: PathBuf,
        /// The column.
        column: String,
        /// Its type.
        found: ArrowType,
    },
    /// A partition column missing from the rows written.
    #[error("table {table}: the rows have no partition column {column:?}")]
    MissingPartitionColumn {
        /// The table's directory.
        table: PathBuf,
        /// The column.
        column: String,
    },
}

/// A partition's values, by column, as the Delta library takes them.
type PartitionValues = HashMap<String, Scalar>;

/// How a write treats the rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Add the rows.
    Append,
    /// Replace every row (the old files are removed from the table in the same commit; they
    /// stay on disk until vacuumed, so older versions stay readable).
    Overwrite,
}

/// A Delta table in a directory.
pub struct Table {
    dir: PathBuf,
    url: Url,
    engine: Arc<DefaultEngine<TokioBackgroundExecutor>>,
}

impl Table {
    /// The table in `dir` (created as a directory if missing; the table itself only by
    /// [`Table::create`]).
    pub fn at(dir: &Path) -> Result<Table, LakeError> {
        let io = |source| LakeError::Io {
            table: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let dir = std::fs::canonicalize(dir).map_err(io)?;
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

    fn delta(&self, e: impl std::fmt::Display) -> LakeError {
        LakeError::Delta {
            table: self.dir.clone(),
            message: e.to_string(),
        }
    }

    /// Whether the directory holds a Delta table (a `_delta_log`).
    pub fn exists(&self) -> bool {
        self.dir.join("_delta_log").is_dir()
    }

    /// Creates the table with `schema`, partitioned by `partition_by` (version 0).
    pub fn create(&self, schema: &ArrowSchema, partition_by: &[String]) -> Result<u64, LakeError> {
        let schema = Arc::new(StructType::try_from_arrow(schema).map_err(|e| self.delta(e))?);
        let mut builder = create_table(self.url.as_str(), schema, ENGINE_INFO, true);
        if !partition_by.is_empty() {
            builder = builder.with_data_layout(DataLayout::partitioned(partition_by.iter()));
        }
        let txn = builder
            .build(self.engine.as_ref(), Box::new(FileSystemCommitter::new()))
            .map_err(|e| self.delta(e))?;
        self.finish(
            txn.commit(self.engine.as_ref())
                .map_err(|e| self.delta(e))?,
        )
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, LakeError> {
        Snapshot::builder_for(self.url.as_str())
            .build(self.engine.as_ref())
            .map_err(|e| self.delta(e))
    }

    /// The table's latest version.
    pub fn version(&self) -> Result<u64, LakeError> {
        Ok(self.snapshot()?.version())
    }

    /// The last version recorded for transaction id `app` (a writer's own numbering, such as
    /// a streaming job's epoch), if any.
    pub fn app_version(&self, app: &str) -> Result<Option<i64>, LakeError> {
        self.snapshot()?
            .get_app_id_version(app, self.engine.as_ref())
            .map_err(|e| self.delta(e))
    }

    /// Writes `batches` as one commit, and with `txn` records `(app, version)` in it; returns
    /// the new table version. Partition columns are taken from the rows.
    pub fn write(
        &self,
        batches: &[RecordBatch],
        mode: Mode,
        txn: Option<(&str, i64)>,
    ) -> Result<u64, LakeError> {
        let snapshot = self.snapshot()?;
        let partition_by: Vec<String> = snapshot
            .table_configuration()
            .metadata()
            .partition_columns()
            .to_vec();
        let mut builder =
            snapshot
                .clone()
                .update_table(UpdateTableOperation::Write, ENGINE_INFO, true);
        if let Some((app, version)) = txn {
            builder = builder.with_transaction_id(app, version);
        }
        let mut commit = builder
            .build(self.engine.as_ref(), Box::new(FileSystemCommitter::new()))
            .map_err(|e| self.delta(e))?;
        if mode == Mode::Overwrite {
            let scan = snapshot.scan_builder().build().map_err(|e| self.delta(e))?;
            for files in scan
                .scan_metadata(self.engine.as_ref())
                .map_err(|e| self.delta(e))?
            {
                commit.remove_files(files.map_err(|e| self.delta(e))?.scan_files);
            }
        }
        let state = commit.write_state().map_err(|e| self.delta(e))?;
        for batch in batches {
            for (values, rows) in self.split(batch, &partition_by)? {
                let context = state
                    .write_context_builder()
                    .with_partition_values(values)
                    .build()
                    .map_err(|e| self.delta(e))?;
                let data = without(&rows, &partition_by);
                let stats = delta_kernel_default_engine::stats::collect_stats(
                    &data,
                    context.stats_columns(),
                    context.physical_data_schema(),
                )
                .map_err(|e| self.delta(e))?;
                let file = context
                    .write_dir()
                    .join(&format!("part-{}.parquet", uuid::Uuid::new_v4()))
                    .map_err(|e| self.delta(e))?;
                let meta = self.write_file(&file, &data)?;
                let add = build_add_file_metadata(DataFileMetadata::new(meta, stats), &context)
                    .map_err(|e| self.delta(e))?;
                commit.add_files(add);
            }
        }
        self.finish(
            commit
                .commit(self.engine.as_ref())
                .map_err(|e| self.delta(e))?,
        )
    }

    /// Writes `data` as a Parquet file at `file`, synced: the commit that names it comes after.
    fn write_file(&self, file: &Url, data: &RecordBatch) -> Result<FileMeta, LakeError> {
        let path = file
            .to_file_path()
            .map_err(|()| self.delta(format!("{file} is not a local file")))?;
        let io = |source| LakeError::Io {
            table: self.dir.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let out = std::fs::File::create(&path).map_err(io)?;
        let mut writer = parquet::arrow::ArrowWriter::try_new(out, data.schema(), None)
            .map_err(|e| self.delta(e))?;
        writer.write(data).map_err(|e| self.delta(e))?;
        let out = writer.into_inner().map_err(|e| self.delta(e))?;
        // Durability point of a data file: before the commit that makes it part of the table.
        out.sync_all().map_err(io)?;
        let meta = out.metadata().map_err(io)?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        Ok(FileMeta::new(file.clone(), modified, meta.len()))
    }

    fn finish<S>(&self, result: CommitResult<S>) -> Result<u64, LakeError> {
        match result {
            CommitResult::Committed(c) => Ok(c.commit_version()),
            CommitResult::Conflicted(c) => Err(LakeError::Conflict {
                table: self.dir.clone(),
                version: c.conflict_version(),
            }),
            CommitResult::Retryable(r) => Err(self.delta(r.error)),
        }
    }

    /// Every row of the latest version, partition columns included.
    pub fn read(&self) -> Result<Vec<RecordBatch>, LakeError> {
        let scan = self
            .snapshot()?
            .scan_builder()
            .build()
            .map_err(|e| self.delta(e))?;
        let engine: Arc<dyn Engine> = self.engine.clone();
        let mut out = Vec::new();
        for data in scan.execute(engine).map_err(|e| self.delta(e))? {
            let data = ArrowEngineData::try_from_engine_data(data.map_err(|e| self.delta(e))?)
                .map_err(|e| self.delta(e))?;
            out.push(data.record_batch().clone());
        }
        Ok(out)
    }

    /// The rows of `batch` grouped by their partition values.
    fn split(
        &self,
        batch: &RecordBatch,
        partition_by: &[String],
    ) -> Result<Vec<(PartitionValues, RecordBatch)>, LakeError> {
        if partition_by.is_empty() {
            return Ok(vec![(HashMap::new(), batch.clone())]);
        }
        let mut columns = Vec::new();
        for name in partition_by {
            let column =
                batch
                    .column_by_name(name)
                    .ok_or_else(|| LakeError::MissingPartitionColumn {
                        table: self.dir.clone(),
                        column: name.clone(),
                    })?;
            columns.push((name, column));
        }
        // Rows by their partition values (as text, for the order), in row order.
        let mut groups: BTreeMap<Vec<String>, (PartitionValues, Vec<u32>)> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            let mut key = Vec::with_capacity(columns.len());
            let mut values = HashMap::new();
            for (name, column) in &columns {
                let value = self.scalar(name, column.as_ref(), row)?;
                key.push(value.to_string());
                values.insert((*name).clone(), value);
            }
            groups
                .entry(key)
                .or_insert_with(|| (values, Vec::new()))
                .1
                .push(row as u32);
        }
        groups
            .into_values()
            .map(|(values, rows)| {
                take_record_batch(batch, &UInt32Array::from(rows))
                    .map(|b| (values, b))
                    .map_err(|e| self.delta(e))
            })
            .collect()
    }

    fn scalar(&self, name: &str, column: &dyn Array, row: usize) -> Result<Scalar, LakeError> {
        use arrow::array::AsArray;
        use arrow::datatypes::{Date32Type, Int32Type, Int64Type};
        use delta_kernel::schema::DataType;
        let null = |t: DataType| Scalar::Null(t);
        let value = match column.data_type() {
            ArrowType::Utf8 if column.is_null(row) => null(DataType::STRING),
            ArrowType::Utf8 => Scalar::String(column.as_string::<i32>().value(row).to_string()),
            ArrowType::Int64 if column.is_null(row) => null(DataType::LONG),
            ArrowType::Int64 => Scalar::Long(column.as_primitive::<Int64Type>().value(row)),
            ArrowType::Int32 if column.is_null(row) => null(DataType::INTEGER),
            ArrowType::Int32 => Scalar::Integer(column.as_primitive::<Int32Type>().value(row)),
            ArrowType::Date32 if column.is_null(row) => null(DataType::DATE),
            ArrowType::Date32 => Scalar::Date(column.as_primitive::<Date32Type>().value(row)),
            ArrowType::Boolean if column.is_null(row) => null(DataType::BOOLEAN),
            ArrowType::Boolean => Scalar::Boolean(column.as_boolean().value(row)),
            other => {
                return Err(LakeError::PartitionType {
                    table: self.dir.clone(),
                    column: name.to_string(),
                    found: other.clone(),
                })
            }
        };
        Ok(value)
    }
}

/// `batch` without the columns `drop`.
fn without(batch: &RecordBatch, drop: &[String]) -> RecordBatch {
    let keep: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !drop.contains(f.name()))
        .map(|(i, _)| i)
        .collect();
    batch
        .project(&keep)
        .expect("indexes of the batch's own columns")
}

#[cfg(test)]
mod tests;
