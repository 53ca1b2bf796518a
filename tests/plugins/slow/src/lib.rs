//! Test fixture: passes every batch through after sleeping `ms` milliseconds on the granted
//! monotonic clock (`grants = { clock = true }`), so that a run lasts as long as a test needs
//! (the scheduling tests: runs that must not overlap, a stop that waits for a running run).
//! Sleeping rather than spinning keeps the machine's cores free for the other tests.

use std::time::Duration;

use quiver_sdk::prelude::*;
use quiver_sdk::InvalidParam;

struct Slow {
    pause: Duration,
}

impl Plugin for Slow {
    fn describe() -> PluginInfo {
        PluginInfo::new("slow", "0.1.0", "sleeps `ms` milliseconds per batch").param(
            ParamSpec::int(
                "ms",
                "milliseconds to sleep per batch (needs the clock grant)",
            )
            .required(),
        )
    }
    fn init(params: Params) -> Result<Self, ParamError> {
        let ms = params.int("ms").unwrap_or(0);
        let ms = u64::try_from(ms).map_err(|_| {
            ParamError::Invalid(InvalidParam {
                name: "ms".into(),
                reason: format!("{ms}: must not be negative"),
            })
        })?;
        Ok(Slow {
            pause: Duration::from_millis(ms),
        })
    }
    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        Ok(Plan::passthrough(input))
    }
    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        std::thread::sleep(self.pause);
        Ok(vec![OutputBatch::all_rows(input.rows, Vec::new())])
    }
}

quiver_sdk::export_plugin!(Slow);
