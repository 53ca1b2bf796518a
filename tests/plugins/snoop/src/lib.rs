//! Test fixture: tries to reach the host's files and environment through WASI, so the sandbox
//! tests can check what a plugin sees. `transform` performs the `mode`'s one probe and reports
//! the outcome as the computed utf8 column `found`, the same text on every row:
//!
//! - `read-file`: the first 200 characters of `path`, or `error: …`;
//! - `write-file`: writes "written by snoop" to `path`, then `ok` or `error: …`;
//! - `list-dir`: the sorted names in directory `path` joined by `,`, or `error: …`;
//! - `env`: the value of variable `name`, or `unset`;
//! - `env-all`: `<count>:<names joined by ,>` of every visible variable (names sorted).

use quiver_sdk::prelude::*;

const MODES: [&str; 5] = ["read-file", "write-file", "list-dir", "env", "env-all"];

struct Snoop {
    mode: String,
    path: String,
    name: String,
}

impl Snoop {
    /// The outcome of this instance's probe.
    fn probe(&self) -> String {
        let path = &self.path;
        match self.mode.as_str() {
            "read-file" => match std::fs::read_to_string(path) {
                Ok(text) => text.chars().take(200).collect(),
                Err(e) => format!("error: {e}"),
            },
            "write-file" => match std::fs::write(path, "written by snoop") {
                Ok(()) => "ok".into(),
                Err(e) => format!("error: {e}"),
            },
            "list-dir" => {
                let names: std::io::Result<Vec<String>> = std::fs::read_dir(path).and_then(|dir| {
                    dir.map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
                        .collect()
                });
                match names {
                    Ok(mut names) => {
                        names.sort();
                        names.join(",")
                    }
                    Err(e) => format!("error: {e}"),
                }
            }
            "env" => std::env::var(&self.name).unwrap_or_else(|_| "unset".into()),
            "env-all" => {
                let mut names: Vec<String> = std::env::vars_os()
                    .map(|(k, _)| k.to_string_lossy().into_owned())
                    .collect();
                names.sort();
                format!("{}:{}", names.len(), names.join(","))
            }
            other => unreachable!("mode {other} was checked in init"),
        }
    }
}

impl Plugin for Snoop {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "snoop",
            "0.1.0",
            "probes files and environment variables: read-file, write-file, list-dir, env, env-all",
        )
        .param(ParamSpec::text("mode", "what to probe").required())
        .param(ParamSpec::text(
            "path",
            "file or directory for the file modes",
        ))
        .param(ParamSpec::text("name", "environment variable for `env`"))
    }
    fn init(params: Params) -> Result<Self, ParamError> {
        let mode = params.choice("mode", &MODES)?;
        let needs = match mode {
            "env" => Some("name"),
            "env-all" => None,
            _ => Some("path"),
        };
        if let Some(needed) = needs.filter(|n| params.text(n).is_none()) {
            return Err(Params::invalid(needed, format!("mode `{mode}` needs it")));
        }
        Ok(Snoop {
            mode: mode.into(),
            path: params.text("path").unwrap_or_default().into(),
            name: params.text("name").unwrap_or_default().into(),
        })
    }
    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        Ok(Plan::passthrough(input).computed("found", DataType::Utf8, false))
    }
    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let found = self.probe();
        let rows = input.rows as usize;
        let mut column = StringColumnBuilder::with_capacity(rows, rows * found.len());
        for _ in 0..rows {
            column.push(Some(found.as_bytes()));
        }
        let column = column.finish("found", DataType::Utf8);
        Ok(vec![OutputBatch::all_rows(input.rows, vec![column])])
    }
}

quiver_sdk::export_plugin!(Snoop);
