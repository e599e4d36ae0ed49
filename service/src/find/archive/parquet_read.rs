//! Reading one archive segment's Parquet files for a page: only the row groups that can hold a
//! matching event, only the columns needed to decide, then the event's columns for the rows
//! that match.
//!
//! Per file: the footer (its size is recorded, so no HEAD request), then row groups are ruled
//! out by their `created_at` statistics and the `consumer`/`type` statistics, then by the
//! `consumer`/`type` bloom filters (files written before the archiver wrote bloom filters
//! have none and are only pruned by statistics). The row groups left are decoded one at a time
//! with a [`RowFilter`]: `consumer`, `type`, `created_at` (and the cursor's `id` where the
//! cursor falls) are decoded first, and `id`, `payload` only for the rows that pass.
//!
//! Order: the archiver streams a window's events sorted by `(created_at, id)` into its files,
//! numbered as it goes, so rows within a file, row groups within a file and files within a
//! window are in page order; descending pages read them backwards. [`super::merge::Page`]
//! checks the order of every event it takes, so a file that broke the rule fails the find
//! instead of answering a wrong page.
//!
//! Counting (`GET /v1/histogram`, [`ArchiveReader::count_segment`]) prunes the same way, then
//! counts a row group from its footer when its statistics settle the count (every row inside
//! the range and one bucket, each filter column and the breakdown column a single value), and
//! otherwise decodes only `created_at` and the filter and breakdown columns.
//!
//! Memory: a few footers (files are opened [`OPEN_AHEAD`] ahead of the one being read, to
//! hide the store's latency) and the matching rows of the row groups being decoded (one per
//! core, each at most one page's worth), never the range.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering as Atomic};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, TimestampMillisecondType};
use arrow::error::ArrowError;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::oid::ObjectId;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowPredicate, ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter,
};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use parquet::schema::types::SchemaDescriptor;
use tokio_util::task::AbortOnDropHandle;

use super::error::FindError;
use super::merge::{Page, PageEvent};
use super::plan::{ArchivedFile, Segment};
use crate::event::{format_created_at, EventOut};
use crate::find::query::{FindQuery, Order, Span};
use crate::keys::Consumers;

/// Files whose footer and bloom filters are read ahead of the file being decoded.
pub const OPEN_AHEAD: usize = 4;
/// Bytes read from a file's end in the first request: the footer of an archive file (six
/// columns, a few row groups) fits, so opening a file is one request.
const FOOTER_PREFETCH: usize = 64 * 1024;
/// Most decoded predicate columns kept per row group for reuse in the output.
const PREDICATE_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Rows decoded per batch.
const BATCH_ROWS: usize = 4096;

use auditlog_common::archive_layout::columns::{
    CONSUMER as COL_CONSUMER, CREATED_AT as COL_CREATED_AT, ID as COL_ID, PAYLOAD as COL_PAYLOAD,
    TYPE as COL_TYPE,
};

/// What reading a segment did, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Files with at least one row group decoded.
    pub files_read: u64,
    pub files_pruned_partition: u64,
    /// Files whose every row group was ruled out, by statistics alone or with a bloom filter.
    pub files_pruned_statistics: u64,
    pub files_pruned_bloom: u64,
    pub row_groups_read: u64,
    pub row_groups_pruned_statistics: u64,
    pub row_groups_pruned_bloom: u64,
}

impl ReadStats {
    fn add(&mut self, o: &ReadStats) {
        self.files_read += o.files_read;
        self.files_pruned_partition += o.files_pruned_partition;
        self.files_pruned_statistics += o.files_pruned_statistics;
        self.files_pruned_bloom += o.files_pruned_bloom;
        self.row_groups_read += o.row_groups_read;
        self.row_groups_pruned_statistics += o.row_groups_pruned_statistics;
        self.row_groups_pruned_bloom += o.row_groups_pruned_bloom;
    }
}

/// Bytes fetched from the store, by what they were for.
#[derive(Debug, Default, Clone)]
pub struct BytesRead {
    /// Footers (and offset indexes).
    pub metadata: Arc<AtomicU64>,
    pub bloom: Arc<AtomicU64>,
    /// Data pages (with their dictionaries).
    pub data: Arc<AtomicU64>,
}

/// The archive's files for one collection.
#[derive(Debug, Clone)]
pub struct ArchiveReader {
    store: Arc<dyn ObjectStore>,
    /// `<db>/<collection>` under the archive root, as the archiver writes.
    base: Path,
}

impl ArchiveReader {
    pub fn new(store: Arc<dyn ObjectStore>, db: &str, collection: &str) -> Self {
        ArchiveReader {
            store,
            base: Path::from_iter([db, collection]),
        }
    }

    fn path(&self, relative: &str) -> Path {
        let mut p = self.base.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Adds the segment's matching events to `page`, in page order, until it is full.
    ///
    /// Footers are read [`OPEN_AHEAD`] files ahead and row groups decoded [`decode_ahead`] at a
    /// time, each on its own task so that they use every core: decoding (mostly decompressing
    /// the pages that hold matching rows) is what a long range costs. The results are taken in
    /// page order; work still running when the page is full is aborted.
    pub async fn read_segment(
        &self,
        segment: &Segment,
        query: &FindQuery,
        page: &mut Page<'_>,
        stats: &mut ReadStats,
        bytes: &BytesRead,
    ) -> Result<(), FindError> {
        stats.files_pruned_partition += segment.pruned_by_partition as u64;
        let wanted = Arc::new(Wanted::new(query, segment.span));
        let order = query.order;
        // No row group can give this page more events than it still lacks.
        let cap = page.remaining();
        let mut opening = futures::stream::iter(segment.files.clone())
            .map(|f| {
                let (reader, wanted, bytes) = (self.clone(), wanted.clone(), bytes.clone());
                AbortOnDropHandle::new(tokio::spawn(async move {
                    reader.open(&f, &wanted, order, &bytes).await
                }))
            })
            .buffered(OPEN_AHEAD);
        let ahead = decode_ahead();
        let mut to_decode: VecDeque<(Arc<Opened>, usize)> = VecDeque::new();
        let mut decoding = VecDeque::with_capacity(ahead);
        let mut files_left = true;
        loop {
            while decoding.len() < ahead && (files_left || !to_decode.is_empty()) {
                if let Some((opened, rg)) = to_decode.pop_front() {
                    stats.row_groups_read += 1;
                    let (wanted, data) = (wanted.clone(), bytes.data.clone());
                    decoding.push_back(AbortOnDropHandle::new(tokio::spawn(async move {
                        decode_row_group(&opened, rg, &wanted, order, cap, &data).await
                    })));
                    continue;
                }
                match opening.next().await {
                    Some(opened) => {
                        let opened = Arc::new(opened.map_err(task_failed)??);
                        stats.add(&opened.stats);
                        if !opened.row_groups.is_empty() {
                            stats.files_read += 1;
                        }
                        to_decode.extend(opened.row_groups.iter().map(|&rg| (opened.clone(), rg)));
                    }
                    None => files_left = false,
                }
            }
            let Some(next) = decoding.pop_front() else {
                return Ok(());
            };
            for event in next.await.map_err(task_failed)?? {
                page.push(event)?;
                if page.is_full() {
                    return Ok(());
                }
            }
        }
    }

    /// Reads a file's footer and decides which of its row groups to read.
    async fn open(
        &self,
        f: &ArchivedFile,
        wanted: &Wanted,
        order: Order,
        bytes: &BytesRead,
    ) -> Result<Opened, FindError> {
        let file = ObjectFile {
            store: self.store.clone(),
            path: self.path(&f.path),
            size: f.bytes,
            counted: bytes.metadata.clone(),
        };
        let name = f.path.clone();
        let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
        let meta = ArrowReaderMetadata::load_async(&mut file.clone(), options)
            .await
            .map_err(|e| file_error(&name, e))?;
        let cols = Columns::find(meta.parquet_schema()).ok_or_else(|| FindError::Corrupt {
            path: name.clone(),
            why: "not an auditlog archive file: a column is missing".into(),
        })?;
        let mut stats = ReadStats::default();
        let candidates: Vec<usize> = (0..meta.metadata().num_row_groups())
            .filter(|&rg| {
                let keep = stats_allow(meta.metadata(), rg, &cols, wanted);
                if !keep {
                    stats.row_groups_pruned_statistics += 1;
                }
                keep
            })
            .collect();
        let mut row_groups = Vec::with_capacity(candidates.len());
        let lookups: Vec<(&str, usize)> = [
            (wanted.consumer.as_deref(), cols.consumer),
            (wanted.kind.as_deref(), cols.kind),
        ]
        .into_iter()
        .filter_map(|(v, c)| v.map(|v| (v, c)))
        .collect();
        if lookups.is_empty() {
            row_groups = candidates;
        } else {
            let mut blooms = ParquetRecordBatchStreamBuilder::new_with_metadata(
                file.counting(&bytes.bloom),
                meta.clone(),
            );
            'row_group: for rg in candidates {
                for &(value, column) in &lookups {
                    let filter = blooms
                        .get_row_group_column_bloom_filter(rg, column)
                        .await
                        .map_err(|e| file_error(&name, e))?;
                    if filter.is_some_and(|f| !f.check(value)) {
                        stats.row_groups_pruned_bloom += 1;
                        continue 'row_group;
                    }
                }
                row_groups.push(rg);
            }
        }
        if row_groups.is_empty() {
            if stats.row_groups_pruned_bloom > 0 {
                stats.files_pruned_bloom += 1;
            } else {
                stats.files_pruned_statistics += 1;
            }
        }
        if order == Order::Desc {
            row_groups.reverse();
        }
        Ok(Opened {
            file,
            name,
            meta,
            cols,
            row_groups,
            stats,
        })
    }
}

/// A file whose footer was read, and the row groups to read, in page order.
struct Opened {
    file: ObjectFile,
    name: String,
    meta: ArrowReaderMetadata,
    cols: Columns,
    row_groups: Vec<usize>,
    stats: ReadStats,
}

/// What a segment's rows must match.
struct Wanted {
    consumer: Option<String>,
    /// When no `consumer` is named: the API key's consumers, when they are not all of them.
    within: Option<Consumers>,
    kind: Option<String>,
    span: Span,
    /// The cursor, when its instant lies in the segment (elsewhere the span decides alone).
    after: Option<(i64, String)>,
    order: Order,
}

impl Wanted {
    fn new(query: &FindQuery, span: Span) -> Self {
        let after = query
            .after
            .as_ref()
            .filter(|c| span.overlaps(c.created_at_ms, c.created_at_ms.saturating_add(1)))
            .map(|c| (c.created_at_ms, c.id.to_hex()));
        let within = match (&query.consumer, &query.consumers_within) {
            (None, Some(scope @ Consumers::Only { .. })) => Some(scope.clone()),
            _ => None,
        };
        Wanted {
            consumer: query.consumer.clone(),
            within,
            kind: query.kind.clone(),
            span,
            after,
            order: query.order,
        }
    }
}

/// Leaf column indexes of the archive's schema, looked up by name in each file.
#[derive(Debug, Clone, Copy)]
struct Columns {
    id: usize,
    kind: usize,
    consumer: usize,
    created_at: usize,
    payload: usize,
}

impl Columns {
    fn find(schema: &SchemaDescriptor) -> Option<Columns> {
        let index = |name: &str| schema.columns().iter().position(|c| c.name() == name);
        Some(Columns {
            id: index(COL_ID)?,
            kind: index(COL_TYPE)?,
            consumer: index(COL_CONSUMER)?,
            created_at: index(COL_CREATED_AT)?,
            payload: index(COL_PAYLOAD)?,
        })
    }
}

/// Whether a row group's statistics show every row's `created_at` present and inside `span`.
fn within_span(meta: &ParquetMetaData, rg: usize, cols: &Columns, span: Span) -> bool {
    let Some(Statistics::Int64(s)) = meta.row_group(rg).column(cols.created_at).statistics() else {
        return false;
    };
    let (Some(&min), Some(&max)) = (s.min_opt(), s.max_opt()) else {
        return false;
    };
    s.null_count_opt() == Some(0)
        && span.lo.is_none_or(|lo| lo <= min)
        && span.hi.is_none_or(|hi| max < hi)
}

/// Whether a row group's statistics allow a matching row. Missing statistics allow anything.
fn stats_allow(meta: &ParquetMetaData, rg: usize, cols: &Columns, wanted: &Wanted) -> bool {
    let rg = meta.row_group(rg);
    if rg.num_rows() == 0 {
        return false;
    }
    if let Some(Statistics::Int64(s)) = rg.column(cols.created_at).statistics() {
        if let (Some(&min), Some(&max)) = (s.min_opt(), s.max_opt()) {
            if !wanted.span.overlaps(min, max.saturating_add(1)) {
                return false;
            }
        }
    }
    for (value, column) in [(&wanted.consumer, cols.consumer), (&wanted.kind, cols.kind)] {
        let Some(value) = value else { continue };
        if let Some(Statistics::ByteArray(s)) = rg.column(column).statistics() {
            // Truncated statistics are still bounds (a prefix below, a successor above).
            let v = value.as_bytes();
            if s.min_opt().is_some_and(|min| v < min.data())
                || s.max_opt().is_some_and(|max| v > max.data())
            {
                return false;
            }
        }
    }
    true
}

/// One row group's matching rows, in page order, at most `cap` of them (the first `cap` in
/// page order).
async fn decode_row_group(
    opened: &Opened,
    rg: usize,
    wanted: &Wanted,
    order: Order,
    cap: usize,
    data: &Arc<AtomicU64>,
) -> Result<Vec<PageEvent>, FindError> {
    let schema = opened.meta.parquet_schema();
    let c = opened.cols;
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
        opened.file.counting(data),
        opened.meta.clone(),
    )
    .with_row_groups(vec![rg])
    .with_projection(ProjectionMask::leaves(
        schema,
        [c.id, c.kind, c.consumer, c.created_at, c.payload],
    ))
    .with_row_filter(row_filter(
        schema,
        &c,
        wanted,
        within_span(opened.meta.metadata(), rg, &c, wanted.span),
    ))
    .with_batch_size(BATCH_ROWS)
    .with_max_predicate_cache_size(PREDICATE_CACHE_BYTES);
    if order == Order::Asc {
        builder = builder.with_limit(cap);
    }
    let name = &opened.name;
    let stream = builder.build().map_err(|e| file_error(name, e))?;
    // The row group's matching rows: the memory bound is one row group (descending pages need
    // its last rows first).
    let batches: Vec<RecordBatch> = stream
        .try_collect()
        .await
        .map_err(|e| file_error(name, e))?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(events(batch, name)?);
    }
    if order == Order::Desc {
        rows.reverse();
        rows.truncate(cap);
    }
    Ok(rows)
}

/// Row groups decoded at once: one per core, up to four. Asked once: on Linux the answer
/// reads the cgroup's CPU quota from files.
fn decode_ahead() -> usize {
    static AHEAD: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
    });
    *AHEAD
}

/// A reading task that panicked (or was cancelled at shutdown).
fn task_failed(e: tokio::task::JoinError) -> FindError {
    FindError::Internal(format!("an archive reading task failed: {e}"))
}

/// The predicates, most selective first: each later one decodes only rows the earlier passed.
///
/// `in_span`: the row group's statistics show every row inside the wanted span (the usual
/// case for a long range), so `created_at` is not decoded just to keep them all.
fn row_filter(schema: &SchemaDescriptor, c: &Columns, wanted: &Wanted, in_span: bool) -> RowFilter {
    let mut predicates: Vec<Box<dyn ArrowPredicate>> = vec![];
    for (value, column) in [(&wanted.consumer, c.consumer), (&wanted.kind, c.kind)] {
        if let Some(value) = value.clone() {
            predicates.push(Box::new(ArrowPredicateFn::new(
                ProjectionMask::leaves(schema, [column]),
                move |batch: RecordBatch| equals(batch.column(0), &value),
            )));
        }
    }
    if let Some(scope) = wanted.within.clone() {
        predicates.push(Box::new(ArrowPredicateFn::new(
            ProjectionMask::leaves(schema, [c.consumer]),
            move |batch: RecordBatch| within(batch.column(0), &scope),
        )));
    }
    let span = wanted.span;
    if !in_span {
        predicates.push(Box::new(ArrowPredicateFn::new(
            ProjectionMask::leaves(schema, [c.created_at]),
            move |batch: RecordBatch| {
                let t = batch.column(0).as_primitive::<TimestampMillisecondType>();
                Ok(t.iter()
                    .map(|v| Some(v.is_some_and(|v| span.overlaps(v, v.saturating_add(1)))))
                    .collect())
            },
        )));
    }
    if let Some((at, id)) = wanted.after.clone() {
        let order = wanted.order;
        predicates.push(Box::new(ArrowPredicateFn::new(
            ProjectionMask::leaves(schema, [c.id, c.created_at]),
            move |batch: RecordBatch| {
                let ids = string_column(&batch, COL_ID)?;
                let t = batch
                    .column_by_name(COL_CREATED_AT)
                    .ok_or_else(|| ArrowError::SchemaError("no created_at".into()))?
                    .as_primitive::<TimestampMillisecondType>()
                    .clone();
                let ids = ids.as_string::<i32>();
                Ok((0..batch.num_rows())
                    .map(|i| {
                        let key = (t.value(i), ids.value(i));
                        Some(match order {
                            Order::Asc => key > (at, id.as_str()),
                            Order::Desc => key < (at, id.as_str()),
                        })
                    })
                    .collect())
            },
        )));
    }
    RowFilter::new(predicates)
}

/// `column == value`, for a string column however the file typed it.
fn equals(column: &ArrayRef, value: &str) -> Result<BooleanArray, ArrowError> {
    let utf8 = as_utf8(column)?;
    let s = utf8.as_string::<i32>();
    Ok(s.iter().map(|v| Some(v == Some(value))).collect())
}

/// Whether each row's consumer is within a key's consumers.
fn within(column: &ArrayRef, scope: &Consumers) -> Result<BooleanArray, ArrowError> {
    let utf8 = as_utf8(column)?;
    let s = utf8.as_string::<i32>();
    Ok(s.iter()
        .map(|v| Some(v.is_some_and(|v| scope.allows(v))))
        .collect())
}

fn as_utf8(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    if column.data_type() == &DataType::Utf8 {
        Ok(column.clone())
    } else {
        arrow::compute::cast(column, &DataType::Utf8)
    }
}

fn string_column(batch: &RecordBatch, name: &str) -> Result<ArrayRef, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))
        .and_then(as_utf8)
}

/// A batch's rows as events, in file order.
fn events(batch: &RecordBatch, path: &str) -> Result<Vec<PageEvent>, FindError> {
    let corrupt = |why: String| FindError::Corrupt {
        path: path.to_owned(),
        why,
    };
    let text = |name: &str| string_column(batch, name).map_err(|e| corrupt(e.to_string()));
    let (ids, kinds, consumers, payloads) = (
        text(COL_ID)?,
        text(COL_TYPE)?,
        text(COL_CONSUMER)?,
        text(COL_PAYLOAD)?,
    );
    let (ids, kinds, consumers, payloads) = (
        ids.as_string::<i32>(),
        kinds.as_string::<i32>(),
        consumers.as_string::<i32>(),
        payloads.as_string::<i32>(),
    );
    let created = batch
        .column_by_name(COL_CREATED_AT)
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or_else(|| corrupt("created_at is not a millisecond timestamp".into()))?;
    (0..batch.num_rows())
        .map(|i| {
            let id_hex = ids.value(i);
            let id = ObjectId::parse_str(id_hex)
                .map_err(|_| corrupt(format!("id {id_hex:?} is not an ObjectId")))?;
            let created_at_ms = created.value(i);
            let payload = if payloads.is_null(i) {
                None
            } else {
                Some(
                    serde_json::from_str(payloads.value(i))
                        .map_err(|e| corrupt(format!("payload of {id_hex} is not JSON: {e}")))?,
                )
            };
            Ok(PageEvent::new(
                created_at_ms,
                id,
                EventOut {
                    id: id_hex.to_owned(),
                    kind: kinds.value(i).to_owned(),
                    consumer: consumers.value(i).to_owned(),
                    created_at: format_created_at(mongodb::bson::DateTime::from_millis(
                        created_at_ms,
                    )),
                    payload,
                },
            ))
        })
        .collect()
}

/// A Parquet failure of one file: the store's (unreachable, missing object) is a 503, the
/// rest a file that cannot be read as an archive file.
fn file_error(path: &str, e: ParquetError) -> FindError {
    if let ParquetError::External(inner) = &e {
        if let Some(store) = inner.downcast_ref::<object_store::Error>() {
            return FindError::ArchiveUnavailable {
                path: path.to_owned(),
                why: store.to_string(),
            };
        }
    }
    FindError::ArchiveFile {
        path: path.to_owned(),
        source: e,
    }
}

// ---------------------------------------------------------------------------------------------
// Counting, for `GET /v1/histogram` (`crate::find::histogram`): the same files, pruning and
// row filters as a page, but a row group whose footer already says how many of its rows match
// and in which bucket they fall is counted from the footer, and the others decode only
// `created_at` and the columns filtered or broken down by — never `id` or `payload`.
// ---------------------------------------------------------------------------------------------

/// The column a count is broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountBy {
    Type,
    Consumer,
}

/// What counting archive segments did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CountStats {
    pub files_pruned_partition: u64,
    pub row_groups_pruned_statistics: u64,
    pub row_groups_pruned_bloom: u64,
    /// Counted from the footer's statistics alone: no data page fetched.
    pub row_groups_from_statistics: u64,
    /// Decoded: `created_at` and the filter and breakdown columns.
    pub row_groups_read: u64,
}

/// Rows counted in one row group: `(an instant of their bucket, their key, how many)`.
type Counted = Vec<(i64, Option<String>, u64)>;

impl ArchiveReader {
    /// Counts the segment's matching events (`query` without a cursor) into `sink`, as
    /// `(an instant of the bucket, the key of \`by\`, rows)`; `bucket_ms`: the buckets' length
    /// (aligned to the epoch). Files are opened [`OPEN_AHEAD`] ahead and row groups decoded
    /// [`decode_ahead`] at a time, as for a page.
    #[allow(clippy::too_many_arguments)]
    pub async fn count_segment<F>(
        &self,
        segment: &Segment,
        query: &FindQuery,
        bucket_ms: i64,
        by: Option<CountBy>,
        stats: &mut CountStats,
        bytes: &BytesRead,
        mut sink: F,
    ) -> Result<(), FindError>
    where
        F: FnMut(i64, Option<&str>, u64),
    {
        stats.files_pruned_partition += segment.pruned_by_partition as u64;
        let wanted = Arc::new(Wanted::new(query, segment.span));
        let mut opening = futures::stream::iter(segment.files.clone())
            .map(|f| {
                let (reader, wanted, bytes) = (self.clone(), wanted.clone(), bytes.clone());
                AbortOnDropHandle::new(tokio::spawn(async move {
                    reader.open(&f, &wanted, Order::Asc, &bytes).await
                }))
            })
            .buffered(OPEN_AHEAD);
        while let Some(opened) = opening.next().await {
            let opened = Arc::new(opened.map_err(task_failed)??);
            stats.row_groups_pruned_statistics += opened.stats.row_groups_pruned_statistics;
            stats.row_groups_pruned_bloom += opened.stats.row_groups_pruned_bloom;
            let mut to_read = vec![];
            for &rg in &opened.row_groups {
                match counted_by_statistics(
                    opened.meta.metadata(),
                    rg,
                    &opened.cols,
                    &wanted,
                    bucket_ms,
                    by,
                ) {
                    Some((at, key, rows)) => {
                        stats.row_groups_from_statistics += 1;
                        sink(at, key.as_deref(), rows);
                    }
                    None => to_read.push(rg),
                }
            }
            stats.row_groups_read += to_read.len() as u64;
            let mut reading = futures::stream::iter(to_read)
                .map(|rg| {
                    let (opened, wanted, data) =
                        (opened.clone(), wanted.clone(), bytes.data.clone());
                    AbortOnDropHandle::new(tokio::spawn(async move {
                        count_row_group(&opened, rg, &wanted, bucket_ms, by, &data).await
                    }))
                })
                .buffered(decode_ahead());
            while let Some(counted) = reading.next().await {
                for (at, key, rows) in counted.map_err(task_failed)?? {
                    sink(at, key.as_deref(), rows);
                }
            }
        }
        Ok(())
    }
}

/// A row group counted from its footer: when its statistics show every row inside the span
/// and inside one bucket, every filter column holding the one value asked (or, for a key's
/// consumers, one consumer, inside them), and the breakdown column one value. Then
/// `(its first instant, the key, its rows)`; otherwise `None`, and it is decoded. Only exact
/// statistics count: a truncated min or max is a bound, not a value.
fn counted_by_statistics(
    meta: &ParquetMetaData,
    rg: usize,
    cols: &Columns,
    wanted: &Wanted,
    bucket_ms: i64,
    by: Option<CountBy>,
) -> Option<(i64, Option<String>, u64)> {
    let group = meta.row_group(rg);
    let rows = u64::try_from(group.num_rows()).ok()?;
    if !within_span(meta, rg, cols, wanted.span) {
        return None;
    }
    let Some(Statistics::Int64(t)) = group.column(cols.created_at).statistics() else {
        return None;
    };
    let (min, max) = (*t.min_opt()?, *t.max_opt()?);
    if min.div_euclid(bucket_ms) != max.div_euclid(bucket_ms) {
        return None;
    }
    let single = |column: usize| -> Option<String> {
        let Some(Statistics::ByteArray(s)) = group.column(column).statistics() else {
            return None;
        };
        let (lo, hi) = (s.min_opt()?, s.max_opt()?);
        if s.null_count_opt() != Some(0) || !s.min_is_exact() || !s.max_is_exact() || lo != hi {
            return None;
        }
        String::from_utf8(lo.data().to_vec()).ok()
    };
    for (value, column) in [(&wanted.consumer, cols.consumer), (&wanted.kind, cols.kind)] {
        if let Some(value) = value {
            if single(column)? != *value {
                // Statistics pruning has ruled such a group out already; never counted.
                return Some((min, None, 0));
            }
        }
    }
    if let Some(scope) = &wanted.within {
        if !scope.allows(&single(cols.consumer)?) {
            return Some((min, None, 0));
        }
    }
    let key = match by {
        None => None,
        Some(CountBy::Type) => Some(single(cols.kind)?),
        Some(CountBy::Consumer) => Some(single(cols.consumer)?),
    };
    Some((min, key, rows))
}

/// One row group's matching rows counted by bucket (and key): only `created_at` and the key
/// column are output, the filters decode their own columns first.
async fn count_row_group(
    opened: &Opened,
    rg: usize,
    wanted: &Wanted,
    bucket_ms: i64,
    by: Option<CountBy>,
    data: &Arc<AtomicU64>,
) -> Result<Counted, FindError> {
    let schema = opened.meta.parquet_schema();
    let c = opened.cols;
    let key_column = by.map(|b| match b {
        CountBy::Type => (c.kind, COL_TYPE),
        CountBy::Consumer => (c.consumer, COL_CONSUMER),
    });
    let mut leaves = vec![c.created_at];
    leaves.extend(key_column.map(|(index, _)| index));
    let name = &opened.name;
    let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
        opened.file.counting(data),
        opened.meta.clone(),
    )
    .with_row_groups(vec![rg])
    .with_projection(ProjectionMask::leaves(schema, leaves))
    .with_row_filter(row_filter(
        schema,
        &c,
        wanted,
        within_span(opened.meta.metadata(), rg, &c, wanted.span),
    ))
    .with_batch_size(BATCH_ROWS)
    .build()
    .map_err(|e| file_error(name, e))?;
    let corrupt = |why: String| FindError::Corrupt {
        path: name.clone(),
        why,
    };
    let mut counts: std::collections::HashMap<(i64, Option<String>), u64> = Default::default();
    while let Some(batch) = stream.try_next().await.map_err(|e| file_error(name, e))? {
        let created = batch
            .column_by_name(COL_CREATED_AT)
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
            .ok_or_else(|| corrupt("created_at is not a millisecond timestamp".into()))?;
        let keys = key_column
            .map(|(_, col)| string_column(&batch, col))
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?;
        let keys = keys.as_ref().map(|k| k.as_string::<i32>());
        // Per batch with borrowed keys: one allocation per distinct key, not per row.
        let mut batch_counts: std::collections::HashMap<(i64, Option<&str>), u64> =
            Default::default();
        for i in 0..batch.num_rows() {
            if created.is_null(i) {
                continue;
            }
            let bucket = created.value(i).div_euclid(bucket_ms) * bucket_ms;
            let key = keys.map(|k| if k.is_null(i) { "" } else { k.value(i) });
            *batch_counts.entry((bucket, key)).or_default() += 1;
        }
        for ((bucket, key), n) in batch_counts {
            *counts.entry((bucket, key.map(str::to_owned))).or_default() += n;
        }
    }
    Ok(counts
        .into_iter()
        .map(|((bucket, key), n)| (bucket, key, n))
        .collect())
}

/// One archive file in the object store, read by range, counting the bytes it fetches.
#[derive(Debug, Clone)]
struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    counted: Arc<AtomicU64>,
}

impl ObjectFile {
    /// The same file, counting into `counter`.
    fn counting(&self, counter: &Arc<AtomicU64>) -> ObjectFile {
        ObjectFile {
            counted: counter.clone(),
            ..self.clone()
        }
    }
}

fn store_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            let bytes = self
                .store
                .get_range(&self.path, range)
                .await
                .map_err(store_error)?;
            self.counted.fetch_add(bytes.len() as u64, Atomic::Relaxed);
            Ok(bytes)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        Box::pin(async move {
            let parts = self
                .store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_error)?;
            let n: usize = parts.iter().map(Bytes::len).sum();
            self.counted.fetch_add(n as u64, Atomic::Relaxed);
            Ok(parts)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find::archive::plan::ArchivedFile;
    use crate::find::query::{FindRequest, Tier};
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use object_store::memory::InMemory;
    use object_store::PutPayload;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::schema::types::ColumnPath;

    /// 2024-05-01T00:00:00Z.
    const T0: i64 = 1_714_521_600_000;
    const PATH: &str = "dt=2024-05-01/hour=00/part-20240501T000000Z-0000.parquet";

    /// Three row groups of ten events a second apart. Every group has consumers `c-a` and
    /// `c-z` (so their statistics span `c-m`); only the middle one has `c-m`.
    async fn archive(bloom: bool) -> (ArchiveReader, ArchivedFile) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("consumer", DataType::Utf8, false),
            Field::new(
                "created_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("created_at_ms", DataType::Int64, false),
            Field::new("payload", DataType::Utf8, true),
        ]));
        let n = 30;
        let at: Vec<i64> = (0..n).map(|i| T0 + i * 1000).collect();
        let consumer: Vec<&str> = (0..n)
            .map(|i| match (i / 10, i % 3) {
                (1, 1) => "c-m",
                (_, 0) => "c-a",
                _ => "c-z",
            })
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("{:024x}", i + 1)),
                )),
                Arc::new(StringArray::from_iter_values((0..n).map(|_| "t"))),
                Arc::new(StringArray::from(consumer)),
                Arc::new(TimestampMillisecondArray::from(at.clone()).with_timezone("UTC")),
                Arc::new(Int64Array::from(at)),
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| Some(format!("{{\"i\":{i}}}"))),
                )),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(10))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_column_bloom_filter_enabled(ColumnPath::from("consumer"), bloom)
            .set_column_bloom_filter_enabled(ColumnPath::from("type"), bloom)
            .build();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let store = InMemory::new();
        let size = buf.len() as u64;
        store
            .put(
                &Path::from(format!("db/events/{PATH}")),
                PutPayload::from(buf),
            )
            .await
            .unwrap();
        (
            ArchiveReader::new(Arc::new(store), "db", "events"),
            ArchivedFile::new(PATH.into(), size, 0),
        )
    }

    fn query(consumer: &str, order: Order) -> FindQuery {
        FindQuery::from_request(
            FindRequest {
                consumer: Some(consumer.into()),
                order: Some(order),
                limit: Some(100),
                ..Default::default()
            },
            1000,
        )
        .unwrap()
    }

    async fn read(
        reader: &ArchiveReader,
        file: &ArchivedFile,
        q: &FindQuery,
        span: Span,
    ) -> (Vec<String>, ReadStats, u64) {
        let segment = Segment {
            tier: Tier::Archive,
            span,
            files: vec![file.clone()],
            pruned_by_partition: 0,
        };
        let mut page = Page::new(q);
        let mut stats = ReadStats::default();
        let bytes = BytesRead::default();
        reader
            .read_segment(&segment, q, &mut page, &mut stats, &bytes)
            .await
            .unwrap();
        let data = bytes.data.load(Atomic::Relaxed);
        let events = page.finish(None, String::new()).events;
        (events.into_iter().map(|e| e.id).collect(), stats, data)
    }

    fn hour() -> Span {
        Span::new(Some(T0), Some(T0 + 3_600_000))
    }

    #[tokio::test]
    async fn bloom_filters_skip_row_groups_without_the_value_and_their_data_pages() {
        let (reader, file) = archive(true).await;
        let (ids, stats, data) = read(&reader, &file, &query("c-m", Order::Asc), hour()).await;
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert_eq!(stats.row_groups_pruned_bloom, 2);
        assert_eq!(stats.row_groups_pruned_statistics, 0, "c-a..c-z spans c-m");
        assert_eq!(stats.row_groups_read, 1);
        assert!(data > 0);
        // Descending: the same events, reversed.
        let (desc, _, _) = read(&reader, &file, &query("c-m", Order::Desc), hour()).await;
        assert_eq!(desc, ids.iter().rev().cloned().collect::<Vec<_>>());
        // Absent from every row group: nothing decoded, not one data page fetched.
        let (ids, stats, data) = read(&reader, &file, &query("c-n", Order::Asc), hour()).await;
        assert!(ids.is_empty());
        assert_eq!(
            (stats.row_groups_pruned_bloom, stats.files_pruned_bloom),
            (3, 1)
        );
        assert_eq!((stats.row_groups_read, stats.files_read, data), (0, 0, 0));
    }

    #[tokio::test]
    async fn statistics_skip_row_groups_outside_the_range_or_the_values() {
        let (reader, file) = archive(false).await;
        // Without bloom filters (files written before the archiver wrote them) c-m is found by
        // reading every row group its statistics allow.
        let (ids, stats, _) = read(&reader, &file, &query("c-m", Order::Asc), hour()).await;
        assert_eq!(ids.len(), 4);
        assert_eq!(
            (stats.row_groups_read, stats.row_groups_pruned_bloom),
            (3, 0)
        );
        // The first ten seconds: the later row groups are ruled out by created_at.
        let first = Span::new(Some(T0), Some(T0 + 10_000));
        let (ids, stats, _) = read(&reader, &file, &query("c-a", Order::Asc), first).await;
        assert_eq!(ids.len(), 4);
        assert_eq!(
            (stats.row_groups_read, stats.row_groups_pruned_statistics),
            (1, 2)
        );
        // Below every group's minimum consumer: nothing read.
        let (ids, stats, data) = read(&reader, &file, &query("b", Order::Asc), hour()).await;
        assert!(ids.is_empty());
        assert_eq!(
            (
                stats.row_groups_pruned_statistics,
                stats.files_pruned_statistics
            ),
            (3, 1)
        );
        assert_eq!(data, 0);
    }

    #[tokio::test]
    async fn a_cursor_inside_a_row_group_continues_after_its_event() {
        let (reader, file) = archive(true).await;
        let mut q = query("c-a", Order::Asc);
        q.consumer = None;
        q.limit = 5;
        let (first, _, _) = read(&reader, &file, &q, hour()).await;
        assert_eq!(first.len(), 5);
        q.after = Some(crate::find::query::Cursor {
            created_at_ms: T0 + 4_000,
            id: ObjectId::parse_str(&first[4]).unwrap(),
            order: Order::Asc,
        });
        let span = Span::new(Some(T0 + 4_000), Some(T0 + 3_600_000));
        let (next, _, _) = read(&reader, &file, &q, span).await;
        assert_eq!(
            next,
            (6..=10).map(|i| format!("{i:024x}")).collect::<Vec<_>>()
        );
    }
    #[tokio::test]
    async fn a_find_naming_no_consumer_reads_only_the_keys_consumers() {
        let (reader, file) = archive(true).await;
        let mut q = query("unused", Order::Asc);
        q.consumer = None;
        let consumers_of = |ids: &[String]| -> Vec<u64> {
            ids.iter()
                .map(|id| u64::from_str_radix(id, 16).unwrap() - 1)
                .collect()
        };
        q.consumers_within = Some(Consumers::parse(&["c-m*", "c-a"]).unwrap());
        let (ids, _, _) = read(&reader, &file, &q, hour()).await;
        let rows = consumers_of(&ids);
        assert_eq!(rows.len(), 14, "ten c-a and four c-m: {rows:?}");
        assert!(
            rows.iter().all(|i| i % 3 == 0 || (10..20).contains(i)),
            "no c-z row: {rows:?}"
        );
        // Every consumer: no condition at all.
        q.consumers_within = Some(Consumers::All);
        assert_eq!(read(&reader, &file, &q, hour()).await.0.len(), 30);
        // A scope none of the file's consumers is in.
        q.consumers_within = Some(Consumers::parse(&["c-b*"]).unwrap());
        assert!(read(&reader, &file, &q, hour()).await.0.is_empty());
    }

    async fn count(
        reader: &ArchiveReader,
        file: &ArchivedFile,
        q: &FindQuery,
        bucket_ms: i64,
        by: Option<CountBy>,
    ) -> (
        std::collections::BTreeMap<(i64, Option<String>), u64>,
        CountStats,
        u64,
    ) {
        let segment = Segment {
            tier: Tier::Archive,
            span: hour(),
            files: vec![file.clone()],
            pruned_by_partition: 0,
        };
        let mut stats = CountStats::default();
        let bytes = BytesRead::default();
        let mut counts = std::collections::BTreeMap::new();
        reader
            .count_segment(
                &segment,
                q,
                bucket_ms,
                by,
                &mut stats,
                &bytes,
                |at, key, n| {
                    let bucket = at.div_euclid(bucket_ms) * bucket_ms;
                    *counts.entry((bucket, key.map(str::to_owned))).or_default() += n;
                },
            )
            .await
            .unwrap();
        counts.retain(|_, n| *n > 0);
        (counts, stats, bytes.data.load(Atomic::Relaxed))
    }

    #[tokio::test]
    async fn counts_come_from_footers_where_the_statistics_settle_them_else_from_decoding() {
        let (reader, file) = archive(true).await;
        let mut all = query("unused", Order::Asc);
        all.consumer = None;
        // One bucket per row group's range, no filter: the footer answers, no data page read.
        let (counts, stats, data) = count(&reader, &file, &all, 3_600_000, None).await;
        assert_eq!(counts, [((T0, None), 30)].into());
        assert_eq!(
            (stats.row_groups_from_statistics, stats.row_groups_read),
            (3, 0)
        );
        assert_eq!(data, 0);
        // By type: one type per group, still the footer. By consumer: mixed groups, decoded.
        let (counts, stats, _) = count(&reader, &file, &all, 3_600_000, Some(CountBy::Type)).await;
        assert_eq!(counts, [((T0, Some("t".to_owned())), 30)].into());
        assert_eq!(stats.row_groups_from_statistics, 3);
        let (counts, stats, data) =
            count(&reader, &file, &all, 3_600_000, Some(CountBy::Consumer)).await;
        assert_eq!(counts.values().sum::<u64>(), 30, "{counts:?}");
        assert_eq!(counts[&(T0, Some("c-m".to_owned()))], 4);
        assert_eq!(
            (stats.row_groups_from_statistics, stats.row_groups_read),
            (0, 3)
        );
        assert!(data > 0);
        // Buckets shorter than a row group: decoded, split by second.
        let (counts, stats, _) = count(&reader, &file, &all, 5_000, None).await;
        assert_eq!(counts.len(), 6);
        assert!(counts.values().all(|&n| n == 5), "{counts:?}");
        assert_eq!(stats.row_groups_read, 3);
        // A consumer filter: the bloom filters skip two groups, the third is decoded.
        let (counts, stats, _) =
            count(&reader, &file, &query("c-m", Order::Asc), 3_600_000, None).await;
        assert_eq!(counts, [((T0, None), 4)].into());
        assert_eq!(
            (stats.row_groups_pruned_bloom, stats.row_groups_read),
            (2, 1)
        );
        // A key's consumers: rows outside them are not counted.
        all.consumers_within = Some(Consumers::parse(&["c-a"]).unwrap());
        let (counts, _, _) = count(&reader, &file, &all, 3_600_000, None).await;
        assert_eq!(counts, [((T0, None), 10)].into());
    }
}
