//! Table maintenance: compaction of small data files into larger ones, removal of the files no
//! version needs any more (vacuum), and the commit history with the runs that made it.
//!
//! A compaction is one commit that changes no rows: the files it rewrites are removed and the
//! new ones added with `dataChange = false`, so incremental readers (which follow only new
//! rows, see [`Table::added_since`]) skip it. The removed files stay on disk, and older
//! versions stay readable, until a vacuum deletes them after the retention period.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::engine_data::FilteredEngineData;
use delta_kernel::scan::state::ScanFile;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation};
use delta_kernel::{EngineData, Snapshot};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use super::log::{self, CommitEntry};
use super::{LakeError, Table, TableState, TableWriter, WriteOptions, ENGINE_INFO};

/// The operation parameter naming the pipeline file of the run that made a commit.
pub const PIPELINE_PARAMETER: &str = "quiver.pipeline";
/// The operation parameter naming the pipeline's stage that made a commit.
pub const STAGE_PARAMETER: &str = "quiver.stage";
/// The operation parameter holding the run number of the pipeline that made a commit.
pub const RUN_PARAMETER: &str = "quiver.run";
/// The operation parameter naming the streaming job that made a commit.
pub const JOB_PARAMETER: &str = "quiver.job";
/// The operation parameter holding the streaming job's epoch that a commit closed.
pub const EPOCH_PARAMETER: &str = "quiver.epoch";

/// Files under this size are compacted, into files of at most about this size (Delta's
/// `OPTIMIZE` default).
pub const DEFAULT_TARGET_SIZE: u64 = 128 << 20;

/// A partition is compacted when it has at least this many small files.
pub const DEFAULT_MIN_FILES: usize = 2;

/// How long removed and unreferenced files are kept by default (Delta's default).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The least retention a vacuum takes without being forced (Delta refuses less than its
/// default unless its retention check is turned off; an hour covers any run of a pipeline).
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// Compactions that lose the race to another writer are tried again on the newer version,
/// this many times at most.
const MAX_ATTEMPTS: u32 = 16;

/// How [`compact`] chooses and rewrites files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactOptions {
    /// Files smaller than this are rewritten, into files of at most about this many bytes.
    pub target_size: u64,
    /// A partition is compacted only when it has at least this many files under the target
    /// size. One file alone is never rewritten, so less than 2 means 2.
    pub min_files: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            target_size: DEFAULT_TARGET_SIZE,
            min_files: DEFAULT_MIN_FILES,
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// The version it made; `None` when there was nothing to compact (no commit was made).
    pub version: Option<u64>,
    /// Partitions whose files it rewrote.
    pub partitions: usize,
    /// Data files it removed from the table.
    pub files_removed: usize,
    /// Data files it added.
    pub files_added: usize,
    /// Bytes of the files removed.
    pub bytes_before: u64,
    /// Bytes of the files added.
    pub bytes_after: u64,
    /// Rows rewritten.
    pub rows: u64,
}

/// A live data file as the compaction plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlanFile {
    /// The path, as the log has it.
    path: String,
    size: u64,
    /// The partition values, in the order of the table's partition columns.
    partition: Vec<Option<String>>,
}

/// Which files to rewrite together: groups of indexes into `files`, each group rewritten
/// into one file. Per partition, the files smaller than the target, in the order given (the
/// order they were added), are packed greedily into consecutive groups of at most the target
/// size; groups of one file are left alone, and so are partitions with fewer small files than
/// `min_files`.
fn plan(files: &[PlanFile], options: &CompactOptions) -> Vec<Vec<usize>> {
    let mut partitions: BTreeMap<&[Option<String>], Vec<usize>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        if f.size < options.target_size {
            partitions.entry(&f.partition).or_default().push(i);
        }
    }
    let mut groups = Vec::new();
    for small in partitions.into_values() {
        if small.len() < options.min_files.max(2) {
            continue;
        }
        let mut group: Vec<usize> = Vec::new();
        let mut bytes = 0;
        for i in small {
            if !group.is_empty() && bytes + files[i].size > options.target_size {
                groups.push(std::mem::take(&mut group));
                bytes = 0;
            }
            bytes += files[i].size;
            group.push(i);
        }
        groups.push(group);
    }
    groups.retain(|g| g.len() >= 2);
    groups
}

/// Rewrites the table's small files into larger ones, per partition, as one commit that
/// changes no rows (see the module's documentation). Rows keep their order: files are read
/// in the order they were added. If another writer commits meanwhile, the compaction is made
/// again on the newer version when every file it rewrote is still there; otherwise it gives
/// up ([`LakeError::CompactionConflict`]) and deletes the files it wrote.
pub fn compact(table: &Table, options: &CompactOptions) -> Result<CompactReport, LakeError> {
    compact_with(table, options, || {})
}

/// [`compact`], calling `before_commit` before each try at committing (where tests let
/// another writer in).
fn compact_with(
    table: &Table,
    options: &CompactOptions,
    mut before_commit: impl FnMut(),
) -> Result<CompactReport, LakeError> {
    let snapshot = table.snapshot(None)?;
    table.check_readable(&snapshot)?;
    let state = table.state_of(&snapshot)?;
    let listing = list(table, &snapshot)?;
    let files = in_added_order(table, snapshot.version(), &state, &listing.files)?;
    let groups = plan(&files, options);
    if groups.is_empty() {
        return Ok(CompactReport::default());
    }
    let mut writer = table.writer(
        &state.schema,
        WriteOptions {
            partition_by: state.partition_columns.clone(),
            // Files end where a group ends, not at a size.
            target_file_bytes: usize::MAX,
            ..WriteOptions::default()
        },
    )?;
    let mut report = CompactReport::default();
    let mut chosen = HashSet::new();
    let mut partitions = BTreeSet::new();
    for group in &groups {
        for &i in group {
            let file = &files[i];
            report.rows += rewrite(table, &mut writer, &state, file)?;
            report.bytes_before += file.size;
            chosen.insert(file.path.clone());
            partitions.insert(&file.partition);
        }
        writer.cut()?;
    }
    report.partitions = partitions.len();
    report.files_removed = chosen.len();
    (report.files_added, _, report.bytes_after) = writer.written();
    let parameters = [
        ("targetSize", options.target_size.to_string()),
        ("minFiles", options.min_files.to_string()),
    ];
    let metrics = [
        ("numRemovedFiles", report.files_removed.to_string()),
        ("numAddedFiles", report.files_added.to_string()),
        ("numRemovedBytes", report.bytes_before.to_string()),
        ("numAddedBytes", report.bytes_after.to_string()),
    ];
    let engine = table.engine.as_ref();
    let mut attempt = Some((snapshot, listing.batches));
    for _ in 0..MAX_ATTEMPTS {
        let (snapshot, batches) = match attempt.take() {
            Some(first) => first,
            None => {
                let snapshot = table.snapshot(None)?;
                table.check_readable(&snapshot)?;
                let batches = list(table, &snapshot)?.batches;
                (snapshot, batches)
            }
        };
        let (removals, found) = removals(table, batches, &chosen)?;
        if found < chosen.len() {
            // The writer is dropped uncommitted: its files go with it.
            return Err(LakeError::CompactionConflict {
                table: table.dir().to_path_buf(),
                version: snapshot.version(),
                missing: chosen.len() - found,
            });
        }
        let mut txn = snapshot
            .update_table(UpdateTableOperation::Optimize, ENGINE_INFO, false)
            .with_operation_parameters(parameters.iter().map(|(k, v)| (*k, Some(v.clone()))))
            .with_operation_metrics(metrics.iter().map(|(k, v)| (*k, Some(v.clone()))))
            .build(engine, Box::new(FileSystemCommitter::new()))
            .map_err(|e| table.delta(e))?;
        for removal in removals {
            txn.remove_files(removal);
        }
        writer.stage(&mut txn)?;
        before_commit();
        match txn.commit(engine).map_err(|e| table.delta(e))? {
            CommitResult::Committed(c) => {
                let version = c.commit_version();
                writer.committed(version)?;
                report.version = Some(version);
                return Ok(report);
            }
            CommitResult::Conflicted(_) | CommitResult::Retryable(_) => {}
        }
    }
    Err(LakeError::Contended {
        table: table.dir().to_path_buf(),
        attempts: MAX_ATTEMPTS,
    })
}

/// A version's live files, and the scan metadata that lists them (the form the kernel takes
/// removals in: rows of add actions with a selection vector).
struct Listing {
    files: Vec<ScanFile>,
    batches: Vec<(Box<dyn EngineData>, Vec<bool>)>,
}

fn list(table: &Table, snapshot: &Arc<Snapshot>) -> Result<Listing, LakeError> {
    let engine = table.engine.as_ref();
    let scan = snapshot
        .clone()
        .scan_builder()
        .build()
        .map_err(|e| table.delta(e))?;
    let mut listing = Listing {
        files: Vec::new(),
        batches: Vec::new(),
    };
    for metadata in scan.scan_metadata(engine).map_err(|e| table.delta(e))? {
        let metadata = metadata.map_err(|e| table.delta(e))?;
        listing.files = metadata
            .visit_scan_files(std::mem::take(&mut listing.files), |files, file| {
                files.push(file)
            })
            .map_err(|e| table.delta(e))?;
        listing.batches.push(metadata.scan_files.into_parts());
    }
    if listing.files.iter().any(|f| f.dv_info.has_vector()) {
        return Err(LakeError::Unsupported {
            table: table.dir().to_path_buf(),
            feature: "a deletion vector".into(),
        });
    }
    Ok(listing)
}

/// The rows of `batches` that add one of `chosen`, as removals, and how many of `chosen` they
/// name.
fn removals(
    table: &Table,
    batches: Vec<(Box<dyn EngineData>, Vec<bool>)>,
    chosen: &HashSet<String>,
) -> Result<(Vec<FilteredEngineData>, usize), LakeError> {
    let mut out = Vec::new();
    let mut found = HashSet::new();
    for (data, selection) in batches {
        // Through the box: the box itself is `Any` too.
        let rows: &dyn EngineData = &*data;
        let batch = rows
            .any_ref()
            .downcast_ref::<ArrowEngineData>()
            .ok_or_else(|| table.delta("the engine's scan metadata is not Arrow data"))?
            .record_batch();
        let paths = batch
            .column_by_name("path")
            .ok_or_else(|| table.delta("the scan metadata has no path column"))?;
        let paths = cast(paths, &DataType::Utf8).map_err(|e| table.delta(e))?;
        let paths = paths.as_string::<i32>();
        // Rows past the end of a selection vector are selected.
        let keep: Vec<bool> = (0..batch.num_rows())
            .map(|row| {
                let selected = selection.get(row).copied().unwrap_or(true);
                let path = (!paths.is_null(row)).then(|| paths.value(row));
                selected && path.is_some_and(|p| chosen.contains(p) && found.insert(p.to_string()))
            })
            .collect();
        if keep.contains(&true) {
            out.push(FilteredEngineData::try_new(data, keep).map_err(|e| table.delta(e))?);
        }
    }
    Ok((out, found.len()))
}

/// `files` in the order they were added — by the version that added them and their place in
/// its commit; files whose commit the log no longer holds come first, by modification time —
/// as the plan takes them.
fn in_added_order(
    table: &Table,
    latest: u64,
    state: &TableState,
    files: &[ScanFile],
) -> Result<Vec<PlanFile>, LakeError> {
    let mut wanted: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let mut added: HashMap<String, (u64, usize)> = HashMap::new();
    for version in (0..=latest).rev() {
        if wanted.is_empty() || !log::commit_path(table, version).exists() {
            break;
        }
        for (place, add) in log::read_commit(table, version)?
            .adds
            .into_iter()
            .enumerate()
        {
            // The newest add of a path is the live one.
            if wanted.remove(add.path.as_str()) {
                added.insert(add.path, (version, place));
            }
        }
    }
    let mut ordered: Vec<&ScanFile> = files.iter().collect();
    ordered.sort_by_key(|f| (added.get(&f.path), f.modification_time, f.path.as_str()));
    Ok(ordered
        .into_iter()
        .map(|f| PlanFile {
            path: f.path.clone(),
            size: f.size.max(0) as u64,
            partition: super::ordered_values(&state.partition_columns, &f.partition_values)
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
        })
        .collect())
}

/// Writes the rows of one data file into `writer`, with its partition values (which the file
/// does not hold) as columns; returns how many rows.
fn rewrite(
    table: &Table,
    writer: &mut TableWriter,
    state: &TableState,
    file: &PlanFile,
) -> Result<u64, LakeError> {
    let path = table.data_path(&file.path)?;
    let failed = |message: String| LakeError::ReadFile {
        table: table.dir().to_path_buf(),
        file: path.clone(),
        message,
    };
    let handle = std::fs::File::open(&path).map_err(|e| failed(e.to_string()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(handle)
        .and_then(|b| b.build())
        .map_err(|e| failed(e.to_string()))?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(|e| failed(e.to_string()))?;
        let n = batch.num_rows();
        let schema = batch.schema();
        let mut fields: Vec<Field> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        // The log's partition values win over columns of the same name a file may hold.
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if !state.partition_columns.contains(field.name()) {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
        for (column, value) in state.partition_columns.iter().zip(&file.partition) {
            let field = state
                .schema
                .field_with_name(column)
                .map_err(|e| table.delta(e))?;
            let values = match value {
                None => new_null_array(field.data_type(), n),
                Some(text) => cast(
                    &StringArray::from(vec![text.as_str(); n]),
                    field.data_type(),
                )
                .map_err(|e| failed(format!("partition value {column}={text}: {e}")))?,
            };
            fields.push(Field::new(column, field.data_type().clone(), true));
            columns.push(values);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| failed(e.to_string()))?;
        writer.write(&batch)?;
        rows += n as u64;
    }
    Ok(rows)
}

/// How [`vacuum`] decides and acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VacuumOptions {
    /// Files stay at least this long after they were removed from the table (or, for files
    /// no commit names, after they were last modified).
    pub retention: Duration,
    /// Report what would be deleted, and delete nothing.
    pub dry_run: bool,
    /// Take a retention under [`MIN_RETENTION`].
    pub force: bool,
}

impl Default for VacuumOptions {
    fn default() -> Self {
        VacuumOptions {
            retention: DEFAULT_RETENTION,
            dry_run: false,
            force: false,
        }
    }
}

/// What a vacuum deleted, or would delete in a dry run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VacuumReport {
    /// The version whose files were kept.
    pub version: u64,
    /// The files deleted, relative to the table's directory, in path order.
    pub files: Vec<PathBuf>,
    /// Their bytes.
    pub bytes: u64,
    /// Partition directories left empty and removed, relative to the table's directory (none
    /// in a dry run).
    pub directories: Vec<PathBuf>,
    /// Nothing was deleted: this is what a vacuum would delete.
    pub dry_run: bool,
}

/// A file in a table's directory, as a vacuum sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOnDisk {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last modified.
    pub modified: SystemTime,
}

/// Which of `files` a vacuum deletes: those the latest version does not name (`live`) whose
/// removal from the table (`removed`, the latest time a commit removed the path) and last
/// modification are both at least `retention` before `now`. A file no commit removed is one
/// no commit ever named (left by a writer that failed or is still running): only its
/// modification time counts. Times after `now` keep a file.
pub fn expired<'a>(
    files: &'a [FileOnDisk],
    live: &HashSet<PathBuf>,
    removed: &HashMap<PathBuf, SystemTime>,
    now: SystemTime,
    retention: Duration,
) -> Vec<&'a FileOnDisk> {
    files
        .iter()
        .filter(|f| !live.contains(&f.path))
        .filter(|f| {
            let last = removed
                .get(&f.path)
                .map_or(f.modified, |&r| r.max(f.modified));
            now.duration_since(last).is_ok_and(|age| age >= retention)
        })
        .collect()
}

/// Whether a vacuum leaves an entry of a table's directory alone, with everything below it:
/// names starting with `.` or `_` (the log, checkpoints, hidden files), except partition
/// directories (`_column=value`).
pub fn is_hidden(name: &str, is_dir: bool) -> bool {
    name.starts_with('.') || (name.starts_with('_') && !(is_dir && name.contains('=')))
}

/// Deletes the data files under the table's directory that its latest version does not name
/// and that are older than the retention (see [`expired`]), then the partition directories
/// left empty. The log, hidden files and files under hidden directories are never touched;
/// nor are symbolic links. A retention under [`MIN_RETENTION`] is refused unless forced.
pub fn vacuum(
    table: &Table,
    options: &VacuumOptions,
    now: SystemTime,
) -> Result<VacuumReport, LakeError> {
    if options.retention < MIN_RETENTION && !options.force {
        return Err(LakeError::RetentionTooShort {
            table: table.dir().to_path_buf(),
            retention: options.retention,
            minimum: MIN_RETENTION,
        });
    }
    let snapshot = table.snapshot(None)?;
    let version = snapshot.version();
    let live = list(table, &snapshot)?
        .files
        .iter()
        .map(|f| table.data_path(&f.path))
        .collect::<Result<HashSet<_>, _>>()?;
    let removed = removal_times(table, version)?;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    walk(table, table.dir(), &mut files, &mut dirs)?;
    let mut doomed = expired(&files, &live, &removed, now, options.retention);
    doomed.sort_by(|a, b| a.path.cmp(&b.path));
    let mut report = VacuumReport {
        version,
        dry_run: options.dry_run,
        ..VacuumReport::default()
    };
    let relative = |p: &Path| p.strip_prefix(table.dir()).unwrap_or(p).to_path_buf();
    let mut emptied = HashSet::new();
    for file in doomed {
        if !options.dry_run {
            match std::fs::remove_file(&file.path) {
                Ok(()) => {}
                // Another vacuum took it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(table.io(format!("deleting {}", file.path.display()), e)),
            }
            emptied.extend(file.path.parent().map(Path::to_path_buf));
        }
        report.files.push(relative(&file.path));
        report.bytes += file.size;
    }
    if !options.dry_run {
        // Deepest first, so that a parent emptied by its children's removal goes too.
        for dir in dirs.iter().rev() {
            if !std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
                continue;
            }
            // A directory emptied by someone else may be one a writer just made for its
            // first file: it goes only once it is older than the retention.
            let stale = || {
                std::fs::metadata(dir)
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| now.duration_since(m).is_ok_and(|a| a >= options.retention))
            };
            if (emptied.contains(dir) || stale()) && std::fs::remove_dir(dir).is_ok() {
                emptied.extend(dir.parent().map(Path::to_path_buf));
                report.directories.push(relative(dir));
            }
        }
    }
    Ok(report)
}

/// When each path the log's commits removed was last removed: the later of the remove's
/// deletion timestamp and its commit's timestamp. Commits the log no longer holds (cleaned up
/// after a checkpoint) are skipped; their files are judged by modification time.
fn removal_times(table: &Table, latest: u64) -> Result<HashMap<PathBuf, SystemTime>, LakeError> {
    let mut out: HashMap<PathBuf, SystemTime> = HashMap::new();
    for version in 0..=latest {
        if !log::commit_path(table, version).exists() {
            continue;
        }
        let commit = log::read_commit(table, version)?;
        for remove in &commit.removes {
            let millis = remove.deletion_timestamp.max(commit.timestamp).unwrap_or(0);
            let at = UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64);
            let entry = out.entry(table.data_path(&remove.path)?).or_insert(at);
            *entry = (*entry).max(at);
        }
    }
    Ok(out)
}

/// The files under `dir` a vacuum may consider, and the directories it went through (parents
/// before their children).
fn walk(
    table: &Table,
    dir: &Path,
    files: &mut Vec<FileOnDisk>,
    dirs: &mut Vec<PathBuf>,
) -> Result<(), LakeError> {
    let listing = |e| table.io(format!("listing {}", dir.display()), e);
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        let entry = entry.map_err(listing)?;
        let path = entry.path();
        let name = entry.file_name();
        // Not following links: a link is never deleted, nor what it points to.
        let kind = entry.file_type().map_err(listing)?;
        if is_hidden(&name.to_string_lossy(), kind.is_dir()) {
            continue;
        }
        if kind.is_dir() {
            dirs.push(path.clone());
            walk(table, &path, files, dirs)?;
        } else if kind.is_file() {
            let meta = entry
                .metadata()
                .map_err(|e| table.io(format!("reading {}", path.display()), e))?;
            files.push(FileOnDisk {
                path,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::now()),
            });
        }
    }
    Ok(())
}

/// A transaction id a commit set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionId {
    /// The application id (a pipeline's stage or a streaming job).
    pub app_id: String,
    /// Its version (a run or an epoch).
    pub version: i64,
}

/// One commit of a table as `quiver table history` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The version it made.
    pub version: u64,
    /// When, in milliseconds since the epoch, as the writer recorded it.
    pub timestamp: Option<i64>,
    /// The same time in UTC, ISO-8601 (`2024-05-01T12:00:00.000Z`).
    pub time: Option<String>,
    /// What it was (`WRITE`, `CREATE TABLE`, `OPTIMIZE`, …).
    pub operation: Option<String>,
    /// The pipeline file of the run that made it ([`PIPELINE_PARAMETER`]).
    pub pipeline: Option<String>,
    /// The pipeline's stage ([`STAGE_PARAMETER`]).
    pub stage: Option<String>,
    /// The pipeline's run number ([`RUN_PARAMETER`]).
    pub run: Option<String>,
    /// The streaming job that made it ([`JOB_PARAMETER`]).
    pub job: Option<String>,
    /// The job's epoch it closed ([`EPOCH_PARAMETER`]).
    pub epoch: Option<String>,
    /// Data files added.
    pub files_added: usize,
    /// Data files removed.
    pub files_removed: usize,
    /// New rows: those of the files added as new data (not a compaction's rewritten ones);
    /// `None` when some of them lack statistics.
    pub rows_added: Option<u64>,
    /// The writing engine.
    pub engine: Option<String>,
    /// Every operation parameter, as recorded.
    pub parameters: BTreeMap<String, String>,
    /// Transaction ids it set.
    pub transactions: Vec<TransactionId>,
}

impl From<&CommitEntry> for HistoryEntry {
    fn from(c: &CommitEntry) -> Self {
        let parameter = |key: &str| c.parameters.get(key).cloned();
        HistoryEntry {
            version: c.version,
            timestamp: c.timestamp,
            time: c.timestamp.and_then(iso_time),
            operation: c.operation.clone(),
            pipeline: parameter(PIPELINE_PARAMETER),
            stage: parameter(STAGE_PARAMETER),
            run: parameter(RUN_PARAMETER),
            job: parameter(JOB_PARAMETER),
            epoch: parameter(EPOCH_PARAMETER),
            files_added: c.adds.len(),
            files_removed: c.removes.len(),
            rows_added: c
                .adds
                .iter()
                .filter(|a| a.data_change)
                .map(|a| a.rows)
                .sum(),
            engine: c.engine.clone(),
            parameters: c.parameters.clone(),
            transactions: c
                .transactions
                .iter()
                .map(|(app_id, version)| TransactionId {
                    app_id: app_id.clone(),
                    version: *version,
                })
                .collect(),
        }
    }
}

/// Milliseconds since the epoch as UTC ISO-8601.
fn iso_time(millis: i64) -> Option<String> {
    arrow::temporal_conversions::timestamp_ms_to_datetime(millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// The table's commits, newest first, at most `limit` of them (see [`log::history`]).
pub fn history(table: &Table, limit: usize) -> Result<Vec<HistoryEntry>, LakeError> {
    Ok(log::history(table, limit)?
        .iter()
        .map(HistoryEntry::from)
        .collect())
}

#[cfg(test)]
mod tests;
