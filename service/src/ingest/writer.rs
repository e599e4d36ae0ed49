//! Group commit: the bounded write queue and the tasks that drain it into MongoDB.
//!
//! Handlers [`Writer::submit`] a validated document and wait on a oneshot for *its* outcome.
//! A dispatcher takes whatever is queued — without waiting for more, so a lone request is
//! written at once — into one `insert_many(ordered = false)` of at most
//! `AUDIT_BATCH_MAX_EVENTS` events / `AUDIT_BATCH_MAX_BYTES` bytes. Writes in flight adapt to
//! the load: one while the store keeps up — events arriving meanwhile gather into the next
//! batch, so under load batches grow to what arrives in one round trip and many producers
//! share it — and more, up to `AUDIT_WRITERS`, only while full batches are waiting.
//!
//! A batch that fails as a whole (network, no primary, write concern not met) is retried with
//! common's [`Backoff`] (50 ms doubling to 1 s), with the same documents and therefore the
//! same `_id`s, until the deadline of its oldest event; a retry that finds its own earlier
//! attempt stored gets a duplicate-key error for that document, which the caller resolves
//! ([`WriteOutcome::Duplicate`]). Per-document errors are final when they are the event's own
//! fault; a transient one (a shard's election reported by mongos: NotWritablePrimary,
//! InterruptedDueToReplStateChange, …) and a write-concern error send just the documents
//! concerned again, under the same deadline. The queue is bounded: when it is full, `submit`
//! fails at once (429).
//!
//! Shutdown ([`WriterTask::shutdown`]): the queue stops taking new events, the dispatcher
//! writes what is queued, waits for the batches in flight and returns.

use std::sync::Arc;
use std::time::Duration;

use auditlog_common::error::{codes, is_transient_code};
use auditlog_common::retry::Backoff;
use auditlog_common::schema::fields;
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, RawDocumentBuf};
use mongodb::error::ErrorKind;
use mongodb::options::WriteConcern;
use mongodb::Collection;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::task::{StopHandle, StopSignal};
use crate::watermark::Hold;

/// First wait before retrying a batch that failed as a whole.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest wait for the producers a write answered to send again (see [`LastWrite`]): a
/// loaded producer's next request arrives well within it, and an event that is not part of a
/// wave never waits longer.
const WAVE_MAX: Duration = Duration::from_millis(5);
/// Longest wait between two attempts at a batch.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// What became of one submitted document.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Stored with the configured write concern.
    Stored,
    /// A document with this `_id` already exists: a producer's retry, or — only possible
    /// when `after_retry` — our own earlier attempt that succeeded although we saw an error.
    /// `stored` is the copy with this `_id` and the same consumer (never another consumer's
    /// event with the same `_id`), read with the rest of the batch's duplicates
    /// ([`stored_copies`]); `None` when that read failed or found none (the caller then looks
    /// it up on its own).
    Duplicate {
        after_retry: bool,
        stored: Option<RawDocumentBuf>,
    },
    /// The store refused this document for good (message from the server).
    Rejected(String),
    /// The store did not take the write before the deadline.
    Unavailable(String),
}

/// Why a document could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("write queue is full")]
    Full,
    #[error("the writer has stopped")]
    Closed,
}

/// How the writer batches and retries.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub queue_capacity: usize,
    /// Bytes of queued and in-flight documents, at most (so memory stays bounded whatever
    /// the event sizes).
    pub queue_max_bytes: usize,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub concurrency: usize,
    pub deadline: Duration,
    pub write_concern: WriteConcern,
    /// How long after its `created_at` an event whose write gave up may still land (ms).
    pub lag_ms: i64,
}

struct Pending {
    doc: RawDocumentBuf,
    /// Its share of `queue_max_bytes`, given back once the document is answered.
    _bytes: OwnedSemaphorePermit,
    /// Its place among the `queue_capacity` events waiting for a write — in the channel or
    /// gathered for the next batch — given back when a write takes it.
    waiting: Option<OwnedSemaphorePermit>,
    enqueued: Instant,
    reply: oneshot::Sender<WriteOutcome>,
    /// Direct mode: the event held for `complete_until` until its outcome is known.
    hold: Option<Hold>,
}

/// A handle to the write queue; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Pending>,
    /// One permit per KiB of document bytes queued or being written.
    bytes: Arc<Semaphore>,
    /// One permit per event waiting for a write (`queue_capacity`).
    waiting: Arc<Semaphore>,
    /// Events that fill every write in flight and the next batch.
    full_load: usize,
}

impl Writer {
    /// Starts the dispatcher.
    pub fn start(
        collection: Collection<RawDocumentBuf>,
        options: WriterOptions,
        metrics: Arc<Metrics>,
    ) -> (Writer, WriterTask) {
        let (tx, rx) = mpsc::channel(options.queue_capacity);
        let kib = (options.queue_max_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        let bytes = Arc::new(Semaphore::new(kib));
        let waiting = Arc::new(Semaphore::new(
            options.queue_capacity.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let full_load = options
            .batch_max_events
            .saturating_mul(options.concurrency.saturating_add(1));
        let task = StopHandle::spawn("the writer", |stop| {
            dispatch(rx, stop, collection, options, metrics)
        });
        (
            Writer {
                tx,
                bytes,
                waiting,
                full_load,
            },
            WriterTask(task),
        )
    }

    /// Queues a document; the receiver yields its outcome.
    pub fn submit(
        &self,
        doc: RawDocumentBuf,
    ) -> Result<oneshot::Receiver<WriteOutcome>, SubmitError> {
        self.submit_held(doc, None)
    }

    /// Queues a document with its [`Hold`], which ends with the outcome: at once when it is
    /// known, at the end of the write lag when the writer gave up not knowing whether the
    /// document landed.
    pub fn submit_held(
        &self,
        doc: RawDocumentBuf,
        hold: Option<Hold>,
    ) -> Result<oneshot::Receiver<WriteOutcome>, SubmitError> {
        let kib = u32::try_from(doc.as_bytes().len().div_ceil(1024)).unwrap_or(u32::MAX);
        let permit = match self.bytes.clone().try_acquire_many_owned(kib) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(SubmitError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(SubmitError::Closed),
        };
        let waiting = match self.waiting.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(SubmitError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(SubmitError::Closed),
        };
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            doc,
            _bytes: permit,
            waiting: Some(waiting),
            enqueued: Instant::now(),
            reply,
            hold,
        };
        match self.tx.try_send(pending) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SubmitError::Closed),
        }
    }

    /// Events the write queue holds at most (`queue_capacity`).
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Events that keep the writer as busy as it gets: every write in flight a full batch, and
    /// the next batch waiting. A caller that may hand in more at once (queue mode's drain)
    /// gains nothing past it but a longer queue.
    pub fn full_load(&self) -> usize {
        self.full_load
    }

    /// Events waiting for a write (queued, or gathered for the next batch).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.waiting.available_permits().min(self.tx.max_capacity())
    }
}

/// The running dispatcher.
pub struct WriterTask(StopHandle);

impl WriterTask {
    /// Stops taking new events, writes everything queued, and returns once every queued
    /// event has been answered.
    pub async fn shutdown(self) {
        self.0.stop().await;
    }
}

/// Events gathered for the next `insert_many`.
#[derive(Default)]
struct Gathered {
    events: Vec<Pending>,
    bytes: usize,
}

impl Gathered {
    fn push(&mut self, p: Pending) {
        self.bytes += p.doc.as_bytes().len();
        self.events.push(p);
    }

    fn is_full(&self, options: &WriterOptions) -> bool {
        self.events.len() >= options.batch_max_events || self.bytes >= options.batch_max_bytes
    }
}

/// The last write that finished: how many events it carried, how long it took, and when it
/// ended.
#[derive(Clone, Copy)]
struct LastWrite {
    events: usize,
    took: Duration,
    ended: Instant,
}

impl LastWrite {
    /// Until when gathered events wait for the rest of the wave the last write's answers set
    /// off: the producers it answered send their next events within about one HTTP round
    /// trip, so they are waited for no longer after its end than that write took, and at most
    /// [`WAVE_MAX`]. Later — or once as many events as it carried have gathered — there is no
    /// wave to wait for.
    fn wave_until(&self, gathered: usize) -> Option<Instant> {
        (gathered < self.events).then_some(self.ended + self.took.min(WAVE_MAX))
    }
}

/// Sends gathered events when the store is idle, or when they fill a batch and fewer than
/// `concurrency` writes are in flight. While a write is in flight, events gather: one write at
/// a time while the store keeps up, so under load batches grow to what arrives during one
/// round trip; more in flight only once a batch is full, when waiting would only add latency.
///
/// When a write ends, the producers it answered send again within about a round trip. Sending
/// the first of them alone would split them into a small batch and a large one, turn after
/// turn, and every batch costs the store a fixed price; so while the store is idle, gathered
/// events wait for that wave — until as many have gathered as the last write carried, and
/// never longer after its end than that write took, nor than 5 ms ([`LastWrite::wave_until`]).
/// A lone event, or one arriving after the wave, is written at once.
async fn dispatch(
    mut rx: mpsc::Receiver<Pending>,
    mut stop: StopSignal,
    collection: Collection<RawDocumentBuf>,
    options: WriterOptions,
    metrics: Arc<Metrics>,
) {
    let options = Arc::new(options);
    let mut in_flight = JoinSet::new();
    let mut gathered = Gathered::default();
    let mut last: Option<LastWrite> = None;
    let (mut open, mut closing) = (true, false);
    loop {
        let full = gathered.is_full(&options);
        let idle = in_flight.is_empty();
        let wave = match last {
            Some(last) if idle && !full && open => last
                .wave_until(gathered.events.len())
                .filter(|until| *until > Instant::now()),
            _ => None,
        };
        if !gathered.events.is_empty()
            && ((idle && wave.is_none()) || (full && in_flight.len() < options.concurrency))
        {
            let mut batch = std::mem::take(&mut gathered).events;
            for p in &mut batch {
                p.waiting = None;
            }
            metrics.batch_size.observe(batch.len() as f64);
            let (collection, options, metrics) =
                (collection.clone(), options.clone(), metrics.clone());
            in_flight.spawn(async move {
                let (events, started) = (batch.len(), Instant::now());
                write_batch(batch, &collection, &options, &metrics).await;
                let ended = Instant::now();
                LastWrite {
                    events,
                    took: ended - started,
                    ended,
                }
            });
            continue;
        }
        if !open && gathered.events.is_empty() {
            break;
        }
        let wave_ends = wave.unwrap_or_else(Instant::now);
        tokio::select! {
            next = rx.recv(), if open && !full => match next {
                Some(p) => {
                    gathered.push(p);
                    // Take what is already queued without waiting for more.
                    while !gathered.is_full(&options) {
                        match rx.try_recv() {
                            Ok(p) => gathered.push(p),
                            Err(_) => break,
                        }
                    }
                }
                None => open = false,
            },
            Some(done) = in_flight.join_next(), if !idle => {
                if let Ok(done) = done {
                    last = Some(done);
                }
            }
            // The wave did not come in time: send what gathered.
            _ = tokio::time::sleep_until(wave_ends), if wave.is_some() => last = None,
            _ = stop.wait_for(|s| *s), if !closing => {
                // No new events from now on; recv() keeps yielding what is queued, then None.
                rx.close();
                closing = true;
            }
            else => break,
        }
    }
    while in_flight.join_next().await.is_some() {}
    tracing::info!("write queue drained; writer stopped");
}

async fn write_batch(
    batch: Vec<Pending>,
    collection: &Collection<RawDocumentBuf>,
    options: &WriterOptions,
    metrics: &Metrics,
) {
    let oldest = batch
        .iter()
        .map(|p| p.enqueued)
        .min()
        .unwrap_or_else(Instant::now);
    // 50 ms doubling to 1 s, never past the deadline of the oldest event.
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX).until(oldest + options.deadline);
    let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; batch.len()];
    // Indexes (into `batch`) still to be written; it only shrinks, so every document in it was
    // part of every earlier attempt.
    let mut todo: Vec<usize> = (0..batch.len()).collect();
    loop {
        let started = Instant::now();
        let result = collection
            .insert_many(todo.iter().map(|&i| &batch[i].doc))
            .ordered(false)
            .write_concern(options.write_concern.clone())
            .await;
        metrics
            .write_duration
            .observe(started.elapsed().as_secs_f64());
        let err = match result {
            Ok(_) => {
                for &i in &todo {
                    outcomes[i] = Some(WriteOutcome::Stored);
                }
                break;
            }
            Err(e) => e,
        };
        let attempt = backoff.attempts() + 1;
        if let Some(per_doc) = per_document_outcomes(&err, todo.len(), attempt > 1) {
            let mut again = Vec::new();
            for (&i, outcome) in todo.iter().zip(per_doc) {
                match outcome {
                    Some(o) => outcomes[i] = Some(o),
                    None => again.push(i),
                }
            }
            todo = again;
            if todo.is_empty() {
                break;
            }
        }
        metrics.store_error("insert");
        let Some(wait) = backoff.next_wait() else {
            tracing::error!(error = %err, attempts = attempt, events = todo.len(),
                "giving up: the store did not take these events before the deadline");
            for &i in &todo {
                outcomes[i] = Some(WriteOutcome::Unavailable(err.to_string()));
            }
            break;
        };
        // Rate-limited by the backoff itself: one line per attempt, not per event.
        tracing::warn!(error = %err, attempt, events = todo.len(), retry_in_ms = wait.as_millis() as u64,
            "insert failed; retrying with the same ids");
        tokio::time::sleep(wait).await;
    }
    let mut copies = stored_copies(&batch, &outcomes, collection, metrics).await;
    let mut stored = 0u64;
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        let mut outcome = outcome.unwrap_or_else(|| {
            WriteOutcome::Unavailable("the writer lost track of this event".into())
        });
        if let WriteOutcome::Duplicate { stored, .. } = &mut outcome {
            *stored = copy_key(&pending.doc).and_then(|key| copies.remove(&key));
        }
        if outcome == WriteOutcome::Stored {
            stored += 1;
        }
        if let (Some(hold), WriteOutcome::Unavailable(_)) = (pending.hold, &outcome) {
            // The last attempt may still land, up to the write lag after the event's time.
            let until = hold.at_ms() + options.lag_ms;
            hold.linger(until);
        }
        // The producer may have gone away (closed connection); the event is stored anyway.
        let _ = pending.reply.send(outcome);
    }
    metrics.events_stored.inc_by(stored);
}

/// What identifies a stored copy: `_id` *and* `consumer`. On the shard key
/// `{consumer: "hashed", _id: 1}` an `_id` is unique only per shard, so another consumer's event
/// may carry the same `_id` on another shard; it is not this document's copy.
type CopyKey = (ObjectId, String);

fn copy_key(doc: &RawDocumentBuf) -> Option<CopyKey> {
    let id = doc.get_object_id(fields::ID).ok()?;
    let consumer = doc.get_str(fields::CONSUMER).ok()?;
    Some((id, consumer.to_owned()))
}

/// The stored copies of the batch's documents that met a duplicate `_id`, read in one query
/// (by `_id`, and by `consumer` so that a sharded cluster asks only the shards that own those
/// consumers) and keyed by [`CopyKey`]: the query may also return, for one document's `_id`,
/// another consumer's event whose consumer is among the batch's. Resolving duplicates thus
/// costs one read per batch, not one per event: after a batch was applied but not acknowledged
/// (an outage, a failover), every event of its retry is a duplicate — and the queue-mode drain
/// retries whole prefetch windows. A failed read only logs: each caller then reads its copy on
/// its own.
async fn stored_copies(
    batch: &[Pending],
    outcomes: &[Option<WriteOutcome>],
    collection: &Collection<RawDocumentBuf>,
    metrics: &Metrics,
) -> std::collections::HashMap<CopyKey, RawDocumentBuf> {
    let mut ids = Vec::new();
    let mut consumers = std::collections::BTreeSet::new();
    for (pending, outcome) in batch.iter().zip(outcomes) {
        if !matches!(outcome, Some(WriteOutcome::Duplicate { .. })) {
            continue;
        }
        if let Some((id, consumer)) = copy_key(&pending.doc) {
            ids.push(id);
            consumers.insert(consumer);
        }
    }
    if ids.is_empty() {
        return Default::default();
    }
    let filter = doc! {
        fields::ID: { "$in": &ids },
        fields::CONSUMER: { "$in": consumers.into_iter().collect::<Vec<_>>() },
    };
    let read = async {
        collection
            .find(filter)
            .await?
            .try_collect::<Vec<RawDocumentBuf>>()
            .await
    };
    match read.await {
        Ok(found) => found
            .into_iter()
            .filter_map(|d| Some((copy_key(&d)?, d)))
            .collect(),
        Err(e) => {
            metrics.store_error("find");
            tracing::warn!(error = %e, events = ids.len(),
                "cannot read the stored copies of duplicate events; resolving them one by one");
            Default::default()
        }
    }
}

/// When the failure reports per-document results (a bulk write error, possibly with a
/// write-concern error), the final outcome of each of the `len` documents sent, or `None` for
/// a document to send again: one refused for a transient reason (a shard's election, seen
/// through mongos), or one applied without the requested write concern (sent again, it meets
/// its own copy as a duplicate, which the caller resolves to "stored"). `None` as a whole when
/// the failure is not per-document: the whole attempt is retried.
fn per_document_outcomes(
    err: &mongodb::error::Error,
    len: usize,
    after_retry: bool,
) -> Option<Vec<Option<WriteOutcome>>> {
    let ErrorKind::InsertMany(failure) = err.kind.as_ref() else {
        return None;
    };
    // Documents without their own error were applied; with a write-concern error they are not
    // known to be durable yet.
    let applied = if failure.write_concern_error.is_some() {
        None
    } else {
        Some(WriteOutcome::Stored)
    };
    let mut outcomes = vec![applied; len];
    for e in failure.write_errors.iter().flatten() {
        let Some(slot) = outcomes.get_mut(e.index) else {
            continue;
        };
        *slot = if e.code == codes::DUPLICATE_KEY {
            Some(WriteOutcome::Duplicate {
                after_retry,
                stored: None,
            })
        } else if is_transient_code(e.code) {
            None
        } else {
            Some(WriteOutcome::Rejected(format!(
                "{} (code {})",
                e.message, e.code
            )))
        };
    }
    Some(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_refuses_events_beyond_its_byte_budget() {
        // Nothing listens on port 1: every write waits and retries, so the queue only fills.
        let client = mongodb::Client::with_uri_str(
            "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200&connectTimeoutMS=200",
        )
        .await
        .unwrap();
        let options = WriterOptions {
            queue_capacity: 1000,
            queue_max_bytes: 64 * 1024,
            batch_max_events: 1,
            batch_max_bytes: 1 << 20,
            concurrency: 1,
            deadline: Duration::from_secs(30),
            write_concern: WriteConcern::majority(),
            lag_ms: 40_000,
        };
        let (writer, _task) = Writer::start(
            client.database("x").collection("y"),
            options,
            Arc::new(Metrics::new().unwrap()),
        );
        let mut doc = RawDocumentBuf::new();
        doc.append("s", "x".repeat(20 * 1024));
        let mut held = vec![];
        for _ in 0..3 {
            held.push(writer.submit(doc.clone()).expect("within the byte budget"));
        }
        assert_eq!(
            writer.submit(doc.clone()).err(),
            Some(SubmitError::Full),
            "a fourth 20 KiB event exceeds 64 KiB"
        );
        let mut small = RawDocumentBuf::new();
        small.append("s", "x");
        assert!(writer.submit(small).is_ok(), "small events still fit");
    }

    #[test]
    fn gathered_events_wait_for_the_last_writes_wave_only_briefly() {
        let ended = Instant::now();
        let last = LastWrite {
            events: 64,
            took: Duration::from_millis(3),
            ended,
        };
        assert_eq!(last.wave_until(10), Some(ended + Duration::from_millis(3)));
        assert_eq!(last.wave_until(64), None, "the whole wave is back");
        let slow = LastWrite {
            took: Duration::from_secs(2),
            ..last
        };
        assert_eq!(
            slow.wave_until(1),
            Some(ended + WAVE_MAX),
            "never longer than WAVE_MAX"
        );
        let lone = LastWrite { events: 1, ..last };
        assert_eq!(
            lone.wave_until(1),
            None,
            "after a lone event, the next goes at once"
        );
    }
}
