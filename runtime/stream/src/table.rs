//! A Delta table as a stream's sink, exactly-once.
//!
//! Each task writes its rows of an epoch into data files of the table's directory, named by
//! job, epoch and partition ([`names::table_stem`]) under their final names: a table's readers
//! see only the files its log names. At the barrier the task closes and syncs them, and the
//! checkpoint's manifest lists them like any sink's files (with the same temporary and final
//! name: nothing to rename) — the manifest stays the commit point. Publishing the epoch is then
//! one Delta commit adding those files, carrying the transaction id (`quiver-stream/<job>`,
//! epoch) and the operation parameters `quiver.job` and `quiver.epoch`. The table records the
//! job's last epoch, so recovery redoes the last manifest's publish without fear: after a crash
//! between the manifest and the Delta commit it commits the epoch, after the Delta commit it
//! commits nothing. Files of an epoch that never reached a manifest are in no commit, and
//! recovery deletes them before the epoch is run again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::datatypes::Schema;

use super::{io_err, StreamError};
use quiver_checkpoint::store::sync_dir;
use quiver_checkpoint::{names, Epoch, Manifest, PendingFile};
use quiver_lake::delta::{Commit, SchemaPolicy, StagedWriter, WriteOptions};
use quiver_lake::Table;

/// The table a streaming job writes, with how it writes it.
pub(crate) struct TableSink {
    table: Table,
    job: String,
    /// The job's transaction id in the table.
    app: String,
    options: WriteOptions,
    /// Tasks make the table ready for their files one at a time: the first one creates it.
    preparing: Mutex<()>,
}

/// Whether a checkpoint's file is a table's data file, committed where it was written: its
/// temporary and final names are the same.
pub(crate) fn in_place(file: &PendingFile) -> bool {
    file.temp == file.fin
}

impl TableSink {
    /// The table in `dir` (created by the first output) as `job`'s sink.
    pub(crate) fn new(
        dir: &Path,
        job: &str,
        partition_by: Vec<String>,
        schema: SchemaPolicy,
    ) -> Result<Self, StreamError> {
        Ok(TableSink {
            table: Table::at(dir)?,
            job: job.to_string(),
            app: format!("quiver-stream/{job}"),
            options: WriteOptions {
                partition_by,
                schema,
                ..WriteOptions::default()
            },
            preparing: Mutex::new(()),
        })
    }

    /// A task's writer of rows with `schema`; the table is created, or given the columns a
    /// merge adds, first.
    pub(crate) fn writer(&self, schema: &Schema) -> Result<StagedWriter, StreamError> {
        let _one_at_a_time = self.preparing.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.table.staged_writer(schema, self.options.clone())?)
    }

    /// Makes the names of `files` durable in their partition directories (and those
    /// directories' in their parents), before a manifest names them. The table's directory
    /// itself is synced as the sink's.
    pub(crate) fn sync_dirs<'a>(
        &self,
        files: impl IntoIterator<Item = &'a PendingFile>,
    ) -> Result<(), StreamError> {
        let root = self.table.dir();
        let mut dirs = BTreeSet::new();
        for f in files.into_iter().filter(|f| in_place(f)) {
            let mut dir = root.join(&f.fin);
            while dir.pop() && dir != root {
                dirs.insert(dir.clone());
            }
        }
        for dir in dirs {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Publishes `epoch`, whose checkpoint lists `files`: one Delta commit of its table files
    /// with the job's transaction id, or nothing if the table has it already. An epoch that
    /// wrote no table file makes no commit.
    pub(crate) fn publish(&self, epoch: Epoch, files: &[PendingFile]) -> Result<(), StreamError> {
        let files: Vec<String> = files
            .iter()
            .filter(|f| in_place(f))
            .map(|f| f.fin.clone())
            .collect();
        if files.is_empty() {
            return Ok(());
        }
        let commit = Commit {
            transaction: Some((self.app.clone(), epoch as i64)),
            parameters: vec![
                ("quiver.job".into(), self.job.clone()),
                ("quiver.epoch".into(), epoch.to_string()),
            ],
        };
        let done = self.table.publish(&files, commit)?;
        if done.already_committed {
            tracing::info!(job = %self.job, epoch, table = %self.table.dir().display(), "the epoch was committed to the table before");
        }
        Ok(())
    }

    /// Refuses to start the job over while the table holds epochs of it: they would be taken
    /// for committed and skipped.
    pub(crate) fn refuse_restart(&self) -> Result<(), StreamError> {
        match self.table.app_version(&self.app)? {
            None => Ok(()),
            Some(epoch) => Err(StreamError::Setup(format!(
                "table {} already holds epochs of job `{}` (up to {epoch}); starting over would write those rows again, under epochs the table counts as committed: write under another [stream] job, or into another table",
                self.table.dir().display(),
                self.job
            ))),
        }
    }

    /// Recovery of the table after `last`, the job's last checkpoint: checks that the table
    /// holds no later epoch of the job, redoes the checkpoint's publish, and deletes the files
    /// of epochs that never reached a manifest.
    pub(crate) fn recover(&self, last: Option<&Manifest>) -> Result<(), StreamError> {
        let committed = last.map_or(0, |m| m.epoch);
        let recorded = self.table.app_version(&self.app)?;
        if let Some(epoch) = recorded.filter(|&e| e > committed as i64) {
            return Err(StreamError::TableAhead {
                table: self.table.dir().to_path_buf(),
                job: self.job.clone(),
                table_epoch: epoch,
                checkpoint_epoch: committed,
            });
        }
        if let Some(m) = last {
            if recorded.is_none_or(|e| e < m.epoch as i64) && m.pending.iter().any(in_place) {
                tracing::info!(job = %self.job, epoch = m.epoch, "making the last checkpoint's table commit, which a crash interrupted");
            }
            self.publish(m.epoch, &m.pending)?;
        }
        self.delete_orphans(committed)
    }

    /// Deletes the job's data files of epochs after `committed` (no manifest names them, so
    /// no commit does), anywhere in the table's partition directories.
    fn delete_orphans(&self, committed: Epoch) -> Result<(), StreamError> {
        let mut dirs: Vec<PathBuf> = vec![self.table.dir().to_path_buf()];
        let mut emptied = BTreeSet::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).map_err(io_err(&dir, "cannot list"))? {
                let entry = entry.map_err(io_err(&dir, "cannot list"))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                let is_dir = entry
                    .file_type()
                    .map_err(io_err(&path, "cannot stat"))?
                    .is_dir();
                if is_dir {
                    // The log, dead letters and hidden directories hold no data files; a
                    // partition directory's name has `=`.
                    if !name.starts_with(['_', '.']) || name.contains('=') {
                        dirs.push(path);
                    }
                } else if names::table_file_epoch(&self.job, &name).is_some_and(|e| e > committed) {
                    std::fs::remove_file(&path)
                        .map_err(io_err(&path, "cannot delete an uncommitted file"))?;
                    emptied.insert(dir.clone());
                }
            }
        }
        // Durable, so that a power loss cannot bring back a file the rerun of its epoch does
        // not write again (no commit would name it: garbage until a vacuum).
        for dir in emptied {
            sync_dir(&dir)?;
        }
        Ok(())
    }
}
