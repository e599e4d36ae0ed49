//! What queue mode fixes about its messages: its settings (from the [`Config`]), the content
//! type of a single event's message, and how long a publish waits for RabbitMQ's confirm.

use std::time::Duration;

use lapin::types::ShortString;

use crate::config::{Config, IngestMode};

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

/// Longest wait for RabbitMQ's confirm before the producer gets 503. A quorum queue confirms
/// once a majority of its nodes has the message on disk: milliseconds normally; longer only
/// when RabbitMQ is in trouble, which producers should hear about.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// The content type of every message: the event's BSON document.
pub const CONTENT_TYPE: &str = "application/bson";
