//! `count-encoder`: category → the number of fitted rows holding it (count, or frequency,
//! encoding, as category_encoders' CountEncoder).
//!
//! Categories are the non-null values of utf8 or integer columns.
//!
//! Fit: per column, the exact count of every category and the number of non-null rows N (a hash
//! map per column, merged by adding counts), so the fit does not depend on how the data is
//! partitioned. Nulls are not a category: they are neither counted nor in N.
//!
//! Transform: each column is replaced in place by the count of the row's category (int64), or
//! with `normalize = true` by its share count / N (float64; the shares of the fitted categories
//! sum to 1). A category not seen in the fit gives 0 (0.0). Nulls stay null.

use quiver_sdk::categories::{
    self, category_columns, check_keys, count_categories, fitted_field, key_at, merge_columns, Key,
    Kind,
};
use quiver_sdk::prelude::*;
use quiver_sdk::ColumnFit;
use serde::{Deserialize, Serialize};

// Category maps with a fast hash (see `categories::KeyMap`).
type KeyMap<V> = categories::KeyMap<V, rustc_hash::FxBuildHasher>;
type ColumnStats<V> = categories::ColumnStats<V, rustc_hash::FxBuildHasher>;

/// The plugin: its parameters and, once fitted, the counts.
struct CountEncoder {
    columns: Vec<String>,
    normalize: bool,
    /// Per configured column, once fitted.
    encodings: Option<Vec<Encoding>>,
}

/// How one column is encoded, built from its fitted parameters.
struct Encoding {
    column: String,
    kind: Kind,
    counts: KeyMap<u64>,
    /// Non-null rows of the fit (N).
    total: u64,
}

/// The fit of one column (after its name).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counts {
    kind: Kind,
    /// Non-null rows of the fit: the sum of the counts.
    total: u64,
    /// Every category with its count, sorted by category.
    counts: Vec<(Key, u64)>,
}

impl CountEncoder {
    fn encodings(&self) -> Result<&[Encoding], PluginError> {
        self.encodings
            .as_deref()
            .ok_or_else(|| PluginError::new("count-encoder is not fitted"))
    }

    fn output_type(&self) -> DataType {
        if self.normalize {
            DataType::Float64
        } else {
            DataType::Int64
        }
    }
}

impl Plugin for CountEncoder {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "count-encoder",
            env!("CARGO_PKG_VERSION"),
            "category → its count in the fitted data (int64), or its share with normalize (float64)",
        )
        .param(ParamSpec::text_list("columns", "utf8 or integer columns to encode").required())
        .param(
            ParamSpec::boolean(
                "normalize",
                "give the share count / non-null rows (float64) instead of the count",
            )
            .default(ParamValue::Boolean(false)),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        Ok(CountEncoder {
            columns: params.columns("columns")?,
            normalize: params.boolean("normalize").unwrap_or(false),
            encodings: None,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for e in self.encodings()? {
            let field = fitted_field(input, &e.column, e.kind)?;
            plan = plan.compute(&e.column, self.output_type(), field.nullable);
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let encodings = self.encodings()?;
        let rows = input.rows as usize;
        let mut out = Vec::with_capacity(encodings.len());
        for (column, e) in input.columns.into_iter().zip(encodings) {
            // Nulls stay null (the validity is kept), so the 0 under them is never read.
            let counts =
                (0..rows).map(|i| key_at(&column, i).and_then(|k| e.counts.get(k).copied()));
            let encoded = if self.normalize {
                // With no fitted rows every category is unknown: its share is 0.
                let n = e.total.max(1) as f64;
                let shares = counts.map(|c| c.unwrap_or(0) as f64 / n).collect();
                Column::from_vec::<f64>(&column.name, DataType::Float64, shares, column.validity)
            } else {
                // A count of rows always fits in i64.
                let counts = counts.map(|c| c.unwrap_or(0) as i64).collect();
                Column::from_vec::<i64>(&column.name, DataType::Int64, counts, column.validity)
            };
            out.push(encoded);
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

impl Aggregate for CountEncoder {
    /// Per column: the count of every category.
    type State = Vec<ColumnStats<u64>>;
    type Fitted = PerColumn<Counts>;

    fn fit_reads(&self, input: &[Field]) -> Result<Vec<String>, PluginError> {
        category_columns(input, &self.columns)
    }

    fn partial(&self, input: &Batch) -> Result<Self::State, PluginError> {
        Ok(count_categories(input))
    }

    fn merge(&self, states: Vec<Self::State>) -> Result<Self::State, PluginError> {
        merge_columns(self.columns.len(), states, |a, b| *a += b)
    }

    fn finish(&self, state: Self::State) -> Result<Self::Fitted, PluginError> {
        PerColumn::finish(&self.columns, state, |_, stats| {
            let counts = stats.map.into_sorted();
            Ok(Counts {
                kind: stats.kind,
                total: counts.iter().map(|(_, n)| n).sum(),
                counts,
            })
        })
    }

    fn set_fitted(&mut self, fitted: Self::Fitted) -> Result<(), PluginError> {
        fitted.check(&self.columns)?;
        let mut encodings = Vec::with_capacity(fitted.columns.len());
        for ColumnFit { column, fit } in fitted.columns {
            check_keys(&column, fit.kind, fit.counts.iter().map(|(k, _)| k))?;
            let sum: u64 = fit.counts.iter().map(|(_, n)| n).sum();
            if sum != fit.total {
                return Err(PluginError::new(format!(
                    "the fitted counts of column `{column}` add up to {sum}, not to its total {}",
                    fit.total
                ))
                .in_column(&column));
            }
            encodings.push(Encoding {
                counts: fit.counts.into_iter().collect(),
                column,
                kind: fit.kind,
                total: fit.total,
            });
        }
        self.encodings = Some(encodings);
        Ok(())
    }
}

quiver_sdk::export_feature!(CountEncoder);
