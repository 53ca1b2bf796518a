//! Quiver runs sandboxed WebAssembly transform plugins over partitioned Apache Arrow batches.
//!
//! The crate is layered; each module only uses the ones listed above it:
//!
//! 1. Ground: [`untrusted`] (plugin-controlled text made safe to show, log, store or use in a
//!    file name — pure logic), [`partition`] (hash and range partitioning, skew — pure logic), [`capability`]
//!    (what a plugin may be granted, and the import check — pure logic at its core),
//!    [`sandbox`] (engine configuration, limits, the WASI context), [`io`] (sources, sinks and
//!    file formats), [`policy`] (error policies and bisection — pure logic), [`checkpoint`]
//!    (the streaming checkpoint protocol — pure logic — and the durable store behind a trait).
//! 2. [`abi`] — Arrow ↔ WIT batch conversion, column projection and output validation.
//! 3. [`plugin`] — loading, the compile cache, one instance per (plugin, worker), calls with limits.
//! 4. [`pipeline`] — the pipeline file and the chain of plugins; [`fit`] — fitted parameters
//!    (fit → transform) and how fitting is split into passes.
//! 5. [`batch`] — batch mode: fit and run a pipeline over bounded input on parallel workers;
//!    [`report`] — what a run reports; [`replay`] — the flight recorder of failing calls;
//!    [`stream`] — streaming mode: a growing input, micro-batches and exactly-once output
//!    through checkpoints.
//!
//! The `quiver` binary only parses arguments and prints; everything it does is reachable from
//! this library.

pub mod abi;
pub mod allocator;
pub mod authoring;
pub mod batch;
pub mod capability;
pub mod checkpoint;
pub mod fit;
pub mod io;
pub mod partition;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod replay;
pub mod report;
pub mod sandbox;
pub mod stream;
pub mod untrusted;
