//! `feature-hasher`: the hashing trick, as scikit-learn's `FeatureHasher(input_type="string")`.
//!
//! For each row, every listed column that holds a value contributes one string feature:
//! `<column>=<value>` (or the bare `<value>` with `hash-column-name = false`), where a utf8
//! value is its text and an integer value its decimal text (`-42`, no `+`, no leading zeros).
//! The UTF-8 bytes of that string are hashed with MurmurHash3 x86_32, seed 0, read as a signed
//! 32-bit integer `h` (scikit-learn's `murmurhash3_32(s, seed=0, positive=False)`). The feature
//! goes to index `|h| mod n-features` (with |−2³¹| = 2³¹) and counts −1 if `alternate-sign` and
//! `h < 0`, else +1, exactly as scikit-learn does. Output column `<prefix>_<i>` (float64, never
//! null) holds the sum of the row's features at index `i`. Nulls contribute nothing, so a row
//! whose listed columns are all null is all zeros.
//!
//! With `hash-column-name = false` and one row's values as the input list, the output equals
//! `FeatureHasher(n_features, input_type="string", alternate_sign).transform([[values…]])`.
//! The input columns are kept; drop them with `select` if they are no longer needed.

use std::io::Write;

use quiver_sdk::categories::CATEGORICAL;
use quiver_sdk::prelude::*;

/// Largest `n-features`: every index is a dense float64 column, so a wider output would make
/// batches of mostly zeros far larger than their input.
const MAX_FEATURES: i64 = 4096;

/// The plugin: its parameters, checked.
struct FeatureHasher {
    columns: Vec<String>,
    n_features: usize,
    prefix: String,
    alternate_sign: bool,
    hash_column_name: bool,
}

/// MurmurHash3 x86_32 (Austin Appleby's reference `MurmurHash3_x86_32`): 4-byte little-endian
/// blocks, then the tail, then the length and the final avalanche.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mix = |k: u32| k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        h ^= mix(u32::from_le_bytes(block.try_into().expect("4 bytes")));
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .enumerate()
            .fold(0u32, |k, (i, &b)| k | (b as u32) << (8 * i));
        h ^= mix(k);
    }
    // The reference mixes in the length modulo 2³² (it takes an `int len`).
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Index and sign of one string feature, as scikit-learn's `_hashing_fast.transform`.
pub fn index_and_sign(feature: &[u8], n_features: usize, alternate_sign: bool) -> (usize, f64) {
    let h = murmur3_x86_32(feature, 0) as i32;
    // Widen before `abs` so that −2³¹ maps to 2³¹, which is what scikit-learn's special case
    // for it computes.
    let index = ((h as i64).abs() % n_features as i64) as usize;
    let sign = if alternate_sign && h < 0 { -1.0 } else { 1.0 };
    (index, sign)
}

/// Appends the decimal text of row `i` of an integer column; false if the type is not one.
fn write_integer(column: &Column, i: usize, buf: &mut Vec<u8>) -> bool {
    // Writing into a Vec cannot fail.
    let _ = match &column.values {
        Values::I8(v) => write!(buf, "{}", v[i]),
        Values::I16(v) => write!(buf, "{}", v[i]),
        Values::I32(v) => write!(buf, "{}", v[i]),
        Values::I64(v) => write!(buf, "{}", v[i]),
        Values::U8(v) => write!(buf, "{}", v[i]),
        Values::U16(v) => write!(buf, "{}", v[i]),
        Values::U32(v) => write!(buf, "{}", v[i]),
        Values::U64(v) => write!(buf, "{}", v[i]),
        _ => return false,
    };
    true
}

impl FeatureHasher {
    /// Name of output column `i`.
    fn output_name(&self, i: usize) -> String {
        format!("{}_{i}", self.prefix)
    }
}

impl Plugin for FeatureHasher {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "feature-hasher",
            env!("CARGO_PKG_VERSION"),
            "hashing trick (scikit-learn's FeatureHasher): MurmurHash3 of `column=value` per \
             row into n-features signed-count float64 columns",
        )
        .param(
            ParamSpec::text_list("columns", "utf8 or integer columns whose values are hashed")
                .required(),
        )
        .param(
            ParamSpec::int(
                "n-features",
                "number of output columns (1 to 4096); index = |murmur3| mod n-features",
            )
            .default(ParamValue::Int(32)),
        )
        .param(
            ParamSpec::text("prefix", "output columns are <prefix>_0 … <prefix>_{n-1}")
                .default(ParamValue::Text("hash".into())),
        )
        .param(
            ParamSpec::boolean(
                "alternate-sign",
                "count −1 for features whose signed 32-bit hash is negative",
            )
            .default(ParamValue::Boolean(true)),
        )
        .param(
            ParamSpec::boolean(
                "hash-column-name",
                "hash `column=value` (true) or the bare value (false)",
            )
            .default(ParamValue::Boolean(true)),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.text_list("columns");
        if columns.is_empty() {
            return Err(Params::invalid("columns", "name at least one column"));
        }
        let n = params.int("n-features").unwrap_or(32);
        if !(1..=MAX_FEATURES).contains(&n) {
            return Err(Params::invalid(
                "n-features",
                format!("must be between 1 and {MAX_FEATURES}, got {n}"),
            ));
        }
        let prefix = params.text("prefix").unwrap_or("hash").to_string();
        if prefix.is_empty() {
            return Err(Params::invalid("prefix", "must not be empty"));
        }
        Ok(FeatureHasher {
            columns,
            n_features: n as usize,
            prefix,
            alternate_sign: params.boolean("alternate-sign").unwrap_or(true),
            hash_column_name: params.boolean("hash-column-name").unwrap_or(true),
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for name in &self.columns {
            let field = find_field(input, name)?;
            if !CATEGORICAL.contains(&field.data_type) {
                return Err(PluginError::new(format!(
                    "column `{name}` has type {}; feature-hasher hashes utf8 or integer columns",
                    field.data_type
                ))
                .in_column(name));
            }
            plan = plan.read(name);
        }
        for i in 0..self.n_features {
            let out = self.output_name(i);
            // Replacing an input column silently would lose data: refuse instead.
            if input.iter().any(|f| f.name == out) {
                return Err(PluginError::new(format!(
                    "output column `{out}` already exists in the input; choose another `prefix`"
                ))
                .in_column(&out));
            }
            plan = plan.computed(&out, DataType::Float64, false);
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows as usize;
        let mut counts = vec![vec![0.0f64; rows]; self.n_features];
        let mut feature = Vec::with_capacity(64);
        for column in &input.columns {
            let head = if self.hash_column_name {
                format!("{}=", column.name).into_bytes()
            } else {
                Vec::new()
            };
            let text = column.data_type == DataType::Utf8;
            for i in (0..rows).filter(|&i| column.is_valid(i)) {
                feature.clear();
                feature.extend_from_slice(&head);
                if text {
                    feature.extend_from_slice(column.bytes_at(i));
                } else if !write_integer(column, i, &mut feature) {
                    return Err(PluginError::new(format!(
                        "column `{}` arrived as {}, not text or integers",
                        column.name, column.data_type
                    ))
                    .in_column(&column.name));
                }
                let (index, sign) = index_and_sign(&feature, self.n_features, self.alternate_sign);
                counts[index][i] += sign;
            }
        }
        let out = counts
            .into_iter()
            .enumerate()
            .map(|(i, values)| {
                Column::from_vec(&self.output_name(i), DataType::Float64, values, None)
            })
            .collect();
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

quiver_sdk::export_plugin!(FeatureHasher);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_published_vectors() {
        // scikit-learn's test_murmurhash: murmurhash3_32(b"foo", 0) == -156908512.
        assert_eq!(murmur3_x86_32(b"foo", 0) as i32, -156_908_512);
        assert_eq!(murmur3_x86_32(b"foo", 42) as i32, -1_322_301_282);
        // The reference's empty input with seed 0 hashes to 0, and one tail byte of each length.
        assert_eq!(murmur3_x86_32(b"", 0), 0);
        assert_eq!(murmur3_x86_32(b"", 1), 0x514e_28b7);
    }

    #[test]
    fn scikit_learn_documentation_examples() {
        // FeatureHasher(n_features=8, input_type="string") on
        // [["dog", "cat", "snake"], ["snake", "dog"], ["cat", "bird"]] gives
        // [[0, 0, 0, -1, 0, -1, 0, 1], [0, 0, 0, -1, 0, -1, 0, 0], [0, -1, 0, 0, 0, 0, 0, 1]].
        assert_eq!(index_and_sign(b"dog", 8, true), (5, -1.0));
        assert_eq!(index_and_sign(b"snake", 8, true), (3, -1.0));
        assert_eq!(index_and_sign(b"cat", 8, true), (7, 1.0));
        assert_eq!(index_and_sign(b"bird", 8, true), (1, -1.0));
        assert_eq!(index_and_sign(b"bird", 8, false), (1, 1.0));
        // FeatureHasher(n_features=10) on [{"dog": 1, "cat": 2, "elephant": 4}, {"run": 5}]:
        // [0, 0, -4, -1, 0, 0, 0, 0, 0, 2] and −5 at index 4.
        assert_eq!(index_and_sign(b"dog", 10, true), (3, -1.0));
        assert_eq!(index_and_sign(b"cat", 10, true), (9, 1.0));
        assert_eq!(index_and_sign(b"elephant", 10, true), (2, -1.0));
        assert_eq!(index_and_sign(b"run", 10, true), (4, -1.0));
    }
}
