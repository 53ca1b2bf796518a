//! Writing output: one file or a Hive-partitioned directory, moved into place only on commit.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::datatypes::DataType;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use quiver_durable::{create_temp_dir, create_temp_file, parent_dir, sync_dir, temp_sibling};

use super::{arrow_reason, file_id, Format, IoError};

/// The file a Hive-style output directory holds to mark it as written by Quiver, which lets
/// `--overwrite` replace it. Readers skip it (its name starts with a dot).
pub const OUTPUT_MARKER: &str = ".quiver-output";

/// How much of an existing CSV or JSON-lines output is looked at to see that it is text.
const SNIFF_BYTES: u64 = 64 << 10;

/// The directory name Hive uses for a null partition value.
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Rows per Parquet row group: large enough for good compression and scans, small enough that
/// a writer's buffered row group stays bounded.
const PARQUET_ROW_GROUP_ROWS: usize = 1 << 20;

/// Bytes a Parquet writer may buffer for its open row group before closing it early: bounds
/// the writer's memory when rows are wide.
pub const PARQUET_ROW_GROUP_BYTES: usize = 128 << 20;

/// How and where output is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkOptions {
    /// The output format; `None` takes it from the path's extension, else Parquet.
    pub format: Option<Format>,
    /// Hive-style partition columns (`dir/key=value/...`); empty writes one file.
    pub partition_by: Vec<String>,
    /// Whether an existing output may be replaced (on commit).
    pub overwrite: bool,
}

/// What a committed sink wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSummary {
    /// The output file or directory.
    pub path: PathBuf,
    /// The number of data files written.
    pub files: usize,
    /// The number of rows written.
    pub rows: u64,
    /// The total size of the data files, in bytes.
    pub bytes: u64,
}

/// A sink that writes either one file, or a Hive-style directory `dir/key=value/.../part-N.<ext>`
/// (one file per (key values, writer partition N)), atomically: everything is written under a
/// temporary name in the same parent directory (`.<name>.quiver-tmp-<pid>-<random>`) and renamed
/// into place only by `commit`; `abort` (and Drop without commit) removes the temporary
/// file/directory.
pub struct Sink {
    target: PathBuf,
    tmp: PathBuf,
    format: Format,
    schema: SchemaRef,
    overwrite: bool,
    layout: Layout,
    rows: u64,
    /// Set when a write failed part-way: such output is never committed.
    failed: bool,
    /// Set once the temporary output has been renamed into place or removed.
    settled: bool,
}

enum Layout {
    Single(Option<Box<FileWriter>>),
    Hive(Box<Hive>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("target", &self.target)
            .field("tmp", &self.tmp)
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Creates a sink writing `schema` to `path`. Nothing appears at `path` until
/// [`Sink::commit`]. Fails before writing anything if `path` exists and `options.overwrite` is
/// false, or if a partition-by column is missing.
pub fn create(path: &Path, schema: SchemaRef, options: &SinkOptions) -> Result<Sink, IoError> {
    let target = path.to_path_buf();
    let format = options
        .format
        .or_else(|| Format::from_path(path))
        .unwrap_or(Format::Parquet);
    let invalid = |reason: String| IoError::InvalidSink {
        path: target.clone(),
        reason,
    };
    let Some(name) = path.file_name() else {
        return Err(invalid("the output path must end in a file name".into()));
    };
    let name = name.to_string_lossy();
    let parent = parent_dir(path);
    let parent_meta =
        fs::metadata(&parent).map_err(|e| IoError::io(&parent, "cannot write to directory", e))?;
    if !parent_meta.is_dir() {
        return Err(invalid(format!("{} is not a directory", parent.display())));
    }
    remove_stale_temporaries(&parent, &name, path);
    if let Ok(existing) = fs::symlink_metadata(path) {
        if !options.overwrite {
            return Err(IoError::AlreadyExists { path: target });
        }
        check_replaceable(path, &existing, format)?;
    }

    let (layout, tmp) = if options.partition_by.is_empty() {
        let (tmp, file) = create_temp_file(&parent, &name)
            .map_err(|e| IoError::io(&parent, "cannot create a temporary file", e))?;
        let writer = match FileWriter::new(file, format, &schema) {
            Ok(writer) => writer,
            Err(reason) => {
                let _ = fs::remove_file(&tmp);
                return Err(IoError::Write {
                    path: target,
                    format,
                    reason,
                });
            }
        };
        (Layout::Single(Some(Box::new(writer))), tmp)
    } else {
        let hive = Hive::new(&schema, &options.partition_by, &target)?;
        let tmp = create_temp_dir(&parent, &name)
            .map_err(|e| IoError::io(&parent, "cannot create a temporary directory", e))?;
        (Layout::Hive(Box::new(hive)), tmp)
    };
    temporaries().push(tmp.clone());
    tracing::debug!(target = %target.display(), tmp = %tmp.display(), %format, "created sink");
    Ok(Sink {
        target,
        tmp,
        format,
        schema,
        overwrite: options.overwrite,
        layout,
        rows: 0,
        failed: false,
        settled: false,
    })
}

impl Sink {
    /// The output path (where the result appears on commit).
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// The output format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The schema batches must have.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Writes `batch` produced by partition `partition` (N in part-N). For a single-file sink,
    /// batches are appended in call order.
    ///
    /// After a failed write the sink refuses to commit, since the output may be incomplete.
    pub fn write(&mut self, partition: usize, batch: &RecordBatch) -> Result<(), IoError> {
        if self.failed {
            return Err(IoError::InvalidSink {
                path: self.target.clone(),
                reason: "an earlier write failed; the output will not be committed".into(),
            });
        }
        let batch = self.conform(batch)?;
        let result = match &mut self.layout {
            Layout::Single(Some(writer)) => {
                if batch.num_rows() == 0 {
                    Ok(())
                } else {
                    writer.write(&batch).map_err(|reason| IoError::Write {
                        path: self.target.clone(),
                        format: self.format,
                        reason,
                    })
                }
            }
            Layout::Single(None) => Ok(()),
            Layout::Hive(hive) => {
                hive.write(&self.tmp, &self.target, self.format, partition, &batch)
            }
        };
        match result {
            Ok(()) => {
                self.rows += batch.num_rows() as u64;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Checks a batch against the sink schema and relabels it with that schema (so field
    /// metadata and nullability are the sink's).
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch, IoError> {
        let mismatch = |detail: String| IoError::BatchSchema {
            path: self.target.clone(),
            detail,
        };
        let expected = self.schema.fields();
        let actual = batch.schema_ref().fields();
        if expected.len() != actual.len() {
            return Err(mismatch(format!(
                "it has {} columns, expected {}",
                actual.len(),
                expected.len()
            )));
        }
        for (e, a) in expected.iter().zip(actual.iter()) {
            if e.name() != a.name() {
                return Err(mismatch(format!(
                    "column \"{}\" where \"{}\" was expected",
                    a.name(),
                    e.name()
                )));
            }
            if e.data_type() != a.data_type() {
                return Err(mismatch(format!(
                    "column \"{}\" has type {}, expected {}",
                    a.name(),
                    a.data_type(),
                    e.data_type()
                )));
            }
        }
        if batch.schema_ref() == &self.schema {
            return Ok(batch.clone());
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(self.schema.clone(), batch.columns().to_vec(), &options)
            .map_err(|e| mismatch(arrow_reason(&e)))
    }

    /// Closes every writer (Parquet footers!), fsyncs files, renames into place.
    ///
    /// With `overwrite`, an existing output is replaced here: a file by an atomic rename; a
    /// directory by renaming it away, renaming the new output in, then deleting the old one.
    /// On error nothing is left behind but the previous output.
    pub fn commit(mut self) -> Result<SinkSummary, IoError> {
        if self.failed {
            return Err(IoError::InvalidSink {
                path: self.target.clone(),
                reason: "not committed: an earlier write failed".into(),
            });
        }
        let mut files = 0;
        let mut bytes = 0;
        let format = self.format;
        let mut close = |writer: FileWriter, path: PathBuf| -> Result<(), IoError> {
            let file = writer.finish().map_err(|reason| IoError::Write {
                path: path.clone(),
                format,
                reason,
            })?;
            file.sync_all()
                .map_err(|e| IoError::io(&path, "cannot sync", e))?;
            bytes += file
                .metadata()
                .map_err(|e| IoError::io(&path, "cannot stat", e))?
                .len();
            files += 1;
            Ok(())
        };
        match &mut self.layout {
            Layout::Single(writer) => {
                if let Some(writer) = writer.take() {
                    close(*writer, self.target.clone())?;
                }
            }
            Layout::Hive(hive) => {
                for file in std::mem::take(&mut hive.files) {
                    close(file.writer, self.target.join(&file.rel))?;
                }
                let marker = self.tmp.join(OUTPUT_MARKER);
                fs::write(&marker, format!("quiver {}\n", env!("CARGO_PKG_VERSION")))
                    .map_err(|e| IoError::io(self.target.join(OUTPUT_MARKER), "cannot write", e))?;
                // New directory entries are durable only once their directories are synced.
                for dir in std::iter::once(self.tmp.clone())
                    .chain(hive.dirs.iter().map(|d| self.tmp.join(d)))
                {
                    sync_dir(&dir).map_err(|e| IoError::io(&dir, "cannot sync", e))?;
                }
            }
        }
        {
            // Under the registry's lock, so an interrupting signal either finds the temporary
            // output still there to remove, or the output already in place.
            let mut registry = temporaries();
            install(&self.tmp, &self.target, self.overwrite, self.format)?;
            forget(&mut registry, &self.tmp);
        }
        self.settled = true;
        if let Err(e) = sync_dir(&parent_dir(&self.target)) {
            tracing::warn!(path = %self.target.display(), error = %e, "cannot sync the output's directory");
        }
        let summary = SinkSummary {
            path: self.target.clone(),
            files,
            rows: self.rows,
            bytes,
        };
        tracing::debug!(?summary, "committed sink");
        Ok(summary)
    }

    /// Discards everything written; the target is left as it was.
    pub fn abort(self) {
        tracing::debug!(target = %self.target.display(), "aborting sink");
        drop(self);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        // Close the writers before deleting what they write to.
        match &mut self.layout {
            Layout::Single(writer) => drop(writer.take()),
            Layout::Hive(hive) => hive.files.clear(),
        }
        let mut registry = temporaries();
        remove_temporary(&self.tmp);
        forget(&mut registry, &self.tmp);
    }
}

// ---------------------------------------------------------------------------------------------
// Temporary outputs: removed on a signal, and when their run is gone

/// The temporary outputs of the sinks not yet committed or dropped.
static TEMPORARIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn temporaries() -> MutexGuard<'static, Vec<PathBuf>> {
    TEMPORARIES.lock().unwrap_or_else(|e| e.into_inner())
}

fn forget(registry: &mut Vec<PathBuf>, tmp: &Path) {
    registry.retain(|p| p != tmp);
}

/// Removes a temporary output, file or directory; one already gone is fine.
fn remove_temporary(tmp: &Path) {
    let removed = match fs::symlink_metadata(tmp) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(tmp),
        Ok(_) => fs::remove_file(tmp),
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            path = %tmp.display(),
            error = %e,
            "cannot remove the temporary output"
        ),
    }
}

/// Removes the temporary output of every sink of this process not yet committed, for a process
/// about to exit on a signal; returns how many there were. Nothing can be committed afterwards:
/// the registry stays locked, so a commit under way either finished before or never will.
pub fn remove_temporary_outputs() -> usize {
    let registry = temporaries();
    for tmp in registry.iter() {
        remove_temporary(tmp);
    }
    let n = registry.len();
    std::mem::forget(registry);
    n
}

/// The process id in a temporary name of Quiver's for the output `name`
/// (`.<name>.quiver-tmp-<pid>-<16 hex digits>`, or `-old-` for a previous output moved aside),
/// and whether it is `old`.
fn temporary_owner(file_name: &str, name: &str) -> Option<(u32, bool)> {
    let rest = file_name.strip_prefix('.')?.strip_prefix(name)?;
    let rest = rest.strip_prefix(".quiver-")?;
    let (old, rest) = match rest.split_at_checked(4)? {
        ("tmp-", rest) => (false, rest),
        ("old-", rest) => (true, rest),
        _ => return None,
    };
    let (pid, random) = rest.split_once('-')?;
    let valid = !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit());
    Some((pid.parse().ok().filter(|_| valid)?, old))
}

/// Whether process `pid` is alive (or cannot be told: then it counts as alive).
fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Removes the temporary outputs for `target` left by runs that are no longer alive. A previous
/// output that such a run had moved aside is put back if nothing took its place.
fn remove_stale_temporaries(parent: &Path, name: &str, target: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some((pid, old)) = temporary_owner(&file_name.to_string_lossy(), name) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let path = entry.path();
        if old && fs::symlink_metadata(target).is_err() {
            match fs::rename(&path, target) {
                Ok(()) => tracing::warn!(
                    path = %target.display(),
                    from = %path.display(),
                    "restored the previous output an interrupted run (process {pid}) had moved aside"
                ),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot restore a previous output")
                }
            }
            continue;
        }
        tracing::warn!(
            path = %path.display(),
            "removing the temporary output of a run that is gone (process {pid})"
        );
        remove_temporary(&path);
    }
}

// ---------------------------------------------------------------------------------------------
// What --overwrite may replace

/// Refuses to replace `path` unless Quiver wrote it: a regular file of the output's `format`,
/// a directory with [`OUTPUT_MARKER`], or an empty directory.
fn check_replaceable(path: &Path, meta: &fs::Metadata, format: Format) -> Result<(), IoError> {
    let reason = if meta.file_type().is_symlink() {
        Some("it is a symbolic link (--overwrite replaces files and directories, not links)".into())
    } else if meta.is_dir() {
        let mut entries =
            fs::read_dir(path).map_err(|e| IoError::io(path, "cannot list directory", e))?;
        let empty = entries.next().is_none();
        let marked = fs::symlink_metadata(path.join(OUTPUT_MARKER)).is_ok_and(|m| m.is_file());
        (!empty && !marked).then(|| {
            format!(
                "it is a directory Quiver did not write (it has no {OUTPUT_MARKER} file); remove it or choose another output"
            )
        })
    } else if meta.is_file() {
        sniff(path, format)
            .map_err(|e| IoError::io(path, "cannot read", e))?
            .then(|| format!("it is not a {format} file; remove it or choose another output"))
    } else {
        Some("it is not a regular file or a directory".into())
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(IoError::NotReplaceable {
            path: path.to_path_buf(),
            reason,
        }),
    }
}

/// Whether the regular file at `path` is NOT of `format` (`Ok(true)`: it is foreign).
/// Parquet and Arrow IPC files carry their magic at both ends; CSV and JSON lines are text
/// (valid UTF-8 without NUL in their first 64 KiB), and the first value of JSON lines is an
/// object.
fn sniff(path: &Path, format: Format) -> io::Result<bool> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let magic_at_both_ends = |file: &mut File, magic: &[u8]| -> io::Result<bool> {
        let n = magic.len() as u64;
        if len < 2 * n {
            return Ok(false);
        }
        let mut head = vec![0; magic.len()];
        file.read_exact(&mut head)?;
        let mut tail = vec![0; magic.len()];
        file.seek(SeekFrom::End(-(n as i64)))?;
        file.read_exact(&mut tail)?;
        Ok(head == magic && tail == magic)
    };
    Ok(match format {
        Format::Parquet => !magic_at_both_ends(&mut file, b"PAR1")?,
        Format::Ipc => !magic_at_both_ends(&mut file, b"ARROW1")?,
        Format::Csv | Format::Jsonl => {
            let mut head = Vec::new();
            (&mut file).take(SNIFF_BYTES).read_to_end(&mut head)?;
            let text = match std::str::from_utf8(&head) {
                Ok(_) => true,
                // Cut in the middle of a character at the end of what was read.
                Err(e) => e.error_len().is_none() && len > SNIFF_BYTES,
            };
            if !text || head.contains(&0) {
                return Ok(true);
            }
            if format == Format::Csv {
                return Ok(false);
            }
            file.rewind()?;
            let mut values = serde_json::Deserializer::from_reader(io::BufReader::new(file))
                .into_iter::<serde_json::Value>();
            !matches!(values.next(), None | Some(Ok(serde_json::Value::Object(_))))
        }
    })
}

/// Refuses outputs that are, or hold, one of the run's `inputs`: each of `outputs` is a path
/// and what it is ("output", "dead-letter directory", …). Checked by file identity (device and
/// inode, whatever the path) and, for directories, by canonical path.
pub fn check_not_inputs(
    outputs: &[(&Path, &'static str)],
    inputs: &[PathBuf],
) -> Result<(), IoError> {
    let inputs: Vec<_> = inputs
        .iter()
        .map(|p| {
            let id = fs::metadata(p).ok().as_ref().and_then(file_id);
            (p, id, fs::canonicalize(p).ok())
        })
        .collect();
    for &(output, what) in outputs {
        let Ok(meta) = fs::metadata(output) else {
            continue;
        };
        let id = file_id(&meta);
        let dir = meta
            .is_dir()
            .then(|| fs::canonicalize(output).ok())
            .flatten();
        for (input, input_id, canonical) in &inputs {
            let same = id.is_some() && id == *input_id;
            let inside = matches!((&dir, canonical), (Some(d), Some(c)) if c.starts_with(d));
            if same || inside {
                return Err(IoError::OutputIsInput {
                    path: output.to_path_buf(),
                    what,
                    input: input.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Hive partitioning

struct Hive {
    /// Indices of the partition-by columns, in partition-by order.
    keys: Vec<usize>,
    key_names: Vec<String>,
    /// Indices of the columns written to files.
    keep: Vec<usize>,
    file_schema: SchemaRef,
    converter: RowConverter,
    /// Open files, in creation order, and their index by (directory, partition).
    files: Vec<HiveFile>,
    index: HashMap<(PathBuf, usize), usize>,
    /// Directories created under the temporary root (relative), for syncing.
    dirs: BTreeSet<PathBuf>,
}

struct HiveFile {
    /// Path relative to the output root.
    rel: PathBuf,
    writer: FileWriter,
}

impl Hive {
    fn new(schema: &SchemaRef, partition_by: &[String], target: &Path) -> Result<Self, IoError> {
        let invalid = |reason: String| IoError::InvalidSink {
            path: target.to_path_buf(),
            reason,
        };
        let mut keys = Vec::with_capacity(partition_by.len());
        for name in partition_by {
            let index = schema
                .index_of(name)
                .map_err(|_| IoError::UnknownPartitionColumn {
                    path: target.to_path_buf(),
                    column: name.clone(),
                    available: schema.fields().iter().map(|f| f.name().clone()).collect(),
                })?;
            if keys.contains(&index) {
                return Err(invalid(format!(
                    "partition column \"{name}\" is listed twice"
                )));
            }
            let data_type = schema.field(index).data_type();
            if data_type.is_nested() {
                return Err(invalid(format!(
                    "cannot partition by \"{name}\": its type {data_type} has no text form for a directory name"
                )));
            }
            keys.push(index);
        }
        let keep: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !keys.contains(i))
            .collect();
        if keep.is_empty() {
            return Err(invalid(
                "cannot partition by every column: the files would have no columns".into(),
            ));
        }
        let file_schema = Arc::new(
            schema
                .project(&keep)
                .map_err(|e| invalid(arrow_reason(&e)))?,
        );
        let converter = RowConverter::new(
            keys.iter()
                .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                .collect(),
        )
        .map_err(|e| invalid(arrow_reason(&e)))?;
        Ok(Hive {
            key_names: keys
                .iter()
                .map(|&i| schema.field(i).name().clone())
                .collect(),
            keys,
            keep,
            file_schema,
            converter,
            files: Vec::new(),
            index: HashMap::new(),
            dirs: BTreeSet::new(),
        })
    }

    /// Splits `batch` by key values (rows keep their order within each group) and appends each
    /// group to its directory's file for `partition`.
    fn write(
        &mut self,
        root: &Path,
        target: &Path,
        format: Format,
        partition: usize,
        batch: &RecordBatch,
    ) -> Result<(), IoError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let internal = |e: arrow::error::ArrowError| IoError::Write {
            path: target.to_path_buf(),
            format,
            reason: arrow_reason(&e),
        };
        let key_columns: Vec<ArrayRef> =
            self.keys.iter().map(|&i| batch.column(i).clone()).collect();
        // The row format gives each distinct key tuple one byte string to group by.
        let rows = self
            .converter
            .convert_columns(&key_columns)
            .map_err(internal)?;
        let mut group_of: HashMap<&[u8], usize> = HashMap::new();
        let mut groups: Vec<Vec<u32>> = Vec::new();
        for i in 0..batch.num_rows() {
            let group = *group_of.entry(rows.row(i).data()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[group].push(i as u32);
        }
        let data = batch.project(&self.keep).map_err(internal)?;
        let data = RecordBatch::try_new_with_options(
            self.file_schema.clone(),
            data.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(data.num_rows())),
        )
        .map_err(internal)?;
        let options = FormatOptions::default();
        let formatters = key_columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let nulls: Vec<_> = key_columns.iter().map(|c| c.logical_nulls()).collect();

        for members in &groups {
            let first = members[0] as usize;
            let mut dir = PathBuf::new();
            for ((name, formatter), nulls) in self.key_names.iter().zip(&formatters).zip(&nulls) {
                let value = match nulls {
                    Some(n) if n.is_null(first) => HIVE_DEFAULT_PARTITION.to_string(),
                    _ => escape_path_part(&formatter.value(first).to_string()),
                };
                dir.push(format!("{}={value}", escape_path_part(name)));
            }
            let part = if groups.len() == 1 {
                data.clone()
            } else {
                let indices = UInt32Array::from(members.clone());
                arrow::compute::take_record_batch(&data, &indices).map_err(internal)?
            };
            let file = self.file(root, target, format, dir, partition)?;
            file.writer.write(&part).map_err(|reason| IoError::Write {
                path: target.join(&file.rel),
                format,
                reason,
            })?;
        }
        Ok(())
    }

    /// The open file for (`dir`, `partition`), created on first use.
    fn file(
        &mut self,
        root: &Path,
        target: &Path,
        format: Format,
        dir: PathBuf,
        partition: usize,
    ) -> Result<&mut HiveFile, IoError> {
        let key = (dir, partition);
        if let Some(&i) = self.index.get(&key) {
            return Ok(&mut self.files[i]);
        }
        let (dir, partition) = key;
        let abs_dir = root.join(&dir);
        fs::create_dir_all(&abs_dir)
            .map_err(|e| IoError::io(target.join(&dir), "cannot create directory", e))?;
        let mut prefix = PathBuf::new();
        for component in dir.components() {
            prefix.push(component);
            self.dirs.insert(prefix.clone());
        }
        let rel = dir.join(format!("part-{partition}.{}", format.extension()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(root.join(&rel))
            .map_err(|e| IoError::io(target.join(&rel), "cannot create", e))?;
        let writer =
            FileWriter::new(file, format, &self.file_schema).map_err(|reason| IoError::Write {
                path: target.join(&rel),
                format,
                reason,
            })?;
        self.files.push(HiveFile { rel, writer });
        self.index.insert((dir, partition), self.files.len() - 1);
        Ok(self.files.last_mut().expect("just pushed"))
    }
}

/// Percent-encodes what cannot appear literally in a Hive path segment: `/`, `\`, `=`, `%` and
/// control characters.
fn escape_path_part(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '/' | '\\' | '=' | '%') || c.is_control() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// File writers

/// One output file being written, in any format (streaming mode writes its epoch files with
/// it too).
pub struct FileWriter(Writer);

enum Writer {
    // ArrowWriter buffers internally, so it gets the file directly.
    Parquet(ArrowWriter<File>),
    Csv {
        writer: arrow::csv::Writer<BufWriter<File>>,
        schema: SchemaRef,
        empty: bool,
    },
    Jsonl(arrow::json::LineDelimitedWriter<BufWriter<File>>),
    Ipc(arrow::ipc::writer::FileWriter<BufWriter<File>>),
}

impl FileWriter {
    /// A writer of `format` with `schema` into `file`.
    pub fn new(file: File, format: Format, schema: &SchemaRef) -> Result<Self, String> {
        Ok(FileWriter(match format {
            Format::Parquet => {
                let mut props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS));
                // Floats rarely repeat: dictionary encoding would hash every value only to
                // give up when the dictionary overflows (a sixth of the writer's time on
                // feature tables), so they are written plain.
                for field in schema.fields() {
                    if matches!(
                        field.data_type(),
                        DataType::Float16 | DataType::Float32 | DataType::Float64
                    ) {
                        props = props.set_column_dictionary_enabled(
                            ColumnPath::new(vec![field.name().clone()]),
                            false,
                        );
                    }
                }
                let props = props.build();
                Writer::Parquet(
                    ArrowWriter::try_new(file, schema.clone(), Some(props))
                        .map_err(|e| e.to_string())?,
                )
            }
            Format::Csv => Writer::Csv {
                writer: arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(BufWriter::new(file)),
                schema: schema.clone(),
                empty: true,
            },
            Format::Jsonl => {
                Writer::Jsonl(arrow::json::LineDelimitedWriter::new(BufWriter::new(file)))
            }
            Format::Ipc => Writer::Ipc(
                arrow::ipc::writer::FileWriter::try_new(BufWriter::new(file), schema)
                    .map_err(|e| arrow_reason(&e))?,
            ),
        }))
    }

    /// Writes one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match &mut self.0 {
            Writer::Parquet(w) => {
                w.write(batch).map_err(|e| e.to_string())?;
                // A row group is buffered until it closes: past a size, close it early so the
                // buffer stays bounded whatever the rows weigh (README: host memory).
                if w.in_progress_size() > PARQUET_ROW_GROUP_BYTES {
                    w.flush().map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Writer::Csv { writer, empty, .. } => {
                *empty = false;
                writer.write(batch).map_err(|e| arrow_reason(&e))
            }
            Writer::Jsonl(w) => w.write(batch).map_err(|e| arrow_reason(&e)),
            Writer::Ipc(w) => w.write(batch).map_err(|e| arrow_reason(&e)),
        }
    }

    /// Writes footers and trailers, flushes, and returns the file for syncing.
    pub fn finish(self) -> Result<File, String> {
        let buffered = match self.0 {
            Writer::Parquet(w) => return w.into_inner().map_err(|e| e.to_string()),
            Writer::Csv {
                mut writer,
                schema,
                empty,
            } => {
                if empty {
                    // The header is written with the first batch; an empty file still gets one.
                    writer
                        .write(&RecordBatch::new_empty(schema))
                        .map_err(|e| arrow_reason(&e))?;
                }
                writer.into_inner()
            }
            Writer::Jsonl(mut w) => {
                w.finish().map_err(|e| arrow_reason(&e))?;
                w.into_inner()
            }
            Writer::Ipc(mut w) => {
                w.finish().map_err(|e| arrow_reason(&e))?;
                w.into_inner().map_err(|e| arrow_reason(&e))?
            }
        };
        buffered.into_inner().map_err(|e| e.error().to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Files and renames

/// Renames the finished temporary output `tmp` to `target`.
fn install(tmp: &Path, target: &Path, overwrite: bool, format: Format) -> Result<(), IoError> {
    let rename_err = |e| IoError::io(target, "cannot move the output into place", e);
    let existing = match fs::symlink_metadata(target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return fs::rename(tmp, target).map_err(rename_err);
        }
        Err(e) => return Err(IoError::io(target, "cannot inspect", e)),
    };
    // Checked again: the target may have appeared since `create`.
    if !overwrite {
        return Err(IoError::AlreadyExists {
            path: target.to_path_buf(),
        });
    }
    check_replaceable(target, &existing, format)?;
    let tmp_is_dir = fs::symlink_metadata(tmp)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if !existing.is_dir() && !tmp_is_dir {
        // rename(2) replaces a file atomically.
        return fs::rename(tmp, target).map_err(rename_err);
    }
    // A directory cannot be replaced in one step: move the old one aside first.
    let name = target
        .file_name()
        .map_or("output".into(), |n| n.to_string_lossy());
    let old = temp_sibling(&parent_dir(target), &name, "old");
    fs::rename(target, &old)
        .map_err(|e| IoError::io(target, "cannot move the previous output aside", e))?;
    if let Err(e) = fs::rename(tmp, target) {
        if let Err(back) = fs::rename(&old, target) {
            tracing::error!(
                old = %old.display(),
                target = %target.display(),
                error = %back,
                "cannot restore the previous output"
            );
        }
        return Err(rename_err(e));
    }
    let removed = if existing.is_dir() {
        fs::remove_dir_all(&old)
    } else {
        fs::remove_file(&old)
    };
    if let Err(e) = removed {
        tracing::warn!(path = %old.display(), error = %e, "cannot remove the previous output");
    }
    Ok(())
}

// A sink moves to the writer of a run: checked when compiling.
const _: () = {
    const fn send<T: Send>() {}
    send::<Sink>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{open, SourceOptions};
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn batch(ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec()))]).unwrap()
    }

    fn read_ids(path: &Path) -> Vec<i64> {
        let source = open(
            &[path.to_str().unwrap().to_string()],
            &SourceOptions::default(),
        )
        .unwrap();
        source
            .batches()
            .flat_map(|b| {
                let b = b.unwrap().batch;
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn nothing_appears_before_commit_and_abort_or_drop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.parquet");
        let b = batch(&[1, 2, 3]);

        let mut sink = create(&target, b.schema(), &SinkOptions::default()).unwrap();
        sink.write(0, &b).unwrap();
        assert!(!target.exists());
        assert_eq!(
            entries(dir.path()).len(),
            1,
            "one temporary file while writing"
        );
        assert!(entries(dir.path())[0].starts_with(".out.parquet.quiver-tmp-"));
        sink.abort();
        assert!(entries(dir.path()).is_empty());

        let options = SinkOptions {
            partition_by: vec!["k".into()],
            ..Default::default()
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let hb = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let mut sink = create(&dir.path().join("hive"), schema, &options).unwrap();
        sink.write(3, &hb).unwrap();
        drop(sink);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn existing_target_without_overwrite_is_an_error_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.parquet");
        fs::write(&target, b"precious").unwrap();
        let err = create(&target, batch(&[]).schema(), &SinkOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} already exists; pass --overwrite to replace it",
                target.display()
            )
        );
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert_eq!(entries(dir.path()), ["out.parquet"]);
    }

    #[test]
    fn overwrite_replaces_only_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.parquet");
        let options = SinkOptions {
            overwrite: true,
            ..Default::default()
        };
        let mut sink = create(&target, batch(&[]).schema(), &options).unwrap();
        sink.write(0, &batch(&[1, 2])).unwrap();
        sink.commit().unwrap();
        assert_eq!(read_ids(&target), [1, 2]);

        let mut sink = create(&target, batch(&[]).schema(), &options).unwrap();
        sink.write(0, &batch(&[3])).unwrap();
        assert_eq!(read_ids(&target), [1, 2], "old file intact before commit");
        sink.abort();
        assert_eq!(read_ids(&target), [1, 2], "old file intact after abort");

        let mut sink = create(&target, batch(&[]).schema(), &options).unwrap();
        sink.write(0, &batch(&[3])).unwrap();
        sink.write(1, &batch(&[4, 5])).unwrap();
        let summary = sink.commit().unwrap();
        assert_eq!(read_ids(&target), [3, 4, 5]);
        assert_eq!(summary.rows, 3);
        assert_eq!(entries(dir.path()), ["out.parquet"]);

        // A directory output replaces a directory, also only at commit.
        let hive_target = dir.path().join("hive");
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
        ]));
        let hive_batch = |k: i64, ids: &[i64]| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(vec![k; ids.len()])),
                    Arc::new(Int64Array::from(ids.to_vec())),
                ],
            )
            .unwrap()
        };
        let options = SinkOptions {
            partition_by: vec!["k".into()],
            overwrite: true,
            ..Default::default()
        };
        let mut sink = create(&hive_target, schema.clone(), &options).unwrap();
        sink.write(0, &hive_batch(1, &[10])).unwrap();
        sink.commit().unwrap();
        let mut sink = create(&hive_target, schema.clone(), &options).unwrap();
        sink.write(0, &hive_batch(2, &[20])).unwrap();
        assert_eq!(entries(&hive_target), [OUTPUT_MARKER, "k=1"]);
        sink.commit().unwrap();
        assert_eq!(entries(&hive_target), [OUTPUT_MARKER, "k=2"]);
        assert_eq!(read_ids(&hive_target.join("k=2")), [20]);
        assert_eq!(entries(dir.path()), ["hive", "out.parquet"]);
    }

    #[test]
    fn hive_layout_escapes_values_drops_keys_and_groups_rows() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, true),
            Field::new("year", DataType::Int64, true),
        ]));
        let regions = [
            Some("eu"),
            Some("us/east"),
            None,
            Some("eu"),
            Some("us/east"),
            Some("eu"),
            None,
            Some("a=b%"),
        ];
        let years = [
            Some(2024),
            Some(2024),
            Some(2023),
            Some(2023),
            Some(2024),
            Some(2024),
            None,
            Some(1),
        ];
        let ids: Vec<i64> = (0..regions.len() as i64).collect();
        let make = |range: std::ops::Range<usize>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids[range.clone()].to_vec())),
                    Arc::new(StringArray::from(regions[range.clone()].to_vec())),
                    Arc::new(Int64Array::from(years[range].to_vec())),
                ],
            )
            .unwrap()
        };
        let options = SinkOptions {
            format: Some(Format::Csv),
            partition_by: vec!["region".into(), "year".into()],
            overwrite: false,
        };
        let mut sink = create(&target, schema.clone(), &options).unwrap();
        sink.write(0, &make(0..4)).unwrap();
        sink.write(1, &make(4..8)).unwrap();
        let summary = sink.commit().unwrap();
        assert_eq!(summary.rows, 8);

        // Expected directories and their rows, counted directly from the input.
        let mut expected: HashMap<(String, String), Vec<(usize, i64)>> = HashMap::new();
        for i in 0..regions.len() {
            let region = match regions[i] {
                None => "__HIVE_DEFAULT_PARTITION__".to_string(),
                Some(r) => r
                    .replace('%', "%25")
                    .replace('/', "%2F")
                    .replace('=', "%3D"),
            };
            let year = years[i].map_or("__HIVE_DEFAULT_PARTITION__".to_string(), |y| y.to_string());
            let partition = if i < 4 { 0 } else { 1 };
            expected
                .entry((format!("region={region}"), format!("year={year}")))
                .or_default()
                .push((partition, ids[i]));
        }
        let mut region_dirs: Vec<String> = expected.keys().map(|k| k.0.clone()).collect();
        region_dirs.sort();
        region_dirs.dedup();
        let mut listed = entries(&target);
        assert_eq!(listed.remove(0), OUTPUT_MARKER, "the marker is written");
        assert_eq!(listed, region_dirs);
        assert!(region_dirs.contains(&"region=us%2Feast".to_string()));
        assert!(region_dirs.contains(&"region=a%3Db%25".to_string()));
        assert!(region_dirs.contains(&"region=__HIVE_DEFAULT_PARTITION__".to_string()));

        let mut files = 0;
        for ((region, year), rows) in &expected {
            let leaf = target.join(region).join(year);
            let mut partitions: Vec<usize> = rows.iter().map(|r| r.0).collect();
            partitions.dedup();
            let names: Vec<String> = partitions.iter().map(|p| format!("part-{p}.csv")).collect();
            assert_eq!(entries(&leaf), names, "{}", leaf.display());
            files += names.len();
            for p in partitions {
                let file = leaf.join(format!("part-{p}.csv"));
                let text = fs::read_to_string(&file).unwrap();
                // Key columns are not in the files.
                assert_eq!(text.lines().next(), Some("id"), "{}", file.display());
                let want: Vec<i64> = rows.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
                assert_eq!(read_ids(&file), want, "{}", file.display());
            }
        }
        assert_eq!(summary.files, files);
        assert!(entries(dir.path()) == ["out"], "no temporary left");
    }

    #[test]
    fn missing_partition_column_is_named_with_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Utf8, false),
        ]));
        let options = SinkOptions {
            partition_by: vec!["c".into()],
            ..Default::default()
        };
        let err = create(&dir.path().join("out"), schema, &options).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("out: cannot partition by \"c\": no such column (columns: a, b)"),
            "{err}"
        );
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn failed_write_prevents_commit_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let mut sink = create(&target, batch(&[]).schema(), &SinkOptions::default()).unwrap();
        sink.write(0, &batch(&[1])).unwrap();
        let wrong = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap();
        let err = sink.write(0, &wrong).unwrap_err();
        assert!(
            err.to_string()
                .contains("column \"id\" has type Utf8, expected Int64"),
            "{err}"
        );
        // A schema mismatch is caught before anything is written, so the sink is still usable.
        sink.write(0, &batch(&[2])).unwrap();
        let summary = sink.commit().unwrap();
        assert_eq!(summary.rows, 2);
        assert_eq!(read_ids(&target), [1, 2]);
    }

    #[test]
    fn a_failed_write_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "xs",
            DataType::List(item),
            true,
        )]));
        let lists = arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Int64Type, _, _>(
            vec![Some(vec![Some(1)])],
        );
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(lists)]).unwrap();
        let mut sink = create(&target, schema, &SinkOptions::default()).unwrap();
        let err = sink.write(0, &batch).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot write csv: ", target.display())),
            "{err}"
        );
        assert!(sink.write(0, &batch).is_err(), "the sink stays failed");
        let err = sink.commit().unwrap_err();
        assert!(err.to_string().contains("not committed"), "{err}");
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn empty_outputs_are_valid_files() {
        let dir = tempfile::tempdir().unwrap();
        for format in Format::ALL {
            let target = dir.path().join(format!("empty.{}", format.extension()));
            let sink = create(&target, batch(&[]).schema(), &SinkOptions::default()).unwrap();
            let summary = sink.commit().unwrap();
            assert_eq!(summary.rows, 0);
            assert_eq!(summary.files, 1);
            if format != Format::Jsonl {
                // JSON lines has no header, so an empty file has no schema to read back.
                assert_eq!(read_ids(&target), Vec::<i64>::new(), "{format}");
            }
        }
        assert_eq!(
            fs::read_to_string(dir.path().join("empty.csv")).unwrap(),
            "id\n"
        );
    }

    #[test]
    fn temporary_names_give_their_process_and_kind() {
        let owner = |file: &str| temporary_owner(file, "out.parquet");
        assert_eq!(
            owner(".out.parquet.quiver-tmp-4242-00000000deadbeef"),
            Some((4242, false))
        );
        assert_eq!(
            owner(".out.parquet.quiver-old-7-0123456789abcdef"),
            Some((7, true))
        );
        for other in [
            ".out.parquet.quiver-tmp-4242-deadbeef",
            ".out.parquet.quiver-tmp--0123456789abcdef",
            ".out.parquet.quiver-tmp-42x-0123456789abcdef",
            ".out.parquet.quiver-new-42-0123456789abcdef",
            ".other.parquet.quiver-tmp-42-0123456789abcdef",
            "out.parquet.quiver-tmp-42-0123456789abcdef",
            ".out.parquet.quiver-tmp-99999999999-0123456789abcdef",
        ] {
            assert_eq!(owner(other), None, "{other}");
        }
        // The name a sink makes parses back to this process.
        let made = temp_sibling(Path::new("."), "out.parquet", "tmp");
        let made = made.file_name().unwrap().to_str().unwrap();
        assert_eq!(owner(made), Some((std::process::id(), false)));
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(!process_alive(dead));
    }

    #[test]
    fn overwrite_replaces_only_files_of_the_format_and_marked_or_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let schema = batch(&[]).schema();
        // Outputs written by a sink, in every format, are recognised.
        for format in [Format::Parquet, Format::Csv, Format::Jsonl, Format::Ipc] {
            let path = dir.path().join(format!("out.{}", format.extension()));
            let options = SinkOptions {
                format: Some(format),
                overwrite: true,
                ..Default::default()
            };
            for ids in [&[1, 2][..], &[]] {
                let mut sink = create(&path, schema.clone(), &options).unwrap();
                sink.write(0, &batch(ids)).unwrap();
                sink.commit().unwrap();
                assert!(!sniff(&path, format).unwrap(), "{format} {ids:?}");
            }
        }
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            path
        };
        let foreign = [
            (
                write("a.parquet", b"PAR1 but not at the end"),
                Format::Parquet,
            ),
            (write("b.parquet", b"PAR"), Format::Parquet),
            (write("c.arrow", b"ARROW1 only at the start"), Format::Ipc),
            (write("d.csv", b"a,b\n\x00\x01\x02"), Format::Csv),
            (write("e.csv", b"\xff\xfe\xfd"), Format::Csv),
            (write("f.jsonl", b"[1]\n"), Format::Jsonl),
            (write("g.jsonl", b"hello\n"), Format::Jsonl),
        ];
        for (path, format) in &foreign {
            assert!(sniff(path, *format).unwrap(), "{}", path.display());
            let before = fs::read(path).unwrap();
            let options = SinkOptions {
                format: Some(*format),
                overwrite: true,
                ..Default::default()
            };
            let err = create(path, schema.clone(), &options).unwrap_err();
            assert!(matches!(err, IoError::NotReplaceable { .. }), "{err}");
            assert_eq!(fs::read(path).unwrap(), before);
        }
        assert!(!sniff(&write("h.jsonl", b"\n  \n{\"a\": [1]}\n"), Format::Jsonl).unwrap());
        assert!(!sniff(&write("i.csv", "é,ß\n".as_bytes()), Format::Csv).unwrap());

        // Directories: empty, or marked, or refused (and left as they were).
        let options = SinkOptions {
            overwrite: true,
            ..Default::default()
        };
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let mut sink = create(&empty, schema.clone(), &options).unwrap();
        sink.write(0, &batch(&[5])).unwrap();
        sink.commit().unwrap();
        assert!(empty.is_file() && !sniff(&empty, Format::Parquet).unwrap());
        let unmarked = dir.path().join("unmarked");
        fs::create_dir(&unmarked).unwrap();
        fs::write(unmarked.join("notes.txt"), "mine").unwrap();
        let err = create(&unmarked, schema.clone(), &options).unwrap_err();
        assert!(err.to_string().contains(OUTPUT_MARKER), "{err}");
        assert_eq!(entries(&unmarked), ["notes.txt"]);
        fs::write(unmarked.join(OUTPUT_MARKER), "").unwrap();
        create(&unmarked, schema.clone(), &options)
            .unwrap()
            .commit()
            .unwrap();
        assert!(unmarked.is_file());

        // A link is never replaced.
        let link = dir.path().join("link.parquet");
        std::os::unix::fs::symlink(dir.path().join("out.parquet"), &link).unwrap();
        let err = create(&link, schema, &options).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn outputs_that_are_or_hold_an_input_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("sub/in.parquet");
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(&input, "x").unwrap();
        fs::hard_link(&input, dir.path().join("hard.parquet")).unwrap();
        let inputs = [input.clone()];
        for output in ["sub/in.parquet", "hard.parquet", "sub", "."] {
            let output = dir.path().join(output);
            let err = check_not_inputs(&[(&output, "output")], &inputs).unwrap_err();
            assert!(matches!(err, IoError::OutputIsInput { .. }), "{err}");
        }
        for output in ["other.parquet", "sub/other.parquet"] {
            let output = dir.path().join(output);
            check_not_inputs(&[(&output, "output")], &inputs).unwrap();
        }
    }

    #[test]
    fn escapes_path_parts() {
        assert_eq!(escape_path_part("a/b=c%d"), "a%2Fb%3Dc%25d");
        assert_eq!(escape_path_part("tab\there\n"), "tab%09here%0A");
        assert_eq!(escape_path_part("café"), "café");
    }
}
