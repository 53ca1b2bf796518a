//! [`PipelineLock`]: one run of a pipeline at a time, across processes.
//!
//! The lock is an exclusive advisory lock (`flock` on Unix) on the file `lock` in the
//! pipeline's state directory. The operating system drops it when the holder's file is
//! closed, so also when the process dies, even by SIGKILL: a lock is never left behind. The
//! holder writes its pid and start time into the file, so that whoever is refused can say who
//! holds it. The file itself is never removed: removing a lock file while another process
//! waits on it would let a third one lock a new file of the same name.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// How often a waiting acquirer tries again; also how soon it notices its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What to do when another process holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Fail at once with [`LockError::Held`].
    Refuse,
    /// Wait until the lock is free, or until the deadline (then [`LockError::TimedOut`]).
    Wait {
        /// Give up at this instant; `None` waits as long as it takes.
        deadline: Option<Instant>,
    },
}

/// Who holds a lock: written into the lock file by its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holding process.
    pub pid: u32,
    /// When it took the lock.
    pub since: DateTime<Utc>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} since {}",
            self.pid,
            self.since.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }
}

/// Who holds a lock, in words: `pid N since T`, or `another process` when the file does not
/// tell (the holder has not written it yet).
fn holder_text(holder: &Option<Holder>) -> String {
    holder
        .as_ref()
        .map_or_else(|| "another process".to_string(), Holder::to_string)
}

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it, and the mode was [`LockMode::Refuse`].
    #[error("pipeline {pipeline} is being run by {} (lock {})", holder_text(.holder), .path.display())]
    Held {
        /// The pipeline.
        pipeline: String,
        /// Who holds it, if the lock file tells.
        holder: Option<Holder>,
        /// The lock file.
        path: PathBuf,
    },
    /// The deadline passed while another process held it.
    #[error("pipeline {pipeline} was still being run by {} after waiting {waited:.1?} (lock {})", holder_text(.holder), .path.display())]
    TimedOut {
        /// The pipeline.
        pipeline: String,
        /// Who held it last, if the lock file told.
        holder: Option<Holder>,
        /// The lock file.
        path: PathBuf,
        /// How long it waited.
        waited: Duration,
    },
    /// The stop flag was set while waiting.
    #[error("pipeline {pipeline}: stopped while waiting for its lock")]
    Stopped {
        /// The pipeline.
        pipeline: String,
    },
    /// The lock file could not be opened or locked.
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// The exclusive right to run one pipeline, until dropped (or the process ends).
#[derive(Debug)]
pub struct PipelineLock {
    file: File,
    path: PathBuf,
    pipeline: String,
}

impl PipelineLock {
    /// Locks the file `path` (created if missing; its directory must exist) for the pipeline
    /// named `pipeline`, and writes this process's pid and the time into it. While another
    /// process (or another open of the file in this one) holds it, `mode` decides; a set
    /// `stop` flag ends a wait within 50 ms.
    pub fn acquire(
        path: &Path,
        pipeline: &str,
        mode: LockMode,
        stop: Option<&AtomicBool>,
    ) -> Result<PipelineLock, LockError> {
        let io = |action, source| LockError::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io("open", e))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::Error(e)) => return Err(io("lock", e)),
                Err(TryLockError::WouldBlock) => {}
            }
            let holder = Self::holder(path);
            let deadline = match mode {
                LockMode::Refuse => {
                    return Err(LockError::Held {
                        pipeline: pipeline.to_string(),
                        holder,
                        path: path.to_path_buf(),
                    })
                }
                LockMode::Wait { deadline } => deadline,
            };
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Err(LockError::Stopped {
                    pipeline: pipeline.to_string(),
                });
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(LockError::TimedOut {
                    pipeline: pipeline.to_string(),
                    holder,
                    path: path.to_path_buf(),
                    waited: now - started,
                });
            }
            // Polled rather than blocking in `File::lock`, which has no deadline and cannot be
            // interrupted.
            let nap = deadline.map_or(POLL, |d| POLL.min(d - now));
            std::thread::sleep(nap);
        }
        let holder = Holder {
            pid: std::process::id(),
            since: Utc::now(),
        };
        let mut text = serde_json::to_vec(&holder).expect("a holder always serialises");
        text.push(b'\n');
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&text))
            .map_err(|e| io("write the holder into", e))?;
        Ok(PipelineLock {
            file,
            path: path.to_path_buf(),
            pipeline: pipeline.to_string(),
        })
    }

    /// Who holds the lock at `path` now, as its holder wrote it; `None` if no one wrote (yet).
    pub fn holder(path: &Path) -> Option<Holder> {
        let mut text = String::new();
        File::open(path).ok()?.read_to_string(&mut text).ok()?;
        serde_json::from_str(text.trim()).ok()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pipeline it is for.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }
}

impl Drop for PipelineLock {
    fn drop(&mut self) {
        // Emptied first, so that no one reads a released lock's holder as current; closing
        // the file (next) releases the lock even if this fails.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        (dir, path)
    }

    #[test]
    fn a_second_acquirer_is_refused_with_the_holders_pid_and_start() {
        let (_dir, path) = lock_path();
        let held = PipelineLock::acquire(&path, "daily", LockMode::Refuse, None).unwrap();
        let err = PipelineLock::acquire(&path, "daily", LockMode::Refuse, None).unwrap_err();
        let LockError::Held {
            holder: Some(holder),
            ..
        } = &err
        else {
            panic!("expected a refusal naming the holder, got {err}");
        };
        assert_eq!(holder.pid, std::process::id());
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "pipeline daily is being run by pid {} since ",
                std::process::id()
            )),
            "{text}"
        );
        drop(held);
        PipelineLock::acquire(&path, "daily", LockMode::Refuse, None).expect("free once dropped");
    }

    #[test]
    fn a_waiter_gets_the_lock_when_the_holder_drops_it() {
        let (_dir, path) = lock_path();
        let held = PipelineLock::acquire(&path, "daily", LockMode::Refuse, None).unwrap();
        let released_at = std::sync::Arc::new(std::sync::Mutex::new(None));
        let releaser = {
            let released_at = released_at.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                *released_at.lock().unwrap() = Some(Instant::now());
                drop(held);
            })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let lock = PipelineLock::acquire(
            &path,
            "daily",
            LockMode::Wait {
                deadline: Some(deadline),
            },
            None,
        )
        .unwrap();
        let got = Instant::now();
        releaser.join().unwrap();
        assert!(
            got >= released_at
                .lock()
                .unwrap()
                .expect("released before it was acquired")
        );
        assert_eq!(
            PipelineLock::holder(lock.path()).unwrap().pid,
            std::process::id()
        );
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline_or_when_stopped() {
        let (_dir, path) = lock_path();
        let _held = PipelineLock::acquire(&path, "daily", LockMode::Refuse, None).unwrap();
        let deadline = Instant::now() + Duration::from_millis(150);
        let err = PipelineLock::acquire(
            &path,
            "daily",
            LockMode::Wait {
                deadline: Some(deadline),
            },
            None,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                LockError::TimedOut {
                    holder: Some(_),
                    ..
                }
            ),
            "{err}"
        );
        assert!(Instant::now() >= deadline);
        let stop = AtomicBool::new(true);
        let err = PipelineLock::acquire(
            &path,
            "daily",
            LockMode::Wait { deadline: None },
            Some(&stop),
        )
        .unwrap_err();
        assert!(matches!(err, LockError::Stopped { .. }), "{err}");
    }

    #[test]
    fn a_released_lock_names_no_holder() {
        let (_dir, path) = lock_path();
        drop(PipelineLock::acquire(&path, "daily", LockMode::Refuse, None).unwrap());
        assert_eq!(PipelineLock::holder(&path), None);
    }

    /// The lock holds against another process, and the operating system releases it when
    /// that process is killed. The other process is this test binary again, running
    /// [`hold_the_lock_in_a_child`] alone.
    #[test]
    fn the_lock_excludes_another_process_and_dies_with_it() {
        let (_dir, path) = lock_path();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::tests::hold_the_lock_in_a_child",
                "--nocapture",
                "--ignored",
            ])
            .env("QUIVER_TEST_LOCK_PATH", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Wait (bounded) until the child holds the lock.
        let deadline = Instant::now() + Duration::from_secs(30);
        while PipelineLock::holder(&path).is_none_or(|h| h.pid != pid) {
            assert!(Instant::now() < deadline, "the child never took the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = PipelineLock::acquire(&path, "daily", LockMode::Refuse, None).unwrap_err();
        assert!(
            matches!(&err, LockError::Held { holder: Some(h), .. } if h.pid == pid),
            "{err}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // SIGKILL leaves the holder in the file, but not the lock.
        let deadline = Instant::now() + Duration::from_secs(10);
        PipelineLock::acquire(
            &path,
            "daily",
            LockMode::Wait {
                deadline: Some(deadline),
            },
            None,
        )
        .expect("the lock of a killed process is released");
    }

    /// Run only as the child of the test above: takes the lock and holds it until killed.
    #[test]
    #[ignore = "run by the_lock_excludes_another_process_and_dies_with_it"]
    fn hold_the_lock_in_a_child() {
        let Some(path) = std::env::var_os("QUIVER_TEST_LOCK_PATH") else {
            return;
        };
        let _lock =
            PipelineLock::acquire(Path::new(&path), "daily", LockMode::Refuse, None).unwrap();
        // Bounded: the parent kills it long before.
        std::thread::sleep(Duration::from_secs(60));
    }
}
