//! A pipeline's run history: one JSON object per line in `runs.jsonl`, one line per attempt
//! of a run, appended when the attempt ends.
//!
//! Run ids increase by one per attempt. They are given, and lines appended, only by the
//! holder of the pipeline's [`PipelineLock`], so two processes never give one id twice nor
//! interleave their lines. A process killed while appending leaves a torn last line: readers
//! skip it (and say so), and the next append cuts it off first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lock::PipelineLock;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `quiver run`.
    Manual,
    /// The scheduler, at a fire time.
    Schedule,
}

impl Trigger {
    /// The name used in the history and tables: `manual` or `schedule`.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The run wrote its output.
    Succeeded,
    /// The run failed (nothing was written).
    Failed,
}

impl RunStatus {
    /// The name used in the history and tables: `succeeded` or `failed`.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }
}

/// What a successful run reports to the history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// The inputs the run processed (files, or whatever the source names them by).
    pub inputs: Vec<String>,
    /// Inputs left alone because an earlier run had processed them (incremental runs).
    pub inputs_skipped: u64,
}

/// One attempt of one run, as a line of `runs.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id: one more than the one before it in this history.
    pub run: u64,
    /// The pipeline's name (its file's stem).
    pub pipeline: String,
    /// What started it.
    pub trigger: Trigger,
    /// The fire time a scheduled run is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// 1 for the first try, 2 for the first retry, …
    pub attempt: u32,
    /// When it started.
    pub start: DateTime<Utc>,
    /// When it ended.
    pub end: DateTime<Utc>,
    /// How it ended.
    pub status: RunStatus,
    /// Rows read (0 for a failed run).
    #[serde(default)]
    pub rows_in: u64,
    /// Rows written (0 for a failed run).
    #[serde(default)]
    pub rows_out: u64,
    /// The inputs processed.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Inputs skipped as already processed.
    #[serde(default)]
    pub inputs_skipped: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunRecord {
    /// How long it ran (zero if the clock went back meanwhile).
    pub fn duration(&self) -> Duration {
        (self.end - self.start).to_std().unwrap_or_default()
    }
}

/// A run begun under the pipeline's lock, with its id; [`RunStart::finish`] makes its
/// record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The run's id.
    pub run: u64,
    /// The pipeline's name.
    pub pipeline: String,
    /// What started it.
    pub trigger: Trigger,
    /// The fire time a scheduled run is for.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// 1 for the first try, 2 for the first retry, …
    pub attempt: u32,
    /// When it started.
    pub start: DateTime<Utc>,
}

impl RunStart {
    /// The record of the run, ended at `end` with `outcome`.
    pub fn finish(self, end: DateTime<Utc>, outcome: &Result<RunSummary, String>) -> RunRecord {
        let (status, summary, error) = match outcome {
            Ok(summary) => (RunStatus::Succeeded, summary.clone(), None),
            Err(e) => (RunStatus::Failed, RunSummary::default(), Some(e.clone())),
        };
        RunRecord {
            run: self.run,
            pipeline: self.pipeline,
            trigger: self.trigger,
            scheduled_for: self.scheduled_for,
            attempt: self.attempt,
            start: self.start,
            end,
            status,
            rows_in: summary.rows_in,
            rows_out: summary.rows_out,
            inputs: summary.inputs,
            inputs_skipped: summary.inputs_skipped,
            error,
        }
    }
}

/// The history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A file operation failed.
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        /// The history file.
        path: PathBuf,
        /// What was being done (`read`, `append to`, …).
        action: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A line other than the last one is not a record: the file was damaged or edited.
    #[error("{}:{line}: not a run record: {message}", .path.display())]
    Corrupt {
        /// The history file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// The JSON parser's message.
        message: String,
    },
    /// The lock passed in is another pipeline's.
    #[error("{}: the lock held is for {lock}, not this history", .path.display())]
    WrongLock {
        /// The history file.
        path: PathBuf,
        /// The lock file held.
        lock: PathBuf,
    },
}

/// The records read back from a history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runs {
    /// Every complete record, oldest first.
    pub records: Vec<RunRecord>,
    /// The last line was torn (a process died while appending it) and was left out.
    pub torn_tail: bool,
}

/// A pipeline's `runs.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    path: PathBuf,
}

impl History {
    /// The history in `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> History {
        History { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record, oldest first. A missing file is an empty history; a torn last line is
    /// left out and reported in [`Runs::torn_tail`]; any other line that is not a record is
    /// an error naming it.
    pub fn read(&self) -> Result<Runs, HistoryError> {
        let mut text = String::new();
        match File::open(&self.path) {
            Ok(mut f) => {
                f.read_to_string(&mut text)
                    .map_err(|source| self.io("read", source))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Runs::default()),
            Err(source) => return Err(self.io("open", source)),
        }
        parse(&self.path, &text)
    }

    /// The last complete record, read from the end of the file (a history grows with every
    /// run; the next id should not cost reading all of it). Records are appended in id order
    /// under the lock, so the last one has the largest id.
    pub fn last(&self) -> Result<Option<RunRecord>, HistoryError> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(self.io("open", source)),
        };
        let line = last_complete_line(&mut f).map_err(|source| self.io("read", source))?;
        match line {
            None => Ok(None),
            Some(line) => match serde_json::from_slice::<RunRecord>(&line) {
                Ok(record) => Ok(Some(record)),
                // Read it all, to name the damaged line.
                Err(_) => Ok(self.read()?.records.pop()),
            },
        }
    }

    /// Begins a run: gives it the next id. Takes the pipeline's lock, held until the record
    /// is appended, so that no other process gives the same id.
    pub fn begin(
        &self,
        lock: &PipelineLock,
        trigger: Trigger,
        scheduled_for: Option<DateTime<Utc>>,
        attempt: u32,
        start: DateTime<Utc>,
    ) -> Result<RunStart, HistoryError> {
        self.check_lock(lock)?;
        let last = self.last()?.map_or(0, |r| r.run);
        Ok(RunStart {
            run: last + 1,
            pipeline: lock.pipeline().to_string(),
            trigger,
            scheduled_for,
            attempt,
            start,
        })
    }

    /// Appends a record, under the pipeline's lock. A torn last line left by a process that
    /// died while appending is cut off first, so that the new line starts a line of its own.
    pub fn append(&self, lock: &PipelineLock, record: &RunRecord) -> Result<(), HistoryError> {
        self.check_lock(lock)?;
        let mut line = serde_json::to_vec(record).expect("a run record always serialises");
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|source| self.io("open", source))?;
        let keep = complete_length(&mut f).map_err(|source| self.io("read", source))?;
        if keep
            < f.metadata()
                .map_err(|source| self.io("stat", source))?
                .len()
        {
            f.set_len(keep)
                .map_err(|source| self.io("cut the torn last line of", source))?;
        }
        f.write_all(&line)
            .map_err(|source| self.io("append to", source))?;
        // The durability point: a record is on disk before the run is reported as recorded.
        f.sync_data().map_err(|source| self.io("sync", source))?;
        if keep == 0 {
            // The file may be new: its directory entry must be on disk too.
            quiver_durable::sync_dir(&quiver_durable::parent_dir(&self.path))
                .map_err(|source| self.io("sync the directory of", source))?;
        }
        Ok(())
    }

    fn check_lock(&self, lock: &PipelineLock) -> Result<(), HistoryError> {
        if lock.path().parent() == self.path.parent() {
            Ok(())
        } else {
            Err(HistoryError::WrongLock {
                path: self.path.clone(),
                lock: lock.path().to_path_buf(),
            })
        }
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> HistoryError {
        HistoryError::Io {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

/// The length of the file up to and including its last newline.
fn complete_length(f: &mut File) -> std::io::Result<u64> {
    let len = f.seek(SeekFrom::End(0))?;
    // Read backwards in blocks until a newline; records are short, so one block usually does.
    let mut end = len;
    let mut block = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The last newline-terminated line that is not blank, without its newline.
fn last_complete_line(f: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let mut end = complete_length(f)?;
    // Read backwards in blocks, gathering the bytes after the newline before `end`.
    let mut line: Vec<u8> = Vec::new();
    let mut block = [0u8; 4096];
    let mut pos = end;
    loop {
        let start = pos.saturating_sub(block.len() as u64);
        let n = (pos - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block[..n])?;
        let mut chunk = &block[..n];
        if pos == end && chunk.last() == Some(&b'\n') {
            chunk = &chunk[..n - 1];
        }
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                line.splice(0..0, chunk[i + 1..].iter().copied());
                if !line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Some(line));
                }
                // A blank line: look at the one before it.
                line.clear();
                end = start + i as u64 + 1;
                pos = end;
            }
            None => {
                line.splice(0..0, chunk.iter().copied());
                if start == 0 {
                    let blank = line.iter().all(u8::is_ascii_whitespace);
                    return Ok((!blank).then_some(line));
                }
                pos = start;
            }
        }
    }
}

/// The records of a history file's text.
fn parse(path: &Path, text: &str) -> Result<Runs, HistoryError> {
    let mut runs = Runs::default();
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RunRecord>(line) {
            Ok(record) => runs.records.push(record),
            // Only an unfinished last line can be torn: every append ends with a newline.
            Err(_) if i + 1 == lines.len() && !complete => runs.torn_tail = true,
            Err(e) => {
                return Err(HistoryError::Corrupt {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{LockMode, PipelineLock};

    fn record(run: u64, status: RunStatus) -> RunRecord {
        let start = DateTime::from_timestamp(1_714_564_800, 0).unwrap();
        RunRecord {
            run,
            pipeline: "daily".into(),
            trigger: Trigger::Schedule,
            scheduled_for: Some(start),
            attempt: 1,
            start,
            end: start + chrono::TimeDelta::milliseconds(1500),
            status,
            rows_in: 10,
            rows_out: 7,
            inputs: vec!["in/a.csv".into()],
            inputs_skipped: 0,
            error: (status == RunStatus::Failed).then(|| "in/a.csv: not found".into()),
        }
    }

    fn setup() -> (tempfile::TempDir, History, PipelineLock) {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(dir.path().join("runs.jsonl"));
        let lock = PipelineLock::acquire(&dir.path().join("lock"), "daily", LockMode::Refuse, None)
            .unwrap();
        (dir, history, lock)
    }

    #[test]
    fn a_missing_history_is_empty() {
        let (_dir, history, _lock) = setup();
        assert_eq!(history.read().unwrap(), Runs::default());
    }

    #[test]
    fn records_read_back_as_appended_and_ids_increase() {
        let (_dir, history, lock) = setup();
        for status in [RunStatus::Failed, RunStatus::Succeeded] {
            let now = Utc::now();
            let start = history.begin(&lock, Trigger::Manual, None, 1, now).unwrap();
            let outcome = match status {
                RunStatus::Succeeded => Ok(RunSummary {
                    rows_in: 3,
                    rows_out: 2,
                    inputs: vec!["x".into()],
                    inputs_skipped: 1,
                }),
                RunStatus::Failed => Err("boom".to_string()),
            };
            history.append(&lock, &start.finish(now, &outcome)).unwrap();
        }
        let runs = history.read().unwrap();
        assert!(!runs.torn_tail);
        let ids: Vec<u64> = runs.records.iter().map(|r| r.run).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(runs.records[0].status, RunStatus::Failed);
        assert_eq!(runs.records[0].error.as_deref(), Some("boom"));
        assert_eq!(runs.records[0].rows_in, 0);
        assert_eq!(runs.records[1].status, RunStatus::Succeeded);
        assert_eq!(
            (
                runs.records[1].rows_in,
                runs.records[1].rows_out,
                runs.records[1].inputs_skipped
            ),
            (3, 2, 1)
        );
        assert_eq!(runs.records[1].error, None);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_cut_off_by_the_next_append() {
        let (_dir, history, lock) = setup();
        history
            .append(&lock, &record(1, RunStatus::Succeeded))
            .unwrap();
        // A process killed in the middle of its append.
        let full = serde_json::to_string(&record(2, RunStatus::Failed)).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(history.path())
            .unwrap();
        f.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
        drop(f);
        let runs = history.read().unwrap();
        assert!(runs.torn_tail);
        assert_eq!(runs.records, [record(1, RunStatus::Succeeded)]);
        // The next run gets the id after the last complete record, and its line is whole.
        let start = history
            .begin(&lock, Trigger::Schedule, None, 1, Utc::now())
            .unwrap();
        assert_eq!(start.run, 2);
        history
            .append(&lock, &record(2, RunStatus::Succeeded))
            .unwrap();
        let runs = history.read().unwrap();
        assert!(!runs.torn_tail);
        assert_eq!(
            runs.records,
            [
                record(1, RunStatus::Succeeded),
                record(2, RunStatus::Succeeded)
            ]
        );
    }

    #[test]
    fn a_torn_line_that_is_only_a_fragment_of_a_first_record_is_cut_too() {
        let (_dir, history, lock) = setup();
        std::fs::write(history.path(), "{\"run\":1,\"pipel").unwrap();
        assert_eq!(
            history.read().unwrap(),
            Runs {
                records: vec![],
                torn_tail: true
            }
        );
        history
            .append(&lock, &record(1, RunStatus::Failed))
            .unwrap();
        assert_eq!(
            history.read().unwrap().records,
            [record(1, RunStatus::Failed)]
        );
    }

    #[test]
    fn the_last_record_is_read_from_the_end_past_long_lines_blank_lines_and_a_torn_tail() {
        let (_dir, history, lock) = setup();
        assert_eq!(history.last().unwrap(), None);
        let mut long = record(1, RunStatus::Succeeded);
        long.inputs = (0..2000)
            .map(|i| format!("in/part-{i:05}.parquet"))
            .collect();
        history.append(&lock, &long).unwrap();
        assert_eq!(history.last().unwrap(), Some(long.clone()));
        let mut second = long.clone();
        second.run = 2;
        history.append(&lock, &second).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(history.path())
            .unwrap();
        f.write_all(b"\n  \n{\"run\":3,\"pip").unwrap();
        drop(f);
        assert_eq!(history.last().unwrap(), Some(second));
        let next = history
            .begin(&lock, Trigger::Manual, None, 1, Utc::now())
            .unwrap();
        assert_eq!(next.run, 3);
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_an_error_naming_it() {
        let (_dir, history, _lock) = setup();
        let good = serde_json::to_string(&record(1, RunStatus::Succeeded)).unwrap();
        std::fs::write(history.path(), format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = history.read().unwrap_err();
        assert!(
            matches!(err, HistoryError::Corrupt { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("runs.jsonl:2"), "{err}");
    }

    #[test]
    fn records_are_json_with_readable_times_and_names() {
        let json = serde_json::to_value(record(4, RunStatus::Failed)).unwrap();
        assert_eq!(json["trigger"], "schedule");
        assert_eq!(json["status"], "failed");
        assert_eq!(json["start"], "2024-05-01T12:00:00Z");
        assert_eq!(json["end"], "2024-05-01T12:00:01.500Z");
        assert_eq!(json["inputs"][0], "in/a.csv");
        assert_eq!(
            record(4, RunStatus::Failed).duration(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn another_pipelines_lock_is_refused() {
        let (dir, history, _lock) = setup();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        let other = PipelineLock::acquire(
            &dir.path().join("other/lock"),
            "other",
            LockMode::Refuse,
            None,
        )
        .unwrap();
        assert!(matches!(
            history.begin(&other, Trigger::Manual, None, 1, Utc::now()),
            Err(HistoryError::WrongLock { .. })
        ));
    }
}
