//! `datetime-parts`: calendar parts of timestamp and date32 columns, as int32 columns.
//!
//! For each listed column `c`, appends `c_year`, `c_month` (1–12), `c_day` (1–31),
//! `c_weekday` (Monday = 0 … Sunday = 6, as pandas' `dt.weekday`) and, for timestamps only,
//! `c_hour` (0–23), or the subset named in `parts` (in the order given). The input column is
//! kept. Nulls give nulls.
//!
//! Parts are those of the proleptic Gregorian calendar (years ≤ 0 included: year 0 is 1 BC, as
//! ISO 8601 and numpy count), computed from the day number with Howard Hinnant's
//! `civil_from_days`; there is no clock involved. A timestamp of any unit is first floored to
//! whole seconds (so −1 ms is 1969-12-31 23:59:59), then read as local time in the column's
//! time zone:
//! - no zone: the value is wall-clock time as stored (Arrow's "naive" timestamps);
//! - a fixed offset `+HH:MM`, `+HHMM` or `+HH` (or `-…`): UTC + that offset;
//! - an IANA zone name (`UTC`, `Europe/Paris`, `America/New_York`, …): UTC + the zone's offset
//!   at that instant, daylight saving included, from the IANA time zone database compiled into
//!   the plugin (chrono-tz; no host files needed).
//!
//! An unknown zone name is refused when the pipeline starts, naming the zone. A value whose
//! year does not fit int32 (only possible with second-unit timestamps) stops the run naming
//! the row, as does a named-zone instant beyond the ±262,000 years the database covers.

use std::borrow::Cow;

use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;
use quiver_sdk::prelude::*;
use quiver_sdk::{TimeUnit, TimestampType};

/// One calendar part, in output order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Year,
    Month,
    Day,
    Weekday,
    Hour,
}

/// Every part, in the default order.
const ALL: [Part; 5] = [
    Part::Year,
    Part::Month,
    Part::Day,
    Part::Weekday,
    Part::Hour,
];

impl Part {
    /// The name used in `parts` and as the output column suffix.
    fn name(self) -> &'static str {
        match self {
            Part::Year => "year",
            Part::Month => "month",
            Part::Day => "day",
            Part::Weekday => "weekday",
            Part::Hour => "hour",
        }
    }
}

/// The plugin: its parameters, checked.
struct DatetimeParts {
    columns: Vec<String>,
    /// The parts named in `parts`, or `None` for all the parts a column's type has.
    parts: Option<Vec<Part>>,
}

/// How to turn a stored value into local time.
#[derive(Debug, Clone)]
enum Zone {
    /// A fixed offset east of UTC, in seconds (0 for UTC and for naive timestamps).
    Fixed(i64),
    /// An IANA zone, whose offset depends on the instant.
    Named(Tz),
}

/// The kind of an input column, from its type.
#[derive(Debug, Clone)]
enum Source {
    /// date32: days since 1970-01-01.
    Date,
    /// A timestamp: values per second, and the zone.
    Timestamp { per_second: i64, zone: Zone },
}

/// Parses an Arrow time zone string: a fixed offset (`+HH:MM`, `+HHMM`, `+HH`, as Arrow itself
/// accepts) or an IANA name.
fn parse_zone(tz: &str) -> Result<Zone, String> {
    let b = tz.as_bytes();
    let digits = match b.len() {
        6 if b[3] == b':' => Some([b[1], b[2], b[4], b[5]]),
        5 => Some([b[1], b[2], b[3], b[4]]),
        3 => Some([b[1], b[2], b'0', b'0']),
        _ => None,
    };
    if let (Some(d), Some(&sign)) = (digits, b.first()) {
        if (sign == b'+' || sign == b'-') && d.iter().all(u8::is_ascii_digit) {
            let n = |i: usize| (d[i] - b'0') as i64;
            let secs = (n(0) * 10 + n(1)) * 3600 + (n(2) * 10 + n(3)) * 60;
            if secs >= 86_400 {
                return Err(format!("has time zone {tz:?}, an offset of a day or more"));
            }
            return Ok(Zone::Fixed(if sign == b'-' { -secs } else { secs }));
        }
    }
    tz.parse::<Tz>().map(Zone::Named).map_err(|_| {
        format!(
            "has time zone {tz:?}, which is neither a fixed offset (+HH:MM, +HHMM, +HH) nor an \
             IANA zone name (e.g. UTC, Europe/Paris)"
        )
    })
}

/// (year, month 1–12, day 1–31) of a day number counted from 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`, valid for every `i64` day number
/// whose year fits `i64`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year, then split into
    // 400-year eras of 146,097 days each.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Weekday of a day number, Monday = 0 (1970-01-01 was a Thursday, 3).
pub fn weekday(days: i64) -> i32 {
    (days + 3).rem_euclid(7) as i32
}

impl Source {
    /// The kind of a column of type `t`, or a message saying why it cannot be used.
    fn of(t: &DataType) -> Result<Source, String> {
        match t {
            DataType::Date32 => Ok(Source::Date),
            DataType::Timestamp(TimestampType { unit, timezone }) => Ok(Source::Timestamp {
                per_second: match unit {
                    TimeUnit::Second => 1,
                    TimeUnit::Millisecond => 1_000,
                    TimeUnit::Microsecond => 1_000_000,
                    TimeUnit::Nanosecond => 1_000_000_000,
                },
                zone: match timezone {
                    None => Zone::Fixed(0),
                    Some(tz) => parse_zone(tz)?,
                },
            }),
            other => Err(format!(
                "has type {other}; datetime-parts needs a timestamp or date32 column"
            )),
        }
    }

    /// (day number, hour) in local time of a stored value, or why there is none.
    fn local(&self, v: i64) -> Result<(i64, i32), String> {
        match self {
            Source::Date => Ok((v, 0)),
            Source::Timestamp { per_second, zone } => {
                let secs = v.div_euclid(*per_second);
                let offset = match zone {
                    Zone::Fixed(o) => *o,
                    Zone::Named(tz) => {
                        let utc = DateTime::from_timestamp(secs, 0).ok_or_else(|| {
                            format!("{secs} s from 1970 is beyond the time zone database")
                        })?;
                        tz.offset_from_utc_datetime(&utc.naive_utc())
                            .fix()
                            .local_minus_utc() as i64
                    }
                };
                let local = secs
                    .checked_add(offset)
                    .ok_or_else(|| format!("{secs} s from 1970 overflows in local time"))?;
                Ok((
                    local.div_euclid(86_400),
                    (local.rem_euclid(86_400) / 3600) as i32,
                ))
            }
        }
    }
}

impl DatetimeParts {
    /// The parts computed for a column of this kind.
    fn parts_for(&self, source: &Source) -> Vec<Part> {
        match (&self.parts, source) {
            (Some(p), _) => p.clone(),
            (None, Source::Date) => ALL[..4].to_vec(),
            (None, Source::Timestamp { .. }) => ALL.to_vec(),
        }
    }
}

impl Plugin for DatetimeParts {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "datetime-parts",
            env!("CARGO_PKG_VERSION"),
            "int32 year, month, day, weekday (Monday = 0) and hour columns from timestamp \
             (in their time zone) and date32 columns",
        )
        .param(ParamSpec::text_list("columns", "timestamp or date32 columns").required())
        .param(ParamSpec::text_list(
            "parts",
            "which of year, month, day, weekday, hour (timestamps only) to output, in this \
             order; all by default",
        ))
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.text_list("columns");
        if columns.is_empty() {
            return Err(Params::invalid("columns", "name at least one column"));
        }
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].contains(c) {
                return Err(Params::invalid("columns", format!("`{c}` is listed twice")));
            }
        }
        let parts = match params.get("parts") {
            None => None,
            Some(_) => {
                let names = params.text_list("parts");
                if names.is_empty() {
                    return Err(Params::invalid("parts", "name at least one part"));
                }
                let mut parts = Vec::new();
                for name in names {
                    let Some(p) = ALL.iter().find(|p| p.name() == name) else {
                        return Err(Params::invalid(
                            "parts",
                            format!(
                                "unknown part {name:?}; expected year, month, day, weekday or hour"
                            ),
                        ));
                    };
                    if parts.contains(p) {
                        return Err(Params::invalid(
                            "parts",
                            format!("{name:?} is listed twice"),
                        ));
                    }
                    parts.push(*p);
                }
                Some(parts)
            }
        };
        Ok(DatetimeParts { columns, parts })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for name in &self.columns {
            let field = find_field(input, name)?;
            let source = Source::of(&field.data_type)
                .map_err(|m| PluginError::new(format!("column `{name}` {m}")).in_column(name))?;
            plan = plan.read(name);
            for part in self.parts_for(&source) {
                if part == Part::Hour && matches!(source, Source::Date) {
                    return Err(PluginError::new(format!(
                        "column `{name}` is a date32 column, which has no hour; leave `hour` out \
                         of `parts`"
                    ))
                    .in_column(name));
                }
                let out = format!("{name}_{}", part.name());
                // Replacing an input column silently would lose data: refuse instead.
                if input.iter().any(|f| f.name == out) {
                    return Err(PluginError::new(format!(
                        "output column `{out}` already exists in the input; rename it first"
                    ))
                    .in_column(&out));
                }
                plan = plan.computed(&out, DataType::Int32, field.nullable);
            }
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows as usize;
        let mut out = Vec::new();
        for column in &input.columns {
            let name = &column.name;
            let source = Source::of(&column.data_type)
                .map_err(|m| PluginError::new(format!("column `{name}` {m}")).in_column(name))?;
            // date32 arrives as i32, timestamps as i64; widen dates so one loop serves both
            // (timestamps are borrowed, not copied).
            let values: Cow<[i64]> = match &column.values {
                Values::I32(v) => Cow::Owned(v.iter().map(|&d| d as i64).collect()),
                Values::I64(v) => Cow::Borrowed(v),
                _ => {
                    return Err(PluginError::new(format!(
                        "column `{name}` arrived without date or timestamp values"
                    ))
                    .in_column(name))
                }
            };
            let parts = self.parts_for(&source);
            let mut outputs = vec![vec![0i32; rows]; parts.len()];
            for (i, &v) in values.iter().enumerate() {
                if !column.is_valid(i) {
                    continue;
                }
                let fail = |m: String| PluginError::new(m).in_column(name).at_row(i);
                let (days, hour) = source.local(v).map_err(fail)?;
                let (year, month, day) = civil_from_days(days);
                let year = i32::try_from(year)
                    .map_err(|_| fail(format!("year {year} does not fit int32")))?;
                for (o, part) in outputs.iter_mut().zip(&parts) {
                    o[i] = match part {
                        Part::Year => year,
                        Part::Month => month as i32,
                        Part::Day => day as i32,
                        Part::Weekday => weekday(days),
                        Part::Hour => hour,
                    };
                }
            }
            for (values, part) in outputs.into_iter().zip(&parts) {
                out.push(Column::from_vec(
                    &format!("{name}_{}", part.name()),
                    DataType::Int32,
                    values,
                    column.validity.clone(),
                ));
            }
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

quiver_sdk::export_plugin!(DatetimeParts);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(weekday(0), 3);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(civil_from_days(-719_469), (0, 2, 29));
    }

    #[test]
    fn zones() {
        assert!(matches!(parse_zone("+02:00"), Ok(Zone::Fixed(7200))));
        assert!(matches!(parse_zone("-0530"), Ok(Zone::Fixed(-19_800))));
        assert!(matches!(parse_zone("+05"), Ok(Zone::Fixed(18_000))));
        assert!(matches!(parse_zone("UTC"), Ok(Zone::Named(_))));
        assert!(parse_zone("Mars/Olympus")
            .unwrap_err()
            .contains("Mars/Olympus"));
        let paris = Source::Timestamp {
            per_second: 1,
            zone: parse_zone("Europe/Paris").unwrap(),
        };
        // 2021-07-01T12:00Z is 14:00 in summer time; 2021-01-01T12:00Z is 13:00.
        assert_eq!(paris.local(1_625_140_800).unwrap().1, 14);
        assert_eq!(paris.local(1_609_502_400).unwrap().1, 13);
    }
}
