//! Quiver runs sandboxed WebAssembly transform plugins over partitioned Apache Arrow batches.
//!
//! The crate is layered; each module only uses the ones listed above it:
//!
//! 1. Ground: [`partition`] (hash and range partitioning, skew — pure logic), [`sandbox`] (engine
//!    configuration, limits, the empty WASI context), [`io`] (sources, sinks and file formats).
//! 2. [`abi`] — Arrow ↔ WIT batch conversion, column projection and output validation.
//! 3. [`plugin`] — loading, the compile cache, one instance per (plugin, worker), calls with limits.
//! 4. [`pipeline`] — the pipeline file and the chain of plugins.
//! 5. [`batch`] — batch mode: drive a pipeline over bounded input on parallel workers.
//!
//! The `quiver` binary only parses arguments and prints; everything it does is reachable from
//! this library.

pub mod abi;
pub mod batch;
pub mod io;
pub mod partition;
pub mod pipeline;
pub mod plugin;
pub mod report;
pub mod sandbox;
