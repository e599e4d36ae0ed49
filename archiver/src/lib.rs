//! `auditlog-archiver`: exports aged events from MongoDB to Parquet files (local directory,
//! S3 or HDFS) window by window, exactly once, before the TTL index expires them.
//! DESIGN.md §6 is the design; `docs/archiver.md` is the user's guide.
//!
//! # Layout
//! - [`config`]: every setting (flag + env var) and the subcommands, parsed once into types
//!   (durations, [`config::ArchiveUrl`], [`schedule::Schedule`]); the checks across settings.
//! - [`window`]: UTC windows, the due rule, partition paths and file names.
//! - [`schedule`]: the cron expression of `run`, parsed as the scheduler parses it.
//! - [`encode`]: event documents → Arrow batches; the Parquet schema and writer properties.
//! - [`sink`]: the object store (file, S3, HDFS): atomic publish, listing, footers, checksums.
//! - [`source`]: every query of the events collection — window filter, count, oldest event,
//!   unarchived windows, the keyset stream (with its retries), purge's delete.
//! - [`export`]: archiving one window — write, publish, clean up, read back, compare.
//! - [`state`]: window records, the lease (and its fence) and the runs record, in MongoDB.
//! - [`archive`]: the connected [`archive::Archiver`]; due windows, `once`, `backfill`,
//!   recording and `_SUCCESS` markers.
//! - [`guard`]: the TTL guard: the oldest unarchived event must outlive the next scheduled run.
//! - [`status`], [`verify`], [`purge`]: the read-only report, the re-check, the deletion.
//! - [`daemon`]: `run` — scheduler, `/healthz`, `/metrics`, graceful shutdown.
//! - [`metrics`], [`progress`]: Prometheus metrics; progress bar or log lines.
//! - [`error`]: typed errors and their exit codes.
//!
//! Dependencies point one way: in this order, each module uses only modules before it —
//! `error`, `schedule`, `metrics`, `window`, `config`, `encode`, `progress`, `sink`, `source`,
//! `state`, `export`, `guard`, `purge`, `status`, `verify`, `archive`, `daemon`.

pub mod archive;
pub mod config;
pub mod daemon;
pub mod encode;
pub mod error;
pub mod export;
pub mod guard;
pub mod metrics;
pub mod progress;
pub mod purge;
pub mod schedule;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod verify;
pub mod window;
