//! What `--overwrite` may replace (only what Quiver wrote, never an input of the same run), and
//! what an interrupted batch run leaves behind (nothing: a signal removes its temporary output,
//! and a later run removes the temporaries of runs that are no longer alive).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A directory with `in.parquet` (500 rows) and `other.parquet` (300 rows).
fn inputs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("in.parquet"), &generate(500, 1));
    write_parquet(&dir.path().join("other.parquet"), &generate(300, 2));
    dir
}

/// `quiver run` in `dir` with a pass-through plugin and the given arguments.
fn run_in(dir: &Path, args: &[&str]) -> Command {
    let mut c = quiver();
    c.current_dir(dir)
        .arg("run")
        .args(["--plugin", "liar", "-p", "mode=honest", "-p", "column=id"])
        .args(args);
    c
}

/// Every file below `dir` (recursively, hidden ones too) with its content, except the state
/// directory of pipeline files (their lock and run history, which records failed runs too).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == STATE_DIR) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.push((p, target.as_os_str().as_encoded_bytes().to_vec()));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn rows_in(path: &Path) -> usize {
    read_parquet(path).iter().map(|b| b.num_rows()).sum()
}

fn assert_no_temporaries(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".quiver-"))
        .collect();
    assert!(
        left.is_empty(),
        "temporaries left in {}: {left:?}",
        dir.display()
    );
}

/// Runs `args` with `--overwrite`, expects a refusal whose message holds every part of `want`,
/// and checks that nothing in `dir` changed.
fn refused(dir: &Path, args: &[&str], want: &[&str]) -> String {
    let before = snapshot(dir);
    let mut all = args.to_vec();
    all.push("--overwrite");
    let err = run_err(run_in(dir, &all));
    for part in want {
        assert!(err.contains(part), "expected {part:?} in:\n{err}");
    }
    take_recordings(dir);
    assert_eq!(
        snapshot(dir),
        before,
        "the refused run changed files:\n{err}"
    );
    err
}

#[test]
fn overwrite_refuses_a_directory_of_unrelated_files() {
    let dir = inputs();
    let out = dir.path().join("out.parquet");
    std::fs::create_dir_all(out.join("sub")).unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    std::fs::write(out.join("sub/more.txt"), "and me").unwrap();
    let err = refused(
        dir.path(),
        &["-i", "in.parquet", "-o", "out.parquet"],
        &["out.parquet", "directory"],
    );
    assert!(!err.contains("already exists; pass --overwrite"), "{err}");
    // Also with a Hive-style output asked for.
    refused(
        dir.path(),
        &[
            "-i",
            "in.parquet",
            "-o",
            "out.parquet",
            "--output-partition-by",
            "region",
        ],
        &["out.parquet", "directory"],
    );
}

#[test]
fn overwrite_refuses_a_file_that_is_not_of_the_output_format() {
    let dir = inputs();
    let cases: [(&str, &[u8]); 5] = [
        ("out.parquet", b"precious notes, not Parquet"),
        ("out.arrow", b"PAR1 not an Arrow IPC file PAR1"),
        ("out.csv", b"id,name\n1,\xff\xfe\x00binary\n"),
        ("out.jsonl", b"this is not JSON\n{\"a\": 1}\n"),
        ("out.jsonl", b"[1, 2, 3]\n"),
    ];
    for (name, content) in cases {
        std::fs::write(dir.path().join(name), content).unwrap();
        refused(dir.path(), &["-i", "in.parquet", "-o", name], &[name]);
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
}

#[test]
fn overwrite_refuses_a_symlink_and_leaves_its_target_alone() {
    let dir = inputs();
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("real.parquet");
    write_parquet(&real, &generate(7, 3));
    std::os::unix::fs::symlink(&real, dir.path().join("out.parquet")).unwrap();
    let before = std::fs::read(&real).unwrap();
    refused(
        dir.path(),
        &["-i", "in.parquet", "-o", "out.parquet"],
        &["out.parquet", "symbolic link"],
    );
    assert_eq!(std::fs::read(&real).unwrap(), before);
}

#[test]
fn overwrite_never_replaces_an_input_of_the_same_run() {
    let dir = inputs();
    // The same path, and the same file through a symlink and through a hard link.
    std::os::unix::fs::symlink("in.parquet", dir.path().join("link.parquet")).unwrap();
    std::fs::hard_link(
        dir.path().join("in.parquet"),
        dir.path().join("hard.parquet"),
    )
    .unwrap();
    for (input, output) in [
        ("in.parquet", "in.parquet"),
        ("link.parquet", "in.parquet"),
        ("in.parquet", "hard.parquet"),
        ("./in.parquet", "link.parquet"),
    ] {
        let err = refused(
            dir.path(),
            &["-i", input, "-i", "other.parquet", "-o", output],
            &[output, "input"],
        );
        assert!(err.contains(input.trim_start_matches("./")), "{err}");
    }
}

#[test]
fn overwrite_never_replaces_a_directory_holding_an_input() {
    let dir = inputs();
    // A Hive output written by Quiver, then read back as the input of a run that would
    // replace it.
    run_ok(run_in(
        dir.path(),
        &[
            "-i",
            "in.parquet",
            "-o",
            "out",
            "--output-partition-by",
            "region",
        ],
    ));
    let part = files_below(&dir.path().join("out"))[0].clone();
    let part = part.strip_prefix(dir.path()).unwrap().to_str().unwrap();
    refused(
        dir.path(),
        &["-i", part, "-o", "out", "--output-partition-by", "region"],
        &["out", part],
    );
    refused(
        dir.path(),
        &[
            "-i",
            "out/*/*.parquet",
            "-o",
            "out",
            "--output-partition-by",
            "region",
        ],
        &["out", "input"],
    );
}

#[test]
fn overwrite_replaces_outputs_quiver_wrote_in_every_format_and_empty_directories() {
    let dir = inputs();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    for out in [
        "out.parquet",
        "out.csv",
        "out.jsonl",
        "out.arrow",
        "empty",
        "hive",
    ] {
        let hive: &[&str] = if out == "hive" {
            &["--output-partition-by", "region"]
        } else {
            &[]
        };
        if out != "empty" {
            let mut args = vec!["-i", "in.parquet", "-o", out];
            args.extend(hive);
            run_ok(run_in(dir.path(), &args));
        }
        let mut args = vec!["-i", "other.parquet", "-o", out, "--overwrite"];
        args.extend(hive);
        let err = run_ok(run_in(dir.path(), &args));
        assert!(err.contains("rows"), "{err}");
        let path = dir.path().join(out);
        match out {
            "out.parquet" | "empty" => {}
            "hive" => {
                let rows: usize = files_below(&path).iter().map(|f| rows_in(f)).sum();
                assert_eq!(rows, 300, "{out}");
            }
            "out.csv" | "out.jsonl" => {
                let text = std::fs::read_to_string(&path).unwrap();
                let header = usize::from(out == "out.csv");
                assert_eq!(text.lines().count(), 300 + header, "{out}");
            }
            _ => {
                let file = std::fs::File::open(&path).unwrap();
                let reader = arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
                let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
                assert_eq!(rows, 300, "{out}");
            }
        }
        if out == "out.parquet" {
            assert_eq!(rows_in(&path), 300);
        }
        assert_no_temporaries(dir.path());
    }
    // An empty directory was replaced by a file.
    assert!(dir.path().join("empty").is_file());
}

#[test]
fn dead_letters_do_not_replace_a_file_quiver_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,v\n");
    for i in 0..200 {
        text += &format!("{i},{}\n", if i == 17 { -1 } else { i });
    }
    std::fs::write(dir.path().join("in.csv"), text).unwrap();
    let toml = dir.path().join("p.toml");
    std::fs::write(
        &toml,
        format!(
            "[source]\npaths = [\"in.csv\"]\n[[plugin]]\npath = \"{}\"\nparams = {{ mode = \"fail-on-negative\", column = \"v\" }}\non-error = \"dead-letter\"\n[sink]\npath = \"out.parquet\"\noverwrite = true\n",
            plugin("liar").display()
        ),
    )
    .unwrap();
    let mut c = quiver();
    c.current_dir(dir.path()).arg("run").arg(&toml);
    run_ok(c);
    take_recordings(dir.path());
    // The dead-letter file the run wrote, whatever its name, is replaced by a foreign file.
    let dead_dir = dir.path().join("out-dead-letter");
    let dead: Vec<PathBuf> = files_below(&dead_dir);
    assert_eq!(dead.len(), 1, "{dead:?}");
    std::fs::write(&dead[0], "someone's notes").unwrap();
    let before = snapshot(dir.path());
    let mut c = quiver();
    c.current_dir(dir.path()).arg("run").arg(&toml);
    let err = run_err(c);
    take_recordings(dir.path());
    let name = dead[0].file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "{err}");
    assert_eq!(snapshot(dir.path()), before, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Interrupted runs

/// Whether process `pid` catches `signal` (its `SigCgt` mask in /proc).
fn catches(pid: u32, signal: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// The temporary outputs (`.<name>.quiver-tmp-…`) in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".quiver-tmp-"))
        .collect()
}

/// Starts a run whose plugin loops (for up to ten minutes per call) and waits, within a
/// minute, until its temporary output exists and it catches `signal`.
fn start_endless_run(dir: &Path, args: &[&str], signal: u32) -> Child {
    let child = quiver()
        .current_dir(dir)
        .args(["run", "-i", "in.parquet", "--plugin", "spin"])
        .args(["--timeout-ms", "600000", "--workers", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while temporaries(dir).is_empty() || !catches(child.id(), signal) {
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status();
            let out = finish(child);
            panic!(
                "within a minute the run did not both write its temporary output ({:?}) and catch signal {signal}: {}",
                temporaries(dir),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn interrupt(signal: u32, name: &str, code: i32, hive: bool) {
    let dir = inputs();
    let mut out_args = vec!["-o", "out"];
    if hive {
        out_args.extend(["--output-partition-by", "region"]);
    } else {
        out_args[1] = "out.parquet";
    }
    let out = dir.path().join(out_args[1]);
    // A previous output, which the interrupted run must leave as it was.
    let mut first = vec!["-i", "other.parquet"];
    first.extend(&out_args);
    run_ok(run_in(dir.path(), &first));
    let before = contents(&out);

    let mut args = out_args.clone();
    args.push("--overwrite");
    let child = start_endless_run(dir.path(), &args, signal);
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = finish(child);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(name), "{err}");
    assert_no_temporaries(dir.path());
    assert_eq!(contents(&out), before);
}

/// A file's path and bytes, or those of every file below a directory.
fn contents(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    if path.is_dir() {
        snapshot(path)
    } else {
        vec![(path.to_path_buf(), std::fs::read(path).unwrap())]
    }
}

#[test]
fn sigint_removes_the_temporary_output_and_exits_130() {
    interrupt(2, "INT", 130, false);
}

#[test]
fn sigterm_removes_the_temporary_directory_and_exits_143() {
    interrupt(15, "TERM", 143, true);
}

/// A pid that surely belongs to no live process: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_run_removes_temporaries_of_dead_runs_and_keeps_those_of_live_ones() {
    let dir = inputs();
    let dead = dead_pid();
    let live = std::process::id();
    let name = |tag: &str, pid: u32, n: u64| format!(".out.parquet.quiver-{tag}-{pid}-{n:016x}");
    let dead_file = name("tmp", dead, 0xabc);
    let dead_dir = name("tmp", dead, 0xdef);
    let live_file = name("tmp", live, 0x123);
    // Not a temporary name of Quiver's: a different output, or a name that does not parse.
    let others = [
        format!(".other.parquet.quiver-tmp-{dead}-{:016x}", 1),
        format!(".out.parquet.quiver-tmp-{dead}-notes"),
        "out.parquet.quiver-tmp-1-0000000000000001".to_string(),
    ];
    std::fs::write(dir.path().join(&dead_file), vec![7u8; 1 << 20]).unwrap();
    std::fs::create_dir_all(dir.path().join(&dead_dir).join("region=eu")).unwrap();
    std::fs::write(
        dir.path().join(&dead_dir).join("region=eu/part-0.parquet"),
        "x",
    )
    .unwrap();
    std::fs::write(dir.path().join(&live_file), "live").unwrap();
    for other in &others {
        std::fs::write(dir.path().join(other), "other").unwrap();
    }
    run_ok(run_in(
        dir.path(),
        &["-i", "in.parquet", "-o", "out.parquet"],
    ));
    assert_eq!(rows_in(&dir.path().join("out.parquet")), 500);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".quiver-"))
        .collect();
    left.sort();
    let mut want: Vec<String> = others.to_vec();
    want.push(live_file.clone());
    want.sort();
    assert_eq!(left, want);
    assert_eq!(std::fs::read(dir.path().join(&live_file)).unwrap(), b"live");
}
