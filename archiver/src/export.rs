//! Archiving one window: take its events from [`Source::stream`] in `(created_at, _id)` order,
//! write them as Parquet to hidden temporary files (one per hour partition, more when a file
//! reaches its row cap), publish each by rename, remove leftovers of earlier interrupted runs,
//! read the files' footers back, and compare the row count with MongoDB's count for the window.
//!
//! Memory is bounded by one cursor batch, one Arrow batch (cut at `AUDIT_ARCHIVE_BATCH_SIZE`
//! rows or `AUDIT_ARCHIVE_BATCH_MAX_BYTES` bytes, whichever comes first) and one in-progress
//! row group (capped by settings), never by the window's size. Resuming a lost cursor is the
//! source's job.
//!
//! Fencing: the lease is checked before every batch is written and before every file is
//! published (on S3, completing the upload is the publish), so an archiver that lost its lease
//! stops writing before another one may start; what it leaves are hidden temporaries, which
//! the next run of the window removes.

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::file::metadata::KeyValue;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::Settings;
use crate::encode::{self, BatchBuilder, BatchLimits};
use crate::error::{ArchiveError, Result};
use crate::progress::Progress;
use crate::sink::{FileFacts, Sink};
use crate::source::Source;
use crate::state::Lease;
use crate::window::{partition_of, Window};

/// What writing a window produced, before it is recorded.
#[derive(Debug)]
pub struct Written {
    pub files: Vec<FileFacts>,
    pub rows: u64,
}

/// Writes the window's files and checks them. Does not record anything.
pub async fn write_window(
    source: &Source,
    sink: &Sink,
    settings: &Settings,
    w: &Window,
    cursor_batch: u32,
    lease: &Lease,
    progress: &mut Progress,
) -> Result<Written> {
    let mut out = WindowWriter::new(sink, settings, source.name(), w, lease);
    let limits = BatchLimits {
        rows: settings.batch_size as usize,
        bytes: settings.batch_max_bytes,
    };
    let mut batch = BatchBuilder::new(settings.batch_size as usize);
    let mut batch_partition: Option<String> = None;
    let mut events = source.stream(w, cursor_batch);

    // MongoDB's count runs beside the stream: on servers that scan (FerretDB) this halves the
    // wall time, and late writes are still caught because the stream must match it exactly.
    let count = source.count(w);
    let stream = async {
        while let Some(raw) = events.next().await? {
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
            if batch.is_full(limits) {
                let rb = batch.finish()?;
                out.write(batch_partition.as_deref().unwrap_or_default(), &rb)
                    .await?;
                progress.rows(rb.num_rows() as u64);
            }
        }
        if !batch.is_empty() {
            let rb = batch.finish()?;
            out.write(batch_partition.as_deref().unwrap_or_default(), &rb)
                .await?;
            progress.rows(rb.num_rows() as u64);
        }
        Ok::<_, ArchiveError>(events.rows())
    };
    let (streamed, expected) = tokio::try_join!(stream, count)?;
    let files = out.finish().await?;

    // Leftovers of interrupted runs (temporaries, or files of an older run with more parts).
    for hour in w.hours() {
        // Another archiver's temporaries of this window have the same names as ours.
        lease.check()?;
        let partition = partition_of(hour);
        let keep: Vec<String> = files
            .iter()
            .filter(|f| f.path.starts_with(&partition))
            .filter_map(|f| f.path.rsplit('/').next().map(str::to_owned))
            .collect();
        let removed = sink
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
        let (rows, bytes) = sink.footer_rows(&f.path).await?;
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
    sink: &'a Sink,
    settings: &'a Settings,
    source_name: &'a str,
    lease: &'a Lease,
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
    fn new(
        sink: &'a Sink,
        settings: &'a Settings,
        source_name: &'a str,
        w: &Window,
        lease: &'a Lease,
    ) -> Self {
        WindowWriter {
            sink,
            settings,
            source_name,
            lease,
            w: *w,
            current: None,
            next_n: 0,
            done: vec![],
        }
    }

    async fn write(&mut self, partition: &str, batch: &RecordBatch) -> Result<()> {
        self.lease.check()?;
        let rotate = match &self.current {
            Some(f) => {
                f.partition != partition
                    || f.rows + batch.num_rows() as u64 > self.settings.max_file_rows
            }
            None => true,
        };
        if rotate {
            self.close_current().await?;
            self.current = Some(self.open(partition)?);
        }
        let row_group_bytes = self.settings.row_group_bytes;
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
            .sink
            .write_location(partition, &name, &self.w.temp_name(n));
        let s = self.settings;
        let meta = vec![
            KeyValue::new("auditlog.window_start".into(), self.w.start.to_rfc3339()),
            KeyValue::new("auditlog.window_end".into(), self.w.end.to_rfc3339()),
            KeyValue::new("auditlog.source".into(), self.source_name.to_owned()),
            KeyValue::new(
                "auditlog.archiver_version".into(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
        ];
        let props = encode::writer_properties(s.archive_compression, s.row_group_rows, meta)?;
        let sink = HashingWriter {
            inner: BufWriter::with_capacity(self.sink.store(), written_at.clone(), 8 << 20)
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
        // Before `finish`: on S3 completing the upload is what publishes the file.
        self.lease.check()?;
        f.writer.finish().await?;
        let hashing = f.writer.into_inner();
        let relative = format!("{}/{}", f.partition, f.name);
        let final_path = self.sink.path(&relative);
        self.lease.check()?;
        self.sink.publish(&f.written_at, &final_path).await?;
        self.done.push(FileFacts {
            path: relative,
            rows: f.rows,
            bytes: hashing.bytes,
            sha256: hex::encode(hashing.hasher.finalize()),
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
