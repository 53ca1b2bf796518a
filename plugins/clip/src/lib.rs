//! `clip`: x → min(max(x, min), max) on numeric columns (numpy's / pandas' `clip`).
//!
//! Either bound may be left out (at least one is required; `min` ≤ `max`). NaN stays NaN and
//! nulls stay null.
//!
//! Output type: a column keeps its type whenever every clipped value is exactly representable
//! in it, otherwise it becomes float64:
//! - integer columns keep their type when each given bound is a finite integer and the bounds
//!   do not lie entirely outside the type (`min` ≤ the type's largest value and `max` ≥ its
//!   smallest). A bound beyond the type on its own side (e.g. `min = -1` for uint8) clips
//!   nothing there. Otherwise (a fractional bound such as 2.5, or `min = 300` for uint8) the
//!   column becomes float64, converted first (64-bit integers beyond 2⁵³ round to the nearest
//!   float64);
//! - float32 columns stay float32 when each bound is exactly a float32 value (0, 1.5, 1e6, …),
//!   else become float64 (so 0.1 is not rounded to float32's 0.100000001);
//! - float64 columns stay float64.
//!
//! Bounds are float parameters: an integer bound beyond ±2⁵³ is rounded to float64 when the
//! pipeline is read.

use quiver_sdk::prelude::*;

/// The plugin: its parameters, checked.
struct Clip {
    columns: Vec<String>,
    min: Option<f64>,
    max: Option<f64>,
}

/// An integer value type, with its range as `i128` (which holds every 64-bit value).
trait Int: Copy + Ord + Into<i128> + TryFrom<i128> {
    const MIN: i128;
    const MAX: i128;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            const MIN: i128 = <$t>::MIN as i128;
            const MAX: i128 = <$t>::MAX as i128;
        }
    )*};
}
int!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Range of an integer data type, or `None` for other types.
fn int_range(t: &DataType) -> Option<(i128, i128)> {
    Some(match t {
        DataType::Int8 => (i8::MIN as i128, i8::MAX as i128),
        DataType::Int16 => (i16::MIN as i128, i16::MAX as i128),
        DataType::Int32 => (i32::MIN as i128, i32::MAX as i128),
        DataType::Int64 => (i64::MIN as i128, i64::MAX as i128),
        DataType::Uint8 => (0, u8::MAX as i128),
        DataType::Uint16 => (0, u16::MAX as i128),
        DataType::Uint32 => (0, u32::MAX as i128),
        DataType::Uint64 => (0, u64::MAX as i128),
        _ => return None,
    })
}

/// A finite bound with no fractional part, as an exact integer.
fn integral(b: f64) -> Option<i128> {
    // Every finite f64 with no fraction below 2¹²⁷ converts exactly; larger ones saturate,
    // which is still beyond every 64-bit type and so compares the same way.
    (b.is_finite() && b.fract() == 0.0).then_some(b as i128)
}

/// Clips an integer column in place; the bounds are known to be integral and to fit (see
/// [`Clip::output_type`]), and are first narrowed to the type's range.
fn clip_int<T: Int>(v: &mut [T], min: Option<f64>, max: Option<f64>) {
    let bound = |b: Option<f64>| {
        b.and_then(integral)
            .and_then(|b| T::try_from(b.clamp(T::MIN, T::MAX)).ok())
    };
    let (lo, hi) = (bound(min), bound(max));
    for x in v.iter_mut() {
        if let Some(lo) = lo {
            *x = (*x).max(lo);
        }
        if let Some(hi) = hi {
            *x = (*x).min(hi);
        }
    }
}

/// Clips one float; comparisons with NaN are false, so NaN is returned unchanged.
#[inline]
fn clip_float(x: f64, min: Option<f64>, max: Option<f64>) -> f64 {
    match (min, max) {
        (Some(lo), _) if x < lo => lo,
        (_, Some(hi)) if x > hi => hi,
        _ => x,
    }
}

impl Clip {
    /// Output type of a column of type `t`, or `None` if `t` is not numeric.
    fn output_type(&self, t: &DataType) -> Option<DataType> {
        let bounds = || self.min.iter().chain(&self.max).copied();
        if let Some((lo, hi)) = int_range(t) {
            let fits = bounds().all(|b| integral(b).is_some())
                && self.min.and_then(integral).is_none_or(|m| m <= hi)
                && self.max.and_then(integral).is_none_or(|m| m >= lo);
            return Some(if fits { t.clone() } else { DataType::Float64 });
        }
        match t {
            DataType::Float32 if bounds().all(|b| b as f32 as f64 == b) => Some(DataType::Float32),
            DataType::Float32 | DataType::Float64 => Some(DataType::Float64),
            _ => None,
        }
    }
}

impl Plugin for Clip {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "clip",
            env!("CARGO_PKG_VERSION"),
            "x → min(max(x, min), max) on numeric columns; integer columns keep their type for \
             integral bounds",
        )
        .param(ParamSpec::text_list("columns", "numeric columns to clip").required())
        .param(ParamSpec::float(
            "min",
            "lower bound (optional; at least one of min and max)",
        ))
        .param(ParamSpec::float(
            "max",
            "upper bound (optional; at least one of min and max)",
        ))
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.text_list("columns");
        if columns.is_empty() {
            return Err(Params::invalid("columns", "name at least one column"));
        }
        let (min, max) = (params.float("min"), params.float("max"));
        for (name, b) in [("min", min), ("max", max)] {
            if b.is_some_and(f64::is_nan) {
                return Err(Params::invalid(name, "must be a number, not NaN"));
            }
        }
        match (min, max) {
            (None, None) => return Err(Params::invalid("min", "give `min`, `max` or both")),
            (Some(lo), Some(hi)) if lo > hi => {
                return Err(Params::invalid(
                    "min",
                    format!("must not exceed `max`, got min = {lo} > max = {hi}"),
                ))
            }
            _ => {}
        }
        Ok(Clip { columns, min, max })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for name in &self.columns {
            let field = find_field(input, name)?;
            let Some(out) = self.output_type(&field.data_type) else {
                return Err(PluginError::new(format!(
                    "column `{name}` has type {}; clip needs a numeric column",
                    field.data_type
                ))
                .in_column(name));
            };
            plan = plan.compute(name, out, field.nullable);
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let (min, max) = (self.min, self.max);
        let mut out = Vec::with_capacity(input.columns.len());
        for mut column in input.columns {
            let keep = self.output_type(&column.data_type) == Some(column.data_type.clone());
            // Values under nulls are clipped too: harmless, and it keeps the loops branch-free.
            match &mut column.values {
                Values::F64(v) => v.iter_mut().for_each(|x| *x = clip_float(*x, min, max)),
                Values::F32(v) if keep => v
                    .iter_mut()
                    .for_each(|x| *x = clip_float(*x as f64, min, max) as f32),
                Values::I8(v) if keep => clip_int(v, min, max),
                Values::I16(v) if keep => clip_int(v, min, max),
                Values::I32(v) if keep => clip_int(v, min, max),
                Values::I64(v) if keep => clip_int(v, min, max),
                Values::U8(v) if keep => clip_int(v, min, max),
                Values::U16(v) if keep => clip_int(v, min, max),
                Values::U32(v) if keep => clip_int(v, min, max),
                Values::U64(v) if keep => clip_int(v, min, max),
                _ => {
                    let clipped = column
                        .f64_values()?
                        .iter()
                        .map(|&x| clip_float(x, min, max))
                        .collect();
                    column.set_f64_values(clipped);
                }
            }
            out.push(column);
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

quiver_sdk::export_plugin!(Clip);

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(min: Option<f64>, max: Option<f64>) -> Clip {
        Clip {
            columns: vec!["x".into()],
            min,
            max,
        }
    }

    #[test]
    fn output_types() {
        let c = clip(Some(-1.0), Some(100.0));
        assert_eq!(c.output_type(&DataType::Uint8), Some(DataType::Uint8));
        assert_eq!(c.output_type(&DataType::Int64), Some(DataType::Int64));
        assert_eq!(c.output_type(&DataType::Float32), Some(DataType::Float32));
        let c = clip(Some(300.0), None);
        assert_eq!(c.output_type(&DataType::Uint8), Some(DataType::Float64));
        assert_eq!(c.output_type(&DataType::Int16), Some(DataType::Int16));
        let c = clip(None, Some(0.1));
        assert_eq!(c.output_type(&DataType::Int32), Some(DataType::Float64));
        assert_eq!(c.output_type(&DataType::Float32), Some(DataType::Float64));
        assert_eq!(c.output_type(&DataType::Utf8), None);
    }

    #[test]
    fn clips_integers_and_keeps_nan() {
        let mut v: Vec<u8> = vec![0, 5, 255];
        clip_int(&mut v, Some(-1.0), Some(100.0));
        assert_eq!(v, [0, 5, 100]);
        let mut v: Vec<i64> = vec![i64::MIN, 0, i64::MAX];
        clip_int(&mut v, Some(-5.0), None);
        assert_eq!(v, [-5, 0, i64::MAX]);
        assert!(clip_float(f64::NAN, Some(0.0), Some(1.0)).is_nan());
    }
}
