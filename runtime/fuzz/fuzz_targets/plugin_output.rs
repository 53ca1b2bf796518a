//! Fuzzes the validation and conversion of what a plugin returns (`quiver::abi`): `check_caps`,
//! `Plan::check`, `column_out` and `assemble` on a structured case (input batch shape, plan,
//! `output-batch` with arbitrary lengths, offsets, bitmaps, type tags and selection). Any
//! panic, or an accepted output that is not valid Arrow matching the plan, is a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../gen/plugin_output.rs"]
mod gen;

fuzz_target!(|case: gen::Case| {
    let _ = gen::run(&case);
});
