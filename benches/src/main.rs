//! Quiver's benchmark program. Every figure is printed next to its baseline measured in the same
//! run, as a ratio:
//!
//! 1. `scale` and `filter` as plugins vs the same logic compiled natively (arrow kernels), on
//!    1M- and 10M-row batches; per-call overhead on a 10-row batch; warm instantiation time.
//! 2. The same two transforms in a record-at-a-time ABI (one call per row, bytes in, bytes out),
//!    as record-oriented Wasm transform systems work: Quiver's columnar ABI must be ≥ 20× faster.
//! 3. With `--peer FILE` (JSON lines from `benches/risingwave/run.sh`): RisingWave's Arrow UDFs
//!    in Wasm (`arrow-udf-wasm`), the closest columnar peer: Quiver must be ≥ 2× faster.
//! 4. A whole pipeline, Parquet → filter → mask → scale → Parquet on 10M rows, vs the same
//!    pipeline written natively with arrow-rs kernels on the same threads: Quiver ≥ 0.7×.
//! 5. What the limits cost: `scale` and `filter` with every limit enforced (epoch deadline,
//!    memory limiter, output caps) vs an engine that enforces none, and with fuel metering on:
//!    limits on must be ≤ 5% slower.
//!
//! 6. The same transforms written in each language kit (Rust, Python, JavaScript, C), built
//!    from source: rows/s on a 1M-row batch as a ratio of Rust's, warm instantiation time and
//!    component size (`languages.rs`).
//! 7. Streaming (`streaming.rs`): rows/s with a checkpoint every second vs checkpoints off
//!    (≤ 5% slower), latency from append to committed output at 100k rows/s (p99 ≤ 20 ms),
//!    and peak memory over a large input (< 1 GiB).
//! 8. HTTP ingest (`ingest.rs`): acknowledged rows/s with 8 clients vs 1, and the fsyncs per
//!    request that concurrent requests share.
//! 9. Cluster mode (`cluster.rs`): leader and worker failover times vs their targets,
//!    replicated ingest vs the single-node ingest, a follower's catch-up from the log and from a
//!    snapshot, and a checkpoint's cost through the cluster vs the local store.
//!
//! Run everything with `benches/run.sh`; `cargo run --release -p quiver-bench -- --help` lists
//! the options.

mod cluster;
mod ingest;
mod lake;
mod languages;
mod streaming;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, RecordBatchReader,
    StringArray, StringBuilder,
};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::arity::unary;
use arrow::compute::kernels::cmp::gt;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use clap::Parser;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use quiver::abi::{Param, ParamValue};
use quiver::batch::{self, RunOptions};
use quiver::capability::Grants;
use quiver::pipeline::{Pipeline, PluginSpec, SinkSpec, SourceSpec};
use quiver::plugin::{Host, Instance, Plugin};
use quiver::sandbox::{self, EngineOptions, Limits, StoreState};
use wasmtime::component::{Component, Linker};
use wasmtime::Store;

/// The binary's allocator settings, so the benchmark measures what `quiver` runs with.
#[path = "../../runtime/cli/src/allocator.rs"]
mod allocator;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Quiver benchmarks: plugin vs native, columnar vs per-record ABI, vs a columnar peer, and a
/// whole Parquet pipeline.
#[derive(Parser)]
struct Args {
    /// Only the 1M-row sizes, and no 10M-row pipeline.
    #[arg(long)]
    quick: bool,
    /// JSON lines from benches/risingwave/run.sh, to print ratios against the peer.
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Directory of plugin components (default: target/plugins).
    #[arg(long, default_value = "target/plugins")]
    plugins: PathBuf,
    /// Timed runs per figure (the median is reported, after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only these parts (repeatable or comma-separated): columnar, per-record (which
    /// compares against columnar, so runs it too), limits, pipeline, languages, streaming,
    /// ingest, cluster, lake; or one figure of the cluster part: cluster-failover,
    /// cluster-ingest, cluster-catch-up, cluster-checkpoint; or of the lake part: lake-write,
    /// lake-incremental.
    /// Default: all (the pipeline not with --quick).
    #[arg(long, value_delimiter = ',', value_name = "PART")]
    only: Vec<String>,
    /// Size of the input, in GiB, over which streaming's peak memory is measured.
    #[arg(long, default_value_t = 1.0)]
    stream_gib: f64,
    /// Trials per failover figure of the cluster part (3 with --quick).
    #[arg(long, default_value_t = 10)]
    trials: usize,
}

impl Args {
    fn runs_part(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }

    /// Whether any figure of `part` runs (`part` itself, or one `part-…` of it).
    fn runs_any_of(&self, part: &str) -> bool {
        self.runs_part(part)
            || self
                .only
                .iter()
                .any(|p| p.strip_prefix(part).is_some_and(|r| r.starts_with('-')))
    }

    /// Whether figure `figure` of `part` runs (`part` or `part-figure` asked for).
    fn runs_figure(&self, part: &str, figure: &str) -> bool {
        self.runs_part(part) || self.runs_part(&format!("{part}-{figure}"))
    }
}

/// Median seconds of `runs` calls of `f`, after one warm-up call.
fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// The median of `times` (the upper one of an even count).
fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn text(name: &str, v: &str) -> Param {
    Param {
        name: name.into(),
        value: ParamValue::Text(v.into()),
    }
}

fn scale_params() -> Vec<Param> {
    vec![
        Param {
            name: "columns".into(),
            value: ParamValue::TextList(vec!["x".into()]),
        },
        Param {
            name: "a".into(),
            value: ParamValue::Float(3.0),
        },
        Param {
            name: "b".into(),
            value: ParamValue::Float(2.0),
        },
    ]
}

fn scale_batch(rows: usize) -> RecordBatch {
    let x = Float64Array::from_iter_values((0..rows).map(|i| i as f64 * 0.001));
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)])),
        vec![Arc::new(x) as ArrayRef],
    )
    .expect("batch")
}

fn filter_batch(rows: usize) -> RecordBatch {
    let k = Int64Array::from_iter_values((0..rows as i64).map(|i| (i * 7919) % 1000));
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
        vec![Arc::new(k) as ArrayRef],
    )
    .expect("batch")
}

fn mask_params() -> Vec<Param> {
    vec![
        Param {
            name: "columns".into(),
            value: ParamValue::TextList(vec!["email".into()]),
        },
        text("salt", SALT),
    ]
}

/// Generated e-mail addresses (about 25 bytes), one in 50 null.
fn emails(ids: std::ops::Range<i64>) -> StringArray {
    ids.map(|i| (i % 50 != 0).then(|| format!("user{}@example{}.com", (i * 31) % 200_000, i % 7)))
        .collect()
}

fn mask_batch(rows: usize) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("email", DataType::Utf8, true)])),
        vec![Arc::new(emails(0..rows as i64)) as ArrayRef],
    )
    .expect("batch")
}

/// The mask key: SHA-256(salt)[..16] as two little-endian words.
fn mask_keys() -> (u64, u64) {
    use sha2::Digest;
    let d = sha2::Sha256::digest(SALT.as_bytes());
    let word = |i: usize| u64::from_le_bytes(d[i..i + 8].try_into().expect("8 bytes"));
    (word(0), word(8))
}

fn native_scale(batch: &RecordBatch) -> ArrayRef {
    let x = batch.column(0).as_primitive::<Float64Type>();
    Arc::new(unary::<_, _, Float64Type>(x, |v| (v - 3.0) / 2.0))
}

fn native_filter(batch: &RecordBatch) -> RecordBatch {
    let k = batch.column(0).as_primitive::<Int64Type>();
    let keep = gt(k, &Int64Array::new_scalar(500)).expect("compare");
    filter_record_batch(batch, &keep).expect("filter")
}

/// Figures collected for the summary and the JSON output.
#[derive(Default, serde::Serialize)]
struct Figures {
    /// (transform, rows) → rows/s of Quiver's plugin call.
    quiver: BTreeMap<String, f64>,
    /// (transform, rows) → rows/s natively.
    native: BTreeMap<String, f64>,
    /// (transform, rows) → rows/s with one call per row.
    per_record: BTreeMap<String, f64>,
    per_call_overhead_us: f64,
    warm_instantiation_us: f64,
    pipeline_native_seconds: Option<f64>,
    pipeline_quiver_seconds: Option<f64>,
    /// (transform, setting) → rows/s, setting `off`, `on` or `fuel`.
    limits: BTreeMap<String, f64>,
}

/// Limits for the benchmarks: the defaults, with room for 10M-row batches.
fn bench_limits() -> Limits {
    Limits {
        memory_mib: 2048,
        ..Limits::default()
    }
}

/// An instance with the benchmark limits and no grants.
fn instance(plugin: &Arc<Plugin>, params: Vec<Param>) -> Result<Instance> {
    Ok(Instance::new(
        plugin.clone(),
        params,
        bench_limits(),
        Arc::new(Grants::default()),
    )?)
}

fn key(transform: &str, rows: usize) -> String {
    format!("{transform}/{rows}")
}

fn bench_columnar(args: &Args, host: &Host, f: &mut Figures) -> Result<()> {
    let sizes: &[usize] = if args.quick {
        &[1_000_000]
    } else {
        &[1_000_000, 10_000_000]
    };
    let scale = host.load(&args.plugins.join("scale.wasm"))?;
    let filter = host.load(&args.plugins.join("filter.wasm"))?;
    let mask = host.load(&args.plugins.join("mask.wasm"))?;
    println!(
        "== plugin vs native (median of {} runs, one batch per call)",
        args.runs
    );
    println!(
        "{:<8} {:>11} {:>16} {:>16} {:>8}",
        "", "rows", "native rows/s", "quiver rows/s", "ratio"
    );
    for &rows in sizes {
        let batch = scale_batch(rows);
        let mut inst = instance(&scale, scale_params())?;
        let got = inst.transform(&batch)?;
        ensure!(
            got[0].column(0).as_ref() == native_scale(&batch).as_ref(),
            "scale plugin disagrees with native"
        );
        let n = median_secs(args.runs, || drop(black_box(native_scale(&batch))));
        let q = median_secs(args.runs, || {
            drop(black_box(inst.transform(&batch).expect("scale")))
        });
        report_row("scale", rows, n, q, f);

        let batch = filter_batch(rows);
        let mut inst = instance(&filter, vec![text("where", "k > 500")])?;
        let got = inst.transform(&batch)?;
        ensure!(
            got[0] == native_filter(&batch),
            "filter plugin disagrees with native"
        );
        let n = median_secs(args.runs, || drop(black_box(native_filter(&batch))));
        let q = median_secs(args.runs, || {
            drop(black_box(inst.transform(&batch).expect("filter")))
        });
        report_row("filter", rows, n, q, f);

        let batch = mask_batch(rows);
        let mut inst = instance(&mask, mask_params())?;
        let got = inst.transform(&batch)?;
        let keys = mask_keys();
        let want = native_mask(batch.column(0).as_string::<i32>(), keys);
        ensure!(
            got[0].column(0).as_string::<i32>() == &want,
            "mask plugin disagrees with native"
        );
        let n = median_secs(args.runs, || {
            drop(black_box(native_mask(
                batch.column(0).as_string::<i32>(),
                keys,
            )))
        });
        let q = median_secs(args.runs, || {
            drop(black_box(inst.transform(&batch).expect("mask")))
        });
        report_row("mask", rows, n, q, f);
    }

    let small = scale_batch(10);
    let mut inst = instance(&scale, scale_params())?;
    let calls = 20_000;
    let per_call = median_secs(args.runs, || {
        for _ in 0..calls {
            black_box(inst.transform(&small).expect("scale"));
        }
    }) / calls as f64;
    f.per_call_overhead_us = per_call * 1e6;
    println!(
        "per-call overhead, scale on a 10-row batch: {:.2} µs per call",
        per_call * 1e6
    );

    let count = 200;
    let inst_time = median_secs(args.runs, || {
        for _ in 0..count {
            black_box(instance(&scale, scale_params()).expect("instantiate"));
        }
    }) / count as f64;
    f.warm_instantiation_us = inst_time * 1e6;
    println!(
        "warm instantiation (instantiate + init, compiled component cached): {:.1} µs",
        inst_time * 1e6
    );
    Ok(())
}

/// Scale and filter on the same batch with limits enforced, not enforced, and with fuel.
/// The three settings are timed in turns, in rotating order, so drift hits them alike.
fn bench_limit_cost(args: &Args, host: &Host, f: &mut Figures) -> Result<()> {
    let rows = if args.quick { 1_000_000 } else { 10_000_000 };
    let off = Host::new(
        EngineOptions {
            enforce: false,
            ..EngineOptions::new(8)
        },
        Host::default_cache_dir(),
    )?;
    let fuel = Host::new(
        EngineOptions {
            fuel: true,
            ..EngineOptions::new(8)
        },
        Host::default_cache_dir(),
    )?;
    println!(
        "== what the limits cost ({rows} rows, median of {} runs in turns)",
        args.runs * 3
    );
    println!(
        "{:<8} {:>15} {:>15} {:>15} {:>10} {:>10}  (target: on ≤ 5% slower)",
        "", "off rows/s", "on rows/s", "fuel rows/s", "on/off", "fuel/off"
    );
    let cases: [(&str, &str, Vec<Param>, RecordBatch); 2] = [
        ("scale", "scale.wasm", scale_params(), scale_batch(rows)),
        (
            "filter",
            "filter.wasm",
            vec![text("where", "k > 500")],
            filter_batch(rows),
        ),
    ];
    for (name, file, params, batch) in cases {
        let mut insts = Vec::new();
        for h in [&off, host, &fuel] {
            let mut i = instance(&h.load(&args.plugins.join(file))?, params.clone())?;
            i.transform(&batch)?;
            insts.push(i);
        }
        let mut times = vec![Vec::new(); 3];
        for turn in 0..args.runs * 3 {
            // The order rotates each turn, so no setting always runs right after another.
            for k in (0..3).map(|i| (i + turn) % 3) {
                let t = Instant::now();
                drop(black_box(insts[k].transform(&batch)?));
                times[k].push(t.elapsed().as_secs_f64());
            }
        }
        let rate: Vec<f64> = times
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                rows as f64 / t[t.len() / 2]
            })
            .collect();
        for (k, setting) in ["off", "on", "fuel"].iter().enumerate() {
            f.limits.insert(format!("{name}/{setting}"), rate[k]);
        }
        println!(
            "{name:<8} {:>13.0} M {:>13.0} M {:>13.0} M {:>9.3}× {:>9.3}×",
            rate[0] / 1e6,
            rate[1] / 1e6,
            rate[2] / 1e6,
            rate[1] / rate[0],
            rate[2] / rate[0]
        );
    }
    Ok(())
}

fn report_row(transform: &str, rows: usize, native: f64, quiver: f64, f: &mut Figures) {
    let (nr, qr) = (rows as f64 / native, rows as f64 / quiver);
    println!(
        "{transform:<8} {rows:>11} {nr:>16.0} {qr:>16.0} {:>7.2}×",
        qr / nr
    );
    f.native.insert(key(transform, rows), nr);
    f.quiver.insert(key(transform, rows), qr);
}

/// The record-at-a-time baseline: one call per row through `process(list<u8>) -> option<list<u8>>`.
fn bench_per_record(args: &Args, host: &Host, f: &mut Figures) -> Result<()> {
    let rows = 1_000_000;
    let mut linker: Linker<StoreState> = Linker::new(host.engine());
    sandbox::add_wasi_to_linker(&mut linker)?;
    println!("\n== per-record bytes-in/bytes-out ABI (one call per row) vs Quiver's columnar ABI, {rows} rows");
    println!(
        "{:<8} {:>18} {:>16} {:>10}  (target ≥ 20×)",
        "", "per-record rows/s", "quiver rows/s", "quiver is"
    );
    for (transform, file) in [
        ("scale", "record-scale.wasm"),
        ("filter", "record-filter.wasm"),
    ] {
        let component = Component::from_file(host.engine(), args.plugins.join(file))
            .map_err(|e| anyhow::anyhow!("loading {file}: {e}"))?;
        let mut store = Store::new(
            host.engine(),
            StoreState::new(&Limits::default(), &Grants::default()).map_err(anyhow::Error::msg)?,
        );
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = linker.instantiate(&mut store, &component)?;
        let process =
            instance.get_typed_func::<(&[u8],), (Option<Vec<u8>>,)>(&mut store, "process")?;
        let secs = median_secs(args.runs.min(3), || {
            let mut kept = 0usize;
            let mut out = Vec::with_capacity(rows * 8);
            for i in 0..rows as i64 {
                let record = if transform == "scale" {
                    (i as f64 * 0.001).to_le_bytes()
                } else {
                    ((i * 7919) % 1000).to_le_bytes()
                };
                if let (Some(r),) = process.call(&mut store, (&record[..],)).expect("process") {
                    out.extend_from_slice(&r);
                    kept += 1;
                }
            }
            black_box((kept, out));
        });
        let rr = rows as f64 / secs;
        let qr = f.quiver[&key(transform, rows)];
        println!("{transform:<8} {rr:>18.0} {qr:>16.0} {:>9.1}×", qr / rr);
        f.per_record.insert(key(transform, rows), rr);
    }
    Ok(())
}

fn print_peer(path: &Path, f: &Figures) -> Result<()> {
    println!(
        "\n== RisingWave arrow-udf-wasm (the columnar peer) vs Quiver, same inputs (target ≥ 2×)"
    );
    println!(
        "{:<8} {:>11} {:>16} {:>16} {:>10}",
        "", "rows", "peer rows/s", "quiver rows/s", "quiver is"
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let (Some(t), Some(rows), Some(pr)) = (
            v["transform"].as_str(),
            v["rows"].as_u64(),
            v["rows_per_second"].as_f64(),
        ) else {
            continue;
        };
        if let Some(qr) = f.quiver.get(&key(t, rows as usize)) {
            println!("{t:<8} {rows:>11} {pr:>16.0} {qr:>16.0} {:>9.2}×", qr / pr);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Whole pipeline

const PIPELINE_ROWS: usize = 10_000_000;
const SALT: &str = "bench-salt";

fn pipeline_input(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(format!("pipeline-{PIPELINE_ROWS}.parquet"));
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("x", DataType::Float64, false),
        Field::new("email", DataType::Utf8, true),
    ]));
    let tmp = path.with_extension("tmp");
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&tmp)?,
        schema.clone(),
        Some(writer_props()),
    )?;
    let chunk = 1_000_000;
    for start in (0..PIPELINE_ROWS).step_by(chunk) {
        let ids = start as i64..(start + chunk) as i64;
        let email = emails(ids.clone());
        w.write(&RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids.clone())),
                Arc::new(Int64Array::from_iter_values(
                    ids.clone().map(|i| (i * 7919) % 1000),
                )),
                Arc::new(Float64Array::from_iter_values(
                    ids.map(|i| i as f64 * 0.001),
                )),
                Arc::new(email),
            ],
        )?)?;
    }
    w.close()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The same properties as Quiver's Parquet sink, so both sides write the same bytes.
fn writer_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

/// The `mask` plugin's definition, natively: hex SipHash-2-4-128 keyed by SHA-256(salt)[..16].
fn native_mask(emails: &StringArray, keys: (u64, u64)) -> StringArray {
    use siphasher::sip128::{Hasher128, SipHasher24};
    use std::hash::Hasher;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = StringBuilder::with_capacity(emails.len(), emails.len() * 32);
    let mut buf = [0u8; 32];
    for v in emails.iter() {
        match v {
            None => b.append_null(),
            Some(s) => {
                let mut h = SipHasher24::new_with_keys(keys.0, keys.1);
                h.write(s.as_bytes());
                for (i, byte) in h.finish128().as_bytes().iter().enumerate() {
                    buf[2 * i] = HEX[(byte >> 4) as usize];
                    buf[2 * i + 1] = HEX[(byte & 15) as usize];
                }
                b.append_value(std::str::from_utf8(&buf).expect("hex"));
            }
        }
    }
    b.finish()
}

fn native_chain(batch: &RecordBatch, keys: (u64, u64)) -> RecordBatch {
    let batch = native_filter_on(batch);
    let schema = batch.schema();
    let i_email = schema.index_of("email").expect("email");
    let i_x = schema.index_of("x").expect("x");
    let mut cols = batch.columns().to_vec();
    cols[i_email] = Arc::new(native_mask(cols[i_email].as_string::<i32>(), keys));
    cols[i_x] = Arc::new(unary::<_, _, Float64Type>(
        cols[i_x].as_primitive::<Float64Type>(),
        |v| (v - 3.0) / 2.0,
    ));
    RecordBatch::try_new(schema, cols).expect("batch")
}

fn native_filter_on(batch: &RecordBatch) -> RecordBatch {
    let k = batch
        .column_by_name("k")
        .expect("k")
        .as_primitive::<Int64Type>();
    let keep = gt(k, &Int64Array::new_scalar(500)).expect("compare");
    filter_record_batch(batch, &keep).expect("filter")
}

/// The pipeline natively, with Quiver's structure: a reader thread, `workers` transform threads,
/// and the writer putting batches back in input order.
fn native_pipeline(input: &Path, output: &Path, workers: usize) -> Result<u64> {
    let keys = mask_keys();
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(input)?)?
        .with_batch_size(65536)
        .build()?;
    let (work_tx, work_rx) = sync_channel::<(u64, RecordBatch)>(workers * 4);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = sync_channel::<(u64, RecordBatch)>(workers * 4);
    let schema = reader.schema();
    std::thread::scope(|s| -> Result<u64> {
        s.spawn(move || {
            for (seq, b) in reader.enumerate() {
                if work_tx.send((seq as u64, b.expect("read"))).is_err() {
                    break;
                }
            }
        });
        for _ in 0..workers {
            let rx = work_rx.clone();
            let tx = done_tx.clone();
            s.spawn(move || loop {
                let next = rx.lock().expect("lock").recv();
                let Ok((seq, b)) = next else { break };
                if tx.send((seq, native_chain(&b, keys))).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(output)?, schema, Some(writer_props()))?;
        let mut pending = BTreeMap::new();
        let (mut next, mut rows) = (0u64, 0u64);
        for (seq, b) in done_rx {
            pending.insert(seq, b);
            while let Some(b) = pending.remove(&next) {
                rows += b.num_rows() as u64;
                w.write(&b)?;
                next += 1;
            }
        }
        w.close()?;
        Ok(rows)
    })
}

fn bench_pipeline(args: &Args, host: &Host, f: &mut Figures) -> Result<()> {
    let dir = PathBuf::from("target/bench-data");
    let input = pipeline_input(&dir)?;
    let workers = 2;
    let out_native = dir.join("out-native.parquet");
    let out_quiver = dir.join("out-quiver.parquet");
    let plugin = |name: &str, params: toml::Table| PluginSpec {
        path: Some(std::path::absolute(args.plugins.join(format!("{name}.wasm"))).expect("path")),
        params,
        ..Default::default()
    };
    let params = |s: &str| s.parse::<toml::Table>().expect("toml");
    let pipeline = Pipeline {
        workers: Some(workers),
        source: SourceSpec {
            paths: vec![input.to_string_lossy().into_owned()],
            ..Default::default()
        },
        plugins: vec![
            plugin("filter", params("where = \"k > 500\"")),
            plugin(
                "mask",
                params(&format!("columns = [\"email\"]\nsalt = \"{SALT}\"")),
            ),
            plugin("scale", params("columns = [\"x\"]\na = 3\nb = 2")),
        ],
        sink: SinkSpec {
            path: out_quiver.clone(),
            overwrite: true,
            ..Default::default()
        },
        base_dir: PathBuf::from("."),
        ..Default::default()
    };
    println!("\n== whole pipeline: Parquet → filter → mask → scale → Parquet, {PIPELINE_ROWS} rows, {workers} workers (target ≥ 0.7×)");
    let runs = args.runs.min(3);
    let mut native_rows = 0;
    let n = median_secs(runs, || {
        native_rows = native_pipeline(&input, &out_native, workers).expect("native pipeline");
    });
    let mut quiver_rows = 0;
    let q = median_secs(runs, || {
        quiver_rows = batch::run(&pipeline, host, &RunOptions::default())
            .expect("quiver pipeline")
            .rows_out;
    });
    ensure!(
        native_rows == quiver_rows,
        "row counts differ: native {native_rows}, quiver {quiver_rows}"
    );
    let a = read_first(&out_native)?;
    let b = read_first(&out_quiver)?;
    ensure!(a == b, "the two pipelines wrote different data");
    println!(
        "native {n:.2} s ({:.1} M rows/s), quiver {q:.2} s ({:.1} M rows/s): quiver at {:.2}× native throughput",
        PIPELINE_ROWS as f64 / n / 1e6,
        PIPELINE_ROWS as f64 / q / 1e6,
        n / q
    );
    f.pipeline_native_seconds = Some(n);
    f.pipeline_quiver_seconds = Some(q);
    Ok(())
}

fn read_first(path: &Path) -> Result<RecordBatch> {
    let mut r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?
        .with_batch_size(100_000)
        .build()?;
    Ok(r.next().context("empty output")??)
}

fn main() -> Result<()> {
    allocator::tune();
    let args = Args::parse();
    let host = Host::new(EngineOptions::new(64), Host::default_cache_dir())?;
    let mut f = Figures::default();
    if args.runs_part("columnar") || args.runs_part("per-record") {
        bench_columnar(&args, &host, &mut f)?;
    }
    if args.runs_part("per-record") {
        bench_per_record(&args, &host, &mut f)?;
    }
    if args.runs_part("limits") {
        bench_limit_cost(&args, &host, &mut f)?;
    }
    if let (Some(peer), true) = (&args.peer, args.runs_part("columnar")) {
        print_peer(peer, &f)?;
    }
    if !args.quick && args.runs_part("pipeline") {
        bench_pipeline(&args, &host, &mut f)?;
    }
    if args.runs_part("streaming") {
        streaming::bench_streaming(&args, &host)?;
    }
    if args.runs_part("ingest") {
        ingest::bench_ingest(&args)?;
    }
    if args.runs_any_of("cluster") {
        cluster::bench_cluster(&args, &host)?;
    }
    if args.runs_any_of("lake") {
        lake::bench_lake(&args, &host)?;
    }
    if args.runs_part("languages") {
        languages::bench_languages(&args, &host)?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&f)?)?;
    }
    Ok(())
}
