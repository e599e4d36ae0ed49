//! The queues queue mode needs, declared idempotently on every connect: the events' queue and
//! its dead-letter queue `<queue>.dead`, both durable quorum queues (replicated, and confirmed
//! only once a majority of RabbitMQ nodes has written the message to disk).
//!
//! The events' queue names the dead-letter queue as its dead-letter target too (default
//! exchange, routing key `<queue>.dead`), so a message rejected without requeue — by an
//! operator, or by the drain when it cannot publish a dead letter itself — lands there instead
//! of being dropped. A declaration with other arguments than an existing queue's fails
//! (PRECONDITION_FAILED); these arguments are part of the contract and do not change.

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;

use super::contract::QueueSettings;

/// Ready messages in the events' queue and in the dead-letter queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Depths {
    pub ready: u64,
    pub dead: u64,
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares both queues (creating them when missing) and returns their depths.
pub async fn declare(channel: &Channel, settings: &QueueSettings) -> Result<Depths, lapin::Error> {
    let dead = channel
        .queue_declare(settings.dead_queue.clone(), durable(), quorum())
        .await?;
    let mut args = quorum();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(settings.dead_queue.as_str())),
    );
    let events = channel
        .queue_declare(settings.queue.clone(), durable(), args)
        .await?;
    Ok(Depths {
        ready: u64::from(events.message_count()),
        dead: u64::from(dead.message_count()),
    })
}

/// The depths of both queues, without declaring anything (a passive declare: fails, closing
/// the channel, when a queue is gone — the caller then reconnects and declares again).
pub async fn depths(channel: &Channel, settings: &QueueSettings) -> Result<Depths, lapin::Error> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..durable()
    };
    let events = channel
        .queue_declare(settings.queue.clone(), passive, FieldTable::default())
        .await?;
    let dead = channel
        .queue_declare(settings.dead_queue.clone(), passive, FieldTable::default())
        .await?;
    Ok(Depths {
        ready: u64::from(events.message_count()),
        dead: u64::from(dead.message_count()),
    })
}
