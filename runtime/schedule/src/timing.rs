//! The scheduler's decisions, as pure functions of the schedule and instants passed in: when
//! a pipeline fires next, what to do at start with runs missed while no scheduler ran, which
//! fires a long run made pass by, and how long to wait before a retry. Nothing here reads a
//! clock; the [`scheduler`](crate::scheduler) does, and asks these.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::spec::{Backoff, Cadence, Missed, ScheduleSpec};

/// Counting fires stops here: a cron expression that fires every minute, down for a year,
/// would otherwise be walked half a million times to print one number.
pub const FIRE_COUNT_CAP: u64 = 10_000;

/// The first fire time strictly after `after`; `None` if the cadence never fires again (a
/// cron expression past its last match, or an instant past the calendar's end).
pub fn next_fire(cadence: &Cadence, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match cadence {
        Cadence::Every(period) => {
            let p = period_ms(*period);
            let next = after
                .timestamp_millis()
                .div_euclid(p)
                .checked_add(1)?
                .checked_mul(p)?;
            DateTime::from_timestamp_millis(next)
        }
        Cadence::Cron(cron) => cron.next_after(after),
    }
}

/// The last fire time at or before `at`, if there is one.
pub fn latest_fire(cadence: &Cadence, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match cadence {
        Cadence::Every(period) => {
            let p = period_ms(*period);
            let latest = at.timestamp_millis().div_euclid(p).checked_mul(p)?;
            DateTime::from_timestamp_millis(latest)
        }
        Cadence::Cron(cron) => cron.latest_at_or_before(at),
    }
}

/// How many fire times lie in `(after, up_to]`, counted up to [`FIRE_COUNT_CAP`].
pub fn fires_between(cadence: &Cadence, after: DateTime<Utc>, up_to: DateTime<Utc>) -> u64 {
    if up_to <= after {
        return 0;
    }
    match cadence {
        Cadence::Every(period) => {
            let p = period_ms(*period);
            let count =
                up_to.timestamp_millis().div_euclid(p) - after.timestamp_millis().div_euclid(p);
            u64::try_from(count).unwrap_or(0).min(FIRE_COUNT_CAP)
        }
        Cadence::Cron(_) => {
            let mut count = 0;
            let mut t = after;
            while count < FIRE_COUNT_CAP {
                match next_fire(cadence, t) {
                    Some(next) if next <= up_to => {
                        count += 1;
                        t = next;
                    }
                    _ => break,
                }
            }
            count
        }
    }
}

/// The period in milliseconds, at least 1 (a [`Cadence::Every`] made by hand with a zero
/// period would otherwise divide by zero).
fn period_ms(period: Duration) -> i64 {
    i64::try_from(period.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// What the scheduler does when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    /// No fire was missed (or no scheduler ever ran this pipeline): wait for `next`.
    Wait {
        /// The next fire time.
        next: DateTime<Utc>,
    },
    /// Fires passed while no scheduler ran, and the policy is [`Missed::RunOnce`]: run once
    /// now, for the latest of them.
    RunMissed {
        /// The latest missed fire time, which the run is for.
        scheduled_for: DateTime<Utc>,
        /// How many fires were missed (at most [`FIRE_COUNT_CAP`]).
        missed: u64,
    },
    /// Fires passed while no scheduler ran, and the policy is [`Missed::Skip`]: wait for
    /// `next`.
    SkipMissed {
        /// The latest missed fire time.
        latest: DateTime<Utc>,
        /// How many fires were missed (at most [`FIRE_COUNT_CAP`]).
        missed: u64,
        /// The next fire time.
        next: DateTime<Utc>,
    },
    /// The cadence never fires again.
    Never,
}

/// What to do at start, given the last fire time a scheduler took for this pipeline (`None`
/// if none ever did), the time now and the policy. The fires missed are those after
/// `last_scheduled` up to `now`; a `last_scheduled` in the future (the clock was set back)
/// misses nothing.
pub fn at_start(
    cadence: &Cadence,
    missed: Missed,
    last_scheduled: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> StartDecision {
    let wait = |after: DateTime<Utc>| match next_fire(cadence, after) {
        Some(next) => StartDecision::Wait { next },
        None => StartDecision::Never,
    };
    let Some(last) = last_scheduled else {
        return wait(now);
    };
    let count = fires_between(cadence, last, now);
    let latest = match latest_fire(cadence, now) {
        Some(latest) if count > 0 && latest > last => latest,
        _ => return wait(now),
    };
    match missed {
        Missed::RunOnce => StartDecision::RunMissed {
            scheduled_for: latest,
            missed: count,
        },
        Missed::Skip => match next_fire(cadence, now) {
            Some(next) => StartDecision::SkipMissed {
                latest,
                missed: count,
                next,
            },
            None => StartDecision::Never,
        },
    }
}

/// What follows a fire that was handled (run, with its retries, or skipped) by `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterFire {
    /// The next fire time, strictly after `now`; `None` if there is none.
    pub next: Option<DateTime<Utc>>,
    /// Fires after the handled one up to `now`, which came while it was still running and
    /// are skipped rather than started late (at most [`FIRE_COUNT_CAP`]).
    pub skipped: u64,
}

/// The next fire after handling the one `scheduled_for`, finished at `now`: fires that came
/// meanwhile are skipped, so that one pipeline never has two runs going, nor a queue of late
/// ones.
pub fn after_fire(
    cadence: &Cadence,
    scheduled_for: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AfterFire {
    AfterFire {
        next: next_fire(cadence, now.max(scheduled_for)),
        skipped: fires_between(cadence, scheduled_for, now),
    }
}

/// The delay before retry number `retry` (1 for the first retry): `initial × 2^(retry−1)`,
/// at most `max`. Retry 0 (no retry) waits nothing.
pub fn retry_delay(backoff: &Backoff, retry: u32) -> Duration {
    if retry == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(retry - 1).unwrap_or(u32::MAX);
    backoff
        .initial
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(backoff.max)
}

/// After attempt `attempt` (1 for the first try) of a run failed: the delay before trying
/// again, or `None` if the schedule's retries are used up.
pub fn retry_after(spec: &ScheduleSpec, attempt: u32) -> Option<Duration> {
    (attempt <= spec.retries).then(|| retry_delay(&spec.backoff, attempt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::CronExpr;
    use chrono::{Datelike, TimeZone, Timelike};
    use proptest::prelude::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn every(ms: u64) -> Cadence {
        Cadence::Every(Duration::from_millis(ms))
    }

    fn cron(text: &str) -> Cadence {
        Cadence::Cron(CronExpr::parse(text).unwrap())
    }

    /// Instants from 1970 to about 2100, to the millisecond.
    fn instant() -> impl Strategy<Value = i64> {
        0i64..4_100_000_000_000
    }

    /// Periods from 1 s to 2 days.
    fn period() -> impl Strategy<Value = u64> {
        prop_oneof![
            1_000u64..=172_800_000,
            Just(1_000),
            Just(60_000),
            Just(900_000)
        ]
    }

    proptest! {
        #[test]
        fn every_fires_strictly_after_on_the_grid_with_no_fire_skipped(t in instant(), p in period()) {
            let c = every(p);
            let next = next_fire(&c, at(t)).unwrap();
            prop_assert!(next > at(t));
            prop_assert_eq!(next.timestamp_millis().rem_euclid(p as i64), 0);
            // No grid point lies between: the one before `next` is at or before t.
            prop_assert!(next.timestamp_millis() - p as i64 <= t);
        }

        #[test]
        fn latest_fire_is_on_the_grid_at_or_before_and_next_follows_it(t in instant(), p in period()) {
            let c = every(p);
            let latest = latest_fire(&c, at(t)).unwrap();
            prop_assert!(latest <= at(t));
            prop_assert_eq!(latest.timestamp_millis().rem_euclid(p as i64), 0);
            prop_assert_eq!(next_fire(&c, latest).unwrap().timestamp_millis(), latest.timestamp_millis() + p as i64);
        }

        #[test]
        fn cron_fires_strictly_after_on_whole_minutes_that_match(t in instant()) {
            let c = cron("*/15 9-17 * * 1-5");
            let next = next_fire(&c, at(t)).unwrap();
            prop_assert!(next > at(t));
            prop_assert_eq!(next.second(), 0);
            prop_assert_eq!(next.nanosecond(), 0);
            prop_assert_eq!(next.minute() % 15, 0);
            prop_assert!((9..=17).contains(&next.hour()));
            prop_assert!((1..=5).contains(&next.weekday().number_from_monday()));
            // Fires are at most a weekend apart, and none lies between t and next.
            prop_assert!(next - at(t) <= chrono::TimeDelta::days(3));
            prop_assert!(fires_between(&c, at(t), next) == 1);
        }

        #[test]
        fn counting_fires_agrees_with_walking_them(a in instant(), len in 0i64..50_000_000, p in period()) {
            let c = every(p);
            let b = a + len;
            let mut walked = 0;
            let mut t = at(a);
            while let Some(n) = next_fire(&c, t).filter(|n| *n <= at(b) && walked < FIRE_COUNT_CAP) {
                walked += 1;
                t = n;
            }
            prop_assert_eq!(fires_between(&c, at(a), at(b)), walked);
            prop_assert_eq!(fires_between(&cron("* * * * *"), at(a), at(b)), fires_between(&every(60_000), at(a), at(b)));
        }

        #[test]
        fn backoff_grows_monotonically_and_is_capped(initial in 1u64..100_000, max_factor in 1u64..10_000, n in 0u32..200) {
            let b = Backoff {
                initial: Duration::from_millis(initial),
                max: Duration::from_millis(initial * max_factor),
            };
            let d = retry_delay(&b, n);
            let next = retry_delay(&b, n + 1);
            prop_assert!(d <= next);
            prop_assert!(next <= b.max);
            prop_assert!(n == 0 || d >= b.initial);
            if n >= 1 && u128::from(initial) << (n - 1).min(100) <= b.max.as_millis() {
                prop_assert_eq!(d.as_millis(), u128::from(initial) << (n - 1));
            }
        }

        #[test]
        fn a_restart_never_runs_a_fire_twice_nor_one_in_the_future(
            last in instant(), down in 0i64..10_000_000, p in period(), skip in any::<bool>()
        ) {
            let c = every(p);
            let now = at(last + down);
            let policy = if skip { Missed::Skip } else { Missed::RunOnce };
            match at_start(&c, policy, Some(at(last)), now) {
                StartDecision::Wait { next } => {
                    prop_assert!(next > now);
                    prop_assert_eq!(fires_between(&c, at(last), now), 0);
                }
                StartDecision::RunMissed { scheduled_for, missed } => {
                    prop_assert!(!skip);
                    prop_assert!(scheduled_for > at(last) && scheduled_for <= now);
                    prop_assert_eq!(Some(scheduled_for), latest_fire(&c, now));
                    prop_assert_eq!(missed, fires_between(&c, at(last), now));
                    prop_assert!(missed >= 1);
                }
                StartDecision::SkipMissed { latest, missed, next } => {
                    prop_assert!(skip);
                    prop_assert!(latest > at(last) && latest <= now && next > now);
                    prop_assert!(missed >= 1);
                }
                StartDecision::Never => prop_assert!(false, "an every-cadence always fires"),
            }
        }

        #[test]
        fn after_a_long_run_the_next_fire_is_in_the_future_and_the_passed_ones_are_counted(
            fire in instant(), took in 0i64..10_000_000, p in period()
        ) {
            let c = every(p);
            let scheduled_for = latest_fire(&c, at(fire)).unwrap();
            let now = at(scheduled_for.timestamp_millis() + took);
            let after = after_fire(&c, scheduled_for, now);
            let next = after.next.unwrap();
            prop_assert!(next > now);
            prop_assert_eq!(after.skipped, fires_between(&c, scheduled_for, now));
            // Skipped fires plus the next one are all the fires after the handled one.
            prop_assert_eq!(fires_between(&c, scheduled_for, next), after.skipped + 1);
        }
    }

    #[test]
    fn every_fifteen_minutes_fires_at_the_quarter_hours() {
        let c = every(15 * 60_000);
        assert_eq!(
            next_fire(&c, utc(2024, 5, 1, 12, 7, 30)),
            Some(utc(2024, 5, 1, 12, 15, 0))
        );
        // Strictly after: a fire time itself is followed by the next one.
        assert_eq!(
            next_fire(&c, utc(2024, 5, 1, 12, 15, 0)),
            Some(utc(2024, 5, 1, 12, 30, 0))
        );
        assert_eq!(
            latest_fire(&c, utc(2024, 5, 1, 12, 15, 0)),
            Some(utc(2024, 5, 1, 12, 15, 0))
        );
    }

    #[test]
    fn hourly_cron_fires_on_the_hour_in_utc() {
        let c = cron("0 * * * *");
        assert_eq!(
            next_fire(&c, utc(2024, 5, 1, 12, 0, 0)),
            Some(utc(2024, 5, 1, 13, 0, 0))
        );
        assert_eq!(
            next_fire(&c, utc(2024, 12, 31, 23, 59, 59)),
            Some(utc(2025, 1, 1, 0, 0, 0))
        );
        assert_eq!(
            latest_fire(&c, utc(2024, 5, 1, 12, 59, 59)),
            Some(utc(2024, 5, 1, 12, 0, 0))
        );
        let half_second = utc(2024, 5, 1, 12, 0, 0) + chrono::TimeDelta::milliseconds(500);
        assert_eq!(next_fire(&c, half_second), Some(utc(2024, 5, 1, 13, 0, 0)));
    }

    #[test]
    fn cron_on_the_29th_of_february_fires_in_leap_years() {
        let c = cron("0 0 29 2 *");
        assert_eq!(
            next_fire(&c, utc(2025, 1, 1, 0, 0, 0)),
            Some(utc(2028, 2, 29, 0, 0, 0))
        );
    }

    #[test]
    fn first_start_waits_for_the_next_fire() {
        let c = every(60_000);
        let now = utc(2024, 5, 1, 12, 0, 30);
        for policy in [Missed::RunOnce, Missed::Skip] {
            assert_eq!(
                at_start(&c, policy, None, now),
                StartDecision::Wait {
                    next: utc(2024, 5, 1, 12, 1, 0)
                }
            );
        }
    }

    #[test]
    fn restart_after_missed_fires_runs_the_latest_once_or_skips_them() {
        let c = cron("0 * * * *");
        let last = utc(2024, 5, 1, 9, 0, 0);
        let now = utc(2024, 5, 1, 12, 20, 0);
        assert_eq!(
            at_start(&c, Missed::RunOnce, Some(last), now),
            StartDecision::RunMissed {
                scheduled_for: utc(2024, 5, 1, 12, 0, 0),
                missed: 3
            }
        );
        assert_eq!(
            at_start(&c, Missed::Skip, Some(last), now),
            StartDecision::SkipMissed {
                latest: utc(2024, 5, 1, 12, 0, 0),
                missed: 3,
                next: utc(2024, 5, 1, 13, 0, 0)
            }
        );
    }

    #[test]
    fn restart_before_the_next_fire_misses_nothing() {
        let c = every(3_600_000);
        let last = utc(2024, 5, 1, 12, 0, 0);
        let next = StartDecision::Wait {
            next: utc(2024, 5, 1, 13, 0, 0),
        };
        assert_eq!(
            at_start(&c, Missed::RunOnce, Some(last), utc(2024, 5, 1, 12, 59, 59)),
            next
        );
        // The clock set back behind the last fire taken: nothing is run again.
        let earlier = utc(2024, 5, 1, 10, 30, 0);
        assert_eq!(
            at_start(&c, Missed::RunOnce, Some(last), earlier),
            StartDecision::Wait {
                next: utc(2024, 5, 1, 11, 0, 0)
            }
        );
    }

    #[test]
    fn missed_fires_are_counted_up_to_the_cap() {
        let c = cron("* * * * *");
        let a = utc(2020, 1, 1, 0, 0, 0);
        assert_eq!(
            fires_between(&c, a, utc(2024, 1, 1, 0, 0, 0)),
            FIRE_COUNT_CAP
        );
        assert_eq!(fires_between(&c, a, utc(2020, 1, 1, 1, 0, 0)), 60);
        assert_eq!(
            fires_between(&every(60_000), a, utc(2024, 1, 1, 0, 0, 0)),
            FIRE_COUNT_CAP
        );
    }

    #[test]
    fn retries_double_from_the_initial_delay_up_to_the_cap_then_stop() {
        let mut spec = ScheduleSpec::new(every(1_000));
        spec.retries = 5;
        spec.backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let delays: Vec<Option<u64>> = (1..=6)
            .map(|attempt| retry_after(&spec, attempt).map(|d| d.as_secs()))
            .collect();
        assert_eq!(delays, [Some(1), Some(2), Some(4), Some(5), Some(5), None]);
    }

    #[test]
    fn no_retries_means_a_failure_is_final() {
        let spec = ScheduleSpec::new(every(1_000));
        assert_eq!(retry_after(&spec, 1), None);
    }
}
