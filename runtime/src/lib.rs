//! Quiver runs sandboxed WebAssembly transform plugins over partitioned Apache Arrow batches.
//!
//! The crate is layered; each module only uses the ones listed above it:
//!
//! 1. Ground: [`partition`] (hash and range partitioning, skew — pure logic), [`sandbox`] (engine
//!    configuration, limits, the empty WASI context), [`io`] (sources, sinks and file formats).
//! 2. [`abi`] — Arrow ↔ WIT batch conversion, column projection and output validation.
//! 3. [`plugin`] — loading, the compile cache, one instance per (plugin, worker), calls with limits.
//! 4. [`pipeline`] — the pipeline file and the chain of plugins; [`fit`] — fitted parameters
//!    (fit → transform) and how fitting is split into passes.
//! 5. [`batch`] — batch mode: fit and run a pipeline over bounded input on parallel workers;
//!    [`report`] — what a run reports.
//!
//! The `quiver` binary only parses arguments and prints; everything it does is reachable from
//! this library.

pub mod abi;
pub mod allocator;
pub mod batch;
pub mod fit;
pub mod io;
pub mod partition;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod report;
pub mod sandbox;
