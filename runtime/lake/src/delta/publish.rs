//! Data files written now and committed later, for a writer whose own protocol decides when
//! (a streaming job's checkpoints): a [`StagedWriter`] writes rows into files of the table's
//! directory under names the caller chooses, and [`Table::publish`] commits a list of such
//! files as one version carrying a transaction id — or nothing, if the table already records
//! that transaction, so that a publish redone after a crash never adds the files twice.
//!
//! Between the two the caller keeps only the files' names (in its own durable record): a
//! publish reads each file back for the statistics its add action carries, and takes its
//! partition values from its directories. That holds after a crash too, when nothing else is
//! left of the writer. Files no publish ever names are the caller's to delete. Every
//! [`CHECKPOINT_INTERVAL`] versions a publish also writes a Delta checkpoint of the log.

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::Arc;

use arrow::array::{RecordBatch, StructArray};
use arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::expressions::Scalar;
use delta_kernel::schema::{DataType as KernelType, StructType};
use delta_kernel::Snapshot;
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use delta_kernel_default_engine::stats::FileStatsAccumulator;
use delta_kernel_default_engine::storage::store_from_url;
use delta_kernel_default_engine::DefaultEngineBuilder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::schema;
use super::write::{already_committed, modified_millis, unescape, WrittenFile, MAX_ATTEMPTS};
use super::{
    Commit, CommitSummary, LakeError, Mode, Table, TableState, TableWriter, WriteOptions, LOG_DIR,
};

/// Every this many versions, a publish also writes a Delta checkpoint: a stream commits every
/// epoch, and without checkpoints each snapshot (a publish takes a few) replays the whole log,
/// slower and slower.
const CHECKPOINT_INTERVAL: u64 = 100;

/// Writes rows into data files of a table that no version names yet, under names the caller
/// chooses (see [`StagedWriter::begin`]), to be committed later by [`Table::publish`]. Files
/// are never deleted by the writer, not even when it is dropped: they are the caller's.
pub struct StagedWriter {
    writer: TableWriter,
}

impl std::fmt::Debug for StagedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedWriter")
            .field("writer", &self.writer)
            .finish()
    }
}

impl StagedWriter {
    /// Names the files opened from now on `<stem>-<n>.parquet`, `n` counting from 0 (`0000`,
    /// `0001`, …), in the partition directories of the rows. Call it after
    /// [`finish`](Self::finish), so that no file is open. Until it is called, the stem is
    /// `part`.
    pub fn begin(&mut self, stem: &str) {
        self.writer.stage_as(stem);
    }

    /// Writes rows (conformed to the table's columns, split by its partition columns).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        self.writer.write(batch)
    }

    /// The table's columns as this writer writes them.
    pub fn schema(&self) -> SchemaRef {
        self.writer.schema()
    }

    /// Closes every file, synced to disk, and returns their paths relative to the table's
    /// directory, for [`Table::publish`]. The writer goes on with new files.
    pub fn finish(&mut self) -> Result<Vec<String>, LakeError> {
        self.writer.take_staged()
    }
}

impl Table {
    /// A [`StagedWriter`] of rows with `rows`' columns. The table is made ready for its files
    /// now, each change in a commit of its own with no files: created if missing (with
    /// `options.partition_by`), or given the new columns under [`SchemaPolicy::Merge`]
    /// (a difference is refused under `Strict`, as for a [`TableWriter`]). A publish then only
    /// adds files. The files are always appended (`options.mode` is not used).
    ///
    /// [`SchemaPolicy::Merge`]: super::SchemaPolicy::Merge
    pub fn staged_writer(
        &self,
        rows: &ArrowSchema,
        options: WriteOptions,
    ) -> Result<StagedWriter, LakeError> {
        let options = WriteOptions {
            mode: Mode::Append,
            ..options
        };
        for _ in 0..MAX_ATTEMPTS {
            let existed = self.exists();
            let mut writer = TableWriter::new(self.clone(), rows, options.clone())?;
            if writer.fits_table() {
                writer.stage_as("part");
                return Ok(StagedWriter { writer });
            }
            match writer.commit_schema() {
                // Made, or another writer committed first: look again.
                Ok(_) => continue,
                // The Delta library refuses to create a table another writer just created.
                Err(_) if !existed && self.exists() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(LakeError::Contended {
            table: self.dir().to_path_buf(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Commits `files` — data files in the table's directory, written by a [`StagedWriter`]
    /// (paths relative to the directory, as [`StagedWriter::finish`] returns them) — as one
    /// new version, appended, with `commit`'s transaction id and parameters. If the table
    /// already records that transaction id at that version or later, nothing is committed and
    /// the files are not even read (they may be compacted and vacuumed since): a publish redone
    /// after a crash is a no-op. The table must exist (a staged writer creates it).
    ///
    /// The files are read back for their statistics; every column of a file must be one of
    /// the table's, of the same type.
    pub fn publish(&self, files: &[String], commit: Commit) -> Result<CommitSummary, LakeError> {
        let snapshot = self.snapshot(None)?;
        if let Some(done) = already_committed(self, &snapshot, &commit)? {
            return Ok(done);
        }
        let state = self.state_of(&snapshot)?;
        let kernel =
            StructType::try_from_arrow(state.schema.as_ref()).map_err(|e| self.delta(e))?;
        let written = files
            .iter()
            .map(|f| self.read_back(&state, &kernel, f))
            .collect::<Result<Vec<_>, _>>()?;
        let done = TableWriter::published(self.clone(), state, written)?.commit(commit)?;
        if !done.already_committed && done.version % CHECKPOINT_INTERVAL == 0 {
            // Best effort: the commit files stay, so without the checkpoint only reading is
            // slower.
            if let Err(e) = self.checkpoint(done.version) {
                tracing::warn!(table = %self.dir().display(), version = done.version, error = %e, "cannot write a checkpoint of the log");
            }
        }
        Ok(done)
    }

    /// Writes a Delta checkpoint of `version`: the table's state in one Parquet file of the
    /// log, from which readers replay only the commits after it.
    pub(crate) fn checkpoint(&self, version: u64) -> Result<(), LakeError> {
        // The checkpoint writer replays the log from inside its own write: on the one
        // background thread of the table's engine that waits for itself, so it gets an engine
        // of its own with two threads for the moment it takes.
        let executor = TokioMultiThreadExecutor::new_owned_runtime(Some(2), None)
            .map_err(|e| self.delta(e))?;
        let store = store_from_url(&self.url).map_err(|e| self.delta(e))?;
        let engine = DefaultEngineBuilder::new(store)
            .with_task_executor(Arc::new(executor))
            .build();
        Snapshot::builder_for(self.url.as_str())
            .at_version(version)
            .build(&engine)
            .and_then(|snapshot| snapshot.checkpoint(&engine, None))
            .map_err(|e| self.delta(e))?;
        // The Delta library does not sync what it writes: a checkpoint torn by a power loss
        // would be taken for the table's state, so it is synced here, as a commit is.
        let log = self.dir().join(LOG_DIR);
        let prefix = format!("{version:020}.checkpoint");
        let entries = std::fs::read_dir(&log).map_err(|e| self.io("listing the log", e))?;
        for entry in entries {
            let name = entry
                .map_err(|e| self.io("listing the log", e))?
                .file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) || name == "_last_checkpoint" {
                let path = log.join(name.as_ref());
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| self.io(format!("syncing {}", path.display()), e))?;
            }
        }
        quiver_durable::sync_dir(&log).map_err(|e| self.io("syncing the log directory", e))
    }

    /// A staged file as its commit needs it: size, time, statistics and partition values.
    fn read_back(
        &self,
        state: &TableState,
        kernel: &StructType,
        relative: &str,
    ) -> Result<WrittenFile, LakeError> {
        let path = self.dir().join(relative);
        let unreadable = |message: String| LakeError::ReadFile {
            table: self.dir().to_path_buf(),
            file: path.clone(),
            message,
        };
        let values = partition_values(state, kernel, Path::new(relative)).map_err(unreadable)?;
        let file = std::fs::File::open(&path).map_err(|e| unreadable(e.to_string()))?;
        let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| unreadable(e.to_string()))?;
        let file_schema = reader.schema().clone();
        // Any file of a staged writer has the table's data columns; fewer would read as nulls,
        // but one the table lacks, or of another type, would not read at all.
        let diff = schema::diff(&state.schema, &file_schema);
        if !diff.extra.is_empty() || !diff.changed.is_empty() {
            return Err(LakeError::SchemaMismatch {
                table: self.dir().to_path_buf(),
                diff,
            });
        }
        let mut stats = stats_accumulator(self, &file_schema)?;
        let mut rows = 0;
        for batch in reader.build().map_err(|e| unreadable(e.to_string()))? {
            let batch = batch.map_err(|e| unreadable(e.to_string()))?;
            stats.merge(&batch).map_err(|e| self.delta(e))?;
            rows += batch.num_rows() as u64;
        }
        Ok(WrittenFile {
            stats: Some(finish_stats(self, &path, stats)?),
            path,
            size: meta.len(),
            modified: modified_millis(&meta),
            values,
            rows,
        })
    }
}

/// The partition values of a file from its directories (`<column>=<value>/…`, as a writer
/// lays them out), typed as the table's columns.
fn partition_values(
    state: &TableState,
    kernel: &StructType,
    relative: &Path,
) -> Result<HashMap<String, Scalar>, String> {
    let dirs: Vec<&str> = relative
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .map(|c| match c {
            Component::Normal(s) => s.to_str().unwrap_or(""),
            _ => "",
        })
        .collect();
    if dirs.len() != state.partition_columns.len() {
        return Err(format!(
            "its directories do not name the table's partition columns [{}]",
            state.partition_columns.join(", ")
        ));
    }
    let mut values = HashMap::new();
    for (dir, column) in dirs.iter().zip(&state.partition_columns) {
        let parsed = dir
            .split_once('=')
            .and_then(|(c, v)| Some((unescape(c)?, v)))
            .filter(|(c, _)| c == column);
        let Some((_, text)) = parsed else {
            return Err(format!(
                "directory {dir:?} is not one of partition column {column:?}"
            ));
        };
        let Some(KernelType::Primitive(t)) = kernel.field(column).map(|f| f.data_type()) else {
            return Err(format!("partition column {column:?} is not a plain value"));
        };
        let value = if text == quiver_data::io::HIVE_DEFAULT_PARTITION {
            Scalar::Null(KernelType::Primitive(t.clone()))
        } else {
            let text = unescape(text).ok_or_else(|| format!("directory {dir:?} is misencoded"))?;
            t.parse_scalar(&text).map_err(|e| e.to_string())?
        };
        values.insert(column.clone(), value);
    }
    Ok(values)
}

/// Statistics of a staged data file with `data_schema` (every column), from its rows read
/// back.
fn stats_accumulator(
    table: &Table,
    data_schema: &ArrowSchema,
) -> Result<FileStatsAccumulator, LakeError> {
    let physical = StructType::try_from_arrow(data_schema).map_err(|e| table.delta(e))?;
    let columns: Vec<_> = physical
        .fields()
        .map(|f| delta_kernel::expressions::ColumnName::new([f.name().clone()]))
        .collect();
    Ok(FileStatsAccumulator::new(&columns, &physical))
}

/// The statistics of the file at `path`, as its add action carries them.
fn finish_stats(
    table: &Table,
    path: &std::path::Path,
    stats: FileStatsAccumulator,
) -> Result<StructArray, LakeError> {
    stats
        .finish()
        .map_err(|e| table.delta(e))?
        .ok_or_else(|| table.delta(format!("{}: no statistics", path.display())))
}

#[cfg(test)]
mod tests;
