//! Stable row hashing for hash partitioning; the encoding is specified in the module docs of
//! [`crate::partition`].

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;

use arrow::record_batch::RecordBatch;
use md5::{Digest, Md5};

use super::key::{float_key, KeyColumn, KeyValues};
use super::{column, PartitionError};

/// The 64-bit hash function applied to a row's key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// XXH3-64, seed 0. Fastest; the default.
    #[default]
    Xxh3,
    /// MurmurHash3 x64_128, seed 0, low 64 bits (h1) — Cassandra's partitioner hash.
    Murmur3,
    /// FNV-1a 64-bit.
    Fnv1a,
    /// First 8 bytes of MD5, little-endian — MongoDB's hashed shard key hash.
    Md5,
}

impl HashAlgorithm {
    /// Every algorithm, in declaration order.
    pub const ALL: [HashAlgorithm; 4] = [
        HashAlgorithm::Xxh3,
        HashAlgorithm::Murmur3,
        HashAlgorithm::Fnv1a,
        HashAlgorithm::Md5,
    ];

    /// The lowercase name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Xxh3 => "xxh3",
            HashAlgorithm::Murmur3 => "murmur3",
            HashAlgorithm::Fnv1a => "fnv1a",
            HashAlgorithm::Md5 => "md5",
        }
    }

    /// Hashes one byte string (e.g. key bytes) with this algorithm.
    pub fn hash_bytes(self, bytes: &[u8]) -> u64 {
        match self {
            HashAlgorithm::Xxh3 => Xxh3::hash(bytes),
            HashAlgorithm::Murmur3 => Murmur3::hash(bytes),
            HashAlgorithm::Fnv1a => Fnv1a::hash(bytes),
            HashAlgorithm::Md5 => Md5Hash::hash(bytes),
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgorithm {
    type Err = PartitionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashAlgorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| PartitionError::UnknownAlgorithm(s.to_string()))
    }
}

/// A hash function as a type, so the per-row loops are monomorphised per algorithm instead of
/// dispatching on the algorithm for every row.
trait Hash64 {
    fn hash(bytes: &[u8]) -> u64;
}

struct Xxh3;
impl Hash64 for Xxh3 {
    #[inline]
    fn hash(bytes: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(bytes)
    }
}

struct Murmur3;
impl Hash64 for Murmur3 {
    #[inline]
    fn hash(bytes: &[u8]) -> u64 {
        let h = murmur3::murmur3_x64_128(&mut Cursor::new(bytes), 0)
            .expect("reading from an in-memory slice cannot fail");
        // The crate returns (h2 << 64) | h1; the low half is h1.
        h as u64
    }
}

struct Fnv1a;
impl Hash64 for Fnv1a {
    #[inline]
    fn hash(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

struct Md5Hash;
impl Hash64 for Md5Hash {
    #[inline]
    fn hash(bytes: &[u8]) -> u64 {
        let digest = Md5::digest(bytes);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

/// One 64-bit hash per row of the `keys` columns, as specified in the [`crate::partition`]
/// module docs; partition = hash % partitions.
pub fn hash_rows(
    batch: &RecordBatch,
    keys: &[String],
    algorithm: HashAlgorithm,
) -> Result<Vec<u64>, PartitionError> {
    if keys.is_empty() {
        return Err(PartitionError::NoKeyColumns);
    }
    let columns = keys
        .iter()
        .map(|k| KeyColumn::new(k, column(batch, k)?.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = batch.num_rows();
    Ok(match algorithm {
        HashAlgorithm::Xxh3 => hash_columns::<Xxh3>(&columns, rows),
        HashAlgorithm::Murmur3 => hash_columns::<Murmur3>(&columns, rows),
        HashAlgorithm::Fnv1a => hash_columns::<Fnv1a>(&columns, rows),
        HashAlgorithm::Md5 => hash_columns::<Md5Hash>(&columns, rows),
    })
}

fn hash_columns<H: Hash64>(columns: &[KeyColumn], rows: usize) -> Vec<u64> {
    match columns {
        [single] => hash_single::<H>(single),
        _ => hash_composite::<H>(columns, rows),
    }
}

/// Single key: H(key bytes), null → 0. Fixed-width columns iterate their value slice directly.
fn hash_single<H: Hash64>(col: &KeyColumn) -> Vec<u64> {
    macro_rules! fixed {
        ($values:expr, |$x:ident| $bytes:expr) => {
            $values
                .iter()
                .enumerate()
                .map(|(row, &$x)| {
                    if col.is_valid(row) {
                        H::hash(&$bytes)
                    } else {
                        0
                    }
                })
                .collect()
        };
    }
    match &col.values {
        KeyValues::I8(v) => fixed!(v, |x| i64::from(x).to_le_bytes()),
        KeyValues::I16(v) => fixed!(v, |x| i64::from(x).to_le_bytes()),
        KeyValues::I32(v) => fixed!(v, |x| i64::from(x).to_le_bytes()),
        KeyValues::I64(v) => fixed!(v, |x| x.to_le_bytes()),
        KeyValues::U8(v) => fixed!(v, |x| u64::from(x).to_le_bytes()),
        KeyValues::U16(v) => fixed!(v, |x| u64::from(x).to_le_bytes()),
        KeyValues::U32(v) => fixed!(v, |x| u64::from(x).to_le_bytes()),
        KeyValues::U64(v) => fixed!(v, |x| x.to_le_bytes()),
        KeyValues::F32(v) => fixed!(v, |x| float_key(f64::from(x))),
        KeyValues::F64(v) => fixed!(v, |x| float_key(x)),
        // Hash each distinct dictionary value once, unless the dictionary dwarfs the rows.
        KeyValues::Dict {
            keys,
            values,
            values_len,
        } if *values_len > 0 && *values_len <= keys.len() => {
            let mut buf = [0u8; 8];
            let value_hashes: Vec<u64> = (0..*values_len)
                .map(|i| H::hash(values.bytes(i, &mut buf)))
                .collect();
            keys.iter()
                .enumerate()
                .map(|(row, &k)| {
                    if col.is_valid(row) {
                        value_hashes[k]
                    } else {
                        0
                    }
                })
                .collect()
        }
        _ => {
            let mut buf = [0u8; 8];
            (0..col.len)
                .map(|row| col.bytes(row, &mut buf).map_or(0, H::hash))
                .collect()
        }
    }
}

/// Several keys: H(for each column: u32 LE length + key bytes, or 0xFFFF_FFFF for null).
fn hash_composite<H: Hash64>(columns: &[KeyColumn], rows: usize) -> Vec<u64> {
    let mut scratch: Vec<u8> = Vec::with_capacity(64);
    let mut buf = [0u8; 8];
    (0..rows)
        .map(|row| {
            scratch.clear();
            for col in columns {
                match col.bytes(row, &mut buf) {
                    Some(bytes) => {
                        // Arrow values are far below 4 GiB, so the length fits a u32.
                        scratch.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                        scratch.extend_from_slice(bytes);
                    }
                    None => scratch.extend_from_slice(&u32::MAX.to_le_bytes()),
                }
            }
            H::hash(&scratch)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, DictionaryArray, Float32Array,
        Float64Array, Int16Array, Int32Array, Int64Array, LargeStringArray, StringArray,
        StringViewArray, TimestampMillisecondArray, UInt64Array, UInt8Array,
    };
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use std::sync::Arc;

    fn batch_of(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    // Independent FNV-1a, written from the spec rather than reusing the implementation.
    fn fnv1a_ref(bytes: &[u8]) -> u64 {
        let mut h: u64 = 14695981039346656037;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(1099511628211);
        }
        h
    }

    #[test]
    fn published_test_vectors() {
        assert_eq!(HashAlgorithm::Xxh3.hash_bytes(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(HashAlgorithm::Fnv1a.hash_bytes(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(HashAlgorithm::Fnv1a.hash_bytes(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            HashAlgorithm::Fnv1a.hash_bytes(b"foobar"),
            0x8594_4171_f739_67e8
        );
        assert_eq!(fnv1a_ref(b"foobar"), 0x8594_4171_f739_67e8);
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e; first 8 bytes read little-endian.
        assert_eq!(HashAlgorithm::Md5.hash_bytes(b""), 0x04b2_008f_d98c_1dd4);
        assert_eq!(
            HashAlgorithm::Md5.hash_bytes(b""),
            u64::from_le_bytes([0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04])
        );
        // MurmurHash3_x64_128("hello", 0) = cbd8a7b341bd9b02 5b1e906a48ae1d19 (h1, h2); we use h1.
        assert_eq!(
            HashAlgorithm::Murmur3.hash_bytes(b"hello"),
            0xcbd8_a7b3_41bd_9b02
        );
        assert_eq!(
            murmur3::murmur3_x64_128(&mut Cursor::new(b"hello"), 0).unwrap() >> 64,
            0x5b1e_906a_48ae_1d19
        );
        assert_eq!(HashAlgorithm::Murmur3.hash_bytes(b""), 0);
        // A multi-block input (43 bytes: two 16-byte blocks and a tail); canonical digest
        // 6c1b07bc7bbc4be347939ac4a93c437a, whose first 8 bytes LE are h1.
        assert_eq!(
            HashAlgorithm::Murmur3.hash_bytes(b"The quick brown fox jumps over the lazy dog"),
            0xe34b_bc7b_bc07_1b6c
        );
    }

    #[test]
    fn names_parse_and_display() {
        for a in HashAlgorithm::ALL {
            assert_eq!(a.to_string().parse::<HashAlgorithm>().unwrap(), a);
            assert_eq!(
                a.to_string()
                    .to_uppercase()
                    .parse::<HashAlgorithm>()
                    .unwrap(),
                a
            );
        }
        assert_eq!(
            "MurMur3".parse::<HashAlgorithm>().unwrap(),
            HashAlgorithm::Murmur3
        );
        let err = "sha1".parse::<HashAlgorithm>().unwrap_err().to_string();
        assert!(
            err.contains("sha1") && err.contains("xxh3, murmur3, fnv1a, md5"),
            "{err}"
        );
        assert_eq!(HashAlgorithm::default(), HashAlgorithm::Xxh3);
        let json = serde_json::to_string(&HashAlgorithm::Fnv1a).unwrap();
        assert_eq!(json, "\"fnv1a\"");
        let back: HashAlgorithm = serde_json::from_str("\"md5\"").unwrap();
        assert_eq!(back, HashAlgorithm::Md5);
    }

    /// Reference key bytes per value, written directly from the documented encoding.
    #[derive(Clone)]
    enum V {
        Null,
        I(i64),
        S(&'static str),
        F(f64),
        B(bool),
    }

    fn ref_bytes(v: &V) -> Option<Vec<u8>> {
        match v {
            V::Null => None,
            V::I(i) => Some(i.to_le_bytes().to_vec()),
            V::S(s) => Some(s.as_bytes().to_vec()),
            V::F(f) => {
                let f = if *f == 0.0 {
                    0.0
                } else if f.is_nan() {
                    f64::NAN
                } else {
                    *f
                };
                Some(f.to_bits().to_le_bytes().to_vec())
            }
            V::B(b) => Some(vec![*b as u8]),
        }
    }

    fn ref_hash(algorithm: HashAlgorithm, row: &[V]) -> u64 {
        if let [single] = row {
            return ref_bytes(single).map_or(0, |b| algorithm.hash_bytes(&b));
        }
        let mut buf = Vec::new();
        for v in row {
            match ref_bytes(v) {
                None => buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]),
                Some(b) => {
                    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    buf.extend_from_slice(&b);
                }
            }
        }
        algorithm.hash_bytes(&buf)
    }

    #[test]
    fn hash_rows_matches_reference_encoding() {
        let ints = vec![Some(1i64), None, Some(-5), Some(i64::MAX), Some(0), Some(1)];
        let strs = vec![
            Some("alice"),
            Some(""),
            None,
            Some("bob"),
            Some("ü"),
            Some("alice"),
        ];
        let floats = vec![
            Some(-0.0f64),
            Some(0.0),
            Some(f64::NAN),
            None,
            Some(1.5),
            Some(-f64::NAN),
        ];
        let bools = vec![
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(false),
            Some(true),
        ];
        let b = batch_of(vec![
            ("i", Arc::new(Int64Array::from(ints.clone())) as ArrayRef),
            ("s", Arc::new(StringArray::from(strs.clone()))),
            ("f", Arc::new(Float64Array::from(floats.clone()))),
            ("b", Arc::new(BooleanArray::from(bools.clone()))),
        ]);
        let rows: Vec<Vec<V>> = (0..6)
            .map(|r| {
                vec![
                    ints[r].map_or(V::Null, V::I),
                    strs[r].map_or(V::Null, V::S),
                    floats[r].map_or(V::Null, V::F),
                    bools[r].map_or(V::Null, V::B),
                ]
            })
            .collect();
        let cases: Vec<(Vec<&str>, Vec<usize>)> = vec![
            (vec!["i"], vec![0]),
            (vec!["s"], vec![1]),
            (vec!["f"], vec![2]),
            (vec!["b"], vec![3]),
            (vec!["s", "i"], vec![1, 0]),
            (vec!["i", "s", "f", "b"], vec![0, 1, 2, 3]),
        ];
        for algorithm in HashAlgorithm::ALL {
            for (names, idx) in &cases {
                let got = hash_rows(&b, &keys(names), algorithm).unwrap();
                let want: Vec<u64> = rows
                    .iter()
                    .map(|row| {
                        let picked: Vec<V> = idx.iter().map(|&i| row[i].clone()).collect();
                        ref_hash(algorithm, &picked)
                    })
                    .collect();
                assert_eq!(got, want, "{algorithm} over {names:?}");
            }
        }
        // Spot checks of the documented special cases.
        let f = hash_rows(&b, &keys(&["f"]), HashAlgorithm::Xxh3).unwrap();
        assert_eq!(f[0], f[1], "-0.0 and 0.0 hash equally");
        assert_eq!(f[2], f[5], "all NaNs hash equally");
        assert_eq!(f[3], 0, "null single key hashes to 0");
        let i = hash_rows(&b, &keys(&["i"]), HashAlgorithm::Fnv1a).unwrap();
        assert_eq!(i[0], fnv1a_ref(&1i64.to_le_bytes()));
        assert_eq!(i[0], i[5]);
        let s = hash_rows(&b, &keys(&["s"]), HashAlgorithm::Fnv1a).unwrap();
        assert_eq!(s[0], fnv1a_ref(b"alice"));
        assert_eq!(s[1], fnv1a_ref(b""), "empty string is not null");
        // Composite: explicit bytes for row 0 = (i=1, s="alice").
        let c = hash_rows(&b, &keys(&["i", "s"]), HashAlgorithm::Fnv1a).unwrap();
        let mut want = vec![8, 0, 0, 0];
        want.extend_from_slice(&1i64.to_le_bytes());
        want.extend_from_slice(&[5, 0, 0, 0]);
        want.extend_from_slice(b"alice");
        assert_eq!(c[0], fnv1a_ref(&want));
        // Row 1 = (null, ""): null marker then an empty value.
        let want = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert_eq!(c[1], fnv1a_ref(&want));
    }

    #[test]
    fn widening_makes_types_hash_alike() {
        let b = batch_of(vec![
            (
                "i16",
                Arc::new(Int16Array::from(vec![-3i16, 7])) as ArrayRef,
            ),
            ("i32", Arc::new(Int32Array::from(vec![-3, 7]))),
            ("i64", Arc::new(Int64Array::from(vec![-3i64, 7]))),
            ("d32", Arc::new(Date32Array::from(vec![-3, 7]))),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![-3i64, 7]).with_timezone("UTC")),
            ),
            ("u8", Arc::new(UInt8Array::from(vec![3u8, 7]))),
            ("u64", Arc::new(UInt64Array::from(vec![3u64, 7]))),
            ("f32", Arc::new(Float32Array::from(vec![-3.0f32, 0.1]))),
            (
                "f64",
                Arc::new(Float64Array::from(vec![-3.0f64, 0.1f32 as f64])),
            ),
            ("large", Arc::new(LargeStringArray::from(vec!["x", "yz"]))),
            ("view", Arc::new(StringViewArray::from(vec!["x", "yz"]))),
            ("utf8", Arc::new(StringArray::from(vec!["x", "yz"]))),
            ("bin", Arc::new(BinaryArray::from(vec![&b"x"[..], b"yz"]))),
        ]);
        let h = |k: &str| hash_rows(&b, &keys(&[k]), HashAlgorithm::Md5).unwrap();
        for k in ["i16", "i32", "d32", "ts"] {
            assert_eq!(h(k), h("i64"), "{k}");
        }
        assert_eq!(
            h("i64")[0],
            HashAlgorithm::Md5.hash_bytes(&(-3i64).to_le_bytes())
        );
        assert_eq!(h("u8"), h("u64"));
        assert_eq!(h("u64")[1], h("i64")[1], "7 is 7 whether signed or not");
        assert_eq!(h("f32"), h("f64"));
        for k in ["large", "view", "bin"] {
            assert_eq!(h(k), h("utf8"), "{k}");
        }
    }

    #[test]
    fn dictionary_hashes_like_its_values_and_sliced_batches_work() {
        let dict: DictionaryArray<Int32Type> =
            vec![Some("a"), Some("b"), None, Some("a"), Some("c")]
                .into_iter()
                .collect();
        let plain = StringArray::from(vec![Some("a"), Some("b"), None, Some("a"), Some("c")]);
        let b = batch_of(vec![
            ("d", Arc::new(dict) as ArrayRef),
            ("p", Arc::new(plain)),
        ]);
        for a in HashAlgorithm::ALL {
            assert_eq!(
                hash_rows(&b, &keys(&["d"]), a).unwrap(),
                hash_rows(&b, &keys(&["p"]), a).unwrap()
            );
            assert_eq!(
                hash_rows(&b, &keys(&["d", "p"]), a).unwrap(),
                hash_rows(&b, &keys(&["p", "d"]), a).unwrap()
            );
        }
        // A dictionary with more values than rows takes the per-row path.
        let sliced = b.slice(1, 2);
        assert_eq!(
            hash_rows(&sliced, &keys(&["d"]), HashAlgorithm::Xxh3).unwrap(),
            hash_rows(&b, &keys(&["p"]), HashAlgorithm::Xxh3).unwrap()[1..3]
        );
        let s2 = b.slice(3, 2);
        assert_eq!(
            hash_rows(&s2, &keys(&["p", "d"]), HashAlgorithm::Murmur3).unwrap(),
            hash_rows(&b, &keys(&["p", "d"]), HashAlgorithm::Murmur3).unwrap()[3..5]
        );
    }

    #[test]
    fn errors_name_column_and_type() {
        let b = batch_of(vec![(
            "amount",
            Arc::new(arrow::array::Decimal128Array::from(vec![1i128])) as ArrayRef,
        )]);
        let err = hash_rows(&b, &keys(&["amount"]), HashAlgorithm::Xxh3).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("'amount'") && msg.contains("Decimal128"),
            "{msg}"
        );
        assert!(matches!(
            err,
            PartitionError::UnsupportedType {
                data_type: DataType::Decimal128(_, _),
                ..
            }
        ));
        assert!(matches!(
            hash_rows(&b, &[], HashAlgorithm::Xxh3),
            Err(PartitionError::NoKeyColumns)
        ));
    }
}
