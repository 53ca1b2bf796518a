//! Reading input files: path expansion, format detection, schema unification and batch iteration.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileReader, StreamReader};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};

use super::csv_quotes::{QuoteChecked, UnclosedQuote, UNCLOSED_MESSAGE};
use super::{arrow_reason, file_id, Format, IoError};

/// How input files are found and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOptions {
    /// The format of every file; `None` detects it per file from the extension.
    pub format: Option<Format>,
    /// The maximum number of rows per batch.
    pub batch_size: usize,
    /// Whether CSV files start with a header line naming the columns.
    pub csv_has_header: bool,
    /// The CSV field delimiter.
    pub csv_delimiter: u8,
    /// How many rows of each CSV or JSON file to look at to infer column types; 0 reads them all.
    pub schema_infer_rows: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            format: None,
            batch_size: 65536,
            csv_has_header: true,
            csv_delimiter: b',',
            schema_infer_rows: 1000,
        }
    }
}

impl SourceOptions {
    fn infer_limit(&self) -> Option<usize> {
        (self.schema_infer_rows > 0).then_some(self.schema_infer_rows)
    }

    fn batch_size(&self) -> usize {
        self.batch_size.max(1)
    }
}

/// A batch read from a file, with where it came from.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// The rows, with the source's schema.
    pub batch: RecordBatch,
    /// The file the rows come from.
    pub file: Arc<Path>,
    /// The 0-based index, within its file, of the batch's first row.
    pub first_row: u64,
}

/// A set of input files with one schema.
#[derive(Debug, Clone)]
pub struct Source {
    files: Vec<PathBuf>,
    entries: Arc<[Entry]>,
    schema: SchemaRef,
    options: SourceOptions,
}

#[derive(Debug, Clone)]
struct Entry {
    path: Arc<Path>,
    format: Format,
    /// The footer parsed by [`open`], so reading does not parse it again.
    parquet: Option<ArrowReaderMetadata>,
    /// A CSV or JSON-lines file with nothing in it: it contributes no rows.
    empty: bool,
    /// A file of a lake table: its columns are matched to the source schema by name, and
    /// these columns (the table's partition columns, not stored in the file) take one value
    /// for all its rows.
    table: Option<PartitionValues>,
}

/// (column, value as text; `None` for null) of each partition column of a lake table's file.
type PartitionValues = Arc<[(String, Option<String>)]>;

/// A data file of a lake table, with the values its partition columns have for every row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    /// The Parquet file.
    pub path: PathBuf,
    /// (column, value as text; `None` for null) for each partition column.
    pub partition_values: Vec<(String, Option<String>)>,
}

/// The files of a lake table version as one source with the table's `schema`: each file's
/// columns are matched by name and cast to the table's types, and partition columns are
/// filled from the file's partition values.
pub fn open_table(
    files: Vec<TableFile>,
    schema: SchemaRef,
    options: &SourceOptions,
) -> Result<Source, IoError> {
    let mut entries = Vec::with_capacity(files.len());
    for file in &files {
        let (_, parquet) = probe(&file.path, Format::Parquet, options)?;
        entries.push(Entry {
            path: Arc::from(file.path.as_path()),
            format: Format::Parquet,
            parquet,
            empty: false,
            table: Some(file.partition_values.clone().into()),
        });
    }
    Ok(Source {
        files: files.into_iter().map(|f| f.path).collect(),
        entries: entries.into(),
        schema,
        options: options.clone(),
    })
}

/// The files `paths` name (files, glob patterns, directories), as [`open`] would read them,
/// without reading them.
pub fn expand_paths(paths: &[String]) -> Result<Vec<PathBuf>, IoError> {
    expand(paths)
}

/// Expands paths and glob patterns (sorted, deduplicated; a pattern matching nothing is an error
/// naming it; a directory means all files in it with a known extension, sorted), detects formats,
/// and reads each file's schema.
///
/// Files keep the order of `paths`; the matches of one pattern or directory are sorted, and a
/// file named twice is read once (where it first appears). Hidden files (`.x`) and files starting
/// with `_` in directories, and hidden files matched by `*`, are skipped. CSV and JSON schemas
/// are inferred per file and then unified (a column that is empty in one file takes its type
/// from another; Int64 widens to Float64); any other difference is an error naming both files.
///
/// Two different paths to one file (a symbolic or hard link to a file already given) are an
/// error naming both. An empty CSV or JSON-lines file (no header, no rows) contributes no rows
/// when another file gives the schema, and is an error otherwise. A CSV quoted field that is
/// never closed is an error naming the line where it opened.
pub fn open(paths: &[String], options: &SourceOptions) -> Result<Source, IoError> {
    let files = expand(paths)?;
    let mut entries = Vec::with_capacity(files.len());
    let mut unifier: Option<Unifier> = None;
    let mut first_empty: Option<IoError> = None;
    for (index, path) in files.iter().enumerate() {
        let format = options
            .format
            .or_else(|| Format::from_path(path))
            .ok_or_else(|| IoError::UnknownFormat { path: path.clone() })?;
        let (schema, parquet) = match probe(path, format, options) {
            Err(e @ IoError::NoData { .. }) => {
                first_empty.get_or_insert(e);
                entries.push(Entry {
                    path: Arc::from(path.as_path()),
                    format,
                    parquet: None,
                    empty: true,
                    table: None,
                });
                continue;
            }
            other => other?,
        };
        let inferred = matches!(format, Format::Csv | Format::Jsonl);
        match &mut unifier {
            None => unifier = Some(Unifier::new(&schema, inferred, index)),
            Some(unifier) => unifier.add(index, &schema, inferred, &files, options)?,
        }
        entries.push(Entry {
            path: Arc::from(path.as_path()),
            format,
            parquet,
            empty: false,
            table: None,
        });
    }
    let any_csv = entries.iter().any(|e| e.format == Format::Csv);
    let schema = match (unifier, first_empty) {
        (Some(unifier), _) => unifier.finish(any_csv),
        (None, Some(empty)) => return Err(empty),
        (None, None) => Arc::new(Schema::empty()),
    };
    tracing::debug!(files = files.len(), schema = %schema, "opened source");
    Ok(Source {
        files,
        entries: entries.into(),
        schema,
        options: options.clone(),
    })
}

impl Source {
    /// The schema every batch has.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The files, in reading order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Iterates batches of every file in order. Each item carries where it came from.
    ///
    /// The iterator owns what it needs, so it can move to a reader thread. It stops after the
    /// first error.
    pub fn batches(&self) -> Batches {
        Batches {
            entries: self.entries.clone(),
            schema: self.schema.clone(),
            options: self.options.clone(),
            next_file: 0,
            current: None,
            done: false,
        }
    }

    /// Like [`Source::batches`], consuming the source.
    pub fn into_batches(self) -> Batches {
        self.batches()
    }
}

/// The batches of a [`Source`], file by file. Created by [`Source::batches`].
pub struct Batches {
    entries: Arc<[Entry]>,
    schema: SchemaRef,
    options: SourceOptions,
    next_file: usize,
    current: Option<OpenFile>,
    done: bool,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("next_file", &self.next_file)
            .field("file", &self.current.as_ref().map(|c| &c.path))
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Iterator for Batches {
    type Item = Result<SourceBatch, IoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = self.advance();
        if !matches!(result, Some(Ok(_))) {
            // Fused: after an error the position in the file is unknown, so stop.
            self.done = true;
            self.current = None;
        }
        result
    }
}

impl Batches {
    fn advance(&mut self) -> Option<Result<SourceBatch, IoError>> {
        loop {
            if self.current.is_none() {
                let entry = self.entries.get(self.next_file)?.clone();
                self.next_file += 1;
                if entry.empty {
                    continue;
                }
                match OpenFile::open(&entry, &self.schema, &self.options) {
                    Ok(mut open) => {
                        open.table = entry.table.clone();
                        self.current = Some(open)
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            let current = self.current.as_mut()?;
            match current.next_batch() {
                Ok(Some(batch)) if batch.num_rows() == 0 => continue,
                Ok(Some(batch)) => {
                    let first_row = current.rows;
                    current.rows += batch.num_rows() as u64;
                    let file = current.path.clone();
                    let conformed = match &current.table {
                        Some(values) => from_table_file(batch, &self.schema, values, &file),
                        None => conform(batch, &self.schema, &file),
                    };
                    return Some(conformed.map(|batch| SourceBatch {
                        batch,
                        file,
                        first_row,
                    }));
                }
                Ok(None) => self.current = None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A batch of a lake table's file in the table's schema: columns by name, cast where the
/// file's type differs, partition columns from the file's values.
fn from_table_file(
    batch: RecordBatch,
    schema: &SchemaRef,
    values: &[(String, Option<String>)],
    path: &Path,
) -> Result<RecordBatch, IoError> {
    let read = |reason: String| IoError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = match values.iter().find(|(c, _)| c == field.name()) {
                Some((_, value)) => {
                    let text: arrow::array::ArrayRef =
                        Arc::new(arrow::array::StringArray::from(vec![
                            value.as_deref();
                            rows
                        ]));
                    text
                }
                None => match batch.column_by_name(field.name()) {
                    Some(c) => c.clone(),
                    None => arrow::array::new_null_array(field.data_type(), rows),
                },
            };
            if column.data_type() == field.data_type() {
                Ok(column)
            } else {
                arrow::compute::cast(&column, field.data_type())
                    .map_err(|e| read(format!("column {}: {}", field.name(), arrow_reason(&e))))
            }
        })
        .collect::<Result<Vec<_>, IoError>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
        .map_err(|e| read(arrow_reason(&e)))
}

/// Gives a batch the source schema (Parquet and IPC files carry their own, which may differ in
/// nullability or metadata).
fn conform(batch: RecordBatch, schema: &SchemaRef, path: &Path) -> Result<RecordBatch, IoError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), batch.columns().to_vec(), &options).map_err(
        |e| IoError::Read {
            path: path.to_path_buf(),
            reason: arrow_reason(&e),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Path expansion

fn is_pattern(arg: &str) -> bool {
    arg.contains(['*', '?', '['])
}

fn expand(args: &[String]) -> Result<Vec<PathBuf>, IoError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut ids: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for arg in args {
        let matched = if is_pattern(arg) {
            expand_pattern(arg)?
        } else {
            let path = PathBuf::from(arg);
            let meta = fs::metadata(&path).map_err(|e| IoError::io(&path, "cannot open", e))?;
            if meta.is_dir() {
                let files = dir_files(&path)?;
                if files.is_empty() {
                    return Err(IoError::NoMatch { path });
                }
                files
            } else {
                vec![path]
            }
        };
        for path in matched {
            // The same path reached twice (`a.csv` and `./a.csv`, or a glob and a name) is
            // read once; another path to the same file (a link) is an error.
            if !seen.insert(path_key(&path)) {
                continue;
            }
            if let Some(id) = fs::metadata(&path).ok().as_ref().and_then(file_id) {
                if let Some(other) = ids.insert(id, path.clone()) {
                    return Err(IoError::SameFile { path, other });
                }
            }
            out.push(path);
        }
    }
    Ok(out)
}

/// A path with its directory made canonical but its last component kept: the same key for
/// `a.csv` and `./a.csv`, another for a link `b.csv` to `a.csv`.
fn path_key(path: &Path) -> PathBuf {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return path.to_path_buf();
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    match fs::canonicalize(parent) {
        Ok(dir) => dir.join(name),
        Err(_) => path.to_path_buf(),
    }
}

fn expand_pattern(pattern: &str) -> Result<Vec<PathBuf>, IoError> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        // Keeps `*` away from hidden files, including sinks' temporary outputs.
        require_literal_leading_dot: true,
    };
    let paths = glob::glob_with(pattern, options).map_err(|e| IoError::BadPattern {
        path: pattern.into(),
        reason: e.to_string(),
    })?;
    let mut files = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| {
            let path = e.path().to_path_buf();
            IoError::io(path, "cannot read", e.into())
        })?;
        if path.is_dir() {
            files.extend(dir_files(&path)?);
        } else {
            files.push(path);
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(IoError::NoMatch {
            path: pattern.into(),
        });
    }
    Ok(files)
}

/// The data files directly in `dir`, sorted: known extension, not hidden, not `_`-prefixed
/// (like Spark's `_SUCCESS`).
fn dir_files(dir: &Path) -> Result<Vec<PathBuf>, IoError> {
    let read = fs::read_dir(dir).map_err(|e| IoError::io(dir, "cannot list directory", e))?;
    let mut files = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| IoError::io(dir, "cannot list directory", e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') || Format::from_path(&path).is_none() {
            continue;
        }
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// Schemas

/// Reads (Parquet, IPC) or infers (CSV, JSON) one file's schema.
fn probe(
    path: &Path,
    format: Format,
    options: &SourceOptions,
) -> Result<(Schema, Option<ArrowReaderMetadata>), IoError> {
    let file = File::open(path).map_err(|e| IoError::io(path, "cannot open", e))?;
    match format {
        Format::Parquet => {
            let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
                .map_err(|e| invalid_parquet(path, e.to_string()))?;
            Ok((meta.schema().as_ref().clone(), Some(meta)))
        }
        Format::Csv => {
            let csv_format = arrow::csv::reader::Format::default()
                .with_header(options.csv_has_header)
                .with_delimiter(options.csv_delimiter);
            let reader = QuoteChecked::new(file, options.csv_delimiter);
            let unclosed = reader.unclosed();
            let (schema, _) = csv_format
                .infer_schema(BufReader::new(reader), options.infer_limit())
                .map_err(|e| csv_read_error(path, e, &Schema::empty(), options, &unclosed))?;
            let empty = match options.csv_has_header {
                true => "has no header",
                false => NO_ROWS,
            };
            Ok((no_data_if_blank(path, schema, empty)?, None))
        }
        Format::Jsonl => {
            let mut reader = LineCounter::new(BufReader::new(file));
            let inferred = arrow::json::reader::infer_json_schema_from_seekable(
                &mut reader,
                options.infer_limit(),
            );
            match inferred {
                Ok((schema, _)) => {
                    let order = json_key_order(path, options.infer_limit())?;
                    let schema = reorder_fields(schema, &order);
                    Ok((no_data_if_blank(path, schema, NO_ROWS)?, None))
                }
                Err(e) => Err(json_error(path, Some(reader.current_line()), e)),
            }
        }
        Format::Ipc => {
            let reader = IpcReader::open(path, file)?;
            Ok((reader.schema().as_ref().clone(), None))
        }
    }
}

const NO_ROWS: &str = "has no rows to infer a schema from";

/// `schema`, unless it has no columns: then an error, [`IoError::NoData`] with `empty` when the
/// file holds nothing but white space.
fn no_data_if_blank(path: &Path, schema: Schema, empty: &'static str) -> Result<Schema, IoError> {
    if !schema.fields().is_empty() {
        return Ok(schema);
    }
    let mut reader =
        BufReader::new(File::open(path).map_err(|e| IoError::io(path, "cannot open", e))?);
    let reason = loop {
        let buf = reader
            .fill_buf()
            .map_err(|e| IoError::io(path, "cannot read", e))?;
        if buf.is_empty() {
            break empty;
        }
        if !buf.iter().all(u8::is_ascii_whitespace) {
            break "has no columns";
        }
        let n = buf.len();
        reader.consume(n);
    };
    Err(IoError::NoData {
        path: path.to_path_buf(),
        reason,
    })
}

/// One column's unified type and where it came from.
struct Column {
    field: Field,
    /// Whether a Parquet or IPC file fixed the type (inferred types may widen, stored ones not).
    fixed: bool,
    /// The file that last set the type, named in mismatch errors.
    origin: usize,
}

/// Merges the schemas of a source's files, one file at a time.
struct Unifier {
    /// The file that gave the first schema.
    first: usize,
    columns: Vec<Column>,
    metadata: arrow::datatypes::Metadata,
    any_inferred: bool,
}

impl Unifier {
    fn new(schema: &Schema, inferred: bool, index: usize) -> Self {
        Unifier {
            first: index,
            columns: schema
                .fields()
                .iter()
                .map(|f| Column {
                    field: f.as_ref().clone(),
                    fixed: !inferred,
                    origin: index,
                })
                .collect(),
            metadata: schema.metadata().clone(),
            any_inferred: inferred,
        }
    }

    fn add(
        &mut self,
        index: usize,
        schema: &Schema,
        inferred: bool,
        files: &[PathBuf],
        options: &SourceOptions,
    ) -> Result<(), IoError> {
        let mismatch = |other: usize, detail: String| IoError::SchemaMismatch {
            path: files[index].clone(),
            other: files[other].clone(),
            detail,
        };
        let fields = schema.fields();
        for i in 0..self.columns.len().max(fields.len()) {
            match (self.columns.get(i), fields.get(i)) {
                (Some(col), Some(field)) if col.field.name() != field.name() => {
                    return Err(mismatch(
                        self.first,
                        format!(
                            "column {} is named \"{}\", not \"{}\"",
                            i + 1,
                            field.name(),
                            col.field.name()
                        ),
                    ));
                }
                (Some(col), None) => {
                    return Err(mismatch(
                        self.first,
                        format!(
                            "column \"{}\" (column {}) is missing",
                            col.field.name(),
                            i + 1
                        ),
                    ));
                }
                (None, Some(field)) => {
                    return Err(mismatch(
                        self.first,
                        format!(
                            "it has an extra column \"{}\" (column {})",
                            field.name(),
                            i + 1
                        ),
                    ));
                }
                _ => {}
            }
        }
        let any_inferred = self.any_inferred || inferred;
        for (col, field) in self.columns.iter_mut().zip(fields.iter()) {
            let old = col.field.data_type();
            let new = field.data_type();
            if old != new {
                let merged = widen(old, new).filter(|merged| {
                    // A stored type cannot change; an inferred one can only widen.
                    (merged == old || !col.fixed) && (merged == new || inferred)
                });
                let Some(merged) = merged else {
                    let hint = if any_inferred {
                        format!(
                            " (CSV and JSON column types are inferred from {})",
                            match options.infer_limit() {
                                Some(n) => format!("{} of each file", first_rows(n)),
                                None => "all rows".to_string(),
                            }
                        )
                    } else {
                        String::new()
                    };
                    return Err(mismatch(
                        col.origin,
                        format!(
                            "column \"{}\" has type {new}, not {old}{hint}",
                            field.name()
                        ),
                    ));
                };
                if &merged != old {
                    col.origin = index;
                }
                col.field = col.field.clone().with_data_type(merged);
            }
            if field.is_nullable() {
                col.field.set_nullable(true);
            }
            col.fixed |= !inferred;
        }
        self.any_inferred = any_inferred;
        Ok(())
    }

    fn finish(self, any_csv: bool) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .into_iter()
            .map(|col| match col.field.data_type() {
                // The CSV reader cannot produce Null columns; a column empty everywhere is text.
                DataType::Null if any_csv => col.field.with_data_type(DataType::Utf8),
                _ => col.field,
            })
            .collect();
        Arc::new(Schema::new_with_metadata(fields, self.metadata))
    }
}

/// The common type of two inferred types, if one can hold the other's values.
fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    match (a, b) {
        (Null, t) | (t, Null) => Some(t.clone()),
        (Int64, Float64) | (Float64, Int64) => Some(Float64),
        (Timestamp(x, None), Timestamp(y, None)) => Some(Timestamp(finer(*x, *y), None)),
        _ => None,
    }
}

fn finer(a: TimeUnit, b: TimeUnit) -> TimeUnit {
    let rank = |u: TimeUnit| match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

// ---------------------------------------------------------------------------------------------
// Per-file readers

struct OpenFile {
    path: Arc<Path>,
    reader: FileBatches,
    /// Rows returned so far from this file.
    rows: u64,
    /// The rest of a stored batch larger than the batch size (IPC keeps the writer's batches).
    pending: Option<RecordBatch>,
    batch_size: usize,
    /// The partition values of a lake table's file.
    table: Option<PartitionValues>,
}

enum FileBatches {
    Parquet(ParquetRecordBatchReader),
    Csv {
        reader: Box<arrow::csv::Reader<QuoteChecked<File>>>,
        schema: SchemaRef,
        options: SourceOptions,
        unclosed: UnclosedQuote,
    },
    Jsonl(Box<JsonLines>),
    Ipc(IpcReader),
}

impl OpenFile {
    fn open(entry: &Entry, schema: &SchemaRef, options: &SourceOptions) -> Result<Self, IoError> {
        let path = &entry.path;
        let file = File::open(path).map_err(|e| IoError::io(path.as_ref(), "cannot open", e))?;
        let reader = match entry.format {
            Format::Parquet => {
                let builder = match &entry.parquet {
                    Some(meta) => {
                        ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
                    }
                    None => ParquetRecordBatchReaderBuilder::try_new(file)
                        .map_err(|e| invalid_parquet(path, e.to_string()))?,
                };
                let reader = builder
                    .with_batch_size(options.batch_size())
                    .build()
                    .map_err(|e| invalid_parquet(path, e.to_string()))?;
                FileBatches::Parquet(reader)
            }
            Format::Csv => {
                let file = QuoteChecked::new(file, options.csv_delimiter);
                let unclosed = file.unclosed();
                let reader = arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_header(options.csv_has_header)
                    .with_delimiter(options.csv_delimiter)
                    .with_batch_size(options.batch_size())
                    .build(file)
                    .map_err(|e| csv_read_error(path, e, schema, options, &unclosed))?;
                FileBatches::Csv {
                    reader: Box::new(reader),
                    schema: schema.clone(),
                    options: options.clone(),
                    unclosed,
                }
            }
            Format::Jsonl => FileBatches::Jsonl(Box::new(JsonLines::new(
                path.clone(),
                file,
                schema.clone(),
                options.batch_size(),
            )?)),
            Format::Ipc => FileBatches::Ipc(IpcReader::open(path, file)?),
        };
        Ok(OpenFile {
            path: path.clone(),
            reader,
            rows: 0,
            pending: None,
            batch_size: options.batch_size(),
            table: None,
        })
    }

    /// The next batch of at most `batch_size` rows.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, IoError> {
        let batch = match self.pending.take() {
            Some(batch) => batch,
            None => match self.read_batch()? {
                Some(batch) => batch,
                None => return Ok(None),
            },
        };
        if batch.num_rows() > self.batch_size {
            // Slices share buffers, so splitting costs nothing.
            let rest = batch.slice(self.batch_size, batch.num_rows() - self.batch_size);
            self.pending = Some(rest);
            return Ok(Some(batch.slice(0, self.batch_size)));
        }
        Ok(Some(batch))
    }

    fn read_batch(&mut self) -> Result<Option<RecordBatch>, IoError> {
        let path = &self.path;
        match &mut self.reader {
            FileBatches::Parquet(reader) => reader
                .next()
                .transpose()
                .map_err(|e| invalid_parquet(path, arrow_reason(&e))),
            FileBatches::Csv {
                reader,
                schema,
                options,
                unclosed,
            } => reader
                .next()
                .transpose()
                .map_err(|e| csv_read_error(path, e, schema, options, unclosed)),
            FileBatches::Jsonl(reader) => reader.next_batch(),
            FileBatches::Ipc(reader) => reader.next_batch(path),
        }
    }
}

fn invalid_parquet(path: &Path, reason: String) -> IoError {
    // ParquetError's Display adds "Parquet error: " to general errors; the variant says it.
    let reason = match reason.strip_prefix("Parquet error: ") {
        Some(rest) => rest.to_string(),
        None => reason,
    };
    IoError::InvalidParquet {
        path: path.to_path_buf(),
        reason,
    }
}

// IPC ---------------------------------------------------------------------------------------

/// The IPC file format, or the stream format when the file lacks the `ARROW1` magic.
enum IpcReader {
    File(FileReader<BufReader<File>>),
    Stream(StreamReader<BufReader<File>>),
}

impl IpcReader {
    fn open(path: &Path, mut file: File) -> Result<Self, IoError> {
        let invalid = |e: ArrowError| IoError::InvalidIpc {
            path: path.to_path_buf(),
            reason: arrow_reason(&e),
        };
        let mut magic = [0u8; 6];
        let mut filled = 0;
        while filled < magic.len() {
            match file.read(&mut magic[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(IoError::io(path, "cannot read", e)),
            }
        }
        file.rewind()
            .map_err(|e| IoError::io(path, "cannot read", e))?;
        if &magic[..filled] == b"ARROW1" {
            FileReader::try_new_buffered(file, None)
                .map(IpcReader::File)
                .map_err(invalid)
        } else {
            StreamReader::try_new_buffered(file, None)
                .map(IpcReader::Stream)
                .map_err(invalid)
        }
    }

    fn schema(&self) -> SchemaRef {
        match self {
            IpcReader::File(r) => r.schema(),
            IpcReader::Stream(r) => r.schema(),
        }
    }

    fn next_batch(&mut self, path: &Path) -> Result<Option<RecordBatch>, IoError> {
        let next = match self {
            IpcReader::File(r) => r.next(),
            IpcReader::Stream(r) => r.next(),
        };
        next.transpose().map_err(|e| IoError::InvalidIpc {
            path: path.to_path_buf(),
            reason: arrow_reason(&e),
        })
    }
}

// CSV ---------------------------------------------------------------------------------------

/// [`csv_error`], unless the reader failed on a quoted field that is never closed.
fn csv_read_error(
    path: &Path,
    err: ArrowError,
    schema: &Schema,
    options: &SourceOptions,
    unclosed: &UnclosedQuote,
) -> IoError {
    match unclosed.line(path) {
        Some(line) => IoError::Malformed {
            path: path.to_path_buf(),
            line: Some(line),
            column: None,
            message: UNCLOSED_MESSAGE.into(),
        },
        None => csv_error(path, err, schema, options),
    }
}

/// Turns an arrow CSV error into one naming the file's line and the column.
///
/// Arrow numbers CSV records, not lines: "incorrect number of fields for line N" and the UTF-8
/// error count records from 1 including the header; parse errors ("... for column C at line L")
/// count from 0, also including the header. Records are then mapped to physical lines, which
/// differ when quoted fields span lines or blank lines are skipped. Errors from schema
/// inference come from the `csv` crate and already carry physical lines.
fn csv_error(path: &Path, err: ArrowError, schema: &Schema, options: &SourceOptions) -> IoError {
    let malformed =
        |line: Option<u64>, column: Option<String>, message: String| IoError::Malformed {
            path: path.to_path_buf(),
            line,
            column,
            message,
        };
    let column_name = |index: u64| {
        let index = usize::try_from(index).ok()?;
        schema.fields().get(index).map(|f| f.name().clone())
    };
    let line_of = |record: u64| record_line(path, record, options).unwrap_or(record);
    match &err {
        ArrowError::CsvError(msg) => {
            if let Some(rest) = msg.strip_prefix("incorrect number of fields for line ") {
                if let Some((record, rest)) = take_number(rest) {
                    if let Some(rest) = rest.strip_prefix(", expected ") {
                        if let Some((expected, rest)) = take_number(rest) {
                            let found = rest.strip_prefix(" got ").unwrap_or(rest);
                            return malformed(
                                Some(line_of(record)),
                                None,
                                format!("expected {expected} fields, found {found}"),
                            );
                        }
                    }
                }
            }
            if let Some(rest) = msg.strip_prefix("Encountered invalid UTF-8 data for line ") {
                if let Some((record, rest)) = take_number(rest) {
                    let field = rest
                        .strip_prefix(" and field ")
                        .and_then(take_number)
                        .and_then(|(f, _)| column_name(f.checked_sub(1)?));
                    return malformed(Some(line_of(record)), field, "invalid UTF-8".into());
                }
            }
            if let Some(rest) = msg
                .strip_prefix("Encountered unequal lengths between records on CSV file. Expected ")
            {
                // Inference error; "records" here means fields and the line is physical.
                if let Some((expected, rest)) = take_number(rest) {
                    if let Some((found, rest)) =
                        rest.strip_prefix(" records, found ").and_then(take_number)
                    {
                        let line = rest
                            .strip_prefix(" records at line ")
                            .and_then(take_number)
                            .map(|(l, _)| l);
                        return malformed(
                            line,
                            None,
                            format!("expected {expected} fields, found {found}"),
                        );
                    }
                }
            }
            if let Some(rest) = msg.strip_prefix("Encountered UTF-8 error while reading CSV file: ")
            {
                let (message, line) = match rest.rfind(" at line ") {
                    Some(at) => (
                        &rest[..at],
                        take_number(&rest[at + " at line ".len()..]).map(|(l, _)| l),
                    ),
                    None => (rest, None),
                };
                return malformed(line, None, format!("invalid UTF-8: {message}"));
            }
            malformed(None, None, msg.clone())
        }
        ArrowError::ParseError(msg) => {
            let hint = match options.infer_limit() {
                Some(n) => format!(" (the column type was inferred from {})", first_rows(n)),
                None => String::new(),
            };
            if let Some(found) = parse_value_error(msg) {
                return malformed(
                    Some(line_of(found.record + 1)),
                    column_name(found.column),
                    format!(
                        "cannot parse '{}' as {}{hint}",
                        found.value, found.data_type
                    ),
                );
            }
            if let Some(rest) = msg.strip_prefix("Error parsing column ") {
                if let Some((column, rest)) = take_number(rest) {
                    if let Some((record, rest)) =
                        rest.strip_prefix(" at line ").and_then(take_number)
                    {
                        let reason = rest.strip_prefix(": ").unwrap_or(rest);
                        let reason = reason.strip_prefix("Parser error: ").unwrap_or(reason);
                        return malformed(
                            Some(line_of(record + 1)),
                            column_name(column),
                            format!("{reason}{hint}"),
                        );
                    }
                }
            }
            malformed(None, None, msg.clone())
        }
        ArrowError::IoError(_, e) => {
            IoError::io(path, "cannot read", io::Error::new(e.kind(), e.to_string()))
        }
        other => malformed(None, None, arrow_reason(other)),
    }
}

fn first_rows(n: usize) -> String {
    match n {
        1 => "the first row".to_string(),
        n => format!("the first {n} rows"),
    }
}

struct ValueError<'a> {
    value: &'a str,
    data_type: &'a str,
    column: u64,
    record: u64,
}

/// Parses "Error while parsing value 'V' as type 'T' for column C at line L. Row data: '…'".
/// The value and row data may contain anything, so the first marker that is followed by the
/// complete expected tail wins.
fn parse_value_error(msg: &str) -> Option<ValueError<'_>> {
    let body = msg.strip_prefix("Error while parsing value '")?;
    const MARKER: &str = "' for column ";
    let mut from = 0;
    while let Some(at) = body[from..].find(MARKER).map(|i| i + from) {
        from = at + 1;
        let tail = &body[at + MARKER.len()..];
        let Some((column, tail)) = take_number(tail) else {
            continue;
        };
        let Some((record, tail)) = tail.strip_prefix(" at line ").and_then(take_number) else {
            continue;
        };
        if !tail.starts_with(". Row data: '") {
            continue;
        }
        let head = &body[..at];
        let split = head.rfind("' as type '")?;
        return Some(ValueError {
            value: &head[..split],
            data_type: &head[split + "' as type '".len()..],
            column,
            record,
        });
    }
    None
}

fn take_number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n = s[..end].parse().ok()?;
    Some((n, &s[end..]))
}

/// The physical line (1-based) on which CSV record `record` (1-based, header included) starts,
/// following the rules of the `csv_core` parser arrow uses: quoted fields may contain newlines,
/// a quote only opens a field at its start, and empty lines are not records.
fn record_line(path: &Path, record: u64, options: &SourceOptions) -> Option<u64> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        RecordStart,
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let delimiter = options.csv_delimiter;
    let mut reader = BufReader::new(File::open(path).ok()?);
    let mut state = State::RecordStart;
    let mut line = 1u64;
    let mut records = 0u64;
    let mut start_line = 1u64;
    loop {
        let buf = reader.fill_buf().ok()?;
        if buf.is_empty() {
            break;
        }
        for &b in buf {
            let newline = b == b'\n' || b == b'\r';
            state = match state {
                State::RecordStart if newline => State::RecordStart,
                State::RecordStart => {
                    start_line = line;
                    match b {
                        b'"' => State::Quoted,
                        _ if b == delimiter => State::FieldStart,
                        _ => State::Unquoted,
                    }
                }
                State::Quoted => match b {
                    b'"' => State::QuoteInQuoted,
                    _ => State::Quoted,
                },
                State::FieldStart | State::Unquoted | State::QuoteInQuoted if newline => {
                    records += 1;
                    if records == record {
                        return Some(start_line);
                    }
                    State::RecordStart
                }
                State::FieldStart if b == b'"' => State::Quoted,
                State::QuoteInQuoted if b == b'"' => State::Quoted,
                _ if b == delimiter => State::FieldStart,
                _ => State::Unquoted,
            };
            if b == b'\n' {
                line += 1;
            }
        }
        let n = buf.len();
        reader.consume(n);
    }
    // The last record may lack a line terminator.
    (state != State::RecordStart && records + 1 == record).then_some(start_line)
}

// JSON lines --------------------------------------------------------------------------------

/// Reads JSON lines one line at a time so errors can name the line: syntax errors surface while
/// feeding the line; type errors surface when a batch is flushed and are then located by
/// decoding the batch's lines again, one row at a time.
struct JsonLines {
    path: Arc<Path>,
    reader: BufReader<File>,
    decoder: arrow::json::reader::Decoder,
    schema: SchemaRef,
    batch_size: usize,
    /// The current line and how much of it the decoder has taken.
    line: Vec<u8>,
    pos: usize,
    /// The number of the current line.
    line_no: u64,
    /// The bytes given to the decoder since the last flush, and where each line starts in them.
    raw: Vec<u8>,
    raw_lines: Vec<(u64, usize)>,
    /// The line on which each buffered row starts.
    row_lines: Vec<u64>,
    eof: bool,
}

impl JsonLines {
    fn new(
        path: Arc<Path>,
        file: File,
        schema: SchemaRef,
        batch_size: usize,
    ) -> Result<Self, IoError> {
        let decoder = arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(batch_size)
            .build_decoder()
            .map_err(|e| json_error(&path, None, e))?;
        Ok(JsonLines {
            path,
            reader: BufReader::new(file),
            decoder,
            schema,
            batch_size,
            line: Vec::new(),
            pos: 0,
            line_no: 0,
            raw: Vec::new(),
            raw_lines: Vec::new(),
            row_lines: Vec::new(),
            eof: false,
        })
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, IoError> {
        loop {
            if self.decoder.len() >= self.batch_size && !self.decoder.has_partial_record() {
                break;
            }
            if self.pos >= self.line.len() {
                if self.eof {
                    break;
                }
                self.line.clear();
                self.pos = 0;
                let n = self
                    .reader
                    .read_until(b'\n', &mut self.line)
                    .map_err(|e| IoError::io(self.path.as_ref(), "cannot read", e))?;
                if n == 0 {
                    self.eof = true;
                    break;
                }
                self.line_no += 1;
            }
            let chunk = &self.line[self.pos..];
            let before = self.decoder.len();
            // A record left open on an earlier line is the real fault when the next line
            // fails to continue it, so name the line the record started on.
            let line = match self.decoder.has_partial_record() {
                true => self.row_lines.last().copied().unwrap_or(self.line_no),
                false => self.line_no,
            };
            let taken = self
                .decoder
                .decode(chunk)
                .map_err(|e| json_error(&self.path, Some(line), e))?;
            self.raw_lines.push((self.line_no, self.raw.len()));
            self.raw.extend_from_slice(&chunk[..taken]);
            self.pos += taken;
            let after = self.decoder.len();
            self.row_lines.extend(std::iter::repeat_n(
                self.line_no,
                after.saturating_sub(before),
            ));
            if self.pos < self.line.len() {
                // The decoder holds a full batch; the rest of the line goes into the next one.
                break;
            }
        }
        if self.decoder.is_empty() {
            return Ok(None);
        }
        match self.decoder.flush() {
            Ok(batch) => {
                self.raw.clear();
                self.raw_lines.clear();
                self.row_lines.clear();
                Ok(batch)
            }
            Err(e) => Err(self.locate(e)),
        }
    }

    /// Finds the line of the row that made a flush fail by decoding the batch again row by row.
    fn locate(&self, err: ArrowError) -> IoError {
        let fallback = |err: ArrowError| json_error(&self.path, None, err);
        let Ok(mut decoder) = arrow::json::ReaderBuilder::new(self.schema.clone())
            .with_batch_size(1)
            .build_decoder()
        else {
            return fallback(err);
        };
        let mut row_start = None;
        for (i, &(line_no, start)) in self.raw_lines.iter().enumerate() {
            let end = self
                .raw_lines
                .get(i + 1)
                .map_or(self.raw.len(), |&(_, s)| s);
            let mut chunk = &self.raw[start..end];
            loop {
                let before = decoder.len();
                let line = match decoder.has_partial_record() {
                    true => row_start.unwrap_or(line_no),
                    false => line_no,
                };
                let taken = match decoder.decode(chunk) {
                    Ok(n) => n,
                    Err(e) => return json_error(&self.path, Some(line), e),
                };
                chunk = &chunk[taken..];
                if before == 0 && !decoder.is_empty() {
                    row_start = Some(line_no);
                }
                if !decoder.is_empty() && !decoder.has_partial_record() {
                    if let Err(e) = decoder.flush() {
                        return json_error(&self.path, row_start, e);
                    }
                } else if taken == 0 || chunk.is_empty() {
                    break;
                }
                if chunk.is_empty() {
                    break;
                }
            }
        }
        match decoder.flush() {
            Err(e) => json_error(&self.path, row_start, e),
            Ok(_) => json_error(&self.path, self.row_lines.first().copied(), err),
        }
    }
}

/// Turns an arrow JSON error into one naming the line and, from arrow's "whilst decoding field"
/// prefixes, the column (nested fields joined with dots).
fn json_error(path: &Path, line: Option<u64>, err: ArrowError) -> IoError {
    if let ArrowError::IoError(_, e) = &err {
        return IoError::io(path, "cannot read", io::Error::new(e.kind(), e.to_string()));
    }
    let full = arrow_reason(&err);
    let mut rest = full.as_str();
    let mut names = Vec::new();
    while let Some(tail) = rest.strip_prefix("whilst decoding field '") {
        let Some(end) = tail.find("': ") else { break };
        names.push(&tail[..end]);
        rest = &tail[end + 3..];
    }
    // serde_json (used by schema inference) reports positions within the line it was given.
    let message = match rest.rfind(" at line 1 column ") {
        Some(at) => format!(
            "{} at character {}",
            &rest[..at],
            &rest[at + " at line 1 column ".len()..]
        ),
        None => rest.to_string(),
    };
    IoError::Malformed {
        path: path.to_path_buf(),
        line,
        column: (!names.is_empty()).then(|| names.join(".")),
        message,
    }
}

/// The top-level keys of the first `limit` JSON lines, in order of first appearance.
///
/// Arrow's JSON inference goes through `serde_json` maps, which sort keys; this restores the
/// column order of the file.
fn json_key_order(path: &Path, limit: Option<usize>) -> Result<Vec<String>, IoError> {
    let file = File::open(path).map_err(|e| IoError::io(path, "cannot open", e))?;
    let mut reader = BufReader::new(file);
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut line = Vec::new();
    let mut records = 0;
    while limit.is_none_or(|limit| records < limit) {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| IoError::io(path, "cannot read", e))?;
        if n == 0 {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        records += 1;
        for key in top_level_keys(&line) {
            if seen.insert(key.clone()) {
                order.push(key);
            }
        }
    }
    Ok(order)
}

/// The keys of a JSON object's top level, scanning without a full parse.
fn top_level_keys(line: &[u8]) -> Vec<String> {
    let mut keys = Vec::new();
    // Open containers; `true` for objects.
    let mut stack: Vec<bool> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                let mut escaped = false;
                while i < line.len() {
                    match line[i] {
                        _ if escaped => escaped = false,
                        b'\\' => escaped = true,
                        b'"' => break,
                        _ => {}
                    }
                    i += 1;
                }
                if expect_key && stack.len() == 1 {
                    keys.push(unescape_json(&line[start..i.min(line.len())]));
                }
                expect_key = false;
            }
            b'{' => {
                stack.push(true);
                expect_key = stack.len() == 1;
            }
            b'[' => {
                stack.push(false);
                expect_key = false;
            }
            b'}' | b']' => {
                stack.pop();
            }
            b',' if stack.len() == 1 && stack[0] => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    keys
}

/// Decodes the escapes of a JSON string's content.
fn unescape_json(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if !text.contains('\\') {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let decoded = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                out.push(decoded.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Orders `schema`'s fields as in `order`; fields not listed keep their order, at the end.
fn reorder_fields(schema: Schema, order: &[String]) -> Schema {
    let position = |name: &str| order.iter().position(|k| k == name).unwrap_or(usize::MAX);
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    // Stable, so unlisted fields keep arrow's order.
    fields.sort_by_key(|f| position(f.name()));
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// A [`BufRead`] that counts the lines consumed through it, so a failure inside arrow's JSON
/// schema inference (which reads line by line) can name the line.
struct LineCounter<R> {
    inner: R,
    newlines: u64,
    last: Option<u8>,
}

impl<R> LineCounter<R> {
    fn new(inner: R) -> Self {
        LineCounter {
            inner,
            newlines: 0,
            last: None,
        }
    }

    fn count(&mut self, bytes: &[u8]) {
        self.newlines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        if let Some(&b) = bytes.last() {
            self.last = Some(b);
        }
    }

    /// The line the last consumed byte belongs to.
    fn current_line(&self) -> u64 {
        match self.last {
            Some(b'\n') => self.newlines,
            _ => self.newlines + 1,
        }
    }
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineCounter<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        // Already buffered, so this does no I/O.
        if let Ok(buf) = self.inner.fill_buf() {
            let end = amt.min(buf.len());
            let newlines = buf[..end].iter().filter(|&&b| b == b'\n').count() as u64;
            let last = end.checked_sub(1).map(|i| buf[i]);
            self.newlines += newlines;
            if last.is_some() {
                self.last = last;
            }
        }
        self.inner.consume(amt);
    }
}

impl<R: Seek> Seek for LineCounter<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

// Sources and their batches move to the reader thread of a run: checked when compiling.
const _: () = {
    const fn send<T: Send + 'static>() {}
    send::<Source>();
    send::<Batches>();
    send::<SourceBatch>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{create, SinkOptions};
    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
    use std::io::Write;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        path
    }

    fn s(path: &Path) -> String {
        path.to_str().unwrap().to_string()
    }

    fn read_all(source: &Source) -> Vec<SourceBatch> {
        source.batches().collect::<Result<Vec<_>, _>>().unwrap()
    }

    fn sample_batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("score", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(4)])),
            Arc::new(Float64Array::from(vec![
                Some(1.5),
                None,
                Some(-3.25),
                Some(4.0),
            ])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("b, c"),
                None,
                Some("d\"e"),
            ])),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None,
                Some(true),
            ])),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn round_trips_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let batch = sample_batch();
        for format in Format::ALL {
            let path = dir.path().join(format!("data.{}", format.extension()));
            let mut sink = create(&path, batch.schema(), &SinkOptions::default()).unwrap();
            sink.write(0, &batch.slice(0, 2)).unwrap();
            sink.write(1, &batch.slice(2, 2)).unwrap();
            let summary = sink.commit().unwrap();
            assert_eq!(summary.rows, 4);
            assert_eq!(summary.files, 1);
            assert_eq!(summary.bytes, fs::metadata(&path).unwrap().len());

            let options = SourceOptions {
                batch_size: 3,
                ..Default::default()
            };
            let source = open(&[s(&path)], &options).unwrap();
            assert_eq!(
                source.schema().fields(),
                batch.schema().fields(),
                "{format}"
            );
            let batches = read_all(&source);
            let mut next_row = 0;
            for b in &batches {
                assert_eq!(b.first_row, next_row, "{format}");
                assert!(b.batch.num_rows() <= 3, "{format}");
                assert_eq!(b.file.as_ref(), path.as_path());
                next_row += b.batch.num_rows() as u64;
            }
            let parts: Vec<RecordBatch> = batches.into_iter().map(|b| b.batch).collect();
            let all = arrow::compute::concat_batches(&source.schema(), &parts).unwrap();
            assert_eq!(all.columns(), batch.columns(), "{format}");
        }
    }

    #[test]
    fn globs_expand_sorted_deduplicated_and_skip_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.csv", "a.csv", "c.csv", ".hidden.csv"] {
            write(dir.path(), name, "x\n1\n");
        }
        write(dir.path(), "notes.txt", "hello");
        let pattern = format!("{}/*.csv", dir.path().display());
        let source = open(
            &[s(&dir.path().join("c.csv")), pattern.clone()],
            &SourceOptions::default(),
        )
        .unwrap();
        let names: Vec<_> = source
            .files()
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["c.csv", "a.csv", "b.csv"]);
        let rows: usize = read_all(&source).iter().map(|b| b.batch.num_rows()).sum();
        assert_eq!(rows, 3);

        // A directory means its data files, sorted; notes.txt and the hidden file are skipped.
        let source = open(&[s(dir.path())], &SourceOptions::default()).unwrap();
        let names: Vec<_> = source
            .files()
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.csv", "b.csv", "c.csv"]);

        let missing = format!("{}/*.parquet", dir.path().display());
        let err = open(std::slice::from_ref(&missing), &SourceOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), format!("no input matched \"{missing}\""));

        let err = open(
            &[s(&dir.path().join("notes.txt"))],
            &SourceOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, IoError::UnknownFormat { .. }), "{err}");
        assert!(err.to_string().ends_with("notes.txt: cannot tell the format from the extension; pass --format (parquet, csv, jsonl, ipc)"));
    }

    #[test]
    fn csv_field_count_error_names_file_and_absolute_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = String::from("a,b,c,d\n");
        for i in 0..20 {
            if i == 15 {
                content.push_str("1,2,3\n"); // line 17: header + 15 rows before it
            } else {
                content.push_str(&format!("{i},2,3,4\n"));
            }
        }
        let path = write(dir.path(), "x.csv", &content);
        let options = SourceOptions {
            batch_size: 4,
            schema_infer_rows: 5,
            ..Default::default()
        };
        let source = open(&[s(&path)], &options).unwrap();
        let results: Vec<_> = source.batches().collect();
        let err = results.last().unwrap().as_ref().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: line 17: expected 4 fields, found 3", path.display())
        );
        assert_eq!(err.file(), Some(path.as_path()));
        // Batches before the bad one were delivered; nothing after the error.
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    }

    #[test]
    fn csv_errors_during_inference_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "x.csv", "a,b\n1,2\n3\n");
        let err = open(&[s(&path)], &SourceOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: line 3: expected 2 fields, found 1", path.display())
        );
    }

    #[test]
    fn csv_parse_error_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        // Quoted newline and a blank line make records and lines differ.
        let mut content = String::from("id,name,age\n1,\"two\nlines\",30\n\n");
        for i in 0..6 {
            content.push_str(&format!("{i},x,{i}\n"));
        }
        content.push_str("9,y,abc\n"); // line 11
        let path = write(dir.path(), "people.csv", &content);
        let options = SourceOptions {
            batch_size: 2,
            schema_infer_rows: 3,
            ..Default::default()
        };
        let source = open(&[s(&path)], &options).unwrap();
        assert_eq!(source.schema().field(2).data_type(), &DataType::Int64);
        let err = source.batches().find_map(Result::err).unwrap();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: line 11: column \"age\": cannot parse 'abc' as Int64",
                path.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn csv_record_lines_follow_quotes_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "q.csv",
            "h1,h2\n\"a\n\nb\",1\n\nx\"y,2\n\"c\"\"\n\",3\r\nlast,4",
        );
        let options = SourceOptions::default();
        let lines: Vec<_> = (1..=6).map(|r| record_line(&path, r, &options)).collect();
        assert_eq!(lines, [Some(1), Some(2), Some(6), Some(7), Some(9), None]);
        assert_eq!(record_line(&path, 5, &options), Some(9));
    }

    #[test]
    fn truncated_parquet_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let mut sink = create(&path, sample_batch().schema(), &SinkOptions::default()).unwrap();
        sink.write(0, &sample_batch()).unwrap();
        sink.commit().unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = open(&[s(&path)], &SourceOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}: not a valid Parquet file: ", path.display())),
            "{msg}"
        );
        assert_eq!(err.file(), Some(path.as_path()));
    }

    #[test]
    fn corrupt_parquet_row_group_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            File::create(&path).unwrap(),
            schema.clone(),
            Some(
                parquet::file::properties::WriterProperties::builder()
                    .set_max_row_group_row_count(Some(1000))
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build(),
            ),
        )
        .unwrap();
        let values = Int64Array::from_iter_values((0..3000).map(|i| i * 7919 % 1000));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap();
        writer.write(&batch).unwrap();
        let meta = writer.close().unwrap();
        // Scribble over the middle of the last row group's data; the footer stays intact.
        let rg = meta.row_group(2).column(0);
        let (start, len) = rg.byte_range();
        let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(io::SeekFrom::Start(start + 4)).unwrap();
        file.write_all(&vec![0xAB; (len - 8) as usize]).unwrap();
        drop(file);

        let options = SourceOptions {
            batch_size: 1000,
            ..Default::default()
        };
        let source = open(&[s(&path)], &options).unwrap();
        let results: Vec<_> = source.batches().collect();
        let err = results.last().unwrap().as_ref().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}: not a valid Parquet file: ", path.display())),
            "{msg}"
        );
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    }

    #[test]
    fn csv_schemas_unify_or_name_both_files_and_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.csv", "x,y\n1,\n2,\n");
        let b = write(dir.path(), "b.csv", "x,y\n1.5,hello\n");
        let source = open(&[s(&a), s(&b)], &SourceOptions::default()).unwrap();
        assert_eq!(source.schema().field(0).data_type(), &DataType::Float64);
        assert_eq!(source.schema().field(1).data_type(), &DataType::Utf8);
        let rows: usize = read_all(&source).iter().map(|b| b.batch.num_rows()).sum();
        assert_eq!(rows, 3);

        let c = write(dir.path(), "c.csv", "x,y\nabc,1\n");
        let err = open(&[s(&a), s(&c)], &SourceOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: schema differs from {}: column \"x\" has type Utf8, not Int64",
                c.display(),
                a.display()
            )),
            "{msg}"
        );

        let d = write(dir.path(), "d.csv", "x,z\n1,2\n");
        let err = open(&[s(&a), s(&d)], &SourceOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: schema differs from {}: column 2 is named \"z\", not \"y\"",
                d.display(),
                a.display()
            )
        );
    }

    #[test]
    fn json_errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = String::new();
        for i in 0..5 {
            content.push_str(&format!("{{\"a\": {i}, \"b\": \"s{i}\"}}\n"));
        }
        content.push('\n');
        content.push_str("{\"a\": \"oops\", \"b\": \"x\"}\n"); // line 7
        let path = write(dir.path(), "x.jsonl", &content);
        let options = SourceOptions {
            schema_infer_rows: 3,
            batch_size: 2,
            ..Default::default()
        };
        let source = open(&[s(&path)], &options).unwrap();
        let err = source.batches().find_map(Result::err).unwrap();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}: line 7: column \"a\": ", path.display())),
            "{msg}"
        );

        let bad = write(
            dir.path(),
            "bad.jsonl",
            "{\"a\": 1}\n{\"a\": 2\n{\"a\": 3}\n",
        );
        let options = SourceOptions {
            schema_infer_rows: 1,
            ..Default::default()
        };
        let err = open(&[s(&bad)], &options)
            .unwrap()
            .batches()
            .find_map(Result::err)
            .unwrap();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: line 2: ", bad.display())),
            "{err}"
        );

        // The same file fails during inference when it reads that far.
        let err = open(&[s(&bad)], &SourceOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: line 2: ", bad.display())),
            "{err}"
        );
    }

    #[test]
    fn json_columns_keep_the_file_order() {
        assert_eq!(
            top_level_keys(br#"{"z": {"y": [1, {"x": 2}]}, "a\"b": "s,\"t", "m": [3, 4]}"#),
            ["z", "a\"b", "m"]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "o.jsonl",
            "{\"z\": 1, \"b\": \"x\"}\n{\"a\": true, \"z\": 2}\n",
        );
        let source = open(&[s(&path)], &SourceOptions::default()).unwrap();
        let names: Vec<_> = source
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["z", "b", "a"]);
    }

    #[test]
    fn ipc_stream_files_are_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.arrow");
        let batch = sample_batch();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(
            File::create(&path).unwrap(),
            &batch.schema(),
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let source = open(&[s(&path)], &SourceOptions::default()).unwrap();
        let batches = read_all(&source);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].batch, batch);

        // Stored batches larger than the batch size are split.
        let options = SourceOptions {
            batch_size: 3,
            ..Default::default()
        };
        let batches = read_all(&open(&[s(&path)], &options).unwrap());
        let sizes: Vec<_> = batches
            .iter()
            .map(|b| (b.first_row, b.batch.num_rows()))
            .collect();
        assert_eq!(sizes, [(0, 3), (3, 1)]);

        let junk = write(dir.path(), "junk.arrow", "definitely not arrow");
        let err = open(&[s(&junk)], &SourceOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: not a valid Arrow IPC file: ", junk.display())),
            "{err}"
        );
    }
}
