//! `min-max-scaler`: x → (x − min) / (max − min) · (hi − lo) + lo, with min and max fitted on
//! the data (scikit-learn's `MinMaxScaler` with `feature_range = (lo, hi)`).
//!
//! Parameters: `columns` (numeric columns to scale), `min` = lo (default 0) and `max` = hi
//! (default 1), the target range; lo < hi, both finite, hi − lo finite.
//!
//! Fit: per column, the minimum and maximum of the non-null, non-NaN values. Min and max are
//! exact and order-independent, so the fit does not depend on the partitioning at all.
//! Infinite values are refused (an error naming the column and row), as scikit-learn refuses
//! them: they would make every other value collapse to one end.
//!
//! Transform: every listed column becomes float64, `(x − min) · scale + lo` with
//! `scale = (hi − lo) / (max − min)`. When max = min (a constant column) the range counts as 1,
//! as scikit-learn's `_handle_zeros_in_scale` does, so the column becomes
//! `(x − min)·(hi − lo) + lo`, i.e. lo for the fitted constant. A column with no values at all
//! fits min = max = 0 (so the transform is x·(hi − lo) + lo). Values outside the fitted range
//! map outside [lo, hi] (no clipping). Nulls stay null; NaN stays NaN. The differences are
//! computed on halves (x/2 − min/2): that is exact for normal floats (so the result is the
//! same), and cannot overflow even when max − min exceeds f64::MAX (min = −1e308, max = 1e308).

use quiver_sdk::prelude::*;
use serde::{Deserialize, Serialize};

const NAME: &str = "min-max-scaler";

struct MinMaxScaler {
    columns: Vec<String>,
    lo: f64,
    hi: f64,
    fitted: Option<PerColumn<ColumnFit>>,
}

/// Count, minimum and maximum of one column's values (min/max meaningless when count is 0).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Range {
    count: u64,
    min: f64,
    max: f64,
}

impl Range {
    const EMPTY: Range = Range {
        count: 0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    fn of(column: &Column, rows: usize) -> Result<Range, PluginError> {
        let values = column.f64_values()?;
        let mut r = Range::EMPTY;
        for (i, &x) in values.iter().enumerate().take(rows) {
            if !column.is_valid(i) || x.is_nan() {
                continue;
            }
            if x.is_infinite() {
                return Err(infinite(&column.name, i));
            }
            r.count += 1;
            r.min = r.min.min(x);
            r.max = r.max.max(x);
        }
        Ok(r)
    }

    fn merge(self, o: Range) -> Range {
        Range {
            count: self.count + o.count,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
}

fn infinite(column: &str, row: usize) -> PluginError {
    PluginError::new(format!(
        "column `{column}` holds an infinite value; {NAME} fits on finite values only"
    ))
    .in_column(column)
    .at_row(row)
}

/// What was fitted for one column (after its name).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ColumnFit {
    /// Number of values seen (non-null, non-NaN).
    count: u64,
    /// Smallest value (0 if there was none).
    min: f64,
    /// Largest value (0 if there was none).
    max: f64,
}

impl Plugin for MinMaxScaler {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "x → (x − min) / (max − min) · (hi − lo) + lo with min and max fitted on the data",
        )
        .param(ParamSpec::text_list("columns", "numeric columns to scale").required())
        .param(
            ParamSpec::float("min", "lower end lo of the target range")
                .default(ParamValue::Float(0.0)),
        )
        .param(
            ParamSpec::float("max", "upper end hi of the target range")
                .default(ParamValue::Float(1.0)),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.columns("columns")?;
        let lo = params.float("min").unwrap_or(0.0);
        let hi = params.float("max").unwrap_or(1.0);
        if !(lo.is_finite() && hi.is_finite() && (hi - lo).is_finite()) {
            return Err(Params::invalid(
                "min",
                format!("the target range [{lo}, {hi}] must be finite"),
            ));
        }
        if lo >= hi {
            return Err(Params::invalid(
                "min",
                format!("`min` ({lo}) must be smaller than `max` ({hi})"),
            ));
        }
        Ok(MinMaxScaler {
            columns,
            lo,
            hi,
            fitted: None,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        Plan::passthrough(input).compute_f64(input, &self.columns)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let fitted = self
            .fitted
            .as_ref()
            .ok_or_else(|| PluginError::new(format!("{NAME} is not fitted")))?;
        let (lo, hi) = (self.lo, self.hi);
        fitted.map_f64(input, |fit| {
            let half_min = fit.min * 0.5;
            let half_range = fit.max * 0.5 - half_min;
            // Multiplies a half-difference, so a zero range (counted as 1) doubles (hi − lo).
            let half_scale = if half_range == 0.0 {
                2.0 * (hi - lo)
            } else {
                (hi - lo) / half_range
            };
            move |x: f64| (x * 0.5 - half_min) * half_scale + lo
        })
    }
}

impl Aggregate for MinMaxScaler {
    type State = Vec<Range>;
    type Fitted = PerColumn<ColumnFit>;

    fn fit_reads(&self, input: &[Field]) -> Result<Vec<String>, PluginError> {
        expect_numeric(input, &self.columns)
    }

    fn partial(&self, input: &Batch) -> Result<Vec<Range>, PluginError> {
        let rows = input.rows as usize;
        input.columns.iter().map(|c| Range::of(c, rows)).collect()
    }

    fn merge(&self, states: Vec<Vec<Range>>) -> Result<Vec<Range>, PluginError> {
        merge_columnwise(
            states,
            &self.columns,
            || Range::EMPTY,
            |a, s| {
                *a = a.merge(s);
                Ok(())
            },
        )
    }

    fn finish(&self, state: Vec<Range>) -> Result<Self::Fitted, PluginError> {
        PerColumn::finish(&self.columns, state, |_, r| {
            let (min, max) = if r.count == 0 {
                (0.0, 0.0)
            } else {
                (r.min, r.max)
            };
            Ok(ColumnFit {
                count: r.count,
                min,
                max,
            })
        })
    }

    fn set_fitted(&mut self, fitted: Self::Fitted) -> Result<(), PluginError> {
        fitted.check(&self.columns)?;
        let usable = |f: &ColumnFit| f.min.is_finite() && f.max.is_finite() && f.min <= f.max;
        if let Some(c) = fitted.columns.iter().find(|c| !usable(&c.fit)) {
            return Err(PluginError::new(format!(
                "fitted range [{}, {}] is not a finite range",
                c.fit.min, c.fit.max
            ))
            .in_column(&c.column));
        }
        self.fitted = Some(fitted);
        Ok(())
    }
}

quiver_sdk::export_feature!(MinMaxScaler);
