//! Structured inputs for fuzzing the validation of plugin output (`quiver::abi`), shared by the
//! cargo-fuzz target `plugin_output` and the property tests in `tests/e2e/properties.rs`.
//!
//! A [`Case`] is a small description — an input batch shape, a plugin plan and an
//! `output-batch` whose lengths, offsets, bitmaps, type tags and selection are given relative to
//! what would be valid — that [`build`] turns into real values deterministically. The fuzzer
//! derives `Case` with `arbitrary` (only under `cfg(fuzzing)`, which cargo-fuzz sets); the
//! property tests generate it with proptest strategies. [`run`] feeds it to `check_caps`,
//! `Plan::check`, `column_out` and `assemble`, and checks every success against a naive model:
//! valid Arrow data, the plan's schema and row count, passthrough columns equal to a naive
//! selection of the input, computed columns equal to what the plugin returned.

#![allow(unexpected_cfgs, dead_code)]

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    DictionaryArray, FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, Int8Array, LargeBinaryArray, LargeStringArray, ListArray, NullArray, RecordBatch,
    RecordBatchOptions, StringArray, StringViewArray, StructArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt16Array,
    UInt32Array, UInt64Array, UInt8Array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema};
use quiver::abi::{
    self, CapExceeded, ColumnOut, OutputBatch, OutputCaps, OutputField, OutputSource, ValuesOut,
    WitDataType, WitPlan, WitTimeUnit, WitTimestampType,
};

/// Longest list the builder generates, whatever the row count asks for (a plugin can claim
/// 4 billion rows; the lists it returns are what is bounded).
pub const MAX_GEN: usize = 2048;

/// Column names are mostly drawn from a small pool so that plans, inputs and outputs refer to
/// each other.
pub const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

/// A column name.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Name {
    /// `NAMES[i % 8]`.
    Pool(u8),
    /// Any text.
    Raw(String),
}

impl Name {
    /// The name as text.
    pub fn text(&self) -> String {
        match self {
            Name::Pool(i) => NAMES[*i as usize % NAMES.len()].to_string(),
            Name::Raw(s) => s.clone(),
        }
    }
}

/// `time-unit`.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    S,
    Ms,
    Us,
    Ns,
}

/// A timestamp's time zone.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Tz {
    None,
    Utc,
    Offset,
    Raw(String),
}

/// A contract (`data-type`) type.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    Boolean,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Utf8,
    Binary,
    Date32,
    Timestamp(Unit, Tz),
}

impl Ty {
    /// The WIT type.
    pub fn wit(&self) -> WitDataType {
        match self {
            Ty::Boolean => WitDataType::Boolean,
            Ty::Int8 => WitDataType::Int8,
            Ty::Int16 => WitDataType::Int16,
            Ty::Int32 => WitDataType::Int32,
            Ty::Int64 => WitDataType::Int64,
            Ty::UInt8 => WitDataType::Uint8,
            Ty::UInt16 => WitDataType::Uint16,
            Ty::UInt32 => WitDataType::Uint32,
            Ty::UInt64 => WitDataType::Uint64,
            Ty::Float32 => WitDataType::Float32,
            Ty::Float64 => WitDataType::Float64,
            Ty::Utf8 => WitDataType::Utf8,
            Ty::Binary => WitDataType::Binary,
            Ty::Date32 => WitDataType::Date32,
            Ty::Timestamp(unit, tz) => WitDataType::Timestamp(WitTimestampType {
                unit: match unit {
                    Unit::S => WitTimeUnit::Second,
                    Unit::Ms => WitTimeUnit::Millisecond,
                    Unit::Us => WitTimeUnit::Microsecond,
                    Unit::Ns => WitTimeUnit::Nanosecond,
                },
                timezone: match tz {
                    Tz::None => None,
                    Tz::Utc => Some("UTC".into()),
                    Tz::Offset => Some("+05:30".into()),
                    Tz::Raw(s) => Some(s.clone()),
                },
            }),
        }
    }

    /// The values layout the contract prescribes (independent of `abi`'s own table).
    pub fn layout(&self) -> Layout {
        match self {
            Ty::Boolean => Layout::Bits,
            Ty::Int8 => Layout::I8,
            Ty::Int16 => Layout::I16,
            Ty::Int32 | Ty::Date32 => Layout::I32,
            Ty::Int64 | Ty::Timestamp(..) => Layout::I64,
            Ty::UInt8 => Layout::U8,
            Ty::UInt16 => Layout::U16,
            Ty::UInt32 => Layout::U32,
            Ty::UInt64 => Layout::U64,
            Ty::Float32 => Layout::F32,
            Ty::Float64 => Layout::F64,
            Ty::Utf8 | Ty::Binary => Layout::Bytes,
        }
    }

    /// Whether the type has offsets.
    pub fn var_width(&self) -> bool {
        matches!(self, Ty::Utf8 | Ty::Binary)
    }
}

/// A `values` case.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    Bits,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    Bytes,
}

/// The type of an input column: a contract type, or one plugins cannot read but may pass
/// through (or read after a cast, for the large/view/dictionary string types).
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum InputType {
    Wit(Ty),
    LargeUtf8,
    Utf8View,
    LargeBinary,
    Dictionary,
    List,
    Struct,
    Decimal128,
    FixedSizeBinary,
    Null,
}

impl InputType {
    /// Whether `Plan::check` should accept a plan that reads a column of this type.
    pub fn readable(&self) -> bool {
        matches!(
            self,
            InputType::Wit(_)
                | InputType::LargeUtf8
                | InputType::Utf8View
                | InputType::LargeBinary
                | InputType::Dictionary
        )
    }
}

/// One input column.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct InputColumn {
    pub name: Name,
    pub ty: InputType,
    pub nullable: bool,
    /// Seeds the values and the nulls.
    pub seed: u64,
}

/// The input batch.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct InputDesc {
    pub rows: u8,
    /// Every column is a slice starting at `offset % 9` of a longer array.
    pub offset: u8,
    pub columns: Vec<InputColumn>,
}

/// One field of the plan's output.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDesc {
    pub name: Name,
    pub ty: Ty,
    pub nullable: bool,
    /// `Some(input column)`: a passthrough; `None`: computed.
    pub from: Option<Name>,
}

/// The plugin's plan.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct PlanDesc {
    pub reads: Vec<Name>,
    pub output: Vec<FieldDesc>,
}

/// A length relative to the valid one.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Len {
    Exact,
    More(u8),
    Fewer(u8),
}

impl Len {
    /// `natural` adjusted, capped at [`MAX_GEN`].
    pub fn apply(self, natural: usize) -> usize {
        match self {
            Len::Exact => natural,
            Len::More(k) => natural + k as usize,
            Len::Fewer(k) => natural.saturating_sub(k as usize),
        }
        .min(MAX_GEN)
    }
}

/// A bitmap (validity or selection): `len` bytes relative to the valid size, filled with
/// `pattern` repeated (all ones when it is empty).
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct Bitmap {
    pub len: Len,
    pub pattern: Vec<u8>,
}

impl Bitmap {
    /// The bytes for `bits` bits.
    pub fn bytes(&self, bits: usize) -> Vec<u8> {
        let n = self.len.apply(bits.div_ceil(8));
        if self.pattern.is_empty() {
            vec![0xff; n]
        } else {
            self.pattern.iter().copied().cycle().take(n).collect()
        }
    }
}

/// The offsets of a returned column.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Offsets {
    /// Valid offsets if the returned type has them, none otherwise.
    Auto,
    Absent,
    /// Valid offsets, then `offsets[at % len] = value`.
    Corrupt {
        at: u16,
        value: i32,
    },
    /// Valid offsets, truncated or extended (repeating the last one).
    Count(Len),
    Raw(Vec<i32>),
}

/// What the strings of a variable-width column are made of.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Text {
    Ascii,
    /// Multi-byte characters, so corrupted offsets can split one.
    Unicode,
    /// Random bytes, mostly not UTF-8.
    Bytes,
}

/// Which column a returned column claims to be.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The name (and believed type) of the plan's output field `i % len`.
    Planned(u8),
    Named(Name),
}

/// One returned column.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDesc {
    pub target: Target,
    /// The type tag returned; `None`: the planned type.
    pub ty: Option<Ty>,
    /// The values case returned; `None`: the one the returned type prescribes.
    pub layout: Option<Layout>,
    /// Number of values (bytes for `bits` and `bytes`) relative to the valid number.
    pub len: Len,
    pub validity: Option<Bitmap>,
    pub offsets: Offsets,
    pub text: Text,
    pub seed: u64,
}

impl ColumnDesc {
    /// A valid column for the plan's output field `i`.
    pub fn valid(i: u8, nullable: bool, seed: u64) -> ColumnDesc {
        ColumnDesc {
            target: Target::Planned(i),
            ty: None,
            layout: None,
            len: Len::Exact,
            validity: (nullable && !seed.is_multiple_of(3)).then(|| Bitmap {
                len: Len::Exact,
                pattern: seed.to_le_bytes().to_vec(),
            }),
            offsets: Offsets::Auto,
            text: if seed.is_multiple_of(2) {
                Text::Ascii
            } else {
                Text::Unicode
            },
            seed,
        }
    }
}

/// The `rows` an output batch claims.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rows {
    Input,
    /// The rows the selection keeps (the input's rows without a selection).
    Selected,
    /// `Selected` plus or minus a little.
    Delta(i8),
    Value(u32),
}

/// A cap for `check_caps`, relative to what the output needs.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cap {
    Huge,
    Exact,
    Under,
    Value(u16),
}

impl Cap {
    fn value(self, need: u64) -> u64 {
        match self {
            Cap::Huge => u64::MAX,
            Cap::Exact => need,
            Cap::Under => need.saturating_sub(1),
            Cap::Value(v) => v as u64,
        }
    }
}

/// The `output-batch`.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDesc {
    pub rows: Rows,
    pub selection: Option<Bitmap>,
    pub columns: Vec<ColumnDesc>,
    /// Also return a valid column for every computed field no entry of `columns` targets.
    pub fill: bool,
}

/// Everything one run needs.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub input: InputDesc,
    pub plan: PlanDesc,
    pub output: OutputDesc,
    /// Caps on rows and bytes.
    pub caps: (Cap, Cap),
}

// ---------------------------------------------------------------------------------------------
// Building

/// splitmix64: the values of every generated list come from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Bit `i` of an LSB-first bitmap.
pub fn bit(bytes: &[u8], i: usize) -> bool {
    bytes[i / 8] & (1 << (i % 8)) != 0
}

fn text_piece(rng: &mut Rng, text: Text, out: &mut Vec<u8>) {
    const CHARS: [&str; 5] = ["a", "Z", "é", "€", "😀"];
    for _ in 0..rng.below(5) {
        match text {
            Text::Ascii => out.push(b'a' + rng.below(26) as u8),
            Text::Unicode => out.extend_from_slice(CHARS[rng.below(5) as usize].as_bytes()),
            Text::Bytes => out.push(rng.next() as u8),
        }
    }
}

fn input_array(c: &InputColumn, len: usize) -> (DataType, bool, ArrayRef) {
    let mut rng = Rng::new(c.seed);
    let density = rng.below(4);
    let nullable = c.nullable || c.ty == InputType::Null;
    let valid: Vec<bool> = (0..len)
        .map(|_| !nullable || rng.below(4) >= density)
        .collect();
    macro_rules! opts {
        ($gen:expr) => {
            valid
                .iter()
                .map(|&v| {
                    let x = $gen(&mut rng);
                    v.then_some(x)
                })
                .collect::<Vec<_>>()
        };
    }
    macro_rules! prim {
        ($arr:ty, $t:ty) => {
            Arc::new(<$arr>::from(opts!(|r: &mut Rng| r.next() as $t))) as ArrayRef
        };
    }
    let words = |r: &mut Rng| {
        let mut s = Vec::new();
        for _ in 0..r.below(4) {
            text_piece(r, Text::Unicode, &mut s);
        }
        String::from_utf8(s).unwrap()
    };
    let array: ArrayRef = match &c.ty {
        InputType::Wit(ty) => match ty {
            Ty::Boolean => Arc::new(BooleanArray::from(opts!(|r: &mut Rng| r
                .next()
                .is_multiple_of(2)))),
            Ty::Int8 => prim!(Int8Array, i8),
            Ty::Int16 => prim!(Int16Array, i16),
            Ty::Int32 => prim!(Int32Array, i32),
            Ty::Int64 => prim!(Int64Array, i64),
            Ty::UInt8 => prim!(UInt8Array, u8),
            Ty::UInt16 => prim!(UInt16Array, u16),
            Ty::UInt32 => prim!(UInt32Array, u32),
            Ty::UInt64 => prim!(UInt64Array, u64),
            Ty::Float32 => Arc::new(Float32Array::from(opts!(|r: &mut Rng| (r.below(2000)
                as f32)
                / 8.0
                - 100.0))),
            Ty::Float64 => Arc::new(Float64Array::from(opts!(|r: &mut Rng| (r.below(2000)
                as f64)
                / 8.0
                - 100.0))),
            Ty::Date32 => prim!(Date32Array, i32),
            Ty::Utf8 => Arc::new(StringArray::from(opts!(words))),
            Ty::Binary => {
                let v = opts!(|r: &mut Rng| r.next().to_le_bytes()[..r.below(9) as usize].to_vec());
                Arc::new(BinaryArray::from_iter(v))
            }
            Ty::Timestamp(..) => {
                let DataType::Timestamp(unit, tz) = ty.wit().to_arrow() else {
                    unreachable!()
                };
                let v = opts!(|r: &mut Rng| r.next() as i64);
                match unit {
                    arrow::datatypes::TimeUnit::Second => {
                        Arc::new(TimestampSecondArray::from(v).with_timezone_opt(tz))
                    }
                    arrow::datatypes::TimeUnit::Millisecond => {
                        Arc::new(TimestampMillisecondArray::from(v).with_timezone_opt(tz))
                    }
                    arrow::datatypes::TimeUnit::Microsecond => {
                        Arc::new(TimestampMicrosecondArray::from(v).with_timezone_opt(tz))
                    }
                    arrow::datatypes::TimeUnit::Nanosecond => {
                        Arc::new(TimestampNanosecondArray::from(v).with_timezone_opt(tz))
                    }
                }
            }
        },
        InputType::LargeUtf8 => Arc::new(LargeStringArray::from(opts!(words))),
        InputType::Utf8View => Arc::new(StringViewArray::from_iter(opts!(|r: &mut Rng| {
            // Some longer than 12 bytes, so not inlined in the view.
            let mut s = words(r);
            if r.below(2) == 0 {
                s.push_str("-a-longer-string");
            }
            s
        }))),
        InputType::LargeBinary => Arc::new(LargeBinaryArray::from_iter(opts!(|r: &mut Rng| r
            .next()
            .to_le_bytes()[..r.below(9) as usize]
            .to_vec()))),
        InputType::Dictionary => {
            let v = opts!(|r: &mut Rng| ["x", "yy", "zzz"][r.below(3) as usize]);
            Arc::new(v.into_iter().collect::<DictionaryArray<Int32Type>>())
        }
        InputType::List => {
            let v = opts!(|r: &mut Rng| (0..r.below(4))
                .map(|_| (r.below(5) != 0).then_some(r.next() as i32))
                .collect::<Vec<_>>());
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(v))
        }
        InputType::Struct => {
            let child = Int32Array::from(opts!(|r: &mut Rng| r.next() as i32));
            let nulls = nullable.then(|| NullBuffer::from(valid.clone()));
            Arc::new(
                StructArray::try_new(
                    Fields::from(vec![Field::new("x", DataType::Int32, true)]),
                    vec![Arc::new(child)],
                    nulls,
                )
                .unwrap(),
            )
        }
        InputType::Decimal128 => Arc::new(
            Decimal128Array::from(opts!(|r: &mut Rng| (r.next() % 10_000_000_000) as i128))
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        InputType::FixedSizeBinary => Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                opts!(|r: &mut Rng| r.next().to_le_bytes()[..3].to_vec()).into_iter(),
                3,
            )
            .unwrap(),
        ),
        InputType::Null => Arc::new(NullArray::new(len)),
    };
    (array.data_type().clone(), nullable, array)
}

/// The input batch.
pub fn build_input(d: &InputDesc) -> RecordBatch {
    let rows = d.rows as usize;
    let offset = d.offset as usize % 9;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for c in &d.columns {
        let (t, nullable, array) = input_array(c, rows + offset);
        fields.push(Field::new(c.name.text(), t, nullable));
        columns.push(array.slice(offset, rows));
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .expect("generated input batch")
}

/// The plan.
pub fn build_plan(d: &PlanDesc) -> WitPlan {
    WitPlan {
        reads: d.reads.iter().map(Name::text).collect(),
        output: d
            .output
            .iter()
            .map(|f| OutputField {
                name: f.name.text(),
                data_type: f.ty.wit(),
                nullable: f.nullable,
                source: match &f.from {
                    None => OutputSource::Computed,
                    Some(n) => OutputSource::Passthrough(n.text()),
                },
            })
            .collect(),
    }
}

/// One returned column, for `rows` rows; `planned` is the type the plan declares for it.
pub fn build_column(c: &ColumnDesc, name: String, planned: &Ty, rows: usize) -> ColumnOut {
    let mut rng = Rng::new(c.seed);
    let ty = c.ty.clone().unwrap_or_else(|| planned.clone());
    let layout = c.layout.unwrap_or_else(|| ty.layout());
    // Valid offsets and bytes for `rows` strings (at most MAX_GEN of them).
    let mut bytes = Vec::new();
    let mut offsets = vec![0i32];
    for _ in 0..rows.min(MAX_GEN) {
        text_piece(&mut rng, c.text, &mut bytes);
        offsets.push(bytes.len() as i32);
    }
    let values = match layout {
        Layout::Bits => ValuesOut::Bits(
            (0..c.len.apply(rows.div_ceil(8)))
                .map(|_| rng.next() as u8)
                .collect(),
        ),
        Layout::Bytes => {
            let n = c.len.apply(bytes.len());
            bytes.resize_with(n, || rng.next() as u8);
            ValuesOut::Bytes(bytes)
        }
        fixed => {
            let n = c.len.apply(rows);
            let v = (0..n).map(|_| rng.next()).collect::<Vec<u64>>().into_iter();
            macro_rules! ints {
                ($case:ident, $t:ty) => {
                    ValuesOut::$case(v.map(|x| x as $t).collect())
                };
            }
            match fixed {
                Layout::I8 => ints!(I8, i8),
                Layout::I16 => ints!(I16, i16),
                Layout::I32 => ints!(I32, i32),
                Layout::I64 => ints!(I64, i64),
                Layout::U8 => ints!(U8, u8),
                Layout::U16 => ints!(U16, u16),
                Layout::U32 => ints!(U32, u32),
                Layout::U64 => ints!(U64, u64),
                // Any bit pattern, NaNs included: the oracle compares bytes.
                Layout::F32 => ValuesOut::F32(v.map(|x| f32::from_bits(x as u32)).collect()),
                Layout::F64 => ValuesOut::F64(v.map(f64::from_bits).collect()),
                Layout::Bits | Layout::Bytes => unreachable!(),
            }
        }
    };
    let offsets = match &c.offsets {
        Offsets::Auto => ty.var_width().then_some(offsets),
        Offsets::Absent => None,
        Offsets::Corrupt { at, value } => {
            let i = *at as usize % offsets.len();
            offsets[i] = *value;
            Some(offsets)
        }
        Offsets::Count(len) => {
            let last = *offsets.last().unwrap();
            offsets.resize(len.apply(offsets.len()), last);
            Some(offsets)
        }
        Offsets::Raw(v) => Some(v.iter().copied().take(MAX_GEN).collect()),
    };
    ColumnOut {
        name,
        data_type: ty.wit(),
        validity: c.validity.as_ref().map(|b| b.bytes(rows)),
        offsets,
        values,
    }
}

/// A copy of a returned column (the ABI types are not `Clone`: they are moved into Arrow).
pub fn clone_column(c: &ColumnOut) -> ColumnOut {
    ColumnOut {
        name: c.name.clone(),
        data_type: c.data_type.clone(),
        validity: c.validity.clone(),
        offsets: c.offsets.clone(),
        values: match &c.values {
            ValuesOut::Bits(v) => ValuesOut::Bits(v.clone()),
            ValuesOut::I8(v) => ValuesOut::I8(v.clone()),
            ValuesOut::I16(v) => ValuesOut::I16(v.clone()),
            ValuesOut::I32(v) => ValuesOut::I32(v.clone()),
            ValuesOut::I64(v) => ValuesOut::I64(v.clone()),
            ValuesOut::U8(v) => ValuesOut::U8(v.clone()),
            ValuesOut::U16(v) => ValuesOut::U16(v.clone()),
            ValuesOut::U32(v) => ValuesOut::U32(v.clone()),
            ValuesOut::U64(v) => ValuesOut::U64(v.clone()),
            ValuesOut::F32(v) => ValuesOut::F32(v.clone()),
            ValuesOut::F64(v) => ValuesOut::F64(v.clone()),
            ValuesOut::Bytes(v) => ValuesOut::Bytes(v.clone()),
        },
    }
}

/// A copy of an output batch.
pub fn clone_output(o: &OutputBatch) -> OutputBatch {
    OutputBatch {
        rows: o.rows,
        columns: o.columns.iter().map(clone_column).collect(),
        selection: o.selection.clone(),
    }
}

/// A case turned into values.
pub struct Built {
    pub input: RecordBatch,
    pub plan: WitPlan,
    pub output: OutputBatch,
    /// Per returned column: the type the plan declares for its target.
    pub planned: Vec<(Ty, bool)>,
    /// Rows the selection keeps (the input's rows without one).
    pub selected: usize,
}

/// Builds a case.
pub fn build(case: &Case) -> Built {
    let input = build_input(&case.input);
    let plan = build_plan(&case.plan);
    let input_rows = input.num_rows();
    let selection = case.output.selection.as_ref().map(|b| b.bytes(input_rows));
    let selected = match &selection {
        Some(s) => (0..input_rows)
            .filter(|&i| i / 8 < s.len() && bit(s, i))
            .count(),
        None => input_rows,
    };
    let rows = match case.output.rows {
        Rows::Input => input_rows as u32,
        Rows::Selected => selected as u32,
        Rows::Delta(d) => (selected as i64 + d as i64).max(0) as u32,
        Rows::Value(v) => v,
    };
    let fields = &case.plan.output;
    let target = |t: &Target| -> (String, Ty, bool) {
        match t {
            Target::Planned(i) if !fields.is_empty() => {
                let f = &fields[*i as usize % fields.len()];
                (f.name.text(), f.ty.clone(), f.nullable)
            }
            Target::Planned(_) => ("a".into(), Ty::Int32, true),
            Target::Named(n) => {
                let name = n.text();
                match fields.iter().find(|f| f.name.text() == name) {
                    Some(f) => (name, f.ty.clone(), f.nullable),
                    None => (name, Ty::Int32, true),
                }
            }
        }
    };
    let mut columns = Vec::new();
    let mut planned = Vec::new();
    let mut named = Vec::new();
    for c in &case.output.columns {
        let (name, ty, nullable) = target(&c.target);
        columns.push(build_column(c, name.clone(), &ty, rows as usize));
        planned.push((ty, nullable));
        named.push(name);
    }
    if case.output.fill {
        for (i, f) in fields.iter().enumerate() {
            let name = f.name.text();
            if f.from.is_none() && !named.contains(&name) {
                let seed = case.input.rows as u64 * 31 + i as u64;
                let c = ColumnDesc::valid(i as u8, f.nullable, seed);
                columns.push(build_column(&c, name.clone(), &f.ty, rows as usize));
                planned.push((f.ty.clone(), f.nullable));
                named.push(name);
            }
        }
    }
    Built {
        input,
        plan,
        output: OutputBatch {
            rows,
            columns,
            selection,
        },
        planned,
        selected,
    }
}

// ---------------------------------------------------------------------------------------------
// Running and checking

/// Bytes `check_caps` should count, by the contract's definition.
fn output_bytes(o: &OutputBatch) -> u64 {
    let values = |v: &ValuesOut| match v {
        ValuesOut::Bits(x) | ValuesOut::U8(x) | ValuesOut::Bytes(x) => x.len(),
        ValuesOut::I8(x) => x.len(),
        ValuesOut::I16(x) => x.len() * 2,
        ValuesOut::U16(x) => x.len() * 2,
        ValuesOut::I32(x) => x.len() * 4,
        ValuesOut::U32(x) => x.len() * 4,
        ValuesOut::F32(x) => x.len() * 4,
        ValuesOut::I64(x) => x.len() * 8,
        ValuesOut::U64(x) => x.len() * 8,
        ValuesOut::F64(x) => x.len() * 8,
    };
    let columns: usize = o
        .columns
        .iter()
        .map(|c| {
            values(&c.values)
                + c.validity.as_ref().map_or(0, Vec::len)
                + c.offsets.as_ref().map_or(0, |x| x.len() * 4)
        })
        .sum();
    (columns + o.selection.as_ref().map_or(0, Vec::len)) as u64
}

/// The rule for a name a plugin gives to a new column, restated as the model: 1 to 256 bytes,
/// no control character and no direction mark or override.
fn new_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.chars().any(|c| {
            c.is_control()
                || matches!(c as u32, 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069)
        })
}

/// The rule for a computed timestamp column's time zone, restated as the model: none, or 1 to
/// 64 characters of letters, digits and `/ _ - + :` with no empty or `..` part.
fn time_zone_ok(ty: &Ty) -> bool {
    let Ty::Timestamp(_, tz) = ty else {
        return true;
    };
    let text = match tz {
        Tz::None => return true,
        Tz::Utc => "UTC".to_string(),
        Tz::Offset => "+05:30".to_string(),
        Tz::Raw(s) => s.clone(),
    };
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+:".contains(c))
        && text.split('/').all(|part| !part.is_empty() && part != "..")
}

/// Row `r` of a returned column as bytes (`None`: null), read naively from the lists.
fn expected_row(c: &ColumnOut, r: usize) -> Option<Vec<u8>> {
    if let Some(v) = &c.validity {
        if !bit(v, r) {
            return None;
        }
    }
    macro_rules! fixed {
        ($v:expr) => {
            $v.get(r)
                .expect("accepted a column with too few values")
                .to_le_bytes()
                .to_vec()
        };
    }
    Some(match &c.values {
        ValuesOut::Bits(v) => vec![bit(v, r) as u8],
        ValuesOut::I8(v) => fixed!(v),
        ValuesOut::I16(v) => fixed!(v),
        ValuesOut::I32(v) => fixed!(v),
        ValuesOut::I64(v) => fixed!(v),
        ValuesOut::U8(v) => fixed!(v),
        ValuesOut::U16(v) => fixed!(v),
        ValuesOut::U32(v) => fixed!(v),
        ValuesOut::U64(v) => fixed!(v),
        ValuesOut::F32(v) => fixed!(v),
        ValuesOut::F64(v) => fixed!(v),
        ValuesOut::Bytes(v) => {
            let o = c
                .offsets
                .as_ref()
                .expect("accepted strings without offsets");
            let (a, b) = (o[r] as usize, o[r + 1] as usize);
            v.get(a..b)
                .expect("accepted offsets out of bounds")
                .to_vec()
        }
    })
}

/// Row `r` of a (contract-typed) Arrow array as bytes (`None`: null).
fn actual_row(a: &dyn Array, r: usize) -> Option<Vec<u8>> {
    if a.is_null(r) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Boolean => vec![a.as_boolean().value(r) as u8],
        DataType::Utf8 => a.as_string::<i32>().value(r).as_bytes().to_vec(),
        DataType::Binary => a.as_binary::<i32>().value(r).to_vec(),
        t => {
            let w = t.primitive_width().expect("fixed-width type");
            let d = a.to_data();
            d.buffers()[0].as_slice()[(d.offset() + r) * w..][..w].to_vec()
        }
    })
}

/// Checks an array `column_out` accepted: valid, of the field's type, `rows` long, holding
/// exactly the returned values and nulls.
pub fn check_column(array: &dyn Array, field: &Field, rows: usize, returned: &ColumnOut) {
    let name = field.name();
    if let Err(e) = array.to_data().validate_full() {
        panic!("column `{name}` is not valid Arrow: {e}");
    }
    assert_eq!(array.data_type(), field.data_type(), "column `{name}`");
    assert_eq!(array.len(), rows, "column `{name}`");
    if !field.is_nullable() {
        assert_eq!(array.null_count(), 0, "nulls in non-nullable `{name}`");
    }
    for r in 0..rows {
        assert_eq!(
            actual_row(array, r),
            expected_row(returned, r),
            "column `{name}` row {r}"
        );
    }
}

/// Runs a case through `check_caps`, `Plan::check`, `column_out` and `assemble`, checking
/// every success against the naive model (panics on a violation). Returns what `assemble`
/// returned (or `Plan::check`'s error).
pub fn run(case: &Case) -> Result<RecordBatch, abi::AbiError> {
    let b = build(case);
    let out = &b.output;

    // check_caps against the contract's definition.
    let bytes = output_bytes(out);
    let caps = OutputCaps {
        rows: case.caps.0.value(out.rows as u64),
        bytes: case.caps.1.value(bytes),
    };
    let expected = if out.rows as u64 > caps.rows {
        Err(CapExceeded::Rows {
            got: out.rows as u64,
            cap: caps.rows,
        })
    } else if bytes > caps.bytes {
        Err(CapExceeded::Bytes {
            got: bytes,
            cap: caps.bytes,
        })
    } else {
        Ok(bytes)
    };
    assert_eq!(
        abi::check_caps(std::slice::from_ref(out), caps),
        expected,
        "check_caps"
    );

    // Every returned column on its own, against the type the plan declares for it.
    let rows = out.rows as usize;
    for (c, (ty, nullable)) in out.columns.iter().zip(&b.planned) {
        let field = Field::new(&c.name, ty.wit().to_arrow(), *nullable);
        if let Ok(array) = abi::column_out(clone_column(c), &field, rows) {
            check_column(&array, &field, rows, c);
        }
    }

    // Plan::check accepts exactly the plans a naive check accepts.
    let schema = b.input.schema();
    let input_index = |name: &str| schema.fields().iter().position(|f| f.name() == name);
    let names: Vec<String> = case.plan.output.iter().map(|f| f.name.text()).collect();
    let naive_ok = case
        .plan
        .reads
        .iter()
        .all(|n| input_index(&n.text()).is_some_and(|i| case.input.columns[i].ty.readable()))
        && names
            .iter()
            .enumerate()
            .all(|(i, n)| !names[..i].contains(n))
        && case.plan.output.iter().all(|f| {
            f.from
                .as_ref()
                .is_none_or(|n| input_index(&n.text()).is_some())
        })
        && case.plan.output.iter().all(|f| {
            let name = f.name.text();
            (input_index(&name).is_some() || new_name_ok(&name))
                && (f.from.is_some() || time_zone_ok(&f.ty))
        });
    let plan = abi::Plan::check(&b.plan, &schema);
    assert_eq!(plan.is_ok(), naive_ok, "Plan::check: {plan:?}");
    let plan = plan?;
    for (i, f) in case.plan.output.iter().enumerate() {
        let field = plan.output.field(i);
        assert_eq!(field.name(), &names[i]);
        match &f.from {
            None => {
                assert_eq!(field.data_type(), &f.ty.wit().to_arrow());
                assert_eq!(field.is_nullable(), f.nullable);
            }
            Some(n) => {
                let source = schema.field(input_index(&n.text()).unwrap());
                assert_eq!(field.data_type(), source.data_type());
                assert_eq!(field.is_nullable(), source.is_nullable());
            }
        }
    }

    let batch = abi::assemble(&plan, &b.input, clone_output(out))?;

    // The batch: the plan's schema and row count, valid columns.
    assert_eq!(batch.schema(), plan.output, "schema");
    assert_eq!(batch.num_rows(), rows, "rows");
    // Naive selection: the input rows whose bit is set.
    let kept: Vec<usize> = match &out.selection {
        Some(s) => (0..b.input.num_rows()).filter(|&i| bit(s, i)).collect(),
        None => (0..b.input.num_rows()).collect(),
    };
    for (i, f) in case.plan.output.iter().enumerate() {
        let array = batch.column(i);
        let field = plan.output.field(i);
        match &f.from {
            Some(n) => {
                if let Err(e) = array.to_data().validate_full() {
                    panic!("passthrough `{}` is not valid Arrow: {e}", field.name());
                }
                assert_eq!(array.data_type(), field.data_type());
                assert_eq!(kept.len(), rows, "accepted rows != selected rows");
                let source = b.input.column(input_index(&n.text()).unwrap());
                for (k, &j) in kept.iter().enumerate() {
                    assert_eq!(
                        array.slice(k, 1).to_data(),
                        source.slice(j, 1).to_data(),
                        "passthrough `{}` row {k} (input row {j})",
                        field.name()
                    );
                }
            }
            None => {
                let mut returned = out.columns.iter().filter(|c| &c.name == field.name());
                let c = returned.next().expect("accepted a missing computed column");
                assert!(returned.next().is_none(), "accepted a duplicate column");
                check_column(array, field, rows, c);
            }
        }
    }
    Ok(batch)
}
