//! The `run` daemon's cron schedule as a typed setting: parsed once, when the settings are
//! read, exactly as `tokio-cron-scheduler` parses it (croner, seconds field required,
//! day-of-month AND day-of-week), so a bad expression is a settings error at start, and
//! `status` can say when the next run is.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// A parsed `AUDIT_ARCHIVE_SCHEDULE`, with the expression it came from.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

/// An expression the scheduler would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (six fields, seconds first, e.g. `0 0 2 * * *`)")]
pub struct ScheduleError {
    reason: String,
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError {
                reason: e.to_string(),
            })?;
        Ok(Schedule {
            expr: expr.to_owned(),
            cron,
        })
    }

    /// The expression as written (what the scheduler is given).
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first firing strictly after `after` (UTC); `None` when it never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }

    /// Seconds between the next two firings after `after`: the schedule's period near then
    /// (`None` when it fires fewer than twice more).
    pub fn period_after(&self, after: DateTime<Utc>) -> Option<i64> {
        let next = self.next_after(after)?;
        let then = self.next_after(next)?;
        Some((then - next).num_seconds())
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_fires_nightly_at_two_utc() {
        let schedule = Schedule::parse("0 0 2 * * *").unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            schedule.next_after(t("2024-05-01T01:59:59Z")),
            Some(t("2024-05-01T02:00:00Z"))
        );
        assert_eq!(
            schedule.next_after(t("2024-05-01T02:00:00Z")),
            Some(t("2024-05-02T02:00:00Z"))
        );
        assert_eq!(schedule.as_str(), "0 0 2 * * *");
        assert_eq!(
            schedule.period_after(t("2024-05-01T03:00:00Z")),
            Some(86_400)
        );
        let every_15_min = Schedule::parse("0 */15 * * * *").unwrap();
        assert_eq!(
            every_15_min.period_after(t("2024-05-01T03:01:00Z")),
            Some(900)
        );
    }

    #[test]
    fn five_field_and_garbage_expressions_are_refused() {
        assert!(Schedule::parse("0 2 * * *").is_err());
        assert!(Schedule::parse("every night").is_err());
    }
}
