//! Writing rows into a table as one commit: data files are written as rows arrive (under
//! `<column>=<value>/` directories for partition columns), and the commit that names them all
//! is made at the end. Until then they are files no version refers to, which readers never
//! see; a writer that fails or is killed leaves nothing visible (vacuum removes the files).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StructArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType as ArrowType, Field, Schema as ArrowSchema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::expressions::Scalar;
use delta_kernel::schema::{StructField, StructType};
use delta_kernel::transaction::create_table::create_table;
use delta_kernel::transaction::data_layout::DataLayout;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation};
use delta_kernel::{FileMeta, Snapshot};
use delta_kernel_default_engine::build_add_file_metadata;
use delta_kernel_default_engine::parquet::DataFileMetadata;
use quiver_data::io::FileWriter;
use quiver_data::io::Format;

use super::schema::{self, SchemaPolicy};
use super::{LakeError, Table, TableState, ENGINE_INFO, LOG_DIR};

/// How a write treats the rows already in the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Add the rows (the default).
    #[default]
    Append,
    /// Replace every row (the old files are removed from the table in the same commit; they
    /// stay on disk until vacuumed, so older versions stay readable).
    Overwrite,
}

/// How a [`TableWriter`] writes.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Append or overwrite.
    pub mode: Mode,
    /// Partition columns for a table this write creates; for an existing table they must be
    /// the table's, or empty.
    pub partition_by: Vec<String>,
    /// Whether differing columns are refused or merged.
    pub schema: SchemaPolicy,
    /// A data file is closed once its rows take this many bytes in memory.
    pub target_file_bytes: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            mode: Mode::Append,
            partition_by: Vec::new(),
            schema: SchemaPolicy::Strict,
            target_file_bytes: 256 << 20,
        }
    }
}

/// What a commit records besides the files.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// A transaction id (application id, version) recorded with the commit. If the table
    /// already holds this version (or a later one) for the application, nothing is committed:
    /// a retried commit cannot land twice.
    pub transaction: Option<(String, i64)>,
    /// Operation parameters for the commit info (who made it: pipeline, stage, run).
    pub parameters: Vec<(String, String)>,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// The table's version after it.
    pub version: u64,
    /// Data files it added.
    pub files: usize,
    /// Rows it added.
    pub rows: u64,
    /// Bytes of the data files.
    pub bytes: u64,
    /// The transaction id was already recorded: nothing was committed.
    pub already_committed: bool,
}

/// Commits that lose the race to another writer are made again on the newer version, this
/// many times at most.
pub(super) const MAX_ATTEMPTS: u32 = 16;

/// At most this many data files are open at once; past it all are closed.
const MAX_OPEN_FILES: usize = 64;

/// A file being written.
struct OpenFile {
    path: PathBuf,
    writer: FileWriter,
    /// The columns written to the file.
    schema: SchemaRef,
    /// A staged file: its statistics are taken when it is published.
    staged: bool,
    values: HashMap<String, Scalar>,
    rows: u64,
    bytes: usize,
}

/// A closed file waiting for the commit.
pub(super) struct WrittenFile {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) modified: i64,
    /// `None` for a staged file, which this writer never commits.
    pub(super) stats: Option<StructArray>,
    pub(super) values: HashMap<String, Scalar>,
    pub(super) rows: u64,
}

/// Whose the data files of a writer are.
#[derive(Debug)]
pub(super) enum Files {
    /// The writer's own: named at random and deleted unless its commit names them (a batch
    /// run).
    Own,
    /// The caller's: named `<stem>-<n>.parquet`, kept whatever happens, and committed later
    /// by [`Table::publish`](super::Table::publish).
    Staged {
        /// The names' start.
        stem: String,
        /// The next file's number under this stem.
        next: u32,
    },
    /// Written before and read back to be committed: kept whatever happens.
    Published,
}

/// Writes rows into a table as one commit (see the module's documentation). Dropped without
/// [`TableWriter::commit`], it removes the files it wrote.
pub struct TableWriter {
    table: Table,
    options: WriteOptions,
    /// Every column of the table as written (existing ones, then merged ones).
    schema: SchemaRef,
    /// The columns stored in the data files: the others are partition columns.
    data_columns: Vec<usize>,
    partition_by: Vec<String>,
    /// Columns a merge adds.
    added: Vec<Field>,
    /// The table's schema when the writer started (`None`: it creates the table).
    base: Option<SchemaRef>,
    open: BTreeMap<Vec<Option<String>>, OpenFile>,
    written: Vec<WrittenFile>,
    settled: bool,
    files: Files,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("table", &self.table)
            .field("written", &self.written.len())
            .finish_non_exhaustive()
    }
}

impl TableWriter {
    pub(super) fn new(
        table: Table,
        rows: &ArrowSchema,
        options: WriteOptions,
    ) -> Result<Self, LakeError> {
        let state = match table.exists() {
            true => Some(table.state(None)?),
            false => None,
        };
        Self::on(table, state, rows, options)
    }

    /// A writer on the table's latest version, whose shape is `state` (`None`: no table yet).
    fn on(
        table: Table,
        state: Option<TableState>,
        rows: &ArrowSchema,
        options: WriteOptions,
    ) -> Result<Self, LakeError> {
        let stored = schema::stored_schema(rows).map_err(|source| LakeError::UnsupportedType {
            table: table.dir().to_path_buf(),
            source,
        })?;
        let (schema, partition_by, added, base) = if let Some(state) = state {
            if !options.partition_by.is_empty() && options.partition_by != state.partition_columns {
                return Err(LakeError::PartitionColumns {
                    table: table.dir().to_path_buf(),
                    table_columns: state.partition_columns.join(", "),
                    asked: options.partition_by.join(", "),
                });
            }
            let diff = schema::diff(&state.schema, &stored);
            let added = match options.schema {
                _ if diff.is_empty() => Vec::new(),
                SchemaPolicy::Strict => {
                    return Err(LakeError::SchemaMismatch {
                        table: table.dir().to_path_buf(),
                        diff,
                    })
                }
                SchemaPolicy::Merge if !diff.changed.is_empty() => {
                    return Err(LakeError::SchemaConflict {
                        table: table.dir().to_path_buf(),
                        diff,
                    })
                }
                SchemaPolicy::Merge => diff.extra.clone(),
            };
            (
                schema::merged(&state.schema, &added),
                state.partition_columns,
                added,
                Some(state.schema),
            )
        } else {
            (
                Arc::new(stored),
                options.partition_by.clone(),
                Vec::new(),
                None,
            )
        };
        for column in &partition_by {
            let field =
                schema
                    .field_with_name(column)
                    .map_err(|_| LakeError::MissingPartitionColumn {
                        table: table.dir().to_path_buf(),
                        column: column.clone(),
                    })?;
            check_partition_type(&table, column, field.data_type())?;
        }
        let data_columns = (0..schema.fields().len())
            .filter(|&i| !partition_by.contains(schema.field(i).name()))
            .collect();
        Ok(TableWriter {
            table,
            options,
            schema,
            data_columns,
            partition_by,
            added,
            base,
            open: BTreeMap::new(),
            written: Vec::new(),
            settled: false,
            files: Files::Own,
        })
    }

    /// The table's directory.
    pub fn table_dir(&self) -> &std::path::Path {
        self.table.dir()
    }

    /// The table's columns as this writer writes them (merged columns included).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Writes rows (they become visible only with the commit).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = schema::conform(batch, &self.schema).map_err(|e| self.table.delta(e))?;
        for (key, values, rows) in self.split(&batch)? {
            let data = rows
                .project(&self.data_columns)
                .map_err(|e| self.table.delta(e))?;
            if !self.open.contains_key(&key) {
                if self.open.len() >= MAX_OPEN_FILES {
                    self.close_all()?;
                }
                let file = self.open_file(values)?;
                self.open.insert(key.clone(), file);
            }
            let file = self.open.get_mut(&key).expect("opened above");
            file.writer
                .write(&data)
                .map_err(|message| LakeError::WriteFile {
                    table: self.table.dir().to_path_buf(),
                    file: file.path.clone(),
                    message,
                })?;
            file.rows += data.num_rows() as u64;
            file.bytes += data.get_array_memory_size();
            if file.bytes >= self.options.target_file_bytes {
                let file = self.open.remove(&key).expect("present");
                self.close(file)?;
            }
        }
        Ok(())
    }

    /// The directory the table's files with `values` go to, as the Delta library lays it out.
    fn open_file(&mut self, values: HashMap<String, Scalar>) -> Result<OpenFile, LakeError> {
        let t = &self.table;
        let dir = partition_dir(&self.partition_by, &values);
        let name = match &mut self.files {
            Files::Staged { stem, next } => {
                *next += 1;
                format!("{stem}-{:04}.parquet", *next - 1)
            }
            Files::Own | Files::Published => {
                format!("part-{}.snappy.parquet", uuid::Uuid::new_v4())
            }
        };
        let path = t.dir().join(dir).join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| t.io("creating a partition directory", e))?;
        }
        let file = std::fs::File::create(&path)
            .map_err(|e| t.io(format!("creating {}", path.display()), e))?;
        let data_schema = Arc::new(
            self.schema
                .project(&self.data_columns)
                .map_err(|e| t.delta(e))?,
        );
        let writer = FileWriter::new(file, Format::Parquet, &data_schema).map_err(|message| {
            LakeError::WriteFile {
                table: t.dir().to_path_buf(),
                file: path.clone(),
                message,
            }
        })?;
        Ok(OpenFile {
            path,
            writer,
            schema: data_schema,
            staged: matches!(self.files, Files::Staged { .. }),
            values,
            rows: 0,
            bytes: 0,
        })
    }

    fn close(&mut self, file: OpenFile) -> Result<(), LakeError> {
        let t = &self.table;
        let out = file
            .writer
            .finish()
            .map_err(|message| LakeError::WriteFile {
                table: t.dir().to_path_buf(),
                file: file.path.clone(),
                message,
            })?;
        // Durability point of a data file: synced before the commit that names it.
        out.sync_all()
            .map_err(|e| t.io(format!("syncing {}", file.path.display()), e))?;
        let meta = out
            .metadata()
            .map_err(|e| t.io(format!("reading {}", file.path.display()), e))?;
        let stats = match file.staged {
            true => None,
            false => Some(super::stats::from_footer(&file.path, &file.schema).map_err(
                |message| LakeError::WriteFile {
                    table: t.dir().to_path_buf(),
                    file: file.path.clone(),
                    message: format!("reading its statistics back: {message}"),
                },
            )?),
        };
        self.written.push(WrittenFile {
            path: file.path,
            size: meta.len(),
            modified: modified_millis(&meta),
            stats,
            values: file.values,
            rows: file.rows,
        });
        Ok(())
    }

    fn close_all(&mut self) -> Result<(), LakeError> {
        for file in std::mem::take(&mut self.open).into_values() {
            self.close(file)?;
        }
        Ok(())
    }

    /// Commits every row written as one new version of the table, and returns it. On return
    /// the commit is on disk. Another writer committing first is not an error: the commit is
    /// made again on the newer version (refused if that version changed the table's schema).
    pub fn commit(mut self, commit: Commit) -> Result<CommitSummary, LakeError> {
        self.close_all()?;
        let rows = self.written.iter().map(|f| f.rows).sum();
        let bytes = self.written.iter().map(|f| f.size).sum();
        let files = self.written.len();
        for _ in 0..MAX_ATTEMPTS {
            // One read of the log per try: it answers both whether the commit already
            // happened and what to commit on.
            let result = match self.table.latest()? {
                Some(snapshot) => {
                    if let Some(done) = already_committed(&self.table, &snapshot, &commit)? {
                        self.discard();
                        return Ok(done);
                    }
                    self.try_update(snapshot, &commit)?
                }
                None => self.try_create(&commit)?,
            };
            if let Some(version) = result {
                // The commit names the files now: whatever happens next, they stay.
                self.settled = true;
                self.sync_log(version)?;
                return Ok(CommitSummary {
                    version,
                    files,
                    rows,
                    bytes,
                    already_committed: false,
                });
            }
        }
        self.discard();
        Err(LakeError::Contended {
            table: self.table.dir().to_path_buf(),
            attempts: MAX_ATTEMPTS,
        })
    }

    fn parameters(&self, commit: &Commit) -> Vec<(String, Option<String>)> {
        let mode = match self.options.mode {
            Mode::Append => "Append",
            Mode::Overwrite => "Overwrite",
        };
        let mut p = vec![("mode".to_string(), Some(mode.to_string()))];
        if !self.partition_by.is_empty() {
            p.push((
                "partitionBy".into(),
                Some(serde_json::to_string(&self.partition_by).unwrap_or_default()),
            ));
        }
        p.extend(
            commit
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone()))),
        );
        p
    }

    /// One try at committing to a table with no version yet: `None` when another writer
    /// created it first.
    fn try_create(&self, commit: &Commit) -> Result<Option<u64>, LakeError> {
        let t = &self.table;
        let engine = t.engine.as_ref();
        let kernel_schema =
            Arc::new(StructType::try_from_arrow(self.schema.as_ref()).map_err(|e| t.delta(e))?);
        let mut builder = create_table(t.url.as_str(), kernel_schema, ENGINE_INFO, true)
            .with_operation_parameters(self.parameters(commit));
        if !self.partition_by.is_empty() {
            builder = builder.with_data_layout(DataLayout::partitioned(self.partition_by.iter()));
        }
        if let Some((app, version)) = &commit.transaction {
            builder = builder.with_transaction_id(app.clone(), *version);
        }
        let mut txn = builder
            .build(engine, Box::new(FileSystemCommitter::new()))
            .map_err(|e| t.delta(e))?;
        let state = txn.write_state().map_err(|e| t.delta(e))?;
        for file in &self.written {
            txn.add_files(self.add_metadata(&state, file)?);
        }
        self.outcome(txn.commit(engine).map_err(|e| t.delta(e))?)
    }

    /// One try at committing on the table's latest version: `None` when another writer
    /// committed that version first.
    fn try_update(
        &self,
        snapshot: Arc<Snapshot>,
        commit: &Commit,
    ) -> Result<Option<u64>, LakeError> {
        let t = &self.table;
        let engine = t.engine.as_ref();
        let state = t.state_of(&snapshot)?;
        // The files were written for the schema seen at the start (or for a table this writer
        // meant to create): a table that changed meanwhile gets them only if it still fits.
        let fits = match &self.base {
            Some(base) => schema::diff(base, &state.schema).is_empty(),
            None => schema::diff(&state.schema, &self.schema).is_empty(),
        };
        if !fits || state.partition_columns != self.partition_by {
            return Err(LakeError::SchemaMismatch {
                table: t.dir().to_path_buf(),
                diff: schema::diff(&state.schema, &self.schema),
            });
        }
        let operation = match self.files {
            Files::Published => UpdateTableOperation::StreamingUpdate,
            Files::Own | Files::Staged { .. } => UpdateTableOperation::Write,
        };
        let mut builder = snapshot
            .clone()
            .update_table(operation, ENGINE_INFO, true)
            .with_operation_parameters(self.parameters(commit));
        if let Some((app, version)) = &commit.transaction {
            builder = builder.with_transaction_id(app.clone(), *version);
        }
        for field in &self.added {
            let field = StructType::try_from_arrow(&ArrowSchema::new(vec![field.clone()]))
                .map_err(|e| t.delta(e))?;
            for f in field.fields() {
                builder =
                    builder.add_column(StructField::nullable(f.name(), f.data_type().clone()));
            }
        }
        if self.options.mode == Mode::Append && !self.written.is_empty() && self.added.is_empty() {
            builder = builder.with_blind_append();
        }
        let mut txn = builder
            .build(engine, Box::new(FileSystemCommitter::new()))
            .map_err(|e| t.delta(e))?;
        if self.options.mode == Mode::Overwrite {
            let scan = snapshot.scan_builder().build().map_err(|e| t.delta(e))?;
            for files in scan.scan_metadata(engine).map_err(|e| t.delta(e))? {
                txn.remove_files(files.map_err(|e| t.delta(e))?.scan_files);
            }
        }
        let write_state = txn.write_state().map_err(|e| t.delta(e))?;
        for file in &self.written {
            txn.add_files(self.add_metadata(&write_state, file)?);
        }
        self.outcome(txn.commit(engine).map_err(|e| t.delta(e))?)
    }

    fn add_metadata(
        &self,
        state: &Arc<delta_kernel::transaction::WriteState>,
        file: &WrittenFile,
    ) -> Result<Box<dyn delta_kernel::EngineData>, LakeError> {
        let t = &self.table;
        let mut context = state.write_context_builder();
        // The kernel refuses even an empty map of values for a table with no partitions.
        if !self.partition_by.is_empty() {
            context = context.with_partition_values(file.values.clone());
        }
        let context = context.build().map_err(|e| t.delta(e))?;
        let url = url::Url::from_file_path(&file.path)
            .map_err(|()| t.delta(format!("{} cannot be a URL", file.path.display())))?;
        let stats = file.stats.clone().ok_or_else(|| {
            t.delta(format!(
                "{}: a staged file is committed by publishing it",
                file.path.display()
            ))
        })?;
        build_add_file_metadata(
            DataFileMetadata::new(FileMeta::new(url, file.modified, file.size), stats),
            &context,
        )
        .map_err(|e| t.delta(e))
    }

    fn outcome<S>(&self, result: CommitResult<S>) -> Result<Option<u64>, LakeError> {
        match result {
            CommitResult::Committed(c) => Ok(Some(c.commit_version())),
            CommitResult::Conflicted(_) => Ok(None),
            CommitResult::Retryable(r) => {
                tracing::debug!(table = %self.table.dir().display(), error = %r.error, "commit will be tried again");
                Ok(None)
            }
        }
    }

    /// The commit file is created whole (put-if-absent) by the Delta library, which does not
    /// sync it: the durability point of a commit is here, before it is reported to anyone.
    fn sync_log(&self, version: u64) -> Result<(), LakeError> {
        let t = &self.table;
        let log = t.dir().join(LOG_DIR);
        let path = super::log::commit_path(t, version);
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| t.io(format!("syncing {}", path.display()), e))?;
        quiver_durable::sync_dir(&log).map_err(|e| t.io("syncing the log directory", e))?;
        // A new table's log directory itself must survive too.
        quiver_durable::sync_dir(t.dir()).map_err(|e| t.io("syncing the table directory", e))
    }

    /// Removes the files written (nothing refers to them), if they are the writer's own.
    fn discard(&mut self) {
        let own = matches!(self.files, Files::Own);
        for file in std::mem::take(&mut self.open).into_values() {
            if own {
                let _ = std::fs::remove_file(&file.path);
            }
        }
        for file in self.written.drain(..) {
            if own {
                let _ = std::fs::remove_file(&file.path);
            }
        }
        self.settled = true;
    }

    /// Gives up: removes the files written; the table is as it was.
    pub fn abort(mut self) {
        self.discard();
    }

    /// The rows of `batch` grouped by their partition values, in the order of first
    /// appearance.
    #[allow(clippy::type_complexity)]
    fn split(
        &self,
        batch: &RecordBatch,
    ) -> Result<Vec<(Vec<Option<String>>, HashMap<String, Scalar>, RecordBatch)>, LakeError> {
        if self.partition_by.is_empty() {
            return Ok(vec![(Vec::new(), HashMap::new(), batch.clone())]);
        }
        let columns: Vec<(&String, &Arc<dyn Array>)> = self
            .partition_by
            .iter()
            .map(|name| (name, batch.column_by_name(name).expect("conformed")))
            .collect();
        // Rows are grouped by their partition columns in Arrow's row format (one comparable
        // byte string per row), so that text values are made once per group, not per row.
        let converter = RowConverter::new(
            columns
                .iter()
                .map(|(_, c)| SortField::new(c.data_type().clone()))
                .collect(),
        )
        .map_err(|e| self.table.delta(e))?;
        let keys = converter
            .convert_columns(
                &columns
                    .iter()
                    .map(|(_, c)| (*c).clone())
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| self.table.delta(e))?;
        let mut groups: Vec<(Vec<Option<String>>, HashMap<String, Scalar>, Vec<u32>)> = Vec::new();
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        for row in 0..batch.num_rows() {
            let at = match index.get(keys.row(row).as_ref()) {
                Some(&at) => at,
                None => {
                    let mut key = Vec::with_capacity(columns.len());
                    let mut values = HashMap::new();
                    for (name, column) in &columns {
                        let value = scalar(&self.table, name, column.as_ref(), row)?;
                        key.push(partition_text(&value));
                        values.insert((*name).clone(), value);
                    }
                    index.insert(keys.row(row).data(), groups.len());
                    groups.push((key, values, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[at].2.push(row as u32);
        }
        if groups.len() == 1 {
            let (key, values, _) = groups.pop().expect("one group");
            return Ok(vec![(key, values, batch.clone())]);
        }
        groups
            .into_iter()
            .map(|(key, values, rows)| {
                take_record_batch(batch, &UInt32Array::from(rows))
                    .map(|b| (key, values, b))
                    .map_err(|e| self.table.delta(e))
            })
            .collect()
    }
}

/// For operations that build their own transaction around the files written (a compaction
/// commits them as a rewrite, not as new rows).
impl TableWriter {
    /// Closes the files being written: the rows written next go to new files.
    pub(super) fn cut(&mut self) -> Result<(), LakeError> {
        self.close_all()
    }

    /// The files closed so far: (files, rows, bytes).
    pub(super) fn written(&self) -> (usize, u64, u64) {
        let rows = self.written.iter().map(|f| f.rows).sum();
        let bytes = self.written.iter().map(|f| f.size).sum();
        (self.written.len(), rows, bytes)
    }

    /// Closes every file and stages its add action in `txn`; the transaction's data-change
    /// flag is the one the actions carry.
    pub(super) fn stage(
        &mut self,
        txn: &mut delta_kernel::transaction::Transaction,
    ) -> Result<(), LakeError> {
        self.close_all()?;
        let state = txn.write_state().map_err(|e| self.table.delta(e))?;
        for file in &self.written {
            txn.add_files(self.add_metadata(&state, file)?);
        }
        Ok(())
    }

    /// The caller committed the staged files as `version`: they are the table's now, and the
    /// commit is synced.
    pub(super) fn committed(mut self, version: u64) -> Result<(), LakeError> {
        // Settled first: a version names the files, so a failed sync must not delete them.
        self.settled = true;
        self.sync_log(version)
    }
}

/// For files written now and committed later, by [`Table::publish`](super::Table::publish)
/// (see the `publish` module).
impl TableWriter {
    /// Whether the table holds this writer's columns already: it exists, and a merge adds
    /// none.
    pub(super) fn fits_table(&self) -> bool {
        self.base.is_some() && self.added.is_empty()
    }

    /// Commits the table's creation, or the columns a merge adds, with no files; `None` when
    /// another writer committed first.
    pub(super) fn commit_schema(&self) -> Result<Option<u64>, LakeError> {
        let version = match self.base {
            Some(_) => self.try_update(self.table.snapshot(None)?, &Commit::default())?,
            None => self.try_create(&Commit::default())?,
        };
        if let Some(version) = version {
            self.sync_log(version)?;
        }
        Ok(version)
    }

    /// Names the files opened from now on `<stem>-<n>.parquet` (n from 0) and leaves them to
    /// the caller whatever happens.
    pub(super) fn stage_as(&mut self, stem: &str) {
        self.files = Files::Staged {
            stem: stem.to_string(),
            next: 0,
        };
    }

    /// Closes (and syncs) every file and hands them over: their paths relative to the table.
    pub(super) fn take_staged(&mut self) -> Result<Vec<String>, LakeError> {
        self.close_all()?;
        let t = &self.table;
        self.written
            .drain(..)
            .map(|f| {
                let relative = f
                    .path
                    .strip_prefix(t.dir())
                    .map_err(|_| t.delta(format!("{} is outside the table", f.path.display())))?;
                Ok(relative.to_string_lossy().into_owned())
            })
            .collect()
    }

    /// A writer whose commit adds `written`, files written before and read back, to the table
    /// whose latest version is `state`.
    pub(super) fn published(
        table: Table,
        state: TableState,
        written: Vec<WrittenFile>,
    ) -> Result<Self, LakeError> {
        let schema = state.schema.clone();
        let mut writer = TableWriter::on(table, Some(state), &schema, WriteOptions::default())?;
        writer.files = Files::Published;
        writer.written = written;
        Ok(writer)
    }
}

/// The summary of a commit whose transaction id the table already holds at `snapshot`
/// (nothing to commit), or `None`.
pub(super) fn already_committed(
    table: &Table,
    snapshot: &Snapshot,
    commit: &Commit,
) -> Result<Option<CommitSummary>, LakeError> {
    let Some((app, version)) = &commit.transaction else {
        return Ok(None);
    };
    if table
        .app_version_in(snapshot, app)?
        .is_none_or(|done| done < *version)
    {
        return Ok(None);
    }
    Ok(Some(CommitSummary {
        version: snapshot.version(),
        files: 0,
        rows: 0,
        bytes: 0,
        already_committed: true,
    }))
}

/// A file's modification time in milliseconds since the epoch, as an add action records it.
pub(super) fn modified_millis(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if !self.settled {
            self.discard();
        }
    }
}

/// `<column>=<value>/…` for a file's partition values (Hive's layout, which Delta writers
/// use; the log names the files, so readers do not depend on it).
fn partition_dir(columns: &[String], values: &HashMap<String, Scalar>) -> PathBuf {
    let mut dir = PathBuf::new();
    for column in columns {
        let value = match values.get(column) {
            Some(v) => match partition_text(v) {
                Some(text) => escape(&text),
                None => quiver_data::io::HIVE_DEFAULT_PARTITION.to_string(),
            },
            None => quiver_data::io::HIVE_DEFAULT_PARTITION.to_string(),
        };
        dir.push(format!("{}={value}", escape(column)));
    }
    dir
}

/// Characters that cannot be in a path segment, percent-encoded.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || "-_.".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The text [`escape`] encoded; `None` if it is not such an encoding.
pub(super) fn unescape(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn check_partition_type(table: &Table, column: &str, t: &ArrowType) -> Result<(), LakeError> {
    match t {
        ArrowType::Utf8
        | ArrowType::Int64
        | ArrowType::Int32
        | ArrowType::Int16
        | ArrowType::Int8
        | ArrowType::Date32
        | ArrowType::Boolean => Ok(()),
        other => Err(LakeError::PartitionType {
            table: table.dir().to_path_buf(),
            column: column.to_string(),
            found: other.clone(),
        }),
    }
}

/// A partition value as the log writes it (`None`: null).
fn partition_text(value: &Scalar) -> Option<String> {
    Some(match value {
        Scalar::Null(_) => return None,
        Scalar::String(s) => s.clone(),
        Scalar::Long(v) => v.to_string(),
        Scalar::Integer(v) => v.to_string(),
        Scalar::Short(v) => v.to_string(),
        Scalar::Byte(v) => v.to_string(),
        Scalar::Boolean(v) => v.to_string(),
        Scalar::Date(days) => arrow::temporal_conversions::date32_to_datetime(*days)
            .map_or_else(|| days.to_string(), |d| d.format("%Y-%m-%d").to_string()),
        other => other.to_string(),
    })
}

fn scalar(table: &Table, name: &str, column: &dyn Array, row: usize) -> Result<Scalar, LakeError> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Date32Type, Int16Type, Int32Type, Int64Type, Int8Type};
    use delta_kernel::schema::DataType;
    let null = column.is_null(row);
    Ok(match column.data_type() {
        ArrowType::Utf8 if null => Scalar::Null(DataType::STRING),
        ArrowType::Utf8 => Scalar::String(column.as_string::<i32>().value(row).to_string()),
        ArrowType::Int64 if null => Scalar::Null(DataType::LONG),
        ArrowType::Int64 => Scalar::Long(column.as_primitive::<Int64Type>().value(row)),
        ArrowType::Int32 if null => Scalar::Null(DataType::INTEGER),
        ArrowType::Int32 => Scalar::Integer(column.as_primitive::<Int32Type>().value(row)),
        ArrowType::Int16 if null => Scalar::Null(DataType::SHORT),
        ArrowType::Int16 => Scalar::Short(column.as_primitive::<Int16Type>().value(row)),
        ArrowType::Int8 if null => Scalar::Null(DataType::BYTE),
        ArrowType::Int8 => Scalar::Byte(column.as_primitive::<Int8Type>().value(row)),
        ArrowType::Date32 if null => Scalar::Null(DataType::DATE),
        ArrowType::Date32 => Scalar::Date(column.as_primitive::<Date32Type>().value(row)),
        ArrowType::Boolean if null => Scalar::Null(DataType::BOOLEAN),
        ArrowType::Boolean => Scalar::Boolean(column.as_boolean().value(row)),
        other => {
            return Err(LakeError::PartitionType {
                table: table.dir().to_path_buf(),
                column: name.to_string(),
                found: other.clone(),
            })
        }
    })
}
