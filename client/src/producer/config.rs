//! The producer's settings, their defaults, and its metrics hooks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::types::{ErrorDetail, NewEvent};

/// What `send` does when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room up to `max`, then give up with [`crate::SendError::Full`].
    Block { max: Duration },
    /// Give up at once with [`crate::SendError::Full`].
    Fail,
}

/// Hooks the producer calls as it works, to feed an application's metrics. Every method has
/// an empty default; they are called from the producer's tasks, so keep them quick.
pub trait ProducerMetrics: Send + Sync {
    /// A `POST /v1/events` was answered (whatever the answer): its events, its body's bytes
    /// as sent (compressed when compressing), and how long it took.
    fn batch_sent(&self, events: usize, bytes: usize, elapsed: Duration) {
        let _ = (events, bytes, elapsed);
    }
    /// `events` events are to be sent again after a transient `error`.
    fn retried(&self, events: usize, error: &Error) {
        let _ = (events, error);
    }
    /// An event was refused for good (or its `delivery_timeout` passed); it will not be sent
    /// again.
    fn failed(&self, event: &NewEvent, error: &ErrorDetail) {
        let _ = (event, error);
    }
    /// `send` or `try_send` found the buffer full.
    fn buffer_full(&self) {}
}

/// The settings of a [`crate::Producer`]. `ProducerConfig::default()` gives the defaults
/// documented on each field.
#[derive(Clone)]
pub struct ProducerConfig {
    /// Events `send` may hold before they are batched (default 100,000).
    pub buffer_events: usize,
    /// What `send` does when the buffer is full (default `Block { max: 5 s }`).
    pub when_full: WhenFull,
    /// Most events in one request (default 500; the service takes at most
    /// `AUDIT_MAX_BATCH_EVENTS`, 1000 by default).
    pub max_batch_events: usize,
    /// Most bytes of JSON in one request before compression (default 1 MiB; the service's
    /// `AUDIT_MAX_BODY_BYTES` is 16 MiB, counted after decompression). An event larger than
    /// this goes alone.
    pub max_batch_bytes: usize,
    /// How long a batch that is not full waits for more events (default 20 ms).
    pub linger: Duration,
    /// gzip the bodies (default true).
    pub compress: bool,
    /// Requests in flight at once (default 4).
    pub max_in_flight: usize,
    /// First retry delay (default 100 ms); doubles, with jitter, up to `retry_max_backoff`.
    pub retry_initial_backoff: Duration,
    /// Longest retry delay (default 10 s); a longer `Retry-After` from the service wins.
    pub retry_max_backoff: Duration,
    /// Give up on an event this long after `send` took it, counting it failed with the code
    /// `delivery_timeout` (default `None`: retry until delivered or refused for good).
    pub delivery_timeout: Option<Duration>,
    /// The longest `close` waits for the events still held (default `None`: until they are
    /// all delivered or failed).
    pub close_timeout: Option<Duration>,
    /// Hooks for metrics (default none).
    pub metrics: Option<Arc<dyn ProducerMetrics>>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            buffer_events: 100_000,
            when_full: WhenFull::Block {
                max: Duration::from_secs(5),
            },
            max_batch_events: 500,
            max_batch_bytes: 1024 * 1024,
            linger: Duration::from_millis(20),
            compress: true,
            max_in_flight: 4,
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(10),
            delivery_timeout: None,
            close_timeout: None,
            metrics: None,
        }
    }
}

impl fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("buffer_events", &self.buffer_events)
            .field("when_full", &self.when_full)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("linger", &self.linger)
            .field("compress", &self.compress)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry_initial_backoff", &self.retry_initial_backoff)
            .field("retry_max_backoff", &self.retry_max_backoff)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("metrics", &self.metrics.as_ref().map(|_| "set"))
            .finish()
    }
}

impl ProducerConfig {
    /// The settings with nonsensical values raised to the least that works (a zero buffer or
    /// batch would never send anything).
    pub(crate) fn sanitized(mut self) -> Self {
        self.buffer_events = self.buffer_events.max(1);
        self.max_batch_events = self.max_batch_events.max(1);
        self.max_batch_bytes = self.max_batch_bytes.max(1);
        self.max_in_flight = self.max_in_flight.max(1);
        self
    }
}
