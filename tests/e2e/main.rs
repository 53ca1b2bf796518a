//! End-to-end tests: the real `quiver` binary and real plugin components (built from source by
//! `plugins/build.sh`) on real files. Results are compared with reference computations written
//! here, independently of the runtime.

#![allow(missing_docs)]

mod authoring;
mod bad_flags_and_signals;
mod bad_input;
mod capabilities;
mod chain;
mod cluster;
mod cluster_jobs;
mod fault_proxy;
mod features;
mod features_categorical;
mod features_numeric;
mod features_rowwise;
mod hostile;
mod lake;
mod limits;
mod plugin_text;
mod policies;
mod properties;
mod schedule;
mod stream;
mod stream_lake;
mod stream_operations;
mod stream_sources;
mod stream_windows;
mod support;
mod table_maintenance;
