//! `bucketize`: maps a numeric column to int32 bucket indices, by given boundaries or by
//! boundaries fitted at quantiles of the data.
//!
//! With sorted boundaries b₀ < b₁ < … < bₖ₋₁, the bucket of x is the number of boundaries
//! ≤ x (Python's `bisect.bisect_right`, numpy's `searchsorted(side="right")`, what
//! scikit-learn's `KBinsDiscretizer` does with its inner edges): x < b₀ → 0, b₀ ≤ x < b₁ → 1, …,
//! x ≥ bₖ₋₁ → k. So k boundaries make k + 1 buckets, 0..=k; a value equal to a boundary goes to
//! the bucket above it; −∞ goes to 0 and +∞ to k. Nulls and NaN become null.
//!
//! Parameters: `column` (the numeric column), then exactly one of
//!
//! * `boundaries`: the boundaries as a list of numbers written as text (`["0", "10.5"]`,
//!   since pipeline lists hold text), strictly increasing, no NaN. Nothing is fitted
//!   (`fit-reads` is empty).
//! * `quantiles = N` (1 ≤ N ≤ 10 000): fits the boundaries Q(i/N) for i = 1..N−1 on the
//!   column's non-null, non-NaN values, deduplicated (equal quantiles, e.g. from a frequent
//!   value, make one boundary, as scikit-learn removes zero-width bins), so there are at most
//!   N buckets. Q is linear interpolation between closest ranks (numpy's default): with the n
//!   sorted values x₍₀₎ ≤ … ≤ x₍ₙ₋₁₎ and h = q·(n − 1),
//!   Q(q) = x₍⌊h⌋₎ + (h − ⌊h⌋)·(x₍⌊h⌋+1₎ − x₍⌊h⌋₎). While the column has at most 100 000
//!   distinct values (whatever its number of rows) the quantiles are exact; beyond, they come
//!   from a DDSketch within 0.1 % relative (see `quiver_sdk::quantile`); the fitted `exact`
//!   field says which. Either way the fit does not depend on the partitioning. Infinite values are refused in this fit
//!   (an error naming the column and row); a column with no values fits no boundaries (every
//!   value goes to bucket 0).
//!
//! and optionally `output`: the name of a new int32 column for the buckets, the input column
//! passing through unchanged (an existing column of that name is replaced). Without it the
//! bucket column replaces the input column.
//!
//! Integer columns are compared as float64 (exact up to 2^53).

use quiver_sdk::prelude::*;
use quiver_sdk::quantile::QuantileSummary;
use serde::{Deserialize, Serialize};

const NAME: &str = "bucketize";

/// Most quantile bins `quantiles` may ask for.
const MAX_QUANTILES: i64 = 10_000;

/// Where the boundaries come from.
enum Source {
    Given(Vec<f64>),
    Quantiles(u32),
}

struct Bucketize {
    column: String,
    output: String,
    source: Source,
    fitted: Option<Fitted>,
}

/// Fitted boundaries (quantile mode only).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fitted {
    column: String,
    /// Number of values the quantiles were computed on.
    count: u64,
    /// Whether the quantiles are exact (at most 100 000 distinct values) rather than sketch
    /// estimates.
    exact: bool,
    /// Strictly increasing.
    boundaries: Vec<f64>,
}

/// Boundaries from their text form, checked to be numbers in strictly increasing order.
fn parse_boundaries(texts: &[String]) -> Result<Vec<f64>, ParamError> {
    let mut out: Vec<f64> = Vec::with_capacity(texts.len());
    for t in texts {
        let b: f64 = t
            .trim()
            .parse()
            .map_err(|_| Params::invalid("boundaries", format!("{t:?} is not a number")))?;
        if b.is_nan() {
            return Err(Params::invalid("boundaries", "NaN is not a boundary"));
        }
        if let Some(&last) = out.last() {
            if b <= last {
                return Err(Params::invalid(
                    "boundaries",
                    format!("must be strictly increasing, but {b} follows {last}"),
                ));
            }
        }
        out.push(b);
    }
    Ok(out)
}

impl Bucketize {
    fn boundaries(&self) -> Result<&[f64], PluginError> {
        match (&self.source, &self.fitted) {
            (Source::Given(b), _) => Ok(b),
            (Source::Quantiles(_), Some(f)) => Ok(&f.boundaries),
            (Source::Quantiles(_), None) => Err(PluginError::new(format!("{NAME} is not fitted"))),
        }
    }
}

impl Plugin for Bucketize {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "number → int32 bucket = count of boundaries ≤ x (given, or fitted at quantiles)",
        )
        .param(ParamSpec::text("column", "the numeric column to bucketize").required())
        .param(ParamSpec::text_list(
            "boundaries",
            "strictly increasing boundaries as text numbers, e.g. [\"0\", \"10.5\"] (or quantiles)",
        ))
        .param(ParamSpec::int(
            "quantiles",
            "fit N equal-frequency buckets: boundaries at the i/N quantiles, deduplicated",
        ))
        .param(ParamSpec::text(
            "output",
            "name of a new int32 column for the buckets (default: replace the input column)",
        ))
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let column = params.text("column").unwrap_or_default().to_string();
        if column.is_empty() {
            return Err(Params::invalid("column", "name a column"));
        }
        let output = match params.text("output") {
            Some("") => return Err(Params::invalid("output", "name a column")),
            Some(o) => o.to_string(),
            None => column.clone(),
        };
        let source = match (params.get("boundaries"), params.int("quantiles")) {
            (Some(_), Some(_)) => {
                return Err(Params::invalid(
                    "quantiles",
                    "give either `boundaries` or `quantiles`, not both",
                ))
            }
            (None, None) => {
                return Err(Params::invalid(
                    "boundaries",
                    "give the `boundaries` or a number of `quantiles`",
                ))
            }
            (Some(_), None) => Source::Given(parse_boundaries(&params.text_list("boundaries"))?),
            (None, Some(n)) if (1..=MAX_QUANTILES).contains(&n) => Source::Quantiles(n as u32),
            (None, Some(n)) => {
                return Err(Params::invalid(
                    "quantiles",
                    format!("{n} is not between 1 and {MAX_QUANTILES}"),
                ))
            }
        };
        Ok(Bucketize {
            column,
            output,
            source,
            fitted: None,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let field = expect_type(input, &self.column, &NUMERIC)?;
        // NaN becomes null too, so float columns give nullable buckets.
        let nullable =
            field.nullable || matches!(field.data_type, DataType::Float32 | DataType::Float64);
        Ok(Plan::passthrough(input).read(&self.column).computed(
            &self.output,
            DataType::Int32,
            nullable,
        ))
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let boundaries = self.boundaries()?;
        let rows = input.rows as usize;
        let column = input
            .columns
            .first()
            .ok_or_else(|| PluginError::new("the batch holds no column"))?;
        let values = column.f64_values()?;
        let mut validity: Option<BitmapBuilder> = None;
        let mut buckets = Vec::with_capacity(rows);
        for (i, &x) in values.iter().enumerate().take(rows) {
            if !column.is_valid(i) || x.is_nan() {
                // The validity bitmap is made on the first missing value only.
                validity
                    .get_or_insert_with(|| BitmapBuilder::filled(rows, true))
                    .set(i, false);
                buckets.push(0);
            } else {
                buckets.push(boundaries.partition_point(|&b| b <= x) as i32);
            }
        }
        let out = Column::from_vec(
            &self.output,
            DataType::Int32,
            buckets,
            validity.map(BitmapBuilder::finish),
        );
        Ok(vec![OutputBatch::all_rows(input.rows, vec![out])])
    }
}

impl Aggregate for Bucketize {
    type State = QuantileSummary;
    type Fitted = Fitted;

    fn fit_reads(&self, input: &[Field]) -> Result<Vec<String>, PluginError> {
        expect_type(input, &self.column, &NUMERIC)?;
        Ok(match self.source {
            // The boundaries are given: nothing to learn from the data.
            Source::Given(_) => Vec::new(),
            Source::Quantiles(_) => vec![self.column.clone()],
        })
    }

    fn partial(&self, input: &Batch) -> Result<QuantileSummary, PluginError> {
        let mut summary = QuantileSummary::new();
        let Some(column) = input.columns.first() else {
            return Ok(summary);
        };
        let rows = input.rows as usize;
        let values = column.f64_values()?;
        if let Some(i) = (0..rows).find(|&i| column.is_valid(i) && values[i].is_infinite()) {
            return Err(PluginError::new(format!(
                "column `{}` holds an infinite value; {NAME} fits quantiles on finite values only",
                column.name
            ))
            .in_column(&column.name)
            .at_row(i));
        }
        // NaN is dropped by the summary itself.
        summary.extend((0..rows).filter(|&i| column.is_valid(i)).map(|i| values[i]));
        Ok(summary)
    }

    fn merge(&self, states: Vec<QuantileSummary>) -> Result<QuantileSummary, PluginError> {
        let mut acc = QuantileSummary::new();
        for s in &states {
            acc.merge(s)
                .map_err(|e| PluginError::new(e.to_string()).in_column(&self.column))?;
        }
        Ok(acc)
    }

    fn finish(&self, state: QuantileSummary) -> Result<Fitted, PluginError> {
        let n = match self.source {
            Source::Quantiles(n) => n,
            Source::Given(_) => return Err(PluginError::new("given boundaries need no fit")),
        };
        let mut boundaries: Vec<f64> = (1..n)
            .filter_map(|i| state.quantile(f64::from(i) / f64::from(n)))
            .collect();
        // Quantiles are non-decreasing in q; sorting guards against a last-bit wobble of the
        // interpolation, dedup merges equal ones into one boundary.
        boundaries.sort_by(f64::total_cmp);
        boundaries.dedup();
        Ok(Fitted {
            column: self.column.clone(),
            count: state.count(),
            exact: state.is_exact(),
            boundaries,
        })
    }

    fn set_fitted(&mut self, fitted: Fitted) -> Result<(), PluginError> {
        if fitted.column != self.column {
            return Err(PluginError::new(format!(
                "fitted for column `{}`, but configured for `{}`",
                fitted.column, self.column
            )));
        }
        if !fitted.boundaries.windows(2).all(|w| w[0] < w[1])
            || fitted.boundaries.iter().any(|b| b.is_nan())
        {
            return Err(
                PluginError::new("fitted boundaries are not strictly increasing numbers")
                    .in_column(&self.column),
            );
        }
        self.fitted = Some(fitted);
        Ok(())
    }
}

quiver_sdk::export_feature!(Bucketize);
