//! Quiver runs sandboxed WebAssembly transform plugins over partitioned Apache Arrow batches.
//!
//! The crate is layered; each module only uses the ones listed above it:
//!
//! 1. Ground: [`untrusted`] (plugin-controlled text made safe to show, log, store or use in a
//!    file name — pure logic), [`partition`] (hash and range partitioning, skew — pure logic),
//!    [`capability`] (what a plugin may be granted, and the import check — pure logic at its
//!    core), [`sandbox`] (engine configuration, limits, the WASI context), [`io`] (sources,
//!    sinks and file formats), [`policy`] (what to do when a plugin, a line or a late event
//!    fails, and bisection — pure logic), [`checkpoint`] (the streaming checkpoint protocol —
//!    pure logic — and the durable store behind a trait), [`window`] (event-time windows and
//!    watermarks — pure logic over Arrow batches).
//! 2. [`abi`] — Arrow ↔ WIT batch conversion, column projection and output validation.
//! 3. [`plugin`] — loading, the compile cache, one instance per (plugin, worker), calls with
//!    limits; [`fit`] — fitted parameters (fit → transform) and how fitting is split into
//!    passes.
//! 4. [`replay`] — the flight recorder of failing calls.
//! 5. [`pipeline`] — the pipeline file.
//! 6. [`chain`] — a pipeline's plugins as a chain, and one batch run through it under the
//!    error policies.
//! 7. [`report`] — what a run reports.
//! 8. [`batch`] — batch mode: fit and run a pipeline over bounded input on parallel workers;
//!    [`stream`] — streaming mode: a growing input, micro-batches and exactly-once output
//!    through checkpoints.
//! 9. [`authoring`] — `quiver plugin new/build/test` and the embedded kits.
//!
//! The `quiver` binary only parses arguments and prints; everything it does is reachable from
//! this library.

pub mod abi;
pub mod allocator;
pub mod authoring;
pub mod batch;
pub mod capability;
pub mod chain;
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
pub mod window;
