//! The files of a streaming sink: each epoch's output and dead-letter files, written under
//! temporary names named by (job, partition, epoch) and renamed when the epoch commits, or a
//! table sink's data files, written in place (see [`table`](super::table)); and the checkpoint
//! actions (rename, delete) performed on them.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::chunk::encode_json_lines;
use super::decode::BadLine;
use super::table::TableSink;
use super::{io_err, StreamError};
use quiver_checkpoint::{names, Action, Epoch, PendingFile};
use quiver_data::io::{FileWriter, Format, IoError};
use quiver_lake::delta::StagedWriter;

/// The directory of a sink's dead letters, relative to the sink's directory: inside it, so
/// that they commit with the same protocol; `_` makes dataset readers skip it.
pub(crate) const DEAD_LETTER_DIR: &str = "_dead-letter";

/// Performs one checkpoint action in the output directory (idempotent).
pub(crate) fn apply(dir: &Path, action: &Action) -> Result<(), StreamError> {
    match action {
        // A table's data file, committed where it was written.
        Action::Rename { temp, fin } if temp == fin => Ok(()),
        Action::Rename { temp, fin } => {
            let (t, f) = (dir.join(temp), dir.join(fin));
            match std::fs::rename(&t, &f) {
                Ok(()) => Ok(()),
                // Renamed before a crash: done.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && f.exists() => Ok(()),
                Err(e) => Err(io_err(&t, "cannot commit")(e).into()),
            }
        }
        Action::Delete(temp) => {
            let t = dir.join(temp);
            match std::fs::remove_file(&t) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io_err(&t, "cannot delete an uncommitted file")(e).into())
                }
                _ => Ok(()),
            }
        }
    }
}

/// Names (relative to `dir`) of this job's temporary files and of final files, in `dir` and
/// its dead-letter directory.
pub(crate) fn listing(dir: &Path, job: &str) -> Result<(Vec<String>, Vec<String>), StreamError> {
    let mut temps = Vec::new();
    let mut finals = Vec::new();
    for sub in ["", DEAD_LETTER_DIR] {
        let d = dir.join(sub);
        let entries = match std::fs::read_dir(&d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !sub.is_empty() => continue,
            r => r.map_err(io_err(&d, "cannot list"))?,
        };
        for entry in entries {
            let name = entry
                .map_err(io_err(&d, "cannot list"))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            let rel = if sub.is_empty() {
                name.clone()
            } else {
                format!("{sub}/{name}")
            };
            if names::parse_temp(&name).is_some_and(|t| t.job == job) {
                temps.push(rel);
            } else if name.starts_with("part-") {
                finals.push(rel);
            }
        }
    }
    Ok((temps, finals))
}

/// A file of one epoch, open under its temporary name in the sink's directory.
pub(crate) struct EpochFile {
    temp: String,
    fin: String,
    path: PathBuf,
    format: Format,
    writer: FileWriter,
}

impl EpochFile {
    pub(crate) fn create(
        dir: &Path,
        job: &str,
        (partition, epoch): (u32, Epoch),
        format: Format,
        schema: &SchemaRef,
    ) -> Result<EpochFile, StreamError> {
        let ext = format.extension();
        let temp = names::temp_name(job, partition, epoch, 0, ext);
        let fin = names::final_name(partition, epoch, 0, ext);
        let path = dir.join(&temp);
        // A file of this name can only be left from a run that crashed before committing.
        let file = std::fs::File::create(&path).map_err(io_err(&path, "cannot create"))?;
        let final_path = dir.join(&fin);
        let writer = FileWriter::new(file, format, schema).map_err(|reason| IoError::Write {
            path: final_path.clone(),
            format,
            reason,
        })?;
        Ok(EpochFile {
            temp,
            fin,
            path: final_path,
            format,
            writer,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), StreamError> {
        self.writer
            .write(batch)
            .map_err(|reason| self.error(reason))
    }

    fn error(&self, reason: String) -> StreamError {
        IoError::Write {
            path: self.path.clone(),
            format: self.format,
            reason,
        }
        .into()
    }

    /// Writes the file's footer and hands it over, to be fsynced by the committer.
    fn close(self) -> Result<(std::fs::File, PendingFile), StreamError> {
        let path = self.path;
        let format = self.format;
        let file = self.writer.finish().map_err(|reason| IoError::Write {
            path,
            format,
            reason,
        })?;
        Ok((
            file,
            PendingFile {
                temp: self.temp,
                fin: self.fin,
            },
        ))
    }
}

/// An epoch's output and dead-letter files, opened at their first row.
#[derive(Default)]
pub(crate) struct EpochFiles {
    pub(crate) output: Option<EpochFile>,
    dead: Option<DeadFile>,
    /// A table sink's writer: made at the task's first output and kept, its files named by
    /// epoch.
    table: Option<TableFiles>,
}

/// A task's writer of a table sink's data files.
struct TableFiles {
    writer: StagedWriter,
    /// The epoch its files are named for; `None` after a barrier closed them.
    epoch: Option<Epoch>,
}

impl EpochFiles {
    /// Writes output rows of `partition` in `epoch` into the table's data files.
    pub(crate) fn write_table(
        &mut self,
        sink: &TableSink,
        job: &str,
        (partition, epoch): (u32, Epoch),
        batch: &RecordBatch,
    ) -> Result<(), StreamError> {
        let files = match &mut self.table {
            Some(files) => files,
            None => self.table.insert(TableFiles {
                writer: sink.writer(batch.schema_ref())?,
                epoch: None,
            }),
        };
        if files.epoch != Some(epoch) {
            files
                .writer
                .begin(&names::table_stem(job, partition, epoch));
            files.epoch = Some(epoch);
        }
        Ok(files.writer.write(batch)?)
    }

    /// Closes the epoch's files and makes their contents durable (`fdatasync`: the data and
    /// the size, without timestamps nobody reads back; a table's writer syncs its own) —
    /// before the task acknowledges the barrier, so that the acknowledgement is plain names.
    /// Returns them and their total size. Their names become durable when the committer syncs
    /// the directories.
    pub(crate) fn close(&mut self, dir: &Path) -> Result<(Vec<PendingFile>, u64), StreamError> {
        let mut closed = Vec::new();
        if let Some(f) = self.output.take() {
            closed.push(f.close()?);
        }
        if let Some(f) = self.dead.take() {
            closed.push(f.close(dir)?);
        }
        let mut bytes = 0;
        let mut pending = Vec::with_capacity(closed.len());
        for (file, p) in closed {
            let path = dir.join(&p.temp);
            file.sync_data().map_err(io_err(&path, "cannot sync"))?;
            bytes += file.metadata().map_err(io_err(&path, "cannot stat"))?.len();
            pending.push(p);
        }
        if let Some(table) = &mut self.table {
            table.epoch = None;
            for name in table.writer.finish()? {
                let path = dir.join(&name);
                bytes += std::fs::metadata(&path)
                    .map_err(io_err(&path, "cannot stat"))?
                    .len();
                pending.push(PendingFile {
                    temp: name.clone(),
                    fin: name,
                });
            }
        }
        Ok((pending, bytes))
    }
}

/// Dead letters of one micro-batch, as one batch of JSON text lines (rows of any schema, with
/// why they are there).
pub(crate) struct DeadLetterLines(pub(crate) Vec<String>);

impl DeadLetterLines {
    pub(crate) fn lines(&mut self, bad: &[BadLine]) {
        for b in bad {
            self.0.push(
                serde_json::json!({
                    "_error": b.message,
                    "_source": format!("{}:{}", b.path.display(), b.line),
                    "_line": b.text,
                })
                .to_string(),
            );
        }
    }

    pub(crate) fn rows(&mut self, rows: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
        let text = encode_json_lines(rows)?;
        self.0
            .extend(String::from_utf8_lossy(&text).lines().map(str::to_string));
        Ok(())
    }

    /// Appends the lines to the epoch's dead-letter file (opened at its first line).
    pub(crate) fn write(
        self,
        files: &mut EpochFiles,
        dir: &Path,
        job: &str,
        at: (u32, Epoch),
    ) -> Result<u64, StreamError> {
        if self.0.is_empty() {
            return Ok(0);
        }
        if files.dead.is_none() {
            files.dead = Some(DeadFile::create(dir, job, at)?);
        }
        let dead = files.dead.as_mut().expect("opened above");
        for line in &self.0 {
            dead.file
                .write_all(line.as_bytes())
                .and_then(|_| dead.file.write_all(b"\n"))
                .map_err(io_err(&dir.join(&dead.temp), "cannot write"))?;
        }
        Ok(self.0.len() as u64)
    }
}

/// An epoch's dead letters: JSON lines of any shape, under a temporary name until it commits.
pub(crate) struct DeadFile {
    temp: String,
    fin: String,
    file: std::io::BufWriter<std::fs::File>,
}

impl DeadFile {
    fn create(
        dir: &Path,
        job: &str,
        (partition, epoch): (u32, Epoch),
    ) -> Result<DeadFile, StreamError> {
        let sub = dir.join(DEAD_LETTER_DIR);
        std::fs::create_dir_all(&sub).map_err(io_err(&sub, "cannot create"))?;
        let ext = Format::Jsonl.extension();
        let temp = format!(
            "{DEAD_LETTER_DIR}/{}",
            names::temp_name(job, partition, epoch, 0, ext)
        );
        let fin = format!(
            "{DEAD_LETTER_DIR}/{}",
            names::final_name(partition, epoch, 0, ext)
        );
        let path = dir.join(&temp);
        let file = std::fs::File::create(&path).map_err(io_err(&path, "cannot create"))?;
        Ok(DeadFile {
            temp,
            fin,
            file: std::io::BufWriter::new(file),
        })
    }

    fn close(self, dir: &Path) -> Result<(std::fs::File, PendingFile), StreamError> {
        let path = dir.join(&self.temp);
        let file = self
            .file
            .into_inner()
            .map_err(|e| io_err(&path, "cannot write")(e.into_error()))?;
        Ok((
            file,
            PendingFile {
                temp: self.temp,
                fin: self.fin,
            },
        ))
    }
}
