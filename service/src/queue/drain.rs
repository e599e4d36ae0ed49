//! The drain: consumes the events' queue and writes the events into MongoDB through the
//! group-commit [`crate::ingest::writer::Writer`], acknowledging each message only once its insert is
//! acknowledged.
//!
//! Up to `AUDIT_AMQP_PREFETCH` messages are unacknowledged at once; each message's events —
//! one, or a group ([`super::group`]) — are submitted to the writer as the message arrives, so
//! the writer's batches are made of whatever the prefetch window holds (at most what keeps
//! every write full, [`Room`]: a group waits for room). A message is acknowledged once every
//! event in it is settled. Per event, by the writer's outcome:
//! - stored → ack;
//! - duplicate `_id` → read the stored copy, the one with the event's `_id` *and* consumer
//!   (never another consumer's event with the same `_id`, which a sharded cluster may hold):
//!   same content (a redelivery of a message whose insert landed, or a producer's retry) → ack,
//!   nothing stored twice; other content or another consumer's event → dead letter
//!   (`id_conflict`);
//! - refused for good by the store → dead letter, alone when it came in a group
//!   ([`super::dead_letter`]); a body that is not an event, or not a group of events → the
//!   whole message is dead-lettered;
//! - store unavailable past the writer's deadline → the drain keeps the message and submits it
//!   again after a backoff, for as long as MongoDB is away: the message stays unacknowledged,
//!   the rest waits in RabbitMQ, and producers never notice.
//!
//! Nothing is acknowledged early, so a crash (even SIGKILL) loses nothing: RabbitMQ delivers the
//! unacknowledged messages again, to this replica after its restart or to another one. On
//! shutdown the consumer is cancelled, the messages being written are finished and
//! acknowledged, and the rest is left to RabbitMQ.
//!
//! Stored messages are acknowledged per wave of settlements, with as few frames as
//! [`super::acks`] allows (one `multiple` ack for a batch, typically).

use std::sync::Arc;
use std::time::Duration;

use auditlog_common::retry::Backoff;
use auditlog_common::schema::fields;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use mongodb::bson::{DateTime, RawDocumentBuf};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::acks::Acks;
use super::contract::CONTENT_TYPE;
use super::dead_letter::{dead_letter, dead_letter_events, reject, Reason};
use super::group::{self, GROUP_CONTENT_TYPE, GROUP_MAX_EVENTS};
use super::link::Link;
use super::publish::Queue;
use crate::event::NewEvent;
use crate::ingest::writer::{SubmitError, WriteOutcome};
use crate::ingest::{refused, resolve_duplicate, Duplicate};
use crate::state::AppState;
use crate::task::{StopHandle, StopSignal};
use crate::watermark::Hold;

/// First and longest wait before a message whose write failed is submitted again.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Wait before consuming again after the consumer failed on a link that is still current.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// Most room the drain keeps in the writer (see [`Room`]); a group is at most
/// [`GROUP_MAX_EVENTS`], a bigger one (published by someone else) takes all the room.
const ROOM_MAX: u32 = 1 << 16;
/// The top-level fields of an event document as the service publishes it.
const DOC_FIELDS: [&str; 5] = [
    fields::ID,
    fields::TYPE,
    fields::CONSUMER,
    fields::CREATED_AT,
    fields::PAYLOAD,
];

/// The running drain.
pub struct DrainTask(StopHandle);

impl DrainTask {
    /// Cancels the consumer, finishes (writes and acknowledges) the messages being written,
    /// and returns; the writer must still be running. Past `within` (the store still away, or
    /// slow to answer) the drain is abandoned: its unacknowledged messages go back to RabbitMQ
    /// when the link closes, and another replica, or this one restarted, writes them.
    pub async fn shutdown(self, within: Duration) {
        if !self.0.stop_within(within).await {
            tracing::warn!(
                within_secs = within.as_secs(),
                "the drain did not finish its writes in time; RabbitMQ delivers its \
                 unacknowledged messages again"
            );
        }
    }
}

/// Starts draining `queue` into the state's writer.
pub fn start(state: Arc<AppState>, queue: Arc<Queue>) -> DrainTask {
    DrainTask(StopHandle::spawn("the drain", |stop| {
        run(state, queue, stop)
    }))
}

/// Events the drain has in the writer at most: what keeps every write full
/// ([`crate::ingest::writer::Writer::full_load`]), within half the writer's queue (so that a window of
/// groups waits here instead of failing its writes as full), and at least one group. More
/// would not drain faster: after an outage it would only pile the whole window onto the
/// returning store at once, and starve the producers' publishes of CPU where they share it.
struct Room {
    permits: Semaphore,
    /// The permits there are: a message with more events than that waits for all of them.
    total: u32,
}

impl Room {
    fn for_writer(state: &AppState) -> Room {
        let total = (state.writer.capacity() / 2)
            .min(state.writer.full_load())
            .clamp(GROUP_MAX_EVENTS, ROOM_MAX as usize);
        Room {
            permits: Semaphore::new(total),
            total: u32::try_from(total).unwrap_or(ROOM_MAX),
        }
    }
}

enum Ended {
    Stopped,
    Lost(String),
}

async fn run(state: Arc<AppState>, queue: Arc<Queue>, mut stop: StopSignal) {
    let mut links = queue.links().watch();
    loop {
        let current = links.borrow_and_update().clone();
        let Some(link) = current else {
            tokio::select! {
                changed = links.changed() => if changed.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
            continue;
        };
        match consume(&state, &queue, &link, &mut links, &mut stop).await {
            Ended::Stopped => break,
            Ended::Lost(why) => {
                tracing::warn!(error = %why, "the drain lost its consumer; consuming again");
                // A new link, or the same one a moment later (the channel alone failed).
                tokio::select! {
                    _ = links.changed() => {}
                    _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }
    tracing::info!("drain stopped");
}

/// Consumes on `link` until it is replaced or fails, or the service stops.
async fn consume(
    state: &Arc<AppState>,
    queue: &Arc<Queue>,
    link: &Arc<Link>,
    links: &mut watch::Receiver<Option<Arc<Link>>>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let settings = queue.settings();
    let subscribe = async {
        let channel = link.consumer().create_channel().await?;
        channel
            .basic_qos(settings.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                settings.queue.clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((channel, consumer))
    };
    let (channel, mut consumer) = match subscribe.await {
        Ok(c) => c,
        Err(e) => return Ended::Lost(format!("cannot consume: {e}")),
    };
    tracing::info!(queue = %settings.queue, prefetch = settings.prefetch, "draining the queue into MongoDB");
    let mut settling = JoinSet::new();
    let mut acks = Acks::default();
    let consuming = Arc::new(Consuming {
        state: state.clone(),
        queue: queue.clone(),
        link: link.clone(),
        channel: channel.clone(),
        stop: stop.clone(),
        room: Room::for_writer(state),
    });
    let ended = loop {
        let mut settled = false;
        tokio::select! {
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    acks.delivered(delivery.delivery_tag);
                    // Held from here, before anything else: see crate::watermark::record.
                    let decoded = decode(&delivery);
                    let tracker = state.watermark.tracker();
                    let holds = decoded.as_ref().map_or_else(|_| Vec::new(), |(events, _)| {
                        events.iter().map(|e| tracker.hold_delivery(e.created_at.timestamp_millis())).collect()
                    });
                    settling.spawn(settle(consuming.clone(), Delivered { delivery, decoded, holds }));
                }
                Some(Err(e)) => break Ended::Lost(e.to_string()),
                None => break Ended::Lost("RabbitMQ cancelled the consumer".into()),
            },
            Some(first) = settling.join_next(), if !settling.is_empty() => {
                // The whole wave the writer just answered, then its acknowledgements.
                record(&mut acks, first);
                while let Some(next) = settling.try_join_next() {
                    record(&mut acks, next);
                }
                settled = true;
            }
            _ = links.changed() => {
                let same = links.borrow().as_ref().is_some_and(|l| Arc::ptr_eq(l, link));
                if !same {
                    break Ended::Lost("the RabbitMQ link was replaced".into());
                }
            }
            _ = stop.wait_for(|s| *s) => break Ended::Stopped,
        }
        // Outside the select: its futures (the stop watch's guard among them) are gone.
        if settled {
            acknowledge(&channel, &mut acks).await;
        }
    };
    match ended {
        // The messages being written finish and are acknowledged; those delivered but not yet
        // taken go back to the queue when the channel closes.
        Ended::Stopped => {
            let _ = channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await;
            while let Some(done) = settling.join_next().await {
                record(&mut acks, done);
            }
            acknowledge(&channel, &mut acks).await;
        }
        // Their acknowledgements could not reach RabbitMQ any more: it delivers them again.
        Ended::Lost(_) => settling.abort_all(),
    }
    if channel.status().connected() {
        let _ = channel.close(200, "drain stopping".into()).await;
    }
    ended
}

/// How [`settle`] left a message.
enum Settled {
    /// Its event is stored: to be acknowledged.
    Stored,
    /// Acknowledged or rejected already (dead-lettered).
    Elsewhere,
    /// Left unacknowledged for RabbitMQ to deliver again (shutdown, lost channel).
    Left,
}

/// Books a finished [`settle`] task; a task that panicked or was aborted leaves its message
/// unsettled, so no `multiple` acknowledgement ever covers it.
fn record(acks: &mut Acks, done: Result<(u64, Settled), tokio::task::JoinError>) {
    match done {
        Ok((tag, Settled::Stored)) => acks.stored(tag),
        Ok((tag, Settled::Elsewhere)) => acks.settled_elsewhere(tag),
        Ok((_, Settled::Left)) => {}
        Err(e) => tracing::error!(error = %e, "a drain task failed; its message is redelivered"),
    }
}

/// Sends the acknowledgements [`Acks`] allows now.
async fn acknowledge(channel: &Channel, acks: &mut Acks) {
    let plan = acks.plan();
    let frames = plan
        .up_to
        .map(|tag| (tag, true))
        .into_iter()
        .chain(plan.single.into_iter().map(|tag| (tag, false)));
    for (tag, multiple) in frames {
        if let Err(e) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
            // Stored already; the redelivery will resolve as a duplicate.
            tracing::debug!(error = %e, tag, multiple, "cannot acknowledge stored events");
        }
    }
}

/// What to do with an event after its write.
enum Settle {
    Ack(&'static str),
    Dead(Reason, String),
    Retry(String),
}

/// How [`write_event`] left an event.
enum End {
    Stored,
    Dead(Reason, String),
    /// Not written, and left to RabbitMQ (shutdown, lost channel).
    Left,
}

/// A message as the drain took it: its events, decoded, each held in the watermark.
struct Delivered {
    delivery: Delivery,
    decoded: Result<(Vec<NewEvent>, bool), String>,
    /// Settled with the message; dropped unsettled, they count as back in the queue.
    holds: Vec<Hold>,
}

/// What every message taken on one consumer channel is settled with.
struct Consuming {
    state: Arc<AppState>,
    queue: Arc<Queue>,
    link: Arc<Link>,
    /// The channel the messages came on: they are acknowledged on it.
    channel: Channel,
    stop: StopSignal,
    room: Room,
}

/// Writes one message's events and settles the message (see the module documentation).
async fn settle(consuming: Arc<Consuming>, delivered: Delivered) -> (u64, Settled) {
    let Delivered {
        delivery,
        decoded,
        holds,
    } = delivered;
    let (tag, settled) = settle_message(&consuming, &delivery, decoded).await;
    if !matches!(settled, Settled::Left) {
        holds.into_iter().for_each(Hold::settle);
    }
    (tag, settled)
}

async fn settle_message(
    consuming: &Consuming,
    delivery: &Delivery,
    decoded: Result<(Vec<NewEvent>, bool), String>,
) -> (u64, Settled) {
    let Consuming {
        state,
        queue,
        link,
        channel,
        stop,
        room,
    } = consuming;
    let tag = delivery.delivery_tag;
    let metrics = &state.metrics;
    if delivery.redelivered {
        metrics.queue.redeliveries.inc();
    }
    let (events, grouped) = match decoded {
        Ok(decoded) => decoded,
        Err(why) => {
            dead_letter(
                link,
                queue.settings(),
                metrics,
                delivery,
                Reason::Malformed,
                &why,
            )
            .await;
            return (tag, Settled::Elsewhere);
        }
    };
    // A group waits for room in the writer rather than fill its queue (and fail its writes
    // as full); the permits go when its events are settled.
    let wanted = u32::try_from(events.len())
        .unwrap_or(u32::MAX)
        .min(room.total);
    let Ok(_room) = room.permits.acquire_many(wanted).await else {
        return (tag, Settled::Left);
    };
    let ends = futures::future::join_all(
        events
            .iter()
            .map(|event| write_event(state, channel, stop, event)),
    )
    .await;
    if ends.iter().any(|end| matches!(end, End::Left)) {
        // Redelivered whole; its stored events then resolve as duplicates.
        return (tag, Settled::Left);
    }
    let dead: Vec<(&NewEvent, Reason, String)> = events
        .iter()
        .zip(ends)
        .filter_map(|(event, end)| match end {
            End::Dead(reason, why) => Some((event, reason, why)),
            _ => None,
        })
        .collect();
    for (event, _, _) in &dead {
        queue.forget(&event.id);
    }
    match dead.as_slice() {
        [] => (tag, Settled::Stored),
        [(_, reason, why)] if !grouped => {
            dead_letter(link, queue.settings(), metrics, delivery, *reason, why).await;
            (tag, Settled::Elsewhere)
        }
        _ => {
            // All of the group's dead events in one publish: either all are in `.dead` once,
            // or none is and the group is rejected whole (to `.dead` as well) — never some of
            // them twice.
            if dead_letter_events(link, queue.settings(), metrics, &dead)
                .await
                .is_err()
            {
                reject(delivery).await;
                return (tag, Settled::Elsewhere);
            }
            (tag, Settled::Stored)
        }
    }
}

/// Writes one event, trying again while the store is away (see the module documentation).
async fn write_event(
    state: &AppState,
    channel: &Channel,
    stop: &watch::Receiver<bool>,
    event: &NewEvent,
) -> End {
    let metrics = &state.metrics;
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        let outcome = match state.writer.submit(event.doc.clone()) {
            Ok(rx) => match rx.await {
                Ok(outcome) => Some(outcome),
                // The writer stopped: leave the message to RabbitMQ.
                Err(_) => return End::Left,
            },
            Err(SubmitError::Full) => None,
            Err(SubmitError::Closed) => return End::Left,
        };
        let settle = match outcome {
            None => Settle::Retry("the write queue is full".into()),
            Some(WriteOutcome::Stored) => {
                // Acknowledged by MongoDB: visible to find from now on.
                let lag_ms =
                    DateTime::now().timestamp_millis() - event.created_at.timestamp_millis();
                metrics
                    .queue
                    .visibility
                    .observe(lag_ms.max(0) as f64 / 1000.0);
                Settle::Ack("stored")
            }
            Some(WriteOutcome::Duplicate {
                after_retry,
                stored,
            }) => match resolve_duplicate(state, event, after_retry, stored).await {
                Ok(Duplicate::Ours(_) | Duplicate::Same(_)) => Settle::Ack("duplicate"),
                Ok(Duplicate::Conflict) => Settle::Dead(
                    Reason::IdConflict,
                    format!(
                        "an event with id {} already exists with different content",
                        event.id
                    ),
                ),
                Err(e) => Settle::Retry(e.to_string()),
            },
            Some(WriteOutcome::Rejected(msg)) => Settle::Dead(Reason::Rejected, refused(&msg)),
            Some(WriteOutcome::Unavailable(msg)) => Settle::Retry(msg),
        };
        match settle {
            Settle::Ack(outcome) => {
                metrics.queue.drained.with_label_values(&[outcome]).inc();
                return End::Stored;
            }
            Settle::Dead(reason, why) => return End::Dead(reason, why),
            Settle::Retry(why) => {
                // Leaving the message unacknowledged hands it back to RabbitMQ: on shutdown, or
                // when its channel is gone (it is being delivered again already).
                if *stop.borrow() || !channel.status().connected() {
                    return End::Left;
                }
                let wait = backoff.next_wait().unwrap_or(RETRY_MAX);
                // The writer logs each failed attempt; one line per message would flood.
                tracing::debug!(id = %event.id, error = %why, retry_in_ms = wait.as_millis() as u64,
                    "event not written yet; keeping its message and trying again");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Describes a missing or mistyped field of the document.
fn field_error<E: std::fmt::Display>(field: &'static str) -> impl Fn(E) -> String {
    move |e| format!("field `{field}`: {e}")
}

/// The events a message carries — one, or a group ([`super::group`]) — each checked to be a
/// document as [`Queue::publish`] makes them; and whether it was a group.
fn decode(delivery: &Delivery) -> Result<(Vec<NewEvent>, bool), String> {
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str());
    match content_type {
        Some(GROUP_CONTENT_TYPE) => {
            let events = group::unpack(delivery.data.clone())?
                .into_iter()
                .map(event_of)
                .collect::<Result<Vec<_>, _>>()?;
            Ok((events, true))
        }
        None | Some(CONTENT_TYPE) => {
            let doc = RawDocumentBuf::from_bytes(delivery.data.clone())
                .map_err(|e| format!("the body is not a BSON document: {e}"))?;
            Ok((vec![event_of(doc)?], false))
        }
        Some(other) => Err(format!(
            "content type {other:?}, expected {CONTENT_TYPE} or {GROUP_CONTENT_TYPE}"
        )),
    }
}

/// The event `doc` is, checked to be a document as [`Queue::publish`] makes them.
fn event_of(doc: RawDocumentBuf) -> Result<NewEvent, String> {
    for field in doc.iter() {
        let (key, _) = field.map_err(|e| format!("the body is not a valid BSON document: {e}"))?;
        if !DOC_FIELDS.contains(&key) {
            return Err(format!("unknown field `{key}` in the event document"));
        }
    }
    let id = doc
        .get_object_id(fields::ID)
        .map_err(field_error(fields::ID))?;
    let created_at = doc
        .get_datetime(fields::CREATED_AT)
        .map_err(field_error(fields::CREATED_AT))?;
    doc.get_str(fields::TYPE)
        .map_err(field_error(fields::TYPE))?;
    doc.get_str(fields::CONSUMER)
        .map_err(field_error(fields::CONSUMER))?;
    if doc
        .get(fields::PAYLOAD)
        .map_err(field_error(fields::PAYLOAD))?
        .is_some_and(|p| p.as_document().is_none())
    {
        return Err("field `payload` is not a document".into());
    }
    Ok(NewEvent {
        id,
        created_at,
        doc,
        producer_id: true,
    })
}
