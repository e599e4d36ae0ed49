//! What the auditlog binaries (`auditlog-service`, `auditlog-archiver`, `auditlog-ops`) share,
//! and nothing else.
//!
//! # Layout
//! - [`settings`]: the MongoDB connection settings every binary takes (`MONGODB_URI`,
//!   `AUDIT_DB_NAME`, `AUDIT_COLLECTION`).
//! - [`store`]: connecting to MongoDB and detecting what the server supports (mongos, TTL).
//! - [`schema`]: the event document's field names, the indexes, the TTL index and the shard key.
//! - [`archive_layout`]: the archive's column names, partition paths and file names — written
//!   by the archiver, read by the service.
//! - [`archive_state`]: the names of the archiver's state collections and fields.
//! - [`archive_store`] (feature `archive-store`): the archive's URL, its S3/HDFS settings and
//!   opening its object store — written by the archiver, read by the service.
//! - [`retry`]: the one backoff-and-deadline policy every retry loop uses.
//! - [`shutdown`]: the SIGTERM/SIGINT future both long-running binaries stop on, and shutting
//!   the MongoDB client down before a binary's runtime stops.
//! - [`telemetry`]: `tracing` set-up shared by the binaries.
//! - [`error`]: the typed errors of the above, and every MongoDB error code we branch on.

pub mod archive_layout;
pub mod archive_state;
#[cfg(feature = "archive-store")]
pub mod archive_store;
pub mod error;
pub mod retry;
pub mod schema;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use error::StoreError;
