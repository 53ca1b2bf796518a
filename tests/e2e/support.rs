//! Shared helpers: locating the binary and the plugin components, generating data, reading
//! outputs, and the reference implementations the tests compare against.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

/// The directory next to a pipeline file where its runs keep their lock and history.
pub const STATE_DIR: &str = ".quiver";

/// The repository's root (the test binary belongs to `runtime/cli`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Directory holding the plugin components built by `plugins/build.sh`.
pub fn plugins_dir() -> PathBuf {
    let dir = std::env::var_os("QUIVER_TEST_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/plugins"));
    assert!(
        dir.join("scale.wasm").is_file(),
        "plugin components missing in {}: run plugins/build.sh first (tests/run.sh does)",
        dir.display()
    );
    dir
}

/// Path of one plugin component.
pub fn plugin(name: &str) -> PathBuf {
    plugins_dir().join(format!("{name}.wasm"))
}

/// A shared compile cache so each test does not recompile the components.
pub fn cache_dir() -> PathBuf {
    repo_root().join("target/test-compile-cache")
}

/// The `quiver` binary, with the test compile cache and plugin search path.
pub fn quiver() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quiver"));
    c.env("QUIVER_CACHE_DIR", cache_dir())
        .env("QUIVER_PLUGIN_PATH", plugins_dir())
        .env_remove("QUIVER_LOG");
    die_with_the_test(&mut c);
    c
}

/// The child gets SIGKILL when the test thread that started it ends, so no process outlives
/// its test, also when the test binary itself is killed (and its watchdogs with it).
fn die_with_the_test(c: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec; prctl is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// `program` with `args`, then the quiver binary as its last argument, in the environment of
/// [`quiver`]: for running quiver under a wrapper (a terminal, resource limits).
pub fn quiver_under(program: &str, args: &[&str]) -> Command {
    let q = quiver();
    let mut c = Command::new(program);
    for (k, v) in q.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.args(args).arg(q.get_program());
    die_with_the_test(&mut c);
    c
}

/// Kills (SIGKILL) a child process still running after a time limit, so that a run that hangs
/// fails its test with what it printed instead of stalling the whole suite. Disarmed when
/// dropped.
struct Watchdog {
    disarm: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Watches `child` for `limit`.
    fn new(child: &Child, limit: Duration) -> Watchdog {
        let pid = child.id().to_string();
        let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(limit) {
                eprintln!("process {pid} still running after {limit:?}: killing it");
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        });
        Watchdog {
            disarm: Some(disarm),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.disarm.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits for a child's exit and output, killing it if it runs for more than two more minutes.
pub fn finish(child: Child) -> Output {
    finish_within(child, Duration::from_secs(120))
}

/// Waits for a child's exit and output, killing it if it runs for longer than `limit`.
fn finish_within(child: Child, limit: Duration) -> Output {
    let _watchdog = Watchdog::new(&child, limit);
    child.wait_with_output().expect("waiting for quiver")
}

/// Runs a command and returns (success, stdout, stderr); a run still going after two minutes
/// is killed (and so fails), so a hang fails its test instead of stalling the suite.
pub fn run(c: Command) -> (bool, String, String) {
    run_within(c, Duration::from_secs(120))
}

/// [`run`] for a command that may first install a toolchain (`quiver plugin build/test`
/// installs wit-bindgen, componentize-py or a compiler on first use: minutes on two busy
/// cores), killed only after `limit`.
pub fn run_within(mut c: Command, limit: Duration) -> (bool, String, String) {
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning quiver");
    let Output {
        status,
        stdout,
        stderr,
    } = finish_within(child, limit);
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns stderr (where the report goes).
pub fn run_ok(c: Command) -> String {
    let (ok, out, err) = run(c);
    assert!(ok, "quiver failed:\nstdout: {out}\nstderr: {err}");
    err
}

/// Runs a command that must fail; returns stderr.
pub fn run_err(c: Command) -> String {
    let (ok, out, err) = run(c);
    assert!(
        !ok,
        "quiver should have failed:\nstdout: {out}\nstderr: {err}"
    );
    assert!(err.contains("error:"), "no error message: {err}");
    err
}

/// Asserts that `dir` holds exactly the files named, nothing else (no temporary leftovers),
/// besides the state directory `.quiver` that runs of a pipeline file keep next to it.
pub fn assert_only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != STATE_DIR)
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "unexpected files in {}", dir.display());
}

/// One generated input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub user: String,
    pub email: Option<String>,
    pub amount: Option<f64>,
    pub k: i64,
    pub region: String,
    pub score: i32,
    pub note: String,
}

/// Deterministic pseudo-random rows (a small LCG, so the test owns the generator).
pub fn generate(rows: usize, seed: u64) -> Vec<Row> {
    let mut s = seed
        .wrapping_mul(2862933555777941757)
        .wrapping_add(3037000493);
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    (0..rows)
        .map(|i| {
            let r = next();
            // A skewed key: user u0 gets about a third of the rows.
            let user = if r % 3 == 0 {
                "u0".to_string()
            } else {
                format!("u{}", r % 211)
            };
            let email = (r % 11 != 0).then(|| format!("person{}@mail{}.example", r % 997, r % 5));
            let amount = (r % 13 != 0).then(|| (next() % 2_000_000) as f64 / 1000.0 - 500.0);
            Row {
                id: i as i64,
                user,
                email,
                amount,
                k: (next() % 1001) as i64,
                region: ["eu", "us", "apac"][(r % 3) as usize].to_string(),
                score: (next() % 100) as i32 - 20,
                note: format!("n{}", r % 7),
            }
        })
        .collect()
}

/// The rows as an Arrow batch.
pub fn to_batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("k", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("score", DataType::Int32, false),
        Field::new("note", DataType::Utf8, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.user.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.email.as_deref()),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.amount))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.k))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.region.as_str()),
        )),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.score))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.note.as_str()),
        )),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

/// Writes rows as a Parquet file with small row groups.
pub fn write_parquet(path: &Path, rows: &[Row]) {
    write_batch(path, &to_batch(rows));
}

/// Writes one batch as a Parquet file with small row groups (1000 rows), so that a reader
/// sees several.
pub fn write_batch(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(1000))
        .build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// Reads every batch of a Parquet file.
pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// All data files below `dir`, sorted (hidden files, such as the output marker, are not data).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One output row of the standard chain (see `chain_toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutRow {
    pub id: i64,
    pub customer: String,
    pub email: String,
    pub amount: Option<f64>,
    pub k: i64,
    pub score: f64,
}

/// Reads output rows (without the Hive key column, which lives in the path).
pub fn out_rows(batch: &RecordBatch) -> Vec<OutRow> {
    let col = |n: &str| {
        batch
            .column_by_name(n)
            .unwrap_or_else(|| panic!("no column {n}"))
    };
    let id = col("id").as_primitive::<Int64Type>();
    let customer = col("customer").as_string::<i32>();
    let email = col("email").as_string::<i32>();
    let amount = col("amount").as_primitive::<Float64Type>();
    let k = col("k").as_primitive::<Int64Type>();
    let score = col("score").as_primitive::<Float64Type>();
    assert!(
        batch.column_by_name("note").is_none(),
        "select should drop `note`"
    );
    assert!(
        batch.column_by_name("user").is_none(),
        "select should rename `user`"
    );
    (0..batch.num_rows())
        .map(|i| OutRow {
            id: id.value(i),
            customer: customer.value(i).to_string(),
            email: email.value(i).to_string(),
            amount: amount.is_valid(i).then(|| amount.value(i)),
            k: k.value(i),
            score: score.value(i),
        })
        .collect()
}

/// The standard chain: filter → select → mask → scale.
pub fn chain_toml() -> String {
    format!(
        r#"
[[plugin]]
path = "{filter}"
params = {{ where = "k > 500 and email is not null" }}

[[plugin]]
path = "{select}"
params = {{ drop = ["note"], rename = {{ user = "customer" }}, cast = {{ score = "float64" }} }}

[[plugin]]
path = "{mask}"
params = {{ columns = ["email"], salt = "pepper" }}

[[plugin]]
path = "{scale}"
params = {{ columns = ["amount", "score"], a = 3, b = 2 }}
"#,
        filter = plugin("filter").display(),
        select = plugin("select").display(),
        mask = plugin("mask").display(),
        scale = plugin("scale").display(),
    )
}

/// SipHash-2-4-128 keyed by SHA-256(salt)[..16], lowercase hex: the documented `mask`.
pub fn mask_reference(salt: &str, value: &str) -> String {
    use sha2::Digest;
    use siphasher::sip128::{Hasher128, SipHasher24};
    use std::hash::Hasher;
    let d = sha2::Sha256::digest(salt.as_bytes());
    let k0 = u64::from_le_bytes(d[0..8].try_into().unwrap());
    let k1 = u64::from_le_bytes(d[8..16].try_into().unwrap());
    let mut h = SipHasher24::new_with_keys(k0, k1);
    h.write(value.as_bytes());
    h.finish128()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the standard chain must produce for one input row, computed directly.
pub fn chain_reference(r: &Row) -> Option<OutRow> {
    let email = r.email.as_ref()?;
    if r.k <= 500 {
        return None;
    }
    Some(OutRow {
        id: r.id,
        customer: r.user.clone(),
        email: mask_reference("pepper", email),
        amount: r.amount.map(|a| (a - 3.0) / 2.0),
        k: r.k,
        score: (r.score as f64 - 3.0) / 2.0,
    })
}

/// The documented partition hashes, computed here independently of the runtime.
pub fn reference_hash(algorithm: &str, bytes: &[u8]) -> u64 {
    match algorithm {
        "xxh3" => xxhash_rust::xxh3::xxh3_64(bytes),
        "murmur3" => murmur3::murmur3_x64_128(&mut std::io::Cursor::new(bytes), 0).unwrap() as u64,
        "fnv1a" => bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        }),
        "md5" => {
            use md5::Digest;
            let d = md5::Md5::digest(bytes);
            u64::from_le_bytes(d[..8].try_into().unwrap())
        }
        other => panic!("unknown algorithm {other}"),
    }
}

/// The partition number N of a `part-N.<ext>` file.
pub fn part_number(path: &Path) -> usize {
    let stem = path.file_stem().unwrap().to_string_lossy();
    stem.strip_prefix("part-").unwrap().parse().unwrap()
}

/// Asserts that `text` (an error message, usually) holds every one of `parts`.
pub fn contains_all(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "expected {p:?} in:\n{text}");
    }
}

/// Writes `id` (0..rows) and `n`, `rows` integers in 0..50 in a scrambled order, as a Parquet
/// file: a column with many rows but few distinct values, where quantiles fall on (or between)
/// repeated integers. Returns `n`.
pub fn write_few_distinct_ints(path: &Path, rows: usize) -> Vec<i64> {
    let n: Vec<i64> = (0..rows as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as i64 % 50)
        .collect();
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
        ),
        ("n", Arc::new(Int64Array::from(n.clone()))),
    ])
    .unwrap();
    write_batch(path, &batch);
    n
}

/// A Python interpreter with numpy, for comparisons against numpy itself: a virtual environment
/// under `target/test-venv`, made (with numpy from PyPI, by pip) the first time it is needed.
pub fn python_with_numpy() -> PathBuf {
    python_with(&[("numpy", "numpy")])
}

/// A Python interpreter with `deltalake` and `pyarrow`, for reading Delta tables with another
/// implementation: the same virtual environment as [`python_with_numpy`].
pub fn python_with_deltalake() -> PathBuf {
    python_with(&[("pyarrow", "pyarrow"), ("deltalake", "deltalake")])
}

/// A Delta table as the `deltalake` package reads it: `{"version": null}` when there is no
/// table yet, else its `version`, `partition_columns`, `schema` (`[name, type]` pairs) and
/// `columns` (the values of each of `columns`, or of every column when it is empty, by name,
/// in the table's row order).
pub fn read_with_deltalake(table: &Path, columns: &[&str]) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, os, sys
from deltalake import DeltaTable
try:
    dt = DeltaTable(sys.argv[1])
except Exception as e:
    if "no log files" in str(e).lower() or "not a delta table" in str(e).lower() or "tablenotfound" in type(e).__name__.lower():
        print(json.dumps({"version": None}), flush=True)
        os._exit(0)
    raise
t = dt.to_pyarrow_table(columns=sys.argv[2].split(",") if sys.argv[2] else None)
print(json.dumps({
    "version": dt.version(),
    "partition_columns": dt.metadata().partition_columns,
    "schema": [[f.name, str(f.type)] for f in t.schema],
    "columns": {f.name: t.column(f.name).to_pylist() for f in t.schema},
}, default=str), flush=True)
# The answer is out: skip the interpreter's teardown, where Arrow's and deltalake's thread
# pools can abort the process ("terminate called without an active exception").
os._exit(0)
"#;
    let out = Command::new(python_with_deltalake())
        .args(["-c", SCRIPT])
        .arg(table)
        .arg(columns.join(","))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deltalake could not read {}: {}",
        table.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The test virtual environment's interpreter, with each (module, PyPI package) importable:
/// the environment is made and the missing packages installed by pip the first time, one
/// install at a time.
fn python_with(modules: &[(&str, &str)]) -> PathBuf {
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let venv = repo_root().join("target/test-venv");
    let python = venv.join("bin/python");
    let imports = |module: &str| {
        Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    if !python.exists() {
        assert!(
            ok(Command::new("python3").args(["-m", "venv"]).arg(&venv)),
            "python3 -m venv {} failed",
            venv.display()
        );
    }
    for (module, package) in modules {
        if imports(module) {
            continue;
        }
        assert!(
            ok(Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                package
            ])),
            "pip install {package} failed"
        );
        assert!(
            imports(module),
            "{module} is not importable after installing {package}"
        );
    }
    python
}

/// Column of int32 values, for tests that need a small batch.
pub fn int_batch(name: &str, values: Vec<i32>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Int32, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values)) as ArrayRef]).unwrap()
}

/// Checks and removes the flight recorder's directories (`*-replay`) that a failing plugin
/// call leaves on purpose next to the output: each recording must hold `call.json` and
/// `input.arrow`. Returns how many recordings there were.
pub fn take_recordings(dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let is_replay = path.is_dir()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("-replay"));
        if !is_replay {
            continue;
        }
        for rec in std::fs::read_dir(&path).unwrap() {
            let rec = rec.unwrap().path();
            assert!(rec.join("call.json").is_file(), "{rec:?} lacks call.json");
            assert!(
                rec.join("input.arrow").is_file(),
                "{rec:?} lacks input.arrow"
            );
            count += 1;
        }
        std::fs::remove_dir_all(&path).unwrap();
    }
    count
}

/// A small random generator (xorshift) for the moments of faults, seeded from the clock or
/// from `QUIVER_TEST_SEED`; the seed is printed, so that a failing run can be repeated.
pub struct Dice(u64);

impl Dice {
    pub fn new() -> Dice {
        let seed = std::env::var("QUIVER_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("fault timing seed: {seed} (QUIVER_TEST_SEED={seed} repeats it)");
        Dice(seed | 1)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}
