//! One window's files: its rows written as Parquet to hidden temporary files (one per hour
//! partition, more when a file reaches its row cap) in the staging directory beside the
//! collection's tree ([`crate::sink`]), kept there until the window's count is verified, then
//! published by rename, leftovers of earlier interrupted runs removed, and the footers read
//! back. (The count comes after the run's whole stream: temporaries kept inside the tree until
//! then would leave a killed first run's archive a tree of directories with no file a reader
//! could open.)
//!
//! Memory is one in-progress row group (capped by settings) and an 8 MiB upload buffer of the
//! one open file; batches come from [`crate::pass`].
//!
//! Fencing: the lease is checked before every batch is written and before every file is
//! completed or published (on S3, completing the upload is the publish), so an archiver that
//! lost its lease stops writing before another one may start; what it leaves are hidden
//! temporaries, which the next run of the window removes.

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::file::metadata::KeyValue;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::Settings;
use crate::encode;
use crate::error::{ArchiveError, Result};
use crate::sink::{FileFacts, Sink};
use crate::state::Lease;
use crate::window::{partition_of, Window};

/// A complete file of a window, not yet published (on S3 already under its final name).
#[derive(Debug)]
pub struct Pending {
    written_at: Path,
    pub facts: FileFacts,
}

/// Publishes the files of a window whose count is verified, removes leftovers of interrupted
/// runs (temporaries, or files of an older run with more parts), and reads every footer back:
/// the rows readers will see must be the `rows` streamed. Returns the files as recorded.
pub async fn publish(
    sink: &Sink,
    lease: &Lease,
    w: &Window,
    files: Vec<Pending>,
    rows: u64,
) -> Result<Vec<FileFacts>> {
    for f in &files {
        lease.check()?;
        sink.publish(&f.written_at, &sink.path(&f.facts.path))
            .await?;
    }
    let files: Vec<FileFacts> = files.into_iter().map(|f| f.facts).collect();
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
    lease.check()?;
    let removed = sink.remove_staged(&w.file_prefix()).await?;
    if removed > 0 {
        tracing::info!(window = %w.id(), removed, "removed temporaries of an earlier run");
    }
    let mut read_back = 0u64;
    for f in &files {
        let (r, bytes) = sink.footer_rows(&f.path).await?;
        if r != f.rows || bytes != f.bytes {
            return Err(ArchiveError::ReadBack {
                path: f.path.clone(),
                read_rows: r,
                read_bytes: bytes,
                rows: f.rows,
                bytes: f.bytes,
            });
        }
        read_back += r;
    }
    if read_back != rows {
        return Err(ArchiveError::CountMismatch {
            window: w.id(),
            written: read_back,
            expected: rows,
        });
    }
    Ok(files)
}

/// The files of one window, opened one at a time.
pub struct WindowWriter<'a> {
    sink: &'a Sink,
    settings: &'a Settings,
    source_name: &'a str,
    lease: &'a Lease,
    w: Window,
    current: Option<OpenFile>,
    next_n: u32,
    done: Vec<Pending>,
}

struct OpenFile {
    partition: String,
    name: String,
    written_at: Path,
    writer: AsyncArrowWriter<HashingWriter>,
    rows: u64,
    /// Earliest and latest `created_at` written, epoch milliseconds.
    created_ms: Option<(i64, i64)>,
}

impl<'a> WindowWriter<'a> {
    pub fn new(
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

    /// Appends a batch of one partition's rows.
    pub async fn write(&mut self, partition: &str, batch: &RecordBatch) -> Result<()> {
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
            f.created_ms = widen(f.created_ms, encode::created_at_range(batch));
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
            created_ms: None,
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
        self.done.push(Pending {
            written_at: f.written_at,
            facts: FileFacts {
                path: format!("{}/{}", f.partition, f.name),
                rows: f.rows,
                bytes: hashing.bytes,
                sha256: hex::encode(hashing.hasher.finalize()),
                created_ms: f.created_ms,
            },
        });
        Ok(())
    }

    /// Completes the window's files (hidden until [`publish`]).
    pub async fn finish(mut self) -> Result<Vec<Pending>> {
        self.close_current().await?;
        Ok(self.done)
    }
}

fn widen(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some((lo, hi)), Some((l, h))) => Some((lo.min(l), hi.max(h))),
        (x, None) | (None, x) => x,
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
