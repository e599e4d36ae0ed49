//! `auditlog-service`: the HTTP API producers post events to and readers query.
//!
//! # Layout
//! The folders are what a request does; the files beside them are what they all share.
//! - [`http`]: the server and its routes — the OpenAPI operations (thin handlers), the lean
//!   path (`POST /v1/event` answered before the full stack, same contract), finding the
//!   request's API key, and the one request-body extractor (media type, size cap).
//! - [`ingest`]: storing one event or a batch, idempotent retries with producer ids; its
//!   `writer`: the bounded queue and group commit into `insert_many`, retries, shutdown.
//! - [`queue`]: queue mode — RabbitMQ holds events in flight: publish with confirms (202), the
//!   drain into the writer, dead letters, backpressure, the connection.
//! - [`find`]: find filters, ordering and keyset cursors (`query`); find over MongoDB and the
//!   Parquet archive — the seam rule, the plan, reading Parquet with pruning, the page
//!   assembled from both tiers (`archive`); `GET /v1/event/{id}` — stored, queued or unknown
//!   (`lookup`).
//! - [`keys`]: API keys — rights (`ingest`, `read`) over consumers, rates; the key file, its
//!   reloads, `auditlog-service keys new`.
//! - [`watermark`]: `complete_until` — what each replica holds, its record in MongoDB, and the
//!   rule over the records.
//! - [`config`]: every setting, from flags and environment variables.
//! - [`event`]: validating incoming events and converting them to and from BSON.
//! - [`media`]: which media types are JSON.
//! - [`cloudevents`]: CloudEvents 1.0 to and from our events (decode, encode, their OpenAPI).
//! - [`state`]: what the handlers share.
//! - [`task`]: the one stop handle of the background tasks.
//! - [`metrics`]: Prometheus metrics.
//! - [`archive_watch`]: the archive's state for alerting (oldest unarchived event, TTL headroom,
//!   the archiver's last run), read from MongoDB once a minute.
//! - [`error`]: the error policy, the HTTP answer of every [`error::ApiError`]; each domain
//!   module turns its own errors into one (`queue::error`, `find::archive::error`).
//!
//! Dependencies point one way, file by file; `make lint` fails on a cycle
//! (`infra/dev/module_cycles.py`). From the bottom up:
//! - `error`, `metrics`, `task`, `media` (leaves: they import no module of this crate), then `event`,
//!   then `cloudevents`;
//! - `watermark`'s tracker and record, `ingest::writer`; `keys` (digest, rate, scope, file,
//!   ring, reload, command); `config`, `find::query`, `http::auth`;
//! - `find::archive` (its error, merge, plan, records, parquet_read); the publishing side of
//!   `queue` (contract, error, topology, link, group, publish, dead_letter); the watermark's
//!   heartbeat, which checks queue-mode replicas over the queue's link;
//! - `state`, which holds all of the above for the handlers;
//! - `http::body`, `ingest`, `find::lookup`; then `http::api`, `http::lean_path` and the
//!   queue's `drain`, which stores through `ingest`'s rules; `http::server` last.
//!
//! A folder may span layers: the queue's publisher sits below `state`, its drain above it;
//! `http`'s auth below `state`, its server at the top.

pub mod archive_watch;
pub mod cloudevents;
pub mod config;
pub mod error;
pub mod event;
pub mod find;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod media;
pub mod metrics;
pub mod queue;
pub mod state;
pub mod task;
pub mod watermark;
