//! What a find reads of the archive state in MongoDB: the TTL the seam rule needs, and the
//! recorded windows it reads from the archive — only those, in reading order, a batch at a
//! time, so a page that fills early reads few records.
//!
//! Both are read for every find that may touch the archive, not cached: a window `purge`
//! marked, or a TTL lowered with `auditlog-ops retention set`, must count from the next page
//! on, or that page would look in MongoDB for events no longer there.

use auditlog_common::archive_state::{fields, WINDOWS_COLLECTION};
use auditlog_common::schema;
use auditlog_common::store::Store;
use auditlog_common::StoreError;
use futures::{Stream, TryStreamExt};
use mongodb::bson::{doc, Bson, DateTime, Document};

use super::error::FindError;
use super::plan::{ArchivedFile, ArchivedWindow, SeamRule, MAX_WINDOW_MS};
use crate::find::query::{Order, Span};

/// Field names of a window record beyond those `auditlog_common::archive_state` names.
const FILES: &str = "files";
const PURGED_AT: &str = "purged_at";

/// Records fetched per round trip: a few days of hourly windows.
const BATCH: u32 = 64;

/// The seam rule now: reads the TTL index; `retention_s` is `AUDIT_RETENTION_DAYS` in seconds.
pub async fn seam_rule(
    store: &Store,
    now_ms: i64,
    retention_s: Option<i64>,
    margin_ms: i64,
) -> Result<SeamRule, StoreError> {
    let ttl = schema::current_ttl(store).await?.flatten();
    Ok(SeamRule::new(now_ms, ttl, retention_s, margin_ms))
}

/// The filter of the windows read from the archive that overlap `span`: the seam rule's
/// candidates, checked again one by one with [`SeamRule::reads_archive`].
fn filter(rule: &SeamRule, span: Span) -> Document {
    let mut start = Document::new();
    if let Some(hi) = span.hi {
        start.insert("$lt", DateTime::from_millis(hi));
    }
    let mut filter = Document::new();
    if let Some(lo) = span.lo {
        start.insert(
            "$gt",
            DateTime::from_millis(lo.saturating_sub(MAX_WINDOW_MS)),
        );
        filter.insert(fields::END, doc! { "$gt": DateTime::from_millis(lo) });
    }
    if !start.is_empty() {
        filter.insert(fields::START, start);
    }
    let purged = doc! { PURGED_AT: { "$exists": true } };
    match rule.horizon_ms {
        Some(h) => filter.insert(
            "$or",
            vec![
                Bson::Document(doc! { fields::START: { "$lt": DateTime::from_millis(h) } }),
                Bson::Document(purged),
            ],
        ),
        None => filter.insert(PURGED_AT, doc! { "$exists": true }),
    };
    filter
}

/// The windows read from the archive that overlap `span`, sorted by start in `order`.
pub async fn archive_windows(
    store: &Store,
    rule: SeamRule,
    span: Span,
    order: Order,
) -> Result<impl Stream<Item = Result<ArchivedWindow, FindError>>, FindError> {
    let dir = match order {
        Order::Asc => 1,
        Order::Desc => -1,
    };
    let cursor = store
        .database()
        .collection::<Document>(WINDOWS_COLLECTION)
        .find(filter(&rule, span))
        .sort(doc! { fields::START: dir })
        .projection(doc! {
            fields::END: 1, PURGED_AT: 1, "files.path": 1, "files.bytes": 1,
        })
        .batch_size(BATCH)
        .await
        .map_err(FindError::state("find archive_windows"))?;
    Ok(cursor
        .map_err(FindError::state("find archive_windows"))
        .and_then(|d| async move { parse(&d) })
        .try_filter(move |w| std::future::ready(rule.reads_archive(w))))
}

/// A record as the archiver writes it (`archiver/src/state.rs`). A record that does not parse
/// is an error, not a window to skip: skipping it would send its range to MongoDB, which may
/// no longer hold it.
fn parse(d: &Document) -> Result<ArchivedWindow, FindError> {
    let start = d.get_datetime(fields::START).ok().copied();
    let start_text = start.map_or_else(|| "?".to_owned(), |s| s.to_string());
    let bad = |why: &str| FindError::BadRecord {
        start: start_text.clone(),
        why: why.to_owned(),
    };
    let start_ms = start.ok_or_else(|| bad("no start"))?.timestamp_millis();
    let end_ms = d
        .get_datetime(fields::END)
        .map_err(|_| bad("no end"))?
        .timestamp_millis();
    let files = d
        .get_array(FILES)
        .map_err(|_| bad("no files"))?
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = f
                .as_document()
                .ok_or_else(|| bad("a file is not a document"))?;
            let path = f.get_str("path").map_err(|_| bad("a file has no path"))?;
            let bytes = f
                .get("bytes")
                .and_then(auditlog_common::store::number)
                .filter(|b| *b >= 0.0)
                .ok_or_else(|| bad("a file has no size"))?;
            Ok(ArchivedFile::new(path.to_owned(), bytes as u64, i))
        })
        .collect::<Result<Vec<_>, FindError>>()?;
    Ok(ArchivedWindow {
        start_ms,
        end_ms,
        purged: d.contains_key(PURGED_AT),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_asks_for_candidates_of_the_rule_overlapping_the_range() {
        let rule = SeamRule {
            horizon_ms: Some(5_000_000_000),
        };
        let f = filter(&rule, Span::new(Some(200_000_000), Some(300_000_000)));
        assert_eq!(
            f,
            doc! {
                "end": { "$gt": DateTime::from_millis(200_000_000) },
                "_id": {
                    "$lt": DateTime::from_millis(300_000_000),
                    "$gt": DateTime::from_millis(200_000_000 - MAX_WINDOW_MS),
                },
                "$or": [
                    { "_id": { "$lt": DateTime::from_millis(5_000_000_000) } },
                    { "purged_at": { "$exists": true } },
                ],
            }
        );
        let f = filter(&SeamRule { horizon_ms: None }, Span::default());
        assert_eq!(f, doc! { "purged_at": { "$exists": true } });
    }

    #[test]
    fn records_parse_as_the_archiver_writes_them_and_malformed_ones_are_errors() {
        let d = doc! {
            "_id": DateTime::from_millis(1_714_528_800_000),
            "end": DateTime::from_millis(1_714_532_400_000),
            "files": [
                { "path": "dt=2024-05-01/hour=02/part-20240501T020000Z-0000.parquet", "bytes": 1234_i64 },
            ],
            "purged_at": DateTime::from_millis(1),
        };
        let w = parse(&d).unwrap();
        assert_eq!(w.start_ms, 1_714_528_800_000);
        assert!(w.purged);
        assert_eq!(w.files[0].bytes, 1234);
        assert_eq!(w.files[0].hour_ms, Some(1_714_528_800_000));
        let mut no_files = d.clone();
        no_files.remove("files");
        assert!(matches!(parse(&no_files), Err(FindError::BadRecord { .. })));
    }
}
