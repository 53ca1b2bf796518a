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

#[test]
fn a_huge_string_is_refused_before_the_host_copies_it() {
    let (ok, err, report) = run_skipping(
        2000,
        &format!(
            "path = \"{}\"\nparams = {{ mode = \"huge-string\", column = \"user\" }}\nlimits = {{ max-output-mib = 16, memory-mib = 400 }}",
            plugin("liar").display()
        ),
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("output limit exceeded: more than 16 MiB returned by one `transform` call"),
        "{err}"
    );
    let p = &report["plugins"][0];
    assert_eq!(p["rows_out"], 0, "every batch was skipped: {p}");
    // 256 MiB strings were built in plugin memory per batch, but none was copied into the host.
    assert_host_memory_bounded("huge string", &report);
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
