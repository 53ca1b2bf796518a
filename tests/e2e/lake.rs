//! Lake tables: pipelines that write and read Delta tables, checked with another
//! implementation of Delta Lake (the `deltalake` package from PyPI) as the reader and writer on
//! the other side; incremental runs, full refreshes, stages, and runs killed at random moments.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// `id,day,amount` rows for ids in `ids`: the day and amount follow from the id.
fn write_orders(path: &Path, ids: std::ops::Range<i64>) {
    let mut text = String::from("id,day,amount\n");
    for id in ids {
        let (day, amount) = order(id);
        text.push_str(&format!("{id},{day},{amount}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn order(id: i64) -> (String, f64) {
    (
        format!("2026-01-{:02}", id % 3 + 1),
        (id * 7 % 100) as f64 / 2.0,
    )
}

/// What the other implementation reads from a table.
struct Read {
    version: Option<u64>,
    partition_columns: Vec<String>,
    schema: Vec<(String, String)>,
    /// (id, day, amount) of every row, sorted (duplicates kept).
    rows: Vec<(i64, String, f64)>,
}

fn read_table(dir: &Path) -> Read {
    let v = read_with_deltalake(dir, &[]);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let column = |name: &str| v["columns"][name].as_array().cloned().unwrap_or_default();
    let (id, day, amount) = (column("id"), column("day"), column("amount"));
    let mut rows: Vec<(i64, String, f64)> = (0..id.len())
        .map(|i| {
            (
                id[i].as_i64().unwrap(),
                day[i].as_str().unwrap().to_string(),
                amount[i].as_f64().unwrap(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Read {
        version: v["version"].as_u64(),
        partition_columns: strings(&v["partition_columns"]),
        schema: v["schema"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p[0].as_str().unwrap().to_string(),
                            p[1].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        rows,
    }
}

/// The rows of ids `ids`, as a table holds them once each, sorted.
fn rows_of(ids: impl IntoIterator<Item = i64>) -> Vec<(i64, String, f64)> {
    let mut rows: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let (day, amount) = order(id);
            (id, day, amount)
        })
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

fn run_pipeline(file: &Path, extra: &[&str]) -> String {
    let mut c = quiver();
    c.arg("run").arg(file).args(extra);
    run_ok(c)
}

fn fail_pipeline(file: &Path, extra: &[&str]) -> String {
    let mut c = quiver();
    c.arg("run").arg(file).args(extra);
    run_err(c)
}

#[test]
fn a_table_quiver_writes_reads_back_in_deltalake_and_quiver_reads_what_deltalake_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("in")).unwrap();
    write_orders(&d.join("in/a.csv"), 0..500);
    write_orders(&d.join("in/b.csv"), 500..800);
    let pipeline = d.join("load.toml");
    std::fs::write(
        &pipeline,
        r#"
        [source]
        paths = ["in/a.csv"]
        [sink]
        table = "lake/orders"
        partition-by = ["day"]
        "#,
    )
    .unwrap();
    let report = run_pipeline(&pipeline, &[]);
    assert!(
        report.contains("committed table version 0 (run 1)"),
        "{report}"
    );
    run_pipeline(
        &pipeline,
        &["--input", d.join("in/b.csv").to_str().unwrap()],
    );
    let read = read_table(&d.join("lake/orders"));
    assert_eq!(read.version, Some(1));
    assert_eq!(read.partition_columns, vec!["day".to_string()]);
    let names: Vec<&str> = read.schema.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["id", "day", "amount"]);
    assert_eq!(read.schema[0].1, "int64");
    assert_eq!(read.schema[2].1, "double");
    assert_eq!(read.rows, rows_of(0..800));
    // The layout is the partitioned one: a directory per day.
    for day in ["2026-01-01", "2026-01-02", "2026-01-03"] {
        assert!(d.join("lake/orders").join(format!("day={day}")).is_dir());
    }

    // The other way: deltalake writes two versions, Quiver reads the latest and an older one.
    let written = d.join("theirs");
    let script = r#"
import sys
import pyarrow as pa
from deltalake import write_deltalake
def part(lo, hi):
    ids = list(range(lo, hi))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "day": pa.array([f"2026-01-{i % 3 + 1:02}" for i in ids]),
        "amount": pa.array([(i * 7 % 100) / 2.0 for i in ids]),
    })
write_deltalake(sys.argv[1], part(0, 300), partition_by=["day"])
write_deltalake(sys.argv[1], part(300, 420), partition_by=["day"], mode="append")
"#;
    let status = Command::new(python_with_deltalake())
        .args(["-c", script])
        .arg(&written)
        .status()
        .unwrap();
    assert!(status.success());
    for (version, expect) in [(None, 0..420), (Some(0), 0..300)] {
        let out = d.join(format!("copy-{version:?}.parquet"));
        let source = match version {
            Some(v) => format!("table = {:?}\nversion = {v}", written.to_str().unwrap()),
            None => format!("table = {:?}", written.to_str().unwrap()),
        };
        let p = d.join("copy.toml");
        std::fs::write(
            &p,
            format!(
                "[source]\n{source}\n[sink]\npath = {:?}\n",
                out.to_str().unwrap()
            ),
        )
        .unwrap();
        run_pipeline(&p, &[]);
        let mut rows = Vec::new();
        for b in read_parquet(&out) {
            let id = arrow::compute::cast(
                b.column_by_name("id").unwrap(),
                &arrow::datatypes::DataType::Int64,
            )
            .unwrap();
            let day = arrow::compute::cast(
                b.column_by_name("day").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let amount = arrow::compute::cast(
                b.column_by_name("amount").unwrap(),
                &arrow::datatypes::DataType::Float64,
            )
            .unwrap();
            use arrow::array::AsArray;
            for i in 0..b.num_rows() {
                rows.push((
                    id.as_primitive::<arrow::datatypes::Int64Type>().value(i),
                    day.as_string::<i32>().value(i).to_string(),
                    amount
                        .as_primitive::<arrow::datatypes::Float64Type>()
                        .value(i),
                ));
            }
        }
        rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(rows, rows_of(expect), "version {version:?}");
    }
}

#[test]
fn a_schema_difference_is_refused_naming_the_columns_and_merged_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_orders(&d.join("a.csv"), 0..10);
    std::fs::write(
        d.join("b.csv"),
        "id,day,amount,channel\n10,2026-01-02,1.5,web\n",
    )
    .unwrap();
    let pipeline = |input: &str, schema: &str| {
        let p = d.join("p.toml");
        std::fs::write(
            &p,
            format!(
                "[source]\npaths = [\"{input}\"]\n[sink]\ntable = \"t\"\nschema = \"{schema}\"\n"
            ),
        )
        .unwrap();
        p
    };
    run_pipeline(&pipeline("a.csv", "strict"), &[]);
    let e = fail_pipeline(&pipeline("b.csv", "strict"), &[]);
    contains_all(&e, &["channel", "schema = \"merge\""]);
    let report = run_pipeline(&pipeline("b.csv", "merge"), &[]);
    assert!(report.contains("committed table version 1"), "{report}");
    let read = read_table(&d.join("t"));
    assert!(read.schema.iter().any(|(n, _)| n == "channel"));
    assert_eq!(read.rows.len(), 11);
}

fn incremental_pipeline(d: &Path, on_change: &str) -> PathBuf {
    let p = d.join("inc.toml");
    std::fs::write(
        &p,
        format!(
            r#"
            [source]
            paths = ["incoming"]
            incremental = true
            on-change = "{on_change}"
            [sink]
            table = "lake/orders"
            partition-by = ["day"]
            "#
        ),
    )
    .unwrap();
    p
}

#[test]
fn incremental_runs_read_each_new_file_once_and_handle_changed_files_by_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let incoming = d.join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let table = d.join("lake/orders");
    write_orders(&incoming.join("a.csv"), 0..100);
    write_orders(&incoming.join("b.csv"), 100..200);
    let p = incremental_pipeline(d, "refuse");
    let first = run_pipeline(&p, &[]);
    assert!(
        first.contains("2 new input file(s) read, 0 skipped"),
        "{first}"
    );
    assert_eq!(read_table(&table).rows, rows_of(0..200));

    write_orders(&incoming.join("c.csv"), 200..250);
    let second = run_pipeline(&p, &[]);
    assert!(
        second.contains("1 new input file(s) read, 2 skipped as already done"),
        "{second}"
    );
    // The report names the inputs it skipped.
    let skipped: Vec<&str> = second
        .lines()
        .filter_map(|l| l.trim().strip_prefix("skipped: "))
        .collect();
    assert!(
        skipped.len() == 2 && skipped[0].ends_with("a.csv") && skipped[1].ends_with("b.csv"),
        "{second}"
    );
    assert_eq!(read_table(&table).rows, rows_of(0..250));

    // Nothing new: no commit.
    let idle = run_pipeline(&p, &[]);
    assert!(idle.contains("nothing new to read"), "{idle}");
    assert_eq!(read_table(&table).version, Some(1));

    // A changed file is refused by default, naming it; the table stays as it was.
    write_orders(&incoming.join("d.csv"), 250..300);
    write_orders(&incoming.join("a.csv"), 1000..1010);
    let refused = fail_pipeline(&p, &[]);
    contains_all(&refused, &["a.csv", "changed", "--full-refresh"]);
    assert_eq!(read_table(&table).version, Some(1));

    // Skipped when the setting says so (reported), and the new file read.
    let p = incremental_pipeline(d, "skip");
    let third = run_pipeline(&p, &[]);
    assert!(third.contains("1 changed since processed"), "{third}");
    assert_eq!(read_table(&table).rows, rows_of(0..300));

    // Reprocessed: the changed file's new rows are appended.
    let p = incremental_pipeline(d, "reprocess");
    run_pipeline(&p, &[]);
    assert_eq!(read_table(&table).rows, rows_of((0..300).chain(1000..1010)));

    // A full refresh gives the table one run over everything would.
    let refreshed = run_pipeline(&p, &["--full-refresh"]);
    assert!(refreshed.contains("committed table version"), "{refreshed}");
    let everything = d.join("once.toml");
    std::fs::write(
        &everything,
        "[source]\npaths = [\"incoming\"]\n[sink]\ntable = \"lake/once\"\npartition-by = [\"day\"]\n",
    )
    .unwrap();
    run_pipeline(&everything, &[]);
    let once = read_table(&d.join("lake/once"));
    assert_eq!(read_table(&table).rows, once.rows);
    assert_eq!(once.rows, rows_of((100..300).chain(1000..1010)));
    // After the refresh, an incremental run has nothing new.
    assert!(run_pipeline(&p, &[]).contains("nothing new to read"));
}

fn elt_pipeline(d: &Path, condition: &str) -> PathBuf {
    let p = d.join("elt.toml");
    std::fs::write(
        &p,
        format!(
            r#"
            [[stage]]
            name = "land"
            source = {{ paths = ["incoming"], incremental = true }}
            sink = {{ table = "lake/raw" }}

            [[stage]]
            name = "curate"
            source = {{ table = "lake/raw", incremental = true }}
            plugin = [{{ name = "filter", params = {{ where = "{condition}" }} }}]
            sink = {{ table = "lake/curated", partition-by = ["day"] }}
            "#
        ),
    )
    .unwrap();
    p
}

#[test]
fn elt_lands_then_curates_and_a_failed_stage_resumes_with_from_stage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let incoming = d.join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    write_orders(&incoming.join("a.csv"), 0..300);
    // The curate stage fails: its filter names a column the rows do not have.
    let broken = elt_pipeline(d, "nope > 20");
    let e = fail_pipeline(&broken, &[]);
    contains_all(
        &e,
        &[
            "stage curate failed",
            "nope",
            "committed before it: land",
            "--from-stage curate",
        ],
    );
    assert_eq!(read_table(&d.join("lake/raw")).rows, rows_of(0..300));
    assert_eq!(read_table(&d.join("lake/curated")).version, None);

    let fixed = elt_pipeline(d, "amount > 20");
    let resumed = run_pipeline(&fixed, &["--from-stage", "curate"]);
    assert!(resumed.contains("stage land: skipped"), "{resumed}");
    let curated = |ids: std::ops::Range<i64>| rows_of(ids.filter(|&i| order(i).1 > 20.0));
    let read = read_table(&d.join("lake/curated"));
    assert_eq!(read.partition_columns, vec!["day".to_string()]);
    assert_eq!(read.rows, curated(0..300));

    // The next run takes only the new file, and curate only the new raw version.
    write_orders(&incoming.join("b.csv"), 300..400);
    let next = run_pipeline(&fixed, &[]);
    assert!(
        next.contains("1 new input file(s) read, 1 skipped"),
        "{next}"
    );
    assert!(next.contains("added since the last run"), "{next}");
    assert_eq!(read_table(&d.join("lake/raw")).rows, rows_of(0..400));
    assert_eq!(read_table(&d.join("lake/curated")).rows, curated(0..400));
}

/// The table's version and its rows' ids, sorted (duplicates kept), as `deltalake` reads them.
fn table_ids(table: &Path) -> (Option<u64>, Vec<i64>) {
    let v = read_with_deltalake(table, &["id"]);
    let mut ids: Vec<i64> = v["columns"]["id"]
        .as_array()
        .map(|a| a.iter().map(|id| id.as_i64().unwrap()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    (v["version"].as_u64(), ids)
}

/// A run of an incremental pipeline killed with SIGKILL `delay` after its start.
fn run_killed_after(pipeline: &Path, delay: Duration) {
    let mut c = quiver();
    c.arg("run")
        .arg(pipeline)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[test]
fn runs_killed_at_random_moments_leave_a_committed_version_and_reruns_give_every_row_once() {
    const FILE_ROWS: i64 = 100_000;
    const KILLS: usize = 10;
    // Small batches: a run writes each input file in many pieces, so a run that committed
    // piecemeal would be caught with part of a file visible.
    let pipeline = |d: &Path| {
        let p = d.join("inc.toml");
        std::fs::write(
            &p,
            r#"
            [source]
            paths = ["incoming"]
            incremental = true
            batch-size = 4096
            [sink]
            table = "lake/orders"
            partition-by = ["day"]
            "#,
        )
        .unwrap();
        p
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let incoming = d.join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let table = d.join("lake/orders");
    let p = pipeline(d);

    // How long an uninterrupted run of one round's input takes, to aim the kills inside runs:
    // measured on a copy, and again by every rerun that finishes a killed run's work.
    let mut run_time = {
        let scratch = d.join("scratch");
        std::fs::create_dir_all(scratch.join("incoming")).unwrap();
        write_orders(&scratch.join("incoming/a.csv"), 0..FILE_ROWS);
        write_orders(&scratch.join("incoming/b.csv"), FILE_ROWS..2 * FILE_ROWS);
        let started = Instant::now();
        run_pipeline(&pipeline(&scratch), &[]);
        started.elapsed()
    };

    let mut dice = Dice::new();
    // The ids of each input file, by file.
    let mut files: Vec<std::ops::Range<i64>> = Vec::new();
    // Kills that came after the run's commit test nothing: rounds go on until KILLS kills
    // landed before it, within a bound.
    let mut before_commit = 0;
    let mut rounds = 0;
    // The version the last read found (none before the first commit).
    let mut version_before = None;
    while before_commit < KILLS {
        assert!(
            rounds < 3 * KILLS,
            "only {before_commit} of {rounds} kills landed before the run's commit (runs take {run_time:?})"
        );
        rounds += 1;
        let mut new = Vec::new();
        for _ in 0..2 {
            let n = files.len() as i64;
            let ids = n * FILE_ROWS..(n + 1) * FILE_ROWS;
            write_orders(&incoming.join(format!("f{n:03}.csv")), ids.clone());
            files.push(ids);
            new.push(files.len() - 1);
        }
        let delay = Duration::from_millis(dice.range(0, run_time.as_millis() as u64 + 1));
        run_killed_after(&p, delay);

        // The table is at a committed version: each file's rows all there or none, none
        // twice, and the killed run's files all or none.
        let (version, read) = table_ids(&table);
        let present: BTreeSet<i64> = read.iter().copied().collect();
        assert_eq!(
            present.len(),
            read.len(),
            "round {rounds}: a row appears twice after a kill {delay:?} into the run"
        );
        let mut visible_files = BTreeSet::new();
        for (i, range) in files.iter().enumerate() {
            let seen = range.clone().filter(|id| present.contains(id)).count() as i64;
            assert!(
                seen == 0 || seen == FILE_ROWS,
                "round {rounds}: file {i} is partly visible ({seen} of {FILE_ROWS} rows) after a kill {delay:?} into the run"
            );
            if seen > 0 {
                visible_files.insert(i);
            }
        }
        let visible_new = new.iter().filter(|i| visible_files.contains(i)).count();
        assert!(
            visible_new == 0 || visible_new == new.len(),
            "round {rounds}: the killed run's files are partly committed after a kill {delay:?} into the run"
        );
        if visible_new == 0 {
            // Killed before its commit: nothing of the run is visible, the version is the same.
            assert_eq!(
                version, version_before,
                "round {rounds}: the table moved to a new version without the run's rows"
            );
            before_commit += 1;
        }

        // A rerun completes the job: every input row exactly once.
        let started = Instant::now();
        run_pipeline(&p, &[]);
        if visible_new == 0 {
            run_time = started.elapsed();
        }
        let (version, read) = table_ids(&table);
        version_before = version;
        let expected = 0..files.len() as i64 * FILE_ROWS;
        if read != expected.clone().collect::<Vec<_>>() {
            let present: BTreeSet<i64> = read.iter().copied().collect();
            let missing = expected.filter(|id| !present.contains(id)).count();
            panic!(
                "round {rounds}: after the rerun the table has {} rows for {} inputs ({missing} missing, {} repeated)",
                read.len(),
                files.len() as i64 * FILE_ROWS,
                read.len() - present.len()
            );
        }
    }
    eprintln!("{before_commit} of {rounds} kills came before the run's commit");
}

#[test]
fn the_demo_elt_job_lands_and_curates_the_bundled_orders_once() {
    // The demo's files, laid out as in the repository (its tables go to ../../target/demo).
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("examples/demo");
    std::fs::create_dir_all(&demo).unwrap();
    for file in ["elt.toml", "orders.csv"] {
        std::fs::copy(
            repo_root().join("examples/demo").join(file),
            demo.join(file),
        )
        .unwrap();
    }
    let p = demo.join("elt.toml");
    run_pipeline(&p, &[]);
    let again = run_pipeline(&p, &[]);
    assert_eq!(again.matches("no commit made").count(), 2, "{again}");

    // The reference: the curate stage's filter applied to the CSV here.
    let csv = std::fs::read_to_string(demo.join("orders.csv")).unwrap();
    let mut kept: Vec<(i64, String)> = Vec::new();
    for line in csv.lines().skip(1) {
        // order_id,customer,email,country,amount,quantity,internal_note
        let f: Vec<&str> = line.split(',').collect();
        let (amount, quantity): (f64, i64) = (f[4].parse().unwrap(), f[5].parse().unwrap());
        if amount >= 5.0 && quantity > 0 && !f[2].is_empty() {
            kept.push((f[0].parse().unwrap(), f[3].to_string()));
        }
    }
    kept.sort();
    let lake = dir.path().join("target/demo/lake");
    let raw = read_with_deltalake(&lake.join("raw"), &["order_id"]);
    assert_eq!(
        raw["columns"]["order_id"].as_array().unwrap().len(),
        csv.lines().count() - 1
    );
    let curated = read_with_deltalake(&lake.join("orders"), &["order_id", "country", "email"]);
    assert_eq!(curated["version"], 0, "one commit, not two");
    assert_eq!(curated["partition_columns"], serde_json::json!(["country"]));
    let column = |c: &str| curated["columns"][c].as_array().unwrap().clone();
    let (ids, countries, emails) = (column("order_id"), column("country"), column("email"));
    let mut got: Vec<(i64, String)> = ids
        .iter()
        .zip(&countries)
        .map(|(id, c)| (id.as_i64().unwrap(), c.as_str().unwrap().to_string()))
        .collect();
    got.sort();
    assert_eq!(got, kept);
    // E-mails are pseudonymised: none of the CSV's is left.
    assert!(emails
        .iter()
        .all(|e| !csv.contains(&format!(",{},", e.as_str().unwrap()))));
}
