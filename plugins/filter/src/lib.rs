//! `filter`: keeps the rows for which a condition is true.
//!
//! The condition (`where` parameter) compares columns with literals, combined with `and`, `or`,
//! `not` and parentheses: `amount >= 100 and (country = 'DE' or vip)`, `email is not null`.
//! Operators: `=` `==` `!=` `<>` `<` `<=` `>` `>=`, `is null`, `is not null`; a bare boolean
//! column means `column = true`. Literals: numbers, `'text'` or `"text"`, `true`, `false`.
//! Column names with spaces or symbols go in backticks.
//!
//! Nulls follow SQL: a comparison with a null value is unknown, `not unknown` is unknown, and
//! only rows where the whole condition is true are kept. Only the columns the condition names
//! cross into the plugin; the host applies the selection to the others.

mod expr;

use expr::{Cmp, Expr, Literal};
use quiver_sdk::prelude::*;

struct Filter {
    condition: Expr,
    /// Column indexes into the batch (the order of `reads`), filled by `prepare`.
    columns: Vec<String>,
}

/// A three-valued result over the rows of a batch, as 64-bit words: `t` = definitely true,
/// `f` = definitely false; neither = unknown (null involved).
struct Truth {
    t: Vec<u64>,
    f: Vec<u64>,
}

impl Filter {
    fn eval(&self, e: &Expr, batch: &Batch) -> Result<Truth, PluginError> {
        let rows = batch.rows as usize;
        Ok(match e {
            Expr::And(a, b) => {
                let (a, b) = (self.eval(a, batch)?, self.eval(b, batch)?);
                Truth {
                    t: zip(&a.t, &b.t, |x, y| x & y),
                    f: zip(&a.f, &b.f, |x, y| x | y),
                }
            }
            Expr::Or(a, b) => {
                let (a, b) = (self.eval(a, batch)?, self.eval(b, batch)?);
                Truth {
                    t: zip(&a.t, &b.t, |x, y| x | y),
                    f: zip(&a.f, &b.f, |x, y| x & y),
                }
            }
            Expr::Not(a) => {
                let a = self.eval(a, batch)?;
                Truth { t: a.f, f: a.t }
            }
            Expr::IsNull(name, negated) => {
                let valid = validity_words(self.column(batch, name), rows);
                let null: Vec<u64> = valid.iter().map(|w| !w).collect();
                let (t, f) = if *negated {
                    (valid, null)
                } else {
                    (null, valid)
                };
                Truth {
                    t: mask_tail(t, rows),
                    f: mask_tail(f, rows),
                }
            }
            Expr::Compare(name, cmp, lit) => {
                let column = self.column(batch, name);
                let hits = compare(column, *cmp, lit, rows)?;
                let valid = validity_words(column, rows);
                Truth {
                    t: zip(&hits, &valid, |h, v| h & v),
                    f: mask_tail(zip(&hits, &valid, |h, v| !h & v), rows),
                }
            }
        })
    }

    fn column<'b>(&self, batch: &'b Batch, name: &str) -> &'b Column {
        let i = self
            .columns
            .iter()
            .position(|c| c == name)
            .expect("named in prepare");
        &batch.columns[i]
    }
}

fn zip(a: &[u64], b: &[u64], f: impl Fn(u64, u64) -> u64) -> Vec<u64> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

/// Clears the bits past the last row so that negations do not select phantom rows.
fn mask_tail(mut words: Vec<u64>, rows: usize) -> Vec<u64> {
    if !rows.is_multiple_of(64) {
        if let Some(last) = words.last_mut() {
            *last &= (1u64 << (rows % 64)) - 1;
        }
    }
    words
}

fn validity_words(column: &Column, rows: usize) -> Vec<u64> {
    let words = rows.div_ceil(64);
    match &column.validity {
        None => mask_tail(vec![u64::MAX; words], rows),
        Some(bits) => mask_tail(
            (0..words)
                .map(|w| {
                    let mut buf = [0u8; 8];
                    let start = w * 8;
                    let end = (start + 8).min(bits.len());
                    buf[..end - start].copy_from_slice(&bits[start..end]);
                    u64::from_le_bytes(buf)
                })
                .collect(),
            rows,
        ),
    }
}

/// Packs `pred(value)` over fixed-width values into words. Each word is built from eight
/// straight-line blocks of eight values, so the sandbox's deadline check (one per loop
/// iteration) runs at most once per eight values, not once per value.
fn pack<T: Copy>(values: &[T], pred: impl Fn(T) -> bool) -> Vec<u64> {
    let byte = |c: &[T; 8]| {
        (pred(c[0]) as u64)
            | (pred(c[1]) as u64) << 1
            | (pred(c[2]) as u64) << 2
            | (pred(c[3]) as u64) << 3
            | (pred(c[4]) as u64) << 4
            | (pred(c[5]) as u64) << 5
            | (pred(c[6]) as u64) << 6
            | (pred(c[7]) as u64) << 7
    };
    let whole = values.chunks_exact(64);
    let tail = whole.remainder();
    let mut words: Vec<u64> = Vec::with_capacity(values.len().div_ceil(64));
    words.extend(whole.map(|chunk| {
        chunk.chunks_exact(8).enumerate().fold(0u64, |w, (i, c)| {
            w | byte(c.try_into().expect("chunks of 8")) << (8 * i)
        })
    }));
    if !tail.is_empty() {
        let word = tail
            .iter()
            .enumerate()
            .fold(0u64, |w, (j, &x)| w | ((pred(x) as u64) << j));
        words.push(word);
    }
    words
}

fn compare_num<T: Copy + PartialOrd>(values: &[T], cmp: Cmp, lit: T) -> Vec<u64> {
    match cmp {
        Cmp::Eq => pack(values, |x| x == lit),
        Cmp::Ne => pack(values, |x| x != lit),
        Cmp::Lt => pack(values, |x| x < lit),
        Cmp::Le => pack(values, |x| x <= lit),
        Cmp::Gt => pack(values, |x| x > lit),
        Cmp::Ge => pack(values, |x| x >= lit),
    }
}

fn compare(column: &Column, cmp: Cmp, lit: &Literal, rows: usize) -> Result<Vec<u64>, PluginError> {
    let mismatch = || {
        PluginError::new(format!(
            "cannot compare column `{}` of type {} with {lit}",
            column.name, column.data_type
        ))
        .in_column(&column.name)
    };
    // Integer columns compare exactly with integer literals and as f64 with float ones.
    macro_rules! int_or_float {
        ($v:expr) => {
            match lit {
                Literal::Int(i) => compare_num(
                    &$v.iter().map(|&x| x as i128).collect::<Vec<_>>(),
                    cmp,
                    *i as i128,
                ),
                Literal::Float(f) => {
                    compare_num(&$v.iter().map(|&x| x as f64).collect::<Vec<_>>(), cmp, *f)
                }
                _ => return Err(mismatch()),
            }
        };
    }
    Ok(match &column.values {
        Values::I64(v) => match lit {
            Literal::Int(i) => compare_num(v, cmp, *i),
            Literal::Float(f) => pack(v, |x| cmp.holds((x as f64).partial_cmp(f))),
            _ => return Err(mismatch()),
        },
        Values::I32(v) => match lit {
            Literal::Int(i) if i32::try_from(*i).is_ok() => compare_num(v, cmp, *i as i32),
            _ => int_or_float!(v),
        },
        Values::F64(v) => match lit {
            Literal::Int(i) => compare_num(v, cmp, *i as f64),
            Literal::Float(f) => compare_num(v, cmp, *f),
            _ => return Err(mismatch()),
        },
        Values::F32(v) => match lit {
            Literal::Int(i) => pack(v, |x| cmp.holds((x as f64).partial_cmp(&(*i as f64)))),
            Literal::Float(f) => pack(v, |x| cmp.holds((x as f64).partial_cmp(f))),
            _ => return Err(mismatch()),
        },
        Values::I8(v) => int_or_float!(v),
        Values::I16(v) => int_or_float!(v),
        Values::U8(v) => int_or_float!(v),
        Values::U16(v) => int_or_float!(v),
        Values::U32(v) => int_or_float!(v),
        Values::U64(v) => int_or_float!(v),
        Values::Bits(bits) => {
            let Literal::Bool(b) = lit else {
                return Err(mismatch());
            };
            let want: Vec<bool> = (0..rows).map(|i| get_bit(bits, i)).collect();
            compare_num(&want, cmp, *b)
        }
        Values::Bytes(_) => {
            let Literal::Text(s) = lit else {
                return Err(mismatch());
            };
            let s = s.as_bytes();
            let want: Vec<bool> = (0..rows)
                .map(|i| cmp.holds(Some(column.bytes_at(i).cmp(s))))
                .collect();
            pack(&want, |x| x)
        }
    })
}

fn check_types(e: &Expr, input: &[Field]) -> Result<(), PluginError> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_types(a, input)?;
            check_types(b, input)
        }
        Expr::Not(a) => check_types(a, input),
        Expr::IsNull(name, _) => find_field(input, name).map(|_| ()),
        Expr::Compare(name, _, lit) => {
            let field = find_field(input, name)?;
            let ok = matches!(
                (&field.data_type, lit),
                (DataType::Boolean, Literal::Bool(_))
                    | (DataType::Utf8 | DataType::Binary, Literal::Text(_))
                    | (DataType::Date32 | DataType::Timestamp(_), Literal::Int(_))
                    | (
                        DataType::Int8
                            | DataType::Int16
                            | DataType::Int32
                            | DataType::Int64
                            | DataType::Uint8
                            | DataType::Uint16
                            | DataType::Uint32
                            | DataType::Uint64
                            | DataType::Float32
                            | DataType::Float64,
                        Literal::Int(_) | Literal::Float(_),
                    )
            );
            if ok {
                Ok(())
            } else {
                Err(PluginError::new(format!(
                    "cannot compare column `{name}` of type {} with {lit}",
                    field.data_type
                ))
                .in_column(name))
            }
        }
    }
}

impl Plugin for Filter {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "filter",
            env!("CARGO_PKG_VERSION"),
            "keep the rows where a condition is true",
        )
        .param(
            ParamSpec::text("where", "condition, e.g. `amount > 100 and country = 'DE'`")
                .required(),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let text = params.text("where").unwrap_or_default();
        let condition = expr::parse(text).map_err(|e| Params::invalid("where", e))?;
        Ok(Filter {
            columns: condition.columns(),
            condition,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        check_types(&self.condition, input)?;
        Ok(self
            .columns
            .iter()
            .fold(Plan::passthrough(input), |p, c| p.read(c)))
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows as usize;
        let truth = self.eval(&self.condition, &input)?;
        let selection = BitmapBuilder::from_words(&truth.t, rows);
        Ok(vec![OutputBatch::selected(selection, Vec::new())])
    }
}

quiver_sdk::export_plugin!(Filter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_matches_one_bit_at_a_time() {
        for len in [0usize, 1, 7, 8, 63, 64, 65, 100, 128, 200, 1000] {
            let values: Vec<i64> = (0..len as i64).map(|i| (i * 7919) % 1000).collect();
            for cut in [0, 500, 999, 1000] {
                let got = pack(&values, |x| x >= cut);
                let mut want = vec![0u64; len.div_ceil(64)];
                for (i, &x) in values.iter().enumerate() {
                    want[i / 64] |= ((x >= cut) as u64) << (i % 64);
                }
                assert_eq!(got, want, "len {len}, cut {cut}");
            }
        }
    }
}
