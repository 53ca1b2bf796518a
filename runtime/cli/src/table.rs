//! `quiver table …`: maintenance of a Delta table — its history, compaction, vacuum.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use clap::Subcommand;
use quiver::lake::delta::maintenance::{
    self, CompactOptions, HistoryEntry, VacuumOptions, DEFAULT_MIN_FILES,
};
use quiver::lake::Table;
use quiver::untrusted;

/// `quiver table …`.
#[derive(Subcommand)]
pub enum TableCommand {
    /// Show a table's commits, newest first, with the pipeline run that made each.
    ///
    /// Each commit shows its version, time (UTC), operation, the pipeline run or streaming
    /// epoch that made it (recorded in the commit's operation parameters), data files added
    /// and removed, new rows, and the writing engine.
    ///
    /// Examples:
    ///   quiver table history out/events
    ///   quiver table history out/events --limit 5 --json
    #[command(verbatim_doc_comment)]
    History {
        /// The table's directory.
        path: PathBuf,
        /// Show at most this many commits.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (an array of commits, with every operation parameter and transaction
        /// id) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite small data files into larger ones, as one commit that changes no rows.
    ///
    /// Per partition, files under the target size are rewritten into as few files as the
    /// target allows. The rewritten files are removed and the new ones added with dataChange =
    /// false, so incremental runs reading the table do not read the rows again. Rows keep the
    /// order they were written in. The old files stay on disk, and older versions readable,
    /// until `quiver table vacuum` deletes them.
    ///
    /// Examples:
    ///   quiver table compact out/events
    ///   quiver table compact out/events --target-size 256MiB --min-files 8
    #[command(verbatim_doc_comment)]
    Compact {
        /// The table's directory.
        path: PathBuf,
        /// Files under this size are rewritten, into files of at most about this size
        /// (B, KiB, MiB, GiB or KB, MB, GB).
        #[arg(long, default_value = "128MiB", value_parser = parse_size)]
        target_size: u64,
        /// Compact a partition only when it has at least this many files under the target
        /// size.
        #[arg(long, default_value_t = DEFAULT_MIN_FILES)]
        min_files: usize,
    },
    /// Delete data files the latest version does not use, once older than the retention.
    ///
    /// Deleted: files removed from the table (by an overwrite or a compaction) longer ago
    /// than the retention, and files no commit ever named (left by a failed writer) last
    /// modified longer ago than the retention. The retention keeps older versions readable
    /// for that long and protects the files of a writer still running. The log (_delta_log),
    /// and files and directories whose names start with `_` or `.`, are never touched;
    /// partition directories left empty are removed.
    ///
    /// Examples:
    ///   quiver table vacuum out/events --dry-run
    ///   quiver table vacuum out/events --retention 24h
    #[command(verbatim_doc_comment)]
    Vacuum {
        /// The table's directory.
        path: PathBuf,
        /// How long removed and unreferenced files are kept (s, m, h, d, w; e.g. 168h, 7d,
        /// 1h30m). Under an hour needs --force.
        #[arg(long, default_value = "168h", value_parser = parse_duration)]
        retention: Duration,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Take a retention under an hour. Only when nothing else reads or writes the table:
        /// readers of older versions would fail, and a running writer would lose its commit.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `quiver table` command.
pub fn table(command: TableCommand) -> Result<()> {
    match command {
        TableCommand::History { path, limit, json } => {
            let entries = maintenance::history(&Table::open(&path)?, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print!("{}", history_table(&entries));
            }
        }
        TableCommand::Compact {
            path,
            target_size,
            min_files,
        } => {
            let options = CompactOptions {
                target_size,
                min_files,
            };
            let r = maintenance::compact(&Table::open(&path)?, &options)?;
            let shown = path.display();
            match r.version {
                None => println!(
                    "nothing to compact in {shown}: no partition has {} or more files under {}",
                    min_files.max(2),
                    size(target_size)
                ),
                Some(version) => println!(
                    "compacted {shown} in version {version}: {} files → {} ({} → {}) in {} partition(s), {} rows rewritten; \
                     incremental readers skip this version, and the old files stay until `quiver table vacuum`",
                    r.files_removed,
                    r.files_added,
                    size(r.bytes_before),
                    size(r.bytes_after),
                    r.partitions,
                    r.rows
                ),
            }
        }
        TableCommand::Vacuum {
            path,
            retention,
            dry_run,
            force,
        } => {
            let options = VacuumOptions {
                retention,
                dry_run,
                force,
            };
            let r = maintenance::vacuum(&Table::open(&path)?, &options, SystemTime::now())?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for file in &r.files {
                println!(
                    "{verb} {}",
                    untrusted::escape(&file.display().to_string(), 4096)
                );
            }
            for dir in &r.directories {
                println!(
                    "removed empty directory {}",
                    untrusted::escape(&dir.display().to_string(), 4096)
                );
            }
            println!(
                "{} {}: {verb} {} file(s), {}, unused by version {} for longer than {}{}",
                if dry_run {
                    "dry run of vacuum"
                } else {
                    "vacuumed"
                },
                path.display(),
                r.files.len(),
                size(r.bytes),
                r.version,
                duration(retention),
                if dry_run { "; nothing was deleted" } else { "" }
            );
        }
    }
    Ok(())
}

/// The history as an aligned text table.
fn history_table(entries: &[HistoryEntry]) -> String {
    let header = [
        "VERSION",
        "TIME (UTC)",
        "OPERATION",
        "RUN",
        "FILES +/-",
        "ROWS ADDED",
        "ENGINE",
    ];
    let dash = || "-".to_string();
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            [
                e.version.to_string(),
                e.time.clone().unwrap_or_else(dash),
                e.operation.clone().unwrap_or_else(dash),
                run(e).unwrap_or_else(dash),
                format!("+{} -{}", e.files_added, e.files_removed),
                e.rows_added.map_or_else(dash, |r| r.to_string()),
                e.engine.clone().unwrap_or_else(dash),
            ]
            // The log is anyone's text: nothing reaches the terminal unescaped.
            .map(|cell| untrusted::escape(&cell, 4096))
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header.map(String::from));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// Who made a commit: `PIPELINE stage STAGE run N`, or `job JOB epoch N`.
fn run(e: &HistoryEntry) -> Option<String> {
    let mut parts = Vec::new();
    let mut add = |label: &str, value: &Option<String>| {
        if let Some(v) = value {
            parts.push(if label.is_empty() {
                v.clone()
            } else {
                format!("{label} {v}")
            });
        }
    };
    add("", &e.pipeline);
    add("stage", &e.stage);
    add("run", &e.run);
    add("job", &e.job);
    add("epoch", &e.epoch);
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Splits `text` into a number and the unit after it.
fn number_and_unit(text: &str) -> Result<(f64, String)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let Ok(number) = number.parse::<f64>() else {
        bail!("{text:?} does not start with a number");
    };
    Ok((number, unit.trim().to_ascii_lowercase()))
}

/// `128MiB`, `64MB`, `1GiB`, `4096` (bytes).
fn parse_size(text: &str) -> Result<u64> {
    let (number, unit) = number_and_unit(text)?;
    let scale: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => bail!("unknown size unit in {text:?} (use B, KiB, MiB, GiB, KB, MB or GB)"),
    };
    let bytes = number * scale as f64;
    if bytes < 1.0 || bytes > u64::MAX as f64 {
        bail!("{text:?} is not a size of at least one byte");
    }
    Ok(bytes as u64)
}

/// `168h`, `7d`, `1h30m`, `90s`, `2w`, `0`.
fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        bail!("empty duration (use e.g. 168h, 7d, 1h30m)");
    }
    let mut rest = text;
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let Ok(number) = rest[..digits].parse::<f64>() else {
            bail!("{text:?}: expected a number at {rest:?}");
        };
        let seconds = match rest[digits..unit_end].trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            _ => bail!("{text:?}: give each number a unit: s, m, h, d or w (e.g. 168h, 7d, 1h30m)"),
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| anyhow::anyhow!("{text:?} is too long"))
}

/// Bytes for people: `1.5 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A retention for people: `168h`, `30m`, `45s`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_size("128 mib").unwrap(), 128 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn durations_take_units_and_sums_of_them() {
        assert_eq!(
            parse_duration("168h").unwrap(),
            Duration::from_secs(168 * 3600)
        );
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_and_durations_print_for_people() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(128 << 20), "128.0 MiB");
        assert_eq!(duration(Duration::from_secs(168 * 3600)), "168h");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(1800)), "30m");
    }

    #[test]
    fn the_run_names_the_pipeline_stage_and_run_or_the_job_and_epoch() {
        let entry = |params: &[(&str, &str)]| {
            let mut e = HistoryEntry {
                version: 1,
                timestamp: None,
                time: None,
                operation: None,
                pipeline: None,
                stage: None,
                run: None,
                job: None,
                epoch: None,
                files_added: 0,
                files_removed: 0,
                rows_added: None,
                engine: None,
                parameters: Default::default(),
                transactions: Vec::new(),
            };
            for (k, v) in params {
                let v = Some(v.to_string());
                match *k {
                    "pipeline" => e.pipeline = v,
                    "stage" => e.stage = v,
                    "run" => e.run = v,
                    "job" => e.job = v,
                    _ => e.epoch = v,
                }
            }
            e
        };
        assert_eq!(
            run(&entry(&[
                ("pipeline", "p.toml"),
                ("stage", "land"),
                ("run", "3")
            ]))
            .unwrap(),
            "p.toml stage land run 3"
        );
        assert_eq!(
            run(&entry(&[("job", "clicks"), ("epoch", "12")])).unwrap(),
            "job clicks epoch 12"
        );
        assert_eq!(run(&entry(&[])), None);
    }
}
