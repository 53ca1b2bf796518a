//! The actions of single commits, read from the log's commit files: a table's history (which
//! run made which version) and the files each commit added or removed, with their
//! `dataChange` flag (which tells a compaction from new rows). A commit file is one JSON
//! action per line, as the Delta protocol defines it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Deserialize;

use super::{LakeError, Table, LOG_DIR};

/// A data file a commit added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The path, as the log has it (relative to the table, URL-encoded).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Rows, when its statistics say.
    pub rows: Option<u64>,
    /// Whether the file holds new rows (false for a compaction's rewritten files).
    pub data_change: bool,
    /// Partition values by column (`None`: null).
    pub partition_values: HashMap<String, Option<String>>,
}

/// A data file a commit removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The path, as the log has it.
    pub path: String,
    /// Bytes, when recorded.
    pub size: Option<u64>,
    /// Whether rows went away with it (false for a compaction).
    pub data_change: bool,
}

/// One commit of a table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CommitEntry {
    /// The version it made.
    pub version: u64,
    /// When, in milliseconds since the epoch, as the writer recorded it.
    pub timestamp: Option<i64>,
    /// What it was (`WRITE`, `CREATE TABLE`, `OPTIMIZE`, …), as the writer recorded it.
    pub operation: Option<String>,
    /// The operation's parameters; Quiver's runs record their pipeline, stage and run here.
    pub parameters: BTreeMap<String, String>,
    /// The writing engine.
    pub engine: Option<String>,
    /// Transaction ids set by this commit: (application id, version).
    pub transactions: Vec<(String, i64)>,
    /// Files added.
    pub adds: Vec<Added>,
    /// Files removed.
    pub removes: Vec<Removed>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    add: Option<AddLine>,
    remove: Option<RemoveLine>,
    txn: Option<TxnLine>,
    commit_info: Option<CommitInfoLine>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddLine {
    path: String,
    size: i64,
    #[serde(default)]
    data_change: bool,
    #[serde(default)]
    partition_values: HashMap<String, Option<String>>,
    stats: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoveLine {
    path: String,
    size: Option<i64>,
    #[serde(default)]
    data_change: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TxnLine {
    app_id: String,
    version: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommitInfoLine {
    timestamp: Option<i64>,
    operation: Option<String>,
    #[serde(default)]
    operation_parameters: Option<HashMap<String, serde_json::Value>>,
    engine_info: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatsLine {
    num_records: Option<u64>,
}

/// The commit file of `version`.
pub fn commit_path(table: &Table, version: u64) -> PathBuf {
    table
        .dir()
        .join(LOG_DIR)
        .join(format!("{version:020}.json"))
}

/// The actions of the commit that made `version`.
pub fn read_commit(table: &Table, version: u64) -> Result<CommitEntry, LakeError> {
    let path = commit_path(table, version);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| table.io(format!("reading the commit {}", path.display()), e))?;
    parse_commit(version, &text).map_err(|message| LakeError::Delta {
        table: table.dir().to_path_buf(),
        message: format!("commit {}: {message}", path.display()),
    })
}

/// Parses a commit file's text.
pub fn parse_commit(version: u64, text: &str) -> Result<CommitEntry, String> {
    let mut entry = CommitEntry {
        version,
        ..CommitEntry::default()
    };
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if let Some(add) = line.add {
            let rows = add
                .stats
                .as_deref()
                .and_then(|s| serde_json::from_str::<StatsLine>(s).ok())
                .and_then(|s| s.num_records);
            entry.adds.push(Added {
                path: add.path,
                size: add.size.max(0) as u64,
                rows,
                data_change: add.data_change,
                partition_values: add.partition_values,
            });
        }
        if let Some(remove) = line.remove {
            entry.removes.push(Removed {
                path: remove.path,
                size: remove.size.map(|s| s.max(0) as u64),
                data_change: remove.data_change,
            });
        }
        if let Some(txn) = line.txn {
            entry.transactions.push((txn.app_id, txn.version));
        }
        if let Some(info) = line.commit_info {
            entry.timestamp = info.timestamp;
            entry.operation = info.operation;
            entry.engine = info.engine_info;
            entry.parameters = info
                .operation_parameters
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect();
        }
    }
    Ok(entry)
}

/// The table's commits, newest first, at most `limit` of them. Versions whose commit files
/// the log no longer holds (cleaned up after a checkpoint) end the list.
pub fn history(table: &Table, limit: usize) -> Result<Vec<CommitEntry>, LakeError> {
    let latest = table.version()?;
    let mut out = Vec::new();
    for version in (0..=latest).rev().take(limit) {
        if !commit_path(table, version).exists() {
            break;
        }
        out.push(read_commit(table, version)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_file_gives_its_files_transactions_and_run() {
        let text = r#"{"commitInfo":{"timestamp":1700000000000,"operation":"WRITE","operationParameters":{"mode":"Append","quiver.run":"3"},"engineInfo":"quiver/0.1.0"}}
{"txn":{"appId":"quiver:p:land","version":3,"lastUpdated":1}}
{"add":{"path":"day=d1/part-1.parquet","partitionValues":{"day":"d1"},"size":100,"modificationTime":1,"dataChange":true,"stats":"{\"numRecords\":7}"}}
{"add":{"path":"part-2.parquet","partitionValues":{"day":null},"size":5,"modificationTime":1,"dataChange":false}}
{"remove":{"path":"part-0.parquet","dataChange":false,"size":9}}
"#;
        let c = parse_commit(4, text).unwrap();
        assert_eq!(c.version, 4);
        assert_eq!(c.operation.as_deref(), Some("WRITE"));
        assert_eq!(c.parameters["quiver.run"], "3");
        assert_eq!(c.transactions, vec![("quiver:p:land".to_string(), 3)]);
        assert_eq!(c.adds.len(), 2);
        assert_eq!(c.adds[0].rows, Some(7));
        assert!(c.adds[0].data_change && !c.adds[1].data_change);
        assert_eq!(c.adds[1].partition_values["day"], None);
        assert_eq!(c.removes[0].size, Some(9));
        assert!(parse_commit(0, "{not json").unwrap_err().contains("line 1"));
    }
}
