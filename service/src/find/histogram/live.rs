//! Counting a MongoDB segment of a histogram: one aggregation where the server can compute the
//! bucket of an event, one projected scan counted here where it cannot.
//!
//! The one-pipeline form is `$match` (find's filter for the segment's span) then `$group` by
//! the bucket's start — `t − (t − first) mod bucket`, `t` the event's `created_at` in epoch
//! milliseconds and `first` the grid's first bucket start (itself on the epoch's grid, so
//! buckets stay epoch-aligned, and `t − first ≥ 0` keeps `$mod` away from negative numbers) —
//! and by the key when the histogram has a breakdown. MongoDB answers it; FerretDB 1.x does not
//! know `$toLong`, `$subtract` or `$mod` in `$group` and refuses it with a command error. On
//! such a refusal the service logs it once and, for the rest of the process, reads the span's
//! events instead — only `created_at` and the key, in batches — and buckets them itself: the
//! same counts from one scan. Not a query per bucket: FerretDB scans its table for every query
//! whatever the range (2.6 s for one bucket of a 100,000-event day, 4.0 s to stream the whole
//! day), and grouping by the raw `created_at` is slower still. A network error or a timeout is
//! not such a refusal: it fails the histogram and the next one tries the pipeline again.

use std::sync::atomic::{AtomicU8, Ordering};

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{Error, ErrorKind};
use mongodb::Collection;

use auditlog_common::error::codes;
use auditlog_common::schema::fields;

use super::buckets::Grid;
use super::tally::HistogramBy;
use super::tally::Tally;
use crate::find::archive::FindError;
use crate::find::query::{FindQuery, Span};

/// Events per batch of the fallback's scan: a few hundred KiB of `created_at` and keys.
const SCAN_BATCH: u32 = 10_000;

/// Which form this process counts with: not known yet, the pipeline, or a scan.
static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const PIPELINE: u8 = 1;
const SCAN: u8 = 2;

/// What counting needs of the request.
pub struct Live<'a> {
    pub events: &'a Collection<Document>,
    pub query: &'a FindQuery,
    pub grid: Grid,
    pub by: Option<HistogramBy>,
    pub max_time: std::time::Duration,
}

impl Live<'_> {
    /// Adds the events of `span` to `tally`.
    pub async fn count(&self, span: Span, tally: &mut Tally) -> Result<(), FindError> {
        if span.is_empty() {
            return Ok(());
        }
        if MODE.load(Ordering::Relaxed) != SCAN {
            match self.pipeline(span).await {
                Ok(counts) => {
                    MODE.store(PIPELINE, Ordering::Relaxed);
                    for (at, key, n) in counts {
                        tally.add(at, key.as_deref(), n);
                    }
                    return Ok(());
                }
                Err(e) if unsupported(&e) => {
                    if MODE.swap(SCAN, Ordering::Relaxed) != SCAN {
                        tracing::info!(
                            error = %e,
                            "histogram: the server cannot compute buckets in one aggregation \
                             ($toLong/$subtract/$mod in $group); counting from a scan of \
                             created_at from now on"
                        );
                    }
                }
                Err(e) => return Err(self.error(e)),
            }
        }
        self.scan(span, tally).await
    }

    fn error(&self, e: Error) -> FindError {
        if auditlog_common::error::server_error_code(&e) == Some(codes::MAX_TIME_EXPIRED) {
            FindError::Timeout {
                ms: crate::find::archive::duration_ms(self.max_time),
            }
        } else {
            FindError::Mongo(e)
        }
    }

    fn key_field(&self) -> Option<String> {
        self.by.map(|b| format!("${}", b.field()))
    }

    /// One aggregation over the whole span: `(bucket start, key, count)`.
    async fn pipeline(&self, span: Span) -> Result<Vec<(i64, Option<String>, u64)>, Error> {
        let t = doc! { "$toLong": format!("${}", fields::CREATED_AT) };
        let bucket = doc! {
            "$subtract": [
                t.clone(),
                { "$mod": [ { "$subtract": [t, self.grid.first_ms] }, self.grid.bucket_ms ] },
            ]
        };
        let id = match self.key_field() {
            Some(k) => Bson::Document(doc! { "b": bucket, "k": k }),
            None => Bson::Document(bucket),
        };
        let pipeline = [
            doc! { "$match": self.query.filter_within(span) },
            doc! { "$group": { "_id": id, "n": { "$sum": 1 } } },
        ];
        let docs: Vec<Document> = self
            .events
            .aggregate(pipeline)
            .max_time(self.max_time)
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                let n = count_of(d.get("n"))?;
                match (self.by, d.get("_id")?) {
                    (Some(_), Bson::Document(id)) => {
                        Some((number(id.get("b"))?, Some(key_text(id.get("k"))), n))
                    }
                    (None, b) => Some((number(Some(b))?, None, n)),
                    _ => None,
                }
            })
            .collect())
    }

    /// The span's events, only `created_at` and the key, bucketed here.
    async fn scan(&self, span: Span, tally: &mut Tally) -> Result<(), FindError> {
        let mut projection = doc! { fields::ID: 0, fields::CREATED_AT: 1 };
        if let Some(by) = self.by {
            projection.insert(by.field(), 1);
        }
        let mut cursor = self
            .events
            .find(self.query.filter_within(span))
            .projection(projection)
            .batch_size(SCAN_BATCH)
            .max_time(self.max_time)
            .await
            .map_err(|e| self.error(e))?;
        while let Some(doc) = cursor.try_next().await.map_err(|e| self.error(e))? {
            // The filter is on `created_at`'s range, so every document has a date there.
            let Ok(at) = doc.get_datetime(fields::CREATED_AT) else {
                continue;
            };
            let key = self.by.map(|b| key_text(doc.get(b.field())));
            tally.add(at.timestamp_millis(), key.as_deref(), 1);
        }
        Ok(())
    }
}

/// Whether the server refused the aggregation as such (an operator or stage it does not
/// implement), not for a passing reason: a command error that is not a time limit, a
/// shutdown, a step-down or an authorization failure.
fn unsupported(e: &Error) -> bool {
    let ErrorKind::Command(c) = e.kind.as_ref() else {
        return false;
    };
    const PASSING: [i32; 12] = [
        codes::MAX_TIME_EXPIRED,
        6,     // HostUnreachable
        7,     // HostNotFound
        13,    // Unauthorized
        18,    // AuthenticationFailed
        89,    // NetworkTimeout
        91,    // ShutdownInProgress
        189,   // PrimarySteppedDown
        262,   // ExceededTimeLimit
        10107, // NotWritablePrimary
        11600, // InterruptedAtShutdown
        13435, // NotPrimaryNoSecondaryOk
    ];
    !PASSING.contains(&c.code) && !e.contains_label("RetryableReadError")
}

fn number(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) if f.is_finite() => Some(*f as i64),
        _ => None,
    }
}

fn count_of(b: Option<&Bson>) -> Option<u64> {
    number(b).and_then(|n| u64::try_from(n).ok())
}

/// A key as the answer names it: events always have a string `type` and `consumer`; anything
/// else a document of another writer holds is shown as its BSON text (missing: empty).
fn key_text(b: Option<&Bson>) -> String {
    match b {
        Some(Bson::String(s)) => s.clone(),
        None | Some(Bson::Null) => String::new(),
        Some(other) => other.to_string(),
    }
}
