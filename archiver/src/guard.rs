//! The TTL guard (docs/archiver.md): no event may expire unarchived. The archiver knows when the
//! oldest unarchived event expires — from the TTL index's `expireAfterSeconds`, or, where the
//! server has no TTL (FerretDB), from `AUDIT_RETENTION_DAYS`, the horizon `purge` works to.
//!
//! The event must outlive the next chance to archive it: the next firing of
//! `AUDIT_ARCHIVE_SCHEDULE` after now, plus the time a run takes (the larger of
//! `AUDIT_ARCHIVE_EXPECTED_RUN_TIME` and the last successful run's duration, from the runs
//! record), plus `AUDIT_ARCHIVE_SAFETY_MARGIN`. Comparing with the margin from *now* alone is
//! not enough: with a daily schedule an event can expire in the day between two runs.
//!
//! When the oldest unarchived event expires before that horizon, the guard logs an error,
//! counts it in a metric, and — unless `AUDIT_ARCHIVE_RAISE_TTL=false` — raises the TTL with
//! `collMod` so the event stays until the horizon plus one more margin. `once` asks before it
//! archives (so the TTL is raised before the work) and again after, and exits non-zero only
//! when an event is still at risk then: a run that archived what was at risk succeeded.

use auditlog_common::schema;
use auditlog_common::store::Store;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::error::{ArchiveError, Result};
use crate::metrics::Metrics;

/// Where the expiry horizon comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TtlSource {
    /// The `{created_at: 1}` TTL index.
    TtlIndex,
    /// No TTL index; `AUDIT_RETENTION_DAYS` (what `purge` would use).
    Retention,
    /// Nothing expires.
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct GuardReport {
    pub ttl_seconds: Option<i64>,
    pub ttl_source: TtlSource,
    pub oldest_unarchived: Option<DateTime<Utc>>,
    /// Seconds until the oldest unarchived event expires (negative: already past).
    pub seconds_left: Option<i64>,
    /// The schedule's next firing after now (`None`: it never fires again; now counts).
    pub next_run: Option<DateTime<Utc>>,
    /// How long that run is expected to take, in seconds.
    pub expected_run_seconds: i64,
    pub safety_margin_seconds: i64,
    /// The instant the oldest unarchived event must outlive: next run + expected run time +
    /// safety margin.
    pub must_last_until: DateTime<Utc>,
    /// Seconds from now to [`GuardReport::must_last_until`].
    pub must_last_seconds: i64,
    pub triggered: bool,
    /// The new `expireAfterSeconds`, when the guard raised it.
    pub raised_to: Option<i64>,
}

impl GuardReport {
    pub fn error(&self) -> ArchiveError {
        ArchiveError::TtlGuard {
            oldest: self
                .oldest_unarchived
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            seconds_left: self.seconds_left.unwrap_or_default(),
            needed_seconds: self.must_last_seconds,
            next_run: self
                .next_run
                .map_or_else(|| "none: now".to_owned(), |t| t.to_rfc3339()),
            margin_seconds: self.safety_margin_seconds,
        }
    }
}

/// How long a run is expected to take: the setting, or the last successful run's duration
/// (rounded up) when that was longer — a growing backlog makes runs slower than configured,
/// and only the measured time says so.
pub fn expected_run_seconds(setting_seconds: i64, last_run_seconds: Option<f64>) -> i64 {
    let last = last_run_seconds
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(0, |s| s.ceil() as i64);
    setting_seconds.max(last)
}

/// The instant the oldest unarchived event must outlive: the end of the next scheduled run
/// (its firing after `now`, or `now` when the schedule never fires again) plus the margin.
pub fn horizon(
    now: DateTime<Utc>,
    next_run: Option<DateTime<Utc>>,
    expected_run_seconds: i64,
    margin_seconds: i64,
) -> DateTime<Utc> {
    next_run.unwrap_or(now).max(now)
        + TimeDelta::seconds(expected_run_seconds)
        + TimeDelta::seconds(margin_seconds)
}

/// Seconds left before the oldest unarchived event expires, and whether it expires before
/// `horizon`. Pure, so the rule is tested on crafted times.
pub fn assess(
    ttl_seconds: Option<i64>,
    oldest_unarchived: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    horizon: DateTime<Utc>,
) -> (Option<i64>, bool) {
    match (ttl_seconds, oldest_unarchived) {
        (Some(ttl), Some(oldest)) => {
            let expires = oldest.timestamp() + ttl;
            (
                Some(expires - now.timestamp()),
                expires <= horizon.timestamp(),
            )
        }
        _ => (None, false),
    }
}

/// The TTL that keeps the oldest unarchived event until one more safety margin after
/// `horizon`, rounded up to a whole hour so repeated raises do not creep by seconds.
pub fn raised_ttl(oldest: DateTime<Utc>, horizon: DateTime<Utc>, margin_seconds: i64) -> i64 {
    let needed = (horizon - oldest).num_seconds() + margin_seconds;
    (needed + 3599) / 3600 * 3600
}

/// Evaluates the guard against the TTL index of `store` (or, where the server has no TTL
/// indexes — `server_supports_ttl` false — the retention setting), the schedule, and the last
/// run's duration (`last_run_seconds`, from the runs record); with `act`, logs, counts and
/// raises the TTL as configured.
pub async fn check(
    store: &Store,
    server_supports_ttl: bool,
    settings: &Settings,
    metrics: &Metrics,
    oldest_unarchived: Option<DateTime<Utc>>,
    last_run_seconds: Option<f64>,
    act: bool,
) -> Result<GuardReport> {
    let index_ttl = schema::current_ttl(store).await?.flatten();
    let (ttl_seconds, ttl_source) = match index_ttl {
        Some(s) => (Some(s), TtlSource::TtlIndex),
        None => match settings.retention_seconds() {
            Some(s) if !server_supports_ttl => (Some(s), TtlSource::Retention),
            _ => (None, TtlSource::None),
        },
    };
    let margin = settings.archive_safety_margin.num_seconds();
    let now = Utc::now();
    let next_run = settings.archive_schedule.next_after(now);
    let expected = expected_run_seconds(
        settings.archive_expected_run_time.num_seconds(),
        last_run_seconds,
    );
    let must_last_until = horizon(now, next_run, expected, margin);
    let (seconds_left, triggered) = assess(ttl_seconds, oldest_unarchived, now, must_last_until);
    let mut report = GuardReport {
        ttl_seconds,
        ttl_source,
        oldest_unarchived,
        seconds_left,
        next_run,
        expected_run_seconds: expected,
        safety_margin_seconds: margin,
        must_last_until,
        must_last_seconds: (must_last_until - now).num_seconds(),
        triggered,
        raised_to: None,
    };
    if let Some(left) = seconds_left {
        metrics.ttl_seconds_left.set(left);
    }
    if !act || !triggered {
        return Ok(report);
    }
    metrics.ttl_guard_triggered.inc();
    let oldest = oldest_unarchived.unwrap_or(now);
    tracing::error!(
        oldest_unarchived = %oldest.to_rfc3339(),
        seconds_left = seconds_left.unwrap_or_default(),
        must_last_until = %must_last_until.to_rfc3339(),
        next_run = %next_run.map(|t| t.to_rfc3339()).unwrap_or_default(),
        expected_run_seconds = expected,
        safety_margin_seconds = margin,
        ttl_source = ?ttl_source,
        "TTL GUARD: unarchived events would expire from MongoDB before the next scheduled run \
         archives them"
    );
    match ttl_source {
        TtlSource::TtlIndex if settings.archive_raise_ttl => {
            let new_ttl = raised_ttl(oldest, must_last_until, margin);
            if Some(new_ttl) > ttl_seconds {
                schema::set_ttl(store, new_ttl).await?;
                metrics.ttl_raised.inc();
                report.raised_to = Some(new_ttl);
                tracing::error!(
                    from_seconds = ttl_seconds.unwrap_or_default(),
                    to_seconds = new_ttl,
                    "TTL GUARD: raised the TTL index with collMod; lower it again with \
                     `auditlog-ops retention set` once the archive has caught up"
                );
            }
        }
        TtlSource::TtlIndex => tracing::error!(
            "TTL GUARD: AUDIT_ARCHIVE_RAISE_TTL=false, the TTL was not raised: events WILL be lost"
        ),
        TtlSource::Retention => tracing::error!(
            "TTL GUARD: this server has no TTL index; `purge` keeps unarchived events, so none \
             are lost, but the archive is behind the retention period"
        ),
        TtlSource::None => {}
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const HOUR: i64 = 3600;
    const DAY: i64 = 86_400;

    #[test]
    fn an_event_expiring_between_two_daily_runs_triggers_the_guard() {
        // The default daily schedule ran at 02:00; now is 03:00, the next run is tomorrow 02:00.
        let daily = Schedule::parse("0 0 2 * * *").unwrap();
        let now = t("2024-05-31T03:00:00Z");
        let next = daily.next_after(now);
        assert_eq!(next, Some(t("2024-06-01T02:00:00Z")));
        let until = horizon(now, next, expected_run_seconds(HOUR, None), 6 * HOUR);
        assert_eq!(until, t("2024-06-01T09:00:00Z"));

        // TTL 30 days; the oldest unarchived event expires in 12 h: after the 6 h margin from
        // now (the old rule stayed silent), but before tomorrow's run → triggered.
        let oldest = t("2024-05-01T15:00:00Z");
        let (left, hit) = assess(Some(30 * DAY), Some(oldest), now, until);
        assert_eq!(left, Some(12 * HOUR));
        assert!(hit);
        // Expiring during tomorrow's run, or within the margin after it → triggered.
        let (_, hit) = assess(Some(30 * DAY), Some(t("2024-05-02T08:59:59Z")), now, until);
        assert!(hit);
        // Expiring after the next run + 1 h + 6 h → fine.
        let (left, hit) = assess(Some(30 * DAY), Some(t("2024-05-02T09:00:01Z")), now, until);
        assert_eq!(left, Some(30 * HOUR + 1));
        assert!(!hit);
        // Nothing unarchived, or nothing expires → never.
        assert_eq!(assess(Some(DAY), None, now, until), (None, false));
        assert_eq!(
            assess(None, Some(t("2000-01-01T00:00:00Z")), now, until),
            (None, false)
        );
    }

    #[test]
    fn a_long_last_run_widens_the_horizon_and_a_frequent_schedule_narrows_it() {
        let now = t("2024-05-31T03:00:00Z");
        // The last run took 5 h 0 m 0.2 s: that, not the 1 h setting, is expected.
        assert_eq!(expected_run_seconds(HOUR, Some(18_000.2)), 18_001);
        assert_eq!(expected_run_seconds(HOUR, Some(12.0)), HOUR);
        assert_eq!(expected_run_seconds(HOUR, Some(f64::NAN)), HOUR);
        let daily = Schedule::parse("0 0 2 * * *").unwrap();
        let until = horizon(now, daily.next_after(now), 18_001, 6 * HOUR);
        assert_eq!(until, t("2024-06-01T13:00:01Z"));
        // Every 15 minutes: the old "margin from now" rule, plus a quarter hour and a run.
        let often = Schedule::parse("0 */15 * * * *").unwrap();
        let until = horizon(now, often.next_after(now), HOUR, 6 * HOUR);
        assert_eq!(until, t("2024-05-31T10:15:00Z"));
        let (_, hit) = assess(Some(30 * DAY), Some(t("2024-05-01T12:00:00Z")), now, until);
        assert!(
            !hit,
            "9 h left is enough when the next run is 15 minutes away"
        );
        // A schedule that never fires again: only this run counts.
        assert_eq!(
            horizon(now, None, HOUR, 6 * HOUR),
            t("2024-05-31T10:00:00Z")
        );
    }

    #[test]
    fn raised_ttl_keeps_the_event_a_margin_past_the_horizon_in_whole_hours() {
        let oldest = t("2024-05-01T15:00:00Z");
        let until = t("2024-06-01T09:00:00Z");
        let ttl = raised_ttl(oldest, until, 6 * HOUR);
        assert_eq!(ttl % HOUR, 0);
        assert!(oldest.timestamp() + ttl >= until.timestamp() + 6 * HOUR);
        // After the raise, the same check no longer triggers.
        let (_, hit) = assess(Some(ttl), Some(oldest), t("2024-05-31T03:00:00Z"), until);
        assert!(!hit);
    }
}
