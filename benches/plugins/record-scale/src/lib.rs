//! Benchmark baseline: `scale` in the record-at-a-time ABI. A record is one f64 (8 bytes LE);
//! the result is (x − 3) / 2.

mod bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({ path: "../../record.wit", world: "per-record", pub_export_macro: true });
}
use bindings::Guest;

struct Scale;

impl Guest for Scale {
    fn process(input: Vec<u8>) -> Option<Vec<u8>> {
        let x = f64::from_le_bytes(input.get(..8)?.try_into().ok()?);
        Some(((x - 3.0) / 2.0).to_le_bytes().to_vec())
    }
}

bindings::export!(Scale with_types_in bindings);
