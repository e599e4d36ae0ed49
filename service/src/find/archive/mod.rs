//! `find` over both tiers: events come from MongoDB where it still holds every event of a
//! time range, and from the Parquet archive `auditlog-archiver` wrote where it may not — each
//! event once, in the same order, under the same keyset cursor, whichever tier it lives in.
//!
//! - [`plan`]: the seam rule (which recorded windows are read from the archive) and the cut
//!   of a range into segments, with partition pruning. Pure.
//! - [`records`]: the archive state a find reads from MongoDB: the TTL and the windows.
//! - [`parquet_read`]: one archive segment read for a page: row groups pruned by statistics
//!   and bloom filters, filters decoded before the payload.
//! - [`merge`]: the page assembled from the segments, checked, and its `next_cursor`.
//!
//! Without `AUDIT_ARCHIVE_URL` a find is one MongoDB query over its range, as it always was.
//! With it, every find reads the TTL index and the archive windows overlapping its range (in
//! page order, lazily), then reads segment after segment until the page is full. The whole
//! find is bounded by `AUDIT_FIND_TIMEOUT_MS`. A store error while reading the archive fails
//! the page (503 with `Retry-After`): a page is never presented as complete with a part missing.

pub mod error;
pub mod merge;
pub mod parquet_read;
pub mod plan;
pub mod records;

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::{Duration, Instant};

use auditlog_common::archive_store::{self, Access, ArchiveStoreError};
use auditlog_common::error::{codes, server_error_code};
use auditlog_common::store::Store;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{Stream, TryStreamExt};
use mongodb::bson::Document;
use mongodb::Collection;

use crate::config::Config;
use crate::find::query::{find_in, FindQuery, Order, Span, Tier};
use crate::metrics::ArchiveFindMetrics;
use merge::Page;
use parquet_read::{ArchiveReader, BytesRead, ReadStats};
use plan::{Segment, SegmentPlanner};

pub use error::FindError;

/// The archive, opened for reading, and how the seam is placed.
#[derive(Debug, Clone)]
pub struct ArchiveTier {
    pub(crate) reader: ArchiveReader,
    /// `AUDIT_RETENTION_DAYS` in seconds: where the server has no TTL, `purge`'s horizon.
    pub(crate) retention_s: Option<i64>,
    /// `AUDIT_ARCHIVE_FIND_MARGIN_SECS` in ms.
    pub(crate) margin_ms: i64,
}

impl ArchiveTier {
    /// Opens the archive `AUDIT_ARCHIVE_URL` names, if it names one; logs once which it is.
    pub fn from_config(config: &Config) -> Result<Option<ArchiveTier>, ArchiveStoreError> {
        let Some(url) = &config.archive_url else {
            tracing::info!(
                "AUDIT_ARCHIVE_URL is not set: find reads MongoDB only, so events TTL or \
                 `auditlog-archiver purge` removed from it are not found"
            );
            return Ok(None);
        };
        let opened = archive_store::open(
            url,
            &config.archive_store,
            Access::Read {
                timeout: Duration::from_millis(config.find_timeout_ms),
            },
        )?;
        tracing::info!(
            archive = %url,
            margin_secs = config.archive_find_margin_secs,
            "find reads archived windows from the archive once TTL or purge may remove them \
             from MongoDB"
        );
        Ok(Some(ArchiveTier {
            reader: ArchiveReader::new(
                opened.store,
                &config.mongo.db_name,
                &config.mongo.collection,
            ),
            retention_s: (config.retention_days > 0)
                .then(|| i64::from(config.retention_days) * 86_400),
            margin_ms: i64::try_from(config.archive_find_margin_secs)
                .unwrap_or(i64::MAX / 2_000)
                .saturating_mul(1000),
        }))
    }
}

/// What a find needs beside the query.
pub struct Finder<'a> {
    pub store: &'a Store,
    pub events: &'a Collection<Document>,
    pub archive: Option<&'a ArchiveTier>,
    pub metrics: &'a ArchiveFindMetrics,
    pub max_time: Duration,
}

impl Finder<'_> {
    /// One page. `complete_until` is now minus the service's visibility lag.
    pub async fn find(
        &self,
        query: &FindQuery,
        complete_until: DateTime<Utc>,
    ) -> Result<crate::find::query::FindResponse, FindError> {
        let ms = duration_ms(self.max_time);
        let stop = query.stop(complete_until.timestamp_millis());
        let mut page = Page::new(query);
        let mut run = Run::default();
        let read = self.read(query, query.span(stop), &mut page, &mut run);
        let result = match tokio::time::timeout(self.max_time, read).await {
            Ok(r) => r,
            Err(_) => Err(FindError::Timeout { ms }),
        };
        if run.archive_segments > 0 {
            record(self.metrics, &run, &result);
        }
        result?;
        Ok(page.finish(
            stop,
            complete_until.to_rfc3339_opts(SecondsFormat::Millis, true),
        ))
    }

    async fn read(
        &self,
        query: &FindQuery,
        span: Span,
        page: &mut Page<'_>,
        run: &mut Run,
    ) -> Result<(), FindError> {
        let mut segments = Segments::open(self.store, self.archive, span, query.order).await?;
        while let Some(segment) = segments.next().await? {
            self.read_segment(&segment, query, page, run).await?;
            if page.is_full() {
                break;
            }
        }
        Ok(())
    }

    async fn read_segment(
        &self,
        segment: &Segment,
        query: &FindQuery,
        page: &mut Page<'_>,
        run: &mut Run,
    ) -> Result<(), FindError> {
        page.reading(segment.tier);
        match segment.tier {
            Tier::Mongodb => {
                let docs = find_in(
                    self.events,
                    query,
                    segment.span,
                    page.remaining(),
                    self.max_time,
                )
                .await
                .map_err(|e| {
                    if server_error_code(&e) == Some(codes::MAX_TIME_EXPIRED) {
                        FindError::Timeout {
                            ms: duration_ms(self.max_time),
                        }
                    } else {
                        FindError::Mongo(e)
                    }
                })?;
                for d in &docs {
                    page.push_document(d)?;
                }
                Ok(())
            }
            Tier::Archive => {
                let Some(archive) = self.archive else {
                    return Ok(());
                };
                run.archive_segments += 1;
                let started = Instant::now();
                let read = archive
                    .reader
                    .read_segment(segment, query, page, &mut run.stats, &run.bytes)
                    .await;
                run.archive_time += started.elapsed();
                read
            }
        }
    }
}

/// The segments of a range in read order — all MongoDB without an archive, else cut by the
/// seam rule over the window records, which are read lazily as segments are taken. Find and
/// the histogram walk a range the same way through this.
pub(crate) struct Segments<'a> {
    windows: Option<WindowStream<'a>>,
    planner: SegmentPlanner,
    ready: VecDeque<Segment>,
}

type WindowStream<'a> =
    Pin<Box<dyn Stream<Item = Result<plan::ArchivedWindow, FindError>> + Send + 'a>>;

impl<'a> Segments<'a> {
    pub(crate) async fn open(
        store: &'a Store,
        archive: Option<&ArchiveTier>,
        span: Span,
        order: Order,
    ) -> Result<Segments<'a>, FindError> {
        let planner = SegmentPlanner::new(span, order);
        let Some(archive) = archive else {
            return Ok(Segments {
                windows: None,
                planner,
                ready: VecDeque::from([mongodb_segment(span)]),
            });
        };
        let now_ms = Utc::now().timestamp_millis();
        let rule = records::seam_rule(store, now_ms, archive.retention_s, archive.margin_ms)
            .await
            .map_err(FindError::State)?;
        let windows = records::archive_windows(store, rule, span, order).await?;
        Ok(Segments {
            windows: Some(Box::pin(windows)),
            planner,
            ready: VecDeque::new(),
        })
    }

    /// The next segment, `None` after the last.
    pub(crate) async fn next(&mut self) -> Result<Option<Segment>, FindError> {
        loop {
            if let Some(segment) = self.ready.pop_front() {
                return Ok(Some(segment));
            }
            let Some(windows) = &mut self.windows else {
                return Ok(None);
            };
            match windows.try_next().await? {
                Some(w) => self.ready.extend(self.planner.push(&w)),
                None => {
                    self.ready.extend(self.planner.finish());
                    self.windows = None;
                }
            }
        }
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn mongodb_segment(span: Span) -> Segment {
    Segment {
        tier: Tier::Mongodb,
        span,
        files: vec![],
        pruned_by_partition: 0,
    }
}

/// What one find did in the archive, for the metrics.
#[derive(Debug, Default)]
pub struct Run {
    pub archive_segments: u64,
    pub stats: ReadStats,
    pub bytes: BytesRead,
    pub archive_time: Duration,
}

/// Counts one find that read the archive in its metrics.
fn record<T>(m: &ArchiveFindMetrics, run: &Run, result: &Result<T, FindError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(FindError::ArchiveUnavailable { .. } | FindError::Mongo(_) | FindError::State(_)) => {
            "unavailable"
        }
        Err(FindError::Timeout { .. }) => "timeout",
        Err(_) => "error",
    };
    m.queries.with_label_values(&[outcome]).inc();
    let s = &run.stats;
    for (label, n) in [
        ("read", s.files_read),
        ("pruned_partition", s.files_pruned_partition),
        ("pruned_statistics", s.files_pruned_statistics),
        ("pruned_bloom", s.files_pruned_bloom),
    ] {
        m.files.with_label_values(&[label]).inc_by(n);
    }
    for (label, n) in [
        ("read", s.row_groups_read),
        ("pruned_statistics", s.row_groups_pruned_statistics),
        ("pruned_bloom", s.row_groups_pruned_bloom),
    ] {
        m.row_groups.with_label_values(&[label]).inc_by(n);
    }
    for (label, n) in [
        ("metadata", &run.bytes.metadata),
        ("bloom", &run.bytes.bloom),
        ("data", &run.bytes.data),
    ] {
        m.bytes
            .with_label_values(&[label])
            .inc_by(n.load(std::sync::atomic::Ordering::Relaxed));
    }
    m.latency.observe(run.archive_time.as_secs_f64());
}
