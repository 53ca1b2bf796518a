//! Test fixture: tries to open a TCP connection to 127.0.0.1:9 through wasi:sockets in
//! `transform`, so the sandbox tests can check that plugins get no network. It fails every
//! batch either way, with an error saying what the connect did.

use quiver_sdk::prelude::*;

const TARGET: &str = "127.0.0.1:9";

struct Dialer;

impl Plugin for Dialer {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "dialer",
            "0.1.0",
            "tries to connect to 127.0.0.1:9 over TCP",
        )
    }
    fn init(_params: Params) -> Result<Self, ParamError> {
        Ok(Dialer)
    }
    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        Ok(Plan::passthrough(input))
    }
    fn transform(&mut self, _input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let outcome = match std::net::TcpStream::connect(TARGET) {
            Ok(_) => format!("connected to {TARGET}"),
            Err(e) => format!("connect to {TARGET} failed: {e}"),
        };
        Err(PluginError::new(outcome))
    }
}

quiver_sdk::export_plugin!(Dialer);
