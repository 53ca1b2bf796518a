//! `quiver table history|compact|vacuum` on Delta tables made through the library, checked
//! against a reading of the table independent of the runtime (the log's JSON replayed here,
//! the data files read with Parquet, partition values from the log), and against Python's
//! `deltalake` package.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use quiver::lake::delta::{Commit, WriteOptions};
use quiver::lake::Table;
use serde_json::Value;

use crate::support::{python_with_deltalake, quiver, read_parquet, run, run_err};

/// One row as every reader here sees it: id, day (the partition column), score.
type Row = (i64, String, f64);

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("day", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let days: Vec<String> = ids
        .clone()
        .map(|i| format!("2024-05-0{}", i % 3 + 1))
        .collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from(days)),
            Arc::new(Float64Array::from_iter_values(ids.map(|i| i as f64 * 0.5))),
        ],
    )
    .unwrap()
}

/// A table of six appends of 20 rows over three days (18 small files): the first three made
/// by runs of a pipeline, the others by epochs of a streaming job.
fn make_table(dir: &Path) {
    let table = Table::at(dir).unwrap();
    for n in 0..6i64 {
        let rows = batch(n * 20..n * 20 + 20);
        let parameters = if n < 3 {
            vec![
                ("quiver.pipeline".into(), "land.toml".into()),
                ("quiver.stage".into(), "land".into()),
                ("quiver.run".into(), (n + 1).to_string()),
            ]
        } else {
            vec![
                ("quiver.job".into(), "clicks".into()),
                ("quiver.epoch".into(), n.to_string()),
            ]
        };
        let mut w = table
            .writer(
                &rows.schema(),
                WriteOptions {
                    partition_by: vec!["day".into()],
                    ..WriteOptions::default()
                },
            )
            .unwrap();
        w.write(&rows).unwrap();
        let transaction = (n >= 3).then(|| ("clicks".to_string(), n));
        w.commit(Commit {
            transaction,
            parameters,
        })
        .unwrap();
    }
}

/// The actions of every commit file, in version order.
fn commits(dir: &Path) -> Vec<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .collect()
}

/// The latest version's data files (path relative to the table → partition values), by
/// replaying the log's adds and removes.
fn live_files(dir: &Path) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let mut live = BTreeMap::new();
    for actions in commits(dir) {
        for a in actions {
            if let Some(add) = a.get("add") {
                let values = serde_json::from_value(add["partitionValues"].clone()).unwrap();
                live.insert(add["path"].as_str().unwrap().to_string(), values);
            }
            if let Some(remove) = a.get("remove") {
                live.remove(remove["path"].as_str().unwrap());
            }
        }
    }
    live
}

/// A path from the log (relative, percent-encoded) as a file below `dir`.
fn local(dir: &Path, path: &str) -> PathBuf {
    let mut decoded = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            decoded.push(u8::from_str_radix(&path[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    dir.join(String::from_utf8(decoded).unwrap())
}

/// Every row of the latest version, sorted.
fn table_rows(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for (path, values) in live_files(dir) {
        let day = values["day"].clone().unwrap();
        for b in read_parquet(&local(dir, &path)) {
            assert!(
                b.column_by_name("day").is_none(),
                "{path} holds the partition column"
            );
            let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
            let scores = b
                .column_by_name("score")
                .unwrap()
                .as_primitive::<Float64Type>();
            for i in 0..b.num_rows() {
                rows.push((ids.value(i), day.clone(), scores.value(i)));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

fn expected_rows() -> Vec<Row> {
    (0..120)
        .map(|i| (i, format!("2024-05-0{}", i % 3 + 1), i as f64 * 0.5))
        .collect()
}

/// Runs `quiver table ARGS…`; returns stdout.
fn table_ok(args: &[&str]) -> String {
    let mut c = quiver();
    c.arg("table").args(args);
    let (ok, out, err) = run(c);
    assert!(
        ok,
        "quiver table {args:?} failed:\nstdout: {out}\nstderr: {err}"
    );
    out
}

fn table_err(args: &[&str]) -> String {
    let mut c = quiver();
    c.arg("table").args(args);
    run_err(c)
}

/// What Python's `deltalake` reads: version, file count, rows sorted by id.
fn deltalake_reads(dir: &Path) -> (u64, usize, Vec<Row>) {
    let script = r#"
import json, os, sys
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
t = dt.to_pyarrow_table()
rows = sorted(zip(t.column("id").to_pylist(), t.column("day").to_pylist(), t.column("score").to_pylist()))
print(json.dumps({"version": dt.version(), "files": len(dt.file_uris()), "rows": rows}), flush=True)
# Skips the teardown, where Arrow's thread pools can abort the process.
os._exit(0)
"#;
    let out = Command::new(python_with_deltalake())
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deltalake failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_str().unwrap().to_string(),
                r[2].as_f64().unwrap(),
            )
        })
        .collect();
    (
        v["version"].as_u64().unwrap(),
        v["files"].as_u64().unwrap() as usize,
        rows,
    )
}

#[test]
fn table_compact_rewrites_small_files_as_one_commit_that_readers_see_as_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("events");
    make_table(&dir);
    let d = dir.to_str().unwrap();
    assert_eq!(live_files(&dir).len(), 18);
    assert_eq!(table_rows(&dir), expected_rows());

    let out = table_ok(&["compact", d]);
    assert!(out.contains("in version 6: 18 files → 3"), "{out}");
    let live = live_files(&dir);
    assert_eq!(live.len(), 3);
    let days: BTreeSet<_> = live.values().map(|v| v["day"].clone().unwrap()).collect();
    assert_eq!(days.len(), 3, "one file a day: {live:?}");
    assert_eq!(table_rows(&dir), expected_rows());
    // One commit, every file action of it marked as no change of data.
    let log = commits(&dir);
    assert_eq!(log.len(), 7);
    let files: Vec<&Value> = log[6]
        .iter()
        .filter_map(|a| a.get("add").or_else(|| a.get("remove")))
        .collect();
    assert_eq!(files.len(), 21);
    assert!(files.iter().all(|f| f["dataChange"] == false), "{files:?}");

    let out = table_ok(&["compact", d]);
    assert!(out.contains("nothing to compact"), "{out}");
    assert_eq!(commits(&dir).len(), 7);

    // The history, as JSON: the compaction, then the runs and epochs that wrote.
    let json: Value = serde_json::from_str(&table_ok(&["history", d, "--json"])).unwrap();
    let h = json.as_array().unwrap();
    assert_eq!(h.len(), 7);
    assert_eq!(h[0]["version"], 6);
    assert_eq!(h[0]["operation"], "OPTIMIZE");
    assert_eq!(
        (h[0]["files_added"].clone(), h[0]["files_removed"].clone()),
        (3.into(), 18.into())
    );
    assert_eq!(h[0]["rows_added"], 0);
    assert_eq!(
        (h[1]["job"].clone(), h[1]["epoch"].clone()),
        ("clicks".into(), "5".into())
    );
    assert_eq!(h[1]["transactions"][0]["app_id"], "clicks");
    assert_eq!(h[6]["pipeline"], "land.toml");
    assert_eq!(
        (h[6]["stage"].clone(), h[6]["run"].clone()),
        ("land".into(), "1".into())
    );
    let rows: u64 = h.iter().map(|e| e["rows_added"].as_u64().unwrap()).sum();
    assert_eq!(rows, 120);
    assert!(h[6]["time"].as_str().unwrap().ends_with('Z'));

    // As a table, newest first, at most --limit commits.
    let text = table_ok(&["history", d, "--limit", "7"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(
        lines[0].starts_with("VERSION") && lines[0].contains("ROWS ADDED"),
        "{text}"
    );
    assert!(
        lines[1].starts_with('6') && lines[1].contains("OPTIMIZE") && lines[1].contains("+3 -18"),
        "{text}"
    );
    assert!(lines[2].contains("job clicks epoch 5"), "{text}");
    assert!(
        lines[7].contains("land.toml stage land run 1") && lines[7].contains("+3 -0"),
        "{text}"
    );
    assert_eq!(table_ok(&["history", d, "--limit", "2"]).lines().count(), 3);

    // Another implementation reads the compacted table the same.
    let (version, files, rows) = deltalake_reads(&dir);
    assert_eq!((version, files), (6, 3));
    assert_eq!(rows, expected_rows());
}

fn touch(path: &Path, at: SystemTime) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"orphan").unwrap();
    std::fs::File::open(path).unwrap().set_modified(at).unwrap();
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        n += if p.is_dir() { count_files(&p) } else { 1 };
    }
    n
}

#[test]
fn table_vacuum_deletes_unused_files_only_past_the_retention_and_never_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("events");
    make_table(&dir);
    let d = dir.to_str().unwrap();
    let compacted_away: Vec<PathBuf> = live_files(&dir).keys().map(|p| local(&dir, p)).collect();
    table_ok(&["compact", d]);
    let now = SystemTime::now();
    let old_orphan = dir.join("day=2024-05-01/part-killed-writer.snappy.parquet");
    touch(&old_orphan, now - Duration::from_secs(10 * 86_400));
    let new_orphan = dir.join("day=2024-05-02/part-running-writer.snappy.parquet");
    touch(&new_orphan, now);
    let hidden = dir.join("_scratch/old.parquet");
    touch(&hidden, now - Duration::from_secs(30 * 86_400));
    let log_files = count_files(&dir.join("_delta_log"));

    let e = table_err(&["vacuum", d, "--retention", "10m"]);
    assert!(e.contains("--force") && e.contains("retention"), "{e}");

    // Default retention (7 days): only the killed writer's old file goes.
    let out = table_ok(&["vacuum", d]);
    assert!(
        out.contains("deleted day=2024-05-01/part-killed-writer.snappy.parquet"),
        "{out}"
    );
    assert!(out.contains("deleted 1 file(s)"), "{out}");
    assert!(!old_orphan.exists() && new_orphan.exists());
    assert!(compacted_away.iter().all(|p| p.exists()));

    // A dry run with no retention lists the compacted-away files and the new orphan.
    let before = count_files(&dir);
    let out = table_ok(&["vacuum", d, "--retention", "0s", "--force", "--dry-run"]);
    assert!(out.contains("would delete 19 file(s)"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("would delete "))
            .count(),
        19,
        "{out}"
    );
    assert_eq!(count_files(&dir), before);

    let out = table_ok(&["vacuum", d, "--retention", "0s", "--force"]);
    assert!(out.contains("deleted 19 file(s)"), "{out}");
    assert!(compacted_away.iter().all(|p| !p.exists()) && !new_orphan.exists());
    assert!(hidden.exists());
    assert_eq!(count_files(&dir.join("_delta_log")), log_files);
    assert_eq!(count_files(&dir), 3 + log_files + 1);
    assert_eq!(table_rows(&dir), expected_rows());
    let (_, files, rows) = deltalake_reads(&dir);
    assert_eq!((files, rows), (3, expected_rows()));
}

#[test]
fn table_commands_refuse_a_directory_that_is_not_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    for command in ["history", "compact", "vacuum"] {
        let e = table_err(&[command, d]);
        assert!(e.contains("is not a Delta table"), "{command}: {e}");
    }
    let e = table_err(&["compact", d, "--target-size", "12 parsecs"]);
    assert!(e.contains("unknown size unit"), "{e}");
}
