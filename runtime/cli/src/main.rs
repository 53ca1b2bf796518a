//! The `quiver` command: argument parsing and printing only; the work is in the library.

mod allocator;
mod cluster;
mod local_cluster;
mod schedule;
mod table;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use quiver::authoring::{self, Lang};
use quiver::batch::{self, RunOptions};
use quiver::capability::{self, Need};
use quiver::pipeline::{self, PartitionSpec, Pipeline, PluginSpec, Scheme, SinkSpec, SourceSpec};
use quiver::plugin::Host;
use quiver::sandbox::EngineOptions;
use quiver::stream;
use quiver::untrusted;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Quiver runs sandboxed WebAssembly transform plugins over partitioned Arrow data.
#[derive(Parser)]
#[command(name = "quiver", version, propagate_version = true)]
struct Cli {
    /// More log output (-v: plugin output and info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a pipeline over files: from a pipeline file, from flags, or both (flags win).
    ///
    /// Examples:
    ///   quiver run pipeline.toml
    ///   quiver run -i 'data/*.csv' --plugin filter -p 'where=amount > 100' \
    ///       --plugin scale -p columns=amount -p a=3 -p b=2 --partition-by user -o out.parquet
    ///
    /// The output appears only if the whole run succeeds (it is written under a temporary name
    /// and renamed at the end). A report of rows, time per plugin, bytes crossing the sandbox
    /// boundary and partition skew is printed at the end.
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Fit the pipeline's aggregates (scalers, encoders, …) on its input and save the fitted
    /// parameters as JSON, to apply them later with `quiver run --fitted` (train/serve parity).
    ///
    /// Example:
    ///   quiver fit train.toml -o fitted.json
    ///   quiver run serve.toml --fitted fitted.json
    #[command(verbatim_doc_comment)]
    Fit(FitArgs),
    /// Run batch pipelines at the times their [schedule] tables say, until SIGINT or SIGTERM.
    ///
    /// Examples:
    ///   quiver schedule hourly.toml daily.toml
    ///
    /// with, in hourly.toml:
    ///   [schedule]
    ///   every = "1h"            # or cron = "5 * * * *" (5 fields, UTC); "every" fires on
    ///                           # multiples of the period since 1970-01-01 UTC
    ///   retries = 3             # a failed run is tried again up to 3 times,
    ///   backoff = "30s"         # after 30s, 1m, 2m (doubling, default 1s)
    ///   max-backoff = "10m"     # up to this (default 5m)
    ///   missed = "run-once"     # runs missed while no scheduler ran: run once at
    ///                           # start (default), or "skip"
    ///
    /// A run is the same as `quiver run PIPELINE`; one line is printed as each starts and
    /// ends. One pipeline never runs twice at once: a fire time that comes while its run is
    /// still going, or while another process runs it (the pipeline's lock), is skipped. Every
    /// attempt is recorded in the pipeline's history (see quiver runs). The state lives next
    /// to the pipeline file, in .quiver/<file stem>/. The first SIGINT or SIGTERM starts no
    /// new run and waits for running ones to finish; a second one exits at once.
    #[command(verbatim_doc_comment)]
    Schedule(schedule::ScheduleArgs),
    /// Show a pipeline's run history: every attempt of every run, scheduled or by hand.
    ///
    /// Examples:
    ///   quiver runs hourly.toml               # the last 20, as a table
    ///   quiver runs hourly.toml --limit 100
    ///   quiver runs hourly.toml --json        # all, as JSON: run, pipeline, trigger,
    ///                                         # scheduled_for, attempt, start, end, status,
    ///                                         # rows_in, rows_out, inputs, inputs_skipped, error
    ///
    /// The history is .quiver/<file stem>/runs.jsonl next to the pipeline file, one JSON
    /// object per line.
    #[command(verbatim_doc_comment)]
    Runs(schedule::RunsArgs),
    /// Run a recorded failing plugin call again (the recordings are made by `quiver run` in
    /// `<output>-replay/`), and show its error, time and memory.
    Replay {
        /// A recording directory (holding call.json and input.arrow).
        dir: PathBuf,
    },
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run one node of a cluster: it replicates the cluster's membership, jobs, assignments,
    /// checkpoints and events with the other nodes (Raft), takes events at its HTTP ingest
    /// (`POST http://API/ingest/<job>`), and runs the partitions assigned to it; when the
    /// leader dies, the others elect a new one (in under a second by default).
    ///
    /// Examples:
    ///   quiver node --id 1 --data-dir n1 --listen 127.0.0.1:7401
    ///   quiver node --id 2 --data-dir n2 --listen 127.0.0.1:7402 --join 127.0.0.1:7401
    ///
    /// Stopped by SIGINT or SIGTERM; restarted on the same data directory, it rejoins and
    /// catches up.
    #[command(verbatim_doc_comment)]
    Node(cluster::NodeArgs),
    /// Start a local cluster, or reach one through any of its nodes (`--addr`) or its
    /// directory (`--dir`): status, submit, stop, add-node, remove-node.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Maintain a Delta table: its history (which pipeline run made each version), compaction
    /// of small files, and vacuum of files no version uses any more.
    #[command(subcommand)]
    Table(table::TableCommand),
}

#[derive(Args)]
struct FitArgs {
    /// Pipeline file (TOML); its [sink] is not written.
    pipeline: PathBuf,
    /// Where to write the fitted parameters (JSON).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Input files, globs or directories, replacing the pipeline's (repeatable).
    #[arg(short, long = "input", value_name = "PATH")]
    inputs: Vec<String>,
    /// Worker threads (default: one per core).
    #[arg(short, long)]
    workers: Option<usize>,
    /// Directory for compiled plugins (default: $QUIVER_CACHE_DIR or ~/.cache/quiver).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// Pipeline file (TOML). Optional when --input, --output and --plugin are given.
    pipeline: Option<PathBuf>,
    /// Input files, globs or directories (repeatable).
    #[arg(short, long = "input", value_name = "PATH")]
    inputs: Vec<String>,
    /// Input format when the extension does not tell: parquet, csv, jsonl, ipc.
    #[arg(long)]
    format: Option<quiver::io::Format>,
    /// A plugin to append to the chain: a name on the plugin search path or a .wasm path.
    #[arg(long = "plugin", value_name = "NAME|PATH")]
    plugins: Vec<String>,
    /// A parameter name=value for the --plugin before it; values are TOML (3, 2.5, true,
    /// ["a","b"]) or else plain text.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Hash-partition rows by these key columns (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "COLUMN")]
    partition_by: Vec<String>,
    /// Number of partitions (default: workers).
    #[arg(long)]
    partitions: Option<usize>,
    /// Hash function: xxh3 (default), murmur3, fnv1a, md5.
    #[arg(long)]
    hash: Option<quiver::partition::HashAlgorithm>,
    /// Range-partition on the (single) --partition-by column, with boundaries from a sample.
    #[arg(long)]
    range: bool,
    /// Output file, or directory with --output-partition-by.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Output format: parquet, csv, jsonl, ipc (default: from the extension, else parquet).
    #[arg(long)]
    output_format: Option<quiver::io::Format>,
    /// Write a Hive-style directory partitioned by these columns.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN")]
    output_partition_by: Vec<String>,
    /// Replace an existing output, if Quiver wrote it (a file of the output's format, or a
    /// directory with Quiver's marker) and it is not an input of the run.
    #[arg(long)]
    overwrite: bool,
    /// Worker threads (default: one per core).
    #[arg(short, long)]
    workers: Option<usize>,
    /// Memory limit per plugin instance, MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Time limit per plugin call, ms.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Fuel (about one unit per Wasm instruction) per plugin call; meters every plugin
    /// deterministically. Default: not metered.
    #[arg(long)]
    fuel: Option<u64>,
    /// Make the clocks and randomness granted to plugins deterministic (a fixed start time,
    /// a fixed byte sequence), so that runs repeat exactly.
    #[arg(long)]
    deterministic: bool,
    /// Apply fitted parameters from this file (made by `quiver fit`) instead of fitting on
    /// this input.
    #[arg(long, value_name = "FILE")]
    fitted: Option<PathBuf>,
    /// Streaming mode: follow the input (one JSON-lines file) as it grows, in micro-batches,
    /// with checkpoints that make the output exactly-once; runs until SIGINT or SIGTERM, which
    /// take a final checkpoint. Settings in the pipeline's [stream] table. A restart resumes
    /// from the last checkpoint.
    #[arg(long)]
    stream: bool,
    /// With --stream: start from the beginning of the input, forgetting the job's checkpoints.
    #[arg(long, requires = "stream", conflicts_with = "from_offset")]
    from_beginning: bool,
    /// With --stream: start from this byte offset of the input (the start of a line),
    /// forgetting the job's checkpoints.
    #[arg(long, requires = "stream", value_name = "BYTES")]
    from_offset: Option<u64>,
    /// With --stream: stop at the end of the input, with a final checkpoint, instead of
    /// waiting for more (a catch-up run).
    #[arg(long, requires = "stream")]
    stop_at_end: bool,
    /// With --stream: serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9898;
    /// port 0 picks a free one and prints it).
    #[arg(long, requires = "stream", value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Also write the report as JSON to this file (for a pipeline with stages: an array, one
    /// report per stage run).
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    /// Read all the input again, even in an incremental pipeline ([source] incremental =
    /// true), and overwrite the table sink with the result.
    #[arg(long, conflicts_with = "stream")]
    full_refresh: bool,
    /// For a pipeline with [[stage]]s: start at this stage, taking the ones before it as
    /// done (to finish a job whose stage failed; the error names the command).
    #[arg(long, value_name = "NAME", conflicts_with = "stream")]
    from_stage: Option<String>,
    /// Directory for compiled plugins (default: $QUIVER_CACHE_DIR or ~/.cache/quiver).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    lock: schedule::LockArgs,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show what a plugin says about itself (describe) and what it imports.
    Inspect {
        /// A .wasm component, or a plugin name on the search path.
        plugin: String,
    },
    /// Start a plugin from a template that builds as is and passes its own test.
    ///
    ///   quiver plugin new --lang python my-plugin && quiver plugin test my-plugin
    #[command(verbatim_doc_comment)]
    New {
        /// The language: rust, python, js or c.
        #[arg(long, value_enum)]
        lang: Lang,
        /// The plugin's name (lowercase letters, digits, dashes); also its directory.
        name: String,
        /// Where to create the directory (default: the current one).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build a plugin directory (with a quiver-plugin.toml) into build/<name>.wasm, installing
    /// the language's tools into the tools cache ($QUIVER_TOOLS_DIR, default
    /// ~/.cache/quiver/tools) the first time.
    Build {
        /// The plugin directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Build a plugin, run it on tests/input.* with the [test] params of its
    /// quiver-plugin.toml, and compare the output with tests/expected.jsonl; prints a diff of
    /// mismatched rows and the time, memory and fuel of the calls. Fails if they differ.
    Test {
        /// The plugin directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Test the component already in build/ instead of building first.
        #[arg(long)]
        no_build: bool,
    },
}

fn main() {
    // Plugins run on the calling thread's stack (describe at load, fits, replays, `plugin
    // test`): run everything on a thread with room for the deepest Wasm stack allowed.
    let code = std::thread::Builder::new()
        .name("quiver-main".into())
        .stack_size(quiver::sandbox::PLUGIN_THREAD_STACK)
        .spawn(real_main)
        .expect("the system cannot start the main thread")
        .join()
        .unwrap_or(101);
    std::process::exit(code);
}

fn real_main() -> i32 {
    allocator::tune();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // openraft warns of routine events (a message from an older membership or vote
    // ignored); they show from -v on.
    let filter = match cli.verbose {
        0 => "warn,openraft=error",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Run(args) => {
            let sub = matches.subcommand_matches("run").expect("run matched");
            run(args, sub)
        }
        Command::Fit(args) => fit(args),
        Command::Schedule(args) => schedule::schedule(args),
        Command::Runs(args) => schedule::runs(args),
        Command::Replay { dir } => replay(&dir),
        Command::Plugin(PluginCommand::Inspect { plugin }) => inspect(&plugin),
        Command::Plugin(PluginCommand::New { lang, name, dir }) => {
            authoring::new_plugin(lang, &name, &dir)
                .map(|d| {
                    println!(
                        "created {} ({} plugin); next: quiver plugin test {}",
                        d.display(),
                        lang.name(),
                        d.display()
                    )
                })
                .map_err(Into::into)
        }
        Command::Plugin(PluginCommand::Build { dir }) => authoring::build(&dir)
            .map(|w| println!("built {}", w.display()))
            .map_err(Into::into),
        Command::Plugin(PluginCommand::Test { dir, no_build }) => plugin_test(&dir, no_build),
        Command::Node(args) => cluster::node(args),
        Command::Cluster(command) => cluster::cluster(command),
        Command::Table(command) => table::table(command),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // Errors quote plugin text (already escaped where it entered) and paths and data
            // values (not): nothing reaches the terminal unescaped.
            let text = render_error(&e)
                .split('\n')
                .map(|line| untrusted::escape(line, 64 << 10))
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("error: {text}");
            1
        }
    }
}

/// The error and its causes on one line, skipping causes whose text is already shown (the
/// library's messages embed their causes).
pub(crate) fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Pairs each --param with the --plugin that precedes it on the command line.
fn plugin_specs(args: &RunArgs, m: &ArgMatches) -> Result<Vec<PluginSpec>> {
    let plugin_at: Vec<usize> = m
        .indices_of("plugins")
        .map(Iterator::collect)
        .unwrap_or_default();
    let param_at: Vec<usize> = m
        .indices_of("params")
        .map(Iterator::collect)
        .unwrap_or_default();
    let mut specs: Vec<PluginSpec> = args
        .plugins
        .iter()
        .map(|p| {
            let is_path = p.ends_with(".wasm") || p.contains('/');
            PluginSpec {
                name: (!is_path).then(|| p.clone()),
                path: is_path.then(|| PathBuf::from(p)),
                ..Default::default()
            }
        })
        .collect();
    for (param, at) in args.params.iter().zip(param_at) {
        let Some(owner) = plugin_at.iter().rposition(|&i| i < at) else {
            bail!(
                "--param {param} comes before any --plugin; put it after the plugin it configures"
            );
        };
        let (name, value) = pipeline::parse_cli_param(param)?;
        specs[owner].params.insert(name, value);
    }
    Ok(specs)
}

fn run(args: RunArgs, m: &ArgMatches) -> Result<()> {
    let mut p = match &args.pipeline {
        Some(path) => Pipeline::from_file(path)?,
        None => {
            let Some(output) = &args.output else {
                bail!("give a pipeline file, or --input and --output (see quiver run --help)");
            };
            Pipeline {
                source: SourceSpec::default(),
                sink: SinkSpec {
                    path: output.clone(),
                    ..Default::default()
                },
                ..Default::default()
            }
        }
    };
    if !args.inputs.is_empty() {
        // Command-line paths are relative to the current directory, not the pipeline file.
        p.source.paths = args.inputs.iter().map(|i| absolute(i)).collect();
    }
    p.source.format = args.format.or(p.source.format);
    let cli_plugins = plugin_specs(&args, m)?;
    if !cli_plugins.is_empty() {
        p.plugins = cli_plugins
            .into_iter()
            .map(|mut s| {
                s.path = s
                    .path
                    .map(|x| PathBuf::from(absolute(&x.to_string_lossy())));
                s
            })
            .collect();
    }
    if !args.partition_by.is_empty() {
        p.partition = Some(PartitionSpec {
            scheme: if args.range {
                Scheme::Range
            } else {
                Scheme::Hash
            },
            by: args.partition_by.clone(),
            ..Default::default()
        });
    }
    if let Some(part) = &mut p.partition {
        part.count = args.partitions.or(part.count);
        if let Some(h) = args.hash {
            part.hash = h;
        }
    }
    if let Some(o) = &args.output {
        p.sink.path = PathBuf::from(absolute(&o.to_string_lossy()));
    }
    p.sink.format = args.output_format.or(p.sink.format);
    if !args.output_partition_by.is_empty() {
        p.sink.partition_by = args.output_partition_by.clone();
    }
    p.sink.overwrite |= args.overwrite;
    p.workers = args.workers.or(p.workers);
    if let Some(mem) = args.memory_mib {
        p.limits.memory_mib = mem;
    }
    if let Some(t) = args.timeout_ms {
        p.limits.timeout_ms = t;
    }
    if args.fuel.is_some() {
        p.limits.fuel = args.fuel;
    }
    p.deterministic |= args.deterministic;
    let host = host_for(&p, args.cache_dir.clone())?;
    if args.stream {
        if let Some(addr) = &args.metrics_addr {
            p.stream.get_or_insert_with(Default::default).metrics_addr = Some(addr.clone());
        }
        return run_stream(&p, &host, &args);
    }
    let options = RunOptions {
        progress: progress_line(),
        fitted: args.fitted.clone(),
        full_refresh: args.full_refresh,
    };
    exit_cleanly_on_signals()?;
    let outcome = match &args.pipeline {
        // A pipeline file's run takes the pipeline's lock and is recorded in its history.
        Some(file) => schedule::run_recorded(file, &args.lock, || {
            execute(&p, &host, &options, args.from_stage.as_deref())
        })?,
        None => execute(&p, &host, &options, args.from_stage.as_deref())?,
    };
    print_outcome(&outcome, args.report_json.as_deref())
}

/// What a batch run did: one report per stage run (one, `main`, for a pipeline without
/// stages), and the stages `--from-stage` passed over.
pub(crate) struct Outcome {
    pub(crate) stages: Vec<(String, quiver::report::RunReport)>,
    pub(crate) skipped: Vec<String>,
}

/// A batch run of the pipeline, or of each of its stages in order.
pub(crate) fn execute(
    p: &Pipeline,
    host: &Host,
    options: &RunOptions,
    from_stage: Option<&str>,
) -> Result<Outcome> {
    if p.stages.is_empty() {
        if from_stage.is_some() {
            bail!("--from-stage applies to a pipeline with [[stage]]s; this one has none");
        }
        let report = batch::run(p, host, options)?;
        return Ok(Outcome {
            stages: vec![(p.stage_name().to_string(), report)],
            skipped: Vec::new(),
        });
    }
    let report = quiver::stages::run(p, host, options, from_stage)?;
    Ok(Outcome {
        stages: report.stages,
        skipped: report.skipped,
    })
}

/// Prints the reports (and writes them as JSON with --report-json: one object, or an array
/// of one per stage for a pipeline with stages).
fn print_outcome(outcome: &Outcome, report_json: Option<&Path>) -> Result<()> {
    let json = match &outcome.stages[..] {
        [(name, report)] if name == pipeline::MAIN_STAGE && outcome.skipped.is_empty() => {
            eprint!("{report}");
            serde_json::to_value(report.json())?
        }
        stages => {
            for name in &outcome.skipped {
                eprintln!("stage {name}: skipped (--from-stage)");
            }
            let mut json = Vec::new();
            for (name, stage) in stages {
                eprintln!("stage {name}:");
                for line in stage.to_string().lines() {
                    eprintln!("  {line}");
                }
                let mut value = serde_json::to_value(stage.json())?;
                value["stage"] = serde_json::Value::String(name.clone());
                json.push(value);
            }
            eprintln!("{} stage(s) done", stages.len());
            serde_json::Value::Array(json)
        }
    };
    if let Some(path) = report_json {
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `quiver run --stream`: until SIGINT or SIGTERM, which end it with a final checkpoint.
fn run_stream(p: &Pipeline, host: &Host, args: &RunArgs) -> Result<()> {
    let status = std::io::stderr().is_terminal();
    let options = stream::StreamOptions {
        status,
        events: Some(std::sync::Arc::new(print_stream_event)),
        start: match (args.from_beginning, args.from_offset) {
            (true, _) => stream::Start::Beginning,
            (_, Some(o)) => stream::Start::Offset(o),
            _ => stream::Start::Resume,
        },
        stop_at_end: args.stop_at_end,
        ..Default::default()
    };
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal asks for a final checkpoint; a second one exits at once (what is
        // not committed is redone by the next run).
        signal_hook::flag::register_conditional_shutdown(signal, 130, options.stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, options.stop.clone()))
            .context("installing the stop signal handlers")?;
    }
    let report = stream::run(p, host, &options);
    if status {
        // Ends the status line.
        eprintln!();
    }
    eprint!("{}", report?);
    Ok(())
}

/// Prints what a streaming run tells: the endpoints' addresses (on stderr, so that whoever
/// started the run, a test too, learns the ports) and the live status line.
fn print_stream_event(event: stream::StreamEvent) {
    match event {
        stream::StreamEvent::IngestListening(addr) => eprintln!("ingest: http://{addr}/ingest"),
        stream::StreamEvent::MetricsListening(addr) => eprintln!("metrics: http://{addr}/metrics"),
        stream::StreamEvent::Status(s) => eprint!(
            "\r{} rows in ({:.0}/s), {} out; lag {} bytes; checkpoint {} {:.1} s ago   ",
            s.rows_in,
            s.rows_per_second,
            s.rows_out,
            s.lag_bytes,
            s.last_checkpoint,
            s.since_checkpoint.as_secs_f64()
        ),
    }
}

/// Batch mode: on SIGINT or SIGTERM, removes the run's temporary outputs and exits with
/// 128 + the signal's number (130, 143), so an interrupted run leaves nothing behind.
fn exit_cleanly_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing the signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let removed = quiver::io::remove_temporary_outputs();
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                eprintln!(
                    "error: interrupted by {name}; removed {removed} temporary output{}",
                    if removed == 1 { "" } else { "s" }
                );
                std::process::exit(128 + signal);
            }
        })
        .context("starting the signal handler thread")?;
    Ok(())
}

/// A progress line on stderr while a batch run reads its input, if stderr is a terminal.
fn progress_line() -> Option<std::sync::Arc<dyn batch::Progress>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {prefix}: {human_pos} rows read in {elapsed}, {per_sec:0}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(std::sync::Arc::new(ProgressLine(bar)))
}

/// The progress line of a batch run.
struct ProgressLine(indicatif::ProgressBar);

impl batch::Progress for ProgressLine {
    fn phase(&self, name: &str) {
        self.0.set_prefix(name.to_owned());
        self.0.set_position(0);
    }

    fn rows_read(&self, rows: u64) {
        self.0.inc(rows);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A host with room for every instance of the pipeline (plus replacements), and the engine
/// settings its limits need.
pub(crate) fn host_for(p: &Pipeline, cache_dir: Option<PathBuf>) -> Result<Host> {
    Ok(Host::new(
        p.engine_options()?,
        cache_dir.or_else(Host::default_cache_dir),
    )?)
}

fn fit(args: FitArgs) -> Result<()> {
    let mut p = Pipeline::from_file(&args.pipeline)?;
    if !args.inputs.is_empty() {
        p.source.paths = args.inputs.iter().map(|i| absolute(i)).collect();
    }
    p.workers = args.workers.or(p.workers);
    let host = host_for(&p, args.cache_dir.clone())?;
    let options = RunOptions {
        progress: progress_line(),
        ..RunOptions::default()
    };
    exit_cleanly_on_signals()?;
    let report = batch::fit(&p, &host, &options)?;
    report.fitted.write(&args.output)?;
    eprintln!(
        "fitted {} plugin{} in {} pass{} over the input ({:.2?}); wrote {}",
        report.fitted.plugins.len(),
        if report.fitted.plugins.len() == 1 {
            ""
        } else {
            "s"
        },
        report.passes,
        if report.passes == 1 { "" } else { "es" },
        report.wall,
        args.output.display()
    );
    Ok(())
}

fn absolute(p: &str) -> String {
    if Path::new(p).is_absolute() {
        p.to_string()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p).to_string_lossy().into_owned())
            .unwrap_or_else(|_| p.to_string())
    }
}

fn replay(dir: &Path) -> Result<()> {
    let r = quiver::replay::replay(dir, Host::default_cache_dir())?;
    let c = &r.call;
    // The recording's texts came from the plugin, through a file anyone could have edited.
    println!(
        "replayed {} {} (sha256 {}) on {} rows from {}",
        untrusted::name(&c.name),
        untrusted::name(&c.version),
        untrusted::name(&c.sha256),
        r.rows_in,
        dir.display()
    );
    println!("recorded error: {}", untrusted::message(&c.error));
    match &r.result {
        Ok(rows) => println!("this time: succeeded with {rows} rows out"),
        Err(e) => println!("this time: {e}"),
    }
    let m = &r.metrics;
    println!(
        "time {:.2?}; fuel {}; peak memory {:.1} MiB of {} MiB",
        r.time,
        m.fuel,
        m.peak_memory as f64 / (1 << 20) as f64,
        c.limits.memory_mib,
    );
    if r.result.is_ok() {
        println!("{} bytes in, {} bytes out", m.bytes_in, m.bytes_out);
    }
    println!(
        "limits {}; grants: {}",
        serde_json::to_string(&c.limits)?,
        c.grants.summary()
    );
    Ok(())
}

fn plugin_test(dir: &Path, no_build: bool) -> Result<()> {
    let wasm = if no_build {
        let m = authoring::Manifest::read(dir)?;
        dir.join("build").join(format!("{}.wasm", m.name))
    } else {
        authoring::build(dir)?
    };
    let host = Host::new(
        EngineOptions {
            fuel: true,
            ..EngineOptions::new(4)
        },
        Host::default_cache_dir(),
    )?;
    let r = authoring::test(dir, &wasm, &host)?;
    let m = &r.metrics;
    println!(
        "{}: {} rows from {} (expected {} in {}); transform {:.2?}, fuel {}, peak memory {:.1} MiB",
        r.wasm.display(),
        r.rows,
        r.input.display(),
        r.expected_rows,
        r.expected.display(),
        r.time,
        m.fuel,
        m.peak_memory as f64 / (1 << 20) as f64
    );
    if r.passed() {
        println!("ok: the output equals the expected rows");
        return Ok(());
    }
    // The rows are the plugin's output: shown escaped.
    for mismatch in r.mismatches.iter().take(20) {
        println!("  {}", untrusted::message(&mismatch.to_string()));
    }
    if r.mismatches.len() > 20 {
        println!("  … and {} more", r.mismatches.len() - 20);
    }
    bail!(
        "{} row(s) differ from {}",
        r.mismatches.len(),
        r.expected.display()
    )
}

fn inspect(plugin: &str) -> Result<()> {
    let spec = PluginSpec {
        name: (!plugin.ends_with(".wasm")).then(|| plugin.to_string()),
        path: plugin.ends_with(".wasm").then(|| PathBuf::from(plugin)),
        ..Default::default()
    };
    let path = pipeline::resolve_plugin(&spec, Path::new("."))?;
    let host = Host::new(EngineOptions::new(4), Host::default_cache_dir())?;
    let p = host.load(&path)?;
    let i = &p.info;
    println!("{} {} — {}", i.name, i.version, i.description);
    println!(
        "file:    {} ({} bytes, sha256 {})",
        p.path.display(),
        p.size,
        p.sha256
    );
    let mut exports = vec![quiver::plugin::TRANSFORMER_INTERFACE];
    if p.is_aggregate() {
        exports.push(quiver::plugin::AGGREGATE_INTERFACE);
    }
    if p.has_state_interface() {
        exports.push(quiver::plugin::STATE_INTERFACE);
    }
    println!("world:   exports {}", exports.join(", "));
    println!("parameters:");
    if i.params.is_empty() {
        println!("  (none)");
    }
    for s in &i.params {
        let default = s
            .default
            .as_ref()
            .map(|d| format!(", default {}", untrusted::message(&d.to_string())))
            .unwrap_or_default();
        let required = if s.required { ", required" } else { "" };
        println!("  {:<14} {}{required}{default}: {}", s.name, s.kind, s.doc);
    }
    println!("imports, and the grant each needs ([plugin.grants] in a pipeline file):");
    for imp in &p.imports {
        let need = match capability::classify(imp) {
            Need::Ambient => "always linked; empty unless granted",
            Need::Dir => "needs dirs = [...]",
            Need::Clock => "needs clock = true or \"deterministic\"",
            Need::Random => "needs random = true or \"deterministic\"",
            Need::Network => "never granted",
            Need::Unknown => "not provided by Quiver",
        };
        println!("  {imp:<44} {need}");
    }
    Ok(())
}
