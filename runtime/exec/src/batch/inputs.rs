//! What a batch run reads and where it commits: files or a table version as the source (only
//! the new part of them for an incremental run), and the table sink's transaction id and run
//! number.

use std::path::PathBuf;

use quiver_data::io::{self, SourceOptions, TableFile};
use quiver_lake::delta::DataFile;
use quiver_lake::Table;

use super::RunError;
use crate::incremental::{self, InputFile, Observed, RunLog, RunRecord, TableRead};
use crate::pipeline::Pipeline;
use crate::report::InputsReport;

/// The table sink of a run.
pub(super) struct Target {
    pub table: Table,
    /// The pipeline stage's transaction id in the table.
    pub app: String,
    /// This run's number: one past the last committed.
    pub run: i64,
}

/// A run's input, decided.
pub(super) struct Planned {
    /// The source to read; `None` when an incremental run finds nothing new.
    pub source: Option<io::Source>,
    /// What is read and left out, for the report.
    pub report: InputsReport,
    /// The table sink, and the record of this run's inputs to write with its commit.
    pub target: Option<(Target, RunLog, RunRecord)>,
}

/// How the pipeline's source files are parsed.
pub(super) fn source_options(pipeline: &Pipeline) -> SourceOptions {
    SourceOptions {
        format: pipeline.source.format,
        batch_size: pipeline
            .source
            .batch_size
            .unwrap_or(SourceOptions::default().batch_size),
        csv_has_header: pipeline.source.csv_header.unwrap_or(true),
        csv_delimiter: pipeline.source.csv_delimiter.map_or(b',', |c| c as u8),
        ..SourceOptions::default()
    }
}

/// Decides what the run reads: everything, or for an incremental run (unless `full_refresh`)
/// only what the committed runs recorded in the table sink have not read.
pub(super) fn plan(pipeline: &Pipeline, full_refresh: bool) -> Result<Planned, RunError> {
    let options = source_options(pipeline);
    let incremental = pipeline.source.incremental && !full_refresh;
    let mut report = InputsReport {
        incremental,
        ..InputsReport::default()
    };
    let target = match &pipeline.sink.table {
        Some(dir) => {
            let table = Table::at(&pipeline.resolve(dir))?;
            let app = pipeline.app_id();
            let committed = table.app_version(&app)?;
            let log = RunLog::new(table.dir(), &app);
            let done = if incremental {
                log.committed(committed)?
            } else {
                Vec::new()
            };
            Some((
                Target {
                    table,
                    app,
                    run: committed.unwrap_or(0) + 1,
                },
                log,
                done,
            ))
        }
        None => None,
    };
    let done: &[RunRecord] = target.as_ref().map_or(&[], |(_, _, done)| done);
    let mut record_files = Vec::new();
    let mut record_table = None;
    let source = match &pipeline.source.table {
        Some(dir) => {
            let table = Table::open(&pipeline.resolve(dir))?;
            let last = done.iter().rev().find_map(|r| {
                r.table
                    .as_ref()
                    .filter(|t| t.table == table.dir())
                    .map(|t| t.version)
            });
            let latest = match pipeline.source.version {
                Some(v) => v,
                None => table.version()?,
            };
            report.table_versions = Some((last, latest));
            record_table = Some(TableRead {
                table: table.dir().to_path_buf(),
                version: latest,
            });
            match last {
                Some(v) if v >= latest => None,
                Some(v) => {
                    let (state, files) = table.added_since(v, Some(latest))?;
                    Some(io::open_table(table_files(files), state.schema, &options)?)
                }
                None => {
                    let (state, files) = table.files(Some(latest))?;
                    Some(io::open_table(table_files(files), state.schema, &options)?)
                }
            }
        }
        // Files into a table that an incremental run may later read again: what is read is
        // recorded, content hash included.
        None if pipeline.source.incremental && target.is_some() => {
            let paths = io::expand_paths(&pipeline.source_paths())?;
            let observed = paths
                .iter()
                .map(|p| Observed::of(p))
                .collect::<Result<Vec<_>, _>>()?;
            let done_files: Vec<InputFile> = done.iter().flat_map(|r| r.files.clone()).collect();
            let plan = incremental::plan_files(
                &observed,
                &done_files,
                pipeline.source.on_change,
                &mut incremental::sha256_file,
            )?;
            report.done = plan.done;
            report.changed = plan.changed;
            let read: Vec<String> = plan
                .read
                .iter()
                .map(|f| f.path.to_string_lossy().into_owned())
                .collect();
            record_files = plan.read;
            (!read.is_empty())
                .then(|| io::open(&read, &options))
                .transpose()?
        }
        None => {
            let source = io::open(&pipeline.source_paths(), &options)?;
            Some(source)
        }
    };
    report.read_paths = files(&source);
    let target = target.map(|(target, log, _)| {
        let record = RunRecord {
            run: target.run,
            pipeline: pipeline.name(),
            stage: pipeline.stage_name().to_string(),
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            full_refresh,
            files: record_files,
            table: record_table,
        };
        (target, log, record)
    });
    Ok(Planned {
        source,
        report,
        target,
    })
}

pub(super) fn table_files(files: Vec<DataFile>) -> Vec<TableFile> {
    files
        .into_iter()
        .map(|f| TableFile {
            path: f.path,
            partition_values: f.partition_values,
        })
        .collect()
}

/// The paths of the files a source reads, for the input-equals-output check.
pub(super) fn files(source: &Option<io::Source>) -> Vec<PathBuf> {
    source
        .as_ref()
        .map(|s| s.files().to_vec())
        .unwrap_or_default()
}
