//! `log-transform`: x → log(x + offset) on numeric columns, natural by default.
//!
//! Each listed column becomes float64 (integers are converted first, so 64-bit integers beyond
//! 2⁵³ are rounded to the nearest float64). With `base` given, the result is
//! ln(x + offset) / ln(base) (`log2`/`log10` exactly for bases 2 and 10). With the default
//! `offset = 1` the value is computed as `ln_1p(x)` (numpy's `log1p`), which stays accurate for
//! tiny x where `1 + x` would round.
//!
//! An argument x + offset ≤ 0 (0 included: its logarithm would be −∞) has no logarithm: with `on-invalid = "null"` (the default) the row
//! becomes null, with `on-invalid = "error"` the run stops naming the column and row. NaN stays
//! NaN and +∞ stays +∞ (they are not "non-positive"); nulls stay null.

use quiver_sdk::prelude::*;

/// What to do with a row whose argument x + offset is ≤ 0.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OnInvalid {
    Null,
    Error,
}

/// The plugin: its parameters, checked.
struct LogTransform {
    columns: Vec<String>,
    offset: f64,
    base: Option<f64>,
    on_invalid: OnInvalid,
}

impl LogTransform {
    /// log(x + offset) in the configured base, for an argument known to be positive (or NaN).
    #[inline]
    fn log(&self, x: f64) -> f64 {
        let ln_arg = |x: f64| {
            if self.offset == 1.0 {
                x.ln_1p()
            } else {
                (x + self.offset).ln()
            }
        };
        match self.base {
            None => ln_arg(x),
            // Dedicated functions are exact at powers of the base (log10(1000) = 3).
            Some(b) if b == 10.0 && self.offset == 0.0 => x.log10(),
            Some(b) if b == 2.0 && self.offset == 0.0 => x.log2(),
            Some(b) => ln_arg(x) / b.ln(),
        }
    }
}

impl Plugin for LogTransform {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "log-transform",
            env!("CARGO_PKG_VERSION"),
            "x → log(x + offset) on numeric columns (log1p by default), as float64",
        )
        .param(ParamSpec::text_list("columns", "numeric columns to transform").required())
        .param(
            ParamSpec::float("offset", "added before the logarithm (1: log1p)")
                .default(ParamValue::Float(1.0)),
        )
        .param(ParamSpec::float(
            "base",
            "base of the logarithm (> 0, not 1); natural logarithm when absent",
        ))
        .param(
            ParamSpec::text(
                "on-invalid",
                "x + offset ≤ 0: \"null\" makes the row null, \"error\" stops the run",
            )
            .default(ParamValue::Text("null".into())),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.text_list("columns");
        if columns.is_empty() {
            return Err(Params::invalid("columns", "name at least one column"));
        }
        let offset = params.float("offset").unwrap_or(1.0);
        if !offset.is_finite() {
            return Err(Params::invalid(
                "offset",
                format!("must be finite, got {offset}"),
            ));
        }
        let base = params.float("base");
        if let Some(b) = base {
            if !(b.is_finite() && b > 0.0 && b != 1.0) {
                return Err(Params::invalid(
                    "base",
                    format!("must be a finite number > 0 other than 1, got {b}"),
                ));
            }
        }
        let on_invalid = match params.text("on-invalid").unwrap_or("null") {
            "null" => OnInvalid::Null,
            "error" => OnInvalid::Error,
            other => {
                return Err(Params::invalid(
                    "on-invalid",
                    format!("expected \"null\" or \"error\", got {other:?}"),
                ))
            }
        };
        Ok(LogTransform {
            columns,
            offset,
            base,
            on_invalid,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for name in &self.columns {
            let field = find_field(input, name)?;
            if !NUMERIC.contains(&field.data_type) {
                return Err(PluginError::new(format!(
                    "column `{name}` has type {}; log-transform needs a numeric column",
                    field.data_type
                ))
                .in_column(name));
            }
            // Invalid arguments become nulls even in a column that had none.
            let nullable = field.nullable || self.on_invalid == OnInvalid::Null;
            plan = plan.compute(name, DataType::Float64, nullable);
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows as usize;
        let mut out = Vec::with_capacity(input.columns.len());
        for mut column in input.columns {
            // `<=` is false for NaN, so NaN goes through to a NaN logarithm, as numpy's.
            let invalid = |x: f64| x + self.offset <= 0.0;
            let mut bad_rows = Vec::new();
            let logged: Vec<f64> = {
                let values = column.f64_values()?;
                values
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| {
                        if !column.is_valid(i) {
                            // The value under a null is unspecified: do not look at it.
                            0.0
                        } else if invalid(x) {
                            bad_rows.push(i);
                            f64::NAN
                        } else {
                            self.log(x)
                        }
                    })
                    .collect()
            };
            if let Some(&first) = bad_rows.first() {
                if self.on_invalid == OnInvalid::Error {
                    let x = column.f64_values()?[first];
                    return Err(PluginError::new(format!(
                        "column `{}`: x + offset = {} + {} ≤ 0 has no logarithm \
                         ({} such rows in this batch); set on-invalid = \"null\" to make \
                         them null",
                        column.name,
                        x,
                        self.offset,
                        bad_rows.len()
                    ))
                    .in_column(&column.name)
                    .at_row(first));
                }
                let mut validity = column
                    .validity
                    .take()
                    .unwrap_or_else(|| vec![0xff; rows.div_ceil(8)]);
                for i in bad_rows {
                    validity[i >> 3] &= !(1 << (i & 7));
                }
                column.validity = Some(validity);
            }
            column.set_f64_values(logged);
            out.push(column);
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

quiver_sdk::export_plugin!(LogTransform);
