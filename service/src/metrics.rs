//! Prometheus metrics of the service, in a registry of its own (so tests that start several
//! servers in one process do not collide), rendered in the text format at `GET /metrics`.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// `auditlog_http_requests_total{route, method, status, key}` — `key`: the API key's name
    /// (empty without a key in force).
    pub requests: IntCounterVec,
    /// `auditlog_http_request_duration_seconds{route, method, key}`
    pub latency: HistogramVec,
    /// `auditlog_events_stored_total`
    pub events_stored: IntCounter,
    /// `auditlog_events_rejected_total{reason}`
    pub events_rejected: IntCounterVec,
    /// `auditlog_write_batch_size` — events per `insert_many`.
    pub batch_size: Histogram,
    /// `auditlog_write_duration_seconds` — how long MongoDB took to answer each `insert_many`
    /// attempt: the store's share of a producer's latency, apart from the waits in the service.
    pub write_duration: Histogram,
    /// `auditlog_write_queue_depth` — events waiting for a batch (set at scrape time).
    pub queue_depth: IntGauge,
    /// `auditlog_store_errors_total{operation}`
    pub store_errors: IntCounterVec,
    /// `auditlog_write_queue_capacity` — events the write queue holds at most (set at start).
    pub queue_capacity: IntGauge,
    /// `auditlog_complete_until_lag_seconds` — how far behind now this replica's
    /// `complete_until` is (set once a second by [`crate::watermark`]).
    pub complete_until_lag: prometheus::Gauge,
    /// `auditlog_watermark_record_age_seconds` — how old this replica's record of what it
    /// holds is in MongoDB (set once a second; grows while MongoDB refuses its writes).
    pub watermark_record_age: prometheus::Gauge,
    /// The archive's state for alerting, read from MongoDB by [`crate::archive_watch`].
    pub archive: ArchiveGauges,
    /// Queue mode's RabbitMQ figures (zero in direct mode).
    pub queue: QueueMetrics,
    /// `auditlog_api_keys_reloads_total{result}` — key file reloads: `ok`, or `error` (the file
    /// was refused and the keys in force stayed).
    pub api_key_reloads: IntCounterVec,
    /// `auditlog_api_keys{source}` — API keys in force, from `env` (AUDIT_API_KEY) or `file`.
    pub api_keys: IntGaugeVec,
    /// What finds read from the Parquet archive.
    pub archive_find: ArchiveFindMetrics,
    /// What histograms read from the Parquet archive.
    pub histogram: HistogramMetrics,
}

/// Histograms ([`crate::find::histogram`]) over the archive: how many row groups were counted
/// from their footers alone, and how many had to be decoded.
#[derive(Clone)]
pub struct HistogramMetrics {
    /// `auditlog_histogram_archive_row_groups_total{outcome}` — archive row groups histograms
    /// counted: `statistics` (from the footer, no data page read), `read` (decoded),
    /// `pruned_statistics`, `pruned_bloom` (no matching row).
    pub row_groups: IntCounterVec,
    /// `auditlog_histogram_archive_data_bytes_total` — data pages histograms fetched.
    pub data_bytes: IntCounter,
}

impl HistogramMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = HistogramMetrics {
            row_groups: IntCounterVec::new(
                Opts::new(
                    "auditlog_histogram_archive_row_groups_total",
                    "Archive row groups histograms counted, by outcome (statistics: from the footer alone, read, pruned_statistics, pruned_bloom)",
                ),
                &["outcome"],
            )?,
            data_bytes: IntCounter::new(
                "auditlog_histogram_archive_data_bytes_total",
                "Bytes of data pages histograms fetched from the archive store",
            )?,
        };
        registry.register(Box::new(m.row_groups.clone()))?;
        registry.register(Box::new(m.data_bytes.clone()))?;
        for o in ["statistics", "read", "pruned_statistics", "pruned_bloom"] {
            m.row_groups.with_label_values(&[o]);
        }
        Ok(m)
    }
}

/// Finds that read the archive ([`crate::find::archive`]): how many, what they read and what
/// they could skip, and how long the archive part took.
#[derive(Clone)]
pub struct ArchiveFindMetrics {
    /// `auditlog_archive_find_queries_total{result}` — finds that read the archive, by result:
    /// `ok`, `unavailable` (503), `timeout` (503), `error` (500).
    pub queries: IntCounterVec,
    /// `auditlog_archive_find_files_total{outcome}` — archive files: `read` (a row group
    /// decoded), `pruned_partition` (its `dt=`/`hour=` outside the range; not opened),
    /// `pruned_statistics`, `pruned_bloom` (every row group ruled out; by a bloom filter for at
    /// least one). Files opened ahead of need and left unread when the page filled are not
    /// counted.
    pub files: IntCounterVec,
    /// `auditlog_archive_find_row_groups_total{outcome}` — `read`, `pruned_statistics`,
    /// `pruned_bloom`.
    pub row_groups: IntCounterVec,
    /// `auditlog_archive_find_bytes_read_total{part}` — bytes fetched from the archive store:
    /// `metadata` (footers), `bloom` (bloom filters), `data` (data and dictionary pages).
    pub bytes: IntCounterVec,
    /// `auditlog_archive_find_read_seconds` — time one find spent reading the archive.
    pub latency: Histogram,
}

impl ArchiveFindMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = ArchiveFindMetrics {
            queries: IntCounterVec::new(
                Opts::new(
                    "auditlog_archive_find_queries_total",
                    "Finds that read the Parquet archive, by result (ok, unavailable, timeout, error)",
                ),
                &["result"],
            )?,
            files: IntCounterVec::new(
                Opts::new(
                    "auditlog_archive_find_files_total",
                    "Archive files finds read or pruned, by outcome (read, pruned_partition, pruned_statistics, pruned_bloom)",
                ),
                &["outcome"],
            )?,
            row_groups: IntCounterVec::new(
                Opts::new(
                    "auditlog_archive_find_row_groups_total",
                    "Archive row groups finds read or pruned, by outcome (read, pruned_statistics, pruned_bloom)",
                ),
                &["outcome"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "auditlog_archive_find_bytes_read_total",
                    "Bytes finds fetched from the archive store, by part (metadata, bloom, data)",
                ),
                &["part"],
            )?,
            latency: Histogram::with_opts(
                HistogramOpts::new(
                    "auditlog_archive_find_read_seconds",
                    "Time one find spent reading the Parquet archive",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )?,
        };
        registry.register(Box::new(m.queries.clone()))?;
        registry.register(Box::new(m.files.clone()))?;
        registry.register(Box::new(m.row_groups.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        // Every series exists from the start, so a rate over them is defined before the first.
        for r in ["ok", "unavailable", "timeout", "error"] {
            m.queries.with_label_values(&[r]);
        }
        for o in [
            "read",
            "pruned_partition",
            "pruned_statistics",
            "pruned_bloom",
        ] {
            m.files.with_label_values(&[o]);
        }
        for o in ["read", "pruned_statistics", "pruned_bloom"] {
            m.row_groups.with_label_values(&[o]);
        }
        for p in ["metadata", "bloom", "data"] {
            m.bytes.with_label_values(&[p]);
        }
        Ok(m)
    }
}

/// Queue mode ([`crate::queue`]): what producers' publishes, the queue and the drain do.
#[derive(Clone)]
pub struct QueueMetrics {
    /// `auditlog_queue_depth` — messages ready in the queue (polled twice a second).
    pub depth: IntGauge,
    /// `auditlog_queue_dead_letter_depth` — messages in the dead-letter queue.
    pub dead_depth: IntGauge,
    /// `auditlog_queue_connected` — 1 while this replica is connected to RabbitMQ.
    pub connected: IntGauge,
    /// `auditlog_queue_blocked` — 1 while RabbitMQ blocks publishers (memory or disk alarm).
    pub blocked: IntGauge,
    /// `auditlog_queue_published_total` — events RabbitMQ confirmed.
    pub published: IntCounter,
    /// `auditlog_queue_published_messages_total` — messages RabbitMQ confirmed; each holds one
    /// event or a group of them, so `published_total` over this is the mean group.
    pub published_messages: IntCounter,
    /// `auditlog_queue_publish_confirm_seconds` — from publish to RabbitMQ's confirm.
    pub confirm_latency: Histogram,
    /// `auditlog_queue_drained_total{outcome}` — events the drain settled: `stored`,
    /// `duplicate` (already in MongoDB: a redelivery or a producer's retry), `dead_lettered`
    /// (a message that is no event, or no group of events, counts once).
    pub drained: IntCounterVec,
    /// `auditlog_queue_visibility_seconds` — from an event's `created_at` (set just before its
    /// publish) to its insert acknowledged by MongoDB, for the events this replica's drain
    /// stored: how far `find` lags behind producers. It compares two clocks when another
    /// replica published the event, so it is as exact as the replicas' clocks agree.
    pub visibility: Histogram,
    /// `auditlog_queue_redeliveries_total` — messages RabbitMQ delivered again.
    pub redeliveries: IntCounter,
    /// `auditlog_queue_dead_letters_total{reason}` — events moved to `<queue>.dead` (a message
    /// that is no event, or no group of events, counts once).
    pub dead_letters: IntCounterVec,
}

impl QueueMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = QueueMetrics {
            depth: IntGauge::new(
                "auditlog_queue_depth",
                "Queue mode: messages ready in the RabbitMQ queue",
            )?,
            dead_depth: IntGauge::new(
                "auditlog_queue_dead_letter_depth",
                "Queue mode: messages in the dead-letter queue",
            )?,
            connected: IntGauge::new(
                "auditlog_queue_connected",
                "Queue mode: 1 while connected to RabbitMQ",
            )?,
            blocked: IntGauge::new(
                "auditlog_queue_blocked",
                "Queue mode: 1 while RabbitMQ blocks publishers (memory or disk alarm)",
            )?,
            published: IntCounter::new(
                "auditlog_queue_published_total",
                "Queue mode: events RabbitMQ confirmed",
            )?,
            published_messages: IntCounter::new(
                "auditlog_queue_published_messages_total",
                "Queue mode: messages RabbitMQ confirmed (each one event or a group of them)",
            )?,
            confirm_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "auditlog_queue_publish_confirm_seconds",
                    "Queue mode: time from publish to RabbitMQ's confirm",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            drained: IntCounterVec::new(
                Opts::new(
                    "auditlog_queue_drained_total",
                    "Queue mode: events the drain settled, by outcome (stored, duplicate, dead_lettered)",
                ),
                &["outcome"],
            )?,
            visibility: Histogram::with_opts(
                HistogramOpts::new(
                    "auditlog_queue_visibility_seconds",
                    "Queue mode: time from an event's created_at to its insert acknowledged by MongoDB (events this replica's drain stored)",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 120.0, 300.0, 600.0,
                ]),
            )?,
            redeliveries: IntCounter::new(
                "auditlog_queue_redeliveries_total",
                "Queue mode: messages RabbitMQ delivered again (after a consumer or connection was lost)",
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "auditlog_queue_dead_letters_total",
                    "Queue mode: events moved to the dead-letter queue, by reason (malformed, rejected, id_conflict)",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.depth.clone()))?;
        registry.register(Box::new(m.dead_depth.clone()))?;
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.blocked.clone()))?;
        registry.register(Box::new(m.published.clone()))?;
        registry.register(Box::new(m.published_messages.clone()))?;
        registry.register(Box::new(m.confirm_latency.clone()))?;
        registry.register(Box::new(m.drained.clone()))?;
        registry.register(Box::new(m.visibility.clone()))?;
        registry.register(Box::new(m.redeliveries.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        Ok(m)
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "auditlog_http_requests_total",
                "HTTP requests by route, method, status and API key name",
            ),
            &["route", "method", "status", "key"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "auditlog_http_request_duration_seconds",
                "HTTP request latency by route, method and API key name",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 20.0,
            ]),
            &["route", "method", "key"],
        )?;
        let events_stored = IntCounter::new(
            "auditlog_events_stored_total",
            "Events stored with the configured write concern",
        )?;
        let events_rejected = IntCounterVec::new(
            Opts::new(
                "auditlog_events_rejected_total",
                "Events not stored, by reason (invalid, forbidden, rate_limited, busy, unavailable, conflict, rejected)",
            ),
            &["reason"],
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("auditlog_write_batch_size", "Events per insert_many").buckets(
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            ),
        )?;
        let write_duration = Histogram::with_opts(
            HistogramOpts::new(
                "auditlog_write_duration_seconds",
                "Time MongoDB took to answer each insert_many attempt",
            )
            .buckets(vec![
                0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 10.0,
            ]),
        )?;
        let queue_depth = IntGauge::new(
            "auditlog_write_queue_depth",
            "Events waiting in the write queue",
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "auditlog_store_errors_total",
                "Failed MongoDB operations, by operation",
            ),
            &["operation"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(events_stored.clone()))?;
        registry.register(Box::new(events_rejected.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(write_duration.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        let queue_capacity = IntGauge::new(
            "auditlog_write_queue_capacity",
            "Events the write queue holds at most (AUDIT_QUEUE_CAPACITY)",
        )?;
        registry.register(Box::new(queue_capacity.clone()))?;
        let complete_until_lag = prometheus::Gauge::new(
            "auditlog_complete_until_lag_seconds",
            "How far behind now complete_until is: events created before it are all findable",
        )?;
        registry.register(Box::new(complete_until_lag.clone()))?;
        let watermark_record_age = prometheus::Gauge::new(
            "auditlog_watermark_record_age_seconds",
            "Age of this replica's in-flight record in MongoDB (grows while writes fail)",
        )?;
        registry.register(Box::new(watermark_record_age.clone()))?;
        let archive = ArchiveGauges::register(&registry)?;
        let queue = QueueMetrics::register(&registry)?;
        let api_key_reloads = IntCounterVec::new(
            Opts::new(
                "auditlog_api_keys_reloads_total",
                "Key file reloads, by result (ok, error: refused, the keys in force stayed)",
            ),
            &["result"],
        )?;
        let api_keys = IntGaugeVec::new(
            Opts::new(
                "auditlog_api_keys",
                "API keys in force, by source (env: AUDIT_API_KEY, file: AUDIT_API_KEYS_FILE)",
            ),
            &["source"],
        )?;
        // Both results exported from the start, so `increase()` sees the first reload.
        for result in ["ok", "error"] {
            api_key_reloads.with_label_values(&[result]);
        }
        registry.register(Box::new(api_key_reloads.clone()))?;
        registry.register(Box::new(api_keys.clone()))?;
        let archive_find = ArchiveFindMetrics::register(&registry)?;
        let histogram = HistogramMetrics::register(&registry)?;
        Ok(Self {
            registry,
            requests,
            latency,
            events_stored,
            events_rejected,
            batch_size,
            write_duration,
            queue_depth,
            store_errors,
            queue_capacity,
            complete_until_lag,
            watermark_record_age,
            archive,
            queue,
            api_key_reloads,
            api_keys,
            archive_find,
            histogram,
        })
    }

    /// Counts one failed store operation (`find`, `insert`).
    pub fn store_error(&self, operation: &str) {
        self.store_errors.with_label_values(&[operation]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// The route label for a request path: the known routes, else `other` (so that scanners
/// probing random paths cannot blow up the number of series). `GET /v1/event/{id}` is one
/// route, whatever the id.
pub fn route_label(path: &str) -> &'static str {
    if path
        .strip_prefix("/v1/event/")
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    {
        return "/v1/event/{id}";
    }
    const ROUTES: [&str; 10] = [
        "/v1/event",
        "/v1/events",
        "/v1/find",
        "/v1/histogram",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/ui",
    ];
    let trimmed = path.trim_end_matches('/');
    // The pages' assets are counted under their page: a label per asset would only grow.
    ROUTES
        .iter()
        .find(|r| {
            trimmed == **r
                || (matches!(**r, "/docs" | "/ui") && trimmed.starts_with(&format!("{r}/")))
        })
        .copied()
        .unwrap_or("other")
}

/// The archive's state for alerting, set by [`crate::archive_watch`].
#[derive(Clone)]
pub struct ArchiveGauges {
    /// Seconds since the oldest unarchived event was created; 0 when every event is archived.
    pub oldest_unarchived_age: Gauge,
    /// Seconds until the TTL index expires the oldest unarchived event (negative: overdue);
    /// +Inf when nothing expires (no TTL index, or nothing unarchived).
    pub ttl_headroom: Gauge,
    /// Unix time of the end of the archiver's last successful run; 0 before the first.
    pub last_success: Gauge,
    /// Seconds between two scheduled archiver runs; 0 until the archiver recorded it.
    pub schedule_period: Gauge,
    /// Unix time of the last successful read of the archive state.
    pub read_at: Gauge,
}

impl ArchiveGauges {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let g = |name: &str, help: &str| -> Result<Gauge, prometheus::Error> {
            let gauge = Gauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let gauges = Self {
            oldest_unarchived_age: g(
                "auditlog_archive_oldest_unarchived_age_seconds",
                "Age of the oldest event no archived window covers (0: none)",
            )?,
            ttl_headroom: g(
                "auditlog_archive_ttl_headroom_seconds",
                "Seconds until the TTL index expires the oldest unarchived event (+Inf: never)",
            )?,
            last_success: g(
                "auditlog_archive_last_success_timestamp_seconds",
                "Unix time the archiver's last successful run ended (0: none recorded)",
            )?,
            schedule_period: g(
                "auditlog_archive_schedule_period_seconds",
                "Seconds between two scheduled archiver runs (0: not recorded yet)",
            )?,
            read_at: g(
                "auditlog_archive_watch_last_read_timestamp_seconds",
                "Unix time the service last read the archive state from MongoDB",
            )?,
        };
        gauges.ttl_headroom.set(f64::INFINITY);
        Ok(gauges)
    }
}
