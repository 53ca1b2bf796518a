//! `running-count`: how many rows with the same key have been seen so far, this one included
//! (a cumulative count per entity: the 1st, 2nd, … event of a user).
//!
//! The counts are state kept across batches. In streaming mode the host saves them in every
//! checkpoint and restores them after a restart, so a count never skips or repeats even when
//! the process is killed. Keys are the non-null values of a utf8 or integer column; a row with
//! a null key gets a null count and counts for nothing. To count per key in parallel, partition
//! the stream by the same key, so that each key lives in one instance.

use quiver_sdk::categories::{self, category_field, key_at};
use quiver_sdk::prelude::*;

// Counts per key with a fast hash (see `categories::KeyMap`).
type KeyMap<V> = categories::KeyMap<V, rustc_hash::FxBuildHasher>;

/// The plugin: its parameters and the counts so far.
struct RunningCount {
    key: String,
    output: String,
    counts: KeyMap<u64>,
}

impl Plugin for RunningCount {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "running-count",
            env!("CARGO_PKG_VERSION"),
            "adds the number of rows seen so far with the row's key, itself included (int64); the counts are checkpointed in streaming mode",
        )
        .param(ParamSpec::text("key", "the utf8 or integer column to count by").required())
        .param(
            ParamSpec::text("output", "name of the added count column")
                .default(ParamValue::Text("running_count".into())),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        Ok(RunningCount {
            key: params.text("key").unwrap_or_default().to_string(),
            output: params.text("output").unwrap_or("running_count").to_string(),
            counts: KeyMap::default(),
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let (field, _) = category_field(input, &self.key)?;
        Ok(Plan::passthrough(input).read(&self.key).computed(
            &self.output,
            DataType::Int64,
            field.nullable,
        ))
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows as usize;
        let column = &input.columns[0];
        let counts = (0..rows)
            .map(|i| match key_at(column, i) {
                Some(k) => {
                    let n = self.counts.entry(k);
                    *n += 1;
                    *n as i64
                }
                None => 0,
            })
            .collect();
        let out = Column::from_vec::<i64>(
            &self.output,
            DataType::Int64,
            counts,
            column.validity.clone(),
        );
        Ok(vec![OutputBatch::all_rows(input.rows, vec![out])])
    }
}

impl State for RunningCount {
    /// Every key with its count.
    type Saved = KeyMap<u64>;

    fn snapshot(&self) -> Result<Option<Self::Saved>, PluginError> {
        Ok(Some(self.counts.clone()))
    }

    fn restore(&mut self, saved: Self::Saved) -> Result<(), PluginError> {
        self.counts = saved;
        Ok(())
    }
}

quiver_sdk::export_stateful!(RunningCount);

#[cfg(test)]
mod tests {
    use super::*;

    fn text_batch(keys: &[Option<&str>]) -> Batch {
        let mut b = StringColumnBuilder::with_capacity(keys.len(), 0);
        for k in keys {
            b.push(k.map(str::as_bytes));
        }
        Batch {
            rows: keys.len() as u32,
            columns: vec![b.finish("k", DataType::Utf8)],
        }
    }

    fn counts(out: &[OutputBatch]) -> Vec<i64> {
        match &out[0].columns[0].values {
            Values::I64(v) => v.clone(),
            other => panic!("expected int64 counts, got {other:?}"),
        }
    }

    fn plugin() -> RunningCount {
        RunningCount {
            key: "k".into(),
            output: "n".into(),
            counts: KeyMap::default(),
        }
    }

    /// Counts per key across batches equal a reference computed row by row, and a snapshot
    /// restored into a fresh instance goes on from the same counts.
    #[test]
    fn counts_carry_across_batches_and_through_a_snapshot() {
        let keys: Vec<Option<&str>> = (0..500u32)
            .map(|i| match (i * 7919) % 11 {
                0 => None,
                r => Some(["a", "b", "c", "dd", "e"][r as usize % 5]),
            })
            .collect();
        let mut reference = std::collections::HashMap::new();
        let expected: Vec<Option<i64>> = keys
            .iter()
            .map(|k| {
                k.map(|k| {
                    let n = reference.entry(k).or_insert(0i64);
                    *n += 1;
                    *n
                })
            })
            .collect();
        let mut p = plugin();
        let mut got = Vec::new();
        for (i, chunk) in keys.chunks(37).enumerate() {
            if i == 5 {
                let saved = p.snapshot().unwrap().unwrap();
                p = plugin();
                p.restore(saved).unwrap();
            }
            let out = p.transform(text_batch(chunk)).unwrap();
            let validity = out[0].columns[0].validity.clone();
            for (j, n) in counts(&out).into_iter().enumerate() {
                let valid = validity.as_ref().is_none_or(|v| get_bit(v, j));
                got.push(valid.then_some(n));
            }
        }
        assert_eq!(got, expected);
    }
}
