//! Test fixture: attacks the host through the text, names and resources it controls rather than
//! through its data. Its name (`x/../../vandal` followed by terminal escape sequences) tries to
//! turn every file the host names after a plugin into a path outside the run's output, and to
//! take over the terminal wherever the host prints it. The `mode` parameter picks the rest:
//!
//! - `honest`: copies its input column `column` unchanged;
//! - `fail`: fails every batch with a message full of terminal controls (clear screen, window
//!   title, bell, carriage return and a forged prompt), naming a column whose name has them too;
//! - `fail-huge`: fails with a 10 MiB message;
//! - `panic`: panics with terminal controls in the panic text;
//! - `log`: writes terminal controls to stdout, stderr and the host log, then copies its input;
//! - `hostile-column`: its plan computes a column named with terminal controls;
//! - `hostile-tz`: its plan computes a timestamp column whose time zone is terminal controls;
//! - `many-batches`: returns `count` empty output batches from one call;
//! - `big-output`: returns about `mib` MiB of string data over the batch's rows, as the
//!   computed utf8 column `blob`.

use std::io::Write;

use quiver_sdk::prelude::*;

/// Terminal controls: clear screen, set the window title, bell, return to the line's start and
/// write a forged prompt over it, and a right-to-left override.
const CONTROLS: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}\r$ sudo rm -rf / \u{202e}";

const NAME: &str = "x/../../vandal\u{1b}]0;owned\u{7}\u{1b}[2J";

struct Vandal {
    mode: String,
    column: String,
    count: u64,
    mib: u64,
}

impl Plugin for Vandal {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            NAME,
            "6.6.6\u{1b}[31m",
            "breaks the host's text\u{1b}[2J and paths",
        )
        .param(ParamSpec::text("mode", "how to misbehave\u{7}").required())
        .param(
            ParamSpec::text("column", "the column it copies")
                .default(ParamValue::Text("user".into())),
        )
        .param(
            ParamSpec::int("count", "output batches of `many-batches`")
                .default(ParamValue::Int(5_000_000)),
        )
        .param(ParamSpec::int("mib", "MiB returned by `big-output`").default(ParamValue::Int(64)))
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        Ok(Vandal {
            mode: params.text("mode").unwrap_or_default().into(),
            column: params.text("column").unwrap_or_default().into(),
            count: params.int("count").unwrap_or(0).max(0) as u64,
            mib: params.int("mib").unwrap_or(0).max(0) as u64,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let field = find_field(input, &self.column)?;
        let plan =
            Plan::passthrough(input).compute(&self.column, field.data_type.clone(), field.nullable);
        Ok(match self.mode.as_str() {
            "hostile-column" => plan.computed(&format!("bad{CONTROLS}name"), DataType::Int64, true),
            "hostile-tz" => plan.computed(
                "when",
                DataType::Timestamp(quiver_sdk::TimestampType {
                    unit: quiver_sdk::TimeUnit::Millisecond,
                    timezone: Some(format!("{CONTROLS}/../../etc")),
                }),
                true,
            ),
            "big-output" => plan.computed("blob", DataType::Utf8, false),
            _ => plan,
        })
    }

    fn transform(&mut self, mut input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows;
        let col = input.columns.remove(0);
        match self.mode.as_str() {
            "honest" => {}
            "fail" => {
                return Err(PluginError::new(format!("cannot go on{CONTROLS}"))
                    .in_column(&format!("col{CONTROLS}")))
            }
            "fail-huge" => {
                let mut message = "A".repeat(10 << 20);
                message.replace_range(5 << 20..(5 << 20) + CONTROLS.len(), CONTROLS);
                return Err(PluginError::new(message));
            }
            "panic" => panic!("vandal panics{CONTROLS}"),
            "log" => {
                println!("to stdout{CONTROLS}");
                eprintln!("to stderr{CONTROLS}");
                let _ = std::io::stdout().flush();
                log(Level::Warn, &format!("to the host log{CONTROLS}"));
            }
            "hostile-column" => {
                let bad = Column::from_vec(
                    &format!("bad{CONTROLS}name"),
                    DataType::Int64,
                    vec![1i64; rows as usize],
                    None,
                );
                return Ok(vec![OutputBatch::all_rows(rows, vec![col, bad])]);
            }
            "hostile-tz" => {
                let ts = DataType::Timestamp(quiver_sdk::TimestampType {
                    unit: quiver_sdk::TimeUnit::Millisecond,
                    timezone: Some(format!("{CONTROLS}/../../etc")),
                });
                let when = Column::from_vec("when", ts, vec![0i64; rows as usize], None);
                return Ok(vec![OutputBatch::all_rows(rows, vec![col, when])]);
            }
            "many-batches" => {
                return Ok((0..self.count)
                    .map(|_| OutputBatch::all_rows(0, Vec::new()))
                    .collect())
            }
            "big-output" => {
                let per_row = ((self.mib << 20) / u64::from(rows.max(1))) as usize;
                let mut blob =
                    StringColumnBuilder::with_capacity(rows as usize, per_row * rows as usize);
                for _ in 0..rows {
                    blob.push_with(|b| b.resize(b.len() + per_row, b'v'));
                }
                return Ok(vec![OutputBatch::all_rows(
                    rows,
                    vec![col, blob.finish("blob", DataType::Utf8)],
                )]);
            }
            other => return Err(PluginError::new(format!("unknown mode {other}"))),
        }
        Ok(vec![OutputBatch::all_rows(rows, vec![col])])
    }
}

quiver_sdk::export_plugin!(Vandal);
