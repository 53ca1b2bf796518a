//! Fit → transform: the fitted-parameters file, and how passes over the data are grouped.
//!
//! A plugin that exports the `aggregate` interface and names columns in `fit-reads` must be
//! fitted before it transforms: map (`partial` on every batch, in parallel over partitions),
//! combine (`merge`), then `finish` into fitted parameters that every instance receives with
//! `set-fitted`. A plugin is fitted on the data as it arrives at its place in the chain, after
//! the plugins before it, so fitting is done in passes over the input: one pass fits a group of
//! consecutive plugins that do not read each other's columns (see [`group_ends_before`]); a
//! chain whose fitted plugins read different columns is fitted in one pass.
//!
//! `quiver fit` saves the result as JSON ([`FittedFile`]): per fitted plugin its place in the
//! chain, name, version, SHA-256 and parameters (checked when the file is applied, so a fit is
//! never applied to another plugin or configuration) and the fitted parameters themselves.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::abi::Param;

/// The version of the fitted-parameters file format.
pub const FORMAT: u32 = 1;

/// A fitted-parameters file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The file cannot be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The file is not a valid fitted-parameters file.
    #[error("{path}: not a Quiver fitted-parameters file: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why (with line and column for JSON errors).
        message: String,
    },
    /// The file was made for another chain, plugin build or configuration.
    #[error("{path}: {message}; run `quiver fit` again for this pipeline")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        message: String,
    },
}

/// Fitted parameters of every fitted plugin of a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedFile {
    /// Always [`FORMAT`].
    pub format: u32,
    /// One entry per fitted plugin, in chain order.
    pub plugins: Vec<FittedPlugin>,
}

/// One fitted plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedPlugin {
    /// Place in the chain, from 0.
    pub position: usize,
    /// Name from `describe`.
    pub name: String,
    /// Version from `describe`.
    pub version: String,
    /// SHA-256 of the component.
    pub sha256: String,
    /// The parameters it was fitted with.
    pub params: serde_json::Value,
    /// What `finish` returned.
    pub fitted: serde_json::Value,
}

/// Parameters as a JSON object, for the file.
pub fn params_json(params: &[Param]) -> serde_json::Value {
    serde_json::Value::Object(
        params
            .iter()
            .map(|p| {
                let v = serde_json::to_value(&p.value).unwrap_or(serde_json::Value::Null);
                (p.name.clone(), v)
            })
            .collect(),
    )
}

/// What identifies one plugin of the running chain, to check a file against.
#[derive(Debug, Clone)]
pub struct ChainEntry<'a> {
    /// Name from `describe`.
    pub name: &'a str,
    /// Version from `describe`.
    pub version: &'a str,
    /// SHA-256 of the component.
    pub sha256: &'a str,
    /// Parameters.
    pub params: &'a [Param],
}

impl FittedFile {
    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<FittedFile, FitError> {
        let text = std::fs::read_to_string(path).map_err(|e| FitError::Io {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        let file: FittedFile = serde_json::from_str(&text).map_err(|e| FitError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if file.format != FORMAT {
            return Err(FitError::Corrupt {
                path: path.to_path_buf(),
                message: format!(
                    "format {} is not supported (this Quiver reads format {FORMAT})",
                    file.format
                ),
            });
        }
        Ok(file)
    }

    /// Writes the file atomically (a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<(), FitError> {
        let io = |e: std::io::Error| FitError::Io {
            path: path.to_path_buf(),
            message: format!("cannot write: {e}"),
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        serde_json::to_writer_pretty(&mut tmp, self).map_err(|e| io(e.into()))?;
        std::io::Write::write_all(&mut tmp, b"\n").map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The entry for chain position `position`, checked against the plugin running there.
    pub fn entry_for(
        &self,
        path: &Path,
        position: usize,
        running: &ChainEntry<'_>,
    ) -> Result<&FittedPlugin, FitError> {
        let mismatch = |message: String| FitError::Mismatch {
            path: path.to_path_buf(),
            message,
        };
        let entry = self
            .plugins
            .iter()
            .find(|p| p.position == position)
            .ok_or_else(|| {
                mismatch(format!(
                    "it has no fitted parameters for plugin #{} ({})",
                    position + 1,
                    running.name
                ))
            })?;
        let here = format!(
            "plugin #{} is {} {}",
            position + 1,
            running.name,
            running.version
        );
        if entry.name != running.name || entry.version != running.version {
            return Err(mismatch(format!(
                "it was fitted with {} {} but {here}",
                entry.name, entry.version
            )));
        }
        if entry.sha256 != running.sha256 {
            return Err(mismatch(format!(
                "it was fitted with a {} whose content hash is {} but {here} with hash {}",
                entry.name, entry.sha256, running.sha256
            )));
        }
        if entry.params != params_json(running.params) {
            return Err(mismatch(format!(
                "{} was fitted with parameters {} but runs with {}",
                entry.name,
                entry.params,
                params_json(running.params)
            )));
        }
        Ok(entry)
    }

    /// Positions the file has entries for that are not fitted plugins of the chain.
    pub fn check_no_extra(
        &self,
        path: &Path,
        fitted_positions: &BTreeSet<usize>,
    ) -> Result<(), FitError> {
        match self.plugins.iter().find(|p| !fitted_positions.contains(&p.position)) {
            Some(p) => Err(FitError::Mismatch {
                path: path.to_path_buf(),
                message: format!(
                    "it has fitted parameters for plugin #{} ({}), which is not fitted in this pipeline",
                    p.position + 1,
                    p.name
                ),
            }),
            None => Ok(()),
        }
    }
}

/// Whether a plugin reading `reads` must wait for another pass because a plugin already in the
/// current group (reading `group_reads`) may change those columns. Aggregates are assumed to
/// write only the columns they read or new ones (documented in the contract), so sharing a
/// column is what orders them.
pub fn group_ends_before(group_reads: &BTreeSet<String>, reads: &[String]) -> bool {
    reads.iter().any(|r| group_reads.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ParamValue;

    fn entry() -> (Vec<Param>, FittedFile) {
        let params = vec![Param {
            name: "columns".into(),
            value: ParamValue::TextList(vec!["x".into()]),
        }];
        let file = FittedFile {
            format: FORMAT,
            plugins: vec![FittedPlugin {
                position: 1,
                name: "standard-scaler".into(),
                version: "0.1.0".into(),
                sha256: "abc".into(),
                params: params_json(&params),
                fitted: serde_json::json!({"mean": [1.0]}),
            }],
        };
        (params, file)
    }

    #[test]
    fn round_trips_and_checks_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fitted.json");
        let (params, file) = entry();
        file.write(&path).unwrap();
        let back = FittedFile::read(&path).unwrap();
        assert_eq!(back, file);
        let running = ChainEntry {
            name: "standard-scaler",
            version: "0.1.0",
            sha256: "abc",
            params: &params,
        };
        assert!(back.entry_for(&path, 1, &running).is_ok());
        let e = back.entry_for(&path, 0, &running).unwrap_err().to_string();
        assert!(e.contains("no fitted parameters for plugin #1"), "{e}");
        let other = ChainEntry {
            version: "0.2.0",
            ..running.clone()
        };
        let e = back.entry_for(&path, 1, &other).unwrap_err().to_string();
        assert!(
            e.contains("fitted with standard-scaler 0.1.0 but plugin #2 is standard-scaler 0.2.0"),
            "{e}"
        );
        let other = ChainEntry {
            sha256: "def",
            ..running.clone()
        };
        assert!(back
            .entry_for(&path, 1, &other)
            .unwrap_err()
            .to_string()
            .contains("content hash is abc"));
        let other_params = vec![];
        let other = ChainEntry {
            params: &other_params,
            ..running
        };
        assert!(back
            .entry_for(&path, 1, &other)
            .unwrap_err()
            .to_string()
            .contains("was fitted with parameters"));
        let fitted: BTreeSet<usize> = [2].into();
        assert!(back.check_no_extra(&path, &fitted).is_err());
    }

    #[test]
    fn corrupt_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fitted.json");
        std::fs::write(&path, "{\"format\": 1, \"plugins\": [ {\"position\": 0,").unwrap();
        let e = FittedFile::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("not a Quiver fitted-parameters file") && e.contains("line 1"),
            "{e}"
        );
        std::fs::write(&path, "{\"format\": 9, \"plugins\": []}").unwrap();
        assert!(FittedFile::read(&path)
            .unwrap_err()
            .to_string()
            .contains("format 9"));
    }

    #[test]
    fn groups_end_at_shared_columns() {
        let group: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(group_ends_before(&group, &["b".into()]));
        assert!(!group_ends_before(&group, &["c".into()]));
    }
}
