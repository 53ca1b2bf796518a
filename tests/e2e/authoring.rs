//! The plugin workflow: `quiver plugin new` templates that build and pass their own
//! `plugin test`, a failing test that shows which rows differ, clear refusals, and the
//! email-normalize example in every language giving the same rows, alone and in one chain.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// Languages whose kits are exercised. Each test names the language it is about, so a
/// toolchain that cannot be installed fails by name.
const LANGS: [&str; 4] = ["rust", "python", "js", "c"];

fn repo() -> PathBuf {
    repo_root()
}

/// `quiver` with the tools cache and a shared cargo target directory for Rust plugins, so
/// toolchains are installed and dependencies compiled once for the whole suite.
fn quiver_tools() -> Command {
    let mut c = quiver();
    c.env("QUIVER_TOOLS_DIR", repo().join("target/authoring-tools"))
        .env("CARGO_TARGET_DIR", repo().join("target/authoring-cargo"));
    c
}

fn plugin_cmd(args: &[&str], dir: &Path) -> (bool, String, String) {
    let mut c = quiver_tools();
    c.current_dir(dir).arg("plugin").args(args);
    // The first call of a language installs its toolchain.
    run_within(c, std::time::Duration::from_secs(1200))
}

#[test]
fn every_template_builds_and_passes_its_own_test() {
    let dir = tempfile::tempdir().unwrap();
    for lang in LANGS {
        let name = format!("my-{lang}-plugin");
        let (ok, out, err) = plugin_cmd(&["new", "--lang", lang, &name], dir.path());
        assert!(ok, "{lang}: {out}{err}");
        let (ok, out, err) = plugin_cmd(&["test", &name], dir.path());
        assert!(ok, "{lang}: template fails its own test:\n{out}\n{err}");
        assert!(
            out.contains("ok: the output equals the expected rows"),
            "{lang}: {out}"
        );
        assert!(out.contains("fuel"), "{lang}: {out}");
        let wasm = dir.path().join(&name).join(format!("build/{name}.wasm"));
        assert!(wasm.is_file(), "{lang}: no {wasm:?}");

        // A wrong expectation is reported row by row, and the test fails.
        let expected = dir.path().join(&name).join("tests/expected.jsonl");
        let text = std::fs::read_to_string(&expected).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[1] = lines[1].replace("-6.25", "-6.5");
        assert_ne!(
            lines.join("\n"),
            text.trim_end(),
            "{lang}: the template's data changed"
        );
        std::fs::write(&expected, lines.join("\n")).unwrap();
        let (ok, out, err) = plugin_cmd(&["test", "--no-build", &name], dir.path());
        assert!(!ok, "{lang}: {out}");
        assert!(
            out.contains("row 1: `x` expected -6.5, got -6.25;"),
            "{lang}: {out}"
        );
        assert!(err.contains("1 row(s) differ"), "{lang}: {err}");
    }
}

#[test]
fn plugin_new_refuses_an_existing_directory_and_a_bad_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let (ok, _, err) = plugin_cmd(&["new", "--lang", "rust", "taken"], dir.path());
    assert!(!ok);
    assert!(err.contains("taken already exists"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("taken")).unwrap().count(),
        0
    );
    let (ok, _, err) = plugin_cmd(&["new", "--lang", "rust", "Bad_Name"], dir.path());
    assert!(!ok);
    assert!(err.contains("`Bad_Name` is not a plugin name"), "{err}");
    let (ok, _, err) = plugin_cmd(&["new", "--lang", "cobol", "x"], dir.path());
    assert!(!ok);
    assert!(err.contains("cobol"), "{err}");
    let (ok, _, err) = plugin_cmd(&["build", "."], dir.path());
    assert!(!ok);
    assert!(err.contains("quiver-plugin.toml"), "{err}");
}

#[test]
fn components_of_another_world_or_contract_version_are_refused() {
    let mut c = quiver();
    c.args(["plugin", "inspect"]).arg(plugin("future"));
    let err = run_err(c);
    assert!(
        err.contains("was built against version 0.2.0 of the Quiver contract (it exports quiver:plugin/transformer@0.2.0), but this host speaks 0.1.0"),
        "{err}"
    );
    let mut c = quiver();
    c.args(["plugin", "inspect"]).arg(plugin("command"));
    let err = run_err(c);
    assert!(
        err.contains("does not export quiver:plugin/transformer@0.1.0"),
        "{err}"
    );
}

/// Builds `examples/email-normalize/<lang>` with `quiver plugin build`; returns the component.
fn build_example(lang: &str) -> PathBuf {
    let dir = repo().join("examples/email-normalize").join(lang);
    let (ok, out, err) = plugin_cmd(&["build", "."], &dir);
    assert!(ok, "{lang}: the example does not build:\n{out}\n{err}");
    dir.join("build/email-normalize.wasm")
}

#[test]
fn the_example_gives_the_expected_rows_in_every_language_alone_and_chained() {
    let example = repo().join("examples/email-normalize");
    let expected = std::fs::read_to_string(example.join("expected.jsonl")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Vec::new();
    for lang in LANGS {
        let wasm = build_example(lang);
        let out = dir.path().join(format!("{lang}.jsonl"));
        let mut c = quiver();
        c.arg("run")
            .arg("-i")
            .arg(example.join("input.jsonl"))
            .arg("--plugin")
            .arg(&wasm)
            .args(["-p", "column=email", "-o"])
            .arg(&out);
        run_ok(c);
        assert_same_rows(lang, &expected, &std::fs::read_to_string(&out).unwrap());
        chain.push((lang, wasm));
    }
    // All of them in one chain, each adding its own flag column: every flag equals the reference.
    let mut c = quiver();
    c.arg("run").arg("-i").arg(example.join("input.jsonl"));
    for (lang, wasm) in &chain {
        c.arg("--plugin").arg(wasm).args([
            "-p",
            "column=email",
            "-p",
            &format!("flag=free_{lang}"),
        ]);
    }
    let out = dir.path().join("chain.jsonl");
    c.arg("-o").arg(&out);
    run_ok(c);
    let got = std::fs::read_to_string(&out).unwrap();
    for (lang, _) in &chain {
        let renamed = got.replace(&format!("\"free_{lang}\""), "\"is_free_mail\"");
        let only_this: String = renamed
            .lines()
            .map(|l| {
                let mut v: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(l).unwrap();
                v.retain(|k, _| !k.starts_with("free_"));
                serde_json::Value::Object(v).to_string() + "\n"
            })
            .collect();
        assert_same_rows(&format!("chain, {lang}"), &expected, &only_this);
    }
}

/// Compares JSON lines as rows of values, nulls as absent.
fn assert_same_rows(what: &str, expected: &str, got: &str) {
    let rows = |t: &str| -> Vec<serde_json::Map<String, serde_json::Value>> {
        t.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut m: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(l).unwrap();
                m.retain(|_, v| !v.is_null());
                m
            })
            .collect()
    };
    assert_eq!(rows(got), rows(expected), "{what}");
}
