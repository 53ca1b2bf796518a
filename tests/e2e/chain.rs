//! The standard chain (filter → select → mask → scale) under hash and range partitioning.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray};

use crate::support::*;

/// Writes the input (two Parquet files) and a pipeline file; returns the pipeline path.
fn setup(dir: &Path, rows: &[Row], partition: &str, sink: &str) -> std::path::PathBuf {
    let (a, b) = rows.split_at(rows.len() / 3);
    std::fs::create_dir_all(dir.join("in")).unwrap();
    write_parquet(&dir.join("in/part-a.parquet"), a);
    write_parquet(&dir.join("in/part-b.parquet"), b);
    let toml = format!(
        "workers = 2\n[source]\npaths = [\"in/*.parquet\"]\nbatch-size = 700\n{partition}\n{}\n[sink]\n{sink}\n",
        chain_toml()
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Reads a Hive-partitioned output: (region, partition N, rows in file order) per file.
fn read_hive(out: &Path) -> Vec<(String, usize, Vec<OutRow>)> {
    files_below(out)
        .into_iter()
        .map(|f| {
            let region = f.parent().unwrap().file_name().unwrap().to_string_lossy();
            let region = region.strip_prefix("region=").unwrap().to_string();
            let rows = read_parquet(&f).iter().flat_map(out_rows).collect();
            (region, part_number(&f), rows)
        })
        .collect()
}

/// Checks the output rows against the reference chain, and returns id → partition.
fn check_rows(input: &[Row], files: &[(String, usize, Vec<OutRow>)]) -> BTreeMap<i64, usize> {
    let by_id: BTreeMap<i64, &Row> = input.iter().map(|r| (r.id, r)).collect();
    let mut partition_of = BTreeMap::new();
    for (region, part, rows) in files {
        assert!(!rows.is_empty());
        for w in rows.windows(2) {
            assert!(
                w[0].id < w[1].id,
                "order within partition {part} not preserved"
            );
        }
        for row in rows {
            let src = by_id[&row.id];
            assert_eq!(
                &src.region, region,
                "row {} in the wrong region directory",
                row.id
            );
            assert_eq!(Some(row.clone()), chain_reference(src), "row {}", row.id);
            assert!(
                partition_of.insert(row.id, *part).is_none(),
                "row {} twice",
                row.id
            );
        }
    }
    let expected: Vec<i64> = input
        .iter()
        .filter_map(chain_reference)
        .map(|r| r.id)
        .collect();
    assert_eq!(partition_of.keys().copied().collect::<Vec<_>>(), expected);
    partition_of
}

#[test]
fn hash_partitioning_matches_each_documented_hash_at_several_counts() {
    let rows = generate(6000, 1);
    for (algorithm, count) in [
        ("xxh3", 1),
        ("xxh3", 3),
        ("murmur3", 8),
        ("fnv1a", 5),
        ("md5", 7),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = setup(
            dir.path(),
            &rows,
            &format!("[partition]\nby = [\"user\"]\ncount = {count}\nhash = \"{algorithm}\""),
            "path = \"out\"\npartition-by = [\"region\"]",
        );
        let mut c = quiver();
        c.arg("run").arg(&pipeline);
        let report = run_ok(c);
        assert!(
            report.contains(&format!("with {algorithm} into {count}")),
            "{report}"
        );
        let partition_of = check_rows(&rows, &read_hive(&dir.path().join("out")));
        for r in &rows {
            if let Some(&p) = partition_of.get(&r.id) {
                let want = reference_hash(algorithm, r.user.as_bytes()) % count as u64;
                assert_eq!(
                    p as u64, want,
                    "{algorithm}: row {} (user {})",
                    r.id, r.user
                );
            }
        }
        let used: std::collections::BTreeSet<usize> = partition_of.values().copied().collect();
        assert_eq!(
            used.len(),
            count,
            "{algorithm}: every partition should get rows"
        );
        // The skew report names the hot key (u0 holds about a third of the rows).
        assert!(report.contains("hottest keys: u0"), "{report}");
    }
}

#[test]
fn range_partitioning_with_given_and_sampled_boundaries() {
    let rows = generate(5000, 2);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = setup(
        dir.path(),
        &rows,
        "[partition]\nscheme = \"range\"\nby = [\"id\"]\nboundaries = [1000, 2500, 4000]",
        "path = \"out\"\npartition-by = [\"region\"]",
    );
    let mut c = quiver();
    c.arg("run").arg(&pipeline);
    run_ok(c);
    let partition_of = check_rows(&rows, &read_hive(&dir.path().join("out")));
    for (id, p) in &partition_of {
        let want = [1000, 2500, 4000].iter().filter(|&&b| *id >= b).count();
        assert_eq!(*p, want, "row {id}");
    }

    // Boundaries from a sample: partitions hold increasing, disjoint id ranges.
    let dir = tempfile::tempdir().unwrap();
    let pipeline = setup(
        dir.path(),
        &rows,
        "[partition]\nscheme = \"range\"\nby = [\"k\"]\ncount = 4",
        "path = \"out\"\npartition-by = [\"region\"]",
    );
    let mut c = quiver();
    c.arg("run").arg(&pipeline);
    run_ok(c);
    let files = read_hive(&dir.path().join("out"));
    check_rows(&rows, &files);
    let mut ranges: BTreeMap<usize, (i64, i64)> = BTreeMap::new();
    for (_, p, rows) in &files {
        for r in rows {
            let e = ranges.entry(*p).or_insert((r.k, r.k));
            e.0 = e.0.min(r.k);
            e.1 = e.1.max(r.k);
        }
    }
    let ranges: Vec<(i64, i64)> = ranges.into_values().collect();
    assert!(ranges.len() >= 2, "{ranges:?}");
    for w in ranges.windows(2) {
        assert!(w[0].1 < w[1].0, "ranges overlap: {ranges:?}");
    }
}

#[test]
fn without_partitioning_one_file_keeps_input_order() {
    let rows = generate(4000, 3);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = setup(dir.path(), &rows, "", "path = \"out.parquet\"");
    let mut c = quiver();
    c.arg("run").arg(&pipeline);
    run_ok(c);
    let got: Vec<OutRow> = read_parquet(&dir.path().join("out.parquet"))
        .iter()
        .flat_map(out_rows)
        .collect();
    let want: Vec<OutRow> = rows.iter().filter_map(chain_reference).collect();
    assert_eq!(got, want);
    assert_only(dir.path(), &["in", "out.parquet", "pipeline.toml"]);
}

#[test]
fn flags_form_runs_a_chain_over_csv() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    let mut text = String::from("id,k,x\n");
    for i in 0..300 {
        text += &format!("{i},{},{}.5\n", (i * 7) % 1000, i);
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.path().join("out.jsonl");
    let mut c = quiver();
    c.args(["run", "-i"])
        .arg(&csv)
        .args(["--plugin", "filter", "-p", "where=k >= 500"])
        .args([
            "--plugin",
            "scale",
            "-p",
            "columns=x",
            "-p",
            "a=0.5",
            "-p",
            "b=4",
        ])
        .args(["--partition-by", "id", "--partitions", "3", "-o"])
        .arg(&out);
    run_ok(c);
    let mut got: Vec<(i64, f64)> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["id"].as_i64().unwrap(), v["x"].as_f64().unwrap())
        })
        .collect();
    got.sort_by_key(|r| r.0);
    let want: Vec<(i64, f64)> = (0..300i64)
        .filter(|i| (i * 7) % 1000 >= 500)
        .map(|i| (i, (i as f64 + 0.5 - 0.5) / 4.0))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn inspect_shows_describe_and_imports() {
    let mut c = quiver();
    c.args(["plugin", "inspect"]).arg(plugin("mask"));
    let (ok, out, err) = run(c);
    assert!(ok, "{err}");
    assert!(out.contains("mask 0.1.0"), "{out}");
    assert!(out.contains("salt") && out.contains("required"), "{out}");
    assert!(
        out.contains("keep-domain") && out.contains("default false"),
        "{out}"
    );
    assert!(out.contains("sha256"), "{out}");
    assert!(!out.contains("wasi:sockets"), "{out}");
}

#[test]
fn mask_keeps_domain_when_asked_and_hive_paths_escape_values() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "email,grp\na@x.org,p/q\n,p/q\nb@y.com,z\n").unwrap();
    let out = dir.path().join("out");
    let mut c = quiver();
    c.args(["run", "-i"])
        .arg(&csv)
        .args([
            "--plugin",
            "mask",
            "-p",
            "columns=email",
            "-p",
            "salt=s",
            "-p",
            "keep-domain=true",
        ])
        .args(["--output-partition-by", "grp", "-o"])
        .arg(&out);
    run_ok(c);
    let files = files_below(&out);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].to_string_lossy().contains("grp=p%2Fq"),
        "{files:?}"
    );
    let batch = &read_parquet(&files[0])[0];
    let emails = batch.column_by_name("email").unwrap().as_string::<i32>();
    assert_eq!(
        emails.value(0),
        format!("{}@x.org", mask_reference("s", "a@x.org"))
    );
    assert!(emails.is_null(1));
    assert!(
        batch.column_by_name("grp").is_none(),
        "Hive keys live in the path"
    );
}
