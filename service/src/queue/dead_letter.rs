//! Moving a message that can never be stored to `<queue>.dead`, with the reason, so it is
//! counted and kept for an operator instead of dropped or redelivered forever.
//!
//! The drain publishes a copy — same body and properties, plus the headers
//! `x-auditlog-reason` (what went wrong, in words) and `x-auditlog-reason-code` (the metric's
//! label) — waits for RabbitMQ's confirm, and only then acknowledges the original. Should that
//! publish fail (RabbitMQ blocks publishers, say), the original is rejected without requeue,
//! and RabbitMQ dead-letters it to the same queue through the queue's own dead-letter settings
//! ([`super::topology`]), with its `x-death` header but without our reason; the reason is then
//! in the log.
//!
//! The events of a group ([`super::group`]) that can never be stored go without the others,
//! all in one message ([`dead_letter_events`]): the event's own document for one, a group of
//! just them for more, with one reason line per event; the drain acknowledges the group once
//! its other events are stored. Should that publish fail, the whole group is rejected as
//! above — so each dead event is in `.dead` once, alone or in its group — and its stored
//! events, replayed from there, resolve as duplicates.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, LongString};
use lapin::{BasicProperties, Confirmation};
use mongodb::bson::{RawArrayBuf, RawDocumentBuf};

use super::contract::{QueueSettings, CONFIRM_TIMEOUT, CONTENT_TYPE};
use super::group::{GROUP_CONTENT_TYPE, GROUP_FIELD};
use super::link::Link;
use crate::event::NewEvent;
use crate::metrics::Metrics;

/// Why a message is dead-lettered; the value of `x-auditlog-reason-code` and of the metric's
/// `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The body is not an event document as the service publishes them.
    Malformed,
    /// MongoDB refused the document for good.
    Rejected,
    /// Its producer id is stored with other content (or for another consumer).
    IdConflict,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Rejected => "rejected",
            Reason::IdConflict => "id_conflict",
        }
    }
}

/// Moves `delivery` to the dead-letter queue and settles it; `message` says why.
pub async fn dead_letter(
    link: &Link,
    settings: &QueueSettings,
    metrics: &Metrics,
    delivery: &Delivery,
    reason: Reason,
    message: &str,
) {
    count(metrics, reason);
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    let copied = publish_copy(
        link,
        settings,
        &delivery.data,
        delivery.properties.clone(),
        reason.code(),
        message,
    )
    .await;
    match copied {
        Ok(()) => {
            tracing::warn!(id = %id, reason = reason.code(), error = %message,
                "event moved to the dead-letter queue");
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                // Redelivered later, dead-lettered again: a second copy there, none lost.
                tracing::warn!(error = %e, "cannot acknowledge a dead-lettered message");
            }
        }
        Err(why) => {
            tracing::error!(id = %id, reason = reason.code(), error = %message, publish_error = %why,
                "cannot publish to the dead-letter queue; rejecting the message so that RabbitMQ dead-letters it");
            reject(delivery).await;
        }
    }
}

/// Publishes the dead events of a group to the dead-letter queue in one message — the event's
/// own document for one, a group document ([`super::group`]) for more — with their reasons, and
/// waits for the confirm; the caller settles the group's message. One publish, so that a
/// failure leaves none of them there (the caller then rejects the group whole) rather than
/// some of them, which the rejected group would bring there a second time. `Err` says why the
/// copy is not there.
pub async fn dead_letter_events(
    link: &Link,
    settings: &QueueSettings,
    metrics: &Metrics,
    dead: &[(&NewEvent, Reason, String)],
) -> Result<(), String> {
    let Some((first, first_reason, _)) = dead.first() else {
        return Ok(());
    };
    for (_, reason, _) in dead {
        count(metrics, *reason);
    }
    let properties = BasicProperties::default()
        .with_timestamp(u64::try_from(first.created_at.timestamp_millis() / 1000).unwrap_or(0));
    let (body, properties) = if let [(event, _, _)] = dead {
        (
            event.doc.as_bytes().to_vec(),
            properties
                .with_content_type(CONTENT_TYPE.into())
                .with_message_id(event.id.to_hex().into()),
        )
    } else {
        let mut events = RawArrayBuf::new();
        for (event, _, _) in dead {
            events.push(event.doc.clone());
        }
        let mut doc = RawDocumentBuf::new();
        doc.append(GROUP_FIELD, events);
        (
            doc.into_bytes(),
            properties.with_content_type(GROUP_CONTENT_TYPE.into()),
        )
    };
    // One reason per line, each naming its event; the code is the one they share, or all of
    // theirs, comma-separated.
    let message = if dead.len() == 1 {
        dead[0].2.clone()
    } else {
        dead.iter()
            .map(|(e, _, why)| format!("{}: {why}", e.id))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut codes: Vec<&str> = dead.iter().map(|(_, r, _)| r.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    let code = codes.join(",");
    let copied = publish_copy(link, settings, &body, properties, &code, &message).await;
    for (event, reason, why) in dead {
        match &copied {
            Ok(()) => tracing::warn!(id = %event.id, reason = reason.code(), error = %why,
                "event moved to the dead-letter queue"),
            Err(e) => tracing::error!(id = %event.id, reason = reason.code(), error = %why,
                publish_error = %e, "cannot publish an event to the dead-letter queue"),
        }
    }
    let _ = first_reason;
    copied
}

/// Rejects `delivery` without requeue: RabbitMQ dead-letters it to the same queue through the
/// queue's own dead-letter settings, with its `x-death` header but without our reason.
pub async fn reject(delivery: &Delivery) {
    if let Err(e) = delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
    {
        tracing::warn!(error = %e, "cannot reject a poison message; it will be redelivered");
    }
}

fn count(metrics: &Metrics, reason: Reason) {
    metrics
        .queue
        .dead_letters
        .with_label_values(&[reason.code()])
        .inc();
    metrics
        .queue
        .drained
        .with_label_values(&["dead_lettered"])
        .inc();
}

/// Publishes `body` to the dead-letter queue with `properties` plus the reason headers, and
/// waits (within [`CONFIRM_TIMEOUT`]) for RabbitMQ's confirm.
async fn publish_copy(
    link: &Link,
    settings: &QueueSettings,
    body: &[u8],
    properties: BasicProperties,
    code: &str,
    message: &str,
) -> Result<(), String> {
    match tokio::time::timeout(
        CONFIRM_TIMEOUT,
        try_publish_copy(link, settings, body, properties, code, message),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(format!("no confirm within {} s", CONFIRM_TIMEOUT.as_secs())),
    }
}

async fn try_publish_copy(
    link: &Link,
    settings: &QueueSettings,
    body: &[u8],
    properties: BasicProperties,
    code: &str,
    message: &str,
) -> Result<(), String> {
    let channel = link
        .publish_channel()
        .ok_or_else(|| "no publish channel".to_owned())?;
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        "x-auditlog-reason".into(),
        AMQPValue::LongString(LongString::from(message)),
    );
    headers.insert(
        "x-auditlog-reason-code".into(),
        AMQPValue::LongString(LongString::from(code)),
    );
    let properties = properties.with_headers(headers).with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            "".into(),
            settings.dead_queue.clone(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => {
            Err(format!("{} does not exist", settings.dead_queue.as_str()))
        }
        Confirmation::Nack(_) => Err("RabbitMQ refused it".into()),
        Confirmation::NotRequested => Err("the channel is not in confirm mode".into()),
    }
}
