//! Peer benchmark: RisingWave's `arrow-udf-wasm` (0.5.1) host calling
//! `arrow-udf` (0.6.2) UDFs compiled to `wasm32-wasip1`.
//!
//! Usage: `rw-bench <path/to/guest.wasm>`
//!
//! For N in {1e6, 1e7} rows it measures
//! - `scale`: one UDF call over a single-column Float64 batch;
//! - `filter`: one `gt500` UDF call over a single-column Int64 batch, then
//!   `arrow::compute::filter_record_batch` with the returned predicate.
//!
//! One warm-up call, then 5 timed calls; the median is reported as one JSON
//! object per line on stdout. Notes go to stderr.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow_udf_wasm::{FunctionHandle, Runtime};

const SIZES: [usize; 2] = [1_000_000, 10_000_000];
const TIMED_RUNS: usize = 5;

fn scale_input(n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
    let x = Float64Array::from_iter_values((0..n).map(|i| i as f64 * 0.001));
    RecordBatch::try_new(schema, vec![Arc::new(x)]).expect("scale input batch")
}

fn filter_input(n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
    let k = Int64Array::from_iter_values((0..n as i64).map(|i| (i * 7919) % 1000));
    RecordBatch::try_new(schema, vec![Arc::new(k)]).expect("filter input batch")
}

/// The measured work of `scale`: one UDF call, output Float64 array back.
fn run_scale(rt: &Runtime, f: &FunctionHandle, input: &RecordBatch) -> Float64Array {
    let out = rt.call(f, input).expect("scale call");
    out.column(0)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("scale output is Float64")
        .clone()
}

/// The measured work of `filter`: one UDF call for the predicate, then the
/// host applies it with `filter_record_batch`.
fn run_filter(rt: &Runtime, f: &FunctionHandle, input: &RecordBatch) -> RecordBatch {
    let out = rt.call(f, input).expect("gt500 call");
    let predicate = out
        .column(0)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("gt500 output is Boolean");
    filter_record_batch(input, predicate).expect("filter_record_batch")
}

fn verify_scale(input: &RecordBatch, out: &Float64Array) {
    let x = input.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(out.len(), x.len(), "scale: output length mismatch");
    assert_eq!(out.null_count(), 0, "scale: unexpected nulls in output");
    for (i, (got, xi)) in out.values().iter().zip(x.values().iter()).enumerate() {
        let want = (xi - 3.0) / 2.0;
        assert!(
            got.to_bits() == want.to_bits(),
            "scale: row {i}: got {got}, want {want}"
        );
    }
}

fn verify_filter(input: &RecordBatch, out: &RecordBatch) {
    let k = input.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    let want: Vec<i64> = k.values().iter().copied().filter(|&v| v > 500).collect();
    assert_eq!(out.num_columns(), 1, "filter: column count mismatch");
    assert_eq!(out.num_rows(), want.len(), "filter: row count mismatch");
    let got = out.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(got.null_count(), 0, "filter: unexpected nulls in output");
    assert!(got.values()[..] == want[..], "filter: values mismatch");
}

/// One warm-up call (its output is handed to `verify`), then `TIMED_RUNS`
/// timed calls; returns the median seconds.
fn median_seconds<T>(mut work: impl FnMut() -> T, verify: impl FnOnce(&T)) -> f64 {
    verify(&work());
    let mut times: Vec<f64> = (0..TIMED_RUNS)
        .map(|_| {
            let t = Instant::now();
            let out = work();
            let dt = t.elapsed().as_secs_f64();
            drop(std::hint::black_box(out));
            dt
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    eprintln!("  timings (s): {times:?}");
    times[TIMED_RUNS / 2]
}

fn report(transform: &str, rows: usize, median: f64) {
    let rps = rows as f64 / median;
    println!(
        "{{\"system\":\"arrow-udf-wasm\",\"transform\":\"{transform}\",\"rows\":{rows},\"median_seconds\":{median},\"rows_per_second\":{rps:.1}}}"
    );
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: rw-bench <path/to/guest.wasm>");
    let binary = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let rt = Runtime::new(&binary).expect("load wasm module");
    eprintln!(
        "arrow-udf-wasm 0.5.1: loaded {path} (abi {:?}), functions: {:?}",
        rt.abi_version(),
        rt.functions().collect::<Vec<_>>()
    );
    let scale = rt
        .find_function("scale", vec![DataType::Float64], DataType::Float64)
        .expect("find scale(float64)->float64");
    let gt500 = rt
        .find_function("gt500", vec![DataType::Int64], DataType::Boolean)
        .expect("find gt500(int64)->boolean");

    for &n in &SIZES {
        let input = scale_input(n);
        let median = median_seconds(
            || run_scale(&rt, &scale, &input),
            |out| {
                verify_scale(&input, out);
                eprintln!("scale rows={n}: warm-up output verified");
            },
        );
        report("scale", n, median);
        drop(input);

        let input = filter_input(n);
        let median = median_seconds(
            || run_filter(&rt, &gt500, &input),
            |out| {
                verify_filter(&input, out);
                eprintln!("filter rows={n}: warm-up output verified");
            },
        );
        report("filter", n, median);
    }
}
