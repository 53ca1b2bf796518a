//! Plugin authoring: `quiver plugin new`, `build` and `test`, for Rust, Python, JavaScript and C.
//!
//! A plugin is a directory with a `quiver-plugin.toml` ([`Manifest`]: name, language, test
//! parameters), its source, and `tests/input.*` + `tests/expected.jsonl`. The language kits
//! (SDK sources, helper libraries, build scripts, templates and the WIT package) are compiled
//! into the binary ([`kit`]) and written to the tools directory when needed, so the commands
//! work wherever the binary is. Toolchains (componentize-py, componentize-js, clang and
//! wasi-libc, wit-bindgen) are installed there by the kits' build scripts with the registries'
//! ordinary clients.
//!
//! - [`new_plugin`] writes a template that builds as is and passes its own test.
//! - [`build`] builds the component to `<dir>/build/<name>.wasm`.
//! - [`test`](fn@test) runs it on the sample input and compares with the expected rows
//!   ([`compare`] is the pure part).
//!
//! Uses `quiver-plugin-host` (loading and running the built plugin) and `quiver-data` (its
//! test input).

pub mod compare;
pub mod kit;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde::Deserialize;

use quiver_data::io::{self, SourceOptions};
use quiver_plugin_host::capability::Grants;
use quiver_plugin_host::plugin::{Host, Instance, Metrics, PluginError};
use quiver_plugin_host::sandbox::Limits;

pub use compare::{Mismatch, RowDiff};

/// The languages plugins can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Rust, with the `quiver-sdk` crate.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
    /// C, built with clang, wasi-libc and wit-bindgen.
    C,
}

impl Lang {
    /// Every language, in the order they are listed to users.
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C];

    /// The name used in files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }
}

impl std::str::FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Lang::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| format!("unknown language `{s}`: use rust, python, js or c"))
    }
}

/// `quiver-plugin.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name; the component is built to `build/<name>.wasm`.
    pub name: String,
    /// Its language.
    pub lang: Lang,
    /// What `quiver plugin test` runs.
    #[serde(default)]
    pub test: TestSpec,
}

/// `[test]` of a plugin manifest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TestSpec {
    /// Parameters the plugin is initialised with.
    #[serde(default)]
    pub params: toml::Table,
}

/// The manifest's file name.
pub const MANIFEST: &str = "quiver-plugin.toml";

/// Something went wrong creating, building or testing a plugin.
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    /// A file could not be read or written.
    #[error("{}: {message}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// `quiver-plugin.toml` is missing or wrong.
    #[error("{}: {message}", .path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The name cannot be a plugin name.
    #[error("`{0}` is not a plugin name: use lowercase letters, digits and dashes, starting with a letter")]
    BadName(String),
    /// `plugin new` would overwrite something.
    #[error("{} already exists; choose another name or remove it", .0.display())]
    Exists(PathBuf),
    /// A tool failed or could not be run.
    #[error("building the {lang} plugin in {}: {message}", .dir.display())]
    Build {
        /// The language.
        lang: &'static str,
        /// The plugin directory.
        dir: PathBuf,
        /// What failed, with the tool's last output.
        message: String,
    },
    /// Running the plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The sample input could not be read.
    #[error(transparent)]
    Data(#[from] io::IoError),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> AuthoringError {
    AuthoringError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Where toolchains and the unpacked kits live: `$QUIVER_TOOLS_DIR`, else
/// `$XDG_CACHE_HOME/quiver/tools`, else `~/.cache/quiver/tools`.
pub fn tools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("QUIVER_TOOLS_DIR") {
        return PathBuf::from(d);
    }
    Host::default_cache_dir()
        .unwrap_or_else(|| std::env::temp_dir().join("quiver"))
        .join("tools")
}

impl Manifest {
    /// Reads `<dir>/quiver-plugin.toml`.
    pub fn read(dir: &Path) -> Result<Manifest, AuthoringError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| AuthoringError::Manifest {
            path: path.clone(),
            message: format!(
                "cannot read ({e}); is {} a plugin directory?",
                dir.display()
            ),
        })?;
        toml::from_str(&text).map_err(|e| AuthoringError::Manifest {
            path,
            message: e.to_string(),
        })
    }
}

/// Whether `name` can name a plugin (and a Rust crate, a Python module file, a C identifier
/// once dashes become underscores).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// Writes a new plugin from the `lang` template into `<parent>/<name>`; returns its directory.
pub fn new_plugin(lang: Lang, name: &str, parent: &Path) -> Result<PathBuf, AuthoringError> {
    if !valid_name(name) {
        return Err(AuthoringError::BadName(name.into()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(AuthoringError::Exists(dir));
    }
    let kits = kit::unpack(&tools_dir())?;
    let sdk = kits.join("sdk/rust");
    // Written next to the target and renamed, so a failure leaves nothing half-made.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(parent)
        .map_err(|e| io_err(parent, e))?;
    for (path, text) in kit::template(lang) {
        let text = text
            .replace("{{name}}", name)
            .replace("{{sdk}}", &sdk.to_string_lossy());
        let file = tmp.path().join(path);
        if let Some(p) = file.parent() {
            std::fs::create_dir_all(p).map_err(|e| io_err(p, e))?;
        }
        std::fs::write(&file, text).map_err(|e| io_err(&file, e))?;
    }
    let made = tmp.keep();
    std::fs::rename(&made, &dir).map_err(|e| io_err(&dir, e))?;
    Ok(dir)
}

/// Builds the plugin in `dir` into `<dir>/build/<name>.wasm`; returns that path.
pub fn build(dir: &Path) -> Result<PathBuf, AuthoringError> {
    let manifest = Manifest::read(dir)?;
    let out_dir = dir.join("build");
    std::fs::create_dir_all(&out_dir).map_err(|e| io_err(&out_dir, e))?;
    let out = out_dir.join(format!("{}.wasm", manifest.name));
    let fail = |message: String| AuthoringError::Build {
        lang: manifest.lang.name(),
        dir: dir.to_path_buf(),
        message,
    };
    let kits = kit::unpack(&tools_dir())?;
    match manifest.lang {
        Lang::Rust => build_rust(dir, &out).map_err(fail)?,
        lang => {
            // One build of a language at a time (across processes), so two builds never
            // install its toolchain into the same place at once.
            let tools = tools_dir();
            let lock_path = tools.join(format!("{}.lock", lang.name()));
            let lock = std::fs::File::create(&lock_path).map_err(|e| io_err(&lock_path, e))?;
            lock.lock().map_err(|e| io_err(&lock_path, e))?;
            let script = kits.join(format!("sdk/{}/build.sh", lang.name()));
            let mut c = Command::new("bash");
            c.arg(&script)
                .arg(dir)
                .env(
                    "QUIVER_KIT_DIR",
                    kits.join(format!("sdk/{}/kit", lang.name())),
                )
                .env("QUIVER_WIT_DIR", kits.join("wit"))
                .env("QUIVER_TOOLS_DIR", tools_dir());
            run_tool(c, "the build script").map_err(fail)?;
        }
    }
    if !out.is_file() {
        return Err(fail(format!("the build made no {}", out.display())));
    }
    Ok(out)
}

/// Runs a command, passing its output through; on failure returns its last lines.
fn run_tool(mut c: Command, what: &str) -> Result<(), String> {
    let output = c
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what} ({:?}): {e}", c.get_program()))?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    Err(format!(
        "{what} failed ({}):\n{}",
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

/// `cargo build --release --target wasm32-wasip2`, then copies the component to `out`.
fn build_rust(dir: &Path, out: &Path) -> Result<(), String> {
    let has_target = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "wasm32-wasip2")
        });
    if !has_target {
        let mut c = Command::new("rustup");
        c.args(["target", "add", "wasm32-wasip2"]);
        run_tool(c, "rustup target add wasm32-wasip2")?;
    }
    let mut c = Command::new("cargo");
    c.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--message-format=json-render-diagnostics",
        "--manifest-path",
    ])
    .arg(dir.join("Cargo.toml"))
    .env(
        "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
        "-C target-feature=+simd128",
    )
    .stdin(std::process::Stdio::null())
    .stderr(std::process::Stdio::inherit());
    let output = c.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo build failed ({})", output.status));
    }
    // The last cdylib artifact of the package in this directory is the component.
    let manifest = std::fs::canonicalize(dir.join("Cargo.toml")).unwrap_or_default();
    let built = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .is_some_and(|p| Path::new(p) == manifest)
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
                .collect::<Vec<_>>()
        })
        .last()
        .ok_or("cargo built no .wasm: is the crate a cdylib (crate-type = [\"cdylib\"])?")?;
    std::fs::copy(&built, out).map_err(|e| format!("copying {}: {e}", built.display()))?;
    Ok(())
}

/// What `quiver plugin test` found.
#[derive(Debug)]
pub struct TestReport {
    /// The component tested.
    pub wasm: PathBuf,
    /// The sample input.
    pub input: PathBuf,
    /// The expected output.
    pub expected: PathBuf,
    /// Rows the plugin returned.
    pub rows: usize,
    /// Rows expected.
    pub expected_rows: usize,
    /// How the output differs from the expected rows (empty: it passed).
    pub mismatches: Vec<Mismatch>,
    /// Time in `transform`.
    pub time: Duration,
    /// The instance's figures (peak memory, fuel).
    pub metrics: Metrics,
}

impl TestReport {
    /// Whether the output equals the expected rows.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// The one file in `tests/` whose name starts with `stem.`.
fn sample(dir: &Path, stem: &str) -> Result<PathBuf, AuthoringError> {
    let tests = dir.join("tests");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&tests)
        .map_err(|e| io_err(&tests, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{stem}.")))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(io_err(
            &tests,
            format!(
                "no {stem}.* file (tests need input.<csv|jsonl|parquet|arrow> and expected.jsonl)"
            ),
        )),
        _ => Err(io_err(
            &tests,
            format!("more than one {stem}.* file: {found:?}"),
        )),
    }
}

/// Runs the built plugin of `dir` on `tests/input.*` with the manifest's test parameters and
/// compares its output with `tests/expected.jsonl` (row by row, nulls as absent, floats within
/// 1e-9 relative).
pub fn test(dir: &Path, wasm: &Path, host: &Host) -> Result<TestReport, AuthoringError> {
    let manifest = Manifest::read(dir)?;
    let input = sample(dir, "input")?;
    let expected_path = sample(dir, "expected")?;
    let params = manifest
        .test
        .params
        .iter()
        .map(|(k, v)| {
            Ok(quiver_plugin_host::abi::Param {
                name: k.clone(),
                value: quiver_plugin_host::abi::ParamValue::from_toml(k, v).map_err(|e| {
                    AuthoringError::Manifest {
                        path: dir.join(MANIFEST),
                        message: format!("[test] params: {e}"),
                    }
                })?,
            })
        })
        .collect::<Result<Vec<_>, AuthoringError>>()?;
    let plugin = host.load(wasm)?;
    let mut instance = Instance::new(
        plugin,
        params,
        Limits::default(),
        Arc::new(Grants::default()),
    )?;
    let source = io::open(
        &[input.to_string_lossy().into_owned()],
        &SourceOptions::default(),
    )?;
    let started = Instant::now();
    let mut out: Vec<RecordBatch> = Vec::new();
    for b in source.batches() {
        out.extend(instance.transform(&b?.batch)?);
    }
    let time = started.elapsed();
    let got = compare::json_rows(&out).map_err(|e| io_err(wasm, e))?;
    let text = std::fs::read_to_string(&expected_path).map_err(|e| io_err(&expected_path, e))?;
    let expected = compare::parse_json_lines(&text).map_err(|e| io_err(&expected_path, e))?;
    Ok(TestReport {
        wasm: wasm.to_path_buf(),
        input,
        expected: expected_path,
        rows: got.len(),
        expected_rows: expected.len(),
        mismatches: compare::diff(&expected, &got),
        time,
        metrics: instance.metrics(),
    })
}
