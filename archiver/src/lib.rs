//! `auditlog-archiver`: exports aged events from MongoDB to Parquet files (local directory,
//! S3 or HDFS) in UTC windows — every due window of a run read in one sorted pass — exactly
//! once, before the TTL index expires them.
//! `docs/archiver.md` is the design and the user's guide.
//!
//! # Layout
//! - [`config`]: every setting (flag + env var) and the subcommands, parsed once into types
//!   (durations, [`config::ArchiveUrl`], [`schedule::Schedule`]); the checks across settings.
//! - [`window`]: UTC windows, the due rule, partition paths and file names.
//! - [`plan`]: what a pass reads — its scope: runs of consecutive unrecorded windows, planned
//!   from the archive state alone.
//! - [`schedule`]: the cron expression of `run`, parsed as the scheduler parses it.
//! - [`encode`]: event documents → Arrow batches; the Parquet schema and writer properties.
//! - [`sink`]: the object store (file, S3, HDFS): atomic publish, listing, footers, checksums.
//! - [`source`]: the queries of the events collection — window and scope filters, counts,
//!   oldest event, unarchived windows (`status`), purge's delete — and their retries.
//! - [`stream`]: the keyset stream of a scope (one sorted query, resumed after its last row),
//!   read one batch ahead.
//! - [`export`]: one window's files — write as hidden temporaries, publish, clean up, read back.
//! - [`pass`]: one pass over a scope — rows cut into windows and partitions as they arrive.
//! - [`tally`]: the scope's count against the rows streamed; per window only when they differ.
//! - [`state`]: window records, the lease (and its fence) and the runs record, in MongoDB.
//! - [`archive`]: the connected [`archive::Archiver`]; `once`, `backfill`, the passes, what is
//!   read again, recording and `_SUCCESS` markers.
//! - [`guard`]: the TTL guard: the oldest unarchived event must outlive the next scheduled run.
//! - [`status`], [`verify`], [`purge`]: the read-only report, the re-check, the deletion.
//! - [`keys`]: the Ed25519 signing key and the public keys `verify` accepts, by key id.
//! - [`digest`]: the signed, chained digest each run writes under `_digests/`.
//! - [`integrity`]: `verify --public-key`, the archive against its digests.
//! - [`daemon`]: `run` — scheduler, `/healthz`, `/metrics`, graceful shutdown.
//! - [`metrics`], [`progress`]: Prometheus metrics; progress bar or log lines.
//! - [`error`]: typed errors and their exit codes.
//!
//! Dependencies point one way: in this order, each module uses only modules before it —
//! `error`, `schedule`, `metrics`, `window`, `plan`, `config`, `encode`, `progress`, `keys`,
//! `sink`, `source`, `stream`, `state`, `export`, `pass`, `tally`, `guard`, `purge`, `status`,
//! `verify`, `digest`, `integrity`, `archive`, `daemon`.

pub mod archive;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod encode;
pub mod error;
pub mod export;
pub mod guard;
pub mod integrity;
pub mod keys;
pub mod metrics;
pub mod pass;
pub mod plan;
pub mod progress;
pub mod purge;
pub mod schedule;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod stream;
pub mod tally;
pub mod verify;
pub mod window;
