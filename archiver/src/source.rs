//! The events collection as the archiver sees it: the filter of a window or of a scope, MongoDB's
//! count of either, the oldest event of a scope, the windows holding unarchived events (for
//! `status`), and `purge`'s delete of a window. With [`crate::stream`] (the keyset stream of a
//! scope, which uses the filters and the retry rules here) the only modules that query it.
//!
//! A scope's filter is one clause per run (an `$or` when there are several); a resumed stream
//! starts its first run after the last row it returned, by keyset on `(created_at, _id)`.
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
use mongodb::Collection;

use crate::error::{ArchiveError, Result};
use crate::plan::{Scope, MAX_RUNS};
use crate::window::{Span, Window};

/// Retries of a stream (queries and lost cursors together), or of a query, before it fails.
pub const MAX_RETRIES: u32 = 5;
pub(crate) const FIRST_RETRY_WAIT: Duration = Duration::from_millis(500);
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);
/// The server no longer has the cursor (idle timeout, or it was killed): the keyset resumes it.
const CURSOR_NOT_FOUND: i32 = 43;

/// Whether a failed query is worth another attempt (see the module docs).
pub(crate) fn query_retryable(e: &mongodb::error::Error) -> bool {
    is_transient(e)
}

/// Whether a cursor that failed is worth resuming after its last row (see the module docs).
pub(crate) fn cursor_resumable(e: &mongodb::error::Error) -> bool {
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

/// MongoDB filter for the events of a window (or of a run: any span).
pub fn window_filter(w: &impl Span) -> Document {
    doc! { fields::CREATED_AT: {
        "$gte": bson::DateTime::from_chrono(w.start()),
        "$lt": bson::DateTime::from_chrono(w.end()),
    } }
}

/// `(created_at, _id)` of an event: where a keyset stream resumes.
pub type Key = (bson::DateTime, Bson);

/// The events of `w` after `(created_at, _id)` = `after`, in keyset order's filter.
fn resume_filter(w: &impl Span, after: &Key) -> Document {
    let (ts, id) = after;
    doc! {
        fields::CREATED_AT: { "$gte": *ts, "$lt": bson::DateTime::from_chrono(w.end()) },
        "$or": [ { fields::CREATED_AT: { "$gt": *ts } }, { fields::ID: { "$gt": id.clone() } } ],
    }
}

/// MongoDB filter for the events of a scope, after `after` when a stream resumes: one clause
/// per run (runs that end before the key are dropped, the one holding it resumes after it).
pub fn scope_filter(scope: &Scope, after: Option<&Key>) -> Document {
    let mut clauses: Vec<Document> = vec![];
    for run in scope.runs() {
        match after {
            Some(key) if run.end <= key.0.to_chrono() => {}
            Some(key) if run.start <= key.0.to_chrono() => clauses.push(resume_filter(run, key)),
            _ => clauses.push(window_filter(run)),
        }
    }
    // Newest first: most events are in the newest run, and a server that scans (FerretDB)
    // tests the clauses in order, stopping at the first that matches.
    clauses.reverse();
    match clauses.len() {
        // Nothing left to read: a range no date falls in.
        0 => doc! { fields::CREATED_AT: { "$lt": bson::DateTime::MIN } },
        1 => clauses.remove(0),
        _ => doc! { "$or": clauses },
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

    /// The collection, read as raw documents (the stream decodes rows itself).
    pub(crate) fn raw_events(&self) -> Collection<RawDocumentBuf> {
        self.events.clone_with_type()
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

    /// MongoDB's count of the scope's events: one query, however many windows and runs.
    pub async fn count_scope(&self, scope: &Scope) -> Result<u64> {
        if scope.is_empty() {
            return Ok(0);
        }
        let events = &self.events;
        let filter = &scope_filter(scope, None);
        with_retries("count events", || async move {
            events.count_documents(filter.clone()).await
        })
        .await
    }

    /// `created_at` of the scope's oldest event. One query for up to [`MAX_RUNS`] runs (more
    /// runs: one per [`MAX_RUNS`], oldest first, until one finds an event).
    pub async fn first_in(&self, scope: &Scope) -> Result<Option<DateTime<Utc>>> {
        for part in scope.split(MAX_RUNS) {
            let filter = &scope_filter(&part, None);
            let events = &self.events;
            let found: Option<Document> = with_retries("find oldest event", || async move {
                events
                    .find_one(filter.clone())
                    .sort(doc! { fields::CREATED_AT: 1 })
                    .projection(doc! { fields::CREATED_AT: 1, fields::ID: 0 })
                    .await
            })
            .await?;
            if let Some(t) = found
                .and_then(|d| d.get_datetime(fields::CREATED_AT).ok().copied())
                .map(|d| d.to_chrono())
            {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// Unarchived windows (of `window_seconds`) that hold events and are due by `cutoff`,
    /// oldest first; also returns the oldest unarchived event, due or not. One query per due
    /// window found (this is `status`'s question; archiving reads the events instead).
    pub async fn unarchived(
        &self,
        recorded: &BTreeSet<DateTime<Utc>>,
        cutoff: DateTime<Utc>,
        window_seconds: i64,
    ) -> Result<(Vec<Window>, Option<DateTime<Utc>>)> {
        let everything = Scope::unarchived(recorded, None, window_seconds);
        let mut out = vec![];
        let mut oldest = None;
        let mut rest = everything;
        while let Some(t) = self.first_in(&rest).await? {
            oldest = oldest.or(Some(t));
            let w = Window::containing(t, window_seconds);
            if !w.is_due(cutoff) {
                break;
            }
            out.push(w);
            rest = rest.from(w.end);
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
    fn a_scope_filter_has_a_clause_per_run_and_resumes_in_the_run_of_the_key() {
        use crate::plan::{Scope, OPEN_START};
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let recorded = [t("2024-05-01T02:00:00Z")].into();
        let scope = Scope::unarchived(&recorded, Some(t("2024-05-01T05:00:00Z")), 3600);
        let f = scope_filter(&scope, None);
        let clauses = f.get_array("$or").unwrap();
        assert_eq!(clauses.len(), 2);
        // Newest run first; the open run is still bounded to dates.
        let newest = clauses[0].as_document().unwrap();
        let range = newest.get_document(fields::CREATED_AT).unwrap();
        assert_eq!(
            range.get_datetime("$gte").unwrap().to_chrono(),
            t("2024-05-01T03:00:00Z")
        );
        let open = clauses[1].as_document().unwrap();
        let range = open.get_document(fields::CREATED_AT).unwrap();
        assert_eq!(range.get_datetime("$gte").unwrap().to_chrono(), OPEN_START);
        assert_eq!(
            range.get_datetime("$lt").unwrap().to_chrono(),
            t("2024-05-01T02:00:00Z")
        );

        // Resumed in the second run: the first is dropped, the second resumes after the key.
        let key = (
            bson::DateTime::from_chrono(t("2024-05-01T03:30:00Z")),
            Bson::Int32(7),
        );
        let f = scope_filter(&scope, Some(&key));
        assert_eq!(f, resume_filter(&scope.runs()[1], &key));
        // Resumed in the first run: both runs remain, the first after the key.
        let key = (
            bson::DateTime::from_chrono(t("2024-05-01T01:00:00Z")),
            Bson::Int32(7),
        );
        let f = scope_filter(&scope, Some(&key));
        let clauses = f.get_array("$or").unwrap();
        assert_eq!(
            clauses[1].as_document().unwrap(),
            &resume_filter(&scope.runs()[0], &key)
        );
        // Past the end: a filter that matches nothing.
        let key = (
            bson::DateTime::from_chrono(t("2024-05-01T06:00:00Z")),
            Bson::Int32(7),
        );
        let f = scope_filter(&scope, Some(&key));
        let range = f.get_document(fields::CREATED_AT).unwrap();
        assert_eq!(*range.get_datetime("$lt").unwrap(), bson::DateTime::MIN);
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
