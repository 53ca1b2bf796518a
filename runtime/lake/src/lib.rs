//! Lake tables for Quiver.
//!
//! - [`delta`]: a Delta Lake table in a local directory — created, written as one atomic
//!   commit per call (append or overwrite, with a transaction id that makes a retried commit
//!   detectable), and read back.
//!
//! Delta goes through `delta_kernel` with its `arrow-60` feature, so the binary keeps the one
//! arrow version of the workspace (the `deltalake` crate is on arrow 59).

pub mod delta;
