//! Capabilities: a plugin gets nothing it is not granted. Imports beyond its grants are refused
//! before it runs, granted directories confine it, only named environment variables are seen,
//! no network is ever linked, and granted clocks cannot hold the host past a deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;

use crate::support::*;

/// A directory with 300 input rows in `in.parquet` and a directory `ref/` to grant.
fn input_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(300, 11));
    std::fs::create_dir(dir.path().join("ref")).unwrap();
    dir
}

/// What `snoop` needs to run at all: it uses `std::fs`, which imports the filesystem and
/// the wall clock (for file times).
const SNOOP_BASE: &str = "clock = \"deterministic\", dirs = [\"ref\"]";

/// Writes a one-plugin pipeline (`plugin` table body given) into `dir` and runs it.
fn run_pipeline(dir: &Path, plugin_table: &str, extra_args: &[&str]) -> (bool, String) {
    run_pipeline_env(dir, plugin_table, extra_args, &[])
}

/// [`run_pipeline`] with extra environment variables for the host.
fn run_pipeline_env(
    dir: &Path,
    plugin_table: &str,
    extra_args: &[&str],
    envs: &[(&str, &str)],
) -> (bool, String) {
    let text = format!(
        "workers = 1\n[source]\npaths = [\"in.parquet\"]\n[[plugin]]\n{plugin_table}\n[sink]\npath = \"out.parquet\"\noverwrite = true\n"
    );
    std::fs::write(dir.join("p.toml"), text).unwrap();
    let mut c = quiver();
    c.current_dir(dir)
        .args(["run", "p.toml"])
        .args(extra_args)
        .envs(envs.iter().copied());
    let (ok, _, err) = run(c);
    (ok, err)
}

/// Runs the `snoop` fixture with `params` and `grants` (the clock grant it always needs is
/// added); returns the one string it found (the same on every row).
fn snoop(dir: &Path, params: &str, grants: &str) -> String {
    let table = format!(
        "path = \"{}\"\nparams = {{ {params} }}\ngrants = {{ clock = \"deterministic\", {grants} }}",
        plugin("snoop").display()
    );
    let (ok, err) = run_pipeline(dir, &table, &[]);
    assert!(ok, "{err}");
    found(dir)
}

fn found(dir: &Path) -> String {
    let batches = read_parquet(&dir.join("out.parquet"));
    let col = batches[0].column_by_name("found").expect("found column");
    let values = col.as_string::<i32>();
    let first = values.value(0).to_string();
    for b in &batches {
        let v = b.column_by_name("found").unwrap().as_string::<i32>();
        assert!(v.iter().all(|x| x == Some(first.as_str())));
    }
    first
}

#[test]
fn a_plugin_importing_the_filesystem_is_refused_without_a_grant() {
    let dir = input_dir();
    let table = format!(
        "path = \"{}\"\nparams = {{ mode = \"read-file\", path = \"/etc/passwd\" }}",
        plugin("snoop").display()
    );
    let (ok, err) = run_pipeline(dir.path(), &table, &[]);
    assert!(!ok);
    assert!(err.contains("plugin `snoop`"), "{err}");
    assert!(err.contains("missing grants"), "{err}");
    assert!(
        err.contains("`dirs = [\"some/dir\"]` for wasi:filesystem/"),
        "{err}"
    );
    // std::fs also imports the wall clock (file times): listed as well.
    assert!(
        err.contains("`clock = true (or \"deterministic\")` for wasi:clocks/wall-clock"),
        "{err}"
    );
    assert!(!dir.path().join("out.parquet").exists());
}

#[test]
fn a_granted_directory_confines_the_plugin_and_is_read_only_by_default() {
    let dir = input_dir();
    std::fs::write(dir.path().join("ref/hello.txt"), "reference data").unwrap();
    let grant = "dirs = [\"ref\"]";
    assert_eq!(
        snoop(
            dir.path(),
            "mode = \"read-file\", path = \"/ref/hello.txt\"",
            grant
        ),
        "reference data"
    );
    assert_eq!(
        snoop(dir.path(), "mode = \"list-dir\", path = \"/ref\"", grant),
        "hello.txt"
    );
    // Nothing outside the grant: not by absolute path, not through `..`.
    for escape in [
        "/etc/passwd",
        "/ref/../../../../etc/passwd",
        "/ref/../in.parquet",
    ] {
        let got = snoop(
            dir.path(),
            &format!("mode = \"read-file\", path = \"{escape}\""),
            grant,
        );
        assert!(got.starts_with("error:"), "{escape}: {got}");
    }
    // Read-only unless `write = true`.
    let got = snoop(
        dir.path(),
        "mode = \"write-file\", path = \"/ref/new.txt\"",
        grant,
    );
    assert!(got.starts_with("error:"), "{got}");
    assert!(!dir.path().join("ref/new.txt").exists());
    let got = snoop(
        dir.path(),
        "mode = \"write-file\", path = \"/out/new.txt\"",
        "dirs = [{ path = \"ref\", as = \"/out\", write = true }]",
    );
    assert_eq!(got, "ok");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ref/new.txt")).unwrap(),
        "written by snoop"
    );
}

#[test]
fn only_granted_environment_variables_are_visible() {
    let dir = input_dir();
    let run_env = |grants: &str| {
        let table = format!(
            "path = \"{}\"\nparams = {{ mode = \"env-all\" }}\ngrants = {{ {SNOOP_BASE}{grants} }}",
            plugin("snoop").display()
        );
        let envs = [
            ("QUIVER_TEST_SECRET", "s3cr3t"),
            ("QUIVER_TEST_OTHER", "other"),
        ];
        let (ok, err) = run_pipeline_env(dir.path(), &table, &[], &envs);
        assert!(ok, "{err}");
        found(dir.path())
    };
    // The host has HOME, PATH, the two variables above…; the plugin sees none of them.
    assert_eq!(run_env(""), "0:");
    assert_eq!(
        run_env(", env = [\"QUIVER_TEST_SECRET\", \"NOT_SET_ANYWHERE\"]"),
        "1:QUIVER_TEST_SECRET"
    );
    let got = snoop(
        dir.path(),
        "mode = \"env\", name = \"HOME\"",
        "dirs = [\"ref\"]",
    );
    assert_eq!(got, "unset");
}

#[test]
fn a_plugin_that_opens_a_socket_is_refused_at_load_time() {
    let dir = input_dir();
    let table = format!(
        "path = \"{}\"\ngrants = {{ dirs = [\".\"], clock = true, random = true }}",
        plugin("dialer").display()
    );
    let (ok, err) = run_pipeline(dir.path(), &table, &[]);
    assert!(!ok);
    assert!(err.contains("wasi:sockets/"), "{err}");
    assert!(
        err.contains("never grants (plugins get no network)"),
        "{err}"
    );
    // `plugin inspect` says the same of each import.
    let mut c = quiver();
    c.args(["plugin", "inspect"]).arg(plugin("dialer"));
    let (_, out, err) = run(c);
    assert!(
        out.contains("never granted") || err.contains("never grants"),
        "{out}{err}"
    );
}

#[test]
fn clocks_need_a_grant_and_cannot_hold_the_host_past_the_deadline() {
    let dir = input_dir();
    let clock = |mode: &str, grants: &str| {
        format!(
            "path = \"{}\"\nparams = {{ mode = \"{mode}\" }}\ngrants = {{ {grants} }}\nlimits = {{ timeout-ms = 300 }}",
            plugin("clock").display()
        )
    };
    let (ok, err) = run_pipeline(dir.path(), &clock("now", ""), &[]);
    assert!(!ok);
    assert!(
        err.contains("`clock = true (or \"deterministic\")` for wasi:clocks/"),
        "{err}"
    );
    assert!(
        err.contains("`random = true (or \"deterministic\")` for wasi:random/random"),
        "{err}"
    );
    for mode in ["spin", "sleep"] {
        let started = Instant::now();
        let grants = "clock = true, random = true";
        let (ok, err) = run_pipeline(dir.path(), &clock(mode, grants), &[]);
        let took = started.elapsed();
        assert!(!ok, "{mode}");
        assert!(
            err.contains("plugin `clock`: time limit of 300 ms per call exceeded in `transform`"),
            "{mode}: {err}"
        );
        // A one-hour sleep is cut at the deadline.
        assert!(took < Duration::from_secs(20), "{mode} took {took:?}");
    }
    // A deterministic clock jumps over the sleep at once.
    let (ok, err) = run_pipeline(
        dir.path(),
        &clock("sleep", "clock = \"deterministic\", random = true"),
        &[],
    );
    assert!(ok, "{err}");
}

/// Runs the clock fixture in `now` mode; returns (wall_ns, mono_ns, random) of the first row.
fn clock_now(dir: &Path, grants: &str, args: &[&str]) -> (i64, i64, i64) {
    let table = format!(
        "path = \"{}\"\nparams = {{ mode = \"now\" }}\ngrants = {{ {grants} }}",
        plugin("clock").display()
    );
    let (ok, err) = run_pipeline(dir, &table, args);
    assert!(ok, "{err}");
    let b = &read_parquet(&dir.join("out.parquet"))[0];
    let get = |name: &str| {
        b.column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0)
    };
    (get("wall_ns"), get("mono_ns"), get("random"))
}

#[test]
fn deterministic_mode_fixes_the_clock_and_randomness() {
    let dir = input_dir();
    let det = "clock = \"deterministic\", random = \"deterministic\"";
    let a = clock_now(dir.path(), det, &[]);
    let b = clock_now(dir.path(), det, &[]);
    assert_eq!(a, b);
    assert_eq!(a.0, 946_684_800 * 1_000_000_000, "2000-01-01T00:00:00Z");
    // `--deterministic` turns real grants deterministic too.
    assert_eq!(
        clock_now(
            dir.path(),
            "clock = true, random = true",
            &["--deterministic"]
        ),
        a
    );
    // The real clock and entropy: now, and different each run.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let r1 = clock_now(dir.path(), "clock = true, random = true", &[]);
    let r2 = clock_now(dir.path(), "clock = true, random = true", &[]);
    assert!(
        (r1.0 - now_ns).abs() < 600 * 1_000_000_000,
        "{r1:?} vs {now_ns}"
    );
    assert_ne!(r1.2, r2.2, "two runs drew the same random bytes");
}

#[test]
fn special_files_in_a_granted_directory_are_refused_instead_of_blocking_the_host() {
    let dir = input_dir();
    let r = dir.path().join("ref");
    std::fs::write(r.join("plain.txt"), "plain data").unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(r.join("fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("fifo", r.join("link-to-fifo")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(r.join("socket")).unwrap();
    let grant = "dirs = [{ path = \"ref\", write = true }]";
    // Each open would block for ever (a FIFO without a writer or reader), or open what no
    // plugin should reach; `run` kills a run that hangs after two minutes, failing the test.
    for (mode, path) in [
        ("read-file", "/ref/fifo"),
        ("write-file", "/ref/fifo"),
        ("read-file", "/ref/link-to-fifo"),
        ("read-file", "/ref/socket"),
    ] {
        let table = format!(
            "path = \"{}\"\nparams = {{ mode = \"{mode}\", path = \"{path}\" }}\ngrants = {{ clock = \"deterministic\", {grant} }}\nlimits = {{ timeout-ms = 5000 }}",
            plugin("snoop").display()
        );
        let (ok, err) = run_pipeline(dir.path(), &table, &[]);
        assert!(ok, "{mode} {path}: {err}");
        let got = found(dir.path());
        assert!(
            got.starts_with("error: "),
            "{mode} {path}: the plugin got {got:?}"
        );
        // The path as the plugin gave it, relative to the granted directory.
        let name = path.trim_start_matches("/ref/");
        assert!(
            err.contains(&format!("refused to open {name}: it is a special file")),
            "{mode} {path}: {err}"
        );
    }
    // Regular files in the same grant are still read.
    assert_eq!(
        snoop(
            dir.path(),
            "mode = \"read-file\", path = \"/ref/plain.txt\"",
            grant
        ),
        "plain data"
    );
}
