//! `imputer`: fills missing values per column with a fitted statistic or a constant
//! (scikit-learn's `SimpleImputer`).
//!
//! A value is missing when it is null, or NaN in a float column. Parameters: `columns`,
//! `strategy` (default `mean`) and `fill-value` (only with `strategy = "constant"`).
//!
//! Strategies, fitted per column on the non-missing values:
//!
//! * `mean`: Σx / n (Neumaier-compensated sums, merged across batches and partitions, so the
//!   result agrees across partitionings to ~1e-15 relative). Numeric columns.
//! * `median`: linear interpolation between the two middle values of the sorted values (numpy's
//!   `median`, what scikit-learn uses), from `quiver_sdk::quantile::QuantileSummary`: exact while
//!   a column has at most 100 000 distinct values (whatever its number of rows), a DDSketch
//!   estimate within 0.1 % relative beyond; the fitted `exact` field says which. Numeric columns.
//! * `most-frequent`: the value with the highest count; ties go to the smallest value, as
//!   scikit-learn does (numeric order for numbers, with −0 counted as 0; byte order, i.e. Unicode
//!   code point order, for text). Numeric and utf8 columns. The state holds one count per
//!   distinct value, so it grows with the column's cardinality.
//! * `constant`: `fill-value` (text) parsed as the column's type (e.g. `"3"` for an int32 column,
//!   `"-1.5"` for a float one, any text for utf8), checked when the pipeline starts; a value the
//!   type cannot hold is an error naming the column. Nothing is fitted (`fit-reads` is empty).
//!   Numeric and utf8 columns.
//!
//! Output types: `most-frequent` and `constant` keep the column's type. `mean` and `median` keep
//! float32 and float64 columns as they are (float32 columns get the statistic rounded to
//! float32) and turn integer columns into float64, since a mean or median need not be a whole
//! number. A filled column has no nulls left (its output field is not nullable).
//!
//! Edge cases: infinite values are refused in a fit (an error naming the column and row), as
//! scikit-learn refuses them. A column with no value to learn from (all missing) keeps its
//! missing values, and `finish` logs a warning; scikit-learn would drop such a column instead,
//! but a transform here keeps the schema.

use std::collections::BTreeMap;

use quiver_sdk::check_fitted_columns;
use quiver_sdk::prelude::*;
use quiver_sdk::quantile::QuantileSummary;
use serde::{Deserialize, Serialize};

const NAME: &str = "imputer";

/// How missing values are replaced.
#[derive(Debug, Clone, PartialEq)]
enum Strategy {
    Mean,
    Median,
    MostFrequent,
    /// The `fill-value` text, parsed per column type.
    Constant(String),
}

impl Strategy {
    fn name(&self) -> &'static str {
        match self {
            Strategy::Mean => "mean",
            Strategy::Median => "median",
            Strategy::MostFrequent => "most-frequent",
            Strategy::Constant(_) => "constant",
        }
    }

    /// Column types the strategy accepts.
    fn accepts(&self, t: &DataType) -> bool {
        NUMERIC.contains(t) || (*t == DataType::Utf8 && self.keeps_type())
    }

    /// Whether the output has the input's type (otherwise integers become float64).
    fn keeps_type(&self) -> bool {
        matches!(self, Strategy::MostFrequent | Strategy::Constant(_))
    }

    fn output_type(&self, t: &DataType) -> DataType {
        match t {
            DataType::Float32 | DataType::Float64 => t.clone(),
            _ if self.keeps_type() => t.clone(),
            _ => DataType::Float64,
        }
    }
}

struct Imputer {
    columns: Vec<String>,
    strategy: Strategy,
    fitted: Option<Fitted>,
}

/// A fill value, typed like the column it fills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Fill {
    /// For signed integer columns.
    Int(i64),
    /// For unsigned integer columns.
    UInt(u64),
    /// For float columns, and the mean or median of any numeric column.
    Float(f64),
    /// For utf8 columns.
    Text(String),
}

/// Fitted parameters: per column, in `columns` order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fitted {
    strategy: String,
    columns: Vec<ColumnFit>,
}

/// What was fitted for one column.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ColumnFit {
    column: String,
    /// Number of non-missing values seen.
    count: u64,
    /// The fill value; none if the column had no values (its missing values stay).
    fill: Option<Fill>,
    /// Median only: whether it is exact (at most 100 000 distinct values) rather than a sketch
    /// estimate. Absent for the other strategies, whose fits are always exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<bool>,
}

/// Statistics of one column, by strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ColumnState {
    Mean(Sum),
    Median(QuantileSummary),
    Frequent(Counts),
}

/// Count and Neumaier-compensated sum.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Sum {
    count: u64,
    sum: f64,
    /// Low-order bits lost by `sum`, added back at the end.
    compensation: f64,
}

impl Sum {
    /// Counts one value.
    fn push(&mut self, x: f64) {
        self.count += 1;
        self.add(x);
    }

    /// Adds to the sum only (Neumaier's step: the compensation keeps what `t` rounds off).
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        self.compensation += if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
    }

    fn merge(&mut self, o: &Sum) {
        self.add(o.sum);
        self.compensation += o.compensation;
        self.count += o.count;
    }

    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.sum + self.compensation) / self.count as f64)
    }
}

/// Count per distinct value, in value order (so ties resolve to the smallest value).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Counts {
    Int(BTreeMap<i64, u64>),
    UInt(BTreeMap<u64, u64>),
    /// Keyed by [`float_key`], whose order is the numeric order.
    Float(BTreeMap<u64, u64>),
    Text(BTreeMap<String, u64>),
}

/// An integer whose unsigned order is the numeric order of `x` (not NaN); −0 counts as 0.
fn float_key(x: f64) -> u64 {
    let bits = (if x == 0.0 { 0.0 } else { x }).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

fn float_of_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// The key with the highest count, the first (smallest) on ties.
fn most_frequent<K: Clone>(m: &BTreeMap<K, u64>) -> Option<K> {
    let mut best: Option<(&K, u64)> = None;
    for (k, &c) in m {
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((k, c));
        }
    }
    best.map(|(k, _)| k.clone())
}

fn merge_counts<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, &c) in from {
        *into.entry(k.clone()).or_insert(0) += c;
    }
}

impl Counts {
    fn total(&self) -> u64 {
        match self {
            Counts::Int(m) => m.values().sum(),
            Counts::UInt(m) => m.values().sum(),
            Counts::Float(m) => m.values().sum(),
            Counts::Text(m) => m.values().sum(),
        }
    }

    fn merge(&mut self, o: &Counts) -> Result<(), PluginError> {
        match (self, o) {
            (Counts::Int(a), Counts::Int(b)) => merge_counts(a, b),
            (Counts::UInt(a), Counts::UInt(b)) => merge_counts(a, b),
            (Counts::Float(a), Counts::Float(b)) => merge_counts(a, b),
            (Counts::Text(a), Counts::Text(b)) => merge_counts(a, b),
            _ => return Err(PluginError::new("states for columns of different types")),
        }
        Ok(())
    }

    fn fill(&self) -> Option<Fill> {
        match self {
            Counts::Int(m) => most_frequent(m).map(Fill::Int),
            Counts::UInt(m) => most_frequent(m).map(Fill::UInt),
            Counts::Float(m) => most_frequent(m).map(|k| Fill::Float(float_of_key(k))),
            Counts::Text(m) => most_frequent(m).map(Fill::Text),
        }
    }
}

impl ColumnState {
    fn count(&self) -> u64 {
        match self {
            ColumnState::Mean(s) => s.count,
            ColumnState::Median(q) => q.count(),
            ColumnState::Frequent(c) => c.total(),
        }
    }

    fn merge(&mut self, o: &ColumnState) -> Result<(), PluginError> {
        match (self, o) {
            (ColumnState::Mean(a), ColumnState::Mean(b)) => a.merge(b),
            (ColumnState::Median(a), ColumnState::Median(b)) => {
                a.merge(b).map_err(|e| PluginError::new(e.to_string()))?
            }
            (ColumnState::Frequent(a), ColumnState::Frequent(b)) => a.merge(b)?,
            _ => return Err(PluginError::new("states of different strategies")),
        }
        Ok(())
    }
}

/// Whether row i of a column is missing: null, or NaN in a float column.
fn missing(column: &Column, values: &[f64], i: usize) -> bool {
    !column.is_valid(i) || values[i].is_nan()
}

fn infinite(column: &str, row: usize) -> PluginError {
    PluginError::new(format!(
        "column `{column}` holds an infinite value; {NAME} fits on finite values only"
    ))
    .in_column(column)
    .at_row(row)
}

/// The statistics of one batch's column for `strategy` (not `constant`).
fn column_state(
    strategy: &Strategy,
    column: &Column,
    rows: usize,
) -> Result<ColumnState, PluginError> {
    if column.data_type == DataType::Utf8 {
        let mut m = BTreeMap::new();
        for i in 0..rows {
            if let Some(s) = column.str_at(i) {
                *m.entry(s.to_string()).or_insert(0) += 1;
            }
        }
        return Ok(ColumnState::Frequent(Counts::Text(m)));
    }
    let values = column.f64_values()?;
    let present = || (0..rows).filter(|&i| !missing(column, &values, i));
    if let Some(i) = present().find(|&i| values[i].is_infinite()) {
        return Err(infinite(&column.name, i));
    }
    Ok(match strategy {
        Strategy::Mean => {
            let mut s = Sum::default();
            present().for_each(|i| s.push(values[i]));
            ColumnState::Mean(s)
        }
        Strategy::Median => {
            let mut q = QuantileSummary::new();
            q.extend(present().map(|i| values[i]));
            ColumnState::Median(q)
        }
        // Integers are counted in their own type: f64 cannot tell apart large i64/u64 values.
        _ => ColumnState::Frequent(match &column.values {
            Values::I8(v) => Counts::Int(count(present(), |i| i64::from(v[i]))),
            Values::I16(v) => Counts::Int(count(present(), |i| i64::from(v[i]))),
            Values::I32(v) => Counts::Int(count(present(), |i| i64::from(v[i]))),
            Values::I64(v) => Counts::Int(count(present(), |i| v[i])),
            Values::U8(v) => Counts::UInt(count(present(), |i| u64::from(v[i]))),
            Values::U16(v) => Counts::UInt(count(present(), |i| u64::from(v[i]))),
            Values::U32(v) => Counts::UInt(count(present(), |i| u64::from(v[i]))),
            Values::U64(v) => Counts::UInt(count(present(), |i| v[i])),
            _ => Counts::Float(count(present(), |i| float_key(values[i]))),
        }),
    })
}

fn count<K: Ord>(rows: impl Iterator<Item = usize>, key: impl Fn(usize) -> K) -> BTreeMap<K, u64> {
    let mut m = BTreeMap::new();
    for i in rows {
        *m.entry(key(i)).or_insert(0) += 1;
    }
    m
}

/// A type's name for messages: `Int32`, not `DataType::Int32`.
fn type_name(t: &DataType) -> String {
    format!("{t:?}")
        .trim_start_matches("DataType::")
        .to_string()
}

/// `text` parsed as a fill value for a column of type `t`.
fn parse_fill(text: &str, t: &DataType, column: &str) -> Result<Fill, PluginError> {
    fn num<T: std::str::FromStr>(text: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        text.trim().parse::<T>().map_err(|e| e.to_string())
    }
    let parsed = match t {
        DataType::Int8 => num::<i8>(text).map(|v| Fill::Int(v.into())),
        DataType::Int16 => num::<i16>(text).map(|v| Fill::Int(v.into())),
        DataType::Int32 => num::<i32>(text).map(|v| Fill::Int(v.into())),
        DataType::Int64 => num::<i64>(text).map(Fill::Int),
        DataType::Uint8 => num::<u8>(text).map(|v| Fill::UInt(v.into())),
        DataType::Uint16 => num::<u16>(text).map(|v| Fill::UInt(v.into())),
        DataType::Uint32 => num::<u32>(text).map(|v| Fill::UInt(v.into())),
        DataType::Uint64 => num::<u64>(text).map(Fill::UInt),
        DataType::Float32 => num::<f32>(text).map(|v| Fill::Float(v.into())),
        DataType::Float64 => num::<f64>(text).map(Fill::Float),
        DataType::Utf8 => Ok(Fill::Text(text.to_string())),
        _ => Err("unsupported type".into()),
    };
    match parsed {
        Ok(Fill::Float(f)) if f.is_nan() => {
            Err("NaN would fill missing values with missing values".into())
        }
        other => other,
    }
    .map_err(|reason| {
        PluginError::new(format!(
            "`fill-value` {text:?} is not a valid {} value for column `{column}`: {reason}",
            type_name(t)
        ))
        .in_column(column)
    })
}

/// Replaces missing values (null, or `nan`) of a fixed-width column by `fill`, in place.
fn fill_native<T: Native>(
    column: &mut Column,
    fill: T,
    nan: impl Fn(T) -> bool,
) -> Result<(), PluginError> {
    let validity = column.validity.take();
    let values = column.values_mut::<T>()?;
    for (i, v) in values.iter_mut().enumerate() {
        if nan(*v) || validity.as_ref().is_some_and(|b| !get_bit(b, i)) {
            *v = fill;
        }
    }
    Ok(())
}

/// Fills a fixed-width integer column (no NaN).
fn fill_int<T: Native + TryFrom<i128>>(
    column: &mut Column,
    fill: &Fill,
) -> Result<(), PluginError> {
    let value = match fill {
        Fill::Int(v) => i128::from(*v),
        Fill::UInt(v) => i128::from(*v),
        _ => return Err(does_not_fit(column, fill)),
    };
    let value = T::try_from(value).map_err(|_| does_not_fit(column, fill))?;
    fill_native(column, value, |_| false)
}

fn does_not_fit(column: &Column, fill: &Fill) -> PluginError {
    PluginError::new(format!(
        "fill value {fill:?} does not fit column `{}` of type {}",
        column.name,
        type_name(&column.data_type)
    ))
    .in_column(&column.name)
}

/// Fills one column (already known to be of an accepted type), giving it type `out`.
fn apply(
    mut column: Column,
    fill: Option<&Fill>,
    out: &DataType,
    rows: usize,
) -> Result<Column, PluginError> {
    let Some(fill) = fill else {
        // Nothing to fill with: only integers under mean/median change (to float64).
        if *out == DataType::Float64 && !matches!(column.values, Values::F64(_)) {
            let values = column.f64_values()?.into_owned();
            column.set_f64_values(values);
        }
        return Ok(column);
    };
    match (&column.values, fill) {
        (Values::Bytes(bytes), Fill::Text(t)) => {
            let nulls = (0..rows).filter(|&i| !column.is_valid(i)).count();
            let mut b = StringColumnBuilder::with_capacity(rows, bytes.len() + nulls * t.len());
            for i in 0..rows {
                let value = if column.is_valid(i) {
                    column.bytes_at(i)
                } else {
                    t.as_bytes()
                };
                b.push(Some(value));
            }
            return Ok(b.finish(&column.name, DataType::Utf8));
        }
        (Values::F64(_), Fill::Float(f)) => fill_native(&mut column, *f, f64::is_nan)?,
        (Values::F32(_), Fill::Float(f)) => fill_native(&mut column, *f as f32, f32::is_nan)?,
        // Mean or median of an integer column: float64 output.
        (_, Fill::Float(f)) => {
            let values = column.f64_values()?;
            let filled = (0..rows)
                .map(|i| if column.is_valid(i) { values[i] } else { *f })
                .collect();
            column.set_f64_values(filled);
            column.validity = None;
        }
        (Values::I8(_), _) => fill_int::<i8>(&mut column, fill)?,
        (Values::I16(_), _) => fill_int::<i16>(&mut column, fill)?,
        (Values::I32(_), _) => fill_int::<i32>(&mut column, fill)?,
        (Values::I64(_), _) => fill_int::<i64>(&mut column, fill)?,
        (Values::U8(_), _) => fill_int::<u8>(&mut column, fill)?,
        (Values::U16(_), _) => fill_int::<u16>(&mut column, fill)?,
        (Values::U32(_), _) => fill_int::<u32>(&mut column, fill)?,
        (Values::U64(_), _) => fill_int::<u64>(&mut column, fill)?,
        _ => return Err(does_not_fit(&column, fill)),
    }
    Ok(column)
}

impl Imputer {
    /// The field of column `name`, checked to have a type the strategy fills.
    fn field<'a>(&self, input: &'a [Field], name: &str) -> Result<&'a Field, PluginError> {
        let field = find_field(input, name)?;
        if !self.strategy.accepts(&field.data_type) {
            return Err(PluginError::new(format!(
                "column `{name}` has type {}; strategy `{}` fills numeric{} columns",
                type_name(&field.data_type),
                self.strategy.name(),
                if self.strategy.keeps_type() {
                    " or utf8"
                } else {
                    ""
                }
            ))
            .in_column(name));
        }
        Ok(field)
    }

    /// The fill value of column number `k` (named `name`, of type `t`), if known yet.
    fn fill_for(&self, k: usize, name: &str, t: &DataType) -> Result<Option<Fill>, PluginError> {
        match &self.strategy {
            Strategy::Constant(text) => parse_fill(text, t, name).map(Some),
            _ => Ok(self
                .fitted
                .as_ref()
                .and_then(|f| f.columns.get(k))
                .and_then(|c| c.fill.clone())),
        }
    }
}

impl Plugin for Imputer {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "fills nulls and NaN with a fitted mean, median or most frequent value, or a constant",
        )
        .param(ParamSpec::text_list("columns", "columns to fill").required())
        .param(
            ParamSpec::text(
                "strategy",
                "mean, median, most-frequent (ties: smallest value) or constant",
            )
            .default(ParamValue::Text("mean".into())),
        )
        .param(ParamSpec::text(
            "fill-value",
            "the value for strategy constant, parsed as the column's type",
        ))
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.columns("columns")?;
        let fill_value = params.text("fill-value").map(str::to_string);
        let strategy = match params.text("strategy").unwrap_or("mean") {
            "mean" => Strategy::Mean,
            "median" => Strategy::Median,
            "most-frequent" => Strategy::MostFrequent,
            "constant" => Strategy::Constant(fill_value.clone().ok_or_else(|| {
                Params::invalid("fill-value", "strategy `constant` needs a `fill-value`")
            })?),
            other => {
                return Err(Params::invalid(
                    "strategy",
                    format!(
                        "unknown strategy `{other}`; use mean, median, most-frequent or constant"
                    ),
                ))
            }
        };
        if fill_value.is_some() && !matches!(strategy, Strategy::Constant(_)) {
            return Err(Params::invalid(
                "fill-value",
                format!(
                    "only used with strategy `constant`, not `{}`",
                    strategy.name()
                ),
            ));
        }
        Ok(Imputer {
            columns,
            strategy,
            fitted: None,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for (k, c) in self.columns.iter().enumerate() {
            let field = self.field(input, c)?;
            let fill = self.fill_for(k, c, &field.data_type)?;
            plan = plan.compute(
                c,
                self.strategy.output_type(&field.data_type),
                field.nullable && fill.is_none(),
            );
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        if !matches!(self.strategy, Strategy::Constant(_)) && self.fitted.is_none() {
            return Err(PluginError::new(format!("{NAME} is not fitted")));
        }
        let rows = input.rows as usize;
        let mut out = Vec::with_capacity(input.columns.len());
        for (k, column) in input.columns.into_iter().enumerate() {
            let fill = self.fill_for(k, &column.name, &column.data_type)?;
            let out_type = self.strategy.output_type(&column.data_type);
            out.push(apply(column, fill.as_ref(), &out_type, rows)?);
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

impl Aggregate for Imputer {
    type State = Vec<ColumnState>;
    type Fitted = Fitted;

    fn fit_reads(&self, input: &[Field]) -> Result<Vec<String>, PluginError> {
        if let Strategy::Constant(_) = self.strategy {
            // The fill value is given: nothing to learn from the data.
            return Ok(Vec::new());
        }
        for c in &self.columns {
            self.field(input, c)?;
        }
        Ok(self.columns.clone())
    }

    fn partial(&self, input: &Batch) -> Result<Vec<ColumnState>, PluginError> {
        let rows = input.rows as usize;
        input
            .columns
            .iter()
            .map(|c| column_state(&self.strategy, c, rows))
            .collect()
    }

    fn merge(&self, states: Vec<Vec<ColumnState>>) -> Result<Vec<ColumnState>, PluginError> {
        let mut states = states.into_iter();
        let mut acc = states.next().unwrap_or_default();
        for state in states {
            if state.len() != acc.len() {
                return Err(PluginError::new("a state for another set of columns"));
            }
            for ((a, s), c) in acc.iter_mut().zip(&state).zip(&self.columns) {
                a.merge(s).map_err(|e| e.in_column(c))?;
            }
        }
        Ok(acc)
    }

    fn finish(&self, state: Vec<ColumnState>) -> Result<Fitted, PluginError> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for (k, c) in self.columns.iter().enumerate() {
            // An empty fit (no rows reached the plugin) has no column states at all.
            let Some(s) = state.get(k) else {
                columns.push(ColumnFit {
                    column: c.clone(),
                    count: 0,
                    fill: None,
                    exact: (self.strategy == Strategy::Median).then_some(true),
                });
                continue;
            };
            let fill = match s {
                ColumnState::Mean(sum) => sum.mean().map(Fill::Float),
                ColumnState::Median(q) => q.quantile(0.5).map(Fill::Float),
                ColumnState::Frequent(counts) => counts.fill(),
            };
            if let Some(Fill::Float(f)) = fill {
                if !f.is_finite() {
                    return Err(PluginError::new(format!(
                        "the {} of column `{c}` is {f} (the values overflow float64)",
                        self.strategy.name()
                    ))
                    .in_column(c));
                }
            }
            columns.push(ColumnFit {
                column: c.clone(),
                count: s.count(),
                fill,
                exact: match s {
                    ColumnState::Median(q) => Some(q.is_exact()),
                    _ => None,
                },
            });
        }
        for c in columns.iter().filter(|c| c.fill.is_none()) {
            log(
                Level::Warn,
                &format!(
                    "column `{}` has no values to fit the {} on; its missing values stay missing",
                    c.column,
                    self.strategy.name()
                ),
            );
        }
        Ok(Fitted {
            strategy: self.strategy.name().into(),
            columns,
        })
    }

    fn set_fitted(&mut self, fitted: Fitted) -> Result<(), PluginError> {
        check_fitted_columns(
            fitted.columns.iter().map(|c| c.column.as_str()),
            &self.columns,
        )?;
        if fitted.strategy != self.strategy.name() {
            return Err(PluginError::new(format!(
                "fitted with strategy `{}`, but configured with `{}`",
                fitted.strategy,
                self.strategy.name()
            )));
        }
        self.fitted = Some(fitted);
        Ok(())
    }
}

quiver_sdk::export_feature!(Imputer);
