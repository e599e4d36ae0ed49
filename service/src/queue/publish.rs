//! The producer's side of queue mode: publishing one validated event and waiting for
//! RabbitMQ's confirm.
//!
//! The message carries the event's final BSON document — `_id` and `created_at` already fixed
//! — so the drain writes exactly what the producer was acknowledged for, and a redelivery
//! carries the same `_id` (which is what makes it harmless); events published at the same
//! moment share a message ([`super::group`]). Persistent, `mandatory` (a queue deleted behind
//! our back returns the message instead of dropping it), confirmed within [`CONFIRM_TIMEOUT`]. Before publishing, two checks answer at once rather than let producers
//! wait: the queue past `AUDIT_AMQP_MAX_DEPTH` (429) and RabbitMQ blocking publishers (503).

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use tokio::time::Instant;

use super::contract::{QueueSettings, CONFIRM_TIMEOUT};
use super::error::QueueError;
use super::group::{Claim, Grouper};
use super::link::Links;
use super::recent::Recent;
use crate::event::NewEvent;
use crate::metrics::Metrics;
use crate::watermark::Hold;

/// Queue mode's handle for the handlers: publishing, readiness, and the ids this replica
/// published.
pub struct Queue {
    settings: QueueSettings,
    links: Links,
    grouper: Grouper,
    metrics: Arc<Metrics>,
    recent: Recent,
}

impl Queue {
    pub(super) fn new(settings: QueueSettings, links: Links, metrics: Arc<Metrics>) -> Queue {
        let grouper = Grouper::start(links.clone(), settings.queue.clone(), metrics.clone());
        Queue {
            settings,
            links,
            grouper,
            metrics,
            recent: Recent::default(),
        }
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Publishes one event — with the events other producers publish at the same moment, in one
    /// message ([`super::group`]) — and returns once RabbitMQ confirmed it (durable there).
    /// `hold` keeps the event in this replica's watermark until RabbitMQ has it.
    ///
    /// An event is never published after its producer was answered: when the wait runs out
    /// while the event still waits for a publisher, it is withdrawn ([`Claim`]) and the
    /// producer gets 503; once a publisher took it, the producer waits for that publish's own
    /// outcome (bounded by the same timeout) instead.
    pub async fn publish(&self, event: NewEvent, hold: Hold) -> Result<(), QueueError> {
        let link = self
            .links
            .current()
            .ok_or_else(|| QueueError::Disconnected("not connected; reconnecting".into()))?;
        if link.blocked() {
            return Err(QueueError::Blocked);
        }
        let depth = link.ready();
        if depth > self.settings.max_depth {
            return Err(QueueError::Full {
                depth,
                max: self.settings.max_depth,
            });
        }
        let started = Instant::now();
        let id = event.id;
        // Remembered before it is published, not once confirmed: the drain may take the
        // message, and forget a dead-lettered event, before this confirm is back here; a
        // later insert would then call that event "queued" for good.
        // Only an id this publish remembered is forgotten if it fails: a producer's retry of an
        // event published before must not make that one read as "unknown".
        let remembered = self.recent.insert(id);
        let forget = |recent: &Recent| {
            if remembered {
                recent.remove(&id);
            }
        };
        let claim = Claim::default();
        let mut reply = match self.grouper.submit(event, hold, claim.clone()) {
            Ok(reply) => reply,
            Err(e) => {
                forget(&self.recent);
                return Err(e);
            }
        };
        // The wait for a publisher counts against the same limit as the confirm: a producer
        // hears within CONFIRM_TIMEOUT either way.
        let result = match tokio::time::timeout(CONFIRM_TIMEOUT, &mut reply).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(QueueError::Disconnected("the publisher stopped".into())),
            Err(_) if claim.withdraw() => Err(QueueError::NotPublished(CONFIRM_TIMEOUT.as_secs())),
            // A publisher has it: its outcome is the truth, and it comes within its own timeout.
            Err(_) => match tokio::time::timeout(CONFIRM_TIMEOUT, reply).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(QueueError::Disconnected("the publisher stopped".into())),
                Err(_) => Err(QueueError::ConfirmTimeout(CONFIRM_TIMEOUT.as_secs())),
            },
        };
        if result.is_ok() {
            self.metrics
                .queue
                .confirm_latency
                .observe(started.elapsed().as_secs_f64());
            self.metrics.queue.published.inc();
        } else {
            forget(&self.recent);
        }
        result
    }

    /// Readiness: connected, and RabbitMQ answered a depth poll within `within`.
    pub fn ready(&self, within: Duration) -> Result<(), QueueError> {
        match self.links.current() {
            Some(link) if link.answered_within(within) => Ok(()),
            Some(_) => Err(QueueError::Disconnected(format!(
                "RabbitMQ did not answer within {} s",
                within.as_secs()
            ))),
            None => Err(QueueError::Disconnected("not connected".into())),
        }
    }

    /// Whether this replica published `id` recently (and so it is queued unless stored).
    pub fn published_recently(&self, id: &ObjectId) -> bool {
        self.recent.contains(id)
    }

    /// Forgets `id` (its message left the queue without being stored: dead-lettered).
    pub fn forget(&self, id: &ObjectId) {
        self.recent.remove(id);
    }
}
