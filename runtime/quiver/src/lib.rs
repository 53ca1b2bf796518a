//! Quiver runs sandboxed WebAssembly transform and feature-engineering plugins over partitioned
//! Apache Arrow batches, in batch and streaming modes.
//!
//! A *pipeline* is a source (Parquet, CSV, JSON-lines or Arrow IPC files, or a growing input), a
//! chain of *plugins* (WebAssembly components written against one WIT contract, in any language
//! that builds one), and a sink. Quiver reads the data, splits it into partitions, runs the chain
//! on parallel workers under hard limits (memory, time per call, output size) and with only the
//! capabilities the pipeline grants, and writes the result atomically with a report of what
//! happened. This crate is the library behind the `quiver` command; it re-exports the crates
//! that do the work, so one dependency gives the whole API.
//!
//! # Running a pipeline from Rust
//!
//! ```no_run
//! use quiver::batch::{self, RunOptions};
//! use quiver::pipeline::Pipeline;
//! use quiver::plugin::Host;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The same file `quiver run pipeline.toml` takes: source, plugins, sink, limits.
//! let pipeline = Pipeline::from_file(std::path::Path::new("pipeline.toml"))?;
//! // One engine for every plugin of the run, sized for its workers; compiled plugins cached.
//! let host = Host::new(pipeline.engine_options()?, Host::default_cache_dir())?;
//! let report = batch::run(&pipeline, &host, &RunOptions::default())?;
//! println!("{} rows in, {} rows out", report.rows_in, report.rows_out);
//! # Ok(())
//! # }
//! ```
//!
//! # Concepts
//!
//! - **Partitions.** Rows are split by key into partitions (hash or range, [`partition`]); each
//!   partition is processed by one worker at a time, in input order.
//! - **Plugins and the sandbox.** A plugin sees only the columns it declares it reads, as Arrow
//!   lays them out ([`abi`]); it runs with no file, network, environment or clock unless granted
//!   ([`capability`]) and under limits ([`sandbox`]); text it controls is escaped before it is
//!   shown or used ([`untrusted`]). One instance per (plugin, worker) is reused ([`plugin`]).
//! - **Fit → transform.** Stateful features (scalers, encoders, quantile buckets) fit over all
//!   the data first ([`fit`]), then transform with the fitted parameters.
//! - **Error policies.** A plugin failing on a batch fails the run, skips the batch or sends the
//!   failing rows to dead letters ([`policy`]); failing calls are recorded for replay
//!   ([`replay`]).
//! - **Streaming and checkpoints.** A streaming run cuts a growing input into micro-batches and
//!   commits output exactly once through checkpoints ([`stream`], [`checkpoint`]).
//!
//! # How the crates fit
//!
//! Each crate uses only the ones listed before it:
//!
//! | crate | modules here | what it holds |
//! |---|---|---|
//! | `quiver-durable` | [`durable`] | temporary names, fsync, rename, directory fsync: how every writer makes a file survive a crash |
//! | `quiver-schedule` | [`schedule`] | scheduling of batch pipelines: the `[schedule]` table, fire times and retries (pure), the run history, the per-pipeline lock across processes, the scheduler loop; no Arrow, no wasmtime |
//! | `quiver-checkpoint` | [`checkpoint`] | the checkpoint protocol (pure) and its durable store; no Arrow, no wasmtime |
//! | `quiver-coordination` | [`coordination`] | cluster mode's decisions (pure): partition assignment, failure detection, leases, fencing, idempotent ingest, log purging; no Arrow, no tokio, no wasmtime |
//! | `quiver-transport` | [`transport`] | cluster mode's gRPC between nodes and from clients: Raft and control calls with opaque payloads, timeouts, backoff from unreachable peers; no Arrow, no wasmtime |
//! | `quiver-replication` | [`replication`] | cluster mode's replicated state: one openraft group's commands, deterministic state machine, durable checksummed log and snapshots; no Arrow, no wasmtime |
//! | `quiver-node` | [`node`] | a node of a cluster: Raft over the transport, control calls (status, join, forwarded writes), timings; leader failover and follower catch-up; no Arrow, no wasmtime |
//! | `quiver-data` | [`io`], [`partition`] | sources, sinks, formats; hash and range partitioning, skew; Arrow and Parquet, no wasmtime |
//! | `quiver-lake` | [`lake`] | Delta Lake tables through delta_kernel: versions and their files, writers of one atomic commit, history, compaction, vacuum; no wasmtime |
//! | `quiver-plugin-host` | [`untrusted`], [`capability`], [`sandbox`], [`abi`], [`plugin`], [`fit`], [`replay`] | the only crate with wasmtime |
//! | `quiver-exec` | [`policy`], [`window`], [`pipeline`], [`chain`], [`report`], [`batch`] | the pipeline file, the chain runner, batch mode |
//! | `quiver-stream` | [`stream`] | streaming mode |
//! | `quiver-worker` | [`worker`] | a cluster node's worker half: the HTTP ingest that splits events into partitions at the door, the owned partitions run by streaming mode over the replicated events, checkpoints committed through the log and fenced by generation |
//! | `quiver-authoring` | [`authoring`] | `quiver plugin new/build/test` and the embedded kits |
//! | `quiver-cli` | — | the `quiver` binary: arguments, progress and printing only |

pub use quiver_authoring as authoring;
pub use quiver_checkpoint as checkpoint;
pub use quiver_coordination as coordination;
pub use quiver_data::{io, partition};
pub use quiver_durable as durable;
pub use quiver_exec::{batch, chain, incremental, pipeline, policy, report, stages, window};
pub use quiver_lake as lake;
pub use quiver_node as node;
pub use quiver_plugin_host::{abi, capability, fit, plugin, replay, sandbox, untrusted};
pub use quiver_replication as replication;
pub use quiver_schedule as schedule;
pub use quiver_stream as stream;
pub use quiver_transport as transport;
pub use quiver_worker as worker;
