//! Test fixture: returns output that contradicts its plan or the contract, in the way the
//! `mode` parameter says. With `mode = "honest"` it copies its input column unchanged. Two modes
//! abuse the host's resources instead: `flood` writes 64 MiB to stdout and stderr and logs
//! without pause, `huge-string` returns a 256 MiB string in a utf8 column.

use std::io::Write;

use quiver_sdk::prelude::*;

/// Size of the one non-empty string of `huge-string`.
const HUGE: usize = 256 << 20;

/// Writes 32 Ki lines of 1 KiB to each of stdout and stderr (64 MiB in all), stopping a stream
/// at its first error, then sends the host 100 000 log messages.
fn flood() {
    let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let (mut out_ok, mut err_ok) = (true, true);
    for _ in 0..32 * 1024 {
        out_ok = out_ok && out.write_all(&line).is_ok();
        err_ok = err_ok && err.write_all(&line).is_ok();
    }
    let _ = out.flush();
    for i in 0..100_000 {
        log(Level::Info, &format!("liar floods the log: message {i}"));
    }
}

/// Recurses without end on the Wasm call stack (no locals in linear memory, so it is the
/// engine's stack limit that stops it); `black_box` keeps the calls from being optimised away.
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    1 + recurse(std::hint::black_box(n.wrapping_mul(3) + 1))
}

struct Liar {
    mode: String,
    column: String,
    calls: u64,
}

impl Plugin for Liar {
    fn describe() -> PluginInfo {
        PluginInfo::new("liar", "0.1.0", "breaks the contract on purpose")
            .param(ParamSpec::text("mode", "how to misbehave").required())
            .param(ParamSpec::text("column", "the column it declares to compute").required())
    }
    fn init(params: Params) -> Result<Self, ParamError> {
        Ok(Liar {
            mode: params.text("mode").unwrap_or_default().into(),
            column: params.text("column").unwrap_or_default().into(),
            calls: 0,
        })
    }
    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let field = find_field(input, &self.column)?;
        // Declares the column's own nullability, except in the mode that then breaks it.
        let nullable = field.nullable && self.mode != "nulls-in-non-nullable";
        if self.mode == "huge-string" {
            expect_type(input, &self.column, &[DataType::Utf8])?;
        }
        let plan =
            Plan::passthrough(input).compute(&self.column, field.data_type.clone(), nullable);
        Ok(match self.mode.as_str() {
            "passthrough-missing" => plan
                .computed("ghost", DataType::Int64, true)
                .drop("ghost")
                .read("ghost"),
            _ => plan,
        })
    }
    fn transform(&mut self, mut input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows;
        let mut col = input.columns.remove(0);
        let name = col.name.clone();
        self.calls += 1;
        let negative = |col: &Column| -> Option<(usize, f64)> {
            let values = col.f64_values().ok()?;
            (0..values.len())
                .find(|&i| col.is_valid(i) && values[i] < 0.0)
                .map(|i| (i, values[i]))
        };
        match self.mode.as_str() {
            "honest" => {}
            "flood" => flood(),
            // Row 0 holds HUGE bytes of 'x', the other rows are empty.
            "huge-string" => {
                let len = if rows > 0 { HUGE as i32 } else { 0 };
                let offsets = std::iter::once(0).chain(std::iter::repeat_n(len, rows as usize));
                col.offsets = Some(offsets.collect());
                col.values = Values::Bytes(vec![b'x'; len as usize]);
                col.validity = None;
            }
            // Data-dependent failures, for the error policies.
            "fail-on-negative" => {
                if let Some((row, x)) = negative(&col) {
                    return Err(PluginError::new(format!("negative value {x}"))
                        .in_column(&name)
                        .at_row(row));
                }
            }
            "panic-on-negative" => {
                if let Some((_, x)) = negative(&col) {
                    panic!("cannot handle negative value {x}");
                }
            }
            // Fails every other call of an instance (a transient failure, for retries).
            "flaky" => {
                if self.calls % 2 == 1 {
                    return Err(PluginError::new("transient failure"));
                }
            }
            "print-then-panic" => {
                println!("about to fail on a batch of {rows} rows");
                panic!("liar panics on purpose");
            }
            "wrong-type" => {
                col.data_type = DataType::Int64;
                col.values = Values::I64(vec![7; rows as usize]);
            }
            "short" => match &mut col.values {
                Values::F64(v) => {
                    v.pop();
                }
                Values::I64(v) => {
                    v.pop();
                }
                _ => col.offsets.as_mut().map(|o| o.pop()).map_or((), |_| ()),
            },
            "bad-offsets" => {
                if let Some(o) = &mut col.offsets {
                    if let Some(last) = o.last_mut() {
                        *last += 1000;
                    }
                }
            }
            "bad-utf8" => {
                if let Values::Bytes(b) = &mut col.values {
                    if let Some(first) = b.first_mut() {
                        *first = 0xFF;
                    }
                }
            }
            "nulls-in-non-nullable" => {
                col.validity = Some(vec![0; (rows as usize).div_ceil(8)]);
            }
            "extra-column" => {
                let extra =
                    Column::from_vec("extra", DataType::Int64, vec![1i64; rows as usize], None);
                return Ok(vec![OutputBatch::all_rows(rows, vec![col, extra])]);
            }
            "wrong-rows" => return Ok(vec![OutputBatch::all_rows(rows + 5, vec![col])]),
            "bomb" => {
                // 100× the input's rows, as many output batches.
                let out = (0..100)
                    .map(|_| OutputBatch::all_rows(rows, vec![col.clone()]))
                    .collect();
                return Ok(out);
            }
            "recurse" => {
                let depth = recurse(std::hint::black_box(1));
                return Err(PluginError::new(format!("recursion ended at {depth}")));
            }
            "error" => {
                return Err(PluginError::new("refusing this batch")
                    .in_column(&name)
                    .at_row(3))
            }
            other => return Err(PluginError::new(format!("unknown mode {other}"))),
        }
        Ok(vec![OutputBatch::all_rows(rows, vec![col])])
    }
}

quiver_sdk::export_plugin!(Liar);
