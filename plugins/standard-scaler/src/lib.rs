//! `standard-scaler`: x → (x − mean) / std, fitted on the data (scikit-learn's StandardScaler).
//!
//! Fit: per column, the count, mean and population standard deviation (ddof = 0) of the
//! non-null, non-NaN values, computed per batch in two passes and merged with Chan et al.'s
//! parallel formula, so the result does not depend on how the data is partitioned (beyond
//! floating-point rounding, ~1e-15 relative). A standard deviation of 0 (a constant column)
//! scales by 1, as scikit-learn does. A column with no values fits mean 0 and scale 1.
//! Transform: numeric columns become float64; nulls stay null.

use quiver_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct StandardScaler {
    columns: Vec<String>,
    with_mean: bool,
    with_std: bool,
    fitted: Option<PerColumn<ColumnFit>>,
}

/// Count, mean and sum of squared deviations of one column's values.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn of(column: &Column, rows: usize) -> Result<Moments, PluginError> {
        let values = column.f64_values()?;
        let valid = |i: usize| column.is_valid(i) && !values[i].is_nan();
        let (mut n, mut sum) = (0u64, 0.0);
        for i in (0..rows).filter(|&i| valid(i)) {
            n += 1;
            sum += values[i];
        }
        if n == 0 {
            return Ok(Moments::default());
        }
        let mean = sum / n as f64;
        let m2 = (0..rows)
            .filter(|&i| valid(i))
            .map(|i| (values[i] - mean).powi(2))
            .sum();
        Ok(Moments { n, mean, m2 })
    }

    /// Chan, Golub & LeVeque's pairwise combination.
    fn merge(self, o: Moments) -> Moments {
        if self.n == 0 {
            return o;
        }
        if o.n == 0 {
            return self;
        }
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        let mean = self.mean + delta * o.n as f64 / n as f64;
        let m2 = self.m2 + o.m2 + delta * delta * (self.n as f64 * o.n as f64 / n as f64);
        Moments { n, mean, m2 }
    }
}

/// What was fitted for one column (after its name).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ColumnFit {
    count: u64,
    mean: f64,
    /// Population standard deviation.
    std: f64,
}

impl Plugin for StandardScaler {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "standard-scaler",
            env!("CARGO_PKG_VERSION"),
            "x → (x − mean) / std with mean and population std fitted on the data",
        )
        .param(ParamSpec::text_list("columns", "numeric columns to scale").required())
        .param(
            ParamSpec::boolean("with-mean", "subtract the mean").default(ParamValue::Boolean(true)),
        )
        .param(
            ParamSpec::boolean("with-std", "divide by the standard deviation")
                .default(ParamValue::Boolean(true)),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        Ok(StandardScaler {
            columns: params.columns("columns")?,
            with_mean: params.boolean("with-mean").unwrap_or(true),
            with_std: params.boolean("with-std").unwrap_or(true),
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
            .ok_or_else(|| PluginError::new("standard-scaler is not fitted"))?;
        let (with_mean, with_std) = (self.with_mean, self.with_std);
        fitted.map_f64(input, |fit| {
            let mean = if with_mean { fit.mean } else { 0.0 };
            let scale = if with_std && fit.std != 0.0 {
                fit.std
            } else {
                1.0
            };
            move |x: f64| (x - mean) / scale
        })
    }
}

impl Aggregate for StandardScaler {
    type State = Vec<Moments>;
    type Fitted = PerColumn<ColumnFit>;

    fn fit_reads(&self, input: &[Field]) -> Result<Vec<String>, PluginError> {
        expect_numeric(input, &self.columns)
    }

    fn partial(&self, input: &Batch) -> Result<Vec<Moments>, PluginError> {
        let rows = input.rows as usize;
        input.columns.iter().map(|c| Moments::of(c, rows)).collect()
    }

    fn merge(&self, states: Vec<Vec<Moments>>) -> Result<Vec<Moments>, PluginError> {
        merge_columnwise(states, &self.columns, Moments::default, |a, s| {
            *a = a.merge(s);
            Ok(())
        })
    }

    fn finish(&self, state: Vec<Moments>) -> Result<Self::Fitted, PluginError> {
        PerColumn::finish(&self.columns, state, |_, m| {
            Ok(ColumnFit {
                count: m.n,
                mean: m.mean,
                std: if m.n == 0 {
                    0.0
                } else {
                    (m.m2 / m.n as f64).max(0.0).sqrt()
                },
            })
        })
    }

    fn set_fitted(&mut self, fitted: Self::Fitted) -> Result<(), PluginError> {
        fitted.check(&self.columns)?;
        self.fitted = Some(fitted);
        Ok(())
    }
}

quiver_sdk::export_feature!(StandardScaler);
