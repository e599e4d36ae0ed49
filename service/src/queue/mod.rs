//! Queue mode (`AUDIT_INGEST_MODE=queue`): RabbitMQ holds the events in flight, so a MongoDB
//! outage never reaches producers.
//!
//! A producer's event is validated exactly as in direct mode, gets its `_id` and `created_at`,
//! and is published — its final BSON document, as the message body — to a durable quorum queue
//! with publisher confirms ([`publish`]). The producer gets 202 once RabbitMQ confirmed it: the
//! event is durable in RabbitMQ, not yet visible to `find`. A drain task ([`drain`]) consumes the
//! queue with a prefetch window, writes the events with the same group-commit
//! [`crate::ingest::writer::Writer`] as direct mode, and acknowledges a message only once its insert is
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
pub mod contract;
pub mod dead_letter;
pub mod drain;
pub mod error;
pub mod group;
pub mod link;
pub mod publish;
pub mod recent;
pub mod topology;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::watermark::Watermark;

pub use contract::QueueSettings;
pub use error::QueueError;
pub use link::LinkTask;
pub use publish::Queue;

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
