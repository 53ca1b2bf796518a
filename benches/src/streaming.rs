//! Streaming mode, each figure against its baseline in the same run:
//!
//! 1. Rows/s through a 3-plugin chain (filter → mask → scale) over a JSON-lines file with a
//!    checkpoint every second vs checkpoints off (one commit at the end), in turns: the
//!    checkpoints may cost at most 5%.
//! 2. End-to-end latency at a fixed input rate of 100k rows/s: each row carries the time it was
//!    appended; a watcher sees it when its checkpoint has committed it (the exactly-once
//!    output appears). p50 and p99.
//! 3. Peak resident memory of `quiver run --stream --stop-at-end` (a separate process) over a
//!    large input: it must stay under 1 GiB whatever the input's size.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use quiver::pipeline::Pipeline;
use quiver::plugin::Host;
use quiver::stream::{self, StreamOptions};

use crate::{Args, SALT};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

fn row(i: u64, t_us: u64) -> String {
    format!(
        "{{\"seq\":{i},\"k\":{},\"x\":{}.25,\"email\":\"user{}@example{}.com\",\"t\":{t_us}}}\n",
        (i * 7919) % 1000,
        i % 100_000,
        (i * 31) % 200_000,
        i % 7
    )
}

/// A pipeline file's text over `input` into `out`, checkpointing every `checkpoint_ms`.
fn pipeline_text(
    args: &Args,
    input: &Path,
    out: &Path,
    checkpoint_ms: u64,
    batch_ms: u64,
) -> Result<String> {
    let plugins = std::path::absolute(&args.plugins)?;
    let text = format!(
        r#"
[source]
paths = ["{input}"]
[[plugin]]
path = "{p}/filter.wasm"
params = {{ where = "k > 100" }}
[[plugin]]
path = "{p}/mask.wasm"
params = {{ columns = ["email"], salt = "{SALT}" }}
[[plugin]]
path = "{p}/scale.wasm"
params = {{ columns = ["x"], a = 3.0, b = 2.0 }}
[sink]
path = "{out}"
format = "jsonl"
[stream]
batch-rows = 10000
batch-ms = {batch_ms}
checkpoint-ms = {checkpoint_ms}
poll-ms = 1
"#,
        input = input.display(),
        out = out.display(),
        p = plugins.display()
    );
    Ok(text)
}

/// [`pipeline_text`], parsed.
fn pipeline(
    args: &Args,
    input: &Path,
    out: &Path,
    checkpoint_ms: u64,
    batch_ms: u64,
) -> Result<Pipeline> {
    let text = pipeline_text(args, input, out, checkpoint_ms, batch_ms)?;
    let mut p = Pipeline::from_toml(&text).map_err(anyhow::Error::msg)?;
    p.base_dir = PathBuf::from(".");
    Ok(p)
}

/// Rows/s of one run from the start of `input` to its end, into a fresh output directory.
fn throughput(
    args: &Args,
    host: &Host,
    input: &Path,
    dir: &Path,
    checkpoint_ms: u64,
) -> Result<(f64, u64)> {
    let out = dir.join("out");
    for d in [out.clone(), dir.join("out-checkpoints")] {
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
    }
    let p = pipeline(args, input, &out, checkpoint_ms, 200)?;
    let options = StreamOptions {
        stop_at_end: true,
        ..Default::default()
    };
    let t = Instant::now();
    let report = stream::run(&p, host, &options)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((report.rows_in as f64 / secs, report.checkpoints))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Appends rows at `rate` rows/s for `secs`; returns how many.
fn write_at_rate(input: &Path, rate: u64, secs: u64) -> Result<u64> {
    let mut f = std::fs::OpenOptions::new().append(true).open(input)?;
    let start = Instant::now();
    let total = rate * secs;
    let mut written = 0;
    while written < total {
        // Catch up with the schedule every millisecond.
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if due > written {
            let mut chunk = String::new();
            let t = now_us();
            for i in written..due {
                chunk.push_str(&row(i, t));
            }
            f.write_all(chunk.as_bytes())?;
            written = due;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(written)
}

/// Latencies (ms) of the rows of each committed output file as it appears in `out`, until
/// `total` rows were seen (or `done`).
fn watch(out: &Path, total: u64, done: &AtomicBool) -> Vec<f64> {
    let mut seen = HashSet::new();
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (lat.len() as u64) < total && Instant::now() < deadline && !done.load(Ordering::Relaxed) {
        if let Ok(entries) = std::fs::read_dir(out) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // Committed files appear whole (renamed into place).
                if !name.starts_with("part-") || !seen.insert(name) {
                    continue;
                }
                let now = now_us();
                for l in std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                {
                    let t = l
                        .rsplit_once("\"t\":")
                        .and_then(|(_, v)| v.trim_end_matches('}').parse::<u64>().ok());
                    if let Some(t) = t {
                        lat.push(now.saturating_sub(t) as f64 / 1000.0);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    lat
}

/// Peak resident memory (VmHWM) of a process, polled until it exits.
fn peak_rss_of(mut child: std::process::Child) -> Result<(u64, std::process::ExitStatus)> {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(status) = child.try_wait()? {
            return Ok((peak, status));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the three streaming figures.
pub fn bench_streaming(args: &Args, host: &Host) -> Result<()> {
    let dir = std::path::absolute("target/bench-data/stream")?;
    std::fs::create_dir_all(&dir)?;

    // 2. Latency at 100k rows/s, to the committed (exactly-once) output. Measured before the
    // throughput runs, whose gigabytes of write-back would make every fsync of a commit wait
    // behind them; earlier disk activity is flushed first.
    let _ = std::process::Command::new("sync").status();
    let secs = if args.quick { 3 } else { 10 };
    let rate = 100_000;
    let checkpoint_ms = 10;
    let input = dir.join("latency.jsonl");
    // The first row lets the run infer the schema before the timed rows start.
    std::fs::write(&input, row(0, now_us()))?;
    let out = dir.join("out-latency");
    for d in [out.clone(), dir.join("out-latency-checkpoints")] {
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
    }
    let p = pipeline(args, &input, &out, checkpoint_ms, 5)?;
    let stop = Arc::new(AtomicBool::new(false));
    let options = StreamOptions {
        stop: stop.clone(),
        ..Default::default()
    };
    let done = Arc::new(AtomicBool::new(false));
    // Rows with k ≤ 100 are filtered out: the watcher expects the rest.
    let expected = (0..rate * secs).filter(|i| (i * 7919) % 1000 > 100).count() as u64;
    let watcher = {
        let (out, done) = (out.clone(), done.clone());
        std::thread::spawn(move || watch(&out, expected, &done))
    };
    let result = std::thread::scope(|scope| -> Result<u64> {
        let runner = scope.spawn(|| stream::run(&p, host, &options));
        // Let the run start: plugins loaded, schema inferred from the first row.
        std::thread::sleep(Duration::from_millis(500));
        let written = write_at_rate(&input, rate, secs)?;
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        runner.join().expect("the stream thread")?;
        Ok(written)
    });
    done.store(true, Ordering::Relaxed);
    let mut lat = watcher.join().expect("the watcher");
    result?;
    ensure!(!lat.is_empty(), "no output rows were seen");
    lat.sort_by(f64::total_cmp);
    println!(
        "latency from append to committed output at {} k rows/s (batch-ms 5, checkpoint-ms {checkpoint_ms}): p50 {:.1} ms, p99 {:.1} ms over {} rows (target p99 ≤ 20 ms)",
        rate / 1000,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );

    // 1. Checkpoint overhead.
    let rows: u64 = if args.quick { 500_000 } else { 5_000_000 };
    let input = dir.join(format!("throughput-{rows}.jsonl"));
    if std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0) == 0 {
        let mut w = BufWriter::new(std::fs::File::create(&input)?);
        for i in 0..rows {
            w.write_all(row(i, 0).as_bytes())?;
        }
        w.flush()?;
    }
    println!("\n== streaming: {rows} JSON lines → filter → mask → scale → JSON lines, median of {} runs in turns", args.runs);
    let mut on = Vec::new();
    let mut off = Vec::new();
    let mut checkpoints = 0;
    for turn in 0..args.runs.max(1) {
        for k in [turn % 2, 1 - turn % 2] {
            if k == 0 {
                let (r, c) = throughput(args, host, &input, &dir, 1000)?;
                on.push(r);
                checkpoints = c;
            } else {
                off.push(throughput(args, host, &input, &dir, 0)?.0);
            }
        }
    }
    for v in [&mut on, &mut off] {
        v.sort_by(f64::total_cmp);
    }
    let (on, off) = (on[on.len() / 2], off[off.len() / 2]);
    println!(
        "checkpoints every 1 s: {:.2} M rows/s ({checkpoints} checkpoints); checkpoints off: {:.2} M rows/s; ratio {:.3}× (target ≥ 0.95×)",
        on / 1e6,
        off / 1e6,
        on / off
    );

    // 3. Peak memory over a large input, in a separate process.
    let gib: f64 = args.stream_gib;
    let big = dir.join(format!("big-{gib}gib.jsonl"));
    let want = (gib * (1u64 << 30) as f64) as u64;
    if std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0) < want {
        let mut w = BufWriter::with_capacity(8 << 20, std::fs::File::create(&big)?);
        let mut n = 0u64;
        let mut i = 0;
        while n < want {
            let r = row(i, 0);
            n += r.len() as u64;
            w.write_all(r.as_bytes())?;
            i += 1;
        }
        w.flush()?;
    }
    let size = std::fs::metadata(&big)?.len();
    let out = dir.join("out-big");
    for d in [out.clone(), dir.join("out-big-checkpoints")] {
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
    }
    let pfile = dir.join("big.toml");
    std::fs::write(&pfile, pipeline_text(args, &big, &out, 1000, 200)?)?;
    let quiver = std::env::current_exe()?.with_file_name("quiver");
    let t = Instant::now();
    let child = std::process::Command::new(&quiver)
        .args(["run", "--stream", "--stop-at-end"])
        .arg(&pfile)
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", quiver.display()))?;
    let (peak, status) = peak_rss_of(child)?;
    ensure!(status.success(), "the streaming run failed: {status}");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "peak memory streaming {:.2} GB of JSON lines ({:.0} MB/s): {:.0} MiB (target < 1024 MiB)",
        size as f64 / 1e9,
        size as f64 / 1e6 / secs,
        peak as f64 / (1u64 << 20) as f64
    );
    Ok(())
}
