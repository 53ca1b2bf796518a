//! Streaming mode through the real binary: exactly-once output while the process is killed
//! with SIGKILL again and again, the same rows as batch mode, and clear refusals of bad input
//! and damaged checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

/// A pipeline that scales `x` (x → (x − 1) / 4), numbers each row within its key (the
/// `running-count` plugin, whose counts are checkpointed state) and streams to `out/` as JSON
/// lines, with small micro-batches and frequent checkpoints so that kills land in every phase.
pub(crate) fn pipeline(dir: &Path) -> PathBuf {
    let text = r#"
[source]
paths = ["in.jsonl"]
[[plugin]]
name = "scale"
params = { columns = ["x"], a = 1.0, b = 4.0 }
[[plugin]]
name = "running-count"
params = { key = "key", output = "n" }
[sink]
path = "out"
format = "jsonl"
[stream]
batch-rows = 300
batch-ms = 20
checkpoint-ms = 60
poll-ms = 5
"#;
    let p = dir.join("p.toml");
    std::fs::write(&p, text).unwrap();
    p
}

pub(crate) fn line(seq: u64) -> String {
    format!(
        "{{\"seq\": {seq}, \"key\": \"k{}\", \"x\": {}.5}}\n",
        seq % 7,
        seq * 3
    )
}

pub(crate) fn start(dir: &Path, extra: &[&str]) -> Child {
    let mut c = quiver();
    c.current_dir(dir)
        .args(["run", "p.toml", "--stream"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    c.spawn().expect("starting quiver")
}

/// Every output row: (seq, x, n), from the committed files only.
pub(crate) fn output_rows(dir: &Path) -> Vec<(u64, f64, i64)> {
    let out = dir.join("out");
    let Ok(entries) = std::fs::read_dir(&out) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("part-") {
            continue;
        }
        for l in std::fs::read_to_string(e.path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            rows.push((
                v["seq"].as_u64().unwrap(),
                v["x"].as_f64().unwrap(),
                v["n"].as_i64().unwrap(),
            ));
        }
    }
    rows
}

/// The signal's number on Linux.
const SIGTERM: u32 = 15;

/// Asks a run to stop (SIGTERM): it takes a final checkpoint and exits. Sent only once the run
/// catches SIGTERM (its `SigCgt` mask in /proc), as a signal that comes before would kill it.
pub(crate) fn sigterm(child: &Child) {
    let proc_status = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught = std::fs::read_to_string(&proc_status)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        if caught & (1 << (SIGTERM - 1)) != 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not catch SIGTERM within a minute"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends SIGTERM and waits for a clean exit; returns stderr.
pub(crate) fn stop(child: Child) -> String {
    sigterm(&child);
    let out = finish(child);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stopped with {}: {err}", out.status);
    err
}

/// Appends `line(1)`, `line(2)`, … up to `total` (exclusive) to `input` from a thread, `chunk`
/// lines at a time with a pause of `pause_ms` between writes.
pub(crate) fn append_lines(
    input: &Path,
    total: u64,
    chunk: usize,
    pause_ms: u64,
    line: fn(u64) -> String,
) -> std::thread::JoinHandle<()> {
    let input = input.to_path_buf();
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(input)
            .unwrap();
        for seqs in (1..total).collect::<Vec<_>>().chunks(chunk) {
            let text: String = seqs.iter().map(|&s| line(s)).collect();
            f.write_all(text.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
    })
}

/// Checks that `rows` are rows `0..total` exactly once, each transformed, with its running
/// count per key.
pub(crate) fn assert_exactly_once(mut rows: Vec<(u64, f64, i64)>, total: u64) {
    rows.sort_by_key(|r| r.0);
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs.len() as u64, total, "rows were lost or repeated");
    assert_eq!(seqs, (0..total).collect::<Vec<_>>());
    for (seq, x, n) in rows {
        assert_eq!(x, ((seq * 3) as f64 + 0.5 - 1.0) / 4.0, "row {seq}");
        assert_eq!(n, (seq / 7 + 1) as i64, "running count of row {seq}");
    }
}

/// A pseudo-random pause between `lo` and `hi` ms (a fixed seed, so a failure can be replayed).
pub(crate) fn pause(state: &mut u64, lo: u64, hi: u64) -> Duration {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Duration::from_millis(lo + (*state >> 33) % (hi - lo))
}

/// Starts the run `times` times in `dir` and kills it with SIGKILL after a pseudo-random pause
/// between `lo` and `hi` ms each time.
pub(crate) fn kill_repeatedly(dir: &Path, times: usize, seed: u64, (lo, hi): (u64, u64)) {
    let mut state = seed;
    for _ in 0..times {
        let mut child = start(dir, &[]);
        std::thread::sleep(pause(&mut state, lo, hi));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
}

/// Waits until the output holds `rows` rows (or more), for at most a minute.
pub(crate) fn wait_for_rows(dir: &Path, rows: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while output_rows(dir).len() < rows {
        assert!(
            Instant::now() < deadline,
            "only {} of {rows} rows after a minute",
            output_rows(dir).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn twenty_kill_9s_while_data_flows_lose_and_repeat_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, line(0)).unwrap();
    pipeline(dir.path());
    // The writer appends 40 rows every 4 ms (10 000 rows/s), sometimes splitting a line
    // across two writes, for as long as the kills go on (about 4 s), then one chunk more: the
    // killed runs cannot have read the whole input, however slowly they start.
    let killing = Arc::new(AtomicBool::new(true));
    let writer = {
        let input = input.clone();
        let killing = killing.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(input)
                .unwrap();
            let mut seq = 1;
            let mut last = false;
            while !last {
                last = !killing.load(Ordering::SeqCst);
                let mut chunk = String::new();
                for _ in 0..40 {
                    chunk.push_str(&line(seq));
                    seq += 1;
                }
                let cut = if seq % 3 == 0 {
                    chunk.len() / 2
                } else {
                    chunk.len()
                };
                f.write_all(&chunk.as_bytes()[..cut]).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(2));
                f.write_all(&chunk.as_bytes()[cut..]).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            seq
        })
    };
    // Kill at pseudo-random moments (a fixed seed, so a failure can be replayed).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills = 0;
    while kills < 20 {
        let mut child = start(dir.path(), &[]);
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = 60 + (state >> 33) % 250;
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    killing.store(false, Ordering::SeqCst);
    let total: u64 = writer.join().unwrap();
    assert!(
        (output_rows(dir.path()).len() as u64) < total,
        "the killed runs should not have finished the input"
    );
    let child = start(dir.path(), &[]);
    wait_for_rows(dir.path(), total as usize);
    let err = stop(child);
    assert!(err.contains("resumed after checkpoint"), "{err}");

    let mut rows = output_rows(dir.path());
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs.len() as u64, total, "rows were lost or repeated");
    assert_eq!(seqs, (0..total).collect::<Vec<_>>());
    // The reference running count: rows of key k{seq % 7} up to and including this one.
    for (seq, x, n) in rows {
        let want = ((seq * 3) as f64 + 0.5 - 1.0) / 4.0;
        assert_eq!(x, want, "row {seq}");
        assert_eq!(n, (seq / 7 + 1) as i64, "running count of row {seq}");
    }
    // Nothing uncommitted is left behind.
    let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("part-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn batch_and_stream_modes_give_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..5000).map(line).collect();
    std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
    pipeline(dir.path());

    let mut c = quiver();
    c.current_dir(dir.path())
        .args(["run", "p.toml", "--workers", "1", "-o", "batch.jsonl"]);
    run_ok(c);
    let batch: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("batch.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let child = start(dir.path(), &[]);
    wait_for_rows(dir.path(), 5000);
    stop(child);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let streamed: Vec<serde_json::Value> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(batch.len(), 5000);
    assert_eq!(streamed, batch);
}

#[test]
fn a_malformed_line_is_named_and_a_damaged_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path());
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, format!("{}{}", line(0), line(1))).unwrap();
    let child = start(dir.path(), &[]);
    wait_for_rows(dir.path(), 2);
    stop(child);

    // A damaged manifest: the run refuses to start from it, naming the file.
    let job_dir = dir.path().join("out-checkpoints/out");
    let manifest = std::fs::read_dir(&job_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .max()
        .expect("a checkpoint manifest");
    let good = std::fs::read(&manifest).unwrap();
    let mut bad = good.clone();
    let at = bad.len() - 3;
    bad[at] ^= 1;
    std::fs::write(&manifest, &bad).unwrap();
    let out = finish(start(dir.path(), &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("damaged") && err.contains("manifest-") && err.contains("SHA-256"),
        "{err}"
    );
    std::fs::write(&manifest, &good).unwrap();

    // A malformed line stops the run with its line number; what came before stays committed.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    f.write_all(format!("{}{{\"seq\": 3, oops\n", line(2)).as_bytes())
        .unwrap();
    drop(f);
    let out = finish(start(dir.path(), &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("in.jsonl:4"), "{err}");
    assert_eq!(output_rows(dir.path()).len(), 2);

    // Starting over refuses to write the rows again next to the existing output.
    let out = finish(start(dir.path(), &["--from-beginning"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already holds output"), "{err}");
}

#[test]
fn the_metrics_endpoint_reports_rows_checkpoints_and_plugin_time() {
    use std::io::{BufRead, Read};
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..3000).map(line).collect();
    std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
    pipeline(dir.path());
    let mut child = start(dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("metrics: http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {first:?}"))
        .to_string();
    wait_for_rows(dir.path(), 3000);
    // The metrics are rendered every 100 ms, after the output they count is committed.
    std::thread::sleep(Duration::from_millis(400));
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    conn.read_to_string(&mut page).unwrap();
    let value = |name: &str| -> f64 {
        page.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or_else(|| panic!("{name} missing:\n{page}"))
    };
    assert_eq!(value("quiver_stream_rows_in_total{job=\"out\"}"), 3000.0);
    assert_eq!(value("quiver_stream_rows_out_total{job=\"out\"}"), 3000.0);
    assert_eq!(value("quiver_stream_lag_bytes{job=\"out\"}"), 0.0);
    assert!(value("quiver_stream_checkpoints_total{job=\"out\"}") >= 1.0);
    assert!(value("quiver_stream_checkpoint_size_bytes{job=\"out\"}") > 0.0);
    assert!(
        value("quiver_plugin_seconds_total{job=\"out\",plugin=\"scale\",position=\"0\"}") > 0.0
    );
    assert!(value("quiver_plugin_calls_total{job=\"out\",plugin=\"scale\",position=\"0\"}") >= 1.0);
    sigterm(&child);
    let out = finish(child);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(out.status.success(), "{rest}");
}
