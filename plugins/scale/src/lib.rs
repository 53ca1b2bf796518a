//! `scale`: x → (x − a) / b on numeric columns.
//!
//! float64 columns are changed in place; float32 columns stay float32; integer columns become
//! float64. Nulls stay null.

use quiver_sdk::prelude::*;

struct Scale {
    columns: Vec<String>,
    a: f64,
    b: f64,
}

const INTEGERS: [DataType; 8] = [
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
];

fn scaled<T: Copy + Into<f64>>(values: &[T], a: f64, b: f64) -> Vec<f64> {
    values.iter().map(|&x| (x.into() - a) / b).collect()
}

impl Plugin for Scale {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "scale",
            env!("CARGO_PKG_VERSION"),
            "x → (x − a) / b on numeric columns",
        )
        .param(ParamSpec::text_list("columns", "columns to scale").required())
        .param(ParamSpec::float("a", "subtracted first").default(ParamValue::Float(0.0)))
        .param(ParamSpec::float("b", "then divided by (not 0)").default(ParamValue::Float(1.0)))
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let b = params.float("b").unwrap_or(1.0);
        if b == 0.0 || !b.is_finite() {
            return Err(Params::invalid(
                "b",
                format!("must be a finite non-zero number, got {b}"),
            ));
        }
        let columns = params.text_list("columns");
        if columns.is_empty() {
            return Err(Params::invalid("columns", "name at least one column"));
        }
        Ok(Scale {
            columns,
            a: params.float("a").unwrap_or(0.0),
            b,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for name in &self.columns {
            let field = find_field(input, name)?;
            let out = match field.data_type {
                DataType::Float32 => DataType::Float32,
                DataType::Float64 => DataType::Float64,
                ref t if INTEGERS.contains(t) => DataType::Float64,
                ref t => {
                    return Err(PluginError::new(format!(
                        "column `{name}` has type {t}; scale needs a numeric column"
                    ))
                    .in_column(name))
                }
            };
            plan = plan.compute(name, out, field.nullable);
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let (a, b) = (self.a, self.b);
        let mut out = Vec::with_capacity(input.columns.len());
        for mut column in input.columns {
            let values = match &mut column.values {
                // In place: the buffer the host sent goes straight back.
                Values::F64(v) => {
                    v.iter_mut().for_each(|x| *x = (*x - a) / b);
                    None
                }
                Values::F32(v) => {
                    v.iter_mut().for_each(|x| *x = ((*x as f64 - a) / b) as f32);
                    None
                }
                Values::I8(v) => Some(scaled(v, a, b)),
                Values::I16(v) => Some(scaled(v, a, b)),
                Values::I32(v) => Some(scaled(v, a, b)),
                Values::I64(v) => Some(v.iter().map(|&x| (x as f64 - a) / b).collect()),
                Values::U8(v) => Some(scaled(v, a, b)),
                Values::U16(v) => Some(scaled(v, a, b)),
                Values::U32(v) => Some(scaled(v, a, b)),
                Values::U64(v) => Some(v.iter().map(|&x| (x as f64 - a) / b).collect()),
                _ => return Err(PluginError::new("not a numeric column").in_column(&column.name)),
            };
            if let Some(values) = values {
                column.values = Values::F64(values);
                column.data_type = DataType::Float64;
            }
            out.push(column);
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

quiver_sdk::export_plugin!(Scale);
