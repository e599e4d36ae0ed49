//! `GET /v1/histogram`: how many events fall in each time bucket of a range, for the explorer's
//! chart — optionally broken down by `type` or `consumer`, the largest `top` kept and the rest
//! summed as `other`.
//!
//! A histogram counts exactly what find would return for the same filters and range with
//! `include_incomplete=true`: the same filter ([`FindQuery::filter_within`]), the same key
//! scope, and the same cut of the range into MongoDB and archive segments (the seam rule of
//! [`crate::find::archive::plan`]), so the sum of its buckets is the number of events find
//! pages through. It reports `complete_until` as find does, so a chart can mark the tail that
//! may still grow.
//!
//! - this module: the request and the answer, and the count across the segments, bounded by
//!   `AUDIT_FIND_TIMEOUT_MS` like a find;
//! - [`buckets`]: the bucket length (`auto` or `<n><unit>`) and the grid over the range. Pure;
//! - [`live`]: the counts of a MongoDB segment (one aggregation, or one projected scan on
//!   servers that cannot compute the bucket, FerretDB);
//! - [`archive`]: the counts of an archive segment, from Parquet footers where they suffice;
//! - [`tally`]: the counts as they are gathered, and the series and buckets of the answer.

pub mod archive;
pub mod buckets;
pub mod live;
pub mod tally;

use std::time::Duration;

use auditlog_common::store::Store;
use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson::Document;
use mongodb::Collection;
use poem_openapi::Object;

use crate::error::ApiError;
use crate::event::format_created_at;
use crate::find::archive::{duration_ms, ArchiveTier, FindError, Segments};
use crate::find::query::{parse_datetime, FindQuery, Order, Span, Tier};
use crate::metrics::HistogramMetrics;
use archive::ArchiveRun;
use buckets::{BucketSpec, Grid};
use live::Live;
pub use tally::{HistogramBucket, HistogramBy, Tally};

/// The range when `created_from` is not given: the day before `created_to`.
const DEFAULT_RANGE_MS: i64 = 24 * 3_600_000;
/// Series kept when `by` is given and `top` is not.
pub const DEFAULT_TOP: u32 = 10;
/// Most series `top` may keep.
pub const MAX_TOP: u32 = 50;

/// The query parameters of a histogram, as given.
#[derive(Debug, Clone, Default)]
pub struct HistogramRequest {
    pub kind: Option<String>,
    pub consumer: Option<String>,
    pub created_from: Option<String>,
    pub created_to: Option<String>,
    pub bucket: Option<String>,
    pub by: Option<String>,
    pub top: Option<u32>,
}

/// A validated histogram.
#[derive(Debug, Clone)]
pub struct HistogramQuery {
    /// The filters and range, as the find that returns the counted events (ascending, no
    /// cursor, `include_incomplete`).
    pub find: FindQuery,
    pub from_ms: i64,
    pub to_ms: i64,
    pub grid: Grid,
    pub by: Option<HistogramBy>,
    pub top: usize,
}

impl HistogramQuery {
    /// Validates a request; `now` is `created_to`'s default.
    pub fn from_request(
        req: HistogramRequest,
        now: DateTime<Utc>,
    ) -> Result<HistogramQuery, ApiError> {
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let to = match nonempty(req.created_to) {
            Some(s) => parse_datetime("created_to", &s)?,
            None => now,
        };
        let to_ms = to.timestamp_millis();
        let from_ms = match nonempty(req.created_from) {
            Some(s) => parse_datetime("created_from", &s)?.timestamp_millis(),
            None => to_ms.saturating_sub(DEFAULT_RANGE_MS),
        };
        let spec = BucketSpec::parse(req.bucket.as_deref())?;
        let grid = Grid::new(spec, from_ms, to_ms)?;
        // Every bucket start must be a date the answer can write.
        for ms in [grid.first_ms, grid.start(grid.len.saturating_sub(1))] {
            if DateTime::from_timestamp_millis(ms).is_none() {
                return Err(ApiError::BadQuery(
                    "the buckets of this range and `bucket` lie outside the dates an answer \
                     can carry"
                        .into(),
                ));
            }
        }
        let by = req
            .by
            .as_deref()
            .map(HistogramBy::parse)
            .transpose()?
            .flatten();
        let top = req.top.unwrap_or(DEFAULT_TOP);
        if !(1..=MAX_TOP).contains(&top) {
            return Err(ApiError::BadQuery(format!(
                "`top` must be between 1 and {MAX_TOP}, got {top}"
            )));
        }
        let at = |ms: i64| DateTime::from_timestamp_millis(ms);
        Ok(HistogramQuery {
            find: FindQuery {
                kind: nonempty(req.kind),
                consumer: nonempty(req.consumer),
                consumers_within: None,
                created_from: at(from_ms),
                created_to: at(to_ms),
                limit: 0,
                order: Order::Asc,
                after: None,
                include_incomplete: true,
            },
            from_ms,
            to_ms,
            grid,
            by,
            top: top as usize,
        })
    }

    fn span(&self) -> Span {
        Span::new(Some(self.from_ms), Some(self.to_ms))
    }
}

/// Event counts over time buckets.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "HistogramResponse")]
pub struct HistogramResponse {
    /// The bucket length, e.g. `30s`, `5m`, `1h`, `1d` (what `auto` chose, or the one asked, in
    /// its shortest spelling).
    pub bucket: String,
    pub bucket_ms: u64,
    /// The range counted, inclusive (RFC 3339, UTC, milliseconds).
    pub created_from: String,
    /// The range counted, exclusive.
    pub created_to: String,
    // `by`, the breakdown asked for, if any. No doc comment on purpose: poem-openapi would wrap
    // the enum's `$ref` in an `allOf` to carry it, which openapi-python-client cannot read
    // ("Cannot take allOf a non-object") and then drops the whole answer from its client.
    #[oai(skip_serializing_if_is_none)]
    pub by: Option<HistogramBy>,
    /// Events in the range: the sum of every bucket's `count`.
    pub total: u64,
    /// With `by`: the kept keys, largest total first (ties by key); empty without `by`.
    pub series: Vec<String>,
    /// Every bucket of the range, oldest first, empty ones included.
    pub buckets: Vec<HistogramBucket>,
    /// Every event created before this instant that will ever be stored is counted already;
    /// the buckets after it may still grow.
    pub complete_until: String,
    /// The tiers read, in the order read (as find's `tiers`).
    pub tiers: Vec<Tier>,
}

/// What a histogram needs beside the query.
pub struct Histogrammer<'a> {
    pub store: &'a Store,
    pub events: &'a Collection<Document>,
    pub archive: Option<&'a ArchiveTier>,
    pub metrics: &'a HistogramMetrics,
    pub max_time: Duration,
}

impl Histogrammer<'_> {
    /// The histogram, within `AUDIT_FIND_TIMEOUT_MS`.
    pub async fn histogram(
        &self,
        q: &HistogramQuery,
        complete_until: DateTime<Utc>,
    ) -> Result<HistogramResponse, FindError> {
        let mut tally = Tally::new(q.grid, q.by);
        let mut tiers = vec![];
        let mut run = ArchiveRun::default();
        let counted = tokio::time::timeout(
            self.max_time,
            self.count(q, &mut tally, &mut tiers, &mut run),
        )
        .await;
        run.record(self.metrics);
        match counted {
            Ok(r) => r?,
            Err(_) => {
                return Err(FindError::Timeout {
                    ms: duration_ms(self.max_time),
                })
            }
        }
        let fmt = |ms| format_created_at(mongodb::bson::DateTime::from_millis(ms));
        let total = tally.total();
        let (series, buckets) = tally.finish(q.top);
        Ok(HistogramResponse {
            bucket: buckets::label(q.grid.bucket_ms),
            bucket_ms: u64::try_from(q.grid.bucket_ms).unwrap_or_default(),
            created_from: fmt(q.from_ms),
            created_to: fmt(q.to_ms),
            by: q.by,
            total,
            series,
            buckets,
            complete_until: complete_until.to_rfc3339_opts(SecondsFormat::Millis, true),
            tiers,
        })
    }

    /// Counts every segment of the range, as find cuts it (ascending).
    async fn count(
        &self,
        q: &HistogramQuery,
        tally: &mut Tally,
        tiers: &mut Vec<Tier>,
        run: &mut ArchiveRun,
    ) -> Result<(), FindError> {
        let live = Live {
            events: self.events,
            query: &q.find,
            grid: q.grid,
            by: q.by,
            max_time: self.max_time,
        };
        let mut segments = Segments::open(self.store, self.archive, q.span(), Order::Asc).await?;
        while let Some(segment) = segments.next().await? {
            if !tiers.contains(&segment.tier) {
                tiers.push(segment.tier);
            }
            match (segment.tier, self.archive) {
                (Tier::Archive, Some(archive)) => {
                    run.count(archive, &segment, &q.find, q.grid, q.by, tally)
                        .await?
                }
                _ => live.count(segment.span, tally).await?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-06T10:00:00Z.
    const T: i64 = 1_796_551_200_000;
    const H: i64 = 3_600_000;

    fn request(pairs: &[(&str, &str)]) -> HistogramRequest {
        let mut r = HistogramRequest::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "type" => r.kind = v,
                "consumer" => r.consumer = v,
                "created_from" => r.created_from = v,
                "created_to" => r.created_to = v,
                "bucket" => r.bucket = v,
                "by" => r.by = v,
                "top" => r.top = v.and_then(|v| v.parse().ok()),
                _ => panic!("{k}"),
            }
        }
        r
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(T + 30 * 60_000 + 123).unwrap()
    }

    #[test]
    fn the_range_defaults_to_the_day_before_now_and_must_not_be_empty() {
        let q = HistogramQuery::from_request(request(&[]), now()).unwrap();
        assert_eq!(q.to_ms, T + 30 * 60_000 + 123);
        assert_eq!(q.from_ms, q.to_ms - 24 * H);
        assert_eq!(q.grid.bucket_ms, 30 * 60_000, "auto: 30 min over a day");
        assert!(q.find.include_incomplete && q.find.after.is_none());
        let q = HistogramQuery::from_request(
            request(&[("created_to", "2026-12-06T10:00:00Z"), ("bucket", "1h")]),
            now(),
        )
        .unwrap();
        assert_eq!((q.from_ms, q.to_ms, q.grid.len), (T - 24 * H, T, 24));
        for bad in [
            vec![
                ("created_from", "2026-12-06T10:00:00Z"),
                ("created_to", "2026-12-06T10:00:00Z"),
            ],
            vec![("created_from", "2026-12-07")],
            vec![("created_from", "soon")],
            vec![("bucket", "1w")],
            vec![("bucket", "1s"), ("created_from", "2026-12-01")],
            vec![("by", "payload")],
            vec![("by", "type"), ("top", "0")],
            vec![("top", "51")],
        ] {
            let err = HistogramQuery::from_request(request(&bad), now()).unwrap_err();
            assert_eq!(err.code(), "bad_query", "{bad:?}: {err}");
        }
        let q = HistogramQuery::from_request(request(&[("by", "Consumer"), ("top", "50")]), now())
            .unwrap();
        assert_eq!((q.by, q.top), (Some(HistogramBy::Consumer), 50));
    }
}
