//! Streaming sources and sinks through the real binary: a directory files arrive in, HTTP
//! ingest, stdin to stdout, a CSV tail; malformed lines sent to dead letters; fitted plugins
//! keeping running statistics across restarts.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::stream::{
    append_lines, assert_exactly_once, kill_repeatedly, line, output_rows, pause, sigterm, start,
    stop, wait_for_rows,
};
use crate::support::*;

/// A pipeline like the kill test's (scale x, running count per key, JSON lines to `out/`)
/// with `source` and `stream` as given.
fn pipeline_with(dir: &Path, source: &str, sink: &str, stream: &str) {
    let text = format!(
        r#"
[source]
{source}
[[plugin]]
name = "scale"
params = {{ columns = ["x"], a = 1.0, b = 4.0 }}
[[plugin]]
name = "running-count"
params = {{ key = "key", output = "n" }}
[sink]
{sink}
format = "jsonl"
[stream]
batch-rows = 300
batch-ms = 20
checkpoint-ms = 60
poll-ms = 5
{stream}
"#
    );
    std::fs::write(dir.join("p.toml"), text).unwrap();
}

#[test]
fn a_directory_source_reads_each_arriving_file_once_in_arrival_order_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    pipeline_with(dir.path(), r#"paths = ["inbox"]"#, r#"path = "out""#, "");
    const FILES: u64 = 40;
    const PER_FILE: u64 = 250;
    fn arrive(inbox: &Path, f: u64) {
        let text: String = (f * PER_FILE..(f + 1) * PER_FILE).map(line).collect();
        // Written under a hidden name and renamed in, as files should arrive.
        let hidden = inbox.join(format!(".f{f:03}.jsonl"));
        std::fs::write(&hidden, text).unwrap();
        // Names that do not sort in arrival order: order must come from arrival.
        std::fs::rename(&hidden, inbox.join(format!("{:03}.jsonl", (f * 37) % 101))).unwrap();
    }
    arrive(&inbox, 0);
    let writer = {
        let inbox = inbox.clone();
        std::thread::spawn(move || {
            for f in 1..FILES {
                std::thread::sleep(Duration::from_millis(40));
                arrive(&inbox, f);
            }
        })
    };
    kill_repeatedly(dir.path(), 6, 0x2545_f491_4f6c_dd1d, (80, 300));
    writer.join().unwrap();
    let child = start(dir.path(), &[]);
    wait_for_rows(dir.path(), (FILES * PER_FILE) as usize);
    stop(child);
    assert_exactly_once(output_rows(dir.path()), FILES * PER_FILE);
    // Arrival order: the committed files, in epoch order, hold the rows in sequence.
    let mut parts: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    parts.sort();
    let seqs: Vec<u64> = parts
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "files were not read in arrival order"
    );
}

/// The kill test's pipeline taking rows from an HTTP ingest endpoint on a free port.
fn http_pipeline(dir: &Path) {
    pipeline_with(dir, "", r#"path = "out""#, r#"listen = "127.0.0.1:0""#);
}

/// Starts `quiver run p.toml --stream` and reads stderr until it names the ingest address.
fn start_ingest(dir: &Path) -> (Child, String) {
    let mut child = start(dir, &[]);
    let stderr = child.stderr.take().unwrap();
    match ingest_address(stderr) {
        Ok((addr, _)) => (child, addr),
        Err(seen) => {
            let status = child.wait().unwrap();
            panic!("quiver ended ({status}) before naming its ingest address: {seen}");
        }
    }
}

/// The address in the `ingest: http://ADDR/ingest` line, or what was said instead; keeps
/// reading stderr afterwards so the child never blocks on it, the thread doing so giving
/// everything said before and after the address once stderr closes.
fn ingest_address(
    stderr: std::process::ChildStderr,
) -> Result<(String, std::thread::JoinHandle<String>), String> {
    let mut stderr = std::io::BufReader::new(stderr);
    let mut seen = String::new();
    loop {
        let mut l = String::new();
        if stderr.read_line(&mut l).unwrap() == 0 {
            return Err(seen);
        }
        if let Some(addr) = l
            .trim()
            .strip_prefix("ingest: http://")
            .and_then(|a| a.strip_suffix("/ingest"))
        {
            let addr = addr.to_string();
            let said = std::thread::spawn(move || {
                let mut rest = String::new();
                let _ = stderr.read_to_string(&mut rest);
                seen + &l + &rest
            });
            return Ok((addr, said));
        }
        seen.push_str(&l);
    }
}

/// POSTs `body` to `addr`; the status code, or `None` if the connection failed.
fn post(addr: &str, content_type: &str, body: &[u8]) -> Option<u16> {
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).ok()?;
    conn.write_all(body).ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

#[test]
fn http_ingest_keeps_every_acknowledged_row_exactly_once_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    pipeline_with(
        dir.path(),
        "",
        r#"path = "out""#,
        // Small segments, so that the log rolls and is trimmed many times while it is killed.
        "listen = \"127.0.0.1:0\"\nwal-segment-bytes = 8192",
    );
    let (mut child, mut addr) = start_ingest(dir.path());
    let mut acknowledged = Vec::new();
    let mut unacknowledged = Vec::new();
    let mut state = 0x51_7cc1_b727_220a;
    const REQUESTS: u64 = 120;
    const ROWS: u64 = 50;
    for r in 0..REQUESTS {
        let seqs = r * ROWS..(r + 1) * ROWS;
        let body: String = seqs.clone().map(line).collect();
        match post(&addr, "application/x-ndjson", body.as_bytes()) {
            Some(200) => acknowledged.extend(seqs),
            _ => unacknowledged.extend(seqs),
        }
        if r % 20 == 15 {
            // While the driver is somewhere in reading, transforming or committing.
            std::thread::sleep(pause(&mut state, 1, 60));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            (child, addr) = start_ingest(dir.path());
        }
    }
    assert!(acknowledged.len() as u64 > REQUESTS * ROWS / 2);
    wait_for_rows(dir.path(), acknowledged.len());
    std::thread::sleep(Duration::from_millis(300));
    stop(child);
    let mut rows = output_rows(dir.path());
    rows.sort_by_key(|r| r.0);
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(unique.len(), seqs.len(), "a row came out twice");
    for s in &acknowledged {
        assert!(
            seqs.binary_search(s).is_ok(),
            "acknowledged row {s} is missing"
        );
    }
    for s in &seqs {
        assert!(
            acknowledged.contains(s) || unacknowledged.contains(s),
            "row {s} was never sent"
        );
    }
    for (seq, x, _) in rows {
        assert_eq!(x, ((seq * 3) as f64 + 0.5 - 1.0) / 4.0, "row {seq}");
    }
    // After the final checkpoint only the newest segment is left, and it starts far into the
    // log: the others were read, committed and deleted.
    let wal = dir.path().join("out-checkpoints").join("out.wal");
    let segments: Vec<String> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let base: u64 = segments[0].trim_end_matches(".wal").parse().unwrap();
    assert!(base > 50_000, "{segments:?}");
}

/// Rows `seqs` (as [`line`] makes them) as an Arrow IPC stream, in two record batches.
fn arrow_body(seqs: std::ops::Range<u64>) -> Vec<u8> {
    use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("x", DataType::Float64, false),
    ]));
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
    let all: Vec<u64> = seqs.collect();
    for part in all.chunks(all.len().div_ceil(2)) {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                std::sync::Arc::new(Int64Array::from_iter_values(part.iter().map(|&s| s as i64))),
                std::sync::Arc::new(StringArray::from_iter_values(
                    part.iter().map(|s| format!("k{}", s % 7)),
                )),
                std::sync::Arc::new(Float64Array::from_iter_values(
                    part.iter().map(|&s| (s * 3) as f64 + 0.5),
                )),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
    }
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

/// Arrow IPC bodies (and JSON lines between them) posted to a real run, which is killed with
/// SIGKILL right after acknowledgements — the first one included, before the run has even
/// taken its schema from it: every row comes out exactly once, with its value and running
/// count, read back from the log's Arrow records.
#[test]
fn arrow_ipc_bodies_acknowledged_before_a_kill_9_come_out_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    http_pipeline(dir.path());
    let (mut child, mut addr) = start_ingest(dir.path());
    const REQUESTS: u64 = 12;
    const ROWS: u64 = 40;
    for r in 0..REQUESTS {
        let seqs = r * ROWS..(r + 1) * ROWS;
        let status = if r % 3 == 2 {
            let body: String = seqs.clone().map(line).collect();
            post(&addr, "application/x-ndjson", body.as_bytes())
        } else {
            post(
                &addr,
                "application/vnd.apache.arrow.stream",
                &arrow_body(seqs),
            )
        };
        assert_eq!(status, Some(200), "request {r}");
        if [0, 4, 7].contains(&r) {
            child.kill().unwrap(); // SIGKILL, right after the acknowledgement
            child.wait().unwrap();
            (child, addr) = start_ingest(dir.path());
        }
    }
    wait_for_rows(dir.path(), (REQUESTS * ROWS) as usize);
    stop(child);
    assert_exactly_once(output_rows(dir.path()), REQUESTS * ROWS);
    // The log holds the Arrow bodies as they came, not JSON lines.
    let wal = dir.path().join("out-checkpoints").join("out.wal");
    assert!(std::fs::read_dir(&wal)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".jsonl")));
    // The run's schema came from the first body, an Arrow stream.
    assert!(dir
        .path()
        .join("out-checkpoints/out/schema.arrows")
        .exists());
}

#[test]
fn a_write_ahead_log_of_an_older_version_is_refused_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    http_pipeline(dir.path());
    let wal = dir.path().join("out-checkpoints").join("out.wal");
    std::fs::create_dir_all(&wal).unwrap();
    let old = wal.join("00000000000000000000.jsonl");
    std::fs::write(&old, line(0)).unwrap();
    let err = run_err({
        let mut c = quiver();
        c.current_dir(dir.path())
            .args(["run", "p.toml", "--stream"]);
        c
    });
    contains_all(
        &err,
        &[
            "written by an older Quiver",
            "00000000000000000000.jsonl",
            "--stop-at-end",
            "out.wal",
        ],
    );
    // Left as it was.
    assert_eq!(std::fs::read_to_string(&old).unwrap(), line(0));
}

#[test]
fn clients_holding_connections_cannot_take_the_file_descriptors_the_run_needs() {
    let dir = tempfile::tempdir().unwrap();
    http_pipeline(dir.path());
    // Few file descriptors: were every connection below accepted, they would take them all
    // and the run could no longer write its checkpoints and output files.
    let mut child = quiver_under("prlimit", &["--nofile=64:64"])
        .current_dir(dir.path())
        .args(["run", "p.toml", "--stream"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, said) = ingest_address(child.stderr.take().unwrap())
        .unwrap_or_else(|seen| panic!("quiver ended before naming its ingest address: {seen}"));
    let target = addr.parse().unwrap();
    let held: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap())
        .collect();
    // Rows sent meanwhile wait their turn behind the held connections ...
    let poster = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let body: String = (0..50).map(line).collect();
            post(&addr, "application/x-ndjson", body.as_bytes())
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the run ended");
    // ... and are taken once those close.
    drop(held);
    assert_eq!(poster.join().unwrap(), Some(200));
    wait_for_rows(dir.path(), 50);
    sigterm(&child);
    let status = finish(child).status;
    let said = said.join().unwrap();
    assert!(status.success(), "{status}: {said}");
    assert!(!said.contains("Too many open files"), "{said}");
    assert_exactly_once(output_rows(dir.path()), 50);
}

#[test]
fn the_metrics_endpoint_counts_ingest_requests_rows_and_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    http_pipeline(dir.path());
    let mut child = start(dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    // Every stderr line, as it comes.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for l in stderr.lines() {
            if lines_tx.send(l.unwrap()).is_err() {
                break;
            }
        }
    });
    let address = |prefix: &str, suffix: &str| loop {
        let l = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no {prefix} line: {e}"));
        if let Some(a) = l.strip_prefix(prefix).and_then(|a| a.strip_suffix(suffix)) {
            break a.to_string();
        }
    };
    let ingest = address("ingest: http://", "/ingest");
    for r in 0..2u64 {
        let body: String = (r * 50..(r + 1) * 50).map(line).collect();
        assert_eq!(
            post(&ingest, "application/x-ndjson", body.as_bytes()),
            Some(200)
        );
    }
    assert_eq!(
        post(&ingest, "application/x-ndjson", b"{\"seq\": oops}\n"),
        Some(400)
    );
    // The metrics endpoint starts once the first rows have given the schema.
    let metrics = address("metrics: http://", "/metrics");
    wait_for_rows(dir.path(), 100);
    // The page is rendered every 100 ms.
    std::thread::sleep(Duration::from_millis(400));
    let mut conn = std::net::TcpStream::connect(&metrics).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    conn.read_to_string(&mut page).unwrap();
    for sample in [
        "quiver_ingest_requests_total{job=\"out\",outcome=\"accepted\"} 2\n",
        "quiver_ingest_requests_total{job=\"out\",outcome=\"refused\"} 1\n",
        "quiver_ingest_rows_total{job=\"out\"} 100\n",
        "quiver_ingest_fsyncs_total{job=\"out\"} 2\n",
        "quiver_stream_rows_out_total{job=\"out\"} 100\n",
    ] {
        assert!(page.contains(sample), "{sample} in {page}");
    }
    stop(child);
    assert_exactly_once(output_rows(dir.path()), 100);
}

#[test]
fn stdin_streams_to_stdout_until_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    pipeline_with(dir.path(), r#"paths = ["-"]"#, r#"path = "-""#, "");
    let mut child = quiver()
        .current_dir(dir.path())
        .args(["run", "p.toml", "--stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for chunk in (0..3000u64).collect::<Vec<_>>().chunks(100) {
            let text: String = chunk.iter().map(|&s| line(s)).collect();
            stdin.write_all(text.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        // Dropping stdin closes it: the run ends with a final checkpoint.
    });
    feeder.join().unwrap();
    let out = finish(child);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let rows: Vec<(u64, f64, i64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["x"].as_f64().unwrap(),
                v["n"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_exactly_once(rows, 3000);
    assert!(err.contains("3000 rows in, 3000 rows out"), "{err}");
}

/// Writes 1500 rows `seq,key,x` to `path`, row `bad` (past the first 1000 lines, from which
/// the schema is inferred) with `not-a-number` for `x`; returns the other rows' `seq`s.
pub(crate) fn write_csv_with_a_malformed_row(path: &Path, bad: u64) -> Vec<u64> {
    assert!(bad >= 1000, "the first 1000 lines set the schema");
    let mut text = String::from("seq,key,x\n");
    let mut good = Vec::new();
    for seq in 0..1500u64 {
        if seq == bad {
            text.push_str(&format!("{seq},k3,not-a-number\n"));
            continue;
        }
        text.push_str(&format!("{seq},k{},{}.5\n", seq % 7, seq * 3));
        good.push(seq);
    }
    std::fs::write(path, text).unwrap();
    good
}

#[test]
fn a_csv_tail_sends_a_malformed_record_to_the_dead_letters_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    pipeline_with(
        dir.path(),
        r#"paths = ["in.csv"]"#,
        r#"path = "out""#,
        r#"on-malformed = "dead-letter""#,
    );
    let good = write_csv_with_a_malformed_row(&dir.path().join("in.csv"), 1200);
    let out = finish(start(dir.path(), &["--stop-at-end"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 malformed lines") && err.contains("1 dead letters"),
        "{err}"
    );
    let rows = output_rows(dir.path());
    let mut seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    seqs.sort();
    assert_eq!(seqs, good);
    // The dead letter names the file and line (the header is line 1, row 1200 is line 1202).
    let dead = files_below(&dir.path().join("out/_dead-letter"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let text = std::fs::read_to_string(&dead[0]).unwrap();
    let letter: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(
        letter["_source"].as_str().unwrap().ends_with("in.csv:1202"),
        "{letter}"
    );
    assert_eq!(letter["_line"], "1200,k3,not-a-number");
    assert!(
        letter["_error"].as_str().unwrap().contains("not-a-number"),
        "{letter}"
    );
}

/// (mean, population std) of `xs`.
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn a_fitted_plugin_keeps_running_statistics_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // One micro-batch per run (no periodic checkpoint, no time limit), so the reference is
    // exact: the first run is scaled with the statistics of its rows, the second with those of
    // both runs' rows, carried over in the checkpoint.
    let text = r#"
[source]
paths = ["in.jsonl"]
[[plugin]]
name = "standard-scaler"
params = { columns = ["x"] }
[sink]
path = "out"
format = "jsonl"
[stream]
batch-rows = 100000
batch-ms = 600000
checkpoint-ms = 0
"#;
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    let first: Vec<f64> = (0..800).map(|i| ((i * 37) % 101) as f64 * 0.5).collect();
    let second: Vec<f64> = (0..300).map(|i| 100.0 + ((i * 13) % 29) as f64).collect();
    let write = |xs: &[f64], from: usize| -> String {
        xs.iter()
            .enumerate()
            .map(|(i, x)| format!("{{\"seq\": {}, \"x\": {x}}}\n", from + i))
            .collect()
    };
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, write(&first, 0)).unwrap();
    run_ok({
        let mut c = quiver();
        c.current_dir(dir.path())
            .args(["run", "p.toml", "--stream", "--stop-at-end"]);
        c
    });
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    f.write_all(write(&second, first.len()).as_bytes()).unwrap();
    drop(f);
    let err = run_ok({
        let mut c = quiver();
        c.current_dir(dir.path())
            .args(["run", "p.toml", "--stream", "--stop-at-end"]);
        c
    });
    assert!(err.contains("resumed after checkpoint 1"), "{err}");
    let mut scaled = std::collections::BTreeMap::new();
    for p in files_below(&dir.path().join("out")) {
        for l in std::fs::read_to_string(p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            scaled.insert(
                v["seq"].as_u64().unwrap() as usize,
                v["x"].as_f64().unwrap(),
            );
        }
    }
    assert_eq!(scaled.len(), first.len() + second.len());
    let (m1, s1) = mean_std(&first);
    let all: Vec<f64> = first.iter().chain(&second).copied().collect();
    let (m2, s2) = mean_std(&all);
    for (seq, got) in scaled {
        let (x, m, s) = if seq < first.len() {
            (first[seq], m1, s1)
        } else {
            (second[seq - first.len()], m2, s2)
        };
        let want = (x - m) / s;
        assert!((got - want).abs() < 1e-9, "row {seq}: {got} != {want}");
    }
}

#[test]
fn a_damaged_state_blob_and_a_changed_chain_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    pipeline_with(dir.path(), r#"paths = ["in.jsonl"]"#, r#"path = "out""#, "");
    let text: String = (0..100).map(line).collect();
    std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
    let run = |dir: &Path| {
        let mut c = quiver();
        c.current_dir(dir)
            .args(["run", "p.toml", "--stream", "--stop-at-end"]);
        c
    };
    run_ok(run(dir.path()));

    // One flipped byte in the saved running counts: detected by its checksum, never used.
    let blobs = files_below(&dir.path().join("out-checkpoints/out/state"));
    let blob = blobs.last().expect("a state blob").clone();
    let good = std::fs::read(&blob).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x20;
    std::fs::write(&blob, &bad).unwrap();
    let err = run_err(run(dir.path()));
    assert!(err.contains("damaged") && err.contains("SHA-256"), "{err}");
    assert!(
        err.contains(&blob.file_name().unwrap().to_string_lossy().into_owned()),
        "{err}"
    );
    std::fs::write(&blob, &good).unwrap();

    // The same job with one plugin less: its saved state no longer lines up.
    let p = std::fs::read_to_string(dir.path().join("p.toml")).unwrap();
    let fewer = p.replace(
        "[[plugin]]\nname = \"scale\"\nparams = { columns = [\"x\"], a = 1.0, b = 4.0 }\n",
        "",
    );
    assert_ne!(p, fewer);
    std::fs::write(dir.path().join("p.toml"), fewer).unwrap();
    let err = run_err(run(dir.path()));
    assert!(
        err.contains("chain of 2 plugins, but the pipeline has 1"),
        "{err}"
    );
}

#[test]
fn three_partitions_keep_exact_running_counts_per_key_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    // Partitioned by the counting key, so each key's count lives in one task's state.
    pipeline_with(
        dir.path(),
        r#"paths = ["in.jsonl"]"#,
        r#"path = "out""#,
        "[partition]\nby = [\"key\"]\ncount = 3",
    );
    const TOTAL: u64 = 15_000;
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, line(0)).unwrap();
    let writer = append_lines(&input, TOTAL, 50, 4, line);
    kill_repeatedly(dir.path(), 8, 0x0dd_b1a5_e5ba_d5ee, (80, 300));
    writer.join().unwrap();
    let child = start(dir.path(), &[]);
    wait_for_rows(dir.path(), TOTAL as usize);
    stop(child);
    assert_exactly_once(output_rows(dir.path()), TOTAL);
    // Every partition wrote files of its own, and each key stayed in one partition.
    let mut partition_of_key = std::collections::BTreeMap::new();
    for p in files_below(&dir.path().join("out")) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let partition: u32 = name[5..10].parse().unwrap();
        for l in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = v["key"].as_str().unwrap().to_string();
            let seen = partition_of_key.entry(key.clone()).or_insert(partition);
            assert_eq!(*seen, partition, "key {key} in two partitions");
        }
    }
    let used: std::collections::BTreeSet<u32> = partition_of_key.values().copied().collect();
    assert!(
        used.len() > 1,
        "all 7 keys landed in one partition: {used:?}"
    );
}
