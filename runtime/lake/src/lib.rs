//! Lake tables for Quiver.
//!
//! - [`delta`]: a Delta Lake table in a local directory — the data files of a version (or
//!   those added since a version, for incremental reads), a [`delta::TableWriter`] that adds
//!   one atomic commit (append or overwrite, optionally carrying a transaction id that makes a
//!   retried commit a no-op), files staged now and published in one commit later (a streaming
//!   epoch's), the commit history, and maintenance (compaction, vacuum).
//!
//! Delta goes through `delta_kernel` with its `arrow-60` feature, so the binary keeps the one
//! arrow version of the workspace (the `deltalake` crate is on arrow 59). The kernel reads the
//! log and makes commits; data files are written and read with the workspace's Parquet.

pub mod delta;

pub use delta::{LakeError, Table};
