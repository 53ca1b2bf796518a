//! The scheduler: fires each pipeline at its times, one run of a pipeline at a time, retries
//! failures, records every attempt, and stops when asked, letting running runs finish.
//!
//! Each pipeline gets a thread that waits for its next fire time, takes the pipeline's lock
//! (a fire that finds another process running the pipeline is skipped), runs it through the
//! [`Runner`], appends the attempt to the history, and on failure waits the backoff and tries
//! again, up to the schedule's retries. Fires that come while a run (or its retries) is still
//! going are skipped, not queued. Every decision comes from [`timing`](crate::timing); this
//! module only reads the clock, sleeps and starts threads. Every wait looks at the stop flag
//! at least every 100 ms; a run itself is never interrupted.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::history::{RunRecord, RunSummary, Trigger};
use crate::lock::{Holder, LockError, LockMode};
use crate::spec::{Missed, ScheduleSpec};
use crate::state::{StateDir, StateError};
use crate::timing::{self, StartDecision};

/// The longest a wait goes without looking at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Runs a pipeline: what the scheduler calls at each fire time. The `quiver` command's
/// runner runs a batch pipeline as `quiver run PIPELINE` does.
pub trait Runner: Send + Sync {
    /// Runs the pipeline in `pipeline_file` once, to the end; the error is a message for the
    /// history and the log.
    fn run(&self, pipeline_file: &Path, trigger: Trigger) -> Result<RunSummary, String>;
}

impl<F> Runner for F
where
    F: Fn(&Path, Trigger) -> Result<RunSummary, String> + Send + Sync,
{
    fn run(&self, pipeline_file: &Path, trigger: Trigger) -> Result<RunSummary, String> {
        self(pipeline_file, trigger)
    }
}

/// A pipeline to schedule.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its pipeline file.
    pub file: PathBuf,
    /// Its `[schedule]`.
    pub spec: ScheduleSpec,
}

/// Why a fire did not start a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The pipeline's previous run (or its retries) was still going.
    StillRunning,
    /// Another process held the pipeline's lock.
    Locked {
        /// Who, if its lock file told.
        holder: Option<Holder>,
    },
}

/// What the scheduler tells as it goes; the caller prints or logs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The pipeline waits for its next fire time (told at start).
    Waiting {
        /// The pipeline.
        pipeline: String,
        /// The fire time.
        next: DateTime<Utc>,
    },
    /// At start: fire times passed while no scheduler ran.
    MissedAtStart {
        /// The pipeline.
        pipeline: String,
        /// How many (at most [`timing::FIRE_COUNT_CAP`]).
        missed: u64,
        /// The latest of them.
        latest: DateTime<Utc>,
        /// What is done about them: one run now, or none.
        policy: Missed,
    },
    /// An attempt started.
    Started {
        /// The pipeline.
        pipeline: String,
        /// The run's id in the history.
        run: u64,
        /// 1 for the first try, 2 for the first retry, …
        attempt: u32,
        /// The fire time it is for.
        scheduled_for: DateTime<Utc>,
    },
    /// An attempt ended; its record is in the history (unless a [`Event::Problem`] said it
    /// could not be written).
    Finished {
        /// The attempt's record.
        record: RunRecord,
        /// For a failure: the delay before the next try, if there is one.
        retry_in: Option<Duration>,
        /// The schedule's retries.
        retries: u32,
    },
    /// Fire times that started no run.
    Skipped {
        /// The pipeline.
        pipeline: String,
        /// How many.
        fires: u64,
        /// Why.
        reason: SkipReason,
    },
    /// The pipeline's cadence fires no more; its thread ends.
    NeverFires {
        /// The pipeline.
        pipeline: String,
    },
    /// Something went wrong around a run (the history or the state could not be written, the
    /// lock file could not be opened); scheduling goes on.
    Problem {
        /// The pipeline.
        pipeline: String,
        /// What went wrong.
        message: String,
    },
    /// The stop flag was seen: no run starts any more; these are still running.
    Stopping {
        /// The pipelines with a run going.
        running: Vec<String>,
    },
}

/// How the scheduler runs.
#[derive(Clone)]
pub struct Options {
    /// Set it to stop: no new run or retry starts, running ones finish, then [`run`]
    /// returns.
    pub stop: Arc<AtomicBool>,
    /// Told of everything that happens.
    pub events: Arc<dyn Fn(Event) + Send + Sync>,
    /// The stack size of the threads that call the runner (default: the platform's).
    pub thread_stack: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stop: Arc::default(),
            events: Arc::new(|_| {}),
            thread_stack: None,
        }
    }
}

/// The scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// No pipelines were given.
    #[error("no pipelines to schedule")]
    NoPipelines,
    /// Two pipeline files share a state directory (the same file given twice, or two files
    /// with one stem in one directory, such as `a.toml` and `a.TOML`).
    #[error("{} and {} would share the state directory {}; give each pipeline once", .first.display(), .second.display(), .dir.display())]
    SharedState {
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
        /// The directory.
        dir: PathBuf,
    },
    /// A state directory could not be made.
    #[error(transparent)]
    State(#[from] StateError),
    /// A thread could not be started.
    #[error("cannot start the thread of pipeline {pipeline}: {source}")]
    Thread {
        /// The pipeline.
        pipeline: String,
        /// Why.
        source: std::io::Error,
    },
    /// A pipeline's thread panicked (a bug; runner panics are recorded as failed runs).
    #[error("the scheduler's thread of pipeline {pipeline} panicked: {message}")]
    Panicked {
        /// The pipeline.
        pipeline: String,
        /// The panic's message.
        message: String,
    },
}

/// Schedules `jobs` until `options.stop` is set, then waits for running runs and returns.
pub fn run(
    jobs: Vec<Job>,
    runner: Arc<dyn Runner>,
    options: Options,
) -> Result<(), SchedulerError> {
    if jobs.is_empty() {
        return Err(SchedulerError::NoPipelines);
    }
    let mut planned: Vec<(Job, StateDir, PathBuf)> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let state = StateDir::of(&job.file)?;
        state.create()?;
        // Compared by their real paths: `a/p.toml` and `./a/p.toml` are one pipeline.
        let real = std::fs::canonicalize(state.dir()).unwrap_or_else(|_| state.dir().to_path_buf());
        if let Some((first, _, _)) = planned.iter().find(|(_, _, r)| *r == real) {
            return Err(SchedulerError::SharedState {
                first: first.file.clone(),
                second: job.file.clone(),
                dir: state.dir().to_path_buf(),
            });
        }
        planned.push((job, state, real));
    }
    let running = Arc::new(Mutex::new(BTreeSet::new()));
    let mut threads = Vec::with_capacity(planned.len());
    for (job, state, _) in planned {
        let pipeline = state.pipeline().to_string();
        let driver = Driver {
            job,
            state,
            runner: runner.clone(),
            options: options.clone(),
            running: running.clone(),
        };
        let mut builder = std::thread::Builder::new().name(format!("schedule-{pipeline}"));
        if let Some(size) = options.thread_stack {
            builder = builder.stack_size(size);
        }
        match builder.spawn(move || driver.drive()) {
            Ok(handle) => threads.push((pipeline, handle)),
            Err(source) => {
                // The threads already started are stopped before saying why.
                options.stop.store(true, Ordering::Relaxed);
                for (_, handle) in threads {
                    let _ = handle.join();
                }
                return Err(SchedulerError::Thread { pipeline, source });
            }
        }
    }
    let mut told_stopping = false;
    while threads.iter().any(|(_, h)| !h.is_finished()) {
        if !told_stopping && options.stop.load(Ordering::Relaxed) {
            told_stopping = true;
            let running = lock_ignoring_poison(&running).iter().cloned().collect();
            (options.events)(Event::Stopping { running });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pipeline, handle) in threads {
        if let Err(panic) = handle.join() {
            return Err(SchedulerError::Panicked {
                pipeline,
                message: panic_message(panic.as_ref()),
            });
        }
    }
    Ok(())
}

/// One pipeline's thread.
struct Driver {
    job: Job,
    state: StateDir,
    runner: Arc<dyn Runner>,
    options: Options,
    running: Arc<Mutex<BTreeSet<String>>>,
}

impl Driver {
    fn emit(&self, event: Event) {
        (self.options.events)(event);
    }

    fn stopped(&self) -> bool {
        self.options.stop.load(Ordering::Relaxed)
    }

    fn problem(&self, message: String) {
        self.emit(Event::Problem {
            pipeline: self.pipeline(),
            message,
        });
    }

    fn pipeline(&self) -> String {
        self.state.pipeline().to_string()
    }

    fn drive(&self) {
        let cadence = &self.job.spec.cadence;
        let last = self.state.last_scheduled().unwrap_or_else(|e| {
            self.problem(format!("{e}; taking it as never scheduled"));
            None
        });
        let decision = timing::at_start(cadence, self.job.spec.missed, last, Utc::now());
        let mut pending = match decision {
            StartDecision::Never => {
                self.emit(Event::NeverFires {
                    pipeline: self.pipeline(),
                });
                return;
            }
            StartDecision::Wait { next } => next,
            StartDecision::RunMissed {
                scheduled_for,
                missed,
            } => {
                self.emit(Event::MissedAtStart {
                    pipeline: self.pipeline(),
                    missed,
                    latest: scheduled_for,
                    policy: Missed::RunOnce,
                });
                scheduled_for
            }
            StartDecision::SkipMissed {
                latest,
                missed,
                next,
            } => {
                self.emit(Event::MissedAtStart {
                    pipeline: self.pipeline(),
                    missed,
                    latest,
                    policy: Missed::Skip,
                });
                self.taken(latest);
                next
            }
        };
        if pending > Utc::now() {
            self.emit(Event::Waiting {
                pipeline: self.pipeline(),
                next: pending,
            });
        }
        loop {
            if !self.wait_until(pending) {
                return;
            }
            self.fire(pending);
            self.taken(pending);
            let after = timing::after_fire(cadence, pending, Utc::now());
            if after.skipped > 0 {
                self.emit(Event::Skipped {
                    pipeline: self.pipeline(),
                    fires: after.skipped,
                    reason: SkipReason::StillRunning,
                });
            }
            match after.next {
                Some(next) => pending = next,
                None => {
                    self.emit(Event::NeverFires {
                        pipeline: self.pipeline(),
                    });
                    return;
                }
            }
        }
    }

    /// Records that the fire `at` was handled, for the missed-run decision of a later start.
    fn taken(&self, at: DateTime<Utc>) {
        if let Err(e) = self.state.set_last_scheduled(at) {
            self.problem(e.to_string());
        }
    }

    /// Runs the fire `scheduled_for`, with its retries.
    fn fire(&self, scheduled_for: DateTime<Utc>) {
        let spec = &self.job.spec;
        let history = self.state.history();
        let mut attempt = 1;
        loop {
            let lock = match self.state.lock(LockMode::Refuse, None) {
                Ok(lock) => lock,
                Err(LockError::Held { holder, .. }) => {
                    self.emit(Event::Skipped {
                        pipeline: self.pipeline(),
                        fires: 1,
                        reason: SkipReason::Locked { holder },
                    });
                    return;
                }
                Err(e) => return self.problem(e.to_string()),
            };
            let start = match history.begin(
                &lock,
                Trigger::Schedule,
                Some(scheduled_for),
                attempt,
                Utc::now(),
            ) {
                Ok(start) => start,
                Err(e) => return self.problem(e.to_string()),
            };
            self.emit(Event::Started {
                pipeline: self.pipeline(),
                run: start.run,
                attempt,
                scheduled_for,
            });
            lock_ignoring_poison(&self.running).insert(self.pipeline());
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.runner.run(&self.job.file, Trigger::Schedule)
            }))
            .unwrap_or_else(|panic| {
                Err(format!(
                    "the run panicked: {}",
                    panic_message(panic.as_ref())
                ))
            });
            lock_ignoring_poison(&self.running).remove(self.state.pipeline());
            let record = start.finish(Utc::now(), &outcome);
            if let Err(e) = history.append(&lock, &record) {
                self.problem(e.to_string());
            }
            drop(lock);
            let retry_in = match outcome {
                Err(_) if !self.stopped() => timing::retry_after(spec, attempt),
                _ => None,
            };
            self.emit(Event::Finished {
                record,
                retry_in,
                retries: spec.retries,
            });
            let Some(delay) = retry_in else {
                return;
            };
            if !self.sleep(delay) {
                return;
            }
            attempt += 1;
        }
    }

    /// Waits until `at` (wall clock); false if stopped first.
    fn wait_until(&self, at: DateTime<Utc>) -> bool {
        loop {
            if self.stopped() {
                return false;
            }
            // Read again every time: the wall clock may be set meanwhile.
            match (at - Utc::now()).to_std() {
                Ok(left) if !left.is_zero() => std::thread::sleep(left.min(TICK)),
                _ => return true,
            }
        }
    }

    /// Waits `delay` (monotonic clock); false if stopped first.
    fn sleep(&self, delay: Duration) -> bool {
        let end = Instant::now() + delay;
        loop {
            if self.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(TICK));
        }
    }
}

/// The set of running pipelines stays usable if a thread panicked while holding it.
fn lock_ignoring_poison<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::RunStatus;
    use crate::spec::{Backoff, Cadence};
    use std::sync::atomic::AtomicUsize;

    /// A scheduler on its own thread, its events collected.
    struct Running {
        events: Arc<Mutex<Vec<Event>>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<Result<(), SchedulerError>>>,
    }

    impl Running {
        fn start(jobs: Vec<Job>, runner: Arc<dyn Runner>) -> Running {
            let events = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let options = Options {
                stop: stop.clone(),
                events: {
                    let events = events.clone();
                    Arc::new(move |e| events.lock().unwrap().push(e))
                },
                thread_stack: None,
            };
            let thread = std::thread::spawn(move || run(jobs, runner, options));
            Running {
                events,
                stop,
                thread: Some(thread),
            }
        }

        /// Waits (at most 20 s) until an event matches.
        fn wait_for(&self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(e) = self.events.lock().unwrap().iter().find(|e| matches(e)) {
                    return e.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "no {what} in {:#?}",
                    self.events.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        fn finished(&self) -> Vec<RunRecord> {
            self.events
                .lock()
                .unwrap()
                .iter()
                .filter_map(|e| match e {
                    Event::Finished { record, .. } => Some(record.clone()),
                    _ => None,
                })
                .collect()
        }

        /// Sets the stop flag and waits (at most 20 s) for the scheduler to return.
        fn stop(mut self) -> Vec<Event> {
            self.stop.store(true, Ordering::Relaxed);
            let thread = self.thread.take().unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !thread.is_finished() {
                assert!(Instant::now() < deadline, "the scheduler did not stop");
                std::thread::sleep(Duration::from_millis(10));
            }
            thread.join().unwrap().unwrap();
            self.events.lock().unwrap().clone()
        }
    }

    fn job(dir: &Path, cadence: Cadence) -> Job {
        Job {
            file: dir.join("p.toml"),
            spec: ScheduleSpec::new(cadence),
        }
    }

    fn every_second() -> Cadence {
        Cadence::Every(Duration::from_secs(1))
    }

    #[test]
    fn runs_start_on_their_fire_times_and_a_slow_run_makes_the_next_fire_skip() {
        let dir = tempfile::tempdir().unwrap();
        let at_once = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let runner = {
            let (at_once, most) = (at_once.clone(), most.clone());
            move |_: &Path, _: Trigger| {
                let now = at_once.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1300));
                at_once.fetch_sub(1, Ordering::SeqCst);
                Ok(RunSummary {
                    rows_in: 2,
                    rows_out: 1,
                    ..Default::default()
                })
            }
        };
        let s = Running::start(vec![job(dir.path(), every_second())], Arc::new(runner));
        s.wait_for("a skipped fire", |e| {
            matches!(
                e,
                Event::Skipped {
                    reason: SkipReason::StillRunning,
                    ..
                }
            )
        });
        s.wait_for(
            "a second run",
            |e| matches!(e, Event::Finished { record, .. } if record.run == 2),
        );
        let records = s.finished();
        s.stop();
        assert_eq!(most.load(Ordering::SeqCst), 1, "two runs at once");
        for pair in records.windows(2) {
            assert!(pair[1].start >= pair[0].end, "overlap: {pair:#?}");
            // The fire while a run was going was skipped: the next run is two seconds later or more.
            let gap = pair[1].scheduled_for.unwrap() - pair[0].scheduled_for.unwrap();
            assert!(gap >= chrono::TimeDelta::seconds(2), "{gap}");
        }
        for r in &records {
            let late = r.start - r.scheduled_for.unwrap();
            assert!(
                late >= chrono::TimeDelta::zero() && late < chrono::TimeDelta::milliseconds(900),
                "{r:#?}"
            );
            assert_eq!(
                (r.status, r.rows_in, r.rows_out),
                (RunStatus::Succeeded, 2, 1)
            );
        }
        let history = StateDir::of(&dir.path().join("p.toml"))
            .unwrap()
            .history()
            .read()
            .unwrap();
        assert_eq!(history.records, records);
    }

    #[test]
    fn a_failure_is_retried_with_doubling_delays_and_every_attempt_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = job(dir.path(), every_second());
        j.spec.retries = 3;
        j.spec.backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(400),
        };
        let runner = |_: &Path, _: Trigger| Err::<RunSummary, _>("input missing".to_string());
        let s = Running::start(vec![j], Arc::new(runner));
        s.wait_for(
            "the last retry",
            |e| matches!(e, Event::Finished { record, .. } if record.attempt == 4),
        );
        let events = s.stop();
        let retries: Vec<(u32, Option<Duration>)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Finished {
                    record, retry_in, ..
                } => Some((record.attempt, *retry_in)),
                _ => None,
            })
            .take(4)
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            retries,
            [
                (1, Some(ms(200))),
                (2, Some(ms(400))),
                (3, Some(ms(400))),
                (4, None)
            ]
        );
        let records = StateDir::of(&dir.path().join("p.toml"))
            .unwrap()
            .history()
            .read()
            .unwrap()
            .records;
        let first = &records[..4];
        assert!(first
            .iter()
            .all(|r| r.status == RunStatus::Failed && r.error.as_deref() == Some("input missing")));
        assert!(first
            .iter()
            .all(|r| r.scheduled_for == first[0].scheduled_for));
        assert_eq!(
            first.iter().map(|r| r.run).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        for (pair, wait) in first.windows(2).zip([200, 400, 400]) {
            let gap = pair[1].start - pair[0].end;
            assert!(
                gap >= chrono::TimeDelta::milliseconds(wait),
                "{gap} < {wait} ms"
            );
        }
    }

    #[test]
    fn stopping_waits_for_the_running_run_and_starts_no_retry() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = job(dir.path(), every_second());
        j.spec.retries = 5;
        let ended = Arc::new(Mutex::new(None));
        let runner = {
            let ended = ended.clone();
            move |_: &Path, _: Trigger| {
                std::thread::sleep(Duration::from_millis(700));
                *ended.lock().unwrap() = Some(Instant::now());
                Err::<RunSummary, _>("failed late".to_string())
            }
        };
        let s = Running::start(vec![j], Arc::new(runner));
        s.wait_for("a start", |e| matches!(e, Event::Started { .. }));
        let events = s.stop();
        let returned = Instant::now();
        assert!(ended.lock().unwrap().is_some_and(|t| t <= returned));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Stopping { running } if running == &["p"])),
            "{events:#?}"
        );
        let finished: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, Event::Finished { .. }))
            .collect();
        assert!(
            matches!(finished[..], [Event::Finished { retry_in: None, .. }]),
            "{events:#?}"
        );
        let records = StateDir::of(&dir.path().join("p.toml"))
            .unwrap()
            .history()
            .read()
            .unwrap()
            .records;
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn a_fire_while_another_holder_has_the_lock_is_skipped_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::of(&dir.path().join("p.toml")).unwrap();
        let held = state.lock(LockMode::Refuse, None).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let runner = {
            let runs = runs.clone();
            move |_: &Path, _: Trigger| {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(RunSummary::default())
            }
        };
        let s = Running::start(vec![job(dir.path(), every_second())], Arc::new(runner));
        let skipped = s.wait_for("a skip", |e| matches!(e, Event::Skipped { .. }));
        let Event::Skipped {
            reason: SkipReason::Locked { holder: Some(h) },
            ..
        } = skipped
        else {
            panic!("{skipped:?}");
        };
        assert_eq!(h.pid, std::process::id());
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        drop(held);
        s.wait_for("a run once the lock is free", |e| {
            matches!(e, Event::Finished { .. })
        });
        s.stop();
    }

    #[test]
    fn missed_fires_run_once_at_start_or_are_skipped() {
        let hourly = Cadence::Every(Duration::from_secs(3600));
        for policy in [Missed::RunOnce, Missed::Skip] {
            let dir = tempfile::tempdir().unwrap();
            let state = StateDir::of(&dir.path().join("p.toml")).unwrap();
            let three_hours_ago = Utc::now() - chrono::TimeDelta::hours(3);
            state.set_last_scheduled(three_hours_ago).unwrap();
            let mut j = job(dir.path(), hourly.clone());
            j.spec.missed = policy;
            let runner = |_: &Path, _: Trigger| Ok(RunSummary::default());
            let s = Running::start(vec![j], Arc::new(runner));
            let latest = timing::latest_fire(&hourly, Utc::now()).unwrap();
            let missed = s.wait_for("the missed runs", |e| {
                matches!(e, Event::MissedAtStart { .. })
            });
            assert!(
                matches!(missed, Event::MissedAtStart { missed: 3, policy: p, .. } if p == policy),
                "{missed:?}"
            );
            match policy {
                Missed::RunOnce => {
                    s.wait_for("the run for the latest missed fire", |e| {
                        matches!(e, Event::Finished { record, .. } if record.scheduled_for == Some(latest))
                    });
                }
                Missed::Skip => {
                    s.wait_for("the wait for the next fire", |e| {
                        matches!(e, Event::Waiting { .. })
                    });
                    assert_eq!(state.last_scheduled().unwrap(), Some(latest));
                }
            }
            let events = s.stop();
            let started = events
                .iter()
                .filter(|e| matches!(e, Event::Started { .. }))
                .count();
            assert_eq!(
                started,
                usize::from(policy == Missed::RunOnce),
                "{events:#?}"
            );
        }
    }

    #[test]
    fn a_panicking_run_is_recorded_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let runner =
            |_: &Path, _: Trigger| -> Result<RunSummary, String> { panic!("plugin host bug") };
        let s = Running::start(vec![job(dir.path(), every_second())], Arc::new(runner));
        s.wait_for("a finished run", |e| matches!(e, Event::Finished { .. }));
        let records = s.finished();
        s.stop();
        assert_eq!(records[0].status, RunStatus::Failed);
        assert!(records[0]
            .error
            .as_deref()
            .unwrap()
            .contains("plugin host bug"));
    }

    #[test]
    fn one_pipeline_given_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = job(dir.path(), every_second());
        let mut b = a.clone();
        b.file = dir.path().join(".").join("p.toml");
        let runner: Arc<dyn Runner> = Arc::new(|_: &Path, _: Trigger| Ok(RunSummary::default()));
        let err = run(vec![a, b], runner.clone(), Options::default()).unwrap_err();
        assert!(matches!(err, SchedulerError::SharedState { .. }), "{err}");
        assert!(matches!(
            run(vec![], runner, Options::default()),
            Err(SchedulerError::NoPipelines)
        ));
    }
}
