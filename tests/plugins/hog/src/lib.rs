//! Test fixture: allocates memory without bound in `transform` (touching it so it is real).

use quiver_sdk::prelude::*;

struct Hog {
    kept: Vec<Vec<u8>>,
}

impl Plugin for Hog {
    fn describe() -> PluginInfo {
        PluginInfo::new("hog", "0.1.0", "allocates until stopped")
    }
    fn init(_params: Params) -> Result<Self, ParamError> {
        Ok(Hog { kept: Vec::new() })
    }
    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        Ok(Plan::passthrough(input))
    }
    fn transform(&mut self, _input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        loop {
            self.kept.push(vec![0xAB; 1 << 20]);
        }
    }
}

quiver_sdk::export_plugin!(Hog);
