//! The TTL guard (DESIGN.md §6): no event may expire unarchived. The archiver knows when the
//! oldest unarchived event expires — from the TTL index's `expireAfterSeconds`, or, where the
//! server has no TTL (FerretDB), from `AUDIT_RETENTION_DAYS`, the horizon `purge` works to.
//! When that moment is within `AUDIT_ARCHIVE_SAFETY_MARGIN`, it logs an error, counts it in a
//! metric, makes `once` exit non-zero, and — unless `AUDIT_ARCHIVE_RAISE_TTL=false` — raises the
//! TTL with `collMod` so the events stay until they are archived.

use auditlog_common::schema;
use auditlog_common::store::Store;
use chrono::{DateTime, Utc};
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
    pub safety_margin_seconds: i64,
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
            margin_seconds: self.safety_margin_seconds,
        }
    }
}

/// Seconds left before the oldest unarchived event expires, and whether that is within the
/// margin. Pure, so the rule is tested on crafted times.
pub fn assess(
    ttl_seconds: Option<i64>,
    oldest_unarchived: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    margin_seconds: i64,
) -> (Option<i64>, bool) {
    match (ttl_seconds, oldest_unarchived) {
        (Some(ttl), Some(oldest)) => {
            let left = (oldest.timestamp() + ttl) - now.timestamp();
            (Some(left), left <= margin_seconds)
        }
        _ => (None, false),
    }
}

/// The TTL that keeps the oldest unarchived event for two more safety margins, rounded up to
/// a whole hour so repeated raises do not creep by seconds.
pub fn raised_ttl(oldest: DateTime<Utc>, now: DateTime<Utc>, margin_seconds: i64) -> i64 {
    let needed = (now - oldest).num_seconds() + 2 * margin_seconds;
    (needed + 3599) / 3600 * 3600
}

/// Evaluates the guard against the TTL index of `store` (or, where the server has no TTL
/// indexes — `server_supports_ttl` false — the retention setting); with `act`, logs, counts
/// and raises the TTL as configured.
pub async fn check(
    store: &Store,
    server_supports_ttl: bool,
    settings: &Settings,
    metrics: &Metrics,
    oldest_unarchived: Option<DateTime<Utc>>,
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
    let (seconds_left, triggered) = assess(ttl_seconds, oldest_unarchived, now, margin);
    let mut report = GuardReport {
        ttl_seconds,
        ttl_source,
        oldest_unarchived,
        seconds_left,
        safety_margin_seconds: margin,
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
        safety_margin_seconds = margin,
        ttl_source = ?ttl_source,
        "TTL GUARD: unarchived events are about to expire from MongoDB before they are archived"
    );
    match ttl_source {
        TtlSource::TtlIndex if settings.archive_raise_ttl => {
            let new_ttl = raised_ttl(oldest, now, margin);
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

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn triggers_only_within_the_margin() {
        let now = t("2024-05-31T00:00:00Z");
        let day = 86_400;
        // Oldest unarchived event 29 days old, TTL 30 days: 1 day left, margin 6 h → fine.
        let (left, hit) = assess(
            Some(30 * day),
            Some(t("2024-05-02T00:00:00Z")),
            now,
            6 * 3600,
        );
        assert_eq!(left, Some(day));
        assert!(!hit);
        // 5 hours left → triggered.
        let (left, hit) = assess(
            Some(30 * day),
            Some(t("2024-05-01T05:00:00Z")),
            now,
            6 * 3600,
        );
        assert_eq!(left, Some(5 * 3600));
        assert!(hit);
        // Nothing unarchived, or nothing expires → never.
        assert_eq!(assess(Some(day), None, now, 3600), (None, false));
        assert_eq!(
            assess(None, Some(t("2000-01-01T00:00:00Z")), now, 3600),
            (None, false)
        );
    }

    #[test]
    fn raised_ttl_covers_two_margins_in_whole_hours() {
        let now = t("2024-05-31T00:00:00Z");
        let ttl = raised_ttl(t("2024-05-01T05:00:00Z"), now, 6 * 3600);
        assert_eq!(ttl % 3600, 0);
        assert!(ttl >= (now - t("2024-05-01T05:00:00Z")).num_seconds() + 12 * 3600);
    }
}
