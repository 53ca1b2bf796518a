//! Quiver's data layer: reading and writing the files a pipeline works on, and splitting rows
//! into partitions.
//!
//! - [`io`]: sources (Parquet, CSV, JSON lines, Arrow IPC; files, globs, directories; schema
//!   inference and unification), sinks (one file or a Hive-style directory, written under a
//!   temporary name and renamed into place on commit), and the checks on what an output may
//!   replace.
//! - [`partition`]: hash partitioning (xxh3, murmur3, FNV-1a, MD5 over a documented key
//!   encoding), range partitioning (boundaries by hand or from a sample's quantiles), and skew
//!   and hot-key tracking — pure logic over Arrow batches.
//!
//! Uses Arrow, Parquet and `quiver-durable`; no WebAssembly.

pub mod io;
pub mod partition;
