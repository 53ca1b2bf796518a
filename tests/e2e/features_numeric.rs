//! Feature plugins (numeric): `min-max-scaler`, `robust-scaler`, `imputer` and `bucketize`
//! against naive single-threaded references computed here (sorting for medians and quantiles,
//! numpy's "linear" definition), on data with nulls, NaN, extremes, a constant and an all-null
//! column; the same results for 1, 2, 7 and 64 partitions, including 64 partitions over a few
//! rows (empty partitions); the sketch path of the quantile summary; and bad inputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float64Array, Int32Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Schema};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Input data

/// Columns added to the standard generated rows.
struct Extra {
    /// Float64, never null, always 7.5: a constant column.
    flat: Vec<f64>,
    /// Float64, always null: a column with nothing to fit on.
    hole: Vec<Option<f64>>,
    /// Int32 with nulls and few distinct values (ties, duplicates).
    qty: Vec<Option<i32>>,
    /// Float32 with nulls.
    ratio: Vec<Option<f32>>,
    /// Utf8 with nulls and four distinct values.
    tier: Vec<Option<String>>,
}

fn extra_for(rows: &[Row]) -> Extra {
    Extra {
        flat: vec![7.5; rows.len()],
        hole: vec![None; rows.len()],
        qty: rows
            .iter()
            .map(|r| (r.id % 5 != 0).then_some((r.k % 17) as i32 - 3))
            .collect(),
        ratio: rows
            .iter()
            .map(|r| (r.id % 6 != 1).then_some(r.score as f32 / 4.0))
            .collect(),
        tier: rows
            .iter()
            .map(|r| {
                (r.id % 7 != 3)
                    .then(|| ["gold", "silver", "bronze", "iron"][(r.k % 4) as usize].into())
            })
            .collect(),
    }
}

/// Generated rows with extremes (±1e12), a null and a NaN in `amount`.
fn rows_with_extremes(n: usize, seed: u64) -> Vec<Row> {
    let mut rows = generate(n, seed);
    rows[1].amount = Some(1e12);
    rows[2].amount = Some(-1e12);
    rows[3].amount = None;
    rows[4].amount = Some(f64::NAN);
    rows
}

/// Writes the rows and their extra columns as one Parquet file with small row groups.
fn write_table(path: &Path, rows: &[Row], extra: &Extra) {
    let base = to_batch(rows);
    let mut fields: Vec<_> = base.schema().fields().iter().cloned().collect();
    let mut cols = base.columns().to_vec();
    let mut add = |name: &str, t: DataType, nullable: bool, a: ArrayRef| {
        fields.push(Arc::new(Field::new(name, t, nullable)));
        cols.push(a);
    };
    add(
        "flat",
        DataType::Float64,
        false,
        Arc::new(Float64Array::from(extra.flat.clone())),
    );
    add(
        "hole",
        DataType::Float64,
        true,
        Arc::new(Float64Array::from(extra.hole.clone())),
    );
    add(
        "qty",
        DataType::Int32,
        true,
        Arc::new(Int32Array::from(extra.qty.clone())),
    );
    add(
        "ratio",
        DataType::Float32,
        true,
        Arc::new(Float32Array::from(extra.ratio.clone())),
    );
    add(
        "tier",
        DataType::Utf8,
        true,
        Arc::new(StringArray::from(extra.tier.clone())),
    );
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(1000))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The table of one test: rows, extra columns and the file holding them.
struct Table {
    rows: Vec<Row>,
    extra: Extra,
}

impl Table {
    fn new(rows: Vec<Row>) -> Self {
        let extra = extra_for(&rows);
        Table { rows, extra }
    }

    fn write(&self, dir: &Path, name: &str) {
        write_table(&dir.join(name), &self.rows, &self.extra);
    }

    /// A numeric input column as f64 (None = null; NaN kept).
    fn numbers(&self, name: &str) -> Vec<Option<f64>> {
        match name {
            "amount" => self.rows.iter().map(|r| r.amount).collect(),
            "score" => self.rows.iter().map(|r| Some(r.score as f64)).collect(),
            "k" => self.rows.iter().map(|r| Some(r.k as f64)).collect(),
            "flat" => self.extra.flat.iter().map(|&x| Some(x)).collect(),
            "hole" => self.extra.hole.clone(),
            "qty" => self.extra.qty.iter().map(|x| x.map(f64::from)).collect(),
            "ratio" => self.extra.ratio.iter().map(|x| x.map(f64::from)).collect(),
            other => panic!("no numeric column {other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running pipelines

/// A pipeline over `input` with the given plugins (name, inline TOML params), partitioned by
/// `id` into `partitions`, writing `sink`.
fn pipeline(
    dir: &Path,
    input: &str,
    partitions: usize,
    workers: usize,
    plugins: &[(&str, &str)],
    sink: &str,
) -> PathBuf {
    let mut text = format!(
        "workers = {workers}\n[source]\npaths = [\"{input}\"]\nbatch-size = 300\n[partition]\nby = [\"id\"]\ncount = {partitions}\n"
    );
    for (name, params) in plugins {
        text.push_str(&format!(
            "[[plugin]]\npath = \"{}\"\nparams = {{ {params} }}\n",
            plugin(name).display()
        ));
    }
    text.push_str(&format!("[sink]\npath = \"{sink}\"\noverwrite = true\n"));
    let path = dir.join(format!("{}.toml", sink.trim_end_matches(".parquet")));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs one plugin over `input` and returns (run report, output rows sorted by id).
fn run_plugin(
    dir: &Path,
    input: &str,
    partitions: usize,
    workers: usize,
    name: &str,
    params: &str,
) -> (String, RecordBatch) {
    let sink = format!("{name}-{partitions}-{workers}.parquet");
    let p = pipeline(dir, input, partitions, workers, &[(name, params)], &sink);
    let mut c = quiver();
    c.arg("run").arg(&p);
    let report = run_ok(c);
    (report, sorted_by_id(&dir.join(&sink)))
}

/// Every output batch of a file in one batch, rows sorted by `id`.
fn sorted_by_id(path: &Path) -> RecordBatch {
    let batches = read_parquet(path);
    let schema = batches[0].schema();
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let order =
        arrow::compute::sort_to_indices(all.column_by_name("id").unwrap(), None, None).unwrap();
    arrow::compute::take_record_batch(&all, &order).unwrap()
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no output column {name}"))
}

/// An output column as f64 (any numeric type), None for null.
fn out_f64(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let a = arrow::compute::cast(col(b, name), &DataType::Float64).unwrap();
    a.as_primitive::<Float64Type>().iter().collect()
}

fn out_i32(b: &RecordBatch, name: &str) -> Vec<Option<i32>> {
    col(b, name).as_primitive::<Int32Type>().iter().collect()
}

fn out_str(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    col(b, name)
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}

fn run_err_of(dir: &Path, input: &str, name: &str, params: &str) -> String {
    let p = pipeline(dir, input, 2, 2, &[(name, params)], "bad.parquet");
    let mut c = quiver();
    c.arg("run").arg(&p);
    let err = run_err(c);
    assert!(
        !dir.join("bad.parquet").exists(),
        "a failed run must not write"
    );
    err
}

// ---------------------------------------------------------------------------------------------
// References

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_close_columns(what: &str, want: &[Option<f64>], got: &[Option<f64>]) {
    assert_eq!(want.len(), got.len(), "{what}: row count");
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        match (w, g) {
            (None, None) => {}
            (Some(w), Some(g)) if close(*w, *g) => {}
            _ => panic!("{what}: row {i}: expected {w:?}, got {g:?}"),
        }
    }
}

/// The non-null, non-NaN values, sorted.
fn present_sorted(values: &[Option<f64>]) -> Vec<f64> {
    let mut v: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|x| !x.is_nan())
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

/// numpy's quantile with method "linear": x[lo] + (h − lo)·(x[lo+1] − x[lo]), h = q·(n − 1).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = q * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let f = h - lo as f64;
    if f == 0.0 {
        sorted[lo]
    } else {
        sorted[lo] + f * (sorted[lo + 1] - sorted[lo])
    }
}

/// scikit-learn's MinMaxScaler, feature_range (lo, hi): a zero range counts as 1.
fn min_max_reference(values: &[Option<f64>], lo: f64, hi: f64) -> Vec<Option<f64>> {
    let v = present_sorted(values);
    let (min, max) = match (v.first(), v.last()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => (0.0, 0.0),
    };
    let range = if max == min { 1.0 } else { max - min };
    values
        .iter()
        .map(|x| x.map(|x| (x - min) / range * (hi - lo) + lo))
        .collect()
}

/// scikit-learn's RobustScaler: (x − median) / (q75 − q25), an IQR of 0 counting as 1.
fn robust_reference(values: &[Option<f64>], center: bool, scale: bool) -> Vec<Option<f64>> {
    let v = present_sorted(values);
    let (m, iqr) = if v.is_empty() {
        (0.0, 1.0)
    } else {
        (quantile(&v, 0.5), quantile(&v, 0.75) - quantile(&v, 0.25))
    };
    let m = if center { m } else { 0.0 };
    let s = if scale && iqr != 0.0 { iqr } else { 1.0 };
    values.iter().map(|x| x.map(|x| (x - m) / s)).collect()
}

/// The most frequent value, the smallest on ties.
fn most_frequent<T: Ord + Clone>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts = std::collections::BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0u64) += 1;
    }
    let best = counts.values().copied().max()?;
    counts.into_iter().find(|(_, c)| *c == best).map(|(v, _)| v)
}

/// bisect_right: the number of boundaries ≤ x.
fn bucket(boundaries: &[f64], x: f64) -> i32 {
    boundaries.iter().filter(|&&b| b <= x).count() as i32
}

/// The i/n quantile boundaries of the values, i = 1..n−1, deduplicated.
fn quantile_boundaries(values: &[Option<f64>], n: usize) -> Vec<f64> {
    let v = present_sorted(values);
    if v.is_empty() {
        return Vec::new();
    }
    let mut b: Vec<f64> = (1..n).map(|i| quantile(&v, i as f64 / n as f64)).collect();
    b.dedup();
    b
}

// ---------------------------------------------------------------------------------------------
// Checks of one plugin's output against the references

const SCALED: [&str; 5] = ["amount", "score", "flat", "qty", "hole"];

fn check_min_max(t: &Table, out: &RecordBatch, lo: f64, hi: f64) {
    for c in SCALED {
        assert_eq!(col(out, c).data_type(), &DataType::Float64, "{c}");
        let want = min_max_reference(&t.numbers(c), lo, hi);
        assert_close_columns(c, &want, &out_f64(out, c));
    }
    // A constant column maps to lo; the all-null column stays null.
    assert!(out_f64(out, "flat").iter().all(|x| *x == Some(lo)));
    assert_eq!(col(out, "hole").null_count(), t.rows.len());
}

fn check_robust(t: &Table, out: &RecordBatch, center: bool, scale: bool) {
    for c in SCALED {
        assert_eq!(col(out, c).data_type(), &DataType::Float64, "{c}");
        let want = robust_reference(&t.numbers(c), center, scale);
        assert_close_columns(c, &want, &out_f64(out, c));
    }
}

/// Checks that every listed column matches between runs within 1e-9 relative.
fn check_same(what: &str, a: &RecordBatch, b: &RecordBatch, columns: &[&str]) {
    for c in columns {
        assert_close_columns(&format!("{what}: {c}"), &out_f64(a, c), &out_f64(b, c));
    }
}

/// The fill value the imputer must use for a numeric column, by strategy.
fn numeric_fill(values: &[Option<f64>], strategy: &str) -> Option<f64> {
    let v = present_sorted(values);
    if v.is_empty() {
        return None;
    }
    Some(match strategy {
        "mean" => fsum(&v) / v.len() as f64,
        "median" => quantile(&v, 0.5),
        "most-frequent" => {
            // Counted by an order-preserving integer key, so ties resolve to the smallest.
            let keys = v.iter().map(|x| ordered(*x));
            f64::from_bits(unordered(most_frequent(keys).unwrap()))
        }
        other => panic!("{other}"),
    })
}

/// The correctly rounded sum (Shewchuk's algorithm, Python's `math.fsum`): with ±1e12 among
/// the values a plain sum loses ~1e-8 relative, more than the comparisons allow.
fn fsum(values: &[f64]) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for &v in values {
        let mut x = v;
        let mut kept = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        partials.truncate(kept);
        partials.push(x);
    }
    partials.iter().rev().sum()
}

/// f64 → u64 preserving numeric order (no NaN; −0 + 0 = +0 counts −0 as 0), and back.
fn ordered(x: f64) -> u64 {
    let b = (x + 0.0).to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

fn unordered(k: u64) -> u64 {
    if k >> 63 == 1 {
        k & !(1 << 63)
    } else {
        !k
    }
}

fn check_imputer(t: &Table, out: &RecordBatch, strategy: &str, columns: &[&str]) {
    for &c in columns {
        let what = format!("{strategy}: {c}");
        if c == "tier" {
            assert_eq!(col(out, c).data_type(), &DataType::Utf8, "{what}");
            let fill = most_frequent(t.extra.tier.iter().flatten().cloned()).unwrap();
            let want: Vec<Option<String>> = t
                .extra
                .tier
                .iter()
                .map(|x| Some(x.clone().unwrap_or_else(|| fill.clone())))
                .collect();
            assert_eq!(out_str(out, c), want, "{what}");
            continue;
        }
        let input = t.numbers(c);
        let want_type = match (c, strategy) {
            ("ratio", _) => DataType::Float32,
            ("qty", "most-frequent") => DataType::Int32,
            _ => DataType::Float64,
        };
        assert_eq!(col(out, c).data_type(), &want_type, "{what}");
        let got = out_f64(out, c);
        let fill = numeric_fill(&input, strategy);
        // float32 columns are filled with the statistic rounded to float32.
        let fill = fill.map(|f| if c == "ratio" { f as f32 as f64 } else { f });
        for (i, (x, g)) in input.iter().zip(&got).enumerate() {
            let want = match x {
                Some(x) if !x.is_nan() => Some(*x),
                _ => fill,
            };
            match (want, g) {
                (None, None) => {}
                (Some(w), Some(g)) if close(w, *g) => {}
                _ => panic!("{what}: row {i}: input {x:?}, expected {want:?}, got {g:?}"),
            }
        }
        if fill.is_some() {
            assert_eq!(col(out, c).null_count(), 0, "{what}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// min-max-scaler

const PARTITIONINGS: [(usize, usize); 4] = [(1, 1), (2, 2), (7, 2), (64, 2)];

#[test]
fn min_max_scaler_matches_the_reference_for_any_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::new(rows_with_extremes(3000, 61));
    t.write(dir.path(), "in.parquet");
    let params = r#"columns = ["amount", "score", "flat", "qty", "hole"], min = -1, max = 3.5"#;
    let mut first: Option<RecordBatch> = None;
    for (partitions, workers) in PARTITIONINGS {
        let (report, out) = run_plugin(
            dir.path(),
            "in.parquet",
            partitions,
            workers,
            "min-max-scaler",
            params,
        );
        assert!(
            report.contains("fitted in 1 pass over the input"),
            "{report}"
        );
        check_min_max(&t, &out, -1.0, 3.5);
        // The extremes are the ends of the range.
        assert_eq!(out_f64(&out, "amount")[1], Some(3.5));
        assert_eq!(out_f64(&out, "amount")[2], Some(-1.0));
        assert!(out_f64(&out, "amount")[4].unwrap().is_nan());
        match &first {
            Some(f) => check_same(&format!("{partitions} partitions"), f, &out, &SCALED),
            None => first = Some(out),
        }
    }
    // Default range [0, 1].
    let (_, out) = run_plugin(
        dir.path(),
        "in.parquet",
        3,
        2,
        "min-max-scaler",
        r#"columns = ["amount", "score", "flat", "qty", "hole"]"#,
    );
    check_min_max(&t, &out, 0.0, 1.0);
}

// ---------------------------------------------------------------------------------------------
// robust-scaler

#[test]
fn robust_scaler_matches_the_reference_for_any_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::new(rows_with_extremes(3000, 62));
    t.write(dir.path(), "in.parquet");
    let columns = r#"columns = ["amount", "score", "flat", "qty", "hole"]"#;
    let mut first: Option<RecordBatch> = None;
    for (partitions, workers) in PARTITIONINGS {
        let (report, out) = run_plugin(
            dir.path(),
            "in.parquet",
            partitions,
            workers,
            "robust-scaler",
            columns,
        );
        assert!(
            report.contains("fitted in 1 pass over the input"),
            "{report}"
        );
        check_robust(&t, &out, true, true);
        // IQR 0: scale 1, so the constant column becomes 0.
        assert!(out_f64(&out, "flat").iter().all(|x| *x == Some(0.0)));
        match &first {
            Some(f) => check_same(&format!("{partitions} partitions"), f, &out, &SCALED),
            None => first = Some(out),
        }
    }
    for (center, scale) in [(false, true), (true, false), (false, false)] {
        let params = format!("{columns}, with-centering = {center}, with-scaling = {scale}");
        let (_, out) = run_plugin(dir.path(), "in.parquet", 7, 2, "robust-scaler", &params);
        check_robust(&t, &out, center, scale);
    }
}

/// Beyond 100 000 distinct values (`amount`) the quartiles come from the sketch: within the
/// documented bound of the true ones, and identical (not just close) for any partitioning,
/// since bucket counts add. A column of as many rows with 1001 distinct values (`k`) stays
/// exact.
#[test]
fn robust_scaler_sketch_path_is_within_its_bound_and_partition_independent() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::new(rows_with_extremes(150_000, 63));
    t.write(dir.path(), "in.parquet");
    let alpha = 0.001;
    let mut first: Option<serde_json::Value> = None;
    for (partitions, workers) in [(1, 1), (7, 2), (64, 2)] {
        let p = pipeline(
            dir.path(),
            "in.parquet",
            partitions,
            workers,
            &[("robust-scaler", r#"columns = ["amount", "k"]"#)],
            "out.parquet",
        );
        let fitted_path = dir.path().join(format!("fitted-{partitions}.json"));
        let mut c = quiver();
        c.arg("fit").arg(&p).arg("-o").arg(&fitted_path);
        run_ok(c);
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&fitted_path).unwrap()).unwrap();
        let fitted = file["plugins"][0]["fitted"].clone();
        for (i, name) in ["amount", "k"].into_iter().enumerate() {
            let fit = &fitted["columns"][i];
            let v = present_sorted(&t.numbers(name));
            assert_eq!(fit["count"].as_u64().unwrap(), v.len() as u64);
            let exact = name == "k";
            assert_eq!(fit["exact"], exact, "{name}: {fit}");
            // |Q̂(q) − Q(q)| ≤ α·max(|x_lo|, |x_lo+1|) for each quartile; 0 when exact.
            let bound = |q: f64| {
                let lo = (q * (v.len() - 1) as f64).floor() as usize;
                let alpha = if exact { 0.0 } else { alpha };
                alpha * v[lo].abs().max(v[lo + 1].abs()) * (1.0 + 1e-9)
            };
            let center = fit["center"].as_f64().unwrap();
            let scale = fit["scale"].as_f64().unwrap();
            let m = quantile(&v, 0.5);
            assert!((center - m).abs() <= bound(0.5), "{name}: {center} vs {m}");
            let iqr = quantile(&v, 0.75) - quantile(&v, 0.25);
            assert!(
                (scale - iqr).abs() <= bound(0.25) + bound(0.75),
                "{name}: {scale} vs {iqr}"
            );
        }
        match &first {
            Some(f) => assert_eq!(f, &fitted, "{partitions} partitions"),
            None => first = Some(fitted),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// imputer

#[test]
fn imputer_strategies_match_the_reference_for_any_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::new(rows_with_extremes(3000, 64));
    t.write(dir.path(), "in.parquet");
    for strategy in ["mean", "median", "most-frequent"] {
        let mut columns = vec!["amount", "qty", "ratio", "hole", "flat"];
        if strategy == "most-frequent" {
            columns.push("tier");
        }
        let list = columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let params = format!("columns = [{list}], strategy = \"{strategy}\"");
        let mut first: Option<RecordBatch> = None;
        for (partitions, workers) in PARTITIONINGS {
            let (report, out) = run_plugin(
                dir.path(),
                "in.parquet",
                partitions,
                workers,
                "imputer",
                &params,
            );
            assert!(report.contains("fitted in 1 pass"), "{report}");
            check_imputer(&t, &out, strategy, &columns);
            // Columns the imputer does not list pass through.
            assert_eq!(out_str(&out, "region").len(), t.rows.len());
            match &first {
                Some(f) => check_same(strategy, f, &out, &["amount", "qty", "ratio"]),
                None => first = Some(out),
            }
        }
    }
}

#[test]
fn imputer_most_frequent_breaks_ties_to_the_smallest_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Table::new(generate(40, 65));
    // 5 and −2 three times each, the rest once or null: −2 wins. Text: "b" and "a" tie.
    for (i, q) in t.extra.qty.iter_mut().enumerate() {
        *q = match i {
            0..=2 => Some(5),
            3..=5 => Some(-2),
            6..=9 => None,
            _ => Some(100 + i as i32),
        };
    }
    for (i, s) in t.extra.tier.iter_mut().enumerate() {
        *s = match i {
            0..=2 => Some("b".into()),
            3..=5 => Some("a".into()),
            6 => None,
            _ => Some(format!("z{i}")),
        };
    }
    t.write(dir.path(), "in.parquet");
    let params = r#"columns = ["qty", "tier"], strategy = "most-frequent""#;
    // 64 partitions over 40 rows: most partitions are empty.
    let (_, out) = run_plugin(dir.path(), "in.parquet", 64, 2, "imputer", params);
    check_imputer(&t, &out, "most-frequent", &["qty", "tier"]);
    assert_eq!(out_i32(&out, "qty")[7], Some(-2));
    assert_eq!(out_str(&out, "tier")[6].as_deref(), Some("a"));
}

#[test]
fn imputer_constant_needs_no_fit_and_keeps_the_types() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::new(rows_with_extremes(500, 66));
    t.write(dir.path(), "in.parquet");
    let params = r#"columns = ["amount", "qty", "ratio", "tier", "hole"], strategy = "constant", fill-value = "7""#;
    let (report, out) = run_plugin(dir.path(), "in.parquet", 64, 2, "imputer", params);
    assert!(!report.contains("fitted in"), "nothing to fit: {report}");
    let types = [
        ("amount", DataType::Float64),
        ("qty", DataType::Int32),
        ("ratio", DataType::Float32),
        ("tier", DataType::Utf8),
        ("hole", DataType::Float64),
    ];
    for (c, ty) in types {
        assert_eq!(col(&out, c).data_type(), &ty, "{c}");
        assert_eq!(col(&out, c).null_count(), 0, "{c}");
    }
    for c in ["amount", "qty", "ratio", "hole"] {
        let want: Vec<Option<f64>> = t
            .numbers(c)
            .iter()
            .map(|x| Some(x.filter(|x| !x.is_nan()).unwrap_or(7.0)))
            .collect();
        assert_close_columns(c, &want, &out_f64(&out, c));
    }
    let want: Vec<Option<String>> = t
        .extra
        .tier
        .iter()
        .map(|x| Some(x.clone().unwrap_or_else(|| "7".into())))
        .collect();
    assert_eq!(out_str(&out, "tier"), want);
    // `quiver fit` has nothing to fit either.
    let p = pipeline(
        dir.path(),
        "in.parquet",
        2,
        2,
        &[("imputer", params)],
        "x.parquet",
    );
    let mut c = quiver();
    c.arg("fit")
        .arg(&p)
        .arg("-o")
        .arg(dir.path().join("f.json"));
    let msg = run_ok(c);
    assert!(msg.contains("fitted 0 plugins"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// bucketize

#[test]
fn bucketize_with_given_boundaries_is_bisect_right() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = rows_with_extremes(2000, 67);
    // Values exactly on boundaries go to the bucket above.
    rows[5].amount = Some(0.0);
    rows[6].amount = Some(250.0);
    rows[7].amount = Some(-100.0);
    rows[8].amount = Some(-0.0);
    let t = Table::new(rows);
    t.write(dir.path(), "in.parquet");
    let amount_b = [-100.0, 0.0, 0.5, 250.0];
    let score_b = [-10.0, 30.0, 50.0];
    let p = pipeline(
        dir.path(),
        "in.parquet",
        7,
        2,
        &[
            (
                "bucketize",
                r#"column = "amount", boundaries = ["-100", "0", "0.5", "2.5e2"]"#,
            ),
            (
                "bucketize",
                r#"column = "score", boundaries = ["-10", "30", "50"], output = "score_bucket""#,
            ),
            ("bucketize", r#"column = "hole", boundaries = ["1"]"#),
        ],
        "out.parquet",
    );
    let mut c = quiver();
    c.arg("run").arg(&p);
    let report = run_ok(c);
    assert!(!report.contains("fitted in"), "nothing to fit: {report}");
    let out = sorted_by_id(&dir.path().join("out.parquet"));
    assert_eq!(col(&out, "amount").data_type(), &DataType::Int32);
    let want: Vec<Option<i32>> = t
        .numbers("amount")
        .iter()
        .map(|x| x.filter(|x| !x.is_nan()).map(|x| bucket(&amount_b, x)))
        .collect();
    assert_eq!(out_i32(&out, "amount"), want);
    assert_eq!(
        &want[1..9],
        &[
            Some(4),
            Some(0),
            None,
            None,
            Some(2),
            Some(4),
            Some(1),
            Some(2)
        ]
    );
    // `output` adds a column; the input passes through.
    let want: Vec<Option<i32>> = t
        .rows
        .iter()
        .map(|r| Some(bucket(&score_b, r.score as f64)))
        .collect();
    assert_eq!(out_i32(&out, "score_bucket"), want);
    let score: Vec<Option<i32>> = t.rows.iter().map(|r| Some(r.score)).collect();
    assert_eq!(out_i32(&out, "score"), score);
    assert_eq!(col(&out, "hole").null_count(), t.rows.len());
}

#[test]
fn bucketize_with_fitted_quantiles_matches_the_reference_for_any_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::new(rows_with_extremes(3000, 68));
    t.write(dir.path(), "in.parquet");
    let plugins = [
        ("bucketize", r#"column = "amount", quantiles = 4"#),
        (
            "bucketize",
            r#"column = "qty", quantiles = 20, output = "qty_bucket""#,
        ),
        ("bucketize", r#"column = "flat", quantiles = 3"#),
        ("bucketize", r#"column = "hole", quantiles = 5"#),
    ];
    let checks = [
        ("amount", "amount", 4),
        ("qty", "qty_bucket", 20),
        ("flat", "flat", 3),
        ("hole", "hole", 5),
    ];
    let mut first: Option<RecordBatch> = None;
    for (partitions, workers) in PARTITIONINGS {
        let sink = format!("q-{partitions}.parquet");
        let p = pipeline(
            dir.path(),
            "in.parquet",
            partitions,
            workers,
            &plugins,
            &sink,
        );
        let mut c = quiver();
        c.arg("run").arg(&p);
        let report = run_ok(c);
        assert!(report.contains("fitted in 1 pass"), "{report}");
        let out = sorted_by_id(&dir.path().join(&sink));
        for (input, output, n) in checks {
            let values = t.numbers(input);
            let b = quantile_boundaries(&values, n);
            let want: Vec<Option<i32>> = values
                .iter()
                .map(|x| x.filter(|x| !x.is_nan()).map(|x| bucket(&b, x)))
                .collect();
            assert_eq!(
                out_i32(&out, output),
                want,
                "{input}, {partitions} partitions"
            );
            if input == "amount" {
                // Equal-frequency: each quartile holds about a quarter of the values.
                for k in 0..4 {
                    let n = want.iter().filter(|x| **x == Some(k)).count();
                    assert!((640..=740).contains(&n), "bucket {k}: {n}");
                }
            }
        }
        // qty has 17 distinct values: fewer than 19 boundaries after deduplication.
        assert!(quantile_boundaries(&t.numbers("qty"), 20).len() < 19);
        // The constant column has one boundary (7.5): every value is in bucket 1.
        assert!(out_i32(&out, "flat").iter().all(|x| *x == Some(1)));
        match &first {
            Some(f) => check_same("quantiles", f, &out, &["amount", "qty_bucket", "flat"]),
            None => first = Some(out),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Few rows, many partitions

/// 64 partitions over 30 rows: most partitions are empty, and every plugin still matches its
/// reference.
#[test]
fn every_plugin_handles_empty_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::new(rows_with_extremes(30, 69));
    t.write(dir.path(), "in.parquet");
    let cols = r#"columns = ["amount", "score", "flat", "qty", "hole"]"#;
    let (_, out) = run_plugin(dir.path(), "in.parquet", 64, 2, "min-max-scaler", cols);
    check_min_max(&t, &out, 0.0, 1.0);
    let (_, out) = run_plugin(dir.path(), "in.parquet", 64, 2, "robust-scaler", cols);
    check_robust(&t, &out, true, true);
    for strategy in ["mean", "median", "most-frequent"] {
        let params =
            format!(r#"columns = ["amount", "qty", "ratio", "hole"], strategy = "{strategy}""#);
        let (_, out) = run_plugin(dir.path(), "in.parquet", 64, 2, "imputer", &params);
        check_imputer(&t, &out, strategy, &["amount", "qty", "ratio", "hole"]);
    }
    let (_, out) = run_plugin(
        dir.path(),
        "in.parquet",
        64,
        2,
        "bucketize",
        r#"column = "amount", quantiles = 3"#,
    );
    let values = t.numbers("amount");
    let b = quantile_boundaries(&values, 3);
    let want: Vec<Option<i32>> = values
        .iter()
        .map(|x| x.filter(|x| !x.is_nan()).map(|x| bucket(&b, x)))
        .collect();
    assert_eq!(out_i32(&out, "amount"), want);
}

// ---------------------------------------------------------------------------------------------
// Bad inputs

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::new(generate(200, 70));
    t.write(dir.path(), "in.parquet");
    let mut inf = Table::new(generate(200, 71));
    inf.rows[17].amount = Some(f64::INFINITY);
    inf.write(dir.path(), "inf.parquet");
    let cases: [(&str, &str, &str, &[&str]); 16] = [
        // A text column for a numeric scaler, found when the plan is made.
        (
            "in.parquet",
            "min-max-scaler",
            r#"columns = ["email"]"#,
            &["`min-max-scaler`", "email", "Utf8"],
        ),
        (
            "in.parquet",
            "min-max-scaler",
            r#"columns = ["amount"], min = 2, max = 1"#,
            &[
                "`min-max-scaler`",
                "`min` (2) must be smaller than `max` (1)",
            ],
        ),
        (
            "in.parquet",
            "min-max-scaler",
            r#"columns = ["nope"]"#,
            &["`min-max-scaler`", "column `nope` not found"],
        ),
        (
            "inf.parquet",
            "min-max-scaler",
            r#"columns = ["amount"]"#,
            &[
                "`min-max-scaler`",
                "column `amount` holds an infinite value",
            ],
        ),
        (
            "in.parquet",
            "robust-scaler",
            r#"columns = ["region"]"#,
            &["`robust-scaler`", "region", "Utf8"],
        ),
        (
            "inf.parquet",
            "robust-scaler",
            r#"columns = ["amount"]"#,
            &["`robust-scaler`", "column `amount` holds an infinite value"],
        ),
        (
            "in.parquet",
            "imputer",
            r#"columns = ["amount"], strategy = "mode""#,
            &["`imputer`", "unknown strategy `mode`"],
        ),
        (
            "in.parquet",
            "imputer",
            r#"columns = ["qty"], strategy = "constant", fill-value = "abc""#,
            &["`imputer`", "column `qty`", "\"abc\" is not a valid Int32"],
        ),
        (
            "in.parquet",
            "imputer",
            r#"columns = ["qty"], strategy = "constant", fill-value = "3.5""#,
            &["`imputer`", "column `qty`", "\"3.5\""],
        ),
        (
            "in.parquet",
            "imputer",
            r#"columns = ["qty"], strategy = "constant""#,
            &["`imputer`", "needs a `fill-value`"],
        ),
        (
            "in.parquet",
            "imputer",
            r#"columns = ["tier"], strategy = "mean""#,
            &[
                "`imputer`",
                "column `tier` has type Utf8",
                "strategy `mean`",
            ],
        ),
        (
            "in.parquet",
            "imputer",
            r#"columns = ["qty"], fill-value = "1""#,
            &["`imputer`", "only used with strategy `constant`"],
        ),
        (
            "in.parquet",
            "bucketize",
            r#"column = "amount", boundaries = ["5", "1"]"#,
            &["`bucketize`", "strictly increasing"],
        ),
        (
            "in.parquet",
            "bucketize",
            r#"column = "amount", boundaries = ["1", "ten"]"#,
            &["`bucketize`", "\"ten\" is not a number"],
        ),
        (
            "in.parquet",
            "bucketize",
            r#"column = "email", quantiles = 4"#,
            &["`bucketize`", "email", "Utf8"],
        ),
        (
            "in.parquet",
            "bucketize",
            r#"column = "amount""#,
            &["`bucketize`", "`boundaries` or a number of `quantiles`"],
        ),
    ];
    for (input, name, params, expected) in cases {
        let err = run_err_of(dir.path(), input, name, params);
        for e in expected {
            assert!(
                err.contains(e),
                "{name} {params}: expected {e:?} in:\n{err}"
            );
        }
    }
    let err = run_err_of(
        dir.path(),
        "in.parquet",
        "bucketize",
        r#"column = "amount", boundaries = ["1"], quantiles = 3"#,
    );
    assert!(err.contains("not both"), "{err}");
    let err = run_err_of(
        dir.path(),
        "inf.parquet",
        "bucketize",
        r#"column = "amount", quantiles = 3"#,
    );
    assert!(err.contains("infinite") && err.contains("amount"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Quantiles of many rows with few distinct values, against numpy itself

/// numpy on the values of `n` (one per line in `values.txt`): the boundaries bucketize fits
/// with `quantiles = 20` (np.quantile, method "linear", deduplicated), every value's bucket
/// (np.searchsorted, side "right"), the median and the quartiles.
const NUMPY_QUANTILES: &str = r#"
import json, sys
import numpy as np
x = np.loadtxt(sys.argv[1], dtype=np.int64).astype(np.float64)
b = np.unique(np.quantile(x, [i / 20 for i in range(1, 20)], method="linear"))
print(json.dumps({
    "boundaries": b.tolist(),
    "buckets": np.searchsorted(b, x, side="right").tolist(),
    "median": float(np.median(x)),
    "q25": float(np.quantile(x, 0.25)),
    "q75": float(np.quantile(x, 0.75)),
}))
"#;

/// A column of 200 000 integers with 50 distinct values is past the count where quantiles
/// used to be sketched, but its distinct values fit the exact summary: the fitted quantiles
/// are numpy's exactly, every row lands in numpy's bucket, and the fit says it is exact.
#[test]
fn quantiles_of_many_rows_with_few_distinct_values_are_numpys() {
    let dir = tempfile::tempdir().unwrap();
    let n = write_few_distinct_ints(&dir.path().join("many.parquet"), 200_000);
    let values: String = n.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(dir.path().join("values.txt"), values).unwrap();
    let mut py = std::process::Command::new(python_with_numpy());
    py.arg("-c")
        .arg(NUMPY_QUANTILES)
        .arg(dir.path().join("values.txt"));
    let (ok, out, err) = run(py);
    assert!(ok, "numpy failed: {err}");
    let numpy: serde_json::Value = serde_json::from_str(&out).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let want_buckets: Vec<Option<i32>> = numpy["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| Some(b.as_i64().unwrap() as i32))
        .collect();

    let fit = |name: &str, params: &str| {
        let p = pipeline(
            dir.path(),
            "many.parquet",
            7,
            2,
            &[(name, params)],
            "f.parquet",
        );
        let fitted = dir.path().join("fitted.json");
        let mut c = quiver();
        c.arg("fit").arg(&p).arg("-o").arg(&fitted);
        run_ok(c);
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&fitted).unwrap()).unwrap();
        file["plugins"][0]["fitted"].clone()
    };
    let bucketize = r#"column = "n", quantiles = 20, output = "bucket""#;
    let (_, out) = run_plugin(dir.path(), "many.parquet", 7, 2, "bucketize", bucketize);
    let got_buckets = out_i32(&out, "bucket");
    let agree = got_buckets
        .iter()
        .zip(&want_buckets)
        .filter(|(g, w)| g == w)
        .count();
    let fitted = fit("bucketize", bucketize);
    eprintln!(
        "bucketize, 200 000 rows, 50 distinct values: {:.1} % of buckets agree with numpy; \
         boundaries {} (numpy {})",
        100.0 * agree as f64 / n.len() as f64,
        fitted["boundaries"],
        numpy["boundaries"]
    );
    assert_eq!(floats(&fitted["boundaries"]), floats(&numpy["boundaries"]));
    assert_eq!(agree, n.len(), "every bucket is numpy's");
    assert_eq!(fitted["exact"], true, "{fitted}");

    let robust = fit("robust-scaler", r#"columns = ["n"]"#);
    let (median, q25, q75) = (
        numpy["median"].as_f64().unwrap(),
        numpy["q25"].as_f64().unwrap(),
        numpy["q75"].as_f64().unwrap(),
    );
    assert_eq!(robust["columns"][0]["center"].as_f64(), Some(median));
    assert_eq!(robust["columns"][0]["scale"].as_f64(), Some(q75 - q25));
    assert_eq!(robust["columns"][0]["exact"], true, "{robust}");
    let imputer = fit("imputer", r#"columns = ["n"], strategy = "median""#);
    assert_eq!(
        imputer["columns"][0]["fill"]["float"].as_f64(),
        Some(median)
    );
    assert_eq!(imputer["columns"][0]["exact"], true, "{imputer}");
}
