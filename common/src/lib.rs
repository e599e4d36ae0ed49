//! What the auditlog binaries (`auditlog-service`, `auditlog-archiver`, `auditlog-ops`) share,
//! and nothing else.
//!
//! # Layout
//! - [`settings`]: the MongoDB connection settings every binary takes (`MONGODB_URI`,
//!   `AUDIT_DB_NAME`, `AUDIT_COLLECTION`).
//! - [`store`]: connecting to MongoDB and detecting what the server supports (mongos, TTL).
//! - [`schema`]: the event document's field names, the indexes, the TTL index and the shard key.
//! - [`telemetry`]: `tracing` set-up shared by the binaries.
//! - [`error`]: the typed errors of the above.

pub mod error;
pub mod schema;
pub mod settings;
pub mod store;
pub mod telemetry;

pub use error::StoreError;
