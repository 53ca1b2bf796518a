//! `{{name}}`: multiplies a float64 column by a factor, in place.
//!
//! Build: `quiver plugin build .`   Test: `quiver plugin test .`

use quiver_sdk::prelude::*;

struct Scale {
    column: String,
    factor: f64,
}

impl Plugin for Scale {
    fn describe() -> PluginInfo {
        PluginInfo::new("{{name}}", env!("CARGO_PKG_VERSION"), "x → x · factor")
            .param(ParamSpec::text("column", "the float64 column to scale").required())
            .param(ParamSpec::float("factor", "the multiplier").default(ParamValue::Float(2.0)))
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let factor = params.float("factor").unwrap_or(2.0);
        if !factor.is_finite() {
            return Err(Params::invalid("factor", "must be a finite number"));
        }
        Ok(Scale {
            column: params.text("column").unwrap_or_default().into(),
            factor,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let field = expect_type(input, &self.column, &[DataType::Float64])?;
        // Only this column crosses into the plugin; the others pass through untouched.
        Ok(Plan::passthrough(input).compute(&self.column, DataType::Float64, field.nullable))
    }

    fn transform(&mut self, mut input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let mut column = input.columns.remove(0);
        let factor = self.factor;
        column.values_mut::<f64>()?.iter_mut().for_each(|x| *x *= factor);
        Ok(vec![OutputBatch::all_rows(input.rows, vec![column])])
    }
}

quiver_sdk::export_plugin!(Scale);
