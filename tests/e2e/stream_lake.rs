//! Streaming into a Delta table through the real binary: every row exactly once while the run
//! is killed with SIGKILL again and again, checked with another implementation of Delta Lake
//! (Python's `deltalake`) as the reader, and with the table's commit files: each epoch of the
//! job is committed once, with its own files, under its transaction id.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::stream::{assert_exactly_once, line, pause, start};
use crate::stream_sources::write_csv_with_a_malformed_row;
use crate::support::*;

/// The job's transaction id in the table.
const APP: &str = "quiver-stream/orders";

/// The pipeline of the streaming tests (x → (x − 1) / 4, then a running count per key, which
/// is checkpointed state) over two tasks, writing the Delta table `lake/orders` partitioned by
/// key, with small micro-batches and frequent checkpoints so that kills land in every phase,
/// the Delta commit after a checkpoint included.
fn pipeline(dir: &Path) {
    let text = r#"
[source]
paths = ["in.jsonl"]
[partition]
by = ["key"]
count = 2
[[plugin]]
name = "scale"
params = { columns = ["x"], a = 1.0, b = 4.0 }
[[plugin]]
name = "running-count"
params = { key = "key", output = "n" }
[sink]
table = "lake/orders"
partition-by = ["key"]
[stream]
job = "orders"
batch-rows = 300
batch-ms = 20
checkpoint-ms = 60
poll-ms = 5
"#;
    std::fs::write(dir.join("p.toml"), text).unwrap();
}

/// Every row of the table as `deltalake` reads it: (seq, x, n).
fn table_rows(table: &Path) -> Vec<(u64, f64, i64)> {
    let v = read_with_deltalake(table, &["seq", "x", "n"]);
    let column = |c: &str| v["columns"][c].as_array().unwrap().clone();
    let (seq, x, n) = (column("seq"), column("x"), column("n"));
    (0..seq.len())
        .map(|i| {
            (
                seq[i].as_u64().unwrap(),
                x[i].as_f64().unwrap(),
                n[i].as_i64().unwrap(),
            )
        })
        .collect()
}

/// One commit of the table's log, as its commit file says.
struct LogCommit {
    version: u64,
    /// The job's transaction ids it records.
    epochs: Vec<i64>,
    parameters: serde_json::Map<String, Value>,
    /// Names (without directories) of the data files it adds.
    adds: Vec<String>,
    /// Rows of those files, from their statistics.
    rows: u64,
}

/// Every commit of the table, in version order, read from `_delta_log/*.json` directly.
fn read_log(table: &Path) -> Vec<LogCommit> {
    let mut files: Vec<_> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let mut c = LogCommit {
                version: path.file_stem().unwrap().to_str().unwrap().parse().unwrap(),
                epochs: Vec::new(),
                parameters: serde_json::Map::new(),
                adds: Vec::new(),
                rows: 0,
            };
            for l in std::fs::read_to_string(path).unwrap().lines() {
                let action: Value = serde_json::from_str(l).unwrap();
                if let Some(txn) = action.get("txn") {
                    assert_eq!(txn["appId"], APP, "version {}", c.version);
                    c.epochs.push(txn["version"].as_i64().unwrap());
                }
                if let Some(p) = action.pointer("/commitInfo/operationParameters") {
                    c.parameters = p.as_object().unwrap().clone();
                }
                if let Some(add) = action.get("add") {
                    let path = add["path"].as_str().unwrap();
                    c.adds.push(path.rsplit('/').next().unwrap().to_string());
                    let stats: Value =
                        serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
                    c.rows += stats["numRecords"].as_u64().unwrap();
                }
            }
            c
        })
        .collect()
}

/// Checks the log: each commit that adds files carries the job's transaction id once, with its
/// epoch in the operation parameters and in the name of every file it adds; epochs increase
/// from commit to commit, so none is committed twice; no file is added twice. Returns the
/// epochs committed.
fn assert_each_epoch_committed_once(log: &[LogCommit]) -> Vec<i64> {
    let mut epochs = Vec::new();
    let mut added = BTreeSet::new();
    for c in log {
        if c.adds.is_empty() {
            assert!(
                c.epochs.is_empty(),
                "version {} records an epoch without files",
                c.version
            );
            continue;
        }
        let [epoch] = c.epochs[..] else {
            panic!(
                "version {} adds files under transaction ids {:?}",
                c.version, c.epochs
            );
        };
        assert_eq!(
            c.parameters["quiver.job"], "orders",
            "version {}",
            c.version
        );
        assert_eq!(
            c.parameters["quiver.epoch"],
            epoch.to_string(),
            "version {}",
            c.version
        );
        for name in &c.adds {
            assert!(
                name.starts_with(&format!("part-orders-e{epoch:010}-")),
                "version {} (epoch {epoch}) adds {name}",
                c.version
            );
            assert!(added.insert(name.clone()), "{name} is added twice");
        }
        if let Some(&before) = epochs.last() {
            assert!(
                epoch > before,
                "epoch {epoch} is committed after epoch {before} (version {})",
                c.version
            );
        }
        epochs.push(epoch);
    }
    epochs
}

/// Names of the data files in the table's directory (its partition directories included).
fn data_files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            if !name.starts_with('_') {
                out.extend(data_files(&e.path()));
            }
        } else {
            out.insert(name);
        }
    }
    out
}

#[test]
fn a_stream_into_a_delta_table_killed_with_sigkill_commits_every_row_and_epoch_once() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("lake/orders");
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, line(0)).unwrap();
    pipeline(dir.path());
    const TOTAL: u64 = 30_000;
    // The writer appends 40 rows every 8 ms (5 000 rows/s) for about 6 s, sometimes
    // splitting a line across two writes.
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(input)
                .unwrap();
            let mut seq = 1;
            while seq < TOTAL {
                let chunk: String = (seq..(seq + 40).min(TOTAL)).map(line).collect();
                seq = (seq + 40).min(TOTAL);
                let cut = if seq % 3 == 0 {
                    chunk.len() / 2
                } else {
                    chunk.len()
                };
                f.write_all(&chunk.as_bytes()[..cut]).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(4));
                f.write_all(&chunk.as_bytes()[cut..]).unwrap();
                std::thread::sleep(Duration::from_millis(4));
            }
        })
    };
    // Killed at pseudo-random moments while rows arrive (a fixed seed, so a failure can be
    // replayed): in recovery, while rows flow, between a checkpoint's manifest and its Delta
    // commit, and after it.
    let mut state: u64 = 0x5851_f42d_4c95_7f2d;
    for _ in 0..12 {
        let mut child = start(dir.path(), &[]);
        std::thread::sleep(pause(&mut state, 80, 500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let before: u64 = read_log(&table).iter().map(|c| c.rows).sum();
    assert!(
        before > 0 && before < TOTAL,
        "the killed runs should have committed part of the input, not {before} rows"
    );
    writer.join().unwrap();

    let out = finish(start(dir.path(), &["--stop-at-end"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resumed after checkpoint"), "{err}");

    // Every row once, with its running count, as another Delta implementation reads it.
    assert_exactly_once(table_rows(&table), TOTAL);
    // Each epoch once, in order, with its own files; every data file left is a committed one.
    let log = read_log(&table);
    let epochs = assert_each_epoch_committed_once(&log);
    assert!(epochs.len() >= 2, "{epochs:?}");
    let committed: BTreeSet<String> = log.iter().flat_map(|c| c.adds.clone()).collect();
    assert_eq!(data_files(&table), committed, "uncommitted files are left");

    // Starting the job over would take its new epochs for committed ones: refused.
    let out = finish(start(dir.path(), &["--from-beginning"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("already holds epochs of job `orders`"),
        "{err}"
    );
    // With its checkpoints lost, the job would also count epochs from 1 again: it stops,
    // and deletes nothing.
    let checkpoints = dir.path().join("lake/orders-checkpoints");
    std::fs::rename(&checkpoints, dir.path().join("moved")).unwrap();
    let out = finish(start(dir.path(), &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("committed epoch {}", epochs.last().unwrap()))
            && err.contains("checkpoints end at epoch 0"),
        "{err}"
    );
    assert_eq!(data_files(&table), committed);
}

#[test]
fn a_stream_refuses_to_overwrite_a_table() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), line(0)).unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[source]\npaths = [\"in.jsonl\"]\n[sink]\ntable = \"lake/t\"\nmode = \"overwrite\"\n",
    )
    .unwrap();
    let out = finish(start(dir.path(), &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mode = \"overwrite\"") && err.contains("mode = \"append\""),
        "{err}"
    );
    assert!(!dir.path().join("lake/t/_delta_log").exists());
}

#[test]
fn a_stream_into_a_table_sends_a_malformed_record_to_dead_letters_beside_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[source]
paths = ["in.csv"]
[sink]
table = "lake/orders"
[stream]
job = "orders"
on-malformed = "dead-letter"
"#;
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    let good = write_csv_with_a_malformed_row(&dir.path().join("in.csv"), 1100);
    let out = finish(start(dir.path(), &["--stop-at-end"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("1 dead letters"), "{err}");

    // The table holds every good row once, as another implementation reads it.
    let table = dir.path().join("lake/orders");
    let mut seqs: Vec<u64> = read_with_deltalake(&table, &["seq"])["columns"]["seq"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, good);
    // The bad line is a dead letter in the table's directory, outside the table's data,
    // naming the file and line (the header is line 1, row 1100 is line 1102).
    let dead = files_below(&table.join("_dead-letter"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter: Value =
        serde_json::from_str(std::fs::read_to_string(&dead[0]).unwrap().trim()).unwrap();
    assert!(
        letter["_source"].as_str().unwrap().ends_with("in.csv:1102"),
        "{letter}"
    );
    assert_eq!(letter["_line"], "1100,k3,not-a-number");
    // The log names no dead-letter file.
    for commit in read_log(&table) {
        assert!(
            commit.adds.iter().all(|a| a.ends_with(".parquet")),
            "version {} adds {:?}",
            commit.version,
            commit.adds
        );
    }
}
