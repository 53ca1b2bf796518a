//! Where a pipeline's scheduling state lives: `<directory of the pipeline file>/.quiver/<file
//! stem>/`, holding
//!
//! - `runs.jsonl`, the run history ([`History`]);
//! - `lock`, the file of the [`PipelineLock`];
//! - `last-scheduled`, the last fire time a scheduler took (an RFC 3339 time on one line),
//!   from which a restarted scheduler learns which runs it missed.
//!
//! The state sits next to the pipeline file, so that every process that runs the same file,
//! from any working directory, finds the same lock and history.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::history::History;
use crate::lock::{LockError, LockMode, PipelineLock};

/// The state directory could not be found, made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The pipeline file's name has no stem to name the state directory by.
    #[error("{}: a pipeline file needs a name (such as daily.toml)", .0.display())]
    NoName(PathBuf),
    /// A file operation failed.
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// `last-scheduled` does not hold a time.
    #[error("{}: not an RFC 3339 time: {text:?}", .path.display())]
    BadTime {
        /// The file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
}

/// A pipeline's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
    pipeline: String,
}

impl StateDir {
    /// The name of the directory, next to pipeline files, that holds their states.
    pub const PARENT: &'static str = ".quiver";

    /// The state directory of the pipeline file `pipeline_file` (which need not exist).
    pub fn of(pipeline_file: &Path) -> Result<StateDir, StateError> {
        let pipeline = pipeline_file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| StateError::NoName(pipeline_file.to_path_buf()))?;
        let parent = pipeline_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(StateDir {
            dir: parent.join(Self::PARENT).join(&pipeline),
            pipeline,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pipeline's name: its file's stem.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The run history's file.
    pub fn runs_path(&self) -> PathBuf {
        self.dir.join("runs.jsonl")
    }

    /// The lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// The file of the last fire time taken.
    pub fn last_scheduled_path(&self) -> PathBuf {
        self.dir.join("last-scheduled")
    }

    /// Makes the directory (and its parents) if missing.
    pub fn create(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StateError::Io {
            path: self.dir.clone(),
            action: "create",
            source,
        })
    }

    /// The run history.
    pub fn history(&self) -> History {
        History::new(self.runs_path())
    }

    /// Takes the pipeline's lock (making the directory first if needed); see
    /// [`PipelineLock::acquire`].
    pub fn lock(
        &self,
        mode: LockMode,
        stop: Option<&AtomicBool>,
    ) -> Result<PipelineLock, LockError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| LockError::Io {
            path: self.dir.clone(),
            action: "create",
            source,
        })?;
        PipelineLock::acquire(&self.lock_path(), &self.pipeline, mode, stop)
    }

    /// The last fire time a scheduler took, if one ever did.
    pub fn last_scheduled(&self) -> Result<Option<DateTime<Utc>>, StateError> {
        let path = self.last_scheduled_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path,
                    action: "read",
                    source,
                })
            }
        };
        DateTime::parse_from_rfc3339(text.trim())
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| StateError::BadTime { path, text })
    }

    /// Records the last fire time taken, replacing the file atomically (a crash leaves the old
    /// time or the new one, never a torn one).
    pub fn set_last_scheduled(&self, at: DateTime<Utc>) -> Result<(), StateError> {
        self.create()?;
        let path = self.last_scheduled_path();
        let text = format!("{}\n", at.to_rfc3339_opts(SecondsFormat::Millis, true));
        quiver_durable::write_durably(&path, text.as_bytes()).map_err(|source| StateError::Io {
            path,
            action: "write",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_sits_next_to_the_pipeline_file_under_its_stem() {
        let s = StateDir::of(Path::new("jobs/daily.toml")).unwrap();
        assert_eq!(s.dir(), Path::new("jobs/.quiver/daily"));
        assert_eq!(s.pipeline(), "daily");
        assert_eq!(s.runs_path(), Path::new("jobs/.quiver/daily/runs.jsonl"));
        assert_eq!(s.lock_path(), Path::new("jobs/.quiver/daily/lock"));
        let here = StateDir::of(Path::new("hourly.toml")).unwrap();
        assert_eq!(here.dir(), Path::new("./.quiver/hourly"));
        assert!(matches!(
            StateDir::of(Path::new("/")),
            Err(StateError::NoName(_))
        ));
    }

    #[test]
    fn the_last_fire_time_reads_back_and_is_absent_at_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::of(&dir.path().join("p.toml")).unwrap();
        assert_eq!(s.last_scheduled().unwrap(), None);
        let t = DateTime::from_timestamp_millis(1_714_564_800_250).unwrap();
        s.set_last_scheduled(t).unwrap();
        assert_eq!(s.last_scheduled().unwrap(), Some(t));
        std::fs::write(s.last_scheduled_path(), "yesterday").unwrap();
        assert!(matches!(
            s.last_scheduled(),
            Err(StateError::BadTime { .. })
        ));
    }
}
