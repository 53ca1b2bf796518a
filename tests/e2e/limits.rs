//! Limits: a plugin that loops is stopped by the deadline, one that allocates without bound by
//! the memory limit, one that floods output by the output caps; each error names the plugin
//! and the limit, and the host keeps working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::abi::{Param, ParamValue};
use quiver::capability::Grants;
use quiver::plugin::{Host, Instance, PluginError};
use quiver::sandbox::{EngineOptions, Limits};

use crate::support::*;

fn input_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(300, 4));
    dir
}

fn run_failing(dir: &std::path::Path, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let mut c = quiver();
    c.current_dir(dir)
        .args(["run", "-i", "in.parquet", "-o", "out.parquet"])
        .args(args);
    let err = run_err(c);
    assert!(!dir.join("out.parquet").exists());
    (err, started.elapsed())
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline() {
    let dir = input_dir();
    let (err, took) = run_failing(dir.path(), &["--plugin", "spin", "--timeout-ms", "300"]);
    assert!(
        err.contains("plugin `spin`: time limit of 300 ms per call exceeded in `transform`"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let (err, _) = run_failing(
        dir.path(),
        &[
            "--plugin",
            "spin",
            "-p",
            "in-init=true",
            "--timeout-ms",
            "200",
        ],
    );
    assert!(
        err.contains("time limit of 200 ms per call exceeded in `init`"),
        "{err}"
    );
}

#[test]
fn unbounded_allocation_is_stopped_by_the_memory_limit() {
    let dir = input_dir();
    let (err, _) = run_failing(dir.path(), &["--plugin", "hog", "--memory-mib", "48"]);
    assert!(
        err.contains("plugin `hog`: memory limit of 48 MiB exceeded in `transform`"),
        "{err}"
    );
}

#[test]
fn deep_recursion_is_stopped_by_the_stack_limit() {
    let dir = input_dir();
    let (err, _) = run_failing(
        dir.path(),
        &["--plugin", "liar", "-p", "mode=recurse", "-p", "column=k"],
    );
    assert!(
        err.contains("plugin `liar`: trapped in `transform`: wasm trap: call stack exhausted"),
        "{err}"
    );
}

/// Runs the `liar` plugin in `bomb` mode (100 copies of every batch) over `rows` rows with the
/// given limits table, expecting failure; returns stderr.
fn bomb(rows: usize, limits: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(rows, 5));
    let pipeline = format!(
        "[source]\npaths = [\"in.parquet\"]\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"bomb\", column = \"k\" }}\nlimits = {{ {limits} }}\n[sink]\npath = \"out.parquet\"\n",
        plugin("liar").display()
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let mut c = quiver();
    c.current_dir(dir.path()).args(["run", "p.toml"]);
    let err = run_err(c);
    assert!(!dir.path().join("out.parquet").exists());
    err
}

#[test]
fn output_bomb_is_stopped_by_the_output_cap() {
    let err = bomb(300, "max-output-rows = 10000");
    assert!(err.contains("plugin `liar`: output limit exceeded: 30000 rows from a batch of 300 (max-output-rows = 10000)"), "{err}");
}

#[test]
fn output_bytes_are_capped_while_being_copied_out() {
    // 100 copies of 5000 int64 values is about 4 MiB: refused before the host allocates it.
    let err = bomb(5000, "max-output-mib = 1");
    assert!(err.contains("plugin `liar`: output limit exceeded: more than 1 MiB returned by one `transform` call"), "{err}");
}

#[test]
fn a_panic_is_reported_with_the_plugins_own_message_and_output_is_logged() {
    let dir = input_dir();
    let (err, _) = run_failing(
        dir.path(),
        &[
            "-v",
            "--plugin",
            "liar",
            "-p",
            "mode=print-then-panic",
            "-p",
            "column=k",
        ],
    );
    assert!(
        err.contains("plugin `liar`: trapped in `transform`"),
        "{err}"
    );
    assert!(err.contains("liar panics on purpose"), "{err}");
    // stdout of the plugin reaches the host's log, attributed to the plugin.
    assert!(
        err.contains("about to fail on a batch of 300 rows"),
        "{err}"
    );
    assert!(
        err.contains("plugin=\"liar\"") || err.contains("plugin=liar"),
        "{err}"
    );
}

fn params(pairs: &[(&str, &str)]) -> Vec<Param> {
    pairs
        .iter()
        .map(|(n, v)| Param {
            name: n.to_string(),
            value: ParamValue::Text(v.to_string()),
        })
        .collect()
}

#[test]
fn the_host_survives_and_replaces_a_trapped_instance() {
    let host = Host::new(EngineOptions::new(16), Some(cache_dir())).unwrap();
    let none = || Arc::new(Grants::default());
    let limits = Limits {
        timeout_ms: 200,
        memory_mib: 32,
        ..Limits::default()
    };
    let batch = int_batch("v", (0..1000).collect());

    let spin = host.load(&plugin("spin")).unwrap();
    let mut spinning = Instance::new(spin, vec![], limits, none()).unwrap();
    let err = spinning.transform(&batch).unwrap_err();
    assert!(
        matches!(err, PluginError::Timeout { limit_ms: 200, .. }),
        "{err}"
    );
    // Calling again builds a fresh instance (re-running init) rather than failing to enter
    // the trapped one; it times out again, cleanly.
    let err = spinning.transform(&batch).unwrap_err();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err}");
    assert_eq!(spinning.metrics().restarts, 2);

    let hog = host.load(&plugin("hog")).unwrap();
    let err = Instance::new(hog, vec![], limits, none())
        .unwrap()
        .transform(&batch)
        .unwrap_err();
    assert!(
        matches!(err, PluginError::Memory { limit_mib: 32, .. }),
        "{err}"
    );

    // An honest instance of another plugin on the same host still works, and a liar that
    // panics on one call can be followed by honest calls on the same `Instance` value.
    let liar = host.load(&plugin("liar")).unwrap();
    let mut honest = Instance::new(
        liar.clone(),
        params(&[("mode", "honest"), ("column", "v")]),
        limits,
        none(),
    )
    .unwrap();
    let out = honest.transform(&batch).unwrap();
    assert_eq!(out[0].column(0).as_ref(), batch.column(0).as_ref());
    let mut panicking = Instance::new(
        liar,
        params(&[("mode", "print-then-panic"), ("column", "v")]),
        limits,
        none(),
    )
    .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            panicking.transform(&batch),
            Err(PluginError::Trap { .. })
        ));
    }
    assert_eq!(panicking.metrics().restarts, 3);
    let _keep: Arc<_> = honest.plugin().clone();
}

#[test]
fn a_failing_call_is_recorded_and_replays_the_same_way() {
    let dir = input_dir();
    let (err, _) = run_failing(
        dir.path(),
        &["--plugin", "liar", "-p", "mode=error", "-p", "column=k"],
    );
    assert!(err.contains("refusing this batch"), "{err}");
    let recordings: Vec<_> = std::fs::read_dir(dir.path().join("out-replay"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let rec = &recordings[0];
    assert!(
        rec.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("00-liar-p0-b0"),
        "{rec:?}"
    );
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rec.join("call.json")).unwrap()).unwrap();
    assert_eq!(call["params"]["mode"], "error");
    assert_eq!(call["sha256"].as_str().unwrap().len(), 64);
    let mut c = quiver();
    c.args(["replay"]).arg(rec);
    let (ok, out, stderr) = run(c);
    assert!(ok, "{stderr}");
    assert!(
        out.contains("replayed liar 0.1.0") && out.contains("on 300 rows"),
        "{out}"
    );
    assert!(
        out.contains(
            "this time: plugin `liar`: column `k`: refusing this batch (row 3 of the batch)"
        ),
        "{out}"
    );
    assert!(out.contains("peak memory"), "{out}");
}
