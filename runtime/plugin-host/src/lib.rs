//! Quiver's plugin host: everything between the host and a WebAssembly plugin, and the only
//! Quiver crate that depends on wasmtime.
//!
//! Modules, each using only those listed before it:
//!
//! 1. [`untrusted`] — plugin-controlled text made safe to show, log, store or use in a file
//!    name (pure logic); [`capability`] — what a plugin may be granted, and the import check;
//!    [`sandbox`] — engine configuration, limits, the WASI context.
//! 2. [`abi`] — Arrow ↔ WIT batch conversion, column projection and output validation.
//! 3. [`plugin`] — loading, the compile cache, one instance per (plugin, worker), calls with
//!    limits; [`fit`] — fitted parameters (fit → transform) and how fitting is split into
//!    passes.
//! 4. [`replay`] — the flight recorder of failing calls, and `quiver replay`.
//!
//! Uses Arrow and wasmtime; no other Quiver crate.

pub mod abi;
pub mod capability;
pub mod fit;
pub mod plugin;
pub mod replay;
pub mod sandbox;
pub mod untrusted;
