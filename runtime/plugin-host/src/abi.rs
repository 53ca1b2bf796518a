//! The batch ABI: Arrow arrays ↔ the WIT `batch` of `quiver:plugin`, plans, and validation of
//! everything a plugin returns.
//!
//! Going in, a column borrows its Arrow buffers (`&[f64]`, the validity bytes, …) and the
//! component model copies them straight into the guest's memory: no per-row work on the host
//! for fixed-width types. Coming out, each returned list is lifted into a `Vec` that becomes an
//! Arrow buffer without another copy, then checked against the plan before anything downstream
//! sees it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    make_array, Array, ArrayData, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow::compute::FilterBuilder;
use arrow::datatypes::{self as adt, DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use wasmtime::component::{ComponentType, Lift, Lower};

use crate::untrusted;

/// An error in data crossing the boundary, in either direction.
#[derive(Debug, thiserror::Error)]
pub enum AbiError {
    /// A column the plugin reads has a type the contract cannot carry.
    #[error("column `{column}` has type {data_type}, which plugins cannot read (supported: boolean, integers, floats, utf8, binary, date32, timestamp)")]
    UnsupportedType {
        /// The column.
        column: String,
        /// Its Arrow type.
        data_type: DataType,
    },
    /// The plan names a column the input does not have.
    #[error("the plan {role} column `{column}`, but the input has only: {available}")]
    UnknownColumn {
        /// "reads" or "passes through".
        role: &'static str,
        /// The column.
        column: String,
        /// The input's columns, comma-separated.
        available: String,
    },
    /// The plugin returned something that contradicts its plan or the contract.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// Arrow refused an array or batch.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

fn invalid(msg: impl Into<String>) -> AbiError {
    AbiError::InvalidOutput(msg.into())
}

// ---------------------------------------------------------------------------------------------
// The WIT types, host side. Names follow `wit/quiver.wit`.

/// `time-unit`.
#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum WitTimeUnit {
    #[component(name = "second")]
    Second,
    #[component(name = "millisecond")]
    Millisecond,
    #[component(name = "microsecond")]
    Microsecond,
    #[component(name = "nanosecond")]
    Nanosecond,
}

/// `timestamp-type`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
#[allow(missing_docs)]
pub struct WitTimestampType {
    pub unit: WitTimeUnit,
    pub timezone: Option<String>,
}

/// `data-type`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(variant)]
#[allow(missing_docs)]
pub enum WitDataType {
    #[component(name = "boolean")]
    Boolean,
    #[component(name = "int8")]
    Int8,
    #[component(name = "int16")]
    Int16,
    #[component(name = "int32")]
    Int32,
    #[component(name = "int64")]
    Int64,
    #[component(name = "uint8")]
    Uint8,
    #[component(name = "uint16")]
    Uint16,
    #[component(name = "uint32")]
    Uint32,
    #[component(name = "uint64")]
    Uint64,
    #[component(name = "float32")]
    Float32,
    #[component(name = "float64")]
    Float64,
    #[component(name = "utf8")]
    Utf8,
    #[component(name = "binary")]
    Binary,
    #[component(name = "date32")]
    Date32,
    #[component(name = "timestamp")]
    Timestamp(WitTimestampType),
}

impl WitDataType {
    /// The contract's type for an Arrow type, if it has one.
    pub fn from_arrow(t: &DataType) -> Option<Self> {
        Some(match t {
            DataType::Boolean => Self::Boolean,
            DataType::Int8 => Self::Int8,
            DataType::Int16 => Self::Int16,
            DataType::Int32 => Self::Int32,
            DataType::Int64 => Self::Int64,
            DataType::UInt8 => Self::Uint8,
            DataType::UInt16 => Self::Uint16,
            DataType::UInt32 => Self::Uint32,
            DataType::UInt64 => Self::Uint64,
            DataType::Float32 => Self::Float32,
            DataType::Float64 => Self::Float64,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Utf8,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Self::Binary,
            DataType::Date32 => Self::Date32,
            DataType::Timestamp(unit, tz) => Self::Timestamp(WitTimestampType {
                unit: match unit {
                    TimeUnit::Second => WitTimeUnit::Second,
                    TimeUnit::Millisecond => WitTimeUnit::Millisecond,
                    TimeUnit::Microsecond => WitTimeUnit::Microsecond,
                    TimeUnit::Nanosecond => WitTimeUnit::Nanosecond,
                },
                timezone: tz.as_ref().map(|z| z.to_string()),
            }),
            DataType::Dictionary(_, value) => return Self::from_arrow(value),
            _ => return None,
        })
    }

    /// The Arrow type of this contract type.
    pub fn to_arrow(&self) -> DataType {
        match self {
            Self::Boolean => DataType::Boolean,
            Self::Int8 => DataType::Int8,
            Self::Int16 => DataType::Int16,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Uint8 => DataType::UInt8,
            Self::Uint16 => DataType::UInt16,
            Self::Uint32 => DataType::UInt32,
            Self::Uint64 => DataType::UInt64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::Utf8 => DataType::Utf8,
            Self::Binary => DataType::Binary,
            Self::Date32 => DataType::Date32,
            Self::Timestamp(t) => DataType::Timestamp(
                match t.unit {
                    WitTimeUnit::Second => TimeUnit::Second,
                    WitTimeUnit::Millisecond => TimeUnit::Millisecond,
                    WitTimeUnit::Microsecond => TimeUnit::Microsecond,
                    WitTimeUnit::Nanosecond => TimeUnit::Nanosecond,
                },
                t.timezone.as_deref().map(Into::into),
            ),
        }
    }
}

/// `values`, borrowed from Arrow buffers (host → plugin).
#[derive(ComponentType, Lower, Debug)]
#[component(variant)]
#[allow(missing_docs)]
pub enum ValuesIn<'a> {
    #[component(name = "bits")]
    Bits(&'a [u8]),
    #[component(name = "i8")]
    I8(&'a [i8]),
    #[component(name = "i16")]
    I16(&'a [i16]),
    #[component(name = "i32")]
    I32(&'a [i32]),
    #[component(name = "i64")]
    I64(&'a [i64]),
    #[component(name = "u8")]
    U8(&'a [u8]),
    #[component(name = "u16")]
    U16(&'a [u16]),
    #[component(name = "u32")]
    U32(&'a [u32]),
    #[component(name = "u64")]
    U64(&'a [u64]),
    #[component(name = "f32")]
    F32(&'a [f32]),
    #[component(name = "f64")]
    F64(&'a [f64]),
    #[component(name = "bytes")]
    Bytes(&'a [u8]),
}

/// `values`, owned (plugin → host).
#[derive(ComponentType, Lift, Debug)]
#[component(variant)]
#[allow(missing_docs)]
pub enum ValuesOut {
    #[component(name = "bits")]
    Bits(Vec<u8>),
    #[component(name = "i8")]
    I8(Vec<i8>),
    #[component(name = "i16")]
    I16(Vec<i16>),
    #[component(name = "i32")]
    I32(Vec<i32>),
    #[component(name = "i64")]
    I64(Vec<i64>),
    #[component(name = "u8")]
    U8(Vec<u8>),
    #[component(name = "u16")]
    U16(Vec<u16>),
    #[component(name = "u32")]
    U32(Vec<u32>),
    #[component(name = "u64")]
    U64(Vec<u64>),
    #[component(name = "f32")]
    F32(Vec<f32>),
    #[component(name = "f64")]
    F64(Vec<f64>),
    #[component(name = "bytes")]
    Bytes(Vec<u8>),
}

/// `column`, borrowed (host → plugin).
#[derive(ComponentType, Lower, Debug)]
#[component(record)]
#[allow(missing_docs)]
pub struct ColumnIn<'a> {
    pub name: &'a str,
    #[component(name = "data-type")]
    pub data_type: WitDataType,
    pub validity: Option<&'a [u8]>,
    pub offsets: Option<&'a [i32]>,
    pub values: ValuesIn<'a>,
}

/// `batch`, borrowed (host → plugin).
#[derive(ComponentType, Lower, Debug)]
#[component(record)]
#[allow(missing_docs)]
pub struct BatchIn<'a> {
    pub rows: u32,
    pub columns: Vec<ColumnIn<'a>>,
}

/// `column`, owned (plugin → host).
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
#[allow(missing_docs)]
pub struct ColumnOut {
    pub name: String,
    #[component(name = "data-type")]
    pub data_type: WitDataType,
    pub validity: Option<Vec<u8>>,
    pub offsets: Option<Vec<i32>>,
    pub values: ValuesOut,
}

/// `output-batch` (plugin → host).
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
#[allow(missing_docs)]
pub struct OutputBatch {
    pub rows: u32,
    pub columns: Vec<ColumnOut>,
    pub selection: Option<Vec<u8>>,
}

/// The `list<output-batch>` a `transform` call returns, lifted only after its length is checked
/// against [`OutputBatches::lift_with_cap`]'s cap: each batch costs the host memory even when
/// empty, so a plugin returning millions of them is refused before any is copied out.
#[derive(Debug)]
pub struct OutputBatches(pub Vec<OutputBatch>);

/// A plugin returned more output batches from one call than its cap allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{returned} output batches from one call (the cap is {cap})")]
pub struct TooManyBatches {
    /// Batches returned.
    pub returned: usize,
    /// The cap.
    pub cap: usize,
}

thread_local! {
    /// The cap on output batches of the call being lifted on this thread (lifting happens on
    /// the thread that made the call, inside it).
    static BATCH_CAP: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

impl OutputBatches {
    /// Runs `call` (which lifts `OutputBatches`) with at most `cap` batches accepted.
    pub fn lift_with_cap<R>(cap: usize, call: impl FnOnce() -> R) -> R {
        let before = BATCH_CAP.with(|c| c.replace(cap));
        let result = call();
        BATCH_CAP.with(|c| c.set(before));
        result
    }

    fn lift(
        cx: &mut wasmtime::component::__internal::LiftContext<'_>,
        list: &wasmtime::component::WasmList<OutputBatch>,
    ) -> wasmtime::Result<Self> {
        let cap = BATCH_CAP.with(std::cell::Cell::get);
        if list.len() > cap {
            return Err(TooManyBatches {
                returned: list.len(),
                cap,
            }
            .into());
        }
        Ok(OutputBatches(OutputBatch::linear_lift_list_from_memory(
            cx, list,
        )?))
    }
}

// SAFETY: the same component type and representation as `Vec<OutputBatch>` (a list), whose
// implementation both traits forward to; only the length is looked at first.
unsafe impl ComponentType for OutputBatches {
    type Lower = <Vec<OutputBatch> as ComponentType>::Lower;
    const ABI: wasmtime::component::__internal::CanonicalAbiInfo =
        <Vec<OutputBatch> as ComponentType>::ABI;

    fn typecheck(
        ty: &wasmtime::component::__internal::InterfaceType,
        types: &wasmtime::component::__internal::InstanceType<'_>,
    ) -> wasmtime::Result<()> {
        <Vec<OutputBatch> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: see `ComponentType` above.
unsafe impl Lift for OutputBatches {
    fn linear_lift_from_flat(
        cx: &mut wasmtime::component::__internal::LiftContext<'_>,
        ty: wasmtime::component::__internal::InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let list =
            wasmtime::component::WasmList::<OutputBatch>::linear_lift_from_flat(cx, ty, src)?;
        Self::lift(cx, &list)
    }

    fn linear_lift_from_memory(
        cx: &mut wasmtime::component::__internal::LiftContext<'_>,
        ty: wasmtime::component::__internal::InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let list =
            wasmtime::component::WasmList::<OutputBatch>::linear_lift_from_memory(cx, ty, bytes)?;
        Self::lift(cx, &list)
    }
}

/// `field`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
#[allow(missing_docs)]
pub struct WitField {
    pub name: String,
    #[component(name = "data-type")]
    pub data_type: WitDataType,
    pub nullable: bool,
}

/// `output-source`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(variant)]
#[allow(missing_docs)]
pub enum OutputSource {
    #[component(name = "computed")]
    Computed,
    #[component(name = "passthrough")]
    Passthrough(String),
}

/// `output-field`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
#[allow(missing_docs)]
pub struct OutputField {
    pub name: String,
    #[component(name = "data-type")]
    pub data_type: WitDataType,
    pub nullable: bool,
    pub source: OutputSource,
}

/// `plan`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
#[allow(missing_docs)]
pub struct WitPlan {
    pub reads: Vec<String>,
    pub output: Vec<OutputField>,
}

/// `plugin-error`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
#[allow(missing_docs)]
pub struct WitPluginError {
    pub message: String,
    pub column: Option<String>,
    pub row: Option<u32>,
}

/// `param-kind`.
#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum ParamKind {
    #[component(name = "boolean")]
    Boolean,
    #[component(name = "int")]
    Int,
    #[component(name = "float")]
    Float,
    #[component(name = "text")]
    Text,
    #[component(name = "text-list")]
    TextList,
    #[component(name = "text-map")]
    TextMap,
}

impl std::fmt::Display for ParamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ParamKind::Boolean => "a boolean",
            ParamKind::Int => "an integer",
            ParamKind::Float => "a number",
            ParamKind::Text => "a text",
            ParamKind::TextList => "a list of texts",
            ParamKind::TextMap => "a table of texts",
        })
    }
}

/// `param-value`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, serde::Serialize)]
#[component(variant)]
#[serde(untagged)]
#[allow(missing_docs)]
pub enum ParamValue {
    #[component(name = "boolean")]
    Boolean(bool),
    #[component(name = "int")]
    Int(i64),
    #[component(name = "float")]
    Float(f64),
    #[component(name = "text")]
    Text(String),
    #[component(name = "text-list")]
    TextList(Vec<String>),
    #[component(name = "text-map")]
    #[serde(serialize_with = "pairs_as_map")]
    TextMap(Vec<(String, String)>),
}

/// A table parameter is written as a JSON object (in file order), as the pipeline file has it.
fn pairs_as_map<S: serde::Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// A parameter given as TOML (a pipeline file, the command line, a recording) that has no form
/// in the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter `{name}`: {what} is not a parameter value (use a boolean, integer, float, string, array of strings or table of strings)")]
pub struct NotAParamValue {
    /// The parameter.
    pub name: String,
    /// What it was given.
    pub what: &'static str,
}

impl ParamValue {
    /// The contract's form of a TOML value: booleans, integers, floats and strings as they are,
    /// arrays of strings as text lists, tables of strings as text maps (in file order).
    pub fn from_toml(name: &str, v: &toml::Value) -> Result<Self, NotAParamValue> {
        let bad = |what| NotAParamValue {
            name: name.to_owned(),
            what,
        };
        Ok(match v {
            toml::Value::Boolean(b) => ParamValue::Boolean(*b),
            toml::Value::Integer(i) => ParamValue::Int(*i),
            toml::Value::Float(f) => ParamValue::Float(*f),
            toml::Value::String(s) => ParamValue::Text(s.clone()),
            toml::Value::Array(a) => ParamValue::TextList(
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| bad("an array with non-strings"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Table(t) => ParamValue::TextMap(
                t.iter()
                    .map(|(k, x)| {
                        x.as_str()
                            .map(|s| (k.clone(), s.to_owned()))
                            .ok_or_else(|| bad("a table with non-string values"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Datetime(_) => return Err(bad("a date")),
        })
    }

    /// Kind of this value.
    pub fn kind(&self) -> ParamKind {
        match self {
            ParamValue::Boolean(_) => ParamKind::Boolean,
            ParamValue::Int(_) => ParamKind::Int,
            ParamValue::Float(_) => ParamKind::Float,
            ParamValue::Text(_) => ParamKind::Text,
            ParamValue::TextList(_) => ParamKind::TextList,
            ParamValue::TextMap(_) => ParamKind::TextMap,
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Boolean(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Text(s) => write!(f, "{s:?}"),
            ParamValue::TextList(l) => write!(f, "{l:?}"),
            ParamValue::TextMap(m) => {
                let items: Vec<String> = m.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
                write!(f, "{{ {} }}", items.join(", "))
            }
        }
    }
}

/// `param`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
#[allow(missing_docs)]
pub struct Param {
    pub name: String,
    pub value: ParamValue,
}

/// `param-spec`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
#[allow(missing_docs)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamKind,
    pub required: bool,
    pub default: Option<ParamValue>,
    pub doc: String,
}

/// `plugin-info`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
#[allow(missing_docs)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub params: Vec<ParamSpec>,
}

/// `wrong-kind`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
#[allow(missing_docs)]
pub struct WrongKind {
    pub name: String,
    pub expected: ParamKind,
    pub found: ParamKind,
}

/// `invalid-param`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
#[allow(missing_docs)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

/// `param-error`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(variant)]
#[allow(missing_docs)]
pub enum ParamError {
    #[component(name = "unknown")]
    Unknown(String),
    #[component(name = "missing")]
    Missing(String),
    #[component(name = "wrong-kind")]
    WrongKind(WrongKind),
    #[component(name = "invalid")]
    Invalid(InvalidParam),
}

/// `host.level`.
#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum LogLevel {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}

// ---------------------------------------------------------------------------------------------
// Arrow → WIT

/// Makes an array ready to cross the boundary: types the contract carries in another layout
/// are cast (dictionaries decoded, large/view strings to utf8), and bitmaps that start in the
/// middle of a byte are re-based (the contract's bitmaps start at bit 0). Everything else is
/// returned as is, without a copy.
pub fn prepare_array(name: &str, array: &ArrayRef) -> Result<ArrayRef, AbiError> {
    let unsupported = || AbiError::UnsupportedType {
        column: name.to_string(),
        data_type: array.data_type().clone(),
    };
    let wit = WitDataType::from_arrow(array.data_type()).ok_or_else(unsupported)?;
    let target = wit.to_arrow();
    let array = if &target != array.data_type() {
        arrow::compute::cast(array, &target)?
    } else {
        array.clone()
    };
    let misaligned_nulls = array.nulls().is_some_and(|n| n.offset() % 8 != 0);
    let misaligned_bools = array
        .as_boolean_opt()
        .is_some_and(|b| b.values().offset() % 8 != 0);
    if misaligned_nulls || misaligned_bools {
        // A fresh copy starts at offset 0.
        return Ok(arrow::compute::concat(&[array.as_ref()])?);
    }
    Ok(array)
}

fn bitmap_bytes(bits: &BooleanBuffer) -> &[u8] {
    let start = bits.offset() / 8;
    &bits.inner().as_slice()[start..start + bits.len().div_ceil(8)]
}

/// Borrows a prepared array (see [`prepare_array`]) as a WIT column.
pub fn column_in<'a>(name: &'a str, array: &'a ArrayRef) -> ColumnIn<'a> {
    let data_type = WitDataType::from_arrow(array.data_type()).expect("prepared array");
    let validity = array
        .nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| bitmap_bytes(n.inner()));
    let mut offsets = None;
    macro_rules! prim {
        ($case:ident, $t:ty) => {
            ValuesIn::$case(array.as_primitive::<$t>().values())
        };
    }
    let values = match array.data_type() {
        DataType::Boolean => ValuesIn::Bits(bitmap_bytes(array.as_boolean().values())),
        DataType::Int8 => prim!(I8, adt::Int8Type),
        DataType::Int16 => prim!(I16, adt::Int16Type),
        DataType::Int32 => prim!(I32, adt::Int32Type),
        DataType::Int64 => prim!(I64, adt::Int64Type),
        DataType::UInt8 => prim!(U8, adt::UInt8Type),
        DataType::UInt16 => prim!(U16, adt::UInt16Type),
        DataType::UInt32 => prim!(U32, adt::UInt32Type),
        DataType::UInt64 => prim!(U64, adt::UInt64Type),
        DataType::Float32 => prim!(F32, adt::Float32Type),
        DataType::Float64 => prim!(F64, adt::Float64Type),
        DataType::Date32 => prim!(I32, adt::Date32Type),
        DataType::Timestamp(unit, _) => ValuesIn::I64(match unit {
            TimeUnit::Second => array.as_primitive::<adt::TimestampSecondType>().values(),
            TimeUnit::Millisecond => array
                .as_primitive::<adt::TimestampMillisecondType>()
                .values(),
            TimeUnit::Microsecond => array
                .as_primitive::<adt::TimestampMicrosecondType>()
                .values(),
            TimeUnit::Nanosecond => array
                .as_primitive::<adt::TimestampNanosecondType>()
                .values(),
        }),
        DataType::Utf8 => {
            let s = array.as_string::<i32>();
            offsets = Some(s.value_offsets());
            let end = s.value_offsets().last().copied().unwrap_or(0) as usize;
            ValuesIn::Bytes(&s.values()[..end])
        }
        DataType::Binary => {
            let b = array.as_binary::<i32>();
            offsets = Some(b.value_offsets());
            let end = b.value_offsets().last().copied().unwrap_or(0) as usize;
            ValuesIn::Bytes(&b.values()[..end])
        }
        other => unreachable!("prepare_array admits no {other}"),
    };
    ColumnIn {
        name,
        data_type,
        validity,
        offsets,
        values,
    }
}

/// Borrows the prepared `reads` columns (see [`prepare_array`]) of a batch of `rows` rows as a
/// WIT batch; also returns the bytes it will send.
pub fn batch_in<'a>(
    schema: &'a Schema,
    reads: &[usize],
    prepared: &'a [ArrayRef],
    rows: usize,
) -> (BatchIn<'a>, u64) {
    let columns: Vec<ColumnIn<'a>> = reads
        .iter()
        .zip(prepared)
        .map(|(&i, a)| column_in(schema.field(i).name(), a))
        .collect();
    let bytes = columns.iter().map(column_in_bytes).sum();
    (
        BatchIn {
            rows: rows as u32,
            columns,
        },
        bytes,
    )
}

/// Bytes of a column's buffers as sent (for the boundary-traffic figures).
pub fn column_in_bytes(c: &ColumnIn<'_>) -> u64 {
    (c.values.byte_len() + c.validity.map_or(0, <[u8]>::len) + c.offsets.map_or(0, |o| o.len() * 4))
        as u64
}

/// `byte_len` for both directions' `values` (same cases, borrowed or owned lists).
macro_rules! values_byte_len {
    ($t:ident $(<$l:lifetime>)?) => {
        impl$(<$l>)? $t $(<$l>)? {
            /// Size of the values list in bytes.
            pub fn byte_len(&self) -> usize {
                match self {
                    $t::Bits(v) | $t::U8(v) | $t::Bytes(v) => v.len(),
                    $t::I8(v) => v.len(),
                    $t::I16(v) => v.len() * 2,
                    $t::U16(v) => v.len() * 2,
                    $t::I32(v) => v.len() * 4,
                    $t::U32(v) => v.len() * 4,
                    $t::F32(v) => v.len() * 4,
                    $t::I64(v) => v.len() * 8,
                    $t::U64(v) => v.len() * 8,
                    $t::F64(v) => v.len() * 8,
                }
            }
        }
    };
}
values_byte_len!(ValuesIn<'a>);
values_byte_len!(ValuesOut);

/// The contract's view of an Arrow schema.
pub fn wit_fields(schema: &Schema) -> Vec<WitField> {
    schema
        .fields()
        .iter()
        .filter_map(|f| {
            // Columns of other types are still passed through; the plugin just cannot read them.
            WitDataType::from_arrow(f.data_type()).map(|t| WitField {
                name: f.name().clone(),
                data_type: t,
                nullable: f.is_nullable(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Plans

/// A plan checked against an input schema.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Input column indexes the plugin reads, in the order it expects them.
    pub reads: Vec<usize>,
    /// The output schema.
    pub output: SchemaRef,
    /// Per output column: `None` if computed, or the input column index it passes through.
    pub sources: Vec<Option<usize>>,
}

impl Plan {
    /// Checks a plugin's plan against the input schema it was made for.
    pub fn check(plan: &WitPlan, input: &Schema) -> Result<Plan, AbiError> {
        let available = || {
            input
                .fields()
                .iter()
                .map(|f| untrusted::name(f.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let index = |role, name: &str| {
            input.index_of(name).map_err(|_| AbiError::UnknownColumn {
                role,
                column: untrusted::name(name),
                available: available(),
            })
        };
        let mut reads = Vec::with_capacity(plan.reads.len());
        for name in &plan.reads {
            let i = index("reads", name)?;
            if WitDataType::from_arrow(input.field(i).data_type()).is_none() {
                return Err(AbiError::UnsupportedType {
                    column: name.clone(),
                    data_type: input.field(i).data_type().clone(),
                });
            }
            reads.push(i);
        }
        let mut fields = Vec::with_capacity(plan.output.len());
        let mut sources = Vec::with_capacity(plan.output.len());
        for out in &plan.output {
            // A new name is the plugin's text; an input column's name is the data's.
            if input.index_of(&out.name).is_err() {
                check_name("output column", &out.name)?;
            }
            if fields.iter().any(|f: &Field| f.name() == &out.name) {
                return Err(invalid(format!(
                    "the plan names output column `{}` twice",
                    untrusted::name(&out.name)
                )));
            }
            match &out.source {
                OutputSource::Computed => {
                    if let WitDataType::Timestamp(WitTimestampType {
                        timezone: Some(tz), ..
                    }) = &out.data_type
                    {
                        check_time_zone(&out.name, tz)?;
                    }
                    fields.push(Field::new(
                        &out.name,
                        out.data_type.to_arrow(),
                        out.nullable,
                    ));
                    sources.push(None);
                }
                OutputSource::Passthrough(from) => {
                    let i = index("passes through", from)?;
                    // The input's own type is kept, whatever the plugin believes it is.
                    let f = input.field(i);
                    fields.push(Field::new(
                        &out.name,
                        f.data_type().clone(),
                        f.is_nullable(),
                    ));
                    sources.push(Some(i));
                }
            }
        }
        Ok(Plan {
            reads,
            output: Arc::new(Schema::new(fields)),
            sources,
        })
    }
}

/// Refuses a name a plugin gives to a new column if the host could not show or store it as
/// is: control characters, or longer than [`untrusted::NAME_BYTES`].
fn check_name(what: &str, name: &str) -> Result<(), AbiError> {
    if name.is_empty() || name.len() > untrusted::NAME_BYTES || !untrusted::is_clean(name) {
        return Err(invalid(format!(
            "the plan names an {what} `{}`: a name must be 1 to {} bytes without control characters",
            untrusted::name(name),
            untrusted::NAME_BYTES
        )));
    }
    Ok(())
}

/// Refuses a time zone that is neither an IANA name nor an offset in form (`Europe/Paris`,
/// `UTC`, `+01:00`): it is stored in every output file's schema.
fn check_time_zone(column: &str, tz: &str) -> Result<(), AbiError> {
    let plausible = !tz.is_empty()
        && tz.len() <= 64
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+' | ':'))
        && !tz.split('/').any(|part| part.is_empty() || part == "..");
    if !plausible {
        return Err(invalid(format!(
            "column `{column}` has the time zone `{}`, which is not a time zone name (like `Europe/Paris` or `UTC`) or offset (like `+01:00`)",
            untrusted::name(tz)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// WIT → Arrow, with validation

/// Caps on what one input batch may turn into.
#[derive(Debug, Clone, Copy)]
pub struct OutputCaps {
    /// Rows, summed over the output batches.
    pub rows: u64,
    /// Bytes of column data, summed over the output batches.
    pub bytes: u64,
}

/// Which cap an output exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapExceeded {
    /// Too many rows.
    Rows {
        /// Rows returned.
        got: u64,
        /// The cap.
        cap: u64,
    },
    /// Too many bytes.
    Bytes {
        /// Bytes returned.
        got: u64,
        /// The cap.
        cap: u64,
    },
}

/// Size in bytes of the lists of a returned column.
fn column_out_bytes(c: &ColumnOut) -> u64 {
    (c.values.byte_len()
        + c.validity.as_ref().map_or(0, Vec::len)
        + c.offsets.as_ref().map_or(0, |o| o.len() * 4)) as u64
}

/// Rows and bytes of a plugin's outputs, checked against the caps before any conversion.
pub fn check_caps(outputs: &[OutputBatch], caps: OutputCaps) -> Result<u64, CapExceeded> {
    let rows: u64 = outputs.iter().map(|o| o.rows as u64).sum();
    if rows > caps.rows {
        return Err(CapExceeded::Rows {
            got: rows,
            cap: caps.rows,
        });
    }
    let bytes: u64 = outputs
        .iter()
        .flat_map(|o| &o.columns)
        .map(column_out_bytes)
        .sum::<u64>()
        + outputs
            .iter()
            .map(|o| o.selection.as_ref().map_or(0, Vec::len) as u64)
            .sum::<u64>();
    if bytes > caps.bytes {
        return Err(CapExceeded::Bytes {
            got: bytes,
            cap: caps.bytes,
        });
    }
    Ok(bytes)
}

/// Layout name, length and Arrow buffer of returned values; the `Vec` becomes the buffer as is.
fn into_buffer(v: ValuesOut) -> (&'static str, usize, Buffer) {
    macro_rules! buf {
        ($x:expr, $name:literal) => {{
            let len = $x.len();
            ($name, len, Buffer::from_vec($x))
        }};
    }
    match v {
        ValuesOut::Bits(x) => buf!(x, "bits"),
        ValuesOut::I8(x) => buf!(x, "i8"),
        ValuesOut::I16(x) => buf!(x, "i16"),
        ValuesOut::I32(x) => buf!(x, "i32"),
        ValuesOut::I64(x) => buf!(x, "i64"),
        ValuesOut::U8(x) => buf!(x, "u8"),
        ValuesOut::U16(x) => buf!(x, "u16"),
        ValuesOut::U32(x) => buf!(x, "u32"),
        ValuesOut::U64(x) => buf!(x, "u64"),
        ValuesOut::F32(x) => buf!(x, "f32"),
        ValuesOut::F64(x) => buf!(x, "f64"),
        ValuesOut::Bytes(x) => buf!(x, "bytes"),
    }
}

/// The values layout the contract prescribes for a data type.
fn layout_of(t: &WitDataType) -> &'static str {
    match t {
        WitDataType::Boolean => "bits",
        WitDataType::Int8 => "i8",
        WitDataType::Int16 => "i16",
        WitDataType::Int32 | WitDataType::Date32 => "i32",
        WitDataType::Int64 | WitDataType::Timestamp(_) => "i64",
        WitDataType::Uint8 => "u8",
        WitDataType::Uint16 => "u16",
        WitDataType::Uint32 => "u32",
        WitDataType::Uint64 => "u64",
        WitDataType::Float32 => "f32",
        WitDataType::Float64 => "f64",
        WitDataType::Utf8 | WitDataType::Binary => "bytes",
    }
}

/// Turns one returned column into an Arrow array of `field`'s type with `rows` rows, checking
/// every invariant Arrow relies on (lengths, offsets, UTF-8, nullability).
pub fn column_out(col: ColumnOut, field: &Field, rows: usize) -> Result<ArrayRef, AbiError> {
    let name = &col.name;
    let declared = WitDataType::from_arrow(field.data_type()).expect("computed column type");
    if col.data_type != declared {
        return Err(invalid(format!(
            "column `{name}` was returned as {:?} but the plan declared {:?}",
            col.data_type, declared
        )));
    }
    let ColumnOut {
        validity,
        offsets,
        values,
        ..
    } = col;
    let (layout, len, values) = into_buffer(values);
    let want = layout_of(&declared);
    if layout != want {
        return Err(invalid(format!(
            "column `{name}` of type {declared:?} must carry {want} values, not {layout}"
        )));
    }
    let mut builder = ArrayData::builder(field.data_type().clone()).len(rows);
    match (&declared, offsets) {
        (WitDataType::Utf8 | WitDataType::Binary, Some(offsets)) => {
            if offsets.len() != rows + 1 {
                return Err(invalid(format!(
                    "column `{name}` has {} offsets for {rows} rows (need rows + 1)",
                    offsets.len()
                )));
            }
            builder = builder
                .add_buffer(Buffer::from_vec(offsets))
                .add_buffer(values);
        }
        (WitDataType::Utf8 | WitDataType::Binary, None) => {
            return Err(invalid(format!("column `{name}` has no offsets")))
        }
        (_, Some(_)) => {
            return Err(invalid(format!(
                "column `{name}` of type {declared:?} must not have offsets"
            )))
        }
        (WitDataType::Boolean, None) => {
            if len < rows.div_ceil(8) {
                return Err(invalid(format!(
                    "column `{name}` has {len} bytes of bits for {rows} rows"
                )));
            }
            builder = builder.add_buffer(values);
        }
        (_, None) => {
            if len != rows {
                return Err(invalid(format!(
                    "column `{name}` has {len} values but the batch has {rows} rows"
                )));
            }
            builder = builder.add_buffer(values);
        }
    }
    if let Some(v) = validity {
        if v.len() < rows.div_ceil(8) {
            return Err(invalid(format!(
                "column `{name}` has a validity bitmap of {} bytes for {rows} rows",
                v.len()
            )));
        }
        let nulls = NullBuffer::new(BooleanBuffer::new(Buffer::from_vec(v), 0, rows));
        if nulls.null_count() > 0 && !field.is_nullable() {
            return Err(invalid(format!(
                "column `{name}` has nulls but the plan declared it not nullable"
            )));
        }
        builder = builder.nulls(Some(nulls));
    }
    // `build` validates offsets (monotonic, in bounds) and UTF-8.
    let data = builder
        .build()
        .map_err(|e| invalid(format!("column `{name}`: {e}")))?;
    Ok(make_array(data))
}

/// Assembles the output batch of one `output-batch`: computed columns from the plugin,
/// passthrough columns from `input` (filtered by the selection, if any).
pub fn assemble(
    plan: &Plan,
    input: &RecordBatch,
    out: OutputBatch,
) -> Result<RecordBatch, AbiError> {
    let rows = out.rows as usize;
    let input_rows = input.num_rows();
    let predicate = match &out.selection {
        Some(bits) => {
            if bits.len() < input_rows.div_ceil(8) {
                return Err(invalid(format!(
                    "the selection has {} bytes for {input_rows} input rows",
                    bits.len()
                )));
            }
            let mask = BooleanArray::new(
                BooleanBuffer::new(Buffer::from_slice_ref(bits), 0, input_rows),
                None,
            );
            let selected = mask.true_count();
            if selected != rows {
                return Err(invalid(format!(
                    "the selection keeps {selected} rows but the output says {rows}"
                )));
            }
            Some(FilterBuilder::new(&mask).optimize().build())
        }
        None => None,
    };
    if predicate.is_none() && plan.sources.iter().any(Option::is_some) && rows != input_rows {
        return Err(invalid(format!(
            "the output has {rows} rows but passes columns through from an input of {input_rows} rows without a selection"
        )));
    }
    let mut computed: HashMap<String, ColumnOut> = HashMap::with_capacity(out.columns.len());
    for c in out.columns {
        if !plan
            .output
            .fields()
            .iter()
            .zip(&plan.sources)
            .any(|(f, s)| s.is_none() && f.name() == &c.name)
        {
            return Err(invalid(format!(
                "column `{}` was returned but the plan does not compute it",
                untrusted::name(&c.name)
            )));
        }
        if let Some(dup) = computed.insert(c.name.clone(), c) {
            return Err(invalid(format!("column `{}` was returned twice", dup.name)));
        }
    }
    let mut columns = Vec::with_capacity(plan.sources.len());
    for (field, source) in plan.output.fields().iter().zip(&plan.sources) {
        let array = match source {
            Some(i) => match &predicate {
                Some(p) => p.filter(input.column(*i))?,
                None => input.column(*i).clone(),
            },
            None => {
                let col = computed.remove(field.name()).ok_or_else(|| {
                    invalid(format!(
                        "the plan computes column `{}` but the plugin did not return it",
                        field.name()
                    ))
                })?;
                column_out(col, field, rows)?
            }
        };
        columns.push(array);
    }
    Ok(RecordBatch::try_new_with_options(
        plan.output.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}
