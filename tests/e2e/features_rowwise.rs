//! Row-wise feature plugins (feature-hasher, log-transform, clip, datetime-parts,
//! text-normalize): outputs against references computed here, on data with nulls, extreme
//! values and empty partitions (64 partitions over 40 rows, and 3 over 2000), plus bad input
//! that must fail naming the plugin and the column or parameter, leaving nothing behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float32Array, Float64Array, Int64Array, Int8Array,
    RecordBatch, StringArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt64Array, UInt8Array,
};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int32Type, Int64Type, Int8Type, Schema,
    TimeUnit, UInt64Type, UInt8Type,
};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Running pipelines

/// (rows, partitions) of each run: many empty partitions, then several batches per partition.
const SHAPES: [(usize, usize); 2] = [(40, 64), (2000, 3)];

/// A small deterministic generator (the test owns it, as `support::generate` does).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// True with probability 1/n.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next() as usize % items.len()]
    }
}

/// Writes `batch` as an Arrow IPC file, which keeps every type exactly (units, time zones).
fn write_ipc(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = arrow::ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
}

/// A batch from named columns; a column is nullable if it has nulls.
fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), a.null_count() > 0))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

/// Writes a pipeline reading `in.arrow`, hash-partitioned by `id` into `partitions`, through
/// one plugin with `params` (the inside of a TOML inline table), to `out.arrow`.
fn pipeline(dir: &Path, name: &str, params: &str, partitions: usize) -> PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "workers = 2\n[source]\npaths = [\"in.arrow\"]\nbatch-size = 300\n\
             [partition]\nby = [\"id\"]\ncount = {partitions}\n\
             [[plugin]]\npath = \"{}\"\nparams = {{ {params} }}\n\
             [sink]\npath = \"out.arrow\"\noverwrite = true\n",
            plugin(name).display()
        ),
    )
    .unwrap();
    path
}

/// The output of one run, rows in `id` order.
struct Out {
    batch: RecordBatch,
}

impl Out {
    fn column(&self, name: &str) -> &ArrayRef {
        self.batch.column_by_name(name).unwrap_or_else(|| {
            panic!(
                "no output column `{name}`; schema: {:?}",
                self.batch.schema()
            )
        })
    }
    fn data_type(&self, name: &str) -> DataType {
        self.column(name).data_type().clone()
    }
    fn nullable(&self, name: &str) -> bool {
        self.batch
            .schema()
            .field_with_name(name)
            .unwrap()
            .is_nullable()
    }
    fn names(&self) -> Vec<String> {
        self.batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
    fn values<T: arrow::datatypes::ArrowPrimitiveType>(
        &self,
        name: &str,
    ) -> Vec<Option<T::Native>> {
        self.column(name).as_primitive::<T>().iter().collect()
    }
    fn strings(&self, name: &str) -> Vec<Option<String>> {
        self.column(name)
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }
}

/// Runs one plugin over `input` (which must have an int64 `id` = row number) and returns the
/// output sorted by `id`, checking that every row came back once.
fn run_plugin(input: &RecordBatch, name: &str, params: &str, partitions: usize) -> Out {
    let dir = tempfile::tempdir().unwrap();
    write_ipc(&dir.path().join("in.arrow"), input);
    let p = pipeline(dir.path(), name, params, partitions);
    let mut c = quiver();
    c.current_dir(dir.path()).arg("run").arg(&p);
    run_ok(c);
    let file = std::fs::File::open(dir.path().join("out.arrow")).unwrap();
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let ids = all.column_by_name("id").unwrap();
    let order = arrow::compute::sort_to_indices(ids, None, None).unwrap();
    let batch = arrow::compute::take_record_batch(&all, &order).unwrap();
    let got: Vec<i64> = batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(
        got,
        (0..input.num_rows() as i64).collect::<Vec<_>>(),
        "{name}: every row exactly once"
    );
    Out { batch }
}

/// Runs plugin `name` once per case (input, parameters, parts of the message), each of which
/// must fail: checks that nothing but the inputs is left and that the message holds every part.
fn fails(name: &str, cases: &[(&RecordBatch, &str, &[&str])]) {
    for &(input, params, parts) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_ipc(&dir.path().join("in.arrow"), input);
        let p = pipeline(dir.path(), name, params, 4);
        let mut c = quiver();
        c.current_dir(dir.path()).arg("run").arg(&p);
        let err = run_err(c);
        take_recordings(dir.path());
        assert_only(dir.path(), &["in.arrow", "pipeline.toml"]);
        contains_all(&err, parts);
    }
}

fn ids(n: usize) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(0..n as i64))
}

/// Equal, or both NaN, or within 1e-12 relative (plus 1e-15 absolute: near 0 the naive
/// ln(1 + x) of the references loses what log1p keeps).
fn close(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * a.abs().max(b.abs()) + 1e-15
}

fn assert_close(got: &[Option<f64>], want: &[Option<f64>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = match (g, w) {
            (None, None) => true,
            (Some(g), Some(w)) => close(*g, *w),
            _ => false,
        };
        assert!(ok, "{what}, row {i}: got {g:?}, want {w:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Numeric data: nulls, extremes, and random values

/// id, f64, f32, i64, u64, i8, u8 and s (text) columns; the first rows hold the extremes.
fn numeric_batch(n: usize, seed: u64) -> RecordBatch {
    let mut g = Lcg(seed);
    let f64_extremes = [
        Some(f64::MAX),
        Some(-f64::MAX),
        Some(1e-300),
        Some(-0.0),
        Some(0.0),
        Some(-1.0),
        Some(f64::NAN),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        None,
        Some(1000.0),
        Some(-1e-17),
    ];
    let i64_extremes = [i64::MIN, i64::MAX, 0, -1, 1, 999];
    let u64_extremes = [u64::MAX, 0, 1, 1 << 53];
    let i8_extremes = [i8::MIN, i8::MAX, 0, -1];
    let mut f64s = Vec::new();
    let mut f32s = Vec::new();
    let mut i64s = Vec::new();
    let mut u64s = Vec::new();
    let mut i8s = Vec::new();
    let mut u8s = Vec::new();
    for i in 0..n {
        let null = g.one_in(7);
        f64s.push(match f64_extremes.get(i) {
            Some(x) => *x,
            None if null => None,
            None => Some((g.next() % 2_000_001) as f64 / 1000.0 - 1000.0),
        });
        f32s.push((!g.one_in(9)).then(|| (g.next() % 20_001) as f32 / 100.0 - 100.0));
        i64s.push(match i64_extremes.get(i) {
            Some(x) => Some(*x),
            None if null => None,
            None => Some((g.next() % 10_001) as i64 - 5_000),
        });
        u64s.push(match u64_extremes.get(i) {
            Some(x) => Some(*x),
            None if g.one_in(5) => None,
            None => Some(g.next() % 1_000),
        });
        i8s.push(match i8_extremes.get(i) {
            Some(x) => Some(*x),
            None if g.one_in(6) => None,
            None => Some(g.next() as i8),
        });
        u8s.push(g.next() as u8);
    }
    // Text for the hasher: empty, non-ASCII, `=` inside values, and nulls.
    let pool = ["", "eu", "us", "ﬁ", "Ⅻ", "日本語", "a=b", "x", "café"];
    let texts: Vec<Option<String>> = (0..n)
        .map(|_| {
            if g.one_in(8) {
                None
            } else if g.one_in(3) {
                Some(format!("v{}", g.next() % 50))
            } else {
                Some(g.pick(&pool).to_string())
            }
        })
        .collect();
    batch(vec![
        ("id", ids(n)),
        ("f64", Arc::new(Float64Array::from(f64s))),
        ("f32", Arc::new(Float32Array::from(f32s))),
        ("i64", Arc::new(Int64Array::from(i64s))),
        ("u64", Arc::new(UInt64Array::from(u64s))),
        ("i8", Arc::new(Int8Array::from(i8s))),
        ("u8", Arc::new(UInt8Array::from(u8s))),
        ("s", Arc::new(StringArray::from(texts))),
    ])
}

/// The values of an input column as f64 (for the float references).
fn input_f64(input: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let a = input.column_by_name(name).unwrap();
    match a.data_type() {
        DataType::Float64 => a.as_primitive::<Float64Type>().iter().collect(),
        DataType::Float32 => a
            .as_primitive::<Float32Type>()
            .iter()
            .map(|x| x.map(f64::from))
            .collect(),
        DataType::Int64 => a
            .as_primitive::<Int64Type>()
            .iter()
            .map(|x| x.map(|x| x as f64))
            .collect(),
        DataType::UInt64 => a
            .as_primitive::<UInt64Type>()
            .iter()
            .map(|x| x.map(|x| x as f64))
            .collect(),
        DataType::Int8 => a
            .as_primitive::<Int8Type>()
            .iter()
            .map(|x| x.map(f64::from))
            .collect(),
        DataType::UInt8 => a
            .as_primitive::<UInt8Type>()
            .iter()
            .map(|x| x.map(f64::from))
            .collect(),
        other => panic!("not numeric: {other}"),
    }
}

/// The values of an integer input column as i128, which holds every 64-bit value exactly.
fn input_i128(input: &RecordBatch, name: &str) -> Vec<Option<i128>> {
    let a = input.column_by_name(name).unwrap();
    match a.data_type() {
        DataType::Int64 => a
            .as_primitive::<Int64Type>()
            .iter()
            .map(|x| x.map(i128::from))
            .collect(),
        DataType::UInt64 => a
            .as_primitive::<UInt64Type>()
            .iter()
            .map(|x| x.map(i128::from))
            .collect(),
        DataType::Int8 => a
            .as_primitive::<Int8Type>()
            .iter()
            .map(|x| x.map(i128::from))
            .collect(),
        DataType::UInt8 => a
            .as_primitive::<UInt8Type>()
            .iter()
            .map(|x| x.map(i128::from))
            .collect(),
        other => panic!("not an integer: {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// feature-hasher

/// The feature string of a value as the plugin documents it: the text, or an integer's
/// decimal text, after `column=`.
fn hasher_features(input: &RecordBatch, columns: &[&str], qualify: bool) -> Vec<Vec<String>> {
    let mut rows = vec![Vec::new(); input.num_rows()];
    for &c in columns {
        let a = input.column_by_name(c).unwrap();
        for (i, row) in rows.iter_mut().enumerate() {
            if a.is_null(i) {
                continue;
            }
            let v = match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
                _ => input_i128(input, c)[i].unwrap().to_string(),
            };
            row.push(if qualify { format!("{c}={v}") } else { v });
        }
    }
    rows
}

/// scikit-learn's FeatureHasher(input_type="string") on each row's features, with MurmurHash3
/// from the `murmur3` crate (independent of the plugin's own implementation).
fn hasher_reference(features: &[Vec<String>], n: usize, alternate_sign: bool) -> Vec<Vec<f64>> {
    features
        .iter()
        .map(|row| {
            let mut out = vec![0.0; n];
            for f in row {
                let h =
                    murmur3::murmur3_32(&mut std::io::Cursor::new(f.as_bytes()), 0).unwrap() as i32;
                let index = (h as i64).unsigned_abs() as usize % n;
                out[index] += if alternate_sign && h < 0 { -1.0 } else { 1.0 };
            }
            out
        })
        .collect()
}

fn check_hashed(out: &Out, prefix: &str, want: &[Vec<f64>]) {
    let n = want[0].len();
    for j in 0..n {
        let name = format!("{prefix}_{j}");
        assert_eq!(out.data_type(&name), DataType::Float64);
        assert!(!out.nullable(&name), "{name} is never null");
        let got = out.values::<Float64Type>(&name);
        for (i, row) in want.iter().enumerate() {
            assert_eq!(got[i], Some(row[j]), "{name}, row {i}");
        }
    }
    assert!(
        out.batch.column_by_name(&format!("{prefix}_{n}")).is_none(),
        "exactly {n} outputs"
    );
}

#[test]
fn feature_hasher_matches_murmur3_reference() {
    // The reference's hash is scikit-learn's: murmurhash3_32(b"foo", 0) == -156908512.
    assert_eq!(
        murmur3::murmur3_32(&mut std::io::Cursor::new(b"foo"), 0).unwrap() as i32,
        -156_908_512
    );
    for (rows, partitions) in SHAPES {
        let input = numeric_batch(rows, 11);
        let columns = ["s", "i64", "u64", "i8"];
        let out = run_plugin(
            &input,
            "feature-hasher",
            r#"columns = ["s", "i64", "u64", "i8"], n-features = 16, prefix = "f""#,
            partitions,
        );
        let features = hasher_features(&input, &columns, true);
        check_hashed(&out, "f", &hasher_reference(&features, 16, true));
        // The inputs are kept, unchanged, before the outputs.
        assert_eq!(
            &out.names()[..8],
            &input
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(
            out.strings("s"),
            input
                .column_by_name("s")
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|s| s.map(str::to_string))
                .collect::<Vec<_>>()
        );

        // Defaults (32 features, prefix "hash"), unsigned, bare values.
        let out = run_plugin(
            &input,
            "feature-hasher",
            r#"columns = ["s", "i8"], alternate-sign = false, hash-column-name = false"#,
            partitions,
        );
        let features = hasher_features(&input, &["s", "i8"], false);
        let want = hasher_reference(&features, 32, false);
        check_hashed(&out, "hash", &want);
        // Unsigned counts add up to the number of non-null values in the row.
        for (row, w) in features.iter().zip(&want) {
            assert_eq!(w.iter().sum::<f64>(), row.len() as f64);
        }
    }
}

#[test]
fn feature_hasher_reproduces_the_scikit_learn_example() {
    // From scikit-learn's FeatureHasher docstring: n_features=8, input_type="string",
    // raw_X = [["dog", "cat", "snake"], ["snake", "dog"], ["cat", "bird"]].
    let col = |v: [Option<&str>; 3]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let input = batch(vec![
        ("id", ids(3)),
        ("a", col([Some("dog"), Some("snake"), Some("cat")])),
        ("b", col([Some("cat"), Some("dog"), Some("bird")])),
        ("c", col([Some("snake"), None, None])),
    ]);
    let want = vec![
        vec![0., 0., 0., -1., 0., -1., 0., 1.],
        vec![0., 0., 0., -1., 0., -1., 0., 0.],
        vec![0., -1., 0., 0., 0., 0., 0., 1.],
    ];
    for partitions in [1, 64] {
        let out = run_plugin(
            &input,
            "feature-hasher",
            r#"columns = ["a", "b", "c"], n-features = 8, hash-column-name = false"#,
            partitions,
        );
        check_hashed(&out, "hash", &want);
    }
}

#[test]
fn feature_hasher_refuses_bad_input() {
    let input = numeric_batch(50, 3);
    let clash = batch(vec![
        ("id", ids(2)),
        ("s", Arc::new(StringArray::from(vec!["a", "b"]))),
        ("hash_3", Arc::new(Int64Array::from(vec![1, 2]))),
    ]);
    fails(
        "feature-hasher",
        &[
            (
                &input,
                r#"columns = ["s", "f64"]"#,
                &["feature-hasher", "`f64`", "Float64", "utf8 or integer"],
            ),
            (
                &input,
                r#"columns = ["s"], n-features = 0"#,
                &["feature-hasher", "`n-features`", "between 1 and 4096"],
            ),
            (
                &input,
                r#"columns = ["nosuch"]"#,
                &["feature-hasher", "nosuch", "not found"],
            ),
            // An output name that would overwrite an input column.
            (
                &clash,
                r#"columns = ["s"]"#,
                &["feature-hasher", "`hash_3`", "already exists", "`prefix`"],
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// log-transform

/// ln(x + offset) / ln(base) the textbook way; None where x + offset ≤ 0 (or x is null).
fn log_reference(x: &[Option<f64>], offset: f64, base: Option<f64>) -> Vec<Option<f64>> {
    x.iter()
        .map(|x| {
            let a = (*x)? + offset;
            // NaN is not ≤ 0: its logarithm is NaN.
            (a > 0.0 || a.is_nan()).then(|| a.ln() / base.map_or(1.0, f64::ln))
        })
        .collect()
}

#[test]
fn log_transform_matches_reference() {
    for (rows, partitions) in SHAPES {
        let input = numeric_batch(rows, 21);
        let columns = ["f64", "f32", "i64", "u64", "i8"];
        let out = run_plugin(
            &input,
            "log-transform",
            r#"columns = ["f64", "f32", "i64", "u64", "i8"]"#,
            partitions,
        );
        for c in columns {
            assert_eq!(out.data_type(c), DataType::Float64, "{c}");
            assert!(out.nullable(c), "{c}: invalid rows become null");
            let want = log_reference(&input_f64(&input, c), 1.0, None);
            assert_close(&out.values::<Float64Type>(c), &want, c);
        }
        // Hand-checked extremes (rows 0..12 of `f64`): log1p stays exact for tiny x, −1 and
        // −∞ have no logarithm, NaN stays NaN, +∞ stays +∞, −0 gives −0's log1p = −0.
        let got = out.values::<Float64Type>("f64");
        assert_eq!(
            got[2],
            Some(1e-300),
            "log1p(1e-300) = 1e-300, not ln(1 + 1e-300) = 0"
        );
        assert_eq!(got[5], None);
        assert!(got[6].unwrap().is_nan());
        assert_eq!(got[7], Some(f64::INFINITY));
        assert_eq!(got[8], None);
        assert_eq!(got[9], None);
        assert!(close(got[0].unwrap(), f64::MAX.ln()));
        assert!(
            (got[11].unwrap() + 1e-17).abs() < 1e-30,
            "log1p(-1e-17) = -1e-17"
        );
        // i64::MIN + 1 < 0 → null; i64::MAX → ln(2^63).
        let got = out.values::<Float64Type>("i64");
        assert_eq!(got[0], None);
        assert!(close(got[1].unwrap(), 63.0 * 2f64.ln()));

        // Base 10 without offset: exact at powers of ten; 0 and below are null.
        let out = run_plugin(
            &input,
            "log-transform",
            r#"columns = ["f64", "i64"], offset = 0, base = 10"#,
            partitions,
        );
        for c in ["f64", "i64"] {
            let want = log_reference(&input_f64(&input, c), 0.0, Some(10.0));
            assert_close(&out.values::<Float64Type>(c), &want, c);
        }
        let got = out.values::<Float64Type>("f64");
        assert_eq!(got[10], Some(3.0), "log10(1000) is exact");
        assert_eq!((got[3], got[4]), (None, None), "log of ±0 is null");

        // Another offset and base 2, with errors on invalid rows: `u8` has none.
        let out = run_plugin(
            &input,
            "log-transform",
            r#"columns = ["u8"], offset = 0.5, base = 2, on-invalid = "error""#,
            partitions,
        );
        assert!(!out.nullable("u8"));
        let want = log_reference(&input_f64(&input, "u8"), 0.5, Some(2.0));
        assert_close(&out.values::<Float64Type>("u8"), &want, "u8");
    }
}

#[test]
fn log_transform_refuses_bad_input() {
    let input = numeric_batch(50, 5);
    fails(
        "log-transform",
        &[
            // on-invalid = "error": −1 + 1 = 0 (row 5) stops the run, naming the column and the row
            // within its batch.
            (
                &input,
                r#"columns = ["f64"], on-invalid = "error""#,
                &[
                    "log-transform",
                    "`f64`",
                    "(row ",
                    "no logarithm",
                    "on-invalid",
                ],
            ),
            (
                &input,
                r#"columns = ["s"]"#,
                &["log-transform", "`s`", "Utf8", "numeric"],
            ),
            (
                &input,
                r#"columns = ["f64"], base = 1"#,
                &["log-transform", "`base`", "other than 1"],
            ),
            (
                &input,
                r#"columns = ["f64"], on-invalid = "skip""#,
                &["log-transform", "`on-invalid`", "\"skip\""],
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// clip

/// An integer clipped with integer bounds, in i128 so nothing overflows.
fn clip_int(x: i128, lo: Option<i128>, hi: Option<i128>) -> i128 {
    let x = lo.map_or(x, |lo| x.max(lo));
    hi.map_or(x, |hi| x.min(hi))
}

/// A float clipped; NaN stays NaN (numpy's clip).
fn clip_f64(x: f64, lo: Option<f64>, hi: Option<f64>) -> f64 {
    if x.is_nan() {
        return x;
    }
    let x = lo.map_or(x, |lo| if x < lo { lo } else { x });
    hi.map_or(x, |hi| if x > hi { hi } else { x })
}

fn check_clip_int(out: &Out, input: &RecordBatch, c: &str, lo: Option<i128>, hi: Option<i128>) {
    let want: Vec<Option<i128>> = input_i128(input, c)
        .into_iter()
        .map(|x| x.map(|x| clip_int(x, lo, hi)))
        .collect();
    let got: Vec<Option<i128>> = match out.data_type(c) {
        DataType::Int8 => out
            .values::<Int8Type>(c)
            .into_iter()
            .map(|x| x.map(i128::from))
            .collect(),
        DataType::UInt8 => out
            .values::<UInt8Type>(c)
            .into_iter()
            .map(|x| x.map(i128::from))
            .collect(),
        DataType::Int64 => out
            .values::<Int64Type>(c)
            .into_iter()
            .map(|x| x.map(i128::from))
            .collect(),
        DataType::UInt64 => out
            .values::<UInt64Type>(c)
            .into_iter()
            .map(|x| x.map(i128::from))
            .collect(),
        other => panic!("{c}: unexpected type {other}"),
    };
    assert_eq!(got, want, "{c}");
}

fn check_clip_f64(out: &Out, input: &RecordBatch, c: &str, lo: Option<f64>, hi: Option<f64>) {
    assert_eq!(out.data_type(c), DataType::Float64, "{c}");
    let want: Vec<Option<f64>> = input_f64(input, c)
        .into_iter()
        .map(|x| x.map(|x| clip_f64(x, lo, hi)))
        .collect();
    let got = out.values::<Float64Type>(c);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // Bit-exact: clipping only ever returns the value or a bound.
        let same = match (g, w) {
            (Some(g), Some(w)) => g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            (g, w) => g == w,
        };
        assert!(same, "{c}, row {i}: got {g:?}, want {w:?}");
    }
}

#[test]
fn clip_matches_reference_and_keeps_integer_types() {
    for (rows, partitions) in SHAPES {
        let input = numeric_batch(rows, 31);
        // Integral bounds that fit: every column keeps its type (float32 too: −3 and 100 are
        // float32 values; u8's −3 lies below the type and clips nothing).
        let out = run_plugin(
            &input,
            "clip",
            r#"columns = ["f64", "f32", "i64", "u64", "i8", "u8"], min = -3, max = 100"#,
            partitions,
        );
        for (c, t) in [
            ("i64", DataType::Int64),
            ("u64", DataType::UInt64),
            ("i8", DataType::Int8),
            ("u8", DataType::UInt8),
            ("f32", DataType::Float32),
        ] {
            assert_eq!(out.data_type(c), t, "{c}");
        }
        for c in ["i64", "u64", "i8", "u8"] {
            check_clip_int(&out, &input, c, Some(-3), Some(100));
            assert_eq!(
                out.nullable(c),
                input.schema().field_with_name(c).unwrap().is_nullable()
            );
        }
        check_clip_f64(&out, &input, "f64", Some(-3.0), Some(100.0));
        let want: Vec<Option<f32>> = input
            .column_by_name("f32")
            .unwrap()
            .as_primitive::<Float32Type>()
            .iter()
            .map(|x| x.map(|x| x.clamp(-3.0, 100.0)))
            .collect();
        assert_eq!(out.values::<Float32Type>("f32"), want);
        // Hand-checked: i64::MIN → −3, i64::MAX → 100, u64::MAX → 100, NaN stays, −∞ → −3.
        assert_eq!(out.values::<Int64Type>("i64")[..2], [Some(-3), Some(100)]);
        assert_eq!(out.values::<UInt64Type>("u64")[0], Some(100));
        let f = out.values::<Float64Type>("f64");
        assert!(f[6].unwrap().is_nan());
        assert_eq!((f[8], f[9]), (Some(-3.0), None));

        // A fractional bound: integers and float32 become float64.
        let out = run_plugin(
            &input,
            "clip",
            r#"columns = ["f32", "i64", "i8"], max = 0.1"#,
            partitions,
        );
        for c in ["f32", "i64", "i8"] {
            check_clip_f64(&out, &input, c, None, Some(0.1));
        }

        // Only a lower bound, beyond uint8's range: float64 (every value becomes 300);
        // int64 keeps its type with the same bound.
        let out = run_plugin(
            &input,
            "clip",
            r#"columns = ["u8", "i64"], min = 300"#,
            partitions,
        );
        check_clip_f64(&out, &input, "u8", Some(300.0), None);
        assert_eq!(out.data_type("i64"), DataType::Int64);
        check_clip_int(&out, &input, "i64", Some(300), None);
    }
}

#[test]
fn clip_refuses_bad_input() {
    let input = numeric_batch(50, 7);
    fails(
        "clip",
        &[
            (
                &input,
                r#"columns = ["s"], min = 0"#,
                &["clip", "`s`", "Utf8", "numeric"],
            ),
            (
                &input,
                r#"columns = ["f64"], min = 5, max = 1"#,
                &["clip", "`min`", "must not exceed `max`"],
            ),
            (
                &input,
                r#"columns = ["f64"]"#,
                &["clip", "`min`", "give `min`, `max` or both"],
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// datetime-parts

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// (year, month, day) of a day number, by walking years and months from 1970: slow and
/// obviously right (and independent of the plugin's closed-form algorithm).
fn naive_civil(mut days: i64) -> (i64, u32, u32) {
    let year_len = |y: i64| if is_leap(y) { 366 } else { 365 };
    let mut y = 1970;
    // Jump by 400-year cycles (146,097 days each) first, so far dates stay fast.
    y += 400 * days.div_euclid(146_097);
    days = days.rem_euclid(146_097);
    while days >= year_len(y) {
        days -= year_len(y);
        y += 1;
    }
    let months = [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut m = 0;
    while days >= months[m] {
        days -= months[m];
        m += 1;
    }
    (y, m as u32 + 1, days as u32 + 1)
}

/// Day number of a date, by the same walk (for hand-written dates).
fn naive_days(y: i64, m: u32, d: u32) -> i64 {
    let mut days = 0i64;
    let mut yy = 1970;
    while yy < y {
        days += if is_leap(yy) { 366 } else { 365 };
        yy += 1;
    }
    while yy > y {
        yy -= 1;
        days -= if is_leap(yy) { 366 } else { 365 };
    }
    let months = [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days + months[..m as usize - 1].iter().sum::<i64>() + d as i64 - 1
}

/// Monday = 0, counted from a known Monday, 1970-01-05.
fn naive_weekday(days: i64) -> i32 {
    (days - 4).rem_euclid(7) as i32
}

/// Offset of Europe/Paris from UTC at an instant, by the EU rule in force since 1996: summer
/// time (+2) from the last Sunday of March, 01:00 UTC, to the last Sunday of October,
/// 01:00 UTC; +1 otherwise.
fn paris_offset(utc_secs: i64) -> i64 {
    let (y, _, _) = naive_civil(utc_secs.div_euclid(86_400));
    let last_sunday = |m: u32| {
        let end = naive_days(y, m, 31);
        // Back from the 31st to the Sunday on or before it (Sunday = 6).
        end - ((naive_weekday(end) + 1) % 7) as i64
    };
    let start = last_sunday(3) * 86_400 + 3600;
    let end = last_sunday(10) * 86_400 + 3600;
    if (start..end).contains(&utc_secs) {
        7200
    } else {
        3600
    }
}

/// The expected parts of a local (day, hour).
fn parts_of(days: i64, hour: i64) -> [i32; 5] {
    let (y, m, d) = naive_civil(days);
    [
        y as i32,
        m as i32,
        d as i32,
        naive_weekday(days),
        hour as i32,
    ]
}

/// Local (day, hour) of a stored timestamp value.
fn local(v: i64, per_second: i64, offset: impl Fn(i64) -> i64) -> (i64, i64) {
    let secs = v.div_euclid(per_second);
    let l = secs + offset(secs);
    (l.div_euclid(86_400), l.rem_euclid(86_400) / 3600)
}

const PARTS: [&str; 5] = ["year", "month", "day", "weekday", "hour"];

fn check_parts(out: &Out, column: &str, want: &[Option<[i32; 5]>], parts: usize) {
    for (k, part) in PARTS[..parts].iter().enumerate() {
        let name = format!("{column}_{part}");
        assert_eq!(out.data_type(&name), DataType::Int32, "{name}");
        let got = out.values::<Int32Type>(&name);
        for (i, w) in want.iter().enumerate() {
            assert_eq!(got[i], w.map(|w| w[k]), "{name}, row {i}");
        }
    }
}

/// id, d (date32), ts_ns (naive), ts_s (+05:30), ts_ms (Europe/Paris), ts_s_utc (UTC).
fn datetime_batch(n: usize, seed: u64) -> RecordBatch {
    let mut g = Lcg(seed);
    let day = |y, m, d| naive_days(y, m, d) as i32;
    // Leap days, the epoch's neighbours, years before 1970 and year 0, the date32 extremes.
    let date_extremes = [
        Some(day(2000, 2, 29)),
        Some(day(1900, 3, 1)),
        Some(-1),
        Some(0),
        Some(day(1600, 2, 29)),
        Some(day(0, 3, 1)),
        Some(day(0, 2, 29)),
        Some(day(-1, 12, 31)),
        Some(i32::MIN),
        Some(i32::MAX),
        None,
        Some(day(2024, 2, 29)),
    ];
    let secs = |y, m, d, h: i64| naive_days(y, m, d) * 86_400 + h * 3600;
    // Around the Paris transitions of 2021 (28 March and 31 October, 01:00 UTC).
    let paris_extremes = [
        secs(2021, 3, 28, 1) - 1,
        secs(2021, 3, 28, 1),
        secs(2021, 10, 31, 1) - 1,
        secs(2021, 10, 31, 1),
        secs(2000, 2, 29, 23),
        secs(1999, 12, 31, 23),
    ];
    let ns_extremes = [
        -1,
        0,
        i64::MIN,
        i64::MAX,
        secs(1969, 12, 31, 23) * 1_000_000_000,
    ];
    let s_extremes = [
        -1,
        10_000_000_000_000,
        -10_000_000_000_000,
        secs(2000, 2, 29, 19),
    ];
    let mut dates = Vec::new();
    let mut ns = Vec::new();
    let mut s = Vec::new();
    let mut ms = Vec::new();
    let mut utc = Vec::new();
    for i in 0..n {
        let null = g.one_in(6);
        dates.push(match date_extremes.get(i) {
            Some(x) => *x,
            None if null => None,
            // About 1700 to 2240.
            None => Some((g.next() % 200_000) as i32 - 100_000),
        });
        ns.push(match ns_extremes.get(i) {
            Some(x) => Some(*x),
            None if g.one_in(7) => None,
            None => Some((g.next() as i64 - (1 << 30)) * 8_000_000_000),
        });
        s.push(match s_extremes.get(i) {
            Some(x) => Some(*x),
            None if g.one_in(5) => None,
            None => Some((g.next() as i64 - (1 << 30)) * 3),
        });
        ms.push(match paris_extremes.get(i) {
            Some(x) => Some(x * 1000),
            None if g.one_in(5) => None,
            // 2000 to 2030, with milliseconds.
            None => Some(secs(2000, 1, 1, 0) * 1000 + (g.next() % 946_080_000) as i64 * 1000 + 7),
        });
        utc.push((!g.one_in(4)).then(|| g.next() as i64 * 2 - (1 << 32)));
    }
    batch(vec![
        ("id", ids(n)),
        ("d", Arc::new(Date32Array::from(dates))),
        ("ts_ns", Arc::new(TimestampNanosecondArray::from(ns))),
        (
            "ts_s",
            Arc::new(TimestampSecondArray::from(s).with_timezone("+05:30")),
        ),
        (
            "ts_ms",
            Arc::new(TimestampMillisecondArray::from(ms).with_timezone("Europe/Paris")),
        ),
        (
            "ts_s_utc",
            Arc::new(TimestampSecondArray::from(utc).with_timezone("UTC")),
        ),
    ])
}

fn timestamps(input: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let a = input.column_by_name(name).unwrap();
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, _) => a
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
            .iter()
            .collect(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => a
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
            .iter()
            .collect(),
        DataType::Timestamp(TimeUnit::Second, _) => a
            .as_primitive::<arrow::datatypes::TimestampSecondType>()
            .iter()
            .collect(),
        other => panic!("not a timestamp: {other}"),
    }
}

#[test]
fn datetime_reference_agrees_with_hand_checked_dates() {
    // The references themselves, against dates checked by hand on a calendar.
    assert_eq!(naive_civil(0), (1970, 1, 1));
    assert_eq!(naive_weekday(0), 3, "1970-01-01 was a Thursday");
    assert_eq!(naive_days(2000, 2, 29), 11_016);
    assert_eq!(naive_weekday(11_016), 1, "2000-02-29 was a Tuesday");
    assert_eq!(naive_days(1900, 1, 1), -25_567);
    assert_eq!(naive_weekday(-25_567), 0, "1900-01-01 was a Monday");
    assert_eq!(
        naive_weekday(naive_days(2024, 2, 29)),
        3,
        "2024-02-29 was a Thursday"
    );
    assert_eq!(naive_civil(-1), (1969, 12, 31));
    for d in [-800_000, -719_469, -1, 0, 59, 11_016, 2_932_896] {
        let (y, m, dd) = naive_civil(d);
        assert_eq!(naive_days(y, m, dd), d, "round trip of day {d}");
    }
    // Paris: 2021-03-28 00:59:59 UTC is 01:59:59 CET; one second later 03:00 CEST.
    let t = naive_days(2021, 3, 28) * 86_400 + 3600;
    assert_eq!((paris_offset(t - 1), paris_offset(t)), (3600, 7200));
    let t = naive_days(2021, 10, 31) * 86_400 + 3600;
    assert_eq!((paris_offset(t - 1), paris_offset(t)), (7200, 3600));
}

#[test]
fn datetime_parts_match_reference() {
    for (rows, partitions) in SHAPES {
        let input = datetime_batch(rows, 41);
        let out = run_plugin(
            &input,
            "datetime-parts",
            r#"columns = ["d", "ts_ns", "ts_s", "ts_ms", "ts_s_utc"]"#,
            partitions,
        );
        // Inputs kept first, then the parts, in order; date32 has no hour.
        let mut names: Vec<String> = ["id", "d", "ts_ns", "ts_s", "ts_ms", "ts_s_utc"]
            .map(String::from)
            .to_vec();
        for (c, n) in [
            ("d", 4),
            ("ts_ns", 5),
            ("ts_s", 5),
            ("ts_ms", 5),
            ("ts_s_utc", 5),
        ] {
            names.extend(PARTS[..n].iter().map(|p| format!("{c}_{p}")));
        }
        assert_eq!(out.names(), names);

        let dates: Vec<Option<[i32; 5]>> = input
            .column_by_name("d")
            .unwrap()
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| d.map(|d| parts_of(d as i64, 0)))
            .collect();
        check_parts(&out, "d", &dates, 4);
        assert!(out.nullable("d_year"));
        for (c, per_second) in [
            ("ts_ns", 1_000_000_000),
            ("ts_s", 1),
            ("ts_ms", 1000),
            ("ts_s_utc", 1),
        ] {
            let want: Vec<Option<[i32; 5]>> = timestamps(&input, c)
                .into_iter()
                .map(|v| {
                    let (days, hour) = match c {
                        "ts_s" => local(v?, per_second, |_| 19_800),
                        "ts_ms" => local(v?, per_second, paris_offset),
                        _ => local(v?, per_second, |_| 0),
                    };
                    Some(parts_of(days, hour))
                })
                .collect();
            check_parts(&out, c, &want, 5);
        }
        // Hand-checked rows.
        let year = out.values::<Int32Type>("d_year");
        let month = out.values::<Int32Type>("d_month");
        let day = out.values::<Int32Type>("d_day");
        let weekday = out.values::<Int32Type>("d_weekday");
        let at = |i: usize| (year[i], month[i], day[i], weekday[i]);
        assert_eq!(at(0), (Some(2000), Some(2), Some(29), Some(1)), "a Tuesday");
        assert_eq!(at(1), (Some(1900), Some(3), Some(1), Some(3)), "a Thursday");
        assert_eq!(
            at(2),
            (Some(1969), Some(12), Some(31), Some(2)),
            "a Wednesday"
        );
        assert_eq!(
            at(6),
            (Some(0), Some(2), Some(29), Some(1)),
            "year 0 was a leap year"
        );
        assert_eq!(at(10), (None, None, None, None));
        // −1 ns is 1969-12-31 23:…; Paris 00:59:59 UTC on 28 March 2021 is 01:59:59, one
        // second later 03:00 (summer time); 2000-02-29 19:00 UTC is 00:30 on 1 March at +05:30.
        assert_eq!(out.values::<Int32Type>("ts_ns_hour")[0], Some(23));
        assert_eq!(out.values::<Int32Type>("ts_ns_year")[0], Some(1969));
        let hour = out.values::<Int32Type>("ts_ms_hour");
        assert_eq!(hour[..4], [Some(1), Some(3), Some(2), Some(2)]);
        assert_eq!(out.values::<Int32Type>("ts_s_day")[3], Some(1));
        assert_eq!(out.values::<Int32Type>("ts_s_month")[3], Some(3));
        assert_eq!(out.values::<Int32Type>("ts_s_hour")[3], Some(0));

        // A subset of parts, in the order given.
        let out = run_plugin(
            &input,
            "datetime-parts",
            r#"columns = ["d", "ts_ns"], parts = ["weekday", "year"]"#,
            partitions,
        );
        assert_eq!(
            out.names()[6..],
            ["d_weekday", "d_year", "ts_ns_weekday", "ts_ns_year"]
        );
        let want: Vec<Option<i32>> = dates.iter().map(|d| d.map(|d| d[3])).collect();
        assert_eq!(out.values::<Int32Type>("d_weekday"), want);
    }
}

#[test]
fn datetime_parts_refuses_bad_input() {
    let input = datetime_batch(30, 43);
    let with = |tz: &str| {
        let mut cols: Vec<(&str, ArrayRef)> = vec![("id", ids(3))];
        cols.push((
            "when",
            Arc::new(TimestampSecondArray::from(vec![0, 1, 2]).with_timezone(tz)),
        ));
        batch(cols)
    };
    let far = batch(vec![
        ("id", ids(2)),
        (
            "when",
            Arc::new(TimestampSecondArray::from(vec![0, i64::MAX / 2])),
        ),
    ]);
    fails(
        "datetime-parts",
        &[
            (
                &with("Mars/Olympus_Mons"),
                r#"columns = ["when"]"#,
                &["datetime-parts", "`when`", "\"Mars/Olympus_Mons\"", "IANA"],
            ),
            (
                &input,
                r#"columns = ["id"]"#,
                &["datetime-parts", "`id`", "Int64", "timestamp or date32"],
            ),
            (
                &input,
                r#"columns = ["d"], parts = ["year", "hour"]"#,
                &["datetime-parts", "`d`", "no hour"],
            ),
            (
                &input,
                r#"columns = ["d"], parts = ["century"]"#,
                &["datetime-parts", "`parts`", "\"century\""],
            ),
            // A second-unit timestamp far beyond the years int32 holds.
            (
                &far,
                r#"columns = ["when"]"#,
                &["datetime-parts", "`when`", "does not fit int32", "(row "],
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// text-normalize

/// A string and, checked by hand against the Unicode tables, its four normal forms.
struct Sample {
    text: &'static str,
    nfc: &'static str,
    nfkc: &'static str,
    nfd: &'static str,
    nfkd: &'static str,
}

const fn same(text: &'static str) -> Sample {
    Sample {
        text,
        nfc: text,
        nfkc: text,
        nfd: text,
        nfkd: text,
    }
}

/// Compatibility forms differ, canonical ones do not.
const fn compat(text: &'static str, k: &'static str) -> Sample {
    Sample {
        text,
        nfc: text,
        nfkc: k,
        nfd: text,
        nfkd: k,
    }
}

const SAMPLES: [Sample; 17] = [
    same(""),
    same("   "),
    same("  Hello  World\t"),
    compat("ﬁle", "file"),
    compat("Ⅻ", "XII"),
    compat("Ｆｕｌｌ\u{3000}Ｗｉｄｔｈ", "Full Width"),
    same("Straße"),
    same("ΣΑΣ"),
    Sample {
        text: "e\u{301}",
        nfc: "\u{e9}",
        nfkc: "\u{e9}",
        nfd: "e\u{301}",
        nfkd: "e\u{301}",
    },
    Sample {
        text: "\u{212b}",
        nfc: "\u{c5}",
        nfkc: "\u{c5}",
        nfd: "A\u{30a}",
        nfkd: "A\u{30a}",
    },
    compat("①②x²", "12x2"),
    same("日本語"),
    compat("ｶﾀｶﾅ", "カタカナ"),
    compat("ID: ３４５ and 6", "ID: 345 and 6"),
    compat("\u{a0}nbsp\u{a0}", " nbsp "),
    Sample {
        text: "İstanbul Ünïcödé",
        nfc: "İstanbul Ünïcödé",
        nfkc: "İstanbul Ünïcödé",
        nfd: "I\u{307}stanbul U\u{308}ni\u{308}co\u{308}de\u{301}",
        nfkd: "I\u{307}stanbul U\u{308}ni\u{308}co\u{308}de\u{301}",
    },
    compat(" Mixed\u{3000}\u{3000}Space\n x9 ", " Mixed  Space\n x9 "),
];

/// One configuration of the plugin, and the same steps written out here.
struct TextConfig {
    params: &'static str,
    form: &'static str,
    lowercase: bool,
    collapse: bool,
    trim: bool,
    /// (ASCII-digit group) or (an `x` and a digit, no group).
    extract: Option<&'static str>,
}

fn text_reference(cfg: &TextConfig, s: &str) -> Option<String> {
    let mut t = if s.is_ascii() {
        // ASCII is its own normal form in all four.
        s.to_string()
    } else {
        let sample = SAMPLES
            .iter()
            .find(|x| x.text == s)
            .unwrap_or_else(|| panic!("no sample {s:?}"));
        match cfg.form {
            "nfc" => sample.nfc,
            "nfkc" => sample.nfkc,
            "nfd" => sample.nfd,
            "nfkd" => sample.nfkd,
            _ => sample.text,
        }
        .to_string()
    };
    if cfg.lowercase {
        t = t.to_lowercase();
    }
    if cfg.collapse {
        let mut c = String::new();
        for ch in t.chars() {
            if !(ch.is_whitespace() && c.ends_with(' ')) {
                c.push(if ch.is_whitespace() { ' ' } else { ch });
            }
        }
        t = c;
    }
    if cfg.trim {
        t = t.trim().to_string();
    }
    match cfg.extract {
        None => Some(t),
        Some("digits") => {
            let start = t.find(|c: char| c.is_ascii_digit())?;
            let rest = &t[start..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            Some(rest[..end].to_string())
        }
        Some("x-digit") => {
            let b = t.as_bytes();
            let i = (0..b.len().saturating_sub(1))
                .find(|&i| b[i] == b'x' && b[i + 1].is_ascii_digit())?;
            Some(t[i..i + 2].to_string())
        }
        Some(other) => panic!("no reference for {other}"),
    }
}

fn text_batch(n: usize, seed: u64) -> RecordBatch {
    let mut g = Lcg(seed);
    let alphabet: Vec<char> = "aBx9 \t-Z".chars().collect();
    let texts: Vec<Option<String>> = (0..n)
        .map(|i| {
            if let Some(s) = SAMPLES.get(i) {
                Some(s.text.to_string())
            } else if g.one_in(6) {
                None
            } else if g.one_in(2) {
                Some(g.pick(&SAMPLES).text.to_string())
            } else {
                let len = g.next() % 12;
                Some((0..len).map(|_| *g.pick(&alphabet)).collect())
            }
        })
        .collect();
    batch(vec![
        ("id", ids(n)),
        ("t", Arc::new(StringArray::from(texts))),
        ("n", Arc::new(Int64Array::from_iter_values(0..n as i64))),
    ])
}

#[test]
fn text_normalize_matches_reference() {
    let configs = [
        TextConfig {
            params: r#"columns = ["t"]"#,
            form: "nfkc",
            lowercase: true,
            collapse: false,
            trim: true,
            extract: None,
        },
        TextConfig {
            params: r#"columns = ["t"], unicode = "nfd", lowercase = false, trim = false"#,
            form: "nfd",
            lowercase: false,
            collapse: false,
            trim: false,
            extract: None,
        },
        TextConfig {
            params: r#"columns = ["t"], unicode = "nfc", collapse-whitespace = true"#,
            form: "nfc",
            lowercase: true,
            collapse: true,
            trim: true,
            extract: None,
        },
        TextConfig {
            params: r#"columns = ["t"], unicode = "nfkd", collapse-whitespace = true, trim = false"#,
            form: "nfkd",
            lowercase: true,
            collapse: true,
            trim: false,
            extract: None,
        },
        TextConfig {
            params: r#"columns = ["t"], unicode = "none", lowercase = false"#,
            form: "none",
            lowercase: false,
            collapse: false,
            trim: true,
            extract: None,
        },
        TextConfig {
            params: r#"columns = ["t"], extract = '([0-9]+)'"#,
            form: "nfkc",
            lowercase: true,
            collapse: false,
            trim: true,
            extract: Some("digits"),
        },
        TextConfig {
            params: r#"columns = ["t"], extract = 'x[0-9]', unicode = "nfkd""#,
            form: "nfkd",
            lowercase: true,
            collapse: false,
            trim: true,
            extract: Some("x-digit"),
        },
    ];
    for (rows, partitions) in SHAPES {
        let input = text_batch(rows, 51);
        let texts: Vec<Option<String>> = input
            .column_by_name("t")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect();
        for cfg in &configs {
            let out = run_plugin(&input, "text-normalize", cfg.params, partitions);
            assert_eq!(out.data_type("t"), DataType::Utf8);
            assert_eq!(out.names(), ["id", "t", "n"]);
            let want: Vec<Option<String>> = texts
                .iter()
                .map(|s| s.as_deref().and_then(|s| text_reference(cfg, s)))
                .collect();
            let got = out.strings("t");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{}: row {i} ({:?})", cfg.params, texts[i]);
            }
            if cfg.params == configs[0].params {
                // Hand-checked: the ligature, the numeral, full-width letters, final sigma.
                let at = |i: usize| got[i].as_deref();
                assert_eq!(at(3), Some("file"));
                assert_eq!(at(4), Some("xii"));
                assert_eq!(at(5), Some("full width"));
                assert_eq!(at(7), Some("σας"));
                assert_eq!(at(1), Some(""), "only white space");
            }
            if cfg.extract.is_some() {
                assert!(out.nullable("t"), "no match gives null");
            }
        }
    }
}

#[test]
fn text_normalize_refuses_bad_input() {
    let input = text_batch(30, 53);
    fails(
        "text-normalize",
        &[
            (
                &input,
                r#"columns = ["t"], extract = '(unclosed'"#,
                &[
                    "text-normalize",
                    "`extract`",
                    "not a valid regular expression",
                ],
            ),
            (
                &input,
                r#"columns = ["t"], unicode = "nfx""#,
                &["text-normalize", "`unicode`", "\"nfx\"", "nfkc"],
            ),
            (
                &input,
                r#"columns = ["n"]"#,
                &["text-normalize", "`n`", "Int64", "utf8"],
            ),
        ],
    );
}
