//! The keyset stream of a scope's events: one query over all its runs, sorted by
//! `(created_at, _id)`, so a cursor lost mid-way (timeout, failover) resumes after the last
//! row it delivered instead of starting over ([`crate::source`] says which errors are retried,
//! and how often).
//!
//! A task of its own reads the cursor one batch ahead of the writer: while the writer encodes
//! a batch, the server prepares the next (the driver asks for a batch only when the previous
//! one is used up). Rows cross in chunks of [`CHUNK_ROWS`] rows or [`CHUNK_BYTES`] bytes, and
//! at most about one cursor batch of them waits, so memory stays bounded by the batch size.

use std::collections::VecDeque;

use auditlog_common::retry::Backoff;
use auditlog_common::schema::fields;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, RawDocumentBuf};
use mongodb::{Collection, Cursor};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{ArchiveError, Result};
use crate::plan::Scope;
use crate::source::{
    cursor_resumable, query_retryable, scope_filter, Key, Source, FIRST_RETRY_WAIT, MAX_RETRIES,
    MAX_RETRY_WAIT,
};

/// Rows handed from the reader to the writer at a time, at most: few enough that the writer
/// never waits long on a chunk still filling while the next cursor batch is fetched.
pub const CHUNK_ROWS: usize = 64;
/// Bytes of rows handed over at a time, at most (large events).
pub const CHUNK_BYTES: usize = 1 << 20;

/// The events of a scope, in keyset order, read ahead by a task.
pub struct Events {
    rx: mpsc::Receiver<Result<Vec<RawDocumentBuf>>>,
    reader: JoinHandle<()>,
    chunk: VecDeque<RawDocumentBuf>,
    done: bool,
    rows: u64,
}

impl Events {
    /// Starts reading the scope, `batch_size` documents per cursor batch.
    pub fn open(source: &Source, scope: &Scope, batch_size: u32) -> Self {
        let reader = Reader {
            events: source.raw_events(),
            scope: scope.clone(),
            batch_size,
            cursor: None,
            last_key: None,
            rows: 0,
            backoff: Backoff::new(FIRST_RETRY_WAIT, MAX_RETRY_WAIT),
        };
        // About one cursor batch of rows waits in the channel.
        let chunks = (batch_size as usize).div_ceil(CHUNK_ROWS).max(2);
        let (tx, rx) = mpsc::channel(chunks);
        Events {
            rx,
            reader: tokio::spawn(reader.run(tx)),
            chunk: VecDeque::new(),
            done: false,
            rows: 0,
        }
    }

    /// The next event, or `None` after the last one. After an error, `None`.
    pub async fn next(&mut self) -> Result<Option<RawDocumentBuf>> {
        if !self.fill().await? {
            return Ok(None);
        }
        self.rows += 1;
        Ok(self.chunk.pop_front())
    }

    /// `created_at` of the next event, without taking it: the first row of a scope is its
    /// oldest unarchived event (the TTL guard's question).
    pub async fn peek_time(&mut self) -> Result<Option<DateTime<Utc>>> {
        if !self.fill().await? {
            return Ok(None);
        }
        Ok(self
            .chunk
            .front()
            .and_then(|raw| raw.get_datetime(fields::CREATED_AT).ok())
            .map(|d| d.to_chrono()))
    }

    /// Rows taken so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether a row is waiting; waits for the reader when none is.
    async fn fill(&mut self) -> Result<bool> {
        while self.chunk.is_empty() {
            if self.done {
                return Ok(false);
            }
            match self.rx.recv().await {
                Some(Ok(rows)) => self.chunk.extend(rows),
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => self.done = true,
            }
        }
        Ok(true)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // An unfinished stream (a failed window, a lost lease) must not keep reading.
        self.reader.abort();
    }
}

/// The cursor side: the keyset query, its resumption and its retries.
struct Reader {
    events: Collection<RawDocumentBuf>,
    scope: Scope,
    batch_size: u32,
    cursor: Option<Cursor<RawDocumentBuf>>,
    /// `(created_at, _id)` of the last row read: where a new cursor starts.
    last_key: Option<Key>,
    rows: u64,
    backoff: Backoff,
}

impl Reader {
    async fn run(mut self, tx: mpsc::Sender<Result<Vec<RawDocumentBuf>>>) {
        if self.scope.is_empty() {
            return; // nothing to read: no query (on a server that scans, a whole scan)
        }
        loop {
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            let mut bytes = 0;
            let end = loop {
                match self.next().await {
                    Ok(Some(raw)) => {
                        bytes += raw.as_bytes().len();
                        chunk.push(raw);
                        if chunk.len() >= CHUNK_ROWS || bytes >= CHUNK_BYTES {
                            break None;
                        }
                    }
                    Ok(None) => break Some(Ok(())),
                    Err(e) => break Some(Err(e)),
                }
            };
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return; // the writer stopped listening
            }
            match end {
                None => {}
                Some(Ok(())) => return,
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }

    /// The next event, or `None` after the last one.
    async fn next(&mut self) -> Result<Option<RawDocumentBuf>> {
        loop {
            if self.cursor.is_none() {
                match self.open().await {
                    Ok(c) => self.cursor = Some(c),
                    Err(e) => {
                        let retryable = query_retryable(&e);
                        self.retry(e, retryable, "find window events", "query failed; retrying")
                            .await?;
                        continue;
                    }
                }
            }
            let Some(cursor) = self.cursor.as_mut() else {
                continue;
            };
            match cursor.try_next().await {
                Ok(Some(raw)) => {
                    self.remember(&raw);
                    return Ok(Some(raw));
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.cursor = None;
                    let resumable = cursor_resumable(&e);
                    self.retry(
                        e,
                        resumable,
                        "read window events",
                        "cursor lost; resuming after the last archived row",
                    )
                    .await?;
                }
            }
        }
    }

    /// A cursor from the start of the scope, or after the last row read. (`&mut self` because
    /// a cursor is not `Sync`, so a `&Self` held across an await is not `Send`.)
    async fn open(&mut self) -> mongodb::error::Result<Cursor<RawDocumentBuf>> {
        self.events
            .find(scope_filter(&self.scope, self.last_key.as_ref()))
            .sort(doc! { fields::CREATED_AT: 1, fields::ID: 1 })
            .batch_size(self.batch_size)
            .await
    }

    /// Waits before the next attempt, or fails with `e` when it is not `retryable` or the
    /// retries are used up.
    async fn retry(
        &mut self,
        e: mongodb::error::Error,
        retryable: bool,
        operation: &'static str,
        message: &'static str,
    ) -> Result<()> {
        if !retryable || self.backoff.attempts() >= MAX_RETRIES {
            return Err(ArchiveError::mongo(operation)(e));
        }
        tracing::warn!(
            after = %self.last_key.as_ref().map(|k| k.0.to_chrono().to_rfc3339()).unwrap_or_default(),
            error = %e,
            attempt = self.backoff.attempts() + 1,
            after_rows = self.rows,
            retry_in_ms = self.backoff.next_delay().as_millis() as u64,
            "{message}"
        );
        if self.backoff.wait().await {
            Ok(())
        } else {
            Err(ArchiveError::mongo(operation)(e))
        }
    }

    fn remember(&mut self, raw: &RawDocumentBuf) {
        self.rows += 1;
        // A row without a `created_at` date does not match the filter; were one to arrive, it
        // fails to decode, which fails its window before any resumption could use this key.
        if let Ok(ts) = raw.get_datetime(fields::CREATED_AT) {
            let id = raw
                .get(fields::ID)
                .ok()
                .flatten()
                .and_then(|v| Bson::try_from(v).ok())
                .unwrap_or(Bson::Null);
            self.last_key = Some((ts, id));
        }
    }
}
