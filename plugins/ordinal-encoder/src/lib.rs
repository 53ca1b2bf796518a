//! `ordinal-encoder`: category → int32 code, the category's position in the sorted vocabulary
//! fitted on the data (scikit-learn's OrdinalEncoder).
//!
//! Categories are the non-null values of utf8 or integer columns.
//!
//! Fit: per column, the exact set of categories seen (a hash set per column, merged by union),
//! so the fit does not depend on how the data is partitioned. The vocabulary is that set sorted
//! by value (text by Unicode code point, integers numerically); the i-th category's code is i
//! (0-based).
//!
//! Transform: each column is replaced in place by an int32 column of codes. Nulls stay null.
//! Unknown categories (not seen in the fit): `handle-unknown = "use-encoded-value"` (default)
//! gives `unknown-value` (default −1); `"error"` fails, naming the column, the row (within its
//! batch) and the value. `unknown-value` must fit in int32 and must not be a code of the
//! vocabulary (0 ≤ value < number of categories), or unknown and known categories would be
//! confused; this is checked when the fit is set.

use quiver_sdk::categories::{
    self, category_columns, check_keys, fitted_field, key_at, merge_columns, unknown_category, Key,
    Kind,
};
use quiver_sdk::prelude::*;
use quiver_sdk::ColumnFit;
use serde::{Deserialize, Serialize};

// Category maps with a fast hash (see `categories::KeyMap`).
type KeyMap<V> = categories::KeyMap<V, rustc_hash::FxBuildHasher>;
type ColumnStats<V> = categories::ColumnStats<V, rustc_hash::FxBuildHasher>;

/// The plugin: its parameters and, once fitted, the codes.
struct OrdinalEncoder {
    columns: Vec<String>,
    /// The code of unknown categories, or `None` to fail on them.
    unknown_value: Option<i32>,
    /// Per configured column, once fitted.
    encodings: Option<Vec<Encoding>>,
}

/// How one column is encoded, built from its fitted parameters.
struct Encoding {
    column: String,
    kind: Kind,
    codes: KeyMap<i32>,
}

/// The fit of one column (after its name).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Vocabulary {
    kind: Kind,
    /// The vocabulary, sorted: category i has code i.
    categories: Vec<Key>,
}

impl OrdinalEncoder {
    fn encodings(&self) -> Result<&[Encoding], PluginError> {
        self.encodings
            .as_deref()
            .ok_or_else(|| PluginError::new("ordinal-encoder is not fitted"))
    }
}

impl Plugin for OrdinalEncoder {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "ordinal-encoder",
            env!("CARGO_PKG_VERSION"),
            "category → int32 code: its position in the sorted vocabulary fitted on the data",
        )
        .param(ParamSpec::text_list("columns", "utf8 or integer columns to encode").required())
        .param(
            ParamSpec::text(
                "handle-unknown",
                "categories not seen when fitted: use-encoded-value (unknown-value) or error",
            )
            .default(ParamValue::Text("use-encoded-value".into())),
        )
        .param(
            ParamSpec::int(
                "unknown-value",
                "code of unknown categories (int32, not a code in use)",
            )
            .default(ParamValue::Int(-1)),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.columns("columns")?;
        let value = params.int("unknown-value").unwrap_or(-1);
        let value = i32::try_from(value).map_err(|_| {
            Params::invalid("unknown-value", format!("{value} does not fit in int32"))
        })?;
        let unknown_value = params.one_of(
            "handle-unknown",
            &[("use-encoded-value", Some(value)), ("error", None)],
        )?;
        Ok(OrdinalEncoder {
            columns,
            unknown_value,
            encodings: None,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for e in self.encodings()? {
            let field = fitted_field(input, &e.column, e.kind)?;
            plan = plan.compute(&e.column, DataType::Int32, field.nullable);
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let encodings = self.encodings()?;
        let rows = input.rows as usize;
        let mut out = Vec::with_capacity(encodings.len());
        for (column, e) in input.columns.into_iter().zip(encodings) {
            let mut codes = Vec::with_capacity(rows);
            for i in 0..rows {
                codes.push(match key_at(&column, i) {
                    // Nulls stay null: the value under a null is never read.
                    None => 0,
                    Some(key) => match (e.codes.get(key), self.unknown_value) {
                        (Some(&code), _) => code,
                        (None, Some(v)) => v,
                        (None, None) => return Err(unknown_category(&e.column, key, i)),
                    },
                });
            }
            out.push(Column::from_vec(
                &column.name,
                DataType::Int32,
                codes,
                column.validity,
            ));
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

impl Aggregate for OrdinalEncoder {
    /// Per column: the set of categories.
    type State = Vec<ColumnStats<()>>;
    type Fitted = PerColumn<Vocabulary>;

    fn fit_reads(&self, input: &[Field]) -> Result<Vec<String>, PluginError> {
        category_columns(input, &self.columns)
    }

    fn partial(&self, input: &Batch) -> Result<Self::State, PluginError> {
        let rows = input.rows as usize;
        let seen = |column| ColumnStats::of(column, rows, |_, _| ());
        Ok(input.columns.iter().map(seen).collect())
    }

    fn merge(&self, states: Vec<Self::State>) -> Result<Self::State, PluginError> {
        merge_columns(self.columns.len(), states, |_, _| ())
    }

    fn finish(&self, state: Self::State) -> Result<Self::Fitted, PluginError> {
        PerColumn::finish(&self.columns, state, |_, seen| {
            Ok(Vocabulary {
                kind: seen.kind,
                categories: seen
                    .map
                    .into_sorted()
                    .into_iter()
                    .map(|(k, ())| k)
                    .collect(),
            })
        })
    }

    fn set_fitted(&mut self, fitted: Self::Fitted) -> Result<(), PluginError> {
        fitted.check(&self.columns)?;
        let mut encodings = Vec::with_capacity(fitted.columns.len());
        for ColumnFit { column, fit } in fitted.columns {
            check_keys(&column, fit.kind, &fit.categories)?;
            let n = fit.categories.len();
            if n > i32::MAX as usize {
                return Err(PluginError::new(format!(
                    "column `{column}` has {n} categories, more than int32 codes can number"
                ))
                .in_column(&column));
            }
            if let Some(v) = self.unknown_value.filter(|&v| v >= 0 && (v as usize) < n) {
                return Err(PluginError::new(format!(
                    "unknown-value {v} is the code of category `{}` of column `{column}` \
                     (codes 0 to {}); choose a negative value or at least {n}",
                    fit.categories[v as usize],
                    n - 1
                ))
                .in_column(&column));
            }
            encodings.push(Encoding {
                codes: fit.categories.into_iter().zip(0..).collect(),
                column,
                kind: fit.kind,
            });
        }
        self.encodings = Some(encodings);
        Ok(())
    }
}

quiver_sdk::export_feature!(OrdinalEncoder);
