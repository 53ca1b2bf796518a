//! Benchmark baseline: `filter k > 500` in the record-at-a-time ABI. A record is one i64
//! (8 bytes LE); it is returned unchanged when kept.

mod bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({ path: "../../record.wit", world: "per-record", pub_export_macro: true });
}
use bindings::Guest;

struct Filter;

impl Guest for Filter {
    fn process(input: Vec<u8>) -> Option<Vec<u8>> {
        let k = i64::from_le_bytes(input.get(..8)?.try_into().ok()?);
        (k > 500).then_some(input)
    }
}

bindings::export!(Filter with_types_in bindings);
