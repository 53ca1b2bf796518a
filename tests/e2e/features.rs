//! Fit → transform with the standard scaler: fitted parameters against a reference, the same
//! results for any partitioning and worker count, `quiver fit` + `run --fitted`, passes for
//! dependent aggregates, and fitted files that must be refused.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;

use crate::support::*;

/// Mean and population standard deviation of the non-null values, the textbook way.
fn mean_std(values: &[Option<f64>]) -> (f64, f64) {
    let v: Vec<f64> = values.iter().flatten().copied().collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / v.len() as f64;
    (mean, var.sqrt())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Input columns: `amount` (float, nulls, extremes), `score` (int32), `flat` (constant).
fn write_input(dir: &Path, name: &str, rows: &[Row]) {
    let batch = to_batch(rows);
    let flat = arrow::array::Float64Array::from(vec![7.5; rows.len()]);
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
        "flat",
        arrow::datatypes::DataType::Float64,
        false,
    )));
    let mut cols = batch.columns().to_vec();
    cols.push(std::sync::Arc::new(flat));
    let batch = arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        cols,
    )
    .unwrap();
    let file = std::fs::File::create(dir.join(name)).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn rows_with_extremes(n: usize, seed: u64) -> Vec<Row> {
    let mut rows = generate(n, seed);
    rows[1].amount = Some(1e12);
    rows[2].amount = Some(-1e12);
    rows[3].amount = None;
    rows
}

fn scaler_pipeline(
    dir: &Path,
    input: &str,
    partitions: usize,
    workers: usize,
    sink: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("p-{partitions}-{workers}.toml"));
    std::fs::write(
        &path,
        format!(
            "workers = {workers}\n[source]\npaths = [\"{input}\"]\nbatch-size = 300\n[partition]\nby = [\"id\"]\ncount = {partitions}\n[[plugin]]\npath = \"{}\"\nparams = {{ columns = [\"amount\", \"score\", \"flat\"] }}\n[sink]\npath = \"{sink}\"\noverwrite = true\n",
            plugin("standard-scaler").display()
        ),
    )
    .unwrap();
    path
}

/// (id, amount, score, flat) of every output row.
type Scaled = Vec<(i64, Option<f64>, f64, f64)>;

/// (id, amount, score, flat) of every output row, sorted by id.
fn scaled(path: &Path) -> Scaled {
    let mut out: Vec<_> = read_parquet(path)
        .iter()
        .flat_map(|b| {
            let id = b
                .column_by_name("id")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone();
            let amount = b
                .column_by_name("amount")
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone();
            let score = b
                .column_by_name("score")
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone();
            let flat = b
                .column_by_name("flat")
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone();
            (0..b.num_rows())
                .map(|i| {
                    (
                        id.value(i),
                        amount.is_valid(i).then(|| amount.value(i)),
                        score.value(i),
                        flat.value(i),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by_key(|r| r.0);
    out
}

fn check_against(reference: &[Row], applied_to: &[Row], got: &Scaled) {
    let (am, asd) = mean_std(&reference.iter().map(|r| r.amount).collect::<Vec<_>>());
    let (sm, ssd) = mean_std(
        &reference
            .iter()
            .map(|r| Some(r.score as f64))
            .collect::<Vec<_>>(),
    );
    assert_eq!(got.len(), applied_to.len());
    for (r, g) in applied_to.iter().zip(got) {
        assert_eq!(r.id, g.0);
        match (r.amount, g.1) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(
                close((a - am) / asd, b),
                "row {}: {} vs {b}",
                r.id,
                (a - am) / asd
            ),
            other => panic!("row {}: null mismatch {other:?}", r.id),
        }
        assert!(close((r.score as f64 - sm) / ssd, g.2), "row {}", r.id);
        // std 0: scale 1, so a constant column becomes 0 (as scikit-learn does).
        assert_eq!(g.3, 0.0);
    }
}

#[test]
fn fitted_results_match_the_reference_for_any_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows_with_extremes(3000, 21);
    write_input(dir.path(), "in.parquet", &rows);
    let mut first: Option<Scaled> = None;
    for (partitions, workers) in [(1, 1), (2, 2), (7, 2), (64, 1), (64, 2)] {
        let out = format!("out-{partitions}-{workers}.parquet");
        let p = scaler_pipeline(dir.path(), "in.parquet", partitions, workers, &out);
        let mut c = quiver();
        c.arg("run").arg(&p);
        let report = run_ok(c);
        assert!(
            report.contains("fitted in 1 pass over the input"),
            "{report}"
        );
        let got = scaled(&dir.path().join(&out));
        check_against(&rows, &rows, &got);
        // Within 1e-9 relative of each other, whatever the partitioning.
        if let Some(f) = &first {
            for (a, b) in f.iter().zip(&got) {
                assert!(a.1.zip(b.1).is_none_or(|(x, y)| close(x, y)) && close(a.2, b.2));
            }
        } else {
            first = Some(got);
        }
    }
}

#[test]
fn fit_once_then_apply_to_other_data() {
    let dir = tempfile::tempdir().unwrap();
    let train = rows_with_extremes(2000, 31);
    let serve = generate(700, 32);
    write_input(dir.path(), "train.parquet", &train);
    write_input(dir.path(), "serve.parquet", &serve);
    let p = scaler_pipeline(dir.path(), "train.parquet", 3, 2, "out.parquet");
    let mut c = quiver();
    c.args(["fit"])
        .arg(&p)
        .args(["-o"])
        .arg(dir.path().join("fitted.json"));
    let msg = run_ok(c);
    assert!(msg.contains("fitted 1 plugin in 1 pass"), "{msg}");
    let fitted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("fitted.json")).unwrap())
            .unwrap();
    let entry = &fitted["plugins"][0];
    assert_eq!(entry["name"], "standard-scaler");
    assert_eq!(entry["sha256"].as_str().unwrap().len(), 64);
    let (m, sd) = mean_std(&train.iter().map(|r| r.amount).collect::<Vec<_>>());
    assert!(close(
        entry["fitted"]["columns"][0]["mean"].as_f64().unwrap(),
        m
    ));
    assert!(close(
        entry["fitted"]["columns"][0]["std"].as_f64().unwrap(),
        sd
    ));
    assert!(
        !dir.path().join("out.parquet").exists(),
        "fit must not write the sink"
    );

    let mut c = quiver();
    c.arg("run")
        .arg(&p)
        .args(["-i"])
        .arg(dir.path().join("serve.parquet"))
        .args(["--fitted"])
        .arg(dir.path().join("fitted.json"));
    let report = run_ok(c);
    assert!(report.contains("fitted parameters from"), "{report}");
    check_against(&train, &serve, &scaled(&dir.path().join("out.parquet")));
}

#[test]
fn dependent_aggregates_are_fitted_in_separate_passes() {
    let dir = tempfile::tempdir().unwrap();
    let rows = generate(1500, 41);
    write_input(dir.path(), "in.parquet", &rows);
    let p = dir.path().join("p.toml");
    let scaler = plugin("standard-scaler");
    std::fs::write(
        &p,
        format!(
            "[source]\npaths = [\"in.parquet\"]\n[[plugin]]\npath = \"{s}\"\nparams = {{ columns = [\"score\"] }}\n[[plugin]]\npath = \"{}\"\nparams = {{ columns = [\"score\"], a = 1, b = 0.25 }}\n[[plugin]]\npath = \"{s}\"\nparams = {{ columns = [\"score\", \"k\"] }}\n[sink]\npath = \"out.parquet\"\n",
            plugin("scale").display(),
            s = scaler.display()
        ),
    )
    .unwrap();
    let mut c = quiver();
    c.arg("run").arg(&p);
    let report = run_ok(c);
    assert!(report.contains("fitted in 2 passes"), "{report}");
    // The second scaler was fitted on the first one's output: a standardised column again.
    let out = read_parquet(&dir.path().join("out.parquet"));
    let score: Vec<Option<f64>> = out
        .iter()
        .flat_map(|b| {
            b.column_by_name("score")
                .unwrap()
                .as_primitive::<Float64Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    let (m, sd) = mean_std(&score);
    assert!(
        m.abs() < 1e-9 && (sd - 1.0).abs() < 1e-9,
        "mean {m}, std {sd}"
    );

    // Passes after the first reuse the decoded input; reading the files again (no cache)
    // must give the same output.
    let text = std::fs::read_to_string(&p).unwrap();
    let text = text
        .replace("[source]\n", "[source]\ncache-mib = 0\n")
        .replace("path = \"out.parquet\"", "path = \"out2.parquet\"");
    std::fs::write(&p, text).unwrap();
    let mut c = quiver();
    c.arg("run").arg(&p);
    assert!(run_ok(c).contains("fitted in 2 passes"));
    assert_eq!(read_parquet(&dir.path().join("out2.parquet")), out);
}

#[test]
fn bad_fits_and_fitted_files_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "in.parquet", &generate(500, 51));
    // Fitting a text column.
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        format!(
            "[source]\npaths = [\"in.parquet\"]\n[[plugin]]\npath = \"{}\"\nparams = {{ columns = [\"email\"] }}\n[sink]\npath = \"out.parquet\"\n",
            plugin("standard-scaler").display()
        ),
    )
    .unwrap();
    let mut c = quiver();
    c.arg("fit")
        .arg(&p)
        .arg("-o")
        .arg(dir.path().join("f.json"));
    let err = run_err(c);
    assert!(
        err.contains("standard-scaler") && err.contains("email") && err.contains("Utf8"),
        "{err}"
    );
    assert!(!dir.path().join("f.json").exists());

    let p = scaler_pipeline(dir.path(), "in.parquet", 2, 2, "out.parquet");
    let fitted = dir.path().join("fitted.json");
    let mut c = quiver();
    c.arg("fit").arg(&p).arg("-o").arg(&fitted);
    run_ok(c);
    let good = std::fs::read_to_string(&fitted).unwrap();
    let cases = [
        (
            good.replace("\"version\": \"0.1.0\"", "\"version\": \"9.9.9\""),
            "fitted with standard-scaler 9.9.9 but plugin #1 is standard-scaler 0.1.0",
        ),
        (
            good.replacen("\"sha256\": \"", "\"sha256\": \"00", 1),
            "content hash is 00",
        ),
        (
            good[..good.len() / 2].to_string(),
            "not a Quiver fitted-parameters file",
        ),
        (
            good.replace(
                "\"columns\": [\n          \"amount\"",
                "\"columns\": [\n          \"k\"",
            ),
            "was fitted with parameters",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&fitted, &text).unwrap();
        let mut c = quiver();
        c.arg("run").arg(&p).arg("--fitted").arg(&fitted);
        let err = run_err(c);
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
        assert!(err.contains("fitted.json"), "{err}");
        assert!(!dir.path().join("out.parquet").exists());
    }
}

// ---------------------------------------------------------------------------------------------
// Fitted parameters, byte for byte

/// Every fitted standard plugin, in the configurations whose fitted parameters are kept under
/// `tests/fixtures/fitted/<name>.json`: (name, plugin, parameters, input file). `in.parquet` is
/// [`write_input`] of 3000 generated rows with extremes; `many.parquet` holds 200 000 rows of
/// few distinct integers ([`write_few_distinct_ints`]), past the size where quantiles were
/// once sketched.
const FITTED_CASES: &[(&str, &str, &str, &str)] = &[
    (
        "min-max-scaler",
        "min-max-scaler",
        r#"columns = ["amount", "score", "flat"], min = -1, max = 2"#,
        "in.parquet",
    ),
    (
        "standard-scaler",
        "standard-scaler",
        r#"columns = ["amount", "score", "flat"]"#,
        "in.parquet",
    ),
    (
        "robust-scaler",
        "robust-scaler",
        r#"columns = ["amount", "score", "flat"]"#,
        "in.parquet",
    ),
    (
        "imputer-mean",
        "imputer",
        r#"columns = ["amount", "score"]"#,
        "in.parquet",
    ),
    (
        "imputer-median",
        "imputer",
        r#"columns = ["amount", "score"], strategy = "median""#,
        "in.parquet",
    ),
    (
        "imputer-most-frequent",
        "imputer",
        r#"columns = ["score", "email", "k"], strategy = "most-frequent""#,
        "in.parquet",
    ),
    (
        "bucketize",
        "bucketize",
        r#"column = "amount", quantiles = 10"#,
        "in.parquet",
    ),
    (
        "one-hot",
        "one-hot",
        r#"columns = ["region", "score"]"#,
        "in.parquet",
    ),
    (
        "one-hot-infrequent",
        "one-hot",
        r#"columns = ["user", "note"], max-categories = 4"#,
        "in.parquet",
    ),
    (
        "ordinal-encoder",
        "ordinal-encoder",
        r#"columns = ["user", "score"]"#,
        "in.parquet",
    ),
    (
        "count-encoder",
        "count-encoder",
        r#"columns = ["user", "k"]"#,
        "in.parquet",
    ),
    (
        "target-encoder",
        "target-encoder",
        r#"columns = ["region", "user"], target = "amount", smoothing = 3"#,
        "in.parquet",
    ),
    (
        "bucketize-many-rows",
        "bucketize",
        r#"column = "n", quantiles = 20"#,
        "many.parquet",
    ),
    (
        "robust-scaler-many-rows",
        "robust-scaler",
        r#"columns = ["n"]"#,
        "many.parquet",
    ),
    (
        "imputer-median-many-rows",
        "imputer",
        r#"columns = ["n"], strategy = "median""#,
        "many.parquet",
    ),
];

/// `quiver fit` of one plugin over `input` (one worker, so the merge order is fixed too); the
/// plugin's fitted parameters.
fn fitted_by(dir: &Path, plugin_name: &str, params: &str, input: &str) -> serde_json::Value {
    let p = dir.join("fit.toml");
    std::fs::write(
        &p,
        format!(
            "workers = 1\n[source]\npaths = [\"{input}\"]\nbatch-size = 700\n[[plugin]]\npath = \"{}\"\nparams = {{ {params} }}\n[sink]\npath = \"out.parquet\"\n",
            plugin(plugin_name).display()
        ),
    )
    .unwrap();
    let fitted = dir.join("fitted.json");
    let mut c = quiver();
    c.current_dir(dir).arg("fit").arg(&p).arg("-o").arg(&fitted);
    run_ok(c);
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fitted).unwrap()).unwrap();
    file["plugins"][0]["fitted"].clone()
}

/// The fitted parameters of every fitted plugin are the same, byte for byte, as those kept in
/// `tests/fixtures/fitted/`. `QUIVER_BLESS=1` rewrites the files instead (then review the
/// diff: only an intended change of a fit may change them).
#[test]
fn fitted_parameters_are_the_same_as_the_saved_ones() {
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "in.parquet", &rows_with_extremes(3000, 61));
    write_few_distinct_ints(&dir.path().join("many.parquet"), 200_000);
    let saved = repo_root().join("tests/fixtures/fitted");
    let bless = std::env::var_os("QUIVER_BLESS").is_some_and(|v| v == "1");
    let mut differ = Vec::new();
    for &(name, plugin_name, params, input) in FITTED_CASES {
        let got = serde_json::to_string_pretty(&fitted_by(dir.path(), plugin_name, params, input))
            .unwrap()
            + "\n";
        let file = saved.join(format!("{name}.json"));
        if bless {
            std::fs::create_dir_all(&saved).unwrap();
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (QUIVER_BLESS=1 writes it)", file.display()));
        if got != want {
            differ.push(format!("{name}:\n{got}"));
        }
    }
    assert!(
        differ.is_empty(),
        "fitted parameters differ from the saved ones:\n{}",
        differ.join("\n")
    );
}
