//! Incremental runs: which inputs a pipeline's committed runs processed, and which inputs a
//! new run must read.
//!
//! A run that writes a lake table records what it read in a run record, `<table>/_quiver/runs/
//! <app>/<run>.json`, where `<app>` is the pipeline's transaction id in the table and `<run>`
//! the run number its commit carries. The record is written (and synced) before the commit,
//! and counts only once the table's transaction version for the pipeline has reached its run
//! number: the commit is the single point at which both the rows and the record of their
//! inputs become true, so a crash between the two can make neither count without the other.
//! Records of runs that never committed are ignored and overwritten by the next run.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an incremental run does with an input file that changed (size, modification time and
/// content hash) since a committed run processed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnChange {
    /// Fail the run naming the changed files (the default): the table already holds rows of
    /// their earlier content.
    #[default]
    Refuse,
    /// Read the file again and append its rows (the rows of its earlier content stay).
    Reprocess,
    /// Report it and leave it out.
    Skip,
}

/// A run record could not be read or written, or an input could not be examined.
#[derive(Debug, thiserror::Error)]
pub enum IncrementalError {
    /// A file of the run log or an input file failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A run record is not what this version writes.
    #[error("run record {path}: {message}")]
    Record {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Inputs changed since a committed run read them, and the pipeline refuses changes.
    #[error("{} input file(s) changed since a committed run processed them: {}. Set [source] on-change = \"reprocess\" or \"skip\", or run with --full-refresh", .files.len(), .files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))]
    Changed {
        /// The files.
        files: Vec<PathBuf>,
    },
}

/// An input file as a run read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Its absolute path.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: u128,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

/// The versions of a lake table a run read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRead {
    /// The table's directory.
    pub table: PathBuf,
    /// The version read up to (inclusive).
    pub version: u64,
}

/// What one run of a pipeline stage read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run number (the transaction version its commit carries).
    pub run: i64,
    /// The pipeline's name.
    pub pipeline: String,
    /// The stage.
    pub stage: String,
    /// When the run started, milliseconds since the epoch.
    pub started_ms: u64,
    /// A full refresh replaced the table: earlier runs no longer count.
    pub full_refresh: bool,
    /// Input files read.
    pub files: Vec<InputFile>,
    /// A table read, for a table source.
    pub table: Option<TableRead>,
}

/// The run records of one pipeline stage in one table.
#[derive(Debug, Clone)]
pub struct RunLog {
    dir: PathBuf,
}

impl RunLog {
    /// The run log of transaction id `app` in the table at `table_dir`.
    pub fn new(table_dir: &Path, app: &str) -> RunLog {
        let name: String = app
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        RunLog {
            dir: table_dir.join("_quiver").join("runs").join(name),
        }
    }

    fn path(&self, run: i64) -> PathBuf {
        self.dir.join(format!("{run:020}.json"))
    }

    /// The records that count: those of runs up to `committed` (the table's transaction
    /// version for the pipeline), from the latest full refresh on, oldest first.
    pub fn committed(&self, committed: Option<i64>) -> Result<Vec<RunRecord>, IncrementalError> {
        let Some(committed) = committed else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for run in (1..=committed).rev() {
            let path = self.path(run);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                // A run committed by another writer of this id without a record (a streaming
                // job, an older version): nothing to learn from it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(IncrementalError::Io {
                        path,
                        action: "reading",
                        source,
                    })
                }
            };
            let record: RunRecord =
                serde_json::from_str(&text).map_err(|e| IncrementalError::Record {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let full = record.full_refresh;
            out.push(record);
            if full {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Writes a run's record. Durability point: the record is on disk before the commit that
    /// makes it count.
    pub fn write(&self, record: &RunRecord) -> Result<(), IncrementalError> {
        let path = self.path(record.run);
        let bytes = serde_json::to_vec_pretty(record).expect("a run record serializes");
        quiver_durable::write_durably(&path, &bytes).map_err(|source| IncrementalError::Io {
            path,
            action: "writing",
            source,
        })
    }
}

/// An input file as it is now, before its content is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Its absolute path.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: u128,
}

impl Observed {
    /// Looks at the file.
    pub fn of(path: &Path) -> Result<Observed, IncrementalError> {
        let io = |source| IncrementalError::Io {
            path: path.to_path_buf(),
            action: "reading metadata",
            source,
        };
        let path = std::fs::canonicalize(path).map_err(io)?;
        let meta = std::fs::metadata(&path).map_err(io)?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(Observed {
            path,
            size: meta.len(),
            modified_ns,
        })
    }
}

/// Which input files a run reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilePlan {
    /// Files to read (new, or changed and reprocessed), with their hashes for the record.
    pub read: Vec<InputFile>,
    /// Files a committed run already processed, unchanged.
    pub done: Vec<PathBuf>,
    /// Files changed since a committed run processed them (read again or left out, per the
    /// policy).
    pub changed: Vec<PathBuf>,
}

/// Decides which of the files `now` a run reads, given the files committed runs read
/// (`done`, oldest run first). A file is unchanged when its size and modification time are
/// as recorded, or else when its content hash is; `hash` is asked only for files that are
/// new or whose size or time moved.
pub fn plan_files(
    now: &[Observed],
    done: &[InputFile],
    on_change: OnChange,
    hash: &mut dyn FnMut(&Path) -> Result<String, IncrementalError>,
) -> Result<FilePlan, IncrementalError> {
    // The latest record of each path wins.
    let recorded: HashMap<&Path, &InputFile> = done.iter().map(|f| (f.path.as_path(), f)).collect();
    let mut plan = FilePlan::default();
    for file in now {
        let input = |sha256: String| InputFile {
            path: file.path.clone(),
            size: file.size,
            modified_ns: file.modified_ns,
            sha256,
        };
        match recorded.get(file.path.as_path()) {
            None => plan.read.push(input(hash(&file.path)?)),
            Some(r) if r.size == file.size && r.modified_ns == file.modified_ns => {
                plan.done.push(file.path.clone())
            }
            Some(r) => {
                let sha256 = hash(&file.path)?;
                if sha256 == r.sha256 {
                    plan.done.push(file.path.clone());
                    continue;
                }
                plan.changed.push(file.path.clone());
                match on_change {
                    OnChange::Refuse => {}
                    OnChange::Reprocess => plan.read.push(input(sha256)),
                    OnChange::Skip => {}
                }
            }
        }
    }
    if on_change == OnChange::Refuse && !plan.changed.is_empty() {
        return Err(IncrementalError::Changed {
            files: plan.changed,
        });
    }
    Ok(plan)
}

/// The SHA-256 of a file's content, hex.
pub fn sha256_file(path: &Path) -> Result<String, IncrementalError> {
    let io = |source| IncrementalError::Io {
        path: path.to_path_buf(),
        action: "hashing",
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(path: &str, size: u64, t: u128) -> Observed {
        Observed {
            path: PathBuf::from(path),
            size,
            modified_ns: t,
        }
    }

    fn recorded(path: &str, size: u64, t: u128, sha: &str) -> InputFile {
        InputFile {
            path: PathBuf::from(path),
            size,
            modified_ns: t,
            sha256: sha.into(),
        }
    }

    /// Hashes from a table, counting the calls.
    fn hasher<'a>(
        hashes: &'a HashMap<&str, &str>,
        calls: &'a mut Vec<PathBuf>,
    ) -> impl FnMut(&Path) -> Result<String, IncrementalError> + 'a {
        move |p: &Path| {
            calls.push(p.to_path_buf());
            Ok(hashes[p.to_str().unwrap()].to_string())
        }
    }

    #[test]
    fn new_files_are_read_unchanged_ones_skipped_without_hashing() {
        let hashes = HashMap::from([("/a", "h1"), ("/b", "h2")]);
        let mut calls = Vec::new();
        let plan = plan_files(
            &[observed("/a", 10, 1), observed("/b", 5, 2)],
            &[recorded("/a", 10, 1, "h1")],
            OnChange::Refuse,
            &mut hasher(&hashes, &mut calls),
        )
        .unwrap();
        assert_eq!(plan.done, vec![PathBuf::from("/a")]);
        assert_eq!(plan.read, vec![recorded("/b", 5, 2, "h2")]);
        assert_eq!(
            calls,
            vec![PathBuf::from("/b")],
            "an unchanged file is not hashed"
        );
    }

    #[test]
    fn a_touched_file_with_the_same_content_counts_as_done() {
        let hashes = HashMap::from([("/a", "h1")]);
        let mut calls = Vec::new();
        let plan = plan_files(
            &[observed("/a", 10, 99)],
            &[recorded("/a", 10, 1, "h1")],
            OnChange::Refuse,
            &mut hasher(&hashes, &mut calls),
        )
        .unwrap();
        assert_eq!(plan.done, vec![PathBuf::from("/a")]);
        assert!(plan.read.is_empty() && plan.changed.is_empty());
    }

    #[test]
    fn a_changed_file_is_refused_reprocessed_or_skipped_by_the_policy() {
        let hashes = HashMap::from([("/a", "new")]);
        let now = [observed("/a", 12, 5)];
        let done = [recorded("/a", 10, 1, "old")];
        let mut calls = Vec::new();
        let e = plan_files(
            &now,
            &done,
            OnChange::Refuse,
            &mut hasher(&hashes, &mut calls),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/a"), "{e}");
        let plan = plan_files(
            &now,
            &done,
            OnChange::Reprocess,
            &mut hasher(&hashes, &mut calls),
        )
        .unwrap();
        assert_eq!(plan.read, vec![recorded("/a", 12, 5, "new")]);
        assert_eq!(plan.changed, vec![PathBuf::from("/a")]);
        let plan = plan_files(
            &now,
            &done,
            OnChange::Skip,
            &mut hasher(&hashes, &mut calls),
        )
        .unwrap();
        assert!(plan.read.is_empty());
        assert_eq!(plan.changed, vec![PathBuf::from("/a")]);
    }

    #[test]
    fn the_latest_record_of_a_path_wins() {
        let hashes = HashMap::from([("/a", "h2")]);
        let mut calls = Vec::new();
        let plan = plan_files(
            &[observed("/a", 12, 5)],
            &[recorded("/a", 10, 1, "h1"), recorded("/a", 12, 5, "h2")],
            OnChange::Refuse,
            &mut hasher(&hashes, &mut calls),
        )
        .unwrap();
        assert_eq!(plan.done.len(), 1);
    }

    #[test]
    fn only_committed_records_from_the_last_full_refresh_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::new(dir.path(), "quiver/p/main");
        let record = |run, full_refresh| RunRecord {
            run,
            pipeline: "p".into(),
            stage: "main".into(),
            started_ms: 0,
            full_refresh,
            files: vec![recorded(&format!("/f{run}"), 1, 1, "h")],
            table: None,
        };
        for (run, full) in [(1, false), (2, true), (3, false), (4, false)] {
            log.write(&record(run, full)).unwrap();
        }
        let runs = |committed| {
            log.committed(committed)
                .unwrap()
                .iter()
                .map(|r| r.run)
                .collect::<Vec<_>>()
        };
        assert_eq!(runs(None), Vec::<i64>::new());
        assert_eq!(runs(Some(1)), vec![1]);
        assert_eq!(
            runs(Some(3)),
            vec![2, 3],
            "run 4 never committed; run 2 refreshed"
        );
        assert_eq!(runs(Some(4)), vec![2, 3, 4]);
    }
}
