//! Error policies: `fail` stops the run, `skip` drops failing batches, `dead-letter` isolates
//! exactly the failing rows by bisection (the rest continue in order), and retries absorb
//! transient failures. Checked against a direct computation over the input.

use std::path::Path;

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, UInt32Type};

use crate::support::*;

/// 5000 rows in batches of 500; `v` is negative on rows 7, 1234, 1235 and 4999.
fn write_input(dir: &Path) -> Vec<i64> {
    let bad = [7, 1234, 1235, 4999];
    let values: Vec<i64> = (0..5000)
        .map(|i| if bad.contains(&i) { -i } else { i })
        .collect();
    let mut text = String::from("id,v\n");
    for (i, v) in values.iter().enumerate() {
        text += &format!("{i},{v}\n");
    }
    std::fs::write(dir.join("in.csv"), text).unwrap();
    values
}

fn pipeline(dir: &Path, mode: &str, policy: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{mode}-{policy}.toml"));
    std::fs::write(
        &path,
        format!(
            "workers = 2\n[source]\npaths = [\"in.csv\"]\nbatch-size = 500\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"{mode}\", column = \"v\" }}\non-error = \"{policy}\"\n{extra}\n[sink]\npath = \"out.parquet\"\noverwrite = true\n",
            plugin("liar").display()
        ),
    )
    .unwrap();
    path
}

fn ids(path: &Path) -> Vec<i64> {
    read_parquet(path)
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

#[test]
fn dead_letter_isolates_exactly_the_failing_rows() {
    for mode in ["fail-on-negative", "panic-on-negative"] {
        let dir = tempfile::tempdir().unwrap();
        let values = write_input(dir.path());
        let mut c = quiver();
        c.current_dir(dir.path())
            .arg("run")
            .arg(pipeline(dir.path(), mode, "dead-letter", ""));
        let report = run_ok(c);
        assert!(
            report.contains("4 rows to dead letters"),
            "{mode}: {report}"
        );
        // Every other row went through, in input order.
        let want: Vec<i64> = (0..5000).filter(|&i| values[i as usize] >= 0).collect();
        assert_eq!(ids(&dir.path().join("out.parquet")), want, "{mode}");
        // The dead letters are exactly the bad rows, with what happened to them.
        let dead = read_parquet(&dir.path().join("out-dead-letter/00-liar.parquet"));
        let mut got: Vec<(i64, String, String, u32)> = dead
            .iter()
            .flat_map(|b| {
                let id = b
                    .column_by_name("id")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .clone();
                let error = b
                    .column_by_name("_error")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                let plugin = b
                    .column_by_name("_plugin")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                let part = b
                    .column_by_name("_partition")
                    .unwrap()
                    .as_primitive::<UInt32Type>()
                    .clone();
                (0..b.num_rows())
                    .map(|i| {
                        (
                            id.value(i),
                            error.value(i).to_string(),
                            plugin.value(i).to_string(),
                            part.value(i),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        got.sort();
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![7, 1234, 1235, 4999],
            "{mode}"
        );
        for (id, error, plugin, partition) in &got {
            let expected = if mode == "fail-on-negative" {
                "negative value"
            } else {
                "cannot handle negative value"
            };
            assert!(
                error.contains(expected) && error.contains("liar"),
                "{id}: {error}"
            );
            assert_eq!(plugin, "liar");
            // Without partitioning, batches go round-robin over the 2 workers.
            assert_eq!(*partition as i64, (id / 500) % 2);
        }
    }
}

#[test]
fn skip_drops_the_failing_batches_and_fail_stops() {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path());
    let mut c = quiver();
    c.current_dir(dir.path())
        .arg("run")
        .arg(pipeline(dir.path(), "fail-on-negative", "skip", ""));
    let report = run_ok(c);
    assert!(report.contains("3 batches skipped (1500 rows)"), "{report}");
    let want: Vec<i64> = (0..5000)
        .filter(|i| ![0, 2, 9].contains(&(i / 500)))
        .collect();
    assert_eq!(ids(&dir.path().join("out.parquet")), want);

    let mut c = quiver();
    c.current_dir(dir.path())
        .arg("run")
        .arg(pipeline(dir.path(), "fail-on-negative", "fail", ""));
    std::fs::remove_file(dir.path().join("out.parquet")).unwrap();
    let err = run_err(c);
    assert!(
        err.contains("negative value -7") && err.contains("rows 0..500"),
        "{err}"
    );
    assert!(!dir.path().join("out.parquet").exists());
    assert!(!dir.path().join("out-dead-letter").exists());
}

#[test]
fn retries_absorb_transient_failures() {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path());
    let mut c = quiver();
    c.current_dir(dir.path())
        .arg("run")
        .arg(pipeline(dir.path(), "flaky", "fail", "retries = 1"));
    let report = run_ok(c);
    assert!(report.contains("10 retries"), "{report}");
    assert_eq!(
        ids(&dir.path().join("out.parquet")),
        (0..5000).collect::<Vec<_>>()
    );
    let mut c = quiver();
    c.current_dir(dir.path())
        .arg("run")
        .arg(pipeline(dir.path(), "flaky", "fail", "retries = 0"));
    let err = run_err(c);
    assert!(err.contains("transient failure"), "{err}");
}
