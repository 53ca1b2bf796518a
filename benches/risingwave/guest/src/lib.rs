//! Guest UDFs for the RisingWave `arrow-udf-wasm` peer benchmark.
//!
//! Built for `wasm32-wasip1`; `arrow-udf` supplies the ABI exports
//! (`alloc`, `dealloc`, `ARROWUDF_VERSION_3_0`, ...) and the `#[function]`
//! macro generates one `arrowudf_*` export per UDF.

use arrow_udf::function;

/// The scale transform: `(x - 3.0) / 2.0`.
#[function("scale(float64) -> float64")]
fn scale(x: f64) -> f64 {
    (x - 3.0) / 2.0
}

/// The filter predicate: `k > 500`.
#[function("gt500(int64) -> boolean")]
fn gt500(k: i64) -> bool {
    k > 500
}
