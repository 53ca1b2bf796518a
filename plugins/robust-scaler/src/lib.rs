//! `robust-scaler`: x → (x − median) / (q75 − q25), fitted on the data (scikit-learn's
//! `RobustScaler` with the default `quantile_range = (25, 75)`).
//!
//! Parameters: `columns` (numeric columns to scale), `with-centering` (subtract the median,
//! default true) and `with-scaling` (divide by the interquartile range, default true).
//!
//! Fit: per column, a [`QuantileSummary`] of the non-null, non-NaN values, merged across
//! batches and partitions. Quantiles use linear interpolation between closest ranks (numpy's
//! default, what scikit-learn gets from `np.nanpercentile`): with the n sorted values
//! x₍₀₎ ≤ … ≤ x₍ₙ₋₁₎ and h = q·(n − 1), Q(q) = x₍⌊h⌋₎ + (h − ⌊h⌋)·(x₍⌊h⌋+1₎ − x₍⌊h⌋₎); the
//! median is Q(0.5), the IQR Q(0.75) − Q(0.25). While a column has at most 100 000 distinct
//! values (whatever its number of rows) the quantiles are exact and the fit does not depend on
//! the partitioning at all; beyond, they come from a DDSketch with relative accuracy α = 0.001
//! (each quantile within α of the true one, see `quiver_sdk::quantile`), still independent of
//! the partitioning (the fitted `exact` field says which). Infinite values are refused (an error naming the column and row), as
//! scikit-learn refuses them.
//!
//! Transform: every listed column becomes float64, (x − center) / scale, where center is the
//! median (0 without centering) and scale the IQR (1 without scaling). An IQR of 0 scales by 1,
//! as scikit-learn's `_handle_zeros_in_scale` does, so a constant column becomes 0. A column
//! with no values fits center 0 and scale 1 (the values pass unchanged, as float64). Nulls stay
//! null; NaN stays NaN.

use quiver_sdk::prelude::*;
use quiver_sdk::quantile::QuantileSummary;
use serde::{Deserialize, Serialize};

const NAME: &str = "robust-scaler";

struct RobustScaler {
    columns: Vec<String>,
    with_centering: bool,
    with_scaling: bool,
    fitted: Option<PerColumn<ColumnFit>>,
}

/// What was fitted for one column (after its name).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ColumnFit {
    /// Number of values seen (non-null, non-NaN).
    count: u64,
    /// Whether the quantiles are exact (at most 100 000 distinct values) rather than sketch
    /// estimates.
    exact: bool,
    /// Subtracted: the median, or 0 (without centering or without values).
    center: f64,
    /// Divided by: q75 − q25, or 1 (without scaling, without values, or an IQR of 0).
    scale: f64,
}

/// The values of one column that the summary takes: valid and not NaN.
fn summarise(column: &Column, rows: usize) -> Result<QuantileSummary, PluginError> {
    let values = column.f64_values()?;
    if let Some(i) = (0..rows).find(|&i| column.is_valid(i) && values[i].is_infinite()) {
        return Err(PluginError::new(format!(
            "column `{}` holds an infinite value; {NAME} fits on finite values only",
            column.name
        ))
        .in_column(&column.name)
        .at_row(i));
    }
    // NaN is dropped by the summary itself.
    let mut s = QuantileSummary::new();
    s.extend((0..rows).filter(|&i| column.is_valid(i)).map(|i| values[i]));
    Ok(s)
}

impl Plugin for RobustScaler {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "x → (x − median) / (q75 − q25) with the quartiles fitted on the data",
        )
        .param(ParamSpec::text_list("columns", "numeric columns to scale").required())
        .param(
            ParamSpec::boolean("with-centering", "subtract the median")
                .default(ParamValue::Boolean(true)),
        )
        .param(
            ParamSpec::boolean(
                "with-scaling",
                "divide by the interquartile range q75 − q25",
            )
            .default(ParamValue::Boolean(true)),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        Ok(RobustScaler {
            columns: params.columns("columns")?,
            with_centering: params.boolean("with-centering").unwrap_or(true),
            with_scaling: params.boolean("with-scaling").unwrap_or(true),
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
        fitted.map_f64(input, |fit| {
            let (center, scale) = (fit.center, fit.scale);
            move |x: f64| (x - center) / scale
        })
    }
}

impl Aggregate for RobustScaler {
    type State = Vec<QuantileSummary>;
    type Fitted = PerColumn<ColumnFit>;

    fn fit_reads(&self, input: &[Field]) -> Result<Vec<String>, PluginError> {
        expect_numeric(input, &self.columns)
    }

    fn partial(&self, input: &Batch) -> Result<Vec<QuantileSummary>, PluginError> {
        let rows = input.rows as usize;
        input.columns.iter().map(|c| summarise(c, rows)).collect()
    }

    fn merge(
        &self,
        states: Vec<Vec<QuantileSummary>>,
    ) -> Result<Vec<QuantileSummary>, PluginError> {
        merge_columnwise(states, &self.columns, QuantileSummary::new, |a, s| {
            a.merge(&s).map_err(|e| e.to_string())
        })
    }

    fn finish(&self, state: Vec<QuantileSummary>) -> Result<Self::Fitted, PluginError> {
        PerColumn::finish(&self.columns, state, |_, s| {
            let q = |q: f64| s.quantile(q);
            let center = match q(0.5) {
                Some(m) if self.with_centering => m,
                _ => 0.0,
            };
            let scale = match (q(0.25), q(0.75)) {
                (Some(a), Some(b)) if self.with_scaling && b - a != 0.0 => b - a,
                _ => 1.0,
            };
            Ok(ColumnFit {
                count: s.count(),
                exact: s.is_exact(),
                center,
                scale,
            })
        })
    }

    fn set_fitted(&mut self, fitted: Self::Fitted) -> Result<(), PluginError> {
        fitted.check(&self.columns)?;
        let usable = |f: &ColumnFit| f.center.is_finite() && f.scale.is_finite() && f.scale != 0.0;
        if let Some(c) = fitted.columns.iter().find(|c| !usable(&c.fit)) {
            return Err(PluginError::new(format!(
                "fitted center {} and scale {} are not usable (finite, scale not 0)",
                c.fit.center, c.fit.scale
            ))
            .in_column(&c.column));
        }
        self.fitted = Some(fitted);
        Ok(())
    }
}

quiver_sdk::export_feature!(RobustScaler);
