//! The batching [`Producer`]: `send` puts an event in a bounded buffer and returns; a background
//! task batches, compresses, sends and retries (same ids: each event is stored once).
//!
//! - [`config`]: settings, defaults, metrics hooks;
//! - [`batch`]: held events, batches and request bodies;
//! - [`worker`]: the batching task;
//! - [`retry`]: delivering one batch, with retries;
//! - [`shared`]: what the handles and the task share (the client, the settings, the counts).

mod batch;
mod config;
mod retry;
mod shared;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::AbortHandle;

pub use config::{ProducerConfig, ProducerMetrics, WhenFull};

use crate::error::Error;
use crate::http::Client;
use crate::id::new_event_id;
use crate::types::NewEvent;
use batch::Item;
use shared::{Counters, Shared};
use worker::Msg;

/// Why `send` did not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The buffer stayed full (for `WhenFull::Block`'s `max`, or at once with `WhenFull::Fail`
    /// and `try_send`). The event was not taken.
    #[error("the producer's buffer is full")]
    Full,
    /// The producer was closed. The event was not taken.
    #[error("the producer is closed")]
    Closed,
    /// The event cannot be serialized as JSON.
    #[error("the event cannot be serialized: {0}")]
    Invalid(String),
}

/// Counts since the producer started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Events `send`/`try_send` took.
    pub sent: u64,
    /// Events the service acknowledged (201, 200 "already stored", or 202 in queue mode).
    pub delivered: u64,
    /// Events refused for good, or past their `delivery_timeout`.
    pub failed: u64,
    /// Events sent again after a transient failure (one per event per retry).
    pub retries: u64,
    /// Events taken and not yet delivered or failed: `sent - delivered - failed`.
    pub buffered: u64,
    /// `POST /v1/events` requests made, retries included.
    pub batches: u64,
}

/// A batching producer ([`Client::producer`]). Clones share the same buffer and task; any of
/// them may `close` it.
///
/// Dropping every clone without `close` lets the task send what it holds (retrying as
/// configured) and then end, in the background, as long as the Tokio runtime runs; `close` is
/// the way to know it is done.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Handle>,
}

struct Handle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    closed: AtomicBool,
    close: Arc<Notify>,
    finished: watch::Receiver<bool>,
    abort: Mutex<Option<AbortHandle>>,
}

impl Client {
    /// A batching producer sending through this client. Must be called within a Tokio
    /// runtime: it starts the producer's task.
    pub fn producer(&self, config: ProducerConfig) -> Producer {
        Producer::start(self.clone(), config)
    }
}

impl Producer {
    fn start(client: Client, config: ProducerConfig) -> Producer {
        let config = config.sanitized();
        let (tx, rx) = mpsc::channel(config.buffer_events);
        let shared = Arc::new(Shared {
            client,
            config,
            counters: Counters::default(),
        });
        let close = Arc::new(Notify::new());
        let (done_tx, finished) = watch::channel(false);
        let task = tokio::spawn({
            let shared = shared.clone();
            let close = close.clone();
            async move {
                worker::run(shared, rx, close).await;
                let _ = done_tx.send(true);
            }
        });
        Producer {
            inner: Arc::new(Handle {
                tx,
                shared,
                closed: AtomicBool::new(false),
                close,
                finished,
                abort: Mutex::new(Some(task.abort_handle())),
            }),
        }
    }

    /// Takes `event` (giving it an id when it has none, so its retries are safe) and returns
    /// once it is in the buffer. With the buffer full, `WhenFull::Block { max }` waits for room
    /// up to `max` and `WhenFull::Fail` gives up at once, both with [`SendError::Full`].
    pub async fn send(&self, event: NewEvent) -> Result<(), SendError> {
        let msg = self.prepare(event)?;
        let max = match self.inner.shared.config.when_full {
            WhenFull::Fail => return self.offer(msg),
            WhenFull::Block { max } => max,
        };
        match self.inner.tx.try_send(msg) {
            Ok(()) => self.taken(),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.full();
                match tokio::time::timeout(max, self.inner.tx.send(msg)).await {
                    Ok(Ok(())) => self.taken(),
                    Ok(Err(_)) => Err(SendError::Closed),
                    Err(_) => Err(SendError::Full),
                }
            }
        }
    }

    /// Like `send`, but never waits: [`SendError::Full`] at once when the buffer is full.
    pub fn try_send(&self, event: NewEvent) -> Result<(), SendError> {
        let msg = self.prepare(event)?;
        self.offer(msg)
    }

    fn prepare(&self, mut event: NewEvent) -> Result<Msg, SendError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(SendError::Closed);
        }
        if event.id.is_none() {
            event.id = Some(new_event_id());
        }
        let item = Item::new(event).map_err(|e| SendError::Invalid(e.to_string()))?;
        Ok(Msg::Event(item))
    }

    fn offer(&self, msg: Msg) -> Result<(), SendError> {
        match self.inner.tx.try_send(msg) {
            Ok(()) => self.taken(),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.full();
                Err(SendError::Full)
            }
        }
    }

    fn taken(&self) -> Result<(), SendError> {
        self.inner
            .shared
            .counters
            .sent
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn full(&self) {
        if let Some(m) = &self.inner.shared.config.metrics {
            m.buffer_full();
        }
    }

    /// Waits until every event `send` took before this call is delivered or failed. Waits for
    /// room in the buffer to queue its marker behind them. [`Error::Closed`] once the producer
    /// is closed.
    pub async fn flush(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Stops taking events (`send` answers [`SendError::Closed`] from now on, in every clone),
    /// sends everything held, and ends the task. With `close_timeout` set and passed, the task
    /// is stopped where it is and [`Error::Timeout`] tells how many events were left.
    pub async fn close(self) -> Result<ProducerStats, Error> {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.close.notify_one();
        let mut finished = self.inner.finished.clone();
        let wait = finished.wait_for(|done| *done);
        let outcome = match self.inner.shared.config.close_timeout {
            None => Ok(wait.await.is_ok()),
            Some(limit) => tokio::time::timeout(limit, wait).await.map(|r| r.is_ok()),
        };
        drop(finished);
        match outcome {
            Ok(_) => Ok(self.stats()),
            Err(_) => {
                if let Ok(mut abort) = self.inner.abort.lock() {
                    if let Some(handle) = abort.take() {
                        handle.abort();
                    }
                }
                let stats = self.stats();
                Err(Error::Timeout(format!(
                    "the producer closed with {} events neither delivered nor failed",
                    stats.buffered
                )))
            }
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> ProducerStats {
        let c = &self.inner.shared.counters;
        let sent = c.sent.load(Ordering::Relaxed);
        let delivered = c.delivered.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        ProducerStats {
            sent,
            delivered,
            failed,
            retries: c.retries.load(Ordering::Relaxed),
            buffered: sent.saturating_sub(delivered + failed),
            batches: c.batches.load(Ordering::Relaxed),
        }
    }
}
