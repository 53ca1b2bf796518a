//! Bad input: each case fails with a clear message naming what is wrong and where, exits
//! non-zero, and leaves no output (nor temporary file) behind.

use std::path::PathBuf;

use crate::support::*;

/// A small valid input file and an output path in a fresh directory.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(&dir.path().join("in.parquet"), &generate(500, 9));
        Case { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// `quiver run -i <input> <plugin args…> -o out.parquet`, expecting failure; checks that
    /// only the input files remain (besides recordings of failing plugin calls).
    fn fails(&self, input: &str, plugin_args: &[&str]) -> String {
        let mut c = quiver();
        c.current_dir(self.dir.path())
            .args(["run", "-i", input])
            .args(plugin_args)
            .args(["-o", "out.parquet"]);
        let err = run_err(c);
        take_recordings(self.dir.path());
        let mut left: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("in") && !n.ends_with(".wasm"))
            .collect();
        left.sort();
        assert!(left.is_empty(), "left behind: {left:?}\n{err}");
        err
    }
}

#[test]
fn malformed_csv_row_names_file_and_line() {
    let case = Case::new();
    std::fs::write(case.path("in.csv"), "a,b,c\n1,2,3\n4,5,6\n7,8\n9,10,11\n").unwrap();
    let err = case.fails("in.csv", &["--plugin", "scale", "-p", "columns=a"]);
    contains_all(&err, &["in.csv", "line 4"]);
}

#[test]
fn truncated_parquet_names_the_file() {
    let case = Case::new();
    let bytes = std::fs::read(case.path("in.parquet")).unwrap();
    std::fs::write(case.path("in-cut.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let err = case.fails(
        "in-cut.parquet",
        &["--plugin", "scale", "-p", "columns=amount"],
    );
    contains_all(&err, &["in-cut.parquet", "Parquet"]);
}

#[test]
fn missing_column_names_column_and_plugin() {
    let case = Case::new();
    let err = case.fails(
        "in.parquet",
        &["--plugin", "filter", "-p", "where=nosuch > 1"],
    );
    contains_all(&err, &["filter", "nosuch", "amount"]);
    let err = case.fails("in.parquet", &["--plugin", "scale", "-p", "columns=nosuch"]);
    contains_all(&err, &["scale", "nosuch"]);
}

#[test]
fn wrong_column_type_names_column_and_type() {
    let case = Case::new();
    let err = case.fails("in.parquet", &["--plugin", "scale", "-p", "columns=email"]);
    contains_all(&err, &["scale", "email", "Utf8", "numeric"]);
    let err = case.fails(
        "in.parquet",
        &["--plugin", "filter", "-p", "where=email > 3"],
    );
    contains_all(&err, &["filter", "email", "integer 3"]);
}

#[test]
fn unknown_and_ill_typed_parameters() {
    let case = Case::new();
    let err = case.fails(
        "in.parquet",
        &["--plugin", "scale", "-p", "columns=k", "-p", "bogus=1"],
    );
    contains_all(&err, &["scale", "bogus", "unknown", "columns, a, b"]);
    let err = case.fails(
        "in.parquet",
        &["--plugin", "scale", "-p", "columns=k", "-p", "b=hello"],
    );
    contains_all(&err, &["scale", "`b`", "must be a number", "\"hello\""]);
    let err = case.fails(
        "in.parquet",
        &["--plugin", "scale", "-p", "columns=k", "-p", "b=0"],
    );
    contains_all(&err, &["scale", "`b`", "non-zero"]);
    let err = case.fails("in.parquet", &["--plugin", "scale"]);
    contains_all(&err, &["scale", "`columns` is required"]);
    let err = case.fails("in.parquet", &["--plugin", "filter", "-p", "where=k >"]);
    contains_all(&err, &["filter", "`where`", "at the end"]);
}

#[test]
fn files_that_are_not_plugins() {
    let case = Case::new();
    std::fs::write(case.path("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let err = case.fails("in.parquet", &["--plugin", "./core.wasm"]);
    contains_all(
        &err,
        &["core.wasm", "core WebAssembly module, not a component"],
    );
    std::fs::write(case.path("junk.wasm"), b"hello").unwrap();
    let err = case.fails("in.parquet", &["--plugin", "./junk.wasm"]);
    contains_all(&err, &["junk.wasm", "not a WebAssembly component"]);
    let command = plugin("command");
    let err = case.fails("in.parquet", &["--plugin", command.to_str().unwrap()]);
    contains_all(
        &err,
        &[
            "command.wasm",
            "does not export quiver:plugin/transformer@0.1.0",
            "wasi:cli/run",
        ],
    );
    let err = case.fails("in.parquet", &["--plugin", "no-such-plugin"]);
    contains_all(&err, &["no-such-plugin", "not found"]);
}

fn liar(case: &Case, mode: &str, column: &str) -> String {
    let mode = format!("mode={mode}");
    let column = format!("column={column}");
    case.fails(
        "in.parquet",
        &["--plugin", "liar", "-p", &mode, "-p", &column],
    )
}

#[test]
fn output_contradicting_the_plan_is_refused() {
    let case = Case::new();
    let where_ = ["liar", "partition", "batch 0", "in.parquet", "rows 0..500"];
    contains_all(
        &liar(&case, "wrong-type", "amount"),
        &["returned as Int64 but the plan declared Float64"],
    );
    contains_all(
        &liar(&case, "short", "amount"),
        &["499 values but the batch has 500 rows"],
    );
    contains_all(
        &liar(&case, "short", "email"),
        &["500 offsets for 500 rows"],
    );
    contains_all(&liar(&case, "bad-offsets", "email"), &["email", "offset"]);
    contains_all(
        &liar(&case, "bad-utf8", "email"),
        &["email", "Invalid UTF8"],
    );
    contains_all(
        &liar(&case, "nulls-in-non-nullable", "k"),
        &["has nulls but the plan declared it not nullable"],
    );
    contains_all(
        &liar(&case, "extra-column", "k"),
        &["`extra` was returned but the plan does not compute it"],
    );
    contains_all(&liar(&case, "wrong-rows", "k"), &["505 rows", "500 rows"]);
    let err = liar(&case, "error", "k");
    contains_all(&err, &["refusing this batch", "row 3"]);
    contains_all(&err, &where_);
    contains_all(&liar(&case, "passthrough-missing", "k"), &["ghost"]);
}

#[test]
fn existing_output_is_not_replaced_without_overwrite() {
    let case = Case::new();
    // A Parquet file (what --overwrite may replace; see bad_flags_and_signals for the rest).
    write_parquet(&case.path("out.parquet"), &generate(3, 5));
    let precious = std::fs::read(case.path("out.parquet")).unwrap();
    let scale = |extra: &[&str]| {
        let mut c = quiver();
        c.current_dir(case.dir.path())
            .args([
                "run",
                "-i",
                "in.parquet",
                "--plugin",
                "scale",
                "-p",
                "columns=k",
            ])
            .args(["-o", "out.parquet"])
            .args(extra);
        c
    };
    let err = run_err(scale(&[]));
    contains_all(&err, &["out.parquet", "already exists", "--overwrite"]);
    assert_eq!(std::fs::read(case.path("out.parquet")).unwrap(), precious);
    run_ok(scale(&["--overwrite"]));
    let rows: usize = read_parquet(&case.path("out.parquet"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 500);
}

#[test]
fn a_pinned_plugin_with_another_hash_is_refused() {
    let case = Case::new();
    let scale = plugin("scale");
    let actual = {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(&scale).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let pipeline = |pin: &str| {
        format!(
            "[source]\npaths = [\"in.parquet\"]\n[[plugin]]\npath = \"{}\"\nsha256 = \"{pin}\"\nparams = {{ columns = [\"k\"] }}\n[sink]\npath = \"out.parquet\"\n",
            scale.display()
        )
    };
    std::fs::write(case.path("p.toml"), pipeline(&"0".repeat(64))).unwrap();
    let mut c = quiver();
    c.current_dir(case.dir.path()).args(["run", "p.toml"]);
    let err = run_err(c);
    contains_all(&err, &["scale.wasm", &actual, "pins 0000", "refusing"]);
    assert!(!case.path("out.parquet").exists());
    std::fs::write(case.path("p.toml"), pipeline(&actual.to_uppercase())).unwrap();
    let mut c = quiver();
    c.current_dir(case.dir.path()).args(["run", "p.toml"]);
    run_ok(c);
}

// ---------------------------------------------------------------------------------------------
// Inputs the readers must not accept silently

/// The plugin arguments of a pass-through run over a CSV column `a`.
const PASS_A: [&str; 6] = ["--plugin", "liar", "-p", "mode=honest", "-p", "column=a"];

/// Runs `quiver run -i <inputs…> -o out.parquet` through a pass-through plugin in `case`'s
/// directory; returns whether it succeeded and stderr.
fn run_inputs(case: &Case, inputs: &[&str], column: &str) -> (bool, String) {
    let mut c = quiver();
    c.current_dir(case.dir.path()).arg("run");
    for input in inputs {
        c.args(["-i", input]);
    }
    c.args(["--plugin", "liar", "-p", "mode=honest"])
        .arg("-p")
        .arg(format!("column={column}"))
        .args(["-o", "out.parquet"]);
    let (ok, _, err) = run(c);
    (ok, err)
}

fn output_rows(case: &Case) -> usize {
    read_parquet(&case.path("out.parquet"))
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

#[test]
fn unterminated_quote_names_the_file_and_the_line_where_it_opened() {
    let case = Case::new();
    std::fs::write(case.path("in.csv"), "a,b\n1,\"hello\n2,world\n3,x\n").unwrap();
    let err = case.fails("in.csv", &PASS_A);
    contains_all(
        &err,
        &["in.csv: line 2: a quoted field opened here is never closed"],
    );
}

#[test]
fn unterminated_quote_past_the_rows_read_for_the_schema_is_found() {
    let case = Case::new();
    // Valid multi-line and escaped quotes first, then a quote that never closes on line
    // `opened`, far past the 1000 rows schema inference reads.
    let mut text = String::from("a,b\n1,\"two\nlines\"\n2,\"say \"\"hi\"\"\"\n3,a\"b\n");
    let mut line = text.lines().count();
    for i in 0..3000 {
        text += &format!("{i},v{i}\n");
        line += 1;
    }
    text += "7,\"never closed\n8,y\n";
    let opened = line + 1;
    std::fs::write(case.path("in.csv"), text).unwrap();
    let err = case.fails("in.csv", &PASS_A);
    contains_all(
        &err,
        &[&format!(
            "in.csv: line {opened}: a quoted field opened here is never closed"
        )],
    );
    // A quote opening the first field of a line is found too, and in a second file.
    std::fs::write(case.path("in-a.csv"), "a,b\n1,x\n").unwrap();
    std::fs::write(case.path("in-b.csv"), "a,b\n1,x\n\"2,y\n3,z\n").unwrap();
    let (ok, err) = run_inputs(&case, &["in-a.csv", "in-b.csv"], "a");
    assert!(!ok, "{err}");
    contains_all(&err, &["in-b.csv: line 3: a quoted field opened here"]);
    assert!(!case.path("out.parquet").exists());
}

#[test]
fn quoted_fields_over_several_lines_and_escaped_quotes_still_read() {
    let case = Case::new();
    let values = ["two\nlines", "say \"hi\"", "a\"b", "", "x,y", "\r\nend"];
    let mut text = String::from("a,b\n");
    for (i, v) in values.iter().enumerate() {
        // A quote inside an unquoted field is a literal character.
        if *v == "a\"b" {
            text += &format!("{i},{v}\n");
        } else {
            text += &format!("{i},\"{}\"\n", v.replace('"', "\"\""));
        }
    }
    std::fs::write(case.path("in.csv"), text).unwrap();
    let (ok, err) = run_inputs(&case, &["in.csv"], "a");
    assert!(ok, "{err}");
    let got: Vec<Option<String>> = read_parquet(&case.path("out.parquet"))
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name("b").unwrap();
            let col = col
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            col.iter()
                .map(|v| v.map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    let want: Vec<Option<String>> = values
        .iter()
        .map(|v| (!v.is_empty()).then(|| v.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn empty_csv_and_jsonl_files_are_refused_naming_the_file() {
    let case = Case::new();
    std::fs::write(case.path("in.csv"), "").unwrap();
    let err = case.fails("in.csv", &PASS_A);
    contains_all(&err, &["in.csv: has no header"]);
    std::fs::write(case.path("in.jsonl"), "\n\n").unwrap();
    let err = case.fails("in.jsonl", &PASS_A);
    contains_all(&err, &["in.jsonl: has no rows to infer a schema from"]);
}

#[test]
fn an_empty_file_beside_one_that_gives_the_schema_contributes_no_rows() {
    let case = Case::new();
    std::fs::create_dir(case.path("in-dir")).unwrap();
    let mut text = String::from("a,b\n");
    for i in 0..40 {
        text += &format!("{i},v{i}\n");
    }
    std::fs::write(case.path("in-dir/1.csv"), &text).unwrap();
    std::fs::write(case.path("in-dir/0.csv"), "").unwrap();
    std::fs::write(case.path("in-dir/2.csv"), "a,b\n").unwrap();
    let (ok, err) = run_inputs(&case, &["in-dir"], "a");
    assert!(ok, "{err}");
    assert_eq!(output_rows(&case), 40);
}

#[test]
fn two_paths_to_one_file_are_refused_naming_both() {
    let case = Case::new();
    let mut text = String::from("a,b\n");
    for i in 0..3000 {
        text += &format!("{i},v{i}\n");
    }
    std::fs::write(case.path("in.csv"), &text).unwrap();
    std::os::unix::fs::symlink("in.csv", case.path("in-link.csv")).unwrap();
    let (ok, err) = run_inputs(&case, &["in.csv", "in-link.csv"], "a");
    assert!(!ok, "{err}");
    contains_all(&err, &["in.csv", "in-link.csv", "same file"]);
    assert!(!case.path("out.parquet").exists());

    // A hard link in a directory given as input.
    std::fs::create_dir(case.path("in-dir")).unwrap();
    std::fs::write(case.path("in-dir/a.csv"), &text).unwrap();
    std::fs::hard_link(case.path("in-dir/a.csv"), case.path("in-dir/b.csv")).unwrap();
    let (ok, err) = run_inputs(&case, &["in-dir"], "a");
    assert!(!ok, "{err}");
    contains_all(&err, &["a.csv", "b.csv", "same file"]);
    assert!(!case.path("out.parquet").exists());
}

#[test]
fn the_same_path_reached_twice_is_read_once() {
    let case = Case::new();
    std::fs::create_dir(case.path("in-dir")).unwrap();
    let mut rows = 0;
    for (name, n) in [("a.csv", 30), ("b.csv", 12)] {
        let mut text = String::from("a,b\n");
        for i in 0..n {
            text += &format!("{i},v{i}\n");
        }
        std::fs::write(case.path("in-dir").join(name), text).unwrap();
        rows += n;
    }
    let (ok, err) = run_inputs(
        &case,
        &["in-dir/*.csv", "in-dir/a.csv", "./in-dir/b.csv", "in-dir"],
        "a",
    );
    assert!(ok, "{err}");
    assert_eq!(output_rows(&case), rows);
}
