//! What alerting needs to know about the archive, read from MongoDB at most once a minute
//! (`AUDIT_ARCHIVE_WATCH_SECS`) and exported with the service's metrics: the age of the oldest
//! event no archived window covers, how long until the TTL index expires it (the headroom), and
//! the archiver's last successful run with its schedule period (from the `archive_runs`
//! document the archiver writes).
//!
//! On MongoDB the oldest event is one index seek. A server without the index's sort (FerretDB)
//! scans and sorts the whole collection for it: 16 s of its CPU at 300,000 events, on both
//! cores, which producers felt as a stall every minute. So a read that was slow spaces out the
//! next ones: they take at most [`SHARE`] of the time, and one line says so when that starts.
//!
//! The service exports these, not only the archiver, because in CronJob mode nobody scrapes the
//! archiver; the service is always there. A read that fails leaves the previous values and
//! counts a store error: stale figures are visible through `auditlog_archive_watch_age_seconds`.

use auditlog_common::store::number;
use std::sync::Arc;
use std::time::Duration;

use auditlog_common::archive_state::{self, runs, RUNS_COLLECTION};
use auditlog_common::schema::{self, fields};
use auditlog_common::store::Store;
use mongodb::bson::{doc, Document};

pub use crate::metrics::ArchiveGauges;

/// The largest share of the time the reads may take: after a read of `d`, the next waits at
/// least `d / SHARE`.
pub const SHARE: f64 = 0.01;

/// What one read found.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveFigures {
    pub oldest_unarchived_age_seconds: f64,
    pub ttl_headroom_seconds: f64,
    pub last_success_unix: f64,
    pub schedule_period_seconds: f64,
}

/// Reads the archive state once.
pub async fn read(
    store: &Store,
    now_ms: i64,
) -> Result<ArchiveFigures, auditlog_common::StoreError> {
    let oldest = archive_state::oldest_unarchived_event(store).await?;
    let age_seconds = oldest
        .as_ref()
        .and_then(|e| e.get_datetime(fields::CREATED_AT).ok())
        .map(|t| ((now_ms - t.timestamp_millis()) as f64 / 1000.0).max(0.0));
    let ttl = schema::current_ttl(store).await?.flatten();
    let runs = store
        .database()
        .collection::<Document>(RUNS_COLLECTION)
        .find_one(doc! { "_id": store.namespace() })
        .await
        .map_err(|source| auditlog_common::StoreError::Command {
            command: "find archive_runs",
            source,
        })?;
    let last_success_unix = runs
        .as_ref()
        .and_then(|r| r.get_datetime(runs::LAST_SUCCESS_AT).ok())
        .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
    let schedule_period_seconds = runs
        .as_ref()
        .and_then(|r| r.get(runs::SCHEDULE_PERIOD_SECONDS))
        .and_then(number)
        .unwrap_or(0.0);
    Ok(ArchiveFigures {
        oldest_unarchived_age_seconds: age_seconds.unwrap_or(0.0),
        ttl_headroom_seconds: headroom(ttl, age_seconds),
        last_success_unix,
        schedule_period_seconds,
    })
}

/// Seconds until an event of `age_seconds` expires under `ttl_seconds`.
fn headroom(ttl_seconds: Option<i64>, age_seconds: Option<f64>) -> f64 {
    match (ttl_seconds, age_seconds) {
        (Some(ttl), Some(age)) => ttl as f64 - age,
        _ => f64::INFINITY,
    }
}

/// Reads the archive state every `every`, or less often when reads are slow ([`SHARE`]),
/// until the task is dropped.
pub fn spawn(
    store: Store,
    gauges: ArchiveGauges,
    metrics: Arc<crate::metrics::Metrics>,
    every: Duration,
) {
    tokio::spawn(async move {
        let mut spaced_out = false;
        loop {
            let started = tokio::time::Instant::now();
            let now_ms = mongodb::bson::DateTime::now().timestamp_millis();
            match read(&store, now_ms).await {
                Ok(f) => {
                    gauges
                        .oldest_unarchived_age
                        .set(f.oldest_unarchived_age_seconds);
                    gauges.ttl_headroom.set(f.ttl_headroom_seconds);
                    gauges.last_success.set(f.last_success_unix);
                    gauges.schedule_period.set(f.schedule_period_seconds);
                    gauges.read_at.set(now_ms as f64 / 1000.0);
                }
                Err(e) => {
                    metrics.store_error("archive_state");
                    tracing::warn!(error = %e, "cannot read the archive state for /metrics; keeping the previous figures");
                }
            }
            let took = started.elapsed();
            let wait = next_wait(every, took);
            if wait > every && !spaced_out {
                tracing::info!(
                    took_ms = took.as_millis() as u64,
                    next_in_s = wait.as_secs(),
                    "reading the archive state for /metrics was slow (a server without the \
                     {{created_at, _id}} index's sort scans the collection for it); it is read \
                     less often, at most 1 % of the time"
                );
                spaced_out = true;
            }
            tokio::time::sleep_until(started + wait).await;
        }
    });
}

/// The time from the start of a read that took `took` to the start of the next.
fn next_wait(every: Duration, took: Duration) -> Duration {
    every.max(took.div_f64(SHARE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_reads_take_at_most_one_percent_of_the_time() {
        let minute = Duration::from_secs(60);
        assert_eq!(next_wait(minute, Duration::from_millis(3)), minute);
        assert_eq!(next_wait(minute, Duration::from_millis(600)), minute);
        assert_eq!(
            next_wait(minute, Duration::from_secs(11)),
            Duration::from_secs(1100)
        );
    }

    #[test]
    fn headroom_is_the_ttl_left_for_the_oldest_unarchived_event() {
        assert_eq!(headroom(Some(86_400), Some(3_600.0)), 82_800.0);
        assert_eq!(
            headroom(Some(3_600), Some(7_200.0)),
            -3_600.0,
            "overdue is negative"
        );
        assert_eq!(
            headroom(None, Some(10.0)),
            f64::INFINITY,
            "no TTL: never expires"
        );
        assert_eq!(
            headroom(Some(60), None),
            f64::INFINITY,
            "nothing unarchived"
        );
    }
}
