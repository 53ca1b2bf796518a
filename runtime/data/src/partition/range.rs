//! Range partitioning: boundaries, per-row assignment by binary search, and boundaries from a
//! sample's quantiles.

use std::cmp::Ordering;
use std::fmt::Debug;

use arrow::array::{Array, ArrayRef};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use super::key::{KeyColumn, KeyValues};
use super::{check_partition_count, PartitionError};

/// The `n - 1` strictly increasing boundaries of `n` range partitions: partition `i` holds
/// `boundaries[i-1] <= key < boundaries[i]`.
///
/// * `Int`: for integer-like keys (signed and unsigned integers, Date32, Date64, timestamps in
///   their stored unit), compared exactly (an unsigned value above `i64::MAX` is above every
///   boundary). Against a float key the boundaries are converted to `f64`.
/// * `Float`: for float keys, and integer-like keys converted to `f64` (exact up to 2^53). NaN
///   keys sort last, i.e. go to the last partition; `-0.0` equals `0.0`.
/// * `Utf8`: for string and binary keys, compared byte-wise (not by locale).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeBoundaries {
    /// Boundaries for integer-like keys.
    Int(Vec<i64>),
    /// Boundaries for float keys.
    Float(Vec<f64>),
    /// Boundaries for string keys.
    Utf8(Vec<String>),
}

const NUMERIC_TYPES: &str = "signed and unsigned integers, Float32, Float64, Date32, Date64, \
     Timestamp, and dictionaries of these";
const STRING_TYPES: &str =
    "Utf8, LargeUtf8, Utf8View, Binary, LargeBinary, BinaryView, and dictionaries of these";

impl RangeBoundaries {
    /// Number of partitions: one more than the number of boundaries.
    pub fn partitions(&self) -> usize {
        match self {
            RangeBoundaries::Int(b) => b.len() + 1,
            RangeBoundaries::Float(b) => b.len() + 1,
            RangeBoundaries::Utf8(b) => b.len() + 1,
        }
    }

    /// Checks the boundaries are strictly increasing (and not NaN); the error names the index.
    pub fn validate(&self) -> Result<(), PartitionError> {
        match self {
            RangeBoundaries::Int(b) => check_increasing(b),
            RangeBoundaries::Float(b) => {
                if let Some(i) = b.iter().position(|x| x.is_nan()) {
                    return Err(PartitionError::BadBoundaries(format!(
                        "boundary {i} is NaN"
                    )));
                }
                check_increasing(b)
            }
            RangeBoundaries::Utf8(b) => check_increasing(b),
        }
    }

    /// Partition of every row of `array` (the key column named `column`); nulls go to 0.
    /// Assumes [`RangeBoundaries::validate`] passed.
    pub(crate) fn assign(
        &self,
        column: &str,
        array: &dyn Array,
    ) -> Result<Vec<u32>, PartitionError> {
        let unsupported = || self.unsupported(column, array.data_type());
        let col = KeyColumn::new(column, array).map_err(|_| unsupported())?;
        let mut out = self
            .assign_values(&col.values, col.len)
            .ok_or_else(unsupported)?;
        if let Some(nulls) = &col.nulls {
            for (p, valid) in out.iter_mut().zip(nulls.iter()) {
                if !valid {
                    *p = 0;
                }
            }
        }
        Ok(out)
    }

    /// Partition of each of the `len` values, ignoring nulls; None if the type does not match.
    fn assign_values(&self, values: &KeyValues, len: usize) -> Option<Vec<u32>> {
        fn map<T: Copy>(v: &[T], f: impl Fn(T) -> u32) -> Vec<u32> {
            v.iter().map(|&x| f(x)).collect()
        }
        use KeyValues as K;
        if let K::Dict {
            keys,
            values,
            values_len,
        } = values
        {
            // Assign each dictionary value once, then look rows up.
            if *values_len == 0 {
                return Some(vec![0; len]);
            }
            let per_value = self.assign_values(values, *values_len)?;
            return Some(keys.iter().map(|&k| per_value[k]).collect());
        }
        Some(match self {
            RangeBoundaries::Int(b) => {
                let ip = |x: i64| b.partition_point(|&y| y <= x) as u32;
                match values {
                    K::I8(v) => map(v, |x| ip(x.into())),
                    K::I16(v) => map(v, |x| ip(x.into())),
                    K::I32(v) => map(v, |x| ip(x.into())),
                    K::I64(v) => map(v, ip),
                    K::U8(v) => map(v, |x| ip(x.into())),
                    K::U16(v) => map(v, |x| ip(x.into())),
                    K::U32(v) => map(v, |x| ip(x.into())),
                    // Above i64::MAX is above every boundary: the last partition.
                    K::U64(v) => map(v, |x| i64::try_from(x).map_or(b.len() as u32, ip)),
                    K::F32(_) | K::F64(_) => {
                        let fb: Vec<f64> = b.iter().map(|&x| x as f64).collect();
                        return RangeBoundaries::Float(fb).assign_values(values, len);
                    }
                    _ => return None,
                }
            }
            RangeBoundaries::Float(b) => {
                let fp = |x: f64| {
                    if x.is_nan() {
                        b.len() as u32
                    } else {
                        b.partition_point(|&y| y <= x) as u32
                    }
                };
                match values {
                    K::I8(v) => map(v, |x| fp(x.into())),
                    K::I16(v) => map(v, |x| fp(x.into())),
                    K::I32(v) => map(v, |x| fp(x.into())),
                    K::I64(v) => map(v, |x| fp(x as f64)),
                    K::U8(v) => map(v, |x| fp(x.into())),
                    K::U16(v) => map(v, |x| fp(x.into())),
                    K::U32(v) => map(v, |x| fp(x.into())),
                    K::U64(v) => map(v, |x| fp(x as f64)),
                    K::F32(v) => map(v, |x| fp(x.into())),
                    K::F64(v) => map(v, fp),
                    _ => return None,
                }
            }
            RangeBoundaries::Utf8(b) => {
                let sp = |x: &[u8]| b.partition_point(|y| y.as_bytes() <= x) as u32;
                match values {
                    K::Utf8(a) => (0..len).map(|i| sp(a.value(i).as_bytes())).collect(),
                    K::LargeUtf8(a) => (0..len).map(|i| sp(a.value(i).as_bytes())).collect(),
                    K::Utf8View(a) => (0..len).map(|i| sp(a.value(i).as_bytes())).collect(),
                    K::Binary(a) => (0..len).map(|i| sp(a.value(i))).collect(),
                    K::LargeBinary(a) => (0..len).map(|i| sp(a.value(i))).collect(),
                    K::BinaryView(a) => (0..len).map(|i| sp(a.value(i))).collect(),
                    _ => return None,
                }
            }
        })
    }

    fn unsupported(&self, column: &str, data_type: &DataType) -> PartitionError {
        let (usage, supported) = match self {
            RangeBoundaries::Int(_) => ("key for Int range boundaries", NUMERIC_TYPES),
            RangeBoundaries::Float(_) => ("key for Float range boundaries", NUMERIC_TYPES),
            RangeBoundaries::Utf8(_) => ("key for Utf8 range boundaries", STRING_TYPES),
        };
        PartitionError::UnsupportedType {
            column: column.to_string(),
            data_type: data_type.clone(),
            usage,
            supported,
        }
    }
}

fn check_increasing<T: PartialOrd + Debug>(b: &[T]) -> Result<(), PartitionError> {
    for (i, pair) in b.windows(2).enumerate() {
        if pair[0].partial_cmp(&pair[1]) != Some(Ordering::Less) {
            return Err(PartitionError::BadBoundaries(format!(
                "boundaries must be strictly increasing, but boundary {} ({:?}) is not greater \
                 than boundary {} ({:?})",
                i + 1,
                pair[1],
                i,
                pair[0]
            )));
        }
    }
    Ok(())
}

/// Name used for the sample in error messages.
const SAMPLE: &str = "(sample)";

/// Boundaries splitting `sample`'s non-null values into `partitions` equally sized ranges.
///
/// The values are sorted and boundary `i` (for `i` in `1..partitions`) is the value at index
/// `floor(i * len / partitions)`. Duplicates are then removed so the boundaries are strictly
/// increasing, which means a sample dominated by a few values yields *fewer* partitions than
/// asked for (check [`RangeBoundaries::partitions`]). Integer-like samples give `Int`
/// boundaries (a UInt64 value above `i64::MAX` is an error), floats give `Float` (NaNs are
/// ignored, `-0.0` counts as `0.0`), strings give `Utf8`; dictionaries use their value type.
/// Errors if no non-null (non-NaN) value remains.
pub fn range_boundaries_from_sample(
    sample: &ArrayRef,
    partitions: usize,
) -> Result<RangeBoundaries, PartitionError> {
    check_partition_count(partitions)?;
    let sample = match sample.data_type() {
        DataType::Dictionary(_, value_type) => cast(sample, value_type)?,
        _ => sample.clone(),
    };
    let col =
        KeyColumn::new(SAMPLE, sample.as_ref()).map_err(|_| PartitionError::UnsupportedType {
            column: SAMPLE.to_string(),
            data_type: sample.data_type().clone(),
            usage: "range partitioning sample",
            supported: "signed and unsigned integers, Float32, Float64, Date32, Date64, \
                    Timestamp, Utf8, LargeUtf8, Utf8View",
        })?;
    fn valid<T: Copy, U>(v: &[T], col: &KeyColumn, f: impl Fn(T) -> U) -> Vec<U> {
        v.iter()
            .enumerate()
            .filter(|&(i, _)| col.is_valid(i))
            .map(|(_, &x)| f(x))
            .collect()
    }
    fn ints(mut v: Vec<i64>, partitions: usize) -> Result<RangeBoundaries, PartitionError> {
        v.sort_unstable();
        Ok(RangeBoundaries::Int(quantiles(&v, partitions)?))
    }
    fn floats(v: Vec<f64>, partitions: usize) -> Result<RangeBoundaries, PartitionError> {
        let mut v: Vec<f64> = v
            .into_iter()
            .filter(|x| !x.is_nan())
            .map(|x| if x == 0.0 { 0.0 } else { x })
            .collect();
        v.sort_unstable_by(f64::total_cmp);
        Ok(RangeBoundaries::Float(quantiles(&v, partitions)?))
    }
    fn strings(mut v: Vec<&str>, partitions: usize) -> Result<RangeBoundaries, PartitionError> {
        // str's Ord is byte-wise, matching assignment.
        v.sort_unstable();
        let q = quantiles(&v, partitions)?;
        Ok(RangeBoundaries::Utf8(
            q.into_iter().map(str::to_string).collect(),
        ))
    }
    fn strs<'s>(col: &KeyColumn, value: impl Fn(usize) -> &'s str) -> Vec<&'s str> {
        (0..col.len)
            .filter(|&i| col.is_valid(i))
            .map(value)
            .collect()
    }
    use KeyValues as K;
    match &col.values {
        K::I8(v) => ints(valid(v, &col, i64::from), partitions),
        K::I16(v) => ints(valid(v, &col, i64::from), partitions),
        K::I32(v) => ints(valid(v, &col, i64::from), partitions),
        K::I64(v) => ints(valid(v, &col, |x| x), partitions),
        K::U8(v) => ints(valid(v, &col, i64::from), partitions),
        K::U16(v) => ints(valid(v, &col, i64::from), partitions),
        K::U32(v) => ints(valid(v, &col, i64::from), partitions),
        K::U64(v) => {
            let converted: Result<Vec<i64>, PartitionError> = valid(v, &col, |x| {
                i64::try_from(x).map_err(|_| PartitionError::ValueOutOfRange {
                    column: SAMPLE.to_string(),
                    value: x.to_string(),
                    target: "an Int (i64) range boundary",
                })
            })
            .into_iter()
            .collect();
            ints(converted?, partitions)
        }
        K::F32(v) => floats(valid(v, &col, f64::from), partitions),
        K::F64(v) => floats(valid(v, &col, |x| x), partitions),
        K::Utf8(a) => strings(strs(&col, |i| a.value(i)), partitions),
        K::LargeUtf8(a) => strings(strs(&col, |i| a.value(i)), partitions),
        K::Utf8View(a) => strings(strs(&col, |i| a.value(i)), partitions),
        _ => Err(PartitionError::UnsupportedType {
            column: SAMPLE.to_string(),
            data_type: sample.data_type().clone(),
            usage: "range partitioning sample",
            supported: "signed and unsigned integers, Float32, Float64, Date32, Date64, \
                        Timestamp, Utf8, LargeUtf8, Utf8View",
        }),
    }
}

/// Values at indices floor(i * len / partitions), deduplicated; `sorted` must be sorted.
fn quantiles<T: Clone + PartialEq>(
    sorted: &[T],
    partitions: usize,
) -> Result<Vec<T>, PartitionError> {
    if sorted.is_empty() {
        return Err(PartitionError::EmptySample);
    }
    let len = sorted.len() as u128;
    let mut out: Vec<T> = (1..partitions as u128)
        .map(|i| sorted[(i * len / partitions as u128) as usize].clone())
        .collect();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int32Array,
        Int64Array, LargeStringArray, StringArray, StringViewArray, TimestampSecondArray,
        UInt64Array,
    };
    use arrow::datatypes::Int8Type;
    use std::sync::Arc;

    fn assign(b: &RangeBoundaries, a: &dyn Array) -> Vec<u32> {
        b.validate().unwrap();
        b.assign("k", a).unwrap()
    }

    #[test]
    fn int_boundaries() {
        let b = RangeBoundaries::Int(vec![10, 20, 30]);
        assert_eq!(b.partitions(), 4);
        let a = Int64Array::from(vec![
            Some(9),
            Some(10),
            Some(19),
            Some(20),
            Some(29),
            Some(30),
            Some(31),
            Some(i64::MIN),
            Some(i64::MAX),
            None,
        ]);
        assert_eq!(assign(&b, &a), vec![0, 1, 1, 2, 2, 3, 3, 0, 3, 0]);
        // Narrow ints, timestamps and unsigned (including above i64::MAX) compare exactly.
        let a = Int32Array::from(vec![Some(-1), None, Some(10), Some(25)]);
        assert_eq!(assign(&b, &a), vec![0, 0, 1, 2]);
        let a = TimestampSecondArray::from(vec![15, 30]).with_timezone("UTC");
        assert_eq!(assign(&b, &a), vec![1, 3]);
        let a = UInt64Array::from(vec![0, 20, u64::MAX, 1 << 63]);
        assert_eq!(assign(&b, &a), vec![0, 2, 3, 3]);
        // No boundaries: one partition.
        assert_eq!(assign(&RangeBoundaries::Int(vec![]), &a), vec![0; 4]);
    }

    #[test]
    fn float_boundaries_nan_last_and_mixed_types() {
        let b = RangeBoundaries::Float(vec![-1.0, 0.0, 2.5]);
        let a = Float64Array::from(vec![
            Some(-1.5),
            Some(-1.0),
            Some(-0.0),
            Some(0.0),
            Some(2.4999),
            Some(2.5),
            Some(f64::NAN),
            Some(-f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            None,
        ]);
        assert_eq!(assign(&b, &a), vec![0, 1, 2, 2, 2, 3, 3, 3, 3, 0, 0]);
        let a = Float32Array::from(vec![-3.0f32, 1.0, f32::NAN]);
        assert_eq!(assign(&b, &a), vec![0, 2, 3]);
        // Float boundaries on an int column; Int boundaries on a float column.
        let a = Int32Array::from(vec![-2, -1, 0, 2, 3]);
        assert_eq!(assign(&b, &a), vec![0, 1, 2, 2, 3]);
        let ib = RangeBoundaries::Int(vec![10, 20]);
        let a = Float64Array::from(vec![9.5, 10.0, 19.99, 20.0, f64::NAN]);
        assert_eq!(assign(&ib, &a), vec![0, 1, 1, 2, 2]);
    }

    #[test]
    fn string_boundaries_bytewise() {
        let b = RangeBoundaries::Utf8(vec!["b".into(), "m".into()]);
        let vals = vec![
            Some("a"),
            Some("b"),
            Some("ba"),
            Some("lzz"),
            Some("m"),
            Some("z"),
            Some(""),
            Some("B"),
            Some("é"),
            None,
        ];
        let want = vec![0, 1, 1, 1, 2, 2, 0, 0, 2, 0];
        assert_eq!(assign(&b, &StringArray::from(vals.clone())), want);
        assert_eq!(assign(&b, &LargeStringArray::from(vals.clone())), want);
        assert_eq!(assign(&b, &StringViewArray::from(vals.clone())), want);
        let bin: Vec<Option<&[u8]>> = vals.iter().map(|v| v.map(str::as_bytes)).collect();
        assert_eq!(assign(&b, &BinaryArray::from(bin)), want);
        let dict: DictionaryArray<Int8Type> = vals.into_iter().collect();
        assert_eq!(assign(&b, &dict), want);
        // A sliced dictionary still maps rows correctly.
        assert_eq!(assign(&b, &dict.slice(3, 4)), want[3..7]);
    }

    #[test]
    fn type_mismatch_names_column_and_type() {
        let b = RangeBoundaries::Utf8(vec!["m".into()]);
        let err = b.assign("user_id", &Int64Array::from(vec![1])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("'user_id'") && msg.contains("Int64") && msg.contains("Utf8"),
            "{msg}"
        );
        let err = RangeBoundaries::Int(vec![1])
            .assign("flag", &BooleanArray::from(vec![true]))
            .unwrap_err();
        assert!(matches!(
            err,
            PartitionError::UnsupportedType {
                data_type: DataType::Boolean,
                ..
            }
        ));
    }

    #[test]
    fn validation_names_the_index() {
        assert!(RangeBoundaries::Int(vec![1, 2, 3]).validate().is_ok());
        assert!(RangeBoundaries::Int(vec![]).validate().is_ok());
        let msg = RangeBoundaries::Int(vec![1, 5, 5])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("boundary 2 (5)") && msg.contains("boundary 1 (5)"),
            "{msg}"
        );
        let msg = RangeBoundaries::Utf8(vec!["b".into(), "a".into()])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("boundary 1"), "{msg}");
        let err = RangeBoundaries::Float(vec![0.0, f64::NAN])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("boundary 1 is NaN"));
        assert!(RangeBoundaries::Float(vec![-0.0, 0.0]).validate().is_err());
    }

    #[test]
    fn quantiles_from_sample() {
        // Shuffled 1..=1000: sorted index floor(i*1000/4) = 250, 500, 750 → values 251, 501, 751.
        let vals: Vec<i64> = (0..1000).map(|i| (i * 389) % 1000 + 1).collect();
        let sample: ArrayRef = Arc::new(Int64Array::from(vals));
        let want: Vec<i64> = (1..4).map(|i| (i * 1000 / 4) as i64 + 1).collect();
        assert_eq!(want, vec![251, 501, 751]);
        let b = range_boundaries_from_sample(&sample, 4).unwrap();
        assert_eq!(b, RangeBoundaries::Int(want));
        // The resulting partitions are equal-sized on the sample itself.
        let parts = assign(&b, sample.as_ref());
        for p in 0..4 {
            assert_eq!(parts.iter().filter(|&&x| x == p).count(), 250);
        }
        assert_eq!(
            range_boundaries_from_sample(&sample, 1).unwrap(),
            RangeBoundaries::Int(vec![])
        );
        // Uneven length: 10 values, 3 partitions → indices 3 and 6.
        let ten: ArrayRef = Arc::new(Int32Array::from((0..10).rev().collect::<Vec<_>>()));
        assert_eq!(
            range_boundaries_from_sample(&ten, 3).unwrap(),
            RangeBoundaries::Int(vec![3, 6])
        );
    }

    #[test]
    fn sample_dedup_nulls_and_errors() {
        // Nulls skipped; duplicates collapse, giving fewer partitions than asked.
        let s: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(5),
            None,
            Some(5),
            Some(5),
            Some(5),
            Some(5),
            Some(9),
            None,
        ]));
        let b = range_boundaries_from_sample(&s, 4).unwrap();
        assert_eq!(b, RangeBoundaries::Int(vec![5]));
        assert_eq!(b.partitions(), 2);
        b.validate().unwrap();

        let empty: ArrayRef = Arc::new(Int64Array::from(Vec::<Option<i64>>::new()));
        assert!(matches!(
            range_boundaries_from_sample(&empty, 4),
            Err(PartitionError::EmptySample)
        ));
        let nulls: ArrayRef = Arc::new(Float64Array::from(vec![None, Some(f64::NAN)]));
        assert!(matches!(
            range_boundaries_from_sample(&nulls, 2),
            Err(PartitionError::EmptySample)
        ));
        let big: ArrayRef = Arc::new(UInt64Array::from(vec![1, u64::MAX]));
        let err = range_boundaries_from_sample(&big, 2).unwrap_err();
        assert!(err.to_string().contains(&u64::MAX.to_string()), "{err}");
        let bools: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
        assert!(matches!(
            range_boundaries_from_sample(&bools, 2),
            Err(PartitionError::UnsupportedType { .. })
        ));
        assert!(matches!(
            range_boundaries_from_sample(&s, 0),
            Err(PartitionError::BadPartitionCount(0))
        ));
    }

    #[test]
    fn float_and_string_samples() {
        let f: ArrayRef = Arc::new(Float64Array::from(vec![4.0, f64::NAN, -0.0, 3.0, 1.0, 2.0]));
        // Non-NaN sorted: [0.0, 1.0, 2.0, 3.0, 4.0]; indices 1 and 3.
        assert_eq!(
            range_boundaries_from_sample(&f, 3).unwrap(),
            RangeBoundaries::Float(vec![1.0, 3.0])
        );
        let s: ArrayRef = Arc::new(StringArray::from(vec!["pear", "apple", "fig", "kiwi"]));
        assert_eq!(
            range_boundaries_from_sample(&s, 2).unwrap(),
            RangeBoundaries::Utf8(vec!["kiwi".into()])
        );
        let d: DictionaryArray<Int8Type> =
            vec!["pear", "apple", "fig", "kiwi"].into_iter().collect();
        let d: ArrayRef = Arc::new(d);
        assert_eq!(
            range_boundaries_from_sample(&d, 2).unwrap(),
            RangeBoundaries::Utf8(vec!["kiwi".into()])
        );
    }

    #[test]
    fn serde_shape() {
        let b = RangeBoundaries::Int(vec![1, 2]);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"int":[1,2]}"#);
        let back: RangeBoundaries = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
    }
}
