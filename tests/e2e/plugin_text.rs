//! Text a plugin controls — its name, version, error messages, panic texts, log lines, column
//! names, time zones — must never become a path outside the run's directories nor reach the
//! terminal as control sequences, and is cut to a documented size wherever it is printed or
//! stored. The `vandal` fixture (tests/plugins/vandal) names itself `x/../../vandal` followed by
//! terminal escapes and attacks through each of these.

use std::path::{Path, PathBuf};

use crate::support::*;

/// The escapes `vandal` puts in its texts, as the host must show them: visibly escaped.
const SHOWN: [&str; 4] = [
    "\\x1b[2J",
    "\\x1b]0;owned\\x07",
    "\\r$ sudo rm -rf / ",
    "\\u{202e}",
];

/// The fixture's name as the host shows it.
const NAME_SHOWN: &str = "x/../../vandal\\x1b]0;owned\\x07\\x1b[2J";

/// Asserts that `text` holds no byte or character a terminal would act on: C0 controls but
/// newline, DEL, C1 controls, and the bidirectional overrides.
fn assert_inert(what: &str, text: &str) {
    let bad: Vec<(usize, char)> = text
        .char_indices()
        .filter(|&(_, c)| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: control characters reach the terminal at {:?}:\n{}",
        &bad[..bad.len().min(5)],
        text.escape_debug()
    );
}

/// A run directory `<root>/a/b/work` (so that `../..` from any directory of the run still lands
/// inside the temporary root, where the test can see it) with 600 input rows.
fn work_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("a/b/work");
    std::fs::create_dir_all(&work).unwrap();
    write_parquet(&work.join("in.parquet"), &generate(600, 5));
    (root, work)
}

/// Runs `vandal` in `mode` over `work/in.parquet` with the pipeline's other settings.
fn run_vandal(work: &Path, mode: &str, extra_toml: &str, args: &[&str]) -> (bool, String, String) {
    let text = format!(
        "workers = 2\n{extra_toml}\n[source]\npaths = [\"in.parquet\"]\nbatch-size = 200\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"{mode}\" }}\n{}\n[sink]\npath = \"out.parquet\"\n",
        plugin("vandal").display(),
        if mode == "fail" || mode == "fail-huge" {
            "on-error = \"dead-letter\""
        } else {
            ""
        }
    );
    std::fs::write(work.join("p.toml"), text).unwrap();
    let mut c = quiver();
    c.current_dir(work).args(["run", "p.toml"]).args(args);
    run(c)
}

/// Every file and directory below `root`, relative to it.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_plugin_name_with_dot_dot_cannot_place_recordings_or_dead_letters_outside_their_directory() {
    let (root, work) = work_dir();
    // Where the name would lead the recorder (`<replay>/00-x/../../vandal…`) and, with the
    // dead letters in the same directory, the dead-letter writer: files that must survive.
    let escaped_dir = work.join("vandal\u{1b}]0;owned\u{7}\u{1b}[2J-p0-b0");
    let victim = work.join("vandal\u{1b}]0;owned\u{7}\u{1b}[2J.parquet");
    std::fs::write(&victim, "precious").unwrap();
    let (ok, _, err) = run_vandal(
        &work,
        "fail",
        "replay-dir = \"kept\"\n[dead-letter]\npath = \"kept\"",
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!escaped_dir.exists());
    // Everything the run made is inside `kept/`, named after the plugin's position and a safe
    // form of its name; the dead letters hold every row.
    let safe = "x_.._.._vandal_x1b_0_owned_x07_x1b_2J";
    let made: Vec<String> = tree(root.path())
        .into_iter()
        .filter(|p| !p.ends_with("in.parquet") && !p.ends_with("p.toml"))
        // The pipeline's lock and run history, kept by the host next to the pipeline file.
        .filter(|p| !p.starts_with(&format!("a/b/work/{STATE_DIR}")))
        .collect();
    let dead = format!("a/b/work/kept/00-{safe}.parquet");
    assert!(made.contains(&dead), "{made:#?}");
    for p in &made {
        let allowed = [
            "a",
            "a/b",
            "a/b/work",
            "a/b/work/kept",
            "a/b/work/out.parquet",
        ]
        .contains(&p.as_str())
            || p == &format!("a/b/work/{}", victim.file_name().unwrap().to_string_lossy())
            || p.starts_with(&format!("a/b/work/kept/00-{safe}"));
        assert!(
            allowed,
            "the run wrote {p:?} outside its directories:\n{made:#?}"
        );
    }
    let recordings: Vec<&String> = made
        .iter()
        .filter(|p| p.starts_with("a/b/work/kept/00-") && p.ends_with("call.json"))
        .collect();
    assert!(!recordings.is_empty(), "{made:#?}");
    let rows: usize = read_parquet(&root.path().join(&dead))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 600);
    assert_inert("stderr", &err);
}

#[test]
fn streaming_records_a_hostile_plugin_inside_the_replay_directory() {
    let (root, work) = work_dir();
    let lines: String = (0..500)
        .map(|i| format!("{{\"user\": \"u{}\", \"k\": {i}}}\n", i % 9))
        .collect();
    std::fs::write(work.join("in.jsonl"), lines).unwrap();
    let text = format!(
        "[source]\npaths = [\"in.jsonl\"]\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"fail\" }}\non-error = \"skip\"\n[sink]\npath = \"out\"\nformat = \"jsonl\"\n[stream]\nbatch-rows = 100\ncheckpoint-ms = 50\n",
        plugin("vandal").display()
    );
    std::fs::write(work.join("s.toml"), text).unwrap();
    let mut c = quiver();
    c.current_dir(&work)
        .args(["run", "s.toml", "--stream", "--stop-at-end"]);
    let (ok, _, err) = run(c);
    assert!(ok, "{err}");
    assert_inert("stderr", &err);
    let outside: Vec<String> = tree(root.path())
        .into_iter()
        .filter(|p| {
            let run_own = [
                "a",
                "a/b",
                "a/b/work",
                "a/b/work/s.toml",
                "a/b/work/in.parquet",
            ];
            let run_own_dirs = [
                "a/b/work/out",
                "a/b/work/in.jsonl",
                "a/b/work/out-checkpoints",
            ];
            !run_own.contains(&p.as_str())
                && !run_own_dirs
                    .iter()
                    .any(|d| p == d || p.starts_with(&format!("{d}/")))
        })
        .collect();
    assert!(!outside.is_empty(), "the failing calls were recorded");
    for p in &outside {
        assert!(
            p.starts_with("a/b/work/out-replay"),
            "streaming wrote {p:?} outside its directories: {outside:#?}"
        );
    }
}

#[test]
fn plugin_errors_panics_and_logs_are_shown_escaped_never_executed() {
    let (_root, work) = work_dir();
    // An error, under the default policy: the run fails naming it.
    let (ok, out, err) = {
        let text = format!(
            "workers = 1\n[source]\npaths = [\"in.parquet\"]\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"fail\" }}\n[sink]\npath = \"out.parquet\"\n",
            plugin("vandal").display()
        );
        std::fs::write(work.join("f.toml"), text).unwrap();
        let mut c = quiver();
        c.current_dir(&work).args(["run", "f.toml"]);
        run(c)
    };
    assert!(!ok);
    assert_inert("stdout", &out);
    assert_inert("stderr", &err);
    assert!(err.contains(&format!("plugin `{NAME_SHOWN}`")), "{err}");
    for shown in SHOWN {
        assert!(err.contains(shown), "{shown} not shown in:\n{err}");
    }
    // The recording stores the same escaped text.
    let call = recorded_call(&work.join("out-replay"));
    let error = call["error"].as_str().unwrap();
    assert_inert("call.json error", error);
    assert!(error.contains(SHOWN[0]), "{error}");
    assert_inert("call.json name", call["name"].as_str().unwrap());
    assert_eq!(call["version"], "6.6.6\\x1b[31m");

    // A panic, and what the plugin printed before it.
    std::fs::remove_dir_all(work.join("out-replay")).unwrap();
    let (ok, _, err) = run_vandal(&work, "panic", "", &[]);
    assert!(!ok);
    assert_inert("stderr", &err);
    assert!(err.contains("vandal panics\\x1b[2J"), "{err}");

    // Logs on stdout, stderr and the host log, shown at -v.
    let (ok, out, err) = run_vandal(&work, "log", "", &["-v"]);
    assert!(ok, "{err}");
    assert_inert("stdout", &out);
    assert_inert("stderr", &err);
    for what in ["to stdout", "to stderr", "to the host log"] {
        assert!(err.contains(&format!("{what}\\x1b[2J")), "{what}: {err}");
    }
}

/// The one recording's `call.json` under `dir`.
fn recorded_call(dir: &Path) -> serde_json::Value {
    let rec = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .expect("a recording")
        .unwrap()
        .path();
    serde_json::from_str(&std::fs::read_to_string(rec.join("call.json")).unwrap()).unwrap()
}

#[test]
fn a_ten_megabyte_error_is_cut_where_it_is_printed_stored_and_dead_lettered() {
    let (_root, work) = work_dir();
    let (ok, _, err) = run_vandal(&work, "fail-huge", "", &[]);
    assert!(ok, "{err}");
    assert_inert("stderr", &err);
    let call = std::fs::read_dir(work.join("out-replay"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let size = std::fs::metadata(call.join("call.json")).unwrap().len();
    assert!(size < 16 << 10, "call.json holds {size} bytes");
    let dead = read_parquet(
        &work.join("out-dead-letter/00-x_.._.._vandal_x1b_0_owned_x07_x1b_2J.parquet"),
    );
    let mut rows = 0;
    for b in &dead {
        let errors = b.column_by_name("_error").unwrap();
        let errors = arrow::array::AsArray::as_string::<i32>(errors);
        for e in errors.iter().flatten() {
            assert!(
                e.len() < 8 << 10,
                "a dead letter's _error holds {} bytes",
                e.len()
            );
            assert!(e.ends_with("more bytes]"), "{}", &e[..200]);
            rows += 1;
        }
    }
    assert_eq!(rows, 600);

    // Under the default policy the run fails naming the error: cut, not 10 MB of it.
    let text = format!(
        "[source]\npaths = [\"in.parquet\"]\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"fail-huge\" }}\n[sink]\npath = \"failed.parquet\"\n",
        plugin("vandal").display()
    );
    std::fs::write(work.join("f.toml"), text).unwrap();
    let mut c = quiver();
    c.current_dir(&work).args(["run", "f.toml"]);
    let err = run_err(c);
    assert!(err.len() < 16 << 10, "{} bytes of stderr", err.len());
    assert!(
        err.contains(&format!("… [{} more bytes]", (10 << 20) - 4096)),
        "{}",
        &err[err.len().saturating_sub(500)..]
    );
    assert_inert("stderr", &err);
}

#[test]
fn column_names_and_time_zones_with_control_characters_are_refused_and_shown_escaped() {
    let (_root, work) = work_dir();
    for (mode, says) in [
        (
            "hostile-column",
            "the plan names an output column `bad\\x1b[2J",
        ),
        ("hostile-tz", "has the time zone `\\x1b[2J"),
    ] {
        let (ok, _, err) = run_vandal(&work, mode, "", &[]);
        assert!(!ok, "{mode}");
        assert!(err.contains(says), "{mode}: {err}");
        assert_inert(mode, &err);
        assert!(!work.join("out.parquet").exists());
    }
}

#[test]
fn inspect_shows_a_plugins_texts_escaped() {
    let mut c = quiver();
    c.args(["plugin", "inspect"]).arg(plugin("vandal"));
    let (ok, out, err) = run(c);
    assert!(ok, "{err}");
    assert_inert("inspect", &out);
    assert!(
        out.starts_with(&format!("{NAME_SHOWN} 6.6.6\\x1b[31m")),
        "{out}"
    );
    assert!(out.contains("how to misbehave\\x07"), "{out}");
}
