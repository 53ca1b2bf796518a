//! Test fixture: uses WASI clocks and randomness, so the sandbox tests can check time limits
//! and what time and entropy a plugin sees. Modes:
//!
//! - `spin`: busy-loops on `Instant::now()` for an hour (never returns in practice);
//! - `sleep`: sleeps an hour (a wasi:clocks subscription blocked on wasi:io/poll), then
//!   passes the batch through;
//! - `now`: adds the int64 columns `wall_ns` (wall clock since the Unix epoch), `mono_ns`
//!   (monotonic time since `init`) and `random` (8 bytes from wasi:random), each one value
//!   per batch, repeated on every row.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quiver_sdk::prelude::*;

const MODES: [&str; 3] = ["spin", "sleep", "now"];
const HOUR: Duration = Duration::from_secs(3600);

struct Clock {
    mode: String,
    started: Instant,
}

impl Plugin for Clock {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "clock",
            "0.1.0",
            "reads clocks and randomness: spin, sleep, now",
        )
        .param(ParamSpec::text("mode", "spin, sleep or now").required())
    }
    fn init(params: Params) -> Result<Self, ParamError> {
        let mode = params.choice("mode", &MODES)?;
        Ok(Clock {
            mode: mode.into(),
            started: Instant::now(),
        })
    }
    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let plan = Plan::passthrough(input);
        Ok(match self.mode.as_str() {
            "now" => plan
                .computed("wall_ns", DataType::Int64, false)
                .computed("mono_ns", DataType::Int64, false)
                .computed("random", DataType::Int64, false),
            _ => plan,
        })
    }
    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows;
        match self.mode.as_str() {
            "spin" => {
                let start = Instant::now();
                while std::hint::black_box(Instant::now()).duration_since(start) < HOUR {}
                Ok(vec![OutputBatch::all_rows(rows, Vec::new())])
            }
            "sleep" => {
                std::thread::sleep(HOUR);
                Ok(vec![OutputBatch::all_rows(rows, Vec::new())])
            }
            _ => {
                let wall = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_err(|e| PluginError::new(format!("wall clock before 1970: {e}")))?
                    .as_nanos() as i64;
                let mono = self.started.elapsed().as_nanos() as i64;
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes)
                    .map_err(|e| PluginError::new(format!("getrandom failed: {e}")))?;
                let random = i64::from_le_bytes(bytes);
                let column = |name: &str, value: i64| {
                    Column::from_vec(name, DataType::Int64, vec![value; rows as usize], None)
                };
                let columns = vec![
                    column("wall_ns", wall),
                    column("mono_ns", mono),
                    column("random", random),
                ];
                Ok(vec![OutputBatch::all_rows(rows, columns)])
            }
        }
    }
}

quiver_sdk::export_plugin!(Clock);
