//! The events collection as the archiver sees it, and the only module that queries it: the
//! filter of a window, MongoDB's count of a window, the oldest event from an instant, the
//! windows holding unarchived events, the keyset stream of a window's events, and `purge`'s
//! delete of a window.
//!
//! The stream is a keyset read in `(created_at, _id)` order, so a cursor lost mid-window
//! (timeout, failover) resumes after the last row instead of starting over.
//!
//! What is retried is what a cluster does in passing: an error [`is_transient`] classifies so
//! (elections and stepdowns such as NotWritablePrimary, stale routing, shutdowns, a connection
//! reset, no server selectable, the driver's retryable labels) and, for the stream only,
//! CursorNotFound (the server dropped an idle cursor; the keyset resumes it). Anything else —
//! a bad query, no authorization, a corrupt document — is this request's own fault, would fail
//! again, and fails at once. The stream's queries and cursors, and each count and oldest-event
//! query, are retried with [`Backoff`] — waits of 0.5 s, 1 s, 2 s, 2 s, 2 s — giving up on the
//! 6th failure: at most [`MAX_RETRIES`] retries and 7.5 s of waiting per stream or query.

use auditlog_common::store::number;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use auditlog_common::error::{is_transient, server_error_code};
use auditlog_common::retry::Backoff;
use auditlog_common::schema::fields;
use auditlog_common::store::Store;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document, RawDocumentBuf};
use mongodb::{Collection, Cursor};

use crate::error::{ArchiveError, Result};
use crate::window::Window;

/// Retries of a window's stream (queries and lost cursors together) before it fails.
pub const MAX_RETRIES: u32 = 5;
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(500);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);
/// The server no longer has the cursor (idle timeout, or it was killed): the keyset resumes it.
const CURSOR_NOT_FOUND: i32 = 43;

/// Whether a failed query is worth another attempt (see the module docs).
fn query_retryable(e: &mongodb::error::Error) -> bool {
    is_transient(e)
}

/// Whether a cursor that failed is worth resuming after its last row (see the module docs).
fn cursor_resumable(e: &mongodb::error::Error) -> bool {
    is_transient(e) || server_error_code(e) == Some(CURSOR_NOT_FOUND)
}

/// Runs `query` until it succeeds, it fails with an error that is not transient, or the retry
/// budget is spent.
async fn with_retries<T, F, Fut>(operation: &'static str, mut query: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = mongodb::error::Result<T>>,
{
    let mut backoff = Backoff::new(FIRST_RETRY_WAIT, MAX_RETRY_WAIT);
    loop {
        match query().await {
            Ok(v) => return Ok(v),
            Err(e) if query_retryable(&e) && backoff.attempts() < MAX_RETRIES => {
                tracing::warn!(
                    error = %e,
                    attempt = backoff.attempts() + 1,
                    retry_in_ms = backoff.next_delay().as_millis() as u64,
                    "MongoDB {operation} failed; retrying"
                );
                if !backoff.wait().await {
                    return Err(ArchiveError::mongo(operation)(e));
                }
            }
            Err(e) => return Err(ArchiveError::mongo(operation)(e)),
        }
    }
}

/// MongoDB filter for the events of a window.
pub fn window_filter(w: &Window) -> Document {
    doc! { fields::CREATED_AT: {
        "$gte": bson::DateTime::from_chrono(w.start),
        "$lt": bson::DateTime::from_chrono(w.end),
    } }
}

/// The events of `w` after `(created_at, _id)` = `after`, in keyset order's filter.
fn resume_filter(w: &Window, after: &(bson::DateTime, Bson)) -> Document {
    let (ts, id) = after;
    doc! {
        fields::CREATED_AT: { "$gte": *ts, "$lt": bson::DateTime::from_chrono(w.end) },
        "$or": [ { fields::CREATED_AT: { "$gt": *ts } }, { fields::ID: { "$gt": id.clone() } } ],
    }
}

/// The events collection being archived.
#[derive(Debug, Clone)]
pub struct Source {
    events: Collection<Document>,
    name: String,
}

impl Source {
    pub fn new(store: &Store) -> Self {
        Source {
            events: store.events(),
            name: store.namespace(),
        }
    }

    /// `<db>.<collection>`, as window records and `status` name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// MongoDB's count of the window's events.
    pub async fn count(&self, w: &Window) -> Result<u64> {
        let events = &self.events;
        with_retries("count window events", || async move {
            events.count_documents(window_filter(w)).await
        })
        .await
    }

    /// `created_at` of the oldest event at or after `from`.
    async fn first_event_from(&self, from: Option<DateTime<Utc>>) -> Result<Option<DateTime<Utc>>> {
        let filter = match from {
            Some(t) => doc! { fields::CREATED_AT: { "$gte": bson::DateTime::from_chrono(t) } },
            None => doc! { fields::CREATED_AT: { "$exists": true } },
        };
        let events = &self.events;
        let filter = &filter;
        let found: Option<Document> = with_retries("find oldest event", || async move {
            events
                .find_one(filter.clone())
                .sort(doc! { fields::CREATED_AT: 1 })
                .projection(doc! { fields::CREATED_AT: 1, fields::ID: 0 })
                .await
        })
        .await?;
        Ok(found
            .and_then(|d| d.get_datetime(fields::CREATED_AT).ok().copied())
            .map(|d| d.to_chrono()))
    }

    /// Unarchived windows (of `window_seconds`) that hold events and are due by `cutoff`,
    /// oldest first; also returns the oldest unarchived event, due or not. Recorded windows
    /// are skipped in runs, so the number of queries grows with the gaps, not with the
    /// archive's length.
    pub async fn unarchived(
        &self,
        recorded: &BTreeSet<DateTime<Utc>>,
        cutoff: DateTime<Utc>,
        window_seconds: i64,
    ) -> Result<(Vec<Window>, Option<DateTime<Utc>>)> {
        let mut out = vec![];
        let mut oldest = None;
        let mut from = None;
        while let Some(t) = self.first_event_from(from).await? {
            let mut w = Window::containing(t, window_seconds);
            if recorded.contains(&w.start) {
                while recorded.contains(&w.start) {
                    w = w.next();
                }
                from = Some(w.start);
                continue;
            }
            if oldest.is_none() {
                oldest = Some(t);
            }
            if !w.is_due(cutoff) {
                break;
            }
            out.push(w);
            from = Some(w.end);
        }
        Ok((out, oldest))
    }

    /// Documents per cursor batch: `configured`, or fewer when the collection's average
    /// document is large, so that one reply stays near [`CURSOR_REPLY_BYTES`]. Real MongoDB
    /// caps a reply at 16 MiB by itself; FerretDB returns the whole batch, and 4,096 events of
    /// 60 KiB already exceed the 48 MB a wire message may have. Without `collStats` (or with
    /// an empty collection) the configured size stands. Measured once per run, not per window:
    /// the average moves slowly, and a backlog run may archive hundreds of windows.
    pub async fn cursor_batch_size(&self, configured: u32) -> u32 {
        let stats = self
            .events
            .clone_with_type::<Document>()
            .aggregate([doc! { "$collStats": { "storageStats": {} } }])
            .await;
        let avg = match stats {
            Ok(mut cursor) => match cursor.try_next().await {
                Ok(Some(d)) => d
                    .get_document("storageStats")
                    .ok()
                    .and_then(|s| s.get("avgObjSize"))
                    .and_then(number),
                _ => None,
            },
            Err(e) => {
                tracing::debug!(error = %e, "no collection statistics; cursor batches by rows only");
                None
            }
        };
        batch_size_for(configured, avg)
    }

    /// The window's events in `(created_at, _id)` order, `batch_size` per cursor batch.
    pub fn stream(&self, w: &Window, batch_size: u32) -> WindowEvents {
        WindowEvents {
            events: self.events.clone_with_type(),
            window: *w,
            batch_size,
            cursor: None,
            done: false,
            last_key: None,
            rows: 0,
            backoff: Backoff::new(FIRST_RETRY_WAIT, MAX_RETRY_WAIT),
        }
    }

    /// Deletes the window's events (`purge`); returns how many were deleted.
    pub async fn delete_window(&self, w: &Window) -> Result<u64> {
        Ok(self
            .events
            .delete_many(window_filter(w))
            .await
            .map_err(ArchiveError::mongo("delete purged window"))?
            .deleted_count)
    }
}

/// What one cursor reply should hold at most: well under the 16 MiB MongoDB caps a reply at
/// and the 48 MB a wire message may have.
pub const CURSOR_REPLY_BYTES: f64 = 8.0 * 1024.0 * 1024.0;

/// Documents per cursor batch for an average document of `avg_bytes` (twice the average, for
/// windows of larger-than-average events), at most `configured`, at least 1.
fn batch_size_for(configured: u32, avg_bytes: Option<f64>) -> u32 {
    match avg_bytes {
        Some(avg) if avg > 0.0 => {
            let fit = (CURSOR_REPLY_BYTES / (2.0 * avg)).floor().max(1.0);
            configured.min(fit as u32).max(1)
        }
        _ => configured,
    }
}

/// A window's events, read by keyset (see the module docs).
pub struct WindowEvents {
    events: Collection<RawDocumentBuf>,
    window: Window,
    batch_size: u32,
    cursor: Option<Cursor<RawDocumentBuf>>,
    done: bool,
    /// `(created_at, _id)` of the last row returned: where a new cursor starts.
    last_key: Option<(bson::DateTime, Bson)>,
    rows: u64,
    backoff: Backoff,
}

impl WindowEvents {
    /// The next event, or `None` after the last one.
    pub async fn next(&mut self) -> Result<Option<RawDocumentBuf>> {
        while !self.done {
            if self.cursor.is_none() {
                match self.open().await {
                    Ok(c) => self.cursor = Some(c),
                    Err(e) => {
                        let retryable = query_retryable(&e);
                        self.retry(e, retryable, "find window events", "query failed; retrying")
                            .await?;
                        continue;
                    }
                }
            }
            let Some(cursor) = self.cursor.as_mut() else {
                continue;
            };
            match cursor.try_next().await {
                Ok(Some(raw)) => {
                    self.remember(&raw);
                    return Ok(Some(raw));
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    self.cursor = None;
                    let resumable = cursor_resumable(&e);
                    self.retry(
                        e,
                        resumable,
                        "read window events",
                        "cursor lost; resuming after the last archived row",
                    )
                    .await?;
                }
            }
        }
        Ok(None)
    }

    /// Rows returned so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// A cursor from the start of the window, or after the last row returned. (`&mut self`
    /// because a cursor is not `Sync`, so a `&Self` held across an await is not `Send`.)
    async fn open(&mut self) -> mongodb::error::Result<Cursor<RawDocumentBuf>> {
        let filter = match &self.last_key {
            Some(key) => resume_filter(&self.window, key),
            None => window_filter(&self.window),
        };
        self.events
            .find(filter)
            .sort(doc! { fields::CREATED_AT: 1, fields::ID: 1 })
            .batch_size(self.batch_size)
            .await
    }

    /// Waits before the next attempt, or fails with `e` when it is not `retryable` or the
    /// retries are used up.
    async fn retry(
        &mut self,
        e: mongodb::error::Error,
        retryable: bool,
        operation: &'static str,
        message: &'static str,
    ) -> Result<()> {
        if !retryable || self.backoff.attempts() >= MAX_RETRIES {
            return Err(ArchiveError::mongo(operation)(e));
        }
        tracing::warn!(
            window = %self.window.id(),
            error = %e,
            attempt = self.backoff.attempts() + 1,
            after_rows = self.rows,
            retry_in_ms = self.backoff.next_delay().as_millis() as u64,
            "{message}"
        );
        if self.backoff.wait().await {
            Ok(())
        } else {
            Err(ArchiveError::mongo(operation)(e))
        }
    }

    fn remember(&mut self, raw: &RawDocumentBuf) {
        self.rows += 1;
        // A row without a `created_at` date fails to decode, which ends the window before any
        // resumption could use this key.
        if let Ok(ts) = raw.get_datetime(fields::CREATED_AT) {
            let id = raw
                .get(fields::ID)
                .ok()
                .flatten()
                .and_then(|v| Bson::try_from(v).ok())
                .unwrap_or(Bson::Null);
            self.last_key = Some((ts, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_batches_shrink_for_large_documents() {
        assert_eq!(batch_size_for(4096, None), 4096);
        assert_eq!(
            batch_size_for(4096, Some(300.0)),
            4096,
            "small events: rows bound"
        );
        assert_eq!(
            batch_size_for(4096, Some(200.0 * 1024.0)),
            20,
            "200 KiB events: 4 MiB per reply"
        );
        assert_eq!(batch_size_for(4096, Some(64.0 * 1024.0 * 1024.0)), 1);
    }

    #[test]
    fn filters_are_half_open_and_resume_after_the_last_key() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let w = Window::containing(t("2024-05-01T02:00:00Z"), 3600);
        let f = window_filter(&w);
        let range = f.get_document(fields::CREATED_AT).unwrap();
        assert_eq!(range.get_datetime("$gte").unwrap().to_chrono(), w.start);
        assert_eq!(range.get_datetime("$lt").unwrap().to_chrono(), w.end);

        let last = bson::DateTime::from_chrono(t("2024-05-01T02:30:00Z"));
        let f = resume_filter(&w, &(last, Bson::Int32(7)));
        let range = f.get_document(fields::CREATED_AT).unwrap();
        assert_eq!(*range.get_datetime("$gte").unwrap(), last);
        assert_eq!(range.get_datetime("$lt").unwrap().to_chrono(), w.end);
        assert_eq!(f.get_array("$or").unwrap().len(), 2);
    }

    #[test]
    fn lost_connections_are_retried() {
        let reset =
            mongodb::error::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(query_retryable(&reset));
        assert!(cursor_resumable(&reset));
    }

    #[tokio::test]
    async fn a_query_failing_with_an_error_that_is_not_transient_is_not_retried() {
        let mut attempts = 0;
        let r: Result<()> = with_retries("q", || {
            attempts += 1;
            async {
                Err(mongodb::error::Error::custom(
                    "a driver error without a transient kind or label",
                ))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(attempts, 1);
    }

    #[test]
    fn the_retry_budget_is_the_documented_one() {
        let mut b = Backoff::new(FIRST_RETRY_WAIT, MAX_RETRY_WAIT);
        let mut waited = Duration::ZERO;
        while b.attempts() < MAX_RETRIES {
            waited += b.next_wait().unwrap();
        }
        assert_eq!(waited, Duration::from_millis(7500));
    }
}
