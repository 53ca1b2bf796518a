//! Structured inputs for fuzzing the pipeline-file parser (`quiver::pipeline`), shared by the
//! cargo-fuzz target `pipeline_file` and the property tests in `tests/e2e/properties.rs`.
//!
//! A [`Doc`] is a TOML document drawn from a grammar of the keys and values a pipeline file
//! uses, plus raw noise; [`FileCase`] adds byte-level edits of the rendered text and
//! command-line parameters. [`check_text`] and [`check_cli`] run the parser's entry points and
//! check what they accept against naive models. `arbitrary` is derived only under
//! `cfg(fuzzing)`, which cargo-fuzz sets; the property tests use proptest strategies.

#![allow(unexpected_cfgs, dead_code)]

use quiver::abi::ParamValue;
use quiver::pipeline::{param_value, parse_cli_param, Pipeline};
use quiver::sandbox::Limits;

/// Keys of the pipeline format, and a few parameter names.
pub const KEYS: [&str; 40] = [
    "workers",
    "source",
    "paths",
    "format",
    "batch-size",
    "csv-header",
    "csv-delimiter",
    "cache-mib",
    "partition",
    "scheme",
    "by",
    "count",
    "hash",
    "boundaries",
    "sample-rows",
    "limits",
    "memory-mib",
    "timeout-ms",
    "max-output-rows",
    "max-output-mib",
    "max-output-batches",
    "log-kib",
    "plugin",
    "name",
    "path",
    "params",
    "sink",
    "partition-by",
    "overwrite",
    "where",
    "columns",
    "fuel",
    "stack-kib",
    "instantiate-ms",
    "grants",
    "dirs",
    "env",
    "clock",
    "random",
    "deterministic",
];

/// The keys of a `limits` table, with the ranges the README documents for them (restated
/// here as the model, not taken from the code under test).
pub const LIMIT_KEYS: [(&str, i64, i64); 9] = [
    ("memory-mib", 1, 4096),
    ("timeout-ms", 1, 86_400_000),
    ("max-output-rows", 1, 1 << 32),
    ("max-output-mib", 1, 4096),
    ("max-output-batches", 1, 65_536),
    ("log-kib", 0, 65_536),
    ("fuel", 1, i64::MAX),
    ("stack-kib", 64, 8192),
    ("instantiate-ms", 1, 86_400_000),
];

/// Whether `value` is in the documented range of limit `key` (unknown keys: no).
fn limit_in_range(key: &str, value: i64) -> bool {
    LIMIT_KEYS
        .iter()
        .any(|&(k, min, max)| k == key && (min..=max).contains(&value))
}

/// The pipeline-wide limits as `(key, value)`, for the range model.
fn limit_values(l: &Limits) -> Vec<(&'static str, Option<u64>)> {
    vec![
        ("memory-mib", Some(l.memory_mib)),
        ("timeout-ms", Some(l.timeout_ms)),
        ("max-output-rows", Some(l.max_output_rows)),
        ("max-output-mib", Some(l.max_output_mib)),
        ("max-output-batches", Some(l.max_output_batches)),
        ("log-kib", Some(l.log_kib)),
        ("fuel", l.fuel),
        ("stack-kib", Some(l.stack_kib)),
        ("instantiate-ms", Some(l.instantiate_ms)),
    ]
}

/// Whether every set limit of `l` is in its documented range.
fn limits_in_range(l: &Limits) -> bool {
    limit_values(l)
        .into_iter()
        .all(|(k, v)| v.is_none_or(|v| i64::try_from(v).is_ok_and(|v| limit_in_range(k, v))))
}

/// Strings a pipeline file uses.
pub const STRINGS: [&str; 24] = [
    "parquet",
    "csv",
    "jsonl",
    "ipc",
    "json",
    "hash",
    "range",
    "xxh3",
    "murmur3",
    "fnv1a",
    "md5",
    "in/*.csv",
    "data/",
    "out.parquet",
    "",
    ",",
    ";",
    "\t",
    "ab",
    "x > 1",
    "amount",
    "filter",
    "scale.wasm",
    "/abs/p.wasm",
];

const DATETIMES: [&str; 4] = [
    "1979-05-27T07:32:00Z",
    "1979-05-27T00:32:00.999999-07:00",
    "1979-05-27",
    "07:32:00",
];

/// A key.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Known(u8),
    Raw(String),
}

/// A string value.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Str {
    Known(u8),
    Raw(String),
}

/// A value.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Small(i8),
    Float(f64),
    Bool(bool),
    Str(Str),
    Array(Vec<Value>),
    Table(Vec<(Key, Value)>),
    Datetime(u8),
    /// Inserted as is.
    Raw(String),
}

/// A line.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `[a.b]`
    Table(Vec<Key>),
    /// `[[a.b]]`
    ArrayTable(Vec<Key>),
    /// `a.b = value`
    Pair(Vec<Key>, Value),
    /// Inserted as is.
    Noise(String),
}

/// A document.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub items: Vec<Item>,
}

/// A byte-level edit of the rendered text (positions snap to character boundaries).
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    pub at: u16,
    pub delete: u8,
    pub insert: String,
}

/// A `--param` argument.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub enum Cli {
    /// `name=value`
    Pair(Key, Value),
    Raw(String),
}

/// One run of the parser's entry points.
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq)]
pub struct FileCase {
    pub doc: Doc,
    pub edits: Vec<Edit>,
    pub cli: Vec<Cli>,
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key, bare when it can be.
pub fn render_key(k: &Key) -> String {
    let s = match k {
        Key::Known(i) => KEYS[*i as usize % KEYS.len()],
        Key::Raw(s) => s.as_str(),
    };
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        s.to_string()
    } else {
        quote(s)
    }
}

fn render_path(keys: &[Key]) -> String {
    keys.iter().map(render_key).collect::<Vec<_>>().join(".")
}

/// A float as TOML writes it.
pub fn render_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        // `{:?}` always has a `.` or an exponent, as TOML wants.
        format!("{f:?}")
    }
}

/// A value.
pub fn render_value(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Small(i) => i.to_string(),
        Value::Float(f) => render_float(*f),
        Value::Bool(b) => b.to_string(),
        Value::Str(Str::Known(i)) => quote(STRINGS[*i as usize % STRINGS.len()]),
        Value::Str(Str::Raw(s)) => quote(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(render_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{} = {}", render_key(k), render_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Datetime(i) => DATETIMES[*i as usize % DATETIMES.len()].into(),
        Value::Raw(s) => s.clone(),
    }
}

/// A document.
pub fn render(doc: &Doc) -> String {
    let mut out = String::new();
    for item in &doc.items {
        match item {
            Item::Table(k) => out.push_str(&format!("[{}]", render_path(k))),
            Item::ArrayTable(k) => out.push_str(&format!("[[{}]]", render_path(k))),
            Item::Pair(k, v) => out.push_str(&format!("{} = {}", render_path(k), render_value(v))),
            Item::Noise(s) => out.push_str(s),
        }
        out.push('\n');
    }
    out
}

/// The text with the edits applied.
pub fn apply_edits(text: &str, edits: &[Edit]) -> String {
    let mut s = text.to_string();
    for e in edits {
        let mut at = e.at as usize % (s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + e.delete as usize).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        s.replace_range(at..end, &e.insert);
    }
    s
}

/// A `--param` argument's text.
pub fn render_cli(c: &Cli) -> String {
    match c {
        Cli::Pair(k, v) => format!("{}={}", render_key(k), render_value(v)),
        Cli::Raw(s) => s.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Checking

/// Runs a pipeline file's text through every entry point of the parser, checking what is
/// accepted against naive models. Panics on a violation (or if the parser panics).
pub fn check_text(text: &str) {
    let Ok(p) = Pipeline::from_toml(text) else {
        return;
    };
    let valid = p.validate();
    let _ = p.worker_count();
    let _ = p.source_paths();
    // Per-plugin limits: accepted exactly when every override is a known key with an integer
    // in its documented range and every limit it inherits is in range too, and then they are
    // the pipeline's limits with the overrides.
    let mut limits_ok = true;
    for spec in &p.plugins {
        let _ = spec.label();
        let naive = match spec.limits.as_ref() {
            None => true,
            Some(t) => {
                t.iter()
                    .all(|(k, v)| v.as_integer().is_some_and(|i| limit_in_range(k, i)))
                    && limit_values(&p.limits)
                        .into_iter()
                        .filter(|(k, _)| !t.contains_key(*k))
                        .all(|(k, v)| {
                            v.is_none_or(|v| i64::try_from(v).is_ok_and(|v| limit_in_range(k, v)))
                        })
            }
        };
        let limits = spec.limits(&p.limits);
        assert_eq!(limits.is_ok(), naive, "limits of {spec:?}: {limits:?}");
        if let Ok(l) = limits {
            let want = |key: &str, default: u64| {
                spec.limits
                    .as_ref()
                    .and_then(|t| t.get(key))
                    .map_or(default, |v| v.as_integer().unwrap() as u64)
            };
            let d = p.limits;
            assert_eq!(
                l,
                Limits {
                    memory_mib: want("memory-mib", d.memory_mib),
                    timeout_ms: want("timeout-ms", d.timeout_ms),
                    max_output_rows: want("max-output-rows", d.max_output_rows),
                    max_output_mib: want("max-output-mib", d.max_output_mib),
                    log_kib: want("log-kib", d.log_kib),
                    fuel: spec
                        .limits
                        .as_ref()
                        .and_then(|t| t.get("fuel"))
                        .map(|v| v.as_integer().unwrap() as u64)
                        .or(d.fuel),
                    stack_kib: want("stack-kib", d.stack_kib),
                    instantiate_ms: want("instantiate-ms", d.instantiate_ms),
                    max_output_batches: want("max-output-batches", d.max_output_batches),
                }
            );
        }
        limits_ok &= naive;
        // Parameters: accepted exactly when every value has a contract form, then converted
        // one for one.
        let naive = spec.params.values().all(|v| {
            if let Some(a) = v.as_array() {
                a.iter().all(|x| x.is_str())
            } else if let Some(t) = v.as_table() {
                t.values().all(|x| x.is_str())
            } else {
                !v.is_datetime()
            }
        });
        let params = spec.params();
        assert_eq!(params.is_ok(), naive, "params of {spec:?}: {params:?}");
        if let Ok(params) = params {
            assert_eq!(params.len(), spec.params.len());
            for p in params {
                let v = &spec.params[&p.name];
                match &p.value {
                    ParamValue::Boolean(b) => assert_eq!(v.as_bool(), Some(*b)),
                    ParamValue::Int(i) => assert_eq!(v.as_integer(), Some(*i)),
                    ParamValue::Float(f) => {
                        assert_eq!(v.as_float().map(f64::to_bits), Some(f.to_bits()))
                    }
                    ParamValue::Text(s) => assert_eq!(v.as_str(), Some(s.as_str())),
                    ParamValue::TextList(l) => assert_eq!(v.as_array().unwrap().len(), l.len()),
                    ParamValue::TextMap(m) => assert_eq!(v.as_table().unwrap().len(), m.len()),
                }
            }
        }
    }
    // `validate` accepts exactly the pipelines a naive check accepts.
    let naive = !p.source.paths.is_empty()
        && p.workers != Some(0)
        && p.source.batch_size != Some(0)
        && limits_in_range(&p.limits)
        && p.partition.as_ref().is_none_or(|part| {
            !part.by.is_empty()
                && part.count != Some(0)
                && (part.scheme != quiver::pipeline::Scheme::Range || part.by.len() == 1)
                && (part.scheme != quiver::pipeline::Scheme::Hash || part.boundaries.is_none())
        })
        && p.plugins
            .iter()
            .all(|s| s.name.is_some() != s.path.is_some())
        && limits_ok;
    assert_eq!(valid.is_ok(), naive, "validate: {valid:?}");
    if naive {
        assert!(p.worker_count() >= 1);
    }
}

/// Runs a `--param` argument through `parse_cli_param` (and the value through `param_value`).
pub fn check_cli(arg: &str) {
    match parse_cli_param(arg) {
        Err(_) => assert!(!arg.contains('='), "rejected {arg:?}"),
        Ok((name, value)) => {
            let (n, raw) = arg.split_once('=').expect("accepted an argument without =");
            assert_eq!(name, n.trim());
            if let Some(s) = value.as_str() {
                // Text is the raw value unless the raw value was a TOML string.
                assert!(
                    s == raw || raw.trim_start().starts_with(['"', '\'']),
                    "{arg:?} gave {s:?}"
                );
            }
            let _ = param_value(&name, &value);
        }
    }
}

/// Runs a whole case.
pub fn run(case: &FileCase) {
    let text = render(&case.doc);
    check_text(&text);
    if !case.edits.is_empty() {
        check_text(&apply_edits(&text, &case.edits));
    }
    for c in &case.cli {
        check_cli(&render_cli(c));
    }
}
