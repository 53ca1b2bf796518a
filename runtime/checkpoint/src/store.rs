//! Where checkpoints are kept: the [`CheckpointStore`] trait, and [`LocalStore`], a directory
//! on local disk that survives `kill -9` and power loss (every file is written to a temporary
//! name, fsynced, renamed, and its directory fsynced).
//!
//! Every manifest and state blob carries a SHA-256 that is checked when it is read back: a
//! damaged checkpoint is reported as [`StoreError::Corrupt`], naming the file, and never used.
//! A replicated store implements the same trait.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Epoch, Generation, Manifest, StateRef, TaskId};

/// How many committed manifests (and the state they name) a store keeps per job.
pub const KEEP: usize = 3;

/// A checkpoint store failed or refused a write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("checkpoint store {}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A manifest or state blob does not match its checksum, or cannot be parsed.
    #[error("checkpoint {} is damaged: {reason}; refusing to use it (remove the job's checkpoint directory to start over, or restore it from a copy)", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A writer of an older generation tried to commit after a newer one started.
    #[error("job `{job}`: generation {generation} may no longer commit (generation {current} has taken over)")]
    Fenced {
        /// The job.
        job: String,
        /// The writer's generation.
        generation: Generation,
        /// The store's current generation.
        current: Generation,
    },
    /// A store over a network (the cluster's replicated log) failed, refused the commit, or
    /// fenced the writer: its own error says which.
    #[error(transparent)]
    Remote(Box<dyn std::error::Error + Send + Sync>),
    /// A commit for an epoch not after the last committed one, with other contents.
    #[error("job `{job}`: checkpoint {epoch} is not after the last committed checkpoint {last}")]
    OutOfOrder {
        /// The job.
        job: String,
        /// The epoch offered.
        epoch: Epoch,
        /// The last committed epoch.
        last: Epoch,
    },
}

/// Durable storage of checkpoints, one job at a time.
///
/// Every method is blocking and fallible: it returns once what it did is durable (a write) or
/// known (a read), or with the error that stopped it. The streaming committer calls it from a
/// thread of its own, so the store must be `Send`. A store over a network must bound every call
/// by [`CheckpointStore::call_timeout`] and fail with an error naming the call when it passes:
/// a commit that times out is not known to have failed, and the protocol's fencing and
/// idempotent commits make retrying it safe.
pub trait CheckpointStore: Send {
    /// The most one call may block before it fails; `None` for a store that does no I/O over
    /// a network (its calls end when the disk answers).
    fn call_timeout(&self) -> Option<std::time::Duration> {
        None
    }
    /// Forgets everything stored for `job` (a run that starts over), durably.
    fn forget(&mut self, job: &str) -> Result<(), StoreError>;
    /// Takes the next generation for `job` and records it durably; from then on commits of
    /// lower generations are refused.
    fn claim(&mut self, job: &str) -> Result<Generation, StoreError>;
    /// Stores a task's state blob for `epoch`; returns the reference to put in the manifest.
    fn put_state(
        &mut self,
        job: &str,
        epoch: Epoch,
        task: TaskId,
        bytes: &[u8],
    ) -> Result<StateRef, StoreError>;
    /// Reads a state blob back, checking its length and checksum.
    fn get_state(&self, job: &str, state: &StateRef) -> Result<Vec<u8>, StoreError>;
    /// The commit point: stores `manifest` durably, after checking its generation and epoch.
    /// Storing the same manifest again is a no-op.
    fn commit(&mut self, manifest: &Manifest) -> Result<(), StoreError>;
    /// The last committed manifest of `job`, checked, or `None` if it has none.
    fn latest(&self, job: &str) -> Result<Option<Manifest>, StoreError>;
}

/// A checkpoint store in a local directory: `<dir>/<job>/generation`,
/// `<dir>/<job>/manifest-<epoch>.ckpt` and `<dir>/<job>/state/<epoch>-<task>.bin`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
    /// The last manifest this store committed or read per job, so that a commit does not read
    /// its predecessor back from disk.
    last: std::collections::HashMap<String, Manifest>,
    /// Commits since the last garbage collection, per job.
    since_gc: std::collections::HashMap<String, usize>,
}

const MAGIC: &str = "quiver-checkpoint 1";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// [`quiver_durable::write_durably`], naming `path` in the error. Durability point: the
/// directory fsync at its end.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    quiver_durable::write_durably(path, bytes).map_err(io(path))
}

/// [`quiver_durable::sync_dir`], naming `dir` in the error.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    quiver_durable::sync_dir(dir).map_err(io(dir))
}

/// A manifest file: a header line with the checksum and length of the JSON body, then the body.
fn encode(manifest: &Manifest) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    let mut out = format!("{MAGIC} {} {}\n", sha256_hex(&body), body.len()).into_bytes();
    out.extend_from_slice(&body);
    out
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..newline])
        .map_err(|_| corrupt("the header is not text".into()))?;
    let body = &bytes[newline + 1..];
    let fields: Vec<&str> = header.rsplitn(3, ' ').collect();
    let [len, sum, magic] = fields[..] else {
        return Err(corrupt(format!("bad header `{header}`")));
    };
    if magic != MAGIC {
        return Err(corrupt(format!("bad header `{header}`")));
    }
    if len.parse::<usize>().ok() != Some(body.len()) {
        return Err(corrupt(format!(
            "the header says {len} bytes of body, the file has {}",
            body.len()
        )));
    }
    let actual = sha256_hex(body);
    if actual != sum {
        return Err(corrupt(format!(
            "SHA-256 of the body is {actual}, the header says {sum}"
        )));
    }
    serde_json::from_slice(body).map_err(|e| corrupt(format!("unreadable: {e}")))
}

impl LocalStore {
    /// A store in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalStore {
            dir: dir.into(),
            last: Default::default(),
            since_gc: Default::default(),
        }
    }

    fn job_dir(&self, job: &str) -> PathBuf {
        self.dir.join(job)
    }

    fn manifest_path(&self, job: &str, epoch: Epoch) -> PathBuf {
        self.job_dir(job).join(format!("manifest-{epoch:020}.ckpt"))
    }

    /// The generation `job` last claimed (0 if none).
    pub fn generation(&self, job: &str) -> Result<Generation, StoreError> {
        let path = self.job_dir(job).join("generation");
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| StoreError::Corrupt {
                path,
                reason: format!("`{}` is not a generation number", text.trim()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Committed epochs of `job`, ascending.
    fn epochs(&self, job: &str) -> Result<Vec<Epoch>, StoreError> {
        let dir = self.job_dir(job);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut epochs = Vec::new();
        for entry in entries {
            let name = entry.map_err(io(&dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(e) = name
                .strip_prefix("manifest-")
                .and_then(|n| n.strip_suffix(".ckpt"))
                .and_then(|n| n.parse().ok())
            {
                epochs.push(e);
            }
        }
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Deletes manifests older than the last [`KEEP`] and state no kept manifest names.
    fn collect_garbage(&self, job: &str) -> Result<(), StoreError> {
        let epochs = self.epochs(job)?;
        if epochs.len() <= KEEP {
            return Ok(());
        }
        let (old, kept) = epochs.split_at(epochs.len() - KEEP);
        let mut live = std::collections::BTreeSet::new();
        for &e in kept {
            let path = self.manifest_path(job, e);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            live.extend(decode(&path, &bytes)?.state.into_values().map(|s| s.key));
        }
        for &e in old {
            let path = self.manifest_path(job, e);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        let state_dir = self.job_dir(job).join("state");
        if let Ok(entries) = std::fs::read_dir(&state_dir) {
            for entry in entries.flatten() {
                let key = format!("state/{}", entry.file_name().to_string_lossy());
                if !live.contains(&key) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        sync_dir(&self.job_dir(job))
    }
}

impl CheckpointStore for LocalStore {
    fn forget(&mut self, job: &str) -> Result<(), StoreError> {
        self.last.remove(job);
        self.since_gc.remove(job);
        let dir = self.job_dir(job);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io(&dir))?.path();
            // The generation stays: a writer of an earlier run must still be fenced off.
            if path.file_name().is_some_and(|n| n == "generation") {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io(&path))?;
        }
        // Durability point of the forgetting: the job directory's fsync.
        sync_dir(&dir)
    }

    fn claim(&mut self, job: &str) -> Result<Generation, StoreError> {
        let next = self.generation(job)? + 1;
        write_durably(
            &self.job_dir(job).join("generation"),
            format!("{next}\n").as_bytes(),
        )?;
        Ok(next)
    }

    fn put_state(
        &mut self,
        job: &str,
        epoch: Epoch,
        task: TaskId,
        bytes: &[u8],
    ) -> Result<StateRef, StoreError> {
        let key = format!("state/{epoch:020}-{task}.bin");
        write_durably(&self.job_dir(job).join(&key), bytes)?;
        Ok(StateRef {
            key,
            len: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        })
    }

    fn get_state(&self, job: &str, state: &StateRef) -> Result<Vec<u8>, StoreError> {
        let path = self.job_dir(job).join(&state.key);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let corrupt = |reason| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() as u64 != state.len {
            return Err(corrupt(format!(
                "{} bytes, the manifest says {}",
                bytes.len(),
                state.len
            )));
        }
        let actual = sha256_hex(&bytes);
        if actual != state.sha256 {
            return Err(corrupt(format!(
                "SHA-256 is {actual}, the manifest says {}",
                state.sha256
            )));
        }
        Ok(bytes)
    }

    fn commit(&mut self, manifest: &Manifest) -> Result<(), StoreError> {
        let job = &manifest.job;
        let current = self.generation(job)?;
        if manifest.generation < current {
            return Err(StoreError::Fenced {
                job: job.clone(),
                generation: manifest.generation,
                current,
            });
        }
        let last = match self.last.get(job) {
            Some(m) => Some(m.clone()),
            None => self.latest(job)?,
        };
        if let Some(last) = last {
            if last == *manifest {
                return Ok(());
            }
            if manifest.epoch <= last.epoch {
                return Err(StoreError::OutOfOrder {
                    job: job.clone(),
                    epoch: manifest.epoch,
                    last: last.epoch,
                });
            }
        }
        write_durably(&self.manifest_path(job, manifest.epoch), &encode(manifest))?;
        self.last.insert(job.clone(), manifest.clone());
        // Old checkpoints are removed every KEEP commits, so a commit costs one file write.
        let since = self.since_gc.entry(job.clone()).or_default();
        *since += 1;
        if *since >= KEEP {
            *since = 0;
            self.collect_garbage(job)?;
        }
        Ok(())
    }

    fn latest(&self, job: &str) -> Result<Option<Manifest>, StoreError> {
        let Some(&epoch) = self.epochs(job)?.last() else {
            return Ok(None);
        };
        let path = self.manifest_path(job, epoch);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let manifest = decode(&path, &bytes)?;
        if manifest.epoch != epoch || manifest.job != job {
            return Err(StoreError::Corrupt {
                path,
                reason: format!(
                    "it holds checkpoint {} of job `{}`",
                    manifest.epoch, manifest.job
                ),
            });
        }
        Ok(Some(manifest))
    }
}
