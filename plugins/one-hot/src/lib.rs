//! `one-hot`: one indicator column per category, fitted on the data (scikit-learn's
//! OneHotEncoder).
//!
//! Categories are the non-null values of utf8 or integer columns.
//!
//! Fit: per column, the exact count of every category (a hash map per column, merged by adding
//! counts), so the fit does not depend on how the data is partitioned. The vocabulary is every
//! category seen, sorted by value (text by Unicode code point, integers numerically). With
//! `max-categories = k`, only the k most frequent categories are kept (ties: the smaller value
//! first); the others are *infrequent*.
//!
//! Transform: column `c` becomes one **boolean** column `c=<value>` per kept category, in
//! vocabulary order, true where the row holds that category (integers are named by their
//! decimal text, e.g. `c=-3`). Booleans rather than 0/1 numbers: one bit per row, and
//! unambiguous indicators; cast them if a model wants numbers. A column `c=__other__` follows
//! when some categories were infrequent or `handle-unknown = "other"`; it is true for
//! infrequent categories (always) and for unknown ones (with `other`). Every output row has at
//! most one true indicator per input column, and the indicators are never null.
//!
//! Unknown categories (not seen in the fit): `handle-unknown = "ignore"` (default) gives all
//! false; `"error"` fails, naming the column, the row (within its batch) and the value;
//! `"other"` sets `c=__other__`. Nulls are not a category: a null row gives all false.
//!
//! The indicator columns take the input column's place in the output; with
//! `drop-input = false` the input column stays and the indicators follow it. An indicator name
//! that is already an input column is an error (rather than silently replacing that column).
//! The output schema depends on the fitted vocabulary, which is why `prepare` needs the fit.

use quiver_sdk::categories::{
    self, category_columns, check_keys, count_categories, fitted_field, key_at, merge_columns,
    unknown_category, Key, Kind,
};
use quiver_sdk::prelude::*;
use quiver_sdk::ColumnFit;
use serde::{Deserialize, Serialize};

// Category maps with a fast hash (see `categories::KeyMap`).
type KeyMap<V> = categories::KeyMap<V, rustc_hash::FxBuildHasher>;
type ColumnStats<V> = categories::ColumnStats<V, rustc_hash::FxBuildHasher>;

/// Suffix of the indicator of infrequent (and, with `handle-unknown = "other"`, unknown)
/// categories.
const OTHER: &str = "__other__";

/// What to do with a category the fit did not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unknown {
    /// All indicators false.
    Ignore,
    /// Fail.
    Error,
    /// The `__other__` indicator.
    Other,
}

/// The plugin: its parameters and, once fitted, the encodings.
struct OneHot {
    columns: Vec<String>,
    max_categories: Option<usize>,
    unknown: Unknown,
    drop_input: bool,
    /// Per configured column, once fitted.
    encodings: Option<Vec<Encoding>>,
}

/// How one column is encoded, built from its fitted parameters.
struct Encoding {
    column: String,
    kind: Kind,
    /// Output column names, in output order: kept categories, then `__other__` if any.
    outputs: Vec<String>,
    /// Category → index in `outputs` (infrequent categories → the `__other__` index).
    slots: KeyMap<usize>,
    /// Index of the `__other__` output, if there is one.
    other: Option<usize>,
}

/// The fit of one column (after its name).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Vocabulary {
    kind: Kind,
    /// Kept categories, sorted: one indicator column each.
    categories: Vec<Key>,
    /// Categories seen but not kept (beyond `max-categories`), sorted.
    infrequent: Vec<Key>,
}

impl OneHot {
    fn encoding(&self, fit: ColumnFit<Vocabulary>) -> Result<Encoding, PluginError> {
        let ColumnFit { column, fit } = fit;
        check_keys(
            &column,
            fit.kind,
            fit.categories.iter().chain(&fit.infrequent),
        )?;
        let mut outputs: Vec<String> = fit
            .categories
            .iter()
            .map(|k| format!("{column}={k}"))
            .collect();
        let other = (!fit.infrequent.is_empty() || self.unknown == Unknown::Other).then(|| {
            outputs.push(format!("{column}={OTHER}"));
            outputs.len() - 1
        });
        let mut slots: KeyMap<usize> = fit.categories.into_iter().zip(0..).collect();
        if let Some(o) = other {
            for k in fit.infrequent {
                slots.insert(k, o);
            }
        }
        Ok(Encoding {
            column,
            kind: fit.kind,
            outputs,
            slots,
            other,
        })
    }

    fn encodings(&self) -> Result<&[Encoding], PluginError> {
        self.encodings
            .as_deref()
            .ok_or_else(|| PluginError::new("one-hot is not fitted"))
    }
}

impl Plugin for OneHot {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "one-hot",
            env!("CARGO_PKG_VERSION"),
            "one boolean indicator column <column>=<value> per category, vocabulary fitted on the data",
        )
        .param(ParamSpec::text_list("columns", "utf8 or integer columns to encode").required())
        .param(ParamSpec::int(
            "max-categories",
            "keep only the most frequent categories (ties: smaller value); the rest go to <column>=__other__",
        ))
        .param(
            ParamSpec::text(
                "handle-unknown",
                "categories not seen when fitted: ignore (all false), error, or other (<column>=__other__)",
            )
            .default(ParamValue::Text("ignore".into())),
        )
        .param(
            ParamSpec::boolean("drop-input", "drop the encoded input columns")
                .default(ParamValue::Boolean(true)),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.columns("columns")?;
        let max_categories = match params.int("max-categories") {
            None => None,
            Some(k) if k >= 1 => Some(usize::try_from(k).unwrap_or(usize::MAX)),
            Some(k) => {
                return Err(Params::invalid(
                    "max-categories",
                    format!("must be at least 1, not {k}"),
                ))
            }
        };
        let unknown = params.one_of(
            "handle-unknown",
            &[
                ("ignore", Unknown::Ignore),
                ("error", Unknown::Error),
                ("other", Unknown::Other),
            ],
        )?;
        Ok(OneHot {
            columns,
            max_categories,
            unknown,
            drop_input: params.boolean("drop-input").unwrap_or(true),
            encodings: None,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let encodings = self.encodings()?;
        for e in encodings {
            fitted_field(input, &e.column, e.kind)?;
        }
        // Built by hand rather than with `Plan::computed`, which appends new columns at the end
        // and replaces an existing column of the same name: here the indicators take the input
        // column's place, and a clash with an input column is refused.
        let mut output = Vec::with_capacity(input.len());
        for field in input {
            let encoding = encodings.iter().find(|e| e.column == field.name);
            if encoding.is_none() || !self.drop_input {
                output.push(OutputField {
                    name: field.name.clone(),
                    data_type: field.data_type.clone(),
                    nullable: field.nullable,
                    source: OutputSource::Passthrough(field.name.clone()),
                });
            }
            for name in encoding.iter().flat_map(|e| &e.outputs) {
                output.push(OutputField {
                    name: name.clone(),
                    data_type: DataType::Boolean,
                    nullable: false,
                    source: OutputSource::Computed,
                });
            }
        }
        for (i, f) in output.iter().enumerate() {
            if output[..i].iter().any(|g| g.name == f.name) {
                let clash = output.iter().filter(|g| g.name == f.name).find_map(|g| {
                    encodings
                        .iter()
                        .find(|e| e.outputs.contains(&g.name))
                        .map(|e| e.column.as_str())
                });
                return Err(PluginError::new(format!(
                    "output column `{}` (an indicator of column `{}`) would appear twice: \
                     the input already has a column of that name, or two categories name it",
                    f.name,
                    clash.unwrap_or("?")
                ))
                .in_column(clash.unwrap_or(&f.name)));
            }
        }
        Ok(Plan {
            reads: self.columns.clone(),
            output,
        })
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let encodings = self.encodings()?;
        let rows = input.rows as usize;
        let mut out = Vec::new();
        for (column, e) in input.columns.iter().zip(encodings) {
            let mut bits: Vec<BitmapBuilder> = e
                .outputs
                .iter()
                .map(|_| BitmapBuilder::filled(rows, false))
                .collect();
            for i in 0..rows {
                let Some(key) = key_at(column, i) else {
                    continue;
                };
                let slot = match (e.slots.get(key), self.unknown) {
                    (Some(&s), _) => Some(s),
                    (None, Unknown::Ignore) => None,
                    (None, Unknown::Other) => e.other,
                    (None, Unknown::Error) => return Err(unknown_category(&e.column, key, i)),
                };
                if let Some(s) = slot {
                    bits[s].set(i, true);
                }
            }
            out.extend(
                e.outputs.iter().zip(bits).map(|(name, b)| {
                    Column::new(name, DataType::Boolean, Values::Bits(b.finish()))
                }),
            );
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

impl Aggregate for OneHot {
    /// Per column: the count of every category.
    type State = Vec<ColumnStats<u64>>;
    type Fitted = PerColumn<Vocabulary>;

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
        PerColumn::finish(&self.columns, state, |_, counts| {
            let kind = counts.kind;
            let mut counted = counts.map.into_sorted();
            let mut infrequent = Vec::new();
            if let Some(k) = self.max_categories.filter(|&k| k < counted.len()) {
                // Most frequent first; `counted` is sorted by value, and the sort is stable,
                // so equal counts keep the smaller value first.
                counted.sort_by_key(|c| std::cmp::Reverse(c.1));
                infrequent = counted.split_off(k).into_iter().map(|(k, _)| k).collect();
                infrequent.sort_unstable();
                counted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            }
            Ok(Vocabulary {
                kind,
                categories: counted.into_iter().map(|(k, _)| k).collect(),
                infrequent,
            })
        })
    }

    fn set_fitted(&mut self, fitted: Self::Fitted) -> Result<(), PluginError> {
        fitted.check(&self.columns)?;
        let encodings = fitted
            .columns
            .into_iter()
            .map(|c| self.encoding(c))
            .collect::<Result<Vec<_>, _>>()?;
        self.encodings = Some(encodings);
        Ok(())
    }
}

quiver_sdk::export_feature!(OneHot);
