//! Scheduling of batch pipelines: `quiver schedule` runs them at their times, `quiver runs`
//! shows what ran, and a lock keeps two runs of one pipeline from overlapping.
//!
//! A pipeline file's `[schedule]` table says when it runs (`every = "15m"`, or
//! `cron = "0 * * * *"` in UTC), how often a failed run is tried again, and what to do with
//! runs missed while no scheduler ran. Modules, each using only those listed before it:
//!
//! 1. [`spec`] — the `[schedule]` table, validated: [`ScheduleSpec`].
//! 2. [`timing`] — the decisions, as pure functions of instants passed in: the next fire time,
//!    the missed-run decision at start, the fires a long run made pass by, the retry delays.
//! 3. [`lock`] — [`PipelineLock`]: one run of a pipeline at a time, across processes, released
//!    by the operating system when its holder dies.
//! 4. [`history`] — the run history, one JSON line per attempt, appended and fsynced under the
//!    lock; read back tolerating a torn last line.
//! 5. [`state`] — where a pipeline's lock, history and last fire time live: next to the
//!    pipeline file, in `.quiver/<file stem>/`.
//! 6. [`scheduler`] — the loop: threads, clocks and waits, asking [`timing`] what to do.
//!
//! The runs themselves are done by a [`Runner`] the caller supplies (the `quiver` command runs
//! the batch pipeline), so this crate knows nothing of Arrow or plugins; it uses serde, chrono
//! and a cron parser, and `quiver-durable` for atomic writes.
//!
//! # Scheduling one pipeline
//!
//! ```no_run
//! use std::sync::Arc;
//! use quiver_schedule::scheduler::{self, Job, Options};
//! use quiver_schedule::{Cadence, RunSummary, ScheduleSpec, Trigger};
//!
//! let spec = ScheduleSpec::new(Cadence::Every(std::time::Duration::from_secs(60)));
//! let jobs = vec![Job { file: "daily.toml".into(), spec }];
//! let runner = |file: &std::path::Path, _: Trigger| -> Result<RunSummary, String> {
//!     // Run the pipeline in `file`; report rows and inputs, or why it failed.
//!     Ok(RunSummary::default())
//! };
//! let options = Options::default();
//! // Another thread (a signal handler) sets `options.stop`; running runs then finish.
//! scheduler::run(jobs, Arc::new(runner), options)?;
//! # Ok::<(), quiver_schedule::scheduler::SchedulerError>(())
//! ```
//!
//! # A run outside the scheduler
//!
//! `quiver run` takes the same lock and records into the same history:
//!
//! ```no_run
//! use quiver_schedule::{LockMode, StateDir, Trigger};
//!
//! let state = StateDir::of(std::path::Path::new("daily.toml"))?;
//! let lock = state.lock(LockMode::Refuse, None)?; // "pipeline daily is being run by pid N since T"
//! let history = state.history();
//! let start = history.begin(&lock, Trigger::Manual, None, 1, chrono::Utc::now())?;
//! let outcome = Err("the input is missing".to_string()); // the run's result
//! history.append(&lock, &start.finish(chrono::Utc::now(), &outcome))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod history;
pub mod lock;
pub mod scheduler;
pub mod spec;
pub mod state;
pub mod timing;

pub use history::{History, HistoryError, RunRecord, RunStatus, RunSummary, Runs, Trigger};
pub use lock::{Holder, LockError, LockMode, PipelineLock};
pub use scheduler::{Event, Job, Runner};
pub use spec::{Backoff, Cadence, CronExpr, Missed, ScheduleSpec, SpecError};
pub use state::{StateDir, StateError};
