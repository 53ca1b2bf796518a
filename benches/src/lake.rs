//! Lake tables: writing a Delta table against writing plain Parquet files in the same run, and
//! an incremental rerun with 1% new input against a full run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;

use quiver::batch::{self, RunOptions};
use quiver::pipeline::Pipeline;
use quiver::plugin::Host;

use crate::{median, Args};

/// Rows of the write figure.
const WRITE_ROWS: usize = 10_000_000;
/// Input files of the incremental figure, and rows in each.
const INCREMENTAL_FILES: usize = 100;
const INCREMENTAL_FILE_ROWS: usize = 100_000;

/// Writes `rows` rows starting at id `from` as one Parquet file: an id, a day (30 of them),
/// a user name and an amount.
fn write_input(path: &Path, from: usize, rows: usize) -> Result<()> {
    let ids = Int64Array::from_iter_values((from..from + rows).map(|i| i as i64));
    let days = StringArray::from_iter_values(
        (from..from + rows).map(|i| format!("2026-01-{:02}", i % 30 + 1)),
    );
    let users =
        StringArray::from_iter_values((from..from + rows).map(|i| format!("user{}", i % 5000)));
    let amounts =
        Float64Array::from_iter_values((from..from + rows).map(|i| (i % 1000) as f64 * 0.37));
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("day", Arc::new(days)),
        ("user", Arc::new(users)),
        ("amount", Arc::new(amounts)),
    ])?;
    let mut w = ArrowWriter::try_new(std::fs::File::create(path)?, batch.schema(), None)?;
    for start in (0..rows).step_by(65_536) {
        w.write(&batch.slice(start, 65_536.min(rows - start)))?;
    }
    w.close()?;
    Ok(())
}

fn pipeline(text: &str, dir: &Path) -> Result<Pipeline> {
    let mut p = Pipeline::from_toml(text).map_err(anyhow::Error::msg)?;
    p.base_dir = dir.to_path_buf();
    p.name = Some("bench".into());
    Ok(p)
}

/// Writes back every file's dirty pages (`sync`), so a timed run does not pay for an earlier
/// one's.
fn flush_disk() -> Result<()> {
    let status = std::process::Command::new("sync").status()?;
    ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

fn fresh(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}

/// Both figures of the lake part.
pub fn bench_lake(args: &Args, host: &Host) -> Result<()> {
    let root = PathBuf::from("target/bench-data/lake");
    std::fs::create_dir_all(&root)?;
    let root = std::fs::canonicalize(&root)?;
    std::fs::create_dir_all(root.join("out"))?;
    if args.runs_figure("lake", "write") {
        bench_write(args, host, &root)?;
    }
    if args.runs_figure("lake", "incremental") {
        bench_incremental(host, &root)?;
    }
    Ok(())
}

fn bench_write(args: &Args, host: &Host, root: &Path) -> Result<()> {
    let input = root.join("write-input");
    if !input.join("done").exists() {
        fresh(&input)?;
        std::fs::create_dir_all(&input)?;
        let per_file = WRITE_ROWS / 10;
        for n in 0..10 {
            write_input(
                &input.join(format!("part-{n}.parquet")),
                n * per_file,
                per_file,
            )?;
        }
        std::fs::write(input.join("done"), "")?;
    }
    println!(
        "\n== lake: writing {WRITE_ROWS} rows as a Delta table vs as Parquet files, in the same run (target ≥ 0.9×)"
    );
    let runs = args.runs.min(3);
    for (label, files_sink, table_sink) in [
        (
            "one table / one file",
            "path = \"out/plain.parquet\"\noverwrite = true",
            "table = \"out/table\"",
        ),
        (
            "partitioned by day",
            "path = \"out/plain-by-day\"\npartition-by = [\"day\"]\noverwrite = true",
            "table = \"out/table-by-day\"\npartition-by = [\"day\"]",
        ),
    ] {
        let source = "[source]\npaths = [\"write-input/*.parquet\"]\n";
        let files = pipeline(
            &format!("workers = 2\n{source}[sink]\n{files_sink}\n"),
            root,
        )?;
        let table = pipeline(
            &format!("workers = 2\n{source}[sink]\n{table_sink}\n"),
            root,
        )?;
        let table_dir = table.sink_location();
        // The two alternate, each going first in every other pair, so that a machine slowing
        // down part-way, or one run's writes still going to disk, weigh on both alike; the
        // first pair warms up. Not timed: removing the last run's table (the Parquet run
        // replaces its file itself) and flushing what earlier runs left to write back.
        let mut rows = (0, 0);
        let (mut parquet, mut delta) = (Vec::new(), Vec::new());
        for pair in 0..=runs {
            for delta_first in [pair % 2 == 1, pair % 2 == 0] {
                fresh(&table_dir)?;
                flush_disk()?;
                let t = Instant::now();
                if delta_first {
                    rows.1 = batch::run(&table, host, &RunOptions::default())?.rows_out;
                } else {
                    rows.0 = batch::run(&files, host, &RunOptions::default())?.rows_out;
                }
                let secs = t.elapsed().as_secs_f64();
                if pair > 0 {
                    match delta_first {
                        true => delta.push(secs),
                        false => parquet.push(secs),
                    }
                }
            }
        }
        let (parquet, delta) = (median(parquet), median(delta));
        ensure!(
            rows.0 == WRITE_ROWS as u64 && rows.1 == WRITE_ROWS as u64,
            "rows written: Parquet {}, Delta {}",
            rows.0,
            rows.1
        );
        println!(
            "{label}: Parquet {parquet:.2} s, Delta {delta:.2} s: Delta at {:.2}× the Parquet throughput",
            parquet / delta
        );
    }
    Ok(())
}

fn bench_incremental(host: &Host, root: &Path) -> Result<()> {
    let incoming = root.join("incoming");
    fresh(&incoming)?;
    std::fs::create_dir_all(&incoming)?;
    for n in 0..INCREMENTAL_FILES {
        write_input(
            &incoming.join(format!("f{n:04}.parquet")),
            n * INCREMENTAL_FILE_ROWS,
            INCREMENTAL_FILE_ROWS,
        )?;
    }
    let text = "workers = 2\n[source]\npaths = [\"incoming\"]\nincremental = true\n[sink]\ntable = \"inc/table\"\npartition-by = [\"day\"]\n";
    let p = pipeline(text, root)?;
    fresh(&p.sink_location())?;
    println!(
        "\n== lake: an incremental run with 1% new files vs a full run ({INCREMENTAL_FILES} files of {INCREMENTAL_FILE_ROWS} rows; target: the time above the fixed cost ≤ 5% of the full run)"
    );
    let timed = |what: &str| -> Result<(f64, u64)> {
        let t = Instant::now();
        let report = batch::run(&p, host, &RunOptions::default())?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  {what}: {secs:.3} s, {} rows, {} input files read, {} skipped",
            report.rows_out,
            report.inputs.read(),
            report.inputs.done.len()
        );
        Ok((secs, report.rows_out))
    };
    let (full, rows) = timed("full run (first)")?;
    ensure!(rows == (INCREMENTAL_FILES * INCREMENTAL_FILE_ROWS) as u64);
    // The fixed cost: an incremental run with nothing new (listing and checking the inputs,
    // reading the run records, opening the table), median of three.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(timed("nothing new")?.0);
    }
    idle.sort_by(f64::total_cmp);
    let fixed = idle[1];
    let new_files = INCREMENTAL_FILES / 100;
    let mut increments = Vec::new();
    for round in 0..3 {
        for k in 0..new_files {
            let n = INCREMENTAL_FILES + round * new_files + k;
            write_input(
                &incoming.join(format!("f{n:04}.parquet")),
                n * INCREMENTAL_FILE_ROWS,
                INCREMENTAL_FILE_ROWS,
            )?;
        }
        let (secs, rows) = timed("1% new")?;
        ensure!(rows == (new_files * INCREMENTAL_FILE_ROWS) as u64);
        increments.push(secs);
    }
    increments.sort_by(f64::total_cmp);
    let incremental = increments[1];
    let proportional = (incremental - fixed).max(0.0);
    println!(
        "full {full:.2} s; incremental with 1% new {incremental:.3} s = fixed cost {fixed:.3} s + {proportional:.3} s, {:.1}% of the full run (new data: 1%)",
        100.0 * proportional / full
    );
    Ok(())
}
