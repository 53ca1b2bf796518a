//! The same transforms written in each language kit, side by side: the email-normalize example
//! (`examples/email-normalize/<lang>`, text) and the `plugin new` template (`scale`, float64),
//! each built from source with the same code path as `quiver plugin build`. Reported per
//! language: rows/s on one 1M-row batch, warm instantiation (instantiate + `init`), component
//! size, and rows/s as a ratio of the Rust build's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use quiver::abi::{Param, ParamValue};
use quiver::authoring::{self, Lang};
use quiver::plugin::Host;

use crate::{emails, instance, median_secs, text, Args};

const LANGS: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C];

/// Builds one language's component of a transform; returns its path.
type Build = fn(&Path, Lang) -> Result<PathBuf>;

/// One language's figures for one transform.
struct Measured {
    rows_per_s: f64,
    instantiate_ms: f64,
    size: usize,
}

/// Where the components are built: the test suite's tools and cargo caches, so a machine that
/// ran the tests installs nothing again.
fn use_test_caches(repo: &Path) {
    for (var, dir) in [
        ("QUIVER_TOOLS_DIR", "target/authoring-tools"),
        ("CARGO_TARGET_DIR", "target/authoring-cargo"),
    ] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, repo.join(dir));
        }
    }
}

/// Builds the template of `lang` (created once under `target/bench-langs/`).
fn template_component(repo: &Path, lang: Lang) -> Result<PathBuf> {
    let parent = repo.join("target/bench-langs");
    std::fs::create_dir_all(&parent)?;
    let name = format!("bench-scale-{}", lang.name());
    let dir = parent.join(&name);
    if !dir.exists() {
        authoring::new_plugin(lang, &name, &parent)?;
    }
    Ok(authoring::build(&dir)?)
}

fn example_component(repo: &Path, lang: Lang) -> Result<PathBuf> {
    Ok(authoring::build(
        &repo.join("examples/email-normalize").join(lang.name()),
    )?)
}

fn measure(
    host: &Host,
    wasm: &Path,
    params: &[Param],
    batch: &RecordBatch,
    runs: usize,
) -> Result<Measured> {
    let plugin = host.load(wasm)?;
    let instantiate = median_secs(runs, || {
        instance(&plugin, params.to_vec()).expect("instantiates");
    });
    let mut inst = instance(&plugin, params.to_vec())?;
    let mut failed = None;
    let secs = median_secs(runs, || {
        if let Err(e) = inst.transform(batch) {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(Measured {
        rows_per_s: batch.num_rows() as f64 / secs,
        instantiate_ms: instantiate * 1e3,
        size: plugin.size,
    })
}

/// Runs the language comparison and prints one table per transform.
pub fn bench_languages(args: &Args, host: &Host) -> Result<()> {
    let repo = std::env::current_dir()?;
    use_test_caches(&repo);
    let rows = 1_000_000;
    let email_batch = {
        let e: ArrayRef = Arc::new(emails(0..rows as i64));
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("email", DataType::Utf8, true)])),
            vec![e],
        )?
    };
    let scale_batch = {
        let x: ArrayRef = Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|i| (i % 1000) as f64 * 0.25 - 100.0),
        ));
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)])),
            vec![x],
        )?
    };
    let cases: [(&str, Vec<Param>, &RecordBatch, Build); 2] = [
        (
            "email-normalize (examples/email-normalize, utf8 in, utf8 + bool out)",
            vec![text("column", "email")],
            &email_batch,
            example_component,
        ),
        (
            "scale (the `plugin new` template, float64 in place)",
            vec![
                text("column", "x"),
                Param {
                    name: "factor".into(),
                    value: ParamValue::Float(2.5),
                },
            ],
            &scale_batch,
            template_component,
        ),
    ];
    for (title, params, batch, component) in cases {
        println!(
            "== languages: {title}, {rows} rows, median of {} runs",
            args.runs
        );
        println!(
            "{:<8} {:>12} {:>10} {:>16} {:>12}",
            "", "rows/s", "vs rust", "instantiate ms", "size KiB"
        );
        let mut rust_rate = None;
        for lang in LANGS {
            let built = component(&repo, lang)
                .with_context(|| format!("building the {} component", lang.name()));
            match built.and_then(|wasm| measure(host, &wasm, &params, batch, args.runs)) {
                Ok(m) => {
                    let base = *rust_rate.get_or_insert(m.rows_per_s);
                    println!(
                        "{:<8} {:>10.2} M {:>9.3}× {:>16.2} {:>12.0}",
                        lang.name(),
                        m.rows_per_s / 1e6,
                        m.rows_per_s / base,
                        m.instantiate_ms,
                        m.size as f64 / 1024.0
                    );
                }
                Err(e) => println!("{:<8} unavailable: {e:#}", lang.name()),
            }
        }
    }
    Ok(())
}
