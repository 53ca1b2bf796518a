//! Fuzzes the pipeline-file parser (`quiver::pipeline`): `Pipeline::from_toml`, `validate`,
//! `PluginSpec::params` / `limits` and `parse_cli_param`, on the raw input as text and on a
//! structured case (a TOML document from a grammar of pipeline keys and values plus noise,
//! edited at the byte level, and command-line parameters). Errors are fine; panics are not,
//! nor an acceptance the naive models in `gen/pipeline_file.rs` disagree with.

#![no_main]

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../gen/pipeline_file.rs"]
mod gen;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        gen::check_text(text);
        if let Some(line) = text.lines().next() {
            gen::check_cli(line);
        }
    }
    if let Ok(case) = gen::FileCase::arbitrary_take_rest(Unstructured::new(data)) {
        gen::run(&case);
    }
});
