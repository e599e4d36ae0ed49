//! auditlog-client: a Rust client for the auditlog service.
//!
//! - [`Client`]: typed calls for every endpoint (`post_event`, `post_events`, `get_event`,
//!   `find_page`), and the [`Client::find`] and [`Client::tail`] streams.
//! - [`Producer`] ([`Client::producer`]): a batching producer for applications that send many
//!   events: `send` returns at once, a background task batches, compresses, sends and retries
//!   with the same ids, so each event is stored exactly once.
//! - [`new_event_id`]: ids made on the client, so that retries are safe.
//!
//! Guide: `docs/client.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), auditlog_client::Error> {
//! use auditlog_client::{Client, FindQuery, NewEvent, ProducerConfig};
//! use futures::StreamExt;
//!
//! let client = Client::new("http://127.0.0.1:8080", "my-key")?;
//! let posted = client
//!     .post_event(&NewEvent::new("login", "c1").payload(serde_json::json!({"ok": true})).with_new_id())
//!     .await?;
//! println!("{} at {}", posted.ack.id, posted.ack.created_at);
//!
//! let producer = client.producer(ProducerConfig::default());
//! producer.send(NewEvent::new("click", "c1")).await.ok();
//! let stats = producer.close().await?;
//! println!("{} delivered", stats.delivered);
//!
//! let mut events = client.find(FindQuery { consumer: Some("c1".into()), ..Default::default() });
//! while let Some(event) = events.next().await {
//!     println!("{}", serde_json::to_string(&event?).unwrap_or_default());
//! }
//! # Ok(())
//! # }
//! ```

mod backoff;
mod error;
mod find;
mod http;
mod id;
mod producer;
mod types;

pub use error::Error;
pub use http::{Client, ClientBuilder, DEFAULT_TIMEOUT};
pub use id::new_event_id;
pub use producer::{Producer, ProducerConfig, ProducerMetrics, ProducerStats, SendError, WhenFull};
pub use types::{
    BatchItem, BatchResponse, ErrorBody, ErrorDetail, Event, EventAck, EventStatus, FindPage,
    FindQuery, NewEvent, Order, PostOutcome, Posted,
};

/// `docs/client.md`'s examples, compiled as doc tests so the guide cannot drift from the API.
#[doc = include_str!("../../docs/client.md")]
#[cfg(doctest)]
pub struct ClientGuide;
