//! The flight recorder: when a plugin fails on a batch, the host saves what is needed to run
//! exactly that call again, and `quiver replay DIR` does so.
//!
//! A recording is a directory `<position>-<plugin>-p<partition>-b<batch>/` under the run's
//! replay directory holding `input.arrow` (the batch as it reached the plugin, Arrow IPC file)
//! and `call.json` (the plugin's path, SHA-256, name and version, its parameters, limits and
//! fitted parameters, and the error). At most [`MAX_RECORDINGS`] are kept per run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::abi::{Param, ParamValue};
use crate::capability::Grants;
use crate::fit;
use crate::plugin::{Host, Instance, Metrics, PluginError};
use crate::sandbox::{EngineOptions, LimitOutOfRange, Limits};
use crate::untrusted;

/// Recordings kept per run (failures past this are not recorded).
pub const MAX_RECORDINGS: usize = 16;

/// A recording cannot be made or replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading or writing the recording failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The plugin file changed since the recording.
    #[error(
        "{path}: the plugin's SHA-256 is now {actual}, but the recording was made with {expected}"
    )]
    Changed {
        /// The plugin file.
        path: PathBuf,
        /// Recorded hash.
        expected: String,
        /// Current hash.
        actual: String,
    },
    /// The recording asks for limits the host cannot honour.
    #[error("{path}: {source}")]
    Limits {
        /// The recording's `call.json`.
        path: PathBuf,
        /// Which limit.
        source: LimitOutOfRange,
    },
    /// Loading or setting up the plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// What `call.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    /// The plugin's component file.
    pub plugin_path: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Name from `describe`.
    pub name: String,
    /// Version from `describe`.
    pub version: String,
    /// Parameters, as in the fitted-parameters file.
    pub params: serde_json::Value,
    /// Limits it ran under.
    pub limits: Limits,
    /// What it was granted.
    #[serde(default)]
    pub grants: Grants,
    /// Fitted parameters, if any.
    pub fitted: Option<String>,
    /// The error of the recorded call.
    pub error: String,
}

/// Saves failing calls of one run.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    made: AtomicUsize,
    /// Recordings of an earlier run are removed before this run's first one.
    cleared: std::sync::Once,
}

impl Recorder {
    /// A recorder writing under `dir` (emptied and created on the first recording).
    pub fn new(dir: PathBuf) -> Self {
        Recorder {
            dir,
            made: AtomicUsize::new(0),
            cleared: std::sync::Once::new(),
        }
    }

    /// Records a failed `transform` of `instance` (at chain `position`) on `batch`. Recording
    /// must never hide the plugin's error, so problems are logged, not returned.
    pub fn record(
        &self,
        position: usize,
        instance: &Instance,
        batch: &RecordBatch,
        error: &PluginError,
        (partition, seq): (usize, u64),
    ) {
        if self.made.fetch_add(1, Ordering::Relaxed) >= MAX_RECORDINGS {
            return;
        }
        self.cleared.call_once(|| {
            // Only a directory of recordings is removed, never anything else at that path.
            let is_recordings = std::fs::read_dir(&self.dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .all(|e| e.path().join("call.json").is_file())
            });
            if is_recordings {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        });
        let plugin = instance.plugin();
        // The plugin's name is its own text: reduced to one safe component, so the recording
        // stays inside the replay directory whatever the name says.
        let dir = self.dir.join(format!(
            "{position:02}-{}-p{partition}-b{seq}",
            untrusted::file_name(&plugin.name)
        ));
        let call = Call {
            plugin_path: std::path::absolute(&plugin.path).unwrap_or_else(|_| plugin.path.clone()),
            sha256: plugin.sha256.clone(),
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            params: fit::params_json(instance.params()),
            limits: *instance.limits(),
            grants: instance.grants().clone(),
            fitted: instance.fitted().map(str::to_owned),
            error: error.to_string(),
        };
        match write_recording(&dir, &call, batch) {
            Ok(()) => {
                tracing::warn!(plugin = %plugin.name, "recorded the failing call in {}; rerun it with `quiver replay {}`", dir.display(), dir.display())
            }
            Err(e) => {
                tracing::warn!(plugin = %plugin.name, "could not record the failing call: {e}")
            }
        }
    }
}

fn write_recording(dir: &Path, call: &Call, batch: &RecordBatch) -> Result<(), ReplayError> {
    let io = |path: &Path, e: &dyn std::fmt::Display| ReplayError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    // The replay directory is the pipeline's; the recording's own directory and files are
    // created new (never through an existing file or link).
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, &e))?;
    }
    std::fs::create_dir(dir).map_err(|e| io(dir, &e))?;
    let create = |path: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io(path, &e))
    };
    let input = dir.join("input.arrow");
    let file = create(&input)?;
    let mut w = arrow::ipc::writer::FileWriter::try_new(file, &batch.schema())
        .map_err(|e| io(&input, &e))?;
    w.write(batch).map_err(|e| io(&input, &e))?;
    w.finish().map_err(|e| io(&input, &e))?;
    let json = dir.join("call.json");
    let text = serde_json::to_string_pretty(call).map_err(|e| io(&json, &e))?;
    std::io::Write::write_all(&mut create(&json)?, text.as_bytes()).map_err(|e| io(&json, &e))?;
    Ok(())
}

/// What a replayed call did.
#[derive(Debug)]
pub struct Replayed {
    /// The recording.
    pub call: Call,
    /// Rows of the recorded input.
    pub rows_in: usize,
    /// The call's result: rows out, or the error.
    pub result: Result<usize, PluginError>,
    /// Wall time of the call.
    pub time: Duration,
    /// Figures of the instance (peak memory, bytes crossing the boundary).
    pub metrics: Metrics,
}

/// Runs a recorded call again, on a host of its own (compiled components cached in
/// `cache_dir`) that meters fuel, so the figures include the fuel the call burnt.
pub fn replay(dir: &Path, cache_dir: Option<PathBuf>) -> Result<Replayed, ReplayError> {
    let io = |path: &Path, e: &dyn std::fmt::Display| ReplayError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let json = dir.join("call.json");
    let text = std::fs::read_to_string(&json).map_err(|e| io(&json, &e))?;
    let call: Call = serde_json::from_str(&text).map_err(|e| io(&json, &e))?;
    call.limits.check().map_err(|source| ReplayError::Limits {
        path: json.clone(),
        source,
    })?;
    let input = dir.join("input.arrow");
    let file = std::fs::File::open(&input).map_err(|e| io(&input, &e))?;
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).map_err(|e| io(&input, &e))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io(&input, &e))?;
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches)
        .map_err(|e| io(&input, &e))?;
    let host = Host::new(
        EngineOptions {
            fuel: true,
            stack_kib: call.limits.stack_kib,
            ..EngineOptions::new(4)
        },
        cache_dir,
    )?;
    let plugin = host.load(&call.plugin_path)?;
    if plugin.sha256 != call.sha256 {
        return Err(ReplayError::Changed {
            path: call.plugin_path.clone(),
            expected: call.sha256.clone(),
            actual: plugin.sha256.clone(),
        });
    }
    let params: Vec<Param> = match &call.params {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let v = toml::Value::try_from(v).map_err(|e| io(&json, &e))?;
                Ok(Param {
                    name: k.clone(),
                    value: ParamValue::from_toml(k, &v).map_err(|e| io(&json, &e))?,
                })
            })
            .collect::<Result<_, ReplayError>>()?,
        _ => Vec::new(),
    };
    let mut instance = Instance::new(
        plugin,
        params,
        call.limits,
        std::sync::Arc::new(call.grants.clone()),
    )?;
    if let Some(fitted) = &call.fitted {
        instance.set_fitted(fitted.clone())?;
    }
    let started = Instant::now();
    let result = instance
        .transform(&batch)
        .map(|out| out.iter().map(RecordBatch::num_rows).sum());
    let time = started.elapsed();
    Ok(Replayed {
        rows_in: batch.num_rows(),
        metrics: instance.metrics(),
        call,
        result,
        time,
    })
}
