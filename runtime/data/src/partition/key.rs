//! A key column downcast once into typed slices, shared by hashing, range assignment and
//! boundary sampling so no code path downcasts per row.

use arrow::array::{
    Array, AsArray, BinaryArray, BinaryViewArray, BooleanArray, LargeBinaryArray, LargeStringArray,
    StringArray, StringViewArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};

use super::PartitionError;

/// The typed values of a key column (null slots hold arbitrary but readable values).
pub(crate) enum KeyValues<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    /// Int32 and Date32.
    I32(&'a [i32]),
    /// Int64, Date64 and all timestamps.
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Bool(&'a BooleanArray),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Binary(&'a BinaryArray),
    LargeBinary(&'a LargeBinaryArray),
    BinaryView(&'a BinaryViewArray),
    /// Row `r` has the value `values[keys[r]]`; `values_len` is 0 only when every row is null.
    Dict {
        keys: Vec<usize>,
        values: Box<KeyValues<'a>>,
        values_len: usize,
    },
}

/// Supported hash key types, for error messages.
pub(crate) const HASH_TYPES: &str = "signed and unsigned integers, Float32, Float64, Boolean, \
     Date32, Date64, Timestamp, Utf8, LargeUtf8, Utf8View, Binary, LargeBinary, BinaryView, \
     and dictionaries of these";

impl<'a> KeyValues<'a> {
    /// Downcasts `array`; `column` names it in the error for unsupported types.
    pub(crate) fn new(column: &str, array: &'a dyn Array) -> Result<Self, PartitionError> {
        Ok(match array.data_type() {
            DataType::Int8 => KeyValues::I8(array.as_primitive::<Int8Type>().values()),
            DataType::Int16 => KeyValues::I16(array.as_primitive::<Int16Type>().values()),
            DataType::Int32 => KeyValues::I32(array.as_primitive::<Int32Type>().values()),
            DataType::Int64 => KeyValues::I64(array.as_primitive::<Int64Type>().values()),
            DataType::Date32 => KeyValues::I32(array.as_primitive::<Date32Type>().values()),
            DataType::Date64 => KeyValues::I64(array.as_primitive::<Date64Type>().values()),
            DataType::Timestamp(TimeUnit::Second, _) => {
                KeyValues::I64(array.as_primitive::<TimestampSecondType>().values())
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                KeyValues::I64(array.as_primitive::<TimestampMillisecondType>().values())
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                KeyValues::I64(array.as_primitive::<TimestampMicrosecondType>().values())
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                KeyValues::I64(array.as_primitive::<TimestampNanosecondType>().values())
            }
            DataType::UInt8 => KeyValues::U8(array.as_primitive::<UInt8Type>().values()),
            DataType::UInt16 => KeyValues::U16(array.as_primitive::<UInt16Type>().values()),
            DataType::UInt32 => KeyValues::U32(array.as_primitive::<UInt32Type>().values()),
            DataType::UInt64 => KeyValues::U64(array.as_primitive::<UInt64Type>().values()),
            DataType::Float32 => KeyValues::F32(array.as_primitive::<Float32Type>().values()),
            DataType::Float64 => KeyValues::F64(array.as_primitive::<Float64Type>().values()),
            DataType::Boolean => KeyValues::Bool(array.as_boolean()),
            DataType::Utf8 => KeyValues::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => KeyValues::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => KeyValues::Utf8View(array.as_string_view()),
            DataType::Binary => KeyValues::Binary(array.as_binary::<i32>()),
            DataType::LargeBinary => KeyValues::LargeBinary(array.as_binary::<i64>()),
            DataType::BinaryView => KeyValues::BinaryView(array.as_binary_view()),
            DataType::Dictionary(_, _) => {
                let dict = array.as_any_dictionary();
                let values = dict.values().as_ref();
                let values_len = values.len();
                // normalized_keys panics on an empty dictionary, whose rows are all null anyway.
                let keys = if values_len == 0 {
                    Vec::new()
                } else {
                    dict.normalized_keys()
                };
                KeyValues::Dict {
                    keys,
                    values: Box::new(KeyValues::new(column, values)?),
                    values_len,
                }
            }
            other => {
                return Err(PartitionError::UnsupportedType {
                    column: column.to_string(),
                    data_type: other.clone(),
                    usage: "hash key",
                    supported: HASH_TYPES,
                })
            }
        })
    }

    /// The key bytes of `row` (see the module docs); fixed-width values are written to `buf`.
    #[inline]
    pub(crate) fn bytes<'s>(&'s self, row: usize, buf: &'s mut [u8; 8]) -> &'s [u8] {
        match self {
            KeyValues::I8(v) => signed_bytes(v[row].into(), buf),
            KeyValues::I16(v) => signed_bytes(v[row].into(), buf),
            KeyValues::I32(v) => signed_bytes(v[row].into(), buf),
            KeyValues::I64(v) => signed_bytes(v[row], buf),
            KeyValues::U8(v) => unsigned_bytes(v[row].into(), buf),
            KeyValues::U16(v) => unsigned_bytes(v[row].into(), buf),
            KeyValues::U32(v) => unsigned_bytes(v[row].into(), buf),
            KeyValues::U64(v) => unsigned_bytes(v[row], buf),
            KeyValues::F32(v) => float_bytes(v[row].into(), buf),
            KeyValues::F64(v) => float_bytes(v[row], buf),
            KeyValues::Bool(a) => {
                buf[0] = u8::from(a.value(row));
                &buf[..1]
            }
            KeyValues::Utf8(a) => a.value(row).as_bytes(),
            KeyValues::LargeUtf8(a) => a.value(row).as_bytes(),
            KeyValues::Utf8View(a) => a.value(row).as_bytes(),
            KeyValues::Binary(a) => a.value(row),
            KeyValues::LargeBinary(a) => a.value(row),
            KeyValues::BinaryView(a) => a.value(row),
            KeyValues::Dict { keys, values, .. } => values.bytes(keys[row], buf),
        }
    }
}

/// A key column: its typed values plus its logical nulls (dictionary value nulls included).
pub(crate) struct KeyColumn<'a> {
    pub(crate) nulls: Option<NullBuffer>,
    pub(crate) values: KeyValues<'a>,
    pub(crate) len: usize,
}

impl<'a> KeyColumn<'a> {
    /// Downcasts `array` once; `column` names it in errors.
    pub(crate) fn new(column: &str, array: &'a dyn Array) -> Result<Self, PartitionError> {
        Ok(KeyColumn {
            nulls: array.logical_nulls(),
            values: KeyValues::new(column, array)?,
            len: array.len(),
        })
    }

    /// Whether `row` is (logically) valid.
    #[inline]
    pub(crate) fn is_valid(&self, row: usize) -> bool {
        self.nulls.as_ref().is_none_or(|n| n.is_valid(row))
    }

    /// The key bytes of `row`, or None when it is null.
    #[inline]
    pub(crate) fn bytes<'s>(&'s self, row: usize, buf: &'s mut [u8; 8]) -> Option<&'s [u8]> {
        self.is_valid(row).then(|| self.values.bytes(row, buf))
    }
}

#[inline]
fn signed_bytes(v: i64, buf: &mut [u8; 8]) -> &[u8] {
    *buf = v.to_le_bytes();
    buf
}

#[inline]
fn unsigned_bytes(v: u64, buf: &mut [u8; 8]) -> &[u8] {
    *buf = v.to_le_bytes();
    buf
}

#[inline]
fn float_bytes(v: f64, buf: &mut [u8; 8]) -> &[u8] {
    *buf = float_key(v);
    buf
}

/// The 8 key bytes of a float: -0.0 and 0.0 (and all NaNs) are equal keys, so they must
/// hash equally.
#[inline]
pub(crate) fn float_key(v: f64) -> [u8; 8] {
    let v = if v == 0.0 {
        0.0
    } else if v.is_nan() {
        f64::NAN
    } else {
        v
    };
    v.to_bits().to_le_bytes()
}
