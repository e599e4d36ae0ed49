//! The `run` daemon's cron schedule: parsed exactly as `tokio-cron-scheduler` parses it
//! (croner, seconds field required, day-of-month AND day-of-week), so a bad expression is a
//! settings error at start, and `status` can say when the next run is.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use crate::error::ArchiveError;

pub fn parse(expr: &str) -> Result<Cron, ArchiveError> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| {
            ArchiveError::Config(format!(
                "AUDIT_ARCHIVE_SCHEDULE `{expr}`: {e} (six fields, seconds first, e.g. `0 0 2 * * *`)"
            ))
        })
}

/// The first firing strictly after `after` (UTC).
pub fn next_after(cron: &Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_fires_nightly_at_two_utc() {
        let cron = parse("0 0 2 * * *").unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            next_after(&cron, t("2024-05-01T01:59:59Z")),
            Some(t("2024-05-01T02:00:00Z"))
        );
        assert_eq!(
            next_after(&cron, t("2024-05-01T02:00:00Z")),
            Some(t("2024-05-02T02:00:00Z"))
        );
    }

    #[test]
    fn five_field_and_garbage_expressions_are_refused() {
        assert!(parse("0 2 * * *").is_err());
        assert!(parse("every night").is_err());
    }
}
