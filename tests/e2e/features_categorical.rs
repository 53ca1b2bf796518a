//! Categorical feature plugins (`one-hot`, `ordinal-encoder`, `count-encoder`,
//! `target-encoder`): outputs against naive single-threaded references written here from the
//! textbook definitions, the same results for 1, 2, 7 and 64 partitions (64 over a few rows
//! leaves partitions empty), `quiver fit` on one dataset and `quiver run --fitted` on another
//! with unseen categories, and bad input refused with a clear message and nothing written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, Schema};

use crate::support::*;

/// One generated row. `cat` is text, `icat` an integer category; `y` is the target.
#[derive(Debug, Clone)]
struct Rec {
    id: i64,
    cat: Option<String>,
    icat: Option<i32>,
    y: Option<f64>,
}

/// A small LCG, so the test owns its data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// `n` rows: ~50 skewed common categories per column plus rare ones (seen once or twice),
/// about 6% null categories and 5% null targets. Text categories include upper case and
/// non-ASCII ones, so sorting by code point matters; integer ones include negatives.
/// With `unseen`, about 8% of the rows hold categories no training set has.
fn records(n: usize, seed: u64, unseen: bool) -> Vec<Rec> {
    let mut g = Lcg(seed.wrapping_mul(0x9e3779b97f4a7c15) ^ 0x5851f42d4c957f2d);
    const SPECIAL: [&str; 4] = ["Zebra", "ébène", "apple", "Äpfel"];
    (0..n)
        .map(|i| {
            // Skewed: the square of a uniform index favours small ones.
            let u = g.next() % 1000;
            let common = (u * u / 20_000) as usize; // 0..=49
            let r = g.next() % 100;
            let cat = match r {
                0..=5 => None,
                6 if unseen => Some(format!("new-{}", g.next() % 5)),
                7 if unseen => Some(format!("new-{}", g.next() % 5)),
                8 => Some(format!("rare-{}", g.next() % 40)),
                9 => Some(SPECIAL[(g.next() % 4) as usize].to_string()),
                _ => Some(format!("c{common:02}")),
            };
            let r2 = g.next() % 100;
            let icat = match r2 {
                0..=5 => None,
                6 | 7 if unseen => Some(5000 + (g.next() % 5) as i32),
                8 => Some(1_000_000 + (g.next() % 40) as i32),
                _ => Some(common as i32 - 10),
            };
            // A target that depends on the category, plus noise; a few large magnitudes.
            let y = (!g.next().is_multiple_of(20)).then(|| {
                let noise = (g.next() % 10_000) as f64 / 1000.0;
                let big = if g.next().is_multiple_of(97) {
                    1e9
                } else {
                    0.0
                };
                common as f64 * 0.75 + noise + big
            });
            Rec {
                id: i as i64,
                cat,
                icat,
                y,
            }
        })
        .collect()
}

/// Writes rows as Parquet (small row groups, so there are many batches). Without `with_y` the
/// target column is absent, as in serving data.
fn write_records(path: &Path, rows: &[Rec], with_y: bool) {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("cat", DataType::Utf8, true),
        Field::new("icat", DataType::Int32, true),
        Field::new("label", DataType::Utf8, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.cat.as_deref()),
        )),
        Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.icat))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| format!("L{}", r.id % 3)),
        )),
    ];
    if with_y {
        fields.push(Field::new("y", DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.y))));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(700))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A pipeline running one plugin with `params` (TOML inline-table body) over `input`, hash
/// partitioned by `id` into `partitions` (none: whole batches in input order), into `sink`.
fn pipeline(
    dir: &Path,
    input: &str,
    partitions: Option<usize>,
    plugin_name: &str,
    params: &str,
    sink: &str,
) -> PathBuf {
    let path = dir.join(format!(
        "{plugin_name}-{}-{}.toml",
        partitions.unwrap_or(0),
        sink.replace('.', "_")
    ));
    let partition = partitions.map_or(String::new(), |n| {
        format!("[partition]\nby = [\"id\"]\ncount = {n}\n")
    });
    std::fs::write(
        &path,
        format!(
            "workers = 2\n[source]\npaths = [\"{input}\"]\nbatch-size = 300\n{partition}[[plugin]]\npath = \"{}\"\nparams = {{ {params} }}\n[sink]\npath = \"{sink}\"\noverwrite = true\n",
            plugin(plugin_name).display()
        ),
    )
    .unwrap();
    path
}

/// `quiver run <pipeline>` (fitting on its input) and the output sorted by `id`.
fn run_sorted(dir: &Path, pipeline: &Path, sink: &str) -> RecordBatch {
    let mut c = quiver();
    c.arg("run").arg(pipeline);
    let report = run_ok(c);
    assert!(
        report.contains("fitted in 1 pass over the input"),
        "{report}"
    );
    sorted_output(&dir.join(sink))
}

/// `quiver fit` on `train`, then `quiver run --fitted` on `serve`; the output sorted by `id`
/// and the fitted parameters of the plugin.
fn fit_then_apply(
    dir: &Path,
    train: &str,
    serve: &str,
    plugin_name: &str,
    params: &str,
) -> (RecordBatch, serde_json::Value) {
    let p = pipeline(dir, train, Some(3), plugin_name, params, "served.parquet");
    let fitted = dir.join(format!("{plugin_name}-fitted.json"));
    let mut c = quiver();
    c.arg("fit").arg(&p).arg("-o").arg(&fitted);
    let msg = run_ok(c);
    assert!(msg.contains("fitted 1 plugin in 1 pass"), "{msg}");
    let mut c = quiver();
    c.arg("run")
        .arg(&p)
        .arg("-i")
        .arg(dir.join(serve))
        .arg("--fitted")
        .arg(&fitted);
    let report = run_ok(c);
    assert!(report.contains("fitted parameters from"), "{report}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fitted).unwrap()).unwrap();
    assert_eq!(json["plugins"][0]["name"], plugin_name);
    (
        sorted_output(&dir.join("served.parquet")),
        json["plugins"][0]["fitted"].clone(),
    )
}

/// Every batch of a Parquet file as one batch, sorted by `id`.
fn sorted_output(path: &Path) -> RecordBatch {
    let batches = read_parquet(path);
    assert!(!batches.is_empty(), "no output in {}", path.display());
    let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let order =
        arrow::compute::sort_to_indices(all.column_by_name("id").unwrap(), None, None).unwrap();
    arrow::compute::take_record_batch(&all, &order).unwrap()
}

fn column_names(b: &RecordBatch) -> Vec<String> {
    b.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn ids(b: &RecordBatch) -> Vec<i64> {
    b.column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name:?} in {:?}", column_names(b)))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The partition counts every fit is checked under. 64 partitions over the 40-row datasets
/// leave many partitions empty.
const PARTITIONINGS: [usize; 4] = [1, 2, 7, 64];

// ---------------------------------------------------------------------------------------------
// Naive references: one category column at a time, from the definitions.

/// The two category columns of the rows, as text (`cat`) and integers (`icat`).
fn text_values(rows: &[Rec]) -> Vec<Option<String>> {
    rows.iter().map(|r| r.cat.clone()).collect()
}

fn int_values(rows: &[Rec]) -> Vec<Option<i32>> {
    rows.iter().map(|r| r.icat).collect()
}

/// Count of every non-null value.
fn counts<T: Ord + Clone>(values: &[Option<T>]) -> BTreeMap<T, u64> {
    let mut m = BTreeMap::new();
    for v in values.iter().flatten() {
        *m.entry(v.clone()).or_insert(0) += 1;
    }
    m
}

/// One-hot reference: the kept categories (sorted) and the infrequent ones.
fn one_hot_vocab<T: Ord + Clone>(
    values: &[Option<T>],
    max: Option<usize>,
) -> (Vec<T>, BTreeSet<T>) {
    let counts = counts(values);
    let mut by_freq: Vec<(T, u64)> = counts.into_iter().collect();
    // Most frequent first, ties by value.
    by_freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let keep = max.unwrap_or(usize::MAX).min(by_freq.len());
    let mut kept: Vec<T> = by_freq[..keep].iter().map(|(v, _)| v.clone()).collect();
    kept.sort();
    let infrequent = by_freq[keep..].iter().map(|(v, _)| v.clone()).collect();
    (kept, infrequent)
}

/// Checks the one-hot indicators of column `name` in `out` for the applied rows.
#[allow(clippy::too_many_arguments)]
fn check_one_hot<T: Ord + Clone + std::fmt::Display + std::fmt::Debug>(
    out: &RecordBatch,
    name: &str,
    fitted_on: &[Option<T>],
    applied: &[Option<T>],
    max: Option<usize>,
    unknown_to_other: bool,
) -> Vec<String> {
    let (kept, infrequent) = one_hot_vocab(fitted_on, max);
    let seen: BTreeSet<T> = fitted_on.iter().flatten().cloned().collect();
    let mut names: Vec<String> = kept.iter().map(|v| format!("{name}={v}")).collect();
    let has_other = !infrequent.is_empty() || unknown_to_other;
    if has_other {
        names.push(format!("{name}=__other__"));
    }
    for (k, col_name) in names.iter().enumerate() {
        let bits = col(out, col_name).as_boolean();
        assert_eq!(bits.null_count(), 0, "{col_name} has nulls");
        for (i, v) in applied.iter().enumerate() {
            let want = match v {
                None => false,
                Some(v) if k < kept.len() => *v == kept[k],
                Some(v) => infrequent.contains(v) || (unknown_to_other && !seen.contains(v)),
            };
            assert_eq!(bits.value(i), want, "{col_name}, row {i} holding {v:?}");
        }
    }
    names
}

/// Ordinal reference: the value's index in `vocab` (the sorted distinct values of the fit),
/// `unknown` if absent; null stays null.
fn ordinal_reference<T: Ord>(vocab: &[T], v: &Option<T>, unknown: i32) -> Option<i32> {
    v.as_ref()
        .map(|v| vocab.binary_search(v).map_or(unknown, |i| i as i32))
}

/// Target-encoding reference: (n·mean + m·μ) / (n + m) from the rows with a target.
fn target_reference<T: Ord + Clone>(
    fitted_on: &[Option<T>],
    y: &[Option<f64>],
    m: f64,
) -> (BTreeMap<T, f64>, f64) {
    let with_y: Vec<f64> = y.iter().flatten().copied().collect();
    let mu = with_y.iter().sum::<f64>() / with_y.len() as f64;
    let mut groups: BTreeMap<T, Vec<f64>> = BTreeMap::new();
    for (v, y) in fitted_on.iter().zip(y) {
        if let (Some(v), Some(y)) = (v, y) {
            groups.entry(v.clone()).or_default().push(*y);
        }
    }
    let enc = groups
        .into_iter()
        .map(|(v, ys)| {
            let n = ys.len() as f64;
            let mean = ys.iter().sum::<f64>() / n;
            (v, (n * mean + m * mu) / (n + m))
        })
        .collect();
    (enc, mu)
}

// ---------------------------------------------------------------------------------------------
// one-hot

/// Runs one-hot over `rows` under every partitioning, checks each against the reference, and
/// that the output (schema and values) is identical whatever the partitioning.
fn one_hot_everywhere(rows: &[Rec], params: &str, max: Option<usize>, other: bool) {
    let dir = tempfile::tempdir().unwrap();
    write_records(&dir.path().join("in.parquet"), rows, true);
    let mut first: Option<RecordBatch> = None;
    for n in PARTITIONINGS {
        let sink = format!("out-{n}.parquet");
        let p = pipeline(dir.path(), "in.parquet", Some(n), "one-hot", params, &sink);
        let out = run_sorted(dir.path(), &p, &sink);
        assert_eq!(ids(&out), rows.iter().map(|r| r.id).collect::<Vec<_>>());
        let text = check_one_hot(
            &out,
            "cat",
            &text_values(rows),
            &text_values(rows),
            max,
            other,
        );
        let int = check_one_hot(
            &out,
            "icat",
            &int_values(rows),
            &int_values(rows),
            max,
            other,
        );
        // The indicators take the input column's place; the inputs are dropped.
        let mut want = vec!["id".to_string()];
        want.extend(text);
        want.extend(int);
        want.extend(["label".to_string(), "y".to_string()]);
        assert_eq!(column_names(&out), want, "{n} partitions");
        match &first {
            Some(f) => assert_eq!(f, &out, "{n} partitions differ from 1"),
            None => first = Some(out),
        }
    }
}

#[test]
fn one_hot_matches_the_reference_for_any_partitioning() {
    let rows = records(3000, 1, false);
    // Sanity of the data itself: ~50 common categories, rare ones, nulls.
    let text = counts(&text_values(&rows));
    assert!(
        text.len() > 60 && text.values().any(|&c| c == 1),
        "{text:?}"
    );
    one_hot_everywhere(&rows, "columns = [\"cat\", \"icat\"]", None, false);
    one_hot_everywhere(
        &rows,
        "columns = [\"cat\", \"icat\"], max-categories = 12, handle-unknown = \"other\"",
        Some(12),
        true,
    );
    // Empty partitions, and a max-categories above the vocabulary size (no `__other__`).
    let small = records(40, 2, false);
    one_hot_everywhere(
        &small,
        "columns = [\"cat\", \"icat\"], max-categories = 1000",
        Some(1000),
        false,
    );
    // A max-categories that cuts between equally frequent categories: ties go by value.
    let k = tie_boundary(&text_values(&small));
    one_hot_everywhere(
        &small,
        &format!("columns = [\"cat\", \"icat\"], max-categories = {k}"),
        Some(k),
        false,
    );
}

/// A k such that the k-th and (k+1)-th most frequent values are equally frequent.
fn tie_boundary<T: Ord + Clone>(values: &[Option<T>]) -> usize {
    let mut freq: Vec<u64> = counts(values).into_values().collect();
    freq.sort_unstable_by(|a, b| b.cmp(a));
    (1..freq.len())
        .find(|&k| freq[k - 1] == freq[k])
        .expect("the data has equally frequent categories")
}

#[test]
fn one_hot_fit_then_apply_to_unseen_categories() {
    let dir = tempfile::tempdir().unwrap();
    let train = records(2500, 3, false);
    let serve = records(900, 4, true);
    write_records(&dir.path().join("train.parquet"), &train, true);
    write_records(&dir.path().join("serve.parquet"), &serve, false);
    assert!(serve
        .iter()
        .any(|r| r.cat.as_deref().is_some_and(|c| c.starts_with("new-"))));

    // ignore (default): unseen categories give all false; drop-input = false keeps the input.
    let (out, fitted) = fit_then_apply(
        dir.path(),
        "train.parquet",
        "serve.parquet",
        "one-hot",
        "columns = [\"cat\", \"icat\"], drop-input = false",
    );
    let text = check_one_hot(
        &out,
        "cat",
        &text_values(&train),
        &text_values(&serve),
        None,
        false,
    );
    let int = check_one_hot(
        &out,
        "icat",
        &int_values(&train),
        &int_values(&serve),
        None,
        false,
    );
    let mut want = vec!["id".to_string(), "cat".to_string()];
    want.extend(text);
    want.push("icat".to_string());
    want.extend(int);
    want.push("label".to_string());
    assert_eq!(column_names(&out), want);
    assert_eq!(
        col(&out, "cat").as_string::<i32>().value(5),
        serve[5].cat.as_deref().unwrap_or("")
    );
    // The fitted vocabulary is the sorted distinct values, integers as JSON numbers.
    let (kept, _) = one_hot_vocab(&int_values(&train), None);
    assert_eq!(
        fitted["columns"][1]["categories"],
        serde_json::json!(kept),
        "{fitted}"
    );
    assert_eq!(fitted["columns"][1]["kind"], "integer");

    // other: unseen (and infrequent) categories set `__other__`.
    let (out, _) = fit_then_apply(
        dir.path(),
        "train.parquet",
        "serve.parquet",
        "one-hot",
        "columns = [\"cat\", \"icat\"], handle-unknown = \"other\", max-categories = 20",
    );
    check_one_hot(
        &out,
        "cat",
        &text_values(&train),
        &text_values(&serve),
        Some(20),
        true,
    );
    check_one_hot(
        &out,
        "icat",
        &int_values(&train),
        &int_values(&serve),
        Some(20),
        true,
    );
    assert!(out.column_by_name("cat").is_none());
}

// ---------------------------------------------------------------------------------------------
// ordinal-encoder

fn check_ordinal(out: &RecordBatch, fit: &[Rec], applied: &[Rec], unknown: i32) {
    let cat = col(out, "cat").as_primitive::<Int32Type>();
    let icat = col(out, "icat").as_primitive::<Int32Type>();
    let tf: Vec<String> = counts(&text_values(fit)).into_keys().collect();
    let ti: Vec<i32> = counts(&int_values(fit)).into_keys().collect();
    for (i, r) in applied.iter().enumerate() {
        let got = |a: &arrow::array::Int32Array| a.is_valid(i).then(|| a.value(i));
        assert_eq!(
            got(cat),
            ordinal_reference(&tf, &r.cat, unknown),
            "cat row {i}: {:?}",
            r.cat
        );
        assert_eq!(
            got(icat),
            ordinal_reference(&ti, &r.icat, unknown),
            "icat row {i}: {:?}",
            r.icat
        );
    }
}

#[test]
fn ordinal_encoder_matches_the_reference_for_any_partitioning() {
    for rows in [records(3000, 5, false), records(40, 6, false)] {
        let dir = tempfile::tempdir().unwrap();
        write_records(&dir.path().join("in.parquet"), &rows, true);
        let mut first: Option<RecordBatch> = None;
        for n in PARTITIONINGS {
            let sink = format!("out-{n}.parquet");
            let params = "columns = [\"cat\", \"icat\"]";
            let p = pipeline(
                dir.path(),
                "in.parquet",
                Some(n),
                "ordinal-encoder",
                params,
                &sink,
            );
            let out = run_sorted(dir.path(), &p, &sink);
            assert_eq!(column_names(&out), ["id", "cat", "icat", "label", "y"]);
            assert_eq!(
                out.schema().field_with_name("cat").unwrap().data_type(),
                &DataType::Int32
            );
            check_ordinal(&out, &rows, &rows, -1);
            match &first {
                Some(f) => assert_eq!(f, &out, "{n} partitions differ from 1"),
                None => first = Some(out),
            }
        }
    }
}

#[test]
fn ordinal_encoder_fit_then_apply_to_unseen_categories() {
    let dir = tempfile::tempdir().unwrap();
    let train = records(2500, 7, false);
    let serve = records(900, 8, true);
    write_records(&dir.path().join("train.parquet"), &train, true);
    write_records(&dir.path().join("serve.parquet"), &serve, false);
    for (params, unknown) in [
        ("columns = [\"cat\", \"icat\"]", -1),
        (
            "columns = [\"cat\", \"icat\"], unknown-value = 100000",
            100_000,
        ),
    ] {
        let (out, fitted) = fit_then_apply(
            dir.path(),
            "train.parquet",
            "serve.parquet",
            "ordinal-encoder",
            params,
        );
        check_ordinal(&out, &train, &serve, unknown);
        assert!(col(&out, "cat")
            .as_primitive::<Int32Type>()
            .values()
            .contains(&unknown));
        let vocab: Vec<String> = counts(&text_values(&train)).into_keys().collect();
        assert_eq!(fitted["columns"][0]["categories"], serde_json::json!(vocab));
    }
}

// ---------------------------------------------------------------------------------------------
// count-encoder

fn check_count(out: &RecordBatch, fit: &[Rec], applied: &[Rec], normalize: bool) {
    let (tc, ic) = (counts(&text_values(fit)), counts(&int_values(fit)));
    let (tn, inn) = (
        tc.values().sum::<u64>() as f64,
        ic.values().sum::<u64>() as f64,
    );
    for (name, reference, n) in [("cat", 0, tn), ("icat", 1, inn)] {
        let column = col(out, name);
        for (i, r) in applied.iter().enumerate() {
            let want = if reference == 0 {
                r.cat.as_ref().map(|v| tc.get(v).copied().unwrap_or(0))
            } else {
                r.icat.as_ref().map(|v| ic.get(v).copied().unwrap_or(0))
            };
            if normalize {
                let a = column.as_primitive::<Float64Type>();
                let got = a.is_valid(i).then(|| a.value(i));
                match (want, got) {
                    (None, None) => {}
                    (Some(w), Some(g)) => {
                        assert!(
                            close(w as f64 / n, g),
                            "{name} row {i}: {} vs {g}",
                            w as f64 / n
                        )
                    }
                    other => panic!("{name} row {i}: {other:?}"),
                }
            } else {
                let a = column.as_primitive::<Int64Type>();
                let got = a.is_valid(i).then(|| a.value(i) as u64);
                assert_eq!(got, want, "{name} row {i}");
            }
        }
    }
}

#[test]
fn count_encoder_matches_the_reference_for_any_partitioning() {
    for rows in [records(3000, 9, false), records(40, 10, false)] {
        for normalize in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            write_records(&dir.path().join("in.parquet"), &rows, true);
            let params = format!("columns = [\"cat\", \"icat\"], normalize = {normalize}");
            let mut first: Option<RecordBatch> = None;
            for n in PARTITIONINGS {
                let sink = format!("out-{n}.parquet");
                let p = pipeline(
                    dir.path(),
                    "in.parquet",
                    Some(n),
                    "count-encoder",
                    &params,
                    &sink,
                );
                let out = run_sorted(dir.path(), &p, &sink);
                let want = if normalize {
                    DataType::Float64
                } else {
                    DataType::Int64
                };
                assert_eq!(
                    out.schema().field_with_name("icat").unwrap().data_type(),
                    &want
                );
                check_count(&out, &rows, &rows, normalize);
                match &first {
                    Some(f) => assert_eq!(f, &out, "{n} partitions differ from 1"),
                    None => first = Some(out),
                }
            }
        }
    }
}

#[test]
fn count_encoder_fit_then_apply_to_unseen_categories() {
    let dir = tempfile::tempdir().unwrap();
    let train = records(2500, 11, false);
    let serve = records(900, 12, true);
    write_records(&dir.path().join("train.parquet"), &train, true);
    write_records(&dir.path().join("serve.parquet"), &serve, false);
    for normalize in [false, true] {
        let params = format!("columns = [\"cat\", \"icat\"], normalize = {normalize}");
        let (out, fitted) = fit_then_apply(
            dir.path(),
            "train.parquet",
            "serve.parquet",
            "count-encoder",
            &params,
        );
        check_count(&out, &train, &serve, normalize);
        let non_null = train.iter().filter(|r| r.cat.is_some()).count();
        assert_eq!(fitted["columns"][0]["total"], non_null);
    }
}

// ---------------------------------------------------------------------------------------------
// target-encoder

fn check_target(out: &RecordBatch, fit: &[Rec], applied: &[Rec], m: f64) {
    let y: Vec<Option<f64>> = fit.iter().map(|r| r.y).collect();
    let (te, mu) = target_reference(&text_values(fit), &y, m);
    let (ie, _) = target_reference(&int_values(fit), &y, m);
    let cat = col(out, "cat").as_primitive::<Float64Type>();
    let icat = col(out, "icat").as_primitive::<Float64Type>();
    assert_eq!(cat.null_count() + icat.null_count(), 0);
    for (i, r) in applied.iter().enumerate() {
        let want = r
            .cat
            .as_ref()
            .and_then(|v| te.get(v))
            .copied()
            .unwrap_or(mu);
        assert!(
            close(want, cat.value(i)),
            "cat row {i} {:?}: {want} vs {}",
            r.cat,
            cat.value(i)
        );
        let want = r
            .icat
            .as_ref()
            .and_then(|v| ie.get(v))
            .copied()
            .unwrap_or(mu);
        assert!(
            close(want, icat.value(i)),
            "icat row {i} {:?}: {want} vs {}",
            r.icat,
            icat.value(i)
        );
    }
}

#[test]
fn target_encoder_matches_the_reference_for_any_partitioning() {
    for (rows, m) in [
        (records(3000, 13, false), 10.0),
        (records(3000, 13, false), 0.0),
        (records(40, 14, false), 2.5),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_records(&dir.path().join("in.parquet"), &rows, true);
        let params = format!("columns = [\"cat\", \"icat\"], target = \"y\", smoothing = {m:?}");
        let mut first: Option<RecordBatch> = None;
        for n in PARTITIONINGS {
            let sink = format!("out-{n}.parquet");
            let p = pipeline(
                dir.path(),
                "in.parquet",
                Some(n),
                "target-encoder",
                &params,
                &sink,
            );
            let out = run_sorted(dir.path(), &p, &sink);
            assert_eq!(column_names(&out), ["id", "cat", "icat", "label", "y"]);
            check_target(&out, &rows, &rows, m);
            // Within 1e-9 relative of each other, whatever the partitioning.
            match &first {
                Some(f) => {
                    for name in ["cat", "icat"] {
                        let a = col(f, name).as_primitive::<Float64Type>().values();
                        let b = col(&out, name).as_primitive::<Float64Type>().values();
                        assert!(
                            a.iter().zip(b.iter()).all(|(x, y)| close(*x, *y)),
                            "{name}, {n} partitions"
                        );
                    }
                }
                None => first = Some(out),
            }
        }
    }
}

#[test]
fn target_encoder_fit_then_apply_without_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let train = records(2500, 15, false);
    let serve = records(900, 16, true);
    write_records(&dir.path().join("train.parquet"), &train, true);
    // The serving data has no `y` column at all.
    write_records(&dir.path().join("serve.parquet"), &serve, false);
    let (out, fitted) = fit_then_apply(
        dir.path(),
        "train.parquet",
        "serve.parquet",
        "target-encoder",
        "columns = [\"cat\", \"icat\"], target = \"y\"",
    );
    check_target(&out, &train, &serve, 10.0);
    assert_eq!(column_names(&out), ["id", "cat", "icat", "label"]);
    let with_y = train.iter().filter(|r| r.y.is_some()).count();
    assert_eq!(fitted["count"], with_y);
    // Unseen and null categories both get the global mean.
    let mu = fitted["mean"].as_f64().unwrap();
    let cat = col(&out, "cat").as_primitive::<Float64Type>();
    for (i, r) in serve.iter().enumerate() {
        if r.cat.as_ref().is_none_or(|c| c.starts_with("new-")) {
            assert_eq!(cat.value(i), mu, "row {i}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// A directory with `train.parquet` (with `y`) and `serve.parquet` (unseen categories, no `y`).
fn bad_input_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_records(
        &dir.path().join("train.parquet"),
        &records(600, 17, false),
        true,
    );
    write_records(
        &dir.path().join("serve.parquet"),
        &records(300, 18, true),
        false,
    );
    dir
}

/// Files in `dir` other than the inputs and pipelines: must be none after a failure.
/// Files a failed run left, besides its inputs and the recordings of failing plugin calls.
fn leftovers(dir: &Path) -> Vec<String> {
    take_recordings(dir);
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".parquet") || n.starts_with("out"))
        .filter(|n| !n.ends_with(".toml") && !n.ends_with("fitted.json"))
        // The pipelines' lock and run history.
        .filter(|n| n != STATE_DIR)
        .collect();
    left.sort();
    left
}

/// `quiver run` of one plugin over `input`, expected to fail; checks nothing was written.
fn run_fails(dir: &Path, input: &str, plugin_name: &str, params: &str) -> String {
    let p = pipeline(dir, input, Some(2), plugin_name, params, "out.parquet");
    let mut c = quiver();
    c.arg("run").arg(&p);
    let err = run_err(c);
    assert!(!dir.join("out.parquet").exists(), "{err}");
    assert!(
        leftovers(dir).is_empty(),
        "left behind: {:?}\n{err}",
        leftovers(dir)
    );
    err
}

/// `quiver fit` of one plugin over `input`, expected to fail; checks no file was written.
fn fit_fails(dir: &Path, input: &str, plugin_name: &str, params: &str) -> String {
    let p = pipeline(dir, input, Some(2), plugin_name, params, "out.parquet");
    let fitted = dir.join("bad-fit.json");
    let mut c = quiver();
    c.arg("fit").arg(&p).arg("-o").arg(&fitted);
    let err = run_err(c);
    assert!(!fitted.exists(), "{err}");
    assert!(
        leftovers(dir).is_empty(),
        "left behind: {:?}\n{err}",
        leftovers(dir)
    );
    err
}

#[test]
fn unseen_category_with_handle_unknown_error_names_plugin_column_row_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let train = records(500, 19, false);
    // One batch, one worker, no partitioning: the batch's row 7 is the file's row 7.
    let mut serve: Vec<Rec> = train[..10].to_vec();
    serve[7].cat = Some("never-seen".into());
    serve[3].icat = Some(-987_654);
    write_records(&dir.path().join("train.parquet"), &train, true);
    write_records(&dir.path().join("serve.parquet"), &serve, false);
    for (plugin_name, params) in [
        ("one-hot", "columns = [\"cat\"], handle-unknown = \"error\""),
        (
            "ordinal-encoder",
            "columns = [\"cat\"], handle-unknown = \"error\"",
        ),
    ] {
        let p = pipeline(
            dir.path(),
            "train.parquet",
            None,
            plugin_name,
            params,
            "out.parquet",
        );
        let fitted = dir.path().join("fitted.json");
        let mut c = quiver();
        c.arg("fit").arg(&p).arg("-o").arg(&fitted);
        run_ok(c);
        // Fitting and transforming the training data itself is fine: nothing is unknown.
        let mut c = quiver();
        c.arg("run").arg(&p).arg("--fitted").arg(&fitted);
        run_ok(c);
        std::fs::remove_file(dir.path().join("out.parquet")).unwrap();
        let mut c = quiver();
        c.arg("run")
            .arg(&p)
            .args(["-w", "1", "-i"])
            .arg(dir.path().join("serve.parquet"))
            .arg("--fitted")
            .arg(&fitted);
        let err = run_err(c);
        contains_all(
            &err,
            &[
                &format!("plugin `{plugin_name}`"),
                "unknown category \"never-seen\" in column `cat`",
                "row 7",
            ],
        );
        assert!(!dir.path().join("out.parquet").exists(), "{err}");
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
    }
    // Integer categories are named by their value.
    let params = "columns = [\"icat\"], handle-unknown = \"error\"";
    let p = pipeline(
        dir.path(),
        "train.parquet",
        None,
        "one-hot",
        params,
        "out.parquet",
    );
    let fitted = dir.path().join("fitted.json");
    let mut c = quiver();
    c.arg("fit").arg(&p).arg("-o").arg(&fitted);
    run_ok(c);
    let mut c = quiver();
    c.arg("run")
        .arg(&p)
        .args(["-w", "1", "-i"])
        .arg(dir.path().join("serve.parquet"))
        .arg("--fitted")
        .arg(&fitted);
    let err = run_err(c);
    contains_all(
        &err,
        &[
            "one-hot",
            "unknown category -987654 in column `icat`",
            "row 3",
        ],
    );
}

/// `run_fails` or `fit_fails`.
type Fails = fn(&Path, &str, &str, &str) -> String;

#[test]
fn non_numeric_or_missing_target_is_refused() {
    let dir = bad_input_dir();
    let d = dir.path();
    let mut rows = records(50, 20, false);
    rows.iter_mut().for_each(|r| r.y = None);
    write_records(&d.join("no-y.parquet"), &rows, true);
    let text_target = "target column `label` has type Utf8; the target must be numeric or boolean";
    let cases: [(Fails, &str, &str, &[&str]); 5] = [
        // A text target.
        (
            fit_fails,
            "train.parquet",
            "columns = [\"cat\"], target = \"label\"",
            &[text_target],
        ),
        (
            run_fails,
            "train.parquet",
            "columns = [\"cat\"], target = \"label\"",
            &[text_target],
        ),
        // No target column to fit on (serving data has none).
        (
            fit_fails,
            "serve.parquet",
            "columns = [\"cat\"], target = \"y\"",
            &["`y`", "id, cat, icat, label"],
        ),
        // The target among the encoded columns.
        (
            run_fails,
            "train.parquet",
            "columns = [\"cat\", \"y\"], target = \"y\"",
            &["target", "also one of the columns"],
        ),
        // No row with a target value.
        (
            run_fails,
            "no-y.parquet",
            "columns = [\"cat\"], target = \"y\"",
            &["no row has a target value in column `y`"],
        ),
    ];
    for (fails, input, params, parts) in cases {
        let err = fails(d, input, "target-encoder", params);
        contains_all(&err, &["target-encoder"]);
        contains_all(&err, parts);
    }
}

#[test]
fn missing_or_non_categorical_columns_are_refused() {
    let dir = bad_input_dir();
    let d = dir.path();
    for (plugin_name, extra) in [
        ("one-hot", ""),
        ("ordinal-encoder", ""),
        ("count-encoder", ""),
        ("target-encoder", ", target = \"icat\""),
    ] {
        let err = fit_fails(
            d,
            "train.parquet",
            plugin_name,
            &format!("columns = [\"cat\", \"nosuch\"]{extra}"),
        );
        contains_all(
            &err,
            &[
                plugin_name,
                "column `nosuch` not found",
                "id, cat, icat, label",
            ],
        );
        let err = run_fails(
            d,
            "train.parquet",
            plugin_name,
            &format!("columns = [\"y\"]{extra}"),
        );
        contains_all(
            &err,
            &[
                plugin_name,
                "column `y` has type Float64; categories must be utf8 or integers",
            ],
        );
    }
}

#[test]
fn bad_parameters_are_refused() {
    let dir = bad_input_dir();
    let d = dir.path();
    let train = records(600, 17, false);
    let first = counts(&text_values(&train)).into_keys().next().unwrap();
    let collision = format!("unknown-value 0 is the code of category `{first}` of column `cat`");
    let cases = [
        (
            "one-hot",
            "columns = [\"cat\"], max-categories = 0",
            "`max-categories` is invalid: must be at least 1",
        ),
        (
            "one-hot",
            "columns = [\"cat\"], handle-unknown = \"drop\"",
            "`handle-unknown` is invalid",
        ),
        (
            "one-hot",
            "columns = []",
            "`columns` is invalid: name at least one column",
        ),
        (
            "count-encoder",
            "columns = [\"cat\", \"cat\"]",
            "column `cat` is named twice",
        ),
        (
            "ordinal-encoder",
            "columns = [\"cat\"], handle-unknown = \"ignore\"",
            "\"use-encoded-value\" or \"error\"",
        ),
        (
            "ordinal-encoder",
            "columns = [\"cat\"], unknown-value = 3000000000",
            "does not fit in int32",
        ),
        // 0 is the code of the first category: unknown and known would be confused.
        (
            "ordinal-encoder",
            "columns = [\"cat\"], unknown-value = 0",
            &collision,
        ),
        (
            "target-encoder",
            "columns = [\"cat\"], target = \"y\", smoothing = -1",
            "`smoothing` is invalid",
        ),
        (
            "target-encoder",
            "columns = [\"cat\"]",
            "`target` is required",
        ),
    ];
    for (plugin_name, params, expected) in cases {
        let err = run_fails(d, "train.parquet", plugin_name, params);
        contains_all(&err, &[plugin_name, expected]);
    }
}

#[test]
fn a_fit_on_text_is_not_applied_to_integers() {
    let dir = bad_input_dir();
    let d = dir.path();
    let p = pipeline(
        d,
        "train.parquet",
        Some(2),
        "count-encoder",
        "columns = [\"cat\"]",
        "out.parquet",
    );
    let fitted = d.join("fitted.json");
    let mut c = quiver();
    c.arg("fit").arg(&p).arg("-o").arg(&fitted);
    run_ok(c);
    // Serving data where `cat` holds integers.
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("cat", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            Arc::new(Int64Array::from(vec![5, 6])),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(d.join("ints.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let mut c = quiver();
    c.arg("run")
        .arg(&p)
        .arg("-i")
        .arg(d.join("ints.parquet"))
        .arg("--fitted")
        .arg(&fitted);
    let err = run_err(c);
    contains_all(
        &err,
        &[
            "count-encoder",
            "column `cat` holds integers (Int64) but was fitted on text",
        ],
    );
    assert!(!d.join("out.parquet").exists());
}

#[test]
fn one_hot_refuses_an_indicator_named_like_an_input_column() {
    let dir = tempfile::tempdir().unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("cat", DataType::Utf8, false),
            Field::new("cat=a", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Int64Array::from(vec![7, 8])),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(dir.path().join("clash.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let err = run_fails(
        dir.path(),
        "clash.parquet",
        "one-hot",
        "columns = [\"cat\"]",
    );
    contains_all(
        &err,
        &[
            "plugin `one-hot`",
            "output column `cat=a` (an indicator of column `cat`) would appear twice",
        ],
    );
}
