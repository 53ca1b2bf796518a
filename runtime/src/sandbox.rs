//! The sandbox every plugin runs in: engine configuration, per-plugin limits, and a WASI context
//! that grants nothing.
//!
//! - Time: epoch interruption. One background thread advances the engine's epoch every
//!   [`EPOCH_TICK`]; each call gets a deadline of `timeout-ms` worth of ticks.
//! - Memory: a [`ResourceLimiter`] that refuses (and traps on) growth past the plugin's limit and
//!   records the peak and the refused size, so errors can say "memory limit of 64 MiB".
//! - WASI: clocks, random, environment (empty), stdio and the filesystem interfaces (no preopened
//!   directory) are linked so ordinary `std` programs instantiate; `wasi:sockets` and
//!   `wasi:http` are never linked, so a plugin that imports them is refused at load time.
//! - stdout/stderr and `host.log` go to the host's `tracing` log, capped per call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::{Config, Engine, OptLevel, PoolingAllocationConfig, ResourceLimiter};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// How often the epoch advances; the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Largest linear memory any plugin may have, whatever its configured limit (a 32-bit memory
/// cannot exceed 4 GiB anyway).
const MAX_MEMORY_BYTES: u64 = 4 << 30;

/// Wasm stack available to plugins (engine-wide).
const WASM_STACK_BYTES: usize = 1 << 20;

/// Limits of one plugin, as set in the pipeline file's `[limits]` table or per plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Limits {
    /// Linear memory the plugin may grow to, in MiB.
    pub memory_mib: u64,
    /// Wall time one call (`init`, `prepare` or `transform`) may take, in milliseconds.
    pub timeout_ms: u64,
    /// Rows one input batch may turn into.
    pub max_output_rows: u64,
    /// Bytes of column data one input batch may turn into, in MiB.
    pub max_output_mib: u64,
    /// Bytes of stdout, stderr and `host.log` output kept per call, in KiB; the rest is dropped
    /// (and counted).
    pub log_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 1024,
            timeout_ms: 30_000,
            max_output_rows: 64 << 20,
            max_output_mib: 2048,
            log_kib: 64,
        }
    }
}

impl Limits {
    /// Memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        (self.memory_mib << 20).min(MAX_MEMORY_BYTES)
    }

    /// Call deadline in epoch ticks (at least one).
    pub fn deadline_ticks(&self) -> u64 {
        (self.timeout_ms / EPOCH_TICK.as_millis() as u64).max(1) + 1
    }

    /// Output byte cap in bytes.
    pub fn max_output_bytes(&self) -> u64 {
        self.max_output_mib << 20
    }
}

/// Builds the engine shared by every plugin of a process and starts its epoch ticker.
///
/// `max_instances` bounds how many plugin instances can be alive at once (the pooling
/// allocator reserves address space for that many).
pub fn engine(max_instances: u32) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    // A Rust component holds a handful of core instances (main module plus shims); leave room
    // for larger guests such as interpreters.
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 16)
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 16)
        .total_stacks(max_instances)
        .max_memory_size(MAX_MEMORY_BYTES as usize);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        .cranelift_opt_level(OptLevel::Speed)
        .allocation_strategy(pool);
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("quiver-epoch".into())
        .spawn(move || {
            // Ends when the last handle to the engine is gone.
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// Enforces the memory limit and records what the plugin used.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: usize,
    /// Largest linear memory size reached, in bytes.
    pub peak: usize,
    /// Size the plugin asked for when it was refused, if it was.
    pub refused: Option<usize>,
}

impl MemoryLimiter {
    fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit: limit as usize,
            peak: 0,
            refused: None,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            // An error (not `Ok(false)`) traps at once, the same as
            // `StoreLimits::trap_on_grow_failure`, so the failure cannot be ignored.
            wasmtime::bail!(
                "memory limit of {} MiB exceeded (the plugin asked for {} MiB)",
                self.limit >> 20,
                desired.div_ceil(1 << 20)
            );
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Output a plugin wrote (stdout, stderr, `host.log`), kept up to a cap per call.
#[derive(Debug, Clone)]
pub struct LogCapture {
    inner: Arc<Mutex<LogBuffer>>,
}

#[derive(Debug, Default)]
struct LogBuffer {
    lines: Vec<(LogSource, String)>,
    partial: [Vec<u8>; 2],
    bytes: usize,
    cap: usize,
    dropped: usize,
}

/// Where a captured log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The plugin's stdout.
    Stdout,
    /// The plugin's stderr.
    Stderr,
    /// The `host.log` import, with its level.
    Log(tracing::Level),
}

impl LogCapture {
    /// A capture keeping at most `cap` bytes per call.
    pub fn new(cap: usize) -> Self {
        LogCapture {
            inner: Arc::new(Mutex::new(LogBuffer {
                cap,
                ..Default::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogBuffer> {
        // A panic while holding this lock cannot leave the buffer inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a `host.log` message.
    pub fn log(&self, level: tracing::Level, message: &str) {
        let mut b = self.lock();
        if b.admit(message.len()) {
            b.lines.push((LogSource::Log(level), message.to_owned()));
        }
    }

    fn write_stream(&self, stream: usize, bytes: &[u8]) {
        let mut b = self.lock();
        let source = [LogSource::Stdout, LogSource::Stderr][stream];
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&c| c == b'\n') {
            let mut line = std::mem::take(&mut b.partial[stream]);
            line.extend_from_slice(&rest[..nl]);
            if b.admit(line.len() + 1) {
                b.lines
                    .push((source, String::from_utf8_lossy(&line).into_owned()));
            }
            rest = &rest[nl + 1..];
        }
        if b.partial[stream].len() + rest.len() <= b.cap {
            b.partial[stream].extend_from_slice(rest);
        }
    }

    /// Takes what was captured since the last call: the lines, and how many bytes were dropped
    /// because the cap was reached.
    pub fn drain(&self) -> (Vec<(LogSource, String)>, usize) {
        let mut b = self.lock();
        for stream in 0..2 {
            let rest = std::mem::take(&mut b.partial[stream]);
            if !rest.is_empty() && b.admit(rest.len()) {
                let source = [LogSource::Stdout, LogSource::Stderr][stream];
                b.lines
                    .push((source, String::from_utf8_lossy(&rest).into_owned()));
            }
        }
        let dropped = std::mem::take(&mut b.dropped);
        b.bytes = 0;
        (std::mem::take(&mut b.lines), dropped)
    }

    fn stream(&self, index: usize) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            index,
        }
    }
}

impl LogBuffer {
    fn admit(&mut self, len: usize) -> bool {
        if self.bytes + len > self.cap {
            self.dropped += len;
            false
        } else {
            self.bytes += len;
            true
        }
    }
}

/// stdout (index 0) or stderr (index 1) of a plugin, as a WASI output stream.
#[derive(Clone)]
struct CaptureStream {
    capture: LogCapture,
    index: usize,
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.capture.write_stream(self.index, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.capture.write_stream(self.index, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl StdoutStream for CaptureStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// Everything a plugin's store holds.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory limiter (peak and refused sizes are read after calls).
    pub limiter: MemoryLimiter,
    /// The plugin's captured output.
    pub logs: LogCapture,
}

impl StoreState {
    /// A store state granting nothing, with the given limits.
    pub fn new(limits: &Limits) -> Self {
        let logs = LogCapture::new((limits.log_kib << 10) as usize);
        let wasi = WasiCtxBuilder::new()
            .stdout(logs.stream(0))
            .stderr(logs.stream(1))
            .build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory_bytes()),
            logs,
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Adds the WASI interfaces plugins may import — everything but sockets and HTTP — to `linker`.
///
/// With the empty context of [`StoreState::new`] these give no access to anything outside the
/// sandbox: no preopened directories, no environment variables, no arguments, no stdin.
pub fn add_wasi_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sync};
    type T = StoreState;
    let l = linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    sync::io::poll::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    sync::io::streams::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    sync::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_capture_splits_lines_and_caps_bytes() {
        let capture = LogCapture::new(16);
        capture.write_stream(0, b"hello\nwor");
        capture.write_stream(0, b"ld\n");
        capture.write_stream(1, b"0123456789abcdef-overflow\n");
        let (lines, dropped) = capture.drain();
        assert_eq!(
            lines,
            vec![
                (LogSource::Stdout, "hello".to_string()),
                (LogSource::Stdout, "world".to_string())
            ]
        );
        assert_eq!(dropped, 26);
        // The cap is per drain (per call).
        capture.log(tracing::Level::INFO, "again");
        assert_eq!(capture.drain().0.len(), 1);
    }

    #[test]
    fn memory_limiter_refuses_past_the_limit() {
        let mut limiter = MemoryLimiter::new(2 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        let err = limiter.memory_growing(1 << 20, 3 << 20, None).unwrap_err();
        assert!(err.to_string().contains("memory limit of 2 MiB"), "{err}");
        assert_eq!(limiter.peak, 1 << 20);
        assert_eq!(limiter.refused, Some(3 << 20));
    }
}
