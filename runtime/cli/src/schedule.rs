//! `quiver schedule` and `quiver runs`, and the lock and run history of `quiver run
//! PIPELINE`: arguments and printing; the work is in `quiver::schedule`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;

use crate::Outcome;
use quiver::batch::RunOptions;
use quiver::pipeline::Pipeline;
use quiver::schedule::scheduler::{self, Event, Job, SkipReason};
use quiver::schedule::spec::format_duration;
use quiver::schedule::{
    LockError, LockMode, Missed, PipelineLock, RunRecord, RunStatus, RunSummary, StateDir, Trigger,
};
use quiver::untrusted;

/// `quiver schedule`.
#[derive(Args)]
pub(crate) struct ScheduleArgs {
    /// Pipeline files, each with a [schedule] table.
    #[arg(required = true, value_name = "PIPELINE")]
    pipelines: Vec<PathBuf>,
    /// Directory for compiled plugins (default: $QUIVER_CACHE_DIR or ~/.cache/quiver).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// `quiver runs`.
#[derive(Args)]
pub(crate) struct RunsArgs {
    /// The pipeline file whose runs to show.
    pipeline: PathBuf,
    /// Print the records as a JSON array (all of them, unless --limit), one object per
    /// attempt, with the fields of the history file.
    #[arg(long)]
    json: bool,
    /// Show only the last N runs (default for the table: 20).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

/// The lock flag of `quiver run`.
#[derive(Args)]
pub(crate) struct LockArgs {
    /// With a pipeline file: if the pipeline is being run (by `quiver schedule` or another
    /// `quiver run`), wait for that run to end instead of refusing. Refusing is the default
    /// so that a run started by hand or by cron never queues up behind a long one unnoticed:
    /// the refusal names the pid that holds the pipeline.
    #[arg(long, conflicts_with = "stream")]
    pub(crate) wait: bool,
}

/// What the table of `quiver runs` shows when no --limit is given.
const TABLE_RUNS: usize = 20;

/// The most characters of an error the table shows.
const ERROR_CHARS: usize = 60;

/// `quiver run PIPELINE` in batch mode: takes the pipeline's lock (refusing, or waiting with
/// --wait), runs, and records the run in the pipeline's history, whatever its outcome.
pub(crate) fn run_recorded(
    file: &Path,
    lock: &LockArgs,
    run: impl FnOnce() -> Result<Outcome>,
) -> Result<Outcome> {
    let state = StateDir::of(file)?;
    let Some(lock) = take_lock(&state, lock.wait)? else {
        return run();
    };
    let history = state.history();
    let start = history.begin(&lock, Trigger::Manual, None, 1, Utc::now())?;
    let result = run();
    let outcome = match &result {
        Ok(outcome) => Ok(summary(outcome)),
        Err(e) => Err(crate::render_error(e)),
    };
    let record = start.finish(Utc::now(), &outcome);
    // The run's own outcome is what the command reports; a history that cannot be written
    // is told, not turned into a failure of a run that succeeded.
    if let Err(e) = history.append(&lock, &record) {
        eprintln!("warning: the run was not recorded: {e}");
    }
    result
}

/// The pipeline's lock, or a refusal naming its holder (waiting for it with `wait`). `None`
/// if the state directory cannot be written (a pipeline file in a read-only place): such a
/// run goes ahead as before runs were locked, with a warning that it is neither exclusive
/// nor recorded.
fn take_lock(state: &StateDir, wait: bool) -> Result<Option<PipelineLock>> {
    match state.lock(LockMode::Refuse, None) {
        Ok(lock) => Ok(Some(lock)),
        Err(e @ LockError::Io { .. }) => {
            eprintln!("warning: {e}; the run goes ahead without the pipeline's lock and history");
            Ok(None)
        }
        Err(LockError::Held { holder, .. }) if wait => {
            let who = holder.map_or_else(|| "another process".into(), |h| h.to_string());
            eprintln!(
                "waiting for pipeline {}: being run by {who}",
                state.pipeline()
            );
            Ok(Some(state.lock(LockMode::Wait { deadline: None }, None)?))
        }
        Err(e @ LockError::Held { .. }) => bail!("{e}; with --wait, quiver run waits for it"),
        Err(e) => Err(e.into()),
    }
}

/// The history's view of a finished batch run: rows read and written by all its stages, the
/// inputs they read and those an incremental run left out as done.
fn summary(outcome: &Outcome) -> RunSummary {
    let reports = || outcome.stages.iter().map(|(_, r)| r);
    RunSummary {
        rows_in: reports().map(|r| r.rows_in).sum(),
        rows_out: reports().map(|r| r.rows_out).sum(),
        inputs: reports()
            .flat_map(|r| r.inputs.read_paths.iter())
            .map(|p| p.display().to_string())
            .collect(),
        inputs_skipped: reports().map(|r| r.inputs.done.len() as u64).sum(),
    }
}

/// One scheduled run: the same steps as `quiver run PIPELINE`, with the file read again for
/// every run so that an edit takes effect at the next one (its [schedule] is read at start).
fn run_scheduled(file: &Path, cache_dir: Option<PathBuf>) -> Result<RunSummary, String> {
    let run = || -> Result<RunSummary> {
        let p = Pipeline::from_file(file)?;
        let host = crate::host_for(&p, cache_dir)?;
        let outcome = crate::execute(&p, &host, &RunOptions::default(), None)?;
        Ok(summary(&outcome))
    };
    run().map_err(|e| crate::render_error(&e))
}

/// `quiver schedule PIPELINE...`: until SIGINT or SIGTERM.
pub(crate) fn schedule(args: ScheduleArgs) -> Result<()> {
    let mut jobs = Vec::with_capacity(args.pipelines.len());
    for file in &args.pipelines {
        let p = Pipeline::from_file(file)?;
        let Some(spec) = p.schedule else {
            bail!(
                "{}: no [schedule] table; add one, as in\n\n[schedule]\nevery = \"1h\"\n\n(see quiver schedule --help)",
                file.display()
            );
        };
        let state = StateDir::of(file)?;
        println!(
            "{}: {} (state in {})",
            state.pipeline(),
            spec.cadence,
            state.dir().display()
        );
        jobs.push(Job {
            file: file.clone(),
            spec,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal stops new runs and waits for running ones; a second one exits at
        // once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .context("installing the stop signal handlers")?;
    }
    let cache_dir = args.cache_dir.clone();
    let runner = move |file: &Path, _: Trigger| run_scheduled(file, cache_dir.clone());
    let options = scheduler::Options {
        stop,
        events: Arc::new(print_event),
        // Plugins run on the calling thread's stack (describe at load, fits).
        thread_stack: Some(quiver::sandbox::PLUGIN_THREAD_STACK),
    };
    scheduler::run(jobs, Arc::new(runner), options)?;
    println!("{} stopped", now());
    Ok(())
}

/// The time now, as the schedule's lines start with it.
fn now() -> String {
    time(Utc::now())
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// Prints one line per event: on stdout what happens, on stderr what went wrong around it.
fn print_event(event: Event) {
    match event {
        Event::Waiting { pipeline, next } => {
            println!("{} {pipeline}: next run at {}", now(), time(next))
        }
        Event::MissedAtStart {
            pipeline,
            missed,
            latest,
            policy,
        } => println!(
            "{} {pipeline}: missed {} while no scheduler ran (latest due at {}); {}",
            now(),
            plural(missed, "run"),
            time(latest),
            match policy {
                Missed::RunOnce => "running once now",
                Missed::Skip => "skipped",
            }
        ),
        Event::Started {
            pipeline,
            run,
            attempt,
            scheduled_for,
        } => println!(
            "{} {pipeline}: run {run} started (attempt {attempt}, scheduled for {})",
            now(),
            time(scheduled_for)
        ),
        Event::Finished {
            record,
            retry_in,
            retries,
        } => {
            let head = format!(
                "{} {}: run {} {} in {:.2} s",
                now(),
                record.pipeline,
                record.run,
                record.status.name(),
                record.duration().as_secs_f64()
            );
            match record.status {
                RunStatus::Succeeded => println!(
                    "{head}: {} rows in, {} rows out",
                    record.rows_in, record.rows_out
                ),
                RunStatus::Failed => {
                    let error = untrusted::message(record.error.as_deref().unwrap_or(""));
                    let next = match retry_in {
                        Some(delay) => format!(
                            "; retry {} of {retries} in {}",
                            record.attempt,
                            format_duration(delay)
                        ),
                        None if retries > 0 && record.attempt > retries => {
                            "; no retries left".into()
                        }
                        None => String::new(),
                    };
                    println!("{head}: {error}{next}");
                }
            }
        }
        Event::Skipped {
            pipeline,
            fires,
            reason,
        } => match reason {
            SkipReason::StillRunning => println!(
                "{} {pipeline}: skipped {}: the run before was still going",
                now(),
                plural(fires, "fire time")
            ),
            SkipReason::Locked { holder } => println!(
                "{} {pipeline}: skipped {}: the pipeline is being run by {}",
                now(),
                plural(fires, "fire time"),
                holder.map_or_else(|| "another process".into(), |h| h.to_string())
            ),
        },
        Event::NeverFires { pipeline } => {
            println!("{} {pipeline}: the schedule fires no more", now())
        }
        Event::Problem { pipeline, message } => {
            eprintln!("warning: {pipeline}: {}", untrusted::message(&message))
        }
        Event::Stopping { running } if running.is_empty() => println!("{} stopping", now()),
        Event::Stopping { running } => println!(
            "{} stopping: waiting for the running run of {}",
            now(),
            running.join(", ")
        ),
    }
}

/// `quiver runs PIPELINE`.
pub(crate) fn runs(args: RunsArgs) -> Result<()> {
    let state = StateDir::of(&args.pipeline)?;
    let history = state.history();
    let runs = history.read()?;
    if runs.torn_tail {
        eprintln!(
            "note: {}: the last line is incomplete (a process died while writing it) and is left out",
            history.path().display()
        );
    }
    let records = &runs.records;
    let limit = args
        .limit
        .unwrap_or(if args.json { usize::MAX } else { TABLE_RUNS });
    let shown = &records[records.len().saturating_sub(limit)..];
    if args.json {
        println!("{}", serde_json::to_string_pretty(shown)?);
        return Ok(());
    }
    if records.is_empty() {
        println!(
            "no runs recorded for pipeline {} (in {})",
            state.pipeline(),
            history.path().display()
        );
        return Ok(());
    }
    print!("{}", table(shown));
    if shown.len() < records.len() {
        println!(
            "(the last {} of {} runs; --limit N shows more)",
            shown.len(),
            records.len()
        );
    }
    Ok(())
}

/// The runs as a table with aligned columns.
fn table(records: &[RunRecord]) -> String {
    let header = [
        "run", "trigger", "start", "duration", "status", "rows in", "rows out", "inputs", "error",
    ];
    let rows: Vec<[String; 9]> = records
        .iter()
        .map(|r| {
            let inputs = match r.inputs_skipped {
                0 => r.inputs.len().to_string(),
                skipped => format!("{} (+{skipped} skipped)", r.inputs.len()),
            };
            let attempt = if r.attempt > 1 {
                format!(" #{}", r.attempt)
            } else {
                String::new()
            };
            [
                r.run.to_string(),
                format!("{}{attempt}", r.trigger.name()),
                r.start.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                format_seconds(r.duration()),
                r.status.name().to_string(),
                r.rows_in.to_string(),
                r.rows_out.to_string(),
                inputs,
                truncate(&untrusted::message(r.error.as_deref().unwrap_or(""))),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Numbers are right-aligned; words, times and the error left-aligned.
    let right = [true, false, false, true, false, true, true, true, false];
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if right[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else if i + 1 < cells.len() {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(cell);
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&header.map(String::from));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// A duration for the table: `0.42 s`, `73.0 s`, `1h02m`.
fn format_seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else if s < 3600.0 {
        format!("{s:.1} s")
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, d.as_secs() % 3600 / 60)
    }
}

/// The first line of an error, at most [`ERROR_CHARS`] characters.
fn truncate(text: &str) -> String {
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() <= ERROR_CHARS && first.len() == text.len() {
        return first.to_string();
    }
    let mut cut: String = first.chars().take(ERROR_CHARS - 1).collect();
    cut.push('…');
    cut
}
