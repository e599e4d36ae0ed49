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
//! An event of a group ([`super::group`]) that can never be stored goes alone: the drain
//! publishes its own document with the reason ([`dead_letter_event`]) and acknowledges the
//! group once its other events are stored. Should that publish fail, the whole group is
//! rejected as above; its stored events, replayed from there, resolve as duplicates.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, LongString};
use lapin::{BasicProperties, Confirmation};

use super::link::Link;
use super::publish::{CONFIRM_TIMEOUT, CONTENT_TYPE};
use super::QueueSettings;
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
        reason,
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

/// Publishes one event of a group to the dead-letter queue, as a message of its own (the
/// event's document, as a single publish makes it), and waits for the confirm; the caller
/// settles the group's message. `Err` says why the copy is not there.
pub async fn dead_letter_event(
    link: &Link,
    settings: &QueueSettings,
    metrics: &Metrics,
    event: &NewEvent,
    reason: Reason,
    message: &str,
) -> Result<(), String> {
    count(metrics, reason);
    let properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(event.id.to_hex().into())
        .with_timestamp(u64::try_from(event.created_at.timestamp_millis() / 1000).unwrap_or(0));
    let copied = publish_copy(
        link,
        settings,
        event.doc.as_bytes(),
        properties,
        reason,
        message,
    )
    .await;
    match &copied {
        Ok(()) => tracing::warn!(id = %event.id, reason = reason.code(), error = %message,
            "event moved to the dead-letter queue"),
        Err(why) => tracing::error!(id = %event.id, reason = reason.code(), error = %message,
            publish_error = %why, "cannot publish an event to the dead-letter queue"),
    }
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
    reason: Reason,
    message: &str,
) -> Result<(), String> {
    match tokio::time::timeout(
        CONFIRM_TIMEOUT,
        try_publish_copy(link, settings, body, properties, reason, message),
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
    reason: Reason,
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
        AMQPValue::LongString(LongString::from(reason.code())),
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
