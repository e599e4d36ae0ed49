//! One pass over a scope: its events, from one sorted [`Events`] stream, decoded and cut into
//! windows and hour partitions as they arrive. A window is finished — its files completed as
//! hidden temporaries — when the first row of a later window arrives or the stream ends;
//! nothing is published or recorded here (that waits for the count, see [`crate::tally`]).
//!
//! Memory is one Arrow batch (cut at `AUDIT_ARCHIVE_BATCH_SIZE` rows or
//! `AUDIT_ARCHIVE_BATCH_MAX_BYTES` bytes, whichever comes first; never spanning two partitions)
//! and one window's open file, whatever the scope's size.
//!
//! A window that fails (an event that cannot be decoded, a storage error) is left unfinished,
//! its remaining rows passed over, and the pass goes on with the next window. When the stream
//! itself fails, the window in progress fails and the pass ends there. Only a lost lease ends
//! it with an error (or a stream failing before its first row, which the caller's
//! [`Events::peek_time`] has met already).

use std::collections::BTreeMap;

use auditlog_common::schema::fields;
use chrono::{DateTime, Utc};
use mongodb::bson::RawDocumentBuf;

use crate::config::Settings;
use crate::encode::{self, BatchBuilder, BatchLimits, Row};
use crate::error::{ArchiveError, Result};
use crate::export::{Pending, WindowWriter};
use crate::plan::{Scope, OPEN_END};
use crate::progress::Progress;
use crate::sink::Sink;
use crate::state::Lease;
use crate::stream::Events;
use crate::window::{partition_of, Window};

/// A window whose streamed rows are all in complete, unpublished files.
#[derive(Debug)]
pub struct Written {
    pub window: Window,
    pub rows: u64,
    pub files: Vec<Pending>,
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Passed {
    /// Finished windows, oldest first.
    pub written: Vec<Written>,
    /// Windows that failed, with why.
    pub failed: Vec<(Window, ArchiveError)>,
    /// Rows streamed per window start (failed windows included).
    pub streamed: BTreeMap<DateTime<Utc>, u64>,
    /// Set when the stream failed: windows from this one on were not read completely (this
    /// one, the window in progress, is in `failed`).
    pub stopped_at: Option<Window>,
}

impl Passed {
    /// Rows streamed in windows starting before `t`.
    pub fn streamed_before(&self, t: Option<DateTime<Utc>>) -> u64 {
        self.streamed
            .iter()
            .filter(|(start, _)| t.is_none_or(|t| **start < t))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The window being written.
struct Current<'a> {
    window: Window,
    /// `None` once the window failed: its remaining rows are passed over.
    writer: Option<WindowWriter<'a>>,
    failed: bool,
    rows: u64,
}

/// Reads `events` (the stream of `scope`) to its end and writes each window's files.
pub async fn write(
    events: &mut Events,
    scope: &Scope,
    sink: &Sink,
    settings: &Settings,
    source_name: &str,
    lease: &Lease,
    progress: &mut Progress,
) -> Result<Passed> {
    let limits = BatchLimits {
        rows: settings.batch_size as usize,
        bytes: settings.batch_max_bytes,
    };
    let mut out = Passed::default();
    let mut batch = Batch {
        rows: BatchBuilder::new(settings.batch_size as usize),
        partition: String::new(),
    };
    let mut current: Option<Current> = None;
    loop {
        let raw = match events.next().await {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e) => {
                match current.take() {
                    Some(cur) => {
                        tracing::error!(window = %cur.window.id(), error = %e,
                            "reading the events failed; the window was not archived");
                        out.stopped_at = Some(cur.window);
                        out.failed.push((cur.window, e));
                    }
                    // Nothing read yet: the caller's `peek_time` met this error first.
                    None => return Err(e),
                }
                return Ok(out);
            }
        };
        let (row, t) = match decoded(&raw) {
            Ok(r) => r,
            Err(BadRow { error: e, at: t }) => {
                // The row's window fails (without a date: the window in progress).
                let Some(w) = t
                    .map(|t| scope.window_of(t))
                    .or(current.as_ref().map(|c| c.window))
                else {
                    return Err(e);
                };
                if current.as_ref().map(|c| c.window) != Some(w) {
                    finish(&mut current, &mut batch, &mut out, progress).await?;
                    let writer = WindowWriter::new(sink, settings, source_name, &w, lease);
                    current = Some(start(w, writer, scope, progress));
                }
                *out.streamed.entry(w.start).or_default() += 1;
                if let Some(cur) = current.as_mut() {
                    fail(cur, &mut batch, &mut out, e);
                }
                continue;
            }
        };
        let w = scope.window_of(t);
        if current.as_ref().map(|c| c.window) != Some(w) {
            finish(&mut current, &mut batch, &mut out, progress).await?;
            let writer = WindowWriter::new(sink, settings, source_name, &w, lease);
            current = Some(start(w, writer, scope, progress));
        }
        *out.streamed.entry(w.start).or_default() += 1;
        let Some(cur) = current.as_mut() else {
            continue;
        };
        let Some(writer) = cur.writer.as_mut() else {
            continue; // the window failed; its other rows are passed over
        };
        cur.rows += 1;
        // A batch never spans two partitions (files are per partition).
        let partition = partition_of(t);
        let mut result = Ok(());
        if batch.partition != partition {
            result = batch.flush(writer, progress).await;
            batch.partition = partition;
        }
        batch.rows.push(&row);
        if result.is_ok() && batch.rows.is_full(limits) {
            result = batch.flush(writer, progress).await;
        }
        match result {
            Ok(()) => {}
            Err(e @ ArchiveError::LeaseLost { .. }) => return Err(e),
            Err(e) => fail(cur, &mut batch, &mut out, e),
        }
    }
    finish(&mut current, &mut batch, &mut out, progress).await?;
    progress.passed(scope.windows_between(progress.window(), scope.end().unwrap_or(OPEN_END)));
    Ok(out)
}

/// An event that cannot be archived: why, and its creation time when it has one.
struct BadRow {
    error: ArchiveError,
    at: Option<DateTime<Utc>>,
}

/// The row of an event and its creation time.
fn decoded(raw: &RawDocumentBuf) -> std::result::Result<(Row, DateTime<Utc>), BadRow> {
    let row = encode::decode(raw).map_err(|error| BadRow {
        error,
        at: raw
            .get_datetime(fields::CREATED_AT)
            .ok()
            .map(|d| d.to_chrono()),
    })?;
    let t = DateTime::<Utc>::from_timestamp_millis(row.created_at_ms)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    Ok((row, t))
}

/// The Arrow batch being filled, and the partition its rows belong to.
struct Batch {
    rows: BatchBuilder,
    partition: String,
}

impl Batch {
    async fn flush(
        &mut self,
        writer: &mut WindowWriter<'_>,
        progress: &mut Progress,
    ) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rb = self.rows.finish()?;
        writer.write(&self.partition, &rb).await?;
        progress.rows(rb.num_rows() as u64);
        Ok(())
    }
}

/// `w` as the window in progress; moves the progress bar over the windows since the last one.
fn start<'a>(
    w: Window,
    writer: WindowWriter<'a>,
    scope: &Scope,
    progress: &mut Progress,
) -> Current<'a> {
    progress.passed(scope.windows_between(progress.window(), w.start));
    progress.set_window(w.start);
    Current {
        window: w,
        writer: Some(writer),
        failed: false,
        rows: 0,
    }
}

/// The window in progress failed: its writer is dropped (its hidden temporaries are removed by
/// the next run of the window), and so are its unwritten rows.
fn fail(cur: &mut Current, batch: &mut Batch, out: &mut Passed, e: ArchiveError) {
    cur.writer = None;
    if !std::mem::replace(&mut cur.failed, true) {
        tracing::error!(window = %cur.window.id(), error = %e,
            "window not archived; it will be retried on the next run");
        out.failed.push((cur.window, e));
    }
    batch.rows.clear();
    batch.partition.clear();
}

/// Completes the window in progress, if any.
async fn finish(
    current: &mut Option<Current<'_>>,
    batch: &mut Batch,
    out: &mut Passed,
    progress: &mut Progress,
) -> Result<()> {
    let Some(mut cur) = current.take() else {
        return Ok(());
    };
    let Some(mut writer) = cur.writer.take() else {
        return Ok(()); // failed, already reported
    };
    let flushed = batch.flush(&mut writer, progress).await;
    batch.partition.clear();
    let files = match flushed {
        Ok(()) => writer.finish().await,
        Err(e) => Err(e),
    };
    match files {
        Ok(files) => {
            out.written.push(Written {
                window: cur.window,
                rows: cur.rows,
                files,
            });
            Ok(())
        }
        Err(e @ ArchiveError::LeaseLost { .. }) => Err(e),
        Err(e) => {
            tracing::error!(window = %cur.window.id(), error = %e,
                "window not archived; it will be retried on the next run");
            out.failed.push((cur.window, e));
            batch.rows.clear();
            Ok(())
        }
    }
}
