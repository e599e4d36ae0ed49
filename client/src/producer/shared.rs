//! What the producer's handles and its tasks share: the client, the settings and the counts.
//! Its own module, below the task and the handles, so neither imports the other's parent.

use std::sync::atomic::AtomicU64;

use super::config::ProducerConfig;
use crate::http::Client;

#[derive(Default)]
pub(crate) struct Counters {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub retries: AtomicU64,
    pub batches: AtomicU64,
}

/// What the producer's handles and its tasks share.
pub(crate) struct Shared {
    pub client: Client,
    pub config: ProducerConfig,
    pub counters: Counters,
}
