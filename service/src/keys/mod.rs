//! API keys: who may call `/v1/*`, with which rights, for which consumers.
//!
//! A key holds rights — `ingest` (send events) and `read` (find them) — over consumers: exact
//! names, prefix patterns (`billing-*`) or `*`; a producer key may carry an event rate. Keys
//! come from the key file (`AUDIT_API_KEYS_FILE`, hashes only, reloaded while the service
//! runs) and from `AUDIT_API_KEY` (every right over every consumer, as before scopes existed).
//!
//! - [`file`]: the key file's format (TOML), its validation, the text of one entry.
//! - [`scope`]: rights and consumer patterns; the find condition a scope implies.
//! - [`rate`]: a producer key's event rate (a token bucket).
//! - [`ring`]: the keys in force, found by the SHA-256 of the presented key; the 403 and 429
//!   answers of a key.
//! - [`reload`]: re-reading the key file when it changes and on SIGHUP.
//! - [`command`]: `auditlog-service keys new`.

pub mod command;
pub mod digest;
pub mod file;
pub mod rate;
pub mod reload;
pub mod ring;
pub mod scope;

pub use ring::{Key, Keys, LoadError};
pub use scope::{Consumers, Right, Rights};
