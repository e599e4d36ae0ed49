//! Queue mode (`AUDIT_INGEST_MODE=queue`): RabbitMQ holds the events in flight, so a MongoDB
//! outage never reaches producers.
//!
//! A producer's event is validated exactly as in direct mode, gets its `_id` and `created_at`,
//! and is published — its final BSON document, as the message body — to a durable quorum queue
//! with publisher confirms ([`publish`]). The producer gets 202 once RabbitMQ confirmed it: the
//! event is durable in RabbitMQ, not yet visible to `find`. A drain task ([`drain`]) consumes the
//! queue with a prefetch window, writes the events with the same group-commit
//! [`crate::writer::Writer`] as direct mode, and acknowledges a message only once its insert is
//! acknowledged; a redelivered message meets its own copy as a duplicate `_id`, which resolves to
//! "already stored", so nothing is stored twice. Messages that can never be stored go to
//! `<queue>.dead` with the reason ([`dead_letter`]).
//!
//! **Why the drain runs in every replica**, not as a deployment of its own: one deployment is
//! one thing to configure, scale and watch; the replicas' consumers share the quorum queue
//! (RabbitMQ spreads messages over them, and hands a lost consumer's unacknowledged messages to
//! the others), so draining capacity grows with the replicas, like ingest capacity; and the
//! drain reuses the writer's group commit — batching, retries with the same ids, per-document
//! outcomes — instead of a second copy of it.
//!
//! [`link`] keeps one connection per replica (reconnecting with backoff), declares the
//! topology ([`topology`]) on every connect, and polls the queue's depth, which
//! [`publish`] compares with `AUDIT_AMQP_MAX_DEPTH` (429 past it). [`recent`] remembers the ids
//! this replica published, for `GET /v1/event/{id}` to answer "queued".

mod acks;
pub mod dead_letter;
pub mod drain;
pub mod group;
pub mod link;
pub mod publish;
pub mod recent;
pub mod topology;

use std::sync::Arc;

use lapin::types::ShortString;

use crate::config::{Config, IngestMode};
use crate::metrics::Metrics;
use crate::watermark::Watermark;

pub use link::LinkTask;
pub use publish::Queue;

/// Why RabbitMQ did not take an event. Mapped to HTTP in [`crate::error`] only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The queue holds more ready messages than `AUDIT_AMQP_MAX_DEPTH` (429).
    #[error("the event queue holds {depth} events waiting, over AUDIT_AMQP_MAX_DEPTH ({max}); retry later")]
    Full { depth: u64, max: u64 },
    /// More events wait for a publish than this replica holds (RabbitMQ confirms slower than
    /// producers send) (429).
    #[error("{waiting} events are waiting to be published to the event queue; retry later")]
    Congested { waiting: usize },
    /// No connection to RabbitMQ right now (it is down, unreachable, or we are reconnecting).
    #[error("the event queue (RabbitMQ) is not reachable: {0}")]
    Disconnected(String),
    /// RabbitMQ blocks publishers (memory or disk alarm).
    #[error("the event queue (RabbitMQ) is blocking publishers (memory or disk alarm)")]
    Blocked,
    /// RabbitMQ answered the publish with a negative confirm.
    #[error("the event queue (RabbitMQ) refused the event")]
    Nacked,
    /// The queue does not exist (deleted since we declared it): the message was returned.
    #[error("the event queue {0} does not exist in RabbitMQ; it is declared again on reconnect")]
    Unroutable(String),
    /// No confirm within the time limit: the event was sent, and may be stored all the same
    /// (retry with the same id).
    #[error("the event queue (RabbitMQ) did not confirm the event within {0} s; it may be stored all the same: retry with the same id")]
    ConfirmTimeout(u64),
    /// No publisher was free within the time limit: the event was not sent, and never will be.
    #[error("the event was not published: no publisher was free within {0} s (RabbitMQ is slow to confirm); it is not stored")]
    NotPublished(u64),
    /// The AMQP operation failed (connection or channel closed, protocol error).
    #[error("the event queue (RabbitMQ) failed: {0}")]
    Amqp(String),
}

impl From<lapin::Error> for QueueError {
    fn from(e: lapin::Error) -> Self {
        QueueError::Amqp(e.to_string())
    }
}

/// Queue mode's settings, from the [`Config`].
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub url: String,
    /// The events' queue.
    pub queue: ShortString,
    /// `<queue>.dead`.
    pub dead_queue: ShortString,
    pub max_depth: u64,
    pub prefetch: u16,
}

impl QueueSettings {
    /// The settings when the config asks for queue mode (and has passed
    /// [`Config::validate`]); `None` in direct mode.
    pub fn from_config(config: &Config) -> Option<QueueSettings> {
        if config.ingest_mode != IngestMode::Queue {
            return None;
        }
        let queue = config.amqp_queue.trim();
        Some(QueueSettings {
            url: config.amqp_url.clone().unwrap_or_default(),
            queue: queue.into(),
            dead_queue: format!("{queue}.dead").into(),
            max_depth: config.amqp_max_depth,
            prefetch: config.amqp_prefetch,
        })
    }
}

/// Starts queue mode's connection (and its depth polling) and returns the publishing handle
/// for the handlers; start the drain ([`drain::start`]) once the application state exists.
pub fn start(
    settings: QueueSettings,
    metrics: Arc<Metrics>,
    watermark: Arc<Watermark>,
) -> (Arc<Queue>, LinkTask) {
    let (links, task) = link::start(settings.clone(), metrics.clone(), watermark);
    (Arc::new(Queue::new(settings, links, metrics)), task)
}
