//! The language kits, compiled into the binary: the WIT package, the Rust SDK's sources, the
//! Python, JavaScript and C helper libraries and build scripts, and every language's template.
//!
//! [`unpack`] writes them once per version to `<tools>/kits/<hash>/`, laid out as in the
//! repository (`wit/`, `sdk/<lang>/…`), so build scripts and the Rust SDK's relative paths work
//! unchanged.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{io_err, AuthoringError, Lang};

/// `(path in the repository, contents)`.
type Files = &'static [(&'static str, &'static str)];

macro_rules! files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../", $path)))),*]
    };
}

/// The WIT package and the SDKs.
const KIT: Files = files![
    "wit/quiver.wit",
    "sdk/rust/src/aggregate.rs",
    "sdk/rust/src/bitmap.rs",
    "sdk/rust/src/column.rs",
    "sdk/rust/src/lib.rs",
    "sdk/rust/src/params.rs",
    "sdk/rust/src/plan.rs",
    "sdk/rust/src/quantile.rs",
    "sdk/rust/src/state.rs",
    "sdk/js/build.sh",
    "sdk/js/kit/quiver.js",
    "sdk/python/build.sh",
    "sdk/python/kit/quiver.py",
    "sdk/c/build.sh",
    "sdk/c/kit/quiver.h",
    "sdk/c/kit/quiver.c",
];

/// The Rust SDK's manifest outside the workspace (the workspace's inherits its versions).
const RUST_SDK_MANIFEST: &str = r#"[package]
name = "quiver-sdk"
version = "0.1.0"
edition = "2021"
description = "Write Quiver transform plugins in Rust."

[dependencies]
wit-bindgen = { version = "0.63", default-features = false, features = ["macros", "realloc", "std", "macro-string"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
postcard = { version = "1", default-features = false, features = ["alloc"] }
"#;

const RUST_TEMPLATE: Files = files![
    "sdk/rust/template/Cargo.toml",
    "sdk/rust/template/quiver-plugin.toml",
    "sdk/rust/template/src/lib.rs",
    "sdk/rust/template/tests/input.jsonl",
    "sdk/rust/template/tests/expected.jsonl",
];

const JS_TEMPLATE: Files = files![
    "sdk/js/template/quiver-plugin.toml",
    "sdk/js/template/plugin.js",
    "sdk/js/template/tests/input.jsonl",
    "sdk/js/template/tests/expected.jsonl",
];

const PYTHON_TEMPLATE: Files = files![
    "sdk/python/template/quiver-plugin.toml",
    "sdk/python/template/app.py",
    "sdk/python/template/tests/input.jsonl",
    "sdk/python/template/tests/expected.jsonl",
];

const C_TEMPLATE: Files = files![
    "sdk/c/template/quiver-plugin.toml",
    "sdk/c/template/plugin.c",
    "sdk/c/template/tests/input.jsonl",
    "sdk/c/template/tests/expected.jsonl",
];

/// The template of `lang`: `(path within the plugin directory, contents)`, with `{{name}}`
/// (and, for Rust, `{{sdk}}`) still to be replaced.
pub fn template(lang: Lang) -> Vec<(&'static str, &'static str)> {
    let (files, prefix): (Files, &str) = match lang {
        Lang::Rust => (RUST_TEMPLATE, "sdk/rust/template/"),
        Lang::Js => (JS_TEMPLATE, "sdk/js/template/"),
        Lang::Python => (PYTHON_TEMPLATE, "sdk/python/template/"),
        Lang::C => (C_TEMPLATE, "sdk/c/template/"),
    };
    files
        .iter()
        .map(|(p, t)| (p.strip_prefix(prefix).unwrap_or(p), *t))
        .collect()
}

fn all() -> impl Iterator<Item = (&'static str, &'static str)> {
    KIT.iter()
        .copied()
        .chain(std::iter::once(("sdk/rust/Cargo.toml", RUST_SDK_MANIFEST)))
}

/// Writes the kits under `<tools>/kits/<hash of their contents>/` unless already there;
/// returns that directory.
pub fn unpack(tools: &Path) -> Result<PathBuf, AuthoringError> {
    let mut h = Sha256::new();
    for (p, t) in all() {
        h.update(p.as_bytes());
        h.update([0]);
        h.update(t.as_bytes());
        h.update([0]);
    }
    let hash: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let kits = tools.join("kits");
    let dir = kits.join(hash);
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&kits).map_err(|e| io_err(&kits, e))?;
    let tmp = tempfile::tempdir_in(&kits).map_err(|e| io_err(&kits, e))?;
    for (path, text) in all() {
        let file = tmp.path().join(path);
        if let Some(p) = file.parent() {
            std::fs::create_dir_all(p).map_err(|e| io_err(p, e))?;
        }
        std::fs::write(&file, text).map_err(|e| io_err(&file, e))?;
        if path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755));
        }
    }
    std::fs::write(tmp.path().join(".complete"), "").map_err(|e| io_err(tmp.path(), e))?;
    let made = tmp.keep();
    // Another process may have unpacked the same kits meanwhile: theirs is as good as ours.
    if std::fs::rename(&made, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&made);
        if !dir.join(".complete").is_file() {
            return Err(io_err(&dir, "cannot unpack the plugin kits here"));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source file added to the Rust SDK must be embedded too, or kits fail to build.
    #[test]
    fn every_rust_sdk_source_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/rust/src");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let path = format!("sdk/rust/src/{name}");
            assert!(KIT.iter().any(|(p, _)| *p == path), "{path} is not in KIT");
        }
    }

    #[test]
    fn the_rust_sdk_manifest_pins_what_the_workspace_pins() {
        let root: toml::Table =
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
                .parse()
                .unwrap();
        let sdk: toml::Table = RUST_SDK_MANIFEST.parse().unwrap();
        let deps = &root["workspace"]["dependencies"];
        for (name, spec) in sdk["dependencies"].as_table().unwrap() {
            assert_eq!(&deps[name.as_str()], spec, "{name}");
        }
    }

    #[test]
    fn unpacking_is_idempotent_and_lays_out_the_repository() {
        let tools = tempfile::tempdir().unwrap();
        let a = unpack(tools.path()).unwrap();
        let b = unpack(tools.path()).unwrap();
        assert_eq!(a, b);
        assert!(a.join("wit/quiver.wit").is_file());
        assert!(a.join("sdk/rust/src/lib.rs").is_file());
        assert!(a.join("sdk/rust/Cargo.toml").is_file());
        assert!(a.join("sdk/js/build.sh").is_file());
        assert!(a.join("sdk/python/build.sh").is_file());
        assert!(a.join("sdk/c/kit/quiver.h").is_file());
        for lang in [Lang::Rust, Lang::Js, Lang::Python, Lang::C] {
            assert!(
                template(lang)
                    .iter()
                    .any(|(p, _)| *p == "quiver-plugin.toml"),
                "{lang:?}"
            );
        }
    }
}
