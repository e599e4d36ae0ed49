//! `db setup`: shard the events collection where the server is a mongos, then make the
//! collection ready with the shared [`auditlog_common::schema::ensure_storage`] (the same code
//! the service runs at start). Every step is skipped when already done and reported when the
//! server lacks the feature.

use auditlog_common::schema::{normalise_keys, Retention, ShardKey};
use auditlog_common::store::server_info_from_replies;
use mongodb::bson::{doc, Document};

use crate::cluster::{first_batch, Cluster, Target};
use crate::retry::StepError;
use crate::steps::Steps;

/// What to set up.
#[derive(Debug, Clone)]
pub struct SetupPlan {
    pub db_name: String,
    pub collection: String,
    pub shard_key: ShardKey,
    pub retention: Retention,
    /// Reshard a collection sharded on another key (`reshardCollection`, MongoDB ≥ 5.0),
    /// instead of only reporting it.
    pub reshard: bool,
}

const STEP: &str = "db setup";

/// One attempt at the whole setup; every part is idempotent, so a retry starts over.
pub async fn run<C: Cluster>(c: &C, plan: &SetupPlan, steps: &Steps) -> Result<(), StepError> {
    let hello = c
        .run(&Target::Router, "admin", doc! { "hello": 1 })
        .await
        .map_err(|e| StepError::from_cmd(STEP, "hello", e))?;
    let build = c
        .run(&Target::Router, "admin", doc! { "buildInfo": 1 })
        .await
        .map_err(|e| StepError::from_cmd(STEP, "buildInfo", e))?;
    let server = server_info_from_replies(&hello, &build);

    if server.supports_sharding() {
        shard_collection(c, plan, steps).await?;
    } else {
        tracing::warn!(server = %server.describe(), "not a mongos: the events collection is not sharded");
        steps.push(format!(
            "sharding skipped: the server is not a mongos ({})",
            server.describe()
        ));
    }

    let report = c
        .ensure_storage(&server, plan.retention)
        .await
        .map_err(|e| StepError::from_cmd(STEP, "indexes and TTL", e))?;
    for line in report.steps {
        steps.push(line);
    }
    Ok(())
}

async fn shard_collection<C: Cluster>(
    c: &C,
    plan: &SetupPlan,
    steps: &Steps,
) -> Result<(), StepError> {
    let ns = format!("{}.{}", plan.db_name, plan.collection);
    let wanted = plan.shard_key.key();
    let reply = c
        .run(
            &Target::Router,
            "config",
            doc! { "find": "collections", "filter": { "_id": &ns }, "limit": 1 },
        )
        .await
        .map_err(|e| StepError::from_cmd(STEP, "read config.collections", e))?;
    match sharded_key(&first_batch(&reply)) {
        Some(key) if normalise_keys(&key) == normalise_keys(&wanted) => {
            steps.push(format!("collection {ns} already sharded on {key}"));
        }
        Some(key) if plan.reshard => {
            c.run(
                &Target::Router,
                "admin",
                doc! { "reshardCollection": &ns, "key": wanted.clone() },
            )
            .await
            .map_err(|e| StepError::from_cmd(STEP, "reshardCollection", e))?;
            steps.push(format!("resharded collection {ns} from {key} to {wanted}"));
        }
        Some(key) => {
            // Resharding copies every document; that is an operator's decision, not a side
            // effect of an upgrade hook — but it must not go unnoticed either.
            let command = format!(
                "db.adminCommand({{reshardCollection: \"{ns}\", key: {}}})",
                wanted
            );
            let risk = if is_legacy_key(&key) {
                "producer retries are NOT idempotent on this key (a retry gets a new created_at \
                 and can land on another shard as a second copy); "
            } else {
                ""
            };
            tracing::warn!(%ns, current = %key, configured = %wanted, %command,
                "collection sharded on another key; {risk}reshard it");
            steps.push(format!(
                "WARNING: collection {ns} is sharded on {key}, not the configured {wanted}: \
                 {risk}reshard it with `auditlog-ops db setup --reshard` or `{command}` \
                 (MongoDB ≥ 5.0; copies the collection)"
            ));
        }
        None => {
            c.run(
                &Target::Router,
                "admin",
                doc! { "enableSharding": &plan.db_name },
            )
            .await
            .map_err(|e| StepError::from_cmd(STEP, "enableSharding", e))?;
            steps.push(format!("enabled sharding for database {}", plan.db_name));
            c.run(
                &Target::Router,
                "admin",
                doc! { "shardCollection": &ns, "key": wanted.clone() },
            )
            .await
            .map_err(|e| StepError::from_cmd(STEP, "shardCollection", e))?;
            steps.push(format!("sharded collection {ns} on {wanted}"));
        }
    }
    Ok(())
}

/// Whether `key` is the pre-0.2 default `{consumer: "hashed", created_at: 1}`.
fn is_legacy_key(key: &Document) -> bool {
    normalise_keys(key) == normalise_keys(&ShardKey::HashedConsumerCreatedAt.key())
}

/// The shard key of a `config.collections` entry, unless the entry is dropped or (MongoDB
/// 8) an unsharded collection tracked with `unsplittable: true`.
fn sharded_key(entries: &[Document]) -> Option<Document> {
    let e = entries.first()?;
    if e.get_bool("dropped").unwrap_or(false) || e.get_bool("unsplittable").unwrap_or(false) {
        return None;
    }
    e.get_document("key").ok().cloned()
}
