//! Quiver's execution layer: what a pipeline is and how it runs over bounded input.
//!
//! Modules, each using only those listed before it:
//!
//! 1. [`policy`] — what to do when a plugin fails on a batch (fail, skip, dead letters by
//!    bisection, retries), when a streaming line does not parse, when an event is late — pure
//!    logic; [`window`] — event-time windows and watermarks, pure logic over Arrow batches;
//!    [`incremental`] — which inputs a pipeline's committed runs read, and which a new run
//!    must.
//! 2. [`pipeline`] — the pipeline file.
//! 3. [`chain`] — a pipeline's plugins as a chain, and one batch run through it under the error
//!    policies.
//! 4. [`report`] — what a run reports.
//! 5. [`batch`] — batch mode: fit and run a pipeline over bounded input on parallel workers,
//!    from files or a lake table into files or a lake table (one atomic commit per run).
//! 6. [`stages`] — a pipeline's stages run in order, each committing on its own.
//!
//! Uses `quiver-data` (files, partitioning), `quiver-lake` (Delta tables) and
//! `quiver-plugin-host` (plugins).

pub mod batch;
pub mod chain;
pub mod incremental;
pub mod pipeline;
pub mod policy;
pub mod report;
pub mod stages;
pub mod window;
