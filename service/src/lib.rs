//! `auditlog-service`: the HTTP API producers post events to and readers query.
//!
//! # Layout
//! - [`config`]: every setting, from flags and environment variables.
//! - [`server`]: builds the application and serves it on a bound listener until shutdown.
//! - [`api`]: the OpenAPI operations (thin handlers).
//! - [`fast_ingest`]: `POST /v1/event` answered before the full stack, same contract.
//! - [`auth`]: `X-Api-Key`: finding the request's key among those in force, once per request.
//! - [`keys`]: API keys — rights (`ingest`, `read`) over consumers, rates; the key file, its
//!   reloads, `auditlog-service keys new`.
//! - [`body`]: the one request-body extractor: media type, size cap (after decompression too).
//! - [`event`]: validating incoming events and converting them to and from BSON.
//! - [`ingest`]: storing one event or a batch, idempotent retries with producer ids.
//! - [`writer`]: the bounded queue and group commit into `insert_many`, retries, shutdown.
//! - [`queue`]: queue mode — RabbitMQ holds events in flight: publish with confirms (202), the
//!   drain into the writer, dead letters, backpressure, the connection.
//! - [`lookup`]: `GET /v1/event/{id}` — stored, queued or unknown.
//! - [`query`]: find filters, ordering and keyset cursors.
//! - [`archive_find`]: find over MongoDB and the Parquet archive — the seam rule, the plan,
//!   reading Parquet with pruning, the page assembled from both tiers.
//! - [`state`]: what the handlers share.
//! - [`task`]: the one stop handle of the background tasks.
//! - [`metrics`]: Prometheus metrics.
//! - [`archive_watch`]: the archive's state for alerting (oldest unarchived event, TTL headroom,
//!   the archiver's last run), read from MongoDB once a minute.
//! - [`watermark`]: `complete_until` — what each replica holds, its record in MongoDB, and the
//!   rule over the records.
//! - [`error`]: the error policy, the HTTP answer of every [`error::ApiError`]; each domain
//!   module turns its own errors into one (`queue::error`, `archive_find::error`).
//!
//! Dependencies point one way, file by file; `make lint` fails on a cycle
//! (`infra/dev/module_cycles.py`). From the bottom up:
//! - `error`, `metrics`, `task` (leaves: they import no module of this crate), then `event`;
//! - `watermark`'s tracker and record, `writer`; `keys` (digest, rate, scope, file, ring,
//!   reload, command); `config`, `auth`, `query`;
//! - `archive_find` (its error, merge, plan, records, parquet_read); the publishing side of
//!   `queue` (contract, error, topology, link, group, publish, dead_letter); the watermark's
//!   heartbeat, which checks queue-mode replicas over the queue's link;
//! - `state`, which holds all of the above for the handlers;
//! - `body`, `ingest`, `lookup`; then `api`, `fast_ingest` and the queue's `drain`, which
//!   stores through `ingest`'s rules; `server` last.
//!
//! A folder may span layers: the queue's publisher sits below `state`, its drain above it.

pub mod api;
pub mod archive_find;
pub mod archive_watch;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod event;
pub mod fast_ingest;
pub mod ingest;
pub mod keys;
pub mod lookup;
pub mod metrics;
pub mod query;
pub mod queue;
pub mod server;
pub mod state;
pub mod task;
pub mod watermark;
pub mod writer;
