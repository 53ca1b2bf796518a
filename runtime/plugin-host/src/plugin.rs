//! Plugins: loading components, the compile cache, and instances that run calls under limits.
//!
//! - [`Host`] owns the engine and the linker (WASI without sockets, plus the `host` interface).
//! - [`Host::load`] reads a `.wasm`, checks that it is a component exporting
//!   `quiver:plugin/transformer@0.1.0` and importing nothing Quiver does not grant, compiles it
//!   once (cached on disk by content hash and engine configuration), pre-links it
//!   ([`InstancePre`]) and asks it to `describe` itself.
//! - [`Instance`] is one live instance for one (plugin, worker): `init` runs once, the plan is
//!   made once per input schema, and the instance is reused for every batch. After a trap the
//!   instance cannot be entered again, so the next call replaces it transparently (re-running
//!   `init` and `prepare`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, TypedFunc};
use wasmtime::{Engine, Store, Trap};

use crate::abi::{
    self, AbiError, BatchIn, CapExceeded, LogLevel, OutputBatch, OutputBatches, OutputCaps, Param,
    ParamError, PluginInfo, TooManyBatches, WitField, WitPlan, WitPluginError,
};
use crate::capability::{self, Grants, Need};
use crate::sandbox::{self, EngineOptions, Limits, LogSource, StoreState};
use crate::untrusted;

/// Name of the interface every transform plugin exports.
pub const TRANSFORMER_INTERFACE: &str = "quiver:plugin/transformer@0.1.0";
/// Name of the interface a plugin fitted on the data (fit → transform) also exports.
pub const AGGREGATE_INTERFACE: &str = "quiver:plugin/aggregate@0.1.0";
/// Name of the interface a plugin that keeps state across batches also exports.
pub const STATE_INTERFACE: &str = "quiver:plugin/state@0.1.0";
/// Name of the interface the host offers to plugins.
pub const HOST_INTERFACE: &str = "quiver:plugin/host@0.1.0";

/// Something went wrong loading or running a plugin. Every variant names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("plugin {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's content does not match the SHA-256 the pipeline pins it to.
    #[error("plugin {path}: its SHA-256 is {actual}, but the pipeline pins {expected}; refusing to run it")]
    PinMismatch {
        /// The component file.
        path: PathBuf,
        /// The pinned hash.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// The file is not a component Quiver can run.
    #[error("plugin {path}: {reason}")]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The parameters were refused (by the host's check against `describe`, or by `init`).
    #[error("plugin `{plugin}`: parameter {reason}")]
    Param {
        /// The plugin.
        plugin: String,
        /// What is wrong, naming the parameter.
        reason: String,
    },
    /// The plugin reported an error for a schema or a batch.
    #[error("plugin `{plugin}`: {message}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// Its message, with column and row if it gave them.
        message: String,
    },
    /// A call ran past its deadline.
    #[error("plugin `{plugin}`: time limit of {limit_ms} ms per call exceeded in `{call}`")]
    Timeout {
        /// The plugin.
        plugin: String,
        /// The call (`init`, `prepare`, `transform`).
        call: &'static str,
        /// The limit.
        limit_ms: u64,
    },
    /// The plugin tried to grow its memory past the limit.
    #[error("plugin `{plugin}`: memory limit of {limit_mib} MiB exceeded in `{call}` (it asked for {asked_mib} MiB)")]
    Memory {
        /// The plugin.
        plugin: String,
        /// The call.
        call: &'static str,
        /// The limit.
        limit_mib: u64,
        /// What it asked for.
        asked_mib: u64,
    },
    /// The plugin trapped (panicked, hit `unreachable`, overflowed its stack, …).
    #[error("plugin `{plugin}`: trapped in `{call}`: {message}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// The call.
        call: &'static str,
        /// The trap and what the plugin printed before it.
        message: String,
    },
    /// A call burnt its fuel.
    #[error("plugin `{plugin}`: fuel limit of {limit} per call exhausted in `{call}`")]
    Fuel {
        /// The plugin.
        plugin: String,
        /// The call.
        call: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The plugin needs something its grants do not give (refused before it runs), or a
    /// granted resource cannot be opened.
    #[error("plugin `{plugin}`: {message}")]
    Capability {
        /// The plugin.
        plugin: String,
        /// What is missing, naming the imports and the grants that would allow them.
        message: String,
    },
    /// The plugin returned more than its output caps allow.
    #[error("plugin `{plugin}`: output limit exceeded: {what}")]
    OutputLimit {
        /// The plugin.
        plugin: String,
        /// Which cap, with figures.
        what: String,
    },
    /// The plugin's plan or output contradicts the contract.
    #[error("plugin `{plugin}`: {source}")]
    Abi {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        source: AbiError,
    },
    /// An instance that keeps state across batches failed: its state is gone, and going on
    /// would give wrong results.
    #[error("plugin `{plugin}` keeps state across batches, and its instance failed ({cause}); its state is lost, so the run stops (a streaming run resumes from its last checkpoint)")]
    StateLost {
        /// The plugin.
        plugin: String,
        /// The failure that lost it.
        cause: String,
    },
    /// The engine failed outside of a plugin call.
    #[error("plugin {plugin}: {message}")]
    Engine {
        /// The plugin (name or path).
        plugin: String,
        /// The engine's message.
        message: String,
    },
}

impl PluginError {
    /// Whether the error is the plugin's fault for this batch only (the run may skip it),
    /// as opposed to a problem loading the plugin.
    pub fn is_call_failure(&self) -> bool {
        !matches!(
            self,
            PluginError::Read { .. }
                | PluginError::NotAPlugin { .. }
                | PluginError::Engine { .. }
                | PluginError::Capability { .. }
                | PluginError::StateLost { .. }
        )
    }
}

/// Renders an engine error with its causes on one line.
fn chain(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// The engine, linker and compile cache shared by all plugins of a process.
pub struct Host {
    engine: Engine,
    options: EngineOptions,
    linker: Linker<StoreState>,
    cache_dir: Option<PathBuf>,
}

impl Host {
    /// A host with the given engine settings (room for `options.max_instances` live
    /// instances), caching compiled components in `cache_dir` (none: compile every time).
    pub fn new(options: EngineOptions, cache_dir: Option<PathBuf>) -> Result<Host, PluginError> {
        let engine_err = |e: wasmtime::Error| PluginError::Engine {
            plugin: "(host)".into(),
            message: chain(&e),
        };
        let engine = sandbox::engine(&options).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        sandbox::add_wasi_to_linker(&mut linker).map_err(engine_err)?;
        linker
            .root()
            .instance(HOST_INTERFACE)
            .and_then(|mut host| {
                host.func_wrap(
                    "log",
                    |store: wasmtime::StoreContextMut<'_, StoreState>,
                     (level, message): (LogLevel, String)| {
                        let level = match level {
                            LogLevel::Trace => tracing::Level::TRACE,
                            LogLevel::Debug => tracing::Level::DEBUG,
                            LogLevel::Info => tracing::Level::INFO,
                            LogLevel::Warn => tracing::Level::WARN,
                            LogLevel::Error => tracing::Level::ERROR,
                        };
                        store.data().logs.log(level, &message);
                        Ok(())
                    },
                )
            })
            .map_err(engine_err)?;
        Ok(Host {
            engine,
            options,
            linker,
            cache_dir,
        })
    }

    /// The default compile cache: `$QUIVER_CACHE_DIR`, else `$XDG_CACHE_HOME/quiver`, else
    /// `~/.cache/quiver`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("QUIVER_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("quiver"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("quiver"))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine's settings.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    fn compile(&self, path: &Path, bytes: &[u8], sha256: &str) -> Result<Component, PluginError> {
        let fail = |e: wasmtime::Error| PluginError::NotAPlugin {
            path: path.to_path_buf(),
            reason: format!("cannot compile: {}", chain(&e)),
        };
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes).map_err(fail);
        };
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let file = dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()));
        if file.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine with the same
            // configuration (its name says so), into a directory only this user writes.
            match unsafe { Component::deserialize_file(&self.engine, &file) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(file = %file.display(), "ignoring unusable compile cache entry: {}", chain(&e))
                }
            }
        }
        let compiled = self.engine.precompile_component(bytes).map_err(fail)?;
        // A cache that cannot be written only costs time.
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, &compiled)?;
            tmp.persist(&file).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %dir.display(), "cannot write the compile cache: {e}");
        }
        // SAFETY: produced just above by this engine.
        unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(fail)
    }

    /// Loads, checks, compiles (or fetches from the cache) and pre-links a plugin, and asks it
    /// to describe itself under the default limits.
    pub fn load(&self, path: &Path) -> Result<Arc<Plugin>, PluginError> {
        self.load_with(path, &Limits::default(), None)
    }

    /// [`Host::load`] for a pipeline's plugin: refuses the file before compiling it if its
    /// SHA-256 differs from `pin`, and runs `describe` (the first code of the plugin's to run)
    /// under the plugin's own `limits`.
    pub fn load_with(
        &self,
        path: &Path,
        limits: &Limits,
        pin: Option<&str>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let started = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let not_plugin = |reason: String| PluginError::NotAPlugin {
            path: path.to_path_buf(),
            reason,
        };
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
                return Err(not_plugin(
                    "is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or componentize it) against wit/quiver.wit".into(),
                ))
            }
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
            _ => return Err(not_plugin("is not a WebAssembly component".into())),
        }
        let sha256 = hex(&Sha256::digest(&bytes));
        if let Some(expected) = pin.filter(|p| !p.eq_ignore_ascii_case(&sha256)) {
            return Err(PluginError::PinMismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                actual: sha256,
            });
        }
        let component = self.compile(path, &bytes, &sha256)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if !exports.iter().any(|e| e == TRANSFORMER_INTERFACE) {
            if let Some(other) = exports
                .iter()
                .find(|e| e.starts_with("quiver:plugin/transformer@"))
            {
                let version = other.rsplit('@').next().unwrap_or_default();
                return Err(not_plugin(format!(
                    "was built against version {version} of the Quiver contract (it exports {other}), but this host speaks {}; rebuild it against this host's wit/quiver.wit or run it with a Quiver that speaks {version}",
                    TRANSFORMER_INTERFACE.rsplit('@').next().unwrap_or_default()
                )));
            }
            return Err(not_plugin(format!(
                "does not export {TRANSFORMER_INTERFACE}, so it is not a Quiver transform plugin (it exports: {})",
                if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
            )));
        }
        let refused: Vec<&String> = imports
            .iter()
            .filter(|i| capability::classify(i) == Need::Network)
            .collect();
        if !refused.is_empty() {
            return Err(not_plugin(format!(
                "imports {}, which Quiver never grants (plugins get no network)",
                refused
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| not_plugin(format!("cannot be linked: {}", chain(&e))))?;
        let iface = component
            .get_export_index(None, TRANSFORMER_INTERFACE)
            .expect("checked above");
        let aggregate = component.get_export_index(None, AGGREGATE_INTERFACE);
        let state = component.get_export_index(None, STATE_INTERFACE);
        let mut plugin = Plugin {
            path: path.to_path_buf(),
            name: path.display().to_string(),
            sha256,
            size: bytes.len(),
            imports,
            pre,
            options: self.options,
            iface,
            aggregate,
            state,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                params: Vec::new(),
            },
            load_time: Duration::ZERO,
        };
        let mut probe = RawInstance::new(&plugin, limits, &Grants::default())?;
        let info = probe.call(&plugin, "describe", |store, f| {
            f.describe.call(store, ()).map(|r| r.0)
        })?;
        plugin.info = shown_info(info);
        plugin.name = plugin.info.name.clone();
        plugin.load_time = started.elapsed();
        Ok(Arc::new(plugin))
    }
}

/// What `describe` said, with every text made safe to show: names and the version escaped
/// and cut to [`untrusted::NAME_BYTES`], descriptions to [`untrusted::MESSAGE_BYTES`].
fn shown_info(info: PluginInfo) -> PluginInfo {
    PluginInfo {
        name: untrusted::name(&info.name),
        version: untrusted::name(&info.version),
        description: untrusted::message(&info.description),
        params: info
            .params
            .into_iter()
            .map(|p| abi::ParamSpec {
                name: untrusted::name(&p.name),
                doc: untrusted::message(&p.doc),
                ..p
            })
            .collect(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loaded plugin: compiled, pre-linked, described.
pub struct Plugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Its name, from `describe`.
    pub name: String,
    /// SHA-256 of the `.wasm`, hex.
    pub sha256: String,
    /// Size of the `.wasm` in bytes.
    pub size: usize,
    /// Interfaces the component imports.
    pub imports: Vec<String>,
    /// What `describe` said.
    pub info: PluginInfo,
    /// Time to read, check, compile (or load from cache) and describe.
    pub load_time: Duration,
    pre: InstancePre<StoreState>,
    options: EngineOptions,
    iface: ComponentExportIndex,
    aggregate: Option<ComponentExportIndex>,
    state: Option<ComponentExportIndex>,
}

impl Plugin {
    /// Refuses the plugin, before it runs, if it imports what `grants` do not give.
    pub fn check_grants(&self, grants: &Grants) -> Result<(), PluginError> {
        capability::check(&self.imports, grants).map_err(|r| PluginError::Capability {
            plugin: self.name.clone(),
            message: r.to_string(),
        })
    }

    /// Whether the component exports the `aggregate` interface (it may still have nothing to
    /// fit for a given schema: see [`Instance::fit_reads`]).
    pub fn is_aggregate(&self) -> bool {
        self.aggregate.is_some()
    }

    /// Whether the component exports the `state` interface (it may still keep no state as
    /// configured: see [`Instance::snapshot`]).
    pub fn has_state_interface(&self) -> bool {
        self.state.is_some()
    }

    /// Checks parameters against the plugin's declared specs (unknown names, kinds, required
    /// ones) so that mistakes are reported by the host with the plugin's own documentation.
    pub fn check_params(&self, params: &[Param]) -> Result<(), PluginError> {
        let err = |reason: String| PluginError::Param {
            plugin: self.name.clone(),
            reason,
        };
        for p in params {
            let Some(spec) = self.info.params.iter().find(|s| s.name == p.name) else {
                let known: Vec<&str> = self.info.params.iter().map(|s| s.name.as_str()).collect();
                return Err(err(format!(
                    "`{}` is unknown; it takes: {}",
                    p.name,
                    if known.is_empty() {
                        "no parameters".into()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            let (found, want) = (p.value.kind(), spec.kind);
            let coercible = matches!(
                (want, found),
                (abi::ParamKind::Float, abi::ParamKind::Int)
                    | (abi::ParamKind::TextList, abi::ParamKind::Text)
            );
            if found != want && !coercible {
                return Err(err(format!(
                    "`{}` must be {want} ({}), but {} is {found}",
                    p.name, spec.doc, p.value
                )));
            }
        }
        if let Some(missing) = self
            .info
            .params
            .iter()
            .find(|s| s.required && !params.iter().any(|p| p.name == s.name))
        {
            return Err(err(format!(
                "`{}` is required: {}",
                missing.name, missing.doc
            )));
        }
        Ok(())
    }
}

/// An exported function taking one argument and returning a result with a plugin error.
type Call<P, R> = TypedFunc<(P,), (Result<R, WitPluginError>,)>;

/// The exported functions of one instance.
struct Funcs {
    describe: TypedFunc<(), (PluginInfo,)>,
    init: TypedFunc<(Vec<Param>,), (Result<(), ParamError>,)>,
    prepare: Call<Vec<WitField>, WitPlan>,
    transform: Call<BatchIn<'static>, Vec<OutputBatch>>,
    aggregate: Option<AggregateFuncs>,
    state: Option<StateFuncs>,
}

/// `snapshot`: no argument, maybe a state.
type Snapshot = TypedFunc<(), (Result<Option<Vec<u8>>, WitPluginError>,)>;

/// The `state` interface's functions.
struct StateFuncs {
    snapshot: Snapshot,
    restore: Call<Vec<u8>, ()>,
}

/// The `aggregate` interface's functions.
struct AggregateFuncs {
    fit_reads: Call<Vec<WitField>, Vec<String>>,
    partial: Call<BatchIn<'static>, Vec<u8>>,
    merge: Call<Vec<Vec<u8>>, Vec<u8>>,
    finish: Call<Vec<u8>, String>,
    set_fitted: Call<String, ()>,
}

/// Finds exported functions of one instance and checks their types against the contract.
struct Lookup<'a> {
    plugin: &'a Plugin,
    instance: &'a wasmtime::component::Instance,
    store: &'a mut Store<StoreState>,
}

impl Lookup<'_> {
    fn typed<P, R>(
        &mut self,
        (iface, iface_name): (&ComponentExportIndex, &str),
        name: &str,
    ) -> Result<TypedFunc<P, R>, PluginError>
    where
        P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
        R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
    {
        let broken = |reason: String| PluginError::NotAPlugin {
            path: self.plugin.path.clone(),
            reason,
        };
        let func = self
            .instance
            .get_export_index(&mut *self.store, Some(iface), name)
            .and_then(|idx| self.instance.get_func(&mut *self.store, idx))
            .ok_or_else(|| broken(format!("{iface_name} lacks the function `{name}`")))?;
        func.typed(&*self.store).map_err(|e| {
            broken(format!(
                "`{name}` does not match {iface_name} (built against another version of wit/quiver.wit?): {}",
                chain(&e)
            ))
        })
    }
}

/// A store and instance, without the plugin-level state (params, plans).
struct RawInstance {
    store: Store<StoreState>,
    funcs: Funcs,
    limits: Limits,
    options: EngineOptions,
    /// Fuel, log and time figures of this instance's calls.
    usage: Metrics,
}

impl RawInstance {
    fn new(plugin: &Plugin, limits: &Limits, grants: &Grants) -> Result<Self, PluginError> {
        let engine = plugin.pre.engine();
        let state = StoreState::new(limits, grants).map_err(|message| PluginError::Capability {
            plugin: plugin.name.clone(),
            message,
        })?;
        let mut store = Store::new(engine, state);
        let options = plugin.options;
        if options.enforce {
            store.limiter(|s| &mut s.limiter);
            // wasmtime's "hostcall fuel" bounds the bytes lifted out of the guest per call, so
            // an output bomb is stopped before the host allocates it (slack for metadata).
            store.set_hostcall_fuel((limits.max_output_bytes() as usize).saturating_add(1 << 20));
            store.set_epoch_deadline(limits.instantiate_ticks());
        }
        if options.fuel {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .expect("the engine counts fuel");
        }
        let started = Instant::now();
        let instance =
            plugin
                .pre
                .instantiate(&mut store)
                .map_err(|e| match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => PluginError::Timeout {
                        plugin: plugin.name.clone(),
                        call: "instantiate",
                        limit_ms: limits.instantiate_ms,
                    },
                    Some(Trap::OutOfFuel) => PluginError::Fuel {
                        plugin: plugin.name.clone(),
                        call: "instantiate",
                        limit: limits.fuel.unwrap_or(u64::MAX),
                    },
                    _ => PluginError::Engine {
                        plugin: plugin.name.clone(),
                        message: untrusted::message(&format!("cannot instantiate: {}", chain(&e))),
                    },
                })?;
        let usage = Metrics {
            instantiate_time: started.elapsed(),
            ..Metrics::default()
        };
        let mut lookup = Lookup {
            plugin,
            instance: &instance,
            store: &mut store,
        };
        let t = (&plugin.iface, TRANSFORMER_INTERFACE);
        let describe = lookup.typed(t, "describe")?;
        let init = lookup.typed(t, "init")?;
        let prepare = lookup.typed(t, "prepare")?;
        let transform = lookup.typed(t, "transform")?;
        let aggregate = match &plugin.aggregate {
            None => None,
            Some(iface) => {
                let a = (iface, AGGREGATE_INTERFACE);
                Some(AggregateFuncs {
                    fit_reads: lookup.typed(a, "fit-reads")?,
                    partial: lookup.typed(a, "partial")?,
                    merge: lookup.typed(a, "merge")?,
                    finish: lookup.typed(a, "finish")?,
                    set_fitted: lookup.typed(a, "set-fitted")?,
                })
            }
        };
        let state = match &plugin.state {
            None => None,
            Some(iface) => {
                let s = (iface, STATE_INTERFACE);
                Some(StateFuncs {
                    snapshot: lookup.typed(s, "snapshot")?,
                    restore: lookup.typed(s, "restore")?,
                })
            }
        };
        Ok(RawInstance {
            store,
            funcs: Funcs {
                describe,
                init,
                prepare,
                transform,
                aggregate,
                state,
            },
            limits: *limits,
            options,
            usage,
        })
    }

    /// Runs one call under the deadline, forwards what the plugin logged, and turns traps into
    /// errors that name the limit that stopped it.
    fn call<R>(
        &mut self,
        plugin: &Plugin,
        call: &'static str,
        f: impl FnOnce(&mut Store<StoreState>, &Funcs) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let started = Instant::now();
        if self.options.enforce {
            self.store.set_epoch_deadline(self.limits.deadline_ticks());
            self.store.data_mut().clock.deadline =
                Some(started + Duration::from_millis(self.limits.timeout_ms));
        }
        let fuel = self.limits.fuel.unwrap_or(u64::MAX);
        if self.options.fuel {
            self.store.set_fuel(fuel).expect("the engine counts fuel");
        }
        let result = f(&mut self.store, &self.funcs);
        let u = &mut self.usage;
        u.max_call_time = u.max_call_time.max(started.elapsed());
        if self.options.fuel {
            let burnt = fuel - self.store.get_fuel().unwrap_or(0);
            u.fuel += burnt;
            u.max_call_fuel = u.max_call_fuel.max(burnt);
        }
        let (lines, kept, dropped) = self.store.data().logs.drain();
        u.max_call_log = u.max_call_log.max(kept as u64);
        u.log_dropped += dropped as u64;
        forward_logs(&plugin.name, &lines, dropped);
        result.map_err(|e| {
            let name = plugin.name.clone();
            if let Some(asked) = self.store.data_mut().limiter.refused.take() {
                return PluginError::Memory {
                    plugin: name,
                    call,
                    limit_mib: self.limits.memory_mib,
                    asked_mib: (asked as u64).div_ceil(1 << 20),
                };
            }
            if let Some(too_many) = e.downcast_ref::<TooManyBatches>() {
                return PluginError::OutputLimit {
                    plugin: name,
                    what: format!(
                        "{} output batches from one `{call}` call (max-output-batches = {})",
                        too_many.returned, too_many.cap
                    ),
                };
            }
            if chain(&e).contains("fuel allocated for hostcalls has been exhausted") {
                return PluginError::OutputLimit {
                    plugin: name,
                    what: format!(
                        "more than {} MiB returned by one `{call}` call (max-output-mib)",
                        self.limits.max_output_mib
                    ),
                };
            }
            // A sleep past the deadline is the time limit too, caught before it was waited out.
            let slept = e.downcast_ref::<capability::SleptPastDeadline>().is_some();
            let trap = e.downcast_ref::<Trap>();
            match trap {
                _ if slept || trap == Some(&Trap::Interrupt) => PluginError::Timeout {
                    plugin: name,
                    call,
                    limit_ms: self.limits.timeout_ms,
                },
                Some(Trap::OutOfFuel) => PluginError::Fuel {
                    plugin: name,
                    call,
                    limit: fuel,
                },
                _ => {
                    // The trap itself (without the wasm backtrace, which goes to the debug log)
                    // and, if the plugin panicked, its own message from stderr.
                    tracing::debug!(plugin = %plugin.name, "{}", untrusted::message(&chain(&e)));
                    let mut message = e
                        .downcast_ref::<Trap>()
                        .map_or_else(|| chain(&e), |t| t.to_string());
                    let said: Vec<&str> = lines
                        .iter()
                        .filter(|(s, l)| {
                            *s == LogSource::Stderr
                                && !l.trim().is_empty()
                                && !l.starts_with("note: run with")
                        })
                        .map(|(_, l)| l.as_str())
                        .collect();
                    if !said.is_empty() {
                        let tail = &said[said.len().saturating_sub(2)..];
                        message = format!("{message}; the plugin said: {}", tail.join(" / "));
                    }
                    // The plugin's own words, and wasm backtraces naming its functions.
                    let message = untrusted::message(&message);
                    PluginError::Trap {
                        plugin: name,
                        call,
                        message,
                    }
                }
            }
        })
    }
}

fn forward_logs(plugin: &str, lines: &[(LogSource, String)], dropped: usize) {
    for (source, line) in lines {
        let line = untrusted::message(line);
        match source {
            LogSource::Stdout => tracing::info!(plugin, stream = "stdout", "{line}"),
            LogSource::Stderr => tracing::warn!(plugin, stream = "stderr", "{line}"),
            LogSource::Log(level) => match *level {
                tracing::Level::ERROR => tracing::error!(plugin, "{line}"),
                tracing::Level::WARN => tracing::warn!(plugin, "{line}"),
                tracing::Level::INFO => tracing::info!(plugin, "{line}"),
                tracing::Level::DEBUG => tracing::debug!(plugin, "{line}"),
                _ => tracing::trace!(plugin, "{line}"),
            },
        }
    }
    if dropped > 0 {
        tracing::warn!(
            plugin,
            "dropped {dropped} bytes of plugin output over the log limit"
        );
    }
}

/// Figures of one instance (summed over replacements).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// `transform` calls.
    pub calls: u64,
    /// Rows sent.
    pub rows_in: u64,
    /// Rows produced.
    pub rows_out: u64,
    /// Bytes of column data sent into the plugin.
    pub bytes_in: u64,
    /// Bytes of column data the plugin returned.
    pub bytes_out: u64,
    /// Time inside `transform` (including the boundary copies and output checks).
    pub time: Duration,
    /// Largest linear memory, in bytes.
    pub peak_memory: u64,
    /// Instances replaced after a trap.
    pub restarts: u64,
    /// Fuel burnt (0 unless the engine counts fuel).
    pub fuel: u64,
    /// Most fuel one call burnt.
    pub max_call_fuel: u64,
    /// Longest call.
    pub max_call_time: Duration,
    /// Most rows one input batch turned into.
    pub max_batch_rows_out: u64,
    /// Most bytes one input batch turned into.
    pub max_batch_bytes_out: u64,
    /// Most log bytes one call kept.
    pub max_call_log: u64,
    /// Log bytes dropped over the cap.
    pub log_dropped: u64,
    /// Longest instantiation.
    pub instantiate_time: Duration,
}

impl Metrics {
    /// Adds another instance's figures.
    pub fn merge(&mut self, o: &Metrics) {
        self.calls += o.calls;
        self.rows_in += o.rows_in;
        self.rows_out += o.rows_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.time += o.time;
        self.peak_memory = self.peak_memory.max(o.peak_memory);
        self.restarts += o.restarts;
        self.fuel += o.fuel;
        self.max_call_fuel = self.max_call_fuel.max(o.max_call_fuel);
        self.max_call_time = self.max_call_time.max(o.max_call_time);
        self.max_batch_rows_out = self.max_batch_rows_out.max(o.max_batch_rows_out);
        self.max_batch_bytes_out = self.max_batch_bytes_out.max(o.max_batch_bytes_out);
        self.max_call_log = self.max_call_log.max(o.max_call_log);
        self.log_dropped += o.log_dropped;
        self.instantiate_time = self.instantiate_time.max(o.instantiate_time);
    }
}

/// One live instance of a plugin, initialised with its parameters, for one worker.
pub struct Instance {
    plugin: Arc<Plugin>,
    params: Vec<Param>,
    limits: Limits,
    grants: Arc<Grants>,
    raw: Option<RawInstance>,
    plan: Option<(SchemaRef, abi::Plan)>,
    /// Fitted parameters given by `set_fitted`, re-applied to a replacement instance.
    fitted: Option<String>,
    /// Whether the instance holds state across batches (its `snapshot` gave some, or it was
    /// restored): then a replacement instance would silently start from nothing.
    stateful: bool,
    /// Why the instance was dropped, if it was stateful.
    lost: Option<String>,
    metrics: Metrics,
}

impl Instance {
    /// Instantiates `plugin` with what `grants` allow (refusing it if its imports need more)
    /// and runs `init(params)`.
    pub fn new(
        plugin: Arc<Plugin>,
        params: Vec<Param>,
        limits: Limits,
        grants: Arc<Grants>,
    ) -> Result<Self, PluginError> {
        plugin.check_params(&params)?;
        plugin.check_grants(&grants)?;
        let mut instance = Instance {
            plugin,
            params,
            limits,
            grants,
            raw: None,
            plan: None,
            fitted: None,
            stateful: false,
            lost: None,
            metrics: Metrics::default(),
        };
        instance.live()?;
        Ok(instance)
    }

    /// The plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The parameters it was initialised with.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// What it was granted.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Its fitted parameters, if it was given any.
    pub fn fitted(&self) -> Option<&str> {
        self.fitted.as_deref()
    }

    /// Figures so far.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        if let Some(raw) = &self.raw {
            m.merge(&raw.usage);
            m.peak_memory = m.peak_memory.max(raw.store.data().limiter.peak as u64);
        }
        m
    }

    /// The live instance, creating (and initialising) one if there is none.
    fn live(&mut self) -> Result<&mut RawInstance, PluginError> {
        if let Some(cause) = &self.lost {
            return Err(PluginError::StateLost {
                plugin: self.plugin.name.clone(),
                cause: cause.clone(),
            });
        }
        if self.raw.is_none() {
            let mut raw = RawInstance::new(&self.plugin, &self.limits, &self.grants)?;
            let params = self.params.clone();
            let result = raw.call(&self.plugin, "init", |s, f| {
                f.init.call(s, (params,)).map(|r| r.0)
            })?;
            result.map_err(|e| PluginError::Param {
                plugin: self.plugin.name.clone(),
                reason: describe_param_error(&e),
            })?;
            if let Some(fitted) = self.fitted.clone() {
                raw.call(&self.plugin, "set-fitted", |s, f| {
                    let agg = f.aggregate.as_ref().expect("fitted implies aggregate");
                    agg.set_fitted.call(s, (fitted,)).map(|r| r.0)
                })?
                .map_err(|e| failed(&self.plugin.name, &e))?;
            }
            self.raw = Some(raw);
            self.plan = None;
        }
        Ok(self.raw.as_mut().expect("set above"))
    }

    /// One call of the `aggregate` interface, with the same error handling as `transform`.
    fn aggregate_call<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(
            &mut Store<StoreState>,
            &AggregateFuncs,
        ) -> wasmtime::Result<Result<R, WitPluginError>>,
    ) -> Result<R, PluginError> {
        let plugin = self.plugin.clone();
        if !plugin.is_aggregate() {
            return Err(PluginError::Failed {
                plugin: plugin.name.clone(),
                message: format!("`{call}` called, but the plugin has nothing to fit (it does not export {AGGREGATE_INTERFACE})"),
            });
        }
        let raw = self.live()?;
        let result = raw.call(&plugin, call, |s, funcs| {
            f(s, funcs.aggregate.as_ref().expect("checked above"))
        });
        match result {
            Ok(r) => r.map_err(|e| failed(&plugin.name, &e)),
            Err(e) => {
                self.discard_after(&e);
                Err(e)
            }
        }
    }

    /// Input columns `partial` reads for this schema; empty if there is nothing to fit.
    pub fn fit_reads(&mut self, schema: &SchemaRef) -> Result<Vec<String>, PluginError> {
        if !self.plugin.is_aggregate() {
            return Ok(Vec::new());
        }
        let fields = abi::wit_fields(schema);
        self.aggregate_call("fit-reads", |s, a| {
            a.fit_reads.call(s, (fields,)).map(|r| r.0)
        })
    }

    /// Statistics of one batch (the plugin's state bytes).
    pub fn partial(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, PluginError> {
        let names = self.fit_reads(batch.schema_ref())?;
        let schema = batch.schema();
        let reads = names
            .iter()
            .map(|n| {
                schema.index_of(n).map_err(|_| PluginError::Abi {
                    plugin: self.plugin.name.clone(),
                    source: AbiError::UnknownColumn {
                        role: "fits on",
                        column: n.clone(),
                        available: schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let prepared = self.prepare_reads(batch, &reads)?;
        let (input, _) = abi::batch_in(&schema, &reads, &prepared, batch.num_rows());
        self.aggregate_call("partial", |s, a| {
            // SAFETY: as in `transform`: the lifetime does not change the component type.
            let partial: TypedFunc<(BatchIn<'_>,), (Result<Vec<u8>, WitPluginError>,)> =
                unsafe { TypedFunc::new_unchecked(*a.partial.func()) };
            partial.call(s, (input,)).map(|r| r.0)
        })
    }

    /// Combines states.
    pub fn merge(&mut self, states: Vec<Vec<u8>>) -> Result<Vec<u8>, PluginError> {
        self.aggregate_call("merge", |s, a| a.merge.call(s, (states,)).map(|r| r.0))
    }

    /// Fitted parameters (JSON text) from a merged state.
    pub fn finish(&mut self, state: Vec<u8>) -> Result<String, PluginError> {
        self.aggregate_call("finish", |s, a| a.finish.call(s, (state,)).map(|r| r.0))
    }

    /// Gives the instance its fitted parameters; plans are made anew after this.
    pub fn set_fitted(&mut self, fitted: String) -> Result<(), PluginError> {
        let text = fitted.clone();
        self.aggregate_call("set-fitted", |s, a| {
            a.set_fitted.call(s, (text,)).map(|r| r.0)
        })?;
        self.fitted = Some(fitted);
        self.plan = None;
        Ok(())
    }

    /// Prepares the `reads` columns of `batch` for the boundary.
    fn prepare_reads(
        &self,
        batch: &RecordBatch,
        reads: &[usize],
    ) -> Result<Vec<ArrayRef>, PluginError> {
        let schema = batch.schema();
        reads
            .iter()
            .map(|&i| abi::prepare_array(schema.field(i).name(), batch.column(i)))
            .collect::<Result<_, _>>()
            .map_err(|source| PluginError::Abi {
                plugin: self.plugin.name.clone(),
                source,
            })
    }

    /// Drops the instance after a failed call (a trap, or an output refused while it was
    /// being copied out); the next call makes a new one.
    fn discard_after(&mut self, e: &PluginError) {
        if matches!(
            e,
            PluginError::Trap { .. }
                | PluginError::Timeout { .. }
                | PluginError::Memory { .. }
                | PluginError::Fuel { .. }
                | PluginError::OutputLimit { .. }
        ) {
            if let Some(raw) = self.raw.take() {
                self.metrics.merge(&raw.usage);
                self.metrics.peak_memory = self
                    .metrics
                    .peak_memory
                    .max(raw.store.data().limiter.peak as u64);
            }
            self.metrics.restarts += 1;
            self.plan = None;
            if self.stateful {
                self.lost = Some(e.to_string());
            }
        }
    }

    /// One call of the `state` interface (`None` if the plugin does not export it).
    fn state_call<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(
            &mut Store<StoreState>,
            &StateFuncs,
        ) -> wasmtime::Result<Result<R, WitPluginError>>,
    ) -> Result<Option<R>, PluginError> {
        let plugin = self.plugin.clone();
        if !plugin.has_state_interface() {
            return Ok(None);
        }
        let raw = self.live()?;
        let result = raw.call(&plugin, call, |s, funcs| {
            f(s, funcs.state.as_ref().expect("checked above"))
        });
        match result {
            Ok(r) => r.map(Some).map_err(|e| failed(&plugin.name, &e)),
            Err(e) => {
                self.discard_after(&e);
                Err(e)
            }
        }
    }

    /// The plugin's state after the batches so far, for a checkpoint; `None` if it keeps
    /// none (it does not export `state`, or its `snapshot` says so).
    pub fn snapshot(&mut self) -> Result<Option<Vec<u8>>, PluginError> {
        let state = self
            .state_call("snapshot", |s, f| f.snapshot.call(s, ()).map(|r| r.0))?
            .flatten();
        self.stateful |= state.is_some();
        Ok(state)
    }

    /// Gives the instance back the state a checkpoint saved.
    pub fn restore(&mut self, state: Vec<u8>) -> Result<(), PluginError> {
        let restored =
            self.state_call("restore", |s, f| f.restore.call(s, (state,)).map(|r| r.0))?;
        if restored.is_none() {
            return Err(PluginError::Failed {
                plugin: self.plugin.name.clone(),
                message: format!("the checkpoint holds state for this plugin, but it does not export {STATE_INTERFACE} (was it replaced by another build?)"),
            });
        }
        self.stateful = true;
        self.plan = None;
        Ok(())
    }

    /// The checked plan for `schema` (asking the plugin once per schema).
    pub fn plan(&mut self, schema: &SchemaRef) -> Result<abi::Plan, PluginError> {
        if let Some((s, p)) = &self.plan {
            if Arc::ptr_eq(s, schema) || s == schema {
                return Ok(p.clone());
            }
        }
        let plugin = self.plugin.clone();
        let fields = abi::wit_fields(schema);
        let raw = self.live()?;
        let result = raw.call(&plugin, "prepare", |s, f| {
            f.prepare.call(s, (fields,)).map(|r| r.0)
        });
        let wit = match result {
            Ok(r) => r.map_err(|e| failed(&plugin.name, &e))?,
            Err(e) => {
                self.discard_after(&e);
                return Err(e);
            }
        };
        let plan = abi::Plan::check(&wit, schema).map_err(|source| PluginError::Abi {
            plugin: plugin.name.clone(),
            source,
        })?;
        self.plan = Some((schema.clone(), plan.clone()));
        Ok(plan)
    }

    /// Runs `transform` on a batch and returns the output batches, checked and assembled.
    pub fn transform(&mut self, batch: &RecordBatch) -> Result<Vec<RecordBatch>, PluginError> {
        let plan = self.plan(batch.schema_ref())?;
        let plugin = self.plugin.clone();
        let abi_err = |source| PluginError::Abi {
            plugin: plugin.name.clone(),
            source,
        };
        let schema = batch.schema();
        let prepared = self.prepare_reads(batch, &plan.reads)?;
        let (input, bytes_in) = abi::batch_in(&schema, &plan.reads, &prepared, batch.num_rows());
        let caps = if self.plugin.options.enforce {
            OutputCaps {
                rows: self.limits.max_output_rows,
                bytes: self.limits.max_output_bytes(),
            }
        } else {
            OutputCaps {
                rows: u64::MAX,
                bytes: u64::MAX,
            }
        };
        let max_batches = if self.plugin.options.enforce {
            self.limits.max_output_batches
        } else {
            u64::MAX
        };
        let started = Instant::now();
        let raw = self.live()?;
        let result = raw.call(&plugin, "transform", |s, f| {
            // SAFETY: `BatchIn<'_>` and `BatchIn<'static>` are the same component type; the
            // lifetime only ties the borrowed buffers to this call, which does not keep them.
            // `OutputBatches` is the same type as `Vec<OutputBatch>`, lifted after its length
            // is checked.
            let transform: TypedFunc<(BatchIn<'_>,), (Result<OutputBatches, WitPluginError>,)> =
                unsafe { TypedFunc::new_unchecked(*f.transform.func()) };
            OutputBatches::lift_with_cap(usize::try_from(max_batches).unwrap_or(usize::MAX), || {
                transform.call(s, (input,)).map(|r| r.0)
            })
        });
        let outputs = match result {
            Ok(r) => r.map_err(|e| failed(&plugin.name, &e))?.0,
            Err(e) => {
                self.discard_after(&e);
                return Err(e);
            }
        };
        let bytes_out = abi::check_caps(&outputs, caps).map_err(|c| PluginError::OutputLimit {
            plugin: plugin.name.clone(),
            what: match c {
                CapExceeded::Rows { got, cap } => format!(
                    "{got} rows from a batch of {} (max-output-rows = {cap})",
                    batch.num_rows()
                ),
                CapExceeded::Bytes { got, cap } => format!(
                    "{} MiB from a batch of {} rows (max-output-mib = {})",
                    got >> 20,
                    batch.num_rows(),
                    cap >> 20
                ),
            },
        })?;
        let batches = outputs
            .into_iter()
            .map(|o| abi::assemble(&plan, batch, o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(abi_err)?;
        let m = &mut self.metrics;
        m.calls += 1;
        m.rows_in += batch.num_rows() as u64;
        m.rows_out += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        m.bytes_in += bytes_in;
        m.bytes_out += bytes_out;
        m.time += started.elapsed();
        m.max_batch_rows_out = m
            .max_batch_rows_out
            .max(batches.iter().map(|b| b.num_rows() as u64).sum());
        m.max_batch_bytes_out = m.max_batch_bytes_out.max(bytes_out);
        Ok(batches)
    }
}

fn failed(plugin: &str, e: &WitPluginError) -> PluginError {
    let mut message = untrusted::message(&e.message);
    if let Some(c) = &e.column {
        let c = untrusted::name(c);
        if !message.contains(c.as_str()) {
            message = format!("column `{c}`: {message}");
        }
    }
    if let Some(r) = e.row {
        message = format!("{message} (row {r} of the batch)");
    }
    PluginError::Failed {
        plugin: plugin.to_string(),
        message,
    }
}

fn describe_param_error(e: &ParamError) -> String {
    untrusted::message(&match e {
        ParamError::Unknown(n) => format!("`{n}` is unknown"),
        ParamError::Missing(n) => format!("`{n}` is required"),
        ParamError::WrongKind(w) => format!("`{}` must be {}, not {}", w.name, w.expected, w.found),
        ParamError::Invalid(i) => format!("`{}` is invalid: {}", i.name, i.reason),
    })
}
