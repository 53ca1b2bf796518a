//! Error policies: what a run does when a plugin fails on a batch.
//!
//! - `fail` (the default) stops the run; nothing is written.
//! - `skip` drops the batch at that plugin and counts its rows.
//! - `dead-letter` finds the rows that make the plugin fail by bisection: the batch is split in
//!   halves, each half is tried again, and so on down to single rows. Rows that pass continue
//!   down the chain (in their original order); the failing rows go to the dead-letter dataset
//!   with the error, the plugin and the partition. Bisection costs about
//!   2 · log2(rows) calls per bad row; it is bounded by [`MAX_FAILED_CALLS`], past which the
//!   remaining failing slices go to dead letters whole. Failures that are not about the rows
//!   (a time limit: every probe would wait for it) are not bisected.
//!
//! Before any policy applies, a failing batch is retried up to `retries` times (a trapped
//! instance is replaced first), for failures that may not happen again.
//!
//! The other "what to do when X fails" choices live here too: a streaming input line that does
//! not parse ([`OnMalformed`]), an event behind the watermark ([`LatePolicy`]), and what the
//! policies did over a run ([`PolicyCounts`]).

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

/// Failed calls bisection may make on one batch before it stops splitting.
pub const MAX_FAILED_CALLS: usize = 256;

/// What to do when a plugin fails on a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Stop the run; nothing is committed.
    #[default]
    Fail,
    /// Drop the batch and count it.
    Skip,
    /// Send the failing rows (found by bisection) to the dead-letter dataset.
    DeadLetter,
}

/// What bisection made of a failing batch.
#[derive(Debug)]
pub struct Bisected<E> {
    /// Output of the slices that passed, in input order.
    pub output: Vec<RecordBatch>,
    /// Slices that failed (single rows, unless splitting stopped early) with their errors.
    pub dead: Vec<(RecordBatch, E)>,
    /// Calls made.
    pub calls: usize,
}

/// Splits a batch whose whole failed with `error` until the failing rows are isolated.
///
/// `run` processes a slice; `splittable` says whether an error is worth splitting on.
pub fn bisect<E>(
    batch: &RecordBatch,
    error: E,
    mut run: impl FnMut(&RecordBatch) -> Result<Vec<RecordBatch>, E>,
    splittable: impl Fn(&E) -> bool,
) -> Bisected<E> {
    let mut result = Bisected {
        output: Vec::new(),
        dead: Vec::new(),
        calls: 0,
    };
    let mut failed_calls = 1;
    // A stack of slices still to try (right half pushed first, so the left one runs first and
    // output keeps the input's order), each with the error it failed with if already tried.
    let mut stack: Vec<(RecordBatch, Option<E>)> = vec![(batch.clone(), Some(error))];
    while let Some((slice, failed)) = stack.pop() {
        let error = match failed {
            Some(e) => e,
            None => {
                result.calls += 1;
                match run(&slice) {
                    Ok(out) => {
                        result.output.extend(out);
                        continue;
                    }
                    Err(e) => {
                        failed_calls += 1;
                        e
                    }
                }
            }
        };
        let rows = slice.num_rows();
        if rows <= 1 || !splittable(&error) || failed_calls >= MAX_FAILED_CALLS {
            result.dead.push((slice, error));
            continue;
        }
        let mid = rows / 2;
        stack.push((slice.slice(mid, rows - mid), None));
        stack.push((slice.slice(0, mid), None));
    }
    result
}

/// What error policies did over a run, per plugin position.
#[derive(Debug, Clone, Default)]
pub struct PolicyCounts {
    /// Batches dropped (skip policy).
    pub skipped_batches: u64,
    /// Rows of those batches.
    pub skipped_rows: u64,
    /// Rows sent to dead letters.
    pub dead_rows: u64,
    /// Retries of failing batches.
    pub retries: u64,
}

/// What to do with a line that does not parse (`[stream] on-malformed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMalformed {
    /// Stop the run, naming the line (default).
    #[default]
    Fail,
    /// Drop the line, with a warning.
    Skip,
    /// Write the line to the dead letters, with why.
    DeadLetter,
}

/// What to do with an event behind the watermark (`[stream] on-late`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicy {
    /// Drop it (counted in the metrics).
    #[default]
    Drop,
    /// Write it to the dead letters, with the watermark it missed.
    DeadLetter,
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;

    fn batch(values: impl IntoIterator<Item = i64>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from_iter_values(values))],
        )
        .unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    /// A transform that fails on any slice holding a value divisible by 97, and doubles
    /// values otherwise.
    fn picky(b: &RecordBatch) -> Result<Vec<RecordBatch>, String> {
        let v = values(std::slice::from_ref(b));
        match v.iter().find(|x| *x % 97 == 0) {
            Some(bad) => Err(format!("bad value {bad}")),
            None => Ok(vec![batch(v.iter().map(|x| x * 2))]),
        }
    }

    #[test]
    fn isolates_exactly_the_failing_rows_and_keeps_order() {
        let input = batch(1..=1000);
        let first = picky(&input).unwrap_err();
        let r = bisect(&input, first, picky, |_| true);
        let bad: Vec<i64> = (1..=1000).filter(|x| x % 97 == 0).collect();
        let good: Vec<i64> = (1..=1000).filter(|x| x % 97 != 0).map(|x| x * 2).collect();
        assert_eq!(values(&r.output), good);
        let dead: Vec<i64> = r
            .dead
            .iter()
            .flat_map(|(b, _)| values(std::slice::from_ref(b)))
            .collect();
        assert_eq!(dead, bad);
        assert!(r
            .dead
            .iter()
            .all(|(b, e)| b.num_rows() == 1 && e.starts_with("bad value")));
        // About 2·log2(1000) calls per bad row, far fewer than one call per row.
        assert!(r.calls < bad.len() * 2 * 11, "{} calls", r.calls);
    }

    #[test]
    fn errors_not_worth_splitting_send_the_whole_batch() {
        let input = batch(1..=100);
        let r = bisect(&input, "timeout".to_string(), picky, |e| e != "timeout");
        assert_eq!(r.calls, 0);
        assert_eq!(r.dead.len(), 1);
        assert_eq!(r.dead[0].0.num_rows(), 100);
    }

    #[test]
    fn splitting_stops_after_the_failed_call_budget() {
        // Every row fails: bisection gives up and dead-letters the remaining slices whole.
        let input = batch(0..100_000);
        let r = bisect(
            &input,
            "all bad".to_string(),
            |_| Err("all bad".to_string()),
            |_| true,
        );
        // Past the budget, only the slices already split off are tried (one per level).
        assert!(r.calls < MAX_FAILED_CALLS + 64, "{} calls", r.calls);
        assert_eq!(
            r.dead.iter().map(|(b, _)| b.num_rows()).sum::<usize>(),
            100_000
        );
        assert!(r.output.is_empty());
    }
}
