//! Test fixture: never returns from `transform` (or from `init` with `in-init = true`).

use quiver_sdk::prelude::*;

struct Spin;

fn spin_forever() -> u64 {
    let mut x: u64 = 1;
    loop {
        // black_box keeps the loop from being optimised away.
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        if x == 0 {
            return x;
        }
    }
}

impl Plugin for Spin {
    fn describe() -> PluginInfo {
        PluginInfo::new("spin", "0.1.0", "loops forever").param(ParamSpec::boolean(
            "in-init",
            "loop in init instead of transform",
        ))
    }
    fn init(params: Params) -> Result<Self, ParamError> {
        if params.boolean("in-init") == Some(true) {
            spin_forever();
        }
        Ok(Spin)
    }
    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        Ok(Plan::passthrough(input))
    }
    fn transform(&mut self, _input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let x = spin_forever();
        Err(PluginError::new(format!("unreachable {x}")))
    }
}

quiver_sdk::export_plugin!(Spin);
