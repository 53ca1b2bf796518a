//! Event-time windows in streaming mode, against a reference computed here: out-of-order and
//! late events, late events sent to the dead letters, and the open windows carried through
//! SIGKILLs in the checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::stream::{append_lines, kill_repeatedly, start};
use crate::support::*;

const SIZE: i64 = 1000;
const DELAY: i64 = 300;
const USERS: u64 = 5;

/// Event `seq`: its user, event time (ms) and amount. Times run forward about 20 ms per event
/// with jitter of up to ±450 ms, so some events arrive out of order and some later than the
/// watermark's delay allows.
fn event(seq: u64) -> (String, i64, f64) {
    let h = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    let jitter = (h % 901) as i64 - 450;
    (
        format!("u{}", h % USERS),
        (seq as i64) * 20 + jitter,
        ((h >> 20) % 1000) as f64 / 4.0,
    )
}

fn event_line(seq: u64) -> String {
    let (user, ts, amount) = event(seq);
    format!("{{\"seq\": {seq}, \"user\": \"{user}\", \"ts\": {ts}, \"amount\": {amount}}}\n")
}

/// One closed window: (user, start, end) → (count, sum).
type Windows = BTreeMap<(String, i64, i64), (i64, f64)>;

/// The reference: per-row watermark (largest earlier on-time event time − delay), late
/// events, and the tumbling windows that end at or before the final watermark.
fn reference(events: u64) -> (Windows, BTreeSet<u64>) {
    let mut max: Option<i64> = None;
    let mut late = BTreeSet::new();
    let mut all: Windows = BTreeMap::new();
    for seq in 0..events {
        let (user, ts, amount) = event(seq);
        if max.is_some_and(|m| ts < m - DELAY) {
            late.insert(seq);
            continue;
        }
        max = Some(max.map_or(ts, |m| m.max(ts)));
        let start = ts.div_euclid(SIZE) * SIZE;
        let w = all.entry((user, start, start + SIZE)).or_insert((0, 0.0));
        w.0 += 1;
        w.1 += amount;
    }
    let watermark = max.unwrap() - DELAY;
    all.retain(|(_, _, end), _| *end <= watermark);
    (all, late)
}

fn windows_out(dir: &Path) -> Windows {
    let mut out = BTreeMap::new();
    for p in files_below(&dir.join("out")) {
        if p.to_string_lossy().contains("_dead-letter") {
            continue;
        }
        for l in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = (
                v["user"].as_str().unwrap().to_string(),
                v["window_start"].as_i64().unwrap(),
                v["window_end"].as_i64().unwrap(),
            );
            let value = (
                v["count"].as_i64().unwrap(),
                v["sum_amount"].as_f64().unwrap(),
            );
            assert!(
                out.insert(key.clone(), value).is_none(),
                "window {key:?} came out twice"
            );
        }
    }
    out
}

fn late_out(dir: &Path) -> BTreeSet<u64> {
    let mut late = BTreeSet::new();
    for p in files_below(&dir.join("out/_dead-letter")) {
        for l in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["_error"].as_str().unwrap().contains("late event"), "{v}");
            assert!(
                late.insert(v["seq"].as_u64().unwrap()),
                "late event {v} twice"
            );
        }
    }
    late
}

#[test]
fn tumbling_windows_with_late_events_match_the_reference_through_kill_9s() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[source]
paths = ["in.jsonl"]
[[plugin]]
name = "select"
params = {{ keep = ["seq", "user", "ts", "amount"] }}
[sink]
path = "out"
format = "jsonl"
[stream]
batch-rows = 200
batch-ms = 20
checkpoint-ms = 50
poll-ms = 5
on-late = "dead-letter"
[stream.window]
kind = "tumbling"
size-ms = {SIZE}
time-column = "ts"
keys = ["user"]
watermark-delay-ms = {DELAY}
aggregates = [{{ func = "count" }}, {{ func = "sum", column = "amount" }}]
"#
    );
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    const EVENTS: u64 = 12_000;
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, event_line(0)).unwrap();
    let writer = append_lines(&input, EVENTS, 60, 5, event_line);
    kill_repeatedly(dir.path(), 8, 0x1234_5678_9abc_def1, (80, 280));
    writer.join().unwrap();
    let out = finish(start(dir.path(), &["--stop-at-end"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    let (want, want_late) = reference(EVENTS);
    assert!(want_late.len() > 50, "the data should hold late events");
    assert!(want.len() > 100);
    let got = windows_out(dir.path());
    assert_eq!(got.len(), want.len(), "windows lost or repeated");
    for (k, (count, sum)) in &want {
        let (c, s) = got
            .get(k)
            .unwrap_or_else(|| panic!("window {k:?} is missing"));
        assert_eq!(c, count, "count of {k:?}");
        assert!((s - sum).abs() < 1e-6, "sum of {k:?}: {s} != {sum}");
    }
    assert_eq!(late_out(dir.path()), want_late);
}
