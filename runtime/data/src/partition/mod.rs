//! Partitioning: which partition each row of a record batch belongs to, splitting a batch by
//! partition, and measuring skew. Pure logic, no I/O.
//!
//! # Hash vs range partitioning
//!
//! * **Hash** partitioning ([`Partitioning::Hash`]) sends row `r` to partition
//!   `hash_rows(batch, keys, algorithm)[r] % partitions`. Equal keys always land in the same
//!   partition and distinct keys spread evenly, but neighbouring keys are scattered, so it suits
//!   joins and group-bys, not ordered output.
//! * **Range** partitioning ([`Partitioning::Range`]) uses `n - 1` strictly increasing
//!   boundaries `b` on one key column: partition `i` holds `b[i-1] <= key < b[i]` (partition 0
//!   everything below `b[0]`, the last partition everything from `b[n-2]` up). Partitions are
//!   ordered, so concatenating them in order gives globally sorted ranges; boundaries usually
//!   come from a sample via [`range_boundaries_from_sample`] so partitions are evenly sized.
//!   Null keys go to partition 0; float NaN keys go to the last partition.
//!
//! # Stable hash encoding
//!
//! The hash is part of the on-disk contract (partition files written today must be found by
//! the same key tomorrow, and by other tools), so it is defined exactly here.
//!
//! **Key bytes** of one non-null value, by Arrow type:
//!
//! | Type | Key bytes |
//! |---|---|
//! | `Utf8`, `LargeUtf8`, `Utf8View` | the UTF-8 bytes (no terminator, no length) |
//! | `Binary`, `LargeBinary`, `BinaryView` | the bytes |
//! | `Int8`, `Int16`, `Int32`, `Int64`, `Date32`, `Date64`, `Timestamp(any unit, any tz)` | the raw value widened to `i64`, 8 bytes little-endian |
//! | `UInt8`, `UInt16`, `UInt32`, `UInt64` | the value widened to `u64`, 8 bytes little-endian |
//! | `Float32`, `Float64` | the value widened to `f64`; `-0.0` becomes `0.0` and every NaN becomes `f64::NAN` (bits `0x7ff8000000000000`); then `to_bits()`, 8 bytes little-endian |
//! | `Boolean` | one byte, `0` or `1` |
//! | `Dictionary(_, V)` | the key bytes of the dictionary value (so a dictionary column hashes like its plain `V` column) |
//!
//! Any other type is rejected with [`PartitionError::UnsupportedType`]. Date32 is days and
//! Date64/Timestamp are the stored integer in their unit; the timezone is not hashed.
//!
//! **Row hash** with hash function `H` (below):
//!
//! * one key column: `H(key bytes)`; a row whose key is null gets hash `0` (so partition 0).
//! * several key columns: `H(buf)` where `buf` is the concatenation, for each key column in
//!   the order given, of the key bytes' length as a `u32` little-endian followed by the key
//!   bytes; a null value is written as the length `0xFFFF_FFFF` followed by no bytes. (A row
//!   whose composite key is all null is therefore *not* special-cased to 0.)
//!
//! **`H`** per [`HashAlgorithm`], each giving a `u64`:
//!
//! * `xxh3`: XXH3-64 with seed 0 (`xxhash_rust::xxh3::xxh3_64`).
//! * `murmur3`: MurmurHash3 x64_128 with seed 0; the low 64 bits of the 128-bit result as
//!   returned by the `murmur3` crate, which is `h1` — the first 8 bytes of the canonical
//!   little-endian digest, and the token Cassandra's `Murmur3Partitioner` uses (read as `i64`).
//! * `fnv1a`: FNV-1a 64-bit (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
//! * `md5`: the first 8 bytes of the MD5 digest read as a little-endian `u64` (as MongoDB
//!   hashed shard keys do).
//!
//! Partition = row hash `%` partition count (unsigned 64-bit remainder).
//!
//! # Skew
//!
//! [`SkewTracker`] counts rows per partition and finds the hottest key values with the
//! Space-Saving algorithm; [`SkewReport`] summarises both.

mod hash;
mod key;
mod range;
mod skew;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

pub use hash::{hash_rows, HashAlgorithm};
pub use range::{range_boundaries_from_sample, RangeBoundaries};
pub use skew::{HotKey, SkewReport, SkewTracker};

/// How rows are assigned to partitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Partitioning {
    /// partition = hash(key columns) mod `partitions`.
    Hash {
        /// Key column names, in hashing order.
        keys: Vec<String>,
        /// Hash function.
        algorithm: HashAlgorithm,
        /// Number of partitions (at least 1).
        partitions: usize,
    },
    /// Partition `i` holds `boundaries[i-1] <= key < boundaries[i]`; nulls go to partition 0.
    Range {
        /// Key column name.
        key: String,
        /// The `partitions - 1` strictly increasing boundaries.
        boundaries: RangeBoundaries,
    },
}

impl Partitioning {
    /// Number of partitions rows are assigned to.
    pub fn partitions(&self) -> usize {
        match self {
            Partitioning::Hash { partitions, .. } => *partitions,
            Partitioning::Range { boundaries, .. } => boundaries.partitions(),
        }
    }

    /// Partition index of every row of `batch`. Errors name the missing column or unsupported type.
    pub fn assign(&self, batch: &RecordBatch) -> Result<Vec<u32>, PartitionError> {
        match self {
            Partitioning::Hash {
                keys,
                algorithm,
                partitions,
            } => {
                check_partition_count(*partitions)?;
                let n = *partitions as u64;
                let hashes = hash_rows(batch, keys, *algorithm)?;
                // The remainder is < n <= u32::MAX, so the cast is lossless.
                Ok(hashes.into_iter().map(|h| (h % n) as u32).collect())
            }
            Partitioning::Range { key, boundaries } => {
                boundaries.validate()?;
                check_partition_count(boundaries.partitions())?;
                boundaries.assign(key, column(batch, key)?.as_ref())
            }
        }
    }
}

/// Splits `batch` into one batch per partition (rows keep their relative order), using
/// arrow's `take`/`filter` kernels; returns `partitions` entries, empty partitions as None.
pub fn split(
    batch: &RecordBatch,
    assignment: &[u32],
    partitions: usize,
) -> Result<Vec<Option<RecordBatch>>, PartitionError> {
    let rows = batch.num_rows();
    check_assignment(rows, assignment, partitions)?;
    let mut counts = vec![0usize; partitions];
    for &p in assignment {
        counts[p as usize] += 1;
    }
    let mut out: Vec<Option<RecordBatch>> = vec![None; partitions];
    // Common case (e.g. pre-partitioned input): everything in one partition, no copy needed.
    if let Some(p) = counts.iter().position(|&c| c > 0 && c == rows) {
        out[p] = Some(batch.clone());
        return Ok(out);
    }
    let mut indices: Vec<Vec<u32>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
    for (row, &p) in assignment.iter().enumerate() {
        // Arrow batches are indexed by u32 in `take`; a batch never approaches 2^32 rows.
        indices[p as usize].push(row as u32);
    }
    for (slot, idx) in out.iter_mut().zip(indices) {
        if !idx.is_empty() {
            *slot = Some(take_record_batch(batch, &UInt32Array::from(idx))?);
        }
    }
    Ok(out)
}

/// Errors from partitioning; messages name the column and type involved.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// A key column is not in the batch.
    #[error("key column '{column}' not found; available columns: {}", .available.join(", "))]
    MissingColumn {
        /// The requested column.
        column: String,
        /// The batch's column names.
        available: Vec<String>,
    },
    /// A key column's type cannot be used for this kind of partitioning.
    #[error("key column '{column}' has type {data_type}, which cannot be used as a {usage}; supported: {supported}")]
    UnsupportedType {
        /// The column.
        column: String,
        /// Its Arrow type.
        data_type: DataType,
        /// What the column was used as, e.g. "hash key".
        usage: &'static str,
        /// The supported types, for the message.
        supported: &'static str,
    },
    /// A value does not fit the boundary type (e.g. a UInt64 above i64::MAX in a sample).
    #[error("key column '{column}' value {value} does not fit in {target}")]
    ValueOutOfRange {
        /// The column.
        column: String,
        /// The offending value, formatted.
        value: String,
        /// What it should have fit in.
        target: &'static str,
    },
    /// Hash partitioning was given no key columns.
    #[error("hash partitioning needs at least one key column")]
    NoKeyColumns,
    /// The partition count is 0 or does not fit a u32 partition index.
    #[error("partition count must be between 1 and 4294967295, got {0}")]
    BadPartitionCount(usize),
    /// Range boundaries are not strictly increasing (or contain NaN).
    #[error("invalid range boundaries: {0}")]
    BadBoundaries(String),
    /// Range boundaries were requested from a sample with no usable value.
    #[error("cannot compute range boundaries: the sample has no non-null values")]
    EmptySample,
    /// An unknown hash algorithm name.
    #[error("unknown hash algorithm '{0}'; valid: xxh3, murmur3, fnv1a, md5")]
    UnknownAlgorithm(String),
    /// The assignment's length differs from the batch's row count.
    #[error("assignment has {assignment} entries but the batch has {rows} rows")]
    AssignmentLength {
        /// Rows in the batch.
        rows: usize,
        /// Entries in the assignment.
        assignment: usize,
    },
    /// A row was assigned to a partition that does not exist.
    #[error("row {row} is assigned to partition {partition}, but there are only {partitions} partitions")]
    PartitionOutOfRange {
        /// The row.
        row: usize,
        /// Its partition.
        partition: u32,
        /// The partition count.
        partitions: usize,
    },
    /// An Arrow kernel failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] ArrowError),
}

/// Looks a column up by name, listing the available names when it is missing.
pub(crate) fn column<'b>(
    batch: &'b RecordBatch,
    name: &str,
) -> Result<&'b ArrayRef, PartitionError> {
    match batch.schema_ref().index_of(name) {
        Ok(i) => Ok(batch.column(i)),
        Err(_) => Err(PartitionError::MissingColumn {
            column: name.to_string(),
            available: batch
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        }),
    }
}

fn check_partition_count(partitions: usize) -> Result<(), PartitionError> {
    if partitions == 0 || partitions > u32::MAX as usize {
        return Err(PartitionError::BadPartitionCount(partitions));
    }
    Ok(())
}

/// Checks an assignment has one in-range entry per row.
pub(crate) fn check_assignment(
    rows: usize,
    assignment: &[u32],
    partitions: usize,
) -> Result<(), PartitionError> {
    if assignment.len() != rows {
        return Err(PartitionError::AssignmentLength {
            rows,
            assignment: assignment.len(),
        });
    }
    if let Some((row, &partition)) = assignment
        .iter()
        .enumerate()
        .find(|(_, &p)| p as usize >= partitions)
    {
        return Err(PartitionError::PartitionOutOfRange {
            row,
            partition,
            partitions,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        let ids = Int64Array::from_iter_values(0..n);
        let names = StringArray::from_iter_values((0..n).map(|i| format!("name{i}")));
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, false),
            ])),
            vec![Arc::new(ids), Arc::new(names)],
        )
        .unwrap()
    }

    fn ids(b: &RecordBatch) -> Vec<i64> {
        b.column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    #[test]
    fn split_keeps_order_and_counts() {
        let b = batch(100);
        let assignment: Vec<u32> = (0..100u32).map(|i| (i * 7 + i / 3) % 5).collect();
        let parts = split(&b, &assignment, 6).unwrap();
        assert_eq!(parts.len(), 6);
        assert!(parts[5].is_none(), "partition 5 gets no rows");
        for (p, part) in parts.iter().enumerate().take(5) {
            let part = part.as_ref().unwrap();
            let expected: Vec<i64> = (0..100)
                .filter(|&r| assignment[r as usize] == p as u32)
                .collect();
            assert_eq!(ids(part), expected, "partition {p}");
            assert_eq!(
                part.num_rows(),
                assignment.iter().filter(|&&a| a == p as u32).count()
            );
            // The other columns follow their rows.
            let names = part
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for (i, id) in expected.iter().enumerate() {
                assert_eq!(names.value(i), format!("name{id}"));
            }
        }
        // Concatenating the partitions and reordering by the assignment restores the batch.
        let present: Vec<RecordBatch> = parts.into_iter().flatten().collect();
        let all = concat_batches(&b.schema(), &present).unwrap();
        let mut got = ids(&all);
        got.sort();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn split_single_partition_and_errors() {
        let b = batch(10);
        let parts = split(&b, &[2; 10], 3).unwrap();
        assert!(parts[0].is_none() && parts[1].is_none());
        assert_eq!(parts[2].as_ref().unwrap(), &b);

        let empty = batch(0);
        assert!(split(&empty, &[], 2).unwrap().iter().all(Option::is_none));

        assert!(matches!(
            split(&b, &[0; 9], 3),
            Err(PartitionError::AssignmentLength {
                rows: 10,
                assignment: 9
            })
        ));
        let mut bad = vec![0u32; 10];
        bad[4] = 3;
        let err = split(&b, &bad, 3).unwrap_err();
        assert!(matches!(
            err,
            PartitionError::PartitionOutOfRange {
                row: 4,
                partition: 3,
                partitions: 3
            }
        ));
    }

    #[test]
    fn hash_assign_is_hash_mod_n() {
        let b = batch(1000);
        let p = Partitioning::Hash {
            keys: vec!["name".into()],
            algorithm: HashAlgorithm::Murmur3,
            partitions: 7,
        };
        assert_eq!(p.partitions(), 7);
        let a = p.assign(&b).unwrap();
        let h = hash_rows(&b, &["name".into()], HashAlgorithm::Murmur3).unwrap();
        assert_eq!(a, h.iter().map(|h| (h % 7) as u32).collect::<Vec<_>>());
        // All partitions used and roughly even for 1000 distinct keys.
        for part in 0..7 {
            let c = a.iter().filter(|&&x| x == part).count();
            assert!((90..200).contains(&c), "partition {part} has {c} rows");
        }
        let zero = Partitioning::Hash {
            keys: vec!["name".into()],
            algorithm: HashAlgorithm::Xxh3,
            partitions: 0,
        };
        assert!(matches!(
            zero.assign(&b),
            Err(PartitionError::BadPartitionCount(0))
        ));
    }

    #[test]
    fn missing_column_error_lists_available() {
        let b = batch(3);
        let p = Partitioning::Range {
            key: "nope".into(),
            boundaries: RangeBoundaries::Int(vec![1]),
        };
        let msg = p.assign(&b).unwrap_err().to_string();
        assert!(msg.contains("'nope'") && msg.contains("id, name"), "{msg}");
        let p = Partitioning::Hash {
            keys: vec!["id".into(), "nope".into()],
            algorithm: HashAlgorithm::Xxh3,
            partitions: 2,
        };
        assert!(matches!(
            p.assign(&b),
            Err(PartitionError::MissingColumn { ref column, .. }) if column == "nope"
        ));
    }

    #[test]
    fn range_assign_via_partitioning() {
        let b = batch(10);
        let p = Partitioning::Range {
            key: "id".into(),
            boundaries: RangeBoundaries::Int(vec![3, 7]),
        };
        assert_eq!(p.partitions(), 3);
        assert_eq!(p.assign(&b).unwrap(), vec![0, 0, 0, 1, 1, 1, 1, 2, 2, 2]);
        let bad = Partitioning::Range {
            key: "id".into(),
            boundaries: RangeBoundaries::Int(vec![7, 3]),
        };
        assert!(matches!(
            bad.assign(&b),
            Err(PartitionError::BadBoundaries(_))
        ));
    }
}
