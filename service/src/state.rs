//! What every request handler shares: the store, the write queue, queue mode's RabbitMQ
//! handle, the archive find reads, the metrics, the API keys in force and the request limits,
//! built once from the [`Config`].

use std::sync::Arc;
use std::time::Duration;

use auditlog_common::store::Store;
use mongodb::bson::{Document, RawDocumentBuf};
use mongodb::options::WriteConcern;
use mongodb::Collection;

use crate::config::{Config, WriteConcernSetting};
use crate::event::EventLimits;
use crate::find::archive::ArchiveTier;
use crate::ingest::writer::{Writer, WriterOptions, WriterTask};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::watermark::Watermark;

/// With group commit off, single inserts allowed in flight at once.
const UNGROUPED_CONCURRENCY: usize = 64;

/// Limits applied to requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub event: EventLimits,
    pub find_max_limit: u32,
    pub find_max_time: Duration,
    /// How long after its `created_at` a direct-mode write may still land: the write deadline
    /// (the last retry starts before it), the server-selection timeout (that retry may wait
    /// that long for a server) and the clock-skew allowance between replicas. It bounds what
    /// a replica may hold ([`crate::watermark`]).
    pub write_lag: Duration,
}

pub struct AppState {
    pub store: Store,
    pub events: Collection<Document>,
    pub writer: Writer,
    /// Queue mode: producers' events go to RabbitMQ, and the drain feeds [`Self::writer`].
    /// `None` in direct mode.
    pub queue: Option<Arc<Queue>>,
    pub metrics: Arc<Metrics>,
    /// The API keys in force (swapped whole when the key file is reloaded).
    pub keys: Arc<Keys>,
    /// `GET /metrics` is answered on the API's port (no `AUDIT_METRICS_LISTEN_ADDR`).
    pub metrics_on_api_port: bool,
    /// The events explorer is served at `/ui` (`AUDIT_UI_ENABLED`).
    pub ui_enabled: bool,
    pub limits: Limits,
    /// KiB of request bodies being read or parsed at once (`AUDIT_MAX_INFLIGHT_BODY_BYTES`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// The Parquet archive find also reads (`AUDIT_ARCHIVE_URL`); `None`: MongoDB only.
    pub archive: Option<ArchiveTier>,
    /// What this replica holds, and `complete_until` over every replica's record.
    pub watermark: Arc<Watermark>,
}

impl AppState {
    /// Builds the state and starts the writer; shut the returned task down after the server
    /// stopped, to write what is still queued.
    pub fn new(
        config: &Config,
        store: Store,
        keys: Arc<Keys>,
        metrics: Arc<Metrics>,
        queue: Option<Arc<Queue>>,
        archive: Option<ArchiveTier>,
        watermark: Arc<Watermark>,
    ) -> (Arc<AppState>, WriterTask) {
        let write_concern = match config.write_concern {
            WriteConcernSetting::Majority => WriteConcern::majority(),
            WriteConcernSetting::One => WriteConcern::nodes(1),
        };
        let options = WriterOptions {
            queue_capacity: config.queue_capacity,
            queue_max_bytes: config.queue_max_bytes,
            batch_max_events: if config.group_commit {
                config.batch_max_events
            } else {
                1
            },
            batch_max_bytes: config.batch_max_bytes,
            concurrency: if config.group_commit {
                config.writers
            } else {
                UNGROUPED_CONCURRENCY
            },
            deadline: config.write_deadline(),
            write_concern,
            lag_ms: i64::try_from(write_lag(config, &store).as_millis()).unwrap_or(i64::MAX),
        };
        let raw: Collection<RawDocumentBuf> = store.database().collection(&store.collection_name);
        let (writer, handle) = Writer::start(raw, options, metrics.clone());
        let write_lag = write_lag(config, &store);
        let state = AppState {
            events: store.events(),
            store,
            writer,
            queue,
            metrics,
            keys,
            metrics_on_api_port: config.metrics_addr().is_none(),
            ui_enabled: config.ui_enabled,
            limits: Limits {
                max_body_bytes: config.max_body_bytes,
                max_batch_events: config.max_batch_events,
                event: EventLimits {
                    max_event_bytes: config.max_event_bytes,
                    max_payload_depth: config.max_payload_depth,
                },
                find_max_limit: config.find_max_limit,
                find_max_time: Duration::from_millis(config.find_timeout_ms),
                write_lag,
            },
            body_budget: body_budget(config.max_inflight_body_bytes),
            archive,
            watermark,
        };
        (Arc::new(state), handle)
    }
}

/// How long after its `created_at` a direct-mode write may still land (see [`Limits`]).
pub fn write_lag(config: &Config, store: &Store) -> Duration {
    config.write_deadline() + store.server_selection_timeout + config.clock_skew()
}

/// The in-flight body budget of `bytes` (`AUDIT_MAX_INFLIGHT_BODY_BYTES`), in whole KiB
/// rounded up as a body's share is: a budget equal to `AUDIT_MAX_BODY_BYTES` admits a body of
/// that size whether or not it is a whole number of KiB.
pub fn body_budget(bytes: usize) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(
        bytes
            .div_ceil(1024)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ))
}
