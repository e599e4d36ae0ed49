//! The storage layout of events: field names, the indexes the queries need, the TTL index
//! that expires old events, and the default shard key.
//!
//! [`ensure_storage`] is the one implementation of "make the collection ready"; the service
//! runs it at start and `auditlog-ops db setup` runs it too, so the two cannot drift apart.
//!
//! Index choices (equality, then sort, then range — queries sort by `created_at`, `_id`):
//! - `{consumer: 1, created_at: 1, _id: 1}` — finds by consumer (and time range);
//! - `{type: 1, created_at: 1, _id: 1}` — finds by type (and time range);
//! - `{created_at: 1, _id: 1}` — finds by time range only, and the archiver's keyset scans;
//! - `{created_at: 1}` — the TTL index. MongoDB refuses a second index on the same key with
//!   other options, so retention is changed on this index with `collMod`, never by dropping it.
//!
//! Retention rule: set-up (service start, `auditlog-ops db setup`, which the chart runs on every
//! `helm upgrade`) only ever creates the TTL index or *raises* its TTL. Lowering it could expire
//! events the archiver has not exported yet — or undo a raise by the archiver's TTL guard — so
//! only an explicit `auditlog-ops retention set --days N`, which checks the archive first, may.

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use crate::error::{codes, server_error_code, StoreError};
use crate::store::{ServerInfo, Store};

/// Field names of an event document.
pub mod fields {
    pub const ID: &str = "_id";
    pub const TYPE: &str = "type";
    pub const CONSUMER: &str = "consumer";
    pub const CREATED_AT: &str = "created_at";
    pub const PAYLOAD: &str = "payload";
}

/// The collection beside the events where each service replica records, about once a second,
/// the oldest event it may still store (how `complete_until` is derived). Small: one document
/// per replica, not sharded.
pub const REPLICAS_COLLECTION: &str = "service_replicas";

/// Name MongoDB derives for the `{created_at: 1}` index; we keep the derived names so that an
/// index created by hand with the same key is recognised, not duplicated.
pub const TTL_INDEX_NAME: &str = "created_at_1";

/// The compound indexes the queries use (the TTL index is handled apart).
pub fn query_indexes() -> Vec<Document> {
    vec![
        doc! { fields::CONSUMER: 1, fields::CREATED_AT: 1, fields::ID: 1 },
        doc! { fields::TYPE: 1, fields::CREATED_AT: 1, fields::ID: 1 },
        doc! { fields::CREATED_AT: 1, fields::ID: 1 },
    ]
}

/// The key of the TTL index.
pub fn ttl_index_key() -> Document {
    doc! { fields::CREATED_AT: 1 }
}

/// Shard keys operators can choose from.
///
/// `_id` is unique only per shard on a sharded cluster, so a producer's retry (same `id`) is
/// recognised as a duplicate only if it routes to the shard that holds the first copy. Every
/// field of the key must therefore be the same on a retry: `consumer` and `_id` are (the
/// producer sends both), `created_at` is not (the server assigns it per attempt). Ids are
/// unique per consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ShardKey {
    /// `{consumer: "hashed", _id: 1}` (default): even spread over shards, a consumer's queries
    /// go to the shards of its hash range, a retry lands on the first copy's shard, and as
    /// ObjectIds grow with time a busy consumer still splits into many chunks (MongoDB ≥ 4.4).
    #[default]
    HashedConsumerId,
    /// `{consumer: "hashed"}`: each consumer is one chunk, which cannot be split.
    HashedConsumer,
    /// `{consumer: "hashed", created_at: 1}`: the key of auditlog ≤ 0.1. Not safe for producer
    /// retries: a retry gets a new `created_at` and may land on another shard as a second copy.
    /// Kept so existing clusters are recognised; `db setup` reports it with the
    /// `reshardCollection` command that moves to the default.
    HashedConsumerCreatedAt,
}

impl ShardKey {
    pub fn key(self) -> Document {
        match self {
            ShardKey::HashedConsumerId => doc! { fields::CONSUMER: "hashed", fields::ID: 1 },
            ShardKey::HashedConsumer => doc! { fields::CONSUMER: "hashed" },
            ShardKey::HashedConsumerCreatedAt => {
                doc! { fields::CONSUMER: "hashed", fields::CREATED_AT: 1 }
            }
        }
    }

    /// Whether a producer's retry of an event always routes to the shard of its first copy.
    pub fn retries_are_idempotent(self) -> bool {
        !matches!(self, ShardKey::HashedConsumerCreatedAt)
    }
}

/// Event retention: how long MongoDB keeps an event before TTL removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep events forever.
    Forever,
    /// Expire events this many seconds after `created_at`.
    Seconds(i64),
}

impl Retention {
    /// `AUDIT_RETENTION_DAYS`: 0 means forever.
    pub fn from_days(days: u32) -> Self {
        if days == 0 {
            Retention::Forever
        } else {
            Retention::Seconds(i64::from(days) * 86_400)
        }
    }
}

/// What the TTL index is after [`ensure_storage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtlState {
    /// TTL index present, expiring after this many seconds.
    Active { expire_after_seconds: i64 },
    /// Plain `{created_at: 1}` index, nothing expires (retention is forever).
    Disabled,
    /// The server has no TTL indexes (FerretDB); a plain index was created instead and events
    /// only leave MongoDB through `auditlog-archiver purge`.
    Unsupported,
}

/// What [`ensure_storage`] did, step by step, for logs and `auditlog-ops db setup`.
#[derive(Debug, Clone, Default)]
pub struct StorageReport {
    /// One human-readable line per step ("created index …", "index … already present").
    pub steps: Vec<String>,
    pub ttl: Option<TtlState>,
}

/// The command that lowers retention on purpose; named in every warning about a TTL kept higher
/// than configured.
pub const LOWER_RETENTION_COMMAND: &str = "auditlog-ops retention set --days N";

/// Makes the events collection ready: query indexes and the TTL index. An existing TTL is
/// raised to `retention` when it is lower, and kept (with a warning naming
/// [`LOWER_RETENTION_COMMAND`]) when it is higher. Idempotent: running it on a ready
/// collection changes nothing.
pub async fn ensure_storage(
    store: &Store,
    server: &ServerInfo,
    retention: Retention,
) -> Result<StorageReport, StoreError> {
    let coll = store.events();
    let mut report = StorageReport::default();
    let existing = existing_indexes(store).await?;

    let models: Vec<IndexModel> = query_indexes()
        .into_iter()
        .filter(|keys| {
            let present = existing.iter().any(|(k, _)| k == keys);
            if present {
                report.steps.push(format!("index {keys} already present"));
            }
            !present
        })
        .map(|keys| IndexModel::builder().keys(keys).build())
        .collect();
    if !models.is_empty() {
        let keys: Vec<String> = models.iter().map(|m| m.keys.to_string()).collect();
        coll.create_indexes(models)
            .await
            .map_err(StoreError::command("createIndexes"))?;
        for k in keys {
            report.steps.push(format!("created index {k}"));
        }
    }

    let current_ttl = existing
        .iter()
        .find(|(k, _)| *k == ttl_index_key())
        .map(|(_, expire)| *expire);
    report.ttl =
        Some(ensure_ttl_index(store, server, retention, current_ttl, &mut report.steps).await?);
    Ok(report)
}

/// The `{created_at: 1}` index: TTL where the server has it, plain otherwise. Set-up never
/// lowers retention: a TTL is created or raised, never shortened or removed.
async fn ensure_ttl_index(
    store: &Store,
    server: &ServerInfo,
    retention: Retention,
    // None: no such index; Some(None): plain index; Some(Some(n)): TTL of n seconds.
    current: Option<Option<i64>>,
    steps: &mut Vec<String>,
) -> Result<TtlState, StoreError> {
    let key = ttl_index_key();
    let wanted = match retention {
        Retention::Seconds(s) if server.supports_ttl() => Some(s),
        _ => None,
    };
    if let Retention::Seconds(s) = retention {
        if !server.supports_ttl() {
            tracing::warn!(
                server = %server.describe(),
                retention_seconds = s,
                "this server has no TTL indexes: events will not expire from MongoDB by \
                 themselves; archive them and remove them with `auditlog-archiver purge`"
            );
            steps.push("server has no TTL indexes: events expire only through purge".into());
        }
    }

    match (current, wanted) {
        (None, Some(secs)) => create_ttl(store, secs, steps).await,
        (None, None) => {
            create_plain(store, steps).await?;
            Ok(plain_state(server, retention))
        }
        (Some(Some(cur)), Some(secs)) if cur == secs => {
            steps.push(format!("TTL index {key} already expires after {secs} s"));
            Ok(TtlState::Active {
                expire_after_seconds: secs,
            })
        }
        (Some(None), Some(secs)) => Ok(keep_without_ttl(secs, steps)),
        (Some(Some(cur)), Some(secs)) if cur > secs => Ok(keep_longer_ttl(cur, secs, steps)),
        (Some(Some(cur)), Some(secs)) => {
            set_ttl(store, secs).await?;
            steps.push(format!(
                "raised TTL of {key} from {cur} s to {secs} s with collMod"
            ));
            Ok(TtlState::Active {
                expire_after_seconds: secs,
            })
        }
        (Some(Some(cur)), None) => Ok(keep_ttl_when_forever(server, cur, steps)),
        (Some(None), None) => {
            steps.push(format!("index {key} already present"));
            Ok(plain_state(server, retention))
        }
    }
}

/// Creates the TTL index; a server that turns out not to implement TTL gets a plain index.
async fn create_ttl(
    store: &Store,
    secs: i64,
    steps: &mut Vec<String>,
) -> Result<TtlState, StoreError> {
    let key = ttl_index_key();
    let options = IndexOptions::builder()
        .expire_after(std::time::Duration::from_secs(secs.unsigned_abs()))
        .build();
    let model = IndexModel::builder()
        .keys(key.clone())
        .options(options)
        .build();
    match store.events().create_index(model).await {
        Ok(_) => {
            steps.push(format!("created TTL index {key} expiring after {secs} s"));
            Ok(TtlState::Active {
                expire_after_seconds: secs,
            })
        }
        Err(e) if server_error_code(&e) == Some(codes::NOT_IMPLEMENTED) => {
            tracing::warn!(error = %e, "TTL index not supported by this server; creating a plain index");
            create_plain(store, steps).await?;
            Ok(TtlState::Unsupported)
        }
        Err(e) => Err(StoreError::Command {
            command: "createIndexes",
            source: e,
        }),
    }
}

/// A plain index on a server with TTL: retention was "forever". Expiring now would be
/// lowering it.
fn keep_without_ttl(secs: i64, steps: &mut Vec<String>) -> TtlState {
    let key = ttl_index_key();
    tracing::warn!(
        configured_seconds = secs,
        "the created_at index has no TTL (events are kept forever); keeping it \
         (set-up never lowers retention; expire events on purpose with \
         `{LOWER_RETENTION_COMMAND}`)"
    );
    steps.push(format!(
        "index {key} kept without TTL (events kept forever), not the configured {secs} s: \
         set-up never lowers retention (use `{LOWER_RETENTION_COMMAND}`)"
    ));
    TtlState::Disabled
}

/// A TTL longer than configured: an archiver's TTL guard or an operator raised it.
fn keep_longer_ttl(cur: i64, secs: i64, steps: &mut Vec<String>) -> TtlState {
    tracing::warn!(
        expire_after_seconds = cur,
        configured_seconds = secs,
        "the TTL index expires events after {cur} s, longer than the configured {secs} s; \
         keeping it (set-up never lowers retention: an archiver's TTL guard or an \
         operator raised it; lower it on purpose with `{LOWER_RETENTION_COMMAND}`)"
    );
    steps.push(format!(
        "TTL index kept at {cur} s, above the configured {secs} s: set-up never lowers \
         retention (use `{LOWER_RETENTION_COMMAND}`)"
    ));
    TtlState::Active {
        expire_after_seconds: cur,
    }
}

/// Retention "forever" asked of a TTL index: it is kept. collMod cannot turn a TTL index back
/// into a plain one, and dropping it would leave range queries without an index for a while.
fn keep_ttl_when_forever(server: &ServerInfo, cur: i64, steps: &mut Vec<String>) -> TtlState {
    if server.supports_ttl() {
        tracing::warn!(
            expire_after_seconds = cur,
            "retention is set to forever but the TTL index still expires events after \
             {cur} s; raise it with `{LOWER_RETENTION_COMMAND}`"
        );
        steps.push(format!(
            "TTL index kept at {cur} s (retention forever requested)"
        ));
    }
    TtlState::Active {
        expire_after_seconds: cur,
    }
}

fn plain_state(server: &ServerInfo, retention: Retention) -> TtlState {
    match retention {
        Retention::Seconds(_) if !server.supports_ttl() => TtlState::Unsupported,
        _ => TtlState::Disabled,
    }
}

async fn create_plain(store: &Store, steps: &mut Vec<String>) -> Result<(), StoreError> {
    let key = ttl_index_key();
    store
        .events()
        .create_index(IndexModel::builder().keys(key.clone()).build())
        .await
        .map_err(StoreError::command("createIndexes"))?;
    steps.push(format!("created index {key}"));
    Ok(())
}

/// Changes the TTL of the `{created_at: 1}` index in place (`collMod`), which also turns a
/// plain index into a TTL index (MongoDB ≥ 5.1).
pub async fn set_ttl(store: &Store, expire_after_seconds: i64) -> Result<(), StoreError> {
    store
        .database()
        .run_command(doc! {
            "collMod": &store.collection_name,
            "index": { "keyPattern": ttl_index_key(), "expireAfterSeconds": expire_after_seconds },
        })
        .await
        .map_err(StoreError::command("collMod"))?;
    Ok(())
}

/// The TTL of the `{created_at: 1}` index: `None` when there is no such index,
/// `Some(None)` for a plain index, `Some(Some(seconds))` for a TTL index.
pub async fn current_ttl(store: &Store) -> Result<Option<Option<i64>>, StoreError> {
    Ok(existing_indexes(store)
        .await?
        .into_iter()
        .find(|(k, _)| *k == ttl_index_key())
        .map(|(_, e)| e))
}

/// Keys and `expireAfterSeconds` of every index of the events collection (empty when the
/// collection does not exist yet).
pub async fn existing_indexes(store: &Store) -> Result<Vec<(Document, Option<i64>)>, StoreError> {
    use futures::TryStreamExt;
    let cursor = match store.events().list_indexes().await {
        Ok(c) => c,
        Err(e) if server_error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => return Ok(vec![]),
        Err(e) => {
            return Err(StoreError::Command {
                command: "listIndexes",
                source: e,
            })
        }
    };
    let models: Vec<IndexModel> = cursor
        .try_collect()
        .await
        .map_err(StoreError::command("listIndexes"))?;
    Ok(models
        .into_iter()
        .map(|m| {
            let expire = m
                .options
                .and_then(|o| o.expire_after)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            (normalise_keys(&m.keys), expire)
        })
        .collect())
}

/// Servers report index and shard key values as int32, int64 or double; compare them as int32.
pub fn normalise_keys(keys: &Document) -> Document {
    keys.iter()
        .map(|(k, v)| {
            let v = match v {
                Bson::Int64(n) => Bson::Int32(*n as i32),
                Bson::Double(n) => Bson::Int32(*n as i32),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_zero_days_is_forever() {
        assert_eq!(Retention::from_days(0), Retention::Forever);
        assert_eq!(Retention::from_days(30), Retention::Seconds(30 * 86_400));
    }

    #[test]
    fn key_values_compare_across_numeric_types() {
        let reported = doc! { "consumer": 1.0, "created_at": 1_i64, "_id": 1 };
        assert_eq!(normalise_keys(&reported), query_indexes()[0]);
    }
}
