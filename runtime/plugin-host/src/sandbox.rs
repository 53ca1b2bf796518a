//! The sandbox every plugin runs in: engine configuration, per-plugin limits, and a WASI context
//! that grants nothing.
//!
//! - Time: epoch interruption. One background thread advances the engine's epoch every
//!   [`EPOCH_TICK`]; each call gets a deadline of `timeout-ms` worth of ticks.
//! - Memory: a [`ResourceLimiter`] that refuses (and traps on) growth past the plugin's limit and
//!   records the peak and the refused size, so errors can say "memory limit of 64 MiB".
//! - Fuel (optional, engine-wide switch): a budget of Wasm instructions per call, for
//!   deterministic metering. The engine consumes fuel only when some plugin asks for it.
//! - Stack: the engine's Wasm stack limit (`stack-kib`), the same for every plugin of a run.
//! - Instantiation: its own deadline (`instantiate-ms`), since start functions run user code.
//! - WASI: only what the plugin's grants allow (see [`crate::capability`]); `wasi:sockets` and
//!   `wasi:http` are never linked.
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

use crate::capability::{self, BoundedClock, Clock, ClockView, Grants};

/// How often the epoch advances; the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Largest linear memory any plugin may have, whatever its configured limit (a 32-bit memory
/// cannot exceed 4 GiB anyway).
const MAX_MEMORY_BYTES: u64 = 4 << 30;

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
    /// Fuel (about one unit per Wasm instruction) one call may burn; none: not metered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Wasm stack, in KiB. The stack limit belongs to the engine, so a run uses the largest
    /// value any of its plugins is given.
    pub stack_kib: u64,
    /// Wall time instantiating the component (its start functions) may take, in milliseconds.
    pub instantiate_ms: u64,
    /// Output batches one `transform` call may return (each costs the host memory even when
    /// empty, so their number is checked before any is copied out).
    pub max_output_batches: u64,
}

/// Largest Wasm stack a plugin may be given, in KiB. Every thread that calls into plugins has
/// a native stack of [`PLUGIN_THREAD_STACK`] bytes, which leaves room below the deepest Wasm
/// frame for the host functions the plugin calls (WASI, lifting its results).
pub const MAX_STACK_KIB: u64 = 8 << 10;

/// Native stack of every thread that calls into plugins: the largest Wasm stack plus 4 MiB for
/// the host's own frames above and below it. Reserved address space; only touched pages cost
/// memory.
pub const PLUGIN_THREAD_STACK: usize = ((MAX_STACK_KIB << 10) + (4 << 20)) as usize;

/// A limit set to a value the host cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key} = {value}` is out of range: {key} takes {min} to {max}{unit}")]
pub struct LimitOutOfRange {
    /// The key, as written in `[limits]`.
    pub key: &'static str,
    /// The value given.
    pub value: u64,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
    /// The unit, for the message (` MiB`, ` ms`, …).
    pub unit: &'static str,
}

/// Every limit key with its accepted range and unit: `(key, min, max, unit)`. The README's
/// table of limits states the same ranges.
pub const LIMIT_RANGES: [(&str, u64, u64, &str); 9] = [
    ("memory-mib", 1, MAX_MEMORY_BYTES >> 20, " MiB"),
    ("timeout-ms", 1, 86_400_000, " ms"),
    ("max-output-rows", 1, 1 << 32, " rows"),
    ("max-output-mib", 1, 4096, " MiB"),
    ("max-output-batches", 1, 65_536, " batches"),
    ("log-kib", 0, 65_536, " KiB"),
    ("fuel", 1, u64::MAX >> 1, ""),
    ("stack-kib", 64, MAX_STACK_KIB, " KiB"),
    ("instantiate-ms", 1, 86_400_000, " ms"),
];

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 1024,
            timeout_ms: 30_000,
            max_output_rows: 64 << 20,
            max_output_mib: 2048,
            log_kib: 64,
            fuel: None,
            stack_kib: 1024,
            instantiate_ms: 10_000,
            max_output_batches: 1024,
        }
    }
}

impl Limits {
    /// Refuses a limit the host cannot honour (zero time, an output cap that would overflow, a
    /// stack deeper than the threads that run plugins), naming the key and its range.
    pub fn check(&self) -> Result<(), LimitOutOfRange> {
        let values = [
            Some(self.memory_mib),
            Some(self.timeout_ms),
            Some(self.max_output_rows),
            Some(self.max_output_mib),
            Some(self.max_output_batches),
            Some(self.log_kib),
            self.fuel,
            Some(self.stack_kib),
            Some(self.instantiate_ms),
        ];
        for ((key, min, max, unit), value) in LIMIT_RANGES.into_iter().zip(values) {
            match value {
                Some(value) if !(min..=max).contains(&value) => {
                    return Err(LimitOutOfRange {
                        key,
                        value,
                        min,
                        max,
                        unit,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib
            .saturating_mul(1 << 20)
            .min(MAX_MEMORY_BYTES)
    }

    /// Call deadline in epoch ticks (at least one).
    pub fn deadline_ticks(&self) -> u64 {
        ticks(self.timeout_ms)
    }

    /// Instantiation deadline in epoch ticks.
    pub fn instantiate_ticks(&self) -> u64 {
        ticks(self.instantiate_ms)
    }

    /// Output byte cap in bytes.
    pub fn max_output_bytes(&self) -> u64 {
        self.max_output_mib.saturating_mul(1 << 20)
    }
}

fn ticks(ms: u64) -> u64 {
    (ms / EPOCH_TICK.as_millis() as u64).max(1) + 1
}

/// Engine-wide settings: what cannot differ between the plugins of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// How many plugin instances can be alive at once (the pooling allocator reserves address
    /// space for that many).
    pub max_instances: u32,
    /// Whether Wasm code counts fuel (some plugin has a `fuel` limit).
    pub fuel: bool,
    /// The Wasm stack limit, in KiB.
    pub stack_kib: u64,
    /// Whether limits are enforced at all. Only benchmarks turn this off, to measure what the
    /// limits cost: no epoch interruption, no memory limiter, no output caps.
    pub enforce: bool,
}

impl EngineOptions {
    /// Defaults for `max_instances` instances.
    pub fn new(max_instances: u32) -> Self {
        EngineOptions {
            max_instances,
            fuel: false,
            stack_kib: Limits::default().stack_kib,
            enforce: true,
        }
    }
}

/// Builds the engine shared by every plugin of a process and starts its epoch ticker.
pub fn engine(options: &EngineOptions) -> wasmtime::Result<Engine> {
    let max_instances = options.max_instances;
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
    let max_wasm_stack = (options.stack_kib.clamp(64, MAX_STACK_KIB) << 10) as usize;
    config
        .wasm_component_model(true)
        .epoch_interruption(options.enforce)
        .consume_fuel(options.fuel)
        .max_wasm_stack(max_wasm_stack)
        // Only checked against the Wasm stack (plugins never run on fibers), but wasmtime
        // refuses a Wasm stack larger than it.
        .async_stack_size(max_wasm_stack + (1 << 20))
        .cranelift_opt_level(OptLevel::Speed)
        .allocation_strategy(pool);
    let engine = Engine::new(&config)?;
    if options.enforce {
        start_epoch_ticker(&engine);
    }
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
        } else {
            b.dropped += rest.len();
        }
    }

    /// Takes what was captured since the last call: the lines, how many bytes they hold, and
    /// how many bytes were dropped because the cap was reached.
    pub fn drain(&self) -> (Vec<(LogSource, String)>, usize, usize) {
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
        let kept = std::mem::take(&mut b.bytes);
        (std::mem::take(&mut b.lines), kept, dropped)
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
    /// The monotonic clock (used only if granted), bounded by the call's deadline.
    pub clock: Clock,
}

impl StoreState {
    /// A store state with the given limits, granting what `grants` says and nothing else.
    /// Fails only if a granted directory cannot be opened.
    pub fn new(limits: &Limits, grants: &Grants) -> Result<Self, String> {
        let logs = LogCapture::new((limits.log_kib << 10) as usize);
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(logs.stream(0)).stderr(logs.stream(1));
        capability::apply(grants, &mut builder)?;
        Ok(StoreState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory_bytes()),
            logs,
            clock: Clock::new(grants.clock),
        })
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
/// Linking is not granting: [`capability::check`] refuses a plugin whose imports its grants do
/// not cover before it is instantiated, and the context of [`StoreState::new`] holds only what
/// was granted (no preopened directories, environment variables, arguments or stdin otherwise).
pub fn add_wasi_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sync};
    type T = StoreState;
    let l = linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    sync::io::poll::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    sync::io::streams::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, BoundedClock>(l, |t| ClockView {
        clock: &mut t.clock,
        table: &mut t.table,
    })?;
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
    guard_open_at(l)
}

/// The `wasi:filesystem/types` instance whose `open-at` [`guard_open_at`] replaces (the version
/// wasmtime-wasi implements; components importing older 0.2 versions are linked to it).
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces WASI's `open-at` with one that refuses special files. Opening a FIFO blocks until
/// its other end opens (and a device or socket can block the same way) inside a host call,
/// where the epoch deadline cannot stop it: one plugin could hang its worker for ever. So the
/// path is first looked at without opening it (`stat`, which never blocks on such files), and
/// anything but a regular file, a directory or a link to one is refused with `access`; the
/// plugin's log says why. Should the file be swapped for a FIFO between the look and the open,
/// the open itself is bounded by the call's deadline and then stops the call as its time limit.
fn guard_open_at(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime::StoreContextMut;
    use wasmtime_wasi::filesystem::Descriptor;
    use wasmtime_wasi::p2::bindings::filesystem::types::{
        DescriptorFlags, DescriptorType, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
    };
    type Args = (
        Resource<Descriptor>,
        PathFlags,
        String,
        OpenFlags,
        DescriptorFlags,
    );
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM_TYPES)?.func_wrap(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, StoreState>, (fd, path_flags, path, oflags, flags): Args| {
            let state = store.data_mut();
            let deadline = state.clock.deadline;
            let special = {
                let mut view = state.filesystem();
                let probe = Resource::<Descriptor>::new_borrow(fd.rep());
                let stat = wasmtime_wasi::runtime::in_tokio(view.stat_at(
                    probe,
                    path_flags,
                    path.clone(),
                ));
                // wasmtime-wasi reports FIFOs and sockets as `unknown`.
                match stat.map(|s| s.type_) {
                    Ok(DescriptorType::Fifo | DescriptorType::Socket | DescriptorType::Unknown) => {
                        Some("a special file (a FIFO or a socket)")
                    }
                    Ok(DescriptorType::CharacterDevice | DescriptorType::BlockDevice) => {
                        Some("a special file (a device)")
                    }
                    // Regular files, directories, links not followed; or nothing there yet
                    // (the open may create a regular file), or an error the open reports too.
                    _ => None,
                }
            };
            if let Some(what) = special {
                state.logs.log(
                    tracing::Level::WARN,
                    &format!("refused to open {path}: it is {what}, which could block the host; only regular files and directories can be opened in granted directories"),
                );
                return Ok((Err(ErrorCode::Access),));
            }
            let mut view = state.filesystem();
            let open = view.open_at(fd, path_flags, path, oflags, flags);
            let opened = match deadline {
                // The timer is made inside the runtime that drives it.
                Some(at) => wasmtime_wasi::runtime::in_tokio(async move {
                    tokio::time::timeout_at(tokio::time::Instant::from_std(at), open).await
                })
                .map_err(|_| capability::SleptPastDeadline)?,
                None => wasmtime_wasi::runtime::in_tokio(open),
            };
            match opened {
                Ok(descriptor) => Ok((Ok(descriptor),)),
                Err(e) => e.downcast().map(|code| (Err(code),)),
            }
        },
    )?;
    linker.allow_shadowing(false);
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
        let (lines, kept, dropped) = capture.drain();
        assert_eq!(kept, 12);
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
