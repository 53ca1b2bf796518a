//! The hostile-plugin suite, continued from `limits.rs` (loops, allocation, recursion, bombs,
//! panics) and `capabilities.rs` (files, environment, sockets, clocks): log floods, huge
//! strings, fuel, the stack setting, and the host's own memory, which must stay bounded while
//! plugins misbehave under the `skip` policy.

use std::path::Path;

use crate::support::*;

/// Runs one plugin over `rows` generated rows in 4 partitions on 2 workers with `on-error =
/// "skip"`; returns (success, stderr, the JSON report).
fn run_skipping(rows: usize, plugin_table: &str) -> (bool, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(rows, 21));
    let text = format!(
        "workers = 2\n[source]\npaths = [\"in.parquet\"]\nbatch-size = 1000\n[partition]\nby = [\"user\"]\ncount = 4\n[[plugin]]\non-error = \"skip\"\n{plugin_table}\n[sink]\npath = \"out.parquet\"\n"
    );
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    let mut c = quiver();
    c.current_dir(dir.path())
        .args(["run", "p.toml", "--report-json", "report.json"]);
    let (ok, _, err) = run(c);
    let report = read_report(dir.path());
    (ok, err, report)
}

fn read_report(dir: &Path) -> serde_json::Value {
    std::fs::read_to_string(dir.join("report.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null)
}

/// What the host itself may hold besides plugin memory: the binary, the engine, compiled
/// code, the input and output batches in flight.
const HOST_BASE_MIB: u64 = 300;

/// Asserts that the host's peak resident memory stayed within its base plus the memory limit
/// of each of the two workers' plugin instances (linear memory lives in the host process).
fn assert_host_memory_bounded(what: &str, report: &serde_json::Value) {
    let rss = report["host_peak_rss_bytes"]
        .as_u64()
        .expect("the report states the host's peak memory")
        >> 20;
    let limit = report["plugins"][0]["limits"]["memory-mib"]
        .as_u64()
        .unwrap();
    let bound = HOST_BASE_MIB + 2 * limit;
    assert!(
        rss <= bound,
        "{what}: host peak {rss} MiB > {bound} MiB (base + 2 × {limit} MiB)"
    );
}

#[test]
fn a_log_flood_is_capped_and_counted() {
    let (ok, err, report) = run_skipping(
        2000,
        &format!(
            "path = \"{}\"\nparams = {{ mode = \"flood\", column = \"k\" }}\nlimits = {{ log-kib = 16, memory-mib = 64 }}",
            plugin("liar").display()
        ),
    );
    assert!(ok, "{err}");
    let p = &report["plugins"][0];
    // Two batches per partition at most, each flooding 64 MiB: all but 16 KiB per call dropped.
    let calls = p["calls"].as_u64().unwrap();
    assert!(calls >= 2, "{p}");
    assert!(p["max_call_log_bytes"].as_u64().unwrap() <= 16 << 10, "{p}");
    assert!(
        p["log_dropped_bytes"].as_u64().unwrap() >= calls * (60 << 20),
        "{p}"
    );
    assert_eq!(p["rows_out"], p["rows_in"]);
    // Only the capped part reaches the host's log (the plugin's stderr is shown as warnings):
    // at most 16 KiB per call, plus a line per call saying what was dropped.
    assert!(
        err.len() as u64 <= calls * (17 << 10) + (8 << 10),
        "{} bytes of stderr for {calls} calls",
        err.len()
    );
    assert!(err.contains("of log output over the limit"), "{err}");
    assert_host_memory_bounded("log flood", &report);
}

/// Runs `plugin_table` under `skip` (see [`run_skipping`]) and checks that every batch was
/// refused with `error` while the host's memory stayed bounded.
fn assert_every_batch_refused(what: &str, plugin_table: &str, error: &str) {
    let (ok, err, report) = run_skipping(2000, plugin_table);
    assert!(ok, "{what}: {err}");
    assert!(err.contains(error), "{what}: {err}");
    let p = &report["plugins"][0];
    assert_eq!(p["rows_out"], 0, "{what}: every batch was skipped: {p}");
    assert_host_memory_bounded(what, &report);
}

#[test]
fn a_huge_string_is_refused_before_the_host_copies_it() {
    // 256 MiB strings are built in plugin memory per batch, but none is copied into the host.
    assert_every_batch_refused(
        "huge string",
        &format!(
            "path = \"{}\"\nparams = {{ mode = \"huge-string\", column = \"user\" }}\nlimits = {{ max-output-mib = 16, memory-mib = 400 }}",
            plugin("liar").display()
        ),
        "output limit exceeded: more than 16 MiB returned by one `transform` call",
    );
}

#[test]
fn host_memory_stays_bounded_while_plugins_hog_memory_and_bomb_output() {
    let cases = [
        (
            "hog",
            "path = \"{hog}\"\nlimits = { memory-mib = 64 }",
            "memory limit of 64 MiB exceeded",
            true,
        ),
        (
            "bomb",
            "path = \"{liar}\"\nparams = { mode = \"bomb\", column = \"k\" }\nlimits = { max-output-rows = 1000, memory-mib = 64 }",
            "output limit exceeded",
            false,
        ),
        (
            "recursion",
            "path = \"{liar}\"\nparams = { mode = \"recurse\", column = \"k\" }\nlimits = { memory-mib = 64 }",
            "call stack exhausted",
            true,
        ),
    ];
    // (what, plugin table, error, whether it traps and so costs the instance)
    for (what, table, error, traps) in cases {
        let table = table
            .replace("{hog}", &plugin("hog").display().to_string())
            .replace("{liar}", &plugin("liar").display().to_string());
        let (ok, err, report) = run_skipping(4000, &table);
        assert!(ok, "{what}: {err}");
        assert!(err.contains(error), "{what}: {err}");
        let p = &report["plugins"][0];
        assert_eq!(p["rows_out"], 0, "{what}: {p}");
        if traps {
            assert!(p["restarts"].as_u64().unwrap() >= 2, "{what}: {p}");
        }
        assert_host_memory_bounded(what, &report);
    }
}

#[test]
fn fuel_meters_deterministically_and_stops_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(3000, 8));
    let fuel_of = || {
        let mut c = quiver();
        c.current_dir(dir.path()).args([
            "run",
            "-i",
            "in.parquet",
            "--plugin",
            "scale",
            "-p",
            "columns=amount",
            "-p",
            "a=1",
            "-p",
            "b=2",
            "--fuel",
            "100000000",
            "-w",
            "1",
            "-o",
            "out.parquet",
            "--overwrite",
            "--report-json",
            "report.json",
        ]);
        let err = run_ok(c);
        assert!(err.contains("fuel per call"), "{err}");
        let r = read_report(dir.path());
        let p = &r["plugins"][0];
        assert_eq!(p["limits"]["fuel"], 100_000_000);
        p["fuel"].as_u64().unwrap()
    };
    let first = fuel_of();
    assert!(first > 3000, "scaling 3000 rows burnt only {first} fuel");
    assert_eq!(fuel_of(), first, "fuel is not deterministic");

    let mut c = quiver();
    c.current_dir(dir.path()).args([
        "run",
        "-i",
        "in.parquet",
        "--plugin",
        "spin",
        "--fuel",
        "5000000",
        "-o",
        "spun.parquet",
    ]);
    let err = run_err(c);
    assert!(
        err.contains("plugin `spin`: fuel limit of 5000000 per call exhausted in `transform`"),
        "{err}"
    );
    assert!(!dir.path().join("spun.parquet").exists());
}

#[test]
fn a_smaller_stack_stops_recursion_sooner_and_honest_plugins_still_run() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(300, 9));
    let pipeline = |mode: &str| {
        format!(
            "[source]\npaths = [\"in.parquet\"]\n[limits]\nstack-kib = 128\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"{mode}\", column = \"k\" }}\n[sink]\npath = \"out.parquet\"\noverwrite = true\n",
            plugin("liar").display()
        )
    };
    std::fs::write(dir.path().join("p.toml"), pipeline("recurse")).unwrap();
    let mut c = quiver();
    c.current_dir(dir.path()).args(["run", "p.toml"]);
    let err = run_err(c);
    assert!(err.contains("call stack exhausted"), "{err}");
    std::fs::write(dir.path().join("p.toml"), pipeline("honest")).unwrap();
    let mut c = quiver();
    c.current_dir(dir.path()).args(["run", "p.toml"]);
    let err = run_ok(c);
    assert!(err.contains("Wasm stack 128 KiB"), "{err}");
}

/// A component that never finishes instantiating: its core module's start function loops.
/// No compiler emits this from plugin source, so the test writes it in the component text
/// format. It exports the transformer interface (as an empty instance) so that it passes the
/// host's export check and reaches instantiation.
#[test]
fn an_endless_start_function_is_stopped_by_the_instantiation_limit() {
    let dir = tempfile::tempdir().unwrap();
    let wat = format!(
        r#"(component
             (core module $m (func $spin (loop $l (br $l))) (start $spin))
             (core instance (instantiate $m))
             (instance $empty)
             (export "{}" (instance $empty)))"#,
        quiver::plugin::TRANSFORMER_INTERFACE
    );
    std::fs::write(dir.path().join("stuck.wasm"), wat::parse_str(&wat).unwrap()).unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(10, 3));
    std::fs::write(
        dir.path().join("p.toml"),
        "[source]\npaths = [\"in.parquet\"]\n[[plugin]]\npath = \"stuck.wasm\"\nlimits = { instantiate-ms = 300 }\n[sink]\npath = \"out.parquet\"\n",
    )
    .unwrap();
    let mut c = quiver();
    c.current_dir(dir.path()).args(["run", "p.toml"]);
    let started = std::time::Instant::now();
    let err = run_err(c);
    let took = started.elapsed();
    assert!(
        err.contains("stuck.wasm") && err.contains("300 ms") && err.contains("`instantiate`"),
        "{err}"
    );
    // Stopped by the 300 ms limit, not the default of 10 s.
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
    assert!(!dir.path().join("out.parquet").exists());
}

/// A directory with `rows` generated rows in `in.parquet` and `pipeline` in `p.toml`.
fn run_dir(rows: usize, pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(rows, 21));
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    dir
}

/// Runs `quiver run p.toml` in `dir`; returns (exit code — `None` if a signal ended it —,
/// stderr).
fn run_status(dir: &Path) -> (Option<i32>, String) {
    let child = quiver()
        .current_dir(dir)
        .args(["run", "p.toml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning quiver");
    let out = finish(child);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_accepted_stack_size_stops_deep_recursion_with_a_trap_not_a_host_abort() {
    // 2001–2048 KiB once overflowed the worker threads' native stack (SIGABRT); 8192 is the
    // largest value accepted.
    for stack in [2001, 2048, 8192] {
        let dir = run_dir(
            2000,
            &format!(
                "workers = 2\n[source]\npaths = [\"in.parquet\"]\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"recurse\", column = \"k\" }}\nlimits = {{ stack-kib = {stack}, memory-mib = 64 }}\n[sink]\npath = \"out.parquet\"\n",
                plugin("liar").display()
            ),
        );
        let (code, err) = run_status(dir.path());
        assert_eq!(code, Some(1), "stack-kib = {stack}: the host died: {err}");
        // The engine's stack limit, or on deep stacks the guest's own shadow stack running out
        // of its linear memory first: a trap either way.
        assert!(
            err.contains("plugin `liar`: trapped in `transform`: wasm trap: "),
            "stack-kib = {stack}: {err}"
        );
        // Nothing half-written; the failing call was recorded, and replays the same way on
        // the replaying thread.
        assert_only(dir.path(), &["in.parquet", "p.toml", "out-replay"]);
        let rec = std::fs::read_dir(dir.path().join("out-replay"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut c = quiver();
        c.arg("replay").arg(&rec);
        let (ok, out, err) = run(c);
        assert!(ok, "replay with stack-kib = {stack}: {err}");
        assert!(out.contains("this time: plugin `liar`: trapped"), "{out}");
    }
}

#[test]
fn limits_out_of_range_are_refused_naming_the_key_and_its_range() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(100, 4));
    let scale = "name = \"scale\"\nparams = { columns = [\"amount\"], a = 1.0, b = 2.0 }";
    // (pipeline-wide table, plugin limits, what the error must say)
    let cases: [(&str, &str, &[&str]); 12] = [
        (
            "stack-kib = 8193",
            "",
            &[
                "[limits]",
                "`stack-kib = 8193` is out of range",
                "64 to 8192 KiB",
            ],
        ),
        (
            "stack-kib = 63",
            "",
            &["`stack-kib = 63` is out of range", "64 to 8192 KiB"],
        ),
        (
            "",
            "max-output-mib = 17592186044416",
            &[
                "[[plugin]] scale limits",
                "`max-output-mib = 17592186044416`",
                "1 to 4096 MiB",
            ],
        ),
        (
            "timeout-ms = 0",
            "",
            &["`timeout-ms = 0` is out of range", "1 to 86400000 ms"],
        ),
        (
            "",
            "timeout-ms = 0",
            &["[[plugin]] scale limits", "`timeout-ms = 0`"],
        ),
        ("memory-mib = 0", "", &["`memory-mib = 0`", "1 to 4096 MiB"]),
        (
            "memory-mib = 4097",
            "",
            &["`memory-mib = 4097`", "1 to 4096 MiB"],
        ),
        (
            "",
            "max-output-batches = 0",
            &["`max-output-batches = 0`", "1 to 65536 batches"],
        ),
        (
            "log-kib = 65537",
            "",
            &["`log-kib = 65537`", "0 to 65536 KiB"],
        ),
        ("fuel = 0", "", &["`fuel = 0`"]),
        ("instantiate-ms = 0", "", &["`instantiate-ms = 0`"]),
        ("max-output-rows = 0", "", &["`max-output-rows = 0`"]),
    ];
    for (table, overrides, says) in cases {
        let text = format!(
            "[source]\npaths = [\"in.parquet\"]\n[limits]\n{table}\n[[plugin]]\n{scale}\nlimits = {{ {overrides} }}\n[sink]\npath = \"out.parquet\"\n"
        );
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        let (code, err) = run_status(dir.path());
        assert_eq!(code, Some(1), "{table}{overrides}: {err}");
        for s in says {
            assert!(err.contains(s), "{table}{overrides}: `{s}` not in: {err}");
        }
        assert_only(dir.path(), &["in.parquet", "p.toml"]);
    }
    // The same checks apply to flags and to the source's batch size.
    for (args, says) in [
        (
            &["--timeout-ms", "0"][..],
            "`timeout-ms = 0` is out of range",
        ),
        (
            &["--memory-mib", "0"][..],
            "`memory-mib = 0` is out of range",
        ),
        (&["--fuel", "0"][..], "`fuel = 0` is out of range"),
    ] {
        let mut c = quiver();
        c.current_dir(dir.path())
            .args([
                "run",
                "-i",
                "in.parquet",
                "--plugin",
                "scale",
                "-p",
                "columns=amount",
                "-o",
                "out.parquet",
            ])
            .args(args);
        let err = run_err(c);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    std::fs::write(
        dir.path().join("p.toml"),
        format!("[source]\npaths = [\"in.parquet\"]\nbatch-size = 0\n[[plugin]]\n{scale}\n[sink]\npath = \"out.parquet\"\n"),
    )
    .unwrap();
    let (code, err) = run_status(dir.path());
    assert_eq!(code, Some(1));
    assert!(err.contains("batch-size must be at least 1"), "{err}");
    assert_only(dir.path(), &["in.parquet", "p.toml"]);
}

#[test]
fn millions_of_empty_output_batches_are_refused_before_the_host_copies_them() {
    // 5 million batches of nothing: about 300 MB of plugin memory, and as much again in the
    // host for each call if they were lifted. The cap refuses them before the first is copied,
    // so nothing but the plugins' own memory comes on top of the host's base.
    assert_every_batch_refused(
        "many batches",
        &format!(
            "path = \"{}\"\nparams = {{ mode = \"many-batches\", count = 5000000 }}\nlimits = {{ memory-mib = 512 }}",
            plugin("vandal").display()
        ),
        "output limit exceeded: 5000000 output batches from one `transform` call (max-output-batches = 1024)",
    );
}

/// The README's bound on a batch run's host memory, in MiB: the host's base, every worker's
/// plugin memory, three outputs per worker in flight (each at most the smaller of the output
/// cap and the plugin's memory), and each output file's buffered row group.
fn host_memory_formula(workers: u64, memory_mib: u64, max_output_mib: u64, files: u64) -> u64 {
    HOST_BASE_MIB
        + workers * memory_mib
        + 3 * workers * max_output_mib.min(memory_mib)
        + files * 128
}

#[test]
fn large_legitimate_output_stays_within_the_documented_host_memory_formula() {
    // Each call returns 120 MiB of strings (under its 128 MiB output cap): about 1 GiB over
    // the run, so the output would not fit the bound if the host kept it.
    let dir = run_dir(
        4000,
        &format!(
            "workers = 2\n[source]\npaths = [\"in.parquet\"]\nbatch-size = 500\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"big-output\", mib = 120 }}\nlimits = {{ memory-mib = 300, max-output-mib = 128 }}\n[sink]\npath = \"out.parquet\"\n",
            plugin("vandal").display()
        ),
    );
    let mut c = quiver();
    c.current_dir(dir.path())
        .args(["run", "p.toml", "--report-json", "report.json"]);
    let err = run_ok(c);
    let report = read_report(dir.path());
    let p = &report["plugins"][0];
    assert_eq!(p["rows_out"], 4000, "{p}");
    assert!(p["bytes_out"].as_u64().unwrap() >= 8 * (120 << 20), "{p}");
    let rss = report["host_peak_rss_bytes"].as_u64().unwrap() >> 20;
    let bound = host_memory_formula(2, 300, 128, 1);
    assert!(
        rss <= bound,
        "host peak {rss} MiB > the formula's {bound} MiB: {err}"
    );
}
