//! Group publishing: the events producers hand in while earlier publishes wait for their
//! confirms travel together, in one message that RabbitMQ confirms once.
//!
//! Why: a quorum queue pays per message, not per byte — a Raft log entry, a WAL write, a
//! confirm, later a delivery and an acknowledgement. On the benchmark machine RabbitMQ spent
//! 0.07–0.10 ms of CPU per message, more than the service spent on a whole request, and its
//! confirm was the producers' latency tail. This is the writer's group commit at the broker:
//! two publishes ([`PUBLISHERS`]) are in flight at most; a lone event is published at once, alone;
//! under load, what arrived while the publishes were in flight goes in the next one, up to
//! [`GROUP_MAX_EVENTS`] events or [`GROUP_MAX_BYTES`] (an event larger than that goes alone).
//! There is no linger.
//!
//! A group is the BSON document `{"events": [event, ...]}` with content type
//! [`GROUP_CONTENT_TYPE`]; a group of one is the event's own document with content type
//! [`CONTENT_TYPE`], as a single publish always was. Each event keeps its `_id`: the drain
//! writes, resolves duplicates and dead-letters event by event ([`super::drain`]), and every
//! producer in a group hears the group's confirm (or its error).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use mongodb::bson::{RawArrayBuf, RawDocumentBuf};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::contract::{CONFIRM_TIMEOUT, CONTENT_TYPE};
use super::error::QueueError;
use super::link::Links;
use crate::event::NewEvent;
use crate::metrics::Metrics;
use crate::watermark::Hold;

/// The content type of a message holding several events.
pub const GROUP_CONTENT_TYPE: &str = "application/vnd.auditlog.events+bson";
/// The field of a group's document that holds its events, in publish order.
pub const GROUP_FIELD: &str = "events";
/// Most events in one message: with the drain's prefetch of messages, this bounds what one
/// replica's drain holds.
pub const GROUP_MAX_EVENTS: usize = 128;
/// Most bytes of events in one message (the largest event allowed is published alone), so a
/// prefetch window of groups weighs what one of single events did.
pub const GROUP_MAX_BYTES: usize = 256 * 1024;
/// Publishes in flight at most: while RabbitMQ writes one, the next group fills. Measured at 64
/// producers, 1 and 2 gave the largest groups and the least RabbitMQ CPU per event, 8 the
/// most; 2 keeps one publish going while another waits for a slow confirm.
const PUBLISHERS: usize = 2;
/// Events waiting for a publish at most; past it producers get 429.
pub const WAITING_MAX: usize = 8192;

/// What a producer hears about its event's publish.
pub type Reply = Result<(), QueueError>;

struct Pending {
    event: NewEvent,
    reply: oneshot::Sender<Reply>,
    /// Ends when RabbitMQ has the event (or may have it: a publish without its confirm).
    hold: Hold,
    claim: Claim,
}

/// Who has an event waiting for a publisher: a publisher takes it, or its producer, tired of
/// waiting, withdraws it — whichever comes first; the other then knows.
#[derive(Clone, Default)]
pub struct Claim(Arc<AtomicU8>);

const WAITING: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Claim {
    /// The producer gives up; `true` when no publisher took the event (it never will).
    pub fn withdraw(&self) -> bool {
        self.0
            .compare_exchange(WAITING, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// A publisher takes the event; `false` when its producer withdrew it.
    fn take(&self) -> bool {
        self.0
            .compare_exchange(WAITING, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The events waiting, and one taken out that did not fit in the group being made.
struct Inbox {
    rx: mpsc::Receiver<Pending>,
    carry: Option<Pending>,
}

/// Hands events to the publishers.
pub struct Grouper {
    tx: mpsc::Sender<Pending>,
}

impl Grouper {
    /// Starts the publishers on `links`, publishing to `queue`. They stop once the grouper is
    /// dropped and every event handed in is published.
    pub fn start(links: Links, queue: ShortString, metrics: Arc<Metrics>) -> Grouper {
        let (tx, rx) = mpsc::channel(WAITING_MAX);
        let inbox = Arc::new(Mutex::new(Inbox { rx, carry: None }));
        for _ in 0..PUBLISHERS {
            tokio::spawn(publisher(
                inbox.clone(),
                links.clone(),
                queue.clone(),
                metrics.clone(),
            ));
        }
        Grouper { tx }
    }

    /// Hands `event` in; the receiver yields its group's outcome.
    pub fn submit(
        &self,
        event: NewEvent,
        hold: Hold,
        claim: Claim,
    ) -> Result<oneshot::Receiver<Reply>, QueueError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Pending {
            event,
            reply,
            hold,
            claim,
        }) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(QueueError::Congested {
                waiting: WAITING_MAX,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(QueueError::Disconnected(
                "the service is shutting down".into(),
            )),
        }
    }
}

/// One publisher: takes what waits (a group), publishes it, answers its producers; again.
async fn publisher(
    inbox: Arc<Mutex<Inbox>>,
    links: Links,
    queue: ShortString,
    metrics: Arc<Metrics>,
) {
    while let Some(group) = next_group(&inbox).await {
        let sent = tokio::time::timeout(CONFIRM_TIMEOUT, send(&links, &queue, &group)).await;
        let (reply, published) = match sent {
            Ok(Publish::Confirmed) => (Ok(()), true),
            Ok(Publish::Failed(e)) => (Err(e), true),
            Ok(Publish::Unsent(e)) => (Err(e), false),
            Err(_) => (
                Err(QueueError::ConfirmTimeout(CONFIRM_TIMEOUT.as_secs())),
                true,
            ),
        };
        if reply.is_ok() {
            metrics.queue.published_messages.inc();
        }
        for p in group {
            if published {
                // Confirmed, or sent without a confirm: it may be in the queue either way.
                p.hold.hand_over();
            }
            // The producer waits for this answer: it could not withdraw a taken event.
            let _ = p.reply.send(reply.clone());
        }
    }
}

/// Waits for an event, then takes whatever else waits, within the group's limits; `None` once
/// the grouper is gone and nothing waits.
async fn next_group(inbox: &Mutex<Inbox>) -> Option<Vec<Pending>> {
    let mut inbox = inbox.lock().await;
    // What its producer withdrew (it got 503 already) is dropped here, never published.
    let first = loop {
        let p = match inbox.carry.take() {
            Some(p) => p,
            None => inbox.rx.recv().await?,
        };
        if p.claim.take() {
            break p;
        }
    };
    let mut bytes = first.event.doc.as_bytes().len();
    let mut group = vec![first];
    while group.len() < GROUP_MAX_EVENTS {
        let Ok(next) = inbox.rx.try_recv() else { break };
        let len = next.event.doc.as_bytes().len();
        if bytes + len <= GROUP_MAX_BYTES && !next.claim.take() {
            continue;
        }
        if bytes + len > GROUP_MAX_BYTES {
            inbox.carry = Some(next);
            break;
        }
        bytes += len;
        group.push(next);
    }
    Some(group)
}

/// The message for `group`: the event's own document for one, a group document for more.
fn message(group: &[Pending]) -> (Cow<'_, [u8]>, BasicProperties) {
    let first = &group[0].event;
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_timestamp(u64::try_from(first.created_at.timestamp_millis() / 1000).unwrap_or(0));
    if let [only] = group {
        let properties = properties
            .with_content_type(CONTENT_TYPE.into())
            .with_message_id(only.event.id.to_hex().into());
        return (Cow::Borrowed(only.event.doc.as_bytes()), properties);
    }
    let mut events = RawArrayBuf::new();
    for p in group {
        events.push(p.event.doc.clone());
    }
    let mut doc = RawDocumentBuf::new();
    doc.append(GROUP_FIELD, events);
    (
        Cow::Owned(doc.into_bytes()),
        properties.with_content_type(GROUP_CONTENT_TYPE.into()),
    )
}

/// How a group's publish ended.
enum Publish {
    Confirmed,
    /// Sent, and refused or not confirmed: it may be in the queue all the same.
    Failed(QueueError),
    /// Never sent.
    Unsent(QueueError),
}

async fn send(links: &Links, queue: &ShortString, group: &[Pending]) -> Publish {
    let Some(link) = links.current() else {
        return Publish::Unsent(QueueError::Disconnected(
            "not connected; reconnecting".into(),
        ));
    };
    let Some(channel) = link.publish_channel() else {
        return Publish::Unsent(QueueError::Disconnected("no publish channel".into()));
    };
    match publish_group(channel, queue, group).await {
        Ok(()) => Publish::Confirmed,
        Err(e) => Publish::Failed(e),
    }
}

async fn publish_group(channel: &lapin::Channel, queue: &ShortString, group: &[Pending]) -> Reply {
    let (body, properties) = message(group);
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.clone(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &body,
            properties,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(QueueError::Unroutable(queue.as_str().to_owned())),
        Confirmation::Nack(_) => Err(QueueError::Nacked),
        // Every publish channel is in confirm mode; without a confirm nothing is known.
        Confirmation::NotRequested => Err(QueueError::Amqp(
            "the channel is not in confirm mode".into(),
        )),
    }
}

/// The events of a group document (as [`message`] makes them), each still to be checked as an
/// event; `Err` says why the body is not a group.
pub fn unpack(body: Vec<u8>) -> Result<Vec<RawDocumentBuf>, String> {
    let doc = RawDocumentBuf::from_bytes(body)
        .map_err(|e| format!("the body is not a BSON document: {e}"))?;
    let mut events = None;
    for field in doc.iter() {
        let (key, value) =
            field.map_err(|e| format!("the body is not a valid BSON document: {e}"))?;
        if key != GROUP_FIELD {
            return Err(format!("unknown field `{key}` in a group of events"));
        }
        events = Some(
            value
                .as_array()
                .ok_or_else(|| format!("field `{GROUP_FIELD}` is not an array"))?,
        );
    }
    let events = events.ok_or_else(|| format!("a group of events without `{GROUP_FIELD}`"))?;
    let mut out = vec![];
    for item in events {
        let item = item.map_err(|e| format!("field `{GROUP_FIELD}`: {e}"))?;
        let event = item
            .as_document()
            .ok_or_else(|| format!("an element of `{GROUP_FIELD}` is not a document"))?;
        out.push(event.to_raw_document_buf());
    }
    if out.is_empty() {
        return Err("a group of no events".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{oid::ObjectId, rawdoc, DateTime};

    fn pending(n: i32) -> (Pending, oneshot::Receiver<Reply>) {
        let id = ObjectId::new();
        let created_at = DateTime::now();
        let (reply, rx) = oneshot::channel();
        let doc = rawdoc! { "_id": id, "type": "t", "consumer": format!("c{n}"), "created_at": created_at };
        let event = NewEvent {
            id,
            created_at,
            doc,
            producer_id: false,
        };
        let hold = Arc::new(crate::watermark::Tracker::default()).stamp();
        let claim = Claim::default();
        (
            Pending {
                event,
                reply,
                hold,
                claim,
            },
            rx,
        )
    }

    #[test]
    fn a_group_of_one_is_the_event_itself() {
        let (p, _rx) = pending(1);
        let expected = p.event.doc.as_bytes().to_vec();
        let (body, props) = message(std::slice::from_ref(&p));
        assert_eq!(&*body, &expected[..]);
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            CONTENT_TYPE
        );
        assert_eq!(
            props.message_id().as_ref().unwrap().as_str(),
            p.event.id.to_hex()
        );
    }

    #[test]
    fn a_group_splits_into_its_events_in_order() {
        let group: Vec<Pending> = (0..3).map(|n| pending(n).0).collect();
        let (body, props) = message(&group);
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            GROUP_CONTENT_TYPE
        );
        let events = unpack(body.into_owned()).unwrap();
        assert_eq!(events.len(), 3);
        for (got, p) in events.iter().zip(&group) {
            assert_eq!(got.as_bytes(), p.event.doc.as_bytes());
        }
    }

    #[test]
    fn split_refuses_what_is_not_a_group() {
        let not_array = rawdoc! { "events": 1 };
        assert!(unpack(not_array.into_bytes())
            .unwrap_err()
            .contains("not an array"));
        let extra = rawdoc! { "events": [], "x": 1 };
        assert!(unpack(extra.into_bytes())
            .unwrap_err()
            .contains("unknown field"));
        let empty = rawdoc! { "events": [] };
        assert!(unpack(empty.into_bytes())
            .unwrap_err()
            .contains("no events"));
        assert!(unpack(b"nope".to_vec()).is_err());
    }

    #[test]
    fn past_the_waiting_bound_producers_are_told_to_come_back() {
        // No publisher takes anything: the bound is all that stands.
        let (tx, _rx) = mpsc::channel(2);
        let grouper = Grouper { tx };
        let mut waiting = vec![];
        for n in 0..2 {
            let p = pending(n).0;
            waiting.push(grouper.submit(p.event, p.hold, p.claim).unwrap());
        }
        let p = pending(2).0;
        let refused = grouper.submit(p.event, p.hold, p.claim).unwrap_err();
        assert!(matches!(refused, QueueError::Congested { .. }), "{refused}");
        let api = crate::error::ApiError::from(refused);
        assert_eq!(api.status(), poem::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(api.retry_after_secs().is_some());
    }

    #[tokio::test]
    async fn an_event_its_producer_withdrew_is_never_published() {
        let (tx, rx) = mpsc::channel(WAITING_MAX);
        let inbox = Mutex::new(Inbox { rx, carry: None });
        let (a, _ra) = pending(1);
        let (b, _rb) = pending(2);
        let (c, _rc) = pending(3);
        let (a_claim, c_claim) = (a.claim.clone(), c.claim.clone());
        let b_id = b.event.id;
        for p in [a, b, c] {
            assert!(tx.try_send(p).is_ok());
        }
        assert!(a_claim.withdraw(), "nothing took it yet");
        assert!(c_claim.withdraw());
        let group = next_group(&inbox).await.unwrap();
        assert_eq!(group.len(), 1);
        assert_eq!(group[0].event.id, b_id, "only the event still wanted");
        assert!(
            !group[0].claim.withdraw(),
            "a taken event cannot be withdrawn"
        );
    }

    #[tokio::test]
    async fn what_waits_goes_in_one_group_within_the_limits() {
        let (tx, rx) = mpsc::channel(WAITING_MAX);
        let inbox = Mutex::new(Inbox { rx, carry: None });
        let mut keep = vec![];
        for n in 0..(GROUP_MAX_EVENTS as i32 + 5) {
            let (p, r) = pending(n);
            keep.push(r);
            assert!(tx.try_send(p).is_ok());
        }
        assert_eq!(next_group(&inbox).await.unwrap().len(), GROUP_MAX_EVENTS);
        assert_eq!(next_group(&inbox).await.unwrap().len(), 5);
        // A big event closes the group before it and starts the next one.
        let (small, _a) = pending(0);
        let (mut big, _b) = pending(1);
        big.event.doc = rawdoc! { "pad": "x".repeat(GROUP_MAX_BYTES) };
        assert!(tx.try_send(small).is_ok());
        assert!(tx.try_send(big).is_ok());
        assert_eq!(next_group(&inbox).await.unwrap().len(), 1);
        assert_eq!(next_group(&inbox).await.unwrap().len(), 1);
        drop(tx);
        assert!(next_group(&inbox).await.is_none());
    }
}
