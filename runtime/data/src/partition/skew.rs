//! Skew measurement: rows per partition and the hottest key values (Space-Saving).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt::Write;
use std::hash::{BuildHasherDefault, Hasher};

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::{check_assignment, column, hash_rows, HashAlgorithm, PartitionError};

/// Counts rows per partition and tracks the hottest key values of a stream of batches.
///
/// Hot keys use the Space-Saving algorithm with `8 × top_k` counters keyed by the XXH3 hash of
/// the key bytes: when a new key arrives and the table is full it replaces the smallest counter
/// and inherits its count. Counts are therefore upper bounds (exact while fewer distinct keys
/// than counters have been seen), and every key with more than `total / capacity` rows is
/// guaranteed to be in the table.
#[derive(Debug, Clone)]
pub struct SkewTracker {
    rows_per_partition: Vec<u64>,
    top_k: usize,
    capacity: usize,
    counters: Vec<Counter>,
    /// Key hash → index in `counters`.
    index: HashMap<u64, usize, IdentityBuild>,
}

#[derive(Debug, Clone)]
struct Counter {
    hash: u64,
    key: String,
    count: u64,
    /// How much of `count` may belong to evicted keys (count − error ≤ true count ≤ count).
    error: u64,
}

/// A summary of how evenly rows are spread and which keys dominate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SkewReport {
    /// Rows observed per partition.
    pub rows_per_partition: Vec<u64>,
    /// Largest partition's rows over the mean rows per partition; 1.0 is perfectly even (and
    /// is reported when no rows were observed).
    pub max_over_mean: f64,
    /// Up to `top_k` hottest keys, hottest first: only keys whose guaranteed count
    /// (Space-Saving's lower bound) exceeds the tracker's smallest count, so a stream of many
    /// keys with similar frequencies reports none.
    pub hottest: Vec<HotKey>,
}

/// One hot key value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HotKey {
    /// The key for display: the value, or the values of a composite key joined by `|`; nulls
    /// display as `null`.
    pub key: String,
    /// Rows with this key — a Space-Saving upper bound, exact for low-cardinality keys.
    pub rows: u64,
    /// `rows` as a fraction of all observed rows.
    pub share: f64,
}

impl SkewReport {
    /// Whether the largest partition exceeds `threshold` times the mean.
    pub fn is_skewed(&self, threshold: f64) -> bool {
        self.max_over_mean > threshold
    }
}

impl SkewTracker {
    /// A tracker for `partitions` partitions reporting the `top_k` hottest keys.
    pub fn new(partitions: usize, top_k: usize) -> Self {
        SkewTracker {
            rows_per_partition: vec![0; partitions],
            top_k,
            capacity: top_k.saturating_mul(8),
            counters: Vec::new(),
            index: HashMap::default(),
        }
    }

    /// Adds one batch: `assignment` is each row's partition, `keys` the key columns (hot keys
    /// are not tracked when empty). On error the tracker is unchanged.
    pub fn observe(
        &mut self,
        batch: &RecordBatch,
        keys: &[String],
        assignment: &[u32],
    ) -> Result<(), PartitionError> {
        check_assignment(batch.num_rows(), assignment, self.rows_per_partition.len())?;
        let hashes = if keys.is_empty() || self.capacity == 0 {
            None
        } else {
            Some(hash_rows(batch, keys, HashAlgorithm::Xxh3)?)
        };
        // Build everything fallible before counting, so an error leaves the tracker unchanged.
        let options = FormatOptions::new().with_null("null");
        let formatters = match hashes {
            None => Vec::new(),
            Some(_) => keys
                .iter()
                .map(|k| {
                    Ok(ArrayFormatter::try_new(
                        column(batch, k)?.as_ref(),
                        &options,
                    )?)
                })
                .collect::<Result<Vec<_>, PartitionError>>()?,
        };
        for &p in assignment {
            self.rows_per_partition[p as usize] += 1;
        }
        let Some(hashes) = hashes else {
            return Ok(());
        };

        // Count the batch first so the table sees each distinct key once per batch (weighted
        // Space-Saving), in first-appearance order so results are deterministic.
        let mut seen: HashMap<u64, usize, IdentityBuild> = HashMap::default();
        let mut batch_counts: Vec<(u64, u64, usize)> = Vec::new();
        for (row, &h) in hashes.iter().enumerate() {
            match seen.entry(h) {
                Entry::Occupied(e) => batch_counts[*e.get()].1 += 1,
                Entry::Vacant(e) => {
                    e.insert(batch_counts.len());
                    batch_counts.push((h, 1, row));
                }
            }
        }

        let display = |row: usize| {
            let mut s = String::new();
            for (i, f) in formatters.iter().enumerate() {
                if i > 0 {
                    s.push('|');
                }
                // Writing to a String cannot fail, and the formatter writes its own errors.
                let _ = write!(s, "{}", f.value(row));
            }
            s
        };
        for (hash, count, row) in batch_counts {
            self.offer(hash, count, || display(row));
        }
        Ok(())
    }

    /// Counts `rows` rows in `partition` without key tracking (e.g. round-robin batches). A
    /// partition beyond the tracker's count extends it rather than losing the rows.
    pub fn observe_partition(&mut self, partition: usize, rows: u64) {
        if partition >= self.rows_per_partition.len() {
            self.rows_per_partition.resize(partition + 1, 0);
        }
        self.rows_per_partition[partition] += rows;
    }

    /// Space-Saving update with weight `count`; `key` is only formatted if the key enters.
    fn offer(&mut self, hash: u64, count: u64, key: impl FnOnce() -> String) {
        if let Some(&i) = self.index.get(&hash) {
            self.counters[i].count += count;
            return;
        }
        if self.counters.len() < self.capacity {
            self.index.insert(hash, self.counters.len());
            self.counters.push(Counter {
                hash,
                key: key(),
                count,
                error: 0,
            });
            return;
        }
        let Some((i, min)) = self
            .counters
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.count)
            .map(|(i, c)| (i, c.count))
        else {
            return; // capacity 0: nothing tracked
        };
        let evicted = std::mem::replace(
            &mut self.counters[i],
            Counter {
                hash,
                key: key(),
                count: min + count,
                error: min,
            },
        );
        self.index.remove(&evicted.hash);
        self.index.insert(hash, i);
    }

    /// Folds in another tracker (e.g. one per worker). Partition counts add exactly; hot-key
    /// counts add, a key missing from a full table being credited that table's smallest count
    /// so counts stay upper bounds.
    pub fn merge(&mut self, other: SkewTracker) {
        if other.rows_per_partition.len() > self.rows_per_partition.len() {
            self.rows_per_partition
                .resize(other.rows_per_partition.len(), 0);
        }
        for (mine, theirs) in self
            .rows_per_partition
            .iter_mut()
            .zip(&other.rows_per_partition)
        {
            *mine += theirs;
        }
        let floor = |t: &SkewTracker| {
            if t.capacity > 0 && t.counters.len() >= t.capacity {
                t.counters.iter().map(|c| c.count).min().unwrap_or(0)
            } else {
                0
            }
        };
        let (my_floor, their_floor) = (floor(self), floor(&other));
        let mut theirs: HashMap<u64, Counter, IdentityBuild> =
            other.counters.into_iter().map(|c| (c.hash, c)).collect();
        let mut merged: Vec<Counter> = Vec::with_capacity(self.counters.len() + theirs.len());
        for mut c in self.counters.drain(..) {
            let (count, error) = theirs
                .remove(&c.hash)
                .map_or((their_floor, their_floor), |t| (t.count, t.error));
            c.count += count;
            c.error += error;
            merged.push(c);
        }
        for mut c in theirs.into_values() {
            c.count += my_floor;
            c.error += my_floor;
            merged.push(c);
        }
        // Sort fully (ties by hash) so the kept set does not depend on map iteration order.
        merged.sort_unstable_by(|a, b| b.count.cmp(&a.count).then(a.hash.cmp(&b.hash)));
        self.top_k = self.top_k.max(other.top_k);
        self.capacity = self.capacity.max(other.capacity);
        merged.truncate(self.capacity);
        self.index = merged
            .iter()
            .enumerate()
            .map(|(i, c)| (c.hash, i))
            .collect();
        self.counters = merged;
    }

    /// The current summary.
    pub fn report(&self) -> SkewReport {
        let total: u64 = self.rows_per_partition.iter().sum();
        let max = self.rows_per_partition.iter().copied().max().unwrap_or(0);
        let max_over_mean = if total == 0 {
            1.0
        } else {
            max as f64 * self.rows_per_partition.len() as f64 / total as f64
        };
        // Only keys whose guaranteed count beats the table's smallest count are reported: with
        // many keys of similar frequency, Space-Saving's upper bounds say nothing about any one.
        let floor = if self.counters.len() >= self.capacity {
            self.counters.iter().map(|c| c.count).min().unwrap_or(0)
        } else {
            0
        };
        let mut hot: Vec<&Counter> = self
            .counters
            .iter()
            .filter(|c| c.count - c.error > floor)
            .collect();
        hot.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        let hottest = hot
            .into_iter()
            .take(self.top_k)
            .map(|c| {
                // An upper bound can be tightened to the total.
                let rows = c.count.min(total);
                HotKey {
                    key: c.key.clone(),
                    rows,
                    share: if total == 0 {
                        0.0
                    } else {
                        rows as f64 / total as f64
                    },
                }
            })
            .collect();
        SkewReport {
            rows_per_partition: self.rows_per_partition.clone(),
            max_over_mean,
            hottest,
        }
    }
}

/// The map keys are already XXH3 hashes, so hashing them again would be wasted work.
#[derive(Default, Clone, Copy, Debug)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are used; fold anything else in for correctness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdentityBuild = BuildHasherDefault<IdentityHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Partitioning;
    use arrow::array::{ArrayRef, Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// `n` rows: user "hot@x.com" on every other row, the rest spread over Zipf-ish tails.
    fn zipf_batch(n: usize, offset: usize) -> RecordBatch {
        let users: Vec<Option<String>> = (offset..offset + n)
            .map(|i| {
                if i % 2 == 0 {
                    Some("hot@x.com".to_string())
                } else if i % 7 == 1 {
                    None
                } else {
                    // Decreasing frequencies: key j appears ~1/j as often.
                    let j = (i % 97) / ((i % 5) + 1);
                    Some(format!("user{j}@x.com"))
                }
            })
            .collect();
        let years: Vec<i32> = (offset..offset + n)
            .map(|i| 2020 + (i % 3) as i32)
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("user", DataType::Utf8, true),
                Field::new("year", DataType::Int32, false),
            ])),
            vec![
                Arc::new(StringArray::from(users)) as ArrayRef,
                Arc::new(Int32Array::from(years)),
            ],
        )
        .unwrap()
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn many_similar_keys_report_no_hot_key() {
        let k = keys(&["user"]);
        let mut t = SkewTracker::new(2, 3);
        for chunk in 0..10 {
            let users: Vec<String> = (0..1000)
                .map(|i| format!("u{}", chunk * 1000 + i))
                .collect();
            let years = vec![2024; 1000];
            let b = RecordBatch::try_new(
                Arc::new(Schema::new(vec![
                    Field::new("user", DataType::Utf8, false),
                    Field::new("year", DataType::Int32, false),
                ])),
                vec![
                    Arc::new(StringArray::from(users)) as ArrayRef,
                    Arc::new(Int32Array::from(years)),
                ],
            )
            .unwrap();
            t.observe(&b, &k, &vec![0; 1000]).unwrap();
        }
        assert!(t.report().hottest.is_empty(), "{:?}", t.report().hottest);
    }

    #[test]
    fn hot_key_found_with_share_and_max_over_mean() {
        let k = keys(&["user"]);
        let p = Partitioning::Hash {
            keys: k.clone(),
            algorithm: HashAlgorithm::Xxh3,
            partitions: 4,
        };
        let mut t = SkewTracker::new(4, 3);
        let mut counts = [0u64; 4];
        for chunk in 0..5 {
            let b = zipf_batch(2000, chunk * 2000);
            let a = p.assign(&b).unwrap();
            for &x in &a {
                counts[x as usize] += 1;
            }
            t.observe(&b, &k, &a).unwrap();
        }
        let r = t.report();
        assert_eq!(r.rows_per_partition, counts.to_vec());
        assert_eq!(r.rows_per_partition.iter().sum::<u64>(), 10_000);
        let max = *counts.iter().max().unwrap() as f64;
        assert!((r.max_over_mean - max / 2500.0).abs() < 1e-12);
        assert!((1..=3).contains(&r.hottest.len()), "{:?}", r.hottest);
        assert_eq!(r.hottest[0].key, "hot@x.com");
        // Space-Saving counts are upper bounds; the true count is 5000.
        assert!(r.hottest[0].rows >= 5000, "{:?}", r.hottest[0]);
        assert!(
            (r.hottest[0].share - 0.5).abs() < 0.02,
            "{:?}",
            r.hottest[0]
        );
        assert!(r.hottest.windows(2).all(|w| w[0].rows >= w[1].rows));
        // The hot key's partition holds at least half the rows, so it is clearly skewed.
        assert!(r.max_over_mean >= 2.0);
        assert!(r.is_skewed(1.5));
        assert!(!r.is_skewed(4.0));
    }

    #[test]
    fn exact_counts_composite_keys_and_nulls() {
        let users = StringArray::from(vec![Some("DE"), Some("DE"), None, Some("FR"), Some("DE")]);
        let years = Int32Array::from(vec![Some(2024), Some(2024), Some(2023), None, Some(2023)]);
        let b = RecordBatch::try_from_iter(vec![
            ("country", Arc::new(users) as ArrayRef),
            ("year", Arc::new(years) as ArrayRef),
        ])
        .unwrap();
        let mut t = SkewTracker::new(2, 10);
        t.observe(&b, &keys(&["country", "year"]), &[0, 0, 1, 1, 0])
            .unwrap();
        let r = t.report();
        assert_eq!(r.rows_per_partition, vec![3, 2]);
        assert!((r.max_over_mean - 1.2).abs() < 1e-12);
        let got: Vec<(&str, u64)> = r.hottest.iter().map(|h| (h.key.as_str(), h.rows)).collect();
        assert_eq!(
            got,
            vec![
                ("DE|2024", 2),
                ("DE|2023", 1),
                ("FR|null", 1),
                ("null|2023", 1)
            ]
        );
        assert!((r.hottest[0].share - 0.4).abs() < 1e-12);

        let mut single = SkewTracker::new(1, 1);
        single.observe(&b, &keys(&["country"]), &[0; 5]).unwrap();
        let r = single.report();
        assert_eq!(
            r.hottest,
            vec![HotKey {
                key: "DE".into(),
                rows: 3,
                share: 0.6
            }]
        );
        assert_eq!(r.max_over_mean, 1.0);
    }

    #[test]
    fn empty_and_invalid_input() {
        let t = SkewTracker::new(3, 2);
        let r = t.report();
        assert_eq!(r.max_over_mean, 1.0);
        assert_eq!(r.rows_per_partition, vec![0, 0, 0]);
        assert!(r.hottest.is_empty());
        assert!(!r.is_skewed(1.0));

        let b = zipf_batch(4, 0);
        let mut t = SkewTracker::new(2, 2);
        assert!(matches!(
            t.observe(&b, &keys(&["user"]), &[0, 1, 2, 0]),
            Err(PartitionError::PartitionOutOfRange { row: 2, .. })
        ));
        assert!(matches!(
            t.observe(&b, &keys(&["nope"]), &[0, 1, 1, 0]),
            Err(PartitionError::MissingColumn { .. })
        ));
        // Failed observations changed nothing.
        assert_eq!(t.report().rows_per_partition, vec![0, 0]);
        // No keys: partition counts only.
        t.observe(&b, &[], &[0, 1, 1, 1]).unwrap();
        let r = t.report();
        assert_eq!(r.rows_per_partition, vec![1, 3]);
        assert!((r.max_over_mean - 1.5).abs() < 1e-12);
        assert!(r.hottest.is_empty());
        t.observe_partition(0, 5);
        t.observe_partition(3, 2);
        assert_eq!(t.report().rows_per_partition, vec![6, 3, 0, 2]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rows_per_partition"], serde_json::json!([1, 3]));
    }

    #[test]
    fn merge_equals_single_tracker() {
        let k = keys(&["user"]);
        let p = Partitioning::Hash {
            keys: k.clone(),
            algorithm: HashAlgorithm::Fnv1a,
            partitions: 5,
        };
        let batches: Vec<RecordBatch> = (0..6).map(|c| zipf_batch(700, c * 700)).collect();
        let mut all = SkewTracker::new(5, 4);
        let mut left = SkewTracker::new(5, 4);
        let mut right = SkewTracker::new(5, 4);
        for (i, b) in batches.iter().enumerate() {
            let a = p.assign(b).unwrap();
            all.observe(b, &k, &a).unwrap();
            if i % 2 == 0 {
                left.observe(b, &k, &a).unwrap();
            } else {
                right.observe(b, &k, &a).unwrap();
            }
        }
        left.merge(right);
        let (m, a) = (left.report(), all.report());
        assert_eq!(m.rows_per_partition, a.rows_per_partition);
        assert_eq!(m.rows_per_partition.iter().sum::<u64>(), 4200);
        assert_eq!(m.max_over_mean, a.max_over_mean);
        assert_eq!(m.hottest[0].key, "hot@x.com");
        assert_eq!(a.hottest[0].key, "hot@x.com");
        // Both are upper bounds of the true 2100 and stay close to it.
        for r in [&m, &a] {
            assert!(
                (2100..=2300).contains(&r.hottest[0].rows),
                "{:?}",
                r.hottest[0]
            );
        }
    }

    #[test]
    fn merge_is_exact_below_capacity() {
        let b = RecordBatch::try_from_iter(vec![(
            "k",
            Arc::new(StringArray::from(vec!["a", "b", "a", "c", "a", "b"])) as ArrayRef,
        )])
        .unwrap();
        let k = keys(&["k"]);
        let mut all = SkewTracker::new(2, 3);
        let mut x = SkewTracker::new(2, 3);
        let mut y = SkewTracker::new(3, 3);
        let first = b.slice(0, 3);
        let second = b.slice(3, 3);
        all.observe(&b, &k, &[0, 1, 0, 1, 0, 1]).unwrap();
        x.observe(&first, &k, &[0, 1, 0]).unwrap();
        y.observe(&second, &k, &[1, 0, 1]).unwrap();
        x.merge(y);
        let r = x.report();
        assert_eq!(
            r.rows_per_partition,
            vec![3, 3, 0],
            "partition counts grow to the larger"
        );
        assert_eq!(r.hottest, all.report().hottest);
        let got: Vec<(&str, u64)> = r.hottest.iter().map(|h| (h.key.as_str(), h.rows)).collect();
        assert_eq!(got, vec![("a", 3), ("b", 2), ("c", 1)]);
    }

    #[test]
    fn eviction_keeps_heavy_hitter() {
        // Capacity 8: many distinct singletons interleaved with one heavy key.
        let vals: Vec<String> = (0..2000)
            .map(|i| {
                if i % 3 == 0 {
                    "heavy".to_string()
                } else {
                    format!("k{i}")
                }
            })
            .collect();
        let b =
            RecordBatch::try_from_iter(vec![("k", Arc::new(StringArray::from(vals)) as ArrayRef)])
                .unwrap();
        let mut t = SkewTracker::new(1, 1);
        for chunk in 0..20 {
            t.observe(&b.slice(chunk * 100, 100), &keys(&["k"]), &[0; 100])
                .unwrap();
        }
        let r = t.report();
        assert_eq!(r.hottest[0].key, "heavy");
        assert!(r.hottest[0].rows >= 667);
        assert!(r.hottest[0].rows <= 2000);
    }
}
