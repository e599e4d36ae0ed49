//! Archiving one window: stream its events from MongoDB in `(created_at, _id)` order, write
//! them as Parquet to hidden temporary files (one per hour partition, more when a file reaches
//! its row cap), publish each by rename, remove leftovers of earlier interrupted runs, read the
//! files' footers back, and compare the row count with MongoDB's count for the window.
//!
//! Memory is bounded by one cursor batch, one Arrow batch and one in-progress row group (both
//! capped by settings), never by the window's size. Reads are keyset reads, so a cursor lost
//! mid-window (timeout, failover) resumes after the last row instead of starting over.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use auditlog_common::schema::fields;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document, RawDocumentBuf};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::file::metadata::KeyValue;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::archive::Archiver;
use crate::encode::{self, BatchBuilder};
use crate::error::{ArchiveError, Result};
use crate::progress::Progress;
use crate::sink::{hex, FileFacts};
use crate::window::{partition_of, Window};

/// MongoDB filter for the events of a window.
pub fn window_filter(w: &Window) -> Document {
    doc! { fields::CREATED_AT: {
        "$gte": bson::DateTime::from_chrono(w.start),
        "$lt": bson::DateTime::from_chrono(w.end),
    } }
}

/// What writing a window produced, before it is recorded.
#[derive(Debug)]
pub struct Written {
    pub files: Vec<FileFacts>,
    pub rows: u64,
}

/// Writes the window's files and checks them. Does not record anything.
pub async fn write_window(a: &Archiver, w: &Window, progress: &mut Progress) -> Result<Written> {
    let mut out = WindowWriter::new(a, w);
    let mut batch = BatchBuilder::new(a.settings.batch_size as usize);
    let mut batch_partition: Option<String> = None;
    let mut streamed: u64 = 0;
    let mut last_key: Option<(bson::DateTime, Bson)> = None;
    let mut attempts = 0u32;
    let coll = a.store.events().clone_with_type::<RawDocumentBuf>();

    // MongoDB's count runs beside the stream: on servers that scan (FerretDB) this halves the
    // wall time, and late writes are still caught because the stream must match it exactly.
    let count = a.count(w);
    let stream = async {
        'query: loop {
            let mut filter = window_filter(w);
            if let Some((ts, id)) = &last_key {
                filter = doc! {
                    fields::CREATED_AT: { "$gte": *ts, "$lt": bson::DateTime::from_chrono(w.end) },
                    "$or": [ { fields::CREATED_AT: { "$gt": *ts } }, { fields::ID: { "$gt": id.clone() } } ],
                };
            }
            let cursor = coll
                .find(filter)
                .sort(doc! { fields::CREATED_AT: 1, fields::ID: 1 })
                .batch_size(a.settings.batch_size)
                .await;
            let mut cursor = match cursor {
                Ok(c) => c,
                Err(e) if attempts < 5 => {
                    attempts += 1;
                    tracing::warn!(window = %w.id(), error = %e, attempt = attempts, "query failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempts))).await;
                    continue 'query;
                }
                Err(e) => return Err(ArchiveError::mongo("find window events")(e)),
            };
            loop {
                let raw = match cursor.try_next().await {
                    Ok(Some(raw)) => raw,
                    Ok(None) => break 'query,
                    Err(e) if attempts < 5 => {
                        attempts += 1;
                        tracing::warn!(window = %w.id(), error = %e, after_rows = streamed,
                        "cursor lost; resuming after the last archived row");
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempts))).await;
                        continue 'query;
                    }
                    Err(e) => return Err(ArchiveError::mongo("read window events")(e)),
                };
                let row = encode::decode(&raw)?;
                let created = DateTime::<Utc>::from_timestamp_millis(row.created_at_ms)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                let partition = partition_of(created);
                // A batch never spans two partitions (files are per partition).
                if batch_partition.as_deref() != Some(partition.as_str()) && !batch.is_empty() {
                    let rb = batch.finish()?;
                    out.write(batch_partition.as_deref().unwrap_or_default(), &rb)
                        .await?;
                    progress.rows(rb.num_rows() as u64);
                }
                batch_partition = Some(partition);
                batch.push(&row);
                streamed += 1;
                let id = raw
                    .get(fields::ID)
                    .ok()
                    .flatten()
                    .and_then(|v| Bson::try_from(v).ok())
                    .unwrap_or(Bson::Null);
                last_key = Some((bson::DateTime::from_millis(row.created_at_ms), id));
                if batch.len() >= a.settings.batch_size as usize {
                    let rb = batch.finish()?;
                    out.write(batch_partition.as_deref().unwrap_or_default(), &rb)
                        .await?;
                    progress.rows(rb.num_rows() as u64);
                }
            }
        }
        if !batch.is_empty() {
            let rb = batch.finish()?;
            out.write(batch_partition.as_deref().unwrap_or_default(), &rb)
                .await?;
            progress.rows(rb.num_rows() as u64);
        }
        Ok::<_, ArchiveError>(())
    };
    let ((), expected) = tokio::try_join!(stream, count)?;
    let files = out.finish().await?;

    // Leftovers of interrupted runs (temporaries, or files of an older run with more parts).
    for hour in w.hours() {
        let partition = partition_of(hour);
        let keep: Vec<String> = files
            .iter()
            .filter(|f| f.path.starts_with(&partition))
            .filter_map(|f| f.path.rsplit('/').next().map(str::to_owned))
            .collect();
        let removed = a
            .sink
            .remove_stale(&partition, &w.file_prefix(), &keep)
            .await?;
        if removed > 0 {
            tracing::info!(window = %w.id(), %partition, removed, "removed leftovers of an earlier run");
        }
    }

    // Read back what readers will see.
    let mut read_back = 0u64;
    let mut checked = Vec::with_capacity(files.len());
    for f in files {
        let (rows, bytes) = a.sink.footer_rows(&f.path).await?;
        if rows != f.rows || bytes != f.bytes {
            return Err(ArchiveError::Other(format!(
                "{}: read back {rows} rows / {bytes} bytes, wrote {} rows / {} bytes",
                f.path, f.rows, f.bytes
            )));
        }
        read_back += rows;
        checked.push(f);
    }
    if read_back != expected || streamed != expected {
        return Err(ArchiveError::CountMismatch {
            window: w.id(),
            written: read_back,
            expected,
        });
    }
    Ok(Written {
        files: checked,
        rows: read_back,
    })
}

/// The files of one window, opened one at a time.
struct WindowWriter<'a> {
    a: &'a Archiver,
    w: Window,
    current: Option<OpenFile>,
    next_n: u32,
    done: Vec<FileFacts>,
}

struct OpenFile {
    partition: String,
    name: String,
    written_at: Path,
    writer: AsyncArrowWriter<HashingWriter>,
    rows: u64,
}

impl<'a> WindowWriter<'a> {
    fn new(a: &'a Archiver, w: &Window) -> Self {
        WindowWriter {
            a,
            w: *w,
            current: None,
            next_n: 0,
            done: vec![],
        }
    }

    async fn write(&mut self, partition: &str, batch: &RecordBatch) -> Result<()> {
        let rotate = match &self.current {
            Some(f) => {
                f.partition != partition
                    || f.rows + batch.num_rows() as u64 > self.a.settings.max_file_rows
            }
            None => true,
        };
        if rotate {
            self.close_current().await?;
            self.current = Some(self.open(partition)?);
        }
        let row_group_bytes = self.a.settings.row_group_bytes;
        if let Some(f) = self.current.as_mut() {
            f.writer.write(batch).await?;
            f.rows += batch.num_rows() as u64;
            if f.writer.in_progress_size() >= row_group_bytes {
                f.writer.flush().await?;
            }
        }
        Ok(())
    }

    fn open(&mut self, partition: &str) -> Result<OpenFile> {
        let n = self.next_n;
        self.next_n += 1;
        let name = self.w.file_name(n);
        let written_at = self
            .a
            .sink
            .write_location(partition, &name, &self.w.temp_name(n));
        let s = &self.a.settings;
        let meta = vec![
            KeyValue::new("auditlog.window_start".into(), self.w.start.to_rfc3339()),
            KeyValue::new("auditlog.window_end".into(), self.w.end.to_rfc3339()),
            KeyValue::new(
                "auditlog.source".into(),
                format!("{}.{}", s.mongo.db_name, s.mongo.collection),
            ),
            KeyValue::new(
                "auditlog.archiver_version".into(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
        ];
        let props = encode::writer_properties(s.archive_compression, s.row_group_rows, meta)?;
        let sink = HashingWriter {
            inner: BufWriter::with_capacity(self.a.sink.store(), written_at.clone(), 8 << 20)
                .with_max_concurrency(2),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let writer = AsyncArrowWriter::try_new(sink, encode::schema(), Some(props))?;
        Ok(OpenFile {
            partition: partition.to_owned(),
            name,
            written_at,
            writer,
            rows: 0,
        })
    }

    async fn close_current(&mut self) -> Result<()> {
        let Some(mut f) = self.current.take() else {
            return Ok(());
        };
        f.writer.finish().await?;
        let hashing = f.writer.into_inner();
        let relative = format!("{}/{}", f.partition, f.name);
        let final_path = self.a.sink.path(&relative);
        self.a.sink.publish(&f.written_at, &final_path).await?;
        self.done.push(FileFacts {
            path: relative,
            rows: f.rows,
            bytes: hashing.bytes,
            sha256: hex(&hashing.hasher.finalize()),
        });
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<FileFacts>> {
        self.close_current().await?;
        Ok(self.done)
    }
}

/// Forwards Parquet bytes to the object store and hashes them on the way.
struct HashingWriter {
    inner: BufWriter,
    hasher: Sha256,
    bytes: u64,
}

impl AsyncFileWriter for HashingWriter {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            self.hasher.update(&bs);
            self.bytes += bs.len() as u64;
            self.inner
                .put(bs)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            self.inner
                .shutdown()
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
    }
}
