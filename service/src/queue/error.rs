//! Why RabbitMQ did not take an event ([`QueueError`]), and what a producer is answered for
//! each: the queue's errors become HTTP answers here, not in [`crate::error`].

use crate::error::ApiError;

/// Why RabbitMQ did not take an event. Mapped to HTTP below, only.
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

impl From<QueueError> for ApiError {
    /// A queue past its depth, or a publisher backlog, is 429 `busy`; every other refusal is
    /// 503 `queue_unavailable` (its message says whether the event may be stored).
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full { .. } | QueueError::Congested { .. } => {
                ApiError::QueueBusy(e.to_string())
            }
            _ => ApiError::QueueUnavailable(e.to_string()),
        }
    }
}
