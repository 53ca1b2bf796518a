//! `[schedule]` of a pipeline file: when a batch pipeline runs, and how failures are retried.
//!
//! ```toml
//! [schedule]
//! every = "15m"            # at every multiple of 15 minutes since the Unix epoch (UTC)
//! # or: cron = "0 * * * *" # standard 5-field cron (minute hour day month weekday), in UTC
//! retries = 3              # a failed run is tried again up to 3 times (default 0)
//! backoff = "30s"          # before the first retry (default 1s); doubles for each next one
//! max-backoff = "10m"      # the delay never grows past this (default 5m)
//! missed = "run-once"      # runs missed while no scheduler ran: run-once (default) or skip
//! ```
//!
//! Durations are a number and a unit (`ms`, `s`, `m`, `h`, `d`), or several with the larger
//! units first: `"90s"`, `"1h30m"`, `"1d12h"`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The longest duration accepted anywhere in `[schedule]`: keeps every sum and product of
/// durations far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// The shortest `every`: the scheduler looks at the clock about ten times a second, and a
/// batch run takes longer than that to start.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// A `[schedule]` table that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Neither `every` nor `cron` was given.
    #[error(
        "[schedule]: give `every` (as in every = \"15m\") or `cron` (as in cron = \"0 * * * *\")"
    )]
    NoCadence,
    /// Both `every` and `cron` were given.
    #[error("[schedule]: every = {every:?} and cron = {cron:?} both given; give one of them")]
    BothCadences {
        /// The `every` given.
        every: String,
        /// The `cron` given.
        cron: String,
    },
    /// A key's value cannot be used.
    #[error("[schedule] {key} = {value:?}: {reason}")]
    BadValue {
        /// The key, as written in the file (`every`, `max-backoff`, …).
        key: &'static str,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `max-backoff` is shorter than `backoff`.
    #[error("[schedule] max-backoff = {max:?} is shorter than backoff = {initial:?}")]
    BackoffAboveMax {
        /// `backoff` as written (or its default).
        initial: String,
        /// `max-backoff` as written (or its default).
        max: String,
    },
}

/// What to do at start with the runs that fell due while no scheduler was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Run the pipeline once at start for all of them (default): a batch pipeline's run
    /// catches up on all its input, so one run does the work of the missed ones.
    #[default]
    RunOnce,
    /// Skip them and wait for the next fire time.
    Skip,
}

impl fmt::Display for Missed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Missed::RunOnce => "run-once",
            Missed::Skip => "skip",
        })
    }
}

/// A cron expression of five fields (minute, hour, day of month, month, day of week), read in
/// UTC.
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    // Boxed: a parsed expression is a few hundred bytes, a period sixteen.
    cron: Box<croner::Cron>,
}

impl CronExpr {
    /// Parses a 5-field expression (`"0 * * * *"`, `"*/15 9-17 * * MON-FRI"`, `"@daily"`);
    /// an expression with a seconds or a year field, or one that never matches (`"0 0 30 2
    /// *"`), is refused with the reason.
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        use croner::parser::{CronParser, Seconds, Year};
        let fields = text.split_whitespace().count();
        if !text.trim_start().starts_with('@') && fields != 5 {
            return Err(format!(
                "has {fields} field{}; give 5: minute hour day-of-month month day-of-week",
                if fields == 1 { "" } else { "s" }
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| e.to_string())?;
        let expr = CronExpr {
            text: text.trim().to_string(),
            cron: Box::new(cron),
        };
        // A fixed instant, so that validation does not read the clock: an expression that
        // matches no day of a 28-year calendar cycle after it never matches.
        let origin = DateTime::from_timestamp(946_684_800, 0).unwrap_or_default(); // 2000-01-01
        if expr.next_after(origin).is_none() {
            return Err("matches no date (such as the 30th of February)".into());
        }
        Ok(expr)
    }

    /// The expression as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time strictly after `after` that the expression matches.
    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }

    /// The last time at or before `at` that the expression matches.
    pub(crate) fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&at, true).ok()
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronExpr").field(&self.text).finish()
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CronExpr {}

/// When a pipeline fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// At every multiple of this period since the Unix epoch, in UTC: `15m` fires at :00,
    /// :15, :30 and :45 of every hour, whenever the scheduler was started, so that fire times
    /// stay the same across restarts. A whole number of milliseconds, at least [`MIN_EVERY`].
    Every(Duration),
    /// At the times a cron expression matches.
    Cron(CronExpr),
}

impl fmt::Display for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cadence::Every(d) => write!(f, "every {}", format_duration(*d)),
            Cadence::Cron(c) => write!(f, "cron \"{}\"", c.as_str()),
        }
    }
}

/// How long to wait before retrying a failed run: `initial` before the first retry, doubling
/// for each next one, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5 * 60),
        }
    }
}

/// A validated `[schedule]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ScheduleTable")]
pub struct ScheduleSpec {
    /// When the pipeline fires.
    pub cadence: Cadence,
    /// How many times a failed run is tried again (0: never).
    pub retries: u32,
    /// The delays between tries.
    pub backoff: Backoff,
    /// What to do at start with runs missed while no scheduler ran.
    pub missed: Missed,
}

impl ScheduleSpec {
    /// A schedule with the defaults: no retries, 1 s backoff up to 5 min, missed runs run once.
    pub fn new(cadence: Cadence) -> ScheduleSpec {
        ScheduleSpec {
            cadence,
            retries: 0,
            backoff: Backoff::default(),
            missed: Missed::default(),
        }
    }
}

/// The table as written; [`ScheduleSpec`] is made from it by validation, so that a pipeline
/// file with a bad `[schedule]` fails to load with a message naming the key and the value.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ScheduleTable {
    every: Option<String>,
    cron: Option<String>,
    #[serde(default)]
    retries: u32,
    backoff: Option<String>,
    max_backoff: Option<String>,
    #[serde(default)]
    missed: Missed,
}

impl TryFrom<ScheduleTable> for ScheduleSpec {
    type Error = SpecError;

    fn try_from(t: ScheduleTable) -> Result<Self, SpecError> {
        let bad = |key: &'static str, value: &str, reason: String| SpecError::BadValue {
            key,
            value: value.to_string(),
            reason,
        };
        let cadence = match (t.every, t.cron) {
            (None, None) => return Err(SpecError::NoCadence),
            (Some(every), Some(cron)) => return Err(SpecError::BothCadences { every, cron }),
            (Some(every), None) => {
                let d = parse_duration(&every).map_err(|r| bad("every", &every, r))?;
                if d < MIN_EVERY {
                    return Err(bad(
                        "every",
                        &every,
                        format!(
                            "shorter than the shortest period, {}",
                            format_duration(MIN_EVERY)
                        ),
                    ));
                }
                Cadence::Every(d)
            }
            (None, Some(cron)) => {
                Cadence::Cron(CronExpr::parse(&cron).map_err(|r| bad("cron", &cron, r))?)
            }
        };
        let default = Backoff::default();
        let duration = |key: &'static str, text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => parse_duration(text).map_err(|r| bad(key, text, r)),
        };
        let backoff = Backoff {
            initial: duration("backoff", &t.backoff, default.initial)?,
            max: duration("max-backoff", &t.max_backoff, default.max)?,
        };
        if backoff.max < backoff.initial {
            let shown = |text: &Option<String>, d: Duration| {
                text.clone().unwrap_or_else(|| format_duration(d))
            };
            return Err(SpecError::BackoffAboveMax {
                initial: shown(&t.backoff, backoff.initial),
                max: shown(&t.max_backoff, backoff.max),
            });
        }
        Ok(ScheduleSpec {
            cadence,
            retries: t.retries,
            backoff,
            missed: t.missed,
        })
    }
}

/// The units of a duration, largest first, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a duration: one or more groups of a whole number and a unit (`ms`, `s`, `m`, `h`,
/// `d`), larger units first, as in `"15m"`, `"90s"`, `"1h30m"`. More than zero and at most
/// [`MAX_DURATION`]. The error says what is wrong, without repeating the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const FORM: &str =
        "give a number and a unit (ms, s, m, h, d), or several with the larger units first, as in \"15m\" or \"1h30m\"";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("empty; {FORM}"));
    }
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen: the next one must be smaller.
    let mut last: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}; {FORM}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{} is too large", &rest[..digits]))?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = rest[letters..].trim_start();
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                format!("{number} has no unit; {FORM}")
            } else {
                format!("unknown unit {unit:?}; {FORM}")
            });
        };
        if last.is_some_and(|l| index <= l) {
            return Err(format!("unit {unit:?} out of order; {FORM}"));
        }
        last = Some(index);
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total.checked_add(ms))
            .filter(|&ms| u128::from(ms) <= MAX_DURATION.as_millis())
            .ok_or_else(|| format!("longer than {}", format_duration(MAX_DURATION)))?;
    }
    if total == 0 {
        return Err("must be longer than zero".into());
    }
    Ok(Duration::from_millis(total))
}

/// A duration in the form [`parse_duration`] reads, to the millisecond: `1h30m`, `500ms`,
/// `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (name, len) in UNITS {
        if ms >= len {
            out.push_str(&format!("{}{name}", ms / len));
            ms %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `[schedule]` as part of a pipeline-like document, as the pipeline file reads it.
    #[derive(Debug, Deserialize)]
    struct File {
        schedule: ScheduleSpec,
    }

    fn read(body: &str) -> Result<ScheduleSpec, String> {
        toml::from_str::<File>(&format!("[schedule]\n{body}"))
            .map(|f| f.schedule)
            .map_err(|e| e.to_string())
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn every_with_defaults() {
        let spec = read("every = \"15m\"").unwrap();
        assert_eq!(spec, ScheduleSpec::new(Cadence::Every(secs(900))));
        assert_eq!(spec.retries, 0);
        assert_eq!(
            spec.backoff,
            Backoff {
                initial: secs(1),
                max: secs(300)
            }
        );
        assert_eq!(spec.missed, Missed::RunOnce);
        assert_eq!(spec.cadence.to_string(), "every 15m");
    }

    #[test]
    fn cron_with_every_key() {
        let spec = read(
            "cron = \"0 * * * *\"\nretries = 3\nbackoff = \"30s\"\nmax-backoff = \"10m\"\nmissed = \"skip\"",
        )
        .unwrap();
        assert_eq!(
            spec.cadence,
            Cadence::Cron(CronExpr::parse("0 * * * *").unwrap())
        );
        assert_eq!(spec.cadence.to_string(), "cron \"0 * * * *\"");
        assert_eq!(spec.retries, 3);
        assert_eq!(
            spec.backoff,
            Backoff {
                initial: secs(30),
                max: secs(600)
            }
        );
        assert_eq!(spec.missed, Missed::Skip);
    }

    #[test]
    fn durations_take_units_largest_first() {
        let ok = [
            ("1s", 1_000),
            ("90s", 90_000),
            ("1h30m", 5_400_000),
            ("1d12h", 129_600_000),
            ("500ms", 500),
            ("2m 5s", 125_000),
            ("366d", 366 * 86_400_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        let bad = [
            ("", "empty"),
            ("15", "has no unit"),
            ("15x", "unknown unit \"x\""),
            ("m", "expected a number"),
            ("30m1h", "out of order"),
            ("1m1m", "out of order"),
            ("0s", "longer than zero"),
            ("367d", "longer than 366d"),
            ("99999999999999999999s", "too large"),
            ("-5s", "expected a number"),
        ];
        for (text, reason) in bad {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn errors_name_the_key_and_the_bad_value() {
        let cases = [
            (
                "every = \"15x\"",
                "[schedule] every = \"15x\": unknown unit",
            ),
            (
                "every = \"500ms\"",
                "[schedule] every = \"500ms\": shorter than the shortest period, 1s",
            ),
            (
                "cron = \"0 * * *\"",
                "[schedule] cron = \"0 * * *\": has 4 fields; give 5",
            ),
            (
                "cron = \"0 0 * * * *\"",
                "[schedule] cron = \"0 0 * * * *\": has 6 fields",
            ),
            ("cron = \"0 25 * * *\"", "[schedule] cron = \"0 25 * * *\":"),
            ("cron = \"0 0 30 2 *\"", "matches no date"),
            (
                "every = \"1h\"\nbackoff = \"soon\"",
                "[schedule] backoff = \"soon\": expected a number",
            ),
            (
                "every = \"1h\"\nmax-backoff = \"0s\"",
                "[schedule] max-backoff = \"0s\": must be longer than zero",
            ),
            (
                "every = \"1h\"\nbackoff = \"10m\"",
                "[schedule] max-backoff = \"5m\" is shorter than backoff = \"10m\"",
            ),
            (
                "every = \"1h\"\ncron = \"0 * * * *\"",
                "every = \"1h\" and cron = \"0 * * * *\" both given",
            ),
            ("retries = 2", "give `every`"),
            (
                "every = \"1h\"\nmissed = \"later\"",
                "unknown variant `later`, expected `run-once` or `skip`",
            ),
            ("every = \"1h\"\nretry = 2", "unknown field `retry`"),
            ("every = \"1h\"\nretries = -1", "retries"),
        ];
        for (body, expected) in cases {
            let err = read(body).unwrap_err();
            assert!(err.contains(expected), "{body}:\n{err}");
        }
    }

    #[test]
    fn cron_nicknames_and_names_of_days_are_read() {
        for text in ["@hourly", "@daily", "*/15 9-17 * * MON-FRI", "0 0 1 JAN *"] {
            CronExpr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    proptest! {
        #[test]
        fn formatted_durations_read_back(ms in 1u64..=MAX_DURATION.as_millis() as u64) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
