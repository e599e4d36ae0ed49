//! Where the archiver's state lives in MongoDB, next to the events. The archiver writes it;
//! `auditlog-ops status` and `retention set` read it, so the names and the "oldest event not yet
//! archived" question live here once.

use futures::TryStreamExt;
use mongodb::bson::{doc, DateTime, Document};

use crate::error::StoreError;
use crate::schema::fields as event;
use crate::store::Store;

/// One document per archived window: `_id` is the window start, [`fields::END`] its end.
pub const WINDOWS_COLLECTION: &str = "archive_windows";
/// One document per archived collection naming the archiver that may work (the lease).
pub const LEASE_COLLECTION: &str = "archive_lease";
/// One document per archived collection (`_id` = `<db>.<collection>`) describing the archiver's
/// runs: written by the archiver after each run, read by the service for its archive metrics
/// (which is what alerting scrapes in CronJob mode, where nobody scrapes the archiver).
pub const RUNS_COLLECTION: &str = "archive_runs";

/// Field names of the [`RUNS_COLLECTION`] document.
pub mod runs {
    /// BSON date: the end of the last run that finished without error.
    pub const LAST_SUCCESS_AT: &str = "last_success_at";
    /// Seconds the last successful run took.
    pub const LAST_RUN_SECONDS: &str = "last_run_seconds";
    /// BSON date: when the schedule fires next (absent when it never does).
    pub const NEXT_RUN_AT: &str = "next_run_at";
    /// Seconds between the next two scheduled runs (the schedule's period near now).
    pub const SCHEDULE_PERIOD_SECONDS: &str = "schedule_period_seconds";
    /// The cron expression the archiver runs on.
    pub const SCHEDULE: &str = "schedule";
}

/// Field names of a window record that readers other than the archiver rely on.
pub mod fields {
    /// The window's start (also its `_id`).
    pub const START: &str = "_id";
    /// The window's end (exclusive), a BSON date.
    pub const END: &str = "end";
}

/// The oldest event in MongoDB that no recorded window covers: the first event TTL must not
/// expire. `None` when every event in MongoDB lies in an archived window (or there are none).
///
/// Recorded windows are merged into contiguous ranges, and the search jumps over each range
/// it lands in: one query per gap in the archive, not per window or per event.
pub async fn oldest_unarchived_event(store: &Store) -> Result<Option<Document>, StoreError> {
    let windows: Vec<Document> = store
        .database()
        .collection::<Document>(WINDOWS_COLLECTION)
        .find(doc! {})
        .projection(doc! { fields::START: 1, fields::END: 1 })
        .sort(doc! { fields::START: 1 })
        .await
        .map_err(StoreError::command("find archive_windows"))?
        .try_collect()
        .await
        .map_err(StoreError::command("find archive_windows"))?;
    let ranges = merge_ranges(windows.iter().filter_map(|w| {
        Some((
            w.get_datetime(fields::START).ok()?.to_owned(),
            w.get_datetime(fields::END).ok()?.to_owned(),
        ))
    }));
    let mut from: Option<DateTime> = None;
    loop {
        let filter = match from {
            Some(t) => doc! { event::CREATED_AT: { "$gte": t } },
            None => doc! {},
        };
        let found = store
            .events()
            .find_one(filter)
            .sort(doc! { event::CREATED_AT: 1, event::ID: 1 })
            .projection(
                doc! { event::ID: 1, event::TYPE: 1, event::CONSUMER: 1, event::CREATED_AT: 1 },
            )
            .await
            .map_err(StoreError::command("find oldest event"))?;
        let Some(found) = found else { return Ok(None) };
        let Ok(at) = found.get_datetime(event::CREATED_AT) else {
            // Not an event we wrote (no date): nothing TTL would expire by it either.
            return Ok(None);
        };
        match ranges.iter().find(|(s, e)| s <= at && at < e) {
            Some((_, end)) => from = Some(*end),
            None => return Ok(Some(found)),
        }
    }
}

/// Sorted `[start, end)` ranges merged where they touch or overlap.
fn merge_ranges(windows: impl Iterator<Item = (DateTime, DateTime)>) -> Vec<(DateTime, DateTime)> {
    let mut sorted: Vec<_> = windows.filter(|(s, e)| s < e).collect();
    sorted.sort();
    let mut merged: Vec<(DateTime, DateTime)> = Vec::new();
    for (s, e) in sorted {
        match merged.last_mut() {
            Some((_, last_end)) if s <= *last_end => *last_end = (*last_end).max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime {
        DateTime::from_millis(ms)
    }

    #[test]
    fn adjacent_and_overlapping_windows_merge_into_one_range() {
        let merged = merge_ranges(
            vec![
                (t(20), t(30)),
                (t(0), t(10)),
                (t(10), t(20)),
                (t(40), t(50)),
                (t(45), t(60)),
            ]
            .into_iter(),
        );
        assert_eq!(merged, vec![(t(0), t(30)), (t(40), t(60))]);
    }
}
