//! Taking events in: one event, or a batch in which each event succeeds or fails on its own.
//! Validation is in [`crate::event`], writing in [`writer`]; this module turns a
//! write outcome into what the producer is told, including idempotent retries: a duplicate
//! `_id` whose copy — the stored event with that `_id` and the same consumer — has the same
//! content is a success (200 with the stored `id`/`created_at`, or 201 when it was this very
//! request's earlier attempt), with other content, or held by another consumer only, a 409.
//!
//! In queue mode the validated event is published to RabbitMQ instead ([`crate::queue`]) and
//! the producer gets 202 once RabbitMQ confirmed it; a repeated producer id is resolved when
//! the drain writes the event, with [`resolve_duplicate`] too. Both `POST /v1/event` paths (the
//! OpenAPI operation and [`crate::http::lean_path`]) and `POST /v1/events` come through here.
//!
//! The API key is enforced here too, so both paths do it alike: the `ingest` right (403) and
//! the key's rate (429; a batch costs its number of events) before the events are parsed, and
//! each event's consumer within the key's consumers (403) once it is validated — in a batch
//! an event outside them is refused on its own and the others are stored.

pub mod writer;

use chrono::{DateTime, Utc};
use mongodb::bson::{Document, RawDocumentBuf};
use poem::http::StatusCode;
use poem_openapi::Object;
use serde_json::Value;

use crate::error::{ApiError, ErrorDetail};
use crate::event::{check_batch_len, format_created_at, parse_event, same_content, NewEvent};
use crate::keys::{Key, Right};
use crate::state::AppState;
use crate::watermark::Hold;
use auditlog_common::schema::fields;
use writer::{SubmitError, WriteOutcome};

/// What a producer gets for a stored event.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "EventAck")]
pub struct EventAck {
    /// ObjectId, 24 hex characters.
    pub id: String,
    /// UTC, millisecond precision.
    pub created_at: String,
}

/// A stored event: newly (201), or earlier with the same id and content (200); or, in queue
/// mode, an event RabbitMQ confirmed (202).
#[derive(Debug, Clone)]
pub enum Accepted {
    Created(EventAck),
    AlreadyStored(EventAck),
    Queued(EventAck),
}

impl Accepted {
    /// The one place an accepted event's status is decided; the OpenAPI operation's response
    /// variants (`api.rs`) name the same three.
    pub fn status(&self) -> StatusCode {
        match self {
            Accepted::Created(_) => StatusCode::CREATED,
            Accepted::AlreadyStored(_) => StatusCode::OK,
            Accepted::Queued(_) => StatusCode::ACCEPTED,
        }
    }

    pub fn into_ack(self) -> EventAck {
        match self {
            Accepted::Created(ack) | Accepted::AlreadyStored(ack) | Accepted::Queued(ack) => ack,
        }
    }
}

/// The outcome of one event of a batch.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BatchItem")]
pub struct BatchItem {
    /// The status this event would have had alone: 201, 200, 202 (queue mode), or an error
    /// status.
    pub status: u16,
    #[oai(skip_serializing_if_is_none)]
    pub id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub created_at: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<ErrorDetail>,
}

/// The answer to a batch: one item per event, in the order sent.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BatchResponse")]
pub struct BatchResponse {
    /// Events stored (201 or 200), or queued (202, queue mode).
    pub accepted: u32,
    /// Events refused.
    pub rejected: u32,
    pub results: Vec<BatchItem>,
}

/// `POST /v1/event`: the key's right and rate, then one event from its JSON text parsed,
/// validated, checked against the key's consumers and stored. `body` is taken by value, to be
/// dropped once parsed: a request body holds its share of the in-flight byte budget until
/// then ([`crate::http::body`]); while the event waits for its write, the write queue's byte bound
/// counts it.
pub async fn ingest_one(
    state: &AppState,
    key: &Key,
    body: impl AsRef<[u8]> + Send,
) -> Result<Accepted, ApiError> {
    ingest_one_with(state, key, move || {
        serde_json::from_slice(body.as_ref())
            .map_err(|e| ApiError::MalformedJson(format!("request body is not valid JSON: {e}")))
    })
    .await
}

/// [`ingest_one`] for a body in another form (a CloudEvent): `translate` turns it into the
/// JSON of one of our events, after the key's right and rate are checked, as our own JSON is
/// parsed then; the body goes with the closure, dropped once translated.
pub async fn ingest_one_with(
    state: &AppState,
    key: &Key,
    translate: impl FnOnce() -> Result<Value, ApiError> + Send,
) -> Result<Accepted, ApiError> {
    key.require(Right::Ingest)?;
    key.spend(1).inspect_err(|e| rate_limited(state, e, 1))?;
    let value = translate()?;
    ingest_value(state, key, value).await
}

/// `POST /v1/events`: the key's right, the batch split into its events, the key's rate for
/// all of them, then each event on its own. `body` is dropped once split, as in
/// [`ingest_one`].
pub async fn ingest_many(
    state: &AppState,
    key: &Key,
    body: impl AsRef<[u8]> + Send,
    ndjson: bool,
) -> Result<BatchResponse, ApiError> {
    let max_events = state.limits.max_batch_events;
    ingest_many_with(state, key, move || {
        split_batch(body.as_ref(), ndjson, max_events)
    })
    .await
}

/// [`ingest_many`] for a batch in another form (CloudEvents): `split` turns it into the JSON
/// of each event (or the error of each that cannot be one), at most `AUDIT_MAX_BATCH_EVENTS`.
pub async fn ingest_many_with(
    state: &AppState,
    key: &Key,
    split: impl FnOnce() -> Result<Vec<Result<Value, ApiError>>, ApiError> + Send,
) -> Result<BatchResponse, ApiError> {
    key.require(Right::Ingest)?;
    let items = split()?;
    key.spend(items.len())
        .inspect_err(|e| rate_limited(state, e, items.len()))?;
    Ok(ingest_batch(state, key, items).await)
}

/// Counts events refused for the key's rate; a batch over the key's burst is refused as too
/// large (413), like one over `AUDIT_MAX_BATCH_EVENTS`, and not counted here.
fn rate_limited(state: &AppState, err: &ApiError, events: usize) {
    if matches!(err, ApiError::RateLimited { .. }) {
        rejected(state, "rate_limited", events);
    }
}

fn rejected(state: &AppState, reason: &str, events: usize) {
    state
        .metrics
        .events_rejected
        .with_label_values(&[reason])
        .inc_by(u64::try_from(events).unwrap_or(u64::MAX));
}

async fn ingest_value(state: &AppState, key: &Key, value: Value) -> Result<Accepted, ApiError> {
    state
        .watermark
        .accepting()
        .map_err(ApiError::Unavailable)
        .inspect_err(|_| rejected(state, "unavailable", 1))?;
    // The event's `created_at`, held by this replica until its fate is known: what
    // `complete_until` waits for.
    let hold = state.watermark.stamp();
    let now = DateTime::<Utc>::from_timestamp_millis(hold.at_ms()).unwrap_or_else(Utc::now);
    let event = parse_event(value, state.limits.event, now)
        .inspect_err(|_| rejected(state, "invalid", 1))?;
    let consumer = event
        .doc
        .get_str(fields::CONSUMER)
        .map_err(|e| ApiError::Internal(format!("a validated event has no consumer: {e}")))?;
    key.check_consumer(Right::Ingest, consumer)
        .inspect_err(|_| rejected(state, "forbidden", 1))?;
    let result = store(state, event, hold).await;
    if let Err(e) = &result {
        let reason = match e {
            ApiError::Busy | ApiError::QueueBusy(_) => "busy",
            ApiError::Unavailable(_) | ApiError::QueueUnavailable(_) => "unavailable",
            ApiError::IdConflict { .. } => "conflict",
            _ => "rejected",
        };
        rejected(state, reason, 1);
    }
    result
}

async fn store(state: &AppState, event: NewEvent, hold: Hold) -> Result<Accepted, ApiError> {
    if let Some(queue) = &state.queue {
        // The event goes to the publisher whole; the answer needs only its id and time.
        let queued = ack(&event);
        queue.publish(event, hold).await?;
        return Ok(Accepted::Queued(queued));
    }
    // The hold goes with the document: should this request go away, the writer still has it.
    let outcome = state
        .writer
        .submit_held(event.doc.clone(), Some(hold))
        .map_err(|e| match e {
            SubmitError::Full => ApiError::Busy,
            SubmitError::Closed => ApiError::Unavailable("the service is shutting down".into()),
        })?
        .await
        .map_err(|_| ApiError::Unavailable("the writer stopped before answering".into()))?;
    match outcome {
        WriteOutcome::Stored => Ok(Accepted::Created(ack(&event))),
        WriteOutcome::Duplicate {
            after_retry,
            stored,
        } => match resolve_duplicate(state, &event, after_retry, stored).await? {
            Duplicate::Ours(ack) => Ok(Accepted::Created(ack)),
            Duplicate::Same(ack) => Ok(Accepted::AlreadyStored(ack)),
            Duplicate::Conflict => Err(ApiError::IdConflict {
                id: event.id.to_hex(),
            }),
        },
        WriteOutcome::Rejected(msg) => Err(ApiError::InvalidEvent(refused(&msg))),
        WriteOutcome::Unavailable(msg) => Err(ApiError::Unavailable(msg)),
    }
}

fn ack(event: &NewEvent) -> EventAck {
    EventAck {
        id: event.id.to_hex(),
        created_at: format_created_at(event.created_at),
    }
}

/// What the store says to an event it refused for good, for its producer (422) and for the
/// dead-letter queue alike.
pub fn refused(msg: &str) -> String {
    format!("the event store refused this event: {msg}")
}

/// What a duplicate `_id` turned out to be. Direct mode answers it (201, 200, 409); the queue's
/// drain acknowledges the first two and dead-letters the third.
#[derive(Debug)]
pub enum Duplicate {
    /// Our own earlier attempt, which reached the store although the write saw an error.
    Ours(EventAck),
    /// The same event, stored earlier (a producer's retry).
    Same(EventAck),
    /// Another event holds the id: other content, or another consumer's event.
    Conflict,
}

/// Resolves a duplicate `_id` against the stored copy — the one with the event's `_id` *and*
/// consumer: the same content is the same event ([`Duplicate::Ours`] when `after_retry` and
/// it is our own earlier attempt, else [`Duplicate::Same`]); other content, or another
/// consumer's event, is a [`Duplicate::Conflict`]. `stored` is the copy the writer read with
/// its batch's other duplicates; without it, the copy is read here. An error is the store's
/// (unavailable, or an answer we cannot read), never the event's.
pub(crate) async fn resolve_duplicate(
    state: &AppState,
    event: &NewEvent,
    after_retry: bool,
    stored: Option<RawDocumentBuf>,
) -> Result<Duplicate, ApiError> {
    // On a sharded cluster another consumer's event may have this `_id` (on another shard): it
    // is not this event's copy, and taking it for one would answer a retry with a conflict.
    let stored = stored.filter(|raw| is_copy_of(raw, event));
    let stored = match stored {
        Some(raw) => raw
            .to_document()
            .map_err(|e| ApiError::Internal(format!("cannot decode a stored event: {e}")))?,
        None => match read_stored(state, event).await? {
            Some(stored) => stored,
            None => return Ok(Duplicate::Conflict),
        },
    };
    let ours = event
        .doc
        .to_document()
        .map_err(|e| ApiError::Internal(format!("cannot decode our own document: {e}")))?;
    if !same_content(&stored, &ours) {
        return Ok(Duplicate::Conflict);
    }
    let stored_at = stored.get_datetime(fields::CREATED_AT).ok().copied();
    if after_retry && stored_at == Some(event.created_at) {
        // Our own earlier attempt reached the store although we saw an error: still a 201.
        return Ok(Duplicate::Ours(ack(event)));
    }
    Ok(Duplicate::Same(EventAck {
        id: event.id.to_hex(),
        created_at: stored_at
            .map(format_created_at)
            .unwrap_or_else(|| format_created_at(event.created_at)),
    }))
}

/// Whether `raw` has `event`'s `_id` and consumer.
fn is_copy_of(raw: &RawDocumentBuf, event: &NewEvent) -> bool {
    let consumer = event.doc.get_str(fields::CONSUMER).ok();
    raw.get_object_id(fields::ID).ok() == Some(event.id)
        && consumer.is_some()
        && raw.get_str(fields::CONSUMER).ok() == consumer
}

/// The stored copy of `event`'s `_id` for the same consumer; `None` when another consumer's
/// event holds that `_id` instead.
async fn read_stored(state: &AppState, event: &NewEvent) -> Result<Option<Document>, ApiError> {
    let read_error = |e: mongodb::error::Error| {
        state.metrics.store_error("find");
        ApiError::Unavailable(e.to_string())
    };
    // By `_id` *and* `consumer`: the shard key's prefix, so on a sharded cluster the read goes
    // to the one shard that holds the first copy instead of to every shard.
    let consumer = event
        .doc
        .get_str(fields::CONSUMER)
        .map_err(|e| ApiError::Internal(format!("our own document has no consumer: {e}")))?;
    let found = state
        .events
        .find_one(mongodb::bson::doc! { fields::ID: event.id, fields::CONSUMER: consumer })
        .await
        .map_err(read_error)?;
    let Some(stored) = found else {
        // The id is taken by another consumer's event (ids are unique per consumer), or the
        // copy cannot be read yet. Asked for another consumer's only: should our own copy
        // appear in between, it is not another's (a retry then reads it).
        let other = state
            .events
            .find_one(mongodb::bson::doc! {
                fields::ID: event.id,
                fields::CONSUMER: { "$ne": consumer },
            })
            .await
            .map_err(read_error)?;
        return match other {
            Some(_) => Ok(None),
            None => Err(ApiError::Unavailable(format!(
                "event {} was reported as existing but cannot be read back; retry",
                event.id
            ))),
        };
    };
    Ok(Some(stored))
}

/// Splits a batch body into its events (each may have failed to parse on its own).
pub fn split_batch(
    bytes: &[u8],
    ndjson: bool,
    max_events: usize,
) -> Result<Vec<Result<Value, ApiError>>, ApiError> {
    let items: Vec<Result<Value, ApiError>> = if ndjson {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ApiError::MalformedJson(format!("NDJSON body is not UTF-8: {e}")))?;
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str(line).map_err(|e| {
                    ApiError::MalformedJson(format!("line {} is not valid JSON: {e}", n + 1))
                })
            })
            .collect()
    } else {
        match serde_json::from_slice(bytes) {
            Ok(Value::Array(items)) => items.into_iter().map(Ok).collect(),
            Ok(_) => {
                return Err(ApiError::InvalidEvent(
                    "a batch must be a JSON array of events (or NDJSON with Content-Type: application/x-ndjson)"
                        .into(),
                ))
            }
            Err(e) => {
                return Err(ApiError::MalformedJson(format!(
                    "request body is not valid JSON: {e}"
                )))
            }
        }
    };
    check_batch_len(items.len(), max_events)?;
    Ok(items)
}

/// Stores every event of a batch concurrently (so they share group commits; in queue mode, one
/// publish per event with the confirms awaited together) and reports each.
async fn ingest_batch(
    state: &AppState,
    key: &Key,
    items: Vec<Result<Value, ApiError>>,
) -> BatchResponse {
    let outcomes = futures::future::join_all(items.into_iter().map(|item| async move {
        match item {
            Ok(value) => ingest_value(state, key, value).await,
            Err(e) => Err(e),
        }
    }))
    .await;
    let mut response = BatchResponse {
        accepted: 0,
        rejected: 0,
        results: Vec::with_capacity(outcomes.len()),
    };
    for outcome in outcomes {
        let item = match outcome {
            Ok(accepted) => (accepted.status().as_u16(), accepted.into_ack()),
            Err(e) => {
                response.rejected += 1;
                response.results.push(BatchItem {
                    status: e.status().as_u16(),
                    id: None,
                    created_at: None,
                    error: Some(e.body().error),
                });
                continue;
            }
        };
        response.accepted += 1;
        response.results.push(BatchItem {
            status: item.0,
            id: Some(item.1.id),
            created_at: Some(item.1.created_at),
            error: None,
        });
    }
    response
}
