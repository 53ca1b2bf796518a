//! Sources and sinks: reading and writing data files as Arrow record batches.
//!
//! - [`open`] expands paths, globs and directories into a [`Source`] with one schema, whose
//!   batches each carry the file and row they came from.
//! - [`create`] makes a [`Sink`] that writes one file or a Hive-style partitioned directory
//!   under a temporary name and only moves it into place on [`Sink::commit`].
//!
//! Every [`IoError`] names the file it is about, and where possible the line and column.

pub mod csv_quotes;
mod format;
mod sink;
mod source;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use format::{Format, UnknownFormatName, FORMAT_NAMES};
pub use sink::FileWriter;
pub use sink::{
    check_not_inputs, create, remove_temporary_outputs, Sink, SinkOptions, SinkSummary,
    HIVE_DEFAULT_PARTITION, OUTPUT_MARKER,
};
pub use source::{
    expand_paths, open, open_table, Batches, Source, SourceBatch, SourceOptions, TableFile,
};

/// An error reading or writing a data file. Every variant names the file (or pattern) concerned.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A glob pattern or directory that matched no data file.
    #[error("no input matched \"{}\"", .path.display())]
    NoMatch {
        /// The pattern or directory as given.
        path: PathBuf,
    },
    /// A glob pattern that does not parse.
    #[error("{}: invalid glob pattern: {reason}", .path.display())]
    BadPattern {
        /// The pattern as given.
        path: PathBuf,
        /// Why it does not parse.
        reason: String,
    },
    /// A file whose format cannot be told from its extension.
    #[error(
        "{}: cannot tell the format from the extension; pass --format ({})",
        .path.display(),
        FORMAT_NAMES
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// An operating-system error on a file or directory.
    #[error("{}: {action}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "cannot open".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV or JSON file with content that does not parse.
    #[error("{}: {}{message}", .path.display(), location(*.line, .column.as_deref()))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line in the file (a CSV header is line 1), when known.
        line: Option<u64>,
        /// The column's name, when known.
        column: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A truncated or corrupt Parquet file.
    #[error("{}: not a valid Parquet file: {reason}", .path.display())]
    InvalidParquet {
        /// The file.
        path: PathBuf,
        /// What the Parquet reader reported.
        reason: String,
    },
    /// A truncated or corrupt Arrow IPC file.
    #[error("{}: not a valid Arrow IPC file: {reason}", .path.display())]
    InvalidIpc {
        /// The file.
        path: PathBuf,
        /// What the IPC reader reported.
        reason: String,
    },
    /// Two input files whose schemas disagree.
    #[error("{}: schema differs from {}: {detail}", .path.display(), .other.display())]
    SchemaMismatch {
        /// The file whose schema disagrees with an earlier one.
        path: PathBuf,
        /// The earlier file it disagrees with.
        other: PathBuf,
        /// The first differing column and how it differs.
        detail: String,
    },
    /// An output that exists while overwriting was not asked for.
    #[error("{} already exists; pass --overwrite to replace it", .path.display())]
    AlreadyExists {
        /// The output path.
        path: PathBuf,
    },
    /// An existing output that `--overwrite` does not replace, since Quiver did not write it.
    #[error("{}: --overwrite does not replace it: {reason}", .path.display())]
    NotReplaceable {
        /// The output path.
        path: PathBuf,
        /// What it is.
        reason: String,
    },
    /// An output (or dead-letter or recording directory) that is, or holds, an input.
    #[error("{}: the {what} would overwrite the run's input {}", .path.display(), .input.display())]
    OutputIsInput {
        /// The output path.
        path: PathBuf,
        /// Which output: "output", "dead-letter directory", …
        what: &'static str,
        /// The input file.
        input: PathBuf,
    },
    /// Two input paths that name one file (a symbolic or hard link).
    #[error("{}: the same file as the input {} (a link to it); give it once", .path.display(), .other.display())]
    SameFile {
        /// The later path.
        path: PathBuf,
        /// The path given first.
        other: PathBuf,
    },
    /// A CSV or JSON-lines file with nothing to read a schema from.
    #[error("{}: {reason}", .path.display())]
    NoData {
        /// The file.
        path: PathBuf,
        /// "has no header", "has no rows to infer a schema from", …
        reason: &'static str,
    },
    /// A partition-by column that the schema lacks.
    #[error(
        "{}: cannot partition by \"{column}\": no such column (columns: {})",
        .path.display(),
        .available.join(", ")
    )]
    UnknownPartitionColumn {
        /// The output path.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// The schema's columns.
        available: Vec<String>,
    },
    /// Sink options that cannot work with the schema.
    #[error("{}: {reason}", .path.display())]
    InvalidSink {
        /// The output path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A batch given to a sink whose schema is not the sink's.
    #[error("{}: batch does not match the output schema: {detail}", .path.display())]
    BatchSchema {
        /// The output path.
        path: PathBuf,
        /// The first difference.
        detail: String,
    },
    /// An encoder failure while writing.
    #[error("{}: cannot write {format}: {reason}", .path.display())]
    Write {
        /// The file being written (its final name, not the temporary one).
        path: PathBuf,
        /// Its format.
        format: Format,
        /// What the encoder reported.
        reason: String,
    },
    /// Any other failure while reading a file.
    #[error("{}: {reason}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the reader reported.
        reason: String,
    },
}

impl IoError {
    /// The file, directory or pattern the error is about.
    pub fn file(&self) -> Option<&Path> {
        let path = match self {
            IoError::NoMatch { path }
            | IoError::BadPattern { path, .. }
            | IoError::UnknownFormat { path }
            | IoError::Io { path, .. }
            | IoError::Malformed { path, .. }
            | IoError::InvalidParquet { path, .. }
            | IoError::InvalidIpc { path, .. }
            | IoError::SchemaMismatch { path, .. }
            | IoError::AlreadyExists { path }
            | IoError::NotReplaceable { path, .. }
            | IoError::OutputIsInput { path, .. }
            | IoError::SameFile { path, .. }
            | IoError::NoData { path, .. }
            | IoError::UnknownPartitionColumn { path, .. }
            | IoError::InvalidSink { path, .. }
            | IoError::BatchSchema { path, .. }
            | IoError::Write { path, .. }
            | IoError::Read { path, .. } => path,
        };
        Some(path)
    }

    /// An I/O error on `path` while doing `action` ("cannot open", …).
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        IoError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// A file's identity (device, inode), the same for every path to it.
pub(crate) fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// The message inside an [`ArrowError`](arrow::error::ArrowError), without the
/// "Parser error: "-style prefix naming the variant.
pub fn arrow_reason(err: &arrow::error::ArrowError) -> String {
    use arrow::error::ArrowError;
    match err {
        ArrowError::ParseError(s)
        | ArrowError::CsvError(s)
        | ArrowError::JsonError(s)
        | ArrowError::IpcError(s)
        | ArrowError::ParquetError(s)
        | ArrowError::SchemaError(s)
        | ArrowError::InvalidArgumentError(s)
        | ArrowError::ComputeError(s)
        | ArrowError::CastError(s)
        | ArrowError::NotYetImplemented(s)
        | ArrowError::IoError(s, _) => s.clone(),
        ArrowError::ExternalError(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// Renders the "line N: column "c": " prefix of a [`IoError::Malformed`] message.
fn location(line: Option<u64>, column: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        let _ = write!(out, "line {line}: ");
    }
    if let Some(column) = column {
        let _ = write!(out, "column \"{column}\": ");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_messages_name_file_line_and_column() {
        let err = IoError::Malformed {
            path: "data/x.csv".into(),
            line: Some(17),
            column: None,
            message: "expected 4 fields, found 3".into(),
        };
        assert_eq!(
            err.to_string(),
            "data/x.csv: line 17: expected 4 fields, found 3"
        );
        let err = IoError::Malformed {
            path: "data/x.csv".into(),
            line: Some(5),
            column: Some("age".into()),
            message: "cannot parse 'abc' as Int64".into(),
        };
        assert_eq!(
            err.to_string(),
            "data/x.csv: line 5: column \"age\": cannot parse 'abc' as Int64"
        );
        assert_eq!(err.file(), Some(Path::new("data/x.csv")));
    }

    #[test]
    fn fixed_messages() {
        let err = IoError::UnknownFormat {
            path: "data/x.txt".into(),
        };
        assert_eq!(
            err.to_string(),
            "data/x.txt: cannot tell the format from the extension; pass --format (parquet, csv, jsonl, ipc)"
        );
        let err = IoError::NoMatch {
            path: "data/*.csv".into(),
        };
        assert_eq!(err.to_string(), "no input matched \"data/*.csv\"");
        let err = IoError::AlreadyExists {
            path: "out.parquet".into(),
        };
        assert_eq!(
            err.to_string(),
            "out.parquet already exists; pass --overwrite to replace it"
        );
    }
}
