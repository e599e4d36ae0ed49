//! Counting an archive segment of a histogram from its Parquet files: the counting half of
//! [`crate::find::archive::parquet_read`] (row groups counted from their footers where the
//! statistics settle it, else `created_at` and the filter and breakdown columns decoded), fed
//! into the histogram's [`Tally`], and what it did kept for the metrics and the debug log.

use super::buckets::Grid;
use super::tally::{HistogramBy, Tally};
use crate::find::archive::parquet_read::{BytesRead, CountBy, CountStats};
use crate::find::archive::plan::Segment;
use crate::find::archive::{ArchiveTier, FindError};
use crate::find::query::FindQuery;
use crate::metrics::HistogramMetrics;

/// What one histogram did in the archive.
#[derive(Debug, Default)]
pub struct ArchiveRun {
    pub segments: u64,
    pub stats: CountStats,
    pub bytes: BytesRead,
}

impl ArchiveRun {
    /// Adds the segment's matching events to `tally`.
    pub async fn count(
        &mut self,
        archive: &ArchiveTier,
        segment: &Segment,
        query: &FindQuery,
        grid: Grid,
        by: Option<HistogramBy>,
        tally: &mut Tally,
    ) -> Result<(), FindError> {
        self.segments += 1;
        let by = by.map(|b| match b {
            HistogramBy::Type => CountBy::Type,
            HistogramBy::Consumer => CountBy::Consumer,
        });
        archive
            .reader
            .count_segment(
                segment,
                query,
                grid.bucket_ms,
                by,
                &mut self.stats,
                &self.bytes,
                |at, key, n| tally.add(at, key, n),
            )
            .await
    }

    /// Logs and counts what the archive part did (only when there was one).
    pub fn record(&self, metrics: &HistogramMetrics) {
        if self.segments == 0 {
            return;
        }
        let s = &self.stats;
        let data = self.bytes.data.load(std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(
            segments = self.segments,
            row_groups_from_statistics = s.row_groups_from_statistics,
            row_groups_read = s.row_groups_read,
            row_groups_pruned_statistics = s.row_groups_pruned_statistics,
            row_groups_pruned_bloom = s.row_groups_pruned_bloom,
            files_pruned_partition = s.files_pruned_partition,
            data_bytes = data,
            "histogram counted the archive"
        );
        for (label, n) in [
            ("statistics", s.row_groups_from_statistics),
            ("read", s.row_groups_read),
            ("pruned_statistics", s.row_groups_pruned_statistics),
            ("pruned_bloom", s.row_groups_pruned_bloom),
        ] {
            metrics.row_groups.with_label_values(&[label]).inc_by(n);
        }
        metrics.data_bytes.inc_by(data);
    }
}
