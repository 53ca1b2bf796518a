//! Scheduling: `quiver schedule` with `every = "1s"`, `quiver runs`, and the pipeline lock
//! that keeps two runs of one pipeline from overlapping, also across processes.
//!
//! Every wait is on a condition with a deadline (a line printed, a record in the history, the
//! lock file naming a pid); the tolerances on times hold on two busy cores.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::stream::sigterm;
use crate::support::{contains_all, finish, plugin, quiver, run, run_err, run_ok};

/// How late a scheduled run may start after its fire time on a loaded machine.
const LATE: TimeDelta = TimeDelta::milliseconds(750);

/// Writes the input and a pipeline `<name>.toml` in `dir`: `in.csv` through the `slow`
/// plugin (if `slow_ms` is given) to `out-<name>.parquet`, with `[schedule]` holding
/// `schedule` (none if empty). Returns the pipeline's file name.
fn pipeline(dir: &Path, name: &str, slow_ms: Option<u64>, schedule: &str) -> String {
    std::fs::write(dir.join("in.csv"), "id,x\n1,2.5\n2,3.5\n3,4.5\n").unwrap();
    let slow = slow_ms.map_or_else(String::new, |ms| {
        format!(
            "[[plugin]]\npath = \"{}\"\nparams = {{ ms = {ms} }}\ngrants = {{ clock = true }}\n",
            plugin("slow").display()
        )
    });
    let schedule = if schedule.is_empty() {
        String::new()
    } else {
        format!("[schedule]\n{schedule}\n")
    };
    let file = format!("{name}.toml");
    std::fs::write(
        dir.join(&file),
        format!(
            "workers = 1\n\n[source]\npaths = [\"in.csv\"]\n\n{slow}\n[sink]\npath = \"out-{name}.parquet\"\noverwrite = true\n\n{schedule}"
        ),
    )
    .unwrap();
    file
}

/// A running `quiver schedule`, its stdout lines collected as they come.
struct Scheduler {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Scheduler {
    fn start(dir: &Path, files: &[&str]) -> Scheduler {
        let mut c = quiver();
        c.current_dir(dir)
            .arg("schedule")
            .args(files)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("starting quiver schedule");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in stdout.lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            })
        };
        Scheduler {
            child,
            lines,
            reader,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until `count` lines hold `text`; returns the last of them.
    fn wait_for(&self, text: &str, count: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let matching: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(text))
                .collect();
            if matching.len() >= count {
                return matching[count - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {count} lines with {text:?} within {limit:?}:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for a clean exit; returns stdout's lines.
    fn stop(self) -> Vec<String> {
        sigterm(&self.child);
        let out = finish(self.child);
        self.reader.join().unwrap();
        let lines = self.lines.lock().unwrap().clone();
        assert!(
            out.status.success(),
            "quiver schedule stopped with {}:\nstdout:\n{}\nstderr:\n{}",
            out.status,
            lines.join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
        lines
    }
}

/// The history of `file` in `dir`, from `quiver runs --json`.
fn history(dir: &Path, file: &str) -> Vec<Value> {
    let mut c = quiver();
    c.current_dir(dir).args(["runs", file, "--json"]);
    let (ok, out, err) = run(c);
    assert!(ok, "quiver runs failed: {err}");
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap_or_else(|e| panic!("quiver runs --json printed no JSON array ({e}):\n{out}"))
}

fn time(v: &Value) -> DateTime<Utc> {
    let text = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

/// Waits (at most `limit`) until the history of `file` holds `count` records.
fn wait_for_records(dir: &Path, file: &str, count: usize, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let records = history(dir, file);
        if records.len() >= count {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} runs of {file} within {limit:?}: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that no two of the runs overlap in time and that their ids are 1, 2, 3, …
fn assert_one_at_a_time(records: &[Value]) {
    let mut by_start: Vec<&Value> = records.iter().collect();
    by_start.sort_by_key(|r| time(&r["start"]));
    for pair in by_start.windows(2) {
        assert!(
            time(&pair[1]["start"]) >= time(&pair[0]["end"]),
            "two runs overlap:\n{:#}\n{:#}",
            pair[0],
            pair[1]
        );
    }
    let ids: Vec<u64> = by_start
        .iter()
        .map(|r| r["run"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected, "run ids given twice or out of order");
}

#[test]
fn scheduled_runs_start_on_their_fire_times_a_second_apart() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), "p", None, "every = \"1s\"");
    let s = Scheduler::start(dir.path(), &[&file]);
    s.wait_for("succeeded", 4, Duration::from_secs(60));
    let lines = s.stop();
    let records = history(dir.path(), &file);
    assert!(records.len() >= 4, "{records:#?}");
    for r in &records {
        assert_eq!(r["trigger"], "schedule");
        assert_eq!(r["status"], "succeeded", "{r:#}");
        assert_eq!(
            (r["rows_in"].as_u64(), r["rows_out"].as_u64()),
            (Some(3), Some(3))
        );
        assert_eq!(r["inputs"].as_array().unwrap().len(), 1);
        let fire = time(&r["scheduled_for"]);
        assert_eq!(
            fire.timestamp_subsec_nanos(),
            0,
            "not on the 1 s grid: {r:#}"
        );
        let late = time(&r["start"]) - fire;
        assert!(
            late >= TimeDelta::zero() && late < LATE,
            "started {late} after its fire time: {r:#}"
        );
    }
    // A second apart: consecutive fires, none skipped unless a run was slowed past the next
    // one (at most one such on a busy machine).
    let fires: Vec<DateTime<Utc>> = records.iter().map(|r| time(&r["scheduled_for"])).collect();
    let span = *fires.last().unwrap() - fires[0];
    assert!(
        span <= TimeDelta::seconds(fires.len() as i64),
        "fires {fires:?} are not a second apart"
    );
    assert_one_at_a_time(&records);
    assert!(lines[0].starts_with("p: every 1s (state in "), "{lines:?}");
    assert!(dir.path().join("out-p.parquet").is_file());
}

#[test]
fn a_slow_run_never_overlaps_the_next_one_nor_another_schedulers_run() {
    let dir = tempfile::tempdir().unwrap();
    // Runs take 1.5 s, fires come every second, and two schedulers fire the same pipeline.
    let file = pipeline(dir.path(), "p", Some(1500), "every = \"1s\"");
    let a = Scheduler::start(dir.path(), &[&file]);
    let b = Scheduler::start(dir.path(), &[&file]);
    wait_for_records(dir.path(), &file, 4, Duration::from_secs(90));
    let lines = [a.stop(), b.stop()].concat();
    let records = history(dir.path(), &file);
    assert!(
        records.iter().all(|r| r["status"] == "succeeded"),
        "{records:#?}"
    );
    assert_one_at_a_time(&records);
    let skipped = |why: &str| {
        lines
            .iter()
            .any(|l| l.contains("skipped") && l.contains(why))
    };
    assert!(
        skipped("the run before was still going"),
        "no fire skipped for a running run:\n{}",
        lines.join("\n")
    );
    assert!(
        skipped("the pipeline is being run by pid "),
        "no fire skipped for the other scheduler's run:\n{}",
        lines.join("\n")
    );
}

#[test]
fn a_failing_run_is_retried_with_growing_delays_and_every_attempt_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        "p",
        None,
        "every = \"1s\"\nretries = 2\nbackoff = \"1s\"\nmax-backoff = \"2s\"",
    );
    // The input is missing until the retries are used up.
    let input = dir.path().join("in.csv");
    let kept = std::fs::read(&input).unwrap();
    std::fs::remove_file(&input).unwrap();
    let s = Scheduler::start(dir.path(), &[&file]);
    s.wait_for("no retries left", 1, Duration::from_secs(60));
    std::fs::write(&input, kept).unwrap();
    s.wait_for("succeeded", 1, Duration::from_secs(30));
    let lines = s.stop();
    assert!(
        lines.iter().any(|l| l.ends_with("; retry 1 of 2 in 1s")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("; retry 2 of 2 in 2s")),
        "{lines:#?}"
    );

    let records = history(dir.path(), &file);
    let tries = &records[..3];
    let attempts: Vec<u64> = tries
        .iter()
        .map(|r| r["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3], "{records:#?}");
    for r in tries {
        assert_eq!(r["status"], "failed");
        assert_eq!(
            r["scheduled_for"], tries[0]["scheduled_for"],
            "retries are for one fire"
        );
        contains_all(r["error"].as_str().unwrap(), &["in.csv"]);
    }
    // The delays grow: 1 s, then 2 s (each from the end of the failed attempt).
    let gap = |i: usize| time(&tries[i + 1]["start"]) - time(&tries[i]["end"]);
    for (i, want) in [(0, 1), (1, 2)] {
        let want = TimeDelta::seconds(want);
        assert!(
            gap(i) >= want && gap(i) < want + LATE,
            "retry {} after {}",
            i + 1,
            gap(i)
        );
    }
    assert!(
        records[3..].iter().any(|r| r["status"] == "succeeded"),
        "{records:#?}"
    );
    assert_one_at_a_time(&records);

    // The table: one line per attempt, with the error cut short.
    let mut c = quiver();
    c.current_dir(dir.path()).args(["runs", &file]);
    let (ok, table, err) = run(c);
    assert!(ok, "{err}");
    let rows: Vec<&str> = table.lines().collect();
    contains_all(
        rows[0],
        &[
            "run", "trigger", "start", "duration", "status", "rows in", "rows out", "inputs",
            "error",
        ],
    );
    contains_all(rows[1], &["1", "schedule", "failed", "in.csv"]);
    contains_all(rows[2], &["schedule #2", "failed"]);
    assert!(
        rows.iter().skip(1).all(|r| r.chars().count() < 160),
        "{table}"
    );
}

#[test]
fn sigterm_waits_for_the_running_run_to_finish() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), "p", Some(2500), "every = \"1s\"");
    let s = Scheduler::start(dir.path(), &[&file]);
    s.wait_for("run 1 started", 1, Duration::from_secs(60));
    let lines = s.stop();
    let stopping = lines
        .iter()
        .position(|l| l.contains("stopping: waiting for the running run of p"))
        .unwrap_or_else(|| panic!("no stopping line: {lines:#?}"));
    let finished = lines
        .iter()
        .position(|l| l.contains("run 1 succeeded"))
        .unwrap_or_else(|| panic!("run 1 did not finish: {lines:#?}"));
    assert!(stopping < finished, "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("run 2 started")),
        "{lines:#?}"
    );
    let records = history(dir.path(), &file);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["status"], "succeeded");
    assert!(dir.path().join("out-p.parquet").is_file());
}

#[test]
fn a_second_run_of_a_pipeline_is_refused_while_one_holds_it_or_waits_with_wait() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), "p", Some(4000), "");
    let mut first = quiver();
    first
        .current_dir(dir.path())
        .args(["run", &file])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let first = first.spawn().unwrap();
    // Holding the lock: the lock file names the run's pid.
    let lock = dir.path().join(".quiver/p/lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&lock)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|h| h["pid"] == first.id())
    {
        assert!(
            Instant::now() < deadline,
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut second = quiver();
    second.current_dir(dir.path()).args(["run", &file]);
    let err = run_err(second);
    contains_all(
        &err,
        &[
            &format!("pipeline p is being run by pid {} since ", first.id()),
            "--wait",
        ],
    );

    let mut third = quiver();
    third.current_dir(dir.path()).args(["run", "--wait", &file]);
    let err = run_ok(third);
    contains_all(
        &err,
        &[&format!(
            "waiting for pipeline p: being run by pid {}",
            first.id()
        )],
    );
    let out = finish(first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Two runs recorded (the refused one is not a run), one after the other.
    let records = history(dir.path(), &file);
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(records
        .iter()
        .all(|r| r["trigger"] == "manual" && r["status"] == "succeeded"));
    assert!(records.iter().all(|r| r.get("scheduled_for").is_none()));
    assert_one_at_a_time(&records);
}

#[test]
fn runs_missed_while_no_scheduler_ran_run_once_at_start_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let once = pipeline(
        dir.path(),
        "once",
        None,
        "every = \"1s\"\nmissed = \"run-once\"",
    );
    let skip = pipeline(
        dir.path(),
        "skip",
        None,
        "every = \"1s\"\nmissed = \"skip\"",
    );
    let s = Scheduler::start(dir.path(), &[&once, &skip]);
    s.wait_for("once: run 1 succeeded", 1, Duration::from_secs(60));
    s.wait_for("skip: run 1 succeeded", 1, Duration::from_secs(60));
    s.stop();
    // Down long enough for at least two fires to pass.
    let last_fire = [&once, &skip]
        .iter()
        .flat_map(|f| history(dir.path(), f))
        .map(|r| time(&r["scheduled_for"]))
        .max()
        .unwrap();
    while Utc::now() < last_fire + TimeDelta::milliseconds(2500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = |f: &str| history(dir.path(), f).len();
    let (once_before, skip_before) = (before(&once), before(&skip));

    let s = Scheduler::start(dir.path(), &[&once, &skip]);
    let missed_once = s.wait_for("once: missed ", 1, Duration::from_secs(30));
    let missed_skip = s.wait_for("skip: missed ", 1, Duration::from_secs(30));
    s.wait_for("once: run", 2, Duration::from_secs(30));
    s.wait_for("skip: run", 2, Duration::from_secs(30));
    let lines = s.stop();

    // "<time> once: missed N runs while no scheduler ran (latest due at T); running once now"
    let latest = |line: &str| -> (u64, DateTime<Utc>) {
        let n = line
            .split("missed ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let t = line
            .split("latest due at ")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap();
        (n.parse().unwrap(), time(&Value::from(t)))
    };
    let (n, due) = latest(&missed_once);
    assert!(
        n >= 2 && missed_once.ends_with("; running once now"),
        "{missed_once}"
    );
    let first_after = &history(dir.path(), &once)[once_before];
    assert_eq!(
        time(&first_after["scheduled_for"]),
        due,
        "run-once ran {first_after:#} for the latest missed fire"
    );

    let (n, due) = latest(&missed_skip);
    assert!(
        n >= 2 && missed_skip.ends_with("; skipped"),
        "{missed_skip}"
    );
    let first_after = &history(dir.path(), &skip)[skip_before];
    assert!(
        time(&first_after["scheduled_for"]) > due,
        "skip ran a missed fire: {first_after:#}\n{lines:#?}"
    );
}

#[test]
fn a_bad_or_missing_schedule_is_refused_naming_the_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("", vec!["p.toml: no [schedule] table", "every = \"1h\""]),
        (
            "every = \"15x\"",
            vec!["[schedule] every = \"15x\": unknown unit \"x\""],
        ),
        (
            "cron = \"0 * * *\"",
            vec!["[schedule] cron = \"0 * * *\": has 4 fields; give 5"],
        ),
        (
            "every = \"1h\"\nmissed = \"never\"",
            vec!["unknown variant `never`"],
        ),
    ];
    for (schedule, expected) in cases {
        let file = pipeline(dir.path(), "p", None, schedule);
        let mut c = quiver();
        c.current_dir(dir.path()).args(["schedule", &file]);
        let err = run_err(c);
        contains_all(&err, &expected);
    }
    // Nothing was ever run: `quiver runs` says so.
    let mut c = quiver();
    c.current_dir(dir.path()).args(["runs", "p.toml"]);
    let out = run_ok_stdout(c);
    contains_all(&out, &["no runs recorded for pipeline p"]);
}

/// Runs a command that must succeed; returns stdout.
fn run_ok_stdout(c: std::process::Command) -> String {
    let (ok, out, err) = run(c);
    assert!(ok, "quiver failed:\nstdout: {out}\nstderr: {err}");
    out
}
