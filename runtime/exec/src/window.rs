//! Event-time window aggregation over a stream of Arrow record batches.
//!
//! A [`WindowOperator`] groups rows by key columns and by event-time windows
//! (tumbling, hopping or session, see [`WindowKind`]), keeps partial
//! aggregates for every open window, and emits a window once the watermark has
//! passed its end. It is pure logic: no I/O and no clocks, so every rule can be
//! tested exhaustively.
//!
//! The rules are chosen so that the output does not depend on how the stream is
//! cut into batches, because batches are cut differently after a restart:
//!
//! - The watermark moves per row, in arrival order: before row `r` it is the
//!   largest event time of all earlier non-late rows minus
//!   `watermark_delay_ms`. A row whose time is below that watermark is *late*:
//!   it changes nothing and is handed back to the caller unchanged.
//! - After each batch every window whose end is at or below the watermark
//!   fires. A non-late row has `t >= watermark`, and every window containing
//!   `t` ends after `t`, so no row can ever belong to an already fired window.
//! - Session windows merge when they overlap or touch, so a session `[s, e)`
//!   can still be extended by a row at exactly `t == e`. A session therefore
//!   fires only once its end is strictly below the watermark; otherwise the
//!   same input could produce one session or two depending on the batch cut.
//! - Rows of one push or flush are sorted by `(window_end, window_start, key)`
//!   with keys compared in the row format's byte order, so output is
//!   deterministic.
//! - A snapshot stores every open window with its partial aggregates (floats as
//!   raw bits, so a restore is exact) and the largest event time seen. Keys are
//!   stored as an Arrow IPC stream, whose format is stable across Arrow
//!   releases, unlike the row format's bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, RowParser, Rows, SortField};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Name of the output column holding each window's inclusive start.
pub const WINDOW_START: &str = "window_start";
/// Name of the output column holding each window's exclusive end.
pub const WINDOW_END: &str = "window_end";

/// Most windows a single row may belong to with hopping windows
/// (`size-ms / slide-ms`); more would make every row cost that many updates.
pub const MAX_WINDOWS_PER_ROW: i64 = 10_000;

/// Identifies snapshot bytes written by [`WindowOperator::snapshot`].
const SNAPSHOT_FORMAT: &str = "quiver-window-state";
/// Version of the snapshot layout; bump it when the layout changes.
const SNAPSHOT_VERSION: u32 = 1;

/// How event times are grouped into windows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows `[k*size, (k+1)*size)`.
    #[serde(rename_all = "kebab-case")]
    Tumbling {
        /// Window length in milliseconds.
        size_ms: i64,
    },
    /// Overlapping windows of length `size` starting at every multiple of `slide`.
    #[serde(rename_all = "kebab-case")]
    Hopping {
        /// Window length in milliseconds.
        size_ms: i64,
        /// Distance between consecutive window starts in milliseconds.
        slide_ms: i64,
    },
    /// Per-key sessions: a row opens `[t, t+gap)`; overlapping or touching
    /// sessions merge.
    #[serde(rename_all = "kebab-case")]
    Session {
        /// Inactivity gap in milliseconds that closes a session.
        gap_ms: i64,
    },
}

/// Aggregate function applied to each window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AggFunc {
    /// Number of rows, or of non-null values when a column is given.
    Count,
    /// Sum of the non-null values, as Float64.
    Sum,
    /// Smallest non-null value, as Float64.
    Min,
    /// Largest non-null value, as Float64.
    Max,
    /// Arithmetic mean of the non-null values, as Float64.
    Mean,
}

impl AggFunc {
    /// The lowercase name used in configuration and default column names.
    pub fn as_str(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Mean => "mean",
        }
    }
}

impl fmt::Display for AggFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One output aggregate: a function over an input column (or over rows).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Aggregate {
    /// The function to apply.
    pub func: AggFunc,
    /// Input column; `None` is only valid for `count`, which then counts rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Output column name; defaults to `count` for a row count, else
    /// `{func}_{column}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Aggregate {
    /// A row count named `count`.
    pub fn count() -> Self {
        Aggregate {
            func: AggFunc::Count,
            column: None,
            name: None,
        }
    }

    /// `func` over `column`, with the default output name.
    pub fn of(func: AggFunc, column: impl Into<String>) -> Self {
        Aggregate {
            func,
            column: Some(column.into()),
            name: None,
        }
    }

    /// The output column name: `name` if set, else the default.
    pub fn output_name(&self) -> String {
        match (&self.name, &self.column) {
            (Some(name), _) => name.clone(),
            (None, None) => self.func.as_str().to_string(),
            (None, Some(column)) => format!("{}_{}", self.func, column),
        }
    }
}

/// Configuration of a window aggregation.
///
/// Serialized in kebab-case with the [`WindowKind`] fields flattened into the
/// same table, e.g. `kind = "hopping"`, `size-ms = 60000`, `slide-ms = 10000`,
/// `time-column = "ts"`, `keys = ["user"]`,
/// `aggregates = [{ func = "sum", column = "amount" }]`,
/// `watermark-delay-ms = 5000`. Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// Window shape.
    pub kind: WindowKind,
    /// Event-time column: a Timestamp of any unit, or Int64 milliseconds.
    pub time_column: String,
    /// Grouping columns (`keys`); empty means one global group.
    pub key_columns: Vec<String>,
    /// Aggregates to compute per window (default: a row count).
    pub aggregates: Vec<Aggregate>,
    /// How far the watermark trails the largest event time seen (default 0).
    pub watermark_delay_ms: i64,
}

impl WindowSpec {
    /// A spec with no keys, a row count and no watermark delay.
    pub fn new(kind: WindowKind, time_column: impl Into<String>) -> Self {
        WindowSpec {
            kind,
            time_column: time_column.into(),
            key_columns: Vec::new(),
            aggregates: vec![Aggregate::count()],
            watermark_delay_ms: 0,
        }
    }

    /// Checks the parts of the spec that do not depend on the input schema.
    pub fn validate(&self) -> Result<(), WindowError> {
        let spec_err = |msg: String| Err(WindowError::Spec(msg));
        match self.kind {
            WindowKind::Tumbling { size_ms } => {
                if size_ms <= 0 {
                    return spec_err(format!("size-ms must be > 0 (got {size_ms})"));
                }
            }
            WindowKind::Hopping { size_ms, slide_ms } => {
                if size_ms <= 0 {
                    return spec_err(format!("size-ms must be > 0 (got {size_ms})"));
                }
                if slide_ms <= 0 || slide_ms > size_ms {
                    return spec_err(format!(
                        "slide-ms ({slide_ms}) must be > 0 and <= size-ms ({size_ms})"
                    ));
                }
                // Ceiling division: how many windows contain one instant.
                let per_row = (size_ms - 1) / slide_ms + 1;
                if per_row > MAX_WINDOWS_PER_ROW {
                    return spec_err(format!(
                        "size-ms ({size_ms}) / slide-ms ({slide_ms}) puts each row in \
                         {per_row} windows; at most {MAX_WINDOWS_PER_ROW} are allowed"
                    ));
                }
            }
            WindowKind::Session { gap_ms } => {
                if gap_ms <= 0 {
                    return spec_err(format!("gap-ms must be > 0 (got {gap_ms})"));
                }
            }
        }
        if self.watermark_delay_ms < 0 {
            return spec_err(format!(
                "watermark-delay-ms must be >= 0 (got {})",
                self.watermark_delay_ms
            ));
        }
        if self.time_column.is_empty() {
            return spec_err("time-column must not be empty".to_string());
        }
        Ok(())
    }

    /// The window durations of the spec, as `(name, value)` pairs.
    fn durations(&self) -> Vec<(&'static str, i64)> {
        match self.kind {
            WindowKind::Tumbling { size_ms } => vec![("size-ms", size_ms)],
            WindowKind::Hopping { size_ms, slide_ms } => {
                vec![("size-ms", size_ms), ("slide-ms", slide_ms)]
            }
            WindowKind::Session { gap_ms } => vec![("gap-ms", gap_ms)],
        }
    }
}

/// The flat on-disk shape of [`WindowSpec`]. Serde cannot combine `flatten`
/// with `deny_unknown_fields`, so the kind's fields are spelled out here and
/// checked by hand.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawSpec {
    kind: RawKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slide_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gap_ms: Option<i64>,
    time_column: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default = "default_aggregates")]
    aggregates: Vec<Aggregate>,
    #[serde(default)]
    watermark_delay_ms: i64,
}

#[derive(Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
enum RawKind {
    Tumbling,
    Hopping,
    Session,
}

fn default_aggregates() -> Vec<Aggregate> {
    vec![Aggregate::count()]
}

impl RawSpec {
    fn into_spec(self) -> Result<WindowSpec, String> {
        let field = |value: Option<i64>, name: &str, kind: &str| {
            value.ok_or_else(|| format!("window: kind = \"{kind}\" needs `{name}`"))
        };
        let reject = |value: Option<i64>, name: &str, kind: &str| match value {
            Some(_) => Err(format!("window: kind = \"{kind}\" does not take `{name}`")),
            None => Ok(()),
        };
        let kind = match self.kind {
            RawKind::Tumbling => {
                reject(self.slide_ms, "slide-ms", "tumbling")?;
                reject(self.gap_ms, "gap-ms", "tumbling")?;
                WindowKind::Tumbling {
                    size_ms: field(self.size_ms, "size-ms", "tumbling")?,
                }
            }
            RawKind::Hopping => {
                reject(self.gap_ms, "gap-ms", "hopping")?;
                WindowKind::Hopping {
                    size_ms: field(self.size_ms, "size-ms", "hopping")?,
                    slide_ms: field(self.slide_ms, "slide-ms", "hopping")?,
                }
            }
            RawKind::Session => {
                reject(self.size_ms, "size-ms", "session")?;
                reject(self.slide_ms, "slide-ms", "session")?;
                WindowKind::Session {
                    gap_ms: field(self.gap_ms, "gap-ms", "session")?,
                }
            }
        };
        Ok(WindowSpec {
            kind,
            time_column: self.time_column,
            key_columns: self.keys,
            aggregates: self.aggregates,
            watermark_delay_ms: self.watermark_delay_ms,
        })
    }

    fn from_spec(spec: &WindowSpec) -> Self {
        let (kind, size_ms, slide_ms, gap_ms) = match spec.kind {
            WindowKind::Tumbling { size_ms } => (RawKind::Tumbling, Some(size_ms), None, None),
            WindowKind::Hopping { size_ms, slide_ms } => {
                (RawKind::Hopping, Some(size_ms), Some(slide_ms), None)
            }
            WindowKind::Session { gap_ms } => (RawKind::Session, None, None, Some(gap_ms)),
        };
        RawSpec {
            kind,
            size_ms,
            slide_ms,
            gap_ms,
            time_column: spec.time_column.clone(),
            keys: spec.key_columns.clone(),
            aggregates: spec.aggregates.clone(),
            watermark_delay_ms: spec.watermark_delay_ms,
        }
    }
}

impl<'de> Deserialize<'de> for WindowSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawSpec::deserialize(deserializer)?
            .into_spec()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for WindowSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawSpec::from_spec(self).serialize(serializer)
    }
}

/// Output of [`WindowOperator::push`].
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Windows closed by this push, as rows of [`WindowOperator::output_schema`].
    pub closed: RecordBatch,
    /// The late input rows, in arrival order, with the input schema.
    pub late: RecordBatch,
}

/// Errors from building, feeding or restoring a [`WindowOperator`].
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The spec itself is invalid (sizes, aggregates, names).
    #[error("window: {0}")]
    Spec(String),
    /// A column named by the spec is not in the input schema.
    #[error("window: column `{column}` ({role}) is not in the input schema")]
    MissingColumn {
        /// The missing column.
        column: String,
        /// What the spec uses it for.
        role: &'static str,
    },
    /// A column has a type the spec cannot use.
    #[error("window: column `{column}` is {data_type}; {expected}")]
    ColumnType {
        /// The offending column.
        column: String,
        /// Its type in the input schema.
        data_type: DataType,
        /// What was expected instead.
        expected: String,
    },
    /// A pushed batch does not match the schema given to [`WindowOperator::new`].
    #[error("window: batch does not match the input schema: {0}")]
    BatchSchema(String),
    /// A row has a null event time.
    #[error("window: row {row} has no event time (null in `{column}`)")]
    NullTime {
        /// 0-based row within the batch.
        row: usize,
        /// The time column.
        column: String,
    },
    /// A row's event time is so extreme that its windows cannot be represented.
    #[error(
        "window: row {row} has event time {value} in `{column}`, too close to the limits \
         of the column's range for its windows to be represented"
    )]
    TimeOutOfRange {
        /// 0-based row within the batch.
        row: usize,
        /// The raw value in the time column.
        value: i64,
        /// The time column.
        column: String,
    },
    /// SavedWindows bytes could not be restored.
    #[error("window: cannot restore snapshot: {0}")]
    SavedWindows(String),
    /// An Arrow kernel failed.
    #[error("window: {0}")]
    Arrow(#[from] ArrowError),
}

/// How the time column is read and written back.
#[derive(Debug, Clone)]
struct TimeColumn {
    index: usize,
    name: String,
    data_type: DataType,
    /// `None` for Int64 milliseconds.
    unit: Option<TimeUnit>,
    /// Millisecond range whose values convert back to the column's unit
    /// without overflow.
    lo: i64,
    hi: i64,
}

impl TimeColumn {
    fn ms_of(&self, raw: i64) -> Option<i64> {
        match self.unit {
            None | Some(TimeUnit::Millisecond) => Some(raw),
            Some(TimeUnit::Second) => raw.checked_mul(1000),
            Some(TimeUnit::Microsecond) => Some(raw.div_euclid(1000)),
            Some(TimeUnit::Nanosecond) => Some(raw.div_euclid(1_000_000)),
        }
    }

    /// Exact for every bound the operator produces: `new` requires
    /// second-unit durations to be whole seconds, and `lo..=hi` rules out
    /// overflow.
    fn raw_of(&self, ms: i64) -> i64 {
        match self.unit {
            None | Some(TimeUnit::Millisecond) => ms,
            Some(TimeUnit::Second) => ms.div_euclid(1000),
            Some(TimeUnit::Microsecond) => ms * 1000,
            Some(TimeUnit::Nanosecond) => ms * 1_000_000,
        }
    }

    fn to_array(&self, ms: impl Iterator<Item = i64>) -> Result<ArrayRef, ArrowError> {
        let raw: ArrayRef = Arc::new(Int64Array::from_iter_values(ms.map(|v| self.raw_of(v))));
        match self.unit {
            None => Ok(raw),
            Some(_) => cast(&raw, &self.data_type),
        }
    }
}

/// Key encoding: the row format turns any combination of key columns into
/// comparable, hashable bytes, and back.
#[derive(Debug)]
struct KeyCodec {
    indices: Vec<usize>,
    fields: Vec<FieldRef>,
    converter: RowConverter,
    parser: RowParser,
}

impl KeyCodec {
    fn decode<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Vec<ArrayRef>, ArrowError> {
        let arrays = self
            .converter
            .convert_rows(keys.map(|bytes| self.parser.parse(bytes)))?;
        // The row format hydrates dictionaries; cast back to the input type.
        arrays
            .into_iter()
            .zip(&self.fields)
            .map(|(array, field)| {
                if array.data_type() == field.data_type() {
                    Ok(array)
                } else {
                    cast(&array, field.data_type())
                }
            })
            .collect()
    }
}

/// Where an aggregate reads its input.
#[derive(Debug, Clone, Copy)]
enum AggInput {
    Rows,
    NonNull(usize),
    Values(usize),
}

/// One aggregate's input for the current batch.
enum Prepared {
    Rows,
    NonNull(ArrayRef),
    Values(Float64Array),
}

/// Partial state of one aggregate in one window. Counts use only `n`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Acc {
    /// Rows (row count) or non-null values seen.
    n: i64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Acc {
    const EMPTY: Acc = Acc {
        n: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Acc) {
        self.n += other.n;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// An open window of one key. The start is the map key it is stored under.
#[derive(Debug, Clone)]
struct Window {
    end: i64,
    accs: Vec<Acc>,
}

impl Window {
    fn new(end: i64, n_aggs: usize) -> Self {
        Window {
            end,
            accs: vec![Acc::EMPTY; n_aggs],
        }
    }

    fn update(&mut self, row: usize, inputs: &[Prepared]) {
        for (acc, input) in self.accs.iter_mut().zip(inputs) {
            match input {
                Prepared::Rows => acc.n += 1,
                Prepared::NonNull(array) => {
                    if array.is_valid(row) {
                        acc.n += 1;
                    }
                }
                Prepared::Values(array) => {
                    if array.is_valid(row) {
                        acc.add(array.value(row));
                    }
                }
            }
        }
    }
}

/// Open windows of one key, by start.
#[derive(Debug)]
struct Group {
    key: Arc<[u8]>,
    windows: BTreeMap<i64, Window>,
}

/// Window assignment with validated, positive durations.
#[derive(Debug, Clone, Copy)]
enum Assign {
    /// Tumbling windows are hopping windows with `slide == size`.
    Hopping {
        size: i64,
        slide: i64,
    },
    Session {
        gap: i64,
    },
}

impl Assign {
    /// Farthest a window bound can be from an event time in it.
    fn span(self) -> i64 {
        match self {
            Assign::Hopping { size, .. } => size,
            Assign::Session { gap } => gap,
        }
    }
}

/// A fired window: key bytes, start, and state.
type Fired = (Arc<[u8]>, i64, Window);

/// Event-time window aggregation operator; see the [module docs](self).
#[derive(Debug)]
pub struct WindowOperator {
    spec: WindowSpec,
    input: SchemaRef,
    output: SchemaRef,
    time: TimeColumn,
    keys: Option<KeyCodec>,
    aggs: Vec<AggInput>,
    assign: Assign,
    /// Largest event time of all non-late rows so far, in ms.
    max_seen: Option<i64>,
    groups: HashMap<Arc<[u8]>, Group>,
    /// Every open window as `(end, start, key)`: the firing and output order.
    by_end: BTreeSet<(i64, i64, Arc<[u8]>)>,
}

impl WindowOperator {
    /// Builds an operator for batches of schema `input`, checking the spec
    /// against it.
    pub fn new(spec: WindowSpec, input: SchemaRef) -> Result<Self, WindowError> {
        spec.validate()?;
        let lookup = |name: &str, role: &'static str| {
            input
                .index_of(name)
                .map_err(|_| WindowError::MissingColumn {
                    column: name.to_string(),
                    role,
                })
        };

        let time_index = lookup(&spec.time_column, "time column")?;
        let time_type = input.field(time_index).data_type().clone();
        let unit = match &time_type {
            DataType::Int64 => None,
            DataType::Timestamp(unit, _) => Some(*unit),
            other => {
                return Err(WindowError::ColumnType {
                    column: spec.time_column.clone(),
                    data_type: other.clone(),
                    expected: "the time column must be a timestamp or int64 milliseconds"
                        .to_string(),
                })
            }
        };
        if unit == Some(TimeUnit::Second) {
            // Window bounds are written back in seconds; keep them exact.
            for (name, value) in spec.durations() {
                if value % 1000 != 0 {
                    return Err(WindowError::Spec(format!(
                        "{name} ({value}) must be a multiple of 1000 because `{}` is in seconds",
                        spec.time_column
                    )));
                }
            }
        }
        let (lo, hi) = match unit {
            Some(TimeUnit::Microsecond) => (i64::MIN / 1000, i64::MAX / 1000),
            Some(TimeUnit::Nanosecond) => (i64::MIN / 1_000_000, i64::MAX / 1_000_000),
            _ => (i64::MIN, i64::MAX),
        };
        let time = TimeColumn {
            index: time_index,
            name: spec.time_column.clone(),
            data_type: time_type.clone(),
            unit,
            lo,
            hi,
        };

        let mut output_fields: Vec<FieldRef> = Vec::new();
        let keys = if spec.key_columns.is_empty() {
            None
        } else {
            let mut indices = Vec::new();
            let mut fields = Vec::new();
            for name in &spec.key_columns {
                let index = lookup(name, "key column")?;
                let field = Arc::new(input.field(index).clone());
                if !RowConverter::supports_fields(&[SortField::new(field.data_type().clone())]) {
                    return Err(WindowError::ColumnType {
                        column: name.clone(),
                        data_type: field.data_type().clone(),
                        expected: "this type cannot be used as a key".to_string(),
                    });
                }
                indices.push(index);
                fields.push(field);
            }
            let converter = RowConverter::new(
                fields
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?;
            let parser = converter.parser();
            output_fields.extend(fields.iter().cloned());
            Some(KeyCodec {
                indices,
                fields,
                converter,
                parser,
            })
        };
        output_fields.push(Arc::new(Field::new(WINDOW_START, time_type.clone(), false)));
        output_fields.push(Arc::new(Field::new(WINDOW_END, time_type, false)));

        let mut aggs = Vec::new();
        for agg in &spec.aggregates {
            let input_kind = match (agg.func, &agg.column) {
                (AggFunc::Count, None) => AggInput::Rows,
                (AggFunc::Count, Some(column)) => {
                    AggInput::NonNull(lookup(column, "aggregate column")?)
                }
                (func, None) => {
                    return Err(WindowError::Spec(format!(
                        "aggregate `{func}` needs a column"
                    )))
                }
                (func, Some(column)) => {
                    let index = lookup(column, "aggregate column")?;
                    let data_type = input.field(index).data_type();
                    if !(data_type.is_integer() || data_type.is_floating()) {
                        return Err(WindowError::ColumnType {
                            column: column.clone(),
                            data_type: data_type.clone(),
                            expected: format!(
                                "`{func}` needs a numeric (int, uint or float) column"
                            ),
                        });
                    }
                    AggInput::Values(index)
                }
            };
            let field = match agg.func {
                AggFunc::Count => Field::new(agg.output_name(), DataType::Int64, false),
                _ => Field::new(agg.output_name(), DataType::Float64, true),
            };
            output_fields.push(Arc::new(field));
            aggs.push(input_kind);
        }

        let mut seen = HashSet::new();
        for field in &output_fields {
            if !seen.insert(field.name().as_str()) {
                return Err(WindowError::Spec(format!(
                    "output column `{}` appears twice; rename a key or set an aggregate's `name`",
                    field.name()
                )));
            }
        }

        let assign = match spec.kind {
            WindowKind::Tumbling { size_ms } => Assign::Hopping {
                size: size_ms,
                slide: size_ms,
            },
            WindowKind::Hopping { size_ms, slide_ms } => Assign::Hopping {
                size: size_ms,
                slide: slide_ms,
            },
            WindowKind::Session { gap_ms } => Assign::Session { gap: gap_ms },
        };

        Ok(WindowOperator {
            spec,
            input,
            output: Arc::new(Schema::new(output_fields)),
            time,
            keys,
            aggs,
            assign,
            max_seen: None,
            groups: HashMap::new(),
            by_end: BTreeSet::new(),
        })
    }

    /// The schema of closed-window rows: key columns, `window_start`,
    /// `window_end`, then one column per aggregate.
    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output)
    }

    /// The spec the operator was built from.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Takes one batch (rows in arrival order). Returns the closed windows
    /// (every window whose end <= the watermark after this batch, as rows of
    /// [`output_schema`](Self::output_schema), possibly 0 rows) and the late
    /// input rows (a filtered copy of the input batch, possibly 0 rows).
    ///
    /// Session windows close only once their end is strictly below the
    /// watermark, because a row at exactly their end would still extend them.
    /// A batch rejected by validation (schema, null or out-of-range times)
    /// changes nothing.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Pushed, WindowError> {
        self.check_batch(batch)?;
        // Everything that can fail happens before any state changes.
        let times = self.event_times(batch)?;
        let key_rows = self.encode_keys(batch)?;
        let inputs = self.prepare_inputs(batch)?;

        let mut late = Vec::new();
        for (row, &t) in times.iter().enumerate() {
            if let Some(max) = self.max_seen {
                if t < max.saturating_sub(self.spec.watermark_delay_ms) {
                    late.push(row);
                    continue;
                }
            }
            self.max_seen = Some(self.max_seen.map_or(t, |max| max.max(t)));
            let key: &[u8] = match &key_rows {
                Some(rows) => rows.row(row).data(),
                None => &[],
            };
            self.add(key, t, row, &inputs);
        }

        let closed = match self.watermark() {
            Some(watermark) => self.fire(Some(watermark))?,
            None => RecordBatch::new_empty(self.output_schema()),
        };
        let late = if late.is_empty() {
            batch.slice(0, 0)
        } else {
            let mut mask = vec![false; batch.num_rows()];
            for row in late {
                mask[row] = true;
            }
            filter_record_batch(batch, &BooleanArray::from(mask))?
        };
        Ok(Pushed { closed, late })
    }

    /// Closes every open window (end of a bounded input).
    pub fn flush(&mut self) -> Result<RecordBatch, WindowError> {
        self.fire(None)
    }

    /// The current watermark in ms: the largest event time seen minus the
    /// delay, or `None` before the first row.
    pub fn watermark(&self) -> Option<i64> {
        self.max_seen
            .map(|max| max.saturating_sub(self.spec.watermark_delay_ms))
    }

    /// Number of open (not yet fired) windows over all keys.
    pub fn open_windows(&self) -> usize {
        self.by_end.len()
    }

    /// State for a checkpoint: open windows with their partial aggregates and
    /// the largest event time seen, as versioned JSON bytes.
    ///
    /// Panics only if the operator's own key rows fail to decode, which would
    /// be a bug.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut keys: Vec<&Arc<[u8]>> = self.groups.keys().collect();
        keys.sort();
        let key_index: HashMap<&[u8], usize> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| (&key[..], i))
            .collect();
        let keys_ipc = self.keys.as_ref().map(|codec| {
            let ipc = encode_keys_ipc(codec, &keys)
                .expect("window: encoding the operator's own keys cannot fail");
            to_hex(&ipc)
        });
        let windows = self
            .by_end
            .iter()
            .map(|(end, start, key)| {
                let window = &self.groups[key].windows[start];
                SavedWindow {
                    key: key_index[&key[..]],
                    start: *start,
                    end: *end,
                    accs: window
                        .accs
                        .iter()
                        .map(|a| (a.n, a.sum.to_bits(), a.min.to_bits(), a.max.to_bits()))
                        .collect(),
                }
            })
            .collect();
        let snapshot = SavedWindows {
            format: SNAPSHOT_FORMAT.to_string(),
            version: SNAPSHOT_VERSION,
            spec: self.spec.clone(),
            max_event_ms: self.max_seen,
            keys_ipc,
            windows,
        };
        serde_json::to_vec(&snapshot).expect("window: snapshot serialization cannot fail")
    }

    /// Rebuilds an operator from [`snapshot`](Self::snapshot) bytes (same spec
    /// and schema); errors if the bytes do not parse or were made for a
    /// different spec or key types.
    pub fn restore(spec: WindowSpec, input: SchemaRef, state: &[u8]) -> Result<Self, WindowError> {
        let mut op = WindowOperator::new(spec, input)?;
        let bad = |msg: String| WindowError::SavedWindows(msg);

        let header: SavedWindowsHeader = serde_json::from_slice(state)
            .map_err(|e| bad(format!("not a window operator snapshot ({e})")))?;
        if header.format.as_deref() != Some(SNAPSHOT_FORMAT) {
            return Err(bad(format!(
                "not a window operator snapshot (format is {:?}, expected {SNAPSHOT_FORMAT:?})",
                header.format
            )));
        }
        if header.version != Some(SNAPSHOT_VERSION) {
            return Err(bad(format!(
                "format version {:?} is not supported (expected {SNAPSHOT_VERSION})",
                header.version
            )));
        }
        let snapshot: SavedWindows =
            serde_json::from_slice(state).map_err(|e| bad(format!("malformed state: {e}")))?;
        if snapshot.spec != op.spec {
            let json = |s: &WindowSpec| serde_json::to_string(s).unwrap_or_default();
            return Err(bad(format!(
                "it was made for a different spec: snapshot has {}, operator has {}",
                json(&snapshot.spec),
                json(&op.spec)
            )));
        }

        let keys: Vec<Arc<[u8]>> = match (&op.keys, &snapshot.keys_ipc) {
            (None, None) => vec![Arc::from(&[][..])],
            (Some(codec), Some(hex)) => {
                let bytes = from_hex(hex).map_err(|e| bad(format!("key table: {e}")))?;
                decode_keys_ipc(codec, &bytes)?
            }
            _ => return Err(bad("key table does not match the key columns".to_string())),
        };

        for w in snapshot.windows {
            let key = keys
                .get(w.key)
                .ok_or_else(|| bad(format!("window refers to key {} of {}", w.key, keys.len())))?;
            if w.accs.len() != op.aggs.len() {
                return Err(bad(format!(
                    "window has {} aggregates, the spec has {}",
                    w.accs.len(),
                    op.aggs.len()
                )));
            }
            let shape_ok = match op.assign {
                Assign::Hopping { size, slide } => {
                    w.start.rem_euclid(slide) == 0 && w.start.checked_add(size) == Some(w.end)
                }
                Assign::Session { .. } => w.start < w.end,
            };
            if !shape_ok || w.start < op.time.lo || w.end > op.time.hi {
                return Err(bad(format!(
                    "window [{}, {}) does not fit the spec",
                    w.start, w.end
                )));
            }
            let window = Window {
                end: w.end,
                accs: w
                    .accs
                    .iter()
                    .map(|&(n, sum, min, max)| Acc {
                        n,
                        sum: f64::from_bits(sum),
                        min: f64::from_bits(min),
                        max: f64::from_bits(max),
                    })
                    .collect(),
            };
            let group = op.groups.entry(Arc::clone(key)).or_insert_with(|| Group {
                key: Arc::clone(key),
                windows: BTreeMap::new(),
            });
            if group.windows.insert(w.start, window).is_some() {
                return Err(bad(format!("window starting at {} appears twice", w.start)));
            }
            op.by_end.insert((w.end, w.start, Arc::clone(key)));
        }
        op.max_seen = snapshot.max_event_ms;
        Ok(op)
    }

    fn check_batch(&self, batch: &RecordBatch) -> Result<(), WindowError> {
        let schema = batch.schema();
        let key_indices = self.keys.iter().flat_map(|k| k.indices.iter().copied());
        let agg_indices = self.aggs.iter().filter_map(|a| match a {
            AggInput::Rows => None,
            AggInput::NonNull(i) | AggInput::Values(i) => Some(*i),
        });
        for index in std::iter::once(self.time.index)
            .chain(key_indices)
            .chain(agg_indices)
        {
            let expected = self.input.field(index);
            match schema.fields().get(index) {
                Some(actual)
                    if actual.name() == expected.name()
                        && actual.data_type() == expected.data_type() => {}
                Some(actual) => {
                    return Err(WindowError::BatchSchema(format!(
                        "column {index} is `{}` {}, expected `{}` {}",
                        actual.name(),
                        actual.data_type(),
                        expected.name(),
                        expected.data_type()
                    )))
                }
                None => {
                    return Err(WindowError::BatchSchema(format!(
                        "it has {} columns, expected `{}` at column {index}",
                        schema.fields().len(),
                        expected.name()
                    )))
                }
            }
        }
        Ok(())
    }

    /// Event times in ms, checking nulls and that every window bound stays
    /// representable in the time column's unit.
    fn event_times(&self, batch: &RecordBatch) -> Result<Vec<i64>, WindowError> {
        let column = batch.column(self.time.index);
        if column.null_count() > 0 {
            let row = (0..column.len()).find(|&i| column.is_null(i)).unwrap_or(0);
            return Err(WindowError::NullTime {
                row,
                column: self.time.name.clone(),
            });
        }
        let raw = cast(column, &DataType::Int64)?;
        let raw = raw.as_primitive::<arrow::datatypes::Int64Type>();
        let span = self.assign.span();
        raw.values()
            .iter()
            .enumerate()
            .map(|(row, &value)| {
                self.time
                    .ms_of(value)
                    .filter(|&t| {
                        t.checked_sub(span).is_some_and(|low| low >= self.time.lo)
                            && t.checked_add(span).is_some_and(|high| high <= self.time.hi)
                    })
                    .ok_or_else(|| WindowError::TimeOutOfRange {
                        row,
                        value,
                        column: self.time.name.clone(),
                    })
            })
            .collect()
    }

    fn encode_keys(&self, batch: &RecordBatch) -> Result<Option<Rows>, WindowError> {
        let Some(codec) = &self.keys else {
            return Ok(None);
        };
        let columns: Vec<ArrayRef> = codec
            .indices
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        Ok(Some(codec.converter.convert_columns(&columns)?))
    }

    fn prepare_inputs(&self, batch: &RecordBatch) -> Result<Vec<Prepared>, WindowError> {
        self.aggs
            .iter()
            .map(|agg| {
                Ok(match *agg {
                    AggInput::Rows => Prepared::Rows,
                    AggInput::NonNull(i) => Prepared::NonNull(Arc::clone(batch.column(i))),
                    AggInput::Values(i) => {
                        let values = cast(batch.column(i), &DataType::Float64)?;
                        Prepared::Values(values.as_primitive::<Float64Type>().clone())
                    }
                })
            })
            .collect()
    }

    /// Adds one non-late row at event time `t` to its windows.
    fn add(&mut self, key: &[u8], t: i64, row: usize, inputs: &[Prepared]) {
        if !self.groups.contains_key(key) {
            let key: Arc<[u8]> = Arc::from(key);
            let group = Group {
                key: Arc::clone(&key),
                windows: BTreeMap::new(),
            };
            self.groups.insert(key, group);
        }
        let group = self.groups.get_mut(key).expect("group was just ensured");
        let by_end = &mut self.by_end;
        let n_aggs = self.aggs.len();
        match self.assign {
            Assign::Hopping { size, slide } => {
                // Starts are multiples of `slide` in (t - size, t]; `event_times`
                // checked that t - size and t + size do not overflow.
                let mut start = t.div_euclid(slide) * slide;
                while start > t - size {
                    let window = group.windows.entry(start).or_insert_with(|| {
                        by_end.insert((start + size, start, Arc::clone(&group.key)));
                        Window::new(start + size, n_aggs)
                    });
                    window.update(row, inputs);
                    match start.checked_sub(slide) {
                        Some(next) => start = next,
                        None => break,
                    }
                }
            }
            Assign::Session { gap } => {
                let mut start = t;
                let mut end = t + gap;
                let mut merged: Option<Window> = None;
                // Sessions of a key are disjoint and do not touch, so those
                // overlapping or touching [start, end] are the latest ones
                // starting at or before `end`.
                loop {
                    let found = group
                        .windows
                        .range(..=end)
                        .next_back()
                        .filter(|(_, w)| w.end >= start)
                        .map(|(&s, _)| s);
                    let Some(s) = found else { break };
                    let mut window = group.windows.remove(&s).expect("found above");
                    by_end.remove(&(window.end, s, Arc::clone(&group.key)));
                    start = start.min(s);
                    end = end.max(window.end);
                    // Fold later sessions into earlier ones: a fixed order
                    // keeps float sums reproducible.
                    if let Some(later) = merged.take() {
                        for (acc, other) in window.accs.iter_mut().zip(&later.accs) {
                            acc.merge(other);
                        }
                    }
                    merged = Some(window);
                }
                let mut window = merged.unwrap_or_else(|| Window::new(end, n_aggs));
                window.end = end;
                window.update(row, inputs);
                group.windows.insert(start, window);
                by_end.insert((end, start, Arc::clone(&group.key)));
            }
        }
    }

    /// Removes and returns as rows every window that fires at `watermark`
    /// (`None`: every window).
    fn fire(&mut self, watermark: Option<i64>) -> Result<RecordBatch, WindowError> {
        let session = matches!(self.assign, Assign::Session { .. });
        let mut fired: Vec<Fired> = Vec::new();
        while let Some((end, _, _)) = self.by_end.first() {
            let fires = match watermark {
                None => true,
                Some(wm) if session => *end < wm,
                Some(wm) => *end <= wm,
            };
            if !fires {
                break;
            }
            let (_, start, key) = self.by_end.pop_first().expect("checked non-empty");
            let group = self.groups.get_mut(&key[..]).expect("window has a group");
            let window = group.windows.remove(&start).expect("window is indexed");
            if group.windows.is_empty() {
                self.groups.remove(&key[..]);
            }
            fired.push((key, start, window));
        }
        self.build_output(&fired)
    }

    fn build_output(&self, fired: &[Fired]) -> Result<RecordBatch, WindowError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.fields().len());
        if let Some(codec) = &self.keys {
            columns.extend(codec.decode(fired.iter().map(|(key, _, _)| &key[..]))?);
        }
        columns.push(
            self.time
                .to_array(fired.iter().map(|(_, start, _)| *start))?,
        );
        columns.push(self.time.to_array(fired.iter().map(|(_, _, w)| w.end))?);
        for (i, agg) in self.spec.aggregates.iter().enumerate() {
            let accs = fired.iter().map(|(_, _, w)| w.accs[i]);
            let array: ArrayRef = match agg.func {
                AggFunc::Count => Arc::new(Int64Array::from_iter_values(accs.map(|a| a.n))),
                func => Arc::new(Float64Array::from_iter(accs.map(|a| {
                    (a.n > 0).then(|| match func {
                        AggFunc::Sum => a.sum,
                        AggFunc::Min => a.min,
                        AggFunc::Max => a.max,
                        _ => a.sum / a.n as f64,
                    })
                }))),
            };
            columns.push(array);
        }
        Ok(RecordBatch::try_new(self.output_schema(), columns)?)
    }
}

/// Just enough of a snapshot to give a clear error for foreign bytes.
#[derive(Deserialize)]
struct SavedWindowsHeader {
    format: Option<String>,
    version: Option<u32>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SavedWindows {
    format: String,
    version: u32,
    spec: WindowSpec,
    max_event_ms: Option<i64>,
    /// Hex of an Arrow IPC stream holding one row per open key; absent
    /// without key columns.
    keys_ipc: Option<String>,
    windows: Vec<SavedWindow>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SavedWindow {
    /// Row in the key table.
    key: usize,
    start: i64,
    end: i64,
    /// Per aggregate: count, then sum, min and max as f64 bits (exact, and
    /// infinities survive JSON).
    accs: Vec<(i64, u64, u64, u64)>,
}

fn key_schema(codec: &KeyCodec) -> SchemaRef {
    Arc::new(Schema::new(codec.fields.clone()))
}

fn encode_keys_ipc(codec: &KeyCodec, keys: &[&Arc<[u8]>]) -> Result<Vec<u8>, ArrowError> {
    let schema = key_schema(codec);
    let columns = codec.decode(keys.iter().map(|k| &k[..]))?;
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    let mut writer = StreamWriter::try_new(Vec::new(), &schema)?;
    writer.write(&batch)?;
    writer.into_inner()
}

fn decode_keys_ipc(codec: &KeyCodec, bytes: &[u8]) -> Result<Vec<Arc<[u8]>>, WindowError> {
    let bad = |msg: String| WindowError::SavedWindows(format!("key table: {msg}"));
    let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(|e| bad(e.to_string()))?;
    let expected = key_schema(codec);
    let actual = reader.schema();
    let same = actual.fields().len() == expected.fields().len()
        && actual
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(a, e)| a.name() == e.name() && a.data_type() == e.data_type());
    if !same {
        return Err(bad(format!(
            "key columns were {actual}, the input has {expected}"
        )));
    }
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let batch = concat_batches(&actual, &batches).map_err(|e| bad(e.to_string()))?;
    let rows = codec
        .converter
        .convert_columns(batch.columns())
        .map_err(|e| bad(e.to_string()))?;
    Ok(rows.iter().map(|row| Arc::from(row.data())).collect())
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(format!("invalid hex digit {:?}", c as char)),
    };
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return Err("odd number of hex digits".to_string());
    }
    hex.chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        DictionaryArray, Float64Array, StringArray, TimestampMicrosecondArray, TimestampSecondArray,
    };
    use arrow::datatypes::{Int32Type, Int64Type};
    use std::collections::BTreeMap;

    /// Small deterministic PRNG (splitmix64) so failures reproduce by seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: i64, hi: i64) -> i64 {
            lo + (self.next() % (hi - lo + 1) as u64) as i64
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Keys {
        None,
        Utf8,
        Int64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
    enum Key {
        Global,
        Str(String),
        Int(i64),
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Input {
        key: Key,
        t: i64,
        v: Option<f64>,
    }

    /// One window as (key, start, end, rows, non-null values, sum, min, max,
    /// mean). Values are small integers, so float sums are exact in any order.
    type Out = (
        Key,
        i64,
        i64,
        i64,
        i64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    );

    struct Reference {
        /// Every window once the input is exhausted and flushed.
        windows: Vec<Out>,
        /// Watermark after the last row.
        watermark: Option<i64>,
        late: Vec<usize>,
    }

    /// Written from the rules, independently of the operator: per-row
    /// watermark, then windows enumerated per row, or sessions built by
    /// sorting each key's rows and merging by gap.
    fn reference(kind: &WindowKind, delay: i64, rows: &[Input]) -> Reference {
        let mut max: Option<i64> = None;
        let mut late = Vec::new();
        let mut kept: Vec<&Input> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            if max.is_some_and(|m| row.t < m - delay) {
                late.push(i);
            } else {
                max = Some(max.map_or(row.t, |m| m.max(row.t)));
                kept.push(row);
            }
        }
        let mut members: BTreeMap<(Key, i64, i64), Vec<Option<f64>>> = BTreeMap::new();
        match *kind {
            WindowKind::Tumbling { .. } | WindowKind::Hopping { .. } => {
                let (size, slide) = match *kind {
                    WindowKind::Tumbling { size_ms } => (size_ms, size_ms),
                    WindowKind::Hopping { size_ms, slide_ms } => (size_ms, slide_ms),
                    _ => unreachable!(),
                };
                for row in &kept {
                    let lo = (row.t - size).div_euclid(slide) - 1;
                    let hi = row.t.div_euclid(slide) + 1;
                    for k in lo..=hi {
                        let s = k * slide;
                        if s <= row.t && row.t < s + size {
                            members
                                .entry((row.key.clone(), s, s + size))
                                .or_default()
                                .push(row.v);
                        }
                    }
                }
            }
            WindowKind::Session { gap_ms } => {
                let mut per_key: BTreeMap<Key, Vec<(i64, Option<f64>)>> = BTreeMap::new();
                for row in &kept {
                    per_key
                        .entry(row.key.clone())
                        .or_default()
                        .push((row.t, row.v));
                }
                for (key, mut events) in per_key {
                    events.sort_by_key(|e| e.0);
                    let mut current: Option<(i64, i64, Vec<Option<f64>>)> = None;
                    for (t, v) in events {
                        match &mut current {
                            Some((_, end, vs)) if t <= *end => {
                                *end = (*end).max(t + gap_ms);
                                vs.push(v);
                            }
                            _ => {
                                if let Some((s, e, vs)) = current.take() {
                                    members.insert((key.clone(), s, e), vs);
                                }
                                current = Some((t, t + gap_ms, vec![v]));
                            }
                        }
                    }
                    if let Some((s, e, vs)) = current {
                        members.insert((key.clone(), s, e), vs);
                    }
                }
            }
        }
        let windows = members
            .into_iter()
            .map(|((key, start, end), vs)| {
                let values: Vec<f64> = vs.iter().flatten().copied().collect();
                let n = values.len() as i64;
                let sum = values.iter().sum::<f64>();
                let agg = |f: fn(f64, f64) -> f64| values.iter().copied().reduce(f);
                (
                    key,
                    start,
                    end,
                    vs.len() as i64,
                    n,
                    (n > 0).then_some(sum),
                    agg(f64::min),
                    agg(f64::max),
                    (n > 0).then(|| sum / n as f64),
                )
            })
            .collect();
        Reference {
            windows,
            watermark: max.map(|m| m - delay),
            late,
        }
    }

    fn all_aggregates() -> Vec<Aggregate> {
        vec![
            Aggregate::count(),
            Aggregate::of(AggFunc::Count, "v"),
            Aggregate::of(AggFunc::Sum, "v"),
            Aggregate::of(AggFunc::Min, "v"),
            Aggregate::of(AggFunc::Max, "v"),
            Aggregate::of(AggFunc::Mean, "v"),
        ]
    }

    fn input_schema(keys: Keys, value_type: DataType) -> SchemaRef {
        let mut fields = vec![Field::new("ts", DataType::Int64, false)];
        match keys {
            Keys::None => {}
            Keys::Utf8 => fields.push(Field::new("k", DataType::Utf8, false)),
            Keys::Int64 => fields.push(Field::new("k", DataType::Int64, false)),
        }
        fields.push(Field::new("v", value_type, true));
        Arc::new(Schema::new(fields))
    }

    fn make_batch(schema: &SchemaRef, rows: &[Input]) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.t),
        ))];
        if schema.fields().len() == 3 {
            columns.push(match schema.field(1).data_type() {
                DataType::Utf8 => {
                    Arc::new(StringArray::from_iter_values(rows.iter().map(
                        |r| match &r.key {
                            Key::Str(s) => s.clone(),
                            other => panic!("{other:?}"),
                        },
                    )))
                }
                _ => Arc::new(Int64Array::from_iter_values(rows.iter().map(
                    |r| match r.key {
                        Key::Int(i) => i,
                        ref other => panic!("{other:?}"),
                    },
                ))),
            });
        }
        let values: ArrayRef = Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.v)));
        let value_type = schema.field(schema.fields().len() - 1).data_type();
        columns.push(cast(&values, value_type).unwrap());
        RecordBatch::try_new(Arc::clone(schema), columns).unwrap()
    }

    fn key_at(batch: &RecordBatch, keys: Keys, row: usize) -> Key {
        match keys {
            Keys::None => Key::Global,
            Keys::Utf8 => Key::Str(batch.column(0).as_string::<i32>().value(row).to_string()),
            Keys::Int64 => Key::Int(batch.column(0).as_primitive::<Int64Type>().value(row)),
        }
    }

    /// Output rows of the all-aggregates spec, in batch order.
    fn outputs(batch: &RecordBatch, keys: Keys) -> Vec<Out> {
        let base = usize::from(keys != Keys::None);
        let int = |i: usize| batch.column(base + i).as_primitive::<Int64Type>().clone();
        let float = |i: usize| batch.column(base + i).as_primitive::<Float64Type>().clone();
        let (start, end, rows, n) = (int(0), int(1), int(2), int(3));
        let (sum, min, max, mean) = (float(4), float(5), float(6), float(7));
        let opt = |a: &Float64Array, r: usize| a.is_valid(r).then(|| a.value(r));
        (0..batch.num_rows())
            .map(|r| {
                (
                    key_at(batch, keys, r),
                    start.value(r),
                    end.value(r),
                    rows.value(r),
                    n.value(r),
                    opt(&sum, r),
                    opt(&min, r),
                    opt(&max, r),
                    opt(&mean, r),
                )
            })
            .collect()
    }

    fn inputs_of(batch: &RecordBatch, keys: Keys) -> Vec<Input> {
        let t = batch.column(0).as_primitive::<Int64Type>().clone();
        let v = cast(batch.column(batch.num_columns() - 1), &DataType::Float64).unwrap();
        let v = v.as_primitive::<Float64Type>();
        (0..batch.num_rows())
            .map(|r| Input {
                key: match keys {
                    Keys::None => Key::Global,
                    Keys::Utf8 => Key::Str(batch.column(1).as_string::<i32>().value(r).to_string()),
                    Keys::Int64 => Key::Int(batch.column(1).as_primitive::<Int64Type>().value(r)),
                },
                t: t.value(r),
                v: v.is_valid(r).then(|| v.value(r)),
            })
            .collect()
    }

    fn sorted(mut rows: Vec<Out>) -> Vec<Out> {
        rows.sort_by(|a, b| a.partial_cmp(b).expect("no NaN in test data"));
        rows
    }

    fn random_kind(rng: &mut Rng, which: usize) -> WindowKind {
        match which {
            0 => WindowKind::Tumbling {
                size_ms: rng.range(1, 60),
            },
            1 => {
                let size_ms = rng.range(1, 60);
                WindowKind::Hopping {
                    size_ms,
                    slide_ms: rng.range(1, size_ms),
                }
            }
            _ => WindowKind::Session {
                gap_ms: rng.range(1, 40),
            },
        }
    }

    fn random_rows(rng: &mut Rng, keys: Keys, delay: i64) -> Vec<Input> {
        let n = rng.range(0, 150) as usize;
        let n_keys = rng.range(1, 4);
        // Jitter larger than the delay makes some rows late.
        let jitter = delay + rng.range(0, 40);
        let mut clock = rng.range(-400, 400);
        (0..n)
            .map(|_| {
                clock += rng.range(0, 15);
                let mut t = clock + rng.range(-jitter, jitter);
                if rng.chance(3) {
                    t -= 300;
                }
                let k = rng.range(0, n_keys - 1);
                Input {
                    key: match keys {
                        Keys::None => Key::Global,
                        Keys::Utf8 => Key::Str(format!("key-{k}")),
                        Keys::Int64 => Key::Int(k * 1_000_003 - 7),
                    },
                    t,
                    v: (!rng.chance(20)).then(|| rng.range(-50, 50) as f64),
                }
            })
            .collect()
    }

    /// Feeds `rows` in random batches with one snapshot/restore at a random
    /// cut and checks everything against the reference.
    fn check_case(seed: u64, which_kind: usize, keys: Keys, value_type: DataType) {
        let mut rng = Rng(seed);
        let delay = rng.range(0, 20);
        let kind = random_kind(&mut rng, which_kind);
        let rows = random_rows(&mut rng, keys, delay);
        let spec = WindowSpec {
            kind: kind.clone(),
            time_column: "ts".to_string(),
            key_columns: if keys == Keys::None {
                vec![]
            } else {
                vec!["k".to_string()]
            },
            aggregates: all_aggregates(),
            watermark_delay_ms: delay,
        };
        let schema = input_schema(keys, value_type);
        let expected = reference(&kind, delay, &rows);
        let context = format!("seed {seed}, {kind:?}, delay {delay}, {keys:?}");

        let mut cuts = vec![0];
        while *cuts.last().unwrap() < rows.len() {
            let next = cuts.last().unwrap() + rng.range(0, 12) as usize;
            cuts.push(next.min(rows.len()));
        }
        let restore_after = rng.range(0, cuts.len() as i64 - 1) as usize;

        let mut op = WindowOperator::new(spec.clone(), Arc::clone(&schema)).unwrap();
        let mut closed = Vec::new();
        let mut late = Vec::new();
        for (i, pair) in cuts.windows(2).enumerate() {
            let pushed = op
                .push(&make_batch(&schema, &rows[pair[0]..pair[1]]))
                .unwrap();
            assert_eq!(pushed.closed.schema(), op.output_schema(), "{context}");
            let out = outputs(&pushed.closed, keys);
            let order: Vec<(i64, i64)> = out.iter().map(|o| (o.2, o.1)).collect();
            assert!(order.is_sorted(), "{context}: unsorted output {order:?}");
            closed.extend(out);
            late.extend(inputs_of(&pushed.late, keys));
            if i == restore_after {
                let bytes = op.snapshot();
                op = WindowOperator::restore(spec.clone(), Arc::clone(&schema), &bytes)
                    .unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(op.snapshot(), bytes, "{context}: snapshot not stable");
            }
        }
        assert_eq!(op.watermark(), expected.watermark, "{context}");

        let fires = |end: i64| match (expected.watermark, &kind) {
            (None, _) => false,
            (Some(wm), WindowKind::Session { .. }) => end < wm,
            (Some(wm), _) => end <= wm,
        };
        let expected_closed: Vec<Out> = expected
            .windows
            .iter()
            .filter(|w| fires(w.2))
            .cloned()
            .collect();
        assert_eq!(
            sorted(closed.clone()),
            expected_closed,
            "{context}: windows closed by pushes"
        );
        assert_eq!(
            op.open_windows(),
            expected.windows.len() - expected_closed.len(),
            "{context}"
        );

        let flushed = op.flush().unwrap();
        closed.extend(outputs(&flushed, keys));
        assert_eq!(sorted(closed), expected.windows, "{context}: all windows");
        assert_eq!(op.open_windows(), 0, "{context}");

        let expected_late: Vec<Input> = expected.late.iter().map(|&i| rows[i].clone()).collect();
        assert_eq!(late, expected_late, "{context}: late rows");
    }

    fn check_many(which_kind: usize, keys: Keys) {
        for seed in 0..80 {
            let value_type = if seed % 2 == 0 {
                DataType::Float64
            } else {
                DataType::Int32
            };
            let seed = seed + 1000 * which_kind as u64 + 100_000 * keys as u64;
            check_case(seed, which_kind, keys, value_type);
        }
    }

    #[test]
    fn tumbling_matches_reference() {
        check_many(0, Keys::None);
        check_many(0, Keys::Utf8);
        check_many(0, Keys::Int64);
    }

    #[test]
    fn hopping_matches_reference() {
        check_many(1, Keys::None);
        check_many(1, Keys::Utf8);
        check_many(1, Keys::Int64);
    }

    #[test]
    fn session_matches_reference() {
        check_many(2, Keys::None);
        check_many(2, Keys::Utf8);
        check_many(2, Keys::Int64);
    }

    #[test]
    fn reference_finds_late_rows_and_closed_windows() {
        // Guards against a vacuous comparison: the random cases do contain
        // late rows and windows closed before the flush.
        let mut late = 0;
        let mut closed = 0;
        for seed in 0..40 {
            let mut rng = Rng(seed);
            let delay = rng.range(0, 20);
            let kind = random_kind(&mut rng, (seed % 3) as usize);
            let rows = random_rows(&mut rng, Keys::Utf8, delay);
            let r = reference(&kind, delay, &rows);
            late += r.late.len();
            closed += r
                .windows
                .iter()
                .filter(|w| r.watermark.is_some_and(|wm| w.2 < wm))
                .count();
        }
        assert!(late > 20 && closed > 100, "late {late}, closed {closed}");
    }

    fn simple_schema() -> SchemaRef {
        input_schema(Keys::Utf8, DataType::Float64)
    }

    fn tumbling(size_ms: i64) -> WindowSpec {
        WindowSpec::new(WindowKind::Tumbling { size_ms }, "ts")
    }

    #[test]
    fn session_touching_rows_merge_across_batches() {
        let schema = input_schema(Keys::None, DataType::Float64);
        let spec = WindowSpec::new(WindowKind::Session { gap_ms: 10 }, "ts");
        let mut op = WindowOperator::new(spec, Arc::clone(&schema)).unwrap();
        let row = |t| Input {
            key: Key::Global,
            t,
            v: None,
        };
        // After the first batch the watermark equals the session's end (10),
        // so it stays open and the row at t = 10 extends it.
        let first = op.push(&make_batch(&schema, &[row(0)])).unwrap();
        assert_eq!(first.closed.num_rows(), 0);
        let second = op.push(&make_batch(&schema, &[row(10)])).unwrap();
        assert_eq!(second.closed.num_rows(), 0);
        assert_eq!(op.open_windows(), 1);
        let third = op.push(&make_batch(&schema, &[row(21)])).unwrap();
        let starts = third.closed.column(0).as_primitive::<Int64Type>();
        let ends = third.closed.column(1).as_primitive::<Int64Type>();
        assert_eq!((starts.value(0), ends.value(0)), (0, 20));
        assert_eq!(third.closed.num_rows(), 1);
    }

    #[test]
    fn timestamp_time_column_round_trips_unit_and_timezone() {
        let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", ts_type.clone(), false),
            Field::new("v", DataType::Float64, true),
        ]));
        let mut spec = tumbling(1000);
        spec.aggregates = vec![Aggregate::count(), Aggregate::of(AggFunc::Sum, "v")];
        let mut op = WindowOperator::new(spec, Arc::clone(&schema)).unwrap();
        let out_schema = op.output_schema();
        assert_eq!(out_schema.field(0).data_type(), &ts_type);
        assert_eq!(out_schema.field(1).data_type(), &ts_type);

        let times = TimestampMicrosecondArray::from(vec![-1, 1_500_123, 1_999_999, 3_000_000])
            .with_timezone("UTC");
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(times),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])),
            ],
        )
        .unwrap();
        let pushed = op.push(&batch).unwrap();
        assert_eq!(op.watermark(), Some(3000));
        let closed = pushed.closed;
        assert_eq!(closed.schema(), out_schema);
        let starts = closed
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let ends = closed
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(starts.values().to_vec(), vec![-1_000_000, 1_000_000]);
        assert_eq!(ends.values().to_vec(), vec![0, 2_000_000]);
        assert_eq!(starts.timezone(), Some("UTC"));
        let sums = closed.column(3).as_primitive::<Float64Type>();
        assert_eq!(sums.values().to_vec(), vec![1.0, 5.0]);

        let flushed = op.flush().unwrap();
        let starts = flushed
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(starts.values().to_vec(), vec![3_000_000]);
    }

    #[test]
    fn second_timestamps_need_whole_second_sizes() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Second, None),
            false,
        )]));
        let err = WindowOperator::new(tumbling(1500), Arc::clone(&schema)).unwrap_err();
        assert!(err.to_string().contains("size-ms (1500)"), "{err}");
        let mut op = WindowOperator::new(tumbling(2000), Arc::clone(&schema)).unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampSecondArray::from(vec![-1, 3, 5]))],
        )
        .unwrap();
        let closed = op.push(&batch).unwrap().closed;
        let starts = closed
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampSecondType>();
        assert_eq!(starts.values().to_vec(), vec![-2, 2]);
    }

    #[test]
    fn dictionary_keys_keep_their_type() {
        let key_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Int64, false),
            Field::new("k", key_type.clone(), true),
        ]));
        let mut spec = tumbling(10);
        spec.key_columns = vec!["k".into()];
        let mut op = WindowOperator::new(spec.clone(), Arc::clone(&schema)).unwrap();
        let keys: DictionaryArray<Int32Type> = vec![Some("b"), Some("a"), None, Some("b")]
            .into_iter()
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4])), Arc::new(keys)],
        )
        .unwrap();
        op.push(&batch).unwrap();
        let op = WindowOperator::restore(spec, schema, &op.snapshot()).unwrap();
        let mut op = op;
        let out = op.flush().unwrap();
        assert_eq!(out.column(0).data_type(), &key_type);
        let keys = cast(out.column(0), &DataType::Utf8).unwrap();
        let keys: Vec<Option<&str>> = keys.as_string::<i32>().iter().collect();
        // Row-format order puts nulls first.
        assert_eq!(keys, vec![None, Some("a"), Some("b")]);
        let counts = out.column(3).as_primitive::<Int64Type>();
        assert_eq!(counts.values().to_vec(), vec![1, 1, 2]);
    }

    fn err_of(spec: WindowSpec, schema: SchemaRef) -> String {
        WindowOperator::new(spec, schema).unwrap_err().to_string()
    }

    #[test]
    fn rejects_bad_specs_and_columns() {
        let schema = simple_schema();
        let utf8_time = Arc::new(Schema::new(vec![Field::new("ts", DataType::Utf8, false)]));
        assert_eq!(
            err_of(tumbling(10), utf8_time),
            "window: column `ts` is Utf8; the time column must be a timestamp or int64 milliseconds"
        );
        assert_eq!(
            err_of(tumbling(0), schema.clone()),
            "window: size-ms must be > 0 (got 0)"
        );
        let hop =
            |size_ms, slide_ms| WindowSpec::new(WindowKind::Hopping { size_ms, slide_ms }, "ts");
        assert_eq!(
            err_of(hop(10, 20), schema.clone()),
            "window: slide-ms (20) must be > 0 and <= size-ms (10)"
        );
        assert!(err_of(hop(10, 0), schema.clone()).contains("slide-ms (0) must be > 0"));
        assert!(err_of(hop(1_000_000, 1), schema.clone()).contains("at most"));
        assert_eq!(
            err_of(
                WindowSpec::new(WindowKind::Session { gap_ms: -5 }, "ts"),
                schema.clone()
            ),
            "window: gap-ms must be > 0 (got -5)"
        );
        let mut spec = tumbling(10);
        spec.watermark_delay_ms = -1;
        assert!(err_of(spec, schema.clone()).contains("watermark-delay-ms must be >= 0"));

        let mut spec = tumbling(10);
        spec.time_column = "when".into();
        assert_eq!(
            err_of(spec, schema.clone()),
            "window: column `when` (time column) is not in the input schema"
        );
        let mut spec = tumbling(10);
        spec.key_columns = vec!["user".into()];
        assert_eq!(
            err_of(spec, schema.clone()),
            "window: column `user` (key column) is not in the input schema"
        );
        let mut spec = tumbling(10);
        spec.aggregates = vec![Aggregate::of(AggFunc::Sum, "k")];
        assert_eq!(
            err_of(spec, schema.clone()),
            "window: column `k` is Utf8; `sum` needs a numeric (int, uint or float) column"
        );
        let mut spec = tumbling(10);
        spec.aggregates = vec![Aggregate {
            func: AggFunc::Mean,
            column: None,
            name: None,
        }];
        assert_eq!(
            err_of(spec, schema.clone()),
            "window: aggregate `mean` needs a column"
        );
        let mut spec = tumbling(10);
        spec.aggregates = vec![Aggregate::count(), Aggregate::count()];
        assert!(err_of(spec, schema.clone()).contains("`count` appears twice"));
        // Count over a non-numeric column is fine.
        let mut spec = tumbling(10);
        spec.aggregates = vec![Aggregate::of(AggFunc::Count, "k")];
        let op = WindowOperator::new(spec, schema).unwrap();
        assert_eq!(op.output_schema().field(2).name(), "count_k");
    }

    #[test]
    fn null_time_names_the_row_and_changes_nothing() {
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, true)]));
        let mut op = WindowOperator::new(tumbling(10), Arc::clone(&schema)).unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![Some(1), Some(2), None]))],
        )
        .unwrap();
        let err = op.push(&batch).unwrap_err().to_string();
        assert_eq!(err, "window: row 2 has no event time (null in `ts`)");
        assert_eq!(op.watermark(), None);
        assert_eq!(op.open_windows(), 0);
    }

    #[test]
    fn rejects_batches_of_another_schema_and_extreme_times() {
        let mut op = WindowOperator::new(tumbling(10), simple_schema()).unwrap();
        let other = input_schema(Keys::Int64, DataType::Float64);
        let batch = make_batch(&other, &[]);
        // Only the columns the spec uses are checked; `k` is not a key here.
        op.push(&batch).unwrap();
        let mut spec = tumbling(10);
        spec.key_columns = vec!["k".into()];
        let mut op = WindowOperator::new(spec, simple_schema()).unwrap();
        let err = op.push(&batch).unwrap_err().to_string();
        assert!(
            err.contains("column 1 is `k` Int64, expected `k` Utf8"),
            "{err}"
        );

        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, false)]));
        let mut op = WindowOperator::new(tumbling(10), Arc::clone(&schema)).unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![0, i64::MAX - 3]))],
        )
        .unwrap();
        let err = op.push(&batch).unwrap_err().to_string();
        assert!(err.starts_with("window: row 1 has event time"), "{err}");
    }

    #[test]
    fn restore_rejects_garbage_and_other_specs() {
        let schema = simple_schema();
        let mut spec = tumbling(10);
        spec.key_columns = vec!["k".into()];
        let mut op = WindowOperator::new(spec.clone(), Arc::clone(&schema)).unwrap();
        let rows = [Input {
            key: Key::Str("a".into()),
            t: 5,
            v: Some(1.0),
        }];
        op.push(&make_batch(&schema, &rows)).unwrap();
        let bytes = op.snapshot();

        let err = WindowOperator::restore(spec.clone(), schema.clone(), b"\x00garbage")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("window: cannot restore snapshot: not a window operator snapshot"));
        let err = WindowOperator::restore(spec.clone(), schema.clone(), br#"{"a": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a window operator snapshot"), "{err}");
        let future = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"version\":1", "\"version\":9");
        let err = WindowOperator::restore(spec.clone(), schema.clone(), future.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("version Some(9) is not supported"), "{err}");

        let mut other = spec.clone();
        other.kind = WindowKind::Tumbling { size_ms: 20 };
        let err = WindowOperator::restore(other, schema.clone(), &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("different spec"), "{err}");

        // Same spec, but the key column changed type.
        let err = WindowOperator::restore(
            spec.clone(),
            input_schema(Keys::Int64, DataType::Float64),
            &bytes,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("key table"), "{err}");

        let restored = WindowOperator::restore(spec, schema, &bytes).unwrap();
        assert_eq!(restored.open_windows(), 1);
        assert_eq!(restored.watermark(), Some(5));
    }

    #[test]
    fn spec_serde_shape() {
        let spec: WindowSpec = serde_json::from_str(
            r#"{"kind": "hopping", "size-ms": 60000, "slide-ms": 10000,
                "time-column": "ts", "keys": ["user"], "watermark-delay-ms": 5000,
                "aggregates": [{"func": "count"}, {"func": "sum", "column": "amount"},
                               {"func": "mean", "column": "amount", "name": "avg"}]}"#,
        )
        .unwrap();
        assert_eq!(
            spec,
            WindowSpec {
                kind: WindowKind::Hopping {
                    size_ms: 60000,
                    slide_ms: 10000
                },
                time_column: "ts".into(),
                key_columns: vec!["user".into()],
                aggregates: vec![
                    Aggregate::count(),
                    Aggregate::of(AggFunc::Sum, "amount"),
                    Aggregate {
                        func: AggFunc::Mean,
                        column: Some("amount".into()),
                        name: Some("avg".into())
                    },
                ],
                watermark_delay_ms: 5000,
            }
        );
        let back: WindowSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        assert_eq!(spec.aggregates[1].output_name(), "sum_amount");

        let minimal: WindowSpec =
            serde_json::from_str(r#"{"kind": "session", "gap-ms": 30, "time-column": "t"}"#)
                .unwrap();
        assert_eq!(
            minimal,
            WindowSpec::new(WindowKind::Session { gap_ms: 30 }, "t")
        );

        let parse_err = |json: &str| {
            serde_json::from_str::<WindowSpec>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(
            parse_err(r#"{"kind": "tumbling", "size-ms": 1, "time-column": "t", "bogus": 1}"#)
                .contains("unknown field `bogus`")
        );
        assert!(parse_err(
            r#"{"kind": "tumbling", "size-ms": 1, "gap-ms": 2, "time-column": "t"}"#
        )
        .contains("does not take `gap-ms`"));
        assert!(
            parse_err(r#"{"kind": "hopping", "size-ms": 1, "time-column": "t"}"#)
                .contains("needs `slide-ms`")
        );
        assert!(
            parse_err(r#"{"kind": "sliding", "size-ms": 1, "time-column": "t"}"#)
                .contains("unknown variant `sliding`")
        );
        assert!(parse_err(
            r#"{"kind": "tumbling", "size-ms": 1, "time-column": "t", "aggregates": [{"func": "median"}]}"#
        )
        .contains("unknown variant `median`"));

        // The kind enum alone keeps its own tagged, kebab-case shape.
        let kind: WindowKind =
            serde_json::from_str(r#"{"kind": "hopping", "size-ms": 2, "slide-ms": 1}"#).unwrap();
        assert_eq!(
            kind,
            WindowKind::Hopping {
                size_ms: 2,
                slide_ms: 1
            }
        );
    }

    #[test]
    fn empty_batches_and_all_null_values() {
        let schema = input_schema(Keys::None, DataType::Int32);
        let mut spec = tumbling(10);
        spec.aggregates = all_aggregates();
        let mut op = WindowOperator::new(spec, Arc::clone(&schema)).unwrap();
        let pushed = op.push(&make_batch(&schema, &[])).unwrap();
        assert_eq!((pushed.closed.num_rows(), pushed.late.num_rows()), (0, 0));
        assert_eq!(op.watermark(), None);
        let rows: Vec<Input> = [3, 4, 25]
            .iter()
            .map(|&t| Input {
                key: Key::Global,
                t,
                v: None,
            })
            .collect();
        let closed = op.push(&make_batch(&schema, &rows)).unwrap().closed;
        assert_eq!(
            outputs(&closed, Keys::None),
            vec![(Key::Global, 0, 10, 2, 0, None, None, None, None)]
        );
    }
}
