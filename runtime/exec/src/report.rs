//! The run report: what a run read, did and wrote, printed at the end of `quiver run`.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::policy::PolicyCounts;
use quiver_data::io::SinkSummary;
use quiver_data::partition::SkewReport;
use quiver_plugin_host::plugin::Metrics;
use quiver_plugin_host::sandbox::Limits;

/// A partition is reported as skewed when its size exceeds this multiple of the mean.
pub const SKEW_THRESHOLD: f64 = 1.5;

/// Figures of one plugin of the chain, summed over workers.
#[derive(Debug, Clone)]
pub struct PluginReport {
    /// Name from `describe`.
    pub name: String,
    /// Version from `describe`.
    pub version: String,
    /// SHA-256 of the component.
    pub sha256: String,
    /// Load (and compile or cache fetch) time.
    pub load_time: Duration,
    /// Limits it ran under.
    pub limits: Limits,
    /// What it was granted, in words (`nothing` by default).
    pub grants: String,
    /// Calls, rows, bytes, time, memory.
    pub metrics: Metrics,
    /// What its error policy did.
    pub incidents: PolicyCounts,
}

/// Everything a run reports.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Rows read.
    pub rows_in: u64,
    /// Batches read.
    pub batches_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Worker threads.
    pub workers: usize,
    /// How rows were partitioned, if they were.
    pub partitioning: Option<String>,
    /// Rows per partition and the hottest keys.
    pub skew: SkewReport,
    /// Passes over the input made to fit aggregates before the run (0 if none, or fitted
    /// parameters came from a file).
    pub fit_passes: usize,
    /// Time spent fitting.
    pub fit_time: Duration,
    /// The fitted-parameters file applied, if any.
    pub fitted_from: Option<std::path::PathBuf>,
    /// The dead-letter directory and the rows written there, if any.
    pub dead_letters: Option<(std::path::PathBuf, u64)>,
    /// Per plugin, in chain order.
    pub plugins: Vec<PluginReport>,
    /// What was written.
    pub output: SinkSummary,
    /// The table version the run committed, for a table sink.
    pub table_commit: Option<TableCommit>,
    /// Which inputs were read, and which an incremental run left out.
    pub inputs: InputsReport,
    /// Peak resident memory of the host process, in bytes, if the platform tells.
    pub host_peak_rss: Option<u64>,
}

impl RunReport {
    /// The report of an incremental run that found nothing new to read.
    pub fn nothing_new(inputs: InputsReport, output: std::path::PathBuf, wall: Duration) -> Self {
        RunReport {
            rows_in: 0,
            batches_in: 0,
            rows_out: 0,
            wall,
            workers: 0,
            partitioning: None,
            skew: SkewReport {
                rows_per_partition: Vec::new(),
                max_over_mean: 1.0,
                hottest: Vec::new(),
            },
            fit_passes: 0,
            fit_time: Duration::ZERO,
            fitted_from: None,
            dead_letters: None,
            plugins: Vec::new(),
            output: SinkSummary {
                path: output,
                files: 0,
                rows: 0,
                bytes: 0,
            },
            table_commit: None,
            inputs,
            host_peak_rss: None,
        }
    }
}

/// A run's commit to a table sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCommit {
    /// The table version made.
    pub version: u64,
    /// The run number recorded with it (the pipeline stage's transaction version).
    pub run: i64,
}

/// Which inputs a run read, and which it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputsReport {
    /// The run read only what earlier runs had not.
    pub incremental: bool,
    /// Input files (or table data files) read.
    pub read_paths: Vec<std::path::PathBuf>,
    /// Input files left out as already processed by a committed run.
    pub done: Vec<std::path::PathBuf>,
    /// Input files changed since a committed run processed them.
    pub changed: Vec<std::path::PathBuf>,
    /// For a table source: (the version the last committed run read up to, the version read
    /// now).
    pub table_versions: Option<(Option<u64>, u64)>,
}

impl InputsReport {
    /// How many input files (or table data files) were read.
    pub fn read(&self) -> usize {
        self.read_paths.len()
    }

    /// Whether an incremental run found nothing to read.
    pub fn nothing_new(&self) -> bool {
        self.incremental && self.read_paths.is_empty()
    }
}

impl fmt::Display for InputsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((from, to)) = self.table_versions {
            match from {
                Some(from) if from >= to => writeln!(
                    f,
                    "table source: at version {to}, nothing new since the last run"
                )?,
                Some(from) => writeln!(
                    f,
                    "table source: versions {}..={to} ({} data files) added since the last run",
                    from + 1,
                    self.read()
                )?,
                None => writeln!(f, "table source: version {to} ({} data files)", self.read())?,
            }
        }
        if !self.incremental || self.table_versions.is_some() {
            return Ok(());
        }
        writeln!(
            f,
            "incremental: {} new input file(s) read, {} skipped as already done{}",
            self.read(),
            self.done.len(),
            match self.changed.len() {
                0 => String::new(),
                n => format!(", {n} changed since processed"),
            }
        )?;
        for path in &self.changed {
            writeln!(f, "  changed: {}", path.display())?;
        }
        for path in self.done.iter().take(SKIPPED_LISTED) {
            writeln!(f, "  skipped: {}", path.display())?;
        }
        if self.done.len() > SKIPPED_LISTED {
            writeln!(
                f,
                "  … and {} more skipped (the JSON report lists them all)",
                self.done.len() - SKIPPED_LISTED
            )?;
        }
        Ok(())
    }
}

/// How many inputs skipped as already done the text report names (the JSON report names all).
const SKIPPED_LISTED: usize = 10;

/// Peak resident memory of this process so far (`VmHWM` on Linux), in bytes.
pub fn host_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// "12.3M"-style counts, for fuel.
fn short(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=9_999_999 => format!("{:.1}k", n as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

impl PluginReport {
    /// Each limit with the most one call or batch used of it: `(what, used, limit)`.
    pub fn limits_used(&self) -> Vec<(&'static str, String, String)> {
        let (m, l) = (&self.metrics, &self.limits);
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        let mut rows = vec![
            (
                "memory",
                format!("{:.1}", mib(m.peak_memory)),
                format!("{} MiB", l.memory_mib),
            ),
            (
                "time per call",
                ms(m.max_call_time),
                format!("{} ms", l.timeout_ms),
            ),
            (
                "output rows per batch",
                m.max_batch_rows_out.to_string(),
                l.max_output_rows.to_string(),
            ),
            (
                "output per batch",
                format!("{:.1}", mib(m.max_batch_bytes_out)),
                format!("{} MiB", l.max_output_mib),
            ),
            (
                "log per call",
                format!("{:.1}", m.max_call_log as f64 / 1024.0),
                format!("{} KiB", l.log_kib),
            ),
            (
                "instantiation",
                ms(m.instantiate_time),
                format!("{} ms", l.instantiate_ms),
            ),
        ];
        if let Some(fuel) = l.fuel {
            rows.push(("fuel per call", short(m.max_call_fuel), short(fuel)));
        }
        rows
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inputs)?;
        if self.inputs.nothing_new() {
            return writeln!(f, "nothing new to read: no commit made");
        }
        if let Some(c) = &self.table_commit {
            writeln!(
                f,
                "committed table version {} (run {}) at {}",
                c.version,
                c.run,
                self.output.path.display()
            )?;
        }
        writeln!(
            f,
            "read {} rows in {} batches, wrote {} rows to {} ({} file{}, {:.1} MiB) in {:.2?} ({:.0} rows/s, {} worker{})",
            self.rows_in,
            self.batches_in,
            self.rows_out,
            self.output.path.display(),
            self.output.files,
            if self.output.files == 1 { "" } else { "s" },
            mib(self.output.bytes),
            self.wall,
            per_sec(self.rows_in, self.wall),
            self.workers,
            if self.workers == 1 { "" } else { "s" },
        )?;
        if self.fit_passes > 0 {
            writeln!(
                f,
                "fitted in {} pass{} over the input ({:.2?}) before the run",
                self.fit_passes,
                if self.fit_passes == 1 { "" } else { "es" },
                self.fit_time
            )?;
        }
        if let Some(path) = &self.fitted_from {
            writeln!(f, "fitted parameters from {}", path.display())?;
        }
        if !self.plugins.is_empty() {
            writeln!(f, "plugins:")?;
            writeln!(
                f,
                "  {:<16} {:>12} {:>12} {:>8} {:>10} {:>10} {:>10} {:>9}",
                "plugin", "rows in", "rows out", "calls", "time", "MiB in", "MiB out", "peak mem"
            )?;
        }
        for p in &self.plugins {
            let m = &p.metrics;
            writeln!(
                f,
                "  {:<16} {:>12} {:>12} {:>8} {:>10.2?} {:>10.1} {:>10.1} {:>5.0}/{} MiB{}",
                format!("{} {}", p.name, p.version),
                m.rows_in,
                m.rows_out,
                m.calls,
                m.time,
                mib(m.bytes_in),
                mib(m.bytes_out),
                mib(m.peak_memory),
                p.limits.memory_mib,
                if m.restarts > 0 {
                    format!(" ({} restarts)", m.restarts)
                } else {
                    String::new()
                },
            )?;
        }
        if !self.plugins.is_empty() {
            writeln!(
                f,
                "limits (the most one call or batch used / the limit; Wasm stack {} KiB):",
                self.plugins
                    .iter()
                    .map(|p| p.limits.stack_kib)
                    .max()
                    .unwrap_or_default()
            )?;
        }
        for p in &self.plugins {
            let used: Vec<String> = p
                .limits_used()
                .iter()
                .map(|(what, used, limit)| format!("{what} {used}/{limit}"))
                .collect();
            writeln!(f, "  {:<16} {}", p.name, used.join(", "))?;
            let m = &p.metrics;
            if m.fuel > 0 {
                writeln!(f, "  {:<16} fuel burnt {}", "", short(m.fuel))?;
            }
            if m.log_dropped > 0 {
                writeln!(
                    f,
                    "  {:<16} dropped {:.1} MiB of log output over the limit",
                    "",
                    mib(m.log_dropped)
                )?;
            }
            if p.grants != "nothing" {
                writeln!(f, "  {:<16} granted: {}", "", p.grants)?;
            }
        }
        for p in &self.plugins {
            let c = &p.incidents;
            if c.skipped_batches + c.dead_rows + c.retries > 0 {
                writeln!(
                    f,
                    "  {}: {} batch{} skipped ({} rows), {} row{} to dead letters, {} retr{}",
                    p.name,
                    c.skipped_batches,
                    if c.skipped_batches == 1 { "" } else { "es" },
                    c.skipped_rows,
                    c.dead_rows,
                    if c.dead_rows == 1 { "" } else { "s" },
                    c.retries,
                    if c.retries == 1 { "y" } else { "ies" },
                )?;
            }
        }
        if let Some((dir, rows)) = &self.dead_letters {
            writeln!(f, "dead letters: {rows} rows in {}", dir.display())?;
        }
        let s = &self.skew;
        match &self.partitioning {
            Some(p) => writeln!(
                f,
                "partitioning: {p}\n  rows per partition: {:?}; max/mean {:.2}{}",
                s.rows_per_partition,
                s.max_over_mean,
                if s.is_skewed(SKEW_THRESHOLD) { " — SKEWED" } else { "" }
            )?,
            None => writeln!(
                f,
                "partitioning: none (whole batches round-robin over workers, input order kept)\n  rows per worker: {:?}",
                s.rows_per_partition
            )?,
        }
        if !s.hottest.is_empty() {
            let hot: Vec<String> = s
                .hottest
                .iter()
                .map(|h| format!("{} ({} rows, {:.1}%)", h.key, h.rows, h.share * 100.0))
                .collect();
            writeln!(f, "  hottest keys: {}", hot.join(", "))?;
        }
        if let Some(rss) = self.host_peak_rss {
            writeln!(f, "host peak memory (RSS): {:.0} MiB", mib(rss))?;
        }
        Ok(())
    }
}

/// A machine-readable form of the report (`quiver run --report-json`).
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    rows_in: u64,
    rows_out: u64,
    wall_seconds: f64,
    workers: usize,
    output: String,
    files: usize,
    partitioning: Option<&'a str>,
    skew: &'a SkewReport,
    plugins: Vec<JsonPlugin<'a>>,
    host_peak_rss_bytes: Option<u64>,
    /// The table version committed, for a table sink.
    table_version: Option<u64>,
    /// The run number committed with it.
    table_run: Option<i64>,
    /// Input files (or table data files) read.
    inputs_read: usize,
    /// Input files left out as already processed.
    inputs_skipped: Vec<String>,
    /// Input files changed since processed.
    inputs_changed: Vec<String>,
}

#[derive(Debug, Serialize)]
struct JsonPlugin<'a> {
    name: &'a str,
    version: &'a str,
    sha256: &'a str,
    calls: u64,
    rows_in: u64,
    rows_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    seconds: f64,
    peak_memory_bytes: u64,
    restarts: u64,
    fuel: u64,
    max_call_fuel: u64,
    max_call_seconds: f64,
    max_batch_rows_out: u64,
    max_batch_bytes_out: u64,
    max_call_log_bytes: u64,
    log_dropped_bytes: u64,
    instantiate_seconds: f64,
    limits: &'a Limits,
    grants: &'a str,
}

impl RunReport {
    /// The report as JSON-serialisable data.
    pub fn json(&self) -> JsonReport<'_> {
        JsonReport {
            rows_in: self.rows_in,
            rows_out: self.rows_out,
            wall_seconds: self.wall.as_secs_f64(),
            workers: self.workers,
            output: self.output.path.display().to_string(),
            files: self.output.files,
            partitioning: self.partitioning.as_deref(),
            skew: &self.skew,
            plugins: self
                .plugins
                .iter()
                .map(|p| JsonPlugin {
                    name: &p.name,
                    version: &p.version,
                    sha256: &p.sha256,
                    calls: p.metrics.calls,
                    rows_in: p.metrics.rows_in,
                    rows_out: p.metrics.rows_out,
                    bytes_in: p.metrics.bytes_in,
                    bytes_out: p.metrics.bytes_out,
                    seconds: p.metrics.time.as_secs_f64(),
                    peak_memory_bytes: p.metrics.peak_memory,
                    restarts: p.metrics.restarts,
                    fuel: p.metrics.fuel,
                    max_call_fuel: p.metrics.max_call_fuel,
                    max_call_seconds: p.metrics.max_call_time.as_secs_f64(),
                    max_batch_rows_out: p.metrics.max_batch_rows_out,
                    max_batch_bytes_out: p.metrics.max_batch_bytes_out,
                    max_call_log_bytes: p.metrics.max_call_log,
                    log_dropped_bytes: p.metrics.log_dropped,
                    instantiate_seconds: p.metrics.instantiate_time.as_secs_f64(),
                    limits: &p.limits,
                    grants: &p.grants,
                })
                .collect(),
            host_peak_rss_bytes: self.host_peak_rss,
            table_version: self.table_commit.as_ref().map(|c| c.version),
            table_run: self.table_commit.as_ref().map(|c| c.run),
            inputs_read: self.inputs.read(),
            inputs_skipped: paths(&self.inputs.done),
            inputs_changed: paths(&self.inputs.changed),
        }
    }
}

fn paths(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}
