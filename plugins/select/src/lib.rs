//! `select`: keeps, drops, renames and casts columns.
//!
//! Kept and renamed columns pass through the host without crossing into the plugin; only
//! columns being cast are sent. Order of operations: `keep` (and its order; default: all
//! columns), then `drop`, then `cast` (by original name), then `rename`.
//!
//! Casts: to `int64`, `int32`, `float64`, `float32`, `utf8` or `boolean`, from any numeric,
//! boolean or utf8 column. Text is parsed (`true`/`false`/`1`/`0` for booleans); a value that
//! does not parse or does not fit is an error naming the row. Floats cast to integers truncate
//! toward zero. Nulls stay null.

use quiver_sdk::prelude::*;

struct Select {
    keep: Vec<String>,
    drop: Vec<String>,
    rename: Vec<(String, String)>,
    cast: Vec<(String, DataType)>,
}

fn parse_type(name: &str) -> Option<DataType> {
    Some(match name.to_ascii_lowercase().as_str() {
        "int64" | "bigint" => DataType::Int64,
        "int32" | "int" => DataType::Int32,
        "float64" | "double" => DataType::Float64,
        "float32" | "float" => DataType::Float32,
        "utf8" | "string" | "text" => DataType::Utf8,
        "boolean" | "bool" => DataType::Boolean,
        _ => return None,
    })
}

/// One value read from a source column, before conversion.
enum Scalar<'a> {
    Int(i128),
    Float(f64),
    Bool(bool),
    Text(&'a [u8]),
}

fn scalar_at(column: &Column, i: usize) -> Scalar<'_> {
    match &column.values {
        Values::Bits(_) => Scalar::Bool(column.bool_at(i)),
        Values::I8(v) => Scalar::Int(v[i].into()),
        Values::I16(v) => Scalar::Int(v[i].into()),
        Values::I32(v) => Scalar::Int(v[i].into()),
        Values::I64(v) => Scalar::Int(v[i].into()),
        Values::U8(v) => Scalar::Int(v[i].into()),
        Values::U16(v) => Scalar::Int(v[i].into()),
        Values::U32(v) => Scalar::Int(v[i].into()),
        Values::U64(v) => Scalar::Int(v[i].into()),
        Values::F32(v) => Scalar::Float(v[i].into()),
        Values::F64(v) => Scalar::Float(v[i]),
        Values::Bytes(_) => Scalar::Text(column.bytes_at(i)),
    }
}

fn to_int(s: &Scalar<'_>) -> Option<i128> {
    match s {
        Scalar::Int(i) => Some(*i),
        Scalar::Float(f) if f.is_finite() => Some(f.trunc() as i128),
        Scalar::Float(_) => None,
        Scalar::Bool(b) => Some(*b as i128),
        Scalar::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
    }
}

fn to_float(s: &Scalar<'_>) -> Option<f64> {
    match s {
        Scalar::Int(i) => Some(*i as f64),
        Scalar::Float(f) => Some(*f),
        Scalar::Bool(b) => Some(*b as u8 as f64),
        Scalar::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
    }
}

fn to_bool(s: &Scalar<'_>) -> Option<bool> {
    match s {
        Scalar::Int(i) => Some(*i != 0),
        Scalar::Float(f) => Some(*f != 0.0),
        Scalar::Bool(b) => Some(*b),
        Scalar::Text(t) => match std::str::from_utf8(t)
            .ok()?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
    }
}

fn write_text(s: &Scalar<'_>, out: &mut Vec<u8>) {
    match s {
        Scalar::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Scalar::Float(f) => out.extend_from_slice(f.to_string().as_bytes()),
        Scalar::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Scalar::Text(t) => out.extend_from_slice(t),
    }
}

/// Casts every row of `column` with `convert`, keeping nulls; the first failure names its row.
fn cast_fixed<T: Native + Default>(
    column: &Column,
    rows: usize,
    to: &DataType,
    convert: impl Fn(&Scalar<'_>) -> Option<T>,
) -> Result<Vec<T>, PluginError> {
    (0..rows)
        .map(|i| {
            if !column.is_valid(i) {
                return Ok(T::default());
            }
            convert(&scalar_at(column, i)).ok_or_else(|| {
                PluginError::new(format!(
                    "cannot cast this value of `{}` to {to}",
                    column.name
                ))
                .in_column(&column.name)
                .at_row(i)
            })
        })
        .collect()
}

fn cast(column: Column, rows: usize, to: &DataType) -> Result<Column, PluginError> {
    let validity = column.validity.clone();
    let name = column.name.clone();
    let fixed = |values: Values| Column {
        validity: validity.clone(),
        ..Column::new(&name, to.clone(), values)
    };
    Ok(match to {
        DataType::Int64 => fixed(Values::I64(cast_fixed(&column, rows, to, |s| {
            to_int(s).and_then(|i| i64::try_from(i).ok())
        })?)),
        DataType::Int32 => fixed(Values::I32(cast_fixed(&column, rows, to, |s| {
            to_int(s).and_then(|i| i32::try_from(i).ok())
        })?)),
        DataType::Float64 => fixed(Values::F64(cast_fixed(&column, rows, to, to_float)?)),
        DataType::Float32 => fixed(Values::F32(cast_fixed(&column, rows, to, |s| {
            to_float(s).map(|f| f as f32)
        })?)),
        DataType::Boolean => {
            let bools = cast_fixed(&column, rows, to, |s| to_bool(s).map(u8::from))?;
            let mut bits = BitmapBuilder::with_capacity(rows);
            bools.iter().for_each(|&b| bits.push(b != 0));
            fixed(Values::Bits(bits.finish()))
        }
        DataType::Utf8 => {
            let mut out = StringColumnBuilder::with_capacity(rows, rows * 8);
            for i in 0..rows {
                if column.is_valid(i) {
                    out.push_with(|buf| write_text(&scalar_at(&column, i), buf));
                } else {
                    out.push(None);
                }
            }
            out.finish(&name, DataType::Utf8)
        }
        other => return Err(PluginError::new(format!("cannot cast to {other}")).in_column(&name)),
    })
}

impl Plugin for Select {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "select",
            env!("CARGO_PKG_VERSION"),
            "keep, drop, rename and cast columns",
        )
        .param(ParamSpec::text_list(
            "keep",
            "columns to keep, in this order (default: all)",
        ))
        .param(ParamSpec::text_list("drop", "columns to drop"))
        .param(ParamSpec::text_map("rename", "old name = new name"))
        .param(ParamSpec::text_map(
            "cast",
            "column = type (int64, int32, float64, float32, utf8, boolean)",
        ))
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let cast = params
            .text_map("cast")
            .into_iter()
            .map(|(c, t)| match parse_type(&t) {
                Some(t) => Ok((c, t)),
                None => Err(Params::invalid(
                    "cast",
                    format!("unknown type `{t}` for `{c}`; use int64, int32, float64, float32, utf8 or boolean"),
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Select {
            keep: params.text_list("keep"),
            drop: params.text_list("drop"),
            rename: params.text_map("rename"),
            cast,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let named = self.keep.iter().chain(&self.drop);
        for name in named
            .chain(self.rename.iter().map(|(c, _)| c))
            .chain(self.cast.iter().map(|(c, _)| c))
        {
            find_field(input, name)?;
        }
        let kept: Vec<&Field> = if self.keep.is_empty() {
            input.iter().collect()
        } else {
            self.keep
                .iter()
                .map(|k| find_field(input, k))
                .collect::<Result<_, _>>()?
        };
        let mut plan = Plan {
            reads: Vec::new(),
            output: Vec::new(),
        };
        for field in kept.into_iter().filter(|f| !self.drop.contains(&f.name)) {
            let out_name = self
                .rename
                .iter()
                .find(|(old, _)| *old == field.name)
                .map_or(field.name.as_str(), |(_, new)| new.as_str());
            if plan.output.iter().any(|o| o.name == out_name) {
                return Err(PluginError::new(format!(
                    "two output columns would be named `{out_name}`"
                )));
            }
            match self.cast.iter().find(|(c, _)| *c == field.name) {
                Some((_, to)) => {
                    plan = plan
                        .read(&field.name)
                        .computed(out_name, to.clone(), field.nullable)
                }
                None => plan.output.push(OutputField {
                    name: out_name.into(),
                    data_type: field.data_type.clone(),
                    nullable: field.nullable,
                    source: OutputSource::Passthrough(field.name.clone()),
                }),
            }
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows as usize;
        let mut out = Vec::with_capacity(input.columns.len());
        for column in input.columns {
            let (_, to) = self
                .cast
                .iter()
                .find(|(c, _)| *c == column.name)
                .expect("planned cast");
            let new_name = self
                .rename
                .iter()
                .find(|(old, _)| *old == column.name)
                .map(|(_, n)| n.clone());
            let mut cast = cast(column, rows, to)?;
            if let Some(n) = new_name {
                cast.name = n;
            }
            out.push(cast);
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

quiver_sdk::export_plugin!(Select);
