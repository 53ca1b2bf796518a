//! `target-encoder`: category → smoothed mean of a numeric target over the fitted rows of that
//! category (mean encoding with additive smoothing, the "m-estimate").
//!
//! Categories are the non-null values of utf8 or integer columns; the `target` column is numeric
//! (or boolean, as 0/1).
//!
//! Fit, over the rows whose target is a finite number (rows with a null, NaN or infinite
//! target are ignored):
//! - μ, the global mean of the target (rows with a null category included);
//! - per column and category c: nᶜ, its rows, and meanᶜ, the mean target over them.
//!
//! The statistics are exact per category (hash maps of counts and compensated float64 sums,
//! merged by adding), so the fit does not depend on how the data is partitioned beyond
//! floating-point rounding (far below 1e-9 relative). A fit with no target value at all fails:
//! there is no mean to encode with.
//!
//! Transform: each category column is replaced in place by the float64 encoding
//! (nᶜ·meanᶜ + m·μ) / (nᶜ + m), with m = `smoothing` (≥ 0, default 10): rare categories lean
//! on the global mean. Unknown categories (not seen with a target in the fit) and nulls give μ;
//! the output has no nulls. The target is read only when fitting: the data the fit is applied
//! to need not have it (it passes through untouched if present).
//!
//! Unlike scikit-learn's TargetEncoder there is no cross-fitting: encoding the training rows
//! with a fit on those same rows leaks their target, which smoothing only damps.

use quiver_sdk::categories::{
    self, category_columns, check_keys, fitted_field, key_at, merge_columns, Key, Kind,
};
use quiver_sdk::check_fitted_columns;
use quiver_sdk::prelude::*;
use serde::{Deserialize, Serialize};

// Category maps with a fast hash (see `categories::KeyMap`).
type KeyMap<V> = categories::KeyMap<V, rustc_hash::FxBuildHasher>;
type ColumnStats<V> = categories::ColumnStats<V, rustc_hash::FxBuildHasher>;

/// The plugin: its parameters and, once fitted, the encodings.
struct TargetEncoder {
    columns: Vec<String>,
    target: String,
    smoothing: f64,
    /// Once fitted: the global mean and, per configured column, its encoding.
    encodings: Option<(f64, Vec<Encoding>)>,
}

/// How one column is encoded, built from its fitted parameters.
struct Encoding {
    column: String,
    kind: Kind,
    /// Category → its smoothed mean.
    values: KeyMap<f64>,
}

/// A float64 sum with Neumaier's compensation: the rounding error of each addition is kept in
/// `lo`, so a sum's value barely depends on the order of its terms (and hence on partitioning).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Sum {
    hi: f64,
    lo: f64,
}

impl Sum {
    fn add(&mut self, x: f64) {
        let t = self.hi + x;
        self.lo += if self.hi.abs() >= x.abs() {
            (self.hi - t) + x
        } else {
            (x - t) + self.hi
        };
        self.hi = t;
    }

    fn merge(&mut self, o: Sum) {
        self.add(o.hi);
        self.add(o.lo);
    }

    fn value(self) -> f64 {
        self.hi + self.lo
    }
}

/// Rows with a target, and the sum of their targets.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Stat {
    n: u64,
    sum: Sum,
}

impl Stat {
    fn add(&mut self, y: f64) {
        self.n += 1;
        self.sum.add(y);
    }

    fn merge(&mut self, o: Stat) {
        self.n += o.n;
        self.sum.merge(o.sum);
    }

    fn mean(self) -> f64 {
        self.sum.value() / self.n as f64
    }
}

/// Statistics of some rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// Over every row with a target.
    global: Stat,
    /// Per configured column.
    columns: Vec<ColumnStats<Stat>>,
}

/// Fitted parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fitted {
    /// Rows with a target.
    count: u64,
    /// Their mean target, μ.
    mean: f64,
    /// Per column, in `columns` order.
    columns: Vec<ColumnFit>,
}

/// The fit of one column.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ColumnFit {
    column: String,
    kind: Kind,
    /// Per category, sorted: (category, rows with a target, their mean target).
    categories: Vec<(Key, u64, f64)>,
}

/// Column types the target may have.
const TARGET_TYPES: [DataType; 11] = [
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Float32,
    DataType::Float64,
    DataType::Boolean,
];

/// The targets of a column as float64 (booleans as 0/1), `None` where there is no usable
/// target (null, NaN or infinite).
fn targets(column: &Column, rows: usize) -> Result<Vec<Option<f64>>, PluginError> {
    let values: Vec<f64> = match column.values {
        Values::Bits(_) => (0..rows)
            .map(|i| f64::from(u8::from(column.bool_at(i))))
            .collect(),
        _ => column.f64_values()?.into_owned(),
    };
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, y)| (column.is_valid(i) && y.is_finite()).then_some(y))
        .collect())
}

impl Plugin for TargetEncoder {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "target-encoder",
            env!("CARGO_PKG_VERSION"),
            "category → (n·mean + m·global mean) / (n + m) of a numeric target, fitted on the data",
        )
        .param(ParamSpec::text_list("columns", "utf8 or integer columns to encode").required())
        .param(
            ParamSpec::text(
                "target",
                "numeric (or boolean) column whose mean encodes the categories; read only when fitting",
            )
            .required(),
        )
        .param(
            ParamSpec::float(
                "smoothing",
                "m ≥ 0: weight of the global mean, in rows (0 = the plain category mean)",
            )
            .default(ParamValue::Float(10.0)),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.columns("columns")?;
        let target = params.text("target").unwrap_or_default().to_string();
        if columns.contains(&target) {
            return Err(Params::invalid(
                "target",
                format!("`{target}` is also one of the columns to encode"),
            ));
        }
        let smoothing = params.float("smoothing").unwrap_or(10.0);
        if !(smoothing.is_finite() && smoothing >= 0.0) {
            return Err(Params::invalid(
                "smoothing",
                format!("must be a finite number ≥ 0, not {smoothing}"),
            ));
        }
        Ok(TargetEncoder {
            columns,
            target,
            smoothing,
            encodings: None,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let (_, encodings) = self
            .encodings
            .as_ref()
            .ok_or_else(|| PluginError::new("target-encoder is not fitted"))?;
        let mut plan = Plan::passthrough(input);
        for e in encodings {
            fitted_field(input, &e.column, e.kind)?;
            plan = plan.compute(&e.column, DataType::Float64, false);
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let (mean, encodings) = self
            .encodings
            .as_ref()
            .ok_or_else(|| PluginError::new("target-encoder is not fitted"))?;
        let rows = input.rows as usize;
        let mut out = Vec::with_capacity(encodings.len());
        for (column, e) in input.columns.iter().zip(encodings) {
            let encoded = (0..rows)
                .map(|i| {
                    key_at(column, i)
                        .and_then(|k| e.values.get(k).copied())
                        .unwrap_or(*mean)
                })
                .collect();
            out.push(Column::from_vec::<f64>(
                &column.name,
                DataType::Float64,
                encoded,
                None,
            ));
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

impl Aggregate for TargetEncoder {
    type State = State;
    type Fitted = Fitted;

    fn fit_reads(&self, input: &[Field]) -> Result<Vec<String>, PluginError> {
        let mut reads = category_columns(input, &self.columns)?;
        // The host also asks for the fit's reads before applying saved fitted parameters,
        // to data that need not have the target. So a missing target is not refused here:
        // when fitting, the host itself fails naming the column and the input's columns.
        if let Some(f) = input.iter().find(|f| f.name == self.target) {
            if !TARGET_TYPES.contains(&f.data_type) {
                return Err(PluginError::new(format!(
                    "target column `{}` has type {}; the target must be numeric or boolean",
                    f.name, f.data_type
                ))
                .in_column(&f.name));
            }
        }
        reads.push(self.target.clone());
        Ok(reads)
    }

    fn partial(&self, input: &Batch) -> Result<State, PluginError> {
        let rows = input.rows as usize;
        let (target, columns) = input
            .columns
            .split_last()
            .ok_or_else(|| PluginError::new("a batch without the target column"))?;
        let y = targets(target, rows)?;
        let mut global = Stat::default();
        y.iter().flatten().for_each(|&y| global.add(y));
        let columns = columns
            .iter()
            .map(|column| {
                let mut stats = ColumnStats::<Stat>::empty(column);
                for (i, y) in y.iter().enumerate() {
                    if let (Some(key), Some(y)) = (key_at(column, i), y) {
                        stats.map.entry(key).add(*y);
                    }
                }
                stats
            })
            .collect();
        Ok(State { global, columns })
    }

    fn merge(&self, states: Vec<State>) -> Result<State, PluginError> {
        let mut global = Stat::default();
        let mut columns = Vec::with_capacity(states.len());
        for s in states {
            global.merge(s.global);
            columns.push(s.columns);
        }
        Ok(State {
            global,
            columns: merge_columns(self.columns.len(), columns, |a, b| a.merge(b))?,
        })
    }

    fn finish(&self, state: State) -> Result<Fitted, PluginError> {
        if state.global.n == 0 {
            return Err(PluginError::new(format!(
                "no row has a target value in column `{}` to fit on (all null, NaN or infinite, or no rows)",
                self.target
            ))
            .in_column(&self.target));
        }
        let columns = self
            .columns
            .iter()
            .zip(state.columns)
            .map(|(c, stats)| ColumnFit {
                column: c.clone(),
                kind: stats.kind,
                categories: stats
                    .map
                    .into_sorted()
                    .into_iter()
                    .map(|(k, s)| (k, s.n, s.mean()))
                    .collect(),
            })
            .collect();
        Ok(Fitted {
            count: state.global.n,
            mean: state.global.mean(),
            columns,
        })
    }

    fn set_fitted(&mut self, fitted: Fitted) -> Result<(), PluginError> {
        check_fitted_columns(
            fitted.columns.iter().map(|c| c.column.as_str()),
            &self.columns,
        )?;
        let (mu, m) = (fitted.mean, self.smoothing);
        let mut encodings = Vec::with_capacity(fitted.columns.len());
        for fit in fitted.columns {
            check_keys(
                &fit.column,
                fit.kind,
                fit.categories.iter().map(|(k, _, _)| k),
            )?;
            if let Some((k, _, _)) = fit.categories.iter().find(|(_, n, _)| *n == 0) {
                return Err(PluginError::new(format!(
                    "fitted category `{k}` of column `{}` has no rows",
                    fit.column
                ))
                .in_column(&fit.column));
            }
            let values = fit
                .categories
                .into_iter()
                .map(|(k, n, mean)| {
                    let n = n as f64;
                    (k, (n * mean + m * mu) / (n + m))
                })
                .collect();
            encodings.push(Encoding {
                column: fit.column,
                kind: fit.kind,
                values,
            });
        }
        self.encodings = Some((mu, encodings));
        Ok(())
    }
}

quiver_sdk::export_feature!(TargetEncoder);
